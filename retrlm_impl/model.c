#include "internal.h"

// ---------------------------------------------------------------------------------------------
// model: the transformer. Layout of the two private blocks (Nm = max_batch * max_seq_len):
//   rope_: cos, sin (max_seq_len, hd/2)
//   acts_: resid (L+1, Nm, D) | L layers, each ln1 (Nm,D) rstd1 (Nm) q k v (Nm,D)
//          att (max_batch,H,max_seq,max_seq) atty mid ln2 (Nm,D) rstd2 (Nm) gate up act (Nm,F) |
//          lnf (Nm,D) rstdf (Nm) tokloss (Nm) | logits (Nm,V)
//          An inference-only model has 2 resid slots (layer l reads slot l % 2 and writes the
//          other) and 1 layer slot, and allocates acts_ at its first forward.
//   work_: backward dx dln datty dq dk dv dtmp (Nm,D) dact dgate (Nm,F) datt (as att), empty in
//          an inference-only model | decode kcache vcache (L, max_seq, D), x xn q y o hid (D),
//          gate up (F), att (H, max_seq), logits probs scores (V)
//   mmws_: the matmuls' packing buffers (retrlm__matmul_ws), so that forward never allocates.
// A forward of B x T tokens uses the first B*T rows of every (Nm, .) slot. Every block is 64-byte
// aligned and every array in it starts on a cache line (sizes rounded up to 16 floats): threads
// that write neighbouring arrays, or neighbouring heads of one row, never share a line.
// This file owns the transformer: config, allocation, forward, backward, AdamW, LM training and
// generation. Its files are checkpoint.c (the container format) and safetensors.c; the
// bi-encoder built on it is encoder.c.

// Parallel regions cost a barrier each, and on a shared machine a barrier can wait a whole
// scheduler slice for a starved thread (DESIGN.md 3): cheap element-wise loops stay serial
// unless they are big; attention, the loss and the matmuls carry the parallelism.
#define RETRLM__PAR_ELEMS ((size_t)1 << 21)

typedef struct retrlm__acts {
    float *ln1, *rstd1, *q, *k, *v, *att, *atty, *mid, *ln2, *rstd2, *gate, *up, *act;
} retrlm__acts;

typedef struct retrlm__work {
    float *dx, *dln, *datty, *dq, *dk, *dv, *dtmp, *dact, *dgate, *datt;
    float *kc, *vc, *x, *xn, *q, *y, *o, *hid, *gate, *up, *att, *logits, *probs, *scores;
} retrlm__work;

// RETRO: the number of cross-attention layers of a resolved config, and the index among them of
// decoder layer l (-1 if l has none)
static int retrlm__retro_slot(const retrlm_model_config *c, int l) {
    if (!c->retro_chunk || l < c->retro_start || (l - c->retro_start) % c->retro_every) return -1;
    return (l - c->retro_start) / c->retro_every;
}
static int retrlm__retro_count(const retrlm_model_config *c) {
    return c->retro_chunk ? (c->n_layers - 1 - c->retro_start) / c->retro_every + 1 : 0;
}

// RETRO's private block, retro_ (R cross-attention layers, Nm = max_batch * max_seq_len, S =
// max_batch * (max_seq_len / m) * k neighbour slots, Nn = S * r neighbour tokens, KR = k * r):
//   R layers, each ln (Nm,D) rstd (Nm) q (Nm,D) k v (Nn,D) att (Nm,H,KR) y out (Nm,D) |
//   backward dE (Nn,De) dk dv (Nn,D) datt (Nm,H,KR) | decode kc vc (R,KR,D) att (H,KR)
// and retro_ints_: neighbour tokens (Nn), slot -> encoder row (S), row lengths (S), decode's
// slot -> row (k) and row lengths (k). Keys and values are stored by encoder row: row i's token
// j at (i * r + j) * D; only the present neighbours are encoded, one row each.
typedef struct retrlm__racts {
    float *ln, *rstd, *q, *k, *v, *att, *y, *out;
    float *ks; // smeared keys (retro_smear; k holds the unsmeared ones)
} retrlm__racts;
typedef struct retrlm__rwork {
    float *dE, *dk, *dv, *datt, *kc, *vc, *att;
} retrlm__rwork;

static size_t retrlm__retro_slots(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)(c->max_seq_len / c->retro_chunk) * (size_t)c->retro_k;
}

// lays out layer slot `slot`'s activations (a) and the work (w) from base; returns the floats
// of the whole block (base may be NULL for the size only)
static size_t retrlm__retro_layout(const retrlm_model_config *c, float *base, int slot,
                                   retrlm__racts *a, retrlm__rwork *w) {
    size_t nm = (size_t)c->max_batch * (size_t)c->max_seq_len, d = (size_t)c->dim;
    size_t nn = retrlm__retro_slots(c) * (size_t)c->retro_len;
    size_t kr = (size_t)c->retro_k * (size_t)c->retro_len, hkr = (size_t)c->n_heads * kr;
    size_t layer = 5 * retrlm__round16(nm * d) + retrlm__round16(nm) +
                   (c->retro_smear ? 3 : 2) * retrlm__round16(nn * d) + retrlm__round16(nm * hkr);
    size_t R = (size_t)retrlm__retro_count(c), off = R * layer;
    retrlm__racts ta;
    retrlm__rwork tw;
    if (!a) a = &ta;
    if (!w) w = &tw;
#define RETRLM__TAKE(s, field, n) ((s)->field = base ? base + off : NULL, off += retrlm__round16(n))
    off = (size_t)(slot > 0 ? slot : 0) * layer;
    RETRLM__TAKE(a, ln, nm * d);
    RETRLM__TAKE(a, rstd, nm);
    RETRLM__TAKE(a, q, nm * d);
    RETRLM__TAKE(a, k, nn * d);
    RETRLM__TAKE(a, v, nn * d);
    RETRLM__TAKE(a, att, nm * hkr);
    RETRLM__TAKE(a, y, nm * d);
    RETRLM__TAKE(a, out, nm * d);
    RETRLM__TAKE(a, ks, c->retro_smear ? nn * d : 0);
    off = R * layer;
    RETRLM__TAKE(w, dE, nn * (size_t)c->retro_enc_dim);
    RETRLM__TAKE(w, dk, nn * d);
    RETRLM__TAKE(w, dv, nn * d);
    RETRLM__TAKE(w, datt, nm * hkr);
    RETRLM__TAKE(w, kc, R * kr * d);
    RETRLM__TAKE(w, vc, R * kr * d);
    RETRLM__TAKE(w, att, hkr);
#undef RETRLM__TAKE
    return off;
}

static size_t retrlm__nmax(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->max_seq_len;
}

static size_t retrlm__att_size(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->n_heads * (size_t)c->max_seq_len *
           (size_t)c->max_seq_len;
}

static size_t retrlm__rope_floats(const retrlm_model_config *c) {
    return retrlm__round16((size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2));
}

// slots of the residual stream and of the per-layer activations in acts_
static int retrlm__resid_slots(const retrlm_model_config *c) {
    return c->inference ? 2 : c->n_layers + 1;
}
static int retrlm__layer_slots(const retrlm_model_config *c) {
    return c->inference ? 1 : c->n_layers;
}

static size_t retrlm__layer_stride(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    return 7 * retrlm__round16(nm * d) + 2 * retrlm__round16(nm) + 3 * retrlm__round16(nm * f) +
           retrlm__round16(retrlm__att_size(c));
}

static float *retrlm__rope_cos(const retrlm_model *m) { return m->rope_; }
static float *retrlm__rope_sin(const retrlm_model *m) {
    return m->rope_ + retrlm__rope_floats(&m->config);
}
static float *retrlm__resid(const retrlm_model *m, int l) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + (size_t)(l % retrlm__resid_slots(c)) *
                          retrlm__round16(retrlm__nmax(c) * (size_t)c->dim);
}
static float *retrlm__layers_base(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + (size_t)retrlm__resid_slots(c) *
                          retrlm__round16(retrlm__nmax(c) * (size_t)c->dim);
}
static float *retrlm__lnf(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return retrlm__layers_base(m) + (size_t)retrlm__layer_slots(c) * retrlm__layer_stride(c);
}
static float *retrlm__rstdf(const retrlm_model *m) {
    return retrlm__lnf(m) + retrlm__round16(retrlm__nmax(&m->config) * (size_t)m->config.dim);
}
static float *retrlm__tokloss(const retrlm_model *m) {
    return retrlm__rstdf(m) + retrlm__round16(retrlm__nmax(&m->config));
}
RETRLM__PRIVATE float *retrlm__logits(const retrlm_model *m) {
    return retrlm__tokloss(m) + retrlm__round16(retrlm__nmax(&m->config));
}
static void retrlm__layer_acts(const retrlm_model *m, int l, retrlm__acts *a) {
    const retrlm_model_config *c = &m->config;
    size_t nm = retrlm__nmax(c), nd = retrlm__round16(nm * (size_t)c->dim);
    size_t n1 = retrlm__round16(nm), nf = retrlm__round16(nm * (size_t)c->ffn_dim);
    float *p = retrlm__layers_base(m) + (size_t)(l % retrlm__layer_slots(c)) *
                                            retrlm__layer_stride(c);
    a->ln1 = p; p += nd;
    a->rstd1 = p; p += n1;
    a->q = p; p += nd;
    a->k = p; p += nd;
    a->v = p; p += nd;
    a->att = p; p += retrlm__round16(retrlm__att_size(c));
    a->atty = p; p += nd;
    a->mid = p; p += nd;
    a->ln2 = p; p += nd;
    a->rstd2 = p; p += n1;
    a->gate = p; p += nf;
    a->up = p; p += nf;
    a->act = p;
}

static size_t retrlm__acts_size(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), nd = retrlm__round16(nm * (size_t)c->dim);
    return (size_t)(retrlm__resid_slots(c) + 1) * nd +
           (size_t)retrlm__layer_slots(c) * retrlm__layer_stride(c) + 2 * retrlm__round16(nm) +
           (c->no_logits ? 0 : nm * (size_t)c->vocab_size);
}

// acts_ of an inference-only model, at its first forward (zeroed, as init's)
static retrlm_result retrlm__acts_ready(retrlm_model *m) {
    if (m->acts_) return RETRLM_OK;
    m->acts_ = (float *)retrlm__alloc_aligned(m->n_acts_, sizeof(float), &m->own_[2]);
    if (!m->acts_)
        return retrlm__fail(RETRLM_ERR_NOMEM, "model_forward: no memory for %lu activations",
                            (unsigned long)m->n_acts_);
    memset(m->acts_, 0, m->n_acts_ * sizeof(float));
    return RETRLM_OK;
}

static size_t retrlm__work_layout(const retrlm_model_config *c, float *base, retrlm__work *w) {
    // the backward's buffers are empty in an inference-only model
    size_t nm = c->inference ? 0 : retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t cache = (size_t)c->n_layers * (size_t)c->max_seq_len * d, v = (size_t)c->vocab_size;
    size_t off = 0;
    retrlm__work tmp;
    if (!w) w = &tmp;
#define RETRLM__TAKE(field, n) (w->field = base ? base + off : NULL, off += retrlm__round16(n))
    RETRLM__TAKE(dx, nm * d);
    RETRLM__TAKE(dln, nm * d);
    RETRLM__TAKE(datty, nm * d);
    RETRLM__TAKE(dq, nm * d);
    RETRLM__TAKE(dk, nm * d);
    RETRLM__TAKE(dv, nm * d);
    RETRLM__TAKE(dtmp, nm * d);
    RETRLM__TAKE(dact, nm * f);
    RETRLM__TAKE(dgate, nm * f);
    RETRLM__TAKE(datt, c->inference ? 0 : retrlm__att_size(c));
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
    return off;
}

static void retrlm__get_work(const retrlm_model *m, retrlm__work *w) {
    retrlm__work_layout(&m->config, m->work_, w);
}

