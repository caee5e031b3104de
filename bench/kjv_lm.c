// bench/kjv_lm.c - trains a byte-level causal LM from scratch on ../shared/data/kjv/train.txt
// within a time budget and reports bits per byte on kjv/valid.txt (the curve) and kjv/test.txt
// (the end). Bytes are the tokens (vocabulary 256), so bits per byte need no tokenizer.
//   make bench-kjv_lm       defaults (the reported run): 20 minutes, dim 192, 4 layers, 3 heads,
//                           batch 16 x 128, lr 3e-3
//   build/bench/kjv_lm MINUTES DIM LAYERS HEADS SEQ BATCH LR [STEPS]
// STEPS fixes the schedule's length (the run is then reproducible bit for bit whatever the
// machine's speed, until the time budget cancels it); without it the program times 3 steps,
// fits the schedule to the budget and refits it after 50 steps.
// VOCAB=N (environment): tokens are a byte-level BPE vocabulary of N trained on train.txt
// (its training time counts in the budget); bits per byte still divide by the text's bytes.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <stdio.h>
#include <stdlib.h>
#include "../tests/files.h"

// a split's tokens (its bytes, or BPE ids when tok is set); *bytes gets its length in bytes
static int *read_tokens(const char *path, const retrlm_tokenizer *tok, size_t *n, size_t *bytes) {
    char *b = read_all(path, bytes);
    int *t = NULL;
    size_t i;
    if (!b) return NULL;
    if (tok) {
        if (retrlm_tokenizer_encode_alloc(tok, b, *bytes, 0, &t, n)) t = NULL;
    } else {
        t = (int *)malloc((*bytes + 1) * sizeof(int));
        for (i = 0; i < *bytes; i++) t[i] = (unsigned char)b[i];
        *n = *bytes;
    }
    free(b);
    return t;
}

typedef struct run {
    double t0, budget;
    retrlm_lm_train_state *st;
    retrlm_adamw *opt;
    int refit; /* refit the schedule's length to the budget after 50 steps */
} run;

static int progress(void *user, const char *stage, double done, double total) {
    run *r = (run *)user;
    double el = retrlm_time_seconds() - r->t0;
    (void)total;
    if (r->refit && !strcmp(stage, "train") && done == 50) {
        // a shared machine's speed drifts: fit the cosine to the time left, evaluations ~7%
        double per = el / 50.0;
        r->opt->config.total_steps = 50 + (int)((r->budget - el) * 0.93 / per);
        printf("step 50 at %.1f s: schedule refit to %d steps\n", el, r->opt->config.total_steps);
    }
    if (!strcmp(stage, "valid"))
        printf("step %6.0f  %7.1f s  train loss %.4f  valid bpb %.4f\n", done, el, r->st->last_loss,
               r->st->last_valid_bpb);
    else if ((int64_t)done % 100 == 0)
        printf("step %6.0f  %7.1f s  train loss %.4f (%.3f bits a token)\n", done, el,
               r->st->last_loss, r->st->last_loss / log(2.0));
    fflush(stdout);
    return el > r->budget; // cancel when the time is up
}

