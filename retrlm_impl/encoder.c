#include "internal.h"

// ---------------------------------------------------------------------------------------------
// encoder: the bi-encoder (encoder.h): a query and a document side, each a bidirectional model
// (model.c) with mean pooling, an optional projection and L2 normalisation; forward, backward,
// batch encoding of texts, and its files (container kind "encoder", each side stored with
// checkpoint.c's retrlm__ckpt_add_model and read with retrlm__ckpt_load).

#define RETRLM__ENC_KIND "encoder"
#define RETRLM__ENC_NCFG 6

// per-side scratch: pooled, raw (before normalisation), norm, out, dpool, draw, dhidden
static retrlm_result retrlm__encoder_alloc(retrlm_encoder *e) {
    const int D = e->side[0].config.dim, P = e->dim;
    size_t nproj = e->config.proj_dim ? (size_t)P * D : 0, total, off = 0;
    size_t nb[2], nt[2];
    int s;
    for (s = 0; s < 2; s++) {
        nb[s] = (size_t)e->side[s].config.max_batch;
        nt[s] = nb[s] * (size_t)e->side[s].config.max_seq_len;
    }
    total = 2 * 2 * nproj;
    for (s = 0; s < 2; s++)
        total += nb[s] * (2 * (size_t)D + 2 * (size_t)P + (size_t)RETRLM__MAX(P, D) + 1) +
                 nt[s] * D;
    e->block_ = (float *)retrlm__calloc(total, sizeof(float));
    if (!e->block_)
        return retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory for %lu floats of scratch",
                            (unsigned long)total);
    for (s = 0; s < 2; s++) {
        if (nproj && (s == 0 || e->config.separate)) {
            e->proj[s] = e->block_ + off, off += nproj;
            e->proj_grad[s] = e->block_ + off, off += nproj;
        } else if (nproj) {
            e->proj[s] = e->proj[0];
            e->proj_grad[s] = e->proj_grad[0];
        }
    }
    off = 4 * nproj;
    for (s = 0; s < 2; s++) {
        e->pooled_[s] = e->block_ + off, off += nb[s] * D;
        e->dpool_[s] = e->block_ + off, off += nb[s] * D;
        e->raw_[s] = e->block_ + off, off += nb[s] * P;
        e->out_[s] = e->block_ + off, off += nb[s] * P;
        e->draw_[s] = e->block_ + off, off += nb[s] * RETRLM__MAX(P, D);
        e->norm_[s] = e->block_ + off, off += nb[s];
        e->dhid_[s] = e->block_ + off, off += nt[s] * D;
    }
    RETRLM_ASSERT(off <= total);
    return RETRLM_OK;
}

static retrlm_result retrlm__encoder_resolve(retrlm_encoder_config *c) {
    if (!c->max_query_tokens) c->max_query_tokens = 32;
    if (!c->max_doc_tokens) c->max_doc_tokens = 128;
    if (!c->max_batch) c->max_batch = 32;
    c->separate = c->separate != 0;
    c->normalize = c->normalize != 0;
    if (c->max_query_tokens < 1 || c->max_doc_tokens < 1 || c->max_batch < 1 ||
        c->max_batch > RETRLM__MAX_DIM / 2 || c->proj_dim < 0 || c->proj_dim > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG, "encoder: max_query_tokens %d, max_doc_tokens %d, "
                            "max_batch %d and proj_dim %d must be positive (proj_dim may be 0)",
                            c->max_query_tokens, c->max_doc_tokens, c->max_batch, c->proj_dim);
    return RETRLM_OK;
}

// the document side: its own model (separate), or a view of the query side
static retrlm_result retrlm__encoder_doc_side(retrlm_encoder *e, const retrlm_model_config *mc) {
    retrlm_model_config dc = *mc;
    dc.max_seq_len = e->config.max_doc_tokens;
    dc.max_batch = 2 * e->config.max_batch;
    dc.no_logits = 1;
    dc.bidirectional = 1;
    if (e->config.separate) {
        dc.seed = mc->seed + 1;
        return retrlm_model_init(&e->side[RETRLM_DOC], &dc);
    }
    return retrlm_model_init_view(&e->side[RETRLM_DOC], &e->side[RETRLM_QUERY], &dc);
}

