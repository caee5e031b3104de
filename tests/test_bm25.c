// analyzer + bm25: Porter stemmer, analysis chain, hand-computed BM25 scores, pruned == exhaustive
// top-k on real data, updates == fresh build, persistence and malformed files, batch search
#include "retrlm.h"
#include "test.h"
#include "files.h"

// ---- analyzer --------------------------------------------------------------------------------

// Examples from M.F. Porter, "An algorithm for suffix stripping", Program 14(3) 130-137, 1980
// (its step-by-step examples, run through the whole algorithm), and words from the reference
// vocabulary (tartarus.org/martin/PorterStemmer voc.txt / output.txt). Checked here against
// Snowball's "porter" (libstemmer 2.2.0) on all 81,816 distinct ASCII words of the debpkg
// corpus: 112 differ, all where the reference implementation departs from the paper ("logi",
// "bli", words of two letters, and double consonants Snowball does not list, as "grokking").
static void test_porter(void) {
    static const char *const pairs[] = {
        "caresses", "caress", "ponies", "poni", "ties", "ti", "caress", "caress", "cats", "cat", "feed",
        "feed", "agreed", "agre", "plastered", "plaster", "bled", "bled", "motoring", "motor", "sing",
        "sing", "conflated", "conflat", "troubled", "troubl", "sized", "size", "hopping", "hop", "tanned",
        "tan", "falling", "fall", "hissing", "hiss", "fizzed", "fizz", "failing", "fail", "filing", "file",
        "happy", "happi", "sky", "sky", "relational", "relat", "conditional", "condit", "rational",
        "ration", "valenci", "valenc", "hesitanci", "hesit", "digitizer", "digit", "conformabli",
        "conform", "radicalli", "radic", "differentli", "differ", "vileli", "vile", "analogousli",
        "analog", "vietnamization", "vietnam", "predication", "predic", "operator", "oper", "feudalism",
        "feudal", "decisiveness", "decis", "hopefulness", "hope", "callousness", "callous", "formaliti",
        "formal", "sensitiviti", "sensit", "sensibiliti", "sensibl", "triplicate", "triplic", "formative",
        "form", "formalize", "formal", "electriciti", "electr", "electrical", "electr", "hopeful", "hope",
        "goodness", "good", "revival", "reviv", "allowance", "allow", "inference", "infer", "airliner",
        "airlin", "gyroscopic", "gyroscop", "adjustable", "adjust", "defensible", "defens", "irritant",
        "irrit", "replacement", "replac", "adjustment", "adjust", "dependent", "depend", "adoption",
        "adopt", "homologou", "homolog", "communism", "commun", "activate", "activ", "angulariti",
        "angular", "homologous", "homolog", "effective", "effect", "bowdlerize", "bowdler", "probate",
        "probat", "rate", "rate", "cease", "ceas", "controll", "control", "roll", "roll",
        "generalizations", "gener", "oscillators", "oscil", "abilities", "abil", "abandoned", "abandon",
        "consign", "consign", "consigned", "consign", "consigning", "consign", "consignment", "consign",
        "consistency", "consist", "consistently", "consist", "knackeries", "knackeri", "knaves", "knave",
        // the reference implementation's departures, as Lucene's PorterStemmer
        "analogy", "analog", "archaeology", "archaeolog", "compatibly", "compat", "as", "as", "is", "is"};
    int i, n = (int)(sizeof pairs / sizeof pairs[0]) / 2;
    for (i = 0; i < n; i++) {
        char w[80];
        int l;
        strcpy(w, pairs[2 * i]);
        l = retrlm_porter_stem(w, (int)strlen(w));
        if (strcmp(w, pairs[2 * i + 1]) || l != (int)strlen(pairs[2 * i + 1])) {
            fprintf(stderr, "porter(%s) = %s, expected %s\n", pairs[2 * i], w, pairs[2 * i + 1]);
            CHECK(0);
        }
    }
}

typedef struct term_list {
    char text[1024];
    int  n;
} term_list;