int main(int argc, char **argv) {
    double minutes = argc > 1 ? atof(argv[1]) : 20.0;
    retrlm_model_config mc;
    retrlm_model m;
    retrlm_adamw_config oc;
    retrlm_adamw o;
    retrlm_adamw_group g[2];
    retrlm_lm_train_state st;
    retrlm_lm_train_config tc;
    size_t ntr = 0, nva = 0, nte = 0, btr = 0, bva = 0, bte = 0;
    int vocab = getenv("VOCAB") ? atoi(getenv("VOCAB")) : 0, *tr, *va, *te;
    int ng, seq, batch;
    float lr;
    double bpb_valid = 0, bpb_test = 0, t_train, t_start = retrlm_time_seconds(), t_tok = 0;
    retrlm_tokenizer tok;
    run r;
    retrlm_result res;
    bench_machine();
    if (vocab > 256) { // BPE on the train split, inside the time budget
        char *text = read_all("../shared/data/kjv/train.txt", &btr);
        retrlm_tokenizer_train_config tkc;
        const char *tp = text;
        memset(&tkc, 0, sizeof tkc);
        tkc.vocab_size = vocab;
        if (!text || retrlm_tokenizer_train(&tok, &tkc, &tp, &btr, 1, NULL, NULL)) {
            printf("kjv_lm: tokenizer: %s\n", retrlm_last_error());
            return 1;
        }
        free(text);
        t_tok = retrlm_time_seconds() - t_start;
    }
    tr = read_tokens("../shared/data/kjv/train.txt", vocab > 256 ? &tok : NULL, &ntr, &btr);
    va = read_tokens("../shared/data/kjv/valid.txt", vocab > 256 ? &tok : NULL, &nva, &bva);
    te = read_tokens("../shared/data/kjv/test.txt", vocab > 256 ? &tok : NULL, &nte, &bte);
    if (!tr || !va || !te) {
        printf("kjv_lm: ../shared/data/kjv/{train,valid,test}.txt not found\n");
        return 1;
    }
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = vocab > 256 ? tok.n_vocab : 256;
    mc.dim = argc > 2 ? atoi(argv[2]) : 192;
    mc.n_layers = argc > 3 ? atoi(argv[3]) : 4;
    mc.n_heads = argc > 4 ? atoi(argv[4]) : 3;
    seq = argc > 5 ? atoi(argv[5]) : 128;
    batch = argc > 6 ? atoi(argv[6]) : 16;
    lr = argc > 7 ? (float)atof(argv[7]) : 3e-3f;
    mc.max_seq_len = seq;
    mc.max_batch = batch;
    mc.seed = 1;
    if (retrlm_model_init(&m, &mc)) {
        printf("kjv_lm: %s\n", retrlm_last_error());
        return 1;
    }
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = 100;
    ng = retrlm_model_param_groups(&m, lr, 0.1f, g);
    retrlm_adamw_init(&o, &oc, g, ng);
    retrlm_lm_train_state_init(&st, 1234);
    memset(&tc, 0, sizeof tc);
    tc.train = tr;
    tc.n_train = ntr;
    tc.valid = va;
    if (vocab > 256) { // the curve on all of valid
        tc.n_valid = nva;
        tc.valid_bytes = bva;
    } else { // the curve on the first 50 kB of valid
        tc.n_valid = nva < 50000 ? nva : 50000;
        tc.valid_bytes = tc.n_valid;
    }
    tc.batch = batch;
    tc.seq_len = seq;
    if (argc > 8) tc.steps = atol(argv[8]);
    else {
        // time 3 steps, then fit the schedule to the budget (evaluations cost ~5% on top)
        double t = retrlm_time_seconds(), per;
        retrlm_lm_train_state s2 = st;
        tc.steps = 3;
        tc.valid = NULL;
        retrlm_lm_train(&m, &o, &tc, &s2);
        per = (retrlm_time_seconds() - t) / 3.0;
        tc.steps = (int64_t)(minutes * 60.0 * 0.93 / per);
        tc.valid = va;
        // start again from the same initial state
        retrlm_model_free(&m);
        retrlm_adamw_free(&o);
        retrlm_model_init(&m, &mc);
        ng = retrlm_model_param_groups(&m, lr, 0.1f, g);
        retrlm_adamw_init(&o, &oc, g, ng);
        printf("%.3f s a step: %lld steps in %.1f minutes\n", per, (long long)tc.steps, minutes);
    }
    o.config.total_steps = (int)tc.steps;
    tc.eval_every = (int)(tc.steps / 10 > 0 ? tc.steps / 10 : 1);
    r.refit = argc <= 8;
    if (r.refit) tc.steps *= 10; // the time budget ends the run
    tc.progress = progress;
    r.t0 = retrlm_time_seconds();
    r.budget = minutes * 60.0 - (r.t0 - t_start); // the tokenizer and encoding count too
    r.st = &st;
    r.opt = &o;
    tc.progress_user = &r;
    if (vocab > 256) printf("tokenizer: BPE %d trained on train.txt in %.1f s; %lu train tokens (%.2f bytes a token)\n", tok.n_vocab, t_tok,
                            (unsigned long)ntr, (double)btr / (double)ntr);
    printf("model: vocab %d, dim %d, layers %d, heads %d, ffn %d, %lu parameters; "
           "batch %d x %d, lr %g, warmup 100, cosine to 0.1 over %lld steps, weight decay 0.1\n",
           m.config.vocab_size, m.config.dim, m.config.n_layers, m.config.n_heads, m.config.ffn_dim,
           (unsigned long)m.n_params, batch, seq, (double)lr, (long long)o.config.total_steps);
    res = retrlm_lm_train(&m, &o, &tc, &st);
    t_train = retrlm_time_seconds() - t_start;
    if (res == RETRLM_ERR_CANCELLED) printf("time budget reached at step %lld\n", (long long)st.step);
    else if (res) printf("kjv_lm: %s: %s\n", retrlm_result_string(res), retrlm_last_error());
    retrlm_lm_bits_per_byte(&m, va, nva, bva, seq, &bpb_valid);
    retrlm_lm_bits_per_byte(&m, te, nte, bte, seq, &bpb_test);
    printf("\n| split | bytes | bits per byte |\n|---|---|---|\n| valid | %lu | %.4f |\n"
           "| test | %lu | %.4f |\n", (unsigned long)bva, bpb_valid, (unsigned long)bte, bpb_test);
    printf("(xz -9e: 1.663, PPMd order 6: 1.464; %lld steps, %.0f tokens, %.1f s of training)\n",
           (long long)st.step, (double)st.step * batch * seq, t_train);
    printf("kjv_steps=%lld\nkjv_train_seconds=%.1f\nkjv_valid_bpb=%.4f\nkjv_test_bpb=%.4f\n",
           (long long)st.step, t_train, bpb_valid, bpb_test);
    retrlm_model_save(&m, NULL, NULL, "build/bench/kjv_lm.rlm");
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    if (vocab > 256) {
        retrlm_free(tr), retrlm_free(va), retrlm_free(te);
        retrlm_tokenizer_free(&tok);
    } else
        free(tr), free(va), free(te);
    return 0;
}
