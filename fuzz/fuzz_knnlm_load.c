// Fuzz target: the kNN-LM keys loader (retrlm_knnlm_load_memory) for a 50-token model; keys it
// accepts must be searchable and every neighbour's value a token of the model. Container size
// field and CRCs are repaired first (repair.h); the nested index image keeps its own checks.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_knnlm kn;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    if (retrlm_knnlm_load_memory(&kn, data, size, 50) == RETRLM_OK) {
        float *q = (float *)calloc((size_t)kn.index.dim, sizeof(float));
        int64_t ids[4];
        float sc[4];
        int i;
        if (!q || retrlm_index_search(&kn.index, q, 1, kn.index.dim, 4, NULL, ids, sc) != RETRLM_OK) __builtin_trap();
        for (i = 0; i < 4; i++)
            if (ids[i] >= 0 && (kn.values[ids[i]] < 0 || kn.values[ids[i]] >= 50)) __builtin_trap();
        free(q);
        retrlm_knnlm_free(&kn);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
