#include "internal.h"

// Dimension legend: d vector length, n vectors held, nq queries, k results a query, nlist IVF
// lists, kk = k or rerank * k candidates. Internally a score is always "larger is better":
// L2 uses the negated squared distance and turns it back into a distance on output.

#define RETRLM__IDX_MAX_DIM (1 << 20)
#define RETRLM__IDX_MAX_NLIST (1 << 24)
#define RETRLM__IDX_SCAN 256     // rows scored into a stack buffer before the heap sees them
#define RETRLM__IDX_SEG 16384    // rows a task of a single-query flat scan
#define RETRLM__IDX_QB 128       // queries a block of a batched flat search
#define RETRLM__IDX_NB 1024      // database rows a block of a batched flat search
#define RETRLM__IDX_CHUNK 65536  // rows between two progress reports of add
#define RETRLM__IDX_FORMAT 1     // version of the index sections inside the container

// one f32 row, through the scan (so its bits match a row scored in a block)
static float retrlm__ip_f32(const float *q, const float *x, int d) {
    float out;
    retrlm__scan_f32(&out, q, x, 0, 1, d, 0);
    return out;
}

static float retrlm__l2_f32(const float *q, const float *x, int d) {
    float out;
    retrlm__scan_f32(&out, q, x, 0, 1, d, 1);
    return out;
}

static int retrlm__all_finite(const float *x, size_t count, size_t *bad) {
    size_t i;
    for (i = 0; i < count; i++) {
        // x - x is 0 for finite x and NaN for inf or NaN
        if ((x[i] - x[i]) != 0.0f) {
            *bad = i;
            return 0;
        }
    }
    return 1;
}

static void retrlm__normalize(float *x, int d) {
    double s = 0.0;
    int j;
    for (j = 0; j < d; j++) s += (double)x[j] * x[j];
    if (s > 0.0) {
        float inv = (float)(1.0 / sqrt(s));
        for (j = 0; j < d; j++) x[j] *= inv;
    }
}

static retrlm_result retrlm__check_vectors(const char *what, const float *x, size_t n, int d) {
    size_t bad = 0;
    if (n && !x) return retrlm__fail(RETRLM_ERR_ARG, "%s: NULL vectors", what);
    if (!retrlm__all_finite(x, n * (size_t)d, &bad))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: vector %lu, component %d is %s; values must be finite",
                            what, (unsigned long)(bad / (size_t)d), (int)(bad % (size_t)d),
                            x[bad] != x[bad] ? "NaN" : "infinite");
    return RETRLM_OK;
}

static int retrlm__keeps_f32(const retrlm_index *ix) {
    return ix->storage == RETRLM_STORAGE_F32 || ix->rerank > 0;
}

// ---------------------------------------------------------------------------------------------
// lifecycle

static void retrlm__index_drop_arrays(retrlm_index *ix) {
    if (ix->borrowed_) {
        retrlm_reader_close(&ix->reader_);
    } else {
        RETRLM_FREE((void *)ix->ids);
        RETRLM_FREE((void *)ix->vectors);
        RETRLM_FREE((void *)ix->codes);
        RETRLM_FREE((void *)ix->sq_min);
        RETRLM_FREE((void *)ix->sq_step);
        RETRLM_FREE((void *)ix->centroids);
        RETRLM_FREE((void *)ix->list_offsets);
    }
    RETRLM_FREE(ix->cnorms_);
    ix->ids = NULL;
    ix->vectors = NULL;
    ix->codes = NULL;
    ix->sq_min = ix->sq_step = ix->centroids = NULL;
    ix->list_offsets = NULL;
    ix->cnorms_ = NULL;
    ix->borrowed_ = 0;
}

RETRLM_API void retrlm_index_free(retrlm_index *ix) {
    if (!ix) return;
    retrlm__index_drop_arrays(ix);
    memset(ix, 0, sizeof *ix);
}

static retrlm_result retrlm__index_check_config(const retrlm_index_config *c) {
    if (c->dim <= 0 || c->dim > RETRLM__IDX_MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG, "index: dim %d, expected 1..%d", c->dim, RETRLM__IDX_MAX_DIM);
    if (c->metric < 0 || c->metric > 2)
        return retrlm__fail(RETRLM_ERR_ARG, "index: unknown metric %d (RETRLM_METRIC_IP, _L2, _COSINE)", c->metric);
    if (c->storage < 0 || c->storage > 1)
        return retrlm__fail(RETRLM_ERR_ARG, "index: unknown storage %d (RETRLM_STORAGE_F32, _SQ8)", c->storage);
    if (c->nlist < 0 || c->nlist > RETRLM__IDX_MAX_NLIST)
        return retrlm__fail(RETRLM_ERR_ARG, "index: nlist %d, expected 0 (flat) .. %d", c->nlist, RETRLM__IDX_MAX_NLIST);
    if (c->nprobe < 0 || c->rerank < 0 || c->rerank > 65536 || c->kmeans_iters < 0 ||
        c->max_points_per_list < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "index: negative nprobe, rerank, kmeans_iters or max_points_per_list (or rerank > 65536)");
    if (c->kmeans_init != RETRLM_KMEANS_RANDOM && c->kmeans_init != RETRLM_KMEANS_PLUSPLUS)
        return retrlm__fail(RETRLM_ERR_ARG, "index: kmeans_init %d, expected RETRLM_KMEANS_RANDOM or _PLUSPLUS", c->kmeans_init);
    return RETRLM_OK;
}

static void retrlm__index_settings(retrlm_index *ix, const retrlm_index_config *c) {
    ix->kmeans_iters_ = c->kmeans_iters ? c->kmeans_iters : 10;
    ix->kmeans_init_ = c->kmeans_init;
    ix->max_points_ = c->max_points_per_list ? c->max_points_per_list : 256;
    ix->seed_ = c->seed ? c->seed : 1234;
    ix->progress_ = c->progress;
    ix->progress_user_ = c->progress_user;
}

RETRLM_API retrlm_result retrlm_index_init(retrlm_index *ix, const retrlm_index_config *cfg) {
    retrlm_result r;
    RETRLM_ASSERT(ix && cfg);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm__index_check_config(cfg)) != RETRLM_OK) return r;
    ix->dim = cfg->dim;
    ix->metric = cfg->metric;
    ix->storage = cfg->storage;
    ix->nlist = cfg->nlist;
    ix->nprobe = cfg->nprobe ? cfg->nprobe : 1;
    ix->rerank = cfg->storage == RETRLM_STORAGE_SQ8 ? cfg->rerank : 0;
    ix->trained = cfg->nlist == 0 && cfg->storage == RETRLM_STORAGE_F32;
    retrlm__index_settings(ix, cfg);
    return RETRLM_OK;
}

// Copies arrays borrowed from a loaded file into owned memory, so they can change.
static retrlm_result retrlm__index_own(retrlm_index *ix) {
    size_t nd = ix->n * (size_t)ix->dim, d = (size_t)ix->dim, cd = (size_t)ix->nlist * d;
    void *ids = NULL, *vec = NULL, *codes = NULL, *mn = NULL, *st = NULL, *cen = NULL, *off = NULL;
    int fail = 0;
    if (!ix->borrowed_) return RETRLM_OK;
#define RETRLM__DUP(dst, src, count, T)                                       \
    if (src) {                                                                \
        dst = retrlm__alloc((count) ? (count) : 1, sizeof(T));                \
        if (!dst) fail = 1;                                                   \
        else if (count) memcpy(dst, src, (count) * sizeof(T));                \
    }
    RETRLM__DUP(ids, ix->ids, ix->n, int64_t)
    RETRLM__DUP(vec, ix->vectors, nd, float)
    RETRLM__DUP(codes, ix->codes, nd, uint8_t)
    RETRLM__DUP(mn, ix->sq_min, d, float)
    RETRLM__DUP(st, ix->sq_step, d, float)
    RETRLM__DUP(cen, ix->centroids, cd, float)
    RETRLM__DUP(off, ix->list_offsets, (size_t)ix->nlist + 1, uint64_t)
#undef RETRLM__DUP
    if (fail) {
        RETRLM_FREE(ids);
        RETRLM_FREE(vec);
        RETRLM_FREE(codes);
        RETRLM_FREE(mn);
        RETRLM_FREE(st);
        RETRLM_FREE(cen);
        RETRLM_FREE(off);
        return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory to copy the loaded index before changing it");
    }
    retrlm_reader_close(&ix->reader_);
    ix->borrowed_ = 0;
    ix->ids = (const int64_t *)ids;
    ix->vectors = (const float *)vec;
    ix->codes = (const uint8_t *)codes;
    ix->sq_min = (const float *)mn;
    ix->sq_step = (const float *)st;
    ix->centroids = (const float *)cen;
    ix->list_offsets = (const uint64_t *)off;
    return RETRLM_OK;
}

RETRLM_API size_t retrlm_index_bytes(const retrlm_index *ix) {
    size_t nd = ix->n * (size_t)ix->dim, b = ix->n * sizeof(int64_t);
    if (ix->vectors) b += nd * sizeof(float);
    if (ix->codes) b += nd;
    if (ix->sq_min) b += 2 * (size_t)ix->dim * sizeof(float);
    if (ix->centroids) b += (size_t)ix->nlist * (size_t)ix->dim * sizeof(float);
    if (ix->list_offsets) b += ((size_t)ix->nlist + 1) * sizeof(uint64_t);
    if (ix->cnorms_) b += (size_t)ix->nlist * sizeof(float);
    return b;
}

// ---------------------------------------------------------------------------------------------
// SQ8 encoding (FAISS ScalarQuantizer QT_8bit with the min/max range): code = floor of the
// position in [min, max] times 255, clamped; decoded as the middle of its step.

static void retrlm__sq8_encode(const float *x, uint8_t *code, const float *mn, const float *step,
                               int d) {
    int j;
    for (j = 0; j < d; j++) {
        float t = step[j] > 0.0f ? (x[j] - mn[j]) / step[j] : 0.0f;
        int c = t <= 0.0f ? 0 : t >= 255.0f ? 255 : (int)t;
        code[j] = (uint8_t)c;
    }
}

// ---------------------------------------------------------------------------------------------
// k-means (Lloyd), assignment through the blocked matrix multiply.

#define RETRLM__ASSIGN_BLOCK 256

// For each row of x (n, d): the best of k centroids (ties: lowest index) and its score.
// l2: score 2 x.c - |c|^2 (the nearest); otherwise x.c (the largest inner product).
static retrlm_result retrlm__assign(const float *x, size_t n, int d, const float *cent,
                                    const float *cnorms, int k, int l2, int *out, float *out_score) {
    long nb = (long)((n + RETRLM__ASSIGN_BLOCK - 1) / RETRLM__ASSIGN_BLOCK), b;
    int failed = 0;
    RETRLM__PARALLEL_FOR_IF(nb > 1)
    for (b = 0; b < nb; b++) {
        size_t r0 = (size_t)b * RETRLM__ASSIGN_BLOCK;
        int m = (int)RETRLM__MIN((size_t)RETRLM__ASSIGN_BLOCK, n - r0), i, c;
        float *sc = (float *)retrlm__alloc((size_t)m * (size_t)k, sizeof(float));
        if (!sc || retrlm_matmul(sc, x + r0 * (size_t)d, cent, NULL, m, k, d, 0) != RETRLM_OK) {
            failed = 1; // benign race: every writer stores 1
            RETRLM_FREE(sc);
            continue;
        }
        for (i = 0; i < m; i++) {
            const float *row = sc + (size_t)i * (size_t)k;
            int best = 0;
            float bs = -INFINITY;
            for (c = 0; c < k; c++) {
                float s = l2 ? 2.0f * row[c] - cnorms[c] : row[c];
                if (s > bs) {
                    bs = s;
                    best = c;
                }
            }
            out[r0 + (size_t)i] = best;
            if (out_score) out_score[r0 + (size_t)i] = bs;
        }
        RETRLM_FREE(sc);
    }
    if (failed) return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory to assign vectors to centroids");
    return RETRLM_OK;
}

