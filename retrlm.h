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
     tokenizer byte-level BPE: GPT-2 exact encoding, encoder.json/vocab.bpe/.tiktoken, training

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
/* ---- retrlm_impl/tokenizer.h ---- */
/* ---- tokenizer: byte-level BPE (GPT-2 compatible), training, encode/decode ----------------
   Token ids are int in [0, n_vocab). Every byte value has its own token, so any byte string,
   valid UTF-8 or not, encodes, and decode(encode(s)) == s. Text is split into pre-tokens by
   GPT-2's pattern ('s 't 're 've 'm 'll 'd, ?letters, ?numbers, ?others, whitespace runs with
   the not-followed-by-non-space rule; letters and numbers are Unicode's L* and N*), then each
   pre-token is merged by rank: a pre-token that is itself a token stays whole, otherwise the
   adjacent pair of lowest rank merges first (leftmost on ties), exactly as tiktoken does.
   Special tokens (e.g. "<|endoftext|>") are matched in text only with RETRLM_TOKENIZE_SPECIAL.

   A tokenizer comes from one of: retrlm_tokenizer_load_gpt2 (encoder.json + vocab.bpe),
   retrlm_tokenizer_load_tiktoken (a .tiktoken rank file), retrlm_tokenizer_train, or
   retrlm_tokenizer_load (its own container file, kind "tokenizer"). All of them zero the
   object first; retrlm_tokenizer_free releases it. Encode/decode take a const tokenizer and may
   run concurrently. */

#define RETRLM_TOKENIZE_SPECIAL 1 /* flag: special-token text becomes its special id */

typedef struct retrlm_tokenizer {
    int n_vocab;   /* tokens, ids 0..n_vocab-1 (byte tokens, merged tokens and specials) */
    int n_merges;  /* merge rules (pairs of tokens that join into a token) */
    int n_special; /* special tokens, never produced by merges */
    /* private: flat arrays, (shape) */
    size_t *tok_off_;          /* (n_vocab + 1) byte offsets of each token in tok_bytes_ */
    unsigned char *tok_bytes_; /* (tok_off_[n_vocab]) the tokens' bytes, concatenated */
    int *merges_;              /* (n_merges, 4) left id, right id, result id, rank */
    int *special_;             /* (n_special) ids of the special tokens, ascending */
    int byte_id_[256];         /* (256) id of the token of each single byte */
    uint32_t *vocab_hash_;     /* (vocab_cap_) id + 1 of non-special tokens by bytes; 0 empty */
    uint32_t *pair_hash_;      /* (pair_cap_) merge index + 1 by (left, right); 0 empty */
    size_t vocab_cap_, pair_cap_; /* power-of-two table sizes */
    unsigned char special_first_[32]; /* (256 bits) first bytes of special tokens */
} retrlm_tokenizer;

/* Options for training; zero fields take the defaults. */
typedef struct retrlm_tokenizer_train_config {
    int vocab_size;                     /* final n_vocab incl. 256 bytes and specials (8192) */
    int min_frequency;                  /* a pair seen fewer times is never merged (2) */
    const char *const *special_tokens;  /* (n_special) NUL-terminated, appended last; borrowed */
    int n_special;
    retrlm_progress_fn progress;        /* stage "bpe count" then "bpe merge"; may cancel */
    void *progress_user;
} retrlm_tokenizer_train_config;

/* Corpus stream for training: sets *text and *len to the next document (borrowed until the next
   call) and returns 1, or returns 0 at the end (or -1 to fail the training with ERR_IO). */
typedef int (*retrlm_text_fn)(void *user, const char **text, size_t *len);

#ifndef RETRLM_NO_STDIO
/* GPT-2's encoder.json (token strings in GPT-2's byte->unicode alphabet -> id) and vocab.bpe
   ("#version" line, then merges "a b" in rank order). Entries that are neither single bytes nor
   results of a merge (GPT-2's "<|endoftext|>") become special tokens. */
RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2(retrlm_tokenizer *tok, const char *encoder_json,
                                                    const char *vocab_bpe);
/* A .tiktoken file: lines "base64(token bytes) rank", ranks 0..n-1. specials (n_special strings,
   copied) get ids n, n+1, ... (GPT-2: {"<|endoftext|>"} -> 50256). */
RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken(retrlm_tokenizer *tok, const char *path,
                                                        const char *const *specials, int n_special);
#endif
/* The same from memory (copied): json (json_size bytes), bpe (bpe_size bytes). */
RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2_memory(retrlm_tokenizer *tok, const char *json,
                                                           size_t json_size, const char *bpe,
                                                           size_t bpe_size);
RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken_memory(retrlm_tokenizer *tok,
                                                               const char *data, size_t size,
                                                               const char *const *specials,
                                                               int n_special);

/* Trains a byte-level BPE vocabulary on n_texts documents texts[i] (lens[i] bytes; lens NULL:
   NUL-terminated), or, when texts is NULL, on the documents next(user) yields. Special-token
   text in the corpus is left out of the counts (it stays whole when encoding). Pre-tokens are
   counted in parallel; merges pick the most frequent pair (ties: smallest left id, then right id),
   with incremental pair counts and a priority queue. Deterministic for any thread count. */
RETRLM_API retrlm_result retrlm_tokenizer_train(retrlm_tokenizer *tok,
                                                const retrlm_tokenizer_train_config *cfg,
                                                const char *const *texts, const size_t *lens,
                                                int n_texts, retrlm_text_fn next, void *user);
#ifndef RETRLM_NO_STDIO
/* Trains on the whole file at path as one text. */
RETRLM_API retrlm_result retrlm_tokenizer_train_file(retrlm_tokenizer *tok,
                                                     const retrlm_tokenizer_train_config *cfg,
                                                     const char *path);
#endif

/* Encodes text (len bytes, any bytes) into out (cap ids). *n_out gets the number of ids; with
   out NULL nothing is written (the size query). cap too small: RETRLM_ERR_RANGE, *n_out = size
   needed, out holds the first cap ids. flags: RETRLM_TOKENIZE_SPECIAL or 0. */
RETRLM_API retrlm_result retrlm_tokenizer_encode(const retrlm_tokenizer *tok, const char *text,
                                                 size_t len, int flags, int *out, size_t cap,
                                                 size_t *n_out);
/* Encodes n_texts documents in parallel, concatenated in order into out (cap ids); offsets
   (n_texts + 1, may be NULL) gets where each document's ids start; *n_out the total. out NULL:
   the size query. lens NULL: NUL-terminated texts. Same ids as encoding each one alone. */
RETRLM_API retrlm_result retrlm_tokenizer_encode_batch(const retrlm_tokenizer *tok,
                                                       const char *const *texts,
                                                       const size_t *lens, int n_texts, int flags,
                                                       int *out, size_t cap, size_t *offsets,
                                                       size_t *n_out);
/* Decodes n ids into out (cap bytes): *n_out gets the byte count, and a NUL follows when
   cap > *n_out. out NULL: the size query. An id outside [0, n_vocab): RETRLM_ERR_RANGE. */
RETRLM_API retrlm_result retrlm_tokenizer_decode(const retrlm_tokenizer *tok, const int *ids,
                                                 size_t n, char *out, size_t cap, size_t *n_out);

/* The bytes of token id (owned by tok, not NUL-terminated), *len their count; NULL if out of
   range. */
