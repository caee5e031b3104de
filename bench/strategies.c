// bench/strategies - the strategies side by side on one corpus, every row the same decoder and,
// where it is trained, the same training tokens. Today's rows: the LM alone; RETRO from scratch
// (strategy 2: a frozen BM25 retriever's neighbours, precomputed, the LM learns to read them);
// RETRO-fitted (the LM alone's decoder frozen, the cross-attention and neighbour encoder trained
// a quarter of its steps). Bits per byte on test, and for debpkg_lm by overlap bucket (each test
// document's share of word 8-grams found in train: 0, (0, 0.5], (0.5, 1]).
//   make bench-strategies                       debpkg_lm, default sizes
//   build/bench/strategies [corpus] [steps] [out_dir] [train_tokens]
// corpus: debpkg_lm (documents = lines) or kjv (documents = chapters: kjv/chapters.tsv, a
// chapter's verses joined by spaces, split by its split column). The
// datastore holds every train document cut into chunk-sized units; the LMs train on the first
// train_tokens tokens of the train stream (default 2,000,000), so that neighbours are computed
// for those chunks only. Each training chunk's neighbours exclude the documents it comes from
// (RETRO's leakage control); test chunks retrieve from train only. Artifacts (tokenizer,
// datastore, neighbours, models) are kept in out_dir (default build/strategies-CORPUS) and
// reused by the next run. Test windows are 256 tokens, non-overlapping, for every row, so the
// rows compare; a bucket is scored as a stream of its own documents.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"

enum { VOCAB = 4096, DIM = 256, LAYERS = 4, HEADS = 4, SEQ = 256, BATCH = 8, CHUNK = 32,
       NBR = 2, NBR_LEN = 64, BUCKETS = 4 };

static const char *bucket_name[BUCKETS] = {"all", "0", "(0,0.5]", "(0.5,1]"};

static void die(const char *what) {
    fprintf(stderr, "strategies: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

static char *slurp(const char *path, size_t *len) {
    char *s = read_all(path, len);
    if (!s) {
        fprintf(stderr, "strategies: cannot read %s\n", path);
        exit(1);
    }
    return s;
}

static int progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    (void)user;
    if (now - last > 15 || done >= total) {
        fprintf(stderr, "  %s %.0f / %.0f\n", stage, done, total);
        last = now;
    }
    return 0;
}

// a corpus split: its documents (lines, or chapters for kjv) as one text, '\n' between them
typedef struct split {
    char   *text;
    size_t  len;
    int     n_docs;
    size_t *doc_off; // (n_docs + 1) byte offsets of each document in text (the '\n' excluded)
} split;

// the rows of chapters.tsv (id book chapter split text) whose split is want, one a line
static char *kjv_chapters(const char *path, const char *want, size_t *len) {
    size_t n, o = 0;
    char *t = slurp(path, &n), *out = (char *)malloc(n + 1), *line = strchr(t, '\n');
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
            memcpy(out + o, col[4], l);
            o += l;
            out[o++] = '\n';
        }
        line = p - 1;
    }
    free(t);
    *len = o;
    return out;
}

static void split_lines(split *s, char *text, size_t len) {
    size_t i, start = 0;
    s->text = text;
    s->len = len;
    s->n_docs = 0;
    s->doc_off = NULL;
    for (i = 0; i < len; i++)
        if (text[i] == '\n') s->n_docs++;
    s->doc_off = (size_t *)malloc(((size_t)s->n_docs + 2) * sizeof(size_t));
    s->n_docs = 0;
    for (i = 0; i < len; i++)
        if (text[i] == '\n') {
            s->doc_off[s->n_docs++] = start;
            start = i + 1;
        }
    s->doc_off[s->n_docs] = start; // where the next would begin: doc d ends at off[d+1] - 1
}

