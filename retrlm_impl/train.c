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
        if (cfg->progress && cfg->progress(cfg->progress_user, "dpr", (double)st->step, (double)cfg->steps)) {
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
            r = retrlm__moco_step(e, opt, mc, &b, cand, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq, 0),
                                  retrlm__compact_rows(b.dtok, b.dlen, n, Td, 0), temperature, st);
        else
            r = retrlm__contrastive_step(e, opt, &b, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq, 0),
                                         n, retrlm__compact_rows(b.dtok, b.dlen, n, Td, 0),
                                         temperature, st);
        if (r) break;
        if (cfg->losses) cfg->losses[st->step] = st->last_loss;
        st->step++;
        if (cfg->progress &&
            cfg->progress(cfg->progress_user, "contriever", (double)st->step, (double)cfg->steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "contriever_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(b.block);
    RETRLM_FREE(cand);
    return r;
}

// ---------------------------------------------------------------------------------------------
// REPLUG LSR: the retriever learns from a frozen LM

// Sums, for each of B rows of the LM's last forward (B, T), the log-probabilities of the
// targets (B, T) that are >= 0 into out (B).
static void retrlm__rows_loglik(const retrlm_model *lm, const int *targets, int B, int T,
                                float *out) {
    const int V = lm->config.vocab_size;
    int b;
    RETRLM__PARALLEL_FOR_IF(B > 1)
    for (b = 0; b < B; b++) {
        double s = 0.0;
        int t;
        for (t = 0; t < T; t++) {
            const int y = targets[(size_t)b * T + t];
            const float *l = lm->logits + ((size_t)b * T + t) * (size_t)V;
            if (y >= 0) s += (double)l[y] - (double)retrlm_logsumexp(l, V);
        }
        out[b] = (float)s;
    }
}

// the buffers of an LSR run, one allocation
typedef struct retrlm__lsr {
    int   *units;   // (batch, k) retrieved units, -1 past found
    int   *found;   // (batch)
    int   *qtok;    // (batch, Tq) query-side tokens, then compacted
    int   *qlen;    // (batch)
    int   *dtok;    // (k, Td)
    int   *dlen;    // (k)
    int   *seq;     // (lm max_batch, lm max_seq_len) LM inputs
    int   *tgt;     // (lm max_batch, lm max_seq_len) LM targets, -1 outside y
    int   *slen;    // (lm max_batch)
    int   *row_ex;  // (batch * k) example of each LM row
    int   *row_u;   // (batch * k) candidate slot of each LM row
    float *gold;    // (batch, k) log p_LM(y | u, x), -inf past found
    float *score;   // (k) one example's retriever scores
    float *dscore;  // (k)
    float *q, *dq;  // (batch, dim)
    float *d, *dd;  // (k, dim)
    char  *text;    // x's text
    size_t text_cap;
    void  *block;
} retrlm__lsr;

static retrlm_result retrlm__lsr_init(retrlm__lsr *w, const retrlm_encoder *e,
                                      const retrlm_model *lm, int batch, int k) {
    const size_t B = (size_t)batch, K = (size_t)k, P = (size_t)e->dim;
    const size_t Tq = (size_t)e->config.max_query_tokens, Td = (size_t)e->config.max_doc_tokens;
    const size_t LB = (size_t)lm->config.max_batch, LT = (size_t)lm->config.max_seq_len;
    size_t ni = B * K + B + B * Tq + B + K * Td + K + 2 * LB * LT + LB + 2 * B * K;
    size_t nf = B * K + 2 * K + 2 * B * P + 2 * K * P;
    memset(w, 0, sizeof *w);
    w->block = retrlm__alloc(nf * sizeof(float) + ni * sizeof(int), 1);
    if (!w->block) return retrlm__fail(RETRLM_ERR_NOMEM, "lsr_train: no memory for a batch");
    w->gold = (float *)w->block;
    w->score = w->gold + B * K;
    w->dscore = w->score + K;
    w->q = w->dscore + K;
    w->dq = w->q + B * P;
    w->d = w->dq + B * P;
    w->dd = w->d + K * P;
    w->units = (int *)(w->dd + K * P);
    w->found = w->units + B * K;
    w->qtok = w->found + B;
    w->qlen = w->qtok + B * Tq;
    w->dtok = w->qlen + B;
    w->dlen = w->dtok + K * Td;
    w->seq = w->dlen + K;
    w->tgt = w->seq + LB * LT;
    w->slen = w->tgt + LB * LT;
    w->row_ex = w->slen + LB;
    w->row_u = w->row_ex + B * K;
    return RETRLM_OK;
}

// The LM's log-likelihood of every example's y after each of its units and x, in rows of the
// LM's max_batch: [unit's first ut tokens ; x ; y], targets on y.
static retrlm_result retrlm__lsr_gold(retrlm__lsr *w, const retrlm_lsr_config *c, const size_t *start,
                                      int batch, int k, int ut) {
    retrlm_model *lm = c->lm;
    const int cx = c->context_tokens, cy = c->continuation_tokens;
    const int LB = RETRLM__MIN(lm->config.max_batch, 1024); // rows a forward, and ll's size
    int rows = 0, i, j, r0;
    float ll[1024];
    for (i = 0; i < batch; i++)
        for (j = 0; j < k; j++) {
            w->gold[(size_t)i * k + j] = -INFINITY;
            if (j < w->found[i]) w->row_ex[rows] = i, w->row_u[rows++] = j;
        }
    for (r0 = 0; r0 < rows; r0 += LB) {
        int nr = RETRLM__MIN(LB, rows - r0), T = 0, b, t;
        retrlm_result r;
        for (b = 0; b < nr; b++) {
            const int u = w->units[(size_t)w->row_ex[r0 + b] * k + w->row_u[r0 + b]];
            w->slen[b] = retrlm__unit_and_continuation(c->ds, u, ut, !c->continuation, NULL) + cx + cy;
            T = RETRLM__MAX(T, w->slen[b]);
        }
        for (b = 0; b < nr; b++) {
            int n0, *s = w->seq + (size_t)b * T, *g = w->tgt + (size_t)b * T;
            const int ex = w->row_ex[r0 + b];
            n0 = retrlm__unit_and_continuation(c->ds, w->units[(size_t)ex * k + w->row_u[r0 + b]], ut,
                                               !c->continuation, s);
            memcpy(s + n0, c->tokens + start[ex], (size_t)(cx + cy) * sizeof(int));
            for (t = n0 + cx + cy; t < T; t++) s[t] = 0;
            // position t predicts s[t + 1]: the targets of y's tokens sit one before them
            for (t = 0; t < T; t++) g[t] = t >= n0 + cx - 1 && t < n0 + cx + cy - 1 ? s[t + 1] : -1;
        }
        if ((r = retrlm_model_forward(lm, w->seq, nr, T, w->slen, 0))) return r;
        retrlm__rows_loglik(lm, w->tgt, nr, T, ll);
        for (b = 0; b < nr; b++) w->gold[(size_t)w->row_ex[r0 + b] * k + w->row_u[r0 + b]] = ll[b];
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lsr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_lsr_config *cfg,
                                          retrlm_retriever_train_state *st) {
    retrlm_lsr_config c = *cfg;
    retrlm__lsr w;
    retrlm_retrieve_params rp;
    retrlm_result r = RETRLM_OK;
    const int P = e->dim, Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    size_t start[RETRLM__MAX_DPR_BATCH], span, t;
    int ut, i, j;
    RETRLM_ASSERT(e && opt && cfg && st);
    if (!c.context_tokens) c.context_tokens = 64;
    if (!c.continuation_tokens) c.continuation_tokens = 64;
    if (!c.query_tokens) c.query_tokens = RETRLM__MIN(32, c.context_tokens);
    if (!c.k) c.k = 8;
    if (!c.batch) c.batch = 8;
    if (c.temperature == 0.0f) c.temperature = 0.1f;
    if (!c.lm || !c.lm_tok || !c.ds || !c.tokens || c.lm->config.no_logits ||
        c.ds->encoder != e || c.ds->dense.n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: needs an LM with logits, its tokenizer, "
                            "tokens, and a datastore embedded with this encoder "
                            "(retrlm_datastore_embed)");
    if (c.context_tokens < 1 || c.continuation_tokens < 1 || c.query_tokens < 1 ||
        c.query_tokens > c.context_tokens || c.unit_tokens < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: x %d tokens (query %d of them), y %d and unit "
                            "%d: x, y and the query need at least 1, the query at most x",
                            c.context_tokens, c.query_tokens, c.continuation_tokens, c.unit_tokens);
    span = (size_t)c.context_tokens + (size_t)c.continuation_tokens;
    ut = c.unit_tokens ? c.unit_tokens
         : span < (size_t)c.lm->config.max_seq_len
             ? RETRLM__MIN(c.ds->chunk_tokens, c.lm->config.max_seq_len - (int)span) : 0;
    if (ut < 1 || span + (size_t)ut > (size_t)c.lm->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: a unit (%d tokens) + x (%d) + y (%d) exceed "
                            "the LM's %d positions", c.unit_tokens, c.context_tokens,
                            c.continuation_tokens, c.lm->config.max_seq_len);
    if (c.n_tokens < span)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: a stream of %lu tokens is shorter than x + y "
                            "(%lu)", (unsigned long)c.n_tokens, (unsigned long)span);
    if (c.k < 1 || c.k > e->side[RETRLM_DOC].config.max_batch || c.k > 1024)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: k %d must be in [1, %d] (the encoder's "
                            "document side max_batch)", c.k,
                            RETRLM__MIN(1024, e->side[RETRLM_DOC].config.max_batch));
    if (c.batch < 1 || c.batch > e->config.max_batch || c.batch > RETRLM__MAX_DPR_BATCH)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: batch %d must be in [1, %d] (the encoder's "
                            "max_batch)", c.batch, RETRLM__MIN(RETRLM__MAX_DPR_BATCH, e->config.max_batch));
    if (!(c.temperature > 0.0f) || c.refresh_every < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: temperature %g must be > 0 and refresh_every "
                            "%lld >= 0", (double)c.temperature, (long long)c.refresh_every);
    for (t = 0; t < c.n_tokens; t++)
        if (c.tokens[t] < 0 || c.tokens[t] >= c.lm->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: token %d at %lu is outside the LM's "
                                "vocabulary of %d", c.tokens[t], (unsigned long)t, c.lm->config.vocab_size);
    if ((r = retrlm__lsr_init(&w, e, c.lm, c.batch, c.k))) return r;
    memset(&rp, 0, sizeof rp);
    rp.mode = RETRLM_RETRIEVE_DENSE;
    while (st->step < c.steps) {
        double total = 0.0;
        int right = 0, T;
        // examples: windows whose query finds at least one unit
        for (i = 0; i < c.batch && !r; i++) {
            int tries = 0;
            do {
                size_t len;
                start[i] = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_tokens - span + 1));
                if ((r = retrlm__decode_grow(c.lm_tok, c.tokens + start[i] + c.context_tokens -
                                             c.query_tokens, (size_t)c.query_tokens, &w.text,
                                             &w.text_cap, &len)) ||
                    (r = retrlm_datastore_retrieve(c.ds, &rp, w.text, len, c.k,
                                                   c.token_doc ? c.token_doc[start[i]] : RETRLM_NO_DOC,
                                                   w.units + (size_t)i * c.k, NULL, &w.found[i])))
                    break;
                if (!w.found[i] && ++tries == 100)
                    r = retrlm__fail(RETRLM_ERR_ARG, "lsr_train: 100 queries found no unit (every "
                                     "unit of the example's own document?)");
                if (!r && w.found[i])
                    r = retrlm__encode_cut(c.ds->encoder_tok, w.text, len, w.qtok + (size_t)i * Tq,
                                           Tq, &w.qlen[i]);
            } while (!r && !w.found[i]);
        }
        if (r || (r = retrlm__lsr_gold(&w, &c, start, c.batch, c.k, ut))) break;
        // queries forward; then per example: its units forward, KL, document side backward
        T = retrlm__compact_rows(w.qtok, w.qlen, c.batch, Tq, 0);
        if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, w.qtok, c.batch, T, w.qlen, w.q))) break;
        retrlm_encoder_zero_grad(e);
        memset(w.dq, 0, (size_t)c.batch * P * sizeof(float));
        for (i = 0; i < c.batch && !r; i++) {
            const int nf = w.found[i];
            const float *qi = w.q + (size_t)i * P, *gi = w.gold + (size_t)i * c.k;
            float loss, *dqi = w.dq + (size_t)i * P;
            int best_p = 0, best_q = 0, Tdd;
            for (j = 0; j < nf && !r; j++) {
                size_t len;
                const char *txt = retrlm_datastore_text(c.ds, w.units[(size_t)i * c.k + j], &len);
                r = retrlm__encode_cut(c.ds->encoder_tok, txt, len, w.dtok + (size_t)j * Td, Td, &w.dlen[j]);
            }
            if (r) break;
            Tdd = retrlm__compact_rows(w.dtok, w.dlen, nf, Td, 0);
            if ((r = retrlm_encoder_forward(e, RETRLM_DOC, w.dtok, nf, Tdd, w.dlen, w.d))) break;
            for (j = 0; j < c.k; j++)
                w.score[j] = j < nf ? retrlm_dot(qi, w.d + (size_t)j * P, P) : -INFINITY;
            if ((r = retrlm_kl_distill_loss(w.score, gi, 1, c.k, c.temperature, c.temperature,
                                            &loss, w.dscore)))
                break;
            total += loss;
            for (j = 1; j < nf; j++) {
                best_p = w.score[j] > w.score[best_p] ? j : best_p;
                best_q = gi[j] > gi[best_q] ? j : best_q;
            }
            right += best_p == best_q;
            // s_ij = q_i . d_j: dd_j = ds_j q_i, dq_i = sum_j ds_j d_j (each / batch)
            for (j = 0; j < nf; j++) {
                const float g = w.dscore[j] / (float)c.batch;
                int a;
                for (a = 0; a < P; a++) {
                    w.dd[(size_t)j * P + a] = g * qi[a];
                    dqi[a] += g * w.d[(size_t)j * P + a];
                }
            }
            r = retrlm_encoder_backward(e, RETRLM_DOC, w.dd);
        }
        if (r || (r = retrlm_encoder_backward(e, RETRLM_QUERY, w.dq))) break;
        retrlm_adamw_step(opt);
        st->last_loss = (float)(total / c.batch);
        st->last_acc = (float)right / (float)c.batch;
        if (c.losses) c.losses[st->step] = st->last_loss;
        st->step++;
        if (c.refresh_every && st->step % c.refresh_every == 0 &&
            (r = retrlm_datastore_embed(c.ds, e, c.ds->encoder_tok, c.index_config, NULL, NULL)))
            break;
        if (c.progress && c.progress(c.progress_user, "lsr", (double)st->step, (double)c.steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "lsr_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// ---------------------------------------------------------------------------------------------
// in-context retrieval-augmented LM training (strategy 2, the LM side)

RETRLM_API retrlm_result retrlm_incontext_train(retrlm_model *m, retrlm_adamw *opt,
                                                const retrlm_incontext_train_config *cfg,
                                                retrlm_lm_train_state *st) {
    retrlm_incontext_train_config c = *cfg;
    retrlm_result r = RETRLM_OK;
    int *inp = NULL, *tgt = NULL, *lens = NULL, units[16], Tmax, bad;
    char *query = NULL;
    size_t qcap = 0, t;
    RETRLM_ASSERT(m && opt && cfg && st);
    Tmax = m->config.max_seq_len;
    if (!c.k) c.k = 1;
    if (!c.unit_tokens) c.unit_tokens = c.ds ? c.ds->chunk_tokens : 0;
    if (!c.query_tokens) c.query_tokens = 32;
    // k and unit_tokens first: no product of them may overflow on the way to the message
    bad = c.k < 1 || c.k > 16 || c.unit_tokens < 1 || c.unit_tokens > Tmax;
    if (!c.window_tokens && !bad) c.window_tokens = Tmax - c.k * c.unit_tokens;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.tok || !c.ds || !c.ds->committed_ || !c.tokens || m->config.bidirectional ||
        m->config.no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: needs a causal LM with logits, a "
                            "tokenizer, a committed datastore and tokens");
    if (bad)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: k %d must be in [1, 16] and unit_tokens "
                            "%d in [1, %d]", c.k, c.unit_tokens, Tmax);
    if (c.query_tokens < 1 || c.window_tokens <= c.query_tokens || c.window_tokens > Tmax ||
        c.k * c.unit_tokens + c.window_tokens > Tmax)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: %d unit(s) of %d tokens + a window of %d "
                            "(longer than its query of %d) must fit the LM's %d positions", c.k,
                            c.unit_tokens, c.window_tokens, c.query_tokens, Tmax);
    if (c.n_tokens < (size_t)c.window_tokens + 1)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: a stream of %lu tokens is shorter than "
                            "a window + 1 (%d)", (unsigned long)c.n_tokens, c.window_tokens + 1);
    if (c.batch < 1 || c.batch > m->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: batch %d must be in [1, %d] (the LM's "
                            "max_batch)", c.batch, m->config.max_batch);
    for (t = 0; t < c.n_tokens; t++)
        if (c.tokens[t] < 0 || c.tokens[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: token %d at %lu is outside the "
                                "LM's vocabulary of %d", c.tokens[t], (unsigned long)t,
                                m->config.vocab_size);
    inp = (int *)retrlm__alloc((size_t)c.batch * Tmax, 2 * sizeof(int));
    lens = (int *)retrlm__alloc((size_t)c.batch, sizeof(int));
    if (!inp || !lens) {
        RETRLM_FREE(inp);
        RETRLM_FREE(lens);
        return retrlm__fail(RETRLM_ERR_NOMEM, "incontext_train: no memory");
    }
    tgt = inp + (size_t)c.batch * Tmax;
    while (st->step < c.steps && !r) {
        int b, j, T, found = 0;
        float loss = 0.0f;
        // each window, its query, its units; sequences laid out at stride Tmax, then compacted
        for (b = 0; b < c.batch && !r; b++) {
            int *s = inp + (size_t)b * Tmax, *g = tgt + (size_t)b * Tmax, at = 0, i;
            const size_t w0 = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_tokens - (size_t)c.window_tokens));
            const int *w = c.tokens + w0;
            size_t qlen;
            if ((r = retrlm__decode_grow(c.tok, w, (size_t)c.query_tokens, &query, &qcap, &qlen)) ||
                (r = retrlm_datastore_retrieve(c.ds, c.retrieve, query, qlen, c.k,
                                               c.token_doc ? c.token_doc[w0] : RETRLM_NO_DOC,
                                               units, NULL, &found)))
                break;
            for (j = found - 1; j >= 0; j--) { // best last, nearest to the window
                int len = retrlm__unit_and_continuation(c.ds, units[j], c.unit_tokens, !c.continuation, s + at);
                for (i = 0; i < len; i++) g[at + i] = -1;
                at += len;
            }
            // w[i] at at + i predicts w[i + 1]; only the tokens after the query count
            for (i = 0; i < c.window_tokens; i++) {
                s[at + i] = w[i];
                g[at + i] = i + 1 >= c.query_tokens ? w[i + 1] : -1;
            }
            lens[b] = at + c.window_tokens;
        }
        if (r) break;
        T = retrlm__compact_rows(inp, lens, c.batch, Tmax, 0); // padding: ignored inputs,
        retrlm__compact_rows(tgt, lens, c.batch, Tmax, -1);     // and targets that do not count
        if ((r = retrlm__lm_step(m, opt, inp, tgt, c.batch, T, lens, NULL, &loss))) break;
        if (c.losses) c.losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        r = retrlm__progress(c.progress, c.progress_user, "incontext", (double)st->step, (double)c.steps);
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(lens);
    RETRLM_FREE(query);
    return r;
}

