// train: the bi-encoder (gradients through pooling, projection and normalisation into the
// contrastive loss), DPR and Contriever training (determinism across threads, learning a task
// that needs it), encoder files, fusion and dense / hybrid retrieval from a datastore
#include "retrlm.h"
#include "test.h"
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void tiny_encoder(retrlm_encoder *e, int separate, int proj, int normalize, int batch) {
    retrlm_encoder_config c;
    memset(&c, 0, sizeof c);
    c.model.vocab_size = 11;
    c.model.dim = 8;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.ffn_dim = 12;
    c.model.init_std = 0.3f;
    c.model.seed = 7;
    c.separate = separate;
    c.proj_dim = proj;
    c.normalize = normalize;
    c.max_query_tokens = 4;
    c.max_doc_tokens = 5;
    c.max_batch = batch;
    CHECK_OK(retrlm_encoder_init(e, &c));
}

// ---- the contrastive loss by itself, against a double reference
static void test_contrastive_loss(void) {
    float q[6] = {1, 0, 0.5f, -1, 2, 0.25f}, d[9] = {0.5f, 1, -1, 0, 1, 2, -0.5f, 0.5f, 0};
    float dq[6], dd[9], loss;
    int pos[2] = {2, 0}, correct = -1, i, j;
    double ref = 0.0;
    const float T = 0.5f;
    CHECK_OK(retrlm_contrastive_loss(q, 2, d, 3, 3, pos, T, &loss, dq, dd, &correct));
    for (i = 0; i < 2; i++) {
        double s[3], mx = -1e30, lse = 0.0;
        for (j = 0; j < 3; j++) {
            s[j] = (q[i * 3] * d[j * 3] + q[i * 3 + 1] * d[j * 3 + 1] + q[i * 3 + 2] * d[j * 3 + 2]) / T;
            if (s[j] > mx) mx = s[j];
        }
        for (j = 0; j < 3; j++) lse += exp(s[j] - mx);
        ref += mx + log(lse) - s[pos[i]];
    }
    CHECK_NEAR(loss, ref / 2, 1e-5);
    CHECK(correct >= 0 && correct <= 2);
    pos[1] = 3;
    CHECK(retrlm_contrastive_loss(q, 2, d, 3, 3, pos, T, &loss, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    pos[1] = 0;
    CHECK(retrlm_contrastive_loss(q, 2, d, 3, 3, pos, 0.0f, &loss, NULL, NULL, NULL) == RETRLM_ERR_ARG);
}

// ---- gradient check: loss = contrastive(Q(qtok), D(dtok)) w.r.t. every parameter
typedef struct enc_ctx {
    retrlm_encoder *e;
    int qtok[8], dtok[15], qlen[2], dlen[3], pos[2];
    float T;
} enc_ctx;

static double enc_loss(void *p) {
    enc_ctx *c = (enc_ctx *)p;
    float q[2 * 16], d[3 * 16], loss = 0.0f;
    retrlm_encoder_forward(c->e, RETRLM_QUERY, c->qtok, 2, 4, c->qlen, q);
    retrlm_encoder_forward(c->e, RETRLM_DOC, c->dtok, 3, 5, c->dlen, d);
    retrlm_contrastive_loss(q, 2, d, 3, c->e->dim, c->pos, c->T, &loss, NULL, NULL, NULL);
    return loss;
}

static double central(enc_ctx *c, float *x, float eps) {
    float save = *x;
    double lp, lm;
    *x = save + eps;
    lp = enc_loss(c);
    *x = save - eps;
    lm = enc_loss(c);
    *x = save;
    return (lp - lm) / ((double)(save + eps) - (double)(save - eps));
}

// worst scaled error over x[0..n) (Richardson-combined central differences)
static double check_block(enc_ctx *c, float *x, const float *g, size_t n) {
    double worst = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d1 = central(c, x + i, 1e-2f), d2 = central(c, x + i, 5e-3f), num = (4 * d2 - d1) / 3;
        double err = fabs(num - g[i]) / (1e-3 + 0.05 * (fabs(num) > fabs(g[i]) ? fabs(num) : fabs(g[i])));
        if (err > worst) worst = err;
    }
    return worst;
}

static void grad_case(int separate, int proj, int normalize) {
    retrlm_encoder e;
    enc_ctx c;
    float q[2 * 16], d[3 * 16], dq[2 * 16], dd[3 * 16], loss, *g;
    retrlm_rng rng;
    int i, s;
    tiny_encoder(&e, separate, proj, normalize, 2);
    if (!e.side[0].params) return;
    memset(&c, 0, sizeof c);
    c.e = &e;
    c.T = normalize ? 0.2f : 1.0f;
    retrlm_rng_seed(&rng, 3);
    for (i = 0; i < 8; i++) c.qtok[i] = (int)retrlm_rng_below(&rng, 11);
    for (i = 0; i < 15; i++) c.dtok[i] = (int)retrlm_rng_below(&rng, 11);
    c.qlen[0] = 4, c.qlen[1] = 2;
    c.dlen[0] = 5, c.dlen[1] = 3, c.dlen[2] = 1;
    c.pos[0] = 1, c.pos[1] = 2;
    // gains away from 1 so their gradients are tested in general position
    for (s = 0; s < 1 + separate; s++)
        for (i = (int)e.side[s].n_decay; i < (int)e.side[s].n_params; i++)
            e.side[s].params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    CHECK_OK(retrlm_encoder_forward(&e, RETRLM_QUERY, c.qtok, 2, 4, c.qlen, q));
    CHECK_OK(retrlm_encoder_forward(&e, RETRLM_DOC, c.dtok, 3, 5, c.dlen, d));
    CHECK_OK(retrlm_contrastive_loss(q, 2, d, 3, e.dim, c.pos, c.T, &loss, dq, dd, NULL));
    retrlm_encoder_zero_grad(&e);
    CHECK_OK(retrlm_encoder_backward(&e, RETRLM_DOC, dd));
    CHECK_OK(retrlm_encoder_backward(&e, RETRLM_QUERY, dq));
    for (s = 0; s < 1 + separate; s++) {
        retrlm_model *m = &e.side[s];
        double worst;
        g = (float *)malloc(m->n_params * sizeof(float));
        memcpy(g, m->grads, m->n_params * sizeof(float));
        worst = check_block(&c, m->params, g, m->n_params);
        if (!(worst < 1.0)) fprintf(stderr, "encoder side %d (separate %d proj %d norm %d): worst %g\n", s, separate, proj, normalize, worst);
        CHECK(worst < 1.0);
        free(g);
        if (proj) {
            size_t np = (size_t)e.dim * e.config.model.dim;
            g = (float *)malloc(np * sizeof(float));
            memcpy(g, e.proj_grad[s], np * sizeof(float));
            worst = check_block(&c, e.proj[s], g, np);
            if (!(worst < 1.0)) fprintf(stderr, "projection %d: worst %g\n", s, worst);
            CHECK(worst < 1.0);
            free(g);
        }
    }
    retrlm_encoder_free(&e);
}

static void test_encoder_grads(void) {
    grad_case(1, 6, 1); // DPR-like: two encoders, projection, normalised
    grad_case(0, 0, 1); // Contriever-like: one shared encoder (gradients from both sides add up)
    grad_case(0, 5, 0); // shared, projected, raw dot product
}

// ---- a synthetic retrieval task: document i is 6 tokens from its own little vocabulary
// slice; its query is 3 of them in another order. Learnable, and only by training.
#define N_DOCS 24
#define VOCAB 40
static void make_task(int *doc_ids, size_t *doc_off, int *q_ids, size_t *q_off, retrlm_rng *rng) {
    int i, t;
    doc_off[0] = q_off[0] = 0;
    for (i = 0; i < N_DOCS; i++) {
        for (t = 0; t < 6; t++) doc_ids[i * 6 + t] = 1 + (int)retrlm_rng_below(rng, VOCAB - 1);
        for (t = 0; t < 3; t++) q_ids[i * 3 + t] = doc_ids[i * 6 + (2 * t + 3) % 6];
        doc_off[i + 1] = (size_t)(i + 1) * 6;
        q_off[i + 1] = (size_t)(i + 1) * 3;
    }
}

typedef struct dpr_run {
    retrlm_encoder e;
    retrlm_adamw opt;
    retrlm_retriever_train_state st;
    float losses[120];
} dpr_run;

static void dpr_setup(dpr_run *r, int separate) {
    retrlm_encoder_config c;
    retrlm_adamw_config oc;
    retrlm_adamw_group g[6];
    int n;
    memset(&c, 0, sizeof c);
    c.model.vocab_size = VOCAB;
    c.model.dim = 16;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.seed = 11;
    c.separate = separate;
    c.normalize = 1;
    c.max_query_tokens = 8;
    c.max_doc_tokens = 8;
    c.max_batch = 8;
    CHECK_OK(retrlm_encoder_init(&r->e, &c));
    memset(&oc, 0, sizeof oc);
    n = retrlm_encoder_param_groups(&r->e, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&r->opt, &oc, g, n));
    retrlm_retriever_train_state_init(&r->st, 5);
}

