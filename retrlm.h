/* retrlm.h - v0.1.0 - retrieval-based language models in one C99 header

   Assembled from retrlm_impl/ by `make retrlm.h`: edit the sources there, never this file.

   USAGE
     #define RETRLM_IMPLEMENTATION     before  #include "retrlm.h"  in ONE C or C++ file
                                       (make it the first include of that file: see POSIX);
     every other file just includes it. The implementation needs stb_ds.h (Debian: libstb-dev,
     /usr/include/stb) on the include path:
       cc -std=c99 -O2 -I/usr/include/stb app.c -lm -o app           one thread
       cc -std=c99 -O3 -fopenmp -I/usr/include/stb app.c -lm -o app  OpenMP; OMP_NUM_THREADS=2

   OPTIONS (define before the implementation include; none changes a struct or a prototype)
     RETRLM_STATIC          every function static; only together with RETRLM_IMPLEMENTATION
     RETRLM_API             linkage of public functions (default extern)
     RETRLM_ASSERT(x)       guards programmer misuse only, never data (default assert(x))
     RETRLM_MALLOC(n) RETRLM_REALLOC(p,n) RETRLM_FREE(p)     all three or none (default libc)
     RETRLM_NO_STDIO        no path-based load/save; the _memory variants stay
     RETRLM_NO_OPENMP       serial even under -fopenmp
     RETRLM_OPENMP_SIMD     `omp simd` hints in a -fopenmp-simd build (which has no _OPENMP)
     RETRLM_NO_STB_DS_IMPLEMENTATION   stb_ds.h is instantiated in another file of yours
                            (then its allocations use that file's STBDS_REALLOC, not RETRLM_*)

   CONTENTS (public sections below, in the order data flows through them)
     core      results and error detail, allocation, RNG, progress callback, timer
     kernels   dot, axpy, scale, softmax, log-softmax, log-sum-exp, top-k, matrix multiply
     io        the container file format: sections, CRC32, 64-byte alignment, atomic save, mmap
     analyzer  text -> terms: Unicode lower-casing, letter/digit tokens, stop words, Porter stemmer
     bm25      inverted index: compressed postings, BM25 top-k with block-max pruning, updates, files
     eval      retrieval metrics: MRR@k, nDCG@k, Recall@k against graded judgments

   CONVENTIONS
     - Every fallible call returns retrlm_result; RETRLM_OK is 0. After a failure,
       retrlm_last_error() gives this thread's detail message (file, section, offset, expected).
       Nothing aborts or prints on bad input.
     - You own every retrlm_* struct. x_init zeroes the object first, so x_free is always safe:
       on a zeroed, failed or already freed object it does nothing.
     - Inputs are copied unless the declaration says "borrows". Outputs go into your buffers;
       where a size depends on the data, passing NULL returns the size needed.
     - Dimensions are int, byte sizes and offsets size_t; sizes are overflow-checked.

   POSIX
     On POSIX systems the implementation uses open/fsync/rename/mmap/clock_gettime. It defines
     _POSIX_C_SOURCE itself when retrlm.h is the first include of the implementation file; if
     another system header comes first under -std=c99, compile with -D_POSIX_C_SOURCE=200809L.
     Without those declarations it still works: saves skip fsync, loads read instead of mapping.

   THREADS
     Functions taking a const object may run concurrently on it; mutating calls need exclusive
     access; there are no global mutable state and no locks. With OpenMP, kernels split work
     over independent outputs, so results do not depend on OMP_NUM_THREADS.

   FILES
     Everything is saved in one container format, little-endian on every host (see io below).

   LICENSE: MIT, at the end of this file.
*/
#if defined(RETRLM_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && \
    !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#ifndef RETRLM_H
#define RETRLM_H
#include <stddef.h> /* size_t */
#include <stdint.h> /* uint64_t, int64_t */

#define RETRLM_VERSION_MAJOR 0
#define RETRLM_VERSION_MINOR 1

#if defined(RETRLM_STATIC) && !defined(RETRLM_IMPLEMENTATION)
#error "RETRLM_STATIC needs RETRLM_IMPLEMENTATION in the same file"
#endif
#ifndef RETRLM_API
#if defined(RETRLM_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define RETRLM_API static __attribute__((unused))
#elif defined(RETRLM_STATIC)
#define RETRLM_API static
#else
#define RETRLM_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- retrlm_impl/core.h ---- */
/* ---- core: results, error detail, allocation, RNG, progress, timer ------------------------ */

/* Every fallible call returns one of these; RETRLM_OK is 0, every error is nonzero. */
#define RETRLM__RESULTS(X)                                                       \
    X(OK, "ok")                                                                  \
    X(ERR_NOMEM, "out of memory")                                                \
    X(ERR_ARG, "invalid argument")                                               \
    X(ERR_IO, "i/o error")                                                       \
    X(ERR_FORMAT, "bad file format")                                             \
    X(ERR_CORRUPT, "corrupt data (checksum or consistency check failed)")       \
    X(ERR_RANGE, "value out of range")                                           \
    X(ERR_NOT_FOUND, "not found")                                                \
    X(ERR_CANCELLED, "cancelled by the progress callback")                       \
    X(ERR_UNSUPPORTED, "not supported by this build or file version")
#define RETRLM__ENUM(name, msg) RETRLM_##name,
typedef enum retrlm_result { RETRLM__RESULTS(RETRLM__ENUM) RETRLM_RESULT_COUNT } retrlm_result;
#undef RETRLM__ENUM

RETRLM_API const char *retrlm_result_string(retrlm_result r); /* static text, never NULL */
/* The detail message of the last failure on the calling thread ("" if none): what a user needs
   to fix the input, e.g. "model.rlm: section 'wte': CRC mismatch". Valid until the next call
   into retrlm on this thread. Compilers without thread-local storage share one buffer. */
RETRLM_API const char *retrlm_last_error(void);

/* Memory the library hands out (e.g. retrlm_writer_save_memory) is freed with this. */
RETRLM_API void retrlm_free(void *p); /* NULL is fine */

/* ---- RNG: xoshiro256** seeded through splitmix64; the state is plain data, save it to resume */
typedef struct retrlm_rng {
    uint64_t s[4]; /* never all zero */
} retrlm_rng;

RETRLM_API void     retrlm_rng_seed(retrlm_rng *r, uint64_t seed); /* any seed, 0 included */
RETRLM_API uint64_t retrlm_rng_u64(retrlm_rng *r);                 /* uniform 64 bits */
RETRLM_API uint32_t retrlm_rng_u32(retrlm_rng *r);                 /* uniform 32 bits */
RETRLM_API uint64_t retrlm_rng_below(retrlm_rng *r, uint64_t n);   /* uniform in [0, n), n > 0, unbiased */
RETRLM_API float    retrlm_rng_float(retrlm_rng *r);               /* uniform in [0, 1), 24 bits */
RETRLM_API double   retrlm_rng_double(retrlm_rng *r);              /* uniform in [0, 1), 53 bits */
RETRLM_API float    retrlm_rng_normal(retrlm_rng *r);              /* standard normal (Box-Muller) */
RETRLM_API void     retrlm_rng_jump(retrlm_rng *r); /* advance 2^128 steps: independent streams */

/* ---- progress: long work (training, indexing, k-means) calls it now and then.
   stage: static text naming the work ("kmeans", "encode", ...); done/total in the stage's units
   (total 0 when unknown). Return nonzero to cancel: the call then returns RETRLM_ERR_CANCELLED
   and leaves its object as `free` accepts it. */
typedef int (*retrlm_progress_fn)(void *user, const char *stage, double done, double total);

/* Seconds from an arbitrary fixed point, monotonic where the system has such a clock. */
RETRLM_API double retrlm_time_seconds(void);
/* ---- retrlm_impl/kernels.h ---- */
/* ---- kernels: the hot loops every module shares -------------------------------------------
   Vectors are float arrays of n elements (n >= 0). With OpenMP the larger kernels split work
   over independent outputs, so each output is computed by one thread in a fixed order and
   results are identical for any OMP_NUM_THREADS. */

RETRLM_API float retrlm_dot(const float *a, const float *b, int n);       /* sum a[i]*b[i] */
RETRLM_API void  retrlm_axpy(float *y, float alpha, const float *x, int n); /* y += alpha*x */
RETRLM_API void  retrlm_scale(float *x, float alpha, int n);               /* x *= alpha */
/* out = softmax(x), max-subtracted; out may be x. If every x is -inf, out is uniform. */
RETRLM_API void  retrlm_softmax(float *out, const float *x, int n);
/* out = log softmax(x) = x - logsumexp(x); out may be x. */
RETRLM_API void  retrlm_log_softmax(float *out, const float *x, int n);
/* log(sum exp(x)), max-subtracted; -inf for n == 0 or when every x is -inf. */
RETRLM_API float retrlm_logsumexp(const float *x, int n);

/* ---- top-k: the k best (id, score) pairs of a stream, in caller buffers.
   Higher score is better (negate distances); ties go to the smaller id; NaN scores are never
   kept. A bounded heap: O(log k) per accepted push, O(1) per rejected one. */
typedef struct retrlm_topk {
    int      k;      /* capacity */
    int      n;      /* pairs held, <= k */
    int64_t *ids;    /* (k) borrowed; heap order until retrlm_topk_sort */
    float   *scores; /* (k) borrowed */
} retrlm_topk;

RETRLM_API void retrlm_topk_init(retrlm_topk *h, int k, int64_t *ids, float *scores); /* borrows */
RETRLM_API void retrlm_topk_push(retrlm_topk *h, int64_t id, float score);
/* Sorts best first (score descending, id ascending) and returns n. The heap is spent: init
   again before the next push. */
RETRLM_API int  retrlm_topk_sort(retrlm_topk *h);
/* The k best of scores[0..n) by index: ids (k), out_scores (k) may be NULL; returns how many
   were written, min(k, number of non-NaN scores). */
RETRLM_API int  retrlm_topk_select(const float *scores, int n, int k, int64_t *ids,
                                   float *out_scores);

/* ---- matrix multiply: C (M,N) = A·Bᵀ (+ bias), blocked, packed and register-tiled.
   Default layouts are the transformer's: A (M,K) row-major (activations), B (N,K) row-major
   (a weight stored (out, in)), bias (N) or NULL. Flags choose the other layouts the backward
   pass needs:
     RETRLM_MATMUL_A_KM        A is stored (K,M): C = Aᵀ·Bᵀ     (dW = doutᵀ · inp)
     RETRLM_MATMUL_B_KN        B is stored (K,N): C = A·B       (dinp = dout · W)
     RETRLM_MATMUL_ACCUMULATE  C += product instead of C = product
   Returns RETRLM_ERR_NOMEM if its packing buffers (about 0.5 MB a thread) cannot be had;
   M, N, K >= 0 and C must not overlap A, B or bias. */
#define RETRLM_MATMUL_A_KM 1
#define RETRLM_MATMUL_B_KN 2
#define RETRLM_MATMUL_ACCUMULATE 4
RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags);
/* ---- retrlm_impl/io.h ---- */
/* ---- io: the container file format every saved object uses --------------------------------
   A file is a 64-byte header, a table of named sections and their payloads:

     offset 0   header (64 bytes, little-endian fields)
                  magic "\x89RLM\r\n\x1a\n", u32 format version (1), u32 section count,
                  char kind[16] (what the file holds: "tokenizer", "bm25", ...),
                  u64 file size, u64 table offset (64), u32 CRC32 of header and table,
                  12 reserved zero bytes
     offset 64  section table, 64 bytes a section
                  char name[32] (NUL-padded), u64 payload offset, u64 payload bytes,
                  u32 CRC32 of the payload, u32 element type, 8 reserved zero bytes
     then       payloads in table order, each starting on a 64-byte boundary, zero padding
                between them, and the file ends where the last payload ends.

   Numbers are little-endian on every host (a big-endian host swaps on load and save), so the
   payloads of a file loaded on a little-endian host are used in place: memory-mapped, 64-byte
   aligned, ready to be read as arrays. Every field is checked before use: a truncated file or
   any single flipped byte gives RETRLM_ERR_FORMAT or RETRLM_ERR_CORRUPT with a detail naming
   the section, never a crash. Saving writes "<path>.tmp-<pid>", flushes it to disk (fsync)
   and renames it over path, so a crash never leaves a half-written file under the real name. */

typedef enum retrlm_dtype {
    RETRLM_DTYPE_U8 = 1, /* also raw bytes and UTF-8 text */
    RETRLM_DTYPE_I8,
    RETRLM_DTYPE_U16,
    RETRLM_DTYPE_I16,
    RETRLM_DTYPE_U32,
    RETRLM_DTYPE_I32,
    RETRLM_DTYPE_U64,
    RETRLM_DTYPE_I64,
    RETRLM_DTYPE_F32,
    RETRLM_DTYPE_F64,
    RETRLM_DTYPE_COUNT
} retrlm_dtype;

RETRLM_API size_t      retrlm_dtype_size(retrlm_dtype t);  /* bytes an element; 0 if invalid */
RETRLM_API const char *retrlm_dtype_name(retrlm_dtype t);  /* "f32", ...; "invalid" */

#define RETRLM_IO_FORMAT_VERSION 1
#define RETRLM_IO_KIND_MAX 15    /* characters in a kind */
#define RETRLM_IO_NAME_MAX 31    /* characters in a section name */

/* ---- writing: collect sections, then save them in one go */
typedef struct retrlm_writer {
    char kind[RETRLM_IO_KIND_MAX + 1];
    int  n_sections;
    /* private */
    int  cap_;
    struct retrlm__wsection *sections_; /* (cap_) */
} retrlm_writer;

/* kind: 1..15 printable ASCII characters, stored in the header for readers to check. */
RETRLM_API retrlm_result retrlm_writer_init(retrlm_writer *w, const char *kind);
/* Adds section `name` (1..31 printable ASCII, unique in the file) of count elements of type.
   Borrows data until retrlm_writer_save* or retrlm_writer_free; data may be NULL if count is 0. */
RETRLM_API retrlm_result retrlm_writer_add(retrlm_writer *w, const char *name, retrlm_dtype type,
                                           const void *data, size_t count);
/* The same, but copies the data now (for small sections built in local variables). */
RETRLM_API retrlm_result retrlm_writer_add_copy(retrlm_writer *w, const char *name,
                                                retrlm_dtype type, const void *data,
                                                size_t count);
#ifndef RETRLM_NO_STDIO
/* Atomic save: temporary file, fsync, rename over path. */
RETRLM_API retrlm_result retrlm_writer_save(const retrlm_writer *w, const char *path);
#endif
/* Writes the file image into buf (cap bytes); *size gets its length. buf NULL: only *size. */
RETRLM_API retrlm_result retrlm_writer_save_memory(const retrlm_writer *w, void *buf, size_t cap,
                                                   size_t *size);
RETRLM_API void retrlm_writer_free(retrlm_writer *w);

/* ---- reading: open, check everything, then look sections up by name */
#define RETRLM_READER_NO_MMAP 1   /* read the file into memory even when it is large */
#define RETRLM_READER_NO_VERIFY 2 /* skip the payload CRCs (header, table and layout still checked) */