RETRLM_API const char *retrlm_tokenizer_token(const retrlm_tokenizer *tok, int id, size_t *len);
/* Id of the token whose bytes are exactly s[0..len) (special tokens included), or -1. */
RETRLM_API int retrlm_tokenizer_find(const retrlm_tokenizer *tok, const char *s, size_t len);
RETRLM_API int retrlm_tokenizer_is_special(const retrlm_tokenizer *tok, int id); /* 1 or 0 */

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_tokenizer_save(const retrlm_tokenizer *tok, const char *path);
RETRLM_API retrlm_result retrlm_tokenizer_load(retrlm_tokenizer *tok, const char *path);
#endif
/* The container image in memory: buf NULL gives *size only (the size query). */
RETRLM_API retrlm_result retrlm_tokenizer_save_memory(const retrlm_tokenizer *tok, void *buf,
                                                      size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_tokenizer_load_memory(retrlm_tokenizer *tok, const void *data,
                                                      size_t size); /* copies */
RETRLM_API void retrlm_tokenizer_free(retrlm_tokenizer *tok);

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
/* ---- retrlm_impl/unicode.c ---- */
// unicode: UTF-8 decoding and the three code point classes of GPT-2's pre-tokenizer pattern
// (\p{L}, \p{N}, \s). Tables come from unicode_tables.c, generated by tools/gen_unicode.sh.
/* ---- retrlm_impl/unicode_tables.c ---- */
// unicode_tables.c - GENERATED by tools/gen_unicode.sh from the Unicode Character
// Database 15.0.0 (UnicodeData.txt, PropList.txt) and tools/unicode_supplement.txt
// (5004 newer letters and numbers that tiktoken knows); do not edit by hand.
// Code point ranges, ascending and disjoint: class 1 = \p{L} (Lu Ll Lt Lm Lo),
// class 2 = \p{N} (Nd Nl No). Spaces: the White_Space property.

static const uint32_t retrlm__uni_class_ranges[821][3] = {
    {0x30, 0x39, 2},
    {0x41, 0x5A, 1},
    {0x61, 0x7A, 1},
    {0xAA, 0xAA, 1},
    {0xB2, 0xB3, 2},
    {0xB5, 0xB5, 1},
    {0xB9, 0xB9, 2},
    {0xBA, 0xBA, 1},
    {0xBC, 0xBE, 2},
    {0xC0, 0xD6, 1},
    {0xD8, 0xF6, 1},
    {0xF8, 0x2C1, 1},
    {0x2C6, 0x2D1, 1},
    {0x2E0, 0x2E4, 1},
    {0x2EC, 0x2EC, 1},
    {0x2EE, 0x2EE, 1},
    {0x370, 0x374, 1},
    {0x376, 0x377, 1},
    {0x37A, 0x37D, 1},
    {0x37F, 0x37F, 1},
    {0x386, 0x386, 1},
    {0x388, 0x38A, 1},
    {0x38C, 0x38C, 1},
    {0x38E, 0x3A1, 1},
    {0x3A3, 0x3F5, 1},
    {0x3F7, 0x481, 1},
    {0x48A, 0x52F, 1},
    {0x531, 0x556, 1},
    {0x559, 0x559, 1},
    {0x560, 0x588, 1},
    {0x5D0, 0x5EA, 1},
    {0x5EF, 0x5F2, 1},
    {0x620, 0x64A, 1},
    {0x660, 0x669, 2},
    {0x66E, 0x66F, 1},
    {0x671, 0x6D3, 1},
    {0x6D5, 0x6D5, 1},
    {0x6E5, 0x6E6, 1},
    {0x6EE, 0x6EF, 1},
    {0x6F0, 0x6F9, 2},
    {0x6FA, 0x6FC, 1},
    {0x6FF, 0x6FF, 1},
    {0x710, 0x710, 1},
    {0x712, 0x72F, 1},
    {0x74D, 0x7A5, 1},
    {0x7B1, 0x7B1, 1},
    {0x7C0, 0x7C9, 2},
    {0x7CA, 0x7EA, 1},
    {0x7F4, 0x7F5, 1},
    {0x7FA, 0x7FA, 1},
    {0x800, 0x815, 1},
    {0x81A, 0x81A, 1},
    {0x824, 0x824, 1},
    {0x828, 0x828, 1},
    {0x840, 0x858, 1},
    {0x860, 0x86A, 1},
    {0x870, 0x887, 1},
    {0x889, 0x88E, 1},
    {0x8A0, 0x8C9, 1},
    {0x904, 0x939, 1},
    {0x93D, 0x93D, 1},
    {0x950, 0x950, 1},
    {0x958, 0x961, 1},
    {0x966, 0x96F, 2},
    {0x971, 0x980, 1},
    {0x985, 0x98C, 1},
    {0x98F, 0x990, 1},
    {0x993, 0x9A8, 1},
    {0x9AA, 0x9B0, 1},
    {0x9B2, 0x9B2, 1},
    {0x9B6, 0x9B9, 1},
    {0x9BD, 0x9BD, 1},
    {0x9CE, 0x9CE, 1},
    {0x9DC, 0x9DD, 1},
    {0x9DF, 0x9E1, 1},
    {0x9E6, 0x9EF, 2},
    {0x9F0, 0x9F1, 1},
    {0x9F4, 0x9F9, 2},
    {0x9FC, 0x9FC, 1},
    {0xA05, 0xA0A, 1},
    {0xA0F, 0xA10, 1},
    {0xA13, 0xA28, 1},
    {0xA2A, 0xA30, 1},
    {0xA32, 0xA33, 1},
    {0xA35, 0xA36, 1},
    {0xA38, 0xA39, 1},
    {0xA59, 0xA5C, 1},
    {0xA5E, 0xA5E, 1},
    {0xA66, 0xA6F, 2},
    {0xA72, 0xA74, 1},
    {0xA85, 0xA8D, 1},
    {0xA8F, 0xA91, 1},
    {0xA93, 0xAA8, 1},
    {0xAAA, 0xAB0, 1},
    {0xAB2, 0xAB3, 1},
    {0xAB5, 0xAB9, 1},
    {0xABD, 0xABD, 1},
    {0xAD0, 0xAD0, 1},
    {0xAE0, 0xAE1, 1},
    {0xAE6, 0xAEF, 2},
    {0xAF9, 0xAF9, 1},
    {0xB05, 0xB0C, 1},
    {0xB0F, 0xB10, 1},
    {0xB13, 0xB28, 1},
    {0xB2A, 0xB30, 1},
    {0xB32, 0xB33, 1},
    {0xB35, 0xB39, 1},
    {0xB3D, 0xB3D, 1},
    {0xB5C, 0xB5D, 1},
    {0xB5F, 0xB61, 1},
    {0xB66, 0xB6F, 2},
    {0xB71, 0xB71, 1},
    {0xB72, 0xB77, 2},
    {0xB83, 0xB83, 1},
    {0xB85, 0xB8A, 1},
    {0xB8E, 0xB90, 1},
    {0xB92, 0xB95, 1},
    {0xB99, 0xB9A, 1},
    {0xB9C, 0xB9C, 1},
    {0xB9E, 0xB9F, 1},
    {0xBA3, 0xBA4, 1},
    {0xBA8, 0xBAA, 1},
    {0xBAE, 0xBB9, 1},
    {0xBD0, 0xBD0, 1},
    {0xBE6, 0xBF2, 2},
    {0xC05, 0xC0C, 1},
    {0xC0E, 0xC10, 1},
    {0xC12, 0xC28, 1},
    {0xC2A, 0xC39, 1},
    {0xC3D, 0xC3D, 1},
    {0xC58, 0xC5A, 1},
    {0xC5D, 0xC5D, 1},
    {0xC60, 0xC61, 1},
    {0xC66, 0xC6F, 2},
    {0xC78, 0xC7E, 2},
    {0xC80, 0xC80, 1},
    {0xC85, 0xC8C, 1},
    {0xC8E, 0xC90, 1},
    {0xC92, 0xCA8, 1},
    {0xCAA, 0xCB3, 1},
    {0xCB5, 0xCB9, 1},
    {0xCBD, 0xCBD, 1},
    {0xCDD, 0xCDE, 1},
    {0xCE0, 0xCE1, 1},
    {0xCE6, 0xCEF, 2},
    {0xCF1, 0xCF2, 1},
    {0xD04, 0xD0C, 1},
    {0xD0E, 0xD10, 1},
    {0xD12, 0xD3A, 1},
    {0xD3D, 0xD3D, 1},
    {0xD4E, 0xD4E, 1},
    {0xD54, 0xD56, 1},
    {0xD58, 0xD5E, 2},
    {0xD5F, 0xD61, 1},
    {0xD66, 0xD78, 2},
    {0xD7A, 0xD7F, 1},
    {0xD85, 0xD96, 1},
    {0xD9A, 0xDB1, 1},
    {0xDB3, 0xDBB, 1},
    {0xDBD, 0xDBD, 1},
    {0xDC0, 0xDC6, 1},
    {0xDE6, 0xDEF, 2},
    {0xE01, 0xE30, 1},
    {0xE32, 0xE33, 1},
    {0xE40, 0xE46, 1},
    {0xE50, 0xE59, 2},
    {0xE81, 0xE82, 1},
    {0xE84, 0xE84, 1},
    {0xE86, 0xE8A, 1},
    {0xE8C, 0xEA3, 1},
    {0xEA5, 0xEA5, 1},
    {0xEA7, 0xEB0, 1},
    {0xEB2, 0xEB3, 1},
    {0xEBD, 0xEBD, 1},
    {0xEC0, 0xEC4, 1},
    {0xEC6, 0xEC6, 1},
    {0xED0, 0xED9, 2},
    {0xEDC, 0xEDF, 1},
    {0xF00, 0xF00, 1},
    {0xF20, 0xF33, 2},
    {0xF40, 0xF47, 1},
    {0xF49, 0xF6C, 1},
    {0xF88, 0xF8C, 1},
    {0x1000, 0x102A, 1},
    {0x103F, 0x103F, 1},
    {0x1040, 0x1049, 2},
    {0x1050, 0x1055, 1},
    {0x105A, 0x105D, 1},
    {0x1061, 0x1061, 1},
    {0x1065, 0x1066, 1},
    {0x106E, 0x1070, 1},
    {0x1075, 0x1081, 1},
    {0x108E, 0x108E, 1},
    {0x1090, 0x1099, 2},
    {0x10A0, 0x10C5, 1},
    {0x10C7, 0x10C7, 1},
    {0x10CD, 0x10CD, 1},
    {0x10D0, 0x10FA, 1},
    {0x10FC, 0x1248, 1},
    {0x124A, 0x124D, 1},
    {0x1250, 0x1256, 1},
    {0x1258, 0x1258, 1},
    {0x125A, 0x125D, 1},
    {0x1260, 0x1288, 1},
    {0x128A, 0x128D, 1},
    {0x1290, 0x12B0, 1},
    {0x12B2, 0x12B5, 1},
    {0x12B8, 0x12BE, 1},
    {0x12C0, 0x12C0, 1},
    {0x12C2, 0x12C5, 1},
    {0x12C8, 0x12D6, 1},
    {0x12D8, 0x1310, 1},
    {0x1312, 0x1315, 1},
    {0x1318, 0x135A, 1},
    {0x1369, 0x137C, 2},
    {0x1380, 0x138F, 1},
    {0x13A0, 0x13F5, 1},
    {0x13F8, 0x13FD, 1},
    {0x1401, 0x166C, 1},
    {0x166F, 0x167F, 1},
    {0x1681, 0x169A, 1},
    {0x16A0, 0x16EA, 1},
    {0x16EE, 0x16F0, 2},
    {0x16F1, 0x16F8, 1},
    {0x1700, 0x1711, 1},
    {0x171F, 0x1731, 1},
    {0x1740, 0x1751, 1},
    {0x1760, 0x176C, 1},
    {0x176E, 0x1770, 1},
    {0x1780, 0x17B3, 1},
    {0x17D7, 0x17D7, 1},
    {0x17DC, 0x17DC, 1},
    {0x17E0, 0x17E9, 2},
    {0x17F0, 0x17F9, 2},
    {0x1810, 0x1819, 2},
    {0x1820, 0x1878, 1},
    {0x1880, 0x1884, 1},
    {0x1887, 0x18A8, 1},
    {0x18AA, 0x18AA, 1},
    {0x18B0, 0x18F5, 1},
    {0x1900, 0x191E, 1},
    {0x1946, 0x194F, 2},
    {0x1950, 0x196D, 1},
    {0x1970, 0x1974, 1},
    {0x1980, 0x19AB, 1},
    {0x19B0, 0x19C9, 1},
    {0x19D0, 0x19DA, 2},
    {0x1A00, 0x1A16, 1},
    {0x1A20, 0x1A54, 1},
    {0x1A80, 0x1A89, 2},
    {0x1A90, 0x1A99, 2},
    {0x1AA7, 0x1AA7, 1},
    {0x1B05, 0x1B33, 1},
    {0x1B45, 0x1B4C, 1},
    {0x1B50, 0x1B59, 2},
    {0x1B83, 0x1BA0, 1},
    {0x1BAE, 0x1BAF, 1},
    {0x1BB0, 0x1BB9, 2},
    {0x1BBA, 0x1BE5, 1},
    {0x1C00, 0x1C23, 1},
    {0x1C40, 0x1C49, 2},
    {0x1C4D, 0x1C4F, 1},
    {0x1C50, 0x1C59, 2},
    {0x1C5A, 0x1C7D, 1},
    {0x1C80, 0x1C8A, 1},
    {0x1C90, 0x1CBA, 1},
    {0x1CBD, 0x1CBF, 1},
    {0x1CE9, 0x1CEC, 1},
    {0x1CEE, 0x1CF3, 1},
    {0x1CF5, 0x1CF6, 1},
    {0x1CFA, 0x1CFA, 1},
    {0x1D00, 0x1DBF, 1},
    {0x1E00, 0x1F15, 1},
    {0x1F18, 0x1F1D, 1},
    {0x1F20, 0x1F45, 1},
    {0x1F48, 0x1F4D, 1},
    {0x1F50, 0x1F57, 1},
    {0x1F59, 0x1F59, 1},
    {0x1F5B, 0x1F5B, 1},
    {0x1F5D, 0x1F5D, 1},
    {0x1F5F, 0x1F7D, 1},
    {0x1F80, 0x1FB4, 1},
    {0x1FB6, 0x1FBC, 1},
    {0x1FBE, 0x1FBE, 1},
    {0x1FC2, 0x1FC4, 1},
    {0x1FC6, 0x1FCC, 1},
    {0x1FD0, 0x1FD3, 1},
    {0x1FD6, 0x1FDB, 1},
    {0x1FE0, 0x1FEC, 1},
    {0x1FF2, 0x1FF4, 1},
    {0x1FF6, 0x1FFC, 1},
    {0x2070, 0x2070, 2},
    {0x2071, 0x2071, 1},
    {0x2074, 0x2079, 2},
    {0x207F, 0x207F, 1},
    {0x2080, 0x2089, 2},
    {0x2090, 0x209C, 1},
    {0x2102, 0x2102, 1},
    {0x2107, 0x2107, 1},
    {0x210A, 0x2113, 1},
    {0x2115, 0x2115, 1},
    {0x2119, 0x211D, 1},
    {0x2124, 0x2124, 1},
    {0x2126, 0x2126, 1},
    {0x2128, 0x2128, 1},
    {0x212A, 0x212D, 1},
    {0x212F, 0x2139, 1},
    {0x213C, 0x213F, 1},
    {0x2145, 0x2149, 1},
    {0x214E, 0x214E, 1},
    {0x2150, 0x2182, 2},
    {0x2183, 0x2184, 1},
    {0x2185, 0x2189, 2},
    {0x2460, 0x249B, 2},
    {0x24EA, 0x24FF, 2},
    {0x2776, 0x2793, 2},
    {0x2C00, 0x2CE4, 1},
    {0x2CEB, 0x2CEE, 1},
    {0x2CF2, 0x2CF3, 1},
    {0x2CFD, 0x2CFD, 2},
    {0x2D00, 0x2D25, 1},
    {0x2D27, 0x2D27, 1},
    {0x2D2D, 0x2D2D, 1},
    {0x2D30, 0x2D67, 1},
    {0x2D6F, 0x2D6F, 1},
    {0x2D80, 0x2D96, 1},
    {0x2DA0, 0x2DA6, 1},
    {0x2DA8, 0x2DAE, 1},
    {0x2DB0, 0x2DB6, 1},
    {0x2DB8, 0x2DBE, 1},
    {0x2DC0, 0x2DC6, 1},
    {0x2DC8, 0x2DCE, 1},
    {0x2DD0, 0x2DD6, 1},
    {0x2DD8, 0x2DDE, 1},
    {0x2E2F, 0x2E2F, 1},
    {0x3005, 0x3006, 1},
    {0x3007, 0x3007, 2},
    {0x3021, 0x3029, 2},
    {0x3031, 0x3035, 1},
    {0x3038, 0x303A, 2},
    {0x303B, 0x303C, 1},
    {0x3041, 0x3096, 1},
    {0x309D, 0x309F, 1},
    {0x30A1, 0x30FA, 1},
    {0x30FC, 0x30FF, 1},
    {0x3105, 0x312F, 1},
    {0x3131, 0x318E, 1},
    {0x3192, 0x3195, 2},
    {0x31A0, 0x31BF, 1},
    {0x31F0, 0x31FF, 1},
    {0x3220, 0x3229, 2},
    {0x3248, 0x324F, 2},
    {0x3251, 0x325F, 2},
    {0x3280, 0x3289, 2},
    {0x32B1, 0x32BF, 2},
    {0x3400, 0x4DBF, 1},
    {0x4E00, 0xA48C, 1},
    {0xA4D0, 0xA4FD, 1},
    {0xA500, 0xA60C, 1},
    {0xA610, 0xA61F, 1},
    {0xA620, 0xA629, 2},
    {0xA62A, 0xA62B, 1},
    {0xA640, 0xA66E, 1},
    {0xA67F, 0xA69D, 1},
    {0xA6A0, 0xA6E5, 1},
    {0xA6E6, 0xA6EF, 2},
    {0xA717, 0xA71F, 1},
    {0xA722, 0xA788, 1},
    {0xA78B, 0xA7CD, 1},
    {0xA7D0, 0xA7D1, 1},
    {0xA7D3, 0xA7D3, 1},
    {0xA7D5, 0xA7DC, 1},
    {0xA7F2, 0xA801, 1},
    {0xA803, 0xA805, 1},
    {0xA807, 0xA80A, 1},
    {0xA80C, 0xA822, 1},
    {0xA830, 0xA835, 2},
    {0xA840, 0xA873, 1},
    {0xA882, 0xA8B3, 1},
    {0xA8D0, 0xA8D9, 2},
    {0xA8F2, 0xA8F7, 1},
    {0xA8FB, 0xA8FB, 1},
    {0xA8FD, 0xA8FE, 1},
    {0xA900, 0xA909, 2},
    {0xA90A, 0xA925, 1},
    {0xA930, 0xA946, 1},
    {0xA960, 0xA97C, 1},
    {0xA984, 0xA9B2, 1},
    {0xA9CF, 0xA9CF, 1},
    {0xA9D0, 0xA9D9, 2},
    {0xA9E0, 0xA9E4, 1},
    {0xA9E6, 0xA9EF, 1},
    {0xA9F0, 0xA9F9, 2},
    {0xA9FA, 0xA9FE, 1},
    {0xAA00, 0xAA28, 1},
    {0xAA40, 0xAA42, 1},
    {0xAA44, 0xAA4B, 1},
    {0xAA50, 0xAA59, 2},
    {0xAA60, 0xAA76, 1},
    {0xAA7A, 0xAA7A, 1},
    {0xAA7E, 0xAAAF, 1},
    {0xAAB1, 0xAAB1, 1},
    {0xAAB5, 0xAAB6, 1},
    {0xAAB9, 0xAABD, 1},
    {0xAAC0, 0xAAC0, 1},
    {0xAAC2, 0xAAC2, 1},
    {0xAADB, 0xAADD, 1},
    {0xAAE0, 0xAAEA, 1},
    {0xAAF2, 0xAAF4, 1},
    {0xAB01, 0xAB06, 1},
    {0xAB09, 0xAB0E, 1},
    {0xAB11, 0xAB16, 1},
    {0xAB20, 0xAB26, 1},
    {0xAB28, 0xAB2E, 1},
    {0xAB30, 0xAB5A, 1},
    {0xAB5C, 0xAB69, 1},
    {0xAB70, 0xABE2, 1},
    {0xABF0, 0xABF9, 2},
    {0xAC00, 0xD7A3, 1},
    {0xD7B0, 0xD7C6, 1},
    {0xD7CB, 0xD7FB, 1},
    {0xF900, 0xFA6D, 1},
    {0xFA70, 0xFAD9, 1},
    {0xFB00, 0xFB06, 1},
    {0xFB13, 0xFB17, 1},
    {0xFB1D, 0xFB1D, 1},
    {0xFB1F, 0xFB28, 1},
    {0xFB2A, 0xFB36, 1},
    {0xFB38, 0xFB3C, 1},
    {0xFB3E, 0xFB3E, 1},
    {0xFB40, 0xFB41, 1},
    {0xFB43, 0xFB44, 1},
    {0xFB46, 0xFBB1, 1},
    {0xFBD3, 0xFD3D, 1},
    {0xFD50, 0xFD8F, 1},
    {0xFD92, 0xFDC7, 1},
    {0xFDF0, 0xFDFB, 1},
    {0xFE70, 0xFE74, 1},
    {0xFE76, 0xFEFC, 1},
    {0xFF10, 0xFF19, 2},
    {0xFF21, 0xFF3A, 1},
    {0xFF41, 0xFF5A, 1},
    {0xFF66, 0xFFBE, 1},
    {0xFFC2, 0xFFC7, 1},
    {0xFFCA, 0xFFCF, 1},
    {0xFFD2, 0xFFD7, 1},
    {0xFFDA, 0xFFDC, 1},
    {0x10000, 0x1000B, 1},
    {0x1000D, 0x10026, 1},
    {0x10028, 0x1003A, 1},
    {0x1003C, 0x1003D, 1},
    {0x1003F, 0x1004D, 1},
    {0x10050, 0x1005D, 1},
    {0x10080, 0x100FA, 1},
    {0x10107, 0x10133, 2},
    {0x10140, 0x10178, 2},
    {0x1018A, 0x1018B, 2},
    {0x10280, 0x1029C, 1},
    {0x102A0, 0x102D0, 1},
    {0x102E1, 0x102FB, 2},
    {0x10300, 0x1031F, 1},
    {0x10320, 0x10323, 2},
    {0x1032D, 0x10340, 1},
    {0x10341, 0x10341, 2},
    {0x10342, 0x10349, 1},
    {0x1034A, 0x1034A, 2},
    {0x10350, 0x10375, 1},
    {0x10380, 0x1039D, 1},
    {0x103A0, 0x103C3, 1},
    {0x103C8, 0x103CF, 1},
    {0x103D1, 0x103D5, 2},
    {0x10400, 0x1049D, 1},
    {0x104A0, 0x104A9, 2},
    {0x104B0, 0x104D3, 1},
    {0x104D8, 0x104FB, 1},
    {0x10500, 0x10527, 1},
    {0x10530, 0x10563, 1},
    {0x10570, 0x1057A, 1},
    {0x1057C, 0x1058A, 1},
    {0x1058C, 0x10592, 1},
    {0x10594, 0x10595, 1},
    {0x10597, 0x105A1, 1},
    {0x105A3, 0x105B1, 1},
    {0x105B3, 0x105B9, 1},
    {0x105BB, 0x105BC, 1},
    {0x105C0, 0x105F3, 1},
    {0x10600, 0x10736, 1},
    {0x10740, 0x10755, 1},
    {0x10760, 0x10767, 1},
    {0x10780, 0x10785, 1},
    {0x10787, 0x107B0, 1},
    {0x107B2, 0x107BA, 1},
    {0x10800, 0x10805, 1},
    {0x10808, 0x10808, 1},
    {0x1080A, 0x10835, 1},
    {0x10837, 0x10838, 1},
    {0x1083C, 0x1083C, 1},
    {0x1083F, 0x10855, 1},
    {0x10858, 0x1085F, 2},
    {0x10860, 0x10876, 1},
    {0x10879, 0x1087F, 2},
    {0x10880, 0x1089E, 1},
    {0x108A7, 0x108AF, 2},
    {0x108E0, 0x108F2, 1},
    {0x108F4, 0x108F5, 1},
    {0x108FB, 0x108FF, 2},
    {0x10900, 0x10915, 1},
    {0x10916, 0x1091B, 2},
    {0x10920, 0x10939, 1},
    {0x10980, 0x109B7, 1},
    {0x109BC, 0x109BD, 2},
    {0x109BE, 0x109BF, 1},
    {0x109C0, 0x109CF, 2},
    {0x109D2, 0x109FF, 2},
    {0x10A00, 0x10A00, 1},
    {0x10A10, 0x10A13, 1},
    {0x10A15, 0x10A17, 1},
    {0x10A19, 0x10A35, 1},
    {0x10A40, 0x10A48, 2},
    {0x10A60, 0x10A7C, 1},
    {0x10A7D, 0x10A7E, 2},
    {0x10A80, 0x10A9C, 1},
    {0x10A9D, 0x10A9F, 2},
    {0x10AC0, 0x10AC7, 1},
    {0x10AC9, 0x10AE4, 1},
    {0x10AEB, 0x10AEF, 2},
    {0x10B00, 0x10B35, 1},
    {0x10B40, 0x10B55, 1},
    {0x10B58, 0x10B5F, 2},
    {0x10B60, 0x10B72, 1},
    {0x10B78, 0x10B7F, 2},
    {0x10B80, 0x10B91, 1},
    {0x10BA9, 0x10BAF, 2},
    {0x10C00, 0x10C48, 1},
    {0x10C80, 0x10CB2, 1},
    {0x10CC0, 0x10CF2, 1},
    {0x10CFA, 0x10CFF, 2},
    {0x10D00, 0x10D23, 1},
    {0x10D30, 0x10D39, 2},
    {0x10D40, 0x10D49, 2},
    {0x10D4A, 0x10D65, 1},
    {0x10D6F, 0x10D85, 1},
    {0x10E60, 0x10E7E, 2},
    {0x10E80, 0x10EA9, 1},
    {0x10EB0, 0x10EB1, 1},
    {0x10EC2, 0x10EC4, 1},
    {0x10F00, 0x10F1C, 1},
    {0x10F1D, 0x10F26, 2},
    {0x10F27, 0x10F27, 1},
    {0x10F30, 0x10F45, 1},
    {0x10F51, 0x10F54, 2},
    {0x10F70, 0x10F81, 1},
    {0x10FB0, 0x10FC4, 1},
    {0x10FC5, 0x10FCB, 2},
    {0x10FE0, 0x10FF6, 1},
    {0x11003, 0x11037, 1},
    {0x11052, 0x1106F, 2},
    {0x11071, 0x11072, 1},
    {0x11075, 0x11075, 1},
    {0x11083, 0x110AF, 1},
    {0x110D0, 0x110E8, 1},
    {0x110F0, 0x110F9, 2},
    {0x11103, 0x11126, 1},
    {0x11136, 0x1113F, 2},
    {0x11144, 0x11144, 1},
    {0x11147, 0x11147, 1},
    {0x11150, 0x11172, 1},
    {0x11176, 0x11176, 1},
    {0x11183, 0x111B2, 1},
    {0x111C1, 0x111C4, 1},
    {0x111D0, 0x111D9, 2},
    {0x111DA, 0x111DA, 1},
    {0x111DC, 0x111DC, 1},
    {0x111E1, 0x111F4, 2},
    {0x11200, 0x11211, 1},
    {0x11213, 0x1122B, 1},
    {0x1123F, 0x11240, 1},
    {0x11280, 0x11286, 1},
    {0x11288, 0x11288, 1},
    {0x1128A, 0x1128D, 1},
    {0x1128F, 0x1129D, 1},
    {0x1129F, 0x112A8, 1},
    {0x112B0, 0x112DE, 1},
    {0x112F0, 0x112F9, 2},
    {0x11305, 0x1130C, 1},
    {0x1130F, 0x11310, 1},
    {0x11313, 0x11328, 1},
    {0x1132A, 0x11330, 1},
    {0x11332, 0x11333, 1},
    {0x11335, 0x11339, 1},
    {0x1133D, 0x1133D, 1},
    {0x11350, 0x11350, 1},
    {0x1135D, 0x11361, 1},
    {0x11380, 0x11389, 1},
    {0x1138B, 0x1138B, 1},
    {0x1138E, 0x1138E, 1},
    {0x11390, 0x113B5, 1},
    {0x113B7, 0x113B7, 1},
    {0x113D1, 0x113D1, 1},
    {0x113D3, 0x113D3, 1},
    {0x11400, 0x11434, 1},
    {0x11447, 0x1144A, 1},
    {0x11450, 0x11459, 2},
    {0x1145F, 0x11461, 1},
    {0x11480, 0x114AF, 1},
    {0x114C4, 0x114C5, 1},
    {0x114C7, 0x114C7, 1},
    {0x114D0, 0x114D9, 2},
    {0x11580, 0x115AE, 1},
    {0x115D8, 0x115DB, 1},
    {0x11600, 0x1162F, 1},
    {0x11644, 0x11644, 1},
    {0x11650, 0x11659, 2},
    {0x11680, 0x116AA, 1},
    {0x116B8, 0x116B8, 1},
    {0x116C0, 0x116C9, 2},
    {0x116D0, 0x116E3, 2},
    {0x11700, 0x1171A, 1},
    {0x11730, 0x1173B, 2},
    {0x11740, 0x11746, 1},
    {0x11800, 0x1182B, 1},
    {0x118A0, 0x118DF, 1},
    {0x118E0, 0x118F2, 2},
    {0x118FF, 0x11906, 1},
    {0x11909, 0x11909, 1},
    {0x1190C, 0x11913, 1},
    {0x11915, 0x11916, 1},
    {0x11918, 0x1192F, 1},
    {0x1193F, 0x1193F, 1},
    {0x11941, 0x11941, 1},
    {0x11950, 0x11959, 2},
    {0x119A0, 0x119A7, 1},
    {0x119AA, 0x119D0, 1},
    {0x119E1, 0x119E1, 1},
    {0x119E3, 0x119E3, 1},
    {0x11A00, 0x11A00, 1},
    {0x11A0B, 0x11A32, 1},
    {0x11A3A, 0x11A3A, 1},
    {0x11A50, 0x11A50, 1},
    {0x11A5C, 0x11A89, 1},
    {0x11A9D, 0x11A9D, 1},
    {0x11AB0, 0x11AF8, 1},
    {0x11BC0, 0x11BE0, 1},
    {0x11BF0, 0x11BF9, 2},
    {0x11C00, 0x11C08, 1},
    {0x11C0A, 0x11C2E, 1},
    {0x11C40, 0x11C40, 1},
    {0x11C50, 0x11C6C, 2},
    {0x11C72, 0x11C8F, 1},
    {0x11D00, 0x11D06, 1},
    {0x11D08, 0x11D09, 1},
    {0x11D0B, 0x11D30, 1},
    {0x11D46, 0x11D46, 1},
    {0x11D50, 0x11D59, 2},
    {0x11D60, 0x11D65, 1},
    {0x11D67, 0x11D68, 1},
    {0x11D6A, 0x11D89, 1},
    {0x11D98, 0x11D98, 1},
    {0x11DA0, 0x11DA9, 2},
    {0x11EE0, 0x11EF2, 1},
    {0x11F02, 0x11F02, 1},
    {0x11F04, 0x11F10, 1},
    {0x11F12, 0x11F33, 1},
    {0x11F50, 0x11F59, 2},
    {0x11FB0, 0x11FB0, 1},
    {0x11FC0, 0x11FD4, 2},
    {0x12000, 0x12399, 1},
    {0x12400, 0x1246E, 2},
    {0x12480, 0x12543, 1},
    {0x12F90, 0x12FF0, 1},
    {0x13000, 0x1342F, 1},
    {0x13441, 0x13446, 1},
    {0x13460, 0x143FA, 1},
    {0x14400, 0x14646, 1},
    {0x16100, 0x1611D, 1},
    {0x16130, 0x16139, 2},
    {0x16800, 0x16A38, 1},
    {0x16A40, 0x16A5E, 1},
    {0x16A60, 0x16A69, 2},
    {0x16A70, 0x16ABE, 1},
    {0x16AC0, 0x16AC9, 2},
    {0x16AD0, 0x16AED, 1},
    {0x16B00, 0x16B2F, 1},
    {0x16B40, 0x16B43, 1},
    {0x16B50, 0x16B59, 2},
    {0x16B5B, 0x16B61, 2},
    {0x16B63, 0x16B77, 1},
    {0x16B7D, 0x16B8F, 1},
    {0x16D40, 0x16D6C, 1},
    {0x16D70, 0x16D79, 2},
    {0x16E40, 0x16E7F, 1},
    {0x16E80, 0x16E96, 2},
    {0x16F00, 0x16F4A, 1},
    {0x16F50, 0x16F50, 1},
    {0x16F93, 0x16F9F, 1},
    {0x16FE0, 0x16FE1, 1},
    {0x16FE3, 0x16FE3, 1},
    {0x17000, 0x187F7, 1},
    {0x18800, 0x18CD5, 1},
    {0x18CFF, 0x18D08, 1},
    {0x1AFF0, 0x1AFF3, 1},
    {0x1AFF5, 0x1AFFB, 1},
    {0x1AFFD, 0x1AFFE, 1},
    {0x1B000, 0x1B122, 1},
    {0x1B132, 0x1B132, 1},
    {0x1B150, 0x1B152, 1},
    {0x1B155, 0x1B155, 1},
    {0x1B164, 0x1B167, 1},
    {0x1B170, 0x1B2FB, 1},
    {0x1BC00, 0x1BC6A, 1},
    {0x1BC70, 0x1BC7C, 1},
    {0x1BC80, 0x1BC88, 1},
    {0x1BC90, 0x1BC99, 1},
    {0x1CCF0, 0x1CCF9, 2},
    {0x1D2C0, 0x1D2D3, 2},
    {0x1D2E0, 0x1D2F3, 2},
    {0x1D360, 0x1D378, 2},
    {0x1D400, 0x1D454, 1},
    {0x1D456, 0x1D49C, 1},
    {0x1D49E, 0x1D49F, 1},
    {0x1D4A2, 0x1D4A2, 1},
    {0x1D4A5, 0x1D4A6, 1},
    {0x1D4A9, 0x1D4AC, 1},
    {0x1D4AE, 0x1D4B9, 1},
    {0x1D4BB, 0x1D4BB, 1},
    {0x1D4BD, 0x1D4C3, 1},
    {0x1D4C5, 0x1D505, 1},
    {0x1D507, 0x1D50A, 1},
    {0x1D50D, 0x1D514, 1},
    {0x1D516, 0x1D51C, 1},
    {0x1D51E, 0x1D539, 1},
    {0x1D53B, 0x1D53E, 1},
    {0x1D540, 0x1D544, 1},
    {0x1D546, 0x1D546, 1},
    {0x1D54A, 0x1D550, 1},
    {0x1D552, 0x1D6A5, 1},
    {0x1D6A8, 0x1D6C0, 1},
    {0x1D6C2, 0x1D6DA, 1},
    {0x1D6DC, 0x1D6FA, 1},
    {0x1D6FC, 0x1D714, 1},
    {0x1D716, 0x1D734, 1},
    {0x1D736, 0x1D74E, 1},
    {0x1D750, 0x1D76E, 1},
    {0x1D770, 0x1D788, 1},
    {0x1D78A, 0x1D7A8, 1},
    {0x1D7AA, 0x1D7C2, 1},
    {0x1D7C4, 0x1D7CB, 1},
    {0x1D7CE, 0x1D7FF, 2},
    {0x1DF00, 0x1DF1E, 1},
    {0x1DF25, 0x1DF2A, 1},
    {0x1E030, 0x1E06D, 1},
    {0x1E100, 0x1E12C, 1},
    {0x1E137, 0x1E13D, 1},
    {0x1E140, 0x1E149, 2},
    {0x1E14E, 0x1E14E, 1},
    {0x1E290, 0x1E2AD, 1},
    {0x1E2C0, 0x1E2EB, 1},
    {0x1E2F0, 0x1E2F9, 2},
    {0x1E4D0, 0x1E4EB, 1},
    {0x1E4F0, 0x1E4F9, 2},
    {0x1E5D0, 0x1E5ED, 1},
    {0x1E5F0, 0x1E5F0, 1},
    {0x1E5F1, 0x1E5FA, 2},
    {0x1E7E0, 0x1E7E6, 1},
    {0x1E7E8, 0x1E7EB, 1},
    {0x1E7ED, 0x1E7EE, 1},
    {0x1E7F0, 0x1E7FE, 1},
    {0x1E800, 0x1E8C4, 1},
    {0x1E8C7, 0x1E8CF, 2},
    {0x1E900, 0x1E943, 1},
    {0x1E94B, 0x1E94B, 1},
    {0x1E950, 0x1E959, 2},
    {0x1EC71, 0x1ECAB, 2},
    {0x1ECAD, 0x1ECAF, 2},
    {0x1ECB1, 0x1ECB4, 2},
    {0x1ED01, 0x1ED2D, 2},
    {0x1ED2F, 0x1ED3D, 2},
    {0x1EE00, 0x1EE03, 1},
    {0x1EE05, 0x1EE1F, 1},
    {0x1EE21, 0x1EE22, 1},
    {0x1EE24, 0x1EE24, 1},
    {0x1EE27, 0x1EE27, 1},
    {0x1EE29, 0x1EE32, 1},
    {0x1EE34, 0x1EE37, 1},
    {0x1EE39, 0x1EE39, 1},
    {0x1EE3B, 0x1EE3B, 1},
    {0x1EE42, 0x1EE42, 1},
    {0x1EE47, 0x1EE47, 1},
    {0x1EE49, 0x1EE49, 1},
    {0x1EE4B, 0x1EE4B, 1},
    {0x1EE4D, 0x1EE4F, 1},
    {0x1EE51, 0x1EE52, 1},
    {0x1EE54, 0x1EE54, 1},
    {0x1EE57, 0x1EE57, 1},
    {0x1EE59, 0x1EE59, 1},
    {0x1EE5B, 0x1EE5B, 1},
    {0x1EE5D, 0x1EE5D, 1},
    {0x1EE5F, 0x1EE5F, 1},
    {0x1EE61, 0x1EE62, 1},
    {0x1EE64, 0x1EE64, 1},
    {0x1EE67, 0x1EE6A, 1},
    {0x1EE6C, 0x1EE72, 1},
    {0x1EE74, 0x1EE77, 1},
    {0x1EE79, 0x1EE7C, 1},
    {0x1EE7E, 0x1EE7E, 1},
    {0x1EE80, 0x1EE89, 1},
    {0x1EE8B, 0x1EE9B, 1},
    {0x1EEA1, 0x1EEA3, 1},
    {0x1EEA5, 0x1EEA9, 1},
    {0x1EEAB, 0x1EEBB, 1},
    {0x1F100, 0x1F10C, 2},
    {0x1FBF0, 0x1FBF9, 2},
    {0x20000, 0x2A6DF, 1},
    {0x2A700, 0x2B739, 1},
    {0x2B740, 0x2B81D, 1},
    {0x2B820, 0x2CEA1, 1},
    {0x2CEB0, 0x2EBE0, 1},
    {0x2EBF0, 0x2EE5D, 1},
    {0x2F800, 0x2FA1D, 1},
    {0x30000, 0x3134A, 1},
    {0x31350, 0x323AF, 1},
};

static const uint32_t retrlm__uni_space_ranges[11][2] = {
    {0x9, 0xD},
    {0x20, 0x20},
    {0x85, 0x85},
    {0xA0, 0xA0},
    {0x1680, 0x1680},
    {0x2000, 0x200A},
    {0x2028, 0x2028},
    {0x2029, 0x2029},
    {0x202F, 0x202F},
    {0x205F, 0x205F},
    {0x3000, 0x3000},
};

enum { RETRLM__UC_OTHER = 0, RETRLM__UC_LETTER = 1, RETRLM__UC_NUMBER = 2, RETRLM__UC_SPACE = 3 };

// class of every ASCII byte (0x80.. never reaches this table)
static const unsigned char retrlm__uc_ascii[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, // \t \n \v \f \r
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // space
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, // 0-9
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // A-O
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, // P-Z
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // a-o
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, // p-z
};

// Class of code point c (RETRLM__UC_*): binary search in the generated ranges.
RETRLM__PRIVATE int retrlm__uc_class(uint32_t c) {
    size_t lo = 0, hi;
    if (c < 128) return retrlm__uc_ascii[c];
    hi = sizeof retrlm__uni_space_ranges / sizeof retrlm__uni_space_ranges[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < retrlm__uni_space_ranges[mid][0]) hi = mid;
        else if (c > retrlm__uni_space_ranges[mid][1]) lo = mid + 1;
        else return RETRLM__UC_SPACE;
    }
    lo = 0;
    hi = sizeof retrlm__uni_class_ranges / sizeof retrlm__uni_class_ranges[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < retrlm__uni_class_ranges[mid][0]) hi = mid;
        else if (c > retrlm__uni_class_ranges[mid][1]) lo = mid + 1;
        else return (int)retrlm__uni_class_ranges[mid][2];
    }
    return RETRLM__UC_OTHER;
}

