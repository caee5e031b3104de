// tokenizer: GPT-2 exactness from both file formats, round trips, specials, batch encoding,
// training, save/load and the loader's checks
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"
#include "files.h"

static retrlm_tokenizer g_json, g_tik; // GPT-2 from encoder.json + vocab.bpe, from .tiktoken
static int g_have;                     // 1 when both loaded

static void load_gpt2(void) {
    char a[512], b[512];
    const char *sp[1] = {"<|endoftext|>"};
    if (retrlm_tokenizer_load_gpt2(&g_json, test_data("gpt2-bpe/encoder.json", a, sizeof a),
                                   test_data("gpt2-bpe/vocab.bpe", b, sizeof b)) != RETRLM_OK)
        return;
    if (retrlm_tokenizer_load_tiktoken(&g_tik, test_data("gpt2-bpe/gpt2.tiktoken", a, sizeof a),
                                       sp, 1) != RETRLM_OK)
        return;
    g_have = 1;
}

static void test_gpt2_files(void) {
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    CHECK(g_json.n_vocab == 50257 && g_json.n_merges == 50000 && g_json.n_special == 1);
    CHECK(g_tik.n_vocab == 50257 && g_tik.n_special == 1);
    CHECK(retrlm_tokenizer_find(&g_json, "<|endoftext|>", 13) == 50256);
    CHECK(retrlm_tokenizer_find(&g_tik, "<|endoftext|>", 13) == 50256);
    CHECK(retrlm_tokenizer_is_special(&g_json, 50256) && !retrlm_tokenizer_is_special(&g_json, 0));
    CHECK(retrlm_tokenizer_find(&g_json, " the", 4) == 262);
    { // U+2EE00 (Unicode 15.1, tools/unicode_supplement.txt) is a letter, as for tiktoken
        static const int ref[5] = {172, 106, 116, 222, 1183};
        int ids[8];
        size_t n;
        CHECK_OK(retrlm_tokenizer_encode(&g_json, "\xf0\xae\xb8\x80'll", 7, 0, ids, 8, &n));
        CHECK(n == 5 && !memcmp(ids, ref, sizeof ref));
    }
}

// every vector of vectors.tsv encodes to its ids with both tokenizers and decodes back
static void test_gpt2_vectors(void) {
    char path[512];
    size_t size, i = 0;
    char *data;
    int rows = 0, ok_json = 0, ok_tik = 0, ok_dec = 0;
    int *ref, *got;
    char *dec;
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    ref = (int *)malloc(100000 * sizeof(int));
    got = (int *)malloc(100000 * sizeof(int));
    dec = (char *)malloc(200000);
    data = read_all(test_data("gpt2-bpe/vectors.tsv", path, sizeof path), &size);
    CHECK(data != NULL);
    if (!data) return;
    while (i < size && data[i] != '\n') i++; // header
    i++;
    while (i < size) {
        size_t tab = i, end, tlen, n_ref = 0, n, nd;
        char *p;
        int t;
        while (tab < size && data[tab] != '\t') tab++;
        end = tab;
        while (end < size && data[end] != '\n') end++;
        tlen = tsv_unescape(data + i, tab - i);
        data[end] = 0;
        for (p = data + tab + 1; *p;) {
            ref[n_ref++] = (int)strtol(p, &p, 10);
            while (*p == ' ') p++;
        }
        rows++;
        for (t = 0; t < 2; t++) {
            const retrlm_tokenizer *tok = t ? &g_tik : &g_json;
            retrlm_result r = retrlm_tokenizer_encode(tok, data + i, tlen, 0, got, 100000, &n);
            if (r == RETRLM_OK && n == n_ref && !memcmp(got, ref, n * sizeof(int))) {
                if (t) ok_tik++;
                else ok_json++;
            } else if (t == 0)
                fprintf(stderr, "vector %d differs: %.60s\n", rows, data + i);
        }
        if (retrlm_tokenizer_decode(&g_json, ref, n_ref, dec, 200000, &nd) == RETRLM_OK &&
            nd == tlen && !memcmp(dec, data + i, tlen) && dec[nd] == 0)
            ok_dec++;
        i = end + 1;
    }
    printf("gpt2 vectors: %d rows, %d exact (encoder.json), %d exact (tiktoken), %d decode\n",
           rows, ok_json, ok_tik, ok_dec);
    CHECK(rows == 384 && ok_json == 384 && ok_tik == 384 && ok_dec == 384);
    free(data);
    free(ref);
    free(got);
    free(dec);
}

