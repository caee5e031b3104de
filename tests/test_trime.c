// TRIME training (strategy 4): the trainer's first loss is retrlm_trime_loss on a batch built
// here from the same forward, and a reference in double; with an empty memory it is the plain
// LM loss, and its warm-up is retrlm_lm_train; the gradient of a whole step against finite
// differences (both similarities, the three batchings); 1 vs 2 threads; checkpoint and resume;
// bad input; BM25 grouping of segments; models that learn to copy spans from their in-batch
// memory (long and ext batching) where the plain LM cannot.
#include "retrlm.h"
#include "test.h"
#include "gradcheck.h"
#include "files.h"
#include <string.h>

static void small_config(retrlm_model_config *c, int V, int D, int T, int B) {
    memset(c, 0, sizeof *c);
    c->vocab_size = V; c->dim = D; c->n_layers = 2; c->n_heads = 2; c->max_seq_len = T;
    c->max_batch = B; c->seed = 5;
}

static void make_opt(retrlm_adamw *o, retrlm_model *m, float lr) {
    retrlm_adamw_group g[2];
    int n = retrlm_model_param_groups(m, lr, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(o, NULL, g, n));
}

// whether position i sees memory position j, written from the definition: LOCAL the same
// segment and earlier; LONG anything earlier in the batch's reading order; EXT the other
// segments and, unless no_local, the earlier positions of its own
static int visible(const retrlm_trime_params *p, int i, int j, int T) {
    if (p->batching == RETRLM_TRIME_EXT) return j / T != i / T || (!p->no_local && j < i);
    return p->batching == RETRLM_TRIME_LONG ? j < i : (j / T == i / T && j < i);
}

static double sim_of(const float *a, const float *b, int D, int sim, double temp) {
    double s = 0.0;
    int d;
    for (d = 0; d < D; d++)
        s += sim == RETRLM_TRIME_L2 ? ((double)a[d] - b[d]) * ((double)a[d] - b[d]) : (double)a[d] * b[d];
    return (sim == RETRLM_TRIME_L2 ? -s : s) / (sqrt((double)D) * temp);
}

// TRIME's mean loss in double from the last forward of m: every position with a target is a
// memory entry labelled with it
// the sum of -log p over the positions i with i % T >= first and tgt[i] >= 0 (every entry with
// a target in the memory), *cnt how many
static double ref_sum(const retrlm_model *m, const int *tgt, const retrlm_trime_params *p, int first, int *count) {
    const int V = m->config.vocab_size, D = m->config.dim, N = m->B * m->T, T = m->T;
    const float *K = retrlm_model_ffn_input(m, m->config.n_layers - 1);
    const double temp = p->temperature > 0.0f ? p->temperature : 1.0;
    double total = 0.0;
    int i, j, v, cnt = 0;
    for (i = 0; i < N; i++) {
        const float *z = m->logits + (size_t)i * V;
        double zs = 0.0, ns = 0.0;
        if (tgt[i] < 0 || i % T < first) continue;
        for (v = 0; v < V; v++) zs += exp(z[v]);
        ns = exp(z[tgt[i]]);
        for (j = 0; j < N; j++) {
            double e;
            if (tgt[j] < 0 || !visible(p, i, j, T)) continue;
            e = exp(sim_of(K + (size_t)i * D, K + (size_t)j * D, D, p->sim, temp));
            zs += e;
            if (tgt[j] == tgt[i]) ns += e;
        }
        total += log(zs) - log(ns);
        cnt++;
    }
    *count = cnt;
    return total;
}

static double ref_loss(const retrlm_model *m, const int *tgt, const retrlm_trime_params *p) {
    int cnt;
    const double total = ref_sum(m, tgt, p, 0, &cnt);
    return total / cnt;
}

// the trainer's batch of the step drawn from rng (documented in train.h); EXT also draws
// p->no_local
static void draw_batch(retrlm_rng *rng, const int *s, size_t n, int B, int T,
                       retrlm_trime_params *p, const int64_t *batches, int64_t n_batches,
                       float cross_sent_ratio, int *inp, int *tgt) {
    int b, i;
    if (p->batching == RETRLM_TRIME_EXT) {
        const int64_t *g = batches + retrlm_rng_below(rng, (uint64_t)n_batches) * (uint64_t)B;
        for (b = 0; b < B; b++)
            for (i = 0; i < T; i++) {
                inp[b * T + i] = s[g[b] + i];
                tgt[b * T + i] = s[g[b] + i + 1];
            }
        p->no_local = retrlm_rng_float(rng) < cross_sent_ratio;
        return;
    }
    if (p->batching == RETRLM_TRIME_LONG) {
        size_t off = (size_t)retrlm_rng_below(rng, (uint64_t)(n - (size_t)B * T));
        for (i = 0; i < B * T; i++) {
            inp[i] = s[off + (size_t)i];
            tgt[i] = s[off + (size_t)i + 1];
        }
        return;
    }
    for (b = 0; b < B; b++) {
        size_t off = (size_t)retrlm_rng_below(rng, (uint64_t)(n - (size_t)T));
        for (i = 0; i < T; i++) {
            inp[b * T + i] = s[off + (size_t)i];
            tgt[b * T + i] = s[off + (size_t)i + 1];
        }
    }
}

