// test_joint.c - strategy 3: the reader and the retriever trained together (REALM, Atlas PDist
// and EMDR^2) with an index refreshed in the background, re-ranked, or query-side
#include "retrlm.h"
#include "test.h"
#include "gradcheck.h"
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { NU = 6 };

static const char *texts[NU] = {"the cat sat on the mat and slept", "a dog barks at night in the yard",
                                "sailing ships at sea in a storm", "the quick brown fox jumps high",
                                "compilers translate code to machine words", "bread and butter on a plate"};

typedef struct fix {
    retrlm_tokenizer tok;
    retrlm_model lm;
    retrlm_datastore ds;
    retrlm_encoder e;
    retrlm_adamw opt_lm, opt_enc;
    retrlm_joint_state st;
    int *stream;
    size_t n_stream;
} fix;

// a tokenizer, a small random LM, NU units (one a document), a bi-encoder (shared or separate
// weights) embedded into the datastore, optimisers for both; the stream is stream_text
static void setup(fix *f, const char *stream_text, int separate, int query_side) {
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
    mc.max_batch = 7;
    mc.init_std = 0.2f;
    mc.seed = 3;
    CHECK_OK(retrlm_model_init(&f->lm, &mc));
    memset(&dc, 0, sizeof dc);
    CHECK_OK(retrlm_datastore_init(&f->ds, &dc));
    for (i = 0; i < NU; i++) CHECK_OK(retrlm_datastore_add(&f->ds, &f->tok, i, texts[i], strlen(texts[i]), 0));
    CHECK_OK(retrlm_datastore_commit(&f->ds));
    memset(&ec, 0, sizeof ec);
    ec.model.vocab_size = f->tok.n_vocab;
    ec.model.dim = 16;
    ec.model.n_layers = 1;
    ec.model.n_heads = 2;
    ec.model.seed = 9;
    ec.separate = separate;
    ec.normalize = 1;
    ec.max_batch = 4; // documents: 8
    ec.max_query_tokens = 16;
    ec.max_doc_tokens = 16;
    CHECK_OK(retrlm_encoder_init(&f->e, &ec));
    CHECK_OK(retrlm_datastore_embed(&f->ds, &f->e, &f->tok, NULL, NULL, NULL));
    memset(&oc, 0, sizeof oc);
    ng = retrlm_model_param_groups(&f->lm, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&f->opt_lm, &oc, g, ng));
    ng = retrlm_encoder_param_groups(&f->e, 3e-3f, 0.0f, g);
    if (query_side) { // the query side's groups alone: its transformer and its projection
        int j, keep = 0;
        for (j = 0; j < ng; j++) {
            const float *p = g[j].params, *d0 = f->e.side[RETRLM_DOC].params;
            if (!(p >= d0 && p < d0 + f->e.side[RETRLM_DOC].n_params) && p != f->e.proj[RETRLM_DOC])
                g[keep++] = g[j];
        }
        ng = keep;
    }
    CHECK_OK(retrlm_adamw_init(&f->opt_enc, &oc, g, ng));
    retrlm_joint_state_init(&f->st, 17);
    CHECK_OK(retrlm_tokenizer_encode_alloc(&f->tok, stream_text, strlen(stream_text), 0, &f->stream, &f->n_stream));
}

static void fix_free(fix *f) {
    retrlm_adamw_free(&f->opt_lm);
    retrlm_adamw_free(&f->opt_enc);
    retrlm_datastore_free(&f->ds);
    retrlm_encoder_free(&f->e);
    retrlm_model_free(&f->lm);
    retrlm_tokenizer_free(&f->tok);
    retrlm_free(f->stream);
}

