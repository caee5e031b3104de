// copying from the window (issue 14): (a) an induction probe, a tiny causal LM trained on random
// token sequences written twice must predict the second copy far better than the first; (b) the
// end-to-end pin: an LM trained on text repeated within its window must gain from its own text
// placed in the window as the retrieved unit by in-context retrieval (retrlm_ralm_bits_per_byte).
#include "retrlm.h"
#include "test.h"
#include <string.h>

// a tiny LM and its optimiser: 2 layers (an induction head needs two: one attends to the
// previous token, the next matches it), dim 64
typedef struct copy_lm {
    retrlm_model  m;
    retrlm_adamw  o;
} copy_lm;

static void copy_lm_init(copy_lm *c, int vocab, int seq_len, int batch, int steps) {
    retrlm_model_config mc;
    retrlm_adamw_config oc;
    retrlm_adamw_group g[2];
    int ng;
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = vocab;
    mc.dim = 64;
    mc.n_layers = 2;
    mc.n_heads = 2;
    mc.max_seq_len = seq_len;
    mc.max_batch = batch;
    mc.seed = 3;
    CHECK_OK(retrlm_model_init(&c->m, &mc));
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = steps / 10;
    oc.total_steps = steps;
    ng = retrlm_model_param_groups(&c->m, 3e-3f, 0.0f, g);
    CHECK_OK(retrlm_adamw_init(&c->o, &oc, g, ng));
}

static void copy_lm_free(copy_lm *c) {
    retrlm_adamw_free(&c->o);
    retrlm_model_free(&c->m);
}

// one update on B windows (B, T + 1): inputs are each window but its last token, targets but its first
static float copy_lm_step(copy_lm *c, const int *win, int B, int T) {
    int *in = (int *)malloc(sizeof(int) * (size_t)B * T), *tg = (int *)malloc(sizeof(int) * (size_t)B * T), b;
    float loss = 0.0f;
    retrlm_model_grad_in gi;
    for (b = 0; b < B; b++) {
        memcpy(in + (size_t)b * T, win + (size_t)b * (T + 1), sizeof(int) * (size_t)T);
        memcpy(tg + (size_t)b * T, win + (size_t)b * (T + 1) + 1, sizeof(int) * (size_t)T);
    }
    retrlm_model_zero_grad(&c->m);
    CHECK_OK(retrlm_model_forward(&c->m, in, B, T, NULL, 0));
    CHECK_OK(retrlm_model_lm_loss(&c->m, tg, &loss, NULL));
    memset(&gi, 0, sizeof gi);
    gi.dlogits = c->m.logits;
    CHECK_OK(retrlm_model_backward(&c->m, &gi));
    retrlm_adamw_step(&c->o);
    free(in);
    free(tg);
    return loss;
}

// (a) V = 32 token ids, windows of L = 16 random tokens then the same 16 again. The first copy is
// random: no model can do better than ln V there (fresh sequences are scored, so there is
// nothing to memorise). The second copy, but for its first token, is fully determined by the
// first, always L positions back: a model that attends back across its window drives it towards
// 0. Thresholds: the first copy within 10% of ln V (it cannot be learnt), the second under a
// quarter of ln V and of the first copy's loss (a model that does not copy stays near ln V
// there too; this one reaches about 0.03 nats).
#define IND_V 32
#define IND_L 16
#define IND_B 16
#define IND_STEPS 300

static void induction_windows(retrlm_rng *rng, int *win, int B) {
    int b, i;
    for (b = 0; b < B; b++) {
        int *w = win + (size_t)b * 2 * IND_L;
        for (i = 0; i < IND_L; i++) w[i] = w[IND_L + i] = (int)retrlm_rng_below(rng, IND_V);
    }
}

static void test_induction(void) {
    copy_lm c;
    retrlm_rng rng;
    int win[IND_B * 2 * IND_L], tg[IND_B * (2 * IND_L - 1)], s, b, t, n1 = 0, n2 = 0;
    const int T = 2 * IND_L - 1;
    double first = 0.0, second = 0.0, lnv = log((double)IND_V);
    copy_lm_init(&c, IND_V, T, IND_B, IND_STEPS);
    retrlm_rng_seed(&rng, 11);
    for (s = 0; s < IND_STEPS; s++) {
        induction_windows(&rng, win, IND_B);
        copy_lm_step(&c, win, IND_B, T);
    }
    // fresh windows: mean loss of the first copy's tokens 1..L-1 and of the second copy's 1..L-1
    // (token 0 of each copy is left out: nothing in the window says what it is)
    induction_windows(&rng, win, IND_B);
    for (b = 0; b < IND_B; b++) memcpy(tg + b * T, win + b * (T + 1) + 1, sizeof(int) * (size_t)T);
    {
        int in[IND_B * (2 * IND_L - 1)];
        for (b = 0; b < IND_B; b++) memcpy(in + b * T, win + b * (T + 1), sizeof(int) * (size_t)T);
        CHECK_OK(retrlm_model_forward(&c.m, in, IND_B, T, NULL, 0));
    }
    for (b = 0; b < IND_B; b++)
        for (t = 0; t < T; t++) { // position t predicts token t + 1
            const float *lg = c.m.logits + ((size_t)b * T + t) * IND_V;
            double nll = retrlm_logsumexp(lg, IND_V) - lg[tg[b * T + t]];
            if (t + 1 >= 1 && t + 1 < IND_L) first += nll, n1++;
            else if (t + 1 > IND_L) second += nll, n2++;
        }
    first /= n1;
    second /= n2;
    fprintf(stderr, "induction: ln V %.3f, first copy %.3f nats/token, second copy %.3f\n", lnv, first, second);
    CHECK(first > 0.9 * lnv);
    CHECK(second < 0.25 * lnv);
    CHECK(second < 0.25 * first);
    copy_lm_free(&c);
}

// (b) text made of NW pseudo-words, each one BPE token with its leading space. Training windows
// are a random text A of MAXA words, then A again. Scored: NTXT fresh texts of MAXA words, one at
// a time; the datastore holds each as one unit of MAXA tokens, and the model has room for the
// unit, the whole text and a stride, so every window in-context retrieval builds is the unit,
// then the text from its start: the layout the model was trained on. Without retrieval a text
// is random (about ln NW nats a word); with its unit before it, every token the LM sees after a
// block's query found the unit can be copied.
// What this model learns in 300 steps is to copy from MAXA positions back (a relative-position
// head), not to find a copy at any distance: trained on A A with A's length varying (10..30
// words, random filler words before it), it stayed at ln NW for 600 steps (also with 32 words
// and lr 1e-2); on (a)'s random tokens at a varying offset (A of 6..18 tokens anywhere in a
// 48-token window) it took 2,500 steps to bring the copied tokens from 3.47 to 2.9 nats. So
// this pins where the unit lands in the window (exactly MAXA positions before its copy in the
// text: an off-by-one, a truncated unit or the text's context cut short loses the gain), and
// (a) shows the model attends back across its window; neither is a probe of general induction.
#define NW 200
#define MAXA 30
#define NTXT 8
#define CP_B 16
#define CP_STEPS 300

static void word_text(retrlm_rng *rng, char *out, int n_words) {
    static const char cons[] = "bdfgklmnprstvz", vow[] = "aeiou";
    int i;
    for (i = 0; i < n_words; i++) {
        int w = (int)retrlm_rng_below(rng, NW);
        *out++ = ' ';
        *out++ = cons[w % 14];
        *out++ = vow[(w / 14) % 5];
        *out++ = cons[(w / 70) % 14];
    }
    *out = 0;
}