static void retrlm__sq_norms(const float *x, size_t n, int d, float *out) {
    long i;
    RETRLM__PARALLEL_FOR_IF(n * (size_t)d > 100000)
    for (i = 0; i < (long)n; i++) out[i] = retrlm__ip_f32(x + (size_t)i * (size_t)d, x + (size_t)i * (size_t)d, d);
}

// k-means++ seeding: each next centroid is a point drawn with probability proportional to its
// squared distance to the nearest centroid chosen so far.
static retrlm_result retrlm__kmeanspp(float *cent, int k, const float *x, size_t m, int d,
                                      retrlm_rng *rng, const retrlm_index *st) {
    double *mind = (double *)retrlm__alloc(m, sizeof(double));
    size_t pick = (size_t)retrlm_rng_below(rng, m);
    int c;
    retrlm_result r = RETRLM_OK;
    if (!mind) return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for k-means++");
    for (c = 0; c < k; c++) {
        const float *cc = cent + (size_t)c * (size_t)d;
        double total = 0.0, u, acc = 0.0;
        long i;
        memcpy(cent + (size_t)c * (size_t)d, x + pick * (size_t)d, (size_t)d * sizeof(float));
        RETRLM__PARALLEL_FOR_IF(m * (size_t)d > 100000)
        for (i = 0; i < (long)m; i++) {
            double v = retrlm__l2_f32(cc, x + (size_t)i * (size_t)d, d);
            if (c == 0 || v < mind[i]) mind[i] = v;
        }
        if (c + 1 == k) break;
        for (i = 0; i < (long)m; i++) total += mind[i];
        if (!(total > 0.0)) { // every point is on a centroid: any point will do
            pick = (size_t)retrlm_rng_below(rng, m);
            continue;
        }
        u = retrlm_rng_double(rng) * total;
        pick = m - 1;
        for (i = 0; i < (long)m; i++) {
            acc += mind[i];
            if (acc > u && mind[i] > 0.0) {
                pick = (size_t)i;
                break;
            }
        }
        if ((c & 63) == 63 &&
            (r = retrlm__progress(st->progress_, st->progress_user_, "kmeans++", c + 1, k)) != RETRLM_OK)
            break;
    }
    RETRLM_FREE(mind);
    return r;
}

// The k-means core on the (already sampled, normalised if spherical) points x (m, d).
static retrlm_result retrlm__kmeans_run(float *cent, int k, const float *x, size_t m, int d,
                                        int spherical, const retrlm_index *st) {
    retrlm_rng rng;
    int *assign = NULL, it, c;
    size_t *count = NULL, *start = NULL, *order = NULL, i;
    float *cn = NULL;
    retrlm_result r = RETRLM_OK;
    retrlm_rng_seed(&rng, st->seed_);
    assign = (int *)retrlm__alloc(m, sizeof(int));
    order = (size_t *)retrlm__alloc(m, sizeof(size_t));
    count = (size_t *)retrlm__alloc((size_t)k, sizeof(size_t));
    start = (size_t *)retrlm__alloc((size_t)k + 1, sizeof(size_t));
    cn = (float *)retrlm__alloc((size_t)k, sizeof(float));
    if (!assign || !order || !count || !start || !cn) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for %lu points", (unsigned long)m);
        goto done;
    }
    if (st->kmeans_init_ == RETRLM_KMEANS_PLUSPLUS) {
        if ((r = retrlm__kmeanspp(cent, k, x, m, d, &rng, st)) != RETRLM_OK) goto done;
    } else { // k distinct points: a partial Fisher-Yates shuffle of the indices
        for (i = 0; i < m; i++) order[i] = i;
        for (c = 0; c < k; c++) {
            size_t j = (size_t)c + (size_t)retrlm_rng_below(&rng, m - (size_t)c), t = order[c];
            order[c] = order[j];
            order[j] = t;
            memcpy(cent + (size_t)c * (size_t)d, x + order[c] * (size_t)d, (size_t)d * sizeof(float));
        }
    }
    if (spherical)
        for (c = 0; c < k; c++) retrlm__normalize(cent + (size_t)c * (size_t)d, d);
    for (it = 0; it < st->kmeans_iters_; it++) {
        long cc;
        retrlm__sq_norms(cent, (size_t)k, d, cn);
        if ((r = retrlm__assign(x, m, d, cent, cn, k, !spherical, assign, NULL)) != RETRLM_OK) goto done;
        // group the points by centroid (counting sort, stable): each centroid then sums its own
        // points in index order on one thread, so the result does not depend on the threads
        memset(count, 0, (size_t)k * sizeof(size_t));
        for (i = 0; i < m; i++) count[assign[i]]++;
        start[0] = 0;
        for (c = 0; c < k; c++) start[c + 1] = start[c] + count[c];
        for (i = 0; i < m; i++) order[start[assign[i]]++] = i;
        for (c = k; c > 0; c--) start[c] = start[c - 1];
        start[0] = 0;
        RETRLM__PARALLEL_FOR
        for (cc = 0; cc < k; cc++) {
            float *ce = cent + (size_t)cc * (size_t)d;
            size_t p;
            int j;
            if (!count[cc]) continue;
            for (j = 0; j < d; j++) ce[j] = 0.0f;
            for (p = start[cc]; p < start[cc + 1]; p++) {
                const float *xp = x + order[p] * (size_t)d;
                RETRLM__SIMD
                for (j = 0; j < d; j++) ce[j] += xp[j];
            }
            if (spherical) retrlm__normalize(ce, d);
            else {
                float inv = 1.0f / (float)count[cc];
                for (j = 0; j < d; j++) ce[j] *= inv;
            }
        }
        // empty clusters: split the largest one in two, nudging the copies apart (FAISS does
        // the same with a random cluster chosen by size)
        for (c = 0; c < k; c++) {
            int big = 0, j, b;
            float *ce = cent + (size_t)c * (size_t)d, *cb;
            if (count[c]) continue;
            for (b = 1; b < k; b++)
                if (count[b] > count[big]) big = b;
            cb = cent + (size_t)big * (size_t)d;
            for (j = 0; j < d; j++) {
                float e = (j & 1) ? -1.0f / 1024.0f : 1.0f / 1024.0f;
                ce[j] = cb[j] * (1.0f + e);
                cb[j] = cb[j] * (1.0f - e);
            }
            if (spherical) {
                retrlm__normalize(ce, d);
                retrlm__normalize(cb, d);
            }
            count[c] = count[big] / 2;
            count[big] -= count[c];
        }
        if ((r = retrlm__progress(st->progress_, st->progress_user_, "kmeans", it + 1,
                                  st->kmeans_iters_)) != RETRLM_OK)
            goto done;
    }
done:
    RETRLM_FREE(assign);
    RETRLM_FREE(order);
    RETRLM_FREE(count);
    RETRLM_FREE(start);
    RETRLM_FREE(cn);
    return r;
}

// Samples at most k * max_points rows of x (normalised for cosine) and runs k-means.
static retrlm_result retrlm__kmeans_sampled(float *cent, int k, const float *x, size_t n, int d,
                                            retrlm_metric metric, const retrlm_index *st) {
    size_t cap = (size_t)k * (size_t)st->max_points_, m = n, i;
    float *xs = NULL;
    retrlm_result r;
    int spherical = metric != RETRLM_METRIC_L2;
    if (n < (size_t)k)
        return retrlm__fail(RETRLM_ERR_ARG, "kmeans: %lu training vectors for %d centroids; need at least as many vectors as centroids",
                            (unsigned long)n, k);
    if (cap < n) m = cap;
    if (m < n || metric == RETRLM_METRIC_COSINE) {
        xs = (float *)retrlm__alloc(m, (size_t)d * sizeof(float));
        if (!xs) return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for %lu training vectors", (unsigned long)m);
        if (m < n) { // a uniform sample without replacement, kept in file order
            size_t *idx = (size_t *)retrlm__alloc(n, sizeof(size_t));
            retrlm_rng rng;
            if (!idx) {
                RETRLM_FREE(xs);
                return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory to sample %lu vectors", (unsigned long)n);
            }
            retrlm_rng_seed(&rng, st->seed_ ^ 0x5A4D504C45ull);
            for (i = 0; i < n; i++) idx[i] = i;
            for (i = 0; i < m; i++) {
                size_t j = i + (size_t)retrlm_rng_below(&rng, n - i), t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
            { // copy the chosen rows in file order
                size_t w = 0;
                unsigned char *flag = (unsigned char *)retrlm__calloc(n, 1);
                if (!flag) {
                    RETRLM_FREE(idx);
                    RETRLM_FREE(xs);
                    return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory to sample");
                }
                for (i = 0; i < m; i++) flag[idx[i]] = 1;
                for (i = 0; i < n; i++)
                    if (flag[i]) memcpy(xs + (w++) * (size_t)d, x + i * (size_t)d, (size_t)d * sizeof(float));
                RETRLM_FREE(flag);
            }
            RETRLM_FREE(idx);
        } else {
            memcpy(xs, x, n * (size_t)d * sizeof(float));
        }
        if (metric == RETRLM_METRIC_COSINE)
            for (i = 0; i < m; i++) retrlm__normalize(xs + i * (size_t)d, d);
    }
    r = retrlm__kmeans_run(cent, k, xs ? xs : x, m, d, spherical, st);
    RETRLM_FREE(xs);
    return r;
}

RETRLM_API retrlm_result retrlm_kmeans(float *centroids, int k, const float *x, size_t n, int dim,
                                       retrlm_metric metric, const retrlm_index_config *cfg) {
    retrlm_index st;
    retrlm_index_config c;
    retrlm_result r;
    RETRLM_ASSERT(centroids);
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    c.dim = dim;
    c.metric = metric;
    c.nlist = k;
    c.storage = RETRLM_STORAGE_F32;
    c.rerank = 0;
    if (k <= 0) return retrlm__fail(RETRLM_ERR_ARG, "kmeans: k = %d, expected > 0", k);
    if ((r = retrlm__index_check_config(&c)) != RETRLM_OK) return r;
    if ((r = retrlm__check_vectors("kmeans", x, n, dim)) != RETRLM_OK) return r;
    memset(&st, 0, sizeof st);
    retrlm__index_settings(&st, &c);
    return retrlm__kmeans_sampled(centroids, k, x, n, dim, metric, &st);
}

// ---------------------------------------------------------------------------------------------
// training

static retrlm_result retrlm__set_cnorms(retrlm_index *ix) {
    RETRLM_FREE(ix->cnorms_);
    ix->cnorms_ = NULL;
    if (!ix->nlist || !ix->centroids) return RETRLM_OK;
    ix->cnorms_ = (float *)retrlm__alloc((size_t)ix->nlist, sizeof(float));
    if (!ix->cnorms_) return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory for centroid norms");
    retrlm__sq_norms(ix->centroids, (size_t)ix->nlist, ix->dim, ix->cnorms_);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_train(retrlm_index *ix, const float *x, size_t n, int dim) {
    retrlm_result r;
    float *cent = NULL, *mn = NULL, *step = NULL, *xn = NULL;
    uint64_t *off = NULL;
    size_t i;
    int j, d = ix->dim;
    RETRLM_ASSERT(ix);
    if (dim != ix->dim) return retrlm__fail(RETRLM_ERR_ARG, "index train: vectors of dim %d, the index has dim %d", dim, ix->dim);
    if (ix->n) return retrlm__fail(RETRLM_ERR_ARG, "index train: the index holds %lu vectors; train an empty index", (unsigned long)ix->n);
    if (ix->nlist == 0 && ix->storage == RETRLM_STORAGE_F32) return RETRLM_OK; // nothing to learn
    if (n == 0) return retrlm__fail(RETRLM_ERR_ARG, "index train: no training vectors");
    if ((r = retrlm__check_vectors("index train", x, n, dim)) != RETRLM_OK) return r;
    if (ix->nlist) {
        cent = (float *)retrlm__alloc((size_t)ix->nlist, (size_t)d * sizeof(float));
        off = (uint64_t *)retrlm__calloc((size_t)ix->nlist + 1, sizeof(uint64_t));
        if (!cent || !off) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "index train: no memory for %d centroids", ix->nlist);
            goto fail;
        }
        if ((r = retrlm__kmeans_sampled(cent, ix->nlist, x, n, d, ix->metric, ix)) != RETRLM_OK) goto fail;
    }
    if (ix->storage == RETRLM_STORAGE_SQ8) { // per-dimension range over all training vectors
        mn = (float *)retrlm__alloc((size_t)d, sizeof(float));
        step = (float *)retrlm__alloc((size_t)d, sizeof(float));
        if (ix->metric == RETRLM_METRIC_COSINE) xn = (float *)retrlm__alloc((size_t)d, sizeof(float));
        if (!mn || !step || (ix->metric == RETRLM_METRIC_COSINE && !xn)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "index train: no memory");
            goto fail;
        }
        for (j = 0; j < d; j++) {
            mn[j] = INFINITY;
            step[j] = -INFINITY; // the maximum for now
        }
        for (i = 0; i < n; i++) {
            const float *xi = x + i * (size_t)d;
            if (xn) {
                memcpy(xn, xi, (size_t)d * sizeof(float));
                retrlm__normalize(xn, d);
                xi = xn;
            }
            for (j = 0; j < d; j++) {
                mn[j] = xi[j] < mn[j] ? xi[j] : mn[j];
                step[j] = xi[j] > step[j] ? xi[j] : step[j];
            }
        }
        for (j = 0; j < d; j++) step[j] = (step[j] - mn[j]) / 255.0f;
        RETRLM_FREE(xn);
    }
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) goto fail;
    retrlm__index_drop_arrays(ix);
    ix->centroids = cent;
    ix->list_offsets = off;
    ix->sq_min = mn;
    ix->sq_step = step;
    if ((r = retrlm__set_cnorms(ix)) != RETRLM_OK) return r;
    ix->trained = 1;
    return RETRLM_OK;
