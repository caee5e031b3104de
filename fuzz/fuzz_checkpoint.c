// Fuzz target: the checkpoint loader (retrlm_model_load_memory, retrlm_model_load_state_memory),
// f32 and int8 models; a model it accepts must run a forward pass and a decode step, and take an
// optimiser state of its size (an int8 model has none).
// Before loading, the input's file-size field and CRCs are repaired (on a copy), so mutations
// reach the checkpoint's own validation instead of stopping at the container's checksums
// (fuzz_container covers those).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_model m;
    retrlm_model_config over;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    memset(&over, 0, sizeof over);
    over.max_seq_len = 4; // keep activations small whatever the file says
    over.max_batch = 1;
    if (retrlm_model_load_memory(&m, data, size, &over) == RETRLM_OK) {
        int tok[4] = {0, 0, 0, 0};
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_lm_train_state st;
        int ng = retrlm_model_param_groups(&m, 1e-3f, 0.0f, g);
        tok[1] = m.config.vocab_size - 1;
        if (retrlm_model_forward(&m, tok, 1, 4, NULL, 0) != RETRLM_OK) __builtin_trap();
        // a plain model (an int8 one too) decodes with its KV cache
        if (!m.config.retro_chunk && retrlm_model_decode(&m, tok[1], 0) != RETRLM_OK) __builtin_trap();
        if (retrlm_adamw_init(&o, NULL, g, ng) == RETRLM_OK) {
            retrlm_lm_train_state_init(&st, 0);
            (void)retrlm_model_load_state_memory(&o, &st, data, size);
            retrlm_adamw_free(&o);
        }
    }
    retrlm_model_free(&m);
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
