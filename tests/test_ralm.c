// datastore and ralm: units, exclusion, persistence; retrieval-augmented scoring checked
// against direct forwards of the same sequences.
#include "retrlm.h"
#include "test.h"
#include <string.h>

static const char *docs[] = {
    "The king of Assyria sent Rabshakeh from Lachish to Jerusalem with a great army.",
    "Hezekiah received the letter of the hand of the messengers, and read it, and went up into the house.",
    "In those days was Hezekiah sick unto death. And the prophet Isaiah came to him.",
    "Sennacherib king of Assyria departed, and went and returned, and dwelt at Nineveh.",
    "The word of the LORD came unto Jeremiah in the days of Josiah the son of Amon king of Judah.",
};
#define NDOCS 5

static retrlm_tokenizer tok;
static retrlm_model model;

static void setup(void) {
    retrlm_tokenizer_train_config tc;
    retrlm_model_config mc;
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 300;
    CHECK_OK(retrlm_tokenizer_train(&tok, &tc, docs, NULL, NDOCS, NULL, NULL));
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = tok.n_vocab;
    mc.dim = 32;
    mc.n_layers = 2;
    mc.n_heads = 2;
    mc.max_seq_len = 64;
    mc.max_batch = 3;
    mc.seed = 7;
    CHECK_OK(retrlm_model_init(&model, &mc));
}

static void build(retrlm_datastore *ds, int chunk) {
    retrlm_datastore_config dc;
    int i;
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = chunk;
    CHECK_OK(retrlm_datastore_init(ds, &dc));
    for (i = 0; i < NDOCS; i++) CHECK_OK(retrlm_datastore_add(ds, &tok, 100 + i, docs[i], strlen(docs[i]), RETRLM_DATASTORE_CHUNK));
    CHECK_OK(retrlm_datastore_commit(ds));
}

static void test_datastore_units(void) {
    retrlm_datastore ds;
    int u, units[4], found, n_tok, ok = 1;
    size_t len, total = 0;
    build(&ds, 8);
    CHECK(ds.n_units > NDOCS);
    for (u = 0; u < ds.n_units; u++) { // a unit's text is exactly what its tokens decode to
        const char *t = retrlm_datastore_text(&ds, u, &len);
        const int *ids = retrlm_datastore_tokens(&ds, u, &n_tok);
        char buf[256];
        size_t got;
        CHECK_OK(retrlm_tokenizer_decode(&tok, ids, (size_t)n_tok, buf, sizeof buf, &got));
        ok &= got == len && memcmp(buf, t, len) == 0 && n_tok <= 8 && n_tok > 0;
        total += len;
    }
    CHECK(ok);
    for (u = 0, len = 0; u < NDOCS; u++) len += strlen(docs[u]);
    CHECK(total == len); // chunks cover every byte once
    CHECK_OK(retrlm_datastore_search(&ds, "Hezekiah sick unto death", 24, 4, RETRLM_NO_DOC, units, NULL, &found));
    CHECK(found >= 1 && ds.unit_doc[units[0]] == 102);
    CHECK_OK(retrlm_datastore_search(&ds, "Hezekiah sick unto death", 24, 4, 102, units, NULL, &found));
    for (u = 0; u < found; u++) CHECK(ds.unit_doc[units[u]] != 102);
    CHECK(retrlm_datastore_add(&ds, &tok, 1, "x", 1, 0) == RETRLM_ERR_ARG);
    retrlm_datastore_free(&ds);
    retrlm_datastore_free(&ds);
}

