// bench/debpkg_lm.h - debpkg_lm's overlap buckets, for the benches that report by them
// (strategies, npm). overlap_test.tsv (line, docid, n_8grams, overlap) gives each test line (a
// document) the share of its word 8-grams found in train; the buckets are all of test, then
// overlap 0, (0, 0.5] and (0.5, 1].
#ifndef BENCH_DEBPKG_LM_H
#define BENCH_DEBPKG_LM_H
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"

enum { BUCKETS = 4 };
FILES__UNUSED static const char *bucket_name[BUCKETS] = {"all", "0", "(0,0.5]", "(0.5,1]"};
FILES__UNUSED static const char *bucket_key[BUCKETS] = {"all", "o0", "o50", "o100"}; // in name=value lines

// the bucket of an overlap: 1 for 0, 2 for (0, 0.5], 3 for (0.5, 1]; 0 for none of them
FILES__UNUSED static int overlap_bucket(double o) {
    return o == 0.0 ? 1 : o > 0.0 && o <= 0.5 ? 2 : o > 0.5 ? 3 : 0;
}

// each of n_lines test lines' overlap from the overlap_test.tsv at path (0 for a line it does
// not name), malloc'd; NULL when the file cannot be read
FILES__UNUSED static double *overlap_of_lines(const char *path, size_t n_lines) {
    size_t len;
    char *t = read_all(path, &len), *line;
    double *o;
    if (!t) return NULL;
    o = (double *)calloc(n_lines ? n_lines : 1, sizeof(double));
    for (line = strchr(t, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        long ln = atol(line + 1);
        char *c = line + 1;
        int k;
        for (k = 0; k < 3 && c; k++) c = strchr(c + 1, '\t');
        if (c && ln >= 0 && (size_t)ln < n_lines) o[ln] = atof(c + 1);
    }
    free(t);
    return o;
}
#endif
