// Fuzz target: NPM's phrase index loader (retrlm_npm_index_load_memory) for a 50-token encoder.
// An index it accepts must answer a search, each hit a position of the corpus whose token is one
// of the encoder's. Container size field and CRCs are repaired first (repair.h); the nested index
// image keeps its own checks.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_npm_index x;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    if (retrlm_npm_index_load_memory(&x, data, size, 50) == RETRLM_OK) {
        float *q = (float *)calloc((size_t)x.index.dim + 1, sizeof(float));
        int64_t hit[4];
        float score[4];
        int i;
        if (!q || retrlm_index_search(&x.index, q, 1, x.index.dim, 4, NULL, hit, score) != RETRLM_OK) __builtin_trap();
        for (i = 0; i < 4; i++)
            if (hit[i] >= 0 && ((size_t)hit[i] >= x.n || x.tokens[hit[i]] < 0 || x.tokens[hit[i]] >= 50)) __builtin_trap();
        free(q);
        retrlm_npm_index_free(&x);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
