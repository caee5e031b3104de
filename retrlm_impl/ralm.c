#include "internal.h"

// One sequence to score: a retrieval prefix (units) and the text window [ctx, end) whose tokens
// [start, end) are predicted. A block of the stream has one job (none, in-context) or one per
// retrieved unit (REPLUG), each with its mixing weight.
typedef struct retrlm__ralm_job {
    int    block;   // index into the block table of this round
    int    units[16]; // units prepended, in order (in-context may take several)
    int    n_units;
    float  logw;    // log mixing weight
    int    len;     // tokens in the sequence
    float *lp;      // (end - start) log-probabilities of the predicted tokens, filled by scoring
} retrlm__ralm_job;

typedef struct retrlm__ralm_block {
    size_t ctx, start, end; // stream offsets: context from ctx, predicted [start, end)
    int    first_job, n_jobs;
} retrlm__ralm_block;

// the tokens unit u puts before the text: its first cap, or with cont its first cap together
// with its continuation in its document
static int retrlm__ralm_unit_len(const retrlm_datastore *ds, int u, int cap, int cont) {
    return retrlm__unit_and_continuation(ds, u, cap, !cont, NULL);
}

// writes job j's tokens into seq (its len), units first
static void retrlm__ralm_fill(const retrlm_datastore *ds, const retrlm__ralm_job *j,
                              const retrlm__ralm_block *b, const int *tokens, int unit_cap,
                              int cont, int *seq) {
    int i, at = 0;
    for (i = 0; i < j->n_units; i++) at += retrlm__unit_and_continuation(ds, j->units[i], unit_cap, !cont, seq + at);
    memcpy(seq + at, tokens + b->ctx, (b->end - b->ctx) * sizeof(int));
}

// kNN-LM interpolation settings and scratch for one batch
typedef struct retrlm__knn_ctx {
    const retrlm_knnlm *kn;
    int    k;
    float  log_lambda, log_1m_lambda, inv_temp;
    retrlm_search_params sp; // nprobe for IVF keys
    float *queries;  // (max_batch * stride, D)
    int64_t *ids;    // (max_batch * stride, k)
    float *dist;     // (max_batch * stride, k)
    int   *where;    // (max_batch * stride) job row * stride + p of each query
} retrlm__knn_ctx;

// log p_kNN(y) from the k neighbours of one query: log sum_{i: value_i = y} softmax(-d/T)_i
static float retrlm__knn_logp(const retrlm__knn_ctx *kc, const int64_t *ids, const float *dist, int y) {
    float mx = -INFINITY, all = 0.0f, hit = 0.0f;
    int i;
    for (i = 0; i < kc->k; i++)
        if (ids[i] >= 0) mx = RETRLM__MAX(mx, -dist[i] * kc->inv_temp);
    if (mx == -INFINITY) return -INFINITY;
    for (i = 0; i < kc->k; i++) {
        float e;
        if (ids[i] < 0) continue;
        e = expf(-dist[i] * kc->inv_temp - mx);
        all += e;
        if (kc->kn->values[ids[i]] == y) hit += e;
    }
    return hit > 0.0f ? logf(hit / all) : -INFINITY;
}

// TRIME's memory at inference: the params, scratch, and the long memory's ring of keys
typedef struct retrlm__trime_ctx {
    const retrlm_trime_params *p;
    float *sims;   // (max_seq_len + cache) scratch
    float *ring;   // cache > 0: (ring_rows, D), the key of stream position j (it predicted token
                   // j + 1, in the window that scored that token) at row j % ring_rows
    size_t ring_rows, cache;
} retrlm__trime_ctx;

// log p(y) of TRIME's joint softmax over the vocabulary (logits, lse their log-sum-exp), the
// entries j < a of one sequence (keys K (a, D), entry j labelled seq[j + 1]) and the long
// memory's stream positions [lo, hi) (ring keys, entry j labelled tokens[j + 1])
static float retrlm__ralm_trime_lp(const retrlm__trime_ctx *tc, const float *K, const int *seq, int a,
                                   const int *tokens, size_t lo, size_t hi, int D,
                                   const float *logits, float lse, int y) {
    const float scale = retrlm__trime_scale(tc->p, D), *q = K + (size_t)a * D;
    const int nc = (int)(hi - lo);
    float mx = RETRLM__MAX(lse, logits[y]), *sims = tc->sims;
    double all, hit;
    int j;
    for (j = 0; j < a; j++) sims[j] = retrlm__trime_sim(tc->p, scale, q, K + (size_t)j * D, D);
    for (j = 0; j < nc; j++)
        sims[a + j] = retrlm__trime_sim(tc->p, scale, q, tc->ring + ((lo + (size_t)j) % tc->ring_rows) * D, D);
    for (j = 0; j < a + nc; j++) mx = RETRLM__MAX(mx, sims[j]);
    all = exp((double)(lse - mx));
    hit = exp((double)(logits[y] - mx));
    for (j = 0; j < a + nc; j++) {
        double e = exp((double)(sims[j] - mx));
        all += e;
        if ((j < a ? seq[j + 1] : tokens[lo + (size_t)(j - a) + 1]) == y) hit += e;
    }
    return (float)(log(hit) - log(all));
}

