// bench/npm - NPM (strategy 4, a nonparametric masked LM) against a parametric masked LM of the
// same encoder and training tokens, and against BM25, on a cloze set built from debpkg_lm's
// test split.
//   make bench-npm                         default sizes (3,000 steps)
//   build/bench/npm [steps] [train_bytes] [max_items] [out_dir]
// RETRLM_NPM_BATCHES=bm25 trains both encoders on TRIME_ext's BM25 groups of blocks instead
// (retrlm_trime_bm25_batches; files named -bm25).
// Data: ../shared/data/debpkg_lm (RETRLM_DATA overrides ../shared/data). The first train_bytes
// (default 4,000,000, cut at a line end) of train.txt are the training text and NPM's phrase
// index. The tokenizer is byte-level BPE of 4,096 tokens trained on them; the encoders read one
// more id, the mask (4,096). Both encoders: 128 wide, 4 layers, 4 heads, blocks of 128 tokens,
// 16 a batch (consecutive blocks of the text: debpkg_lm is sorted by package name, so
// neighbouring blocks describe sibling packages, and a span's copy is often in the batch),
// spans of 15% (geometric lengths, p 0.5, at most 5; NPM: start, end and token-level terms),
// AdamW lr 2e-3, the same seed and draws.
// The cloze set, deterministic: for each test document (a line), the first word (ASCII letters,
// at least 4, after a space, before a non-letter) that occurs 2 to 20 times in the training
// text; its tokens (the word with its space, encoded apart from what is before and after) are
// masked, and the context is at most 128 tokens around them. A prediction is right when it
// decodes to exactly the word with its space.
//   NPM: retrlm_npm_fill from a flat phrase index of every training token (k 32).
//   NPM restricted to BM25: NPM's BM25-restricted search, the fill from a phrase index of the
//     tokens of BM25's 10 best training documents alone (each document encoded apart).
//   parametric: the masked LM's most probable token at each masked position (not the mask).
//   BM25: the 10 best training documents for the document without the word; the word that
//     follows the masked word's left neighbour in the first of them that has it.
// Items are counted by their document's overlap with train (overlap_test.tsv: the share of its
// word 8-grams found in train; 0, (0, 0.5], (0.5, 1]), where a retriever has something to copy.
// Prints a table and the probe (below), then name=value lines. Artifacts (tokenizer, models)
// in out_dir (default build/npm-debpkg_lm) are reused by the next run.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/files.h"
#include "debpkg_lm.h"

enum { VOCAB = 4096, MASK = VOCAB, DIM = 128, LAYERS = 4, HEADS = 4, SEQ = 128, BATCH = 16, K = 32 };