typedef struct retrlm_reader {
    char     kind[RETRLM_IO_KIND_MAX + 1];
    uint32_t version;    /* format version of the file */
    int      n_sections;
    size_t   size;       /* bytes in the file */
    /* private */
    const unsigned char *base_; /* the file image: mapped, owned_ or borrowed */
    void    *owned_;            /* allocation behind base_, if any */
    int      mapped_;           /* base_ is an mmap of size bytes */
    char     source_[96];       /* path (shortened) or "<memory>", for messages */
} retrlm_reader;

typedef struct retrlm_section_info {
    char         name[RETRLM_IO_NAME_MAX + 1];
    retrlm_dtype type;
    size_t       count;  /* elements */
    size_t       bytes;
    size_t       offset; /* of the payload in the file */
} retrlm_section_info;

/* kind: the kind the caller expects, or NULL to accept any. flags: RETRLM_READER_*.
   On a little-endian host, files of 1 MiB and more are memory-mapped read-only. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_reader_open(retrlm_reader *r, const char *path, const char *kind,
                                            int flags);
#endif
/* Borrows data until retrlm_reader_close when it is 64-byte aligned on a little-endian host;
   otherwise copies it. */
RETRLM_API retrlm_result retrlm_reader_open_memory(retrlm_reader *r, const void *data,
                                                   size_t size, const char *kind, int flags);
RETRLM_API retrlm_result retrlm_reader_section(const retrlm_reader *r, int i,
                                               retrlm_section_info *info); /* 0 <= i < n_sections */
/* Finds section name of the given type: *data points into the file image (64-byte aligned,
   host byte order, valid until close; NULL when empty), *count its elements (either may be
   NULL). RETRLM_ERR_NOT_FOUND if absent, RETRLM_ERR_FORMAT if the type differs. */
RETRLM_API retrlm_result retrlm_reader_get(const retrlm_reader *r, const char *name,
                                           retrlm_dtype type, const void **data, size_t *count);
/* Copies section name into out, which holds exactly count elements: anything else in the file
   is RETRLM_ERR_FORMAT (the detail says what was found). */
RETRLM_API retrlm_result retrlm_reader_read(const retrlm_reader *r, const char *name,
                                            retrlm_dtype type, void *out, size_t count);
RETRLM_API void retrlm_reader_close(retrlm_reader *r);

/* CRC-32 (IEEE 802.3, as zlib's crc32): crc of buf continued from crc (start with 0). */
RETRLM_API uint32_t retrlm_crc32(uint32_t crc, const void *buf, size_t n);
/* ---- retrlm_impl/analyzer.h ---- */
/* ---- analyzer: text -> search terms (lower-casing, letter/digit tokens, stop words, Porter)
   A token is a maximal run of letters and digits (UTF-8; invalid bytes separate tokens). It is
   lower-cased (ASCII, Latin-1, Latin Extended-A/B, Greek, Cyrillic), a trailing possessive 's
   is dropped ("John's" -> "john", as Lucene's EnglishPossessiveFilter), stop words are removed
   and ASCII terms are stemmed with the Porter (1980) algorithm as in its reference
   implementation ("bli" -> "ble", "logi" -> "log"). With the defaults this is the chain of
   Lucene's EnglishAnalyzer and Anserini. Terms longer than RETRLM_ANALYZER_MAX_TERM bytes are
   cut there (at a character boundary). */
#define RETRLM_ANALYZER_MAX_TERM 64

typedef struct retrlm_analyzer_config {
    int no_stem;                   /* 1: keep words unstemmed (default 0: Porter) */
    int no_stopwords;              /* 1: keep every word (default 0: drop stop words) */
    const char *const *stopwords;  /* (n_stopwords) borrowed during init, lower-case UTF-8;
                                      NULL: Lucene's English list of 33 words */
    int n_stopwords;               /* entries of stopwords */
} retrlm_analyzer_config;

typedef struct retrlm_analyzer {
    int stem;          /* 1 if Porter stemming is on */
    int n_stopwords;   /* words in the stop list */
    /* private */
    char *stop_text_;  /* (stop_bytes_) the stop words, each NUL-terminated */
    size_t stop_bytes_;  /* bytes of stop_text_ */
    size_t stop_max_;  /* bytes of the longest stop word */
    const char **stop_;/* (n_stopwords) pointers into stop_text_, sorted by strcmp */
} retrlm_analyzer;

/* Called once per term in text order; term is NUL-terminated, len bytes, valid during the call.
   position counts tokens (stop words included). Return nonzero to stop. */
typedef int (*retrlm_term_fn)(void *user, const char *term, int len, int position);

/* Copies the stop list. */
RETRLM_API retrlm_result retrlm_analyzer_init(retrlm_analyzer *a, const retrlm_analyzer_config *cfg);
RETRLM_API void retrlm_analyzer_free(retrlm_analyzer *a);
/* Runs the chain on len bytes of text (need not be NUL-terminated) and calls fn per term.
   Never fails on any bytes; a nonzero return of fn ends the walk early. */
RETRLM_API void retrlm_analyze(const retrlm_analyzer *a, const char *text, size_t len,
                               retrlm_term_fn fn, void *user);
/* Porter stems the ASCII lower-case word w[0..len) in place; returns the new length
   (words of 1-2 letters and words with other bytes are left as they are). */
RETRLM_API int retrlm_porter_stem(char *w, int len);
/* Lower-case of code point c (the ranges named above; c itself elsewhere). */
RETRLM_API uint32_t retrlm_unicode_lower(uint32_t c);
/* ---- retrlm_impl/bm25.h ---- */
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

typedef struct retrlm_bm25_config {
    float k1;                        /* tf saturation, > 0; 0: 0.9 (Anserini's default) */
    float b;                         /* length normalisation in [0, 1]; 0: 0.4; < 0: really 0 */
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
   or repeated id adds nothing. */
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
/* ---- retrlm_impl/eval.h ---- */
/* ---- eval: retrieval metrics against graded relevance judgments ---------------------------
   A judgment (qrel) says document docid has grade g for query qid (TREC qrels without the
   iteration column). Ranked lists are best first. A document counts as relevant when its grade
   is >= min_grade (1: lenient, 2: strict for 0/1/2 judgments). Per query:
     MRR@k      1 / rank of the first relevant document within the top k, else 0
     nDCG@k     sum over ranks r <= k of gain / log2(r + 1), gain = grade (linear, as trec_eval),
                divided by the same sum for the ideal ordering of the judged documents; grades
                below min_grade count as 0
     Recall@k   relevant documents in the top k / relevant documents judged
   Means are over the queries that have at least one relevant document; queries without a
   ranked list count as empty lists. */

typedef struct retrlm_qrel {
    int64_t qid;   /* query id */
    int64_t docid; /* document id */
    int     grade; /* > 0 for a relevant document; 0 or less: judged not relevant */
} retrlm_qrel;

/* Per-query metrics. ranked (n_ranked) ids best first; rel_ids/rel_grades (n_rel) the
   judgments of this query (order free; duplicates of an id keep the highest grade). */
RETRLM_API double retrlm_eval_rr(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                 const int *rel_grades, int n_rel, int k, int min_grade);
RETRLM_API double retrlm_eval_ndcg(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                   const int *rel_grades, int n_rel, int k, int min_grade);
RETRLM_API double retrlm_eval_recall(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                     const int *rel_grades, int n_rel, int k, int min_grade);

typedef struct retrlm_retrieval_metrics {
    int    n_queries;   /* queries with at least one relevant document */
    double mrr10;       /* mean MRR@10 */
    double ndcg10;      /* mean nDCG@10 */
    double recall10;    /* mean Recall@10 */
    double recall100;   /* mean Recall@100 */
    double recall1000;  /* mean Recall@1000 */
} retrlm_retrieval_metrics;

/* Means over a run: qids (n_queries); ranked (n_queries, stride) ids best first, of which the
   first n_ranked[q] (<= stride) are valid; qrels (n_qrels) in any order. Judgments of queries
   not in qids are ignored. RETRLM_ERR_ARG on bad sizes, RETRLM_ERR_NOMEM. */
RETRLM_API retrlm_result retrlm_eval_retrieval(int n_queries, const int64_t *qids,
                                               const int64_t *ranked, const int *n_ranked,
                                               int stride, const retrlm_qrel *qrels,
                                               size_t n_qrels, int min_grade,
                                               retrlm_retrieval_metrics *out);

#ifdef __cplusplus
}
#endif
#endif /* RETRLM_H */

/* ============================================================================================
   Stop here if you only want the API. Below is the implementation.
   ============================================================================================ */
#if defined(RETRLM_IMPLEMENTATION) && !defined(RETRLM__IMPLEMENTATION_DONE)
#define RETRLM__IMPLEMENTATION_DONE
/* ---- retrlm_impl/internal.h ---- */
/* internal.h - configuration, portability, OpenMP macros and the private declarations every
   fragment may use. It is the implementation's table of contents. */
#ifndef RETRLM__INTERNAL_H
#define RETRLM__INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define RETRLM__POSIX 1
#endif

#if defined(_OPENMP) && !defined(RETRLM_NO_OPENMP)
#include <omp.h>
#endif

#ifndef RETRLM_ASSERT
#define RETRLM_ASSERT(x) assert(x)
#endif

#if defined(RETRLM_MALLOC) && defined(RETRLM_REALLOC) && defined(RETRLM_FREE)
/* ok: all three */
#elif !defined(RETRLM_MALLOC) && !defined(RETRLM_REALLOC) && !defined(RETRLM_FREE)
#define RETRLM_MALLOC(n) malloc(n)
#define RETRLM_REALLOC(p, n) realloc(p, n)
#define RETRLM_FREE(p) free(p)
#else
#error "Define all or none of RETRLM_MALLOC, RETRLM_REALLOC and RETRLM_FREE."
#endif

/* Internal functions shared between fragments: static, and quiet when a build does not use one */
#if defined(__GNUC__) || defined(__clang__)
#define RETRLM__PRIVATE static __attribute__((unused))
#else
#define RETRLM__PRIVATE static
#endif

/* ---- stb_ds, routed through the allocation funnel ------------------------------------------ */
RETRLM__PRIVATE void *retrlm__stbds_realloc(void *p, size_t n);
#define STBDS_NO_SHORT_NAMES
#define STBDS_REALLOC(ctx, p, n) retrlm__stbds_realloc(p, n)
#define STBDS_FREE(ctx, p) RETRLM_FREE(p)
#if !defined(RETRLM_NO_STB_DS_IMPLEMENTATION) && !defined(STB_DS_IMPLEMENTATION)
#define STB_DS_IMPLEMENTATION
#endif
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wconversion"
#endif
#include "stb_ds.h"
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* ---- OpenMP through _Pragma, so builds without it are clean (STYLE.md S6.4) ---------------- */
#define RETRLM__PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) && !defined(RETRLM_NO_OPENMP)
#define RETRLM__OMP 1
/* dynamic: a thread that another process starves takes fewer chunks (DESIGN.md §3) */
#define RETRLM__PARALLEL_FOR RETRLM__PRAGMA(omp parallel for schedule(dynamic, 1))
#define RETRLM__PARALLEL_FOR_STATIC RETRLM__PRAGMA(omp parallel for schedule(static))
#define RETRLM__PARALLEL_FOR_IF(c) RETRLM__PRAGMA(omp parallel for schedule(dynamic, 1) if (c))
#else
#define RETRLM__PARALLEL_FOR
#define RETRLM__PARALLEL_FOR_STATIC
#define RETRLM__PARALLEL_FOR_IF(c)
#endif
#if ((defined(_OPENMP) && _OPENMP >= 201307) || defined(RETRLM_OPENMP_SIMD)) && \
    !defined(RETRLM_NO_OPENMP)
#define RETRLM__SIMD RETRLM__PRAGMA(omp simd)
#define RETRLM__SIMD_SUM(acc) RETRLM__PRAGMA(omp simd reduction(+ : acc))
#else
#define RETRLM__SIMD
#define RETRLM__SIMD_SUM(acc)
#endif

/* Number of threads a parallel region may use (1 without OpenMP). */
RETRLM__PRIVATE int retrlm__max_threads(void);

/* ---- thread-local storage for the error detail --------------------------------------------- */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define RETRLM__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define RETRLM__TLS _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define RETRLM__TLS __thread
#elif defined(_MSC_VER)
#define RETRLM__TLS __declspec(thread)
#else
#define RETRLM__TLS
#endif

