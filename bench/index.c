// bench/index.c - flat and IVF search of retrlm against FAISS and hnswlib, same vectors, same run.
//
//   make bench-index                          default: N = 200,000, d = 128 (a few minutes)
//   build/bench/index N D                     any size, e.g. the full runs:
//   build/bench/index 1000000 128             (N = 10^6, d = 128)
//   build/bench/index 100000 384              (N = 10^5, d = 384)
// Environment: RETRLM_BENCH_N, RETRLM_BENCH_D, RETRLM_BENCH_NLIST (1024), RETRLM_BENCH_NQ (1000).
// Real embeddings instead of the mixture: RETRLM_BENCH_BASE=base.fvecs RETRLM_BENCH_QUERY=q.fvecs
// (bench/dense_debpkg writes build/debpkg/docs.fvecs and queries_dev.fvecs: the trained
// encoder's embeddings of the 59,993 debpkg documents and the 2,000 dev queries).
//
// Data: a Gaussian mixture (1,000 centres N(0, I), noise sigma = 1.75, every vector normalised
// to unit length), 1,000 queries from the same mixture; metric inner product; k = 10; recall@10
// against retrlm's exact flat search. The peers run in build/bench/index_peer (C++, FAISS and
// hnswlib; see bench/index_peer.cpp) on the same vectors, written to build/bench/index_data/.
// Output: a table, then name=value lines; build/bench/index_recall_qps.csv and, if gnuplot is
// installed, build/bench/index_recall_qps.png.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "../tests/files.h"

#define K 10
#define DIR "build/bench/index_data"

static size_t n_base;
static int dim, nq, nlist;

// ---- peer figures: name=value lines of index_peer
static char peer_names[256][48];
static double peer_vals[256];
static int n_peer;

static double peer(const char *name) {
    int i;
    for (i = 0; i < n_peer; i++)
        if (!strcmp(peer_names[i], name)) return peer_vals[i];
    return -1.0;
}

static void read_peer(const char *path) {
    FILE *f = fopen(path, "r");
    char line[256];
    if (!f) return;
    while (fgets(line, sizeof line, f) && n_peer < 256) {
        char *eq = strchr(line, '=');
        if (!eq || eq - line >= 48) continue;
        *eq = 0;
        strcpy(peer_names[n_peer], line);
        peer_vals[n_peer++] = atof(eq + 1);
    }
    fclose(f);
}

static size_t file_bytes(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (size_t)st.st_size : 0;
}

static float *mixture(size_t n, int d, const float *centres, int nc, float sigma, uint64_t seed) {
    float *x = (float *)malloc(n * (size_t)d * sizeof(float));
    long b, nb = (long)((n + 4095) / 4096);
    // blocks of 4,096 rows, each from its own seeded stream: the same data for any thread count
#pragma omp parallel for schedule(dynamic, 1)
    for (b = 0; b < nb; b++) {
        retrlm_rng r;
        size_t i, i1 = (size_t)(b + 1) * 4096 < n ? (size_t)(b + 1) * 4096 : n;
        retrlm_rng_seed(&r, seed * 1000003u + (uint64_t)b);
        for (i = (size_t)b * 4096; i < i1; i++) {
            const float *c = centres + (size_t)retrlm_rng_below(&r, (uint64_t)nc) * (size_t)d;
            float *xi = x + i * (size_t)d;
            double s = 0;
            int j;
            for (j = 0; j < d; j++) {
                xi[j] = c[j] + sigma * retrlm_rng_normal(&r);
                s += (double)xi[j] * xi[j];
            }
            for (j = 0; j < d; j++) xi[j] = (float)(xi[j] / sqrt(s));
        }
    }
    return x;
}

static double recall(const int64_t *got, const int64_t *truth) {
    long hit = 0;
    int q, i, j;
    for (q = 0; q < nq; q++)
        for (i = 0; i < K; i++)
            for (j = 0; j < K; j++)
                if (got[q * K + i] == truth[q * K + j]) {
                    hit++;
                    break;
                }
    return (double)hit / ((double)nq * K);
}

