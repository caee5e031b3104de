// losses for strategies 2-4: KL distillation (REPLUG LSR, Atlas PDist), marginal likelihood
// (REALM, EMDR), TRIME's joint softmax, NPM's start/end phrase loss, RPT's LambdaRank-weighted
// pairwise loss. Each against a double-precision reference written from
// the formula, central differences of that reference for every gradient, the special cases
// that pin the definition (k = 1, P == Q, no memory = cross-entropy, absent entries, masks),
// bad input, and the same bits at 1 and 2 threads.
#include "retrlm.h"
#include "test.h"
#include "gradcheck.h"
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double lse_d(const double *x, int n) {
    double m = -INFINITY, s = 0.0;
    int i;
    for (i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) return m;
    for (i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

// ---- references in double, straight from the formulas in losses.h
static double kl_ref(const float *s, const float *g, int n, int k, double ts, double tg) {
    double a[16], b[16], tot = 0.0;
    int i, j;
    for (i = 0; i < n; i++) {
        double la, lb;
        for (j = 0; j < k; j++) a[j] = s[i * k + j] / ts, b[j] = g[i * k + j] / tg;
        la = lse_d(a, k);
        lb = lse_d(b, k);
        for (j = 0; j < k; j++)
            if (b[j] != -INFINITY) tot += exp(b[j] - lb) * ((b[j] - lb) - (a[j] - la));
    }
    return tot / n;
}

static double marginal_ref(const float *s, const float *ll, const unsigned char *mask, int n, int k,
                           int t, double temp) {
    double a[16], term[16], tot = 0.0;
    int i, j, p, counted = 0;
    for (i = 0; i < n; i++) {
        int valid = 0;
        for (p = 0; p < t; p++) valid += !mask || mask[i * t + p];
        counted += valid > 0;
    }
    for (i = 0; i < n; i++) {
        int valid = 0;
        double la, qi = 0.0;
        for (p = 0; p < t; p++) valid += !mask || mask[i * t + p];
        if (!valid) continue;
        for (j = 0; j < k; j++) a[j] = s[i * k + j] / temp;
        la = lse_d(a, k);
        for (p = 0; p < t; p++) {
            if (mask && !mask[i * t + p]) continue;
            for (j = 0; j < k; j++)
                term[j] = a[j] == -INFINITY ? -INFINITY : a[j] - la + ll[(i * k + j) * t + p];
            qi -= lse_d(term, k);
        }
        tot += qi / valid;
    }
    return tot / counted;
}

static double trime_ref(const float *l, int n, int v, const float *s, int m, const int *mt,
                        const int *y) {
    double all[64], pos[64], tot = 0.0;
    int i, j, cnt = 0;
    for (i = 0; i < n; i++) {
        int na = 0, np = 0;
        if (y[i] < 0) continue;
        cnt++;
        for (j = 0; j < v; j++) all[na++] = l[i * v + j];
        pos[np++] = l[i * v + y[i]];
        for (j = 0; j < m; j++) {
            all[na++] = s[i * m + j];
            if (mt[j] == y[i]) pos[np++] = s[i * m + j];
        }
        tot += lse_d(all, na) - lse_d(pos, np);
    }
    return cnt ? tot / cnt : 0.0;
}

// central difference of f around x[i] (f reads x)
#define FD(f, x, i, h, out)                                                                 \
    do {                                                                                    \
        float fd__keep = (x)[i];                                                            \
        double fd__p, fd__m;                                                                \
        (x)[i] = fd__keep + (h);                                                            \
        fd__p = (f);                                                                        \
        (x)[i] = fd__keep - (h);                                                            \
        fd__m = (f);                                                                        \
        (x)[i] = fd__keep;                                                                  \
        (out) = (fd__p - fd__m) / (2.0 * (h));                                              \
    } while (0)

// ---- KL distillation
static void test_kl_distill(void) {
    float s[3 * 4] = {0.3f, -0.2f, 0.9f, 0.1f, 1.5f, 1.0f, -0.5f, 0.0f, 0.2f, 0.4f, -1.0f, 0.6f};
    float g[3 * 4] = {-12.0f, -10.5f, -11.0f, -13.0f, -3.0f, -3.2f, -2.5f, -4.0f, -7.0f, -7.1f, -6.0f, -6.5f};
    float ds[12], loss, ds2[12], same[4];
    int i;
    const float ts = 0.5f, tg = 2.0f;
    CHECK_OK(retrlm_kl_distill_loss(s, g, 3, 4, ts, tg, &loss, ds));
    CHECK_NEAR(loss, kl_ref(s, g, 3, 4, ts, tg), 1e-6);
    CHECK(loss > 0.0f);
    for (i = 0; i < 12; i++) {
        double fd;
        FD(kl_ref(s, g, 3, 4, ts, tg), s, i, 1e-3, fd);
        CHECK_NEAR(ds[i], fd, 2e-5);
    }
    // the gold side has no gradient, and the gradients of one query sum to zero
    CHECK_NEAR(ds[0] + ds[1] + ds[2] + ds[3], 0.0, 1e-7);
    // P == Q: the loss is zero, and so is its gradient
    for (i = 0; i < 4; i++) same[i] = g[i] * ts / tg;
    CHECK_OK(retrlm_kl_distill_loss(same, g, 1, 4, ts, tg, &loss, ds2));
    CHECK_NEAR(loss, 0.0, 1e-6);
    for (i = 0; i < 4; i++) CHECK_NEAR(ds2[i], 0.0, 1e-6);
    // an absent candidate (-inf on both sides) is the same as three candidates
    {
        float s4[4] = {0.3f, -0.2f, -INFINITY, 0.1f}, g4[4] = {-12.0f, -10.5f, -INFINITY, -13.0f};
        float s3[3] = {0.3f, -0.2f, 0.1f}, g3[3] = {-12.0f, -10.5f, -13.0f}, l4, l3, d4[4], d3[3];
        CHECK_OK(retrlm_kl_distill_loss(s4, g4, 1, 4, ts, tg, &l4, d4));
        CHECK_OK(retrlm_kl_distill_loss(s3, g3, 1, 3, ts, tg, &l3, d3));
        CHECK_NEAR(l4, l3, 1e-6);
        CHECK(d4[2] == 0.0f);
        CHECK_NEAR(d4[0], d3[0], 1e-6);
        CHECK_NEAR(d4[3], d3[2], 1e-6);
        // absent on one side only, all absent, NaN, zero temperature: errors
        g4[2] = -1.0f;
        CHECK(retrlm_kl_distill_loss(s4, g4, 1, 4, ts, tg, &l4, d4) == RETRLM_ERR_ARG);
        for (i = 0; i < 4; i++) s4[i] = g4[i] = -INFINITY;
        CHECK(retrlm_kl_distill_loss(s4, g4, 1, 4, ts, tg, &l4, d4) == RETRLM_ERR_ARG);
        s3[1] = NAN;
        CHECK(retrlm_kl_distill_loss(s3, g3, 1, 3, ts, tg, &l3, NULL) == RETRLM_ERR_ARG);
        s3[1] = 0.0f;
        CHECK(retrlm_kl_distill_loss(s3, g3, 1, 3, 0.0f, tg, &l3, NULL) == RETRLM_ERR_ARG);
        CHECK(retrlm_kl_distill_loss(s3, g3, 0, 3, ts, tg, &l3, NULL) == RETRLM_ERR_ARG);
    }
}

// ---- marginal likelihood
static void test_marginal(void) {
    enum { N = 2, K = 3, T = 4 };
    float s[N * K] = {0.5f, -0.3f, 1.2f, 0.0f, 0.7f, -0.4f};
    float ll[N * K * T], ds[N * K], dl[N * K * T], loss;
    unsigned char mask[N * T] = {1, 1, 0, 1, 0, 1, 1, 1};
    int i;
    const float temp = 0.7f;
    for (i = 0; i < N * K * T; i++) ll[i] = -0.5f - 0.37f * (float)((i * 7) % 11);
    CHECK_OK(retrlm_marginal_loss(s, ll, mask, N, K, T, temp, &loss, ds, dl));
    CHECK_NEAR(loss, marginal_ref(s, ll, mask, N, K, T, temp), 1e-5);
    for (i = 0; i < N * K; i++) {
        double fd;
        FD(marginal_ref(s, ll, mask, N, K, T, temp), s, i, 1e-3, fd);
        CHECK_NEAR(ds[i], fd, 3e-5);
    }
    for (i = 0; i < N * K * T; i++) {
        double fd;
        FD(marginal_ref(s, ll, mask, N, K, T, temp), ll, i, 1e-3, fd);
        CHECK_NEAR(dl[i], fd, 3e-5);
    }
    // masked positions carry no gradient and do not move the loss
    CHECK(dl[(0 * K + 1) * T + 2] == 0.0f);
    {
        float l2;
        ll[(0 * K + 1) * T + 2] = -1e3f;
        CHECK_OK(retrlm_marginal_loss(s, ll, mask, N, K, T, temp, &l2, NULL, NULL));
        CHECK(l2 == loss);
    }
    // one candidate: the loss is the mean negative log-likelihood, and the retriever learns nothing
    {
        float s1[1] = {3.0f}, l1[3] = {-1.0f, -2.0f, -4.0f}, d1[1], dl1[3], lo;
        CHECK_OK(retrlm_marginal_loss(s1, l1, NULL, 1, 1, 3, 1.0f, &lo, d1, dl1));
        CHECK_NEAR(lo, 7.0 / 3.0, 1e-6);
        CHECK_NEAR(d1[0], 0.0, 1e-7);
        CHECK_NEAR(dl1[1], -1.0 / 3.0, 1e-7);
    }
    // a query without a valid position is not counted
    {
        unsigned char m2[N * T] = {0, 0, 0, 0, 1, 1, 1, 1};
        float l2, ref;
        CHECK_OK(retrlm_marginal_loss(s, ll, m2, N, K, T, temp, &l2, ds, NULL));
        ref = (float)marginal_ref(s + K, ll + K * T, NULL, 1, K, T, temp);
        CHECK_NEAR(l2, ref, 1e-5);
        CHECK(ds[0] == 0.0f && ds[1] == 0.0f && ds[2] == 0.0f);
    }
    // an absent candidate (-inf score) is the same as leaving it out; its log-likelihoods are not read
    {
        float sa[3] = {0.5f, -INFINITY, 1.2f}, la[6] = {-1, -2, NAN, NAN, -0.5f, -3};
        float sb[2] = {0.5f, 1.2f}, lb[4] = {-1, -2, -0.5f, -3}, loa, lob, da[3];
        CHECK_OK(retrlm_marginal_loss(sa, la, NULL, 1, 3, 2, 1.0f, &loa, da, NULL));
        CHECK_OK(retrlm_marginal_loss(sb, lb, NULL, 1, 2, 2, 1.0f, &lob, NULL, NULL));
        CHECK_NEAR(loa, lob, 1e-6);
        CHECK(da[1] == 0.0f);
        // errors: NaN log-likelihood of a present candidate, NaN score, no candidate, bad sizes
        la[0] = NAN;
        CHECK(retrlm_marginal_loss(sa, la, NULL, 1, 3, 2, 1.0f, &loa, NULL, NULL) == RETRLM_ERR_ARG);
        sb[0] = NAN;
        CHECK(retrlm_marginal_loss(sb, lb, NULL, 1, 2, 2, 1.0f, &lob, NULL, NULL) == RETRLM_ERR_ARG);
        sb[0] = sb[1] = -INFINITY;
        CHECK(retrlm_marginal_loss(sb, lb, NULL, 1, 2, 2, 1.0f, &lob, NULL, NULL) == RETRLM_ERR_ARG);
        sb[0] = 0.0f;
        CHECK(retrlm_marginal_loss(sb, lb, NULL, 1, 2, 0, 1.0f, &lob, NULL, NULL) == RETRLM_ERR_ARG);
        CHECK(retrlm_marginal_loss(sb, lb, NULL, 1, 2, 2, -1.0f, &lob, NULL, NULL) == RETRLM_ERR_ARG);
    }
}

// ---- TRIME
static void test_trime(void) {
    enum { N = 4, V = 5, M = 6 };
    float l[N * V], s[N * M], dl[N * V], ds[N * M], loss;
    int mt[M] = {1, 3, 3, 0, 4, 2}, y[N] = {3, -1, 0, 2}, i, cnt = -1;
    for (i = 0; i < N * V; i++) l[i] = 0.4f * (float)((i * 5) % 7) - 1.1f;
    for (i = 0; i < N * M; i++) s[i] = 0.3f * (float)((i * 3) % 8) - 0.9f;
    s[0 * M + 4] = -INFINITY; // entry 4 is left out for position 0 (a causal mask)
    CHECK_OK(retrlm_trime_loss(l, N, V, s, M, mt, y, &loss, dl, ds, &cnt));
    CHECK(cnt == 3);
    CHECK_NEAR(loss, trime_ref(l, N, V, s, M, mt, y), 1e-5);
    for (i = 0; i < N * V; i++) {
        double fd;
        FD(trime_ref(l, N, V, s, M, mt, y), l, i, 1e-3, fd);
        CHECK_NEAR(dl[i], fd, 3e-5);
    }
    for (i = 0; i < N * M; i++) {
        double fd;
        if (s[i] == -INFINITY) {
            CHECK(ds[i] == 0.0f);
            continue;
        }
        FD(trime_ref(l, N, V, s, M, mt, y), s, i, 1e-3, fd);
        CHECK_NEAR(ds[i], fd, 3e-5);
    }
    for (i = 0; i < V; i++) CHECK(dl[1 * V + i] == 0.0f); // position 1 has no target
    // in place: the gradients overwrite their inputs and come out the same
    {
        float l2[N * V], s2[N * M], loss2;
        memcpy(l2, l, sizeof l);
        memcpy(s2, s, sizeof s);
        CHECK_OK(retrlm_trime_loss(l2, N, V, s2, M, mt, y, &loss2, l2, s2, NULL));
        CHECK(loss2 == loss);
        CHECK(memcmp(l2, dl, sizeof l2) == 0);
        CHECK(memcmp(s2, ds, sizeof s2) == 0);
    }
    // no memory: ordinary cross-entropy; every entry left out: the same
    {
        float ce = 0.0f, l0, sm[N * M];
        double ref = 0.0;
        int r, c = 0;
        for (r = 0; r < N; r++) {
            double row[V];
            if (y[r] < 0) continue;
            for (i = 0; i < V; i++) row[i] = l[r * V + i];
            ref += lse_d(row, V) - row[y[r]];
            c++;
        }
        CHECK_OK(retrlm_trime_loss(l, N, V, NULL, 0, NULL, y, &ce, NULL, NULL, NULL));
        CHECK_NEAR(ce, ref / c, 1e-5);
        for (i = 0; i < N * M; i++) sm[i] = -INFINITY;
        CHECK_OK(retrlm_trime_loss(l, N, V, sm, M, mt, y, &l0, NULL, NULL, NULL));
        CHECK_NEAR(l0, ce, 1e-6);
    }
    // a target only the memory can give: finite; one nothing can give: an error
    {
        float lz[V] = {0, 0, -INFINITY, 0, 0}, sz[2] = {0.5f, 0.1f}, lo;
        int mz[2] = {2, 1}, yz = 2;
        CHECK_OK(retrlm_trime_loss(lz, 1, V, sz, 2, mz, &yz, &lo, NULL, NULL, NULL));
        CHECK(lo > 0.0f && lo < 10.0f);
        mz[0] = 4;
        CHECK(retrlm_trime_loss(lz, 1, V, sz, 2, mz, &yz, &lo, NULL, NULL, NULL) == RETRLM_ERR_ARG);
        mz[0] = V; // a memory token outside the vocabulary
        CHECK(retrlm_trime_loss(lz, 1, V, sz, 2, mz, &yz, &lo, NULL, NULL, NULL) == RETRLM_ERR_ARG);
        mz[0] = 2;
        yz = V;
        CHECK(retrlm_trime_loss(lz, 1, V, sz, 2, mz, &yz, &lo, NULL, NULL, NULL) == RETRLM_ERR_ARG);
        yz = 2;
        sz[1] = NAN;
        CHECK(retrlm_trime_loss(lz, 1, V, sz, 2, mz, &yz, &lo, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    }
    // no target at all: loss 0, zero gradients
    {
        int none[N] = {-1, -1, -1, -1};
        float lo = 1.0f;
        CHECK_OK(retrlm_trime_loss(l, N, V, s, M, mt, none, &lo, dl, ds, &cnt));
        CHECK(lo == 0.0f && cnt == 0 && dl[0] == 0.0f && ds[5] == 0.0f);
    }
}

// ---- TRIME on a problem large enough to run in parallel: the same bits at 1 and 2 threads
static void test_trime_threads(void) {
    enum { N = 256, V = 512, M = 256 };
    float *l = (float *)malloc(sizeof(float) * N * V), *s = (float *)malloc(sizeof(float) * N * M);
    float *d1 = (float *)malloc(sizeof(float) * N * V), *d2 = (float *)malloc(sizeof(float) * N * V);
    float *e1 = (float *)malloc(sizeof(float) * N * M), *e2 = (float *)malloc(sizeof(float) * N * M);
    int mt[M], y[N], i;
    float l1, l2;
    retrlm_rng r;
    retrlm_rng_seed(&r, 5);
    for (i = 0; i < N * V; i++) l[i] = retrlm_rng_normal(&r);
    for (i = 0; i < N * M; i++) s[i] = (i % M) < (i / M) ? retrlm_rng_normal(&r) : -INFINITY; // causal
    for (i = 0; i < M; i++) mt[i] = (int)retrlm_rng_below(&r, V);
    for (i = 0; i < N; i++) y[i] = i % 17 == 0 ? -1 : (int)retrlm_rng_below(&r, V);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    CHECK_OK(retrlm_trime_loss(l, N, V, s, M, mt, y, &l1, d1, e1, NULL));
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    CHECK_OK(retrlm_trime_loss(l, N, V, s, M, mt, y, &l2, d2, e2, NULL));
    CHECK(l1 == l2);
    CHECK(memcmp(d1, d2, sizeof(float) * N * V) == 0);
    CHECK(memcmp(e1, e2, sizeof(float) * N * M) == 0);
    free(l), free(s), free(d1), free(d2), free(e1), free(e2);
}

// ---- NPM: a double-precision reference written from the definition in losses.h
typedef struct npm_case {
    const float *qs, *qe, *mem;
    const int *tok, *blk, *start, *len;
    int ns, nm, dim;
    float temp;
} npm_case;

// whether span s has a copy starting at j: every token in j's block, outside s's block
static int npm_ref_copy(const npm_case *c, int s, int j) {
    int t, p = c->start[s];
    if (c->blk[j] == c->blk[p]) return 0;
    for (t = 0; t < c->len[s]; t++)
        if (j + t >= c->nm || c->blk[j + t] != c->blk[j] || c->tok[j + t] != c->tok[p + t]) return 0;
    return 1;
}

static double npm_ref(const npm_case *c, int *count) {
    double total = 0.0, k = 1.0 / (sqrt((double)c->dim) * c->temp);
    int s, side, j, cnt = 0;
    for (s = 0; s < c->ns; s++) {
        double l2 = 0.0;
        int has = 0;
        for (j = 0; j < c->nm; j++) has |= npm_ref_copy(c, s, j);
        if (!has) continue;
        for (side = 0; side < 2; side++) {
            const float *q = (side ? c->qe : c->qs) + (size_t)s * c->dim;
            double all[64], pos[64];
            int na = 0, np = 0;
            for (j = 0; j < c->nm; j++) {
                double x;
                if (c->blk[j] == c->blk[c->start[s]]) continue;
                x = k * dotd(q, c->mem + (size_t)j * c->dim, (size_t)c->dim);
                all[na++] = x;
                if ((!side || j - c->len[s] + 1 >= 0) && npm_ref_copy(c, s, side ? j - c->len[s] + 1 : j)) pos[np++] = x;
            }
            l2 += lse_d(all, na) - lse_d(pos, np);
        }
        total += l2;
        cnt++;
    }
    if (count) *count = cnt;
    return cnt ? total / cnt : 0.0;
}

static void test_npm(void) {
    enum { NM = 18, D = 4, NS = 3 };
    // three blocks of 6 tokens; span 0 = (7 8) of block 0, copied in blocks 1 and 2 and once more
    // inside block 0 (not a positive: same block), and "7 | 8" across blocks 1-2 (not a copy);
    // span 1 = (5) of block 1, once in block 2; span 2 = (9 9) of block 2, nowhere else
    static const int tok[NM] = {3, 7, 8, 1, 7, 8, /**/ 5, 2, 7, 8, 4, 7, /**/ 8, 7, 8, 5, 9, 9};
    static const int blk[NM] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2};
    int start[NS] = {1, 6, 16}, len[NS] = {2, 1, 2}, cnt = -1, rc = -1, hs = -1, he = -1, i;
    float qs[NS * D], qe[NS * D], mem[NM * D], dqs[NS * D], dqe[NS * D], dm[NM * D], loss;
    npm_case c;
    retrlm_rng r;
    retrlm_rng_seed(&r, 11);
    fill_normal(qs, NS * D, 1.0f, &r), fill_normal(qe, NS * D, 1.0f, &r), fill_normal(mem, NM * D, 1.0f, &r);
    c.qs = qs, c.qe = qe, c.mem = mem, c.tok = tok, c.blk = blk, c.start = start, c.len = len;
    c.ns = NS, c.nm = NM, c.dim = D, c.temp = 0.5f;
    CHECK_OK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 0.5f, tok, blk, start, len, &loss, dqs, dqe, dm, &cnt, &hs, &he));
    CHECK(cnt == 2); // span 2 has no copy
    CHECK_NEAR(loss, npm_ref(&c, &rc), 1e-5);
    CHECK(rc == 2);
    CHECK(hs >= 0 && hs <= 2 && he >= 0 && he <= 2);
    for (i = 0; i < NS * D; i++) {
        double fd;
        FD(npm_ref(&c, NULL), qs, i, 1e-3, fd);
        CHECK_NEAR(dqs[i], fd, 3e-5);
        FD(npm_ref(&c, NULL), qe, i, 1e-3, fd);
        CHECK_NEAR(dqe[i], fd, 3e-5);
    }
    for (i = 0; i < NM * D; i++) {
        double fd;
        FD(npm_ref(&c, NULL), mem, i, 1e-3, fd);
        CHECK_NEAR(dm[i], fd, 3e-5);
    }
    for (i = 0; i < D; i++) CHECK(dqs[2 * D + i] == 0.0f && dqe[2 * D + i] == 0.0f); // span 2: not counted
    // unit memory rows, and queries along a copy's first and last rows: a positive ranks first
    {
        float q2[NS * D], e2[NS * D], un[NM * D];
        int s, d;
        for (i = 0; i < NM; i++) {
            double n2 = sqrt(dotd(mem + i * D, mem + i * D, D));
            for (d = 0; d < D; d++) un[i * D + d] = (float)(mem[i * D + d] / n2);
        }
        for (s = 0; s < NS; s++)
            for (d = 0; d < D; d++) { // copies' rows: the first copy's start and end
                int j0 = s == 0 ? 8 : s == 1 ? 15 : 16;
                q2[s * D + d] = 30.0f * un[j0 * D + d];
                e2[s * D + d] = 30.0f * un[(j0 + len[s] - 1) * D + d];
            }
        CHECK_OK(retrlm_npm_loss(q2, e2, NS, un, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, &cnt, &hs, &he));
        CHECK(cnt == 2 && hs == 2 && he == 2);
    }
    // bad input
    len[0] = 6; // runs from block 0 into block 1
    CHECK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    len[0] = 0;
    CHECK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    len[0] = 2, start[2] = 17; // past the end
    CHECK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    start[2] = 16;
    CHECK(retrlm_npm_loss(qs, qe, 0, mem, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG);
    mem[3] = NAN;
    CHECK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &loss, NULL, NULL, NULL, NULL, NULL, NULL) == RETRLM_ERR_ARG);
}

