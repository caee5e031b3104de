// index: flat and IVF, f32 and SQ8, k-means, persistence, .fvecs/.npy
#include "retrlm.h"
#include "test.h"
#include <string.h>

// writes v little-endian at p (the byte order of .fvecs files on every host)
static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

// A Gaussian mixture: nc centres in [-1, 1]^d, points = centre + sigma * N(0, 1).
static float *mixture(size_t n, int d, int nc, float sigma, uint64_t seed) {
    retrlm_rng r;
    float *c = (float *)malloc((size_t)nc * (size_t)d * sizeof(float));
    float *x = (float *)malloc(n * (size_t)d * sizeof(float));
    size_t i;
    int j;
    retrlm_rng_seed(&r, seed);
    for (i = 0; i < (size_t)nc * (size_t)d; i++) c[i] = 2.0f * retrlm_rng_float(&r) - 1.0f;
    for (i = 0; i < n; i++) {
        const float *ci = c + (size_t)retrlm_rng_below(&r, (uint64_t)nc) * (size_t)d;
        for (j = 0; j < d; j++) x[i * (size_t)d + (size_t)j] = ci[j] + sigma * retrlm_rng_normal(&r);
    }
    free(c);
    return x;
}

// naive exact search in double: scores larger-is-better (L2: negated distance)
static double naive_score(int metric, const float *q, const float *x, int d) {
    double s = 0, qq = 0, xx = 0;
    int j;
    for (j = 0; j < d; j++) {
        if (metric == RETRLM_METRIC_L2) s -= ((double)q[j] - x[j]) * ((double)q[j] - x[j]);
        else s += (double)q[j] * x[j];
        qq += (double)q[j] * q[j];
        xx += (double)x[j] * x[j];
    }
    if (metric == RETRLM_METRIC_COSINE) s /= (sqrt(qq) * sqrt(xx) + 1e-30);
    return s;
}

static void naive_topk(int metric, const float *x, const int64_t *ids, size_t n, int d, const float *q,
                       int k, int64_t *out, double *outs) {
    int i;
    for (i = 0; i < k; i++) {
        out[i] = -1;
        outs[i] = -INFINITY;
    }
    {
        size_t r;
        for (r = 0; r < n; r++) {
            double s = naive_score(metric, q, x + r * (size_t)d, d);
            int64_t id = ids ? ids[r] : (int64_t)r;
            int p = k;
            while (p > 0 && (s > outs[p - 1] || (s == outs[p - 1] && id < out[p - 1]))) p--;
            if (p < k) {
                memmove(out + p + 1, out + p, (size_t)(k - p - 1) * sizeof(int64_t));
                memmove(outs + p + 1, outs + p, (size_t)(k - p - 1) * sizeof(double));
                out[p] = id;
                outs[p] = s;
            }
        }
    }
}

// the returned ids equal the naive ones, except where two naive scores are within tol (a tie
// that float rounding may order either way); scores match the naive ones within tol
static int same_topk(int metric, const int64_t *got, const float *gs, const int64_t *want,
                     const double *ws, int k, double tol) {
    int i;
    for (i = 0; i < k; i++) {
        double g = metric == RETRLM_METRIC_L2 ? -(double)gs[i] : gs[i];
        if (fabs(g - ws[i]) > tol * (1 + fabs(ws[i]))) return 0;
        if (got[i] != want[i]) {
            int near_tie = (i > 0 && fabs(ws[i] - ws[i - 1]) <= tol * (1 + fabs(ws[i]))) ||
                           (i + 1 < k && fabs(ws[i] - ws[i + 1]) <= tol * (1 + fabs(ws[i])));
            if (!near_tie) return 0;
        }
    }
    return 1;
}

static double recall_at(const int64_t *got, const int64_t *truth, int nq, int k) {
    int q, i, j, hit = 0;
    for (q = 0; q < nq; q++)
        for (i = 0; i < k; i++)
            for (j = 0; j < k; j++)
                if (got[(size_t)q * k + i] == truth[(size_t)q * k + j] && truth[(size_t)q * k + j] >= 0) {
                    hit++;
                    break;
                }
    return (double)hit / ((double)nq * k);
}

static void init_index(retrlm_index *ix, int d, int metric, int storage, int nlist, int rerank) {
    retrlm_index_config c;
    memset(&c, 0, sizeof c);
    c.dim = d;
    c.metric = metric;
    c.storage = storage;
    c.nlist = nlist;
    c.rerank = rerank;
    CHECK_OK(retrlm_index_init(ix, &c));
}

