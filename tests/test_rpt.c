// RPT (strategy 4): the model's own chunk embeddings and their retriever. The retriever's loss
// and its gradient through the embeddings into the decoder's lower layers against finite
// differences; targets built by hand from a reference LM; the trainer identical on 1 and 2
// threads and across a save and resume; what the evaluation's picks mean; bad input.
#include "retrlm.h"
#include "test.h"
#include "gradcheck.h"
#include "files.h"
#include <string.h>

// vocabulary 7, width 4, 2 layers, cross-attention in layer 1; chunks of 2, neighbours of 2
// chunks; the retriever reads layer 0's feed-forward input
static void tiny_config(retrlm_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 7; c->dim = 4; c->n_layers = 2; c->n_heads = 2; c->ffn_dim = 6;
    c->max_seq_len = 8; c->max_batch = 3; c->init_std = 0.4f; c->seed = 7;
    c->retro_chunk = 2; c->retro_k = 2; c->retro_len = 4; c->retro_start = 1; c->retro_every = 1;
    c->retro_enc_dim = 4; c->retro_enc_layers = 1; c->retro_enc_heads = 2;
    c->rpt_dim = 3;
}

// a span of 3 windows of 4 tokens: 6 chunks, 3 candidates a chunk
enum { SB = 3, ST = 4, SU = 6, SC = 3 };
static const int span_cand[SU * SC] = {-1, -1, -1, -1, -1, -1, 0, -1, -1,
                                       0, -1, -1,  0, 1, 2,    2, 0, 1};

typedef struct rpt_ctx {
    retrlm_model *m;
    const int *tok;
    float gold[SU * SC];
} rpt_ctx;

static double rpt_loss_of(void *p) {
    rpt_ctx *c = (rpt_ctx *)p;
    float q[SU * 3], k[SU * 3], loss = 0.0f;
    retrlm_model_rpt_embed(c->m, c->tok, SB, ST, q, k);
    retrlm_rpt_loss(q, k, SU, 3, span_cand, c->gold, SC, 10.0f, 0.0f, 1.5f, NULL, &loss, NULL, NULL);
    return loss;
}

static void test_rpt_grads(void) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_rng rng;
    rpt_ctx c;
    retrlm_model_grad_in gin;
    const float *dl[2];
    float q[SU * 3], k[SU * 3], dq[SU * 3], dk[SU * 3], dffn[SB * ST * 4], loss = 0.0f;
    float sc[SU * SC];
    int tok[SB * ST], i;
    const float ninf = -INFINITY;
    const float gold[SU * SC] = {ninf, ninf, ninf, ninf, ninf, ninf, 0.5f, ninf, ninf,
                                 ninf, ninf, ninf, 0.3f, 1.2f, 0.7f, 2.0f, 0.1f, 0.9f};
    tiny_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    CHECK(m.config.rpt_layer == 1 && m.tensor_size[RETRLM_T_RPT_WQ] == 12);
    retrlm_rng_seed(&rng, 5);
    for (i = (int)m.n_decay; i < (int)m.n_params; i++)
        m.params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    for (i = 0; i < SB * ST; i++) tok[i] = (int)retrlm_rng_below(&rng, 7);
    c.m = &m;
    c.tok = tok;
    memcpy(c.gold, gold, sizeof gold);
    CHECK_OK(retrlm_model_rpt_embed(&m, tok, SB, ST, q, k));
    CHECK_OK(retrlm_rpt_loss(q, k, SU, 3, span_cand, gold, SC, 10.0f, 0.0f, 1.5f, sc, &loss, dq, dk));
    CHECK(loss > 0.0f);
    CHECK(sc[0] == -INFINITY && sc[6 + 1] == -INFINITY && sc[12] > -INFINITY);
    CHECK_NEAR(sc[12 + 1], dotd(q + 4 * 3, k + 1 * 3, 3) / sqrt(3.0), 1e-5);
    retrlm_model_zero_grad(&m);
    CHECK_OK(retrlm_model_rpt_embed_backward(&m, dq, dk, dffn));
    // the backward of the decoder needs a whole forward of the same tokens (any neighbours)
    CHECK_OK(retrlm_model_forward_retro(&m, tok, SB, ST, NULL, NULL, 0));
    memset(&gin, 0, sizeof gin);
    dl[0] = dffn;
    dl[1] = NULL;
    gin.dffn_in = dl;
    CHECK_OK(retrlm_model_backward(&m, &gin));
    {
        float *g = (float *)malloc(m.n_params * sizeof(float));
        double worst;
        memcpy(g, m.grads, m.n_params * sizeof(float));
        worst = grad_check(rpt_loss_of, &c, m.params, g, (int)m.n_params, 1e-2f);
        if (!(worst < 0.1)) fprintf(stderr, "RPT grads: worst %g\n", worst);
        CHECK(worst < 0.1);
        // the check reached the retriever and the decoder's layer 0 below it
        CHECK(dotd(m.grad[RETRLM_T_RPT_WQ], m.grad[RETRLM_T_RPT_WQ], 12) > 1e-10);
        CHECK(dotd(m.grad[RETRLM_T_RPT_WK], m.grad[RETRLM_T_RPT_WK], 12) > 1e-10);
        CHECK(dotd(retrlm_model_tensor_ptr(&m, RETRLM_T_WQ, 0, 1),
                   retrlm_model_tensor_ptr(&m, RETRLM_T_WQ, 0, 1), 16) > 1e-10);
        CHECK(dotd(m.grad[RETRLM_T_EMBED], m.grad[RETRLM_T_EMBED], 28) > 1e-10);
        free(g);
    }
    retrlm_model_free(&m);
}