// the neighbour encoder's config for a resolved RETRO config
static void retrlm__retro_enc_config(const retrlm_model_config *c, retrlm_model_config *e) {
    memset(e, 0, sizeof *e);
    e->vocab_size = c->vocab_size;
    e->dim = c->retro_enc_dim;
    e->n_layers = c->retro_enc_layers;
    e->n_heads = c->retro_enc_heads;
    e->max_seq_len = c->retro_len;
    e->max_batch = c->max_batch * (c->max_seq_len / c->retro_chunk) * c->retro_k;
    e->bidirectional = 1;
    e->no_logits = 1;
    e->inference = c->inference;
    e->rope_theta = c->rope_theta;
    e->norm_eps = c->norm_eps;
    e->init_std = c->init_std;
    e->seed = c->seed ^ 0x5245545230ULL; // "RETR0": its own stream
}

// tensor sizes (floats) of a resolved config
static void retrlm__tensor_sizes(const retrlm_model_config *c, size_t *sz) {
    size_t v = (size_t)c->vocab_size, d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t l = (size_t)c->n_layers, R = (size_t)retrlm__retro_count(c);
    sz[RETRLM_T_EMBED] = v * d;
    sz[RETRLM_T_LM_HEAD] = c->untied ? v * d : 0;
    sz[RETRLM_T_WQ] = sz[RETRLM_T_WK] = sz[RETRLM_T_WV] = sz[RETRLM_T_WO] = l * d * d;
    sz[RETRLM_T_W_GATE] = sz[RETRLM_T_W_UP] = sz[RETRLM_T_W_DOWN] = l * f * d;
    sz[RETRLM_T_CCA_WQ] = sz[RETRLM_T_CCA_WO] = R * d * d;
    sz[RETRLM_T_CCA_WK] = sz[RETRLM_T_CCA_WV] = R * d * (size_t)c->retro_enc_dim;
    sz[RETRLM_T_RPT_WQ] = sz[RETRLM_T_RPT_WK] = (size_t)c->rpt_dim * d;
    sz[RETRLM_T_ATTN_NORM] = sz[RETRLM_T_FFN_NORM] = l * d;
    sz[RETRLM_T_FINAL_NORM] = d;
    sz[RETRLM_T_CCA_NORM] = R * d;
    sz[RETRLM_T_CCA_SMEAR] = c->retro_smear ? R * (size_t)c->n_heads : 0;
}

// floats of a resolved config's parameter block: its tensors and its neighbour encoder's; mats
// (may be NULL) gets the matrices' share (the rest are gains)
RETRLM__PRIVATE size_t retrlm__param_count(const retrlm_model_config *c, size_t *mats) {
    size_t sz[RETRLM_T_COUNT], n = 0, nm = 0;
    int t;
    retrlm__tensor_sizes(c, sz);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        n += sz[t];
        if (t < RETRLM_T_ATTN_NORM) nm += sz[t];
    }
    if (c->retro_chunk) {
        retrlm_model_config e;
        size_t em = 0;
        retrlm__retro_enc_config(c, &e);
        if (retrlm__resolve_config(&e) == RETRLM_OK) {
            n += retrlm__param_count(&e, &em);
            nm += em;
        }
    }
    if (mats) *mats = nm;
    return n;
}

// fills defaults into c and checks it; the estimate (in floats, double) guards every size product
RETRLM__PRIVATE retrlm_result retrlm__resolve_config(retrlm_model_config *c) {
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
    c->no_logits = c->no_logits != 0;
    c->inference = c->inference != 0;
    if (c->retro_chunk <= 0) {
        if (c->retro_chunk < 0)
            return retrlm__fail(RETRLM_ERR_ARG, "model: retro_chunk %d must be >= 0 (0: no RETRO)",
                                c->retro_chunk);
        c->retro_k = c->retro_len = c->retro_start = c->retro_every = 0;
        c->retro_enc_dim = c->retro_enc_layers = c->retro_enc_heads = c->retro_smear = 0;
        if (c->rpt_dim)
            return retrlm__fail(RETRLM_ERR_ARG, "model: rpt_dim %d needs RETRO blocks (retro_chunk "
                                "> 0)", c->rpt_dim);
        c->rpt_layer = 0;
    } else {
        c->retro_smear = c->retro_smear != 0;
        if (!c->retro_k) c->retro_k = 2;
        if (!c->retro_len) c->retro_len = c->retro_chunk <= 4096 ? 2 * c->retro_chunk : 8192;
        if (!c->retro_every) c->retro_every = 3;
        if (!c->retro_enc_layers) c->retro_enc_layers = 2;
        if (!c->retro_enc_heads) c->retro_enc_heads = c->n_heads;
        if (!c->retro_enc_dim && c->retro_enc_heads > 0 && c->dim > 0) {
            int step = 2 * c->retro_enc_heads;
            c->retro_enc_dim = RETRLM__MAX(step, c->dim / 2 / step * step);
        }
        if (c->bidirectional || c->retro_chunk > c->max_seq_len || c->retro_k < 1 ||
            c->retro_k > 64 || c->retro_len < 1 || c->retro_len > 8192 || c->retro_start < 0 ||
            c->retro_start >= c->n_layers || c->retro_every < 1 || c->retro_enc_layers < 1 ||
            c->retro_enc_layers > 64 || c->retro_enc_heads < 1 || c->retro_enc_dim < 2 ||
            c->retro_enc_dim > 65536 || c->retro_enc_dim % (2 * c->retro_enc_heads) ||
            (double)c->max_batch * (c->max_seq_len / c->retro_chunk) * c->retro_k > RETRLM__MAX_DIM)
            return retrlm__fail(RETRLM_ERR_ARG,
                                "model: bad RETRO shape: chunk %d (<= max_seq_len %d, causal "
                                "models only), k %d (1..64), len %d (1..8192), start %d (< layers "
                                "%d), every %d, encoder dim %d (a multiple of 2*heads) layers %d "
                                "heads %d, neighbours a batch <= 2^24", c->retro_chunk, c->max_seq_len, c->retro_k,
                                c->retro_len, c->retro_start, c->n_layers, c->retro_every,
                                c->retro_enc_dim, c->retro_enc_layers, c->retro_enc_heads);
        if (c->rpt_dim) {
            if (!c->rpt_layer) c->rpt_layer = c->retro_start;
            if (c->rpt_dim < 1 || c->rpt_dim > 65536 || c->rpt_layer < 1 ||
                c->rpt_layer > c->retro_start)
                return retrlm__fail(RETRLM_ERR_ARG, "model: RPT dim %d (1..65536), layer %d (1 .. "
                                    "retro_start %d: before the first cross-attention)",
                                    c->rpt_dim, c->rpt_layer, c->retro_start);
        } else {
            c->rpt_layer = 0;
        }
    }
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
    if (c->retro_chunk) {
        // the cross-attention activations and the neighbour encoder (est, roughly)
        double kr = (double)c->retro_k * c->retro_len, nn = nm / c->retro_chunk * kr;
        double de = c->retro_enc_dim, R = (double)retrlm__retro_count(c);
        est += R * (nm * (6 * d + 1 + 2 * h * kr) + 2 * nn * d + 2 * kr * d) + nn * (3 * d + de) +
               nn * (16 * de + c->retro_len * c->retro_enc_heads) * c->retro_enc_layers +
               2 * v * de + 2 * nm / c->retro_chunk * (d + c->rpt_dim) * (c->rpt_dim > 0);
    }
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
    if (!base) return NULL; // an inference-only model's gradients
    if (t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD || t == RETRLM_T_FINAL_NORM) return base;
    RETRLM_ASSERT(layer >= 0 && layer < c->n_layers);
    if ((t >= RETRLM_T_CCA_WQ && t <= RETRLM_T_CCA_WO) || t >= RETRLM_T_CCA_NORM) {
        int slot = retrlm__retro_slot(c, layer);
        RETRLM_ASSERT(slot >= 0);
        per = m->tensor_size[t] / (size_t)m->retro_layers;
        return base + (size_t)slot * per;
    }
    per = m->tensor_size[t] / (size_t)c->n_layers;
    return base + (size_t)layer * per;
}

RETRLM_API int retrlm_model_is_retro_layer(const retrlm_model *m, int layer) {
    return layer >= 0 && layer < m->config.n_layers && retrlm__retro_slot(&m->config, layer) >= 0;
}

RETRLM_API void retrlm_model_free(retrlm_model *m) {
    int i;
    if (!m) return;
    if (m->retro_enc) {
        retrlm_model_free(m->retro_enc);
        RETRLM_FREE(m->retro_enc);
    }
    RETRLM_FREE(m->retro_own_);
    RETRLM_FREE(m->retro_ints_);
    RETRLM_FREE(m->rpt_own_);
    for (i = 0; i < 6; i++) RETRLM_FREE(m->own_[i]);
    if (m->map_) {
        retrlm_reader_close((retrlm_reader *)m->map_);
        RETRLM_FREE(m->map_);
    }
    RETRLM_FREE(m->tokens_);
    RETRLM_FREE(m->lengths_);
    RETRLM_FREE(m->ids_);
    memset(m, 0, sizeof *m);
}

// a zeroed, 64-byte aligned block of n floats; *owned is what to free
static float *retrlm__model_block(size_t n, void **owned) {
    float *p = (float *)retrlm__alloc_aligned(n, sizeof(float), owned);
    if (p) memset(p, 0, n * sizeof(float));
    return p;
}

// C = A B (retrlm_matmul) with the model's packing buffers
RETRLM__PRIVATE retrlm_result retrlm__mm(const retrlm_model *m, float *C, const float *A,
                                         const float *B, int M, int N, int K, int flags) {
    return retrlm__matmul_ws(C, A, B, NULL, M, N, K, flags, m->mmws_, m->n_mmws_);
}

// int8 weights: the rows of matrix t over all layers (0: it has none in an int8 model: RETRO's
// and RPT's, which int8 does not cover) and their in-dimension *K
static size_t retrlm__q8_rows(const retrlm_model_config *c, int t, int *K) {
    size_t sz[RETRLM_T_COUNT];
    *K = t == RETRLM_T_W_DOWN ? c->ffn_dim : c->dim;
    if (t > RETRLM_T_W_DOWN) return 0;
    retrlm__tensor_sizes(c, sz);
    return sz[t] / (size_t)*K;
}

// int8 values and scales an int8 model of config c holds; with q and s, points m's tensors there
RETRLM__PRIVATE void retrlm__q8_place(retrlm_model *m, const retrlm_model_config *c,
                                      const int8_t *q, const float *s, size_t *nq, size_t *ns) {
    size_t oq = 0, os = 0;
    int t, K;
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) {
        size_t rows = retrlm__q8_rows(c, t, &K);
        if (m && q && rows) {
            m->q8_[t] = q + oq;
            m->q8s_[t] = s + os;
        }
        oq += rows * (size_t)K;
        os += rows * retrlm__q8_groups(K);
    }
    if (nq) *nq = oq;
    if (ns) *ns = os;
}

// C = A Wᵀ for weight matrix t (layer l; N its rows a layer, K its in-dimension), f32 or int8
static retrlm_result retrlm__mmw(const retrlm_model *m, float *C, const float *A,
                                 retrlm_model_tensor t, int l, int M, int N, int K, int flags) {
    const int whole = t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD;
    if (m->q8_[t]) {
        size_t r0 = whole ? 0 : (size_t)l * (size_t)N; // the layer's first row
        return retrlm__matmul_q8_ws(C, A, m->q8_[t] + r0 * (size_t)K,
                                    m->q8s_[t] + r0 * retrlm__q8_groups(K), M, N, K, flags,
                                    m->mmws_, m->n_mmws_);
    }
    return retrlm__mm(m, C, A, whole ? m->param[t] : retrlm_model_tensor_ptr(m, t, l, 0), M, N,
                      K, flags);
}

