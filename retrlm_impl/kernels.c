#include "internal.h"

// Dimension legend: M, N output rows and columns, K the shared (inner) dimension.
// MR x NR is the register tile, MC x KC the packed block of A, KC x NC the packed block of B.

#if defined(__cplusplus)
#define RETRLM__RESTRICT __restrict
#else
#define RETRLM__RESTRICT restrict
#endif

// Clang fuses a * b + c into one FMA where the target has it (GCC does not in ISO C mode): off
// here, so that one kernel path gives the same bits whichever of the two compiled it
#if defined(__clang__)
#pragma float_control(push)
#pragma clang fp contract(off)
#endif

// ---------------------------------------------------------------------------------------------
// vector kernels

// Sums run in RETRLM__LANES independent partial sums (one vector register, or a few), added up
// in a fixed order at the end: the loop vectorizes without -ffast-math or OpenMP, is not bound
// by the latency of one add chain, and gives the same bits on every run. No `omp simd` here:
// gcc then keeps the lane arrays in memory ("simd arrays") and runs at half the speed.
#define RETRLM__LANES 16

// one template per kernel, instantiated for the build's instruction set and, where the matmul
// dispatches (below), for AVX2+FMA and AVX-512 under target attributes
#define RETRLM__DEFINE_DOT(name, ATTR, LANES)                                            \
    ATTR static float name(const float *a, const float *b, int n) {                     \
        float acc[LANES] = {0}, s = 0.0f;                                               \
        int i = 0, j;                                                                   \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (j = 0; j < LANES; j++) acc[j] += a[i + j] * b[i + j];                  \
        }                                                                               \
        for (j = 0; j < LANES; j++) s += acc[j];                                        \
        for (; i < n; i++) s += a[i] * b[i];                                            \
        return s;                                                                       \
    }

// the four lane arrays c0..c3 of LANES partial sums each folded into their element 0 by a fixed
// tree: vector adds, not 64 scalar ones (w and j are the caller's ints)
#define RETRLM__TREE4(LANES)                          \
    for (w = (LANES) / 2; w > 0; w /= 2)              \
        for (j = 0; j < w; j++) {                     \
            c0[j] += c0[j + w];                       \
            c1[j] += c1[j + w];                       \
            c2[j] += c2[j + w];                       \
            c3[j] += c3[j + w];                       \
        }

// out[r] = dot(a, b + r*ldb) for r < 4: four rows of b against one a, sharing the loads of a.
// Four separate lane arrays (not one 2-D array) so the compiler keeps each in a register.
#define RETRLM__DEFINE_DOT4(name, ATTR, LANES)                                                        \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *b, size_t ldb, int n) { \
        float c0[LANES] = {0}, c1[LANES] = {0}, c2[LANES] = {0}, c3[LANES] = {0};                     \
        const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;                     \
        float s0, s1, s2, s3;                                                                         \
        int i = 0, j, w;                                                                              \
        for (; i + LANES <= n; i += LANES) {                                                          \
            for (j = 0; j < LANES; j++) {                                                             \
                float aj = a[i + j];                                                                  \
                c0[j] += aj * b0[i + j];                                                              \
                c1[j] += aj * b1[i + j];                                                              \
                c2[j] += aj * b2[i + j];                                                              \
                c3[j] += aj * b3[i + j];                                                              \
            }                                                                                         \
        }                                                                                             \
        RETRLM__TREE4(LANES)                                                                          \
        s0 = c0[0], s1 = c1[0], s2 = c2[0], s3 = c3[0];                                               \
        for (j = i; j < n; j++) {                                                                     \
            s0 += a[j] * b0[j];                                                                       \
            s1 += a[j] * b1[j];                                                                       \
            s2 += a[j] * b2[j];                                                                       \
            s3 += a[j] * b3[j];                                                                       \
        }                                                                                             \
        out[0] = s0;                                                                                  \
        out[1] = s1;                                                                                  \
        out[2] = s2;                                                                                  \
        out[3] = s3;                                                                                  \
    }

// the int8 kernels' end: the four rows' sums t over the last, partial group (elements i..n, a
// scale each row, d0..d3) added on, then rows of them written to out. Inlined into each kernel:
// called from one built for AVX, GCC 12 left the upper halves of the vector registers dirty
// (no vzeroupper) through the call and the SSE code after it, which then ran at a fraction of
// its speed (9% of an SQ8 index scan in one loop of scalar adds after it)
static RETRLM__ALWAYS_INLINE void retrlm__q8_tail4(float *out, float *t, const float *a, const int8_t *q0,
                                                   const int8_t *q1, const int8_t *q2, const int8_t *q3,
                                                   const float *d0, const float *d1, const float *d2,
                                                   const float *d3, int i, int n, int rows) {
    int j;
    for (j = i; j < n; j++) {
        float w0 = *d0 * (float)q0[j], w1 = *d1 * (float)q1[j];
        float w2 = *d2 * (float)q2[j], w3 = *d3 * (float)q3[j];
        t[0] += a[j] * w0;
        t[1] += a[j] * w1;
        t[2] += a[j] * w2;
        t[3] += a[j] * w3;
    }
    for (j = 0; j < rows; j++) out[j] = t[j];
}

// int8 weights (retrlm__q8_quantize): out[r] = a . row r of q, each group of RETRLM__Q8_GROUP
// weights of a row times its scale (s, ldq / RETRLM__Q8_GROUP rounded up scales a row). The
// weight is dequantized (scale x int8, one product) and then multiplied with a, in the lanes and
// the order of retrlm__dot4: with n a multiple of the group, four rows give the bits it gives
// for their dequantized rows (an int8 model decodes as the f32 model of its dequantized
// weights; the tail of a partial group is summed apart). Four rows share the loads of
// a; rows < 4 of them are real (the others are not read).
#define RETRLM__DEFINE_DOT4_Q8(name, ATTR)                                                          \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const int8_t *q,           \
                                           const float *s, size_t ldq, int n, int rows) {        \
        float c0[16] = {0}, c1[16] = {0}, c2[16] = {0}, c3[16] = {0}, t[4];                      \
        const size_t lds = (ldq + RETRLM__Q8_GROUP - 1) / RETRLM__Q8_GROUP;                       \
        const int8_t *q0 = q, *q1 = q + (rows > 1) * ldq, *q2 = q + (rows > 2) * 2 * ldq;          \
        const int8_t *q3 = q + (rows > 3) * 3 * ldq;                                              \
        const float *s0 = s, *s1 = s + (rows > 1) * lds, *s2 = s + (rows > 2) * 2 * lds;           \
        const float *s3 = s + (rows > 3) * 3 * lds;                                               \
        int i = 0, j, h, w, g = 0;                                                                \
        for (; i + RETRLM__Q8_GROUP <= n; i += RETRLM__Q8_GROUP, g++) {                           \
            const float d0 = s0[g], d1 = s1[g], d2 = s2[g], d3 = s3[g];                           \
            for (h = i; h < i + RETRLM__Q8_GROUP; h += 16)                                        \
                for (j = 0; j < 16; j++) { /* each weight a float first: rounded as f32's */      \
                    float aj = a[h + j], w0 = d0 * (float)q0[h + j], w1 = d1 * (float)q1[h + j];  \
                    float w2 = d2 * (float)q2[h + j], w3 = d3 * (float)q3[h + j];                 \
                    c0[j] += aj * w0;                                                             \
                    c1[j] += aj * w1;                                                             \
                    c2[j] += aj * w2;                                                             \
                    c3[j] += aj * w3;                                                             \
                }                                                                                 \
        }                                                                                         \
        RETRLM__TREE4(16)                                                                         \
        t[0] = c0[0], t[1] = c1[0], t[2] = c2[0], t[3] = c3[0];                                   \
        retrlm__q8_tail4(out, t, a, q0, q1, q2, q3, s0 + g, s1 + g, s2 + g, s3 + g, i, n, rows);  \
    }

// the SQ8 scans' tail (elements i..n of the four rows of codes b0..b3), added to out; inlined,
// as retrlm__q8_tail4
static RETRLM__ALWAYS_INLINE void retrlm__scan4_sq8_tail(float *out, const float *a, const float *s,
                                                         const uint8_t *b0, const uint8_t *b1,
                                                         const uint8_t *b2, const uint8_t *b3, int i, int n) {
    int j;
    for (j = i; j < n; j++) {
        float e0 = (float)b0[j], e1 = (float)b1[j], e2 = (float)b2[j], e3 = (float)b3[j];
        if (s) {
            e0 = a[j] - s[j] * e0, e1 = a[j] - s[j] * e1;
            e2 = a[j] - s[j] * e2, e3 = a[j] - s[j] * e3;
            out[0] += e0 * e0, out[1] += e1 * e1, out[2] += e2 * e2, out[3] += e3 * e3;
        } else
            out[0] += a[j] * e0, out[1] += a[j] * e1, out[2] += a[j] * e2, out[3] += a[j] * e3;
    }
}

// The index's scans for compilers without vector types (see RETRLM__DEFINE_SCAN4_L2_V below):
// LANES partial sums a row folded by RETRLM__TREE4, as dot4
#define RETRLM__DEFINE_SCAN4_L2(name, ATTR, LANES)                                                 \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *b, size_t ldb, \
                                           int n) {                                              \
        float c0[LANES] = {0}, c1[LANES] = {0}, c2[LANES] = {0}, c3[LANES] = {0}, e0, e1, e2, e3;  \
        const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;                 \
        int i = 0, j, w;                                                                         \
        for (; i + LANES <= n; i += LANES)                                                       \
            for (j = 0; j < LANES; j++) {                                                        \
                e0 = a[i + j] - b0[i + j], e1 = a[i + j] - b1[i + j];                            \
                e2 = a[i + j] - b2[i + j], e3 = a[i + j] - b3[i + j];                            \
                c0[j] += e0 * e0, c1[j] += e1 * e1, c2[j] += e2 * e2, c3[j] += e3 * e3;          \
            }                                                                                    \
        RETRLM__TREE4(LANES)                                                                     \
        for (j = i; j < n; j++) {                                                                \
            e0 = a[j] - b0[j], e1 = a[j] - b1[j], e2 = a[j] - b2[j], e3 = a[j] - b3[j];          \
            c0[0] += e0 * e0, c1[0] += e1 * e1, c2[0] += e2 * e2, c3[0] += e3 * e3;              \
        }                                                                                        \
        out[0] = c0[0], out[1] = c1[0], out[2] = c2[0], out[3] = c3[0];                          \
    }