/* ---- core (core.c) ----------------------------------------------------------------------- */
/* Records a detail message (printf-style) for this thread and returns r: `return retrlm__fail(...)` */
RETRLM__PRIVATE retrlm_result retrlm__fail(retrlm_result r, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
RETRLM__PRIVATE void retrlm__clear_error(void);
/* count * elem bytes, NULL on overflow or failure; never returns NULL for 0 bytes */
RETRLM__PRIVATE void *retrlm__alloc(size_t count, size_t elem);
RETRLM__PRIVATE void *retrlm__calloc(size_t count, size_t elem); /* zeroed */
RETRLM__PRIVATE void *retrlm__realloc(void *p, size_t count, size_t elem);
RETRLM__PRIVATE int   retrlm__mul_overflows(size_t a, size_t b, size_t *out); /* 1 if a*b overflows */
/* Calls the progress callback if any; RETRLM_ERR_CANCELLED (with detail) if it says stop. */
RETRLM__PRIVATE retrlm_result retrlm__progress(retrlm_progress_fn fn, void *user, const char *stage,
                                      double done, double total);

/* Little-endian encoding of fixed-width fields, whatever the host. */
RETRLM__PRIVATE void     retrlm__put_u32(unsigned char *p, uint32_t v);
RETRLM__PRIVATE void     retrlm__put_u64(unsigned char *p, uint64_t v);
RETRLM__PRIVATE uint32_t retrlm__get_u32(const unsigned char *p);
RETRLM__PRIVATE uint64_t retrlm__get_u64(const unsigned char *p);
RETRLM__PRIVATE int      retrlm__host_is_le(void);
/* Reverses each elem-byte element of n in place (elem 1, 2, 4 or 8). */
RETRLM__PRIVATE void     retrlm__byteswap(void *p, size_t n, size_t elem);

#define RETRLM__MIN(a, b) ((a) < (b) ? (a) : (b))
#define RETRLM__MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* RETRLM__INTERNAL_H */
/* ---- retrlm_impl/core.c ---- */

// ---------------------------------------------------------------------------------------------
// results and the per-thread detail message

#define RETRLM__STRING(name, msg) msg,
static const char *const retrlm__result_strings[] = {RETRLM__RESULTS(RETRLM__STRING)};
#undef RETRLM__STRING

RETRLM_API const char *retrlm_result_string(retrlm_result r) {
    if ((int)r < 0 || (int)r >= (int)RETRLM_RESULT_COUNT) return "unknown result code";
    return retrlm__result_strings[r];
}

static RETRLM__TLS char retrlm__error_detail[512];

RETRLM_API const char *retrlm_last_error(void) { return retrlm__error_detail; }

static void retrlm__clear_error(void) { retrlm__error_detail[0] = '\0'; }

static retrlm_result retrlm__fail(retrlm_result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(retrlm__error_detail, sizeof retrlm__error_detail, fmt, ap);
    va_end(ap);
    return r;
}

// ---------------------------------------------------------------------------------------------
// the allocation funnel: every byte the library owns comes through here

static int retrlm__mul_overflows(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 1;
    *out = a * b;
    return 0;
}

static void *retrlm__alloc(size_t count, size_t elem) {
    size_t n;
    if (retrlm__mul_overflows(count, elem, &n)) return NULL;
    return RETRLM_MALLOC(n ? n : 1);
}

static void *retrlm__calloc(size_t count, size_t elem) {
    void *p = retrlm__alloc(count, elem);
    if (p) memset(p, 0, count * elem);
    return p;
}

static void *retrlm__realloc(void *p, size_t count, size_t elem) {
    size_t n;
    if (retrlm__mul_overflows(count, elem, &n)) return NULL;
    return RETRLM_REALLOC(p, n ? n : 1);
}

RETRLM_API void retrlm_free(void *p) {
    if (p) RETRLM_FREE(p);
}

// stb_ds has no error path (it writes through the result of realloc), so running out of memory
// while building is fatal: report and abort rather than corrupt the heap.
static void *retrlm__stbds_realloc(void *p, size_t n) {
    void *q;
    if (n == 0) {
        RETRLM_FREE(p);
        return NULL;
    }
    q = RETRLM_REALLOC(p, n);
    if (!q) {
        fprintf(stderr, "retrlm: out of memory growing a build-time array (%lu bytes)\n",
                (unsigned long)n);
        abort();
    }
    return q;
}

static int retrlm__max_threads(void) {
#ifdef RETRLM__OMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------------
// RNG: xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number generators",
// 2018), state filled by splitmix64 so that any 64-bit seed gives a good state.

static uint64_t retrlm__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t retrlm__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

RETRLM_API void retrlm_rng_seed(retrlm_rng *r, uint64_t seed) {
    int i;
    RETRLM_ASSERT(r);
    for (i = 0; i < 4; i++) r->s[i] = retrlm__splitmix64(&seed);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; // cannot happen, but cheap
}

RETRLM_API uint64_t retrlm_rng_u64(retrlm_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = retrlm__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = retrlm__rotl(s[3], 45);
    return result;
}

RETRLM_API uint32_t retrlm_rng_u32(retrlm_rng *r) { return (uint32_t)(retrlm_rng_u64(r) >> 32); }

RETRLM_API uint64_t retrlm_rng_below(retrlm_rng *r, uint64_t n) {
    // rejection sampling on the top of the range: unbiased for every n
    uint64_t limit, x;
    RETRLM_ASSERT(n > 0);
    limit = UINT64_MAX - UINT64_MAX % n; // multiples of n below this are accepted
    do { x = retrlm_rng_u64(r); } while (x >= limit);
    return x % n;
}

RETRLM_API float retrlm_rng_float(retrlm_rng *r) {
    return (float)(retrlm_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

RETRLM_API double retrlm_rng_double(retrlm_rng *r) {
    return (double)(retrlm_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

RETRLM_API float retrlm_rng_normal(retrlm_rng *r) {
    // Box-Muller; u1 in (0, 1] so the log is finite
    double u1 = 1.0 - retrlm_rng_double(r);
    double u2 = retrlm_rng_double(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

RETRLM_API void retrlm_rng_jump(retrlm_rng *r) {
    static const uint64_t jump[4] = {0x180ec6d33cfd0abaull, 0xd5a61266f0c9392cull,
                                     0xa9582618e03fc9aaull, 0x39abdc4529b1661cull};
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i, b;
    for (i = 0; i < 4; i++) {
        for (b = 0; b < 64; b++) {
            if (jump[i] & ((uint64_t)1 << b)) {
                s0 ^= r->s[0];
                s1 ^= r->s[1];
                s2 ^= r->s[2];
                s3 ^= r->s[3];
            }
            retrlm_rng_u64(r);
        }
    }
    r->s[0] = s0;
    r->s[1] = s1;
    r->s[2] = s2;
    r->s[3] = s3;
}

// ---------------------------------------------------------------------------------------------
// progress and time

static retrlm_result retrlm__progress(retrlm_progress_fn fn, void *user, const char *stage,
                                      double done, double total) {
    if (fn && fn(user, stage, done, total))
        return retrlm__fail(RETRLM_ERR_CANCELLED, "%s: cancelled by the progress callback at %.0f of %.0f",
                            stage, done, total);
    return RETRLM_OK;
}

RETRLM_API double retrlm_time_seconds(void) {
#if defined(RETRLM__POSIX) && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif defined(RETRLM__OMP)
    return omp_get_wtime();
#else
    return (double)clock() / (double)CLOCKS_PER_SEC; // processor time: the best plain C99 has
#endif
}

// ---------------------------------------------------------------------------------------------
// little-endian fields and byte order

static void retrlm__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void retrlm__put_u64(unsigned char *p, uint64_t v) {
    retrlm__put_u32(p, (uint32_t)v);
    retrlm__put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t retrlm__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t retrlm__get_u64(const unsigned char *p) {
    return (uint64_t)retrlm__get_u32(p) | (uint64_t)retrlm__get_u32(p + 4) << 32;
}

static int retrlm__host_is_le(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void retrlm__byteswap(void *p, size_t n, size_t elem) {
    unsigned char *b = (unsigned char *)p, t;
    size_t i, j;
    if (elem < 2) return;
    for (i = 0; i < n; i++, b += elem) {
        for (j = 0; j < elem / 2; j++) {
            t = b[j];
            b[j] = b[elem - 1 - j];
            b[elem - 1 - j] = t;
        }
    }
}
/* ---- retrlm_impl/kernels.c ---- */

// Dimension legend: M, N output rows and columns, K the shared (inner) dimension.
// MR x NR is the register tile, MC x KC the packed block of A, KC x NC the packed block of B.

#if defined(__cplusplus)
#define RETRLM__RESTRICT __restrict
#else
#define RETRLM__RESTRICT restrict
#endif

// ---------------------------------------------------------------------------------------------
// vector kernels

RETRLM_API float retrlm_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    int i;
    RETRLM__SIMD_SUM(s)
    for (i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

RETRLM_API void retrlm_axpy(float *y, float alpha, const float *x, int n) {
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) y[i] += alpha * x[i];
}

RETRLM_API void retrlm_scale(float *x, float alpha, int n) {
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) x[i] *= alpha;
}

static float retrlm__max(const float *x, int n) {
    float m = -INFINITY;
    int i;
    for (i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

RETRLM_API float retrlm_logsumexp(const float *x, int n) {
    // logsumexp(x) = max + log(sum exp(x - max)): no overflow, and the largest term is exp(0)
    float m = retrlm__max(x, n), s = 0.0f;
    int i;
    if (m == -INFINITY) return -INFINITY;
    if (m == INFINITY) return INFINITY;
    // no simd pragma: a loop calling expf vectorizes only with a vector math library
    for (i = 0; i < n; i++) s += expf(x[i] - m);
    return m + logf(s);
}

RETRLM_API void retrlm_softmax(float *out, const float *x, int n) {
    float m = retrlm__max(x, n), s = 0.0f, inv;
    int i;
    if (n <= 0) return;
    if (m == -INFINITY) { // nothing is allowed: the only finite answer is uniform
        for (i = 0; i < n; i++) out[i] = 1.0f / (float)n;
        return;
    }
    for (i = 0; i < n; i++) {
        out[i] = expf(x[i] - m);
        s += out[i];
    }
    inv = 1.0f / s;
    RETRLM__SIMD
    for (i = 0; i < n; i++) out[i] *= inv;
}

RETRLM_API void retrlm_log_softmax(float *out, const float *x, int n) {
    float lse = retrlm_logsumexp(x, n);
    int i;
    RETRLM__SIMD
    for (i = 0; i < n; i++) out[i] = x[i] - lse;
}

// ---------------------------------------------------------------------------------------------
// top-k: a min-heap whose root is the worst pair kept; "worse" is lower score, then larger id

static int retrlm__worse(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

RETRLM_API void retrlm_topk_init(retrlm_topk *h, int k, int64_t *ids, float *scores) {
    RETRLM_ASSERT(h && k >= 0 && (k == 0 || (ids && scores)));
    h->k = k;
    h->n = 0;
    h->ids = ids;
    h->scores = scores;
}

static void retrlm__topk_sift_down(int64_t *ids, float *sc, int n, int i) {
    int64_t id = ids[i];
    float s = sc[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && retrlm__worse(sc[c + 1], ids[c + 1], sc[c], ids[c])) c++;
        if (!retrlm__worse(sc[c], ids[c], s, id)) break;
        ids[i] = ids[c];
        sc[i] = sc[c];
        i = c;
    }
    ids[i] = id;
    sc[i] = s;
}

RETRLM_API void retrlm_topk_push(retrlm_topk *h, int64_t id, float score) {
    int i;
    if (score != score || h->k == 0) return; // NaN is never kept
    if (h->n == h->k) {
        if (!retrlm__worse(h->scores[0], h->ids[0], score, id)) return;
        h->ids[0] = id;
        h->scores[0] = score;
        retrlm__topk_sift_down(h->ids, h->scores, h->n, 0);
        return;
    }
    i = h->n++;
    while (i > 0) { // sift up
        int p = (i - 1) / 2;
        if (!retrlm__worse(score, id, h->scores[p], h->ids[p])) break;
        h->ids[i] = h->ids[p];
        h->scores[i] = h->scores[p];
        i = p;
    }
    h->ids[i] = id;
    h->scores[i] = score;
}

RETRLM_API int retrlm_topk_sort(retrlm_topk *h) {
    // heapsort: move the worst to the end repeatedly, which leaves the array best first
    int n = h->n, end;
    for (end = n - 1; end > 0; end--) {
        int64_t ti = h->ids[0];
        float ts = h->scores[0];
        h->ids[0] = h->ids[end];
        h->scores[0] = h->scores[end];
        h->ids[end] = ti;
        h->scores[end] = ts;
        retrlm__topk_sift_down(h->ids, h->scores, end, 0);
    }
    return n;
}

RETRLM_API int retrlm_topk_select(const float *scores, int n, int k, int64_t *ids,
                                  float *out_scores) {
    retrlm_topk h;
    float *tmp = out_scores;
    int i, got;
    RETRLM_ASSERT(ids && k >= 0);
    if (!tmp) tmp = (float *)retrlm__alloc((size_t)(k > 0 ? k : 1), sizeof(float));
    if (!tmp) return 0;
    retrlm_topk_init(&h, k, ids, tmp);
    for (i = 0; i < n; i++) retrlm_topk_push(&h, i, scores[i]);
    got = retrlm_topk_sort(&h);
    if (!out_scores) RETRLM_FREE(tmp);
    return got;
}

// ---------------------------------------------------------------------------------------------
// matrix multiply, GotoBLAS-style: C is cut into MC x NC tiles, each computed by one thread
// (threads never share a write, and every C element sums its K terms in the same order, so
// results do not depend on the thread count). Inside a tile, KC-deep slices of A and B are
// packed into MR-row and NR-column panels so that the micro-kernel reads both at unit stride
// and keeps its MR x NR accumulators in registers.

#if defined(__AVX512F__)
#define RETRLM__MR 8 // 8 rows x 2 zmm: 16 accumulators of 32
#define RETRLM__NR 32
#else
#define RETRLM__MR 6 // 6 rows x 2 ymm (or 4 NEON q): 12-24 accumulators, no spills
#define RETRLM__NR 16
#endif
#define RETRLM__KC 256
#define RETRLM__MC (RETRLM__MR * 16)
#define RETRLM__NC (RETRLM__NR * 8)

typedef struct retrlm__mat { // element (r, c) is p[r * sr + c * sc]
    const float *p;
    size_t sr, sc;
} retrlm__mat;

// packs rows [m0, m0+mc) x depth [k0, k0+kc) of A into panels of MR rows: dst (panels, kc, MR),
// zero-padded past the last row
static void retrlm__pack_a(float *dst, retrlm__mat A, int M, int m0, int mc, int k0, int kc) {
    int ir, i, p;
    for (ir = 0; ir < mc; ir += RETRLM__MR) {
        for (i = 0; i < RETRLM__MR; i++) {
            int m = m0 + ir + i;
            if (ir + i < mc && m < M) {
                const float *src = A.p + (size_t)m * A.sr + (size_t)k0 * A.sc;
                for (p = 0; p < kc; p++) dst[(size_t)p * RETRLM__MR + i] = src[(size_t)p * A.sc];
            } else {
                for (p = 0; p < kc; p++) dst[(size_t)p * RETRLM__MR + i] = 0.0f;
            }
        }
        dst += (size_t)kc * RETRLM__MR;
    }
}

// packs depth [k0, k0+kc) x columns [n0, n0+nc) of B (viewed as (K,N)) into panels of NR
// columns: dst (panels, kc, NR), zero-padded past the last column
static void retrlm__pack_b(float *dst, retrlm__mat B, int N, int n0, int nc, int k0, int kc) {
    int jr, j, p;
    for (jr = 0; jr < nc; jr += RETRLM__NR) {
        for (j = 0; j < RETRLM__NR; j++) {
            int n = n0 + jr + j;
            if (jr + j < nc && n < N) {
                const float *src = B.p + (size_t)n * B.sc + (size_t)k0 * B.sr;
                for (p = 0; p < kc; p++) dst[(size_t)p * RETRLM__NR + j] = src[(size_t)p * B.sr];
            } else {
                for (p = 0; p < kc; p++) dst[(size_t)p * RETRLM__NR + j] = 0.0f;
            }
        }
        dst += (size_t)kc * RETRLM__NR;
    }
}

// a (kc, MR), b (kc, NR) packed -> the mr x nr corner of the tile at c (row stride ldc).
// first: this is the first K slice, so C is set (or accumulated, with acc_c) and bias added.
static void retrlm__micro(int kc, const float *RETRLM__RESTRICT a, const float *RETRLM__RESTRICT b,
                          float *RETRLM__RESTRICT c, size_t ldc, int mr, int nr,
                          const float *bias, int first, int acc_c) {
    float acc[RETRLM__MR][RETRLM__NR];
    int i, j, p;
    for (i = 0; i < RETRLM__MR; i++) {
        RETRLM__SIMD
        for (j = 0; j < RETRLM__NR; j++) acc[i][j] = 0.0f;
    }
    // the whole cost of the multiply is here: MR broadcasts of a against NR-wide rows of b,
    // MR*NR independent accumulators so the FMA units never wait on one another
    for (p = 0; p < kc; p++) {
        const float *ap = a + (size_t)p * RETRLM__MR;
        const float *bp = b + (size_t)p * RETRLM__NR;
        for (i = 0; i < RETRLM__MR; i++) {
            float ai = ap[i];
            RETRLM__SIMD
            for (j = 0; j < RETRLM__NR; j++) acc[i][j] += ai * bp[j];
        }
    }
    for (i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        if (first && !acc_c) {
            for (j = 0; j < nr; j++) ci[j] = acc[i][j];
        } else {
            for (j = 0; j < nr; j++) ci[j] += acc[i][j];
        }
        if (first && bias)
            for (j = 0; j < nr; j++) ci[j] += bias[j];
    }
}

// small M with the default layouts: each C element is one unit-stride dot product; this is the
// generation case (M = 1), bound by reading B once
static void retrlm__matmul_rows(float *C, const float *A, const float *B, const float *bias,
                                int M, int N, int K, int acc_c) {
    int nb, nblocks = (N + 63) / 64;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)K > 65536)
    for (nb = 0; nb < nblocks; nb++) {
        int n, m, n1 = RETRLM__MIN(N, nb * 64 + 64);
        for (m = 0; m < M; m++) {
            const float *a = A + (size_t)m * K;
            float *c = C + (size_t)m * N;
            for (n = nb * 64; n < n1; n++) {
                float v = retrlm_dot(a, B + (size_t)n * K, K) + (bias ? bias[n] : 0.0f);
                c[n] = acc_c ? c[n] + v : v;
            }
        }
    }
}

RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags) {
    retrlm__mat a, b;
    const int acc_c = (flags & RETRLM_MATMUL_ACCUMULATE) != 0;
    int mtiles, ntiles, ntiles_all, nthreads, t;
    size_t per_thread;
    float *work;
    RETRLM_ASSERT(M >= 0 && N >= 0 && K >= 0 && (flags & ~7) == 0);
    if (M == 0 || N == 0) return RETRLM_OK;
    RETRLM_ASSERT(C && (K == 0 || (A && B)));
    if (K == 0) {
        for (t = 0; t < M; t++) {
            float *c = C + (size_t)t * N;
            int n;
            for (n = 0; n < N; n++) c[n] = (acc_c ? c[n] : 0.0f) + (bias ? bias[n] : 0.0f);
        }
        return RETRLM_OK;
    }
    if (M < RETRLM__MR && !(flags & (RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN))) {
        retrlm__matmul_rows(C, A, B, bias, M, N, K, acc_c);
        return RETRLM_OK;
    }
    // views: A as (M,K), B as (K,N)
    a.p = A;
    if (flags & RETRLM_MATMUL_A_KM) { a.sr = 1; a.sc = (size_t)M; }
    else { a.sr = (size_t)K; a.sc = 1; }
    b.p = B;
    if (flags & RETRLM_MATMUL_B_KN) { b.sr = (size_t)N; b.sc = 1; }
    else { b.sr = 1; b.sc = (size_t)K; }

    mtiles = (M + RETRLM__MC - 1) / RETRLM__MC;
    ntiles = (N + RETRLM__NC - 1) / RETRLM__NC;
    ntiles_all = mtiles * ntiles;
    nthreads = RETRLM__MIN(retrlm__max_threads(), ntiles_all);
    per_thread = (size_t)RETRLM__MC * RETRLM__KC + (size_t)RETRLM__KC * RETRLM__NC;
    work = (float *)retrlm__alloc((size_t)nthreads * per_thread, sizeof(float));
    if (!work) return retrlm__fail(RETRLM_ERR_NOMEM, "matmul: no memory for packing buffers");

    RETRLM__PARALLEL_FOR_IF(nthreads > 1 && (double)M * N * K > 2e5)
    for (t = 0; t < ntiles_all; t++) {
        int tid = 0;
        float *pa, *pb;
        int m0 = (t / ntiles) * RETRLM__MC, n0 = (t % ntiles) * RETRLM__NC;
        int mc = RETRLM__MIN(RETRLM__MC, M - m0), nc = RETRLM__MIN(RETRLM__NC, N - n0);
        int k0;
#ifdef RETRLM__OMP
        tid = omp_get_thread_num();
#endif
        pa = work + (size_t)tid * per_thread;
        pb = pa + (size_t)RETRLM__MC * RETRLM__KC;
        for (k0 = 0; k0 < K; k0 += RETRLM__KC) {
            int kc = RETRLM__MIN(RETRLM__KC, K - k0), ir, jr;
            retrlm__pack_a(pa, a, M, m0, mc, k0, kc);
            retrlm__pack_b(pb, b, N, n0, nc, k0, kc);
            for (jr = 0; jr < nc; jr += RETRLM__NR) {
                for (ir = 0; ir < mc; ir += RETRLM__MR) {
                    retrlm__micro(kc, pa + (size_t)ir * kc, pb + (size_t)jr * kc,
                                  C + (size_t)(m0 + ir) * N + (n0 + jr), (size_t)N,
                                  RETRLM__MIN(RETRLM__MR, mc - ir), RETRLM__MIN(RETRLM__NR, nc - jr),
                                  bias ? bias + n0 + jr : NULL, k0 == 0, acc_c);
                }
            }
        }
    }
    RETRLM_FREE(work);
    return RETRLM_OK;
}
/* ---- retrlm_impl/io.c ---- */

// ---------------------------------------------------------------------------------------------
// CRC-32, reflected polynomial 0xEDB88320. Short inputs go bit by bit; long ones build the
// slicing-by-8 tables on the stack (about 2 us) and take 8 bytes a step. No static tables, so
// nothing to initialise and nothing shared between threads.

static uint32_t retrlm__crc32_bits(uint32_t c, const unsigned char *p, size_t n) {
    int k;
    while (n--) {
        c ^= *p++;
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c;
}

RETRLM_API uint32_t retrlm_crc32(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t c = ~crc, t[8][256];
    int i, k;
    if (n < 512) return ~retrlm__crc32_bits(c, p, n);
    for (i = 0; i < 256; i++) {
        uint32_t v = (uint32_t)i;
        for (k = 0; k < 8; k++) v = (v >> 1) ^ (0xEDB88320u & (0u - (v & 1u)));
        t[0][i] = v;
    }
    for (i = 0; i < 256; i++)
        for (k = 1; k < 8; k++) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    while (n >= 8) {
        uint32_t lo = c ^ retrlm__get_u32(p), hi = retrlm__get_u32(p + 4);
        c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
            t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    return ~retrlm__crc32_bits(c, p, n);
}

// ---------------------------------------------------------------------------------------------
// element types

static const struct {
    unsigned char size;
    const char *name;
} retrlm__dtypes[RETRLM_DTYPE_COUNT] = {{0, "invalid"}, {1, "u8"},  {1, "i8"},  {2, "u16"},
                                        {2, "i16"},     {4, "u32"}, {4, "i32"}, {8, "u64"},
                                        {8, "i64"},     {4, "f32"}, {8, "f64"}};

RETRLM_API size_t retrlm_dtype_size(retrlm_dtype t) {
    return (t > 0 && t < RETRLM_DTYPE_COUNT) ? retrlm__dtypes[t].size : 0;
}

RETRLM_API const char *retrlm_dtype_name(retrlm_dtype t) {
    return retrlm__dtypes[(t > 0 && t < RETRLM_DTYPE_COUNT) ? t : 0].name;
}

#define RETRLM__MAGIC "\x89RLM\r\n\x1a\n"
#define RETRLM__HEADER 64
#define RETRLM__ENTRY 64
#define RETRLM__ALIGN 64

static size_t retrlm__align64(size_t x) { return (x + (RETRLM__ALIGN - 1)) & ~(size_t)(RETRLM__ALIGN - 1); }

// a name or kind: 1..max printable ASCII characters
static int retrlm__valid_label(const char *s, size_t max) {
    size_t i;
    if (!s || !s[0]) return 0;
    for (i = 0; s[i]; i++)
        if (i >= max || (unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7E) return 0;
    return 1;
}

// ---------------------------------------------------------------------------------------------
// writer

struct retrlm__wsection {
    char name[RETRLM_IO_NAME_MAX + 1];
    retrlm_dtype type;
    const void *data;
    size_t count;
    void *copy; // owned copy for retrlm_writer_add_copy, else NULL
};

RETRLM_API retrlm_result retrlm_writer_init(retrlm_writer *w, const char *kind) {
    RETRLM_ASSERT(w);
    memset(w, 0, sizeof *w);
    if (!retrlm__valid_label(kind, RETRLM_IO_KIND_MAX))
        return retrlm__fail(RETRLM_ERR_ARG, "writer: kind must be 1..%d printable ASCII characters",
                            RETRLM_IO_KIND_MAX);
    strcpy(w->kind, kind);
    return RETRLM_OK;
}

RETRLM_API void retrlm_writer_free(retrlm_writer *w) {
    int i;
    if (!w) return;
    for (i = 0; i < w->n_sections; i++) RETRLM_FREE(w->sections_[i].copy);
    if (w->sections_) RETRLM_FREE(w->sections_);
    memset(w, 0, sizeof *w);
}

static retrlm_result retrlm__writer_push(retrlm_writer *w, const char *name, retrlm_dtype type,
                                         const void *data, size_t count, int copy) {
    struct retrlm__wsection *s;
    size_t bytes;
    int i;
    RETRLM_ASSERT(w && w->kind[0]);
    if (!retrlm__valid_label(name, RETRLM_IO_NAME_MAX))
        return retrlm__fail(RETRLM_ERR_ARG, "writer: section name must be 1..%d printable ASCII characters",
                            RETRLM_IO_NAME_MAX);
    if (!retrlm_dtype_size(type))
        return retrlm__fail(RETRLM_ERR_ARG, "writer: section '%s': invalid element type %d", name, (int)type);
    if (retrlm__mul_overflows(count, retrlm_dtype_size(type), &bytes) || bytes > SIZE_MAX / 2)
        return retrlm__fail(RETRLM_ERR_ARG, "writer: section '%s': size overflows", name);
    if (count && !data) return retrlm__fail(RETRLM_ERR_ARG, "writer: section '%s': NULL data", name);
    for (i = 0; i < w->n_sections; i++)
        if (!strcmp(w->sections_[i].name, name))
            return retrlm__fail(RETRLM_ERR_ARG, "writer: section '%s' added twice", name);
    if (w->n_sections == w->cap_) {
        int cap = w->cap_ ? 2 * w->cap_ : 8;
        void *p = retrlm__realloc(w->sections_, (size_t)cap, sizeof *w->sections_);
        if (!p) return retrlm__fail(RETRLM_ERR_NOMEM, "writer: no memory for the section table");
        w->sections_ = (struct retrlm__wsection *)p;
        w->cap_ = cap;
    }
    s = &w->sections_[w->n_sections];
    memset(s, 0, sizeof *s);
    strcpy(s->name, name);
    s->type = type;
    s->count = count;
    s->data = data;
    if (copy && bytes) {
        s->copy = retrlm__alloc(bytes, 1);
        if (!s->copy) return retrlm__fail(RETRLM_ERR_NOMEM, "writer: section '%s': no memory to copy %lu bytes",
                                          name, (unsigned long)bytes);
        memcpy(s->copy, data, bytes);
        s->data = s->copy;
    }
    w->n_sections++;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_writer_add(retrlm_writer *w, const char *name, retrlm_dtype type,
                                           const void *data, size_t count) {
    return retrlm__writer_push(w, name, type, data, count, 0);
}

RETRLM_API retrlm_result retrlm_writer_add_copy(retrlm_writer *w, const char *name,
                                                retrlm_dtype type, const void *data,
                                                size_t count) {
    return retrlm__writer_push(w, name, type, data, count, 1);
}

// Where the bytes go: a file descriptor / FILE, or a memory buffer. write returns 0 on success.
typedef struct retrlm__sink {
    int (*write)(struct retrlm__sink *s, const void *p, size_t n);
    unsigned char *buf; // memory sink
    size_t pos, cap;
    int fd;             // POSIX file sink
    FILE *fp;           // stdio file sink
} retrlm__sink;

static int retrlm__sink_memory(retrlm__sink *s, const void *p, size_t n) {
    if (n > s->cap - s->pos) return 1;
    memcpy(s->buf + s->pos, p, n);
    s->pos += n;
    return 0;
}

// Calls fn on the section's bytes as they are in the file (little-endian), in chunks.
static int retrlm__section_bytes(const struct retrlm__wsection *s, retrlm__sink *sink,
                                 uint32_t *crc) {
    size_t esz = retrlm_dtype_size(s->type), bytes = s->count * esz, off = 0;
    const unsigned char *p = (const unsigned char *)s->data;
    unsigned char tmp[1 << 14];
    if (retrlm__host_is_le() || esz == 1) {
        if (crc) *crc = retrlm_crc32(0, p, bytes);
        return sink ? sink->write(sink, p, bytes) : 0;
    }
    if (crc) *crc = 0;
    while (off < bytes) { // big-endian host: swap a copy, chunk by chunk
        size_t n = RETRLM__MIN(sizeof tmp, bytes - off);
        memcpy(tmp, p + off, n);
        retrlm__byteswap(tmp, n / esz, esz);
        if (crc) *crc = retrlm_crc32(*crc, tmp, n);
        if (sink && sink->write(sink, tmp, n)) return 1;
        off += n;
    }
    return 0;
}

// Lays the file out, then streams header, table and payloads into the sink.
// size_only: just computes *total.
static retrlm_result retrlm__writer_emit(const retrlm_writer *w, retrlm__sink *sink,
                                         size_t *total) {
    unsigned char head[RETRLM__HEADER], *table = NULL, zeros[RETRLM__ALIGN];
    size_t table_bytes = (size_t)w->n_sections * RETRLM__ENTRY, pos, i;
    uint32_t crc;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(w && w->kind[0]);
    memset(zeros, 0, sizeof zeros);
    pos = retrlm__align64(RETRLM__HEADER + table_bytes);
    if (w->n_sections == 0) pos = RETRLM__HEADER;
    table = (unsigned char *)retrlm__calloc(table_bytes ? table_bytes : 1, 1);
    if (!table) return retrlm__fail(RETRLM_ERR_NOMEM, "writer: no memory for the section table");
    for (i = 0; i < (size_t)w->n_sections; i++) {
        const struct retrlm__wsection *s = &w->sections_[i];
        unsigned char *e = table + i * RETRLM__ENTRY;
        size_t bytes = s->count * retrlm_dtype_size(s->type);
        if (i > 0) pos = retrlm__align64(pos);
        memcpy(e, s->name, strlen(s->name));
        retrlm__put_u64(e + 32, (uint64_t)pos);
        retrlm__put_u64(e + 40, (uint64_t)bytes);
        if (sink) {
            retrlm__section_bytes(s, NULL, &crc);
            retrlm__put_u32(e + 48, crc);
        }
        retrlm__put_u32(e + 52, (uint32_t)s->type);
        if (pos > SIZE_MAX - bytes - RETRLM__ALIGN) {
            RETRLM_FREE(table);
            return retrlm__fail(RETRLM_ERR_ARG, "writer: file size overflows");
        }
        pos += bytes;
    }
    *total = pos;
    if (!sink) {
        RETRLM_FREE(table);
        return RETRLM_OK;
    }
    memset(head, 0, sizeof head);
    memcpy(head, RETRLM__MAGIC, 8);
    retrlm__put_u32(head + 8, RETRLM_IO_FORMAT_VERSION);
    retrlm__put_u32(head + 12, (uint32_t)w->n_sections);
    memcpy(head + 16, w->kind, strlen(w->kind));
    retrlm__put_u64(head + 32, (uint64_t)*total);
    retrlm__put_u64(head + 40, RETRLM__HEADER);
    crc = retrlm_crc32(retrlm_crc32(0, head, sizeof head), table, table_bytes);
    retrlm__put_u32(head + 48, crc);
    if (sink->write(sink, head, sizeof head) || sink->write(sink, table, table_bytes)) goto io_error;
    pos = RETRLM__HEADER + table_bytes;
    for (i = 0; i < (size_t)w->n_sections; i++) {
        const struct retrlm__wsection *s = &w->sections_[i];
        size_t start = retrlm__get_u64(table + i * RETRLM__ENTRY + 32);
        if (sink->write(sink, zeros, start - pos)) goto io_error;
        if (retrlm__section_bytes(s, sink, NULL)) goto io_error;
        pos = start + s->count * retrlm_dtype_size(s->type);
    }
    RETRLM_FREE(table);
    return res;
io_error:
    RETRLM_FREE(table);
    return RETRLM_ERR_IO; // the sink set the detail
}

RETRLM_API retrlm_result retrlm_writer_save_memory(const retrlm_writer *w, void *buf, size_t cap,
                                                   size_t *size) {
    retrlm__sink sink;
    size_t total;
    retrlm_result res;
    RETRLM_ASSERT(w && size);
    res = retrlm__writer_emit(w, NULL, &total);
    if (res) return res;
    *size = total;
    if (!buf) return RETRLM_OK;
    if (cap < total)
        return retrlm__fail(RETRLM_ERR_ARG, "writer: buffer of %lu bytes, the file needs %lu",
                            (unsigned long)cap, (unsigned long)total);
    memset(&sink, 0, sizeof sink);
    sink.write = retrlm__sink_memory;
    sink.buf = (unsigned char *)buf;
    sink.cap = cap;
    return retrlm__writer_emit(w, &sink, &total);
}

#ifndef RETRLM_NO_STDIO
#ifdef RETRLM__POSIX
static int retrlm__sink_fd(retrlm__sink *s, const void *p, size_t n) {
    const char *c = (const char *)p;
    while (n > 0) {
        ssize_t k = write(s->fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            retrlm__fail(RETRLM_ERR_IO, "write failed: %s", strerror(errno));
            return 1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}
#else
static int retrlm__sink_file(retrlm__sink *s, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, s->fp) != n) {
        retrlm__fail(RETRLM_ERR_IO, "write failed");
        return 1;
    }
    return 0;
}
#endif

RETRLM_API retrlm_result retrlm_writer_save(const retrlm_writer *w, const char *path) {
    retrlm__sink sink;
    size_t total, plen;
    char *tmp;
    retrlm_result res;
    int ok;
    RETRLM_ASSERT(w);
    if (!path || !path[0]) return retrlm__fail(RETRLM_ERR_ARG, "writer: empty path");
    plen = strlen(path);
    tmp = (char *)retrlm__alloc(plen + 32, 1);
    if (!tmp) return retrlm__fail(RETRLM_ERR_NOMEM, "writer: no memory");
    memset(&sink, 0, sizeof sink);
#ifdef RETRLM__POSIX
    snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
    sink.write = retrlm__sink_fd;
    sink.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (sink.fd < 0) {
        res = retrlm__fail(RETRLM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        RETRLM_FREE(tmp);
        return res;
    }
    res = retrlm__writer_emit(w, &sink, &total);
    ok = res == RETRLM_OK && fsync(sink.fd) == 0;
    if (close(sink.fd) != 0) ok = 0;
#else
    snprintf(tmp, plen + 32, "%s.tmp", path);
    sink.write = retrlm__sink_file;
    sink.fp = fopen(tmp, "wb");
    if (!sink.fp) {
        res = retrlm__fail(RETRLM_ERR_IO, "%s: cannot create", tmp);
        RETRLM_FREE(tmp);
        return res;
    }
    res = retrlm__writer_emit(w, &sink, &total);
    ok = res == RETRLM_OK && fflush(sink.fp) == 0;
    if (fclose(sink.fp) != 0) ok = 0;
#endif
    if (!ok) {
        if (res == RETRLM_OK) res = retrlm__fail(RETRLM_ERR_IO, "%s: flush to disk failed", tmp);
        else if (res == RETRLM_ERR_IO) {
            char detail[512];
            snprintf(detail, sizeof detail, "%s", retrlm_last_error());
            retrlm__fail(res, "%s: %s", tmp, detail);
        }
        remove(tmp);
        RETRLM_FREE(tmp);
        return res;
    }
#ifdef _WIN32
    remove(path); // rename does not replace on Windows: a crash here loses the old file only
#endif
    if (rename(tmp, path) != 0) {
        res = retrlm__fail(RETRLM_ERR_IO, "%s: cannot rename %s over it", path, tmp);
        remove(tmp);
        RETRLM_FREE(tmp);
        return res;
    }
#ifdef RETRLM__POSIX
    { // make the rename itself durable: fsync the directory (best effort)
        char *dir = tmp, *slash;
        int dfd;
        strcpy(dir, path);
        slash = strrchr(dir, '/');
        if (slash == dir) slash[1] = '\0';
        else if (slash) *slash = '\0';
        else strcpy(dir, ".");
        dfd = open(dir, O_RDONLY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
#endif
    RETRLM_FREE(tmp);
    return RETRLM_OK;
}
#endif // RETRLM_NO_STDIO

// ---------------------------------------------------------------------------------------------
// reader

RETRLM_API void retrlm_reader_close(retrlm_reader *r) {
    if (!r) return;
#ifdef RETRLM__POSIX
    if (r->mapped_ && r->base_) munmap((void *)r->base_, r->size);
#endif
    if (r->owned_) RETRLM_FREE(r->owned_);
    memset(r, 0, sizeof *r);
}

static const unsigned char *retrlm__entry(const retrlm_reader *r, int i) {
    return r->base_ + RETRLM__HEADER + (size_t)i * RETRLM__ENTRY;
}

// Checks the image at r->base_ (r->size bytes) completely; on a big-endian host then swaps
// every payload to host order (the image is owned there).
static retrlm_result retrlm__reader_check(retrlm_reader *r, const char *kind, int flags) {
    const unsigned char *h = r->base_;
    const char *src = r->source_;
    uint64_t n_sections, file_size, table_off, expect;
    size_t table_end, pos;
    unsigned char head[RETRLM__HEADER];
    int i, j;
    if (r->size < RETRLM__HEADER)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: file is %lu bytes, shorter than the %d-byte header (truncated?)",
                            src, (unsigned long)r->size, RETRLM__HEADER);
    if (memcmp(h, RETRLM__MAGIC, 8))
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: not a retrlm file (bad magic)", src);
    r->version = retrlm__get_u32(h + 8);
    if (r->version != RETRLM_IO_FORMAT_VERSION)
        return retrlm__fail(r->version > RETRLM_IO_FORMAT_VERSION ? RETRLM_ERR_UNSUPPORTED : RETRLM_ERR_FORMAT,
                            "%s: header: format version %lu, this build reads version %d", src,
                            (unsigned long)r->version, RETRLM_IO_FORMAT_VERSION);
    n_sections = retrlm__get_u32(h + 12);
    table_off = retrlm__get_u64(h + 40);
    if (table_off != RETRLM__HEADER)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: section table at offset %llu, expected %d",
                            src, (unsigned long long)table_off, RETRLM__HEADER);
    if (n_sections > (r->size - RETRLM__HEADER) / RETRLM__ENTRY)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section table: %lu sections do not fit in a %lu-byte file (truncated?)",
                            src, (unsigned long)n_sections, (unsigned long)r->size);
    table_end = RETRLM__HEADER + (size_t)n_sections * RETRLM__ENTRY;
    memcpy(head, h, sizeof head);
    retrlm__put_u32(head + 48, 0);
    if (retrlm_crc32(retrlm_crc32(0, head, sizeof head), h + RETRLM__HEADER, table_end - RETRLM__HEADER) !=
        retrlm__get_u32(h + 48))
        return retrlm__fail(RETRLM_ERR_CORRUPT, "%s: header or section table: CRC mismatch", src);
    file_size = retrlm__get_u64(h + 32);
    if (file_size != r->size)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: file should be %llu bytes, it is %lu (%s)", src,
                            (unsigned long long)file_size, (unsigned long)r->size,
                            file_size > r->size ? "truncated" : "trailing bytes");
    for (i = 52; i < RETRLM__HEADER; i++)
        if (h[i]) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: reserved byte %d is not zero", src, i);
    for (i = 16; i < 32 && h[i]; i++) {}
    for (; i < 32; i++)
        if (h[i]) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: kind is not NUL-padded", src);
    memcpy(r->kind, h + 16, 16);
    r->kind[RETRLM_IO_KIND_MAX] = '\0';
    if (!retrlm__valid_label(r->kind, RETRLM_IO_KIND_MAX))
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: invalid kind", src);
    if (kind && strcmp(kind, r->kind))
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: holds a '%s', expected a '%s'", src, r->kind, kind);
    r->n_sections = (int)n_sections;

    pos = table_end; // end of what has been accounted for
    for (i = 0; i < r->n_sections; i++) {
        const unsigned char *e = retrlm__entry(r, i);
        char name[RETRLM_IO_NAME_MAX + 1];
        uint64_t off = retrlm__get_u64(e + 32), bytes = retrlm__get_u64(e + 40);
        uint32_t type = retrlm__get_u32(e + 52);
        size_t esz = retrlm_dtype_size((retrlm_dtype)type), k;
        memcpy(name, e, RETRLM_IO_NAME_MAX);
        name[RETRLM_IO_NAME_MAX] = '\0';
        if (e[RETRLM_IO_NAME_MAX] != 0 || !retrlm__valid_label(name, RETRLM_IO_NAME_MAX))
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section %d: invalid name", src, i);
        for (k = strlen(name); k < 32; k++)
            if (e[k]) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': name is not NUL-padded", src, name);
        if (retrlm__get_u64(e + 56))
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': reserved field is not zero", src, name);
        for (j = 0; j < i; j++)
            if (!strncmp((const char *)retrlm__entry(r, j), name, 32))
                return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s' appears twice", src, name);
        if (!esz) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': unknown element type %lu", src, name, (unsigned long)type);
        expect = (i == 0) ? retrlm__align64(table_end) : retrlm__align64(pos);
        if (off != expect)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': payload at offset %llu, expected %llu",
                                src, name, (unsigned long long)off, (unsigned long long)expect);
        if (bytes > r->size || off > r->size - bytes)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': %llu bytes at offset %llu run past the end of the %lu-byte file",
                                src, name, (unsigned long long)bytes, (unsigned long long)off, (unsigned long)r->size);
        if (bytes % esz)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s': %llu bytes is not a whole number of %s elements",
                                src, name, (unsigned long long)bytes, retrlm_dtype_name((retrlm_dtype)type));
        for (k = pos; k < (size_t)off; k++)
            if (r->base_[k])
                return retrlm__fail(RETRLM_ERR_CORRUPT, "%s: padding before section '%s': byte at offset %lu is not zero",
                                    src, name, (unsigned long)k);
        if (!(flags & RETRLM_READER_NO_VERIFY) &&
            retrlm_crc32(0, r->base_ + off, (size_t)bytes) != retrlm__get_u32(e + 48))
            return retrlm__fail(RETRLM_ERR_CORRUPT, "%s: section '%s': CRC mismatch (%llu bytes at offset %llu)",
                                src, name, (unsigned long long)bytes, (unsigned long long)off);
        pos = (size_t)(off + bytes);
    }
    if (pos != r->size && !(r->n_sections == 0 && r->size == RETRLM__HEADER))
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu bytes after the last section", src,
                            (unsigned long)(r->size - pos));
    if (!retrlm__host_is_le()) { // the image is owned here: turn the payloads to host order
        for (i = 0; i < r->n_sections; i++) {
            const unsigned char *e = retrlm__entry(r, i);
            size_t esz = retrlm_dtype_size((retrlm_dtype)retrlm__get_u32(e + 52));
            retrlm__byteswap((unsigned char *)r->base_ + retrlm__get_u64(e + 32),
                             (size_t)retrlm__get_u64(e + 40) / esz, esz);
        }
    }
    return RETRLM_OK;
}

// An owned, 64-byte aligned buffer of n bytes: *owned is what to free, the result where to write.
static unsigned char *retrlm__alloc_aligned(size_t n, void **owned) {
    unsigned char *p;
    *owned = NULL;
    if (n > SIZE_MAX - RETRLM__ALIGN) return NULL;
    p = (unsigned char *)retrlm__alloc(n + RETRLM__ALIGN, 1);
    if (!p) return NULL;
    *owned = p;
    return p + (RETRLM__ALIGN - (uintptr_t)p % RETRLM__ALIGN) % RETRLM__ALIGN;
}

RETRLM_API retrlm_result retrlm_reader_open_memory(retrlm_reader *r, const void *data,
                                                   size_t size, const char *kind, int flags) {
    retrlm_result res;
    RETRLM_ASSERT(r);
    memset(r, 0, sizeof *r);
    strcpy(r->source_, "<memory>");
    if (!data && size) return retrlm__fail(RETRLM_ERR_ARG, "<memory>: NULL data");
    r->size = size;
    if (retrlm__host_is_le() && (uintptr_t)data % RETRLM__ALIGN == 0) {
        r->base_ = (const unsigned char *)data;
    } else {
        unsigned char *p = retrlm__alloc_aligned(size, &r->owned_);
        if (!p) return retrlm__fail(RETRLM_ERR_NOMEM, "<memory>: no memory to copy %lu bytes", (unsigned long)size);
        if (size) memcpy(p, data, size);
        r->base_ = p;
    }
    res = retrlm__reader_check(r, kind, flags);
    if (res) retrlm_reader_close(r);
    return res;
}

#ifndef RETRLM_NO_STDIO
static void retrlm__set_source(retrlm_reader *r, const char *path) {
    size_t n = strlen(path);
    if (n < sizeof r->source_) strcpy(r->source_, path);
    else snprintf(r->source_, sizeof r->source_, "...%s", path + n - (sizeof r->source_ - 4));
}

RETRLM_API retrlm_result retrlm_reader_open(retrlm_reader *r, const char *path, const char *kind,
                                            int flags) {
    retrlm_result res;
    unsigned char *p;
    RETRLM_ASSERT(r);
    memset(r, 0, sizeof *r);
    if (!path) return retrlm__fail(RETRLM_ERR_ARG, "reader: NULL path");
    retrlm__set_source(r, path);
#ifdef RETRLM__POSIX
    {
        struct stat st;
        size_t got = 0;
        int fd = open(path, O_RDONLY);
        if (fd < 0) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open: %s", r->source_, strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
            close(fd);
            return retrlm__fail(RETRLM_ERR_IO, "%s: not a regular file of a usable size", r->source_);
        }
        r->size = (size_t)st.st_size;
        if (retrlm__host_is_le() && !(flags & RETRLM_READER_NO_MMAP) && r->size >= ((size_t)1 << 20)) {
            void *m = mmap(NULL, r->size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m != MAP_FAILED) {
                r->base_ = (const unsigned char *)m;
                r->mapped_ = 1;
            }
        }
        if (!r->mapped_) {
            p = retrlm__alloc_aligned(r->size, &r->owned_);
            if (!p) {
                close(fd);
                return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu bytes", r->source_, (unsigned long)r->size);
            }
            while (got < r->size) {
                ssize_t k = read(fd, p + got, RETRLM__MIN(r->size - got, (size_t)1 << 30));
                if (k < 0 && errno == EINTR) continue;
                if (k <= 0) break;
                got += (size_t)k;
            }
            r->size = got; // a file that shrank while read is checked as what was read
            r->base_ = p;
        }
        close(fd);
    }
#else
    {
        FILE *f = fopen(path, "rb");
        long len;
        if (!f) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open", r->source_);
        if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
            fclose(f);
            return retrlm__fail(RETRLM_ERR_IO, "%s: cannot find its size", r->source_);
        }
        r->size = (size_t)len;
        p = retrlm__alloc_aligned(r->size, &r->owned_);
        if (!p) {
            fclose(f);
            return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu bytes", r->source_, (unsigned long)r->size);
        }
        r->size = fread(p, 1, r->size, f);
        fclose(f);
        r->base_ = p;
    }
#endif
    res = retrlm__reader_check(r, kind, flags);
    if (res) retrlm_reader_close(r);
    return res;
}
#endif // RETRLM_NO_STDIO

RETRLM_API retrlm_result retrlm_reader_section(const retrlm_reader *r, int i,
                                               retrlm_section_info *info) {
    const unsigned char *e;
    RETRLM_ASSERT(r && info);
    if (i < 0 || i >= r->n_sections)
        return retrlm__fail(RETRLM_ERR_RANGE, "%s: section index %d of %d", r->source_, i, r->n_sections);
    e = retrlm__entry(r, i);
    memset(info, 0, sizeof *info);
    memcpy(info->name, e, RETRLM_IO_NAME_MAX);
    info->type = (retrlm_dtype)retrlm__get_u32(e + 52);
    info->offset = (size_t)retrlm__get_u64(e + 32);
    info->bytes = (size_t)retrlm__get_u64(e + 40);
    info->count = info->bytes / retrlm_dtype_size(info->type);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_reader_get(const retrlm_reader *r, const char *name,
                                           retrlm_dtype type, const void **data, size_t *count) {
    retrlm_section_info info;
    int i;
    RETRLM_ASSERT(r && name);
    for (i = 0; i < r->n_sections; i++) {
        if (strncmp((const char *)retrlm__entry(r, i), name, 32)) continue;
        retrlm_reader_section(r, i, &info);
        if (info.type != type)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s' holds %s, expected %s", r->source_,
                                name, retrlm_dtype_name(info.type), retrlm_dtype_name(type));
        if (data) *data = info.bytes ? (const void *)(r->base_ + info.offset) : NULL;
        if (count) *count = info.count;
        return RETRLM_OK;
    }
    return retrlm__fail(RETRLM_ERR_NOT_FOUND, "%s: no section '%s' in this '%s' file", r->source_, name, r->kind);
}

RETRLM_API retrlm_result retrlm_reader_read(const retrlm_reader *r, const char *name,
                                            retrlm_dtype type, void *out, size_t count) {
    const void *p;
    size_t n;
    retrlm_result res = retrlm_reader_get(r, name, type, &p, &n);
    if (res) return res;
    if (n != count)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s' has %lu elements, expected %lu", r->source_,
                            name, (unsigned long)n, (unsigned long)count);
    if (n) memcpy(out, p, n * retrlm_dtype_size(type));
    return RETRLM_OK;
}
/* ---- retrlm_impl/analyzer.c ---- */

// ---------------------------------------------------------------------------------------------
// Unicode: a small lower-case map and a word-character test. The map covers Latin-1, Latin
// Extended-A/B, Greek and Cyrillic: rows {first, last, delta, step} mean every step-th code point
// from first to last maps to itself + delta. Rows were derived from UnicodeData.txt (field 13,
// simple lower-case mapping) of the Debian unicode-data package for U+0080..U+052F.
typedef struct retrlm__lower_range {
    uint16_t first, last;
    int16_t  delta;
    uint8_t  step;
} retrlm__lower_range;

static const retrlm__lower_range retrlm__lower_ranges[] = {
    {0x00C0, 0x00D6, 32, 1},    {0x00D8, 0x00DE, 32, 1},    {0x0100, 0x012E, 1, 2},
    {0x0130, 0x0130, -199, 1},  {0x0132, 0x0136, 1, 2},     {0x0139, 0x0147, 1, 2},
    {0x014A, 0x0176, 1, 2},     {0x0178, 0x0178, -121, 1},  {0x0179, 0x017D, 1, 2},
    {0x0181, 0x0181, 210, 1},   {0x0182, 0x0184, 1, 2},     {0x0186, 0x0186, 206, 1},
    {0x0187, 0x0187, 1, 1},     {0x0189, 0x018A, 205, 1},   {0x018B, 0x018B, 1, 1},
    {0x018E, 0x018E, 79, 1},    {0x018F, 0x018F, 202, 1},   {0x0190, 0x0190, 203, 1},
    {0x0191, 0x0191, 1, 1},     {0x0193, 0x0193, 205, 1},   {0x0194, 0x0194, 207, 1},
    {0x0196, 0x0196, 211, 1},   {0x0197, 0x0197, 209, 1},   {0x0198, 0x0198, 1, 1},
    {0x019C, 0x019C, 211, 1},   {0x019D, 0x019D, 213, 1},   {0x019F, 0x019F, 214, 1},
    {0x01A0, 0x01A4, 1, 2},     {0x01A6, 0x01A6, 218, 1},   {0x01A7, 0x01A7, 1, 1},
    {0x01A9, 0x01A9, 218, 1},   {0x01AC, 0x01AC, 1, 1},     {0x01AE, 0x01AE, 218, 1},
    {0x01AF, 0x01AF, 1, 1},     {0x01B1, 0x01B2, 217, 1},   {0x01B3, 0x01B5, 1, 2},
    {0x01B7, 0x01B7, 219, 1},   {0x01B8, 0x01B8, 1, 1},     {0x01BC, 0x01BC, 1, 1},
    {0x01C4, 0x01C4, 2, 1},     {0x01C5, 0x01C5, 1, 1},     {0x01C7, 0x01C7, 2, 1},
    {0x01C8, 0x01C8, 1, 1},     {0x01CA, 0x01CA, 2, 1},     {0x01CB, 0x01DB, 1, 2},
    {0x01DE, 0x01EE, 1, 2},     {0x01F1, 0x01F1, 2, 1},     {0x01F2, 0x01F4, 1, 2},
    {0x01F6, 0x01F6, -97, 1},   {0x01F7, 0x01F7, -56, 1},   {0x01F8, 0x021E, 1, 2},
    {0x0220, 0x0220, -130, 1},  {0x0222, 0x0232, 1, 2},     {0x023A, 0x023A, 10795, 1},
    {0x023B, 0x023B, 1, 1},     {0x023D, 0x023D, -163, 1},  {0x023E, 0x023E, 10792, 1},
    {0x0241, 0x0241, 1, 1},     {0x0243, 0x0243, -195, 1},  {0x0244, 0x0244, 69, 1},
    {0x0245, 0x0245, 71, 1},    {0x0246, 0x024E, 1, 2},     {0x0370, 0x0372, 1, 2},
    {0x0376, 0x0376, 1, 1},     {0x037F, 0x037F, 116, 1},   {0x0386, 0x0386, 38, 1},
    {0x0388, 0x038A, 37, 1},    {0x038C, 0x038C, 64, 1},    {0x038E, 0x038F, 63, 1},
    {0x0391, 0x03A1, 32, 1},    {0x03A3, 0x03AB, 32, 1},    {0x03CF, 0x03CF, 8, 1},
    {0x03D8, 0x03EE, 1, 2},     {0x03F4, 0x03F4, -60, 1},   {0x03F7, 0x03F7, 1, 1},
    {0x03F9, 0x03F9, -7, 1},    {0x03FA, 0x03FA, 1, 1},     {0x03FD, 0x03FF, -130, 1},
    {0x0400, 0x040F, 80, 1},    {0x0410, 0x042F, 32, 1},    {0x0460, 0x0480, 1, 2},
    {0x048A, 0x04BE, 1, 2},     {0x04C0, 0x04C0, 15, 1},    {0x04C1, 0x04CD, 1, 2},
    {0x04D0, 0x052E, 1, 2},
};

RETRLM_API uint32_t retrlm_unicode_lower(uint32_t c) {
    int lo = 0, hi = (int)(sizeof retrlm__lower_ranges / sizeof retrlm__lower_ranges[0]) - 1;
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c < 0xC0 || c > 0x52E) return c;
    while (lo <= hi) { // rows are sorted and disjoint
        int mid = (lo + hi) / 2;
        const retrlm__lower_range *r = &retrlm__lower_ranges[mid];
        if (c < r->first) hi = mid - 1;
        else if (c > r->last) lo = mid + 1;
        else return ((c - r->first) % r->step == 0) ? (uint32_t)((int32_t)c + r->delta) : c;
    }
    return c;
}

// Letters, digits and combining marks continue a token; punctuation, symbols, spaces, controls,
// private use and emoji separate tokens. Scripts beyond those named count as letters.
static int retrlm__is_word_cp(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    if (c < 0xC0) // Latin-1 punctuation block: only ª ² ³ µ ¹ º ¼ ½ ¾ are letters/numbers
        return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
               (c >= 0xBC && c <= 0xBE);
    if (c == 0xD7 || c == 0xF7) return 0; // × ÷
    if (c == 0x37E || c == 0x387 || c == 0x589 || c == 0x5BE || c == 0x5C0 || c == 0x5C3 ||
        c == 0x60C || c == 0x61B || c == 0x61F || c == 0x6D4 || c == 0x964 || c == 0x965)
        return 0; // punctuation inside letter blocks (Greek, Armenian, Hebrew, Arabic, Devanagari)
    if (c >= 0x2000 && c <= 0x2BFF) return 0; // general punctuation .. misc symbols and arrows
    if (c >= 0x2E00 && c <= 0x2E7F) return 0; // supplemental punctuation
    if (c >= 0x3000 && c <= 0x303F) return 0; // CJK symbols and punctuation
    if (c >= 0xD800 && c <= 0xF8FF) return 0; // surrogates, private use
    if (c >= 0xFE00 && c <= 0xFE6F) return 0; // variation selectors, vertical/small forms
    if ((c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
        (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65) || (c >= 0xFFF0 && c <= 0xFFFF))
        return 0; // fullwidth punctuation, specials
    if (c >= 0x1F000 && c <= 0x1FAFF) return 0; // emoji, pictographs, playing cards
    if (c >= 0xE0000) return 0;                 // tags, private use planes
    return 1;
}

// Decodes one UTF-8 sequence at s (n > 0 bytes available); returns its length (>= 1) and the
// code point, or 0xFFFFFFFF for an invalid, overlong, surrogate or truncated sequence (length 1).
static int retrlm__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0], min;
    int len, i;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; c &= 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; c &= 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; c &= 0x07; min = 0x10000; }
    else { *cp = 0xFFFFFFFFu; return 1; }
    if ((size_t)len > n) { *cp = 0xFFFFFFFFu; return 1; }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = 0xFFFFFFFFu; return 1; }
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { *cp = 0xFFFFFFFFu; return 1; }
    *cp = c;
    return len;
}

