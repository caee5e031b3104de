// RETRO in the model: chunked cross-attention and the neighbour encoder. Gradients of a whole
// tiny RETRO model against finite differences; with every neighbour absent the logits are the
// plain model's; causality (chunk u's neighbours reach only positions um + m - 1 .. um + 2m - 2);
// KV-cached decoding equals the forward; 1 vs 2 threads; save, load and resume; a model that
// learns to copy the continuation from its neighbours, and from the copy curriculum alone; the
// encoder embedding tied to the decoder's; smeared keys (gradients, decoding, threads, files); bad input.
#include "retrlm.h"
#include "test.h"
#include "gradcheck.h"
#include "files.h"
#include <string.h>

// vocabulary 7, width 4, 2 layers, both with cross-attention; chunks of 2, 2 neighbours of 3
static void tiny_config(retrlm_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 7; c->dim = 4; c->n_layers = 2; c->n_heads = 2; c->ffn_dim = 6;
    c->max_seq_len = 6; c->max_batch = 2; c->init_std = 0.4f; c->seed = 7;
    c->retro_chunk = 2; c->retro_k = 2; c->retro_len = 3; c->retro_start = 0; c->retro_every = 1;
    c->retro_enc_dim = 4; c->retro_enc_layers = 1; c->retro_enc_heads = 2;
}

typedef struct retro_ctx {
    retrlm_model *m;
    const int *tok, *tgt, *nb;
    int B, T;
} retro_ctx;

static double retro_loss(void *p) {
    retro_ctx *c = (retro_ctx *)p;
    const int V = c->m->config.vocab_size, N = c->B * c->T;
    double ce = 0.0;
    int i, j, cnt = 0;
    retrlm_model_forward_retro(c->m, c->tok, c->B, c->T, NULL, c->nb, 0);
    for (i = 0; i < N; i++) {
        const float *z = c->m->logits + (size_t)i * V;
        double mx = z[0], s = 0.0;
        if (c->tgt[i] < 0) continue;
        for (j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        for (j = 0; j < V; j++) s += exp(z[j] - mx);
        ce += mx + log(s) - z[c->tgt[i]];
        cnt++;
    }
    return ce / cnt;
}

// neighbours (B, U, k, r) for B = 2, T = 6 (U = 3, k = 2, r = 3): full, partial and absent ones
static void tiny_neighbours(int *nb, retrlm_rng *rng) {
    int i;
    for (i = 0; i < 2 * 3 * 2 * 3; i++) nb[i] = (int)retrlm_rng_below(rng, 7);
    nb[1 * 3 + 2] = -1;                         // sequence 0, chunk 0, neighbour 1: 2 tokens
    nb[2 * 3 + 0] = nb[2 * 3 + 1] = nb[2 * 3 + 2] = -1; // sequence 0, chunk 1, neighbour 0: absent
    nb[(6 + 3) * 3 + 1] = nb[(6 + 3) * 3 + 2] = -1;     // sequence 1, chunk 1, neighbour 1: 1 token
    nb[(6 + 4) * 3 + 0] = nb[(6 + 4) * 3 + 1] = nb[(6 + 4) * 3 + 2] = -1; // seq 1, chunk 2:
    nb[(6 + 5) * 3 + 0] = nb[(6 + 5) * 3 + 1] = nb[(6 + 5) * 3 + 2] = -1; // no neighbour at all
}

// smear 1: with smeared keys, whose logits get gradients too
static void retro_grads(int smear) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_rng rng;
    retrlm_model_grad_in gin;
    retro_ctx c;
    int tok[12], tgt[12], nb[36], i;
    size_t enc0, enc_n = 0;
    tiny_config(&cfg);
    cfg.retro_smear = smear;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    CHECK(m.retro_layers == 2 && m.retro_enc && m.retro_enc->config.dim == 4);
    CHECK(m.tensor_size[RETRLM_T_CCA_SMEAR] == (smear ? 2u * 2u : 0u));
    retrlm_rng_seed(&rng, 11);
    for (i = (int)m.n_decay; i < (int)m.n_params; i++)
        m.params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    for (i = 0; i < 12; i++) {
        tok[i] = (int)retrlm_rng_below(&rng, 7);
        tgt[i] = (int)retrlm_rng_below(&rng, 7);
    }
    tgt[4] = -1;
    tiny_neighbours(nb, &rng);
    c.m = &m; c.tok = tok; c.tgt = tgt; c.nb = nb; c.B = 2; c.T = 6;
    retro_loss(&c);
    CHECK_OK(retrlm_model_lm_loss(&m, tgt, NULL, NULL));
    memset(&gin, 0, sizeof gin);
    gin.dlogits = m.logits;
    retrlm_model_zero_grad(&m);
    CHECK_OK(retrlm_model_backward(&m, &gin));
    {
        float *g = (float *)malloc(m.n_params * sizeof(float));
        double worst, gsum = 0.0;
        int t;
        memcpy(g, m.grads, m.n_params * sizeof(float));
        worst = grad_check(retro_loss, &c, m.params, g, (int)m.n_params, 1e-2f);
        if (!(worst < 0.1)) fprintf(stderr, "RETRO grads: worst %g\n", worst);
        CHECK(worst < 0.1);
        // the check covered the cross-attention and the neighbour encoder, and both matter
        for (t = RETRLM_T_CCA_WQ; t <= RETRLM_T_CCA_WO; t++)
            CHECK(m.tensor_size[t] > 0 && dotd(m.grad[t], m.grad[t], m.tensor_size[t]) > 1e-12);
        if (smear)
            CHECK(dotd(m.grad[RETRLM_T_CCA_SMEAR], m.grad[RETRLM_T_CCA_SMEAR], 4) > 1e-12);
        enc0 = (size_t)(m.retro_enc->param[RETRLM_T_EMBED] - m.params);
        for (t = 0; t < RETRLM_T_ATTN_NORM; t++) enc_n += m.retro_enc->tensor_size[t];
        CHECK(enc0 + enc_n == m.n_decay);
        for (i = 0; i < (int)enc_n; i++) gsum += fabs(g[enc0 + (size_t)i]);
        CHECK(gsum > 1e-6);
        free(g);
    }
    retrlm_model_free(&m);
}