// the KJV verses (the 4th column of verses.tsv), each followed by "\n", as the reference count
// was made (shared/data/scripts/tiktoken_bench.js: verses.join('\n') + '\n'); NULL if missing
static char *kjv_text(size_t *len, int *n_verses) {
    char path[512];
    size_t size, i = 0, o = 0;
    char *d = read_all(test_data("kjv/verses.tsv", path, sizeof path), &size);
    int nv = 0;
    if (!d) return NULL;
    while (i < size && d[i] != '\n') i++;
    i++;
    while (i < size) {
        size_t e = i, f = i;
        int tabs = 0;
        while (e < size && d[e] != '\n') {
            if (d[e] == '\t' && ++tabs == 3) f = e + 1;
            e++;
        }
        memmove(d + o, d + f, e - f);
        o += tsv_unescape(d + o, e - f);
        d[o++] = '\n';
        nv++;
        i = e + 1;
    }
    *len = o;
    *n_verses = nv;
    return d;
}

static void test_kjv_count(void) {
    size_t len, n1, n2;
    int nv;
    char *t;
    double t0;
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    t = kjv_text(&len, &nv);
    if (!t) SKIP(test_missing("kjv/verses.tsv"));
    t0 = retrlm_time_seconds();
    CHECK_OK(retrlm_tokenizer_encode(&g_json, t, len, 0, NULL, 0, &n1));
    printf("kjv: %d verses, %lu bytes -> %lu tokens (%.1f MB/s)\n", nv, (unsigned long)len,
           (unsigned long)n1, len / 1e6 / (retrlm_time_seconds() - t0));
    CHECK_OK(retrlm_tokenizer_encode(&g_tik, t, len, 0, NULL, 0, &n2));
    CHECK(n1 == 1024541 && n2 == 1024541);
    { // one call into a new array: the same ids
        int *a = NULL, *b = (int *)malloc(n1 * sizeof(int));
        size_t na = 0;
        CHECK_OK(retrlm_tokenizer_encode_alloc(&g_json, t, len, 0, &a, &na));
        CHECK_OK(retrlm_tokenizer_encode(&g_json, t, len, 0, b, n1, &n2));
        CHECK(a && na == n1 && !memcmp(a, b, n1 * sizeof(int)));
        retrlm_free(a);
        free(b);
    }
#ifdef RETRLM__OMP
    { // a long text is cut into pieces for the threads: the ids are those of one thread
        int *a = (int *)malloc(n1 * sizeof(int)), *b = (int *)malloc(n1 * sizeof(int));
        omp_set_num_threads(1);
        CHECK_OK(retrlm_tokenizer_encode(&g_json, t, len, 0, a, n1, &n2));
        omp_set_num_threads(2);
        CHECK_OK(retrlm_tokenizer_encode(&g_json, t, len, 0, b, n1, &n2));
        CHECK(n2 == n1 && !memcmp(a, b, n1 * sizeof(int)));
        free(a);
        free(b);
    }
#endif
    free(t);
}

// random bytes biased to the pre-tokenizer's edges: ASCII, spaces, apostrophes, UTF-8, junk
static size_t random_text(retrlm_rng *rng, unsigned char *buf, size_t max) {
    static const char *pieces[] = {" ", "  ", "\n", "\t", "'s", "'", "'ll", "a", "Z", "7", "!",
                                   "é", "日本", "\xe2\x80\x8b", "\xf0\x9f\x98\x80", "\xc2\xa0",
                                   "\xff", "\xc3", "\xed\xa0\x80", "\x80", "<|endoftext|>", "the"};
    size_t n = 0, want = (size_t)retrlm_rng_below(rng, max / 4);
    while (n < want) {
        if (retrlm_rng_below(rng, 3) == 0) {
            buf[n++] = (unsigned char)retrlm_rng_below(rng, 256);
        } else {
            const char *p = pieces[retrlm_rng_below(rng, sizeof pieces / sizeof pieces[0])];
            size_t l = strlen(p);
            if (n + l > max) break;
            memcpy(buf + n, p, l);
            n += l;
        }
    }
    return n;
}