static int retrlm__utf8_encode(uint32_t c, char *out) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

// ---------------------------------------------------------------------------------------------
// Porter stemmer, from M.F. Porter, "An algorithm for suffix stripping", Program 14(3), 1980,
// with the two departures of the author's reference implementation (step 2 maps "bli" to
// "ble" instead of "abli" to "able", and adds "logi" -> "log"). The word is b[0..k]; j marks
// the end of the stem once a suffix has matched.
typedef struct retrlm__porter {
    char *b;
    int   k, j;
} retrlm__porter;

static int retrlm__p_cons(const retrlm__porter *z, int i) {
    switch (z->b[i]) {
    case 'a': case 'e': case 'i': case 'o': case 'u': return 0;
    case 'y': return i == 0 ? 1 : !retrlm__p_cons(z, i - 1);
    default: return 1;
    }
}

// m: the number of vowel-consonant sequences in b[0..j] ([C](VC)^m[V])
static int retrlm__p_m(const retrlm__porter *z) {
    int n = 0, i = 0, prev_vowel = 0;
    for (i = 0; i <= z->j; i++) {
        int c = retrlm__p_cons(z, i);
        if (c && prev_vowel) n++;
        prev_vowel = !c;
    }
    return n;
}

static int retrlm__p_vowel_in_stem(const retrlm__porter *z) {
    int i;
    for (i = 0; i <= z->j; i++)
        if (!retrlm__p_cons(z, i)) return 1;
    return 0;
}