static int collect_terms(void *user, const char *term, int len, int position) {
    term_list *tl = (term_list *)user;
    size_t at = strlen(tl->text);
    (void)position;
    if (at + (size_t)len + 2 < sizeof tl->text) {
        if (at) tl->text[at++] = ' ';
        memcpy(tl->text + at, term, (size_t)len + 1);
    }
    tl->n++;
    return 0;
}

static const char *analyze(const retrlm_analyzer *a, const char *s, term_list *tl) {
    memset(tl, 0, sizeof *tl);
    retrlm_analyze(a, s, strlen(s), collect_terms, tl);
    return tl->text;
}

static void test_analyzer(void) {
    retrlm_analyzer a, plain, mine;
    retrlm_analyzer_config cfg;
    term_list tl;
    static const char *const stop[] = {"foo", "bar", "foo"};
    char longw[200];
    CHECK_OK(retrlm_analyzer_init(&a, NULL));
    CHECK(a.stem == 1 && a.n_stopwords == 33);
    CHECK(!strcmp(analyze(&a, "The QUICK brown foxes were running; it's John's dog!", &tl),
                  "quick brown fox were run john dog"));
    CHECK(!strcmp(analyze(&a, "node.js v8 x86_64 IPv6 2024-11-23", &tl), "node js v8 x86 64 ipv6 2024 11 23"));
    // Latin-1 / Latin Extended / Greek / Cyrillic lower-casing; non-ASCII terms are not stemmed
    CHECK(!strcmp(analyze(&a, "\xC3\x89\x43OLE \xC5\x81\xC3\x93\x44\xC5\xB9 \xCE\x91\xCE\x98\xCE\x97\xCE\x9D\xCE\x91 \xD0\x9C\xD0\x9E\xD0\xA1\xD0\x9A\xD0\x92\xD0\x90", &tl),
                  "\xC3\xA9\x63ole \xC5\x82\xC3\xB3\x64\xC5\xBA \xCE\xB1\xCE\xB8\xCE\xB7\xCE\xBD\xCE\xB1 \xD0\xBC\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0"));
    CHECK(retrlm_unicode_lower(0x178) == 0xFF && retrlm_unicode_lower(0x130) == 'i' &&
          retrlm_unicode_lower(0xD7) == 0xD7 && retrlm_unicode_lower(0x4E2D) == 0x4E2D);
    // separators: punctuation, symbols, emoji, invalid UTF-8; CJK counts as letters
    CHECK(!strcmp(analyze(&a, "caf\xC3\xA9\xE2\x80\x94menu \xF0\x9F\x98\x80smile \xFF\xC3 ok \xE4\xB8\xAD\xE6\x96\x87", &tl),
                  "caf\xC3\xA9 menu smile ok \xE4\xB8\xAD\xE6\x96\x87"));
    CHECK(!strcmp(analyze(&a, "", &tl), "") && tl.n == 0);
    memset(longw, 'a', sizeof longw);
    longw[199] = 0;
    analyze(&a, longw, &tl);
    CHECK(tl.n == 1 && strlen(tl.text) == RETRLM_ANALYZER_MAX_TERM);
    memset(&cfg, 0, sizeof cfg);
    cfg.no_stem = 1;
    cfg.no_stopwords = 1;
    CHECK_OK(retrlm_analyzer_init(&plain, &cfg));
    CHECK(!strcmp(analyze(&plain, "The Running of the bulls", &tl), "the running of the bulls"));
    memset(&cfg, 0, sizeof cfg);
    cfg.stopwords = stop;
    cfg.n_stopwords = 3;
    CHECK_OK(retrlm_analyzer_init(&mine, &cfg));
    CHECK(mine.n_stopwords == 2);
    CHECK(!strcmp(analyze(&mine, "foo the bar baz", &tl), "the baz"));
    retrlm_analyzer_free(&a);
    retrlm_analyzer_free(&plain);
    retrlm_analyzer_free(&mine);
    retrlm_analyzer_free(&mine); // twice is fine
}

// ---- BM25 by hand ----------------------------------------------------------------------------

static double ref_term(double tf, double df, double N, double dl, double avgdl, double k1, double b) {
    double idf = log(1 + (N - df + 0.5) / (df + 0.5));
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl));
}

