// NPM (strategy 4, a nonparametric masked LM): the trainer learns to find a masked span's copy
// in another block of the batch, and the phrase index then fills held-out spans from their
// copies; the same weights at 1 and 2 threads; bad input. The loss and its gradients are
// checked in test_losses.c.
#include "retrlm.h"
#include "test.h"
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { V = 40, MASK = V - 1, T = 16, B = 4, D = 32 };

static void encoder_config(retrlm_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = V, c->dim = D, c->n_layers = 2, c->n_heads = 2;
    c->max_seq_len = T, c->max_batch = B, c->seed = 9;
    c->bidirectional = 1, c->no_logits = 1;
}

// n_pairs blocks of T random tokens (never MASK), each followed by a copy of itself
static int *pair_stream(int n_pairs, uint64_t seed) {
    retrlm_rng rng;
    int *s = (int *)malloc((size_t)n_pairs * 2 * T * sizeof(int)), p, t;
    retrlm_rng_seed(&rng, seed);
    for (p = 0; p < n_pairs; p++)
        for (t = 0; t < T; t++) s[(p * 2 + 1) * T + t] = s[p * 2 * T + t] = (int)retrlm_rng_below(&rng, MASK);
    return s;
}

// batches of two pairs: blocks 2i, 2i + 1 (a copy), 2j, 2j + 1, for i = k, j = (k + 7) % n
static int64_t *pair_batches(int n_pairs) {
    int64_t *o = (int64_t *)malloc((size_t)n_pairs * B * sizeof(int64_t));
    int k;
    for (k = 0; k < n_pairs; k++) {
        int j = (k + 7) % n_pairs;
        o[k * B + 0] = (int64_t)2 * k * T, o[k * B + 1] = (int64_t)(2 * k + 1) * T;
        o[k * B + 2] = (int64_t)2 * j * T, o[k * B + 3] = (int64_t)(2 * j + 1) * T;
    }
    return o;
}

// the share of spans (fixed: tokens 2-3, 7 and 11-13 of every block) whose start and end queries
// rank a copy's start and end first, over the held-out pairs h (n_pairs, 2 by 2 in a batch)
static double held_out_hits(retrlm_model *m, retrlm_model *mem, const int *h, int n_pairs) {
    static const int s0[3] = {2, 7, 11}, sl[3] = {2, 1, 3};
    int whole[B * T], masked[B * T], block[B * T], start[3 * B], len[3 * B], b, i, k, cnt, hs, he;
    float qs[3 * B * D], qe[3 * B * D];
    double hits = 0.0, total = 0.0;
    for (i = 0; i < B * T; i++) block[i] = i / T;
    for (k = 0; k + 1 < n_pairs; k += 2) {
        memcpy(whole, h + (size_t)k * 2 * T, sizeof whole); // pairs k and k + 1: 4 blocks
        memcpy(masked, whole, sizeof masked);
        for (b = 0; b < B; b++)
            for (i = 0; i < 3; i++) {
                int j;
                start[b * 3 + i] = b * T + s0[i], len[b * 3 + i] = sl[i];
                for (j = 0; j < sl[i]; j++) masked[b * T + s0[i] + j] = MASK;
            }
        CHECK_OK(retrlm_model_forward(m, masked, B, T, NULL, RETRLM_FORWARD_NO_LOGITS));
        CHECK_OK(retrlm_model_forward(mem, whole, B, T, NULL, RETRLM_FORWARD_NO_LOGITS));
        for (i = 0; i < 3 * B; i++) {
            memcpy(qs + i * D, m->hidden + (size_t)start[i] * D, D * sizeof(float));
            memcpy(qe + i * D, m->hidden + (size_t)(start[i] + len[i] - 1) * D, D * sizeof(float));
        }
        CHECK_OK(retrlm_npm_loss(qs, qe, 3 * B, mem->hidden, B * T, D, 1.0f, whole, block, start, len, NULL, NULL,
                                 NULL, NULL, &cnt, &hs, &he));
        hits += hs + he;
        total += 2.0 * cnt;
    }
    return total > 0 ? hits / total : 0.0;
}