static int *random_stream(size_t n, int V, uint64_t seed) {
    retrlm_rng rng;
    int *s = (int *)malloc(n * sizeof(int));
    size_t i;
    retrlm_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) s[i] = (int)retrlm_rng_below(&rng, (uint64_t)V);
    return s;
}

// one step of the trainer from a fresh model: its loss against retrlm_trime_loss on the same
// batch (keys, labels and masks built here) and against ref_loss
static void first_step_case(int batching, int sim, float temp, float cross_sent_ratio) {
    enum { V = 11, D = 8, T = 6, B = 3, N = B * T };
    retrlm_model_config cfg;
    retrlm_model m, ref;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_trime_train_config tc;
    retrlm_rng rng;
    const int64_t batches[2 * B] = {0, 50, 100, 7, 193, 30}; // EXT: two groups of 3 segments
    int *s = random_stream(200, V, 17), inp[N], tgt[N], i, j, cnt = 0;
    float loss0 = -1.0f, hand = -2.0f, *sims = (float *)malloc(N * N * sizeof(float));
    small_config(&cfg, V, D, T, B);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_model_init(&ref, &cfg));
    make_opt(&o, &m, 1e-3f);
    retrlm_lm_train_state_init(&st, 99);
    rng = st.rng;
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 200; tc.steps = 1; tc.losses = &loss0;
    tc.trime.batching = batching; tc.trime.sim = sim; tc.trime.temperature = temp;
    tc.batches = batches; tc.n_batches = 2; tc.cross_sent_ratio = cross_sent_ratio;
    CHECK_OK(retrlm_trime_train(&m, &o, &tc, &st));
    CHECK(st.step == 1 && st.last_loss == loss0);
    // the same batch through the untrained copy; memory = every position, labelled by its target
    draw_batch(&rng, s, 200, B, T, &tc.trime, batches, 2, cross_sent_ratio, inp, tgt);
    CHECK_OK(retrlm_model_forward(&ref, inp, B, T, NULL, 0));
    {
        const float *K = retrlm_model_ffn_input(&ref, 1);
        double rl = ref_loss(&ref, tgt, &tc.trime);
        for (i = 0; i < N; i++)
            for (j = 0; j < N; j++)
                sims[i * N + j] = visible(&tc.trime, i, j, T)
                                      ? (float)sim_of(K + i * D, K + j * D, D, sim, temp > 0 ? temp : 1.0)
                                      : -INFINITY;
        CHECK_OK(retrlm_trime_loss(ref.logits, N, V, sims, N, tgt, tgt, &hand, NULL, NULL, &cnt));
        CHECK(cnt == N);
        CHECK_NEAR(loss0, hand, 2e-5);
        CHECK_NEAR(loss0, rl, 2e-5);
        printf("first step (batching %d, sim %d, temperature %g, no_local %d): trainer %.6f, "
               "trime_loss by hand %.6f, double reference %.6f\n", batching, sim, (double)temp,
               tc.trime.no_local, (double)loss0, (double)hand, rl);
    }
    free(sims);
    free(s);
    retrlm_adamw_free(&o);
    retrlm_model_free(&ref);
    retrlm_model_free(&m);
}

static void test_trime_first_step(void) {
    first_step_case(RETRLM_TRIME_LOCAL, RETRLM_TRIME_DOT, 0.0f, 0.0f);
    first_step_case(RETRLM_TRIME_LONG, RETRLM_TRIME_DOT, 0.0f, 0.0f);
    first_step_case(RETRLM_TRIME_LONG, RETRLM_TRIME_L2, 0.7f, 0.0f);
    first_step_case(RETRLM_TRIME_EXT, RETRLM_TRIME_DOT, 0.0f, 0.0f);
    first_step_case(RETRLM_TRIME_EXT, RETRLM_TRIME_DOT, 0.0f, 1.0f);
}