// the embeddings of the partial pass equal those read from a whole RETRO forward
static void test_rpt_embed_matches_forward(void) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_rng rng;
    float q[SU * 3];
    int tok[SB * ST], nb[SU * 2 * 4], i, u, d, t;
    tiny_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    retrlm_rng_seed(&rng, 3);
    for (i = 0; i < SB * ST; i++) tok[i] = (int)retrlm_rng_below(&rng, 7);
    for (i = 0; i < SU * 2 * 4; i++) nb[i] = (int)retrlm_rng_below(&rng, 7);
    CHECK_OK(retrlm_model_rpt_embed(&m, tok, SB, ST, q, NULL));
    CHECK(m.hidden == NULL && m.logits == NULL);
    CHECK_OK(retrlm_model_forward_retro(&m, tok, SB, ST, NULL, nb, 0));
    {
        const float *x = retrlm_model_ffn_input(&m, 0);
        double worst = 0.0;
        for (u = 0; u < SU; u++) {
            double e[4] = {0, 0, 0, 0};
            for (t = 0; t < 2; t++)
                for (d = 0; d < 4; d++) e[d] += x[(size_t)(u * 2 + t) * 4 + d] / 2.0;
            for (i = 0; i < 3; i++) {
                double s = 0.0;
                for (d = 0; d < 4; d++) s += e[d] * m.param[RETRLM_T_RPT_WQ][i * 4 + d];
                worst = fmax(worst, fabs(s - q[u * 3 + i]));
            }
        }
        CHECK(worst < 1e-5);
    }
    retrlm_model_free(&m);
}

// a reference LM and a 40-token stream of two documents
static void ref_and_stream(retrlm_model *ref, int *tok, int n) {
    retrlm_model_config c;
    retrlm_rng rng;
    int i;
    memset(&c, 0, sizeof c);
    c.vocab_size = 7; c.dim = 8; c.n_layers = 1; c.n_heads = 2; c.max_seq_len = 8;
    c.max_batch = 3; c.init_std = 0.5f; c.seed = 21;
    CHECK_OK(retrlm_model_init(ref, &c));
    retrlm_rng_seed(&rng, 17);
    for (i = 0; i < n; i++) tok[i] = (int)retrlm_rng_below(&rng, 5); // repeats: overlaps differ
}