// ---- RETRO: the LM learns to read a frozen retriever's neighbours (strategy 2) ---------------

// copies the neighbours of chunks c0 .. c0 + U - 1 into out (U, k, r); chunks past the file's
// have none
static void retrlm__retro_gather(const retrlm_retro_neighbours *nb, int64_t c0, int U, int *out) {
    size_t per = (size_t)nb->k * (size_t)nb->len;
    int u;
    size_t i;
    for (u = 0; u < U; u++) {
        int *o = out + (size_t)u * per;
        if (c0 + u < nb->n_chunks) memcpy(o, retrlm_retro_neighbours_chunk(nb, c0 + u), per * sizeof(int));
        else for (i = 0; i < per; i++) o[i] = -1;
    }
}

// the neighbours must have the model's shape
static retrlm_result retrlm__retro_check(const retrlm_model *m, const retrlm_retro_neighbours *nb,
                                         int T, const char *who) {
    const retrlm_model_config *c = &m->config;
    if (!c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the model has no RETRO blocks", who);
    if (!nb || nb->chunk != c->retro_chunk || nb->k != c->retro_k || nb->len != c->retro_len)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: neighbours of chunk %d, k %d, len %d; the model "
                            "reads chunk %d, k %d, len %d", who, nb ? nb->chunk : 0,
                            nb ? nb->k : 0, nb ? nb->len : 0, c->retro_chunk, c->retro_k,
                            c->retro_len);
    if (T < c->retro_chunk || T % c->retro_chunk || T > c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: windows of %d tokens must be a multiple of the "
                            "chunk, %d, and at most %d", who, T, c->retro_chunk, c->max_seq_len);
    return RETRLM_OK;
}

// The neighbours of the window that starts at token start (retrlm__windows_bpb's gather)
typedef struct retrlm__retro_gather_ctx {
    const retrlm_retro_neighbours *nb;
    int U; // chunks a window
} retrlm__retro_gather_ctx;

static void retrlm__retro_gather_window(const void *ctx, size_t start, int *out) {
    const retrlm__retro_gather_ctx *g = (const retrlm__retro_gather_ctx *)ctx;
    retrlm__retro_gather(g->nb, (int64_t)(start / (size_t)g->nb->chunk), g->U, out);
}

// Bits per byte with the neighbours nb, in the windows of retrlm_lm_bits_per_byte.
static retrlm_result retrlm__retro_bpb(retrlm_model *m, const int *tokens, size_t n,
                                       size_t n_bytes, const retrlm_retro_neighbours *nb, int T,
                                       double *bpb) {
    retrlm__retro_gather_ctx g;
    size_t per;
    g.nb = nb;
    g.U = T / m->config.retro_chunk;
    per = (size_t)g.U * (size_t)nb->k * (size_t)nb->len; // ints of neighbours a window
    return retrlm__windows_bpb(m, tokens, n, n_bytes, T, per, retrlm__retro_gather_window, &g,
                               "retro_bits_per_byte", bpb);
}

RETRLM_API retrlm_result retrlm_retro_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                    size_t n_bytes,
                                                    const retrlm_retro_neighbours *nb,
                                                    int seq_len, double *bpb) {
    const int T = seq_len > 0 ? seq_len : m->config.max_seq_len;
    retrlm_result r;
    RETRLM_ASSERT(m && tokens && bpb);
    if ((r = retrlm__retro_check(m, nb, T, "retro_bits_per_byte"))) return r;
    if (nb->n_chunks < (int64_t)(n / (size_t)nb->chunk))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_bits_per_byte: neighbours for %lld chunks, the "
                            "text has %lu", (long long)nb->n_chunks,
                            (unsigned long)(n / (size_t)nb->chunk));
    return retrlm__retro_bpb(m, tokens, n, n_bytes, nb, T, bpb);
}

RETRLM_API void retrlm_retro_train_state_init(retrlm_retro_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_lm_train_state_init(&s->lm, seed);
}

// the probe: the first probe windows of the valid stream (else of train), mean loss with and
// without their neighbours
static retrlm_result retrlm__retro_probe(retrlm_model *m, const retrlm_retro_train_config *c,
                                         int T, int *inp, int *tgt, int *nbuf,
                                         retrlm_retro_train_state *st) {
    const int *s = c->valid && c->valid_neighbours ? c->valid : c->train;
    size_t n = c->valid && c->valid_neighbours ? c->n_valid : c->n_train;
    const retrlm_retro_neighbours *nb = c->valid && c->valid_neighbours ? c->valid_neighbours
                                                                        : c->neighbours;
    const int U = T / m->config.retro_chunk;
    const size_t per = (size_t)U * (size_t)nb->k * (size_t)nb->len;
    int B = (int)RETRLM__MIN((size_t)c->probe, (n - 1) / (size_t)T), b, t, pass;
    retrlm_result r;
    if (B < 1) return RETRLM_OK;
    for (b = 0; b < B; b++) {
        for (t = 0; t < T; t++) {
            inp[b * T + t] = s[(size_t)b * T + t];
            tgt[b * T + t] = s[(size_t)b * T + t + 1];
        }
    }
    for (pass = 0; pass < 2; pass++) {
        float loss = 0.0f;
        size_t i;
        for (b = 0; b < B; b++) {
            if (pass) for (i = 0; i < per; i++) nbuf[(size_t)b * per + i] = -1;
            else retrlm__retro_gather(nb, (int64_t)b * U, U, nbuf + (size_t)b * per);
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nbuf, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            return r;
        if (pass) st->probe_without = loss;
        else st->probe_with = loss;
    }
    return RETRLM_OK;
}

// the copy curriculum: each of the U chunks of the window at off, with probability copy_share,
// gets in a random neighbour slot the stream's tokens from a random point of its first half on
static void retrlm__retro_copy(const retrlm_retro_train_config *c, retrlm_rng *rng, size_t off,
                               int U, int *nbuf) {
    const int m = c->neighbours->chunk, k = c->neighbours->k, len = c->neighbours->len;
    int u, t;
    for (u = 0; u < U; u++) {
        size_t from;
        int *o;
        if (retrlm_rng_float(rng) >= c->copy_share) continue;
        o = nbuf + ((size_t)u * (size_t)k + (size_t)retrlm_rng_below(rng, (uint64_t)k)) * (size_t)len;
        from = off + (size_t)u * (size_t)m + (size_t)retrlm_rng_below(rng, (uint64_t)m / 2 + 1);
        for (t = 0; t < len; t++) o[t] = from + (size_t)t < c->n_train ? c->train[from + (size_t)t] : -1;
    }
}

RETRLM_API retrlm_result retrlm_retro_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_retro_train_config *cfg,
                                            retrlm_retro_train_state *st) {
    retrlm_retro_train_config c;
    retrlm_result r;
    int *inp, *tgt, *nbuf, T, U;
    size_t per, nwin;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    T = c.seq_len > 0 ? c.seq_len : m->config.max_seq_len;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.probe) c.probe = c.batch;
    if ((r = retrlm__retro_check(m, c.neighbours, T, "retro_train"))) return r;
    if (c.valid && c.valid_neighbours &&
        (r = retrlm__retro_check(m, c.valid_neighbours, T, "retro_train (valid)")))
        return r;
    if (c.batch < 1 || c.batch > m->config.max_batch || c.probe < 1 || !c.train ||
        c.n_train < (size_t)T + 2 || c.steps < 0 || c.copy_steps < 0 ||
        !(c.copy_share >= 0.0f && c.copy_share <= 1.0f) ||
        c.neighbours->n_chunks < (int64_t)(c.n_train / (size_t)c.neighbours->chunk))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_train: batch %d (1..%d), %lu tokens (> %d), "
                            "copy_share %g (0..1), copy_steps %lld (>= 0), neighbours for %lld chunks (the stream has %lu)",
                            c.batch, m->config.max_batch, (unsigned long)c.n_train, T + 1,
                            (double)c.copy_share, (long long)c.copy_steps, (long long)c.neighbours->n_chunks,
                            (unsigned long)(c.n_train / (size_t)c.neighbours->chunk));
    U = T / m->config.retro_chunk;
    per = (size_t)U * (size_t)m->config.retro_k * (size_t)m->config.retro_len;
    inp = (int *)retrlm__alloc((size_t)m->config.max_batch * ((size_t)2 * T + per), sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "retro_train: no memory");
    tgt = inp + (size_t)m->config.max_batch * T;
    nbuf = tgt + (size_t)m->config.max_batch * T;
    c.probe = RETRLM__MIN(c.probe, m->config.max_batch);
    // windows start on chunk boundaries, so that their chunks are the stream's
    nwin = (c.n_train - (size_t)T - 1) / (size_t)m->config.retro_chunk + 1;
    while (st->lm.step < c.steps && !r) {
        int b, t, final;
        float loss = 0.0f;
        for (b = 0; b < c.batch; b++) {
            size_t w = (size_t)retrlm_rng_below(&st->lm.rng, (uint64_t)nwin);
            size_t off = w * (size_t)m->config.retro_chunk;
            for (t = 0; t < T; t++) {
                inp[b * T + t] = c.train[off + (size_t)t];
                tgt[b * T + t] = c.train[off + (size_t)t + 1];
            }
            retrlm__retro_gather(c.neighbours, (int64_t)w, U, nbuf + (size_t)b * per);
            if (c.copy_share > 0.0f && (!c.copy_steps || st->lm.step < c.copy_steps))
                retrlm__retro_copy(&c, &st->lm.rng, off, U, nbuf + (size_t)b * per);
        }
        if ((r = retrlm__lm_step(m, opt, inp, tgt, c.batch, T, NULL, nbuf, &loss))) break;
        if (c.losses) c.losses[st->lm.step] = loss;
        st->lm.last_loss = loss;
        st->lm.step++;
        final = st->lm.step == c.steps;
        if (final || (c.eval_every > 0 && st->lm.step % c.eval_every == 0)) {
            if ((r = retrlm__retro_probe(m, &c, T, inp, tgt, nbuf, st))) break;
            if (c.valid && c.valid_neighbours && c.n_valid > 1 &&
                (r = retrlm__retro_bpb(m, c.valid, c.n_valid, c.valid_bytes, c.valid_neighbours, T,
                                       &st->lm.last_valid_bpb)))
                break;
            if ((r = retrlm__progress(c.progress, c.progress_user, "valid", (double)st->lm.step,
                                      (double)c.steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (c.checkpoint &&
            (final || (c.checkpoint_every > 0 && st->lm.step % c.checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, &st->lm, c.checkpoint)))
            break;
#endif
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "retro", (double)st->lm.step, (double)c.steps);
    }
    RETRLM_FREE(inp);
    return r;
}

// ---- strategy 3: the reader and the retriever train together (REALM, Atlas) ------------------

RETRLM_API void retrlm_joint_state_init(retrlm_joint_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
    s->last_overlap = -1.0f;
}

// a joint run's buffers, one allocation; kk = candidate rows an example (k + 1, or rerank's L)
typedef struct retrlm__joint {
    int   *qtok, *qlen;  // (batch, Tq), (batch) query tokens, then compacted
    int   *dtok, *dlen;  // (kk, Td), (kk)
    int   *seq, *tgt;    // (kk, LT) reader rows and their targets (-1 outside y)
    int   *slen;         // (kk)
    int   *units, *found; // (batch, kk), (batch): the trainer's retrieved units
    int   *cand;         // (kk) re-ranking's candidates
    float *cprior;       // (kk) their BM25 scores (rerank_bm25)
    float *prior;        // (batch, kk) the BM25 scores of the trainer's units (bm25_weight)
    float *q, *dq;       // (batch, P)
    float *d, *dd;       // (kk, P)
    float *score, *dscore, *gold; // (kk)
    float *ll, *dll;     // (kk, cy) log p(y_t | x, z) and d objective / d it
    char  *text;         // x's query text
    size_t text_cap;
    void  *block;
} retrlm__joint;

static retrlm_result retrlm__joint_init(retrlm__joint *w, const retrlm_encoder *e,
                                        const retrlm_model *lm, int batch, int kk, int cy) {
    const size_t B = (size_t)batch, K = (size_t)kk, P = (size_t)e->dim, Y = (size_t)cy;
    const size_t Tq = (size_t)e->config.max_query_tokens, Td = (size_t)e->config.max_doc_tokens;
    const size_t LT = (size_t)lm->config.max_seq_len;
    size_t ni = B * Tq + B + K * Td + K + 2 * K * LT + K + B * K + B + K;
    size_t nf = 2 * B * P + 2 * K * P + 3 * K + 2 * K * Y + K + B * K;
    memset(w, 0, sizeof *w);
    w->block = retrlm__alloc(nf * sizeof(float) + ni * sizeof(int), 1);
    if (!w->block) return retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for a batch");
    w->q = (float *)w->block;
    w->dq = w->q + B * P;
    w->d = w->dq + B * P;
    w->dd = w->d + K * P;
    w->score = w->dd + K * P;
    w->dscore = w->score + K;
    w->gold = w->dscore + K;
    w->ll = w->gold + K;
    w->dll = w->ll + K * Y;
    w->cprior = w->dll + K * Y;
    w->prior = w->cprior + K;
    w->qtok = (int *)(w->prior + B * K);
    w->qlen = w->qtok + B * Tq;
    w->dtok = w->qlen + B;
    w->dlen = w->dtok + K * Td;
    w->seq = w->dlen + K;
    w->tgt = w->seq + K * LT;
    w->slen = w->tgt + K * LT;
    w->units = w->slen + K;
    w->found = w->units + B * K;
    w->cand = w->found + B;
    return RETRLM_OK;
}

// the defaults filled in and the pieces checked; *ut the unit tokens the reader reads
static retrlm_result retrlm__joint_check(const retrlm_model *lm, const retrlm_encoder *e,
                                         retrlm_joint_config *c, int *ut) {
    size_t span, t;
    int kk;
    if (!c->context_tokens) c->context_tokens = 64;
    if (!c->continuation_tokens) c->continuation_tokens = 64;
    if (!c->query_tokens) c->query_tokens = RETRLM__MIN(32, c->context_tokens);
    if (!c->k) c->k = 4;
    if (!c->batch) c->batch = 8;
    if (c->temperature == 0.0f) c->temperature = 0.1f;
    if (c->gold_temperature == 0.0f) c->gold_temperature = 0.01f;
    if (!c->lm_tok || !c->ds || !c->tokens || lm->config.no_logits || lm->retro_layers ||
        c->ds->encoder != e || c->ds->dense.n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: needs a plain LM with logits, its tokenizer, "
                            "tokens, and a datastore embedded with this encoder "
                            "(retrlm_datastore_embed)");
    if ((unsigned)c->objective > RETRLM_JOINT_EMDR)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: objective %d is not REALM, PDIST or EMDR",
                            (int)c->objective);
    if (c->context_tokens < 1 || c->continuation_tokens < 1 || c->query_tokens < 1 ||
        c->query_tokens > c->context_tokens || c->unit_tokens < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: x %d tokens (query %d of them), y %d and unit "
                            "%d: x, y and the query need at least 1, the query at most x",
                            c->context_tokens, c->query_tokens, c->continuation_tokens,
                            c->unit_tokens);
    span = (size_t)c->context_tokens + (size_t)c->continuation_tokens;
    *ut = c->unit_tokens ? c->unit_tokens
          : span < (size_t)lm->config.max_seq_len
              ? RETRLM__MIN(c->ds->chunk_tokens, lm->config.max_seq_len - (int)span) : 0;
    if (*ut < 1 || span + (size_t)*ut > (size_t)lm->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: a unit (%d tokens) + x (%d) + y (%d) exceed "
                            "the LM's %d positions", c->unit_tokens, c->context_tokens,
                            c->continuation_tokens, lm->config.max_seq_len);
    if (c->n_tokens < span)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: a stream of %lu tokens is shorter than x + y "
                            "(%lu)", (unsigned long)c->n_tokens, (unsigned long)span);
    kk = c->k + (c->objective == RETRLM_JOINT_REALM);
    if (c->k < 1 || kk > lm->config.max_batch || kk > e->side[RETRLM_DOC].config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: k %d (+1 null document for REALM) must be at "
                            "least 1 and fit the LM's max_batch %d and the document side's %d",
                            c->k, lm->config.max_batch, e->side[RETRLM_DOC].config.max_batch);
    if ((c->rerank || c->rerank_bm25) &&
        (c->rerank <= c->k || c->rerank > e->side[RETRLM_DOC].config.max_batch))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: rerank %d%s must be above k %d and at most "
                            "the document side's max_batch %d", c->rerank,
                            c->rerank_bm25 ? " (rerank_bm25 needs it)" : "", c->k,
                            e->side[RETRLM_DOC].config.max_batch);
    if (!(c->bm25_weight >= 0.0f && c->bm25_weight < INFINITY) ||
        (c->bm25_weight > 0.0f && !c->rerank_bm25))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: bm25_weight %g must be finite and >= 0, and "
                            "above 0 only with rerank_bm25", (double)c->bm25_weight);
    if (c->batch < 1 || c->batch > e->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: batch %d must be in [1, %d] (the encoder's "
                            "max_batch)", c->batch, e->config.max_batch);
    if (!(c->temperature > 0.0f) || !(c->gold_temperature > 0.0f) || c->refresh_every < 0 ||
        c->refresh_delay < 0 || (c->refresh_every && c->refresh_delay > c->refresh_every) ||
        c->probe < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: temperatures %g and %g must be > 0, "
                            "refresh_every %lld >= 0, refresh_delay %lld in [0, refresh_every], "
                            "probe %d >= 0", (double)c->temperature, (double)c->gold_temperature,
                            (long long)c->refresh_every, (long long)c->refresh_delay, c->probe);
    if (c->query_side && (!e->config.separate || c->refresh_every))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: query-side training needs a separate (frozen) "
                            "document encoder and no refresh");
    for (t = 0; t < c->n_tokens; t++)
        if (c->tokens[t] < 0 || c->tokens[t] >= lm->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: token %d at %lu is outside the LM's "
                                "vocabulary of %d", c->tokens[t], (unsigned long)t,
                                lm->config.vocab_size);
    return RETRLM_OK;
}

