// Fuzz target: the safetensors importer (retrlm_model_load_safetensors_memory); a model it
// accepts must run a forward pass.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    retrlm_model m;
    retrlm_model_config hint;
    memset(&hint, 0, sizeof hint);
    hint.max_seq_len = 4; // keep activations small whatever the file says
    hint.max_batch = 1;
    if (retrlm_model_load_safetensors_memory(&m, data, size, &hint) == RETRLM_OK) {
        int tok[4] = {0, 0, 0, 0};
        tok[1] = m.config.vocab_size - 1;
        if (retrlm_model_forward(&m, tok, 1, 4, NULL, 0) != RETRLM_OK) __builtin_trap();
    }
    retrlm_model_free(&m);
    return 0;
}
#include "fuzz/fuzz.h"
