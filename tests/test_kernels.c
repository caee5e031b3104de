// kernels: each against a naive double-precision reference, on odd sizes, and bit-identical
// for 1 and 2 threads.
#include "retrlm.h"
#include "test.h"
#include "files.h"

static const int sizes[] = {1, 3, 17, 255, 1025};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])

static void fill(float *x, int n, retrlm_rng *r, float scale) {
    int i;
    for (i = 0; i < n; i++) x[i] = scale * (2.0f * retrlm_rng_float(r) - 1.0f);
}

static void test_vector_kernels(void) {
    retrlm_rng r;
    int s, i;
    retrlm_rng_seed(&r, 1);
    for (s = 0; s < NSIZES; s++) {
        int n = sizes[s];
        float *a = (float *)malloc(sizeof(float) * n), *b = (float *)malloc(sizeof(float) * n);
        float *y = (float *)malloc(sizeof(float) * n), *out = (float *)malloc(sizeof(float) * n);
        double dot = 0, mx = -1e300, se = 0, lse, err = 0;
        fill(a, n, &r, 1.0f);
        fill(b, n, &r, 1.0f);
        for (i = 0; i < n; i++) dot += (double)a[i] * b[i];
        CHECK_NEAR(retrlm_dot(a, b, n), dot, 1e-5 * (1 + sqrt((double)n)));
        memcpy(y, b, sizeof(float) * n);
        retrlm_axpy(y, 0.5f, a, n);
        for (i = 0; i < n; i++) err = fmax(err, fabs(y[i] - (b[i] + 0.5 * a[i])));
        CHECK(err < 1e-6);
        retrlm_scale(y, -2.0f, n);
        for (i = 0, err = 0; i < n; i++) err = fmax(err, fabs(y[i] + 2.0 * (b[i] + 0.5 * a[i])));
        CHECK(err < 1e-5);
        // softmax family on logits with a large offset: max subtraction is what keeps it finite
        for (i = 0; i < n; i++) a[i] = 20.0f * a[i] + 100.0f;
        for (i = 0; i < n; i++) mx = fmax(mx, a[i]);
        for (i = 0; i < n; i++) se += exp(a[i] - mx);
        lse = mx + log(se);
        CHECK_NEAR(retrlm_logsumexp(a, n), lse, 1e-4);
        retrlm_softmax(out, a, n);
        for (i = 0, err = 0; i < n; i++) err = fmax(err, fabs(out[i] - exp(a[i] - lse)));
        CHECK(err < 1e-6);
        memcpy(out, a, sizeof(float) * n); // in place
        retrlm_log_softmax(out, out, n);
        for (i = 0, err = 0; i < n; i++) err = fmax(err, fabs(out[i] - (a[i] - lse)));
        CHECK(err < 1e-4);
        free(a);
        free(b);
        free(y);
        free(out);
    }
}

static void test_softmax_edges(void) {
    float x[3] = {-INFINITY, -INFINITY, -INFINITY}, out[3];
    float y[3] = {0.0f, -INFINITY, 0.0f};
    CHECK(retrlm_logsumexp(x, 3) == -INFINITY);
    CHECK(retrlm_logsumexp(x, 0) == -INFINITY);
    retrlm_softmax(out, x, 3); // nothing allowed: uniform, never NaN
    CHECK_NEAR(out[0], 1.0 / 3, 1e-7);
    retrlm_softmax(out, y, 3);
    CHECK(out[1] == 0.0f);
    CHECK_NEAR(out[0], 0.5, 1e-7);
    retrlm_log_softmax(out, y, 3);
    CHECK(out[1] == -INFINITY);
    CHECK_NEAR(out[2], -log(2.0), 1e-6);
}

