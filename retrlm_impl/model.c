#include "internal.h"

// ---------------------------------------------------------------------------------------------
// model: the transformer. Layout of the two private blocks (Nm = max_batch * max_seq_len):
//   acts_: rope cos, sin (max_seq_len, hd/2) | resid (L+1, Nm, D) | L layers, each
//          ln1 (Nm,D) rstd1 (Nm) q k v (Nm,D) att (max_batch,H,max_seq,max_seq) atty mid ln2
//          (Nm,D) rstd2 (Nm) gate up act (Nm,F) | lnf (Nm,D) rstdf (Nm) tokloss (Nm) |
//          logits (Nm,V)
//   work_: backward dx dln datty dq dk dv dtmp (Nm,D) dact dgate (Nm,F) datt (as att) |
//          decode kcache vcache (L, max_seq, D), x xn q y o hid (D), gate up (F),
//          att (H, max_seq), logits probs scores (V)
// A forward of B x T tokens uses the first B*T rows of every (Nm, .) slot.

#define RETRLM__MAX_DIM (1 << 24)

typedef struct retrlm__acts {
    float *ln1, *rstd1, *q, *k, *v, *att, *atty, *mid, *ln2, *rstd2, *gate, *up, *act;
} retrlm__acts;

typedef struct retrlm__work {
    float *dx, *dln, *datty, *dq, *dk, *dv, *dtmp, *dact, *dgate, *datt;
    float *kc, *vc, *x, *xn, *q, *y, *o, *hid, *gate, *up, *att, *logits, *probs, *scores;
} retrlm__work;

static size_t retrlm__nmax(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->max_seq_len;
}

static size_t retrlm__att_size(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->n_heads * (size_t)c->max_seq_len *
           (size_t)c->max_seq_len;
}

static size_t retrlm__layer_stride(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    return 7 * nm * d + 2 * nm + 3 * nm * f + retrlm__att_size(c);
}

static void retrlm__layer_acts(const retrlm_model *m, int l, retrlm__acts *a) {
    const retrlm_model_config *c = &m->config;
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t hd2 = (size_t)(c->dim / c->n_heads / 2);
    float *p = m->acts_ + 2 * (size_t)c->max_seq_len * hd2 + (size_t)(c->n_layers + 1) * nm * d +
               (size_t)l * retrlm__layer_stride(c);
    a->ln1 = p; p += nm * d;
    a->rstd1 = p; p += nm;
    a->q = p; p += nm * d;
    a->k = p; p += nm * d;
    a->v = p; p += nm * d;
    a->att = p; p += retrlm__att_size(c);
    a->atty = p; p += nm * d;
    a->mid = p; p += nm * d;
    a->ln2 = p; p += nm * d;
    a->rstd2 = p; p += nm;
    a->gate = p; p += nm * f;
    a->up = p; p += nm * f;
    a->act = p;
}

static float *retrlm__rope_cos(const retrlm_model *m) { return m->acts_; }
static float *retrlm__rope_sin(const retrlm_model *m) {
    return m->acts_ + (size_t)m->config.max_seq_len * (size_t)(m->config.dim / m->config.n_heads / 2);
}
static float *retrlm__resid(const retrlm_model *m, int l) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + 2 * (size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2) +
           (size_t)l * retrlm__nmax(c) * (size_t)c->dim;
}
static float *retrlm__lnf(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return retrlm__resid(m, 0) + (size_t)(c->n_layers + 1) * retrlm__nmax(c) * (size_t)c->dim +
           (size_t)c->n_layers * retrlm__layer_stride(c);
}
static float *retrlm__rstdf(const retrlm_model *m) {
    return retrlm__lnf(m) + retrlm__nmax(&m->config) * (size_t)m->config.dim;
}
static float *retrlm__tokloss(const retrlm_model *m) {
    return retrlm__rstdf(m) + retrlm__nmax(&m->config);
}
static float *retrlm__logits(const retrlm_model *m) {
    return retrlm__tokloss(m) + retrlm__nmax(&m->config);
}
static size_t retrlm__acts_size(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c);
    return 2 * (size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2) +
           (size_t)(c->n_layers + 1) * nm * (size_t)c->dim +
           (size_t)c->n_layers * retrlm__layer_stride(c) + nm * (size_t)c->dim + 2 * nm +
           nm * (size_t)c->vocab_size;
}

static size_t retrlm__work_layout(const retrlm_model_config *c, float *base, retrlm__work *w) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t cache = (size_t)c->n_layers * (size_t)c->max_seq_len * d, v = (size_t)c->vocab_size;
    float *p = base;
    retrlm__work tmp;
    if (!w) w = &tmp;
#define RETRLM__TAKE(field, n) (w->field = p, p += (n))
    RETRLM__TAKE(dx, nm * d);
    RETRLM__TAKE(dln, nm * d);
    RETRLM__TAKE(datty, nm * d);
    RETRLM__TAKE(dq, nm * d);
    RETRLM__TAKE(dk, nm * d);
    RETRLM__TAKE(dv, nm * d);
    RETRLM__TAKE(dtmp, nm * d);
    RETRLM__TAKE(dact, nm * f);
    RETRLM__TAKE(dgate, nm * f);
    RETRLM__TAKE(datt, retrlm__att_size(c));
    RETRLM__TAKE(kc, cache);
    RETRLM__TAKE(vc, cache);
    RETRLM__TAKE(x, d);
    RETRLM__TAKE(xn, d);
    RETRLM__TAKE(q, d);
    RETRLM__TAKE(y, d);
    RETRLM__TAKE(o, d);
    RETRLM__TAKE(hid, d);
    RETRLM__TAKE(gate, f);
    RETRLM__TAKE(up, f);
    RETRLM__TAKE(att, (size_t)c->n_heads * (size_t)c->max_seq_len);
    RETRLM__TAKE(logits, v);
    RETRLM__TAKE(probs, v);
    RETRLM__TAKE(scores, v);
#undef RETRLM__TAKE
    return (size_t)(p - base);
}

static void retrlm__get_work(const retrlm_model *m, retrlm__work *w) {
    retrlm__work_layout(&m->config, m->work_, w);
}

// tensor sizes (floats) of a resolved config
static void retrlm__tensor_sizes(const retrlm_model_config *c, size_t *sz) {
    size_t v = (size_t)c->vocab_size, d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t l = (size_t)c->n_layers;
    sz[RETRLM_T_EMBED] = v * d;
    sz[RETRLM_T_LM_HEAD] = c->untied ? v * d : 0;
    sz[RETRLM_T_WQ] = sz[RETRLM_T_WK] = sz[RETRLM_T_WV] = sz[RETRLM_T_WO] = l * d * d;
    sz[RETRLM_T_W_GATE] = sz[RETRLM_T_W_UP] = sz[RETRLM_T_W_DOWN] = l * f * d;
    sz[RETRLM_T_ATTN_NORM] = sz[RETRLM_T_FFN_NORM] = l * d;
    sz[RETRLM_T_FINAL_NORM] = d;
}

