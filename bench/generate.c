// bench/generate.c - generation with a KV cache, and what a model opened for it costs.
// 1. Against llama2.c's run.c (../shared/peers/llama2c, built -O3 -march=native -fopenmp into
//    build/bench/llama2c_run; a separate process, so the two OpenMP runtimes never meet): the
//    same shape and the same random weights (written in its checkpoint format, the query and key
//    rows of each head permuted from retrlm's rotary pairing (i, i + hd/2) to its (2i, 2i + 1), so
//    both compute the same function), greedy, 256 positions from one token, tokens/s on 1 and 2
//    threads, quiet and with one core held by a busy loop (another process); retrlm with f32
//    weights and with them in int8 (retrlm_model_quantize), llama2.c in f32 (it has no int8 in
//    run.c). Shapes: stories15M (dim 288, 6 layers, 6 heads, vocab 32000) and a 110M-like one (dim
//    768, 12 layers, 12 heads). Each figure is the median of 3 runs, the programs alternating.
// 2. An inference-only model (retrlm_model_config.inference): a GPT-2-small-shaped file (vocab
//    50257, dim 768, 12 layers, ffn 2048, 1,024 positions, 494 MB of f32 weights) opened
//    memory-mapped, the time to open it (median of 5) and the peak resident memory of a process
//    that opens it and generates until its context is full, against the weights + the KV cache;
//    beside it the same file loaded for training (gradients and activations too), and its int8
//    file opened the same way.
// 3. What int8 costs in quality: bits per byte of the KJV test text (../shared/data/kjv/test.txt,
//    windows of 256) for bench/strategies' KJV LM (build/strategies-kjv/lm-1500-907012.rlm and its
//    tok.rlm, or the LM and tokenizer given as arguments), f32 and int8.
//   make bench-generate        (BENCH_QUICK=1 in the environment: stories15M only, no 110M)
//   build/bench/generate [peer|memory|quality [LM TOK]]     one part only
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../tests/files.h"

#define PEER "build/bench/llama2c_run"
#define PEER_SRC "../shared/peers/llama2c/run.c"
enum { STEPS = 256, REPS = 5 };

typedef struct shape {
    const char *name;
    int vocab, dim, layers, heads, ffn, seq;
} shape;