// exact-match accuracy of retrlm_npm_fill on the first blocks of the held-out pairs h, the
// spans of held_out_hits one at a time, from a phrase index of the twins alone
static double fill_accuracy(retrlm_model *m, const int *h, int n_pairs, double *mean_prob) {
    static const int s0[3] = {2, 7, 11}, sl[3] = {2, 1, 3};
    retrlm_npm_index x;
    int *twins = (int *)malloc((size_t)n_pairs * T * sizeof(int)), seq[T], got[3], p, i, j, right = 0, total = 0;
    float pr;
    *mean_prob = 0.0;
    for (p = 0; p < n_pairs; p++) memcpy(twins + p * T, h + (size_t)(2 * p + 1) * T, T * sizeof(int));
    CHECK_OK(retrlm_npm_index_build(&x, m, twins, (size_t)n_pairs * T, T, NULL));
    CHECK(x.n == (size_t)n_pairs * T);
    for (p = 0; p < n_pairs; p++)
        for (i = 0; i < 3; i++) {
            memcpy(seq, h + (size_t)2 * p * T, sizeof seq);
            for (j = 0; j < sl[i]; j++) seq[s0[i] + j] = MASK;
            CHECK_OK(retrlm_npm_fill(m, &x, seq, T, s0[i], sl[i], MASK, 8, 0.0f, got, &pr));
            right += !memcmp(got, h + (size_t)2 * p * T + s0[i], (size_t)sl[i] * sizeof(int));
            total++;
            *mean_prob += pr;
        }
    *mean_prob /= total;
    retrlm_npm_index_free(&x);
    free(twins);
    return (double)right / total;
}

static void make_opt(retrlm_adamw *o, retrlm_model *m, float lr) {
    retrlm_adamw_config ac;
    retrlm_adamw_group g[2];
    int n = retrlm_model_param_groups(m, lr, 0.0f, g);
    memset(&ac, 0, sizeof ac);
    ac.warmup_steps = 20;
    CHECK_OK(retrlm_adamw_init(o, &ac, g, n));
}

// Learning check: every span has exactly one copy in the batch (its block's twin). At the start
// the queries find it by chance; after training, by far most of the time.
static void test_npm_learns_to_find_copies(void) {
    enum { PAIRS = 100, STEPS = 1200, HELD = 16 };
    retrlm_model_config cfg;
    retrlm_model m, view;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_npm_train_config nc;
    int *s = pair_stream(PAIRS, 21), *h = pair_stream(HELD, 22);
    int64_t *bat = pair_batches(PAIRS);
    float losses[STEPS], hits[STEPS];
    double before, after, first = 0.0, last = 0.0, fill0, fill1, prob0, prob1;
    int i;
    encoder_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_model_init_view(&view, &m, NULL));
    before = held_out_hits(&m, &view, h, HELD);
    fill0 = fill_accuracy(&m, h, HELD, &prob0);
    make_opt(&o, &m, 3e-3f);
    retrlm_lm_train_state_init(&st, 5);
    memset(&nc, 0, sizeof nc);
    nc.train = s, nc.n_train = (size_t)PAIRS * 2 * T;
    nc.batches = bat, nc.n_batches = PAIRS;
    nc.mask_id = MASK, nc.mask_ratio = 0.25f;
    nc.no_token_loss = 1; // the span terms alone: what this test asks of them (test_npm_token_term)
    nc.steps = STEPS, nc.losses = losses, nc.hits = hits;
    CHECK_OK(retrlm_npm_train(&m, &o, &nc, &st));
    CHECK(st.step == STEPS);
    after = held_out_hits(&m, &view, h, HELD);
    fill1 = fill_accuracy(&m, h, HELD, &prob1);
    for (i = 0; i < 20; i++) first += losses[i] / 20, last += losses[STEPS - 20 + i] / 20;
    printf("NPM copy check: held-out spans whose queries rank their copy first, %.2f at the start, %.2f after %d "
           "steps; training loss %.3f -> %.3f (the first and last 20 steps)\n", before, after, STEPS, first, last);
    printf("NPM fill from a phrase index of the twins: exact match %.2f at the start (mean probability %.2f), %.2f "
           "after (%.2f)\n", fill0, prob0, fill1, prob1);
    CHECK(fill1 > 0.7 && fill1 > fill0 + 0.4);
    CHECK(after > 0.6);
    CHECK(after > before + 0.5);
    CHECK(last < 0.4 * first);
    retrlm_adamw_free(&o);
    retrlm_model_free(&view);
    retrlm_model_free(&m);
    free(s), free(h), free(bat);
}

