// bench/ralm_kjv - strategy 1 on the King James Bible: an LM and a retriever trained
// independently, combined at inference. Tokenizer and LM are trained on kjv/train.txt; the
// datastore is the train split's 5-verse passages (kjv/passages.tsv, split = train) for BM25
// and for a dense retriever trained on them without labels (Contriever: two random crops of a
// passage are a positive pair), and the LM's hidden states over train.txt for kNN-LM;
// everything is scored on kjv/test.txt (chapters never seen in training or in the datastore).
// kNN-LM's lambda and temperature are chosen on kjv/valid.txt. Prints a table, then name=value
// lines.
// Strategy 2 follows (sequential training, each side against the other frozen): REPLUG LSR
// fine-tunes the dense retriever on valid.txt windows (chapters not in the datastore, as the
// test's are) from the frozen LM's preferences; in-context training retrofits the LM to read
// a BM25 unit before its window (train chapters, units of the window's own chapter excluded),
// beside a control LM trained as many more steps without retrieval.
//   make bench-ralm_kjv                 (RETRLM_DATA=../shared/data by default)
//   build/bench/ralm_kjv [steps] [out_dir] [contriever_steps] [lsr_steps] [retrofit_steps]
// Trained artifacts are kept in out_dir (default build/kjv): a second run reuses them.
// RETRLM_KJV_PART=2 runs the strategy 2 table alone (no kNN-LM, no strategy 1 table);
// RETRLM_KJV_TEST_TOKENS=N scores the first N test tokens only (a quick look, not the table).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"

#define ROWS 6 // the test table