static void die(const char *what) {
    fprintf(stderr, "generate: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

// ---- the peer's files: checkpoint (legacy format) and tokenizer.bin --------------------------

static void put(FILE *f, const float *p, size_t n) {
    if (fwrite(p, sizeof(float), n, f) != n) die("write the peer's checkpoint");
}

// m's weights in llama2.c's order; the query and key rows of each head permuted so that its
// rotary pairs (2i, 2i + 1) are retrlm's (i, i + hd/2)
static void write_peer_model(const retrlm_model *m, const char *path) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, hd = D / c->n_heads, F = c->ffn_dim;
    int32_t hdr[7];
    float *row = (float *)malloc((size_t)D * D * sizeof(float));
    FILE *f = fopen(path, "wb");
    int l, t, i;
    if (!f || !row) die("open the peer's checkpoint");
    hdr[0] = D, hdr[1] = F, hdr[2] = c->n_layers, hdr[3] = c->n_heads, hdr[4] = c->n_heads;
    hdr[5] = c->untied ? -c->vocab_size : c->vocab_size, hdr[6] = c->max_seq_len;
    if (fwrite(hdr, sizeof hdr, 1, f) != 1) die("write the peer's checkpoint");
    put(f, m->param[RETRLM_T_EMBED], (size_t)c->vocab_size * D);
    put(f, m->param[RETRLM_T_ATTN_NORM], (size_t)c->n_layers * D);
    for (t = RETRLM_T_WQ; t <= RETRLM_T_WK; t++)
        for (l = 0; l < c->n_layers; l++) {
            const float *w = retrlm_model_tensor_ptr(m, (retrlm_model_tensor)t, l, 0);
            for (i = 0; i < D; i++) { // output row i = head h, dim j: from (i, i + hd/2)
                int h = i / hd, j = i % hd, src = h * hd + (j % 2 ? hd / 2 : 0) + j / 2;
                memcpy(row + (size_t)i * D, w + (size_t)src * D, (size_t)D * sizeof(float));
            }
            put(f, row, (size_t)D * D);
        }
    put(f, m->param[RETRLM_T_WV], (size_t)c->n_layers * D * D);
    put(f, m->param[RETRLM_T_WO], (size_t)c->n_layers * D * D);
    put(f, m->param[RETRLM_T_FFN_NORM], (size_t)c->n_layers * D);
    put(f, m->param[RETRLM_T_W_GATE], (size_t)c->n_layers * F * D);
    put(f, m->param[RETRLM_T_W_DOWN], (size_t)c->n_layers * D * F);
    put(f, m->param[RETRLM_T_W_UP], (size_t)c->n_layers * F * D);
    put(f, m->param[RETRLM_T_FINAL_NORM], (size_t)D);
    memset(row, 0, (size_t)c->max_seq_len * hd * sizeof(float)); // the unused rotary tables
    put(f, row, (size_t)c->max_seq_len * hd);
    if (c->untied) put(f, m->param[RETRLM_T_LM_HEAD], (size_t)c->vocab_size * D);
    if (fclose(f)) die("write the peer's checkpoint");
    free(row);
}

// a tokenizer.bin whose token i is "<i>": the peer prints them, so its tokens can be read back
static void write_peer_tokenizer(int vocab, const char *path) {
    FILE *f = fopen(path, "wb");
    int32_t max_len = 16, len, i;
    char piece[32];
    float score = 0.0f;
    if (!f || fwrite(&max_len, 4, 1, f) != 1) die("write the peer's tokenizer");
    for (i = 0; i < vocab; i++) {
        len = (int32_t)snprintf(piece, sizeof piece, "<%d>", (int)i);
        if (fwrite(&score, 4, 1, f) != 1 || fwrite(&len, 4, 1, f) != 1 ||
            fwrite(piece, 1, (size_t)len, f) != (size_t)len)
            die("write the peer's tokenizer");
    }
    if (fclose(f)) die("write the peer's tokenizer");
}

static int peer_ready(void) {
    FILE *f = fopen(PEER_SRC, "r");
    if (!f) return 0;
    fclose(f);
    return system("cc -O3 -march=native -fopenmp " PEER_SRC " -lm -o " PEER " 2>/dev/null") == 0;
}

// runs the peer on threads; its tok/s (0 on failure); its first tokens into toks (up to n)
static double peer_run(const char *model, const char *tok, int threads, int *toks, int n) {
    char cmd[1024], buf[1 << 16];
    double rate = 0.0;
    size_t got;
    FILE *p;
    const char *s;
    int k = 0;
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d %s %s -z %s -t 0 -n %d 2>&1", threads, PEER,
             model, tok, STEPS);
    if (!(p = popen(cmd, "r"))) return 0.0;
    got = fread(buf, 1, sizeof buf - 1, p);
    buf[got] = '\0';
    pclose(p);
    if ((s = strstr(buf, "achieved tok/s:")) != NULL) rate = atof(s + 15);
    for (s = buf; k < n && (s = strchr(s, '<')) != NULL; s++) toks[k++] = atoi(s + 1);
    for (; k < n; k++) toks[k] = -1;
    return rate;
}

// retrlm: greedy from token 1 (the peer's BOS), STEPS positions, tokens/s as the peer counts
// them (its clock starts after the first of its STEPS forward passes: STEPS - 1 of them; here the
// prompt's and got - 1 more, got in all); the first generated tokens into toks
static double retrlm_run(retrlm_model *m, int *toks, int n) {
    retrlm_sampler sp;
    int prompt[1] = {1}, out[STEPS], got = 0, i;
    double t0, t1;
    memset(&sp, 0, sizeof sp);
    t0 = retrlm_time_seconds();
    if (retrlm_model_generate(m, prompt, 1, STEPS - 1, &sp, NULL, out, &got)) die("generate");
    t1 = retrlm_time_seconds();
    for (i = 0; i < n; i++) toks[i] = i < got ? out[i] : -1;
    return got / (t1 - t0);
}