// segments of one token have no memory: the loss is plain cross-entropy; the warm-up is
// retrlm_lm_train, loss for loss and weight for weight
static void test_trime_empty_memory_and_warmup(void) {
    enum { V = 11, D = 8, T = 6, B = 3 };
    retrlm_model_config cfg;
    retrlm_model m, ref;
    retrlm_adamw o, ro;
    retrlm_lm_train_state st, rst;
    retrlm_trime_train_config tc;
    retrlm_lm_train_config lc;
    retrlm_rng rng;
    int *s = random_stream(200, V, 23), inp[B], tgt[B];
    float loss0 = -1.0f, plain = -2.0f, tl[3], ll[3];
    small_config(&cfg, V, D, T, B);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_model_init(&ref, &cfg));
    make_opt(&o, &m, 1e-3f);
    retrlm_lm_train_state_init(&st, 4);
    rng = st.rng;
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 200; tc.seq_len = 1; tc.steps = 1; tc.losses = &loss0;
    CHECK_OK(retrlm_trime_train(&m, &o, &tc, &st));
    draw_batch(&rng, s, 200, B, 1, &tc.trime, NULL, 0, 0.0f, inp, tgt);
    CHECK_OK(retrlm_model_forward(&ref, inp, B, 1, NULL, 0));
    CHECK_OK(retrlm_model_lm_loss(&ref, tgt, &plain, NULL));
    CHECK_NEAR(loss0, plain, 1e-5);
    printf("empty memory: trime %.7f, lm %.7f\n", (double)loss0, (double)plain);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    retrlm_model_free(&ref);
    // warm-up: 3 steps of cross-entropy, against retrlm_lm_train from the same seeds
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_model_init(&ref, &cfg));
    make_opt(&o, &m, 1e-2f);
    make_opt(&ro, &ref, 1e-2f);
    retrlm_lm_train_state_init(&st, 8);
    retrlm_lm_train_state_init(&rst, 8);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 200; tc.steps = 3; tc.warmup_steps = 3; tc.losses = tl;
    memset(&lc, 0, sizeof lc);
    lc.train = s; lc.n_train = 200; lc.steps = 3; lc.losses = ll;
    CHECK_OK(retrlm_trime_train(&m, &o, &tc, &st));
    CHECK_OK(retrlm_lm_train(&ref, &ro, &lc, &rst));
    CHECK(memcmp(tl, ll, sizeof tl) == 0);
    CHECK(memcmp(m.params, ref.params, m.n_params * sizeof(float)) == 0);
    // after the warm-up, TRIME's loss (local memory) differs
    tc.steps = 4; tc.losses = NULL;
    lc.steps = 4; lc.losses = NULL;
    CHECK_OK(retrlm_trime_train(&m, &o, &tc, &st));
    CHECK_OK(retrlm_lm_train(&ref, &ro, &lc, &rst));
    CHECK(st.last_loss != rst.last_loss);
    retrlm_adamw_free(&o);
    retrlm_adamw_free(&ro);
    retrlm_model_free(&m);
    retrlm_model_free(&ref);
    free(s);
}

typedef struct step_ctx {
    retrlm_model *m;
    const int *inp, *tgt;
    const retrlm_trime_params *p;
    int B, T;
} step_ctx;

static double step_loss(void *q) {
    step_ctx *c = (step_ctx *)q;
    retrlm_model_forward(c->m, c->inp, c->B, c->T, NULL, 0);
    return ref_loss(c->m, c->tgt, c->p);
}

// the gradient of a whole TRIME step (forward, loss, backward through logits and keys) against
// central differences of the double reference, over every parameter
static void grad_case(int batching, int sim, float temp, int no_local) {
    enum { V = 7, T = 4, B = 2, N = B * T };
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_model_grad_in gin;
    retrlm_trime_params p;
    retrlm_rng rng;
    step_ctx c;
    const float *dffn[2];
    float dk[N * 4], loss = 0.0f, *g;
    int inp[N], tgt[N], i;
    double worst;
    small_config(&cfg, V, 4, T, B);
    cfg.ffn_dim = 6; cfg.init_std = 0.5f;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    retrlm_rng_seed(&rng, 31);
    for (i = (int)m.n_decay; i < (int)m.n_params; i++) m.params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    // few labels, so that memory entries share them with the targets
    for (i = 0; i < N; i++) {
        inp[i] = (int)retrlm_rng_below(&rng, 3);
        tgt[i] = (int)retrlm_rng_below(&rng, 3);
    }
    tgt[5] = -1; // neither scored nor in the memory
    p.batching = batching; p.sim = sim; p.temperature = temp; p.no_local = no_local;
    c.m = &m; c.inp = inp; c.tgt = tgt; c.p = &p; c.B = B; c.T = T;
    CHECK_OK(retrlm_model_forward(&m, inp, B, T, NULL, 0));
    {
        double rl = ref_loss(&m, tgt, &p); // before the logits become their gradient
        CHECK_OK(retrlm_model_trime_loss(&m, &p, tgt, NULL, &loss, dk, NULL));
        CHECK_NEAR(loss, rl, 1e-5);
    }
    memset(&gin, 0, sizeof gin);
    dffn[0] = NULL;
    dffn[1] = dk;
    gin.dlogits = m.logits;
    gin.dffn_in = dffn;
    retrlm_model_zero_grad(&m);
    CHECK_OK(retrlm_model_backward(&m, &gin));
    CHECK(dotd(dk, dk, N * 4) > 1e-10); // the memory matters
    g = (float *)malloc(m.n_params * sizeof(float));
    memcpy(g, m.grads, m.n_params * sizeof(float));
    worst = grad_check(step_loss, &c, m.params, g, (int)m.n_params, 1e-2f);
    printf("gradient (batching %d, sim %d, temperature %g, no_local %d): %d parameters, worst "
           "scaled error %.4f\n", batching, sim, (double)temp, no_local, (int)m.n_params, worst);
    CHECK(worst < 0.1);
    free(g);
    retrlm_model_free(&m);
}

static void test_trime_grads(void) {
    grad_case(RETRLM_TRIME_LOCAL, RETRLM_TRIME_DOT, 0.0f, 0);
    grad_case(RETRLM_TRIME_LONG, RETRLM_TRIME_DOT, 0.0f, 0);
    grad_case(RETRLM_TRIME_LONG, RETRLM_TRIME_L2, 1.5f, 0);
    grad_case(RETRLM_TRIME_EXT, RETRLM_TRIME_DOT, 0.0f, 0);
    grad_case(RETRLM_TRIME_EXT, RETRLM_TRIME_L2, 0.0f, 1);
}

