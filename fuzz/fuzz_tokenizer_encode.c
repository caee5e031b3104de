// Fuzz target: encode/decode on any bytes with a small trained tokenizer (made once, from a
// fixed text) and the same vocabulary loaded from the .tiktoken format (tiktoken's merge rule).
// The first byte holds flags: bit 0 allows special tokens, bit 1 picks the tokenizer. Checks:
// decode(encode(s)) == s, the size query equals the real count, a batch of two halves equals
// the halves alone.
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/include/stb fuzz/fuzz_tokenizer_encode.c -lm -o fuzz_tokenizer_encode
//   ./fuzz_tokenizer_encode fuzz/corpus/tokenizer_encode
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

static retrlm_tokenizer fz_tok, fz_tik;
static int fz_ready;

// the trained vocabulary as .tiktoken text (base64 token, rank), specials left out
static char *fz_tiktoken(const retrlm_tokenizer *t, size_t *n) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = (char *)malloc(65536), *o = out;
    int id;
    for (id = 0; id < t->n_vocab; id++) {
        size_t len, k;
        const unsigned char *p = (const unsigned char *)retrlm_tokenizer_token(t, id, &len);
        if (retrlm_tokenizer_is_special(t, id)) continue;
        for (k = 0; k < len; k += 3) {
            uint32_t v = (uint32_t)p[k] << 16 | (k + 1 < len ? (uint32_t)p[k + 1] << 8 : 0) |
                         (k + 2 < len ? p[k + 2] : 0);
            *o++ = b64[v >> 18 & 63];
            *o++ = b64[v >> 12 & 63];
            *o++ = k + 1 < len ? b64[v >> 6 & 63] : '=';
            *o++ = k + 2 < len ? b64[v & 63] : '=';
        }
        o += sprintf(o, " %d\n", id);
    }
    *n = (size_t)(o - out);
    return out;
}

static void fz_init(void) {
    static const char *docs[3] = {
        ("In the beginning God created the heaven and the earth. And the earth was without form, "
         "and void; and darkness was upon the face of the deep. They're 12,345 don't we'll"),
        "int main(void) { return 0; } // \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e caf\xc3\xa9 na\xc3\xafve",
        "   spaces\t\ttabs\n\nnewlines 3.14159 1e10 !!! ??? ... --- \xf0\x9f\x98\x80\xf0\x9f\x98\x80"};
    const char *sp[2] = {"<|endoftext|>", "<|sep|>"};
    retrlm_tokenizer_train_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 400;
    cfg.min_frequency = 1;
    cfg.special_tokens = sp;
    cfg.n_special = 2;
    if (retrlm_tokenizer_train(&fz_tok, &cfg, docs, NULL, 3, NULL, NULL)) abort();
    {
        size_t n;
        char *tik = fz_tiktoken(&fz_tok, &n);
        if (retrlm_tokenizer_load_tiktoken_memory(&fz_tik, tik, n, sp, 2)) abort();
        free(tik);
    }
    fz_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data + 1;
    const char *halves[2];
    size_t n = size ? size - 1 : 0, k, q, nd, lens[2], offs[3], total;
    int flags, *ids, *ids2;
    char *back;
    const retrlm_tokenizer *tok;
    if (!size) return 0;
    if (!fz_ready) fz_init();
    flags = data[0] & 1;
    tok = data[0] & 2 ? &fz_tik : &fz_tok;
    ids = (int *)malloc((n + 1) * sizeof(int));
    ids2 = (int *)malloc((n + 1) * sizeof(int));
    back = (char *)malloc(n + 1);
    if (!ids || !ids2 || !back) abort();
    if (retrlm_tokenizer_encode(tok, text, n, flags, NULL, 0, &q) ||
        retrlm_tokenizer_encode(tok, text, n, flags, ids, n + 1, &k) || q != k || k > n ||
        retrlm_tokenizer_decode(tok, ids, k, back, n + 1, &nd) || nd != n ||
        memcmp(back, text, n))
        abort();
    // a batch is its documents encoded one by one
    halves[0] = text;
    halves[1] = text + n / 2;
    lens[0] = n / 2;
    lens[1] = n - n / 2;
    if (retrlm_tokenizer_encode_batch(tok, halves, lens, 2, flags, ids2, n + 1, offs, &total))
        abort();
    for (q = 0; q < 2; q++) {
        if (retrlm_tokenizer_encode(tok, halves[q], lens[q], flags, ids, n + 1, &k) ||
            k != offs[q + 1] - offs[q] || memcmp(ids, ids2 + offs[q], k * sizeof(int)))
            abort();
    }
    free(ids);
    free(ids2);
    free(back);
    return 0;
}
#include "fuzz/fuzz.h"