static void versus_peer(const shape *s, int have_peer, char lines[][128], int *nl) {
    retrlm_model_config mc;
    retrlm_model m, mq;
    char model_path[256], tok_path[256];
    int th, busy, r, agree = 0, tr[16], tp[16], tq[16];
#ifdef _OPENMP
    const int nth = 2; // 1 and 2 threads
#else
    const int nth = 1;
#endif
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = s->vocab, mc.dim = s->dim, mc.n_layers = s->layers, mc.n_heads = s->heads;
    mc.ffn_dim = s->ffn, mc.max_seq_len = s->seq, mc.inference = 1, mc.seed = 7;
    mc.init_std = 0.1f; // logits far enough apart that both programs take the same greedy path
    if (retrlm_model_init(&m, &mc) || retrlm_model_quantize(&mq, &m)) die("model");
    snprintf(model_path, sizeof model_path, "build/bench/llama2c_%s.bin", s->name);
    snprintf(tok_path, sizeof tok_path, "build/bench/llama2c_%s_tokenizer.bin", s->name);
    if (have_peer) {
        write_peer_model(&m, model_path);
        write_peer_tokenizer(s->vocab, tok_path);
    }
    printf("\n%s: dim %d, %d layers, %d heads, ffn %d, vocab %d, %d positions, greedy; tokens/s\n"
           "| threads | other core | retrlm f32 | retrlm int8 | llama2.c (f32) | f32 / llama2.c | "
           "int8 / llama2.c |\n|---|---|---:|---:|---:|---:|---:|\n",
           s->name, s->dim, s->layers, s->heads, s->ffn, s->vocab, STEPS);
    // 1 and 2 threads take turns within a phase, so that a drift of the machine (a shared
    // host's other tenants) falls on both; the model keeps its thread choice for 2 threads
    // across the calls (a call on one thread leaves it alone)
    for (busy = 0; busy <= 1; busy++) {
        double a[2][REPS], aq[2][REPS], b[2][REPS];
        pid_t bp = busy ? bench_busy_start() : -1;
        for (r = 0; r < REPS; r++)
            for (th = 1; th <= nth; th++) {
                set_threads(th);
                a[th - 1][r] = retrlm_run(&m, tr, 16);
                aq[th - 1][r] = retrlm_run(&mq, tq, 16);
                b[th - 1][r] = have_peer ? peer_run(model_path, tok_path, th, tp, 16) : 0.0;
                if (have_peer && !busy && th == 1 && r == 0)
                    for (agree = 0; agree < 16 && tr[agree] == tp[agree]; agree++) {}
            }
        bench_busy_stop(bp);
        set_threads(2);
        for (th = 1; th <= nth; th++) {
            double ra, rq, rb;
            ra = bench_median(a[th - 1], REPS), rq = bench_median(aq[th - 1], REPS);
            rb = bench_median(b[th - 1], REPS);
            if (rb > 0.0)
                printf("| %d | %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", th, busy ? "busy" : "idle",
                       ra, rq, rb, ra / rb, rq / rb);
            else
                printf("| %d | %s | %.1f | %.1f | peer missing | | |\n", th, busy ? "busy" : "idle", ra, rq);
            snprintf(lines[(*nl)++], 128, "generate_%s_t%d%s_tokens_per_s=%.1f", s->name, th,
                     busy ? "_busy" : "", ra);
            snprintf(lines[(*nl)++], 128, "generate_%s_t%d%s_int8_tokens_per_s=%.1f", s->name, th,
                     busy ? "_busy" : "", rq);
            if (rb > 0.0) {
                snprintf(lines[(*nl)++], 128, "generate_%s_t%d%s_int8_vs_llama2c=%.2f", s->name, th,
                         busy ? "_busy" : "", rq / rb);
                snprintf(lines[(*nl)++], 128, "generate_%s_t%d%s_llama2c_tokens_per_s=%.1f",
                         s->name, th, busy ? "_busy" : "", rb);
                snprintf(lines[(*nl)++], 128, "generate_%s_t%d%s_vs_llama2c=%.2f", s->name, th,
                         busy ? "_busy" : "", ra / rb);
            }
        }
        if (busy && nth == 2) {
            double r1 = bench_median(a[0], REPS), r2 = bench_median(a[1], REPS);
            double q1 = bench_median(aq[0], REPS), q2 = bench_median(aq[1], REPS);
            printf("beside a busy core, 2 threads against 1: f32 %.2fx, int8 %.2fx\n", r2 / r1, q2 / q1);
            snprintf(lines[(*nl)++], 128, "generate_%s_busy_t2_vs_t1=%.2f", s->name, r2 / r1);
            snprintf(lines[(*nl)++], 128, "generate_%s_busy_int8_t2_vs_t1=%.2f", s->name, q2 / q1);
        }
    }
    if (have_peer) {
        printf("the first 16 greedy tokens: %d agree with llama2.c's (f32)\n", agree);
        snprintf(lines[(*nl)++], 128, "generate_%s_tokens_agree_of_16=%d", s->name, agree);
    }
    retrlm_model_free(&mq);
    retrlm_model_free(&m);
}