#define RETRLM__DEFINE_SCAN4_SQ8(name, ATTR, LANES)                                                \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *s,            \
                                           const uint8_t *b, size_t ldb, int n) {                \
        float c0[LANES] = {0}, c1[LANES] = {0}, c2[LANES] = {0}, c3[LANES] = {0}, e0, e1, e2, e3;  \
        const uint8_t *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;               \
        int i = 0, j, w;                                                                         \
        for (; i + LANES <= n; i += LANES)                                                       \
            for (j = 0; j < LANES; j++) {                                                        \
                e0 = (float)b0[i + j], e1 = (float)b1[i + j];                                    \
                e2 = (float)b2[i + j], e3 = (float)b3[i + j];                                    \
                if (s) {                                                                         \
                    const float aj = a[i + j], sj = s[i + j];                                    \
                    e0 = aj - sj * e0, e1 = aj - sj * e1, e2 = aj - sj * e2, e3 = aj - sj * e3;  \
                    c0[j] += e0 * e0, c1[j] += e1 * e1, c2[j] += e2 * e2, c3[j] += e3 * e3;      \
                } else                                                                           \
                    c0[j] += a[i + j] * e0, c1[j] += a[i + j] * e1, c2[j] += a[i + j] * e2,     \
                        c3[j] += a[i + j] * e3;                                                  \
            }                                                                                    \
        RETRLM__TREE4(LANES)                                                                     \
        out[0] = c0[0], out[1] = c1[0], out[2] = c2[0], out[3] = c3[0];                          \
        retrlm__scan4_sq8_tail(out, a, s, b0, b1, b2, b3, i, n);                                 \
    }

// X(r, ...) for each row r of a kernel's four (a matmul tile's MR)
#define RETRLM__ROWS_4(X, ...) X(0, __VA_ARGS__) X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__)
#define RETRLM__ROWS_6(X, ...) RETRLM__ROWS_4(X, __VA_ARGS__) X(4, __VA_ARGS__) X(5, __VA_ARGS__)
#define RETRLM__ROWS_8(X, ...) RETRLM__ROWS_6(X, __VA_ARGS__) X(6, __VA_ARGS__) X(7, __VA_ARGS__)
#if defined(__GNUC__) || defined(__clang__)
// GCC's and Clang's vector types, which the kernels below are also written in: each partial
// sum is a register by construction, whatever the flags (GCC -O2 keeps the scalar versions'
// lane arrays in memory, -O3 without -fopenmp spills half the matmul tile's accumulators)
typedef float retrlm__v4 __attribute__((vector_size(16)));
typedef float retrlm__v8 __attribute__((vector_size(32)));
typedef float retrlm__v16 __attribute__((vector_size(64)));
// a broadcast, the initializer of a vector (a float times a vector would be a double times it
// where float arithmetic is done in double, FLT_EVAL_METHOD 1, as on s390x, and not convert)
#define RETRLM__BCAST_retrlm__v4(x) {x, x, x, x}
#define RETRLM__BCAST_retrlm__v8(x) {x, x, x, x, x, x, x, x}
#define RETRLM__BCAST_retrlm__v16(x) {x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}
// acc += a * b: rounded twice (GCC in ISO C mode and Clang here do not fuse a * b + c), or once
// with the FMA instruction of the kernel's instruction set. Fused, the AVX2 tile runs 1.1-1.25x
// faster on Zen 4 (12 FMAs a step instead of 12 multiplies and 12 adds: fewer instructions to
// issue) and the AVX-512 one 1.1x; other results' last bits differ from the unfused paths'.
#define RETRLM__MADD(acc, a, b) acc += (a) * (b)
#define RETRLM__MADD_AVX2(acc, a, b) acc = _mm256_fmadd_ps(a, b, acc)
#define RETRLM__MADD_AVX512(acc, a, b) acc = _mm512_fmadd_ps(a, b, acc)
// L int8 at p as L floats: the instructions that widen them where the kernel has them (GCC turns
// __builtin_convertvector of int8 into one scalar conversion a lane), else lane by lane. The
// AVX-512 ones in their zero-masked forms, all lanes on: the plain ones start from an undefined
// vector that g++ 12 -O1 warns of (-Wmaybe-uninitialized, inside its own header). X8F: the load
// and the conversion to float around CVT, the widening (signed here, unsigned for the SQ8 codes)
#define RETRLM__X8F_AVX512(p, CVT)                                                              \
    _mm512_maskz_cvtepi32_ps((__mmask16)0xFFFF,                                                 \
                             CVT((__mmask16)0xFFFF, _mm_loadu_si128((const __m128i *)(const void *)(p))))
