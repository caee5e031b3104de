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
    retrlm_bm25_config bm25;         /* the lexical index over the units' text */
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
/* The k best units for query (len bytes) by BM25, skipping units of document exclude_doc
   (RETRLM_NO_DOC: none): units (k), scores (k) or NULL, *n_found (<= k). */
RETRLM_API retrlm_result retrlm_datastore_search(const retrlm_datastore *ds, const char *query,
                                                 size_t len, int k, int64_t exclude_doc,
                                                 int *units, float *scores, int *n_found);
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
