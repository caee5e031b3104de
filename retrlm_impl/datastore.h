/* ---- datastore: a corpus cut into retrieval units, with their text, tokens and BM25 index ---
   A unit is what retrieval returns and what retrieval-augmented inference prepends: a passage
   given as it is, or a chunk of chunk_tokens tokens of a longer document. Each unit keeps the
   id of the document it came from (so that text being scored can exclude its own document:
   leakage control), its exact text (the bytes its tokens decode to) and its token ids. Units
   are numbered 0..n_units-1 in the order they were added; the BM25 index uses those numbers as
   document ids. Build with add (any number of times), then commit; the datastore is read-only
   after that and may be searched from many threads. */

typedef struct retrlm_datastore_config {
    int                chunk_tokens; /* tokens per chunk for RETRLM_DATASTORE_CHUNK; default 64 */
    retrlm_bm25_config bm25;         /* the lexical index over the units' text; k1 or b 0:
                                        the passage setting, 0.9 / 0.4 (bm25.h), as units are
                                        mostly chunks; set them for long whole-document units */
} retrlm_datastore_config;

#define RETRLM_DATASTORE_CHUNK 1 /* add: cut the document into chunk_tokens-token units */
#define RETRLM_NO_DOC INT64_MIN  /* search: exclude no document */

typedef struct retrlm_datastore {
    int             chunk_tokens; /* in use */
    int             n_units;      /* committed units */
    const int64_t  *unit_doc;     /* (n_units) document id of each unit */
    const uint64_t *text_off;     /* (n_units + 1) byte offsets of each unit's text in text */
    const char     *text;         /* (text_off[n_units]) the units' text, concatenated */
    const uint64_t *tok_off;      /* (n_units + 1) offsets of each unit's tokens in tokens */
    const int      *tokens;       /* (tok_off[n_units]) the units' token ids */
    retrlm_bm25     bm25;         /* over the units' text; ids are unit numbers */
    retrlm_index    dense;        /* after retrlm_datastore_embed: unit embeddings, ids = units */
    const retrlm_encoder *encoder; /* borrowed by retrlm_datastore_embed: embeds dense queries */
    const retrlm_tokenizer *encoder_tok; /* borrowed: the encoder's tokenizer */
    /* private */
    int64_t  *doc_b_;             /* stb_ds growth arrays while building, NULL after commit */
    uint64_t *text_off_b_, *tok_off_b_;
    char     *text_b_;
    int      *tokens_b_;
    int       committed_;
    void     *owned_;             /* committed arrays (one block) when built here */
    retrlm_reader reader_;        /* the loaded file, when loaded */
} retrlm_datastore;

RETRLM_API retrlm_result retrlm_datastore_init(retrlm_datastore *ds, const retrlm_datastore_config *cfg);
RETRLM_API void retrlm_datastore_free(retrlm_datastore *ds);
/* Adds document doc_id (len bytes of text): tokenised with tok, then one unit, or with flags
   RETRLM_DATASTORE_CHUNK as many units of chunk_tokens tokens as it takes (the last may be
   shorter). ERR_ARG after commit. */
RETRLM_API retrlm_result retrlm_datastore_add(retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                              int64_t doc_id, const char *text, size_t len,
                                              int flags);
/* Freezes the units into flat arrays and builds the BM25 index over their text. */
RETRLM_API retrlm_result retrlm_datastore_commit(retrlm_datastore *ds);
/* retrlm_datastore_retrieve by BM25. */
RETRLM_API retrlm_result retrlm_datastore_search(const retrlm_datastore *ds, const char *query,
                                                 size_t len, int k, int64_t exclude_doc,
                                                 int *units, float *scores, int *n_found);
/* Dense retrieval: embeds every unit's text with the document side of enc (tokenised with
   enc_tok) into ds->dense; index_config NULL means flat f32, else its nlist / storage / ... are
   used (dim and metric are set here: inner product); IVF and SQ8 train on the embeddings.
   Calling it again (new weights: re-indexing, as strategies 2-4 do every T steps) rebuilds the
   index. enc and enc_tok stay borrowed for dense queries (retrlm_encoder_embed: searches may
   run on many threads at once, but not while enc trains). The dense index is not part of
   retrlm_datastore_save: save it with retrlm_index_save. progress: "encode", then the index's
   stages. */
RETRLM_API retrlm_result retrlm_datastore_embed(retrlm_datastore *ds, retrlm_encoder *enc,
                                                const retrlm_tokenizer *enc_tok,
                                                const retrlm_index_config *index_config,
                                                retrlm_progress_fn progress, void *user);
