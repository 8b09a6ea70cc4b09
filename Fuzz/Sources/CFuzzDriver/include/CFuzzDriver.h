// libFuzzer's driver, for the fuzz targets' own `main` (see Fuzz/README.md).
//
// SwiftPM links an executable with `main` bound to the module's entry point (`<Module>_main`),
// which would hide libFuzzer's `main`; so each fuzz target has an `@main` that hands its
// arguments and its test function to the driver libFuzzer exports for exactly this case.
#ifndef SYNCKIT_CFUZZDRIVER_H
#define SYNCKIT_CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
