#include "internal.h"
// tokenizer: byte-level BPE. Layout of a frozen tokenizer (all flat arrays):
//   tokens    tok_off_ (V+1) into tok_bytes_: the raw bytes of every id (no GPT-2 alphabet)
//   merges    merges_ (M, 4): left id, right id, result id, rank; lower rank merges first
//   lookups   vocab_hash_ (bytes -> id, open addressing), pair_hash_ ((left, right) -> merge)
// A merge's result bytes are its left's bytes followed by its right's; checked at build, so
// decode is the concatenation of token bytes whatever the merge path was.

#define RETRLM__TOK_SMALL 64    // pieces of up to this many bytes merge by a quadratic scan
#define RETRLM__CACHE_SLOTS 4096 // pre-token cache entries (direct-mapped)
#define RETRLM__CACHE_BYTES 24   // longest pre-token the cache keeps
#define RETRLM__CACHE_IDS 6      // most ids a cached pre-token may have

// ---- hashing (retrlm__mix64 and retrlm__hash_bytes: core) ----------------------------------
static uint64_t retrlm__hash_pair(int a, int b) {
    return retrlm__mix64(((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
}

static size_t retrlm__pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

// ---- token access and lookups -------------------------------------------------------------
static const unsigned char *retrlm__tok_ptr(const retrlm_tokenizer *tok, int id, size_t *len) {
    *len = tok->tok_off_[id + 1] - tok->tok_off_[id];
    return tok->tok_bytes_ + tok->tok_off_[id];
}

// id of the non-special token with bytes s[0..n) (h = its hash), or -1
static int retrlm__vocab_find(const retrlm_tokenizer *tok, const unsigned char *s, size_t n,
                              uint64_t h) {
    size_t mask = tok->vocab_cap_ - 1, i = (size_t)h & mask, len;
    for (;;) {
        uint32_t e = tok->vocab_hash_[i];
        const unsigned char *p;
        if (!e) return -1;
        p = retrlm__tok_ptr(tok, (int)(e - 1), &len);
        if (len == n && !memcmp(p, s, n)) return (int)(e - 1);
        i = (i + 1) & mask;
    }
}

// index of the merge (a, b), or -1
static int retrlm__pair_find(const retrlm_tokenizer *tok, int a, int b) {
    size_t mask, i;
    if (!tok->pair_cap_) return -1;
    mask = tok->pair_cap_ - 1;
    i = (size_t)retrlm__hash_pair(a, b) & mask;
    for (;;) {
        uint32_t e = tok->pair_hash_[i];
        const int *m;
        if (!e) return -1;
        m = tok->merges_ + (size_t)(e - 1) * 4;
        if (m[0] == a && m[1] == b) return (int)(e - 1);
        i = (i + 1) & mask;
    }
}

static int retrlm__is_special(const retrlm_tokenizer *tok, int id) {
    int lo = 0, hi = tok->n_special;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (tok->special_[mid] < id) lo = mid + 1;
        else if (tok->special_[mid] > id) hi = mid;
        else return 1;
    }
    return 0;
}

// (Re)builds vocab_hash_ over the non-special tokens; a repeated token is ERR_FORMAT.
static retrlm_result retrlm__vocab_hash_build(retrlm_tokenizer *tok, const char *src) {
    size_t cap = retrlm__pow2_at_least((size_t)tok->n_vocab * 2 + 1), len;
    int id;
    RETRLM_FREE(tok->vocab_hash_);
    tok->vocab_hash_ = (uint32_t *)retrlm__calloc(cap, sizeof(uint32_t));
    tok->vocab_cap_ = tok->vocab_hash_ ? cap : 0;
    if (!tok->vocab_hash_) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: vocabulary table", src);
    for (id = 0; id < tok->n_vocab; id++) {
        const unsigned char *p = retrlm__tok_ptr(tok, id, &len);
        size_t i;
        int other;
        if (retrlm__is_special(tok, id)) continue;
        other = retrlm__vocab_find(tok, p, len, retrlm__hash_bytes(p, len));
        if (other >= 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: token %d repeats the bytes of token %d",
                                src, id, other);
        i = (size_t)retrlm__hash_bytes(p, len) & (cap - 1);
        while (tok->vocab_hash_[i]) i = (i + 1) & (cap - 1);
        tok->vocab_hash_[i] = (uint32_t)id + 1;
    }
    return RETRLM_OK;
}

// Freezes a tokenizer from its arrays and checks all of them against each other. Takes the
// arrays (made with retrlm__alloc) whether it succeeds or not; off (n_vocab + 1) must index
// inside bytes, which the caller has checked; everything else is checked here.
static retrlm_result retrlm__tok_build(retrlm_tokenizer *tok, int n_vocab, size_t *off,
                                       unsigned char *bytes, int n_merges, int *merges,
                                       int n_special, int *special, const char *src) {
    retrlm_result res;
    size_t cap, len, la, lr;
    int i;
    retrlm_tokenizer_free(tok);
    tok->tok_off_ = off;
    tok->tok_bytes_ = bytes;
    tok->merges_ = merges;
    tok->special_ = special;
    tok->n_vocab = n_vocab;
    tok->n_merges = n_merges;
    tok->n_special = n_special;
    if (n_vocab < 256 || n_vocab > INT_MAX - 1 || n_merges < 0 || n_special < 0 ||
        n_special > n_vocab) {
        res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: %d tokens, %d merges, %d specials: expected "
                           "256 <= tokens, counts >= 0", src, n_vocab, n_merges, n_special);
        goto fail;
    }
    if (off[0] != 0) {
        res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: first token offset is not 0", src);
        goto fail;
    }
    for (i = 0; i < n_vocab; i++)
        if (off[i + 1] <= off[i]) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: token %d is empty or its offset decreases",
                               src, i);
            goto fail;
        }
    for (i = 0; i < n_special; i++)
        if (special[i] < 0 || special[i] >= n_vocab || (i && special[i] <= special[i - 1])) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: special token %d: id %d out of range or "
                               "not ascending", src, i, special[i]);
            goto fail;
        }
    if ((res = retrlm__vocab_hash_build(tok, src)) != RETRLM_OK) goto fail;
    for (i = 0; i < 256; i++) {
        unsigned char b = (unsigned char)i;
        tok->byte_id_[i] = retrlm__vocab_find(tok, &b, 1, retrlm__hash_bytes(&b, 1));
        if (tok->byte_id_[i] < 0) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: no token for byte 0x%02x", src, i);
            goto fail;
        }
    }
    cap = retrlm__pow2_at_least((size_t)n_merges * 2 + 1);
    tok->pair_hash_ = (uint32_t *)retrlm__calloc(cap, sizeof(uint32_t));
    if (!tok->pair_hash_) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "%s: merge table", src);
        goto fail;
    }
    tok->pair_cap_ = cap;
    for (i = 0; i < n_merges; i++) {
        const int *m = merges + (size_t)i * 4;
        const unsigned char *pa, *pb, *pr;
        size_t slot;
        int k;
        for (k = 0; k < 3; k++)
            if (m[k] < 0 || m[k] >= n_vocab || retrlm__is_special(tok, m[k])) break;
        if (k < 3 || m[3] < 0) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: merge %d (%d %d -> %d, rank %d): id out of "
                               "range, special, or negative rank", src, i, m[0], m[1], m[2], m[3]);
            goto fail;
        }
        pa = retrlm__tok_ptr(tok, m[0], &la);
        pb = retrlm__tok_ptr(tok, m[1], &lr);
        pr = retrlm__tok_ptr(tok, m[2], &len);
        if (len != la + lr || memcmp(pr, pa, la) || memcmp(pr + la, pb, lr)) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: merge %d: token %d is not token %d followed "
                               "by token %d", src, i, m[2], m[0], m[1]);
            goto fail;
        }
        if (retrlm__pair_find(tok, m[0], m[1]) >= 0) {
            res = retrlm__fail(RETRLM_ERR_FORMAT, "%s: merge %d repeats the pair (%d, %d)", src, i,
                               m[0], m[1]);
            goto fail;
        }
        slot = (size_t)retrlm__hash_pair(m[0], m[1]) & (cap - 1);
        while (tok->pair_hash_[slot]) slot = (slot + 1) & (cap - 1);
        tok->pair_hash_[slot] = (uint32_t)i + 1;
    }
    for (i = 0; i < n_special; i++) {
        unsigned char b = tok->tok_bytes_[off[special[i]]];
        tok->special_first_[b >> 3] =
            (unsigned char)(tok->special_first_[b >> 3] | (1u << (b & 7)));
    }
    return RETRLM_OK;
fail:
    retrlm_tokenizer_free(tok);
    return res;
}

RETRLM_API void retrlm_tokenizer_free(retrlm_tokenizer *tok) {
    if (!tok) return;
    RETRLM_FREE(tok->tok_off_);
    RETRLM_FREE(tok->tok_bytes_);
    RETRLM_FREE(tok->merges_);
    RETRLM_FREE(tok->special_);
    RETRLM_FREE(tok->vocab_hash_);
    RETRLM_FREE(tok->pair_hash_);
    memset(tok, 0, sizeof *tok);
}

RETRLM_API const char *retrlm_tokenizer_token(const retrlm_tokenizer *tok, int id, size_t *len) {
    size_t n = 0;
    const unsigned char *p = NULL;
    RETRLM_ASSERT(tok);
    if (id >= 0 && id < tok->n_vocab) p = retrlm__tok_ptr(tok, id, &n);
    if (len) *len = n;
    return (const char *)p;
}

RETRLM_API int retrlm_tokenizer_find(const retrlm_tokenizer *tok, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    int i, id;
    RETRLM_ASSERT(tok && (s || !len));
    if (!len || !tok->n_vocab) return -1;
    id = retrlm__vocab_find(tok, u, len, retrlm__hash_bytes(u, len));
    if (id >= 0) return id;
    for (i = 0; i < tok->n_special; i++) {
        size_t n;
        const unsigned char *p = retrlm__tok_ptr(tok, tok->special_[i], &n);
        if (n == len && !memcmp(p, u, len)) return tok->special_[i];
    }
    return -1;
}

RETRLM_API int retrlm_tokenizer_is_special(const retrlm_tokenizer *tok, int id) {
    RETRLM_ASSERT(tok);
    return retrlm__is_special(tok, id);
}

static int retrlm__buf_push_int(retrlm__buf *b, int v) { return retrlm__buf_push(b, &v, sizeof v); }

// a piece of text
typedef struct retrlm__span {
    const unsigned char *p; // (n) bytes
    size_t n;
} retrlm__span;

