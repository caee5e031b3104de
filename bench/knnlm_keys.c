// bench/knnlm_keys.c - kNN-LM keys at the cost of one forward pass a token.
// retrlm_knnlm_build reads every token once: lanes of blocks of seq_len/2 tokens, each block
// attending to the keys and values carried from the block before. The reference here is how it
// made keys before: windows of seq_len that overlap by half, every token read twice, the second
// half of each window keyed. On a prefix of the train split both are timed in the same run and
// scored as kNN-LMs on valid with the same index and settings; then the whole train split is
// keyed and timed.
//   make bench-knnlm_keys     the strategies bench's LM alone on debpkg_lm (make it first:
//                             see below), the first 1,000,000 train tokens, 30,000 of valid
//   build/bench/knnlm_keys [model.rlm tok.rlm [corpus_dir [prefix_tokens [valid_tokens]]]]
// The default model is build/strategies-debpkg_lm-4m/lm-3000-4000000.rlm (and its tok.rlm), which
//   RETRLM_STRATEGIES_ROWS=none build/bench/strategies debpkg_lm 3000 build/strategies-debpkg_lm-4m 4000000
// trains. Keys are the last layer's feed-forward inputs; the index is IVF 1,024 lists searched
// with 32 (f32 on the prefix; 8-bit codes over the whole split, so that it fits in memory).
// Scoring reads valid in windows of 256 tokens moving by 128 (the strategies bench's memory
// table), k 128, lambda 0.25, temperatures 2 and 32. RETRLM_KNNLM_KEYS_WHOLE=0 leaves out the
// whole split.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "../tests/files.h"

