/* test_crash.c - a process killed (SIGKILL) in the middle of a save leaves the old file loadable.
   For every kind of save (checkpoint, safetensors, index, BM25, datastore, tokenizer, fvecs): the file is
   saved once (version 0); then, several times, a child process saves versions 1 and 0 in turn
   without end and is killed after a delay spread over a few saves' time. After each kill the
   file must load and be version 0 or 1, whole; the child's temporary ("<path>.tmp-<pid>") shows
   the kill landed inside a save, which must happen 3 times a kind (more kills until it has). The next save removes
   the temporary the dead process left. POSIX only (fork, kill). */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define CRASH_POSIX 1
#endif
#include <string.h>
#include "retrlm.h"
#include "test.h"

#define TRIALS 12     /* kills a kind, their delays spread over 0.3 to 3 saves' time */
#define MAX_TRIALS 240 /* more while fewer than 3 landed inside a save */

static retrlm_tokenizer tok;             /* the datastore's tokenizer */
static retrlm_tokenizer tok_v[2];        /* vocab 300 and 320 */
static retrlm_model model_v[2];          /* seeds 7 and 8 */
static retrlm_index index_v[2];          /* 20,000 and 20,001 vectors */
static retrlm_bm25 bm25_v[2];            /* 3,000 and 3,001 documents */
static retrlm_datastore ds_v[2];         /* 1,500 and 1,501 units */
static float *vecs;                      /* 50,001 x 16 */
static char docs[3001][96];

static const char *const corpus[] = {
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "fast tools for searching package descriptions in a local archive",
    "a library for reading and writing compressed files with a small memory footprint",
    "command line utility to convert between image formats and resize pictures",
};

static int n_units_of(int v) { return 1500 + v; }
static int n_docs_of(int v) { return 3000 + v; }
static size_t n_vecs_of(int v) { return 50000 + (size_t)v; }

static void setup(void) {
    retrlm_tokenizer_train_config tc;
    retrlm_model_config mc;
    retrlm_index_config ic;
    retrlm_bm25_config bc;
    retrlm_datastore_config dc;
    retrlm_rng rng;
    size_t i;
    int v;
    for (i = 0; i < 3001; i++)
        snprintf(docs[i], sizeof docs[i], "%s %lu", corpus[i % 5], (unsigned long)(i * 7919 % 100003));
    vecs = (float *)malloc(sizeof(float) * 16 * n_vecs_of(1));
    retrlm_rng_seed(&rng, 3);
    for (i = 0; i < 16 * n_vecs_of(1); i++) vecs[i] = retrlm_rng_float(&rng) - 0.5f;
    for (v = 0; v < 2; v++) {
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = 300 + 20 * v;
        CHECK_OK(retrlm_tokenizer_train(&tok_v[v], &tc, corpus, NULL, 5, NULL, NULL));
        memset(&mc, 0, sizeof mc);
        mc.vocab_size = 300, mc.dim = 64, mc.n_layers = 2, mc.n_heads = 2, mc.max_seq_len = 64, mc.max_batch = 1;
        mc.seed = 7 + (uint64_t)v;
        CHECK_OK(retrlm_model_init(&model_v[v], &mc));
        memset(&ic, 0, sizeof ic);
        ic.dim = 16;
        CHECK_OK(retrlm_index_init(&index_v[v], &ic));
        CHECK_OK(retrlm_index_add(&index_v[v], vecs, 20000 + (size_t)v, 16, NULL));
        memset(&bc, 0, sizeof bc);
        CHECK_OK(retrlm_bm25_init(&bm25_v[v], &bc));
        for (i = 0; i < (size_t)n_docs_of(v); i++) CHECK_OK(retrlm_bm25_add(&bm25_v[v], (int64_t)i, docs[i], strlen(docs[i])));
        CHECK_OK(retrlm_bm25_commit(&bm25_v[v]));
    }
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&tok, &tc, corpus, NULL, 5, NULL, NULL));
    for (v = 0; v < 2; v++) {
        memset(&dc, 0, sizeof dc);
        CHECK_OK(retrlm_datastore_init(&ds_v[v], &dc));
        for (i = 0; i < (size_t)n_units_of(v); i++)
            CHECK_OK(retrlm_datastore_add(&ds_v[v], &tok, (int64_t)i, docs[i], strlen(docs[i]), 0));
        CHECK_OK(retrlm_datastore_commit(&ds_v[v]));
    }
}

/* each kind: save version v to path (nonzero on failure); which version path holds (-1: none) */
static int save_checkpoint(int v, const char *path) { return retrlm_model_save(&model_v[v], NULL, NULL, path) != RETRLM_OK; }
static int which_model(retrlm_model *m) { /* frees m */
    int v = -1, w;
    for (w = 0; w < 2; w++)
        if (m->n_params == model_v[w].n_params && !memcmp(m->params, model_v[w].params, sizeof(float) * m->n_params)) v = w;
    retrlm_model_free(m);
    return v;
}
static int load_checkpoint(const char *path) {
    retrlm_model m;
    return retrlm_model_load(&m, path, NULL) != RETRLM_OK ? -1 : which_model(&m);
}
static int save_safetensors(int v, const char *path) { return retrlm_model_save_safetensors(&model_v[v], path) != RETRLM_OK; }
static int load_safetensors(const char *path) {
    retrlm_model m;
    return retrlm_model_load_safetensors(&m, path, &model_v[0].config) != RETRLM_OK ? -1 : which_model(&m);
}
static int save_index(int v, const char *path) { return retrlm_index_save(&index_v[v], path) != RETRLM_OK; }
static int load_index(const char *path) {
    retrlm_index ix;
    int v = -1;
    if (retrlm_index_load(&ix, path) != RETRLM_OK) return -1;
    if (ix.n == 20000 || ix.n == 20001) v = (int)(ix.n - 20000);
    if (v >= 0 && memcmp(ix.vectors, vecs, sizeof(float) * 16 * ix.n)) v = -1;
    retrlm_index_free(&ix);
    return v;
}
static int save_bm25(int v, const char *path) { return retrlm_bm25_save(&bm25_v[v], path) != RETRLM_OK; }
static int load_bm25(const char *path) {
    retrlm_bm25 bm;
    int v = -1;
    if (retrlm_bm25_load(&bm, path) != RETRLM_OK) return -1;
    if (bm.n_docs == n_docs_of(0) || bm.n_docs == n_docs_of(1)) v = bm.n_docs - n_docs_of(0);
    retrlm_bm25_free(&bm);
    return v;
}
static int save_datastore(int v, const char *path) { return retrlm_datastore_save(&ds_v[v], path) != RETRLM_OK; }
static int load_datastore(const char *path) {
    retrlm_datastore ds;
    int v = -1;
    if (retrlm_datastore_load(&ds, path) != RETRLM_OK) return -1;
    if (ds.n_units == n_units_of(0) || ds.n_units == n_units_of(1)) v = ds.n_units - n_units_of(0);
    retrlm_datastore_free(&ds);
    return v;
}
static int save_tokenizer(int v, const char *path) { return retrlm_tokenizer_save(&tok_v[v], path) != RETRLM_OK; }
static int load_tokenizer(const char *path) {
    retrlm_tokenizer t;
    int v = -1;
    if (retrlm_tokenizer_load(&t, path) != RETRLM_OK) return -1;
    if (t.n_vocab == tok_v[0].n_vocab || t.n_vocab == tok_v[1].n_vocab) v = t.n_vocab == tok_v[1].n_vocab;
    retrlm_tokenizer_free(&t);
    return v;
}
static int save_fvecs(int v, const char *path) { return retrlm_fvecs_write(path, vecs, n_vecs_of(v), 16) != RETRLM_OK; }
static int load_fvecs(const char *path) {
    float *x = NULL;
    size_t n = 0;
    int dim = 0, v = -1;
    if (retrlm_fvecs_read(path, &x, &n, &dim) != RETRLM_OK) return -1;
    if (dim == 16 && (n == n_vecs_of(0) || n == n_vecs_of(1)) && !memcmp(x, vecs, sizeof(float) * 16 * n)) v = (int)(n - n_vecs_of(0));
    retrlm_free(x);
    return v;
}

#ifdef CRASH_POSIX
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void crash_kind(const char *name, int (*save)(int, const char *), int (*load)(const char *)) {
    char path[128], tmp[160];
    double t0, per_save;
    int trial, mid = 0, seen[2] = {0, 0}, i;
    long last_pid = 0;
    snprintf(path, sizeof path, "build/tests/crash-%s.rlm", name);
    remove(path);
    CHECK(save(0, path) == 0);
    CHECK(load(path) == 0);
    t0 = now_s();
    for (i = 0; i < 4; i++) CHECK(save(i & 1, path) == 0);
    per_save = (now_s() - t0) / 4;
    for (trial = 0; trial < MAX_TRIALS && (trial < TRIALS || mid < 3); trial++) { /* 3 kills inside a save at least */
        struct timespec d;
        double delay = per_save * (0.3 + 2.7 * (trial % TRIALS) / (TRIALS - 1));
        int status = 0, v, ready[2];
        char c;
        pid_t pid;
        fflush(stdout), fflush(stderr);
        if (pipe(ready) != 0) {
            CHECK(!"pipe");
            return;
        }
        pid = fork();
        if (pid < 0) {
            CHECK(pid >= 0);
            return;
        }
        if (pid == 0) { /* the child: says it runs, then saves until it is killed */
            close(ready[0]);
            if (write(ready[1], "r", 1) != 1) _exit(4);
            for (;;)
                if (save(1, path) || save(0, path)) _exit(3);
        }
        close(ready[1]);
        CHECK(read(ready[0], &c, 1) == 1); /* the delay counts from the child's first save */
        close(ready[0]);
        d.tv_sec = (time_t)delay;
        d.tv_nsec = (long)((delay - (double)d.tv_sec) * 1e9);
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL); /* not a failed save */
        snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)pid);
        if (access(tmp, F_OK) == 0) mid++, last_pid = (long)pid;
        v = load(path);
        CHECK(v == 0 || v == 1);
        if (v == 0 || v == 1) seen[v]++;
    }
    printf("  %s: one save %.2f ms; %d kills, %d inside a save; the file then held version 0 %d times, version 1 %d\n",
           name, 1e3 * per_save, trial, mid, seen[0], seen[1]);
    CHECK(mid >= 3); /* the test reached the middle of a save */
    CHECK(save(0, path) == 0);
    CHECK(load(path) == 0);
    if (last_pid) { /* the dead process's temporary is gone after the next save */
        snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, last_pid);
        CHECK(access(tmp, F_OK) != 0);
    }
    remove(path);
}

static void test_crash_checkpoint(void) { crash_kind("checkpoint", save_checkpoint, load_checkpoint); }
static void test_crash_safetensors(void) { crash_kind("safetensors", save_safetensors, load_safetensors); }
static void test_crash_index(void) { crash_kind("index", save_index, load_index); }
static void test_crash_bm25(void) { crash_kind("bm25", save_bm25, load_bm25); }
static void test_crash_datastore(void) { crash_kind("datastore", save_datastore, load_datastore); }
static void test_crash_tokenizer(void) { crash_kind("tokenizer", save_tokenizer, load_tokenizer); }
static void test_crash_fvecs(void) { crash_kind("fvecs", save_fvecs, load_fvecs); }
#else
static void test_crash_posix_only(void) { SKIP("needs fork and kill (POSIX)"); }
#endif

int main(void) {
    int v;
    setup();
#ifdef CRASH_POSIX
    RUN(test_crash_checkpoint);
    RUN(test_crash_safetensors);
    RUN(test_crash_index);
    RUN(test_crash_bm25);
    RUN(test_crash_datastore);
    RUN(test_crash_tokenizer);
    RUN(test_crash_fvecs);
#else
    RUN(test_crash_posix_only);
#endif
    for (v = 0; v < 2; v++) {
        retrlm_tokenizer_free(&tok_v[v]);
        retrlm_model_free(&model_v[v]);
        retrlm_index_free(&index_v[v]);
        retrlm_bm25_free(&bm25_v[v]);
        retrlm_datastore_free(&ds_v[v]);
    }
    retrlm_tokenizer_free(&tok);
    free(vecs);
    return test_report();
}