// fills defaults into c and checks it; the estimate (in floats, double) guards every size product
static retrlm_result retrlm__resolve_config(retrlm_model_config *c) {
    double nm, d, f, v, l, h, t, est;
    if (!c->dim) c->dim = 256;
    if (!c->n_layers) c->n_layers = 4;
    if (!c->n_heads) c->n_heads = 4;
    if (!c->ffn_dim && c->dim > 0) c->ffn_dim = ((c->dim * 8 / 3) + 31) / 32 * 32;
    if (!c->max_seq_len) c->max_seq_len = 256;
    if (!c->max_batch) c->max_batch = 1;
    if (c->rope_theta == 0.0f) c->rope_theta = 10000.0f;
    if (c->norm_eps == 0.0f) c->norm_eps = 1e-5f;
    if (c->init_std == 0.0f) c->init_std = 0.02f;
    c->untied = c->untied != 0;
    c->bidirectional = c->bidirectional != 0;
    if (c->vocab_size < 1 || c->vocab_size > RETRLM__MAX_DIM || c->dim < 2 ||
        c->dim > RETRLM__MAX_DIM || c->n_layers < 1 || c->n_layers > 65536 || c->n_heads < 1 ||
        c->dim % c->n_heads || (c->dim / c->n_heads) % 2 || c->ffn_dim < 1 ||
        c->ffn_dim > RETRLM__MAX_DIM || c->max_seq_len < 1 || c->max_seq_len > RETRLM__MAX_DIM ||
        c->max_batch < 1 || c->max_batch > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG,
                            "model: bad shape vocab %d dim %d layers %d heads %d ffn %d seq %d "
                            "batch %d (dim must be a multiple of 2*heads, all positive)",
                            c->vocab_size, c->dim, c->n_layers, c->n_heads, c->ffn_dim,
                            c->max_seq_len, c->max_batch);
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f) || !(c->init_std > 0.0f) ||
        c->rope_theta > 1e30f || c->norm_eps > 1.0f || c->init_std > 100.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "model: rope_theta %g, norm_eps %g, init_std %g must "
                            "be positive and finite", (double)c->rope_theta, (double)c->norm_eps,
                            (double)c->init_std);
    nm = (double)c->max_batch * c->max_seq_len;
    d = c->dim; f = c->ffn_dim; v = c->vocab_size; l = c->n_layers; h = c->n_heads;
    t = c->max_seq_len;
    est = 2 * v * d + l * (4 * d * d + 3 * f * d + 2 * d) + d;         // params
    est = 2 * est + l * (nm * (7 * d + 3 * f + 2) + nm / t * h * t * t) + nm * (v + 2 * d + 4) +
          8 * nm * d + 2 * nm * f + nm / t * h * t * t + 2 * l * t * d + 3 * v + 8 * d + h * t;
    if (est * 8.0 > (double)SIZE_MAX || est > 1e13)
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: %.3g floats of parameters and activations "
                            "exceed what this machine can address", est);
    return RETRLM_OK;
}

RETRLM_API float *retrlm_model_tensor_ptr(const retrlm_model *m, retrlm_model_tensor t, int layer,
                                          int grad) {
    const retrlm_model_config *c = &m->config;
    size_t per;
    float *base;
    RETRLM_ASSERT(t >= 0 && t < RETRLM_T_COUNT);
    base = grad ? m->grad[t] : m->param[t];
    if (t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD || t == RETRLM_T_FINAL_NORM) return base;
    RETRLM_ASSERT(layer >= 0 && layer < c->n_layers);
    per = m->tensor_size[t] / (size_t)c->n_layers;
    return base + (size_t)layer * per;
}

RETRLM_API void retrlm_model_free(retrlm_model *m) {
    if (!m) return;
    RETRLM_FREE(m->params);
    RETRLM_FREE(m->grads);
    RETRLM_FREE(m->acts_);
    RETRLM_FREE(m->work_);
    RETRLM_FREE(m->tokens_);
    RETRLM_FREE(m->lengths_);
    RETRLM_FREE(m->ids_);
    memset(m, 0, sizeof *m);
}

// allocates everything for a resolved config; weights left zero
static retrlm_result retrlm__model_alloc(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_model_config c = *cfg;
    retrlm_result r;
    size_t off = 0, nwork;
    int t, i, hd2;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__resolve_config(&c)) != RETRLM_OK) return r;
    m->config = c;
    retrlm__tensor_sizes(&c, m->tensor_size);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        if (t == RETRLM_T_ATTN_NORM) m->n_decay = off;
        off += m->tensor_size[t];
    }
    m->n_params = off;
    m->params = (float *)retrlm__calloc(m->n_params, sizeof(float));
    m->grads = (float *)retrlm__calloc(m->n_params, sizeof(float));
    m->n_acts_ = retrlm__acts_size(&c);
    m->acts_ = (float *)retrlm__calloc(m->n_acts_, sizeof(float));
    nwork = retrlm__work_layout(&c, NULL, NULL);
    m->work_ = (float *)retrlm__calloc(nwork, sizeof(float));
    m->tokens_ = (int *)retrlm__calloc(retrlm__nmax(&c), sizeof(int));
    m->lengths_ = (int *)retrlm__calloc((size_t)c.max_batch, sizeof(int));
    m->ids_ = (int64_t *)retrlm__calloc((size_t)c.vocab_size, sizeof(int64_t));
    if (!m->params || !m->grads || !m->acts_ || !m->work_ || !m->tokens_ || !m->lengths_ ||
        !m->ids_) {
        retrlm_model_free(m);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: no memory for %lu parameters and %lu "
                            "activations", (unsigned long)off, (unsigned long)nwork);
    }
    off = 0;
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        m->param[t] = m->params + off;
        m->grad[t] = m->grads + off;
        off += m->tensor_size[t];
    }
    // rotary tables, Hugging Face convention: dim i of a head pairs with i + hd/2
    hd2 = c.dim / c.n_heads / 2;
    for (t = 0; t < c.max_seq_len; t++)
        for (i = 0; i < hd2; i++) {
            double freq = pow((double)c.rope_theta, -(double)(2 * i) / (double)(2 * hd2));
            double a = (double)t * freq;
            retrlm__rope_cos(m)[(size_t)t * hd2 + i] = (float)cos(a);
            retrlm__rope_sin(m)[(size_t)t * hd2 + i] = (float)sin(a);
        }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_result r;
    retrlm_rng rng;
    size_t i;
    int t;
    RETRLM_ASSERT(m && cfg);
    if ((r = retrlm__model_alloc(m, cfg)) != RETRLM_OK) return r;
    retrlm_rng_seed(&rng, m->config.seed);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        float std = m->config.init_std, *p = m->param[t];
        if (t >= RETRLM_T_ATTN_NORM) {
            for (i = 0; i < m->tensor_size[t]; i++) p[i] = 1.0f;
            continue;
        }
        if (t == RETRLM_T_WO || t == RETRLM_T_W_DOWN)
            std /= (float)sqrt(2.0 * m->config.n_layers);
        for (i = 0; i < m->tensor_size[t]; i++) p[i] = std * retrlm_rng_normal(&rng);
    }
    return RETRLM_OK;
}