static void test_hand_scores(void) {
    // no stemming, no stop words: every token is a term
    static const char *const docs[] = {"apple banana apple", "banana cherry", "cherry cherry cherry date",
                                       "apple", "elder"};
    static const int64_t ids[] = {10, 20, 30, 40, 50};
    retrlm_bm25 bm;
    retrlm_bm25_config cfg;
    int64_t out[5];
    float sc[5];
    int n, i;
    double N = 5, avgdl = (3 + 2 + 4 + 1 + 1) / 5.0, k1 = 1.2, b = 0.75; // the defaults
    double e10, e40, e20, e30;
    memset(&cfg, 0, sizeof cfg);
    cfg.analyzer.no_stem = 1;
    cfg.analyzer.no_stopwords = 1;
    CHECK_OK(retrlm_bm25_init(&bm, &cfg));
    CHECK(bm.k1 == (float)1.2 && bm.b == (float)0.75); // casts: s390x evaluates 1.2f as a double in C99
    for (i = 0; i < 5; i++) CHECK_OK(retrlm_bm25_add(&bm, ids[i], docs[i], strlen(docs[i])));
    CHECK(bm.n_pending == 5 && bm.n_docs == 0);
    CHECK(retrlm_bm25_add(&bm, 30, "x", 1) == RETRLM_ERR_ARG); // duplicate id
    CHECK_OK(retrlm_bm25_commit(&bm));
    CHECK(bm.n_docs == 5 && bm.n_terms == 5 && bm.total_len == 11);
    CHECK(retrlm_bm25_term_df(&bm, "cherry", 6) == 2 && retrlm_bm25_term_df(&bm, "fig", 3) == 0);
    // query "apple cherry": doc 10 (apple tf 2, dl 3), 40 (apple 1, dl 1), 20 (cherry 1, dl 2), 30 (cherry 3, dl 4)
    e10 = ref_term(2, 2, N, 3, avgdl, k1, b);
    e40 = ref_term(1, 2, N, 1, avgdl, k1, b);
    e20 = ref_term(1, 2, N, 2, avgdl, k1, b);
    e30 = ref_term(3, 2, N, 4, avgdl, k1, b);
    CHECK_OK(retrlm_bm25_search(&bm, "apple cherry", 12, 5, 0, out, sc, &n));
    CHECK(n == 4);
    {
        double want[4];
        int64_t wid[4];
        int j;
        // expected order by score, computed here
        double s[4];
        int64_t id4[4];
        s[0] = e10; s[1] = e40; s[2] = e20; s[3] = e30;
        id4[0] = 10; id4[1] = 40; id4[2] = 20; id4[3] = 30;
        for (i = 0; i < 4; i++) {
            int best = -1;
            for (j = 0; j < 4; j++)
                if (s[j] >= 0 && (best < 0 || s[j] > s[best])) best = j;
            want[i] = s[best];
            wid[i] = id4[best];
            s[best] = -1;
        }
        for (i = 0; i < 4 && i < n; i++) {
            CHECK(out[i] == wid[i]);
            CHECK_NEAR(sc[i], want[i], 1e-5 * want[i]);
        }
    }
    // a repeated query term counts twice; an unknown term counts nothing
    CHECK_OK(retrlm_bm25_search(&bm, "elder elder zzz", 15, 3, 0, out, sc, &n));
    CHECK(n == 1 && out[0] == 50);
    CHECK_NEAR(sc[0], 2 * ref_term(1, 1, N, 1, avgdl, k1, b), 1e-5);
    CHECK_OK(retrlm_bm25_search(&bm, "nothing here", 12, 3, 0, out, sc, &n));
    CHECK(n == 0);
    CHECK(retrlm_bm25_search(&bm, "apple", 5, 0, 0, out, sc, &n) == RETRLM_ERR_ARG);
    {
        int len = 0;
        CHECK(retrlm_bm25_doc_length(&bm, 30, &len) && len == 4);
        CHECK(!retrlm_bm25_doc_length(&bm, 31, &len));
    }
    // ties go to the smaller id: identical documents
    retrlm_bm25_free(&bm);
    CHECK_OK(retrlm_bm25_init(&bm, &cfg));
    for (i = 0; i < 300; i++) {
        const char *t = i % 3 ? "same words here" : "other";
        CHECK_OK(retrlm_bm25_add(&bm, 1000 - i, t, strlen(t)));
    }
    CHECK_OK(retrlm_bm25_commit(&bm));
    CHECK_OK(retrlm_bm25_search(&bm, "words", 5, 3, 0, out, sc, &n));
    CHECK(n == 3 && out[0] == 701 && out[1] == 702 && out[2] == 704 && sc[0] == sc[2]);
    retrlm_bm25_free(&bm);
    retrlm_bm25_free(&bm);
}

