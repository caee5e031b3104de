// ---------------------------------------------------------------------------------------------
// train: retriever training (DPR, Contriever)

#define RETRLM__MAX_DPR_BATCH 1024 // queries a step (candidates up to twice that)

RETRLM_API void retrlm_retriever_train_state_init(retrlm_retriever_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

// buffers of one contrastive step: nq query rows, up to nd document rows
typedef struct retrlm__cbatch {
    int   *qtok, *dtok, *qlen, *dlen, *pos;
    float *qemb, *demb, *dq, *dd;
    int   *tmp;   // (max tokens) a crop being built
    void  *block;
} retrlm__cbatch;

static retrlm_result retrlm__cbatch_init(retrlm__cbatch *b, const retrlm_encoder *e) {
    size_t nq = (size_t)e->side[RETRLM_QUERY].config.max_batch;
    size_t nd = (size_t)e->side[RETRLM_DOC].config.max_batch;
    size_t tq = (size_t)e->side[RETRLM_QUERY].config.max_seq_len;
    size_t td = (size_t)e->side[RETRLM_DOC].config.max_seq_len;
    size_t P = (size_t)e->dim, ni, nf;
    ni = nq * tq + nd * td + nq + nd + nq + RETRLM__MAX(tq, td);
    nf = 2 * nq * P + 2 * nd * P;
    memset(b, 0, sizeof *b);
    b->block = retrlm__alloc(ni * sizeof(int) + nf * sizeof(float), 1);
    if (!b->block)
        return retrlm__fail(RETRLM_ERR_NOMEM, "train: no memory for a batch of %lu + %lu texts",
                            (unsigned long)nq, (unsigned long)nd);
    b->qemb = (float *)b->block;
    b->demb = b->qemb + nq * P;
    b->dq = b->demb + nd * P;
    b->dd = b->dq + nq * P;
    b->qtok = (int *)(b->dd + nd * P);
    b->dtok = b->qtok + nq * tq;
    b->qlen = b->dtok + nd * td;
    b->dlen = b->qlen + nq;
    b->pos = b->dlen + nd;
    b->tmp = b->pos + nq;
    return RETRLM_OK;
}

// packs n token lists (src[i], len[i] tokens, cut to maxt; an empty one becomes token 0) into
// rows of the longest length; returns that length
static int retrlm__pack(int *dst, int *lens, const int *const *src, const int *len, int n, int maxt) {
    int i, t, T = 1;
    for (i = 0; i < n; i++) {
        lens[i] = RETRLM__MAX(1, RETRLM__MIN(len[i], maxt));
        T = RETRLM__MAX(T, lens[i]);
    }
    for (i = 0; i < n; i++)
        for (t = 0; t < T; t++)
            dst[(size_t)i * T + t] = t < len[i] && t < maxt ? src[i][t] : 0;
    return T;
}

// forward both sides, loss, backward both, one AdamW update
static retrlm_result retrlm__contrastive_step(retrlm_encoder *e, retrlm_adamw *opt,
                                              retrlm__cbatch *b, int nq, int Tq, int nd, int Td,
                                              float temperature,
                                              retrlm_retriever_train_state *st) {
    retrlm_result r;
    int correct = 0;
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, b->qtok, nq, Tq, b->qlen, b->qemb)) ||
        (r = retrlm_encoder_forward(e, RETRLM_DOC, b->dtok, nd, Td, b->dlen, b->demb)) ||
        (r = retrlm_contrastive_loss(b->qemb, nq, b->demb, nd, e->dim, b->pos, temperature,
                                     &st->last_loss, b->dq, b->dd, &correct)))
        return r;
    retrlm_encoder_zero_grad(e);
    if ((r = retrlm_encoder_backward(e, RETRLM_DOC, b->dd)) ||
        (r = retrlm_encoder_backward(e, RETRLM_QUERY, b->dq)))
        return r;
    retrlm_adamw_step(opt);
    st->last_acc = (float)correct / (float)nq;
    return RETRLM_OK;
}