// out (D) = token tok's embedding
static void retrlm__embed_row(const retrlm_model *m, float *out, int tok) {
    const int D = m->config.dim;
    if (m->q8_[RETRLM_T_EMBED])
        retrlm__q8_row(out, m->q8_[RETRLM_T_EMBED] + (size_t)tok * (size_t)D,
                       m->q8s_[RETRLM_T_EMBED] + (size_t)tok * retrlm__q8_groups(D), D);
    else
        memcpy(out, m->param[RETRLM_T_EMBED] + (size_t)tok * (size_t)D, (size_t)D * sizeof(float));
}

// Allocates everything for a config (weights left zero), or only the activations when the
// parameters and gradients are src's. ext (a RETRO model's neighbour encoder) places the
// tensors in another model's block instead: matrices from ext[0], gains from ext[1] (gradients
// ext[2], ext[3]); such a model has n_params 0 (its owner's block holds them). An
// inference-only config gets no gradients (src's are not shared) and no activations until its
// first forward. q8: an int8 model (inference-only): params holds the gains alone (n_params of
// them, n_decay 0) and the matrices are int8 (q8_, q8s_), src's or new ones, zeroed.
RETRLM__PRIVATE retrlm_result retrlm__model_alloc(retrlm_model *m, const retrlm_model_config *cfg,
                                                  const retrlm_model *src, float *const *ext,
                                                  int q8) {
    retrlm_model_config c = *cfg;
    retrlm_result r;
    size_t off = 0, nwork, mats = 0, enc_mats = 0, moff, goff, nq = 0, ns = 0;
    int t, i, hd2;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__resolve_config(&c)) != RETRLM_OK) return r;
    if (q8 && (c.retro_chunk || ext))
        return retrlm__fail(RETRLM_ERR_ARG, "model: int8 weights are for plain models, not "
                            "RETRO's");
    if (q8) c.inference = 1;
    m->config = c;
    m->retro_layers = retrlm__retro_count(&c);
    m->retro_chunk_ = -1;
    retrlm__tensor_sizes(&c, m->tensor_size);
    off = retrlm__param_count(&c, &mats);
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) enc_mats += m->tensor_size[t];
    enc_mats = mats - enc_mats; // the neighbour encoder's matrices, after the decoder's
    if (ext) {
        m->params = ext[0];
        m->grads = ext[2];
    } else if (src) {
        RETRLM_ASSERT(src->n_params == (q8 ? off - mats : off));
        m->params = src->params;
        m->grads = c.inference ? NULL : src->grads;
        m->n_params = q8 ? off - mats : off;
        m->n_decay = q8 ? 0 : mats;
        if (q8)
            retrlm__q8_place(m, &c, src->q8_[RETRLM_T_EMBED], src->q8s_[RETRLM_T_EMBED], NULL,
                             NULL);
    } else {
        m->n_params = q8 ? off - mats : off;
        m->n_decay = q8 ? 0 : mats;
        m->params = retrlm__model_block(m->n_params, &m->own_[0]);
        if (!c.inference) m->grads = retrlm__model_block(off, &m->own_[1]);
        if (q8) { // scales, then the int8 values, one block in the gradients' place
            float *sb;
            retrlm__q8_place(NULL, &c, NULL, NULL, &nq, &ns);
            if ((sb = (float *)retrlm__alloc_aligned(ns * sizeof(float) + nq, 1, &m->own_[1]))) {
                memset(sb, 0, ns * sizeof(float) + nq);
                retrlm__q8_place(m, &c, (const int8_t *)(sb + ns), sb, NULL, NULL);
            }
        }
    }
    m->n_acts_ = retrlm__acts_size(&c);
    if (!c.inference) m->acts_ = retrlm__model_block(m->n_acts_, &m->own_[2]);
    m->rope_ = retrlm__model_block(2 * retrlm__rope_floats(&c), &m->own_[5]);
    nwork = retrlm__work_layout(&c, NULL, NULL);
    // an inference-only model's work_ (its KV cache) is written before it is read: not zeroed, so
    // that opening one touches no page of it and a short generation only the pages it fills
    m->work_ = c.inference ? (float *)retrlm__alloc_aligned(nwork, sizeof(float), &m->own_[3])
                           : retrlm__model_block(nwork, &m->own_[3]);
    // packing space is written before it is read: not zeroed, so a short-lived view (one
    // retrlm_encoder_embed call) touches only the pages its small products use
    m->n_mmws_ = (size_t)retrlm__max_threads() * retrlm__matmul_ws_floats();
    m->mmws_ = (float *)retrlm__alloc_aligned(m->n_mmws_, sizeof(float), &m->own_[4]);
    m->tokens_ = (int *)retrlm__calloc(retrlm__nmax(&c), sizeof(int));
    m->lengths_ = (int *)retrlm__calloc((size_t)c.max_batch, sizeof(int));
    m->ids_ = (int64_t *)retrlm__calloc((size_t)c.vocab_size, sizeof(int64_t));
    if (c.retro_chunk) {
        size_t S = retrlm__retro_slots(&c), nr = retrlm__retro_layout(&c, NULL, 0, NULL, NULL);
        m->retro_ = (float *)retrlm__alloc_aligned(nr, sizeof(float), &m->retro_own_);
        if (m->retro_) memset(m->retro_, 0, nr * sizeof(float));
        m->retro_ints_ = (int *)retrlm__calloc(S * (size_t)c.retro_len + 2 * S +
                                                   2 * (size_t)c.retro_k, sizeof(int));
        m->retro_enc = (retrlm_model *)retrlm__calloc(1, sizeof(retrlm_model));
        if (c.rpt_dim) // the chunk means, then their gradients
            m->rpt_pool_ = retrlm__model_block((size_t)2 * c.max_batch *
                                               (size_t)(c.max_seq_len / c.retro_chunk) *
                                               (size_t)RETRLM__MAX(c.dim, c.rpt_dim),
                                               &m->rpt_own_);
    }
    if (!m->params || (!c.inference && (!m->grads || !m->acts_)) ||
        (q8 && !m->q8_[RETRLM_T_EMBED]) || !m->rope_ || !m->work_ || !m->mmws_ || !m->tokens_ ||
        !m->lengths_ || !m->ids_ ||
        (c.retro_chunk && (!m->retro_ || !m->retro_ints_ || !m->retro_enc)) ||
        (c.rpt_dim && !m->rpt_pool_)) {
        retrlm_model_free(m);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: no memory for %lu parameters and %lu "
                            "activations", (unsigned long)off, (unsigned long)nwork);
    }
    // matrices first (the decoder's, then the neighbour encoder's), then the gains (likewise)
    moff = goff = 0;
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        int gain = t >= RETRLM_T_ATTN_NORM;
        size_t o = gain ? (ext || q8 ? goff : mats + goff) : moff;
        float *pb = ext ? ext[gain] : m->params, *gb = ext ? ext[2 + gain] : m->grads;
        m->param[t] = q8 && !gain ? NULL : pb + o; // an int8 model's matrices are in q8_
        m->grad[t] = gb ? gb + o : NULL;
        if (gain) goff += m->tensor_size[t];
        else moff += m->tensor_size[t];
    }
    if (c.retro_chunk) {
        retrlm_model_config ec;
        float *e[4];
        e[0] = m->params + moff;
        e[1] = m->params + mats + goff;
        e[2] = m->grads ? m->grads + moff : NULL;
        e[3] = m->grads ? m->grads + mats + goff : NULL;
        RETRLM_ASSERT(moff + enc_mats == mats);
        retrlm__retro_enc_config(&c, &ec);
        if ((r = retrlm__model_alloc(m->retro_enc, &ec, NULL, e, 0)) != RETRLM_OK) {
            RETRLM_FREE(m->retro_enc);
            m->retro_enc = NULL;
            retrlm_model_free(m);
            return r;
        }
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

// normal(0, init_std) matrices, the residual outputs (wo, w_down, the cross-attention's wo)
// scaled by 1/sqrt(2L), gains 1; the neighbour encoder from its own seed
static void retrlm__init_weights(retrlm_model *m) {
    retrlm_rng rng;
    size_t i;
    int t;
    retrlm_rng_seed(&rng, m->config.seed);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        float std = m->config.init_std, *p = m->param[t];
        if (t >= RETRLM_T_ATTN_NORM) { // gains 1; the smeared keys' logits 0 (an even mix)
            for (i = 0; i < m->tensor_size[t]; i++) p[i] = t == RETRLM_T_CCA_SMEAR ? 0.0f : 1.0f;
            continue;
        }
        if (t == RETRLM_T_WO || t == RETRLM_T_W_DOWN || t == RETRLM_T_CCA_WO)
            std /= (float)sqrt(2.0 * m->config.n_layers);
        for (i = 0; i < m->tensor_size[t]; i++) p[i] = std * retrlm_rng_normal(&rng);
    }
    if (m->retro_enc) retrlm__init_weights(m->retro_enc);
}

RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_result r;
    RETRLM_ASSERT(m && cfg);
    if ((r = retrlm__model_alloc(m, cfg, NULL, NULL, 0)) != RETRLM_OK) return r;
    retrlm__init_weights(m);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_init_view(retrlm_model *m, const retrlm_model *src,
                                                const retrlm_model_config *over) {
    retrlm_model_config c;
    RETRLM_ASSERT(m && src && src->params);
    c = src->config;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over) c.no_logits = over->no_logits;
    if (over && over->inference) c.inference = 1;
    return retrlm__model_alloc(m, &c, src, NULL, src->q8_[RETRLM_T_EMBED] != NULL);
}

RETRLM_API int retrlm_model_is_q8(const retrlm_model *m) {
    return m && m->q8_[RETRLM_T_EMBED] != NULL;
}

RETRLM_API retrlm_result retrlm_model_quantize(retrlm_model *dst, const retrlm_model *src) {
    retrlm_model_config c;
    retrlm_result r;
    int t, K;
    RETRLM_ASSERT(dst && src && src->params);
    memset(dst, 0, sizeof *dst);
    if (retrlm_model_is_q8(src))
        return retrlm__fail(RETRLM_ERR_ARG, "model_quantize: the model is int8 already");
    c = src->config;
    if ((r = retrlm__model_alloc(dst, &c, NULL, NULL, 1))) return r;
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) { // the int8 block is dst's own: written once here
        size_t rows = retrlm__q8_rows(&dst->config, t, &K);
        if (rows)
            retrlm__q8_quantize((int8_t *)(uintptr_t)dst->q8_[t], (float *)(uintptr_t)dst->q8s_[t],
                                src->param[t], rows, K);
    }
    for (t = RETRLM_T_ATTN_NORM; t < RETRLM_T_COUNT; t++)
        if (src->tensor_size[t])
            memcpy(dst->param[t], src->param[t], src->tensor_size[t] * sizeof(float));
    return RETRLM_OK;
}

RETRLM_API void retrlm_model_zero_grad(retrlm_model *m) {
    // in 1 MB pieces, on the team when there are many: one thread's memset of a small model's
    // 21 MB was 4% of its 2-thread training step, with the other thread waiting
    const size_t piece = (size_t)1 << 18, n = m->grads ? m->n_params : 0;
    ptrdiff_t i, np = (ptrdiff_t)((n + piece - 1) / piece);
    RETRLM__PARALLEL_FOR_IF(n > RETRLM__PAR_ELEMS)
    for (i = 0; i < np; i++) {
        const size_t i0 = (size_t)i * piece;
        memset(m->grads + i0, 0, RETRLM__MIN(piece, n - i0) * sizeof(float));
    }
}

// ---------------------------------------------------------------------------------------------
// layer kernels, forward and backward side by side. N rows; every row is computed by one thread.

// out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), per row of D
static void retrlm__rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N,
                                    int D, float eps) {
    int i;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
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
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
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
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
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
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)H * (size_t)hd > RETRLM__PAR_ELEMS)
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

// Packing space for attention's products, one share a thread (retrlm__matmul_strided runs on
// one thread inside attention's loop over heads): ws (n floats, the model's) when it is large
// enough for the team, else *own, allocated here (freed by the caller with RETRLM_FREE).
static float *retrlm__team_ws(float *ws, size_t n, void **own) {
    const size_t one = retrlm__matmul_ws_floats(), need = (size_t)retrlm__max_threads() * one;
    *own = NULL;
    return ws && need <= n ? ws : (float *)retrlm__alloc_aligned(need, sizeof(float), own);
}

