// bench/matmul - retrlm_matmul against OpenBLAS cblas_sgemm on transformer shapes, 1 and 2
// threads, same data, same run; the one-row case (generation) against cblas_sgemv.
//   make bench-matmul              (OpenBLAS found by bench/peers.sh; missing: retrlm only)
// OpenBLAS runs in child processes of this program (itself, with --blas-only CASE), never beside
// retrlm's OpenMP threads in one process, where each runtime's waiting threads would spin on the
// cores the other needs: once as the environment has it (OpenBLAS picks its kernels for this CPU,
// or OPENBLAS_CORETYPE says which), and, on a CPU with AVX-512 when that child ran other kernels,
// once more with OPENBLAS_CORETYPE=SkylakeX (its AVX-512 ones). The line after the table's head
// names the kernels each child ran. To stand in for an AVX2 machine on an AVX-512 one: build with
// -march=haswell and run with OPENBLAS_CORETYPE=Haswell.
// Each figure is timed BENCH_ROUNDS times (default 3), retrlm and a fresh OpenBLAS child
// alternating, so that the host's drift (seen here: the same product 30% apart a minute later)
// falls on both alike; each round is the median of 5 timed repetitions, and the ratio printed is
// the median of the rounds' ratios. Prints a table, then name=value lines.
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

// cases: each shape on 1 and 2 threads, then the one-row shapes on 1 and 2 threads
#define NGEMV 3
#define NCASES (NSHAPES * 2 + NGEMV * 2)
#define MAX_ROUNDS 15

#ifdef RETRLM_BENCH_OPENBLAS
// OpenMP's thread count and OpenBLAS's (which only a --blas-only child calls)
static void set_all_threads(int n) {
    set_threads(n);
    openblas_set_num_threads(n);
}

// runs this program as an OpenBLAS child under env (a shell assignment, or "") for case c: its
// kernels' name into core, its figure (seconds of one call) into *v; 0 when it could not run
static int blas_child(const char *self, const char *env, int c, char *core, size_t ncore, double *v) {
    char cmd[4300], line[256];
    FILE *p;
    int ok = 0;
    snprintf(cmd, sizeof cmd, "%s '%s' --blas-only %d", env, self, c);
    if (!(p = popen(cmd, "r"))) return 0;
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        line[ncore - 1 < sizeof line - 1 ? ncore - 1 : sizeof line - 1] = 0; // fits in core
        memcpy(core, line, strlen(line) + 1);
        ok = fgets(line, sizeof line, p) && (*v = atof(line)) > 0;
    }
    pclose(p);
    return ok;
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

// the speed of one call taking sec seconds: GFLOP/s, or for a one-row case GB/s of B read (0: none)
static double speed(const shape *s, int one_row, double sec) {
    if (sec <= 0) return 0.0;
    return one_row ? 4.0 * s->N * s->K / sec / 1e9 : 2.0 * s->M * s->N * s->K / sec / 1e9;
}

static const shape gemv[NGEMV] = {{1, 768, 768, 0, "gemv 768x768"},
                                  {1, 3072, 768, 0, "gemv ffn 3072x768"},
                                  {1, 32000, 288, 0, "gemv logits 32000x288"}};

// case c's shape, and its thread count into *th
static const shape *case_shape(int c, int *th) {
    *th = c % 2 + 1;
    return c < NSHAPES * 2 ? &shapes[c / 2] : &gemv[c / 2 - NSHAPES];
}

// median of the first n of v; of the ratios num[i] / den[i] where both are > 0 (0: none)
static double median_of(const double *v, int n) {
    double t[MAX_ROUNDS];
    memcpy(t, v, (size_t)n * sizeof *t);
    return bench_median(t, n);
}
static double median_ratio(const double *num, const double *den, int n) {
    double t[MAX_ROUNDS];
    int i, m = 0;
    for (i = 0; i < n; i++)
        if (num[i] > 0 && den[i] > 0) t[m++] = num[i] / den[i];
    return m ? bench_median(t, m) : 0.0;
}

