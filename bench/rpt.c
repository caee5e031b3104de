// bench/rpt - RPT (strategy 4, Rubin & Berant 2023) on the King James Bible's books: a RETRO
// model that retrieves earlier chunks of the book it reads with its own chunk embeddings, trained
// jointly with its retriever against a reference LM's judgement, beside the LM alone with the
// same decoder and the same training tokens.
//   make bench-rpt
//   build/bench/rpt [steps] [out_dir]          (default 1500, build/strategies-kjv)
// Documents are books: the chapters of one book and split (kjv/chapters.tsv), in order, each
// chapter a line as bench/strategies reads them, so the train stream, the tokenizer (BPE 4096)
// and the LM alone (4 layers, width 256, 256 tokens, 8 windows a step) are the ones
// bench/strategies kjv keeps in out_dir (made here when missing). The LM alone is the reference
// LM: it scores each training chunk's candidates (RETRLM_RPT_CANDS, default 4, preselected by
// bigram overlap) once, kept as rpt-targets-*.rlm (retrlm_rpt_targets_save). The RPT model:
// the same decoder with cross-attention in layers 2 and 3 (chunks of 32, 2 neighbours of 64
// tokens, smeared keys) and a retriever of width 64 over layer 1's feed-forward input; a step
// reads one span of 8
// consecutive windows of a book (the same 2,048 tokens as the LM alone's step), the earlier
// windows' chunks being the index of the later ones; scheduled sampling from the reference's
// picks to the retriever's over the first half (RETRLM_RPT_GOLD_STEPS). RETRLM_RPT_FIT=N instead
// RPT-fits N steps: the LM alone's decoder copied and frozen (as RETRO-fitting), the
// cross-attention, the neighbour encoder and the retriever trained at peak lr 1e-3. Test: the test chapters
// of each book, spans of 4 windows (every earlier chunk of the span a candidate), scored with
// the retriever's picks, with BM25's (the candidate chunk and its continuation as documents,
// the chunk as query), with the reference's (an oracle) and with none. Bits per byte over the
// spans' targets; the picks' quality by the reference's own gain (nats on the next chunk).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include "../tests/files.h"
#include <math.h>
#include <string.h>

enum { VOCAB = 4096, DIM = 256, LAYERS = 4, HEADS = 4, SEQ = 256, BATCH = 8, CHUNK = 32,
       TEST_WINDOWS = 4 };

static void die(const char *what) {
    fprintf(stderr, "rpt: %s failed: %s\n", what, retrlm_last_error());
    exit(1);
}

static int progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    (void)user;
    if (done == total || now - last > 10.0) {
        fprintf(stderr, "  %s %.0f / %.0f\n", stage, done, total);
        last = now;
    }
    return 0;
}

// the chapters of split want, book by book: text (one chapter a line), and each book's first
// byte in book_off (n_books + 1)
typedef struct books {
    char   *text;
    size_t  len;
    int     n_books;
    size_t *book_off;
} books;

static void read_books(const char *path, const char *want, books *b) {
    size_t n, o = 0, cap = 16;
    char *t = read_all(path, &n), *line, prev[64] = "";
    if (!t) { fprintf(stderr, "rpt: cannot read %s\n", path); exit(1); }
    b->text = (char *)malloc(n + 1);
    b->book_off = (size_t *)malloc(cap * sizeof(size_t));
    b->n_books = 0;
    line = strchr(t, '\n');
    while (line && line[1]) {
        char *col[5], *p = line + 1;
        int c;
        for (c = 0; c < 5; c++) {
            col[c] = p;
            p = strchr(p, c < 4 ? '\t' : '\n');
            if (!p) break;
            *p++ = '\0';
        }
        if (c < 5) break;
        if (!strcmp(col[3], want)) {
            size_t l = strlen(col[4]);
            if (strcmp(col[1], prev)) { // a new book
                if ((size_t)b->n_books + 2 > cap) b->book_off = (size_t *)realloc(b->book_off, (cap *= 2) * sizeof(size_t));
                b->book_off[b->n_books++] = o;
                snprintf(prev, sizeof prev, "%s", col[1]);
            }
            memcpy(b->text + o, col[4], l);
            o += l;
            b->text[o++] = '\n';
        }
        line = p - 1;
    }
    free(t);
    b->len = o;
    b->book_off[b->n_books] = o;
}