// summed log p of the last 2 tokens of row (len tokens) under ref, in double
static double row_ll(retrlm_model *ref, const int *row, int len) {
    const int V = ref->config.vocab_size;
    double s = 0.0;
    int t, v;
    CHECK_OK(retrlm_model_forward(ref, row, 1, len, NULL, 0));
    for (t = len - 3; t < len - 1; t++) {
        const float *z = ref->logits + (size_t)t * V;
        double mx = z[0], e = 0.0;
        for (v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (v = 0; v < V; v++) e += exp(z[v] - mx);
        s += z[row[t + 1]] - mx - log(e);
    }
    return s;
}

static void test_rpt_targets(void) {
    retrlm_model ref;
    retrlm_rpt_targets t[2];
    retrlm_rpt_targets_config tc;
    int tok[40], i, u, c;
    const int64_t doc[2] = {0, 20};
    ref_and_stream(&ref, tok, 40);
    if (!ref.params) return;
    memset(&tc, 0, sizeof tc);
    tc.chunk = 2; tc.windows = 3; tc.seq_len = 4; tc.cands = 2;
    for (i = 0; i < 2; i++) {
        set_threads(i + 1);
        CHECK_OK(retrlm_rpt_targets_build(&t[i], &ref, tok, 40, doc, 2, &tc));
    }
    set_threads(2);
    if (!t[0].gold || !t[1].gold) return;
    // spans of 13 tokens every 12: one in each document
    CHECK(t[0].n_spans == 2 && t[0].span[0] == 0 && t[0].span[1] == 20 && t[0].cands == 2);
    CHECK(memcmp(t[0].cand, t[1].cand, 2 * SU * 2 * sizeof(int)) == 0);
    CHECK(memcmp(t[0].gold, t[1].gold, 2 * SU * 2 * sizeof(float)) == 0);
    for (i = 0; i < 2; i++) {
        const int off = (int)t[0].span[i];
        const int *cand = t[0].cand + i * SU * 2;
        const float *gold = t[0].gold + i * SU * 2;
        // window 0 has no candidates; window 1's chunks have chunk 0; the last chunk no gold
        CHECK(cand[0] == -1 && cand[2] == -1 && gold[0] == -INFINITY);
        CHECK(cand[2 * 2] == 0 && cand[2 * 2 + 1] == -1 && cand[3 * 2] == 0);
        CHECK(cand[5 * 2] == -1 && gold[5 * 2] == -INFINITY);
        // chunk 4: 3 eligible, the 2 with the largest share of its bigrams (the nearer on a tie)
        {
            float ov[3];
            int best, second;
            for (c = 0; c < 3; c++) ov[c] = retrlm_retro_overlap(tok + off + 8, 2, tok + off + c * 2, 4);
            best = ov[2] >= ov[1] && ov[2] >= ov[0] ? 2 : ov[1] >= ov[0] ? 1 : 0;
            second = -1;
            for (c = 2; c >= 0; c--)
                if (c != best && (second < 0 || ov[c] > ov[second])) second = c;
            CHECK(cand[4 * 2] == best && cand[4 * 2 + 1] == second);
        }
        // every gold against the reference read by hand
        for (u = 2; u < 5; u++)
            for (c = 0; c < 2; c++) {
                int row[8], j = cand[u * 2 + c];
                double want;
                if (j < 0) { CHECK(gold[u * 2 + c] == -INFINITY); continue; }
                memcpy(row, tok + off + j * 2, 4 * sizeof(int));
                memcpy(row + 4, tok + off + u * 2, 4 * sizeof(int));
                want = row_ll(&ref, row, 8) - row_ll(&ref, tok + off + u * 2, 4);
                CHECK_NEAR(gold[u * 2 + c], want, 1e-4);
            }
    }
    // a reference loaded without its logits block scores the same
    {
        retrlm_model lean;
        retrlm_model_config over;
        size_t size = 0;
        void *img;
        CHECK_OK(retrlm_model_save_memory(&ref, NULL, NULL, NULL, 0, &size));
        img = malloc(size);
        memset(&over, 0, sizeof over);
        over.no_logits = 1;
        if (img && !retrlm_model_save_memory(&ref, NULL, NULL, img, size, &size) &&
            !retrlm_model_load_memory(&lean, img, size, &over)) {
            CHECK(lean.logits == NULL);
            retrlm_rpt_targets_free(&t[1]);
            CHECK_OK(retrlm_rpt_targets_build(&t[1], &lean, tok, 40, doc, 2, &tc));
            CHECK(t[1].gold && memcmp(t[0].gold, t[1].gold, 2 * SU * 2 * sizeof(float)) == 0);
            retrlm_rpt_targets_free(&t[1]);
            retrlm_model_free(&lean);
        } else
            CHECK(0);
        free(img);
    }
    // a file and its memory image give back the same targets; a broken promise is refused
    {
        const char *path = "build/tests/rpt_targets.rlm";
        retrlm_rpt_targets back;
        size_t size = 0, n = 2 * SU * 2;
        unsigned char *img;
        CHECK_OK(retrlm_rpt_targets_save(&t[0], path));
        CHECK_OK(retrlm_rpt_targets_load(&back, path));
        CHECK(back.chunk == 2 && back.windows == 3 && back.seq_len == 4 && back.cands == 2 && back.n_spans == 2);
        CHECK(back.stream_crc == retrlm_rpt_stream_crc(tok, 40) && back.stream_crc != retrlm_rpt_stream_crc(tok, 39));
        if (back.gold) {
            CHECK(memcmp(back.span, t[0].span, 2 * sizeof(int64_t)) == 0);
            CHECK(memcmp(back.cand, t[0].cand, n * sizeof(int)) == 0);
            CHECK(memcmp(back.gold, t[0].gold, n * sizeof(float)) == 0); // -inf too
        }
        retrlm_rpt_targets_free(&back);
        remove(path);
        CHECK_OK(retrlm_rpt_targets_save_memory(&t[0], NULL, 0, &size));
        img = (unsigned char *)malloc(size);
        if (img) {
            size_t at;
            CHECK_OK(retrlm_rpt_targets_save_memory(&t[0], img, size, &size));
            CHECK_OK(retrlm_rpt_targets_load_memory(&back, img, size));
            CHECK(back.n_spans == 2 && back.gold && memcmp(back.cand, t[0].cand, n * sizeof(int)) == 0);
            retrlm_rpt_targets_free(&back);
            CHECK(retrlm_rpt_targets_load_memory(&back, img, size / 2) != RETRLM_OK);
            CHECK(back.gold == NULL && back.n_spans == 0);
            // a chunk of window 1 offered chunk 1 (j + 1 = 2 is its own window): saved or loaded, refused
            at = 2 * 2;
            t[0].cand[at] = 1;
            CHECK(retrlm_rpt_targets_save_memory(&t[0], img, size, &size) == RETRLM_ERR_ARG);
            t[0].cand[at] = 0;
            t[0].gold[0] = 1.0f; // a gold without a candidate
            CHECK(retrlm_rpt_targets_save_memory(&t[0], img, size, &size) == RETRLM_ERR_ARG);
            t[0].gold[0] = -INFINITY;
            free(img);
        }
    }
    // no reference: the same candidates, no gold
    retrlm_rpt_targets_free(&t[1]);
    CHECK_OK(retrlm_rpt_targets_build(&t[1], NULL, tok, 40, doc, 2, &tc));
    if (t[1].gold) {
        CHECK(t[1].n_spans == 2 && memcmp(t[0].cand, t[1].cand, 2 * SU * 2 * sizeof(int)) == 0);
        for (i = 0; i < 2 * SU * 2; i++) CHECK(t[1].gold[i] == -INFINITY);
    }
    retrlm_rpt_targets_free(&t[0]);
    retrlm_rpt_targets_free(&t[1]);
    retrlm_rpt_targets_free(&t[1]); // twice: a no-op
    retrlm_model_free(&ref);
}

static void rpt_opt(retrlm_adamw *o, retrlm_model *m) {
    retrlm_adamw_group g[2];
    int n = retrlm_model_param_groups(m, 3e-3f, 0.1f, g);
    CHECK_OK(retrlm_adamw_init(o, NULL, g, n));
}

static void test_rpt_train_threads_and_resume(void) {
    retrlm_model ref, m[2], r;
    retrlm_adamw o[2], ro;
    retrlm_lm_train_state st[2], rs;
    retrlm_rpt_targets tg;
    retrlm_rpt_targets_config tc;
    retrlm_rpt_train_config rc;
    retrlm_model_config cfg;
    int tok[40], i;
    float loss[2][4], rank[2][4];
    const int64_t doc[2] = {0, 20};
    void *buf;
    size_t size = 0;
    ref_and_stream(&ref, tok, 40);
    if (!ref.params) return;
    memset(&tc, 0, sizeof tc);
    tc.chunk = 2; tc.windows = 3; tc.seq_len = 4; tc.cands = 3; tc.stride = 2;
    CHECK_OK(retrlm_rpt_targets_build(&tg, &ref, tok, 40, doc, 2, &tc));
    retrlm_model_free(&ref);
    if (!tg.gold) return;
    CHECK(tg.n_spans == 8); // offsets 0 2 4 6 and 20 22 24 26
    tiny_config(&cfg);
    memset(&rc, 0, sizeof rc);
    rc.train = tok; rc.n_train = 40; rc.targets = &tg;
    rc.gold_share = 0.5f; rc.gold_steps = 2; rc.max_margin = 2.0f; rc.steps = 3;
    for (i = 0; i < 2; i++) {
        set_threads(i + 1);
        CHECK_OK(retrlm_model_init(&m[i], &cfg));
        if (!m[i].params) return;
        rpt_opt(&o[i], &m[i]);
        retrlm_lm_train_state_init(&st[i], 9);
        rc.losses = loss[i];
        rc.rank_losses = rank[i];
        CHECK_OK(retrlm_rpt_train(&m[i], &o[i], &rc, &st[i]));
        CHECK(st[i].step == 3);
    }
    set_threads(2);
    CHECK(memcmp(loss[0], loss[1], 3 * sizeof(float)) == 0);
    CHECK(memcmp(rank[0], rank[1], 3 * sizeof(float)) == 0);
    CHECK(memcmp(m[0].params, m[1].params, m[0].n_params * sizeof(float)) == 0);
    CHECK(rank[0][0] > 0.0f || rank[0][1] > 0.0f || rank[0][2] > 0.0f);
    // save after 3 steps, then one more step on the original and on the reloaded copy
    CHECK_OK(retrlm_model_save_memory(&m[0], &o[0], &st[0], NULL, 0, &size));
    buf = malloc(size);
    CHECK_OK(retrlm_model_save_memory(&m[0], &o[0], &st[0], buf, size, &size));
    CHECK_OK(retrlm_model_load_memory(&r, buf, size, NULL));
    if (r.params) {
        CHECK(r.config.rpt_dim == 3 && r.config.rpt_layer == 1 && r.n_params == m[0].n_params);
        rpt_opt(&ro, &r);
        retrlm_lm_train_state_init(&rs, 0);
        CHECK_OK(retrlm_model_load_state_memory(&ro, &rs, buf, size));
        rc.steps = 4;
        rc.losses = NULL;
        rc.rank_losses = NULL;
        CHECK_OK(retrlm_rpt_train(&m[0], &o[0], &rc, &st[0]));
        CHECK_OK(retrlm_rpt_train(&r, &ro, &rc, &rs));
        CHECK(st[0].last_loss == rs.last_loss);
        CHECK(memcmp(r.params, m[0].params, r.n_params * sizeof(float)) == 0);
        retrlm_adamw_free(&ro);
        retrlm_model_free(&r);
    }
    free(buf);
    // what the evaluation's picks mean
    {
        retrlm_rpt_eval e[4];
        float *bm = (float *)malloc((size_t)tg.n_spans * SU * 3 * sizeof(float));
        int64_t s;
        double nats = 0.0;
        CHECK_OK(retrlm_rpt_evaluate(&m[0], tok, 40, &tg, RETRLM_RPT_NONE, NULL, &e[0]));
        CHECK_OK(retrlm_rpt_evaluate(&m[0], tok, 40, &tg, RETRLM_RPT_OWN, NULL, &e[1]));
        CHECK_OK(retrlm_rpt_evaluate(&m[0], tok, 40, &tg, RETRLM_RPT_GOLD, NULL, &e[2]));
        // scores that prefer the earliest candidate chunk
        for (i = 0; i < (int)tg.n_spans * SU * 3; i++) bm[i] = -(float)tg.cand[i];
        CHECK_OK(retrlm_rpt_evaluate(&m[0], tok, 40, &tg, RETRLM_RPT_SCORES, bm, &e[3]));
        // NONE reads the spans as the plain decoder
        for (s = 0; s < tg.n_spans; s++) {
            int in[12], tg2[12];
            for (i = 0; i < 12; i++) {
                in[i] = tok[tg.span[s] + i];
                tg2[i] = tok[tg.span[s] + i + 1];
            }
            CHECK_OK(retrlm_model_forward_retro(&m[0], in, SB, ST, NULL, NULL, 0));
            nats += retrlm_model_nll(&m[0], tg2, NULL);
        }
        CHECK_NEAR(e[0].nats, nats, 1e-4);
        CHECK(e[0].tokens == tg.n_spans * 12 && e[1].tokens == e[0].tokens);
        CHECK(e[1].queries > 0 && e[1].queries == e[2].queries && e[1].queries == e[3].queries);
        CHECK(e[2].first_is_best == 1.0 && e[1].first_gold <= e[1].best_gold + 1e-9);
        CHECK(e[3].first_gold <= e[3].best_gold + 1e-9 && e[1].nats != e[0].nats);
        free(bm);
    }
    for (i = 0; i < 2; i++) {
        retrlm_adamw_free(&o[i]);
        retrlm_model_free(&m[i]);
    }
    retrlm_rpt_targets_free(&tg);
}

// BM25's scores of the candidates: each chunk's query against the span's chunks and their
// continuations, read back by hand through the BM25 API
static void test_rpt_bm25_scores(void) {
    static const char *text = "the ark of the covenant went over jordan before the priests "
                              "the ark of the covenant went over jordan before the people "
                              "the ark of the covenant went over jordan before the priests "
                              "the ark of the covenant stood in jordan before the people";
    retrlm_tokenizer tok;
    retrlm_tokenizer_train_config tc;
    retrlm_rpt_targets t;
    retrlm_rpt_targets_config rc;
    size_t n, len = strlen(text);
    int ids[256], U, u, c, j, checked = 0, sp_i;
    const int64_t doc[1] = {0};
    float *sc;
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&tok, &tc, &text, &len, 1, NULL, NULL));
    CHECK_OK(retrlm_tokenizer_encode(&tok, text, len, 0, ids, 256, &n));
    memset(&rc, 0, sizeof rc);
    rc.chunk = 4; rc.windows = 3; rc.seq_len = 8; rc.cands = 6;
    CHECK_OK(retrlm_rpt_targets_build(&t, NULL, ids, n, doc, 1, &rc));
    if (!t.cand) return;
    U = 6;
    sc = (float *)malloc((size_t)t.n_spans * U * t.cands * sizeof(float));
    CHECK_OK(retrlm_rpt_bm25_scores(&tok, ids, n, &t, NULL, sc));
    for (sp_i = 0; sp_i < t.n_spans; sp_i++) {
        retrlm_bm25 bm;
        char buf[512];
        size_t bl;
        int64_t hid[8];
        float hs[8];
        int got;
        const int *sp = ids + t.span[sp_i];
        retrlm_bm25_config bc; // the passage setting, as the scorer's default (bm25.h)
        memset(&bc, 0, sizeof bc);
        bc.k1 = RETRLM_BM25_PASSAGE_K1;
        bc.b = RETRLM_BM25_PASSAGE_B;
        CHECK_OK(retrlm_bm25_init(&bm, &bc));
        for (j = 0; j + 1 < U; j++) {
            CHECK_OK(retrlm_tokenizer_decode(&tok, sp + j * 4, 8, buf, sizeof buf, &bl));
            CHECK_OK(retrlm_bm25_add(&bm, j, buf, bl));
        }
        CHECK_OK(retrlm_bm25_commit(&bm));
        for (u = 0; u < U; u++) {
            const int *cu = t.cand + (sp_i * U + u) * t.cands;
            const float *o = sc + (sp_i * U + u) * t.cands;
            CHECK_OK(retrlm_tokenizer_decode(&tok, sp + u * 4, 4, buf, sizeof buf, &bl));
            CHECK_OK(retrlm_bm25_search(&bm, buf, bl, 8, 0, hid, hs, &got));
            for (c = 0; c < t.cands; c++) {
                float want = cu[c] < 0 ? -INFINITY : -1e30f;
                int h;
                for (h = 0; h < got && cu[c] >= 0; h++) if (hid[h] == cu[c]) want = hs[h];
                CHECK(o[c] == want);
                checked += cu[c] >= 0 && want > 0.0f;
            }
        }
        retrlm_bm25_free(&bm);
    }
    CHECK(checked > 0);
    free(sc);
    retrlm_rpt_targets_free(&t);
    retrlm_tokenizer_free(&tok);
}

