#include "internal.h"

RETRLM_API retrlm_result retrlm_datastore_init(retrlm_datastore *ds, const retrlm_datastore_config *cfg) {
    retrlm_datastore_config def;
    retrlm_bm25_config bc;
    retrlm_result res;
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (cfg->chunk_tokens < 0) return retrlm__fail(RETRLM_ERR_ARG, "datastore: chunk_tokens %d < 0", cfg->chunk_tokens);
    ds->chunk_tokens = cfg->chunk_tokens ? cfg->chunk_tokens : 64;
    bc = retrlm__bm25_passage_config(&cfg->bm25); // units are passages of <= chunk_tokens
    res = retrlm_bm25_init(&ds->bm25, &bc);
    if (res) return res;
    if (!RETRLM__ARR_RESERVE(ds->text_off_b_, 1) || !RETRLM__ARR_RESERVE(ds->tok_off_b_, 1)) {
        retrlm_datastore_free(ds);
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: the unit tables");
    }
    stbds_arrput(ds->text_off_b_, 0);
    stbds_arrput(ds->tok_off_b_, 0);
    return RETRLM_OK;
}

static void retrlm__datastore_free_build(retrlm_datastore *ds) {
    stbds_arrfree(ds->doc_b_);
    stbds_arrfree(ds->text_off_b_);
    stbds_arrfree(ds->tok_off_b_);
    stbds_arrfree(ds->text_b_);
    stbds_arrfree(ds->tokens_b_);
}

RETRLM_API void retrlm_datastore_free(retrlm_datastore *ds) {
    if (!ds) return;
    retrlm__datastore_free_build(ds);
    retrlm_bm25_free(&ds->bm25);
    retrlm_index_free(&ds->dense);
    if (ds->owned_) RETRLM_FREE(ds->owned_);
    retrlm_reader_close(&ds->reader_);
    memset(ds, 0, sizeof *ds);
}