// the books' tokens, each chapter encoded alone (as bench/strategies does); doc gets each book's
// first token
static int *encode_books(const retrlm_tokenizer *tok, const books *b, int64_t **doc, size_t *n) {
    int *ids = NULL, bk;
    size_t used = 0, cap = 0;
    *doc = (int64_t *)malloc((size_t)b->n_books * sizeof(int64_t));
    for (bk = 0; bk < b->n_books; bk++) {
        size_t o = b->book_off[bk];
        (*doc)[bk] = (int64_t)used;
        while (o < b->book_off[bk + 1]) {
            const char *nl = (const char *)memchr(b->text + o, '\n', b->book_off[bk + 1] - o);
            size_t len = (size_t)(nl - (b->text + o)) + 1, got;
            int *x;
            if (retrlm_tokenizer_encode_alloc(tok, b->text + o, len, 0, &x, &got)) die("encode");
            if (used + got > cap) ids = (int *)realloc(ids, (cap = 2 * (used + got)) * sizeof(int));
            memcpy(ids + used, x, got * sizeof(int));
            used += got;
            free(x);
            o += len;
        }
    }
    *n = used;
    return ids;
}

static void model_config(retrlm_model_config *c, int rpt) {
    memset(c, 0, sizeof *c);
    c->vocab_size = VOCAB; c->dim = DIM; c->n_layers = LAYERS; c->n_heads = HEADS;
    c->max_seq_len = SEQ; c->max_batch = BATCH; c->seed = 1;
    if (rpt) {
        c->retro_chunk = CHUNK; c->retro_k = 2; c->retro_len = 2 * CHUNK;
        c->retro_start = 2; c->retro_every = 1; // layers 2 and 3
        c->retro_enc_dim = 128; c->retro_enc_layers = 2; c->retro_enc_heads = 4;
        c->retro_smear = 1;
        c->rpt_dim = 64; // rpt_layer 0: layer 1's feed-forward input
    }
}

static void adamw(retrlm_adamw *o, retrlm_model *m, int steps) {
    retrlm_adamw_config oc;
    retrlm_adamw_group g[2];
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = steps / 20 + 1;
    oc.total_steps = steps;
    if (retrlm_adamw_init(o, &oc, g, retrlm_model_param_groups(m, 2e-3f, 0.1f, g))) die("adamw");
}

