/* bm25_data.h - the debpkg benchmark data for bench/bm25*.c: the documents, dev queries and
   qrels, read with the TSV reader of tests/files.h. */
#ifndef BM25_DATA_H
#define BM25_DATA_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"

/* docs.tsv (id name section text), queries_dev.tsv (qid text), qrels_dev.tsv (qid docid grade) */
typedef struct debpkg {
    tsv_file docs, queries, qrels;
} debpkg;

static int debpkg_load(debpkg *d, const char *root) {
    char p[1024];
    snprintf(p, sizeof p, "%s/debpkg/docs.tsv", root);
    if (!tsv_read(&d->docs, p, 0) || d->docs.n_cols != 4) return 0;
    snprintf(p, sizeof p, "%s/debpkg/queries_dev.tsv", root);
    if (!tsv_read(&d->queries, p, 0) || d->queries.n_cols != 2) return 0;
    snprintf(p, sizeof p, "%s/debpkg/qrels_dev.tsv", root);
    if (!tsv_read(&d->qrels, p, 0) || d->qrels.n_cols != 3) return 0;
    return 1;
}

static void debpkg_free(debpkg *d) {
    tsv_free(&d->docs);
    tsv_free(&d->queries);
    tsv_free(&d->qrels);
}

#endif