#define RETRLM__X8F_AVX2(p, CVT) \
    _mm256_cvtepi32_ps(CVT(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define RETRLM__I8F_AVX512(p) RETRLM__X8F_AVX512(p, _mm512_maskz_cvtepi8_epi32)
#define RETRLM__I8F_AVX2(p) RETRLM__X8F_AVX2(p, _mm256_cvtepi8_epi32)
#define RETRLM__I8F_V4(p) {(float)(p)[0], (float)(p)[1], (float)(p)[2], (float)(p)[3]}
#define RETRLM__I8F_V8(p) \
    {(float)(p)[0], (float)(p)[1], (float)(p)[2], (float)(p)[3], (float)(p)[4], (float)(p)[5], (float)(p)[6], (float)(p)[7]}

// a vector's lanes summed into dst by a fixed tree (lane j takes lane j + w, w = L/2, ..., 1)
// in registers: its 4-lane quarters added while wider than 4 lanes, then the last four. Summed
// through memory, lane by lane, a row's end took as long as its sums at the sizes of generation
// (K = 288) in a build whose -O2 did not vectorize the loop of the tree.
#define RETRLM__FOLD(x, dst)                                                                      \
    {                                                                                            \
        retrlm__v4 q_[4];                                                                        \
        float t_[4];                                                                             \
        memcpy(q_, &x, sizeof x);                                                                \
        if (sizeof x == 64) q_[0] += q_[2], q_[1] += q_[3];                                      \
        if (sizeof x >= 32) q_[0] += q_[1];                                                      \
        memcpy(t_, q_, sizeof t_);                                                               \
        dst = (t_[0] + t_[2]) + (t_[1] + t_[3]);                                                 \
    }

// The one-row kernels (retrlm__dot, _dot4, _dot4_q8) in vector types of L lanes: two vectors of
// partial sums a row, 2 L lanes, folded by RETRLM__FOLD; the tail past the last 2 L is summed
// on. dot4_q8 dequantizes each weight (scale times int8, rounded to float) and then takes the
// same steps as dot4: with n a multiple of the group, the bits of dot4 on dequantized rows.
#define RETRLM__DEFINE_DOT_V(name, ATTR, VT, MADD)                                                 \
    ATTR static float name(const float *a, const float *b, int n) {                              \
        enum { L = sizeof(VT) / sizeof(float) };                                                 \
        VT c0 = {0}, c1 = {0}, x, y;                                                             \
        float s;                                                                                 \
        int i = 0;                                                                               \
        for (; i + 2 * L <= n; i += 2 * L) {                                                     \
            memcpy(&x, a + i, sizeof x), memcpy(&y, b + i, sizeof y), MADD(c0, x, y);          \
            memcpy(&x, a + i + L, sizeof x), memcpy(&y, b + i + L, sizeof y), MADD(c1, x, y);  \
        }                                                                                        \
        c0 += c1;                                                                                \
        RETRLM__FOLD(c0, s)                                                                      \
        for (; i < n; i++) s += a[i] * b[i];                                                     \
        return s;                                                                                \
    }
#define RETRLM__DOT4_V_ROW(r, VT, MADD)                                                           \
    memcpy(&x, b##r + i, sizeof x), MADD(c##r##0, a0, x);                                       \
    memcpy(&x, b##r + i + L, sizeof x), MADD(c##r##1, a1, x);
#define RETRLM__DOT4_V_FOLD(r, dst) \
    c##r##0 += c##r##1;             \
    RETRLM__FOLD(c##r##0, dst[r])
// the four-row kernels' frame: ROW adds a step's terms to each row's two vectors, TERM(x, y)
// is one element's term in the tail (dot4 here, the index's L2 scan below)
#define RETRLM__DEFINE_ROWS4_V(name, ATTR, VT, MADD, ROW, TERM)                                    \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *b, size_t ldb, \
                                           int n) {                                              \
        enum { L = sizeof(VT) / sizeof(float) };                                                 \
        VT c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}; \
        const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;                 \
        int i = 0, j;                                                                            \
        for (; i + 2 * L <= n; i += 2 * L) {                                                     \
            VT a0, a1, x;                                                                        \
            memcpy(&a0, a + i, sizeof a0);                                                       \
            memcpy(&a1, a + i + L, sizeof a1);                                                   \
            RETRLM__ROWS_4(ROW, VT, MADD)                                                        \
        }                                                                                        \
        RETRLM__ROWS_4(RETRLM__DOT4_V_FOLD, out)                                                 \
        for (j = i; j < n; j++) {                                                                \
            out[0] += TERM(a[j], b0[j]);                                                         \
            out[1] += TERM(a[j], b1[j]);                                                         \
            out[2] += TERM(a[j], b2[j]);                                                         \
            out[3] += TERM(a[j], b3[j]);                                                         \
        }                                                                                        \
    }
#define RETRLM__TERM_DOT(x, y) (x) * (y)
#define RETRLM__DEFINE_DOT4_V(name, ATTR, VT, MADD) \
    RETRLM__DEFINE_ROWS4_V(name, ATTR, VT, MADD, RETRLM__DOT4_V_ROW, RETRLM__TERM_DOT)
#define RETRLM__DOT4_Q8_V_ROW(r, VT, MADD, I8F)                                                      \
    {                                                                                            \
        const VT w0 = I8F(q##r + h), w1 = I8F(q##r + h + L);                                     \
        x = d##r * w0, MADD(c##r##0, a0, x);                                                     \
        x = d##r * w1, MADD(c##r##1, a1, x);                                                     \
    }
#define RETRLM__DEFINE_DOT4_Q8_V(name, ATTR, VT, MADD, I8F)                                        \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const int8_t *q,          \
                                           const float *s, size_t ldq, int n, int rows) {       \
        enum { L = sizeof(VT) / sizeof(float) };                                                 \
        VT c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}; \
        const size_t lds = (ldq + RETRLM__Q8_GROUP - 1) / RETRLM__Q8_GROUP;                       \
        const int8_t *q0 = q, *q1 = q + (rows > 1) * ldq, *q2 = q + (rows > 2) * 2 * ldq;          \
        const int8_t *q3 = q + (rows > 3) * 3 * ldq;                                              \
        const float *s0 = s, *s1 = s + (rows > 1) * lds, *s2 = s + (rows > 2) * 2 * lds;           \
        const float *s3 = s + (rows > 3) * 3 * lds;                                               \
        float v[4];                                                                              \
        int i = 0, h, g = 0;                                                                     \
        for (; i + RETRLM__Q8_GROUP <= n; i += RETRLM__Q8_GROUP, g++) {                          \
            const VT d0 = RETRLM__BCAST_##VT(s0[g]), d1 = RETRLM__BCAST_##VT(s1[g]);             \
            const VT d2 = RETRLM__BCAST_##VT(s2[g]), d3 = RETRLM__BCAST_##VT(s3[g]);             \
            for (h = i; h < i + RETRLM__Q8_GROUP; h += 2 * L) {                                  \
                VT a0, a1, x;                                                                    \
                memcpy(&a0, a + h, sizeof a0);                                                   \
                memcpy(&a1, a + h + L, sizeof a1);                                               \
                RETRLM__ROWS_4(RETRLM__DOT4_Q8_V_ROW, VT, MADD, I8F)                                \
            }                                                                                    \
        }                                                                                        \
        RETRLM__ROWS_4(RETRLM__DOT4_V_FOLD, v)                                                   \
        retrlm__q8_tail4(out, v, a, q0, q1, q2, q3, s0 + g, s1 + g, s2 + g, s3 + g, i, n, rows); \
    }
// uint8 codes p[0..L) as L floats (index.c's SQ8 rows), as RETRLM__I8F_* above
#define RETRLM__U8F_AVX512(p) RETRLM__X8F_AVX512(p, _mm512_maskz_cvtepu8_epi32)
#define RETRLM__U8F_AVX2(p) RETRLM__X8F_AVX2(p, _mm256_cvtepu8_epi32)
#define RETRLM__U8F_V8 RETRLM__I8F_V8
// four codes as a 32-bit load, widened in registers (SSE2, NEON); lane by lane elsewhere
#if defined(RETRLM__X86_SSE2)
static RETRLM__ALWAYS_INLINE retrlm__v4 retrlm__u8f4(const uint8_t *p) {
    int w;
    __m128i x, z = _mm_setzero_si128();
    memcpy(&w, p, sizeof w);
    x = _mm_cvtsi32_si128(w);
    return (retrlm__v4)_mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(x, z), z));
}
#define RETRLM__U8F_V4(p) retrlm__u8f4(p)
#elif defined(RETRLM__ARM_NEON)
static RETRLM__ALWAYS_INLINE retrlm__v4 retrlm__u8f4(const uint8_t *p) {
    uint32_t w;
    uint16x8_t h;
    memcpy(&w, p, sizeof w);
    h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w)));
    return (retrlm__v4)vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
}
#define RETRLM__U8F_V4(p) retrlm__u8f4(p)
#else
#define RETRLM__U8F_V4 RETRLM__I8F_V4
#endif
// The index's scans in vector types, in the lanes and the order of dot4 (two vectors of partial
// sums a row, folded by RETRLM__FOLD, the tail summed on): out[r] for the four rows b + r ldb.
// SCAN4_L2: |a - b_r|^2. SCAN4_SQ8: b_r are uint8 codes c, widened in registers; with s NULL
// a . c, else sum (a - s c)^2 (s a row of per-dimension steps). Each row's sums are its own, so
// a row's bits do not depend on the rows beside it (ldb 0 scores one row).
#define RETRLM__SCAN4_L2_ROW(r, VT, MADD)                                                        \
    memcpy(&x, b##r + i, sizeof x), x = a0 - x, MADD(c##r##0, x, x);                             \
    memcpy(&x, b##r + i + L, sizeof x), x = a1 - x, MADD(c##r##1, x, x);
#define RETRLM__TERM_L2(x, y) ((x) - (y)) * ((x) - (y))
#define RETRLM__DEFINE_SCAN4_L2_V(name, ATTR, VT, MADD) \
    RETRLM__DEFINE_ROWS4_V(name, ATTR, VT, MADD, RETRLM__SCAN4_L2_ROW, RETRLM__TERM_L2)
#define RETRLM__SCAN4_IP8_ROW(r, VT, MADD, U8F)                                                  \
    {                                                                                            \
        const VT w0 = U8F(b##r + i), w1 = U8F(b##r + i + L);                                     \
        MADD(c##r##0, a0, w0), MADD(c##r##1, a1, w1);                                            \
    }
#define RETRLM__SCAN4_L28_ROW(r, VT, MADD, U8F)                                                  \
    {                                                                                            \
        const VT w0 = U8F(b##r + i), w1 = U8F(b##r + i + L);                                     \
        const VT e0 = a0 - s0 * w0, e1 = a1 - s1 * w1;                                           \
        MADD(c##r##0, e0, e0), MADD(c##r##1, e1, e1);                                            \
    }
#define RETRLM__DEFINE_SCAN4_SQ8_V(name, ATTR, VT, MADD, U8F)                                      \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *s,            \
                                           const uint8_t *b, size_t ldb, int n) {                \
        enum { L = sizeof(VT) / sizeof(float) };                                                 \
        VT c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}; \
        const uint8_t *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;               \
        int i = 0;                                                                               \
        for (; !s && i + 2 * L <= n; i += 2 * L) {                                               \
            VT a0, a1;                                                                           \
            memcpy(&a0, a + i, sizeof a0);                                                       \
            memcpy(&a1, a + i + L, sizeof a1);                                                   \
            RETRLM__ROWS_4(RETRLM__SCAN4_IP8_ROW, VT, MADD, U8F)                                 \
        }                                                                                        \
        for (; s && i + 2 * L <= n; i += 2 * L) {                                                \
            VT a0, a1, s0, s1;                                                                   \
            memcpy(&a0, a + i, sizeof a0);                                                       \
            memcpy(&a1, a + i + L, sizeof a1);                                                   \
            memcpy(&s0, s + i, sizeof s0);                                                       \
            memcpy(&s1, s + i + L, sizeof s1);                                                   \
            RETRLM__ROWS_4(RETRLM__SCAN4_L28_ROW, VT, MADD, U8F)                                 \
        }                                                                                        \
        RETRLM__ROWS_4(RETRLM__DOT4_V_FOLD, out)                                                 \
        retrlm__scan4_sq8_tail(out, a, s, b0, b1, b2, b3, i, n);                                 \
    }
#endif

#define RETRLM__NO_ATTR
#if defined(__GNUC__) || defined(__clang__)
#if defined(__AVX512F__) // the build's own: the widest vector it has, with FMA where it has it
RETRLM__DEFINE_DOT_V(retrlm__dot, RETRLM__NO_ATTR, retrlm__v16, RETRLM__MADD_AVX512)
RETRLM__DEFINE_DOT4_V(retrlm__dot4, RETRLM__NO_ATTR, retrlm__v16, RETRLM__MADD_AVX512)
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8, RETRLM__NO_ATTR, retrlm__v16, RETRLM__MADD_AVX512,
                         RETRLM__I8F_AVX512)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2, RETRLM__NO_ATTR, retrlm__v16, RETRLM__MADD_AVX512)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8, RETRLM__NO_ATTR, retrlm__v16, RETRLM__MADD_AVX512,
                           RETRLM__U8F_AVX512)
#elif defined(__AVX__) && defined(__FMA__)
RETRLM__DEFINE_DOT_V(retrlm__dot, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2)
RETRLM__DEFINE_DOT4_V(retrlm__dot4, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2)
#ifdef __AVX2__
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2, RETRLM__I8F_AVX2)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2,
                           RETRLM__U8F_AVX2)
#else
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2, RETRLM__I8F_V8)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD_AVX2, RETRLM__U8F_V8)
#endif
#elif defined(__AVX__)
RETRLM__DEFINE_DOT_V(retrlm__dot, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD)
RETRLM__DEFINE_DOT4_V(retrlm__dot4, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD)
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD, RETRLM__I8F_V8)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8, RETRLM__NO_ATTR, retrlm__v8, RETRLM__MADD, RETRLM__U8F_V8)
#else
RETRLM__DEFINE_DOT_V(retrlm__dot, RETRLM__NO_ATTR, retrlm__v4, RETRLM__MADD)
RETRLM__DEFINE_DOT4_V(retrlm__dot4, RETRLM__NO_ATTR, retrlm__v4, RETRLM__MADD)
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8, RETRLM__NO_ATTR, retrlm__v4, RETRLM__MADD, RETRLM__I8F_V4)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2, RETRLM__NO_ATTR, retrlm__v4, RETRLM__MADD)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8, RETRLM__NO_ATTR, retrlm__v4, RETRLM__MADD, RETRLM__U8F_V4)
#endif
#else
RETRLM__DEFINE_DOT4_Q8(retrlm__dot4_q8, RETRLM__NO_ATTR)
RETRLM__DEFINE_DOT(retrlm__dot, RETRLM__NO_ATTR, RETRLM__LANES)
RETRLM__DEFINE_DOT4(retrlm__dot4, RETRLM__NO_ATTR, RETRLM__LANES)
RETRLM__DEFINE_SCAN4_L2(retrlm__scan4_l2, RETRLM__NO_ATTR, RETRLM__LANES)
RETRLM__DEFINE_SCAN4_SQ8(retrlm__scan4_sq8, RETRLM__NO_ATTR, RETRLM__LANES)
#endif

RETRLM_API float retrlm_dot(const float *a, const float *b, int n) { return retrlm__dot(a, b, n); }

RETRLM_API void retrlm_axpy(float *y, float alpha, const float *x, int n) {
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) y[i] += alpha * x[i];
}

RETRLM_API void retrlm_scale(float *x, float alpha, int n) {
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) x[i] *= alpha;
}

