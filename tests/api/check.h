/* check.h — The C ABI tests' CHECK: a failed condition is printed with uffdm_last_error() and
 * counted in `failures`; the test goes on. */
#ifndef UFFDM_TESTS_API_CHECK_H
#define UFFDM_TESTS_API_CHECK_H

#include <stdio.h>
#include <uffdm/uffdm.h>

static int failures = 0;
#define CHECK(cond, ...)                                    \
    do {                                                    \
        if (!(cond)) {                                      \
            fprintf(stderr, "FAILED %s: ", #cond);          \
            fprintf(stderr, __VA_ARGS__);                   \
            fprintf(stderr, " (%s)\n", uffdm_last_error()); \
            failures++;                                     \
        }                                                   \
    } while (0)

#endif
