#ifndef BREAKWATER_FUZZ_DRIVER_H
#define BREAKWATER_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry for programs that have a `main` of their own (LLVM 11 and later); it
/// parses libFuzzer's flags from argv and calls `callback` for every input.
///
/// The fuzz targets need their own `main`: a debug build of SwiftPM on Linux renames an
/// executable's entry point to `<Module>_main` (so tests can link it) and points `main` there,
/// which leaves libFuzzer's own `main` out of the link.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