// x's query (its last query_tokens tokens) as text in w->text; *len its bytes
static retrlm_result retrlm__joint_query(retrlm__joint *w, const retrlm_joint_config *c,
                                         size_t start, size_t *len) {
    return retrlm__decode_grow(c->lm_tok, c->tokens + start + c->context_tokens - c->query_tokens,
                               (size_t)c->query_tokens, &w->text, &w->text_cap, len);
}

// One example's reader rows (nd: its nf units, then the null document when nd > nf): their
// forward, log p(y_t | x, z) into w->ll (nd, cy); then, once w->dll is set by the caller
// (retrlm__joint_reader_backward), the backward.
static retrlm_result retrlm__joint_reader(retrlm__joint *w, retrlm_model *lm,
                                          const retrlm_joint_config *c, size_t start,
                                          const int *units, int nf, int nd, int ut) {
    const int cx = c->context_tokens, cy = c->continuation_tokens, V = lm->config.vocab_size;
    int T = 0, j, t, *n0 = w->dlen; // dlen is free here: the unit tokens of each row
    retrlm_result r;
    for (j = 0; j < nd; j++) {
        n0[j] = j < nf ? retrlm__unit_and_continuation(c->ds, units[j], ut, !c->continuation, NULL) : 0;
        w->slen[j] = n0[j] + cx + cy;
        T = RETRLM__MAX(T, w->slen[j]);
    }
    for (j = 0; j < nd; j++) {
        int *s = w->seq + (size_t)j * T, *g = w->tgt + (size_t)j * T;
        if (j < nf) retrlm__unit_and_continuation(c->ds, units[j], ut, !c->continuation, s);
        memcpy(s + n0[j], c->tokens + start, (size_t)(cx + cy) * sizeof(int));
        for (t = w->slen[j]; t < T; t++) s[t] = 0;
        // position t predicts s[t + 1]: y's targets sit at n0 + cx - 1 .. n0 + cx + cy - 2
        for (t = 0; t < T; t++) g[t] = t >= n0[j] + cx - 1 && t < n0[j] + cx + cy - 1 ? s[t + 1] : -1;
    }
    if ((r = retrlm_model_forward(lm, w->seq, nd, T, w->slen, 0))) return r;
    RETRLM__PARALLEL_FOR_IF(nd * cy > 8)
    for (j = 0; j < nd * cy; j++) {
        const int row = j / cy, p = j % cy, pos = n0[row] + cx - 1 + p;
        const float *l = lm->logits + ((size_t)row * T + pos) * (size_t)V;
        const int y = w->tgt[(size_t)row * T + pos];
        w->ll[j] = (float)((double)l[y] - (double)retrlm_logsumexp(l, V));
    }
    return RETRLM_OK;
}

// The reader's backward for the last retrlm__joint_reader: d objective / d logits of row j at
// y's position p is dll[j, p] (onehot(y) - softmax), zero elsewhere; written over lm->logits.
static retrlm_result retrlm__joint_reader_backward(retrlm__joint *w, retrlm_model *lm,
                                                   const retrlm_joint_config *c, int nd) {
    const int cx = c->context_tokens, cy = c->continuation_tokens, V = lm->config.vocab_size;
    const int T = lm->T;
    float *dl = (float *)lm->logits;
    retrlm_model_grad_in g;
    int i;
    RETRLM__PARALLEL_FOR_IF(nd * T > 8)
    for (i = 0; i < nd * T; i++) {
        const int row = i / T, t = i % T, p = t - (w->slen[row] - cx - cy) - cx + 1;
        float *l = dl + (size_t)i * V;
        int v;
        if (p < 0 || p >= cy || w->tgt[i] < 0) {
            memset(l, 0, (size_t)V * sizeof(float));
            continue;
        }
        {
            const float lse = retrlm_logsumexp(l, V), dy = w->dll[(size_t)row * cy + p];
            for (v = 0; v < V; v++) l[v] = -dy * expf(l[v] - lse);
            l[w->tgt[i]] += dy;
        }
    }
    memset(&g, 0, sizeof g);
    g.dlogits = dl;
    return retrlm_model_backward(lm, &g);
}

// With bm25_weight: the BM25 scores of example i's units u (nf) for its query (in w->text,
// len bytes) into w->prior + i * ustride, looked up among BM25's rerank best (w->cand, w->cprior)
static retrlm_result retrlm__joint_prior(retrlm__joint *w, const retrlm_joint_config *c,
                                         size_t start, size_t len, int i, const int *u, int nf,
                                         int ustride) {
    float *out = w->prior + (size_t)i * ustride;
    int nc, j, a;
    retrlm_result r = retrlm_datastore_retrieve(c->ds, NULL, w->text, len, c->rerank,
                                                c->token_doc ? c->token_doc[start] : RETRLM_NO_DOC,
                                                w->cand, w->cprior, &nc);
    for (j = 0; j < nf && !r; j++) {
        for (a = 0; a < nc && w->cand[a] != u[j]; a++) {}
        if (a == nc)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: example %d's unit %d is not among BM25's %d "
                                "best, so it has no BM25 score for bm25_weight", i, u[j], c->rerank);
        out[j] = w->cprior[a];
    }
    return r;
}

