// bench/train.c - a transformer training step (forward, loss, backward, AdamW) in tokens/s and
// GFLOP/s at two shapes, batch 4 x 64 and 4 x 256, on 1 and 2 threads, with OpenBLAS sgemm
// GFLOP/s beside each row (the ceiling; measured in a child process, so that the two
// thread runtimes never share one; OPENBLAS_CORETYPE from the environment applies to it);
// generation is bench/generate.c's. FLOPs
// counted: 6 x tokens x (matrix parameters, output layer included) for the matmuls, plus
// attention scores and mixing: 4 B T^2 D a layer forward, halved for the causal mask, three
// times that for forward + backward. Figures on a shared machine vary by 2x: each row alternates
// steps and OpenBLAS over 3 rounds.
//   make bench-train            (BENCH_QUICK=1 in the environment: the small shape only)
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include "../tests/files.h"
#ifdef RETRLM_BENCH_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif

typedef struct shape {
    const char *name;
    int layers, dim, heads, vocab;
} shape;

static double train_flops(const retrlm_model *m, int B, int T) {
    const retrlm_model_config *c = &m->config;
    double mat = (double)c->n_layers * (4.0 * c->dim * c->dim + 3.0 * c->dim * c->ffn_dim) +
                 (double)c->vocab_size * c->dim;
    double att = 4.0 * B * (double)T * T * c->dim * c->n_layers / 2.0; // causal: half the pairs
    return 6.0 * B * T * mat + 3.0 * att;
}