static void test_flat_equals_naive(void) {
    const int d = 37, nq = 20, k = 10; // odd d: exercises the kernels' tails
    const size_t n = 3000;
    float *x = mixture(n, d, 20, 0.3f, 1), *q = mixture((size_t)nq, d, 20, 0.3f, 2);
    int metric, qi, ok1 = 1, okb = 1;
    int64_t ids[20 * 10], want[10];
    float sc[20 * 10];
    double ws[10];
    for (metric = 0; metric < 3; metric++) {
        retrlm_index ix;
        init_index(&ix, d, metric, RETRLM_STORAGE_F32, 0, 0);
        CHECK_OK(retrlm_index_add(&ix, x, n, d, NULL));
        CHECK(ix.n == n && ix.next_id == (int64_t)n);
        // batch
        CHECK_OK(retrlm_index_search(&ix, q, nq, d, k, NULL, ids, sc));
        for (qi = 0; qi < nq; qi++) {
            naive_topk(metric, x, NULL, n, d, q + (size_t)qi * d, k, want, ws);
            if (!same_topk(metric, ids + qi * k, sc + qi * k, want, ws, k, 1e-4)) okb = 0;
        }
        // one at a time
        for (qi = 0; qi < nq; qi++) {
            CHECK_OK(retrlm_index_search(&ix, q + (size_t)qi * d, 1, d, k, NULL, ids, sc));
            naive_topk(metric, x, NULL, n, d, q + (size_t)qi * d, k, want, ws);
            if (!same_topk(metric, ids, sc, want, ws, k, 1e-4)) ok1 = 0;
        }
        retrlm_index_free(&ix);
    }
    CHECK(okb);
    CHECK(ok1);
    free(x);
    free(q);
}

static void test_ties_by_id(void) {
    // identical vectors: every score ties, so the smallest ids win, in order
    const int d = 8;
    float x[50 * 8], q[8];
    int64_t ids[50], out[5];
    float sc[5];
    int i, j;
    retrlm_index ix;
    for (i = 0; i < 50; i++) {
        for (j = 0; j < d; j++) x[i * d + j] = 1.0f;
        ids[i] = 1000 - 7 * i;
    }
    for (j = 0; j < d; j++) q[j] = 1.0f;
    init_index(&ix, d, RETRLM_METRIC_IP, RETRLM_STORAGE_F32, 0, 0);
    CHECK_OK(retrlm_index_add(&ix, x, 50, d, ids));
    CHECK_OK(retrlm_index_search(&ix, q, 1, d, 5, NULL, out, sc));
    for (i = 0; i < 5; i++) CHECK(out[i] == 1000 - 7 * 49 + 7 * i);
    retrlm_index_free(&ix);
}

static void test_ivf_full_probe_equals_flat(void) {
    const int d = 24, nq = 30, k = 10, nlist = 16;
    const size_t n = 4000;
    float *x = mixture(n, d, 30, 0.2f, 3), *q = mixture((size_t)nq, d, 30, 0.2f, 4);
    int metric, storage;
    int64_t a[30 * 10], b[30 * 10];
    float sa[30 * 10], sb[30 * 10];
    for (storage = 0; storage < 2; storage++) {
        for (metric = 0; metric < 3; metric++) {
            retrlm_index flat, ivf;
            retrlm_search_params p;
            int qi, same = 1, i;
            init_index(&flat, d, metric, storage, 0, 0);
            init_index(&ivf, d, metric, storage, nlist, 0);
            CHECK_OK(retrlm_index_train(&flat, x, n, d));
            CHECK_OK(retrlm_index_train(&ivf, x, n, d));
            CHECK_OK(retrlm_index_add(&flat, x, n, d, NULL));
            CHECK_OK(retrlm_index_add(&ivf, x, n, d, NULL));
            p.nprobe = nlist;
            p.rerank = 0;
            // one query at a time: both scan with the same row kernel, so scores are identical
            for (qi = 0; qi < nq; qi++) {
                CHECK_OK(retrlm_index_search(&flat, q + (size_t)qi * d, 1, d, k, NULL, a + qi * k, sa + qi * k));
                CHECK_OK(retrlm_index_search(&ivf, q + (size_t)qi * d, 1, d, k, &p, b + qi * k, sb + qi * k));
            }
            for (i = 0; i < nq * k; i++) same &= a[i] == b[i] && sa[i] == sb[i];
            CHECK(same);
            // batches: both go through the same matrix multiply (f32) or row kernel (SQ8)
            CHECK_OK(retrlm_index_search(&flat, q, nq, d, k, NULL, a, sa));
            CHECK_OK(retrlm_index_search(&ivf, q, nq, d, k, &p, b, sb));
            for (i = 0; i < nq * k; i++) same &= a[i] == b[i] && sa[i] == sb[i];
            CHECK(same);
            retrlm_index_free(&flat);
            retrlm_index_free(&ivf);
        }
    }
    free(x);
    free(q);
}