static void test_round_trip(void) {
    retrlm_rng rng;
    unsigned char text[2048];
    char back[2100];
    int ids[2048], it, bad = 0;
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    retrlm_rng_seed(&rng, 7);
    for (it = 0; it < 3000; it++) {
        size_t n = random_text(&rng, text, sizeof text), k, nd;
        int flags = it & 1 ? RETRLM_TOKENIZE_SPECIAL : 0;
        const retrlm_tokenizer *tok = it & 2 ? &g_tik : &g_json;
        if (retrlm_tokenizer_encode(tok, (const char *)text, n, flags, ids, 2048, &k) !=
                RETRLM_OK ||
            retrlm_tokenizer_decode(tok, ids, k, back, sizeof back, &nd) != RETRLM_OK || nd != n ||
            memcmp(back, text, n))
            bad++;
    }
    CHECK(bad == 0);
}

// the O(n log n) merge gives the quadratic one's ids on every piece that fits both
static void test_small_large_agree(void) {
    retrlm_rng rng;
    unsigned char text[RETRLM__TOK_SMALL];
    int a[RETRLM__TOK_SMALL], b[RETRLM__TOK_SMALL], it, bad = 0, m;
    retrlm__enc e;
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    retrlm_rng_seed(&rng, 11);
    memset(&e, 0, sizeof e);
    for (it = 0; it < 4000; it++) {
        const retrlm_tokenizer *tok = it & 1 ? &g_tik : &g_json;
        size_t n = 1 + (size_t)retrlm_rng_below(&rng, RETRLM__TOK_SMALL), k;
        for (k = 0; k < n; k++) // letters and spaces make long merges likely
            text[k] = (unsigned char)(retrlm_rng_below(&rng, 4)
                                          ? "etaoinshrdlu"[retrlm_rng_below(&rng, 12)]
                                          : " ,.'"[retrlm_rng_below(&rng, 4)]);
        m = retrlm__bpe_small(tok, text, n, a);
        e.tok = tok;
        e.out = b;
        e.cap = RETRLM__TOK_SMALL;
        e.n = 0;
        CHECK_OK(retrlm__bpe_large(&e, text, n));
        if ((size_t)m != e.n || memcmp(a, b, (size_t)m * sizeof(int))) bad++;
    }
    retrlm__enc_free(&e);
    CHECK(bad == 0);
}

static void test_special_and_buffers(void) {
    const char *t = "a<|endoftext|>b";
    int ids[16];
    size_t n, nd;
    char out[8];
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    CHECK_OK(retrlm_tokenizer_encode(&g_json, t, strlen(t), RETRLM_TOKENIZE_SPECIAL, ids, 16, &n));
    CHECK(n == 3 && ids[0] == 64 && ids[1] == 50256 && ids[2] == 65);
    CHECK_OK(retrlm_tokenizer_encode(&g_json, t, strlen(t), 0, ids, 16, &n));
    CHECK(n > 3); // plain text: "<", "|", "endoftext", ...
    // size query, then a buffer one too small
    CHECK_OK(retrlm_tokenizer_encode(&g_json, "Hello world", 11, 0, NULL, 0, &n));
    CHECK(n == 2);
    CHECK(retrlm_tokenizer_encode(&g_json, "Hello world", 11, 0, ids, 1, &n) == RETRLM_ERR_RANGE);
    CHECK(n == 2 && ids[0] == 15496);
    ids[0] = 15496, ids[1] = 995;
    CHECK_OK(retrlm_tokenizer_decode(&g_json, ids, 2, NULL, 0, &nd));
    CHECK(nd == 11);
    CHECK(retrlm_tokenizer_decode(&g_json, ids, 2, out, sizeof out, &nd) == RETRLM_ERR_RANGE);
    CHECK(nd == 11 && !memcmp(out, "Hello wo", 8));
    ids[1] = 50257;
    CHECK(retrlm_tokenizer_decode(&g_json, ids, 2, NULL, 0, &nd) == RETRLM_ERR_RANGE);
    CHECK_OK(retrlm_tokenizer_encode(&g_json, "", 0, 0, ids, 16, &n));
    CHECK(n == 0);
}