static void dpr_free(dpr_run *r) {
    retrlm_adamw_free(&r->opt);
    retrlm_encoder_free(&r->e);
}

// recall@1 of all queries against all documents
static double task_accuracy(retrlm_encoder *e, const int *doc_ids, const int *q_ids) {
    float *qe = (float *)malloc(sizeof(float) * N_DOCS * e->dim), *de = (float *)malloc(sizeof(float) * N_DOCS * e->dim);
    int i, j, right = 0, qlen[8], dlen[16];
    for (i = 0; i < N_DOCS; i += 8) {
        for (j = 0; j < 8; j++) qlen[j] = 3;
        for (j = 0; j < 8; j++) dlen[j] = 6;
        retrlm_encoder_forward(e, RETRLM_QUERY, q_ids + i * 3, 8, 3, qlen, qe + (size_t)i * e->dim);
        retrlm_encoder_forward(e, RETRLM_DOC, doc_ids + i * 6, 8, 6, dlen, de + (size_t)i * e->dim);
    }
    for (i = 0; i < N_DOCS; i++) {
        int best = 0;
        float bs = -1e30f;
        for (j = 0; j < N_DOCS; j++) {
            float s = retrlm_dot(qe + (size_t)i * e->dim, de + (size_t)j * e->dim, e->dim);
            if (s > bs) bs = s, best = j;
        }
        right += best == i;
    }
    free(qe), free(de);
    return (double)right / N_DOCS;
}

static void test_dpr_learns(void) {
    int doc_ids[N_DOCS * 6], q_ids[N_DOCS * 3], pq[N_DOCS], pd[N_DOCS], hn[N_DOCS], i;
    size_t doc_off[N_DOCS + 1], q_off[N_DOCS + 1];
    retrlm_rng rng;
    retrlm_dpr_config dc;
    dpr_run *r = (dpr_run *)calloc(1, sizeof *r);
    double before, after;
    retrlm_rng_seed(&rng, 21);
    make_task(doc_ids, doc_off, q_ids, q_off, &rng);
    for (i = 0; i < N_DOCS; i++) pq[i] = i, pd[i] = i, hn[i] = (i + 1) % N_DOCS;
    dpr_setup(r, 1);
    memset(&dc, 0, sizeof dc);
    dc.queries.ids = q_ids, dc.queries.off = q_off, dc.queries.n = N_DOCS;
    dc.docs.ids = doc_ids, dc.docs.off = doc_off, dc.docs.n = N_DOCS;
    dc.pair_query = pq, dc.pair_doc = pd, dc.hard_negative = hn, dc.n_pairs = N_DOCS;
    dc.temperature = 0.1f;
    dc.steps = 120;
    dc.losses = r->losses;
    before = task_accuracy(&r->e, doc_ids, q_ids);
    CHECK_OK(retrlm_dpr_train(&r->e, &r->opt, &dc, &r->st));
    after = task_accuracy(&r->e, doc_ids, q_ids);
    if (!(after >= 0.75 && after > before + 0.3)) fprintf(stderr, "dpr: accuracy %.3f -> %.3f\n", before, after);
    CHECK(after >= 0.75 && after > before + 0.3);
    CHECK(r->losses[119] < r->losses[0]);
    // bad input: a pair outside the queries
    pq[3] = N_DOCS;
    dc.steps = 121;
    CHECK(retrlm_dpr_train(&r->e, &r->opt, &dc, &r->st) == RETRLM_ERR_ARG);
    dpr_free(r);
    free(r);
}

static void run_dpr(dpr_run *r, const retrlm_dpr_config *dc) {
    dpr_setup(r, 1);
    CHECK_OK(retrlm_dpr_train(&r->e, &r->opt, dc, &r->st));
}

