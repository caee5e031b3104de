// bench/tokenizer.c - GPT-2 BPE encode throughput on the KJV (retrlm on 1 and 2 threads,
// tiktoken in node) and BPE training time for an 8,192-token vocabulary on the KJV train split
// (retrlm on 1 and 2 threads, sentencepiece's spm_train --model_type=bpe).
// Run from the repository root: make bench-tokenizer. Data: $RETRLM_DATA or ../shared/data.
// Peers (bench/peers.sh): -DRETRLM_BENCH_NODE (node + npm: tiktoken is installed into build/npm
// on first use) and -DRETRLM_BENCH_SPM (spm_train). A missing peer is reported, not fatal.
// With node, 20,000 random multi-script strings are also encoded by both and compared.
// MB = 10^6 bytes; each encode figure is the median of RUNS timed runs after a warm-up.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include "../tests/files.h"

#define RUNS 5

static char data_dir[512];

static const char *data_path(const char *rel, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", data_dir, rel);
    return buf;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// the KJV verses, each followed by "\n": one text, and the verses as documents
static const retrlm_tokenizer *g_tok;
static char *g_text;
static size_t g_len;
static const char **g_docs;
static size_t *g_lens;
static int g_nd;
static int *g_ids;
static size_t g_n;

// Compares retrlm with tiktoken's ids in path (lines: hex text TAB ids); mismatches, -1 on error.
static long diff_check(const char *path, long *rows) {
    FILE *f = fopen(path, "r");
    static char line[1 << 16];
    static unsigned char text[1 << 15];
    static int ref[1 << 14], got[1 << 14];
    long bad = 0;
    *rows = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t'), *p;
        size_t n = 0, nr = 0, k;
        if (!tab) continue;
        for (p = line; p + 1 < tab && n < sizeof text; p += 2) {
            unsigned v = 0;
            if (sscanf(p, "%2x", &v) != 1) break;
            text[n++] = (unsigned char)v;
        }
        for (p = tab + 1; *p && *p != '\n' && nr < sizeof ref / sizeof ref[0];) {
            ref[nr++] = (int)strtol(p, &p, 10);
            while (*p == ' ') p++;
        }
        (*rows)++;
        if (retrlm_tokenizer_encode(g_tok, (const char *)text, n, 0, got, sizeof got / sizeof got[0],
                                    &k) != RETRLM_OK || k != nr || memcmp(got, ref, k * sizeof(int)))
            bad++;
    }
    fclose(f);
    return bad;
}

enum { WHOLE, BATCH, PER_VERSE };

static void run_encode(int how) {
    int i;
    size_t n;
    if (how == WHOLE) retrlm_tokenizer_encode(g_tok, g_text, g_len, 0, g_ids, g_len, &g_n);
    else if (how == BATCH)
        retrlm_tokenizer_encode_batch(g_tok, g_docs, g_lens, g_nd, 0, g_ids, g_len, NULL, &g_n);
    else {
        g_n = 0;
        for (i = 0; i < g_nd; i++) {
            retrlm_tokenizer_encode(g_tok, g_docs[i], g_lens[i], 0, g_ids + g_n, g_len - g_n, &n);
            g_n += n;
        }
    }
}

// median MB/s of RUNS runs after a warm-up
static double mbps(int how, int threads) {
    double t[RUNS];
    int r;
    set_threads(threads);
    run_encode(how);
    for (r = 0; r < RUNS; r++) {
        double t0 = retrlm_time_seconds();
        run_encode(how);
        t[r] = retrlm_time_seconds() - t0;
    }
    qsort(t, RUNS, sizeof t[0], cmp_double);
    return (double)g_len / 1e6 / t[RUNS / 2];
}

static double train_seconds(const char *path, int threads, int *vocab) {
    retrlm_tokenizer t;
    retrlm_tokenizer_train_config cfg;
    const char *sp[1] = {"<|endoftext|>"};
    double t0;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 8192;
    cfg.special_tokens = sp;
    cfg.n_special = 1;
    set_threads(threads);
    t0 = retrlm_time_seconds();
    if (retrlm_tokenizer_train_file(&t, &cfg, path) != RETRLM_OK) {
        printf("retrlm training failed: %s\n", retrlm_last_error());
        return -1;
    }
    t0 = retrlm_time_seconds() - t0;
    *vocab = t.n_vocab;
    retrlm_tokenizer_free(&t);
    return t0;
}