#ifndef RETRLM_NO_STDIO
/* Instead of embedding again: loads a dense index saved from ds->dense (retrlm_index_save after
   retrlm_datastore_embed) into ds->dense and borrows enc and enc_tok for queries, as embed
   does. ERR_FORMAT unless it holds one vector of enc->dim per unit, with ids 0..n_units-1. */
RETRLM_API retrlm_result retrlm_datastore_load_dense(retrlm_datastore *ds,
                                                     const retrlm_encoder *enc,
                                                     const retrlm_tokenizer *enc_tok,
                                                     const char *index_path);
#endif

/* How retrlm_datastore_retrieve ranks units:
     RETRLM_RETRIEVE_BM25     lexical (the default)
     RETRLM_RETRIEVE_DENSE    inner product of encoder embeddings (needs retrlm_datastore_embed)
     RETRLM_RETRIEVE_RRF      reciprocal-rank fusion of both: sum over lists of 1 / (rrf_k + rank)
     RETRLM_RETRIEVE_LINEAR   weight * dense + (1 - weight) * BM25, each min-max normalised over
                              its top `depth` (a unit missing from a list scores 0 there)
     RETRLM_RETRIEVE_RERANK   two stages: BM25's `depth` best units (of documents other than the
                              one excluded), ordered by the inner product of the query's
                              embedding with each unit's, embedded now by the encoder's document
                              side (ties keep BM25's order). It reads the encoder, never the dense
                              index, so it is never stale; the re-ranker a joint run with
                              rerank_bm25 trains (retrlm_joint_config). Units whose tokens equal
                              a better BM25 candidate's count once (the better is kept), and
                              bm25_weight > 0 adds that times the BM25 score to the inner product */
typedef enum retrlm_retrieve_mode {
    RETRLM_RETRIEVE_BM25 = 0,
    RETRLM_RETRIEVE_DENSE,
    RETRLM_RETRIEVE_RRF,
    RETRLM_RETRIEVE_LINEAR,
    RETRLM_RETRIEVE_RERANK
} retrlm_retrieve_mode;

typedef struct retrlm_retrieve_params {
    retrlm_retrieve_mode mode;
    int   depth;  /* hybrid: candidates taken from each list; RERANK: BM25's candidates;
                     default 100 (at least k) */
    int   rrf_k;  /* RRF constant; default 60 (Cormack et al., 2009) */
    float weight; /* LINEAR: weight of the dense score in [0, 1]; default 0.5 */
    int   nprobe; /* dense IVF: lists to scan, 0: the index's nprobe */
    float bm25_weight; /* RERANK: score = q . d + bm25_weight * BM25's score (a prior the dense
                          score corrects); default 0, the inner product alone */
} retrlm_retrieve_params;

/* Fuses two ranked lists, a (na ids best first, scores) and b, the way mode says (RRF or
   LINEAR, with a as the BM25 list for weight) into the k best: out_ids (k), out_scores (k) or
   NULL, ties by ascending id; returns how many were written. ERR-free: mode BM25 copies a,
   DENSE and RERANK copy b. */
RETRLM_API int retrlm_fuse(const retrlm_retrieve_params *p, const int64_t *a_ids,
                           const float *a_scores, int na, const int64_t *b_ids,
                           const float *b_scores, int nb, int k, int64_t *out_ids,
                           float *out_scores);

/* The k best units for query (len bytes) ranked as params says (NULL: BM25), skipping units of
   document exclude_doc (RETRLM_NO_DOC: none): units (k), scores (k) or NULL, *n_found (<= k). */
RETRLM_API retrlm_result retrlm_datastore_retrieve(const retrlm_datastore *ds,
                                                   const retrlm_retrieve_params *params,
                                                   const char *query, size_t len, int k,
                                                   int64_t exclude_doc, int *units,
                                                   float *scores, int *n_found);
/* Unit u's text (*len bytes, not NUL-terminated) and tokens (*n_tokens); borrowed from ds. */
RETRLM_API const char *retrlm_datastore_text(const retrlm_datastore *ds, int u, size_t *len);
RETRLM_API const int  *retrlm_datastore_tokens(const retrlm_datastore *ds, int u, int *n_tokens);