static void test_ivf_recall_grows_with_nprobe(void) {
    const int d = 32, nq = 100, k = 10;
    const size_t n = 20000;
    float *x = mixture(n, d, 100, 0.25f, 5), *q = mixture((size_t)nq, d, 100, 0.25f, 6);
    int64_t *truth = (int64_t *)malloc(sizeof(int64_t) * nq * k), *got = (int64_t *)malloc(sizeof(int64_t) * nq * k);
    retrlm_index flat, ivf;
    retrlm_search_params p;
    double r1, r8;
    init_index(&flat, d, RETRLM_METRIC_L2, RETRLM_STORAGE_F32, 0, 0);
    init_index(&ivf, d, RETRLM_METRIC_L2, RETRLM_STORAGE_F32, 64, 0);
    CHECK_OK(retrlm_index_add(&flat, x, n, d, NULL));
    CHECK_OK(retrlm_index_train(&ivf, x, n, d));
    CHECK_OK(retrlm_index_add(&ivf, x, n / 2, d, NULL)); // two adds: the lists are rebuilt
    CHECK_OK(retrlm_index_add(&ivf, x + (n / 2) * d, n - n / 2, d, NULL));
    CHECK(ivf.list_offsets[ivf.nlist] == n);
    CHECK_OK(retrlm_index_search(&flat, q, nq, d, k, NULL, truth, NULL));
    p.rerank = 0;
    p.nprobe = 1;
    CHECK_OK(retrlm_index_search(&ivf, q, nq, d, k, &p, got, NULL));
    r1 = recall_at(got, truth, nq, k);
    p.nprobe = 8;
    CHECK_OK(retrlm_index_search(&ivf, q, nq, d, k, &p, got, NULL));
    r8 = recall_at(got, truth, nq, k);
    CHECK(r8 >= r1);
    CHECK(r8 > 0.9);
    retrlm_index_free(&flat);
    retrlm_index_free(&ivf);
    free(x);
    free(q);
    free(truth);
    free(got);
}

static void test_sq8_rerank_recall(void) {
    const int d = 64, nq = 200, k = 10;
    const size_t n = 20000;
    float *x = mixture(n, d, 50, 0.3f, 7), *q = mixture((size_t)nq, d, 50, 0.3f, 8);
    int64_t *truth = (int64_t *)malloc(sizeof(int64_t) * nq * k), *got = (int64_t *)malloc(sizeof(int64_t) * nq * k);
    int metric;
    for (metric = 0; metric < 3; metric++) {
        retrlm_index flat, sq, sqr;
        double r_plain, r_rerank, r_single;
        int qi;
        init_index(&flat, d, metric, RETRLM_STORAGE_F32, 0, 0);
        init_index(&sq, d, metric, RETRLM_STORAGE_SQ8, 0, 0);
        init_index(&sqr, d, metric, RETRLM_STORAGE_SQ8, 0, 4);
        CHECK(retrlm_index_add(&sq, x, n, d, NULL) == RETRLM_ERR_ARG); // not trained yet
        CHECK_OK(retrlm_index_train(&sq, x, n, d));
        CHECK_OK(retrlm_index_train(&sqr, x, n, d));
        CHECK_OK(retrlm_index_add(&flat, x, n, d, NULL));
        CHECK_OK(retrlm_index_add(&sq, x, n, d, NULL));
        CHECK_OK(retrlm_index_add(&sqr, x, n, d, NULL));
        CHECK(sq.vectors == NULL && sqr.vectors != NULL);
        CHECK_OK(retrlm_index_search(&flat, q, nq, d, k, NULL, truth, NULL));
        CHECK_OK(retrlm_index_search(&sq, q, nq, d, k, NULL, got, NULL));
        r_plain = recall_at(got, truth, nq, k);
        CHECK_OK(retrlm_index_search(&sqr, q, nq, d, k, NULL, got, NULL));
        r_rerank = recall_at(got, truth, nq, k);
        for (qi = 0; qi < nq; qi++)
            CHECK_OK(retrlm_index_search(&sqr, q + (size_t)qi * d, 1, d, k, NULL, got + qi * k, NULL));
        r_single = recall_at(got, truth, nq, k);
        CHECK(r_plain > 0.8);
        CHECK(r_rerank >= 0.99);
        CHECK(r_single >= 0.99);
        if (r_rerank < 0.99 || r_plain <= 0.8)
            fprintf(stderr, "metric %d: SQ8 recall@10 %.4f, with re-ranking %.4f\n", metric, r_plain, r_rerank);
        retrlm_index_free(&flat);
        retrlm_index_free(&sq);
        retrlm_index_free(&sqr);
    }
    free(x);
    free(q);
    free(truth);
    free(got);
}