#if defined(__GNUC__) || defined(__clang__)
typedef int retrlm__v4i __attribute__((vector_size(16)));
// e^x of 4 floats at once, as Cephes' expf computes it: x = n ln2 + r with |r| <= ln2 / 2 (n
// rounded to nearest by adding 1.5 * 2^23), e^r = 1 + r + r^2 p(r) with p of degree 5, times
// 2^n put in the exponent field. Within 1 ulp of expf at 2e7 points of [-87, 0] (the softmax's
// range); 0 for x < -87.3 (where expf is denormal or 0: softmax's terms that small do not
// count), x > 88.7 taken as 88.7, NaN stays NaN. In 16-byte vectors, which every x86-64 and
// aarch64 has: GCC splits 32-byte ones for SSE2 but does their compares lane by lane in scalar
// code. glibc's expf is a call a float, which the LM loss paid 2 million times a step (a fifth
// of a small model's 2-thread step went to it and its sum).
#define RETRLM__V4(x) RETRLM__BCAST_retrlm__v4(x)
// lane by lane, a where the mask m is set, else b (m a comparison's result)
#define RETRLM__V4_SEL(m, a, b) (retrlm__v4)(((retrlm__v4i)(a) & (m)) | ((retrlm__v4i)(b) & ~(m)))
static RETRLM__ALWAYS_INLINE void retrlm__exp4(retrlm__v4 *px) { // in place
    static const retrlm__v4 hi = RETRLM__V4(88.7f), lo = RETRLM__V4(-87.3f), one = RETRLM__V4(1.0f);
    static const retrlm__v4 log2e = RETRLM__V4(1.44269504088896341f);
    static const retrlm__v4 magic = RETRLM__V4(12582912.0f); // 1.5 * 2^23
    static const retrlm__v4 c1 = RETRLM__V4(0.693359375f), c2 = RETRLM__V4(-2.12194440e-4f);
    static const retrlm__v4 p0 = RETRLM__V4(1.9875691500e-4f), p1 = RETRLM__V4(1.3981999507e-3f);
    static const retrlm__v4 p2 = RETRLM__V4(8.3334519073e-3f), p3 = RETRLM__V4(4.1665795894e-2f);
    static const retrlm__v4 p4 = RETRLM__V4(1.6666665459e-1f), p5 = RETRLM__V4(5.0000001201e-1f);
    static const retrlm__v4i bias = {127, 127, 127, 127};
    retrlm__v4 x = *px, t, nf, r, y;
    const retrlm__v4i over = x > hi, under = x < lo;
    retrlm__v4i n;
    x = RETRLM__V4_SEL(over, hi, x);
    t = x * log2e + magic; // n in the low bits of t's mantissa
    nf = t - magic;
    n = (retrlm__v4i)t - (retrlm__v4i)magic;
    r = x - nf * c1 - nf * c2;
    y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5;
    y = y * r * r + r + one;
    y *= (retrlm__v4)((n + bias) << 23);
    *px = (retrlm__v4)((retrlm__v4i)y & ~under);
}
#endif