static void die(const char *what) {
    fprintf(stderr, "ralm_kjv: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

// the whole file (tests/files.h read_all), or the program ends
static char *slurp(const char *path, size_t *len) {
    char *s = read_all(path, len);
    if (!s) { fprintf(stderr, "ralm_kjv: cannot read %s\n", path); exit(1); }
    return s;
}

static int *encode(const retrlm_tokenizer *tok, const char *s, size_t len, size_t *n) {
    int *ids;
    if (retrlm_tokenizer_encode_alloc(tok, s, len, 0, &ids, n)) die("encode");
    return ids;
}

// a chapter's document id: FNV-1a 64 of "<book> <chapter>" (units and streams agree on it)
static int64_t chapter_id(const char *book, const char *chapter) {
    uint64_t h = 14695981039346656037u;
    const char *parts[3] = {book, " ", chapter};
    int i;
    for (i = 0; i < 3; i++)
        for (const char *p = parts[i]; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211u;
    return (int64_t)(h >> 1);
}

// splits a TSV line in place into n columns (the last ends at the newline); 0 if short
static int columns(char *line, char **col, int n) {
    char *p = line;
    int c;
    for (c = 0; c < n && p; c++) {
        col[c] = p;
        p = strchr(p, c < n - 1 ? '\t' : '\n');
        if (p) *p++ = '\0';
    }
    return c == n;
}

// the table's setting: 64-token strides from a 256-token window; rows without retrieved text
// fill it with 192 tokens of their own prefix, rows with a retrieved 128-token unit keep 64
static double test_bpb(retrlm_model *m, const retrlm_tokenizer *tok, const retrlm_datastore *ds,
                       const int *ids, size_t n, size_t bytes, retrlm_ralm_mode mode,
                       const retrlm_retrieve_params *retrieve, const retrlm_knnlm *knn,
                       float lambda, float temp, double *secs) {
    retrlm_ralm_config rc;
    double bpb, t0 = retrlm_time_seconds();
    memset(&rc, 0, sizeof rc);
    rc.mode = mode;
    rc.retrieve = retrieve;
    rc.stride = 64;
    rc.query_tokens = 32;
    rc.unit_tokens = 128;
    rc.context_tokens = mode == RETRLM_RALM_NONE ? 192 : 64;
    if (knn) rc.knnlm = knn, rc.knn_k = 128, rc.lambda = lambda, rc.knn_temperature = temp;
    if (retrlm_ralm_bits_per_byte(m, tok, ds, ids, n, bytes, &rc, &bpb, NULL)) die("test");
    if (secs) *secs = retrlm_time_seconds() - t0;
    return bpb;
}

static int progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    (void)user;
    if (now - last > 10 || done >= total) {
        fprintf(stderr, "  %s %.0f / %.0f\n", stage, done, total);
        last = now;
    }
    return 0;
}

// Strategy 1: kNN-LM keys over train.txt, kNN-LM's lambda and temperature on valid, the table
static void strategy1(retrlm_model *model, const retrlm_tokenizer *tok, const retrlm_datastore *ds,
                      const retrlm_retrieve_params *dense, retrlm_knnlm *knn, const int *train_ids, size_t n_train,
                      const int *valid_ids, size_t n_valid, size_t valid_len, const int *test_ids, size_t n_test,
                      size_t test_len, const char *out, int steps, int ctr_steps, double t_ctr) {
    char path[1024];
    double t0, bpb[ROWS], best_valid = 1e9, secs[ROWS];
    float best_lambda = 0.25f, best_temp = 1.0f;
    retrlm_ralm_config rc;
    int i;
    // kNN-LM keys over train.txt
    t0 = retrlm_time_seconds();
    {
        retrlm_index_config ic; // IVF: the valid grid and the test pass search 1M keys many times
        memset(&ic, 0, sizeof ic);
        ic.nlist = 1024;
        ic.nprobe = 32;
        ic.progress = progress;
        snprintf(path, sizeof path, "%s/knnlm-%d.rlm", out, steps); // the keys of this LM, kept
        if (retrlm_knnlm_load(knn, path, model->config.vocab_size)) {
            if (retrlm_knnlm_build(knn, model, train_ids, n_train, 256, &ic)) die("kNN-LM");
            if (retrlm_knnlm_save(knn, path)) die("save kNN-LM keys");
        }
    }
    fprintf(stderr, "kNN-LM: %lu keys in %.0f s\n", (unsigned long)knn->n, retrlm_time_seconds() - t0);

    // kNN-LM lambda and temperature on valid, with the LM's full window (as the test rows
    // without retrieved text use it)
    {
        static const float lambdas[] = {0.2f, 0.3f, 0.4f}, temps[] = {5.0f, 10.0f, 20.0f};
        int a, b;
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++) {
                double v;
                memset(&rc, 0, sizeof rc);
                rc.stride = 64;
                rc.context_tokens = 192;
                rc.knnlm = knn;
                rc.knn_k = 128;
                rc.lambda = lambdas[a];
                rc.knn_temperature = temps[b];
                if (retrlm_ralm_bits_per_byte(model, tok, ds, valid_ids, n_valid, valid_len, &rc, &v, NULL)) die("valid");
                fprintf(stderr, "  valid kNN-LM lambda %.2f temperature %.0f: %.4f\n", lambdas[a], temps[b], v);
                if (v < best_valid) best_valid = v, best_lambda = lambdas[a], best_temp = temps[b];
            }
    }

    // test: every row reads the same windows (test_bpb): retrieval has to beat own context, as
    // in In-Context RALM's comparison
    for (i = 0; i < ROWS; i++)
        bpb[i] = test_bpb(model, tok, ds, test_ids, n_test, test_len,
                          i == 1 || i == 2 || i == 5 ? RETRLM_RALM_INCONTEXT : i == 3 ? RETRLM_RALM_REPLUG : RETRLM_RALM_NONE,
                          i == 2 ? dense : NULL, i >= 4 ? knn : NULL, best_lambda, best_temp, &secs[i]);
    printf("KJV test (%lu bytes, %lu tokens); LM %d layers dim %d, %d steps; window 256: 192 tokens of own text, or 64 + a "
           "retrieved 128-token unit; stride 64\n",
           (unsigned long)test_len, (unsigned long)n_test, model->config.n_layers, model->config.dim, steps);
    printf("| %-38s | bits/byte | vs LM  | seconds |\n|---|---:|---:|---:|\n", "system");
    {
        static const char *names[ROWS] = {"LM alone", "+ in-context (BM25 passage)", "+ in-context (dense passage)",
                                          "+ REPLUG (BM25, top 4)", "+ kNN-LM", "+ in-context (BM25) + kNN-LM"};
        static const char *keys[ROWS] = {"lm", "incontext_bm25", "incontext_dense", "replug_bm25", "knnlm", "incontext_bm25_knnlm"};
        for (i = 0; i < ROWS; i++)
            printf("| %-38s | %.4f | %+.1f%% | %.0f |\n", names[i], bpb[i], 100.0 * (bpb[i] / bpb[0] - 1), secs[i]);
        printf("knnlm: k 128, lambda %.2f, temperature %.0f (chosen on valid: %.4f); IVF 1024 lists, nprobe 32\n", best_lambda, best_temp,
               best_valid);
        printf("dense retriever: Contriever on the train passages, %d steps (%.0f s; 0 s: loaded), 2 layers dim 128, shared, normalised\n",
               ctr_steps, t_ctr);
        for (i = 0; i < ROWS; i++) printf("kjv.%s.bpb=%.4f\n", keys[i], bpb[i]);
    }
}

// The LM of lm_path again, and an AdamW for it at a constant learning rate
static void lm_copy(retrlm_model *m, retrlm_adamw *opt, const char *lm_path, float lr) {
    retrlm_adamw_config oc;
    retrlm_adamw_group g[2];
    int n;
    if (retrlm_model_load(m, lm_path, NULL)) die("load LM");
    memset(&oc, 0, sizeof oc);
    n = retrlm_model_param_groups(m, lr, 0.1f, g);
    if (retrlm_adamw_init(opt, &oc, g, n)) die("optimizer");
}

// Strategy 2: REPLUG LSR for the retriever, in-context training for the LM, each against the
// other side frozen; a table of its own
static void strategy2(retrlm_model *model, const retrlm_tokenizer *tok, retrlm_datastore *ds, retrlm_encoder *enc,
                      const retrlm_retrieve_params *dense, const char *lm_path, const char *root, const char *out,
                      const int *valid_ids, size_t n_valid, const int *test_ids, size_t n_test, size_t test_len,
                      int steps, int lsr_steps, int retro_steps) {
    enum { N2 = 8 };
    static const char *names[N2] = {"LM alone", "+ REPLUG (dense Contriever, top 4)", "+ REPLUG (dense Contriever + LSR, top 4)",
                                    "LM + more steps, no retrieval (control)", "  + in-context (BM25 passage)",
                                    "LM retrofitted with in-context BM25", "  + in-context (BM25 passage)",
                                    "  + in-context (dense Contriever + LSR)"};
    static const char *keys[N2] = {"lm", "replug_dense", "replug_dense_lsr", "control_lm", "control_incontext_bm25",
                                   "retro_lm", "retro_incontext_bm25", "retro_incontext_dense_lsr"};
    double bpb[N2], secs[N2], t_lsr = 0, t_retro = 0, t_ctl = 0, t0;
    int i, have[N2] = {0};
    char path[1024];
    bpb[0] = test_bpb(model, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_NONE, NULL, NULL, 0, 0, &secs[0]);
    have[0] = 1;
    if (lsr_steps > 0) {
        retrlm_lsr_config lc;
        retrlm_adamw opt;
        retrlm_adamw_config oc;
        retrlm_adamw_group g[6];
        retrlm_retriever_train_state st;
        float *losses = (float *)malloc(sizeof(float) * (size_t)lsr_steps);
        double early = 0, late = 0;
        int nl = lsr_steps < 20 ? lsr_steps : 20;
        bpb[1] = test_bpb(model, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_REPLUG, dense, NULL, 0, 0, &secs[1]);
        memset(&oc, 0, sizeof oc);
        if (retrlm_adamw_init(&opt, &oc, g, retrlm_encoder_param_groups(enc, 1e-4f, 0.01f, g))) die("optimizer");
        memset(&lc, 0, sizeof lc);
        lc.lm = model;
        lc.lm_tok = tok;
        lc.ds = ds;
        lc.tokens = valid_ids; // chapters outside the datastore, as the test's are
        lc.n_tokens = n_valid;
        lc.context_tokens = 64; // as the test rows read: 64 own tokens, the last 32 the query,
        lc.query_tokens = 32;   // a 128-token unit, then the 64 tokens to predict
        lc.continuation_tokens = 64;
        lc.unit_tokens = 128;
        lc.k = 8;
        lc.batch = 8;
        lc.temperature = 0.1f;
        lc.steps = lsr_steps;
        lc.refresh_every = 50;
        lc.losses = losses;
        lc.progress = progress;
        retrlm_retriever_train_state_init(&st, 6);
        t0 = retrlm_time_seconds();
        if (retrlm_lsr_train(enc, &opt, &lc, &st)) die("LSR");
        if (retrlm_datastore_embed(ds, enc, tok, NULL, progress, NULL)) die("embed after LSR");
        t_lsr = retrlm_time_seconds() - t0;
        for (i = 0; i < nl; i++) early += losses[i], late += losses[lsr_steps - nl + i];
        fprintf(stderr, "LSR: %d steps in %.0f s, KL %.4f -> %.4f (means of %d steps)\n", lsr_steps, t_lsr, early / nl, late / nl, nl);
        snprintf(path, sizeof path, "%s/encoder-lsr-%d.rlm", out, lsr_steps);
        if (retrlm_encoder_save(enc, path)) die("save LSR encoder");
        bpb[2] = test_bpb(model, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_REPLUG, dense, NULL, 0, 0, &secs[2]);
        have[1] = have[2] = 1;
        retrlm_adamw_free(&opt);
        free(losses);
    }
    if (retro_steps > 0) {
        // the stream: the train chapters (chapters.tsv: id, book, chapter, split, text), each
        // token tagged with its chapter so that no window retrieves its own chapter's units
        char *line = (char *)malloc(1 << 20), *col[5];
        int *ids = NULL, *cid;
        int64_t *doc = NULL;
        size_t n = 0, cap = 0, m;
        FILE *f;
        retrlm_model lm2;
        retrlm_adamw opt;
        snprintf(path, sizeof path, "%s/kjv/chapters.tsv", root);
        if (!(f = fopen(path, "rb")) || !fgets(line, 1 << 20, f)) die("chapters.tsv");
        while (fgets(line, 1 << 20, f)) {
            if (!columns(line, col, 5) || strcmp(col[3], "train")) continue;
            col[4][tsv_unescape(col[4], strlen(col[4]))] = '\0';
            cid = encode(tok, col[4], strlen(col[4]), &m);
            if (n + m > cap) {
                cap = 2 * (n + m);
                ids = (int *)realloc(ids, cap * sizeof(int));
                doc = (int64_t *)realloc(doc, cap * sizeof(int64_t));
            }
            memcpy(ids + n, cid, m * sizeof(int));
            for (size_t j = 0; j < m; j++) doc[n + j] = chapter_id(col[1], col[2]);
            n += m;
            retrlm_free(cid);
        }
        fclose(f);
        free(line);
        fprintf(stderr, "retrofit stream: %lu tokens of train chapters\n", (unsigned long)n);
        // the control: as many more steps on the same stream without retrieval
        {
            retrlm_lm_train_config tc;
            retrlm_lm_train_state st;
            lm_copy(&lm2, &opt, lm_path, 1e-4f);
            memset(&tc, 0, sizeof tc);
            tc.train = ids;
            tc.n_train = n;
            tc.batch = 8;
            tc.seq_len = 256;
            tc.steps = retro_steps;
            tc.progress = progress;
            retrlm_lm_train_state_init(&st, 8);
            t0 = retrlm_time_seconds();
            if (retrlm_lm_train(&lm2, &opt, &tc, &st)) die("control training");
            t_ctl = retrlm_time_seconds() - t0;
            bpb[3] = test_bpb(&lm2, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_NONE, NULL, NULL, 0, 0, &secs[3]);
            bpb[4] = test_bpb(&lm2, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_INCONTEXT, NULL, NULL, 0, 0, &secs[4]);
            have[3] = have[4] = 1;
            retrlm_adamw_free(&opt);
            retrlm_model_free(&lm2);
        }
        // the retrofit: windows of 128 tokens after a 128-token BM25 unit for their first 32
        {
            retrlm_incontext_train_config ic;
            retrlm_lm_train_state st;
            lm_copy(&lm2, &opt, lm_path, 1e-4f);
            memset(&ic, 0, sizeof ic);
            ic.tok = tok;
            ic.ds = ds;
            ic.tokens = ids;
            ic.n_tokens = n;
            ic.token_doc = doc;
            ic.k = 1;
            ic.unit_tokens = 128;
            ic.query_tokens = 32;
            ic.window_tokens = 128;
            ic.batch = 8;
            ic.steps = retro_steps;
            ic.progress = progress;
            retrlm_lm_train_state_init(&st, 8);
            t0 = retrlm_time_seconds();
            if (retrlm_incontext_train(&lm2, &opt, &ic, &st)) die("retrofit");
            t_retro = retrlm_time_seconds() - t0;
            bpb[5] = test_bpb(&lm2, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_NONE, NULL, NULL, 0, 0, &secs[5]);
            bpb[6] = test_bpb(&lm2, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_INCONTEXT, NULL, NULL, 0, 0, &secs[6]);
            have[5] = have[6] = 1;
            if (lsr_steps > 0) {
                bpb[7] = test_bpb(&lm2, tok, ds, test_ids, n_test, test_len, RETRLM_RALM_INCONTEXT, dense, NULL, 0, 0, &secs[7]);
                have[7] = 1;
            }
            retrlm_adamw_free(&opt);
            retrlm_model_free(&lm2);
        }
        free(ids);
        free(doc);
    }
    printf("\nStrategy 2 on KJV test, same windows as above; LM of %d steps frozen for LSR (%d steps on valid.txt "
           "windows, k 8, temperature 0.1, re-embedded every 50 steps: %.0f s); retrofit and control: %d more steps "
           "at lr 1e-4 on the train chapters (%.0f s and %.0f s)\n", steps, lsr_steps, t_lsr, retro_steps, t_retro, t_ctl);
    printf("| %-42s | bits/byte | vs LM  | seconds |\n|---|---:|---:|---:|\n", "system");
    for (i = 0; i < N2; i++)
        if (have[i]) printf("| %-42s | %.4f | %+.1f%% | %.0f |\n", names[i], bpb[i], 100.0 * (bpb[i] / bpb[0] - 1), secs[i]);
    for (i = 0; i < N2; i++)
        if (have[i]) printf("kjv2.%s.bpb=%.4f\n", keys[i], bpb[i]);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 1500;
    const char *out = argc > 2 ? argv[2] : "build/kjv";
    int ctr_steps = argc > 3 ? atoi(argv[3]) : 1000;
    int lsr_steps = argc > 4 ? atoi(argv[4]) : 200, retro_steps = argc > 5 ? atoi(argv[5]) : 300;
    int part2_only = getenv("RETRLM_KJV_PART") && !strcmp(getenv("RETRLM_KJV_PART"), "2");
    const char *root = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    char path[1024], tok_path[1024], lm_path[1024], line[65536];
    size_t train_len, valid_len, test_len, n_train, n_valid, n_test;
    char *train, *valid, *test;
    int *train_ids, *valid_ids, *test_ids, i, n_units = 0;
    retrlm_tokenizer tok;
    retrlm_model model;
    retrlm_datastore ds;
    retrlm_datastore_config dc;
    retrlm_knnlm knn;
    retrlm_encoder enc;
    retrlm_retrieve_params dense;
    double t0, t_ctr = 0;
    FILE *f;
    bench_machine();

    snprintf(path, sizeof path, "mkdir -p '%s'", out);
    if (system(path) != 0) return 1;
    snprintf(path, sizeof path, "%s/kjv/train.txt", root);
    train = slurp(path, &train_len);
    snprintf(path, sizeof path, "%s/kjv/valid.txt", root);
    valid = slurp(path, &valid_len);
    snprintf(path, sizeof path, "%s/kjv/test.txt", root);
    test = slurp(path, &test_len);

    // tokenizer: BPE 8192 on the train split
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.rlm", out);
    if (retrlm_tokenizer_load(&tok, tok_path)) {
        retrlm_tokenizer_train_config tc;
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = 8192;
        t0 = retrlm_time_seconds();
        if (retrlm_tokenizer_train(&tok, &tc, (const char *const *)&train, &train_len, 1, NULL, NULL)) die("tokenizer");
        if (retrlm_tokenizer_save(&tok, tok_path)) die("save tokenizer");
        fprintf(stderr, "tokenizer trained in %.1f s\n", retrlm_time_seconds() - t0);
    }
    train_ids = encode(&tok, train, train_len, &n_train);
    valid_ids = encode(&tok, valid, valid_len, &n_valid);
    test_ids = encode(&tok, test, test_len, &n_test);
    if (getenv("RETRLM_KJV_TEST_TOKENS") && (size_t)atol(getenv("RETRLM_KJV_TEST_TOKENS")) < n_test) {
        // a quick look: the first N test tokens, and the bytes they decode to
        n_test = (size_t)atol(getenv("RETRLM_KJV_TEST_TOKENS"));
        if (retrlm_tokenizer_decode(&tok, test_ids, n_test, NULL, 0, &test_len)) die("decode");
    }

    // LM: 4 layers, dim 256, context 256, trained on train.txt (or loaded from out_dir)
    snprintf(lm_path, sizeof lm_path, "%s/lm-%d.rlm", out, steps);
    if (retrlm_model_load(&model, lm_path, NULL)) {
        retrlm_model_config mc;
        retrlm_adamw opt;
        retrlm_adamw_config oc;
        retrlm_adamw_group groups[2];
        retrlm_lm_train_config lc;
        retrlm_lm_train_state st;
        memset(&mc, 0, sizeof mc);
        mc.vocab_size = tok.n_vocab;
        mc.dim = 256;
        mc.n_layers = 4;
        mc.n_heads = 4;
        mc.max_seq_len = 256;
        mc.max_batch = 8;
        mc.seed = 1;
        if (retrlm_model_init(&model, &mc)) die("model");
        memset(&oc, 0, sizeof oc);
        oc.warmup_steps = 100;
        oc.total_steps = steps;
        i = retrlm_model_param_groups(&model, 1e-3f, 0.1f, groups);
        if (retrlm_adamw_init(&opt, &oc, groups, i)) die("optimizer");
        memset(&lc, 0, sizeof lc);
        lc.train = train_ids;
        lc.n_train = n_train;
        lc.valid = valid_ids;
        lc.n_valid = n_valid;
        lc.valid_bytes = valid_len;
        lc.batch = 8;
        lc.seq_len = 256;
        lc.steps = steps;
        lc.eval_every = steps / 4;
        lc.progress = progress;
        retrlm_lm_train_state_init(&st, 1);
        t0 = retrlm_time_seconds();
        if (retrlm_lm_train(&model, &opt, &lc, &st)) die("training");
        fprintf(stderr, "LM trained: %d steps in %.0f s, valid bpb %.4f\n", steps, retrlm_time_seconds() - t0, st.last_valid_bpb);
        if (retrlm_model_save(&model, NULL, NULL, lm_path)) die("save LM");
        retrlm_adamw_free(&opt);
    }

    // datastore: the train split's passages as units (BM25)
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = 128;
    if (retrlm_datastore_init(&ds, &dc)) die("datastore");
    snprintf(path, sizeof path, "%s/kjv/passages.tsv", root);
    if (!(f = fopen(path, "rb"))) die("passages.tsv");
    if (!fgets(line, sizeof line, f)) die("passages.tsv header");
    while (fgets(line, sizeof line, f)) { // id, book, chapter, verse_start, verse_end, split, text
        char *col[7];
        if (!columns(line, col, 7) || strcmp(col[5], "train")) continue;
        col[6][tsv_unescape(col[6], strlen(col[6]))] = '\0';
        // a unit's document is its chapter: strategy 2 never retrieves a window's own chapter
        if (retrlm_datastore_add(&ds, &tok, chapter_id(col[1], col[2]), col[6], strlen(col[6]),
                                 RETRLM_DATASTORE_CHUNK))
            die("datastore add");
        n_units++;
    }
    fclose(f);
    if (retrlm_datastore_commit(&ds)) die("datastore commit");
    fprintf(stderr, "datastore: %d passages, %d units\n", n_units, ds.n_units);

    // dense retriever: Contriever on the passages' tokens (no labels), then every unit embedded
    snprintf(path, sizeof path, "%s/encoder-%d.rlm", out, ctr_steps);
    if (retrlm_encoder_load(&enc, path)) {
        retrlm_encoder_config ec;
        retrlm_contriever_config cc;
        retrlm_adamw opt;
        retrlm_adamw_config oc;
        retrlm_adamw_group g[6];
        retrlm_retriever_train_state st;
        size_t *off = (size_t *)malloc(sizeof(size_t) * ((size_t)ds.n_units + 1));
        for (i = 0; i <= ds.n_units; i++) off[i] = (size_t)ds.tok_off[i];
        memset(&ec, 0, sizeof ec);
        ec.model.vocab_size = tok.n_vocab;
        ec.model.dim = 128;
        ec.model.n_layers = 2;
        ec.model.n_heads = 4;
        ec.model.seed = 3;
        ec.normalize = 1;
        ec.max_query_tokens = 32;
        ec.max_doc_tokens = 128;
        ec.max_batch = 64;
        if (retrlm_encoder_init(&enc, &ec)) die("encoder");
        memset(&oc, 0, sizeof oc);
        oc.warmup_steps = ctr_steps / 20;
        oc.total_steps = ctr_steps;
        if (retrlm_adamw_init(&opt, &oc, g, retrlm_encoder_param_groups(&enc, 1e-3f, 0.01f, g))) die("optimizer");
        memset(&cc, 0, sizeof cc);
        cc.docs.ids = ds.tokens, cc.docs.off = off, cc.docs.n = (size_t)ds.n_units;
        cc.steps = ctr_steps;
        cc.progress = progress;
        retrlm_retriever_train_state_init(&st, 4);
        t0 = retrlm_time_seconds();
        if (retrlm_contriever_train(&enc, &opt, &cc, &st)) die("contriever");
        t_ctr = retrlm_time_seconds() - t0;
        fprintf(stderr, "Contriever: %d steps in %.0f s, last loss %.3f\n", ctr_steps, t_ctr, st.last_loss);
        if (retrlm_encoder_save(&enc, path)) die("save encoder");
        retrlm_adamw_free(&opt);
        free(off);
    }
    if (retrlm_datastore_embed(&ds, &enc, &tok, NULL, progress, NULL)) die("embed");
    memset(&dense, 0, sizeof dense);
    dense.mode = RETRLM_RETRIEVE_DENSE;

    memset(&knn, 0, sizeof knn);
    if (!part2_only) strategy1(&model, &tok, &ds, &dense, &knn, train_ids, n_train, valid_ids, n_valid, valid_len,
                               test_ids, n_test, test_len, out, steps, ctr_steps, t_ctr);
    if (lsr_steps > 0 || retro_steps > 0)
        strategy2(&model, &tok, &ds, &enc, &dense, lm_path, root, out, valid_ids, n_valid, test_ids, n_test, test_len,
                  steps, lsr_steps, retro_steps);
    retrlm_knnlm_free(&knn);
    retrlm_datastore_free(&ds);
    retrlm_encoder_free(&enc);
    retrlm_model_free(&model);
    retrlm_tokenizer_free(&tok);
    free(train), free(valid), free(test), retrlm_free(train_ids), retrlm_free(valid_ids), retrlm_free(test_ids);
    return 0;
}