int main(int argc, char **argv) {
    const char *env_rounds = getenv("BENCH_ROUNDS");
    int rounds = env_rounds ? atoi(env_rounds) : 3, c, r, k, th, have[2] = {0, 0}, want[2] = {1, 0};
    size_t maxa = 0, maxb = 0, maxc = 0;
    float *A, *B, *C;
    retrlm_rng rng;
    double ratio_sum[3] = {0, 0, 0}, ratio_min[3] = {1e9, 1e9, 1e9};
    // seconds of one call: retrlm's, and OpenBLAS's children's (as the environment has it, and
    // with its AVX-512 kernels), case by case, round by round
    static double rt[NCASES][MAX_ROUNDS], bt[2][NCASES][MAX_ROUNDS];
    int ratio_n[3] = {0, 0, 0};
    char core[2][64] = {"", ""};
    if (rounds < 1) rounds = 1;
    if (rounds > MAX_ROUNDS) rounds = MAX_ROUNDS;
    for (c = 0; c < NCASES; c++) {
        const shape *s = case_shape(c, &th);
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
    if (argc > 2 && !strcmp(argv[1], "--blas-only")) { // a child: its kernels' name, then seconds
        const shape *s;
        c = atoi(argv[2]);
        if (c < 0 || c >= NCASES) return 1;
        s = case_shape(c, &th);
        set_all_threads(th);
        printf("%s\n%.9f\n", openblas_get_corename(), timeit(run_blas, s, A, B, C));
        return 0;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    want[1] = __builtin_cpu_supports("avx512f"); // and the first child ran other kernels: below
#endif
#else
    (void)argc, (void)argv, (void)want, (void)core;
#endif
    bench_machine();
#ifdef RETRLM_BENCH_OPENBLAS
    printf("OpenBLAS in a process of its own for each figure, alternating with retrlm: %d rounds\n", rounds);
#else
    printf("OpenBLAS not found (Debian: apt-get install libopenblas-dev): measuring retrlm only\n");
#endif
    printf("GFLOP/s (one row: GB/s of B read), the median of %d rounds, each the median of 5 timed\n"
           "repetitions; ratio: the median of the rounds' ratios (retrlm / OpenBLAS speed)\n", rounds);
    printf("%-21s %5s %5s %5s | %3s | %8s %8s %6s | %8s %6s\n", "shape", "M", "N", "K", "thr",
           "retrlm", "openblas", "ratio", "blasSKX", "ratio");
    for (c = 0; c < NCASES; c++) {
        const shape *s = case_shape(c, &th);
        const int one_row = c >= NSHAPES * 2;
        double rm, bm[2], ratio[2];
        for (r = 0; r < rounds; r++) {
            set_threads(th);
            rt[c][r] = timeit(run_retrlm, s, A, B, C);
#ifdef RETRLM_BENCH_OPENBLAS
            for (k = 0; k < 2; k++) {
                if (!want[k]) continue;
                if (blas_child(argv[0], k ? "OPENBLAS_CORETYPE=SkylakeX" : "", c, core[k], sizeof core[k], &bt[k][c][r]))
                    have[k] = 1;
                if (k == 0 && c == 0 && r == 0 && (!have[0] || strstr(core[0], "SkylakeX") ||
                                                   strstr(core[0], "Cooperlake") || strstr(core[0], "SapphireRapids")))
                    want[1] = 0; // OpenBLAS missing, or it already ran its AVX-512 kernels
            }
#endif
        }
        if (c == 0) {
            if (!have[0]) printf("(OpenBLAS did not run: measuring retrlm only)\n");
            else printf("(OpenBLAS kernels: %s%s%s)\n", core[0], have[1] ? "; and " : "", have[1] ? core[1] : "");
        }
        if (c == NSHAPES * 2) printf("one row (generation): GB/s of B read\n");
        rm = median_of(rt[c], rounds);
        for (k = 0; k < 2; k++) {
            bm[k] = median_of(bt[k][c], rounds);
            ratio[k] = median_ratio(bt[k][c], rt[c], rounds);
        }
        printf("%-21s %5d %5d %5d | %3d | %8.1f %8.1f %6.2f | %8.1f %6.2f\n", s->what, s->M, s->N, s->K, th,
               speed(s, one_row, rm), speed(s, one_row, bm[0]), ratio[0], speed(s, one_row, bm[1]), ratio[1]);
        if (one_row) {
            printf("gemv.%dx%d.t%d.retrlm_gbs=%.2f\n", s->N, s->K, th, speed(s, 1, rm));
            if (ratio[0] > 0) printf("gemv.%dx%d.t%d.ratio_vs_openblas=%.2f\n", s->N, s->K, th, ratio[0]);
            continue;
        }
        printf("matmul.%dx%dx%d.f%d.t%d.retrlm_gflops=%.1f\n", s->M, s->N, s->K, s->flags, th, speed(s, 0, rm));
        if (ratio[0] > 0) {
            printf("matmul.%dx%dx%d.f%d.t%d.openblas_gflops=%.1f\n", s->M, s->N, s->K, s->flags, th, speed(s, 0, bm[0]));
            printf("matmul.%dx%dx%d.f%d.t%d.ratio_vs_openblas=%.2f\n", s->M, s->N, s->K, s->flags, th, ratio[0]);
            ratio_sum[th] += ratio[0];
            ratio_n[th]++;
            if (ratio[0] < ratio_min[th]) ratio_min[th] = ratio[0];
        }
    }
    for (th = 1; th <= 2; th++)
        if (ratio_n[th]) {
            printf("matmul.t%d.mean_ratio_vs_openblas=%.3f\n", th, ratio_sum[th] / ratio_n[th]);
            printf("matmul.t%d.min_ratio_vs_openblas=%.2f\n", th, ratio_min[th]);
        }
    free(A);
    free(B);
    free(C);
    return 0;
}