fail:
    RETRLM_FREE(cent);
    RETRLM_FREE(off);
    RETRLM_FREE(mn);
    RETRLM_FREE(step);
    RETRLM_FREE(xn);
    return r;
}

// ---------------------------------------------------------------------------------------------
// adding

// The index's next_id after n vectors with ids (NULL: next_id, next_id + 1, ..) into *next;
// ERR_ARG for a negative id, ERR_RANGE when the ids would overflow
static retrlm_result retrlm__index_next_id(const retrlm_index *ix, const int64_t *ids, size_t n, int64_t *next) {
    size_t i;
    *next = ix->next_id;
    if (!ids) {
        if (*next > INT64_MAX - (int64_t)n) return retrlm__fail(RETRLM_ERR_RANGE, "index add: ids would overflow int64");
        *next += (int64_t)n;
        return RETRLM_OK;
    }
    for (i = 0; i < n; i++) {
        if (ids[i] < 0)
            return retrlm__fail(RETRLM_ERR_ARG, "index add: id %lld at %lu is negative; ids must be >= 0",
                                (long long)ids[i], (unsigned long)i);
        if (ids[i] >= *next) *next = ids[i] == INT64_MAX ? INT64_MAX : ids[i] + 1;
    }
    return RETRLM_OK;
}

// Flat: the n new rows (x normalised as stored, codes for SQ8, ids nids) appended; ix->n is the
// caller's to update
static retrlm_result retrlm__index_append(retrlm_index *ix, const float *x, const uint8_t *codes,
                                          const int64_t *nids, size_t n) {
    const int d = ix->dim;
    const size_t total = ix->n + n;
    int64_t *ids2 = (int64_t *)retrlm__realloc((void *)ix->ids, total, sizeof(int64_t));
    if (!ids2) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
    ix->ids = ids2;
    if (retrlm__keeps_f32(ix)) {
        float *vec = (float *)retrlm__realloc((void *)ix->vectors, total, (size_t)d * sizeof(float));
        if (!vec) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
        ix->vectors = vec;
        memcpy(vec + ix->n * (size_t)d, x, n * (size_t)d * sizeof(float));
    }
    if (codes) {
        uint8_t *c2 = (uint8_t *)retrlm__realloc((void *)ix->codes, total, (size_t)d);
        if (!c2) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
        ix->codes = c2;
        memcpy(c2 + ix->n * (size_t)d, codes, n * (size_t)d);
    }
    memcpy(ids2 + ix->n, nids, n * sizeof(int64_t));
    return RETRLM_OK;
}

// IVF: the contiguous lists rebuilt with the n new rows (list[i] the list of row i), a list's old
// rows first, then its new ones in input order; ix->n is the caller's to update
static retrlm_result retrlm__index_relist(retrlm_index *ix, const float *x, const uint8_t *codes,
                                          const int64_t *nids, const int *list, size_t n) {
    const int L = ix->nlist, d = ix->dim;
    const size_t total = ix->n + n;
    uint64_t *off2 = (uint64_t *)retrlm__alloc((size_t)L + 1, sizeof(uint64_t));
    size_t *nstart = (size_t *)retrlm__calloc((size_t)L + 1, sizeof(size_t));
    size_t *perm = (size_t *)retrlm__alloc(n, sizeof(size_t)), i;
    int64_t *ids2 = (int64_t *)retrlm__alloc(total, sizeof(int64_t));
    uint8_t *c2 = codes ? (uint8_t *)retrlm__alloc(total, (size_t)d) : NULL;
    float *vec = retrlm__keeps_f32(ix) ? (float *)retrlm__alloc(total, (size_t)d * sizeof(float)) : NULL;
    long l;
    if (!off2 || !nstart || !perm || !ids2 || (codes && !c2) || (retrlm__keeps_f32(ix) && !vec)) {
        RETRLM_FREE(off2);
        RETRLM_FREE(nstart);
        RETRLM_FREE(perm);
        RETRLM_FREE(ids2);
        RETRLM_FREE(c2);
        RETRLM_FREE(vec);
        return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory to rebuild the lists");
    }
    for (i = 0; i < n; i++) nstart[list[i] + 1]++;
    for (l = 0; l < L; l++) nstart[l + 1] += nstart[l];
    for (i = 0; i < n; i++) perm[nstart[list[i]]++] = i; // stable: input order in a list
    for (l = L; l > 0; l--) nstart[l] = nstart[l - 1];
    nstart[0] = 0;
    off2[0] = 0;
    for (l = 0; l < L; l++)
        off2[l + 1] = off2[l] + (ix->list_offsets[l + 1] - ix->list_offsets[l]) + (nstart[l + 1] - nstart[l]);
    RETRLM__PARALLEL_FOR
    for (l = 0; l < L; l++) {
        size_t o0 = (size_t)ix->list_offsets[l], no = (size_t)ix->list_offsets[l + 1] - o0;
        size_t w = (size_t)off2[l], p;
        if (no) {
            memcpy(ids2 + w, ix->ids + o0, no * sizeof(int64_t));
            if (vec) memcpy(vec + w * (size_t)d, ix->vectors + o0 * (size_t)d, no * (size_t)d * sizeof(float));
            if (c2) memcpy(c2 + w * (size_t)d, ix->codes + o0 * (size_t)d, no * (size_t)d);
            w += no;
        }
        for (p = nstart[l]; p < nstart[l + 1]; p++, w++) {
            size_t s = perm[p];
            ids2[w] = nids[s];
            if (vec) memcpy(vec + w * (size_t)d, x + s * (size_t)d, (size_t)d * sizeof(float));
            if (c2) memcpy(c2 + w * (size_t)d, codes + s * (size_t)d, (size_t)d);
        }
    }
    RETRLM_FREE((void *)ix->ids);
    RETRLM_FREE((void *)ix->vectors);
    RETRLM_FREE((void *)ix->codes);
    RETRLM_FREE((void *)ix->list_offsets);
    ix->ids = ids2;
    ix->vectors = vec;
    ix->codes = c2;
    ix->list_offsets = off2;
    RETRLM_FREE(nstart);
    RETRLM_FREE(perm);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_add(retrlm_index *ix, const float *x, size_t n, int dim,
                                          const int64_t *ids) {
    const int d = ix->dim, sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    size_t i, nd;
    int64_t next;
    float *xn = NULL;
    uint8_t *codes = NULL;
    int64_t *nids = NULL;
    int *list = NULL;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (dim != d) return retrlm__fail(RETRLM_ERR_ARG, "index add: vectors of dim %d, the index has dim %d", dim, d);
    if (!ix->trained)
        return retrlm__fail(RETRLM_ERR_ARG, "index add: the index needs retrlm_index_train first (%s)",
                            ix->nlist ? "IVF centroids" : "SQ8 ranges");
    if (n == 0) return RETRLM_OK;
    if ((r = retrlm__check_vectors("index add", x, n, dim)) != RETRLM_OK) return r;
    if ((r = retrlm__index_next_id(ix, ids, n, &next)) != RETRLM_OK) return r;
    if (ix->n > SIZE_MAX / 2 - n || retrlm__mul_overflows(ix->n + n, (size_t)d * sizeof(float), &nd))
        return retrlm__fail(RETRLM_ERR_NOMEM, "index add: %lu + %lu vectors are too many", (unsigned long)ix->n, (unsigned long)n);
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) return r;

    // the new rows in input order: normalised (cosine), encoded (SQ8), listed (IVF)
    if (ix->metric == RETRLM_METRIC_COSINE) {
        xn = (float *)retrlm__alloc(n, (size_t)d * sizeof(float));
        if (!xn) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory for %lu vectors", (unsigned long)n);
        memcpy(xn, x, n * (size_t)d * sizeof(float));
        for (i = 0; i < n; i++) retrlm__normalize(xn + i * (size_t)d, d);
        x = xn;
    }
    nids = (int64_t *)retrlm__alloc(n, sizeof(int64_t));
    if (sq8) codes = (uint8_t *)retrlm__alloc(n, (size_t)d);
    if (ix->nlist) list = (int *)retrlm__alloc(n, sizeof(int));
    if (!nids || (sq8 && !codes) || (ix->nlist && !list)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory for %lu vectors", (unsigned long)n);
        goto done;
    }
    for (i = 0; i < n; i++) nids[i] = ids ? ids[i] : ix->next_id + (int64_t)i;
    for (i = 0; i < n; i += RETRLM__IDX_CHUNK) {
        size_t m = RETRLM__MIN((size_t)RETRLM__IDX_CHUNK, n - i);
        if (sq8) {
            long t;
            RETRLM__PARALLEL_FOR_IF(m * (size_t)d > 100000)
            for (t = 0; t < (long)m; t++)
                retrlm__sq8_encode(x + (i + (size_t)t) * (size_t)d, codes + (i + (size_t)t) * (size_t)d,
                                   ix->sq_min, ix->sq_step, d);
        }
        if (ix->nlist &&
            (r = retrlm__assign(x + i * (size_t)d, m, d, ix->centroids, ix->cnorms_, ix->nlist,
                                ix->metric == RETRLM_METRIC_L2, list + i, NULL)) != RETRLM_OK)
            goto done;
        if ((r = retrlm__progress(ix->progress_, ix->progress_user_, "add", (double)(i + m), (double)n)) != RETRLM_OK)
            goto done;
    }
    r = ix->nlist ? retrlm__index_relist(ix, x, codes, nids, list, n) : retrlm__index_append(ix, x, codes, nids, n);
    if (r == RETRLM_OK) {
        ix->n += n;
        ix->next_id = next;
    }
done:
    RETRLM_FREE(xn);
    RETRLM_FREE(codes);
    RETRLM_FREE(nids);
    RETRLM_FREE(list);
    return r;
}