// ---- an inference-only model: open time and resident memory ----------------------------------

// in a child process: open path (inference or for training) and, with generate, generate until
// the context is full; writes the open time (s), and the peak resident set (VmHWM) over the one
// before opening (KiB), to fd
static void child_open(const char *path, int inference, int generate, int fd) {
    retrlm_model_config over;
    retrlm_model m;
    retrlm_sampler sp;
    int prompt[1] = {1}, *out, got;
    double t, v[3];
    v[2] = (double)proc_status_kib("VmRSS");
    memset(&over, 0, sizeof over);
    over.inference = inference;
    memset(&sp, 0, sizeof sp);
    t = retrlm_time_seconds();
    if (retrlm_model_load(&m, path, &over)) die("open the model");
    v[0] = retrlm_time_seconds() - t;
    if (generate) {
        out = (int *)malloc((size_t)m.config.max_seq_len * sizeof(int));
        if (!out || retrlm_model_generate(&m, prompt, 1, m.config.max_seq_len, &sp, NULL, out, &got))
            die("generate");
        free(out);
    }
    v[1] = (double)proc_status_kib("VmHWM") - v[2];
    if (write(fd, v, sizeof v) != (ssize_t)sizeof v) _exit(1);
    retrlm_model_free(&m);
    _exit(0);
}

// a new process (this program again, not a fork: OpenMP's threads do not survive a fork) runs
// child_open
static int measure_open(const char *path, int inference, int generate, double *v) {
    int fds[2], st = 0;
    pid_t p;
    if (pipe(fds)) return 1;
    if ((p = fork()) == 0) {
        char fd[16];
        close(fds[0]);
        snprintf(fd, sizeof fd, "%d", fds[1]);
        execl("/proc/self/exe", "generate", "open-child", path, inference ? "1" : "0",
              generate ? "1" : "0", fd, (char *)NULL);
        _exit(1);
    }
    close(fds[1]);
    if (p < 0 || read(fds[0], v, 3 * sizeof(double)) != (ssize_t)(3 * sizeof(double))) st = 1;
    close(fds[0]);
    if (p > 0) waitpid(p, NULL, 0);
    return st;
}