static retrlm_result retrlm__check_texts(const retrlm_token_texts *t, const char *what) {
    size_t i;
    if (t->n && (!t->ids || !t->off))
        return retrlm__fail(RETRLM_ERR_ARG, "train: %s has no ids or offsets", what);
    for (i = 0; i < t->n; i++)
        if (t->off[i + 1] < t->off[i] || t->off[i + 1] - t->off[i] > (size_t)INT32_MAX)
            return retrlm__fail(RETRLM_ERR_ARG, "train: %s offsets decrease at text %lu", what,
                                (unsigned long)i);
    return RETRLM_OK;
}

static int retrlm__in_list(const int *xs, int n, int x) {
    int i;
    for (i = 0; i < n; i++)
        if (xs[i] == x) return 1;
    return 0;
}

RETRLM_API retrlm_result retrlm_dpr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_dpr_config *cfg,
                                          retrlm_retriever_train_state *st) {
    const int maxb = e->config.max_batch;
    const int *qsrc[RETRLM__MAX_DPR_BATCH], *dsrc[2 * RETRLM__MAX_DPR_BATCH];
    int qn[RETRLM__MAX_DPR_BATCH], dn[2 * RETRLM__MAX_DPR_BATCH];
    int docs[2 * RETRLM__MAX_DPR_BATCH], pick[RETRLM__MAX_DPR_BATCH];
    int batch = cfg->batch ? cfg->batch : maxb;
    float temperature = cfg->temperature > 0.0f ? cfg->temperature : 1.0f;
    retrlm__cbatch b;
    retrlm_result r;
    size_t i;
    RETRLM_ASSERT(e && opt && cfg && st);
    if ((r = retrlm__check_texts(&cfg->queries, "queries")) ||
        (r = retrlm__check_texts(&cfg->docs, "docs")))
        return r;
    if (batch < 1 || batch > maxb || batch > RETRLM__MAX_DPR_BATCH || cfg->n_pairs < 1 ||
        !cfg->pair_query || !cfg->pair_doc || cfg->temperature < 0.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "dpr_train: batch %d must be in [1, %d] (the "
                            "encoder's max_batch), with pairs (%lu) and temperature >= 0", batch,
                            RETRLM__MIN(maxb, RETRLM__MAX_DPR_BATCH), (unsigned long)cfg->n_pairs);
    for (i = 0; i < cfg->n_pairs; i++) {
        int hn = cfg->hard_negative ? cfg->hard_negative[i] : -1;
        if (cfg->pair_query[i] < 0 || (size_t)cfg->pair_query[i] >= cfg->queries.n ||
            cfg->pair_doc[i] < 0 || (size_t)cfg->pair_doc[i] >= cfg->docs.n || hn < -1 ||
            (hn >= 0 && (size_t)hn >= cfg->docs.n))
            return retrlm__fail(RETRLM_ERR_ARG, "dpr_train: pair %lu (query %d, document %d, hard "
                                "negative %d) is out of range (%lu queries, %lu documents)",
                                (unsigned long)i, cfg->pair_query[i], cfg->pair_doc[i], hn,
                                (unsigned long)cfg->queries.n, (unsigned long)cfg->docs.n);
    }
    if ((r = retrlm__cbatch_init(&b, e))) return r;
    while (st->step < cfg->steps) {
        int n = 0, nd, tries, j, Tq, Td;
        // distinct positives; a pair whose document is taken is skipped
        for (tries = 0; n < batch && tries < 16 * batch; tries++) {
            int p = (int)retrlm_rng_below(&st->rng, cfg->n_pairs);
            if (retrlm__in_list(docs, n, cfg->pair_doc[p])) continue;
            pick[n] = p;
            docs[n++] = cfg->pair_doc[p];
        }
        nd = n;
        for (j = 0; j < n; j++) {
            int hn = cfg->hard_negative ? cfg->hard_negative[pick[j]] : -1;
            if (hn >= 0 && !retrlm__in_list(docs, nd, hn)) docs[nd++] = hn;
        }
        for (j = 0; j < n; j++) {
            int qi = cfg->pair_query[pick[j]];
            qsrc[j] = cfg->queries.ids + cfg->queries.off[qi];
            qn[j] = (int)(cfg->queries.off[qi + 1] - cfg->queries.off[qi]);
            b.pos[j] = j;
        }
        for (j = 0; j < nd; j++) {
            dsrc[j] = cfg->docs.ids + cfg->docs.off[docs[j]];
            dn[j] = (int)(cfg->docs.off[docs[j] + 1] - cfg->docs.off[docs[j]]);
        }
        Tq = retrlm__pack(b.qtok, b.qlen, qsrc, qn, n, e->config.max_query_tokens);
        Td = retrlm__pack(b.dtok, b.dlen, dsrc, dn, nd, e->config.max_doc_tokens);
        if ((r = retrlm__contrastive_step(e, opt, &b, n, Tq, nd, Td, temperature, st))) break;
        if (cfg->losses) cfg->losses[st->step] = st->last_loss;
        st->step++;
        if (cfg->progress && cfg->progress(cfg->user, "dpr", (double)st->step, (double)cfg->steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "dpr_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(b.block);
    return r;
}

// a random crop of n tokens (fraction in [lo, hi]) with each token deleted with probability p
// (at least one kept), cut to maxt; into out, returns its length
static int retrlm__crop(int *out, const int *src, int n, float lo, float hi, float p, int maxt,
                        retrlm_rng *rng) {
    float ratio = lo + (hi - lo) * retrlm_rng_float(rng);
    int len = RETRLM__MAX(1, (int)(ratio * (float)n)), start, i, k = 0;
    len = RETRLM__MIN(len, n);
    start = (int)retrlm_rng_below(rng, (uint64_t)(n - len + 1));
    for (i = 0; i < len && k < maxt; i++)
        if (!(p > 0.0f && retrlm_rng_float(rng) < p)) out[k++] = src[start + i];
    if (k == 0) out[k++] = src[start];
    return k;
}

// ---------------------------------------------------------------------------------------------
// MoCo: the momentum key encoder and its queue

// the key encoder's weights as (destination, source, count) runs over e's: the transformer's
// parameter block, then the projection when there is one
static int retrlm__moco_runs(retrlm_encoder *key, const retrlm_encoder *e, float **dst,
                             const float **src, size_t *n) {
    int runs = 0;
    dst[runs] = key->side[RETRLM_QUERY].params;
    src[runs] = e->side[RETRLM_QUERY].params;
    n[runs++] = e->side[RETRLM_QUERY].n_params;
    if (e->proj[RETRLM_QUERY]) {
        dst[runs] = key->proj[RETRLM_QUERY];
        src[runs] = e->proj[RETRLM_QUERY];
        n[runs++] = (size_t)e->dim * (size_t)e->side[RETRLM_QUERY].config.dim;
    }
    return runs;
}

RETRLM_API retrlm_result retrlm_moco_init(retrlm_moco *mc, const retrlm_encoder *e,
                                          int queue_size, float momentum) {
    float *dst[2];
    const float *src[2];
    size_t n[2];
    int runs, i;
    retrlm_result r;
    RETRLM_ASSERT(mc && e);
    memset(mc, 0, sizeof *mc);
    if (e->config.separate || queue_size < 1 || !(momentum >= 0.0f && momentum <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "moco_init: needs a shared encoder (separate %d), "
                            "queue_size >= 1 (%d) and momentum in [0, 1] (%g)",
                            e->config.separate, queue_size, (double)momentum);
    if ((r = retrlm_encoder_init(&mc->key, &e->config))) return r;
    mc->queue = (float *)retrlm__alloc((size_t)queue_size, (size_t)e->dim * sizeof(float));
    if (!mc->queue) {
        retrlm_moco_free(mc);
        return retrlm__fail(RETRLM_ERR_NOMEM, "moco_init: no memory for %d keys of dim %d",
                            queue_size, e->dim);
    }
    runs = retrlm__moco_runs(&mc->key, e, dst, src, n);
    for (i = 0; i < runs; i++) memcpy(dst[i], src[i], n[i] * sizeof(float));
    mc->queue_size = queue_size;
    mc->momentum = momentum;
    return RETRLM_OK;
}

RETRLM_API void retrlm_moco_free(retrlm_moco *mc) {
    if (!mc) return;
    retrlm_encoder_free(&mc->key);
    RETRLM_FREE(mc->queue);
    memset(mc, 0, sizeof *mc);
}

// theta_key <- m theta_key + (1 - m) theta
static void retrlm__moco_update(retrlm_moco *mc, const retrlm_encoder *e) {
    float *dst[2];
    const float *src[2];
    size_t n[2];
    const float m = mc->momentum, m1 = 1.0f - mc->momentum;
    int runs = retrlm__moco_runs(&mc->key, e, dst, src, n), i;
    for (i = 0; i < runs; i++) {
        float *d = dst[i];
        const float *s = src[i];
        long j, nn = (long)n[i];
        RETRLM__PARALLEL_FOR_CHUNK_IF(16384, nn > 65536)
        for (j = 0; j < nn; j++) d[j] = m * d[j] + m1 * s[j];
    }
}

// appends n keys (n, dim) to the ring, overwriting the oldest when full
static void retrlm__moco_enqueue(retrlm_moco *mc, const float *keys, int n) {
    const size_t dim = (size_t)mc->key.dim;
    int i;
    for (i = 0; i < n; i++) {
        memcpy(mc->queue + (size_t)mc->head * dim, keys + (size_t)i * dim, dim * sizeof(float));
        mc->head = (mc->head + 1) % mc->queue_size;
        if (mc->n_queued < mc->queue_size) mc->n_queued++;
    }
}

// one MoCo step: queries through e, keys through the key encoder, candidates = the batch's keys
// then the queue (b->pos holds query i's positive, key i); only e gets gradients, through the
// queries; then the average and the queue move on
static retrlm_result retrlm__moco_step(retrlm_encoder *e, retrlm_adamw *opt, retrlm_moco *mc,
                                       retrlm__cbatch *b, float *cand, int n, int Tq, int Td,
                                       float temperature, retrlm_retriever_train_state *st) {
    const size_t dim = (size_t)e->dim;
    int correct = 0;
    retrlm_result r;
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, b->qtok, n, Tq, b->qlen, b->qemb)) ||
        (r = retrlm_encoder_forward(&mc->key, RETRLM_DOC, b->dtok, n, Td, b->dlen, cand)))
        return r;
    // the ring's order does not matter to the loss: it is a sum over candidates
    memcpy(cand + (size_t)n * dim, mc->queue, (size_t)mc->n_queued * dim * sizeof(float));
    if ((r = retrlm_contrastive_loss(b->qemb, n, cand, n + mc->n_queued, e->dim, b->pos,
                                     temperature, &st->last_loss, b->dq, NULL, &correct)))
        return r;
    retrlm_encoder_zero_grad(e);
    if ((r = retrlm_encoder_backward(e, RETRLM_QUERY, b->dq))) return r;
    retrlm_adamw_step(opt);
    retrlm__moco_update(mc, e);
    retrlm__moco_enqueue(mc, cand, n);
    st->last_acc = (float)correct / (float)n;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_contriever_train(retrlm_encoder *e, retrlm_adamw *opt,
                                                 const retrlm_contriever_config *cfg,
                                                 retrlm_retriever_train_state *st) {
    const int maxb = e->config.max_batch;
    const int Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    int batch = cfg->batch ? cfg->batch : maxb;
    float temperature = cfg->temperature > 0.0f ? cfg->temperature : 0.05f;
    float lo = cfg->crop_min > 0.0f ? cfg->crop_min : 0.1f;
    float hi = cfg->crop_max > 0.0f ? cfg->crop_max : 0.5f;
    float p = cfg->delete_prob == 0.0f ? 0.1f : cfg->delete_prob;
    int picked[RETRLM__MAX_DPR_BATCH];
    retrlm__cbatch b;
    retrlm_moco *mc = cfg->moco;
    float *cand = NULL; // MoCo: (batch + queue_size, dim) candidates
    retrlm_result r;
    size_t i, eligible = 0;
    RETRLM_ASSERT(e && opt && cfg && st);
    if (mc && (!mc->queue || e->config.separate || mc->key.dim != e->dim ||
               mc->key.side[RETRLM_QUERY].n_params != e->side[RETRLM_QUERY].n_params))
        return retrlm__fail(RETRLM_ERR_ARG, "contriever_train: the MoCo state was not made by "
                            "retrlm_moco_init from this (shared) encoder");
    if ((r = retrlm__check_texts(&cfg->docs, "docs"))) return r;
    for (i = 0; i < cfg->docs.n; i++) eligible += cfg->docs.off[i + 1] - cfg->docs.off[i] >= 2;
    if (batch < 1 || batch > maxb || batch > RETRLM__MAX_DPR_BATCH || !(lo <= hi) || hi > 1.0f ||
        p >= 1.0f || cfg->temperature < 0.0f || eligible < (size_t)batch)
        return retrlm__fail(RETRLM_ERR_ARG, "contriever_train: batch %d must be in [1, %d] and "
                            "at most the %lu documents of 2 tokens or more; crops %g..%g within "
                            "(0, 1]; delete_prob < 1", batch, RETRLM__MIN(maxb, RETRLM__MAX_DPR_BATCH),
                            (unsigned long)eligible, (double)lo, (double)hi);
    if ((r = retrlm__cbatch_init(&b, e))) return r;
    if (mc && !(cand = (float *)retrlm__alloc((size_t)batch + (size_t)mc->queue_size,
                                              (size_t)e->dim * sizeof(float)))) {
        RETRLM_FREE(b.block);
        return retrlm__fail(RETRLM_ERR_NOMEM, "contriever_train: no memory for %d + %d candidates",
                            batch, mc->queue_size);
    }
    while (st->step < cfg->steps) {
        int j, n = 0;
        // distinct documents of at least 2 tokens, padded rows first filled at stride T
        while (n < batch) {
            int d = (int)retrlm_rng_below(&st->rng, cfg->docs.n);
            if (cfg->docs.off[d + 1] - cfg->docs.off[d] < 2 || retrlm__in_list(picked, n, d)) continue;
            picked[n++] = d;
        }
        for (j = 0; j < n; j++) {
            const int *src = cfg->docs.ids + cfg->docs.off[picked[j]];
            int len = (int)(cfg->docs.off[picked[j] + 1] - cfg->docs.off[picked[j]]);
            b.qlen[j] = retrlm__crop(b.qtok + (size_t)j * Tq, src, len, lo, hi, p, Tq, &st->rng);
            b.dlen[j] = retrlm__crop(b.dtok + (size_t)j * Td, src, len, lo, hi, p, Td, &st->rng);
            b.pos[j] = j;
        }
        if (mc)
            r = retrlm__moco_step(e, opt, mc, &b, cand, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq),
                                  retrlm__compact_rows(b.dtok, b.dlen, n, Td), temperature, st);
        else
            r = retrlm__contrastive_step(e, opt, &b, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq),
                                         n, retrlm__compact_rows(b.dtok, b.dlen, n, Td),
                                         temperature, st);
        if (r) break;
        if (cfg->losses) cfg->losses[st->step] = st->last_loss;
        st->step++;
        if (cfg->progress &&
            cfg->progress(cfg->user, "contriever", (double)st->step, (double)cfg->steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "contriever_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(b.block);
    RETRLM_FREE(cand);
    return r;
}