// ---- real data -----------------------------------------------------------------------------

static tsv_file g_docs, g_queries;
static int g_loaded = -1;

static int load_data(void) {
    char p1[512], p2[512];
    if (g_loaded >= 0) return g_loaded;
    g_loaded = tsv_read(&g_docs, test_data("debpkg/docs.tsv", p1, sizeof p1), 12000) &&
               tsv_read(&g_queries, test_data("debpkg/queries_dev.tsv", p2, sizeof p2), 0) &&
               g_docs.n_cols == 4 && g_queries.n_cols == 2 && g_docs.n_rows == 12000;
    return g_loaded;
}

// builds from docs [from, to) with id = 7 * row + 3 (ids need not be dense or ordered by row)
static retrlm_result build(retrlm_bm25 *bm, int from, int to) {
    int64_t *ids = (int64_t *)malloc(sizeof(int64_t) * (size_t)(to - from));
    const char **texts = (const char **)malloc(sizeof(char *) * (size_t)(to - from));
    retrlm_result r;
    int i;
    for (i = from; i < to; i++) {
        ids[i - from] = 7 * (int64_t)i + 3;
        texts[i - from] = tsv_get(&g_docs, i, 3);
    }
    r = retrlm_bm25_add_batch(bm, to - from, ids, texts, NULL);
    free(ids);
    free((void *)texts);
    return r;
}

// random query: 1-8 words picked from random documents, or a dev query
static void random_query(retrlm_rng *rng, char *q, size_t cap) {
    int nw = 1 + (int)retrlm_rng_below(rng, 8), w;
    q[0] = 0;
    for (w = 0; w < nw; w++) {
        const char *t = tsv_get(&g_docs, (int)retrlm_rng_below(rng, (uint64_t)g_docs.n_rows), 3);
        size_t L = strlen(t), s, e;
        if (!L) continue;
        s = (size_t)retrlm_rng_below(rng, L);
        while (s > 0 && t[s - 1] != ' ') s--;
        e = s;
        while (e < L && t[e] != ' ' && e - s < 30) e++;
        if (strlen(q) + (e - s) + 2 < cap) {
            strncat(q, t + s, e - s);
            strcat(q, " ");
        }
    }
}

static int same_results(const retrlm_bm25 *a, const retrlm_bm25 *b, const char *q, int k, int fa, int fb) {
    int64_t ia[100], ib[100];
    float sa[100], sb[100];
    int na, nb, i;
    if (retrlm_bm25_search(a, q, strlen(q), k, fa, ia, sa, &na) || retrlm_bm25_search(b, q, strlen(q), k, fb, ib, sb, &nb))
        return 0;
    if (na != nb) return 0;
    for (i = 0; i < na; i++)
        if (ia[i] != ib[i] || memcmp(&sa[i], &sb[i], sizeof(float))) return 0;
    return 1;
}

