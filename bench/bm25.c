// bm25: retrlm's BM25 against SQLite FTS5, Xapian and Lucene 8 on debpkg (same corpus, same
// queries, same run): index build time, index bytes on disk, memory, top-10 disjunctive query
// throughput on 1 and 2 threads, and MRR@10 (lenient and strict) of each engine's top 10.
//   make bench-bm25     (peers: libsqlite3-dev, libxapian-dev + g++, liblucene8-java + a JDK)
// Two settings in the same run: the shared one (k1 0.9, b 0.4) for every engine that can be set
// (retrlm with an explicit config, Lucene, Xapian), then every engine out of the box (retrlm's
// NULL config, Lucene's new BM25Similarity(), Xapian's BM25Weight(), FTS5's fixed bm25()).
// Each engine runs in its own process (this program with an engine name, bench/bm25_xapian,
// java Bm25Lucene), given its setting as arguments ("default" or "K1 B"), that prints name=value
// lines and writes its top 10 per query to a run file of its own; this driver scores every run
// file with retrlm's eval module and prints the table, one row per engine and setting.
// Memory = peak resident set (VmHWM) of the engine's process minus its resident set after the
// data was read (the data itself is the same for every engine).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <ctype.h>
#include "bm25_data.h"
#ifdef RETRLM_BENCH_FTS5
#include <pthread.h>
#include <sqlite3.h>
#endif
#include <sys/stat.h>

#define TOPK 10

static const char *g_data, *g_scratch;

static long file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

// writes "qid docid" lines, best first
static void write_run(const char *path, const debpkg *d, const int64_t *ids, const int *n) {
    FILE *f = fopen(path, "w");
    int q, i;
    if (!f) return;
    for (q = 0; q < d->queries.n_rows; q++)
        for (i = 0; i < n[q]; i++) fprintf(f, "%s %lld\n", tsv_get(&d->queries, q, 0), (long long)ids[q * TOPK + i]);
    fclose(f);
}

// ---- retrlm ----------------------------------------------------------------------------------
// a fresh index of every document; nonzero on failure
static int build_retrlm(retrlm_bm25 *bm, const retrlm_bm25_config *cfg, int nd, const int64_t *ids,
                        const char **texts) {
    return retrlm_bm25_init(bm, cfg) || retrlm_bm25_add_batch(bm, nd, ids, texts, NULL) || retrlm_bm25_commit(bm);
}

// cfg NULL: retrlm's defaults
static int run_retrlm(const debpkg *d, const char *runfile, const retrlm_bm25_config *cfg) {
    retrlm_bm25 bm, loaded;
    int nd = d->docs.n_rows, nq = d->queries.n_rows, i, *nf;
    int64_t *ids = (int64_t *)malloc(sizeof(int64_t) * (size_t)nd), *out;
    const char **texts = (const char **)malloc(sizeof(char *) * (size_t)nd), **qs;
    char path[1024];
    long base = proc_status_kib("VmRSS");
    double t0, build1, build2, qps1, qps2;
    for (i = 0; i < nd; i++) {
        ids[i] = atoll(tsv_get(&d->docs, i, 0));
        texts[i] = tsv_get(&d->docs, i, 3);
    }
    // a first build warms the allocator (page faults), then 2 threads, then 1 thread (kept)
    if (build_retrlm(&bm, cfg, nd, ids, texts)) return 1;
    retrlm_bm25_free(&bm);
    set_threads(2);
    t0 = retrlm_time_seconds();
    if (build_retrlm(&bm, cfg, nd, ids, texts)) return 1;
    build2 = retrlm_time_seconds() - t0;
    retrlm_bm25_free(&bm);
    set_threads(1);
    t0 = retrlm_time_seconds();
    if (build_retrlm(&bm, cfg, nd, ids, texts)) return 1;
    build1 = retrlm_time_seconds() - t0;
    snprintf(path, sizeof path, "%s/retrlm.bm25", g_scratch);
    if (retrlm_bm25_save(&bm, path)) return 1;
    retrlm_bm25_free(&bm);
    if (retrlm_bm25_load(&loaded, path)) return 1; // query the file in place (mmap)
    qs = (const char **)malloc(sizeof(char *) * (size_t)nq);
    out = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * TOPK);
    nf = (int *)malloc(sizeof(int) * (size_t)nq);
    for (i = 0; i < nq; i++) qs[i] = tsv_get(&d->queries, i, 1);
    for (i = 0; i < nq; i++) retrlm_bm25_search(&loaded, qs[i], strlen(qs[i]), TOPK, 0, out + i * TOPK, NULL, &nf[i]);
    t0 = retrlm_time_seconds();
    for (i = 0; i < nq; i++) retrlm_bm25_search(&loaded, qs[i], strlen(qs[i]), TOPK, 0, out + i * TOPK, NULL, &nf[i]);
    qps1 = nq / (retrlm_time_seconds() - t0);
    set_threads(2);
    t0 = retrlm_time_seconds();
    retrlm_bm25_search_batch(&loaded, nq, qs, NULL, TOPK, 0, out, NULL, nf);
    qps2 = nq / (retrlm_time_seconds() - t0);
    write_run(runfile, d, out, nf);
    printf("build_s=%.3f\nbuild_s_2t=%.3f\nindex_bytes=%ld\nmem_kib=%ld\nqps1=%.0f\nqps2=%.0f\n", build1, build2,
           file_bytes(path), proc_status_kib("VmHWM") - base, qps1, qps2);
    retrlm_bm25_free(&loaded);
    remove(path);
    free(ids);
    free((void *)texts);
    free((void *)qs);
    free(out);
    free(nf);
    return 0;
}

// ---- SQLite FTS5 -----------------------------------------------------------------------------
#ifdef RETRLM_BENCH_FTS5
// Lucene's English stop words, removed from FTS5 queries as EnglishAnalyzer does
static const char *const stop33[] = {"a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if",
                                     "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that",
                                     "the", "their", "then", "there", "these", "they", "this", "to", "was",
                                     "will", "with"};

// "w1" OR "w2" ... over the query's alphanumeric words (lower-cased, stop words dropped)
static void fts5_query(const char *q, char *out, size_t cap) {
    size_t o = 0;
    out[0] = 0;
    while (*q) {
        char w[128];
        int l = 0, s, stop = 0;
        while (*q && !(isalnum((unsigned char)*q) || (unsigned char)*q >= 0x80)) q++;
        while (*q && (isalnum((unsigned char)*q) || (unsigned char)*q >= 0x80)) {
            if (l < 120) w[l++] = (char)tolower((unsigned char)*q);
            q++;
        }
        w[l] = 0;
        if (!l) continue;
        for (s = 0; s < 33; s++) stop |= !strcmp(w, stop33[s]);
        if (stop || o + (size_t)l + 8 >= cap) continue;
        o += (size_t)snprintf(out + o, cap - o, "%s\"%s\"", o ? " OR " : "", w);
    }
}

typedef struct fts5_job {
    const char *db;
    const debpkg *d;
    int from, to;
    int64_t *out;
    int *nf;
} fts5_job;

static void *fts5_search(void *arg) {
    fts5_job *j = (fts5_job *)arg;
    sqlite3 *db;
    sqlite3_stmt *st;
    int q;
    if (sqlite3_open_v2(j->db, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) return NULL;
    sqlite3_prepare_v2(db, "SELECT rowid FROM docs WHERE docs MATCH ?1 ORDER BY bm25(docs) LIMIT 10", -1, &st, NULL);
    for (q = j->from; q < j->to; q++) {
        char m[4096];
        fts5_query(tsv_get(&j->d->queries, q, 1), m, sizeof m);
        j->nf[q] = 0;
        if (!m[0]) continue;
        sqlite3_bind_text(st, 1, m, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW && j->nf[q] < TOPK) j->out[q * TOPK + j->nf[q]++] = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

static int run_fts5(const debpkg *d, const char *runfile) {
    sqlite3 *db;
    sqlite3_stmt *st;
    char path[1024];
    int nd = d->docs.n_rows, nq = d->queries.n_rows, i, *nf;
    int64_t *out;
    long base = proc_status_kib("VmRSS");
    double t0, build, qps1, qps2;
    fts5_job a, b;
    pthread_t th[2];
    snprintf(path, sizeof path, "%s/fts5.db", g_scratch);
    remove(path);
    t0 = retrlm_time_seconds();
    if (sqlite3_open(path, &db) != SQLITE_OK) return 1;
    sqlite3_exec(db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;", NULL, NULL, NULL);
    if (sqlite3_exec(db, "CREATE VIRTUAL TABLE docs USING fts5(text, tokenize='porter unicode61')", NULL, NULL, NULL))
        return 1;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO docs(rowid, text) VALUES(?1, ?2)", -1, &st, NULL);
    for (i = 0; i < nd; i++) {
        sqlite3_bind_int64(st, 1, atoll(tsv_get(&d->docs, i, 0)));
        sqlite3_bind_text(st, 2, tsv_get(&d->docs, i, 3), -1, SQLITE_STATIC);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_exec(db, "INSERT INTO docs(docs) VALUES('optimize')", NULL, NULL, NULL);
    sqlite3_close(db);
    build = retrlm_time_seconds() - t0;
    out = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * TOPK);
    nf = (int *)malloc(sizeof(int) * (size_t)nq);
    a.db = b.db = path;
    a.d = b.d = d;
    a.out = b.out = out;
    a.nf = b.nf = nf;
    a.from = 0;
    a.to = nq;
    fts5_search(&a); // warm-up
    t0 = retrlm_time_seconds();
    fts5_search(&a);
    qps1 = nq / (retrlm_time_seconds() - t0);
    a.to = b.from = nq / 2;
    b.to = nq;
    t0 = retrlm_time_seconds();
    pthread_create(&th[0], NULL, fts5_search, &a);
    pthread_create(&th[1], NULL, fts5_search, &b);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    qps2 = nq / (retrlm_time_seconds() - t0);
    write_run(runfile, d, out, nf);
    printf("build_s=%.3f\nindex_bytes=%ld\nmem_kib=%ld\nqps1=%.0f\nqps2=%.0f\n", build, file_bytes(path),
           proc_status_kib("VmHWM") - base, qps1, qps2);
    remove(path);
    free(out);
    free(nf);
    return 0;
}
#endif

// ---- the driver ------------------------------------------------------------------------------
// the shared setting, k1 b (Anserini's MS MARCO passage setting), as the engines' processes take it
#define SHARED_K1_B "0.9 0.4"

// One row of the table per engine and setting: the shared setting for every engine that can be
// set, then every engine out of the box (FTS5's bm25() cannot be set). key prefixes the row's
// name=value lines and names its run file.
typedef struct row {
    const char *id, *name, *key, *setting, *k1_b, *note;
} row;
static const row rows[] = {
    {"retrlm", "retrlm", "retrlm", "shared", "0.9, 0.4",
     "EnglishAnalyzer chain, block-max MaxScore; retrlm_bm25_config k1 0.9, b 0.4"},
    {"lucene", "Lucene 8", "lucene", "shared", "0.9, 0.4",
     "EnglishAnalyzer, docs+freqs, 1 segment; BM25Similarity(0.9f, 0.4f)"},
    {"xapian", "Xapian", "xapian", "shared", "0.9, 0.4",
     "porter, same stop words, no positions; BM25Weight(0.9, 0, 1, 0.4, 0.5)"},
    {"retrlm", "retrlm", "retrlm_default", "default", "1.2, 0.75",
     "NULL config: RETRLM_BM25_K1, RETRLM_BM25_B"},
    {"lucene", "Lucene 8", "lucene_default", "default", "1.2, 0.75", "new BM25Similarity()"},
    {"xapian", "Xapian", "xapian_default", "default", "1, 0.5",
     "BM25Weight(): k1 1, k2 0, k3 1, b 0.5, min_normlen 0.5"},
    {"fts5", "SQLite FTS5", "fts5", "default", "1.2, 0.75",
     "porter unicode61, bm25() (k1 1.2, b 0.75 fixed), same stop words dropped from queries"},
};
#define N_ROWS (int)(sizeof rows / sizeof rows[0])

typedef struct engine {
    const row *row;
    char cmd[2048], run[1024];
    int ok;
    double build_s, build_s_2t, index_bytes, mem_kib, qps1, qps2, mrr10, mrr10_strict;
} engine;

// the row's run file and the command of its engine's process (none: the engine is not installed)
static void engine_init(engine *e, const row *r, const char *self) {
    const char *arg = strcmp(r->setting, "shared") ? "default" : SHARED_K1_B;
    memset(e, 0, sizeof *e);
    e->row = r;
    snprintf(e->run, sizeof e->run, "%s/bm25_run_%s.txt", g_scratch, r->key);
    if (!strcmp(r->id, "retrlm")) snprintf(e->cmd, sizeof e->cmd, "%s retrlm %s %s", self, e->run, arg);
#ifdef RETRLM_BENCH_LUCENE
    if (!strcmp(r->id, "lucene"))
        snprintf(e->cmd, sizeof e->cmd, "java -Xmx1g -cp %s:build/bench Bm25Lucene %s %s %s %s", RETRLM_BENCH_LUCENE,
                 g_data, g_scratch, e->run, arg);
#endif
#ifdef RETRLM_BENCH_XAPIAN
    if (!strcmp(r->id, "xapian"))
        snprintf(e->cmd, sizeof e->cmd, "build/bench/bm25_xapian %s %s %s %s", g_data, g_scratch, e->run, arg);
#endif
#ifdef RETRLM_BENCH_FTS5
    if (!strcmp(r->id, "fts5")) snprintf(e->cmd, sizeof e->cmd, "%s fts5 %s %s", self, e->run, arg);
#endif
}

static double mrr_of_run(const char *path, const debpkg *d, int min_grade, int *ok) {
    FILE *f = fopen(path, "r");
    int nq = d->queries.n_rows, i, q = -1;
    int64_t *qids = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq), *ranked;
    int *nr = (int *)calloc((size_t)nq, sizeof(int));
    retrlm_qrel *qr = (retrlm_qrel *)malloc(sizeof(retrlm_qrel) * (size_t)d->qrels.n_rows);
    retrlm_retrieval_metrics m;
    long long qid, doc;
    *ok = f != NULL;
    ranked = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * TOPK);
    for (i = 0; i < nq; i++) qids[i] = atoll(tsv_get(&d->queries, i, 0));
    // the run lists queries in file order; a query without results has no line
    while (f && fscanf(f, "%lld %lld", &qid, &doc) == 2) {
        if (q < 0 || qids[q] != qid)
            for (q = q + 1; q < nq && qids[q] != qid; q++) {}
        if (q >= nq) break;
        if (nr[q] < TOPK) ranked[q * TOPK + nr[q]++] = doc;
    }
    if (f) fclose(f);
    for (i = 0; i < d->qrels.n_rows; i++) {
        qr[i].qid = atoll(tsv_get(&d->qrels, i, 0));
        qr[i].docid = atoll(tsv_get(&d->qrels, i, 1));
        qr[i].grade = atoi(tsv_get(&d->qrels, i, 2));
    }
    retrlm_eval_retrieval(nq, qids, ranked, nr, TOPK, qr, (size_t)d->qrels.n_rows, min_grade, &m);
    free(qids);
    free(ranked);
    free(nr);
    free(qr);
    return m.mrr10;
}

static void run_engine(engine *e, const debpkg *d) {
    FILE *p;
    char line[512];
    if (!e->cmd[0]) return;
    fflush(stdout);
    p = popen(e->cmd, "r");
    if (!p) return;
    while (fgets(line, sizeof line, p)) {
        char *eq = strchr(line, '=');
        double v;
        if (!eq) continue;
        *eq = 0;
        v = atof(eq + 1);
        if (!strcmp(line, "build_s")) e->build_s = v, e->ok = 1;
        else if (!strcmp(line, "build_s_2t")) e->build_s_2t = v;
        else if (!strcmp(line, "index_bytes")) e->index_bytes = v;
        else if (!strcmp(line, "mem_kib")) e->mem_kib = v;
        else if (!strcmp(line, "qps1")) e->qps1 = v;
        else if (!strcmp(line, "qps2")) e->qps2 = v;
    }
    if (pclose(p) != 0) e->ok = 0;
    if (e->ok) {
        int ok1, ok2;
        e->mrr10 = mrr_of_run(e->run, d, 1, &ok1);
        e->mrr10_strict = mrr_of_run(e->run, d, 2, &ok2);
        e->ok = ok1 && ok2;
        remove(e->run);
    }
}

int main(int argc, char **argv) {
    debpkg d;
    engine eng[N_ROWS];
    int i;
    bench_machine();
    g_data = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    g_scratch = getenv("SCRATCH") ? getenv("SCRATCH") : "build/bench";
    if (!debpkg_load(&d, g_data)) {
        printf("debpkg data not found under %s\n", g_data);
        return 1;
    }
    // an engine's process: bm25 ENGINE RUN_FILE SETTING, SETTING "default" or "K1 B"
    if (argc == 4 && !strcmp(argv[1], "retrlm") && !strcmp(argv[3], "default")) return run_retrlm(&d, argv[2], NULL);
    if (argc == 5 && !strcmp(argv[1], "retrlm")) {
        retrlm_bm25_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.k1 = (float)atof(argv[3]);
        cfg.b = (float)atof(argv[4]);
        return run_retrlm(&d, argv[2], &cfg);
    }
#ifdef RETRLM_BENCH_FTS5
    if (argc == 4 && !strcmp(argv[1], "fts5") && !strcmp(argv[3], "default")) return run_fts5(&d, argv[2]);
#endif
    for (i = 0; i < N_ROWS; i++) {
        engine_init(&eng[i], &rows[i], argv[0]);
        run_engine(&eng[i], &d);
    }
    printf("BM25 on debpkg: %d documents (text column), %d dev queries, top %d, disjunctive\n", d.docs.n_rows,
           d.queries.n_rows, TOPK);
    printf("shared: k1 0.9, b 0.4 for every engine that can be set; default: each engine out of the box\n");
    printf("(shared 2-core machine: other jobs run at the same time, so timings vary between runs)\n\n");
    printf("%-12s %-8s %-10s %8s %12s %8s %8s %8s %8s %8s\n", "engine", "setting", "k1, b", "build s", "index bytes",
           "mem MiB", "q/s 1t", "q/s 2t", "MRR@10", "strict");
    for (i = 0; i < N_ROWS; i++) {
        const engine *e = &eng[i];
        printf("%-12s %-8s %-10s ", e->row->name, e->row->setting, e->row->k1_b);
        if (!e->ok) {
            printf("%s\n", e->cmd[0] ? "failed" : "not installed: skipped");
            continue;
        }
        printf("%8.2f %12.0f %8.1f %8.0f %8.0f %8.4f %8.4f\n", e->build_s, e->index_bytes, e->mem_kib / 1024.0, e->qps1,
               e->qps2, e->mrr10, e->mrr10_strict);
    }
    printf("\n");
    for (i = 0; i < N_ROWS; i++)
        if (eng[i].ok) printf("  %-12s %-8s %s\n", eng[i].row->name, eng[i].row->setting, eng[i].row->note);
    if (eng[0].ok && eng[0].build_s_2t > 0) printf("  retrlm build on 2 threads: %.2f s\n", eng[0].build_s_2t);
    printf("\n");
    for (i = 0; i < N_ROWS; i++) {
        const char *k = eng[i].row->key;
        if (!eng[i].ok) continue;
        printf("%s_build_s=%.3f\n%s_index_bytes=%.0f\n%s_mem_kib=%.0f\n%s_qps1=%.0f\n%s_qps2=%.0f\n%s_mrr10=%.4f\n"
               "%s_mrr10_strict=%.4f\n",
               k, eng[i].build_s, k, eng[i].index_bytes, k, eng[i].mem_kib, k, eng[i].qps1, k, eng[i].qps2, k,
               eng[i].mrr10, k, eng[i].mrr10_strict);
    }
    if (eng[0].ok) { // retrlm (shared) against the shared rows of the others and FTS5
        printf("retrlm_build_s_2t=%.3f\n", eng[0].build_s_2t);
        for (i = 1; i < N_ROWS; i++) {
            const char *k = eng[i].row->key;
            if (eng[i].ok && eng[i].qps1 > 0 && (!strcmp(eng[i].row->setting, "shared") || !strcmp(k, "fts5")))
                printf("qps1_ratio_vs_%s=%.2f\nindex_ratio_vs_%s=%.2f\n", k, eng[0].qps1 / eng[i].qps1, k,
                       eng[0].index_bytes / eng[i].index_bytes);
        }
    }
    debpkg_free(&d);
    return 0;
}
