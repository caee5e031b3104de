// model: layer gradient checks, whole-model gradient checks (causal, bidirectional, gradients
// entering at hidden states), AdamW, training determinism and resume, checkpoints, generation,
// safetensors
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"

// ---- finite differences: loss(ctx) in double, central differences on float parameters
typedef double (*loss_fn)(void *ctx);

// checks g against numeric gradients of f w.r.t. x[0..n) (central differences at eps and eps/2,
// Richardson-combined so the error is O(eps^4)); returns the worst scaled error
static double central(loss_fn f, void *ctx, float *x, float eps) {
    float save = *x;
    double lp, lm;
    *x = save + eps;
    lp = f(ctx);
    *x = save - eps;
    lm = f(ctx);
    *x = save;
    return (lp - lm) / ((double)(save + eps) - (double)(save - eps));
}

static double grad_check(loss_fn f, void *ctx, float *x, const float *g, int n, float eps) {
    double worst = 0.0;
    int i;
    for (i = 0; i < n; i++) {
        double d1 = central(f, ctx, x + i, eps), d2 = central(f, ctx, x + i, eps / 2);
        double num = (4.0 * d2 - d1) / 3.0, err;
        err = fabs(num - g[i]) / (1e-2 + 0.1 * (fabs(num) > fabs(g[i]) ? fabs(num) : fabs(g[i])));
        if (err > 0.1 && getenv("GRAD_DEBUG"))
            fprintf(stderr, "  [%d] numeric %.6g analytic %.6g\n", i, num, (double)g[i]);
        if (err > worst) worst = err;
    }
    return worst; // < 0.1 means |num - g| < 1e-3 + 1e-2 max(|num|, |g|)
}

static void fill_normal(float *x, size_t n, float std, retrlm_rng *rng) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = std * retrlm_rng_normal(rng);
}

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

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
        retrlm__attention_forward(c->y, c->att, c->q, c->k, c->v, c->len, c->B, c->T, c->H, c->hd,
                                  c->causal);
        break;
    default:
        retrlm__swiglu_forward(c->y, c->gate, c->up, n);
        break;
    }
    return dotd(c->r, c->y, n);
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
                                   causal);
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

static void check_model_grads(int bidirectional, int untied, int use_logits, int use_hidden,
                              int use_ffn, int use_pool) {
    retrlm_model_config cfg;
    retrlm_model m;
    model_ctx c;
    retrlm_rng rng;
    retrlm_model_grad_in gin;
    const float *dffn[4];
    float *pool_buf, *dh;
    int tok[10], tgt[10], len[2] = {5, 3}, i, l, t;
    size_t nd;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 13; cfg.dim = 8; cfg.n_layers = 2; cfg.n_heads = 2; cfg.ffn_dim = 12;
    cfg.max_seq_len = 5; cfg.max_batch = 2; cfg.untied = untied; cfg.bidirectional = bidirectional;
    cfg.init_std = 0.4f; cfg.seed = 99;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    if (!m.params) return;
    // gains away from 1 so their gradients are tested in general position
    retrlm_rng_seed(&rng, 5);
    for (i = (int)m.n_decay; i < (int)m.n_params; i++) m.params[i] = 1.0f + 0.3f * retrlm_rng_normal(&rng);
    for (i = 0; i < 10; i++) {
        tok[i] = (int)retrlm_rng_below(&rng, 13);
        tgt[i] = (int)retrlm_rng_below(&rng, 13);
    }
    tgt[3] = -1; // ignored target
    nd = (size_t)10 * 8;
    memset(&c, 0, sizeof c);
    c.m = &m; c.tok = tok; c.tgt = tgt; c.B = 2; c.T = 5; c.len = bidirectional ? len : NULL;
    c.use_logits = use_logits; c.use_hidden = use_hidden; c.use_ffn = use_ffn; c.use_pool = use_pool;
    c.rh = (float *)malloc(nd * sizeof(float));
    c.rp = (float *)malloc(16 * sizeof(float));
    c.pool = (float *)malloc(16 * sizeof(float));
    dh = (float *)calloc(nd, sizeof(float));
    pool_buf = (float *)malloc(nd * 2 * sizeof(float));
    c.rf[0] = pool_buf;
    c.rf[1] = pool_buf + nd;
    fill_normal(c.rh, nd, 1.0f, &rng);
    fill_normal(c.rp, 16, 1.0f, &rng);
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
            fprintf(stderr, "model grads (bidir %d untied %d logits %d hidden %d ffn %d pool %d): "
                    "worst %g\n", bidirectional, untied, use_logits, use_hidden, use_ffn, use_pool,
                    worst);
        CHECK(worst < 0.1);
        free(g);
    }
    free(c.rh); free(c.rp); free(c.pool); free(dh); free(pool_buf);
    retrlm_model_free(&m);
}

static void test_model_grads_causal(void) {
    check_model_grads(0, 0, 1, 0, 0, 0);
    check_model_grads(0, 1, 1, 0, 0, 0);
}
static void test_model_grads_bidirectional(void) {
    check_model_grads(1, 1, 1, 0, 0, 0);
    check_model_grads(1, 0, 0, 0, 0, 1); // encoder: mean pooling only
}
static void test_model_grads_hidden(void) {
    check_model_grads(0, 1, 0, 1, 0, 0); // final hidden states only
    check_model_grads(0, 0, 0, 0, 1, 0); // feed-forward inputs only
    check_model_grads(1, 1, 1, 1, 1, 0); // all three at once
}

int main(void) {
    RUN(test_layer_grads);
    RUN(test_model_grads_causal);
    RUN(test_model_grads_bidirectional);
    RUN(test_model_grads_hidden);
    return test_report();
}