// NPM's token-level term against the span terms, on spans of one token (max_span 1, one a
// block), where the two are the same loss: a one-token span's start and end rows are both the
// token term's row, so the first step's loss (taken before any update) with the term is 1.5
// times the loss without it, over the same draws
static void test_npm_token_term(void) {
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_npm_train_config nc;
    int *s = pair_stream(30, 41), k;
    float loss[2], hits[2];
    encoder_config(&cfg);
    for (k = 0; k < 2; k++) {
        CHECK_OK(retrlm_model_init(&m, &cfg));
        make_opt(&o, &m, 3e-3f);
        retrlm_lm_train_state_init(&st, 11);
        memset(&nc, 0, sizeof nc);
        nc.train = s, nc.n_train = 30 * 2 * T, nc.mask_id = MASK, nc.steps = 1;
        nc.max_span = 1, nc.mask_ratio = 1.0f / T; // one token a block
        nc.no_token_loss = k == 0;
        nc.losses = &loss[k], nc.hits = &hits[k];
        CHECK_OK(retrlm_npm_train(&m, &o, &nc, &st));
        retrlm_adamw_free(&o), retrlm_model_free(&m);
    }
    printf("NPM token term: first step's loss %.4f with spans alone, %.4f with the token term\n", (double)loss[0],
           (double)loss[1]);
    CHECK(loss[0] > 0.0f);
    CHECK(fabsf(loss[1] - 1.5f * loss[0]) <= 1e-5f * loss[0]);
    CHECK(hits[0] == hits[1]);
    free(s);
}

// the same weights after 20 steps at 1 and 2 threads, with consecutive blocks (no batches)
static void test_npm_threads(void) {
    retrlm_model_config cfg;
    retrlm_model m[2];
    retrlm_adamw o[2];
    retrlm_lm_train_state st[2];
    retrlm_npm_train_config nc;
    int *s = pair_stream(30, 31), k;
    encoder_config(&cfg);
    for (k = 0; k < 2; k++) {
#ifdef _OPENMP
        omp_set_num_threads(k + 1);
#endif
        CHECK_OK(retrlm_model_init(&m[k], &cfg));
        make_opt(&o[k], &m[k], 3e-3f);
        retrlm_lm_train_state_init(&st[k], 7);
        memset(&nc, 0, sizeof nc);
        nc.train = s, nc.n_train = 30 * 2 * T, nc.mask_id = MASK, nc.steps = 20;
        CHECK_OK(retrlm_npm_train(&m[k], &o[k], &nc, &st[k]));
    }
    CHECK(st[0].last_loss == st[1].last_loss);
    CHECK(memcmp(m[0].params, m[1].params, m[0].n_params * sizeof(float)) == 0);
    for (k = 0; k < 2; k++) retrlm_adamw_free(&o[k]), retrlm_model_free(&m[k]);
    free(s);
}