static void test_dpr_threads_and_files(void) {
    int doc_ids[N_DOCS * 6], q_ids[N_DOCS * 3], pq[N_DOCS], pd[N_DOCS], i;
    size_t doc_off[N_DOCS + 1], q_off[N_DOCS + 1], size = 0;
    retrlm_rng rng;
    retrlm_dpr_config dc;
    dpr_run *a = (dpr_run *)calloc(1, sizeof *a), *b = (dpr_run *)calloc(1, sizeof *b);
    retrlm_encoder l;
    void *buf;
    retrlm_rng_seed(&rng, 22);
    make_task(doc_ids, doc_off, q_ids, q_off, &rng);
    for (i = 0; i < N_DOCS; i++) pq[i] = i, pd[i] = i;
    memset(&dc, 0, sizeof dc);
    dc.queries.ids = q_ids, dc.queries.off = q_off, dc.queries.n = N_DOCS;
    dc.docs.ids = doc_ids, dc.docs.off = doc_off, dc.docs.n = N_DOCS;
    dc.pair_query = pq, dc.pair_doc = pd, dc.n_pairs = N_DOCS;
    dc.steps = 10;
#ifdef _OPENMP
    {
        int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        dc.losses = a->losses;
        run_dpr(a, &dc);
        omp_set_num_threads(2);
        dc.losses = b->losses;
        run_dpr(b, &dc);
        omp_set_num_threads(saved);
    }
#else
    dc.losses = a->losses;
    run_dpr(a, &dc);
    dc.losses = b->losses;
    run_dpr(b, &dc);
#endif
    CHECK(!memcmp(a->losses, b->losses, 10 * sizeof(float)));
    CHECK(!memcmp(a->e.side[1].params, b->e.side[1].params, a->e.side[1].n_params * sizeof(float)));
    // save -> load -> the same embeddings, bit for bit
    CHECK_OK(retrlm_encoder_save_memory(&a->e, NULL, 0, &size));
    buf = malloc(size);
    CHECK_OK(retrlm_encoder_save_memory(&a->e, buf, size, &size));
    if (retrlm_encoder_load_memory(&l, buf, size) == RETRLM_OK) {
        float x[16 * 8], y[16 * 8];
        int len[8] = {6, 5, 4, 3, 6, 6, 1, 2};
        CHECK(l.dim == a->e.dim && l.config.separate == 1 && l.config.normalize == 1);
        CHECK_OK(retrlm_encoder_forward(&a->e, RETRLM_DOC, doc_ids, 8, 6, len, x));
        CHECK_OK(retrlm_encoder_forward(&l, RETRLM_DOC, doc_ids, 8, 6, len, y));
        CHECK(!memcmp(x, y, sizeof(float) * 8 * (size_t)l.dim));
        CHECK_OK(retrlm_encoder_forward(&a->e, RETRLM_QUERY, q_ids, 8, 3, NULL, x));
        CHECK_OK(retrlm_encoder_forward(&l, RETRLM_QUERY, q_ids, 8, 3, NULL, y));
        CHECK(!memcmp(x, y, sizeof(float) * 8 * (size_t)l.dim));
        retrlm_encoder_free(&l);
    } else
        CHECK(0);
    // a corrupt file: every truncation fails cleanly
    for (i = 0; i < (int)size; i += 97) CHECK(retrlm_encoder_load_memory(&l, buf, (size_t)i) != RETRLM_OK);
    free(buf);
    dpr_free(a), dpr_free(b);
    free(a), free(b);
}

static void test_contriever(void) {
    int doc_ids[N_DOCS * 6], q_ids[N_DOCS * 3], i;
    size_t doc_off[N_DOCS + 1], q_off[N_DOCS + 1];
    retrlm_rng rng;
    retrlm_contriever_config cc;
    dpr_run *r = (dpr_run *)calloc(1, sizeof *r);
    double early = 0, late = 0;
    retrlm_rng_seed(&rng, 23);
    make_task(doc_ids, doc_off, q_ids, q_off, &rng);
    dpr_setup(r, 0);
    memset(&cc, 0, sizeof cc);
    cc.docs.ids = doc_ids, cc.docs.off = doc_off, cc.docs.n = N_DOCS;
    cc.crop_min = 0.5f, cc.crop_max = 1.0f;
    cc.steps = 120;
    cc.losses = r->losses;
    CHECK_OK(retrlm_contriever_train(&r->e, &r->opt, &cc, &r->st));
    for (i = 0; i < 20; i++) early += r->losses[i], late += r->losses[100 + i];
    if (!(late < 0.5 * early)) fprintf(stderr, "contriever: loss %.3f -> %.3f\n", early / 20, late / 20);
    CHECK(late < 0.5 * early);
    cc.batch = N_DOCS + 1; // more than the encoder's max_batch
    CHECK(retrlm_contriever_train(&r->e, &r->opt, &cc, &r->st) == RETRLM_ERR_ARG);
    dpr_free(r);
    free(r);
}

// MoCo: the key encoder is the average it should be (momentum 1: frozen; 0: a copy), the queue
// is a ring, the task is learnt, and 1 and 2 threads give the same bits
static void moco_run(dpr_run *r, retrlm_moco *mc, const int *doc_ids, const size_t *doc_off,
                     int steps, float momentum, int queue) {
    retrlm_contriever_config cc;
    dpr_setup(r, 0);
    CHECK_OK(retrlm_moco_init(mc, &r->e, queue, momentum));
    memset(&cc, 0, sizeof cc);
    cc.docs.ids = doc_ids, cc.docs.off = doc_off, cc.docs.n = N_DOCS;
    cc.crop_min = 0.5f, cc.crop_max = 1.0f;
    cc.batch = 8;
    cc.steps = steps;
    cc.losses = r->losses;
    cc.moco = mc;
    CHECK_OK(retrlm_contriever_train(&r->e, &r->opt, &cc, &r->st));
}

