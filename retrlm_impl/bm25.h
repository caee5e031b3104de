/* ---- bm25: inverted index with BM25 ranking -----------------------------------------------
   Documents (a user id and UTF-8 text) are added, then committed into a compact index: a
   sorted term dictionary, and per term its postings (document-id gaps and term frequencies,
   Rice-coded in blocks of 128, each block headed by its last document and a bound of its best
   score).
   Scoring is BM25 with Lucene's idf:
       score(d, q) = sum over distinct query terms t in d of
                     qtf(t) * idf(t) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))
       idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
   with N the documents, |d| the terms of d after analysis and avgdl their mean (Lucene 8 drops
   the constant factor k1 + 1, which changes no ranking). Search is document-at-a-time over
   windows of blocks with block-max MaxScore pruning; it returns exactly the k best documents
   that scoring every document would (scores bit-identical), best first, ties by ascending id.

   Updates: add and delete work on any index, fresh or loaded. They are buffered (an in-memory
   segment of analysed documents plus a deletion set) and become visible at retrlm_bm25_commit,
   which merges them into the compact index without analysing any text again; save commits
   first. Statistics (N, avgdl, df) always describe exactly the committed documents, so an index
   grown by updates ranks exactly like a fresh build of the same documents in the same order.
   Document ids are any int64 values, unique among the live documents. */

#define RETRLM_BM25_BLOCK 128     /* postings per compressed block */
#define RETRLM_BM25_EXHAUSTIVE 1  /* search flag: score every matching document (no pruning) */

/* Defaults. Documents of any length: k1 1.2, b 0.75, the standard of Lucene, Elasticsearch and
   SQLite FTS5 (on debpkg dev MRR@10 0.6477 against 0.6473 with 0.9 / 0.4; on collections of
   long documents 0.9 / 0.4 under-normalises length). Passages of a bounded length (a datastore's
   units, TRIME's segments, RPT's chunks): k1 0.9, b 0.4, Anserini's MS MARCO passage setting,
   which those callers take when their bm25 config leaves k1 or b 0. */
#define RETRLM_BM25_K1 1.2f
#define RETRLM_BM25_B 0.75f
#define RETRLM_BM25_PASSAGE_K1 0.9f
#define RETRLM_BM25_PASSAGE_B 0.4f

typedef struct retrlm_bm25_config {
    float k1;                        /* tf saturation, > 0; 0: RETRLM_BM25_K1 (1.2) */
    float b;                         /* length normalisation in [0, 1]; 0: RETRLM_BM25_B (0.75);
                                        < 0: really 0 */
    retrlm_analyzer_config analyzer; /* the text chain (default: Lucene's EnglishAnalyzer) */
} retrlm_bm25_config;

typedef struct retrlm_bm25 {
    float    k1, b;          /* BM25 parameters in use */
    int      n_docs;         /* committed (searchable) documents */
    int      n_terms;        /* distinct terms of the committed documents */
    uint64_t total_len;      /* terms in all committed documents */
    double   avgdl;          /* total_len / n_docs (1 when empty) */
    size_t   postings_bytes; /* compressed postings, block headers included */
    int      n_pending;      /* documents added since the last commit (not yet searchable) */
    int      n_pending_deletes; /* committed documents to delete at the next commit */
    retrlm_analyzer analyzer;   /* the analyzer of documents and queries */
    /* private: the committed index (heap, or in place in a loaded file) */
    const char          *term_text_;  /* term bytes, concatenated in sorted order */
    const uint32_t      *term_off_;   /* (n_terms + 1) offsets into term_text_ */
    const uint64_t      *post_off_;   /* (n_terms + 1) offsets into post_ */
    const uint32_t      *df_;         /* (n_terms) documents per term */
    const unsigned char *post_;       /* (postings_bytes) blocks */
    const uint32_t      *doc_len_;    /* (n_docs) terms per document */
    const int64_t       *doc_id_;     /* (n_docs) user id per internal document; NULL: 0..n-1 */
    const uint32_t      *id_order_;   /* (n_docs) internal documents sorted by user id, or NULL */
    uint32_t            *heap_len_;   /* (n_docs) doc_len_ widened from a file's u16, or NULL */
    uint64_t            *heap_off_;   /* (n_terms + 1) post_off_ widened from a file's u32, or NULL */
    uint32_t            *heap_df_;    /* (n_terms) df_ of a loaded file (read from the postings) */
    uint32_t            *heap_toff_;  /* (n_terms + 1) term_off_ of a loaded file (from lengths) */
    float               *norm_;       /* (n_docs) k1 (1 - b + b |d| / avgdl), heap */
    int                  owned_;      /* 1: the arrays above are heap allocations */
    int                  loaded_;     /* 1: reader_ holds them */
    retrlm_reader        reader_;     /* the loaded file */
    struct retrlm__bm25_pending *pending_; /* buffered updates, or NULL */
} retrlm_bm25;