// one unit: its tokens and the bytes they decode to
static retrlm_result retrlm__datastore_unit(retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                            int64_t doc_id, const int *ids, size_t n) {
    size_t bytes = 0, at;
    retrlm_result res = retrlm_tokenizer_decode(tok, ids, n, NULL, 0, &bytes);
    if (res) return res;
    if (ds->n_units == INT_MAX - 1) return retrlm__fail(RETRLM_ERR_RANGE, "datastore: too many units");
    if (bytes == SIZE_MAX || !RETRLM__ARR_RESERVE(ds->text_b_, bytes + 1) ||
        !RETRLM__ARR_RESERVE(ds->tokens_b_, n) || !RETRLM__ARR_RESERVE(ds->doc_b_, 1) ||
        !RETRLM__ARR_RESERVE(ds->text_off_b_, 1) || !RETRLM__ARR_RESERVE(ds->tok_off_b_, 1))
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: unit %d", ds->n_units);
    at = (size_t)stbds_arrlen(ds->text_b_);
    stbds_arraddnptr(ds->text_b_, bytes + 1); // + 1: decode writes a NUL when there is room
    res = retrlm_tokenizer_decode(tok, ids, n, ds->text_b_ + at, bytes + 1, &bytes);
    if (res) {
        stbds_arrsetlen(ds->text_b_, at);
        return res;
    }
    stbds_arrsetlen(ds->text_b_, at + bytes);
    memcpy(stbds_arraddnptr(ds->tokens_b_, n), ids, n * sizeof(int));
    stbds_arrput(ds->doc_b_, doc_id);
    stbds_arrput(ds->text_off_b_, (uint64_t)stbds_arrlen(ds->text_b_));
    stbds_arrput(ds->tok_off_b_, (uint64_t)stbds_arrlen(ds->tokens_b_));
    ds->n_units++;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_datastore_add(retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                              int64_t doc_id, const char *text, size_t len,
                                              int flags) {
    size_t n = 0, at, step;
    int *ids;
    retrlm_result res;
    RETRLM_ASSERT(ds && tok && (text || !len));
    if (ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: add after commit");
    res = retrlm_tokenizer_encode(tok, text, len, 0, NULL, 0, &n);
    if (res) return res;
    if (n == 0) return RETRLM_OK; // nothing to retrieve
    ids = (int *)retrlm__alloc(n, sizeof(int));
    if (!ids) return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory for %lu tokens", (unsigned long)n);
    res = retrlm_tokenizer_encode(tok, text, len, 0, ids, n, &n);
    step = (flags & RETRLM_DATASTORE_CHUNK) ? (size_t)ds->chunk_tokens : n;
    for (at = 0; !res && at < n; at += step) res = retrlm__datastore_unit(ds, tok, doc_id, ids + at, RETRLM__MIN(step, n - at));
    RETRLM_FREE(ids);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_commit(retrlm_datastore *ds) {
    size_t nu, nt, nb, total;
    char *block;
    const char **texts;
    size_t *lens;
    int64_t *uids;
    int u;
    retrlm_result res;
    RETRLM_ASSERT(ds);
    if (ds->committed_) return RETRLM_OK;
    nu = (size_t)ds->n_units;
    nt = (size_t)stbds_arrlen(ds->tokens_b_);
    nb = (size_t)stbds_arrlen(ds->text_b_);
    // one block: unit_doc, text_off, tok_off (8-byte fields first), tokens, then text
    total = nu * 8 + 2 * (nu + 1) * 8 + nt * sizeof(int) + nb + 1;
    block = (char *)retrlm__alloc(total, 1);
    texts = (const char **)retrlm__alloc(nu ? nu : 1, sizeof *texts);
    lens = (size_t *)retrlm__alloc(nu ? nu : 1, sizeof *lens);
    uids = (int64_t *)retrlm__alloc(nu ? nu : 1, sizeof *uids);
    if (!block || !texts || !lens || !uids) {
        RETRLM_FREE(block), RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(uids);
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to commit %lu units", (unsigned long)nu);
    }
    ds->owned_ = block;
    ds->unit_doc = (const int64_t *)block;
    if (nu) memcpy(block, ds->doc_b_, nu * 8); // no units: doc_b_ is NULL
    ds->text_off = (const uint64_t *)memcpy(block + nu * 8, ds->text_off_b_, (nu + 1) * 8);
    ds->tok_off = (const uint64_t *)memcpy(block + nu * 8 + (nu + 1) * 8, ds->tok_off_b_, (nu + 1) * 8);
    ds->tokens = (const int *)(block + nu * 8 + 2 * (nu + 1) * 8);
    if (nt) memcpy((void *)ds->tokens, ds->tokens_b_, nt * sizeof(int));
    ds->text = block + nu * 8 + 2 * (nu + 1) * 8 + nt * sizeof(int);
    if (nb) memcpy((void *)ds->text, ds->text_b_, nb);
    ((char *)ds->text)[nb] = '\0';
    retrlm__datastore_free_build(ds);
    ds->committed_ = 1;
    for (u = 0; u < ds->n_units; u++) {
        texts[u] = ds->text + ds->text_off[u];
        lens[u] = (size_t)(ds->text_off[u + 1] - ds->text_off[u]);
        uids[u] = u;
    }
    res = retrlm_bm25_add_batch(&ds->bm25, ds->n_units, uids, texts, lens);
    if (!res) res = retrlm_bm25_commit(&ds->bm25);
    RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(uids);
    return res;
}

RETRLM__PRIVATE retrlm_result retrlm__datastore_embed_index(const retrlm_datastore *ds,
                                                            retrlm_encoder *enc,
                                                            const retrlm_tokenizer *enc_tok,
                                                            const retrlm_index_config *index_config,
                                                            retrlm_index *out,
                                                            retrlm_progress_fn progress, void *user) {
    retrlm_index_config ic;
    const char **texts = NULL;
    size_t *lens = NULL;
    float *emb = NULL;
    retrlm_result res;
    int u;
    RETRLM_ASSERT(ds && enc && enc_tok && out);
    memset(out, 0, sizeof *out);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: embed before commit");
    memset(&ic, 0, sizeof ic);
    if (index_config) ic = *index_config;
    ic.dim = enc->dim;
    ic.metric = RETRLM_METRIC_IP;
    if (!ic.progress) ic.progress = progress, ic.progress_user = user;
    texts = (const char **)retrlm__alloc((size_t)ds->n_units + 1, sizeof *texts);
    lens = (size_t *)retrlm__alloc((size_t)ds->n_units + 1, sizeof *lens);
    emb = (float *)retrlm__alloc((size_t)ds->n_units + 1, (size_t)enc->dim * sizeof(float));
    if (!texts || !lens || !emb) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to embed %d units", ds->n_units);
        goto done;
    }
    for (u = 0; u < ds->n_units; u++) texts[u] = retrlm_datastore_text(ds, u, &lens[u]);
    if ((res = retrlm_encoder_encode_texts(enc, enc_tok, RETRLM_DOC, texts, lens,
                                           (size_t)ds->n_units, emb, progress, user)) ||
        (res = retrlm_index_init(out, &ic)))
        goto done;
    if ((ic.nlist > 0 || ic.storage == RETRLM_STORAGE_SQ8) &&
        (res = retrlm_index_train(out, emb, (size_t)ds->n_units, enc->dim)))
        goto done;
    res = retrlm_index_add(out, emb, (size_t)ds->n_units, enc->dim, NULL);
done:
    if (res) retrlm_index_free(out);
    RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(emb);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_embed(retrlm_datastore *ds, retrlm_encoder *enc,
                                                const retrlm_tokenizer *enc_tok,
                                                const retrlm_index_config *index_config,
                                                retrlm_progress_fn progress, void *user) {
    retrlm_result res;
    RETRLM_ASSERT(ds && enc && enc_tok);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: embed before commit");
    retrlm_index_free(&ds->dense);
    ds->encoder = NULL;
    ds->encoder_tok = NULL;
    if ((res = retrlm__datastore_embed_index(ds, enc, enc_tok, index_config, &ds->dense, progress,
                                             user)))
        return res;
    ds->encoder = enc;
    ds->encoder_tok = enc_tok;
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_load_dense(retrlm_datastore *ds,
                                                     const retrlm_encoder *enc,
                                                     const retrlm_tokenizer *enc_tok,
                                                     const char *index_path) {
    retrlm_result res;
    size_t i;
    RETRLM_ASSERT(ds && enc && enc_tok && index_path);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: load_dense before commit");
    retrlm_index_free(&ds->dense);
    ds->encoder = NULL;
    ds->encoder_tok = NULL;
    if ((res = retrlm_index_load(&ds->dense, index_path))) return res;
    if (ds->dense.dim != enc->dim || ds->dense.n != (size_t)ds->n_units ||
        ds->dense.metric != RETRLM_METRIC_IP)
        res = retrlm__fail(RETRLM_ERR_FORMAT, "datastore: %s holds %lu vectors of dim %d (metric "
                           "%d) for %d units of dim %d (inner product)", index_path,
                           (unsigned long)ds->dense.n, ds->dense.dim, ds->dense.metric,
                           ds->n_units, enc->dim);
    for (i = 0; !res && i < ds->dense.n; i++)
        if (ds->dense.ids[i] < 0 || ds->dense.ids[i] >= ds->n_units)
            res = retrlm__fail(RETRLM_ERR_FORMAT, "datastore: %s has id %lld, not a unit",
                               index_path, (long long)ds->dense.ids[i]);
    if (res) {
        retrlm_index_free(&ds->dense);
        return res;
    }
    ds->encoder = enc;
    ds->encoder_tok = enc_tok;
    return RETRLM_OK;
}
#endif

// min-max normalisation of a list's scores into [0, 1] (all 1 when they are equal)
static float retrlm__minmax(const float *s, int n, int i) {
    float lo = s[n - 1], hi = s[0]; // best first
    return hi > lo ? (s[i] - lo) / (hi - lo) : 1.0f;
}

RETRLM__PRIVATE float retrlm__rrf_k(const retrlm_retrieve_params *p) {
    return p && p->rrf_k > 0 ? (float)p->rrf_k : 60.0f; // Cormack et al.'s constant
}

RETRLM_API int retrlm_fuse(const retrlm_retrieve_params *p, const int64_t *a_ids,
                           const float *a_scores, int na, const int64_t *b_ids,
                           const float *b_scores, int nb, int k, int64_t *out_ids,
                           float *out_scores) {
    retrlm_retrieve_mode mode = p ? p->mode : RETRLM_RETRIEVE_BM25;
    float w = p && p->weight > 0.0f ? RETRLM__MIN(p->weight, 1.0f) : 0.5f; // 0: the default
    float rk = retrlm__rrf_k(p), *sc, small[64];
    int64_t *ids;
    retrlm_topk h;
    int i, j, n;
    if (mode == RETRLM_RETRIEVE_BM25 || mode == RETRLM_RETRIEVE_DENSE || mode == RETRLM_RETRIEVE_RERANK) {
        const int64_t *xi = mode == RETRLM_RETRIEVE_BM25 ? a_ids : b_ids;
        const float *xs = mode == RETRLM_RETRIEVE_BM25 ? a_scores : b_scores;
        n = RETRLM__MIN(k, mode == RETRLM_RETRIEVE_BM25 ? na : nb);
        memcpy(out_ids, xi, (size_t)n * sizeof *out_ids);
        if (out_scores) memcpy(out_scores, xs, (size_t)n * sizeof *out_scores);
        return n;
    }
    // the heap's scores live in out_scores when the caller wants them, else on the stack for
    // the usual small k: no allocation per query then
    sc = out_scores ? out_scores : k <= 64 ? small : (float *)retrlm__alloc((size_t)k, sizeof *sc);
    ids = out_ids;
    if (!sc) return 0;
    retrlm_topk_init(&h, k, ids, sc);
    // every id of a, then the ids of b not in a
    for (i = 0; i < na + nb; i++) {
        int64_t id = i < na ? a_ids[i] : b_ids[i - na];
        int ia = i < na ? i : -1, ib = -1;
        float f;
        if (i >= na) {
            for (j = 0; j < na && a_ids[j] != id; j++) {}
            if (j < na) continue;
            ib = i - na;
        } else
            for (j = 0; j < nb; j++)
                if (b_ids[j] == id) { ib = j; break; }
        if (mode == RETRLM_RETRIEVE_RRF)
            f = (ia >= 0 ? 1.0f / (rk + (float)(ia + 1)) : 0.0f) +
                (ib >= 0 ? 1.0f / (rk + (float)(ib + 1)) : 0.0f);
        else
            f = (1.0f - w) * (ia >= 0 ? retrlm__minmax(a_scores, na, ia) : 0.0f) +
                w * (ib >= 0 ? retrlm__minmax(b_scores, nb, ib) : 0.0f);
        retrlm_topk_push(&h, id, f);
    }
    n = retrlm_topk_sort(&h);
    if (sc != out_scores && sc != small) RETRLM_FREE(sc);
    return n;
}

RETRLM__PRIVATE int retrlm__datastore_distinct(const retrlm_datastore *ds, int *units,
                                               float *scores, int n) {
    int i, j, m = 0;
    for (i = 0; i < n; i++) {
        int ni, nj, same = 0;
        const int *ti = retrlm_datastore_tokens(ds, units[i], &ni);
        for (j = 0; j < m && !same; j++) {
            const int *tj = retrlm_datastore_tokens(ds, units[j], &nj);
            same = ni == nj && !memcmp(ti, tj, (size_t)ni * sizeof *ti);
        }
        if (same) continue;
        if (scores) scores[m] = scores[i];
        units[m++] = units[i];
    }
    return m;
}

RETRLM__PRIVATE void retrlm__rerank_order(int n, int *cand, float *prior, float *score) {
    int i, j;
    // insertion by descending score: stable, so ties keep the first stage's order
    for (i = 1; i < n; i++) {
        const float si = score[i], pi = prior ? prior[i] : 0.0f;
        const int ci = cand[i];
        for (j = i; j > 0 && score[j - 1] < si; j--) {
            score[j] = score[j - 1], cand[j] = cand[j - 1];
            if (prior) prior[j] = prior[j - 1];
        }
        score[j] = si, cand[j] = ci;
        if (prior) prior[j] = pi;
    }
}

// RERANK: BM25's depth best units of documents other than exclude_doc, each text once, the want
// best of them by the inner product of the query's embedding with theirs, embedded now, plus
// bm25_weight times their BM25 score (ties: BM25's order)
static retrlm_result retrlm__datastore_rerank(const retrlm_datastore *ds,
                                              const retrlm_retrieve_params *p, const char *query,
                                              size_t len, int want, int64_t exclude_doc,
                                              int64_t *ids, float *sc, int *found) {
    const int depth = RETRLM__MIN(ds->n_units, RETRLM__MAX(want, p->depth > 0 ? p->depth : 100));
    const int P = ds->encoder->dim;
    int *cand = (int *)retrlm__alloc((size_t)depth, sizeof *cand), n = 0, i;
    float *q = (float *)retrlm__alloc((size_t)P * 2 + 2 * (size_t)depth, sizeof *q), *d = q + P,
          *bm = d + P, *s = bm + depth;
    retrlm_result res = RETRLM_OK;
    if (!cand || !q) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to re-rank");
        goto done;
    }
    if (!(p->bm25_weight >= 0.0f && p->bm25_weight < INFINITY)) {
        res = retrlm__fail(RETRLM_ERR_ARG, "datastore: bm25_weight %g is not finite and >= 0",
                           (double)p->bm25_weight);
        goto done;
    }
    if ((res = retrlm_datastore_retrieve(ds, NULL, query, len, depth, exclude_doc, cand, bm, &n)) ||
        (res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_QUERY, query, len, q)))
        goto done;
    n = retrlm__datastore_distinct(ds, cand, bm, n);
    for (i = 0; i < n; i++) {
        size_t tl;
        const char *t = retrlm_datastore_text(ds, cand[i], &tl);
        if ((res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_DOC, t, tl, d))) goto done;
        s[i] = retrlm_dot(q, d, P) + p->bm25_weight * bm[i]; // as the joint trainer scores
    }
    retrlm__rerank_order(n, cand, bm, s);
    *found = RETRLM__MIN(n, want);
    for (i = 0; i < *found; i++) ids[i] = cand[i], sc[i] = s[i];
done:
    RETRLM_FREE(cand), RETRLM_FREE(q);
    return res;
}

// the want best units by params' ranking, before exclusion (RERANK: after, in its first stage)
static retrlm_result retrlm__datastore_rank(const retrlm_datastore *ds,
                                            const retrlm_retrieve_params *p, const char *query,
                                            size_t len, int want, int64_t exclude_doc,
                                            int64_t *ids, float *sc, int *found) {
    retrlm_retrieve_mode mode = p ? p->mode : RETRLM_RETRIEVE_BM25;
    int depth = mode == RETRLM_RETRIEVE_RRF || mode == RETRLM_RETRIEVE_LINEAR
                    ? RETRLM__MIN(ds->n_units, RETRLM__MAX(want, p->depth > 0 ? p->depth : 100))
                    : want;
    int64_t *bi = NULL;
    float *bs = NULL, *q = NULL;
    int nb = 0, na = 0;
    retrlm_result res = RETRLM_OK;
    if ((unsigned)mode > RETRLM_RETRIEVE_RERANK)
        return retrlm__fail(RETRLM_ERR_ARG, "datastore: retrieve mode %d", (int)mode);
    if (mode == RETRLM_RETRIEVE_BM25) return retrlm_bm25_search(&ds->bm25, query, len, want, 0, ids, sc, found);
    if (!ds->encoder || !ds->dense.n)
        return retrlm__fail(RETRLM_ERR_ARG, "datastore: dense retrieval needs retrlm_datastore_embed first");
    if (mode == RETRLM_RETRIEVE_RERANK)
        return retrlm__datastore_rerank(ds, p, query, len, want, exclude_doc, ids, sc, found);
    bi = (int64_t *)retrlm__alloc(2 * (size_t)depth, sizeof *bi);
    bs = (float *)retrlm__alloc(2 * (size_t)depth, sizeof *bs);
    q = (float *)retrlm__alloc((size_t)ds->encoder->dim, sizeof *q);
    if (!bi || !bs || !q) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to search");
        goto done;
    }
    {
        retrlm_search_params sp;
        memset(&sp, 0, sizeof sp);
        sp.nprobe = p->nprobe;
        if ((res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_QUERY, query, len, q)) ||
            (res = retrlm_index_search(&ds->dense, q, 1, ds->dense.dim, depth, &sp, bi + depth,
                                       bs + depth)))
            goto done;
        for (nb = 0; nb < depth && bi[depth + nb] >= 0; nb++) {}
    }
    if (mode == RETRLM_RETRIEVE_DENSE) {
        *found = retrlm_fuse(p, NULL, NULL, 0, bi + depth, bs + depth, nb, want, ids, sc);
        goto done;
    }
    if ((res = retrlm_bm25_search(&ds->bm25, query, len, depth, 0, bi, bs, &na))) goto done;
    *found = retrlm_fuse(p, bi, bs, na, bi + depth, bs + depth, nb, want, ids, sc);