static void test_contriever_moco(void) {
    int doc_ids[N_DOCS * 6], q_ids[N_DOCS * 3], i;
    size_t doc_off[N_DOCS + 1], q_off[N_DOCS + 1], np;
    retrlm_rng rng;
    retrlm_moco mc, mc2;
    dpr_run *r = (dpr_run *)calloc(1, sizeof *r), *r2 = (dpr_run *)calloc(1, sizeof *r2);
    float *first;
    double early = 0, late = 0, before;
    retrlm_rng_seed(&rng, 23);
    make_task(doc_ids, doc_off, q_ids, q_off, &rng);
    // momentum 1: the keys come from the first weights forever; 5 steps of 8 keys in a ring of 12
    dpr_setup(r2, 0);
    np = r2->e.side[RETRLM_QUERY].n_params;
    first = (float *)malloc(np * sizeof(float));
    memcpy(first, r2->e.side[RETRLM_QUERY].params, np * sizeof(float));
    dpr_free(r2);
    moco_run(r, &mc, doc_ids, doc_off, 5, 1.0f, 12);
    CHECK(memcmp(mc.key.side[RETRLM_QUERY].params, first, np * sizeof(float)) == 0);
    CHECK(memcmp(r->e.side[RETRLM_QUERY].params, first, np * sizeof(float)) != 0);
    CHECK(mc.n_queued == 12 && mc.head == 40 % 12);
    retrlm_moco_free(&mc);
    dpr_free(r);
    // momentum 0: the key encoder is the encoder after every step
    moco_run(r, &mc, doc_ids, doc_off, 3, 0.0f, 64);
    CHECK(memcmp(mc.key.side[RETRLM_QUERY].params, r->e.side[RETRLM_QUERY].params, np * sizeof(float)) == 0);
    CHECK(mc.n_queued == 24 && mc.head == 24);
    retrlm_moco_free(&mc);
    dpr_free(r);
    // learning, and the same bits with 1 and 2 threads
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    dpr_setup(r2, 0);
    before = task_accuracy(&r2->e, doc_ids, q_ids);
    dpr_free(r2);
    moco_run(r, &mc, doc_ids, doc_off, 120, 0.9f, 48);
    for (i = 0; i < 20; i++) early += r->losses[i], late += r->losses[100 + i];
    if (!(late < 0.6 * early)) fprintf(stderr, "moco: loss %.3f -> %.3f\n", early / 20, late / 20);
    CHECK(late < 0.6 * early);
    {
        double after = task_accuracy(&r->e, doc_ids, q_ids);
        // the untrained encoder already finds most documents from their own words (0.875)
        if (!(after > before)) fprintf(stderr, "moco: accuracy %.3f -> %.3f\n", before, after);
        CHECK(after > before);
    }
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    moco_run(r2, &mc2, doc_ids, doc_off, 120, 0.9f, 48);
    CHECK(memcmp(r->losses, r2->losses, sizeof r->losses) == 0);
    CHECK(memcmp(r->e.side[RETRLM_QUERY].params, r2->e.side[RETRLM_QUERY].params, np * sizeof(float)) == 0);
    CHECK(memcmp(mc.queue, mc2.queue, (size_t)48 * mc.key.dim * sizeof(float)) == 0);
    retrlm_moco_free(&mc2);
    dpr_free(r2);
    // bad input: a separate encoder, an empty queue, momentum outside [0, 1]; a state from
    // another encoder; free twice is fine
    dpr_setup(r2, 1);
    CHECK(retrlm_moco_init(&mc2, &r2->e, 16, 0.9f) == RETRLM_ERR_ARG);
    dpr_free(r2);
    CHECK(retrlm_moco_init(&mc2, &r->e, 0, 0.9f) == RETRLM_ERR_ARG);
    CHECK(retrlm_moco_init(&mc2, &r->e, 16, 1.5f) == RETRLM_ERR_ARG);
    retrlm_moco_free(&mc2);
    retrlm_moco_free(&mc2);
    {
        retrlm_encoder other;
        retrlm_contriever_config cc;
        tiny_encoder(&other, 0, 0, 1, 8);
        memset(&cc, 0, sizeof cc);
        cc.docs.ids = doc_ids, cc.docs.off = doc_off, cc.docs.n = N_DOCS;
        cc.steps = r->st.step + 1;
        cc.moco = &mc;
        CHECK(retrlm_contriever_train(&other, &r->opt, &cc, &r->st) == RETRLM_ERR_ARG);
        retrlm_encoder_free(&other);
    }
    retrlm_moco_free(&mc);
    dpr_free(r);
    free(first);
    free(r);
    free(r2);
}

// ---- REPLUG LSR -----------------------------------------------------------------------------
typedef struct lsr_fix {
    retrlm_tokenizer tok;
    retrlm_model lm;
    retrlm_datastore ds;
    retrlm_encoder e;
    retrlm_adamw opt;
    retrlm_retriever_train_state st;
    int *stream;
    size_t n_stream;
} lsr_fix;

static const char *lsr_texts[6] = {"the cat sat on the mat and slept", "a dog barks at night in the yard",
                                   "sailing ships at sea in a storm", "the quick brown fox jumps high",
                                   "compilers translate code to machine words", "bread and butter on a plate"};

// a tokenizer, a small random LM, six units (one per document), a shared encoder embedded into
// the datastore; the stream is the text of `stream_text`
static void lsr_setup(lsr_fix *f, const char *stream_text) {
    const char *train = "the cat sat on the mat and slept a dog barks at night in the yard sailing "
                        "ships at sea in a storm the quick brown fox jumps high compilers translate";
    size_t tl = strlen(train);
    retrlm_tokenizer_train_config tc;
    retrlm_model_config mc;
    retrlm_datastore_config dc;
    retrlm_encoder_config ec;
    retrlm_adamw_config oc;
    retrlm_adamw_group g[6];
    int i, ng;
    memset(f, 0, sizeof *f);
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&f->tok, &tc, &train, &tl, 1, NULL, NULL));
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = f->tok.n_vocab;
    mc.dim = 16;
    mc.n_layers = 1;
    mc.n_heads = 2;
    mc.max_seq_len = 48;
    mc.max_batch = 4; // several LM forwards a step
    mc.init_std = 0.2f; // a random LM with mild preferences: Q is not one-hot
    mc.seed = 3;
    CHECK_OK(retrlm_model_init(&f->lm, &mc));
    memset(&dc, 0, sizeof dc);
    CHECK_OK(retrlm_datastore_init(&f->ds, &dc));
    for (i = 0; i < 6; i++) CHECK_OK(retrlm_datastore_add(&f->ds, &f->tok, i, lsr_texts[i], strlen(lsr_texts[i]), 0));
    CHECK_OK(retrlm_datastore_commit(&f->ds));
    memset(&ec, 0, sizeof ec);
    ec.model.vocab_size = f->tok.n_vocab;
    ec.model.dim = 16;
    ec.model.n_layers = 1;
    ec.model.n_heads = 2;
    ec.model.seed = 9;
    ec.normalize = 1;
    ec.max_batch = 4; // documents: 8
    ec.max_query_tokens = 16;
    ec.max_doc_tokens = 16;
    CHECK_OK(retrlm_encoder_init(&f->e, &ec));
    CHECK_OK(retrlm_datastore_embed(&f->ds, &f->e, &f->tok, NULL, NULL, NULL));
    memset(&oc, 0, sizeof oc);
    ng = retrlm_encoder_param_groups(&f->e, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&f->opt, &oc, g, ng));
    retrlm_retriever_train_state_init(&f->st, 17);
    CHECK_OK(retrlm_tokenizer_encode_alloc(&f->tok, stream_text, strlen(stream_text), 0, &f->stream, &f->n_stream));
}

