/* test.h - the whole test harness. Each tests/test_*.c is one program:
     #include "retrlm.h"
     #include "test.h"
     static void test_something(void) { CHECK(1 + 1 == 2); }
     int main(void) { RUN(test_something); return test_report(); }
   tests/run.sh links it with the implementation compiled once per build (tests/impl.c). A test
   that calls private retrlm__ functions (static in the implementation) defines
   RETRLM_IMPLEMENTATION before the include instead, and run.sh builds it alone.
   A test case passes when none of its CHECKs failed and it did not SKIP. The last line printed
   is "N passed, M failed[, K skipped]"; the exit status is nonzero when anything failed. */
#ifndef RETRLM_TEST_H
#define RETRLM_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__) || defined(__clang__)
#define TEST__UNUSED __attribute__((unused))
#else
#define TEST__UNUSED
#endif

static int test__passed, test__failed, test__skipped, test__case_failed;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            test__case_failed = 1;                                                          \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);        \
        }                                                                                   \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                    \
        double test__a = (double)(a), test__b = (double)(b);                                \
        if (!(fabs(test__a - test__b) <= (tol))) {                                          \
            test__case_failed = 1;                                                          \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, differ by more than %g\n",       \
                    __FILE__, __LINE__, #a, test__a, #b, test__b, (double)(tol));           \
        }                                                                                   \
    } while (0)
/* a retrlm call that must succeed; prints the detail message when it does not */
#define CHECK_OK(expr)                                                                      \
    do {                                                                                    \
        retrlm_result test__r = (expr);                                                     \
        if (test__r != RETRLM_OK) {                                                         \
            test__case_failed = 1;                                                          \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,             \
                    retrlm_result_string(test__r), retrlm_last_error());                    \
        }                                                                                   \
    } while (0)
#define RUN(fn)                                                                             \
    do {                                                                                    \
        int test__skips = test__skipped;                                                    \
        test__case_failed = 0;                                                              \
        fn();                                                                               \
        if (test__case_failed) {                                                            \
            test__failed++;                                                                 \
            fprintf(stderr, "FAIL %s\n", #fn);                                              \
        } else if (test__skipped == test__skips)                                            \
            test__passed++;                                                                 \
    } while (0)
/* for a case that cannot run here (missing data); counted, never a pass. The line it prints,
   "skip CASE: WHY", is what tests/run.sh lists at the end. */
#define SKIP(why)                                                                           \
    do {                                                                                    \
        fprintf(stderr, "skip %s: %s\n", __func__, why);                                    \
        test__skipped++;                                                                    \
        return;                                                                             \
    } while (0)

static int test_report(void) {
    printf("%d passed, %d failed", test__passed, test__failed);
    if (test__skipped) printf(", %d skipped", test__skipped);
    printf("\n");
    return test__failed != 0;
}

/* ../shared/data, or $RETRLM_DATA: real data for tests; NULL-safe path join into buf */
TEST__UNUSED static const char *test_data(const char *rel, char *buf, size_t cap) {
    const char *root = getenv("RETRLM_DATA");
    snprintf(buf, cap, "%s/%s", root ? root : "../shared/data", rel);
    return buf;
}

/* the SKIP message for data that is not there: "PATH not found (...)"; one static buffer */
TEST__UNUSED static const char *test_missing(const char *rel) {
    static char msg[1024];
    char path[512];
    snprintf(msg, sizeof msg, "%s not found (set RETRLM_DATA to the data directory)",
             test_data(rel, path, sizeof path));
    return msg;
}
#endif
