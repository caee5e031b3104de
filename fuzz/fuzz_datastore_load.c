// Fuzz target: the datastore loader (retrlm_datastore_load_memory: its own sections and the BM25
// index inside it). A datastore that loads must keep every unit's text and tokens inside the
// file, give every unit a document, and answer a BM25 query with units it holds. Container size
// field and CRCs are repaired first (repair.h), so mutations reach the datastore's own checks.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include "fuzz/repair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    static const char query[] = "the quick brown fox";
    retrlm_datastore ds;
    unsigned char *data = fuzz_repaired_copy(input, size);
    if (!data) return 0;
    if (retrlm_datastore_load_memory(&ds, data, size) == RETRLM_OK) {
        retrlm_retrieve_params rp;
        int units[4], found = 0, u, i;
        for (u = 0; u < ds.n_units; u++) {
            size_t len;
            int nt;
            const char *t = retrlm_datastore_text(&ds, u, &len);
            const int *tk = retrlm_datastore_tokens(&ds, u, &nt);
            if ((len && !t) || nt < 0 || (nt && !tk)) __builtin_trap();
            if (len) (void)t[len - 1]; // inside the buffer, or ASan says so
            if (nt) (void)tk[nt - 1];
            (void)ds.unit_doc[u];
        }
        memset(&rp, 0, sizeof rp);
        rp.mode = RETRLM_RETRIEVE_BM25;
        if (retrlm_datastore_retrieve(&ds, &rp, query, sizeof query - 1, 4, RETRLM_NO_DOC, units, NULL,
                                      &found) == RETRLM_OK) {
            if (found < 0 || found > 4) __builtin_trap();
            for (i = 0; i < found; i++)
                if (units[i] < 0 || units[i] >= ds.n_units) __builtin_trap();
        }
        retrlm_datastore_free(&ds);
    }
    free(data);
    return 0;
}
#include "fuzz/fuzz.h"
