// RETRLM_STATIC: every function static, unused ones must not warn under -Wall -Werror.
#define RETRLM_STATIC
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#define RETRLM_IMPLEMENTATION /* including twice with the implementation is harmless too */
#include "retrlm.h"
#include <stdio.h>

int main(void) {
    float x[4] = {1, 2, 3, 4};
    int ok = retrlm_logsumexp(x, 4) > 4.0f;
    printf("%d passed, %d failed\n", ok, !ok);
    return !ok;
}
