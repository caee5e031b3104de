// examples/demo.c - a retrieval-based LM end to end, on a public-domain text in this repository
// (examples/data/kjv-excerpt.tsv: 2 Kings, 2 Chronicles and Isaiah, which retell each other):
//   1. trains a byte-level BPE tokenizer on the training chapters,
//   2. trains a small transformer LM on them (strategy 1: the LM knows nothing of retrieval),
//   3. cuts the training chapters into 64-token units and indexes them with BM25,
//   4. measures bits per byte on held-out chapters: the LM alone, with in-context retrieval, with
//      the REPLUG ensemble, and as a kNN-LM over the LM's own hidden states of the training text,
//   5. generates a continuation of a held-out verse, with the retrieved passage shown.
// Held out: Isaiah 36-39 (told again in 2 Kings 18-20) and 2 Chronicles 34-35 (2 Kings 22-23).
//   cc -std=c99 -O3 -fopenmp -I. -I/usr/include/stb examples/demo.c -lm -o demo && ./demo
// Options: ./demo [steps] [data.tsv]; make demo runs 400 steps.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chapter { char book[32]; int chapter; char *text; size_t len; } chapter;

static int held_out(const chapter *c) {
    return (!strcmp(c->book, "Isaiah") && c->chapter >= 36 && c->chapter <= 39) ||
           (!strcmp(c->book, "2 Chronicles") && (c->chapter == 34 || c->chapter == 35));
}

// reads "book TAB chapter TAB verse TAB text" lines into chapters (verses joined by newlines)
static chapter *read_chapters(const char *path, int *n_out) {
    FILE *f = fopen(path, "rb");
    chapter *ch = NULL;
    int n = 0, cap = 0;
    char line[8192];
    if (!f) return NULL;
    if (!fgets(line, sizeof line, f)) { fclose(f); return NULL; } // header
    while (fgets(line, sizeof line, f)) {
        char *book = strtok(line, "\t"), *chap = strtok(NULL, "\t"), *verse = strtok(NULL, "\t"), *text = strtok(NULL, "\n");
        size_t tl;
        if (!book || !chap || !verse || !text) continue;
        if (n == 0 || strcmp(ch[n - 1].book, book) || ch[n - 1].chapter != atoi(chap)) {
            if (n == cap) ch = (chapter *)realloc(ch, sizeof *ch * (size_t)(cap = cap ? 2 * cap : 256));
            memset(&ch[n], 0, sizeof ch[n]);
            snprintf(ch[n].book, sizeof ch[n].book, "%s", book);
            ch[n].chapter = atoi(chap);
            n++;
        }
        tl = strlen(text);
        ch[n - 1].text = (char *)realloc(ch[n - 1].text, ch[n - 1].len + tl + 2);
        memcpy(ch[n - 1].text + ch[n - 1].len, text, tl);
        ch[n - 1].len += tl;
        ch[n - 1].text[ch[n - 1].len++] = '\n';
        ch[n - 1].text[ch[n - 1].len] = '\0';
    }
    fclose(f);
    *n_out = n;
    return ch;
}

