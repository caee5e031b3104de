// datastore and ralm: units, exclusion, persistence; retrieval-augmented scoring checked
// against direct forwards of the same sequences; RETRO generation (retrieval every m tokens)
// checked against a forward over the whole sequence.
#include "retrlm.h"
#include "test.h"
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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
    CHECK(ds.bm25.k1 == (float)0.9 && ds.bm25.b == (float)0.4); // units are passages (bm25.h)
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
    // with its continuation: the unit and the units after it in its document, 20 tokens in all
    rc.continuation = 1;
    rc.unit_tokens = 20;
    rc.context_tokens = 5;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, tn));
    for (t = 9, got = 0; t < 13; t++) got += tn[t];
    if (found) {
        int pre[20], np = 0, u, nu, e;
        for (u = units[0]; u < ds.n_units && np < 20 && ds.unit_doc[u] == ds.unit_doc[units[0]]; u++) {
            const int *ut = retrlm_datastore_tokens(&ds, u, &nu);
            for (e = 0; e < nu && np < 20; e++) pre[np++] = ut[e];
        }
        CHECK(np > 8); // the continuation is there: a unit holds 8
        want = direct_nats(pre, np, ids, 4, 9, 13);
        CHECK_NEAR(got, want, 1e-4);
    }
    rc.continuation = 0;
    rc.unit_tokens = 8;
    CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &bpb, tn));
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
    { // IVF keys: searched with ceil(sqrt(nlist)) lists unless told; every list scanned is exact
        retrlm_knnlm kv;
        retrlm_index_config ic;
        double flat, ivf, one;
        CHECK(retrlm_knnlm_default_nprobe(0) == 0 && retrlm_knnlm_default_nprobe(1) == 1);
        CHECK(retrlm_knnlm_default_nprobe(8) == 3 && retrlm_knnlm_default_nprobe(9) == 3);
        CHECK(retrlm_knnlm_default_nprobe(1024) == 32 && retrlm_knnlm_default_nprobe(1025) == 33);
        rc.knnlm = &kn, rc.lambda = 0.5f;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &flat, NULL));
        memset(&ic, 0, sizeof ic);
        ic.nlist = 9;
        CHECK_OK(retrlm_knnlm_build(&kv, &model, ids, n, 16, &ic));
        CHECK(kv.index.nlist == 9 && kv.index.nprobe == 3);
        rc.knnlm = &kv;
        rc.knn_nprobe = 9;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &ivf, NULL));
        CHECK_NEAR(ivf, flat, 1e-5 * flat);
        rc.knn_nprobe = 1;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &one, NULL));
        CHECK(one < 0.5 * (double)lm); // each query's own key is in its nearest list
        rc.knn_nprobe = -1;
        CHECK(retrlm_ralm_bits_per_byte(&model, NULL, NULL, ids, n, strlen(text), &rc, &one, NULL) == RETRLM_ERR_ARG);
        rc.knn_nprobe = 0;
        retrlm_knnlm_free(&kv);
    }
    retrlm_knnlm_free(&kn);
    retrlm_knnlm_free(&kn);
    CHECK(retrlm_knnlm_build(&kn, &model, ids, 1, 16, NULL) == RETRLM_ERR_ARG);
    retrlm_free(ids);
}

// the last layer's feed-forward input at p of the causal window of w tokens from ws (w rows,
// so that the multiply takes the path the keys took: a product of few rows sums differently)
static const float *window_key(retrlm_model *m, const int *ids, size_t ws, size_t p, int w) {
    if (retrlm_model_forward(m, ids + ws, 1, w, NULL, RETRLM_FORWARD_NO_LOGITS)) return NULL;
    return retrlm_model_ffn_input(m, m->config.n_layers - 1) + (p - ws) * (size_t)m->config.dim;
}