// runs jobs [j0, j1) through the model, batch by batch, and fills their lp
static retrlm_result retrlm__ralm_score(retrlm_model *m, const retrlm_datastore *ds,
                                        const int *tokens, int unit_cap, int cont,
                                        retrlm__ralm_job *jobs,
                                        const retrlm__ralm_block *blocks, int j0, int j1,
                                        int *inputs, int *lengths, const retrlm__knn_ctx *kc,
                                        const retrlm__trime_ctx *tc) {
    const int B = m->config.max_batch, V = m->config.vocab_size, D = m->config.dim;
    int j, r;
    retrlm_result res;
    for (j = j0; j < j1; j += B) {
        int rows = RETRLM__MIN(B, j1 - j), T = 1;
        for (r = 0; r < rows; r++) T = RETRLM__MAX(T, jobs[j + r].len - 1);
        for (r = 0; r < rows; r++) { // inputs are each sequence but its last token, padded
            retrlm__ralm_job *jb = &jobs[j + r];
            int *row = inputs + (size_t)r * T;
            retrlm__ralm_fill(ds, jb, &blocks[jb->block], tokens, unit_cap, cont, row);
            lengths[r] = jb->len - 1;
            if (lengths[r] < T) memset(row + lengths[r], 0, (size_t)(T - lengths[r]) * sizeof(int));
        }
        res = retrlm_model_forward(m, inputs, rows, T, lengths, 0);
        if (res) return res;
        int nq = 0;
        const float *keys = retrlm_model_ffn_input(m, m->config.n_layers - 1);
        for (r = 0; tc && tc->cache && r < rows; r++) { // the long memory's keys first: rows read earlier rows'
            retrlm__ralm_job *jb = &jobs[j + r];
            const retrlm__ralm_block *b = &blocks[jb->block];
            int n_pred = (int)(b->end - b->start), p;
            for (p = 0; p < n_pred; p++)
                memcpy(tc->ring + ((b->start + (size_t)p - 1) % tc->ring_rows) * D,
                       keys + ((size_t)r * T + (size_t)(jb->len - n_pred + p - 1)) * D, (size_t)D * sizeof(float));
        }
        for (r = 0; r < rows; r++) {
            retrlm__ralm_job *jb = &jobs[j + r];
            const retrlm__ralm_block *b = &blocks[jb->block];
            int n_pred = (int)(b->end - b->start), p;
            // the long memory: the cache tokens before the window, [lo, hi); none without a cache
            size_t hi = tc && tc->cache ? b->ctx : 0, lo = tc && hi > tc->cache ? hi - tc->cache : 0;
            // the predicted tokens are the last n_pred of the sequence: token at sequence index
            // q is predicted by the logits (and the kNN key) at q - 1
            for (p = 0; p < n_pred; p++) {
                int q = jb->len - n_pred + p;
                size_t at = (size_t)r * T + (size_t)(q - 1);
                const float *logits = m->logits + at * V;
                const float lse = retrlm_logsumexp(logits, V);
                const int y = tokens[b->start + p];
                jb->lp[p] = tc ? retrlm__ralm_trime_lp(tc, keys + (size_t)r * T * D, inputs + (size_t)r * T, q - 1,
                                                       tokens, lo, hi, D, logits, lse, y)
                               : logits[y] - lse;
                if (kc) {
                    memcpy(kc->queries + (size_t)nq * D, keys + at * D,
                           (size_t)D * sizeof(float));
                    kc->where[nq++] = r * 65536 + p;
                }
            }
        }
        if (kc && nq) {
            int i;
            res = retrlm_index_search(&kc->kn->index, kc->queries, nq, D, kc->k, &kc->sp, kc->ids, kc->dist);
            if (res) return res;
            for (i = 0; i < nq; i++) {
                retrlm__ralm_job *jb = &jobs[j + kc->where[i] / 65536];
                int p = kc->where[i] % 65536;
                const retrlm__ralm_block *b = &blocks[jb->block];
                float lk = retrlm__knn_logp(kc, kc->ids + (size_t)i * kc->k, kc->dist + (size_t)i * kc->k, tokens[b->start + p]);
                float a = kc->log_1m_lambda + jb->lp[p], c = kc->log_lambda + lk, hi = RETRLM__MAX(a, c);
                jb->lp[p] = c == -INFINITY ? a : hi + logf(expf(a - hi) + expf(c - hi));
            }
        }
    }
    return RETRLM_OK;
}

// REPLUG's default temperature for the scores a retrieval mode gives (ralm.h says why)
static float retrlm__replug_temperature(const retrlm_retrieve_params *rp) {
    retrlm_retrieve_mode mode = rp ? rp->mode : RETRLM_RETRIEVE_BM25;
    if (mode == RETRLM_RETRIEVE_BM25) return 1.0f;
    if (mode == RETRLM_RETRIEVE_RRF) {
        const float rk = retrlm__rrf_k(rp);
        return 2.0f / ((rk + 1.0f) * (rk + 1.0f));
    }
    return 0.1f;
}