// ---- encoding ------------------------------------------------------------------------------
typedef struct retrlm__cache_entry {
    uint32_t len;                             // bytes of the pre-token; 0 = empty slot
    uint32_t n_ids;                           // its ids
    unsigned char bytes[RETRLM__CACHE_BYTES]; // (len)
    int ids[RETRLM__CACHE_IDS];               // (n_ids)
} retrlm__cache_entry;

// One encoding run: where ids go, plus scratch reused across pre-tokens.
typedef struct retrlm__enc {
    const retrlm_tokenizer *tok;
    int *out;                    // (cap) or NULL for a size query
    size_t cap, n;               // n: ids produced so far (written while n < cap)
    retrlm__cache_entry *cache;  // (RETRLM__CACHE_SLOTS) or NULL
    int *ids;                    // (scratch_cap) large pre-tokens: part id at each start, -1 dead
    size_t *next, *prev;         // (scratch_cap) linked list of live parts
    retrlm__heap_item *heap;     // (heap_cap) key: a pair's rank, tie: its left part's position
    size_t scratch_cap, heap_cap;
} retrlm__enc;

static void retrlm__enc_free(retrlm__enc *e) {
    RETRLM_FREE(e->cache);
    RETRLM_FREE(e->ids);
    RETRLM_FREE(e->next);
    RETRLM_FREE(e->prev);
    RETRLM_FREE(e->heap);
}

static void retrlm__emit(retrlm__enc *e, int id) {
    if (e->out && e->n < e->cap) e->out[e->n] = id;
    e->n++;
}

// rank of merging parts a and b (INT_MAX: no merge) and its result in *res
static int retrlm__pair_rank(const retrlm_tokenizer *tok, int a, int b, int *res) {
    int m = retrlm__pair_find(tok, a, b);
    if (m < 0) return INT_MAX;
    *res = tok->merges_[(size_t)m * 4 + 2];
    return tok->merges_[(size_t)m * 4 + 3];
}

// BPE of a short pre-token (n <= RETRLM__TOK_SMALL): ids into ids[], returns their count.
// Each step merges the adjacent pair of lowest rank, the leftmost on ties.
static int retrlm__bpe_small(const retrlm_tokenizer *tok, const unsigned char *s, size_t n,
                             int *ids) {
    int rank[RETRLM__TOK_SMALL], res[RETRLM__TOK_SMALL];
    int m = (int)n, i;
    for (i = 0; i < m; i++) ids[i] = tok->byte_id_[s[i]];
    for (i = 0; i + 1 < m; i++) rank[i] = retrlm__pair_rank(tok, ids[i], ids[i + 1], &res[i]);
    for (;;) {
        int best = INT_MAX, bi = -1;
        for (i = 0; i + 1 < m; i++)
            if (rank[i] < best) best = rank[i], bi = i;
        if (bi < 0) break;
        ids[bi] = res[bi];
        // drop part bi + 1 and pair bi + 1 (which started at it)
        for (i = bi + 1; i + 1 < m; i++) ids[i] = ids[i + 1];
        for (i = bi + 1; i + 2 < m; i++) rank[i] = rank[i + 1], res[i] = res[i + 1];
        m--;
        if (bi + 1 < m) rank[bi] = retrlm__pair_rank(tok, ids[bi], ids[bi + 1], &res[bi]);
        if (bi > 0) rank[bi - 1] = retrlm__pair_rank(tok, ids[bi - 1], ids[bi], &res[bi - 1]);
    }
    return m;
}

// BPE of a pre-token of any length in O(n log n): parts in a linked list, candidate pairs in a
// min-heap on (rank, position) with lazy deletion. Same result as retrlm__bpe_small.
static retrlm_result retrlm__bpe_large(retrlm__enc *e, const unsigned char *s, size_t n) {
    const retrlm_tokenizer *tok = e->tok;
    const size_t END = (size_t)-1;
    size_t i, hn = 0;
    int r, res = 0;
    if (n > e->scratch_cap) {
        RETRLM_FREE(e->ids);
        RETRLM_FREE(e->next);
        RETRLM_FREE(e->prev);
        RETRLM_FREE(e->heap);
        e->ids = (int *)retrlm__alloc(n, sizeof(int));
        e->next = (size_t *)retrlm__alloc(n, sizeof(size_t));
        e->prev = (size_t *)retrlm__alloc(n, sizeof(size_t));
        e->heap = (retrlm__heap_item *)retrlm__alloc(n, 3 * sizeof(retrlm__heap_item));
        e->scratch_cap = (e->ids && e->next && e->prev && e->heap) ? n : 0;
        if (!e->scratch_cap) return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: encode scratch");
    }
    for (i = 0; i < n; i++) {
        e->ids[i] = tok->byte_id_[s[i]];
        e->next[i] = i + 1 < n ? i + 1 : END;
        e->prev[i] = i ? i - 1 : END;
    }
    // at most n - 1 initial pairs plus 2 per merge (n - 1 merges): fewer than 3n items
    for (i = 0; i + 1 < n; i++) {
        r = retrlm__pair_rank(tok, e->ids[i], e->ids[i + 1], &res);
        if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, (int64_t)i);
    }
    while (hn) {
        retrlm__heap_item it = retrlm__heap_pop(e->heap, &hn);
        size_t p = (size_t)it.tie, q = e->next[p];
        if (e->ids[p] < 0 || q == END) continue;
        r = retrlm__pair_rank(tok, e->ids[p], e->ids[q], &res);
        if (r != it.key) continue; // stale: this pair changed since it was pushed
        e->ids[p] = res;
        e->ids[q] = -1;
        e->next[p] = e->next[q];
        if (e->next[q] != END) e->prev[e->next[q]] = p;
        if (e->prev[p] != END) {
            size_t a = e->prev[p];
            r = retrlm__pair_rank(tok, e->ids[a], e->ids[p], &res);
            if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, (int64_t)a);
        }
        if (e->next[p] != END) {
            r = retrlm__pair_rank(tok, e->ids[p], e->ids[e->next[p]], &res);
            if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, (int64_t)p);
        }
    }
    for (i = 0; i != END; i = e->next[i]) retrlm__emit(e, e->ids[i]);
    return RETRLM_OK;
}

// One pre-token: whole token if it is one, else the cache, else BPE.
static retrlm_result retrlm__encode_piece(retrlm__enc *e, const unsigned char *s, size_t n) {
    const retrlm_tokenizer *tok = e->tok;
    uint64_t h = retrlm__hash_bytes(s, n);
    int id = retrlm__vocab_find(tok, s, n, h), ids[RETRLM__TOK_SMALL], m, i;
    retrlm__cache_entry *c = NULL;
    if (id >= 0) {
        retrlm__emit(e, id);
        return RETRLM_OK;
    }
    if (n > RETRLM__TOK_SMALL) return retrlm__bpe_large(e, s, n);
    if (e->cache && n <= RETRLM__CACHE_BYTES) {
        c = &e->cache[(h >> 20) & (RETRLM__CACHE_SLOTS - 1)];
        if (c->len == n && !memcmp(c->bytes, s, n)) {
            for (i = 0; i < (int)c->n_ids; i++) retrlm__emit(e, c->ids[i]);
            return RETRLM_OK;
        }
    }
    m = retrlm__bpe_small(tok, s, n, ids);
    for (i = 0; i < m; i++) retrlm__emit(e, ids[i]);
    if (c && m <= RETRLM__CACHE_IDS) {
        c->len = (uint32_t)n;
        c->n_ids = (uint32_t)m;
        memcpy(c->bytes, s, n);
        memcpy(c->ids, ids, (size_t)m * sizeof(int));
    }
    return RETRLM_OK;
}

// text without special tokens: pre-tokens, one by one
static retrlm_result retrlm__encode_plain(retrlm__enc *e, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t len = retrlm__pretoken(s + i, n - i);
        retrlm_result r = retrlm__encode_piece(e, s + i, len);
        if (r) return r;
        i += len;
    }
    return RETRLM_OK;
}

// length of the longest special token at s[0..n) and its id in *id; 0 if none
static size_t retrlm__special_at(const retrlm_tokenizer *tok, const unsigned char *s, size_t n,
                                 int *id) {
    size_t best = 0, len;
    int i;
    for (i = 0; i < tok->n_special; i++) {
        const unsigned char *p = retrlm__tok_ptr(tok, tok->special_[i], &len);
        if (len > best && len <= n && !memcmp(p, s, len)) best = len, *id = tok->special_[i];
    }
    return best;
}

static retrlm_result retrlm__encode_text(retrlm__enc *e, const unsigned char *s, size_t n,
                                         int flags) {
    const retrlm_tokenizer *tok = e->tok;
    size_t i, seg = 0;
    retrlm_result r;
    if (!(flags & RETRLM_TOKENIZE_SPECIAL) || !tok->n_special) return retrlm__encode_plain(e, s, n);
    for (i = 0; i < n;) {
        int id = 0;
        size_t len;
        if (!(tok->special_first_[s[i] >> 3] & (1u << (s[i] & 7))) ||
            !(len = retrlm__special_at(tok, s + i, n - i, &id))) {
            i++;
            continue;
        }
        if ((r = retrlm__encode_plain(e, s + seg, i - seg)) != RETRLM_OK) return r;
        retrlm__emit(e, id);
        i += len;
        seg = i;
    }
    return retrlm__encode_plain(e, s + seg, n - seg);
}