static int retrlm__p_doublec(const retrlm__porter *z, int i) {
    return i >= 1 && z->b[i] == z->b[i - 1] && retrlm__p_cons(z, i);
}

// cvc(i): b[i-2..i] is consonant-vowel-consonant and b[i] is not w, x or y
static int retrlm__p_cvc(const retrlm__porter *z, int i) {
    char ch;
    if (i < 2 || !retrlm__p_cons(z, i) || retrlm__p_cons(z, i - 1) || !retrlm__p_cons(z, i - 2))
        return 0;
    ch = z->b[i];
    return ch != 'w' && ch != 'x' && ch != 'y';
}

// does b[0..k] end with s (len bytes)? If so, j = k - len
static int retrlm__p_ends_n(retrlm__porter *z, const char *s, int len) {
    int i;
    if (s[len - 1] != z->b[z->k] || len > z->k + 1) return 0; // last letter first: cheap
    for (i = 0; i < len - 1; i++)
        if (z->b[z->k - len + 1 + i] != s[i]) return 0;
    z->j = z->k - len;
    return 1;
}
#define retrlm__p_ends(z, lit) retrlm__p_ends_n(z, lit, (int)sizeof(lit) - 1)

static void retrlm__p_setto(retrlm__porter *z, const char *s) {
    int len = (int)strlen(s);
    memcpy(z->b + z->j + 1, s, (size_t)len);
    z->k = z->j + len;
}