// a model big enough that the parallel paths split: 1 and 2 threads give the same bits (long
// batching, and ext with its BM25 grouping built at each thread count)
static void threads_case(int batching) {
    enum { V = 50, T = 32, B = 4 };
    retrlm_model_config cfg;
    retrlm_model m[2];
    retrlm_adamw o[2];
    retrlm_lm_train_state st[2];
    retrlm_trime_train_config tc;
    int *s = random_stream(2000, V, 41), i;
    int64_t groups[2][60], nb = 0;
    float loss[2][3];
    small_config(&cfg, V, 64, T, B);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 2000; tc.steps = 3; tc.warmup_steps = 1;
    tc.trime.batching = batching;
    tc.cross_sent_ratio = 0.5f;
    for (i = 0; i < 2; i++) {
        set_threads(i + 1);
        CHECK_OK(retrlm_trime_bm25_batches(NULL, s, 2000, T, B, NULL, groups[i], &nb));
        tc.batches = groups[i]; tc.n_batches = nb;
        CHECK_OK(retrlm_model_init(&m[i], &cfg));
        if (!m[i].params) return;
        make_opt(&o[i], &m[i], 1e-3f);
        retrlm_lm_train_state_init(&st[i], 6);
        tc.losses = loss[i];
        CHECK_OK(retrlm_trime_train(&m[i], &o[i], &tc, &st[i]));
    }
    set_threads(2);
    CHECK(nb == 15 && memcmp(groups[0], groups[1], (size_t)nb * B * sizeof(int64_t)) == 0);
    CHECK(memcmp(loss[0], loss[1], sizeof loss[0]) == 0);
    CHECK(memcmp(m[0].params, m[1].params, m[0].n_params * sizeof(float)) == 0);
    for (i = 0; i < 2; i++) {
        retrlm_adamw_free(&o[i]);
        retrlm_model_free(&m[i]);
    }
    free(s);
}

static void test_trime_threads(void) {
    threads_case(RETRLM_TRIME_LONG);
    threads_case(RETRLM_TRIME_EXT);
}

// a run stopped at step 2 and resumed from its checkpoint ends as the run that never stopped
static void test_trime_resume(void) {
    enum { V = 13, T = 8, B = 3 };
    const char *path = "build/tests/test_trime.rlm";
    retrlm_model_config cfg;
    retrlm_model a, b, r;
    retrlm_adamw oa, ob, orr;
    retrlm_lm_train_state sa, sb, sr;
    retrlm_trime_train_config tc;
    int *s = random_stream(400, V, 43);
    float la[5], lb[5];
    small_config(&cfg, V, 16, T, B);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 400; tc.warmup_steps = 1;
    tc.trime.batching = RETRLM_TRIME_LONG;
    CHECK_OK(retrlm_model_init(&a, &cfg));
    CHECK_OK(retrlm_model_init(&b, &cfg));
    make_opt(&oa, &a, 1e-3f);
    make_opt(&ob, &b, 1e-3f);
    retrlm_lm_train_state_init(&sa, 12);
    retrlm_lm_train_state_init(&sb, 12);
    // a: 5 steps in one go; b: 2 steps with a checkpoint, then r resumes from the file
    tc.steps = 5; tc.losses = la;
    CHECK_OK(retrlm_trime_train(&a, &oa, &tc, &sa));
    tc.steps = 2; tc.losses = lb; tc.checkpoint = path;
    CHECK_OK(retrlm_trime_train(&b, &ob, &tc, &sb));
    CHECK_OK(retrlm_model_load(&r, path, NULL));
    if (r.params) {
        make_opt(&orr, &r, 1e-3f);
        CHECK_OK(retrlm_model_load_state(&orr, &sr, path));
        CHECK(sr.step == 2);
        tc.steps = 5; tc.checkpoint = NULL;
        CHECK_OK(retrlm_trime_train(&r, &orr, &tc, &sr));
        CHECK(sr.step == 5);
        CHECK(memcmp(la, lb, sizeof la) == 0);
        CHECK(memcmp(a.params, r.params, a.n_params * sizeof(float)) == 0);
        retrlm_adamw_free(&orr);
        retrlm_model_free(&r);
    }
    remove(path);
    retrlm_adamw_free(&oa);
    retrlm_adamw_free(&ob);
    retrlm_model_free(&a);
    retrlm_model_free(&b);
    free(s);
}

static int has(const char *what) { return strstr(retrlm_last_error(), what) != NULL; }

