// bench/strategies - the strategies side by side on one corpus, every row the same decoder and,
// where it is trained, the same training tokens. First table: the LM alone; RETRO from scratch
// (strategy 2: a frozen BM25 retriever's neighbours, precomputed, the LM learns to read them);
// RETRO-fitted (the LM alone's decoder frozen, the cross-attention and neighbour encoder trained
// a quarter of its steps); RETRLM_RETRO_COPY=p trains both with the copy curriculum
// (copy_share p, "-copy<p>" in their file names), RETRLM_RETROFIT_STEPS=N RETRO-fits N steps
// (N in the file name), RETRLM_RETRO_SMEAR=1 gives both smeared cross-attention keys ("-smear"),
// RETRLM_RETRO_TIE=1 starts the neighbour encoder's embedding from the decoder's
// (retrlm_model_retro_tie_embedding, "-tie"), RETRLM_RETRO_COPY_STEPS=K ends the copy curriculum
// at step K ("-untilK"; RETRLM_RETROFIT_COPY_STEPS sets RETRO-fit's apart). Bits per byte on
// test, and for debpkg_lm by overlap bucket (each test document's share of word 8-grams found in
// train: 0, (0, 0.5], (0.5, 1]).
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
//
// A second table reads test with a memory (windows of 256 tokens moving by 128, so every token
// after the first window sees at least 128 tokens before it): the LM alone; the LM alone with a
// kNN-LM datastore of its own keys over its training tokens (strategy 1); TRIME (strategy 4, the
// same decoder trained with the joint softmax over vocabulary + in-batch memory) read with its
// local memory; TRIME_long (batches of 8 consecutive segments, the earlier ones in memory) read
// with its local memory and the long memory of the 7 x 256 tokens before each window; TRIME_ext
// (batches of BM25-similar segments, local memory dropped with probability 0.9) read with the
// vocabulary only, with local memory, with local memory plus an external datastore of its own
// keys, and with all three memories. Mixing weight and kNN temperature are chosen on valid.
// A third table reads test with one retrieved unit in context (windows of 128 tokens moving by
// 64, each after the unit a retriever finds for its last 32 tokens, with the unit's
// continuation): the LM alone; strategy 1, the LM alone with a Contriever bi-encoder trained
// apart, or with BM25 (joint_bm25); strategy 2, the LM retrofitted to read the frozen
// Contriever's units, or BM25's; strategy 3, both
// trained together from there (REALM and Atlas PDist with a background refresh, PDist with
// re-ranking, PDist query-side), RETRLM_JOINT_STEPS steps each (default 300) of
// RETRLM_JOINT_BATCH examples (4; 12 scores as many tokens as a retrofit step) at the reader's
// peak learning rate RETRLM_JOINT_LR (5e-4), from the LM alone or from the model in the file
// RETRLM_JOINT_FROM (e.g. a BM25 retrofit, a reader that reads); RETRLM_JOINT_ENC=bm25 puts a
// dense retriever distilled from BM25 in the Contriever's place (strategies 1-3's dense rows);
// RETRLM_RETROFIT_OWN=1 lets the BM25
// retrofit retrieve its window's own document (a copy curriculum); RETRLM_JOINT_COPY=N starts
// them from the LM alone trained N more steps on its stream with every span (16-128 tokens)
// twice (a copy warm-up, kept as copywarm-N.rlm; RETRLM_COPY_SHARE of the spans twice instead of
// all, at peak lr RETRLM_COPY_LR, the copy probe every 500 steps). joint_curve adds
// the cost of a fresh index: REALM for RETRLM_JOINT_CURVE_STEPS (100) steps with no refresh and
// with one every 10, 25 and 50 steps (RETRLM_JOINT_CURVE_EVERY=T1,T2,...), blocking or in the
// background (take it on a quiet machine).
// Each model's training wall time is kept beside it (MODEL.rlm.secs) for the runs that reuse it.
// RETRLM_TRIME_SIM=dot gives the TRIME rows TRIME's own similarity (k_i . k_j / sqrt(D); default
// L2), RETRLM_TRIME_WARMUP=W trains them W steps with plain cross-entropy first (the LM alone's
// first W steps, from its checkpoint: TRIME's --ce-warmup-epoch); both in their file names.
// RETRLM_STRATEGIES_ROWS=lm,retro,retrofit,knnlm,trime,trime_long,trime_ext,joint_s2,joint_bm25,
// joint_realm,joint_pdist,joint_pdist_rerank,joint_pdist_qside,joint_rr,joint_realm_rr,joint_pdist_rr,
// joint_rrp,joint_realm_rrp,joint_pdist_rrp,joint_replug,joint_lsr,joint_curve,copywarm,speed picks
// rows (joint_replug: the start reader with REPLUG over BM25's and the dense retriever's 4 best;
// joint_lsr: REPLUG with that retriever after RETRLM_LSR_STEPS (300) steps of REPLUG LSR against
// the start reader, peak lr RETRLM_LSR_LR (1e-4), kept as lsr-STEPS*.enc; joint_rr: the start
// reader and its retrofit with BM25's 16 best re-ranked by the start retriever; joint_realm_rr,
// joint_pdist_rr: the joint rows that train that re-ranker, rerank_bm25; the _rrp rows the same
// with BM25's score as a prior, bm25_weight RETRLM_JOINT_BM25_WEIGHT, default 0.05, in their
// file names: joint_rrp the start reader, the others trained)
// (default: all; the LM alone always runs, but RETRLM_STRATEGIES_LM=0 with RETRLM_STRATEGIES_ROWS=retro
// leaves it out, its figures NaN, so that a RETRO variant trains while another process trains the
// LM alone, or once its figures are known; copywarm alone trains RETRLM_JOINT_COPY's warm-up and
// stops there; speed: a training step and generation, the LM alone against RETRO, timed in
// this run); RETRLM_STRATEGIES_TRAIN_ONLY=1 trains the models and stops. The copy probe
// (copy_probe) says whether the LM alone, and the third table's start reader, copy from their
// context at all: test spans written twice, the nats a token of each copy. Last, a summary: every
// row of the run's tables beside the LM alone read in the same windows, with its change.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"
#include "debpkg_lm.h"

enum { VOCAB = 4096, DIM = 256, LAYERS = 4, HEADS = 4, SEQ = 256, BATCH = 8, CHUNK = 32,
       NBR = 2, NBR_LEN = 64 };

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

// retro_train's progress: the probe's loss with and without neighbours after each evaluation
static int retro_progress(void *user, const char *stage, double done, double total) {
    const retrlm_retro_train_state *s = (const retrlm_retro_train_state *)user;
    if (!strcmp(stage, "valid"))
        fprintf(stderr, "  step %.0f: loss %.3f, probe %.3f with neighbours, %.3f without\n", done,
                (double)s->lm.last_loss, (double)s->probe_with, (double)s->probe_without);
    return progress(NULL, stage, done, total);
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

// the integer in environment variable name, or def when it is not set
static int env_int(const char *name, int def) { return getenv(name) ? atoi(getenv(name)) : def; }
static double env_double(const char *name, double def) { return getenv(name) ? atof(getenv(name)) : def; }

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
        c->retro_smear = env_int("RETRLM_RETRO_SMEAR", 0) != 0;
    }
}

static void adamw(retrlm_adamw *o, const retrlm_adamw_group *g, int n, int steps) {
    retrlm_adamw_config oc;
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = steps / 20 + 1;
    oc.total_steps = steps;
    if (retrlm_adamw_init(o, &oc, g, n)) die("adamw");
}

// the copy probe: PROBE windows of SEQ test tokens (positions from a fixed seed), each a span of
// CSPAN tokens, the same span again, then what followed it; *first and *second get the mean nats
// a token over the first copy's targets (from its 8th token on) and over the second copy's (the
// same positions CSPAN later). A reader that copies from its context drives the second towards 0;
// one that does not pays for the repeat as for the first reading.
enum { PROBE = 16, CSPAN = 96 };
static void copy_probe(retrlm_model *m, const int *ids, size_t n, double *first, double *second) {
    int *in = (int *)malloc((size_t)3 * PROBE * SEQ * sizeof(int)), *t1 = in + PROBE * SEQ,
        *t2 = t1 + PROBE * SEQ, b, i, c1 = 0, c2 = 0, k;
    retrlm_rng rng;
    if (!in || n < SEQ + 1) die("copy probe: no memory or too few test tokens");
    retrlm_rng_seed(&rng, 99);
    for (b = 0; b < PROBE; b++) {
        const int *src = ids + retrlm_rng_below(&rng, (uint64_t)(n - SEQ));
        int *x = in + b * SEQ;
        for (i = 0; i < CSPAN; i++) x[i] = x[CSPAN + i] = src[i];
        for (i = 2 * CSPAN; i < SEQ; i++) x[i] = src[i - CSPAN];
        for (i = 0; i < SEQ; i++) {
            const int y = i + 1 < SEQ ? x[i + 1] : -1;
            t1[b * SEQ + i] = i >= 8 && i + 1 < CSPAN ? y : -1;
            t2[b * SEQ + i] = i >= CSPAN + 8 && i + 1 < 2 * CSPAN ? y : -1;
        }
    }
    *first = *second = 0.0;
    for (b = 0; b < PROBE; b += m->config.max_batch) {
        const int B = PROBE - b < m->config.max_batch ? PROBE - b : m->config.max_batch;
        if (retrlm_model_forward(m, in + b * SEQ, B, SEQ, NULL, 0)) die("copy probe");
        *first += retrlm_model_nll(m, t1 + b * SEQ, &k), c1 += k;
        *second += retrlm_model_nll(m, t2 + b * SEQ, &k), c2 += k;
    }
    *first /= c1, *second /= c2;
    free(in);
}

// steps of next-token training of m on the stream ids (AdamW at peak lr, weight decay 0.1,
// warmup and cosine as adamw()); what names the run in its messages. te (n_te test tokens) not
// NULL: the copy probe on te is printed every 500 steps, so a long run shows when m starts to copy.
static void lm_steps(retrlm_model *m, const int *ids, size_t n, int steps, float lr, const char *what,
                     const int *te, size_t n_te, int ckpt_step, const char *ckpt) {
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_lm_train_state s;
    retrlm_lm_train_config tc;
    int done = 0;
    adamw(&o, g, retrlm_model_param_groups(m, lr, 0.1f, g), steps);
    retrlm_lm_train_state_init(&s, 1);
    memset(&tc, 0, sizeof tc);
    tc.train = ids;
    tc.n_train = n;
    tc.progress = progress;
    while (done < steps) {
        double first, second;
        done = te && steps - done > 500 ? done + 500 : steps;
        if (ckpt && done > ckpt_step && s.step < ckpt_step) done = ckpt_step;
        tc.steps = done;
        if (retrlm_lm_train(m, &o, &tc, &s)) die(what);
        if (ckpt && done == ckpt_step && retrlm_model_save(m, &o, &s, ckpt)) die("lm checkpoint");
        if (!te) continue;
        copy_probe(m, te, n_te, &first, &second);
        printf("%s, step %d: loss %.3f, copy probe %.3f / %.3f nats a token (first / second copy)\n", what,
               done, (double)s.last_loss, first, second);
        fflush(stdout);
    }
    retrlm_adamw_free(&o);
}

// ---- speed: a training step and generation, the LM alone against RETRO, in the same run.
// A step: the median interval between the progress calls of SPEED_STEPS steps of fresh models of
// the rows' shapes (the RETRO model's decoder is the LM alone's; it adds cross-attention in 2
// layers and the neighbour encoder over k x r neighbour tokens a chunk). Generation: greedy, from
// each of GEN_RUNS test prompts of GEN_PROMPT tokens to the context's end, the LM alone with its
// KV cache and RETRO retrieving by BM25 with every chunk it completes (retrlm_retro_generate);
// the median tokens a second. The models given (trained) decode; their weights change no cost.
enum { SPEED_STEPS = 12, GEN_PROMPT = 32, GEN_RUNS = 5 };
typedef struct ticks {
    double t[SPEED_STEPS + 1];
    int    n;
} ticks;
static int tick(void *user, const char *stage, double done, double total) {
    ticks *k = (ticks *)user;
    (void)done, (void)total;
    if ((!strcmp(stage, "train") || !strcmp(stage, "retro")) && k->n <= SPEED_STEPS)
        k->t[k->n++] = retrlm_time_seconds();
    return 0;
}
// the median seconds between consecutive ticks
static double tick_median(const ticks *k) {
    double d[SPEED_STEPS];
    int i;
    for (i = 1; i < k->n; i++) d[i - 1] = k->t[i] - k->t[i - 1];
    return k->n > 1 ? bench_median(d, k->n - 1) : 0.0;
}
// out: [0] LM step s, [1] RETRO step s, [2] LM generation tokens/s, [3] RETRO's
static void speed(const retrlm_tokenizer *tok, const retrlm_datastore *ds, const int *train, size_t n_train,
                  const retrlm_retro_neighbours *train_nb, retrlm_model *lm, retrlm_model *retro,
                  const int *test, size_t n_test, double out[4]) {
    retrlm_model fresh;
    retrlm_model_config mc;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    ticks k;
    double gen[2][GEN_RUNS];
    int kind, run, *gout = (int *)malloc(SEQ * sizeof(int));
    for (kind = 0; kind < 2; kind++) {
        model_config(&mc, kind);
        if (retrlm_model_init(&fresh, &mc)) die("speed: model");
        adamw(&o, g, retrlm_model_param_groups(&fresh, 2e-3f, 0.1f, g), SPEED_STEPS);
        k.n = 0;
        k.t[k.n++] = retrlm_time_seconds();
        if (!kind) {
            retrlm_lm_train_state s;
            retrlm_lm_train_config tc;
            retrlm_lm_train_state_init(&s, 1);
            memset(&tc, 0, sizeof tc);
            tc.train = train, tc.n_train = n_train, tc.steps = SPEED_STEPS;
            tc.progress = tick, tc.progress_user = &k;
            if (retrlm_lm_train(&fresh, &o, &tc, &s)) die("speed: lm train");
        } else {
            retrlm_retro_train_state s;
            retrlm_retro_train_config tc;
            retrlm_retro_train_state_init(&s, 1);
            memset(&tc, 0, sizeof tc);
            tc.train = train, tc.n_train = n_train, tc.neighbours = train_nb, tc.steps = SPEED_STEPS;
            tc.eval_every = 0; // the probe runs once, after the last step: its interval is not the median
            tc.progress = tick, tc.progress_user = &k;
            if (retrlm_retro_train(&fresh, &o, &tc, &s)) die("speed: retro train");
        }
        out[kind] = tick_median(&k);
        retrlm_adamw_free(&o);
        retrlm_model_free(&fresh);
    }
    for (run = 0; run < GEN_RUNS; run++) {
        const int *prompt = test + (size_t)run * (n_test - GEN_PROMPT) / GEN_RUNS;
        int n_out = 0;
        double t0 = retrlm_time_seconds();
        if (retrlm_model_generate(lm, prompt, GEN_PROMPT, SEQ - GEN_PROMPT, NULL, NULL, gout, &n_out))
            die("speed: generate");
        gen[0][run] = n_out / (retrlm_time_seconds() - t0);
        gen[1][run] = 0.0;
        if (retro) {
            retrlm_retro_generate_config gc;
            memset(&gc, 0, sizeof gc);
            gc.tok = tok, gc.ds = ds; // neighbours: the model's shape, BM25
            t0 = retrlm_time_seconds();
            if (retrlm_retro_generate(retro, &gc, prompt, GEN_PROMPT, SEQ - GEN_PROMPT, gout, &n_out))
                die("speed: retro generate");
            gen[1][run] = n_out / (retrlm_time_seconds() - t0);
        }
    }
    out[2] = bench_median(gen[0], GEN_RUNS);
    out[3] = bench_median(gen[1], GEN_RUNS);
    free(gout);
}