static int retrlm__thread_num(void) {
#ifdef RETRLM__OMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// A cut before s[p] leaves every pre-token as it is when s[p-1] is '\n' and s[p-2], s[p] are
// ASCII non-spaces: the newline is then a one-character whitespace run followed by a non-space.
static int retrlm__safe_cut(const unsigned char *s, size_t p) {
    return p >= 2 && s[p - 1] == '\n' && s[p - 2] < 0x80 && s[p] < 0x80 &&
           retrlm__uc_class(s[p - 2]) != RETRLM__UC_SPACE &&
           retrlm__uc_class(s[p]) != RETRLM__UC_SPACE;
}

// Encodes n spans in parallel (each by one thread, in order, into its own array) and joins
// them in order into out; offsets (n + 1) may be NULL. The ids do not depend on the thread
// count: the per-thread cache only saves work.
static retrlm_result retrlm__encode_spans(const retrlm_tokenizer *tok, const retrlm__span *sp,
                                          int n, int flags, int *out, size_t cap,
                                          size_t *offsets, size_t *n_out) {
    int nt = retrlm__max_threads(), i;
    retrlm__enc *encs;
    int **ids;   // (n) each span's ids (when out is given)
    size_t *cnt; // (n) each span's id count; (size_t)-1 when it failed
    size_t total = 0;
    retrlm_result r = RETRLM_OK;
    *n_out = 0;
    encs = (retrlm__enc *)retrlm__calloc((size_t)nt, sizeof(retrlm__enc));
    ids = (int **)retrlm__calloc((size_t)n, sizeof(int *));
    cnt = (size_t *)retrlm__calloc((size_t)n, sizeof(size_t));
    if (!encs || !ids || !cnt) {
        RETRLM_FREE(encs);
        RETRLM_FREE(ids);
        RETRLM_FREE(cnt);
        return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: encoding %d texts", n);
    }
    for (i = 0; i < n; i++) total += sp[i].n;
    for (i = 0; i < nt; i++) {
        encs[i].tok = tok;
        // many bytes repeat their pre-tokens: then a cache per thread pays for its allocation
        if (total >= 65536)
            encs[i].cache = (retrlm__cache_entry *)retrlm__calloc(RETRLM__CACHE_SLOTS,
                                                                  sizeof(retrlm__cache_entry));
    }
    total = 0;
    RETRLM__PARALLEL_FOR
    for (i = 0; i < n; i++) {
        retrlm__enc *e = &encs[retrlm__thread_num()];
        e->n = 0;
        e->out = NULL;
        e->cap = 0;
        if (out) {
            // every id covers at least one byte: sp[i].n ids are enough
            e->out = ids[i] = (int *)retrlm__alloc(sp[i].n, sizeof(int));
            e->cap = sp[i].n;
            if (!ids[i]) {
                cnt[i] = (size_t)-1;
                continue;
            }
        }
        cnt[i] = retrlm__encode_text(e, sp[i].p, sp[i].n, flags) == RETRLM_OK ? e->n : (size_t)-1;
    }
    for (i = 0; i < n; i++)
        if (cnt[i] == (size_t)-1)
            r = retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: encode: out of memory on text %d", i);
    for (i = 0; i < n && !r; i++) {
        if (offsets) offsets[i] = total;
        if (out && total < cap)
            memcpy(out + total, ids[i], RETRLM__MIN(cnt[i], cap - total) * sizeof(int));
        total += cnt[i];
    }
    if (!r) {
        if (offsets) offsets[n] = total;
        *n_out = total;
        if (out && total > cap)
            r = retrlm__fail(RETRLM_ERR_RANGE, "tokenizer: encode needs %lu ids, the buffer holds "
                             "%lu", (unsigned long)total, (unsigned long)cap);
    }
    for (i = 0; i < nt; i++) {
        encs[i].out = NULL;
        retrlm__enc_free(&encs[i]);
    }
    for (i = 0; i < n; i++) RETRLM_FREE(ids[i]);
    RETRLM_FREE(encs);
    RETRLM_FREE(ids);
    RETRLM_FREE(cnt);
    return r;
}

#define RETRLM__PAR_PIECE (256u << 10) // a long text is encoded in pieces of at least this size

RETRLM_API retrlm_result retrlm_tokenizer_encode(const retrlm_tokenizer *tok, const char *text,
                                                 size_t len, int flags, int *out, size_t cap,
                                                 size_t *n_out) {
    const unsigned char *s = (const unsigned char *)text;
    retrlm__enc e;
    retrlm_result r;
    int nt = retrlm__max_threads();
    RETRLM_ASSERT(tok && tok->n_vocab && (text || !len) && n_out);
    if (nt > 1 && len >= 2 * RETRLM__PAR_PIECE &&
        (!(flags & RETRLM_TOKENIZE_SPECIAL) || !tok->n_special)) {
        // threads take pieces cut where pre-tokens cannot straddle: same ids as one piece
        retrlm__buf spans = {0, 0, 0};
        size_t piece = RETRLM__MAX(len / ((size_t)nt * 8), (size_t)RETRLM__PAR_PIECE), at = 0;
        int ok = 1;
        while (ok && at < len) {
            retrlm__span sp;
            size_t cut = len - at > piece ? at + piece : len;
            while (cut < len && !retrlm__safe_cut(s, cut)) cut++;
            sp.p = s + at;
            sp.n = cut - at;
            ok = retrlm__buf_push(&spans, &sp, sizeof sp);
            at = cut;
        }
        if (ok && spans.n / sizeof(retrlm__span) > 1 &&
            spans.n / sizeof(retrlm__span) < (size_t)INT_MAX) {
            r = retrlm__encode_spans(tok, (const retrlm__span *)spans.p,
                                     (int)(spans.n / sizeof(retrlm__span)), flags, out, cap, NULL,
                                     n_out);
            RETRLM_FREE(spans.p);
            return r;
        }
        RETRLM_FREE(spans.p);
    }
    memset(&e, 0, sizeof e);
    e.tok = tok;
    e.out = out;
    e.cap = out ? cap : 0;
    // a long text repeats its pre-tokens: the cache pays for its allocation
    if (len >= 8192)
        e.cache = (retrlm__cache_entry *)retrlm__calloc(RETRLM__CACHE_SLOTS,
                                                        sizeof(retrlm__cache_entry));
    r = retrlm__encode_text(&e, s, len, flags);
    retrlm__enc_free(&e);
    *n_out = e.n;
    if (r) return r;
    if (out && e.n > cap)
        return retrlm__fail(RETRLM_ERR_RANGE,
                            "tokenizer: encode needs %lu ids, the buffer holds %lu",
                            (unsigned long)e.n, (unsigned long)cap);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_tokenizer_encode_alloc(const retrlm_tokenizer *tok,
                                                       const char *text, size_t len, int flags,
                                                       int **ids, size_t *n_out) {
    retrlm_result r;
    size_t n = 0;
    RETRLM_ASSERT(ids && n_out);
    *ids = NULL;
    *n_out = 0;
    if ((r = retrlm_tokenizer_encode(tok, text, len, flags, NULL, 0, &n))) return r;
    if (!(*ids = (int *)retrlm__alloc(n + 1, sizeof(int))))
        return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: no memory for %lu ids", (unsigned long)n);
    if ((r = retrlm_tokenizer_encode(tok, text, len, flags, *ids, n + 1, n_out))) {
        RETRLM_FREE(*ids);
        *ids = NULL;
        *n_out = 0;
    }
    return r;
}

RETRLM_API retrlm_result retrlm_tokenizer_encode_batch(const retrlm_tokenizer *tok,
                                                       const char *const *texts, const size_t *lens,
                                                       int n_texts, int flags, int *out, size_t cap,
                                                       size_t *offsets, size_t *n_out) {
    retrlm__buf spans = {0, 0, 0};
    retrlm_result r;
    int i;
    RETRLM_ASSERT(tok && tok->n_vocab && n_texts >= 0 && (texts || !n_texts) && n_out);
    *n_out = 0;
    for (i = 0; i < n_texts; i++) {
        retrlm__span sp;
        sp.p = (const unsigned char *)texts[i];
        sp.n = lens ? lens[i] : strlen(texts[i]);
        if (!retrlm__buf_push(&spans, &sp, sizeof sp)) {
            RETRLM_FREE(spans.p);
            return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: encode_batch of %d texts", n_texts);
        }
    }
    r = retrlm__encode_spans(tok, (const retrlm__span *)spans.p, n_texts, flags, out, cap,
                             offsets, n_out);
    RETRLM_FREE(spans.p);
    return r;
}

RETRLM_API retrlm_result retrlm_tokenizer_decode(const retrlm_tokenizer *tok, const int *ids,
                                                 size_t n, char *out, size_t cap, size_t *n_out) {
    size_t i, total = 0, len;
    RETRLM_ASSERT(tok && (ids || !n) && n_out);
    *n_out = 0;
    for (i = 0; i < n; i++) {
        const unsigned char *p;
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return retrlm__fail(RETRLM_ERR_RANGE, "tokenizer: decode: id %d at %lu is outside "
                                "[0, %d)", ids[i], (unsigned long)i, tok->n_vocab);
        p = retrlm__tok_ptr(tok, ids[i], &len);
        if (out && total < cap) memcpy(out + total, p, RETRLM__MIN(len, cap - total));
        total += len;
    }
    *n_out = total;
    if (out && total < cap) out[total] = 0;
    if (out && total > cap)
        return retrlm__fail(RETRLM_ERR_RANGE, "tokenizer: decode needs %lu bytes, the buffer holds "
                            "%lu", (unsigned long)total, (unsigned long)cap);
    return RETRLM_OK;
}

// Decodes ids (n) into *buf, NUL-terminated, growing it (*cap bytes, both may start 0/NULL) when
// it is too small; *len gets the bytes. For callers that decode text after text (queries).
RETRLM__PRIVATE retrlm_result retrlm__decode_grow(const retrlm_tokenizer *tok, const int *ids, size_t n,
                                                  char **buf, size_t *cap, size_t *len) {
    retrlm_result r = retrlm_tokenizer_decode(tok, ids, n, NULL, 0, len);
    if (r) return r;
    if (*len + 1 > *cap) {
        char *b = (char *)retrlm__realloc(*buf, *len + 1, 1);
        if (!b) return retrlm__fail(RETRLM_ERR_NOMEM, "decode: no memory for %lu bytes of text",
                                    (unsigned long)(*len + 1));
        *buf = b;
        *cap = *len + 1;
    }
    return retrlm_tokenizer_decode(tok, ids, n, *buf, *cap, len);
}

// ---- GPT-2's files: encoder.json + vocab.bpe ------------------------------------------------
// GPT-2 writes each byte as a visible character: bytes ! .. ~, 0xA1 .. 0xAC and 0xAE .. 0xFF
// as themselves, the other 68 bytes as U+0100 + k in byte order. byte_of[cp] inverts that.
static void retrlm__gpt2_alphabet(int byte_of[324]) {
    int b, n = 0;
    for (b = 0; b < 324; b++) byte_of[b] = -1;
    for (b = 0; b < 256; b++) {
        int vis = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_of[vis ? b : 256 + n++] = b;
    }
}

// appends the byte of GPT-2 character cp to out; 0 if cp is not in the alphabet or OOM
static int retrlm__gpt2_char(const int byte_of[324], uint32_t cp, retrlm__buf *out) {
    unsigned char b;
    if (cp >= 324 || byte_of[cp] < 0) return 0;
    b = (unsigned char)byte_of[cp];
    return retrlm__buf_push(out, &b, 1);
}

static size_t retrlm__skip_ws(const unsigned char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static int retrlm__hex4(const unsigned char *s, uint32_t *v) {
    int k;
    *v = 0;
    for (k = 0; k < 4; k++) {
        int c = s[k], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *v = *v * 16 + (uint32_t)d;
    }
    return 1;
}

// Parses the JSON string starting at s[*i] == '"', mapping its characters through the GPT-2
// alphabet into out. 0 on a syntax error or a character outside the alphabet.
static int retrlm__json_token(const unsigned char *s, size_t n, size_t *i, const int byte_of[324],
                              retrlm__buf *out) {
    size_t k = *i + 1;
    while (k < n && s[k] != '"') {
        uint32_t cp, lo;
        if (s[k] == '\\') {
            if (k + 1 >= n) return 0;
            switch (s[k + 1]) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = 8; break;
            case 'f': cp = 12; break;
            case 'n': cp = 10; break;
            case 'r': cp = 13; break;
            case 't': cp = 9; break;
            case 'u':
                if (k + 6 > n || !retrlm__hex4(s + k + 2, &cp)) return 0;
                k += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) { // surrogate pair
                    if (k + 8 > n || s[k + 2] != '\\' || s[k + 3] != 'u' ||
                        !retrlm__hex4(s + k + 4, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return 0;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    k += 6;
                }
                break;
            default: return 0;
            }
            k += 2;
        } else {
            size_t len = retrlm__utf8_decode(s + k, n - k, &cp);
            if (cp == 0xFFFFFFFFu || cp < 0x20) return 0;
            k += len;
        }
        if (!retrlm__gpt2_char(byte_of, cp, out)) return 0;
    }
    if (k >= n) return 0;
    *i = k + 1;
    return 1;
}

// Parses a GPT-2 token as written in vocab.bpe (UTF-8 text, no escapes) into out.
static int retrlm__bpe_token(const unsigned char *s, size_t n, const int byte_of[324],
                             retrlm__buf *out) {
    size_t k = 0;
    out->n = 0;
    while (k < n) {
        uint32_t cp;
        k += retrlm__utf8_decode(s + k, n - k, &cp);
        if (!retrlm__gpt2_char(byte_of, cp, out)) return 0;
    }
    return out->n > 0;
}

// Moves token arrays out of tok (whose tables were built for lookups while loading) into a
// final build with the given merges and specials.
static retrlm_result retrlm__tok_finish(retrlm_tokenizer *tok, retrlm__buf *merges,
                                        retrlm__buf *special, const char *src) {
    int n_vocab = tok->n_vocab;
    size_t *off = tok->tok_off_;
    unsigned char *bytes = tok->tok_bytes_;
    int *m = (int *)merges->p, *sp = (int *)special->p;
    int n_merges = (int)(merges->n / (4 * sizeof(int))),
        n_special = (int)(special->n / sizeof(int));
    if (!m) m = (int *)retrlm__alloc(0, sizeof(int));
    if (!sp) sp = (int *)retrlm__alloc(0, sizeof(int));
    memset(merges, 0, sizeof *merges);
    memset(special, 0, sizeof *special);
    RETRLM_FREE(tok->special_);
    tok->special_ = NULL;
    tok->tok_off_ = NULL;
    tok->tok_bytes_ = NULL;
    if (!m || !sp) {
        RETRLM_FREE(m);
        RETRLM_FREE(sp);
        RETRLM_FREE(off);
        RETRLM_FREE(bytes);
        retrlm_tokenizer_free(tok);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: merge table", src);
    }
    return retrlm__tok_build(tok, n_vocab, off, bytes, n_merges, m, n_special, sp, src);
}

// Orders tokens (bytes at arena[start[k]..][0..len[k]) with id ids[k], k < n) by id into tok's
// offset and byte arrays; ids must be 0..n-1, each once.
static retrlm_result retrlm__tok_arrays(retrlm_tokenizer *tok, const retrlm__buf *arena,
                                        const size_t *start, const size_t *len, const int *ids,
                                        int n, int n_extra, const char *src) {
    size_t *pos = NULL, total = 0;
    int k;
    memset(tok, 0, sizeof *tok);
    pos = (size_t *)retrlm__alloc((size_t)n + 1, sizeof(size_t));
    tok->tok_off_ = (size_t *)retrlm__calloc((size_t)n + (size_t)n_extra + 1, sizeof(size_t));
    if (!pos || !tok->tok_off_) {
        RETRLM_FREE(pos);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: %d tokens", src, n);
    }
    for (k = 0; k <= n; k++) pos[k] = (size_t)-1;
    for (k = 0; k < n; k++) {
        if (ids[k] < 0 || ids[k] >= n || pos[ids[k]] != (size_t)-1) {
            RETRLM_FREE(pos);
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: token id %d is repeated or outside 0..%d",
                                src, ids[k], n - 1);
        }
        pos[ids[k]] = (size_t)k;
    }
    for (k = 0; k < n; k++) total += len[pos[k]];
    tok->tok_bytes_ = (unsigned char *)retrlm__alloc(total, 1);
    if (!tok->tok_bytes_) {
        RETRLM_FREE(pos);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: token bytes", src);
    }
    total = 0;
    for (k = 0; k < n; k++) {
        memcpy(tok->tok_bytes_ + total, arena->p + start[pos[k]], len[pos[k]]);
        total += len[pos[k]];
        tok->tok_off_[k + 1] = total;
    }
    tok->n_vocab = n;
    RETRLM_FREE(pos);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2_memory(retrlm_tokenizer *tok, const char *json,
                                                           size_t json_size, const char *bpe,
                                                           size_t bpe_size) {
    const char *src = "encoder.json";
    const unsigned char *s = (const unsigned char *)json, *b = (const unsigned char *)bpe;
    retrlm__buf arena = {0, 0, 0}, starts = {0, 0, 0}, lens = {0, 0, 0}, ids = {0, 0, 0};
    retrlm__buf merges = {0, 0, 0}, special = {0, 0, 0}, part = {0, 0, 0};
    int byte_of[324], n = 0, line = 0, rank = 0;
    unsigned char *is_result = NULL;
    size_t i, nl;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tok && (json || !json_size) && (bpe || !bpe_size));
    memset(tok, 0, sizeof *tok);
    retrlm__gpt2_alphabet(byte_of);
    // encoder.json: {"token": id, ...}
    i = retrlm__skip_ws(s, json_size, 0);
    if (i >= json_size || s[i] != '{') {
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: expected '{' at byte %lu", src, (unsigned long)i);
        goto done;
    }
    i = retrlm__skip_ws(s, json_size, i + 1);
    while (i < json_size && s[i] != '}') {
        size_t at = arena.n, len;
        long v = 0;
        int digits = 0;
        if (n && (s[i] != ',' || (i = retrlm__skip_ws(s, json_size, i + 1)) >= json_size)) break;
        if (s[i] != '"' || !retrlm__json_token(s, json_size, &i, byte_of, &arena)) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: bad token string near byte %lu (JSON string "
                             "of GPT-2 byte characters expected)", src, (unsigned long)i);
            goto done;
        }
        i = retrlm__skip_ws(s, json_size, i);
        if (i < json_size && s[i] == ':') i = retrlm__skip_ws(s, json_size, i + 1);
        else break;
        while (i < json_size && s[i] >= '0' && s[i] <= '9' && v <= INT_MAX)
            v = v * 10 + (s[i++] - '0'), digits++;
        len = arena.n - at;
        if (!digits || v > INT_MAX - 1 || len == 0) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: token %d: id missing or too large, or token "
                             "empty, near byte %lu", src, n, (unsigned long)i);
            goto done;
        }
        if (!retrlm__buf_push(&starts, &at, sizeof at) || !retrlm__buf_push(&lens, &len, sizeof len)
            || !retrlm__buf_push_int(&ids, (int)v)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: token list", src);
            goto done;
        }
        n++;
        i = retrlm__skip_ws(s, json_size, i);
    }
    if (i >= json_size || s[i] != '}' || n == 0) {
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: expected ',' or '}' at byte %lu", src,
                         (unsigned long)i);
        goto done;
    }
    r = retrlm__tok_arrays(tok, &arena, (const size_t *)starts.p, (const size_t *)lens.p,
                           (const int *)ids.p, n, 0, src);
    if (r || (r = retrlm__vocab_hash_build(tok, src)) != RETRLM_OK) goto done;
    // vocab.bpe: "#version" line, then "left right" per line in rank order
    src = "vocab.bpe";
    is_result = (unsigned char *)retrlm__calloc((size_t)n, 1);
    if (!is_result) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: flags", src);
        goto done;
    }
    for (i = 0; i < bpe_size; i = nl) {
        size_t e = i, sp, l1, l2;
        const unsigned char *p1, *p2;
        int left = -1, right = -1, res, m[4];
        while (e < bpe_size && b[e] != '\n') e++;
        nl = e + 1;
        line++;
        if (e > i && b[e - 1] == '\r') e--;
        if (e == i || (line == 1 && b[i] == '#')) continue;
        for (sp = i; sp < e && b[sp] != ' ';) sp++;
        if (sp < e && retrlm__bpe_token(b + i, sp - i, byte_of, &part))
            left = retrlm__vocab_find(tok, part.p, part.n, retrlm__hash_bytes(part.p, part.n));
        if (sp < e && retrlm__bpe_token(b + sp + 1, e - sp - 1, byte_of, &part))
            right = retrlm__vocab_find(tok, part.p, part.n, retrlm__hash_bytes(part.p, part.n));
        if (left < 0 || right < 0) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: line %d: expected two tokens of encoder.json "
                             "separated by one space", src, line);
            goto done;
        }
        p1 = retrlm__tok_ptr(tok, left, &l1);
        p2 = retrlm__tok_ptr(tok, right, &l2);
        part.n = 0;
        if (!retrlm__buf_push(&part, p1, l1) || !retrlm__buf_push(&part, p2, l2)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: merge", src);
            goto done;
        }
        res = retrlm__vocab_find(tok, part.p, part.n, retrlm__hash_bytes(part.p, part.n));
        if (res < 0) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: line %d: the merged token is not in "
                             "encoder.json", src, line);
            goto done;
        }
        m[0] = left, m[1] = right, m[2] = res, m[3] = rank++;
        is_result[res] = 1;
        if (!retrlm__buf_push(&merges, m, sizeof m)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: merges", src);
            goto done;
        }
    }
    // tokens that no merge makes and that are not single bytes: specials (<|endoftext|>)
    for (n = 0; n < tok->n_vocab; n++)
        if (!is_result[n] && tok->tok_off_[n + 1] - tok->tok_off_[n] > 1 &&
            !retrlm__buf_push_int(&special, n)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: specials", src);
            goto done;
        }
    r = retrlm__tok_finish(tok, &merges, &special, "gpt2 files");