// cfg's defaults filled in, and every field checked against the model, the datastore and the
// text's tokens (n of them): what retrlm_ralm_bits_per_byte runs with
static retrlm_result retrlm__ralm_resolve(const retrlm_model *m, const retrlm_tokenizer *tok,
                                          const retrlm_datastore *ds, const int *tokens, size_t n,
                                          size_t n_bytes, retrlm_ralm_config *cfg) {
    const int Tmax = m->config.max_seq_len, V = m->config.vocab_size;
    int prefix_units;
    size_t pos;
    retrlm_result res;
    if (m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the model is an encoder, not a causal LM");
    if (cfg->mode != RETRLM_RALM_NONE && (!ds || !tok))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: retrieval needs a tokenizer and a committed datastore");
    if (cfg->mode != RETRLM_RALM_NONE && !ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the datastore is not committed");
    if (n_bytes == 0) return retrlm__fail(RETRLM_ERR_ARG, "ralm: zero bytes of text");
    if (!cfg->stride) cfg->stride = 16;
    if (!cfg->query_tokens) cfg->query_tokens = 32;
    if (!cfg->k) cfg->k = cfg->mode == RETRLM_RALM_REPLUG ? 4 : 1;
    if (cfg->temperature == 0.0f) cfg->temperature = retrlm__replug_temperature(cfg->retrieve);
    if (!cfg->unit_tokens) cfg->unit_tokens = ds ? ds->chunk_tokens : 0;
    if (cfg->stride < 1 || cfg->query_tokens < 1 || cfg->k < 1 || cfg->k > 16 || cfg->unit_tokens < 0 ||
        cfg->context_tokens < 0 || !(cfg->temperature > 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: stride, query_tokens, k (1..16), unit_tokens, context_tokens or temperature out of range");
    prefix_units = cfg->mode == RETRLM_RALM_INCONTEXT ? cfg->k : cfg->mode == RETRLM_RALM_REPLUG ? 1 : 0;
    if (!cfg->context_tokens) cfg->context_tokens = Tmax - prefix_units * cfg->unit_tokens - cfg->stride;
    if (cfg->context_tokens < 1 || prefix_units * cfg->unit_tokens + cfg->context_tokens + cfg->stride > Tmax)
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: %d unit(s) of %d tokens + %d context + %d stride exceed the model's %d positions",
                            prefix_units, cfg->unit_tokens, cfg->context_tokens, cfg->stride, Tmax);
    if (cfg->knnlm) {
        if (!cfg->knn_k) cfg->knn_k = 64;
        if (cfg->lambda == 0.0f) cfg->lambda = 0.25f;
        if (cfg->knn_temperature == 0.0f) cfg->knn_temperature = 1.0f;
        if (cfg->knn_k < 1 || !(cfg->lambda > 0.0f && cfg->lambda < 1.0f) || !(cfg->knn_temperature > 0.0f))
            return retrlm__fail(RETRLM_ERR_ARG, "ralm: knn_k >= 1, lambda in (0, 1) and knn_temperature > 0 are needed");
        if (cfg->knn_nprobe < 0) return retrlm__fail(RETRLM_ERR_ARG, "ralm: knn_nprobe %d is negative", cfg->knn_nprobe);
        if (cfg->knnlm->index.dim != m->config.dim)
            return retrlm__fail(RETRLM_ERR_ARG, "ralm: kNN-LM keys have %d dimensions, the model %d", cfg->knnlm->index.dim, m->config.dim);
        if (cfg->stride > 65535) return retrlm__fail(RETRLM_ERR_ARG, "ralm: stride above 65535 with kNN-LM");
    }
    if (cfg->trime && (res = retrlm__trime_check(cfg->trime, "ralm"))) return res;
    if (cfg->trime_cache < 0 || (cfg->trime_cache && !cfg->trime) || (cfg->trime_cache && cfg->mode == RETRLM_RALM_REPLUG))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: trime_cache is >= 0, with trime, and not with REPLUG's ensemble");
    for (pos = 0; pos < n; pos++)
        if (tokens[pos] < 0 || tokens[pos] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "ralm: token %d at %lu outside the model's vocabulary of %d", tokens[pos], (unsigned long)pos, V);
    return RETRLM_OK;
}

// A block's jobs from jobs[*nj] on, given the units its query retrieved (found, best first, with
// their scores): REPLUG one job a unit weighted softmax(score / temperature), else one job with
// every unit, the best nearest the text; then each job's sequence length
static void retrlm__ralm_jobs(const retrlm_ralm_config *cfg, const retrlm_datastore *ds, int nb,
                              retrlm__ralm_block *bl, const int *units, const float *scores, int found,
                              retrlm__ralm_job *jobs, int *nj) {
    int j;
    bl->first_job = *nj;
    if (cfg->mode == RETRLM_RALM_REPLUG && found > 0) {
        float mx = scores[0], lse = 0.0f; // scores come best first
        for (j = 0; j < found; j++) lse += expf((scores[j] - mx) / cfg->temperature);
        lse = logf(lse);
        for (j = 0; j < found; j++) {
            retrlm__ralm_job *jb = &jobs[(*nj)++];
            jb->block = nb;
            jb->n_units = 1;
            jb->units[0] = units[j];
            jb->logw = (scores[j] - mx) / cfg->temperature - lse;
        }
    } else {
        retrlm__ralm_job *jb = &jobs[(*nj)++];
        jb->block = nb;
        jb->n_units = found;
        for (j = 0; j < found; j++) jb->units[j] = units[found - 1 - j]; // best last
        jb->logw = 0.0f;
    }
    bl->n_jobs = *nj - bl->first_job;
    for (j = bl->first_job; j < *nj; j++) {
        int u;
        jobs[j].len = (int)(bl->end - bl->ctx);
        for (u = 0; u < jobs[j].n_units; u++) jobs[j].len += retrlm__ralm_unit_len(ds, jobs[j].units[u], cfg->unit_tokens, cfg->continuation);
    }
}

// The cost in nats of each predicted token of the nb blocks, their jobs mixed per token
// (log sum_j w_j p_j(y)), added to *nats and written to token_nats (or NULL)
static void retrlm__ralm_mix(const retrlm__ralm_block *blocks, int nb, const retrlm__ralm_job *jobs,
                             double *nats, float *token_nats) {
    int b, j;
    for (b = 0; b < nb; b++) {
        const retrlm__ralm_block *bl = &blocks[b];
        int p, n_pred = (int)(bl->end - bl->start);
        for (p = 0; p < n_pred; p++) {
            double mx = -INFINITY, s = 0.0, l;
            for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                mx = RETRLM__MAX(mx, (double)jobs[j].logw + jobs[j].lp[p]);
            for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                s += exp((double)jobs[j].logw + jobs[j].lp[p] - mx);
            l = mx + log(s);
            *nats -= l;
            if (token_nats) token_nats[bl->start + (size_t)p] = (float)-l;
        }
    }
}

RETRLM_API retrlm_result retrlm_ralm_bits_per_byte(retrlm_model *m, const retrlm_tokenizer *tok,
                                                   const retrlm_datastore *ds, const int *tokens,
                                                   size_t n, size_t n_bytes,
                                                   const retrlm_ralm_config *cfg_in, double *bpb,
                                                   float *token_nats) {
    retrlm_ralm_config cfg;
    const int Tmax = m->config.max_seq_len, V = m->config.vocab_size;
    int round_blocks, max_jobs, i;
    size_t pos;
    double nats = 0.0;
    retrlm__ralm_job *jobs = NULL;
    retrlm__ralm_block *blocks = NULL;
    float *lp = NULL, *scores = NULL;
    int *inputs = NULL, *lengths = NULL, *units = NULL;
    char *query = NULL;
    size_t query_cap = 0;
    retrlm__knn_ctx knn, *kc = NULL;
    retrlm__trime_ctx trime, *tc = NULL;
    retrlm_result res;

    RETRLM_ASSERT(m && cfg_in && bpb && (tokens || n == 0));
    cfg = *cfg_in;
    *bpb = 0.0;
    if ((res = retrlm__ralm_resolve(m, tok, ds, tokens, n, n_bytes, &cfg))) return res;
    if (n == 0) return RETRLM_OK;

    // a round is enough blocks to fill a few batches; jobs of a round are scored together
    memset(&knn, 0, sizeof knn);
    memset(&trime, 0, sizeof trime);
    round_blocks = RETRLM__MAX(1, 4 * m->config.max_batch / (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1));
    max_jobs = round_blocks * (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1);
    jobs = (retrlm__ralm_job *)retrlm__calloc((size_t)max_jobs, sizeof *jobs);
    blocks = (retrlm__ralm_block *)retrlm__calloc((size_t)round_blocks, sizeof *blocks);
    lp = (float *)retrlm__alloc((size_t)max_jobs * cfg.stride, sizeof(float));
    inputs = (int *)retrlm__alloc((size_t)m->config.max_batch * Tmax, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)m->config.max_batch, sizeof(int));
    units = (int *)retrlm__alloc((size_t)cfg.k, sizeof(int));
    scores = (float *)retrlm__alloc((size_t)cfg.k, sizeof(float));
    if (cfg.trime) {
        trime.p = cfg.trime;
        trime.cache = (size_t)cfg.trime_cache;
        trime.sims = (float *)retrlm__alloc((size_t)Tmax + trime.cache, sizeof(float));
        if (trime.cache) {
            trime.ring_rows = trime.cache + (size_t)Tmax + (size_t)m->config.max_batch * (size_t)cfg.stride;
            trime.ring = (float *)retrlm__alloc(trime.ring_rows * (size_t)m->config.dim, sizeof(float));
        }
        if (!trime.sims || (trime.cache && !trime.ring)) scores = (RETRLM_FREE(scores), (float *)NULL);
        tc = &trime;
    }
    if (cfg.knnlm) {
        size_t nq = (size_t)m->config.max_batch * cfg.stride;
        knn.kn = cfg.knnlm;
        knn.k = cfg.knn_k;
        knn.log_lambda = logf(cfg.lambda);
        knn.log_1m_lambda = logf(1.0f - cfg.lambda);
        knn.inv_temp = 1.0f / cfg.knn_temperature;
        knn.sp.nprobe = cfg.knn_nprobe; // 0: the index's own
        knn.queries = (float *)retrlm__alloc(nq * m->config.dim, sizeof(float));
        knn.ids = (int64_t *)retrlm__alloc(nq * knn.k, sizeof(int64_t));
        knn.dist = (float *)retrlm__alloc(nq * knn.k, sizeof(float));
        knn.where = (int *)retrlm__alloc(nq, sizeof(int));
        if (!knn.queries || !knn.ids || !knn.dist || !knn.where) scores = (RETRLM_FREE(scores), (float *)NULL);
        kc = &knn;
    }
    if (!jobs || !blocks || !lp || !inputs || !lengths || !units || !scores) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "ralm: no memory for the scoring buffers");
        goto done;
    }
    for (i = 0; i < max_jobs; i++) jobs[i].lp = lp + (size_t)i * cfg.stride;

    // the first token has nothing before it: ln V, as retrlm_lm_bits_per_byte counts it
    nats = log((double)V);
    if (token_nats) token_nats[0] = (float)log((double)V);
    pos = 1;
    while (pos < n && !res) {
        int nb = 0, nj = 0;
        // plan a round: blocks, their retrievals and jobs
        while (nb < round_blocks && pos < n) {
            retrlm__ralm_block *bl = &blocks[nb];
            int found = 0;
            bl->start = pos;
            bl->end = RETRLM__MIN(n, pos + (size_t)cfg.stride);
            bl->ctx = pos > (size_t)cfg.context_tokens ? pos - (size_t)cfg.context_tokens : 0;
            if (cfg.mode != RETRLM_RALM_NONE) {
                size_t q0 = pos > (size_t)cfg.query_tokens ? pos - (size_t)cfg.query_tokens : 0, qlen = 0;
                res = retrlm__decode_grow(tok, tokens + q0, pos - q0, &query, &query_cap, &qlen);
                if (!res) res = retrlm_datastore_retrieve(ds, cfg.retrieve, query, qlen, cfg.k,
                                                          cfg.exclude ? cfg.exclude_doc : RETRLM_NO_DOC,
                                                          units, scores, &found);
                if (res) goto done;
            }
            retrlm__ralm_jobs(&cfg, ds, nb, bl, units, scores, found, jobs, &nj);
            nb++;
            pos = bl->end;
        }
        res = retrlm__ralm_score(m, ds, tokens, cfg.unit_tokens, cfg.continuation, jobs, blocks, 0, nj, inputs, lengths,
                                 kc, tc);
        if (res) goto done;
        retrlm__ralm_mix(blocks, nb, jobs, &nats, token_nats);
        res = retrlm__progress(cfg.progress, cfg.progress_user, "ralm", (double)pos, (double)n);
    }
    if (!res) *bpb = nats / log(2.0) / (double)n_bytes;
done:
    RETRLM_FREE(jobs), RETRLM_FREE(blocks), RETRLM_FREE(lp), RETRLM_FREE(inputs);
    RETRLM_FREE(lengths), RETRLM_FREE(units), RETRLM_FREE(scores), RETRLM_FREE(query);
    RETRLM_FREE(trime.sims), RETRLM_FREE(trime.ring);
    RETRLM_FREE(knn.queries), RETRLM_FREE(knn.ids), RETRLM_FREE(knn.dist), RETRLM_FREE(knn.where);
    return res;
}

