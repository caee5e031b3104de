#include "internal.h"

// The layout of the postings is described at the codec below.
#define RETRLM__BM25_LAYOUT 2

typedef struct retrlm__bm25_triple {
    uint32_t term, doc, tf; // pending term index, pending document index, frequency
} retrlm__bm25_triple;

// int64 id -> int value, open addressing; value -1 marks a removed entry
typedef struct retrlm__idmap {
    int64_t       *keys; // (cap)
    int           *vals; // (cap)
    unsigned char *used; // (cap)
    size_t         cap, n_used, n_live;
} retrlm__idmap;

static size_t retrlm__idmap_slot(const retrlm__idmap *m, int64_t key) {
    uint64_t h = (uint64_t)key + 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
    return (size_t)h & (m->cap - 1);
}

static int retrlm__idmap_get(const retrlm__idmap *m, int64_t key) {
    size_t i;
    if (!m->cap) return -1;
    for (i = retrlm__idmap_slot(m, key); m->used[i]; i = (i + 1) & (m->cap - 1))
        if (m->keys[i] == key) return m->vals[i];
    return -1;
}

static void retrlm__idmap_free(retrlm__idmap *m) {
    RETRLM_FREE(m->keys);
    RETRLM_FREE(m->vals);
    RETRLM_FREE(m->used);
    memset(m, 0, sizeof *m);
}

// sets key to val (val -1 removes); 0 when out of memory
static int retrlm__idmap_put(retrlm__idmap *m, int64_t key, int val) {
    size_t i;
    if ((m->n_used + 1) * 2 > m->cap) {
        retrlm__idmap big;
        size_t j;
        memset(&big, 0, sizeof big);
        big.cap = m->cap ? m->cap * 2 : 64;
        big.keys = (int64_t *)retrlm__alloc(big.cap, sizeof(int64_t));
        big.vals = (int *)retrlm__alloc(big.cap, sizeof(int));
        big.used = (unsigned char *)retrlm__calloc(big.cap, 1);
        if (!big.keys || !big.vals || !big.used) {
            retrlm__idmap_free(&big);
            return 0;
        }
        for (j = 0; j < m->cap; j++)
            if (m->used[j] && m->vals[j] >= 0) {
                size_t k = retrlm__idmap_slot(&big, m->keys[j]);
                while (big.used[k]) k = (k + 1) & (big.cap - 1);
                big.used[k] = 1;
                big.keys[k] = m->keys[j];
                big.vals[k] = m->vals[j];
                big.n_used++;
                big.n_live++;
            }
        retrlm__idmap_free(m);
        *m = big;
    }
    for (i = retrlm__idmap_slot(m, key); m->used[i]; i = (i + 1) & (m->cap - 1))
        if (m->keys[i] == key) {
            m->n_live += (val >= 0) - (m->vals[i] >= 0);
            m->vals[i] = val;
            return 1;
        }
    if (val < 0) return 1;
    m->used[i] = 1;
    m->keys[i] = key;
    m->vals[i] = val;
    m->n_used++;
    m->n_live++;
    return 1;
}

struct retrlm__bm25_pending {
    int                 *slot;    // (n_slot, a power of 2) term -> pending term index + 1, 0: empty
    size_t               n_slot;
    char               **tstr;    // stb_ds: pending term index -> the term (owned, stable)
    retrlm__bm25_triple *post;    // stb_ds: postings in document order
    int64_t             *ids;     // stb_ds: pending documents' user ids
    uint32_t            *lens;    // stb_ds: their lengths
    unsigned char       *dead;    // stb_ds: 1 if deleted again before the commit
    retrlm__idmap        live;    // live pending id -> pending index
    retrlm__idmap        del;     // committed ids to delete -> 1
};

static void retrlm__bm25_pending_free(struct retrlm__bm25_pending *p) {
    ptrdiff_t i;
    if (!p) return;
    for (i = 0; i < stbds_arrlen(p->tstr); i++) RETRLM_FREE(p->tstr[i]);
    RETRLM_FREE(p->slot);
    stbds_arrfree(p->tstr);
    stbds_arrfree(p->post);
    stbds_arrfree(p->ids);
    stbds_arrfree(p->lens);
    stbds_arrfree(p->dead);
    retrlm__idmap_free(&p->live);
    retrlm__idmap_free(&p->del);
    RETRLM_FREE(p);
}

static void retrlm__bm25_release(retrlm_bm25 *bm) { // the committed arrays
    if (bm->owned_) {
        RETRLM_FREE((void *)bm->term_text_);
        RETRLM_FREE((void *)bm->term_off_);
        RETRLM_FREE((void *)bm->post_off_);
        RETRLM_FREE((void *)bm->df_);
        RETRLM_FREE((void *)bm->post_);
        RETRLM_FREE((void *)bm->doc_len_);
        RETRLM_FREE((void *)bm->doc_id_);
        RETRLM_FREE((void *)bm->id_order_);
    }
    if (bm->loaded_) retrlm_reader_close(&bm->reader_);
    RETRLM_FREE(bm->heap_len_);
    RETRLM_FREE(bm->heap_off_);
    RETRLM_FREE(bm->heap_df_);
    RETRLM_FREE(bm->heap_toff_);
    bm->heap_len_ = NULL;
    bm->heap_off_ = NULL;
    bm->heap_df_ = NULL;
    bm->heap_toff_ = NULL;
    RETRLM_FREE(bm->norm_);
    bm->term_text_ = NULL;
    bm->term_off_ = NULL;
    bm->post_off_ = NULL;
    bm->df_ = NULL;
    bm->post_ = NULL;
    bm->doc_len_ = NULL;
    bm->doc_id_ = NULL;
    bm->id_order_ = NULL;
    bm->norm_ = NULL;
    bm->owned_ = bm->loaded_ = 0;
    bm->n_docs = bm->n_terms = 0;
    bm->total_len = 0;
    bm->postings_bytes = 0;
    bm->avgdl = 1.0;
}

RETRLM__PRIVATE retrlm_bm25_config retrlm__bm25_passage_config(const retrlm_bm25_config *cfg) {
    retrlm_bm25_config c;
    if (cfg) c = *cfg;
    else memset(&c, 0, sizeof c);
    if (c.k1 == 0) c.k1 = RETRLM_BM25_PASSAGE_K1;
    if (c.b == 0) c.b = RETRLM_BM25_PASSAGE_B;
    return c;
}

RETRLM_API retrlm_result retrlm_bm25_init(retrlm_bm25 *bm, const retrlm_bm25_config *cfg) {
    retrlm_bm25_config def;
    retrlm_result r;
    memset(bm, 0, sizeof *bm);
    if (!cfg) {
        memset(&def, 0, sizeof def);
        cfg = &def;
    }
    bm->k1 = cfg->k1 == 0 ? RETRLM_BM25_K1 : cfg->k1;
    bm->b = cfg->b == 0 ? RETRLM_BM25_B : cfg->b < 0 ? 0.0f : cfg->b;
    bm->avgdl = 1.0;
    if (!(bm->k1 > 0 && bm->k1 < 1e6f) || !(bm->b <= 1))
        return retrlm__fail(RETRLM_ERR_ARG, "bm25: k1 %g must be > 0 and b %g in [0, 1]",
                            (double)cfg->k1, (double)cfg->b);
    r = retrlm_analyzer_init(&bm->analyzer, &cfg->analyzer);
    return r;
}

RETRLM_API void retrlm_bm25_free(retrlm_bm25 *bm) {
    if (!bm) return;
    retrlm__bm25_release(bm);
    retrlm__bm25_pending_free(bm->pending_);
    retrlm_analyzer_free(&bm->analyzer);
    memset(bm, 0, sizeof *bm);
}

// ---------------------------------------------------------------------------------------------
// lookups in the committed index