static void test_copy_retrieved_unit(void) {
    static const char cons[] = "bdfgklmnprstvz", vow[] = "aeiou";
    retrlm_tokenizer tok;
    retrlm_tokenizer_train_config tc;
    retrlm_datastore ds;
    retrlm_datastore_config dc;
    retrlm_ralm_config rc;
    retrlm_rng rng;
    copy_lm c;
    const int W = 2 * MAXA, T = W - 1; // windows of W tokens; max_seq_len W + stride
    char *corpus = (char *)malloc(NW * 4 * 3 + 1), text[NTXT][MAXA * 4 + 1], buf[MAXA * 4 + 1];
    int *win = (int *)malloc(sizeof(int) * CP_B * W), *ids, one = 1, s, b, i, w;
    size_t n, len;
    double nats_none = 0.0, nats_ic = 0.0, bytes = 0.0, bpb;
    // the tokenizer: every word three times, so each " word" merges into one token
    for (i = 0, len = 0; i < 3 * NW; i++) {
        w = i % NW;
        corpus[len++] = ' ', corpus[len++] = cons[w % 14], corpus[len++] = vow[(w / 14) % 5], corpus[len++] = cons[(w / 70) % 14];
    }
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 256 + 4 * NW;
    CHECK_OK(retrlm_tokenizer_train(&tok, &tc, (const char *const *)&corpus, &len, 1, NULL, NULL));
    for (w = 0; w < NW && one; w++) {
        char word[4] = {' ', cons[w % 14], vow[(w / 14) % 5], cons[(w / 70) % 14]};
        int id;
        CHECK_OK(retrlm_tokenizer_encode(&tok, word, 4, 0, &id, 1, &n));
        one = n == 1;
    }
    CHECK(one);
    // train on A A
    copy_lm_init(&c, tok.n_vocab, W + 8, CP_B, CP_STEPS);
    retrlm_rng_seed(&rng, 5);
    for (s = 0; s < CP_STEPS; s++) {
        for (b = 0; b < CP_B; b++) {
            int *row = win + b * W;
            word_text(&rng, buf, MAXA);
            CHECK_OK(retrlm_tokenizer_encode(&tok, buf, strlen(buf), 0, row, MAXA, &n));
            memcpy(row + MAXA, row, sizeof(int) * MAXA);
        }
        copy_lm_step(&c, win, CP_B, T);
    }
    // fresh texts, each one unit of the datastore
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = MAXA;
    CHECK_OK(retrlm_datastore_init(&ds, &dc));
    for (i = 0; i < NTXT; i++) {
        word_text(&rng, text[i], MAXA);
        CHECK_OK(retrlm_datastore_add(&ds, &tok, i, text[i], strlen(text[i]), 0));
    }
    CHECK_OK(retrlm_datastore_commit(&ds));
    for (i = 0; i < NTXT; i++) { // eight words of a text find its unit first
        int u = -1, found = 0;
        CHECK_OK(retrlm_datastore_search(&ds, text[i] + 40, 32, 1, RETRLM_NO_DOC, &u, NULL, &found));
        CHECK(found == 1 && ds.unit_doc[u] == i);
    }
    memset(&rc, 0, sizeof rc);
    rc.stride = 8;
    rc.query_tokens = 8;
    for (i = 0; i < NTXT; i++) {
        len = strlen(text[i]);
        CHECK_OK(retrlm_tokenizer_encode_alloc(&tok, text[i], len, 0, &ids, &n));
        rc.mode = RETRLM_RALM_NONE;
        CHECK_OK(retrlm_ralm_bits_per_byte(&c.m, &tok, &ds, ids, n, len, &rc, &bpb, NULL));
        nats_none += bpb * len;
        rc.mode = RETRLM_RALM_INCONTEXT;
        CHECK_OK(retrlm_ralm_bits_per_byte(&c.m, &tok, &ds, ids, n, len, &rc, &bpb, NULL));
        nats_ic += bpb * len;
        bytes += (double)len;
        retrlm_free(ids);
    }
    fprintf(stderr, "copy from the unit: %.4f bits per byte without retrieval, %.4f with\n",
            nats_none / bytes, nats_ic / bytes);
    CHECK(nats_ic < 0.5 * nats_none);
    retrlm_datastore_free(&ds);
    retrlm_tokenizer_free(&tok);
    copy_lm_free(&c);
    free(corpus);
    free(win);
}

int main(void) {
    RUN(test_induction);
    RUN(test_copy_retrieved_unit);
    return test_report();
}