// ---------------------------------------------------------------------------------------------
// kNN-LM datastore

RETRLM_API void retrlm_knnlm_free(retrlm_knnlm *kn) {
    if (!kn) return;
    retrlm_index_free(&kn->index);
    RETRLM_FREE(kn->values);
    retrlm_reader_close(&kn->reader_);
    memset(kn, 0, sizeof *kn);
}

// ---- files of an index with a token for each vector: kNN-LM keys (the token that followed
// each key) and NPM's phrase index (the corpus token each vector is the output of). Container
// sections "index" (the index's own file image) and NAME (the tokens, i32); the index's ids are
// positions into the tokens. The index is used in place from the reader; the tokens are copied.

// the writer holds the index image (owned by *image: free it after saving)
static retrlm_result retrlm__tokindex_writer(const char *kind, const char *name, const retrlm_index *ix,
                                             const int *tok, size_t n, retrlm_writer *w, void **image) {
    size_t size = 0;
    retrlm_result r;
    *image = NULL;
    if ((r = retrlm_writer_init(w, kind))) return r;
    if ((r = retrlm_index_save_memory(ix, NULL, 0, &size))) return r;
    if (!(*image = retrlm__alloc(size, 1))) return retrlm__fail(RETRLM_ERR_NOMEM, "%s save: no memory for the index image", kind);
    if ((r = retrlm_index_save_memory(ix, *image, size, &size))) return r;
    if ((r = retrlm_writer_add(w, "index", RETRLM_DTYPE_U8, *image, size))) return r;
    return retrlm_writer_add(w, name, RETRLM_DTYPE_I32, tok, n);
}