static void must(retrlm_result r, const char *what) {
    if (r != RETRLM_OK) {
        fprintf(stderr, "bench/index: %s: %s: %s\n", what, retrlm_result_string(r), retrlm_last_error());
        exit(1);
    }
}

typedef struct {
    double single_qps, batch_qps, recall;
} point;

// single-query QPS over the first ns queries, batch QPS over all, recall@10
static point measure(const retrlm_index *ix, const float *xq, int ns, const retrlm_search_params *p,
                     const int64_t *truth, int64_t *ids, float *sc) {
    point pt;
    double t = retrlm_time_seconds();
    int q;
    must(retrlm_index_search(ix, xq, nq, dim, K, p, ids, sc), "batch search");
    pt.batch_qps = nq / (retrlm_time_seconds() - t);
    pt.recall = truth ? recall(ids, truth) : 1.0;
    t = retrlm_time_seconds();
    for (q = 0; q < ns; q++) must(retrlm_index_search(ix, xq + (size_t)q * dim, 1, dim, K, p, ids, sc), "single search");
    pt.single_qps = ns / (retrlm_time_seconds() - t);
    return pt;
}

static void row(const char *sys, const char *cfg, double build, double mem, double disk, double sq,
                double bq, double rec, double faiss_sq, double faiss_bq) {
    char b1[16], b2[16], b3[16], r1[16], r2[16];
    if (build >= 0) snprintf(b1, sizeof b1, "%8.2f", build); else strcpy(b1, "       -");
    if (mem >= 0) snprintf(b2, sizeof b2, "%8.1f", mem / 1e6); else strcpy(b2, "       -");
    if (disk >= 0) snprintf(b3, sizeof b3, "%8.1f", disk / 1e6); else strcpy(b3, "       -");
    if (faiss_sq > 0) snprintf(r1, sizeof r1, "%6.2fx", sq / faiss_sq); else strcpy(r1, "      -");
    if (faiss_bq > 0) snprintf(r2, sizeof r2, "%6.2fx", bq / faiss_bq); else strcpy(r2, "      -");
    printf("%-8s %-22s %s %s %s %10.1f %10.1f %8.4f  %s %s\n", sys, cfg, b1, b2, b3, sq, bq, rec, r1, r2);
}

