// Fuzz target: the RETRO neighbours loader (retrlm_retro_neighbours_load_memory). Neighbours it
// accepts must have the shape they claim, ids >= -1 with nothing after a neighbour's first -1,
// and must feed a RETRO model of their shape (ids >= 50 are refused by the model, never read
// out of bounds). Container size field and CRCs are repaired first (repair.h).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    retrlm_retro_neighbours nb;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    if (retrlm_retro_neighbours_load_memory(&nb, data, size) == RETRLM_OK) {
        size_t n = (size_t)nb.n_chunks * (size_t)nb.k * (size_t)nb.len, i;
        for (i = 0; i < n; i++)
            if (nb.tokens[i] < -1 || (i % (size_t)nb.len && nb.tokens[i - 1] == -1 && nb.tokens[i] != -1))
                __builtin_trap();
        // a small RETRO model of the file's shape reads the first chunk's neighbours
        if (nb.n_chunks > 0 && nb.chunk <= 8 && nb.len <= 16 && nb.k <= 4) {
            retrlm_model_config c;
            retrlm_model m;
            int tok[8] = {0};
            retrlm_result r;
            memset(&c, 0, sizeof c);
            c.vocab_size = 50; c.dim = 8; c.n_layers = 1; c.n_heads = 2; c.max_seq_len = 8;
            c.retro_chunk = nb.chunk; c.retro_k = nb.k; c.retro_len = nb.len;
            c.retro_enc_dim = 4; c.retro_enc_layers = 1; c.retro_enc_heads = 2;
            if (retrlm_model_init(&m, &c) != RETRLM_OK) __builtin_trap();
            r = retrlm_model_forward_retro(&m, tok, 1, nb.chunk, NULL, nb.tokens, 0);
            if (r != RETRLM_OK && r != RETRLM_ERR_ARG) __builtin_trap();
            retrlm_model_free(&m);
        }
        retrlm_retro_neighbours_free(&nb);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