static void test_trime_bad_input(void) {
    enum { V = 11, T = 6, B = 3 };
    retrlm_model_config cfg;
    retrlm_model m, enc;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_trime_train_config tc, bad;
    retrlm_trime_params p;
    int *s = random_stream(200, V, 3), tok[T], tgt[T], i;
    small_config(&cfg, V, 8, T, B);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    make_opt(&o, &m, 1e-3f);
    retrlm_lm_train_state_init(&st, 1);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = 200; tc.steps = 1;
    bad = tc; bad.batch = B + 1;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("batch 4"));
    bad = tc; bad.seq_len = T + 1;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("seq_len 7"));
    bad = tc; bad.trime.batching = 3;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("batching 3"));
    bad = tc; bad.trime.sim = 3;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("similarity 3"));
    bad = tc; bad.trime.temperature = -1.0f;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("temperature"));
    bad = tc; bad.trime.temperature = (float)NAN;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("temperature"));
    bad = tc; bad.warmup_steps = -1;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("warmup -1"));
    // a long batch needs batch * seq_len + 1 tokens; a local one seq_len + 2
    bad = tc; bad.n_train = B * T; bad.trime.batching = RETRLM_TRIME_LONG;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("need 19"));
    bad.n_train = B * T + 1;
    CHECK_OK(retrlm_trime_train(&m, &o, &bad, &st));
    bad = tc; bad.n_train = T + 1;
    CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("need 8"));
    s[150] = V;
    CHECK(retrlm_trime_train(&m, &o, &tc, &st) == RETRLM_ERR_ARG && has("token 11 at 150"));
    s[150] = -1;
    CHECK(retrlm_trime_train(&m, &o, &tc, &st) == RETRLM_ERR_ARG && has("token -1 at 150"));
    s[150] = 0;
    CHECK(st.step == 1); // only the good long run trained
    // ext: batches needed, inside the stream, and a ratio in [0, 1]
    {
        const int64_t groups[B] = {0, 10, 194};
        int64_t nb = -1;
        bad = tc; bad.trime.batching = RETRLM_TRIME_EXT;
        CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("needs batches"));
        bad.batches = groups; bad.n_batches = 1; bad.cross_sent_ratio = 1.5f;
        CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG && has("cross_sent_ratio"));
        bad.cross_sent_ratio = 0.5f;
        CHECK(retrlm_trime_train(&m, &o, &bad, &st) == RETRLM_ERR_ARG &&
              has("segment 2 starts at 194"));
        CHECK(retrlm_trime_bm25_batches(NULL, s, 3 * T, T, B, NULL, NULL, &nb) == RETRLM_ERR_ARG &&
              has("2 segments"));
        CHECK_OK(retrlm_trime_bm25_batches(NULL, s, 3 * T + 1, T, B, NULL, NULL, &nb));
        CHECK(nb == 1);
        CHECK(retrlm_trime_bm25_batches(NULL, s, 200, 0, B, NULL, NULL, &nb) == RETRLM_ERR_ARG);
    }
    // the loss alone: labels or targets outside the vocabulary, bad params
    for (i = 0; i < T; i++) tok[i] = tgt[i] = i;
    CHECK_OK(retrlm_model_forward(&m, tok, 1, T, NULL, 0));
    memset(&p, 0, sizeof p);
    tgt[2] = V;
    CHECK(retrlm_model_trime_loss(&m, &p, tgt, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG &&
          has("target 11"));
    tgt[2] = 2;
    tok[3] = V + 4;
    CHECK(retrlm_model_trime_loss(&m, &p, tgt, tok, NULL, NULL, NULL) == RETRLM_ERR_ARG &&
          has("label 15"));
    p.batching = -1;
    CHECK(retrlm_model_trime_loss(&m, &p, tgt, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG &&
          has("batching -1"));
    // an encoder has no logits
    cfg.bidirectional = 1;
    CHECK_OK(retrlm_model_init(&enc, &cfg));
    CHECK(retrlm_trime_train(&enc, &o, &tc, &st) == RETRLM_ERR_ARG && has("causal LM"));
    retrlm_model_free(&enc);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    free(s);
}

// blocks of a random span of T tokens followed by the same span again
static int *copy_stream(int n_blocks, int T, int V, uint64_t seed) {
    retrlm_rng rng;
    int *s = (int *)malloc((size_t)n_blocks * 2 * T * sizeof(int)), b, t;
    retrlm_rng_seed(&rng, seed);
    for (b = 0; b < n_blocks; b++)
        for (t = 0; t < T; t++)
            s[(b * 2 + 1) * T + t] = s[b * 2 * T + t] = (int)retrlm_rng_below(&rng, (uint64_t)V);
    return s;
}

// Learning check: random spans each repeated once, read as long batches of consecutive
// segments, so that each repeat sits one segment after its original. The plain LM never sees
// the original inside its window and stays near ln V on the repeats; TRIME with the long
// memory learns to find the original in the memory and copy its next token.
static void test_trime_learns_to_copy(void) {
    enum { V = 32, T = 16, B = 4, BLOCKS = 200, STEPS = 300, EVAL = 8 };
    retrlm_model_config cfg;
    retrlm_model tm, lm;
    retrlm_adamw to, lo;
    retrlm_lm_train_state ts, ls;
    retrlm_trime_train_config tc;
    retrlm_lm_train_config lc;
    retrlm_adamw_config ac;
    retrlm_adamw_group g[2];
    int *s = copy_stream(BLOCKS, T, V, 51), *h = copy_stream(EVAL * B / 2, T, V, 52);
    int inp[B * T], scored[B * T], labels[B * T], e, i, n;
    double trime_mem = 0.0, trime_plain = 0.0, lm_plain = 0.0;
    float x;
    small_config(&cfg, V, 32, T, B);
    memset(&ac, 0, sizeof ac);
    ac.warmup_steps = 20;
    CHECK_OK(retrlm_model_init(&tm, &cfg));
    CHECK_OK(retrlm_model_init(&lm, &cfg));
    n = retrlm_model_param_groups(&tm, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&to, &ac, g, n));
    n = retrlm_model_param_groups(&lm, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&lo, &ac, g, n));
    retrlm_lm_train_state_init(&ts, 61);
    retrlm_lm_train_state_init(&ls, 61);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = (size_t)BLOCKS * 2 * T; tc.steps = STEPS;
    tc.trime.batching = RETRLM_TRIME_LONG;
    memset(&lc, 0, sizeof lc);
    lc.train = s; lc.n_train = (size_t)BLOCKS * 2 * T; lc.steps = STEPS;
    CHECK_OK(retrlm_trime_train(&tm, &to, &tc, &ts));
    CHECK_OK(retrlm_lm_train(&lm, &lo, &lc, &ls));
    // held-out batches [x, x, y, y]: the repeats' positions 0 .. T-2 are scored (the last one
    // predicts the next span's first token)
    for (e = 0; e < EVAL; e++) {
        const int *w = h + (size_t)e * B * T;
        for (i = 0; i < B * T; i++) {
            inp[i] = w[i];
            labels[i] = i + 1 < B * T ? w[i + 1] : -1;
            scored[i] = (i / T) % 2 == 1 && i % T < T - 1 ? labels[i] : -1;
        }
        CHECK_OK(retrlm_model_forward(&tm, inp, B, T, NULL, 0));
        CHECK_OK(retrlm_model_trime_loss(&tm, &tc.trime, scored, labels, &x, NULL, NULL));
        trime_mem += x / EVAL;
        CHECK_OK(retrlm_model_forward(&tm, inp, B, T, NULL, 0));
        CHECK_OK(retrlm_model_lm_loss(&tm, scored, &x, NULL));
        trime_plain += x / EVAL;
        CHECK_OK(retrlm_model_forward(&lm, inp, B, T, NULL, 0));
        CHECK_OK(retrlm_model_lm_loss(&lm, scored, &x, NULL));
        lm_plain += x / EVAL;
    }
    printf("copy check after %d steps (held-out repeats, nats a token; ln V = %.3f): TRIME with its "
           "long memory %.3f, the same model without memory %.3f, the plain LM %.3f; last train "
           "losses TRIME %.3f, LM %.3f\n", STEPS, log((double)V), trime_mem, trime_plain, lm_plain,
           (double)ts.last_loss, (double)ls.last_loss);
    CHECK(lm_plain > 0.8 * log((double)V));
    CHECK(trime_mem < 0.3 * lm_plain);
    retrlm_adamw_free(&to);
    retrlm_adamw_free(&lo);
    retrlm_model_free(&tm);
    retrlm_model_free(&lm);
    free(s);
    free(h);
}

