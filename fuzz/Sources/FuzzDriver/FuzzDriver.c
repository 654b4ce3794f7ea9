// Only a header: LLVMFuzzerRunDriver comes from libFuzzer (-sanitize=fuzzer).
#include "FuzzDriver.h"
