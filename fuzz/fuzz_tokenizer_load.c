// Fuzz target: every tokenizer loader on outside bytes. The first byte picks the parser:
//   0  retrlm_tokenizer_load_memory (container, kind "tokenizer")
//   1  retrlm_tokenizer_load_tiktoken_memory (with one special token)
//   2  retrlm_tokenizer_load_gpt2_memory (encoder.json, a NUL byte, then vocab.bpe)
//   3  a container with valid CRCs made from the input: u32 meta[4], then four u16 counts
//      (token_offsets, token_bytes, merges, specials) and those sections' elements, so the
//      fuzzer reaches the tokenizer's own checks past the checksums
// A tokenizer that loads must encode and decode a fixed text back to itself.
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/include/stb fuzz/fuzz_tokenizer_load.c -lm -o fuzz_tokenizer_load
//   ./fuzz_tokenizer_load fuzz/corpus/tokenizer_load
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char text[] = "Hello, world! It's 2026 \xff\xfe caf\xc3\xa9 <|endoftext|>  \n\n x";
    const char *specials[1] = {"<|endoftext|>"};
    retrlm_tokenizer tok;
    retrlm_result r = RETRLM_ERR_FORMAT;
    const char *p = (const char *)data + 1;
    size_t n = size ? size - 1 : 0;
    if (!size) return 0;
    if (data[0] == 3) {
        static const char *names[4] = {"token_offsets", "token_bytes", "merges", "specials"};
        static const retrlm_dtype types[4] = {RETRLM_DTYPE_U64, RETRLM_DTYPE_U8, RETRLM_DTYPE_I32,
                                              RETRLM_DTYPE_I32};
        retrlm_writer w;
        const unsigned char *q = (const unsigned char *)p;
        size_t at = 24, cnt[4], k, img_n = 0;
        void *img = NULL;
        if (n < 24 || retrlm_writer_init(&w, "tokenizer")) return 0;
        retrlm_writer_add_copy(&w, "meta", RETRLM_DTYPE_U32, q, 4); // host order: fine here
        for (k = 0; k < 4; k++) {
            size_t want = (size_t)(q[16 + 2 * k] | q[17 + 2 * k] << 8), esz = retrlm_dtype_size(types[k]);
            cnt[k] = RETRLM__MIN(want, (n - at) / esz);
            retrlm_writer_add_copy(&w, names[k], types[k], q + at, cnt[k]);
            at += cnt[k] * esz;
        }
        if (!retrlm_writer_save_memory(&w, NULL, 0, &img_n) && (img = malloc(img_n)) &&
            !retrlm_writer_save_memory(&w, img, img_n, &img_n))
            r = retrlm_tokenizer_load_memory(&tok, img, img_n);
        free(img);
        retrlm_writer_free(&w);
    } else if (data[0] == 0) {
        r = retrlm_tokenizer_load_memory(&tok, p, n);
    } else if (data[0] == 1) {
        r = retrlm_tokenizer_load_tiktoken_memory(&tok, p, n, specials, 1);
    } else if (data[0] == 2) {
        const char *nul = (const char *)memchr(p, 0, n);
        size_t jn = nul ? (size_t)(nul - p) : n;
        r = retrlm_tokenizer_load_gpt2_memory(&tok, p, jn, nul ? nul + 1 : p + n,
                                              nul ? n - jn - 1 : 0);
    }
    if (r == RETRLM_OK) {
        int ids[sizeof text];
        char back[sizeof text + 1];
        size_t k, nd;
        int f;
        for (f = 0; f < 2; f++) {
            if (retrlm_tokenizer_encode(&tok, text, sizeof text - 1, f, ids, sizeof text, &k) ||
                retrlm_tokenizer_decode(&tok, ids, k, back, sizeof back, &nd) ||
                nd != sizeof text - 1 || memcmp(back, text, nd))
                abort(); // a loaded tokenizer must round-trip
        }
        retrlm_tokenizer_free(&tok);
    }
    return 0;
}
#include "fuzz/fuzz.h"