static void lsr_free(lsr_fix *f) {
    retrlm_adamw_free(&f->opt);
    retrlm_datastore_free(&f->ds);
    retrlm_encoder_free(&f->e);
    retrlm_model_free(&f->lm);
    retrlm_tokenizer_free(&f->tok);
    retrlm_free(f->stream);
}

static void lsr_config(lsr_fix *f, retrlm_lsr_config *c, int cx, int cy, int k, int batch, int64_t steps) {
    memset(c, 0, sizeof *c);
    c->lm = &f->lm;
    c->lm_tok = &f->tok;
    c->ds = &f->ds;
    c->tokens = f->stream;
    c->n_tokens = f->n_stream;
    c->context_tokens = cx;
    c->continuation_tokens = cy;
    c->k = k;
    c->batch = batch;
    c->unit_tokens = 12;
    c->steps = steps;
}

// One example (the stream is exactly x + y) and every unit retrieved: the retriever must come
// to rank first the unit after which the LM, asked directly here, finds y likeliest.
static void test_lsr_fits_the_lm(void) {
    lsr_fix *f = (lsr_fix *)calloc(1, sizeof *f);
    retrlm_lsr_config c;
    float losses[60], q[16], d[6 * 16], gold[6];
    double best_ll = -1e30;
    int lm_best = -1, ret_best = 0, u, cx, cy;
    char *xtext;
    size_t xlen;
    lsr_setup(f, "a dog sat on the mat at sea in the yard");
    cy = 3; // a short y: the LM's preferences are mild, so Q is not one-hot and its shape matters
    cx = (int)f->n_stream - cy;
    lsr_config(f, &c, cx, cy, 6, 1, 60);
    c.losses = losses;
    c.refresh_every = 10;
    CHECK_OK(retrlm_lsr_train(&f->e, &f->opt, &c, &f->st));
    if (!(losses[59] < 0.3f * losses[0])) fprintf(stderr, "lsr: KL %.4f -> %.4f\n", losses[0], losses[59]);
    CHECK(losses[0] > 0.0f && losses[59] < 0.3f * losses[0]);
    CHECK(f->st.last_acc == 1.0f);
    // the LM's own preference, from forwards of [unit's first 12 tokens ; x ; y]
    for (u = 0; u < 6; u++) {
        int un, n0, T, t, seq[48], tgt[48], cnt;
        const int *ids = retrlm_datastore_tokens(&f->ds, u, &un);
        double nll;
        n0 = un < 12 ? un : 12;
        memcpy(seq, ids, sizeof(int) * (size_t)n0);
        memcpy(seq + n0, f->stream, sizeof(int) * f->n_stream);
        T = n0 + (int)f->n_stream;
        for (t = 0; t < T; t++) tgt[t] = t + 1 >= n0 + cx && t + 1 < T ? seq[t + 1] : -1;
        CHECK_OK(retrlm_model_forward(&f->lm, seq, 1, T, NULL, 0));
        nll = retrlm_model_nll(&f->lm, tgt, &cnt);
        CHECK(cnt == cy);
        if (-nll > best_ll) best_ll = -nll, lm_best = u;
        gold[u] = (float)-nll;
    }
    // the retriever's ranking with its final weights
    CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream, (size_t)cx, NULL, 0, &xlen));
    xtext = (char *)malloc(xlen + 1);
    CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream, (size_t)cx, xtext, xlen + 1, &xlen));
    CHECK_OK(retrlm_encoder_embed(&f->e, &f->tok, RETRLM_QUERY, xtext, xlen, q));
    for (u = 0; u < 6; u++) {
        size_t len;
        const char *txt = retrlm_datastore_text(&f->ds, u, &len);
        CHECK_OK(retrlm_encoder_embed(&f->e, &f->tok, RETRLM_DOC, txt, len, d + u * 16));
        if (retrlm_dot(q, d + u * 16, 16) > retrlm_dot(q, d + ret_best * 16, 16)) ret_best = u;
    }
    if (ret_best != lm_best) fprintf(stderr, "lsr: retriever ranks unit %d first, the LM prefers %d\n", ret_best, lm_best);
    CHECK(ret_best == lm_best);
    // and the retriever's distribution is near the LM's, as the test computes it
    {
        float sc[6], kl;
        for (u = 0; u < 6; u++) sc[u] = retrlm_dot(q, d + u * 16, 16);
        CHECK_OK(retrlm_kl_distill_loss(sc, gold, 1, 6, 0.1f, 0.1f, &kl, NULL));
        if (!(kl < 0.01f * losses[0]))
            fprintf(stderr, "lsr: KL(LM || retriever) %.5f, training KL %.5f -> %.5f\n", kl, losses[0], losses[59]);
        CHECK(kl < 0.01f * losses[0]); // an LM scored one token off gives 3.2 here

    }
    free(xtext);
    lsr_free(f);
    free(f);
}