// One batch's objective and gradients, with w's buffers (qtok/qlen free for it). prior
// (n, ustride): the units' BM25 scores when c->bm25_weight; NULL: looked up here.
static retrlm_result retrlm__joint_loss(retrlm__joint *w, retrlm_model *lm, retrlm_encoder *e,
                                        const retrlm_joint_config *c, int ut, int n,
                                        const size_t *start, const int *units, int ustride,
                                        const int *found, const float *prior, float *loss,
                                        float *reader, float *utility) {
    const int P = e->dim, Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    const int cy = c->continuation_tokens, realm = c->objective == RETRLM_JOINT_REALM;
    double tot = 0.0, rd = 0.0, ut_sum = 0.0;
    retrlm_result r = RETRLM_OK;
    int i, j, p, T, nrd = 0;
    for (i = 0; i < n && !r; i++) {
        size_t len;
        if (found[i] < 0 || found[i] > c->k || (!realm && found[i] == 0))
            return retrlm__fail(RETRLM_ERR_ARG, "joint: example %d has %d units (PDIST and EMDR "
                                "need 1 to k %d, REALM 0 to k)", i, found[i], c->k);
        for (j = 0; j < found[i]; j++)
            if (units[(size_t)i * ustride + j] < 0 || units[(size_t)i * ustride + j] >= c->ds->n_units)
                return retrlm__fail(RETRLM_ERR_ARG, "joint: unit %d is not in the datastore",
                                    units[(size_t)i * ustride + j]);
        if (start[i] + (size_t)c->context_tokens + (size_t)cy > c->n_tokens)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: window %d runs past the stream", i);
        if (!(r = retrlm__joint_query(w, c, start[i], &len)))
            r = retrlm__encode_cut(c->ds->encoder_tok, w->text, len, w->qtok + (size_t)i * Tq, Tq,
                                   &w->qlen[i]);
        if (!r && c->bm25_weight > 0.0f && !prior)
            r = retrlm__joint_prior(w, c, start[i], len, i, units + (size_t)i * ustride, found[i],
                                    ustride);
    }
    if (r) return r;
    if (c->bm25_weight > 0.0f && !prior) prior = w->prior;
    T = retrlm__compact_rows(w->qtok, w->qlen, n, Tq, 0);
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, w->qtok, n, T, w->qlen, w->q))) return r;
    memset(w->dq, 0, (size_t)n * P * sizeof(float));
    for (i = 0; i < n && !r; i++) {
        const int nf = found[i], nd = nf + realm, *u = units + (size_t)i * ustride;
        const float *qi = w->q + (size_t)i * P;
        float li = 0.0f, kl = 0.0f, *dqi = w->dq + (size_t)i * P;
        double ce = 0.0;
        int Tdd;
        // the retriever's scores with the current weights (the null document: the empty text)
        for (j = 0; j < nd && !r; j++) {
            size_t len = 0;
            const char *txt = j < nf ? retrlm_datastore_text(c->ds, u[j], &len) : "";
            r = retrlm__encode_cut(c->ds->encoder_tok, txt, len, w->dtok + (size_t)j * Td, Td,
                                   &w->dlen[j]);
        }
        if (r) break;
        Tdd = retrlm__compact_rows(w->dtok, w->dlen, nd, Td, 0);
        if ((r = retrlm_encoder_forward(e, RETRLM_DOC, w->dtok, nd, Tdd, w->dlen, w->d))) break;
        for (j = 0; j < nd; j++) w->score[j] = retrlm_dot(qi, w->d + (size_t)j * P, P);
        if (c->bm25_weight > 0.0f) { // the prior; the null document's is the units' mean
            const float *pr = prior + (size_t)i * ustride;
            double m = 0.0;
            for (j = 0; j < nf; j++) w->score[j] += c->bm25_weight * pr[j], m += pr[j];
            if (nd > nf) w->score[nf] += c->bm25_weight * (nf ? (float)(m / nf) : 0.0f);
        }
        if ((r = retrlm__joint_reader(w, lm, c, start[i], u, nf, nd, ut))) break;
        for (j = 0; j < nf; j++)
            for (p = 0; p < cy; p++) ce -= w->ll[(size_t)j * cy + p];
        if (nf) rd += ce / ((double)nf * cy), nrd++;
        if (realm) {
            if ((r = retrlm_marginal_loss(w->score, w->ll, NULL, 1, nd, cy, c->temperature, &li,
                                          w->dscore, w->dll)))
                break;
            for (p = 0; p < cy; p++) ut_sum -= li / cy + w->ll[(size_t)nf * cy + p] / cy;
        } else {
            for (j = 0; j < nf; j++) {
                double s = 0.0;
                for (p = 0; p < cy; p++) s += w->ll[(size_t)j * cy + p];
                w->gold[j] = (float)(s / cy);
            }
            r = c->objective == RETRLM_JOINT_PDIST
                ? retrlm_kl_distill_loss(w->score, w->gold, 1, nf, c->temperature,
                                         c->gold_temperature, &kl, w->dscore)
                : retrlm_marginal_loss(w->score, w->ll, NULL, 1, nf, cy, c->temperature, &kl,
                                       w->dscore, NULL);
            if (r) break;
            // the reader's own loss: the mean cross-entropy of y over the units, each read alone
            li = (float)(ce / ((double)nf * cy)) + kl;
            for (j = 0; j < nf * cy; j++) w->dll[j] = -1.0f / ((float)nf * (float)cy);
        }
        tot += li;
        for (j = 0; j < nd * cy; j++) w->dll[j] /= (float)n;
        if ((r = retrlm__joint_reader_backward(w, lm, c, nd))) break;
        // s_j = q_i . d_j: dd_j = ds_j q_i, dq_i += ds_j d_j (each / n)
        for (j = 0; j < nd; j++) {
            const float gj = w->dscore[j] / (float)n;
            int a;
            for (a = 0; a < P; a++) {
                w->dd[(size_t)j * P + a] = gj * qi[a];
                dqi[a] += gj * w->d[(size_t)j * P + a];
            }
        }
        if (!c->query_side) r = retrlm_encoder_backward(e, RETRLM_DOC, w->dd);
    }
    if (!r) r = retrlm_encoder_backward(e, RETRLM_QUERY, w->dq);
    if (r) return r;
    if (loss) *loss = (float)(tot / n);
    if (reader) *reader = nrd ? (float)(rd / nrd) : 0.0f;
    if (utility) *utility = realm ? (float)(ut_sum / n) : 0.0f;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_joint_loss(retrlm_model *lm, retrlm_encoder *e,
                                           const retrlm_joint_config *cfg, int n,
                                           const size_t *start, const int *units,
                                           const int *found, float *loss, float *reader,
                                           float *utility) {
    retrlm_joint_config c = *cfg;
    retrlm__joint w;
    retrlm_result r;
    int ut;
    RETRLM_ASSERT(lm && e && cfg && start && units && found);
    if ((r = retrlm__joint_check(lm, e, &c, &ut))) return r;
    if (n < 1 || n > e->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint_loss: %d examples, the encoder takes 1 to %d", n,
                            e->config.max_batch);
    if ((r = retrlm__joint_init(&w, e, lm, n, RETRLM__MAX(c.k + 1, c.rerank),
                                c.continuation_tokens)))
        return r;
    r = retrlm__joint_loss(&w, lm, e, &c, ut, n, start, units, c.k, found, NULL, loss, reader,
                           utility);
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// a copy of src's weights into dst (made with src's config): the refresh's snapshot
static void retrlm__encoder_copy(retrlm_encoder *dst, const retrlm_encoder *src) {
    const size_t pd = (size_t)src->dim * (size_t)src->config.model.dim;
    memcpy(dst->side[RETRLM_QUERY].params, src->side[RETRLM_QUERY].params,
           src->side[RETRLM_QUERY].n_params * sizeof(float));
    if (src->config.separate)
        memcpy(dst->side[RETRLM_DOC].params, src->side[RETRLM_DOC].params,
               src->side[RETRLM_DOC].n_params * sizeof(float));
    if (src->proj[RETRLM_QUERY]) memcpy(dst->proj[RETRLM_QUERY], src->proj[RETRLM_QUERY], pd * sizeof(float));
    if (src->proj[RETRLM_DOC] && src->config.separate)
        memcpy(dst->proj[RETRLM_DOC], src->proj[RETRLM_DOC], pd * sizeof(float));
}

// everything a joint run's steps read
typedef struct retrlm__joint_run {
    retrlm_model *lm;
    retrlm_adamw *opt_lm, *opt_enc;
    retrlm_encoder *e;
    const retrlm_joint_config *c;
    retrlm_joint_state *st;
    retrlm__joint *w;
    int ut;
} retrlm__joint_run;

// The k units of the window at start (*found of them), from the index in use (or BM25 when
// c->rerank_bm25), re-ranked with the current document encoder when c->rerank: each text once,
// and with c->bm25_weight their BM25 scores (into prior) added to the fresh inner products.
static retrlm_result retrlm__joint_retrieve(retrlm__joint_run *x, size_t start, int *units,
                                            float *prior, int *found) {
    const retrlm_joint_config *c = x->c;
    retrlm__joint *w = x->w;
    retrlm_retrieve_params rp;
    const int P = x->e->dim, Td = x->e->config.max_doc_tokens;
    const int depth = c->rerank ? c->rerank : c->k;
    float q[4096], *qq = q;
    size_t len;
    retrlm_result r;
    int nf, j, T;
    memset(&rp, 0, sizeof rp);
    rp.mode = c->rerank_bm25 ? RETRLM_RETRIEVE_BM25 : RETRLM_RETRIEVE_DENSE;
    if ((r = retrlm__joint_query(w, c, start, &len)) ||
        (r = retrlm_datastore_retrieve(c->ds, &rp, w->text, len, depth,
                                       c->token_doc ? c->token_doc[start] : RETRLM_NO_DOC,
                                       c->rerank ? w->cand : units, w->cprior, &nf)))
        return r;
    if (!c->rerank || nf == 0) {
        *found = RETRLM__MIN(nf, c->k);
        return RETRLM_OK;
    }
    nf = retrlm__datastore_distinct(c->ds, w->cand, w->cprior, nf);
    // Atlas's re-ranking: the candidates embedded with the current document encoder
    if (P > 4096 && !(qq = (float *)retrlm__alloc((size_t)P, sizeof(float))))
        return retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory to re-rank");
    for (j = 0; j < nf && !r; j++) {
        size_t tl;
        const char *txt = retrlm_datastore_text(c->ds, w->cand[j], &tl);
        r = retrlm__encode_cut(c->ds->encoder_tok, txt, tl, w->dtok + (size_t)j * Td, Td, &w->dlen[j]);
    }
    T = r ? 0 : retrlm__compact_rows(w->dtok, w->dlen, nf, Td, 0);
    if (!r && !(r = retrlm_encoder_embed(x->e, c->ds->encoder_tok, RETRLM_QUERY, w->text, len, qq)) &&
        !(r = retrlm_encoder_forward(x->e, RETRLM_DOC, w->dtok, nf, T, w->dlen, w->d))) {
        for (j = 0; j < nf; j++) // as RETRLM_RETRIEVE_RERANK scores
            w->score[j] = retrlm_dot(qq, w->d + (size_t)j * P, P) + c->bm25_weight * w->cprior[j];
        retrlm__rerank_order(nf, w->cand, w->cprior, w->score);
        *found = RETRLM__MIN(nf, c->k);
        for (j = 0; j < *found; j++) units[j] = w->cand[j], prior[j] = w->cprior[j];
    }
    if (qq != q) RETRLM_FREE(qq);
    return r;
}

// steps until st->step == until
static retrlm_result retrlm__joint_steps(retrlm__joint_run *x, int64_t until) {
    const retrlm_joint_config *c = x->c;
    retrlm_joint_state *st = x->st;
    retrlm__joint *w = x->w;
    const int kk = c->rerank ? c->rerank : c->k + 1;
    const size_t span = (size_t)c->context_tokens + (size_t)c->continuation_tokens;
    size_t start[RETRLM__MAX_DPR_BATCH];
    retrlm_result r = RETRLM_OK;
    int i;
    while (!r && st->step < until) {
        float loss = 0.0f, reader = 0.0f, utility = 0.0f;
        for (i = 0; i < c->batch && !r; i++) {
            int tries = 0;
            do {
                start[i] = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c->n_tokens - span + 1));
                r = retrlm__joint_retrieve(x, start[i], w->units + (size_t)i * kk,
                                           w->prior + (size_t)i * kk, &w->found[i]);
                if (!r && !w->found[i] && ++tries == 100)
                    r = retrlm__fail(RETRLM_ERR_ARG, "joint: 100 queries found no unit (every "
                                     "unit of the example's own document?)");
            } while (!r && !w->found[i]);
        }
        if (r) break;
        retrlm_model_zero_grad(x->lm);
        retrlm_encoder_zero_grad(x->e);
        if ((r = retrlm__joint_loss(w, x->lm, x->e, c, x->ut, c->batch, start, w->units, kk,
                                    w->found, w->prior, &loss, &reader, &utility)))
            break;
        retrlm_adamw_step(x->opt_lm);
        retrlm_adamw_step(x->opt_enc);
        st->last_loss = loss, st->last_reader = reader, st->last_utility = utility;
        if (c->losses) c->losses[st->step] = loss;
        st->step++;
        r = retrlm__progress(c->progress, c->progress_user, "joint", (double)st->step, (double)c->steps);
    }
    return r;
}

// the mean share of the probe queries' top k that indexes a and b agree on
static retrlm_result retrlm__joint_overlap(retrlm__joint_run *x, const retrlm_index *a,
                                           const retrlm_index *b, const size_t *probe, int np,
                                           float *out) {
    const retrlm_joint_config *c = x->c;
    const int k = c->k, P = x->e->dim;
    float *q = (float *)retrlm__alloc((size_t)P + 4 * (size_t)k, sizeof(float));
    int64_t *ia = (int64_t *)retrlm__alloc(2 * (size_t)k, sizeof(int64_t)), *ib = ia + k;
    retrlm_result r = RETRLM_OK;
    double same = 0.0;
    int i, j, l;
    if (!q || !ia) r = retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for the probe");
    for (i = 0; i < np && !r; i++) {
        size_t len;
        if ((r = retrlm__joint_query(x->w, c, probe[i], &len)) ||
            (r = retrlm_encoder_embed(x->e, c->ds->encoder_tok, RETRLM_QUERY, x->w->text, len, q)) ||
            (r = retrlm_index_search(a, q, 1, P, k, NULL, ia, q + P)) ||
            (r = retrlm_index_search(b, q, 1, P, k, NULL, ib, q + P + k)))
            break;
        for (j = 0; j < k; j++)
            for (l = 0; l < k; l++) same += ia[j] >= 0 && ia[j] == ib[l];
    }
    if (!r) *out = np ? (float)(same / ((double)np * k)) : -1.0f;
    RETRLM_FREE(q), RETRLM_FREE(ia);
    return r;
}