static void test_pruned_equals_exhaustive(void) {
    retrlm_bm25 bm;
    retrlm_rng rng;
    char q[512];
    int i, bad = 0, nonempty = 0;
    static const int ks[] = {1, 10, 100};
    if (!load_data()) SKIP(test_missing("debpkg/{docs,queries_dev}.tsv"));
    CHECK_OK(retrlm_bm25_init(&bm, NULL));
    CHECK_OK(build(&bm, 0, 12000));
    CHECK_OK(retrlm_bm25_commit(&bm));
    retrlm_rng_seed(&rng, 4);
    for (i = 0; i < 3000; i++) {
        int k = ks[i % 3], n;
        int64_t ids[100];
        if (i < 1000) strcpy(q, tsv_get(&g_queries, i, 1));
        else random_query(&rng, q, sizeof q);
        if (!same_results(&bm, &bm, q, k, 0, RETRLM_BM25_EXHAUSTIVE)) {
            if (bad++ < 5) fprintf(stderr, "pruned != exhaustive for k %d, query '%s'\n", k, q);
        }
        if (retrlm_bm25_search(&bm, q, strlen(q), k, 0, ids, NULL, &n) == RETRLM_OK && n > 0) nonempty++;
    }
    CHECK(bad == 0);
    CHECK(nonempty > 2500);
    // batch == one by one
    {
        const char *qs[64];
        int64_t ids[64 * 10], one[10];
        float sc[64 * 10], s1[10];
        int nf[64], n1, ok = 1;
        for (i = 0; i < 64; i++) qs[i] = tsv_get(&g_queries, 1000 + i, 1);
        CHECK_OK(retrlm_bm25_search_batch(&bm, 64, qs, NULL, 10, 0, ids, sc, nf));
        for (i = 0; i < 64; i++) {
            int j;
            CHECK_OK(retrlm_bm25_search(&bm, qs[i], strlen(qs[i]), 10, 0, one, s1, &n1));
            ok &= n1 == nf[i];
            for (j = 0; j < n1 && j < nf[i]; j++) ok &= one[j] == ids[i * 10 + j] && s1[j] == sc[i * 10 + j];
        }
        CHECK(ok);
    }
    retrlm_bm25_free(&bm);
}

// add/delete/commit/save/load == a fresh build of the same documents
static void test_updates(void) {
    retrlm_bm25 fresh, upd, loaded;
    retrlm_rng rng;
    char q[512];
    int i, bad = 0;
    const char *path = "build/tests/test_bm25_updates.rlm";
    if (!load_data()) SKIP(test_missing("debpkg/{docs,queries_dev}.tsv"));
    // fresh: docs [0, 3000) minus every 10th, plus [3000, 4000)
    CHECK_OK(retrlm_bm25_init(&fresh, NULL));
    for (i = 0; i < 4000; i++)
        if (i >= 3000 || i % 10) {
            int64_t id = 7 * (int64_t)i + 3;
            const char *t = tsv_get(&g_docs, i, 3);
            CHECK_OK(retrlm_bm25_add(&fresh, id, t, strlen(t)));
        }
    CHECK_OK(retrlm_bm25_commit(&fresh));
    // updated: [0, 3000) committed and saved, loaded, deletions, extra docs added and deleted
    // before the commit, [3000, 4000) added, then save + load
    CHECK_OK(retrlm_bm25_init(&upd, NULL));
    CHECK_OK(build(&upd, 0, 3000));
    CHECK_OK(retrlm_bm25_save(&upd, path));
    retrlm_bm25_free(&upd);
    CHECK_OK(retrlm_bm25_load(&upd, path));
    CHECK(upd.n_docs == 3000);
    for (i = 0; i < 3000; i += 10) CHECK_OK(retrlm_bm25_delete(&upd, 7 * (int64_t)i + 3));
    CHECK(retrlm_bm25_delete(&upd, 3) == RETRLM_ERR_NOT_FOUND); // already deleted
    CHECK(retrlm_bm25_delete(&upd, 4) == RETRLM_ERR_NOT_FOUND); // never there
    CHECK(retrlm_bm25_add(&upd, 10, "x", 1) == RETRLM_ERR_ARG);  // live id (row 1)
    CHECK_OK(build(&upd, 5000, 5100));                            // added, then deleted again
    CHECK_OK(build(&upd, 3000, 3500));
    for (i = 5000; i < 5100; i++) CHECK_OK(retrlm_bm25_delete(&upd, 7 * (int64_t)i + 3));
    CHECK(upd.n_pending == 500 && upd.n_pending_deletes == 300 && upd.n_docs == 3000);
    CHECK_OK(retrlm_bm25_commit(&upd));
    CHECK(upd.n_docs == 3200 && upd.n_pending == 0);
    CHECK_OK(build(&upd, 3500, 4000));
    CHECK_OK(retrlm_bm25_save(&upd, path));
    CHECK(upd.n_docs == fresh.n_docs && upd.n_terms == fresh.n_terms && upd.total_len == fresh.total_len);
    CHECK_OK(retrlm_bm25_load(&loaded, path));
    CHECK(loaded.n_docs == fresh.n_docs && loaded.n_terms == fresh.n_terms && loaded.postings_bytes == fresh.postings_bytes);
    retrlm_rng_seed(&rng, 9);
    for (i = 0; i < 1000; i++) {
        if (i < 300) strcpy(q, tsv_get(&g_queries, i, 1));
        else random_query(&rng, q, sizeof q);
        if (!same_results(&fresh, &upd, q, 10, 0, 0) || !same_results(&fresh, &loaded, q, 10, 0, 0) ||
            !same_results(&fresh, &loaded, q, 10, RETRLM_BM25_EXHAUSTIVE, 0)) {
            if (bad++ < 5) fprintf(stderr, "updated != fresh for query '%s'\n", q);
        }
    }
    CHECK(bad == 0);
    {
        int len1 = -1, len2 = -2;
        CHECK(retrlm_bm25_doc_length(&fresh, 7 * 3999 + 3, &len1) && retrlm_bm25_doc_length(&loaded, 7 * 3999 + 3, &len2) && len1 == len2);
        CHECK(!retrlm_bm25_doc_length(&loaded, 3, &len1));
    }
    retrlm_bm25_free(&fresh);
    retrlm_bm25_free(&upd);
    retrlm_bm25_free(&loaded);
    remove(path);
}