done:
    RETRLM_FREE(bi), RETRLM_FREE(bs), RETRLM_FREE(q);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_retrieve(const retrlm_datastore *ds,
                                                   const retrlm_retrieve_params *params,
                                                   const char *query, size_t len, int k,
                                                   int64_t exclude_doc, int *units,
                                                   float *scores, int *n_found) {
    // search a few more than k and drop the excluded document's units; if that leaves too
    // few while more matched, search again wider
    int want = k + 8, found, i, got;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(ds && k >= 0 && units && n_found);
    *n_found = 0;
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: search before commit");
    if (k == 0 || ds->n_units == 0) return RETRLM_OK;
    for (;;) {
        int64_t *ids;
        float *sc;
        if (want > ds->n_units) want = ds->n_units;
        ids = (int64_t *)retrlm__alloc((size_t)want, sizeof *ids);
        sc = (float *)retrlm__alloc((size_t)want, sizeof *sc);
        if (!ids || !sc) {
            RETRLM_FREE(ids), RETRLM_FREE(sc);
            return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to search");
        }
        found = 0;
        res = retrlm__datastore_rank(ds, params, query, len, want, exclude_doc, ids, sc, &found);
        for (i = 0, got = 0; !res && i < found && got < k; i++) {
            if (ds->unit_doc[ids[i]] == exclude_doc && exclude_doc != RETRLM_NO_DOC) continue;
            units[got] = (int)ids[i];
            if (scores) scores[got] = sc[i];
            got++;
        }
        RETRLM_FREE(ids), RETRLM_FREE(sc);
        if (res) return res;
        if (got == k || found < want || want == ds->n_units) {
            *n_found = got;
            return RETRLM_OK;
        }
        want = want > INT_MAX / 4 ? ds->n_units : want * 4;
    }
}