RETRLM_API void retrlm_model_zero_grad(retrlm_model *m) {
    memset(m->grads, 0, m->n_params * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// layer kernels, forward and backward side by side. N rows; every row is computed by one thread.

// out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), per row of D
static void retrlm__rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N,
                                    int D, float eps) {
    int i;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > 65536)
    for (i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        float *oi = out + (size_t)i * D, ss = 0.0f, r;
        int d;
        RETRLM__SIMD_SUM(ss)
        for (d = 0; d < D; d++) ss += xi[d] * xi[d];
        r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[i] = r;
        RETRLM__SIMD
        for (d = 0; d < D; d++) oi[d] = xi[d] * r * w[d];
    }
}

// dx (+)= the input gradient; dw_rows (N, D) gets each row's gain gradient (summed later)
static void retrlm__rmsnorm_backward(float *dx, float *dw_rows, const float *dy, const float *x,
                                     const float *w, const float *rstd, int N, int D, int acc) {
    int i;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > 65536)
    for (i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D, *dyi = dy + (size_t)i * D;
        float *dxi = dx + (size_t)i * D, *dwi = dw_rows + (size_t)i * D;
        float r = rstd[i], dot = 0.0f, c;
        int d;
        RETRLM__SIMD_SUM(dot)
        for (d = 0; d < D; d++) dot += dyi[d] * w[d] * xi[d];
        c = dot * r * r * r / (float)D;
        if (acc) {
            RETRLM__SIMD
            for (d = 0; d < D; d++) dxi[d] += dyi[d] * w[d] * r - c * xi[d];
        } else {
            RETRLM__SIMD
            for (d = 0; d < D; d++) dxi[d] = dyi[d] * w[d] * r - c * xi[d];
        }
        RETRLM__SIMD
        for (d = 0; d < D; d++) dwi[d] = dyi[d] * xi[d] * r;
    }
}

// out (D) += sum over the N rows of rows (N, D), rows in order: the same sum for any thread count
static void retrlm__sum_rows(float *out, const float *rows, int N, int D) {
    int c, nchunks = (D + 63) / 64;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > 65536)
    for (c = 0; c < nchunks; c++) {
        int d0 = c * 64, d1 = RETRLM__MIN(D, d0 + 64), i, d;
        for (i = 0; i < N; i++) {
            const float *ri = rows + (size_t)i * D;
            for (d = d0; d < d1; d++) out[d] += ri[d];
        }
    }
}

// rotary embedding in place on x (N, H*hd); row i is at position pos0 + i % T. inverse rotates
// back by the same angle, which is the backward pass (the rotation is orthogonal).
static void retrlm__rope(float *x, int N, int T, int pos0, int H, int hd, const float *cosT,
                         const float *sinT, int inverse) {
    int i, hd2 = hd / 2;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)H * (size_t)hd > 65536)
    for (i = 0; i < N; i++) {
        int pos = pos0 + i % T, h, j;
        const float *cs = cosT + (size_t)pos * hd2, *sn = sinT + (size_t)pos * hd2;
        float sgn = inverse ? -1.0f : 1.0f;
        for (h = 0; h < H; h++) {
            float *a = x + (size_t)i * H * hd + (size_t)h * hd, *b = a + hd2;
            RETRLM__SIMD
            for (j = 0; j < hd2; j++) {
                float x1 = a[j], x2 = b[j], s = sgn * sn[j];
                a[j] = x1 * cs[j] - x2 * s;
                b[j] = x2 * cs[j] + x1 * s;
            }
        }
    }
}

// number of keys query t of sequence b attends to
static int retrlm__att_keys(int t, int len, int causal) {
    return causal ? RETRLM__MIN(t + 1, len) : len;
}

// softmax(q k^T / sqrt(hd)) v per (sequence, head); att (B, H, T, T) keeps the probabilities
// (0 where masked). q, k, v, y are (B*T, H*hd).
static void retrlm__attention_forward(float *y, float *att, const float *q, const float *k,
                                      const float *v, const int *len, int B, int T, int H, int hd,
                                      int causal) {
    int bh;
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * T * D > 1e5)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, d;
        for (t = 0; t < T; t++) {
            float *p = att + ((size_t)bh * T + t) * T, mx = -FLT_MAX, sum = 0.0f;
            const float *qt = q + ((size_t)b * T + t) * D + (size_t)h * hd;
            float *yt = y + ((size_t)b * T + t) * D + (size_t)h * hd;
            int nk = retrlm__att_keys(t, len[b], causal);
            for (j = 0; j < nk; j++) {
                const float *kj = k + ((size_t)b * T + j) * D + (size_t)h * hd;
                float s = 0.0f;
                RETRLM__SIMD_SUM(s)
                for (d = 0; d < hd; d++) s += qt[d] * kj[d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (j = 0; j < nk; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            for (j = 0; j < nk; j++) p[j] /= sum;
            for (j = nk; j < T; j++) p[j] = 0.0f;
            for (d = 0; d < hd; d++) yt[d] = 0.0f;
            for (j = 0; j < nk; j++) {
                const float *vj = v + ((size_t)b * T + j) * D + (size_t)h * hd;
                float pj = p[j];
                RETRLM__SIMD
                for (d = 0; d < hd; d++) yt[d] += pj * vj[d];
            }
        }
    }
}

// dq, dk, dv (set, not accumulated) from dy; datt (B, H, T, T) is scratch
static void retrlm__attention_backward(float *dq, float *dk, float *dv, float *datt,
                                       const float *dy, const float *att, const float *q,
                                       const float *k, const float *v, const int *len, int B,
                                       int T, int H, int hd, int causal) {
    int bh;
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * T * D > 1e5)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, d;
        for (t = 0; t < T; t++) {
            size_t r = ((size_t)b * T + t) * D + (size_t)h * hd;
            for (d = 0; d < hd; d++) dq[r + d] = dk[r + d] = dv[r + d] = 0.0f;
        }
        for (t = 0; t < T; t++) {
            const float *p = att + ((size_t)bh * T + t) * T;
            float *dp = datt + ((size_t)bh * T + t) * T, s = 0.0f;
            const float *dyt = dy + ((size_t)b * T + t) * D + (size_t)h * hd;
            const float *qt = q + ((size_t)b * T + t) * D + (size_t)h * hd;
            float *dqt = dq + ((size_t)b * T + t) * D + (size_t)h * hd;
            int nk = retrlm__att_keys(t, len[b], causal);
            for (j = 0; j < nk; j++) {
                size_t rj = ((size_t)b * T + j) * D + (size_t)h * hd;
                const float *vj = v + rj;
                float *dvj = dv + rj, a = 0.0f, pj = p[j];
                RETRLM__SIMD_SUM(a)
                for (d = 0; d < hd; d++) a += dyt[d] * vj[d];
                dp[j] = a;
                s += pj * a;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) dvj[d] += pj * dyt[d];
            }
            for (j = 0; j < nk; j++) {
                size_t rj = ((size_t)b * T + j) * D + (size_t)h * hd;
                const float *kj = k + rj;
                float *dkj = dk + rj, ds = p[j] * (dp[j] - s) * scale;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) {
                    dqt[d] += ds * kj[d];
                    dkj[d] += ds * qt[d];
                }
            }
        }
    }
}

