// bench/matmul - retrlm_matmul against OpenBLAS cblas_sgemm on transformer shapes, 1 and 2
// threads, same data, same run; the one-row case (generation) against cblas_sgemv.
//   make bench-matmul              (OpenBLAS found by bench/peers.sh; missing: retrlm only)
// OpenBLAS runs in child processes of this program (itself, with --blas-only), never beside
// retrlm's OpenMP threads in one process, where each runtime's waiting threads would spin on the
// cores the other needs: once as the environment has it (OpenBLAS picks its kernels for this CPU,
// or OPENBLAS_CORETYPE says which: this machine's environment sets Haswell), and, on a CPU with
// AVX-512 when that child ran other kernels, once more with OPENBLAS_CORETYPE=SkylakeX (its
// AVX-512 ones). The first line names the kernels each child ran. To stand in for an AVX2 machine
// on an AVX-512 one: build with -march=haswell and run with OPENBLAS_CORETYPE=Haswell.
// Prints a table, then name=value lines. Figures are medians of 5 timed repetitions.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"
#ifdef RETRLM_BENCH_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif

typedef struct shape { int M, N, K, flags; const char *what; } shape;
static const shape shapes[] = {
    {256, 768, 768, 0, "attn proj 768"},      {256, 2304, 768, 0, "qkv 768"},
    {256, 3072, 768, 0, "ffn up 768"},        {256, 768, 3072, 0, "ffn down 768"},
    {1024, 768, 768, 0, "attn proj 768"},     {1024, 3072, 768, 0, "ffn up 768"},
    {1024, 768, 3072, 0, "ffn down 768"},     {512, 256, 256, 0, "proj 256"},
    {1024, 8192, 256, 0, "logits V=8192"},    {1024, 768, 3072, RETRLM_MATMUL_B_KN, "dinp (B_KN)"},
    {768, 3072, 1024, RETRLM_MATMUL_A_KM, "dweight (A_KM)"},
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

#define NBLAS (NSHAPES * 2 + 3 * 2) // a child's figures: the shapes, then the one-row ones, 1 and 2 threads

#ifdef RETRLM_BENCH_OPENBLAS
// OpenMP's thread count and OpenBLAS's (which only a --blas-only child calls)
static void set_all_threads(int n) {
    set_threads(n);
    openblas_set_num_threads(n);
}

// runs this program as an OpenBLAS child under env (a shell assignment, or ""): its kernels'
// name into core, its figures (GFLOP/s for the shapes, seconds for the one-row ones) into v;
// 0 when it could not run
static int blas_child(const char *self, const char *env, char *core, size_t ncore, double *v) {
    char cmd[4300], line[256];
    FILE *p;
    int i;
    snprintf(cmd, sizeof cmd, "%s '%s' --blas-only", env, self);
    if (!(p = popen(cmd, "r"))) return 0;
    if (!fgets(line, sizeof line, p)) {
        pclose(p);
        return 0;
    }
    line[strcspn(line, "\n")] = 0;
    line[ncore - 1 < sizeof line - 1 ? ncore - 1 : sizeof line - 1] = 0; // fits in core
    memcpy(core, line, strlen(line) + 1);
    for (i = 0; i < NBLAS; i++) v[i] = fgets(line, sizeof line, p) ? atof(line) : 0.0;
    pclose(p);
    return 1;
}
#endif

// median seconds of one call over 5 repetitions, each long enough to time
typedef void (*run_fn)(const shape *s, const float *A, const float *B, float *C);
static double timeit(run_fn fn, const shape *s, const float *A, const float *B, float *C) {
    double t[5];
    int rep, iters = 1, i;
    double t0 = retrlm_time_seconds();
    fn(s, A, B, C); // warm up, and size the repetition
    t0 = retrlm_time_seconds() - t0;
    if (t0 < 0.05) iters = (int)(0.05 / (t0 + 1e-9)) + 1;
    for (rep = 0; rep < 5; rep++) {
        double a = retrlm_time_seconds();
        for (i = 0; i < iters; i++) fn(s, A, B, C);
        t[rep] = (retrlm_time_seconds() - a) / iters;
    }
    return bench_median(t, 5);
}

static void run_retrlm(const shape *s, const float *A, const float *B, float *C) {
    if (retrlm_matmul(C, A, B, NULL, s->M, s->N, s->K, s->flags)) {
        fprintf(stderr, "retrlm_matmul: %s\n", retrlm_last_error());
        exit(1);
    }
}

#ifdef RETRLM_BENCH_OPENBLAS
static void run_blas(const shape *s, const float *A, const float *B, float *C) {
    // the same product in BLAS terms: C (M,N) = op(A) op(B), row-major
    int ta = (s->flags & RETRLM_MATMUL_A_KM) != 0, tb = (s->flags & RETRLM_MATMUL_B_KN) != 0;
    if (s->M == 1 && !ta && !tb)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, s->N, s->K, 1.0f, B, s->K, A, 1, 0.0f, C, 1);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasNoTrans : CblasTrans,
                    s->M, s->N, s->K, 1.0f, A, ta ? s->M : s->K, B, tb ? s->N : s->K, 0.0f, C, s->N);
}
#endif

static double gflops(const shape *s, double sec) { return 2.0 * s->M * s->N * s->K / sec / 1e9; }