int main(void) {
    char p1[600], p2[600];
    const char *env = getenv("RETRLM_DATA"), *sp[1] = {"<|endoftext|>"};
    retrlm_tokenizer tok;
    size_t size, i, o = 0;
    char *tsv;
    int nv = 0, vocab = 0, cores = 1;
    double w1, w2, b1, b2, v1, tr1, tr2, tt_whole = -1, tt_verse = -1, spm1 = -1, spm2 = -1;
    long tt_count = -1, diff_rows = 0, diff_bad = -1;
    char tt_version[32] = "?";
    double load0 = loadavg(), load1;
    bench_machine();
    snprintf(data_dir, sizeof data_dir, "%s", env ? env : "../shared/data");
#ifdef _OPENMP
    cores = omp_get_num_procs();
#endif
    if (retrlm_tokenizer_load_tiktoken(&tok, data_path("gpt2-bpe/gpt2.tiktoken", p1, sizeof p1),
                                       sp, 1) != RETRLM_OK) {
        printf("cannot load the GPT-2 tokenizer: %s\n", retrlm_last_error());
        return 1;
    }
    g_tok = &tok;
    tsv = read_all(data_path("kjv/verses.tsv", p1, sizeof p1), &size);
    if (!tsv) {
        printf("cannot read %s\n", p1);
        return 1;
    }
    // text = every verse (4th column) followed by "\n"; documents = the verses with their "\n"
    g_text = (char *)malloc(size + 1);
    g_docs = (const char **)malloc(40000 * sizeof(char *));
    g_lens = (size_t *)malloc(40000 * sizeof(size_t));
    for (i = 0; i < size && tsv[i] != '\n'; i++) {
    }
    for (i++; i < size && g_nd < 40000;) {
        size_t e = i, f = i;
        int tabs = 0;
        while (e < size && tsv[e] != '\n')
            if (tsv[e++] == '\t' && ++tabs == 3) f = e;
        g_docs[g_nd] = g_text + o;
        memcpy(g_text + o, tsv + f, e - f);
        o += e - f;
        g_text[o++] = '\n';
        g_lens[g_nd] = (size_t)(g_text + o - g_docs[g_nd]);
        g_nd++;
        nv++;
        i = e + 1;
    }
    g_len = o;
    free(tsv);
    g_ids = (int *)malloc(g_len * sizeof(int));

    w1 = mbps(WHOLE, 1);
    w2 = mbps(WHOLE, 2);
    if (g_n != 1024541) printf("WARNING: KJV encodes to %lu tokens, GPT-2 gives 1024541\n", (unsigned long)g_n);
    b1 = mbps(BATCH, 1);
    b2 = mbps(BATCH, 2);
    v1 = mbps(PER_VERSE, 1);

#ifdef RETRLM_BENCH_NODE
    {
        FILE *pp;
        char line[1024];
        if (system("test -d build/npm/node_modules/tiktoken || (mkdir -p build/npm && "
                   "npm install --prefix build/npm --no-audit --no-fund tiktoken@1.0.22 "
                   ">/dev/null 2>&1)") != 0)
            printf("tiktoken: npm install failed; not measured\n");
        snprintf(line, sizeof line, "NODE_PATH=build/npm/node_modules node bench/tokenizer_peer.js %s %d",
                 data_path("kjv/verses.tsv", p1, sizeof p1), RUNS);
        pp = popen(line, "r");
        while (pp && fgets(line, sizeof line, pp)) {
            sscanf(line, "tiktoken_whole_mbps=%lf", &tt_whole);
            sscanf(line, "tiktoken_per_verse_mbps=%lf", &tt_verse);
            sscanf(line, "tiktoken_kjv_tokens=%ld", &tt_count);
            sscanf(line, "tiktoken_version=%31s", tt_version);
        }
        if (pp) pclose(pp);
        if (tt_whole < 0) printf("tiktoken: node run failed; not measured\n");
        if (system("mkdir -p build/bench && NODE_PATH=build/npm/node_modules node "
                   "bench/tokenizer_diff.js build/bench/tiktoken_diff.tsv 20000") == 0)
            diff_bad = diff_check("build/bench/tiktoken_diff.tsv", &diff_rows);
    }
#else
    printf("tiktoken: node/npm not installed; not measured\n");
#endif

    tr1 = train_seconds(data_path("kjv/train.txt", p2, sizeof p2), 1, &vocab);
    tr2 = train_seconds(p2, 2, &vocab);
#ifdef RETRLM_BENCH_SPM
    {
        char cmd[2048];
        int t;
        for (t = 1; t <= 2; t++) {
            double t0 = retrlm_time_seconds();
            snprintf(cmd, sizeof cmd, "mkdir -p build/bench && spm_train --input=%s "
                     "--model_prefix=build/bench/spm_kjv --vocab_size=8192 --model_type=bpe "
                     "--num_threads=%d --minloglevel=2 >build/bench/spm_train.log 2>&1", p2, t);
            if (system(cmd) != 0) {
                printf("spm_train failed (see build/bench/spm_train.log)\n");
                break;
            }
            if (t == 1) spm1 = retrlm_time_seconds() - t0;
            else spm2 = retrlm_time_seconds() - t0;
        }
    }
#else
    printf("spm_train: not installed (Debian: sentencepiece); not measured\n");
#endif

    load1 = loadavg();
    printf("\nGPT-2 BPE encode, KJV (%d verses + \"\\n\" each, %.2f MB, %lu tokens); %d cores, shared "
           "machine, load average %.1f before, %.1f after\n", nv, g_len / 1e6, (unsigned long)g_n,
           cores, load0, load1);
    printf("%-44s %10s %10s\n", "what", "MB/s", "vs tiktoken");
    printf("%-44s %10.2f %10s\n", "tiktoken (node, WASM), one call, whole text", tt_whole, "1.00");
    printf("  (tiktoken %s, its KJV count %ld)\n", tt_version, tt_count);
    printf("%-44s %10.2f %10s\n", "tiktoken (node, WASM), one call per verse", tt_verse, "-");
#define ROW(name, v) printf("%-44s %10.2f %10.2f\n", name, v, tt_whole > 0 ? (v) / tt_whole : 0.0)
    ROW("retrlm, whole text, 1 thread", w1);
    ROW("retrlm, whole text, 2 threads", w2);
    ROW("retrlm, encode_batch of verses, 1 thread", b1);
    ROW("retrlm, encode_batch of verses, 2 threads", b2);
    ROW("retrlm, one call per verse, 1 thread", v1);
    if (diff_bad >= 0)
        printf("differential check: %ld random multi-script strings, %ld differ from tiktoken\n",
               diff_rows, diff_bad);
    printf("\nBPE training, vocabulary 8192, KJV train split (%s)\n", p2);
    printf("%-44s %10s\n", "what", "seconds");
    printf("%-44s %10.2f\n", "spm_train --model_type=bpe, 1 thread", spm1);
    printf("%-44s %10.2f\n", "spm_train --model_type=bpe, 2 threads", spm2);
    printf("%-44s %10.2f\n", "retrlm, 1 thread", tr1);
    printf("%-44s %10.2f\n", "retrlm, 2 threads", tr2);
    printf("\n");
    printf("loadavg_before=%.2f\nloadavg_after=%.2f\n", load0, load1);
    printf("kjv_bytes=%lu\nkjv_tokens=%lu\n", (unsigned long)g_len, (unsigned long)g_n);
    printf("tiktoken_kjv_tokens=%ld\n", tt_count);
    printf("tiktoken_diff_strings=%ld\ntiktoken_diff_mismatches=%ld\n", diff_rows, diff_bad);
    printf("tiktoken_whole_mbps=%.2f\ntiktoken_per_verse_mbps=%.2f\n", tt_whole, tt_verse);
    printf("retrlm_whole_1t_mbps=%.2f\nretrlm_whole_2t_mbps=%.2f\n", w1, w2);
    printf("retrlm_batch_1t_mbps=%.2f\nretrlm_batch_2t_mbps=%.2f\n", b1, b2);
    printf("retrlm_per_verse_1t_mbps=%.2f\n", v1);
    if (tt_whole > 0) printf("encode_speedup_1t=%.2f\n", w1 / tt_whole);
    printf("train_vocab=%d\nretrlm_train_1t_s=%.3f\nretrlm_train_2t_s=%.3f\n", vocab, tr1, tr2);
    printf("spm_train_1t_s=%.3f\nspm_train_2t_s=%.3f\n", spm1, spm2);
    if (spm1 > 0 && tr1 > 0) printf("train_speedup_1t=%.2f\n", spm1 / tr1);
    retrlm_tokenizer_free(&tok);
    free(g_text);
    free(g_docs);
    free(g_lens);
    free(g_ids);
    return 0;
}