RETRLM_API retrlm_result retrlm_bm25_init(retrlm_bm25 *bm, const retrlm_bm25_config *cfg);
RETRLM_API void retrlm_bm25_free(retrlm_bm25 *bm);
/* Buffers document id with len bytes of text (keeps its analysed terms, not the text).
   RETRLM_ERR_ARG if id is already live. */
RETRLM_API retrlm_result retrlm_bm25_add(retrlm_bm25 *bm, int64_t id, const char *text, size_t len);
/* The same for n documents: ids (n), texts (n), lens (n) or NULL for NUL-terminated texts.
   Analysis runs in parallel; the result equals n calls of retrlm_bm25_add. A batch with a bad
   or repeated id adds nothing; RETRLM_ERR_NOMEM keeps the documents before the one that failed,
   each whole, pending (n_pending counts them). */
RETRLM_API retrlm_result retrlm_bm25_add_batch(retrlm_bm25 *bm, int n, const int64_t *ids,
                                               const char *const *texts, const size_t *lens);
/* Deletes a live document (committed or pending); RETRLM_ERR_NOT_FOUND if there is none. */
RETRLM_API retrlm_result retrlm_bm25_delete(retrlm_bm25 *bm, int64_t id);
/* Merges pending adds and deletes into the index (documents keep their order, new ones go
   last). Costs one pass over the compressed postings; no text is analysed again. */
RETRLM_API retrlm_result retrlm_bm25_commit(retrlm_bm25 *bm);
/* The k best committed documents for query (len bytes): ids (k) and scores (k, or NULL), best
   first; *n_found (<= k) how many matched at least one query term. flags: 0 or
   RETRLM_BM25_EXHAUSTIVE. Safe to call from many threads at once. */
RETRLM_API retrlm_result retrlm_bm25_search(const retrlm_bm25 *bm, const char *query, size_t len,
                                            int k, int flags, int64_t *ids, float *scores,
                                            int *n_found);
/* n_queries queries in parallel: queries (n_queries), lens (n_queries) or NULL for
   NUL-terminated, ids (n_queries, k), scores (n_queries, k) or NULL, n_found (n_queries). */
RETRLM_API retrlm_result retrlm_bm25_search_batch(const retrlm_bm25 *bm, int n_queries,
                                                  const char *const *queries, const size_t *lens,
                                                  int k, int flags, int64_t *ids, float *scores,
                                                  int *n_found);
/* Documents containing the analysed term (exact bytes, e.g. "run" for "running"); 0 if none. */
RETRLM_API int retrlm_bm25_term_df(const retrlm_bm25 *bm, const char *term, size_t len);
/* 1 and its length in terms in *len (may be NULL) if id is a committed document, else 0. */
RETRLM_API int retrlm_bm25_doc_length(const retrlm_bm25 *bm, int64_t id, int *len);

/* Files: container kind "bm25". Save commits pending updates first. Load checks every array
   against the others (sorted terms, offsets, every block decoded, lengths, ids) before use and
   then uses the postings and term text in place (memory-mapped); what it builds in memory is
   about 16 bytes a term (offsets, df) and 8 a document (length, norm). load_memory borrows data
   until free when it is 64-byte aligned on a little-endian host and copies it otherwise. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_bm25_save(retrlm_bm25 *bm, const char *path);
RETRLM_API retrlm_result retrlm_bm25_load(retrlm_bm25 *bm, const char *path);
#endif
/* The file image into buf (cap bytes); *size its length; buf NULL: only *size. */
RETRLM_API retrlm_result retrlm_bm25_save_memory(retrlm_bm25 *bm, void *buf, size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_bm25_load_memory(retrlm_bm25 *bm, const void *data, size_t size);