// how much of each chunk of ids its first neighbour in nb holds (retrlm_retro_overlap): the mean,
// the share of chunks at each threshold, and the share with none, on stderr as what (a file)
static void overlap_stats(const retrlm_retro_neighbours *nb, const int *ids, const char *what) {
    static const float cut[5] = {0.1f, 0.2f, 0.3f, 0.5f, 0.8f};
    double sum = 0, n = nb->n_chunks > 0 ? (double)nb->n_chunks : 1.0;
    int64_t c, above[5] = {0}, none = 0;
    int i;
    for (c = 0; c < nb->n_chunks; c++) {
        const int *y = retrlm_retro_neighbours_chunk(nb, c);
        float o = retrlm_retro_overlap(ids + c * CHUNK, CHUNK, y, NBR_LEN);
        sum += o;
        none += y[0] < 0;
        for (i = 0; i < 5; i++) above[i] += o >= cut[i];
    }
    fprintf(stderr, "  %s: first neighbour's bigram overlap mean %.3f; share >= 0.1 %.3f, 0.2 %.3f, "
            "0.3 %.3f, 0.5 %.3f, 0.8 %.3f; none %.3f\n", what, sum / n, (double)above[0] / n,
            (double)above[1] / n, (double)above[2] / n, (double)above[3] / n, (double)above[4] / n,
            (double)none / n);
}

// the neighbours of a stream, loaded from out/name or built and saved there; min_overlap as
// retrlm_retro_neighbours_config's (0: every candidate; else the file name carries it)
static void neighbours(retrlm_retro_neighbours *nb, const char *out, const char *name,
                       const retrlm_datastore *ds, const retrlm_tokenizer *tok, const int *ids,
                       size_t n, const int64_t *doc, float min_overlap) {
    char path[1024];
    retrlm_retro_neighbours_config nc;
    double t0 = retrlm_time_seconds();
    if (min_overlap > 0.0f) snprintf(path, sizeof path, "%s/%.*s-ov%g.rlm", out,
                                     (int)(strlen(name) - 4), name, (double)min_overlap);
    else snprintf(path, sizeof path, "%s/%s", out, name);
    if (retrlm_retro_neighbours_load(nb, path) || nb->n_chunks != (int64_t)(n / CHUNK) ||
        nb->chunk != CHUNK || nb->k != NBR || nb->len != NBR_LEN) {
        retrlm_retro_neighbours_free(nb);
        memset(&nc, 0, sizeof nc);
        nc.chunk = CHUNK;
        nc.k = NBR;
        nc.len = NBR_LEN;
        nc.min_overlap = min_overlap;
        nc.progress = progress;
        if (retrlm_retro_neighbours_build(nb, ds, tok, ids, n, doc, &nc)) die("neighbours");
        if (retrlm_retro_neighbours_save(nb, path)) die("save neighbours");
        fprintf(stderr, "  %s: %lld chunks in %.1f s\n", path, (long long)nb->n_chunks,
                retrlm_time_seconds() - t0);
    }
    overlap_stats(nb, ids, path);
}

// whether row name is wanted: RETRLM_STRATEGIES_ROWS is a comma list (default: every row)
static int want(const char *name) {
    const char *rows = getenv("RETRLM_STRATEGIES_ROWS"), *p;
    size_t l = strlen(name);
    if (!rows || !*rows || !strcmp(rows, "all")) return 1;
    for (p = rows; (p = strstr(p, name)) != NULL; p += l)
        if ((p == rows || p[-1] == ',') && (p[l] == ',' || p[l] == '\0')) return 1;
    return 0;
}

// The summary: every strategy's row of the tables above beside the LM alone read in the same
// windows, so rows read in different windows still compare by their change. Rows are added as
// the tables compute them and printed last.
enum { SUM_ROWS = 32 };
typedef struct sum_row {
    char strategy, name[160], windows[64], trained[96];
    double ref[BUCKETS], bpb[BUCKETS]; // the LM alone in the same windows, the row
} sum_row;
static sum_row sum_rows[SUM_ROWS];
static int n_sum_rows;

static void sum_add(char strategy, const char *name, const char *windows, const char *trained,
                    const double *ref, const double *bpb) {
    sum_row *r;
    if (n_sum_rows == SUM_ROWS) return;
    r = &sum_rows[n_sum_rows++];
    r->strategy = strategy;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->windows, sizeof r->windows, "%s", windows);
    snprintf(r->trained, sizeof r->trained, "%s", trained);
    memcpy(r->ref, ref, sizeof r->ref);
    memcpy(r->bpb, bpb, sizeof r->bpb);
}

// a model's training wall time, kept beside it (path.secs) so a run that reuses the model
// still reports it; 0 when unknown
static void save_secs(const char *path, double secs) {
    char p[1100];
    FILE *f;
    snprintf(p, sizeof p, "%s.secs", path);
    if ((f = fopen(p, "w"))) fprintf(f, "%.1f\n", secs), fclose(f);
}

static double load_secs(const char *path) {
    char p[1100];
    double secs = 0.0;
    FILE *f;
    snprintf(p, sizeof p, "%s.secs", path);
    if ((f = fopen(p, "r"))) {
        if (fscanf(f, "%lf", &secs) != 1) secs = 0.0;
        fclose(f);
    }
    return secs;
}

// TRIME's options from the environment: RETRLM_TRIME_SIM=dot (TRIME's own similarity,
// k_i . k_j / sqrt(D)) or l2 (default: the kNN-LM's distance, so its keys index as kNN-LM keys
// do), RETRLM_TRIME_WARMUP=W (the first W steps plain cross-entropy: the LM alone's first W steps,
// whose checkpoint the LM alone's training leaves beside it)
static int trime_warmup, trime_sim;
static char trime_trained[64] = "from scratch, the LM's steps"; // how the TRIME rows trained, for the summary

// the LM alone's checkpoint at step w, beside its file lm
static const char *lm_ckpt(const char *lm, int w, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.step%d.ckpt", lm, w);
    return buf;
}

// the file of a TRIME model: out/KIND-STEPS-N[-dot][-warmW].rlm, prefix before KIND
static const char *trime_path(char *buf, size_t cap, const char *out, const char *prefix, const char *kind, int steps,
                              size_t n) {
    char warm[32] = "";
    if (trime_warmup > 0) snprintf(warm, sizeof warm, "-warm%d", trime_warmup);
    snprintf(buf, cap, "%s/%s%s-%d-%lu%s%s.rlm", out, prefix, kind, steps, (unsigned long)n,
             trime_sim == RETRLM_TRIME_DOT ? "-dot" : "", warm);
    return buf;
}

// a TRIME model (strategy 4) on the LM alone's tokens and seed, loaded from path or trained
// and saved there; with a warm-up it starts from the LM alone's checkpoint lm_ckpt (made here,
// by the LM alone's first steps, when missing)
static double trime_model(retrlm_model *m, const char *path, int batching, const int *ids,
                          size_t n, const int64_t *batches, int64_t n_batches, int steps, const char *ckpt) {
    retrlm_model_config mc;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_lm_train_state s;
    retrlm_trime_train_config tc;
    double t0 = retrlm_time_seconds();
    int resumed;
    if (!retrlm_model_load(m, path, NULL)) return load_secs(path);
    model_config(&mc, 0);
    resumed = trime_warmup > 0 && !retrlm_model_load(m, ckpt, NULL);
    if (!resumed && retrlm_model_init(m, &mc)) die("trime");
    adamw(&o, g, retrlm_model_param_groups(m, 2e-3f, 0.1f, g), steps);
    retrlm_lm_train_state_init(&s, 1);
    if (resumed && retrlm_model_load_state(&o, &s, ckpt)) die("trime: the lm checkpoint's state");
    if (trime_warmup > 0 && !resumed) { // the LM alone's first steps, as lm_steps runs them
        retrlm_lm_train_config lc;
        memset(&lc, 0, sizeof lc);
        lc.train = ids;
        lc.n_train = n;
        lc.progress = progress;
        lc.steps = trime_warmup;
        if (retrlm_lm_train(m, &o, &lc, &s) || retrlm_model_save(m, &o, &s, ckpt)) die("trime: the lm warm-up");
    }
    if (resumed) fprintf(stderr, "  %s: from %s (step %lld)\n", path, ckpt, (long long)s.step);
    memset(&tc, 0, sizeof tc);
    tc.train = ids;
    tc.n_train = n;
    tc.trime.batching = batching;
    tc.trime.sim = trime_sim;
    tc.batches = batches;
    tc.n_batches = n_batches;
    tc.cross_sent_ratio = 0.9f; // TRIME_ext's --cross-sent-ratio
    tc.warmup_steps = trime_warmup;
    tc.steps = steps;
    tc.progress = progress;
    if (retrlm_trime_train(m, &o, &tc, &s)) die("trime train");
    if (retrlm_model_save(m, NULL, NULL, path)) die("save trime");
    retrlm_adamw_free(&o);
    save_secs(path, retrlm_time_seconds() - t0);
    return retrlm_time_seconds() - t0;
}

// kNN-LM keys of m over the LM's training tokens (one key a position, windows of SEQ that
// overlap by half), IVF 1024 lists searched 32 at a time, loaded from path or built and saved
static void knn_keys(retrlm_knnlm *kn, retrlm_model *m, const char *path, const int *ids, size_t n) {
    retrlm_index_config ic;
    double t0 = retrlm_time_seconds();
    if (!retrlm_knnlm_load(kn, path, VOCAB)) {
        kn->index.nprobe = 32;
        return;
    }
    memset(&ic, 0, sizeof ic);
    ic.nlist = 1024;
    ic.nprobe = 32;
    ic.progress = progress;
    if (retrlm_knnlm_build(kn, m, ids, n, SEQ, &ic)) die("knnlm keys");
    if (retrlm_knnlm_save(kn, path)) die("save knnlm keys");
    fprintf(stderr, "  %s: %lu keys in %.0f s\n", path, (unsigned long)kn->n, retrlm_time_seconds() - t0);
}

// bits per byte of each of n streams read with a memory: windows of SEQ tokens that move by
// STRIDE (every token sees at least SEQ - STRIDE tokens before it), TRIME's local memory if
// tp (and the long memory of the cache tokens before each window), a kNN-LM if kn (k 128)
enum { STRIDE = 128 };
static void read_with_memory(retrlm_model *m, const retrlm_trime_params *tp, int cache, const retrlm_knnlm *kn,
                             float lambda, float temp, int *const *ids, const size_t *n,
                             const size_t *bytes, int n_streams, double *bpb) {
    retrlm_ralm_config rc;
    int i;
    memset(&rc, 0, sizeof rc);
    rc.mode = RETRLM_RALM_NONE;
    rc.stride = STRIDE;
    rc.context_tokens = SEQ - STRIDE;
    rc.trime = tp;
    rc.trime_cache = cache;
    rc.knnlm = kn;
    rc.knn_k = 128;
    rc.lambda = lambda;
    rc.knn_temperature = temp;
    for (i = 0; i < n_streams; i++)
        if (retrlm_ralm_bits_per_byte(m, NULL, NULL, ids[i], n[i], bytes[i], &rc, &bpb[i], NULL))
            die("read with memory");
}

// the kNN-LM's lambda and temperature with the lowest bits per byte on the valid stream
static void tune_knn(retrlm_model *m, const retrlm_trime_params *tp, const retrlm_knnlm *kn,
                     int *valid, size_t n_valid, size_t valid_bytes, float *lambda, float *temp,
                     const char *who, const char *keys_path) {
    static const float lambdas[] = {0.1f, 0.25f, 0.5f}, temps[] = {2.0f, 32.0f};
    double best = 1e30, x;
    char p[1100];
    FILE *f;
    int a, b;
    snprintf(p, sizeof p, "%s.tuned", keys_path); // the choice, kept beside the keys for the next run
    if ((f = fopen(p, "r"))) {
        a = fscanf(f, "%f %f", lambda, temp) == 2;
        fclose(f);
        if (a) {
            fprintf(stderr, "  %s: lambda %.2f temperature %.0f, chosen on valid before (%s)\n", who,
                    (double)*lambda, (double)*temp, p);
            return;
        }
    }
    for (a = 0; a < 3; a++)
        for (b = 0; b < 2; b++) {
            read_with_memory(m, tp, 0, kn, lambdas[a], temps[b], &valid, &n_valid, &valid_bytes, 1, &x);
            fprintf(stderr, "  %s valid: lambda %.2f temperature %.0f: %.4f\n", who, (double)lambdas[a],
                    (double)temps[b], x);
            if (x < best) best = x, *lambda = lambdas[a], *temp = temps[b];
        }
    if ((f = fopen(p, "w"))) fprintf(f, "%g %g\n", (double)*lambda, (double)*temp), fclose(f);
}

// one test stream (a bucket): its tokens, bytes and neighbours
typedef struct stream {
    int *ids;
    size_t n, bytes;
    retrlm_retro_neighbours nb;
} stream;