typedef struct retrlm__p_rule {
    const char *suffix, *repl;
    int         len; // of suffix
} retrlm__p_rule;

// tries the rules in order; the first suffix that matches decides, and the replacement happens
// when m() > 0
static void retrlm__p_rules(retrlm__porter *z, const retrlm__p_rule *rules, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (retrlm__p_ends_n(z, rules[i].suffix, rules[i].len)) {
            if (retrlm__p_m(z) > 0) retrlm__p_setto(z, rules[i].repl);
            return;
        }
}

static void retrlm__p_step1ab(retrlm__porter *z) {
    if (z->b[z->k] == 's') {
        if (retrlm__p_ends(z, "sses")) z->k -= 2;
        else if (retrlm__p_ends(z, "ies")) retrlm__p_setto(z, "i");
        else if (z->b[z->k - 1] != 's') z->k--;
    }
    if (retrlm__p_ends(z, "eed")) {
        if (retrlm__p_m(z) > 0) z->k--;
    } else if ((retrlm__p_ends(z, "ed") || retrlm__p_ends(z, "ing")) && retrlm__p_vowel_in_stem(z)) {
        z->k = z->j;
        if (retrlm__p_ends(z, "at")) retrlm__p_setto(z, "ate");
        else if (retrlm__p_ends(z, "bl")) retrlm__p_setto(z, "ble");
        else if (retrlm__p_ends(z, "iz")) retrlm__p_setto(z, "ize");
        else if (retrlm__p_doublec(z, z->k)) {
            char ch = z->b[z->k - 1];
            if (ch != 'l' && ch != 's' && ch != 'z') z->k--;
        } else if (retrlm__p_m(z) == 1 && retrlm__p_cvc(z, z->k))
            retrlm__p_setto(z, "e");
    }
}