static double sgemm_gflops(int threads) {
#ifdef RETRLM_BENCH_OPENBLAS
    // the transformer's biggest product at the GPT-2-small-like shape: (1024 x 768) x (768 x 2048)
    const int M = 1024, N = 2048, K = 768;
    float *a = (float *)calloc((size_t)M * K, 4), *b = (float *)calloc((size_t)N * K, 4);
    float *c = (float *)calloc((size_t)M * N, 4);
    double t, best = 1e30;
    int i;
    for (i = 0; i < M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (i = 0; i < N * K; i++) b[i] = (float)(i % 5) * 0.1f;
    openblas_set_num_threads(threads);
    for (i = 0; i < 4; i++) {
        t = retrlm_time_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t = retrlm_time_seconds() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / best / 1e9;
#else
    (void)threads;
    return 0.0;
#endif
}

// OpenBLAS's GFLOP/s on threads from a child process (this program with --blas-only THREADS), so
// that its threads and retrlm's OpenMP threads never wait in one process on the cores the other
// needs; 0 without OpenBLAS. Each row of the table runs one beside its own steps: the host's
// drift (seen: retrlm's own matmul 52 to 77 GFLOP/s from one row to the next) then falls on both.
static double sgemm_child(const char *self, int threads) {
    double g = 0.0;
#ifdef RETRLM_BENCH_OPENBLAS
    char cmd[4200], line[64];
    FILE *p;
    snprintf(cmd, sizeof cmd, "'%s' --blas-only %d", self, threads);
    if (!(p = popen(cmd, "r"))) return 0.0;
    if (fgets(line, sizeof line, p)) g = atof(line);
    pclose(p);
#else
    (void)self, (void)threads;
#endif
    return g;
}

static double retrlm_gflops(int threads) {
    const int M = 1024, N = 2048, K = 768;
    float *a = (float *)calloc((size_t)M * K, 4), *b = (float *)calloc((size_t)N * K, 4);
    float *c = (float *)calloc((size_t)M * N, 4);
    double t, best = 1e30;
    int i;
    set_threads(threads);
    for (i = 0; i < 4; i++) {
        t = retrlm_time_seconds();
        retrlm_matmul(c, a, b, NULL, M, N, K, 0);
        t = retrlm_time_seconds() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / best / 1e9;
}

// lm_train's progress: the time at the end of step STEADY (the trainer has chosen by then)
enum { STEADY = 8 };
enum { ROUNDS = 3 }; // of a table row
static int steady_mark(void *user, const char *stage, double done, double total) {
    (void)total;
    if (strcmp(stage, "train") == 0 && (int)done == STEADY) *(double *)user = retrlm_time_seconds();
    return 0;
}

// retrlm_lm_train's tokens/s (small shape, batch 4 x 256, STEPS steps on a random stream) on
// threads, with a busy loop holding a core or not: the trainer chooses each step's thread count.
// The whole call's rate (a fresh model: its first step faults its pages in; the trainer's first
// steps measure both thread counts), and *steady the rate of the steps after step STEADY.
static double lm_train_rate(int threads, int busy, double *steady) {
    enum { STEPS = 24, B = 4, T = 256, V = 8192, N = 200000 };
    retrlm_model_config mc;
    retrlm_model m;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_lm_train_config tc;
    retrlm_lm_train_state st;
    int *stream = (int *)malloc(N * sizeof(int)), i;
    double t, t1, t8 = 0.0;
    pid_t bp;
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = V, mc.max_seq_len = T, mc.max_batch = B;
    for (i = 0; i < N; i++) stream[i] = (int)(((unsigned)i * 2654435761u) % V);
    if (!stream || retrlm_model_init(&m, &mc) ||
        retrlm_adamw_init(&o, NULL, g, retrlm_model_param_groups(&m, 1e-3f, 0.1f, g)))
        return 0.0;
    memset(&tc, 0, sizeof tc);
    tc.train = stream, tc.n_train = N, tc.steps = STEPS;
    tc.progress = steady_mark, tc.progress_user = &t8;
    retrlm_lm_train_state_init(&st, 1);
    set_threads(threads);
    bp = busy ? bench_busy_start() : -1;
    t = retrlm_time_seconds();
    if (retrlm_lm_train(&m, &o, &tc, &st)) t = 1e30;
    t1 = retrlm_time_seconds();
    *steady = (double)(STEPS - STEADY) * B * T / (t1 - t8);
    t = t1 - t;
    bench_busy_stop(bp);
    set_threads(2);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    free(stream);
    return (double)STEPS * B * T / t;
}

int main(int argc, char **argv) {
    static const shape shapes[2] = {{"small", 4, 256, 4, 8192}, {"gpt2s", 12, 768, 12, 8192}};
    static const int seqs[2] = {64, 256};
    const int quick = getenv("BENCH_QUICK") != NULL;
    char lines[64][160];
    int nl = 0, s, q, th, i;
    if (argc > 2 && strcmp(argv[1], "--blas-only") == 0) { // the child: OpenBLAS alone
        printf("%.2f\n", sgemm_gflops(atoi(argv[2])));
        return 0;
    }
    bench_machine();
    printf("training step (forward + loss + backward + AdamW), batch 4; shared 2-core machine;\n"
           "each row %d rounds of steps (best of 3; GPT-2-small-like at 4 x 256: 1) and OpenBLAS's and\n"
           "retrlm_matmul's GFLOP/s at 1024 x 2048 x 768 right after: medians; %% of OpenBLAS is the\n"
           "median of the rounds' ratios\n", ROUNDS);
    printf("| shape | B x T | threads | step ms | tokens/s | GFLOP/s | OpenBLAS sgemm GFLOP/s | "
           "retrlm_matmul GFLOP/s | %% of OpenBLAS |\n|---|---|---|---|---|---|---|---|---|\n");
#ifndef RETRLM_BENCH_OPENBLAS
    printf("(OpenBLAS not found: its column is 0)\n");
#endif
    for (s = 0; s < (quick ? 1 : 2); s++)
        for (q = 0; q < 2; q++)
            for (th = 1; th <= 2; th++) {
                retrlm_model_config mc;
                retrlm_model m;
                retrlm_adamw o;
                retrlm_adamw_group g[2];
                retrlm_adamw_config oc;
                retrlm_model_grad_in gin;
                int B = 4, T = seqs[q], *tok, *tgt, reps = (s == 1 && T == 256) ? 1 : 3, ng, r;
                double t, best, fl, gf, blas, mine, pct, rbest[ROUNDS], rblas[ROUNDS], rmine[ROUNDS], rpct[ROUNDS];
#ifdef _OPENMP
                omp_set_num_threads(th);
#else
                if (th == 2) continue;
#endif
                memset(&mc, 0, sizeof mc);
                mc.vocab_size = shapes[s].vocab;
                mc.dim = shapes[s].dim;
                mc.n_layers = shapes[s].layers;
                mc.n_heads = shapes[s].heads;
                mc.max_seq_len = T;
                mc.max_batch = B;
                if (retrlm_model_init(&m, &mc)) {
                    printf("init failed: %s\n", retrlm_last_error());
                    return 1;
                }
                memset(&oc, 0, sizeof oc);
                ng = retrlm_model_param_groups(&m, 1e-3f, 0.1f, g);
                retrlm_adamw_init(&o, &oc, g, ng);
                tok = (int *)malloc((size_t)B * T * 2 * sizeof(int));
                tgt = tok + B * T;
                for (i = 0; i < B * T; i++) {
                    tok[i] = (i * 7919) % mc.vocab_size;
                    tgt[i] = (i * 104729 + 1) % mc.vocab_size;
                }
                memset(&gin, 0, sizeof gin);
                fl = train_flops(&m, B, T);
                // ROUNDS rounds, each the best of reps steps (round 0 after one warm-up step) and
                // then OpenBLAS's and retrlm_matmul's GFLOP/s; the figures are the rounds' medians
                for (r = 0; r < ROUNDS; r++) {
                    best = 1e30;
                    for (i = r ? 1 : 0; i < reps + 1; i++) {
                        t = retrlm_time_seconds();
                        retrlm_model_forward(&m, tok, B, T, NULL, 0);
                        retrlm_model_lm_loss(&m, tgt, NULL, NULL);
                        retrlm_model_zero_grad(&m);
                        gin.dlogits = m.logits;
                        retrlm_model_backward(&m, &gin);
                        retrlm_adamw_step(&o);
                        t = retrlm_time_seconds() - t;
                        if (i > 0 && t < best) best = t;
                    }
                    rbest[r] = best;
                    rblas[r] = sgemm_child(argv[0], th); // right after the steps
                    rmine[r] = retrlm_gflops(th);
                    rpct[r] = rblas[r] > 0 ? 100.0 * fl / best / 1e9 / rblas[r] : 0.0;
                }
                best = bench_median(rbest, ROUNDS);
                blas = bench_median(rblas, ROUNDS);
                mine = bench_median(rmine, ROUNDS);
                pct = bench_median(rpct, ROUNDS);
                gf = fl / best / 1e9;
                printf("| %s | %d x %d | %d | %.1f | %.0f | %.1f | %.1f | %.1f | %.0f%% |\n",
                       shapes[s].name, B, T, th, best * 1e3, B * T / best, gf, blas, mine, pct);
                fflush(stdout);
                snprintf(lines[nl++], sizeof lines[0], "train_%s_%dx%d_t%d_tokens_per_s=%.0f",
                         shapes[s].name, B, T, th, B * T / best);
                snprintf(lines[nl++], sizeof lines[0], "train_%s_%dx%d_t%d_gflops=%.2f",
                         shapes[s].name, B, T, th, gf);
                snprintf(lines[nl++], sizeof lines[0], "train_%s_%dx%d_t%d_openblas_gflops=%.2f",
                         shapes[s].name, B, T, th, blas);
                snprintf(lines[nl++], sizeof lines[0], "train_%s_%dx%d_t%d_pct_of_openblas=%.1f",
                         shapes[s].name, B, T, th, pct);
                free(tok);
                retrlm_adamw_free(&o);
                retrlm_model_free(&m);
            }
    printf("\n");
    // on a shared machine: retrlm_lm_train with a core held by another process (its thread
    // count chosen step by step), against one thread; medians of 3
    printf("\nretrlm_lm_train, small shape, 4 x 256, 24 steps from a fresh model, tokens/s (median "
           "of 3): the whole call, and its steps after step %d\n"
           "| other core | 1 thread | 2 threads | 2 / 1 | 1 thread, after %d | 2 threads, after %d | 2 / 1 |\n"
           "|---|---:|---:|---:|---:|---:|---:|\n", STEADY, STEADY, STEADY);
    for (q = 0; q <= 1; q++) {
        double r1[3], r2[3], s1[3], s2[3], a, b, sa, sb;
        const char *w = q ? "busy" : "idle";
#ifndef _OPENMP
        break;
#endif
        for (i = 0; i < 3; i++) {
            r1[i] = lm_train_rate(1, q, &s1[i]);
            r2[i] = lm_train_rate(2, q, &s2[i]);
        }
        a = bench_median(r1, 3), b = bench_median(r2, 3), sa = bench_median(s1, 3), sb = bench_median(s2, 3);
        printf("| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", w, a, b, b / a, sa, sb, sb / sa);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_t1_tokens_per_s=%.0f", w, a);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_t2_tokens_per_s=%.0f", w, b);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_t2_vs_t1=%.2f", w, b / a);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_steady_t1_tokens_per_s=%.0f", w, sa);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_steady_t2_tokens_per_s=%.0f", w, sb);
        snprintf(lines[nl++], sizeof lines[0], "lm_train_small_%s_steady_t2_vs_t1=%.2f", w, sb / sa);
    }
    printf("\n");
    for (i = 0; i < nl; i++) printf("%s\n", lines[i]);
    return 0;
}