// the softmax's exponentials (8 at a time, a polynomial of Cephes' form) term by term against
// double exp over the whole range a float softmax keeps (down to e^-87, where floats turn
// denormal and the terms are taken as 0), n not a multiple of 8 (the padded last group), the
// max late in a lane (8 lanes at a time) and -inf terms
static void test_softmax_exp(void) {
    enum { N = 8 * 1000 + 5 };
    float *x = (float *)malloc(sizeof(float) * N), *out = (float *)malloc(sizeof(float) * N);
    double s = 0.0, worst = 0.0, lse;
    int i;
    for (i = 0; i < N; i++) x[i] = -87.0f * (float)((i * 7919) % N) / (float)N; // 0 at i = 0
    x[4 * 8 + 1] = 1.5f; // the max
    x[20] = -INFINITY;
    x[N - 1] = -100.0f; // under e^-87.3: 0
    // the float difference, as the softmax takes it (the cast rounds it where float arithmetic
    // is done in double, FLT_EVAL_METHOD 1, as on s390x)
    for (i = 0; i < N; i++) s += exp((double)(float)(x[i] - 1.5f));
    lse = 1.5 + log(s);
    CHECK_NEAR(retrlm_logsumexp(x, N), lse, 1e-5);
    retrlm_softmax(out, x, N);
    for (i = 0; i < N; i++) {
        double want = exp((double)(float)(x[i] - 1.5f)) / s, rel;
        if (x[i] - 1.5f < -87.0f) {
            CHECK(out[i] >= 0.0f && out[i] <= 1e-37f);
            continue;
        }
        rel = fabs(out[i] - want) / want;
        if (rel > worst) worst = rel;
    }
    if (!(worst < 1e-6)) fprintf(stderr, "softmax: worst relative error %g\n", worst);
    CHECK(worst < 1e-6); // a few float roundings: the exponential's 1 ulp, the sum's, the scale's
    CHECK(out[20] == 0.0f && out[N - 1] == 0.0f);
    for (i = 0; i < 19; i++) x[i] = -0.25f * (float)i;
    x[13] = 100.0f; // a max the exponentials would clamp (e^88.7) if it were missed
    for (i = 0, s = 0.0; i < 19; i++) s += exp((double)(float)(x[i] - 100.0f));
    CHECK_NEAR(retrlm_logsumexp(x, 19), 100.0 + log(s), 1e-4);
    free(x);
    free(out);
}

// naive reference: sorts all (score desc, id asc), NaN excluded
static int ref_topk(const float *s, int n, int k, int64_t *ids) {
    int i, j, m = 0;
    int64_t *all = (int64_t *)malloc(sizeof(int64_t) * (n ? n : 1));
    for (i = 0; i < n; i++)
        if (s[i] == s[i]) all[m++] = i;
    for (i = 1; i < m; i++) { // insertion sort, fine for a test
        int64_t v = all[i];
        for (j = i; j > 0 && (s[all[j - 1]] < s[v] || (s[all[j - 1]] == s[v] && all[j - 1] > v)); j--)
            all[j] = all[j - 1];
        all[j] = v;
    }
    if (m > k) m = k;
    memcpy(ids, all, sizeof(int64_t) * m);
    free(all);
    return m;
}

static void test_topk(void) {
    retrlm_rng r;
    int s, k, i;
    retrlm_rng_seed(&r, 2);
    for (s = 0; s < NSIZES; s++) {
        int n = sizes[s];
        float *x = (float *)malloc(sizeof(float) * n), *got_s = (float *)malloc(sizeof(float) * 64);
        int64_t got[64], want[64];
        for (i = 0; i < n; i++) x[i] = (float)retrlm_rng_below(&r, 7); // many ties
        if (n > 5) x[5] = NAN;
        for (k = 0; k <= 40; k += 1 + k) {
            int g = retrlm_topk_select(x, n, k, got, got_s), w = ref_topk(x, n, k, want), same = g == w;
            for (i = 0; same && i < g; i++) same = got[i] == want[i] && got_s[i] == x[want[i]];
            CHECK(same);
        }
        free(x);
        free(got_s);
    }
}

static void test_topk_streaming(void) {
    int64_t ids[3];
    float sc[3];
    retrlm_topk h;
    retrlm_topk_init(&h, 3, ids, sc);
    retrlm_topk_push(&h, 10, 1.0f);
    retrlm_topk_push(&h, 4, 2.0f);
    retrlm_topk_push(&h, 7, 2.0f);
    retrlm_topk_push(&h, 2, 1.0f); // ties with 10 at 1.0: the smaller id wins
    retrlm_topk_push(&h, 3, -INFINITY);
    CHECK(retrlm_topk_sort(&h) == 3);
    CHECK(ids[0] == 4 && ids[1] == 7 && ids[2] == 2);
}