static void config(fix *f, retrlm_joint_config *c, retrlm_joint_objective obj, int cx, int cy, int k,
                   int batch, int64_t steps) {
    memset(c, 0, sizeof *c);
    c->lm_tok = &f->tok;
    c->ds = &f->ds;
    c->tokens = f->stream;
    c->n_tokens = f->n_stream;
    c->objective = obj;
    c->context_tokens = cx;
    c->query_tokens = cx < 6 ? cx : 6;
    c->continuation_tokens = cy;
    c->k = k;
    c->batch = batch;
    c->unit_tokens = 10;
    c->temperature = 0.5f;      // mild distributions, so every candidate's gradient matters
    c->gold_temperature = 0.5f;
    c->steps = steps;
}

// ---- the gradient of a whole step: reader, query encoder and document encoder ---------------
typedef struct gctx {
    fix *f;
    retrlm_joint_config *c;
    size_t start[2];
    int units[2 * 3], found[2];
    int reader_only; // PDIST and EMDR: the reader's gradient is that of its own loss
} gctx;

static double gloss(void *p) {
    gctx *g = (gctx *)p;
    float loss = 0.0f, reader = 0.0f;
    CHECK_OK(retrlm_joint_loss(&g->f->lm, &g->f->e, g->c, 2, g->start, g->units, g->found, &loss,
                               &reader, NULL));
    return g->reader_only ? reader : loss;
}

// Two checks of grad (m floats) against the loss moved along x: 40 single entries (grad_check,
// whose absolute floor of 1e-3 is near these small gradients), and the derivative along a
// random direction over all m at once, whose size lifts it far above the float loss's noise.
static void check_some(gctx *g, float *x, const float *grad, size_t m, const char *what) {
    float *gs = (float *)malloc(sizeof(float) * 40), *x0 = (float *)malloc(sizeof(float) * m);
    float *v = (float *)malloc(sizeof(float) * m);
    double worst = 0.0, gv = 0.0, num[2];
    retrlm_rng rng;
    size_t j;
    int i, h;
    for (i = 0; i < 40; i++) {
        const size_t at = (size_t)((double)(m - 1) * i / 39);
        double w;
        gs[i] = grad[at];
        w = grad_check(gloss, g, x + at, gs + i, 1, 1e-2f);
        if (w > worst) worst = w;
    }
    if (!(worst < 0.1)) fprintf(stderr, "joint gradient (%s): worst scaled error %.3f\n", what, worst);
    CHECK(worst < 0.1);
    retrlm_rng_seed(&rng, 11);
    fill_normal(v, m, 1.0f, &rng);
    memcpy(x0, x, sizeof(float) * m);
    for (j = 0; j < m; j++) gv += (double)grad[j] * v[j];
    for (h = 0; h < 2; h++) { // central differences at eps and eps / 2, Richardson-combined
        const float eps = h ? 1.5e-3f : 3e-3f;
        double lp, lm;
        for (j = 0; j < m; j++) x[j] = x0[j] + eps * v[j];
        lp = gloss(g);
        for (j = 0; j < m; j++) x[j] = x0[j] - eps * v[j];
        lm = gloss(g);
        num[h] = (lp - lm) / (2.0 * eps);
    }
    memcpy(x, x0, sizeof(float) * m);
    {
        const double n = (4.0 * num[1] - num[0]) / 3.0;
        if (!(fabs(n - gv) < 2e-3 * fabs(gv) + 5e-4) || getenv("GRAD_DEBUG"))
            fprintf(stderr, "joint gradient (%s) along a direction: numeric %.6g, analytic %.6g\n",
                    what, n, gv);
        CHECK(fabs(n - gv) < 2e-3 * fabs(gv) + 5e-4);
    }
    free(gs), free(x0), free(v);
}

