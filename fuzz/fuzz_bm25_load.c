// Fuzz target: the BM25 index loader (retrlm_bm25_load_memory). Each input is tried as it is
// and with its container CRCs recomputed, so that mutations reach the loader's own checks
// (counts, offsets, sortedness, every block) instead of stopping at a CRC. Whatever the loader
// accepts is then searched, updated and committed: an accepted file must be safe to use.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

static void use_index(retrlm_bm25 *bm) {
    static const char *const queries[] = {"alpha beta", "gamma", "one two three four", "zeta epsilon alpha running"};
    int64_t ids[8];
    float scores[8];
    int i, n;
    for (i = 0; i < 4; i++) {
        retrlm_bm25_search(bm, queries[i], strlen(queries[i]), 8, 0, ids, scores, &n);
        retrlm_bm25_search(bm, queries[i], strlen(queries[i]), 3, RETRLM_BM25_EXHAUSTIVE, ids, scores, &n);
    }
    retrlm_bm25_doc_length(bm, 3, &n);
    if (bm->n_docs > 0) retrlm_bm25_delete(bm, bm->doc_id_ ? bm->doc_id_[0] : 0);
    retrlm_bm25_add(bm, -5, "alpha new words", 15);
    retrlm_bm25_commit(bm);
    retrlm_bm25_search(bm, queries[0], strlen(queries[0]), 8, 0, ids, scores, &n);
}

// recomputes the section and header CRCs of a container image in place (where they fit)
static void fix_crcs(unsigned char *p, size_t size) {
    uint32_t n, i;
    unsigned char head[64];
    if (size < 64) return;
    n = retrlm__get_u32(p + 12);
    if (n > (size - 64) / 64) return;
    for (i = 0; i < n; i++) {
        unsigned char *e = p + 64 + (size_t)i * 64;
        uint64_t off = retrlm__get_u64(e + 32), bytes = retrlm__get_u64(e + 40);
        if (off <= size && bytes <= size - off) retrlm__put_u32(e + 48, retrlm_crc32(0, p + off, (size_t)bytes));
    }
    memcpy(head, p, 64);
    retrlm__put_u32(head + 48, 0);
    retrlm__put_u32(p + 48, retrlm_crc32(retrlm_crc32(0, head, 64), p + 64, (size_t)n * 64));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    retrlm_bm25 bm;
    void *copy = NULL;
    if (retrlm_bm25_load_memory(&bm, data, size) == RETRLM_OK) {
        use_index(&bm);
        retrlm_bm25_free(&bm);
    }
    if (posix_memalign(&copy, 64, size ? size : 1) != 0) return 0;
    if (size) memcpy(copy, data, size);
    fix_crcs((unsigned char *)copy, size);
    if (retrlm_bm25_load_memory(&bm, copy, size) == RETRLM_OK) { // borrows the aligned copy
        use_index(&bm);
        retrlm_bm25_free(&bm);
    }
    free(copy);
    return 0;
}
#include "fuzz/fuzz.h"