#define RETRLM__R(suf, rep) {suf, rep, (int)sizeof(suf) - 1}
static const retrlm__p_rule retrlm__p_step2_rules[] = {
    RETRLM__R("ational", "ate"), RETRLM__R("tional", "tion"), RETRLM__R("enci", "ence"),
    RETRLM__R("anci", "ance"),   RETRLM__R("izer", "ize"),    RETRLM__R("bli", "ble"),
    RETRLM__R("alli", "al"),     RETRLM__R("entli", "ent"),   RETRLM__R("eli", "e"),
    RETRLM__R("ousli", "ous"),   RETRLM__R("ization", "ize"), RETRLM__R("ation", "ate"),
    RETRLM__R("ator", "ate"),    RETRLM__R("alism", "al"),    RETRLM__R("iveness", "ive"),
    RETRLM__R("fulness", "ful"), RETRLM__R("ousness", "ous"), RETRLM__R("aliti", "al"),
    RETRLM__R("iviti", "ive"),   RETRLM__R("biliti", "ble"),  RETRLM__R("logi", "log")};
static const retrlm__p_rule retrlm__p_step3_rules[] = {
    RETRLM__R("icate", "ic"), RETRLM__R("ative", ""), RETRLM__R("alize", "al"), RETRLM__R("iciti", "ic"),
    RETRLM__R("ical", "ic"),  RETRLM__R("ful", ""),   RETRLM__R("ness", "")};
static const retrlm__p_rule retrlm__p_step4_suffixes[] = {
    RETRLM__R("al", ""),   RETRLM__R("ance", ""), RETRLM__R("ence", ""), RETRLM__R("er", ""),
    RETRLM__R("ic", ""),   RETRLM__R("able", ""), RETRLM__R("ible", ""), RETRLM__R("ant", ""),
    RETRLM__R("ement", ""), RETRLM__R("ment", ""), RETRLM__R("ent", ""), RETRLM__R("ion", ""),
    RETRLM__R("ou", ""),   RETRLM__R("ism", ""),  RETRLM__R("ate", ""),  RETRLM__R("iti", ""),
    RETRLM__R("ous", ""),  RETRLM__R("ive", ""),  RETRLM__R("ize", "")};
#undef RETRLM__R

static void retrlm__p_step4(retrlm__porter *z) {
    int i, n = (int)(sizeof retrlm__p_step4_suffixes / sizeof retrlm__p_step4_suffixes[0]);
    for (i = 0; i < n; i++) {
        const retrlm__p_rule *r = &retrlm__p_step4_suffixes[i];
        if (!retrlm__p_ends_n(z, r->suffix, r->len)) continue;
        // "ion" only after s or t; otherwise the next suffix ("ou") gets its chance
        if (r->len == 3 && r->suffix[0] == 'i' && r->suffix[1] == 'o' &&
            !(z->j >= 0 && (z->b[z->j] == 's' || z->b[z->j] == 't')))
            continue;
        if (retrlm__p_m(z) > 1) z->k = z->j;
        return;
    }
}

RETRLM_API int retrlm_porter_stem(char *w, int len) {
    retrlm__porter z;
    int i;
    if (len <= 2) return len;
    for (i = 0; i < len; i++)
        if (w[i] < 'a' || w[i] > 'z') return len; // only ASCII lower-case words
    z.b = w;
    z.k = len - 1;
    z.j = 0;
    retrlm__p_step1ab(&z);
    if (z.k > 0) {
        if (retrlm__p_ends(&z, "y")) { // step 1c
            if (retrlm__p_vowel_in_stem(&z)) z.b[z.k] = 'i';
        }
        retrlm__p_rules(&z, retrlm__p_step2_rules, (int)(sizeof retrlm__p_step2_rules / sizeof retrlm__p_step2_rules[0]));
        retrlm__p_rules(&z, retrlm__p_step3_rules, (int)(sizeof retrlm__p_step3_rules / sizeof retrlm__p_step3_rules[0]));
        retrlm__p_step4(&z);
        z.j = z.k; // step 5
        if (z.b[z.k] == 'e') {
            int m = retrlm__p_m(&z);
            if (m > 1 || (m == 1 && !retrlm__p_cvc(&z, z.k - 1))) z.k--;
        }
        if (z.b[z.k] == 'l' && retrlm__p_doublec(&z, z.k) && retrlm__p_m(&z) > 1) z.k--;
    }
    w[z.k + 1] = 0;
    return z.k + 1;
}

// ---------------------------------------------------------------------------------------------
// The analyzer

// Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (also Anserini's default)
static const char *const retrlm__english_stop[] = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
    "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
    "there", "these", "they", "this", "to", "was", "will", "with"};

static int retrlm__cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

RETRLM_API retrlm_result retrlm_analyzer_init(retrlm_analyzer *a, const retrlm_analyzer_config *cfg) {
    retrlm_analyzer_config def;
    const char *const *words;
    int n, i, w;
    size_t bytes = 0, at = 0;
    memset(a, 0, sizeof *a);
    if (!cfg) {
        memset(&def, 0, sizeof def);
        cfg = &def;
    }
    a->stem = !cfg->no_stem;
    if (cfg->no_stopwords) return RETRLM_OK;
    if (cfg->stopwords) {
        words = cfg->stopwords;
        n = cfg->n_stopwords;
        if (n < 0) return retrlm__fail(RETRLM_ERR_ARG, "analyzer: n_stopwords %d < 0", n);
    } else {
        words = retrlm__english_stop;
        n = (int)(sizeof retrlm__english_stop / sizeof retrlm__english_stop[0]);
    }
    for (i = 0; i < n; i++) {
        if (!words[i]) return retrlm__fail(RETRLM_ERR_ARG, "analyzer: stop word %d is NULL", i);
        bytes += strlen(words[i]) + 1;
    }
    a->stop_text_ = (char *)retrlm__alloc(bytes, 1);
    a->stop_ = (const char **)retrlm__alloc((size_t)n, sizeof(char *));
    if (!a->stop_text_ || !a->stop_) {
        retrlm_analyzer_free(a);
        return retrlm__fail(RETRLM_ERR_NOMEM, "analyzer: stop list of %d words", n);
    }
    for (i = 0; i < n; i++) {
        size_t l = strlen(words[i]) + 1;
        memcpy(a->stop_text_ + at, words[i], l);
        if (l - 1 > a->stop_max_) a->stop_max_ = l - 1;
        a->stop_[i] = a->stop_text_ + at;
        at += l;
    }
    qsort((void *)a->stop_, (size_t)n, sizeof(char *), retrlm__cmp_cstr);
    for (i = w = 0; i < n; i++) // drop duplicates
        if (w == 0 || strcmp(a->stop_[w - 1], a->stop_[i])) a->stop_[w++] = a->stop_[i];
    a->n_stopwords = w;
    a->stop_bytes_ = bytes;
    return RETRLM_OK;
}

RETRLM_API void retrlm_analyzer_free(retrlm_analyzer *a) {
    if (!a) return;
    RETRLM_FREE(a->stop_text_);
    RETRLM_FREE((void *)a->stop_);
    memset(a, 0, sizeof *a);
}

static int retrlm__is_stop(const retrlm_analyzer *a, const char *t, int len) {
    int lo = 0, hi = a->n_stopwords - 1;
    if ((size_t)len > a->stop_max_) return 0;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(t, a->stop_[mid]);
        if (c == 0) return 1;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return 0;
}

// 1: ASCII letter or digit (the fast path of the tokenizer)
static const unsigned char retrlm__ascii_word[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};

static int retrlm__word_at(const unsigned char *s, size_t n) {
    uint32_t c;
    if (s[0] < 0x80) return retrlm__ascii_word[s[0]];
    retrlm__utf8_decode(s, n, &c);
    return c != 0xFFFFFFFFu && retrlm__is_word_cp(c);
}

RETRLM_API void retrlm_analyze(const retrlm_analyzer *a, const char *text, size_t len,
                               retrlm_term_fn fn, void *user) {
    const unsigned char *s = (const unsigned char *)text;
    char term[RETRLM_ANALYZER_MAX_TERM + 8];
    size_t i = 0;
    int pos = 0;
    while (i < len) {
        int tl = 0, ascii = 1, full = 0;
        if (!retrlm__word_at(s + i, len - i)) {
            uint32_t c;
            i += s[i] < 0x80 ? 1 : (size_t)retrlm__utf8_decode(s + i, len - i, &c);
            continue;
        }
        while (i < len) {
            unsigned char ch = s[i];
            if (ch < 0x80) {
                if (!retrlm__ascii_word[ch]) break;
                if (!full && tl < RETRLM_ANALYZER_MAX_TERM)
                    term[tl++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
                else
                    full = 1;
                i++;
            } else {
                uint32_t c;
                char enc[4];
                int n = retrlm__utf8_decode(s + i, len - i, &c), m;
                if (c == 0xFFFFFFFFu || !retrlm__is_word_cp(c)) break;
                m = retrlm__utf8_encode(retrlm_unicode_lower(c), enc);
                if (!full && tl + m <= RETRLM_ANALYZER_MAX_TERM) {
                    memcpy(term + tl, enc, (size_t)m);
                    tl += m;
                    ascii = ascii && m == 1;
                } else
                    full = 1;
                i += (size_t)n;
            }
        }
        // possessive: "'s" or "’s" followed by a non-word character is dropped
        if (i < len) {
            size_t q = i;
            if (s[i] == '\'') q = i + 1;
            else if (s[i] == 0xE2 && i + 2 < len && s[i + 1] == 0x80 && s[i + 2] == 0x99) q = i + 3;
            if (q > i && q < len && (s[q] | 0x20) == 's' && (q + 1 == len || !retrlm__word_at(s + q + 1, len - q - 1)))
                i = q + 1;
        }
        term[tl] = 0;
        if (a->n_stopwords && retrlm__is_stop(a, term, tl)) {
            pos++;
            continue;
        }
        if (a->stem && ascii) tl = retrlm_porter_stem(term, tl);
        if (fn(user, term, tl, pos++)) return;
    }
}
/* ---- retrlm_impl/bm25.c ---- */

// The layout of the postings is described at the codec below.
#define RETRLM__BM25_LAYOUT 2

typedef struct retrlm__bm25_triple {
    uint32_t term, doc, tf; // pending term index, pending document index, frequency
} retrlm__bm25_triple;

typedef struct retrlm__bm25_pterm {
    char *key;
    int   value;
} retrlm__bm25_pterm;

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
    retrlm__bm25_pterm  *terms;   // stb_ds string hash: term -> pending term index
    char               **tstr;    // stb_ds: pending term index -> its key (strdup'ed, stable)
    retrlm__bm25_triple *post;    // stb_ds: postings in document order
    int64_t             *ids;     // stb_ds: pending documents' user ids
    uint32_t            *lens;    // stb_ds: their lengths
    unsigned char       *dead;    // stb_ds: 1 if deleted again before the commit
    retrlm__idmap        live;    // live pending id -> pending index
    retrlm__idmap        del;     // committed ids to delete -> 1
};