static void gradients(retrlm_joint_objective obj, int separate) {
    fix *f = (fix *)calloc(1, sizeof *f);
    retrlm_joint_config c;
    gctx g;
    float *glm, *gq, *gd = NULL, loss;
    retrlm_model *q, *d;
    setup(f, "the cat barks at sea in the yard and the fox jumps on a plate", separate, 0);
    config(f, &c, obj, 6, 4, 3, 2, 1);
    memset(&g, 0, sizeof g);
    g.f = f, g.c = &c;
    g.start[0] = 0, g.start[1] = 5;
    g.units[0] = 1, g.units[1] = 4, g.units[2] = 2, g.found[0] = 3;
    g.units[3] = 5, g.units[4] = 0, g.found[1] = 2;
    q = &f->e.side[RETRLM_QUERY], d = &f->e.side[RETRLM_DOC];
    retrlm_model_zero_grad(&f->lm);
    retrlm_encoder_zero_grad(&f->e);
    CHECK_OK(retrlm_joint_loss(&f->lm, &f->e, &c, 2, g.start, g.units, g.found, &loss, NULL, NULL));
    CHECK(loss > 0.0f && isfinite(loss));
    glm = (float *)malloc(sizeof(float) * f->lm.n_params);
    gq = (float *)malloc(sizeof(float) * q->n_params);
    memcpy(glm, f->lm.grads, sizeof(float) * f->lm.n_params);
    memcpy(gq, q->grads, sizeof(float) * q->n_params);
    if (separate) {
        gd = (float *)malloc(sizeof(float) * d->n_params);
        memcpy(gd, d->grads, sizeof(float) * d->n_params);
    }
    g.reader_only = obj != RETRLM_JOINT_REALM;
    check_some(&g, f->lm.params, glm, f->lm.n_params, "reader");
    g.reader_only = 0;
    check_some(&g, q->params, gq, q->n_params, separate ? "query encoder" : "shared encoder");
    if (separate) check_some(&g, d->params, gd, d->n_params, "document encoder");
    free(glm), free(gq), free(gd);
    fix_free(f);
    free(f);
}

static void test_joint_gradients_realm(void) { gradients(RETRLM_JOINT_REALM, 1); gradients(RETRLM_JOINT_REALM, 0); }
static void test_joint_gradients_pdist(void) { gradients(RETRLM_JOINT_PDIST, 1); }
static void test_joint_gradients_emdr(void) { gradients(RETRLM_JOINT_EMDR, 1); }

// ---- REALM with the null document alone is the LM's loss on [x ; y] -------------------------
static void test_joint_null_document(void) {
    fix *f = (fix *)calloc(1, sizeof *f);
    retrlm_joint_config c;
    size_t start[2] = {0, 3};
    int units[2 * 2] = {-1, -1, -1, -1}, found[2] = {0, 0}, i, t, cnt, tgt[12];
    float loss, reader, utility;
    double nll = 0.0;
    setup(f, "the cat barks at sea in the yard and the fox jumps", 1, 0);
    config(f, &c, RETRLM_JOINT_REALM, 7, 5, 2, 2, 1);
    retrlm_model_zero_grad(&f->lm);
    retrlm_encoder_zero_grad(&f->e);
    CHECK_OK(retrlm_joint_loss(&f->lm, &f->e, &c, 2, start, units, found, &loss, &reader, &utility));
    for (i = 0; i < 2; i++) {
        CHECK_OK(retrlm_model_forward(&f->lm, f->stream + start[i], 1, 12, NULL, 0));
        for (t = 0; t < 12; t++) tgt[t] = t >= 6 && t < 11 ? f->stream[start[i] + t + 1] : -1;
        nll += retrlm_model_nll(&f->lm, tgt, &cnt) / cnt / 2;
        CHECK(cnt == 5);
    }
    CHECK_NEAR(loss, nll, 1e-5);
    CHECK_NEAR(utility, 0.0, 1e-6);
    CHECK(reader == 0.0f); // no unit was read
    // the retriever learns nothing from one candidate: its gradients are zero
    for (i = 0; i < (int)f->e.side[RETRLM_QUERY].n_params; i++)
        if (f->e.side[RETRLM_QUERY].grads[i] != 0.0f) break;
    CHECK(i == (int)f->e.side[RETRLM_QUERY].n_params);
    fix_free(f);
    free(f);
}

