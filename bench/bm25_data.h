/* bm25_data.h - the debpkg benchmark data for bench/bm25*.c: a reader for the data's TSV
   (fields split on TAB, escapes \\ \t \n \r mapped back) and the dev queries and qrels. */
#ifndef BM25_DATA_H
#define BM25_DATA_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tsv_file {
    char  *buf;   /* whole file, fields unescaped in place */
    char **field; /* (n_rows, n_cols) NUL-terminated fields, header excluded */
    int    n_rows, n_cols;
} tsv_file;

static void tsv_free(tsv_file *t) {
    free(t->buf);
    free(t->field);
    memset(t, 0, sizeof *t);
}

static int tsv_read(tsv_file *t, const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    char *p, *end;
    int cols = 1, cap = 0;
    memset(t, 0, sizeof *t);
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->buf = (char *)malloc((size_t)n + 1);
    if (!t->buf || fread(t->buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        tsv_free(t);
        return 0;
    }
    fclose(f);
    t->buf[n] = 0;
    end = t->buf + n;
    for (p = t->buf; *p && *p != '\n'; p++) cols += *p == '\t';
    t->n_cols = cols;
    p = *p ? p + 1 : p;
    while (p < end) {
        int c = 0;
        if (t->n_rows == cap) {
            cap = cap ? 2 * cap : 1024;
            t->field = (char **)realloc(t->field, (size_t)cap * (size_t)cols * sizeof(char *));
        }
        while (c < cols) {
            char *w = p, *s = p;
            t->field[(size_t)t->n_rows * (size_t)cols + (size_t)c] = w;
            while (s < end && *s != '\t' && *s != '\n') {
                if (*s == '\\' && s + 1 < end) {
                    char e = s[1];
                    *w++ = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : e;
                    s += 2;
                } else
                    *w++ = *s++;
            }
            p = s < end ? s + 1 : s;
            *w = 0;
            c++;
            if (s >= end || *s == '\n') break;
        }
        while (c < cols) t->field[(size_t)t->n_rows * (size_t)cols + (size_t)c++] = end;
        t->n_rows++;
    }
    return 1;
}

static const char *tsv_get(const tsv_file *t, int row, int col) {
    return t->field[(size_t)row * (size_t)t->n_cols + (size_t)col];
}

/* docs.tsv (id name section text), queries_dev.tsv (qid text), qrels_dev.tsv (qid docid grade) */
typedef struct debpkg {
    tsv_file docs, queries, qrels;
} debpkg;

static int debpkg_load(debpkg *d, const char *root) {
    char p[1024];
    snprintf(p, sizeof p, "%s/debpkg/docs.tsv", root);
    if (!tsv_read(&d->docs, p) || d->docs.n_cols != 4) return 0;
    snprintf(p, sizeof p, "%s/debpkg/queries_dev.tsv", root);
    if (!tsv_read(&d->queries, p) || d->queries.n_cols != 2) return 0;
    snprintf(p, sizeof p, "%s/debpkg/qrels_dev.tsv", root);
    if (!tsv_read(&d->qrels, p) || d->qrels.n_cols != 3) return 0;
    return 1;
}

static void debpkg_free(debpkg *d) {
    tsv_free(&d->docs);
    tsv_free(&d->queries);
    tsv_free(&d->qrels);
}

/* peak resident set (VmHWM) and current (VmRSS) of this process in KiB, 0 if unknown */
static long proc_status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    size_t kl = strlen(key);
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) v = atol(line + kl + 1);
    fclose(f);
    return v;
}
#endif
