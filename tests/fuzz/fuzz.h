/*  fuzz: what every fuzz target shares.
 *
 *  A target is one file, <name>_fuzz.c, defining LLVMFuzzerTestOneInput
 *  (and optionally LLVMFuzzerInitialize). It is linked twice: with
 *  libFuzzer (-fsanitize=fuzzer, CW_FUZZ=ON, clang) to search for inputs,
 *  and with replay.c, a plain main() that runs given files and directories
 *  through the same entry point, so that the seed corpus and every input
 *  that once crashed replay in each ctest run, with any compiler.
 *
 *  Targets check their properties with FUZZ_CHECK, never assert(): the
 *  normal build defines NDEBUG, and a replayed input must fail there too.
 */
#ifndef CW_FUZZ_H
#define CW_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts (a crash for libFuzzer, a failure for ctest) unless cond holds.
 * The message goes to stdout: scripts/fuzz closes the targets' stderr
 * (-close_fd_mask=2) to silence the broker's log. */
#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);    \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
            fflush(stdout);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif
