// test_oom: no abort when memory runs out. The library is built here with an allocator that
// fails its n-th call, and each path below runs once for every n, from the first allocation to
// past the last: a BM25 build (batches, a delete, commit, search), an index build (SQ8 IVF:
// train, add, search), a datastore build (a tokenizer trained, documents cut into units,
// commit, BM25 retrieval), a model init with a forward pass and a safetensors
// save. Every call must return RETRLM_OK or RETRLM_ERR_NOMEM, never crash or abort (stb_ds's
// own growth would: the library reserves before it); after a failure the object must still
// work once memory is back; and nothing may leak (make sanitize runs it under LeakSanitizer).
// The counter is not thread-safe, so the paths run on one thread.
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

static long oom_calls, oom_fail_at; // fail call number oom_fail_at (from 1); 0: never
static int oom_hit;                 // the failure happened in this run

static int oom_fails(void) {
    if (++oom_calls != oom_fail_at) return 0;
    oom_hit = 1;
    return 1;
}
static void *oom_malloc(size_t n) { return oom_fails() ? NULL : malloc(n); }
static void *oom_realloc(void *p, size_t n) { return oom_fails() ? NULL : realloc(p, n); }

#define RETRLM_MALLOC(n) oom_malloc(n)
#define RETRLM_REALLOC(p, n) oom_realloc(p, n)
#define RETRLM_FREE(p) free(p)
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"
#ifdef _OPENMP
#include <omp.h>
#endif

// a result of a call under the failing allocator: fine when OK, or NOMEM once the failure hit
#define OOM_OK(expr)                                                                              \
    do {                                                                                          \
        retrlm_result oom_r_ = (expr);                                                            \
        if (oom_r_ != RETRLM_OK) {                                                                \
            if (!(oom_r_ == RETRLM_ERR_NOMEM && oom_hit))                                      \
                fprintf(stderr, "call %ld of %ld: %s: %s\n", oom_fail_at, oom_calls,              \
                        retrlm_result_string(oom_r_), retrlm_last_error());                        \
            CHECK(oom_r_ == RETRLM_ERR_NOMEM && oom_hit);                                         \
            goto out;                                                                             \
        }                                                                                         \
    } while (0)

static const char *const oom_docs[] = {
    "the quick brown fox jumps over the lazy dog",
    "a lazy afternoon by the river with a fox",
    "packages for the debian distribution of linux",
    "retrieval augmented language models read what they find",
    "the dog barks at the quick fox in the garden",
    "indexes of dense vectors and of sparse terms",
    "language models predict the next token of the text",
    "brown bread and butter for an afternoon tea",
    "the river runs past the garden and the old mill",
    "dense retrievers embed queries and documents",
    "tokens bytes merges and a vocabulary of pieces",
    "the fox the dog and the river meet again"};
enum { OOM_DOCS = (int)(sizeof oom_docs / sizeof oom_docs[0]) };

// runs path(n) for n = 1, 2, ... until a run whose allocations all succeeded; returns the runs
static long oom_sweep(void (*path)(void)) {
    long n;
    for (n = 1;; n++) {
        oom_calls = 0, oom_hit = 0, oom_fail_at = n;
        path();
        oom_fail_at = 0;
        if (!oom_hit) return n;
        if (n > 1000000) {
            CHECK(!"an allocation sweep that never ends");
            return n;
        }
    }
}

static void oom_bm25_path(void) {
    retrlm_bm25 bm;
    int64_t ids[OOM_DOCS], hits[5], del = 103;
    size_t lens[OOM_DOCS];
    float sc[5];
    int i, n = 0, half = OOM_DOCS / 2;
    memset(&bm, 0, sizeof bm);
    for (i = 0; i < OOM_DOCS; i++) ids[i] = 100 + i, lens[i] = strlen(oom_docs[i]);
    OOM_OK(retrlm_bm25_init(&bm, NULL));
    OOM_OK(retrlm_bm25_add_batch(&bm, half, ids, oom_docs, lens));
    OOM_OK(retrlm_bm25_commit(&bm));
    OOM_OK(retrlm_bm25_add_batch(&bm, OOM_DOCS - half, ids + half, oom_docs + half, lens + half));
    OOM_OK(retrlm_bm25_delete(&bm, del));
    OOM_OK(retrlm_bm25_commit(&bm));
    OOM_OK(retrlm_bm25_search(&bm, "lazy fox river", 14, 5, 0, hits, sc, &n));
    CHECK(n == 5);
out:
    if (oom_hit) { // memory is back: what is there still commits and answers
        oom_fail_at = 0;
        if (bm.analyzer.stop_ || bm.n_docs || bm.n_pending) {
            CHECK_OK(retrlm_bm25_commit(&bm));
            CHECK_OK(retrlm_bm25_search(&bm, "lazy fox river", 14, 5, 0, hits, sc, &n));
            CHECK(n >= 0 && n <= 5);
        }
    }
    retrlm_bm25_free(&bm);
}