static void test_rpt_bad_input(void) {
    retrlm_model_config cfg;
    retrlm_model m, p;
    retrlm_rpt_targets tg;
    retrlm_rpt_targets_config tc;
    retrlm_rpt_eval e;
    float q[SU * 3];
    int tok[40], i;
    const int64_t bad_doc[2] = {3, 20}, doc[1] = {0};
    tiny_config(&cfg);
    cfg.retro_chunk = 0;
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG); // RPT without RETRO
    tiny_config(&cfg);
    cfg.rpt_layer = 2; // after the first cross-attention
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    cfg.rpt_layer = 0;
    cfg.retro_start = 0; // no layer before the first cross-attention
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    cfg.retro_start = 1;
    cfg.rpt_dim = -1;
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    tiny_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    cfg.rpt_dim = 0;
    CHECK_OK(retrlm_model_init(&p, &cfg)); // RETRO without the retriever
    if (!m.params || !p.params) return;
    for (i = 0; i < 40; i++) tok[i] = i % 7;
    CHECK(retrlm_model_rpt_embed(&p, tok, SB, ST, q, NULL) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_rpt_embed(&m, tok, SB, 3, q, NULL) == RETRLM_ERR_ARG); // not whole chunks
    CHECK(retrlm_model_rpt_embed(&m, tok, 4, ST, q, NULL) == RETRLM_ERR_ARG); // over max_batch
    tok[1] = 9;
    CHECK(retrlm_model_rpt_embed(&m, tok, SB, ST, q, NULL) == RETRLM_ERR_ARG);
    tok[1] = 1;
    CHECK(retrlm_model_rpt_embed_backward(&p, q, q, q) == RETRLM_ERR_ARG);
    memset(&tc, 0, sizeof tc);
    tc.chunk = 2; tc.windows = 3; tc.seq_len = 4;
    CHECK(retrlm_rpt_targets_build(&tg, &m, tok, 40, bad_doc, 2, &tc) == RETRLM_ERR_ARG);
    CHECK(tg.span == NULL);
    tc.seq_len = 5;
    CHECK(retrlm_rpt_targets_build(&tg, &m, tok, 40, doc, 1, &tc) == RETRLM_ERR_ARG);
    tc.seq_len = 4;
    CHECK(retrlm_rpt_targets_build(&tg, &m, tok, 12, doc, 1, &tc) == RETRLM_ERR_ARG); // no span
    tok[5] = 7;
    CHECK(retrlm_rpt_targets_build(&tg, &m, tok, 40, doc, 1, &tc) == RETRLM_ERR_ARG);
    tok[5] = 5;
    CHECK_OK(retrlm_rpt_targets_build(&tg, &m, tok, 40, doc, 1, &tc)); // an RPT model as reference
    {
        retrlm_rpt_train_config rc;
        retrlm_adamw o;
        retrlm_lm_train_state st;
        memset(&rc, 0, sizeof rc);
        rc.train = tok; rc.n_train = 40; rc.targets = &tg; rc.steps = 1;
        retrlm_lm_train_state_init(&st, 1);
        rpt_opt(&o, &p);
        CHECK(retrlm_rpt_train(&p, &o, &rc, &st) == RETRLM_ERR_ARG); // no retriever
        retrlm_adamw_free(&o);
        rpt_opt(&o, &m);
        rc.n_train = 20; // the spans run past the stream
        CHECK(retrlm_rpt_train(&m, &o, &rc, &st) == RETRLM_ERR_ARG);
        rc.n_train = 40;
        tg.cand[0] = 0; // chunk 0 offered itself
        CHECK(retrlm_rpt_train(&m, &o, &rc, &st) == RETRLM_ERR_ARG);
        tg.cand[0] = -1;
        tok[30] = (tok[30] + 1) % 7; // another stream of the same length
        CHECK(retrlm_rpt_train(&m, &o, &rc, &st) == RETRLM_ERR_ARG);
        CHECK(strstr(retrlm_last_error(), "another stream") != NULL);
        tok[30] = (tok[30] + 6) % 7;
        rc.gold_share = 2.0f;
        CHECK(retrlm_rpt_train(&m, &o, &rc, &st) == RETRLM_ERR_ARG);
        CHECK(st.step == 0);
        retrlm_adamw_free(&o);
    }
    CHECK(retrlm_rpt_evaluate(&m, tok, 40, &tg, RETRLM_RPT_SCORES, NULL, &e) == RETRLM_ERR_ARG);
    CHECK(retrlm_rpt_evaluate(&p, tok, 40, &tg, RETRLM_RPT_OWN, NULL, &e) == RETRLM_ERR_ARG);
    CHECK(retrlm_rpt_evaluate(&m, tok, 40, &tg, (retrlm_rpt_pick)7, NULL, &e) == RETRLM_ERR_ARG);
    retrlm_rpt_targets_free(&tg);
    retrlm_model_free(&m);
    retrlm_model_free(&p);
}

int main(void) {
    RUN(test_rpt_grads);
    RUN(test_rpt_embed_matches_forward);
    RUN(test_rpt_targets);
    RUN(test_rpt_train_threads_and_resume);
    RUN(test_rpt_bm25_scores);
    RUN(test_rpt_bad_input);
    return test_report();
}