// the parametric baseline: the same spans, one pass, a cross-entropy that falls on a text whose
// masked tokens follow from their neighbours (token i = 7 i mod 39); a model without logits is
// refused
static void test_npm_parametric(void) {
    enum { STEPS = 200 };
    retrlm_model_config cfg;
    retrlm_model m;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_npm_train_config nc;
    int *s = (int *)malloc(40 * 2 * T * sizeof(int));
    float losses[STEPS];
    double first = 0.0, last = 0.0;
    int i;
    for (i = 0; i < 40 * 2 * T; i++) s[i] = (7 * i) % MASK;
    encoder_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg)); // no logits
    make_opt(&o, &m, 3e-3f);
    retrlm_lm_train_state_init(&st, 3);
    memset(&nc, 0, sizeof nc);
    nc.train = s, nc.n_train = 40 * 2 * T, nc.mask_id = MASK, nc.steps = STEPS, nc.parametric = 1;
    nc.losses = losses;
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    cfg.no_logits = 0;
    CHECK_OK(retrlm_model_init(&m, &cfg));
    make_opt(&o, &m, 3e-3f);
    CHECK_OK(retrlm_npm_train(&m, &o, &nc, &st));
    for (i = 0; i < 20; i++) first += losses[i] / 20, last += losses[STEPS - 20 + i] / 20;
    printf("parametric masked LM: loss %.3f -> %.3f (ln V = %.3f)\n", first, last, log((double)V));
    CHECK(first > 0.8 * log((double)V) && last < first - 0.8);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    free(s);
}

static void test_npm_bad_input(void) {
    retrlm_model_config cfg;
    retrlm_model m, lm;
    retrlm_adamw o;
    retrlm_lm_train_state st;
    retrlm_npm_train_config nc;
    int *s = pair_stream(4, 41);
    int64_t bad[B] = {0, T, 2 * T, 8 * T - 3};
    encoder_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    make_opt(&o, &m, 1e-3f);
    retrlm_lm_train_state_init(&st, 1);
    memset(&nc, 0, sizeof nc);
    nc.train = s, nc.n_train = 4 * 2 * T, nc.mask_id = MASK, nc.steps = 2;
    nc.mask_id = V;
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    nc.mask_id = MASK, nc.batch = 1; // a lone block has no memory
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    nc.batch = 0, nc.mask_ratio = 1.5f;
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    nc.mask_ratio = 0.0f, nc.n_train = B * T - 1; // shorter than a batch of blocks
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    nc.n_train = 4 * 2 * T, nc.batches = bad, nc.n_batches = 1; // the last block runs past the stream
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    nc.batches = NULL, nc.n_batches = 0;
    s[5] = V; // a token outside the vocabulary
    CHECK(retrlm_npm_train(&m, &o, &nc, &st) == RETRLM_ERR_ARG);
    s[5] = 0;
    cfg.bidirectional = 0, cfg.no_logits = 0; // a causal LM
    CHECK_OK(retrlm_model_init(&lm, &cfg));
    CHECK(retrlm_npm_train(&lm, &o, &nc, &st) == RETRLM_ERR_ARG);
    CHECK(st.step == 0);
    CHECK_OK(retrlm_npm_train(&m, &o, &nc, &st));
    CHECK(st.step == 2);
    retrlm_model_free(&lm);
    retrlm_adamw_free(&o);
    retrlm_model_free(&m);
    free(s);
}