// ---------------------------------------------------------------------------------------------
// removing

static int retrlm__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int retrlm__has_id(const int64_t *sorted, size_t n, int64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && sorted[lo] == id;
}

RETRLM_API retrlm_result retrlm_index_remove(retrlm_index *ix, const int64_t *ids, size_t n_ids,
                                             size_t *n_removed) {
    int64_t *sorted, *wid;
    float *wv;
    uint8_t *wc;
    size_t i, w = 0, r1, d = (size_t)ix->dim;
    int l;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (n_removed) *n_removed = 0;
    if (n_ids == 0 || ix->n == 0) return RETRLM_OK;
    if (!ids) return retrlm__fail(RETRLM_ERR_ARG, "index remove: NULL ids");
    sorted = (int64_t *)retrlm__alloc(n_ids, sizeof(int64_t));
    if (!sorted) return retrlm__fail(RETRLM_ERR_NOMEM, "index remove: no memory for %lu ids", (unsigned long)n_ids);
    memcpy(sorted, ids, n_ids * sizeof(int64_t));
    qsort(sorted, n_ids, sizeof(int64_t), retrlm__cmp_i64);
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) {
        RETRLM_FREE(sorted);
        return r;
    }
    wid = (int64_t *)ix->ids;
    wv = (float *)ix->vectors;
    wc = (uint8_t *)ix->codes;
    // compact in place, keeping the order (and so every list contiguous)
    for (l = 0, r1 = 0; l < (ix->nlist ? ix->nlist : 1); l++) {
        size_t r0 = r1; // the old start of list l: offsets[l] already holds the new one
        r1 = ix->nlist ? (size_t)ix->list_offsets[l + 1] : ix->n;
        for (i = r0; i < r1; i++) {
            if (retrlm__has_id(sorted, n_ids, wid[i])) continue;
            if (w != i) {
                wid[w] = wid[i];
                if (wv) memcpy(wv + w * d, wv + i * d, d * sizeof(float));
                if (wc) memcpy(wc + w * d, wc + i * d, d);
            }
            w++;
        }
        if (ix->nlist) ((uint64_t *)ix->list_offsets)[l + 1] = w;
    }
    RETRLM_FREE(sorted);
    if (n_removed) *n_removed = ix->n - w;
    ix->n = w;
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// searching

typedef struct retrlm__qctx {
    const float *q; // (d) the query as stored vectors are compared (normalised for cosine)
    const float *t; // (d) SQ8: q * step (IP) or q - min - step / 2 (L2)
    float c0;       // SQ8 IP: sum q (min + step / 2)
} retrlm__qctx;

// t (d) is caller scratch, used for SQ8
static void retrlm__prep(const retrlm_index *ix, const float *q, float *t, retrlm__qctx *qc) {
    int j;
    qc->q = q;
    qc->t = t;
    qc->c0 = 0.0f;
    if (ix->storage == RETRLM_STORAGE_SQ8) { // x[j] = min[j] + (c[j] + 0.5) step[j]
        // IP: with t[j] = q[j] step[j], q . x = c0 (per query) + t . c; L2: with t[j] = q[j] -
        // min[j] - 0.5 step[j], |q - x|^2 = sum (t[j] - step[j] c[j])^2
        double c0 = 0.0;
        for (j = 0; j < ix->dim; j++) {
            float half = 0.5f * ix->sq_step[j];
            if (ix->metric == RETRLM_METRIC_L2) {
                t[j] = q[j] - ix->sq_min[j] - half;
            } else {
                t[j] = q[j] * ix->sq_step[j];
                c0 += (double)q[j] * (double)(ix->sq_min[j] + half);
            }
        }
        qc->c0 = (float)c0;
    }
}

// scores of rows [r0, r0 + m) into out (m), larger is better
static void retrlm__score_rows(const retrlm_index *ix, const retrlm__qctx *qc, size_t r0, int m,
                               float *out) {
    const int d = ix->dim, l2 = ix->metric == RETRLM_METRIC_L2;
    int i;
    if (ix->storage == RETRLM_STORAGE_SQ8) {
        retrlm__scan_codes(out, qc->t, l2 ? ix->sq_step : NULL, ix->codes + r0 * (size_t)d, (size_t)d, m,
                           d);
        for (i = 0; i < m; i++) out[i] = l2 ? -out[i] : qc->c0 + out[i];
    } else {
        retrlm__scan_f32(out, qc->q, ix->vectors + r0 * (size_t)d, (size_t)d, m, d, l2);
        if (l2)
            for (i = 0; i < m; i++) out[i] = -out[i];
    }
}

// Pushes m scores; keys are ids[i], or row0 + i when ids is NULL. The root test in front of
// the push rejects most candidates without a call.
static void retrlm__push_block(retrlm_topk *h, const float *s, int m, const int64_t *ids,
                               size_t row0) {
    int i;
    for (i = 0; i < m; i++) {
        int64_t key = ids ? ids[i] : (int64_t)(row0 + (size_t)i);
        if (h->n < h->k || s[i] > h->scores[0] || (s[i] == h->scores[0] && key < h->ids[0]))
            retrlm_topk_push(h, key, s[i]);
    }
}

static void retrlm__scan(const retrlm_index *ix, const retrlm__qctx *qc, size_t r0, size_t r1,
                         retrlm_topk *h, int by_row) {
    float buf[RETRLM__IDX_SCAN];
    size_t b;
    for (b = r0; b < r1; b += RETRLM__IDX_SCAN) {
        int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_SCAN, r1 - b);
        retrlm__score_rows(ix, qc, b, m, buf);
        retrlm__push_block(h, buf, m, by_row ? NULL : ix->ids + b, b);
    }
}

static float retrlm__exact(const retrlm_index *ix, const float *q, size_t row) {
    const float *x = ix->vectors + row * (size_t)ix->dim;
    return ix->metric == RETRLM_METRIC_L2 ? -retrlm__l2_f32(q, x, ix->dim) : retrlm__ip_f32(q, x, ix->dim);
}

static void retrlm__pad(const retrlm_index *ix, int from, int k, int64_t *oid, float *osc) {
    int i;
    for (i = from; i < k; i++) {
        oid[i] = -1;
        if (osc) osc[i] = ix->metric == RETRLM_METRIC_L2 ? INFINITY : -INFINITY;
    }
}

// Merges the candidate heaps h[0..nh) of one query (q as compared, d), re-scores row
// candidates exactly when by_row, and writes the k results. 0 on success, 1 without memory.
static int retrlm__finish(const retrlm_index *ix, const float *q, retrlm_topk *h, int nh, int kk,
                          int k, int by_row, int64_t *oid, float *osc) {
    const int kf = RETRLM__MIN(k, kk); // kk is capped at n, and so is what can be found
    int64_t *mi = (int64_t *)retrlm__alloc((size_t)kk + (size_t)kf, sizeof(int64_t));
    float *ms = (float *)retrlm__alloc((size_t)kk + (size_t)kf, sizeof(float));
    retrlm_topk m, f, *res = &m;
    int a, e, got;
    if (!mi || !ms) {
        RETRLM_FREE(mi);
        RETRLM_FREE(ms);
        return 1;
    }
    retrlm_topk_init(&m, kk, mi, ms);
    for (a = 0; a < nh; a++)
        for (e = 0; e < h[a].n; e++) retrlm_topk_push(&m, h[a].ids[e], h[a].scores[e]);
    if (by_row) {
        retrlm_topk_init(&f, kf, mi + kk, ms + kk);
        for (e = 0; e < m.n; e++) {
            size_t row = (size_t)m.ids[e];
            retrlm_topk_push(&f, ix->ids[row], retrlm__exact(ix, q, row));
        }
        res = &f;
    }
    got = retrlm_topk_sort(res);
    for (e = 0; e < got; e++) {
        oid[e] = res->ids[e];
        if (osc) osc[e] = ix->metric == RETRLM_METRIC_L2 ? -res->scores[e] : res->scores[e];
    }
    retrlm__pad(ix, got, k, oid, osc);
    RETRLM_FREE(mi);
    RETRLM_FREE(ms);
    return 0;
}

// One query over a set of row ranges, the ranges in parallel, each with its own heap; the
// merge is exact, so the result does not depend on how the ranges went to threads. Small
// scans stay on one thread: waking a second one costs more than it saves, and on a busy
// machine a descheduled helper stalls the query by a whole time slice.
static retrlm_result retrlm__search_one(const retrlm_index *ix, const float *q, int k, int kk,
                                        int by_row, const size_t *r0, const size_t *r1, int nr,
                                        int64_t *oid, float *osc) {
    int64_t *hid = (int64_t *)retrlm__alloc((size_t)(nr ? nr : 1), (size_t)kk * sizeof(int64_t));
    float *hsc = (float *)retrlm__alloc((size_t)(nr ? nr : 1), (size_t)kk * sizeof(float));
    retrlm_topk *h = (retrlm_topk *)retrlm__alloc((size_t)(nr ? nr : 1), sizeof(retrlm_topk));
    float *t = (float *)retrlm__alloc((size_t)ix->dim, sizeof(float));
    retrlm__qctx qc;
    size_t rows = 0;
    int a, fail = 0;
    if (!hid || !hsc || !h || !t) fail = 1;
    else {
        retrlm__prep(ix, q, t, &qc);
        for (a = 0; a < nr; a++) {
            retrlm_topk_init(&h[a], kk, hid + (size_t)a * (size_t)kk, hsc + (size_t)a * (size_t)kk);
            rows += r1[a] - r0[a];
        }
        (void)rows; // only the OpenMP build looks at it
        RETRLM__PARALLEL_FOR_IF(rows * (size_t)ix->dim > 8000000 && nr > 1)
        for (a = 0; a < nr; a++) retrlm__scan(ix, &qc, r0[a], r1[a], &h[a], by_row);
        fail = retrlm__finish(ix, q, h, nr, kk, k, by_row, oid, osc);
    }
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(t);
    return fail ? retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory") : RETRLM_OK;
}