// the largest of x[0..n) (NaNs skipped; -inf for none), 8 lanes at a time where the compiler
// has vector types (the scalar loop's ?: does not vectorize without -ffast-math)
static float retrlm__max(const float *x, int n) {
    float m = -INFINITY;
    int i = 0;
#if defined(__GNUC__) || defined(__clang__)
    if (n >= 8) {
        retrlm__v4 m0 = RETRLM__V4(-INFINITY), m1 = m0, v;
        int j;
        for (; i + 8 <= n; i += 8) {
            memcpy(&v, x + i, sizeof v);
            m0 = RETRLM__V4_SEL(v > m0, v, m0);
            memcpy(&v, x + i + 4, sizeof v);
            m1 = RETRLM__V4_SEL(v > m1, v, m1);
        }
        for (j = 0; j < 4; j++) {
            m = m0[j] > m ? m0[j] : m;
            m = m1[j] > m ? m1[j] : m;
        }
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// the sum of e^(x[i] - m), i < n, each term also written to out[i] when out is not NULL (out
// may be x); m finite. The terms are summed in 8 lanes and the lanes in a fixed tree: the same
// bits for any thread count (and on every path, where the compiler does not fuse a * b + c).
static float retrlm__exp_sum(float *out, const float *x, float m, int n) {
#if defined(__GNUC__) || defined(__clang__)
    const retrlm__v4 mv = RETRLM__V4(m);
    retrlm__v4 s0 = {0}, s1 = {0}, e0, e1;
    float t[8];
    int i = 0, j;
    for (;; i += 8) {
        const float *src = x + i;
        if (i + 8 > n) { // the last few, padded with -inf (terms of 0)
            if (i >= n) break;
            for (j = 0; j < 8; j++) t[j] = i + j < n ? x[i + j] : -INFINITY;
            src = t;
        }
        memcpy(&e0, src, sizeof e0);
        memcpy(&e1, src + 4, sizeof e1);
        e0 -= mv, e1 -= mv;
        retrlm__exp4(&e0);
        retrlm__exp4(&e1);
        s0 += e0, s1 += e1;
        if (out && src == t) {
            memcpy(t, &e0, sizeof e0);
            memcpy(t + 4, &e1, sizeof e1);
            memcpy(out + i, t, (size_t)(n - i) * sizeof(float));
        } else if (out) {
            memcpy(out + i, &e0, sizeof e0);
            memcpy(out + i + 4, &e1, sizeof e1);
        }
    }
    return ((s0[0] + s1[0]) + (s0[2] + s1[2])) + ((s0[1] + s1[1]) + (s0[3] + s1[3]));
#else
    float s = 0.0f, e;
    int i;
    for (i = 0; i < n; i++) {
        e = expf(x[i] - m);
        if (out) out[i] = e;
        s += e;
    }
    return s;
#endif
}

RETRLM_API float retrlm_logsumexp(const float *x, int n) {
    // logsumexp(x) = max + log(sum exp(x - max)): no overflow, and the largest term is exp(0)
    float m = retrlm__max(x, n);
    if (m == -INFINITY) return -INFINITY;
    if (m == INFINITY) return INFINITY;
    return m + logf(retrlm__exp_sum(NULL, x, m, n));
}

// out = softmax(x) (out may be x), and returns logsumexp(x): the LM loss needs both, and one
// pass gives both (the sum is retrlm_logsumexp's, term for term)
RETRLM__PRIVATE float retrlm__softmax_lse(float *out, const float *x, int n) {
    float m = retrlm__max(x, n), s, inv;
    int i;
    if (n <= 0) return -INFINITY;
    if (m == -INFINITY) { // nothing is allowed: the only finite answer is uniform
        for (i = 0; i < n; i++) out[i] = 1.0f / (float)n;
        return -INFINITY;
    }
    if (m == INFINITY) { // inf - inf: no finite answer (NaN, as the sums would give)
        for (i = 0; i < n; i++) out[i] = NAN;
        return INFINITY;
    }
    s = retrlm__exp_sum(out, x, m, n);
    inv = 1.0f / s;
    RETRLM__SIMD
    for (i = 0; i < n; i++) out[i] *= inv;
    return m + logf(s);
}

// s[i] = 1 / (1 + e^-x[i]), i < n (s may be x): the sigmoid, from t = e^-|x|, which is never
// over 1 (no overflow): 1 / (1 + t) where x >= 0, t / (1 + t) below. With the compiler's vector
// types, t is retrlm__exp4's (SwiGLU takes a sigmoid an element of its hidden layer, forward and
// backward: glibc's expf a call each was a tenth of a small model's 2-thread step, on one thread).
#if defined(__GNUC__) || defined(__clang__)
static RETRLM__ALWAYS_INLINE void retrlm__sigmoid4(retrlm__v4 *pv) { // in place
    static const retrlm__v4 one = RETRLM__V4(1.0f), zero = {0};
    static const retrlm__v4i sign = {INT_MIN, INT_MIN, INT_MIN, INT_MIN};
    const retrlm__v4 v = *pv;
    retrlm__v4 t = (retrlm__v4)((retrlm__v4i)v | sign); // -|x|
    retrlm__exp4(&t);
    *pv = RETRLM__V4_SEL(v >= zero, one, t) / (one + t);
}
#endif

RETRLM__PRIVATE void retrlm__sigmoid(float *s, const float *x, size_t n) {
    size_t i = 0;
#if defined(__GNUC__) || defined(__clang__)
    // 16 at a time: four independent exponentials in flight (each is a chain of 15 dependent
    // operations; 1.48 -> 1.31 ns an element against 4 at a time, -O3 -march=haswell)
    float tail[16] = {0};
    retrlm__v4 v[4];
    int j;
    for (;; i += 16) {
        const float *src = x + i;
        if (i + 16 > n) { // the last few, through tail
            if (i >= n) break;
            memcpy(tail, x + i, (n - i) * sizeof(float));
            src = tail;
        }
        memcpy(v, src, sizeof v);
        for (j = 0; j < 4; j++) retrlm__sigmoid4(&v[j]);
        if (src == tail) {
            memcpy(tail, v, sizeof v);
            memcpy(s + i, tail, (n - i) * sizeof(float));
        } else {
            memcpy(s + i, v, sizeof v);
        }
    }
#else
    for (; i < n; i++) {
        const float t = expf(-fabsf(x[i]));
        s[i] = (x[i] >= 0.0f ? 1.0f : t) / (1.0f + t);
    }
#endif
}

RETRLM_API void retrlm_softmax(float *out, const float *x, int n) {
    (void)retrlm__softmax_lse(out, x, n);
}

RETRLM_API void retrlm_log_softmax(float *out, const float *x, int n) {
    float lse = retrlm_logsumexp(x, n);
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) out[i] = x[i] - lse;
}

// ---------------------------------------------------------------------------------------------
// top-k: a min-heap whose root is the worst pair kept; "worse" is lower score, then larger id

static int retrlm__worse(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

RETRLM_API void retrlm_topk_init(retrlm_topk *h, int k, int64_t *ids, float *scores) {
    RETRLM_ASSERT(h && k >= 0 && (k == 0 || (ids && scores)));
    h->k = k;
    h->n = 0;
    h->ids = ids;
    h->scores = scores;
}

static void retrlm__topk_sift_down(int64_t *ids, float *sc, int n, int i) {
    int64_t id = ids[i];
    float s = sc[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && retrlm__worse(sc[c + 1], ids[c + 1], sc[c], ids[c])) c++;
        if (!retrlm__worse(sc[c], ids[c], s, id)) break;
        ids[i] = ids[c];
        sc[i] = sc[c];
        i = c;
    }
    ids[i] = id;
    sc[i] = s;
}

RETRLM_API void retrlm_topk_push(retrlm_topk *h, int64_t id, float score) {
    int i;
    if (score != score || h->k == 0) return; // NaN is never kept
    if (h->n == h->k) {
        if (!retrlm__worse(h->scores[0], h->ids[0], score, id)) return;
        h->ids[0] = id;
        h->scores[0] = score;
        retrlm__topk_sift_down(h->ids, h->scores, h->n, 0);
        return;
    }
    i = h->n++;
    while (i > 0) { // sift up
        int p = (i - 1) / 2;
        if (!retrlm__worse(score, id, h->scores[p], h->ids[p])) break;
        h->ids[i] = h->ids[p];
        h->scores[i] = h->scores[p];
        i = p;
    }
    h->ids[i] = id;
    h->scores[i] = score;
}

RETRLM_API int retrlm_topk_sort(retrlm_topk *h) {
    // heapsort: move the worst to the end repeatedly, which leaves the array best first
    int n = h->n, end;
    for (end = n - 1; end > 0; end--) {
        int64_t ti = h->ids[0];
        float ts = h->scores[0];
        h->ids[0] = h->ids[end];
        h->scores[0] = h->scores[end];
        h->ids[end] = ti;
        h->scores[end] = ts;
        retrlm__topk_sift_down(h->ids, h->scores, end, 0);
    }
    return n;
}

RETRLM_API int retrlm_topk_select(const float *scores, int n, int k, int64_t *ids,
                                  float *out_scores) {
    retrlm_topk h;
    float *tmp = out_scores;
    int i, got;
    RETRLM_ASSERT(ids && k >= 0);
    if (!tmp) tmp = (float *)retrlm__alloc((size_t)(k > 0 ? k : 1), sizeof(float));
    if (!tmp) return 0;
    retrlm_topk_init(&h, k, ids, tmp);
    for (i = 0; i < n; i++) retrlm_topk_push(&h, i, scores[i]);
    got = retrlm_topk_sort(&h);
    if (!out_scores) RETRLM_FREE(tmp);
    return got;
}

// ---------------------------------------------------------------------------------------------
// matrix multiply, GotoBLAS-style: C is cut into MC x NC tiles, each computed by one thread
// (threads never share a write, and every C element sums its K terms in the same order, so
// results do not depend on the thread count). Inside a tile, KC-deep slices of B are packed
// into NR-column panels so that the micro-kernel reads them at unit stride, A's MR rows are
// read in place (or packed into MR-row panels, when its steps are a page apart), and the
// MR x NR accumulators stay in registers.

// The register tile follows the vector registers the code may use: MR x NR accumulators plus
// one row of b and one broadcast of a must fit, or the tile spills and runs 10x slower. The
// build's own tile is set by what the compiler targets; on x86-64 with GCC or Clang a build for
// plain x86-64 (SSE2) also carries AVX2+FMA and AVX-512 micro-kernels (target attributes) and
// picks the best one the CPU has at the first multiply (RETRLM_NO_DISPATCH turns that off).
#if defined(__AVX512F__)
#define RETRLM__MR 8 // 32 zmm: 8 rows x 2 zmm = 16 accumulators
#define RETRLM__NR 32
#elif defined(__AVX__) || defined(__aarch64__)
#define RETRLM__MR 6 // 16 ymm (AVX) or 32 q (NEON): 6 x 2 ymm = 12, 6 x 4 q = 24 accumulators
#define RETRLM__NR 16
#else
#define RETRLM__MR 4 // SSE2, 32-bit ARM and the rest: 4 x 2 xmm = 8 accumulators of 16 registers
#define RETRLM__NR 8
#endif
#if !defined(RETRLM_NO_DISPATCH) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__AVX__)
#define RETRLM__DISPATCH 1
#define RETRLM__MR_MAX 8 // the largest tile a dispatched kernel uses (AVX-512's)
#define RETRLM__NR_MAX 32
#else
#define RETRLM__MR_MAX RETRLM__MR
#define RETRLM__NR_MAX RETRLM__NR
#endif
#define RETRLM__KC 256
// Work is shared out in tasks of MB <= MR * 64 rows by NB <= NR * 32 columns of C, halved (NB
// first, down to NR * 4) while a product has fewer than 4 tasks a thread. A task packs, for
// each KC slice, its NB columns of B once, then runs the register tiles block by block of MC =
// MR * 16 rows of A (GotoBLAS's order: the A block stays in L2 and one B panel in L1 while the
// block's rows stream by). B is packed M / MB times (and A, where it is packed, N / NB times);
// packing every MR * 32 by NR * 16 block's slices of both anew, as this did before, took a
// fifth of the AVX2 kernel's time. Each thread packs into space of its own: panels shared by
// the threads (BLAS's way on many cores) cost two barriers a slice, and writing them took the
// lines the other core had just read: slower on 2 threads.
#define RETRLM__MB_TILES 64
#define RETRLM__NB_TILES 32
#define RETRLM__MC_TILES 16

typedef struct retrlm__mat { // element (r, c) is p[r * sr + c * sc]
    const float *p;
    size_t sr, sc;
    const int8_t *q; // or, int8 (sc 1): q[r * sr + c] times s[r * ss + c / RETRLM__Q8_GROUP]
    const float *s;
    size_t ss;
} retrlm__mat;

// Packs a block of X into panels of W lanes: dst (panels, kc, W), zero-padded past the last
// lane. Lane l of panel q is X's row r0 + q*W + l (rows < R exist), depth k0..k0+kc; element
// (r, k) is X.p[r * X.sr + k * X.sc]. The loop order follows the stride-1 direction so that
// reads are sequential whichever way the operand is stored.
static void retrlm__matmul_pack(float *dst, retrlm__mat X, int R, int r0, int rc, int k0, int kc, int W) {
    int q = 0, l, p;
    // lanes contiguous (B stored K x N, dinp's weights; A stored K x M, the LM head's dW): whole
    // panels G lanes (64 floats or more) at a time, a step's G floats read at once, so that one
    // pass down the kc rows (a page or more apart) serves G / W panels. One panel a pass read 6
    // floats of A's rows 32 KB apart (one L1 set for all) at the 8192-row dW: each a miss. On an
    // AVX2 Zen 3: that dW 1.50x (1 thread), 1.46x (2), the small training step 1.03x and 1.10x;
    // dinp 1024 x 768 x 3072 1.07x (its pack 16% of the time -> 10%); 128 lanes a pass 0.92x
    // (dinp), 96 at W 6 0.92-0.95x (dW).
    if (!X.q && X.sr == 1 && X.sc != 1) {
        const int full = RETRLM__MAX(0, RETRLM__MIN(rc, R - r0)) / W * W; // rows of whole panels
        const int G = (64 + W - 1) / W * W;
        for (; q < full; q += G) {
            const int g = RETRLM__MIN(G, full - q);
            const float *base = X.p + (size_t)(r0 + q) + (size_t)k0 * X.sc;
            float *d = dst + (size_t)q * kc;
            for (p = 0; p < kc; p++) {
                const float *src = base + (size_t)p * X.sc;
                int j;
                for (j = 0; j < g; j += W)
                    for (l = 0; l < W; l++) d[(size_t)j * kc + (size_t)p * W + l] = src[j + l];
            }
        }
        q = full; // the last group may have had fewer than G lanes
        dst += (size_t)q * kc;
    }
    for (; q < rc; q += W) {
        int lanes = RETRLM__MIN(W, RETRLM__MIN(rc - q, R - r0 - q));
        const float *base = X.q ? NULL : X.p + (size_t)(r0 + q) * X.sr + (size_t)k0 * X.sc;
        if (lanes < 0) lanes = 0;
        if (X.q) { // int8 rows: dequantized as they are packed
            for (l = 0; l < lanes; l++) {
                size_t r = (size_t)(r0 + q + l);
                const int8_t *src = X.q + r * X.sr + k0;
                const float *sc = X.s + r * X.ss;
                for (p = 0; p < kc; p++)
                    dst[(size_t)p * W + l] = sc[(k0 + p) / RETRLM__Q8_GROUP] * (float)src[p];
            }
#ifdef RETRLM__X86_SSE2
        } else if (X.sc == 1 && lanes == W && W % 2 == 0) { // rows are contiguous, all W there:
            for (p = 0; p + 4 <= kc; p += 4) { // 4 steps of W rows at a time, transposed in
                float *d = dst + (size_t)p * W; // registers (SSE2, every x86-64): 4 lines of
                for (l = 0; l + 4 <= W; l += 4) { // dst written whole
                    const float *src = base + (size_t)l * X.sr + p;
                    __m128 x0 = _mm_loadu_ps(src), x1 = _mm_loadu_ps(src + X.sr);
                    __m128 x2 = _mm_loadu_ps(src + 2 * X.sr), x3 = _mm_loadu_ps(src + 3 * X.sr);
                    _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
                    _mm_storeu_ps(d + l, x0);
                    _mm_storeu_ps(d + W + l, x1);
                    _mm_storeu_ps(d + 2 * W + l, x2);
                    _mm_storeu_ps(d + 3 * W + l, x3);
                }
                if (l < W) { // two lanes left (the 6-row AVX2 tile): pairs of a step each
                    const float *src = base + (size_t)l * X.sr + p;
                    const __m128 x0 = _mm_loadu_ps(src), x1 = _mm_loadu_ps(src + X.sr);
                    const __m128 lo = _mm_unpacklo_ps(x0, x1), hi = _mm_unpackhi_ps(x0, x1);
                    _mm_storel_pi((__m64 *)(void *)(d + l), lo);
                    _mm_storeh_pi((__m64 *)(void *)(d + W + l), lo);
                    _mm_storel_pi((__m64 *)(void *)(d + 2 * W + l), hi);
                    _mm_storeh_pi((__m64 *)(void *)(d + 3 * W + l), hi);
                }
            }
            for (; p < kc; p++)
                for (l = 0; l < W; l++) dst[(size_t)p * W + l] = base[(size_t)l * X.sr + p];
#endif
        } else if (X.sc == 1) { // rows are contiguous: W rows read side by side, a step of each
            for (p = 0; p < kc; p++) { // written out at once (a whole line of dst, in order)
                const float *src = base + p;
                for (l = 0; l < lanes; l++) dst[(size_t)p * W + l] = src[(size_t)l * X.sr];
            }
        } else { // lanes are contiguous (X.sr == 1): copy W at a time
            for (p = 0; p < kc; p++) {
                const float *src = base + (size_t)p * X.sc;
                for (l = 0; l < lanes; l++) dst[(size_t)p * W + l] = src[l];
            }
        }
        for (l = lanes; l < W; l++)
            for (p = 0; p < kc; p++) dst[(size_t)p * W + l] = 0.0f;
        dst += (size_t)kc * W;
    }
}

// a row of a tile's accumulators t out to C's row cr: its first nr columns set (or added to,
// with acc_c) on the first K slice, with the bias; added to on the others
static void retrlm__tile_store(float *cr, const float *t, int nr, const float *bias, int first, int acc_c) {
    int j;
    if (first && !acc_c)
        for (j = 0; j < nr; j++) cr[j] = t[j];
    else
        for (j = 0; j < nr; j++) cr[j] += t[j];
    if (first && bias)
        for (j = 0; j < nr; j++) cr[j] += bias[j];
}

// A's mr rows by kc (element (r, p) at a[r * ars + p * aks]: rows in place, or a packed panel
// with ars 1, aks MR) times b (kc, NR) packed -> the mr x nr corner of the tile at c (row
// stride ldc). first: this is the first K slice, so C is set (or accumulated, with acc_c) and
// bias added.
// Each row of accumulators is its own array and every row is written out by a macro, not a
// loop: the compiler then keeps them all in vector registers even at -O2 (a 2-D array indexed
// in a loop stays in memory, 10x slower). One definition, instantiated per tile and target.
#define RETRLM__ACC_DECL(r, NR) float acc##r[NR] = {0};
#define RETRLM__ACC_ROW(r, NR)                                        \
    {                                                                 \
        const float ar = arow##r[o];                                  \
        RETRLM__SIMD for (j = 0; j < NR; j++) acc##r[j] += ar * bp[j]; \
    }
// row r of A (rows past mr read the last one, whose sums are not stored)
#define RETRLM__AROW_DECL(r, unused) \
    const float *arow##r = a + (size_t)((r) < mr ? (r) : mr - 1) * ars;
#define RETRLM__ACC_STORE(r, NR) \
    if (r < mr) retrlm__tile_store(c + (size_t)r * ldc, acc##r, nr, bias, first, acc_c);
#define RETRLM__ROWS(MR) RETRLM__ROWS_##MR
#define RETRLM__DEFINE_MICRO(name, ATTR, MR, NR)                                                    \
    ATTR static void name(int kc, const float *RETRLM__RESTRICT a, size_t ars, size_t aks,           \
                          const float *RETRLM__RESTRICT b, float *RETRLM__RESTRICT c, size_t ldc,    \
                          int mr, int nr, const float *bias, int first, int acc_c) {                \
        int j, p;                                                                                   \
        RETRLM__ROWS(MR)(RETRLM__ACC_DECL, NR)                                                      \
        RETRLM__ROWS(MR)(RETRLM__AROW_DECL, NR)                                                     \
        for (p = 0; p < kc; p++) { /* the whole cost of the multiply: MR broadcasts of a */         \
            const size_t o = (size_t)p * aks; /* against NR-wide rows of b, MR*NR */                \
            const float *bp = b + (size_t)p * NR; /* independent accumulators */                    \
            RETRLM__ROWS(MR)(RETRLM__ACC_ROW, NR)                                                   \
        }                                                                                           \
        RETRLM__ROWS(MR)(RETRLM__ACC_STORE, NR)                                                     \
    }
#if defined(__GNUC__) || defined(__clang__)
// With GCC and Clang, the same multiply in their vector types: every tile is MR rows of two
// vectors (NR = 2 * VL), so each accumulator is a register by construction, whatever the flags;
// left to the auto-vectorizer, GCC -O3 without -fopenmp (no `omp simd`) builds the AVX2 tile
// with shuffles and half its accumulators on the stack, at 60% of the speed. The arithmetic is
// the scalar version's, element for element, but for the FMA (RETRLM__MADD_*, above).
#define RETRLM__VACC_DECL(r, VT) VT acc##r##0 = {0}, acc##r##1 = {0};
#define RETRLM__VACC_ROW(r, VT, MADD)                                    \
    {                                                                  \
        const VT ar = RETRLM__BCAST_##VT(arow##r[o]);                  \
        MADD(acc##r##0, ar, b0);                                       \
        MADD(acc##r##1, ar, b1);                                       \
    }
#define RETRLM__VACC_OUT(r, VT)                                                                 \
    if (r < mr) { /* a full row in vectors (retrlm__tile_store's sums, in its order), else by it */ \
        float *cr = c + (size_t)r * ldc;                                                       \
        if (nr == NR) {                                                                        \
            VT y0 = acc##r##0, y1 = acc##r##1, z;                                              \
            if (!first || acc_c) {                                                             \
                memcpy(&z, cr, sizeof z), y0 = z + y0;                                         \
                memcpy(&z, cr + NR / 2, sizeof z), y1 = z + y1;                                \
            }                                                                                  \
            if (first && bias) {                                                               \
                memcpy(&z, bias, sizeof z), y0 += z;                                           \
                memcpy(&z, bias + NR / 2, sizeof z), y1 += z;                                  \
            }                                                                                  \
            memcpy(cr, &y0, sizeof y0);                                                        \
            memcpy(cr + NR / 2, &y1, sizeof y1);                                               \
        } else {                                                                               \
            float t[2 * sizeof(VT) / sizeof(float)];                                           \
            memcpy(t, &acc##r##0, sizeof(VT));                                                 \
            memcpy(t + NR / 2, &acc##r##1, sizeof(VT));                                        \
            retrlm__tile_store(cr, t, nr, bias, first, acc_c);                                 \
        }                                                                                      \
    }
#define RETRLM__DEFINE_MICRO_V(name, ATTR, MR, VT, MADD)                                            \
    ATTR static void name(int kc, const float *RETRLM__RESTRICT a, size_t ars, size_t aks,           \
                          const float *RETRLM__RESTRICT b, float *RETRLM__RESTRICT c, size_t ldc,    \
                          int mr, int nr, const float *bias, int first, int acc_c) {                \
        const int NR = 2 * (int)(sizeof(VT) / sizeof(float));                                      \
        int p;                                                                                      \
        RETRLM__ROWS(MR)(RETRLM__VACC_DECL, VT)                                                     \
        RETRLM__ROWS(MR)(RETRLM__AROW_DECL, VT)                                                     \
        for (p = 0; p < kc; p++) {                                                                  \
            const size_t o = (size_t)p * aks;                                                       \
            const float *bp = b + (size_t)p * NR;                                                   \
            VT b0, b1;                                                                              \
            memcpy(&b0, bp, sizeof b0);                                                             \
            memcpy(&b1, bp + NR / 2, sizeof b1);                                                    \
            RETRLM__ROWS(MR)(RETRLM__VACC_ROW, VT, MADD)                                            \
        }                                                                                           \
        RETRLM__ROWS(MR)(RETRLM__VACC_OUT, VT)                                                      \
    }
#if RETRLM__NR == 32
RETRLM__DEFINE_MICRO_V(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, retrlm__v16, RETRLM__MADD_AVX512)
#elif RETRLM__NR == 16 && defined(__FMA__) && defined(__AVX__)
RETRLM__DEFINE_MICRO_V(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, retrlm__v8, RETRLM__MADD_AVX2)
#elif RETRLM__NR == 16
RETRLM__DEFINE_MICRO_V(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, retrlm__v8, RETRLM__MADD)
#else
RETRLM__DEFINE_MICRO_V(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, retrlm__v4, RETRLM__MADD)
#endif
#else
RETRLM__DEFINE_MICRO(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, RETRLM__NR)
#endif
#ifdef RETRLM__DISPATCH
RETRLM__DEFINE_MICRO_V(retrlm__micro_avx2, __attribute__((target("avx2,fma"))), 6, retrlm__v8, RETRLM__MADD_AVX2)
RETRLM__DEFINE_MICRO_V(retrlm__micro_avx512, __attribute__((target("avx512f"))), 8, retrlm__v16,
                       RETRLM__MADD_AVX512)
RETRLM__DEFINE_DOT_V(retrlm__dot_avx2, __attribute__((target("avx2,fma"))), retrlm__v8, RETRLM__MADD_AVX2)
RETRLM__DEFINE_DOT4_V(retrlm__dot4_avx2, __attribute__((target("avx2,fma"))), retrlm__v8, RETRLM__MADD_AVX2)
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8_avx2, __attribute__((target("avx2,fma"))), retrlm__v8,
                         RETRLM__MADD_AVX2, RETRLM__I8F_AVX2)
RETRLM__DEFINE_DOT_V(retrlm__dot_avx512, __attribute__((target("avx512f"))), retrlm__v16, RETRLM__MADD_AVX512)
RETRLM__DEFINE_DOT4_V(retrlm__dot4_avx512, __attribute__((target("avx512f"))), retrlm__v16,
                      RETRLM__MADD_AVX512)
RETRLM__DEFINE_DOT4_Q8_V(retrlm__dot4_q8_avx512, __attribute__((target("avx512f"))), retrlm__v16,
                         RETRLM__MADD_AVX512, RETRLM__I8F_AVX512)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2_avx2, __attribute__((target("avx2,fma"))), retrlm__v8,
                          RETRLM__MADD_AVX2)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8_avx2, __attribute__((target("avx2,fma"))), retrlm__v8,
                           RETRLM__MADD_AVX2, RETRLM__U8F_AVX2)
RETRLM__DEFINE_SCAN4_L2_V(retrlm__scan4_l2_avx512, __attribute__((target("avx512f"))), retrlm__v16,
                          RETRLM__MADD_AVX512)
RETRLM__DEFINE_SCAN4_SQ8_V(retrlm__scan4_sq8_avx512, __attribute__((target("avx512f"))), retrlm__v16,
                           RETRLM__MADD_AVX512, RETRLM__U8F_AVX512)
#endif

typedef struct retrlm__gemm_kernel { // what the multiply runs on one CPU
    void (*micro)(int, const float *, size_t, size_t, const float *, float *, size_t, int, int,
                  const float *, int, int);
    int mr, nr;
    void (*dot4)(float *, const float *, const float *, size_t, int); // the one-row path's
    float (*dot)(const float *, const float *, int);
    void (*dot4_q8)(float *, const float *, const int8_t *, const float *, size_t, int, int);
    void (*scan4_l2)(float *, const float *, const float *, size_t, int); // the index's scans
    void (*scan4_sq8)(float *, const float *, const float *, const uint8_t *, size_t, int);
    const char *path; // retrlm_cpu_path's text
} retrlm__gemm_kernel;

#if defined(__AVX512F__)
#define RETRLM__ISA "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define RETRLM__ISA "avx2+fma"
#elif defined(__AVX__)
#define RETRLM__ISA "avx"
#elif defined(__aarch64__)
#define RETRLM__ISA "aarch64 neon"
#elif defined(__SSE2__) || defined(_M_X64)
#define RETRLM__ISA "x86-64 SSE2"
#elif defined(__ARM_NEON)
#define RETRLM__ISA "arm neon"
#else
#define RETRLM__ISA "portable C"
#endif
#define RETRLM__STR2(x) #x
#define RETRLM__STR(x) RETRLM__STR2(x)
#ifdef RETRLM__OMP
#define RETRLM__OMP_TEXT ", OpenMP"
#else
#define RETRLM__OMP_TEXT ", no OpenMP"
#endif

// the kernels this CPU runs best: the build's own, or (dispatch) AVX2+FMA or AVX-512 when the
// CPU has them (and RETRLM_CPU does not rule them out); __builtin_cpu_supports also asks whether
// the OS saves the wider registers. Chosen once: two threads that both choose write the same.
static const retrlm__gemm_kernel *retrlm__gemm(void) {
    static const retrlm__gemm_kernel k[3] = {
        {retrlm__micro, RETRLM__MR, RETRLM__NR, retrlm__dot4, retrlm__dot, retrlm__dot4_q8,
         retrlm__scan4_l2, retrlm__scan4_sq8,
         RETRLM__ISA ", matmul tile " RETRLM__STR(RETRLM__MR) "x" RETRLM__STR(RETRLM__NR) RETRLM__OMP_TEXT},
#ifdef RETRLM__DISPATCH
        {retrlm__micro_avx2, 6, 16, retrlm__dot4_avx2, retrlm__dot_avx2, retrlm__dot4_q8_avx2,
         retrlm__scan4_l2_avx2, retrlm__scan4_sq8_avx2,
         "avx2+fma (chosen at run time; built for " RETRLM__ISA "), matmul tile 6x16" RETRLM__OMP_TEXT},
        {retrlm__micro_avx512, 8, 32, retrlm__dot4_avx512, retrlm__dot_avx512, retrlm__dot4_q8_avx512,
         retrlm__scan4_l2_avx512, retrlm__scan4_sq8_avx512,
         "avx512f (chosen at run time; built for " RETRLM__ISA "), matmul tile 8x32" RETRLM__OMP_TEXT},
#endif
    };
#ifdef RETRLM__DISPATCH
    static const retrlm__gemm_kernel *chosen;
    if (!chosen) {
        const char *cap = getenv("RETRLM_CPU");
        int best = 0; // the widest the CPU has, then the widest RETRLM_CPU allows
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) best = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
        if (cap && strcmp(cap, "avx2") == 0) best = RETRLM__MIN(best, 1);
        else if (cap && strcmp(cap, "build") == 0) best = 0;
        chosen = &k[best];
    }
    return chosen;
#else
    return &k[0];
#endif
}

RETRLM_API const char *retrlm_cpu_path(void) { return retrlm__gemm()->path; }

// The index's scans: GROUP(dst, row, ld) scores four rows from row on (ld 0: that row four
// times), four rows a call; the last few in one call of the last four rows (scored again: a
// row's bits do not depend on the rows beside it), or one at a time when there are fewer than
// four in all
#define RETRLM__SCAN_ROWS(out, m, ld, GROUP)                                                  \
    {                                                                                        \
        float o_[4];                                                                         \
        int i_ = 0;                                                                          \
        for (; i_ + 4 <= (m); i_ += 4) GROUP(out + i_, i_, ld);                              \
        if (i_ < (m) && (m) >= 4) {                                                          \
            GROUP(o_, (m) - 4, ld);                                                          \
            memcpy(out + i_, o_ + 4 - ((m) - i_), (size_t)((m) - i_) * sizeof(float));       \
        } else                                                                               \
            for (; i_ < (m); i_++) GROUP(o_, i_, 0), out[i_] = o_[0];                        \
    }
#define RETRLM__SCAN_F32_GROUP(dst, row, ld) k4(dst, q, x + (size_t)(row) * ldx, ld, d)
#define RETRLM__SCAN_SQ8_GROUP(dst, row, ld) k4(dst, q, step, c + (size_t)(row) * ldc, ld, d)

RETRLM__PRIVATE void retrlm__scan_f32(float *out, const float *q, const float *x, size_t ldx, int m, int d,
                                      int l2) {
    const retrlm__gemm_kernel *g = retrlm__gemm(); // fetched once a block
    void (*k4)(float *, const float *, const float *, size_t, int) = l2 ? g->scan4_l2 : g->dot4;
    RETRLM__SCAN_ROWS(out, m, ldx, RETRLM__SCAN_F32_GROUP)
}

RETRLM__PRIVATE void retrlm__scan_codes(float *out, const float *q, const float *step, const uint8_t *c,
                                        size_t ldc, int m, int d) {
    void (*k4)(float *, const float *, const float *, const uint8_t *, size_t, int) =
        retrlm__gemm()->scan4_sq8;
    RETRLM__SCAN_ROWS(out, m, ldc, RETRLM__SCAN_SQ8_GROUP)
}

// small M with the default layouts: each C element is one unit-stride dot product; this is the
// generation case (M = 1), bound by reading B once. Four rows of B at a time give four
// independent accumulators, so the loop is not bound by the latency of one FMA chain.
static void retrlm__matmul_rows(const retrlm__gemm_kernel *g, float *C, const float *A, const float *B,
                                const retrlm__mat *bq, const float *bias, int M, int N, int K,
                                int acc_c) {
    void (*dot4)(float *, const float *, const float *, size_t, int) = g->dot4;
    float (*dot)(const float *, const float *, int) = g->dot;
    // about 32 chunks: enough for a starved thread to hand work over, few enough to be cheap
    int nb, chunk = RETRLM__MAX(64, (N / 32 + 3) & ~3), nblocks = (N + chunk - 1) / chunk;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)K > 65536)
    for (nb = 0; nb < nblocks; nb++) {
        int n, m, n1 = RETRLM__MIN(N, nb * chunk + chunk);
        for (m = 0; m < M; m++) {
            const float *a = A + (size_t)m * K;
            float *c = C + (size_t)m * N, v[4];
            for (n = nb * chunk; n < n1; n += 4) {
                const float *b0 = bq ? NULL : B + (size_t)n * K;
                int j, rows = RETRLM__MIN(4, n1 - n);
                if (bq)
                    g->dot4_q8(v, a, bq->q + (size_t)n * K, bq->s + (size_t)n * bq->ss, (size_t)K,
                               K, rows);
                else if (rows == 4) dot4(v, a, b0, (size_t)K, K);
                else
                    for (j = 0; j < rows; j++) v[j] = dot(a, b0 + (size_t)j * K, K);
                for (j = 0; j < rows; j++) {
                    float x = v[j] + (bias ? bias[n + j] : 0.0f);
                    c[n + j] = acc_c ? c[n + j] + x : x;
                }
            }
        }
    }
}