RETRLM_API retrlm_result retrlm_datastore_search(const retrlm_datastore *ds, const char *query,
                                                 size_t len, int k, int64_t exclude_doc,
                                                 int *units, float *scores, int *n_found) {
    return retrlm_datastore_retrieve(ds, NULL, query, len, k, exclude_doc, units, scores, n_found);
}

RETRLM_API const char *retrlm_datastore_text(const retrlm_datastore *ds, int u, size_t *len) {
    RETRLM_ASSERT(ds && ds->committed_ && u >= 0 && u < ds->n_units);
    if (len) *len = (size_t)(ds->text_off[u + 1] - ds->text_off[u]);
    return ds->text + ds->text_off[u];
}

RETRLM_API const int *retrlm_datastore_tokens(const retrlm_datastore *ds, int u, int *n_tokens) {
    RETRLM_ASSERT(ds && ds->committed_ && u >= 0 && u < ds->n_units);
    if (n_tokens) *n_tokens = (int)(ds->tok_off[u + 1] - ds->tok_off[u]);
    return ds->tokens + ds->tok_off[u];
}

// ---------------------------------------------------------------------------------------------
// files

// writes the datastore into w; *bm25_image gets an allocation the caller frees after saving
static retrlm_result retrlm__datastore_writer(const retrlm_datastore *ds, retrlm_writer *w,
                                              void **bm25_image) {
    int32_t head[2];
    size_t n = 0;
    // bm25 save commits pending updates first: the committed index has none, so it is not
    // changed and the cast is safe
    retrlm_bm25 *bm = (retrlm_bm25 *)&ds->bm25;
    retrlm_result res;
    *bm25_image = NULL;
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: save before commit");
    res = retrlm_bm25_save_memory(bm, NULL, 0, &n);
    if (res) return res;
    *bm25_image = retrlm__alloc(n, 1);
    if (!*bm25_image) return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory for the BM25 image");
    res = retrlm_bm25_save_memory(bm, *bm25_image, n, &n);
    head[0] = ds->chunk_tokens;
    head[1] = ds->n_units;
    if (!res) res = retrlm_writer_init(w, "datastore");
    if (!res) res = retrlm_writer_add_copy(w, "head", RETRLM_DTYPE_I32, head, 2);
    if (!res) res = retrlm_writer_add(w, "unit_doc", RETRLM_DTYPE_I64, ds->unit_doc, (size_t)ds->n_units);
    if (!res) res = retrlm_writer_add(w, "text_off", RETRLM_DTYPE_U64, ds->text_off, (size_t)ds->n_units + 1);
    if (!res) res = retrlm_writer_add(w, "text", RETRLM_DTYPE_U8, ds->text, (size_t)ds->text_off[ds->n_units]);
    if (!res) res = retrlm_writer_add(w, "tok_off", RETRLM_DTYPE_U64, ds->tok_off, (size_t)ds->n_units + 1);
    if (!res) res = retrlm_writer_add(w, "tokens", RETRLM_DTYPE_I32, ds->tokens, (size_t)ds->tok_off[ds->n_units]);
    if (!res) res = retrlm_writer_add(w, "bm25", RETRLM_DTYPE_U8, *bm25_image, n);
    return res;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_save(const retrlm_datastore *ds, const char *path) {
    retrlm_writer w;
    void *image;
    retrlm_result res;
    memset(&w, 0, sizeof w);
    res = retrlm__datastore_writer(ds, &w, &image);
    if (!res) res = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    RETRLM_FREE(image);
    return res;
}
#endif

RETRLM_API retrlm_result retrlm_datastore_save_memory(const retrlm_datastore *ds, void *buf,
                                                      size_t cap, size_t *size) {
    retrlm_writer w;
    void *image;
    retrlm_result res;
    memset(&w, 0, sizeof w);
    res = retrlm__datastore_writer(ds, &w, &image);
    if (!res) res = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    RETRLM_FREE(image);
    return res;
}

// checks the opened file against itself before anything is used
static retrlm_result retrlm__datastore_from_reader(retrlm_datastore *ds) {
    const retrlm_reader *r = &ds->reader_;
    const int32_t *head;
    const void *bm;
    size_t n, nbm, n_text, n_tok;
    int u;
    retrlm_result res;
    if ((res = retrlm_reader_get(r, "head", RETRLM_DTYPE_I32, (const void **)&head, &n))) return res;
    if (n != 2 || head[0] <= 0 || head[1] < 0)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'head': bad chunk size or unit count", r->source_);
    ds->chunk_tokens = head[0];
    ds->n_units = head[1];
    if ((res = retrlm_reader_get(r, "unit_doc", RETRLM_DTYPE_I64, (const void **)&ds->unit_doc, &n))) return res;
    if (n != (size_t)ds->n_units) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'unit_doc': %lu units, head says %d", r->source_, (unsigned long)n, ds->n_units);
    if ((res = retrlm_reader_get(r, "text", RETRLM_DTYPE_U8, (const void **)&ds->text, &n_text))) return res;
    if ((res = retrlm_reader_get(r, "tokens", RETRLM_DTYPE_I32, (const void **)&ds->tokens, &n_tok))) return res;
    if ((res = retrlm_reader_get(r, "text_off", RETRLM_DTYPE_U64, (const void **)&ds->text_off, &n))) return res;
    if (n != (size_t)ds->n_units + 1) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'text_off': %lu offsets for %d units", r->source_, (unsigned long)n, ds->n_units);
    if ((res = retrlm_reader_get(r, "tok_off", RETRLM_DTYPE_U64, (const void **)&ds->tok_off, &n))) return res;
    if (n != (size_t)ds->n_units + 1) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tok_off': %lu offsets for %d units", r->source_, (unsigned long)n, ds->n_units);
    if (ds->text_off[0] != 0 || ds->tok_off[0] != 0 || ds->text_off[ds->n_units] != n_text || ds->tok_off[ds->n_units] != n_tok)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: unit offsets do not span the text and token sections", r->source_);
    for (u = 0; u < ds->n_units; u++)
        if (ds->text_off[u + 1] < ds->text_off[u] || ds->tok_off[u + 1] < ds->tok_off[u])
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: offsets of unit %d decrease", r->source_, u);
    for (n = 0; n < n_tok; n++)
        if (ds->tokens[n] < 0) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens': negative id at %lu", r->source_, (unsigned long)n);
    if ((res = retrlm_reader_get(r, "bm25", RETRLM_DTYPE_U8, &bm, &nbm))) return res;
    if ((res = retrlm_bm25_load_memory(&ds->bm25, bm, nbm))) return res;
    if (ds->bm25.n_docs != ds->n_units)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: the BM25 index holds %d documents for %d units", r->source_, ds->bm25.n_docs, ds->n_units);
    for (u = 0; u < ds->n_units; u++)
        if (!retrlm_bm25_doc_length(&ds->bm25, u, NULL))
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: the BM25 index lacks unit %d", r->source_, u);
    ds->committed_ = 1;
    return RETRLM_OK;
}

static retrlm_result retrlm__datastore_finish_load(retrlm_datastore *ds, retrlm_result res) {
    if (!res) res = retrlm__datastore_from_reader(ds);
    if (res) { // keep the detail: free does not touch it
        retrlm_bm25_free(&ds->bm25);
        retrlm_reader_close(&ds->reader_);
        memset(ds, 0, sizeof *ds);
    }
    return res;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_load(retrlm_datastore *ds, const char *path) {
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    return retrlm__datastore_finish_load(ds, retrlm_reader_open(&ds->reader_, path, "datastore", 0));
}
#endif

RETRLM_API retrlm_result retrlm_datastore_load_memory(retrlm_datastore *ds, const void *data,
                                                      size_t size) {
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    return retrlm__datastore_finish_load(ds, retrlm_reader_open_memory(&ds->reader_, data, size, "datastore", 0));
}

// ---- RETRO neighbours ------------------------------------------------------------------------

// whether unit u comes from one of the documents of doc (m tokens' documents)
static int retrlm__unit_in_docs(const retrlm_datastore *ds, int u, const int64_t *doc, int m) {
    int t;
    for (t = 0; t < m; t++)
        if (ds->unit_doc[u] == doc[t]) return 1;
    return 0;
}

// Unit u's tokens, then those of the units after it in its document (its continuation) unless
// unit_only, len at most, into out; returns how many were written.
RETRLM__PRIVATE int retrlm__unit_and_continuation(const retrlm_datastore *ds, int u, int len,
                                                  int unit_only, int *out) {
    int v, w = 0;
    for (v = u; v < ds->n_units && w < len; v++) {
        int nt, e;
        const int *ids;
        if (v > u && (unit_only || ds->unit_doc[v] != ds->unit_doc[u])) break;
        ids = retrlm_datastore_tokens(ds, v, &nt);
        if (!out) w += RETRLM__MIN(nt, len - w);
        else
            for (e = 0; e < nt && w < len; e++) out[w++] = ids[e];
    }
    return w;
}

RETRLM_API float retrlm_retro_overlap(const int *x, int m, const int *y, int len) {
    int i, j, n = 0, hit = 0, ny = 0;
    RETRLM_ASSERT((x || m <= 0) && (y || len <= 0));
    while (ny < len && y[ny] >= 0) ny++;
    for (i = 0; i + 1 < m; i++) {
        for (j = 0; j < i; j++) // counted once: an earlier copy of the same bigram
            if (x[j] == x[i] && x[j + 1] == x[i + 1]) break;
        if (j < i) continue;
        n++;
        for (j = 0; j + 1 < ny; j++)
            if (y[j] == x[i] && y[j + 1] == x[i + 1]) break;
        hit += j + 1 < ny;
    }
    return n ? (float)hit / (float)n : 0.0f;
}

// the k neighbours (k, len) of one chunk x (m tokens, documents doc or NULL); cand has depth
static retrlm_result retrlm__retro_chunk(const retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                         const retrlm_retro_neighbours_config *c, const int *x,
                                         const int64_t *doc, int *cand, int *out) {
    char *q = NULL;
    size_t cap = 0, qlen = 0;
    int i, j = 0, nf = 0, t;
    retrlm_result r;
    for (t = 0; t < c->k * c->len; t++) out[t] = -1;
    r = retrlm__decode_grow(tok, x, (size_t)c->chunk, &q, &cap, &qlen);
    if (!r) r = retrlm_datastore_retrieve(ds, &c->retrieve, q, qlen, c->depth,
                                          doc ? doc[0] : RETRLM_NO_DOC, cand, NULL, &nf);
    RETRLM_FREE(q);
    for (i = 0; i < nf && j < c->k && !r; i++) {
        int u = cand[i], *row = out + (size_t)j * c->len;
        if (doc && retrlm__unit_in_docs(ds, u, doc, c->chunk)) continue;
        if (!retrlm__unit_and_continuation(ds, u, c->len, c->unit_only, row)) continue;
        if (c->min_overlap > 0.0f &&
            retrlm_retro_overlap(x, c->chunk, row, c->len) < c->min_overlap) {
            for (t = 0; t < c->len; t++) row[t] = -1;
            continue;
        }
        j++;
    }
    return r;
}

#define RETRLM__NB_BLOCK 256

RETRLM_API retrlm_result retrlm_retro_neighbours_build(retrlm_retro_neighbours *nb,
                                                       const retrlm_datastore *ds,
                                                       const retrlm_tokenizer *tok,
                                                       const int *stream, size_t n,
                                                       const int64_t *doc,
                                                       const retrlm_retro_neighbours_config *cfg) {
    retrlm_retro_neighbours_config c;
    retrlm_result r = RETRLM_OK;
    int64_t nc, b0;
    int *cand;
    retrlm_result *err;
    RETRLM_ASSERT(nb && ds && tok && cfg && (stream || !n));
    memset(nb, 0, sizeof *nb);
    c = *cfg;
    if (!c.chunk) c.chunk = 64;
    if (!c.k) c.k = 2;
    if (!c.len && c.chunk > 0) c.len = c.chunk <= 4096 ? 2 * c.chunk : 8192;
    if (!c.depth) c.depth = 4 * c.k;
    if (!ds->committed_ || c.chunk < 1 || c.chunk > 65536 || c.k < 1 || c.k > 64 || c.len < 1 ||
        c.len > 8192 || c.depth < c.k || c.depth > 4096 ||
        !(c.min_overlap >= 0.0f && c.min_overlap <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_neighbours: chunk %d (1..65536), k %d (1..64), "
                            "len %d (1..8192), depth %d (k..4096), min_overlap %g (0..1)%s", c.chunk,
                            c.k, c.len, c.depth, (double)c.min_overlap,
                            ds->committed_ ? "" : ", and a committed datastore");
    nc = (int64_t)(n / (size_t)c.chunk);
    nb->chunk = c.chunk;
    nb->k = c.k;
    nb->len = c.len;
    nb->n_chunks = nc;
    if ((uint64_t)nc > (uint64_t)SIZE_MAX / sizeof(int) / (size_t)c.k / (size_t)c.len)
        return retrlm__fail(RETRLM_ERR_NOMEM, "retro_neighbours: %lld chunks are too many",
                            (long long)nc);
    nb->owned_ = (int *)retrlm__alloc((size_t)nc * (size_t)c.k * (size_t)c.len + 1, sizeof(int));
    cand = (int *)retrlm__alloc((size_t)RETRLM__NB_BLOCK * (size_t)c.depth, sizeof(int));
    err = (retrlm_result *)retrlm__alloc(RETRLM__NB_BLOCK, sizeof(retrlm_result));
    if (!nb->owned_ || !cand || !err) {
        RETRLM_FREE(cand);
        RETRLM_FREE(err);
        retrlm_retro_neighbours_free(nb);
        return retrlm__fail(RETRLM_ERR_NOMEM, "retro_neighbours: no memory for %lld chunks",
                            (long long)nc);
    }
    nb->tokens = nb->owned_;
    for (b0 = 0; b0 < nc && !r; b0 += RETRLM__NB_BLOCK) {
        int nblk = (int)RETRLM__MIN((int64_t)RETRLM__NB_BLOCK, nc - b0), i;
        RETRLM__PARALLEL_FOR_IF(nblk > 1)
        for (i = 0; i < nblk; i++) {
            int64_t ch = b0 + i;
            size_t at = (size_t)ch * (size_t)c.chunk;
            err[i] = retrlm__retro_chunk(ds, tok, &c, stream + at, doc ? doc + at : NULL,
                                         cand + (size_t)i * c.depth,
                                         nb->owned_ + (size_t)ch * c.k * c.len);
        }
        for (i = 0; i < nblk && !r; i++)
            if (err[i])
                r = retrlm__fail(err[i], "retro_neighbours: chunk %lld: %s",
                                 (long long)(b0 + i), retrlm_result_string(err[i]));
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "neighbours", (double)(b0 + nblk),
                                     (double)nc);
    }
    RETRLM_FREE(cand);
    RETRLM_FREE(err);
    if (r) retrlm_retro_neighbours_free(nb);
    return r;
}

RETRLM_API void retrlm_retro_neighbours_free(retrlm_retro_neighbours *nb) {
    if (!nb) return;
    RETRLM_FREE(nb->owned_);
    retrlm_reader_close(&nb->reader_);
    memset(nb, 0, sizeof *nb);
}

RETRLM_API const int *retrlm_retro_neighbours_chunk(const retrlm_retro_neighbours *nb,
                                                    int64_t c) {
    RETRLM_ASSERT(nb && c >= 0 && c < nb->n_chunks);
    return nb->tokens + (size_t)c * (size_t)nb->k * (size_t)nb->len;
}

static retrlm_result retrlm__retro_nb_writer(const retrlm_retro_neighbours *nb, retrlm_writer *w) {
    int32_t shape[3];
    int64_t n = nb->n_chunks;
    retrlm_result r;
    shape[0] = nb->chunk;
    shape[1] = nb->k;
    shape[2] = nb->len;
    if ((r = retrlm_writer_init(w, "neighbours")) ||
        (r = retrlm_writer_add_copy(w, "shape", RETRLM_DTYPE_I32, shape, 3)) ||
        (r = retrlm_writer_add_copy(w, "n_chunks", RETRLM_DTYPE_I64, &n, 1)))
        return r;
    return retrlm_writer_add(w, "tokens", RETRLM_DTYPE_I32, nb->tokens,
                             (size_t)n * (size_t)nb->k * (size_t)nb->len);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_retro_neighbours_save(const retrlm_retro_neighbours *nb,
                                                      const char *path) {
    retrlm_writer w;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__retro_nb_writer(nb, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}
#endif

RETRLM_API retrlm_result retrlm_retro_neighbours_save_memory(const retrlm_retro_neighbours *nb,
                                                             void *buf, size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__retro_nb_writer(nb, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// checks the opened file: shape in range, the token count is n_chunks * k * len, every id is
// >= -1 and a neighbour's ids after its first -1 are all -1
static retrlm_result retrlm__retro_nb_from_reader(retrlm_retro_neighbours *nb, retrlm_result r) {
    const retrlm_reader *rd = &nb->reader_;
    int32_t shape[3];
    int64_t n;
    size_t cnt = 0, i, j;
    if (!r) r = retrlm_reader_read(rd, "shape", RETRLM_DTYPE_I32, shape, 3);
    if (!r) r = retrlm_reader_read(rd, "n_chunks", RETRLM_DTYPE_I64, &n, 1);
    if (!r && (shape[0] < 1 || shape[0] > 65536 || shape[1] < 1 || shape[1] > 64 || shape[2] < 1 ||
               shape[2] > 8192 || n < 0 || (uint64_t)n > (uint64_t)SIZE_MAX / 64 / 8192))
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: shape m %d, k %d, len %d, %lld chunks is out of "
                         "range", rd->source_, shape[0], shape[1], shape[2], (long long)n);
    if (!r) r = retrlm_reader_get(rd, "tokens", RETRLM_DTYPE_I32, (const void **)&nb->tokens, &cnt);
    if (!r && cnt != (size_t)n * (size_t)shape[1] * (size_t)shape[2])
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens' holds %lu ids, the shape needs "
                         "%lld x %d x %d", rd->source_, (unsigned long)cnt, (long long)n, shape[1],
                         shape[2]);
    for (i = 0; !r && i < cnt; i += (size_t)shape[2]) {
        int ended = 0;
        for (j = 0; j < (size_t)shape[2] && !r; j++) {
            int id = nb->tokens[i + j];
            if (id < -1 || (ended && id != -1))
                r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens': id %d at %lu", rd->source_,
                                 id, (unsigned long)(i + j));
            ended |= id == -1;
        }
    }
    if (r) {
        retrlm_reader_close(&nb->reader_);
        memset(nb, 0, sizeof *nb);
        return r;
    }
    nb->chunk = shape[0];
    nb->k = shape[1];
    nb->len = shape[2];
    nb->n_chunks = n;
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_retro_neighbours_load(retrlm_retro_neighbours *nb,
                                                      const char *path) {
    RETRLM_ASSERT(nb && path);
    memset(nb, 0, sizeof *nb);
    return retrlm__retro_nb_from_reader(nb, retrlm_reader_open(&nb->reader_, path,
                                                               "neighbours", 0));
}
#endif

RETRLM_API retrlm_result retrlm_retro_neighbours_load_memory(retrlm_retro_neighbours *nb,
                                                             const void *data, size_t size) {
    RETRLM_ASSERT(nb && data);
    memset(nb, 0, sizeof *nb);
    return retrlm__retro_nb_from_reader(nb, retrlm_reader_open_memory(&nb->reader_, data, size,
                                                                      "neighbours", 0));
}