done:
    if (r) retrlm_tokenizer_free(tok);
    RETRLM_FREE(arena.p);
    RETRLM_FREE(starts.p);
    RETRLM_FREE(lens.p);
    RETRLM_FREE(ids.p);
    RETRLM_FREE(merges.p);
    RETRLM_FREE(special.p);
    RETRLM_FREE(part.p);
    RETRLM_FREE(is_result);
    return r;
}

// ---- .tiktoken rank files ------------------------------------------------------------------
static int retrlm__b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// standard base64 (padding optional) of s[0..n) appended to out; 0 if malformed
static int retrlm__b64_decode(const unsigned char *s, size_t n, retrlm__buf *out) {
    uint32_t acc = 0;
    int bits = 0;
    size_t k;
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return 0;
    for (k = 0; k < n; k++) {
        int v = retrlm__b64_value(s[k]);
        if (v < 0) return 0;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            unsigned char c = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
            if (!retrlm__buf_push(out, &c, 1)) return 0;
        }
        acc &= (1u << bits) - 1;
    }
    return 1;
}

RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken_memory(retrlm_tokenizer *tok,
                                                               const char *data, size_t size,
                                                               const char *const *specials,
                                                               int n_special) {
    const char *src = "tiktoken";
    const unsigned char *s = (const unsigned char *)data;
    retrlm__buf arena = {0, 0, 0}, starts = {0, 0, 0}, lens = {0, 0, 0}, ids = {0, 0, 0};
    retrlm__buf merges = {0, 0, 0}, special = {0, 0, 0};
    size_t i, nl, len;
    int n = 0, line = 0, k, id;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tok && (data || !size) && n_special >= 0 && (specials || !n_special));
    memset(tok, 0, sizeof *tok);
    for (i = 0; i < size; i = nl) {
        size_t e = i, sp, at = arena.n, q;
        long v = 0;
        int digits = 0;
        while (e < size && s[e] != '\n') e++;
        nl = e + 1;
        line++;
        if (e > i && s[e - 1] == '\r') e--;
        if (e == i) continue;
        for (sp = i; sp < e && s[sp] != ' ';) sp++;
        for (q = sp + 1; sp < e && q < e && s[q] >= '0' && s[q] <= '9'; q++) {
            v = v * 10 + (s[q] - '0');
            digits++;
            if (v > INT_MAX - 1 - n_special) break;
        }
        if (sp >= e || !digits || q != e || sp == i ||
            !retrlm__b64_decode(s + i, sp - i, &arena) || arena.n == at) {
            r = retrlm__fail(RETRLM_ERR_FORMAT,
                             "%s: line %d: expected \"base64-token rank\" with "
                             "a non-empty token and a rank below %d",
                             src, line, INT_MAX - n_special);
            goto done;
        }
        len = arena.n - at;
        if (!retrlm__buf_push(&starts, &at, sizeof at) || !retrlm__buf_push(&lens, &len, sizeof len)
            || !retrlm__buf_push_int(&ids, (int)v)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: token list", src);
            goto done;
        }
        if (n == INT_MAX - 1 - n_special) break;
        n++;
    }
    // specials follow the ranks: ids n, n+1, ...
    for (k = 0; k < n_special; k++) {
        size_t at = arena.n;
        len = strlen(specials[k]);
        if (!len) {
            r = retrlm__fail(RETRLM_ERR_ARG, "%s: special token %d is empty", src, k);
            goto done;
        }
        if (!retrlm__buf_push(&arena, specials[k], len) ||
            !retrlm__buf_push(&starts, &at, sizeof at) ||
            !retrlm__buf_push(&lens, &len, sizeof len) || !retrlm__buf_push_int(&ids, n + k) ||
            !retrlm__buf_push_int(&special, n + k)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: specials", src);
            goto done;
        }
    }
    if ((r = retrlm__tok_arrays(tok, &arena, (const size_t *)starts.p, (const size_t *)lens.p,
                                (const int *)ids.p, n + n_special, 0, src)) != RETRLM_OK)
        goto done;
    tok->special_ = (int *)special.p;
    tok->n_special = n_special;
    special.p = NULL;
    if ((r = retrlm__vocab_hash_build(tok, src)) != RETRLM_OK) goto done;
    // tiktoken merges adjacent parts p, q when p+q is a token, lowest rank first: the pair
    // table has every split of every token into two tokens, ranked by the whole token's rank
    for (id = 0; id < n; id++) {
        const unsigned char *p = retrlm__tok_ptr(tok, id, &len);
        size_t cut;
        for (cut = 1; cut < len; cut++) {
            int a = retrlm__vocab_find(tok, p, cut, retrlm__hash_bytes(p, cut)), bb, m[4];
            if (a < 0) continue;
            bb =
                retrlm__vocab_find(tok, p + cut, len - cut, retrlm__hash_bytes(p + cut, len - cut));
            if (bb < 0) continue;
            m[0] = a, m[1] = bb, m[2] = id, m[3] = id;
            if (!retrlm__buf_push(&merges, m, sizeof m)) {
                r = retrlm__fail(RETRLM_ERR_NOMEM, "%s: merges", src);
                goto done;
            }
        }
    }
    special.p = (unsigned char *)tok->special_;
    special.n = (size_t)n_special * sizeof(int);
    tok->special_ = NULL;
    r = retrlm__tok_finish(tok, &merges, &special, src);
