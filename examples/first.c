// examples/first.c - the foundation in one page: score a batch of queries against a set of
// vectors with the blocked matmul, keep the top 5 of each, save everything in the container
// format, load it back (memory-mapped when large) and check that nothing changed.
//   cc -std=c99 -O2 -I. -I/usr/include/stb examples/first.c -lm -o first && ./first
//   cc -std=c99 -O3 -fopenmp -I. -I/usr/include/stb examples/first.c -lm -o first && ./first
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdio.h>
#include <stdlib.h>

enum { N = 20000, D = 64, Q = 8, K = 5 }; // vectors, dimension, queries, results per query

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "first.rlm";
    float *vecs = (float *)malloc(sizeof(float) * N * D), *queries = (float *)malloc(sizeof(float) * Q * D);
    float *scores = (float *)malloc(sizeof(float) * Q * N), best_score[Q][K];
    int64_t best[Q][K];
    retrlm_rng rng;
    retrlm_writer w;
    retrlm_reader r;
    const float *loaded;
    size_t count;
    double t0;
    int i, q, same = 1;

    // data: random unit-ish vectors; each query is a noisy copy of vector 7*q+1
    retrlm_rng_seed(&rng, 42);
    for (i = 0; i < N * D; i++) vecs[i] = retrlm_rng_normal(&rng) / 8.0f;
    for (q = 0; q < Q; q++)
        for (i = 0; i < D; i++) queries[q * D + i] = vecs[(7 * q + 1) * D + i] + 0.02f * retrlm_rng_normal(&rng);

    // scores (Q,N) = queries (Q,D) · vecsᵀ, then a top-k heap per query
    t0 = retrlm_time_seconds();
    if (retrlm_matmul(scores, queries, vecs, NULL, Q, N, D, 0)) {
        fprintf(stderr, "matmul: %s\n", retrlm_last_error());
        return 1;
    }
    for (q = 0; q < Q; q++) retrlm_topk_select(scores + (size_t)q * N, N, K, best[q], best_score[q]);
    printf("scored %d queries against %d vectors in %.2f ms\n", Q, N, 1e3 * (retrlm_time_seconds() - t0));
    for (q = 0; q < Q; q++)
        printf("query %d (copy of %4d): best %4lld (%.3f), then %4lld (%.3f)\n", q, 7 * q + 1,
               (long long)best[q][0], best_score[q][0], (long long)best[q][1], best_score[q][1]);

    // save: a temporary file, fsync, rename; then load and compare
    if (retrlm_writer_init(&w, "example") || retrlm_writer_add(&w, "vectors", RETRLM_DTYPE_F32, vecs, (size_t)N * D) ||
        retrlm_writer_add(&w, "best", RETRLM_DTYPE_I64, best, (size_t)Q * K) || retrlm_writer_save(&w, path)) {
        fprintf(stderr, "save: %s\n", retrlm_last_error());
        return 1;
    }
    retrlm_writer_free(&w);
    if (retrlm_reader_open(&r, path, "example", 0) ||
        retrlm_reader_get(&r, "vectors", RETRLM_DTYPE_F32, (const void **)&loaded, &count)) {
        fprintf(stderr, "load: %s\n", retrlm_last_error());
        return 1;
    }
    for (i = 0; i < N * D; i++) same &= loaded[i] == vecs[i];
    printf("saved and loaded %s: %d sections, %lu bytes, %s, vectors %s\n", path, r.n_sections,
           (unsigned long)r.size, r.mapped_ ? "memory-mapped" : "read", same && count == (size_t)N * D ? "identical" : "DIFFERENT");
    retrlm_reader_close(&r);
    remove(path);
    free(vecs);
    free(queries);
    free(scores);
    return !same;
}