// BM25 grouping: segments of 4 interleaved topics (disjoint vocabularies) come back grouped
// by topic
static void test_trime_bm25_batches(void) {
    enum { V = 80, T = 8, S = 12, B = 3 };
    retrlm_rng rng;
    int s[S * T + 1], i, j, b;
    int64_t off[S], nb = 0;
    retrlm_rng_seed(&rng, 71);
    for (i = 0; i < S * T + 1; i++) s[i] = (i / T % 4) * 20 + (int)retrlm_rng_below(&rng, 20);
    CHECK_OK(retrlm_trime_bm25_batches(NULL, s, S * T + 1, T, B, NULL, off, &nb));
    CHECK(nb == S / B);
    for (b = 0; b < nb; b++) {
        printf("bm25 batch %d: segments", b);
        for (j = 0; j < B; j++) {
            printf(" %d", (int)(off[b * B + j] / T));
            CHECK(off[b * B + j] % T == 0);
            CHECK(off[b * B + j] / T % 4 == off[b * B] / T % 4); // one topic a batch
        }
        printf("\n");
    }
    CHECK(off[0] == 0 && off[1] == 4 * T); // the first segment opens the first group
}

// TrimeLM_ext end to end: the stream is spans each followed by its copy, segments are the
// spans; BM25 puts each span in a batch with its copy, and the model learns to copy from the
// other segments of its batch (local memory dropped at 90% of the steps, as TRIME does). The
// held-out batches are [x, x, y, y], scored on the second of each pair.
static void test_trime_ext_learns_to_copy(void) {
    enum { V = 32, T = 16, B = 4, BLOCKS = 200, STEPS = 300, EVAL = 8 };
    retrlm_model_config cfg;
    retrlm_model tm;
    retrlm_adamw to;
    retrlm_lm_train_state ts;
    retrlm_trime_train_config tc;
    retrlm_adamw_config ac;
    retrlm_adamw_group g[2];
    int *s = copy_stream(BLOCKS, T, V, 53), *h = copy_stream(EVAL * B / 2, T, V, 54);
    int inp[B * T], scored[B * T], labels[B * T], e, i, n, paired = 0;
    int64_t *groups = (int64_t *)malloc(2 * BLOCKS * sizeof(int64_t)), nb = 0;
    double mem = 0.0, plain = 0.0;
    float x;
    CHECK_OK(retrlm_trime_bm25_batches(NULL, s, (size_t)BLOCKS * 2 * T, T, B, NULL, groups, &nb));
    CHECK(nb == (2 * BLOCKS - 1) / B);
    // how many segments share their batch with their copy (segments 2k and 2k + 1)
    for (e = 0; e < nb * B; e++)
        for (i = (e / B) * B; i < (e / B + 1) * B; i++)
            paired += groups[i] / T == (groups[e] / T ^ 1);
    small_config(&cfg, V, 32, T, B);
    memset(&ac, 0, sizeof ac);
    ac.warmup_steps = 20;
    CHECK_OK(retrlm_model_init(&tm, &cfg));
    n = retrlm_model_param_groups(&tm, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&to, &ac, g, n));
    retrlm_lm_train_state_init(&ts, 62);
    memset(&tc, 0, sizeof tc);
    tc.train = s; tc.n_train = (size_t)BLOCKS * 2 * T; tc.steps = STEPS;
    tc.trime.batching = RETRLM_TRIME_EXT;
    tc.batches = groups; tc.n_batches = nb; tc.cross_sent_ratio = 0.9f;
    CHECK_OK(retrlm_trime_train(&tm, &to, &tc, &ts));
    tc.trime.no_local = 0;
    for (e = 0; e < EVAL; e++) {
        const int *w = h + (size_t)e * B * T;
        for (i = 0; i < B * T; i++) {
            inp[i] = w[i];
            labels[i] = i + 1 < B * T ? w[i + 1] : -1;
            scored[i] = (i / T) % 2 == 1 && i % T < T - 1 ? labels[i] : -1;
        }
        CHECK_OK(retrlm_model_forward(&tm, inp, B, T, NULL, 0));
        CHECK_OK(retrlm_model_trime_loss(&tm, &tc.trime, scored, labels, &x, NULL, NULL));
        mem += x / EVAL;
        CHECK_OK(retrlm_model_forward(&tm, inp, B, T, NULL, 0));
        CHECK_OK(retrlm_model_lm_loss(&tm, scored, &x, NULL));
        plain += x / EVAL;
    }
    printf("ext copy check: %d of %d segments batched with their copy; after %d steps, held-out "
           "repeats %.3f nats with the batch memory, %.3f without (ln V = %.3f)\n", paired,
           (int)(nb * B), STEPS, mem, plain, log((double)V));
    CHECK(paired >= (int)(nb * B) * 9 / 10);
    CHECK(plain > 0.8 * log((double)V));
    CHECK(mem < 0.3 * plain);
    retrlm_adamw_free(&to);
    retrlm_model_free(&tm);
    free(groups);
    free(s);
    free(h);
}