// this thread's share of ws (retrlm__team_ws): retrlm__matmul_strided given it never allocates,
// so attention's products inside the parallel loop cannot fail
static float *retrlm__thread_ws(float *ws) {
    int tid = 0;
#ifdef RETRLM__OMP
    tid = omp_get_thread_num();
#endif
    return ws + (size_t)tid * retrlm__matmul_ws_floats();
}

// attention's products run on blocks of this many query rows (or key columns): a causal block
// needs the keys up to its last row only, so three quarters of the flops are the causal half's
#define RETRLM__ATT_BLOCK 64

// softmax(q k^T / sqrt(hd)) v per (sequence, head). q and y are (B*T, H*hd), k and v
// (B*Tk, H*hd) with Tk = off + T: query t is position off + t of its sequence, whose first off
// keys come before the T it brings (context carried from an earlier forward; 0 but for
// retrlm__forward_carry, which is causal). att (B, H, T, Tk) keeps the probabilities (0 where
// masked). Per (sequence, head) and block of query rows the scores and the mixing are two
// products of the matmul's kernels on the head's strided slices, over the keys the block's last
// row sees (the others of its rows' masked scores are computed, then zeroed). mmws (n_mmws
// floats): packing space (retrlm__team_ws), or NULL.
static retrlm_result retrlm__attention_forward(float *y, float *att, const float *q,
                                               const float *k, const float *v, const int *len,
                                               int B, int T, int off, int H, int hd, int causal,
                                               float *mmws, size_t n_mmws) {
    int bh;
    const int D = H * hd, Tk = off + T;
    const float scale = 1.0f / sqrtf((float)hd);
    void *own;
    float *ws = retrlm__team_ws(mmws, n_mmws, &own);
    RETRLM_ASSERT(causal || !off);
    if (!ws) return retrlm__fail(RETRLM_ERR_NOMEM, "attention: no memory for packing buffers");
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * Tk * D > 4e6)
    for (bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const size_t oq = (size_t)b * T * D + (size_t)h * hd, ok = (size_t)b * Tk * D + (size_t)h * hd;
        float *pbh = att + (size_t)bh * T * Tk, *tws = retrlm__thread_ws(ws);
        const size_t nws = retrlm__matmul_ws_floats();
        int t0, t, j;
        for (t0 = 0; t0 < T; t0 += RETRLM__ATT_BLOCK) { // query rows t0..t1-1 see keys < kend
            const int t1 = RETRLM__MIN(T, t0 + RETRLM__ATT_BLOCK), kend = causal ? off + t1 : Tk;
            float *pb = pbh + (size_t)t0 * Tk;
            retrlm__matmul_strided(pb, (size_t)Tk, q + oq + (size_t)t0 * D, (size_t)D, 1, k + ok,
                                   (size_t)D, 1, t1 - t0, kend, hd, 0, tws, nws);
            for (t = t0; t < t1; t++) {
                float *p = pbh + (size_t)t * Tk;
                const int nk = off + retrlm__att_keys(t, len[b], causal);
                for (j = 0; j < nk; j++) p[j] *= scale;
                retrlm_softmax(p, p, nk);
                for (j = nk; j < Tk; j++) p[j] = 0.0f;
            }
            retrlm__matmul_strided(y + oq + (size_t)t0 * D, (size_t)D, pb, (size_t)Tk, 1, v + ok, 1,
                                   (size_t)D, t1 - t0, hd, kend, 0, tws, nws);
        }
    }
    RETRLM_FREE(own);
    return RETRLM_OK;
}

// dq, dk, dv (set, not accumulated) from dy; datt (B, H, T, T) is scratch. Per (sequence,
// head), with P the probabilities: dP = dY·Vᵀ, dS = P ∘ (dP - rowsum(P ∘ dP)) / sqrt(hd),
// dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dY, the products on the matmul's kernels as in the forward
// (row blocks for dS and dQ, key blocks for dK and dV, from the block's first key's query on).
static retrlm_result retrlm__attention_backward(float *dq, float *dk, float *dv, float *datt,
                                                const float *dy, const float *att, const float *q,
                                                const float *k, const float *v, const int *len,
                                                int B, int T, int H, int hd, int causal,
                                                float *mmws, size_t n_mmws) {
    int bh;
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    void *own;
    float *ws = retrlm__team_ws(mmws, n_mmws, &own);
    if (!ws) return retrlm__fail(RETRLM_ERR_NOMEM, "attention: no memory for packing buffers");
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * T * D > 4e6)
    for (bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const size_t o = (size_t)b * T * D + (size_t)h * hd, TT = (size_t)T;
        const float *pbh = att + (size_t)bh * T * T;
        float *ds = datt + (size_t)bh * T * T, *tws = retrlm__thread_ws(ws);
        const size_t nws = retrlm__matmul_ws_floats();
        int t0, j0, t, j;
        for (t0 = 0; t0 < T; t0 += RETRLM__ATT_BLOCK) { // rows: dS and dq
            const int t1 = RETRLM__MIN(T, t0 + RETRLM__ATT_BLOCK), kend = causal ? t1 : T;
            float *db = ds + (size_t)t0 * T;
            retrlm__matmul_strided(db, TT, dy + o + (size_t)t0 * D, (size_t)D, 1, v + o, (size_t)D,
                                   1, t1 - t0, kend, hd, 0, tws, nws);
            for (t = t0; t < t1; t++) {
                const float *p = pbh + (size_t)t * T;
                float *dst = ds + (size_t)t * T, s = 0.0f;
                const int nk = retrlm__att_keys(t, len[b], causal);
                for (j = 0; j < nk; j++) s += p[j] * dst[j];
                for (j = 0; j < nk; j++) dst[j] = p[j] * (dst[j] - s) * scale;
                for (j = nk; j < T; j++) dst[j] = 0.0f;
            }
            retrlm__matmul_strided(dq + o + (size_t)t0 * D, (size_t)D, db, TT, 1, k + o, 1,
                                   (size_t)D, t1 - t0, hd, kend, 0, tws, nws);
        }
        for (j0 = 0; j0 < T; j0 += RETRLM__ATT_BLOCK) { // columns: dk and dv (from query t0 on)
            const int j1 = RETRLM__MIN(T, j0 + RETRLM__ATT_BLOCK), tq = causal ? j0 : 0;
            const size_t at = (size_t)tq * T + (size_t)j0;
            retrlm__matmul_strided(dk + o + (size_t)j0 * D, (size_t)D, ds + at, 1, TT,
                                   q + o + (size_t)tq * D, 1, (size_t)D, j1 - j0, hd, T - tq, 0,
                                   tws, nws);
            retrlm__matmul_strided(dv + o + (size_t)j0 * D, (size_t)D, pbh + at, 1, TT,
                                   dy + o + (size_t)tq * D, 1, (size_t)D, j1 - j0, hd, T - tq, 0,
                                   tws, nws);
        }
    }
    RETRLM_FREE(own);
    return RETRLM_OK;
}

// Chunked cross-attention of one query row q (H*hd) over the keys of k neighbour rows: rows[j]
// is neighbour j's encoder row (-1: absent), lens[row] its tokens; row i's token t has its key
// and value at (i * r + t) * D. p (H, k*r) gets the probabilities (0 where masked), y (D) the
// output (0 when no neighbour is present).
static void retrlm__cca_query(float *y, float *p, const float *q, const float *kc,
                              const float *vc, const int *rows, const int *lens, int k, int r,
                              int H, int hd) {
    const int D = H * hd, KR = k * r;
    const float scale = 1.0f / sqrtf((float)hd);
    int h, j, t, d;
    for (h = 0; h < H; h++) {
        float *ph = p + (size_t)h * KR, *yh = y + (size_t)h * hd, mx = -FLT_MAX, sum = 0.0f;
        const float *qh = q + (size_t)h * hd;
        int any = 0;
        for (j = 0; j < KR; j++) ph[j] = 0.0f;
        for (d = 0; d < hd; d++) yh[d] = 0.0f;
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                float sc = retrlm_dot(qh, kc + ((size_t)row * r + t) * D + (size_t)h * hd, hd) * scale;
                ph[j * r + t] = sc;
                if (sc > mx) mx = sc;
                any = 1;
            }
        }
        if (!any) continue;
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                ph[j * r + t] = expf(ph[j * r + t] - mx);
                sum += ph[j * r + t];
            }
        }
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                const float *vt = vc + ((size_t)row * r + t) * D + (size_t)h * hd;
                float pt = ph[j * r + t] /= sum;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) yh[d] += pt * vt[d];
            }
        }
    }
}

// Smeared keys: ks = the keys k (rows neighbours of r tokens, D = H*hd wide, lens[row] valid
// tokens each) with head h's key at t > 0 mixed with the one before, s k_t + (1 - s) k_{t-1},
// s = sigmoid(a[h]). ks may be k (t runs down).
static void retrlm__cca_smear(float *ks, const float *k, const float *a, const int *lens, int rows,
                              int r, int H, int hd) {
    const int D = H * hd;
    int row;
    RETRLM__PARALLEL_FOR_IF((double)rows * r * D > 2e6)
    for (row = 0; row < rows; row++) {
        int t, h, d;
        for (h = 0; h < H; h++) {
            const float sg = 1.0f / (1.0f + expf(-a[h]));
            for (t = lens[row] - 1; t >= 0; t--) {
                const float *kt = k + ((size_t)row * r + t) * D;
                float *o = ks + ((size_t)row * r + t) * D;
                for (d = h * hd; d < (h + 1) * hd; d++)
                    o[d] = t ? sg * kt[d] + (1.0f - sg) * kt[d - D] : kt[d];
            }
        }
    }
}

// Its backward: dk holds d(loss)/d(ks) and gets d(loss)/d(k) in place; da (H) += d(loss)/d(a).
// k is the unsmeared keys. Serial over rows for da, so the sum's order never depends on threads.
static void retrlm__cca_smear_backward(float *dk, float *da, const float *k, const float *a,
                                       const int *lens, int rows, int r, int H, int hd) {
    const int D = H * hd;
    int row, t, h, d;
    for (h = 0; h < H; h++) {
        const float sg = 1.0f / (1.0f + expf(-a[h]));
        double g = 0.0;
        for (row = 0; row < rows; row++)
            for (t = 0; t < lens[row]; t++) {
                const float *kt = k + ((size_t)row * r + t) * D;
                float *dt = dk + ((size_t)row * r + t) * D, *dn = dt + D, acc = 0.0f;
                const int next = t + 1 < lens[row];
                for (d = h * hd; d < (h + 1) * hd; d++) {
                    if (t) acc += dt[d] * (kt[d] - kt[d - D]);
                    // ks_t takes s of k_t (all of it at t = 0), ks_{t+1} takes 1 - s of it
                    dt[d] = (t ? sg : 1.0f) * dt[d] + (next ? (1.0f - sg) * dn[d] : 0.0f);
                }
                g += acc;
            }
        da[h] += (float)(g * sg * (1.0f - sg));
    }
}

// The chunk whose neighbours position t reads (chunk size mch), or -1: positions um + m - 1 ..
// um + 2m - 2 read chunk u's.
static int retrlm__cca_chunk(int t, int mch) { return t >= mch - 1 ? (t - mch + 1) / mch : -1; }