RETRLM_API retrlm_result retrlm_joint_train(retrlm_model *lm, retrlm_adamw *opt_lm,
                                            retrlm_encoder *e, retrlm_adamw *opt_enc,
                                            const retrlm_joint_config *cfg,
                                            retrlm_joint_state *st) {
    retrlm_joint_config c = *cfg;
    retrlm__joint w;
    retrlm__joint_run x;
    retrlm_encoder snap;
    size_t *probe = NULL, span;
    retrlm_result r;
    int ut, g, i, have_snap = 0;
    RETRLM_ASSERT(lm && opt_lm && e && opt_enc && cfg && st);
    if ((r = retrlm__joint_check(lm, e, &c, &ut))) return r;
    if (c.batch > RETRLM__MAX_DPR_BATCH)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: batch %d above %d", c.batch, RETRLM__MAX_DPR_BATCH);
    if (c.query_side)
        for (g = 0; g < opt_enc->n_groups; g++) {
            const float *p = opt_enc->groups[g].params, *d0 = e->side[RETRLM_DOC].params;
            if ((p >= d0 && p < d0 + e->side[RETRLM_DOC].n_params) ||
                (e->proj[RETRLM_DOC] && p == e->proj[RETRLM_DOC]))
                return retrlm__fail(RETRLM_ERR_ARG, "joint: query-side training, but opt_enc holds "
                                    "the document encoder's weights (group %d)", g);
        }
    span = (size_t)c.context_tokens + (size_t)c.continuation_tokens;
    if ((r = retrlm__joint_init(&w, e, lm, c.batch, c.rerank ? c.rerank : c.k + 1,
                                c.continuation_tokens)))
        return r;
    memset(&snap, 0, sizeof snap);
    if (c.refresh_every) {
        if (!(probe = (size_t *)retrlm__alloc((size_t)c.probe + 1, sizeof *probe)) ||
            (r = retrlm_encoder_init(&snap, &e->config)))
            r = r ? r : retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for the probe");
        have_snap = !r;
        // the probe windows: evenly spaced over the stream, the same for every run
        for (i = 0; i < c.probe && !r; i++)
            probe[i] = (size_t)((double)(c.n_tokens - span) * (i + 0.5) / c.probe);
    }
    x.lm = lm, x.opt_lm = opt_lm, x.e = e, x.opt_enc = opt_enc, x.c = &c, x.st = st, x.w = &w, x.ut = ut;
    while (!r && st->step < c.steps) {
        const int64_t s = st->step, T = c.refresh_every;
        retrlm_index fresh;
        retrlm_result rb = RETRLM_OK;
        char why[2][512];
        double ta = 0.0, tb0 = 0.0, tb = 0.0;
        if (!T || s == 0 || s % T || s == st->index_step) {
            r = retrlm__joint_steps(&x, T ? RETRLM__MIN((s / T + 1) * T, c.steps) : c.steps);
            continue;
        }
        // a refresh begins: the snapshot, then the units embedded with it beside the steps
        // s .. s + delay - 1 (none when blocking), and the new index swapped in at s + delay.
        // Either section may run on a thread of its own: its error text is carried back.
        retrlm__encoder_copy(&snap, e);
        why[0][0] = why[1][0] = '\0';
#ifdef RETRLM__OMP
        RETRLM__PRAGMA(omp parallel sections num_threads(2) if (c.refresh_delay > 0 && omp_get_max_threads() > 1))
#endif
        {
#ifdef RETRLM__OMP
            RETRLM__PRAGMA(omp section)
#endif
            {
                if (c.refresh_delay > 0) r = retrlm__joint_steps(&x, RETRLM__MIN(s + c.refresh_delay, c.steps));
                if (r) snprintf(why[0], sizeof why[0], "%s", retrlm_last_error());
                ta = retrlm_time_seconds();
            }
#ifdef RETRLM__OMP
            RETRLM__PRAGMA(omp section)
#endif
            {
                tb0 = retrlm_time_seconds();
                rb = retrlm__datastore_embed_index(c.ds, &snap, c.ds->encoder_tok, c.index_config,
                                                   &fresh, NULL, NULL);
                if (rb) snprintf(why[1], sizeof why[1], "%s", retrlm_last_error());
                tb = retrlm_time_seconds();
            }
        }
        st->refresh_seconds += tb - tb0;
        // training waits from the end of its steps (or the start, when blocking) to the end of
        // the refresh; with one thread the refresh runs after the steps and all of it is waited
        st->stall_seconds += tb > ta ? tb - ta : 0.0;
        if (r) r = retrlm__fail(r, "%s", why[0]);
        if (rb) {
            if (!r) r = retrlm__fail(rb, "joint: refresh at step %lld: %s", (long long)s, why[1]);
            break;
        }
        if (!r) {
            float ov = -1.0f;
            if (c.probe) r = retrlm__joint_overlap(&x, &c.ds->dense, &fresh, probe, c.probe, &ov);
            st->last_overlap = ov;
        }
        if (r) {
            retrlm_index_free(&fresh);
            break;
        }
        retrlm_index_free(&c.ds->dense);
        c.ds->dense = fresh;
        st->index_step = s;
        st->refreshes++;
    }
    if (have_snap) retrlm_encoder_free(&snap);
    RETRLM_FREE(probe);
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// ---- TRIME: the LM trains with its in-batch memory (strategy 4) ------------------------------

// whether position (bi, ti) sees the memory entry at (bj, tj)
static int retrlm__trime_sees(const retrlm_trime_params *p, int bi, int ti, int bj, int tj) {
    if (p->batching == RETRLM_TRIME_LONG) return bj < bi || (bj == bi && tj < ti);
    if (p->batching == RETRLM_TRIME_EXT) return bj != bi || (!p->no_local && tj < ti);
    return bj == bi && tj < ti;
}

RETRLM_API retrlm_result retrlm_model_trime_loss(retrlm_model *m, const retrlm_trime_params *p,
                                                 const int *targets, const int *labels,
                                                 float *loss, float *dkeys, int *count) {
    const int V = m->config.vocab_size, D = m->config.dim, B = m->B, T = m->T, N = B * T;
    const float *K;
    float *logits, *sims, scale;
    int *mem_pos, *mem_tok, *entry_of, M = 0, i;
    retrlm_result r;
    RETRLM_ASSERT(m && p && targets);
    if ((r = retrlm__trime_check(p, "model_trime_loss"))) return r;
    if (!m->logits || m->config.bidirectional)
        return retrlm__fail(RETRLM_ERR_ARG, "model_trime_loss: needs a causal LM's forward with logits");
    if (!labels) labels = targets;
    for (i = 0; i < N; i++)
        if (targets[i] >= V || labels[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_trime_loss: target %d or label %d at %d is "
                                "outside the vocabulary of %d", targets[i], labels[i], i, V);
    K = retrlm_model_ffn_input(m, m->config.n_layers - 1);
    logits = retrlm__logits(m);
    scale = retrlm__trime_scale(p, D);
    // zeroed, though every entry read is written first: gcc -O2 for aarch64 cannot tell
    mem_pos = (int *)retrlm__calloc((size_t)N, 3 * sizeof(int));
    if (!mem_pos) return retrlm__fail(RETRLM_ERR_NOMEM, "model_trime_loss: no memory");
    mem_tok = mem_pos + N;
    entry_of = mem_tok + N;
    for (i = 0; i < N; i++) {
        entry_of[i] = -1;
        if (labels[i] >= 0 && i % T < m->lengths[i / T]) {
            entry_of[i] = M;
            mem_pos[M] = i;
            mem_tok[M++] = labels[i];
        }
    }
    // one float more, zeroed: with no entries gcc would see a 1-byte block read as a float
    sims = (float *)retrlm__calloc((size_t)N * (size_t)M + 1, sizeof(float));
    if (!sims) {
        RETRLM_FREE(mem_pos);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model_trime_loss: no memory for %d x %d similarities",
                            N, M);
    }
    // s_ij for every position i and entry e at j; -inf where i may not see j
    RETRLM__PARALLEL_FOR_STATIC
    for (i = 0; i < N; i++) {
        const float *q = K + (size_t)i * D;
        float *row = sims + (size_t)i * M;
        int e;
        for (e = 0; e < M; e++) {
            const int j = mem_pos[e];
            row[e] = retrlm__trime_sees(p, i / T, i % T, j / T, j % T)
                         ? retrlm__trime_sim(p, scale, q, K + (size_t)j * D, D) : -INFINITY;
        }
    }
    // dlogits and dsims in place
    r = retrlm_trime_loss(logits, N, V, sims, M, mem_tok, targets, loss, logits, sims, count);
    if (!r && dkeys) {
        // d s_ij / d k_i and d k_j: dot scale k_j and scale k_i; L2 -2 scale (k_i - k_j) and
        // -2 scale (k_j - k_i). Position x gathers its query terms (its row) and its key terms
        // (its entry's column), in a fixed order: threads never share a write.
        RETRLM__PARALLEL_FOR_STATIC
        for (i = 0; i < N; i++) {
            const float *kx = K + (size_t)i * D;
            float *dx = dkeys + (size_t)i * D;
            const int ex = entry_of[i];
            int e, j, d, pass;
            for (d = 0; d < D; d++) dx[d] = 0.0f;
            for (pass = 0; pass < 2; pass++) {
                const int n_other = pass ? (ex >= 0 ? N : 0) : M;
                for (e = 0; e < n_other; e++) {
                    // pass 0: i is the query, the other is entry e; pass 1: i is entry ex,
                    // the other the query at position e
                    const float g = pass ? sims[(size_t)e * M + ex] : sims[(size_t)i * M + e];
                    const float *ko;
                    if (g == 0.0f) continue;
                    j = pass ? e : mem_pos[e];
                    ko = K + (size_t)j * D;
                    if (p->sim == RETRLM_TRIME_L2) {
                        const float c = -2.0f * scale * g;
                        RETRLM__SIMD
                        for (d = 0; d < D; d++) dx[d] += c * (kx[d] - ko[d]);
                    } else {
                        const float c = scale * g;
                        RETRLM__SIMD
                        for (d = 0; d < D; d++) dx[d] += c * ko[d];
                    }
                }
            }
        }
    }
    RETRLM_FREE(sims);
    RETRLM_FREE(mem_pos);
    return r;
}

// the end of a step of TRIME's or NPM's trainer: the loss kept (losses may be NULL), the step
// counted, a checkpoint at every `every` steps and at the last, and progress (stage)
static retrlm_result retrlm__step_done(retrlm_model *m, retrlm_adamw *opt, retrlm_lm_train_state *st, float loss,
                                       float *losses, int64_t steps, const char *checkpoint, int every,
                                       retrlm_progress_fn progress, void *user, const char *stage) {
    if (losses) losses[st->step] = loss;
    st->last_loss = loss;
    st->step++;
#ifndef RETRLM_NO_STDIO
    if (checkpoint && (st->step == steps || (every > 0 && st->step % every == 0))) {
        retrlm_result r = retrlm_model_save(m, opt, st, checkpoint);
        if (r) return r;
    }
#else
    (void)m, (void)opt, (void)checkpoint, (void)every;
#endif
    return retrlm__progress(progress, user, stage, (double)st->step, (double)steps);
}

RETRLM_API retrlm_result retrlm_trime_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_trime_train_config *cfg,
                                            retrlm_lm_train_state *st) {
    retrlm_trime_train_config c;
    retrlm_model_grad_in gin;
    retrlm_result r = RETRLM_OK;
    const float **dffn;
    float *dkeys;
    int *inp, *tgt, L;
    size_t t, need;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    L = m->config.n_layers;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.seq_len) c.seq_len = m->config.max_seq_len;
    if ((r = retrlm__trime_check(&c.trime, "trime_train"))) return r;
    if (m->config.bidirectional || m->config.no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: needs a causal LM with logits");
    if (c.batch < 1 || c.batch > m->config.max_batch || c.seq_len < 1 ||
        c.seq_len > m->config.max_seq_len || c.steps < 0 || c.warmup_steps < 0 || !c.train)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: batch %d (1..%d), seq_len %d (1..%d), "
                            "steps %lld and warmup %lld (>= 0), a stream", c.batch,
                            m->config.max_batch, c.seq_len, m->config.max_seq_len,
                            (long long)c.steps, (long long)c.warmup_steps);
    need = c.trime.batching == RETRLM_TRIME_LONG  ? (size_t)c.batch * (size_t)c.seq_len + 1
           : c.trime.batching == RETRLM_TRIME_EXT ? (size_t)c.seq_len + 1
                                                  : (size_t)c.seq_len + 2;
    if (c.n_train < need)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: a stream of %lu tokens; %s batches of %d x "
                            "%d need %lu", (unsigned long)c.n_train,
                            c.trime.batching == RETRLM_TRIME_LONG  ? "long"
                            : c.trime.batching == RETRLM_TRIME_EXT ? "ext"
                                                                   : "local",
                            c.batch, c.seq_len, (unsigned long)need);
    if (c.trime.batching == RETRLM_TRIME_EXT) {
        int64_t e;
        if (!c.batches || c.n_batches < 1 || !(c.cross_sent_ratio >= 0.0f && c.cross_sent_ratio <= 1.0f))
            return retrlm__fail(RETRLM_ERR_ARG, "trime_train: ext batching needs batches (%lld given) "
                                "and a cross_sent_ratio in [0, 1] (%g)", (long long)c.n_batches,
                                (double)c.cross_sent_ratio);
        for (e = 0; e < c.n_batches * c.batch; e++)
            if (c.batches[e] < 0 || (uint64_t)c.batches[e] + (uint64_t)c.seq_len >= (uint64_t)c.n_train)
                return retrlm__fail(RETRLM_ERR_ARG, "trime_train: batch %lld's segment %d starts at "
                                    "%lld: a segment of %d + 1 tokens must lie in the %lu of the "
                                    "stream", (long long)(e / c.batch), (int)(e % c.batch),
                                    (long long)c.batches[e], c.seq_len, (unsigned long)c.n_train);
    }
    for (t = 0; t < c.n_train; t++)
        if (c.train[t] < 0 || c.train[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_train: token %d at %lu is outside the "
                                "vocabulary of %d", c.train[t], (unsigned long)t,
                                m->config.vocab_size);
    inp = (int *)retrlm__alloc((size_t)c.batch * (size_t)c.seq_len, 2 * sizeof(int));
    dkeys = (float *)retrlm__alloc((size_t)c.batch * (size_t)c.seq_len * (size_t)m->config.dim,
                                   sizeof(float));
    dffn = (const float **)retrlm__calloc((size_t)L, sizeof(float *));
    if (!inp || !dkeys || !dffn) {
        RETRLM_FREE(inp);
        RETRLM_FREE(dkeys);
        RETRLM_FREE((void *)dffn);
        return retrlm__fail(RETRLM_ERR_NOMEM, "trime_train: no memory");
    }
    tgt = inp + (size_t)c.batch * c.seq_len;
    dffn[L - 1] = dkeys;
    while (st->step < c.steps && !r) {
        const int B = c.batch, T = c.seq_len;
        int b, i;
        float loss = 0.0f;
        if (c.trime.batching == RETRLM_TRIME_LONG) {
            size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)B * T));
            for (i = 0; i < B * T; i++) {
                inp[i] = c.train[off + (size_t)i];
                tgt[i] = c.train[off + (size_t)i + 1];
            }
        } else if (c.trime.batching == RETRLM_TRIME_EXT) {
            const int64_t *g = c.batches + (size_t)retrlm_rng_below(&st->rng, (uint64_t)c.n_batches) * B;
            for (b = 0; b < B; b++)
                for (i = 0; i < T; i++) {
                    inp[b * T + i] = c.train[(size_t)g[b] + (size_t)i];
                    tgt[b * T + i] = c.train[(size_t)g[b] + (size_t)i + 1];
                }
            c.trime.no_local = retrlm_rng_float(&st->rng) < c.cross_sent_ratio;
        } else
            for (b = 0; b < B; b++) {
                size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)T));
                for (i = 0; i < T; i++) {
                    inp[b * T + i] = c.train[off + (size_t)i];
                    tgt[b * T + i] = c.train[off + (size_t)i + 1];
                }
            }
        if (st->step < c.warmup_steps) { // cross-entropy warm-up
            if ((r = retrlm__lm_step(m, opt, inp, tgt, B, T, NULL, NULL, &loss))) break;
        } else {
            if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) ||
                (r = retrlm_model_trime_loss(m, &c.trime, tgt, NULL, &loss, dkeys, NULL)))
                break;
            retrlm_model_zero_grad(m);
            memset(&gin, 0, sizeof gin);
            gin.dlogits = m->logits;
            gin.dffn_in = dffn;
            if ((r = retrlm_model_backward(m, &gin))) break;
            retrlm_adamw_step(opt);
        }
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                              c.progress_user, "trime");
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(dkeys);
    RETRLM_FREE((void *)dffn);
    return r;
}

// segment s's text for BM25: tok's decoding, or its ids as decimal words
static retrlm_result retrlm__trime_segment_text(const retrlm_tokenizer *tok, const int *ids, int n,
                                                char **buf, size_t *cap, size_t *len) {
    size_t need = (size_t)n * 12 + 1, at = 0;
    int i;
    if (tok) return retrlm__decode_grow(tok, ids, (size_t)n, buf, cap, len);
    if (need > *cap) {
        char *b = (char *)retrlm__realloc(*buf, need, 1);
        if (!b) return retrlm__fail(RETRLM_ERR_NOMEM, "trime_bm25_batches: no memory");
        *buf = b;
        *cap = need;
    }
    for (i = 0; i < n; i++) at += (size_t)snprintf(*buf + at, *cap - at, "%d ", ids[i]);
    *len = at;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_trime_bm25_batches(const retrlm_tokenizer *tok, const int *tokens,
                                                   size_t n, int seq_len, int batch,
                                                   const retrlm_bm25_config *bm25,
                                                   int64_t *offsets, int64_t *n_batches) {
    const int T = seq_len, K = 4 * batch;
    int64_t S, s, t, *ids = NULL, nb = 0;
    char **texts = NULL;
    size_t *lens = NULL, *caps = NULL;
    int *found = NULL, *group = NULL;
    unsigned char *used = NULL;
    retrlm_bm25 bm;
    retrlm_bm25_config bc;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tokens && n_batches);
    memset(&bm, 0, sizeof bm);
    if (T < 1 || batch < 1 || K / 4 != batch)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_bm25_batches: seq_len %d and batch %d must be >= 1",
                            T, batch);
    S = n > 0 ? (int64_t)((n - 1) / (size_t)T) : 0;
    if (S < batch || S > INT32_MAX)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_bm25_batches: %lld segments of %d tokens in a stream "
                            "of %lu; need at least batch = %d (and < 2^31)", (long long)S, T,
                            (unsigned long)n, batch);
    *n_batches = S / batch;
    if (!offsets) return RETRLM_OK;
    texts = (char **)retrlm__calloc((size_t)S, sizeof(char *));
    lens = (size_t *)retrlm__calloc((size_t)S, 2 * sizeof(size_t));
    ids = (int64_t *)retrlm__alloc((size_t)S, ((size_t)K + 1) * sizeof(int64_t));
    found = (int *)retrlm__alloc((size_t)S, sizeof(int) + 1);
    group = (int *)retrlm__alloc((size_t)batch, sizeof(int));
    if (!texts || !lens || !ids || !found || !group) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "trime_bm25_batches: no memory for %lld segments", (long long)S);
        goto done;
    }
    caps = lens + S;
    used = (unsigned char *)(found + S);
    memset(used, 0, (size_t)S);
    for (s = 0; s < S && !r; s++) {
        ids[(size_t)S * K + (size_t)s] = s; // the document ids, after the neighbour table
        r = retrlm__trime_segment_text(tok, tokens + (size_t)s * T, T, &texts[s], &caps[s], &lens[s]);
    }
    bc = retrlm__bm25_passage_config(bm25); // segments: passages of T tokens
    if (r || (r = retrlm_bm25_init(&bm, &bc)) ||
        (r = retrlm_bm25_add_batch(&bm, (int)S, ids + (size_t)S * K, (const char *const *)texts, lens)) ||
        (r = retrlm_bm25_commit(&bm)) ||
        (r = retrlm_bm25_search_batch(&bm, (int)S, (const char *const *)texts, lens, K, 0, ids,
                                      NULL, found)))
        goto done;
    for (s = 0; s < S && nb < *n_batches; s++) {
        int g = 0, q, j;
        if (used[s]) continue;
        used[s] = 1;
        group[g++] = (int)s;
        // the members' unused neighbours, best first, breadth first over the members
        for (q = 0; q < g && g < batch; q++)
            for (j = 0; j < found[group[q]] && g < batch; j++) {
                int64_t x = ids[(size_t)group[q] * K + (size_t)j];
                if (x >= 0 && x < S && !used[x]) {
                    used[x] = 1;
                    group[g++] = (int)x;
                }
            }
        for (t = s + 1; t < S && g < batch; t++)
            if (!used[t]) {
                used[t] = 1;
                group[g++] = (int)t;
            }
        if (g < batch) break; // cannot happen while nb < S / batch; kept as a guard
        for (j = 0; j < batch; j++) offsets[nb * batch + j] = (int64_t)group[j] * T;
        nb++;
    }
done:
    if (texts)
        for (s = 0; s < S; s++) RETRLM_FREE(texts[s]);
    RETRLM_FREE(texts);
    RETRLM_FREE(lens);
    RETRLM_FREE(ids);
    RETRLM_FREE(found);
    RETRLM_FREE(group);
    retrlm_bm25_free(&bm);
    return r;
}

// ---------------------------------------------------------------------------------------------
// NPM

