// bench/dispatch - the matmul as a user's build runs it: `make bench-dispatch` builds this file
// four ways and bench/dispatch.sh runs them in turn, five rounds (the host's drift then falls on
// every build alike), on the same shapes, one thread, best of 7 runs (101 for one row) a round,
// and prints the medians and the ratios:
//   plain        cc -std=c99 -O2 (the README's line): chooses its micro-kernel at run time
//                (run twice: as it chooses, and with RETRLM_CPU=avx2 as an AVX2 CPU would)
//   no-dispatch  the same with -DRETRLM_NO_DISPATCH: the build's own kernel (SSE2 4x8 on x86-64)
//   native       the benches' flags (-O3 -march=native -fopenmp, on 1 thread)
//   haswell      the benches' flags with -march=haswell (AVX2+FMA), against plain with avx2
// Then the index's scans, as built the same ways: a flat index of 16,384 random vectors of 256
// dimensions searched one query at a time (the row kernels IVF lists use too), f32 and SQ8, inner
// product and L2, queries/s, best of 7 runs of 100 queries.
// Usage: build/bench/dispatch LABEL (the label names the build in the output)
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"

int main(int argc, char **argv) {
    static const int shapes[6][3] = {{512, 768, 768}, {256, 3072, 768}, {64, 768, 768}, {1024, 8192, 256},
                                    {1, 3072, 768}, {1, 32000, 288}}; // the last two: one row (generation)
    const char *label = argc > 1 ? argv[1] : "this";
    int s, r;
    size_t i;
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    bench_machine();
    printf("%-12s %s\n", label, retrlm_cpu_path());
    for (s = 0; s < 6; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = (float *)malloc(sizeof(float) * M * K), *B = (float *)malloc(sizeof(float) * N * K),
              *C = (float *)malloc(sizeof(float) * M * N);
        double best = 1e30, t;
        retrlm_rng rng;
        if (!A || !B || !C) return 1;
        retrlm_rng_seed(&rng, 1);
        for (i = 0; i < (size_t)M * K; i++) A[i] = retrlm_rng_float(&rng) - 0.5f;
        for (i = 0; i < (size_t)N * K; i++) B[i] = retrlm_rng_float(&rng) - 0.5f;
        for (r = 0; r < (M == 1 ? 101 : 7); r++) {
            t = retrlm_time_seconds();
            if (retrlm_matmul(C, A, B, NULL, M, N, K, 0)) return 1;
            t = retrlm_time_seconds() - t;
            if (t < best) best = t;
        }
        printf("%-12s %5dx%dx%-5d %7.1f GFLOP/s\n", label, M, N, K, 2.0 * M * N * K / best / 1e9);
        printf("dispatch.%s.%dx%dx%d_gflops=%.1f\n", label, M, N, K, 2.0 * M * N * K / best / 1e9);
        free(A), free(B), free(C);
    }
    for (s = 0; s < 4; s++) { // the index's scans: f32 ip, f32 l2, sq8 ip, sq8 l2
        enum { N = 16384, D = 256, Q = 100 };
        const char *name[4] = {"scan_f32_ip", "scan_f32_l2", "scan_sq8_ip", "scan_sq8_l2"};
        float *x = (float *)malloc(sizeof(float) * N * D), sc[10];
        int64_t ids[10];
        double best = 1e30, t;
        retrlm_index ix;
        retrlm_index_config c;
        retrlm_rng rng;
        int q;
        memset(&c, 0, sizeof c);
        c.dim = D, c.metric = s & 1 ? RETRLM_METRIC_L2 : RETRLM_METRIC_IP;
        c.storage = s & 2 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
        retrlm_rng_seed(&rng, 2);
        if (!x) return 1;
        for (i = 0; i < (size_t)N * D; i++) x[i] = retrlm_rng_float(&rng) - 0.5f;
        if (retrlm_index_init(&ix, &c) || (s & 2 && retrlm_index_train(&ix, x, N, D)) ||
            retrlm_index_add(&ix, x, N, D, NULL))
            return 1;
        for (r = 0; r < 7; r++) {
            t = retrlm_time_seconds();
            for (q = 0; q < Q; q++)
                if (retrlm_index_search(&ix, x + (size_t)q * 97 * D, 1, D, 10, NULL, ids, sc)) return 1;
            t = retrlm_time_seconds() - t;
            if (t < best) best = t;
        }
        printf("%-12s %s %dx%d %7.1f queries/s\n", label, name[s], N, D, Q / best);
        printf("dispatch.%s.%s_%dx%d_qps=%.1f\n", label, name[s], N, D, Q / best);
        retrlm_index_free(&ix);
        free(x);
    }
    return 0;
}