static void die(const char *what) {
    fprintf(stderr, "npm: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

static int progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    (void)user;
    if (now - last > 15 || done >= total) {
        fprintf(stderr, "  %s %.0f / %.0f\n", stage, done, total);
        last = now;
    }
    return 0;
}

// a word of the training text: where it is and how long
typedef struct word {
    const char *s;
    int len;
} word;

static int word_cmp(const void *a, const void *b) {
    const word *x = (const word *)a, *y = (const word *)b;
    int c = memcmp(x->s, y->s, (size_t)(x->len < y->len ? x->len : y->len));
    return c ? c : x->len - y->len;
}

// every maximal run of ASCII letters in t (len), sorted
static word *words_of(const char *t, size_t len, size_t *n) {
    size_t i = 0, cap = 1024, k = 0;
    word *w = (word *)malloc(cap * sizeof(word));
    while (i < len) {
        size_t j = i;
        while (j < len && isalpha((unsigned char)t[j])) j++;
        if (j > i) {
            if (k == cap) w = (word *)realloc(w, (cap *= 2) * sizeof(word));
            w[k].s = t + i, w[k].len = (int)(j - i), k++;
            i = j;
        } else
            i++;
    }
    qsort(w, k, sizeof(word), word_cmp);
    *n = k;
    return w;
}

// occurrences of (s, len) among the sorted words
static int count_of(const word *w, size_t n, const char *s, int len) {
    word key;
    size_t lo = 0, hi = n, a, b;
    key.s = s, key.len = len;
    while (lo < hi) { // first >= key
        size_t mid = (lo + hi) / 2;
        if (word_cmp(&w[mid], &key) < 0) lo = mid + 1;
        else hi = mid;
    }
    a = lo, b = lo;
    while (b < n && !word_cmp(&w[b], &key)) b++;
    return (int)(b - a);
}

static void encoder(retrlm_model *m, int logits) {
    retrlm_model_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = VOCAB + 1, c.dim = DIM, c.n_layers = LAYERS, c.n_heads = HEADS;
    c.max_seq_len = SEQ, c.max_batch = BATCH, c.seed = 1;
    c.bidirectional = 1, c.no_logits = !logits;
    if (retrlm_model_init(m, &c)) die("encoder");
}

// an encoder trained (or loaded from path): NPM's two-pass loss, or the parametric baseline
static double train(retrlm_model *m, int parametric, const int *ids, size_t n, int steps, const int64_t *batches,
                    int64_t n_batches, const char *path) {
    retrlm_adamw o;
    retrlm_adamw_config ac;
    retrlm_adamw_group g[2];
    retrlm_lm_train_state st;
    retrlm_npm_train_config nc;
    double t0 = retrlm_time_seconds(), first = 0.0, last = 0.0;
    float *hits;
    int i, w = steps < 100 ? (steps + 1) / 2 : 50;
    if (!retrlm_model_load(m, path, NULL)) return 0.0;
    encoder(m, parametric);
    memset(&ac, 0, sizeof ac);
    ac.warmup_steps = steps / 10;
    ac.total_steps = steps;
    if (retrlm_adamw_init(&o, &ac, g, retrlm_model_param_groups(m, 2e-3f, 0.1f, g))) die("adamw");
    retrlm_lm_train_state_init(&st, 1);
    memset(&nc, 0, sizeof nc);
    nc.train = ids, nc.n_train = n;
    nc.mask_id = MASK;
    nc.parametric = parametric;
    nc.steps = steps;
    nc.batches = batches, nc.n_batches = n_batches;
    nc.hits = hits = (float *)calloc((size_t)steps + 1, sizeof(float));
    nc.progress = progress;
    if (retrlm_npm_train(m, &o, &nc, &st)) die("npm train");
    if (retrlm_model_save(m, NULL, NULL, path)) die("save");
    retrlm_adamw_free(&o);
    for (i = 0; i < w; i++) first += hits[i] / w, last += hits[steps - w + i] / w;
    if (!parametric) // the share of counted spans whose start query ranks a copy first
        fprintf(stderr, "  %s: in-batch start hits %.3f in the first %d steps, %.3f in the last\n", path, first, w,
                last);
    fprintf(stderr, "  %s: last loss %.3f\n", path, (double)st.last_loss);
    free(hits);
    return retrlm_time_seconds() - t0;
}

// one cloze item: the test document's tokens with the word masked, and the word
typedef struct item {
    int ids[SEQ], n, start, len; // the window around the span
    char word[64];               // " word"
    const char *doc;             // the document, and the word's place in it
    size_t doc_len, at;
    int bucket;                  // the document's overlap bucket (debpkg_lm.h)
} item;

enum { SYSTEMS = 4 };

// appends ids of text (len) to ids at *n (capacity cap); 0 when it does not fit
static int encode_into(const retrlm_tokenizer *tok, const char *t, size_t len, int *ids, size_t *n, size_t cap) {
    size_t k;
    if (!len) return 1;
    if (retrlm_tokenizer_encode(tok, t, len, 0, ids + *n, cap - *n, &k)) return 0;
    *n += k;
    return 1;
}

// the cloze item of document d (text t, len bytes), or 0 when it has none
static int make_item(item *it, const retrlm_tokenizer *tok, const word *w, size_t nw, const char *t, size_t len) {
    static int buf[1 << 16];
    size_t i = 1, n = 0, s0, s1, from;
    while (i < len) {
        size_t j = i;
        if (!isalpha((unsigned char)t[i]) || t[i - 1] != ' ') {
            i++;
            continue;
        }
        while (j < len && isalpha((unsigned char)t[j])) j++;
        if (j - i >= 4 && j - i < sizeof it->word - 2) {
            int c = count_of(w, nw, t + i, (int)(j - i));
            if (c >= 2 && c <= 20) break;
        }
        i = j;
    }
    if (i >= len) return 0;
    {
        size_t j = i;
        while (j < len && isalpha((unsigned char)t[j])) j++;
        // prefix (without its last space), " word", the rest: encoded apart so the word is whole tokens
        if (!encode_into(tok, t, i - 1, buf, &n, sizeof buf / sizeof buf[0])) return 0;
        s0 = n;
        if (!encode_into(tok, t + i - 1, j - i + 1, buf, &n, sizeof buf / sizeof buf[0])) return 0;
        s1 = n;
        if (!encode_into(tok, t + j, len - j, buf, &n, sizeof buf / sizeof buf[0])) return 0;
        it->word[0] = ' ';
        memcpy(it->word + 1, t + i, j - i);
        it->word[j - i + 1] = '\0';
        it->doc = t, it->doc_len = len, it->at = i;
    }
    if (s1 - s0 > 5 || s1 - s0 >= SEQ) return 0; // longer than any span the encoders trained on
    from = s0 > SEQ / 2 ? s0 - SEQ / 2 : 0;
    if (from + SEQ > n) from = n > SEQ ? n - SEQ : 0;
    it->n = (int)(n - from < (size_t)SEQ ? n - from : (size_t)SEQ);
    memcpy(it->ids, buf + from, (size_t)it->n * sizeof(int));
    it->start = (int)(s0 - from), it->len = (int)(s1 - s0);
    for (i = 0; i < (size_t)it->len; i++) it->ids[it->start + (int)i] = MASK;
    return 1;
}

// whether ids (len) decode to exactly word
static int decodes_to(const retrlm_tokenizer *tok, const int *ids, int len, const char *word) {
    char b[256];
    size_t n;
    int i;
    for (i = 0; i < len; i++)
        if (ids[i] < 0 || ids[i] >= VOCAB) return 0;
    if (retrlm_tokenizer_decode(tok, ids, (size_t)len, b, sizeof b - 1, &n)) return 0;
    return n == strlen(word) && !memcmp(b, word, n);
}

// the 10 best training documents (lines) by BM25 for the item's document without its word,
// into ids; returns how many
static int bm25_docs(const retrlm_bm25 *bm, const item *it, int64_t *ids) {
    char q[8192];
    size_t a = it->at, e = it->at, qn;
    int found;
    while (e < it->doc_len && isalpha((unsigned char)it->doc[e])) e++;
    if (a + (it->doc_len - e) >= sizeof q) return 0;
    memcpy(q, it->doc, a), qn = a;
    memcpy(q + qn, it->doc + e, it->doc_len - e), qn += it->doc_len - e;
    if (retrlm_bm25_search(bm, q, qn, 10, 0, ids, NULL, &found)) die("bm25 search");
    return found;
}

// BM25's guess: the word after the masked word's left neighbour, in the best of 10 documents
static int bm25_right(const retrlm_bm25 *bm, const item *it, char *const *line, const size_t *line_len) {
    size_t a = it->at;
    const char *left;
    int64_t ids[10];
    int found, d, left_len;
    // the left neighbour: the letters run before the space before the word
    if (a < 2 || !isalpha((unsigned char)it->doc[a - 2])) return 0;
    left = it->doc + a - 2;
    while (left > it->doc && isalpha((unsigned char)left[-1])) left--;
    left_len = (int)(it->doc + a - 1 - left);
    found = bm25_docs(bm, it, ids);
    for (d = 0; d < found; d++) {
        const char *t = line[ids[d]], *end = t + line_len[ids[d]], *p;
        for (p = t; p + left_len + 2 <= end; p++) {
            const char *r;
            if ((p > t && isalpha((unsigned char)p[-1])) || memcmp(p, left, (size_t)left_len) || p[left_len] != ' ')
                continue;
            r = p + left_len + 1;
            if (!isalpha((unsigned char)*r)) continue;
            {
                const char *z = r;
                while (z < end && isalpha((unsigned char)*z)) z++;
                return (size_t)(z - r) == strlen(it->word) - 1 && !memcmp(r, it->word + 1, (size_t)(z - r));
            }
        }
    }
    return 0;
}

// NPM with its search restricted to BM25's 10 best documents (NPM's BM25-restricted search):
// a phrase index of those documents' tokens alone (each document encoded apart, its blocks its
// own), then the same fill; got (len) the phrase, -1s when nothing was proposed
static void npm_restricted(retrlm_model *npm, const retrlm_tokenizer *tok, const retrlm_bm25 *bm, const item *it,
                           char *const *line, const size_t *line_len, const char *text_end, int *got) {
    static int ids[1 << 16];
    int64_t docs[10];
    size_t n = 0, k;
    int found = bm25_docs(bm, it, docs), d, i;
    retrlm_npm_index x;
    for (i = 0; i < it->len; i++) got[i] = -1;
    for (d = 0; d < found; d++) {
        // each document with its line end, as the training stream holds it
        const char *t = line[docs[d]];
        const size_t len = line_len[docs[d]] + (t + line_len[docs[d]] < text_end);
        if (retrlm_tokenizer_encode(tok, t, len, 0, ids + n, sizeof ids / sizeof ids[0] - n, &k)) break;
        n += k;
    }
    if (!n) return;
    if (retrlm_npm_index_build(&x, npm, ids, n, SEQ, NULL)) die("npm restricted index");
    if (retrlm_npm_fill(npm, &x, it->ids, it->n, it->start, it->len, MASK, K, 1.0f, got, NULL)) die("npm fill");
    retrlm_npm_index_free(&x);
}

// The probe: can the encoder find a span in an index that holds it? 200 spans (1-3 tokens, at
// least 10 from a block's ends) of blocks of the first n (<= 200,000) training tokens, each
// masked in its block and filled from the phrase index of those n tokens, which holds the
// span's own unmasked tokens. r[0..2] get the share filled exactly and the share whose start
// query ranks the span's own first token first, and in its 32 best; returns n.
static size_t probe(retrlm_model *npm, const int *ids, size_t n, double *r) {
    retrlm_npm_index x;
    retrlm_rng rng;
    float *q = (float *)malloc((size_t)DIM * sizeof(float));
    int k, right = 0, first = 0, in_k = 0, seq[SEQ];
    if (n > 200000) n = 200000;
    if (retrlm_npm_index_build(&x, npm, ids, n, SEQ, NULL)) die("probe index");
    retrlm_rng_seed(&rng, 7);
    for (k = 0; k < 200; k++) {
        const size_t at = (size_t)retrlm_rng_below(&rng, n / SEQ - 1) * SEQ;
        const int s0 = 10 + (int)retrlm_rng_below(&rng, SEQ - 20), l = 1 + (int)retrlm_rng_below(&rng, 3);
        int got[3], j;
        int64_t hit[32];
        memcpy(seq, ids + at, sizeof seq);
        for (j = 0; j < l; j++) seq[s0 + j] = MASK;
        if (retrlm_npm_fill(npm, &x, seq, SEQ, s0, l, MASK, K, 1.0f, got, NULL)) die("probe fill");
        right += !memcmp(got, ids + at + (size_t)s0, (size_t)l * sizeof(int));
        if (retrlm_model_forward(npm, seq, 1, SEQ, NULL, RETRLM_FORWARD_NO_LOGITS)) die("probe forward");
        memcpy(q, npm->hidden + (size_t)s0 * DIM, (size_t)DIM * sizeof(float));
        if (retrlm_index_search(&x.index, q, 1, DIM, 32, NULL, hit, NULL)) die("probe search");
        first += hit[0] == (int64_t)(at + (size_t)s0);
        for (j = 0; j < 32; j++) in_k += hit[j] == (int64_t)(at + (size_t)s0);
    }
    r[0] = right / 200.0, r[1] = first / 200.0, r[2] = in_k / 200.0;
    retrlm_npm_index_free(&x);
    free(q);
    return n;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 3000;
    size_t train_bytes = argc > 2 ? (size_t)atoll(argv[2]) : 4000000;
    int max_items = argc > 3 ? atoi(argv[3]) : 1000;
    const char *out = argc > 4 ? argv[4] : "build/npm-debpkg_lm";
    const char *data = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    char path[1024], cpu[256], **line;
    char *train_text, *test_text;
    size_t train_len, test_len, n_train, nw, *line_len, n_lines = 0, i;
    int64_t *batches = NULL, n_batches = 0;
    const int bm25_batching = getenv("RETRLM_NPM_BATCHES") && !strcmp(getenv("RETRLM_NPM_BATCHES"), "bm25");
    int *train_ids, n_items = 0, right[SYSTEMS][BUCKETS], total[BUCKETS], r, b;
    double secs[2], t0, fill_secs[2], pr[3], *overlap;
    size_t n_probe;
    word *w;
    item *items;
    retrlm_tokenizer tok;
    retrlm_model npm, par;
    retrlm_npm_index x;
    retrlm_bm25 bm;
    bench_machine();
    snprintf(path, sizeof path, "mkdir -p '%s'", out);
    if (system(path)) return 1;
    printf("npm on debpkg_lm: %d steps of %d x %d tokens, %s threads; cpu %s; load %.2f\n", steps, BATCH, SEQ,
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "all", cpu_model(cpu, sizeof cpu), loadavg());
    snprintf(path, sizeof path, "%s/debpkg_lm/train.txt", data);
    if (!(train_text = read_all(path, &train_len))) {
        fprintf(stderr, "npm: cannot read %s\n", path);
        return 1;
    }
    if (train_len > train_bytes) {
        train_len = train_bytes;
        while (train_len > 0 && train_text[train_len - 1] != '\n') train_len--;
    }
    snprintf(path, sizeof path, "%s/debpkg_lm/test.txt", data);
    if (!(test_text = read_all(path, &test_len))) {
        fprintf(stderr, "npm: cannot read %s\n", path);
        return 1;
    }
    // tokenizer
    snprintf(path, sizeof path, "%s/tok.rlm", out);
    if (retrlm_tokenizer_load(&tok, path)) {
        retrlm_tokenizer_train_config tc;
        const char *one[1] = {train_text};
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = VOCAB;
        if (retrlm_tokenizer_train(&tok, &tc, one, &train_len, 1, NULL, NULL) || retrlm_tokenizer_save(&tok, path))
            die("tokenizer");
    }
    if (retrlm_tokenizer_encode_alloc(&tok, train_text, train_len, 0, &train_ids, &n_train)) die("encode");
    fprintf(stderr, "  train: %lu bytes, %lu tokens\n", (unsigned long)train_len, (unsigned long)n_train);
    // the two encoders, the same tokens and draws
    if (bm25_batching) { // TRIME_ext's grouping: each block with its BM25 neighbours
        if (retrlm_trime_bm25_batches(&tok, train_ids, n_train, SEQ, BATCH, NULL, NULL, &n_batches)) die("batches");
        batches = (int64_t *)malloc((size_t)n_batches * BATCH * sizeof(int64_t));
        if (retrlm_trime_bm25_batches(&tok, train_ids, n_train, SEQ, BATCH, NULL, batches, &n_batches)) die("batches");
    }
    snprintf(path, sizeof path, "%s/npm-%d-%lu%s.rlm", out, steps, (unsigned long)train_len,
             bm25_batching ? "-bm25" : "");
    secs[0] = train(&npm, 0, train_ids, n_train, steps, batches, n_batches, path);
    snprintf(path, sizeof path, "%s/parametric-%d-%lu%s.rlm", out, steps, (unsigned long)train_len,
             bm25_batching ? "-bm25" : "");
    secs[1] = train(&par, 1, train_ids, n_train, steps, batches, n_batches, path);
    // the cloze set
    w = words_of(train_text, train_len, &nw);
    items = (item *)malloc((size_t)max_items * sizeof(item));
    {
        const char *p = test_text, *end = test_text + test_len;
        size_t ln = 0;
        snprintf(path, sizeof path, "%s/debpkg_lm/overlap_test.tsv", data);
        if (!(overlap = overlap_of_lines(path, test_len + 1))) {
            fprintf(stderr, "npm: cannot read %s\n", path);
            return 1;
        }
        while (p < end && n_items < max_items) {
            const char *nl = (const char *)memchr(p, '\n', (size_t)(end - p));
            size_t len = (size_t)((nl ? nl : end) - p);
            if (len && make_item(&items[n_items], &tok, w, nw, p, len))
                items[n_items++].bucket = overlap_bucket(overlap[ln]);
            p = nl ? nl + 1 : end;
            ln++;
        }
        free(overlap);
    }
    memset(right, 0, sizeof right), memset(total, 0, sizeof total);
    for (i = 0; i < (size_t)n_items; i++) total[0]++, total[items[i].bucket]++;
    fprintf(stderr, "  cloze: %d items\n", n_items);
    // BM25 over the training documents (lines): a baseline, and NPM's restricted search
    {
        const char *p = train_text, *end = train_text + train_len;
        line = (char **)malloc(sizeof(char *) * (train_len / 8 + 2));
        line_len = (size_t *)malloc(sizeof(size_t) * (train_len / 8 + 2));
        if (retrlm_bm25_init(&bm, NULL)) die("bm25");
        while (p < end) {
            const char *nl = (const char *)memchr(p, '\n', (size_t)(end - p));
            size_t len = (size_t)((nl ? nl : end) - p);
            line[n_lines] = (char *)p, line_len[n_lines] = len;
            if (retrlm_bm25_add(&bm, (int64_t)n_lines, p, len)) die("bm25 add");
            n_lines++;
            p = nl ? nl + 1 : end;
        }
        if (retrlm_bm25_commit(&bm)) die("bm25 commit");
    }
    // NPM: the phrase index of the training tokens, then each span filled
    {
        retrlm_index_config ic;
        memset(&ic, 0, sizeof ic);
        ic.progress = progress;
        if (retrlm_npm_index_build(&x, &npm, train_ids, n_train, SEQ, &ic)) die("npm index");
    }
    t0 = retrlm_time_seconds();
    for (i = 0; i < (size_t)n_items; i++) {
        int got[8];
        if (retrlm_npm_fill(&npm, &x, items[i].ids, items[i].n, items[i].start, items[i].len, MASK, K, 1.0f, got,
                            NULL))
            die("npm fill");
        if (decodes_to(&tok, got, items[i].len, items[i].word)) right[0][0]++, right[0][items[i].bucket]++;
    }
    fill_secs[0] = retrlm_time_seconds() - t0;
    // NPM restricted to BM25's 10 best documents
    t0 = retrlm_time_seconds();
    for (i = 0; i < (size_t)n_items; i++) {
        int got[8];
        npm_restricted(&npm, &tok, &bm, &items[i], line, line_len, train_text + train_len, got);
        if (decodes_to(&tok, got, items[i].len, items[i].word)) right[1][0]++, right[1][items[i].bucket]++;
    }
    fill_secs[1] = retrlm_time_seconds() - t0;
    // parametric: each masked position's most probable token
    for (i = 0; i < (size_t)n_items; i++) {
        int got[8], j, v;
        if (retrlm_model_forward(&par, items[i].ids, 1, items[i].n, NULL, 0)) die("parametric forward");
        for (j = 0; j < items[i].len; j++) {
            const float *l = par.logits + (size_t)(items[i].start + j) * (VOCAB + 1);
            got[j] = 0;
            for (v = 1; v < VOCAB; v++)
                if (l[v] > l[got[j]]) got[j] = v;
        }
        if (decodes_to(&tok, got, items[i].len, items[i].word)) right[2][0]++, right[2][items[i].bucket]++;
    }
    for (i = 0; i < (size_t)n_items; i++)
        if (bm25_right(&bm, &items[i], line, line_len)) right[3][0]++, right[3][items[i].bucket]++;
    printf("\ndebpkg_lm cloze: %d test documents' first word seen 2-20 times in the %lu training tokens, exact match "
           "by the document's overlap with train\n", n_items, (unsigned long)n_train);
    printf("| system | trained on |");
    for (b = 0; b < BUCKETS; b++) printf(" %s (%d items) |", bucket_name[b], total[b]);
    printf("\n|---|---|---:|---:|---:|---:|\n");
    for (r = 0; r < SYSTEMS; r++) {
        static const char *name[SYSTEMS] = {
            "NPM (phrase index of the training tokens, k 32)",
            "NPM restricted to BM25's 10 best training documents (their tokens' phrase index, k 32)",
            "parametric masked LM, same encoder",
            "BM25 (the word after its left neighbour in the best of 10 training documents)"};
        if (r < 3) printf("| %s | %d steps of %d x %d |", name[r], steps, BATCH, SEQ);
        else printf("| %s | |", name[r]);
        for (b = 0; b < BUCKETS; b++) printf(" %.3f |", total[b] ? (double)right[r][b] / total[b] : 0.0);
        printf("\n");
    }
    printf("training wall s (0: reused): NPM %.0f, parametric %.0f; NPM fill %.1f ms an item, restricted %.1f\n",
           secs[0], secs[1], 1000.0 * fill_secs[0] / (n_items ? n_items : 1),
           1000.0 * fill_secs[1] / (n_items ? n_items : 1));
    n_probe = probe(&npm, train_ids, n_train, pr);
    printf("probe (200 spans of the first %lu training tokens, filled from their own phrase index): exactly %.3f, "
           "own start ranked first %.3f, in the 32 best %.3f\n\n", (unsigned long)n_probe, pr[0], pr[1], pr[2]);
    printf("npm.items=%d\n", n_items);
    for (b = 0; b < BUCKETS; b++) printf("npm.items_%s=%d\n", bucket_key[b], total[b]);
    for (r = 0; r < SYSTEMS; r++) {
        static const char *key[SYSTEMS] = {"npm", "npm_bm25", "parametric", "bm25"};
        for (b = 0; b < BUCKETS; b++)
            printf("npm.%s.em%s%s=%.4f\n", key[r], b ? "_" : "", b ? bucket_key[b] : "",
                   total[b] ? (double)right[r][b] / total[b] : 0.0);
    }
    printf("npm.probe.em=%.4f\nnpm.probe.top1=%.4f\nnpm.probe.top32=%.4f\n", pr[0], pr[1], pr[2]);
    retrlm_bm25_free(&bm);
    retrlm_npm_index_free(&x);
    retrlm_model_free(&npm);
    retrlm_model_free(&par);
    retrlm_tokenizer_free(&tok);
    retrlm_free(train_ids);
    free(w), free(items), free(line), free(line_len), free(train_text), free(test_text), free(batches);
    return 0;
}