RETRLM_API retrlm_result retrlm_encoder_init(retrlm_encoder *e, const retrlm_encoder_config *cfg) {
    retrlm_model_config qc;
    retrlm_result r;
    retrlm_rng rng;
    size_t i, np;
    RETRLM_ASSERT(e && cfg);
    memset(e, 0, sizeof *e);
    e->config = *cfg;
    if ((r = retrlm__encoder_resolve(&e->config))) return r;
    qc = cfg->model;
    qc.bidirectional = 1;
    qc.no_logits = 1;
    qc.max_seq_len = e->config.max_query_tokens;
    qc.max_batch = e->config.max_batch;
    if ((r = retrlm_model_init(&e->side[RETRLM_QUERY], &qc)) ||
        (r = retrlm__encoder_doc_side(e, &qc))) {
        retrlm_encoder_free(e);
        return r;
    }
    e->config.model = e->side[RETRLM_QUERY].config;
    e->dim = e->config.proj_dim ? e->config.proj_dim : e->config.model.dim;
    if ((r = retrlm__encoder_alloc(e))) {
        retrlm_encoder_free(e);
        return r;
    }
    // projections: normal(0, 1/sqrt(dim)), so that they keep the scale of the pooled vector
    retrlm_rng_seed(&rng, e->config.model.seed ^ 0x70726f6aULL);
    np = (size_t)e->dim * e->config.model.dim;
    if (e->config.proj_dim)
        for (i = 0; i < np; i++) {
            e->proj[0][i] = retrlm_rng_normal(&rng) / (float)sqrt((double)e->config.model.dim);
            if (e->config.separate) e->proj[1][i] = e->proj[0][i];
        }
    return RETRLM_OK;
}

RETRLM_API void retrlm_encoder_free(retrlm_encoder *e) {
    if (!e) return;
    retrlm_model_free(&e->side[RETRLM_DOC]); // a view goes before the model it borrows from
    retrlm_model_free(&e->side[RETRLM_QUERY]);
    RETRLM_FREE(e->block_);
    memset(e, 0, sizeof *e);
}

// the Euclidean norm of x (n), floored at 1e-12 so that a zero vector divides safely
static float retrlm__l2_norm(const float *x, int n) {
    double ss = 0.0;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return (float)sqrt(ss > 1e-24 ? ss : 1e-24);
}