/* Files: container kind "datastore" (the BM25 index inside it, used in place). */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_save(const retrlm_datastore *ds, const char *path);
RETRLM_API retrlm_result retrlm_datastore_load(retrlm_datastore *ds, const char *path);
#endif
/* buf NULL: *size only. load_memory borrows data until free as retrlm_reader_open_memory does. */
RETRLM_API retrlm_result retrlm_datastore_save_memory(const retrlm_datastore *ds, void *buf,
                                                      size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_datastore_load_memory(retrlm_datastore *ds, const void *data,
                                                      size_t size);

/* ---- RETRO neighbours: what a RETRO model (retrlm_model_forward_retro) reads, computed once
   with a frozen retriever. A token stream is cut into chunks of m tokens (chunk c = tokens
   c*m .. c*m + m - 1; a last partial chunk gets no neighbours); each chunk's text (decoded with
   the LM's tokenizer) is the query, and each of its k neighbours is a retrieved unit's tokens
   followed by the units after it in the same document, len tokens in all: the chunk and its
   continuation, so that the model sees what comes next, not only what it has just read. The
   units' tokens are used as they are: build the datastore with the LM's tokenizer. Units of the
   documents a chunk's tokens come from are never neighbours (RETRO's leakage control). Chunks
   are independent: they are retrieved on all threads, with the same result for any count. */
typedef struct retrlm_retro_neighbours_config {
    int chunk;                       /* m; default 64 */
    int k;                           /* neighbours a chunk; default 2 */
    int len;                         /* r; default 2m */
    int unit_only;                   /* 1: a neighbour is the unit alone, no continuation */
    int depth;                       /* candidates retrieved before the leakage filter; default
                                        4k */
    float min_overlap;               /* 0: every candidate; else a candidate is a neighbour only
                                        if it holds at least this share of the chunk's distinct
                                        token bigrams (retrlm_retro_overlap): weak matches are left
                                        out, so the model reads no neighbour rather than a wrong
                                        one; the next candidates (up to depth) take their place */
    retrlm_retrieve_params retrieve; /* how units are ranked; zero: BM25 */
    retrlm_progress_fn progress;     /* stage "neighbours", done/total in chunks; may cancel */
    void *progress_user; /* passed to progress */
} retrlm_retro_neighbours_config;

typedef struct retrlm_retro_neighbours {
    int        chunk, k, len;  /* m, k, r */
    int64_t    n_chunks;       /* chunks with neighbours */
    const int *tokens;         /* (n_chunks, k, len) ids, -1 after a neighbour's end; a neighbour
                                  that starts with -1 is absent (fewer than k were found) */
    /* private */
    int          *owned_;
    retrlm_reader reader_;
} retrlm_retro_neighbours;

/* Neighbours for stream (n tokens) from ds's units. doc (n) or NULL: the document of each token
   of the stream, whose units are excluded (NULL: nothing excluded, as when the stream is text
   that ds does not hold). Like an _init, it starts from a zeroed nb: free a built one first. */
RETRLM_API retrlm_result retrlm_retro_neighbours_build(retrlm_retro_neighbours *nb,
                                                       const retrlm_datastore *ds,
                                                       const retrlm_tokenizer *tok,
                                                       const int *stream, size_t n,
                                                       const int64_t *doc,
                                                       const retrlm_retro_neighbours_config *cfg);
RETRLM_API void retrlm_retro_neighbours_free(retrlm_retro_neighbours *nb);
/* The share (0..1) of x's distinct token bigrams (x: m ids) that occur in y (up to len ids, ending
   at its first -1): 1 when y holds x, near 0 for unrelated text; 0 when x has no bigram (m < 2).
   The relevance test of min_overlap above; it needs no retrieval score, so it reads the same for
   any retriever. */
RETRLM_API float retrlm_retro_overlap(const int *x, int m, const int *y, int len);
/* The neighbours of chunk c: (k, len) ids. */
RETRLM_API const int *retrlm_retro_neighbours_chunk(const retrlm_retro_neighbours *nb,
                                                    int64_t c);
/* Files: container kind "neighbours" (sections "shape": m, k, r; "n_chunks"; "tokens"),
   saved beside the datastore; the loaded tokens are used in place from the file image. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_retro_neighbours_save(const retrlm_retro_neighbours *nb,
                                                      const char *path);
RETRLM_API retrlm_result retrlm_retro_neighbours_load(retrlm_retro_neighbours *nb,
                                                      const char *path);
#endif
RETRLM_API retrlm_result retrlm_retro_neighbours_save_memory(const retrlm_retro_neighbours *nb,
                                                             void *buf, size_t cap, size_t *size);
/* Borrows data until free as retrlm_reader_open_memory does. */
RETRLM_API retrlm_result retrlm_retro_neighbours_load_memory(retrlm_retro_neighbours *nb,
                                                             const void *data, size_t size);