// tokens of a whole split with each token's document (the '\n' belongs to the document it ends)
static int *encode_split(const retrlm_tokenizer *tok, const split *s, int64_t **doc, size_t *n) {
    int *ids = NULL;
    size_t cap = 0, used = 0;
    int d;
    *doc = NULL;
    for (d = 0; d < s->n_docs; d++) {
        const char *t = s->text + s->doc_off[d];
        size_t len = s->doc_off[d + 1] - s->doc_off[d], got;
        int *x;
        size_t i;
        if (retrlm_tokenizer_encode_alloc(tok, t, len, 0, &x, &got)) die("encode");
        if (used + got > cap) {
            cap = (used + got) * 2;
            ids = (int *)realloc(ids, cap * sizeof(int));
            *doc = (int64_t *)realloc(*doc, cap * sizeof(int64_t));
        }
        for (i = 0; i < got; i++) {
            ids[used + i] = x[i];
            (*doc)[used + i] = d;
        }
        used += got;
        free(x);
    }
    *n = used;
    return ids;
}

static void model_config(retrlm_model_config *c, int retro) {
    memset(c, 0, sizeof *c);
    c->vocab_size = VOCAB;
    c->dim = DIM;
    c->n_layers = LAYERS;
    c->n_heads = HEADS;
    c->max_seq_len = SEQ;
    c->max_batch = BATCH;
    c->seed = 1;
    if (retro) {
        c->retro_chunk = CHUNK;
        c->retro_k = NBR;
        c->retro_len = NBR_LEN;
        c->retro_start = 1;
        c->retro_every = 2; // layers 1 and 3
        c->retro_enc_dim = 128;
        c->retro_enc_layers = 2;
        c->retro_enc_heads = 4;
    }
}

static void adamw(retrlm_adamw *o, const retrlm_adamw_group *g, int n, int steps) {
    retrlm_adamw_config oc;
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = steps / 20 + 1;
    oc.total_steps = steps;
    if (retrlm_adamw_init(o, &oc, g, n)) die("adamw");
}

// the neighbours of a stream, loaded from out/name or built and saved there
static void neighbours(retrlm_retro_neighbours *nb, const char *out, const char *name,
                       const retrlm_datastore *ds, const retrlm_tokenizer *tok, const int *ids,
                       size_t n, const int64_t *doc) {
    char path[1024];
    retrlm_retro_neighbours_config nc;
    double t0 = retrlm_time_seconds();
    snprintf(path, sizeof path, "%s/%s", out, name);
    if (!retrlm_retro_neighbours_load(nb, path) && nb->n_chunks == (int64_t)(n / CHUNK) &&
        nb->chunk == CHUNK && nb->k == NBR && nb->len == NBR_LEN)
        return;
    retrlm_retro_neighbours_free(nb);
    memset(&nc, 0, sizeof nc);
    nc.chunk = CHUNK;
    nc.k = NBR;
    nc.len = NBR_LEN;
    nc.progress = progress;
    if (retrlm_retro_neighbours_build(nb, ds, tok, ids, n, doc, &nc)) die("neighbours");
    if (retrlm_retro_neighbours_save(nb, path)) die("save neighbours");
    fprintf(stderr, "  %s: %lld chunks in %.1f s\n", name, (long long)nb->n_chunks,
            retrlm_time_seconds() - t0);
}

// one test stream (a bucket): its tokens, bytes and neighbours
typedef struct stream {
    int *ids;
    size_t n, bytes;
    retrlm_retro_neighbours nb;
} stream;