static void test_retro_grads(void) {
    retro_grads(0);
    retro_grads(1);
}

// a plain model with the decoder weights of a RETRO model
static void plain_copy(retrlm_model *p, const retrlm_model *m) {
    retrlm_model_config c = m->config;
    int t;
    c.retro_chunk = 0;
    CHECK_OK(retrlm_model_init(p, &c));
    if (!p->params) return;
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        int retro = (t >= RETRLM_T_CCA_WQ && t <= RETRLM_T_CCA_WO) || t >= RETRLM_T_CCA_NORM;
        CHECK(p->tensor_size[t] == (retro ? 0 : m->tensor_size[t]));
        if (p->tensor_size[t]) memcpy(p->param[t], m->param[t], p->tensor_size[t] * sizeof(float));
    }
}

static void test_retro_masked_is_plain(void) {
    retrlm_model_config cfg;
    retrlm_model m, p;
    retrlm_rng rng;
    int tok[12], nb[36], none[36], i;
    float *base;
    size_t n = 12 * 7;
    tiny_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    plain_copy(&p, &m);
    if (!m.params || !p.params) return;
    // the RETRO tensors add to the plain model and change nothing of it
    CHECK(p.n_params < m.n_params && p.config.retro_k == 0 && !p.retro_enc);
    retrlm_rng_seed(&rng, 3);
    for (i = 0; i < 12; i++) tok[i] = (int)retrlm_rng_below(&rng, 7);
    for (i = 0; i < 36; i++) none[i] = -1;
    tiny_neighbours(nb, &rng);
    CHECK_OK(retrlm_model_forward(&p, tok, 2, 6, NULL, 0));
    base = (float *)malloc(n * sizeof(float));
    memcpy(base, p.logits, n * sizeof(float));
    CHECK_OK(retrlm_model_forward(&m, tok, 2, 6, NULL, 0));
    CHECK(memcmp(base, m.logits, n * sizeof(float)) == 0);
    CHECK_OK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, none, 0));
    CHECK(memcmp(base, m.logits, n * sizeof(float)) == 0);
    // with neighbours: positions 0 .. m-2 (here 0) of each sequence are untouched, the rest move
    CHECK_OK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, nb, 0));
    CHECK(memcmp(base, m.logits, 7 * sizeof(float)) == 0);
    CHECK(memcmp(base + 6 * 7, m.logits + 6 * 7, 7 * sizeof(float)) == 0);
    CHECK(memcmp(base + 7, m.logits + 7, 7 * sizeof(float)) != 0);
    // causality: changing chunk 1's neighbours of sequence 1 leaves its positions before 3 (the
    // last token of chunk 1) as they were, and moves 3 and 4 (directly) and 5 (through the
    // self-attention of the next layer)
    {
        float *with = (float *)malloc(n * sizeof(float));
        int t;
        memcpy(with, m.logits, n * sizeof(float));
        nb[(6 + 2) * 3 + 0] = (nb[(6 + 2) * 3 + 0] + 1) % 7;
        CHECK_OK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, nb, 0));
        for (t = 0; t < 12; t++) {
            int same = memcmp(with + t * 7, m.logits + t * 7, 7 * sizeof(float)) == 0;
            CHECK(same == (t < 6 + 3));
        }
        free(with);
    }
    free(base);
    retrlm_model_free(&p);
    retrlm_model_free(&m);
}

// a model big enough that the parallel paths run: width 64, chunks of 8, 2 neighbours of 16
static void mid_config(retrlm_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 50; c->dim = 64; c->n_layers = 3; c->n_heads = 4; c->max_seq_len = 128;
    c->max_batch = 4; c->seed = 21;
    c->retro_chunk = 8; c->retro_k = 2; c->retro_len = 16; c->retro_start = 1;
    c->retro_enc_dim = 32; c->retro_enc_layers = 2; c->retro_enc_heads = 2;
}

static void mid_batch(int *tok, int *tgt, int *nb, int B, int T, const retrlm_model_config *c,
                      uint64_t seed) {
    retrlm_rng rng;
    int i, n = B * (T / c->retro_chunk) * c->retro_k * c->retro_len;
    retrlm_rng_seed(&rng, seed);
    for (i = 0; i < B * T; i++) {
        tok[i] = (int)retrlm_rng_below(&rng, (uint64_t)c->vocab_size);
        tgt[i] = (int)retrlm_rng_below(&rng, (uint64_t)c->vocab_size);
    }
    for (i = 0; i < n; i++) nb[i] = (int)retrlm_rng_below(&rng, (uint64_t)c->vocab_size);
    for (i = 0; i < n; i += 5 * c->retro_len) nb[i] = -1; // some absent
    for (i = 3; i < n; i += 7 * c->retro_len) nb[i] = -1; // some cut short (the rest -1 below)
    for (i = 0; i < n / c->retro_len; i++) {
        int t, cut = 0;
        for (t = 0; t < c->retro_len; t++) {
            if (nb[i * c->retro_len + t] < 0) cut = 1;
            if (cut) nb[i * c->retro_len + t] = -1;
        }
    }
}