// kNN-LM keys run every token through the model once, carrying the block before each block.
// The first seq_len keys are those of the first seq_len tokens read as one window, bit for bit.
// In a one-layer model a carried block's keys and values depend on its tokens alone, so every
// key equals that of some window read alone, and the window shows the key's context: at least
// seq_len / 2 tokens but for the first seq_len / 2 keys, across lanes too. 1 and 2 threads agree.
static void test_knnlm_keys(void) {
    static const char *text = "Then came Eliakim the son of Hilkiah, which was over the household, and Shebna the "
                              "scribe, and Joah the son of Asaph the recorder, to Hezekiah with their clothes rent, "
                              "and told him the words of Rabshakeh. And it came to pass, when king Hezekiah heard it, "
                              "that he rent his clothes, and covered himself with sackcloth, and went into the house.";
    const int S = 16, half = 8;
    retrlm_model one;
    retrlm_model_config mc = model.config;
    retrlm_knnlm kn, k1;
    size_t n, p, ws;
    int *ids = encode_all(text, &n), ok = 1, far = 1, th;
    const int D = model.config.dim;
    CHECK(n > 6 * (size_t)S); // three lanes of at least two blocks
    CHECK_OK(retrlm_knnlm_build(&kn, &model, ids, n, S, NULL));
    for (p = 0; p < (size_t)S; p++) {
        const float *w = window_key(&model, ids, 0, p, S);
        ok &= kn.index.ids[p] == (int64_t)p && w && !memcmp(kn.index.vectors + p * D, w, D * sizeof(float));
    }
    CHECK(ok);
    retrlm_knnlm_free(&kn);
    mc.n_layers = 1;
    mc.seed = 3;
    CHECK_OK(retrlm_model_init(&one, &mc));
    for (th = 2; th >= 1; th--) {
#ifdef _OPENMP
        omp_set_num_threads(th);
#endif
        CHECK_OK(retrlm_knnlm_build(th == 2 ? &kn : &k1, &one, ids, n, S, NULL));
    }
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    CHECK(kn.n == n - 1 && k1.n == kn.n && !memcmp(kn.index.vectors, k1.index.vectors, kn.n * D * sizeof(float)));
    for (p = 0, ok = 1; p < kn.n; p++) {
        int found = 0;
        for (ws = p + 1 > (size_t)S ? p + 1 - S : 0; ws <= p && !found; ws++) {
            const float *w = window_key(&one, ids, ws, p, (int)(ws + S <= n ? S : n - ws));
            if (w && !memcmp(kn.index.vectors + p * D, w, D * sizeof(float))) {
                found = 1;
                far &= p < (size_t)half ? ws == 0 : p - ws >= (size_t)half;
            }
        }
        ok &= found;
    }
    CHECK(ok && far);
    retrlm_knnlm_free(&k1);
    // a RETRO model's keys would need its neighbours
    mc.retro_chunk = 4, mc.retro_k = 1, mc.retro_len = 8, mc.retro_every = 1;
    mc.retro_enc_dim = 16, mc.retro_enc_layers = 1, mc.retro_enc_heads = 2;
    retrlm_model_free(&one);
    CHECK_OK(retrlm_model_init(&one, &mc));
    CHECK(retrlm_knnlm_build(&k1, &one, ids, n, S, NULL) == RETRLM_ERR_ARG);
    retrlm_knnlm_free(&kn);
    retrlm_model_free(&one);
    retrlm_free(ids);
}

// REPLUG's default temperature follows the retriever's scores: 1 for BM25, 0.1 for dense
// (cosine) scores, 2 / (rrf_k + 1)^2 for RRF's fused ranks; the weights it gives differ across
// units (the mixture is not the uniform one a huge temperature gives)
static void test_replug_default_temperature(void) {
    static const char *text = "In those days was Hezekiah sick unto death, and the king of Assyria sent a great army.";
    static const retrlm_retrieve_mode modes[3] = {RETRLM_RETRIEVE_BM25, RETRLM_RETRIEVE_DENSE, RETRLM_RETRIEVE_RRF};
    const float want[3] = {1.0f, 0.1f, 2.0f / (61.0f * 61.0f)};
    retrlm_datastore ds;
    retrlm_encoder e;
    retrlm_encoder_config ec;
    retrlm_retrieve_params rp;
    retrlm_ralm_config rc;
    size_t n;
    int *ids = encode_all(text, &n), i;
    double def, given, uniform;
    build(&ds, 6);
    memset(&ec, 0, sizeof ec);
    ec.model.vocab_size = tok.n_vocab;
    ec.model.dim = 16;
    ec.model.n_layers = 1;
    ec.model.n_heads = 2;
    ec.model.init_std = 0.3f;
    ec.model.seed = 5;
    ec.normalize = 1;
    ec.max_batch = 4;
    ec.max_query_tokens = 16;
    ec.max_doc_tokens = 16;
    CHECK_OK(retrlm_encoder_init(&e, &ec));
    CHECK_OK(retrlm_datastore_embed(&ds, &e, &tok, NULL, NULL, NULL));
    memset(&rp, 0, sizeof rp);
    memset(&rc, 0, sizeof rc);
    rc.mode = RETRLM_RALM_REPLUG;
    rc.k = 3, rc.stride = 4, rc.query_tokens = 6, rc.unit_tokens = 6, rc.context_tokens = 8;
    rc.retrieve = &rp;
    rp.depth = 8;
    for (i = 0; i < 3; i++) {
        rp.mode = modes[i];
        rc.temperature = 0.0f;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &def, NULL));
        rc.temperature = want[i];
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &given, NULL));
        rc.temperature = 1e6f;
        CHECK_OK(retrlm_ralm_bits_per_byte(&model, &tok, &ds, ids, n, strlen(text), &rc, &uniform, NULL));
        CHECK(def == given);
        CHECK(fabs(def - uniform) > 1e-5 * uniform);
    }
    retrlm_encoder_free(&e);
    retrlm_datastore_free(&ds);
    retrlm_free(ids);
}