int main(int argc, char **argv) {
    static const shape gemv[] = {{1, 768, 768, 0, "gemv 768x768"},
                                 {1, 3072, 768, 0, "gemv ffn 3072x768"},
                                 {1, 32000, 288, 0, "gemv logits 32000x288"}};
    int blas_only = argc > 1 && !strcmp(argv[1], "--blas-only"), si, th, have[2] = {0, 0};
    size_t maxa = 0, maxb = 0, maxc = 0;
    float *A, *B, *C;
    retrlm_rng rng;
    double ratio_sum[3] = {0, 0, 0}, bv[2][NBLAS];
    int ratio_n[3] = {0, 0, 0};
    char core[2][64] = {"", ""};
    memset(bv, 0, sizeof bv);
    for (si = 0; si < NSHAPES + 3; si++) {
        const shape *s = si < NSHAPES ? &shapes[si] : &gemv[si - NSHAPES];
        if ((size_t)s->M * s->K > maxa) maxa = (size_t)s->M * s->K;
        if ((size_t)s->N * s->K > maxb) maxb = (size_t)s->N * s->K;
        if ((size_t)s->M * s->N > maxc) maxc = (size_t)s->M * s->N;
    }
    // 64-byte aligned, as the library's own arrays are: a 64-byte load that straddles two cache
    // lines costs up to half the one-row kernel's speed
    if (posix_memalign((void **)&A, 64, maxa * sizeof(float)) || posix_memalign((void **)&B, 64, maxb * sizeof(float)) ||
        posix_memalign((void **)&C, 64, maxc * sizeof(float))) return 1;
    retrlm_rng_seed(&rng, 1);
    for (size_t i = 0; i < maxa; i++) A[i] = retrlm_rng_float(&rng) - 0.5f;
    for (size_t i = 0; i < maxb; i++) B[i] = retrlm_rng_float(&rng) - 0.5f;

#ifdef RETRLM_BENCH_OPENBLAS
    if (blas_only) { // a child: its kernels' name, then one figure per line
        printf("%s\n", openblas_get_corename());
        for (si = 0; si < NSHAPES; si++)
            for (th = 1; th <= 2; th++) {
                set_all_threads(th);
                printf("%.2f\n", gflops(&shapes[si], timeit(run_blas, &shapes[si], A, B, C)));
            }
        for (si = 0; si < 3; si++)
            for (th = 1; th <= 2; th++) {
                set_all_threads(th);
                printf("%.9f\n", timeit(run_blas, &gemv[si], A, B, C));
            }
        return 0;
    }
    bench_machine();
    have[0] = blas_child(argv[0], "", core[0], sizeof core[0], bv[0]);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have[0] && !strstr(core[0], "SkylakeX") && !strstr(core[0], "Cooperlake") &&
        !strstr(core[0], "SapphireRapids") && __builtin_cpu_supports("avx512f"))
        have[1] = blas_child(argv[0], "OPENBLAS_CORETYPE=SkylakeX", core[1], sizeof core[1], bv[1]);
#endif
    if (!have[0]) printf("OpenBLAS did not run: measuring retrlm only\n");
    else printf("OpenBLAS kernels: %s%s%s (each in a process of its own)\n", core[0],
                have[1] ? "; and " : "", have[1] ? core[1] : "");
#else
    (void)blas_only, (void)have, (void)core;
    bench_machine();
    printf("OpenBLAS not found (Debian: apt-get install libopenblas-dev): measuring retrlm only\n");
#endif
    printf("GFLOP/s, median of 5; C (M,N) = A·Bᵀ unless noted\n");
    printf("%-16s %5s %5s %5s | %3s | %8s %8s %6s | %8s %6s\n", "shape", "M", "N", "K", "thr",
           "retrlm", "openblas", "ratio", "blasSKX", "ratio");
    for (si = 0; si < NSHAPES; si++) {
        const shape *s = &shapes[si];
        for (th = 1; th <= 2; th++) {
            double r, b = bv[0][si * 2 + th - 1], x = bv[1][si * 2 + th - 1];
            set_threads(th);
            r = gflops(s, timeit(run_retrlm, s, A, B, C));
            printf("%-16s %5d %5d %5d | %3d | %8.1f %8.1f %6.2f | %8.1f %6.2f\n", s->what, s->M, s->N,
                   s->K, th, r, b, b > 0 ? r / b : 0, x, x > 0 ? r / x : 0);
            printf("matmul.%dx%dx%d.f%d.t%d.retrlm_gflops=%.1f\n", s->M, s->N, s->K, s->flags, th, r);
            if (b > 0) {
                printf("matmul.%dx%dx%d.f%d.t%d.openblas_gflops=%.1f\n", s->M, s->N, s->K, s->flags, th, b);
                ratio_sum[th] += r / b;
                ratio_n[th]++;
            }
        }
    }
    printf("\none row (generation), GB/s of B read\n");
    for (si = 0; si < 3; si++) {
        const shape *s = &gemv[si];
        for (th = 1; th <= 2; th++) {
            double r, b = bv[0][NSHAPES * 2 + si * 2 + th - 1], bytes = 4.0 * s->N * s->K;
            set_threads(th);
            r = timeit(run_retrlm, s, A, B, C);
            printf("%-24s thr %d | retrlm %6.1f GB/s | sgemv %6.1f GB/s | ratio %.2f\n", s->what, th,
                   bytes / r / 1e9, b > 0 ? bytes / b / 1e9 : 0, b > 0 ? b / r : 0);
            printf("gemv.%dx%d.t%d.retrlm_gbs=%.2f\n", s->N, s->K, th, bytes / r / 1e9);
        }
    }
    for (th = 1; th <= 2; th++)
        if (ratio_n[th]) printf("matmul.t%d.mean_ratio_vs_openblas=%.3f\n", th, ratio_sum[th] / ratio_n[th]);
    free(A);
    free(B);
    free(C);
    return 0;
}