// rd is open: ix borrows from it, *tok (*n) is a copy; every id is a position and every token in
// [0, vocab_size), the metric is the one expected, or ERR_FORMAT: a file of other vectors is an
// error, never a read out of bounds
static retrlm_result retrlm__tokindex_read(retrlm_reader *rd, const char *kind, const char *name,
                                           retrlm_metric metric, int vocab_size, retrlm_index *ix,
                                           int **tok, size_t *n_out) {
    const void *image = NULL, *src = NULL;
    size_t isize = 0, n = 0, i;
    retrlm_result r;
    if ((r = retrlm_reader_get(rd, "index", RETRLM_DTYPE_U8, &image, &isize)) ||
        (r = retrlm_reader_get(rd, name, RETRLM_DTYPE_I32, &src, &n)) ||
        (r = retrlm_index_load_memory(ix, image, isize)))
        return r;
    if (n != ix->n || ix->metric != metric)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu %s for %lu vectors, metric %d (%d expected)", kind,
                            (unsigned long)n, name, (unsigned long)ix->n, ix->metric, metric);
    *tok = (int *)retrlm__alloc(n + 1, sizeof(int));
    if (!*tok) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu %s", kind, (unsigned long)n, name);
    if (n) memcpy(*tok, src, n * sizeof(int));
    for (i = 0; i < n; i++) {
        int64_t id = ix->ids[i];
        int v = (*tok)[i];
        if (id < 0 || (uint64_t)id >= n || v < 0 || v >= vocab_size)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: vector %lu has id %lld and token %d: not for a "
                                "%d-token model", kind, (unsigned long)i, (long long)id, v, vocab_size);
    }
    *n_out = n;
    return RETRLM_OK;
}

// save (path) or save_memory (path NULL: into buf)
static retrlm_result retrlm__tokindex_save(const char *kind, const char *name, const retrlm_index *ix,
                                           const int *tok, size_t n, const char *path, void *buf,
                                           size_t cap, size_t *size) {
    retrlm_writer w;
    void *image;
    retrlm_result r = retrlm__tokindex_writer(kind, name, ix, tok, n, &w, &image);
#ifndef RETRLM_NO_STDIO
    if (!r) r = path ? retrlm_writer_save(&w, path) : retrlm_writer_save_memory(&w, buf, cap, size);
#else
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    (void)path;
#endif
    retrlm_writer_free(&w);
    retrlm_free(image);
    return r;
}

// load (path) or load_memory (path NULL: from data, borrowed): rd opened, then read as above
static retrlm_result retrlm__tokindex_load(const char *kind, const char *name, retrlm_metric metric,
                                           int vocab_size, const char *path, const void *data, size_t size,
                                           retrlm_reader *rd, retrlm_index *ix, int **tok, size_t *n) {
    retrlm_result r;
#ifndef RETRLM_NO_STDIO
    r = path ? retrlm_reader_open(rd, path, kind, 0) : retrlm_reader_open_memory(rd, data, size, kind, 0);
#else
    r = retrlm_reader_open_memory(rd, data, size, kind, 0);
    (void)path;
#endif
    return r ? r : retrlm__tokindex_read(rd, kind, name, metric, vocab_size, ix, tok, n);
}

#define RETRLM__KNNLM_KIND "knnlm"

RETRLM_API retrlm_result retrlm_knnlm_save_memory(const retrlm_knnlm *kn, void *buf, size_t cap,
                                                  size_t *size) {
    return retrlm__tokindex_save(RETRLM__KNNLM_KIND, "values", &kn->index, kn->values, kn->n, NULL, buf, cap, size);
}

// load (path) or load_memory (path NULL: data borrowed); kn zeroed first, freed on failure
static retrlm_result retrlm__knnlm_open(retrlm_knnlm *kn, const char *path, const void *data,
                                       size_t size, int vocab_size) {
    retrlm_result r;
    memset(kn, 0, sizeof *kn);
    if ((r = retrlm__tokindex_load(RETRLM__KNNLM_KIND, "values", RETRLM_METRIC_L2, vocab_size, path, data,
                                   size, &kn->reader_, &kn->index, &kn->values, &kn->n)))
        retrlm_knnlm_free(kn);
    return r;
}

RETRLM_API retrlm_result retrlm_knnlm_load_memory(retrlm_knnlm *kn, const void *data, size_t size,
                                                  int vocab_size) {
    return retrlm__knnlm_open(kn, NULL, data, size, vocab_size);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_knnlm_save(const retrlm_knnlm *kn, const char *path) {
    return retrlm__tokindex_save(RETRLM__KNNLM_KIND, "values", &kn->index, kn->values, kn->n, path, NULL, 0, NULL);
}

RETRLM_API retrlm_result retrlm_knnlm_load(retrlm_knnlm *kn, const char *path, int vocab_size) {
    return retrlm__knnlm_open(kn, path, NULL, 0, vocab_size);
}
#endif

#define RETRLM__KNN_LANES 64 // at most, or the model's max_batch

RETRLM_API int retrlm_knnlm_default_nprobe(int nlist) {
    int p = 1;
    while (p < nlist && p * p < nlist) p++; // the smallest p with p^2 >= nlist
    return nlist > 0 ? p : 0;
}

RETRLM_API retrlm_result retrlm_knnlm_build(retrlm_knnlm *kn, retrlm_model *m, const int *tokens,
                                            size_t n, int seq_len,
                                            const retrlm_index_config *index_config) {
    const int D = m->config.dim, V = m->config.vocab_size, last = m->config.n_layers - 1;
    retrlm_index_config icfg;
    retrlm__carry cr;
    size_t nk, half, p, blk, done = 0, from[RETRLM__KNN_LANES], begin[RETRLM__KNN_LANES], end[RETRLM__KNN_LANES];
    float *keys = NULL;
    int *inputs = NULL, *lengths = NULL, R, r;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(kn && m && (tokens || n == 0));
    memset(kn, 0, sizeof *kn);
    memset(&cr, 0, sizeof cr);
    if (m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "knnlm: the model is an encoder, not a causal LM");
    if (m->config.retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "knnlm: keys come from a plain decoder, not a RETRO model");
    if (!seq_len) seq_len = m->config.max_seq_len;
    if (seq_len < 2 || seq_len > m->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "knnlm: seq_len %d outside 2..%d", seq_len, m->config.max_seq_len);
    if (n < 2) return retrlm__fail(RETRLM_ERR_ARG, "knnlm: %lu tokens make no key", (unsigned long)n);
    for (p = 0; p < n; p++)
        if (tokens[p] < 0 || tokens[p] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "knnlm: token %d at %lu outside the vocabulary of %d", tokens[p], (unsigned long)p, V);
    nk = n - 1; // key p is the state at p, value the token at p + 1
    half = (size_t)seq_len / 2;
    // R lanes of at least half positions each, read side by side: lane r keys [begin, end) and
    // first reads the half before begin, so that its first key has as much context as the rest
    R = (int)RETRLM__MIN((size_t)RETRLM__MIN(m->config.max_batch, RETRLM__KNN_LANES), nk / half);
    if (R < 1) R = 1;
    for (r = 0; r < R; r++) {
        begin[r] = nk / R * r + RETRLM__MIN((size_t)r, nk % R);
        end[r] = begin[r] + nk / R + ((size_t)r < nk % R);
        from[r] = begin[r] >= half ? begin[r] - half : 0;
    }
    keys = (float *)retrlm__alloc(nk, (size_t)D * sizeof(float));
    kn->values = (int *)retrlm__alloc(nk, sizeof(int));
    inputs = (int *)retrlm__alloc((size_t)R * half, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)R, sizeof(int));
    if (!keys || !kn->values || !inputs || !lengths) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "knnlm: no memory for %lu keys of %d floats", (unsigned long)nk, D);
        goto done;
    }
    if ((res = retrlm__carry_init(&cr, m, R, (int)half))) goto done;
    memcpy(kn->values, tokens + 1, nk * sizeof(int));
    // blocks of half positions a lane, each reading the block before it too: every position is
    // run through the model once
    for (blk = 0; done < nk && !res; blk++) { // block blk of every lane
        for (r = 0; r < R; r++) {
            size_t at = from[r] + blk * half, len = at < end[r] ? RETRLM__MIN(half, end[r] - at) : 0;
            if (len) memcpy(inputs + (size_t)r * half, tokens + at, len * sizeof(int));
            memset(inputs + (size_t)r * half + len, 0, (half - len) * sizeof(int));
            lengths[r] = len ? (int)len : 1; // a lane that has ended reads a token and is ignored
        }
        if ((res = retrlm__forward_carry(m, &cr, inputs, R, lengths))) break;
        for (r = 0; r < R; r++) {
            size_t at = from[r] + blk * half, t;
            const float *h = retrlm_model_ffn_input(m, last) + (size_t)r * half * D;
            for (t = 0; at + t < end[r] && t < half; t++)
                if (at + t >= begin[r]) {
                    memcpy(keys + (at + t) * D, h + t * D, (size_t)D * sizeof(float));
                    done++;
                }
        }
        res = retrlm__progress(index_config ? index_config->progress : NULL,
                               index_config ? index_config->progress_user : NULL, "knnlm keys",
                               (double)done, (double)nk);
    }
    if (res) goto done;
    if (index_config) icfg = *index_config;
    else memset(&icfg, 0, sizeof icfg);
    icfg.dim = D;
    icfg.metric = RETRLM_METRIC_L2;
    if (icfg.nlist > 0 && !icfg.nprobe) icfg.nprobe = retrlm_knnlm_default_nprobe(icfg.nlist);
    res = retrlm_index_init(&kn->index, &icfg);
    if (!res && (icfg.nlist > 0 || icfg.storage == RETRLM_STORAGE_SQ8)) res = retrlm_index_train(&kn->index, keys, nk, D);
    if (!res) res = retrlm_index_add(&kn->index, keys, nk, D, NULL);
    kn->n = nk;