// every truncation and many single-byte changes give an error (never a crash); an intact
// image gives the same index
static void test_malformed(void) {
    retrlm_bm25 bm, back;
    retrlm_rng rng;
    unsigned char *img, *bad;
    size_t size, i;
    int errors = 0, trials = 0;
    retrlm_bm25_config cfg;
    static const char *const docs[] = {"alpha beta gamma", "beta beta delta", "gamma epsilon zeta alpha",
                                       "one two three four five six seven eight nine ten"};
    memset(&cfg, 0, sizeof cfg);
    cfg.k1 = 1.2f;
    cfg.b = 0.75f;
    CHECK_OK(retrlm_bm25_init(&bm, &cfg));
    for (i = 0; i < 400; i++) CHECK_OK(retrlm_bm25_add(&bm, (int64_t)i * 3, docs[i % 4], strlen(docs[i % 4])));
    CHECK_OK(retrlm_bm25_save_memory(&bm, NULL, 0, &size));
    img = (unsigned char *)malloc(size);
    bad = (unsigned char *)malloc(size);
    CHECK_OK(retrlm_bm25_save_memory(&bm, img, size, &size));
    CHECK_OK(retrlm_bm25_load_memory(&back, img, size));
    CHECK(back.k1 == (float)1.2 && back.b == 0.75f && back.n_docs == 400 && back.analyzer.n_stopwords == 33 && back.analyzer.stem);
    CHECK(same_results(&bm, &back, "beta alpha ten", 10, 0, 0));
    retrlm_bm25_free(&back);
    for (i = 0; i < size; i += 7) { // truncations
        trials++;
        errors += retrlm_bm25_load_memory(&back, img, i) != RETRLM_OK;
        retrlm_bm25_free(&back);
    }
    CHECK(errors == trials);
    CHECK(retrlm_last_error()[0] != 0);
    retrlm_rng_seed(&rng, 5);
    errors = trials = 0;
    for (i = 0; i < 2000; i++) { // flips anywhere: the CRCs catch them
        memcpy(bad, img, size);
        bad[retrlm_rng_below(&rng, size)] ^= (unsigned char)(1 + retrlm_rng_below(&rng, 255));
        trials++;
        errors += retrlm_bm25_load_memory(&back, bad, size) != RETRLM_OK;
        retrlm_bm25_free(&back);
    }
    CHECK(errors == trials);
    free(img);
    free(bad);
    retrlm_bm25_free(&bm);
}