// Decodes one UTF-8 sequence at s[0..n) (n >= 1). Returns its length in bytes and the code point
// in *cp. Invalid UTF-8 (stray continuation, overlong form, surrogate, > U+10FFFF, truncated)
// is one byte long, with *cp = 0xFFFFFFFF, which has class OTHER: bytes are never lost.
RETRLM__PRIVATE size_t retrlm__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0], min;
    size_t len, i;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) len = 2, c &= 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, c &= 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, c &= 0x07, min = 0x10000;
    else goto invalid;
    if (len > n) goto invalid;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto invalid;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) goto invalid;
    *cp = c;
    return len;
invalid:
    *cp = 0xFFFFFFFFu;
    return 1;
}

// Class of the character at s[0..n) (n >= 1) and its length in bytes.
static size_t retrlm__uc_next(const unsigned char *s, size_t n, int *cls) {
    uint32_t c;
    size_t len;
    if (s[0] < 0x80) {
        *cls = retrlm__uc_ascii[s[0]];
        return 1;
    }
    len = retrlm__utf8_decode(s, n, &c);
    *cls = c == 0xFFFFFFFFu ? RETRLM__UC_OTHER : retrlm__uc_class(c);
    return len;
}

// Length of the next pre-token of s[0..n) (n >= 1) under GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// tried in that order at the current position, as a backtracking regex engine does.
RETRLM__PRIVATE size_t retrlm__pretoken(const unsigned char *s, size_t n) {
    size_t i = 0, len, run_end;
    int cls, c2;
    if (s[0] == '\'' && n >= 2) {
        unsigned char a = s[1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if (n >= 3) {
            unsigned char b = s[2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                return 3;
        }
    }
    len = retrlm__uc_next(s, n, &cls);
    if (s[0] == ' ' && n >= 2) {
        // " ?X+": the space goes with a following letter, number or other run
        size_t l2 = retrlm__uc_next(s + 1, n - 1, &c2);
        if (c2 != RETRLM__UC_SPACE) {
            cls = c2;
            i = 1;
            len = l2;
        }
    }
    if (cls != RETRLM__UC_SPACE) {
        // a run of one class: letters, numbers, or others (neither space, letter nor number)
        i += len;
        while (i < n) {
            if (s[i] < 0x80) {
                if (retrlm__uc_ascii[s[i]] != cls) break;
                i++;
            } else {
                len = retrlm__uc_next(s + i, n - i, &c2);
                if (c2 != cls) break;
                i += len;
            }
        }
        return i;
    }
    // whitespace run [0, run_end); \s+(?!\S) leaves its last character to the next token when a
    // non-space follows (unless the run has one character, then \s+ takes it)
    run_end = len;
    while (run_end < n) {
        len = retrlm__uc_next(s + run_end, n - run_end, &c2);
        if (c2 != RETRLM__UC_SPACE) break;
        i = run_end; // start of the last space character so far
        run_end += len;
    }
    if (run_end == n || i == 0) return run_end;
    return i;
}
/* ---- retrlm_impl/tokenizer.c ---- */
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

// ---- hashing -------------------------------------------------------------------------------
static uint64_t retrlm__mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

// hash of n bytes (in-memory tables only: the value may differ between hosts)
static uint64_t retrlm__hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    return retrlm__mix64(h);
}

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

// ---- growable buffers for building (report OOM, unlike stb_ds) ----------------------------
typedef struct retrlm__buf {
    unsigned char *p; // (cap) bytes, from retrlm__realloc
    size_t n, cap;    // bytes used, allocated
} retrlm__buf;

// appends size bytes of x (x NULL: zeroes); 0 on overflow or OOM
static int retrlm__buf_push(retrlm__buf *b, const void *x, size_t size) {
    if (size > (size_t)-1 - b->n) return 0;
    if (b->n + size > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        void *q;
        while (cap < b->n + size) {
            if (cap > (size_t)-1 / 2) return 0;
            cap *= 2;
        }
        q = retrlm__realloc(b->p, cap, 1);
        if (!q) return 0;
        b->p = (unsigned char *)q;
        b->cap = cap;
    }
    if (x) memcpy(b->p + b->n, x, size);
    else memset(b->p + b->n, 0, size);
    b->n += size;
    return 1;
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

typedef struct retrlm__heap_item {
    int rank;   // of the pair starting at pos
    size_t pos; // byte position of the pair's left part in the pre-token
} retrlm__heap_item;

// One encoding run: where ids go, plus scratch reused across pre-tokens.
typedef struct retrlm__enc {
    const retrlm_tokenizer *tok;
    int *out;                    // (cap) or NULL for a size query
    size_t cap, n;               // n: ids produced so far (written while n < cap)
    retrlm__cache_entry *cache;  // (RETRLM__CACHE_SLOTS) or NULL
    int *ids;                    // (scratch_cap) large pre-tokens: part id at each start, -1 dead
    size_t *next, *prev;         // (scratch_cap) linked list of live parts
    retrlm__heap_item *heap;     // (heap_cap)
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

static int retrlm__heap_less(const retrlm__heap_item *a, const retrlm__heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void retrlm__heap_push(retrlm__heap_item *h, size_t *n, int rank, size_t pos) {
    size_t i = (*n)++;
    retrlm__heap_item x;
    x.rank = rank;
    x.pos = pos;
    while (i > 0 && retrlm__heap_less(&x, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static retrlm__heap_item retrlm__heap_pop(retrlm__heap_item *h, size_t *n) {
    retrlm__heap_item top = h[0], x = h[--*n];
    size_t i = 0, len = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= len) break;
        if (c + 1 < len && retrlm__heap_less(&h[c + 1], &h[c])) c++;
        if (!retrlm__heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (len) h[i] = x;
    return top;
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
        if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, i);
    }
    while (hn) {
        retrlm__heap_item it = retrlm__heap_pop(e->heap, &hn);
        size_t p = it.pos, q = e->next[p];
        if (e->ids[p] < 0 || q == END) continue;
        r = retrlm__pair_rank(tok, e->ids[p], e->ids[q], &res);
        if (r != it.rank) continue; // stale: this pair changed since it was pushed
        e->ids[p] = res;
        e->ids[q] = -1;
        e->next[p] = e->next[q];
        if (e->next[q] != END) e->prev[e->next[q]] = p;
        if (e->prev[p] != END) {
            size_t a = e->prev[p];
            r = retrlm__pair_rank(tok, e->ids[a], e->ids[p], &res);
            if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, a);
        }
        if (e->next[p] != END) {
            r = retrlm__pair_rank(tok, e->ids[p], e->ids[e->next[p]], &res);
            if (r != INT_MAX) retrlm__heap_push(e->heap, &hn, r, p);
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
           retrlm__uc_ascii[s[p - 2]] != RETRLM__UC_SPACE &&
           retrlm__uc_ascii[s[p]] != RETRLM__UC_SPACE;
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
// whole file into a new buffer (*size bytes)
static retrlm_result retrlm__read_file(const char *path, char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    long n;
    *data = NULL;
    *size = 0;
    if (!f) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_IO, "%s: cannot find its size", path);
    }
    *data = (char *)retrlm__alloc((size_t)n + 1, 1);
    if (!*data) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: %ld bytes", path, n);
    }
    if (fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        RETRLM_FREE(*data);
        *data = NULL;
        return retrlm__fail(RETRLM_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    (*data)[n] = 0;
    *size = (size_t)n;
    return RETRLM_OK;
}

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
static int retrlm__wmap_add(retrlm__wmap *m, const unsigned char *s, size_t n, uint64_t h,
                            int64_t count) {
    retrlm__word *w = (retrlm__word *)m->words.p, nw;
    size_t i;
    if (m->cap) {
        for (i = (size_t)h & (m->cap - 1); m->slots[i]; i = (i + 1) & (m->cap - 1)) {
            retrlm__word *x = &w[m->slots[i] - 1];
            if (x->hash == h && x->len == n && !memcmp(m->arena.p + x->off, s, n)) {
                x->count += count;
                return 1;
            }
        }
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

typedef struct retrlm__pq_item {
    int64_t count; // pair count when pushed
    int a, b;      // the pair
} retrlm__pq_item;

// heap order: larger count first, then smaller a, then smaller b
static int retrlm__pq_before(const retrlm__pq_item *x, const retrlm__pq_item *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int retrlm__pq_push(retrlm__buf *h, int64_t count, int a, int b) {
    retrlm__pq_item x, *it;
    size_t i;
    x.count = count;
    x.a = a;
    x.b = b;
    if (!retrlm__buf_push(h, NULL, sizeof x)) return 0;
    it = (retrlm__pq_item *)h->p;
    i = h->n / sizeof x - 1;
    while (i > 0 && retrlm__pq_before(&x, &it[(i - 1) / 2])) {
        it[i] = it[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    it[i] = x;
    return 1;
}

static retrlm__pq_item retrlm__pq_pop(retrlm__buf *h) {
    retrlm__pq_item *it = (retrlm__pq_item *)h->p, top = it[0], x;
    size_t n = h->n / sizeof x - 1, i = 0;
    x = it[n];
    h->n -= sizeof x;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && retrlm__pq_before(&it[c + 1], &it[c])) c++;
        if (!retrlm__pq_before(&it[c], &x)) break;
        it[i] = it[c];
        i = c;
    }
    if (n) it[i] = x;
    return top;
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

static void retrlm__where_add(retrlm__pairs *p, long k, int w) {
    int *arr = p->where[k];
    if (stbds_arrlen(arr) && arr[stbds_arrlen(arr) - 1] == w) return;
    stbds_arrput(p->where[k], w);
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
            retrlm__where_add(&pairs, pi, (int)k);
        }
    }
    for (k = 0; k < pairs.n; k++)
        if (!retrlm__pq_push(&heap, pairs.count[k], pairs.ab[2 * k], pairs.ab[2 * k + 1]))
            goto nomem;
    while (n_tok < target && heap.n) {
        retrlm__pq_item top = retrlm__pq_pop(&heap);
        long pi = retrlm__pairs_find(&pairs, top.a, top.b), j;
        int a = top.a, b = top.b, z, mm[4], *wl;
        size_t la, lb, nbytes;
        uint64_t h;
        if (pi < 0 || pairs.count[pi] <= 0) continue;
        if (pairs.count[pi] != top.count) { // stale: requeue at its current count
            if (!retrlm__pq_push(&heap, pairs.count[pi], a, b)) goto nomem;
            continue;
        }
        if (top.count < min_freq) break;
        // the new token's bytes: a's then b's (an existing token with these bytes is reused)
        la = ((size_t *)off->p)[a + 1] - ((size_t *)off->p)[a];
        lb = ((size_t *)off->p)[b + 1] - ((size_t *)off->p)[b];
        nbytes = bytes->n;
        if (!retrlm__buf_push(bytes, NULL, la + lb)) goto nomem;
        memcpy(bytes->p + nbytes, bytes->p + ((size_t *)off->p)[a], la);
        memcpy(bytes->p + nbytes + la, bytes->p + ((size_t *)off->p)[b], lb);
        h = retrlm__hash_bytes(bytes->p + nbytes, la + lb);
        z = -1;
        if (vocab.cap) {
            size_t i;
            const retrlm__word *vw = (const retrlm__word *)vocab.words.p;
            for (i = (size_t)h & (vocab.cap - 1); vocab.slots[i]; i = (i + 1) & (vocab.cap - 1)) {
                const retrlm__word *x = &vw[vocab.slots[i] - 1];
                if (x->hash == h && x->len == la + lb &&
                    !memcmp(vocab.arena.p + x->off, bytes->p + nbytes, la + lb)) {
                    z = (int)x->count;
                    break;
                }
            }
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
        if (pairs.n > grown_cap) {
            unsigned char *g = (unsigned char *)retrlm__realloc(grown, pairs.n * 2, 1);
            int *t = (int *)retrlm__realloc(touched, pairs.n * 2, sizeof(int));
            if (g) grown = g;
            if (t) touched = t;
            if (!g || !t) goto nomem;
            memset(grown + grown_cap, 0, pairs.n * 2 - grown_cap);
            grown_cap = pairs.n * 2;
        }
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
                    retrlm__where_add(&pairs, p2, w);
                    if ((size_t)p2 >= grown_cap) {
                        size_t nc = (size_t)p2 * 2 + 2;
                        unsigned char *g = (unsigned char *)retrlm__realloc(grown, nc, 1);
                        int *t = (int *)retrlm__realloc(touched, nc, sizeof(int));
                        if (g) grown = g;
                        if (t) touched = t;
                        if (!g || !t) goto nomem;
                        memset(grown + grown_cap, 0, nc - grown_cap);
                        grown_cap = nc;
                    }
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