static void retro_decode(int smear) {
    retrlm_model_config cfg;
    retrlm_model m;
    const int T = 40, V = 50;
    int tok[160], tgt[160], nb[4 * 16 * 2 * 16], pos;
    float worst = 0.0f;
    mid_config(&cfg);
    cfg.retro_smear = smear;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    mid_batch(tok, tgt, nb, 1, T, &cfg, 5);
    CHECK_OK(retrlm_model_forward_retro(&m, tok, 1, T, NULL, nb, 0));
    {
        float *full = (float *)malloc((size_t)T * V * sizeof(float));
        memcpy(full, m.logits, (size_t)T * V * sizeof(float));
        CHECK(retrlm_model_decode(&m, tok[0], 7) == RETRLM_ERR_ARG); // chunk 0 not given yet
        for (pos = 0; pos < T; pos++) {
            int j;
            if (pos >= 7 && (pos - 7) % 8 == 0)
                CHECK_OK(retrlm_model_decode_neighbours(&m, (pos - 7) / 8,
                                                        nb + (size_t)(pos - 7) / 8 * 2 * 16));
            CHECK_OK(retrlm_model_decode(&m, tok[pos], pos));
            for (j = 0; j < V; j++) {
                float d = fabsf(m.step_logits[j] - full[pos * V + j]);
                if (d > worst) worst = d;
            }
        }
        CHECK(worst < 1e-4f);
        free(full);
    }
    retrlm_model_free(&m);
}

static void test_retro_decode(void) {
    retro_decode(0);
    retro_decode(1);
}

// forward, loss, backward and an AdamW step on the mid model; returns the loss
static float mid_step(retrlm_model *m, retrlm_adamw *o, uint64_t seed) {
    int tok[4 * 128], tgt[4 * 128], nb[4 * 16 * 2 * 16];
    retrlm_model_grad_in gin;
    float loss = 0.0f;
    mid_batch(tok, tgt, nb, 4, 128, &m->config, seed);
    CHECK_OK(retrlm_model_forward_retro(m, tok, 4, 128, NULL, nb, 0));
    CHECK_OK(retrlm_model_lm_loss(m, tgt, &loss, NULL));
    memset(&gin, 0, sizeof gin);
    gin.dlogits = m->logits;
    retrlm_model_zero_grad(m);
    CHECK_OK(retrlm_model_backward(m, &gin));
    retrlm_adamw_step(o);
    return loss;
}

static void mid_opt(retrlm_adamw *o, retrlm_model *m) {
    retrlm_adamw_group g[2];
    int n = retrlm_model_param_groups(m, 1e-3f, 0.1f, g);
    CHECK_OK(retrlm_adamw_init(o, NULL, g, n));
}

static void retro_threads_and_resume(int smear) {
    retrlm_model_config cfg;
    retrlm_model m[2], r;
    retrlm_adamw o[2], ro;
    retrlm_lm_train_state st;
    void *buf = NULL;
    size_t size = 0;
    int i, s;
    float loss[2][3];
    mid_config(&cfg);
    cfg.retro_smear = smear;
    for (i = 0; i < 2; i++) {
        set_threads(i + 1);
        CHECK_OK(retrlm_model_init(&m[i], &cfg));
        if (!m[i].params) return;
        mid_opt(&o[i], &m[i]);
        for (s = 0; s < 2; s++) loss[i][s] = mid_step(&m[i], &o[i], 100 + (uint64_t)s);
    }
    CHECK(loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1]);
    CHECK(memcmp(m[0].params, m[1].params, m[0].n_params * sizeof(float)) == 0);
    CHECK(memcmp(m[0].grads, m[1].grads, m[0].n_params * sizeof(float)) == 0);
    // save after 2 steps, continue both the original and the reloaded copy: identical
    retrlm_lm_train_state_init(&st, 1);
    st.step = 2;
    CHECK_OK(retrlm_model_save_memory(&m[0], &o[0], &st, NULL, 0, &size));
    buf = malloc(size);
    CHECK_OK(retrlm_model_save_memory(&m[0], &o[0], &st, buf, size, &size));
    CHECK_OK(retrlm_model_load_memory(&r, buf, size, NULL));
    if (r.params) {
        CHECK(r.config.retro_chunk == 8 && r.config.retro_len == 16 && r.config.retro_start == 1 &&
              r.config.retro_enc_dim == 32 && r.config.retro_smear == smear &&
              r.n_params == m[0].n_params);
        CHECK(memcmp(r.params, m[0].params, r.n_params * sizeof(float)) == 0);
        mid_opt(&ro, &r);
        CHECK_OK(retrlm_model_load_state_memory(&ro, &st, buf, size));
        loss[0][2] = mid_step(&m[0], &o[0], 102);
        loss[1][2] = mid_step(&r, &ro, 102);
        CHECK(loss[0][2] == loss[1][2]);
        CHECK(memcmp(r.params, m[0].params, r.n_params * sizeof(float)) == 0);
        retrlm_adamw_free(&ro);
        retrlm_model_free(&r);
    }
    free(buf);
    set_threads(2);
    {
        // an inference-only view reads the same logits with neighbours, and cannot train
        retrlm_model_config over;
        retrlm_model q;
        retrlm_model_grad_in gin;
        int tok[4 * 128], tgt[4 * 128], nb[4 * 16 * 2 * 16];
        size_t nl = (size_t)4 * 128 * (size_t)cfg.vocab_size;
        float *full = (float *)malloc(nl * sizeof(float));
        memset(&over, 0, sizeof over);
        over.inference = 1;
        CHECK_OK(retrlm_model_init_view(&q, &m[0], &over));
        mid_batch(tok, tgt, nb, 4, 128, &m[0].config, 7);
        CHECK_OK(retrlm_model_forward_retro(&m[0], tok, 4, 128, NULL, nb, 0));
        memcpy(full, m[0].logits, nl * sizeof(float));
        CHECK(!q.grads && q.retro_enc && !q.retro_enc->grads);
        CHECK_OK(retrlm_model_forward_retro(&q, tok, 4, 128, NULL, nb, 0));
        CHECK(!memcmp(full, q.logits, nl * sizeof(float)));
        memset(&gin, 0, sizeof gin);
        gin.dlogits = q.logits;
        CHECK(retrlm_model_backward(&q, &gin) == RETRLM_ERR_ARG);
        CHECK(retrlm_model_retro_tie_embedding(&q, 1) == RETRLM_ERR_ARG);
        retrlm_model_free(&q);
        free(full);
    }
    for (i = 0; i < 2; i++) {
        retrlm_adamw_free(&o[i]);
        retrlm_model_free(&m[i]);
    }
}