// payload changes with valid CRCs: rewrite a section through the writer and check the error
static void test_inconsistent_sections(void) {
    retrlm_bm25 bm, back;
    retrlm_reader rd;
    static const char *const names[] = {"meta", "params", "stopwords", "term_text", "term_len", "post_off",
                                        "postings", "doc_len", "doc_id", "id_order"};
    unsigned char *img;
    size_t size;
    int s, caught = 0, total = 0;
    retrlm_rng rng;
    CHECK_OK(retrlm_bm25_init(&bm, NULL));
    for (s = 0; s < 300; s++) {
        char t[64];
        snprintf(t, sizeof t, "w%d x%d common y%d", s % 17, s % 5, s);
        CHECK_OK(retrlm_bm25_add(&bm, 2 * s + 1, t, strlen(t)));
    }
    CHECK_OK(retrlm_bm25_save_memory(&bm, NULL, 0, &size));
    img = (unsigned char *)malloc(size);
    CHECK_OK(retrlm_bm25_save_memory(&bm, img, size, &size));
    CHECK_OK(retrlm_reader_open_memory(&rd, img, size, "bm25", 0));
    retrlm_rng_seed(&rng, 11);
    for (s = 0; s < (int)(sizeof names / sizeof names[0]); s++) {
        int trial;
        for (trial = 0; trial < 40; trial++) {
            retrlm_writer w;
            int j;
            unsigned char *copy = NULL, *out;
            size_t osz = 0;
            CHECK_OK(retrlm_writer_init(&w, "bm25"));
            for (j = 0; j < rd.n_sections; j++) {
                retrlm_section_info info;
                const void *p;
                retrlm_reader_section(&rd, j, &info);
                retrlm_reader_get(&rd, info.name, info.type, &p, NULL);
                if (!p) p = img; // empty section: any valid pointer (io's memory sink memcpy's from it)
                if (!strcmp(info.name, names[s]) && info.bytes) {
                    copy = (unsigned char *)malloc(info.bytes);
                    memcpy(copy, p, info.bytes);
                    copy[retrlm_rng_below(&rng, info.bytes)] ^= (unsigned char)(1 + retrlm_rng_below(&rng, 255));
                    p = copy;
                }
                retrlm_writer_add(&w, info.name, info.type, p, info.count);
            }
            retrlm_writer_save_memory(&w, NULL, 0, &osz);
            out = (unsigned char *)malloc(osz);
            retrlm_writer_save_memory(&w, out, osz, &osz);
            if (copy) {
                total++;
                if (retrlm_bm25_load_memory(&back, out, osz) != RETRLM_OK) caught++;
                else { // accepted: must still be safe to search (e.g. a changed doc id)
                    int64_t ids[5];
                    int n;
                    CHECK_OK(retrlm_bm25_search(&back, "common w3", 9, 5, 0, ids, NULL, &n));
                }
                retrlm_bm25_free(&back);
            }
            free(copy);
            free(out);
            retrlm_writer_free(&w);
        }
    }
    CHECK(total > 300 && caught > total / 2);
    retrlm_reader_close(&rd);
    free(img);
    retrlm_bm25_free(&bm);
}