// draws block b's spans (as retrlm_npm_train's header says) into masked (T) and appends them,
// flat positions b T + start, to start/len; returns the spans drawn
static int retrlm__npm_spans(retrlm_rng *rng, const retrlm_npm_train_config *c, int b, int *masked,
                             int *start, int *len) {
    const int T = c->seq_len, want = (int)(c->mask_ratio * (float)T + 0.5f);
    int done = 0, tries, n = 0, i;
    for (tries = 0; done < want && tries < 4 * T; tries++) {
        int l = 1, s0, ok = 1;
        while (l < c->max_span && retrlm_rng_float(rng) >= c->span_p) l++;
        if (l > T) l = T;
        s0 = (int)retrlm_rng_below(rng, (uint64_t)(T - l + 1));
        for (i = s0 > 0 ? s0 - 1 : 0; i < s0 + l + (s0 + l < T) && ok; i++) ok = masked[i] != c->mask_id;
        if (!ok) continue;
        for (i = s0; i < s0 + l; i++) masked[i] = c->mask_id;
        start[n] = b * T + s0, len[n] = l, n++;
        done += l;
    }
    return n;
}

RETRLM_API retrlm_result retrlm_npm_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_npm_train_config *cfg,
                                          retrlm_lm_train_state *st) {
    retrlm_npm_train_config c;
    retrlm_model mem;
    retrlm_model_grad_in gin;
    retrlm_result r = RETRLM_OK;
    int *whole, *masked, *block, *start, *len, *tgt, *tstart, *ones, B, T, D, max_spans;
    float *qs, *qe, *dqs, *dqe, *dh, *dmem, *qt, *dqt, *dmt;
    size_t t, need;
    int64_t e;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.seq_len) c.seq_len = m->config.max_seq_len;
    if (c.mask_ratio == 0.0f) c.mask_ratio = 0.15f;
    if (c.span_p == 0.0f) c.span_p = 0.5f;
    if (!c.max_span) c.max_span = 5;
    if (c.temperature == 0.0f) c.temperature = 1.0f;
    B = c.batch, T = c.seq_len, D = m->config.dim;
    if (!m->config.bidirectional || (c.parametric && m->config.no_logits))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: needs a bidirectional model%s",
                            c.parametric ? " with logits (parametric)" : "");
    if (B < 2 || B > m->config.max_batch || T < 2 || T > m->config.max_seq_len || c.steps < 0 || !c.train ||
        c.mask_id < 0 || c.mask_id >= m->config.vocab_size || !(c.mask_ratio > 0.0f && c.mask_ratio < 1.0f) ||
        !(c.span_p > 0.0f && c.span_p <= 1.0f) || c.max_span < 1 || !(c.temperature > 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: batch %d (2..%d), seq_len %d (2..%d), steps %lld, mask_id "
                            "%d (vocabulary %d), mask_ratio %g and span_p %g in (0, 1), max_span %d, temperature %g",
                            B, m->config.max_batch, T, m->config.max_seq_len, (long long)c.steps, c.mask_id,
                            m->config.vocab_size, (double)c.mask_ratio, (double)c.span_p, c.max_span,
                            (double)c.temperature);
    need = c.batches ? (size_t)T : (size_t)B * (size_t)T;
    if (c.n_train < need || (c.batches && c.n_batches < 1))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: a stream of %lu tokens (%lu needed), %lld batches",
                            (unsigned long)c.n_train, (unsigned long)need, (long long)c.n_batches);
    for (e = 0; c.batches && e < c.n_batches * B; e++)
        if (c.batches[e] < 0 || (uint64_t)c.batches[e] + (uint64_t)T > (uint64_t)c.n_train)
            return retrlm__fail(RETRLM_ERR_ARG, "npm_train: batch %lld's block %d starts at %lld: a block of %d "
                                "tokens must lie in the %lu of the stream", (long long)(e / B), (int)(e % B),
                                (long long)c.batches[e], T, (unsigned long)c.n_train);
    for (t = 0; t < c.n_train; t++)
        if (c.train[t] < 0 || c.train[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "npm_train: token %d at %lu is outside the vocabulary of %d",
                                c.train[t], (unsigned long)t, m->config.vocab_size);
    memset(&mem, 0, sizeof mem);
    if (!c.parametric && (r = retrlm_model_init_view(&mem, m, NULL))) return r; // the whole pass: same weights
    max_spans = B * (T / 2 + 1); // spans never touch: at most one every two tokens
    whole = (int *)retrlm__alloc((size_t)B * T * 6 + (size_t)max_spans * 2, sizeof(int));
    qs = (float *)retrlm__alloc((size_t)max_spans * 4 * D + (size_t)B * T * D * 5, sizeof(float));
    if (!whole || !qs) {
        RETRLM_FREE(whole), RETRLM_FREE(qs), retrlm_model_free(&mem);
        return retrlm__fail(RETRLM_ERR_NOMEM, "npm_train: no memory");
    }
    masked = whole + (size_t)B * T, block = masked + (size_t)B * T;
    start = block + (size_t)B * T, len = start + max_spans, tgt = len + max_spans;
    tstart = tgt + (size_t)B * T, ones = tstart + (size_t)B * T;
    qe = qs + (size_t)max_spans * D, dqs = qe + (size_t)max_spans * D, dqe = dqs + (size_t)max_spans * D;
    dh = dqe + (size_t)max_spans * D, dmem = dh + (size_t)B * T * D;
    qt = dmem + (size_t)B * T * D, dqt = qt + (size_t)B * T * D, dmt = dqt + (size_t)B * T * D;
    for (t = 0; t < (size_t)B * T; t++) block[t] = (int)(t / (size_t)T), ones[t] = 1;
    while (st->step < c.steps && !r) {
        float loss = 0.0f, tloss = 0.0f;
        int b, i, ns = 0, nt = 0, cnt = 0, tcnt = 0, hs = 0;
        size_t off = c.batches ? 0 : (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)B * T + 1));
        const int64_t *g = c.batches ? c.batches + (size_t)retrlm_rng_below(&st->rng, (uint64_t)c.n_batches) * B : NULL;
        for (b = 0; b < B; b++) {
            const int *src = c.train + (g ? (size_t)g[b] : off + (size_t)b * T);
            memcpy(whole + (size_t)b * T, src, (size_t)T * sizeof(int));
            memcpy(masked + (size_t)b * T, src, (size_t)T * sizeof(int));
            ns += retrlm__npm_spans(&st->rng, &c, b, masked + (size_t)b * T, start + ns, len + ns);
        }
        if (c.parametric) { // the baseline: the masked tokens from the vocabulary
            for (i = 0; i < B * T; i++) tgt[i] = masked[i] == c.mask_id ? whole[i] : -1;
            if ((r = retrlm__lm_step(m, opt, masked, tgt, B, T, NULL, NULL, &loss))) break;
            if (c.hits) c.hits[st->step] = 0.0f;
            r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                                  c.progress_user, "npm");
            continue;
        }
        if ((r = retrlm_model_forward(m, masked, B, T, NULL, RETRLM_FORWARD_NO_LOGITS)) ||
            (r = retrlm_model_forward(&mem, whole, B, T, NULL, RETRLM_FORWARD_NO_LOGITS)))
            break;
        for (i = 0; i < ns; i++) {
            memcpy(qs + (size_t)i * D, m->hidden + (size_t)start[i] * D, (size_t)D * sizeof(float));
            memcpy(qe + (size_t)i * D, m->hidden + (size_t)(start[i] + len[i] - 1) * D, (size_t)D * sizeof(float));
        }
        if (ns && (r = retrlm_npm_loss(qs, qe, ns, mem.hidden, B * T, D, c.temperature, whole, block, start, len,
                                       &loss, dqs, dqe, dmem, &cnt, &hs, NULL)))
            break;
        if (!cnt) memset(dmem, 0, (size_t)B * T * D * sizeof(float)); // nothing counted: no span gradient
        memset(dh, 0, (size_t)B * T * D * sizeof(float));
        if (!c.no_token_loss) { // the token term: a one-token span at every masked position
            for (i = 0; i < B * T; i++)
                if (masked[i] == c.mask_id) {
                    memcpy(qt + (size_t)nt * D, m->hidden + (size_t)i * D, (size_t)D * sizeof(float));
                    tstart[nt++] = i;
                }
            // start and end rows are the same for one token: the term is half the loss, its
            // query gradient the start rows' alone, its memory gradient half of both rows'
            if (nt && (r = retrlm_npm_loss(qt, qt, nt, mem.hidden, B * T, D, c.temperature, whole, block, tstart,
                                           ones, &tloss, dqt, NULL, dmt, &tcnt, NULL, NULL)))
                break;
            if (tcnt) {
                size_t k;
                for (i = 0; i < nt; i++) {
                    float *a = dh + (size_t)tstart[i] * D;
                    int d;
                    for (d = 0; d < D; d++) a[d] += dqt[(size_t)i * D + d];
                }
                for (k = 0; k < (size_t)B * T * D; k++) dmem[k] += 0.5f * dmt[k];
                loss += 0.5f * tloss;
            }
        }
        if (cnt || tcnt) { // queries' gradients to their positions of the masked pass, then both backwards
            for (i = 0; i < ns; i++) {
                float *a = dh + (size_t)start[i] * D, *z = dh + (size_t)(start[i] + len[i] - 1) * D;
                int d;
                for (d = 0; d < D; d++) a[d] += dqs[(size_t)i * D + d];
                for (d = 0; d < D; d++) z[d] += dqe[(size_t)i * D + d];
            }
            retrlm_model_zero_grad(m); // the view's gradients are m's
            memset(&gin, 0, sizeof gin);
            gin.dhidden = dh;
            if ((r = retrlm_model_backward(m, &gin))) break;
            gin.dhidden = dmem;
            if ((r = retrlm_model_backward(&mem, &gin))) break;
            retrlm_adamw_step(opt);
        }
        if (c.hits) c.hits[st->step] = cnt ? (float)hs / (float)cnt : 0.0f;
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                              c.progress_user, "npm");
    }
    RETRLM_FREE(whole), RETRLM_FREE(qs);
    retrlm_model_free(&mem);
    return r;
}


// ---- strategy 4, RPT: a model that retrieves its own earlier chunks ---------------------------

RETRLM_API void retrlm_rpt_targets_free(retrlm_rpt_targets *t) {
    if (!t) return;
    RETRLM_FREE(t->span);
    RETRLM_FREE(t->cand);
    RETRLM_FREE(t->gold);
    memset(t, 0, sizeof *t);
}

// chunk u's first candidate chunk (its window's first chunk - 1 ends before the window: j + 1
// < window start, so j <= ws - 2); returns how many there are (j = 0 .. count - 1)
static int retrlm__rpt_eligible(int u, int uw) { return RETRLM__MAX(0, u / uw * uw - 1); }

// whether targets t keep their promises: shape in range, every candidate of chunk u eligible
// (0 <= j < retrlm__rpt_eligible(u)) or -1, every gold finite or -inf, -inf where the candidate
// is -1. err: the result to fail with (ERR_ARG for a caller's struct, ERR_FORMAT for a file)
// whether a shape is one targets may have: chunk 2..65536, windows of seq_len tokens (a multiple
// of the chunk), at most 65536 chunks a span, 1..U candidates, 1.. spans whose entries fit in memory
static int retrlm__rpt_shape_ok(int64_t chunk, int64_t windows, int64_t seq_len, int64_t cands, int64_t n_spans) {
    return chunk >= 2 && chunk <= 65536 && windows >= 1 && windows <= 65536 && seq_len >= chunk &&
           seq_len <= 65536 && seq_len % chunk == 0 && windows * (seq_len / chunk) <= 65536 && cands >= 1 &&
           cands <= windows * (seq_len / chunk) && n_spans >= 1 &&
           (uint64_t)n_spans <= (uint64_t)SIZE_MAX / 8 / (uint64_t)(windows * (seq_len / chunk) * cands);
}

static retrlm_result retrlm__rpt_targets_valid(const retrlm_rpt_targets *t, retrlm_result err, const char *who) {
    int64_t U, C, s, u, i;
    if (!t->span || !t->cand || !t->gold ||
        !retrlm__rpt_shape_ok(t->chunk, t->windows, t->seq_len, t->cands, t->n_spans))
        return retrlm__fail(err, "%s: targets of chunk %d (2..65536), %d windows of %d tokens (a multiple of "
                            "the chunk, at most 65536 chunks a span), %d candidates (1..chunks a span), %lld "
                            "spans", who, t->chunk, t->windows, t->seq_len, t->cands, (long long)t->n_spans);
    U = (int64_t)t->windows * t->seq_len / t->chunk;
    C = t->cands;
    for (s = 0; s < t->n_spans; s++) {
        if (t->span[s] < 0)
            return retrlm__fail(err, "%s: span %lld starts at %lld", who, (long long)s, (long long)t->span[s]);
        for (u = 0; u < U; u++)
            for (i = 0; i < C; i++) {
                const size_t at = ((size_t)s * (size_t)U + (size_t)u) * (size_t)C + (size_t)i;
                const int j = t->cand[at];
                const float g = t->gold[at];
                if (j < -1 || j >= retrlm__rpt_eligible((int)u, t->seq_len / t->chunk))
                    return retrlm__fail(err, "%s: span %lld chunk %lld's candidate %d is not an earlier "
                                        "window's chunk with its continuation", who, (long long)s,
                                        (long long)u, j);
                if (g != g || g == INFINITY || (j < 0 && g != -INFINITY))
                    return retrlm__fail(err, "%s: span %lld chunk %lld's gold %g (finite, or -inf; -inf "
                                        "without a candidate)", who, (long long)s, (long long)u, (double)g);
            }
    }
    return RETRLM_OK;
}

RETRLM_API uint32_t retrlm_rpt_stream_crc(const int *tokens, size_t n) {
    unsigned char buf[1024];
    uint32_t crc = 0;
    size_t i = 0, at;
    RETRLM_ASSERT(tokens || !n);
    while (i < n) {
        for (at = 0; at < sizeof buf && i < n; at += 4, i++) {
            const uint32_t v = (uint32_t)tokens[i];
            buf[at] = (unsigned char)v, buf[at + 1] = (unsigned char)(v >> 8);
            buf[at + 2] = (unsigned char)(v >> 16), buf[at + 3] = (unsigned char)(v >> 24);
        }
        crc = retrlm_crc32(crc, buf, at);
    }
    return crc;
}