done:
    if (r) retrlm_tokenizer_free(tok);
    RETRLM_FREE(arena.p);
    RETRLM_FREE(starts.p);
    RETRLM_FREE(lens.p);
    RETRLM_FREE(ids.p);
    RETRLM_FREE(merges.p);
    RETRLM_FREE(special.p);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2(retrlm_tokenizer *tok, const char *encoder_json,
                                                    const char *vocab_bpe) {
    char *j = NULL, *b = NULL;
    size_t jn, bn;
    retrlm_result r;
    RETRLM_ASSERT(tok && encoder_json && vocab_bpe);
    memset(tok, 0, sizeof *tok);
    if ((r = retrlm__read_file(encoder_json, &j, &jn)) == RETRLM_OK &&
        (r = retrlm__read_file(vocab_bpe, &b, &bn)) == RETRLM_OK)
        r = retrlm_tokenizer_load_gpt2_memory(tok, j, jn, b, bn);
    RETRLM_FREE(j);
    RETRLM_FREE(b);
    return r;
}

RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken(retrlm_tokenizer *tok, const char *path,
                                                        const char *const *specials,
                                                        int n_special) {
    char *d = NULL;
    size_t n;
    retrlm_result r;
    RETRLM_ASSERT(tok && path);
    memset(tok, 0, sizeof *tok);
    if ((r = retrlm__read_file(path, &d, &n)) == RETRLM_OK)
        r = retrlm_tokenizer_load_tiktoken_memory(tok, d, n, specials, n_special);
    RETRLM_FREE(d);
    return r;
}
#endif

// ---- persistence: container kind "tokenizer" -----------------------------------------------
//   meta           u32 (4)           format 1, n_vocab, n_merges, n_special
//   token_offsets  u64 (n_vocab + 1) byte offsets into token_bytes, from 0, increasing
//   token_bytes    u8                the tokens' bytes
//   merges         i32 (n_merges, 4) left, right, result, rank
//   specials       i32 (n_special)   ascending ids
#define RETRLM__TOK_FORMAT 1

static retrlm_result retrlm__tok_writer(const retrlm_tokenizer *tok, retrlm_writer *w,
                                        uint64_t **off64) {
    uint32_t meta[4];
    retrlm_result r;
    int i;
    RETRLM_ASSERT(tok && tok->n_vocab);
    *off64 = (uint64_t *)retrlm__alloc((size_t)tok->n_vocab + 1, sizeof(uint64_t));
    if (!*off64) return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer: save");
    for (i = 0; i <= tok->n_vocab; i++) (*off64)[i] = tok->tok_off_[i];
    meta[0] = RETRLM__TOK_FORMAT;
    meta[1] = (uint32_t)tok->n_vocab;
    meta[2] = (uint32_t)tok->n_merges;
    meta[3] = (uint32_t)tok->n_special;
    if ((r = retrlm_writer_init(w, "tokenizer")) != RETRLM_OK) return r;
    if ((r = retrlm_writer_add_copy(w, "meta", RETRLM_DTYPE_U32, meta, 4)) != RETRLM_OK ||
        (r = retrlm_writer_add(w, "token_offsets", RETRLM_DTYPE_U64, *off64,
                               (size_t)tok->n_vocab + 1)) != RETRLM_OK ||
        (r = retrlm_writer_add(w, "token_bytes", RETRLM_DTYPE_U8, tok->tok_bytes_,
                               tok->tok_off_[tok->n_vocab])) != RETRLM_OK ||
        (r = retrlm_writer_add(w, "merges", RETRLM_DTYPE_I32, tok->merges_,
                               (size_t)tok->n_merges * 4)) != RETRLM_OK ||
        (r = retrlm_writer_add(w, "specials", RETRLM_DTYPE_I32, tok->special_,
                               (size_t)tok->n_special)) != RETRLM_OK)
        return r;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_tokenizer_save_memory(const retrlm_tokenizer *tok, void *buf,
                                                      size_t cap, size_t *size) {
    retrlm_writer w;
    uint64_t *off64 = NULL;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__tok_writer(tok, &w, &off64);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    RETRLM_FREE(off64);
    return r;
}

RETRLM_API retrlm_result retrlm_tokenizer_fingerprint(const retrlm_tokenizer *tok, uint32_t *fp) {
    size_t size = 0;
    void *buf;
    retrlm_result r;
    RETRLM_ASSERT(tok && fp);
    *fp = 0;
    if ((r = retrlm_tokenizer_save_memory(tok, NULL, 0, &size))) return r;
    if (!(buf = retrlm__alloc(size, 1))) return retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer fingerprint: no memory");
    if (!(r = retrlm_tokenizer_save_memory(tok, buf, size, &size))) *fp = retrlm_crc32(0, buf, size);
    RETRLM_FREE(buf);
    return r;
}

static retrlm_result retrlm__tok_read(retrlm_tokenizer *tok, const retrlm_reader *rd) {
    const char *src = rd->source_;
    uint32_t meta[4];
    const void *p = NULL, *pm = NULL, *ps = NULL;
    size_t n = 0, nbytes = 0, nm;
    size_t *off = NULL;
    unsigned char *bytes = NULL;
    int *merges = NULL, *special = NULL, i;
    retrlm_result r;
    const uint64_t *o64;
    // retrlm_reader_get, not _read: gcc -O3 inlines _read and warns (maybe-uninitialized)
    if ((r = retrlm_reader_get(rd, "meta", RETRLM_DTYPE_U32, &p, &n)) != RETRLM_OK) return r;
    if (n != 4)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: meta has %lu entries, expected 4", src,
                            (unsigned long)n);
    memcpy(meta, p, sizeof meta);
    if (meta[0] != RETRLM__TOK_FORMAT)
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "%s: tokenizer format %u, this build reads %d",
                            src, (unsigned)meta[0], RETRLM__TOK_FORMAT);
    if (meta[1] < 256 || meta[1] >= (uint32_t)INT_MAX || meta[2] >= (uint32_t)INT_MAX / 4 ||
        meta[3] > meta[1])
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: meta: %u tokens, %u merges, %u specials are "
                            "out of range", src, (unsigned)meta[1], (unsigned)meta[2],
                            (unsigned)meta[3]);
    if ((r = retrlm_reader_get(rd, "token_offsets", RETRLM_DTYPE_U64, &p, &n)) != RETRLM_OK)
        return r;
    if (n != (size_t)meta[1] + 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: token_offsets has %lu entries, meta says %u "
                            "tokens (+1)", src, (unsigned long)n, (unsigned)meta[1]);
    o64 = (const uint64_t *)p;
    if ((r = retrlm_reader_get(rd, "token_bytes", RETRLM_DTYPE_U8, &p, &nbytes)) != RETRLM_OK)
        return r;
    if (o64[meta[1]] != (uint64_t)nbytes)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: token_offsets ends at %llu, token_bytes has "
                            "%lu bytes", src, (unsigned long long)o64[meta[1]],
                            (unsigned long)nbytes);
    for (i = 0; i < (int)meta[1]; i++)
        if (o64[i + 1] <= o64[i])
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: token_offsets: token %d is empty or its "
                                "offset decreases", src, i);
    // every count is checked against the file before anything is allocated for it
    nm = (size_t)meta[2] * 4;
    if ((r = retrlm_reader_get(rd, "merges", RETRLM_DTYPE_I32, &pm, &n)) != RETRLM_OK) return r;
    if (n != nm)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: merges has %lu entries, meta says %u merges "
                            "(x4)", src, (unsigned long)n, (unsigned)meta[2]);
    if ((r = retrlm_reader_get(rd, "specials", RETRLM_DTYPE_I32, &ps, &n)) != RETRLM_OK) return r;
    if (n != meta[3])
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: specials has %lu entries, meta says %u", src,
                            (unsigned long)n, (unsigned)meta[3]);
    off = (size_t *)retrlm__alloc((size_t)meta[1] + 1, sizeof(size_t));
    bytes = (unsigned char *)retrlm__alloc(nbytes, 1);
    merges = (int *)retrlm__alloc(nm, sizeof(int));
    special = (int *)retrlm__alloc(meta[3], sizeof(int));
    if (!off || !bytes || !merges || !special) {
        RETRLM_FREE(off);
        RETRLM_FREE(bytes);
        RETRLM_FREE(merges);
        RETRLM_FREE(special);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: tokenizer arrays", src);
    }
    for (i = 0; i <= (int)meta[1]; i++) off[i] = (size_t)o64[i];
    if (nbytes) memcpy(bytes, p, nbytes);
    if (nm) memcpy(merges, pm, nm * sizeof(int));
    if (meta[3]) memcpy(special, ps, (size_t)meta[3] * sizeof(int));
    return retrlm__tok_build(tok, (int)meta[1], off, bytes, (int)meta[2], merges, (int)meta[3],
                             special, src);
}

