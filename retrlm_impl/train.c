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
    retrlm_result r;
    size_t i, eligible = 0;
    RETRLM_ASSERT(e && opt && cfg && st);
    if ((r = retrlm__check_texts(&cfg->docs, "docs"))) return r;
    for (i = 0; i < cfg->docs.n; i++) eligible += cfg->docs.off[i + 1] - cfg->docs.off[i] >= 2;
    if (batch < 1 || batch > maxb || batch > RETRLM__MAX_DPR_BATCH || !(lo <= hi) || hi > 1.0f ||
        p >= 1.0f || cfg->temperature < 0.0f || eligible < (size_t)batch)
        return retrlm__fail(RETRLM_ERR_ARG, "contriever_train: batch %d must be in [1, %d] and "
                            "at most the %lu documents of 2 tokens or more; crops %g..%g within "
                            "(0, 1]; delete_prob < 1", batch, RETRLM__MIN(maxb, RETRLM__MAX_DPR_BATCH),
                            (unsigned long)eligible, (double)lo, (double)hi);
    if ((r = retrlm__cbatch_init(&b, e))) return r;
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
        if ((r = retrlm__contrastive_step(e, opt, &b, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq),
                                          n, retrlm__compact_rows(b.dtok, b.dlen, n, Td),
                                          temperature, st)))
            break;
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
    return r;
}