static retrlm_result retrlm__rpt_targets_writer(const retrlm_rpt_targets *t, retrlm_writer *w) {
    int32_t shape[4];
    size_t n;
    retrlm_result r;
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_targets_save"))) return r;
    n = (size_t)t->n_spans * (size_t)(t->windows * (t->seq_len / t->chunk)) * (size_t)t->cands;
    shape[0] = t->chunk, shape[1] = t->windows, shape[2] = t->seq_len, shape[3] = t->cands;
    if ((r = retrlm_writer_init(w, "rpt_targets")) ||
        (r = retrlm_writer_add_copy(w, "shape", RETRLM_DTYPE_I32, shape, 4)) ||
        (r = retrlm_writer_add_copy(w, "stream_crc", RETRLM_DTYPE_U32, &t->stream_crc, 1)) ||
        (r = retrlm_writer_add(w, "spans", RETRLM_DTYPE_I64, t->span, (size_t)t->n_spans)) ||
        (r = retrlm_writer_add(w, "cand", RETRLM_DTYPE_I32, t->cand, n)))
        return r;
    return retrlm_writer_add(w, "gold", RETRLM_DTYPE_F32, t->gold, n);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_rpt_targets_save(const retrlm_rpt_targets *t, const char *path) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(t && path);
    memset(&w, 0, sizeof w);
    r = retrlm__rpt_targets_writer(t, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}
#endif

RETRLM_API retrlm_result retrlm_rpt_targets_save_memory(const retrlm_rpt_targets *t, void *buf, size_t cap,
                                                        size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(t && size);
    memset(&w, 0, sizeof w);
    r = retrlm__rpt_targets_writer(t, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// the targets of an opened file (closed here), copied out and checked
static retrlm_result retrlm__rpt_targets_from_reader(retrlm_rpt_targets *t, retrlm_reader *rd, retrlm_result r) {
    int32_t shape[4];
    size_t n_spans = 0, n = 0, U;
    memset(t, 0, sizeof *t);
    if (!r) r = retrlm_reader_read(rd, "shape", RETRLM_DTYPE_I32, shape, 4);
    if (!r) r = retrlm_reader_get(rd, "spans", RETRLM_DTYPE_I64, NULL, &n_spans);
    // n_spans <= the file's size / 8: an int64_t on any host
    if (!r && !retrlm__rpt_shape_ok(shape[0], shape[1], shape[2], shape[3], (int64_t)n_spans))
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: shape chunk %d, %d windows of %d tokens, %d candidates, %lu "
                         "spans is out of range", rd->source_, shape[0], shape[1], shape[2], shape[3],
                         (unsigned long)n_spans);
    if (!r) {
        U = (size_t)shape[1] * (size_t)(shape[2] / shape[0]);
        n = n_spans * U * (size_t)shape[3];
        t->span = (int64_t *)retrlm__alloc(n_spans, sizeof(int64_t));
        t->cand = (int *)retrlm__alloc(n, sizeof(int));
        t->gold = (float *)retrlm__alloc(n, sizeof(float));
        if (!t->span || !t->cand || !t->gold) r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_load: no memory");
    }
    if (!r) r = retrlm_reader_read(rd, "spans", RETRLM_DTYPE_I64, t->span, n_spans);
    if (!r) r = retrlm_reader_read(rd, "cand", RETRLM_DTYPE_I32, t->cand, n);
    if (!r) r = retrlm_reader_read(rd, "gold", RETRLM_DTYPE_F32, t->gold, n);
    if (!r) r = retrlm_reader_read(rd, "stream_crc", RETRLM_DTYPE_U32, &t->stream_crc, 1);
    if (!r) {
        t->chunk = shape[0], t->windows = shape[1], t->seq_len = shape[2], t->cands = shape[3];
        t->n_spans = (int64_t)n_spans;
        r = retrlm__rpt_targets_valid(t, RETRLM_ERR_FORMAT, rd->source_);
    }
    retrlm_reader_close(rd);
    if (r) retrlm_rpt_targets_free(t);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_rpt_targets_load(retrlm_rpt_targets *t, const char *path) {
    retrlm_reader rd;
    RETRLM_ASSERT(t && path);
    return retrlm__rpt_targets_from_reader(t, &rd, retrlm_reader_open(&rd, path, "rpt_targets", 0));
}
#endif

RETRLM_API retrlm_result retrlm_rpt_targets_load_memory(retrlm_rpt_targets *t, const void *data, size_t size) {
    retrlm_reader rd;
    RETRLM_ASSERT(t && data);
    return retrlm__rpt_targets_from_reader(t, &rd, retrlm_reader_open_memory(&rd, data, size, "rpt_targets", 0));
}

// the candidates of chunk u of the span at off: every eligible j, or the C with the largest
// share of u's bigrams (ties: the nearer first); writes cand (C), returns how many
static int retrlm__rpt_cands(const int *tokens, size_t off, int mc, int uw, int u, int C,
                             int *cand, float *ov) {
    const int ne = retrlm__rpt_eligible(u, uw);
    int j, i, n = 0;
    for (i = 0; i < C; i++) cand[i] = -1;
    if (ne <= C) {
        for (j = 0; j < ne; j++) cand[n++] = j;
        return n;
    }
    for (j = ne - 1; j >= 0; j--) { // nearer first, so that a tie keeps the nearer
        float o = retrlm_retro_overlap(tokens + off + (size_t)u * mc, mc,
                                       tokens + off + (size_t)j * mc, 2 * mc);
        int at = n < C ? n : C;
        if (n >= C && !(o > ov[C - 1])) continue;
        while (at > 0 && o > ov[at - 1]) { // insertion, best first
            if (at < C) { ov[at] = ov[at - 1]; cand[at] = cand[at - 1]; }
            at--;
        }
        ov[at] = o;
        cand[at] = j;
        if (n < C) n++;
    }
    return n;
}

// summed log-probability of the last `last` tokens of each row (nr rows of T, lengths lens) from
// the last forward's final hidden states (run without logits): only those positions' logits are
// computed, into work (nr * last, V + D)
static retrlm_result retrlm__rpt_row_ll(const retrlm_model *ref, const int *rows, const int *lens,
                                        int nr, int T, int last, float *work, double *ll) {
    const int V = ref->config.vocab_size, D = ref->config.dim;
    const float *wout = ref->config.untied ? ref->param[RETRLM_T_LM_HEAD] : ref->param[RETRLM_T_EMBED];
    float *h = work + (size_t)nr * last * V;
    int b, t;
    retrlm_result r;
    for (b = 0; b < nr; b++)
        for (t = 0; t < last; t++)
            memcpy(h + ((size_t)b * last + t) * D,
                   ref->hidden + ((size_t)b * T + lens[b] - last - 1 + t) * D, (size_t)D * sizeof(float));
    if ((r = retrlm_matmul(work, h, wout, NULL, nr * last, V, D, 0))) return r;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (b = 0; b < nr; b++) {
        double s = 0.0;
        int i;
        const int *row = rows + (size_t)b * T + lens[b] - last;
        for (i = 0; i < last; i++) {
            const float *lg = work + ((size_t)b * last + i) * V;
            s += (double)lg[row[i]] - (double)retrlm_logsumexp(lg, V);
        }
        ll[b] = s;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_rpt_targets_build(retrlm_rpt_targets *t, retrlm_model *ref,
                                                  const int *tokens, size_t n,
                                                  const int64_t *doc, int64_t n_docs,
                                                  const retrlm_rpt_targets_config *cfg) {
    retrlm_rpt_targets_config c;
    int U = 0, uw, C, R, TR, mc, *rows = NULL, *lens = NULL, *job = NULL;
    size_t span_len, cap = 0, i;
    double *ll = NULL;
    float *ov = NULL, *work = NULL;
    int64_t d, s;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(t && tokens && doc && cfg);
    memset(t, 0, sizeof *t);
    c = *cfg;
    mc = c.chunk;
    if (!c.windows) c.windows = 4;
    if (!c.seq_len) c.seq_len = 4 * mc;
    if (!c.cands) c.cands = 8;
    span_len = (size_t)c.windows * (size_t)c.seq_len;
    if (!c.stride) c.stride = (int)RETRLM__MIN(span_len, (size_t)INT32_MAX);
    if (mc < 2 || mc > 65536 || c.windows < 1 || c.windows > 65536 || c.seq_len < mc ||
        c.seq_len % mc || c.seq_len > 65536 || span_len / (size_t)mc > 65536 || c.cands < 1 ||
        c.stride < 1 || n_docs < 1 || doc[0] != 0)
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: chunk %d (>= 2), windows %d, "
                            "seq_len %d (a multiple of the chunk), at most 65536 chunks a span, "
                            "cands %d, stride %d, %lld documents (the first at 0)", mc, c.windows,
                            c.seq_len, c.cands, c.stride, (long long)n_docs);
    if (ref && (ref->config.bidirectional || ref->config.max_seq_len < 4 * mc ||
                retrlm_model_is_q8(ref)))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: the reference must be a causal "
                            "f32 LM with max_seq_len >= 4 chunks (%d)", 4 * mc);
    for (d = 0; d < n_docs; d++)
        if (doc[d] < 0 || (size_t)doc[d] > n || (d && doc[d] < doc[d - 1]))
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: document %lld starts at %lld "
                                "(ascending, within %lu tokens)", (long long)d,
                                (long long)doc[d], (unsigned long)n);
    for (i = 0; i < n && ref; i++)
        if (tokens[i] < 0 || tokens[i] >= ref->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: token %d at %lu is outside the "
                                "reference's vocabulary", tokens[i], (unsigned long)i);
    for (d = 0; d < n_docs; d++) { // the spans
        size_t e = d + 1 < n_docs ? (size_t)doc[d + 1] : n, o;
        for (o = (size_t)doc[d]; o + span_len + 1 <= e; o += (size_t)c.stride) {
            if ((size_t)t->n_spans == cap) {
                int64_t *ns;
                cap = cap ? 2 * cap : 64;
                ns = (int64_t *)retrlm__realloc(t->span, cap, sizeof(int64_t));
                if (!ns) { r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_build: no memory"); goto done; }
                t->span = ns;
            }
            t->span[t->n_spans++] = (int64_t)o;
        }
    }
    if (!t->n_spans) {
        r = retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: no document holds a span of %lu "
                         "tokens", (unsigned long)(span_len + 1));
        goto done;
    }
    t->chunk = mc;
    t->stream_crc = retrlm_rpt_stream_crc(tokens, n);
    t->windows = c.windows;
    t->seq_len = c.seq_len;
    U = (int)(span_len / (size_t)mc);
    uw = c.seq_len / mc;
    C = t->cands = RETRLM__MIN(c.cands, U);
    R = ref ? ref->config.max_batch : 1;
    TR = 4 * mc;
    t->cand = (int *)retrlm__alloc((size_t)t->n_spans * U * C, sizeof(int));
    t->gold = (float *)retrlm__alloc((size_t)t->n_spans * U * C, sizeof(float));
    rows = (int *)retrlm__alloc((size_t)R * TR + R + 2 * (size_t)U * (C + 1), sizeof(int));
    ll = (double *)retrlm__alloc((size_t)U * (C + 1), sizeof(double));
    ov = (float *)retrlm__alloc((size_t)C, sizeof(float));
    if (ref)
        work = (float *)retrlm__alloc((size_t)R * mc * (size_t)(ref->config.vocab_size + ref->config.dim),
                                      sizeof(float));
    if (!t->cand || !t->gold || !rows || !ll || !ov || (ref && !work)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_build: no memory for %lld spans",
                         (long long)t->n_spans);
        goto done;
    }
    lens = rows + (size_t)R * TR;
    job = lens + R; // (jobs, 2): chunk u and candidate slot (-1: u's baseline) of each row
    for (s = 0; s < t->n_spans && !r; s++) {
        const size_t off = (size_t)t->span[s];
        int *cand = t->cand + (size_t)s * U * C;
        float *gold = t->gold + (size_t)s * U * C;
        int u, k, nj = 0, j0;
        for (u = 0; u < U; u++) {
            int nc = 0;
            if (u + 1 < U) nc = retrlm__rpt_cands(tokens, off, mc, uw, u, C, cand + (size_t)u * C, ov);
            else for (k = 0; k < C; k++) cand[(size_t)u * C + k] = -1;
            for (k = 0; k < C; k++) gold[(size_t)u * C + k] = -INFINITY;
            for (k = nc ? -1 : 0; k < nc && ref; k++) {
                job[2 * nj] = u;
                job[2 * nj + 1] = k;
                nj++;
            }
        }
        // rows [chunk j, chunk j + 1, chunk u, chunk u + 1], or [chunk u, chunk u + 1]
        for (j0 = 0; j0 < nj && !r; j0 += R) {
            int nr = RETRLM__MIN(R, nj - j0), b;
            for (b = 0; b < nr; b++) {
                int *row = rows + (size_t)b * TR, len = 0, q;
                u = job[2 * (j0 + b)];
                k = job[2 * (j0 + b) + 1];
                if (k >= 0) {
                    memcpy(row, tokens + off + (size_t)cand[(size_t)u * C + k] * mc,
                           (size_t)2 * mc * sizeof(int));
                    len = 2 * mc;
                }
                memcpy(row + len, tokens + off + (size_t)u * mc, (size_t)2 * mc * sizeof(int));
                len += 2 * mc;
                for (q = len; q < TR; q++) row[q] = 0;
                lens[b] = len;
            }
            if ((r = retrlm_model_forward(ref, rows, nr, TR, lens, RETRLM_FORWARD_NO_LOGITS)) ||
                (r = retrlm__rpt_row_ll(ref, rows, lens, nr, TR, mc, work, ll + j0)))
                break;
        }
        for (k = 0; k < nj && !r; k++) // a baseline precedes its chunk's candidates
            if (job[2 * k + 1] >= 0) {
                int b0 = k - 1 - job[2 * k + 1];
                gold[(size_t)job[2 * k] * C + job[2 * k + 1]] = (float)(ll[k] - ll[b0]);
            }
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "rpt targets", (double)(s + 1),
                                     (double)t->n_spans);
    }
done:
    RETRLM_FREE(rows);
    RETRLM_FREE(ll);
    RETRLM_FREE(ov);
    RETRLM_FREE(work);
    if (r) retrlm_rpt_targets_free(t);
    return r;
}

// the first K of chunk u's candidates (C) by key, best first (ties: the earlier slot), those
// with key > floor (NULL: any); writes their slots into pick (K), -1 past them; returns how many
static int retrlm__rpt_pick(const int *cand, const float *key, int C, int K, const float *floor,
                            int *pick) {
    int n = 0, i, c;
    for (i = 0; i < K; i++) {
        int best = -1;
        for (c = 0; c < C; c++) {
            int used = 0, p;
            if (cand[c] < 0 || (floor && !(key[c] > *floor))) continue;
            for (p = 0; p < n; p++) used |= pick[p] == c;
            if (!used && (best < 0 || key[c] > key[best])) best = c;
        }
        if (best < 0) break;
        pick[n++] = best;
    }
    for (i = n; i < K; i++) pick[i] = -1;
    return n;
}

// neighbour slots (K, r) of one chunk from its picked candidates: chunk j and what follows it
static void retrlm__rpt_neighbours(const int *tokens, size_t off, int mc, const int *cand,
                                   const int *pick, int K, int r, int *nb) {
    int i, t;
    for (i = 0; i < K; i++) {
        int *o = nb + (size_t)i * r;
        if (pick[i] < 0) { for (t = 0; t < r; t++) o[t] = -1; continue; }
        memcpy(o, tokens + off + (size_t)cand[pick[i]] * mc, (size_t)r * sizeof(int));
    }
}

// scores (U, C) of each chunk's candidates: q_u . k_j / sqrt(rpt_dim); -inf where none
static void retrlm__rpt_scores(const float *q, const float *k, const int *cand, int U, int C,
                               int dr, float *sc) {
    const float inv = 1.0f / sqrtf((float)dr);
    int u, c;
    for (u = 0; u < U; u++)
        for (c = 0; c < C; c++) {
            int j = cand[(size_t)u * C + c];
            sc[(size_t)u * C + c] = j < 0 ? -INFINITY
                                          : retrlm_dot(q + (size_t)u * dr, k + (size_t)j * dr, dr) * inv;
        }
}

// the shapes of targets against the model and the stream
static retrlm_result retrlm__rpt_check(const retrlm_model *m, const int *tokens, size_t n,
                                       const retrlm_rpt_targets *t, int need_rpt, const char *who) {
    const retrlm_model_config *c = &m->config;
    int64_t s;
    retrlm_result r;
    if (!tokens || !t || !t->n_spans || !t->span || !t->cand || !t->gold)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: no targets (retrlm_rpt_targets_build)", who);
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, who))) return r;
    if (need_rpt && (!c->rpt_dim || c->retro_chunk != t->chunk || 2 * t->chunk < c->retro_len))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the model needs an RPT retriever (rpt_dim), chunk "
                            "%d as the targets' and neighbours of at most 2 chunks (retro_len %d)",
                            who, t->chunk, c->retro_len);
    if (t->windows > c->max_batch || t->seq_len > c->max_seq_len || c->bidirectional ||
        c->no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: spans of %d x %d tokens need a causal LM with "
                            "logits and max_batch x max_seq_len >= them (%d x %d)", who,
                            t->windows, t->seq_len, c->max_batch, c->max_seq_len);
    for (s = 0; s < t->n_spans; s++)
        if (t->span[s] < 0 || (size_t)t->span[s] + (size_t)t->windows * t->seq_len + 1 > n)
            return retrlm__fail(RETRLM_ERR_ARG, "%s: span %lld at %lld runs past the stream's %lu "
                                "tokens", who, (long long)s, (long long)t->span[s],
                                (unsigned long)n);
    if (t->stream_crc && t->stream_crc != retrlm_rpt_stream_crc(tokens, n))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the targets were built on another stream of tokens", who);
    return RETRLM_OK;
}

// one span's inputs and targets: window b = tokens[off + bT, off + bT + T)
static void retrlm__rpt_span(const int *tokens, size_t off, int B, int T, int *inp, int *tgt) {
    int i;
    for (i = 0; i < B * T; i++) {
        inp[i] = tokens[off + (size_t)i];
        tgt[i] = tokens[off + (size_t)i + 1];
    }
}