// the k units (out) whose embeddings, made now with e's document side, score best against the
// query of the window at start, among the n units of among (NULL: all NU), each plus w times
// its prior (n, aligned with among; NULL: none): what re-ranking finds
static void best_units(fix *f, const retrlm_joint_config *c, size_t start, int k, int *out,
                       const int *among, int n, const float *prior, float w) {
    char text[256];
    size_t len;
    float q[16], d[16], sc[NU];
    int i, j;
    float pr[NU] = {0};
    if (among) {
        for (i = 0; i < NU; i++) sc[i] = -1e31f;
        for (j = 0; j < n; j++) sc[among[j]] = 0.0f, pr[among[j]] = prior ? w * prior[j] : 0.0f;
    }
    CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream + start + c->context_tokens - c->query_tokens,
                                     (size_t)c->query_tokens, text, sizeof text, &len));
    CHECK_OK(retrlm_encoder_embed(&f->e, &f->tok, RETRLM_QUERY, text, len, q));
    for (i = 0; i < NU; i++) {
        const char *t = retrlm_datastore_text(&f->ds, i, &len);
        if (among && sc[i] < -1e30f) continue;
        CHECK_OK(retrlm_encoder_embed(&f->e, &f->tok, RETRLM_DOC, t, len, d));
        sc[i] = retrlm_dot(q, d, 16) + pr[i];
    }
    for (j = 0; j < k; j++) {
        int b = -1;
        for (i = 0; i < NU; i++)
            if (sc[i] > -1e30f && (b < 0 || sc[i] > sc[b])) b = i;
        out[j] = b;
        sc[b] = -1e31f;
    }
}

// the loss of the one window at 0 with the 2 units given (retrlm_joint_loss), which must be
// the loss of the trainer's step, whose retrieval found them (c->losses has room for 1)
static float trains_on(fix *f, const retrlm_joint_config *c, const int *units) {
    size_t start = 0;
    int found = 2;
    float want = 0.0f;
    retrlm_model_zero_grad(&f->lm);
    retrlm_encoder_zero_grad(&f->e);
    CHECK_OK(retrlm_joint_loss(&f->lm, &f->e, c, 1, &start, units, &found, &want, NULL, NULL));
    CHECK_OK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, c, &f->st));
    CHECK_NEAR(c->losses[0], want, 1e-6);
    return want;
}

