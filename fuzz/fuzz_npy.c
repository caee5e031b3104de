// Fuzz target: the .npy header parser and the .fvecs reader (retrlm_npy_read_memory,
// retrlm_fvecs_read_memory) on the same bytes.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    float *x = NULL;
    size_t n = 0;
    int d = 0;
    if (retrlm_npy_read_memory(data, size, &x, &n, &d) == RETRLM_OK && n) {
        volatile float last = x[n * (size_t)d - 1]; // the whole array must be there
        (void)last;
    }
    retrlm_free(x);
    x = NULL;
    if (retrlm_fvecs_read_memory(data, size, &x, &n, &d) == RETRLM_OK && n) {
        volatile float last = x[n * (size_t)d - 1];
        (void)last;
    }
    retrlm_free(x);
    return 0;
}
#include "fuzz/fuzz.h"