// RETRO generation retrieves with each chunk as it completes: its logits at every position are
// a forward over the whole sequence with the neighbours retrlm_retro_neighbours_build finds for
// it (doc NULL), and the units it reports are the ones those neighbours start with.
static void test_retro_generate(void) {
    retrlm_datastore ds, raw;
    retrlm_datastore_config dc;
    retrlm_model rm;
    retrlm_model_config mc;
    retrlm_retro_generate_config gc;
    retrlm_retro_neighbours nb;
    retrlm_retro_neighbours_config nc;
    retrlm_sampler smp;
    retrlm_rng rng;
    const int T = 64, M = 8, K = 2, R = 16;
    size_t np;
    static const char *text = "Hezekiah received the letter of the hand of the messengers. Sennacherib king of Assyria departed, and went and returned.";
    int *prompt = encode_all(text, &np), seq[65], out[64], units[16], n_out = 0, again[64], n2 = 0;
    int D, V, c, j, p, present = 0, ok = 1;
    float *logits, worst = 0.0f, moved = 0.0f;
    build(&ds, 8);
    memset(&mc, 0, sizeof mc);
    mc.vocab_size = tok.n_vocab;
    mc.dim = 32, mc.n_layers = 2, mc.n_heads = 2, mc.max_seq_len = T, mc.max_batch = 1;
    mc.init_std = 0.2f, mc.seed = 11; // large weights: neighbours move the logits a lot
    mc.retro_chunk = M, mc.retro_k = K, mc.retro_len = R, mc.retro_every = 1;
    mc.retro_enc_dim = 16, mc.retro_enc_layers = 1, mc.retro_enc_heads = 2;
    CHECK_OK(retrlm_model_init(&rm, &mc));
    if (!rm.params || np < 40) {
        CHECK(0);
        return;
    }
    V = rm.config.vocab_size;
    logits = (float *)malloc(sizeof(float) * (size_t)(T + 1) * V);
    memset(&gc, 0, sizeof gc);
    gc.tok = &tok, gc.ds = &ds, gc.units = units, gc.logits = logits; // greedy
    for (j = 0; j < 16; j++) units[j] = -7;
    // 40 tokens of prompt, then as many as fit: positions 0..63 decoded, 25 new
    CHECK_OK(retrlm_retro_generate(&rm, &gc, prompt, 40, 60, out, &n_out));
    CHECK(n_out == T + 1 - 40);
    D = 40 + n_out - 1;
    memcpy(seq, prompt, 40 * sizeof(int));
    memcpy(seq + 40, out, (size_t)n_out * sizeof(int));
    memset(&nc, 0, sizeof nc);
    nc.chunk = M, nc.k = K, nc.len = R;
    CHECK_OK(retrlm_retro_neighbours_build(&nb, &ds, &tok, seq, (size_t)D, NULL, &nc));
    CHECK(nb.n_chunks == D / M);
    CHECK_OK(retrlm_model_forward_retro(&rm, seq, 1, D, NULL, nb.tokens, 0));
    for (p = 0; p < D; p++) {
        for (j = 0; j < V; j++) worst = fmaxf(worst, fabsf(logits[(size_t)p * V + j] - rm.logits[(size_t)p * V + j]));
        if (p >= 40 - 1) { // greedy: each token is the argmax of the logits before it
            int best = 0;
            for (j = 1; j < V; j++) best = logits[(size_t)p * V + j] > logits[(size_t)p * V + best] ? j : best;
            ok &= best == seq[p + 1];
        }
    }
    CHECK(worst < 1e-4f);
    CHECK(ok);
    // the units: neighbour j of chunk c starts with unit units[c*k + j]'s tokens
    for (c = 0; c < D / M; c++)
        for (j = 0; j < K; j++) {
            const int *row = retrlm_retro_neighbours_chunk(&nb, c) + (size_t)j * R;
            int u = units[c * K + j], nt, e;
            if (row[0] < 0) {
                ok &= u == -1;
                continue;
            }
            if (u < 0 || u >= ds.n_units) {
                ok = 0;
                continue;
            }
            const int *ids = retrlm_datastore_tokens(&ds, u, &nt);
            for (e = 0; e < nt && e < R; e++) ok &= ids[e] == row[e];
            present++;
        }
    CHECK(ok);
    CHECK(units[0] >= 0 && ds.unit_doc[units[0]] == 101); // the first chunk finds its document
    CHECK(present >= 5);
    // without neighbours the logits after the first chunk are not the same: the test has teeth
    CHECK_OK(retrlm_model_forward_retro(&rm, seq, 1, D, NULL, NULL, 0));
    for (p = M - 1; p < D; p++)
        for (j = 0; j < V; j++) moved = fmaxf(moved, fabsf(logits[(size_t)p * V + j] - rm.logits[(size_t)p * V + j]));
    CHECK(moved > 1e-2f);
    printf("retro_generate: %d positions, |decode - forward| <= %.2g, neighbours move the logits by %.3g, %d of %d neighbours present\n",
           D, (double)worst, (double)moved, present, D / M * K);
    {
        // min_overlap: the same equality with weak neighbours left out, their units still found
        retrlm_retro_neighbours nf;
        int kept = 0, gone = 0, n3 = 0;
        float worst2 = 0.0f;
        gc.neighbours.min_overlap = 0.5f;
        CHECK_OK(retrlm_retro_generate(&rm, &gc, prompt, 40, 60, again, &n3));
        memcpy(seq + 40, again, (size_t)n3 * sizeof(int));
        nc.min_overlap = 0.5f;
        CHECK_OK(retrlm_retro_neighbours_build(&nf, &ds, &tok, seq, (size_t)(40 + n3 - 1), NULL, &nc));
        CHECK_OK(retrlm_model_forward_retro(&rm, seq, 1, 40 + n3 - 1, NULL, nf.tokens, 0));
        for (p = 0; p < 40 + n3 - 1; p++)
            for (j = 0; j < V; j++)
                worst2 = fmaxf(worst2, fabsf(logits[(size_t)p * V + j] - rm.logits[(size_t)p * V + j]));
        CHECK(worst2 < 1e-4f);
        for (c = 0; c < nf.n_chunks; c++)
            for (j = 0; j < K; j++) {
                int here = retrlm_retro_neighbours_chunk(&nf, c)[j * R] >= 0;
                kept += here, gone += !here;
                CHECK(here == (units[c * K + j] >= 0));
            }
        CHECK(kept > 0 && gone > 0);
        retrlm_retro_neighbours_free(&nf);
        gc.neighbours.min_overlap = 0.0f;
    }
    // sampling: the same seed gives the same tokens; a prompt as long as the context gives none
    memset(&smp, 0, sizeof smp);
    smp.temperature = 1.0f;
    gc.sampler = &smp, gc.rng = &rng, gc.units = NULL, gc.logits = NULL;
    retrlm_rng_seed(&rng, 3);
    CHECK_OK(retrlm_retro_generate(&rm, &gc, prompt, 10, 12, out, &n_out));
    retrlm_rng_seed(&rng, 3);
    CHECK_OK(retrlm_retro_generate(&rm, &gc, prompt, 10, 12, again, &n2));
    CHECK(n_out == 12 && n2 == 12 && !memcmp(out, again, 12 * sizeof(int)));
    CHECK_OK(retrlm_retro_generate(&rm, &gc, seq, T, 5, out, &n_out));
    CHECK(n_out == 1);
    // bad input
    gc.sampler = NULL;
    CHECK(retrlm_retro_generate(&model, &gc, prompt, 10, 4, out, &n_out) == RETRLM_ERR_ARG); // plain
    CHECK(retrlm_retro_generate(&rm, &gc, seq, T + 1, 4, out, &n_out) == RETRLM_ERR_ARG);    // too long
    CHECK(retrlm_retro_generate(&rm, &gc, prompt, 0, 4, out, &n_out) == RETRLM_ERR_ARG);     // empty
    gc.neighbours.k = 3;
    CHECK(retrlm_retro_generate(&rm, &gc, prompt, 10, 4, out, &n_out) == RETRLM_ERR_ARG);    // shape
    gc.neighbours.k = 0;
    seq[2] = V;
    CHECK(retrlm_retro_generate(&rm, &gc, seq, 10, 4, out, &n_out) == RETRLM_ERR_ARG);       // token
    memset(&dc, 0, sizeof dc);
    CHECK_OK(retrlm_datastore_init(&raw, &dc));
    gc.ds = &raw;
    CHECK(retrlm_retro_generate(&rm, &gc, prompt, 10, 4, out, &n_out) == RETRLM_ERR_ARG);    // uncommitted
    retrlm_datastore_free(&raw);
    retrlm_retro_neighbours_free(&nb);
    retrlm_model_free(&rm);
    retrlm_datastore_free(&ds);
    retrlm_free(prompt);
    free(logits);
}

int main(void) {
    setup();
    RUN(test_datastore_units);
    RUN(test_datastore_files);
    RUN(test_ralm_matches_direct);
    RUN(test_knnlm);
    RUN(test_knnlm_keys);
    RUN(test_replug_default_temperature);
    RUN(test_retro_generate);
    retrlm_model_free(&model);
    retrlm_tokenizer_free(&tok);
    return test_report();
}