static void test_remove(void) {
    const int d = 16, k = 20, nq = 10;
    const size_t n = 2000;
    float *x = mixture(n, d, 10, 0.3f, 9), *q = mixture((size_t)nq, d, 10, 0.3f, 10);
    int64_t rm[500], out[10 * 20];
    int kind;
    for (kind = 0; kind < 3; kind++) {
        retrlm_index ix;
        size_t removed = 0, i;
        int ok = 1;
        init_index(&ix, d, RETRLM_METRIC_L2, kind == 2 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32,
                   kind == 0 ? 0 : 8, kind == 2 ? 2 : 0);
        CHECK_OK(retrlm_index_train(&ix, x, n, d));
        CHECK_OK(retrlm_index_add(&ix, x, n, d, NULL));
        for (i = 0; i < 500; i++) rm[i] = (int64_t)(i * 4); // every 4th id
        rm[499] = 999999;                                 // absent: ignored
        CHECK_OK(retrlm_index_remove(&ix, rm, 500, &removed));
        CHECK(removed == 499 && ix.n == n - 499);
        {
            retrlm_search_params p;
            p.nprobe = 8;
            p.rerank = 0;
            CHECK_OK(retrlm_index_search(&ix, q, nq, d, k, &p, out, NULL));
        }
        for (i = 0; i < (size_t)(nq * k); i++) ok &= out[i] >= 0 && (out[i] % 4 != 0 || out[i] >= 1996);
        CHECK(ok);
        if (ix.nlist) CHECK(ix.list_offsets[ix.nlist] == ix.n);
        retrlm_index_free(&ix);
    }
    free(x);
    free(q);
}