// ---- retrieval inside the trainer: the own document never, stale or re-ranked ---------------
static void test_joint_retrieval(void) {
    fix *f = (fix *)calloc(1, sizeof *f);
    retrlm_joint_config c;
    float losses[1], want;
    int64_t *doc;
    size_t start = 0, i;
    int units[3], found = 2, own[3] = {0, 0, 0};
    // the stream is exactly one window (start 0 always), the text of unit 0, in document 0
    setup(f, texts[0], 1, 0);
    doc = (int64_t *)malloc(sizeof(int64_t) * f->n_stream);
    for (i = 0; i < f->n_stream; i++) doc[i] = 0;
    config(f, &c, RETRLM_JOINT_REALM, (int)f->n_stream - 3, 3, 2, 1, 1);
    c.token_doc = doc;
    c.losses = losses;
    // with its own document excluded, the two best of units 1..5 by the index
    {
        char text[256];
        size_t len;
        float q[16], sc[NU];
        int64_t ids[NU];
        int n = 0, j;
        CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream + c.context_tokens - c.query_tokens,
                                         (size_t)c.query_tokens, text, sizeof text, &len));
        CHECK_OK(retrlm_encoder_embed(&f->e, &f->tok, RETRLM_QUERY, text, len, q));
        CHECK_OK(retrlm_index_search(&f->ds.dense, q, 1, 16, NU, NULL, ids, sc));
        for (j = 0; j < NU && n < 2; j++)
            if (ids[j] != 0) units[n++] = (int)ids[j];
    }
    want = trains_on(f, &c, units);
    { // and the loss with unit 0 (the window's own text) among them is not that
        float with0;
        own[0] = 0, own[1] = units[0];
        CHECK_OK(retrlm_joint_loss(&f->lm, &f->e, &c, 1, &start, own, &found, &with0, NULL, NULL));
        CHECK(fabsf(with0 - want) > 1e-3f);
    }
    fix_free(f);
    // re-ranking: the index goes stale (the document encoder changes after embedding); the
    // trainer's units are then the best by a fresh embedding of all NU, not by the stale index
    setup(f, texts[0], 1, 0);
    config(f, &c, RETRLM_JOINT_PDIST, (int)f->n_stream - 3, 3, 2, 1, 1);
    c.losses = losses;
    c.rerank = NU;
    {
        retrlm_rng rng;
        int stale[2];
        retrlm_rng_seed(&rng, 5);
        best_units(f, &c, 0, 2, stale, NULL, NU, NULL, 0.0f);
        fill_normal(f->e.side[RETRLM_DOC].params, f->e.side[RETRLM_DOC].n_params, 0.3f, &rng);
        best_units(f, &c, 0, 2, units, NULL, NU, NULL, 0.0f);
        CHECK(stale[0] != units[0] || stale[1] != units[1]); // the test means something
    }
    trains_on(f, &c, units);
    fix_free(f);
    // re-ranking BM25's: the units are the best by a fresh embedding among BM25's 3 best, which
    // RETRLM_RETRIEVE_RERANK also returns; not the best among all units
    setup(f, "the cat at night on ships at sea so high", 1, 0);
    config(f, &c, RETRLM_JOINT_REALM, (int)f->n_stream - 3, 3, 2, 1, 1);
    c.query_tokens = c.context_tokens;
    c.losses = losses;
    c.rerank = 3, c.rerank_bm25 = 1;
    {
        char text[256];
        size_t len;
        int cand[3], nc = 0, all[2], via[2], nv = 0;
        retrlm_retrieve_params rp;
        CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream, (size_t)c.query_tokens, text, sizeof text, &len));
        CHECK_OK(retrlm_datastore_retrieve(&f->ds, NULL, text, len, 3, RETRLM_NO_DOC, cand, NULL, &nc));
        CHECK(nc == 3);
        best_units(f, &c, 0, 2, units, cand, nc, NULL, 0.0f);
        best_units(f, &c, 0, 2, all, NULL, NU, NULL, 0.0f);
        CHECK(all[0] != units[0] || all[1] != units[1]); // the test means something
        memset(&rp, 0, sizeof rp);
        rp.mode = RETRLM_RETRIEVE_RERANK, rp.depth = 3;
        CHECK_OK(retrlm_datastore_retrieve(&f->ds, &rp, text, len, 2, RETRLM_NO_DOC, via, NULL, &nv));
        CHECK(nv == 2 && via[0] == units[0] && via[1] == units[1]);
    }
    trains_on(f, &c, units);
    // bm25_weight: the fresh inner product plus that times the BM25 score ranks, in the trainer,
    // in its loss (also the null document's, REALM) and in RETRLM_RETRIEVE_RERANK alike; a large
    // weight gives BM25's own order, which the inner product alone does not
    {
        char text[256];
        size_t len;
        int cand[3], nc = 0, via[2], nv = 0, h, far[2] = {-1, -1};
        float bm[3];
        const float wt[2] = {0.05f, 1000.0f};
        retrlm_retrieve_params rp;
        CHECK_OK(retrlm_tokenizer_decode(&f->tok, f->stream, (size_t)c.query_tokens, text, sizeof text, &len));
        CHECK_OK(retrlm_datastore_retrieve(&f->ds, NULL, text, len, 3, RETRLM_NO_DOC, cand, bm, &nc));
        CHECK(nc == 3 && bm[0] > bm[2]);
        for (h = 0; h < 2; h++) {
            retrlm_joint_state_init(&f->st, 17);
            c.bm25_weight = wt[h];
            best_units(f, &c, 0, 2, units, cand, nc, bm, wt[h]);
            if (h) CHECK(units[0] == cand[0] && units[1] == cand[1]);
            else best_units(f, &c, 0, 2, far, cand, nc, NULL, 0.0f);
            memset(&rp, 0, sizeof rp);
            rp.mode = RETRLM_RETRIEVE_RERANK, rp.depth = 3, rp.bm25_weight = wt[h];
            CHECK_OK(retrlm_datastore_retrieve(&f->ds, &rp, text, len, 2, RETRLM_NO_DOC, via, NULL, &nv));
            CHECK(nv == 2 && via[0] == units[0] && via[1] == units[1]);
            trains_on(f, &c, units);
        }
        CHECK(far[0] != cand[0] || far[1] != cand[1]); // the weight changed the ranking
        { // the loss of a unit outside BM25's 3 has no BM25 score
            size_t s0 = 0;
            int out[2] = {cand[0], -1}, two = 2;
            for (h = 0; h < NU && (h == cand[0] || h == cand[1] || h == cand[2]); h++) {}
            out[1] = h;
            CHECK(retrlm_joint_loss(&f->lm, &f->e, &c, 1, &s0, out, &two, NULL, NULL, NULL) == RETRLM_ERR_ARG);
        }
        c.rerank_bm25 = 0; // bm25_weight needs it
        CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
        c.rerank_bm25 = 1, c.bm25_weight = -1.0f;
        CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
        c.bm25_weight = 0.0f;
    }
    c.rerank = 0; // rerank_bm25 needs it
    c.steps = 2;
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    free(doc);
    fix_free(f);
    free(f);
}