// batch = each text alone, whatever the thread count; offsets frame each document
static void test_batch(void) {
    size_t len, n_all, k, total = 0, got;
    int nv, i, nd = 3000, *all, *one;
    char *t, **docs;
    size_t *lens, *offs;
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    t = kjv_text(&len, &nv);
    if (!t) SKIP(test_missing("kjv/verses.tsv"));
    docs = (char **)malloc((size_t)nd * sizeof(char *));
    lens = (size_t *)malloc((size_t)nd * sizeof(size_t));
    offs = (size_t *)malloc(((size_t)nd + 1) * sizeof(size_t));
    for (i = 0, k = 0; i < nd; i++) { // verses 0..nd-1, found at the newlines
        size_t e = k;
        while (e < len && t[e] != '\n') e++;
        docs[i] = t + k;
        lens[i] = e - k;
        k = e + 1;
    }
    CHECK_OK(retrlm_tokenizer_encode_batch(&g_json, (const char *const *)docs, lens, nd, 0, NULL,
                                           0, offs, &n_all));
    all = (int *)malloc(n_all * sizeof(int));
    one = (int *)malloc(4096 * sizeof(int));
    CHECK_OK(retrlm_tokenizer_encode_batch(&g_json, (const char *const *)docs, lens, nd, 0, all,
                                           n_all, offs, &n_all));
    for (i = 0; i < nd; i++) {
        CHECK_OK(retrlm_tokenizer_encode(&g_json, docs[i], lens[i], 0, one, 4096, &got));
        if (offs[i] != total || got != offs[i + 1] - offs[i] ||
            memcmp(one, all + offs[i], got * sizeof(int))) {
            CHECK(0);
            break;
        }
        total += got;
    }
    CHECK(total == n_all && offs[nd] == n_all);
    CHECK(retrlm_tokenizer_encode_batch(&g_json, (const char *const *)docs, lens, nd, 0, all,
                                        n_all - 1, NULL, &got) == RETRLM_ERR_RANGE && got == n_all);
    free(all);
    free(one);
    free(docs);
    free(lens);
    free(offs);
    free(t);
}

static int count_cb(void *user, const char *stage, double done, double total) {
    (void)stage, (void)done, (void)total;
    ++*(int *)user;
    return 0;
}

// two tokenizers hold the same tokens, merges and specials
static int same_tokenizer(const retrlm_tokenizer *a, const retrlm_tokenizer *b) {
    return a->n_vocab == b->n_vocab && a->n_merges == b->n_merges && a->n_special == b->n_special &&
           !memcmp(a->tok_off_, b->tok_off_, ((size_t)a->n_vocab + 1) * sizeof(size_t)) &&
           !memcmp(a->tok_bytes_, b->tok_bytes_, a->tok_off_[a->n_vocab]) &&
           !memcmp(a->merges_, b->merges_, (size_t)a->n_merges * 4 * sizeof(int)) &&
           !memcmp(a->special_, b->special_, (size_t)a->n_special * sizeof(int));
}