// ---- NPM large enough to run in parallel: the same bits at 1 and 2 threads
static void test_npm_threads(void) {
    enum { B = 8, T = 64, NM = B * T, D = 32, NS = 40 };
    float *qs = (float *)malloc(sizeof(float) * NS * D * 2), *qe = qs + NS * D, *mem = (float *)malloc(sizeof(float) * NM * D);
    float *g1 = (float *)malloc(sizeof(float) * (NS * D * 2 + NM * D) * 2), *g2 = g1 + NS * D * 2 + NM * D;
    int tok[NM], blk[NM], start[NS], len[NS], i, c1, c2;
    float l1, l2;
    retrlm_rng r;
    retrlm_rng_seed(&r, 3);
    fill_normal(qs, NS * D * 2, 1.0f, &r), fill_normal(mem, NM * D, 1.0f, &r);
    for (i = 0; i < NM; i++) tok[i] = (int)retrlm_rng_below(&r, 12), blk[i] = i / T;
    for (i = 0; i < NS; i++) len[i] = 1 + (int)retrlm_rng_below(&r, 2), start[i] = (i % B) * T + (int)retrlm_rng_below(&r, T - 2);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    CHECK_OK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &l1, g1, g1 + NS * D, g1 + 2 * NS * D, &c1, NULL, NULL));
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    CHECK_OK(retrlm_npm_loss(qs, qe, NS, mem, NM, D, 1.0f, tok, blk, start, len, &l2, g2, g2 + NS * D, g2 + 2 * NS * D, &c2, NULL, NULL));
    CHECK(c1 > 10 && c1 == c2 && l1 == l2);
    CHECK(memcmp(g1, g2, sizeof(float) * (NS * D * 2 + NM * D)) == 0);
    free(qs), free(mem), free(g1);
}