static void test_empty_and_errors(void) {
    retrlm_bm25 bm, back;
    retrlm_bm25_config cfg;
    unsigned char buf[4096];
    size_t size;
    int64_t ids[3];
    int n;
    memset(&bm, 0, sizeof bm);
    retrlm_bm25_free(&bm); // zeroed is fine
    CHECK_OK(retrlm_bm25_init(&bm, NULL));
    CHECK_OK(retrlm_bm25_commit(&bm));
    CHECK_OK(retrlm_bm25_search(&bm, "anything", 8, 3, 0, ids, NULL, &n));
    CHECK(n == 0);
    CHECK_OK(retrlm_bm25_save_memory(&bm, buf, sizeof buf, &size));
    CHECK_OK(retrlm_bm25_load_memory(&back, buf, size));
    CHECK(back.n_docs == 0);
    retrlm_bm25_free(&back);
    CHECK_OK(retrlm_bm25_add(&bm, 1, "", 0)); // an empty document has no terms
    CHECK_OK(retrlm_bm25_add(&bm, 2, "the of and", 10));
    CHECK_OK(retrlm_bm25_add(&bm, 3, "word", 4));
    CHECK_OK(retrlm_bm25_commit(&bm));
    CHECK(bm.n_docs == 3 && bm.n_terms == 1);
    CHECK_OK(retrlm_bm25_search(&bm, "words", 5, 3, 0, ids, NULL, &n));
    CHECK(n == 1 && ids[0] == 3);
    CHECK_OK(retrlm_bm25_save_memory(&bm, buf, sizeof buf, &size));
    CHECK_OK(retrlm_bm25_load_memory(&back, buf, size));
    CHECK(back.n_docs == 3 && retrlm_bm25_doc_length(&back, 1, &n) && n == 0);
    retrlm_bm25_free(&back);
    CHECK(retrlm_bm25_load_memory(&back, buf, 10) != RETRLM_OK);
    // ids 0..n-1 in order are stored without id arrays; adding id 7 brings them back
    retrlm_bm25_free(&bm);
    CHECK_OK(retrlm_bm25_init(&bm, NULL));
    CHECK_OK(retrlm_bm25_add(&bm, 0, "red apple", 9));
    CHECK_OK(retrlm_bm25_add(&bm, 1, "green apple", 11));
    CHECK_OK(retrlm_bm25_add(&bm, 2, "red", 3));
    CHECK_OK(retrlm_bm25_save_memory(&bm, buf, sizeof buf, &size));
    CHECK(bm.doc_id_ == NULL);
    CHECK_OK(retrlm_bm25_load_memory(&back, buf, size));
    CHECK_OK(retrlm_bm25_search(&back, "red", 3, 3, 0, ids, NULL, &n));
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 0); // the shorter document first
    CHECK(retrlm_bm25_doc_length(&back, 1, &n) && n == 2 && !retrlm_bm25_doc_length(&back, 3, &n));
    CHECK(retrlm_bm25_add(&back, 1, "x", 1) == RETRLM_ERR_ARG);
    CHECK_OK(retrlm_bm25_delete(&back, 0));
    CHECK_OK(retrlm_bm25_add(&back, 7, "red red", 7));
    CHECK_OK(retrlm_bm25_commit(&back));
    CHECK(back.doc_id_ != NULL && back.n_docs == 3);
    CHECK_OK(retrlm_bm25_search(&back, "red", 3, 3, 0, ids, NULL, &n));
    CHECK(n == 2 && ids[0] == 7 && ids[1] == 2);
    retrlm_bm25_free(&back);
    CHECK(retrlm_bm25_load(&back, "build/tests/no-such-file.rlm") != RETRLM_OK);
    retrlm_bm25_free(&back);
    { // a batch with a repeated id adds nothing
        int64_t bid[200];
        const char *bt[200];
        int j;
        for (j = 0; j < 200; j++) {
            bid[j] = 1000 + j;
            bt[j] = "some text";
        }
        bid[199] = 1000;
        CHECK_OK(retrlm_bm25_init(&back, NULL));
        CHECK(retrlm_bm25_add_batch(&back, 200, bid, bt, NULL) == RETRLM_ERR_ARG);
        CHECK(back.n_pending == 0);
        bid[199] = 5000;
        CHECK_OK(retrlm_bm25_add_batch(&back, 200, bid, bt, NULL));
        CHECK(back.n_pending == 200);
        retrlm_bm25_free(&back);
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.b = 2;
    CHECK(retrlm_bm25_init(&back, &cfg) == RETRLM_ERR_ARG);
    retrlm_bm25_free(&back);
    retrlm_bm25_free(&bm);
}

int main(void) {
    RUN(test_porter);
    RUN(test_analyzer);
    RUN(test_hand_scores);
    RUN(test_empty_and_errors);
    RUN(test_malformed);
    RUN(test_inconsistent_sections);
    RUN(test_pruned_equals_exhaustive);
    RUN(test_updates);
    tsv_free(&g_docs);
    tsv_free(&g_queries);
    return test_report();
}