// Flat, several queries: blocks of QB queries against blocks of NB rows, so that a block of
// rows is read from memory once for QB queries. f32 goes through the blocked matrix multiply,
// SQ8 through the row kernel on a cache-resident block. Tasks are (query block, row segment)
// pairs whose number depends only on nq and n.
static retrlm_result retrlm__search_flat_batch(const retrlm_index *ix, const float *Q, int nq,
                                               int k, int kk, int by_row, int64_t *oid,
                                               float *osc) {
    const int d = ix->dim, l2 = ix->metric == RETRLM_METRIC_L2, sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    // SQ8 blocks are widened to floats once per query block and go through the multiply too
    const int widen = sq8 && d <= 4096, mm = !sq8 || widen;
    const long qblocks = (nq + RETRLM__IDX_QB - 1) / RETRLM__IDX_QB;
    const size_t nblocks = (ix->n + RETRLM__IDX_NB - 1) / RETRLM__IDX_NB;
    long dsegs = qblocks >= 8 ? 1 : (8 + qblocks - 1) / qblocks, tasks, t, qi;
    size_t seg, nh;
    int64_t *hid;
    float *hsc, *qn = NULL, *qt = NULL, *c0 = NULL;
    retrlm_topk *h;
    int fail = 0;
    if ((size_t)dsegs > nblocks) dsegs = (long)nblocks;
    seg = (nblocks + (size_t)dsegs - 1) / (size_t)dsegs * RETRLM__IDX_NB; // rows a segment
    tasks = qblocks * dsegs;
    nh = (size_t)nq * (size_t)dsegs; // heap (q, s) is h[q * dsegs + s]
    hid = (int64_t *)retrlm__alloc(nh, (size_t)kk * sizeof(int64_t));
    hsc = (float *)retrlm__alloc(nh, (size_t)kk * sizeof(float));
    h = (retrlm_topk *)retrlm__alloc(nh, sizeof(retrlm_topk));
    if (l2 && mm) qn = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    if (sq8) {
        qt = (float *)retrlm__alloc((size_t)nq, (size_t)d * sizeof(float));
        c0 = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    }
    if (!hid || !hsc || !h || (l2 && mm && !qn) || (sq8 && (!qt || !c0))) {
        fail = 1;
        goto done;
    }
    for (t = 0; t < (long)nh; t++)
        retrlm_topk_init(&h[t], kk, hid + (size_t)t * (size_t)kk, hsc + (size_t)t * (size_t)kk);
    if (qn) retrlm__sq_norms(Q, (size_t)nq, d, qn);
    if (sq8)
        for (qi = 0; qi < nq; qi++) {
            retrlm__qctx qc;
            retrlm__prep(ix, Q + (size_t)qi * (size_t)d, qt + (size_t)qi * (size_t)d, &qc);
            c0[qi] = qc.c0;
        }
    RETRLM__PARALLEL_FOR_IF(tasks > 1)
    for (t = 0; t < tasks; t++) {
        const long qb = t / dsegs, ds = t % dsegs;
        const int q0 = (int)(qb * RETRLM__IDX_QB), qm = RETRLM__MIN(RETRLM__IDX_QB, nq - q0);
        const size_t s0 = (size_t)ds * seg, s1 = RETRLM__MIN(ix->n, s0 + seg);
        float *C = mm ? (float *)retrlm__alloc((size_t)qm * RETRLM__IDX_NB, sizeof(float)) : NULL;
        float *xn = l2 && mm ? (float *)retrlm__alloc(RETRLM__IDX_NB, sizeof(float)) : NULL;
        float *X = widen ? (float *)retrlm__alloc(RETRLM__IDX_NB, (size_t)d * sizeof(float)) : NULL;
        float buf[RETRLM__IDX_NB];
        size_t b;
        int i, j;
        if ((mm && !C) || (l2 && mm && !xn) || (widen && !X)) {
            fail = 1; // benign race: every writer stores 1
            RETRLM_FREE(C);
            RETRLM_FREE(xn);
            RETRLM_FREE(X);
            continue;
        }
        for (b = s0; b < s1; b += RETRLM__IDX_NB) {
            const int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_NB, s1 - b);
            const int64_t *bid = by_row ? NULL : ix->ids + b;
            const float *xb = ix->vectors ? ix->vectors + b * (size_t)d : NULL;
            if (sq8 && !widen) {
                for (i = 0; i < qm; i++) {
                    retrlm__qctx qc;
                    qc.q = NULL;
                    qc.t = qt + (size_t)(q0 + i) * (size_t)d;
                    qc.c0 = c0[q0 + i];
                    retrlm__score_rows(ix, &qc, b, m, buf);
                    retrlm__push_block(&h[(size_t)(q0 + i) * (size_t)dsegs + (size_t)ds], buf, m, bid, b);
                }
                continue;
            }
            if (widen) { // x = min + (code + 0.5) step, as the codes mean
                const uint8_t *cb = ix->codes + b * (size_t)d;
                for (i = 0; i < m; i++) {
                    const uint8_t *ci = cb + (size_t)i * (size_t)d;
                    float *xi = X + (size_t)i * (size_t)d;
                    for (j = 0; j < d; j++) xi[j] = ix->sq_min[j] + ((float)ci[j] + 0.5f) * ix->sq_step[j];
                }
                xb = X;
            }
            if (retrlm_matmul(C, Q + (size_t)q0 * (size_t)d, xb, NULL, qm, m, d, 0) != RETRLM_OK) {
                fail = 1;
                break;
            }
            if (l2) retrlm__sq_norms(xb, (size_t)m, d, xn);
            for (i = 0; i < qm; i++) {
                float *row = C + (size_t)i * (size_t)m;
                if (l2) { // |q - x|^2 = |q|^2 + |x|^2 - 2 q.x, never below 0
                    float qq = qn[q0 + i];
                    for (j = 0; j < m; j++) {
                        float dist = qq + xn[j] - 2.0f * row[j];
                        row[j] = dist > 0.0f ? -dist : -0.0f;
                    }
                }
                retrlm__push_block(&h[(size_t)(q0 + i) * (size_t)dsegs + (size_t)ds], row, m, bid, b);
            }
        }
        RETRLM_FREE(C);
        RETRLM_FREE(xn);
        RETRLM_FREE(X);
    }
    if (fail) goto done;
    RETRLM__PARALLEL_FOR_IF(nq > 16)
    for (qi = 0; qi < nq; qi++)
        if (retrlm__finish(ix, Q + (size_t)qi * (size_t)d, h + (size_t)qi * (size_t)dsegs, (int)dsegs, kk, k,
                           by_row, oid + (size_t)qi * (size_t)k, osc ? osc + (size_t)qi * (size_t)k : NULL))
            fail = 1;
done:
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(qn);
    RETRLM_FREE(qt);
    RETRLM_FREE(c0);
    return fail ? retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for a batch of %d queries", nq) : RETRLM_OK;
}

// IVF, many queries: list by list. Each probed list is read once for all the queries that
// probe it (f32: one small matrix multiply, queries x rows; SQ8: the row kernel on a list in
// cache), into one heap per (query, probe); the heaps of a query are then merged in probe
// order. Every heap is written by one thread, so the result does not depend on the threads.
static int retrlm__ivf_by_list(const retrlm_index *ix, const float *Q, int cm, const int64_t *probe,
                               int nprobe, int k, int kk, int by_row, int64_t *oid, float *osc) {
    const int d = ix->dim, L = ix->nlist, l2 = ix->metric == RETRLM_METRIC_L2;
    const int sq8 = ix->storage == RETRLM_STORAGE_SQ8, widen = sq8 && d <= 4096, mm = !sq8 || widen;
    const size_t slots = (size_t)cm * (size_t)nprobe;
    size_t *start = (size_t *)retrlm__calloc((size_t)L + 1, sizeof(size_t));
    size_t *who = (size_t *)retrlm__alloc(slots, sizeof(size_t)); // slot q * nprobe + p, by list
    int64_t *hid = (int64_t *)retrlm__alloc(slots, (size_t)kk * sizeof(int64_t));
    float *hsc = (float *)retrlm__alloc(slots, (size_t)kk * sizeof(float));
    retrlm_topk *h = (retrlm_topk *)retrlm__alloc(slots, sizeof(retrlm_topk));
    float *qn = l2 && mm ? (float *)retrlm__alloc((size_t)cm, sizeof(float)) : NULL;
    float *qt = sq8 ? (float *)retrlm__alloc((size_t)cm, (size_t)d * sizeof(float)) : NULL;
    float *c0 = sq8 ? (float *)retrlm__alloc((size_t)cm, sizeof(float)) : NULL;
    size_t sl;
    long l, qi;
    int fail = 0;
    if (!start || !who || !hid || !hsc || !h || (l2 && mm && !qn) || (sq8 && (!qt || !c0))) {
        fail = 1;
        goto done;
    }
    for (sl = 0; sl < slots; sl++) {
        retrlm_topk_init(&h[sl], kk, hid + sl * (size_t)kk, hsc + sl * (size_t)kk);
        if (probe[sl] >= 0) start[probe[sl] + 1]++; // -1: no list (NaN coarse scores)
    }
    for (l = 0; l < L; l++) start[l + 1] += start[l];
    for (sl = 0; sl < slots; sl++)
        if (probe[sl] >= 0) who[start[probe[sl]]++] = sl; // slots ascending within a list
    for (l = L; l > 0; l--) start[l] = start[l - 1];
    start[0] = 0;
    if (qn) retrlm__sq_norms(Q, (size_t)cm, d, qn);
    if (sq8)
        for (qi = 0; qi < cm; qi++) {
            retrlm__qctx qc;
            retrlm__prep(ix, Q + (size_t)qi * (size_t)d, qt + (size_t)qi * (size_t)d, &qc);
            c0[qi] = qc.c0;
        }
    RETRLM__PARALLEL_FOR
    for (l = 0; l < L; l++) {
        const size_t r0 = (size_t)ix->list_offsets[l], r1 = (size_t)ix->list_offsets[l + 1];
        const int mq = (int)(start[l + 1] - start[l]);
        float *A = NULL, *C = NULL, *xn = NULL, *X = NULL, buf[RETRLM__IDX_NB];
        size_t b;
        int i, j;
        if (!mq || r0 == r1) continue;
        if (mm) {
            A = (float *)retrlm__alloc((size_t)mq, (size_t)d * sizeof(float));
            C = (float *)retrlm__alloc((size_t)mq, RETRLM__IDX_NB * sizeof(float));
            xn = l2 ? (float *)retrlm__alloc(RETRLM__IDX_NB, sizeof(float)) : NULL;
            X = widen ? (float *)retrlm__alloc(RETRLM__IDX_NB, (size_t)d * sizeof(float)) : NULL;
            if (!A || !C || (l2 && !xn) || (widen && !X)) {
                fail = 1; // benign race: every writer stores 1
                RETRLM_FREE(A);
                RETRLM_FREE(C);
                RETRLM_FREE(xn);
                RETRLM_FREE(X);
                continue;
            }
            for (i = 0; i < mq; i++)
                memcpy(A + (size_t)i * (size_t)d, Q + (who[start[l] + (size_t)i] / (size_t)nprobe) * (size_t)d,
                       (size_t)d * sizeof(float));
        }
        for (b = r0; b < r1; b += RETRLM__IDX_NB) {
            const int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_NB, r1 - b);
            const int64_t *bid = by_row ? NULL : ix->ids + b;
            const float *xb = ix->vectors ? ix->vectors + b * (size_t)d : NULL;
            if (!mm) {
                for (i = 0; i < mq; i++) {
                    const size_t slot = who[start[l] + (size_t)i], q = slot / (size_t)nprobe;
                    retrlm__qctx qc;
                    qc.q = NULL;
                    qc.t = qt + q * (size_t)d;
                    qc.c0 = c0[q];
                    retrlm__score_rows(ix, &qc, b, m, buf);
                    retrlm__push_block(&h[slot], buf, m, bid, b);
                }
                continue;
            }
            if (widen) { // x = min + (code + 0.5) step, as in the flat batch
                const uint8_t *cb = ix->codes + b * (size_t)d;
                for (i = 0; i < m; i++) {
                    const uint8_t *ci = cb + (size_t)i * (size_t)d;
                    float *xi = X + (size_t)i * (size_t)d;
                    for (j = 0; j < d; j++) xi[j] = ix->sq_min[j] + ((float)ci[j] + 0.5f) * ix->sq_step[j];
                }
                xb = X;
            }
            if (retrlm_matmul(C, A, xb, NULL, mq, m, d, 0) != RETRLM_OK) {
                fail = 1;
                break;
            }
            if (l2) retrlm__sq_norms(xb, (size_t)m, d, xn);
            for (i = 0; i < mq; i++) {
                const size_t slot = who[start[l] + (size_t)i];
                float *row = C + (size_t)i * (size_t)m;
                if (l2) {
                    float qq = qn[slot / (size_t)nprobe];
                    for (j = 0; j < m; j++) {
                        float dist = qq + xn[j] - 2.0f * row[j];
                        row[j] = dist > 0.0f ? -dist : -0.0f;
                    }
                }
                retrlm__push_block(&h[slot], row, m, bid, b);
            }
        }
        RETRLM_FREE(A);
        RETRLM_FREE(C);
        RETRLM_FREE(xn);
        RETRLM_FREE(X);
    }
    if (fail) goto done;
    RETRLM__PARALLEL_FOR
    for (qi = 0; qi < cm; qi++)
        if (retrlm__finish(ix, Q + (size_t)qi * (size_t)d, h + (size_t)qi * (size_t)nprobe, nprobe, kk, k, by_row,
                           oid + (size_t)qi * (size_t)k, osc ? osc + (size_t)qi * (size_t)k : NULL))
            fail = 1;