// act = silu(gate) * up, n elements
static void retrlm__swiglu_forward(float *act, const float *gate, const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_IF(n > 65536)
    for (i = 0; i < nn; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// dgate, dup (set) from dact; dup may be dact
static void retrlm__swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                                    const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_IF(n > 65536)
    for (i = 0; i < nn; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), da = dact[i];
        dgate[i] = da * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] = da * g * sg;
    }
}

// ---------------------------------------------------------------------------------------------
// forward / backward of the whole model

RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    int i, l, N;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && tokens);
    if (B < 1 || T < 1 || B > c->max_batch || T > c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_forward: batch %d x %d exceeds %d x %d", B, T,
                            c->max_batch, c->max_seq_len);
    N = B * T;
    for (i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_forward: token %d at %d is outside [0, %d)",
                                tokens[i], i, V);
    for (i = 0; i < B; i++) {
        int len = lengths ? lengths[i] : T;
        if (len < 1 || len > T)
            return retrlm__fail(RETRLM_ERR_ARG, "model_forward: length %d of sequence %d is "
                                "outside [1, %d]", len, i, T);
        m->lengths_[i] = len;
    }
    memcpy(m->tokens_, tokens, (size_t)N * sizeof(int));
    m->B = B;
    m->T = T;
    m->lengths = m->lengths_;
    m->hidden = retrlm__lnf(m);
    m->logits = NULL;
    {
        float *x0 = retrlm__resid(m, 0);
        for (i = 0; i < N; i++)
            memcpy(x0 + (size_t)i * D, m->param[RETRLM_T_EMBED] + (size_t)tokens[i] * D,
                   (size_t)D * sizeof(float));
    }
    for (l = 0; l < c->n_layers; l++) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l), *xo = retrlm__resid(m, l + 1);
        retrlm__layer_acts(m, l, &a);
        retrlm__rmsnorm_forward(a.ln1, a.rstd1, x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm_matmul(a.q, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, N, D, D, 0)) ||
            (r = retrlm_matmul(a.k, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), NULL, N, D, D, 0)) ||
            (r = retrlm_matmul(a.v, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), NULL, N, D, D, 0)))
            return r;
        retrlm__rope(a.q, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(a.k, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__attention_forward(a.atty, a.att, a.q, a.k, a.v, m->lengths_, B, T, H, hd,
                                  !c->bidirectional);
        memcpy(a.mid, x, (size_t)N * D * sizeof(float));
        if ((r = retrlm_matmul(a.mid, a.atty, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, N, D,
                               D, RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_forward(a.ln2, a.rstd2, a.mid, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm_matmul(a.gate, a.ln2, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, N,
                               F, D, 0)) ||
            (r = retrlm_matmul(a.up, a.ln2, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, N, F,
                               D, 0)))
            return r;
        retrlm__swiglu_forward(a.act, a.gate, a.up, (size_t)N * F);
        memcpy(xo, a.mid, (size_t)N * D * sizeof(float));
        if ((r = retrlm_matmul(xo, a.act, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, N, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(retrlm__lnf(m), retrlm__rstdf(m), retrlm__resid(m, c->n_layers),
                            m->param[RETRLM_T_FINAL_NORM], N, D, c->norm_eps);
    if (!(flags & RETRLM_FORWARD_NO_LOGITS)) {
        const float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        if ((r = retrlm_matmul(retrlm__logits(m), retrlm__lnf(m), wout, NULL, N, V, D, 0))) return r;
        m->logits = retrlm__logits(m);
    }
    return RETRLM_OK;
}

RETRLM_API const float *retrlm_model_ffn_input(const retrlm_model *m, int layer) {
    retrlm__acts a;
    RETRLM_ASSERT(layer >= 0 && layer < m->config.n_layers);
    retrlm__layer_acts(m, layer, &a);
    return a.ln2;
}

RETRLM_API retrlm_result retrlm_model_backward(retrlm_model *m, const retrlm_model_grad_in *g) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int B = m->B, T = m->T, N = B * T;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    retrlm__work w;
    retrlm_result r;
    int l, i;
    RETRLM_ASSERT(m && g && N > 0);
    retrlm__get_work(m, &w);
    // head: dlnf = dlogits · Wout + dhidden; dWout += dlogitsᵀ · lnf
    memset(w.dln, 0, (size_t)N * D * sizeof(float));
    if (g->dlogits) {
        float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        float *gout = c->untied ? m->grad[RETRLM_T_LM_HEAD] : m->grad[RETRLM_T_EMBED];
        if ((r = retrlm_matmul(w.dln, g->dlogits, wout, NULL, N, D, V, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(gout, g->dlogits, retrlm__lnf(m), NULL, V, D, N, AB)))
            return r;
    }
    if (g->dhidden)
        for (i = 0; i < N * D; i++) w.dln[i] += g->dhidden[i];
    retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, retrlm__resid(m, c->n_layers),
                             m->param[RETRLM_T_FINAL_NORM], retrlm__rstdf(m), N, D, 0);
    retrlm__sum_rows(m->grad[RETRLM_T_FINAL_NORM], w.dtmp, N, D);
    for (l = c->n_layers - 1; l >= 0; l--) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l);
        retrlm__layer_acts(m, l, &a);
        // feed-forward: xo = mid + act · Wdownᵀ
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 1), w.dx, a.act, NULL, D, F,
                               N, AB)) ||
            (r = retrlm_matmul(w.dact, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, N, F,
                               D, RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__swiglu_backward(w.dgate, w.dact, w.dact, a.gate, a.up, (size_t)N * F);
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 1), w.dgate, a.ln2, NULL, F,
                               D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 1), w.dact, a.ln2, NULL, F, D,
                               N, AB)) ||
            (r = retrlm_matmul(w.dln, w.dgate, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, N,
                               D, F, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(w.dln, w.dact, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, N, D,
                               F, RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (g->dffn_in && g->dffn_in[l]) {
            const float *e = g->dffn_in[l];
            for (i = 0; i < N * D; i++) w.dln[i] += e[i];
        }
        retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                 retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2, N, D, 1);
        retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
        // attention: mid = x + atty · Woᵀ
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 1), w.dx, a.atty, NULL, D, D, N,
                               AB)) ||
            (r = retrlm_matmul(w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__attention_backward(w.dq, w.dk, w.dv, w.datt, w.datty, a.att, a.q, a.k, a.v,
                                   m->lengths_, B, T, H, hd, !c->bidirectional);
        retrlm__rope(w.dq, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        retrlm__rope(w.dk, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 1), w.dq, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 1), w.dk, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 1), w.dv, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(w.dln, w.dk, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm_matmul(w.dln, w.dv, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, x,
                                 retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), a.rstd1, N, D, 1);
        retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 1), w.dtmp, N, D);
    }
    // embedding: scatter-add by token, columns in parallel, tokens in order
    {
        int nchunks = (D + 63) / 64, ch;
        float *gw = m->grad[RETRLM_T_EMBED];
        const int *tok = m->tokens_;
        RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > 65536)
        for (ch = 0; ch < nchunks; ch++) {
            int d0 = ch * 64, d1 = RETRLM__MIN(D, d0 + 64), t, d;
            for (t = 0; t < N; t++) {
                float *gr = gw + (size_t)tok[t] * D;
                const float *dr = w.dx + (size_t)t * D;
                for (d = d0; d < d1; d++) gr[d] += dr[d];
            }
        }
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_lm_loss(retrlm_model *m, const int *targets, float *loss,
                                              int *count) {
    const int V = m->config.vocab_size, N = m->B * m->T;
    float *logits = retrlm__logits(m), *tl = retrlm__tokloss(m), inv;
    int i, n = 0;
    double sum = 0.0;
    if (!m->logits)
        return retrlm__fail(RETRLM_ERR_ARG, "model_lm_loss: the last forward computed no logits");
    for (i = 0; i < N; i++) {
        if (targets[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_lm_loss: target %d at %d is >= %d",
                                targets[i], i, V);
        n += targets[i] >= 0;
    }
    inv = n ? 1.0f / (float)n : 0.0f;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > 65536)
    for (i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        int tg = targets[i], j;
        if (tg < 0) {
            tl[i] = 0.0f;
            for (j = 0; j < V; j++) z[j] = 0.0f;
            continue;
        }
        tl[i] = retrlm_logsumexp(z, V) - z[tg];
        retrlm_softmax(z, z, V);
        for (j = 0; j < V; j++) z[j] *= inv;
        z[tg] -= inv;
    }
    for (i = 0; i < N; i++) sum += tl[i];
    if (loss) *loss = n ? (float)(sum / n) : 0.0f;
    if (count) *count = n;
    return RETRLM_OK;
}