static void test_npm_fill_bad_input(void) {
    retrlm_model_config cfg;
    retrlm_model m, lm;
    retrlm_npm_index x;
    int *s = pair_stream(2, 51), seq[T], got[2];
    float pr;
    encoder_config(&cfg);
    CHECK_OK(retrlm_model_init(&m, &cfg));
    CHECK_OK(retrlm_npm_index_build(&x, &m, s, 2 * 2 * T - 5, 0, NULL)); // a last block shorter than T
    CHECK(x.n == 2 * 2 * T - 5);
    memcpy(seq, s, sizeof seq);
    seq[3] = seq[4] = MASK;
    CHECK_OK(retrlm_npm_fill(&m, &x, seq, T, 3, 2, MASK, 4, 1.0f, got, &pr));
    CHECK(pr > 0.0f && pr <= 1.0f + 1e-6f && got[0] >= 0 && got[0] < MASK);
    CHECK(retrlm_npm_fill(&m, &x, seq, T, 3, 3, MASK, 4, 1.0f, got, &pr) == RETRLM_ERR_ARG); // token 5 is no mask
    CHECK(retrlm_npm_fill(&m, &x, seq, T, 4, 1, MASK, 4, 1.0f, got, &pr) == RETRLM_ERR_ARG); // a mask outside
    CHECK(retrlm_npm_fill(&m, &x, seq, T, 15, 2, MASK, 4, 1.0f, got, &pr) == RETRLM_ERR_ARG); // past the end
    CHECK(retrlm_npm_fill(&m, &x, seq, T + 1, 3, 2, MASK, 4, 1.0f, got, &pr) == RETRLM_ERR_ARG); // too long
    { // saved and loaded (file and memory): the same fill; a vocabulary too small for its tokens refused
        retrlm_npm_index y;
        int got2[2];
        float pr2;
        size_t size;
        void *img;
        CHECK_OK(retrlm_npm_index_save(&x, "build/tests/npm_index.rlm"));
        CHECK_OK(retrlm_npm_index_load(&y, "build/tests/npm_index.rlm", V + 1));
        CHECK(y.n == x.n && memcmp(y.tokens, x.tokens, sizeof(int) * x.n) == 0);
        CHECK_OK(retrlm_npm_fill(&m, &y, seq, T, 3, 2, MASK, 4, 1.0f, got2, &pr2));
        CHECK(memcmp(got, got2, sizeof got) == 0 && pr == pr2);
        retrlm_npm_index_free(&y);
        CHECK(retrlm_npm_index_load(&y, "build/tests/npm_index.rlm", 2) == RETRLM_ERR_FORMAT);
        CHECK(retrlm_npm_index_load(&y, "build/tests/no-such-index.rlm", V + 1) == RETRLM_ERR_IO);
        CHECK_OK(retrlm_npm_index_save_memory(&x, NULL, 0, &size));
        img = malloc(size);
        CHECK_OK(retrlm_npm_index_save_memory(&x, img, size, &size));
        CHECK_OK(retrlm_npm_index_load_memory(&y, img, size, V + 1));
        CHECK_OK(retrlm_npm_fill(&m, &y, seq, T, 3, 2, MASK, 4, 1.0f, got2, &pr2));
        CHECK(memcmp(got, got2, sizeof got) == 0 && pr == pr2);
        retrlm_npm_index_free(&y);
        { // kNN-LM keys are not a phrase index
            retrlm_knnlm kn;
            CHECK(retrlm_knnlm_load_memory(&kn, img, size, V + 1) == RETRLM_ERR_FORMAT);
        }
        free(img);
    }
    retrlm_npm_index_free(&x);
    retrlm_npm_index_free(&x); // twice: a no-op
    s[0] = V;
    CHECK(retrlm_npm_index_build(&x, &m, s, 2 * T, 0, NULL) == RETRLM_ERR_RANGE);
    s[0] = 0;
    cfg.bidirectional = 0, cfg.no_logits = 0;
    CHECK_OK(retrlm_model_init(&lm, &cfg));
    CHECK(retrlm_npm_index_build(&x, &lm, s, 2 * T, 0, NULL) == RETRLM_ERR_ARG);
    retrlm_model_free(&lm);
    retrlm_model_free(&m);
    free(s);
}

int main(void) {
    RUN(test_npm_learns_to_find_copies);
    RUN(test_npm_threads);
    RUN(test_npm_token_term);
    RUN(test_npm_parametric);
    RUN(test_npm_bad_input);
    RUN(test_npm_fill_bad_input);
    return test_report();
}