// Packing space (floats) one thread of retrlm__matmul_ws uses at most: a caller that keeps
// retrlm__max_threads() times this (64-byte aligned) never makes the multiply allocate.
RETRLM__PRIVATE size_t retrlm__matmul_ws_floats(void) {
    return (size_t)(RETRLM__MR_MAX * RETRLM__MC_TILES + RETRLM__NR_MAX * RETRLM__NB_TILES) * RETRLM__KC;
}

RETRLM__PRIVATE size_t retrlm__round16(size_t n) { return (n + 15) & ~(size_t)15; }

// C (M, N) with row stride ldc = A·Bᵀ (+ bias) for the views a (M, K) and bt (N, K), M, N, K >
// 0, on at most max_threads threads (1: the way to call it from inside a parallel loop), with
// the packing buffers in ws (ws_floats floats, 64-byte aligned) when it is big enough for one
// thread, else in a buffer of its own. A smaller ws runs fewer threads; the result is the same.
// Every C element is summed over the KC slices in order and within one in order of k, whatever
// the tasks, blocks and threads: the same bits for any.
static retrlm_result retrlm__gemm_views(float *C, size_t ldc, retrlm__mat a, retrlm__mat bt,
                                        const float *bias, int M, int N, int K, int acc_c,
                                        int max_threads, float *ws, size_t ws_floats) {
    const retrlm__gemm_kernel *g = retrlm__gemm();
    const int MR = g->mr, NR = g->nr, MC = MR * RETRLM__MC_TILES;
    int MB = MR * RETRLM__MB_TILES, NB = NR * RETRLM__NB_TILES;
    // A is read in place, a row's kc floats at unit stride (row-major) or MR side by side in
    // each step (stored K x M), unless a step's stride is over 1024 floats (a 4 KB page): then
    // the micro-kernel's kc steps each touch a page of their own and, at strides of a power of
    // two, the lines of a few cache sets (an 8192-row Aᵀ, 32 KB a step, ran at 0.75 of packed),
    // and A is packed block by block. Packing A every time cost 15-20% of a training step at
    // dim 256: N / NB tasks each packed all of it.
    const int pack_a = a.sc > 1024;
    // the micro-kernel's A: element (r, p) at r * ars + p * aks from its first row, row ir of
    // the block, which is at ir * arow (below: kc where A is packed, MR rows of kc a panel)
    const size_t ars = pack_a ? 1 : a.sr, aks = pack_a ? (size_t)MR : a.sc;
    int mtasks, ntasks, tasks, nthreads, t;
    size_t per_thread, a_size;
    float *work;
    void *owned = NULL;
    // tasks as large as leave 4 a thread (the results do not depend on them; a thread slowed by
    // another process hands its last ones over); with A read in place, cutting N costs nothing
    // and cutting M packs B once more. B stored K x N: 2 a thread, as its packing is the slow
    // kind (passes down rows a page or more apart) and an M cut repeats it all: the LM head's dX
    // 256 x 256 x 8192 ran 8 tasks (2 M cuts x 4 N cuts) and packed all 8 MB of B twice, 40% of
    // its time; now 4 tasks, B packed once: 1.29x on an AVX2 Zen 3, 2 threads (the small
    // training step 1.05x). By K alone (2 a thread at K >= 2048) cost ffn down 256x768x3072 11%.
    const int per_thread_tasks = bt.sr == 1 && bt.sc != 1 ? 2 : 4;
    nthreads = max_threads;
    for (;;) {
        mtasks = (M + MB - 1) / MB;
        ntasks = (N + NB - 1) / NB;
        tasks = mtasks * ntasks;
        if (nthreads == 1 || tasks >= per_thread_tasks * nthreads || (MB <= MR * 8 && NB <= NR * 4)) break;
        if (NB > NR * 4 && (!pack_a || ntasks == 1 || NB >= MB || MB <= MR * 8)) NB /= 2;
        else MB /= 2;
    }
    nthreads = RETRLM__MIN(nthreads, tasks);
    { // packing buffers sized to this product, not to the largest task: small matmuls (the
      // model's many) then take a small allocation that malloc serves from its free lists
        size_t mc = (size_t)RETRLM__MIN(RETRLM__MIN(MC, MB), (M + MR - 1) / MR * MR);
        size_t nb = (size_t)RETRLM__MIN(NB, (N + NR - 1) / NR * NR);
        size_t kc = (size_t)RETRLM__MIN(RETRLM__KC, K);
        a_size = pack_a ? retrlm__round16(mc * kc) : 0; // panels start on a cache line
        per_thread = a_size + retrlm__round16(kc * nb);
    }
    if (ws && ws_floats >= per_thread) {
        nthreads = (int)RETRLM__MIN((size_t)nthreads, ws_floats / per_thread);
        work = ws;
    } else {
        work = (float *)retrlm__alloc_aligned((size_t)nthreads * per_thread, sizeof(float), &owned);
        if (!work) return retrlm__fail(RETRLM_ERR_NOMEM, "matmul: no memory for packing buffers");
    }

    // num_threads: a thread number indexes the packing buffers, so the team is no larger
    RETRLM__PARALLEL_FOR_N_IF(nthreads, nthreads > 1 && (double)M * N * K > 2e5)
    for (t = 0; t < tasks; t++) {
        int tid = 0;
        float *pa, *pb;
        const int m0 = (t / ntasks) * MB, n0 = (t % ntasks) * NB;
        const int mb = RETRLM__MIN(MB, M - m0), nb = RETRLM__MIN(NB, N - n0);
        int k0;
#ifdef RETRLM__OMP
        tid = omp_get_thread_num();
#endif
        pa = work + (size_t)tid * per_thread;
        pb = pa + a_size;
        for (k0 = 0; k0 < K; k0 += RETRLM__KC) {
            const int kc = RETRLM__MIN(RETRLM__KC, K - k0);
            int i0, ir, jr;
            retrlm__matmul_pack(pb, bt, N, n0, nb, k0, kc, NR);
            for (i0 = 0; i0 < mb; i0 += MC) {
                const int mc = RETRLM__MIN(MC, mb - i0);
                const float *ab = pack_a ? pa : a.p + (size_t)(m0 + i0) * a.sr + (size_t)k0 * a.sc;
                const size_t arow = pack_a ? (size_t)kc : a.sr;
                if (pack_a) retrlm__matmul_pack(pa, a, M, m0 + i0, mc, k0, kc, MR);
                for (jr = 0; jr < nb; jr += NR)
                    for (ir = 0; ir < mc; ir += MR)
                        g->micro(kc, ab + (size_t)ir * arow, ars, aks, pb + (size_t)jr * kc,
                                 C + (size_t)(m0 + i0 + ir) * ldc + (n0 + jr), ldc,
                                 RETRLM__MIN(MR, mc - ir), RETRLM__MIN(NR, nb - jr),
                                 bias ? bias + n0 + jr : NULL, k0 == 0, acc_c);
            }
        }
    }
    RETRLM_FREE(owned);
    return RETRLM_OK;
}