done:
    RETRLM_FREE(keys), RETRLM_FREE(inputs), RETRLM_FREE(lengths);
    retrlm__carry_free(&cr);
    if (res) {
        retrlm_index_free(&kn->index);
        RETRLM_FREE(kn->values);
        memset(kn, 0, sizeof *kn);
    }
    return res;
}

// ---------------------------------------------------------------------------------------------
// RETRO generation: retrieval every m tokens

// units[j] = the candidate (cand, nf of them, ranked) that neighbour j of nb (k, len) was made
// from: each candidate in turn is expanded the way retrlm_retro_neighbours_build expands it (the
// unit, then its continuation in its document unless unit_only) and the first whose expansion
// is the neighbour is taken; -1 for an absent neighbour. exp has room for len ids.
static retrlm_result retrlm__retro_units(const retrlm_datastore *ds,
                                         const retrlm_retro_neighbours_config *c,
                                         const int *cand, int nf, const int *nb, int *exp,
                                         int *units) {
    int i = 0, j;
    for (j = 0; j < c->k; j++) {
        const int *row = nb + (size_t)j * c->len;
        units[j] = -1;
        if (row[0] < 0) continue;
        for (; i < nf && units[j] < 0; i++) {
            int u = cand[i], w, t;
            for (t = 0; t < c->len; t++) exp[t] = -1;
            w = retrlm__unit_and_continuation(ds, u, c->len, c->unit_only, exp);
            if (w && !memcmp(exp, row, (size_t)c->len * sizeof(int))) units[j] = u;
        }
        if (units[j] < 0)
            return retrlm__fail(RETRLM_ERR_CORRUPT, "retro_generate: neighbour %d is none of the "
                                "units retrieved for its chunk", j);
    }
    return RETRLM_OK;
}

// the neighbours of the chunk x (m tokens) into the model's decode cache as chunk c, and the
// units they come from into units (k) when it is not NULL
static retrlm_result retrlm__retro_chunk_give(retrlm_model *m,
                                              const retrlm_retro_generate_config *g,
                                              const retrlm_retro_neighbours_config *nc,
                                              const int *x, int c, char **q, size_t *qcap,
                                              int *cand, int *exp, int *units) {
    retrlm_retro_neighbours nb;
    retrlm_result r;
    size_t qlen = 0;
    int nf = 0;
    if ((r = retrlm_retro_neighbours_build(&nb, g->ds, g->tok, x, (size_t)nc->chunk, NULL, nc)))
        return r;
    r = retrlm_model_decode_neighbours(m, c, nb.tokens);
    if (!r && units) { // the same query again, for the units' numbers
        r = retrlm__decode_grow(g->tok, x, (size_t)nc->chunk, q, qcap, &qlen);
        if (!r) r = retrlm_datastore_retrieve(g->ds, &nc->retrieve, *q, qlen, nc->depth,
                                              RETRLM_NO_DOC, cand, NULL, &nf);
        if (!r) r = retrlm__retro_units(g->ds, nc, cand, nf, nb.tokens, exp, units);
    }
    retrlm_retro_neighbours_free(&nb);
    return r;
}