RETRLM_API retrlm_result retrlm_tokenizer_load_memory(retrlm_tokenizer *tok, const void *data,
                                                      size_t size) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(tok);
    memset(tok, 0, sizeof *tok);
    if ((r = retrlm_reader_open_memory(&rd, data, size, "tokenizer", 0)) != RETRLM_OK) return r;
    r = retrlm__tok_read(tok, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_tokenizer_save(const retrlm_tokenizer *tok, const char *path) {
    retrlm_writer w;
    uint64_t *off64 = NULL;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__tok_writer(tok, &w, &off64);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    RETRLM_FREE(off64);
    return r;
}

RETRLM_API retrlm_result retrlm_tokenizer_load(retrlm_tokenizer *tok, const char *path) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(tok && path);
    memset(tok, 0, sizeof *tok);
    if ((r = retrlm_reader_open(&rd, path, "tokenizer", 0)) != RETRLM_OK) return r;
    r = retrlm__tok_read(tok, &rd);
    retrlm_reader_close(&rd);
    return r;
}
#endif

// ---- training ------------------------------------------------------------------------------
// 1. count pre-tokens ("words") over the corpus, chunks in parallel, merged in chunk order;
// 2. every word is a sequence of symbols (byte ids 0..255 first); pair counts and, per pair,
//    the words that contain it; a max-heap of (count, pair) with lazy updates;
// 3. repeat: pop the most frequent pair, rewrite only the words that contain it, adjust the
//    counts of the pairs those words had and have, push the pairs that grew.

typedef struct retrlm__word {
    size_t off;    // of its bytes in the map's arena (symbols, after counting)
    uint32_t len;  // bytes (symbols)
    int64_t count; // occurrences in the corpus
    uint64_t hash;
} retrlm__word;

// bytes -> count map of pre-tokens
typedef struct retrlm__wmap {
    retrlm__buf arena; // the words' bytes
    retrlm__buf words; // retrlm__word (n)
    uint32_t *slots;   // (cap) word index + 1; 0 empty
    size_t cap, n;     // n words
} retrlm__wmap;

static void retrlm__wmap_free(retrlm__wmap *m) {
    RETRLM_FREE(m->arena.p);
    RETRLM_FREE(m->words.p);
    RETRLM_FREE(m->slots);
    memset(m, 0, sizeof *m);
}

// count occurrences of s[0..n) (hash h); 0 on OOM or more than 2^32 - 2 words
// The entry of the n bytes s (hash h), or NULL
static retrlm__word *retrlm__wmap_find(const retrlm__wmap *m, const unsigned char *s, size_t n, uint64_t h) {
    retrlm__word *w = (retrlm__word *)m->words.p;
    size_t i;
    if (!m->cap) return NULL;
    for (i = (size_t)h & (m->cap - 1); m->slots[i]; i = (i + 1) & (m->cap - 1)) {
        retrlm__word *x = &w[m->slots[i] - 1];
        if (x->hash == h && x->len == n && !memcmp(m->arena.p + x->off, s, n)) return x;
    }
    return NULL;
}