// C (M,N) = op(A) op(B) + bias, in double, for the three layouts
static void ref_matmul(double *C, const float *A, const float *B, const float *bias, int M, int N,
                       int K, int flags) {
    int m, n, k;
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0.0;
            for (k = 0; k < K; k++) {
                double a = (flags & RETRLM_MATMUL_A_KM) ? A[(size_t)k * M + m] : A[(size_t)m * K + k];
                double b = (flags & RETRLM_MATMUL_B_KN) ? B[(size_t)k * N + n] : B[(size_t)n * K + k];
                s += a * b;
            }
            C[(size_t)m * N + n] = s;
        }
}

static void test_matmul(void) {
    static const int dims[][3] = {{1, 1, 1},    {3, 17, 5},   {17, 3, 255}, {255, 17, 3},
                                  {1, 1025, 17}, {17, 255, 1025}, {130, 300, 257}, {0, 5, 3},
                                  {4, 5, 0}, {1100, 20, 40}}; // Aᵀ steps over 1024 apart: packed
    retrlm_rng r;
    int d, f;
    retrlm_rng_seed(&r, 3);
    for (d = 0; d < (int)(sizeof dims / sizeof dims[0]); d++) {
        int M = dims[d][0], N = dims[d][1], K = dims[d][2];
        size_t mn = (size_t)M * N;
        float *A = (float *)malloc(sizeof(float) * ((size_t)M * K + 1));
        float *B = (float *)malloc(sizeof(float) * ((size_t)N * K + 1));
        float *bias = (float *)malloc(sizeof(float) * (N + 1));
        float *C = (float *)malloc(sizeof(float) * (mn + 1)), *C2 = (float *)malloc(sizeof(float) * (mn + 1));
        double *R = (double *)malloc(sizeof(double) * (mn + 1));
        fill(A, M * K, &r, 1.0f);
        fill(B, N * K, &r, 1.0f);
        fill(bias, N, &r, 1.0f);
        for (f = 0; f < 8; f++) {
            const float *bp = (f & 4) ? NULL : bias;
            int flags = f & 3, accumulate = (f & 4) != 0;
            double err = 0, tol = 1e-5 * (1 + sqrt((double)K));
            size_t i;
            if (accumulate) flags |= RETRLM_MATMUL_ACCUMULATE;
            ref_matmul(R, A, B, bp, M, N, K, flags & 3);
            for (i = 0; i < mn; i++) C[i] = accumulate ? 1.0f : 12345.0f; // garbage unless accumulating
            if (accumulate)
                for (i = 0; i < mn; i++) R[i] += 1.0;
            set_threads(1);
            CHECK_OK(retrlm_matmul(C, A, B, bp, M, N, K, flags));
            for (i = 0; i < mn; i++) err = fmax(err, fabs(C[i] - R[i]));
            if (!(err <= tol)) fprintf(stderr, "matmul %dx%dx%d flags %d: max error %g\n", M, N, K, flags, err);
            CHECK(err <= tol);
            // same bits with 2 threads
            for (i = 0; i < mn; i++) C2[i] = accumulate ? 1.0f : -777.0f;
            set_threads(2);
            CHECK_OK(retrlm_matmul(C2, A, B, bp, M, N, K, flags));
            CHECK(mn == 0 || memcmp(C, C2, sizeof(float) * mn) == 0);
        }
        free(A);
        free(B);
        free(bias);
        free(C);
        free(C2);
        free(R);
    }
}

