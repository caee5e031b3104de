// Fuzz target: the index loader (retrlm_index_load_memory), then searches, a remove and an add
// on whatever it accepted: a file that passes validation must be safe to use.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

// Most mutations would only break a CRC; so that the fuzzer reaches the index checks, the
// CRCs of a copy are made right first (for every section whose bounds are in the file).
static unsigned char *fix_crcs(const uint8_t *data, size_t size) {
    unsigned char *p = (unsigned char *)malloc(size ? size : 1);
    uint32_t ns, i;
    if (!p) return NULL;
    memcpy(p, data, size);
    if (size < 64) return p;
    ns = retrlm__get_u32(p + 12);
    if (ns > (size - 64) / 64) return p;
    for (i = 0; i < ns; i++) {
        unsigned char *e = p + 64 + 64 * (size_t)i;
        uint64_t off = retrlm__get_u64(e + 32), bytes = retrlm__get_u64(e + 40);
        if (off <= size && bytes <= size - off) retrlm__put_u32(e + 48, retrlm_crc32(0, p + off, (size_t)bytes));
    }
    retrlm__put_u32(p + 48, 0);
    retrlm__put_u32(p + 48, retrlm_crc32(0, p, 64 + 64 * (size_t)ns));
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    retrlm_index ix;
    unsigned char *img = fix_crcs(data, size);
    if (!img) return 0;
    if (retrlm_index_load_memory(&ix, img, size) == RETRLM_OK) {
        if (ix.dim <= 4096) {
            float *q = (float *)malloc(sizeof(float) * 3 * (size_t)ix.dim);
            int64_t ids[3 * 4];
            float sc[3 * 4];
            retrlm_search_params p;
            int j;
            if (q) {
                for (j = 0; j < 3 * ix.dim; j++) q[j] = (float)((j * 7) % 5) - 2.0f;
                p.nprobe = 3;
                p.rerank = 0;
                retrlm_index_search(&ix, q, 1, ix.dim, 4, NULL, ids, sc);
                retrlm_index_search(&ix, q, 3, ix.dim, 4, &p, ids, sc);
                if (ix.n) {
                    int64_t rm = ix.ids[0];
                    retrlm_index_remove(&ix, &rm, 1, NULL);
                }
                retrlm_index_add(&ix, q, 1, ix.dim, NULL);
                retrlm_index_search(&ix, q, 2, ix.dim, 4, NULL, ids, sc);
                free(q);
            }
        }
        retrlm_index_free(&ix);
    }
    free(img);
    return 0;
}
#include "fuzz/fuzz.h"