// Inference with the local memory (retrlm_ralm_config.trime): scoring a stream that fits one
// window gives each token the probability TRIME's training loss gives it with local batching
// (the double reference above), for both similarities; bad params are refused.
static void test_trime_inference_local(void) {
    enum { V = 32, D = 16, T = 16, N = 12 };
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_ralm_config rc;
    retrlm_trime_params p;
    int *s = random_stream(N, V, 71), tgt[N - 1], sim, i;
    float nats[N];
    double bpb, sum, ref;
    small_config(&cfg, V, D, T, 2);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    for (sim = RETRLM_TRIME_DOT; sim <= RETRLM_TRIME_L2; sim++) {
        memset(&p, 0, sizeof p);
        p.sim = sim;
        p.temperature = sim == RETRLM_TRIME_L2 ? 0.7f : 0.0f;
        memset(&rc, 0, sizeof rc);
        rc.mode = RETRLM_RALM_NONE;
        rc.stride = N - 1; // one block: the whole stream is one sequence, tokens 1 .. N-1 predicted
        rc.context_tokens = T - rc.stride;
        rc.trime = &p;
        CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, nats));
        for (sum = 0.0, i = 1; i < N; i++) sum += nats[i];
        for (i = 0; i < N - 1; i++) tgt[i] = s[i + 1];
        CHECK_OK(retrlm_model_forward(&m, s, 1, N - 1, NULL, 0));
        ref = ref_loss(&m, tgt, &p) * (N - 1);
        printf("  local memory at inference, %s: %.6f nats, training's loss %.6f\n",
               sim == RETRLM_TRIME_L2 ? "L2" : "dot", sum, ref);
        CHECK(fabs(sum - ref) < 1e-4 * fabs(ref));
        CHECK(fabs(bpb - (sum + log((double)V)) / log(2.0) / 100.0) < 1e-6);
        // the memory changes the figure: without it the vocabulary alone
        rc.trime = NULL;
        CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, nats));
        for (ref = 0.0, i = 1; i < N; i++) ref += nats[i];
        CHECK(fabs(ref - sum) > 1e-3);
    }
    p.sim = 7;
    rc.trime = &p;
    CHECK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, NULL) == RETRLM_ERR_ARG);
    retrlm_model_free(&m);
    free(s);
}

