// Nothing to compile: the declaration in include/CFuzzDriver.h is the whole module (a C target
// needs a source file). LLVMFuzzerRunDriver itself comes from libFuzzer at link time.
#include "CFuzzDriver.h"