RETRLM_API double retrlm_model_nll(retrlm_model *m, const int *targets, int *count) {
    const int V = m->config.vocab_size, N = m->B * m->T;
    const float *logits = m->logits;
    float *tl = retrlm__tokloss(m);
    int i, n = 0;
    double sum = 0.0;
    RETRLM_ASSERT(logits);
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > 65536)
    for (i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        int tg = targets[i];
        tl[i] = (tg >= 0 && tg < V) ? retrlm_logsumexp(z, V) - z[tg] : 0.0f;
    }
    for (i = 0; i < N; i++) {
        sum += tl[i];
        n += targets[i] >= 0 && targets[i] < V;
    }
    if (count) *count = n;
    return sum;
}

RETRLM_API void retrlm_model_mean_pool(const retrlm_model *m, float *out) {
    const int D = m->config.dim, T = m->T;
    int b, t, d;
    for (b = 0; b < m->B; b++) {
        float *o = out + (size_t)b * D, inv = 1.0f / (float)m->lengths_[b];
        for (d = 0; d < D; d++) o[d] = 0.0f;
        for (t = 0; t < m->lengths_[b]; t++) {
            const float *h = m->hidden + ((size_t)b * T + t) * D;
            for (d = 0; d < D; d++) o[d] += h[d];
        }
        for (d = 0; d < D; d++) o[d] *= inv;
    }
}