// Many examples, refreshes, 1 and 2 threads: the same bits; and bad input
static void test_lsr_threads_and_errors(void) {
    const char *stream = "the cat sat at night in the yard and a dog barks at sea in a storm while the quick "
                         "brown fox jumps high over bread and butter on a plate";
    lsr_fix *f1 = (lsr_fix *)calloc(1, sizeof *f1), *f2 = (lsr_fix *)calloc(1, sizeof *f2);
    retrlm_lsr_config c;
    float l1[6], l2[6];
    int64_t *doc;
    size_t i;
    int th;
    for (th = 1; th <= 2; th++) {
        lsr_fix *f = th == 1 ? f1 : f2;
#ifdef _OPENMP
        omp_set_num_threads(th);
#endif
        lsr_setup(f, stream);
        lsr_config(f, &c, 8, 6, 3, 3, 6);
        c.refresh_every = 2;
        c.losses = th == 1 ? l1 : l2;
        CHECK_OK(retrlm_lsr_train(&f->e, &f->opt, &c, &f->st));
    }
    CHECK(memcmp(l1, l2, sizeof l1) == 0);
    CHECK(memcmp(f1->e.side[RETRLM_QUERY].params, f2->e.side[RETRLM_QUERY].params,
                 f1->e.side[RETRLM_QUERY].n_params * sizeof(float)) == 0);
    // bad input: k above the document side's max_batch (8), a window longer than the LM's, a
    // window longer than the stream, an encoder the datastore was not embedded with, every unit
    // excluded
    lsr_config(f1, &c, 8, 6, 9, 3, 8);
    CHECK(retrlm_lsr_train(&f1->e, &f1->opt, &c, &f1->st) == RETRLM_ERR_ARG);
    lsr_config(f1, &c, 30, 20, 3, 3, 8);
    CHECK(retrlm_lsr_train(&f1->e, &f1->opt, &c, &f1->st) == RETRLM_ERR_ARG);
    lsr_config(f1, &c, (int)f1->n_stream, 1, 3, 3, 8);
    c.unit_tokens = 1;
    CHECK(retrlm_lsr_train(&f1->e, &f1->opt, &c, &f1->st) == RETRLM_ERR_ARG);
    lsr_config(f1, &c, 8, 6, 3, 3, 8);
    CHECK(retrlm_lsr_train(&f2->e, &f1->opt, &c, &f1->st) == RETRLM_ERR_ARG);
    doc = (int64_t *)malloc(sizeof(int64_t) * f1->n_stream);
    for (i = 0; i < f1->n_stream; i++) doc[i] = 0;
    {
        retrlm_datastore one;
        retrlm_datastore_config dc;
        memset(&dc, 0, sizeof dc);
        CHECK_OK(retrlm_datastore_init(&one, &dc));
        CHECK_OK(retrlm_datastore_add(&one, &f1->tok, 0, lsr_texts[0], strlen(lsr_texts[0]), 0));
        CHECK_OK(retrlm_datastore_commit(&one));
        CHECK_OK(retrlm_datastore_embed(&one, &f1->e, &f1->tok, NULL, NULL, NULL));
        c.ds = &one;
        c.token_doc = doc;
        CHECK(retrlm_lsr_train(&f1->e, &f1->opt, &c, &f1->st) == RETRLM_ERR_ARG);
        retrlm_datastore_free(&one);
    }
    free(doc);
    lsr_free(f1);
    lsr_free(f2);
    free(f1);
    free(f2);
}

// ---- in-context retrieval-augmented LM training ---------------------------------------------
static void ic_config(lsr_fix *f, retrlm_incontext_train_config *c, int k, int q, int w, int64_t steps) {
    memset(c, 0, sizeof *c);
    c->tok = &f->tok;
    c->ds = &f->ds;
    c->tokens = f->stream;
    c->n_tokens = f->n_stream;
    c->k = k;
    c->unit_tokens = 10;
    c->query_tokens = q;
    c->window_tokens = w;
    c->steps = steps;
}

static void lm_optimizer(retrlm_model *m, retrlm_adamw *opt) {
    retrlm_adamw_config oc;
    retrlm_adamw_group g[8];
    int n;
    memset(&oc, 0, sizeof oc);
    n = retrlm_model_param_groups(m, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(opt, &oc, g, n));
}

// The first step's loss equals a forward of [units, best last ; window] built here by hand,
// scored on the window's tokens after the query; units of the window's document never come.
static void test_incontext_exact(void) {
    lsr_fix *f = (lsr_fix *)calloc(1, sizeof *f);
    retrlm_incontext_train_config c;
    retrlm_lm_train_state st;
    retrlm_adamw opt;
    float losses[1];
    int64_t *doc;
    int units[2], found = 0, seq[48], tgt[48], at = 0, j, i, cnt = 0, W, q = 12;
    char text[256];
    size_t tl, t;
    double nll;
    lsr_setup(f, "dog at sea and the quick fox on the mat at night");
    if (f->n_stream > 29) f->n_stream = 29; // 2 units of 10 + a window of 28 fill the 48 positions
    W = (int)f->n_stream - 1;
    doc = (int64_t *)malloc(sizeof(int64_t) * f->n_stream);
    for (t = 0; t < f->n_stream; t++) doc[t] = 0; // the cat's document: never retrieved
    ic_config(f, &c, 2, q, W, 1);
    c.token_doc = doc;
    c.batch = 1;
    c.losses = losses;
    lm_optimizer(&f->lm, &opt);
    retrlm_lm_train_state_init(&st, 1);
    // by hand: the query, the units, the sequence, before training changes the LM
    CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream, (size_t)q, text, sizeof text, &tl));
    CHECK_OK(retrlm_datastore_retrieve(&f->ds, NULL, text, tl, 2, 0, units, NULL, &found));
    if (found != 2) fprintf(stderr, "incontext: query \"%.*s\" found %d units\n", (int)tl, text, found);
    CHECK(found == 2 && units[0] != 0 && units[1] != 0);
    for (j = found - 1; j >= 0; j--) {
        int un;
        const int *ids = retrlm_datastore_tokens(&f->ds, units[j], &un);
        for (i = 0; i < un && i < 10; i++) seq[at] = ids[i], tgt[at++] = -1;
    }
    for (i = 0; i < W; i++) {
        seq[at + i] = f->stream[i];
        tgt[at + i] = i + 1 >= q ? f->stream[i + 1] : -1;
    }
    CHECK_OK(retrlm_model_forward(&f->lm, seq, 1, at + W, NULL, 0));
    nll = retrlm_model_nll(&f->lm, tgt, &cnt);
    CHECK(cnt == W + 1 - q);
    CHECK_OK(retrlm_incontext_train(&f->lm, &opt, &c, &st));
    CHECK(st.step == 1);
    CHECK_NEAR(losses[0], nll / cnt, 1e-5);
    // bad input: units and window past the LM's 48 positions, a query as long as the window, a
    // stream shorter than a window, an encoder model
    ic_config(f, &c, 4, q, 20, 2);
    CHECK(retrlm_incontext_train(&f->lm, &opt, &c, &st) == RETRLM_ERR_ARG);
    ic_config(f, &c, 1, W, W, 2);
    CHECK(retrlm_incontext_train(&f->lm, &opt, &c, &st) == RETRLM_ERR_ARG);
    ic_config(f, &c, 1, q, (int)f->n_stream, 2);
    CHECK(retrlm_incontext_train(&f->lm, &opt, &c, &st) == RETRLM_ERR_ARG);
    ic_config(f, &c, 1, q, 8, 2);
    CHECK(retrlm_incontext_train(&f->e.side[RETRLM_QUERY], &opt, &c, &st) == RETRLM_ERR_ARG);
    retrlm_adamw_free(&opt);
    free(doc);
    lsr_free(f);
    free(f);
}