RETRLM_API retrlm_result retrlm_retro_generate(retrlm_model *m,
                                               const retrlm_retro_generate_config *cfg,
                                               const int *prompt, int n_prompt, int n_new,
                                               int *out, int *n_out) {
    const retrlm_model_config *mc;
    retrlm_retro_neighbours_config nc;
    int *seq = NULL, *cand = NULL, *exp = NULL, pos, got = 0, M, V, i;
    char *q = NULL;
    size_t qcap = 0;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(m && cfg && (prompt || n_prompt <= 0) && (out || n_new <= 0));
    if (n_out) *n_out = 0;
    mc = &m->config;
    V = mc->vocab_size;
    M = mc->retro_chunk;
    if (!M || mc->bidirectional)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: not a RETRO model (retro_chunk 0): "
                            "retrlm_model_generate generates with a plain LM");
    if (n_prompt < 1 || n_prompt > mc->max_seq_len || n_new < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: a prompt of %d tokens (1..%d), %d "
                            "new", n_prompt, mc->max_seq_len, n_new);
    if (!cfg->tok || !cfg->ds || !cfg->ds->committed_)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: retrieval needs the LM's tokenizer "
                            "and a committed datastore");
    if (!cfg->rng && cfg->sampler && cfg->sampler->temperature > 0.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: sampling at temperature %g needs "
                            "an rng", (double)cfg->sampler->temperature);
    nc = cfg->neighbours;
    nc.progress = NULL;
    nc.progress_user = NULL;
    if (!nc.chunk) nc.chunk = M;
    if (!nc.k) nc.k = mc->retro_k;
    if (!nc.len) nc.len = mc->retro_len;
    if (!nc.depth) nc.depth = 4 * nc.k; // as retrlm_retro_neighbours_build
    if (nc.chunk != M || nc.k != mc->retro_k || nc.len != mc->retro_len)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: neighbours of chunk %d, k %d, len "
                            "%d; the model reads chunk %d, k %d, len %d", nc.chunk, nc.k, nc.len,
                            M, mc->retro_k, mc->retro_len);
    if (nc.depth < nc.k || nc.depth > 4096)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: depth %d (k..4096)", nc.depth);
    for (i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: prompt token %d at %d outside "
                                "the vocabulary of %d", prompt[i], i, V);
    seq = (int *)retrlm__alloc((size_t)mc->max_seq_len + 1, sizeof(int));
    cand = (int *)retrlm__alloc((size_t)nc.depth, sizeof(int));
    exp = (int *)retrlm__alloc((size_t)nc.len, sizeof(int));
    if (!seq || !cand || !exp) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "retro_generate: no memory");
        goto done;
    }
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    for (pos = 0;;) {
        // position pos is the last of chunk c: retrieve with the chunk before decoding it
        if ((pos + 1) % M == 0) {
            int c = (pos + 1) / M - 1;
            r = retrlm__retro_chunk_give(m, cfg, &nc, seq + (size_t)c * M, c, &q, &qcap, cand, exp,
                                         cfg->units ? cfg->units + (size_t)c * nc.k : NULL);
            if (r) break;
        }
        if ((r = retrlm_model_decode(m, seq[pos], pos))) break;
        if (cfg->logits) memcpy(cfg->logits + (size_t)pos * V, m->step_logits, (size_t)V * sizeof(float));
        if (++pos < n_prompt) continue;
        if (got == n_new) break;
        seq[pos] = out[got++] = retrlm_model_sample(m, m->step_logits, cfg->sampler, cfg->rng);
        if (n_out) *n_out = got;
        if (got == n_new || pos >= mc->max_seq_len) break;
    }
done:
    RETRLM_FREE(seq), RETRLM_FREE(cand), RETRLM_FREE(exp), RETRLM_FREE(q);
    return r;
}

// ---------------------------------------------------------------------------------------------
// NPM's phrase index

RETRLM_API void retrlm_npm_index_free(retrlm_npm_index *x) {
    if (!x) return;
    retrlm_index_free(&x->index);
    RETRLM_FREE(x->tokens);
    retrlm_reader_close(&x->reader_);
    memset(x, 0, sizeof *x);
}

#define RETRLM__NPM_KIND "npm_index"

RETRLM_API retrlm_result retrlm_npm_index_save_memory(const retrlm_npm_index *x, void *buf, size_t cap,
                                                      size_t *size) {
    return retrlm__tokindex_save(RETRLM__NPM_KIND, "tokens", &x->index, x->tokens, x->n, NULL, buf, cap, size);
}

// load (path) or load_memory (path NULL: data borrowed); x zeroed first, freed on failure
static retrlm_result retrlm__npm_index_open(retrlm_npm_index *x, const char *path, const void *data,
                                            size_t size, int vocab_size) {
    retrlm_result r;
    memset(x, 0, sizeof *x);
    if ((r = retrlm__tokindex_load(RETRLM__NPM_KIND, "tokens", RETRLM_METRIC_IP, vocab_size, path, data,
                                   size, &x->reader_, &x->index, &x->tokens, &x->n)))
        retrlm_npm_index_free(x);
    return r;
}