static void test_matmul_threads_large(void) {
    // enough tiles for both threads to work: the bits still may not depend on the count
    int M = 300, N = 700, K = 300;
    retrlm_rng r;
    float *A = (float *)malloc(sizeof(float) * M * K), *B = (float *)malloc(sizeof(float) * N * K);
    float *C1 = (float *)malloc(sizeof(float) * M * N), *C2 = (float *)malloc(sizeof(float) * M * N);
    retrlm_rng_seed(&r, 4);
    fill(A, M * K, &r, 1.0f);
    fill(B, N * K, &r, 1.0f);
    set_threads(1);
    CHECK_OK(retrlm_matmul(C1, A, B, NULL, M, N, K, RETRLM_MATMUL_B_KN));
    set_threads(2);
    CHECK_OK(retrlm_matmul(C2, A, B, NULL, M, N, K, RETRLM_MATMUL_B_KN));
    CHECK(memcmp(C1, C2, sizeof(float) * M * N) == 0);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

// the index's scans (kernels.c, on this build's path: run under qemu -cpu Haswell too) through a
// flat index searched one query at a time for every row (k = n): each score against a double
// reference, f32 and SQ8 (against the vectors its codes stand for), inner product and L2, at
// sizes that leave each path's tail and a last group of fewer than four rows
static void test_index_scans(void) {
    static const int dims[] = {1, 3, 17, 37, 70};
    enum { N = 23 };
    retrlm_rng r;
    int di, metric, sq8, q, i, j, bad = 0;
    retrlm_rng_seed(&r, 5);
    for (di = 0; di < (int)(sizeof dims / sizeof dims[0]); di++) {
        const int d = dims[di];
        float *x = (float *)malloc(sizeof(float) * N * d), *qv = (float *)malloc(sizeof(float) * 3 * d);
        float sc[N];
        int64_t ids[N];
        fill(x, N * d, &r, 1.0f);
        fill(qv, 3 * d, &r, 1.0f);
        for (metric = 0; metric < 2; metric++)
            for (sq8 = 0; sq8 < 2; sq8++) {
                retrlm_index ix;
                retrlm_index_config c;
                memset(&c, 0, sizeof c);
                c.dim = d;
                c.metric = metric ? RETRLM_METRIC_L2 : RETRLM_METRIC_IP;
                c.storage = sq8 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
                CHECK_OK(retrlm_index_init(&ix, &c));
                if (sq8) CHECK_OK(retrlm_index_train(&ix, x, N, d));
                CHECK_OK(retrlm_index_add(&ix, x, N, d, NULL));
                for (q = 0; q < 3; q++) {
                    CHECK_OK(retrlm_index_search(&ix, qv + (size_t)q * d, 1, d, N, NULL, ids, sc));
                    for (i = 0; i < N; i++) {
                        const int64_t row = ids[i];
                        double want = 0.0, scale = 0.0;
                        for (j = 0; j < d; j++) {
                            double xj = x[row * d + j], e;
                            if (sq8) xj = ix.sq_min[j] + (ix.codes[row * d + j] + 0.5) * ix.sq_step[j];
                            e = metric ? qv[q * d + j] - xj : qv[q * d + j] * xj;
                            want += metric ? e * e : e;
                            scale += fabs(qv[q * d + j] * xj) + fabs(e);
                        }
                        if (row < 0 || row >= N || fabs(sc[i] - want) > 1e-5 * (1.0 + scale)) {
                            if (!bad) fprintf(stderr, "scan d %d metric %d sq8 %d row %d: %.7g, want %.7g\n", d,
                                              metric, sq8, (int)row, sc[i], want);
                            bad++;
                        }
                    }
                }
                retrlm_index_free(&ix);
            }
        free(x);
        free(qv);
    }
    CHECK(bad == 0);
}

// the kernel path names the build's instruction set, the tile the matmul uses and OpenMP
static void test_cpu_path(void) {
    const char *p = retrlm_cpu_path();
    CHECK(p != NULL && strstr(p, "matmul tile ") != NULL);
#ifdef _OPENMP
    CHECK(strstr(p, ", OpenMP") != NULL);
#else
    CHECK(strstr(p, "no OpenMP") != NULL);
#endif
#if defined(__AVX512F__)
    CHECK(strncmp(p, "avx512f, matmul tile 8x32", 25) == 0);
#elif defined(__x86_64__) && !defined(__AVX__) && defined(RETRLM_NO_DISPATCH)
    CHECK(strncmp(p, "x86-64 SSE2, matmul tile 4x8", 28) == 0);
#elif defined(__x86_64__) && !defined(__AVX__) && (defined(__GNUC__) || defined(__clang__))
    // a plain x86-64 build picks the widest kernels the CPU has
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) CHECK(strncmp(p, "avx512f (chosen at run time; built for x86-64 SSE2)", 51) == 0);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(strncmp(p, "avx2+fma (chosen at run time", 28) == 0);
    else CHECK(strncmp(p, "x86-64 SSE2, matmul tile 4x8", 28) == 0);
#endif
    printf("  kernel path: %s\n", p);
}

int main(void) {
    RUN(test_cpu_path);
    RUN(test_vector_kernels);
    RUN(test_softmax_edges);
    RUN(test_softmax_exp);
    RUN(test_topk);
    RUN(test_topk_streaming);
    RUN(test_matmul);
    RUN(test_matmul_threads_large);
    RUN(test_index_scans);
    return test_report();
}