// Forward over B sequences of T tokens: q, y (B*T, D), att (B*T, H, k*r); slot_row (B, U, k)
// maps each neighbour to its encoder row.
static void retrlm__cca_forward(float *y, float *att, const float *q, const float *kc,
                                const float *vc, const int *slot_row, const int *lens, int B,
                                int T, int mch, int k, int r, int H, int hd) {
    const int D = H * hd, U = T / mch;
    int i;
    RETRLM__PARALLEL_FOR_IF((double)B * T * k * r * D > 2e6)
    for (i = 0; i < B * T; i++) {
        int b = i / T, u = retrlm__cca_chunk(i % T, mch), d;
        float *yi = y + (size_t)i * D, *pi = att + (size_t)i * H * k * r;
        if (u < 0) {
            for (d = 0; d < D; d++) yi[d] = 0.0f;
            for (d = 0; d < H * k * r; d++) pi[d] = 0.0f;
            continue;
        }
        retrlm__cca_query(yi, pi, q + (size_t)i * D, kc, vc, slot_row + ((size_t)b * U + u) * k,
                          lens, k, r, H, hd);
    }
}

// Its backward: dq (B*T, D) set; dk, dv (rows * r, D) accumulated (zero them first); datt is
// scratch like att. Work is split by (sequence, head): a sequence's queries touch only its own
// neighbours' rows and a head only its columns, so no two threads write one float.
static void retrlm__cca_backward(float *dq, float *dk, float *dv, float *datt, const float *dy,
                                 const float *att, const float *q, const float *kc,
                                 const float *vc, const int *slot_row, const int *lens, int B,
                                 int T, int mch, int k, int r, int H, int hd) {
    const int D = H * hd, U = T / mch, KR = k * r;
    const float scale = 1.0f / sqrtf((float)hd);
    int bh;
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * KR * D > 2e6)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, i, d;
        for (t = 0; t < T; t++) {
            size_t qi = (size_t)b * T + t;
            const float *p = att + (qi * H + h) * KR, *dyt = dy + qi * D + (size_t)h * hd;
            const float *qt = q + qi * D + (size_t)h * hd;
            float *dp = datt + (qi * H + h) * KR, *dqt = dq + qi * D + (size_t)h * hd, s = 0.0f;
            int u = retrlm__cca_chunk(t, mch);
            const int *rows;
            for (d = 0; d < hd; d++) dqt[d] = 0.0f;
            if (u < 0) continue;
            rows = slot_row + ((size_t)b * U + u) * k;
            for (j = 0; j < k; j++) {
                if (rows[j] < 0) continue;
                for (i = 0; i < lens[rows[j]]; i++) {
                    size_t rr = ((size_t)rows[j] * r + i) * D + (size_t)h * hd;
                    float a = 0.0f, pj = p[j * r + i];
                    const float *vj = vc + rr;
                    float *dvj = dv + rr;
                    RETRLM__SIMD_SUM(a)
                    for (d = 0; d < hd; d++) a += dyt[d] * vj[d];
                    dp[j * r + i] = a;
                    s += pj * a;
                    RETRLM__SIMD
                    for (d = 0; d < hd; d++) dvj[d] += pj * dyt[d];
                }
            }
            for (j = 0; j < k; j++) {
                if (rows[j] < 0) continue;
                for (i = 0; i < lens[rows[j]]; i++) {
                    size_t rr = ((size_t)rows[j] * r + i) * D + (size_t)h * hd;
                    const float *kj = kc + rr;
                    float *dkj = dk + rr, ds = p[j * r + i] * (dp[j * r + i] - s) * scale;
                    RETRLM__SIMD
                    for (d = 0; d < hd; d++) {
                        dqt[d] += ds * kj[d];
                        dkj[d] += ds * qt[d];
                    }
                }
            }
        }
    }
}

// SwiGLU, forward (dact NULL): out = silu(gate) * up = gate * sigmoid(gate) * up (out may be
// gate); backward: out = dgate and dup (set, dup may be dact) from dact. n elements, in blocks
// of 256: the block's sigmoids first (retrlm__sigmoid, in vectors), then the products.
static void retrlm__swiglu(float *out, float *dup, const float *dact, const float *gate,
                           const float *up, size_t n) {
    enum { BLOCK = 256 };
    ptrdiff_t b, nb = (ptrdiff_t)((n + BLOCK - 1) / BLOCK);
    RETRLM__PARALLEL_FOR_CHUNK_IF(64, n > RETRLM__PAR_ELEMS / 2)
    for (b = 0; b < nb; b++) {
        const size_t i0 = (size_t)b * BLOCK, m = RETRLM__MIN((size_t)BLOCK, n - i0);
        float sg[BLOCK];
        size_t i;
        retrlm__sigmoid(sg, gate + i0, m);
        if (!dact) {
            for (i = i0; i < i0 + m; i++) out[i] = gate[i] * sg[i - i0] * up[i];
            continue;
        }
        for (i = i0; i < i0 + m; i++) {
            const float g = gate[i], da = dact[i], sgi = sg[i - i0];
            out[i] = da * up[i] * sgi * (1.0f + g * (1.0f - sgi));
            dup[i] = da * g * sgi;
        }
    }
}

static void retrlm__swiglu_forward(float *act, const float *gate, const float *up, size_t n) {
    retrlm__swiglu(act, NULL, NULL, gate, up, n);
}

static void retrlm__swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                                    const float *up, size_t n) {
    retrlm__swiglu(dgate, dup, dact, gate, up, n);
}

// ---------------------------------------------------------------------------------------------
// forward / backward of the whole model

// RETRO: the neighbours (n, k, r) of n chunks into the encoder's input: each present neighbour
// becomes one row of rows_tok (rows, r; 0 past its length); slot_row (n, k) gets its row or -1,
// row_len its length. Returns the number of rows, or -1 (ERR_ARG) for a bad id.
static int retrlm__retro_rows(const retrlm_model *m, const int *nb, int n, int *rows_tok,
                              int *slot_row, int *row_len, const char *who) {
    const int k = m->config.retro_k, r = m->config.retro_len, V = m->config.vocab_size;
    int s, t, rows = 0;
    for (s = 0; s < n * k; s++) {
        const int *x = nb ? nb + (size_t)s * r : NULL;
        int len = 0;
        slot_row[s] = -1;
        if (!x) continue;
        while (len < r && x[len] >= 0) len++;
        for (t = 0; t < r; t++)
            if (x[t] < -1 || x[t] >= V || (t > len && x[t] != -1)) {
                retrlm__fail(RETRLM_ERR_ARG, "%s: neighbour token %d at %d of slot %d is outside "
                             "[-1, %d) or follows a -1", who, x[t], t, s, V);
                return -1;
            }
        if (!len) continue;
        slot_row[s] = rows;
        row_len[rows] = len;
        for (t = 0; t < r; t++) rows_tok[(size_t)rows * r + t] = t < len ? x[t] : 0;
        rows++;
    }
    return rows;
}

// runs the neighbour encoder on rows rows of m's neighbour tokens
static retrlm_result retrlm__retro_encode(retrlm_model *m, int rows, const int *row_len) {
    if (!rows) return RETRLM_OK;
    return retrlm_model_forward(m->retro_enc, m->retro_ints_, rows, m->config.retro_len, row_len,
                                RETRLM_FORWARD_NO_LOGITS);
}

// Context carried from one forward to the next, Transformer-XL style (Dai et al., 2019): each
// call's T positions also attend to the P = 0 or T positions its rows read in the call before,
// whose keys and values (kept before rotation) are reused, not computed again. Rotary positions
// run 0 .. P + T - 1 over the carried and the new positions, so attention sees the offsets it
// was trained on. Causal plain decoders only; nothing of it is kept for backward.
typedef struct retrlm__carry {
    float *k, *v;   // (n_layers, B, T, dim) each: the keys and values of the last call
    float *kf, *vf; // (B, 2T, dim) each, scratch: carried then new, as attention reads them
    int B, T, P;    // rows and positions a call; P: positions carried into the next call
} retrlm__carry;

static void retrlm__carry_free(retrlm__carry *cr) {
    RETRLM_FREE(cr->k), RETRLM_FREE(cr->v), RETRLM_FREE(cr->kf), RETRLM_FREE(cr->vf);
}

static retrlm_result retrlm__carry_init(retrlm__carry *cr, const retrlm_model *m, int B, int T) {
    const size_t D = (size_t)m->config.dim, L = (size_t)m->config.n_layers;
    memset(cr, 0, sizeof *cr);
    if (m->config.bidirectional || m->config.retro_chunk || 2 * T > m->config.max_seq_len ||
        B > m->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "model: context is carried for a causal plain decoder, "
                            "%d x 2 x %d positions at most", m->config.max_batch, m->config.max_seq_len / 2);
    cr->k = (float *)retrlm__alloc(L * B * T, D * sizeof(float));
    cr->v = (float *)retrlm__alloc(L * B * T, D * sizeof(float));
    cr->kf = (float *)retrlm__alloc((size_t)B * 2 * T, D * sizeof(float));
    cr->vf = (float *)retrlm__alloc((size_t)B * 2 * T, D * sizeof(float));
    if (!cr->k || !cr->v || !cr->kf || !cr->vf) {
        retrlm__carry_free(cr);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: no memory to carry %d x %d positions", B, T);
    }
    cr->B = B, cr->T = T;
    return RETRLM_OK;
}