static void test_errors_and_edges(void) {
    const int d = 4;
    float x[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0}, q[4] = {1, 0.5f, 0, 0}, bad[4] = {0, 0, 0, 0};
    int64_t out[8], neg = -5;
    float sc[8];
    retrlm_index ix;
    retrlm_index_config c;
    memset(&c, 0, sizeof c);
    CHECK(retrlm_index_init(&ix, &c) == RETRLM_ERR_ARG); // dim 0
    retrlm_index_free(&ix);
    c.dim = 4;
    c.metric = 7;
    CHECK(retrlm_index_init(&ix, &c) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "metric") != NULL);
    init_index(&ix, d, RETRLM_METRIC_IP, RETRLM_STORAGE_F32, 0, 0);
    // empty index: padded results
    CHECK_OK(retrlm_index_search(&ix, q, 1, d, 3, NULL, out, sc));
    CHECK(out[0] == -1 && out[2] == -1 && sc[0] == -INFINITY);
    CHECK_OK(retrlm_index_add(&ix, x, 3, d, NULL));
    // dimension mismatch
    CHECK(retrlm_index_add(&ix, x, 3, 5, NULL) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "dim") != NULL);
    CHECK(retrlm_index_search(&ix, q, 1, 3, 2, NULL, out, sc) == RETRLM_ERR_ARG);
    // NaN and inf
    bad[2] = NAN;
    CHECK(retrlm_index_add(&ix, bad, 1, d, NULL) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "NaN") != NULL);
    CHECK(retrlm_index_search(&ix, bad, 1, d, 2, NULL, out, sc) == RETRLM_ERR_ARG);
    bad[2] = INFINITY;
    CHECK(retrlm_index_add(&ix, bad, 1, d, NULL) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "infinite") != NULL);
    CHECK(ix.n == 3);
    // negative id
    CHECK(retrlm_index_add(&ix, q, 1, d, &neg) == RETRLM_ERR_ARG);
    // k > n: the extra slots are padded
    CHECK_OK(retrlm_index_search(&ix, q, 1, d, 8, NULL, out, sc));
    CHECK(out[0] == 0 && out[1] == 1 && out[2] == 2 && out[3] == -1 && out[7] == -1);
    CHECK(sc[0] == 1.0f && sc[1] == 0.5f && sc[3] == -INFINITY);
    // k <= 0
    CHECK(retrlm_index_search(&ix, q, 1, d, 0, NULL, out, sc) == RETRLM_ERR_ARG);
    // nq == 0 is fine
    CHECK_OK(retrlm_index_search(&ix, q, 0, d, 2, NULL, out, sc));
    retrlm_index_free(&ix);
    retrlm_index_free(&ix); // twice is fine
    // IVF: too few training vectors; add before train
    init_index(&ix, d, RETRLM_METRIC_L2, RETRLM_STORAGE_F32, 8, 0);
    CHECK(retrlm_index_add(&ix, x, 3, d, NULL) == RETRLM_ERR_ARG);
    CHECK(retrlm_index_train(&ix, x, 3, d) == RETRLM_ERR_ARG);
    CHECK(strstr(retrlm_last_error(), "centroids") != NULL);
    CHECK_OK(retrlm_index_search(&ix, q, 1, d, 2, NULL, out, sc)); // untrained: nothing to find
    CHECK(out[0] == -1 && sc[0] == INFINITY);
    retrlm_index_free(&ix);
}

static void test_save_load(void) {
    const int d = 20, nq = 15, k = 7;
    const size_t n = 3000;
    float *x = mixture(n, d, 12, 0.3f, 11), *q = mixture((size_t)nq, d, 12, 0.3f, 12);
    int kind;
    for (kind = 0; kind < 4; kind++) {
        retrlm_index ix, ld, lf;
        void *buf = NULL, *abuf;
        size_t size = 0;
        int64_t a[15 * 7], b[15 * 7];
        float sa[15 * 7], sb[15 * 7];
        int same = 1, i;
        char path[64];
        int storage = kind & 1 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32, nlist = kind & 2 ? 10 : 0;
        init_index(&ix, d, kind == 3 ? RETRLM_METRIC_COSINE : RETRLM_METRIC_L2, storage, nlist, storage ? 3 : 0);
        ix.nprobe = 4;
        CHECK_OK(retrlm_index_train(&ix, x, n, d));
        CHECK_OK(retrlm_index_add(&ix, x, n, d, NULL));
        CHECK_OK(retrlm_index_search(&ix, q, nq, d, k, NULL, a, sa));
        CHECK_OK(retrlm_index_save_memory(&ix, NULL, 0, &size));
        buf = malloc(size);
        CHECK_OK(retrlm_index_save_memory(&ix, buf, size, &size));
        // load from a 64-byte aligned copy: borrowed in place
        abuf = malloc(size + 64);
        {
            unsigned char *al = (unsigned char *)abuf + (64 - (uintptr_t)abuf % 64) % 64;
            memcpy(al, buf, size);
            CHECK_OK(retrlm_index_load_memory(&ld, al, size));
            CHECK(ld.n == ix.n && ld.nprobe == 4);
            CHECK((const unsigned char *)ld.ids > al && (const unsigned char *)ld.ids < al + size); // in place
            CHECK_OK(retrlm_index_search(&ld, q, nq, d, k, NULL, b, sb));
            for (i = 0; i < nq * k; i++) same &= a[i] == b[i] && sa[i] == sb[i];
            CHECK(same);
            // mutating a loaded index copies it first
            {
                int64_t rm = a[0];
                size_t removed;
                CHECK_OK(retrlm_index_remove(&ld, &rm, 1, &removed));
                CHECK(removed == 1 && ld.n == n - 1);
                CHECK_OK(retrlm_index_search(&ld, q, 1, d, k, NULL, b, sb));
                CHECK(b[0] != rm);
            }
            retrlm_index_free(&ld);
        }
        free(abuf);
        // through a file (mapped when >= 1 MiB)
        snprintf(path, sizeof path, "build/tests/index_%d.rlm", kind);
        CHECK_OK(retrlm_index_save(&ix, path));
        CHECK_OK(retrlm_index_load(&lf, path));
        CHECK_OK(retrlm_index_search(&lf, q, nq, d, k, NULL, b, sb));
        for (i = 0; i < nq * k; i++) same &= a[i] == b[i] && sa[i] == sb[i];
        CHECK(same);
        CHECK(retrlm_index_bytes(&lf) == retrlm_index_bytes(&ix));
        retrlm_index_free(&lf);
        remove(path);
        // every truncation and a few flipped bytes fail cleanly
        {
            size_t cut;
            int okc = 1;
            for (cut = 0; cut < size; cut += 1 + size / 50)
                okc &= retrlm_index_load_memory(&ld, buf, cut) != RETRLM_OK;
            CHECK(okc);
        }
        free(buf);
        retrlm_index_free(&ix);
    }
    free(x);
    free(q);
}