static void die(const char *what) {
    fprintf(stderr, "demo: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

// a one-line progress display on stderr
static int show_progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    (void)user;
    if (now - last > 0.5 || done >= total) {
        fprintf(stderr, "\r  %-10s %8.0f / %-8.0f", stage, done, total);
        if (done >= total) fprintf(stderr, "\n");
        last = now;
    }
    return 0;
}

// the training or held-out text: chapters joined, and its tokens
static char *join(const chapter *ch, int n, int test, size_t *len) {
    size_t total = 0;
    int i;
    char *s;
    for (i = 0; i < n; i++) if (held_out(&ch[i]) == test) total += ch[i].len;
    s = (char *)malloc(total + 1);
    for (i = 0, total = 0; i < n; i++)
        if (held_out(&ch[i]) == test) memcpy(s + total, ch[i].text, ch[i].len), total += ch[i].len;
    s[total] = '\0';
    *len = total;
    return s;
}

static int *encode(const retrlm_tokenizer *tok, const char *s, size_t len, size_t *n) {
    int *ids;
    if (retrlm_tokenizer_encode_alloc(tok, s, len, 0, &ids, n)) die("encode");
    return ids;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 400, n_ch, i;
    const char *path = argc > 2 ? argv[2] : "examples/data/kjv-excerpt.tsv";
    chapter *ch = read_chapters(path, &n_ch);
    retrlm_tokenizer tok;
    retrlm_tokenizer_train_config tc;
    retrlm_model model;
    retrlm_model_config mc;
    retrlm_adamw opt;
    retrlm_adamw_config oc;
    retrlm_adamw_group groups[2];
    retrlm_lm_train_config lc;
    retrlm_lm_train_state st;
    retrlm_datastore ds;
    retrlm_datastore_config dc;
    retrlm_ralm_config rc;
    char *train_text, *test_text;
    size_t train_len, test_len, n_train, n_test;
    int *train_ids, *test_ids;
    retrlm_knnlm knn;
    double t0 = retrlm_time_seconds(), bpb[4];
    static const char *const names[4] = {"LM alone", "+ in-context (BM25, top 1)", "+ REPLUG (BM25, top 4)",
                                         "+ kNN-LM (k 64, lambda 0.25)"};
    static const char *const keys[4] = {"lm", "incontext", "replug", "knnlm"};
    static const retrlm_ralm_mode modes[4] = {RETRLM_RALM_NONE, RETRLM_RALM_INCONTEXT, RETRLM_RALM_REPLUG,
                                              RETRLM_RALM_NONE};

    if (!ch) {
        fprintf(stderr, "demo: cannot read %s (run from the repository root)\n", path);
        return 1;
    }
    train_text = join(ch, n_ch, 0, &train_len);
    test_text = join(ch, n_ch, 1, &test_len);
    printf("corpus: %s, %d chapters; train %lu bytes, held out %lu bytes (Isaiah 36-39, 2 Chronicles 34-35)\n",
           path, n_ch, (unsigned long)train_len, (unsigned long)test_len);

    // 1. tokenizer
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 1024;
    if (retrlm_tokenizer_train(&tok, &tc, (const char *const *)&train_text, &train_len, 1, NULL, NULL)) die("tokenizer");
    train_ids = encode(&tok, train_text, train_len, &n_train);
    test_ids = encode(&tok, test_text, test_len, &n_test);
    printf("1. tokenizer: %d tokens trained in %.1f s; train %lu tokens, held out %lu (%.2f bytes/token)\n",
           tok.n_vocab, retrlm_time_seconds() - t0, (unsigned long)n_train, (unsigned long)n_test,
           (double)train_len / (double)n_train);

    // 2. language model
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = tok.n_vocab;
    mc.dim = 128;
    mc.n_layers = 4;
    mc.n_heads = 4;
    mc.max_seq_len = 192;
    mc.max_batch = 8;
    mc.seed = 1;
    if (retrlm_model_init(&model, &mc)) die("model");
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = 50;
    oc.total_steps = steps;
    i = retrlm_model_param_groups(&model, 3e-3f, 0.1f, groups);
    if (retrlm_adamw_init(&opt, &oc, groups, i)) die("optimizer");
    memset(&lc, 0, sizeof lc);
    lc.train = train_ids;
    lc.n_train = n_train;
    lc.batch = 8;
    lc.seq_len = 128;
    lc.steps = steps;
    lc.progress = show_progress;
    retrlm_lm_train_state_init(&st, 1);
    t0 = retrlm_time_seconds();
    if (retrlm_lm_train(&model, &opt, &lc, &st)) die("training");
    printf("2. LM: %d layers, dim %d, %.2fM parameters; %d steps of 8 x 128 tokens in %.0f s, last loss %.3f\n",
           mc.n_layers, mc.dim, (double)model.n_params / 1e6, steps, retrlm_time_seconds() - t0, st.last_loss);

    // 3. datastore: the training chapters in 64-token units, BM25 over them
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = 64;
    if (retrlm_datastore_init(&ds, &dc)) die("datastore");
    for (i = 0; i < n_ch; i++)
        if (!held_out(&ch[i]) && retrlm_datastore_add(&ds, &tok, i, ch[i].text, ch[i].len, RETRLM_DATASTORE_CHUNK)) die("datastore");
    if (retrlm_datastore_commit(&ds)) die("datastore");
    printf("3. datastore: %d units of up to 64 tokens from the training chapters, BM25 over %d terms\n",
           ds.n_units, ds.bm25.n_terms);
    t0 = retrlm_time_seconds();
    if (retrlm_knnlm_build(&knn, &model, train_ids, n_train, 192, NULL)) die("kNN-LM keys");
    printf("   kNN-LM: %lu keys (hidden states at the last feed-forward input) in %.0f s, flat index, %.0f MB\n",
           (unsigned long)knn.n, retrlm_time_seconds() - t0, retrlm_index_bytes(&knn.index) / 1e6);

    // 4. bits per byte on the held-out chapters
    printf("4. bits per byte on the held-out chapters (%lu tokens; predict 16 tokens per retrieval, query = last 32)\n",
           (unsigned long)n_test);
    for (i = 0; i < 4; i++) {
        memset(&rc, 0, sizeof rc);
        rc.mode = modes[i];
        rc.stride = 16;
        rc.query_tokens = 32;
        rc.unit_tokens = 64;
        rc.context_tokens = 192 - 64 - 16; // every row sees the same amount of its own text
        if (i == 3) rc.knnlm = &knn;
        t0 = retrlm_time_seconds();
        if (retrlm_ralm_bits_per_byte(&model, &tok, &ds, test_ids, n_test, test_len, &rc, &bpb[i], NULL)) die("ralm");
        printf("   %-28s %.4f bits/byte  %+6.1f%%  (%.0f s)\n", names[i], bpb[i], 100.0 * (bpb[i] / bpb[0] - 1),
               retrlm_time_seconds() - t0);
    }
    for (i = 0; i < 4; i++) printf("demo.%s.bpb=%.4f\n", keys[i], bpb[i]);

    // 5. generation with the retrieved passage in front
    {
        static const char prompt_text[] = "Then Rabshakeh stood and cried with a loud voice in the Jews' language,";
        int units[1], found, n_unit, prompt[256], out[64], n_out, n_prompt;
        size_t n_p, ulen, glen;
        const int *unit;
        const char *utext;
        char gen[1024];
        retrlm_sampler smp;
        retrlm_rng rng;
        if (retrlm_datastore_search(&ds, prompt_text, strlen(prompt_text), 1, RETRLM_NO_DOC, units, NULL, &found) || !found) die("search");
        unit = retrlm_datastore_tokens(&ds, units[0], &n_unit);
        utext = retrlm_datastore_text(&ds, units[0], &ulen);
        memcpy(prompt, unit, sizeof(int) * (size_t)n_unit);
        if (retrlm_tokenizer_encode(&tok, prompt_text, strlen(prompt_text), 0, prompt + n_unit, 256 - (size_t)n_unit, &n_p)) die("encode");
        n_prompt = n_unit + (int)n_p;
        memset(&smp, 0, sizeof smp); // greedy
        retrlm_rng_seed(&rng, 1);
        if (retrlm_model_generate(&model, prompt, n_prompt, 40, &smp, &rng, out, &n_out)) die("generate");
        if (retrlm_tokenizer_decode(&tok, out, (size_t)n_out, gen, sizeof gen, &glen)) die("decode");
        printf("5. generation (greedy) for a held-out verse of Isaiah 36:13\n   retrieved (%s %d): %.*s\n   prompt: %s\n   model:  %s\n",
               ch[ds.unit_doc[units[0]]].book, ch[ds.unit_doc[units[0]]].chapter, (int)(ulen > 160 ? 160 : ulen), utext, prompt_text, gen);
    }
    retrlm_knnlm_free(&knn);
    retrlm_datastore_free(&ds);
    retrlm_adamw_free(&opt);
    retrlm_model_free(&model);
    retrlm_tokenizer_free(&tok);
    for (i = 0; i < n_ch; i++) free(ch[i].text);
    free(ch), free(train_text), free(test_text), retrlm_free(train_ids), retrlm_free(test_ids);
    return 0;
}