static void test_retro_threads_and_resume(void) {
    retro_threads_and_resume(0);
    retro_threads_and_resume(1);
}

// RETRO-fitting's groups hold exactly the cross-attention and the neighbour encoder; a view
// shares them
static void test_retro_groups_and_view(void) {
    retrlm_model_config cfg;
    retrlm_model m, p, v;
    retrlm_adamw_group g[2];
    retrlm_model_config over;
    int n, tok[16], nb[2 * 2 * 16 * 2], i;
    float *keep;
    mid_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    plain_copy(&p, &m);
    if (!m.params || !p.params) return;
    n = retrlm_model_retro_param_groups(&m, 1e-3f, 0.1f, g);
    CHECK(n == 2 && g[0].n + g[1].n == m.n_params - p.n_params);
    CHECK(g[0].params == m.param[RETRLM_T_CCA_WQ] && g[1].params == m.param[RETRLM_T_CCA_NORM]);
    CHECK(g[0].params + g[0].n == m.params + m.n_decay && g[1].params + g[1].n == m.params + m.n_params);
    CHECK(retrlm_model_retro_param_groups(&p, 1e-3f, 0.1f, g) == 0);
    CHECK(retrlm_model_is_retro_layer(&m, 1) && !retrlm_model_is_retro_layer(&m, 0) &&
          !retrlm_model_is_retro_layer(&m, 2) && !retrlm_model_is_retro_layer(&p, 1));
    memset(&over, 0, sizeof over);
    over.max_batch = 1;
    over.max_seq_len = 16;
    CHECK_OK(retrlm_model_init_view(&v, &m, &over));
    for (i = 0; i < 16; i++) tok[i] = i * 3 % 50;
    for (i = 0; i < 2 * 2 * 16; i++) nb[i] = (i * 7 + 1) % 50;
    CHECK_OK(retrlm_model_forward_retro(&m, tok, 1, 16, NULL, nb, 0));
    keep = (float *)malloc(16 * 50 * sizeof(float));
    memcpy(keep, m.logits, 16 * 50 * sizeof(float));
    CHECK_OK(retrlm_model_forward_retro(&v, tok, 1, 16, NULL, nb, 0));
    CHECK(memcmp(keep, v.logits, 16 * 50 * sizeof(float)) == 0);
    free(keep);
    retrlm_model_free(&v);
    retrlm_model_free(&p);
    retrlm_model_free(&m);
}

