/* ---- kernels: the hot loops every module shares -------------------------------------------
   Vectors are float arrays of n elements (n >= 0). With OpenMP the larger kernels split work
   over independent outputs, so each output is computed by one thread in a fixed order and
   results are identical for any OMP_NUM_THREADS. */

/* The kernel path this process runs: the instruction set, the matmul register tile, and whether
   OpenMP is on, as a string constant, e.g. "avx2+fma, matmul tile 6x16, OpenMP" for a build with
   -march=haswell. On x86-64 with GCC or Clang a build for plain x86-64 (the README's `cc -O2`)
   chooses the matmul micro-kernel at run time: AVX-512 or AVX2+FMA when the CPU (and OS) have
   them ("avx512f (chosen at run time; built for x86-64 SSE2), matmul tile 8x32, no OpenMP"), else
   its SSE2 4x8 one; define RETRLM_NO_DISPATCH to keep the build's own. The environment variable
   RETRLM_CPU, read at the first multiply, caps the choice: "avx2" (no AVX-512 kernels, e.g. to
   measure what an AVX2 machine would run), "build" (the build's own); anything else, or unset,
   lets the CPU decide. It cannot choose what the CPU lacks. The other vector kernels
   (dot, distances, softmax) run as compiled. Results are identical for any thread count within
   one path. Between paths they differ in the last bits: the AVX2+FMA and AVX-512 kernels (the
   matmul's tiles and one-row products, and retrlm_dot in builds for such CPUs) multiply and add
   in one FMA instruction (one rounding), the others in two. Benches print it. */
RETRLM_API const char *retrlm_cpu_path(void);

RETRLM_API float retrlm_dot(const float *a, const float *b, int n);       /* sum a[i]*b[i] */
RETRLM_API void  retrlm_axpy(float *y, float alpha, const float *x, int n); /* y += alpha*x */
RETRLM_API void  retrlm_scale(float *x, float alpha, int n);               /* x *= alpha */
/* out = softmax(x), max-subtracted; out may be x. If every x is -inf, out is uniform. The
   exponentials are within 1 ulp of expf; a term under e^-87.3 of the largest is 0. */
RETRLM_API void  retrlm_softmax(float *out, const float *x, int n);
/* out = log softmax(x) = x - logsumexp(x); out may be x. */
RETRLM_API void  retrlm_log_softmax(float *out, const float *x, int n);
/* log(sum exp(x)), max-subtracted; -inf for n == 0 or when every x is -inf. */
RETRLM_API float retrlm_logsumexp(const float *x, int n);

/* ---- top-k: the k best (id, score) pairs of a stream, in caller buffers.
   Higher score is better (negate distances); ties go to the smaller id; NaN scores are never
   kept. A bounded heap: O(log k) per accepted push, O(1) per rejected one. */
typedef struct retrlm_topk {
    int      k;      /* capacity */
    int      n;      /* pairs held, <= k */
    int64_t *ids;    /* (k) borrowed; heap order until retrlm_topk_sort */
    float   *scores; /* (k) borrowed */
} retrlm_topk;

RETRLM_API void retrlm_topk_init(retrlm_topk *h, int k, int64_t *ids, float *scores); /* borrows */
RETRLM_API void retrlm_topk_push(retrlm_topk *h, int64_t id, float score);
/* Sorts best first (score descending, id ascending) and returns n. The heap is spent: init
   again before the next push. */
RETRLM_API int  retrlm_topk_sort(retrlm_topk *h);
/* The k best of scores[0..n) by index: ids (k), out_scores (k) may be NULL; returns how many
   were written, min(k, number of non-NaN scores). */
RETRLM_API int  retrlm_topk_select(const float *scores, int n, int k, int64_t *ids,
                                   float *out_scores);

/* ---- matrix multiply: C (M,N) = A·Bᵀ (+ bias), blocked, packed and register-tiled.
   Default layouts are the transformer's: A (M,K) row-major (activations), B (N,K) row-major
   (a weight stored (out, in)), bias (N) or NULL. Flags choose the other layouts the backward
   pass needs:
     RETRLM_MATMUL_A_KM        A is stored (K,M): C = Aᵀ·Bᵀ     (dW = doutᵀ · inp)
     RETRLM_MATMUL_B_KN        B is stored (K,N): C = A·B       (dinp = dout · W)
     RETRLM_MATMUL_ACCUMULATE  C += product instead of C = product
   Returns RETRLM_ERR_NOMEM if its packing space (at most 1.2 MB a thread) cannot
   be had; M, N, K >= 0 and C must not overlap A, B or bias. */
#define RETRLM_MATMUL_A_KM 1
#define RETRLM_MATMUL_B_KN 2
#define RETRLM_MATMUL_ACCUMULATE 4
RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags);