// layer l's attention with the carried positions: a's q, k and v are the call's own, before
// rotation; its k and v are kept for the next call
static retrlm_result retrlm__carry_layer(retrlm_model *m, retrlm__carry *cr, retrlm__acts *a, int l, int B, int T) {
    const int D = m->config.dim, H = m->config.n_heads, hd = D / H, P = cr->P, Tk = P + T;
    const size_t row = (size_t)T * D;
    float *ck = cr->k + (size_t)l * cr->B * row, *cv = cr->v + (size_t)l * cr->B * row;
    int b;
    for (b = 0; b < B; b++) {
        float *kf = cr->kf + (size_t)b * Tk * D, *vf = cr->vf + (size_t)b * Tk * D;
        memcpy(kf, ck + b * row, (size_t)P * D * sizeof(float));
        memcpy(vf, cv + b * row, (size_t)P * D * sizeof(float));
        memcpy(kf + (size_t)P * D, a->k + b * row, row * sizeof(float));
        memcpy(vf + (size_t)P * D, a->v + b * row, row * sizeof(float));
        memcpy(ck + b * row, a->k + b * row, row * sizeof(float));
        memcpy(cv + b * row, a->v + b * row, row * sizeof(float));
    }
    retrlm__rope(a->q, B * T, T, P, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
    retrlm__rope(cr->kf, B * Tk, Tk, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
    return retrlm__attention_forward(a->atty, a->att, a->q, cr->kf, cr->vf, m->lengths_, B, T, P,
                                     H, hd, 1, m->mmws_, m->n_mmws_);
}

// a private forward flag: only the first config.rpt_layer layers, nothing after them
#define RETRLM__FORWARD_RPT 0x100

static retrlm_result retrlm__forward(retrlm_model *m, const int *tokens, int B, int T,
                                     const int *lengths, const int *nb, int flags,
                                     retrlm__carry *carry) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int L = flags & RETRLM__FORWARD_RPT ? c->rpt_layer : c->n_layers;
    int i, l, N, rows = 0;
    int *slot_row = NULL, *row_len = NULL;
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
    if (c->retro_chunk) {
        size_t S = retrlm__retro_slots(c);
        slot_row = m->retro_ints_ + S * (size_t)c->retro_len;
        row_len = slot_row + S;
        rows = retrlm__retro_rows(m, nb, B * (T / c->retro_chunk), m->retro_ints_, slot_row,
                                  row_len, "model_forward_retro");
        if (rows < 0) return RETRLM_ERR_ARG;
    }
    if ((r = retrlm__acts_ready(m))) return r;
    memcpy(m->tokens_, tokens, (size_t)N * sizeof(int));
    m->B = B;
    m->T = T;
    m->lengths = m->lengths_;
    m->retro_rows_ = rows;
    if ((r = retrlm__retro_encode(m, rows, row_len))) return r;
    m->hidden = retrlm__lnf(m);
    m->logits = NULL;
    {
        float *x0 = retrlm__resid(m, 0);
        for (i = 0; i < N; i++) retrlm__embed_row(m, x0 + (size_t)i * D, tokens[i]);
    }
    for (l = 0; l < L; l++) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l), *xo = retrlm__resid(m, l + 1);
        const float *ffx; // the feed-forward's input: mid, or the cross-attention's output
        retrlm__layer_acts(m, l, &a);
        ffx = a.mid;
        retrlm__rmsnorm_forward(a.ln1, a.rstd1, x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm__mmw(m, a.q, a.ln1, RETRLM_T_WQ, l, N, D, D, 0)) ||
            (r = retrlm__mmw(m, a.k, a.ln1, RETRLM_T_WK, l, N, D, D, 0)) ||
            (r = retrlm__mmw(m, a.v, a.ln1, RETRLM_T_WV, l, N, D, D, 0)))
            return r;
        if (carry) r = retrlm__carry_layer(m, carry, &a, l, B, T);
        else {
            retrlm__rope(a.q, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
            retrlm__rope(a.k, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
            r = retrlm__attention_forward(a.atty, a.att, a.q, a.k, a.v, m->lengths_, B, T, 0, H,
                                          hd, !c->bidirectional, m->mmws_, m->n_mmws_);
        }
        if (r) return r;
        memcpy(a.mid, x, (size_t)N * D * sizeof(float));
        if ((r = retrlm__mmw(m, a.mid, a.atty, RETRLM_T_WO, l, N, D,
                               D, RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (retrlm__retro_slot(c, l) >= 0) {
            // chunked cross-attention: out = mid + CA(RMSNorm(mid)) Wo, before the feed-forward
            retrlm__racts ra;
            const float *E = rows ? m->retro_enc->hidden : NULL;
            const int De = c->retro_enc_dim, nr = rows * c->retro_len;
            retrlm__retro_layout(c, m->retro_, retrlm__retro_slot(c, l), &ra, NULL);
            retrlm__rmsnorm_forward(ra.ln, ra.rstd, a.mid,
                                    retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), N, D,
                                    c->norm_eps);
            if ((r = retrlm__mm(m, ra.q, ra.ln, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0),
                                N, D, D, 0)) ||
                (nr && (r = retrlm__mm(m, ra.k, E, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0),
                                       nr, D, De, 0))) ||
                (nr && (r = retrlm__mm(m, ra.v, E, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0),
                                       nr, D, De, 0))))
                return r;
            if (c->retro_smear)
                retrlm__cca_smear(ra.ks, ra.k, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                                  row_len, rows, c->retro_len, H, hd);
            retrlm__cca_forward(ra.y, ra.att, ra.q, c->retro_smear ? ra.ks : ra.k, ra.v, slot_row,
                                row_len, B, T, c->retro_chunk, c->retro_k, c->retro_len, H, hd);
            memcpy(ra.out, a.mid, (size_t)N * D * sizeof(float));
            if ((r = retrlm__mm(m, ra.out, ra.y, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0),
                                N, D, D, RETRLM_MATMUL_ACCUMULATE)))
                return r;
            ffx = ra.out;
        }
        retrlm__rmsnorm_forward(a.ln2, a.rstd2, ffx, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0),
                                N, D, c->norm_eps);
        if (l == L - 1 && L < c->n_layers) { // RPT's partial pass ends at its feed-forward input
            m->B = m->T = 0;
            m->hidden = NULL;
            return RETRLM_OK;
        }
        if ((r = retrlm__mmw(m, a.gate, a.ln2, RETRLM_T_W_GATE, l, N,
                               F, D, 0)) ||
            (r = retrlm__mmw(m, a.up, a.ln2, RETRLM_T_W_UP, l, N, F,
                               D, 0)))
            return r;
        retrlm__swiglu_forward(a.act, a.gate, a.up, (size_t)N * F);
        memcpy(xo, ffx, (size_t)N * D * sizeof(float));
        if ((r = retrlm__mmw(m, xo, a.act, RETRLM_T_W_DOWN, l, N, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(retrlm__lnf(m), retrlm__rstdf(m), retrlm__resid(m, c->n_layers),
                            m->param[RETRLM_T_FINAL_NORM], N, D, c->norm_eps);
    if (!(flags & RETRLM_FORWARD_NO_LOGITS) && !c->no_logits) {
        if ((r = retrlm__mmw(m, retrlm__logits(m), retrlm__lnf(m),
                             c->untied ? RETRLM_T_LM_HEAD : RETRLM_T_EMBED, 0, N, V, D, 0)))
            return r;
        m->logits = retrlm__logits(m);
    }
    return RETRLM_OK;
}

// a forward of B rows of cr->T tokens (lengths NULL: all full) after the positions carried
// from the call before; the next call carries these. Only the activations up to each layer's
// feed-forward are for reading (retrlm_model_ffn_input): nothing of it serves backward.
static retrlm_result retrlm__forward_carry(retrlm_model *m, retrlm__carry *cr, const int *tokens,
                                           int B, const int *lengths) {
    retrlm_result r;
    RETRLM_ASSERT(B <= cr->B);
    r = retrlm__forward(m, tokens, B, cr->T, lengths, NULL, RETRLM_FORWARD_NO_LOGITS, cr);
    m->B = m->T = 0;
    m->hidden = NULL;
    if (!r) cr->P = cr->T;
    return r;
}

RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags) {
    return retrlm__forward(m, tokens, B, T, lengths, NULL, flags, NULL);
}

RETRLM_API retrlm_result retrlm_model_forward_retro(retrlm_model *m, const int *tokens, int B,
                                                    int T, const int *lengths,
                                                    const int *neighbours, int flags) {
    RETRLM_ASSERT(m && m->params);
    if (neighbours && !m->config.retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "model_forward_retro: the model has no RETRO blocks "
                            "(config retro_chunk 0)");
    return retrlm__forward(m, tokens, B, T, lengths, neighbours, flags, NULL);
}

RETRLM_API const float *retrlm_model_ffn_input(const retrlm_model *m, int layer) {
    retrlm__acts a;
    RETRLM_ASSERT(layer >= 0 && layer < m->config.n_layers);
    retrlm__layer_acts(m, layer, &a);
    return a.ln2;
}

RETRLM_API retrlm_result retrlm_model_rpt_embed(retrlm_model *m, const int *tokens, int B, int T,
                                                float *q, float *k) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, mc = c->retro_chunk;
    int U, b, u, t, d;
    float *pool;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && tokens);
    if (!c->rpt_dim)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed: the model has no RPT retriever "
                            "(config rpt_dim 0)");
    if (T < mc || T % mc)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed: %d tokens a sequence must be a "
                            "multiple of the chunk, %d", T, mc);
    if ((r = retrlm__forward(m, tokens, B, T, NULL, NULL, RETRLM__FORWARD_RPT, NULL))) return r;
    U = T / mc;
    pool = m->rpt_pool_;
    {
        const float *x = retrlm_model_ffn_input(m, c->rpt_layer - 1);
        const float inv = 1.0f / (float)mc;
        for (b = 0; b < B; b++)
            for (u = 0; u < U; u++) {
                float *o = pool + ((size_t)b * U + u) * D;
                const float *xs = x + ((size_t)b * T + (size_t)u * mc) * D;
                for (d = 0; d < D; d++) o[d] = 0.0f;
                for (t = 0; t < mc; t++)
                    for (d = 0; d < D; d++) o[d] += xs[(size_t)t * D + d];
                for (d = 0; d < D; d++) o[d] *= inv;
            }
    }
    m->rpt_B_ = B;
    m->rpt_T_ = T;
    if ((q && (r = retrlm__mm(m, q, pool, m->param[RETRLM_T_RPT_WQ], B * U, c->rpt_dim, D, 0))) ||
        (k && (r = retrlm__mm(m, k, pool, m->param[RETRLM_T_RPT_WK], B * U, c->rpt_dim, D, 0))))
        return r;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_rpt_embed_backward(retrlm_model *m, const float *dq,
                                                         const float *dk, float *dffn) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, mc = c->retro_chunk, B = m->rpt_B_, T = m->rpt_T_;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    const int U = B ? T / mc : 0, BU = B * U;
    float *pool = m->rpt_pool_, *dpool;
    const float inv = 1.0f / (float)mc;
    int b, u, t, d;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && dffn);
    if (!m->grads)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed_backward: the model is inference-only");
    if (!c->rpt_dim || !B)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed_backward: no retrlm_model_rpt_embed "
                            "before it (or no RPT retriever)");
    dpool = pool + (size_t)BU * D;
    memset(dpool, 0, (size_t)BU * D * sizeof(float));
    if ((dq && ((r = retrlm__mm(m, m->grad[RETRLM_T_RPT_WQ], dq, pool, c->rpt_dim, D, BU, AB)) ||
                (r = retrlm__mm(m, dpool, dq, m->param[RETRLM_T_RPT_WQ], BU, D, c->rpt_dim,
                                RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))) ||
        (dk && ((r = retrlm__mm(m, m->grad[RETRLM_T_RPT_WK], dk, pool, c->rpt_dim, D, BU, AB)) ||
                (r = retrlm__mm(m, dpool, dk, m->param[RETRLM_T_RPT_WK], BU, D, c->rpt_dim,
                                RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))))
        return r;
    for (b = 0; b < B; b++)
        for (u = 0; u < U; u++) {
            const float *g = dpool + ((size_t)b * U + u) * D;
            for (t = 0; t < mc; t++) {
                float *o = dffn + ((size_t)b * T + (size_t)u * mc + t) * D;
                for (d = 0; d < D; d++) o[d] = g[d] * inv;
            }
        }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_backward(retrlm_model *m, const retrlm_model_grad_in *g) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int B = m->B, T = m->T, N = B * T;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    retrlm__work w;
    retrlm__rwork rw;
    retrlm_result r;
    int l, i;
    const int rows = c->retro_chunk ? m->retro_rows_ : 0, nr = rows * c->retro_len;
    const int De = c->retro_enc_dim;
    const int *slot_row = NULL, *row_len = NULL;
    RETRLM_ASSERT(m && g && N > 0);
    if (!m->grads) return retrlm__fail(RETRLM_ERR_ARG, "model_backward: the model is inference-only");
    retrlm__get_work(m, &w);
    if (c->retro_chunk) {
        size_t S = retrlm__retro_slots(c);
        retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
        slot_row = m->retro_ints_ + S * (size_t)c->retro_len;
        row_len = slot_row + S;
        if (nr) memset(rw.dE, 0, (size_t)nr * De * sizeof(float));
    }
    // head: dlnf = dlogits · Wout + dhidden; dWout += dlogitsᵀ · lnf
    memset(w.dln, 0, (size_t)N * D * sizeof(float));
    if (g->dlogits) {
        float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        float *gout = c->untied ? m->grad[RETRLM_T_LM_HEAD] : m->grad[RETRLM_T_EMBED];
        if ((r = retrlm__mm(m, w.dln, g->dlogits, wout, N, D, V, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, gout, g->dlogits, retrlm__lnf(m), V, D, N, AB)))
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
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 1), w.dx, a.act, D, F,
                               N, AB)) ||
            (r = retrlm__mm(m, w.dact, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), N, F,
                               D, RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__swiglu_backward(w.dgate, w.dact, w.dact, a.gate, a.up, (size_t)N * F);
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 1), w.dgate, a.ln2, F,
                               D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 1), w.dact, a.ln2, F, D,
                               N, AB)) ||
            (r = retrlm__mm(m, w.dln, w.dgate, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), N,
                               D, F, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, w.dln, w.dact, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), N, D,
                               F, RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (g->dffn_in && g->dffn_in[l]) {
            const float *e = g->dffn_in[l];
            for (i = 0; i < N * D; i++) w.dln[i] += e[i];
        }
        if (retrlm__retro_slot(c, l) >= 0) {
            // out = mid + CA(RMSNorm(mid)) Wo: w.dx is d(out); leaves d(mid) in w.dx
            retrlm__racts ra;
            const float *E = rows ? m->retro_enc->hidden : NULL;
            const int AB2 = RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
            retrlm__retro_layout(c, m->retro_, retrlm__retro_slot(c, l), &ra, NULL);
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, ra.out,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
            if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 1), w.dx, ra.y, D,
                                D, N, AB)) ||
                (r = retrlm__mm(m, w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0),
                                N, D, D, RETRLM_MATMUL_B_KN)))
                return r;
            if (nr) {
                memset(rw.dk, 0, (size_t)nr * D * sizeof(float));
                memset(rw.dv, 0, (size_t)nr * D * sizeof(float));
            }
            retrlm__cca_backward(w.dq, rw.dk, rw.dv, rw.datt, w.datty, ra.att, ra.q,
                                 c->retro_smear ? ra.ks : ra.k, ra.v, slot_row, row_len, B, T,
                                 c->retro_chunk, c->retro_k, c->retro_len, H, hd);
            if (c->retro_smear && nr)
                retrlm__cca_smear_backward(rw.dk, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 1),
                                           ra.k, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                                           row_len, rows, c->retro_len, H, hd);
            if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 1), w.dq, ra.ln,
                                D, D, N, AB)) ||
                (r = retrlm__mm(m, w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0),
                                N, D, D, RETRLM_MATMUL_B_KN)))
                return r;
            if (nr && ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 1), rw.dk,
                                       E, D, De, nr, AB)) ||
                       (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 1), rw.dv,
                                       E, D, De, nr, AB)) ||
                       (r = retrlm__mm(m, rw.dE, rw.dk,
                                       retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0), nr, De,
                                       D, AB2)) ||
                       (r = retrlm__mm(m, rw.dE, rw.dv,
                                       retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0), nr, De,
                                       D, AB2))))
                return r;
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), ra.rstd,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 1), w.dtmp, N, D);
        } else {
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
        }
        // attention: mid = x + atty · Woᵀ
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 1), w.dx, a.atty, D, D, N,
                               AB)) ||
            (r = retrlm__mm(m, w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN)))
            return r;
        if ((r = retrlm__attention_backward(w.dq, w.dk, w.dv, w.datt, w.datty, a.att, a.q, a.k,
                                            a.v, m->lengths_, B, T, H, hd, !c->bidirectional,
                                            m->mmws_, m->n_mmws_)))
            return r;
        retrlm__rope(w.dq, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        retrlm__rope(w.dk, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 1), w.dq, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 1), w.dk, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 1), w.dv, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, w.dln, w.dk, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm__mm(m, w.dln, w.dv, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), N, D, D,
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
        RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
        for (ch = 0; ch < nchunks; ch++) {
            int d0 = ch * 64, d1 = RETRLM__MIN(D, d0 + 64), t, d;
            for (t = 0; t < N; t++) {
                float *gr = gw + (size_t)tok[t] * D;
                const float *dr = w.dx + (size_t)t * D;
                for (d = d0; d < d1; d++) gr[d] += dr[d];
            }
        }
    }
    if (nr) {
        // the neighbour encoder, from what every cross-attention layer sent back to its states
        retrlm_model_grad_in eg;
        memset(&eg, 0, sizeof eg);
        eg.dhidden = rw.dE;
        if ((r = retrlm_model_backward(m->retro_enc, &eg))) return r;
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
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > RETRLM__PAR_ELEMS / 8)
    for (i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        int tg = targets[i], j;
        if (tg < 0) {
            tl[i] = 0.0f;
            for (j = 0; j < V; j++) z[j] = 0.0f;
            continue;
        }
        tl[i] = -z[tg];
        tl[i] += retrlm__softmax_lse(z, z, V);
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
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > RETRLM__PAR_ELEMS / 8)
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
    RETRLM_ASSERT(o && (groups || n_groups < 1));
    memset(o, 0, sizeof *o);
    if (n_groups < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "adamw_init: no parameter groups (an inference-only "
                            "model has none)");
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