static void memory(char lines[][128], int *nl) {
    const char *path = "build/bench/gpt2small.rlm", *path8 = "build/bench/gpt2small-int8.rlm";
    retrlm_model_config mc;
    double open_s[5], open8_s[5], v[3], weights_mb, kv_mb, hwm_mb, full[3], q8[3];
    int i;
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = 50257, mc.dim = 768, mc.n_layers = 12, mc.n_heads = 12, mc.ffn_dim = 2048;
    mc.max_seq_len = 1024, mc.inference = 1;
    {
        retrlm_model m, mq;
        if (retrlm_model_init(&m, &mc)) die("model");
        weights_mb = (double)m.n_params * 4.0 / 1e6;
        kv_mb = 2.0 * mc.n_layers * (double)mc.max_seq_len * mc.dim * 4.0 / 1e6;
        if (retrlm_model_save(&m, NULL, NULL, path) || retrlm_model_quantize(&mq, &m) ||
            retrlm_model_save(&mq, NULL, NULL, path8))
            die("save");
        retrlm_model_free(&mq);
        retrlm_model_free(&m);
    }
    // the open times: medians of 5 processes that only open, f32 and int8 alternating; then
    // one process each that opens and generates until the context is full, for the peak
    for (i = 0; i < 5; i++) {
        if (measure_open(path, 1, 0, v)) die("open in a child");
        open_s[i] = v[0];
        if (measure_open(path8, 1, 0, v)) die("open in a child");
        open8_s[i] = v[0];
    }
    if (measure_open(path, 1, 1, v)) die("open in a child");
    hwm_mb = v[1] * 1024.0 / 1e6;
    if (measure_open(path, 0, 1, full) || measure_open(path8, 1, 1, q8)) die("load in a child");
    q8[0] = bench_median(open8_s, 5);
    printf("\nGPT-2-small shape (vocab 50257, dim 768, 12 layers, ffn 2048, 1024 positions), f32: "
           "weights %.1f MB, KV cache %.1f MB\n| opened | open (ms) | peak resident, context full "
           "(MB) | / (weights + KV) |\n"
           "|---|---:|---:|---:|\n", weights_mb, kv_mb);
    printf("| inference-only, mapped | %.2f | %.1f | %.2f |\n", 1e3 * bench_median(open_s, 5), hwm_mb,
           hwm_mb / (weights_mb + kv_mb));
    printf("| for training (retrlm_model_load) | %.1f | %.1f | %.2f |\n", 1e3 * full[0],
           full[1] * 1024.0 / 1e6, full[1] * 1024.0 / 1e6 / (weights_mb + kv_mb));
    printf("| int8 (retrlm_model_quantize), mapped | %.2f | %.1f | %.2f |\n", 1e3 * q8[0],
           q8[1] * 1024.0 / 1e6, q8[1] * 1024.0 / 1e6 / (weights_mb + kv_mb));
    snprintf(lines[(*nl)++], 128, "gpt2small_open_ms=%.2f", 1e3 * bench_median(open_s, 5));
    snprintf(lines[(*nl)++], 128, "gpt2small_inference_peak_mb=%.1f", hwm_mb);
    snprintf(lines[(*nl)++], 128, "gpt2small_inference_vs_weights_kv=%.2f", hwm_mb / (weights_mb + kv_mb));
    snprintf(lines[(*nl)++], 128, "gpt2small_training_load_peak_mb=%.1f", full[1] * 1024.0 / 1e6);
    snprintf(lines[(*nl)++], 128, "gpt2small_int8_open_ms=%.2f", 1e3 * q8[0]);
    snprintf(lines[(*nl)++], 128, "gpt2small_int8_peak_mb=%.1f", q8[1] * 1024.0 / 1e6);
    snprintf(lines[(*nl)++], 128, "gpt2small_int8_vs_f32_weights_kv=%.2f",
             q8[1] * 1024.0 / 1e6 / (weights_mb + kv_mb));
    remove(path);
    remove(path8);
}