// Learning, and the same bits at 1 and 2 threads
static void test_incontext_learns(void) {
    const char *stream = "the cat sat on the mat and slept the quick brown fox jumps high a dog barks at "
                         "night in the yard the cat sat on the mat and slept sailing ships at sea in a "
                         "storm the quick brown fox jumps high bread and butter on a plate";
    lsr_fix *f[2];
    retrlm_incontext_train_config c;
    retrlm_lm_train_state st[2];
    retrlm_adamw opt[2];
    float losses[2][80];
    double early = 0, late = 0;
    int th, i;
    for (th = 0; th < 2; th++) {
        f[th] = (lsr_fix *)calloc(1, sizeof *f[th]);
#ifdef _OPENMP
        omp_set_num_threads(th + 1);
#endif
        lsr_setup(f[th], stream);
        lm_optimizer(&f[th]->lm, &opt[th]);
        retrlm_lm_train_state_init(&st[th], 2);
        ic_config(f[th], &c, 1, 4, 16, 80);
        c.losses = losses[th];
        CHECK_OK(retrlm_incontext_train(&f[th]->lm, &opt[th], &c, &st[th]));
    }
    CHECK(memcmp(losses[0], losses[1], sizeof losses[0]) == 0);
    CHECK(memcmp(f[0]->lm.params, f[1]->lm.params, f[0]->lm.n_params * sizeof(float)) == 0);
    for (i = 0; i < 10; i++) early += losses[0][i], late += losses[0][70 + i];
    if (!(late < 0.5 * early)) fprintf(stderr, "incontext: loss %.3f -> %.3f\n", early / 10, late / 10);
    CHECK(late < 0.5 * early);
    for (th = 0; th < 2; th++) {
        retrlm_adamw_free(&opt[th]);
        lsr_free(f[th]);
        free(f[th]);
    }
}

static void test_fuse(void) {
    int64_t a[3] = {5, 2, 9}, b[3] = {2, 7, 5}, out[5];
    float as[3] = {3.0f, 2.0f, 1.0f}, bs[3] = {0.9f, 0.5f, 0.1f}, os[5];
    retrlm_retrieve_params p;
    int n;
    memset(&p, 0, sizeof p);
    p.mode = RETRLM_RETRIEVE_RRF;
    n = retrlm_fuse(&p, a, as, 3, b, bs, 3, 5, out, os);
    // 2: 1/62 + 1/61, 5: 1/61 + 1/63, 9: 1/63, 7: 1/62
    CHECK(n == 4 && out[0] == 2 && out[1] == 5 && out[2] == 7 && out[3] == 9);
    CHECK_NEAR(os[0], 1.0 / 62 + 1.0 / 61, 1e-6);
    p.mode = RETRLM_RETRIEVE_LINEAR;
    p.weight = 0.5f;
    n = retrlm_fuse(&p, a, as, 3, b, bs, 3, 2, out, os);
    // 5: 0.5*1 + 0.5*0 = 0.5, 2: 0.5*0.5 + 0.5*1 = 0.75
    CHECK(n == 2 && out[0] == 2 && out[1] == 5);
    CHECK_NEAR(os[0], 0.75, 1e-6);
    n = retrlm_fuse(&p, a, as, 3, b, bs, 3, 2, out, NULL); // no scores wanted: the same ids
    CHECK(n == 2 && out[0] == 2 && out[1] == 5);
    p.mode = RETRLM_RETRIEVE_DENSE;
    n = retrlm_fuse(&p, a, as, 3, b, bs, 3, 2, out, os);
    CHECK(n == 2 && out[0] == 2 && out[1] == 7);
}