// trains on the KJV train split; deterministic over thread counts; saves, loads, encodes alike
static void test_train_kjv(void) {
    char path[512];
    const char *sp[2] = {"<|endoftext|>", "<|sep|>"};
    retrlm_tokenizer a, b, c;
    retrlm_tokenizer_train_config cfg;
    size_t size, n1, n2, nd, k, kk;
    char *text, *back;
    int *i1, *i2, calls = 0;
    double t0;
    text = read_all(test_data("kjv/train.txt", path, sizeof path), &size);
    if (!text) SKIP(test_missing("kjv/train.txt"));
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 8192;
    cfg.special_tokens = sp;
    cfg.n_special = 2;
    cfg.progress = count_cb;
    cfg.progress_user = &calls;
#ifdef RETRLM__OMP
    omp_set_num_threads(1);
#endif
    t0 = retrlm_time_seconds();
    CHECK_OK(retrlm_tokenizer_train_file(&a, &cfg, test_data("kjv/train.txt", path, sizeof path)));
    printf("train: %lu bytes, vocab %d, %d merges in %.2f s\n", (unsigned long)size, a.n_vocab,
           a.n_merges, retrlm_time_seconds() - t0);
#ifdef RETRLM__OMP
    omp_set_num_threads(2);
#endif
    {
        const char *texts[1];
        texts[0] = text;
        CHECK_OK(retrlm_tokenizer_train(&b, &cfg, texts, &size, 1, NULL, NULL));
    }
    CHECK(a.n_vocab == 8192 && calls > 0);
    CHECK(retrlm_tokenizer_find(&a, "<|sep|>", 7) == 8191);
    CHECK(same_tokenizer(&a, &b));
    retrlm_tokenizer_free(&b);
    CHECK_OK(retrlm_tokenizer_save(&a, "build/tests/kjv8192.tok"));
    CHECK_OK(retrlm_tokenizer_load(&b, "build/tests/kjv8192.tok"));
    CHECK(same_tokenizer(&a, &b));
    // save_memory + load_memory
    CHECK_OK(retrlm_tokenizer_save_memory(&a, NULL, 0, &k));
    back = (char *)malloc(k);
    CHECK_OK(retrlm_tokenizer_save_memory(&a, back, k, &kk));
    CHECK_OK(retrlm_tokenizer_load_memory(&c, back, kk));
    CHECK(same_tokenizer(&a, &c));
    free(back);
    i1 = (int *)malloc(size * sizeof(int));
    i2 = (int *)malloc(size * sizeof(int));
    CHECK_OK(retrlm_tokenizer_encode(&a, text, size, 0, i1, size, &n1));
    CHECK_OK(retrlm_tokenizer_encode(&b, text, size, 0, i2, size, &n2));
    CHECK(n1 == n2 && !memcmp(i1, i2, n1 * sizeof(int)));
    printf("train: kjv train split encodes to %lu tokens (%.2f bytes/token)\n", (unsigned long)n1,
           (double)size / (double)n1);
    back = (char *)malloc(size + 1);
    CHECK_OK(retrlm_tokenizer_decode(&b, i2, n2, back, size + 1, &nd));
    CHECK(nd == size && !memcmp(back, text, size));
    free(back);
    free(i1);
    free(i2);
    retrlm_tokenizer_free(&a);
    retrlm_tokenizer_free(&b);
    retrlm_tokenizer_free(&c);
    retrlm_tokenizer_free(&c); // twice: safe
    free(text);
}

static int cancel_cb(void *user, const char *stage, double done, double total) {
    (void)user, (void)done, (void)total;
    return !strcmp(stage, "bpe count"); // stop after counting
}

// list of texts, and the callback stream, train the same vocabulary; min_frequency stops early
struct stream { const char *const *t; int i, n; };
static int stream_next(void *user, const char **text, size_t *len) {
    struct stream *s = (struct stream *)user;
    if (s->i >= s->n) return 0;
    *text = s->t[s->i++];
    *len = strlen(*text);
    return 1;
}