static void test_big_file_mapped(void) {
    // 1 MiB and more: the loader maps the file and the index points into the mapping
    const int d = 64;
    const size_t n = 6000;
    float *x = mixture(n, d, 8, 0.5f, 13);
    retrlm_index ix, lf;
    int64_t a[5], b[5];
    init_index(&ix, d, RETRLM_METRIC_IP, RETRLM_STORAGE_F32, 0, 0);
    CHECK_OK(retrlm_index_add(&ix, x, n, d, NULL));
    CHECK_OK(retrlm_index_save(&ix, "build/tests/index_big.rlm"));
    CHECK_OK(retrlm_index_load(&lf, "build/tests/index_big.rlm"));
#ifdef RETRLM__POSIX
    CHECK(lf.reader_.mapped_ == 1);
#endif
    CHECK(lf.vectors >= (const float *)(const void *)lf.reader_.base_ &&
          (const unsigned char *)lf.vectors < lf.reader_.base_ + lf.reader_.size);
    CHECK_OK(retrlm_index_search(&ix, x + 77 * d, 1, d, 5, NULL, a, NULL));
    CHECK_OK(retrlm_index_search(&lf, x + 77 * d, 1, d, 5, NULL, b, NULL));
    CHECK(!memcmp(a, b, sizeof a));
    // add to the mapped index: copied, then grown
    CHECK_OK(retrlm_index_add(&lf, x, 10, d, NULL));
    CHECK(lf.n == n + 10 && lf.next_id == (int64_t)n + 10);
    retrlm_index_free(&lf);
    retrlm_index_free(&ix);
    remove("build/tests/index_big.rlm");
    free(x);
}

static int count_calls(void *user, const char *stage, double done, double total) {
    int *c = (int *)user;
    (void)stage;
    (void)done;
    (void)total;
    c[0]++;
    return c[1] && c[0] >= c[1];
}

static void test_kmeans(void) {
    const int d = 8, k = 6;
    const size_t n = 3000;
    float *x = mixture(n, d, 6, 0.05f, 14), *c1, *c2;
    retrlm_index_config cfg;
    int calls[2] = {0, 0}, init, i;
    c1 = (float *)malloc(sizeof(float) * k * d);
    c2 = (float *)malloc(sizeof(float) * k * d);
    memset(&cfg, 0, sizeof cfg);
    for (init = 0; init < 2; init++) {
        size_t r;
        int *hit = (int *)calloc((size_t)k, sizeof(int)), distinct = 0;
        double sse = 0;
        cfg.kmeans_init = init;
        cfg.kmeans_iters = 20;
        CHECK_OK(retrlm_kmeans(c1, k, x, n, d, RETRLM_METRIC_L2, &cfg));
        CHECK_OK(retrlm_kmeans(c2, k, x, n, d, RETRLM_METRIC_L2, &cfg));
        CHECK(!memcmp(c1, c2, sizeof(float) * k * d)); // deterministic
        // tight clusters: every point is close to a centroid
        for (r = 0; r < n; r++) {
            double best = 1e30;
            int bi = 0, c;
            for (c = 0; c < k; c++) {
                double s = -naive_score(RETRLM_METRIC_L2, x + r * d, c1 + c * d, d);
                if (s < best) {
                    best = s;
                    bi = c;
                }
            }
            sse += best;
            hit[bi]++;
        }
        for (i = 0; i < k; i++) distinct += hit[i] > 0;
        CHECK(distinct == k);
        if (init == 1) CHECK(sse / n < 0.05); // k-means++ finds the 6 blobs (sigma^2 d = 0.02)
        free(hit);
    }
    // sampling: max 50 points a centroid; progress and cancel
    cfg.max_points_per_list = 50;
    cfg.progress = count_calls;
    cfg.progress_user = calls;
    cfg.kmeans_iters = 5;
    cfg.kmeans_init = RETRLM_KMEANS_RANDOM;
    CHECK_OK(retrlm_kmeans(c1, k, x, n, d, RETRLM_METRIC_L2, &cfg));
    CHECK(calls[0] == 5);
    calls[0] = 0;
    calls[1] = 2;
    CHECK(retrlm_kmeans(c1, k, x, n, d, RETRLM_METRIC_L2, &cfg) == RETRLM_ERR_CANCELLED);
    // empty clusters get repaired: 4 distinct points, 4 centroids
    {
        float y[40 * 2];
        float cc[4 * 2];
        for (i = 0; i < 40; i++) {
            y[2 * i] = (float)(i % 4);
            y[2 * i + 1] = 0;
        }
        memset(&cfg, 0, sizeof cfg);
        cfg.kmeans_iters = 10;
        CHECK_OK(retrlm_kmeans(cc, 4, y, 40, 2, RETRLM_METRIC_L2, &cfg));
        for (i = 0; i < 8; i++) CHECK(cc[i] == cc[i]);
    }
    free(c1);
    free(c2);
    free(x);
}