// retrlm_matmul with the packing buffers in ws as retrlm__gemm_views'. bq: B is int8 rows (N,
// K) instead (B NULL, no RETRLM_MATMUL_B_KN).
static retrlm_result retrlm__matmul_any(float *C, const float *A, const float *B,
                                        const retrlm__mat *bq, const float *bias, int M, int N,
                                        int K, int flags, float *ws, size_t ws_floats) {
    retrlm__mat a, bt;
    const int acc_c = (flags & RETRLM_MATMUL_ACCUMULATE) != 0;
    int t;
    RETRLM_ASSERT(M >= 0 && N >= 0 && K >= 0 && (flags & ~7) == 0);
    if (M == 0 || N == 0) return RETRLM_OK;
    RETRLM_ASSERT(C && (K == 0 || (A && (B || bq))) && (!bq || !(flags & RETRLM_MATMUL_B_KN)));
    if (K == 0) {
        for (t = 0; t < M; t++) {
            float *c = C + (size_t)t * N;
            int n;
            for (n = 0; n < N; n++) c[n] = (acc_c ? c[n] : 0.0f) + (bias ? bias[n] : 0.0f);
        }
        return RETRLM_OK;
    }
    if (M < retrlm__gemm()->mr && !(flags & (RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN))) {
        retrlm__matmul_rows(retrlm__gemm(), C, A, B, bq, bias, M, N, K, acc_c);
        return RETRLM_OK;
    }
    // views: A as (M,K), Bᵀ as (N,K); both are packed the same way
    memset(&a, 0, sizeof a);
    memset(&bt, 0, sizeof bt);
    a.p = A;
    if (flags & RETRLM_MATMUL_A_KM) { a.sr = 1; a.sc = (size_t)M; }
    else { a.sr = (size_t)K; a.sc = 1; }
    bt.p = B;
    if (flags & RETRLM_MATMUL_B_KN) { bt.sr = 1; bt.sc = (size_t)N; }
    else { bt.sr = (size_t)K; bt.sc = 1; }
    if (bq) bt = *bq;
    return retrlm__gemm_views(C, (size_t)N, a, bt, bias, M, N, K, acc_c, retrlm__max_threads(), ws,
                              ws_floats);
}