static void oom_index_path(void) {
    enum { N = 300, D = 8 };
    static float x[N * D];
    retrlm_index ix;
    retrlm_index_config ic;
    int64_t ids[3];
    float sc[3];
    int i;
    memset(&ix, 0, sizeof ix);
    for (i = 0; i < N * D; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    memset(&ic, 0, sizeof ic);
    ic.dim = D, ic.nlist = 4, ic.nprobe = 2, ic.storage = RETRLM_STORAGE_SQ8, ic.rerank = 2;
    OOM_OK(retrlm_index_init(&ix, &ic));
    OOM_OK(retrlm_index_train(&ix, x, N, D));
    OOM_OK(retrlm_index_add(&ix, x, N / 2, D, NULL));
    OOM_OK(retrlm_index_add(&ix, x + (N / 2) * D, N - N / 2, D, NULL));
    OOM_OK(retrlm_index_search(&ix, x, 1, D, 3, NULL, ids, sc));
    CHECK(ids[0] >= 0);
out:
    if (oom_hit && ix.dim) { // an add that failed left the index as it was: it still searches
        oom_fail_at = 0;
        if (ix.n) CHECK_OK(retrlm_index_search(&ix, x, 1, D, 3, NULL, ids, sc));
    }
    retrlm_index_free(&ix);
}

static retrlm_tokenizer oom_tok; // trained once, without failures

static void oom_datastore_path(void) {
    retrlm_datastore ds;
    retrlm_datastore_config dc;
    int units[3], n = 0, i;
    float sc[3];
    memset(&ds, 0, sizeof ds);
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = 6;
    OOM_OK(retrlm_datastore_init(&ds, &dc));
    for (i = 0; i < OOM_DOCS; i++)
        OOM_OK(retrlm_datastore_add(&ds, &oom_tok, i, oom_docs[i], strlen(oom_docs[i]),
                                    RETRLM_DATASTORE_CHUNK));
    OOM_OK(retrlm_datastore_commit(&ds));
    OOM_OK(retrlm_datastore_retrieve(&ds, NULL, "the lazy fox", 12, 3, RETRLM_NO_DOC, units, sc, &n));
    CHECK(n > 0);
out:
    retrlm_datastore_free(&ds);
}

static void oom_model_path(void) {
    retrlm_model m;
    retrlm_model_config mc;
    int tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t size = 0;
    void *buf = NULL;
    memset(&m, 0, sizeof m);
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = 32, mc.dim = 16, mc.n_layers = 2, mc.n_heads = 2, mc.max_seq_len = 8;
    OOM_OK(retrlm_model_init(&m, &mc));
    OOM_OK(retrlm_model_forward(&m, tokens, 1, 8, NULL, 0));
    OOM_OK(retrlm_model_save_safetensors_memory(&m, NULL, 0, &size));
    buf = malloc(size);
    OOM_OK(retrlm_model_save_safetensors_memory(&m, buf, size, &size));
out:
    free(buf);
    retrlm_model_free(&m);
}

// the sweep over path; the runs must cover at least min allocations (the path allocates)
static void oom_check(const char *name, void (*path)(void), long min) {
    long runs = oom_sweep(path);
    printf("%s: %ld allocations, each failed once\n", name, runs - 1);
    CHECK(runs > min);
}

static void test_oom_bm25(void) { oom_check("bm25", oom_bm25_path, 50); }
static void test_oom_index(void) { oom_check("index", oom_index_path, 5); }
static void test_oom_model(void) { oom_check("model", oom_model_path, 5); }

static void test_oom_datastore(void) {
    retrlm_tokenizer_train_config tc;
    size_t lens[OOM_DOCS];
    int i;
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    for (i = 0; i < OOM_DOCS; i++) lens[i] = strlen(oom_docs[i]);
    CHECK_OK(retrlm_tokenizer_train(&oom_tok, &tc, oom_docs, lens, OOM_DOCS, NULL, NULL));
    oom_check("datastore", oom_datastore_path, 50);
    retrlm_tokenizer_free(&oom_tok);
}

int main(void) {
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    RUN(test_oom_bm25);
    RUN(test_oom_index);
    RUN(test_oom_datastore);
    RUN(test_oom_model);
    return test_report();
}