RETRLM_API retrlm_result retrlm_rpt_loss(const float *q, const float *k, int U, int dr,
                                         const int *cand, const float *gold, int C, float margin,
                                         float threshold, float aux_scale, float *scores,
                                         float *loss, float *dq, float *dk) {
    float *sc, *ps, *pg, *dsc, rank = 0.0f;
    const float inv = aux_scale / sqrtf((float)dr);
    int u, i, nq = 0, qi = 0;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(q && k && cand && gold);
    if (U < 1 || dr < 1 || C < 1 || !(aux_scale >= 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_loss: %d chunks, dim %d, %d candidates (all >= "
                            "1), aux_scale %g (>= 0)", U, dr, C, (double)aux_scale);
    for (i = 0; i < U * C; i++)
        if (cand[i] >= U || cand[i] < -1)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_loss: candidate %d of slot %d is outside the "
                                "span's %d chunks", cand[i], i, U);
    sc = (float *)retrlm__alloc((size_t)4 * U * C, sizeof(float));
    if (!sc) return retrlm__fail(RETRLM_ERR_NOMEM, "rpt_loss: no memory");
    ps = sc + (size_t)U * C;
    pg = ps + (size_t)U * C;
    dsc = pg + (size_t)U * C;
    retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
    for (u = 0; u < U; u++) { // the chunks with a gold row, packed
        if (gold[(size_t)u * C] == -INFINITY) continue;
        memcpy(pg + (size_t)nq * C, gold + (size_t)u * C, (size_t)C * sizeof(float));
        memcpy(ps + (size_t)nq * C, sc + (size_t)u * C, (size_t)C * sizeof(float));
        nq++;
    }
    if (dq) memset(dq, 0, (size_t)U * dr * sizeof(float));
    if (dk) memset(dk, 0, (size_t)U * dr * sizeof(float));
    if (nq) r = retrlm_rank_loss(ps, pg, nq, C, margin, threshold, &rank, dsc, NULL);
    for (u = 0; u < U && nq && !r; u++) { // s_uj = q_u . k_j / sqrt(dr)
        if (gold[(size_t)u * C] == -INFINITY) continue;
        for (i = 0; i < C; i++) {
            int j = cand[(size_t)u * C + i];
            float g = dsc[(size_t)qi * C + i] * inv;
            if (j < 0 || g == 0.0f) continue;
            if (dq) retrlm_axpy(dq + (size_t)u * dr, g, k + (size_t)j * dr, dr);
            if (dk) retrlm_axpy(dk + (size_t)j * dr, g, q + (size_t)u * dr, dr);
        }
        qi++;
    }
    if (!r && scores) memcpy(scores, sc, (size_t)U * C * sizeof(float));
    if (!r && loss) *loss = aux_scale * rank;
    RETRLM_FREE(sc);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_rpt_train_config *cfg,
                                          retrlm_lm_train_state *st) {
    retrlm_rpt_train_config c;
    const retrlm_rpt_targets *tg;
    int B, T, U, C, K, R, dr, D, mc, *inp = NULL, *tgt, *nb, *pick;
    float *q = NULL, *k, *dq, *dk, *sc, *dffn;
    const float **dlist = NULL;
    retrlm_result r;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    tg = c.targets;
    if ((r = retrlm__rpt_check(m, c.train, c.n_train, tg, 1, "rpt_train"))) return r;
    if (c.aux_scale == 0.0f) c.aux_scale = 1.0f;
    if (c.margin == 0.0f) c.margin = 1.0f;
    if (c.max_margin == 0.0f) c.max_margin = c.margin;
    if (c.steps < 0 || !(c.aux_scale >= 0.0f) || !(c.margin >= 0.0f) || !(c.max_margin >= 0.0f) ||
        !(c.threshold >= 0.0f) || !(c.gold_share >= 0.0f && c.gold_share <= 1.0f) ||
        c.gold_steps < 0 || c.aux_scale > 1e6f || c.max_margin > 1e6f || c.threshold > 511.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_train: steps %lld, aux_scale %g, margins %g .. "
                            "%g, threshold %g (0..511), gold_share %g (0..1), gold_steps %lld",
                            (long long)c.steps, (double)c.aux_scale, (double)c.margin,
                            (double)c.max_margin, (double)c.threshold, (double)c.gold_share,
                            (long long)c.gold_steps);
    B = tg->windows;
    T = tg->seq_len;
    mc = tg->chunk;
    U = B * T / mc;
    C = tg->cands;
    K = m->config.retro_k;
    R = m->config.retro_len;
    dr = m->config.rpt_dim;
    D = m->config.dim;
    inp = (int *)retrlm__alloc((size_t)2 * B * T + (size_t)U * K * R + (size_t)U * K, sizeof(int));
    q = (float *)retrlm__alloc((size_t)4 * U * dr + (size_t)U * C + (size_t)B * T * D,
                               sizeof(float));
    dlist = (const float **)retrlm__calloc((size_t)m->config.n_layers, sizeof(float *));
    if (!inp || !q || !dlist) {
        RETRLM_FREE(inp);
        RETRLM_FREE(q);
        RETRLM_FREE(dlist);
        return retrlm__fail(RETRLM_ERR_NOMEM, "rpt_train: no memory for a span");
    }
    tgt = inp + (size_t)B * T;
    nb = tgt + (size_t)B * T;
    pick = nb + (size_t)U * K * R;
    k = q + (size_t)U * dr;
    dq = k + (size_t)U * dr;
    dk = dq + (size_t)U * dr;
    sc = dk + (size_t)U * dr;
    dffn = sc + (size_t)U * C;
    dlist[m->config.rpt_layer - 1] = dffn;
    while (st->step < c.steps && !r) {
        const int64_t s = (int64_t)retrlm_rng_below(&st->rng, (uint64_t)tg->n_spans);
        const size_t off = (size_t)tg->span[s];
        const int *cand = tg->cand + (size_t)s * U * C;
        const float *gold = tg->gold + (size_t)s * U * C;
        const float frac = c.steps > 1 ? (float)st->step / (float)(c.steps - 1) : 0.0f;
        const float margin = c.margin + (c.max_margin - c.margin) * frac;
        const float p_gold = st->step < c.gold_steps
                                 ? c.gold_share * (1.0f - (float)st->step / (float)c.gold_steps)
                                 : 0.0f;
        float loss = 0.0f, rank = 0.0f;
        int u;
        retrlm_model_grad_in gin;
        retrlm__rpt_span(c.train, off, B, T, inp, tgt);
        if ((r = retrlm_model_rpt_embed(m, inp, B, T, q, k))) break;
        retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
        for (u = 0; u < U; u++) {
            const int use_gold = p_gold > 0.0f && retrlm_rng_float(&st->rng) < p_gold;
            int *pk = pick + (size_t)u * K;
            if (use_gold) retrlm__rpt_pick(cand + (size_t)u * C, gold + (size_t)u * C, C, K,
                                           &c.threshold, pk);
            else retrlm__rpt_pick(cand + (size_t)u * C, sc + (size_t)u * C, C, K, NULL, pk);
            retrlm__rpt_neighbours(c.train, off, mc, cand + (size_t)u * C, pk, K, R,
                                   nb + (size_t)u * K * R);
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nb, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            break;
        if ((r = retrlm_rpt_loss(q, k, U, dr, cand, gold, C, margin, c.threshold, c.aux_scale,
                                 NULL, &rank, dq, dk)))
            break;
        retrlm_model_zero_grad(m);
        if ((r = retrlm_model_rpt_embed_backward(m, dq, dk, dffn))) break;
        memset(&gin, 0, sizeof gin);
        gin.dlogits = m->logits;
        gin.dffn_in = dlist;
        if ((r = retrlm_model_backward(m, &gin))) break;
        retrlm_adamw_step(opt);
        if (c.rank_losses) c.rank_losses[st->step] = rank;
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint,
                              c.checkpoint_every, c.progress, c.progress_user, "rpt");
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(q);
    RETRLM_FREE(dlist);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_evaluate(retrlm_model *m, const int *tokens, size_t n,
                                             const retrlm_rpt_targets *tg, retrlm_rpt_pick pick,
                                             const float *scores, retrlm_rpt_eval *out) {
    int B, T, U, C, K, R, dr, mc, *inp = NULL, *tgt, *nb = NULL, *pk;
    float *q = NULL, *k = NULL, *sc = NULL;
    const float zero = 0.0f;
    int64_t s;
    double first = 0.0, best = 0.0, hit = 0.0;
    retrlm_result r;
    RETRLM_ASSERT(m && out);
    memset(out, 0, sizeof *out);
    if ((int)pick < RETRLM_RPT_OWN || (int)pick > RETRLM_RPT_SCORES || (pick == RETRLM_RPT_SCORES && !scores))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_evaluate: pick %d (SCORES needs scores)", (int)pick);
    if ((r = retrlm__rpt_check(m, tokens, n, tg, pick == RETRLM_RPT_OWN, "rpt_evaluate"))) return r;
    if (pick != RETRLM_RPT_NONE && (!m->config.retro_chunk || m->config.retro_chunk != tg->chunk ||
                                    2 * tg->chunk < m->config.retro_len))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_evaluate: neighbours need a RETRO model of chunk "
                            "%d reading at most 2 chunks", tg->chunk);
    B = tg->windows;
    T = tg->seq_len;
    mc = tg->chunk;
    U = B * T / mc;
    C = tg->cands;
    K = pick == RETRLM_RPT_NONE ? 1 : m->config.retro_k;
    R = pick == RETRLM_RPT_NONE ? 1 : m->config.retro_len;
    dr = m->config.rpt_dim;
    inp = (int *)retrlm__alloc((size_t)2 * B * T + (size_t)U * K, sizeof(int));
    if (pick != RETRLM_RPT_NONE) nb = (int *)retrlm__alloc((size_t)U * K * R, sizeof(int));
    if (pick == RETRLM_RPT_OWN) q = (float *)retrlm__alloc((size_t)2 * U * dr, sizeof(float));
    sc = (float *)retrlm__alloc((size_t)U * C, sizeof(float));
    if (!inp || !sc || (pick != RETRLM_RPT_NONE && !nb) || (pick == RETRLM_RPT_OWN && !q)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_evaluate: no memory for a span");
        goto done;
    }
    tgt = inp + (size_t)B * T;
    pk = tgt + (size_t)B * T;
    if (q) k = q + (size_t)U * dr;
    for (s = 0; s < tg->n_spans && !r; s++) {
        const size_t off = (size_t)tg->span[s];
        const int *cand = tg->cand + (size_t)s * U * C;
        const float *gold = tg->gold + (size_t)s * U * C;
        int u, i;
        retrlm__rpt_span(tokens, off, B, T, inp, tgt);
        if (pick == RETRLM_RPT_OWN) {
            if ((r = retrlm_model_rpt_embed(m, inp, B, T, q, k))) break;
            retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
        } else if (pick == RETRLM_RPT_SCORES) {
            for (i = 0; i < U * C; i++)
                sc[i] = cand[i] < 0 ? -INFINITY : scores[(size_t)s * U * C + (size_t)i];
        }
        for (u = 0; u < U; u++) {
            const int *cu = cand + (size_t)u * C;
            const float *gu = gold + (size_t)u * C;
            int *p = pk + (size_t)u * K, gbest = 0;
            if (pick == RETRLM_RPT_NONE) continue;
            if (pick == RETRLM_RPT_GOLD) retrlm__rpt_pick(cu, gu, C, K, &zero, p);
            else retrlm__rpt_pick(cu, sc + (size_t)u * C, C, K, NULL, p);
            retrlm__rpt_neighbours(tokens, off, mc, cu, p, K, R, nb + (size_t)u * K * R);
            if (gu[0] == -INFINITY) continue;
            for (i = 1; i < C; i++) if (cu[i] >= 0 && gu[i] > gu[gbest]) gbest = i;
            out->queries++;
            best += gu[gbest];
            if (pick == RETRLM_RPT_GOLD && p[0] < 0) { // no candidate helps: the oracle reads none
                hit += 1.0;
                continue;
            }
            first += gu[p[0]];
            hit += p[0] == gbest;
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nb, 0))) break;
        out->nats += retrlm_model_nll(m, tgt, NULL);
        out->tokens += (int64_t)B * T;
    }
    if (!r && out->queries) {
        out->first_gold = first / (double)out->queries;
        out->best_gold = best / (double)out->queries;
        out->first_is_best = hit / (double)out->queries;
    }
done:
    RETRLM_FREE(inp);
    RETRLM_FREE(nb);
    RETRLM_FREE(q);
    RETRLM_FREE(sc);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_targets_bytes(const retrlm_tokenizer *tok, const int *tokens, size_t n,
                                                  const retrlm_rpt_targets *t, uint64_t *bytes) {
    const size_t len = (size_t)t->windows * (size_t)t->seq_len;
    int64_t s;
    retrlm_result r;
    RETRLM_ASSERT(tok && tokens && t && bytes);
    *bytes = 0;
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_targets_bytes"))) return r;
    for (s = 0; s < t->n_spans; s++) {
        size_t b;
        if ((size_t)t->span[s] + len + 1 > n)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_bytes: span %lld runs past the stream's %lu tokens",
                                (long long)s, (unsigned long)n);
        if ((r = retrlm_tokenizer_decode(tok, tokens + t->span[s] + 1, len, NULL, 0, &b))) return r;
        *bytes += b;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_rpt_bm25_scores(const retrlm_tokenizer *tok, const int *tokens,
                                                size_t n, const retrlm_rpt_targets *t,
                                                const retrlm_bm25_config *bm25, float *scores) {
    int U, C, u, c, j, got;
    int64_t s, *hid = NULL;
    float *hsc = NULL;
    char *txt = NULL;
    size_t cap = 0, len;
    retrlm_bm25_config bc = retrlm__bm25_passage_config(bm25); // chunks: passages of 2 m tokens
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tok && tokens && t && scores);
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_bm25_scores"))) return r;
    U = t->windows * t->seq_len / t->chunk;
    C = t->cands;
    for (s = 0; s < t->n_spans; s++)
        if (t->span[s] < 0 || (size_t)t->span[s] + (size_t)U * t->chunk > n)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_bm25_scores: span %lld runs past the stream",
                                (long long)s);
    hid = (int64_t *)retrlm__alloc((size_t)U, sizeof(int64_t));
    hsc = (float *)retrlm__alloc((size_t)U, sizeof(float));
    if (!hid || !hsc) r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_bm25_scores: no memory");
    for (s = 0; s < t->n_spans && !r; s++) {
        retrlm_bm25 bm;
        const int *sp = tokens + t->span[s];
        if ((r = retrlm_bm25_init(&bm, &bc))) break;
        for (j = 0; j + 1 < U && !r; j++) // chunk j and its continuation
            if (!(r = retrlm__decode_grow(tok, sp + (size_t)j * t->chunk, (size_t)2 * t->chunk, &txt, &cap, &len)))
                r = retrlm_bm25_add(&bm, j, txt, len);
        if (!r) r = retrlm_bm25_commit(&bm);
        for (u = 0; u < U && !r; u++) {
            float *o = scores + ((size_t)s * U + u) * C;
            const int *cu = t->cand + ((size_t)s * U + u) * C;
            for (c = 0; c < C; c++) o[c] = -INFINITY;
            if (cu[0] < 0) continue;
            if ((r = retrlm__decode_grow(tok, sp + (size_t)u * t->chunk, (size_t)t->chunk, &txt, &cap, &len)) ||
                (r = retrlm_bm25_search(&bm, txt, len, U, 0, hid, hsc, &got)))
                break;
            for (c = 0; c < C; c++) {
                int h;
                if (cu[c] < 0) continue;
                o[c] = -1e30f; // shares no term: below every match, the earlier slot first
                for (h = 0; h < got; h++)
                    if (hid[h] == cu[c]) o[c] = hsc[h];
            }
        }
        retrlm_bm25_free(&bm);
    }
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(txt);
    return r;
}