// text's first tokens, at most maxt of them, into ids; an empty text is the token 0. *n gets
// how many (>= 1).
RETRLM__PRIVATE retrlm_result retrlm__encode_cut(const retrlm_tokenizer *tok, const char *text, size_t len,
                                                 int *ids, int maxt, int *n) {
    size_t got = 0;
    retrlm_result r = retrlm_tokenizer_encode(tok, text ? text : "", len, 0, ids, (size_t)maxt, &got);
    if (r != RETRLM_OK && r != RETRLM_ERR_RANGE) return r; // RANGE: cut to maxt
    *n = (int)RETRLM__MIN(got, (size_t)maxt);
    if (*n == 0) ids[0] = 0, *n = 1;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_forward(retrlm_encoder *e, int side, const int *tokens,
                                                int B, int T, const int *lengths, float *out) {
    retrlm_model *m;
    const int D = e->config.model.dim, P = e->dim;
    retrlm_result r;
    int b;
    RETRLM_ASSERT(e && (side == RETRLM_QUERY || side == RETRLM_DOC) && out);
    m = &e->side[side];
    if ((r = retrlm_model_forward(m, tokens, B, T, lengths, RETRLM_FORWARD_NO_LOGITS))) return r;
    retrlm_model_mean_pool(m, e->pooled_[side]);
    if (e->config.proj_dim) {
        if ((r = retrlm__mm(m, e->raw_[side], e->pooled_[side], e->proj[side], B, P, D, 0)))
            return r;
    } else
        memcpy(e->raw_[side], e->pooled_[side], (size_t)B * D * sizeof(float));
    for (b = 0; b < B; b++) {
        const float *x = e->raw_[side] + (size_t)b * P;
        float *y = e->out_[side] + (size_t)b * P, inv = 1.0f;
        int i;
        if (e->config.normalize) {
            e->norm_[side][b] = retrlm__l2_norm(x, P);
            inv = 1.0f / e->norm_[side][b];
        }
        for (i = 0; i < P; i++) y[i] = x[i] * inv;
    }
    memcpy(out, e->out_[side], (size_t)B * P * sizeof(float));
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_backward(retrlm_encoder *e, int side, const float *dout) {
    retrlm_model *m;
    retrlm_model_grad_in g;
    const int D = e->config.model.dim, P = e->dim;
    float *draw;
    retrlm_result r;
    int b, B;
    RETRLM_ASSERT(e && (side == RETRLM_QUERY || side == RETRLM_DOC) && dout);
    m = &e->side[side];
    B = m->B;
    RETRLM_ASSERT(B > 0);
    // d raw = (dout - y (y . dout)) / |raw| through the normalisation, y = raw / |raw|
    draw = e->draw_[side];
    for (b = 0; b < B; b++) {
        const float *go = dout + (size_t)b * P, *y = e->out_[side] + (size_t)b * P;
        float *gr = draw + (size_t)b * P;
        int i;
        if (e->config.normalize) {
            double dot = 0.0;
            float inv = 1.0f / e->norm_[side][b];
            for (i = 0; i < P; i++) dot += (double)y[i] * go[i];
            for (i = 0; i < P; i++) gr[i] = (go[i] - y[i] * (float)dot) * inv;
        } else
            memcpy(gr, go, (size_t)P * sizeof(float));
    }
    if (e->config.proj_dim) {
        // d proj (P, D) += drawᵀ · pooled; d pooled (B, D) = draw · proj
        if ((r = retrlm__mm(m, e->proj_grad[side], draw, e->pooled_[side], P, D, B,
                               RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm__mm(m, e->dpool_[side], draw, e->proj[side], B, D, P,
                               RETRLM_MATMUL_B_KN)))
            return r;
    } else
        memcpy(e->dpool_[side], draw, (size_t)B * D * sizeof(float));
    retrlm_model_mean_pool_backward(m, e->dpool_[side], e->dhid_[side]);
    memset(&g, 0, sizeof g);
    g.dhidden = e->dhid_[side];
    return retrlm_model_backward(m, &g);
}

RETRLM_API void retrlm_encoder_zero_grad(retrlm_encoder *e) {
    retrlm_model_zero_grad(&e->side[RETRLM_QUERY]);
    if (e->config.separate) retrlm_model_zero_grad(&e->side[RETRLM_DOC]);
    if (e->config.proj_dim) {
        size_t np = (size_t)e->dim * e->config.model.dim;
        memset(e->proj_grad[0], 0, np * sizeof(float));
        if (e->config.separate) memset(e->proj_grad[1], 0, np * sizeof(float));
    }
}

RETRLM_API int retrlm_encoder_param_groups(const retrlm_encoder *e, float lr, float weight_decay,
                                           retrlm_adamw_group out[6]) {
    int n = retrlm_model_param_groups(&e->side[RETRLM_QUERY], lr, weight_decay, out);
    if (e->config.separate) n += retrlm_model_param_groups(&e->side[RETRLM_DOC], lr, weight_decay,
                                                           out + n);
    if (e->config.proj_dim) {
        out[n].params = e->proj[0];
        out[n].grads = e->proj_grad[0];
        out[n].n = (size_t)e->dim * e->config.model.dim;
        out[n].lr = lr;
        out[n].weight_decay = weight_decay;
        n++;
        if (e->config.separate) {
            out[n] = out[n - 1];
            out[n].params = e->proj[1];
            out[n].grads = e->proj_grad[1];
            n++;
        }
    }
    return n;
}

// n rows of token ids written stride apart, row i valid for len[i] tokens: moves them to be T
// apart (T = the longest), pads with pad (token 0 for inputs, -1 for ignored targets) and
// returns T
RETRLM__PRIVATE int retrlm__compact_rows(int *ids, const int *len, int n, int stride, int pad) {
    int i, t, T = 1;
    for (i = 0; i < n; i++) T = RETRLM__MAX(T, len[i]);
    for (i = 0; i < n; i++) {
        if (i) memmove(ids + (size_t)i * T, ids + (size_t)i * stride, (size_t)len[i] * sizeof(int));
        for (t = len[i]; t < T; t++) ids[(size_t)i * T + t] = pad;
    }
    return T;
}

RETRLM_API retrlm_result retrlm_encoder_encode_texts(retrlm_encoder *e,
                                                     const retrlm_tokenizer *tok, int side,
                                                     const char *const *texts,
                                                     const size_t *lens, size_t n, float *out,
                                                     retrlm_progress_fn progress, void *user) {
    retrlm_model *m;
    int *ids = NULL, *len = NULL, maxb, maxt;
    retrlm_result r = RETRLM_OK;
    size_t i0;
    RETRLM_ASSERT(e && tok && (side == RETRLM_QUERY || side == RETRLM_DOC) && (texts || !n));
    m = &e->side[side];
    maxb = m->config.max_batch;
    maxt = m->config.max_seq_len;
    ids = (int *)retrlm__alloc((size_t)maxb * maxt, sizeof(int));
    len = (int *)retrlm__alloc((size_t)maxb, sizeof(int));
    if (!ids || !len) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory for a batch of %d x %d", maxb, maxt);
        goto done;
    }
    for (i0 = 0; i0 < n; i0 += (size_t)maxb) {
        int B = (int)RETRLM__MIN((size_t)maxb, n - i0), T, b;
        for (b = 0; b < B; b++) {
            const char *t = texts[i0 + b];
            size_t l = lens ? lens[i0 + b] : (t ? strlen(t) : 0);
            if ((r = retrlm__encode_cut(tok, t, l, ids + (size_t)b * maxt, maxt, &len[b]))) goto done;
        }
        T = retrlm__compact_rows(ids, len, B, maxt, 0);
        if ((r = retrlm_encoder_forward(e, side, ids, B, T, len, out + i0 * (size_t)e->dim))) goto done;
        if (progress && progress(user, "encode", (double)(i0 + B), (double)n)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "encoder: cancelled after %lu texts",
                             (unsigned long)(i0 + B));
            goto done;
        }
    }
done:
    RETRLM_FREE(ids);
    RETRLM_FREE(len);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_embed(const retrlm_encoder *e,
                                              const retrlm_tokenizer *tok, int side,
                                              const char *text, size_t len, float *out) {
    const retrlm_model *src;
    const int D = e->config.model.dim, P = e->dim;
    retrlm_model v;
    retrlm_model_config over;
    retrlm_result r;
    float *pooled = NULL;
    int *ids = NULL, maxt, n, i;
    RETRLM_ASSERT(e && tok && (side == RETRLM_QUERY || side == RETRLM_DOC) && (text || !len) && out);
    src = &e->side[side];
    maxt = src->config.max_seq_len;
    memset(&v, 0, sizeof v);
    ids = (int *)retrlm__alloc((size_t)maxt, sizeof(int));
    pooled = (float *)retrlm__alloc((size_t)D, sizeof(float));
    if (!ids || !pooled) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory to embed a text");
        goto done;
    }
    if ((r = retrlm__encode_cut(tok, text, len, ids, maxt, &n))) goto done;
    memset(&over, 0, sizeof over);
    over.max_batch = 1;
    over.max_seq_len = n;
    over.no_logits = 1;
    if ((r = retrlm_model_init_view(&v, src, &over)) ||
        (r = retrlm_model_forward(&v, ids, 1, n, NULL, RETRLM_FORWARD_NO_LOGITS)))
        goto done;
    retrlm_model_mean_pool(&v, pooled);
    if (e->config.proj_dim)
        for (i = 0; i < P; i++) out[i] = retrlm_dot(e->proj[side] + (size_t)i * D, pooled, D);
    else
        memcpy(out, pooled, (size_t)D * sizeof(float));
    if (e->config.normalize) retrlm_scale(out, 1.0f / retrlm__l2_norm(out, P), P);
done:
    retrlm_model_free(&v);
    RETRLM_FREE(ids);
    RETRLM_FREE(pooled);
    return r;
}

static retrlm_result retrlm__encoder_writer(const retrlm_encoder *e, retrlm_writer *w) {
    int32_t ci[RETRLM__ENC_NCFG];
    size_t np = e->config.proj_dim ? (size_t)e->dim * e->config.model.dim : 0;
    retrlm_result r;
    ci[0] = e->config.separate; ci[1] = e->config.proj_dim; ci[2] = e->config.normalize;
    ci[3] = e->config.max_query_tokens; ci[4] = e->config.max_doc_tokens;
    ci[5] = e->config.max_batch;
    if ((r = retrlm_writer_init(w, RETRLM__ENC_KIND)) ||
        (r = retrlm_writer_add_copy(w, "enc_config", RETRLM_DTYPE_I32, ci, RETRLM__ENC_NCFG)) ||
        (r = retrlm__ckpt_add_model(&e->side[RETRLM_QUERY], w, "q.")))
        return r;
    if (e->config.separate && (r = retrlm__ckpt_add_model(&e->side[RETRLM_DOC], w, "d.")))
        return r;
    if (np && ((r = retrlm_writer_add(w, "proj.q", RETRLM_DTYPE_F32, e->proj[0], np)) ||
               (e->config.separate &&
                (r = retrlm_writer_add(w, "proj.d", RETRLM_DTYPE_F32, e->proj[1], np)))))
        return r;
    return RETRLM_OK;
}

static retrlm_result retrlm__encoder_read(retrlm_encoder *e, const retrlm_reader *rd) {
    int32_t ci[RETRLM__ENC_NCFG];
    retrlm_model_config over;
    retrlm_result r;
    size_t np;
    int s;
    if ((r = retrlm_reader_read(rd, "enc_config", RETRLM_DTYPE_I32, ci, RETRLM__ENC_NCFG))) return r;
    if ((ci[0] != 0 && ci[0] != 1) || (ci[2] != 0 && ci[2] != 1) || ci[1] < 0 || ci[3] < 1 ||
        ci[4] < 1 || ci[5] < 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: bad enc_config %d %d %d %d %d %d", ci[0],
                            ci[1], ci[2], ci[3], ci[4], ci[5]);
    e->config.separate = ci[0]; e->config.proj_dim = ci[1]; e->config.normalize = ci[2];
    e->config.max_query_tokens = ci[3]; e->config.max_doc_tokens = ci[4];
    e->config.max_batch = ci[5];
    if ((r = retrlm__encoder_resolve(&e->config))) return RETRLM_ERR_FORMAT;
    memset(&over, 0, sizeof over);
    over.no_logits = 1;
    over.max_seq_len = e->config.max_query_tokens;
    over.max_batch = e->config.max_batch;
    if ((r = retrlm__ckpt_load(&e->side[RETRLM_QUERY], rd, &over, 0, "q."))) return r;
    if (!e->side[RETRLM_QUERY].config.bidirectional)
        return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: the query model is causal");
    e->config.model = e->side[RETRLM_QUERY].config;
    if (e->config.separate) {
        over.max_seq_len = e->config.max_doc_tokens;
        over.max_batch = 2 * e->config.max_batch;
        if ((r = retrlm__ckpt_load(&e->side[RETRLM_DOC], rd, &over, 0, "d."))) return r;
        if (!e->side[RETRLM_DOC].config.bidirectional ||
            e->side[RETRLM_DOC].config.dim != e->config.model.dim)
            return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: the document model is causal or of "
                                "another width");
    } else if ((r = retrlm__encoder_doc_side(e, &e->config.model)))
        return r;
    e->dim = e->config.proj_dim ? e->config.proj_dim : e->config.model.dim;
    np = e->config.proj_dim ? (size_t)e->dim * e->config.model.dim : 0;
    for (s = 0; np && s < 1 + e->config.separate; s++) { // sizes match before anything is allocated
        const void *p = NULL;
        size_t n = 0;
        if ((r = retrlm_reader_get(rd, s ? "proj.d" : "proj.q", RETRLM_DTYPE_F32, &p, &n))) return r;
        if (n != np)
            return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: projection of %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)np);
    }
    if ((r = retrlm__encoder_alloc(e))) return r;
    for (s = 0; np && s < 1 + e->config.separate; s++)
        if ((r = retrlm_reader_read(rd, s ? "proj.d" : "proj.q", RETRLM_DTYPE_F32, e->proj[s], np)))
            return r;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_save_memory(const retrlm_encoder *e, void *buf,
                                                    size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r = retrlm__encoder_writer(e, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_load_memory(retrlm_encoder *e, const void *buf,
                                                    size_t size) {
    retrlm_reader rd;
    retrlm_result r;
    memset(e, 0, sizeof *e);
    if ((r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__ENC_KIND, 0))) return r;
    if ((r = retrlm__encoder_read(e, &rd))) retrlm_encoder_free(e);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_encoder_save(const retrlm_encoder *e, const char *path) {
    retrlm_writer w;
    retrlm_result r = retrlm__encoder_writer(e, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_load(retrlm_encoder *e, const char *path) {
    retrlm_reader rd;
    retrlm_result r;
    memset(e, 0, sizeof *e);
    if ((r = retrlm_reader_open(&rd, path, RETRLM__ENC_KIND, 0))) return r;
    if ((r = retrlm__encoder_read(e, &rd))) retrlm_encoder_free(e);
    retrlm_reader_close(&rd);
    return r;
}
#endif