static void retrlm__bm25_pending_free(struct retrlm__bm25_pending *p) {
    if (!p) return;
    stbds_shfree(p->terms);
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

RETRLM_API retrlm_result retrlm_bm25_init(retrlm_bm25 *bm, const retrlm_bm25_config *cfg) {
    retrlm_bm25_config def;
    retrlm_result r;
    memset(bm, 0, sizeof *bm);
    if (!cfg) {
        memset(&def, 0, sizeof def);
        cfg = &def;
    }
    bm->k1 = cfg->k1 == 0 ? 0.9f : cfg->k1;
    bm->b = cfg->b == 0 ? 0.4f : cfg->b < 0 ? 0.0f : cfg->b;
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

typedef struct retrlm__bm25_doc_terms { // one analysed document
    char     *text; // stb_ds: terms, each NUL-terminated
    uint32_t *offs; // stb_ds: start of each term occurrence in text
    uint32_t  len;  // terms in the document
    int       sorted; // 0 if sorting ran out of memory
} retrlm__bm25_doc_terms;

static int retrlm__bm25_collect(void *user, const char *term, int len, int position) {
    retrlm__bm25_doc_terms *dt = (retrlm__bm25_doc_terms *)user;
    uint32_t at = (uint32_t)stbds_arrlen(dt->text);
    (void)position;
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
    stbds_sh_new_strdup(bm->pending_->terms); // (the arena mode trips UBSan inside stb_ds)
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
            dt->len = 0;
            retrlm_analyze(&bm->analyzer, t, l, retrlm__bm25_collect, dt);
            dt->sorted = retrlm__msort_u32(dt->offs, (size_t)stbds_arrlen(dt->offs), retrlm__cmp_text_off, dt->text);
        }
        // the dictionary in document order
        for (i = 0; i < m; i++) {
            retrlm__bm25_doc_terms *dt = &dts[i];
            int64_t id = ids[start + i];
            uint32_t doc = (uint32_t)stbds_arrlen(p->ids);
            size_t j, nt = (size_t)stbds_arrlen(dt->offs);
            if (!dt->sorted) {
                r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: sorting the terms of document %lld", (long long)id);
                goto done;
            }
            if (retrlm__idmap_get(&p->live, id) >= 0) { // a duplicate further apart in the batch
                r = retrlm__fail(RETRLM_ERR_ARG, "bm25_add_batch: id %lld given twice", (long long)id);
                goto done;
            }
            for (j = 0; j < nt;) {
                const char *term = dt->text + dt->offs[j];
                size_t e = j + 1;
                ptrdiff_t ti;
                retrlm__bm25_triple tr;
                while (e < nt && !strcmp(dt->text + dt->offs[e], term)) e++;
                ti = stbds_shgeti(p->terms, term);
                if (ti < 0) {
                    int idx = (int)stbds_arrlen(p->tstr);
                    stbds_shput(p->terms, term, idx);
                    ti = stbds_shgeti(p->terms, term);
                    stbds_arrput(p->tstr, p->terms[ti].key);
                }
                tr.term = (uint32_t)p->terms[ti].value;
                tr.doc = doc;
                tr.tf = (uint32_t)(e - j);
                stbds_arrput(p->post, tr);
                j = e;
            }
            stbds_arrput(p->ids, id);
            stbds_arrput(p->lens, dt->len);
            stbds_arrput(p->dead, 0);
            if (!retrlm__idmap_put(&p->live, id, (int)doc)) {
                r = retrlm__fail(RETRLM_ERR_NOMEM, "bm25_add: id table");
                goto done;
            }
        }
    }
    r = RETRLM_OK;
done:
    for (i = 0; i < CHUNK; i++) {
        stbds_arrfree(dts[i].text);
        stbds_arrfree(dts[i].offs);
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

typedef struct retrlm__bytes { // a growing byte buffer
    unsigned char *p;
    size_t n, cap;
} retrlm__bytes;

static int retrlm__bytes_reserve(retrlm__bytes *b, size_t extra) {
    if (b->n + extra > b->cap) {
        size_t cap = RETRLM__MAX(b->cap * 2, b->n + extra + 4096);
        unsigned char *q = (unsigned char *)retrlm__realloc(b->p, cap, 1);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    return 1;
}

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
static int retrlm__bm25_encode(retrlm__bytes *out, const uint32_t *docs, const uint32_t *tfs, int n,
                               const float *norm, float k1p1) {
    uint32_t gaps[RETRLM_BM25_BLOCK], tf1[RETRLM_BM25_BLOCK];
    unsigned char pay[RETRLM_BM25_BLOCK * 16 + 64];
    int64_t prev = -1;
    int s;
    if (!retrlm__bytes_reserve(out, 10)) return 0;
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
        if (!retrlm__bytes_reserve(out, 24 + plen)) return 0;
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

RETRLM_API retrlm_result retrlm_bm25_commit(retrlm_bm25 *bm) {
    struct retrlm__bm25_pending *p = bm->pending_;
    retrlm_bm25 nb; // the new committed index, fields filled below
    uint32_t *remap = NULL, *pmap = NULL, *pstart = NULL, *pdoc = NULL, *ptf = NULL, *porder = NULL;
    uint32_t *docs = NULL, *tfs = NULL, *doc_len = NULL, *id_order = NULL, *term_off = NULL, *df = NULL;
    uint64_t *post_off = NULL;
    int64_t *doc_id = NULL;
    retrlm__bytes post = {NULL, 0, 0}, text = {NULL, 0, 0};
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
    if (!remap || !pmap) goto fail;
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
    if (!doc_len || !doc_id || !id_order || !docs || !tfs) goto fail;
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
    if (!retrlm__msort_u32(id_order, (size_t)n_new, retrlm__cmp_by_id, doc_id)) goto fail;
    nb.doc_len_ = doc_len;
    if (retrlm__bm25_norms(&nb) != RETRLM_OK) goto fail;
    // pending postings grouped by term (counting sort keeps document order), terms sorted
    pstart = (uint32_t *)retrlm__calloc(n_pt + 1, sizeof(uint32_t));
    porder = (uint32_t *)retrlm__alloc(n_pt, sizeof(uint32_t));
    pdoc = (uint32_t *)retrlm__alloc((size_t)stbds_arrlen(p->post), sizeof(uint32_t));
    ptf = (uint32_t *)retrlm__alloc((size_t)stbds_arrlen(p->post), sizeof(uint32_t));
    if (!pstart || !porder || !pdoc || !ptf) goto fail;
    for (i = 0; i < (size_t)stbds_arrlen(p->post); i++) pstart[p->post[i].term + 1]++;
    for (i = 0; i < n_pt; i++) {
        pstart[i + 1] += pstart[i];
        porder[i] = (uint32_t)i;
    }
    {
        uint32_t *fill = (uint32_t *)retrlm__alloc(n_pt, sizeof(uint32_t));
        if (!fill) goto fail;
        memcpy(fill, pstart, n_pt * sizeof(uint32_t));
        for (i = 0; i < (size_t)stbds_arrlen(p->post); i++) {
            uint32_t at = fill[p->post[i].term]++;
            pdoc[at] = p->post[i].doc;
            ptf[at] = p->post[i].tf;
        }
        RETRLM_FREE(fill);
    }
    if (!retrlm__msort_u32(porder, n_pt, retrlm__cmp_pterm, p->tstr)) goto fail;
    // merge the two sorted dictionaries
    cap_terms = (size_t)bm->n_terms + n_pt + 1;
    term_off = (uint32_t *)retrlm__alloc(cap_terms, sizeof(uint32_t));
    post_off = (uint64_t *)retrlm__alloc(cap_terms, sizeof(uint64_t));
    df = (uint32_t *)retrlm__alloc(cap_terms, sizeof(uint32_t));
    if (!term_off || !post_off || !df) goto fail;
    nt = 0;
    a = 0;
    b = 0;
    while (a < bm->n_terms || b < (int)n_pt) {
        const char *ta = NULL, *tb = NULL;
        size_t la = 0, lb = 0;
        int c, n = 0;
        if (a < bm->n_terms) {
            ta = bm->term_text_ + bm->term_off_[a];
            la = bm->term_off_[a + 1] - bm->term_off_[a];
        }
        if (b < (int)n_pt) {
            tb = p->tstr[porder[b]];
            lb = strlen(tb);
        }
        if (!ta) c = 1;
        else if (!tb) c = -1;
        else {
            c = memcmp(ta, tb, RETRLM__MIN(la, lb));
            if (c == 0) c = la < lb ? -1 : la > lb ? 1 : 0;
        }
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
                goto fail;
            }
            if (!retrlm__bytes_reserve(&text, l)) goto fail;
            term_off[nt] = (uint32_t)text.n;
            memcpy(text.p + text.n, t, l);
            text.n += l;
            post_off[nt] = post.n;
            df[nt] = (uint32_t)n;
            if (!retrlm__bm25_encode(&post, docs, tfs, n, nb.norm_, k1p1)) goto fail;
            nt++;
        }
        if (c <= 0) a++;
        if (c >= 0) b++;
    }
    term_off[nt] = (uint32_t)text.n;
    post_off[nt] = post.n;
    if (!retrlm__bytes_reserve(&text, 1) || !retrlm__bytes_reserve(&post, 1)) goto fail;
    // install; ids 0..n-1 in order need no id arrays
    for (d = 0; d < n_new && doc_id[d] == d; d++) {}
    if (d == n_new) {
        RETRLM_FREE(doc_id);
        RETRLM_FREE(id_order);
        doc_id = NULL;
        id_order = NULL;
    }
    {
        float *norm = nb.norm_;
        uint64_t total = nb.total_len;
        double avgdl = nb.avgdl;
        nb.norm_ = NULL;
        retrlm__bm25_release(bm);
        bm->n_docs = n_new;
        bm->n_terms = nt;
        bm->total_len = total;
        bm->avgdl = avgdl;
        bm->norm_ = norm;
        bm->postings_bytes = post.n;
        bm->term_text_ = (const char *)text.p;
        bm->term_off_ = term_off;
        bm->post_off_ = post_off;
        bm->df_ = df;
        bm->post_ = post.p;
        bm->doc_len_ = doc_len;
        bm->doc_id_ = doc_id;
        bm->id_order_ = id_order;
        bm->owned_ = 1;
    }
    retrlm__bm25_pending_free(p);
    bm->pending_ = NULL;
    bm->n_pending = bm->n_pending_deletes = 0;
    RETRLM_FREE(remap);
    RETRLM_FREE(pmap);
    RETRLM_FREE(pstart);
    RETRLM_FREE(porder);
    RETRLM_FREE(pdoc);
    RETRLM_FREE(ptf);
    RETRLM_FREE(docs);
    RETRLM_FREE(tfs);
    return RETRLM_OK;
fail:
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
} retrlm__bm25_qcollect;

static int retrlm__bm25_qterm_cb(void *user, const char *term, int len, int position) {
    retrlm__bm25_qcollect *qc = (retrlm__bm25_qcollect *)user;
    int t = retrlm__bm25_find_term(qc->bm, term, (size_t)len), i;
    (void)position;
    if (t < 0) return 0;
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
    if (bm->n_docs > 0) retrlm_analyze(&bm->analyzer, query, len, retrlm__bm25_qterm_cb, &qc);
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
    if (retrlm__bm25_section_type(rd, "post_off") == RETRLM_DTYPE_U32) { // widened in memory
        const uint32_t *o32;
        if ((r = retrlm_reader_get(rd, "post_off", RETRLM_DTYPE_U32, (const void **)&o32, &n))) return r;
        bm->heap_off_ = (uint64_t *)retrlm__alloc(n, sizeof(uint64_t));
        if (!bm->heap_off_) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: %s: offsets", src);
        for (i = 0; i < n; i++) bm->heap_off_[i] = o32[i];
        bm->post_off_ = bm->heap_off_;
    } else if ((r = retrlm_reader_get(rd, "post_off", RETRLM_DTYPE_U64, (const void **)&bm->post_off_, &n)))
        return r;
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
    if (retrlm__bm25_section_type(rd, "doc_len") == RETRLM_DTYPE_U16) { // widened in memory
        const uint16_t *l16;
        if ((r = retrlm_reader_get(rd, "doc_len", RETRLM_DTYPE_U16, (const void **)&l16, &n))) return r;
        bm->heap_len_ = (uint32_t *)retrlm__alloc(n, sizeof(uint32_t));
        if (!bm->heap_len_) return retrlm__fail(RETRLM_ERR_NOMEM, "bm25_load: %s: lengths", src);
        for (i = 0; i < n; i++) bm->heap_len_[i] = l16[i];
        bm->doc_len_ = bm->heap_len_;
    } else if ((r = retrlm_reader_get(rd, "doc_len", RETRLM_DTYPE_U32, (const void **)&bm->doc_len_, &n)))
        return r;
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
/* ---- retrlm_impl/eval.c ---- */

// grade of id among the judgments (highest if repeated), 0 when unjudged
static int retrlm__eval_grade(int64_t id, const int64_t *rel_ids, const int *rel_grades, int n_rel) {
    int i, g = 0;
    for (i = 0; i < n_rel; i++)
        if (rel_ids[i] == id && rel_grades[i] > g) g = rel_grades[i];
    return g;
}

// 1 if ranked[r] repeats an earlier id (a repeated document earns nothing twice)
static int retrlm__eval_repeat(const int64_t *ranked, int r) {
    int i;
    for (i = 0; i < r; i++)
        if (ranked[i] == ranked[r]) return 1;
    return 0;
}

RETRLM_API double retrlm_eval_rr(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                 const int *rel_grades, int n_rel, int k, int min_grade) {
    int r, n = RETRLM__MIN(n_ranked, k);
    for (r = 0; r < n; r++)
        if (retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel) >= min_grade) return 1.0 / (r + 1);
    return 0.0;
}

static int retrlm__cmp_int_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x > y ? -1 : x < y;
}

RETRLM_API double retrlm_eval_ndcg(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                   const int *rel_grades, int n_rel, int k, int min_grade) {
    double dcg = 0, idcg = 0;
    int r, n = RETRLM__MIN(n_ranked, k), m = 0, i;
    int *g = (int *)retrlm__alloc((size_t)(n_rel > 0 ? n_rel : 1), sizeof(int));
    if (!g) return 0.0;
    for (r = 0; r < n; r++) {
        int gr = retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel);
        if (gr >= min_grade && gr > 0 && !retrlm__eval_repeat(ranked, r)) dcg += gr / log2(r + 2.0);
    }
    for (i = 0; i < n_rel; i++) { // ideal: every distinct judged id at its highest grade
        int j, dup = 0;
        for (j = 0; j < i; j++)
            if (rel_ids[j] == rel_ids[i]) dup = 1;
        if (!dup) {
            int gr = retrlm__eval_grade(rel_ids[i], rel_ids, rel_grades, n_rel);
            if (gr >= min_grade && gr > 0) g[m++] = gr;
        }
    }
    qsort(g, (size_t)m, sizeof(int), retrlm__cmp_int_desc);
    for (i = 0; i < m && i < k; i++) idcg += g[i] / log2(i + 2.0);
    RETRLM_FREE(g);
    return idcg > 0 ? dcg / idcg : 0.0;
}

RETRLM_API double retrlm_eval_recall(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                     const int *rel_grades, int n_rel, int k, int min_grade) {
    int r, n = RETRLM__MIN(n_ranked, k), found = 0, total = 0, i, j;
    for (i = 0; i < n_rel; i++) {
        int dup = 0;
        for (j = 0; j < i; j++)
            if (rel_ids[j] == rel_ids[i]) dup = 1;
        if (!dup && retrlm__eval_grade(rel_ids[i], rel_ids, rel_grades, n_rel) >= min_grade &&
            rel_grades[i] > 0)
            total++;
    }
    if (total == 0) return 0.0;
    for (r = 0; r < n; r++)
        if (!retrlm__eval_repeat(ranked, r) &&
            retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel) >= RETRLM__MAX(min_grade, 1))
            found++;
    return (double)found / total;
}

static int retrlm__cmp_qrel(const void *a, const void *b) {
    const retrlm_qrel *x = (const retrlm_qrel *)a, *y = (const retrlm_qrel *)b;
    return x->qid < y->qid ? -1 : x->qid > y->qid;
}

RETRLM_API retrlm_result retrlm_eval_retrieval(int n_queries, const int64_t *qids,
                                               const int64_t *ranked, const int *n_ranked,
                                               int stride, const retrlm_qrel *qrels,
                                               size_t n_qrels, int min_grade,
                                               retrlm_retrieval_metrics *out) {
    retrlm_qrel *q;
    int64_t *ids;
    int *grades;
    int i;
    memset(out, 0, sizeof *out);
    if (n_queries < 0 || stride < 0 || (n_queries > 0 && (!qids || (stride > 0 && !ranked))) ||
        (n_qrels > 0 && !qrels) || min_grade < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "eval_retrieval: %d queries, stride %d, min_grade %d (>= 1)",
                            n_queries, stride, min_grade);
    q = (retrlm_qrel *)retrlm__alloc(n_qrels, sizeof *q);
    ids = (int64_t *)retrlm__alloc(n_qrels, sizeof(int64_t));
    grades = (int *)retrlm__alloc(n_qrels, sizeof(int));
    if (!q || !ids || !grades) {
        RETRLM_FREE(q);
        RETRLM_FREE(ids);
        RETRLM_FREE(grades);
        return retrlm__fail(RETRLM_ERR_NOMEM, "eval_retrieval: %zu judgments", n_qrels);
    }
    if (n_qrels) memcpy(q, qrels, n_qrels * sizeof *q);
    qsort(q, n_qrels, sizeof *q, retrlm__cmp_qrel);
    for (i = 0; i < n_queries; i++) {
        size_t lo = 0, hi = n_qrels, j;
        int n_rel = 0, nr = n_ranked ? RETRLM__MIN(n_ranked[i], stride) : stride, any = 0;
        const int64_t *run = ranked + (size_t)i * (size_t)stride;
        while (lo < hi) { // first judgment of this query
            size_t mid = lo + (hi - lo) / 2;
            if (q[mid].qid < qids[i]) lo = mid + 1;
            else hi = mid;
        }
        for (j = lo; j < n_qrels && q[j].qid == qids[i]; j++) {
            ids[n_rel] = q[j].docid;
            grades[n_rel] = q[j].grade;
            if (q[j].grade >= min_grade) any = 1;
            n_rel++;
        }
        if (!any) continue;
        if (nr < 0) nr = 0;
        out->n_queries++;
        out->mrr10 += retrlm_eval_rr(run, nr, ids, grades, n_rel, 10, min_grade);
        out->ndcg10 += retrlm_eval_ndcg(run, nr, ids, grades, n_rel, 10, min_grade);
        out->recall10 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 10, min_grade);
        out->recall100 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 100, min_grade);
        out->recall1000 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 1000, min_grade);
    }
    if (out->n_queries) {
        double n = out->n_queries;
        out->mrr10 /= n;
        out->ndcg10 /= n;
        out->recall10 /= n;
        out->recall100 /= n;
        out->recall1000 /= n;
    }
    RETRLM_FREE(q);
    RETRLM_FREE(ids);
    RETRLM_FREE(grades);
    return RETRLM_OK;
}
#endif /* RETRLM_IMPLEMENTATION */

/*
   MIT License

   Copyright (c) 2026 the retrlm.h authors

   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:

   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.

   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
