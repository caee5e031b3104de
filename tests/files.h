/* files.h - small helpers shared by the tests and the benchmarks (tests/, bench/): whole-file
   reading, the reader of the project's TSV data, the thread count and the load average. Tests
   include "files.h", benchmarks "../tests/files.h". Every function is static and may go unused;
   C99 and C++. examples/ do not use it: each example stays one file a user can copy alone. */
#ifndef RETRLM_FILES_H
#define RETRLM_FILES_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FILES__UNUSED __attribute__((unused))
#else
#define FILES__UNUSED
#endif

/* reads a whole file into a NUL-terminated malloc'd buffer; NULL if missing or unreadable;
   *n gets its length in bytes (n may be NULL) */
FILES__UNUSED static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    long len;
    char *b = NULL;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = (char *)malloc((size_t)len + 1)) != NULL) {
        if (fread(b, 1, (size_t)len, f) == (size_t)len) {
            b[len] = 0;
            if (n) *n = (size_t)len;
        } else {
            free(b);
            b = NULL;
        }
    }
    fclose(f);
    return b;
}

/* unescapes the n bytes of a TSV field at s in place (\\ \t \n \r); returns the new length */
FILES__UNUSED static size_t tsv_unescape(char *s, size_t n) {
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            s[o++] = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
        } else
            s[o++] = s[i];
    }
    return o;
}

/* a TSV file of the data: a header line, then rows of fields split on TAB, escaped as above */
typedef struct tsv_file {
    char  *buf;   /* whole file, fields unescaped in place */
    char **field; /* (n_rows, n_cols) NUL-terminated fields, header excluded */
    int    n_rows, n_cols;
} tsv_file;

/* frees what tsv_read allocated and zeroes t */
FILES__UNUSED static void tsv_free(tsv_file *t) {
    free(t->buf);
    free(t->field);
    memset(t, 0, sizeof *t);
}

/* reads at most max_rows rows (0: all); missing fields of a short row are ""; 0 when the file
   is missing or memory runs out */
FILES__UNUSED static int tsv_read(tsv_file *t, const char *path, int max_rows) {
    size_t n;
    char *p, *end;
    int cols = 1, cap = 0;
    memset(t, 0, sizeof *t);
    if (!(t->buf = read_all(path, &n))) return 0;
    end = t->buf + n;
    for (p = t->buf; *p && *p != '\n'; p++) cols += *p == '\t';
    t->n_cols = cols;
    p = *p ? p + 1 : p;
    while (p < end && (!max_rows || t->n_rows < max_rows)) {
        int c = 0;
        if (t->n_rows == cap) {
            char **grown;
            cap = cap ? 2 * cap : 1024;
            grown = (char **)realloc(t->field, (size_t)cap * (size_t)cols * sizeof(char *));
            if (!grown) {
                tsv_free(t);
                return 0;
            }
            t->field = grown;
        }
        while (c < cols) {
            char *s = p;
            int last; /* the row's last field */
            while (s < end && *s != '\t' && *s != '\n') s += *s == '\\' && s + 1 < end ? 2 : 1;
            last = s >= end || *s == '\n';
            t->field[(size_t)t->n_rows * (size_t)cols + (size_t)c++] = p;
            p[tsv_unescape(p, (size_t)(s - p))] = 0; /* may overwrite the TAB or newline at s */
            p = s < end ? s + 1 : s;
            if (last) break;
        }
        while (c < cols) t->field[(size_t)t->n_rows * (size_t)cols + (size_t)c++] = end;
        t->n_rows++;
    }
    return 1;
}

/* the field at (row, col), NUL-terminated and unescaped */
FILES__UNUSED static const char *tsv_get(const tsv_file *t, int row, int col) {
    return t->field[(size_t)row * (size_t)t->n_cols + (size_t)col];
}

/* the number of OpenMP threads for what follows; nothing in a build without OpenMP */
FILES__UNUSED static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* peak resident set (VmHWM) and current (VmRSS) of this process in KiB
   (Linux: /proc/self/status), 0 if unknown */
FILES__UNUSED static long proc_status_kib(const char *key) {
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
/* the CPU's model name from /proc/cpuinfo into buf ("unknown" elsewhere); returns buf */
FILES__UNUSED static const char *cpu_model(char *buf, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, cap, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            size_t n;
            c += 2;
            n = strcspn(c, "\n");
            snprintf(buf, cap, "%.*s", (int)n, c);
            break;
        }
    }
    if (f) fclose(f);
    return buf;
}

/* the 1-minute load average (-1 where /proc/loadavg is missing): other work on a shared machine */
FILES__UNUSED static double loadavg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}
#endif