// ---- a background refresh: identical runs for 1 and 2 threads, and the index swapped in is
// the units embedded with the snapshot of the document encoder -------------------------------
static void test_joint_background_refresh(void) {
    const char *stream = "the cat sat at night in the yard and a dog barks at sea in a storm while the quick "
                         "brown fox jumps high over bread and butter on a plate";
    fix *f[3];
    retrlm_joint_config c;
    float l[3][7];
    int th, i;
    for (i = 0; i < 3; i++) f[i] = (fix *)calloc(1, sizeof *f[i]);
    for (th = 1; th <= 2; th++) {
#ifdef _OPENMP
        omp_set_num_threads(th);
#endif
        setup(f[th - 1], stream, 0, 0);
        config(f[th - 1], &c, RETRLM_JOINT_REALM, 8, 6, 3, 3, 7);
        c.refresh_every = 3;
        c.refresh_delay = 2; // refreshes begin at 3 and 6, swapped in at 5 and at the end (7)
        c.probe = 4;
        c.losses = l[th - 1];
        CHECK_OK(retrlm_joint_train(&f[th - 1]->lm, &f[th - 1]->opt_lm, &f[th - 1]->e,
                                    &f[th - 1]->opt_enc, &c, &f[th - 1]->st));
        CHECK(f[th - 1]->st.refreshes == 2 && f[th - 1]->st.index_step == 6);
        CHECK(f[th - 1]->st.last_overlap >= 0.0f && f[th - 1]->st.last_overlap <= 1.0f);
    }
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    CHECK(memcmp(l[0], l[1], sizeof l[0]) == 0);
    CHECK(memcmp(f[0]->lm.params, f[1]->lm.params, f[0]->lm.n_params * sizeof(float)) == 0);
    CHECK(memcmp(f[0]->e.side[0].params, f[1]->e.side[0].params, f[0]->e.side[0].n_params * sizeof(float)) == 0);
    CHECK(f[0]->st.last_overlap == f[1]->st.last_overlap);
    // the same run stopped at step 6 holds the snapshot's weights: its units, embedded, are the
    // index the first run swapped in
    setup(f[2], stream, 0, 0);
    config(f[2], &c, RETRLM_JOINT_REALM, 8, 6, 3, 3, 6);
    c.refresh_every = 3;
    c.refresh_delay = 2;
    c.losses = l[2];
    CHECK_OK(retrlm_joint_train(&f[2]->lm, &f[2]->opt_lm, &f[2]->e, &f[2]->opt_enc, &c, &f[2]->st));
    CHECK(memcmp(l[0], l[2], 6 * sizeof(float)) == 0);
    CHECK_OK(retrlm_datastore_embed(&f[2]->ds, &f[2]->e, &f[2]->tok, NULL, NULL, NULL));
    {
        float q[16], s0[NU], s2[NU];
        int64_t i0[NU], i2[NU];
        retrlm_rng rng;
        retrlm_rng_seed(&rng, 1);
        for (i = 0; i < 5; i++) {
            fill_normal(q, 16, 1.0f, &rng);
            CHECK_OK(retrlm_index_search(&f[0]->ds.dense, q, 1, 16, NU, NULL, i0, s0));
            CHECK_OK(retrlm_index_search(&f[2]->ds.dense, q, 1, 16, NU, NULL, i2, s2));
            CHECK(memcmp(i0, i2, sizeof i0) == 0 && memcmp(s0, s2, sizeof s0) == 0);
        }
    }
    for (i = 0; i < 3; i++) {
        fix_free(f[i]);
        free(f[i]);
    }
}