// The point of RETRO, through the trainer: a stream of random tokens whose every chunk has as
// its neighbour the chunk itself and its continuation (the true next chunk). Without neighbours
// nothing is predictable (4 bits a token); a model that reads its neighbours copies the
// continuation. Held-out text: bits per byte with neighbours far below the same model without.
// A RETRO model on fresh random text (the decoder cannot learn it by heart) trained 1,000 steps;
// held-out bits a token with each chunk's own continuation as its neighbour (*with) and with
// none (*without). share: the copy curriculum's copy_share; absent: train with every retrieved
// neighbour absent, so that only the curriculum shows the model anything to copy.
static void copy_run(float share, int absent, double *with, double *without,
                     retrlm_retro_train_state *st) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_adamw_config oc;
    retrlm_rng rng;
    retrlm_retro_train_config tc;
    retrlm_retro_neighbours nb[2];
    enum { V = 16, MC = 4, R = 8, NTR = 65536, NTE = 1024 };
    int *text = (int *)malloc((NTR + NTE) * sizeof(int)), *nbt[2], n, i, s;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = V; cfg.dim = 32; cfg.n_layers = 2; cfg.n_heads = 2; cfg.max_seq_len = 32;
    cfg.max_batch = 8; cfg.seed = 1;
    cfg.retro_chunk = MC; cfg.retro_k = 1; cfg.retro_len = R; cfg.retro_start = 1;
    cfg.retro_enc_dim = 32; cfg.retro_enc_layers = 1; cfg.retro_enc_heads = 2;
    *with = *without = 0.0;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params || !text) return;
    retrlm_rng_seed(&rng, 9);
    for (i = 0; i < NTR + NTE; i++) text[i] = (int)retrlm_rng_below(&rng, V);
    for (s = 0; s < 2; s++) { // train's chunks and test's: each chunk and its continuation
        const int *x = text + (s ? NTR : 0);
        int len = s ? NTE : NTR, c, t;
        memset(&nb[s], 0, sizeof nb[s]);
        nb[s].chunk = MC; nb[s].k = 1; nb[s].len = R; nb[s].n_chunks = len / MC;
        nbt[s] = (int *)malloc((size_t)len / MC * R * sizeof(int));
        for (c = 0; c < len / MC; c++)
            for (t = 0; t < R; t++)
                nbt[s][c * R + t] = c * MC + t < len && !(absent && !s) ? x[c * MC + t] : -1;
        nb[s].tokens = nbt[s];
    }
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = 20;
    n = retrlm_model_param_groups(&m, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&o, &oc, g, n));
    memset(&tc, 0, sizeof tc);
    tc.train = text; tc.n_train = NTR; tc.neighbours = &nb[0];
    tc.valid = text + NTR; tc.n_valid = NTE; tc.valid_bytes = NTE; tc.valid_neighbours = &nb[1];
    tc.steps = 1000;
    tc.copy_share = share;
    retrlm_retro_train_state_init(st, 3);
    CHECK_OK(retrlm_retro_train(&m, &o, &tc, st));
    CHECK_OK(retrlm_retro_bits_per_byte(&m, text + NTR, NTE, NTE, &nb[1], 0, with));
    CHECK(*with == st->lm.last_valid_bpb);
    for (i = 0; i < (int)nb[1].n_chunks * R; i++) nbt[1][i] = -1;
    CHECK_OK(retrlm_retro_bits_per_byte(&m, text + NTR, NTE, NTE, &nb[1], 0, without));
    // a bad shape is refused
    nb[1].len = R + 1;
    CHECK(retrlm_retro_bits_per_byte(&m, text + NTR, NTE, NTE, &nb[1], 0, with) == RETRLM_ERR_ARG);
    CHECK(retrlm_retro_bits_per_byte(&m, text + NTR, NTE, NTE, &nb[0], 6, with) == RETRLM_ERR_ARG);
    tc.copy_share = 1.5f; // and a share outside [0, 1]
    CHECK(retrlm_retro_train(&m, &o, &tc, st) == RETRLM_ERR_ARG);
    free(nbt[0]);
    free(nbt[1]);
    free(text);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
}

// 3 steps of the tiny copy model, every retrieved neighbour absent: a hash of the weights after
static double copy_steps_run(float share, int64_t copy_steps) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_retro_train_config tc;
    retrlm_retro_train_state st;
    retrlm_retro_neighbours nb;
    retrlm_rng rng;
    enum { V = 16, NTR = 2048 };
    int text[NTR], nbt[NTR / 4 * 8], i, n;
    double h = 0.0;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = V; cfg.dim = 16; cfg.n_layers = 1; cfg.n_heads = 2; cfg.max_seq_len = 32;
    cfg.max_batch = 4; cfg.seed = 1;
    cfg.retro_chunk = 4; cfg.retro_k = 1; cfg.retro_len = 8;
    cfg.retro_enc_dim = 8; cfg.retro_enc_layers = 1; cfg.retro_enc_heads = 2;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return 0.0;
    retrlm_rng_seed(&rng, 9);
    for (i = 0; i < NTR; i++) text[i] = (int)retrlm_rng_below(&rng, V);
    for (i = 0; i < NTR / 4 * 8; i++) nbt[i] = -1;
    memset(&nb, 0, sizeof nb);
    nb.chunk = 4; nb.k = 1; nb.len = 8; nb.n_chunks = NTR / 4; nb.tokens = nbt;
    n = retrlm_model_param_groups(&m, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&o, NULL, g, n));
    memset(&tc, 0, sizeof tc);
    tc.train = text; tc.n_train = NTR; tc.neighbours = &nb; tc.steps = 3;
    tc.copy_share = share; tc.copy_steps = copy_steps;
    retrlm_retro_train_state_init(&st, 3);
    CHECK_OK(retrlm_retro_train(&m, &o, &tc, &st));
    for (i = 0; i < (int)m.n_params; i++) h += (double)m.params[i] * (double)((i % 7) + 1);
    tc.copy_steps = -1;
    tc.steps = 4;
    CHECK(retrlm_retro_train(&m, &o, &tc, &st) == RETRLM_ERR_ARG);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    return h;
}

// copy_steps ends the curriculum: the run with copies in the first step only is neither the
// one with copies throughout nor the one with none; copy_steps past the end changes nothing
static void test_retro_copy_steps(void) {
    double all = copy_steps_run(0.5f, 0), to_end = copy_steps_run(0.5f, 3);
    double first = copy_steps_run(0.5f, 1), none = copy_steps_run(0.0f, 0);
    CHECK(all == to_end);
    CHECK(first != all && first != none && all != none);
}

static void test_retro_learns_to_copy(void) {
    retrlm_retro_train_state st;
    double with, without;
    copy_run(0.0f, 0, &with, &without, &st);
    printf("retro copy: held-out %.3f bits a token with neighbours, %.3f without (log2 V = 4); "
           "probe loss %.3f / %.3f nats\n", with, without, (double)st.probe_with,
           (double)st.probe_without);
    // a window's first MC - 1 = 3 of 32 positions have no neighbours: 0.375 bits a token at best
    CHECK(with < 1.0 && without > 3.6);
    CHECK(st.probe_with < 0.6f * st.probe_without);
}

// The copy curriculum alone teaches copying: every retrieved neighbour absent in training, the
// curriculum's own text in half the chunks (from a shifted start); held out, the chunk's
// continuation is copied. Without the curriculum the same model never reads a neighbour.
static void test_retro_copy_curriculum(void) {
    retrlm_retro_train_state st;
    double with, without, with0, without0;
    copy_run(0.5f, 1, &with, &without, &st);
    copy_run(0.0f, 1, &with0, &without0, &st);
    printf("retro copy curriculum: held-out %.3f bits a token with neighbours, %.3f without; "
           "no curriculum %.3f / %.3f\n", with, without, with0, without0);
    // the curriculum's copies start up to MC / 2 tokens early and reach half the chunks: the
    // model learns to find its place in a neighbour, not to read it at a fixed offset
    CHECK(with < 2.0 && without > 3.6);
    CHECK(with0 > 3.6 && without0 > 3.6);
}

// ---- neighbours from a datastore

static const char *nb_docs[] = {
    "The kernel module provides support for the wireless network adapter and its firmware loader.",
    "This package provides support for the wireless network adapter and its firmware loader too.",
    "A small game of strategy where players build cities, trade goods and raise great armies.",
    "Documentation for the library: examples, reference pages and a tutorial for new users.",
};

static void nb_setup(retrlm_tokenizer *tok, retrlm_datastore *ds) {
    retrlm_tokenizer_train_config tc;
    retrlm_datastore_config dc;
    int i;
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(tok, &tc, nb_docs, NULL, 4, NULL, NULL));
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = 6;
    CHECK_OK(retrlm_datastore_init(ds, &dc));
    for (i = 0; i < 4; i++)
        CHECK_OK(retrlm_datastore_add(ds, tok, i, nb_docs[i], strlen(nb_docs[i]),
                                      RETRLM_DATASTORE_CHUNK));
    CHECK_OK(retrlm_datastore_commit(ds));
}

// whether neighbour x (len ids, -1 padded) is some unit of a document outside docs[0..m) and the
// units after it in its document (or the unit alone), cut to len; *unit gets it
static int nb_valid(const retrlm_datastore *ds, const int *x, int len, const int64_t *docs, int m,
                    int unit_only, int *unit) {
    int u, v, w, e, t;
    for (u = 0; u < ds->n_units; u++) {
        int exp[64], ok = 1;
        for (t = 0; t < m; t++) ok &= !docs || ds->unit_doc[u] != docs[t];
        if (!ok) continue;
        for (w = 0; w < len; w++) exp[w] = -1;
        w = 0;
        for (v = u; v < ds->n_units && w < len; v++) {
            int nt;
            const int *ids;
            if (v > u && (unit_only || ds->unit_doc[v] != ds->unit_doc[u])) break;
            ids = retrlm_datastore_tokens(ds, v, &nt);
            for (e = 0; e < nt && w < len; e++) exp[w++] = ids[e];
        }
        if (!memcmp(exp, x, (size_t)len * sizeof(int))) {
            *unit = u;
            return 1;
        }
    }
    return 0;
}

static void test_retro_neighbours(void) {
    retrlm_tokenizer tok;
    retrlm_datastore ds;
    retrlm_retro_neighbours nb, n2, ld;
    retrlm_retro_neighbours_config nc;
    int *stream = NULL, n0 = 0, n2t = 0, c, j, unit, ok = 1, copy_found = 0;
    int64_t *doc;
    size_t size = 0, n;
    void *img;
    nb_setup(&tok, &ds);
    // the stream: document 0 then document 2, as a training stream would hold them
    CHECK_OK(retrlm_tokenizer_encode_alloc(&tok, nb_docs[0], strlen(nb_docs[0]), 0, &stream, &n));
    n0 = (int)n;
    {
        int *s2 = NULL;
        CHECK_OK(retrlm_tokenizer_encode_alloc(&tok, nb_docs[2], strlen(nb_docs[2]), 0, &s2, &n));
        n2t = (int)n;
        stream = (int *)realloc(stream, (size_t)(n0 + n2t) * sizeof(int));
        memcpy(stream + n0, s2, (size_t)n2t * sizeof(int));
        free(s2);
    }
    n = (size_t)(n0 + n2t);
    doc = (int64_t *)malloc(n * sizeof(int64_t));
    for (c = 0; c < (int)n; c++) doc[c] = c < n0 ? 0 : 2;
    memset(&nc, 0, sizeof nc);
    nc.chunk = 6; nc.k = 2; nc.len = 12;
    set_threads(1);
    CHECK_OK(retrlm_retro_neighbours_build(&nb, &ds, &tok, stream, n, doc, &nc));
    set_threads(2);
    CHECK_OK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc));
    CHECK(nb.n_chunks == (int64_t)(n / 6) && nb.k == 2 && nb.len == 12);
    CHECK(n2.n_chunks == nb.n_chunks &&
          !memcmp(nb.tokens, n2.tokens, (size_t)nb.n_chunks * 24 * sizeof(int)));
    for (c = 0; c < nb.n_chunks; c++)
        for (j = 0; j < 2; j++) {
            const int *x = retrlm_retro_neighbours_chunk(&nb, c) + j * 12;
            if (x[0] < 0) continue;
            // never the chunk's own documents; always a unit and its continuation
            ok &= nb_valid(&ds, x, 12, doc + c * 6, 6, 0, &unit);
            if (c * 6 < n0 && j == 0 && ds.unit_doc[unit] == 1) copy_found = 1;
        }
    CHECK(ok);
    CHECK(copy_found); // document 0's chunks find its near-copy, document 1
    // no exclusion: the first chunk finds itself, and with unit_only the unit alone
    retrlm_retro_neighbours_free(&n2);
    nc.unit_only = 1;
    CHECK_OK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, NULL, &nc));
    CHECK(nb_valid(&ds, n2.tokens, 12, NULL, 0, 1, &unit) && unit == 0);
    CHECK(n2.tokens[6] == -1);
    // the file round trip, then damaged files
    CHECK_OK(retrlm_retro_neighbours_save_memory(&nb, NULL, 0, &size));
    img = malloc(size);
    CHECK_OK(retrlm_retro_neighbours_save_memory(&nb, img, size, &size));
    CHECK_OK(retrlm_retro_neighbours_load_memory(&ld, img, size));
    CHECK(ld.n_chunks == nb.n_chunks && ld.chunk == 6 && ld.k == 2 && ld.len == 12 &&
          !memcmp(ld.tokens, nb.tokens, (size_t)nb.n_chunks * 24 * sizeof(int)));
    retrlm_retro_neighbours_free(&ld);
    {
        // a -1 followed by an id, and an id below -1: both refused (CRC fixed up by re-saving)
        int *bad = (int *)malloc((size_t)nb.n_chunks * 24 * sizeof(int));
        retrlm_retro_neighbours forged = nb;
        void *img2;
        size_t s2 = 0;
        memcpy(bad, nb.tokens, (size_t)nb.n_chunks * 24 * sizeof(int));
        bad[11] = -1; bad[10] = 5; bad[9] = -1;
        forged.tokens = bad;
        CHECK_OK(retrlm_retro_neighbours_save_memory(&forged, NULL, 0, &s2));
        img2 = malloc(s2);
        CHECK_OK(retrlm_retro_neighbours_save_memory(&forged, img2, s2, &s2));
        CHECK(retrlm_retro_neighbours_load_memory(&ld, img2, s2) == RETRLM_ERR_FORMAT);
        bad[9] = -2;
        CHECK_OK(retrlm_retro_neighbours_save_memory(&forged, img2, s2, &s2));
        CHECK(retrlm_retro_neighbours_load_memory(&ld, img2, s2) == RETRLM_ERR_FORMAT);
        CHECK(retrlm_retro_neighbours_load_memory(&ld, img, size / 2) != RETRLM_OK);
        free(img2);
        free(bad);
    }
    retrlm_retro_neighbours_free(&n2); // build starts from a zeroed object, as every _init
    nc.k = 0; nc.len = 9000;
    CHECK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc) == RETRLM_ERR_ARG);
    free(img);
    free(doc);
    free(stream);
    retrlm_retro_neighbours_free(&n2);
    retrlm_retro_neighbours_free(&nb);
    retrlm_datastore_free(&ds);
    retrlm_tokenizer_free(&tok);
}

// retrlm_retro_overlap by hand, and min_overlap: every neighbour kept holds that share of its
// chunk's bigrams, absent ones come last, a chunk whose first neighbour passed keeps it
static void test_retro_min_overlap(void) {
    static const int x[5] = {1, 2, 3, 1, 2}, y[8] = {2, 3, 9, 1, 2, -1, 3, 1};
    retrlm_tokenizer tok;
    retrlm_datastore ds;
    retrlm_retro_neighbours nb, nf;
    retrlm_retro_neighbours_config nc;
    int *stream = NULL, c, j, ok = 1, kept = 0, dropped = 0;
    int64_t *doc;
    size_t n;
    // x's distinct bigrams (1,2) (2,3) (3,1); y up to its -1 holds the first two
    CHECK_NEAR(retrlm_retro_overlap(x, 5, y, 8), 2.0 / 3.0, 1e-6);
    CHECK_NEAR(retrlm_retro_overlap(x, 5, x, 5), 1.0, 0);
    CHECK_NEAR(retrlm_retro_overlap(x, 1, x, 5), 0.0, 0);
    CHECK_NEAR(retrlm_retro_overlap(x, 5, y + 5, 3), 0.0, 0);
    nb_setup(&tok, &ds);
    CHECK_OK(retrlm_tokenizer_encode_alloc(&tok, nb_docs[0], strlen(nb_docs[0]), 0, &stream, &n));
    doc = (int64_t *)calloc(n, sizeof(int64_t));
    memset(&nc, 0, sizeof nc);
    nc.chunk = 6; nc.k = 2; nc.len = 12;
    CHECK_OK(retrlm_retro_neighbours_build(&nb, &ds, &tok, stream, n, doc, &nc));
    nc.min_overlap = 0.5f;
    set_threads(1);
    CHECK_OK(retrlm_retro_neighbours_build(&nf, &ds, &tok, stream, n, doc, &nc));
    for (c = 0; c < nf.n_chunks; c++) {
        const int *a = retrlm_retro_neighbours_chunk(&nb, c), *f = retrlm_retro_neighbours_chunk(&nf, c);
        for (j = 0; j < 2; j++) {
            float o = retrlm_retro_overlap(stream + c * 6, 6, f + j * 12, 12);
            if (f[j * 12] < 0) {
                dropped++;
                ok &= j == 1 || f[12] < 0; // absent ones last
                continue;
            }
            kept++;
            ok &= o >= 0.5f;
        }
        if (retrlm_retro_overlap(stream + c * 6, 6, a, 12) >= 0.5f)
            ok &= !memcmp(a, f, 12 * sizeof(int));
    }
    CHECK(ok);
    CHECK(kept > 0 && dropped > 0); // the near-copy (document 1) passes, the rest do not
    {
        retrlm_retro_neighbours n2;
        set_threads(2);
        CHECK_OK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc));
        CHECK(!memcmp(n2.tokens, nf.tokens, (size_t)nf.n_chunks * 24 * sizeof(int)));
        retrlm_retro_neighbours_free(&n2);
        nc.min_overlap = -0.1f;
        CHECK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc) == RETRLM_ERR_ARG);
        nc.min_overlap = 1.5f;
        CHECK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc) == RETRLM_ERR_ARG);
        nc.min_overlap = NAN;
        CHECK(retrlm_retro_neighbours_build(&n2, &ds, &tok, stream, n, doc, &nc) == RETRLM_ERR_ARG);
    }
    free(doc);
    free(stream);
    retrlm_retro_neighbours_free(&nf);
    retrlm_retro_neighbours_free(&nb);
    retrlm_datastore_free(&ds);
    retrlm_tokenizer_free(&tok);
}

static void test_retro_bad_input(void) {
    retrlm_model_config cfg;
    retrlm_model m, p;
    int tok[12] = {0}, nb[36], i;
    size_t size = 0;
    tiny_config(&cfg);
    cfg.retro_chunk = 7; // > max_seq_len
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    tiny_config(&cfg);
    cfg.bidirectional = 1;
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    tiny_config(&cfg);
    cfg.retro_enc_dim = 6; // not a multiple of 2 * 2 heads
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    tiny_config(&cfg);
    cfg.retro_start = 2;
    CHECK(retrlm_model_init(&m, &cfg) == RETRLM_ERR_ARG);
    tiny_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    plain_copy(&p, &m);
    if (!m.params || !p.params) return;
    for (i = 0; i < 36; i++) nb[i] = 1;
    nb[5] = 7; // = V
    CHECK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, nb, 0) == RETRLM_ERR_ARG);
    nb[5] = -2;
    CHECK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, nb, 0) == RETRLM_ERR_ARG);
    nb[5] = 1;
    nb[3] = -1; // a token after the -1 that ends neighbour 1
    CHECK(retrlm_model_forward_retro(&m, tok, 2, 6, NULL, nb, 0) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_forward_retro(&p, tok, 2, 6, NULL, nb, 0) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_decode_neighbours(&p, 0, NULL) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_decode_neighbours(&m, 4, NULL) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_save_safetensors_memory(&m, NULL, 0, &size) == RETRLM_ERR_ARG);
    retrlm_model_free(&p);
    retrlm_model_free(&m);
}

// the encoder's embedding becomes a fixed linear map of the decoder's: rows that are equal or
// multiples in the decoder stay so in the encoder; the same seed, the same map; no RETRO, no call
static void test_retro_tie_embedding(void) {
    retrlm_model_config cfg;
    retrlm_model m[2];
    int i, j;
    mid_config(&cfg);
    for (i = 0; i < 2; i++) CHECK_OK(retrlm_model_init(&m[i], &cfg));
    if (!m[0].params || !m[1].params) return;
    {
        const int D = cfg.dim, De = cfg.retro_enc_dim;
        float *de = m[0].param[RETRLM_T_EMBED], *ee = m[0].retro_enc->param[RETRLM_T_EMBED], worst = 0.0f;
        double n2 = 0.0;
        for (j = 0; j < D; j++) {
            de[3 * D + j] = de[5 * D + j];        // row 3 = row 5
            de[7 * D + j] = -2.0f * de[9 * D + j]; // row 7 = -2 row 9
        }
        memcpy(m[1].param[RETRLM_T_EMBED], de, (size_t)cfg.vocab_size * D * sizeof(float));
        CHECK_OK(retrlm_model_retro_tie_embedding(&m[0], 3));
        CHECK_OK(retrlm_model_retro_tie_embedding(&m[1], 3));
        CHECK(memcmp(ee, m[1].retro_enc->param[RETRLM_T_EMBED], (size_t)cfg.vocab_size * De * sizeof(float)) == 0);
        for (j = 0; j < De; j++) {
            float d1 = fabsf(ee[3 * De + j] - ee[5 * De + j]), d2 = fabsf(ee[7 * De + j] + 2.0f * ee[9 * De + j]);
            worst = d1 > worst ? d1 : worst;
            worst = d2 > worst ? d2 : worst;
            n2 += (double)ee[5 * De + j] * ee[5 * De + j];
        }
        CHECK(worst < 1e-6f && n2 > 1e-6);
        // a projection with variance 1/De keeps a row's squared norm on average: row 5's within 3x
        {
            double d2 = 0.0;
            for (j = 0; j < D; j++) d2 += (double)de[5 * D + j] * de[5 * D + j];
            CHECK(n2 > d2 / 3.0 && n2 < d2 * 3.0);
        }
        CHECK_OK(retrlm_model_retro_tie_embedding(&m[1], 4));
        CHECK(memcmp(ee, m[1].retro_enc->param[RETRLM_T_EMBED], (size_t)De * sizeof(float)) != 0);
    }
    for (i = 0; i < 2; i++) retrlm_model_free(&m[i]);
    {
        retrlm_model p;
        mid_config(&cfg);
        cfg.retro_chunk = 0;
        CHECK_OK(retrlm_model_init(&p, &cfg));
        if (p.params) CHECK(retrlm_model_retro_tie_embedding(&p, 1) == RETRLM_ERR_ARG);
        retrlm_model_free(&p);
    }
}

int main(void) {
    RUN(test_retro_grads);
    RUN(test_retro_masked_is_plain);
    RUN(test_retro_decode);
    RUN(test_retro_threads_and_resume);
    RUN(test_retro_groups_and_view);
    RUN(test_retro_tie_embedding);
    RUN(test_retro_learns_to_copy);
    RUN(test_retro_copy_curriculum);
    RUN(test_retro_copy_steps);
    RUN(test_retro_neighbours);
    RUN(test_retro_min_overlap);
    RUN(test_retro_bad_input);
    return test_report();
}