done:
    RETRLM_FREE(start);
    RETRLM_FREE(who);
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(qn);
    RETRLM_FREE(qt);
    RETRLM_FREE(c0);
    return fail;
}

// IVF: the nprobe best lists of each query (coarse scores through the matrix multiply), then
// the lists scanned: one query's lists in parallel, or several queries in parallel.
static retrlm_result retrlm__search_ivf(const retrlm_index *ix, const float *Q, int nq, int k,
                                        int kk, int by_row, int nprobe, int64_t *oid,
                                        float *osc) {
    const int d = ix->dim, L = ix->nlist, l2 = ix->metric == RETRLM_METRIC_L2;
    const int chunk = 1024;
    float *cs = (float *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)L * sizeof(float));
    int64_t *probe = (int64_t *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)nprobe * sizeof(int64_t));
    float *psc = (float *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)nprobe * sizeof(float));
    size_t *r0 = (size_t *)retrlm__alloc((size_t)nprobe, 2 * sizeof(size_t));
    retrlm_result res = RETRLM_OK;
    int c0, fail = 0;
    if (!cs || !probe || !psc || !r0) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
        goto done;
    }
    for (c0 = 0; c0 < nq && !res; c0 += chunk) {
        const int cm = RETRLM__MIN(chunk, nq - c0);
        long qi;
        if (cm >= 8) {
            if ((res = retrlm_matmul(cs, Q + (size_t)c0 * (size_t)d, ix->centroids, NULL, cm, L, d, 0)) != RETRLM_OK)
                break;
        } else { // a few queries: the row kernel on one thread, no parallel region to wake
            for (qi = 0; qi < cm; qi++) {
                const float *q = Q + (size_t)(c0 + qi) * (size_t)d;
                retrlm__scan_f32(cs + (size_t)qi * (size_t)L, q, ix->centroids, (size_t)d, L, d, 0);
            }
        }
        for (qi = 0; qi < cm; qi++) { // the probes, best first, ties to the lower list
            float *row = cs + (size_t)qi * (size_t)L;
            int c;
            if (l2)
                for (c = 0; c < L; c++) row[c] = 2.0f * row[c] - ix->cnorms_[c];
            int got = retrlm_topk_select(row, L, nprobe, probe + (size_t)qi * (size_t)nprobe,
                                         psc + (size_t)qi * (size_t)nprobe);
            for (; got < nprobe; got++) probe[(size_t)qi * (size_t)nprobe + (size_t)got] = -1; // NaN scores
        }
        if (cm == 1) {
            size_t *r1 = r0 + nprobe;
            int p;
            for (p = 0; p < nprobe; p++) { // a missing probe (-1) scans nothing
                r0[p] = probe[p] < 0 ? 0 : (size_t)ix->list_offsets[probe[p]];
                r1[p] = probe[p] < 0 ? 0 : (size_t)ix->list_offsets[probe[p] + 1];
            }
            res = retrlm__search_one(ix, Q + (size_t)c0 * (size_t)d, k, kk, by_row, r0, r1, nprobe,
                                     oid + (size_t)c0 * (size_t)k, osc ? osc + (size_t)c0 * (size_t)k : NULL);
            continue;
        }
        if (cm >= 8) {
            if (retrlm__ivf_by_list(ix, Q + (size_t)c0 * (size_t)d, cm, probe, nprobe, k, kk, by_row,
                                    oid + (size_t)c0 * (size_t)k, osc ? osc + (size_t)c0 * (size_t)k : NULL))
                res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for a batch of %d queries", cm);
            continue;
        }
        RETRLM__PARALLEL_FOR
        for (qi = 0; qi < cm; qi++) {
            const float *q = Q + (size_t)(c0 + qi) * (size_t)d;
            int64_t *hi = (int64_t *)retrlm__alloc((size_t)kk, sizeof(int64_t));
            float *hs = (float *)retrlm__alloc((size_t)kk, sizeof(float));
            float *t = (float *)retrlm__alloc((size_t)d, sizeof(float));
            retrlm_topk h;
            retrlm__qctx qc;
            int p;
            if (hi && hs && t) {
                retrlm_topk_init(&h, kk, hi, hs);
                retrlm__prep(ix, q, t, &qc);
                for (p = 0; p < nprobe; p++) {
                    int64_t l = probe[(size_t)qi * (size_t)nprobe + (size_t)p];
                    if (l < 0) continue;
                    retrlm__scan(ix, &qc, (size_t)ix->list_offsets[l], (size_t)ix->list_offsets[l + 1], &h, by_row);
                }
                if (retrlm__finish(ix, q, &h, 1, kk, k, by_row, oid + (size_t)(c0 + qi) * (size_t)k,
                                   osc ? osc + (size_t)(c0 + qi) * (size_t)k : NULL))
                    fail = 1;
            } else
                fail = 1;
            RETRLM_FREE(hi);
            RETRLM_FREE(hs);
            RETRLM_FREE(t);
        }
        if (fail) res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
    }
done:
    RETRLM_FREE(cs);
    RETRLM_FREE(probe);
    RETRLM_FREE(psc);
    RETRLM_FREE(r0);
    return res;
}

RETRLM_API retrlm_result retrlm_index_search(const retrlm_index *ix, const float *queries,
                                             int nq, int dim, int k,
                                             const retrlm_search_params *params,
                                             int64_t *out_ids, float *out_scores) {
    const int d = ix ? ix->dim : 0;
    int nprobe, rr, by_row, kk, qi;
    float *qn = NULL;
    const float *Q = queries;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (dim != d) return retrlm__fail(RETRLM_ERR_ARG, "index search: queries of dim %d, the index has dim %d", dim, d);
    if (nq < 0) return retrlm__fail(RETRLM_ERR_ARG, "index search: nq = %d", nq);
    if (k <= 0 || k > (1 << 24)) return retrlm__fail(RETRLM_ERR_ARG, "index search: k = %d, expected 1..%d", k, 1 << 24);
    if (nq == 0) return RETRLM_OK;
    if (!out_ids) return retrlm__fail(RETRLM_ERR_ARG, "index search: NULL out_ids");
    if ((r = retrlm__check_vectors("index search", queries, (size_t)nq, dim)) != RETRLM_OK) return r;
    nprobe = params && params->nprobe > 0 ? params->nprobe : ix->nprobe;
    nprobe = RETRLM__MAX(1, RETRLM__MIN(nprobe, ix->nlist));
    rr = params && params->rerank ? params->rerank : ix->rerank;
    by_row = ix->storage == RETRLM_STORAGE_SQ8 && rr > 0 && ix->vectors != NULL;
    kk = k;
    if (by_row) {
        if ((size_t)rr * (size_t)k > (size_t)1 << 26)
            return retrlm__fail(RETRLM_ERR_ARG, "index search: rerank %d * k %d is too many candidates", rr, k);
        kk = rr * k;
    }
    if ((size_t)kk > ix->n) kk = (int)ix->n; // no heap needs to hold more than there is
    if (ix->n == 0 || !ix->trained) { // nothing to find
        for (qi = 0; qi < nq; qi++)
            retrlm__pad(ix, 0, k, out_ids + (size_t)qi * (size_t)k, out_scores ? out_scores + (size_t)qi * (size_t)k : NULL);
        return RETRLM_OK;
    }
    if (ix->metric == RETRLM_METRIC_COSINE) {
        qn = (float *)retrlm__alloc((size_t)nq, (size_t)d * sizeof(float));
        if (!qn) return retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for %d queries", nq);
        memcpy(qn, queries, (size_t)nq * (size_t)d * sizeof(float));
        for (qi = 0; qi < nq; qi++) retrlm__normalize(qn + (size_t)qi * (size_t)d, d);
        Q = qn;
    }
    if (ix->nlist) {
        r = retrlm__search_ivf(ix, Q, nq, k, kk, by_row, nprobe, out_ids, out_scores);
    } else if (nq == 1) {
        size_t nseg = (ix->n + RETRLM__IDX_SEG - 1) / RETRLM__IDX_SEG, s;
        size_t *r0 = (size_t *)retrlm__alloc(nseg, 2 * sizeof(size_t));
        if (!r0) r = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
        else {
            for (s = 0; s < nseg; s++) {
                r0[s] = s * RETRLM__IDX_SEG;
                r0[nseg + s] = RETRLM__MIN(ix->n, r0[s] + RETRLM__IDX_SEG);
            }
            r = retrlm__search_one(ix, Q, k, kk, by_row, r0, r0 + nseg, (int)nseg, out_ids, out_scores);
            RETRLM_FREE(r0);
        }
    } else {
        for (qi = 0, r = RETRLM_OK; qi < nq && !r; qi += 8192) // bounded scratch for any nq
            r = retrlm__search_flat_batch(ix, Q + (size_t)qi * (size_t)d, RETRLM__MIN(8192, nq - qi), k, kk, by_row,
                                          out_ids + (size_t)qi * (size_t)k,
                                          out_scores ? out_scores + (size_t)qi * (size_t)k : NULL);
    }
    RETRLM_FREE(qn);
    return r;
}