static void test_datastore_files(void) {
    retrlm_datastore ds, ds2;
    size_t size;
    void *owner;
    unsigned char *img;
    int u1[3], u2[3], f1, f2, i;
    float s1[3], s2[3];
    build(&ds, 6);
    CHECK_OK(retrlm_datastore_save_memory(&ds, NULL, 0, &size));
    owner = malloc(size + 64);
    img = (unsigned char *)owner + (64 - (uintptr_t)owner % 64) % 64;
    CHECK_OK(retrlm_datastore_save_memory(&ds, img, size, &size));
    CHECK_OK(retrlm_datastore_load_memory(&ds2, img, size));
    CHECK(ds2.n_units == ds.n_units && ds2.chunk_tokens == 6);
    CHECK(ds2.text_off[ds2.n_units] == ds.text_off[ds.n_units] && !memcmp(ds2.text, ds.text, (size_t)ds.text_off[ds.n_units]));
    CHECK_OK(retrlm_datastore_search(&ds, "king of Assyria", 15, 3, RETRLM_NO_DOC, u1, s1, &f1));
    CHECK_OK(retrlm_datastore_search(&ds2, "king of Assyria", 15, 3, RETRLM_NO_DOC, u2, s2, &f2));
    CHECK(f1 == f2 && f1 > 0);
    for (i = 0; i < f1; i++) CHECK(u1[i] == u2[i] && s1[i] == s2[i]);
    retrlm_datastore_free(&ds2);
    // a damaged file is refused with a detail, never a crash
    img[size / 2] ^= 0x40;
    CHECK(retrlm_datastore_load_memory(&ds2, img, size) != RETRLM_OK);
    CHECK(retrlm_last_error()[0] != 0);
    retrlm_datastore_free(&ds2);
    free(owner);
    retrlm_datastore_free(&ds);
}

// the text to score, and its tokens
static int *encode_all(const char *text, size_t *n) {
    int *ids = NULL;
    CHECK_OK(retrlm_tokenizer_encode_alloc(&tok, text, strlen(text), 0, &ids, n));
    return ids;
}

// -log p of tokens[start, end) given seq = prefix + tokens[ctx, end), by a direct forward
static double direct_nats(const int *prefix, int np, const int *tokens, size_t ctx, size_t start, size_t end) {
    int seq[64], len = np, t, V = model.config.vocab_size;
    double nats = 0;
    if (np) memcpy(seq, prefix, sizeof(int) * np);
    for (t = (int)ctx; t < (int)end; t++) seq[len++] = tokens[t];
    CHECK_OK(retrlm_model_forward(&model, seq, 1, len - 1, NULL, 0));
    for (t = len - (int)(end - start); t < len; t++) {
        const float *lg = model.logits + (size_t)(t - 1) * V;
        nats -= lg[seq[t]] - retrlm_logsumexp(lg, V);
    }
    return nats;
}

static void test_ralm_matches_direct(void) {
    static const char *text = "And Isaiah said, This shall be a sign unto thee from the LORD, that the LORD will do the thing.";
    retrlm_datastore ds;
    retrlm_ralm_config rc;
    size_t n, t;
    int *ids = encode_all(text, &n), units[1], found;
    float *tn = (float *)malloc(sizeof(float) * n), *tn2 = (float *)malloc(sizeof(float) * n);
    double bpb, bpb2, want, got;
    char q[512];
    size_t qlen;
    build(&ds, 8);
    // the LM alone: blocks start at token 1, so [9, 13) is one, with 5 tokens of context
    memset(&rc, 0, sizeof rc);
    rc.mode = RETRLM_RALM_NONE;
    rc.stride = 4;
    rc.context_tokens = 5;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, tn));
    CHECK(bpb > 0);
    for (t = 9, got = 0; t < 13; t++) got += tn[t];
    want = direct_nats(NULL, 0, ids, 9 - 5, 9, 13);
    CHECK_NEAR(got, want, 1e-4);
    CHECK_NEAR(tn[0], log((double)model.config.vocab_size), 1e-5);
    // in-context, one unit: the same block with the unit the query [9-6, 9) retrieves in front
    rc.mode = RETRLM_RALM_INCONTEXT;
    rc.query_tokens = 6;
    rc.k = 1;
    rc.unit_tokens = 8;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, tn));
    CHECK_OK(retrlm_tokenizer_decode(&tok, ids + 3, 6, q, sizeof q, &qlen));
    CHECK_OK(retrlm_datastore_search(&ds, q, qlen, 1, RETRLM_NO_DOC, units, NULL, &found));
    for (t = 9, got = 0; t < 13; t++) got += tn[t];
    if (found) {
        int nu;
        const int *ut = retrlm_datastore_tokens(&ds, units[0], &nu);
        want = direct_nats(ut, nu, ids, 4, 9, 13);
    } else
        want = direct_nats(NULL, 0, ids, 4, 9, 13);
    CHECK_NEAR(got, want, 1e-4);
    // REPLUG with one unit is in-context with one unit, to the bit
    rc.mode = RETRLM_RALM_REPLUG;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb2, tn2));
    CHECK(bpb2 == bpb);
    // REPLUG with 3: a mixture, so never worse than its worst member and deterministic
    rc.k = 3;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, tn));
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb2, tn2));
    CHECK(bpb == bpb2 && memcmp(tn, tn2, sizeof(float) * n) == 0);
    // bad configurations are refused
    rc.context_tokens = 60;
    CHECK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, NULL) == RETRLM_ERR_ARG);
    rc.context_tokens = 5;
    ids[3] = 99999;
    CHECK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, NULL) == RETRLM_ERR_RANGE);
    retrlm_free(ids);
    free(tn);
    free(tn2);
    retrlm_datastore_free(&ds);
}

