// Fuzz target: the bi-encoder loader (retrlm_encoder_load_memory); an encoder it accepts must
// embed a query and a document. Container size field and CRCs are repaired first (repair.h).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_encoder e;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    { // batch sizes and token counts only size the activations: keep them small so that runs
      // stay fast (the loader's checks of them are exercised with small values all the same)
        retrlm_reader rd;
        int32_t ci[6];
        int big = 0;
        if (retrlm_reader_open_memory(&rd, data, size, "encoder", 0) == RETRLM_OK) {
            if (retrlm_reader_read(&rd, "enc_config", RETRLM_DTYPE_I32, ci, 6) == RETRLM_OK)
                big = ci[3] > 64 || ci[4] > 64 || ci[5] > 8;
            retrlm_reader_close(&rd);
        }
        if (big) {
            free(data);
            return 0;
        }
    }
    if (retrlm_encoder_load_memory(&e, data, size) == RETRLM_OK) {
        int tok[2] = {0, 0};
        float *out = (float *)malloc(sizeof(float) * (size_t)e.dim);
        tok[1] = e.config.model.vocab_size - 1;
        if (!out || retrlm_encoder_forward(&e, RETRLM_QUERY, tok, 1, 1, NULL, out) != RETRLM_OK ||
            retrlm_encoder_forward(&e, RETRLM_DOC, tok + 1, 1, 1, NULL, out) != RETRLM_OK)
            __builtin_trap();
        free(out);
        retrlm_encoder_free(&e);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