// ---------------------------------------------------------------------------------------------
// persistence: kind "index"; sections meta (u64), ids (i64), vectors (f32), codes (u8),
// sq_min / sq_step (f32), centroids (f32), list_offsets (u64)

#define RETRLM__IDX_META 10 // format, dim, metric, storage, nlist, nprobe, rerank, trained, n, next_id

static retrlm_result retrlm__index_writer(const retrlm_index *ix, retrlm_writer *w) {
    uint64_t meta[RETRLM__IDX_META];
    size_t nd = ix->n * (size_t)ix->dim;
    retrlm_result r;
    meta[0] = RETRLM__IDX_FORMAT;
    meta[1] = (uint64_t)ix->dim;
    meta[2] = (uint64_t)ix->metric;
    meta[3] = (uint64_t)ix->storage;
    meta[4] = (uint64_t)ix->nlist;
    meta[5] = (uint64_t)ix->nprobe;
    meta[6] = (uint64_t)ix->rerank;
    meta[7] = (uint64_t)ix->trained;
    meta[8] = (uint64_t)ix->n;
    meta[9] = (uint64_t)ix->next_id;
    if ((r = retrlm_writer_init(w, "index")) != RETRLM_OK) return r;
    if ((r = retrlm_writer_add_copy(w, "meta", RETRLM_DTYPE_U64, meta, RETRLM__IDX_META)) != RETRLM_OK) return r;
    if ((r = retrlm_writer_add(w, "ids", RETRLM_DTYPE_I64, ix->ids, ix->n)) != RETRLM_OK) return r;
    if (ix->vectors && (r = retrlm_writer_add(w, "vectors", RETRLM_DTYPE_F32, ix->vectors, nd)) != RETRLM_OK) return r;
    if (ix->codes && (r = retrlm_writer_add(w, "codes", RETRLM_DTYPE_U8, ix->codes, nd)) != RETRLM_OK) return r;
    if (ix->sq_min) {
        if ((r = retrlm_writer_add(w, "sq_min", RETRLM_DTYPE_F32, ix->sq_min, (size_t)ix->dim)) != RETRLM_OK) return r;
        if ((r = retrlm_writer_add(w, "sq_step", RETRLM_DTYPE_F32, ix->sq_step, (size_t)ix->dim)) != RETRLM_OK) return r;
    }
    if (ix->centroids) {
        if ((r = retrlm_writer_add(w, "centroids", RETRLM_DTYPE_F32, ix->centroids, (size_t)ix->nlist * (size_t)ix->dim)) != RETRLM_OK)
            return r;
        if ((r = retrlm_writer_add(w, "list_offsets", RETRLM_DTYPE_U64, ix->list_offsets, (size_t)ix->nlist + 1)) != RETRLM_OK)
            return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_save_memory(const retrlm_index *ix, void *buf, size_t cap,
                                                  size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(ix && size);
    memset(&w, 0, sizeof w);
    if ((r = retrlm__index_writer(ix, &w)) == RETRLM_OK) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// A section of exactly count elements (count 0: absent or empty); *p NULL when empty.
static retrlm_result retrlm__index_section(const retrlm_reader *rd, const char *name, retrlm_dtype type,
                                           size_t count, const void **p) {
    size_t got = 0;
    retrlm_result r = retrlm_reader_get(rd, name, type, p, &got);
    if (r == RETRLM_ERR_NOT_FOUND && count == 0) {
        *p = NULL;
        return RETRLM_OK;
    }
    if (r) return r;
    if (got != count)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: section '%s' has %lu elements, expected %lu", name,
                            (unsigned long)got, (unsigned long)count);
    return RETRLM_OK;
}

// Takes over an open reader: checks every section against the others, then points into it.
static retrlm_result retrlm__index_from_reader(retrlm_index *ix, retrlm_reader *rd) {
    uint64_t meta[RETRLM__IDX_META];
    const void *ids, *vec, *codes, *mn, *st, *cen, *off;
    size_t n, d, nd, i, L;
    int keep, sq8;
    retrlm_result r;
    retrlm_index_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if ((r = retrlm_reader_read(rd, "meta", RETRLM_DTYPE_U64, meta, RETRLM__IDX_META)) != RETRLM_OK) return r;
    if (meta[0] != RETRLM__IDX_FORMAT)
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "index load: index format %llu, this build reads %d",
                            (unsigned long long)meta[0], RETRLM__IDX_FORMAT);
    if (meta[1] < 1 || meta[1] > RETRLM__IDX_MAX_DIM || meta[2] > 2 || meta[3] > 1 ||
        meta[4] > RETRLM__IDX_MAX_NLIST || meta[5] < 1 || meta[5] > RETRLM__IDX_MAX_NLIST ||
        meta[6] > 65536 || meta[7] > 1 || meta[8] > ((uint64_t)1 << 48) || meta[9] > (uint64_t)INT64_MAX)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: section 'meta' holds values out of range");
    cfg.dim = (int)meta[1];
    cfg.metric = (retrlm_metric)meta[2];
    cfg.storage = (retrlm_storage)meta[3];
    cfg.nlist = (int)meta[4];
    cfg.nprobe = (int)meta[5];
    cfg.rerank = (int)meta[6];
    if ((r = retrlm_index_init(ix, &cfg)) != RETRLM_OK) return r;
    if ((uint64_t)ix->rerank != meta[6])
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: rerank set on an f32 index");
    ix->trained = (int)meta[7];
    n = (size_t)meta[8];
    d = (size_t)ix->dim;
    L = (size_t)ix->nlist;
    sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    keep = retrlm__keeps_f32(ix);
    if (ix->nlist == 0 && !sq8 && !ix->trained)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: a flat f32 index is always trained");
    if (!ix->trained && n)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: an untrained index holds %lu vectors", (unsigned long)n);
    if (retrlm__mul_overflows(n, d * sizeof(float), &nd))
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: %lu vectors of dim %lu overflow", (unsigned long)n, (unsigned long)d);
    nd = n * d;
    if ((r = retrlm__index_section(rd, "ids", RETRLM_DTYPE_I64, n, &ids)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "vectors", RETRLM_DTYPE_F32, keep ? nd : 0, &vec)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "codes", RETRLM_DTYPE_U8, sq8 ? nd : 0, &codes)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "sq_min", RETRLM_DTYPE_F32, sq8 && ix->trained ? d : 0, &mn)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "sq_step", RETRLM_DTYPE_F32, sq8 && ix->trained ? d : 0, &st)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "centroids", RETRLM_DTYPE_F32, L && ix->trained ? L * d : 0, &cen)) != RETRLM_OK)
        return r;
    if ((r = retrlm__index_section(rd, "list_offsets", RETRLM_DTYPE_U64, L && ix->trained ? L + 1 : 0, &off)) != RETRLM_OK)
        return r;
    for (i = 0; i < n; i++) {
        int64_t id = ((const int64_t *)ids)[i];
        if (id < 0 || (uint64_t)id >= meta[9])
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: id %lld at row %lu is outside 0..next_id %llu",
                                (long long)id, (unsigned long)i, (unsigned long long)meta[9]);
    }
    if (mn) {
        for (i = 0; i < d; i++) {
            float a = ((const float *)mn)[i], s = ((const float *)st)[i];
            if (a - a != 0.0f || s - s != 0.0f || s < 0.0f)
                return retrlm__fail(RETRLM_ERR_FORMAT, "index load: SQ8 range of dimension %lu is not finite", (unsigned long)i);
        }
    }
    if (cen) {
        size_t bad;
        const uint64_t *o = (const uint64_t *)off;
        if (!retrlm__all_finite((const float *)cen, L * d, &bad))
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: centroid %lu is not finite", (unsigned long)(bad / d));
        if (o[0] != 0 || o[L] != (uint64_t)n)
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: list offsets run from %llu to %llu, expected 0 to %lu",
                                (unsigned long long)o[0], (unsigned long long)o[L], (unsigned long)n);
        for (i = 0; i < L; i++)
            if (o[i + 1] < o[i])
                return retrlm__fail(RETRLM_ERR_FORMAT, "index load: list %lu ends before it starts", (unsigned long)i);
    }
    ix->n = n;
    ix->next_id = (int64_t)meta[9];
    ix->ids = (const int64_t *)ids;
    ix->vectors = (const float *)vec;
    ix->codes = (const uint8_t *)codes;
    ix->sq_min = (const float *)mn;
    ix->sq_step = (const float *)st;
    ix->centroids = (const float *)cen;
    ix->list_offsets = (const uint64_t *)off;
    ix->reader_ = *rd;
    ix->borrowed_ = 1;
    memset(rd, 0, sizeof *rd);
    if ((r = retrlm__set_cnorms(ix)) != RETRLM_OK) return r;
    // an IVF without lists (untrained) still needs offsets to own later: train allocates them
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_load_memory(retrlm_index *ix, const void *data,
                                                  size_t size) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm_reader_open_memory(&rd, data, size, "index", 0)) != RETRLM_OK) return r;
    r = retrlm__index_from_reader(ix, &rd);
    retrlm_reader_close(&rd); // a no-op once the index took it over
    if (r) retrlm_index_free(ix);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_index_save(const retrlm_index *ix, const char *path) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(&w, 0, sizeof w);
    if ((r = retrlm__index_writer(ix, &w)) == RETRLM_OK) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_index_load(retrlm_index *ix, const char *path) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm_reader_open(&rd, path, "index", 0)) != RETRLM_OK) return r;
    r = retrlm__index_from_reader(ix, &rd);
    retrlm_reader_close(&rd);
    if (r) retrlm_index_free(ix);
    return r;
}
#endif

// ---------------------------------------------------------------------------------------------
// interchange: .fvecs / .ivecs and .npy

static void retrlm__copy_le32(void *dst, const unsigned char *src, size_t count) {
    size_t i;
    if (retrlm__host_is_le()) {
        memcpy(dst, src, count * 4);
        return;
    }
    for (i = 0; i < count; i++) ((uint32_t *)dst)[i] = retrlm__get_u32(src + 4 * i);
}