// ---- RPT's retriever loss (pairs by the reference LM, LambdaRank weights, hinge)
// the reference: ranks from a sort of the indices (not the library's counting), sums in double
static const float *rank_key; // the row qsort ranks by
static int rank_cmp(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    if (rank_key[a] != rank_key[b]) return rank_key[a] > rank_key[b] ? -1 : 1;
    return a - b;
}
static void ranks_d(const float *x, int k, int *rank) {
    int idx[16], j, m = 0;
    for (j = 0; j < k; j++)
        if (x[j] != -INFINITY) idx[m++] = j;
    rank_key = x;
    qsort(idx, (size_t)m, sizeof(int), rank_cmp);
    for (j = 0; j < m; j++) rank[idx[j]] = j;
}
static double rank_ref(const float *s, const float *g, int n, int k, double margin, double thr, int *pairs) {
    double tot = 0.0;
    int i, a, b, np = 0;
    for (i = 0; i < n; i++) {
        const float *si = s + i * k, *gi = g + i * k;
        int rs[16], rg[16];
        double gain[16], idcg = 0.0;
        ranks_d(si, k, rs), ranks_d(gi, k, rg);
        for (a = 0; a < k; a++) {
            gain[a] = gi[a] != -INFINITY && gi[a] > thr ? pow(2.0, gi[a]) - 1.0 : 0.0;
            idcg += gain[a] / log2(2.0 + (gi[a] == -INFINITY ? 0 : rg[a]));
        }
        for (a = 0; a < k; a++)
            for (b = 0; b < k; b++)
                if (gi[a] != -INFINITY && gi[b] != -INFINITY && gi[a] > thr && gi[a] > gi[b]) {
                    double h = margin - ((double)si[a] - si[b]);
                    double l = fabs(gain[a] - gain[b]) * fabs(1.0 / log2(2.0 + rs[a]) - 1.0 / log2(2.0 + rs[b])) / idcg;
                    np++;
                    if (h > 0.0) tot += l * h;
                }
    }
    if (pairs) *pairs = np;
    return np ? tot / np : 0.0;
}