// ---- RETRO read with weak neighbours left out (min_overlap) --------------------------------
// The thresholds tried on valid: a retrieved unit is a neighbour only if it holds this share of
// its chunk's token bigrams (retrlm_retro_overlap), else the model reads the next or none.
static const float ov_grid[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
#define OV_GRID ((int)(sizeof ov_grid / sizeof ov_grid[0]))

typedef struct rctx {
    const char *out;
    const retrlm_datastore *ds;
    const retrlm_tokenizer *tok;
    const stream *va, *st; // valid (its ids, n, bytes), the test buckets
    int nst;
} rctx;

// m's test bits per byte by bucket (bpb) with neighbours holding tau of their chunk's bigrams
// (0: st's own, every unit retrieved); tau < 0: the one of ov_grid that reads valid best, which is
// returned. Neighbours are built once and kept in out, one file per threshold and stream.
static float retro_read(const rctx *x, retrlm_model *m, const char *what, float tau, double *bpb) {
    retrlm_retro_neighbours nb;
    char name[64];
    int g, b;
    double v, best = 1e30;
    float chosen = tau;
    for (g = 0; tau < 0.0f && g < OV_GRID; g++) {
        neighbours(&nb, x->out, "nb-valid.rlm", x->ds, x->tok, x->va->ids, x->va->n, NULL, ov_grid[g]);
        if (retrlm_retro_bits_per_byte(m, x->va->ids, x->va->n, x->va->bytes, &nb, SEQ, &v)) die("retro valid");
        fprintf(stderr, "  %s: min_overlap %g, valid %.4f bits per byte\n", what, (double)ov_grid[g], v);
        retrlm_retro_neighbours_free(&nb);
        if (v < best) best = v, chosen = ov_grid[g];
    }
    tau = chosen;
    for (b = 0; b < x->nst; b++) {
        const retrlm_retro_neighbours *use = &x->st[b].nb;
        if (tau > 0.0f) {
            snprintf(name, sizeof name, "nb-test%d.rlm", b);
            neighbours(&nb, x->out, name, x->ds, x->tok, x->st[b].ids, x->st[b].n, NULL, tau);
            use = &nb;
        }
        if (retrlm_retro_bits_per_byte(m, x->st[b].ids, x->st[b].n, x->st[b].bytes, use, SEQ, &bpb[b]))
            die("retro bpb");
        if (tau > 0.0f) retrlm_retro_neighbours_free(&nb);
    }
    return tau;
}

// ---- strategy 3 beside 1 and 2: one retrieved unit read in context -------------------------
// Every row reads test the same way: windows of 128 tokens of context moving by 64, each after
// the unit that a dense retriever finds for the window's last 32 tokens, read with its
// continuation (64 tokens in all). The retriever starts as a Contriever bi-encoder trained on
// train's documents (strategy 1: LM and retriever trained apart); strategy 2 trains the LM alone
// further with that retriever frozen (in-context retrofitting); strategy 3 trains both further,
// the same steps, with REALM or Atlas's PDist, its index refreshed in the background, re-ranked,
// or never stale (query-side).
enum { J_DIM = 64, J_CTX = 128, J_STRIDE = 64, J_Q = 32, J_UNIT = 64, J_RR = 16, J_ROWS = 20, J_REPLUG = 4 };

static void j_encoder_config(retrlm_encoder_config *ec) {
    memset(ec, 0, sizeof *ec);
    ec->model.vocab_size = VOCAB;
    ec->model.dim = J_DIM;
    ec->model.n_layers = 2;
    ec->model.n_heads = 2;
    ec->model.seed = 5;
    ec->separate = 1; // query-side training freezes the document side
    ec->normalize = 1;
    ec->max_query_tokens = J_Q;
    ec->max_doc_tokens = CHUNK;
    ec->max_batch = 32;
}

// bits per byte of each stream, each window after its unit (ds) or alone, or with REPLUG's
// ensemble of its replug best units (each read in the window's place, their mixture weighted by
// the retriever's softmax at the mode's default temperature) when replug > 0; kept in the file
// cache (NULL: not kept) and read from it when it holds them (a model saved again removes its cache)
static void j_read_k(retrlm_model *m, const retrlm_tokenizer *tok, const retrlm_datastore *ds,
                     retrlm_retrieve_mode mode, float bm25_weight, int replug, const stream *st, int nst,
                     double *bpb, const char *cache) {
    retrlm_ralm_config rc;
    retrlm_retrieve_params rp;
    FILE *f;
    int b;
    if (cache && (f = fopen(cache, "r"))) {
        for (b = 0; b < nst && fscanf(f, "%lf", &bpb[b]) == 1; b++) {}
        fclose(f);
        if (b == nst) return;
    }
    memset(&rc, 0, sizeof rc);
    memset(&rp, 0, sizeof rp);
    rp.mode = mode;
    rp.depth = J_RR; // RERANK's BM25 candidates
    rp.bm25_weight = bm25_weight;
    rc.mode = !ds ? RETRLM_RALM_NONE : replug > 0 ? RETRLM_RALM_REPLUG : RETRLM_RALM_INCONTEXT;
    rc.k = replug > 0 ? replug : 1;
    rc.stride = J_STRIDE;
    rc.query_tokens = J_Q;
    rc.unit_tokens = J_UNIT;
    rc.continuation = 1;
    rc.context_tokens = J_CTX;
    rc.retrieve = &rp;
    for (b = 0; b < nst; b++)
        if (retrlm_ralm_bits_per_byte(m, tok, ds, st[b].ids, st[b].n, st[b].bytes, &rc, &bpb[b], NULL))
            die("read with a unit");
    if (cache && (f = fopen(cache, "w"))) {
        for (b = 0; b < nst; b++) fprintf(f, "%.17g\n", bpb[b]);
        fclose(f);
    }
}

static void j_read(retrlm_model *m, const retrlm_tokenizer *tok, const retrlm_datastore *ds,
                   retrlm_retrieve_mode mode, float bm25_weight, const stream *st, int nst, double *bpb,
                   const char *cache) {
    j_read_k(m, tok, ds, mode, bm25_weight, 0, st, nst, bpb, cache);
}

// a model's path with a suffix (the file of its bits per byte)
static const char *j_cache(char *buf, size_t size, const char *path, const char *suffix) {
    snprintf(buf, size, "%s%s", path, suffix);
    return buf;
}

// removes what the third table keeps of the model at path when it is trained again: its bits per
// byte as a row (with its unit, with none) and as a start reader (no unit, the Contriever's, BM25's)
static void j_forget(const char *path) {
    static const char *cached[] = {".bpb", ".bpb-none", ".j-none.bpb", ".j-contriever.bpb", ".j-bm25.bpb",
                                   ".j-distilled.bpb"};
    char c[1100];
    int k;
    for (k = 0; k < 6; k++) remove(j_cache(c, sizeof c, path, cached[k]));
}

typedef struct j_ctx {
    const char *out;
    retrlm_tokenizer *tok;
    retrlm_datastore *ds;
    const retrlm_model *lm;     // the LM alone: where every reader starts
    const char *lm_path;        // its file
    const char *from;           // NULL, or the file name of the model that replaces the LM alone
    int own;                    // 1: the BM25 retrofit may retrieve its window's own document (a copy
                                // curriculum: the unit's continuation is the window's text)
    const int *ids;             // the LM alone's training tokens
    size_t n;
    const int64_t *doc;
    int steps;                  // joint and retrofit steps
    int batch;                  // a joint step's examples (RETRLM_JOINT_BATCH, 4; 12 scores as
                                // many tokens of y as a retrofit step scores after its query)
    float lr;                   // the reader's peak learning rate in them (RETRLM_JOINT_LR, 5e-4)
    float bm25_weight;          // the _rrp rows' prior (RETRLM_JOINT_BM25_WEIGHT, 0.05)
    const char *data;           // ../shared/data: debpkg's dev queries for MRR@10 (NULL: none)
    int distilled;              // 1: the dense retriever every row starts from is distilled from
                                // BM25 (RETRLM_JOINT_ENC=bm25), not trained with Contriever
    int seed;                   // the retrofit and joint rows' window sampling (RETRLM_JOINT_SEED, 1)
    int lsr_steps;              // REPLUG LSR's steps (RETRLM_LSR_STEPS, 300)
    float lsr_lr;               // and its peak learning rate (RETRLM_LSR_LR, 1e-4)
} j_ctx;

// a copy of the LM alone (loaded again from its file) into m
static void j_reader(const j_ctx *x, retrlm_model *m) {
    retrlm_model_config mc;
    int t;
    model_config(&mc, 0);
    if (retrlm_model_init(m, &mc)) die("reader");
    for (t = 0; t < RETRLM_T_COUNT; t++)
        if (x->lm->tensor_size[t]) memcpy(m->param[t], x->lm->param[t], x->lm->tensor_size[t] * sizeof(float));
}

// MRR@10 of encoder e on debpkg's dev queries (synopses) against its 59,993 package descriptions,
// each cut to the encoder's first CHUNK tokens (debpkg_lm's documents, where the encoders train,
// are those descriptions); -1 when the data is missing or data is NULL (kjv: an encoder trained on
// the Bible has no business with package queries)
static double j_mrr(retrlm_encoder *e, const retrlm_tokenizer *tok, const char *data) {
    tsv_file docs, qs, qr;
    char path[1024];
    const char **texts;
    float *demb, *qemb;
    int64_t *ids, *qids, *dids;
    int *nr, i;
    retrlm_index ix;
    retrlm_index_config ic;
    retrlm_qrel *qrels;
    retrlm_retrieval_metrics mt;
    if (!data) return -1.0;
    snprintf(path, sizeof path, "%s/debpkg/docs.tsv", data);
    if (!tsv_read(&docs, path, 0)) return -1.0;
    snprintf(path, sizeof path, "%s/debpkg/queries_dev.tsv", data);
    if (!tsv_read(&qs, path, 0)) return -1.0;
    snprintf(path, sizeof path, "%s/debpkg/qrels_dev.tsv", data);
    if (!tsv_read(&qr, path, 0)) return -1.0;
    texts = (const char **)malloc(sizeof(char *) * (size_t)(docs.n_rows + qs.n_rows));
    demb = (float *)malloc(sizeof(float) * (size_t)docs.n_rows * (size_t)e->dim);
    qemb = (float *)malloc(sizeof(float) * (size_t)qs.n_rows * (size_t)e->dim);
    ids = (int64_t *)malloc(sizeof(int64_t) * (size_t)qs.n_rows * 10);
    qids = (int64_t *)malloc(sizeof(int64_t) * (size_t)qs.n_rows);
    nr = (int *)malloc(sizeof(int) * (size_t)qs.n_rows);
    dids = (int64_t *)malloc(sizeof(int64_t) * (size_t)docs.n_rows);
    qrels = (retrlm_qrel *)malloc(sizeof(retrlm_qrel) * (size_t)qr.n_rows);
    for (i = 0; i < docs.n_rows; i++) texts[i] = tsv_get(&docs, i, 3);
    if (retrlm_encoder_encode_texts(e, tok, RETRLM_DOC, texts, NULL, (size_t)docs.n_rows, demb, NULL, NULL)) die("mrr docs");
    for (i = 0; i < qs.n_rows; i++) texts[i] = tsv_get(&qs, i, 1), qids[i] = atoll(tsv_get(&qs, i, 0));
    if (retrlm_encoder_encode_texts(e, tok, RETRLM_QUERY, texts, NULL, (size_t)qs.n_rows, qemb, NULL, NULL)) die("mrr queries");
    memset(&ic, 0, sizeof ic);
    ic.dim = e->dim;
    ic.metric = RETRLM_METRIC_IP;
    for (i = 0; i < docs.n_rows; i++) dids[i] = atoll(tsv_get(&docs, i, 0));
    if (retrlm_index_init(&ix, &ic) || retrlm_index_add(&ix, demb, (size_t)docs.n_rows, e->dim, dids) ||
        retrlm_index_search(&ix, qemb, qs.n_rows, e->dim, 10, NULL, ids, NULL))
        die("mrr search");
    for (i = 0; i < qs.n_rows; i++) nr[i] = 10;
    for (i = 0; i < qr.n_rows; i++) {
        qrels[i].qid = atoll(tsv_get(&qr, i, 0));
        qrels[i].docid = atoll(tsv_get(&qr, i, 1));
        qrels[i].grade = atoi(tsv_get(&qr, i, 2));
    }
    if (retrlm_eval_retrieval(qs.n_rows, qids, ids, nr, 10, qrels, (size_t)qr.n_rows, 1, &mt)) die("mrr");
    retrlm_index_free(&ix);
    free(texts), free(demb), free(qemb), free(ids), free(qids), free(nr), free(qrels), free(dids);
    tsv_free(&docs), tsv_free(&qs), tsv_free(&qr);
    return mt.mrr10;
}

// ds->dense: the units embedded with e, loaded from path when saved there before, else embedded
// and saved (path NULL: embedded, not kept)
static void j_embed(retrlm_datastore *ds, retrlm_encoder *e, const retrlm_tokenizer *tok, const char *path) {
    if (path && !retrlm_datastore_load_dense(ds, e, tok, path)) return;
    if (retrlm_datastore_embed(ds, e, tok, NULL, progress, NULL)) die("embed");
    if (path && retrlm_index_save(&ds->dense, path)) die("save the dense index");
}

// A dense retriever distilled from BM25 (RETRLM_JOINT_ENC=bm25), the start a REALM or Atlas run
// gets from a retriever pre-trained for its task: DPR on J_DISTILL_PAIRS pairs from the training
// stream, a query being the J_Q tokens before a random position (what the third table's windows
// retrieve with) and its positive the unit BM25 ranks first for that text among the units of
// other documents than the one the position is in; in-batch negatives, temperature 0.05,
// J_DISTILL_STEPS steps of 32 pairs at lr 1e-3. Loaded into e from path when kept there, else
// trained and kept; returns 1 when it was trained now.
enum { J_DISTILL_PAIRS = 40000, J_DISTILL_STEPS = 3000 };

static int j_distill(const j_ctx *x, retrlm_encoder *e, const char *path) {
    retrlm_encoder_config ec;
    retrlm_adamw o;
    retrlm_adamw_group g[6];
    retrlm_dpr_config dc;
    retrlm_retriever_train_state rs;
    retrlm_rng rng;
    const int n_units = x->ds->n_units;
    int *pq, *pd, *slot, *qtok, *dtok, np = 0, u, found, nt;
    size_t *qoff, *doff, nd = 0, len;
    const int *ut;
    char text[4096];
    if (!retrlm_encoder_load(e, path)) return 0;
    pq = (int *)malloc(J_DISTILL_PAIRS * sizeof(int));
    pd = (int *)malloc(J_DISTILL_PAIRS * sizeof(int));
    qoff = (size_t *)malloc((J_DISTILL_PAIRS + 1) * sizeof(size_t));
    doff = (size_t *)malloc((J_DISTILL_PAIRS + 1) * sizeof(size_t));
    qtok = (int *)malloc((size_t)J_DISTILL_PAIRS * J_Q * sizeof(int));
    dtok = (int *)malloc((size_t)J_DISTILL_PAIRS * CHUNK * sizeof(int));
    slot = (int *)malloc((size_t)n_units * sizeof(int));
    if (!pq || !pd || !qoff || !doff || !qtok || !dtok || !slot) die("distil: no memory");
    for (u = 0; u < n_units; u++) slot[u] = -1;
    retrlm_rng_seed(&rng, 11);
    qoff[0] = doff[0] = 0;
    while (np < J_DISTILL_PAIRS) {
        size_t p = J_Q + (size_t)retrlm_rng_below(&rng, (uint64_t)(x->n - J_Q));
        if (retrlm_tokenizer_decode(x->tok, x->ids + p - J_Q, J_Q, text, sizeof text, &len) ||
            retrlm_datastore_retrieve(x->ds, NULL, text, len, 1, x->doc[p], &u, NULL, &found))
            die("distil: a query");
        if (!found) continue;
        if (slot[u] < 0) { // each unit once, so no batch holds one positive twice
            ut = retrlm_datastore_tokens(x->ds, u, &nt);
            if (nt > CHUNK) nt = CHUNK;
            memcpy(dtok + doff[nd], ut, (size_t)nt * sizeof(int));
            doff[nd + 1] = doff[nd] + (size_t)nt;
            slot[u] = (int)nd++;
        }
        memcpy(qtok + qoff[np], x->ids + p - J_Q, J_Q * sizeof(int));
        qoff[np + 1] = qoff[np] + J_Q;
        pq[np] = np, pd[np] = slot[u];
        np++;
    }
    free(slot);
    j_encoder_config(&ec);
    if (retrlm_encoder_init(e, &ec)) die("encoder");
    adamw(&o, g, retrlm_encoder_param_groups(e, 1e-3f, 0.01f, g), J_DISTILL_STEPS);
    retrlm_retriever_train_state_init(&rs, 1);
    memset(&dc, 0, sizeof dc);
    dc.queries.ids = qtok, dc.queries.off = qoff, dc.queries.n = (size_t)np;
    dc.docs.ids = dtok, dc.docs.off = doff, dc.docs.n = nd;
    dc.pair_query = pq, dc.pair_doc = pd, dc.n_pairs = (size_t)np;
    dc.temperature = 0.05f;
    dc.steps = J_DISTILL_STEPS;
    dc.progress = progress;
    if (retrlm_dpr_train(e, &o, &dc, &rs)) die("distil");
    fprintf(stderr, "  distilled from BM25: %d pairs, %lu units, loss %.3f, in-batch accuracy %.2f\n", np,
            (unsigned long)nd, (double)rs.last_loss, (double)rs.last_acc);
    if (retrlm_encoder_save(e, path)) die("save the distilled encoder");
    retrlm_adamw_free(&o);
    free(pq), free(pd), free(qoff), free(doff), free(qtok), free(dtok);
    return 1;
}

// "-from-MODEL" (MODEL: RETRLM_JOINT_FROM's file name without .rlm) for a file trained from it,
// "" when every reader starts from the LM alone
static void j_from_tag(const j_ctx *x, char *buf, size_t size) {
    size_t l = x->from ? strlen(x->from) : 0;
    if (l > 4 && !strcmp(x->from + l - 4, ".rlm")) l -= 4;
    if (x->from) snprintf(buf, size, "-from-%.*s", (int)l, x->from);
    else if (size) buf[0] = 0;
}

// where a strategy-2/3 row's reader is kept: out/joint-NAME-STEPS.rlm (-bBATCH after STEPS for a
// joint row whose batch is not 4, -lrLR before .rlm when the reader's learning rate is not the
// default, -from-MODEL when it starts from RETRLM_JOINT_FROM, -encbm25 when its dense retriever
// starts distilled from BM25)
static void j_path(const j_ctx *x, const char *name, char *path, size_t size) {
    char lr[32] = "", from[300] = "", batch[32] = "", seed[32] = "";
    const int retrofit = !strncmp(name, "s2", 2);
    if (x->batch != 4 && !retrofit) snprintf(batch, sizeof batch, "-b%d", x->batch);
    if (x->lr != 5e-4f) snprintf(lr, sizeof lr, "-lr%g", (double)x->lr);
    if (x->seed != 1) snprintf(seed, sizeof seed, "-seed%d", x->seed);
    j_from_tag(x, from, sizeof from);
    snprintf(path, size, "%s/joint-%s-%d%s%s%s%s%s.rlm", x->out, name, x->steps, batch, lr, from,
             x->distilled && strcmp(name, "s2_bm25") && strcmp(name, "s2_bm25_own") ? "-encbm25" : "", seed);
}

// one strategy-3 row: the reader and retriever trained jointly from the LM alone and the
// Contriever encoder at enc0, kept at out/joint-NAME-STEPS.rlm (+ .enc); returns train seconds
static double j_joint(const j_ctx *x, const char *name, const char *enc0, retrlm_joint_objective obj,
                      int refresh, int delay, int rerank, int rerank_bm25, float bm25_weight, int query_side,
                      retrlm_model *m, retrlm_encoder *e, retrlm_joint_state *js) {
    char path[1024], epath[1100];
    retrlm_adamw o1, o2;
    retrlm_adamw_group g[6];
    retrlm_joint_config jc;
    int ng, i, keep = 0;
    double t0 = retrlm_time_seconds();
    j_path(x, name, path, sizeof path);
    snprintf(epath, sizeof epath, "%s.enc", path);
    memset(js, 0, sizeof *js);
    if (!retrlm_model_load(m, path, NULL) && !retrlm_encoder_load(e, epath)) return load_secs(path);
    retrlm_model_free(m);
    j_reader(x, m);
    if (retrlm_encoder_load(e, enc0)) die("load the start encoder");
    snprintf(epath, sizeof epath, "%s.dense", enc0);
    j_embed(x->ds, e, x->tok, epath); // the Contriever's index, where every row starts
    snprintf(epath, sizeof epath, "%s.enc", path);
    adamw(&o1, g, retrlm_model_param_groups(m, x->lr, 0.1f, g), x->steps);
    ng = retrlm_encoder_param_groups(e, 1e-4f, 0.01f, g);
    for (i = 0; i < ng; i++) { // query-side: the document side's weights stay out
        const float *p = g[i].params, *d0 = e->side[RETRLM_DOC].params;
        if (!query_side || !((p >= d0 && p < d0 + e->side[RETRLM_DOC].n_params) || p == e->proj[RETRLM_DOC]))
            g[keep++] = g[i];
    }
    adamw(&o2, g, keep, x->steps);
    retrlm_joint_state_init(js, (uint64_t)x->seed);
    memset(&jc, 0, sizeof jc);
    jc.lm_tok = x->tok, jc.ds = x->ds;
    jc.tokens = x->ids, jc.n_tokens = x->n, jc.token_doc = x->doc;
    jc.objective = obj;
    jc.context_tokens = J_CTX - J_UNIT, jc.query_tokens = J_Q, jc.continuation_tokens = J_UNIT;
    jc.unit_tokens = J_UNIT, jc.continuation = 1;
    jc.k = 2, jc.batch = x->batch;
    jc.refresh_every = refresh, jc.refresh_delay = delay, jc.rerank = rerank, jc.query_side = query_side;
    jc.rerank_bm25 = rerank_bm25, jc.bm25_weight = bm25_weight;
    jc.probe = 32;
    jc.steps = x->steps;
    jc.progress = progress;
    if (retrlm_joint_train(m, &o1, e, &o2, &jc, js)) die("joint train");
    retrlm_adamw_free(&o1);
    retrlm_adamw_free(&o2);
    if (retrlm_model_save(m, NULL, NULL, path) || retrlm_encoder_save(e, epath)) die("save joint");
    j_forget(path);
    save_secs(path, retrlm_time_seconds() - t0);
    fprintf(stderr, "  joint %s: loss %.3f reader %.3f, %lld refreshes (%.0f s embedding, %.0f s waited), "
            "last overlap %.2f\n", name, (double)js->last_loss, (double)js->last_reader,
            (long long)js->refreshes, js->refresh_seconds, js->stall_seconds, (double)js->last_overlap);
    return retrlm_time_seconds() - t0;
}

// A curve row's wall seconds a refresh adds (*cost), from its run (secs, nref refreshes every T
// steps) against the no-refresh run's secs0 over the same steps; returns the share of the
// no-refresh throughput that refreshing every T steps keeps over a long run: T t / (T t + cost)
static double j_steady(double secs, double secs0, int nref, int T, int steps, double *cost) {
    const double tt = T * secs0 / steps;
    *cost = (secs - secs0) / nref;
    return tt / (tt + *cost);
}

// The cost of a fresh index: REALM from the same start for a few steps with no refresh, and
// with a refresh every T steps, blocking or in the background (swapped in T / 5 steps later):
// training tokens a second (the windows' tokens) and the bits per byte on test each reaches.
// The intervals: RETRLM_JOINT_CURVE_EVERY, up to 6 comma-separated step counts (default
// 10,25,50); the row with no refresh always runs first.
static void joint_curve(j_ctx x, const char *corpus, const stream *st, const char *enc0) {
    const char *ev = getenv("RETRLM_JOINT_CURVE_EVERY");
    int every[7] = {0, 10, 25, 50}, n_every = 4;
    double bpb[13], tps[13], wait[13], emb[13], secs[13];
    int i, mode, n = 0, tag[13][2], nref[13];
    char name[64];
    retrlm_model m;
    retrlm_encoder e;
    retrlm_joint_state js;
    memset(&m, 0, sizeof m);
    memset(&e, 0, sizeof e);
    x.steps = getenv("RETRLM_JOINT_CURVE_STEPS") ? atoi(getenv("RETRLM_JOINT_CURVE_STEPS")) : 100;
    if (ev && *ev)
        for (n_every = 1; *ev && n_every < 7; n_every++) {
            char *end;
            long t = strtol(ev, &end, 10);
            if (end == ev || t < 5 || t > 1000000 || (*end && *end != ','))
                die("RETRLM_JOINT_CURVE_EVERY: step counts of at least 5, comma-separated");
            every[n_every] = (int)t;
            ev = *end ? end + 1 : end;
        }
    for (i = 0; i < n_every; i++)
        for (mode = 0; mode < (every[i] ? 2 : 1); mode++) {
            snprintf(name, sizeof name, "curve-%d-%s", every[i], mode ? "bg" : "block");
            secs[n] = j_joint(&x, name, enc0, RETRLM_JOINT_REALM, every[i], mode ? every[i] / 5 : 0, 0, 0, 0.0f, 0, &m, &e, &js);
            tps[n] = (double)x.steps * x.batch * J_CTX / secs[n];
            wait[n] = js.stall_seconds, emb[n] = js.refresh_seconds; // 0 when the model was reused
            // refreshes begin at T, 2T, .. before the last step: counted, so a reused model has them too
            nref[n] = every[i] ? (x.steps - 1) / every[i] : 0;
            {
                char path[1024], dense[1100];
                j_path(&x, name, path, sizeof path);
                j_embed(x.ds, &e, x.tok, j_cache(dense, sizeof dense, path, ".dense"));
            }
            j_read(&m, x.tok, x.ds, RETRLM_RETRIEVE_DENSE, 0.0f, st, 1, &bpb[n], NULL);
            tag[n][0] = every[i], tag[n][1] = mode;
            n++;
            retrlm_model_free(&m);
            retrlm_encoder_free(&e);
        }
    printf("\n%s: the cost of a fresh index, REALM for %d steps from the same start (load %.2f)\n", corpus, x.steps,
           loadavg());
    printf("| refresh | refreshes | training tokens/s | share of no refresh | embedding s | waited s | cost a refresh s | "
           "steady share | test bits per byte |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (i = 0; i < n; i++) {
        if (!tag[i][0]) printf("| none |");
        else printf("| every %d, %s |", tag[i][0], tag[i][1] ? "background" : "blocking");
        printf(" %d | %.0f | %.0f%% | %.0f | %.0f |", nref[i], tps[i], 100.0 * tps[i] / tps[0], emb[i], wait[i]);
        // the wall time a refresh adds, and the share of the no-refresh throughput a run would keep
        // if it refreshed every T steps from start to end (the runs here refresh at T, 2T, ..
        // before their last step, not at step 0)
        if (tag[i][0] && nref[i] > 0) {
            double c;
            const double sh = j_steady(secs[i], secs[0], nref[i], tag[i][0], x.steps, &c);
            printf(" %.1f | %.0f%% |", c, 100.0 * sh);
        } else printf(" | |");
        printf(" %.4f |\n", bpb[i]);
    }
    printf("a run that reuses a model kept from before shows 0 embedding and waited s (its train s are kept); the steady share is the one a "
           "refresh every T steps would leave over a long run: T t / (T t + cost), t the no-refresh step time\n\n");
    for (i = 0; i < n; i++)
        printf("%s.j.curve_%d_%s.tok_s=%.0f\n%s.j.curve_%d_%s.bpb=%.4f\n", corpus, tag[i][0], tag[i][1] ? "bg" : "block",
               tps[i], corpus, tag[i][0], tag[i][1] ? "bg" : "block", bpb[i]);
    for (i = 1; i < n; i++)
        if (nref[i] > 0) {
            double c;
            printf("%s.j.curve_%d_%s.steady_share=%.3f\n", corpus, tag[i][0], tag[i][1] ? "bg" : "block",
                   j_steady(secs[i], secs[0], nref[i], tag[i][0], x.steps, &c));
        }
}

// strategy 2, in-context retrofitting: the LM alone trained further with the units of a frozen
// retriever (mode) before its windows, kept at out/joint-NAME-STEPS.rlm; returns train seconds
static double j_retrofit(const j_ctx *x, const char *name, retrlm_retrieve_mode mode, float bm25_weight,
                         retrlm_model *m) {
    retrlm_incontext_train_config ic;
    retrlm_lm_train_state ls;
    retrlm_retrieve_params rp;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    char path[1024];
    double t0 = retrlm_time_seconds();
    j_path(x, name, path, sizeof path);
    if (!retrlm_model_load(m, path, NULL)) return load_secs(path);
    j_reader(x, m);
    adamw(&o, g, retrlm_model_param_groups(m, x->lr, 0.1f, g), x->steps);
    retrlm_lm_train_state_init(&ls, (uint64_t)x->seed);
    memset(&rp, 0, sizeof rp);
    rp.mode = mode;
    rp.depth = J_RR; // RERANK's BM25 candidates
    rp.bm25_weight = bm25_weight;
    memset(&ic, 0, sizeof ic);
    ic.tok = x->tok, ic.ds = x->ds, ic.retrieve = &rp;
    ic.tokens = x->ids, ic.n_tokens = x->n;
    ic.token_doc = x->own && mode == RETRLM_RETRIEVE_BM25 ? NULL : x->doc;
    ic.k = 1, ic.unit_tokens = J_UNIT, ic.continuation = 1, ic.query_tokens = J_Q;
    ic.window_tokens = J_CTX, ic.batch = BATCH;
    ic.steps = x->steps;
    ic.progress = progress;
    if (retrlm_incontext_train(m, &o, &ic, &ls)) die("retrofit");
    retrlm_adamw_free(&o);
    if (retrlm_model_save(m, NULL, NULL, path)) die("save retrofit");
    j_forget(path);
    save_secs(path, retrlm_time_seconds() - t0);
    return retrlm_time_seconds() - t0;
}

// strategy 2, the retriever's side: REPLUG LSR (retrlm_lsr_train) from the dense retriever at enc0,
// the reader x->lm frozen, on windows of its training stream shaped as the third table reads test
// (x J_CTX tokens, its last J_Q the query; y the J_STRIDE after; the unit with its continuation,
// J_UNIT tokens; units of x's own document never retrieved), x->lsr_steps steps of BATCH windows,
// k 8, temperature 0.1 on both sides (the paper's); kept at
// out/lsr-STEPS[-lrLR][-encbm25][-from-MODEL][-seedS].enc (path gets it) with its mean KL over
// the first and last 20 steps beside it (.kl); returns train seconds, and e holds the tuned retriever
static double j_lsr(const j_ctx *x, const char *enc0, retrlm_encoder *e, char *path, size_t size, double *kl) {
    char from[300] = "", lr[32] = "", seed[32] = "", klp[1100];
    retrlm_adamw o;
    retrlm_adamw_group g[6];
    retrlm_lsr_config lc;
    retrlm_retriever_train_state rs;
    float *losses;
    double t0 = retrlm_time_seconds(), secs;
    FILE *f;
    int i;
    j_from_tag(x, from, sizeof from);
    if (x->lsr_lr != 1e-4f) snprintf(lr, sizeof lr, "-lr%g", (double)x->lsr_lr);
    if (x->seed != 1) snprintf(seed, sizeof seed, "-seed%d", x->seed);
    snprintf(path, size, "%s/lsr-%d%s%s%s%s.enc", x->out, x->lsr_steps, lr, x->distilled ? "-encbm25" : "", from, seed);
    snprintf(klp, sizeof klp, "%s.kl", path);
    if (!retrlm_encoder_load(e, path)) {
        if ((f = fopen(klp, "r"))) {
            if (fscanf(f, "%lf %lf", &kl[0], &kl[1]) != 2) kl[0] = kl[1] = -1.0;
            fclose(f);
        }
        return load_secs(path);
    }
    if (retrlm_encoder_load(e, enc0)) die("LSR: load the start retriever");
    snprintf(klp, sizeof klp, "%s.dense", enc0);
    j_embed(x->ds, e, x->tok, klp); // LSR's first top k come from the start retriever's index
    adamw(&o, g, retrlm_encoder_param_groups(e, x->lsr_lr, 0.01f, g), x->lsr_steps);
    losses = (float *)malloc((size_t)x->lsr_steps * sizeof(float));
    if (!losses) die("LSR: no memory");
    memset(&lc, 0, sizeof lc);
    lc.lm = (retrlm_model *)x->lm; // frozen: only its activations are written
    lc.lm_tok = x->tok, lc.ds = x->ds;
    lc.tokens = x->ids, lc.n_tokens = x->n, lc.token_doc = x->doc;
    lc.context_tokens = J_CTX, lc.query_tokens = J_Q, lc.continuation_tokens = J_STRIDE;
    lc.unit_tokens = J_UNIT, lc.continuation = 1;
    lc.k = 8, lc.batch = BATCH, lc.temperature = 0.1f;
    lc.steps = x->lsr_steps, lc.refresh_every = 100;
    lc.losses = losses;
    lc.progress = progress;
    retrlm_retriever_train_state_init(&rs, (uint64_t)x->seed);
    if (retrlm_lsr_train(e, &o, &lc, &rs)) die("LSR");
    kl[0] = kl[1] = 0.0;
    for (i = 0; i < 20; i++) kl[0] += losses[i] / 20.0, kl[1] += losses[x->lsr_steps - 20 + i] / 20.0;
    fprintf(stderr, "  LSR: %d steps, mean KL %.4f over the first 20, %.4f over the last 20\n", x->lsr_steps, kl[0], kl[1]);
    if (retrlm_encoder_save(e, path)) die("save the LSR retriever");
    snprintf(klp, sizeof klp, "%s.kl", path);
    if ((f = fopen(klp, "w"))) fprintf(f, "%.6f %.6f\n", kl[0], kl[1]), fclose(f);
    remove(j_cache(klp, sizeof klp, path, ".dense")), remove(j_cache(klp, sizeof klp, path, ".replug.bpb"));
    secs = retrlm_time_seconds() - t0;
    save_secs(path, secs);
    retrlm_adamw_free(&o);
    free(losses);
    return secs;
}

// a copy warm-up: the LM alone trained `steps` more steps on its training stream with a share
// (RETRLM_COPY_SHARE, default 1) of its spans written twice, the spans 16 to 128 tokens long at
// random (a fixed length would teach a head to look a fixed distance back, not to copy), so that
// copying from the context pays; peak lr RETRLM_COPY_LR (default x->lr). The copy probe on test
// (te) is printed every 500 steps, so a long run shows when the reader starts to copy. Kept at
// out/copywarm-STEPS.rlm, or copywarm-STEPS-sSHARE-lrLR.rlm when either knob is set (the path
// goes to path).
static void j_copywarm(const j_ctx *x, int steps, const int *te, size_t n_te, retrlm_model *m,
                       char *path, size_t size) {
    const char *sh = getenv("RETRLM_COPY_SHARE"), *lr_env = getenv("RETRLM_COPY_LR");
    const double share = sh && *sh ? atof(sh) : 1.0;
    const float lr = lr_env && *lr_env ? (float)atof(lr_env) : x->lr;
    retrlm_rng rng;
    size_t i = 0, n = 0;
    int *twice;
    char what[96];
    if ((sh && *sh) || (lr_env && *lr_env)) snprintf(path, size, "%s/copywarm-%d-s%g-lr%g.rlm", x->out, steps, share, (double)lr);
    else snprintf(path, size, "%s/copywarm-%d.rlm", x->out, steps);
    if (!retrlm_model_load(m, path, NULL)) return;
    if (!(share >= 0.0 && share <= 1.0) || !(lr > 0.0f)) die("RETRLM_COPY_SHARE must be in [0, 1] and RETRLM_COPY_LR > 0");
    twice = (int *)malloc(2 * x->n * sizeof(int));
    if (!twice) die("copy warm-up: no memory");
    retrlm_rng_seed(&rng, 7);
    while (i < x->n) {
        size_t len = 16 + (size_t)retrlm_rng_below(&rng, 113);
        if (len > x->n - i) len = x->n - i;
        memcpy(twice + n, x->ids + i, len * sizeof(int));
        n += len;
        if (share >= 1.0 || retrlm_rng_below(&rng, 1000000) < (uint64_t)(share * 1000000.0)) {
            memcpy(twice + n, x->ids + i, len * sizeof(int));
            n += len;
        }
        i += len;
    }
    j_reader(x, m);
    snprintf(what, sizeof what, "copy warm-up (share %g, lr %g)", share, (double)lr);
    lm_steps(m, twice, n, steps, lr, what, te, n_te, 0, NULL);
    free(twice);
    if (retrlm_model_save(m, NULL, NULL, path)) die("save the copy warm-up");
    j_forget(path);
}

static void joint_table(const j_ctx *x, const char *corpus, const stream *st, int nst) {
    enum { LM, S1, S1_BM25, S1_RR, S2, S2_BM25, S2_RR, REALM, PDIST, RERANK, QSIDE, REALM_RR, PDIST_RR, S1_RRP,
           S2_RRP, REALM_RRP, PDIST_RRP, REPLUG_BM25, REPLUG_DENSE, REPLUG_LSR };
    const char *row[J_ROWS] = {
        "LM alone (no unit)", "1: LM alone + Contriever (trained apart)", "1: LM alone + BM25",
        "1: LM alone + BM25's 16 re-ranked by the Contriever",
        "2: LM retrofitted to read the frozen Contriever's units", "2: LM retrofitted to read BM25's units",
        "2: LM retrofitted to read BM25's 16 re-ranked by the frozen Contriever",
        "3: REALM, background refresh", "3: Atlas PDist, background refresh",
        "3: Atlas PDist, re-ranking 8 (no refresh)", "3: Atlas PDist, query-side (documents frozen)",
        "3: REALM, re-ranking BM25's 16 (no index to refresh)", "3: Atlas PDist, re-ranking BM25's 16 (no index to refresh)",
        "1: LM alone + BM25's 16 re-ranked by the Contriever + w BM25",
        "2: LM retrofitted to read BM25's 16 re-ranked by the frozen Contriever + w BM25",
        "3: REALM, re-ranking BM25's 16, score + w BM25",
        "3: Atlas PDist, re-ranking BM25's 16, score + w BM25",
        "1: LM alone + REPLUG, BM25's 4 best", "1: LM alone + REPLUG, the Contriever's 4 best",
        "2: LM alone + REPLUG, the Contriever's 4 best after LSR with the LM frozen"};
    static const char *key[J_ROWS] = {"j.lm", "j.s1", "j.s1_bm25", "j.s1_rr", "j.s2", "j.s2_bm25", "j.s2_rr", "j.realm",
                                      "j.pdist", "j.pdist_rerank", "j.pdist_qside", "j.realm_rr", "j.pdist_rr",
                                      "j.s1_rrp", "j.s2_rrp", "j.realm_rrp", "j.pdist_rrp", "j.replug_bm25",
                                      "j.replug", "j.replug_lsr"};
    const char *name[J_ROWS] = {"", "", "", "", "s2", "s2_bm25", "s2_rr", "realm", "pdist", "pdist_rerank", "pdist_qside",
                                "realm_rr", "pdist_rr", "", "s2_rrp", "realm_rrp", "pdist_rrp", "", "", ""};
    // how each row's reader finds its unit: BM25's 16 re-ranked by its retriever (RERANK) or as named
    static const retrlm_retrieve_mode how[J_ROWS] = {
        RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_BM25, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_DENSE,
        RETRLM_RETRIEVE_BM25, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_DENSE,
        RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_RERANK,
        RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_RERANK, RETRLM_RETRIEVE_BM25,
        RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_DENSE};
    // the prior each row's reading adds: the _rrp rows' bm25_weight
    float bw[J_ROWS] = {0};
    double bpb[J_ROWS][BUCKETS], secs[J_ROWS], mrr[J_ROWS], bare[J_ROWS], copy[2]; // bare: the reader with no unit
    double lsr_kl[2] = {-1.0, -1.0}; // LSR's mean KL over its first and last 20 steps
    const char *s1_cache = x->distilled ? ".j-distilled.bpb" : ".j-contriever.bpb";
    char enc0[1024], path[1100], rowname[64], cache[1200], enc_how[128], bwname[3][64], s1rrp[64];
    retrlm_encoder e;
    retrlm_model m;
    retrlm_joint_state js;
    int r, b, have[J_ROWS];
    memset(have, 0, sizeof have);
    memset(secs, 0, sizeof secs);
    for (r = 0; r < J_ROWS; r++) mrr[r] = -1.0;
    memset(&e, 0, sizeof e);
    memset(&m, 0, sizeof m);
    memset(bare, 0, sizeof bare);
    bw[S1_RRP] = bw[S2_RRP] = bw[REALM_RRP] = bw[PDIST_RRP] = x->bm25_weight;
    for (r = S2_RRP; r <= PDIST_RRP; r++) {
        snprintf(bwname[r - S2_RRP], sizeof bwname[0], "%s%g", name[r], (double)x->bm25_weight);
        name[r] = bwname[r - S2_RRP];
    }
    // strategy 1's retriever: Contriever on train's documents (the LM alone's tokens), or one
    // distilled from BM25
    if (x->distilled) {
        snprintf(enc0, sizeof enc0, "%s/enc-bm25distill-%d.rlm", x->out, J_DISTILL_STEPS);
        if (j_distill(x, &e, enc0)) remove(j_cache(cache, sizeof cache, x->lm_path, s1_cache));
        row[S1] = "1: LM alone + dense distilled from BM25 (trained apart)";
        row[S2] = "2: LM retrofitted to read the frozen distilled retriever's units";
        row[S1_RR] = "1: LM alone + BM25's 16 re-ranked by the distilled retriever";
        row[S2_RR] = "2: LM retrofitted to read BM25's 16 re-ranked by the frozen distilled retriever";
        row[S1_RRP] = "1: LM alone + BM25's 16 re-ranked by the distilled retriever + w BM25";
        row[REPLUG_DENSE] = "1: LM alone + REPLUG, the distilled retriever's 4 best";
        row[REPLUG_LSR] = "2: LM alone + REPLUG, the distilled retriever's 4 best after LSR with the LM frozen";
        row[S2_RRP] = "2: LM retrofitted to read BM25's 16 re-ranked by the frozen distilled retriever + w BM25";
    } else {
        snprintf(enc0, sizeof enc0, "%s/enc-contriever-%d.rlm", x->out, 1000);
        if (retrlm_encoder_load(&e, enc0)) {
            retrlm_encoder_config ec;
            retrlm_adamw o;
            retrlm_adamw_group g[6];
            retrlm_contriever_config cc;
            retrlm_retriever_train_state rs;
            size_t *off = (size_t *)malloc(((size_t)x->doc[x->n - 1] - (size_t)x->doc[0] + 2) * sizeof(size_t)), i, nd = 0;
            for (i = 0; i < x->n; i++)
                if (i == 0 || x->doc[i] != x->doc[i - 1]) off[nd++] = i;
            off[nd] = x->n;
            j_encoder_config(&ec);
            if (retrlm_encoder_init(&e, &ec)) die("encoder");
            adamw(&o, g, retrlm_encoder_param_groups(&e, 1e-3f, 0.01f, g), 1000);
            retrlm_retriever_train_state_init(&rs, 1);
            memset(&cc, 0, sizeof cc);
            cc.docs.ids = x->ids, cc.docs.off = off, cc.docs.n = nd;
            cc.steps = 1000;
            cc.progress = progress;
            if (retrlm_contriever_train(&e, &o, &cc, &rs)) die("contriever");
            fprintf(stderr, "  contriever: loss %.3f, in-batch accuracy %.2f\n", (double)rs.last_loss, (double)rs.last_acc);
            if (retrlm_encoder_save(&e, enc0)) die("save contriever");
            remove(j_cache(cache, sizeof cache, x->lm_path, s1_cache));
            retrlm_adamw_free(&o);
            free(off);
        }
    }
    // the LM alone without and with a unit (the Contriever's, BM25's)
    j_read((retrlm_model *)x->lm, x->tok, NULL, RETRLM_RETRIEVE_DENSE, 0.0f, st, nst, bpb[LM],
           j_cache(cache, sizeof cache, x->lm_path, ".j-none.bpb"));
    have[LM] = 1;
    snprintf(path, sizeof path, "%s.dense", enc0);
    j_embed(x->ds, &e, x->tok, path);
    j_read((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_DENSE, 0.0f, st, nst, bpb[S1],
           j_cache(cache, sizeof cache, x->lm_path, s1_cache));
    have[S1] = 1;
    mrr[S1] = mrr[S2] = mrr[S1_RR] = mrr[S2_RR] = mrr[S1_RRP] = mrr[S2_RRP] = j_mrr(&e, x->tok, x->data);
    if (want("joint_bm25")) {
        j_read((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_BM25, 0.0f, st, nst, bpb[S1_BM25],
               j_cache(cache, sizeof cache, x->lm_path, ".j-bm25.bpb"));
        have[S1_BM25] = 1;
    }
    if (want("joint_rr")) {
        j_read((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_RERANK, 0.0f, st, nst, bpb[S1_RR],
               j_cache(cache, sizeof cache, x->lm_path, x->distilled ? ".j-distilled-rr.bpb" : ".j-contriever-rr.bpb"));
        have[S1_RR] = 1;
    }
    if (want("joint_rrp")) {
        snprintf(s1rrp, sizeof s1rrp, ".j-%s-rrp%g.bpb", x->distilled ? "distilled" : "contriever", (double)x->bm25_weight);
        j_read((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_RERANK, x->bm25_weight, st, nst, bpb[S1_RRP],
               j_cache(cache, sizeof cache, x->lm_path, s1rrp));
        have[S1_RRP] = 1;
    }
    // strategy 1 with REPLUG: the LM alone mixes what it predicts after each of the 4 best units
    if (want("joint_replug")) {
        j_read_k((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_BM25, 0.0f, J_REPLUG, st, nst,
                 bpb[REPLUG_BM25], j_cache(cache, sizeof cache, x->lm_path, ".j-replug-bm25.bpb"));
        j_read_k((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_DENSE, 0.0f, J_REPLUG, st, nst,
                 bpb[REPLUG_DENSE], j_cache(cache, sizeof cache, x->lm_path,
                                            x->distilled ? ".j-replug-distilled.bpb" : ".j-replug-contriever.bpb"));
        have[REPLUG_BM25] = have[REPLUG_DENSE] = 1;
        mrr[REPLUG_DENSE] = mrr[S1];
    }
    // strategy 2: in-context retrofitting with the Contriever frozen, and with BM25
    if (x->own) name[S2_BM25] = "s2_bm25_own", row[S2_BM25] = "2: LM retrofitted with BM25's units, own document allowed";
    for (b = 0; b < 4; b++) {
        static const char *const wants[4] = {"joint_s2", "joint_bm25", "joint_rr", "joint_rrp"};
        retrlm_retrieve_mode mode;
        r = b < 3 ? S2 + b : S2_RRP;
        mode = how[r];
        if (!want(wants[b])) continue;
        secs[r] = j_retrofit(x, name[r], mode, bw[r], &m);
        j_path(x, name[r], path, sizeof path);
        j_read(&m, x->tok, x->ds, mode, bw[r], st, nst, bpb[r], j_cache(cache, sizeof cache, path, ".bpb"));
        j_read(&m, x->tok, NULL, mode, 0.0f, st, 1, &bare[r], j_cache(cache, sizeof cache, path, ".bpb-none"));
        have[r] = 1;
        retrlm_model_free(&m);
    }
    // strategy 2, the retriever's side: REPLUG LSR tunes the dense retriever to the frozen reader
    if (want("joint_lsr")) {
        char lsr[1024];
        retrlm_encoder_free(&e); // j_lsr loads its own
        secs[REPLUG_LSR] = j_lsr(x, enc0, &e, lsr, sizeof lsr, lsr_kl);
        j_embed(x->ds, &e, x->tok, j_cache(cache, sizeof cache, lsr, ".dense"));
        j_read_k((retrlm_model *)x->lm, x->tok, x->ds, RETRLM_RETRIEVE_DENSE, 0.0f, J_REPLUG, st, nst,
                 bpb[REPLUG_LSR], j_cache(cache, sizeof cache, lsr, ".replug.bpb"));
        have[REPLUG_LSR] = 1;
        mrr[REPLUG_LSR] = j_mrr(&e, x->tok, x->data);
    }
    retrlm_encoder_free(&e);
    for (r = REALM; r < J_ROWS; r++) {
        if (r == S1_RRP || r == S2_RRP) continue;
        snprintf(rowname, sizeof rowname, "joint_%s", r == REALM_RRP ? "realm_rrp" : r == PDIST_RRP ? "pdist_rrp" : name[r]);
        if (!want(rowname)) continue;
        secs[r] = j_joint(x, name[r], enc0,
                          r == REALM || r == REALM_RR || r == REALM_RRP ? RETRLM_JOINT_REALM : RETRLM_JOINT_PDIST,
                          r <= PDIST ? 150 : 0, r <= PDIST ? 30 : 0, r == RERANK ? 8 : r >= REALM_RR ? J_RR : 0,
                          r >= REALM_RR, bw[r], r == QSIDE, &m, &e, &js);
        j_path(x, name[r], path, sizeof path);
        j_embed(x->ds, &e, x->tok, j_cache(cache, sizeof cache, path, ".dense")); // a fresh index of its retriever
        j_read(&m, x->tok, x->ds, how[r], bw[r], st, nst, bpb[r], j_cache(cache, sizeof cache, path, ".bpb"));
        j_read(&m, x->tok, NULL, RETRLM_RETRIEVE_DENSE, 0.0f, st, 1, &bare[r],
               j_cache(cache, sizeof cache, path, ".bpb-none"));
        have[r] = 1;
        mrr[r] = j_mrr(&e, x->tok, x->data);
        retrlm_model_free(&m);
        retrlm_encoder_free(&e);
    }
    if (want("joint_curve")) joint_curve(*x, corpus, st, enc0);
    printf("\n%s test with one retrieved unit in context, bits per byte (windows of %d tokens moving by %d "
           "after the unit a retriever finds for their last %d, read with its continuation, %d tokens; "
           "lower is better)\n", corpus, J_CTX, J_STRIDE, J_Q, J_UNIT);
    printf("| row | steps after the LM alone | train wall s | retriever's debpkg dev MRR@10 | all, no unit |");
    for (b = 0; b < nst; b++) printf(" %s |", bucket_name[b]);
    printf("\n|---|---|---|---|---|");
    for (b = 0; b < nst; b++) printf("---|");
    printf("\n");
    for (r = 0; r < J_ROWS; r++) {
        const int trained = r >= S2 && r != S1_RRP && r < REPLUG_BM25; // the reader trained after the LM alone
        if (!have[r]) continue;
        if (x->from && r >= REPLUG_BM25) printf("| start reader %s |", row[r] + strlen("1: LM alone "));
        else if (x->from && (r <= S1_RR || r == S1_RRP))
            printf("| start reader %s |", r == LM ? "(no unit)" : r == S1 ? "+ its dense retriever"
                                          : r == S1_BM25 ? "+ BM25" : r == S1_RR ? "+ BM25's 16 re-ranked by it"
                                          : "+ BM25's 16 re-ranked by it + w BM25");
        else printf("| %s |", row[r]);
        if (r == REPLUG_LSR) printf(" 0 (the retriever %d LSR steps) |", x->lsr_steps);
        else printf(" %d |", trained ? x->steps : 0);
        if (secs[r] > 0) printf(" %.0f |", secs[r]);
        else printf(" - |");
        if (mrr[r] >= 0) printf(how[r] == RETRLM_RETRIEVE_RERANK ? " (%.4f dense alone) |" : " %.4f |", mrr[r]);
        else printf(" |");
        printf(" %.4f |", trained ? bare[r] : bpb[LM][0]);
        for (b = 0; b < nst; b++) printf(" %.4f |", bpb[r][b]);
        printf("\n");
        if (r != LM) { // the summary's row: the change against the same reader's start with no unit
            char win[64], tr[96];
            snprintf(win, sizeof win, "%d + unit %d, by %d%s", J_CTX, J_UNIT, J_STRIDE, x->from ? " (start reader)" : "");
            if (r == REPLUG_LSR) snprintf(tr, sizeof tr, "retriever: %d LSR steps", x->lsr_steps);
            else if (trained) snprintf(tr, sizeof tr, "reader: %d steps", x->steps);
            else snprintf(tr, sizeof tr, "-");
            sum_add(row[r][0], row[r] + 3, win, tr, bpb[LM], bpb[r]);
        }
    }
    if (x->distilled)
        snprintf(enc_how, sizeof enc_how, "%d DPR steps on %d pairs of a stream query and BM25's first unit for it",
                 J_DISTILL_STEPS, J_DISTILL_PAIRS);
    else snprintf(enc_how, sizeof enc_how, "1000 Contriever steps on train's documents");
    printf("retriever: a bi-encoder (separate sides, %d wide, 2 layers) trained %s, or BM25 (its debpkg dev MRR@10: make bench-bm25_eval); the retrofits train %d steps of %d "
           "windows of %d tokens after one unit; the joint rows %d steps of %d examples (x 64, y 64 tokens) with k 2 "
           "units each (+ the null document for REALM), reader lr %g (the retrofits' too), retriever lr 1e-4, refresh "
           "every 150 steps swapped in 30 later; each row read with a fresh index of its own retriever; the re-ranking rows "
           "read BM25's %d best re-ranked by their retriever (trained as a re-ranker of them: rerank_bm25), whose dense "
           "MRR@10 alone is in brackets; + w BM25: with BM25's score times w = %g added to theirs (bm25_weight), in "
           "training and reading; re-ranking keeps each text once\n\n",
           J_DIM, enc_how, x->steps, BATCH, J_CTX, x->steps, x->batch, (double)x->lr, J_RR, (double)x->bm25_weight);
    if (have[REPLUG_BM25] || have[REPLUG_LSR])
        printf("REPLUG: the %d best units, each read in the window's place, the predictions mixed by the "
               "retriever's softmax (temperature 1 over BM25's scores, 0.1 over dense ones)\n", J_REPLUG);
    if (lsr_kl[0] >= 0.0)
        printf("LSR: %d steps of %d windows (x %d tokens, its last %d the query; y %d), k 8 units, temperature 0.1, "
               "lr %g, the index refreshed every 100 steps; mean KL(LM || retriever) %.4f over the first 20 steps, "
               "%.4f over the last 20\n%s.j.lsr.kl_first=%.4f\n%s.j.lsr.kl_last=%.4f\n", x->lsr_steps, BATCH, J_CTX,
               J_Q, J_STRIDE, (double)x->lsr_lr, lsr_kl[0], lsr_kl[1], corpus, lsr_kl[0], corpus, lsr_kl[1]);
    copy_probe((retrlm_model *)x->lm, st[0].ids, st[0].n, &copy[0], &copy[1]);
    printf("the readers' start (%s) on the copy probe: %.3f nats a token on the first copy, %.3f on the "
           "second\n%s.j.lm.copy_first=%.4f\n%s.j.lm.copy_second=%.4f\n", x->from ? x->from : "the LM alone",
           copy[0], copy[1], corpus, copy[0], corpus, copy[1]);
    for (r = 0; r < J_ROWS; r++)
        if (have[r] && mrr[r] >= 0 && r != S2 && r != S1_RR && r != S2_RR && r != S1_RRP && r != S2_RRP &&
            r != REPLUG_DENSE)
            printf("%s.%s.%smrr10=%.4f\n", corpus, key[r], how[r] == RETRLM_RETRIEVE_RERANK ? "dense_" : "", mrr[r]);
    for (r = S2; r < REPLUG_BM25; r++)
        if (have[r] && r != S1_RRP) printf("%s.%s.bpb_all_no_unit=%.4f\n", corpus, key[r], bare[r]);
    for (r = 0; r < J_ROWS; r++)
        if (have[r])
            for (b = 0; b < nst; b++)
                printf("%s.%s.bpb_%s=%.4f\n", corpus, key[r], bucket_key[b], bpb[r][b]);
}

int main(int argc, char **argv) {
    const char *corpus = argc > 1 ? argv[1] : "debpkg_lm";
    int steps = argc > 2 ? atoi(argv[2]) : 1500;
    char out[512], path[1024], dir[512], lm_path[1024], ckpt[1100];
    const char *data = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    size_t train_tokens = argc > 4 ? (size_t)atoll(argv[4]) : 2000000;
    split tr, te;
    retrlm_tokenizer tok;
    retrlm_datastore ds;
    int *train_ids, b, retro_steps;
    float retro_copy;
    int retro_copy_steps, fit_copy_steps, retro_tie;
    char copy_tag[64], fit_tag[64]; // RETRO's and RETRO-fit's file name tags
    int64_t *train_doc, *test_doc;
    size_t n_train, n_test_all;
    stream st[BUCKETS];
    retrlm_retro_neighbours train_nb;
    retrlm_model lm, rm, fm, tm[3];
    double secs_trime[3] = {0, 0, 0};
    enum { MROWS = 8, CACHE = (BATCH - 1) * SEQ }; // TRIME_long's memory: the batch's earlier segments
    double mb[MROWS][BUCKETS];
    int have[MROWS];
    float mlam[MROWS], mtemp[MROWS];
    retrlm_knnlm kn[2];
    double bpb[5][BUCKETS], secs[3] = {0, 0, 0}, t0, tok_s[2] = {0, 0}, speed_fig[4] = {0, 0, 0, 0};
    float probe[2][2] = {{0, 0}, {0, 0}};
    double copy[2]; // the LM alone's copy probe: first and second copy, nats a token
    split va;        // valid: tunes kNN-LM's and TRIME's mixtures and RETRO's min_overlap
    int *vids;
    int64_t *vdoc;
    size_t nv;
    stream vst;
    rctx rx;
    float tau[2] = {0, 0}, tau_env = (float)env_double("RETRLM_RETRO_MIN_OVERLAP", -1.0);
    float train_ov = (float)env_double("RETRLM_RETRO_TRAIN_MIN_OVERLAP", 0.0);
    int kjv = !strcmp(corpus, "kjv"), joint_rows, skip_lm;
    bench_machine();
    trime_warmup = env_int("RETRLM_TRIME_WARMUP", 0);
    if (trime_warmup) snprintf(trime_trained, sizeof trime_trained, "LM alone's first %d steps, then TRIME's", trime_warmup);
    trime_sim = getenv("RETRLM_TRIME_SIM") && !strcmp(getenv("RETRLM_TRIME_SIM"), "dot") ? RETRLM_TRIME_DOT
                                                                                         : RETRLM_TRIME_L2;
    if (trime_warmup < 0 || trime_warmup >= steps) {
        fprintf(stderr, "strategies: RETRLM_TRIME_WARMUP %d must be in [0, steps %d)\n", trime_warmup, steps);
        return 1;
    }
    memset(&lm, 0, sizeof lm), memset(&rm, 0, sizeof rm), memset(&fm, 0, sizeof fm);
    memset(tm, 0, sizeof tm), memset(kn, 0, sizeof kn), memset(bpb, 0, sizeof bpb);
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
    neighbours(&train_nb, out, "nb-train.rlm", &ds, &tok, train_ids, n_train, train_doc, train_ov);
    // test streams: all, then the overlap buckets (debpkg_lm)
    {
        int *all = encode_split(&tok, &te, &test_doc, &n_test_all), d;
        double *overlap = NULL;
        if (!kjv) {
            snprintf(path, sizeof path, "%s/overlap_test.tsv", dir);
            if (!(overlap = overlap_of_lines(path, (size_t)te.n_docs))) {
                fprintf(stderr, "strategies: cannot read %s\n", path);
                exit(1);
            }
        } else
            overlap = (double *)calloc((size_t)te.n_docs, sizeof(double));
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++) {
            size_t i, k = 0;
            st[b].ids = (int *)malloc(n_test_all * sizeof(int));
            st[b].bytes = 0;
            for (i = 0; i < n_test_all; i++) {
                if (b == 0 || overlap_bucket(overlap[test_doc[i]]) == b) st[b].ids[k++] = all[i];
            }
            st[b].n = k;
            for (d = 0; d < te.n_docs; d++) {
                if (b == 0 || overlap_bucket(overlap[d]) == b) st[b].bytes += te.doc_off[d + 1] - te.doc_off[d];
            }
            snprintf(path, sizeof path, "nb-test%d.rlm", b);
            neighbours(&st[b].nb, out, path, &ds, &tok, st[b].ids, st[b].n, NULL, 0.0f);
        }
        free(all);
        free(overlap);
    }
    // valid
    {
        size_t len;
        char *t;
        snprintf(path, sizeof path, kjv ? "%s/chapters.tsv" : "%s/valid.txt", dir);
        t = kjv ? kjv_chapters(path, "valid", &len) : slurp(path, &len);
        split_lines(&va, t, len);
        vids = encode_split(&tok, &va, &vdoc, &nv);
        memset(&vst, 0, sizeof vst);
        vst.ids = vids, vst.n = nv, vst.bytes = va.len;
        rx.out = out, rx.ds = &ds, rx.tok = &tok, rx.va = &vst, rx.st = st, rx.nst = kjv ? 1 : BUCKETS;
    }
    // the LM alone; RETRLM_STRATEGIES_LM=0 leaves it out (its figures NaN, the rows that read it
    // off), so that a RETRO variant trains on one core while the other trains the LM alone
    skip_lm = !env_int("RETRLM_STRATEGIES_LM", 1);
    if (skip_lm && (!getenv("RETRLM_STRATEGIES_ROWS") || strcmp(getenv("RETRLM_STRATEGIES_ROWS"), "retro")))
        die("RETRLM_STRATEGIES_LM=0 goes with RETRO rows only (RETRLM_STRATEGIES_ROWS=retro)");
    if (skip_lm) {
        for (b = 0; b < BUCKETS; b++) bpb[0][b] = NAN;
        copy[0] = copy[1] = NAN;
        secs[0] = tok_s[0] = 0;
        for (b = 0; b < MROWS; b++) have[b] = 0;
    } else {
        retrlm_model_config mc;
        model_config(&mc, 0);
        snprintf(path, sizeof path, "%s/lm-%d-%lu.rlm", out, steps, (unsigned long)n_train);
        snprintf(lm_path, sizeof lm_path, "%s", path);
        lm_ckpt(lm_path, trime_warmup, ckpt, sizeof ckpt);
        t0 = retrlm_time_seconds();
        if (retrlm_model_load(&lm, path, NULL)) {
            if (retrlm_model_init(&lm, &mc)) die("lm");
            lm_steps(&lm, train_ids, n_train, steps, 2e-3f, "lm train", NULL, 0, trime_warmup,
                     trime_warmup > 0 ? ckpt : NULL);
            secs[0] = retrlm_time_seconds() - t0;
            tok_s[0] = (double)steps * BATCH * SEQ / secs[0];
            if (retrlm_model_save(&lm, NULL, NULL, path)) die("save lm");
            save_secs(path, secs[0]);
            j_forget(path);
        } else {
            secs[0] = load_secs(path);
            tok_s[0] = 0;
        }
        for (b = 0; b < (kjv ? 1 : BUCKETS); b++)
            if (retrlm_lm_bits_per_byte(&lm, st[b].ids, st[b].n, st[b].bytes, SEQ, &bpb[0][b])) die("lm bpb");
        copy_probe(&lm, st[0].ids, st[0].n, &copy[0], &copy[1]);
    }
    // strategy 4: TRIME (local memory) and TRIME_ext (BM25-grouped batches), the LM's tokens
    if (want("trime")) {
        trime_path(path, sizeof path, out, "", "trime", steps, n_train);
        secs_trime[0] = trime_model(&tm[0], path, RETRLM_TRIME_LOCAL, train_ids, n_train, NULL, 0, steps, ckpt);
    }
    if (want("trime_long")) {
        trime_path(path, sizeof path, out, "", "trime_long", steps, n_train);
        secs_trime[2] = trime_model(&tm[2], path, RETRLM_TRIME_LONG, train_ids, n_train, NULL, 0, steps, ckpt);
    }
    if (want("trime_ext")) {
        int64_t nbat = 0, *bat;
        if (retrlm_trime_bm25_batches(&tok, train_ids, n_train, SEQ, BATCH, NULL, NULL, &nbat)) die("trime batches");
        bat = (int64_t *)malloc((size_t)nbat * BATCH * sizeof(int64_t));
        if (retrlm_trime_bm25_batches(&tok, train_ids, n_train, SEQ, BATCH, NULL, bat, &nbat)) die("trime batches");
        trime_path(path, sizeof path, out, "", "trime_ext", steps, n_train);
        secs_trime[1] = trime_model(&tm[1], path, RETRLM_TRIME_EXT, train_ids, n_train, bat, nbat, steps, ckpt);
        free(bat);
    }
    if (getenv("RETRLM_STRATEGIES_TRAIN_ONLY")) return 0;
    // RETRO from scratch, the same tokens
    // RETRLM_RETRO_COPY=p: RETRO and RETRO-fitting with the copy curriculum (copy_share p)
    retro_copy = getenv("RETRLM_RETRO_COPY") ? (float)atof(getenv("RETRLM_RETRO_COPY")) : 0.0f;
    if (retro_copy > 0.0f) snprintf(copy_tag, sizeof copy_tag, "-copy%g", (double)retro_copy);
    else copy_tag[0] = 0;
    retro_tie = env_int("RETRLM_RETRO_TIE", 0) != 0;
    if (env_int("RETRLM_RETRO_SMEAR", 0)) strcat(copy_tag, "-smear");
    if (retro_tie) strcat(copy_tag, "-tie");
    retro_copy_steps = env_int("RETRLM_RETRO_COPY_STEPS", 0);
    fit_copy_steps = env_int("RETRLM_RETROFIT_COPY_STEPS", retro_copy_steps);
    memcpy(fit_tag, copy_tag, sizeof fit_tag);
    if (retro_copy > 0.0f && retro_copy_steps > 0)
        snprintf(copy_tag + strlen(copy_tag), sizeof copy_tag - strlen(copy_tag), "-until%d", retro_copy_steps);
    if (retro_copy > 0.0f && fit_copy_steps > 0)
        snprintf(fit_tag + strlen(fit_tag), sizeof fit_tag - strlen(fit_tag), "-until%d", fit_copy_steps);
    if (train_ov > 0.0f) {
        snprintf(copy_tag + strlen(copy_tag), sizeof copy_tag - strlen(copy_tag), "-ov%g", (double)train_ov);
        snprintf(fit_tag + strlen(fit_tag), sizeof fit_tag - strlen(fit_tag), "-ov%g", (double)train_ov);
    }
    if (want("retro")) {
        retrlm_model_config mc;
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_retro_train_state s;
        retrlm_retro_train_config tc;
        model_config(&mc, 1);
        snprintf(path, sizeof path, "%s/retro-%d-%lu%s.rlm", out, steps, (unsigned long)n_train, copy_tag);
        t0 = retrlm_time_seconds();
        retrlm_retro_train_state_init(&s, 1);
        memset(&tc, 0, sizeof tc);
        tc.train = train_ids;
        tc.n_train = n_train;
        tc.neighbours = &train_nb;
        tc.steps = steps; // no valid stream: the probe reads the first train windows
        tc.copy_share = retro_copy;
        tc.copy_steps = retro_copy_steps;
        tc.progress = retro_progress;
        tc.progress_user = &s;
        tc.eval_every = (int)(tc.steps / 6 > 0 ? tc.steps / 6 : 1);
        if (retrlm_model_load(&rm, path, NULL)) {
            if (retrlm_model_init(&rm, &mc)) die("retro");
            if (retro_tie && retrlm_model_retro_tie_embedding(&rm, 5)) die("tie");
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
        retro_read(&rx, &rm, "RETRO", 0.0f, bpb[1]);
        tau[0] = retro_read(&rx, &rm, "RETRO", tau_env, bpb[3]);
    }
    // RETRO-fitting: the LM alone's decoder, frozen; a quarter of its steps for the rest
    retro_steps = getenv("RETRLM_RETROFIT_STEPS") ? atoi(getenv("RETRLM_RETROFIT_STEPS")) : steps / 4;
    if (retro_steps < 1) retro_steps = 1;
    if (want("retrofit")) {
        retrlm_model_config mc;
        retrlm_adamw o;
        retrlm_adamw_group g[2];
        retrlm_retro_train_state s;
        retrlm_retro_train_config tc;
        int t;
        model_config(&mc, 1);
        if (retro_steps != (steps / 4 > 0 ? steps / 4 : 1))
            snprintf(path, sizeof path, "%s/retrofit-%d-%lu%s-%d.rlm", out, steps, (unsigned long)n_train, fit_tag,
                     retro_steps);
        else snprintf(path, sizeof path, "%s/retrofit-%d-%lu%s.rlm", out, steps, (unsigned long)n_train, fit_tag);
        t0 = retrlm_time_seconds();
        if (retrlm_model_load(&fm, path, NULL)) {
            if (retrlm_model_init(&fm, &mc)) die("retrofit");
            for (t = 0; t < RETRLM_T_COUNT; t++)
                if (lm.tensor_size[t]) memcpy(fm.param[t], lm.param[t], lm.tensor_size[t] * sizeof(float));
            if (retro_tie && retrlm_model_retro_tie_embedding(&fm, 5)) die("tie");
            adamw(&o, g, retrlm_model_retro_param_groups(&fm, 2e-3f, 0.1f, g), retro_steps);
            retrlm_retro_train_state_init(&s, 2);
            memset(&tc, 0, sizeof tc);
            tc.train = train_ids;
            tc.n_train = n_train;
            tc.neighbours = &train_nb;
            tc.steps = retro_steps;
            tc.copy_share = retro_copy;
            tc.copy_steps = fit_copy_steps;
            tc.progress = retro_progress;
            tc.progress_user = &s;
            tc.eval_every = (int)(tc.steps / 6 > 0 ? tc.steps / 6 : 1);
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
        retro_read(&rx, &fm, "RETRO-fitted", 0.0f, bpb[2]);
        tau[1] = retro_read(&rx, &fm, "RETRO-fitted", tau_env, bpb[4]);
    }
    // read with a memory: strategy 1's kNN-LM on the LM alone against strategy 4's TRIME
    if (!skip_lm) {
        int *ids[BUCKETS], i;
        size_t ns[BUCKETS], nby[BUCKETS];
        retrlm_trime_params tp;
        int nst = kjv ? 1 : BUCKETS;
        for (b = 0; b < nst; b++) ids[b] = st[b].ids, ns[b] = st[b].n, nby[b] = st[b].bytes;
        memset(&tp, 0, sizeof tp);
        tp.sim = trime_sim;
        for (i = 0; i < MROWS; i++) have[i] = 0, mlam[i] = mtemp[i] = 0.0f;
        read_with_memory(&lm, NULL, 0, NULL, 0, 0, ids, ns, nby, nst, mb[0]);
        have[0] = 1;
        if (want("knnlm")) {
            snprintf(path, sizeof path, "%s/knn-lm-%d-%lu.rlm", out, steps, (unsigned long)n_train);
            knn_keys(&kn[0], &lm, path, train_ids, n_train);
            tune_knn(&lm, NULL, &kn[0], vids, nv, va.len, &mlam[1], &mtemp[1], "kNN-LM", path);
            read_with_memory(&lm, NULL, 0, &kn[0], mlam[1], mtemp[1], ids, ns, nby, nst, mb[1]);
            have[1] = 1;
        }
        if (want("trime")) {
            read_with_memory(&tm[0], &tp, 0, NULL, 0, 0, ids, ns, nby, nst, mb[2]);
            have[2] = 1;
        }
        if (want("trime_ext")) {
            read_with_memory(&tm[1], NULL, 0, NULL, 0, 0, ids, ns, nby, nst, mb[3]);
            read_with_memory(&tm[1], &tp, 0, NULL, 0, 0, ids, ns, nby, nst, mb[4]);
            trime_path(path, sizeof path, out, "knn-", "trime_ext", steps, n_train);
            knn_keys(&kn[1], &tm[1], path, train_ids, n_train);
            tune_knn(&tm[1], &tp, &kn[1], vids, nv, va.len, &mlam[5], &mtemp[5], "TRIME_ext", path);
            read_with_memory(&tm[1], &tp, 0, &kn[1], mlam[5], mtemp[5], ids, ns, nby, nst, mb[5]);
            // the paper's TrimeLM_ext reads with all three memories; lambda and temperature as above
            mlam[7] = mlam[5], mtemp[7] = mtemp[5];
            read_with_memory(&tm[1], &tp, CACHE, &kn[1], mlam[7], mtemp[7], ids, ns, nby, nst, mb[7]);
            have[3] = have[4] = have[5] = have[7] = 1;
        }
        if (want("trime_long")) {
            read_with_memory(&tm[2], &tp, CACHE, NULL, 0, 0, ids, ns, nby, nst, mb[6]);
            have[6] = 1;
        }
    }
    // strategy 3 beside 1 and 2, its own table (printed first)
    joint_rows = want("joint_s2") || want("joint_bm25") || want("joint_realm") || want("joint_pdist") ||
                 want("joint_pdist_rerank") || want("joint_pdist_qside") || want("joint_curve") ||
                 want("joint_rr") || want("joint_realm_rr") || want("joint_pdist_rr") || want("joint_rrp") ||
                 want("joint_realm_rrp") || want("joint_pdist_rrp") || want("joint_replug") || want("joint_lsr");
    if (joint_rows || want("copywarm")) {
        j_ctx x;
        const char *from = getenv("RETRLM_JOINT_FROM");
        retrlm_model start;
        memset(&start, 0, sizeof start);
        x.out = out, x.tok = &tok, x.ds = &ds, x.lm = &lm, x.lm_path = lm_path;
        x.ids = train_ids, x.n = n_train, x.doc = train_doc;
        x.steps = getenv("RETRLM_JOINT_STEPS") ? atoi(getenv("RETRLM_JOINT_STEPS")) : 300;
        x.batch = getenv("RETRLM_JOINT_BATCH") ? atoi(getenv("RETRLM_JOINT_BATCH")) : 4;
        x.seed = getenv("RETRLM_JOINT_SEED") ? atoi(getenv("RETRLM_JOINT_SEED")) : 1;
        if (x.seed < 1) die("RETRLM_JOINT_SEED must be a positive integer");
        if (x.batch < 1 || x.batch > 64) die("RETRLM_JOINT_BATCH must be in [1, 64]");
        x.lr = getenv("RETRLM_JOINT_LR") ? (float)atof(getenv("RETRLM_JOINT_LR")) : 5e-4f;
        x.bm25_weight = getenv("RETRLM_JOINT_BM25_WEIGHT") ? (float)atof(getenv("RETRLM_JOINT_BM25_WEIGHT")) : 0.05f;
        if (!(x.bm25_weight >= 0.0f)) die("RETRLM_JOINT_BM25_WEIGHT must be >= 0");
        x.data = kjv ? NULL : data;
        x.from = NULL;
        x.distilled = getenv("RETRLM_JOINT_ENC") && !strcmp(getenv("RETRLM_JOINT_ENC"), "bm25");
        if (getenv("RETRLM_JOINT_ENC") && !x.distilled && strcmp(getenv("RETRLM_JOINT_ENC"), "contriever"))
            die("RETRLM_JOINT_ENC is contriever (the default) or bm25");
        x.own = getenv("RETRLM_RETROFIT_OWN") && atoi(getenv("RETRLM_RETROFIT_OWN"));
        x.lsr_steps = env_int("RETRLM_LSR_STEPS", 300);
        x.lsr_lr = (float)env_double("RETRLM_LSR_LR", 1e-4);
        if (x.lsr_steps < 20 || !(x.lsr_lr > 0.0f)) die("RETRLM_LSR_STEPS must be at least 20 and RETRLM_LSR_LR > 0");
        if (from && *from) { // every reader starts from this model instead of the LM alone
            if (retrlm_model_load(&start, from, NULL)) die("RETRLM_JOINT_FROM: cannot load the model");
            x.lm = &start, x.lm_path = from;
            x.from = strrchr(from, '/') ? strrchr(from, '/') + 1 : from;
            printf("\nthe third table's readers start from %s, not the LM alone\n", from);
        }
        if (getenv("RETRLM_JOINT_COPY") && atoi(getenv("RETRLM_JOINT_COPY")) > 0) {
            static char warm[1024]; // the start reader's path outlives this block in x
            if (x.from) die("RETRLM_JOINT_COPY and RETRLM_JOINT_FROM: one start at a time");
            j_copywarm(&x, atoi(getenv("RETRLM_JOINT_COPY")), st[0].ids, st[0].n, &start, warm, sizeof warm);
            x.lm = &start, x.lm_path = warm;
            x.from = strrchr(warm, '/') + 1;
            printf("\nthe third table's readers start from %s: the LM alone after a copy warm-up\n", warm);
        }
        if (joint_rows) joint_table(&x, corpus, st, kjv ? 1 : BUCKETS);
        retrlm_model_free(&start);
    }
    // the cost of RETRO: a training step and generation against the LM alone, in this run
    if (want("speed")) {
        retrlm_model sm;
        int have_retro = 0;
        char cpu[256];
        memset(&sm, 0, sizeof sm);
        snprintf(path, sizeof path, "%s/retro-%d-%lu%s.rlm", out, steps, (unsigned long)n_train, copy_tag);
        if (!retrlm_model_load(&sm, path, NULL)) have_retro = 1;
        else {
            retrlm_model_config mc;
            model_config(&mc, 1); // untrained: the cost is the same
            if (retrlm_model_init(&sm, &mc)) die("speed: retro model");
        }
        fprintf(stderr, "speed: %d training steps each, generation from %d prompts\n", SPEED_STEPS, GEN_RUNS);
        speed(&tok, &ds, train_ids, n_train, &train_nb, &lm, &sm, st[0].ids, st[0].n, speed_fig);
        printf("\nspeed (%s; medians): a training step of %d x %d tokens, LM alone %.3f s, RETRO %.3f s (%.2fx "
               "the LM's tokens/s); greedy generation to %d tokens, LM alone %.1f tokens/s, RETRO retrieving "
               "(BM25) every %d tokens %.1f tokens/s (%.2fx)%s\n", cpu_model(cpu, sizeof cpu), BATCH, SEQ, speed_fig[0],
               speed_fig[1], speed_fig[0] / speed_fig[1], SEQ, speed_fig[2], CHUNK, speed_fig[3],
               speed_fig[3] / speed_fig[2], have_retro ? "" : " (an untrained RETRO model decodes)");
        retrlm_model_free(&sm);
    }
    // the table
    {
        static const char *row[5] = {"LM alone", "RETRO from scratch (BM25 neighbours)",
                                     "RETRO-fitted (LM alone frozen)", "RETRO from scratch, weak neighbours left out",
                                     "RETRO-fitted, weak neighbours left out"};
        static const char *key[5] = {"lm", "retro", "retrofit", "retro_ov", "retrofit_ov"};
        long long ttok = (long long)steps * BATCH * SEQ;
        int r, nb_b = kjv ? 1 : BUCKETS, row_on[5];
        row_on[0] = 1, row_on[1] = row_on[3] = want("retro"), row_on[2] = row_on[4] = want("retrofit");
        printf("\n%s test, bits per byte (windows of %d tokens; lower is better)\n", corpus, SEQ);
        printf("| row | training tokens | wall s |");
        for (b = 0; b < nb_b; b++) printf(" %s |", bucket_name[b]);
        printf("\n|---|---|---|");
        for (b = 0; b < nb_b; b++) printf("---|");
        printf("\n");
        for (r = 0; r < 5; r++) {
            int fit = r == 2 || r == 4;
            if (!row_on[r]) continue;
            printf("| %s", row[r]);
            if (r >= 3) printf(" (min_overlap %g%s)", (double)tau[r - 3], tau_env < 0.0f ? ", valid's best" : "");
            printf(" | %lld%s |", fit ? ttok + (long long)retro_steps * BATCH * SEQ : ttok,
                   fit ? " (LM's + RETRO-fit's)" : "");
            if (secs[r < 3 ? r : r - 2] > 0) printf(" %.0f |", secs[r < 3 ? r : r - 2]);
            else printf(" - |"); // reused, trained before the wall time was kept
            for (b = 0; b < nb_b; b++) printf(" %.4f |", bpb[r][b]);
            printf("\n");
            {
                char name[160], trained[96];
                if (r == 0) snprintf(name, sizeof name, "LM alone, %d steps", steps);
                else if (r >= 3) snprintf(name, sizeof name, "%s (min_overlap %g)", row[r], (double)tau[r - 3]);
                else snprintf(name, sizeof name, "%s", row[r]);
                if (fit) snprintf(trained, sizeof trained, "RETRO-fit: %d steps", retro_steps);
                else snprintf(trained, sizeof trained, r ? "from scratch, the LM's steps" : "-");
                sum_add(r ? '2' : '0', name, "256, apart", trained, bpb[0], bpb[r]);
            }
        }
        printf("\ntest documents: %d; train stream %lu tokens of %d documents; datastore %d units "
               "of %d tokens; neighbours k %d of %d tokens\n", te.n_docs, (unsigned long)n_train,
               tr.n_docs, ds.n_units, CHUNK, NBR, NBR_LEN);
        printf("copy probe (%d test spans of %d tokens, each written twice in its window): the LM alone "
               "pays %.3f nats a token on the first copy, %.3f on the second\n", PROBE, CSPAN, copy[0], copy[1]);
        if (row_on[1] && row_on[2])
            printf("probe loss with / without neighbours: RETRO %.3f / %.3f, RETRO-fitted %.3f / %.3f "
                   "nats\n", (double)probe[0][0], (double)probe[0][1], (double)probe[1][0],
                   (double)probe[1][1]);
        if (tok_s[0] > 0 && tok_s[1] > 0)
            printf("training speed: LM %.0f tokens/s, RETRO %.0f tokens/s (%.2fx)\n", tok_s[0],
                   tok_s[1], tok_s[1] / tok_s[0]);
        printf("\n");
        {
            static const char *mrow[MROWS] = {
                "LM alone", "LM alone + kNN-LM (its own keys)", "TRIME, local memory",
                "TRIME_ext, vocabulary only", "TRIME_ext, local memory",
                "TRIME_ext, local memory + external datastore (its own keys)",
                "TRIME_long, local + long memory (the 1792 tokens before the window)",
                "TRIME_ext, local + long memory + external datastore"};
            static const char *mkey[MROWS] = {"mem.lm", "mem.knnlm", "mem.trime", "mem.trime_ext_vocab",
                                              "mem.trime_ext_local", "mem.trime_ext", "mem.trime_long",
                                              "mem.trime_ext_all"};
            static const int order[MROWS] = {0, 1, 2, 6, 3, 4, 5, 7}, wall[MROWS] = {-1, -1, 0, 1, 1, 1, 2, 1};
            int i;
            printf("\n%s test read with a memory, bits per byte (windows of %d tokens moving by %d: every "
                   "token sees at least %d before it; lower is better)\n", corpus, SEQ, STRIDE, SEQ - STRIDE);
            printf("| row | training tokens | train wall s | lambda | temperature |");
            for (b = 0; b < nb_b; b++) printf(" %s |", bucket_name[b]);
            printf("\n|---|---|---|---|---|");
            for (b = 0; b < nb_b; b++) printf("---|");
            printf("\n");
            for (i = 0; i < MROWS; i++) {
                r = order[i];
                if (!have[r]) continue;
                double w = wall[r] < 0 ? secs[0] : secs_trime[wall[r]];
                printf("| %s | %lld |", mrow[r], ttok);
                if (w > 0) printf(" %.0f |", w);
                else printf(" - |"); // reused, trained before the wall time was kept
                if (mlam[r] > 0) printf(" %.2f | %.0f |", (double)mlam[r], (double)mtemp[r]);
                else printf(" | |");
                for (b = 0; b < nb_b; b++) printf(" %.4f |", mb[r][b]);
                printf("\n");
                if (r) sum_add(r == 1 ? '1' : '4', mrow[r], "256 by 128", r == 1 ? "-" : trime_trained, mb[0], mb[r]);
            }
            printf("kNN keys: the row's own model over its %lu training tokens, IVF 1024 lists, nprobe 32, "
                   "k 128; lambda and temperature chosen on valid; TRIME's similarity %s (temperature 1)%s; "
                   "the long memory holds the %d tokens before each window, keyed as they were scored; the last "
                   "row uses the lambda and temperature of the row before\n\n",
                   (unsigned long)n_train, trime_sim == RETRLM_TRIME_DOT ? "q . k / 16 (dot, TRIME's)"
                                                                         : "-|q - k|^2 / 16 (L2)",
                   trime_warmup ? "; TRIME rows: the LM alone's first steps, then the TRIME loss" : "", CACHE);
            for (i = 0; i < MROWS; i++)
                if (have[r = order[i]])
                    for (b = 0; b < nb_b; b++)
                        printf("%s.%s.bpb_%s=%.4f\n", corpus, mkey[r], bucket_key[b], mb[r][b]);
        }
        for (r = 0; r < 5; r++)
            if (row_on[r])
            for (b = 0; b < nb_b; b++)
                printf("%s.%s.bpb_%s=%.4f\n", corpus, key[r], bucket_key[b], bpb[r][b]);
        for (r = 0; r < 2; r++)
            if (row_on[r + 1]) printf("%s.%s.min_overlap=%g\n", corpus, key[r + 3], (double)tau[r]);
        printf("%s.lm.copy_first=%.4f\n%s.lm.copy_second=%.4f\n", corpus, copy[0], corpus, copy[1]);
        if (tok_s[0] > 0 && tok_s[1] > 0)
            printf("%s.lm.train_tok_s=%.0f\n%s.retro.train_tok_s=%.0f\n", corpus, tok_s[0], corpus,
                   tok_s[1]);
        if (speed_fig[0] > 0 && speed_fig[1] > 0)
            printf("%s.speed.lm_step_s=%.4f\n%s.speed.retro_step_s=%.4f\n%s.speed.retro_step_ratio=%.3f\n"
                   "%s.speed.lm_gen_tok_s=%.1f\n%s.speed.retro_gen_tok_s=%.1f\n", corpus, speed_fig[0], corpus,
                   speed_fig[1], corpus, speed_fig[1] / speed_fig[0], corpus, speed_fig[2], corpus, speed_fig[3]);
    }
    // the summary: every row beside the LM alone read in its windows
    {
        const int nb_b = kjv ? 1 : BUCKETS;
        int i;
        char sg;
        printf("\n%s test, every strategy (bits per byte; each row's change against the LM alone read in the same "
               "windows; lower is better)\n| strategy | row | trained after the LM alone | windows | LM alone there |",
               corpus);
        for (b = 0; b < nb_b; b++) printf(" %s |", bucket_name[b]);
        printf("\n|---|---|---|---|---|");
        for (b = 0; b < nb_b; b++) printf("---|");
        printf("\n");
        for (sg = '0'; sg <= '4'; sg++)
            for (i = 0; i < n_sum_rows; i++) {
                const sum_row *r = &sum_rows[i];
                if (r->strategy != sg) continue;
                printf("| %c | %s | %s | %s | %.4f |", sg == '0' ? ' ' : sg, r->name, r->trained, r->windows, r->ref[0]);
                for (b = 0; b < nb_b; b++)
                    if (sg == '0') printf(" %.4f |", r->bpb[b]);
                    else printf(" %.4f (%+.1f%%) |", r->bpb[b], 100.0 * (r->bpb[b] / r->ref[b] - 1.0));
                printf("\n");
            }
        printf("windows: 256, apart: test cut into windows of 256 tokens that do not overlap; 256 by 128: windows of 256 "
               "moving by 128, the last 128 scored; 128 + unit 64, by 64: a unit and its continuation (64 tokens) before "
               "128 tokens of the text, the last 64 scored, moving by 64\n");
    }
    retrlm_knnlm_free(&kn[0]);
    retrlm_knnlm_free(&kn[1]);
    retrlm_model_free(&tm[0]);
    retrlm_model_free(&tm[1]);
    retrlm_model_free(&tm[2]);
    retrlm_model_free(&fm);
    retrlm_model_free(&rm);
    retrlm_model_free(&lm);
    for (b = 0; b < (kjv ? 1 : BUCKETS); b++) {
        retrlm_retro_neighbours_free(&st[b].nb);
        free(st[b].ids);
    }
    free(vids);
    free(vdoc);
    free(va.text);
    free(va.doc_off);
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
