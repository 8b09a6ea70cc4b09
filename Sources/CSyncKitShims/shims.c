// See CSyncKitShims.h: thin wrappers around glibc calls hidden behind _GNU_SOURCE.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include "CSyncKitShims.h"

int synckit_syncfs(int fd) { return syncfs(fd); }

int64_t synckit_birth_time_ns(const char *path) {
    struct statx st;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BTIME, &st) != 0) return 0;
    if (!(st.stx_mask & STATX_BTIME)) return 0;
    return (int64_t)st.stx_btime.tv_sec * 1000000000 + st.stx_btime.tv_nsec;
}

int synckit_start_writeback(int fd) { return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }
