// model: layer gradient checks, whole-model gradient checks (causal, bidirectional, gradients
// entering at hidden states), AdamW, training determinism and resume, checkpoints, generation,
// safetensors
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"

#include "gradcheck.h"

// ---- layer checks: loss = sum r . layer(x)

typedef struct layer_ctx {
    int N, D, B, T, H, hd, causal, which;
    int len[4];
    float *x, *w, *y, *r, *rstd, *q, *k, *v, *att, *gate, *up, *cs, *sn;
} layer_ctx;

static double layer_loss(void *p) {
    layer_ctx *c = (layer_ctx *)p;
    size_t n = (size_t)c->N * c->D;
    switch (c->which) {
    case 0:
        retrlm__rmsnorm_forward(c->y, c->rstd, c->x, c->w, c->N, c->D, 1e-5f);
        break;
    case 1:
        memcpy(c->y, c->x, n * sizeof(float));
        retrlm__rope(c->y, c->N, c->T, 0, c->H, c->hd, c->cs, c->sn, 0);
        break;
    case 2:
        retrlm__attention_forward(c->y, c->att, c->q, c->k, c->v, c->len, c->B, c->T, 0, c->H, c->hd,
                                  c->causal, NULL, 0);
        break;
    default:
        retrlm__swiglu_forward(c->y, c->gate, c->up, n);
        break;
    }
    return dotd(c->r, c->y, n);
}

// SwiGLU's sigmoid (retrlm__sigmoid: 16 at a time, the last few through a padded block) against
// double over [-100, 100]: every length 0..40 (each tail), in place, signed zeros, where e^-|x|
// is under a normal float (0 or 1 then), infinities and NaN
static void test_sigmoid(void) {
    enum { N = 4000 };
    float *x = (float *)malloc(sizeof(float) * N), *s = (float *)malloc(sizeof(float) * N);
    float *all = (float *)malloc(sizeof(float) * N);
    double worst = 0.0;
    int i, n;
    for (i = 0; i < N; i++) x[i] = -100.0f + 200.0f * (float)((i * 7919) % N) / (float)N;
    x[5] = 0.0f, x[6] = -0.0f, x[7] = 87.5f, x[8] = -87.5f, x[9] = 1e-30f, x[10] = -1e-30f;
    retrlm__sigmoid(s, x, N);
    for (i = 0; i < N; i++) {
        const double want = 1.0 / (1.0 + exp(-(double)x[i]));
        if (want < 1e-37) { // e^-|x| below e^-87.3: taken as 0
            CHECK(s[i] >= 0.0f && s[i] <= 1e-37f);
            continue;
        }
        if (fabs(s[i] - want) / want > worst) worst = fabs(s[i] - want) / want;
    }
    if (!(worst < 4e-7)) fprintf(stderr, "sigmoid: worst relative error %g\n", worst);
    CHECK(worst < 4e-7); // the exponential's ulp, the sum's and the quotient's
    CHECK(s[5] == 0.5f && s[6] == 0.5f && s[7] == 1.0f && s[9] == 0.5f && s[10] == 0.5f);
    memcpy(all, s, sizeof(float) * N);
    for (n = 0; n <= 40; n++) { // every tail, in place: each the same bits; nothing past n written
        memcpy(s, x, sizeof(float) * (size_t)(n + 1));
        retrlm__sigmoid(s, s, (size_t)n);
        for (i = 0; i < n; i++) CHECK(s[i] == all[i]);
        CHECK(s[n] == x[n]);
    }
    x[0] = INFINITY, x[1] = -INFINITY, x[2] = NAN;
    retrlm__sigmoid(s, x, 3);
    CHECK(s[0] == 1.0f && s[1] == 0.0f && s[2] != s[2]);
    free(x);
    free(s);
    free(all);
}

// attention against a double-precision reference at a length of several blocks
// (RETRLM__ATT_BLOCK), causal and not, one sequence padded, with carried keys (off) in the
// forward; the same bits on 1 and 2 threads
static void test_attention_blocks(void) {
    enum { B = 2, T = 150, H = 2, hd = 8, D = H * hd, OFF = 70 };
    const size_t nq = (size_t)B * T * D, nk = (size_t)B * (OFF + T) * D;
    float *q = (float *)malloc(nq * sizeof(float)), *k = (float *)malloc(nk * sizeof(float));
    float *v = (float *)malloc(nk * sizeof(float)), *dy = (float *)malloc(nq * sizeof(float));
    float *y = (float *)malloc(nq * sizeof(float)), *y1 = (float *)malloc(nq * sizeof(float));
    float *g = (float *)malloc(3 * nq * sizeof(float)), *g1 = (float *)malloc(3 * nq * sizeof(float));
    float *att = (float *)malloc((size_t)B * H * T * (OFF + T) * sizeof(float));
    float *datt = (float *)malloc((size_t)B * H * T * T * sizeof(float));
    double *p = (double *)malloc((size_t)(OFF + T) * sizeof(double));
    double *ds = (double *)malloc((size_t)T * T * sizeof(double)), worst = 0.0;
    double *pm = (double *)malloc((size_t)T * T * sizeof(double));
    const int len[B] = {T, 97};
    retrlm_rng rng;
    int causal, off, th, b, h, t, j, d;
    retrlm_rng_seed(&rng, 11);
    fill_normal(q, nq, 1.0f, &rng);
    fill_normal(k, nk, 1.0f, &rng);
    fill_normal(v, nk, 1.0f, &rng);
    fill_normal(dy, nq, 1.0f, &rng);
    for (causal = 0; causal < 2; causal++)
        for (off = 0; off <= (causal ? OFF : 0); off += OFF) {
            const int Tk = off + T;
            for (th = 1; th <= 2; th++) {
#ifdef _OPENMP
                omp_set_num_threads(th);
#endif
                CHECK_OK(retrlm__attention_forward(th == 1 ? y1 : y, att, q, k, v, len, B, T, off, H,
                                                   hd, causal, NULL, 0));
                if (!off)
                    CHECK_OK(retrlm__attention_backward(th == 1 ? g1 : g, (th == 1 ? g1 : g) + nq,
                                                        (th == 1 ? g1 : g) + 2 * nq, datt, dy, att,
                                                        q, k, v, len, B, T, H, hd, causal, NULL, 0));
            }
            CHECK(!memcmp(y, y1, nq * sizeof(float)));
            if (!off) CHECK(!memcmp(g, g1, 3 * nq * sizeof(float)));
            for (b = 0; b < B; b++)
                for (h = 0; h < H; h++) {
                    const float *qb = q + (size_t)b * T * D + h * hd, *kb = k + (size_t)b * Tk * D + h * hd;
                    const float *vb = v + (size_t)b * Tk * D + h * hd, *dyb = dy + (size_t)b * T * D + h * hd;
                    for (t = 0; t < T; t++) {
                        const int n = off + (causal ? (t + 1 < len[b] ? t + 1 : len[b]) : len[b]);
                        double mx = -1e300, sum = 0.0, s = 0.0;
                        for (j = 0; j < n; j++) {
                            double a = 0.0;
                            for (d = 0; d < hd; d++) a += (double)qb[t * D + d] * kb[j * D + d];
                            p[j] = a / sqrt((double)hd);
                            if (p[j] > mx) mx = p[j];
                        }
                        for (j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
                        for (d = 0; d < hd; d++) {
                            double a = 0.0;
                            for (j = 0; j < n; j++) a += p[j] / sum * vb[j * D + d];
                            worst = fmax(worst, fabs(a - y[(size_t)b * T * D + t * D + h * hd + d]));
                        }
                        if (off) continue;
                        for (j = 0; j < T; j++) { // dS row t (0 where masked)
                            double dp = 0.0;
                            for (d = 0; d < hd; d++) dp += (double)dyb[t * D + d] * vb[j * D + d];
                            ds[t * T + j] = j < n ? p[j] / sum * dp : 0.0;
                            if (j < n) s += ds[t * T + j];
                        }
                        for (j = 0; j < n; j++)
                            ds[t * T + j] = (ds[t * T + j] - p[j] / sum * s) / sqrt((double)hd);
                        for (j = 0; j < T; j++) pm[t * T + j] = j < n ? p[j] / sum : 0.0; // for dv
                        for (d = 0; d < hd; d++) { // dq
                            double a = 0.0;
                            for (j = 0; j < n; j++) a += ds[t * T + j] * kb[j * D + d];
                            worst = fmax(worst, fabs(a - g[(size_t)b * T * D + t * D + h * hd + d]));
                        }
                    }
                    for (j = 0; j < T && !off; j++) // dk and dv: column j of dS and of P
                        for (d = 0; d < hd; d++) {
                            double ak = 0.0, av = 0.0;
                            for (t = 0; t < T; t++) { // both 0 where masked
                                ak += ds[t * T + j] * qb[t * D + d];
                                av += pm[t * T + j] * dyb[t * D + d];
                            }
                            worst = fmax(worst, fabs(ak - g[nq + (size_t)b * T * D + j * D + h * hd + d]));
                            worst = fmax(worst, fabs(av - g[2 * nq + (size_t)b * T * D + j * D + h * hd + d]));
                        }
                }
        }
    printf("attention at %d positions (%d-row blocks): worst |error| %.2g against double\n", T,
           RETRLM__ATT_BLOCK, worst);
    CHECK(worst < 1e-4);
    free(q), free(k), free(v), free(dy), free(y), free(y1), free(g), free(g1), free(att), free(datt);
    free(p), free(ds), free(pm);
}

static void test_layer_grads(void) {
    layer_ctx c;
    retrlm_rng rng;
    const int B = 2, T = 5, H = 2, hd = 4, D = H * hd, N = B * T;
    size_t n = (size_t)N * D;
    float *buf = (float *)calloc(20 * n + 4 * (size_t)B * H * T * T, sizeof(float)), *p = buf;
    float *dx, *dw, *dwr, *dq, *dk, *dv, *datt, *dgate, *dup;
    int i, t, causal;
    memset(&c, 0, sizeof c);
    c.N = N; c.D = D; c.B = B; c.T = T; c.H = H; c.hd = hd;
    c.x = p; p += n; c.w = p; p += n; c.y = p; p += n; c.r = p; p += n; c.rstd = p; p += n;
    c.q = p; p += n; c.k = p; p += n; c.v = p; p += n; c.gate = p; p += n; c.up = p; p += n;
    c.cs = p; p += n; c.sn = p; p += n;
    dx = p; p += n; dw = p; p += n; dwr = p; p += n; dq = p; p += n; dk = p; p += n; dv = p; p += n;
    dgate = p; p += n; dup = p; p += n;
    c.att = p; p += (size_t)B * H * T * T;
    datt = p;
    retrlm_rng_seed(&rng, 7);
    fill_normal(c.x, n, 1.0f, &rng);
    fill_normal(c.r, n, 1.0f, &rng);
    for (i = 0; i < D; i++) c.w[i] = 1.0f + 0.5f * retrlm_rng_normal(&rng);

    // rmsnorm: input and gain
    c.which = 0;
    layer_loss(&c);
    memset(dw, 0, (size_t)D * sizeof(float));
    retrlm__rmsnorm_backward(dx, dwr, c.r, c.x, c.w, c.rstd, N, D, 0);
    retrlm__sum_rows(dw, dwr, N, D);
    CHECK(grad_check(layer_loss, &c, c.x, dx, (int)n, 1e-2f) < 0.1);
    CHECK(grad_check(layer_loss, &c, c.w, dw, D, 1e-2f) < 0.1);

    // rope: backward is the inverse rotation of the output gradient
    c.which = 1;
    for (t = 0; t < T; t++)
        for (i = 0; i < hd / 2; i++) {
            double a = t * pow(10000.0, -2.0 * i / hd);
            c.cs[t * (hd / 2) + i] = (float)cos(a);
            c.sn[t * (hd / 2) + i] = (float)sin(a);
        }
    memcpy(dx, c.r, n * sizeof(float));
    retrlm__rope(dx, N, T, 0, H, hd, c.cs, c.sn, 1);
    CHECK(grad_check(layer_loss, &c, c.x, dx, (int)n, 1e-2f) < 0.1);

    // attention, causal and bidirectional with a padded sequence
    c.which = 2;
    fill_normal(c.q, n, 1.0f, &rng);
    fill_normal(c.k, n, 1.0f, &rng);
    fill_normal(c.v, n, 1.0f, &rng);
    for (causal = 0; causal < 2; causal++) {
        c.causal = causal;
        c.len[0] = T;
        c.len[1] = T - 2;
        layer_loss(&c);
        retrlm__attention_backward(dq, dk, dv, datt, c.r, c.att, c.q, c.k, c.v, c.len, B, T, H, hd,
                                   causal, NULL, 0);
        CHECK(grad_check(layer_loss, &c, c.q, dq, (int)n, 1e-2f) < 0.1);
        CHECK(grad_check(layer_loss, &c, c.k, dk, (int)n, 1e-2f) < 0.1);
        CHECK(grad_check(layer_loss, &c, c.v, dv, (int)n, 1e-2f) < 0.1);
    }

    // swiglu
    c.which = 3;
    fill_normal(c.gate, n, 2.0f, &rng);
    fill_normal(c.up, n, 1.0f, &rng);
    retrlm__swiglu_backward(dgate, dup, c.r, c.gate, c.up, n);
    CHECK(grad_check(layer_loss, &c, c.gate, dgate, (int)n, 1e-2f) < 0.1);
    CHECK(grad_check(layer_loss, &c, c.up, dup, (int)n, 1e-2f) < 0.1);
    free(buf);
}

// ---- whole model: loss = CE(logits) + r_h . hidden + sum_l r_l . ffn_input(l) (+ pooled)

typedef struct model_ctx {
    retrlm_model *m;
    const int *tok, *tgt, *len;
    int B, T, use_logits, use_hidden, use_ffn, use_pool;
    float *rh, *rf[4], *rp, *pool;
} model_ctx;

static double model_loss(void *p) {
    model_ctx *c = (model_ctx *)p;
    retrlm_model *m = c->m;
    const int V = m->config.vocab_size, D = m->config.dim, N = c->B * c->T;
    double loss = 0.0;
    int i, j, l, cnt = 0;
    retrlm_model_forward(m, c->tok, c->B, c->T, c->len, c->use_logits ? 0 : RETRLM_FORWARD_NO_LOGITS);
    if (c->use_logits) {
        double ce = 0.0;
        for (i = 0; i < N; i++) {
            const float *z = m->logits + (size_t)i * V;
            double mx = z[0], s = 0.0;
            if (c->tgt[i] < 0) continue;
            for (j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
            for (j = 0; j < V; j++) s += exp(z[j] - mx);
            ce += mx + log(s) - z[c->tgt[i]];
            cnt++;
        }
        loss += ce / cnt;
    }
    if (c->use_hidden) loss += dotd(c->rh, m->hidden, (size_t)N * D);
    if (c->use_ffn)
        for (l = 0; l < m->config.n_layers; l++)
            loss += dotd(c->rf[l], retrlm_model_ffn_input(m, l), (size_t)N * D);
    if (c->use_pool) {
        retrlm_model_mean_pool(m, c->pool);
        loss += dotd(c->rp, c->pool, (size_t)c->B * D);
    }
    return loss;
}

// B sequences of T tokens with B*T < 6, which keeps every forward matmul on the small-M path
// (no packing buffers: thousands of forwards stay fast under the sanitizers); padding in the
// bidirectional mode (lengths 3 for B = 1, 2 and 1 for B = 2)
static void check_model_grads(int B, int T, int bidirectional, int untied, int use_logits, int use_hidden,
                              int use_ffn, int use_pool) {
    retrlm_model_config cfg;
    retrlm_model m;
    model_ctx c;
    retrlm_rng rng;
    retrlm_model_grad_in gin;
    const float *dffn[4];
    float *pool_buf, *dh;
    int tok[10], tgt[10], len[2] = {5, 3}, i, l, t;
    if (B == 1) len[0] = 3;
    else len[0] = T, len[1] = T - 1;
    size_t nd;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 7; cfg.dim = 4; cfg.n_layers = 2; cfg.n_heads = 2; cfg.ffn_dim = 6;
    cfg.max_seq_len = 5; cfg.max_batch = 2; cfg.untied = untied; cfg.bidirectional = bidirectional;
    cfg.init_std = 0.4f; cfg.seed = 99;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    // gains away from 1 so their gradients are tested in general position
    retrlm_rng_seed(&rng, 5);
    for (i = (int)m.n_decay; i < (int)m.n_params; i++) m.params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    for (i = 0; i < 10; i++) {
        tok[i] = (int)retrlm_rng_below(&rng, 7);
        tgt[i] = (int)retrlm_rng_below(&rng, 7);
    }
    tgt[3] = -1; // ignored target
    nd = (size_t)B * T * 4;
    memset(&c, 0, sizeof c);
    c.m = &m; c.tok = tok; c.tgt = tgt; c.B = B; c.T = T; c.len = bidirectional ? len : NULL;
    c.use_logits = use_logits; c.use_hidden = use_hidden; c.use_ffn = use_ffn; c.use_pool = use_pool;
    c.rh = (float *)malloc(nd * sizeof(float));
    c.rp = (float *)malloc(8 * sizeof(float));
    c.pool = (float *)malloc(8 * sizeof(float));
    dh = (float *)calloc(nd, sizeof(float));
    pool_buf = (float *)malloc(nd * 2 * sizeof(float));
    c.rf[0] = pool_buf;
    c.rf[1] = pool_buf + nd;
    fill_normal(c.rh, nd, 1.0f, &rng);
    fill_normal(c.rp, 8, 1.0f, &rng);
    fill_normal(pool_buf, 2 * nd, 1.0f, &rng);
    // analytic
    model_loss(&c);
    memset(&gin, 0, sizeof gin);
    if (use_logits) {
        CHECK_OK(retrlm_model_lm_loss(&m, tgt, NULL, NULL));
        gin.dlogits = m.logits;
    }
    if (use_hidden) memcpy(dh, c.rh, nd * sizeof(float));
    if (use_pool) {
        float *tmp = (float *)malloc(nd * sizeof(float));
        retrlm_model_mean_pool_backward(&m, c.rp, tmp);
        for (t = 0; t < (int)nd; t++) dh[t] += tmp[t];
        free(tmp);
    }
    if (use_hidden || use_pool) gin.dhidden = dh;
    for (l = 0; l < 2; l++) dffn[l] = c.rf[l];
    if (use_ffn) gin.dffn_in = dffn;
    retrlm_model_zero_grad(&m);
    CHECK_OK(retrlm_model_backward(&m, &gin));
    {
        float *g = (float *)malloc(m.n_params * sizeof(float));
        double worst;
        memcpy(g, m.grads, m.n_params * sizeof(float));
        worst = grad_check(model_loss, &c, m.params, g, (int)m.n_params, 1e-2f);
        if (!(worst < 0.1))
            fprintf(stderr, "model grads (B %d bidir %d untied %d logits %d hidden %d ffn %d pool "
                    "%d): worst %g\n", B, bidirectional, untied, use_logits, use_hidden, use_ffn,
                    use_pool, worst);
        CHECK(worst < 0.1);
        free(g);
    }
    free(c.rh); free(c.rp); free(c.pool); free(dh); free(pool_buf);
    retrlm_model_free(&m);
}

static void test_model_grads_causal(void) {
    check_model_grads(1, 5, 0, 0, 1, 0, 0, 0); // tied embedding, cross-entropy at the logits
}
static void test_model_grads_bidirectional(void) {
    check_model_grads(1, 5, 1, 0, 0, 0, 0, 1); // encoder: mean pooling over 3 of 5 tokens
    check_model_grads(2, 2, 1, 1, 1, 1, 1, 0); // batch of 2, padded, all three entry points
}
static void test_model_grads_hidden(void) {
    check_model_grads(1, 5, 0, 1, 0, 1, 1, 0); // final hidden states and feed-forward inputs only
}

// ---- encoder padding, AdamW, training, checkpoints, generation

static void small_config(retrlm_model_config *cfg, int vocab) {
    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = vocab; cfg->dim = 32; cfg->n_layers = 2; cfg->n_heads = 2; cfg->ffn_dim = 64;
    cfg->max_seq_len = 32; cfg->max_batch = 4; cfg->seed = 1;
}

static void test_encoder_padding(void) {
    retrlm_model_config cfg;
    retrlm_model m;
    int tok[64], len[2] = {32, 10}, i, same = 1;
    float *h;
    small_config(&cfg, 50);
    cfg.bidirectional = 1;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    for (i = 0; i < 64; i++) tok[i] = (i * 7) % 50;
    CHECK_OK(retrlm_model_forward(&m, tok, 2, 32, len, RETRLM_FORWARD_NO_LOGITS));
    CHECK(m.logits == NULL);
    h = (float *)malloc(64 * 32 * sizeof(float));
    memcpy(h, m.hidden, 64 * 32 * sizeof(float));
    for (i = 32 + 10; i < 64; i++) tok[i] = 3; // padding changes nothing in the valid part
    CHECK_OK(retrlm_model_forward(&m, tok, 2, 32, len, RETRLM_FORWARD_NO_LOGITS));
    for (i = 0; i < (32 + 10) * 32; i++) same &= h[i] == m.hidden[i];
    CHECK(same);
    tok[0] = 4; // bidirectional: an early token changes every later position, and vice versa
    CHECK_OK(retrlm_model_forward(&m, tok, 2, 32, len, RETRLM_FORWARD_NO_LOGITS));
    CHECK(h[31 * 32] != m.hidden[31 * 32]);
    tok[0] = 0;
    tok[31] = 4;
    CHECK_OK(retrlm_model_forward(&m, tok, 2, 32, len, RETRLM_FORWARD_NO_LOGITS));
    CHECK(h[0] != m.hidden[0]);
    len[0] = 0;
    CHECK(retrlm_model_forward(&m, tok, 2, 32, len, 0) == RETRLM_ERR_ARG);
    tok[0] = 50;
    CHECK(retrlm_model_forward(&m, tok, 2, 32, NULL, 0) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_forward(&m, tok, 5, 32, NULL, 0) == RETRLM_ERR_ARG);
    free(h);
    retrlm_model_free(&m);
    retrlm_model_free(&m); // twice is fine
}

static void test_adamw(void) {
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.1f, -0.2f, 0.0f}, q[1] = {1.0f}, gq[1] = {0.3f};
    retrlm_adamw_group gr[2];
    retrlm_adamw_config cfg;
    retrlm_adamw o;
    memset(&cfg, 0, sizeof cfg);
    cfg.clip_norm = -1.0f;
    gr[0].params = p; gr[0].grads = g; gr[0].n = 3; gr[0].lr = 0.1f; gr[0].weight_decay = 0.5f;
    gr[1].params = q; gr[1].grads = gq; gr[1].n = 1; gr[1].lr = 0.01f; gr[1].weight_decay = 0.0f;
    CHECK_OK(retrlm_adamw_init(&o, &cfg, gr, 2));
    retrlm_adamw_step(&o);
    // first step: m_hat = g, v_hat = g^2, so the update is lr * (sign(g) + wd * p)
    CHECK_NEAR(p[0], 1.0 - 0.1 * (1.0 + 0.5 * 1.0), 1e-5);
    CHECK_NEAR(p[1], -2.0 - 0.1 * (-1.0 + 0.5 * -2.0), 1e-5);
    CHECK_NEAR(p[2], 0.5 - 0.1 * 0.5 * 0.5, 1e-6); // zero gradient: decay only
    CHECK_NEAR(q[0], 1.0 - 0.01, 1e-6);              // the other group's learning rate
    CHECK_NEAR(o.last_grad_norm, sqrt(0.01 + 0.04 + 0.09), 1e-6);
    CHECK(o.step == 1);
    retrlm_adamw_free(&o);
    // clipping scales the gradient (seen in the second moment)
    cfg.clip_norm = 0.1f;
    p[0] = 1.0f;
    g[0] = 3.0f; g[1] = 4.0f; g[2] = 0.0f;
    gr[0].weight_decay = 0.0f;
    CHECK_OK(retrlm_adamw_init(&o, &cfg, gr, 1));
    retrlm_adamw_step(&o);
    CHECK_NEAR(o.last_grad_norm, 5.0, 1e-6);
    CHECK_NEAR(o.m[0], 0.1 * 3.0 * 0.02, 1e-7);
    retrlm_adamw_free(&o);
    // schedule: linear warmup, cosine to min_lr_ratio
    cfg.warmup_steps = 10;
    cfg.total_steps = 110;
    cfg.min_lr_ratio = 0.1f;
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 0), 0.1, 1e-7);
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 9), 1.0, 1e-7);
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 10), 1.0, 1e-7);
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 60), 0.55, 1e-6);
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 110), 0.1, 1e-7);
    CHECK_NEAR(retrlm_adamw_lr_scale(&cfg, 500), 0.1, 1e-7);
}

// token stream: KJV bytes when the data is here, else a synthetic text
static int *byte_stream(size_t *n) {
    char path[512];
    FILE *f = fopen(test_data("kjv/train.txt", path, sizeof path), "rb");
    size_t cap = 200000, i;
    int *t = (int *)malloc(cap * sizeof(int));
    unsigned char *b = (unsigned char *)malloc(cap);
    *n = f ? fread(b, 1, cap, f) : 0;
    if (f) fclose(f);
    if (*n < 1000) {
        const char *s = "In the beginning God created the heaven and the earth. ";
        for (i = 0; i < cap; i++) b[i] = (unsigned char)s[i % strlen(s)];
        *n = cap;
    }
    for (i = 0; i < *n; i++) t[i] = b[i];
    free(b);
    return t;
}

// FNV-1a 64 over the stream's bytes: which text a golden value was made from
static uint64_t stream_hash(const int *t, size_t n) {
    uint64_t h = 14695981039346656037ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (uint64_t)(unsigned char)t[i]) * 1099511628211ull;
    return h;
}

typedef struct run_ctx {
    retrlm_model m;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_lm_train_config tc;
    float losses[10];
} run_ctx;

static void run_setup(run_ctx *r, const int *stream, size_t n) {
    retrlm_model_config cfg;
    retrlm_adamw_config oc;
    retrlm_adamw_group g[2];
    int ng;
    memset(r, 0, sizeof *r);
    small_config(&cfg, 256);
    CHECK_OK(retrlm_model_init(&r->m, &cfg));
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = 2;
    oc.total_steps = 10;
    ng = retrlm_model_param_groups(&r->m, 3e-3f, 0.1f, g);
    CHECK_OK(retrlm_adamw_init(&r->o, &oc, g, ng));
    retrlm_lm_train_state_init(&r->st, 42);
    r->tc.train = stream;
    r->tc.n_train = n;
    r->tc.valid = stream + n - 3000;
    r->tc.n_valid = 3000;
    r->tc.valid_bytes = 3000;
    r->tc.batch = 4;
    r->tc.seq_len = 32;
    r->tc.steps = 10;
    r->tc.eval_every = 5;
    r->tc.losses = r->losses;
}

static void run_free(run_ctx *r) {
    retrlm_adamw_free(&r->o);
    retrlm_model_free(&r->m);
}

static void test_train_golden(void) {
    size_t n;
    int *s = byte_stream(&n), i, decreasing;
    run_ctx *a = (run_ctx *)malloc(sizeof *a);
    run_setup(a, s, n);
    CHECK_OK(retrlm_lm_train(&a->m, &a->o, &a->tc, &a->st));
    CHECK(a->st.step == 10);
    CHECK_NEAR(a->losses[0], log(256.0), 0.05);
    decreasing = a->losses[9] < a->losses[0] - 0.5;
    CHECK(decreasing);
    CHECK(a->st.last_valid_bpb > 1.0 && a->st.last_valid_bpb < 8.0);
    if (getenv("GOLDEN_PRINT")) {
        printf("text %016llx: ", (unsigned long long)stream_hash(s, n));
        for (i = 0; i < 10; i++) printf("%.6f%s", a->losses[i], i == 9 ? "\n" : ", ");
    }
    {
        // golden losses for this configuration and seed, one row per text, keyed by the FNV-1a
        // hash of the bytes trained on (stream_hash): the first 200,000 bytes of kjv/train.txt,
        // and byte_stream's synthetic fallback when the data is absent. On x86-64 they do not
        // depend on the SIMD path: the four cells of tests/run.sh (kernels.c's SSE2 tiles) and
        // gcc/clang -O3 -march=native -fopenmp (AVX-512 tiles, FMA) print both rows to within
        // 1e-6. Other architectures (make cross) are unchecked: 2e-3 leaves room for rounding.
        static const struct {
            unsigned long long hash;
            double loss[10];
        } golden[2] = {
            {0x3430ea8c46c364d0ull, {5.540452, 5.516389, 5.352138, 5.159964, 5.046051, 4.904373,
                                     4.865824, 4.753438, 4.716889, 4.678741}},
            {0x9c5b2f4e2a66aafcull, {5.552610, 5.513176, 5.283180, 5.126828, 4.983739, 4.867445,
                                     4.769150, 4.696656, 4.641922, 4.617028}},
        };
        unsigned long long h = (unsigned long long)stream_hash(s, n);
        int g = h == golden[0].hash ? 0 : h == golden[1].hash ? 1 : -1;
        if (g >= 0)
            for (i = 0; i < 10; i++) CHECK_NEAR(a->losses[i], golden[g].loss[i], 2e-3);
        run_free(a);
        free(a);
        free(s);
        if (g < 0) SKIP("no golden losses for this text (GOLDEN_PRINT=1 prints its hash and losses)");
        // the synthetic text's values were checked, the KJV ones could not be
        if (g == 1) SKIP(test_missing("kjv/train.txt"));
    }
}

static void test_train_threads(void) {
#ifdef _OPENMP
    size_t n;
    int *s = byte_stream(&n);
    run_ctx *a = (run_ctx *)malloc(sizeof *a), *b = (run_ctx *)malloc(sizeof *b);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    run_setup(a, s, n);
    CHECK_OK(retrlm_lm_train(&a->m, &a->o, &a->tc, &a->st));
    omp_set_num_threads(2);
    run_setup(b, s, n);
    CHECK_OK(retrlm_lm_train(&b->m, &b->o, &b->tc, &b->st));
    omp_set_num_threads(saved);
    CHECK(!memcmp(a->losses, b->losses, sizeof a->losses));
    CHECK(!memcmp(a->m.params, b->m.params, a->m.n_params * sizeof(float)));
    CHECK(a->st.last_valid_bpb == b->st.last_valid_bpb);
    run_free(a);
    run_free(b);
    free(a);
    free(b);
    free(s);
#else
    SKIP("built without OpenMP");
#endif
}

static void test_train_resume(void) {
    size_t n, size = 0;
    int *s = byte_stream(&n), i, ng;
    run_ctx *a = (run_ctx *)malloc(sizeof *a), *b = (run_ctx *)malloc(sizeof *b);
    void *img;
    retrlm_adamw_group g[2];
    retrlm_adamw_config oc;
    char path[] = "build/tests/model_resume.rlm";
    run_setup(a, s, n);
    CHECK_OK(retrlm_lm_train(&a->m, &a->o, &a->tc, &a->st));
    // stop after 5 steps (checkpoint in memory and on disk), start again from the file image
    run_setup(b, s, n);
    b->tc.steps = 5;
    b->tc.checkpoint = path;
    CHECK_OK(retrlm_lm_train(&b->m, &b->o, &b->tc, &b->st));
    CHECK_OK(retrlm_model_save_memory(&b->m, &b->o, &b->st, NULL, 0, &size));
    img = malloc(size);
    CHECK_OK(retrlm_model_save_memory(&b->m, &b->o, &b->st, img, size, &size));
    oc = b->o.config;
    run_free(b);
    memset(&b->st, 0, sizeof b->st);
    CHECK_OK(retrlm_model_load_memory(&b->m, img, size, NULL));
    ng = retrlm_model_param_groups(&b->m, 3e-3f, 0.1f, g);
    CHECK_OK(retrlm_adamw_init(&b->o, &oc, g, ng));
    CHECK_OK(retrlm_model_load_state_memory(&b->o, &b->st, img, size));
    CHECK(b->st.step == 5 && b->o.step == 5);
    b->tc.steps = 10;
    b->tc.checkpoint = NULL;
    CHECK_OK(retrlm_lm_train(&b->m, &b->o, &b->tc, &b->st));
    for (i = 5; i < 10; i++) CHECK(a->losses[i] == b->losses[i]);
    CHECK(!memcmp(a->m.params, b->m.params, a->m.n_params * sizeof(float)));
    CHECK(a->st.last_valid_bpb == b->st.last_valid_bpb);
    run_free(b);
    // the same from the file saved by the loop
    CHECK_OK(retrlm_model_load(&b->m, path, NULL));
    ng = retrlm_model_param_groups(&b->m, 3e-3f, 0.1f, g);
    CHECK_OK(retrlm_adamw_init(&b->o, &oc, g, ng));
    CHECK_OK(retrlm_model_load_state(&b->o, &b->st, path));
    CHECK_OK(retrlm_lm_train(&b->m, &b->o, &b->tc, &b->st));
    CHECK(!memcmp(a->m.params, b->m.params, a->m.n_params * sizeof(float)));
    remove(path);
    // every flipped byte of the header region is caught, never a crash
    for (i = 0; i < 200; i++) {
        retrlm_model t;
        unsigned char *c = (unsigned char *)img;
        c[i] ^= 0x40;
        CHECK(retrlm_model_load_memory(&t, img, size, NULL) != RETRLM_OK);
        retrlm_model_free(&t);
        c[i] ^= 0x40;
    }
    free(img);
    run_free(a);
    run_free(b);
    free(a);
    free(b);
    free(s);
}

static int cancel_at(void *user, const char *stage, double done, double total) {
    (void)total;
    return !strcmp(stage, "train") && done >= *(int *)user;
}

static void test_train_cancel_and_bpb(void) {
    size_t n;
    int *s = byte_stream(&n), at = 3;
    run_ctx *a = (run_ctx *)malloc(sizeof *a);
    double bpb = 0.0;
    run_setup(a, s, n);
    // an untrained model is close to uniform: 8 bits per byte-token
    CHECK_OK(retrlm_lm_bits_per_byte(&a->m, s, 1000, 1000, 32, &bpb));
    CHECK_NEAR(bpb, 8.0, 0.1);
    a->tc.progress = cancel_at;
    a->tc.progress_user = &at;
    CHECK(retrlm_lm_train(&a->m, &a->o, &a->tc, &a->st) == RETRLM_ERR_CANCELLED);
    CHECK(a->st.step == 3);
    a->tc.progress = NULL;
    a->tc.train = s;
    a->tc.n_train = 20;
    CHECK(retrlm_lm_train(&a->m, &a->o, &a->tc, &a->st) == RETRLM_ERR_ARG);
    run_free(a);
    free(a);
    free(s);
}

static void test_save_load_forward(void) {
    retrlm_model_config cfg;
    retrlm_model a, b;
    int tok[64], i;
    size_t size = 0;
    void *img;
    float *la;
    small_config(&cfg, 100);
    cfg.untied = 1;
    CHECK_OK(retrlm_model_init(&a, &cfg));
    for (i = 0; i < 64; i++) tok[i] = (i * 13) % 100;
    CHECK_OK(retrlm_model_forward(&a, tok, 2, 32, NULL, 0));
    la = (float *)malloc(64 * 100 * sizeof(float));
    memcpy(la, a.logits, 64 * 100 * sizeof(float));
    CHECK_OK(retrlm_model_save_memory(&a, NULL, NULL, NULL, 0, &size));
    img = malloc(size);
    CHECK_OK(retrlm_model_save_memory(&a, NULL, NULL, img, size, &size));
    CHECK_OK(retrlm_model_load_memory(&b, img, size, NULL));
    CHECK(b.config.untied == 1 && b.n_params == a.n_params);
    CHECK_OK(retrlm_model_forward(&b, tok, 2, 32, NULL, 0));
    CHECK(!memcmp(la, b.logits, 64 * 100 * sizeof(float)));
    CHECK(retrlm_model_load_state_memory(NULL, NULL, img, size) == RETRLM_OK);
    {
        retrlm_lm_train_state st;
        CHECK(retrlm_model_load_state_memory(NULL, &st, img, size) == RETRLM_ERR_NOT_FOUND);
    }
    retrlm_model_free(&b);
    free(img);
    free(la);
    retrlm_model_free(&a);
}

static void test_generate(void) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_sampler s;
    retrlm_rng r1, r2;
    int tok[20], out1[12], out2[12], got, i, j, ok = 1;
    float *full;
    small_config(&cfg, 60);
    cfg.init_std = 0.2f;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    for (i = 0; i < 20; i++) tok[i] = (i * 11 + 3) % 60;
    // the KV-cache decode gives the full forward's logits at every position
    CHECK_OK(retrlm_model_forward(&m, tok, 1, 20, NULL, 0));
    full = (float *)malloc(20 * 60 * sizeof(float));
    memcpy(full, m.logits, 20 * 60 * sizeof(float));
    for (i = 0; i < 20; i++) {
        CHECK_OK(retrlm_model_decode(&m, tok[i], i));
        for (j = 0; j < 60; j++) ok &= fabs(m.step_logits[j] - full[i * 60 + j]) < 1e-4;
    }
    CHECK(ok);
    // greedy is the argmax; seeded sampling repeats; top-k 1 and a tiny top-p are greedy
    memset(&s, 0, sizeof s);
    CHECK_OK(retrlm_model_generate(&m, tok, 5, 12, &s, NULL, out1, &got));
    CHECK(got == 12);
    s.temperature = 1.0f;
    s.top_k = 1;
    retrlm_rng_seed(&r1, 3);
    CHECK_OK(retrlm_model_generate(&m, tok, 5, 12, &s, &r1, out2, &got));
    CHECK(!memcmp(out1, out2, sizeof out1));
    s.top_k = 0;
    s.top_p = 1e-6f;
    CHECK_OK(retrlm_model_generate(&m, tok, 5, 12, &s, &r1, out2, &got));
    CHECK(!memcmp(out1, out2, sizeof out1));
    s.top_p = 0.9f;
    s.top_k = 20;
    s.temperature = 1.5f;
    retrlm_rng_seed(&r1, 3);
    retrlm_rng_seed(&r2, 3);
    CHECK_OK(retrlm_model_generate(&m, tok, 5, 12, &s, &r1, out1, &got));
    CHECK_OK(retrlm_model_generate(&m, tok, 5, 12, &s, &r2, out2, &got));
    CHECK(!memcmp(out1, out2, sizeof out1));
    for (i = 0; i < 12; i++) ok &= out1[i] >= 0 && out1[i] < 60;
    CHECK(ok);
    // sampling frequencies follow the distribution (temperature 1, everything kept)
    {
        float logits[60];
        int counts[60] = {0};
        double p0;
        memset(&s, 0, sizeof s);
        s.temperature = 1.0f;
        for (i = 0; i < 60; i++) logits[i] = i < 2 ? 2.0f : 0.0f;
        for (i = 0; i < 20000; i++) counts[retrlm_model_sample(&m, logits, &s, &r1)]++;
        p0 = exp(2.0) / (2 * exp(2.0) + 58);
        CHECK_NEAR(counts[0] / 20000.0, p0, 0.015);
        s.top_k = 2; // only the two best survive
        for (i = 0; i < 1000; i++) ok &= retrlm_model_sample(&m, logits, &s, &r1) < 2;
        CHECK(ok);
    }
    // generation stops at max_seq_len
    CHECK_OK(retrlm_model_generate(&m, tok, 20, 12, &s, &r1, out1, &got));
    CHECK(got == 12);
    {
        int longp[32];
        for (i = 0; i < 32; i++) longp[i] = i;
        CHECK_OK(retrlm_model_generate(&m, longp, 30, 12, &s, &r1, out1, &got));
        CHECK(got == 3); // positions 30 and 31 are left: one token after the prompt, two decoded
        CHECK(retrlm_model_generate(&m, longp, 0, 12, &s, &r1, out1, &got) == RETRLM_ERR_ARG);
    }
    free(full);
    retrlm_model_free(&m);
}

// Inference-only models: the full model's logits, kNN keys, bits per byte and generations, no
// gradients, no forward activations until a forward, and a file's weights read in place.
static void test_inference(void) {
    enum { V = 5000 }; // untied, so that the file passes 1 MiB and is memory-mapped
    retrlm_model_config cfg, over;
    retrlm_model a, b, v;
    retrlm_adamw_group g[2];
    retrlm_adamw opt;
    retrlm_model_grad_in gin;
    const char *path = "build/tests/inference.rlm";
    int tok[64], out1[10], out2[10], got1 = 0, got2 = 0, i;
    double bpb_a = 0.0, bpb_b = 1.0;
    const size_t nl = (size_t)64 * V, nk = (size_t)64 * 32;
    float *la = (float *)malloc(nl * sizeof(float)), *ka = (float *)malloc(nk * sizeof(float));
    small_config(&cfg, V);
    cfg.untied = 1;
    cfg.init_std = 0.2f;
    CHECK_OK(retrlm_model_init(&a, &cfg));
    for (i = 0; i < 64; i++) tok[i] = (i * 131 + 7) % V;
    CHECK_OK(retrlm_model_forward(&a, tok, 2, 32, NULL, 0));
    memcpy(la, a.logits, nl * sizeof(float));
    memcpy(ka, retrlm_model_ffn_input(&a, 1), nk * sizeof(float));
    CHECK_OK(retrlm_model_generate(&a, tok, 5, 10, NULL, NULL, out1, &got1));
    CHECK_OK(retrlm_lm_bits_per_byte(&a, tok, 64, 200, 32, &bpb_a));
    CHECK_OK(retrlm_model_save(&a, NULL, NULL, path));
    memset(&over, 0, sizeof over);
    over.inference = 1;
    CHECK_OK(retrlm_model_load(&b, path, &over));
    CHECK(b.config.inference == 1 && !b.grads && b.n_params == a.n_params);
#if defined(__unix__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    CHECK(b.map_ != NULL); // the weights are the file's pages
#endif
    CHECK(!memcmp(a.params, b.params, a.n_params * sizeof(float)));
    // generation runs on the KV cache alone: the forward's activations are never allocated
    CHECK_OK(retrlm_model_generate(&b, tok, 5, 10, NULL, NULL, out2, &got2));
    CHECK(got1 == 10 && got2 == 10 && !memcmp(out1, out2, sizeof out1));
    CHECK(b.acts_ == NULL);
    CHECK_OK(retrlm_model_forward(&b, tok, 2, 32, NULL, 0));
    CHECK(b.acts_ != NULL && b.n_acts_ < a.n_acts_);
    CHECK(!memcmp(la, b.logits, nl * sizeof(float)));
    CHECK(!memcmp(ka, retrlm_model_ffn_input(&b, 1), nk * sizeof(float)));
    CHECK_OK(retrlm_lm_bits_per_byte(&b, tok, 64, 200, 32, &bpb_b));
    CHECK(bpb_a == bpb_b);
    // no training
    CHECK(retrlm_model_param_groups(&b, 1e-3f, 0.1f, g) == 0);
    CHECK(retrlm_adamw_init(&opt, NULL, g, 0) == RETRLM_ERR_ARG);
    memset(&gin, 0, sizeof gin);
    gin.dlogits = b.logits;
    CHECK(retrlm_model_backward(&b, &gin) == RETRLM_ERR_ARG);
    retrlm_model_zero_grad(&b); // nothing to zero
    retrlm_model_free(&b);
    // an inference-only view of a training model, and an inference-only model from init
    CHECK_OK(retrlm_model_init_view(&v, &a, &over));
    CHECK(!v.grads && v.params == a.params);
    CHECK_OK(retrlm_model_forward(&v, tok, 2, 32, NULL, 0));
    CHECK(!memcmp(la, v.logits, nl * sizeof(float)));
    retrlm_model_free(&v);
    cfg.inference = 1;
    CHECK_OK(retrlm_model_init(&v, &cfg));
    CHECK(!v.grads && !memcmp(a.params, v.params, a.n_params * sizeof(float)));
    CHECK_OK(retrlm_model_forward(&v, tok, 2, 32, NULL, 0));
    CHECK(!memcmp(la, v.logits, nl * sizeof(float)));
    retrlm_model_free(&v);
    // a truncated file is refused when opened (it is still mapped: over 1 MiB)
    {
        size_t size = 0;
        void *img;
        FILE *f;
        CHECK_OK(retrlm_model_save_memory(&a, NULL, NULL, NULL, 0, &size));
        img = malloc(size);
        CHECK_OK(retrlm_model_save_memory(&a, NULL, NULL, img, size, &size));
        CHECK(size > ((size_t)1 << 20) + 4096);
        if ((f = fopen(path, "wb")) != NULL) {
            CHECK(fwrite(img, 1, size - 4096, f) == size - 4096);
            fclose(f);
            CHECK(retrlm_model_load(&b, path, &over) == RETRLM_ERR_FORMAT);
        }
        // a changed weight: the CRC finds it when the file is read, not when it is mapped
        ((unsigned char *)img)[size - 1000] ^= 0x40;
        if ((f = fopen(path, "wb")) != NULL) {
            CHECK(fwrite(img, 1, size, f) == size);
            fclose(f);
            CHECK(retrlm_model_load(&b, path, NULL) == RETRLM_ERR_CORRUPT);
#if defined(__unix__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            CHECK_OK(retrlm_model_load(&b, path, &over));
            retrlm_model_free(&b);
#endif
        }
        free(img);
    }
    remove(path);
    free(la);
    free(ka);
    retrlm_model_free(&a);
}

// the f32 model whose matrices are q's, dequantized (q: an int8 model of src's config)
static void dequantized(retrlm_model *out, const retrlm_model *src, const retrlm_model *q) {
    int t;
    CHECK_OK(retrlm_model_init(out, &src->config));
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        size_t r, rows, K;
        if (!out->tensor_size[t]) continue;
        if (!q->q8_[t]) {
            memcpy(out->param[t], src->param[t], out->tensor_size[t] * sizeof(float));
            continue;
        }
        K = (size_t)(t == RETRLM_T_W_DOWN ? src->config.ffn_dim : src->config.dim);
        rows = out->tensor_size[t] / K;
        for (r = 0; r < rows; r++)
            retrlm__q8_row(out->param[t] + r * K, q->q8_[t] + r * K,
                           q->q8s_[t] + r * retrlm__q8_groups((int)K), (int)K);
    }
}

// int8 weights: the bits of the f32 model with the dequantized weights (the group size divides
// every width), close to the f32 model's, saved and mapped back, and refused for training
static void test_q8(void) {
    enum { V = 12000 }; // untied: an int8 file over 1 MiB, mapped when opened
    retrlm_model_config cfg, over;
    retrlm_model f, q, d, l;
    retrlm_model_grad_in gin;
    retrlm_adamw_group g[2];
    const char *path = "build/tests/q8.rlm";
    const size_t nl = (size_t)64 * V;
    int tok[64], o1[12], o2[12], o3[12], got = 0, i, th;
    double err2 = 0.0, sq2 = 0.0;
    float *lf = (float *)malloc(nl * sizeof(float)), *lq = (float *)malloc(nl * sizeof(float));
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = V, cfg.dim = 64, cfg.n_layers = 2, cfg.n_heads = 2, cfg.ffn_dim = 96;
    cfg.max_seq_len = 32, cfg.max_batch = 2, cfg.untied = 1, cfg.init_std = 0.2f, cfg.seed = 3;
    CHECK_OK(retrlm_model_init(&f, &cfg));
    for (i = 0; i < 64; i++) tok[i] = (i * 977 + 5) % V;
    CHECK_OK(retrlm_model_forward(&f, tok, 2, 32, NULL, 0));
    memcpy(lf, f.logits, nl * sizeof(float));
    CHECK_OK(retrlm_model_quantize(&q, &f));
    CHECK(retrlm_model_is_q8(&q) && !retrlm_model_is_q8(&f) && q.config.inference && !q.grads);
    CHECK(q.param[RETRLM_T_WQ] == NULL && q.param[RETRLM_T_FINAL_NORM] != NULL);
    CHECK(q.n_params == f.n_params - f.n_decay && q.n_decay == 0);
    // a forward (packed, dequantized) and a decode (int8 rows read directly) give the bits of the
    // f32 model with the dequantized weights, on 1 and 2 threads
    dequantized(&d, &f, &q);
    CHECK_OK(retrlm_model_forward(&d, tok, 2, 32, NULL, 0));
    for (th = 1; th <= 2; th++) {
#ifdef _OPENMP
        omp_set_num_threads(th);
#endif
        CHECK_OK(retrlm_model_forward(&q, tok, 2, 32, NULL, 0));
        CHECK(!memcmp(d.logits, q.logits, nl * sizeof(float)));
        CHECK_OK(retrlm_model_generate(&q, tok, 4, 12, NULL, NULL, th == 1 ? o1 : o2, &got));
    }
    CHECK_OK(retrlm_model_generate(&d, tok, 4, 12, NULL, NULL, o3, &got));
    CHECK(!memcmp(o1, o2, sizeof o1) && !memcmp(o1, o3, sizeof o1));
    CHECK_OK(retrlm_model_decode(&q, tok[0], 0));
    memcpy(lq, q.step_logits, V * sizeof(float));
    CHECK_OK(retrlm_model_decode(&d, tok[0], 0));
    CHECK(!memcmp(lq, d.step_logits, V * sizeof(float)));
    // each weight within half a step (its group's max |w| / 254) of the f32 one; the logits then
    // move by a few percent of their spread in this random network (bench/generate measures bits
    // per byte of a trained one)
    {
        int t, ok = 1;
        for (t = 0; t < RETRLM_T_ATTN_NORM; t++) {
            size_t j, K = (size_t)(t == RETRLM_T_W_DOWN ? cfg.ffn_dim : cfg.dim);
            for (j = 0; j < f.tensor_size[t]; j++) {
                float w = f.param[t][j], dq = d.param[t][j], step = q.q8s_[t][(j / K) *
                    retrlm__q8_groups((int)K) + (j % K) / RETRLM__Q8_GROUP];
                ok &= fabsf(w - dq) <= 0.5f * step * 1.0001f && fabsf(w) <= 127.0f * step * 1.0001f;
            }
        }
        CHECK(ok);
    }
    CHECK_OK(retrlm_model_forward(&q, tok, 2, 32, NULL, 0));
    for (i = 0; i < (int)nl; i++) {
        err2 += ((double)q.logits[i] - lf[i]) * ((double)q.logits[i] - lf[i]);
        sq2 += (double)lf[i] * lf[i];
    }
    printf("q8: rms error of the logits %.4f, their rms %.4f\n", sqrt(err2 / nl), sqrt(sq2 / nl));
    CHECK(err2 < 0.1 * 0.1 * sq2);
    // saved and opened again (mapped: over 1 MiB), inference-only whatever was asked
    CHECK_OK(retrlm_model_save(&q, NULL, NULL, path));
    CHECK_OK(retrlm_model_load(&l, path, NULL));
    CHECK(retrlm_model_is_q8(&l) && l.config.inference && !l.grads);
#if defined(__unix__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    CHECK(l.map_ != NULL);
#endif
    CHECK_OK(retrlm_model_forward(&l, tok, 2, 32, NULL, 0));
    CHECK(!memcmp(d.logits, l.logits, nl * sizeof(float)));
    retrlm_model_free(&l);
    memset(&over, 0, sizeof over);
    over.inference = 1;
    CHECK_OK(retrlm_model_load(&l, path, &over));
    CHECK_OK(retrlm_model_generate(&l, tok, 4, 12, NULL, NULL, o2, &got));
    CHECK(!memcmp(o1, o2, sizeof o1));
    retrlm_model_free(&l);
    // refused: training, a second quantization, safetensors
    CHECK(retrlm_model_param_groups(&q, 1e-3f, 0.1f, g) == 0);
    memset(&gin, 0, sizeof gin);
    gin.dlogits = q.logits;
    CHECK(retrlm_model_backward(&q, &gin) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_quantize(&l, &q) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_save_safetensors(&q, "build/tests/q8.safetensors") == RETRLM_ERR_ARG);
    remove(path);
    retrlm_model_free(&d);
    retrlm_model_free(&q);
    retrlm_model_free(&f);
    // widths the group size does not divide (48, 80): the last group of a row is partial
    small_config(&cfg, 301);
    cfg.dim = 48, cfg.ffn_dim = 80, cfg.init_std = 0.2f;
    for (i = 0; i < 64; i++) tok[i] %= 301;
    CHECK_OK(retrlm_model_init(&f, &cfg));
    CHECK_OK(retrlm_model_quantize(&q, &f));
    dequantized(&d, &f, &q);
    CHECK_OK(retrlm_model_forward(&q, tok, 2, 32, NULL, 0));
    CHECK_OK(retrlm_model_forward(&d, tok, 2, 32, NULL, 0));
    CHECK(!memcmp(d.logits, q.logits, (size_t)64 * 301 * sizeof(float)));
    CHECK_OK(retrlm_model_generate(&q, tok, 4, 12, NULL, NULL, o1, &got));
    CHECK_OK(retrlm_model_generate(&d, tok, 4, 12, NULL, NULL, o2, &got));
    CHECK(!memcmp(o1, o2, sizeof o1));
    retrlm_model_free(&d);
    retrlm_model_free(&q);
    retrlm_model_free(&f);
    free(lf);
    free(lq);
}

static void test_safetensors(void) {
    retrlm_model_config cfg, hint;
    retrlm_model a, b;
    int tok[32], i, untied;
    size_t size = 0, size2 = 0;
    unsigned char *img, *img2;
    float *la = (float *)malloc(32 * 70 * sizeof(float));
    for (i = 0; i < 32; i++) tok[i] = (i * 5) % 70;
    for (untied = 0; untied < 2; untied++) {
        small_config(&cfg, 70);
        cfg.untied = untied;
        cfg.rope_theta = 500.0f;
        CHECK_OK(retrlm_model_init(&a, &cfg));
        CHECK_OK(retrlm_model_forward(&a, tok, 1, 32, NULL, 0));
        memcpy(la, a.logits, 32 * 70 * sizeof(float));
        CHECK_OK(retrlm_model_save_safetensors_memory(&a, NULL, 0, &size));
        img = (unsigned char *)malloc(size);
        CHECK_OK(retrlm_model_save_safetensors_memory(&a, img, size, &size));
        CHECK(strstr((const char *)img + 8, "\"model.layers.1.mlp.down_proj.weight\":{\"dtype\":\"F32\",\"shape\":[32,64]") != NULL);
        CHECK((strstr((const char *)img + 8, "\"lm_head.weight\"") != NULL) == untied);
        memset(&hint, 0, sizeof hint);
        hint.max_seq_len = 32;
        CHECK_OK(retrlm_model_load_safetensors_memory(&b, img, size, &hint));
        CHECK(b.n_params == a.n_params && b.config.untied == untied && b.config.n_heads == 2 &&
              b.config.rope_theta == 500.0f && b.config.ffn_dim == 64 && b.config.n_layers == 2);
        CHECK(b.params && !memcmp(a.params, b.params, a.n_params * sizeof(float)));
        CHECK_OK(retrlm_model_forward(&b, tok, 1, 32, NULL, 0));
        CHECK(!memcmp(la, b.logits, 32 * 70 * sizeof(float)));
        // export again: the same bytes
        CHECK_OK(retrlm_model_save_safetensors_memory(&b, NULL, 0, &size2));
        img2 = (unsigned char *)malloc(size2);
        CHECK_OK(retrlm_model_save_safetensors_memory(&b, img2, size2, &size2));
        CHECK(size == size2 && !memcmp(img, img2, size));
        free(img2);
        retrlm_model_free(&b);
        // damage: truncations and flipped header bytes fail cleanly or load a consistent model
        for (i = 0; i < 400; i++) {
            size_t cut = (size_t)i * 37 % size;
            if (retrlm_model_load_safetensors_memory(&b, img, cut, &hint) == RETRLM_OK) CHECK(0);
            retrlm_model_free(&b);
        }
        for (i = 8; i < 1200; i++) {
            img[i] ^= 0x11;
            if (retrlm_model_load_safetensors_memory(&b, img, size, &hint) == RETRLM_OK)
                CHECK(b.n_params > 0);
            retrlm_model_free(&b);
            img[i] ^= 0x11;
        }
#ifndef RETRLM_NO_STDIO
        CHECK_OK(retrlm_model_save_safetensors(&a, "build/tests/model.safetensors"));
        CHECK_OK(retrlm_model_load_safetensors(&b, "build/tests/model.safetensors", &hint));
        CHECK(b.params && !memcmp(a.params, b.params, a.n_params * sizeof(float)));
        retrlm_model_free(&b);
        remove("build/tests/model.safetensors");
#endif
        free(img);
        retrlm_model_free(&a);
    }
    {
        // a hand-written file: extra keys, an unknown tensor, escapes; no heads anywhere -> error
        const char *h = "{\"model.embed_tokens.weight\":{\"shape\":[1,2],\"dtype\":\"F32\","
                        "\"data_offsets\":[0,8]},\"x\\u0041\":{\"dtype\":\"BF16\",\"shape\":[],"
                        "\"data_offsets\":[0,0],\"extra\":[1,{\"a\":null}]}}";
        unsigned char f[400];
        size_t hl = strlen(h);
        memset(f, 0, sizeof f);
        retrlm__put_u64(f, hl);
        memcpy(f + 8, h, hl);
        CHECK(retrlm_model_load_safetensors_memory(&b, f, 8 + hl + 8, NULL) == RETRLM_ERR_FORMAT);
        CHECK(strstr(retrlm_last_error(), "heads") != NULL);
        hint.n_heads = 1;
        CHECK(retrlm_model_load_safetensors_memory(&b, f, 8 + hl + 8, &hint) == RETRLM_ERR_FORMAT);
        retrlm_model_free(&b);
    }
    free(la);
}

// the tokenizer a model file records: none, then one; another of the same size is refused
static void test_tokenizer_fingerprint(void) {
    static const char *const a_text[] = {"the cat sat on the mat, the cat sat on the hat", "a rat ate the oat"};
    static const char *const b_text[] = {"zebra quartz jumps over the lazy fox, zebra quartz", "quick brown vex"};
    retrlm_tokenizer a, b, a2;
    retrlm_tokenizer_train_config tc;
    retrlm_model_config cfg;
    retrlm_model m, back;
    uint32_t fa, fb, fa2;
    size_t size;
    void *img;
    const char *path = "build/tests/fingerprint.rlm";
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 262;
    CHECK_OK(retrlm_tokenizer_train(&a, &tc, a_text, NULL, 2, NULL, NULL));
    CHECK_OK(retrlm_tokenizer_train(&b, &tc, b_text, NULL, 2, NULL, NULL));
    CHECK(a.n_vocab == b.n_vocab);
    CHECK_OK(retrlm_tokenizer_fingerprint(&a, &fa));
    CHECK_OK(retrlm_tokenizer_fingerprint(&b, &fb));
    CHECK(fa != fb);
    CHECK_OK(retrlm_tokenizer_save_memory(&a, NULL, 0, &size)); // a copy loaded back: the same
    img = malloc(size);
    CHECK_OK(retrlm_tokenizer_save_memory(&a, img, size, &size));
    CHECK_OK(retrlm_tokenizer_load_memory(&a2, img, size));
    CHECK_OK(retrlm_tokenizer_fingerprint(&a2, &fa2));
    CHECK(fa2 == fa);
    small_config(&cfg, a.n_vocab);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_model_save(&m, NULL, NULL, path));
    CHECK_OK(retrlm_model_file_check_tokenizer(path, &b)); // none recorded: nothing to compare
    CHECK_OK(retrlm_model_file_set_tokenizer(path, &a));
    CHECK_OK(retrlm_model_file_check_tokenizer(path, &a2));
    CHECK(retrlm_model_file_check_tokenizer(path, &b) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "another tokenizer") != NULL);
    CHECK_OK(retrlm_model_load(&back, path, NULL)); // the loader passes over the section
    CHECK(back.n_params == m.n_params && !memcmp(back.params, m.params, sizeof(float) * m.n_params));
    retrlm_model_free(&back);
    CHECK_OK(retrlm_model_file_set_tokenizer(path, &b)); // replaced, not added
    CHECK_OK(retrlm_model_file_check_tokenizer(path, &b));
    CHECK(retrlm_model_file_check_tokenizer(path, &a) == RETRLM_ERR_ARG);
    CHECK(retrlm_model_file_check_tokenizer("build/tests/no-such-model.rlm", &a) == RETRLM_ERR_IO);
    remove(path);
    free(img);
    retrlm_model_free(&m);
    retrlm_tokenizer_free(&a), retrlm_tokenizer_free(&a2), retrlm_tokenizer_free(&b);
}

int main(void) {
    RUN(test_tokenizer_fingerprint);
    RUN(test_sigmoid);
    RUN(test_layer_grads);
    RUN(test_attention_blocks);
    RUN(test_model_grads_causal);
    RUN(test_model_grads_bidirectional);
    RUN(test_model_grads_hidden);
    RUN(test_encoder_padding);
    RUN(test_adamw);
    RUN(test_train_golden);
    RUN(test_train_threads);
    RUN(test_train_resume);
    RUN(test_train_cancel_and_bpb);
    RUN(test_save_load_forward);
    RUN(test_generate);
    RUN(test_inference);
    RUN(test_q8);
    RUN(test_safetensors);
    return test_report();
}