RETRLM_API void retrlm_model_mean_pool_backward(const retrlm_model *m, const float *dout,
                                                float *dhidden) {
    const int D = m->config.dim, T = m->T;
    int b, t, d;
    for (b = 0; b < m->B; b++) {
        const float *g = dout + (size_t)b * D;
        float inv = 1.0f / (float)m->lengths_[b];
        for (t = 0; t < T; t++) {
            float *h = dhidden + ((size_t)b * T + t) * D;
            for (d = 0; d < D; d++) h[d] = t < m->lengths_[b] ? g[d] * inv : 0.0f;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW. Work is split into fixed chunks of a group (never by thread), so the global norm and
// every update are the same for any thread count.

#define RETRLM__ADAM_CHUNK 16384

RETRLM_API retrlm_result retrlm_adamw_init(retrlm_adamw *o, const retrlm_adamw_config *cfg,
                                           const retrlm_adamw_group *groups, int n_groups) {
    int i;
    size_t n = 0, maxc = 1;
    RETRLM_ASSERT(o && groups && n_groups >= 1);
    memset(o, 0, sizeof *o);
    if (cfg) o->config = *cfg;
    if (o->config.beta1 == 0.0f) o->config.beta1 = 0.9f;
    if (o->config.beta2 == 0.0f) o->config.beta2 = 0.95f;
    if (o->config.eps == 0.0f) o->config.eps = 1e-8f;
    if (o->config.clip_norm == 0.0f) o->config.clip_norm = 1.0f;
    if (o->config.min_lr_ratio == 0.0f) o->config.min_lr_ratio = 0.1f;
    if (o->config.min_lr_ratio < 0.0f) o->config.min_lr_ratio = 0.0f;
    if (!(o->config.beta1 > 0.0f && o->config.beta1 < 1.0f && o->config.beta2 > 0.0f &&
          o->config.beta2 < 1.0f && o->config.eps > 0.0f && o->config.warmup_steps >= 0 &&
          o->config.total_steps >= 0 && o->config.min_lr_ratio <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "adamw: betas must be in (0, 1), eps > 0, steps >= 0, "
                            "min_lr_ratio <= 1");
    for (i = 0; i < n_groups; i++) {
        RETRLM_ASSERT(groups[i].n == 0 || (groups[i].params && groups[i].grads));
        n += groups[i].n;
        maxc = RETRLM__MAX(maxc, (groups[i].n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
    }
    o->groups = (retrlm_adamw_group *)retrlm__alloc((size_t)n_groups, sizeof *o->groups);
    o->m = (float *)retrlm__calloc(n, 2 * sizeof(float));
    o->partial_ = (double *)retrlm__calloc(maxc, sizeof(double));
    if (!o->groups || !o->m || !o->partial_) {
        retrlm_adamw_free(o);
        return retrlm__fail(RETRLM_ERR_NOMEM, "adamw: no memory for %lu moments", (unsigned long)n);
    }
    memcpy(o->groups, groups, (size_t)n_groups * sizeof *groups);
    o->n_groups = n_groups;
    o->n = n;
    o->v = o->m + n;
    o->n_chunks_ = maxc;
    return RETRLM_OK;
}

RETRLM_API void retrlm_adamw_free(retrlm_adamw *o) {
    if (!o) return;
    RETRLM_FREE(o->groups);
    RETRLM_FREE(o->m);
    RETRLM_FREE(o->partial_);
    memset(o, 0, sizeof *o);
}

RETRLM_API float retrlm_adamw_lr_scale(const retrlm_adamw_config *cfg, int64_t step) {
    double minr = cfg->min_lr_ratio == 0.0f ? 0.1 : (cfg->min_lr_ratio < 0.0f ? 0.0 : cfg->min_lr_ratio);
    if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
        return (float)((double)(step + 1) / (double)cfg->warmup_steps);
    if (cfg->total_steps > cfg->warmup_steps) {
        double t = (double)(step - cfg->warmup_steps) / (double)(cfg->total_steps - cfg->warmup_steps);
        if (t > 1.0) t = 1.0;
        return (float)(minr + (1.0 - minr) * 0.5 * (1.0 + cos(3.141592653589793 * t)));
    }
    return 1.0f;
}

RETRLM_API void retrlm_adamw_step(retrlm_adamw *o) {
    const retrlm_adamw_config *c = &o->config;
    double sumsq = 0.0, norm;
    float clip = 1.0f, scale, b1 = c->beta1, b2 = c->beta2, bc1, bc2;
    size_t base = 0;
    int gi;
    for (gi = 0; gi < o->n_groups; gi++) {
        const float *g = o->groups[gi].grads;
        size_t n = o->groups[gi].n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 1)
        for (ch = 0; ch < nch; ch++) {
            size_t i0 = (size_t)ch * RETRLM__ADAM_CHUNK, i1 = RETRLM__MIN(n, i0 + RETRLM__ADAM_CHUNK), i;
            float s = 0.0f;
            RETRLM__SIMD_SUM(s)
            for (i = i0; i < i1; i++) s += g[i] * g[i];
            o->partial_[ch] = s;
        }
        for (ch = 0; ch < nch; ch++) sumsq += o->partial_[ch];
    }
    norm = sqrt(sumsq);
    o->last_grad_norm = (float)norm;
    if (c->clip_norm > 0.0f && norm > c->clip_norm) clip = (float)(c->clip_norm / norm);
    scale = retrlm_adamw_lr_scale(c, o->step);
    o->last_lr_scale = scale;
    o->step++;
    bc1 = (float)(1.0 - pow(b1, (double)o->step));
    bc2 = (float)(1.0 - pow(b2, (double)o->step));
    for (gi = 0; gi < o->n_groups; gi++) {
        retrlm_adamw_group *g = &o->groups[gi];
        float lr = g->lr * scale, wd = g->weight_decay, eps = c->eps;
        float *mm = o->m + base, *vv = o->v + base, *p = g->params;
        const float *gr = g->grads;
        size_t n = g->n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 1)
        for (ch = 0; ch < nch; ch++) {
            size_t i0 = (size_t)ch * RETRLM__ADAM_CHUNK, i1 = RETRLM__MIN(n, i0 + RETRLM__ADAM_CHUNK), i;
            for (i = i0; i < i1; i++) {
                float gg = gr[i] * clip, mh, vh;
                mm[i] = b1 * mm[i] + (1.0f - b1) * gg;
                vv[i] = b2 * vv[i] + (1.0f - b2) * gg * gg;
                mh = mm[i] / bc1;
                vh = vv[i] / bc2;
                p[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * p[i]);
            }
        }
        base += n;
    }
}

RETRLM_API int retrlm_model_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                         retrlm_adamw_group out[2]) {
    out[0].params = m->params;
    out[0].grads = m->grads;
    out[0].n = m->n_decay;
    out[0].lr = lr;
    out[0].weight_decay = weight_decay;
    out[1].params = m->params + m->n_decay;
    out[1].grads = m->grads + m->n_decay;
    out[1].n = m->n_params - m->n_decay;
    out[1].lr = lr;
    out[1].weight_decay = 0.0f;
    return out[1].n ? 2 : 1;
}

// ---------------------------------------------------------------------------------------------
// training loop

RETRLM_API void retrlm_lm_train_state_init(retrlm_lm_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

RETRLM_API retrlm_result retrlm_lm_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                 size_t n_bytes, int seq_len, double *bpb) {
    const int T = seq_len > 0 ? RETRLM__MIN(seq_len, m->config.max_seq_len) : m->config.max_seq_len;
    const int Bm = m->config.max_batch;
    size_t nwin, w0;
    double nats;
    int *inp, *tgt;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(m && tokens && bpb);
    if (n < 1 || n_bytes < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "lm_bits_per_byte: %lu tokens, %lu bytes: need >= 1",
                            (unsigned long)n, (unsigned long)n_bytes);
    nats = log((double)m->config.vocab_size); // the first token, predicted from nothing
    nwin = (n - 1 + (size_t)T - 1) / (size_t)T;
    inp = (int *)retrlm__alloc((size_t)Bm * T, 2 * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "lm_bits_per_byte: no memory");
    tgt = inp + (size_t)Bm * T;
    for (w0 = 0; w0 < nwin && !r; w0 += (size_t)Bm) {
        int B = (int)RETRLM__MIN((size_t)Bm, nwin - w0), b, t;
        for (b = 0; b < B; b++)
            for (t = 0; t < T; t++) {
                size_t pos = (w0 + (size_t)b) * (size_t)T + (size_t)t;
                int valid = pos + 1 < n;
                inp[b * T + t] = valid ? tokens[pos] : 0;
                tgt[b * T + t] = valid ? tokens[pos + 1] : -1;
            }
        if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) == RETRLM_OK)
            nats += retrlm_model_nll(m, tgt, NULL);
    }
    RETRLM_FREE(inp);
    if (r) return r;
    *bpb = nats / log(2.0) / (double)n_bytes;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_train(retrlm_model *m, retrlm_adamw *opt,
                                         const retrlm_lm_train_config *cfg,
                                         retrlm_lm_train_state *st) {
    const int B = cfg->batch > 0 ? cfg->batch : m->config.max_batch;
    const int T = cfg->seq_len > 0 ? cfg->seq_len : m->config.max_seq_len;
    retrlm_model_grad_in gin;
    retrlm_result r = RETRLM_OK;
    int *inp, *tgt;
    RETRLM_ASSERT(m && opt && cfg && st);
    if (B > m->config.max_batch || T > m->config.max_seq_len || !cfg->train ||
        cfg->n_train < (size_t)T + 2 || cfg->steps < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lm_train: batch %d x %d (model %d x %d), %lu tokens: "
                            "need a stream longer than seq_len + 1", B, T, m->config.max_batch,
                            m->config.max_seq_len, (unsigned long)cfg->n_train);
    inp = (int *)retrlm__alloc((size_t)B * T, 2 * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "lm_train: no memory");
    tgt = inp + (size_t)B * T;
    memset(&gin, 0, sizeof gin);
    while (st->step < cfg->steps && !r) {
        int b, t, final;
        float loss = 0.0f;
        for (b = 0; b < B; b++) {
            size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(cfg->n_train - (size_t)T));
            for (t = 0; t < T; t++) {
                inp[b * T + t] = cfg->train[off + (size_t)t];
                tgt[b * T + t] = cfg->train[off + (size_t)t + 1];
            }
        }
        if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            break;
        retrlm_model_zero_grad(m);
        gin.dlogits = m->logits;
        if ((r = retrlm_model_backward(m, &gin))) break;
        retrlm_adamw_step(opt);
        if (cfg->losses) cfg->losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        final = st->step == cfg->steps;
        if (cfg->valid && cfg->n_valid > 0 &&
            (final || (cfg->eval_every > 0 && st->step % cfg->eval_every == 0))) {
            if ((r = retrlm_lm_bits_per_byte(m, cfg->valid, cfg->n_valid, cfg->valid_bytes, T,
                                             &st->last_valid_bpb)))
                break;
            if ((r = retrlm__progress(cfg->progress, cfg->user, "valid", (double)st->step,
                                      (double)cfg->steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (cfg->checkpoint &&
            (final || (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, st, cfg->checkpoint)))
            break;
#endif
        r = retrlm__progress(cfg->progress, cfg->user, "train", (double)st->step, (double)cfg->steps);
    }
    RETRLM_FREE(inp);
    return r;
}

// ---------------------------------------------------------------------------------------------
// checkpoints in the container format

#define RETRLM__CKPT_KIND "model"
#define RETRLM__CKPT_NCFG 9

static retrlm_result retrlm__ckpt_writer(const retrlm_model *m, const retrlm_adamw *opt,
                                         const retrlm_lm_train_state *st, retrlm_writer *w) {
    const retrlm_model_config *c = &m->config;
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    retrlm_result r;
    ci[0] = c->vocab_size; ci[1] = c->dim; ci[2] = c->n_layers; ci[3] = c->n_heads;
    ci[4] = c->ffn_dim; ci[5] = c->max_seq_len; ci[6] = c->max_batch; ci[7] = c->untied;
    ci[8] = c->bidirectional;
    cf[0] = c->rope_theta; cf[1] = c->norm_eps; cf[2] = c->init_std;
    if ((r = retrlm_writer_init(w, RETRLM__CKPT_KIND))) return r;
    if ((r = retrlm_writer_add_copy(w, "config", RETRLM_DTYPE_I32, ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_writer_add_copy(w, "config_f", RETRLM_DTYPE_F32, cf, 3)) ||
        (r = retrlm_writer_add(w, "params", RETRLM_DTYPE_F32, m->params, m->n_params)))
        return r;
    if (opt) {
        int64_t s = opt->step;
        if (opt->n != m->n_params)
            return retrlm__fail(RETRLM_ERR_ARG, "model_save: the optimiser holds %lu floats, the "
                                "model %lu", (unsigned long)opt->n, (unsigned long)m->n_params);
        if ((r = retrlm_writer_add(w, "adamw_m", RETRLM_DTYPE_F32, opt->m, opt->n)) ||
            (r = retrlm_writer_add(w, "adamw_v", RETRLM_DTYPE_F32, opt->v, opt->n)) ||
            (r = retrlm_writer_add_copy(w, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
    }
    if (st) {
        int64_t s = st->step;
        double f[2];
        f[0] = st->last_loss;
        f[1] = st->last_valid_bpb;
        if ((r = retrlm_writer_add_copy(w, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_writer_add_copy(w, "rng", RETRLM_DTYPE_U64, st->rng.s, 4)) ||
            (r = retrlm_writer_add_copy(w, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_save_memory(const retrlm_model *m, const retrlm_adamw *opt,
                                                  const retrlm_lm_train_state *st, void *buf,
                                                  size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

static retrlm_result retrlm__ckpt_load(retrlm_model *m, const retrlm_reader *rd,
                                       const retrlm_model_config *over) {
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    retrlm_model_config c;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm_reader_read(rd, "config", RETRLM_DTYPE_I32, ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_reader_read(rd, "config_f", RETRLM_DTYPE_F32, cf, 3)))
        return r;
    memset(&c, 0, sizeof c);
    c.vocab_size = ci[0]; c.dim = ci[1]; c.n_layers = ci[2]; c.n_heads = ci[3];
    c.ffn_dim = ci[4]; c.max_seq_len = ci[5]; c.max_batch = ci[6];
    c.rope_theta = cf[0]; c.norm_eps = cf[1]; c.init_std = cf[2];
    if (ci[7] != 0 && ci[7] != 1) return retrlm__fail(RETRLM_ERR_FORMAT, "model: config untied %d", ci[7]);
    if (ci[8] != 0 && ci[8] != 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config bidirectional %d", ci[8]);
    c.untied = ci[7]; c.bidirectional = ci[8];
    // every field of a file must be set: a zero would silently become a default
    if (ci[0] < 1 || ci[1] < 1 || ci[2] < 1 || ci[3] < 1 || ci[4] < 1 || ci[5] < 1 || ci[6] < 1 ||
        !(cf[0] > 0.0f) || !(cf[1] > 0.0f) || !(cf[2] > 0.0f))
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config has a field <= 0");
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    {
        // the parameter count must match before anything big is allocated
        const void *p;
        size_t n, sz[RETRLM_T_COUNT], tot = 0;
        int t;
        retrlm_model_config c2 = c;
        if ((r = retrlm__resolve_config(&c2))) return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
        retrlm__tensor_sizes(&c2, sz);
        for (t = 0; t < RETRLM_T_COUNT; t++) tot += sz[t];
        if ((r = retrlm_reader_get(rd, "params", RETRLM_DTYPE_F32, &p, &n))) return r;
        if (n != tot)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: 'params' holds %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)tot);
        if ((r = retrlm__model_alloc(m, &c))) return r;
        if (n) memcpy(m->params, p, n * sizeof(float));
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_memory(retrlm_model *m, const void *buf, size_t size,
                                                  const retrlm_model_config *over) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over);
    retrlm_reader_close(&rd);
    return r;
}

static retrlm_result retrlm__state_load(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                        const retrlm_reader *rd) {
    retrlm_result r;
    if (opt) {
        const void *pm, *pv;
        size_t nm, nv;
        int64_t s;
        if ((r = retrlm_reader_get(rd, "adamw_m", RETRLM_DTYPE_F32, &pm, &nm)) ||
            (r = retrlm_reader_get(rd, "adamw_v", RETRLM_DTYPE_F32, &pv, &nv)) ||
            (r = retrlm_reader_read(rd, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
        if (nm != opt->n || nv != opt->n || s < 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: optimiser state of %lu/%lu floats at "
                                "step %lld, the optimiser has %lu", (unsigned long)nm,
                                (unsigned long)nv, (long long)s, (unsigned long)opt->n);
        if (nm) {
            memcpy(opt->m, pm, nm * sizeof(float));
            memcpy(opt->v, pv, nv * sizeof(float));
        }
        opt->step = s;
    }
    if (st) {
        int64_t s;
        uint64_t rs[4];
        double f[2];
        if ((r = retrlm_reader_read(rd, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_reader_read(rd, "rng", RETRLM_DTYPE_U64, rs, 4)) ||
            (r = retrlm_reader_read(rd, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
        if (s < 0 || (rs[0] | rs[1] | rs[2] | rs[3]) == 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: train step %lld or an all-zero rng state",
                                (long long)s);
        st->step = s;
        memcpy(st->rng.s, rs, sizeof rs);
        st->last_loss = (float)f[0];
        st->last_valid_bpb = f[1];
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_state_memory(retrlm_adamw *opt,
                                                        retrlm_lm_train_state *st,
                                                        const void *buf, size_t size) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_model_save(const retrlm_model *m, const retrlm_adamw *opt,
                                           const retrlm_lm_train_state *st, const char *path) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load(retrlm_model *m, const char *path,
                                           const retrlm_model_config *over) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over);
    retrlm_reader_close(&rd);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_state(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                                 const char *path) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}
#endif

// ---------------------------------------------------------------------------------------------
// generation: one token at a time against a KV cache of (L, max_seq_len, D)

RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const float scale = 1.0f / sqrtf((float)hd);
    retrlm__work w;
    retrlm_result r;
    float rstd;
    int l, h;
    RETRLM_ASSERT(m && m->params);
    if (token < 0 || token >= V || pos < 0 || pos >= c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: token %d (vocabulary %d) at position "
                            "%d (max %d)", token, V, pos, c->max_seq_len);
    retrlm__get_work(m, &w);
    memcpy(w.x, m->param[RETRLM_T_EMBED] + (size_t)token * D, (size_t)D * sizeof(float));
    for (l = 0; l < c->n_layers; l++) {
        float *kc = w.kc + ((size_t)l * c->max_seq_len) * D, *vc = w.vc + ((size_t)l * c->max_seq_len) * D;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm_matmul(w.q, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, 1, D, D, 0)) ||
            (r = retrlm_matmul(kc + (size_t)pos * D, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0),
                               NULL, 1, D, D, 0)) ||
            (r = retrlm_matmul(vc + (size_t)pos * D, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0),
                               NULL, 1, D, D, 0)))
            return r;
        retrlm__rope(w.q, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(kc + (size_t)pos * D, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        RETRLM__PARALLEL_FOR_IF(H > 1 && (size_t)pos * D > 65536)
        for (h = 0; h < H; h++) {
            float *p = w.att + (size_t)h * c->max_seq_len, mx = -FLT_MAX, sum = 0.0f;
            const float *qh = w.q + (size_t)h * hd;
            float *yh = w.y + (size_t)h * hd;
            int j, d;
            for (j = 0; j <= pos; j++) {
                p[j] = retrlm_dot(qh, kc + (size_t)j * D + (size_t)h * hd, hd) * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (j = 0; j <= pos; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            for (d = 0; d < hd; d++) yh[d] = 0.0f;
            for (j = 0; j <= pos; j++) {
                const float *vj = vc + (size_t)j * D + (size_t)h * hd;
                float pj = p[j] / sum;
                for (d = 0; d < hd; d++) yh[d] += pj * vj[d];
            }
        }
        if ((r = retrlm_matmul(w.x, w.y, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, 1, D, D,
                               RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm_matmul(w.gate, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, 1, F,
                               D, 0)) ||
            (r = retrlm_matmul(w.up, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, 1, F, D, 0)))
            return r;
        retrlm__swiglu_forward(w.gate, w.gate, w.up, (size_t)F);
        if ((r = retrlm_matmul(w.x, w.gate, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, 1, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(w.hid, &rstd, w.x, m->param[RETRLM_T_FINAL_NORM], 1, D, c->norm_eps);
    if ((r = retrlm_matmul(w.logits, w.hid,
                           c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED], NULL, 1,
                           V, D, 0)))
        return r;
    m->step_logits = w.logits;
    m->step_hidden = w.hid;
    return RETRLM_OK;
}

RETRLM_API int retrlm_model_sample(retrlm_model *m, const float *logits, const retrlm_sampler *s,
                                   retrlm_rng *rng) {
    const int V = m->config.vocab_size;
    retrlm__work w;
    int i, k, keep;
    float u, mass;
    if (!s || s->temperature <= 0.0f) {
        int best = 0;
        for (i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    retrlm__get_work(m, &w);
    for (i = 0; i < V; i++) w.probs[i] = logits[i] / s->temperature;
    retrlm_softmax(w.probs, w.probs, V);
    k = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    if (k == V && !(s->top_p > 0.0f && s->top_p < 1.0f)) {
        // the whole distribution: inverse CDF
        u = retrlm_rng_float(rng);
        mass = 0.0f;
        for (i = 0; i < V; i++) {
            mass += w.probs[i];
            if (u < mass) return i;
        }
        for (i = V - 1; i > 0 && w.probs[i] <= 0.0f; i--) {}
        return i;
    }
    k = retrlm_topk_select(w.probs, V, k, m->ids_, w.scores); // best first, ties by id
    if (k < 1) return 0;
    mass = 0.0f;
    for (i = 0; i < k; i++) mass += w.scores[i];
    keep = k;
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        float cum = 0.0f;
        for (i = 0; i < k; i++) {
            cum += w.scores[i];
            if (cum >= s->top_p * mass) {
                keep = i + 1;
                break;
            }
        }
        mass = 0.0f;
        for (i = 0; i < keep; i++) mass += w.scores[i];
    }
    u = retrlm_rng_float(rng) * mass;
    for (i = 0; i < keep; i++) {
        u -= w.scores[i];
        if (u < 0.0f) return (int)m->ids_[i];
    }
    return (int)m->ids_[keep - 1];
}

RETRLM_API retrlm_result retrlm_model_generate(retrlm_model *m, const int *prompt, int n_prompt,
                                               int n_new, const retrlm_sampler *s,
                                               retrlm_rng *rng, int *out, int *n_out) {
    retrlm_result r;
    int pos, got = 0, tok;
    RETRLM_ASSERT(m && prompt && (out || n_new == 0) && (rng || !s || s->temperature <= 0.0f));
    if (n_out) *n_out = 0;
    if (n_prompt < 1 || n_prompt > m->config.max_seq_len || n_new < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "model_generate: prompt of %d tokens (1..%d), %d new",
                            n_prompt, m->config.max_seq_len, n_new);
    for (pos = 0; pos < n_prompt; pos++)
        if ((r = retrlm_model_decode(m, prompt[pos], pos))) return r;
    while (got < n_new) {
        tok = retrlm_model_sample(m, m->step_logits, s, rng);
        out[got++] = tok;
        if (n_out) *n_out = got;
        if (got == n_new || pos >= m->config.max_seq_len) break;
        if ((r = retrlm_model_decode(m, tok, pos++))) return r;
    }
    return RETRLM_OK;
}