static void test_train_cancel_leaves_index_usable(void) {
    const int d = 8;
    const size_t n = 2000;
    float *x = mixture(n, d, 10, 0.3f, 15);
    retrlm_index ix;
    retrlm_index_config c;
    int calls[2] = {0, 1};
    memset(&c, 0, sizeof c);
    c.dim = d;
    c.nlist = 16;
    c.progress = count_calls;
    c.progress_user = calls;
    CHECK_OK(retrlm_index_init(&ix, &c));
    CHECK(retrlm_index_train(&ix, x, n, d) == RETRLM_ERR_CANCELLED);
    CHECK(!ix.trained);
    ix.progress_ = NULL;
    CHECK_OK(retrlm_index_train(&ix, x, n, d));
    ix.progress_ = count_calls;
    calls[0] = 0;
    calls[1] = 1;
    CHECK(retrlm_index_add(&ix, x, n, d, NULL) == RETRLM_ERR_CANCELLED);
    CHECK(ix.n == 0);
    retrlm_index_free(&ix);
    free(x);
}

static void test_fvecs_npy(void) {
    const int d = 5;
    float x[3 * 5], *y = NULL;
    int32_t iv[3 * 5], *iy = NULL;
    size_t n = 0;
    int dim = 0, i, ok = 1;
    for (i = 0; i < 15; i++) {
        x[i] = (float)i * 0.25f - 1.0f;
        iv[i] = i * 1000 - 7;
    }
    CHECK_OK(retrlm_fvecs_write("build/tests/t.fvecs", x, 3, d));
    CHECK_OK(retrlm_fvecs_read("build/tests/t.fvecs", &y, &n, &dim));
    CHECK(n == 3 && dim == d && y && !memcmp(x, y, sizeof x));
    retrlm_free(y);
    CHECK_OK(retrlm_ivecs_write("build/tests/t.ivecs", iv, 3, d));
    CHECK_OK(retrlm_ivecs_read("build/tests/t.ivecs", &iy, &n, &dim));
    CHECK(n == 3 && dim == d && iy && !memcmp(iv, iy, sizeof iv));
    retrlm_free(iy);
    CHECK_OK(retrlm_npy_write("build/tests/t.npy", x, 3, d));
    CHECK_OK(retrlm_npy_read("build/tests/t.npy", &y, &n, &dim));
    CHECK(n == 3 && dim == d && y && !memcmp(x, y, sizeof x));
    retrlm_free(y);
    {
        // a header as numpy 1.x writes it, with a version 2.0 layout too
        static const char h1[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }";
        unsigned char f[256];
        size_t hl = sizeof h1 - 1, tot;
        memcpy(f, h1, hl);
        memset(f + hl, ' ', 10 + 0x76 - hl - 1);
        f[10 + 0x76 - 1] = '\n';
        tot = 10 + 0x76;
        memcpy(f + tot, x, 8);
        CHECK_OK(retrlm_npy_read_memory(f, tot + 8, &y, &n, &dim));
        CHECK(n == 2 && dim == 1 && y[1] == x[1]);
        retrlm_free(y);
        CHECK(retrlm_npy_read_memory(f, tot + 4, &y, &n, &dim) == RETRLM_ERR_FORMAT); // short data
        f[6] = 9;
        CHECK(retrlm_npy_read_memory(f, tot + 8, &y, &n, &dim) == RETRLM_ERR_UNSUPPORTED);
        f[6] = 1;
        memcpy(f + 10 + 11, "<f8", 3);
        CHECK(retrlm_npy_read_memory(f, tot + 8, &y, &n, &dim) == RETRLM_ERR_UNSUPPORTED);
        CHECK(strstr(retrlm_last_error(), "<f8") != NULL);
    }
    // a .fvecs with two dimensions
    {
        unsigned char f[4 + 8 + 4 + 12];
        put_le32(f, 2);
        put_le32(f + 12, 3);
        memset(f + 4, 0, 8);
        memset(f + 16, 0, 12);
        ok &= retrlm_fvecs_read_memory(f, sizeof f, &y, &n, &dim) == RETRLM_ERR_FORMAT;
        CHECK(ok);
    }
    CHECK(retrlm_fvecs_read("build/tests/does-not-exist.fvecs", &y, &n, &dim) == RETRLM_ERR_IO);
    remove("build/tests/t.fvecs");
    remove("build/tests/t.ivecs");
    remove("build/tests/t.npy");
}