// ---- int8's cost in quality: bits per byte of KJV test, f32 and int8 ---------------------------
static void quality(const char *lm_path, const char *tok_path, char lines[][128], int *nl) {
    retrlm_model_config over;
    retrlm_model m, mq;
    retrlm_tokenizer tok;
    char *text;
    int *ids;
    size_t len, n = 0;
    double b32 = 0.0, b8 = 0.0, t32, t8;
    memset(&over, 0, sizeof over);
    over.inference = 1;
    if (!(text = read_all("../shared/data/kjv/test.txt", &len)) || retrlm_tokenizer_load(&tok, tok_path) ||
        retrlm_model_load(&m, lm_path, &over)) {
        printf("\nint8 quality: skipped (needs ../shared/data/kjv/test.txt, %s and %s: make "
               "bench-strategies, or give an LM and its tokenizer)\n", lm_path, tok_path);
        free(text);
        return;
    }
    if (retrlm_model_quantize(&mq, &m)) die("quantize");
    if (retrlm_tokenizer_encode_alloc(&tok, text, len, 0, &ids, &n)) die("encode");
    t32 = retrlm_time_seconds();
    if (retrlm_lm_bits_per_byte(&m, ids, n, len, 256, &b32)) die("bits per byte");
    t32 = retrlm_time_seconds() - t32;
    t8 = retrlm_time_seconds();
    if (retrlm_lm_bits_per_byte(&mq, ids, n, len, 256, &b8)) die("bits per byte");
    t8 = retrlm_time_seconds() - t8;
    printf("\nint8 quality: %s on KJV test (%lu tokens, %lu bytes, windows of 256)\n"
           "| weights | bits per byte | change | scoring s |\n|---|---:|---:|---:|\n"
           "| f32 | %.4f | | %.1f |\n| int8 | %.4f | %+.2f%% | %.1f |\n", lm_path, (unsigned long)n,
           (unsigned long)len, b32, t32, b8, 100.0 * (b8 - b32) / b32, t8);
    snprintf(lines[(*nl)++], 128, "kjv_test_f32_bpb=%.4f", b32);
    snprintf(lines[(*nl)++], 128, "kjv_test_int8_bpb=%.4f", b8);
    snprintf(lines[(*nl)++], 128, "kjv_test_int8_change_pct=%.2f", 100.0 * (b8 - b32) / b32);
    retrlm_free(ids);
    free(text);
    retrlm_tokenizer_free(&tok);
    retrlm_model_free(&mq);
    retrlm_model_free(&m);
}

int main(int argc, char **argv) {
    static const shape shapes[] = {
        {"stories15m", 32000, 288, 6, 6, 768, 256},
        {"110m", 32000, 768, 12, 12, 2048, 1024},
    };
    char lines[128][128];
    int nl = 0, i, have_peer, quick = getenv("BENCH_QUICK") != NULL;
    const char *part = argc > 1 ? argv[1] : "";
    if (argc == 6 && !strcmp(part, "open-child")) child_open(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    setvbuf(stdout, NULL, _IOLBF, 0); // a table is seen as it is made
    if (*part && strcmp(part, "peer") && strcmp(part, "memory") && strcmp(part, "quality")) {
        fprintf(stderr, "usage: generate [peer|memory|quality [LM TOK]]\n");
        return 2;
    }
    bench_machine();
    if (!*part || !strcmp(part, "peer")) {
        have_peer = peer_ready();
        if (!have_peer) printf("llama2.c: peer missing (%s not found or not built); retrlm alone\n", PEER_SRC);
        for (i = 0; i < (quick ? 1 : 2); i++) versus_peer(&shapes[i], have_peer, lines, &nl);
    }
    if (!*part || !strcmp(part, "quality"))
        quality(argc > 3 ? argv[2] : "build/strategies-kjv/lm-1500-907012.rlm",
                argc > 3 ? argv[3] : "build/strategies-kjv/tok.rlm", lines, &nl);
    if ((!*part && !quick) || !strcmp(part, "memory")) memory(lines, &nl);
    printf("\n");
    for (i = 0; i < nl; i++) printf("%s\n", lines[i]);
    return 0;
}