// four square roots at once in GCC's and Clang's vector types (SSE on x86, NEON on aarch64)
#if defined(RETRLM__X86_SSE2)
#define RETRLM__SQRT4(x) ((retrlm__v4)_mm_sqrt_ps((__m128)(x)))
#elif defined(RETRLM__ARM_NEON)
#define RETRLM__SQRT4(x) ((retrlm__v4)vsqrtq_f32((float32x4_t)(x)))
#endif

RETRLM_API void retrlm_adamw_step(retrlm_adamw *o) {
    const retrlm_adamw_config *c = &o->config;
    double sumsq = 0.0, norm;
    float clip = 1.0f, scale, b1 = c->beta1, b2 = c->beta2, ib1, isb2;
    size_t base = 0;
    int gi;
    for (gi = 0; gi < o->n_groups; gi++) {
        const float *g = o->groups[gi].grads;
        size_t n = o->groups[gi].n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 16)
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
    // the bias corrections: m / bc1 and sqrt(v / bc2) are taken as m * ib1 and sqrt(v) * isb2,
    // two divisions a parameter fewer (5.2M parameters on 1 thread: 5.6 -> 4.3 ms; the
    // divisions' throughput, more than memory, had bound the update)
    ib1 = (float)(1.0 / (1.0 - pow(b1, (double)o->step)));
    isb2 = (float)(1.0 / sqrt(1.0 - pow(b2, (double)o->step)));
    for (gi = 0; gi < o->n_groups; gi++) {
        retrlm_adamw_group *g = &o->groups[gi];
        float lr = g->lr * scale, wd = g->weight_decay, eps = c->eps;
        float *mm = o->m + base, *vv = o->v + base, *p = g->params;
        const float *gr = g->grads;
        size_t n = g->n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 16)
        for (ch = 0; ch < nch; ch++) {
            size_t i0 = (size_t)ch * RETRLM__ADAM_CHUNK, i1 = RETRLM__MIN(n, i0 + RETRLM__ADAM_CHUNK), i = i0;
#ifdef RETRLM__SQRT4
            // four at a time in vector registers: sqrtf may set errno, so no compiler vectorizes
            // the loop below (it ran one parameter at a time: 3.4x slower). The loop's operations
            // in its order, each correctly rounded: its bits where it is not contracted to FMA
            // (ISO C mode, -std=c99, as the test suite builds)
            const retrlm__v4 vclip = RETRLM__BCAST_retrlm__v4(clip), vb1 = RETRLM__BCAST_retrlm__v4(b1);
            const retrlm__v4 vb2 = RETRLM__BCAST_retrlm__v4(b2), vib1 = RETRLM__BCAST_retrlm__v4(ib1);
            const retrlm__v4 va1 = RETRLM__BCAST_retrlm__v4(1.0f - b1), va2 = RETRLM__BCAST_retrlm__v4(1.0f - b2);
            const retrlm__v4 visb2 = RETRLM__BCAST_retrlm__v4(isb2), veps = RETRLM__BCAST_retrlm__v4(eps);
            const retrlm__v4 vlr = RETRLM__BCAST_retrlm__v4(lr), vwd = RETRLM__BCAST_retrlm__v4(wd);
            for (; i + 4 <= i1; i += 4) {
                retrlm__v4 gg, m4, v4, pp, u;
                memcpy(&gg, gr + i, sizeof gg);
                memcpy(&m4, mm + i, sizeof m4);
                memcpy(&v4, vv + i, sizeof v4);
                memcpy(&pp, p + i, sizeof pp);
                gg = gg * vclip;
                m4 = vb1 * m4 + va1 * gg;
                v4 = vb2 * v4 + va2 * gg * gg;
                u = m4 * vib1 / (RETRLM__SQRT4(v4) * visb2 + veps) + vwd * pp;
                pp = pp - vlr * u;
                memcpy(mm + i, &m4, sizeof m4);
                memcpy(vv + i, &v4, sizeof v4);
                memcpy(p + i, &pp, sizeof pp);
            }
#endif
            for (; i < i1; i++) {
                float gg = gr[i] * clip;
                mm[i] = b1 * mm[i] + (1.0f - b1) * gg;
                vv[i] = b2 * vv[i] + (1.0f - b2) * gg * gg;
                p[i] -= lr * (mm[i] * ib1 / (sqrtf(vv[i]) * isb2 + eps) + wd * p[i]);
            }
        }
        base += n;
    }
}

RETRLM_API int retrlm_model_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                         retrlm_adamw_group out[2]) {
    if (!m->grads) return 0;
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

RETRLM_API int retrlm_model_retro_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                               retrlm_adamw_group out[2]) {
    // the cross-attention's matrices and the encoder's lie from CCA_WQ to n_decay, their gains
    // from CCA_NORM to the end (retrlm__model_alloc)
    float *mat = m->param[RETRLM_T_CCA_WQ], *gain = m->param[RETRLM_T_CCA_NORM];
    if (!m->config.retro_chunk || !m->grads) return 0;
    out[0].params = mat;
    out[0].grads = m->grad[RETRLM_T_CCA_WQ];
    out[0].n = (size_t)(m->params + m->n_decay - mat);
    out[0].lr = lr;
    out[0].weight_decay = weight_decay;
    out[1].params = gain;
    out[1].grads = m->grad[RETRLM_T_CCA_NORM];
    out[1].n = (size_t)(m->params + m->n_params - gain);
    out[1].lr = lr;
    out[1].weight_decay = 0.0f;
    return 2;
}

RETRLM_API retrlm_result retrlm_model_retro_tie_embedding(retrlm_model *m, uint64_t seed) {
    const retrlm_model_config *c = &m->config;
    retrlm_rng rng;
    float *R;
    size_t i, n;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params);
    if (!c->retro_chunk || !m->retro_enc)
        return retrlm__fail(RETRLM_ERR_ARG, "model_retro_tie_embedding: the model has no RETRO blocks");
    if (c->inference) // its weights may be a read-only map
        return retrlm__fail(RETRLM_ERR_ARG, "model_retro_tie_embedding: the model is inference-only");
    n = (size_t)c->retro_enc_dim * (size_t)c->dim;
    R = (float *)retrlm__alloc(n, sizeof(float)); // (De, D): out, in
    if (!R) return retrlm__fail(RETRLM_ERR_NOMEM, "model_retro_tie_embedding: no memory");
    retrlm_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) R[i] = retrlm_rng_normal(&rng) / sqrtf((float)c->retro_enc_dim);
    r = retrlm__mm(m, m->retro_enc->param[RETRLM_T_EMBED], m->param[RETRLM_T_EMBED], R,
                   c->vocab_size, c->retro_enc_dim, c->dim, 0);
    RETRLM_FREE(R);
    return r;
}

// ---------------------------------------------------------------------------------------------
// training loop

