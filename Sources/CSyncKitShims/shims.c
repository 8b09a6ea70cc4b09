// See CSyncKitShims.h: thin wrappers around glibc calls hidden behind _GNU_SOURCE.
#define _GNU_SOURCE
#include <unistd.h>
#include "CSyncKitShims.h"

int synckit_syncfs(int fd) { return syncfs(fd); }