RETRLM_API retrlm_result retrlm_npm_index_load_memory(retrlm_npm_index *x, const void *data, size_t size,
                                                      int vocab_size) {
    return retrlm__npm_index_open(x, NULL, data, size, vocab_size);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_npm_index_save(const retrlm_npm_index *x, const char *path) {
    return retrlm__tokindex_save(RETRLM__NPM_KIND, "tokens", &x->index, x->tokens, x->n, path, NULL, 0, NULL);
}

RETRLM_API retrlm_result retrlm_npm_index_load(retrlm_npm_index *x, const char *path, int vocab_size) {
    return retrlm__npm_index_open(x, path, NULL, 0, vocab_size);
}
#endif

RETRLM_API retrlm_result retrlm_npm_index_build(retrlm_npm_index *x, retrlm_model *m, const int *tokens,
                                                size_t n, int seq_len,
                                                const retrlm_index_config *index_config) {
    const int D = m->config.dim, B = m->config.max_batch, V = m->config.vocab_size;
    retrlm_index_config icfg;
    float *vec = NULL;
    int *lengths = NULL;
    size_t p, at;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(x && m && (tokens || n == 0));
    memset(x, 0, sizeof *x);
    if (!m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "npm_index: the model is a causal LM, not an encoder");
    if (!seq_len) seq_len = m->config.max_seq_len;
    if (seq_len < 1 || seq_len > m->config.max_seq_len || n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "npm_index: seq_len %d outside 1..%d, or no tokens (%lu)", seq_len,
                            m->config.max_seq_len, (unsigned long)n);
    for (p = 0; p < n; p++)
        if (tokens[p] < 0 || tokens[p] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "npm_index: token %d at %lu outside the vocabulary of %d", tokens[p],
                                (unsigned long)p, V);
    vec = (float *)retrlm__alloc(n, (size_t)D * sizeof(float));
    x->tokens = (int *)retrlm__alloc(n, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)B, sizeof(int));
    if (!vec || !x->tokens || !lengths) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_index: no memory for %lu vectors of %d floats", (unsigned long)n, D);
        goto done;
    }
    memcpy(x->tokens, tokens, n * sizeof(int));
    for (at = 0; at < n && !res;) { // B blocks a forward; the last block of the stream is shorter
        size_t b0 = at;
        int rows = 0, r, T;
        while (rows < B && at < n) {
            lengths[rows++] = (int)RETRLM__MIN((size_t)seq_len, n - at);
            at += (size_t)lengths[rows - 1];
        }
        T = lengths[0];
        // rows of T tokens: the stream's blocks are contiguous, and only the last may be short,
        // so the inputs are the stream itself unless that last block needs padding
        if (lengths[rows - 1] == T) res = retrlm_model_forward(m, tokens + b0, rows, T, NULL, RETRLM_FORWARD_NO_LOGITS);
        else {
            int *pad = (int *)retrlm__calloc((size_t)rows * T, sizeof(int));
            if (!pad) {
                res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_index: no memory");
                break;
            }
            memcpy(pad, tokens + b0, (at - b0) * sizeof(int));
            res = retrlm_model_forward(m, pad, rows, T, lengths, RETRLM_FORWARD_NO_LOGITS);
            RETRLM_FREE(pad);
        }
        if (res) break;
        for (r = 0; r < rows; r++)
            memcpy(vec + (b0 + (size_t)r * T) * D, m->hidden + (size_t)r * T * D, (size_t)lengths[r] * D * sizeof(float));
        res = retrlm__progress(index_config ? index_config->progress : NULL,
                               index_config ? index_config->progress_user : NULL, "npm index", (double)at, (double)n);
    }
    if (res) goto done;
    if (index_config) icfg = *index_config;
    else memset(&icfg, 0, sizeof icfg);
    icfg.dim = D;
    icfg.metric = RETRLM_METRIC_IP;
    res = retrlm_index_init(&x->index, &icfg);
    if (!res && (icfg.nlist > 0 || icfg.storage == RETRLM_STORAGE_SQ8)) res = retrlm_index_train(&x->index, vec, n, D);
    if (!res) res = retrlm_index_add(&x->index, vec, n, D, NULL);
    x->n = n;
done:
    RETRLM_FREE(vec), RETRLM_FREE(lengths);
    if (res) retrlm_npm_index_free(x);
    return res;
}

RETRLM_API retrlm_result retrlm_npm_fill(retrlm_model *m, const retrlm_npm_index *x, const int *tokens,
                                         int n, int start, int len, int mask_id, int k,
                                         float temperature, int *out, float *prob) {
    const int D = m->config.dim, V = m->config.vocab_size;
    const float c = 1.0f / (sqrtf((float)D) * (temperature > 0.0f ? temperature : 1.0f));
    float *q = NULL, *sc = NULL;
    int64_t *ids = NULL, *from = NULL; // from (2k): the first corpus token of each hit's phrase, -1 none
    double *w = NULL, best_p = 0.0;
    int i, side, a, b, best = -1;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(m && x && tokens && out);
    if (!k) k = 32;
    if (!m->config.bidirectional || n < 1 || n > m->config.max_seq_len || len < 1 || start < 0 || start > n - len ||
        k < 1 || k > 65536 || mask_id < 0 || mask_id >= V || !(temperature >= 0.0f) || x->n == 0 || x->index.dim != D)
        return retrlm__fail(RETRLM_ERR_ARG, "npm_fill: an encoder, 1 <= n <= %d (%d), a span inside it (%d tokens at "
                            "%d), k in 1..65536 (%d), mask_id in the vocabulary (%d), and an index of this width",
                            m->config.max_seq_len, n, len, start, k, mask_id);
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V || ((i >= start && i < start + len) != (tokens[i] == mask_id)))
            return retrlm__fail(RETRLM_ERR_ARG, "npm_fill: token %d at %d: outside the vocabulary, or %s", tokens[i], i,
                                i >= start && i < start + len ? "not mask_id inside the span" : "mask_id outside it");
    q = (float *)retrlm__alloc((size_t)2 * D + (size_t)2 * k, sizeof(float));
    ids = (int64_t *)retrlm__alloc((size_t)4 * k, sizeof(int64_t));
    w = (double *)retrlm__alloc((size_t)2 * k, sizeof(double));
    if (!q || !ids || !w) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_fill: no memory for %d hits", k);
        goto done;
    }
    sc = q + 2 * D, from = ids + 2 * k;
    if ((res = retrlm_model_forward(m, tokens, 1, n, NULL, RETRLM_FORWARD_NO_LOGITS))) goto done;
    memcpy(q, m->hidden + (size_t)start * D, (size_t)D * sizeof(float));
    memcpy(q + D, m->hidden + (size_t)(start + len - 1) * D, (size_t)D * sizeof(float));
    if ((res = retrlm_index_search(&x->index, q, 2, D, k, NULL, ids, sc))) goto done;
    for (side = 0; side < 2; side++) { // each side's softmax over its hits, weighted 1/2
        double mx = -INFINITY, sum = 0.0;
        for (i = side * k; i < side * k + k; i++) {
            int64_t j0 = ids[i] < 0 ? -1 : side ? ids[i] - len + 1 : ids[i];
            from[i] = j0 >= 0 && (uint64_t)j0 + (uint64_t)len <= (uint64_t)x->n ? j0 : -1;
            if (ids[i] >= 0 && c * sc[i] > mx) mx = c * sc[i];
        }
        for (i = side * k; i < side * k + k; i++) sum += w[i] = ids[i] < 0 ? 0.0 : exp(c * sc[i] - mx);
        for (i = side * k; i < side * k + k; i++) w[i] = sum > 0.0 ? 0.5 * w[i] / sum : 0.0;
    }
    for (a = 0; a < 2 * k; a++) { // a phrase's probability: every hit that proposes it
        double p = 0.0;
        if (from[a] < 0) continue;
        for (b = 0; b < 2 * k; b++)
            if (from[b] >= 0 && !memcmp(x->tokens + from[a], x->tokens + from[b], (size_t)len * sizeof(int))) p += w[b];
        if (p > best_p) best_p = p, best = a;
    }
    for (i = 0; i < len; i++) out[i] = best < 0 ? -1 : x->tokens[from[best] + i];
    if (prob) *prob = (float)best_p;
done:
    RETRLM_FREE(q), RETRLM_FREE(ids), RETRLM_FREE(w);
    return res;
}