int main(int argc, char **argv) {
    const char *corpus = argc > 1 ? argv[1] : "debpkg_lm";
    int steps = argc > 2 ? atoi(argv[2]) : 1500;
    char out[512], path[1024], dir[512];
    const char *data = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    size_t train_tokens = argc > 4 ? (size_t)atoll(argv[4]) : 2000000;
    split tr, te;
    retrlm_tokenizer tok;
    retrlm_datastore ds;
    int *train_ids, b, retro_steps;
    int64_t *train_doc, *test_doc;
    size_t n_train, n_test_all;
    stream st[BUCKETS];
    retrlm_retro_neighbours train_nb;
    retrlm_model lm, rm, fm;
    double bpb[3][BUCKETS], secs[3], t0, tok_s[2];
    float probe[2][2];
    int kjv = !strcmp(corpus, "kjv");
    if (!kjv && strcmp(corpus, "debpkg_lm")) {
        fprintf(stderr, "usage: strategies [debpkg_lm|kjv] [steps] [out_dir] [train_tokens]\n");
        return 2;
    }
    snprintf(out, sizeof out, "%s", argc > 3 ? argv[3] : (kjv ? "build/strategies-kjv" : "build/strategies-debpkg_lm"));
    snprintf(path, sizeof path, "mkdir -p %s", out);
    if (system(path)) return 1;
    snprintf(dir, sizeof dir, "%s/%s", data, corpus);
    {
        char cpu[256];
        printf("strategies on %s: %d steps of %d x %d tokens, %s threads; cpu %s; load %.2f\n",
               corpus, steps, BATCH, SEQ,
               getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "all",
               cpu_model(cpu, sizeof cpu), loadavg());
    }
    {
        size_t len;
        char *t;
        snprintf(path, sizeof path, kjv ? "%s/chapters.tsv" : "%s/train.txt", dir);
        t = kjv ? kjv_chapters(path, "train", &len) : slurp(path, &len);
        split_lines(&tr, t, len);
        if (!kjv) snprintf(path, sizeof path, "%s/test.txt", dir);
        t = kjv ? kjv_chapters(path, "test", &len) : slurp(path, &len);
        split_lines(&te, t, len);
    }
    // the tokenizer: byte-level BPE trained on the first 4 MB of train
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
    train_ids = encode_split(&tok, &tr, &train_doc, &n_train);
    fprintf(stderr, "  train: %d documents, %lu tokens\n", tr.n_docs, (unsigned long)n_train);
    // the datastore: every train document in CHUNK-token units
    snprintf(path, sizeof path, "%s/datastore.rlm", out);
    if (retrlm_datastore_load(&ds, path)) {
        retrlm_datastore_config dc;
        int d;
        memset(&dc, 0, sizeof dc);
        dc.chunk_tokens = CHUNK;
        if (retrlm_datastore_init(&ds, &dc)) die("datastore");
        for (d = 0; d < tr.n_docs; d++)
            if (retrlm_datastore_add(&ds, &tok, d, tr.text + tr.doc_off[d],
                                     tr.doc_off[d + 1] - tr.doc_off[d], RETRLM_DATASTORE_CHUNK))
                die("datastore add");
        if (retrlm_datastore_commit(&ds) || retrlm_datastore_save(&ds, path)) die("datastore");
    }
    fprintf(stderr, "  datastore: %d units\n", ds.n_units);
    if (n_train > train_tokens) n_train = train_tokens;
    neighbours(&train_nb, out, "nb-train.rlm", &ds, &tok, train_ids, n_train, train_doc);
    // test streams: all, then the overlap buckets (debpkg_lm)
    {
        int *all = encode_split(&tok, &te, &test_doc, &n_test_all), d;
        double *overlap = (double *)calloc((size_t)te.n_docs, sizeof(double));
        if (!kjv) {
            size_t len;
            char *t, *line;
            snprintf(path, sizeof path, "%s/overlap_test.tsv", dir);
            t = slurp(path, &len);
            line = strchr(t, '\n');
            while (line && line[1]) {
                int ln = atoi(line + 1);
                char *c = line + 1;
                int k;
                for (k = 0; k < 3 && c; k++) c = strchr(c + 1, '\t');
                if (c && ln >= 0 && ln < te.n_docs) overlap[ln] = atof(c + 1);
                line = strchr(line + 1, '\n');
            }
            free(t);
        }
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++) {
            size_t i, k = 0;
            st[b].ids = (int *)malloc(n_test_all * sizeof(int));
            st[b].bytes = 0;
            for (i = 0; i < n_test_all; i++) {
                double o = overlap[test_doc[i]];
                int in = b == 0 || (b == 1 && o == 0.0) || (b == 2 && o > 0.0 && o <= 0.5) ||
                         (b == 3 && o > 0.5);
                if (in) st[b].ids[k++] = all[i];
            }
            st[b].n = k;
            for (d = 0; d < te.n_docs; d++) {
                double o = overlap[d];
                int in = b == 0 || (b == 1 && o == 0.0) || (b == 2 && o > 0.0 && o <= 0.5) ||
                         (b == 3 && o > 0.5);
                if (in) st[b].bytes += te.doc_off[d + 1] - te.doc_off[d];
            }
            snprintf(path, sizeof path, "nb-test%d.rlm", b);
            neighbours(&st[b].nb, out, path, &ds, &tok, st[b].ids, st[b].n, NULL);
        }
        free(all);
        free(overlap);
    }
    // the LM alone
    {
        retrlm_model_config mc;
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_lm_train_state s;
        retrlm_lm_train_config tc;
        model_config(&mc, 0);
        snprintf(path, sizeof path, "%s/lm-%d-%lu.rlm", out, steps, (unsigned long)n_train);
        t0 = retrlm_time_seconds();
        if (retrlm_model_load(&lm, path, NULL)) {
            if (retrlm_model_init(&lm, &mc)) die("lm");
            adamw(&o, g, retrlm_model_param_groups(&lm, 2e-3f, 0.1f, g), steps);
            retrlm_lm_train_state_init(&s, 1);
            memset(&tc, 0, sizeof tc);
            tc.train = train_ids;
            tc.n_train = n_train;
            tc.steps = steps;
            tc.progress = progress;
            if (retrlm_lm_train(&lm, &o, &tc, &s)) die("lm train");
            secs[0] = retrlm_time_seconds() - t0;
            tok_s[0] = (double)steps * BATCH * SEQ / secs[0];
            if (retrlm_model_save(&lm, NULL, NULL, path)) die("save lm");
            retrlm_adamw_free(&o);
        } else {
            secs[0] = 0;
            tok_s[0] = 0;
        }
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++)
            if (retrlm_lm_bits_per_byte(&lm, st[b].ids, st[b].n, st[b].bytes, SEQ, &bpb[0][b])) die("lm bpb");
    }
    // RETRO from scratch, the same tokens
    {
        retrlm_model_config mc;
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_retro_train_state s;
        retrlm_retro_train_config tc;
        model_config(&mc, 1);
        snprintf(path, sizeof path, "%s/retro-%d-%lu.rlm", out, steps, (unsigned long)n_train);
        t0 = retrlm_time_seconds();
        retrlm_retro_train_state_init(&s, 1);
        memset(&tc, 0, sizeof tc);
        tc.train = train_ids;
        tc.n_train = n_train;
        tc.neighbours = &train_nb;
        tc.steps = steps; // no valid stream: the probe reads the first train windows
        tc.progress = progress;
        if (retrlm_model_load(&rm, path, NULL)) {
            if (retrlm_model_init(&rm, &mc)) die("retro");
            adamw(&o, g, retrlm_model_param_groups(&rm, 2e-3f, 0.1f, g), steps);
            if (retrlm_retro_train(&rm, &o, &tc, &s)) die("retro train");
            secs[1] = retrlm_time_seconds() - t0;
            tok_s[1] = (double)steps * BATCH * SEQ / secs[1];
            if (retrlm_model_save(&rm, NULL, NULL, path)) die("save retro");
            retrlm_adamw_free(&o);
            probe[0][0] = s.probe_with;
            probe[0][1] = s.probe_without;
        } else {
            secs[1] = 0;
            tok_s[1] = 0;
            probe[0][0] = probe[0][1] = 0;
        }
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++)
            if (retrlm_retro_bits_per_byte(&rm, st[b].ids, st[b].n, st[b].bytes, &st[b].nb, SEQ,
                                           &bpb[1][b]))
                die("retro bpb");
    }
    // RETRO-fitting: the LM alone's decoder, frozen; a quarter of its steps for the rest
    retro_steps = steps / 4 > 0 ? steps / 4 : 1;
    {
        retrlm_model_config mc;
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_retro_train_state s;
        retrlm_retro_train_config tc;
        int t;
        model_config(&mc, 1);
        snprintf(path, sizeof path, "%s/retrofit-%d-%lu.rlm", out, steps, (unsigned long)n_train);
        t0 = retrlm_time_seconds();
        if (retrlm_model_load(&fm, path, NULL)) {
            if (retrlm_model_init(&fm, &mc)) die("retrofit");
            for (t = 0; t < RETRLM_T_COUNT; t++)
                if (lm.tensor_size[t]) memcpy(fm.param[t], lm.param[t], lm.tensor_size[t] * sizeof(float));
            adamw(&o, g, retrlm_model_retro_param_groups(&fm, 2e-3f, 0.1f, g), retro_steps);
            retrlm_retro_train_state_init(&s, 2);
            memset(&tc, 0, sizeof tc);
            tc.train = train_ids;
            tc.n_train = n_train;
            tc.neighbours = &train_nb;
            tc.steps = retro_steps;
            tc.progress = progress;
            if (retrlm_retro_train(&fm, &o, &tc, &s)) die("retrofit train");
            secs[2] = retrlm_time_seconds() - t0;
            if (retrlm_model_save(&fm, NULL, NULL, path)) die("save retrofit");
            retrlm_adamw_free(&o);
            probe[1][0] = s.probe_with;
            probe[1][1] = s.probe_without;
        } else {
            secs[2] = 0;
            probe[1][0] = probe[1][1] = 0;
        }
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++)
            if (retrlm_retro_bits_per_byte(&fm, st[b].ids, st[b].n, st[b].bytes, &st[b].nb, SEQ,
                                           &bpb[2][b]))
                die("retrofit bpb");
    }
    // the table
    {
        static const char *row[3] = {"LM alone", "RETRO from scratch (BM25 neighbours)",
                                     "RETRO-fitted (LM alone frozen)"};
        static const char *key[3] = {"lm", "retro", "retrofit"};
        long long ttok = (long long)steps * BATCH * SEQ;
        int r, nb_b = kjv ? 1 : BUCKETS;
        printf("\n%s test, bits per byte (windows of %d tokens; lower is better)\n", corpus, SEQ);
        printf("| row | training tokens | wall s |");
        for (b = 0; b < nb_b; b++) printf(" %s |", bucket_name[b]);
        printf("\n|---|---|---|");
        for (b = 0; b < nb_b; b++) printf("---|");
        printf("\n");
        for (r = 0; r < 3; r++) {
            printf("| %s | %lld%s | %.0f |", row[r], r == 2 ? ttok + (long long)retro_steps * BATCH * SEQ : ttok,
                   r == 2 ? " (LM's + RETRO-fit's)" : "", secs[r]);
            for (b = 0; b < nb_b; b++) printf(" %.4f |", bpb[r][b]);
            printf("\n");
        }
        printf("\ntest documents: %d; train stream %lu tokens of %d documents; datastore %d units "
               "of %d tokens; neighbours k %d of %d tokens\n", te.n_docs, (unsigned long)n_train,
               tr.n_docs, ds.n_units, CHUNK, NBR, NBR_LEN);
        printf("probe loss with / without neighbours: RETRO %.3f / %.3f, RETRO-fitted %.3f / %.3f "
               "nats\n", (double)probe[0][0], (double)probe[0][1], (double)probe[1][0],
               (double)probe[1][1]);
        if (tok_s[0] > 0 && tok_s[1] > 0)
            printf("training speed: LM %.0f tokens/s, RETRO %.0f tokens/s (%.2fx)\n", tok_s[0],
                   tok_s[1], tok_s[1] / tok_s[0]);
        printf("\n");
        for (r = 0; r < 3; r++)
            for (b = 0; b < nb_b; b++)
                printf("%s.%s.bpb_%s=%.4f\n", corpus, key[r], b ? (b == 1 ? "o0" : b == 2 ? "o50" : "o100") : "all",
                       bpb[r][b]);
        if (tok_s[0] > 0 && tok_s[1] > 0)
            printf("%s.lm.train_tok_s=%.0f\n%s.retro.train_tok_s=%.0f\n", corpus, tok_s[0], corpus,
                   tok_s[1]);
    }
    retrlm_model_free(&fm);
    retrlm_model_free(&rm);
    retrlm_model_free(&lm);
    for (b = 0; b < (kjv ? 1 : BUCKETS); b++) {
        retrlm_retro_neighbours_free(&st[b].nb);
        free(st[b].ids);
    }
    retrlm_retro_neighbours_free(&train_nb);
    retrlm_datastore_free(&ds);
    retrlm_tokenizer_free(&tok);
    free(train_ids);
    free(train_doc);
    free(test_doc);
    free(tr.text);
    free(tr.doc_off);
    free(te.text);
    free(te.doc_off);
    return 0;
}
