// Fuzz target: the RPT targets loader (retrlm_rpt_targets_load_memory). Targets it accepts must
// keep the promises the trainer relies on: every candidate an earlier window's chunk with room
// for its continuation, or -1; every gold finite or -inf (-inf without a candidate); and they
// must save again to an image that loads to the same bytes. Container size field and CRCs are
// repaired first (repair.h).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include <string.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_rpt_targets t, back;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    if (retrlm_rpt_targets_load_memory(&t, data, size) == RETRLM_OK) {
        const int uw = t.seq_len / t.chunk, U = t.windows * uw;
        const size_t n = (size_t)t.n_spans * (size_t)U * (size_t)t.cands;
        size_t i, img_size = 0;
        for (i = 0; i < n; i++) {
            const int u = (int)(i / (size_t)t.cands % (size_t)U), j = t.cand[i];
            const float g = t.gold[i];
            if (j < -1 || (j >= 0 && j + 1 >= u / uw * uw)) __builtin_trap();
            if (g != g || g == INFINITY || (j < 0 && g != -INFINITY)) __builtin_trap();
        }
        if (retrlm_rpt_targets_save_memory(&t, NULL, 0, &img_size) != RETRLM_OK) __builtin_trap();
        {
            unsigned char *img = (unsigned char *)malloc(img_size);
            if (img) {
                if (retrlm_rpt_targets_save_memory(&t, img, img_size, &img_size) != RETRLM_OK ||
                    retrlm_rpt_targets_load_memory(&back, img, img_size) != RETRLM_OK)
                    __builtin_trap();
                if (back.n_spans != t.n_spans || back.stream_crc != t.stream_crc ||
                    memcmp(back.cand, t.cand, n * sizeof(int)) || memcmp(back.gold, t.gold, n * sizeof(float)) ||
                    memcmp(back.span, t.span, (size_t)t.n_spans * sizeof(int64_t)))
                    __builtin_trap();
                retrlm_rpt_targets_free(&back);
                free(img);
            }
        }
        retrlm_rpt_targets_free(&t);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