int main(int argc, char **argv) {
    const char *e;
    float *centres, *xb = NULL, *xq = NULL; // set by the one branch that applies below
    int64_t *truth, *ids;
    float *sc;
    int32_t *gt32;
    retrlm_index flat, sq8, sq8r, ivf;
    retrlm_index_config cfg;
    retrlm_search_params sp;
    point pf, ps, psr, pi[4], pl;
    double t, t_flat_add, t_sq_train, t_sq_add, t_ivf_train, t_ivf_add, t_load;
    int probes[4] = {1, 4, 16, 64}, efs[5] = {10, 20, 40, 80, 160}, i, ns_flat, ns_ivf, have_peer;
    size_t disk_flat, disk_ivf;
    FILE *csv;
    char cmd[2048];
    retrlm_rng r;
    bench_machine();

    n_base = (e = getenv("RETRLM_BENCH_N")) ? (size_t)atol(e) : 200000;
    dim = (e = getenv("RETRLM_BENCH_D")) ? atoi(e) : 128;
    if (argc > 1) n_base = (size_t)atol(argv[1]);
    if (argc > 2) dim = atoi(argv[2]);
    nlist = (e = getenv("RETRLM_BENCH_NLIST")) ? atoi(e) : 1024;
    nq = (e = getenv("RETRLM_BENCH_NQ")) ? atoi(e) : 1000;
    ns_flat = (int)(4e6 / (double)n_base * 128.0 / dim);
    ns_flat = ns_flat < 10 ? 10 : ns_flat > nq ? nq : ns_flat;
    ns_ivf = nq;
    if ((e = getenv("RETRLM_BENCH_BASE")) != NULL) {
        size_t nqf = 0;
        int dq = 0;
        must(retrlm_fvecs_read(e, &xb, &n_base, &dim), "read RETRLM_BENCH_BASE");
        if (!getenv("RETRLM_BENCH_QUERY")) { fprintf(stderr, "bench/index: RETRLM_BENCH_QUERY is needed with RETRLM_BENCH_BASE\n"); return 1; }
        must(retrlm_fvecs_read(getenv("RETRLM_BENCH_QUERY"), &xq, &nqf, &dq), "read RETRLM_BENCH_QUERY");
        if (dq != dim) { fprintf(stderr, "bench/index: queries of dim %d for a base of dim %d\n", dq, dim); return 1; }
        nq = (int)nqf;
        ns_flat = nq;
    }
    ns_ivf = nq;
    printf("bench/index: N = %lu, d = %d, %d queries, k = %d, nlist = %d, metric IP, %d threads\n",
           (unsigned long)n_base, dim, nq, K, nlist, retrlm__max_threads());
    if (getenv("RETRLM_BENCH_BASE"))
        printf("data: %s, queries %s; single-query QPS over %d (flat) / %d (IVF) queries\n", getenv("RETRLM_BENCH_BASE"),
               getenv("RETRLM_BENCH_QUERY"), ns_flat, ns_ivf);
    else
        printf("data: 1,000 Gaussian clusters, sigma 1.75, unit-normalised; single-query QPS over %d (flat) / %d (IVF) queries\n",
               ns_flat, ns_ivf);
    if (loadavg() >= 0) // a 2-core machine may be shared: say how busy it was when the run began
        printf("1-minute load average at the start: %.2f (more than ~0.3: other work shares the cores)\n", loadavg());
    printf("\n");

    // ---- data
    centres = (float *)malloc(sizeof(float) * 1000 * (size_t)dim);
    retrlm_rng_seed(&r, 42);
    for (i = 0; i < 1000 * dim; i++) centres[i] = retrlm_rng_normal(&r);
    if (!getenv("RETRLM_BENCH_BASE")) {
        xb = mixture(n_base, dim, centres, 1000, 1.75f, 1);
        xq = mixture((size_t)nq, dim, centres, 1000, 1.75f, 2);
    }
    truth = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * K);
    ids = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * K);
    sc = (float *)malloc(sizeof(float) * (size_t)nq * K);
    gt32 = (int32_t *)malloc(sizeof(int32_t) * (size_t)nq * K);
    mkdir("build", 0755);
    mkdir("build/bench", 0755);
    mkdir(DIR, 0755);

    // ---- retrlm flat f32: also the ground truth
    memset(&cfg, 0, sizeof cfg);
    cfg.dim = dim;
    cfg.metric = RETRLM_METRIC_IP;
    must(retrlm_index_init(&flat, &cfg), "init");
    t = retrlm_time_seconds();
    must(retrlm_index_add(&flat, xb, n_base, dim, NULL), "flat add");
    t_flat_add = retrlm_time_seconds() - t;
    pf = measure(&flat, xq, ns_flat, NULL, NULL, truth, sc);
    for (i = 0; i < nq * K; i++) gt32[i] = (int32_t)truth[i];
    must(retrlm_fvecs_write(DIR "/base.fvecs", xb, n_base, dim), "write base");
    must(retrlm_fvecs_write(DIR "/query.fvecs", xq, (size_t)nq, dim), "write queries");
    must(retrlm_ivecs_write(DIR "/gt.ivecs", gt32, (size_t)nq, K), "write gt");
    must(retrlm_index_save(&flat, DIR "/flat.rlm"), "flat save");
    disk_flat = file_bytes(DIR "/flat.rlm");
    {
        retrlm_index lf;
        t = retrlm_time_seconds();
        must(retrlm_index_load(&lf, DIR "/flat.rlm"), "flat load");
        t_load = retrlm_time_seconds() - t;
        int64_t a[K], b[K];
        must(retrlm_index_search(&flat, xq, 1, dim, K, NULL, a, sc), "search");
        must(retrlm_index_search(&lf, xq, 1, dim, K, NULL, b, sc), "search loaded");
        if (memcmp(a, b, sizeof a)) fprintf(stderr, "bench/index: the loaded flat index answers differently\n");
        retrlm_index_free(&lf);
        remove(DIR "/flat.rlm");
    }

    // ---- retrlm flat SQ8, without and with re-ranking
    cfg.storage = RETRLM_STORAGE_SQ8;
    must(retrlm_index_init(&sq8, &cfg), "init");
    cfg.rerank = 4;
    must(retrlm_index_init(&sq8r, &cfg), "init");
    t = retrlm_time_seconds();
    must(retrlm_index_train(&sq8, xb, n_base, dim), "sq8 train");
    t_sq_train = retrlm_time_seconds() - t;
    t = retrlm_time_seconds();
    must(retrlm_index_add(&sq8, xb, n_base, dim, NULL), "sq8 add");
    t_sq_add = retrlm_time_seconds() - t;
    ps = measure(&sq8, xq, ns_flat, NULL, truth, ids, sc);
    must(retrlm_index_train(&sq8r, xb, n_base, dim), "sq8 train");
    must(retrlm_index_add(&sq8r, xb, n_base, dim, NULL), "sq8 add");
    psr = measure(&sq8r, xq, ns_flat, NULL, truth, ids, sc);

    // ---- retrlm IVF (FAISS's defaults: random init, 10 iterations, 256 points a list)
    cfg.storage = RETRLM_STORAGE_F32;
    cfg.rerank = 0;
    cfg.nlist = nlist;
    must(retrlm_index_init(&ivf, &cfg), "init");
    t = retrlm_time_seconds();
    must(retrlm_index_train(&ivf, xb, n_base, dim), "ivf train");
    t_ivf_train = retrlm_time_seconds() - t;
    t = retrlm_time_seconds();
    must(retrlm_index_add(&ivf, xb, n_base, dim, NULL), "ivf add");
    t_ivf_add = retrlm_time_seconds() - t;
    for (i = 0; i < 4; i++) {
        sp.nprobe = probes[i];
        sp.rerank = 0;
        pi[i] = measure(&ivf, xq, ns_ivf, &sp, truth, ids, sc);
    }
    must(retrlm_index_save(&ivf, DIR "/ivf.rlm"), "ivf save");
    disk_ivf = file_bytes(DIR "/ivf.rlm");
    {
        retrlm_index li;
        must(retrlm_index_load(&li, DIR "/ivf.rlm"), "ivf load");
        sp.nprobe = 16;
        pl = measure(&li, xq, 0, &sp, truth, ids, sc);
        retrlm_index_free(&li);
        remove(DIR "/ivf.rlm");
    }

    // ---- peers, same vectors
    have_peer = file_bytes("build/bench/index_peer") > 0;
    if (have_peer) {
        snprintf(cmd, sizeof cmd, "build/bench/index_peer %s %d %d %d > %s/peer.txt", DIR, nlist, ns_flat, ns_ivf, DIR);
        fflush(stdout);
        if (system(cmd) != 0) fprintf(stderr, "bench/index: index_peer failed\n");
        read_peer(DIR "/peer.txt");
    }
    if (peer("faiss") != 1) printf("FAISS: not measured (build/bench/index_peer without libfaiss-dev)\n");
    if (peer("hnswlib") != 1) printf("hnswlib: not measured (build/bench/index_peer without libhnswlib-dev)\n");

    // ---- table
    printf("\n%-8s %-22s %8s %8s %8s %10s %10s %8s  %7s %7s\n", "system", "index", "build s", "mem MB",
           "disk MB", "1-q QPS", "batch QPS", "rec@10", "1q/FAISS", "b/FAISS");
    row("retrlm", "Flat f32", t_flat_add, (double)retrlm_index_bytes(&flat), (double)disk_flat, pf.single_qps,
        pf.batch_qps, 1.0, peer("faiss_flat_single_qps"), peer("faiss_flat_batch_qps"));
    row("FAISS", "IndexFlatIP", peer("faiss_flat_add_s"), peer("faiss_flat_mem_bytes"), peer("faiss_flat_disk_bytes"),
        peer("faiss_flat_single_qps"), peer("faiss_flat_batch_qps"), peer("faiss_flat_recall"), 0, 0);
    row("retrlm", "Flat SQ8", t_sq_train + t_sq_add, (double)retrlm_index_bytes(&sq8), -1, ps.single_qps,
        ps.batch_qps, ps.recall, peer("faiss_sq8_single_qps"), peer("faiss_sq8_batch_qps"));
    row("retrlm", "Flat SQ8 + rerank 4k", -1, (double)retrlm_index_bytes(&sq8r), -1, psr.single_qps, psr.batch_qps,
        psr.recall, peer("faiss_sq8_single_qps"), peer("faiss_sq8_batch_qps"));
    row("FAISS", "SQ8 (QT_8bit)", peer("faiss_sq8_train_s") + peer("faiss_sq8_add_s"), peer("faiss_sq8_mem_bytes"), -1,
        peer("faiss_sq8_single_qps"), peer("faiss_sq8_batch_qps"), peer("faiss_sq8_recall"), 0, 0);
    for (i = 0; i < 4; i++) {
        char c[32], nm[64], nm2[64], nm3[64];
        snprintf(c, sizeof c, "IVF%d nprobe %d", nlist, probes[i]);
        snprintf(nm, sizeof nm, "faiss_ivf_np%d_single_qps", probes[i]);
        snprintf(nm2, sizeof nm2, "faiss_ivf_np%d_batch_qps", probes[i]);
        snprintf(nm3, sizeof nm3, "faiss_ivf_np%d_recall", probes[i]);
        row("retrlm", c, i == 0 ? t_ivf_train + t_ivf_add : -1, i == 0 ? (double)retrlm_index_bytes(&ivf) : -1,
            i == 0 ? (double)disk_ivf : -1, pi[i].single_qps, pi[i].batch_qps, pi[i].recall, peer(nm), peer(nm2));
        row("FAISS", c, i == 0 ? peer("faiss_ivf_train_s") + peer("faiss_ivf_add_s") : -1,
            i == 0 ? peer("faiss_ivf_mem_bytes") : -1, i == 0 ? peer("faiss_ivf_disk_bytes") : -1, peer(nm), peer(nm2),
            peer(nm3), 0, 0);
    }
    for (i = 0; i < 5; i++) {
        char c[32], nm[64], nm2[64], nm3[64];
        snprintf(c, sizeof c, "HNSW M16 ef %d", efs[i]);
        snprintf(nm, sizeof nm, "hnsw_ef%d_single_qps", efs[i]);
        snprintf(nm2, sizeof nm2, "hnsw_ef%d_batch_qps", efs[i]);
        snprintf(nm3, sizeof nm3, "hnsw_ef%d_recall", efs[i]);
        if (peer("hnswlib") == 1)
            row("hnswlib", c, i == 0 ? peer("hnsw_build_s") : -1, i == 0 ? peer("hnsw_mem_bytes") : -1, -1, peer(nm),
                peer(nm2), peer(nm3), 0, 0);
    }
    printf("\ntraining: retrlm k-means %.2f s, FAISS %.2f s (ratio FAISS/retrlm %.2f); retrlm IVF add %.2f s, FAISS %.2f s\n",
           t_ivf_train, peer("faiss_ivf_train_s"), peer("faiss_ivf_train_s") / t_ivf_train, t_ivf_add, peer("faiss_ivf_add_s"));
    printf("load: flat index file mapped in %.4f s (CRC-checked); IVF loaded from its file, nprobe 16: %.1f QPS, recall %.4f\n",
           t_load, pl.batch_qps, pl.recall);
    printf("\nreference (issue 5): FAISS 1.8 built for AVX-512, N = 10^6, d = 128, one thread, on a machine\n");
    printf("  whose scan reads at ~24 GB/s (this one: ~18 GB/s at 2 threads, AVX2):\n");
    printf("  flat single query 21.5 ms (46.5 QPS); SQ8 single query 17 ms (58.8 QPS);\n");
    printf("  IVF1024 nprobe 16: 1,900 QPS at recall@10 0.909; nprobe 64: 443 QPS at 0.951\n");
    printf("  (the live FAISS above is Debian's libfaiss, built for baseline x86-64)\n\n");

    // ---- CSV and plot
    csv = fopen("build/bench/index_recall_qps.csv", "w");
    if (csv) {
        fprintf(csv, "system,index,param,recall,batch_qps,single_qps\n");
        for (i = 0; i < 4; i++) {
            char nm[64], nm2[64], nm3[64];
            fprintf(csv, "retrlm,IVF%d,%d,%.4f,%.1f,%.1f\n", nlist, probes[i], pi[i].recall, pi[i].batch_qps, pi[i].single_qps);
            snprintf(nm, sizeof nm, "faiss_ivf_np%d_single_qps", probes[i]);
            snprintf(nm2, sizeof nm2, "faiss_ivf_np%d_batch_qps", probes[i]);
            snprintf(nm3, sizeof nm3, "faiss_ivf_np%d_recall", probes[i]);
            if (peer("faiss") == 1)
                fprintf(csv, "faiss,IVF%d,%d,%.4f,%.1f,%.1f\n", nlist, probes[i], peer(nm3), peer(nm2), peer(nm));
        }
        for (i = 0; i < 5 && peer("hnswlib") == 1; i++) {
            char nm[64], nm2[64], nm3[64];
            snprintf(nm, sizeof nm, "hnsw_ef%d_single_qps", efs[i]);
            snprintf(nm2, sizeof nm2, "hnsw_ef%d_batch_qps", efs[i]);
            snprintf(nm3, sizeof nm3, "hnsw_ef%d_recall", efs[i]);
            fprintf(csv, "hnswlib,HNSW16,%d,%.4f,%.1f,%.1f\n", efs[i], peer(nm3), peer(nm2), peer(nm));
        }
        fprintf(csv, "retrlm,FlatSQ8,0,%.4f,%.1f,%.1f\n", ps.recall, ps.batch_qps, ps.single_qps);
        fprintf(csv, "retrlm,FlatSQ8rerank4,0,%.4f,%.1f,%.1f\n", psr.recall, psr.batch_qps, psr.single_qps);
        fprintf(csv, "retrlm,Flat,0,1.0,%.1f,%.1f\n", pf.batch_qps, pf.single_qps);
        if (peer("faiss") == 1)
            fprintf(csv, "faiss,Flat,0,%.4f,%.1f,%.1f\n", peer("faiss_flat_recall"), peer("faiss_flat_batch_qps"),
                    peer("faiss_flat_single_qps"));
        fclose(csv);
        if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
            snprintf(cmd, sizeof cmd,
                     "gnuplot -e \"set terminal png size 900,600; set output 'build/bench/index_recall_qps.png'; "
                     "set datafile separator ','; set logscale y; set key bottom left; set grid; "
                     "set xlabel 'recall at 10'; set ylabel 'queries/s (batch of %d, 2 threads)'; "
                     "set title 'N = %lu, d = %d, nlist %d'; "
                     "plot '< grep ^retrlm,IVF build/bench/index_recall_qps.csv' u 4:5 w lp t 'retrlm IVF', "
                     "'< grep ^faiss,IVF build/bench/index_recall_qps.csv' u 4:5 w lp t 'FAISS IVFFlat', "
                     "'< grep ^hnswlib build/bench/index_recall_qps.csv' u 4:5 w lp t 'hnswlib M16'\" 2>/dev/null",
                     nq, (unsigned long)n_base, dim, nlist);
            if (system(cmd) == 0) printf("wrote build/bench/index_recall_qps.csv and build/bench/index_recall_qps.png\n\n");
        } else {
            printf("wrote build/bench/index_recall_qps.csv (gnuplot not installed: no PNG)\n\n");
        }
    }

    // ---- name=value
    printf("index_n=%lu\nindex_dim=%d\n", (unsigned long)n_base, dim);
    printf("retrlm_flat_single_qps=%.2f\nretrlm_flat_batch_qps=%.2f\n", pf.single_qps, pf.batch_qps);
    printf("retrlm_flat_single_ms=%.3f\n", 1e3 / pf.single_qps);
    printf("retrlm_flat_scan_gbs=%.2f\n", pf.single_qps * (double)n_base * dim * 4 / 1e9);
    printf("retrlm_sq8_single_qps=%.2f\nretrlm_sq8_batch_qps=%.2f\nretrlm_sq8_recall=%.4f\n", ps.single_qps, ps.batch_qps, ps.recall);
    printf("retrlm_sq8_rerank_single_qps=%.2f\nretrlm_sq8_rerank_batch_qps=%.2f\nretrlm_sq8_rerank_recall=%.4f\n",
           psr.single_qps, psr.batch_qps, psr.recall);
    printf("retrlm_ivf_train_s=%.3f\nretrlm_ivf_add_s=%.3f\n", t_ivf_train, t_ivf_add);
    for (i = 0; i < 4; i++)
        printf("retrlm_ivf_np%d_single_qps=%.2f\nretrlm_ivf_np%d_batch_qps=%.2f\nretrlm_ivf_np%d_recall=%.4f\n", probes[i],
               pi[i].single_qps, probes[i], pi[i].batch_qps, probes[i], pi[i].recall);
    printf("retrlm_flat_mem_bytes=%lu\nretrlm_flat_disk_bytes=%lu\nretrlm_ivf_mem_bytes=%lu\nretrlm_ivf_disk_bytes=%lu\n",
           (unsigned long)retrlm_index_bytes(&flat), (unsigned long)disk_flat, (unsigned long)retrlm_index_bytes(&ivf),
           (unsigned long)disk_ivf);
    for (i = 0; i < n_peer; i++) printf("%s=%g\n", peer_names[i], peer_vals[i]);
    if (peer("faiss") == 1) {
        printf("ratio_flat_single=%.3f\nratio_flat_batch=%.3f\n", pf.single_qps / peer("faiss_flat_single_qps"),
               pf.batch_qps / peer("faiss_flat_batch_qps"));
        for (i = 0; i < 4; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "faiss_ivf_np%d_batch_qps", probes[i]);
            printf("ratio_ivf_np%d_batch=%.3f\n", probes[i], pi[i].batch_qps / peer(nm));
        }
        printf("ratio_kmeans_faiss_over_retrlm=%.3f\n", peer("faiss_ivf_train_s") / t_ivf_train);
    }
    retrlm_index_free(&flat);
    retrlm_index_free(&sq8);
    retrlm_index_free(&sq8r);
    retrlm_index_free(&ivf);
    free(centres);
    if (getenv("RETRLM_BENCH_BASE")) retrlm_free(xb), retrlm_free(xq); // from retrlm_fvecs_read
    else free(xb), free(xq);
    free(truth);
    free(ids);
    free(sc);
    free(gt32);
    return 0;
}