// C (M, N), row stride ldc, = A·Bᵀ (C += with acc) for operands given by strides: A's element
// (m, k) is A[m * as_m + k * as_k], Bᵀ's (n, k) is B[n * bs_n + k * bs_k] (a head's slice of
// activations, a transposed score matrix: attention's products); one of each operand's two
// strides is 1 (the packing reads along it). One thread: callers run it inside their own
// parallel loops. ws as retrlm__gemm_views'; with one thread's retrlm__matmul_ws_floats() it
// never allocates, so it cannot fail.
RETRLM__PRIVATE retrlm_result retrlm__matmul_strided(float *C, size_t ldc, const float *A, size_t as_m,
                                                     size_t as_k, const float *B, size_t bs_n,
                                                     size_t bs_k, int M, int N, int K, int acc,
                                                     float *ws, size_t ws_floats) {
    retrlm__mat a, bt;
    memset(&a, 0, sizeof a);
    memset(&bt, 0, sizeof bt);
    RETRLM_ASSERT((as_m == 1 || as_k == 1) && (bs_n == 1 || bs_k == 1));
    a.p = A, a.sr = as_m, a.sc = as_k;
    bt.p = B, bt.sr = bs_n, bt.sc = bs_k;
    if (M <= 0 || N <= 0 || K <= 0) {
        int m, n;
        for (m = 0; m < M; m++)
            for (n = 0; n < N && !acc; n++) C[(size_t)m * ldc + n] = 0.0f;
        return RETRLM_OK;
    }
    return retrlm__gemm_views(C, ldc, a, bt, NULL, M, N, K, acc, 1, ws, ws_floats);
}

RETRLM__PRIVATE retrlm_result retrlm__matmul_ws(float *C, const float *A, const float *B,
                                                const float *bias, int M, int N, int K, int flags,
                                                float *ws, size_t ws_floats) {
    return retrlm__matmul_any(C, A, B, NULL, bias, M, N, K, flags, ws, ws_floats);
}

RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags) {
    return retrlm__matmul_any(C, A, B, NULL, bias, M, N, K, flags, NULL, 0);
}

// ---------------------------------------------------------------------------------------------
// int8 weights: rows of K weights in groups of RETRLM__Q8_GROUP, each group one float scale d =
// max |w| / 127 and the int8 q = round(w / d) (llama.cpp's Q8_0, with a float scale)

RETRLM__PRIVATE size_t retrlm__q8_groups(int K) {
    return ((size_t)K + RETRLM__Q8_GROUP - 1) / RETRLM__Q8_GROUP;
}

RETRLM__PRIVATE void retrlm__q8_quantize(int8_t *q, float *s, const float *w, size_t rows, int K) {
    const size_t G = retrlm__q8_groups(K);
    size_t r;
    for (r = 0; r < rows; r++) {
        size_t g;
        for (g = 0; g < G; g++) {
            const float *x = w + r * (size_t)K + g * RETRLM__Q8_GROUP;
            int8_t *y = q + r * (size_t)K + g * RETRLM__Q8_GROUP;
            int n = (int)RETRLM__MIN((size_t)RETRLM__Q8_GROUP, (size_t)K - g * RETRLM__Q8_GROUP), i;
            float mx = 0.0f, d;
            for (i = 0; i < n; i++) mx = RETRLM__MAX(mx, fabsf(x[i]));
            d = mx / 127.0f;
            s[r * G + g] = d;
            for (i = 0; i < n; i++) {
                float v = d > 0.0f ? x[i] / d : 0.0f; // |v| <= 127; NaN weights become 0
                y[i] = (int8_t)(v == v ? (v < 0.0f ? -(int)(-v + 0.5f) : (int)(v + 0.5f)) : 0);
            }
        }
    }
}

// out (K) = row of int8 weights q with its scales s, dequantized
RETRLM__PRIVATE void retrlm__q8_row(float *out, const int8_t *q, const float *s, int K) {
    int i;
    for (i = 0; i < K; i++) out[i] = s[i / RETRLM__Q8_GROUP] * (float)q[i];
}

// C (M, N) = A (M, K) times the transpose of the int8 rows (N, K) q with scales s; flags as
// retrlm_matmul's but RETRLM_MATMUL_B_KN. One-row products read the int8 weights directly
// (generation: four times fewer bytes than f32), larger ones dequantize them as they pack.
RETRLM__PRIVATE retrlm_result retrlm__matmul_q8_ws(float *C, const float *A, const int8_t *q,
                                                   const float *s, int M, int N, int K, int flags,
                                                   float *ws, size_t ws_floats) {
    retrlm__mat b;
    memset(&b, 0, sizeof b);
    b.q = q;
    b.s = s;
    b.sr = (size_t)K;
    b.sc = 1;
    b.ss = retrlm__q8_groups(K);
    return retrlm__matmul_any(C, A, NULL, &b, NULL, M, N, K, flags, ws, ws_floats);
}

#if defined(__clang__)
#pragma float_control(pop)
#endif