static void die(const char *what) {
    fprintf(stderr, "knnlm_keys: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

// the reference: windows [s, s + seq) at a stride of seq/2, max_batch of them a forward, each
// keeping its keys from s + seq/2 on (all of the first window's): every token read twice
static float *keys_two_pass(retrlm_model *m, const int *ids, size_t n, int seq) {
    const int D = m->config.dim, B = m->config.max_batch;
    const size_t nk = n - 1, half = (size_t)seq / 2;
    float *keys = (float *)malloc(nk * D * sizeof(float));
    int *in = (int *)malloc((size_t)B * seq * sizeof(int)), len[64];
    size_t start = 0, done = 0;
    if (!keys || !in || B > 64) die("two-pass keys: no memory");
    while (done < nk) {
        int rows = 0, r, T = 0;
        size_t s0 = start;
        for (r = 0; r < B && start < nk && (r == 0 || start + half <= nk); r++, start += half) {
            size_t l = nk - start < (size_t)seq ? nk - start : (size_t)seq;
            len[r] = (int)l;
            T = len[r] > T ? len[r] : T;
            rows++;
        }
        for (r = 0; r < rows; r++) { // stride T, zero-padded
            memcpy(in + (size_t)r * T, ids + s0 + (size_t)r * half, (size_t)len[r] * sizeof(int));
            memset(in + (size_t)r * T + len[r], 0, (size_t)(T - len[r]) * sizeof(int));
        }
        if (retrlm_model_forward(m, in, rows, T, len, RETRLM_FORWARD_NO_LOGITS)) die("forward");
        for (r = 0; r < rows; r++) {
            size_t w0 = s0 + (size_t)r * half, t;
            const float *h = retrlm_model_ffn_input(m, m->config.n_layers - 1) + (size_t)r * T * D;
            for (t = w0 == 0 ? 0 : half; t < (size_t)len[r]; t++)
                if (w0 + t >= done) {
                    memcpy(keys + (w0 + t) * D, h + t * D, (size_t)D * sizeof(float));
                    done = w0 + t + 1;
                }
        }
    }
    free(in);
    return keys;
}

// an index over keys (nk of them) with ids 0..nk-1, and the values after them
static void keys_index(retrlm_knnlm *kn, const float *keys, const int *ids, size_t nk, int D, int sq8) {
    retrlm_index_config ic;
    memset(kn, 0, sizeof *kn);
    memset(&ic, 0, sizeof ic);
    ic.dim = D;
    ic.metric = RETRLM_METRIC_L2;
    ic.nlist = 1024;
    ic.nprobe = 32;
    ic.storage = sq8 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
    if (retrlm_index_init(&kn->index, &ic) || retrlm_index_train(&kn->index, keys, nk, D) ||
        retrlm_index_add(&kn->index, keys, nk, D, NULL))
        die("index");
    kn->values = (int *)malloc(nk * sizeof(int));
    memcpy(kn->values, ids + 1, nk * sizeof(int));
    kn->n = nk;
}

static double score(retrlm_model *m, const retrlm_knnlm *kn, float temp, const int *ids, size_t n, size_t bytes) {
    retrlm_ralm_config rc;
    double bpb;
    memset(&rc, 0, sizeof rc);
    rc.mode = RETRLM_RALM_NONE;
    rc.stride = 128;
    rc.context_tokens = 128;
    rc.knnlm = kn;
    rc.knn_k = 128;
    rc.lambda = 0.25f;
    rc.knn_temperature = temp;
    if (retrlm_ralm_bits_per_byte(m, NULL, NULL, ids, n, bytes, &rc, &bpb, NULL)) die("score");
    return bpb;
}

// the first n tokens of path's text, and the bytes they cover (tokens are whole lines' here:
// the text is cut at the line that holds the n-th token's end, then encoded again)
static int *read_split(const retrlm_tokenizer *tok, const char *path, size_t max_tokens, size_t *n, size_t *bytes) {
    size_t len, cut;
    char *t = read_all(path, &len);
    int *ids = NULL;
    if (!t) {
        fprintf(stderr, "knnlm_keys: cannot read %s\n", path);
        exit(1);
    }
    cut = len;
    for (;;) { // shrink to whole lines until the tokens fit
        if (retrlm_tokenizer_encode_alloc(tok, t, cut, 0, &ids, n)) die("encode");
        if (!max_tokens || *n <= max_tokens) break;
        cut = (size_t)((double)cut * (double)max_tokens / (double)*n * 0.999);
        while (cut > 0 && t[cut - 1] != '\n') cut--;
        retrlm_free(ids);
    }
    *bytes = cut;
    free(t);
    return ids;
}

static double kv_t0, kv_done; // when retrlm_knnlm_build's forward passes ended
static int keys_progress(void *user, const char *stage, double done, double total) {
    (void)user;
    if (!strcmp(stage, "knnlm keys") && done >= total && kv_done == 0) kv_done = retrlm_time_seconds() - kv_t0;
    return 0;
}

int main(int argc, char **argv) {
    const char *mp = argc > 1 ? argv[1] : "build/strategies-debpkg_lm-4m/lm-3000-4000000.rlm";
    const char *tp = argc > 2 ? argv[2] : "build/strategies-debpkg_lm-4m/tok.rlm";
    const char *dir = argc > 3 ? argv[3] : "../shared/data/debpkg_lm";
    size_t prefix = argc > 4 ? (size_t)atol(argv[4]) : 1000000, nvalid = argc > 5 ? (size_t)atol(argv[5]) : 30000;
    retrlm_model m;
    retrlm_model_config over;
    retrlm_tokenizer tok;
    retrlm_knnlm kn[2], whole;
    retrlm_index_config ic;
    char path[1024];
    int *tr, *va, D, seq, t, i;
    size_t ntr, trb, nva, vab, nall, allb;
    double t0, secs[2], bpb[2][2], lm_bpb, whole_secs;
    float *keys[2];
    static const float temps[2] = {2.0f, 32.0f};
    const int whole_on = !getenv("RETRLM_KNNLM_KEYS_WHOLE") || atoi(getenv("RETRLM_KNNLM_KEYS_WHOLE"));
    bench_machine();
    if (retrlm_tokenizer_load(&tok, tp)) {
        printf("knnlm_keys: no tokenizer %s (%s): make the strategies bench's debpkg_lm LM first:\n"
               "  RETRLM_STRATEGIES_ROWS=none build/bench/strategies debpkg_lm 3000 build/strategies-debpkg_lm-4m 4000000\n",
               tp, retrlm_last_error());
        return 0;
    }
    memset(&over, 0, sizeof over);
    over.inference = 1;
    if (retrlm_model_load(&m, mp, &over)) {
        printf("knnlm_keys: no model %s (%s): make it first (see the top of bench/knnlm_keys.c)\n", mp,
               retrlm_last_error());
        return 0;
    }
    D = m.config.dim;
    seq = m.config.max_seq_len;
    snprintf(path, sizeof path, "%s/train.txt", dir);
    tr = read_split(&tok, path, prefix, &ntr, &trb);
    snprintf(path, sizeof path, "%s/valid.txt", dir);
    va = read_split(&tok, path, nvalid, &nva, &vab);
    printf("model %s: dim %d, %d layers, windows of %d, batch %d; train prefix %lu tokens (%lu bytes), "
           "valid %lu tokens\n", mp, D, m.config.n_layers, seq, m.config.max_batch, (unsigned long)ntr,
           (unsigned long)trb, (unsigned long)nva);
    // the prefix: the reference, then one pass
    t0 = retrlm_time_seconds();
    keys[0] = keys_two_pass(&m, tr, ntr, seq);
    secs[0] = retrlm_time_seconds() - t0;
    {
        retrlm_knnlm k1;
        retrlm_index_config fc;
        memset(&fc, 0, sizeof fc);
        fc.progress = keys_progress;
        kv_t0 = retrlm_time_seconds(), kv_done = 0;
        if (retrlm_knnlm_build(&k1, &m, tr, ntr, seq, &fc)) die("knnlm_build");
        secs[1] = kv_done; // the forward passes, not the flat index after them
        keys[1] = (float *)malloc((ntr - 1) * D * sizeof(float));
        { // back to position order from the flat index (ids are positions)
            size_t r;
            for (r = 0; r < k1.index.n; r++)
                memcpy(keys[1] + (size_t)k1.index.ids[r] * D, k1.index.vectors + r * D, (size_t)D * sizeof(float));
        }
        retrlm_knnlm_free(&k1);
    }
    {
        double diff = 0, norm = 0;
        size_t j;
        for (j = 0; j < (ntr - 1) * (size_t)D; j++) {
            double d = (double)keys[0][j] - keys[1][j];
            diff += d * d, norm += (double)keys[0][j] * keys[0][j];
        }
        printf("one pass against two: relative rms difference of the keys %.4f\n", sqrt(diff / norm));
        fprintf(stderr, "knnlm_keys: two passes %.1f s, one %.1f s\n", secs[0], secs[1]);
    }
    {
        retrlm_ralm_config rc;
        memset(&rc, 0, sizeof rc);
        rc.mode = RETRLM_RALM_NONE, rc.stride = 128, rc.context_tokens = 128;
        if (retrlm_ralm_bits_per_byte(&m, NULL, NULL, va, nva, vab, &rc, &lm_bpb, NULL)) die("score");
    }
    for (i = 0; i < 2; i++) {
        keys_index(&kn[i], keys[i], tr, ntr - 1, D, 0);
        for (t = 0; t < 2; t++) bpb[i][t] = score(&m, &kn[i], temps[t], va, nva, vab);
        retrlm_knnlm_free(&kn[i]);
        free(keys[i]);
    }
    // the whole split, one pass, 8-bit IVF (RETRLM_KNNLM_KEYS_WHOLE=0: not)
    retrlm_free(tr);
    snprintf(path, sizeof path, "%s/train.txt", dir);
    tr = read_split(&tok, path, whole_on ? 0 : 1000, &nall, &allb);
    memset(&ic, 0, sizeof ic);
    ic.nlist = 1024;
    ic.nprobe = 32;
    ic.storage = RETRLM_STORAGE_SQ8;
    ic.progress = keys_progress;
    kv_t0 = t0 = retrlm_time_seconds(), kv_done = 0;
    if (whole_on) {
        fprintf(stderr, "knnlm_keys: the whole split, %lu tokens\n", (unsigned long)nall);
        if (retrlm_knnlm_build(&whole, &m, tr, nall, seq, &ic)) die("knnlm_build, whole split");
        whole_secs = retrlm_time_seconds() - t0;
        retrlm_knnlm_free(&whole);
    } else
        whole_secs = 0;
    retrlm_free(tr);

    printf("\nkNN-LM keys, %s (%s)\n", dir, retrlm_cpu_path());
    printf("| keys | tokens | forward passes a token | seconds | keys/s | valid bits per byte, T 2 | T 32 |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    printf("| LM alone (no keys) | | | | | %.4f | %.4f |\n", lm_bpb, lm_bpb);
    printf("| windows overlapping by half (before) | %lu | 2 | %.1f | %.0f | %.4f | %.4f |\n", (unsigned long)ntr, secs[0],
           (double)(ntr - 1) / secs[0], bpb[0][0], bpb[0][1]);
    printf("| one pass, carried blocks (retrlm_knnlm_build) | %lu | 1 | %.1f | %.0f | %.4f | %.4f |\n",
           (unsigned long)ntr, secs[1], (double)(ntr - 1) / secs[1], bpb[1][0], bpb[1][1]);
    if (whole_on)
        printf("| one pass, the whole train split, SQ8 IVF 1024 | %lu | 1 | %.1f (%.1f forward) | %.0f | | |\n",
               (unsigned long)nall, whole_secs, kv_done, (double)(nall - 1) / whole_secs);
    printf("knnlm_keys.prefix_tokens=%lu\nknnlm_keys.two_pass_s=%.2f\nknnlm_keys.one_pass_s=%.2f\n"
           "knnlm_keys.speedup=%.3f\nknnlm_keys.lm_bpb=%.4f\n", (unsigned long)ntr, secs[0], secs[1],
           secs[0] / secs[1], lm_bpb);
    for (t = 0; t < 2; t++)
        printf("knnlm_keys.two_pass_bpb_t%.0f=%.4f\nknnlm_keys.one_pass_bpb_t%.0f=%.4f\n", (double)temps[t],
               bpb[0][t], (double)temps[t], bpb[1][t]);
    if (whole_on)
        printf("knnlm_keys.whole_tokens=%lu\nknnlm_keys.whole_s=%.1f\nknnlm_keys.whole_forward_s=%.1f\n",
               (unsigned long)nall, whole_secs, kv_done);
    retrlm_model_free(&m);
    retrlm_tokenizer_free(&tok);
    retrlm_free(va);
    return 0;
}