static void targets(retrlm_rpt_targets *t, retrlm_model *ref, const int *ids, size_t n,
                    const int64_t *doc, int n_docs, int windows, int cands, const char *path) {
    retrlm_rpt_targets_config tc;
    double t0 = retrlm_time_seconds();
    if (!retrlm_rpt_targets_load(t, path)) return;
    memset(&tc, 0, sizeof tc);
    tc.chunk = CHUNK;
    tc.windows = windows;
    tc.seq_len = SEQ;
    tc.cands = cands;
    tc.progress = progress;
    if (retrlm_rpt_targets_build(t, ref, ids, n, doc, n_docs, &tc)) die("targets");
    fprintf(stderr, "  targets: %lld spans in %.0f s\n", (long long)t->n_spans, retrlm_time_seconds() - t0);
    if (retrlm_rpt_targets_save(t, path)) die("save targets");
}

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 1500;
    const char *out = argc > 2 ? argv[2] : "build/strategies-kjv";
    const char *data = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    const int cands = getenv("RETRLM_RPT_CANDS") ? atoi(getenv("RETRLM_RPT_CANDS")) : 4;
    const int fit = getenv("RETRLM_RPT_FIT") ? atoi(getenv("RETRLM_RPT_FIT")) : 0;
    const int train_steps = fit > 0 ? fit : steps;
    const int gold_steps = getenv("RETRLM_RPT_GOLD_STEPS") ? atoi(getenv("RETRLM_RPT_GOLD_STEPS")) : train_steps / 2;
    char path[1024], lm_path[1024], rpt_path[1024];
    books tr, te;
    retrlm_tokenizer tok;
    retrlm_model lm, rm;
    retrlm_model_config mc;
    retrlm_rpt_targets ttr, tte;
    int *train_ids, *test_ids;
    int64_t *train_doc, *test_doc;
    size_t n_train, n_test;
    double secs_rpt = 0.0;
    uint64_t bytes;
    retrlm_rpt_eval ev[6];
    float *bm;
    int i;
    bench_machine();
    snprintf(path, sizeof path, "mkdir -p %s", out);
    if (system(path)) return 1;
    snprintf(path, sizeof path, "%s/kjv/chapters.tsv", data);
    read_books(path, "train", &tr);
    read_books(path, "test", &te);
    snprintf(path, sizeof path, "%s/tok.rlm", out);
    if (retrlm_tokenizer_load(&tok, path)) {
        retrlm_tokenizer_train_config tc;
        const char *one[1];
        size_t lens[1];
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = VOCAB;
        one[0] = tr.text;
        lens[0] = tr.len < 4000000 ? tr.len : 4000000;
        if (retrlm_tokenizer_train(&tok, &tc, one, lens, 1, NULL, NULL)) die("tokenizer");
        if (retrlm_tokenizer_save(&tok, path)) die("save tokenizer");
    }
    train_ids = encode_books(&tok, &tr, &train_doc, &n_train);
    test_ids = encode_books(&tok, &te, &test_doc, &n_test);
    printf("rpt on kjv books: %d train books, %lu tokens; %d test books, %lu tokens; %d steps\n",
           tr.n_books, (unsigned long)n_train, te.n_books, (unsigned long)n_test, steps);
    // the LM alone: the reference and the baseline
    snprintf(lm_path, sizeof lm_path, "%s/lm-%d-%lu.rlm", out, steps, (unsigned long)n_train);
    {
        retrlm_model_config over;
        memset(&over, 0, sizeof over);
        over.max_batch = 32;
        if (retrlm_model_load(&lm, lm_path, &over)) {
            retrlm_adamw o;
            retrlm_lm_train_state s;
            retrlm_lm_train_config tc;
            model_config(&mc, 0);
            if (retrlm_model_init(&lm, &mc)) die("lm");
            adamw(&o, &lm, steps);
            retrlm_lm_train_state_init(&s, 1);
            memset(&tc, 0, sizeof tc);
            tc.train = train_ids, tc.n_train = n_train, tc.steps = steps, tc.progress = progress;
            if (retrlm_lm_train(&lm, &o, &tc, &s) || retrlm_model_save(&lm, NULL, NULL, lm_path)) die("lm train");
            retrlm_adamw_free(&o);
            retrlm_model_free(&lm);
            if (retrlm_model_load(&lm, lm_path, &over)) die("lm load");
        }
    }
    snprintf(path, sizeof path, "%s/rpt-targets-train-c%d.rlm", out, cands);
    targets(&ttr, &lm, train_ids, n_train, train_doc, tr.n_books, BATCH, cands, path);
    snprintf(path, sizeof path, "%s/rpt-targets-test.rlm", out);
    targets(&tte, &lm, test_ids, n_test, test_doc, te.n_books, TEST_WINDOWS,
            TEST_WINDOWS * SEQ / CHUNK, path);
    printf("train spans %lld (%d windows, %d candidates a chunk), test spans %lld (%d windows, "
           "every earlier chunk a candidate)\n", (long long)ttr.n_spans, BATCH, ttr.cands,
           (long long)tte.n_spans, TEST_WINDOWS);
    // the RPT model
    if (fit > 0) snprintf(rpt_path, sizeof rpt_path, "%s/rptfit-%d-%d-c%d-g%d.rlm", out, steps, fit, cands, gold_steps);
    else snprintf(rpt_path, sizeof rpt_path, "%s/rpt-%d-c%d-g%d.rlm", out, steps, cands, gold_steps);
    if (retrlm_model_load(&rm, rpt_path, NULL)) {
        retrlm_adamw o;
        retrlm_lm_train_state s;
        retrlm_rpt_train_config rc;
        double t0 = retrlm_time_seconds();
        model_config(&mc, 1);
        if (retrlm_model_init(&rm, &mc)) die("rpt model");
        if (fit > 0) { // RPT-fitting: the LM alone's decoder, frozen; the rest learns
            retrlm_adamw_config oc;
            retrlm_adamw_group g[2];
            int t;
            for (t = 0; t < RETRLM_T_COUNT; t++)
                if (lm.tensor_size[t]) memcpy(rm.param[t], lm.param[t], lm.tensor_size[t] * sizeof(float));
            if (retrlm_model_retro_tie_embedding(&rm, 1)) die("tie");
            memset(&oc, 0, sizeof oc);
            oc.warmup_steps = fit / 20 + 1;
            oc.total_steps = fit;
            if (retrlm_adamw_init(&o, &oc, g, retrlm_model_retro_param_groups(&rm, 1e-3f, 0.1f, g))) die("adamw");
        } else {
            adamw(&o, &rm, steps);
        }
        retrlm_lm_train_state_init(&s, 1);
        memset(&rc, 0, sizeof rc);
        rc.train = train_ids, rc.n_train = n_train, rc.targets = &ttr, rc.steps = train_steps;
        rc.gold_share = 1.0f, rc.gold_steps = gold_steps, rc.progress = progress;
        rc.losses = (float *)calloc((size_t)train_steps, sizeof(float));
        rc.rank_losses = (float *)calloc((size_t)train_steps, sizeof(float));
        if (retrlm_rpt_train(&rm, &o, &rc, &s)) die("rpt train");
        secs_rpt = retrlm_time_seconds() - t0;
        for (i = 0; i < train_steps; i += train_steps / 10 > 0 ? train_steps / 10 : 1) {
            double a = 0, b = 0;
            int j, n = 0;
            for (j = i; j < train_steps && j < i + 50; j++, n++) a += rc.losses[j], b += rc.rank_losses[j];
            printf("  rpt step %5d: lm loss %.3f, retriever loss %.4f (mean of %d)\n", i, a / n, b / n, n);
        }
        printf("rpt %s in %.0f s\n", fit > 0 ? "fitted" : "trained", secs_rpt);
        if (retrlm_model_save(&rm, NULL, NULL, rpt_path)) die("save rpt");
        free(rc.losses), free(rc.rank_losses);
        retrlm_adamw_free(&o);
    }
    // test
    if (retrlm_rpt_targets_bytes(&tok, test_ids, n_test, &tte, &bytes)) die("bytes");
    bm = (float *)malloc((size_t)tte.n_spans * (TEST_WINDOWS * SEQ / CHUNK) * tte.cands * sizeof(float));
    if (retrlm_rpt_bm25_scores(&tok, test_ids, n_test, &tte, NULL, bm)) die("bm25 scores");
    {
        retrlm_model_config over;
        memset(&over, 0, sizeof over);
        over.max_batch = BATCH;
        retrlm_model_free(&lm);
        if (retrlm_model_load(&lm, lm_path, &over)) die("lm load");
    }
    if (retrlm_rpt_evaluate(&lm, test_ids, n_test, &tte, RETRLM_RPT_NONE, NULL, &ev[0]) ||
        retrlm_rpt_evaluate(&rm, test_ids, n_test, &tte, RETRLM_RPT_NONE, NULL, &ev[1]) ||
        retrlm_rpt_evaluate(&rm, test_ids, n_test, &tte, RETRLM_RPT_SCORES, bm, &ev[2]) ||
        retrlm_rpt_evaluate(&rm, test_ids, n_test, &tte, RETRLM_RPT_OWN, NULL, &ev[3]) ||
        retrlm_rpt_evaluate(&rm, test_ids, n_test, &tte, RETRLM_RPT_GOLD, NULL, &ev[4]))
        die("evaluate");
    {
        static const char *name[5] = {"LM alone", "RPT, no neighbours", "RPT, BM25's picks",
                                      "RPT, its own retriever", "RPT, the reference's picks (oracle)"};
        static const char *key[5] = {"lm", "rpt_none", "rpt_bm25", "rpt_own", "rpt_gold"};
        const double base = ev[0].nats / log(2.0) / (double)bytes;
        printf("\n| system | bits/byte | vs LM | first pick's gain (nats) | first pick is the best |\n|---|---:|---:|---:|---:|\n");
        for (i = 0; i < 5; i++) {
            double b = ev[i].nats / log(2.0) / (double)bytes;
            printf("| %s | %.4f | %+.1f%% |", name[i], b, 100.0 * (b / base - 1.0));
            if (i >= 2) printf(" %.3f | %.3f |\n", ev[i].first_gold, ev[i].first_is_best);
            else printf(" | |\n");
        }
        printf("\nbest candidate's gain %.3f nats over %lld chunks; test %.0f bytes in spans\n",
               ev[3].best_gold, (long long)ev[3].queries, (double)bytes);
        for (i = 0; i < 5; i++) printf("rpt.%s.bpb=%.4f\n", key[i], ev[i].nats / log(2.0) / (double)bytes);
        for (i = 2; i < 5; i++) {
            printf("rpt.%s.first_gain=%.4f\n", key[i], ev[i].first_gold);
            printf("rpt.%s.first_is_best=%.4f\n", key[i], ev[i].first_is_best);
        }
        if (secs_rpt > 0) printf("rpt.train_secs=%.0f\n", secs_rpt);
    }
    free(bm);
    retrlm_rpt_targets_free(&ttr);
    retrlm_rpt_targets_free(&tte);
    retrlm_model_free(&lm);
    retrlm_model_free(&rm);
    retrlm_tokenizer_free(&tok);
    free(train_ids), free(test_ids), free(train_doc), free(test_doc);
    free(tr.text), free(tr.book_off), free(te.text), free(te.book_off);
    return 0;
}