static void test_rank(void) {
    enum { N = 3, K = 6 };
    float s[N * K], g[N * K], ds[N * K], loss;
    int i, pairs, pr;
    retrlm_rng rng;
    // by hand: gold 2, 1, -1 (the last below the threshold 0), scores 0, 0.5, 0.2
    {
        float s3[3] = {0.0f, 0.5f, 0.2f}, g3[3] = {2.0f, 1.0f, -1.0f}, d3[3];
        const double idcg = 3.0 / log2(2.0) + 1.0 / log2(3.0); // gains 3, 1, 0 at gold ranks 0, 1
        const double d0 = 1.0 / log2(4.0), d1 = 1.0, d2 = 1.0 / log2(3.0); // score ranks 2, 0, 1
        const double l01 = 2.0 * fabs(d0 - d1) / idcg, l02 = 3.0 * fabs(d0 - d2) / idcg,
                     l12 = 1.0 * fabs(d1 - d2) / idcg;
        const double want = (l01 * 1.5 + l02 * 1.2 + l12 * 0.7) / 3.0; // hinges 1 - (s_a - s_b)
        CHECK_OK(retrlm_rank_loss(s3, g3, 1, 3, 1.0f, 0.0f, &loss, d3, &pairs));
        CHECK(pairs == 3);
        CHECK_NEAR(loss, want, 1e-6);
        CHECK_NEAR(d3[0], -(l01 + l02) / 3.0, 1e-6);
        CHECK_NEAR(d3[1], (l01 - l12) / 3.0, 1e-6);
        CHECK_NEAR(d3[2], (l02 + l12) / 3.0, 1e-6);
        // a wide enough lead on every pair: no loss, no gradient, the pairs still counted
        s3[0] = 10.0f, s3[1] = 5.0f, s3[2] = 0.0f;
        CHECK_OK(retrlm_rank_loss(s3, g3, 1, 3, 1.0f, 0.0f, &loss, d3, &pairs));
        CHECK(pairs == 3 && loss == 0.0f && d3[0] == 0.0f && d3[1] == 0.0f && d3[2] == 0.0f);
        // nothing above the threshold: no pair
        CHECK_OK(retrlm_rank_loss(s3, g3, 1, 3, 1.0f, 5.0f, &loss, d3, &pairs));
        CHECK(pairs == 0 && loss == 0.0f && d3[0] == 0.0f);
    }
    // random rows against the reference, and central differences of the reference
    retrlm_rng_seed(&rng, 11);
    for (i = 0; i < N * K; i++) s[i] = retrlm_rng_normal(&rng), g[i] = 3.0f * retrlm_rng_normal(&rng);
    g[4] = s[4] = -INFINITY; // an absent candidate
    CHECK_OK(retrlm_rank_loss(s, g, N, K, 2.0f, 0.5f, &loss, ds, &pairs));
    CHECK_NEAR(loss, rank_ref(s, g, N, K, 2.0, 0.5, &pr), 1e-5);
    CHECK(pairs == pr && pairs > 10);
    CHECK(ds[4] == 0.0f);
    for (i = 0; i < N * K; i++) {
        double fd;
        if (i == 4) continue;
        FD(rank_ref(s, g, N, K, 2.0, 0.5, NULL), s, i, 1e-3, fd);
        CHECK_NEAR(ds[i], fd, 1e-4);
    }
    // a small step against the gradient lowers the loss
    {
        float s2[N * K], l2;
        for (i = 0; i < N * K; i++) s2[i] = i == 4 ? s[i] : s[i] - 0.05f * ds[i] / (fabsf(ds[i]) + 1e-3f);
        CHECK_OK(retrlm_rank_loss(s2, g, N, K, 2.0f, 0.5f, &l2, NULL, NULL));
        CHECK(l2 < loss);
    }
    // the absent candidate is the same as a row without it
    {
        float s5[K - 1], g5[K - 1], d5[K - 1], l6, l5;
        int p6, p5;
        CHECK_OK(retrlm_rank_loss(s, g, 1, K, 2.0f, 0.5f, &l6, ds, &p6));
        for (i = 0; i < K - 1; i++) s5[i] = s[i < 4 ? i : i + 1], g5[i] = g[i < 4 ? i : i + 1];
        CHECK_OK(retrlm_rank_loss(s5, g5, 1, K - 1, 2.0f, 0.5f, &l5, d5, &p5));
        CHECK(p6 == p5);
        CHECK_NEAR(l6, l5, 1e-6);
        CHECK_NEAR(ds[5], d5[4], 1e-6);
    }
    // bad input
    {
        float s2[2] = {0.1f, 0.2f}, g2[2] = {1.0f, 0.0f};
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, 1.0f, -0.5f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        CHECK(retrlm_rank_loss(s2, g2, 0, 2, 1.0f, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, NAN, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        g2[0] = 512.0f;
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, 1.0f, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        g2[0] = -INFINITY;
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, 1.0f, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        s2[0] = -INFINITY, g2[0] = 1.0f;
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, 1.0f, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
        s2[0] = NAN;
        CHECK(retrlm_rank_loss(s2, g2, 1, 2, 1.0f, 0.0f, &loss, NULL, NULL) == RETRLM_ERR_ARG);
    }
}

int main(void) {
    RUN(test_kl_distill);
    RUN(test_marginal);
    RUN(test_trime);
    RUN(test_trime_threads);
    RUN(test_npm);
    RUN(test_npm_threads);
    RUN(test_rank);
    return test_report();
}