// dense retrieval from a datastore equals brute force over the encoder's embeddings
static void test_datastore_dense(void) {
    static const char *texts[6] = {"the cat sat on the mat", "a dog barks at night", "sailing ships at sea",
                                   "the quick brown fox", "compilers translate code", "bread and butter"};
    const char *train = "the cat sat on the mat a dog barks at night sailing ships at sea";
    size_t tl = strlen(train), lens[6];
    retrlm_tokenizer tok;
    retrlm_tokenizer_train_config tc;
    retrlm_datastore ds;
    retrlm_datastore_config dc;
    retrlm_encoder e;
    retrlm_encoder_config ec;
    retrlm_retrieve_params p;
    float emb[6 * 16], q[16], sc[6];
    int units[6], found = 0, i, best = 0;
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&tok, &tc, &train, &tl, 1, NULL, NULL));
    memset(&dc, 0, sizeof dc);
    CHECK_OK(retrlm_datastore_init(&ds, &dc));
    for (i = 0; i < 6; i++) CHECK_OK(retrlm_datastore_add(&ds, &tok, i, texts[i], strlen(texts[i]), 0));
    CHECK_OK(retrlm_datastore_commit(&ds));
    memset(&ec, 0, sizeof ec);
    ec.model.vocab_size = tok.n_vocab;
    ec.model.dim = 16;
    ec.model.n_layers = 1;
    ec.model.n_heads = 2;
    ec.model.init_std = 0.5f;
    ec.normalize = 1;
    ec.max_batch = 2; // several batches
    CHECK_OK(retrlm_encoder_init(&e, &ec));
    memset(&p, 0, sizeof p);
    p.mode = RETRLM_RETRIEVE_DENSE;
    CHECK(retrlm_datastore_retrieve(&ds, &p, "cat", 3, 3, RETRLM_NO_DOC, units, sc, &found) == RETRLM_ERR_ARG);
    CHECK_OK(retrlm_datastore_embed(&ds, &e, &tok, NULL, NULL, NULL));
    for (i = 0; i < 6; i++) lens[i] = strlen(texts[i]);
    CHECK_OK(retrlm_encoder_encode_texts(&e, &tok, RETRLM_DOC, texts, lens, 6, emb, NULL, NULL));
    {
        const char *qt = "a cat on a mat";
        float q1[16];
        CHECK_OK(retrlm_encoder_encode_texts(&e, &tok, RETRLM_QUERY, &qt, NULL, 1, q, NULL, NULL));
        CHECK_OK(retrlm_encoder_embed(&e, &tok, RETRLM_QUERY, qt, strlen(qt), q1)); // its own activations
        for (i = 0; i < 16; i++) CHECK_NEAR(q1[i], q[i], 1e-5);
        for (i = 1; i < 6; i++)
            if (retrlm_dot(q, emb + i * 16, 16) > retrlm_dot(q, emb + best * 16, 16)) best = i;
        CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 6, RETRLM_NO_DOC, units, sc, &found));
        CHECK(found == 6 && units[0] == best);
        CHECK_NEAR(sc[0], retrlm_dot(q, emb + best * 16, 16), 1e-4);
        // exclusion: the best unit's document never comes back
        CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 6, best, units, sc, &found));
        CHECK(found == 5);
        for (i = 0; i < found; i++) CHECK(units[i] != best);
        p.mode = RETRLM_RETRIEVE_RRF;
        CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 3, RETRLM_NO_DOC, units, sc, &found));
        CHECK(found == 3);
        p.mode = RETRLM_RETRIEVE_LINEAR;
        CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 3, RETRLM_NO_DOC, units, sc, &found));
        CHECK(found == 3 && sc[0] <= 1.0f + 1e-6f);
        { // RERANK: BM25's depth best of the other documents, in the order of their dense scores
            const char *rq = "the cat at night on ships at sea";
            float q2[16];
            int cand[3], nc = 0, j;
            CHECK_OK(retrlm_encoder_embed(&e, &tok, RETRLM_QUERY, rq, strlen(rq), q2));
            CHECK_OK(retrlm_datastore_retrieve(&ds, NULL, rq, strlen(rq), 3, 0, cand, NULL, &nc));
            CHECK(nc == 2); // cat is document 0's
            p.mode = RETRLM_RETRIEVE_RERANK, p.depth = 3;
            CHECK_OK(retrlm_datastore_retrieve(&ds, &p, rq, strlen(rq), 2, 0, units, sc, &found));
            CHECK(found == 2 && units[0] != units[1]);
            for (i = 0; i < found; i++) {
                for (j = 0; j < nc && cand[j] != units[i]; j++) {}
                CHECK(j < nc && units[i] != 0);
                CHECK_NEAR(sc[i], retrlm_dot(q2, emb + units[i] * 16, 16), 1e-4);
            }
            CHECK(sc[0] >= sc[1]);
            p.depth = 0;
        }
        { // the dense index saved and loaded back answers the same
            int u2[6], f2 = 0;
            float s2[6];
            p.mode = RETRLM_RETRIEVE_DENSE;
            CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 4, RETRLM_NO_DOC, units, sc, &found));
            CHECK_OK(retrlm_index_save(&ds.dense, "build/tests/dense.rlm"));
            CHECK_OK(retrlm_datastore_load_dense(&ds, &e, &tok, "build/tests/dense.rlm"));
            CHECK_OK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 4, RETRLM_NO_DOC, u2, s2, &f2));
            CHECK(f2 == found && !memcmp(u2, units, sizeof(int) * (size_t)found));
            remove("build/tests/dense.rlm");
            CHECK(retrlm_datastore_load_dense(&ds, &e, &tok, "build/tests/dense.rlm") != RETRLM_OK);
            CHECK(retrlm_datastore_retrieve(&ds, &p, qt, strlen(qt), 4, RETRLM_NO_DOC, u2, s2, &f2) == RETRLM_ERR_ARG);
        }
    }
    retrlm_datastore_free(&ds);
    { // RERANK keeps each text once (the better BM25 candidate), and bm25_weight adds BM25's
      // score times it to the dense one
        static const char *dup[5] = {"a dog barks at night", "sailing ships at sea", "a dog barks at night",
                                     "the cat sat on the mat", "a dog barks at sea"};
        const char *rq = "a dog barks at sea at night";
        int cand[5], nc = 0, j, ndog = 0;
        float bm[5], q2[16], d2[16];
        CHECK_OK(retrlm_datastore_init(&ds, &dc));
        for (i = 0; i < 5; i++) CHECK_OK(retrlm_datastore_add(&ds, &tok, i, dup[i], strlen(dup[i]), 0));
        CHECK_OK(retrlm_datastore_commit(&ds));
        CHECK_OK(retrlm_datastore_embed(&ds, &e, &tok, NULL, NULL, NULL));
        CHECK_OK(retrlm_datastore_retrieve(&ds, NULL, rq, strlen(rq), 5, RETRLM_NO_DOC, cand, bm, &nc));
        CHECK(nc == 4); // both copies of the dog's text among them; the cat matches nothing
        CHECK_OK(retrlm_encoder_embed(&e, &tok, RETRLM_QUERY, rq, strlen(rq), q2));
        memset(&p, 0, sizeof p);
        p.mode = RETRLM_RETRIEVE_RERANK, p.depth = 5, p.bm25_weight = 0.25f;
        CHECK_OK(retrlm_datastore_retrieve(&ds, &p, rq, strlen(rq), 5, RETRLM_NO_DOC, units, sc, &found));
        CHECK(found == 3);
        for (i = 0; i < found; i++) {
            size_t len;
            const char *t = retrlm_datastore_text(&ds, units[i], &len);
            for (j = 0; j < nc && cand[j] != units[i]; j++) {}
            CHECK(j < nc);
            ndog += units[i] == 0 || units[i] == 2;
            CHECK_OK(retrlm_encoder_embed(&e, &tok, RETRLM_DOC, t, len, d2));
            CHECK_NEAR(sc[i], retrlm_dot(q2, d2, 16) + 0.25f * bm[j], 1e-4);
            if (i) CHECK(sc[i - 1] >= sc[i]);
        }
        CHECK(ndog == 1);
        p.bm25_weight = -1.0f;
        CHECK(retrlm_datastore_retrieve(&ds, &p, rq, strlen(rq), 2, RETRLM_NO_DOC, units, sc, &found) == RETRLM_ERR_ARG);
        retrlm_datastore_free(&ds);
    }
    retrlm_encoder_free(&e);
    retrlm_tokenizer_free(&tok);
}

int main(void) {
    RUN(test_contrastive_loss);
    RUN(test_encoder_grads);
    RUN(test_dpr_learns);
    RUN(test_dpr_threads_and_files);
    RUN(test_contriever);
    RUN(test_contriever_moco);
    RUN(test_lsr_fits_the_lm);
    RUN(test_lsr_threads_and_errors);
    RUN(test_incontext_exact);
    RUN(test_incontext_learns);
    RUN(test_fuse);
    RUN(test_datastore_dense);
    return test_report();
}
