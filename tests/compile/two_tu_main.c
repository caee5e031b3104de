// Declarations only: links against two_tu_impl.c. Guards against definitions leaking into the
// header part (duplicate symbols) and against a declaration the implementation does not match.
#include "retrlm.h"
#include "retrlm.h" /* a second include is harmless */
#include <stdio.h>
#include <string.h>

int main(void) {
    int passed = 0, failed = 0;
    retrlm_rng r;
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
    retrlm_rng_seed(&r, 7);
    if (retrlm_dot(a, b, 3) == 32.0f) passed++; else failed++;
    if (!strcmp(retrlm_result_string(RETRLM_ERR_IO), "i/o error")) passed++; else failed++;
    if (retrlm_rng_below(&r, 5) < 5) passed++; else failed++;
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