static int retrlm__wmap_add(retrlm__wmap *m, const unsigned char *s, size_t n, uint64_t h,
                            int64_t count) {
    retrlm__word *w = (retrlm__word *)m->words.p, nw, *x = retrlm__wmap_find(m, s, n, h);
    size_t i;
    if (x) {
        x->count += count;
        return 1;
    }
    if (2 * (m->n + 1) > m->cap) { // grow and rehash at half load
        size_t cap = m->cap ? 2 * m->cap : 1024, k;
        uint32_t *slots;
        if (m->n >= 0xFFFFFFF0u || !(slots = (uint32_t *)retrlm__calloc(cap, sizeof(uint32_t))))
            return 0;
        for (k = 0; k < m->n; k++) {
            for (i = (size_t)w[k].hash & (cap - 1); slots[i];) i = (i + 1) & (cap - 1);
            slots[i] = (uint32_t)k + 1;
        }
        RETRLM_FREE(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    if (n > 0xFFFFFFFFu) return 0;
    nw.off = m->arena.n;
    nw.len = (uint32_t)n;
    nw.count = count;
    nw.hash = h;
    if (!retrlm__buf_push(&m->arena, s, n) || !retrlm__buf_push(&m->words, &nw, sizeof nw))
        return 0;
    for (i = (size_t)h & (m->cap - 1); m->slots[i];) i = (i + 1) & (m->cap - 1);
    m->slots[i] = (uint32_t)m->n + 1;
    m->n++;
    return 1;
}

static int retrlm__wmap_count_plain(retrlm__wmap *m, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t len = retrlm__pretoken(s + i, n - i);
        if (!retrlm__wmap_add(m, s + i, len, retrlm__hash_bytes(s + i, len), 1)) return 0;
        i += len;
    }
    return 1;
}

// counts the pre-tokens of s[0..n), leaving out the special tokens' text (sp, nsp)
static int retrlm__wmap_count_text(retrlm__wmap *m, const unsigned char *s, size_t n,
                                   const char *const *sp, int nsp) {
    size_t i, seg = 0;
    int k;
    for (i = 0; nsp && i < n; i++)
        for (k = 0; k < nsp; k++) {
            size_t len = strlen(sp[k]);
            if (s[i] == (unsigned char)sp[k][0] && len <= n - i && !memcmp(s + i, sp[k], len)) {
                if (!retrlm__wmap_count_plain(m, s + seg, i - seg)) return 0;
                i += len - 1;
                seg = i + 1;
                break;
            }
        }
    return retrlm__wmap_count_plain(m, s + seg, n - seg);
}

#define RETRLM__CHUNK (1u << 20) // bytes of text a counting task takes

// Counts the pre-tokens of texts (n) into m. Texts are cut into pieces of about RETRLM__CHUNK
// bytes at safe cuts; pieces are counted in parallel into maps merged in piece order, so the
// result does not depend on the thread count.
static retrlm_result retrlm__count_texts(retrlm__wmap *m, const retrlm__span *texts, size_t n,
                                         const char *const *specials, int nsp) {
    retrlm__buf pieces = {0, 0, 0}, chunk_start = {0, 0, 0};
    retrlm__wmap *maps = NULL;
    retrlm__span *pc;
    size_t k, n_pieces, n_chunks, acc = 0;
    int c, nc;
    retrlm_result r = RETRLM_OK;
    for (k = 0; k < n; k++) {
        const unsigned char *s = texts[k].p;
        size_t len = texts[k].n, at = 0;
        while (len - at > RETRLM__CHUNK) {
            size_t cut = at + RETRLM__CHUNK;
            while (cut < len && !retrlm__safe_cut(s, cut)) cut++;
            if (cut >= len) break;
            {
                retrlm__span sp;
                sp.p = s + at;
                sp.n = cut - at;
                if (!retrlm__buf_push(&pieces, &sp, sizeof sp)) goto nomem;
            }
            at = cut;
        }
        {
            retrlm__span sp;
            sp.p = s + at;
            sp.n = len - at;
            if (!retrlm__buf_push(&pieces, &sp, sizeof sp)) goto nomem;
        }
    }
    pc = (retrlm__span *)pieces.p;
    n_pieces = pieces.n / sizeof(retrlm__span);
    // chunks: runs of consecutive pieces of about RETRLM__CHUNK bytes together
    for (k = 0; k < n_pieces; k++) {
        if (k == 0 || acc >= RETRLM__CHUNK) {
            if (!retrlm__buf_push(&chunk_start, &k, sizeof k)) goto nomem;
            acc = 0;
        }
        acc += pc[k].n + 64;
    }
    if (!retrlm__buf_push(&chunk_start, &n_pieces, sizeof n_pieces)) goto nomem;
    n_chunks = chunk_start.n / sizeof(size_t) - 1;
    if (n_chunks > (size_t)INT_MAX) goto nomem;
    nc = (int)n_chunks;
    maps = (retrlm__wmap *)retrlm__calloc(n_chunks, sizeof(retrlm__wmap));
    if (!maps) goto nomem;
    RETRLM__PARALLEL_FOR
    for (c = 0; c < nc; c++) {
        const size_t *cs = (const size_t *)chunk_start.p;
        size_t j;
        for (j = cs[c]; j < cs[c + 1]; j++)
            if (!retrlm__wmap_count_text(&maps[c], pc[j].p, pc[j].n, specials, nsp)) {
                maps[c].n = (size_t)-1; // failed: checked below
                break;
            }
    }
    for (c = 0; c < nc; c++) {
        const retrlm__word *w = (const retrlm__word *)maps[c].words.p;
        if (maps[c].n == (size_t)-1) goto nomem;
        for (k = 0; k < maps[c].n; k++)
            if (!retrlm__wmap_add(m, maps[c].arena.p + w[k].off, w[k].len, w[k].hash, w[k].count))
                goto nomem;
    }
    goto done;
nomem:
    r = retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer train: counting pre-tokens");
done:
    if (maps)
        for (c = 0; c < (int)n_chunks; c++) {
            maps[c].n = 0;
            retrlm__wmap_free(&maps[c]);
        }
    RETRLM_FREE(maps);
    RETRLM_FREE(pieces.p);
    RETRLM_FREE(chunk_start.p);
    return r;
}

// BPE training's queue of pairs: a min-heap (core) keyed by -count, ties by (a, b) ascending,
// so the most frequent pair comes first, then the smaller a, then the smaller b (ids >= 0)
static int retrlm__pq_push(retrlm__buf *h, int64_t count, int a, int b) {
    size_t n = h->n / sizeof(retrlm__heap_item);
    const int64_t ab = (int64_t)a << 32 | (int64_t)(uint32_t)b;
    if (!retrlm__buf_reserve(h, sizeof(retrlm__heap_item))) return 0;
    retrlm__heap_push((retrlm__heap_item *)h->p, &n, -count, ab);
    h->n += sizeof(retrlm__heap_item);
    return 1;
}

static void retrlm__pq_pop(retrlm__buf *h, int64_t *count, int *a, int *b) {
    size_t n = h->n / sizeof(retrlm__heap_item);
    retrlm__heap_item top = retrlm__heap_pop((retrlm__heap_item *)h->p, &n);
    h->n -= sizeof(retrlm__heap_item);
    *count = -top.key, *a = (int)(top.tie >> 32), *b = (int)(uint32_t)top.tie;
}

// pair table while training: (a, b) -> pair index; counts and word lists by index
typedef struct retrlm__pairs {
    uint32_t *slots;  // (cap) pair index + 1
    size_t cap, n;    // n pairs
    int *ab;          // (n_cap, 2)
    int64_t *count;   // (n_cap)
    int **where;      // (n_cap) stb_ds arrays of word indices (may repeat or be stale)
    size_t n_cap;
} retrlm__pairs;

static void retrlm__pairs_free(retrlm__pairs *p) {
    size_t i;
    for (i = 0; i < p->n; i++) stbds_arrfree(p->where[i]);
    RETRLM_FREE(p->slots);
    RETRLM_FREE(p->ab);
    RETRLM_FREE(p->count);
    RETRLM_FREE(p->where);
    memset(p, 0, sizeof *p);
}

// index of pair (a, b), created with count 0 if absent; -1 on OOM
static long retrlm__pairs_get(retrlm__pairs *p, int a, int b) {
    uint64_t h = retrlm__hash_pair(a, b);
    size_t i;
    if (p->cap)
        for (i = (size_t)h & (p->cap - 1); p->slots[i]; i = (i + 1) & (p->cap - 1)) {
            size_t k = p->slots[i] - 1;
            if (p->ab[2 * k] == a && p->ab[2 * k + 1] == b) return (long)k;
        }
    if (p->n >= 0x7FFFFFF0u) return -1;
    if (p->n == p->n_cap) {
        size_t nc = p->n_cap ? 2 * p->n_cap : 4096;
        int *ab = (int *)retrlm__realloc(p->ab, nc, 2 * sizeof(int));
        int64_t *cnt;
        int **wh;
        if (!ab) return -1;
        p->ab = ab;
        if (!(cnt = (int64_t *)retrlm__realloc(p->count, nc, sizeof(int64_t)))) return -1;
        p->count = cnt;
        if (!(wh = (int **)retrlm__realloc(p->where, nc, sizeof(int *)))) return -1;
        p->where = wh;
        p->n_cap = nc;
    }
    if (2 * (p->n + 1) > p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8192, k;
        uint32_t *slots = (uint32_t *)retrlm__calloc(cap, sizeof(uint32_t));
        if (!slots) return -1;
        for (k = 0; k < p->n; k++) {
            for (i = (size_t)retrlm__hash_pair(p->ab[2 * k], p->ab[2 * k + 1]) & (cap - 1);
                 slots[i];)
                i = (i + 1) & (cap - 1);
            slots[i] = (uint32_t)k + 1;
        }
        RETRLM_FREE(p->slots);
        p->slots = slots;
        p->cap = cap;
    }
    for (i = (size_t)h & (p->cap - 1); p->slots[i];) i = (i + 1) & (p->cap - 1);
    p->slots[i] = (uint32_t)p->n + 1;
    p->ab[2 * p->n] = a;
    p->ab[2 * p->n + 1] = b;
    p->count[p->n] = 0;
    p->where[p->n] = NULL;
    return (long)p->n++;
}

// existing pair index or -1
static long retrlm__pairs_find(const retrlm__pairs *p, int a, int b) {
    size_t i;
    if (!p->cap) return -1;
    for (i = (size_t)retrlm__hash_pair(a, b) & (p->cap - 1); p->slots[i];
         i = (i + 1) & (p->cap - 1)) {
        size_t k = p->slots[i] - 1;
        if (p->ab[2 * k] == a && p->ab[2 * k + 1] == b) return (long)k;
    }
    return -1;
}

// adds word w to pair k's word list unless it ends with w; 0 when memory runs out
static int retrlm__where_add(retrlm__pairs *p, long k, int w) {
    int *arr = p->where[k];
    if (stbds_arrlen(arr) && arr[stbds_arrlen(arr) - 1] == w) return 1;
    if (!RETRLM__ARR_RESERVE(p->where[k], 1)) return 0;
    stbds_arrput(p->where[k], w);
    return 1;
}

// grown (a flag a pair, the new ones 0) and touched (an int a pair) made room for cap pairs
// (more than *n); 0 when memory runs out (both stay valid)
static int retrlm__bpe_marks(unsigned char **grown, int **touched, size_t *n, size_t cap) {
    unsigned char *g = (unsigned char *)retrlm__realloc(*grown, cap, 1);
    int *t;
    if (!g) return 0;
    *grown = g;
    if (!(t = (int *)retrlm__realloc(*touched, cap, sizeof(int)))) return 0;
    *touched = t;
    memset(g + *n, 0, cap - *n);
    *n = cap;
    return 1;
}

// The merge loop over counted words m. On success the token table (bytes by id), merges and
// the number of tokens are in tokens/merges (off: size_t (n + 1), bytes).
static retrlm_result retrlm__bpe_train(const retrlm__wmap *m, int target, int64_t min_freq,
                                       retrlm_progress_fn progress, void *user, retrlm__buf *off,
                                       retrlm__buf *bytes, retrlm__buf *merges, int *n_tokens) {
    const retrlm__word *words = (const retrlm__word *)m->words.p;
    size_t nw = m->n, k, total = 0;
    int *sym = NULL, *wlen = NULL, *mark = NULL, *touched = NULL, n_touched, n_tok = 256, step = 0;
    size_t *woff = NULL;
    unsigned char *grown = NULL; // (pairs) 1 while listed in touched
    size_t grown_cap = 0;
    retrlm__pairs pairs;
    retrlm__buf heap = {0, 0, 0};
    retrlm__wmap vocab; // token bytes -> id (count holds the id)
    retrlm_result r = RETRLM_OK;
    memset(&pairs, 0, sizeof pairs);
    memset(&vocab, 0, sizeof vocab);
    if (nw > (size_t)INT_MAX)
        return retrlm__fail(RETRLM_ERR_RANGE, "tokenizer train: too many words");
    for (k = 0; k < nw; k++) total += words[k].len;
    sym = (int *)retrlm__alloc(total, sizeof(int));
    woff = (size_t *)retrlm__alloc(nw, sizeof(size_t));
    wlen = (int *)retrlm__alloc(nw, sizeof(int));
    mark = (int *)retrlm__alloc(nw, sizeof(int));
    if (!sym || !woff || !wlen || !mark) goto nomem;
    total = 0;
    for (k = 0; k < nw; k++) {
        uint32_t j;
        woff[k] = total;
        wlen[k] = (int)words[k].len;
        mark[k] = -1;
        for (j = 0; j < words[k].len; j++) sym[total + j] = m->arena.p[words[k].off + j];
        total += words[k].len;
    }
    // tokens 0..255: the bytes
    if (!retrlm__buf_push(off, NULL, sizeof(size_t))) goto nomem;
    for (k = 0; k < 256; k++) {
        unsigned char b = (unsigned char)k;
        size_t o = k + 1;
        if (!retrlm__buf_push(bytes, &b, 1) || !retrlm__buf_push(off, &o, sizeof o) ||
            !retrlm__wmap_add(&vocab, &b, 1, retrlm__hash_bytes(&b, 1), (int64_t)k))
            goto nomem;
    }
    // initial pair counts, word lists in word order
    for (k = 0; k < nw; k++) {
        int *s = sym + woff[k], j;
        for (j = 0; j + 1 < wlen[k]; j++) {
            long pi = retrlm__pairs_get(&pairs, s[j], s[j + 1]);
            if (pi < 0) goto nomem;
            pairs.count[pi] += words[k].count;
            if (!retrlm__where_add(&pairs, pi, (int)k)) goto nomem;
        }
    }
    for (k = 0; k < pairs.n; k++)
        if (!retrlm__pq_push(&heap, pairs.count[k], pairs.ab[2 * k], pairs.ab[2 * k + 1]))
            goto nomem;
    while (n_tok < target && heap.n) {
        int64_t count;
        long pi, j;
        int a, b, z, mm[4], *wl;
        size_t la, lb, nbytes;
        uint64_t h;
        retrlm__pq_pop(&heap, &count, &a, &b);
        pi = retrlm__pairs_find(&pairs, a, b);
        if (pi < 0 || pairs.count[pi] <= 0) continue;
        if (pairs.count[pi] != count) { // stale: requeue at its current count
            if (!retrlm__pq_push(&heap, pairs.count[pi], a, b)) goto nomem;
            continue;
        }
        if (count < min_freq) break;
        // the new token's bytes: a's then b's (an existing token with these bytes is reused)
        la = ((size_t *)off->p)[a + 1] - ((size_t *)off->p)[a];
        lb = ((size_t *)off->p)[b + 1] - ((size_t *)off->p)[b];
        nbytes = bytes->n;
        if (!retrlm__buf_push(bytes, NULL, la + lb)) goto nomem;
        memcpy(bytes->p + nbytes, bytes->p + ((size_t *)off->p)[a], la);
        memcpy(bytes->p + nbytes + la, bytes->p + ((size_t *)off->p)[b], lb);
        h = retrlm__hash_bytes(bytes->p + nbytes, la + lb);
        {
            const retrlm__word *x = retrlm__wmap_find(&vocab, bytes->p + nbytes, la + lb, h);
            z = x ? (int)x->count : -1;
        }
        if (z >= 0) bytes->n = nbytes;
        else {
            size_t o = bytes->n;
            z = n_tok++;
            if (!retrlm__buf_push(off, &o, sizeof o) ||
                !retrlm__wmap_add(&vocab, bytes->p + nbytes, la + lb, h, (int64_t)z))
                goto nomem;
        }
        mm[0] = a, mm[1] = b, mm[2] = z, mm[3] = step;
        if (!retrlm__buf_push(merges, mm, sizeof mm)) goto nomem;
        // rewrite the words that hold (a, b)
        if (pairs.n > grown_cap && !retrlm__bpe_marks(&grown, &touched, &grown_cap, pairs.n * 2)) goto nomem;
        n_touched = 0;
        wl = pairs.where[pi];
        for (j = 0; j < (long)stbds_arrlen(wl); j++) {
            int w = wl[j], q, o, hit = 0;
            int *s = sym + woff[w];
            int64_t c = words[w].count;
            if (mark[w] == step) continue;
            mark[w] = step;
            for (q = 0; q + 1 < wlen[w] && !hit; q++) hit = s[q] == a && s[q + 1] == b;
            if (!hit) continue;
            for (q = 0; q + 1 < wlen[w]; q++)
                pairs.count[retrlm__pairs_find(&pairs, s[q], s[q + 1])] -= c;
            for (q = 0, o = 0; q < wlen[w]; o++) {
                if (q + 1 < wlen[w] && s[q] == a && s[q + 1] == b) s[o] = z, q += 2;
                else s[o] = s[q++];
            }
            wlen[w] = o;
            for (q = 0; q + 1 < wlen[w]; q++) {
                long p2 = retrlm__pairs_get(&pairs, s[q], s[q + 1]);
                if (p2 < 0) goto nomem;
                wl = pairs.where[pi]; // the pair arrays may have moved
                pairs.count[p2] += c;
                if (s[q] == z || s[q + 1] == z) {
                    if (!retrlm__where_add(&pairs, p2, w)) goto nomem;
                    if ((size_t)p2 >= grown_cap && !retrlm__bpe_marks(&grown, &touched, &grown_cap, (size_t)p2 * 2 + 2))
                        goto nomem;
                    if (!grown[p2]) grown[p2] = 1, touched[n_touched++] = (int)p2;
                }
            }
            wl = pairs.where[pi];
        }
        for (j = 0; j < n_touched; j++) {
            int t = touched[j];
            grown[t] = 0;
            if (pairs.count[t] > 0 && !retrlm__pq_push(&heap, pairs.count[t], pairs.ab[2 * t],
                                                       pairs.ab[2 * t + 1]))
                goto nomem;
        }
        stbds_arrfree(pairs.where[pi]);
        step++;
        if (progress && step % 64 == 0 &&
            (r = retrlm__progress(progress, user, "bpe merge", n_tok, target)) != RETRLM_OK)
            goto done;
    }
    *n_tokens = n_tok;
    goto done;
nomem:
    r = retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer train: merges");
done:
    retrlm__pairs_free(&pairs);
    retrlm__wmap_free(&vocab);
    RETRLM_FREE(heap.p);
    RETRLM_FREE(sym);
    RETRLM_FREE(woff);
    RETRLM_FREE(wlen);
    RETRLM_FREE(mark);
    RETRLM_FREE(grown);
    RETRLM_FREE(touched);
    return r;
}

#define RETRLM__STREAM_BATCH (16u << 20) // bytes of streamed documents counted together

RETRLM_API retrlm_result retrlm_tokenizer_train(retrlm_tokenizer *tok,
                                                const retrlm_tokenizer_train_config *cfg,
                                                const char *const *texts, const size_t *lens,
                                                int n_texts, retrlm_text_fn next, void *user) {
    retrlm_tokenizer_train_config c;
    retrlm__wmap words;
    retrlm__buf spans = {0, 0, 0}, batch = {0, 0, 0}, doc_end = {0, 0, 0};
    retrlm__buf off = {0, 0, 0}, bytes = {0, 0, 0}, merges = {0, 0, 0}, special = {0, 0, 0};
    retrlm_result r = RETRLM_OK;
    int i, n_tokens = 0;
    double done_bytes = 0;
    RETRLM_ASSERT(tok && (texts || next || !n_texts) && n_texts >= 0);
    memset(tok, 0, sizeof *tok);
    memset(&words, 0, sizeof words);
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (!c.vocab_size) c.vocab_size = 8192;
    if (!c.min_frequency) c.min_frequency = 2;
    if (c.n_special < 0 || (c.n_special && !c.special_tokens) || c.min_frequency < 1 ||
        c.vocab_size < 256 + c.n_special || c.vocab_size > (1 << 30))
        return retrlm__fail(RETRLM_ERR_ARG, "tokenizer train: vocab_size %d must hold the 256 "
                            "bytes and %d specials; min_frequency %d >= 1", c.vocab_size,
                            c.n_special, c.min_frequency);
    for (i = 0; i < c.n_special; i++)
        if (!c.special_tokens[i] || !c.special_tokens[i][0])
            return retrlm__fail(RETRLM_ERR_ARG, "tokenizer train: special token %d is empty", i);
    // 1. count pre-tokens
    if (texts) {
        for (i = 0; i < n_texts; i++) {
            retrlm__span sp;
            sp.p = (const unsigned char *)texts[i];
            sp.n = lens ? lens[i] : strlen(texts[i]);
            if (!retrlm__buf_push(&spans, &sp, sizeof sp)) goto nomem;
        }
        r = retrlm__count_texts(&words, (const retrlm__span *)spans.p, (size_t)n_texts,
                                c.special_tokens, c.n_special);
        if (r) goto done;
        for (i = 0; i < n_texts; i++) done_bytes += (double)((retrlm__span *)spans.p)[i].n;
        r = retrlm__progress(c.progress, c.progress_user, "bpe count", done_bytes, done_bytes);
        if (r) goto done;
    } else if (next) {
        int more = 1;
        while (more) {
            const char *t = NULL;
            size_t n = 0, k, nd, prev = 0;
            more = next(user, &t, &n);
            if (more < 0) {
                r = retrlm__fail(RETRLM_ERR_IO, "tokenizer train: the text callback failed");
                goto done;
            }
            if (more && n) {
                if (!retrlm__buf_push(&batch, t, n) ||
                    !retrlm__buf_push(&doc_end, &batch.n, sizeof batch.n))
                    goto nomem;
            }
            if (batch.n && (!more || batch.n >= RETRLM__STREAM_BATCH)) {
                nd = doc_end.n / sizeof(size_t);
                spans.n = 0;
                for (k = 0; k < nd; k++) {
                    retrlm__span sp;
                    sp.p = batch.p + prev;
                    sp.n = ((size_t *)doc_end.p)[k] - prev;
                    prev = ((size_t *)doc_end.p)[k];
                    if (!retrlm__buf_push(&spans, &sp, sizeof sp)) goto nomem;
                }
                if ((r = retrlm__count_texts(&words, (const retrlm__span *)spans.p, nd,
                                            c.special_tokens, c.n_special)) != RETRLM_OK)
                    goto done;
                done_bytes += (double)batch.n;
                batch.n = doc_end.n = 0;
                if ((r = retrlm__progress(c.progress, c.progress_user, "bpe count", done_bytes, 0)))
                    goto done;
            }
        }
    }
    // 2. merges
    r = retrlm__bpe_train(&words, c.vocab_size - c.n_special, c.min_frequency, c.progress,
                          c.progress_user, &off, &bytes, &merges, &n_tokens);
    if (r) goto done;
    // 3. specials last
    for (i = 0; i < c.n_special; i++) {
        int id = n_tokens + i;
        size_t o;
        if (!retrlm__buf_push(&bytes, c.special_tokens[i], strlen(c.special_tokens[i]))) goto nomem;
        o = bytes.n;
        if (!retrlm__buf_push(&off, &o, sizeof o) || !retrlm__buf_push_int(&special, id))
            goto nomem;
    }
    tok->n_vocab = n_tokens + c.n_special;
    tok->tok_off_ = (size_t *)off.p;
    tok->tok_bytes_ = bytes.p;
    if (!tok->tok_bytes_) tok->tok_bytes_ = (unsigned char *)retrlm__alloc(0, 1);
    off.p = bytes.p = NULL;
    r = retrlm__tok_finish(tok, &merges, &special, "tokenizer train");
    goto done;
nomem:
    r = retrlm__fail(RETRLM_ERR_NOMEM, "tokenizer train");
done:
    if (r) retrlm_tokenizer_free(tok);
    retrlm__wmap_free(&words);
    RETRLM_FREE(spans.p);
    RETRLM_FREE(batch.p);
    RETRLM_FREE(doc_end.p);
    RETRLM_FREE(off.p);
    RETRLM_FREE(bytes.p);
    RETRLM_FREE(merges.p);
    RETRLM_FREE(special.p);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_tokenizer_train_file(retrlm_tokenizer *tok,
                                                     const retrlm_tokenizer_train_config *cfg,
                                                     const char *path) {
    char *d = NULL;
    size_t n;
    retrlm_result r;
    const char *texts[1];
    RETRLM_ASSERT(tok && path);
    memset(tok, 0, sizeof *tok);
    if ((r = retrlm__read_file(path, &d, &n)) != RETRLM_OK) return r;
    texts[0] = d;
    r = retrlm_tokenizer_train(tok, cfg, texts, &n, 1, NULL, NULL);
    RETRLM_FREE(d);
    return r;
}
#endif