// A stream of several windows (stride S, C tokens of context before each), read with the local
// memory and no cache: each window's scored tokens get what training's local loss gives them
// on that window alone, whose memory is every earlier position of the window, its context
// included. (The memory of a window with context once lost its first positions: ctx of them.)
static void test_trime_inference_windows(void) {
    enum { V = 32, D = 16, T = 16, S = 6, C = T - S, N = 5 * S + 1 };
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_ralm_config rc;
    retrlm_trime_params p;
    int *s = random_stream(N, V, 77), tgt[T], w, i, cnt;
    float nats[N];
    double bpb;
    small_config(&cfg, V, D, T, 2);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    memset(&p, 0, sizeof p);
    p.sim = RETRLM_TRIME_DOT;
    memset(&rc, 0, sizeof rc);
    rc.stride = S;
    rc.context_tokens = C;
    rc.trime = &p;
    CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, nats));
    for (w = 0; w < 5; w++) { // window w scores tokens [1 + w S, 1 + (w + 1) S) after its context
        const int start = 1 + w * S, ctx = start > C ? start - C : 0, len = start + S - ctx; // inputs [ctx, start + S - 1)
        double got = 0.0, want;
        for (i = 0; i < len - 1; i++) tgt[i] = s[ctx + i + 1];
        CHECK_OK(retrlm_model_forward(&m, s + ctx, 1, len - 1, NULL, 0));
        want = ref_sum(&m, tgt, &p, start - 1 - ctx, &cnt);
        for (i = start; i < start + S; i++) got += nats[i];
        CHECK(cnt == S);
        CHECK(fabs(got - want) < 1e-4 * fabs(want));
        if (w == 4) printf("  window 5 (context %d tokens) at inference: %.6f nats, training's loss %.6f\n", start - ctx,
                           got, want);
    }
    retrlm_model_free(&m);
    free(s);
}

// TRIME's long memory at inference equals training's LONG loss: windows of T tokens that overlap
// by one (stride T - 1, one token of context) are the batch's consecutive segments, and the
// cache holds the earlier segments' keys as their own forward made them
static void test_trime_inference_long(void) {
    enum { V = 32, D = 16, T = 9, S = 3, N = S * (T - 1) + 1 };
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_ralm_config rc;
    retrlm_trime_params p;
    int *s = random_stream(N, V, 83), tgt[S * (T - 1)], sim, i;
    float nats[N], full[N];
    double bpb, sum, ref, one;
    small_config(&cfg, V, D, T, S);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    for (sim = RETRLM_TRIME_DOT; sim <= RETRLM_TRIME_L2; sim++) {
        memset(&p, 0, sizeof p);
        p.batching = RETRLM_TRIME_LONG;
        p.sim = sim;
        p.temperature = sim == RETRLM_TRIME_L2 ? 0.7f : 0.0f;
        memset(&rc, 0, sizeof rc);
        rc.stride = T - 1;
        rc.context_tokens = 1;
        rc.trime = &p;
        rc.trime_cache = 1000; // more than the stream: every earlier segment
        CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, full));
        for (sum = 0.0, i = 1; i < N; i++) sum += full[i];
        for (i = 0; i < N - 1; i++) tgt[i] = s[i + 1]; // segment b: inputs s[b (T-1), (b+1)(T-1))
        CHECK_OK(retrlm_model_forward(&m, s, S, T - 1, NULL, 0)); // rows are consecutive: s is contiguous
        ref = ref_loss(&m, tgt, &p) * (N - 1);
        printf("  long memory at inference, %s: %.6f nats, training's loss %.6f\n",
               sim == RETRLM_TRIME_L2 ? "L2" : "dot", sum, ref);
        CHECK(fabs(sum - ref) < 1e-4 * fabs(ref));
        // a cache of one segment: the third segment no longer sees the first
        rc.trime_cache = T - 1;
        CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, nats));
        for (one = 0.0, i = 1; i < N; i++) one += nats[i];
        CHECK(fabs(one - sum) > 1e-4);
        for (i = 1; i < 2 * (T - 1) + 1; i++) CHECK(nats[i] == full[i]); // the first two segments: the same
    }
    rc.trime_cache = 0; // without the cache: the local figure of each window
    CHECK_OK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, NULL));
    rc.trime_cache = -1;
    CHECK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, NULL) == RETRLM_ERR_ARG);
    rc.trime_cache = 8, rc.trime = NULL;
    CHECK(retrlm_ralm_bits_per_byte(&m, NULL, NULL, s, N, 100, &rc, &bpb, NULL) == RETRLM_ERR_ARG);
    retrlm_model_free(&m);
    free(s);
}

int main(void) {
    RUN(test_trime_first_step);
    RUN(test_trime_empty_memory_and_warmup);
    RUN(test_trime_grads);
    RUN(test_trime_threads);
    RUN(test_trime_resume);
    RUN(test_trime_bad_input);
    RUN(test_trime_bm25_batches);
    RUN(test_trime_inference_local);
    RUN(test_trime_inference_windows);
    RUN(test_trime_inference_long);
    RUN(test_trime_learns_to_copy);
    RUN(test_trime_ext_learns_to_copy);
    return test_report();
}