// kNN-LM over the very text being scored: every query finds its own key at distance 0 whose
// value is the right next token, so the interpolated cost must fall well below the LM's.
static void test_knnlm(void) {
    static const char *text = "And Hezekiah prayed before the LORD, and said, O LORD God of Israel, which dwellest between the cherubims, thou art the God, even thou alone, of all the kingdoms of the earth.";
    retrlm_knnlm kn;
    retrlm_ralm_config rc;
    size_t n, i;
    int *ids = encode_all(text, &n), ok = 1;
    double lm, knn;
    CHECK_OK(retrlm_knnlm_build(&kn, &model, ids, n, 16, NULL));
    CHECK(kn.n == n - 1 && kn.index.n == n - 1);
    for (i = 0; i + 1 < n; i++) ok &= kn.values[i] == ids[i + 1];
    CHECK(ok);
    memset(&rc, 0, sizeof rc);
    rc.stride = 8;
    rc.context_tokens = 16;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &lm, NULL));
    rc.knnlm = &kn;
    rc.knn_k = 4;
    rc.lambda = 0.5f;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &knn, NULL));
    CHECK(knn < 0.5 * lm);
    rc.lambda = 1.5f;
    CHECK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &knn, NULL) == RETRLM_ERR_ARG);
    { // save -> load -> the same bits per byte; files of other keys are errors
        retrlm_knnlm kl;
        size_t size = 0;
        unsigned char *buf;
        double again, ref;
        rc.lambda = 0.5f;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &ref, NULL));
        CHECK_OK(retrlm_knnlm_save_memory(&kn, NULL, 0, &size));
        buf = (unsigned char *)malloc(size);
        CHECK_OK(retrlm_knnlm_save_memory(&kn, buf, size, &size));
        CHECK(retrlm_knnlm_load_memory(&kl, buf, size, 2) == RETRLM_ERR_FORMAT); // values >= 2
        if (retrlm_knnlm_load_memory(&kl, buf, size, model.config.vocab_size) == RETRLM_OK) {
            rc.knnlm = &kl;
            CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &again, NULL));
            CHECK(again == ref);
            retrlm_knnlm_free(&kl);
        } else
            CHECK(0);
        for (i = 0; i < size; i += 61) CHECK(retrlm_knnlm_load_memory(&kl, buf, i, model.config.vocab_size) != RETRLM_OK);
        free(buf);
    }
    retrlm_knnlm_free(&kn);
    retrlm_knnlm_free(&kn);
    CHECK(retrlm_knnlm_build(&kn, &model, ids, 1, 16, NULL) == RETRLM_ERR_ARG);
    retrlm_free(ids);
}

int main(void) {
    setup();
    RUN(test_datastore_units);
    RUN(test_datastore_files);
    RUN(test_ralm_matches_direct);
    RUN(test_knnlm);
    retrlm_model_free(&model);
    retrlm_tokenizer_free(&tok);
    return test_report();
}