RETRLM_API void retrlm_lm_train_state_init(retrlm_lm_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

RETRLM__PRIVATE retrlm_result retrlm__windows_bpb(retrlm_model *m, const int *tokens, size_t n,
                                                  size_t n_bytes, int T, size_t per,
                                                  retrlm__gather_fn gather, const void *ctx,
                                                  const char *what, double *bpb) {
    const int Bm = m->config.max_batch;
    size_t nwin, w0;
    double nats;
    int *inp, *tgt, *nbuf;
    retrlm_result r = RETRLM_OK;
    if (n < 1 || n_bytes < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: %lu tokens, %lu bytes: need >= 1", what,
                            (unsigned long)n, (unsigned long)n_bytes);
    nats = log((double)m->config.vocab_size); // the first token, predicted from nothing
    nwin = (n - 1 + (size_t)T - 1) / (size_t)T;
    inp = (int *)retrlm__alloc((size_t)Bm, ((size_t)2 * T + (gather ? per : 0)) * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory", what);
    tgt = inp + (size_t)Bm * T;
    nbuf = tgt + (size_t)Bm * T;
    for (w0 = 0; w0 < nwin && !r; w0 += (size_t)Bm) {
        int B = (int)RETRLM__MIN((size_t)Bm, nwin - w0), b, t;
        for (b = 0; b < B; b++) {
            size_t start = (w0 + (size_t)b) * (size_t)T;
            for (t = 0; t < T; t++) {
                size_t pos = start + (size_t)t;
                int valid = pos + 1 < n;
                inp[b * T + t] = valid ? tokens[pos] : 0;
                tgt[b * T + t] = valid ? tokens[pos + 1] : -1;
            }
            if (gather) gather(ctx, start, nbuf + (size_t)b * per);
        }
        r = gather ? retrlm_model_forward_retro(m, inp, B, T, NULL, nbuf, 0)
                   : retrlm_model_forward(m, inp, B, T, NULL, 0);
        if (r == RETRLM_OK) nats += retrlm_model_nll(m, tgt, NULL);
    }
    RETRLM_FREE(inp);
    if (r) return r;
    *bpb = nats / log(2.0) / (double)n_bytes;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                 size_t n_bytes, int seq_len, double *bpb) {
    const int T = seq_len > 0 ? RETRLM__MIN(seq_len, m->config.max_seq_len) : m->config.max_seq_len;
    RETRLM_ASSERT(m && tokens && bpb);
    return retrlm__windows_bpb(m, tokens, n, n_bytes, T, 0, NULL, NULL, "lm_bits_per_byte", bpb);
}

// One language-model update on inputs (B, T) with targets (-1: ignored), lengths (or NULL) and
// a RETRO model's neighbours (or NULL): forward, mean cross-entropy into *loss, backward, AdamW.
// Shared by every LM trainer.
RETRLM__PRIVATE retrlm_result retrlm__lm_step(retrlm_model *m, retrlm_adamw *opt, const int *inp,
                                              const int *tgt, int B, int T, const int *lengths,
                                              const int *neighbours, float *loss) {
    retrlm_model_grad_in gin;
    retrlm_result r;
    if ((r = retrlm__forward(m, inp, B, T, lengths, neighbours, 0, NULL)) ||
        (r = retrlm_model_lm_loss(m, tgt, loss, NULL)))
        return r;
    retrlm_model_zero_grad(m);
    memset(&gin, 0, sizeof gin);
    gin.dlogits = m->logits;
    if ((r = retrlm_model_backward(m, &gin))) return r;
    retrlm_adamw_step(opt);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_train(retrlm_model *m, retrlm_adamw *opt,
                                         const retrlm_lm_train_config *cfg,
                                         retrlm_lm_train_state *st) {
    const int B = cfg->batch > 0 ? cfg->batch : m->config.max_batch;
    const int T = cfg->seq_len > 0 ? cfg->seq_len : m->config.max_seq_len;
    retrlm_result r = RETRLM_OK;
    retrlm__tuner tn;
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
    retrlm__tuner_init(&tn); // each step on the team or on one thread: whichever is faster here
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
        retrlm__tuner_start(&tn);
        r = retrlm__lm_step(m, opt, inp, tgt, B, T, NULL, NULL, &loss);
        retrlm__tuner_stop(&tn);
        if (r) break;
        if (cfg->losses) cfg->losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        final = st->step == cfg->steps;
        if (cfg->valid && cfg->n_valid > 0 &&
            (final || (cfg->eval_every > 0 && st->step % cfg->eval_every == 0))) {
            if ((r = retrlm_lm_bits_per_byte(m, cfg->valid, cfg->n_valid, cfg->valid_bytes, T,
                                             &st->last_valid_bpb)))
                break;
            if ((r = retrlm__progress(cfg->progress, cfg->progress_user, "valid", (double)st->step,
                                      (double)cfg->steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (cfg->checkpoint &&
            (final || (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, st, cfg->checkpoint)))
            break;
#endif
        r = retrlm__progress(cfg->progress, cfg->progress_user, "train", (double)st->step, (double)cfg->steps);
    }
    retrlm__tuner_done(&tn);
    RETRLM_FREE(inp);
    return r;
}

// ---------------------------------------------------------------------------------------------
// generation: one token at a time against a KV cache of (L, max_seq_len, D)

RETRLM_API retrlm_result retrlm_model_decode_neighbours(retrlm_model *m, int chunk,
                                                        const int *neighbours) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, k = c->retro_k, De = c->retro_enc_dim;
    retrlm__rwork rw;
    retrlm_result r;
    int rows, l, *dec_row, *dec_len;
    RETRLM_ASSERT(m && m->params);
    if (!c->retro_chunk || chunk < 0 || chunk > c->max_seq_len / c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode_neighbours: chunk %d of a model with "
                            "RETRO chunk %d and %d positions", chunk, c->retro_chunk,
                            c->max_seq_len);
    retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
    dec_row = m->retro_ints_ + retrlm__retro_slots(c) * ((size_t)c->retro_len + 2);
    dec_len = dec_row + k;
    m->retro_chunk_ = -1;
    rows = retrlm__retro_rows(m, neighbours, 1, m->retro_ints_, dec_row, dec_len,
                              "model_decode_neighbours");
    if (rows < 0) return RETRLM_ERR_ARG;
    if ((r = retrlm__retro_encode(m, rows, dec_len))) return r;
    for (l = 0; l < c->n_layers && rows; l++) {
        int slot = retrlm__retro_slot(c, l), nr = rows * c->retro_len;
        size_t at = (size_t)(slot < 0 ? 0 : slot) * (size_t)k * c->retro_len * D;
        if (slot < 0) continue;
        if ((r = retrlm__mm(m, rw.kc + at, m->retro_enc->hidden,
                            retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0), nr, D, De, 0)) ||
            (r = retrlm__mm(m, rw.vc + at, m->retro_enc->hidden,
                            retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0), nr, D, De, 0)))
            return r;
        if (c->retro_smear)
            retrlm__cca_smear(rw.kc + at, rw.kc + at, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                              dec_len, rows, c->retro_len, c->n_heads, D / c->n_heads);
    }
    m->retro_chunk_ = chunk;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const float scale = 1.0f / sqrtf((float)hd);
    retrlm__work w;
    retrlm_result r;
    float rstd;
    int l, h, u = -1;
    RETRLM_ASSERT(m && m->params);
    if (token < 0 || token >= V || pos < 0 || pos >= c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: token %d (vocabulary %d) at position "
                            "%d (max %d)", token, V, pos, c->max_seq_len);
    if (c->retro_chunk && (u = retrlm__cca_chunk(pos, c->retro_chunk)) >= 0 &&
        u != m->retro_chunk_)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: position %d reads the neighbours of "
                            "chunk %d; give them first (retrlm_model_decode_neighbours)", pos, u);
    retrlm__get_work(m, &w);
    retrlm__embed_row(m, w.x, token);
    for (l = 0; l < c->n_layers; l++) {
        float *kc = w.kc + ((size_t)l * c->max_seq_len) * D, *vc = w.vc + ((size_t)l * c->max_seq_len) * D;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm__mmw(m, w.q, w.xn, RETRLM_T_WQ, l, 1, D, D, 0)) ||
            (r = retrlm__mmw(m, kc + (size_t)pos * D, w.xn, RETRLM_T_WK, l,
                             1, D, D, 0)) ||
            (r = retrlm__mmw(m, vc + (size_t)pos * D, w.xn, RETRLM_T_WV, l,
                             1, D, D, 0)))
            return r;
        retrlm__rope(w.q, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(kc + (size_t)pos * D, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        RETRLM__PARALLEL_FOR_IF(H > 1 && (size_t)pos * D > 65536)
        for (h = 0; h < H; h++) {
            float *p = w.att + (size_t)h * c->max_seq_len;
            const float *qh = w.q + (size_t)h * hd;
            float *yh = w.y + (size_t)h * hd;
            int j, d;
            for (j = 0; j <= pos; j++) p[j] = retrlm_dot(qh, kc + (size_t)j * D + (size_t)h * hd, hd) * scale;
            retrlm_softmax(p, p, pos + 1);
            for (d = 0; d < hd; d++) yh[d] = 0.0f;
            for (j = 0; j <= pos; j++) {
                const float *vj = vc + (size_t)j * D + (size_t)h * hd;
                const float pj = p[j];
                for (d = 0; d < hd; d++) yh[d] += pj * vj[d];
            }
        }
        if ((r = retrlm__mmw(m, w.x, w.y, RETRLM_T_WO, l, 1, D, D,
                               RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (u >= 0 && retrlm__retro_slot(c, l) >= 0) {
            // chunked cross-attention against the cached neighbours of chunk u
            retrlm__rwork rw;
            const int k = c->retro_k, *dec_row;
            size_t at = (size_t)retrlm__retro_slot(c, l) * (size_t)k * c->retro_len * D;
            retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
            dec_row = m->retro_ints_ + retrlm__retro_slots(c) * ((size_t)c->retro_len + 2);
            retrlm__rmsnorm_forward(w.xn, &rstd, w.x,
                                    retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), 1, D,
                                    c->norm_eps);
            if ((r = retrlm__mm(m, w.q, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0), 1,
                                D, D, 0)))
                return r;
            retrlm__cca_query(w.y, rw.att, w.q, rw.kc + at, rw.vc + at, dec_row, dec_row + k, k,
                              c->retro_len, H, hd);
            if ((r = retrlm__mm(m, w.x, w.y, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0), 1,
                                D, D, RETRLM_MATMUL_ACCUMULATE)))
                return r;
        }
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm__mmw(m, w.gate, w.xn, RETRLM_T_W_GATE, l, 1, F,
                               D, 0)) ||
            (r = retrlm__mmw(m, w.up, w.xn, RETRLM_T_W_UP, l, 1, F, D, 0)))
            return r;
        retrlm__swiglu_forward(w.gate, w.gate, w.up, (size_t)F);
        if ((r = retrlm__mmw(m, w.x, w.gate, RETRLM_T_W_DOWN, l, 1, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(w.hid, &rstd, w.x, m->param[RETRLM_T_FINAL_NORM], 1, D, c->norm_eps);
    if ((r = retrlm__mmw(m, w.logits, w.hid, c->untied ? RETRLM_T_LM_HEAD : RETRLM_T_EMBED, 0, 1,
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

// decode; a RETRO model without neighbours (an empty set for each chunk as it is reached)
static retrlm_result retrlm__decode_plain(retrlm_model *m, int token, int pos) {
    int mch = m->config.retro_chunk;
    retrlm_result r;
    if (mch && pos >= mch - 1 && (pos - mch + 1) % mch == 0 &&
        (r = retrlm_model_decode_neighbours(m, (pos - mch + 1) / mch, NULL)))
        return r;
    return retrlm_model_decode(m, token, pos);
}

RETRLM_API retrlm_result retrlm_model_generate(retrlm_model *m, const int *prompt, int n_prompt,
                                               int n_new, const retrlm_sampler *s,
                                               retrlm_rng *rng, int *out, int *n_out) {
    retrlm_result r = RETRLM_OK;
    retrlm__tuner *tn;
    int pos, got = 0, tok;
    RETRLM_ASSERT(m && prompt && (out || n_new == 0) && (rng || !s || s->temperature <= 0.0f));
    // kept across calls, so that a short call need not learn again; a call on one thread
    // leaves it as it is for the next call on the team
    tn = retrlm__max_threads() > 1 ? &m->tune_ : NULL;
    if (n_out) *n_out = 0;
    if (n_prompt < 1 || n_prompt > m->config.max_seq_len || n_new < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "model_generate: prompt of %d tokens (1..%d), %d new",
                            n_prompt, m->config.max_seq_len, n_new);
    if (tn && tn->team != retrlm__max_threads()) retrlm__tuner_init(tn); // first, or a new team
    for (pos = 0; pos < n_prompt && !r; pos++) {
        retrlm__tuner_start(tn);
        r = retrlm__decode_plain(m, prompt[pos], pos);
        retrlm__tuner_stop(tn);
    }
    while (got < n_new && !r) {
        tok = retrlm_model_sample(m, m->step_logits, s, rng);
        out[got++] = tok;
        if (n_out) *n_out = got;
        if (got == n_new || pos >= m->config.max_seq_len) break;
        retrlm__tuner_start(tn);
        r = retrlm__decode_plain(m, tok, pos++);
        retrlm__tuner_stop(tn);
    }
    retrlm__tuner_done(tn);
    return r;
}