static void test_train_small(void) {
    const char *docs[4] = {"the cat sat on the mat", "the cat ate the rat", "that hat", "ab ab ab"};
    retrlm_tokenizer a, b;
    retrlm_tokenizer_train_config cfg;
    struct stream st;
    int ids[64];
    size_t n, nd;
    char out[64];
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&a, &cfg, docs, NULL, 4, NULL, NULL));
    st.t = docs, st.i = 0, st.n = 4;
    CHECK_OK(retrlm_tokenizer_train(&b, &cfg, NULL, NULL, 0, stream_next, &st));
    CHECK(same_tokenizer(&a, &b));
    CHECK(a.n_vocab < 300 && a.n_merges > 5); // every pair seen twice is merged, then it stops
    CHECK(retrlm_tokenizer_find(&a, " the", 4) >= 256);
    CHECK_OK(retrlm_tokenizer_encode(&a, docs[0], strlen(docs[0]), 0, ids, 64, &n));
    CHECK_OK(retrlm_tokenizer_decode(&a, ids, n, out, sizeof out, &nd));
    CHECK(nd == strlen(docs[0]) && !strcmp(out, docs[0]));
    retrlm_tokenizer_free(&a);
    retrlm_tokenizer_free(&b);
    cfg.progress = cancel_cb;
    CHECK(retrlm_tokenizer_train(&a, &cfg, docs, NULL, 4, NULL, NULL) == RETRLM_ERR_CANCELLED);
    CHECK(a.n_vocab == 0);
    cfg.progress = NULL;
    cfg.vocab_size = 100;
    CHECK(retrlm_tokenizer_train(&a, &cfg, docs, NULL, 4, NULL, NULL) == RETRLM_ERR_ARG);
    CHECK(a.n_vocab == 0);
    { // special-token text is not learned from, and stays whole when allowed
        const char *sp[1] = {"<|doc|>"};
        const char *d2[3] = {"one<|doc|>two<|doc|>", "<|doc|><|doc|>one", "two<|doc|>"};
        cfg.vocab_size = 400;
        cfg.special_tokens = sp;
        cfg.n_special = 1;
        CHECK_OK(retrlm_tokenizer_train(&a, &cfg, d2, NULL, 3, NULL, NULL));
        CHECK(retrlm_tokenizer_find(&a, "<|", 2) < 0 && retrlm_tokenizer_find(&a, "one", 3) >= 256);
        CHECK_OK(retrlm_tokenizer_encode(&a, d2[0], strlen(d2[0]), RETRLM_TOKENIZE_SPECIAL, ids, 64,
                                         &n));
        CHECK(n == 4 && ids[1] == a.n_vocab - 1 && ids[3] == a.n_vocab - 1);
        retrlm_tokenizer_free(&a);
    }
}

// bad inputs fail with a code and a message, never crash
static void test_bad_files(void) {
    retrlm_tokenizer t;
    const char *json = "{\"a\": 0}";
    unsigned char *img;
    size_t n, k;
    CHECK(retrlm_tokenizer_load_gpt2_memory(&t, json, strlen(json), "", 0) == RETRLM_ERR_FORMAT);
    CHECK(retrlm_last_error()[0] != 0);
    CHECK(retrlm_tokenizer_load_gpt2_memory(&t, "{", 1, "", 0) == RETRLM_ERR_FORMAT);
    CHECK(retrlm_tokenizer_load_tiktoken_memory(&t, "IQ== x\n", 7, NULL, 0) == RETRLM_ERR_FORMAT);
    CHECK(retrlm_tokenizer_load_tiktoken_memory(&t, "IQ== 0\n", 7, NULL, 0) == RETRLM_ERR_FORMAT);
    CHECK(retrlm_tokenizer_load_memory(&t, "junk", 4) != RETRLM_OK);
    CHECK(t.n_vocab == 0);
    if (!g_have) SKIP(test_missing("gpt2-bpe/{encoder.json,vocab.bpe,gpt2.tiktoken}"));
    // a valid image with each of many single bytes flipped: every load fails cleanly or works
    CHECK_OK(retrlm_tokenizer_save_memory(&g_json, NULL, 0, &n));
    img = (unsigned char *)malloc(n);
    CHECK_OK(retrlm_tokenizer_save_memory(&g_json, img, n, &n));
    for (k = 0; k < n; k += n / 97 + 1) {
        img[k] ^= 0x5a;
        if (retrlm_tokenizer_load_memory(&t, img, n) == RETRLM_OK) retrlm_tokenizer_free(&t);
        img[k] ^= 0x5a;
    }
    CHECK_OK(retrlm_tokenizer_load_memory(&t, img, n));
    CHECK(same_tokenizer(&t, &g_json));
    retrlm_tokenizer_free(&t);
    free(img);
}

int main(void) {
    load_gpt2();
    RUN(test_gpt2_files);
    RUN(test_gpt2_vectors);
    RUN(test_kjv_count);
    RUN(test_round_trip);
    RUN(test_small_large_agree);
    RUN(test_special_and_buffers);
    RUN(test_batch);
    RUN(test_train_small);
    RUN(test_train_kjv);
    RUN(test_bad_files);
    retrlm_tokenizer_free(&g_json);
    retrlm_tokenizer_free(&g_tik);
    return test_report();
}