// .fvecs and .ivecs share the layout: elements are 4 bytes either way
static retrlm_result retrlm__vecs_parse(const char *what, const void *data, size_t size,
                                        void **out, size_t *n, int *dim) {
    const unsigned char *p = (const unsigned char *)data;
    size_t rec, i, count;
    uint32_t d0;
    unsigned char *o;
    *out = NULL;
    *n = 0;
    *dim = 0;
    if (size == 0) return RETRLM_OK;
    if (!data || size < 4) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu bytes, too short for a vector", what, (unsigned long)size);
    d0 = retrlm__get_u32(p);
    if (d0 < 1 || d0 > RETRLM__IDX_MAX_DIM)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: first vector has dimension %ld, expected 1..%d", what,
                            (long)(int32_t)d0, RETRLM__IDX_MAX_DIM);
    rec = 4 + 4 * (size_t)d0;
    if (size % rec)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu bytes is not a whole number of %lu-byte records (dim %lu)", what,
                            (unsigned long)size, (unsigned long)rec, (unsigned long)d0);
    count = size / rec;
    for (i = 0; i < count; i++)
        if (retrlm__get_u32(p + i * rec) != d0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: vector %lu has dimension %ld, the first has %lu", what,
                                (unsigned long)i, (long)(int32_t)retrlm__get_u32(p + i * rec), (unsigned long)d0);
    o = (unsigned char *)retrlm__alloc(count, 4 * (size_t)d0);
    if (!o) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu vectors", what, (unsigned long)count);
    for (i = 0; i < count; i++) retrlm__copy_le32(o + i * 4 * (size_t)d0, p + i * rec + 4, d0);
    *out = o;
    *n = count;
    *dim = (int)d0;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_fvecs_read_memory(const void *data, size_t size, float **out,
                                                  size_t *n, int *dim) {
    void *o;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    r = retrlm__vecs_parse(".fvecs", data, size, &o, n, dim);
    *out = (float *)o;
    return r;
}

// .npy: "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 for 2.x and 3.x), then a
// Python dict literal with 'descr', 'fortran_order' and 'shape'; the data follow the header.
static const char *retrlm__npy_ws(const char *s, const char *e) {
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    return s;
}

// a quoted string at s into buf (cap); returns the position after it or NULL
static const char *retrlm__npy_str(const char *s, const char *e, char *buf, size_t cap) {
    char q;
    size_t k = 0;
    if (s >= e || (*s != '\'' && *s != '"')) return NULL;
    q = *s++;
    while (s < e && *s != q) {
        if (k + 1 >= cap) return NULL;
        buf[k++] = *s++;
    }
    if (s >= e) return NULL;
    buf[k] = '\0';
    return s + 1;
}

RETRLM_API retrlm_result retrlm_npy_read_memory(const void *data, size_t size, float **out,
                                                size_t *n, int *dim) {
    const unsigned char *p = (const unsigned char *)data;
    const char *s, *e;
    size_t hlen, hstart, dims[2] = {0, 0}, nd = 0, count = 0, bytes = 0;
    int major, have_descr = 0, have_order = 0, have_shape = 0;
    char key[32], val[32];
    float *o;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    *n = 0;
    *dim = 0;
    if (!data || size < 10 || memcmp(p, "\x93NUMPY", 6))
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: not a .npy file (bad magic)");
    major = p[6];
    if (major == 1) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: truncated header");
        hlen = (size_t)retrlm__get_u32(p + 8);
        hstart = 12;
    } else {
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: format version %d.%d, expected 1.0 to 3.0", major, p[7]);
    }
    if (hlen > size - hstart) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header of %lu bytes runs past the end", (unsigned long)hlen);
    s = (const char *)p + hstart;
    e = s + hlen;
    s = retrlm__npy_ws(s, e);
    if (s >= e || *s != '{') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header is not a dict");
    s++;
    for (;;) {
        s = retrlm__npy_ws(s, e);
        if (s < e && *s == '}') break;
        if (!(s = retrlm__npy_str(s, e, key, sizeof key))) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected a key");
        s = retrlm__npy_ws(s, e);
        if (s >= e || *s != ':') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected ':' after '%s'", key);
        s = retrlm__npy_ws(s + 1, e);
        if (!strcmp(key, "descr")) {
            if (!(s = retrlm__npy_str(s, e, val, sizeof val))) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'descr'");
            if (strcmp(val, "<f4") && !(retrlm__host_is_le() && !strcmp(val, "=f4")))
                return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: dtype '%s', only little-endian float32 ('<f4') is read", val);
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if ((size_t)(e - s) >= 5 && !memcmp(s, "False", 5)) s += 5;
            else if ((size_t)(e - s) >= 4 && !memcmp(s, "True", 4))
                return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: Fortran order; save a C-ordered array");
            else return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'fortran_order'");
            have_order = 1;
        } else if (!strcmp(key, "shape")) {
            if (s >= e || *s != '(') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
            s++;
            for (;;) {
                size_t v = 0;
                int digits = 0;
                s = retrlm__npy_ws(s, e);
                if (s < e && *s == ')') break;
                while (s < e && *s >= '0' && *s <= '9') {
                    if (v > (SIZE_MAX - 9) / 10) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape too large");
                    v = v * 10 + (size_t)(*s++ - '0');
                    digits++;
                }
                if (!digits) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
                if (nd == 2) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: more than 2 dimensions; expected (n, dim)");
                dims[nd++] = v;
                s = retrlm__npy_ws(s, e);
                if (s < e && *s == ',') s++;
                else if (s >= e || *s != ')') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
            }
            s++;
            if (nd != 2) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: %lu dimensions; expected a 2-D array (n, dim)", (unsigned long)nd);
            have_shape = 1;
        } else {
            return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: unknown key '%s'", key);
        }
        s = retrlm__npy_ws(s, e);
        if (s < e && *s == ',') s++;
        else if (s >= e || *s != '}') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape)
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header lacks 'descr', 'fortran_order' or 'shape'");
    if (dims[1] > RETRLM__IDX_MAX_DIM || (dims[1] == 0 && dims[0] != 0))
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape (%lu, %lu): dim must be 1..%d", (unsigned long)dims[0],
                            (unsigned long)dims[1], RETRLM__IDX_MAX_DIM);
    if (retrlm__mul_overflows(dims[0], dims[1], &count) || retrlm__mul_overflows(count, 4, &bytes) ||
        bytes != size - hstart - hlen)
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape (%lu, %lu) needs %lu data bytes, the file has %lu",
                            (unsigned long)dims[0], (unsigned long)dims[1], (unsigned long)bytes,
                            (unsigned long)(size - hstart - hlen));
    if (count == 0) return RETRLM_OK;
    o = (float *)retrlm__alloc(count, sizeof(float));
    if (!o) return retrlm__fail(RETRLM_ERR_NOMEM, ".npy: no memory for %lu values", (unsigned long)count);
    retrlm__copy_le32(o, p + hstart + hlen, count);
    *out = o;
    *n = dims[0];
    *dim = (int)dims[1];
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
// the whole regular file at path (io.c's reader, which also refuses directories and FIFOs)
static retrlm_result retrlm__slurp(const char *path, unsigned char **buf, size_t *size) {
    char *d;
    retrlm_result r = retrlm__read_file(path, &d, size);
    *buf = (unsigned char *)d;
    return r;
}

// writes n records of dim 4-byte elements, each after its int32 dim (header NULL: .npy data)
typedef struct retrlm__vecs_out {
    const void *head, *x;
    size_t head_bytes, n;
    int dim, per_record_dim;
} retrlm__vecs_out;

static retrlm_result retrlm__vecs_emit(const void *ctx, retrlm__sink *sink) {
    const retrlm__vecs_out *o = (const retrlm__vecs_out *)ctx;
    unsigned char *buf;
    size_t i, rb = 4 * (size_t)o->dim + (o->per_record_dim ? 4 : 0), per = 65536 / rb + 1, used = 0;
    int bad = 0;
    if (!(buf = (unsigned char *)retrlm__alloc(per, rb))) return retrlm__fail(RETRLM_ERR_NOMEM, "write: no memory");
    if (o->head_bytes) bad = retrlm__sink_put(sink, o->head, o->head_bytes);
    for (i = 0; i < o->n && !bad; i++) { // records gathered into about 64 KiB a write
        const unsigned char *src = (const unsigned char *)o->x + i * 4 * (size_t)o->dim;
        unsigned char *dst = buf + used * rb;
        int j;
        if (o->per_record_dim) {
            retrlm__put_u32(dst, (uint32_t)o->dim);
            dst += 4;
        }
        for (j = 0; j < o->dim; j++) {
            uint32_t v;
            memcpy(&v, src + 4 * (size_t)j, 4);
            retrlm__put_u32(dst + 4 * (size_t)j, v);
        }
        if (++used == per || i + 1 == o->n) bad = retrlm__sink_put(sink, buf, used * rb), used = 0;
    }
    RETRLM_FREE(buf);
    return bad ? RETRLM_ERR_IO : RETRLM_OK;
}

// a header and n records of dim little-endian 32-bit values (each after its dim when
// per_record_dim), saved atomically
static retrlm_result retrlm__write_file(const char *path, const void *head, size_t head_bytes,
                                        const void *x, size_t n, int dim, int per_record_dim) {
    retrlm__vecs_out o;
    if (!path || dim <= 0 || (n && !x)) return retrlm__fail(RETRLM_ERR_ARG, "write: bad arguments (dim %d)", dim);
    o.head = head, o.head_bytes = head_bytes, o.x = x, o.n = n, o.dim = dim, o.per_record_dim = per_record_dim;
    return retrlm__save_atomic(path, retrlm__vecs_emit, &o);
}

// the file's bytes through a parser of vectors in memory
static retrlm_result retrlm__read_vectors(const char *path, float **out, size_t *n, int *dim,
                                          retrlm_result (*parse)(const void *, size_t, float **, size_t *, int *)) {
    unsigned char *buf;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = parse(buf, size, out, n, dim);
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_fvecs_read(const char *path, float **out, size_t *n, int *dim) {
    return retrlm__read_vectors(path, out, n, dim, retrlm_fvecs_read_memory);
}

RETRLM_API retrlm_result retrlm_ivecs_read(const char *path, int32_t **out, size_t *n, int *dim) {
    unsigned char *buf;
    void *o = NULL;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = retrlm__vecs_parse(".ivecs", buf, size, &o, n, dim);
    *out = (int32_t *)o;
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_fvecs_write(const char *path, const float *x, size_t n, int dim) {
    return retrlm__write_file(path, NULL, 0, x, n, dim, 1);
}

RETRLM_API retrlm_result retrlm_ivecs_write(const char *path, const int32_t *x, size_t n, int dim) {
    return retrlm__write_file(path, NULL, 0, x, n, dim, 1);
}

RETRLM_API retrlm_result retrlm_npy_read(const char *path, float **out, size_t *n, int *dim) {
    return retrlm__read_vectors(path, out, n, dim, retrlm_npy_read_memory);
}

RETRLM_API retrlm_result retrlm_npy_write(const char *path, const float *x, size_t n, int dim) {
    char head[128];
    int len, total;
    if (dim <= 0) return retrlm__fail(RETRLM_ERR_ARG, ".npy write: dim %d", dim);
    len = snprintf(head + 10, sizeof head - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lu, %d), }",
                   (unsigned long)n, dim);
    total = (10 + len + 1 + 63) / 64 * 64; // the data start 64-byte aligned, header ends in '\n'
    memset(head + 10 + len, ' ', (size_t)(total - 10 - len));
    head[total - 1] = '\n';
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)((total - 10) & 0xFF);
    head[9] = (char)((total - 10) >> 8);
    return retrlm__write_file(path, head, (size_t)total, x, n, dim, 0);
}
#endif