static void test_threads_identical(void) {
    // the same search with 1 and 2 threads gives the same bits (no-op without OpenMP)
    const int d = 48, nq = 40, k = 10;
    const size_t n = 40000;
    float *x = mixture(n, d, 40, 0.3f, 16), *q = mixture((size_t)nq, d, 40, 0.3f, 17);
    int64_t a[40 * 10], b[40 * 10];
    float sa[40 * 10], sb[40 * 10];
    int kind;
    for (kind = 0; kind < 3; kind++) {
        retrlm_index ix;
        int ok = 1, i;
        init_index(&ix, d, RETRLM_METRIC_L2, kind == 1 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32, kind == 2 ? 32 : 0, 0);
        ix.nprobe = 8;
#ifdef RETRLM__OMP
        omp_set_num_threads(1);
#endif
        CHECK_OK(retrlm_index_train(&ix, x, n, d));
        CHECK_OK(retrlm_index_add(&ix, x, n, d, NULL));
        CHECK_OK(retrlm_index_search(&ix, q, nq, d, k, NULL, a, sa));
        CHECK_OK(retrlm_index_search(&ix, q, 1, d, k, NULL, a + 10 * k, sa + 10 * k));
#ifdef RETRLM__OMP
        omp_set_num_threads(2);
#endif
        {
            retrlm_index iy;
            init_index(&iy, d, RETRLM_METRIC_L2, kind == 1 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32, kind == 2 ? 32 : 0, 0);
            iy.nprobe = 8;
            CHECK_OK(retrlm_index_train(&iy, x, n, d));
            CHECK_OK(retrlm_index_add(&iy, x, n, d, NULL));
            if (kind == 2) CHECK(!memcmp(ix.centroids, iy.centroids, sizeof(float) * 32 * d));
            CHECK_OK(retrlm_index_search(&iy, q, nq, d, k, NULL, b, sb));
            CHECK_OK(retrlm_index_search(&iy, q, 1, d, k, NULL, b + 10 * k, sb + 10 * k));
            retrlm_index_free(&iy);
        }
        for (i = 0; i < nq * k; i++) ok &= a[i] == b[i] && sa[i] == sb[i];
        CHECK(ok);
        retrlm_index_free(&ix);
    }
    free(x);
    free(q);
}

int main(void) {
    RUN(test_flat_equals_naive);
    RUN(test_ties_by_id);
    RUN(test_ivf_full_probe_equals_flat);
    RUN(test_ivf_recall_grows_with_nprobe);
    RUN(test_sq8_rerank_recall);
    RUN(test_remove);
    RUN(test_errors_and_edges);
    RUN(test_save_load);
    RUN(test_big_file_mapped);
    RUN(test_kmeans);
    RUN(test_train_cancel_leaves_index_usable);
    RUN(test_fvecs_npy);
    RUN(test_threads_identical);
    return test_report();
}