static int retrlm__bm25_find_term(const retrlm_bm25 *bm, const char *t, size_t len) {
    int lo = 0, hi = bm->n_terms - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        size_t ml = bm->term_off_[mid + 1] - bm->term_off_[mid];
        int c = memcmp(t, bm->term_text_ + bm->term_off_[mid], RETRLM__MIN(len, ml));
        if (c == 0) c = len < ml ? -1 : len > ml ? 1 : 0;
        if (c == 0) return mid;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

// user id of internal document d (no id arrays: ids are 0..n_docs-1 in order)
#define RETRLM__UID(bm, d) ((bm)->doc_id_ ? (bm)->doc_id_[d] : (int64_t)(d))

static int retrlm__bm25_find_doc(const retrlm_bm25 *bm, int64_t id) {
    int lo = 0, hi = bm->n_docs - 1;
    if (!bm->doc_id_) return id >= 0 && id < bm->n_docs ? (int)id : -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int64_t v = bm->doc_id_[bm->id_order_[mid]];
        if (v == id) return (int)bm->id_order_[mid];
        if (v < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

RETRLM_API int retrlm_bm25_term_df(const retrlm_bm25 *bm, const char *term, size_t len) {
    int t = retrlm__bm25_find_term(bm, term, len);
    return t < 0 ? 0 : (int)bm->df_[t];
}

RETRLM_API int retrlm_bm25_doc_length(const retrlm_bm25 *bm, int64_t id, int *len) {
    int d = retrlm__bm25_find_doc(bm, id);
    if (d < 0) return 0;
    if (len) *len = (int)bm->doc_len_[d];
    return 1;
}

// BM25 saturation of one posting (without idf): the same expression everywhere, so that block
// maxima, pruned and exhaustive scores agree to the bit
static float retrlm__bm25_f(uint32_t tf, float norm, float k1p1) {
    float t = (float)tf;
    float num = t * k1p1;
    float den = t + norm;
    return num / den;
}

static double retrlm__bm25_idf(int n_docs, uint32_t df) {
    return log(1.0 + ((double)n_docs - (double)df + 0.5) / ((double)df + 0.5));
}

// norm[d] = k1 (1 - b + b |d| / avgdl)
static retrlm_result retrlm__bm25_norms(retrlm_bm25 *bm) {
    int d;
    RETRLM_FREE(bm->norm_);
    bm->norm_ = (float *)retrlm__alloc((size_t)bm->n_docs, sizeof(float));
    if (!bm->norm_) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25: norms of %d documents", bm->n_docs);
    bm->avgdl = bm->n_docs ? (double)bm->total_len / (double)bm->n_docs : 1.0;
    if (bm->avgdl <= 0) bm->avgdl = 1.0;
    for (d = 0; d < bm->n_docs; d++)
        bm->norm_[d] = (float)((double)bm->k1 *
                               (1.0 - (double)bm->b + (double)bm->b * (double)bm->doc_len_[d] / bm->avgdl));
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// adding documents

// The pending dictionary's slot for term: where it is, or the empty slot where it would go.
static size_t retrlm__bm25_pslot(const struct retrlm__bm25_pending *p, const char *term, size_t len) {
    size_t i = (size_t)retrlm__hash_bytes((const unsigned char *)term, len) & (p->n_slot - 1);
    while (p->slot[i] && strcmp(p->tstr[p->slot[i] - 1], term)) i = (i + 1) & (p->n_slot - 1);
    return i;
}

// Room in the pending dictionary for n more terms (the slots at most half full); 0: no memory,
// the dictionary as it was.
static int retrlm__bm25_pgrow(struct retrlm__bm25_pending *p, size_t n) {
    size_t have = (size_t)stbds_arrlen(p->tstr), cap = p->n_slot ? p->n_slot : 64, i;
    int *old = p->slot, *slot;
    if (!RETRLM__ARR_RESERVE(p->tstr, n)) return 0;
    if (p->n_slot && 2 * (have + n) <= p->n_slot) return 1;
    while (2 * (have + n) > cap) {
        if (cap > SIZE_MAX / 2 / sizeof(int)) return 0;
        cap *= 2;
    }
    if (!(slot = (int *)retrlm__calloc(cap, sizeof(int)))) return 0;
    p->slot = slot, p->n_slot = cap;
    for (i = 0; i < have; i++) p->slot[retrlm__bm25_pslot(p, p->tstr[i], strlen(p->tstr[i]))] = (int)i + 1;
    RETRLM_FREE(old);
    return 1;
}

typedef struct retrlm__bm25_doc_terms { // one analysed document
    char     *text; // stb_ds: terms, each NUL-terminated
    uint32_t *offs; // stb_ds: start of each term occurrence in text
    uint32_t  len;  // terms in the document
    int       sorted; // 0 if sorting ran out of memory
    int       nomem;  // 1 if collecting the terms did
    char    **new_terms; // stb_ds: copies of its terms new to the dictionary, before they go in
} retrlm__bm25_doc_terms;

static int retrlm__bm25_collect(void *user, const char *term, int len, int position) {
    retrlm__bm25_doc_terms *dt = (retrlm__bm25_doc_terms *)user;
    uint32_t at = (uint32_t)stbds_arrlen(dt->text);
    (void)position;
    if (!RETRLM__ARR_RESERVE(dt->offs, 1) || !RETRLM__ARR_RESERVE(dt->text, (size_t)len + 1)) {
        dt->nomem = 1;
        return 1;
    }
    stbds_arrput(dt->offs, at);
    memcpy(stbds_arraddnptr(dt->text, len + 1), term, (size_t)len + 1);
    dt->len++;
    return 0;
}

// Stable merge sort of n indices with a comparator and its context (no globals, thread-safe).
// Returns 0 when the scratch array cannot be had.
typedef int (*retrlm__cmp_ctx)(uint32_t x, uint32_t y, const void *ctx);
static int retrlm__msort_u32(uint32_t *v, size_t n, retrlm__cmp_ctx cmp, const void *ctx) {
    uint32_t *tmp, *src, *dst;
    size_t w, i;
    if (n <= 16) { // insertion sort
        for (i = 1; i < n; i++) {
            uint32_t x = v[i];
            size_t j = i;
            while (j > 0 && cmp(v[j - 1], x, ctx) > 0) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        return 1;
    }
    tmp = (uint32_t *)retrlm__alloc(n, sizeof(uint32_t));
    if (!tmp) return 0;
    src = v;
    dst = tmp;
    for (w = 1; w < n; w *= 2) {
        size_t lo;
        for (lo = 0; lo < n; lo += 2 * w) {
            size_t mid = RETRLM__MIN(lo + w, n), hi = RETRLM__MIN(lo + 2 * w, n), a = lo, b = mid, o = lo;
            while (a < mid && b < hi) dst[o++] = cmp(src[a], src[b], ctx) <= 0 ? src[a++] : src[b++];
            while (a < mid) dst[o++] = src[a++];
            while (b < hi) dst[o++] = src[b++];
        }
        {
            uint32_t *t = src;
            src = dst;
            dst = t;
        }
    }
    if (src != v) memcpy(v, src, n * sizeof(uint32_t));
    RETRLM_FREE(tmp);
    return 1;
}

static int retrlm__cmp_text_off(uint32_t x, uint32_t y, const void *ctx) {
    const char *base = (const char *)ctx;
    return strcmp(base + x, base + y);
}
static int retrlm__cmp_by_id(uint32_t x, uint32_t y, const void *ctx) {
    const int64_t *ids = (const int64_t *)ctx;
    return ids[x] < ids[y] ? -1 : ids[x] > ids[y];
}
static int retrlm__cmp_pterm(uint32_t x, uint32_t y, const void *ctx) {
    const char *const *strs = (const char *const *)ctx;
    return strcmp(strs[x], strs[y]);
}

static retrlm_result retrlm__bm25_pending_get(retrlm_bm25 *bm) {
    if (bm->pending_) return RETRLM_OK;
    bm->pending_ = (struct retrlm__bm25_pending *)retrlm__calloc(1, sizeof(struct retrlm__bm25_pending));
    if (!bm->pending_) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25: update buffer");
    return RETRLM_OK;
}

static int retrlm__bm25_is_live(const retrlm_bm25 *bm, int64_t id) {
    const struct retrlm__bm25_pending *p = bm->pending_;
    if (p && retrlm__idmap_get(&p->live, id) >= 0) return 1;
    if (retrlm__bm25_find_doc(bm, id) < 0) return 0;
    return !(p && retrlm__idmap_get(&p->del, id) >= 0);
}

RETRLM_API retrlm_result retrlm_bm25_add_batch(retrlm_bm25 *bm, int n, const int64_t *ids,
                                               const char *const *texts, const size_t *lens) {
    enum { CHUNK = 2048 };
    retrlm__bm25_doc_terms *dts;
    struct retrlm__bm25_pending *p;
    retrlm_result r;
    int start, i;
    if (n < 0 || (n > 0 && (!ids || !texts)))
        return retrlm__fail(RETRLM_ERR_ARG, "bm25_add_batch: n %d, ids and texts must be given", n);
    { // all checks first, so that a failing batch adds nothing
        retrlm__idmap seen;
        memset(&seen, 0, sizeof seen);
        for (i = 0; i < n; i++) {
            const char *why = NULL;
            if (!texts[i]) why = "text is NULL";
            else if (retrlm__bm25_is_live(bm, ids[i])) why = "id is already in the index";
            else if (n > 1 && retrlm__idmap_get(&seen, ids[i]) >= 0) why = "id given twice";
            else if (n > 1 && !retrlm__idmap_put(&seen, ids[i], i)) {
                retrlm__idmap_free(&seen);
                return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add_batch: id table");
            }
            if (why) {
                retrlm__idmap_free(&seen);
                return retrlm__fail(RETRLM_ERR_ARG, "bm25_add: document %d (id %lld): %s", i, (long long)ids[i], why);
            }
        }
        retrlm__idmap_free(&seen);
    }
    if ((r = retrlm__bm25_pending_get(bm)) != RETRLM_OK) return r;
    p = bm->pending_;
    if ((size_t)stbds_arrlen(p->ids) + (size_t)n > (size_t)INT_MAX - (size_t)bm->n_docs)
        return retrlm__fail(RETRLM_ERR_RANGE, "bm25_add: more than %d documents", INT_MAX);
    dts = (retrlm__bm25_doc_terms *)retrlm__calloc(CHUNK, sizeof *dts);
    if (!dts) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: analysis buffers");
    for (start = 0; start < n; start += CHUNK) {
        int m = RETRLM__MIN(CHUNK, n - start);
        // analysis in parallel: each document by one thread into its own buffers
        RETRLM__PARALLEL_FOR_IF(m > 16)
        for (i = 0; i < m; i++) {
            const char *t = texts[start + i];
            size_t l = lens ? lens[start + i] : strlen(t);
            retrlm__bm25_doc_terms *dt = &dts[i];
            if (dt->text) stbds_header(dt->text)->length = 0;
            if (dt->offs) stbds_header(dt->offs)->length = 0;
            dt->len = 0, dt->nomem = 0;
            retrlm_analyze(&bm->analyzer, t, l, retrlm__bm25_collect, dt);
            dt->sorted = !dt->nomem && retrlm__msort_u32(dt->offs, (size_t)stbds_arrlen(dt->offs), retrlm__cmp_text_off, dt->text);
        }
        // the dictionary in document order; a document goes in whole or not at all: everything
        // it needs is allocated before anything changes
        for (i = 0; i < m; i++) {
            retrlm__bm25_doc_terms *dt = &dts[i];
            int64_t id = ids[start + i];
            uint32_t doc = (uint32_t)stbds_arrlen(p->ids);
            size_t j, nt = (size_t)stbds_arrlen(dt->offs), n_new = 0;
            if (!dt->sorted) {
                r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: the terms of document %lld", (long long)id);
                goto done;
            }
            if (retrlm__idmap_get(&p->live, id) >= 0) { // a duplicate further apart in the batch
                r = retrlm__fail(RETRLM_ERR_ARG, "bm25_add_batch: id %lld given twice", (long long)id);
                goto done;
            }
            if (!retrlm__bm25_pgrow(p, nt) || !RETRLM__ARR_RESERVE(p->post, nt) ||
                !RETRLM__ARR_RESERVE(p->ids, 1) || !RETRLM__ARR_RESERVE(p->lens, 1) ||
                !RETRLM__ARR_RESERVE(p->dead, 1) || !RETRLM__ARR_RESERVE(dt->new_terms, nt)) {
                r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: the dictionary");
                goto done;
            }
            for (j = 0; j < nt; j++) { // copies of the terms not in the dictionary yet
                const char *term = dt->text + dt->offs[j];
                size_t tl = strlen(term);
                if ((j > 0 && !strcmp(dt->text + dt->offs[j - 1], term)) ||
                    p->slot[retrlm__bm25_pslot(p, term, tl)])
                    continue;
                if (!(dt->new_terms[n_new] = (char *)retrlm__alloc(tl + 1, 1))) break;
                memcpy(dt->new_terms[n_new++], term, tl + 1);
            }
            if (j < nt || !retrlm__idmap_put(&p->live, id, (int)doc)) {
                while (n_new) RETRLM_FREE(dt->new_terms[--n_new]);
                r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: the dictionary");
                goto done;
            }
            for (j = 0, n_new = 0; j < nt;) { // nothing below allocates
                const char *term = dt->text + dt->offs[j];
                size_t e = j + 1, slot = retrlm__bm25_pslot(p, term, strlen(term));
                retrlm__bm25_triple tr;
                while (e < nt && !strcmp(dt->text + dt->offs[e], term)) e++;
                if (!p->slot[slot]) {
                    stbds_arrput(p->tstr, dt->new_terms[n_new++]);
                    p->slot[slot] = (int)stbds_arrlen(p->tstr);
                }
                tr.term = (uint32_t)(p->slot[slot] - 1);
                tr.doc = doc;
                tr.tf = (uint32_t)(e - j);
                stbds_arrput(p->post, tr);
                j = e;
            }
            stbds_arrput(p->ids, id);
            stbds_arrput(p->lens, dt->len);
            stbds_arrput(p->dead, 0);
        }
    }
    r = RETRLM_OK;
done:
    for (i = 0; i < CHUNK; i++) {
        stbds_arrfree(dts[i].text);
        stbds_arrfree(dts[i].offs);
        stbds_arrfree(dts[i].new_terms);
    }
    RETRLM_FREE(dts);
    bm->n_pending = (int)p->live.n_live;
    return r;
}

RETRLM_API retrlm_result retrlm_bm25_add(retrlm_bm25 *bm, int64_t id, const char *text, size_t len) {
    return retrlm_bm25_add_batch(bm, 1, &id, &text, &len);
}

RETRLM_API retrlm_result retrlm_bm25_delete(retrlm_bm25 *bm, int64_t id) {
    struct retrlm__bm25_pending *p;
    retrlm_result r;
    int i;
    if ((r = retrlm__bm25_pending_get(bm)) != RETRLM_OK) return r;
    p = bm->pending_;
    i = retrlm__idmap_get(&p->live, id);
    if (i >= 0) {
        p->dead[i] = 1;
        retrlm__idmap_put(&p->live, id, -1);
        bm->n_pending = (int)p->live.n_live;
        return RETRLM_OK;
    }
    if (retrlm__bm25_find_doc(bm, id) < 0 || retrlm__idmap_get(&p->del, id) >= 0)
        return retrlm__fail(RETRLM_ERR_NOT_FOUND, "bm25_delete: no document with id %lld", (long long)id);
    if (!retrlm__idmap_put(&p->del, id, 1)) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_delete: id table");
    bm->n_pending_deletes = (int)p->del.n_live;
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// commit: merge the committed index, deletions and pending documents into a new index


// ---------------------------------------------------------------------------------------------
// postings codec: Rice codes in blocks
//
// A term's postings are blocks of RETRLM_BM25_BLOCK postings (the last block may be shorter).
// Block: varint (last doc - previous block's last doc - 1, the first block counting from -1),
// u8 bound (q: the block's best f is <= q * (k1 + 1) / 255, q = 255 meaning k1 + 1), u8 Rice
// parameters (gaps: k in the low 5 bits; tf - 1: the high 3 bits index retrlm__tk_map), varint payload bytes (absent in a term's
// last block, whose payload runs to the end of the term), payload. Payload, a bit stream LSB
// first: the gaps (doc - previous doc - 1) of all postings but the last (its doc is the block's
// last doc), then tf - 1 of every posting; a Rice code is q zero bits, a one, then k low bits.

typedef struct retrlm__bitw { // bit writer into a byte buffer
    unsigned char *p;         // next byte
    uint64_t       buf;
    int            n;
} retrlm__bitw;

static void retrlm__bitw_put(retrlm__bitw *w, uint32_t v, int nbits) { // nbits <= 32
    w->buf |= (uint64_t)v << w->n;
    w->n += nbits;
    while (w->n >= 8) {
        *w->p++ = (unsigned char)w->buf;
        w->buf >>= 8;
        w->n -= 8;
    }
}

static void retrlm__bitw_rice(retrlm__bitw *w, uint32_t v, int k) {
    uint32_t q = v >> k;
    while (q >= 32) {
        retrlm__bitw_put(w, 0, 32);
        q -= 32;
    }
    retrlm__bitw_put(w, 1u << q, (int)q + 1);
    if (k) retrlm__bitw_put(w, v & ((1u << k) - 1), k);
}

// Rice parameter of tf - 1 by its 3-bit code: small k for the usual small counts, 31 so that
// no count, however large, costs more than 33 bits
static const int retrlm__tk_map[8] = {0, 1, 2, 3, 4, 5, 8, 31};

// the index in ks[0..nk) of the k that codes v[0..n) in the fewest bits
static int retrlm__rice_k(const uint32_t *v, int n, const int *ks, int nk) {
    uint64_t best = UINT64_MAX;
    int j, bj = 0, i;
    for (j = 0; j < nk; j++) {
        int k = ks[j];
        uint64_t bits = (uint64_t)n * (uint64_t)(k + 1);
        for (i = 0; i < n; i++) bits += v[i] >> k;
        if (bits < best) {
            best = bits;
            bj = j;
        }
    }
    return bj;
}

typedef struct retrlm__bitr { // bit reader; never reads past end, counts what it consumed
    const unsigned char *p, *end;
    uint64_t buf;
    int      n;
    size_t   used;  // bits consumed
    size_t   limit; // bits available
    int      bad;   // a code ran past the payload or overflowed 32 bits
} retrlm__bitr;

static void retrlm__bitr_fill(retrlm__bitr *r) {
    if (r->n > 56) return;
    if (r->end - r->p >= 8) { // 8 bytes at once, keeping the whole bytes that fit (n < 64)
        int take = (63 - r->n) >> 3;
        r->buf |= retrlm__get_u64(r->p) << r->n;
        r->p += take;
        r->n += take * 8;
        r->buf &= (1ull << r->n) - 1; // bits of the next byte come back with the next fill
        return;
    }
    while (r->n <= 56) {
        uint64_t byte = r->p < r->end ? *r->p++ : 0;
        r->buf |= byte << r->n;
        r->n += 8;
    }
}

static int retrlm__ctz64(uint64_t x) { // x != 0
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

static void retrlm__bitr_skip(retrlm__bitr *r, int nbits) { // nbits <= r->n
    r->buf = nbits >= 64 ? 0 : r->buf >> nbits;
    r->n -= nbits;
    r->used += (size_t)nbits;
}

static uint32_t retrlm__bitr_rice(retrlm__bitr *r, int k) {
    uint64_t q = 0, v;
    int tz;
    retrlm__bitr_fill(r);
    if (r->buf) { // the usual case: quotient and remainder are both in the buffer
        tz = retrlm__ctz64(r->buf);
        if (tz + 1 + k <= r->n) {
            v = ((uint64_t)tz << k) | ((r->buf >> tz >> 1) & ((1ull << k) - 1));
            retrlm__bitr_skip(r, tz + 1 + k);
            if (r->used > r->limit || v > 0xFFFFFFFFull) r->bad = 1;
            return (uint32_t)v;
        }
    }
    for (;;) {
        retrlm__bitr_fill(r);
        if (r->buf) break;
        q += (uint64_t)r->n;
        retrlm__bitr_skip(r, r->n);
        if (r->used > r->limit) {
            r->bad = 1;
            return 0;
        }
    }
    tz = retrlm__ctz64(r->buf);
    q += (uint64_t)tz;
    retrlm__bitr_skip(r, tz + 1);
    v = q << k;
    if (k) {
        retrlm__bitr_fill(r);
        v |= r->buf & ((1ull << k) - 1);
        retrlm__bitr_skip(r, k);
    }
    if (q > (0xFFFFFFFFull >> k) || r->used > r->limit) r->bad = 1;
    return (uint32_t)v;
}

// reads a varint (LEB128, at most 10 bytes) at *p before end; 0 if truncated or too long
static int retrlm__varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    uint64_t x = 0;
    int shift = 0;
    while (*p < end && shift < 64) {
        unsigned char b = *(*p)++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
        shift += 7;
    }
    return 0;
}

static unsigned char *retrlm__put_varint(unsigned char *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

// the bound a quantized byte stands for: never below the f values it was made from
static float retrlm__bm25_bound(int q, float k1p1) {
    return q >= 255 ? k1p1 : (float)q * (k1p1 / 255.0f);
}

typedef struct retrlm__blk { // a parsed block header
    uint32_t last;           // last doc of the block
    float    bound;          // upper bound of f in the block
    int      gk, tk;         // Rice parameters of gaps and tf - 1
    const unsigned char *pay, *next; // payload, and where it ends (the next block)
} retrlm__blk;

// parses the header at q; the term's data ends at end; prev is the previous block's last doc
// (-1 for the first); last_block: no length field. 0 if malformed (only file data can be).
static int retrlm__blk_parse(const unsigned char *q, const unsigned char *end, int64_t prev,
                             int last_block, float k1p1, retrlm__blk *b) {
    uint64_t delta, len;
    if (!retrlm__varint(&q, end, &delta) || delta > 0xFFFFFFFFull || end - q < 2) return 0;
    if (prev + 1 + (int64_t)delta > (int64_t)0xFFFFFFFEu) return 0;
    b->last = (uint32_t)(prev + 1 + (int64_t)delta);
    b->bound = retrlm__bm25_bound(q[0], k1p1);
    b->gk = q[1] & 31;
    b->tk = retrlm__tk_map[q[1] >> 5];
    q += 2;
    if (last_block) len = (uint64_t)(end - q);
    else if (!retrlm__varint(&q, end, &len) || len > (uint64_t)(end - q)) return 0;
    b->pay = q;
    b->next = q + len;
    return 1;
}

// decodes the m postings of a block; 0 if the payload does not hold exactly them in order
static int retrlm__blk_decode(const retrlm__blk *b, int m, int64_t prev, uint32_t *docs, uint32_t *tfs) {
    retrlm__bitr r;
    int64_t d = prev;
    int i;
    r.p = b->pay;
    r.end = b->next;
    r.buf = 0;
    r.n = 0;
    r.used = 0;
    r.limit = (size_t)(b->next - b->pay) * 8;
    r.bad = 0;
    for (i = 0; i < m - 1; i++) {
        d += 1 + (int64_t)retrlm__bitr_rice(&r, b->gk);
        docs[i] = (uint32_t)d;
        if (d >= (int64_t)b->last) r.bad = 1;
    }
    docs[m - 1] = b->last;
    for (i = 0; i < m; i++) tfs[i] = retrlm__bitr_rice(&r, b->tk) + 1;
    for (i = 0; i < m; i++)
        if (tfs[i] == 0) r.bad = 1; // tf - 1 was 0xFFFFFFFF
    return !r.bad && (r.used + 7) / 8 == r.limit / 8;
}

// appends the blocks of one term's postings docs[0..n), tfs[0..n)
static int retrlm__bm25_encode(retrlm__buf *out, const uint32_t *docs, const uint32_t *tfs, int n,
                               const float *norm, float k1p1) {
    uint32_t gaps[RETRLM_BM25_BLOCK], tf1[RETRLM_BM25_BLOCK];
    unsigned char pay[RETRLM_BM25_BLOCK * 16 + 64];
    int64_t prev = -1;
    int s;
    if (!retrlm__buf_reserve(out, 10)) return 0;
    out->n = (size_t)(retrlm__put_varint(out->p + out->n, (uint64_t)n) - out->p); // df
    for (s = 0; s < n; s += RETRLM_BM25_BLOCK) {
        int m = RETRLM__MIN(RETRLM_BM25_BLOCK, n - s), i, gk, tk, q;
        int64_t p = prev;
        float best = 0;
        retrlm__bitw w;
        size_t plen;
        unsigned char *h;
        for (i = 0; i < m; i++) {
            float f = retrlm__bm25_f(tfs[s + i], norm[docs[s + i]], k1p1);
            gaps[i] = (uint32_t)((int64_t)docs[s + i] - p - 1);
            p = docs[s + i];
            tf1[i] = tfs[s + i] - 1;
            if (f > best) best = f;
        }
        {
            static const int gks[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
            gk = retrlm__rice_k(gaps, m - 1, gks, 32);
            tk = retrlm__rice_k(tf1, m, retrlm__tk_map, 8);
        }
        w.p = pay;
        w.buf = 0;
        w.n = 0;
        for (i = 0; i < m - 1; i++) retrlm__bitw_rice(&w, gaps[i], gk);
        for (i = 0; i < m; i++) retrlm__bitw_rice(&w, tf1[i], retrlm__tk_map[tk]);
        if (w.n) retrlm__bitw_put(&w, 0, 8 - w.n);
        plen = (size_t)(w.p - pay);
        q = (int)(best / (k1p1 / 255.0f));
        while (q < 255 && retrlm__bm25_bound(q, k1p1) < best) q++;
        if (!retrlm__buf_reserve(out, 24 + plen)) return 0;
        h = retrlm__put_varint(out->p + out->n, (uint64_t)((int64_t)docs[s + m - 1] - prev - 1));
        *h++ = (unsigned char)q;
        *h++ = (unsigned char)(gk | (tk << 5));
        if (s + m < n) h = retrlm__put_varint(h, plen);
        memcpy(h, pay, plen);
        out->n = (size_t)(h + plen - out->p);
        prev = docs[s + m - 1];
    }
    return 1;
}

// the first block of term t (after its df varint, checked at load)
static const unsigned char *retrlm__term_blocks(const retrlm_bm25 *bm, int t) {
    const unsigned char *q = bm->post_ + bm->post_off_[t];
    while (*q & 0x80) q++;
    return q + 1;
}

// decodes all blocks of committed term t, appending (remapped) postings; returns the new count
static int retrlm__bm25_decode_term(const retrlm_bm25 *bm, int t, const uint32_t *remap,
                                    uint32_t *docs, uint32_t *tfs, int n) {
    const unsigned char *q = retrlm__term_blocks(bm, t), *end = bm->post_ + bm->post_off_[t + 1];
    int left = (int)bm->df_[t];
    uint32_t d[RETRLM_BM25_BLOCK], f[RETRLM_BM25_BLOCK];
    int64_t prev = -1;
    float k1p1 = bm->k1 + 1.0f;
    while (left > 0) {
        int m = RETRLM__MIN(RETRLM_BM25_BLOCK, left), i;
        retrlm__blk b;
        retrlm__blk_parse(q, end, prev, left <= RETRLM_BM25_BLOCK, k1p1, &b); // checked at load
        retrlm__blk_decode(&b, m, prev, d, f);
        for (i = 0; i < m; i++) {
            uint32_t x = d[i];
            if (remap) {
                if (remap[x] == 0xFFFFFFFFu) continue;
                x = remap[x];
            }
            docs[n] = x;
            tfs[n++] = f[i];
        }
        prev = b.last;
        q = b.next;
        left -= m;
    }
    return n;
}

// The pending postings grouped by term, in document order within a term (a counting sort):
// term t's are pdoc/ptf[pstart[t], pstart[t + 1]); porder (n_pt) gets the terms in text order.
// 0 when memory runs out.
static int retrlm__bm25_group_pending(const struct retrlm__bm25_pending *p, size_t n_pt, uint32_t *pstart,
                                      uint32_t *porder, uint32_t *pdoc, uint32_t *ptf) {
    const size_t n_post = (size_t)stbds_arrlen(p->post);
    uint32_t *fill = (uint32_t *)retrlm__alloc(n_pt, sizeof(uint32_t));
    size_t i;
    if (!fill) return 0;
    memset(pstart, 0, (n_pt + 1) * sizeof(uint32_t));
    for (i = 0; i < n_post; i++) pstart[p->post[i].term + 1]++;
    for (i = 0; i < n_pt; i++) {
        pstart[i + 1] += pstart[i];
        porder[i] = (uint32_t)i;
    }
    memcpy(fill, pstart, n_pt * sizeof(uint32_t));
    for (i = 0; i < n_post; i++) {
        uint32_t at = fill[p->post[i].term]++;
        pdoc[at] = p->post[i].doc;
        ptf[at] = p->post[i].tf;
    }
    RETRLM_FREE(fill);
    return retrlm__msort_u32(porder, n_pt, retrlm__cmp_pterm, p->tstr);
}

// Byte order of two terms (ta NULL: after every term; tb NULL likewise), as memcmp then length
static int retrlm__bm25_term_cmp(const char *ta, size_t la, const char *tb, size_t lb) {
    int c;
    if (!ta) return 1;
    if (!tb) return -1;
    c = memcmp(ta, tb, RETRLM__MIN(la, lb));
    return c ? c : la < lb ? -1 : la > lb ? 1 : 0;
}

RETRLM_API retrlm_result retrlm_bm25_commit(retrlm_bm25 *bm) {
    struct retrlm__bm25_pending *p = bm->pending_;
    retrlm_bm25 nb; // the new committed index, fields filled below
    uint32_t *remap = NULL, *pmap = NULL, *pstart = NULL, *pdoc = NULL, *ptf = NULL, *porder = NULL;
    uint32_t *docs = NULL, *tfs = NULL, *doc_len = NULL, *id_order = NULL, *term_off = NULL, *df = NULL;
    uint64_t *post_off = NULL;
    int64_t *doc_id = NULL;
    retrlm__buf post = {NULL, 0, 0}, text = {NULL, 0, 0};
    size_t n_pp, n_pt, i, cap_terms;
    int n_new, d, a, b, nt;
    float k1p1 = bm->k1 + 1.0f;
    retrlm_result r = RETRLM_ERR_NOMEM;
    if (!p) return RETRLM_OK;
    memset(&nb, 0, sizeof nb);
    n_pp = (size_t)stbds_arrlen(p->ids);
    n_pt = (size_t)stbds_arrlen(p->tstr);
    // new numbering: live committed documents in order, then live pending ones
    remap = (uint32_t *)retrlm__alloc((size_t)bm->n_docs, sizeof(uint32_t));
    pmap = (uint32_t *)retrlm__alloc(n_pp, sizeof(uint32_t));
    if (!remap || !pmap) goto done;
    n_new = 0;
    for (d = 0; d < bm->n_docs; d++)
        remap[d] = retrlm__idmap_get(&p->del, RETRLM__UID(bm, d)) >= 0 ? 0xFFFFFFFFu : (uint32_t)n_new++;
    for (i = 0; i < n_pp; i++) pmap[i] = p->dead[i] ? 0xFFFFFFFFu : (uint32_t)n_new++;
    nb.k1 = bm->k1;
    nb.b = bm->b;
    nb.n_docs = n_new;
    doc_len = (uint32_t *)retrlm__alloc((size_t)n_new, sizeof(uint32_t));
    doc_id = (int64_t *)retrlm__alloc((size_t)n_new, sizeof(int64_t));
    id_order = (uint32_t *)retrlm__alloc((size_t)n_new, sizeof(uint32_t));
    docs = (uint32_t *)retrlm__alloc((size_t)n_new + 1, sizeof(uint32_t));
    tfs = (uint32_t *)retrlm__alloc((size_t)n_new + 1, sizeof(uint32_t));
    if (!doc_len || !doc_id || !id_order || !docs || !tfs) goto done;
    for (d = 0; d < bm->n_docs; d++)
        if (remap[d] != 0xFFFFFFFFu) {
            doc_len[remap[d]] = bm->doc_len_[d];
            doc_id[remap[d]] = RETRLM__UID(bm, d);
        }
    for (i = 0; i < n_pp; i++)
        if (pmap[i] != 0xFFFFFFFFu) {
            doc_len[pmap[i]] = p->lens[i];
            doc_id[pmap[i]] = p->ids[i];
        }
    for (d = 0; d < n_new; d++) {
        id_order[d] = (uint32_t)d;
        nb.total_len += doc_len[d];
    }
    if (!retrlm__msort_u32(id_order, (size_t)n_new, retrlm__cmp_by_id, doc_id)) goto done;
    nb.doc_len_ = doc_len;
    if (retrlm__bm25_norms(&nb) != RETRLM_OK) goto done;
    // pending postings grouped by term, terms sorted
    pstart = (uint32_t *)retrlm__alloc(n_pt + 1, sizeof(uint32_t));
    porder = (uint32_t *)retrlm__alloc(n_pt, sizeof(uint32_t));
    pdoc = (uint32_t *)retrlm__alloc((size_t)stbds_arrlen(p->post), sizeof(uint32_t));
    ptf = (uint32_t *)retrlm__alloc((size_t)stbds_arrlen(p->post), sizeof(uint32_t));
    if (!pstart || !porder || !pdoc || !ptf || !retrlm__bm25_group_pending(p, n_pt, pstart, porder, pdoc, ptf)) goto done;
    // merge the two sorted dictionaries
    cap_terms = (size_t)bm->n_terms + n_pt + 1;
    term_off = (uint32_t *)retrlm__alloc(cap_terms, sizeof(uint32_t));
    post_off = (uint64_t *)retrlm__alloc(cap_terms, sizeof(uint64_t));
    df = (uint32_t *)retrlm__alloc(cap_terms, sizeof(uint32_t));
    if (!term_off || !post_off || !df) goto done;
    for (nt = 0, a = 0, b = 0; a < bm->n_terms || b < (int)n_pt;) {
        const char *ta = a < bm->n_terms ? bm->term_text_ + bm->term_off_[a] : NULL;
        const char *tb = b < (int)n_pt ? p->tstr[porder[b]] : NULL;
        size_t la = ta ? bm->term_off_[a + 1] - bm->term_off_[a] : 0, lb = tb ? strlen(tb) : 0;
        int c = retrlm__bm25_term_cmp(ta, la, tb, lb), n = 0;
        if (c <= 0) n = retrlm__bm25_decode_term(bm, a, p->del.n_live ? remap : NULL, docs, tfs, n);
        if (c >= 0) {
            uint32_t pt = porder[b], j;
            for (j = pstart[pt]; j < pstart[pt + 1]; j++)
                if (pmap[pdoc[j]] != 0xFFFFFFFFu) {
                    docs[n] = pmap[pdoc[j]];
                    tfs[n++] = ptf[j];
                }
        }
        if (n > 0) {
            const char *t = c <= 0 ? ta : tb;
            size_t l = c <= 0 ? la : lb;
            if (text.n + l > 0xFFFFFFFFu) {
                r = retrlm__fail(RETRLM_ERR_RANGE, "bm25_commit: term dictionary over 4 GiB");
                goto done;
            }
            if (!retrlm__buf_reserve(&text, l)) goto done;
            term_off[nt] = (uint32_t)text.n;
            memcpy(text.p + text.n, t, l);
            text.n += l;
            post_off[nt] = post.n;
            df[nt] = (uint32_t)n;
            if (!retrlm__bm25_encode(&post, docs, tfs, n, nb.norm_, k1p1)) goto done;
            nt++;
        }
        if (c <= 0) a++;
        if (c >= 0) b++;
    }
    term_off[nt] = (uint32_t)text.n;
    post_off[nt] = post.n;
    if (!retrlm__buf_reserve(&text, 1) || !retrlm__buf_reserve(&post, 1)) goto done;
    // install; ids 0..n-1 in order need no id arrays
    for (d = 0; d < n_new && doc_id[d] == d; d++) {}
    if (d == n_new) {
        RETRLM_FREE(doc_id);
        RETRLM_FREE(id_order);
    }
    retrlm__bm25_release(bm);
    bm->n_docs = n_new;
    bm->n_terms = nt;
    bm->total_len = nb.total_len;
    bm->avgdl = nb.avgdl;
    bm->norm_ = nb.norm_;
    bm->postings_bytes = post.n;
    bm->term_text_ = (const char *)text.p;
    bm->term_off_ = term_off;
    bm->post_off_ = post_off;
    bm->df_ = df;
    bm->post_ = post.p;
    bm->doc_len_ = doc_len;
    bm->doc_id_ = d == n_new ? NULL : doc_id;
    bm->id_order_ = d == n_new ? NULL : id_order;
    bm->owned_ = 1;
    retrlm__bm25_pending_free(p);
    bm->pending_ = NULL;
    bm->n_pending = bm->n_pending_deletes = 0;
    // the index owns these now
    nb.norm_ = NULL, text.p = post.p = NULL, doc_len = id_order = term_off = df = NULL, doc_id = NULL, post_off = NULL;
    r = RETRLM_OK;
done:
    RETRLM_FREE(nb.norm_);
    RETRLM_FREE(remap);
    RETRLM_FREE(pmap);
    RETRLM_FREE(pstart);
    RETRLM_FREE(porder);
    RETRLM_FREE(pdoc);
    RETRLM_FREE(ptf);
    RETRLM_FREE(docs);
    RETRLM_FREE(tfs);
    RETRLM_FREE(doc_len);
    RETRLM_FREE(doc_id);
    RETRLM_FREE(id_order);
    RETRLM_FREE(term_off);
    RETRLM_FREE(post_off);
    RETRLM_FREE(df);
    RETRLM_FREE(post.p);
    RETRLM_FREE(text.p);
    if (r == RETRLM_ERR_NOMEM) return retrlm__fail(r, "bm25_commit: out of memory merging %d documents", bm->n_docs);
    return r;
}

// ---------------------------------------------------------------------------------------------
// search

typedef struct retrlm__bm25_cursor {
    retrlm__blk b;             // the current block
    const unsigned char *end;  // end of the term's postings
    int      left;             // postings in the current block and those after it
    int      n;                // postings in the current block
    int64_t  prev;             // last doc of the block before (-1 for none)
    float    maxf;             // bound of f in the current block
    float    k1p1;
    int      decoded;          // docs/tfs hold the current block
    int      pos;              // next posting of the decoded block
    int      done;             // no blocks left
    float    w;                // qtf * idf
    int      qi;               // index of the term in query order
    uint32_t last;             // b.last
    uint32_t docs[RETRLM_BM25_BLOCK], tfs[RETRLM_BM25_BLOCK];
} retrlm__bm25_cursor;

static void retrlm__cur_start(retrlm__bm25_cursor *c, const retrlm_bm25 *bm, int t) {
    c->end = bm->post_ + bm->post_off_[t + 1];
    c->k1p1 = bm->k1 + 1.0f;
    c->left = (int)bm->df_[t];
    c->n = RETRLM__MIN(c->left, RETRLM_BM25_BLOCK);
    c->prev = -1;
    retrlm__blk_parse(retrlm__term_blocks(bm, t), c->end, -1, c->left <= RETRLM_BM25_BLOCK, c->k1p1, &c->b);
    c->last = c->b.last;
    c->maxf = c->b.bound;
    c->decoded = 0;
    c->pos = 0;
    c->done = 0;
}

static void retrlm__cur_next_block(retrlm__bm25_cursor *c) {
    c->left -= c->n;
    if (c->left <= 0) {
        c->done = 1;
        return;
    }
    c->prev = c->b.last;
    c->n = RETRLM__MIN(c->left, RETRLM_BM25_BLOCK);
    retrlm__blk_parse(c->b.next, c->end, c->prev, c->left <= RETRLM_BM25_BLOCK, c->k1p1, &c->b);
    c->last = c->b.last;
    c->maxf = c->b.bound;
    c->decoded = 0;
    c->pos = 0;
}

// moves to the first block whose last doc is >= target (no decoding)
static void retrlm__cur_shallow(retrlm__bm25_cursor *c, uint32_t target) {
    while (!c->done && c->last < target) retrlm__cur_next_block(c);
}

static void retrlm__cur_decode(retrlm__bm25_cursor *c) {
    retrlm__blk_decode(&c->b, c->n, c->prev, c->docs, c->tfs); // checked at load
    c->decoded = 1;
    c->pos = 0;
}

// within the current block (last >= target): first posting >= target, or UINT32_MAX
static uint32_t retrlm__cur_seek(retrlm__bm25_cursor *c, uint32_t target) {
    if (!c->decoded) retrlm__cur_decode(c);
    while (c->pos < c->n && c->docs[c->pos] < target) c->pos++;
    return c->pos < c->n ? c->docs[c->pos] : 0xFFFFFFFFu;
}

typedef struct retrlm__bm25_qterm {
    int t, qtf;
} retrlm__bm25_qterm;

typedef struct retrlm__bm25_qcollect {
    const retrlm_bm25 *bm;
    retrlm__bm25_qterm *terms; // stb_ds
    int nomem;                 // 1 if growing terms failed
} retrlm__bm25_qcollect;

static int retrlm__bm25_qterm_cb(void *user, const char *term, int len, int position) {
    retrlm__bm25_qcollect *qc = (retrlm__bm25_qcollect *)user;
    int t = retrlm__bm25_find_term(qc->bm, term, (size_t)len), i;
    (void)position;
    if (t < 0) return 0;
    if (!RETRLM__ARR_RESERVE(qc->terms, 1)) {
        qc->nomem = 1;
        return 1;
    }
    for (i = 0; i < (int)stbds_arrlen(qc->terms); i++)
        if (qc->terms[i].t == t) {
            qc->terms[i].qtf++;
            return 0;
        }
    {
        retrlm__bm25_qterm q;
        q.t = t;
        q.qtf = 1;
        stbds_arrput(qc->terms, q);
    }
    return 0;
}

static int retrlm__cmp_qterm(const void *a, const void *b) {
    int x = ((const retrlm__bm25_qterm *)a)->t, y = ((const retrlm__bm25_qterm *)b)->t;
    return x < y ? -1 : x > y;
}

static retrlm_result retrlm__bm25_exhaustive(const retrlm_bm25 *bm, const retrlm__bm25_qterm *qt,
                                            int nq, const float *w, retrlm_topk *h) {
    float *acc = (float *)retrlm__calloc((size_t)bm->n_docs, sizeof(float));
    unsigned char *hit = (unsigned char *)retrlm__calloc((size_t)bm->n_docs, 1);
    float k1p1 = bm->k1 + 1.0f;
    int i, d;
    if (!acc || !hit) {
        RETRLM_FREE(acc);
        RETRLM_FREE(hit);
        return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_search: exhaustive accumulators");
    }
    for (i = 0; i < nq; i++) { // term at a time, in query order: the same sum order as below
        retrlm__bm25_cursor c;
        retrlm__cur_start(&c, bm, qt[i].t);
        while (!c.done) {
            int j;
            retrlm__cur_decode(&c);
            for (j = 0; j < c.n; j++) {
                uint32_t dd = c.docs[j];
                float s = w[i] * retrlm__bm25_f(c.tfs[j], bm->norm_[dd], k1p1);
                acc[dd] += s;
                hit[dd] = 1;
            }
            retrlm__cur_next_block(&c);
        }
    }
    for (d = 0; d < bm->n_docs; d++)
        if (hit[d]) retrlm_topk_push(h, RETRLM__UID(bm, d), acc[d]);
    RETRLM_FREE(acc);
    RETRLM_FREE(hit);
    return RETRLM_OK;
}

// Block-max MaxScore over windows. A window [lo, hi] ends at the smallest last doc among the
// terms' current blocks, so inside it every term has one block and one bound w * maxf. Windows
// whose bounds cannot beat the k-th score are skipped without decoding; inside a window, terms
// whose bounds together cannot beat it are non-essential: only probed for candidates of the
// others, and only while the bound of what is left can still win.
static retrlm_result retrlm__bm25_pruned(const retrlm_bm25 *bm, const retrlm__bm25_qterm *qt,
                                        int nq, const float *w, retrlm_topk *h) {
    retrlm__bm25_cursor *cur, **ord;
    float *contrib, k1p1 = bm->k1 + 1.0f;
    double *wm, *cum;
    unsigned char *has;
    double slack = 1.0 + 1e-6 * (double)(nq + 2); // covers float rounding of the sums
    uint32_t lo = 0;
    int i;
    cur = (retrlm__bm25_cursor *)retrlm__alloc((size_t)nq, sizeof *cur);
    ord = (retrlm__bm25_cursor **)retrlm__alloc((size_t)nq, sizeof *ord);
    contrib = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    wm = (double *)retrlm__alloc((size_t)nq, sizeof(double));
    cum = (double *)retrlm__alloc((size_t)nq + 1, sizeof(double));
    has = (unsigned char *)retrlm__alloc((size_t)nq, 1);
    if (!cur || !ord || !contrib || !wm || !cum || !has) {
        RETRLM_FREE(cur);
        RETRLM_FREE(ord);
        RETRLM_FREE(contrib);
        RETRLM_FREE(wm);
        RETRLM_FREE(cum);
        RETRLM_FREE(has);
        return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_search: %d query terms", nq);
    }
    for (i = 0; i < nq; i++) {
        retrlm__cur_start(&cur[i], bm, qt[i].t);
        cur[i].w = w[i];
        cur[i].qi = i;
    }
    for (;;) {
        uint32_t hi = 0xFFFFFFFFu;
        int na = 0, ne; // active terms; ord[0..ne) non-essential
        double theta, total;
        for (i = 0; i < nq; i++) {
            retrlm__bm25_cursor *c = &cur[i];
            if (c->done) continue;
            retrlm__cur_shallow(c, lo);
            if (c->done) continue;
            if (c->last < hi) hi = c->last;
            ord[na++] = c;
        }
        if (na == 0) break;
        // sort active terms by window bound, ascending (insertion sort: queries are short)
        for (i = 0; i < na; i++) {
            retrlm__bm25_cursor *c = ord[i];
            double v = (double)(c->w * c->maxf);
            int j = i;
            while (j > 0 && wm[j - 1] > v) {
                wm[j] = wm[j - 1];
                ord[j] = ord[j - 1];
                j--;
            }
            wm[j] = v;
            ord[j] = c;
        }
        cum[0] = 0;
        for (i = 0; i < na; i++) cum[i + 1] = cum[i] + wm[i];
        total = cum[na];
        theta = h->n == h->k ? (double)h->scores[0] : -1.0;
        if (total * slack < theta) goto next_window;
        ne = 0;
        while (ne < na && cum[ne + 1] * slack < theta) ne++;
        for (;;) {
            uint32_t d = 0xFFFFFFFFu;
            double part = 0;
            float s;
            int complete = 1, j;
            for (i = ne; i < na; i++) { // the next candidate among essential terms
                uint32_t x = retrlm__cur_seek(ord[i], lo);
                if (x < d) d = x;
            }
            if (d > hi) break;
            memset(has, 0, (size_t)nq);
            for (i = ne; i < na; i++) {
                retrlm__bm25_cursor *c = ord[i];
                if (c->pos < c->n && c->docs[c->pos] == d) {
                    float v = c->w * retrlm__bm25_f(c->tfs[c->pos], bm->norm_[d], k1p1);
                    contrib[c->qi] = v;
                    has[c->qi] = 1;
                    part += (double)v;
                    c->pos++;
                }
            }
            for (j = ne - 1; j >= 0; j--) { // non-essential, best bound first
                retrlm__bm25_cursor *c = ord[j];
                if ((part + cum[j + 1]) * slack < theta) {
                    complete = 0;
                    break;
                }
                if (retrlm__cur_seek(c, d) == d) {
                    float v = c->w * retrlm__bm25_f(c->tfs[c->pos], bm->norm_[d], k1p1);
                    contrib[c->qi] = v;
                    has[c->qi] = 1;
                    part += (double)v;
                }
            }
            lo = d + 1;
            if (!complete) continue;
            s = 0.0f;
            for (i = 0; i < nq; i++) // query order, as the exhaustive sum
                if (has[i]) s += contrib[i];
            retrlm_topk_push(h, RETRLM__UID(bm, d), s);
            if (h->n == h->k && (double)h->scores[0] > theta) {
                theta = (double)h->scores[0];
                if (total * slack < theta) break;
                while (ne < na && cum[ne + 1] * slack < theta) ne++;
            }
            if (d == hi) break;
        }
    next_window:
        if (hi == 0xFFFFFFFFu || hi + 1 >= (uint32_t)bm->n_docs) break;
        lo = hi + 1;
    }
    RETRLM_FREE(cur);
    RETRLM_FREE(ord);
    RETRLM_FREE(contrib);
    RETRLM_FREE(wm);
    RETRLM_FREE(cum);
    RETRLM_FREE(has);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_bm25_search(const retrlm_bm25 *bm, const char *query, size_t len,
                                            int k, int flags, int64_t *ids, float *scores,
                                            int *n_found) {
    retrlm__bm25_qcollect qc;
    retrlm_topk h;
    float *w = NULL, *sc = scores;
    int nq, i;
    retrlm_result r = RETRLM_OK;
    if (n_found) *n_found = 0;
    if (k <= 0 || !ids || (!query && len))
        return retrlm__fail(RETRLM_ERR_ARG, "bm25_search: k %d must be > 0, ids and query given", k);
    qc.bm = bm;
    qc.terms = NULL;
    qc.nomem = 0;
    if (bm->n_docs > 0) retrlm_analyze(&bm->analyzer, query, len, retrlm__bm25_qterm_cb, &qc);
    if (qc.nomem) {
        stbds_arrfree(qc.terms);
        return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_search: the query's terms");
    }
    nq = (int)stbds_arrlen(qc.terms);
    if (nq == 0) {
        stbds_arrfree(qc.terms);
        return RETRLM_OK;
    }
    qsort(qc.terms, (size_t)nq, sizeof(retrlm__bm25_qterm), retrlm__cmp_qterm);
    w = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    if (!sc) sc = (float *)retrlm__alloc((size_t)k, sizeof(float));
    if (!w || !sc) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_search: k %d", k);
        goto out;
    }
    for (i = 0; i < nq; i++)
        w[i] = (float)((double)qc.terms[i].qtf * retrlm__bm25_idf(bm->n_docs, bm->df_[qc.terms[i].t]));
    retrlm_topk_init(&h, k, ids, sc);
    r = (flags & RETRLM_BM25_EXHAUSTIVE) ? retrlm__bm25_exhaustive(bm, qc.terms, nq, w, &h)
                                         : retrlm__bm25_pruned(bm, qc.terms, nq, w, &h);
    if (r == RETRLM_OK) {
        int n = retrlm_topk_sort(&h);
        if (n_found) *n_found = n;
    }
out:
    if (sc != scores) RETRLM_FREE(sc);
    RETRLM_FREE(w);
    stbds_arrfree(qc.terms);
    return r;
}

RETRLM_API retrlm_result retrlm_bm25_search_batch(const retrlm_bm25 *bm, int n_queries,
                                                  const char *const *queries, const size_t *lens,
                                                  int k, int flags, int64_t *ids, float *scores,
                                                  int *n_found) {
    unsigned char *res;
    int q;
    if (n_queries < 0 || k <= 0 || (n_queries > 0 && (!queries || !ids || !n_found)))
        return retrlm__fail(RETRLM_ERR_ARG, "bm25_search_batch: %d queries, k %d", n_queries, k);
    res = (unsigned char *)retrlm__alloc((size_t)n_queries, 1);
    if (!res) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_search_batch: %d queries", n_queries);
    RETRLM__PARALLEL_FOR
    for (q = 0; q < n_queries; q++) { // each query by one thread, into its own output rows
        const char *t = queries[q] ? queries[q] : "";
        size_t l = lens ? lens[q] : strlen(t);
        res[q] = (unsigned char)retrlm_bm25_search(bm, t, l, k, flags, ids + (size_t)q * (size_t)k,
                                                   scores ? scores + (size_t)q * (size_t)k : NULL,
                                                   &n_found[q]);
    }
    for (q = 0; q < n_queries; q++)
        if (res[q] != RETRLM_OK) {
            retrlm_result r = (retrlm_result)res[q];
            RETRLM_FREE(res);
            return retrlm__fail(r, "bm25_search_batch: query %d failed (%s)", q, retrlm_result_string(r));
        }
    RETRLM_FREE(res);
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// persistence

// narrow copies of arrays for the file (freed by the caller)
typedef struct retrlm__bm25_narrow {
    char     *stop;    // stop words, NUL-terminated
    unsigned char *tlen; // term lengths
    uint16_t *len16;   // doc lengths when all < 65536
    uint32_t *off32;   // postings offsets when the postings are < 4 GiB
} retrlm__bm25_narrow;

static retrlm_result retrlm__bm25_writer(retrlm_bm25 *bm, retrlm_writer *w, uint64_t *meta,
                                        double *params, retrlm__bm25_narrow *nw) {
    retrlm_result r;
    size_t sb = 0, n_off;
    int i, narrow_len = 1;
    if ((r = retrlm_bm25_commit(bm)) != RETRLM_OK) return r;
    n_off = bm->post_off_ ? (size_t)bm->n_terms + 1 : 0;
    meta[0] = RETRLM__BM25_LAYOUT;
    meta[1] = (uint64_t)bm->n_docs;
    meta[2] = (uint64_t)bm->n_terms;
    meta[3] = bm->total_len;
    meta[4] = (uint64_t)bm->analyzer.stem;
    meta[5] = RETRLM_BM25_BLOCK;
    meta[6] = meta[7] = 0;
    params[0] = bm->k1;
    params[1] = bm->b;
    for (i = 0; i < bm->analyzer.n_stopwords; i++) sb += strlen(bm->analyzer.stop_[i]) + 1;
    for (i = 0; i < bm->n_docs; i++) narrow_len &= bm->doc_len_[i] < 65536;
    nw->stop = (char *)retrlm__alloc(sb, 1);
    nw->tlen = (unsigned char *)retrlm__alloc((size_t)bm->n_terms, 1);
    if (!nw->tlen) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_save: term lengths");
    for (i = 0; i < bm->n_terms; i++) nw->tlen[i] = (unsigned char)(bm->term_off_[i + 1] - bm->term_off_[i]);
    nw->len16 = narrow_len ? (uint16_t *)retrlm__alloc((size_t)bm->n_docs, sizeof(uint16_t)) : NULL;
    nw->off32 = bm->postings_bytes < 0xFFFFFFFFu ? (uint32_t *)retrlm__alloc(n_off, sizeof(uint32_t)) : NULL;
    if (!nw->stop || (narrow_len && !nw->len16) || (bm->postings_bytes < 0xFFFFFFFFu && !nw->off32))
        return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_save: file arrays");
    sb = 0;
    for (i = 0; i < bm->analyzer.n_stopwords; i++) {
        size_t l = strlen(bm->analyzer.stop_[i]) + 1;
        memcpy(nw->stop + sb, bm->analyzer.stop_[i], l);
        sb += l;
    }
    if (nw->len16)
        for (i = 0; i < bm->n_docs; i++) nw->len16[i] = (uint16_t)bm->doc_len_[i];
    if (nw->off32)
        for (i = 0; i < (int)n_off; i++) nw->off32[i] = (uint32_t)bm->post_off_[i];
    if ((r = retrlm_writer_init(w, "bm25")) != RETRLM_OK) return r;
    // empty sections get a valid pointer: io's memory sink passes it to memcpy even for 0 bytes
#define RETRLM__NZ(p) ((p) ? (const void *)(p) : (const void *)meta)
    if ((r = retrlm_writer_add(w, "meta", RETRLM_DTYPE_U64, meta, 8)) ||
        (r = retrlm_writer_add(w, "params", RETRLM_DTYPE_F64, params, 2)) ||
        (r = retrlm_writer_add(w, "stopwords", RETRLM_DTYPE_U8, RETRLM__NZ(nw->stop), sb)) ||
        (r = retrlm_writer_add(w, "term_text", RETRLM_DTYPE_U8, RETRLM__NZ(bm->term_text_), bm->n_terms ? bm->term_off_[bm->n_terms] : 0)) ||
        (r = retrlm_writer_add(w, "term_len", RETRLM_DTYPE_U8, RETRLM__NZ(nw->tlen), (size_t)bm->n_terms)) ||
        (r = nw->off32 ? retrlm_writer_add(w, "post_off", RETRLM_DTYPE_U32, RETRLM__NZ(nw->off32), n_off)
                       : retrlm_writer_add(w, "post_off", RETRLM_DTYPE_U64, RETRLM__NZ(bm->post_off_), n_off)) ||
        (r = retrlm_writer_add(w, "postings", RETRLM_DTYPE_U8, RETRLM__NZ(bm->post_), bm->postings_bytes)) ||
        (r = nw->len16 ? retrlm_writer_add(w, "doc_len", RETRLM_DTYPE_U16, RETRLM__NZ(nw->len16), (size_t)bm->n_docs)
                       : retrlm_writer_add(w, "doc_len", RETRLM_DTYPE_U32, RETRLM__NZ(bm->doc_len_), (size_t)bm->n_docs)) ||
        (r = retrlm_writer_add(w, "doc_id", RETRLM_DTYPE_I64, RETRLM__NZ(bm->doc_id_), bm->doc_id_ ? (size_t)bm->n_docs : 0)) ||
        (r = retrlm_writer_add(w, "id_order", RETRLM_DTYPE_U32, RETRLM__NZ(bm->id_order_), bm->doc_id_ ? (size_t)bm->n_docs : 0)))
        return r;
#undef RETRLM__NZ
    return RETRLM_OK;
}

static void retrlm__bm25_narrow_free(retrlm__bm25_narrow *nw) {
    RETRLM_FREE(nw->stop);
    RETRLM_FREE(nw->tlen);
    RETRLM_FREE(nw->len16);
    RETRLM_FREE(nw->off32);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_bm25_save(retrlm_bm25 *bm, const char *path) {
    retrlm_writer w;
    uint64_t meta[8];
    double params[2];
    retrlm__bm25_narrow nw;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    memset(&nw, 0, sizeof nw);
    r = retrlm__bm25_writer(bm, &w, meta, params, &nw);
    if (r == RETRLM_OK) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    retrlm__bm25_narrow_free(&nw);
    return r;
}
#endif

RETRLM_API retrlm_result retrlm_bm25_save_memory(retrlm_bm25 *bm, void *buf, size_t cap, size_t *size) {
    retrlm_writer w;
    uint64_t meta[8];
    double params[2];
    retrlm__bm25_narrow nw;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    memset(&nw, 0, sizeof nw);
    r = retrlm__bm25_writer(bm, &w, meta, params, &nw);
    if (r == RETRLM_OK) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    retrlm__bm25_narrow_free(&nw);
    return r;
}

#define RETRLM__BM25_BAD(...) retrlm__fail(RETRLM_ERR_CORRUPT, __VA_ARGS__)

// every block of every term: headers and payloads inside the term's range, documents strictly
// increasing below n_docs, bounds >= the real best f, per-document tf sums equal to the stored
// lengths
static retrlm_result retrlm__bm25_check_postings(retrlm_bm25 *bm, const char *src) {
    uint32_t *sum = (uint32_t *)retrlm__calloc((size_t)bm->n_docs + 1, sizeof(uint32_t));
    uint32_t docs[RETRLM_BM25_BLOCK], tfs[RETRLM_BM25_BLOCK];
    float k1p1 = bm->k1 + 1.0f;
    int t, d;
    retrlm_result r = RETRLM_OK;
    if (!sum) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: %s: check buffers", src);
    for (t = 0; t < bm->n_terms && !r; t++) {
        const unsigned char *q = retrlm__term_blocks(bm, t), *end = bm->post_ + bm->post_off_[t + 1];
        int left = (int)bm->df_[t], blk = 0;
        int64_t prev = -1;
        while (left > 0) {
            int m = RETRLM__MIN(RETRLM_BM25_BLOCK, left), i;
            float best = 0;
            retrlm__blk b;
            if (!retrlm__blk_parse(q, end, prev, left <= RETRLM_BM25_BLOCK, k1p1, &b) ||
                b.last >= (uint32_t)bm->n_docs || !retrlm__blk_decode(&b, m, prev, docs, tfs)) {
                r = RETRLM__BM25_BAD("bm25_load: %s: term %d block %d: header or postings malformed", src, t, blk);
                break;
            }
            for (i = 0; i < m; i++) {
                uint32_t dd = docs[i];
                float f;
                if (sum[dd] + tfs[i] < sum[dd]) break;
                sum[dd] += tfs[i];
                f = retrlm__bm25_f(tfs[i], bm->norm_[dd], k1p1);
                if (f > best) best = f;
            }
            if (i < m || !(b.bound >= best)) {
                r = RETRLM__BM25_BAD("bm25_load: %s: term %d block %d: bound %g below the block's best %g or tf overflow",
                                     src, t, blk, (double)b.bound, (double)best);
                break;
            }
            prev = b.last;
            q = b.next;
            left -= m;
            blk++;
        }
        if (!r && q != end)
            r = RETRLM__BM25_BAD("bm25_load: %s: term %d: postings end at %lld, expected %lld", src, t,
                                 (long long)(q - bm->post_), (long long)(end - bm->post_));
    }
    for (d = 0; d < bm->n_docs && !r; d++)
        if (sum[d] != bm->doc_len_[d])
            r = RETRLM__BM25_BAD("bm25_load: %s: document %d has length %u but its postings sum to %u", src, d,
                                 bm->doc_len_[d], sum[d]);
    RETRLM_FREE(sum);
    return r;
}

static int retrlm__bm25_section_type(const retrlm_reader *rd, const char *name) {
    int i;
    for (i = 0; i < rd->n_sections; i++) {
        retrlm_section_info info;
        if (retrlm_reader_section(rd, i, &info) == RETRLM_OK && !strcmp(info.name, name)) return (int)info.type;
    }
    return 0;
}

// Section name as unsigned integers wide bytes wide (4 or 8): in place when the file has them at
// that width, else (commit writes them at half the width when they fit) widened into *heap, a
// new array the index owns. *out gets the array, *n its length.
static retrlm_result retrlm__bm25_get_widened(const retrlm_reader *rd, const char *name, size_t wide,
                                              void **heap, const void **out, size_t *n) {
    const retrlm_dtype wt = wide == 8 ? RETRLM_DTYPE_U64 : RETRLM_DTYPE_U32;
    const retrlm_dtype nt = wide == 8 ? RETRLM_DTYPE_U32 : RETRLM_DTYPE_U16;
    const void *narrow;
    size_t i;
    retrlm_result r;
    if (retrlm__bm25_section_type(rd, name) != (int)nt) return retrlm_reader_get(rd, name, wt, out, n);
    if ((r = retrlm_reader_get(rd, name, nt, &narrow, n))) return r;
    if (!(*heap = retrlm__alloc(*n, wide)))
        return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: %s: section '%s'", rd->source_, name);
    for (i = 0; i < *n; i++) {
        if (wide == 8) ((uint64_t *)*heap)[i] = ((const uint32_t *)narrow)[i];
        else ((uint32_t *)*heap)[i] = ((const uint16_t *)narrow)[i];
    }
    *out = *heap;
    return RETRLM_OK;
}

static retrlm_result retrlm__bm25_from_reader(retrlm_bm25 *bm) {
    const retrlm_reader *rd = &bm->reader_;
    const char *src = rd->source_;
    const uint64_t *meta;
    const double *params;
    const char *stop;
    size_t n, m, nstop, n_text, i;
    const unsigned char *tlen;
    uint64_t total = 0;
    int nd, nt;
    retrlm_result r;
    retrlm_analyzer_config acfg;
    const char **words = NULL;
    int nw = 0;
    void *heap = NULL; // a section widened in memory
    const void *arr;
    if ((r = retrlm_reader_get(rd, "meta", RETRLM_DTYPE_U64, (const void **)&meta, &n))) return r;
    if (n != 8) return RETRLM__BM25_BAD("bm25_load: %s: section 'meta' has %zu values, expected 8", src, n);
    if (meta[0] != RETRLM__BM25_LAYOUT || meta[5] != RETRLM_BM25_BLOCK)
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "bm25_load: %s: layout %llu / block %llu, expected %d / %d", src,
                            (unsigned long long)meta[0], (unsigned long long)meta[5], RETRLM__BM25_LAYOUT, RETRLM_BM25_BLOCK);
    if (meta[1] > (uint64_t)INT_MAX - 1 || meta[2] > (uint64_t)INT_MAX - 1 || meta[4] > 1)
        return RETRLM__BM25_BAD("bm25_load: %s: %llu documents, %llu terms, stem flag %llu out of range", src,
                                (unsigned long long)meta[1], (unsigned long long)meta[2], (unsigned long long)meta[4]);
    nd = (int)meta[1];
    nt = (int)meta[2];
    if ((r = retrlm_reader_get(rd, "params", RETRLM_DTYPE_F64, (const void **)&params, &n))) return r;
    if (n != 2 || !(params[0] > 0 && params[0] < 1e6) || !(params[1] >= 0 && params[1] <= 1))
        return RETRLM__BM25_BAD("bm25_load: %s: section 'params' must hold k1 > 0 and b in [0, 1]", src);
    bm->k1 = (float)params[0];
    bm->b = (float)params[1];
    // analyzer: stem flag and the stop list (NUL-terminated words)
    if ((r = retrlm_reader_get(rd, "stopwords", RETRLM_DTYPE_U8, (const void **)&stop, &nstop))) return r;
    if (nstop && stop[nstop - 1] != 0)
        return RETRLM__BM25_BAD("bm25_load: %s: section 'stopwords' does not end with NUL", src);
    for (i = 0; i < nstop; i++)
        if (!stop[i]) {
            if (i == 0 || !stop[i - 1])
                return RETRLM__BM25_BAD("bm25_load: %s: empty stop word at byte %zu", src, i);
            nw++;
        }
    words = (const char **)retrlm__alloc((size_t)nw, sizeof(char *));
    if (!words) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: stop list");
    nw = 0;
    for (i = 0; i < nstop; i++)
        if (i == 0 || !stop[i - 1]) words[nw++] = stop + i;
    memset(&acfg, 0, sizeof acfg);
    acfg.no_stem = meta[4] == 0;
    acfg.no_stopwords = nw == 0;
    acfg.stopwords = words;
    acfg.n_stopwords = nw;
    retrlm_analyzer_free(&bm->analyzer);
    r = retrlm_analyzer_init(&bm->analyzer, &acfg);
    RETRLM_FREE((void *)words);
    if (r) return r;
    // dictionary: term lengths widen into offsets in memory
    if ((r = retrlm_reader_get(rd, "term_text", RETRLM_DTYPE_U8, (const void **)&bm->term_text_, &n_text)) ||
        (r = retrlm_reader_get(rd, "term_len", RETRLM_DTYPE_U8, (const void **)&tlen, &n)))
        return r;
    if (n != (size_t)nt) return RETRLM__BM25_BAD("bm25_load: %s: 'term_len' has %zu entries, expected %d", src, n, nt);
    bm->heap_toff_ = (uint32_t *)retrlm__alloc((size_t)nt + 1, sizeof(uint32_t));
    bm->heap_df_ = (uint32_t *)retrlm__alloc((size_t)nt + 1, sizeof(uint32_t));
    if (!bm->heap_toff_ || !bm->heap_df_) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: %s: dictionary of %d terms", src, nt);
    bm->heap_toff_[0] = 0;
    for (i = 0; i < (size_t)nt; i++) {
        uint32_t a = bm->heap_toff_[i];
        if (tlen[i] == 0 || tlen[i] > RETRLM_ANALYZER_MAX_TERM || (size_t)a + tlen[i] > n_text)
            return RETRLM__BM25_BAD("bm25_load: %s: term %zu: length %u out of range or past 'term_text'", src, i, tlen[i]);
        bm->heap_toff_[i + 1] = a + tlen[i];
        if (i > 0) {
            uint32_t pa = bm->heap_toff_[i - 1];
            size_t la = a - pa, lb = tlen[i];
            int c = memcmp(bm->term_text_ + pa, bm->term_text_ + a, RETRLM__MIN(la, lb));
            if (c > 0 || (c == 0 && la >= lb))
                return RETRLM__BM25_BAD("bm25_load: %s: terms %zu and %zu are not in strictly increasing order", src, i - 1, i);
        }
    }
    if (bm->heap_toff_[nt] != n_text)
        return RETRLM__BM25_BAD("bm25_load: %s: term lengths sum to %u, 'term_text' has %zu bytes", src, bm->heap_toff_[nt], n_text);
    bm->term_off_ = bm->heap_toff_;
    r = retrlm__bm25_get_widened(rd, "post_off", sizeof(uint64_t), &heap, &arr, &n);
    bm->heap_off_ = (uint64_t *)heap, bm->post_off_ = (const uint64_t *)arr;
    if (r) return r;
    if (n != (nt ? (size_t)nt + 1 : 0) && !(nt == 0 && n == 1))
        return RETRLM__BM25_BAD("bm25_load: %s: 'post_off' has %zu entries, expected %d", src, n, nt + 1);
    if ((r = retrlm_reader_get(rd, "postings", RETRLM_DTYPE_U8, (const void **)&bm->post_, &bm->postings_bytes))) return r;
    if (nt) { // offsets, and each term's df (a varint at its start)
        if (bm->post_off_[0] != 0 || bm->post_off_[nt] != bm->postings_bytes)
            return RETRLM__BM25_BAD("bm25_load: %s: 'post_off' must run from 0 to %zu", src, bm->postings_bytes);
        for (i = 0; i < (size_t)nt; i++) // all offsets first: then each term's range is inside
            if (bm->post_off_[i + 1] <= bm->post_off_[i])
                return RETRLM__BM25_BAD("bm25_load: %s: 'post_off' not increasing at term %zu", src, i);
        for (i = 0; i < (size_t)nt; i++) {
            const unsigned char *q = bm->post_ + bm->post_off_[i];
            uint64_t df;
            if (!retrlm__varint(&q, bm->post_ + bm->post_off_[i + 1], &df) || df == 0 || df > (uint64_t)nd)
                return RETRLM__BM25_BAD("bm25_load: %s: term %zu: df missing or out of range with %d documents", src, i, nd);
            bm->heap_df_[i] = (uint32_t)df;
        }
    }
    bm->df_ = bm->heap_df_;
    // documents
    heap = NULL;
    r = retrlm__bm25_get_widened(rd, "doc_len", sizeof(uint32_t), &heap, &arr, &n);
    bm->heap_len_ = (uint32_t *)heap, bm->doc_len_ = (const uint32_t *)arr;
    if (r) return r;
    if (n != (size_t)nd) return RETRLM__BM25_BAD("bm25_load: %s: 'doc_len' has %zu entries, expected %d", src, n, nd);
    if ((r = retrlm_reader_get(rd, "doc_id", RETRLM_DTYPE_I64, (const void **)&bm->doc_id_, &n))) return r;
    if (n != (size_t)nd && n != 0)
        return RETRLM__BM25_BAD("bm25_load: %s: 'doc_id' has %zu entries, expected %d or 0", src, n, nd);
    if ((r = retrlm_reader_get(rd, "id_order", RETRLM_DTYPE_U32, (const void **)&bm->id_order_, &m))) return r;
    if (m != n) return RETRLM__BM25_BAD("bm25_load: %s: 'id_order' has %zu entries, expected %zu", src, m, n);
    if (n == 0) { // ids are 0..nd-1
        bm->doc_id_ = NULL;
        bm->id_order_ = NULL;
    }
    for (i = 0; i < (size_t)nd; i++) total += bm->doc_len_[i];
    for (i = 0; i < n; i++) {
        if (bm->id_order_[i] >= (uint32_t)nd)
            return RETRLM__BM25_BAD("bm25_load: %s: 'id_order'[%zu] = %u out of range", src, i, bm->id_order_[i]);
        if (i > 0 && !(bm->doc_id_[bm->id_order_[i - 1]] < bm->doc_id_[bm->id_order_[i]]))
            return RETRLM__BM25_BAD("bm25_load: %s: document ids not unique or 'id_order' not sorted at %zu", src, i);
    }
    if (total != meta[3])
        return RETRLM__BM25_BAD("bm25_load: %s: document lengths sum to %llu, meta says %llu", src,
                                (unsigned long long)total, (unsigned long long)meta[3]);
    bm->n_docs = nd;
    bm->n_terms = nt;
    bm->total_len = total;
    if ((r = retrlm__bm25_norms(bm))) return r;
    return retrlm__bm25_check_postings(bm, src);
}

static retrlm_result retrlm__bm25_load_common(retrlm_bm25 *bm) {
    retrlm_result r = retrlm__bm25_from_reader(bm);
    if (r != RETRLM_OK) {
        bm->n_docs = bm->n_terms = 0; // the arrays may not agree: release them as they are
        retrlm_bm25_free(bm);
    }
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_bm25_load(retrlm_bm25 *bm, const char *path) {
    retrlm_result r;
    memset(bm, 0, sizeof *bm);
    if ((r = retrlm_reader_open(&bm->reader_, path, "bm25", 0)) != RETRLM_OK) return r;
    bm->loaded_ = 1;
    return retrlm__bm25_load_common(bm);
}
#endif

RETRLM_API retrlm_result retrlm_bm25_load_memory(retrlm_bm25 *bm, const void *data, size_t size) {
    retrlm_result r;
    memset(bm, 0, sizeof *bm);
    if ((r = retrlm_reader_open_memory(&bm->reader_, data, size, "bm25", 0)) != RETRLM_OK) return r;
    bm->loaded_ = 1;
    return retrlm__bm25_load_common(bm);
}