// ---- training moves both sides; query-side leaves the document encoder alone; bad input ----
static void test_joint_trains_and_errors(void) {
    const char *stream = "the cat sat at night in the yard and a dog barks at sea in a storm while the quick "
                         "brown fox jumps high over bread and butter on a plate";
    fix *f = (fix *)calloc(1, sizeof *f);
    retrlm_joint_config c;
    float losses[40], *d0;
    size_t nd;
    double first = 0.0, last = 0.0;
    int i;
    setup(f, stream, 1, 1);
    config(f, &c, RETRLM_JOINT_PDIST, 8, 6, 3, 3, 40);
    c.query_side = 1;
    c.losses = losses;
    nd = f->e.side[RETRLM_DOC].n_params;
    d0 = (float *)malloc(sizeof(float) * nd);
    memcpy(d0, f->e.side[RETRLM_DOC].params, sizeof(float) * nd);
    CHECK_OK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st));
    for (i = 0; i < 5; i++) first += losses[i] / 5, last += losses[35 + i] / 5;
    if (!(last < first)) fprintf(stderr, "joint: PDist loss %.4f -> %.4f\n", first, last);
    CHECK(last < first);
    CHECK(memcmp(d0, f->e.side[RETRLM_DOC].params, sizeof(float) * nd) == 0);
    CHECK(f->st.refreshes == 0 && f->st.index_step == 0);
    // bad input
    c.steps = 41;
    c.refresh_every = 5; // query-side with a refresh
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    c.refresh_every = 0;
    c.query_side = 0;
    c.rerank = 3; // not above k
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    c.rerank = 0;
    c.refresh_every = 2;
    c.refresh_delay = 3; // past the next refresh
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    c.refresh_delay = 0;
    c.objective = (retrlm_joint_objective)7;
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    c.objective = RETRLM_JOINT_REALM;
    c.k = 7; // + the null document: 8 rows, the LM takes 7
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    c.k = 3;
    c.context_tokens = 40; // [unit ; x ; y] longer than the LM's 48 positions
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    fix_free(f);
    // query-side with a shared encoder, and query-side with the document side in opt_enc
    setup(f, stream, 0, 0);
    config(f, &c, RETRLM_JOINT_PDIST, 8, 6, 3, 3, 2);
    c.query_side = 1;
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    fix_free(f);
    setup(f, stream, 1, 0);
    config(f, &c, RETRLM_JOINT_PDIST, 8, 6, 3, 3, 2);
    c.query_side = 1;
    CHECK(retrlm_joint_train(&f->lm, &f->opt_lm, &f->e, &f->opt_enc, &c, &f->st) == RETRLM_ERR_ARG);
    CHECK(f->st.step == 0);
    fix_free(f);
    free(d0);
    free(f);
}

int main(void) {
    RUN(test_joint_gradients_realm);
    RUN(test_joint_gradients_pdist);
    RUN(test_joint_gradients_emdr);
    RUN(test_joint_null_document);
    RUN(test_joint_retrieval);
    RUN(test_joint_background_refresh);
    RUN(test_joint_trains_and_errors);
    return test_report();
}
