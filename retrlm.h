/* retrlm.h - v0.1.0 - retrieval-based language models in one C99 header

   Assembled from retrlm_impl/ by `make retrlm.h`: edit the sources there, never this file.

   USAGE
     #define RETRLM_IMPLEMENTATION     before  #include "retrlm.h"  in ONE C or C++ file
                                       (make it the first include of that file: see POSIX);
     every other file just includes it. The implementation needs stb_ds.h (Debian: libstb-dev,
     /usr/include/stb) on the include path:
       cc -std=c99 -O2 -I/usr/include/stb app.c -lm -o app           one thread
       cc -std=c99 -O3 -fopenmp -I/usr/include/stb app.c -lm -o app  OpenMP; OMP_NUM_THREADS=2

   QUICK START (a whole program: a tokenizer trained on three texts, BM25 over them, a query)
     #define RETRLM_IMPLEMENTATION
     #include "retrlm.h"
     #include <stdio.h>
     #include <string.h>
     int main(void) {
         static const char *const docs[3] = {
             "A byte-level BPE tokenizer merges the most frequent pair of tokens, again and again.",
             "BM25 ranks documents by the query terms they share, the rare terms weighing most.",
             "RETRO reads the neighbours of each chunk of its text through cross-attention."};
         const char *q = "which tokenizer merges frequent pairs";
         retrlm_tokenizer_train_config tc = {0};
         retrlm_tokenizer tok = {0};
         retrlm_datastore ds = {0};
         int i, top, n = 0, ok;
         float score;
         tc.vocab_size = 300;
         ok = !retrlm_tokenizer_train(&tok, &tc, docs, NULL, 3, NULL, NULL);
         ok = ok && !retrlm_datastore_init(&ds, NULL);
         for (i = 0; ok && i < 3; i++)
             ok = !retrlm_datastore_add(&ds, &tok, i, docs[i], strlen(docs[i]), 0);
         ok = ok && !retrlm_datastore_commit(&ds);
         ok = ok && !retrlm_datastore_search(&ds, q, strlen(q), 1, RETRLM_NO_DOC, &top, &score, &n);
         if (ok && n == 1) printf("%.2f  %s\n", score, docs[ds.unit_doc[top]]);
         else fprintf(stderr, "quick start: %s\n", ok ? "nothing found" : retrlm_last_error());
         retrlm_datastore_free(&ds);
         retrlm_tokenizer_free(&tok);
         return !(ok && n == 1);
     }

   OPTIONS (define before the implementation include; none changes a struct or a prototype)
     RETRLM_STATIC          every function static; only together with RETRLM_IMPLEMENTATION
     RETRLM_API             linkage of public functions (default extern)
     RETRLM_ASSERT(x)       guards programmer misuse only, never data (default assert(x))
     RETRLM_MALLOC(n) RETRLM_REALLOC(p,n) RETRLM_FREE(p)     all three or none (default libc)
     RETRLM_NO_STDIO        no path-based load/save; the _memory variants stay
     RETRLM_NO_OPENMP       serial even under -fopenmp
     RETRLM_OPENMP_SIMD     `omp simd` hints in a -fopenmp-simd build (which has no _OPENMP)
     RETRLM_NO_STB_DS_IMPLEMENTATION   stb_ds.h is instantiated in another file of yours
                            (the library's arrays still grow and shrink through RETRLM_*)

   CONTENTS (public sections below, in the order data flows through them)
     core      results and error detail, allocation, RNG, progress callback, timer
     kernels   dot, axpy, scale, softmax, log-softmax, log-sum-exp, top-k, matrix multiply
     io        the container file format: sections, CRC32, 64-byte alignment, atomic save, mmap
     tokenizer byte-level BPE: GPT-2 exact encoding, encoder.json/vocab.bpe/.tiktoken, training
     analyzer  text -> terms: Unicode lower-casing, letter/digit tokens, stop words, Porter stemmer
     bm25      inverted index: compressed postings, BM25 top-k with block-max pruning, updates, files
     index     flat and IVF vector indexes (IP, L2, cosine; f32, SQ8), k-means, .fvecs/.npy
     model     transformer LM / encoder, forward, backward, AdamW, training, generation, safetensors;
               RETRO's chunked cross-attention and neighbour encoder as optional blocks; RPT's
               chunk embeddings (the model retrieves its own earlier chunks)
     encoder   bi-encoder: query and document embeddings for dense retrieval (DPR, Contriever)
     losses    contrastive, KL distillation, marginal likelihood, TRIME's joint softmax, RPT's
               LambdaRank-weighted pairs
     datastore a corpus as retrieval units: text, tokens, source documents, BM25 over them; kNN-LM
               keys; RETRO neighbours (a frozen retriever's units and their continuations)
     ralm      retrieval-augmented scoring: in-context RALM, REPLUG ensemble, kNN-LM; bits per byte
     train     DPR, Contriever (MoCo), REPLUG LSR, in-context LM training, RETRO training (strategy
               2); REALM and Atlas with a refreshed index (3); TRIME, NPM and RPT, whose index is
               the batch (4)
     eval      retrieval metrics: MRR@k, nDCG@k, Recall@k against graded judgments

   CONVENTIONS
     - Every fallible call returns retrlm_result; RETRLM_OK is 0. After a failure,
       retrlm_last_error() gives this thread's detail message (file, section, offset, expected).
       Nothing aborts or prints on bad input, nor when memory runs out: a failed allocation is
       RETRLM_ERR_NOMEM and leaves the object valid (tests/test_oom.c fails every allocation of
       a BM25, index and datastore build and a model init in turn).
     - You own every retrlm_* struct. x_init zeroes the object first, so x_free is always safe:
       on a zeroed, failed or already freed object it does nothing.
     - Inputs are copied unless the declaration says "borrows". Outputs go into your buffers;
       where a size depends on the data, passing NULL returns the size needed.
     - x_save_memory(x, buf, cap, &size) writes the file image into buf; buf NULL gives the
       size only. x_load_memory of an object that reads its arrays in place (bm25, index,
       datastore, RETRO neighbours, kNN-LM keys, NPM index) borrows data until x_free when it
       is 64-byte aligned on a little-endian host, as retrlm_reader_open_memory does, and
       copies it otherwise; models, encoders and tokenizers always copy.
     - Dimensions are int, byte sizes and offsets size_t; sizes are overflow-checked.

   POSIX
     On POSIX systems the implementation uses open/fsync/rename/mmap/clock_gettime. It defines
     _POSIX_C_SOURCE itself when retrlm.h is the first include of the implementation file; if
     another system header comes first under -std=c99, compile with -D_POSIX_C_SOURCE=200809L.
     Without those declarations it still works: saves skip fsync, loads read instead of mapping.
     On 32-bit systems it defines _FILE_OFFSET_BITS 64 the same way (first include, or pass
     -D_FILE_OFFSET_BITS=64): without it, files over 2 GiB cannot be read, and on a 64-bit kernel
     (a 32-bit Raspberry Pi OS, armhf under qemu) readdir fails on ext4 with EOVERFLOW, so a save
     cannot clear the temporaries that killed saves left.

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
#if defined(RETRLM_IMPLEMENTATION) && !defined(_WIN32) && !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64
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

/* The kernel path this process runs: the instruction set, the matmul register tile, and whether
   OpenMP is on, as a string constant, e.g. "avx2+fma, matmul tile 6x16, OpenMP" for a build with
   -march=haswell. On x86-64 with GCC or Clang a build for plain x86-64 (the README's `cc -O2`)
   chooses the matmul micro-kernel at run time: AVX-512 or AVX2+FMA when the CPU (and OS) have
   them ("avx512f (chosen at run time; built for x86-64 SSE2), matmul tile 8x32, no OpenMP"), else
   its SSE2 4x8 one; define RETRLM_NO_DISPATCH to keep the build's own. The other vector kernels
   (dot, distances, softmax) run as compiled. Results are identical for any thread count within
   one path; between paths they differ in the last bits (FMA rounds once). Benches print it. */
RETRLM_API const char *retrlm_cpu_path(void);

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
#define RETRLM_READER_NO_VERIFY_MAPPED 4 /* skip them only when the file is memory-mapped (checking
                                            them reads every page, which mapping is there to avoid) */

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
/* The same into a new array: *ids (*n_out ids; free it with retrlm_free), one call. */
RETRLM_API retrlm_result retrlm_tokenizer_encode_alloc(const retrlm_tokenizer *tok,
                                                       const char *text, size_t len, int flags,
                                                       int **ids, size_t *n_out);
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
/* The tokenizer's fingerprint: the CRC-32 of its container image (merges, specials, settings),
   the same however it was made or loaded (trained, a .rlm file, GPT-2's files). Two tokenizers
   with one fingerprint encode alike; retrlm_model_file_set_tokenizer records it in a model. */
RETRLM_API retrlm_result retrlm_tokenizer_fingerprint(const retrlm_tokenizer *tok, uint32_t *fp);
RETRLM_API void retrlm_tokenizer_free(retrlm_tokenizer *tok);
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
/* ---- retrlm_impl/index.h ---- */
/* ---- index: flat and IVF vector indexes, f32 and 8-bit storage, k-means -------------------
   One object covers both kinds: nlist == 0 is a flat (exhaustive) index, nlist > 0 an IVF
   index with nlist k-means centroids and contiguous inverted lists (CSR: list l holds the rows
   [list_offsets[l], list_offsets[l+1]) of ids, vectors and codes). Vectors are (n, dim)
   row-major float arrays; ids are int64 chosen by you (>= 0) or given in order of addition.

   Metrics. Search returns the k best, best first, ties by ascending id:
     RETRLM_METRIC_IP      score = inner product, larger is better
     RETRLM_METRIC_COSINE  vectors and queries are normalised: score = cosine similarity
     RETRLM_METRIC_L2      score = squared Euclidean distance, smaller is better
   When fewer than k vectors qualify, the remaining slots get id -1 and score -inf (IP, cosine)
   or +inf (L2). Single and batched searches may differ in the last bit of a score (a batch
   goes through the blocked matrix multiply); neither depends on OMP_NUM_THREADS.

   Storage. RETRLM_STORAGE_F32 keeps the vectors; RETRLM_STORAGE_SQ8 keeps one byte per
   component, x ~ min[j] + (code + 0.5) * step[j], with per-dimension min and range taken from
   the training set (FAISS's QT_8bit); with rerank > 0 the f32 vectors are kept as well and the
   rerank * k best by code are scored again exactly.

   Lifecycle: init, [train], add, search, remove, save / load, free. Flat f32 needs no training;
   SQ8 and IVF do (train on a sample like the data). A loaded index uses the file's arrays in
   place (memory-mapped when the file is 1 MiB or more); add or remove first copies them. */

typedef enum retrlm_metric {
    RETRLM_METRIC_IP = 0,
    RETRLM_METRIC_L2 = 1,
    RETRLM_METRIC_COSINE = 2
} retrlm_metric;

typedef enum retrlm_storage {
    RETRLM_STORAGE_F32 = 0,
    RETRLM_STORAGE_SQ8 = 1
} retrlm_storage;

typedef enum retrlm_kmeans_init {
    RETRLM_KMEANS_RANDOM = 0,  /* initial centroids: distinct random training points */
    RETRLM_KMEANS_PLUSPLUS = 1 /* k-means++ (Arthur and Vassilvitskii 2007), D^2 sampling */
} retrlm_kmeans_init;

typedef struct retrlm_index_config {
    int            dim;     /* d > 0, required */
    retrlm_metric  metric;  /* default IP */
    retrlm_storage storage; /* default F32 */
    int      nlist;        /* 0: flat; > 0: IVF lists (needs train with >= nlist vectors) */
    int      nprobe;       /* IVF lists searched when the search does not say, default 1 */
    int      rerank;       /* SQ8: keep f32 too and re-score rerank * k candidates; 0: off */
    int      kmeans_iters; /* Lloyd iterations, default 10 */
    retrlm_kmeans_init kmeans_init; /* RETRLM_KMEANS_RANDOM (default) or _PLUSPLUS */
    int      max_points_per_list; /* k-means trains on at most nlist * this points, default 256 */
    uint64_t seed;         /* sampling and initialisation, default 1234 */
    retrlm_progress_fn progress; /* optional: train ("kmeans") and add ("add") report; cancel */
    void    *progress_user;      /* passed to progress */
} retrlm_index_config;

typedef struct retrlm_index {
    int            dim;    /* d */
    retrlm_metric  metric;
    retrlm_storage storage;
    int      nlist;        /* 0 for flat */
    int      nprobe;       /* default lists searched; you may change it between searches */
    int      rerank;       /* candidates factor for SQ8 re-ranking, 0 off */
    int      trained;      /* 1 when add is allowed */
    size_t   n;            /* vectors held */
    int64_t  next_id;      /* id given to the next vector added without ids */
    const int64_t  *ids;          /* (n) user ids in storage (list) order */
    const float    *vectors;      /* (n, dim) f32 vectors (normalised for cosine); NULL for
                                     SQ8 without rerank */
    const uint8_t  *codes;        /* (n, dim) SQ8 codes, NULL for f32 */
    const float    *sq_min;       /* (dim) SQ8 per-dimension minimum */
    const float    *sq_step;      /* (dim) SQ8 per-dimension (max - min) / 255 */
    const float    *centroids;    /* (nlist, dim) IVF coarse centroids */
    const uint64_t *list_offsets; /* (nlist + 1) IVF list l is rows [off[l], off[l+1]) */
    /* private */
    int      kmeans_iters_, kmeans_init_, max_points_; /* training settings from the config */
    uint64_t seed_;                 /* training seed */
    retrlm_progress_fn progress_;   /* from the config */
    void    *progress_user_;        /* from the config */
    float   *cnorms_;               /* (nlist) squared centroid norms, always owned */
    int      borrowed_;             /* 1: the arrays above point into reader_ */
    retrlm_reader reader_;          /* the loaded file, open while borrowed_ */
} retrlm_index;

/* Optional search settings; NULL means the index defaults. */
typedef struct retrlm_search_params {
    int nprobe; /* IVF lists to scan, 0: index->nprobe; clamped to nlist */
    int rerank; /* SQ8 + f32 kept: candidates factor, 0: index->rerank, < 0: no re-ranking */
} retrlm_search_params;

RETRLM_API retrlm_result retrlm_index_init(retrlm_index *ix, const retrlm_index_config *cfg);
RETRLM_API void          retrlm_index_free(retrlm_index *ix); /* zeroed, failed, freed: no-op */
/* Learns what the storage needs: SQ8 ranges, IVF centroids (k-means on a sample of at most
   nlist * max_points_per_list of x). x (n, dim) is read only during the call. Training again
   needs an empty index. Runs in parallel; reports "kmeans" progress per iteration. */
RETRLM_API retrlm_result retrlm_index_train(retrlm_index *ix, const float *x, size_t n, int dim);
/* Copies x (n, dim); ids (n) >= 0 or NULL for next_id, next_id + 1, ... Values must be
   finite and dim must match. Reports "add" progress; on any error the index is unchanged. */
RETRLM_API retrlm_result retrlm_index_add(retrlm_index *ix, const float *x, size_t n, int dim,
                                          const int64_t *ids);
/* Removes every vector whose id is in ids (n_ids); *n_removed (may be NULL) gets the count. */
RETRLM_API retrlm_result retrlm_index_remove(retrlm_index *ix, const int64_t *ids, size_t n_ids,
                                             size_t *n_removed);
/* The k best for each of nq queries (nq, dim): out_ids (nq, k), out_scores (nq, k) or NULL.
   k > n pads with id -1 (see above); an empty index is fine; NaN or inf in a query is
   RETRLM_ERR_ARG. Const: may run concurrently with other searches. */
RETRLM_API retrlm_result retrlm_index_search(const retrlm_index *ix, const float *queries,
                                             int nq, int dim, int k,
                                             const retrlm_search_params *params,
                                             int64_t *out_ids, float *out_scores);
/* Bytes of the arrays the index uses (mapped file pages included). */
RETRLM_API size_t retrlm_index_bytes(const retrlm_index *ix);
/* The file image into buf (cap bytes); *size gets its bytes. buf NULL: *size only. */
RETRLM_API retrlm_result retrlm_index_save_memory(const retrlm_index *ix, void *buf, size_t cap,
                                                  size_t *size);
/* Borrows data until retrlm_index_free when it is 64-byte aligned (little-endian host),
   otherwise copies it. Everything is validated: garbage gives an error, never a crash. */
RETRLM_API retrlm_result retrlm_index_load_memory(retrlm_index *ix, const void *data,
                                                  size_t size);
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_index_save(const retrlm_index *ix, const char *path);
/* Maps the file (1 MiB or more) and searches it in place. */
RETRLM_API retrlm_result retrlm_index_load(retrlm_index *ix, const char *path);
#endif

/* ---- k-means on its own: centroids (k, dim) out of x (n, dim), n >= k. metric IP or cosine
   gives spherical k-means (unit centroids, assignment by inner product). The config supplies
   kmeans_iters, kmeans_init, max_points_per_list, seed and progress (dim, metric, k given). */
RETRLM_API retrlm_result retrlm_kmeans(float *centroids, int k, const float *x, size_t n, int dim,
                                       retrlm_metric metric, const retrlm_index_config *cfg);

/* ---- interchange: .fvecs / .ivecs (per vector: int32 d, then d values) and 2-D float32 .npy
   (little-endian '<f4', C order, format 1.0 to 3.0). Readers allocate *out (n, dim), freed
   with retrlm_free; every vector of a .fvecs must have the same d. */
RETRLM_API retrlm_result retrlm_fvecs_read_memory(const void *data, size_t size, float **out,
                                                  size_t *n, int *dim);
RETRLM_API retrlm_result retrlm_npy_read_memory(const void *data, size_t size, float **out,
                                                size_t *n, int *dim);
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_fvecs_read(const char *path, float **out, size_t *n, int *dim);
RETRLM_API retrlm_result retrlm_fvecs_write(const char *path, const float *x, size_t n, int dim);
RETRLM_API retrlm_result retrlm_ivecs_read(const char *path, int32_t **out, size_t *n, int *dim);
RETRLM_API retrlm_result retrlm_ivecs_write(const char *path, const int32_t *x, size_t n, int dim);
RETRLM_API retrlm_result retrlm_npy_read(const char *path, float **out, size_t *n, int *dim);
RETRLM_API retrlm_result retrlm_npy_write(const char *path, const float *x, size_t n, int dim);
#endif
/* ---- retrlm_impl/model.h ---- */
/* ---- model: the transformer (causal LM and bidirectional encoder), AdamW, training, generation
   A decoder-only transformer in the modern small-LM shape: token embedding, n_layers blocks of
   x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x)), a final RMSNorm and an output projection (the
   embedding itself when tied). Rotary position embeddings in the Hugging Face Llama convention
   (dimension i pairs with i + head_dim/2), no biases. With bidirectional = 1 the same code has
   no causal mask and serves as an encoder (mean pooling below).

   Memory (llm.c's layout): the parameters are one float block, the gradients another of the
   same size, each tensor a slice of it in the order of retrlm_model_tensor; all activations
   for max_batch x max_seq_len tokens are allocated once by init, so forward and backward never
   allocate (retrlm_matmul allocates its packing buffers). Results are identical for any number
   of OpenMP threads.

   Inference-only models (config.inference 1, e.g. retrlm_model_load with a cfg_over that sets
   it): a model opened to generate or score holds its weights, the KV cache of max_seq_len
   positions and one token's decode buffers; no gradients, and the forward's activations (one
   layer's worth, reused by every layer, and the logits of max_batch x max_seq_len tokens) are
   allocated by the first forward, so a model that only generates never has them. Backward and
   training refuse it (RETRLM_ERR_ARG); retrlm_model_ffn_input reads the last layer the forward
   ran (the kNN-LM key), not earlier ones. Logits and generated tokens equal the full model's
   bit for bit. retrlm_model_load of a file of 1 MiB or more on a little-endian POSIX host uses
   the weights in place from a read-only memory map: opening reads the header, the section table
   and the config, not the weights (so their CRC is not checked, as it is for a smaller file or a
   model loaded for training), processes that open one file share its pages, and the weights must
   not be written. A RETRO
   model keeps its cross-attention activations for max_batch x max_seq_len tokens either way.

   Shapes: B sequences of T tokens (B <= max_batch, T <= max_seq_len), N = B*T tokens, row-major;
   V vocabulary, D dim, F ffn_dim, L n_layers, H n_heads.

   RETRO (retro_chunk > 0; Borgeaud et al. 2022, section 2.4): the text is cut into chunks of m
   tokens; each chunk u comes with k neighbours, each a retrieved chunk and its continuation of up
   to r tokens. A small bidirectional neighbour encoder (its own width, depth and embedding)
   encodes every neighbour; chosen decoder layers get a chunked cross-attention block between
   self-attention and the feed-forward, x += Wo CA(RMSNorm(x), E Wk, E Wv), where the tokens from
   the last one of chunk u to the one before the last of chunk u+1 (positions um + m - 1 ..
   um + 2m - 2) attend to the k*r encoded tokens of chunk u's neighbours. So chunk u's neighbours
   affect only the last token of u and the tokens of u+1: a chunk's neighbours may be retrieved
   with the chunk itself, and nothing leaks from text not yet seen. Positions 0 .. m-2 see no
   neighbours (RETRO's RET(C_1) = empty). Differences from the paper, measured or to be: the
   neighbour encoder is not conditioned on the chunk's decoder activations (it reads the
   neighbour alone), and the cross-attention has no relative position term (the encoder's own
   rotary positions order a neighbour's tokens). Without retro_chunk the model is byte for byte
   the plain one: same parameters, same activations, same speed.

   Smeared keys (retro_smear 1; Olsson et al. 2022, "In-context learning and induction heads",
   section "smeared keys"; not in RETRO): head h of a cross-attention layer reads key
   s k_t + (1 - s) k_{t-1} at a neighbour's token t > 0 (k_0 at t = 0), s = sigmoid(a_h) with a
   learnt a_h (RETRLM_T_CCA_SMEAR, 0 at init, no weight decay). A head can then match the token
   a position has just read against the token *before* each neighbour token and read the one that
   followed it: copying from a neighbour becomes one attention step instead of a circuit that a
   small model learns late. Off by default; a model without it has no such parameters.

   RPT's self-retrieval (rpt_dim > 0; Rubin & Berant 2023, "Long-range language modeling with
   self-retrieval"): the model embeds its own chunks. Chunk u's embedding e_u is the mean over its
   m tokens of the feed-forward input of decoder layer rpt_layer - 1 (after its RMSNorm), its query
   q_u = Wq e_u and key k_u = Wk e_u (RETRLM_T_RPT_WQ, _WK, (rpt_dim, D)), and the retrieval score
   of an earlier chunk j for u is q_u . k_j / sqrt(rpt_dim). The layer lies before the first
   cross-attention, so the embeddings do not depend on the neighbours they choose: a trainer runs
   retrlm_model_rpt_embed (the decoder up to that layer), picks each chunk's neighbours,
   runs retrlm_model_forward_retro and backpropagates the retriever's loss through both (its
   gradient reaches the decoder's lower layers, so the LM and the retriever train together).
   Differences from RPT: the neighbours (an earlier chunk and its continuation) are read by the
   RETRO neighbour encoder above, not by the decoder's own lower layers, and the chunk
   embeddings are causal (RPT adds a bidirectional pass over each chunk). */

typedef struct retrlm_model_config {
    int      vocab_size;    /* V tokens; required */
    int      dim;           /* D model width; default 256; a multiple of 2*n_heads */
    int      n_layers;      /* L blocks; default 4 */
    int      n_heads;       /* H attention heads; default 4 */
    int      ffn_dim;       /* F SwiGLU hidden width; default 8/3 D rounded up to a multiple of 32 */
    int      max_seq_len;   /* positions; default 256 */
    int      max_batch;     /* sequences per forward; default 1 */
    int      untied;        /* 1: separate output matrix; 0: logits use the embedding */
    int      bidirectional; /* 1: encoder, no causal mask; 0: causal LM */
    int      no_logits;     /* 1: never computes logits (an encoder): saves the (max_batch,
                               max_seq_len, V) activation block; not stored in checkpoints */
    int      inference;     /* 1: generation and scoring only (below); not stored in checkpoints */
    float    rope_theta;    /* rotary base; default 10000 */
    float    norm_eps;      /* RMSNorm epsilon; default 1e-5 */
    float    init_std;      /* std of the normal weight init; default 0.02 */
    uint64_t seed;          /* weight init seed (0 is a seed) */
    /* RETRO blocks; retro_chunk 0 (the default) means none and the fields below are ignored */
    int      retro_chunk;      /* m, tokens a chunk; 1 <= m <= max_seq_len */
    int      retro_k;          /* neighbours a chunk; default 2 */
    int      retro_len;        /* r, tokens a neighbour (a chunk and its continuation); default 2m */
    int      retro_start;      /* first decoder layer with cross-attention (0: the first) */
    int      retro_every;      /* cross-attention in layers start, start + every, ...; default 3 */
    int      retro_enc_dim;    /* neighbour encoder width; default dim / 2 (a multiple of 2*heads) */
    int      retro_enc_layers; /* neighbour encoder blocks; default 2 */
    int      retro_enc_heads;  /* neighbour encoder heads; default n_heads */
    int      retro_smear;      /* 1: smeared keys in the cross-attention (below); 0: none */
    /* RPT's self-retrieval (below); rpt_dim 0 (the default) means none */
    int      rpt_dim;          /* d, width of a chunk's query and key; needs RETRO, retro_start >= 1 */
    int      rpt_layer;        /* the chunk embedding reads the feed-forward input of decoder
                                  layer rpt_layer - 1 (1-based: 1 .. retro_start); 0: retro_start,
                                  the last layer before the first cross-attention (default) */
} retrlm_model_config;

/* The parameter tensors, in the order they lie in the parameter block: the matrices (weight
   decay applies) first, then the RMSNorm gains. Per-layer tensors are stacked over layers; the
   RETRO tensors over the cross-attention layers only (0 elements without RETRO). A RETRO model's
   neighbour encoder is a model of its own kind whose matrices lie after RETRLM_T_CCA_WO and whose
   gains lie after RETRLM_T_CCA_NORM, inside the same block (m->retro_enc shows them). */
typedef enum retrlm_model_tensor {
    RETRLM_T_EMBED = 0,    /* (V, D) token embedding */
    RETRLM_T_LM_HEAD,      /* (V, D) output matrix when untied; 0 elements when tied */
    RETRLM_T_WQ,           /* (L, D, D) query projection, (out, in) */
    RETRLM_T_WK,           /* (L, D, D) */
    RETRLM_T_WV,           /* (L, D, D) */
    RETRLM_T_WO,           /* (L, D, D) attention output projection */
    RETRLM_T_W_GATE,       /* (L, F, D) SwiGLU gate */
    RETRLM_T_W_UP,         /* (L, F, D) SwiGLU up */
    RETRLM_T_W_DOWN,       /* (L, D, F) SwiGLU down */
    RETRLM_T_CCA_WQ,       /* (R, D, D) chunked cross-attention query, R cross-attention layers */
    RETRLM_T_CCA_WK,       /* (R, D, De) keys from the neighbour encoder's De-wide states */
    RETRLM_T_CCA_WV,       /* (R, D, De) */
    RETRLM_T_CCA_WO,       /* (R, D, D) */
    RETRLM_T_RPT_WQ,       /* (rpt_dim, D) RPT chunk query; 0 elements without rpt_dim */
    RETRLM_T_RPT_WK,       /* (rpt_dim, D) RPT chunk key */
    RETRLM_T_ATTN_NORM,    /* (L, D) RMSNorm gain before attention */
    RETRLM_T_FFN_NORM,     /* (L, D) RMSNorm gain before the feed-forward */
    RETRLM_T_FINAL_NORM,   /* (D) final RMSNorm gain */
    RETRLM_T_CCA_NORM,     /* (R, D) RMSNorm gain before the cross-attention */
    RETRLM_T_CCA_SMEAR,    /* (R, H) smeared keys' mixing logits a; 0 elements without retro_smear */
    RETRLM_T_COUNT
} retrlm_model_tensor;

typedef struct retrlm_model {
    retrlm_model_config config;          /* resolved: defaults filled in */
    size_t n_params;                     /* floats in the parameter block */
    size_t n_decay;                      /* params[0, n_decay) are matrices, the rest norm gains */
    size_t tensor_size[RETRLM_T_COUNT];  /* floats in each tensor */
    float *params;                       /* (n_params) owned; tensors in retrlm_model_tensor order */
    float *grads;                        /* (n_params) owned; same layout; backward adds to it */
    float *param[RETRLM_T_COUNT];        /* into params */
    float *grad[RETRLM_T_COUNT];         /* into grads */
    /* after retrlm_model_forward, read-only: */
    int          B, T;                   /* shape of the last forward */
    const float *logits;                 /* (B, T, V) unless RETRLM_FORWARD_NO_LOGITS */
    const float *hidden;                 /* (B, T, D) final hidden states, after the last norm */
    const int   *lengths;                /* (B) valid tokens of each sequence */
    /* after retrlm_model_decode, read-only: */
    const float *step_logits;            /* (V) logits of the last decoded position */
    const float *step_hidden;            /* (D) its final hidden state */
    /* RETRO, read-only: */
    int          retro_layers;           /* R cross-attention layers (0: a plain model) */
    struct retrlm_model *retro_enc;      /* the neighbour encoder (NULL without RETRO); its
                                            tensors point into params and grads */
    /* private */
    float  *acts_;                       /* (n_acts_) all activations, one block */
    size_t  n_acts_;
    float  *work_;                       /* backward and decode scratch, one block */
    int    *tokens_;                     /* (max_batch * max_seq_len) inputs of the last forward */
    int    *lengths_;                    /* (max_batch) */
    int64_t *ids_;                       /* (V) sampling scratch */
    float  *mmws_;                       /* (n_mmws_) the matmuls' packing buffers */
    size_t  n_mmws_;
    void   *own_[6];                     /* what to free: params grads (NULL in a view: they
                                            are another model's) acts_ work_ mmws_ rope_ */
    float  *rope_;                       /* rotary cos, sin tables (max_seq_len, hd/2) each */
    void   *map_;                        /* inference: the open retrlm_reader whose memory map
                                            holds params (NULL when they are owned) */
    const int8_t *q8_[RETRLM_T_COUNT];   /* an int8 model's matrices (NULL: f32, in param[t]) */
    const float  *q8s_[RETRLM_T_COUNT];  /* their scales, one a group of 32 weights of a row */
    float  *retro_;                      /* RETRO activations, work and decode cache, one block */
    void   *retro_own_;
    int    *retro_ints_;                 /* neighbour tokens, rows and lengths */
    int     retro_rows_;                 /* neighbours encoded by the last forward */
    int     retro_chunk_;                /* decode: the chunk whose neighbours are cached; -1 */
    float  *rpt_pool_;                   /* (max_batch * chunks, D) chunk means of the last
                                            retrlm_model_rpt_embed, then (same) work */
    void   *rpt_own_;
    int     rpt_B_, rpt_T_;              /* its shape; 0 before one */
} retrlm_model;

/* Fills in defaults, checks the shapes, allocates everything and initialises the weights
   (normal(0, init_std); wo and w_down scaled by 1/sqrt(2L); gains 1). ERR_ARG on bad shapes. */
RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg);
RETRLM_API void retrlm_model_free(retrlm_model *m);
/* A second set of activations for src's weights: m shares src's params and grads (backward on
   either adds to the same gradients) but has its own max_batch, max_seq_len and no_logits
   (over's fields when > 0 / set, else src's). Use it to run two batches of different shapes
   through one model and backpropagate through both (a shared bi-encoder). Free m before src. */
RETRLM_API retrlm_result retrlm_model_init_view(retrlm_model *m, const retrlm_model *src,
                                                const retrlm_model_config *over);
/* Per-layer view of a stacked tensor: its layer-l slice in params (or grads with grad = 1). For
   the RETRO tensors, l is the decoder layer and must be a cross-attention layer. */
RETRLM_API float *retrlm_model_tensor_ptr(const retrlm_model *m, retrlm_model_tensor t, int layer,
                                          int grad);

#define RETRLM_FORWARD_NO_LOGITS 1 /* skip the output projection (encoders, hidden states only) */
/* Runs the model on tokens (B, T), ids in [0, V). lengths (B) or NULL (= T): positions at and
   past lengths[b] are padding, never attended to (their outputs are computed but meaningless).
   Keeps everything backward needs. ERR_ARG for a bad shape or token id. A model made with
   no_logits behaves as if RETRLM_FORWARD_NO_LOGITS were always given. */
RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags);
/* The same for a RETRO model with each chunk's neighbours: neighbours (B, U, k, r) token ids,
   U = T / m (chunk u = tokens um .. um + m - 1; a last partial chunk has no neighbours that
   matter), k = retro_k, r = retro_len. A neighbour is its ids up to its first -1 (-1 pads the
   rest); one that starts with -1 is absent. neighbours NULL: every neighbour absent, which gives
   exactly the logits of the plain model with the same decoder weights. ERR_ARG on a plain model
   (unless neighbours is NULL) or an id outside [-1, V). */
RETRLM_API retrlm_result retrlm_model_forward_retro(retrlm_model *m, const int *tokens, int B,
                                                    int T, const int *lengths,
                                                    const int *neighbours, int flags);
/* RPT: embeds the chunks of tokens (B, T) (T a multiple of retro_chunk, U = T / m a sequence)
   by running the first config.rpt_layer decoder layers only: q and k (B, U, rpt_dim) (either
   may be NULL) get the chunks' queries and keys, in sequence order. The embeddings equal those
   of a retrlm_model_forward_retro of the same tokens with any neighbours. The model's other
   activations are then partial: call retrlm_model_forward_retro before any backward. ERR_ARG
   without rpt_dim, or for a bad shape or token. */
RETRLM_API retrlm_result retrlm_model_rpt_embed(retrlm_model *m, const int *tokens, int B, int T,
                                                float *q, float *k);
/* The retriever's backward: given d loss / d q and d loss / d k (B, U, rpt_dim) of the last
   retrlm_model_rpt_embed (either may be NULL: zero), adds the gradients of Wq and Wk to
   m->grads and writes dffn (B, T, D) = d loss / d (feed-forward input of layer rpt_layer - 1),
   to pass as grad.dffn_in[rpt_layer - 1] to retrlm_model_backward after a forward of the same
   tokens. */
RETRLM_API retrlm_result retrlm_model_rpt_embed_backward(retrlm_model *m, const float *dq,
                                                         const float *dk, float *dffn);
/* Whether decoder layer l has chunked cross-attention. */
RETRLM_API int retrlm_model_is_retro_layer(const retrlm_model *m, int layer);
/* Layer l's feed-forward input (after its RMSNorm), (B, T, D), read-only after forward: the
   kNN-LM key for l = L-1. */
RETRLM_API const float *retrlm_model_ffn_input(const retrlm_model *m, int layer);

/* Mean cross-entropy (nats) of the last forward's logits against targets (B, T); a target < 0
   is ignored. Overwrites m->logits with d(mean loss)/d(logits), ready for backward
   (grad.dlogits = m->logits). *loss may be NULL; *count gets the targets counted (may be NULL). */
RETRLM_API retrlm_result retrlm_model_lm_loss(retrlm_model *m, const int *targets, float *loss,
                                              int *count);
/* Summed negative log-likelihood (nats, double) of targets (B, T) under the last forward's
   logits, leaving them intact; targets < 0 ignored. */
RETRLM_API double retrlm_model_nll(retrlm_model *m, const int *targets, int *count);

/* Gradients entering backward; every pointer may be NULL (no gradient there). */
typedef struct retrlm_model_grad_in {
    const float *dlogits;        /* (B, T, V); may be m->logits after retrlm_model_lm_loss */
    const float *dhidden;        /* (B, T, D) at m->hidden */
    const float *const *dffn_in; /* (L) pointers, each (B, T, D) or NULL, at ffn_input(l) */
} retrlm_model_grad_in;
/* Adds the parameter gradients of the last forward to m->grads (zero them first with
   retrlm_model_zero_grad). */
RETRLM_API retrlm_result retrlm_model_backward(retrlm_model *m, const retrlm_model_grad_in *g);
RETRLM_API void retrlm_model_zero_grad(retrlm_model *m);

/* Encoder pooling: out (B, D) = mean of m->hidden over each sequence's valid tokens. */
RETRLM_API void retrlm_model_mean_pool(const retrlm_model *m, float *out);
/* Its backward: dhidden (B, T, D) = dout (B, D) spread evenly over the valid tokens (0 past). */
RETRLM_API void retrlm_model_mean_pool_backward(const retrlm_model *m, const float *dout,
                                                float *dhidden);

/* ---- AdamW with decoupled weight decay, global-norm clipping, warmup + cosine schedule */
typedef struct retrlm_adamw_config {
    float beta1;        /* default 0.9 */
    float beta2;        /* default 0.95 */
    float eps;          /* default 1e-8 */
    float clip_norm;    /* clip the global gradient norm to this; default 1; < 0: never clip */
    int   warmup_steps; /* linear warmup from lr/warmup to lr; default 0 */
    int   total_steps;  /* cosine decay to min_lr_ratio*lr at this step; 0: constant after warmup */
    float min_lr_ratio; /* floor of the cosine; default 0.1; < 0 means 0 */
} retrlm_adamw_config;

/* A parameter group: n floats at params with their gradients, learning rate and decay. */
typedef struct retrlm_adamw_group {
    float *params;       /* (n) borrowed */
    float *grads;        /* (n) borrowed */
    size_t n;            /* floats */
    float  lr;           /* peak learning rate */
    float  weight_decay; /* decoupled: p -= lr_t * weight_decay * p */
} retrlm_adamw_group;

typedef struct retrlm_adamw {
    retrlm_adamw_config config;  /* resolved */
    int     n_groups;
    retrlm_adamw_group *groups;  /* (n_groups) owned copy */
    size_t  n;                   /* floats over all groups */
    float  *m;                   /* (n) first moments; m and v are one block */
    float  *v;                   /* (n) second moments */
    int64_t step;                /* updates done */
    float   last_grad_norm;      /* global norm before clipping, of the last step */
    float   last_lr_scale;       /* schedule factor of the last step */
    /* private */
    double *partial_;            /* (n_chunks_) per-chunk sums of squares */
    size_t  n_chunks_;
} retrlm_adamw;

RETRLM_API retrlm_result retrlm_adamw_init(retrlm_adamw *o, const retrlm_adamw_config *cfg,
                                           const retrlm_adamw_group *groups, int n_groups);
RETRLM_API void  retrlm_adamw_free(retrlm_adamw *o);
/* Schedule factor in (0, 1] at update number step (0-based): warmup, then cosine. */
RETRLM_API float retrlm_adamw_lr_scale(const retrlm_adamw_config *cfg, int64_t step);
/* One update of every group from its gradients (clipped by global norm); step += 1. */
RETRLM_API void  retrlm_adamw_step(retrlm_adamw *o);
/* The model's two groups: out[0] matrices (weight_decay), out[1] norm gains (no decay);
   returns 2 (1 if the model has no gains; 0 for an inference-only model). */
RETRLM_API int retrlm_model_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                         retrlm_adamw_group out[2]);
/* AdamW groups of the RETRO parameters alone (cross-attention and neighbour encoder: matrices
   with weight_decay, gains without), for RETRO-fitting a trained, frozen decoder; returns how
   many (0 for a plain or inference-only model). */
RETRLM_API int retrlm_model_retro_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                               retrlm_adamw_group out[2]);
/* RETRO-fitting's start for the neighbour encoder's token embedding: its row v becomes the
   decoder's row v times a fixed random projection (D to De, entries normal with variance 1/De,
   from seed), so neighbour tokens enter the encoder in the decoder's own terms. The
   cross-attention can then learn to match a neighbour's tokens against the text and copy them
   as one linear map, instead of first learning a second embedding of every token, which at a
   vocabulary of thousands takes more steps than a RETRO-fit has (RETRO-pytorch shares one
   embedding between encoder and decoder for this reason). Call it once the decoder's weights
   are in place, before training; retro-train --retrofit does. RETRLM_ERR_ARG without RETRO or
   on an inference-only model. */
RETRLM_API retrlm_result retrlm_model_retro_tie_embedding(retrlm_model *m, uint64_t seed);

/* ---- plain language-model training */
typedef struct retrlm_lm_train_state {
    int64_t    step;            /* training steps done */
    retrlm_rng rng;             /* batch sampling stream */
    float      last_loss;       /* train loss of the last step (nats/token) */
    double     last_valid_bpb;  /* bits per byte of the last evaluation, 0 before any */
} retrlm_lm_train_state;

typedef struct retrlm_lm_train_config {
    const int *train;           /* (n_train) token stream, borrowed */
    size_t     n_train;         /* > seq_len */
    const int *valid;           /* (n_valid) validation stream or NULL */
    size_t     n_valid;
    size_t     valid_bytes;     /* UTF-8 bytes of the text valid encodes (bits per byte) */
    int        batch;           /* sequences a step; default m->config.max_batch */
    int        seq_len;         /* tokens a sequence; default m->config.max_seq_len */
    int64_t    steps;           /* train until state->step == steps */
    int        eval_every;      /* steps between evaluations; 0: only at the end */
    const char *checkpoint;     /* path or NULL: saved every checkpoint_every steps and at the end */
    int        checkpoint_every;
    float     *losses;          /* (steps) or NULL: losses[s] = train loss of step s */
    retrlm_progress_fn progress; /* stage "train" after every step, "valid" after an eval */
    void      *progress_user; /* passed to progress */
} retrlm_lm_train_config;

/* Seeds a fresh state (step 0). */
RETRLM_API void retrlm_lm_train_state_init(retrlm_lm_train_state *s, uint64_t seed);
/* Trains from state->step to cfg->steps: each step draws batch random windows of seq_len+1
   tokens from the stream, does forward, loss, backward and an AdamW update. Resuming from a
   checkpoint continues exactly as if never stopped. */
RETRLM_API retrlm_result retrlm_lm_train(retrlm_model *m, retrlm_adamw *opt,
                                         const retrlm_lm_train_config *cfg,
                                         retrlm_lm_train_state *state);
/* Bits per byte of a token stream: total nats of every token given the ones before it (in
   windows of seq_len, each window conditioned on the last token of the one before; the first
   token costs ln V) / ln 2 / n_bytes. */
RETRLM_API retrlm_result retrlm_lm_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                 size_t n_bytes, int seq_len, double *bpb);

/* ---- int8 weights (llama.cpp's Q8_0, with float scales): each row of every matrix in groups of
   32 weights, a group 32 int8 values and one scale d = max |w| / 127 (w ~ d q): 1.125 bytes a
   weight instead of 4. An int8 model is inference-only (config.inference 1: generation, scoring,
   kNN-LM keys, as an f32 one); its norm gains stay f32, in params (n_params of them, n_decay 0),
   and param[t] is NULL for a matrix. A one-row product (decoding) reads the int8 rows directly,
   a larger one (a forward) dequantizes them as it packs them; results are identical for any
   thread count. retrlm_model_save writes it (sections q8_scales, q8 and params, the gains) and
   retrlm_model_load opens it inference-only whatever cfg_over says, mapped like an f32 one.
   Plain models (LMs, encoders) only: RETRO's cross-attention stays f32, so a RETRO model is
   refused. */
/* dst = src's weights in int8 (src: any plain model, inference-only or not). RETRLM_ERR_ARG for
   a RETRO model, ERR_NOMEM. */
RETRLM_API retrlm_result retrlm_model_quantize(retrlm_model *dst, const retrlm_model *src);
RETRLM_API int retrlm_model_is_q8(const retrlm_model *m); /* 1 for an int8 model */

/* ---- checkpoints: container kind "model"; sections config, params, and when saved with an
   optimiser and state: adamw_m, adamw_v, adamw_step, train_step, rng; an int8 model's: q8_scales
   and q8 as well */
#ifndef RETRLM_NO_STDIO
/* opt and state may be NULL (weights only). */
RETRLM_API retrlm_result retrlm_model_save(const retrlm_model *m, const retrlm_adamw *opt,
                                           const retrlm_lm_train_state *state, const char *path);
/* Initialises m from the file (its config; cfg_over's nonzero max_batch and max_seq_len replace
   the saved ones, and its no_logits applies, when cfg_over is not NULL) and loads the
   parameters. */
RETRLM_API retrlm_result retrlm_model_load(retrlm_model *m, const char *path,
                                           const retrlm_model_config *cfg_over);
/* Restores an optimiser made for this model (same sizes) and the training state. */
RETRLM_API retrlm_result retrlm_model_load_state(retrlm_adamw *opt, retrlm_lm_train_state *state,
                                                 const char *path);
/* Which tokenizer a model file was trained with: section "cli.tokenizer_crc32" (named by the CLI,
   which wrote it first) holds its retrlm_tokenizer_fingerprint; the loaders pass over it. set
   rewrites the file at path (atomically) with tok's. check: RETRLM_OK when the file records tok's
   fingerprint or none (a model saved without it); RETRLM_ERR_ARG, with both fingerprints in the
   message, when it records another tokenizer's (one of the same size encodes text differently). */
RETRLM_API retrlm_result retrlm_model_file_set_tokenizer(const char *path, const retrlm_tokenizer *tok);
RETRLM_API retrlm_result retrlm_model_file_check_tokenizer(const char *path, const retrlm_tokenizer *tok);
#endif
/* The same on a file image: save to a buffer (buf NULL: *size only), load from memory. */
RETRLM_API retrlm_result retrlm_model_save_memory(const retrlm_model *m, const retrlm_adamw *opt,
                                                  const retrlm_lm_train_state *state, void *buf,
                                                  size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_model_load_memory(retrlm_model *m, const void *buf, size_t size,
                                                  const retrlm_model_config *cfg_over);
RETRLM_API retrlm_result retrlm_model_load_state_memory(retrlm_adamw *opt,
                                                        retrlm_lm_train_state *state,
                                                        const void *buf, size_t size);

/* ---- generation with a KV cache (batch 1) */
typedef struct retrlm_sampler {
    float temperature; /* 0: greedy (argmax, ties to the smaller id) */
    int   top_k;       /* keep the k most likely; 0: all */
    float top_p;       /* keep the smallest set with probability >= top_p; 0 or >= 1: all */
} retrlm_sampler;

/* Runs one token at position pos (0 <= pos < max_seq_len) against the cache of positions
   [0, pos) and stores its keys/values at pos: m->step_logits, m->step_hidden. A RETRO model at
   a position pos >= m - 1 reads the neighbours of chunk (pos - m + 1) / m, which
   retrlm_model_decode_neighbours must have given (ERR_ARG otherwise). */
RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos);
/* RETRO generation: encodes chunk's neighbours (k, r) as in retrlm_model_forward_retro (NULL:
   none) for the decode calls that read them, positions chunk*m + m - 1 .. chunk*m + 2m - 2.
   Call it once chunk's m tokens are known, before decoding its last one: retrieval every m
   tokens, with the text so far as the query. */
RETRLM_API retrlm_result retrlm_model_decode_neighbours(retrlm_model *m, int chunk,
                                                        const int *neighbours);
/* Draws a token from logits (V) (not modified). */
RETRLM_API int retrlm_model_sample(retrlm_model *m, const float *logits,
                                   const retrlm_sampler *s, retrlm_rng *rng);
/* Feeds prompt (n_prompt >= 1), then samples n_new tokens into out; stops early at max_seq_len.
   *n_out (may be NULL) gets the number generated. A RETRO model generates without neighbours
   here (ralm retrieves them). */
RETRLM_API retrlm_result retrlm_model_generate(retrlm_model *m, const int *prompt, int n_prompt,
                                               int n_new, const retrlm_sampler *s,
                                               retrlm_rng *rng, int *out, int *n_out);

/* ---- safetensors with Hugging Face Llama names (model.embed_tokens.weight,
   model.layers.N.self_attn.q_proj.weight, ..., model.norm.weight, lm_head.weight), F32.
   The metadata holds the config (num_attention_heads, rope_theta, rms_norm_eps, ...). */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_model_save_safetensors(const retrlm_model *m, const char *path);
RETRLM_API retrlm_result retrlm_model_load_safetensors(retrlm_model *m, const char *path,
                                                       const retrlm_model_config *hint);
#endif
/* buf NULL: *size only. */
RETRLM_API retrlm_result retrlm_model_save_safetensors_memory(const retrlm_model *m, void *buf,
                                                              size_t cap, size_t *size);
/* Shapes come from the tensors; n_heads, rope_theta and norm_eps from the metadata or from hint
   (hint's nonzero fields win; hint may be NULL); max_seq_len, max_batch from hint. */
RETRLM_API retrlm_result retrlm_model_load_safetensors_memory(retrlm_model *m, const void *buf,
                                                              size_t size,
                                                              const retrlm_model_config *hint);
/* ---- retrlm_impl/encoder.h ---- */
/* ---- encoder: the bi-encoder, dense retrieval embeddings (DPR, Contriever) ----------------
   A query encoder and a document encoder, each the bidirectional transformer with mean pooling
   over the valid tokens, then an optional linear projection (no bias) to proj_dim and an
   optional L2 normalisation. The two sides share one set of weights (Contriever's choice; the
   document side is then a retrlm_model_init_view of the query side) or have their own (DPR).
   Relevance is the dot product of a query and a document embedding (cosine when normalised);
   training divides it by a temperature (retrlm_contrastive_loss). Texts longer than a side's
   max tokens are cut to their first tokens; an empty text is the single token 0. */
#define RETRLM_QUERY 0
#define RETRLM_DOC 1

typedef struct retrlm_encoder_config {
    retrlm_model_config model; /* vocab_size required; bidirectional and no_logits are set here;
                                  max_seq_len and max_batch come from the fields below */
    int separate;         /* 1: the document side has its own weights (DPR); 0: shared */
    int proj_dim;         /* > 0: project the pooled vector to proj_dim; 0: embeddings are dim wide */
    int normalize;        /* 1: L2-normalise the embeddings */
    int max_query_tokens; /* default 32 */
    int max_doc_tokens;   /* default 128 */
    int max_batch;        /* texts a forward on the query side; the document side takes twice as
                             many (a positive and a hard negative per query); default 32 */
} retrlm_encoder_config;

typedef struct retrlm_encoder {
    retrlm_encoder_config config; /* resolved */
    int           dim;            /* embedding width: proj_dim, or the model's dim */
    retrlm_model  side[2];        /* [RETRLM_QUERY], [RETRLM_DOC] */
    float        *proj[2];        /* (dim, model dim) projections; proj[DOC] == proj[QUERY] when
                                     shared; NULL without projection */
    float        *proj_grad[2];   /* their gradients */
    /* private */
    float *block_;                /* everything below, one allocation */
    float *pooled_[2], *raw_[2], *norm_[2], *out_[2], *dpool_[2], *dhid_[2], *draw_[2];
} retrlm_encoder;

RETRLM_API retrlm_result retrlm_encoder_init(retrlm_encoder *e, const retrlm_encoder_config *cfg);
RETRLM_API void retrlm_encoder_free(retrlm_encoder *e);
/* Embeds B token sequences (B, T) of side (RETRLM_QUERY or RETRLM_DOC) into out (B, e->dim);
   lengths (B) or NULL as in retrlm_model_forward. Keeps what backward needs for that side. */
RETRLM_API retrlm_result retrlm_encoder_forward(retrlm_encoder *e, int side, const int *tokens,
                                                int B, int T, const int *lengths, float *out);
/* Adds to the gradients the effect of dout (B, e->dim) at the last forward's embeddings of
   side: normalisation, projection, pooling and the transformer. */
RETRLM_API retrlm_result retrlm_encoder_backward(retrlm_encoder *e, int side, const float *dout);
RETRLM_API void retrlm_encoder_zero_grad(retrlm_encoder *e);
/* AdamW groups of every trainable tensor (out has room for 6); returns how many. */
RETRLM_API int retrlm_encoder_param_groups(const retrlm_encoder *e, float lr, float weight_decay,
                                           retrlm_adamw_group out[6]);
/* Embeds n texts (lens (n) or NULL for NUL-terminated) on side with tok into out (n, e->dim),
   batch after batch; the operation to call again whenever the weights change (re-indexing).
   progress: stage "encode", done/total in texts; may cancel (RETRLM_ERR_CANCELLED). */
RETRLM_API retrlm_result retrlm_encoder_encode_texts(retrlm_encoder *e,
                                                     const retrlm_tokenizer *tok, int side,
                                                     const char *const *texts,
                                                     const size_t *lens, size_t n, float *out,
                                                     retrlm_progress_fn progress, void *user);
/* Embeds one text (len bytes) on side into out (e->dim) without touching e's buffers: it makes
   its own activations (a retrlm_model_init_view of the side's weights) for the call, so any
   number of threads may embed through one encoder at once, as long as none trains it. */
RETRLM_API retrlm_result retrlm_encoder_embed(const retrlm_encoder *e,
                                              const retrlm_tokenizer *tok, int side,
                                              const char *text, size_t len, float *out);
/* Files: container kind "encoder" (sections enc_config, q.*, d.* when separate, proj.q,
   proj.d). Weights only. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_encoder_save(const retrlm_encoder *e, const char *path);
RETRLM_API retrlm_result retrlm_encoder_load(retrlm_encoder *e, const char *path);
#endif
RETRLM_API retrlm_result retrlm_encoder_save_memory(const retrlm_encoder *e, void *buf,
                                                    size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_encoder_load_memory(retrlm_encoder *e, const void *buf,
                                                    size_t size);
/* ---- retrlm_impl/losses.h ---- */
/* ---- losses: training objectives over embeddings and distributions ----------------------
   In-batch contrastive loss (DPR; Contriever's in-batch variant): the scores of nq queries
   against nd candidate documents are S = Q Dᵀ / temperature (nq, nd); query i's positive is
   candidate pos[i] and every other candidate is a negative (the other queries' positives, hard
   negatives). loss = mean over queries of -log softmax(S_i)[pos[i]]. Gradients are those of
   that mean, ready for retrlm_encoder_backward. */

/* q (nq, dim), d (nd, dim), pos (nq) in [0, nd). dq (nq, dim) and dd (nd, dim) get the
   gradients (either may be NULL); *loss the mean in nats (may be NULL); *correct (may be NULL)
   how many queries rank their positive first. ERR_ARG on bad sizes or a NaN score. */
RETRLM_API retrlm_result retrlm_contrastive_loss(const float *q, int nq, const float *d, int nd,
                                                 int dim, const int *pos, float temperature,
                                                 float *loss, float *dq, float *dd,
                                                 int *correct);

/* Distillation of a retriever from an LM (REPLUG LSR; Atlas's perplexity distillation). For
   each of n queries and its k retrieved documents, the retriever's distribution
   P_i = softmax(scores_i / tau_score) is pulled toward the LM's Q_i = softmax(gold_i / tau_gold):
       loss = mean over queries of KL(Q_i || P_i) = sum_j Q_ij (log Q_ij - log P_ij)
   gold (n, k) carries no gradient. REPLUG LSR: gold_ij = log p_LM(y | d_j, x), the whole
   continuation's log-likelihood, tau 0.1 on both sides; Atlas PDist: the mean over y's tokens,
   tau 0.01. A candidate that is absent (fewer than k retrieved) is -inf in both scores and
   gold; each query needs one finite candidate. dscores (n, k) (may be NULL) gets
   d loss / d scores = (P - Q) / (tau_score n); *loss (may be NULL) the mean in nats. */
RETRLM_API retrlm_result retrlm_kl_distill_loss(const float *scores, const float *gold, int n,
                                                int k, float tau_score, float tau_gold,
                                                float *loss, float *dscores);

/* RPT's retriever objective (Rubin & Berant, 2023): pairs ordered by a reference LM, each pair
   weighted by LambdaRank's |delta NDCG|. For query i (RPT: a chunk) with k candidates (earlier
   chunks), scores s_ij from the retriever and gold g_ij from the reference LM (RPT: how much
   candidate j raises the log-likelihood of the chunk that follows), every pair (a, b) with
   g_a > g_b and g_a > threshold is a pair to order, and
       loss = sum over queries and their pairs of lambda_ab * max(0, margin - (s_a - s_b)) / P
   P the number of pairs over all queries (RPT divides by its valid pairs too). lambda_ab is what
   NDCG would change by if a and b swapped places in the order by s:
       lambda_ab = |G_a - G_b| * |1 / log2(2 + r_a) - 1 / log2(2 + r_b)| / IDCG_i
   with gain G_j = 2^g_j - 1 where g_j > threshold and 0 elsewhere, r_j the 0-based rank of j by
   s (ties: the lower index first), and IDCG_i = sum_j G_j / log2(2 + rank of j by g). lambda is
   a weight, not differentiated (LambdaRank's rule). The margin is RPT's hinge, which its trainer
   schedules from 1 to max_margin; RPT's code also has a variant with a sigmoid in place of the
   hinge and log2 differences in place of the discounts' differences: this is the textbook form.
   threshold >= 0 (RPT: 0, a candidate that does not help is never the better of a pair), so
   every gain in a pair is positive. Absent candidates are -inf in both scores and gold; gold
   must be below 512 (2^g must fit a double). dscores (n, k) (may be NULL) gets d loss / d
   scores; *loss (may be NULL) the loss (0 when there is no pair); *pairs (may be NULL) P.
   ERR_ARG on bad sizes, a negative threshold, NaN, +inf, gold of 512 or more, or a candidate
   absent on one side only. */
RETRLM_API retrlm_result retrlm_rank_loss(const float *scores, const float *gold, int n, int k,
                                          float margin, float threshold, float *loss,
                                          float *dscores, int *pairs);

/* Marginal likelihood over retrieved documents (REALM; Atlas's EMDR). For query i, its k
   candidates (REALM puts a null document among them) and t target positions p:
       log p(y_p | x_i) = logsumexp_j( log softmax(scores_i / temperature)_j + loglik[i, j, p] )
   marginalised for each position separately, as REALM does for each masked token, and
       loss = mean over queries of ( - mean over the query's valid positions of log p(y_p | x_i) )
   loglik (n, k, t): log p(y_p | x_i, d_j) from the reader; mask (n, t): 1 where position p of
   query i counts, 0 where not (NULL: all count); a query without a valid position adds nothing
   and is not counted. Absent candidates are -inf in scores. Gradients (either may be NULL):
   dscores (n, k) for the retriever and dloglik (n, k, t) for the reader, where dloglik[i,j,p] =
   -posterior(j | x_i, y_p) / (queries counted * valid positions of i): the weight with which
   the reader's cross-entropy of token p under document j flows back. */
RETRLM_API retrlm_result retrlm_marginal_loss(const float *scores, const float *loglik,
                                              const unsigned char *mask, int n, int k, int t,
                                              float temperature, float *loss, float *dscores,
                                              float *dloglik);

/* NPM's phrase objective (Min et al., 2023): a masked span is filled by retrieving its start
   and its end from an in-batch memory, not by an output vocabulary. The encoder reads the batch
   twice: masked (the queries: qs and qe, its outputs at each span's first and last masked
   position) and unmasked (the memory: its output at every token, n_mem = B x T). Span s is the
   memory positions [start[s], start[s] + len[s]) of one block (a sequence of the batch); with
   c = 1 / (sqrt(dim) temperature) and A(s) the memory positions outside span s's block (the
   same-block exclusion: the span can never find itself),
       L_start(s) = - log sum_{j in P(s)} exp(c qs_s . m_j) + log sum_{j in A(s)} exp(c qs_s . m_j)
   and L_end(s) the same with qe_s and the positives' last positions, where P(s) are the first
   positions of the copies of the span's tokens in A(s), each within one block. A span without
   a copy has no positive and is not counted. loss = mean over the counted spans of
   L_start + L_end. tokens (n_mem) and block (n_mem) describe the memory; qs, qe (n_spans, dim),
   mem (n_mem, dim). dqs, dqe (n_spans, dim) and dmem (n_mem, dim) get the gradients (any may be
   NULL; dmem is written, not added to); *loss (may be NULL) in nats, *count (may be NULL) the
   spans counted, *hits_start and *hits_end (may be NULL) how many of those rank a positive
   first. ERR_ARG on bad sizes, a span outside the memory or across two blocks. */
RETRLM_API retrlm_result retrlm_npm_loss(const float *qs, const float *qe, int n_spans,
                                         const float *mem, int n_mem, int dim, float temperature,
                                         const int *tokens, const int *block, const int *start,
                                         const int *len, float *loss, float *dqs, float *dqe,
                                         float *dmem, int *count, int *hits_start, int *hits_end);

/* What TRIME's memory is and how it is compared (retrlm_model_trime_loss, retrlm_trime_train,
   and at inference retrlm_ralm_config.trime; train.h says what each batching holds). */
typedef enum retrlm_trime_batching {
    RETRLM_TRIME_LOCAL = 0,
    RETRLM_TRIME_LONG = 1,
    RETRLM_TRIME_EXT = 2
} retrlm_trime_batching;

typedef enum retrlm_trime_sim {
    RETRLM_TRIME_DOT = 0,
    RETRLM_TRIME_L2 = 1
} retrlm_trime_sim;

typedef struct retrlm_trime_params {
    retrlm_trime_batching batching; /* LOCAL, LONG or EXT: which entries M(i) holds */
    retrlm_trime_sim      sim;      /* DOT or L2 */
    float temperature; /* divides the similarity; 0 means 1 */
    int   no_local;    /* EXT: 1 leaves i's own segment out of M(i) (trime_ext_loss's
                          only_cross_sent); the trainer sets it each step (cross_sent_ratio) */
} retrlm_trime_params;

/* TRIME's objective (Zhong et al., 2022): one softmax over the vocabulary and an in-batch
   memory. Position i has logits (V) and similarities sims_i (m) to m memory entries, entry j
   followed by the token mem_tokens[j]; the probability of the target y = targets[i] is
       p(y) = ( exp(logits_i[y]) + sum_{j: mem_tokens[j] == y} exp(sims_ij) )
              / ( sum_v exp(logits_iv) + sum_j exp(sims_ij) )
   and loss = mean over the positions with targets[i] >= 0 of -log p(y). TRIME's similarity is
   h_i . h_j / sqrt(D) between last-layer FFN inputs (retrlm_model_ffn_input), masked causally
   inside a segment: -inf leaves entry j out for position i (the caller scales and masks).
   logits (n, V), sims (n, m), mem_tokens (m) in [0, V), targets (n). dlogits (n, V) and dsims
   (n, m) get the gradients (either may be NULL, and each may be its input: written after it is
   read); *loss (may be NULL) in nats; *count (may be NULL) the positions counted. */
RETRLM_API retrlm_result retrlm_trime_loss(const float *logits, int n, int vocab,
                                           const float *sims, int m, const int *mem_tokens,
                                           const int *targets, float *loss, float *dlogits,
                                           float *dsims, int *count);
/* ---- retrlm_impl/datastore.h ---- */
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
/* ---- retrlm_impl/ralm.h ---- */
/* ---- ralm: retrieval-augmented inference, measured in bits per byte -----------------------
   Scores a token stream with a causal LM the way retrieval-augmented LMs read text: every
   `stride` tokens, the text of the last `query_tokens` tokens is a query to the datastore, and
   the next `stride` tokens are predicted from the retrieved units followed by the text's own
   last `context_tokens` tokens.
     RETRLM_RALM_NONE       the LM alone, on exactly the same windows (the fair baseline)
     RETRLM_RALM_INCONTEXT  In-Context RALM (Ram et al., 2023): the top k units (default 1) are
                            placed before the context, the best one nearest to it
     RETRLM_RALM_REPLUG     REPLUG ensemble (Shi et al., 2023): each of the top k units (default
                            4) is prepended on its own and the next-token distributions are mixed,
                            p(y) = sum_j softmax(score / temperature)_j p(y | unit_j, context)
   With cfg->trime set, each token's probability also counts TRIME's local memory (below); with
   cfg->knnlm set, the result is further interpolated with the kNN-LM distribution.
   The first token of the stream has no context and costs ln V, as in retrlm_lm_bits_per_byte.
   Bits per byte = total nats / ln 2 / the UTF-8 bytes of the text the tokens encode. */

/* ---- kNN-LM datastore (Khandelwal et al., 2020): for every position of a corpus, the key is
   the LM's hidden state at the last layer's feed-forward input and the value is the next token.
   Keys live in a vector index (L2; flat or IVF, f32 or SQ8 from index_config). */
typedef struct retrlm_knnlm {
    retrlm_index index;   /* keys; ids are positions into values */
    int         *values;  /* (n) the token that followed each key */
    size_t       n;       /* keys */
    /* private */
    retrlm_reader reader_; /* the loaded file, while the index borrows from it */
} retrlm_knnlm;

/* Runs m over tokens (n) in windows of seq_len (default max_seq_len) that overlap by half, so
   every key but those of the first window sees at least seq_len/2 tokens of context, and adds
   one key per position. index_config: dim and metric are set here (L2); the rest is yours
   (NULL: flat f32). IVF or SQ8 storage is trained on the keys first. With nlist > 0 and
   nprobe 0, the keys are searched with retrlm_knnlm_default_nprobe(nlist) lists: the square
   root of nlist rounded up (32 of 1024), since a kNN-LM needs most of its k neighbours right and
   one list, the index's own default, loses them. Progress "knnlm keys". */
RETRLM_API int retrlm_knnlm_default_nprobe(int nlist);
RETRLM_API retrlm_result retrlm_knnlm_build(retrlm_knnlm *kn, retrlm_model *m, const int *tokens,
                                            size_t n, int seq_len,
                                            const retrlm_index_config *index_config);
RETRLM_API void retrlm_knnlm_free(retrlm_knnlm *kn);
/* Files: container kind "knnlm" (sections "index", the index's own file image, and "values").
   Load checks every id against the values and every value against vocab_size (the model the
   keys are for), so a file of other keys is an error, never a read out of bounds; the index is
   used in place (memory-mapped) when the file is big. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_knnlm_save(const retrlm_knnlm *kn, const char *path);
RETRLM_API retrlm_result retrlm_knnlm_load(retrlm_knnlm *kn, const char *path, int vocab_size);
#endif
/* buf NULL: *size only. load_memory borrows data until free as retrlm_reader_open_memory does. */
RETRLM_API retrlm_result retrlm_knnlm_save_memory(const retrlm_knnlm *kn, void *buf, size_t cap,
                                                  size_t *size);
RETRLM_API retrlm_result retrlm_knnlm_load_memory(retrlm_knnlm *kn, const void *data, size_t size,
                                                  int vocab_size);

typedef enum retrlm_ralm_mode {
    RETRLM_RALM_NONE = 0,
    RETRLM_RALM_INCONTEXT,
    RETRLM_RALM_REPLUG
} retrlm_ralm_mode;

typedef struct retrlm_ralm_config {
    retrlm_ralm_mode mode;
    int   stride;          /* s: tokens predicted per retrieval; default 16 */
    int   query_tokens;    /* l: the query is the text of the last l tokens; default 32 */
    int   k;               /* units prepended (in-context, default 1) or mixed (REPLUG, default 4) */
    float temperature;     /* REPLUG weights softmax(score / temperature); 0: the default for
                              the retrieval mode's scores, so that the weights follow them:
                              BM25 1; DENSE, LINEAR and RERANK 0.1 (cosine-like scores, REPLUG
                              LSR's gamma); RRF 2 / (rrf_k + 1)^2, so one place lower in both
                              fused lists near the top costs a factor of about e (RRF's scores
                              are fused ranks: its weights follow ranks, never the raw scores) */
    int   unit_tokens;     /* tokens of a unit used at most; default the datastore's chunk size */
    int   continuation;    /* 1: a unit is read with its continuation, the units after it in its
                              document, unit_tokens in all: what comes after the text that
                              matched the query, as a RETRO neighbour (0: the unit alone) */
    int   context_tokens;  /* tokens of the text's own prefix; default what max_seq_len leaves */
    int   exclude;         /* 1: never retrieve units of document exclude_doc (leakage control) */
    const retrlm_retrieve_params *retrieve; /* how units are ranked; NULL: BM25 */
    /* kNN-LM on top of any mode: p = lambda p_kNN + (1 - lambda) p, in log space, with
       p_kNN(y) = sum over the knn_k nearest keys with value y of softmax(-distance / knn_temperature) */
    const retrlm_knnlm *knnlm; /* NULL: no kNN-LM */
    int   knn_k;           /* neighbours; default 64 */
    float lambda;          /* interpolation weight in (0, 1); default 0.25 */
    float knn_temperature; /* default 1 */
    int   knn_nprobe;      /* IVF keys: lists a search scans; 0: the keys index's nprobe (which
                              retrlm_knnlm_build sets from nlist unless told) */
    int64_t exclude_doc;
    /* TRIME's local memory (strategy 4; for a model trained by retrlm_trime_train): each
       predicted token's probability is the joint softmax over the vocabulary and the earlier
       positions j of its own scored sequence (prepended units included), entry j labelled with
       the token after it,
           p(y) = ( exp(logit_y) + sum_{j: x_{j+1} = y} exp(s_j) ) / ( sum_v exp(logit_v) + sum_j exp(s_j) )
       with s_j the similarity of the keys (the last layer's FFN inputs) that trime->sim and
       trime->temperature give, as in training (batching and no_local are not used here).
       With knnlm too, that is TrimeLM_ext: the kNN-LM distribution of keys built from the same
       model is mixed in after. NULL: the vocabulary alone. */
    const retrlm_trime_params *trime;
    /* With trime: TRIME's long memory (TrimeLM_long), 0 for none. Each window's memory also holds
       the trime_cache stream positions before the window's first token, each with the key it had
       in the window that scored the token after it, labelled with that token; e.g. 7 x 256 for a
       model trained with RETRLM_TRIME_LONG on batches of 8 segments of 256. Keeps a ring of
       trime_cache + max_seq_len + max_batch x stride keys. Not with RETRLM_RALM_REPLUG. */
    int trime_cache;
    retrlm_progress_fn progress; /* stage "ralm", done/total in tokens; may cancel */
    void *progress_user;
} retrlm_ralm_config;

/* Bits per byte of tokens (n) whose text is n_bytes long. ds may be NULL for RETRLM_RALM_NONE.
   token_nats (n) or NULL gets each token's cost in nats. The model's max_batch sequences are
   scored per forward; m must be causal. */
RETRLM_API retrlm_result retrlm_ralm_bits_per_byte(retrlm_model *m, const retrlm_tokenizer *tok,
                                                   const retrlm_datastore *ds, const int *tokens,
                                                   size_t n, size_t n_bytes,
                                                   const retrlm_ralm_config *cfg, double *bpb,
                                                   float *token_nats);

/* ---- RETRO generation: retrieval every m tokens (Borgeaud et al., 2022, section 2.4)
   A RETRO model (retrlm_model_config.retro_chunk = m) decodes the prompt and then the tokens it
   samples with the KV cache. Whenever chunk c's m tokens are known (before decoding its last
   one, position cm + m - 1), the chunk's text is the query: its k neighbours are found exactly
   as retrlm_retro_neighbours_build finds them for a stream of those m tokens with doc NULL (the
   units, each followed by its continuation in its document, len tokens) and given to the model
   with retrlm_model_decode_neighbours. So the logits at every position are those of
   retrlm_model_forward_retro over the whole sequence with the neighbours
   retrlm_retro_neighbours_build gives for it (doc NULL), up to the rounding of the KV cache. */
typedef struct retrlm_retro_generate_config {
    const retrlm_tokenizer *tok;   /* the LM's tokenizer: a chunk is decoded with it */
    const retrlm_datastore *ds;    /* committed, its units in the LM's tokens */
    retrlm_retro_neighbours_config neighbours; /* retrieve, depth, unit_only, min_overlap as
                                      for retrlm_retro_neighbours_build; chunk, k, len: 0 or the
                                      model's retro_chunk, retro_k, retro_len (ERR_ARG else) */
    const retrlm_sampler *sampler; /* NULL: greedy */
    retrlm_rng *rng;               /* needed unless greedy */
    int   *units;  /* (max_seq_len / m * k) or NULL: units[c*k + j] = the unit that starts
                      neighbour j of chunk c (-1: absent), for every chunk retrieved */
    float *logits; /* (n_prompt + n_new, V) or NULL: row p = the logits at position p, for every
                      position decoded */
} retrlm_retro_generate_config;

/* Feeds prompt (1 <= n_prompt <= max_seq_len), then samples n_new tokens into out (n_new),
   stopping early when the sequence fills max_seq_len, as retrlm_model_generate does; *n_out
   (may be NULL) gets the number generated. The positions decoded are the prompt's and those of
   every token generated but the last: D = n_prompt + *n_out - 1 of them (n_prompt when n_new is
   0); the chunks retrieved are c < D / m. ERR_ARG for a plain model, a prompt too long or empty,
   a token outside the vocabulary, neighbours of another shape than the model's, or a datastore
   not committed. */
RETRLM_API retrlm_result retrlm_retro_generate(retrlm_model *m,
                                               const retrlm_retro_generate_config *cfg,
                                               const int *prompt, int n_prompt, int n_new,
                                               int *out, int *n_out);

/* ---- NPM's phrase index (Min et al., 2023): an encoder trained by retrlm_npm_train fills a
   masked span by retrieval, with no output vocabulary. Every token of a corpus is a vector (the
   encoder's output, reading the corpus in blocks of seq_len), in a vector index by inner
   product (flat or IVF, f32 or SQ8 from index_config). To fill a span of len masked tokens,
   its start and end queries (the outputs at its first and last masked position) each retrieve
   their k best tokens; a start hit j proposes the phrase tokens[j, j + len), an end hit j the
   phrase tokens[j - len + 1, j + 1], and
       p(phrase) = 1/2 sum over the start hits proposing it of softmax(c s)_j
                 + 1/2 sum over the end hits proposing it of softmax(c s)_j
   with s the inner products, c = 1 / (sqrt(dim) temperature), each softmax over its k hits. */
typedef struct retrlm_npm_index {
    retrlm_index index;  /* one vector a corpus token; ids are positions into tokens */
    int         *tokens; /* (n) the corpus, copied */
    size_t       n;
    /* private */
    retrlm_reader reader_; /* the loaded file, while the index borrows from it */
} retrlm_npm_index;

/* Encodes tokens (n) with m (bidirectional) in blocks of seq_len (0: max_seq_len), the last one
   shorter, and indexes every token's output. index_config: dim and metric are set here (inner
   product); NULL: flat f32. Progress "npm index". */
RETRLM_API retrlm_result retrlm_npm_index_build(retrlm_npm_index *x, retrlm_model *m, const int *tokens,
                                                size_t n, int seq_len,
                                                const retrlm_index_config *index_config);
RETRLM_API void retrlm_npm_index_free(retrlm_npm_index *x);
/* Files: container kind "npm_index" (sections "index", the index's own file image, and "tokens"),
   checked on load as kNN-LM keys are (every id a position, every token below vocab_size, the
   model's vocabulary with its mask token), the index used in place. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_npm_index_save(const retrlm_npm_index *x, const char *path);
RETRLM_API retrlm_result retrlm_npm_index_load(retrlm_npm_index *x, const char *path, int vocab_size);
#endif
/* buf NULL: *size only. load_memory borrows data until free as retrlm_reader_open_memory does. */
RETRLM_API retrlm_result retrlm_npm_index_save_memory(const retrlm_npm_index *x, void *buf, size_t cap,
                                                      size_t *size);
RETRLM_API retrlm_result retrlm_npm_index_load_memory(retrlm_npm_index *x, const void *data, size_t size,
                                                      int vocab_size);

/* Fills the span tokens[start, start + len) of one sequence (n <= max_seq_len tokens; the span's
   tokens must be mask_id, the rest is its context) from the index: out (len) gets the most
   probable phrase and *prob (may be NULL) its probability. k: hits a query (0: 32); temperature
   0 means 1. A phrase that would run outside the corpus is not proposed; *prob 0 and out all -1
   when no hit proposes one. ERR_ARG on a causal model, bad sizes, or a span not all mask_id. */
RETRLM_API retrlm_result retrlm_npm_fill(retrlm_model *m, const retrlm_npm_index *x, const int *tokens,
                                         int n, int start, int len, int mask_id, int k,
                                         float temperature, int *out, float *prob);

/* ---- retrlm_impl/train.h ---- */
/* ---- train: the training strategies --------------------------------------------------------
   Strategy 1 (independent training), the retriever side: a bi-encoder trained on its own,
     DPR        (Karpukhin et al., 2020) supervised: each query's positive, the other queries'
                positives and one hard negative per query (a BM25 result that is not relevant)
                are the candidates; softmax cross-entropy over dot products (temperature 1)
     Contriever (Izacard et al., 2022) unsupervised: two independent random crops of one
                document, each with random token deletion, are a positive pair; the other
                documents' crops in the batch are the negatives; temperature 0.05; with MoCo
                (retrlm_moco) the keys come from a momentum encoder and a queue of past keys
                adds negatives, as in Contriever's main recipe
   Both run forward, loss (retrlm_contrastive_loss), backward through both encoder sides and an
   AdamW update a step, and give the same results for any number of threads. Texts come
   tokenised, as CSR arrays: text i is ids[off[i] .. off[i+1]) (retrlm_tokenizer_encode_batch
   writes exactly that), cut to the side's max tokens. */

typedef struct retrlm_token_texts {
    const int    *ids; /* all texts' token ids, concatenated */
    const size_t *off; /* (n + 1) where each text starts */
    size_t        n;   /* texts */
} retrlm_token_texts;

typedef struct retrlm_retriever_train_state {
    int64_t    step;      /* steps done */
    retrlm_rng rng;       /* batch sampling, crops, deletions */
    float      last_loss; /* mean contrastive loss of the last step (nats) */
    float      last_acc;  /* fraction of the last step's queries that ranked their positive first */
} retrlm_retriever_train_state;
RETRLM_API void retrlm_retriever_train_state_init(retrlm_retriever_train_state *s, uint64_t seed);

typedef struct retrlm_dpr_config {
    retrlm_token_texts queries;  /* query texts */
    retrlm_token_texts docs;     /* document texts */
    const int *pair_query;       /* (n_pairs) a training pair: query index ... */
    const int *pair_doc;         /* (n_pairs) ... and its relevant document's index */
    const int *hard_negative;    /* (n_pairs) a non-relevant document per pair, -1 for none; or NULL */
    size_t     n_pairs;
    int        batch;            /* pairs a step, default the encoder's max_batch (at most it) */
    float      temperature;      /* scores are dot products / temperature; default 1 */
    int64_t    steps;            /* train until state->step == steps */
    float     *losses;           /* (steps) or NULL: the loss of each step */
    retrlm_progress_fn progress; /* stage "dpr" after every step; may cancel */
    void      *progress_user; /* passed to progress */
} retrlm_dpr_config;

/* A step draws batch pairs at random whose documents are all different; a hard negative that
   is some pair's positive in the batch (or another's hard negative) is dropped, so no
   candidate appears twice. */
RETRLM_API retrlm_result retrlm_dpr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_dpr_config *cfg,
                                          retrlm_retriever_train_state *state);

/* MoCo (He et al., 2020), Contriever's main recipe: keys come from a momentum copy of the
   encoder, updated after every step as theta_key <- m theta_key + (1 - m) theta, and a FIFO
   queue of the last queue_size keys adds that many negatives to every query, far more than a
   batch on a CPU can hold. Contriever: queue 131,072, m 0.9995 (its options' defaults: 65,536,
   0.999). The batch's other keys stay negatives too, as in the in-batch variant. The key
   encoder and the queue live only in memory: a run continued from saved weights starts them
   again from those weights and an empty queue. */
typedef struct retrlm_moco {
    retrlm_encoder key;        /* the momentum encoder: same shape, never trained by gradients */
    float         *queue;      /* (queue_size, key.dim) keys, a ring */
    int            queue_size; /* capacity in keys */
    int            n_queued;   /* keys held, <= queue_size */
    int            head;       /* the ring slot the next key goes to */
    float          momentum;   /* m */
} retrlm_moco;
/* Copies e's weights into the key encoder; e must be shared (config.separate 0), as
   Contriever's is. queue_size >= 1, momentum in [0, 1] (0: the keys come from the current
   weights; 1: from the weights e had here). */
RETRLM_API retrlm_result retrlm_moco_init(retrlm_moco *mc, const retrlm_encoder *e,
                                          int queue_size, float momentum);
RETRLM_API void retrlm_moco_free(retrlm_moco *mc); /* zeroed, failed, freed: no-op */

typedef struct retrlm_contriever_config {
    retrlm_token_texts docs;     /* the unlabelled corpus */
    int        batch;            /* documents a step, default the encoder's max_batch (at most it) */
    float      temperature;      /* default 0.05 */
    float      crop_min;         /* a crop keeps a fraction in [crop_min, crop_max] of the      */
    float      crop_max;         /* document's tokens, default 0.1 and 0.5 (Contriever's r)   */
    float      delete_prob;      /* each token of a crop is deleted with this probability, default 0.1; < 0: none */
    retrlm_moco *moco;           /* NULL: in-batch negatives; else keys from its momentum encoder
                                    and its queue's keys as more negatives (made from this encoder) */
    int64_t    steps;
    float     *losses;           /* (steps) or NULL */
    retrlm_progress_fn progress; /* stage "contriever" after every step; may cancel */
    void      *progress_user; /* passed to progress */
} retrlm_contriever_config;

/* The first crop goes through the query side, the second through the document side (one
   encoder when shared), or with moco through the key encoder, so that only the query side's
   path carries gradients. Documents shorter than 2 tokens are never drawn. */
RETRLM_API retrlm_result retrlm_contriever_train(retrlm_encoder *e, retrlm_adamw *opt,
                                                 const retrlm_contriever_config *cfg,
                                                 retrlm_retriever_train_state *state);

/* Strategy 2 (sequential), the retriever side: REPLUG LSR (Shi et al., 2023), "LM-supervised
   retrieval". The LM is frozen; the retriever learns which units help it predict. An example
   is a window of the training stream: x, context_tokens tokens whose last query_tokens are
   the query (as in retrlm_ralm_bits_per_byte), and y, the continuation_tokens tokens after it. The k best units for x come from the
   datastore's dense index (as stale as the last refresh); over them the retriever's
       P(u | x) = softmax(q(x) . d(u) / temperature)
   with both embeddings from the current weights, and the LM's
       Q(u | x, y) = softmax(log p_LM(y | u, x) / temperature)
   where the LM reads the unit's first unit_tokens tokens, then x, then y, and log p_LM(y | u, x)
   sums over y's tokens. The loss is KL(Q || P) (retrlm_kl_distill_loss), averaged over the
   batch and backpropagated through the query and the document sides; AdamW updates the
   encoder. Every refresh_every steps the datastore's units are embedded again with the new
   weights (retrlm_datastore_embed), as the paper re-indexes every 3k steps. The paper's
   settings: x and y 128 tokens, k 20, temperature 0.1 on both sides, Adam lr 2e-5, batch 64,
   25k steps; inference ensembles the top 10 (retrlm_ralm_bits_per_byte, RETRLM_RALM_REPLUG,
   with a dense retrieve mode). */
typedef struct retrlm_lsr_config {
    retrlm_model *lm;               /* the frozen causal LM (its activations are used, its
                                       weights never change); max_batch sequences a forward */
    const retrlm_tokenizer *lm_tok; /* the LM's tokenizer: the stream and the units are in its
                                       tokens, and x is decoded with it into the query text */
    retrlm_datastore *ds;           /* committed, embedded with this encoder (retrlm_datastore_embed) */
    const retrlm_index_config *index_config; /* what refreshes rebuild ds->dense as (NULL: flat) */
    const int     *tokens;          /* (n_tokens) the training stream */
    size_t         n_tokens;
    const int64_t *token_doc;       /* (n_tokens) each token's document, or NULL: an example
                                       never retrieves units of the document its x starts in */
    int     context_tokens;         /* |x|, default 64 */
    int     query_tokens;           /* the query is the text of x's last query_tokens tokens,
                                       default 32 (as retrlm_ralm_config's), at most |x| */
    int     continuation_tokens;    /* |y|, default 64 */
    int     unit_tokens;            /* a unit's tokens the LM reads at most; default what the LM's
                                       max_seq_len leaves after x and y, at most the chunk size */
    int     continuation;           /* 1: a unit is read with its continuation, unit_tokens in all
                                       (retrlm_ralm_config.continuation) */
    int     k;                      /* units a query, default 8; at most the document side's
                                       max_batch */
    int     batch;                  /* examples a step, default 8 */
    float   temperature;            /* default 0.1 */
    int64_t steps;                  /* train until state->step == steps */
    int64_t refresh_every;          /* re-embed the datastore every so many steps; 0: never */
    float  *losses;                 /* (steps) or NULL: the mean KL of each step (nats) */
    retrlm_progress_fn progress;    /* stage "lsr" after every step; may cancel */
    void   *progress_user; /* passed to progress */
} retrlm_lsr_config;

/* state->last_acc is the fraction of the last step's examples whose best unit by the retriever
   is the LM's best. ERR_ARG when the pieces do not fit (a window longer than the stream, x and y
   longer than the LM's max_seq_len, k above the document side's max_batch, a datastore with no
   dense index, a stream token outside the LM's vocabulary). */
RETRLM_API retrlm_result retrlm_lsr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_lsr_config *cfg,
                                          retrlm_retriever_train_state *state);

/* Strategy 2 (sequential), the LM side: the retriever is frozen and the LM learns to use what
   it finds (RETRO's split of the work, Borgeaud et al., 2022, with the neighbours read in the
   window, as In-Context RALM reads them, rather than through chunked cross-attention). Each
   training sequence is a window w of window_tokens + 1 tokens of the stream, preceded by the
   k best units for the text of w's first query_tokens tokens (each cut to its first
   unit_tokens, the best one nearest to w, as retrlm_ralm_bits_per_byte's RETRLM_RALM_INCONTEXT
   places them). The loss is the mean cross-entropy of w's tokens after the query, so no token
   is predicted from units that its own text helped to choose. Units of the window's own
   document are never retrieved (RETRO filters them too), or the LM would learn to copy text
   it will not find at test time. Starting from a trained LM this is RETRO's "retrofitting". */
typedef struct retrlm_incontext_train_config {
    const retrlm_tokenizer *tok;    /* the LM's tokenizer: the query text is decoded with it */
    const retrlm_datastore *ds;     /* committed; its units are in the LM's tokens */
    const retrlm_retrieve_params *retrieve; /* NULL: BM25 */
    const int     *tokens;          /* (n_tokens) the training stream */
    size_t         n_tokens;
    const int64_t *token_doc;       /* (n_tokens) each token's document, or NULL (no exclusion) */
    int     k;                      /* units a window, default 1 (at most 16) */
    int     unit_tokens;            /* default the datastore's chunk size */
    int     continuation;           /* 1: a unit with its continuation, unit_tokens in all
                                       (retrlm_ralm_config.continuation) */
    int     query_tokens;           /* default 32 */
    int     window_tokens;          /* default what the LM's max_seq_len leaves after the units */
    int     batch;                  /* default the LM's max_batch */
    int64_t steps;                  /* train until state->step == steps */
    float  *losses;                 /* (steps) or NULL: mean loss of each step (nats/token) */
    retrlm_progress_fn progress;    /* stage "incontext" after every step; may cancel */
    void   *progress_user; /* passed to progress */
} retrlm_incontext_train_config;

/* state: as retrlm_lm_train's (step, rng, last_loss). ERR_ARG when the units and the window
   do not fit the LM's max_seq_len, the query is not shorter than the window, or the stream
   is shorter than a window. */
RETRLM_API retrlm_result retrlm_incontext_train(retrlm_model *m, retrlm_adamw *opt,
                                                const retrlm_incontext_train_config *cfg,
                                                retrlm_lm_train_state *state);

/* ---- Strategy 2, the LM side with RETRO (Borgeaud et al., 2022): the retriever is frozen and
   its neighbours precomputed (retrlm_retro_neighbours_build, with the training stream's own
   documents excluded); a RETRO model (retrlm_model_config.retro_chunk) learns to read them by
   next-token cross-entropy. Windows of seq_len tokens start on chunk boundaries, so each window
   chunk's neighbours are the stream's. From scratch: opt over retrlm_model_param_groups.
   RETRO-fitting (section 4.2): a trained LM's weights copied into the RETRO model's decoder and
   opt over retrlm_model_retro_param_groups alone, so only the cross-attention and the neighbour
   encoder learn (the decoder's gradients are still computed, and not used). */
typedef struct retrlm_retro_train_state {
    retrlm_lm_train_state lm;   /* step, rng, last loss, last valid bits per byte (checkpointed) */
    float probe_with;           /* at the last evaluation, the probe's loss with neighbours ... */
    float probe_without;        /* ... and without: the gap is what the model takes from them */
} retrlm_retro_train_state;

typedef struct retrlm_retro_train_config {
    const int *train;                          /* (n_train) token stream, borrowed */
    size_t     n_train;
    const retrlm_retro_neighbours *neighbours; /* of train's chunks, the model's m, k, r */
    const int *valid;                          /* (n_valid) or NULL */
    size_t     n_valid;
    size_t     valid_bytes;                    /* UTF-8 bytes of the text valid encodes */
    const retrlm_retro_neighbours *valid_neighbours; /* of valid's chunks (retrieved with each
                                                  chunk itself), or NULL: no valid figures */
    int        batch;                          /* default the model's max_batch */
    int        seq_len;                        /* a multiple of m; default max_seq_len */
    int        probe;                          /* windows of the probe batch; default batch: the
                                                  first of valid (else of train) */
    int64_t    steps;                          /* train until state->lm.step == steps */
    float      copy_share;                     /* a copy curriculum, 0 (default) to 1: the share
                                                  of training chunks one of whose neighbours (in
                                                  a random slot) is replaced by the stream's own
                                                  text from a random point in the chunk's first
                                                  half on: the chunk and what follows it, which
                                                  the model can copy. Reading the neighbours pays
                                                  from the first steps, so the cross-attention
                                                  learns to match and copy; at evaluation the
                                                  neighbours are the retriever's alone. Not in
                                                  RETRO; 0 keeps its leakage control intact. */
    int64_t    copy_steps;                     /* the curriculum's last step: from state step
                                                  copy_steps on, every neighbour is the
                                                  retriever's, so a model that learnt to copy
                                                  learns when to; 0: every step. A model given
                                                  perfect copies throughout trusts its
                                                  neighbours even where they are wrong. */
    int        eval_every;                     /* steps between probes and valid; 0: the end */
    const char *checkpoint;                    /* path or NULL: model, optimiser and state */
    int        checkpoint_every;
    float     *losses;                         /* (steps) or NULL */
    retrlm_progress_fn progress;               /* "retro" every step, "valid" after an eval */
    void      *progress_user; /* passed to progress */
} retrlm_retro_train_config;

RETRLM_API void retrlm_retro_train_state_init(retrlm_retro_train_state *s, uint64_t seed);
RETRLM_API retrlm_result retrlm_retro_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_retro_train_config *cfg,
                                            retrlm_retro_train_state *state);
/* Bits per byte of a token stream read by a RETRO model with nb, the neighbours of its chunks,
   each retrieved with the chunk itself: chunk u + 1 is predicted from neighbours found with
   chunk u, never with text not yet seen. Windows of seq_len (a multiple of m) as in
   retrlm_lm_bits_per_byte, so the two figures compare. */
RETRLM_API retrlm_result retrlm_retro_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                    size_t n_bytes,
                                                    const retrlm_retro_neighbours *nb,
                                                    int seq_len, double *bpb);

/* ---- Strategy 3, joint training with an asynchronously refreshed index (REALM, Guu et al.,
   2020; Atlas, Izacard et al., 2022). The LM (the reader) and the bi-encoder (the retriever)
   train together. An example is a window of the training stream: x, context_tokens tokens,
   whose last query_tokens are the query, and y, the continuation_tokens tokens after it. The
   query, embedded with the current query encoder, searches the datastore's dense index for k
   units (never of the document x starts in); the reader reads [unit's first unit_tokens tokens
   ; x ; y] for each unit z and gives log p(y_t | x, z) for each token t of y; the retriever's
   scores s(x, z) = q(x) . d(z) are computed again with the current query and document
   encoders for those k units, so gradients reach both sides. Objectives:
     REALM  -mean over y's tokens of log sum_z P(z | x) p(y_t | x, z), the sum over the k units
            and the null document (the reader with no unit; its embedding is the document
            encoder's for the empty text), P = softmax(s / temperature): one loss for both sides
     PDIST  Atlas's perplexity distillation: KL(Q || P) with Q = softmax of the mean over y's
            tokens of log p(y_t | x, z) / gold_temperature, no gradient through Q, for the
            retriever; the reader's own loss alongside: the mean cross-entropy of y over the k
            units, each read alone
     EMDR   Atlas's EMDR^2: the REALM marginal over the k units (no null document) with the
            reader's likelihoods held fixed, for the retriever; the reader's loss as PDIST's
   The index the query searches is as stale as its last refresh; the document encoder changes
   under it at every step. Refresh (refresh_every = T > 0): at every step s that is a multiple
   of T the document encoder's weights are copied (a snapshot), every unit is embedded with the
   snapshot into a new index, and the new index replaces the old at step s + refresh_delay:
     refresh_delay 0      a blocking refresh: training waits while the units are embedded
     refresh_delay D > 0  a background refresh: with OpenMP and 2 or more threads, the steps
                          s .. s + D - 1 run on one thread beside the refresh on another
                          (training searches the old index meanwhile; without OpenMP the
                          refresh runs after those steps); training waits at s + D
                          if the refresh is not done. The steps see the same index whatever
                          the timing and thread count, so results are identical; memory holds
                          two indexes (2 x units x dim floats for a flat one) during a refresh
   rerank L > k: Atlas's re-ranking: the stale index gives L units, which are embedded with the
   current document encoder, and the k best by the fresh scores are used; with rerank_bm25 the
   L units are BM25's instead (a first stage that never goes stale: the retriever trained is a
   re-ranker of BM25's L best, which RETRLM_RETRIEVE_RERANK with depth L reads after training,
   and no refresh is needed, though the datastore must still be embedded). Re-ranking keeps
   each text once: a unit whose tokens equal a better candidate's is dropped (two copies of one
   text among the k give the retriever no signal and the reader nothing new). query_side: the
   document encoder is frozen (a separate one, retrlm_encoder_config.separate; opt_enc must not
   hold its weights), so the index never goes stale and is never refreshed. Staleness is shown:
   state->index_step is the step whose weights embedded the index in use, and at each swap the
   probe queries (probe windows of the stream, fixed at the start) are searched in the old index
   and the new one, with the overlap of their top k in state->last_overlap. The paper settings:
   REALM 8 candidates with the null document, a refresh every ~500 steps; Atlas 20 passages,
   tau 0.01 on both sides (over q . d / sqrt(768)), a refresh every 1000 steps, re-ranking, a
   reader lr 1e-4 and a retriever lr 1e-5: here each side has its own AdamW (opt_lm over the
   LM's groups, opt_enc over the encoder's), so each has its own learning rate and clipping. */
typedef enum retrlm_joint_objective {
    RETRLM_JOINT_REALM = 0,
    RETRLM_JOINT_PDIST,
    RETRLM_JOINT_EMDR
} retrlm_joint_objective;

typedef struct retrlm_joint_config {
    const retrlm_tokenizer *lm_tok; /* the LM's tokenizer: the stream and the units are in its
                                       tokens, and x's query is decoded with it */
    retrlm_datastore *ds;           /* committed, embedded with the encoder being trained
                                       (retrlm_datastore_embed); refreshes replace ds->dense */
    const retrlm_index_config *index_config; /* what refreshes build (NULL: flat f32) */
    const int     *tokens;          /* (n_tokens) the training stream */
    size_t         n_tokens;
    const int64_t *token_doc;       /* (n_tokens) each token's document, or NULL: an example
                                       never retrieves units of the document x starts in */
    retrlm_joint_objective objective;
    int     context_tokens;         /* |x|, default 64 */
    int     query_tokens;           /* default 32, at most |x| */
    int     continuation_tokens;    /* |y|, default 64 */
    int     unit_tokens;            /* a unit's tokens the reader reads at most; default what the
                                       LM's max_seq_len leaves after x and y, at most the chunk */
    int     continuation;           /* 1: the reader reads a unit with its continuation, unit_tokens
                                       in all (retrlm_ralm_config.continuation) */
    int     k;                      /* units an example, default 4; k (+ 1 for REALM's null
                                       document) at most the LM's max_batch and the document
                                       side's max_batch */
    int     batch;                  /* examples a step, default 8 */
    float   temperature;            /* the retriever's softmax; default 0.1 */
    float   gold_temperature;       /* PDIST: Q's; default 0.01 (Atlas) */
    int64_t refresh_every;          /* T: steps between refreshes; 0: never */
    int64_t refresh_delay;          /* D in [0, T]: 0 blocking, else background (above) */
    int     rerank;                 /* L > k: re-rank L stale results with fresh embeddings; 0: off */
    int     rerank_bm25;            /* 1: the L results to re-rank are BM25's (needs rerank) */
    float   bm25_weight;            /* with rerank_bm25: a unit's retriever score is q . d plus
                                       this times its BM25 score for x's query (the null
                                       document's: the units' mean), in the ranking and in the
                                       loss, as RETRLM_RETRIEVE_RERANK reads with the same
                                       bm25_weight; 0: q . d alone */
    int     query_side;             /* 1: the document encoder frozen, no refresh */
    int     probe;                  /* probe queries for staleness, default 16; 0: none */
    int64_t steps;                  /* train until state->step == steps */
    float  *losses;                 /* (steps) or NULL: each step's objective (nats) */
    retrlm_progress_fn progress;    /* stage "joint" after every step; may cancel. During a
                                       background refresh it is called from the thread running
                                       the steps, which may not be the caller's (never from two
                                       threads at once) */
    void   *progress_user; /* passed to progress */
} retrlm_joint_config;

typedef struct retrlm_joint_state {
    int64_t    step;               /* steps done */
    retrlm_rng rng;                /* window sampling */
    float      last_loss;          /* the last step's objective (nats) */
    float      last_reader;        /* its reader cross-entropy of y over the k units (nats/token) */
    float      last_utility;       /* REALM: mean over y's tokens of log p(y | x) (marginal)
                                      minus log p(y | x, null): what retrieval gives; 0 else */
    int64_t    index_step;         /* the step whose document encoder embedded the index in use */
    int64_t    refreshes;          /* indexes swapped in */
    float      last_overlap;       /* at the last swap: mean share of the probe queries' top k
                                      that the old index and the new one agree on; -1 before */
    double     refresh_seconds;    /* time spent embedding and indexing, in all */
    double     stall_seconds;      /* time training waited for refreshes, in all */
} retrlm_joint_state;

/* Seeds a fresh state (step 0, index_step 0). */
RETRLM_API void retrlm_joint_state_init(retrlm_joint_state *s, uint64_t seed);

/* One batch's objective and gradients for the windows starting at start (n) with the units
   given (units (n, cfg->k), found (n) of them valid each): the reader's gradients are added to
   lm->grads and the encoder's to its sides' grads (zero them first); nothing else changes. The
   trainer calls it each step after retrieval; it is public so that the gradient of a whole step
   can be checked. With bm25_weight, each unit's BM25 score is looked up among BM25's rerank
   best for the window's query (ERR_ARG for a unit not among them). *loss (nats), *reader
   (nats/token) and *utility (REALM) may be NULL. */
RETRLM_API retrlm_result retrlm_joint_loss(retrlm_model *lm, retrlm_encoder *e,
                                           const retrlm_joint_config *cfg, int n,
                                           const size_t *start, const int *units,
                                           const int *found, float *loss, float *reader,
                                           float *utility);

/* Trains until state->step == cfg->steps. ERR_ARG when the pieces do not fit (as
   retrlm_lsr_train's checks, plus: query_side with a shared encoder or with refresh_every,
   opt_enc holding the frozen document side, refresh_delay outside [0, T], rerank at most k or
   above the document side's max_batch). A refresh in flight when the call ends is swapped in
   then: split a run into calls only at steps where none is. */
RETRLM_API retrlm_result retrlm_joint_train(retrlm_model *lm, retrlm_adamw *opt_lm,
                                            retrlm_encoder *e, retrlm_adamw *opt_enc,
                                            const retrlm_joint_config *cfg,
                                            retrlm_joint_state *state);

/* ---- Strategy 4, TRIME (Zhong et al., 2022): the LM trains with its own in-batch memory.
   Every position j of a batch is a memory entry: its key k_j is the last layer's feed-forward
   input (retrlm_model_ffn_input(m, L-1), the kNN-LM key) and its label y_j the token that
   followed it. Position i's target y is scored by one softmax over the vocabulary and the
   entries M(i) that i may see (retrlm_trime_loss):
       p(y) = ( exp(logit_iy) + sum_{j in M(i), y_j = y} exp(s_ij) )
              / ( sum_v exp(logit_iv) + sum_{j in M(i)} exp(s_ij) )
   with s_ij = k_i . k_j / (sqrt(D) temperature) (RETRLM_TRIME_DOT, TRIME's criterion, where
   the temperature is 1) or s_ij = -|k_i - k_j|^2 / (sqrt(D) temperature) (RETRLM_TRIME_L2, the
   kNN-LM distance). The gradient reaches both k_i (the query) and k_j (the key). M(i):
     RETRLM_TRIME_LOCAL  the earlier positions of i's own segment (TrimeLM: local memory);
                         the B segments of a training batch are independent random windows
     RETRLM_TRIME_LONG   the earlier positions of i's own segment and every position of the
                         segments before it (TrimeLM_long): a training batch is B consecutive
                         windows of one stream, segment b = stream[o + bT, o + bT + T)
     RETRLM_TRIME_EXT    every position of the batch's other segments (all of each: they are
                         other texts, not earlier ones) and, unless no_local, the earlier
                         positions of i's own (TrimeLM_ext); a training batch is a group of
                         similar segments (retrlm_trime_bm25_batches)
   A position whose M(i) is empty (the first of a segment) gets plain cross-entropy.
   retrlm_trime_params and the RETRLM_TRIME_ constants are in the losses section. Inference
   with the memory: retrlm_ralm_config.trime (local memory: the earlier positions of the window),
   .trime_cache (the long memory: keys of the tokens before the window, TrimeLM_long) and .knnlm
   with keys built from the TRIME model (the external datastore, TrimeLM_ext). */

/* TRIME's loss on the last forward (B, T) of m, which needs its logits: targets (B, T) are
   scored (< 0: not), labels (B, T) are the memory entries' labels (NULL: targets; an entry with
   a label < 0, or past its sequence's length, is not in the memory). *loss (may be NULL) the
   mean over the scored positions in nats, *count (may be NULL) how many. Overwrites m->logits
   with d(mean loss)/d(logits) and writes dkeys (B, T, D) (may be NULL) with d(mean loss)/d(the
   keys), ready for retrlm_model_backward as grad.dlogits = m->logits and
   grad.dffn_in[L-1] = dkeys. Allocates B*T x (entries) floats. ERR_ARG on bad params, labels
   or targets outside the vocabulary, or a model without logits. */
RETRLM_API retrlm_result retrlm_model_trime_loss(retrlm_model *m, const retrlm_trime_params *p,
                                                 const int *targets, const int *labels,
                                                 float *loss, float *dkeys, int *count);

typedef struct retrlm_trime_train_config {
    const int *train;          /* (n_train) token stream, borrowed */
    size_t     n_train;        /* LOCAL: > seq_len + 1; LONG: > batch * seq_len */
    int        batch;          /* segments a step; default m->config.max_batch */
    int        seq_len;        /* tokens a segment; default m->config.max_seq_len */
    retrlm_trime_params trime; /* batching, similarity, temperature (no_local: set per step) */
    const int64_t *batches;    /* EXT: (n_batches, batch) segment offsets, segment =
                                  train[o, o + seq_len], borrowed (retrlm_trime_bm25_batches) */
    int64_t    n_batches;
    float      cross_sent_ratio; /* EXT: probability that a step leaves the local memory out
                                    (TRIME: 0.9); in [0, 1] */
    int64_t    warmup_steps;   /* steps [0, warmup_steps) train with plain cross-entropy (TRIME's
                                  --ce-warmup-epoch); LOCAL batches are then retrlm_lm_train's */
    int64_t    steps;          /* train until state->step == steps */
    const char *checkpoint;    /* path or NULL: model, optimiser and state every
                                  checkpoint_every steps and at the end */
    int        checkpoint_every;
    float     *losses;         /* (steps) or NULL: losses[s] = train loss of step s (nats) */
    retrlm_progress_fn progress; /* stage "trime" after every step; may cancel */
    void      *progress_user; /* passed to progress */
} retrlm_trime_train_config;

/* Trains from state->step to cfg->steps (state as retrlm_lm_train's; resuming from a checkpoint
   continues exactly): each step draws its batch (LOCAL: batch windows at offsets
   rng_below(n_train - seq_len), in order, as retrlm_lm_train; LONG: one offset
   o = rng_below(n_train - batch * seq_len); EXT: batches[rng_below(n_batches)], then
   no_local = rng_float < cross_sent_ratio), runs forward, TRIME's loss (cross-entropy during
   the warm-up), backward and an AdamW update. Same results for any number of threads. ERR_ARG
   on a bidirectional model or one without logits, bad sizes or params, an EXT batch offset
   outside the stream, or a token outside the vocabulary. */
RETRLM_API retrlm_result retrlm_trime_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_trime_train_config *cfg,
                                            retrlm_lm_train_state *state);

/* TrimeLM_ext's batches: the stream is cut into S = (n - 1) / seq_len segments (segment s =
   tokens[s seq_len, s seq_len + seq_len], its last token a target only), each indexed by BM25
   (bm25 NULL, or k1 / b 0: the passage setting, bm25.h) as its text (tok's decoding; tok NULL: the token ids as decimal
   words); each segment's query is its own text. Groups of batch segments are made greedily:
   the first segment not yet used opens a group, which takes the unused BM25 neighbours of its
   members (best first, the opener's, then the next member's, ...), then, if still short, the
   next unused segments in stream order; the last S mod batch segments are left out. offsets
   (S / batch, batch) gets the segments' first token offsets, ready for
   retrlm_trime_train_config.batches; offsets NULL: *n_batches only. Deterministic for any
   number of threads. ERR_ARG if the stream has fewer than batch segments. */
RETRLM_API retrlm_result retrlm_trime_bm25_batches(const retrlm_tokenizer *tok, const int *tokens,
                                                   size_t n, int seq_len, int batch,
                                                   const retrlm_bm25_config *bm25,
                                                   int64_t *offsets, int64_t *n_batches);

/* ---- Strategy 4, NPM (Min et al., 2023): a nonparametric masked LM. The encoder (a
   bidirectional model) reads each batch twice: with spans masked (each of their tokens
   replaced by mask_id) and whole. A masked span is predicted by retrieval from the whole pass
   of the batch's other blocks: its first and last masked outputs (m->hidden) are the start and
   end queries, every token's output a memory entry, and retrlm_npm_loss pulls each query toward
   the first (start) and last (end) tokens of the span's copies in other blocks. Only spans with
   a copy in the batch teach anything, so batches are made where copies are: consecutive blocks
   of the stream (blocks of one document when documents are long, NPM's same-document batching)
   or groups of similar blocks (retrlm_trime_bm25_batches). NPM's token-level term is added
   (unless no_token_loss): every masked token's output is a query too, and its positives are
   the memory entries outside its block that hold the same token; that is retrlm_npm_loss with a
   one-token span at each masked position (whose start and end rows are the same, so the term is
   half that loss). It teaches on nearly every masked token, where the span term teaches only on
   spans copied elsewhere in the batch. The encoder has no output vocabulary at inference: a
   phrase index of the same outputs fills a masked span. */
typedef struct retrlm_npm_train_config {
    const int *train;          /* (n_train) token stream, borrowed */
    size_t     n_train;        /* >= batch * seq_len without batches; > seq_len with them */
    int        batch;          /* blocks a step; default m->config.max_batch; >= 2 */
    int        seq_len;        /* tokens a block; default m->config.max_seq_len */
    const int64_t *batches;    /* (n_batches, batch) block offsets, block = train[o, o + seq_len),
                                  borrowed; NULL: batch consecutive blocks at a random offset */
    int64_t    n_batches;
    int        mask_id;        /* the token masked positions read, in [0, V) (a special token) */
    float      mask_ratio;     /* share of a block's tokens masked; default 0.15 */
    float      span_p;         /* span length ~ geometric(span_p), at most max_span; default 0.5 */
    int        max_span;       /* default 5 */
    float      temperature;    /* scores q . m / (sqrt(dim) temperature); default 1 */
    int        no_token_loss;  /* 1: the span's start and end losses alone, without NPM's
                                  token-level term (below) */
    int        parametric;     /* 1: the parametric masked LM to compare with: the same blocks
                                  and spans, one masked pass, cross-entropy of the masked
                                  tokens from its logits (needs a model with logits) */
    int64_t    steps;          /* train until state->step == steps */
    const char *checkpoint;    /* path or NULL: model, optimiser and state every
                                  checkpoint_every steps and at the end */
    int        checkpoint_every;
    float     *losses;         /* (steps) or NULL: losses[s] = the loss of step s (nats; the
                                  parametric loss is a token's, NPM's a span's start + end plus
                                  the token term) */
    float     *hits;           /* (steps) or NULL: the share of counted spans whose start query
                                  ranks a positive first (0 when parametric) */
    retrlm_progress_fn progress; /* stage "npm" after every step; may cancel */
    void      *progress_user; /* passed to progress */
} retrlm_npm_train_config;

/* Trains from state->step to cfg->steps. Each step draws its blocks (batches[rng_below(n)], or
   one offset rng_below(n_train - batch seq_len + 1)), then each block's spans: while fewer than
   round(mask_ratio seq_len) tokens are masked (and at most 4 seq_len tries), a length
   l = min(max_span, 1 + number of failures before a success of probability span_p) and a start
   rng_below(seq_len - l + 1); a span that would touch a masked token or one next to it is
   dropped. Then both passes, retrlm_npm_loss (for the spans, then for the token term),
   backward through both (one set of weights) and an AdamW update; a step where nothing is
   counted (no span has a copy, no masked token a token of its id in another block) makes no
   update. state->last_loss the step's loss. Same results for any number of threads. ERR_ARG
   on a causal model, bad sizes or settings, a block outside the stream, a token outside the
   vocabulary. */
RETRLM_API retrlm_result retrlm_npm_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_npm_train_config *cfg,
                                          retrlm_lm_train_state *state);


/* ---- Strategy 4, RPT (Rubin & Berant, 2023): a RETRO model with an RPT retriever
   (retrlm_model_config.rpt_dim) reads long documents in spans of `windows` consecutive windows
   of seq_len tokens, all in one batch; the chunks of a span's earlier windows are the index its
   later chunks search (the in-batch index of strategy 4), with the model's own chunk
   embeddings. A chunk u's candidates are the span's chunks j whose text and continuation (j and
   j + 1) lie before u's window; the reference LM (any trained causal LM) scores each by how
   much reading it raises the likelihood of the chunk after u:
       gold(u, j) = log p_ref(chunk u+1 | chunk j, chunk j+1, chunk u) - log p_ref(chunk u+1 | chunk u)
   (nats; rows of 4m tokens), computed once for a set of spans (retrlm_rpt_targets_build). The
   trainer picks each chunk's k neighbours among its candidates by the retriever's scores (or,
   with scheduled sampling, by gold), reads them through the chunked cross-attention and
   minimises lm_loss + aux_scale * retrlm_rank_loss(scores, gold): the retriever learns to rank
   what helps the reference LM, and the decoder, whose lower layers embed the chunks, learns
   with it. The first window of a span, and chunks with no candidate, read no neighbour. */
typedef struct retrlm_rpt_targets_config {
    int   chunk;      /* m, tokens a chunk (the RPT model's retro_chunk); required */
    int   windows;    /* windows a span; default 4 */
    int   seq_len;    /* tokens a window, a multiple of chunk; default 4 * chunk */
    int   cands;      /* candidates scored a chunk, at most; the rest are preselected away by
                         their share of the chunk's bigrams (retrlm_retro_overlap, RPT's BM25
                         preselection); default 8; windows * seq_len / chunk keeps them all */
    int   stride;     /* tokens between the starts of a document's spans; default a span */
    retrlm_progress_fn progress; /* stage "rpt targets", done/total in spans; may cancel */
    void *progress_user;         /* passed to progress */
} retrlm_rpt_targets_config;

typedef struct retrlm_rpt_targets {
    int      chunk, windows, seq_len, cands; /* m, B, T, C */
    int64_t  n_spans;
    int64_t *span;    /* (n_spans) first token of each span in the stream (span + B T + 1 tokens
                         lie in one document) */
    int     *cand;    /* (n_spans, U, C) candidate chunks, 0 .. U-1 within the span, U = B T / m;
                         -1 pads */
    float   *gold;    /* (n_spans, U, C) their gold gains (nats); -inf where cand is -1, and for
                         the span's last chunk (no chunk after it) */
    uint32_t stream_crc; /* retrlm_rpt_stream_crc of the stream they were built on: the trainer
                            and the evaluation refuse another stream (0: not checked) */
} retrlm_rpt_targets;

/* CRC-32 of a token stream (each id as 4 little-endian bytes): the same on every host. */
RETRLM_API uint32_t retrlm_rpt_stream_crc(const int *tokens, size_t n);

/* Spans: in each document [doc[d], doc[d + 1]) (the last to n; doc (n_docs) ascending, doc[0]
   = 0), every stride tokens while B T + 1 tokens fit. ref: a causal LM with max_seq_len >= 4m;
   its max_batch rows a forward; NULL: the candidates alone, every gold -inf (enough for
   retrlm_rpt_evaluate's OWN, NONE and SCORES picks, without their gold figures); it may be
   loaded with no_logits (the scored positions' logits are computed apart, saving max_batch x
   max_seq_len x vocab floats). Same results for any number of threads. ERR_ARG on bad sizes
   (no span fits), a reference that is not a causal LM, or a token outside its vocabulary. */
RETRLM_API retrlm_result retrlm_rpt_targets_build(retrlm_rpt_targets *t, retrlm_model *ref,
                                                  const int *tokens, size_t n,
                                                  const int64_t *doc, int64_t n_docs,
                                                  const retrlm_rpt_targets_config *cfg);
RETRLM_API void retrlm_rpt_targets_free(retrlm_rpt_targets *t); /* zeroed or freed: no-op */
/* Files: container kind "rpt_targets" (sections "shape": chunk, windows, seq_len, cands;
   "stream_crc"; "spans"; "cand"; "gold"), so that targets scored once (a reference LM's
   forward passes: the costly part) serve every run. Save refuses (ERR_ARG) and load rejects (ERR_FORMAT) targets
   that break the promises above: a candidate that is not an earlier window's chunk with its
   continuation, a NaN or +inf gold, a finite gold without a candidate. Load allocates; free
   with retrlm_rpt_targets_free. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_rpt_targets_save(const retrlm_rpt_targets *t, const char *path);
RETRLM_API retrlm_result retrlm_rpt_targets_load(retrlm_rpt_targets *t, const char *path);
#endif
/* buf NULL: *size only. */
RETRLM_API retrlm_result retrlm_rpt_targets_save_memory(const retrlm_rpt_targets *t, void *buf, size_t cap,
                                                        size_t *size);
RETRLM_API retrlm_result retrlm_rpt_targets_load_memory(retrlm_rpt_targets *t, const void *data, size_t size);

/* RPT's retriever loss on one span's chunk embeddings q, k (U, dr) (retrlm_model_rpt_embed):
   scores s_uc = q_u . k_j / sqrt(dr), j = cand_uc, and aux_scale * retrlm_rank_loss(s, gold,
   margin, threshold) over the chunks that have a gold row (gold_u0 > -inf); cand, gold (U, C)
   as in retrlm_rpt_targets. scores (U, C) (may be NULL) gets s (-inf where cand is -1); *loss
   (may be NULL) the loss; dq, dk (U, dr) (may be NULL) its gradients, ready for
   retrlm_model_rpt_embed_backward. ERR_ARG on bad sizes or a candidate outside [-1, U), and
   as retrlm_rank_loss. */
RETRLM_API retrlm_result retrlm_rpt_loss(const float *q, const float *k, int U, int dr,
                                         const int *cand, const float *gold, int C, float margin,
                                         float threshold, float aux_scale, float *scores,
                                         float *loss, float *dq, float *dk);

typedef struct retrlm_rpt_train_config {
    const int *train;          /* (n_train) token stream, borrowed: the one targets were built on */
    size_t     n_train;
    const retrlm_rpt_targets *targets; /* its spans, borrowed; the model's m, and windows <=
                                          max_batch, seq_len <= max_seq_len */
    int64_t    steps;          /* train until state->step == steps; a step is one random span */
    float      aux_scale;      /* weight of the retriever's loss; default 1 */
    float      margin;         /* the hinge's margin at step 0; default 1 */
    float      max_margin;     /* ... rising linearly to this at the last step (RPT's schedule);
                                  default margin */
    float      threshold;      /* a gold above it may rank first in a pair; default 0 (the
                                  candidate helps) */
    float      gold_share;     /* scheduled sampling: the probability that a chunk reads its k
                                  best candidates by gold (those above threshold) instead of by
                                  the retriever, at step 0; 0 (default): never */
    int64_t    gold_steps;     /* ... falling linearly to 0 at this step */
    const char *checkpoint;    /* path or NULL: model, optimiser and state every
                                  checkpoint_every steps and at the end */
    int        checkpoint_every;
    float     *losses;         /* (steps) or NULL: the LM loss of each step (nats a token) */
    float     *rank_losses;    /* (steps) or NULL: the retriever's loss of each step (times
                                  aux_scale) */
    retrlm_progress_fn progress; /* stage "rpt" after every step; may cancel */
    void      *progress_user;  /* passed to progress */
} retrlm_rpt_train_config;

/* Trains from state->step to cfg->steps: each step draws a span (rng_below(n_spans)), embeds
   its chunks (retrlm_model_rpt_embed), picks neighbours, runs the RETRO forward, both losses,
   backward through the decoder and the retriever, and an AdamW update over whatever opt holds.
   Same results for any number of threads; resuming from a checkpoint continues exactly. ERR_ARG
   on a model without an RPT retriever, targets of another shape, or spans outside the stream. */
RETRLM_API retrlm_result retrlm_rpt_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_rpt_train_config *cfg,
                                          retrlm_lm_train_state *state);

/* How retrlm_rpt_evaluate picks a chunk's neighbours among its candidates. */
typedef enum retrlm_rpt_pick {
    RETRLM_RPT_OWN = 0,  /* the model's retriever: its k best by q . k */
    RETRLM_RPT_GOLD,     /* the reference LM's: its k best gold above 0 (an oracle) */
    RETRLM_RPT_NONE,     /* none: the decoder alone (any causal model, RPT or not) */
    RETRLM_RPT_SCORES    /* the caller's scores (n_spans, U, C), e.g. BM25's; k best */
} retrlm_rpt_pick;

typedef struct retrlm_rpt_eval {
    double  nats;          /* summed negative log-likelihood of every target of every span */
    int64_t tokens;        /* targets counted (spans * B * T) */
    int64_t queries;       /* chunks with a gold row (a candidate and a chunk after them) */
    double  first_gold;    /* mean over those of the gold of the pick's first candidate */
    double  best_gold;     /* mean of their best gold (what a perfect pick would get) */
    double  first_is_best; /* share whose first candidate is the best by gold */
} retrlm_rpt_eval;

/* Reads every span of targets with the model (max_batch >= windows) and the neighbours that
   pick chooses among each chunk's candidates, each window of a span a sequence of the batch
   (the spans' own text, as in training). For a like-for-like figure build the targets with
   cands = B T / m, so that every earlier chunk is a candidate. ERR_ARG on a bad pick for the
   model, or shapes that do not match. */
RETRLM_API retrlm_result retrlm_rpt_evaluate(retrlm_model *m, const int *tokens, size_t n,
                                             const retrlm_rpt_targets *targets,
                                             retrlm_rpt_pick pick, const float *scores,
                                             retrlm_rpt_eval *out);
/* The UTF-8 bytes (tok's decoding) of every target an evaluation scores (each span's windows *
   seq_len tokens after its first): bits per byte = out.nats / ln 2 / *bytes. ERR_ARG when a span
   runs past the stream. */
RETRLM_API retrlm_result retrlm_rpt_targets_bytes(const retrlm_tokenizer *tok, const int *tokens, size_t n,
                                                  const retrlm_rpt_targets *t, uint64_t *bytes);
/* BM25's scores of each chunk's candidates, for RETRLM_RPT_SCORES: in each span, the documents
   are its chunks j with their continuation (chunk j + 1), as text (tok's decoding), and chunk u's
   query is its own text; scores (n_spans, U, C): BM25's score of candidate c for chunk u, -1e30
   when it shares no term with the query, -inf where cand is -1. bm25 NULL, or k1 / b 0: the
   passage setting (bm25.h). */
RETRLM_API retrlm_result retrlm_rpt_bm25_scores(const retrlm_tokenizer *tok, const int *tokens,
                                                size_t n, const retrlm_rpt_targets *t,
                                                const retrlm_bm25_config *bm25, float *scores);
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
#include <dirent.h>
#include <signal.h>
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

/* clang reports an `omp simd` loop it does not vectorize (at -O1, under sanitizers) as a
   warning, an error under -Werror: the hint is only a hint here. Popped at the end of the
   implementation (retrlm.h template). */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* Internal functions shared between fragments: static, and quiet when a build does not use one */
#if defined(__GNUC__) || defined(__clang__)
#define RETRLM__PRIVATE static __attribute__((unused))
#else
#define RETRLM__PRIVATE static
#endif

#if defined(__GNUC__) || defined(__clang__)
#define RETRLM__NOINLINE __attribute__((noinline))
#else
#define RETRLM__NOINLINE
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
/* Room for n more elements in the stb_ds array a (an lvalue, NULL for an empty one): grows it
   here, through RETRLM_REALLOC, when it is full, so that the next n stbds_arrput or n elements of
   stbds_arraddnptr cannot make stb_ds grow it, whose growth has no error path. Returns 0, the
   array as it was, when memory runs out: every stb_ds growth in the library goes through it. */
#define RETRLM__ARR_RESERVE(a, n) retrlm__arr_reserve(&(a), sizeof *(a), (size_t)(n))
RETRLM__PRIVATE int retrlm__arr_reserve(void *array_ptr, size_t elem, size_t n);

/* ---- OpenMP through _Pragma, so builds without it are clean (STYLE.md S6.4) ---------------- */
#define RETRLM__PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) && !defined(RETRLM_NO_OPENMP)
#define RETRLM__OMP 1
/* dynamic: a thread that another process starves takes fewer chunks (DESIGN.md §3) */
#define RETRLM__PARALLEL_FOR RETRLM__PRAGMA(omp parallel for schedule(dynamic, 1))
#define RETRLM__PARALLEL_FOR_STATIC RETRLM__PRAGMA(omp parallel for schedule(static))
#define RETRLM__PARALLEL_FOR_IF(c) RETRLM__PRAGMA(omp parallel for schedule(dynamic, 1) if (c))
/* element-wise loops: chunks of n iterations (one iteration each would cost an atomic per
   element and put two threads' writes in one cache line) */
#define RETRLM__PARALLEL_FOR_CHUNK_IF(n, c) RETRLM__PRAGMA(omp parallel for schedule(dynamic, n) if (c))
/* at most nt threads (when a thread number indexes per-thread buffers) */
#define RETRLM__PARALLEL_FOR_N_IF(nt, c) \
    RETRLM__PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt) if (c))
#else
#define RETRLM__PARALLEL_FOR
#define RETRLM__PARALLEL_FOR_STATIC
#define RETRLM__PARALLEL_FOR_IF(c)
#define RETRLM__PARALLEL_FOR_CHUNK_IF(n, c)
#define RETRLM__PARALLEL_FOR_N_IF(nt, c)
#endif
#define RETRLM__ALIGN 64 /* bytes: a cache line, an AVX-512 vector, the container's alignment */
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
/* An owned, 64-byte aligned buffer of count * elem bytes: *owned is what to free (RETRLM_FREE),
   the result where to write; NULL on overflow or failure. */
RETRLM__PRIVATE void *retrlm__alloc_aligned(size_t count, size_t elem, void **owned);
RETRLM__PRIVATE int   retrlm__mul_overflows(size_t a, size_t b, size_t *out); /* 1 if a*b overflows */
/* A 64-bit finaliser, and a hash of n bytes built on it: for in-memory tables only (the value of
   retrlm__hash_bytes differs between little- and big-endian hosts). */
RETRLM__PRIVATE uint64_t retrlm__mix64(uint64_t h);
RETRLM__PRIVATE uint64_t retrlm__hash_bytes(const unsigned char *s, size_t n);
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
/* A growable byte buffer that reports running out of memory (stb_ds arrays abort instead);
   zero it to start, RETRLM_FREE(b.p) when done. reserve makes room for extra more bytes, push
   appends size bytes of x (x NULL: zeroes); both return 1, or 0 on overflow or no memory. */
typedef struct retrlm__buf {
    unsigned char *p; /* (cap) bytes, from retrlm__realloc */
    size_t n, cap;    /* bytes used, allocated */
} retrlm__buf;
RETRLM__PRIVATE int retrlm__buf_reserve(retrlm__buf *b, size_t extra);
RETRLM__PRIVATE int retrlm__buf_push(retrlm__buf *b, const void *x, size_t size);
/* A binary min-heap of n items in h, ordered by key, then tie; push needs room for one more.
   (The k best of a search use retrlm_topk in kernels.) */
typedef struct retrlm__heap_item {
    int64_t key, tie;
} retrlm__heap_item;
RETRLM__PRIVATE void retrlm__heap_push(retrlm__heap_item *h, size_t *n, int64_t key, int64_t tie);
RETRLM__PRIVATE retrlm__heap_item retrlm__heap_pop(retrlm__heap_item *h, size_t *n);

/* ---- kernels (kernels.c) ------------------------------------------------------------------ */
RETRLM__PRIVATE size_t retrlm__round16(size_t n); /* n rounded up to a multiple of 16 */
/* Packing space (floats) one thread of retrlm__matmul_ws uses at most. */
RETRLM__PRIVATE size_t retrlm__matmul_ws_floats(void);
/* retrlm_matmul with its packing buffers in ws (ws_floats floats, 64-byte aligned) when that is
   big enough for one thread, else in a buffer of its own; the result is the same. */
RETRLM__PRIVATE retrlm_result retrlm__matmul_ws(float *C, const float *A, const float *B,
                                                const float *bias, int M, int N, int K, int flags,
                                                float *ws, size_t ws_floats);
/* int8 weights (kernels.c): rows of K in groups of RETRLM__Q8_GROUP, a float scale each;
   _quantize writes rows x K int8 into q and rows x _groups(K) scales into s; _row dequantizes one
   row; _matmul_q8_ws is retrlm__matmul_ws with B the int8 rows (N, K) (no bias, no B_KN). */
#define RETRLM__Q8_GROUP 32
RETRLM__PRIVATE size_t retrlm__q8_groups(int K);
RETRLM__PRIVATE void retrlm__q8_quantize(int8_t *q, float *s, const float *w, size_t rows, int K);
RETRLM__PRIVATE void retrlm__q8_row(float *out, const int8_t *q, const float *s, int K);
RETRLM__PRIVATE retrlm_result retrlm__matmul_q8_ws(float *C, const float *A, const int8_t *q,
                                                   const float *s, int M, int N, int K, int flags,
                                                   float *ws, size_t ws_floats);

/* ---- io (io.c) ---------------------------------------------------------------------------- */
/* Where a save's bytes go (a file or a memory buffer); put returns 0, or 1 when it failed. */
typedef struct retrlm__sink retrlm__sink;
RETRLM__PRIVATE int retrlm__sink_put(retrlm__sink *s, const void *p, size_t n);
typedef retrlm_result (*retrlm__emit_fn)(const void *ctx, retrlm__sink *s);
#ifndef RETRLM_NO_STDIO
/* The whole regular file at path in a new buffer of *size bytes and a NUL (free with
   RETRLM_FREE). A directory, FIFO or device is RETRLM_ERR_IO with a message saying so, unread. */
RETRLM__PRIVATE retrlm_result retrlm__read_file(const char *path, char **data, size_t *size);
/* The one atomic save: emit(ctx) writes the bytes to a temporary beside path ("<path>.tmp-<pid>";
   those of dead processes are removed first), which is flushed to disk, renamed over path and
   its directory synced. A crash at any moment leaves path as it was or as it is to be, never
   half written. Only a regular file or a new path is replaced. */
RETRLM__PRIVATE retrlm_result retrlm__save_atomic(const char *path, retrlm__emit_fn emit, const void *ctx);
#endif
/* A small JSON reader over [p, end) (safetensors' header). Each call skips white space first,
   moves p past what it reads and returns 1, or 0 on bad syntax or overflow. */
typedef struct retrlm__js {
    const char *p, *end;
} retrlm__js;
RETRLM__PRIVATE void retrlm__js_ws(retrlm__js *j);           /* skips white space only */
RETRLM__PRIVATE int  retrlm__js_char(retrlm__js *j, char c); /* 1 if c comes next (p then past it) */
/* A string into out (NUL-terminated, at most cap-1 bytes), escapes decoded; a \u escape outside
   ASCII becomes '?'. */
RETRLM__PRIVATE int  retrlm__js_string(retrlm__js *j, char *out, size_t cap);
RETRLM__PRIVATE int  retrlm__js_uint(retrlm__js *j, uint64_t *v); /* a non-negative integer */
/* Skips any value; depth is how deep it is nested (over 32: 0). */
RETRLM__PRIVATE int  retrlm__js_skip(retrlm__js *j, int depth);

/* ---- unicode (unicode.c) and tokenizer (tokenizer.c) ------------------------------------- */
/* The classes GPT-2's pattern tells apart: \p{L}, \p{N}, \s, and every other code point. */
enum { RETRLM__UC_OTHER = 0, RETRLM__UC_LETTER = 1, RETRLM__UC_NUMBER = 2, RETRLM__UC_SPACE = 3 };
/* Class of code point c (RETRLM__UC_*). */
RETRLM__PRIVATE int retrlm__uc_class(uint32_t c);
/* One UTF-8 sequence at s[0..n) (n >= 1): its length, the code point in *cp (0xFFFFFFFF and
   length 1 for invalid UTF-8). */
RETRLM__PRIVATE size_t retrlm__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Length of the next pre-token of s[0..n) (n >= 1) under GPT-2's pattern. */
RETRLM__PRIVATE size_t retrlm__pretoken(const unsigned char *s, size_t n);
/* Decodes ids (n) into *buf (NUL-terminated), growing it (*cap bytes; both may start 0/NULL);
   *len gets the bytes. */
RETRLM__PRIVATE retrlm_result retrlm__decode_grow(const retrlm_tokenizer *tok, const int *ids, size_t n,
                                                  char **buf, size_t *cap, size_t *len);

/* ---- bm25 (bm25.c) ------------------------------------------------------------------------ */
/* cfg (NULL: all defaults) with k1 and b that it leaves 0 set to the passage setting
   (RETRLM_BM25_PASSAGE_K1 / _B), for indexes over units of a bounded length. */
RETRLM__PRIVATE retrlm_bm25_config retrlm__bm25_passage_config(const retrlm_bm25_config *cfg);

/* ---- model (model.c; its files in checkpoint.c and safetensors.c) ------------------------- */
#define RETRLM__MAX_DIM (1 << 24) /* bound on every size in a config: vocabulary, widths, batch */
/* Fills defaults into c and checks it (RETRLM_ERR_ARG, with detail, when it is not valid). */
RETRLM__PRIVATE retrlm_result retrlm__resolve_config(retrlm_model_config *c);
/* Floats of a resolved config's parameter block, its neighbour encoder's included; mats (may be
   NULL) gets the matrices' share (the rest are gains). */
RETRLM__PRIVATE size_t retrlm__param_count(const retrlm_model_config *c, size_t *mats);
/* Allocates everything for cfg (weights zero), or only the activations when src (may be NULL)
   owns the parameters; ext (may be NULL) places them in another model's block (RETRO's
   neighbour encoder); q8: an int8 model (its gains in params, its matrices int8: src's, or new
   and zeroed). */
RETRLM__PRIVATE retrlm_result retrlm__model_alloc(retrlm_model *m, const retrlm_model_config *cfg,
                                                  const retrlm_model *src, float *const *ext,
                                                  int q8);
/* An int8 model of config c: *nq int8 values and *ns scales (either may be NULL); with m, q and
   s, points m's matrices into q and s (retrlm__model_alloc). */
RETRLM__PRIVATE void retrlm__q8_place(retrlm_model *m, const retrlm_model_config *c,
                                      const int8_t *q, const float *s, size_t *nq, size_t *ns);
/* C = A B (retrlm_matmul) with m's packing buffers. */
RETRLM__PRIVATE retrlm_result retrlm__mm(const retrlm_model *m, float *C, const float *A,
                                         const float *B, int M, int N, int K, int flags);
/* The model's logits buffer (max_batch * max_seq_len rows of vocab_size). */
RETRLM__PRIVATE float *retrlm__logits(const retrlm_model *m);
/* Bits per byte of tokens (n; n_bytes bytes of text) in windows of T tokens, as
   retrlm_lm_bits_per_byte counts them; with gather, a RETRO model's forward, gather(ctx, start,
   out) filling the per ints of neighbours of the window that starts at token start. what names
   the caller in errors. */
typedef void (*retrlm__gather_fn)(const void *ctx, size_t start, int *out);
RETRLM__PRIVATE retrlm_result retrlm__windows_bpb(retrlm_model *m, const int *tokens, size_t n,
                                                  size_t n_bytes, int T, size_t per,
                                                  retrlm__gather_fn gather, const void *ctx,
                                                  const char *what, double *bpb);
/* One LM update on inputs (B, T), targets (-1: ignored), lengths or NULL, a RETRO model's
   neighbours or NULL: forward, mean cross-entropy into *loss, backward, AdamW. */
RETRLM__PRIVATE retrlm_result retrlm__lm_step(retrlm_model *m, retrlm_adamw *opt, const int *inp,
                                              const int *tgt, int B, int T, const int *lengths,
                                              const int *neighbours, float *loss);
/* Checkpoints (checkpoint.c): adds m's config and weights to w as sections prefix + "config",
   "config_f", RETRO's when it has them, and "params"; _load initialises m from the same sections
   of rd (over, may be NULL: its nonzero max_batch, max_seq_len and its no_logits and inference
   win); in_place with an inference config and a memory-mapped rd: m's params point into the map,
   which the caller keeps open as m->map_ (retrlm_model_load). */
RETRLM__PRIVATE retrlm_result retrlm__ckpt_add_model(const retrlm_model *m, retrlm_writer *w,
                                                     const char *prefix);
RETRLM__PRIVATE retrlm_result retrlm__ckpt_load(retrlm_model *m, const retrlm_reader *rd,
                                                const retrlm_model_config *over, int in_place,
                                                const char *prefix);

/* ---- encoder (encoder.c) ------------------------------------------------------------------ */
/* text's first tokens, at most maxt, into ids (an empty text is the token 0); *n >= 1. */
RETRLM__PRIVATE retrlm_result retrlm__encode_cut(const retrlm_tokenizer *tok, const char *text, size_t len,
                                                 int *ids, int maxt, int *n);
/* Rows of ids written stride apart (row i valid for len[i]) moved T apart (T the longest) and
   padded with pad; returns T. */
RETRLM__PRIVATE int retrlm__compact_rows(int *ids, const int *len, int n, int stride, int pad);

/* ---- losses (losses.c) -------------------------------------------------------------------- */
/* ERR_ARG (with who in the message) unless p's batching, similarity and temperature are valid. */
RETRLM__PRIVATE retrlm_result retrlm__trime_check(const retrlm_trime_params *p, const char *who);
/* TRIME's similarity of query q and key k (D): scale q.k, or -scale |q - k|^2 for L2, with
   scale = retrlm__trime_scale(p, D) = 1 / (sqrt(D) temperature): training and inference agree. */
RETRLM__PRIVATE float retrlm__trime_scale(const retrlm_trime_params *p, int D);
RETRLM__PRIVATE float retrlm__trime_sim(const retrlm_trime_params *p, float scale,
                                        const float *q, const float *k, int D);

/* ---- datastore (datastore.c) -------------------------------------------------------------- */
/* Unit u's tokens, then its continuation (the units after it in its document) unless unit_only,
   len at most, into out (NULL: counted only); returns how many: what a RETRO neighbour holds. */
RETRLM__PRIVATE int retrlm__unit_and_continuation(const retrlm_datastore *ds, int u, int len,
                                                  int unit_only, int *out);
/* Drops each of units (n, best first) whose tokens equal an earlier one's, and its score
   (scores may be NULL); returns how many are left, in their order. */
RETRLM__PRIVATE int retrlm__datastore_distinct(const retrlm_datastore *ds, int *units,
                                               float *scores, int n);
/* The order of RETRLM_RETRIEVE_RERANK and of the joint trainer's re-ranking: cand, prior (may be
   NULL) and score (n each; a score is q . d + bm25_weight * prior) ordered by descending score,
   stably, so ties keep the first stage's order. */
RETRLM__PRIVATE void retrlm__rerank_order(int n, int *cand, float *prior, float *score);
/* RRF's constant: p->rrf_k, or its default (60) when p is NULL or says 0. */
RETRLM__PRIVATE float retrlm__rrf_k(const retrlm_retrieve_params *p);
/* Embeds every unit's text with enc's document side into a new index out (as
   retrlm_datastore_embed does, index_config NULL: flat f32), leaving ds->dense alone: what a
   refresh builds while training still searches the old index. */
RETRLM__PRIVATE retrlm_result retrlm__datastore_embed_index(const retrlm_datastore *ds,
                                                            retrlm_encoder *enc,
                                                            const retrlm_tokenizer *enc_tok,
                                                            const retrlm_index_config *index_config,
                                                            retrlm_index *out,
                                                            retrlm_progress_fn progress, void *user);

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

// An owned, 64-byte (cache line, AVX-512 vector) aligned buffer of count * elem bytes: *owned is
// what to free, the result where to write. Arrays that threads write side by side start on a
// cache line, so that two threads never share one.
RETRLM__PRIVATE void *retrlm__alloc_aligned(size_t count, size_t elem, void **owned) {
    unsigned char *p;
    size_t n;
    *owned = NULL;
    if (retrlm__mul_overflows(count, elem, &n) || n > SIZE_MAX - RETRLM__ALIGN) return NULL;
    p = (unsigned char *)retrlm__alloc(n + RETRLM__ALIGN, 1);
    if (!p) return NULL;
    *owned = p;
    return p + (RETRLM__ALIGN - (uintptr_t)p % RETRLM__ALIGN) % RETRLM__ALIGN;
}

static void *retrlm__realloc(void *p, size_t count, size_t elem) {
    size_t n;
    if (retrlm__mul_overflows(count, elem, &n)) return NULL;
    return RETRLM_REALLOC(p, n ? n : 1);
}

RETRLM_API void retrlm_free(void *p) {
    if (p) RETRLM_FREE(p);
}

// stb_ds has no error path (it writes through the result of realloc), so the library never lets
// it grow an array (retrlm__arr_reserve first) and uses no stb_ds hash map; were it to happen, an
// allocation failure here must not corrupt the heap: report and abort.
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

RETRLM__PRIVATE int retrlm__arr_reserve(void *array_ptr, size_t elem, size_t n) {
    void *a;
    stbds_array_header *h;
    size_t len, cap, want, bytes;
    memcpy(&a, array_ptr, sizeof a); // the caller's T *, whatever T (no aliasing through void **)
    h = a ? stbds_header(a) : NULL;
    len = h ? h->length : 0, cap = h ? h->capacity : 0;
    if (n <= cap - len) return 1;
    if (n > SIZE_MAX - len) return 0;
    want = RETRLM__MAX(len + n, cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap);
    want = RETRLM__MAX(want, 4);
    if (retrlm__mul_overflows(want, elem, &bytes) || bytes > SIZE_MAX - sizeof *h) return 0;
    if (!(h = (stbds_array_header *)RETRLM_REALLOC(h, bytes + sizeof *h))) return 0;
    if (!a) h->length = 0, h->hash_table = NULL, h->temp = 0;
    h->capacity = want;
    a = h + 1;
    memcpy(array_ptr, &a, sizeof a);
    return 1;
}

RETRLM__PRIVATE uint64_t retrlm__mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

RETRLM__PRIVATE uint64_t retrlm__hash_bytes(const unsigned char *s, size_t n) {
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

// ---- one growable byte buffer and one binary heap, for the modules that build things --------

static int retrlm__buf_reserve(retrlm__buf *b, size_t extra) {
    size_t cap;
    void *q;
    if (extra > (size_t)-1 - b->n) return 0;
    if (b->n + extra <= b->cap) return 1;
    cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) {
        if (cap > (size_t)-1 / 2) return 0;
        cap *= 2;
    }
    if (!(q = retrlm__realloc(b->p, cap, 1))) return 0;
    b->p = (unsigned char *)q;
    b->cap = cap;
    return 1;
}

static int retrlm__buf_push(retrlm__buf *b, const void *x, size_t size) {
    if (!retrlm__buf_reserve(b, size)) return 0;
    if (x) memcpy(b->p + b->n, x, size);
    else memset(b->p + b->n, 0, size);
    b->n += size;
    return 1;
}

static int retrlm__heap_less(const retrlm__heap_item *a, const retrlm__heap_item *b) {
    return a->key < b->key || (a->key == b->key && a->tie < b->tie);
}

static void retrlm__heap_push(retrlm__heap_item *h, size_t *n, int64_t key, int64_t tie) {
    size_t i = (*n)++;
    retrlm__heap_item x;
    x.key = key;
    x.tie = tie;
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
/* ---- retrlm_impl/kernels.c ---- */

// Dimension legend: M, N output rows and columns, K the shared (inner) dimension.
// MR x NR is the register tile, MC x KC the packed block of A, KC x NC the packed block of B.

#if defined(__cplusplus)
#define RETRLM__RESTRICT __restrict
#else
#define RETRLM__RESTRICT restrict
#endif

// Clang fuses a * b + c into one FMA where the target has it (GCC does not in ISO C mode): off
// here, so that one kernel path gives the same bits whichever of the two compiled it
#if defined(__clang__)
#pragma float_control(push)
#pragma clang fp contract(off)
#endif

// ---------------------------------------------------------------------------------------------
// vector kernels

// Sums run in RETRLM__LANES independent partial sums (one vector register, or a few), added up
// in a fixed order at the end: the loop vectorizes without -ffast-math or OpenMP, is not bound
// by the latency of one add chain, and gives the same bits on every run. No `omp simd` here:
// gcc then keeps the lane arrays in memory ("simd arrays") and runs at half the speed.
#define RETRLM__LANES 16

// one template per kernel, instantiated for the build's instruction set and, where the matmul
// dispatches (below), for AVX2+FMA and AVX-512 under target attributes
#define RETRLM__DEFINE_DOT(name, ATTR, LANES)                                            \
    ATTR static float name(const float *a, const float *b, int n) {                     \
        float acc[LANES] = {0}, s = 0.0f;                                               \
        int i = 0, j;                                                                   \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (j = 0; j < LANES; j++) acc[j] += a[i + j] * b[i + j];                  \
        }                                                                               \
        for (j = 0; j < LANES; j++) s += acc[j];                                        \
        for (; i < n; i++) s += a[i] * b[i];                                            \
        return s;                                                                       \
    }

// the four lane arrays c0..c3 of LANES partial sums each folded into their element 0 by a fixed
// tree: vector adds, not 64 scalar ones (w and j are the caller's ints)
#define RETRLM__TREE4(LANES)                          \
    for (w = (LANES) / 2; w > 0; w /= 2)              \
        for (j = 0; j < w; j++) {                     \
            c0[j] += c0[j + w];                       \
            c1[j] += c1[j + w];                       \
            c2[j] += c2[j + w];                       \
            c3[j] += c3[j + w];                       \
        }

// out[r] = dot(a, b + r*ldb) for r < 4: four rows of b against one a, sharing the loads of a.
// Four separate lane arrays (not one 2-D array) so the compiler keeps each in a register.
#define RETRLM__DEFINE_DOT4(name, ATTR, LANES)                                                        \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const float *b, size_t ldb, int n) { \
        float c0[LANES] = {0}, c1[LANES] = {0}, c2[LANES] = {0}, c3[LANES] = {0};                     \
        const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;                     \
        float s0, s1, s2, s3;                                                                         \
        int i = 0, j, w;                                                                              \
        for (; i + LANES <= n; i += LANES) {                                                          \
            for (j = 0; j < LANES; j++) {                                                             \
                float aj = a[i + j];                                                                  \
                c0[j] += aj * b0[i + j];                                                              \
                c1[j] += aj * b1[i + j];                                                              \
                c2[j] += aj * b2[i + j];                                                              \
                c3[j] += aj * b3[i + j];                                                              \
            }                                                                                         \
        }                                                                                             \
        RETRLM__TREE4(LANES)                                                                          \
        s0 = c0[0], s1 = c1[0], s2 = c2[0], s3 = c3[0];                                               \
        for (j = i; j < n; j++) {                                                                     \
            s0 += a[j] * b0[j];                                                                       \
            s1 += a[j] * b1[j];                                                                       \
            s2 += a[j] * b2[j];                                                                       \
            s3 += a[j] * b3[j];                                                                       \
        }                                                                                             \
        out[0] = s0;                                                                                  \
        out[1] = s1;                                                                                  \
        out[2] = s2;                                                                                  \
        out[3] = s3;                                                                                  \
    }

// int8 weights (retrlm__q8_quantize): out[r] = a . row r of q, each group of RETRLM__Q8_GROUP
// weights of a row times its scale (s, ldq / RETRLM__Q8_GROUP rounded up scales a row). The
// weight is dequantized (scale x int8, one product) and then multiplied with a, so a row gives
// the bits of retrlm__dot over its dequantized row summed in these lanes. Four rows share the
// loads of a; rows < 4 of them are real (the others are not read).
#define RETRLM__DEFINE_DOT4_Q8(name, ATTR)                                                          \
    ATTR RETRLM__NOINLINE static void name(float *out, const float *a, const int8_t *q,           \
                                           const float *s, size_t ldq, int n, int rows) {        \
        float c0[16] = {0}, c1[16] = {0}, c2[16] = {0}, c3[16] = {0}, t[4];                      \
        const size_t lds = (ldq + RETRLM__Q8_GROUP - 1) / RETRLM__Q8_GROUP;                       \
        const int8_t *q0 = q, *q1 = q + (rows > 1) * ldq, *q2 = q + (rows > 2) * 2 * ldq;          \
        const int8_t *q3 = q + (rows > 3) * 3 * ldq;                                              \
        const float *s0 = s, *s1 = s + (rows > 1) * lds, *s2 = s + (rows > 2) * 2 * lds;           \
        const float *s3 = s + (rows > 3) * 3 * lds;                                               \
        int i = 0, j, h, w, g = 0;                                                                \
        for (; i + RETRLM__Q8_GROUP <= n; i += RETRLM__Q8_GROUP, g++) {                           \
            const float d0 = s0[g], d1 = s1[g], d2 = s2[g], d3 = s3[g];                           \
            for (h = i; h < i + RETRLM__Q8_GROUP; h += 16)                                        \
                for (j = 0; j < 16; j++) {                                                        \
                    float aj = a[h + j];                                                          \
                    c0[j] += aj * (d0 * (float)q0[h + j]);                                        \
                    c1[j] += aj * (d1 * (float)q1[h + j]);                                        \
                    c2[j] += aj * (d2 * (float)q2[h + j]);                                        \
                    c3[j] += aj * (d3 * (float)q3[h + j]);                                        \
                }                                                                                 \
        }                                                                                         \
        RETRLM__TREE4(16)                                                                         \
        t[0] = c0[0], t[1] = c1[0], t[2] = c2[0], t[3] = c3[0];                                   \
        for (j = i; j < n; j++) { /* the last, partial group */                                   \
            t[0] += a[j] * (s0[g] * (float)q0[j]);                                                \
            t[1] += a[j] * (s1[g] * (float)q1[j]);                                                \
            t[2] += a[j] * (s2[g] * (float)q2[j]);                                                \
            t[3] += a[j] * (s3[g] * (float)q3[j]);                                                \
        }                                                                                         \
        for (j = 0; j < rows; j++) out[j] = t[j];                                                 \
    }

#define RETRLM__NO_ATTR
RETRLM__DEFINE_DOT4_Q8(retrlm__dot4_q8, RETRLM__NO_ATTR)
RETRLM__DEFINE_DOT(retrlm__dot, RETRLM__NO_ATTR, RETRLM__LANES)
RETRLM__DEFINE_DOT4(retrlm__dot4, RETRLM__NO_ATTR, RETRLM__LANES)

RETRLM_API float retrlm_dot(const float *a, const float *b, int n) { return retrlm__dot(a, b, n); }

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

// The register tile follows the vector registers the code may use: MR x NR accumulators plus
// one row of b and one broadcast of a must fit, or the tile spills and runs 10x slower. The
// build's own tile is set by what the compiler targets; on x86-64 with GCC or Clang a build for
// plain x86-64 (SSE2) also carries AVX2+FMA and AVX-512 micro-kernels (target attributes) and
// picks the best one the CPU has at the first multiply (RETRLM_NO_DISPATCH turns that off).
#if defined(__AVX512F__)
#define RETRLM__MR 8 // 32 zmm: 8 rows x 2 zmm = 16 accumulators
#define RETRLM__NR 32
#elif defined(__AVX__) || defined(__aarch64__)
#define RETRLM__MR 6 // 16 ymm (AVX) or 32 q (NEON): 6 x 2 ymm = 12, 6 x 4 q = 24 accumulators
#define RETRLM__NR 16
#else
#define RETRLM__MR 4 // SSE2, 32-bit ARM and the rest: 4 x 2 xmm = 8 accumulators of 16 registers
#define RETRLM__NR 8
#endif
#if !defined(RETRLM_NO_DISPATCH) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__AVX__)
#define RETRLM__DISPATCH 1
#define RETRLM__MR_MAX 8 // the largest tile a dispatched kernel uses (AVX-512's)
#define RETRLM__NR_MAX 32
#else
#define RETRLM__MR_MAX RETRLM__MR
#define RETRLM__NR_MAX RETRLM__NR
#endif
#define RETRLM__KC 256
#define RETRLM__MC_TILES 16 // MC = MR * 16 rows of A a block
#define RETRLM__NC_TILES 8  // NC = NR * 8 columns of B a block

typedef struct retrlm__mat { // element (r, c) is p[r * sr + c * sc]
    const float *p;
    size_t sr, sc;
    const int8_t *q; // or, int8 (sc 1): q[r * sr + c] times s[r * ss + c / RETRLM__Q8_GROUP]
    const float *s;
    size_t ss;
} retrlm__mat;

// Packs a block of X into panels of W lanes: dst (panels, kc, W), zero-padded past the last
// lane. Lane l of panel q is X's row r0 + q*W + l (rows < R exist), depth k0..k0+kc; element
// (r, k) is X.p[r * X.sr + k * X.sc]. The loop order follows the stride-1 direction so that
// reads are sequential whichever way the operand is stored.
static void retrlm__matmul_pack(float *dst, retrlm__mat X, int R, int r0, int rc, int k0, int kc, int W) {
    int q, l, p;
    for (q = 0; q < rc; q += W) {
        int lanes = RETRLM__MIN(W, RETRLM__MIN(rc - q, R - r0 - q));
        const float *base = X.q ? NULL : X.p + (size_t)(r0 + q) * X.sr + (size_t)k0 * X.sc;
        if (lanes < 0) lanes = 0;
        if (X.q) { // int8 rows: dequantized as they are packed
            for (l = 0; l < lanes; l++) {
                size_t r = (size_t)(r0 + q + l);
                const int8_t *src = X.q + r * X.sr + k0;
                const float *sc = X.s + r * X.ss;
                for (p = 0; p < kc; p++)
                    dst[(size_t)p * W + l] = sc[(k0 + p) / RETRLM__Q8_GROUP] * (float)src[p];
            }
        } else if (X.sc == 1) { // rows are contiguous: read a row, scatter into its lane
            for (l = 0; l < lanes; l++) {
                const float *src = base + (size_t)l * X.sr;
                for (p = 0; p < kc; p++) dst[(size_t)p * W + l] = src[p];
            }
        } else { // lanes are contiguous (X.sr == 1): copy W at a time
            for (p = 0; p < kc; p++) {
                const float *src = base + (size_t)p * X.sc;
                for (l = 0; l < lanes; l++) dst[(size_t)p * W + l] = src[l];
            }
        }
        for (l = lanes; l < W; l++)
            for (p = 0; p < kc; p++) dst[(size_t)p * W + l] = 0.0f;
        dst += (size_t)kc * W;
    }
}

// a (kc, MR), b (kc, NR) packed -> the mr x nr corner of the tile at c (row stride ldc).
// first: this is the first K slice, so C is set (or accumulated, with acc_c) and bias added.
// Each row of accumulators is its own array and every row is written out by a macro, not a
// loop: the compiler then keeps them all in vector registers even at -O2 (a 2-D array indexed
// in a loop stays in memory, 10x slower). One definition, instantiated per tile and target.
#define RETRLM__ACC_DECL(r, NR) float acc##r[NR] = {0};
#define RETRLM__ACC_ROW(r, NR)                                        \
    {                                                                 \
        const float ar = ap[r];                                       \
        RETRLM__SIMD for (j = 0; j < NR; j++) acc##r[j] += ar * bp[j]; \
    }
#define RETRLM__ACC_STORE(r, NR)                                       \
    if (r < mr) {                                                     \
        float *cr = c + (size_t)r * ldc;                              \
        if (first && !acc_c)                                          \
            for (j = 0; j < nr; j++) cr[j] = acc##r[j];               \
        else                                                          \
            for (j = 0; j < nr; j++) cr[j] += acc##r[j];              \
        if (first && bias)                                            \
            for (j = 0; j < nr; j++) cr[j] += bias[j];                \
    }
#define RETRLM__ROWS_4(X, NR) X(0, NR) X(1, NR) X(2, NR) X(3, NR)
#define RETRLM__ROWS_6(X, NR) RETRLM__ROWS_4(X, NR) X(4, NR) X(5, NR)
#define RETRLM__ROWS_8(X, NR) RETRLM__ROWS_6(X, NR) X(6, NR) X(7, NR)
#define RETRLM__ROWS(MR) RETRLM__ROWS_##MR
#define RETRLM__DEFINE_MICRO(name, ATTR, MR, NR)                                                    \
    ATTR static void name(int kc, const float *RETRLM__RESTRICT a, const float *RETRLM__RESTRICT b, \
                          float *RETRLM__RESTRICT c, size_t ldc, int mr, int nr, const float *bias,  \
                          int first, int acc_c) {                                                   \
        int j, p;                                                                                   \
        RETRLM__ROWS(MR)(RETRLM__ACC_DECL, NR)                                                      \
        for (p = 0; p < kc; p++) { /* the whole cost of the multiply: MR broadcasts of a */         \
            const float *ap = a + (size_t)p * MR; /* against NR-wide rows of b, MR*NR */            \
            const float *bp = b + (size_t)p * NR; /* independent accumulators */                    \
            RETRLM__ROWS(MR)(RETRLM__ACC_ROW, NR)                                                   \
        }                                                                                           \
        RETRLM__ROWS(MR)(RETRLM__ACC_STORE, NR)                                                     \
    }
RETRLM__DEFINE_MICRO(retrlm__micro, RETRLM__NO_ATTR, RETRLM__MR, RETRLM__NR)
#ifdef RETRLM__DISPATCH
RETRLM__DEFINE_MICRO(retrlm__micro_avx2, __attribute__((target("avx2,fma"))), 6, 16)
RETRLM__DEFINE_MICRO(retrlm__micro_avx512, __attribute__((target("avx512f"))), 8, 32)
RETRLM__DEFINE_DOT(retrlm__dot_avx2, __attribute__((target("avx2,fma"))), 16)
RETRLM__DEFINE_DOT4(retrlm__dot4_avx2, __attribute__((target("avx2,fma"))), 16)
RETRLM__DEFINE_DOT(retrlm__dot_avx512, __attribute__((target("avx512f"))), 16)
RETRLM__DEFINE_DOT4(retrlm__dot4_avx512, __attribute__((target("avx512f"))), 16)
RETRLM__DEFINE_DOT4_Q8(retrlm__dot4_q8_avx2, __attribute__((target("avx2,fma"))))
RETRLM__DEFINE_DOT4_Q8(retrlm__dot4_q8_avx512, __attribute__((target("avx512f"))))
#endif

typedef struct retrlm__gemm_kernel { // what the multiply runs on one CPU
    void (*micro)(int, const float *, const float *, float *, size_t, int, int, const float *, int, int);
    int mr, nr;
    void (*dot4)(float *, const float *, const float *, size_t, int); // the one-row path's
    float (*dot)(const float *, const float *, int);
    void (*dot4_q8)(float *, const float *, const int8_t *, const float *, size_t, int, int);
    const char *path; // retrlm_cpu_path's text
} retrlm__gemm_kernel;

#if defined(__AVX512F__)
#define RETRLM__ISA "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define RETRLM__ISA "avx2+fma"
#elif defined(__AVX__)
#define RETRLM__ISA "avx"
#elif defined(__aarch64__)
#define RETRLM__ISA "aarch64 neon"
#elif defined(__SSE2__) || defined(_M_X64)
#define RETRLM__ISA "x86-64 SSE2"
#elif defined(__ARM_NEON)
#define RETRLM__ISA "arm neon"
#else
#define RETRLM__ISA "portable C"
#endif
#define RETRLM__STR2(x) #x
#define RETRLM__STR(x) RETRLM__STR2(x)
#ifdef RETRLM__OMP
#define RETRLM__OMP_TEXT ", OpenMP"
#else
#define RETRLM__OMP_TEXT ", no OpenMP"
#endif

// the kernels this CPU runs best: the build's own, or (dispatch) AVX2+FMA or AVX-512 when the
// CPU has them; __builtin_cpu_supports also asks whether the OS saves the wider registers
static const retrlm__gemm_kernel *retrlm__gemm(void) {
    static const retrlm__gemm_kernel k[3] = {
        {retrlm__micro, RETRLM__MR, RETRLM__NR, retrlm__dot4, retrlm__dot, retrlm__dot4_q8,
         RETRLM__ISA ", matmul tile " RETRLM__STR(RETRLM__MR) "x" RETRLM__STR(RETRLM__NR) RETRLM__OMP_TEXT},
#ifdef RETRLM__DISPATCH
        {retrlm__micro_avx2, 6, 16, retrlm__dot4_avx2, retrlm__dot_avx2, retrlm__dot4_q8_avx2,
         "avx2+fma (chosen at run time; built for " RETRLM__ISA "), matmul tile 6x16" RETRLM__OMP_TEXT},
        {retrlm__micro_avx512, 8, 32, retrlm__dot4_avx512, retrlm__dot_avx512, retrlm__dot4_q8_avx512,
         "avx512f (chosen at run time; built for " RETRLM__ISA "), matmul tile 8x32" RETRLM__OMP_TEXT},
#endif
    };
#ifdef RETRLM__DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return &k[2];
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &k[1];
#endif
    return &k[0];
}

RETRLM_API const char *retrlm_cpu_path(void) { return retrlm__gemm()->path; }

// small M with the default layouts: each C element is one unit-stride dot product; this is the
// generation case (M = 1), bound by reading B once. Four rows of B at a time give four
// independent accumulators, so the loop is not bound by the latency of one FMA chain.
static void retrlm__matmul_rows(const retrlm__gemm_kernel *g, float *C, const float *A, const float *B,
                                const retrlm__mat *bq, const float *bias, int M, int N, int K,
                                int acc_c) {
    void (*dot4)(float *, const float *, const float *, size_t, int) = g->dot4;
    float (*dot)(const float *, const float *, int) = g->dot;
    // about 32 chunks: enough for a starved thread to hand work over, few enough to be cheap
    int nb, chunk = RETRLM__MAX(64, (N / 32 + 3) & ~3), nblocks = (N + chunk - 1) / chunk;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)K > 65536)
    for (nb = 0; nb < nblocks; nb++) {
        int n, m, n1 = RETRLM__MIN(N, nb * chunk + chunk);
        for (m = 0; m < M; m++) {
            const float *a = A + (size_t)m * K;
            float *c = C + (size_t)m * N, v[4];
            for (n = nb * chunk; n < n1; n += 4) {
                const float *b0 = bq ? NULL : B + (size_t)n * K;
                int j, rows = RETRLM__MIN(4, n1 - n);
                if (bq) g->dot4_q8(v, a, bq->q + (size_t)n * K, bq->s + (size_t)n * bq->ss, (size_t)K, K, rows);
                else if (rows == 4) dot4(v, a, b0, (size_t)K, K);
                else
                    for (j = 0; j < rows; j++) v[j] = dot(a, b0 + (size_t)j * K, K);
                for (j = 0; j < rows; j++) {
                    float x = v[j] + (bias ? bias[n + j] : 0.0f);
                    c[n + j] = acc_c ? c[n + j] + x : x;
                }
            }
        }
    }
}

// Packing space (floats) one thread of retrlm__matmul_ws uses at most: a caller that keeps
// retrlm__max_threads() times this (64-byte aligned) never makes the multiply allocate.
RETRLM__PRIVATE size_t retrlm__matmul_ws_floats(void) {
    return (size_t)(RETRLM__MR_MAX * RETRLM__MC_TILES + RETRLM__NR_MAX * RETRLM__NC_TILES) * RETRLM__KC;
}

RETRLM__PRIVATE size_t retrlm__round16(size_t n) { return (n + 15) & ~(size_t)15; }

// retrlm_matmul with the packing buffers in ws (ws_floats floats, 64-byte aligned) when it is
// big enough for one thread, else in a buffer of its own. A smaller ws runs fewer threads; the
// result is the same. bq: B is int8 rows (N, K) instead (B NULL, no RETRLM_MATMUL_B_KN).
static retrlm_result retrlm__matmul_any(float *C, const float *A, const float *B,
                                        const retrlm__mat *bq, const float *bias, int M, int N,
                                        int K, int flags, float *ws, size_t ws_floats) {
    retrlm__mat a, bt;
    const int acc_c = (flags & RETRLM_MATMUL_ACCUMULATE) != 0;
    const retrlm__gemm_kernel *g = retrlm__gemm();
    const int MR = g->mr, NR = g->nr, MC = MR * RETRLM__MC_TILES, NC = NR * RETRLM__NC_TILES;
    int mtiles, ntiles, ntiles_all, nthreads, t;
    size_t per_thread, a_size;
    float *work;
    void *owned = NULL;
    RETRLM_ASSERT(M >= 0 && N >= 0 && K >= 0 && (flags & ~7) == 0);
    if (M == 0 || N == 0) return RETRLM_OK;
    RETRLM_ASSERT(C && (K == 0 || (A && (B || bq))) && (!bq || !(flags & RETRLM_MATMUL_B_KN)));
    if (K == 0) {
        for (t = 0; t < M; t++) {
            float *c = C + (size_t)t * N;
            int n;
            for (n = 0; n < N; n++) c[n] = (acc_c ? c[n] : 0.0f) + (bias ? bias[n] : 0.0f);
        }
        return RETRLM_OK;
    }
    if (M < MR && !(flags & (RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN))) {
        retrlm__matmul_rows(g, C, A, B, bq, bias, M, N, K, acc_c);
        return RETRLM_OK;
    }
    // views: A as (M,K), Bᵀ as (N,K); both are packed the same way
    memset(&a, 0, sizeof a);
    memset(&bt, 0, sizeof bt);
    a.p = A;
    if (flags & RETRLM_MATMUL_A_KM) { a.sr = 1; a.sc = (size_t)M; }
    else { a.sr = (size_t)K; a.sc = 1; }
    bt.p = B;
    if (flags & RETRLM_MATMUL_B_KN) { bt.sr = 1; bt.sc = (size_t)N; }
    else { bt.sr = (size_t)K; bt.sc = 1; }
    if (bq) bt = *bq;

    mtiles = (M + MC - 1) / MC;
    ntiles = (N + NC - 1) / NC;
    ntiles_all = mtiles * ntiles;
    nthreads = RETRLM__MIN(retrlm__max_threads(), ntiles_all);
    { // packing buffers sized to this product, not to the largest block: small matmuls (the
      // model's many) then take a small allocation that malloc serves from its free lists
        size_t mc = (size_t)RETRLM__MIN(MC, (M + MR - 1) / MR * MR);
        size_t nc = (size_t)RETRLM__MIN(NC, (N + NR - 1) / NR * NR);
        size_t kc = (size_t)RETRLM__MIN(RETRLM__KC, K);
        a_size = retrlm__round16(mc * kc); // panels start on a cache line
        per_thread = a_size + retrlm__round16(kc * nc);
    }
    if (ws && ws_floats >= per_thread) {
        nthreads = (int)RETRLM__MIN((size_t)nthreads, ws_floats / per_thread);
        work = ws;
    } else {
        work = (float *)retrlm__alloc_aligned((size_t)nthreads * per_thread, sizeof(float), &owned);
        if (!work) return retrlm__fail(RETRLM_ERR_NOMEM, "matmul: no memory for packing buffers");
    }

    // num_threads: a thread number indexes the packing buffers, so the team is no larger
    RETRLM__PARALLEL_FOR_N_IF(nthreads, nthreads > 1 && (double)M * N * K > 2e5)
    for (t = 0; t < ntiles_all; t++) {
        int tid = 0;
        float *pa, *pb;
        int m0 = (t / ntiles) * MC, n0 = (t % ntiles) * NC;
        int mc = RETRLM__MIN(MC, M - m0), nc = RETRLM__MIN(NC, N - n0);
        int k0;
#ifdef RETRLM__OMP
        tid = omp_get_thread_num();
#endif
        pa = work + (size_t)tid * per_thread;
        pb = pa + a_size;
        for (k0 = 0; k0 < K; k0 += RETRLM__KC) {
            int kc = RETRLM__MIN(RETRLM__KC, K - k0), ir, jr;
            retrlm__matmul_pack(pa, a, M, m0, mc, k0, kc, MR);
            retrlm__matmul_pack(pb, bt, N, n0, nc, k0, kc, NR);
            for (jr = 0; jr < nc; jr += NR) {
                for (ir = 0; ir < mc; ir += MR) {
                    g->micro(kc, pa + (size_t)ir * kc, pb + (size_t)jr * kc, C + (size_t)(m0 + ir) * N + (n0 + jr),
                            (size_t)N, RETRLM__MIN(MR, mc - ir), RETRLM__MIN(NR, nc - jr), bias ? bias + n0 + jr : NULL,
                            k0 == 0, acc_c);
                }
            }
        }
    }
    RETRLM_FREE(owned);
    return RETRLM_OK;
}

RETRLM__PRIVATE retrlm_result retrlm__matmul_ws(float *C, const float *A, const float *B,
                                                const float *bias, int M, int N, int K, int flags,
                                                float *ws, size_t ws_floats) {
    return retrlm__matmul_any(C, A, B, NULL, bias, M, N, K, flags, ws, ws_floats);
}

RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags) {
    return retrlm__matmul_any(C, A, B, NULL, bias, M, N, K, flags, NULL, 0);
}

// ---------------------------------------------------------------------------------------------
// int8 weights: rows of K weights in groups of RETRLM__Q8_GROUP, each group one float scale d =
// max |w| / 127 and the int8 q = round(w / d) (llama.cpp's Q8_0, with a float scale)

RETRLM__PRIVATE size_t retrlm__q8_groups(int K) {
    return ((size_t)K + RETRLM__Q8_GROUP - 1) / RETRLM__Q8_GROUP;
}

RETRLM__PRIVATE void retrlm__q8_quantize(int8_t *q, float *s, const float *w, size_t rows, int K) {
    const size_t G = retrlm__q8_groups(K);
    size_t r;
    for (r = 0; r < rows; r++) {
        size_t g;
        for (g = 0; g < G; g++) {
            const float *x = w + r * (size_t)K + g * RETRLM__Q8_GROUP;
            int8_t *y = q + r * (size_t)K + g * RETRLM__Q8_GROUP;
            int n = (int)RETRLM__MIN((size_t)RETRLM__Q8_GROUP, (size_t)K - g * RETRLM__Q8_GROUP), i;
            float mx = 0.0f, d;
            for (i = 0; i < n; i++) mx = RETRLM__MAX(mx, fabsf(x[i]));
            d = mx / 127.0f;
            s[r * G + g] = d;
            for (i = 0; i < n; i++) {
                float v = d > 0.0f ? x[i] / d : 0.0f; // |v| <= 127; NaN weights become 0
                y[i] = (int8_t)(v == v ? (v < 0.0f ? -(int)(-v + 0.5f) : (int)(v + 0.5f)) : 0);
            }
        }
    }
}

// out (K) = row of int8 weights q with its scales s, dequantized
RETRLM__PRIVATE void retrlm__q8_row(float *out, const int8_t *q, const float *s, int K) {
    int i;
    for (i = 0; i < K; i++) out[i] = s[i / RETRLM__Q8_GROUP] * (float)q[i];
}

// C (M, N) = A (M, K) times the transpose of the int8 rows (N, K) q with scales s; flags as
// retrlm_matmul's but RETRLM_MATMUL_B_KN. One-row products read the int8 weights directly
// (generation: four times fewer bytes than f32), larger ones dequantize them as they pack.
RETRLM__PRIVATE retrlm_result retrlm__matmul_q8_ws(float *C, const float *A, const int8_t *q,
                                                   const float *s, int M, int N, int K, int flags,
                                                   float *ws, size_t ws_floats) {
    retrlm__mat b;
    memset(&b, 0, sizeof b);
    b.q = q;
    b.s = s;
    b.sr = (size_t)K;
    b.sc = 1;
    b.ss = retrlm__q8_groups(K);
    return retrlm__matmul_any(C, A, NULL, &b, NULL, M, N, K, flags, ws, ws_floats);
}

#if defined(__clang__)
#pragma float_control(pop)
#endif
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
struct retrlm__sink {
    int (*write)(struct retrlm__sink *s, const void *p, size_t n);
    unsigned char *buf; // memory sink
    size_t pos, cap;
    int fd;             // POSIX file sink
    FILE *fp;           // stdio file sink
};

RETRLM__PRIVATE int retrlm__sink_put(retrlm__sink *s, const void *p, size_t n) { return s->write(s, p, n); }

static int retrlm__sink_memory(retrlm__sink *s, const void *p, size_t n) {
    if (n > s->cap - s->pos) return 1;
    if (n) memcpy(s->buf + s->pos, p, n); // p may be NULL for an empty section
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
// what a path that is not a regular file is, for messages
static const char *retrlm__file_type(mode_t mode) {
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
           : S_ISLNK(mode) ? "a symbolic link" : "not a regular file";
}

// 0 when path is missing or a regular file, which a save may replace; else 1 after a message.
// lstat: a symbolic link would be replaced by the file, not written through.
static int retrlm__refuse_output(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode)) return 0;
    retrlm__fail(RETRLM_ERR_IO, "%s is %s: only a regular file or a new path is written, nothing replaced", path,
                 retrlm__file_type(st.st_mode));
    return 1;
}

// Removes "<path>.tmp-<pid>" files that saves of path by processes no longer running left
// behind (killed half-way). A live process's, and ours, are left alone.
static void retrlm__remove_stale_temps(const char *path, char *buf, size_t cap) {
    const char *base = strrchr(path, '/');
    size_t dir_len = base ? (size_t)(base - path) + 1 : 0, base_len;
    DIR *d;
    struct dirent *e;
    base = base ? base + 1 : path;
    base_len = strlen(base);
    if (dir_len + base_len + 32 > cap) return;
    memcpy(buf, path, dir_len);
    buf[dir_len] = '\0'; // the directory with its slash ("/" for the root); none: "."
    if (!(d = opendir(dir_len ? buf : "."))) return;
    while ((e = readdir(d)) != NULL) {
        const char *p = e->d_name;
        char *end;
        long pid;
        if (strncmp(p, base, base_len) || strncmp(p + base_len, ".tmp-", 5)) continue;
        p += base_len + 5;
        if (*p < '0' || *p > '9') continue;
        errno = 0;
        pid = strtol(p, &end, 10);
        if (*end || errno || pid <= 0 || pid == (long)getpid() || strlen(e->d_name) + dir_len + 1 > cap) continue;
        if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) {
            strcpy(buf + dir_len, e->d_name);
            remove(buf);
            buf[dir_len] = '\0';
        }
    }
    closedir(d);
}

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

RETRLM__PRIVATE retrlm_result retrlm__save_atomic(const char *path, retrlm__emit_fn emit, const void *ctx) {
    retrlm__sink sink;
    size_t plen;
    char *tmp;
    retrlm_result res;
    int ok;
    if (!path || !path[0]) return retrlm__fail(RETRLM_ERR_ARG, "save: empty path");
    plen = strlen(path);
    tmp = (char *)retrlm__alloc(plen + 32, 1);
    if (!tmp) return retrlm__fail(RETRLM_ERR_NOMEM, "save: no memory");
    memset(&sink, 0, sizeof sink);
#ifdef RETRLM__POSIX
    if (retrlm__refuse_output(path)) {
        RETRLM_FREE(tmp);
        return RETRLM_ERR_IO;
    }
    retrlm__remove_stale_temps(path, tmp, plen + 32);
    snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
    sink.write = retrlm__sink_fd;
    sink.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (sink.fd < 0) {
        res = retrlm__fail(RETRLM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        RETRLM_FREE(tmp);
        return res;
    }
    res = emit(ctx, &sink);
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
    res = emit(ctx, &sink);
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

static retrlm_result retrlm__writer_emit_cb(const void *w, retrlm__sink *sink) {
    size_t total;
    return retrlm__writer_emit((const retrlm_writer *)w, sink, &total);
}

RETRLM_API retrlm_result retrlm_writer_save(const retrlm_writer *w, const char *path) {
    RETRLM_ASSERT(w);
    return retrlm__save_atomic(path, retrlm__writer_emit_cb, w);
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
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: header: %lu sections do not fit in a %lu-byte file (corrupt header or truncated file)",
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
            !(r->mapped_ && (flags & RETRLM_READER_NO_VERIFY_MAPPED)) &&
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
        unsigned char *p = (unsigned char *)retrlm__alloc_aligned(size, 1, &r->owned_);
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
        int fd;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) // before open, which waits on a FIFO
            return retrlm__fail(RETRLM_ERR_IO, "%s is %s, not a file to read", r->source_, retrlm__file_type(st.st_mode));
        if ((fd = open(path, O_RDONLY)) < 0)
            return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open: %s", r->source_, strerror(errno));
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
            p = (unsigned char *)retrlm__alloc_aligned(r->size, 1, &r->owned_);
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
        p = (unsigned char *)retrlm__alloc_aligned(r->size, 1, &r->owned_);
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

RETRLM__PRIVATE retrlm_result retrlm__read_file(const char *path, char **data, size_t *size) {
    size_t n, got = 0;
    *data = NULL;
    *size = 0;
#ifdef RETRLM__POSIX
    {
        struct stat st;
        int fd;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) // before open, which waits on a FIFO
            return retrlm__fail(RETRLM_ERR_IO, "%s is %s, not a file to read", path, retrlm__file_type(st.st_mode));
        if ((fd = open(path, O_RDONLY)) < 0) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size >= (uint64_t)SIZE_MAX) {
            close(fd);
            return retrlm__fail(RETRLM_ERR_IO, "%s: not a regular file of a usable size", path);
        }
        n = (size_t)st.st_size;
        if (!(*data = (char *)retrlm__alloc(n + 1, 1))) {
            close(fd);
            return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu bytes", path, (unsigned long)n);
        }
        while (got < n) {
            ssize_t k = read(fd, *data + got, RETRLM__MIN(n - got, (size_t)1 << 30));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;
            got += (size_t)k;
        }
        close(fd);
    }
#else
    {
        FILE *f = fopen(path, "rb");
        long len;
        if (!f) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open", path);
        if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
            fclose(f);
            return retrlm__fail(RETRLM_ERR_IO, "%s: cannot find its size", path);
        }
        n = (size_t)len;
        if (!(*data = (char *)retrlm__alloc(n + 1, 1))) {
            fclose(f);
            return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu bytes", path, (unsigned long)n);
        }
        got = fread(*data, 1, n, f);
        fclose(f);
    }
#endif
    if (got != n) {
        RETRLM_FREE(*data);
        *data = NULL;
        return retrlm__fail(RETRLM_ERR_IO, "%s: short read (%lu of %lu bytes)", path, (unsigned long)got, (unsigned long)n);
    }
    (*data)[n] = '\0';
    *size = n;
    return RETRLM_OK;
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
    if (data) *data = NULL; // set on every path: callers (and gcc -O3's analysis) rely on it
    if (count) *count = 0;
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
    const void *p = NULL;
    size_t n = 0;
    retrlm_result res = retrlm_reader_get(r, name, type, &p, &n);
    if (res) return res;
    if (n != count)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section '%s' has %lu elements, expected %lu", r->source_,
                            name, (unsigned long)n, (unsigned long)count);
    if (n) memcpy(out, p, n * retrlm_dtype_size(type));
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// a small JSON reader (safetensors' header): objects, arrays, strings, non-negative integers.
// The cursor type retrlm__js is in internal.h; callers walk the structure themselves.

RETRLM__PRIVATE void retrlm__js_ws(retrlm__js *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

RETRLM__PRIVATE int retrlm__js_char(retrlm__js *j, char c) {
    retrlm__js_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

// a string into out (NUL-terminated, at most cap-1 bytes); 0 on bad syntax or overflow.
// Escapes are decoded; \u escapes outside ASCII become '?' (tensor names are ASCII).
RETRLM__PRIVATE int retrlm__js_string(retrlm__js *j, char *out, size_t cap) {
    size_t n = 0;
    if (!retrlm__js_char(j, '"')) return 0;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if ((unsigned char)c < 0x20) return 0;
        if (c == '\\') {
            if (j->p >= j->end) return 0;
            c = *j->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case '"': case '\\': case '/': break;
            case 'u': {
                int k, v = 0;
                if (j->end - j->p < 4) return 0;
                for (k = 0; k < 4; k++) { // four hex digits, or not a string
                    char h = *j->p++;
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0) return 0;
                    v = v * 16 + d;
                }
                c = v > 0 && v < 0x80 ? (char)v : '?';
                break;
            }
            default: return 0;
            }
        }
        if (n + 1 >= cap) return 0;
        out[n++] = c;
    }
    if (j->p >= j->end) return 0;
    j->p++;
    out[n] = 0;
    return 1;
}

RETRLM__PRIVATE int retrlm__js_uint(retrlm__js *j, uint64_t *v) {
    int digits = 0;
    retrlm__js_ws(j);
    *v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        uint64_t d = (uint64_t)(*j->p++ - '0');
        if (*v > (UINT64_MAX - d) / 10) return 0;
        *v = *v * 10 + d;
        digits++;
    }
    return digits > 0;
}

// skips any value (depth-limited)
RETRLM__PRIVATE int retrlm__js_skip(retrlm__js *j, int depth) {
    retrlm__js_ws(j);
    if (j->p >= j->end || depth > 32) return 0;
    if (*j->p == '"') {
        j->p++;
        while (j->p < j->end && *j->p != '"') {
            if (*j->p == '\\' && j->p + 1 < j->end) j->p++;
            j->p++;
        }
        if (j->p >= j->end) return 0;
        j->p++;
        return 1;
    }
    if (*j->p == '{' || *j->p == '[') {
        char close = *j->p == '{' ? '}' : ']';
        int first = 1;
        j->p++;
        if (retrlm__js_char(j, close)) return 1;
        while (1) {
            if (!first && !retrlm__js_char(j, ',')) return retrlm__js_char(j, close);
            first = 0;
            if (close == '}') {
                if (!retrlm__js_skip(j, depth + 1) || !retrlm__js_char(j, ':')) return 0;
            }
            if (!retrlm__js_skip(j, depth + 1)) return 0;
        }
    }
    // number, true, false, null
    {
        const char *s = j->p;
        while (j->p < j->end && (strchr("+-.eE0123456789", *j->p) || (*j->p >= 'a' && *j->p <= 'z')))
            j->p++;
        return j->p > s;
    }
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
                int n = (int)retrlm__utf8_decode(s + i, len - i, &c), m;
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
/* ---- retrlm_impl/index.c ---- */

// Dimension legend: d vector length, n vectors held, nq queries, k results a query, nlist IVF
// lists, kk = k or rerank * k candidates. Internally a score is always "larger is better":
// L2 uses the negated squared distance and turns it back into a distance on output.

#define RETRLM__IDX_MAX_DIM (1 << 20)
#define RETRLM__IDX_MAX_NLIST (1 << 24)
#define RETRLM__IDX_SCAN 256     // rows scored into a stack buffer before the heap sees them
#define RETRLM__IDX_SEG 16384    // rows a task of a single-query flat scan
#define RETRLM__IDX_QB 128       // queries a block of a batched flat search
#define RETRLM__IDX_NB 1024      // database rows a block of a batched flat search
#define RETRLM__IDX_CHUNK 65536  // rows between two progress reports of add
#define RETRLM__IDX_FORMAT 1     // version of the index sections inside the container

// ---------------------------------------------------------------------------------------------
// row kernels: one query against four stored rows at a time (rows may repeat: a lone row is
// passed four times, so every row's score comes from the same code and the same bits whatever
// the grouping). Each sum runs in LANES partial sums, reduced by a fixed tree: the loops
// vectorize without -ffast-math, no single add chain limits them, and the query is loaded once
// for four rows.

#define RETRLM__IDX_LANES 16

// halves the lanes four times, each step a loop of constant length (one vector add each)
#define RETRLM__IDX_HALVE(a0, a1, a2, a3, h)                                               \
    for (j = 0; j < h; j++) {                                                               \
        a0[j] += a0[j + h];                                                                 \
        a1[j] += a1[j + h];                                                                 \
        a2[j] += a2[j + h];                                                                 \
        a3[j] += a3[j + h];                                                                 \
    }
#define RETRLM__IDX_TREE(a0, a1, a2, a3)                                                   \
    RETRLM__IDX_HALVE(a0, a1, a2, a3, 8)                                                    \
    RETRLM__IDX_HALVE(a0, a1, a2, a3, 4)                                                    \
    RETRLM__IDX_HALVE(a0, a1, a2, a3, 2)                                                    \
    RETRLM__IDX_HALVE(a0, a1, a2, a3, 1)

// out[r] = q . x[r]
static void retrlm__ip4_f32(float *out, const float *q, const float *const *x, int d) {
    float a0[RETRLM__IDX_LANES] = {0}, a1[RETRLM__IDX_LANES] = {0}, a2[RETRLM__IDX_LANES] = {0},
          a3[RETRLM__IDX_LANES] = {0};
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    int i = 0, j;
    for (; i + RETRLM__IDX_LANES <= d; i += RETRLM__IDX_LANES)
        for (j = 0; j < RETRLM__IDX_LANES; j++) {
            float qj = q[i + j];
            a0[j] += qj * x0[i + j];
            a1[j] += qj * x1[i + j];
            a2[j] += qj * x2[i + j];
            a3[j] += qj * x3[i + j];
        }
    RETRLM__IDX_TREE(a0, a1, a2, a3)
    for (; i < d; i++) {
        a0[0] += q[i] * x0[i];
        a1[0] += q[i] * x1[i];
        a2[0] += q[i] * x2[i];
        a3[0] += q[i] * x3[i];
    }
    out[0] = a0[0];
    out[1] = a1[0];
    out[2] = a2[0];
    out[3] = a3[0];
}

// out[r] = |q - x[r]|^2
static void retrlm__l24_f32(float *out, const float *q, const float *const *x, int d) {
    float a0[RETRLM__IDX_LANES] = {0}, a1[RETRLM__IDX_LANES] = {0}, a2[RETRLM__IDX_LANES] = {0},
          a3[RETRLM__IDX_LANES] = {0}, t0, t1, t2, t3;
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    int i = 0, j;
    for (; i + RETRLM__IDX_LANES <= d; i += RETRLM__IDX_LANES)
        for (j = 0; j < RETRLM__IDX_LANES; j++) {
            float qj = q[i + j];
            t0 = qj - x0[i + j];
            t1 = qj - x1[i + j];
            t2 = qj - x2[i + j];
            t3 = qj - x3[i + j];
            a0[j] += t0 * t0;
            a1[j] += t1 * t1;
            a2[j] += t2 * t2;
            a3[j] += t3 * t3;
        }
    RETRLM__IDX_TREE(a0, a1, a2, a3)
    for (; i < d; i++) {
        t0 = q[i] - x0[i];
        t1 = q[i] - x1[i];
        t2 = q[i] - x2[i];
        t3 = q[i] - x3[i];
        a0[0] += t0 * t0;
        a1[0] += t1 * t1;
        a2[0] += t2 * t2;
        a3[0] += t3 * t3;
    }
    out[0] = a0[0];
    out[1] = a1[0];
    out[2] = a2[0];
    out[3] = a3[0];
}

// SQ8: x[j] = min[j] + (c[j] + 0.5) step[j]. With w[j] = q[j] step[j] the inner product is a
// per-query constant plus sum w[j] c[j]. The codes of the four rows are first widened to
// floats, a block of dimensions at a time, in a plain loop that compiles to wide converts;
// the sums then run as in the f32 kernels, on data in L1.
#define RETRLM__IDX_DB 256 // dimensions widened at a time (a multiple of the lanes)

static void retrlm__widen4(float (*f)[RETRLM__IDX_DB], const uint8_t *const *c, int i0, int nb) {
    int r, j;
    for (r = 0; r < 4; r++) {
        const uint8_t *cr = c[r] + i0;
        float *fr = f[r];
        for (j = 0; j < nb; j++) fr[j] = (float)cr[j];
    }
}

static void retrlm__ip4_sq8(float *out, const float *wq, const uint8_t *const *c, int d) {
    float a0[RETRLM__IDX_LANES] = {0}, a1[RETRLM__IDX_LANES] = {0}, a2[RETRLM__IDX_LANES] = {0},
          a3[RETRLM__IDX_LANES] = {0}, f[4][RETRLM__IDX_DB];
    const int dv = d - d % RETRLM__IDX_LANES;
    int i0, i, j;
    for (i0 = 0; i0 < dv; i0 += RETRLM__IDX_DB) {
        const int nb = RETRLM__MIN(RETRLM__IDX_DB, dv - i0);
        const float *q = wq + i0;
        retrlm__widen4(f, c, i0, nb);
        for (i = 0; i < nb; i += RETRLM__IDX_LANES)
            for (j = 0; j < RETRLM__IDX_LANES; j++) {
                float qj = q[i + j];
                a0[j] += qj * f[0][i + j];
                a1[j] += qj * f[1][i + j];
                a2[j] += qj * f[2][i + j];
                a3[j] += qj * f[3][i + j];
            }
    }
    RETRLM__IDX_TREE(a0, a1, a2, a3)
    for (i = dv; i < d; i++) {
        a0[0] += wq[i] * (float)c[0][i];
        a1[0] += wq[i] * (float)c[1][i];
        a2[0] += wq[i] * (float)c[2][i];
        a3[0] += wq[i] * (float)c[3][i];
    }
    out[0] = a0[0];
    out[1] = a1[0];
    out[2] = a2[0];
    out[3] = a3[0];
}

// with a[j] = q[j] - min[j] - 0.5 step[j]: |q - x|^2 = sum (a[j] - step[j] c[j])^2
static void retrlm__l24_sq8(float *out, const float *aq, const float *step, const uint8_t *const *c,
                            int d) {
    float a0[RETRLM__IDX_LANES] = {0}, a1[RETRLM__IDX_LANES] = {0}, a2[RETRLM__IDX_LANES] = {0},
          a3[RETRLM__IDX_LANES] = {0}, f[4][RETRLM__IDX_DB], t0, t1, t2, t3;
    const int dv = d - d % RETRLM__IDX_LANES;
    int i0, i, j;
    for (i0 = 0; i0 < dv; i0 += RETRLM__IDX_DB) {
        const int nb = RETRLM__MIN(RETRLM__IDX_DB, dv - i0);
        const float *q = aq + i0, *s = step + i0;
        retrlm__widen4(f, c, i0, nb);
        for (i = 0; i < nb; i += RETRLM__IDX_LANES)
            for (j = 0; j < RETRLM__IDX_LANES; j++) {
                float qj = q[i + j], sj = s[i + j];
                t0 = qj - sj * f[0][i + j];
                t1 = qj - sj * f[1][i + j];
                t2 = qj - sj * f[2][i + j];
                t3 = qj - sj * f[3][i + j];
                a0[j] += t0 * t0;
                a1[j] += t1 * t1;
                a2[j] += t2 * t2;
                a3[j] += t3 * t3;
            }
    }
    RETRLM__IDX_TREE(a0, a1, a2, a3)
    for (i = dv; i < d; i++) {
        t0 = aq[i] - step[i] * (float)c[0][i];
        t1 = aq[i] - step[i] * (float)c[1][i];
        t2 = aq[i] - step[i] * (float)c[2][i];
        t3 = aq[i] - step[i] * (float)c[3][i];
        a0[0] += t0 * t0;
        a1[0] += t1 * t1;
        a2[0] += t2 * t2;
        a3[0] += t3 * t3;
    }
    out[0] = a0[0];
    out[1] = a1[0];
    out[2] = a2[0];
    out[3] = a3[0];
}

// one f32 row, through the four-row kernel (so its bits match a row scored in a group)
static float retrlm__ip_f32(const float *q, const float *x, int d) {
    const float *rows[4];
    float out[4];
    rows[0] = rows[1] = rows[2] = rows[3] = x;
    retrlm__ip4_f32(out, q, rows, d);
    return out[0];
}

static float retrlm__l2_f32(const float *q, const float *x, int d) {
    const float *rows[4];
    float out[4];
    rows[0] = rows[1] = rows[2] = rows[3] = x;
    retrlm__l24_f32(out, q, rows, d);
    return out[0];
}

static int retrlm__all_finite(const float *x, size_t count, size_t *bad) {
    size_t i;
    for (i = 0; i < count; i++) {
        // x - x is 0 for finite x and NaN for inf or NaN
        if ((x[i] - x[i]) != 0.0f) {
            *bad = i;
            return 0;
        }
    }
    return 1;
}

static void retrlm__normalize(float *x, int d) {
    double s = 0.0;
    int j;
    for (j = 0; j < d; j++) s += (double)x[j] * x[j];
    if (s > 0.0) {
        float inv = (float)(1.0 / sqrt(s));
        for (j = 0; j < d; j++) x[j] *= inv;
    }
}

static retrlm_result retrlm__check_vectors(const char *what, const float *x, size_t n, int d) {
    size_t bad = 0;
    if (n && !x) return retrlm__fail(RETRLM_ERR_ARG, "%s: NULL vectors", what);
    if (!retrlm__all_finite(x, n * (size_t)d, &bad))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: vector %lu, component %d is %s; values must be finite",
                            what, (unsigned long)(bad / (size_t)d), (int)(bad % (size_t)d),
                            x[bad] != x[bad] ? "NaN" : "infinite");
    return RETRLM_OK;
}

static int retrlm__keeps_f32(const retrlm_index *ix) {
    return ix->storage == RETRLM_STORAGE_F32 || ix->rerank > 0;
}

// ---------------------------------------------------------------------------------------------
// lifecycle

static void retrlm__index_drop_arrays(retrlm_index *ix) {
    if (ix->borrowed_) {
        retrlm_reader_close(&ix->reader_);
    } else {
        RETRLM_FREE((void *)ix->ids);
        RETRLM_FREE((void *)ix->vectors);
        RETRLM_FREE((void *)ix->codes);
        RETRLM_FREE((void *)ix->sq_min);
        RETRLM_FREE((void *)ix->sq_step);
        RETRLM_FREE((void *)ix->centroids);
        RETRLM_FREE((void *)ix->list_offsets);
    }
    RETRLM_FREE(ix->cnorms_);
    ix->ids = NULL;
    ix->vectors = NULL;
    ix->codes = NULL;
    ix->sq_min = ix->sq_step = ix->centroids = NULL;
    ix->list_offsets = NULL;
    ix->cnorms_ = NULL;
    ix->borrowed_ = 0;
}

RETRLM_API void retrlm_index_free(retrlm_index *ix) {
    if (!ix) return;
    retrlm__index_drop_arrays(ix);
    memset(ix, 0, sizeof *ix);
}

static retrlm_result retrlm__index_check_config(const retrlm_index_config *c) {
    if (c->dim <= 0 || c->dim > RETRLM__IDX_MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG, "index: dim %d, expected 1..%d", c->dim, RETRLM__IDX_MAX_DIM);
    if (c->metric < 0 || c->metric > 2)
        return retrlm__fail(RETRLM_ERR_ARG, "index: unknown metric %d (RETRLM_METRIC_IP, _L2, _COSINE)", c->metric);
    if (c->storage < 0 || c->storage > 1)
        return retrlm__fail(RETRLM_ERR_ARG, "index: unknown storage %d (RETRLM_STORAGE_F32, _SQ8)", c->storage);
    if (c->nlist < 0 || c->nlist > RETRLM__IDX_MAX_NLIST)
        return retrlm__fail(RETRLM_ERR_ARG, "index: nlist %d, expected 0 (flat) .. %d", c->nlist, RETRLM__IDX_MAX_NLIST);
    if (c->nprobe < 0 || c->rerank < 0 || c->rerank > 65536 || c->kmeans_iters < 0 ||
        c->max_points_per_list < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "index: negative nprobe, rerank, kmeans_iters or max_points_per_list (or rerank > 65536)");
    if (c->kmeans_init != RETRLM_KMEANS_RANDOM && c->kmeans_init != RETRLM_KMEANS_PLUSPLUS)
        return retrlm__fail(RETRLM_ERR_ARG, "index: kmeans_init %d, expected RETRLM_KMEANS_RANDOM or _PLUSPLUS", c->kmeans_init);
    return RETRLM_OK;
}

static void retrlm__index_settings(retrlm_index *ix, const retrlm_index_config *c) {
    ix->kmeans_iters_ = c->kmeans_iters ? c->kmeans_iters : 10;
    ix->kmeans_init_ = c->kmeans_init;
    ix->max_points_ = c->max_points_per_list ? c->max_points_per_list : 256;
    ix->seed_ = c->seed ? c->seed : 1234;
    ix->progress_ = c->progress;
    ix->progress_user_ = c->progress_user;
}

RETRLM_API retrlm_result retrlm_index_init(retrlm_index *ix, const retrlm_index_config *cfg) {
    retrlm_result r;
    RETRLM_ASSERT(ix && cfg);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm__index_check_config(cfg)) != RETRLM_OK) return r;
    ix->dim = cfg->dim;
    ix->metric = cfg->metric;
    ix->storage = cfg->storage;
    ix->nlist = cfg->nlist;
    ix->nprobe = cfg->nprobe ? cfg->nprobe : 1;
    ix->rerank = cfg->storage == RETRLM_STORAGE_SQ8 ? cfg->rerank : 0;
    ix->trained = cfg->nlist == 0 && cfg->storage == RETRLM_STORAGE_F32;
    retrlm__index_settings(ix, cfg);
    return RETRLM_OK;
}

// Copies arrays borrowed from a loaded file into owned memory, so they can change.
static retrlm_result retrlm__index_own(retrlm_index *ix) {
    size_t nd = ix->n * (size_t)ix->dim, d = (size_t)ix->dim, cd = (size_t)ix->nlist * d;
    void *ids = NULL, *vec = NULL, *codes = NULL, *mn = NULL, *st = NULL, *cen = NULL, *off = NULL;
    int fail = 0;
    if (!ix->borrowed_) return RETRLM_OK;
#define RETRLM__DUP(dst, src, count, T)                                       \
    if (src) {                                                                \
        dst = retrlm__alloc((count) ? (count) : 1, sizeof(T));                \
        if (!dst) fail = 1;                                                   \
        else if (count) memcpy(dst, src, (count) * sizeof(T));                \
    }
    RETRLM__DUP(ids, ix->ids, ix->n, int64_t)
    RETRLM__DUP(vec, ix->vectors, nd, float)
    RETRLM__DUP(codes, ix->codes, nd, uint8_t)
    RETRLM__DUP(mn, ix->sq_min, d, float)
    RETRLM__DUP(st, ix->sq_step, d, float)
    RETRLM__DUP(cen, ix->centroids, cd, float)
    RETRLM__DUP(off, ix->list_offsets, (size_t)ix->nlist + 1, uint64_t)
#undef RETRLM__DUP
    if (fail) {
        RETRLM_FREE(ids);
        RETRLM_FREE(vec);
        RETRLM_FREE(codes);
        RETRLM_FREE(mn);
        RETRLM_FREE(st);
        RETRLM_FREE(cen);
        RETRLM_FREE(off);
        return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory to copy the loaded index before changing it");
    }
    retrlm_reader_close(&ix->reader_);
    ix->borrowed_ = 0;
    ix->ids = (const int64_t *)ids;
    ix->vectors = (const float *)vec;
    ix->codes = (const uint8_t *)codes;
    ix->sq_min = (const float *)mn;
    ix->sq_step = (const float *)st;
    ix->centroids = (const float *)cen;
    ix->list_offsets = (const uint64_t *)off;
    return RETRLM_OK;
}

RETRLM_API size_t retrlm_index_bytes(const retrlm_index *ix) {
    size_t nd = ix->n * (size_t)ix->dim, b = ix->n * sizeof(int64_t);
    if (ix->vectors) b += nd * sizeof(float);
    if (ix->codes) b += nd;
    if (ix->sq_min) b += 2 * (size_t)ix->dim * sizeof(float);
    if (ix->centroids) b += (size_t)ix->nlist * (size_t)ix->dim * sizeof(float);
    if (ix->list_offsets) b += ((size_t)ix->nlist + 1) * sizeof(uint64_t);
    if (ix->cnorms_) b += (size_t)ix->nlist * sizeof(float);
    return b;
}

// ---------------------------------------------------------------------------------------------
// SQ8 encoding (FAISS ScalarQuantizer QT_8bit with the min/max range): code = floor of the
// position in [min, max] times 255, clamped; decoded as the middle of its step.

static void retrlm__sq8_encode(const float *x, uint8_t *code, const float *mn, const float *step,
                               int d) {
    int j;
    for (j = 0; j < d; j++) {
        float t = step[j] > 0.0f ? (x[j] - mn[j]) / step[j] : 0.0f;
        int c = t <= 0.0f ? 0 : t >= 255.0f ? 255 : (int)t;
        code[j] = (uint8_t)c;
    }
}

// ---------------------------------------------------------------------------------------------
// k-means (Lloyd), assignment through the blocked matrix multiply.

#define RETRLM__ASSIGN_BLOCK 256

// For each row of x (n, d): the best of k centroids (ties: lowest index) and its score.
// l2: score 2 x.c - |c|^2 (the nearest); otherwise x.c (the largest inner product).
static retrlm_result retrlm__assign(const float *x, size_t n, int d, const float *cent,
                                    const float *cnorms, int k, int l2, int *out, float *out_score) {
    long nb = (long)((n + RETRLM__ASSIGN_BLOCK - 1) / RETRLM__ASSIGN_BLOCK), b;
    int failed = 0;
    RETRLM__PARALLEL_FOR_IF(nb > 1)
    for (b = 0; b < nb; b++) {
        size_t r0 = (size_t)b * RETRLM__ASSIGN_BLOCK;
        int m = (int)RETRLM__MIN((size_t)RETRLM__ASSIGN_BLOCK, n - r0), i, c;
        float *sc = (float *)retrlm__alloc((size_t)m * (size_t)k, sizeof(float));
        if (!sc || retrlm_matmul(sc, x + r0 * (size_t)d, cent, NULL, m, k, d, 0) != RETRLM_OK) {
            failed = 1; // benign race: every writer stores 1
            RETRLM_FREE(sc);
            continue;
        }
        for (i = 0; i < m; i++) {
            const float *row = sc + (size_t)i * (size_t)k;
            int best = 0;
            float bs = -INFINITY;
            for (c = 0; c < k; c++) {
                float s = l2 ? 2.0f * row[c] - cnorms[c] : row[c];
                if (s > bs) {
                    bs = s;
                    best = c;
                }
            }
            out[r0 + (size_t)i] = best;
            if (out_score) out_score[r0 + (size_t)i] = bs;
        }
        RETRLM_FREE(sc);
    }
    if (failed) return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory to assign vectors to centroids");
    return RETRLM_OK;
}

static void retrlm__sq_norms(const float *x, size_t n, int d, float *out) {
    long i;
    RETRLM__PARALLEL_FOR_IF(n * (size_t)d > 100000)
    for (i = 0; i < (long)n; i++) out[i] = retrlm__ip_f32(x + (size_t)i * (size_t)d, x + (size_t)i * (size_t)d, d);
}

// k-means++ seeding: each next centroid is a point drawn with probability proportional to its
// squared distance to the nearest centroid chosen so far.
static retrlm_result retrlm__kmeanspp(float *cent, int k, const float *x, size_t m, int d,
                                      retrlm_rng *rng, const retrlm_index *st) {
    double *mind = (double *)retrlm__alloc(m, sizeof(double));
    size_t pick = (size_t)retrlm_rng_below(rng, m);
    int c;
    retrlm_result r = RETRLM_OK;
    if (!mind) return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for k-means++");
    for (c = 0; c < k; c++) {
        const float *cc = cent + (size_t)c * (size_t)d;
        double total = 0.0, u, acc = 0.0;
        long i;
        memcpy(cent + (size_t)c * (size_t)d, x + pick * (size_t)d, (size_t)d * sizeof(float));
        RETRLM__PARALLEL_FOR_IF(m * (size_t)d > 100000)
        for (i = 0; i < (long)m; i++) {
            double v = retrlm__l2_f32(cc, x + (size_t)i * (size_t)d, d);
            if (c == 0 || v < mind[i]) mind[i] = v;
        }
        if (c + 1 == k) break;
        for (i = 0; i < (long)m; i++) total += mind[i];
        if (!(total > 0.0)) { // every point is on a centroid: any point will do
            pick = (size_t)retrlm_rng_below(rng, m);
            continue;
        }
        u = retrlm_rng_double(rng) * total;
        pick = m - 1;
        for (i = 0; i < (long)m; i++) {
            acc += mind[i];
            if (acc > u && mind[i] > 0.0) {
                pick = (size_t)i;
                break;
            }
        }
        if ((c & 63) == 63 &&
            (r = retrlm__progress(st->progress_, st->progress_user_, "kmeans++", c + 1, k)) != RETRLM_OK)
            break;
    }
    RETRLM_FREE(mind);
    return r;
}

// The k-means core on the (already sampled, normalised if spherical) points x (m, d).
static retrlm_result retrlm__kmeans_run(float *cent, int k, const float *x, size_t m, int d,
                                        int spherical, const retrlm_index *st) {
    retrlm_rng rng;
    int *assign = NULL, it, c;
    size_t *count = NULL, *start = NULL, *order = NULL, i;
    float *cn = NULL;
    retrlm_result r = RETRLM_OK;
    retrlm_rng_seed(&rng, st->seed_);
    assign = (int *)retrlm__alloc(m, sizeof(int));
    order = (size_t *)retrlm__alloc(m, sizeof(size_t));
    count = (size_t *)retrlm__alloc((size_t)k, sizeof(size_t));
    start = (size_t *)retrlm__alloc((size_t)k + 1, sizeof(size_t));
    cn = (float *)retrlm__alloc((size_t)k, sizeof(float));
    if (!assign || !order || !count || !start || !cn) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for %lu points", (unsigned long)m);
        goto done;
    }
    if (st->kmeans_init_ == RETRLM_KMEANS_PLUSPLUS) {
        if ((r = retrlm__kmeanspp(cent, k, x, m, d, &rng, st)) != RETRLM_OK) goto done;
    } else { // k distinct points: a partial Fisher-Yates shuffle of the indices
        for (i = 0; i < m; i++) order[i] = i;
        for (c = 0; c < k; c++) {
            size_t j = (size_t)c + (size_t)retrlm_rng_below(&rng, m - (size_t)c), t = order[c];
            order[c] = order[j];
            order[j] = t;
            memcpy(cent + (size_t)c * (size_t)d, x + order[c] * (size_t)d, (size_t)d * sizeof(float));
        }
    }
    if (spherical)
        for (c = 0; c < k; c++) retrlm__normalize(cent + (size_t)c * (size_t)d, d);
    for (it = 0; it < st->kmeans_iters_; it++) {
        long cc;
        retrlm__sq_norms(cent, (size_t)k, d, cn);
        if ((r = retrlm__assign(x, m, d, cent, cn, k, !spherical, assign, NULL)) != RETRLM_OK) goto done;
        // group the points by centroid (counting sort, stable): each centroid then sums its own
        // points in index order on one thread, so the result does not depend on the threads
        memset(count, 0, (size_t)k * sizeof(size_t));
        for (i = 0; i < m; i++) count[assign[i]]++;
        start[0] = 0;
        for (c = 0; c < k; c++) start[c + 1] = start[c] + count[c];
        for (i = 0; i < m; i++) order[start[assign[i]]++] = i;
        for (c = k; c > 0; c--) start[c] = start[c - 1];
        start[0] = 0;
        RETRLM__PARALLEL_FOR
        for (cc = 0; cc < k; cc++) {
            float *ce = cent + (size_t)cc * (size_t)d;
            size_t p;
            int j;
            if (!count[cc]) continue;
            for (j = 0; j < d; j++) ce[j] = 0.0f;
            for (p = start[cc]; p < start[cc + 1]; p++) {
                const float *xp = x + order[p] * (size_t)d;
                RETRLM__SIMD
                for (j = 0; j < d; j++) ce[j] += xp[j];
            }
            if (spherical) retrlm__normalize(ce, d);
            else {
                float inv = 1.0f / (float)count[cc];
                for (j = 0; j < d; j++) ce[j] *= inv;
            }
        }
        // empty clusters: split the largest one in two, nudging the copies apart (FAISS does
        // the same with a random cluster chosen by size)
        for (c = 0; c < k; c++) {
            int big = 0, j, b;
            float *ce = cent + (size_t)c * (size_t)d, *cb;
            if (count[c]) continue;
            for (b = 1; b < k; b++)
                if (count[b] > count[big]) big = b;
            cb = cent + (size_t)big * (size_t)d;
            for (j = 0; j < d; j++) {
                float e = (j & 1) ? -1.0f / 1024.0f : 1.0f / 1024.0f;
                ce[j] = cb[j] * (1.0f + e);
                cb[j] = cb[j] * (1.0f - e);
            }
            if (spherical) {
                retrlm__normalize(ce, d);
                retrlm__normalize(cb, d);
            }
            count[c] = count[big] / 2;
            count[big] -= count[c];
        }
        if ((r = retrlm__progress(st->progress_, st->progress_user_, "kmeans", it + 1,
                                  st->kmeans_iters_)) != RETRLM_OK)
            goto done;
    }
done:
    RETRLM_FREE(assign);
    RETRLM_FREE(order);
    RETRLM_FREE(count);
    RETRLM_FREE(start);
    RETRLM_FREE(cn);
    return r;
}

// Samples at most k * max_points rows of x (normalised for cosine) and runs k-means.
static retrlm_result retrlm__kmeans_sampled(float *cent, int k, const float *x, size_t n, int d,
                                            retrlm_metric metric, const retrlm_index *st) {
    size_t cap = (size_t)k * (size_t)st->max_points_, m = n, i;
    float *xs = NULL;
    retrlm_result r;
    int spherical = metric != RETRLM_METRIC_L2;
    if (n < (size_t)k)
        return retrlm__fail(RETRLM_ERR_ARG, "kmeans: %lu training vectors for %d centroids; need at least as many vectors as centroids",
                            (unsigned long)n, k);
    if (cap < n) m = cap;
    if (m < n || metric == RETRLM_METRIC_COSINE) {
        xs = (float *)retrlm__alloc(m, (size_t)d * sizeof(float));
        if (!xs) return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory for %lu training vectors", (unsigned long)m);
        if (m < n) { // a uniform sample without replacement, kept in file order
            size_t *idx = (size_t *)retrlm__alloc(n, sizeof(size_t));
            retrlm_rng rng;
            if (!idx) {
                RETRLM_FREE(xs);
                return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory to sample %lu vectors", (unsigned long)n);
            }
            retrlm_rng_seed(&rng, st->seed_ ^ 0x5A4D504C45ull);
            for (i = 0; i < n; i++) idx[i] = i;
            for (i = 0; i < m; i++) {
                size_t j = i + (size_t)retrlm_rng_below(&rng, n - i), t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
            { // copy the chosen rows in file order
                size_t w = 0;
                unsigned char *flag = (unsigned char *)retrlm__calloc(n, 1);
                if (!flag) {
                    RETRLM_FREE(idx);
                    RETRLM_FREE(xs);
                    return retrlm__fail(RETRLM_ERR_NOMEM, "kmeans: no memory to sample");
                }
                for (i = 0; i < m; i++) flag[idx[i]] = 1;
                for (i = 0; i < n; i++)
                    if (flag[i]) memcpy(xs + (w++) * (size_t)d, x + i * (size_t)d, (size_t)d * sizeof(float));
                RETRLM_FREE(flag);
            }
            RETRLM_FREE(idx);
        } else {
            memcpy(xs, x, n * (size_t)d * sizeof(float));
        }
        if (metric == RETRLM_METRIC_COSINE)
            for (i = 0; i < m; i++) retrlm__normalize(xs + i * (size_t)d, d);
    }
    r = retrlm__kmeans_run(cent, k, xs ? xs : x, m, d, spherical, st);
    RETRLM_FREE(xs);
    return r;
}

RETRLM_API retrlm_result retrlm_kmeans(float *centroids, int k, const float *x, size_t n, int dim,
                                       retrlm_metric metric, const retrlm_index_config *cfg) {
    retrlm_index st;
    retrlm_index_config c;
    retrlm_result r;
    RETRLM_ASSERT(centroids);
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    c.dim = dim;
    c.metric = metric;
    c.nlist = k;
    c.storage = RETRLM_STORAGE_F32;
    c.rerank = 0;
    if (k <= 0) return retrlm__fail(RETRLM_ERR_ARG, "kmeans: k = %d, expected > 0", k);
    if ((r = retrlm__index_check_config(&c)) != RETRLM_OK) return r;
    if ((r = retrlm__check_vectors("kmeans", x, n, dim)) != RETRLM_OK) return r;
    memset(&st, 0, sizeof st);
    retrlm__index_settings(&st, &c);
    return retrlm__kmeans_sampled(centroids, k, x, n, dim, metric, &st);
}

// ---------------------------------------------------------------------------------------------
// training

static retrlm_result retrlm__set_cnorms(retrlm_index *ix) {
    RETRLM_FREE(ix->cnorms_);
    ix->cnorms_ = NULL;
    if (!ix->nlist || !ix->centroids) return RETRLM_OK;
    ix->cnorms_ = (float *)retrlm__alloc((size_t)ix->nlist, sizeof(float));
    if (!ix->cnorms_) return retrlm__fail(RETRLM_ERR_NOMEM, "index: no memory for centroid norms");
    retrlm__sq_norms(ix->centroids, (size_t)ix->nlist, ix->dim, ix->cnorms_);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_train(retrlm_index *ix, const float *x, size_t n, int dim) {
    retrlm_result r;
    float *cent = NULL, *mn = NULL, *step = NULL, *xn = NULL;
    uint64_t *off = NULL;
    size_t i;
    int j, d = ix->dim;
    RETRLM_ASSERT(ix);
    if (dim != ix->dim) return retrlm__fail(RETRLM_ERR_ARG, "index train: vectors of dim %d, the index has dim %d", dim, ix->dim);
    if (ix->n) return retrlm__fail(RETRLM_ERR_ARG, "index train: the index holds %lu vectors; train an empty index", (unsigned long)ix->n);
    if (ix->nlist == 0 && ix->storage == RETRLM_STORAGE_F32) return RETRLM_OK; // nothing to learn
    if (n == 0) return retrlm__fail(RETRLM_ERR_ARG, "index train: no training vectors");
    if ((r = retrlm__check_vectors("index train", x, n, dim)) != RETRLM_OK) return r;
    if (ix->nlist) {
        cent = (float *)retrlm__alloc((size_t)ix->nlist, (size_t)d * sizeof(float));
        off = (uint64_t *)retrlm__calloc((size_t)ix->nlist + 1, sizeof(uint64_t));
        if (!cent || !off) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "index train: no memory for %d centroids", ix->nlist);
            goto fail;
        }
        if ((r = retrlm__kmeans_sampled(cent, ix->nlist, x, n, d, ix->metric, ix)) != RETRLM_OK) goto fail;
    }
    if (ix->storage == RETRLM_STORAGE_SQ8) { // per-dimension range over all training vectors
        mn = (float *)retrlm__alloc((size_t)d, sizeof(float));
        step = (float *)retrlm__alloc((size_t)d, sizeof(float));
        if (ix->metric == RETRLM_METRIC_COSINE) xn = (float *)retrlm__alloc((size_t)d, sizeof(float));
        if (!mn || !step || (ix->metric == RETRLM_METRIC_COSINE && !xn)) {
            r = retrlm__fail(RETRLM_ERR_NOMEM, "index train: no memory");
            goto fail;
        }
        for (j = 0; j < d; j++) {
            mn[j] = INFINITY;
            step[j] = -INFINITY; // the maximum for now
        }
        for (i = 0; i < n; i++) {
            const float *xi = x + i * (size_t)d;
            if (xn) {
                memcpy(xn, xi, (size_t)d * sizeof(float));
                retrlm__normalize(xn, d);
                xi = xn;
            }
            for (j = 0; j < d; j++) {
                mn[j] = xi[j] < mn[j] ? xi[j] : mn[j];
                step[j] = xi[j] > step[j] ? xi[j] : step[j];
            }
        }
        for (j = 0; j < d; j++) step[j] = (step[j] - mn[j]) / 255.0f;
        RETRLM_FREE(xn);
    }
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) goto fail;
    retrlm__index_drop_arrays(ix);
    ix->centroids = cent;
    ix->list_offsets = off;
    ix->sq_min = mn;
    ix->sq_step = step;
    if ((r = retrlm__set_cnorms(ix)) != RETRLM_OK) return r;
    ix->trained = 1;
    return RETRLM_OK;
fail:
    RETRLM_FREE(cent);
    RETRLM_FREE(off);
    RETRLM_FREE(mn);
    RETRLM_FREE(step);
    RETRLM_FREE(xn);
    return r;
}

// ---------------------------------------------------------------------------------------------
// adding

// The index's next_id after n vectors with ids (NULL: next_id, next_id + 1, ..) into *next;
// ERR_ARG for a negative id, ERR_RANGE when the ids would overflow
static retrlm_result retrlm__index_next_id(const retrlm_index *ix, const int64_t *ids, size_t n, int64_t *next) {
    size_t i;
    *next = ix->next_id;
    if (!ids) {
        if (*next > INT64_MAX - (int64_t)n) return retrlm__fail(RETRLM_ERR_RANGE, "index add: ids would overflow int64");
        *next += (int64_t)n;
        return RETRLM_OK;
    }
    for (i = 0; i < n; i++) {
        if (ids[i] < 0)
            return retrlm__fail(RETRLM_ERR_ARG, "index add: id %lld at %lu is negative; ids must be >= 0",
                                (long long)ids[i], (unsigned long)i);
        if (ids[i] >= *next) *next = ids[i] == INT64_MAX ? INT64_MAX : ids[i] + 1;
    }
    return RETRLM_OK;
}

// Flat: the n new rows (x normalised as stored, codes for SQ8, ids nids) appended; ix->n is the
// caller's to update
static retrlm_result retrlm__index_append(retrlm_index *ix, const float *x, const uint8_t *codes,
                                          const int64_t *nids, size_t n) {
    const int d = ix->dim;
    const size_t total = ix->n + n;
    int64_t *ids2 = (int64_t *)retrlm__realloc((void *)ix->ids, total, sizeof(int64_t));
    if (!ids2) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
    ix->ids = ids2;
    if (retrlm__keeps_f32(ix)) {
        float *vec = (float *)retrlm__realloc((void *)ix->vectors, total, (size_t)d * sizeof(float));
        if (!vec) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
        ix->vectors = vec;
        memcpy(vec + ix->n * (size_t)d, x, n * (size_t)d * sizeof(float));
    }
    if (codes) {
        uint8_t *c2 = (uint8_t *)retrlm__realloc((void *)ix->codes, total, (size_t)d);
        if (!c2) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory");
        ix->codes = c2;
        memcpy(c2 + ix->n * (size_t)d, codes, n * (size_t)d);
    }
    memcpy(ids2 + ix->n, nids, n * sizeof(int64_t));
    return RETRLM_OK;
}

// IVF: the contiguous lists rebuilt with the n new rows (list[i] the list of row i), a list's old
// rows first, then its new ones in input order; ix->n is the caller's to update
static retrlm_result retrlm__index_relist(retrlm_index *ix, const float *x, const uint8_t *codes,
                                          const int64_t *nids, const int *list, size_t n) {
    const int L = ix->nlist, d = ix->dim;
    const size_t total = ix->n + n;
    uint64_t *off2 = (uint64_t *)retrlm__alloc((size_t)L + 1, sizeof(uint64_t));
    size_t *nstart = (size_t *)retrlm__calloc((size_t)L + 1, sizeof(size_t));
    size_t *perm = (size_t *)retrlm__alloc(n, sizeof(size_t)), i;
    int64_t *ids2 = (int64_t *)retrlm__alloc(total, sizeof(int64_t));
    uint8_t *c2 = codes ? (uint8_t *)retrlm__alloc(total, (size_t)d) : NULL;
    float *vec = retrlm__keeps_f32(ix) ? (float *)retrlm__alloc(total, (size_t)d * sizeof(float)) : NULL;
    long l;
    if (!off2 || !nstart || !perm || !ids2 || (codes && !c2) || (retrlm__keeps_f32(ix) && !vec)) {
        RETRLM_FREE(off2);
        RETRLM_FREE(nstart);
        RETRLM_FREE(perm);
        RETRLM_FREE(ids2);
        RETRLM_FREE(c2);
        RETRLM_FREE(vec);
        return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory to rebuild the lists");
    }
    for (i = 0; i < n; i++) nstart[list[i] + 1]++;
    for (l = 0; l < L; l++) nstart[l + 1] += nstart[l];
    for (i = 0; i < n; i++) perm[nstart[list[i]]++] = i; // stable: input order in a list
    for (l = L; l > 0; l--) nstart[l] = nstart[l - 1];
    nstart[0] = 0;
    off2[0] = 0;
    for (l = 0; l < L; l++)
        off2[l + 1] = off2[l] + (ix->list_offsets[l + 1] - ix->list_offsets[l]) + (nstart[l + 1] - nstart[l]);
    RETRLM__PARALLEL_FOR
    for (l = 0; l < L; l++) {
        size_t o0 = (size_t)ix->list_offsets[l], no = (size_t)ix->list_offsets[l + 1] - o0;
        size_t w = (size_t)off2[l], p;
        if (no) {
            memcpy(ids2 + w, ix->ids + o0, no * sizeof(int64_t));
            if (vec) memcpy(vec + w * (size_t)d, ix->vectors + o0 * (size_t)d, no * (size_t)d * sizeof(float));
            if (c2) memcpy(c2 + w * (size_t)d, ix->codes + o0 * (size_t)d, no * (size_t)d);
            w += no;
        }
        for (p = nstart[l]; p < nstart[l + 1]; p++, w++) {
            size_t s = perm[p];
            ids2[w] = nids[s];
            if (vec) memcpy(vec + w * (size_t)d, x + s * (size_t)d, (size_t)d * sizeof(float));
            if (c2) memcpy(c2 + w * (size_t)d, codes + s * (size_t)d, (size_t)d);
        }
    }
    RETRLM_FREE((void *)ix->ids);
    RETRLM_FREE((void *)ix->vectors);
    RETRLM_FREE((void *)ix->codes);
    RETRLM_FREE((void *)ix->list_offsets);
    ix->ids = ids2;
    ix->vectors = vec;
    ix->codes = c2;
    ix->list_offsets = off2;
    RETRLM_FREE(nstart);
    RETRLM_FREE(perm);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_add(retrlm_index *ix, const float *x, size_t n, int dim,
                                          const int64_t *ids) {
    const int d = ix->dim, sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    size_t i, nd;
    int64_t next;
    float *xn = NULL;
    uint8_t *codes = NULL;
    int64_t *nids = NULL;
    int *list = NULL;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (dim != d) return retrlm__fail(RETRLM_ERR_ARG, "index add: vectors of dim %d, the index has dim %d", dim, d);
    if (!ix->trained)
        return retrlm__fail(RETRLM_ERR_ARG, "index add: the index needs retrlm_index_train first (%s)",
                            ix->nlist ? "IVF centroids" : "SQ8 ranges");
    if (n == 0) return RETRLM_OK;
    if ((r = retrlm__check_vectors("index add", x, n, dim)) != RETRLM_OK) return r;
    if ((r = retrlm__index_next_id(ix, ids, n, &next)) != RETRLM_OK) return r;
    if (ix->n > SIZE_MAX / 2 - n || retrlm__mul_overflows(ix->n + n, (size_t)d * sizeof(float), &nd))
        return retrlm__fail(RETRLM_ERR_NOMEM, "index add: %lu + %lu vectors are too many", (unsigned long)ix->n, (unsigned long)n);
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) return r;

    // the new rows in input order: normalised (cosine), encoded (SQ8), listed (IVF)
    if (ix->metric == RETRLM_METRIC_COSINE) {
        xn = (float *)retrlm__alloc(n, (size_t)d * sizeof(float));
        if (!xn) return retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory for %lu vectors", (unsigned long)n);
        memcpy(xn, x, n * (size_t)d * sizeof(float));
        for (i = 0; i < n; i++) retrlm__normalize(xn + i * (size_t)d, d);
        x = xn;
    }
    nids = (int64_t *)retrlm__alloc(n, sizeof(int64_t));
    if (sq8) codes = (uint8_t *)retrlm__alloc(n, (size_t)d);
    if (ix->nlist) list = (int *)retrlm__alloc(n, sizeof(int));
    if (!nids || (sq8 && !codes) || (ix->nlist && !list)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory for %lu vectors", (unsigned long)n);
        goto done;
    }
    for (i = 0; i < n; i++) nids[i] = ids ? ids[i] : ix->next_id + (int64_t)i;
    for (i = 0; i < n; i += RETRLM__IDX_CHUNK) {
        size_t m = RETRLM__MIN((size_t)RETRLM__IDX_CHUNK, n - i);
        if (sq8) {
            long t;
            RETRLM__PARALLEL_FOR_IF(m * (size_t)d > 100000)
            for (t = 0; t < (long)m; t++)
                retrlm__sq8_encode(x + (i + (size_t)t) * (size_t)d, codes + (i + (size_t)t) * (size_t)d,
                                   ix->sq_min, ix->sq_step, d);
        }
        if (ix->nlist &&
            (r = retrlm__assign(x + i * (size_t)d, m, d, ix->centroids, ix->cnorms_, ix->nlist,
                                ix->metric == RETRLM_METRIC_L2, list + i, NULL)) != RETRLM_OK)
            goto done;
        if ((r = retrlm__progress(ix->progress_, ix->progress_user_, "add", (double)(i + m), (double)n)) != RETRLM_OK)
            goto done;
    }
    r = ix->nlist ? retrlm__index_relist(ix, x, codes, nids, list, n) : retrlm__index_append(ix, x, codes, nids, n);
    if (r == RETRLM_OK) {
        ix->n += n;
        ix->next_id = next;
    }
done:
    RETRLM_FREE(xn);
    RETRLM_FREE(codes);
    RETRLM_FREE(nids);
    RETRLM_FREE(list);
    return r;
}

// ---------------------------------------------------------------------------------------------
// removing

static int retrlm__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int retrlm__has_id(const int64_t *sorted, size_t n, int64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && sorted[lo] == id;
}

RETRLM_API retrlm_result retrlm_index_remove(retrlm_index *ix, const int64_t *ids, size_t n_ids,
                                             size_t *n_removed) {
    int64_t *sorted, *wid;
    float *wv;
    uint8_t *wc;
    size_t i, w = 0, r1, d = (size_t)ix->dim;
    int l;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (n_removed) *n_removed = 0;
    if (n_ids == 0 || ix->n == 0) return RETRLM_OK;
    if (!ids) return retrlm__fail(RETRLM_ERR_ARG, "index remove: NULL ids");
    sorted = (int64_t *)retrlm__alloc(n_ids, sizeof(int64_t));
    if (!sorted) return retrlm__fail(RETRLM_ERR_NOMEM, "index remove: no memory for %lu ids", (unsigned long)n_ids);
    memcpy(sorted, ids, n_ids * sizeof(int64_t));
    qsort(sorted, n_ids, sizeof(int64_t), retrlm__cmp_i64);
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) {
        RETRLM_FREE(sorted);
        return r;
    }
    wid = (int64_t *)ix->ids;
    wv = (float *)ix->vectors;
    wc = (uint8_t *)ix->codes;
    // compact in place, keeping the order (and so every list contiguous)
    for (l = 0, r1 = 0; l < (ix->nlist ? ix->nlist : 1); l++) {
        size_t r0 = r1; // the old start of list l: offsets[l] already holds the new one
        r1 = ix->nlist ? (size_t)ix->list_offsets[l + 1] : ix->n;
        for (i = r0; i < r1; i++) {
            if (retrlm__has_id(sorted, n_ids, wid[i])) continue;
            if (w != i) {
                wid[w] = wid[i];
                if (wv) memcpy(wv + w * d, wv + i * d, d * sizeof(float));
                if (wc) memcpy(wc + w * d, wc + i * d, d);
            }
            w++;
        }
        if (ix->nlist) ((uint64_t *)ix->list_offsets)[l + 1] = w;
    }
    RETRLM_FREE(sorted);
    if (n_removed) *n_removed = ix->n - w;
    ix->n = w;
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// searching

typedef struct retrlm__qctx {
    const float *q; // (d) the query as stored vectors are compared (normalised for cosine)
    const float *t; // (d) SQ8: q * step (IP) or q - min - step / 2 (L2)
    float c0;       // SQ8 IP: sum q (min + step / 2)
} retrlm__qctx;

// t (d) is caller scratch, used for SQ8
static void retrlm__prep(const retrlm_index *ix, const float *q, float *t, retrlm__qctx *qc) {
    int j;
    qc->q = q;
    qc->t = t;
    qc->c0 = 0.0f;
    if (ix->storage == RETRLM_STORAGE_SQ8) {
        double c0 = 0.0;
        for (j = 0; j < ix->dim; j++) {
            float half = 0.5f * ix->sq_step[j];
            if (ix->metric == RETRLM_METRIC_L2) {
                t[j] = q[j] - ix->sq_min[j] - half;
            } else {
                t[j] = q[j] * ix->sq_step[j];
                c0 += (double)q[j] * (double)(ix->sq_min[j] + half);
            }
        }
        qc->c0 = (float)c0;
    }
}

// scores of rows [r0, r0 + m) into out (m), larger is better
static void retrlm__score_rows(const retrlm_index *ix, const retrlm__qctx *qc, size_t r0, int m,
                               float *out) {
    const int d = ix->dim, l2 = ix->metric == RETRLM_METRIC_L2;
    int i, r;
    if (ix->storage == RETRLM_STORAGE_SQ8) {
        const uint8_t *c = ix->codes + r0 * (size_t)d, *rows[4];
        for (i = 0; i < m; i += 4) {
            float o[4];
            for (r = 0; r < 4; r++) rows[r] = c + (size_t)(i + r < m ? i + r : i) * (size_t)d;
            if (l2) retrlm__l24_sq8(o, qc->t, ix->sq_step, rows, d);
            else retrlm__ip4_sq8(o, qc->t, rows, d);
            for (r = 0; r < 4 && i + r < m; r++) out[i + r] = l2 ? -o[r] : qc->c0 + o[r];
        }
    } else {
        const float *x = ix->vectors + r0 * (size_t)d, *rows[4];
        for (i = 0; i < m; i += 4) {
            float o[4];
            for (r = 0; r < 4; r++) rows[r] = x + (size_t)(i + r < m ? i + r : i) * (size_t)d;
            if (l2) retrlm__l24_f32(o, qc->q, rows, d);
            else retrlm__ip4_f32(o, qc->q, rows, d);
            for (r = 0; r < 4 && i + r < m; r++) out[i + r] = l2 ? -o[r] : o[r];
        }
    }
}

// Pushes m scores; keys are ids[i], or row0 + i when ids is NULL. The root test in front of
// the push rejects most candidates without a call.
static void retrlm__push_block(retrlm_topk *h, const float *s, int m, const int64_t *ids,
                               size_t row0) {
    int i;
    for (i = 0; i < m; i++) {
        int64_t key = ids ? ids[i] : (int64_t)(row0 + (size_t)i);
        if (h->n < h->k || s[i] > h->scores[0] || (s[i] == h->scores[0] && key < h->ids[0]))
            retrlm_topk_push(h, key, s[i]);
    }
}

static void retrlm__scan(const retrlm_index *ix, const retrlm__qctx *qc, size_t r0, size_t r1,
                         retrlm_topk *h, int by_row) {
    float buf[RETRLM__IDX_SCAN];
    size_t b;
    for (b = r0; b < r1; b += RETRLM__IDX_SCAN) {
        int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_SCAN, r1 - b);
        retrlm__score_rows(ix, qc, b, m, buf);
        retrlm__push_block(h, buf, m, by_row ? NULL : ix->ids + b, b);
    }
}

static float retrlm__exact(const retrlm_index *ix, const float *q, size_t row) {
    const float *x = ix->vectors + row * (size_t)ix->dim;
    return ix->metric == RETRLM_METRIC_L2 ? -retrlm__l2_f32(q, x, ix->dim) : retrlm__ip_f32(q, x, ix->dim);
}

static void retrlm__pad(const retrlm_index *ix, int from, int k, int64_t *oid, float *osc) {
    int i;
    for (i = from; i < k; i++) {
        oid[i] = -1;
        if (osc) osc[i] = ix->metric == RETRLM_METRIC_L2 ? INFINITY : -INFINITY;
    }
}

// Merges the candidate heaps h[0..nh) of one query (q as compared, d), re-scores row
// candidates exactly when by_row, and writes the k results. 0 on success, 1 without memory.
static int retrlm__finish(const retrlm_index *ix, const float *q, retrlm_topk *h, int nh, int kk,
                          int k, int by_row, int64_t *oid, float *osc) {
    const int kf = RETRLM__MIN(k, kk); // kk is capped at n, and so is what can be found
    int64_t *mi = (int64_t *)retrlm__alloc((size_t)kk + (size_t)kf, sizeof(int64_t));
    float *ms = (float *)retrlm__alloc((size_t)kk + (size_t)kf, sizeof(float));
    retrlm_topk m, f, *res = &m;
    int a, e, got;
    if (!mi || !ms) {
        RETRLM_FREE(mi);
        RETRLM_FREE(ms);
        return 1;
    }
    retrlm_topk_init(&m, kk, mi, ms);
    for (a = 0; a < nh; a++)
        for (e = 0; e < h[a].n; e++) retrlm_topk_push(&m, h[a].ids[e], h[a].scores[e]);
    if (by_row) {
        retrlm_topk_init(&f, kf, mi + kk, ms + kk);
        for (e = 0; e < m.n; e++) {
            size_t row = (size_t)m.ids[e];
            retrlm_topk_push(&f, ix->ids[row], retrlm__exact(ix, q, row));
        }
        res = &f;
    }
    got = retrlm_topk_sort(res);
    for (e = 0; e < got; e++) {
        oid[e] = res->ids[e];
        if (osc) osc[e] = ix->metric == RETRLM_METRIC_L2 ? -res->scores[e] : res->scores[e];
    }
    retrlm__pad(ix, got, k, oid, osc);
    RETRLM_FREE(mi);
    RETRLM_FREE(ms);
    return 0;
}

// One query over a set of row ranges, the ranges in parallel, each with its own heap; the
// merge is exact, so the result does not depend on how the ranges went to threads. Small
// scans stay on one thread: waking a second one costs more than it saves, and on a busy
// machine a descheduled helper stalls the query by a whole time slice.
static retrlm_result retrlm__search_one(const retrlm_index *ix, const float *q, int k, int kk,
                                        int by_row, const size_t *r0, const size_t *r1, int nr,
                                        int64_t *oid, float *osc) {
    int64_t *hid = (int64_t *)retrlm__alloc((size_t)(nr ? nr : 1), (size_t)kk * sizeof(int64_t));
    float *hsc = (float *)retrlm__alloc((size_t)(nr ? nr : 1), (size_t)kk * sizeof(float));
    retrlm_topk *h = (retrlm_topk *)retrlm__alloc((size_t)(nr ? nr : 1), sizeof(retrlm_topk));
    float *t = (float *)retrlm__alloc((size_t)ix->dim, sizeof(float));
    retrlm__qctx qc;
    size_t rows = 0;
    int a, fail = 0;
    if (!hid || !hsc || !h || !t) fail = 1;
    else {
        retrlm__prep(ix, q, t, &qc);
        for (a = 0; a < nr; a++) {
            retrlm_topk_init(&h[a], kk, hid + (size_t)a * (size_t)kk, hsc + (size_t)a * (size_t)kk);
            rows += r1[a] - r0[a];
        }
        (void)rows; // only the OpenMP build looks at it
        RETRLM__PARALLEL_FOR_IF(rows * (size_t)ix->dim > 8000000 && nr > 1)
        for (a = 0; a < nr; a++) retrlm__scan(ix, &qc, r0[a], r1[a], &h[a], by_row);
        fail = retrlm__finish(ix, q, h, nr, kk, k, by_row, oid, osc);
    }
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(t);
    return fail ? retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory") : RETRLM_OK;
}

// Flat, several queries: blocks of QB queries against blocks of NB rows, so that a block of
// rows is read from memory once for QB queries. f32 goes through the blocked matrix multiply,
// SQ8 through the row kernel on a cache-resident block. Tasks are (query block, row segment)
// pairs whose number depends only on nq and n.
static retrlm_result retrlm__search_flat_batch(const retrlm_index *ix, const float *Q, int nq,
                                               int k, int kk, int by_row, int64_t *oid,
                                               float *osc) {
    const int d = ix->dim, l2 = ix->metric == RETRLM_METRIC_L2, sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    // SQ8 blocks are widened to floats once per query block and go through the multiply too
    const int widen = sq8 && d <= 4096, mm = !sq8 || widen;
    const long qblocks = (nq + RETRLM__IDX_QB - 1) / RETRLM__IDX_QB;
    const size_t nblocks = (ix->n + RETRLM__IDX_NB - 1) / RETRLM__IDX_NB;
    long dsegs = qblocks >= 8 ? 1 : (8 + qblocks - 1) / qblocks, tasks, t, qi;
    size_t seg, nh;
    int64_t *hid;
    float *hsc, *qn = NULL, *qt = NULL, *c0 = NULL;
    retrlm_topk *h;
    int fail = 0;
    if ((size_t)dsegs > nblocks) dsegs = (long)nblocks;
    seg = (nblocks + (size_t)dsegs - 1) / (size_t)dsegs * RETRLM__IDX_NB; // rows a segment
    tasks = qblocks * dsegs;
    nh = (size_t)nq * (size_t)dsegs; // heap (q, s) is h[q * dsegs + s]
    hid = (int64_t *)retrlm__alloc(nh, (size_t)kk * sizeof(int64_t));
    hsc = (float *)retrlm__alloc(nh, (size_t)kk * sizeof(float));
    h = (retrlm_topk *)retrlm__alloc(nh, sizeof(retrlm_topk));
    if (l2 && mm) qn = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    if (sq8) {
        qt = (float *)retrlm__alloc((size_t)nq, (size_t)d * sizeof(float));
        c0 = (float *)retrlm__alloc((size_t)nq, sizeof(float));
    }
    if (!hid || !hsc || !h || (l2 && mm && !qn) || (sq8 && (!qt || !c0))) {
        fail = 1;
        goto done;
    }
    for (t = 0; t < (long)nh; t++)
        retrlm_topk_init(&h[t], kk, hid + (size_t)t * (size_t)kk, hsc + (size_t)t * (size_t)kk);
    if (qn) retrlm__sq_norms(Q, (size_t)nq, d, qn);
    if (sq8)
        for (qi = 0; qi < nq; qi++) {
            retrlm__qctx qc;
            retrlm__prep(ix, Q + (size_t)qi * (size_t)d, qt + (size_t)qi * (size_t)d, &qc);
            c0[qi] = qc.c0;
        }
    RETRLM__PARALLEL_FOR_IF(tasks > 1)
    for (t = 0; t < tasks; t++) {
        const long qb = t / dsegs, ds = t % dsegs;
        const int q0 = (int)(qb * RETRLM__IDX_QB), qm = RETRLM__MIN(RETRLM__IDX_QB, nq - q0);
        const size_t s0 = (size_t)ds * seg, s1 = RETRLM__MIN(ix->n, s0 + seg);
        float *C = mm ? (float *)retrlm__alloc((size_t)qm * RETRLM__IDX_NB, sizeof(float)) : NULL;
        float *xn = l2 && mm ? (float *)retrlm__alloc(RETRLM__IDX_NB, sizeof(float)) : NULL;
        float *X = widen ? (float *)retrlm__alloc(RETRLM__IDX_NB, (size_t)d * sizeof(float)) : NULL;
        float buf[RETRLM__IDX_NB];
        size_t b;
        int i, j;
        if ((mm && !C) || (l2 && mm && !xn) || (widen && !X)) {
            fail = 1; // benign race: every writer stores 1
            RETRLM_FREE(C);
            RETRLM_FREE(xn);
            RETRLM_FREE(X);
            continue;
        }
        for (b = s0; b < s1; b += RETRLM__IDX_NB) {
            const int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_NB, s1 - b);
            const int64_t *bid = by_row ? NULL : ix->ids + b;
            const float *xb = ix->vectors ? ix->vectors + b * (size_t)d : NULL;
            if (sq8 && !widen) {
                for (i = 0; i < qm; i++) {
                    retrlm__qctx qc;
                    qc.q = NULL;
                    qc.t = qt + (size_t)(q0 + i) * (size_t)d;
                    qc.c0 = c0[q0 + i];
                    retrlm__score_rows(ix, &qc, b, m, buf);
                    retrlm__push_block(&h[(size_t)(q0 + i) * (size_t)dsegs + (size_t)ds], buf, m, bid, b);
                }
                continue;
            }
            if (widen) { // x = min + (code + 0.5) step, as the codes mean
                const uint8_t *cb = ix->codes + b * (size_t)d;
                for (i = 0; i < m; i++) {
                    const uint8_t *ci = cb + (size_t)i * (size_t)d;
                    float *xi = X + (size_t)i * (size_t)d;
                    for (j = 0; j < d; j++) xi[j] = ix->sq_min[j] + ((float)ci[j] + 0.5f) * ix->sq_step[j];
                }
                xb = X;
            }
            if (retrlm_matmul(C, Q + (size_t)q0 * (size_t)d, xb, NULL, qm, m, d, 0) != RETRLM_OK) {
                fail = 1;
                break;
            }
            if (l2) retrlm__sq_norms(xb, (size_t)m, d, xn);
            for (i = 0; i < qm; i++) {
                float *row = C + (size_t)i * (size_t)m;
                if (l2) { // |q - x|^2 = |q|^2 + |x|^2 - 2 q.x, never below 0
                    float qq = qn[q0 + i];
                    for (j = 0; j < m; j++) {
                        float dist = qq + xn[j] - 2.0f * row[j];
                        row[j] = dist > 0.0f ? -dist : -0.0f;
                    }
                }
                retrlm__push_block(&h[(size_t)(q0 + i) * (size_t)dsegs + (size_t)ds], row, m, bid, b);
            }
        }
        RETRLM_FREE(C);
        RETRLM_FREE(xn);
        RETRLM_FREE(X);
    }
    if (fail) goto done;
    RETRLM__PARALLEL_FOR_IF(nq > 16)
    for (qi = 0; qi < nq; qi++)
        if (retrlm__finish(ix, Q + (size_t)qi * (size_t)d, h + (size_t)qi * (size_t)dsegs, (int)dsegs, kk, k,
                           by_row, oid + (size_t)qi * (size_t)k, osc ? osc + (size_t)qi * (size_t)k : NULL))
            fail = 1;
done:
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(qn);
    RETRLM_FREE(qt);
    RETRLM_FREE(c0);
    return fail ? retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for a batch of %d queries", nq) : RETRLM_OK;
}

// IVF, many queries: list by list. Each probed list is read once for all the queries that
// probe it (f32: one small matrix multiply, queries x rows; SQ8: the row kernel on a list in
// cache), into one heap per (query, probe); the heaps of a query are then merged in probe
// order. Every heap is written by one thread, so the result does not depend on the threads.
static int retrlm__ivf_by_list(const retrlm_index *ix, const float *Q, int cm, const int64_t *probe,
                               int nprobe, int k, int kk, int by_row, int64_t *oid, float *osc) {
    const int d = ix->dim, L = ix->nlist, l2 = ix->metric == RETRLM_METRIC_L2;
    const int sq8 = ix->storage == RETRLM_STORAGE_SQ8, widen = sq8 && d <= 4096, mm = !sq8 || widen;
    const size_t slots = (size_t)cm * (size_t)nprobe;
    size_t *start = (size_t *)retrlm__calloc((size_t)L + 1, sizeof(size_t));
    size_t *who = (size_t *)retrlm__alloc(slots, sizeof(size_t)); // slot q * nprobe + p, by list
    int64_t *hid = (int64_t *)retrlm__alloc(slots, (size_t)kk * sizeof(int64_t));
    float *hsc = (float *)retrlm__alloc(slots, (size_t)kk * sizeof(float));
    retrlm_topk *h = (retrlm_topk *)retrlm__alloc(slots, sizeof(retrlm_topk));
    float *qn = l2 && mm ? (float *)retrlm__alloc((size_t)cm, sizeof(float)) : NULL;
    float *qt = sq8 ? (float *)retrlm__alloc((size_t)cm, (size_t)d * sizeof(float)) : NULL;
    float *c0 = sq8 ? (float *)retrlm__alloc((size_t)cm, sizeof(float)) : NULL;
    size_t sl;
    long l, qi;
    int fail = 0;
    if (!start || !who || !hid || !hsc || !h || (l2 && mm && !qn) || (sq8 && (!qt || !c0))) {
        fail = 1;
        goto done;
    }
    for (sl = 0; sl < slots; sl++) {
        retrlm_topk_init(&h[sl], kk, hid + sl * (size_t)kk, hsc + sl * (size_t)kk);
        if (probe[sl] >= 0) start[probe[sl] + 1]++; // -1: no list (NaN coarse scores)
    }
    for (l = 0; l < L; l++) start[l + 1] += start[l];
    for (sl = 0; sl < slots; sl++)
        if (probe[sl] >= 0) who[start[probe[sl]]++] = sl; // slots ascending within a list
    for (l = L; l > 0; l--) start[l] = start[l - 1];
    start[0] = 0;
    if (qn) retrlm__sq_norms(Q, (size_t)cm, d, qn);
    if (sq8)
        for (qi = 0; qi < cm; qi++) {
            retrlm__qctx qc;
            retrlm__prep(ix, Q + (size_t)qi * (size_t)d, qt + (size_t)qi * (size_t)d, &qc);
            c0[qi] = qc.c0;
        }
    RETRLM__PARALLEL_FOR
    for (l = 0; l < L; l++) {
        const size_t r0 = (size_t)ix->list_offsets[l], r1 = (size_t)ix->list_offsets[l + 1];
        const int mq = (int)(start[l + 1] - start[l]);
        float *A = NULL, *C = NULL, *xn = NULL, *X = NULL, buf[RETRLM__IDX_NB];
        size_t b;
        int i, j;
        if (!mq || r0 == r1) continue;
        if (mm) {
            A = (float *)retrlm__alloc((size_t)mq, (size_t)d * sizeof(float));
            C = (float *)retrlm__alloc((size_t)mq, RETRLM__IDX_NB * sizeof(float));
            xn = l2 ? (float *)retrlm__alloc(RETRLM__IDX_NB, sizeof(float)) : NULL;
            X = widen ? (float *)retrlm__alloc(RETRLM__IDX_NB, (size_t)d * sizeof(float)) : NULL;
            if (!A || !C || (l2 && !xn) || (widen && !X)) {
                fail = 1; // benign race: every writer stores 1
                RETRLM_FREE(A);
                RETRLM_FREE(C);
                RETRLM_FREE(xn);
                RETRLM_FREE(X);
                continue;
            }
            for (i = 0; i < mq; i++)
                memcpy(A + (size_t)i * (size_t)d, Q + (who[start[l] + (size_t)i] / (size_t)nprobe) * (size_t)d,
                       (size_t)d * sizeof(float));
        }
        for (b = r0; b < r1; b += RETRLM__IDX_NB) {
            const int m = (int)RETRLM__MIN((size_t)RETRLM__IDX_NB, r1 - b);
            const int64_t *bid = by_row ? NULL : ix->ids + b;
            const float *xb = ix->vectors ? ix->vectors + b * (size_t)d : NULL;
            if (!mm) {
                for (i = 0; i < mq; i++) {
                    const size_t slot = who[start[l] + (size_t)i], q = slot / (size_t)nprobe;
                    retrlm__qctx qc;
                    qc.q = NULL;
                    qc.t = qt + q * (size_t)d;
                    qc.c0 = c0[q];
                    retrlm__score_rows(ix, &qc, b, m, buf);
                    retrlm__push_block(&h[slot], buf, m, bid, b);
                }
                continue;
            }
            if (widen) { // x = min + (code + 0.5) step, as in the flat batch
                const uint8_t *cb = ix->codes + b * (size_t)d;
                for (i = 0; i < m; i++) {
                    const uint8_t *ci = cb + (size_t)i * (size_t)d;
                    float *xi = X + (size_t)i * (size_t)d;
                    for (j = 0; j < d; j++) xi[j] = ix->sq_min[j] + ((float)ci[j] + 0.5f) * ix->sq_step[j];
                }
                xb = X;
            }
            if (retrlm_matmul(C, A, xb, NULL, mq, m, d, 0) != RETRLM_OK) {
                fail = 1;
                break;
            }
            if (l2) retrlm__sq_norms(xb, (size_t)m, d, xn);
            for (i = 0; i < mq; i++) {
                const size_t slot = who[start[l] + (size_t)i];
                float *row = C + (size_t)i * (size_t)m;
                if (l2) {
                    float qq = qn[slot / (size_t)nprobe];
                    for (j = 0; j < m; j++) {
                        float dist = qq + xn[j] - 2.0f * row[j];
                        row[j] = dist > 0.0f ? -dist : -0.0f;
                    }
                }
                retrlm__push_block(&h[slot], row, m, bid, b);
            }
        }
        RETRLM_FREE(A);
        RETRLM_FREE(C);
        RETRLM_FREE(xn);
        RETRLM_FREE(X);
    }
    if (fail) goto done;
    RETRLM__PARALLEL_FOR
    for (qi = 0; qi < cm; qi++)
        if (retrlm__finish(ix, Q + (size_t)qi * (size_t)d, h + (size_t)qi * (size_t)nprobe, nprobe, kk, k, by_row,
                           oid + (size_t)qi * (size_t)k, osc ? osc + (size_t)qi * (size_t)k : NULL))
            fail = 1;
done:
    RETRLM_FREE(start);
    RETRLM_FREE(who);
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(h);
    RETRLM_FREE(qn);
    RETRLM_FREE(qt);
    RETRLM_FREE(c0);
    return fail;
}

// IVF: the nprobe best lists of each query (coarse scores through the matrix multiply), then
// the lists scanned: one query's lists in parallel, or several queries in parallel.
static retrlm_result retrlm__search_ivf(const retrlm_index *ix, const float *Q, int nq, int k,
                                        int kk, int by_row, int nprobe, int64_t *oid,
                                        float *osc) {
    const int d = ix->dim, L = ix->nlist, l2 = ix->metric == RETRLM_METRIC_L2;
    const int chunk = 1024;
    float *cs = (float *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)L * sizeof(float));
    int64_t *probe = (int64_t *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)nprobe * sizeof(int64_t));
    float *psc = (float *)retrlm__alloc((size_t)RETRLM__MIN(nq, chunk), (size_t)nprobe * sizeof(float));
    size_t *r0 = (size_t *)retrlm__alloc((size_t)nprobe, 2 * sizeof(size_t));
    retrlm_result res = RETRLM_OK;
    int c0, fail = 0;
    if (!cs || !probe || !psc || !r0) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
        goto done;
    }
    for (c0 = 0; c0 < nq && !res; c0 += chunk) {
        const int cm = RETRLM__MIN(chunk, nq - c0);
        long qi;
        if (cm >= 8) {
            if ((res = retrlm_matmul(cs, Q + (size_t)c0 * (size_t)d, ix->centroids, NULL, cm, L, d, 0)) != RETRLM_OK)
                break;
        } else { // a few queries: the row kernel on one thread, no parallel region to wake
            for (qi = 0; qi < cm; qi++) {
                const float *q = Q + (size_t)(c0 + qi) * (size_t)d, *rows[4];
                float *row = cs + (size_t)qi * (size_t)L, o[4];
                int c, rr;
                for (c = 0; c < L; c += 4) {
                    for (rr = 0; rr < 4; rr++) rows[rr] = ix->centroids + (size_t)(c + rr < L ? c + rr : c) * (size_t)d;
                    retrlm__ip4_f32(o, q, rows, d);
                    for (rr = 0; rr < 4 && c + rr < L; rr++) row[c + rr] = o[rr];
                }
            }
        }
        for (qi = 0; qi < cm; qi++) { // the probes, best first, ties to the lower list
            float *row = cs + (size_t)qi * (size_t)L;
            int c;
            if (l2)
                for (c = 0; c < L; c++) row[c] = 2.0f * row[c] - ix->cnorms_[c];
            int got = retrlm_topk_select(row, L, nprobe, probe + (size_t)qi * (size_t)nprobe,
                                         psc + (size_t)qi * (size_t)nprobe);
            for (; got < nprobe; got++) probe[(size_t)qi * (size_t)nprobe + (size_t)got] = -1; // NaN scores
        }
        if (cm == 1) {
            size_t *r1 = r0 + nprobe;
            int p;
            for (p = 0; p < nprobe; p++) { // a missing probe (-1) scans nothing
                r0[p] = probe[p] < 0 ? 0 : (size_t)ix->list_offsets[probe[p]];
                r1[p] = probe[p] < 0 ? 0 : (size_t)ix->list_offsets[probe[p] + 1];
            }
            res = retrlm__search_one(ix, Q + (size_t)c0 * (size_t)d, k, kk, by_row, r0, r1, nprobe,
                                     oid + (size_t)c0 * (size_t)k, osc ? osc + (size_t)c0 * (size_t)k : NULL);
            continue;
        }
        if (cm >= 8) {
            if (retrlm__ivf_by_list(ix, Q + (size_t)c0 * (size_t)d, cm, probe, nprobe, k, kk, by_row,
                                    oid + (size_t)c0 * (size_t)k, osc ? osc + (size_t)c0 * (size_t)k : NULL))
                res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for a batch of %d queries", cm);
            continue;
        }
        RETRLM__PARALLEL_FOR
        for (qi = 0; qi < cm; qi++) {
            const float *q = Q + (size_t)(c0 + qi) * (size_t)d;
            int64_t *hi = (int64_t *)retrlm__alloc((size_t)kk, sizeof(int64_t));
            float *hs = (float *)retrlm__alloc((size_t)kk, sizeof(float));
            float *t = (float *)retrlm__alloc((size_t)d, sizeof(float));
            retrlm_topk h;
            retrlm__qctx qc;
            int p;
            if (hi && hs && t) {
                retrlm_topk_init(&h, kk, hi, hs);
                retrlm__prep(ix, q, t, &qc);
                for (p = 0; p < nprobe; p++) {
                    int64_t l = probe[(size_t)qi * (size_t)nprobe + (size_t)p];
                    if (l < 0) continue;
                    retrlm__scan(ix, &qc, (size_t)ix->list_offsets[l], (size_t)ix->list_offsets[l + 1], &h, by_row);
                }
                if (retrlm__finish(ix, q, &h, 1, kk, k, by_row, oid + (size_t)(c0 + qi) * (size_t)k,
                                   osc ? osc + (size_t)(c0 + qi) * (size_t)k : NULL))
                    fail = 1;
            } else
                fail = 1;
            RETRLM_FREE(hi);
            RETRLM_FREE(hs);
            RETRLM_FREE(t);
        }
        if (fail) res = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
    }
done:
    RETRLM_FREE(cs);
    RETRLM_FREE(probe);
    RETRLM_FREE(psc);
    RETRLM_FREE(r0);
    return res;
}

RETRLM_API retrlm_result retrlm_index_search(const retrlm_index *ix, const float *queries,
                                             int nq, int dim, int k,
                                             const retrlm_search_params *params,
                                             int64_t *out_ids, float *out_scores) {
    const int d = ix ? ix->dim : 0;
    int nprobe, rr, by_row, kk, qi;
    float *qn = NULL;
    const float *Q = queries;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    if (dim != d) return retrlm__fail(RETRLM_ERR_ARG, "index search: queries of dim %d, the index has dim %d", dim, d);
    if (nq < 0) return retrlm__fail(RETRLM_ERR_ARG, "index search: nq = %d", nq);
    if (k <= 0 || k > (1 << 24)) return retrlm__fail(RETRLM_ERR_ARG, "index search: k = %d, expected 1..%d", k, 1 << 24);
    if (nq == 0) return RETRLM_OK;
    if (!out_ids) return retrlm__fail(RETRLM_ERR_ARG, "index search: NULL out_ids");
    if ((r = retrlm__check_vectors("index search", queries, (size_t)nq, dim)) != RETRLM_OK) return r;
    nprobe = params && params->nprobe > 0 ? params->nprobe : ix->nprobe;
    nprobe = RETRLM__MAX(1, RETRLM__MIN(nprobe, ix->nlist));
    rr = params && params->rerank ? params->rerank : ix->rerank;
    by_row = ix->storage == RETRLM_STORAGE_SQ8 && rr > 0 && ix->vectors != NULL;
    kk = k;
    if (by_row) {
        if ((size_t)rr * (size_t)k > (size_t)1 << 26)
            return retrlm__fail(RETRLM_ERR_ARG, "index search: rerank %d * k %d is too many candidates", rr, k);
        kk = rr * k;
    }
    if ((size_t)kk > ix->n) kk = (int)ix->n; // no heap needs to hold more than there is
    if (ix->n == 0 || !ix->trained) { // nothing to find
        for (qi = 0; qi < nq; qi++)
            retrlm__pad(ix, 0, k, out_ids + (size_t)qi * (size_t)k, out_scores ? out_scores + (size_t)qi * (size_t)k : NULL);
        return RETRLM_OK;
    }
    if (ix->metric == RETRLM_METRIC_COSINE) {
        qn = (float *)retrlm__alloc((size_t)nq, (size_t)d * sizeof(float));
        if (!qn) return retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory for %d queries", nq);
        memcpy(qn, queries, (size_t)nq * (size_t)d * sizeof(float));
        for (qi = 0; qi < nq; qi++) retrlm__normalize(qn + (size_t)qi * (size_t)d, d);
        Q = qn;
    }
    if (ix->nlist) {
        r = retrlm__search_ivf(ix, Q, nq, k, kk, by_row, nprobe, out_ids, out_scores);
    } else if (nq == 1) {
        size_t nseg = (ix->n + RETRLM__IDX_SEG - 1) / RETRLM__IDX_SEG, s;
        size_t *r0 = (size_t *)retrlm__alloc(nseg, 2 * sizeof(size_t));
        if (!r0) r = retrlm__fail(RETRLM_ERR_NOMEM, "index search: no memory");
        else {
            for (s = 0; s < nseg; s++) {
                r0[s] = s * RETRLM__IDX_SEG;
                r0[nseg + s] = RETRLM__MIN(ix->n, r0[s] + RETRLM__IDX_SEG);
            }
            r = retrlm__search_one(ix, Q, k, kk, by_row, r0, r0 + nseg, (int)nseg, out_ids, out_scores);
            RETRLM_FREE(r0);
        }
    } else {
        for (qi = 0, r = RETRLM_OK; qi < nq && !r; qi += 8192) // bounded scratch for any nq
            r = retrlm__search_flat_batch(ix, Q + (size_t)qi * (size_t)d, RETRLM__MIN(8192, nq - qi), k, kk, by_row,
                                          out_ids + (size_t)qi * (size_t)k,
                                          out_scores ? out_scores + (size_t)qi * (size_t)k : NULL);
    }
    RETRLM_FREE(qn);
    return r;
}

// ---------------------------------------------------------------------------------------------
// persistence: kind "index"; sections meta (u64), ids (i64), vectors (f32), codes (u8),
// sq_min / sq_step (f32), centroids (f32), list_offsets (u64)

#define RETRLM__IDX_META 10 // format, dim, metric, storage, nlist, nprobe, rerank, trained, n, next_id

static retrlm_result retrlm__index_writer(const retrlm_index *ix, retrlm_writer *w) {
    uint64_t meta[RETRLM__IDX_META];
    size_t nd = ix->n * (size_t)ix->dim;
    retrlm_result r;
    meta[0] = RETRLM__IDX_FORMAT;
    meta[1] = (uint64_t)ix->dim;
    meta[2] = (uint64_t)ix->metric;
    meta[3] = (uint64_t)ix->storage;
    meta[4] = (uint64_t)ix->nlist;
    meta[5] = (uint64_t)ix->nprobe;
    meta[6] = (uint64_t)ix->rerank;
    meta[7] = (uint64_t)ix->trained;
    meta[8] = (uint64_t)ix->n;
    meta[9] = (uint64_t)ix->next_id;
    if ((r = retrlm_writer_init(w, "index")) != RETRLM_OK) return r;
    if ((r = retrlm_writer_add_copy(w, "meta", RETRLM_DTYPE_U64, meta, RETRLM__IDX_META)) != RETRLM_OK) return r;
    if ((r = retrlm_writer_add(w, "ids", RETRLM_DTYPE_I64, ix->ids, ix->n)) != RETRLM_OK) return r;
    if (ix->vectors && (r = retrlm_writer_add(w, "vectors", RETRLM_DTYPE_F32, ix->vectors, nd)) != RETRLM_OK) return r;
    if (ix->codes && (r = retrlm_writer_add(w, "codes", RETRLM_DTYPE_U8, ix->codes, nd)) != RETRLM_OK) return r;
    if (ix->sq_min) {
        if ((r = retrlm_writer_add(w, "sq_min", RETRLM_DTYPE_F32, ix->sq_min, (size_t)ix->dim)) != RETRLM_OK) return r;
        if ((r = retrlm_writer_add(w, "sq_step", RETRLM_DTYPE_F32, ix->sq_step, (size_t)ix->dim)) != RETRLM_OK) return r;
    }
    if (ix->centroids) {
        if ((r = retrlm_writer_add(w, "centroids", RETRLM_DTYPE_F32, ix->centroids, (size_t)ix->nlist * (size_t)ix->dim)) != RETRLM_OK)
            return r;
        if ((r = retrlm_writer_add(w, "list_offsets", RETRLM_DTYPE_U64, ix->list_offsets, (size_t)ix->nlist + 1)) != RETRLM_OK)
            return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_save_memory(const retrlm_index *ix, void *buf, size_t cap,
                                                  size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(ix && size);
    memset(&w, 0, sizeof w);
    if ((r = retrlm__index_writer(ix, &w)) == RETRLM_OK) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// A section of exactly count elements (count 0: absent or empty); *p NULL when empty.
static retrlm_result retrlm__index_section(const retrlm_reader *rd, const char *name, retrlm_dtype type,
                                           size_t count, const void **p) {
    size_t got = 0;
    retrlm_result r = retrlm_reader_get(rd, name, type, p, &got);
    if (r == RETRLM_ERR_NOT_FOUND && count == 0) {
        *p = NULL;
        return RETRLM_OK;
    }
    if (r) return r;
    if (got != count)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: section '%s' has %lu elements, expected %lu", name,
                            (unsigned long)got, (unsigned long)count);
    return RETRLM_OK;
}

// Takes over an open reader: checks every section against the others, then points into it.
static retrlm_result retrlm__index_from_reader(retrlm_index *ix, retrlm_reader *rd) {
    uint64_t meta[RETRLM__IDX_META];
    const void *ids, *vec, *codes, *mn, *st, *cen, *off;
    size_t n, d, nd, i, L;
    int keep, sq8;
    retrlm_result r;
    retrlm_index_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if ((r = retrlm_reader_read(rd, "meta", RETRLM_DTYPE_U64, meta, RETRLM__IDX_META)) != RETRLM_OK) return r;
    if (meta[0] != RETRLM__IDX_FORMAT)
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "index load: index format %llu, this build reads %d",
                            (unsigned long long)meta[0], RETRLM__IDX_FORMAT);
    if (meta[1] < 1 || meta[1] > RETRLM__IDX_MAX_DIM || meta[2] > 2 || meta[3] > 1 ||
        meta[4] > RETRLM__IDX_MAX_NLIST || meta[5] < 1 || meta[5] > RETRLM__IDX_MAX_NLIST ||
        meta[6] > 65536 || meta[7] > 1 || meta[8] > ((uint64_t)1 << 48) || meta[9] > (uint64_t)INT64_MAX)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: section 'meta' holds values out of range");
    cfg.dim = (int)meta[1];
    cfg.metric = (retrlm_metric)meta[2];
    cfg.storage = (retrlm_storage)meta[3];
    cfg.nlist = (int)meta[4];
    cfg.nprobe = (int)meta[5];
    cfg.rerank = (int)meta[6];
    if ((r = retrlm_index_init(ix, &cfg)) != RETRLM_OK) return r;
    if ((uint64_t)ix->rerank != meta[6])
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: rerank set on an f32 index");
    ix->trained = (int)meta[7];
    n = (size_t)meta[8];
    d = (size_t)ix->dim;
    L = (size_t)ix->nlist;
    sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    keep = retrlm__keeps_f32(ix);
    if (ix->nlist == 0 && !sq8 && !ix->trained)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: a flat f32 index is always trained");
    if (!ix->trained && n)
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: an untrained index holds %lu vectors", (unsigned long)n);
    if (retrlm__mul_overflows(n, d * sizeof(float), &nd))
        return retrlm__fail(RETRLM_ERR_FORMAT, "index load: %lu vectors of dim %lu overflow", (unsigned long)n, (unsigned long)d);
    nd = n * d;
    if ((r = retrlm__index_section(rd, "ids", RETRLM_DTYPE_I64, n, &ids)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "vectors", RETRLM_DTYPE_F32, keep ? nd : 0, &vec)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "codes", RETRLM_DTYPE_U8, sq8 ? nd : 0, &codes)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "sq_min", RETRLM_DTYPE_F32, sq8 && ix->trained ? d : 0, &mn)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "sq_step", RETRLM_DTYPE_F32, sq8 && ix->trained ? d : 0, &st)) != RETRLM_OK) return r;
    if ((r = retrlm__index_section(rd, "centroids", RETRLM_DTYPE_F32, L && ix->trained ? L * d : 0, &cen)) != RETRLM_OK)
        return r;
    if ((r = retrlm__index_section(rd, "list_offsets", RETRLM_DTYPE_U64, L && ix->trained ? L + 1 : 0, &off)) != RETRLM_OK)
        return r;
    for (i = 0; i < n; i++) {
        int64_t id = ((const int64_t *)ids)[i];
        if (id < 0 || (uint64_t)id >= meta[9])
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: id %lld at row %lu is outside 0..next_id %llu",
                                (long long)id, (unsigned long)i, (unsigned long long)meta[9]);
    }
    if (mn) {
        for (i = 0; i < d; i++) {
            float a = ((const float *)mn)[i], s = ((const float *)st)[i];
            if (a - a != 0.0f || s - s != 0.0f || s < 0.0f)
                return retrlm__fail(RETRLM_ERR_FORMAT, "index load: SQ8 range of dimension %lu is not finite", (unsigned long)i);
        }
    }
    if (cen) {
        size_t bad;
        const uint64_t *o = (const uint64_t *)off;
        if (!retrlm__all_finite((const float *)cen, L * d, &bad))
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: centroid %lu is not finite", (unsigned long)(bad / d));
        if (o[0] != 0 || o[L] != (uint64_t)n)
            return retrlm__fail(RETRLM_ERR_FORMAT, "index load: list offsets run from %llu to %llu, expected 0 to %lu",
                                (unsigned long long)o[0], (unsigned long long)o[L], (unsigned long)n);
        for (i = 0; i < L; i++)
            if (o[i + 1] < o[i])
                return retrlm__fail(RETRLM_ERR_FORMAT, "index load: list %lu ends before it starts", (unsigned long)i);
    }
    ix->n = n;
    ix->next_id = (int64_t)meta[9];
    ix->ids = (const int64_t *)ids;
    ix->vectors = (const float *)vec;
    ix->codes = (const uint8_t *)codes;
    ix->sq_min = (const float *)mn;
    ix->sq_step = (const float *)st;
    ix->centroids = (const float *)cen;
    ix->list_offsets = (const uint64_t *)off;
    ix->reader_ = *rd;
    ix->borrowed_ = 1;
    memset(rd, 0, sizeof *rd);
    if ((r = retrlm__set_cnorms(ix)) != RETRLM_OK) return r;
    // an IVF without lists (untrained) still needs offsets to own later: train allocates them
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_index_load_memory(retrlm_index *ix, const void *data,
                                                  size_t size) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm_reader_open_memory(&rd, data, size, "index", 0)) != RETRLM_OK) return r;
    r = retrlm__index_from_reader(ix, &rd);
    retrlm_reader_close(&rd); // a no-op once the index took it over
    if (r) retrlm_index_free(ix);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_index_save(const retrlm_index *ix, const char *path) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(&w, 0, sizeof w);
    if ((r = retrlm__index_writer(ix, &w)) == RETRLM_OK) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_index_load(retrlm_index *ix, const char *path) {
    retrlm_reader rd;
    retrlm_result r;
    RETRLM_ASSERT(ix);
    memset(ix, 0, sizeof *ix);
    if ((r = retrlm_reader_open(&rd, path, "index", 0)) != RETRLM_OK) return r;
    r = retrlm__index_from_reader(ix, &rd);
    retrlm_reader_close(&rd);
    if (r) retrlm_index_free(ix);
    return r;
}
#endif

// ---------------------------------------------------------------------------------------------
// interchange: .fvecs / .ivecs and .npy

static void retrlm__copy_le32(void *dst, const unsigned char *src, size_t count) {
    size_t i;
    if (retrlm__host_is_le()) {
        memcpy(dst, src, count * 4);
        return;
    }
    for (i = 0; i < count; i++) ((uint32_t *)dst)[i] = retrlm__get_u32(src + 4 * i);
}

// .fvecs and .ivecs share the layout: elements are 4 bytes either way
static retrlm_result retrlm__vecs_parse(const char *what, const void *data, size_t size,
                                        void **out, size_t *n, int *dim) {
    const unsigned char *p = (const unsigned char *)data;
    size_t rec, i, count;
    uint32_t d0;
    unsigned char *o;
    *out = NULL;
    *n = 0;
    *dim = 0;
    if (size == 0) return RETRLM_OK;
    if (!data || size < 4) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu bytes, too short for a vector", what, (unsigned long)size);
    d0 = retrlm__get_u32(p);
    if (d0 < 1 || d0 > RETRLM__IDX_MAX_DIM)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: first vector has dimension %ld, expected 1..%d", what,
                            (long)(int32_t)d0, RETRLM__IDX_MAX_DIM);
    rec = 4 + 4 * (size_t)d0;
    if (size % rec)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu bytes is not a whole number of %lu-byte records (dim %lu)", what,
                            (unsigned long)size, (unsigned long)rec, (unsigned long)d0);
    count = size / rec;
    for (i = 0; i < count; i++)
        if (retrlm__get_u32(p + i * rec) != d0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: vector %lu has dimension %ld, the first has %lu", what,
                                (unsigned long)i, (long)(int32_t)retrlm__get_u32(p + i * rec), (unsigned long)d0);
    o = (unsigned char *)retrlm__alloc(count, 4 * (size_t)d0);
    if (!o) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu vectors", what, (unsigned long)count);
    for (i = 0; i < count; i++) retrlm__copy_le32(o + i * 4 * (size_t)d0, p + i * rec + 4, d0);
    *out = o;
    *n = count;
    *dim = (int)d0;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_fvecs_read_memory(const void *data, size_t size, float **out,
                                                  size_t *n, int *dim) {
    void *o;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    r = retrlm__vecs_parse(".fvecs", data, size, &o, n, dim);
    *out = (float *)o;
    return r;
}

// .npy: "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 for 2.x and 3.x), then a
// Python dict literal with 'descr', 'fortran_order' and 'shape'; the data follow the header.
static const char *retrlm__npy_ws(const char *s, const char *e) {
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    return s;
}

// a quoted string at s into buf (cap); returns the position after it or NULL
static const char *retrlm__npy_str(const char *s, const char *e, char *buf, size_t cap) {
    char q;
    size_t k = 0;
    if (s >= e || (*s != '\'' && *s != '"')) return NULL;
    q = *s++;
    while (s < e && *s != q) {
        if (k + 1 >= cap) return NULL;
        buf[k++] = *s++;
    }
    if (s >= e) return NULL;
    buf[k] = '\0';
    return s + 1;
}

RETRLM_API retrlm_result retrlm_npy_read_memory(const void *data, size_t size, float **out,
                                                size_t *n, int *dim) {
    const unsigned char *p = (const unsigned char *)data;
    const char *s, *e;
    size_t hlen, hstart, dims[2] = {0, 0}, nd = 0, count = 0, bytes = 0;
    int major, have_descr = 0, have_order = 0, have_shape = 0;
    char key[32], val[32];
    float *o;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    *n = 0;
    *dim = 0;
    if (!data || size < 10 || memcmp(p, "\x93NUMPY", 6))
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: not a .npy file (bad magic)");
    major = p[6];
    if (major == 1) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: truncated header");
        hlen = (size_t)retrlm__get_u32(p + 8);
        hstart = 12;
    } else {
        return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: format version %d.%d, expected 1.0 to 3.0", major, p[7]);
    }
    if (hlen > size - hstart) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header of %lu bytes runs past the end", (unsigned long)hlen);
    s = (const char *)p + hstart;
    e = s + hlen;
    s = retrlm__npy_ws(s, e);
    if (s >= e || *s != '{') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header is not a dict");
    s++;
    for (;;) {
        s = retrlm__npy_ws(s, e);
        if (s < e && *s == '}') break;
        if (!(s = retrlm__npy_str(s, e, key, sizeof key))) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected a key");
        s = retrlm__npy_ws(s, e);
        if (s >= e || *s != ':') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected ':' after '%s'", key);
        s = retrlm__npy_ws(s + 1, e);
        if (!strcmp(key, "descr")) {
            if (!(s = retrlm__npy_str(s, e, val, sizeof val))) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'descr'");
            if (strcmp(val, "<f4") && !(retrlm__host_is_le() && !strcmp(val, "=f4")))
                return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: dtype '%s', only little-endian float32 ('<f4') is read", val);
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if ((size_t)(e - s) >= 5 && !memcmp(s, "False", 5)) s += 5;
            else if ((size_t)(e - s) >= 4 && !memcmp(s, "True", 4))
                return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: Fortran order; save a C-ordered array");
            else return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'fortran_order'");
            have_order = 1;
        } else if (!strcmp(key, "shape")) {
            if (s >= e || *s != '(') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
            s++;
            for (;;) {
                size_t v = 0;
                int digits = 0;
                s = retrlm__npy_ws(s, e);
                if (s < e && *s == ')') break;
                while (s < e && *s >= '0' && *s <= '9') {
                    if (v > (SIZE_MAX - 9) / 10) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape too large");
                    v = v * 10 + (size_t)(*s++ - '0');
                    digits++;
                }
                if (!digits) return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
                if (nd == 2) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: more than 2 dimensions; expected (n, dim)");
                dims[nd++] = v;
                s = retrlm__npy_ws(s, e);
                if (s < e && *s == ',') s++;
                else if (s >= e || *s != ')') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: bad 'shape'");
            }
            s++;
            if (nd != 2) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, ".npy: %lu dimensions; expected a 2-D array (n, dim)", (unsigned long)nd);
            have_shape = 1;
        } else {
            return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: unknown key '%s'", key);
        }
        s = retrlm__npy_ws(s, e);
        if (s < e && *s == ',') s++;
        else if (s >= e || *s != '}') return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header: expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape)
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: header lacks 'descr', 'fortran_order' or 'shape'");
    if (dims[1] > RETRLM__IDX_MAX_DIM || (dims[1] == 0 && dims[0] != 0))
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape (%lu, %lu): dim must be 1..%d", (unsigned long)dims[0],
                            (unsigned long)dims[1], RETRLM__IDX_MAX_DIM);
    if (retrlm__mul_overflows(dims[0], dims[1], &count) || retrlm__mul_overflows(count, 4, &bytes) ||
        bytes != size - hstart - hlen)
        return retrlm__fail(RETRLM_ERR_FORMAT, ".npy: shape (%lu, %lu) needs %lu data bytes, the file has %lu",
                            (unsigned long)dims[0], (unsigned long)dims[1], (unsigned long)bytes,
                            (unsigned long)(size - hstart - hlen));
    if (count == 0) return RETRLM_OK;
    o = (float *)retrlm__alloc(count, sizeof(float));
    if (!o) return retrlm__fail(RETRLM_ERR_NOMEM, ".npy: no memory for %lu values", (unsigned long)count);
    retrlm__copy_le32(o, p + hstart + hlen, count);
    *out = o;
    *n = dims[0];
    *dim = (int)dims[1];
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
// the whole regular file at path (io.c's reader, which also refuses directories and FIFOs)
static retrlm_result retrlm__slurp(const char *path, unsigned char **buf, size_t *size) {
    char *d;
    retrlm_result r = retrlm__read_file(path, &d, size);
    *buf = (unsigned char *)d;
    return r;
}

// writes n records of dim 4-byte elements, each after its int32 dim (header NULL: .npy data)
typedef struct retrlm__vecs_out {
    const void *head, *x;
    size_t head_bytes, n;
    int dim, per_record_dim;
} retrlm__vecs_out;

static retrlm_result retrlm__vecs_emit(const void *ctx, retrlm__sink *sink) {
    const retrlm__vecs_out *o = (const retrlm__vecs_out *)ctx;
    unsigned char *buf;
    size_t i, rb = 4 * (size_t)o->dim + (o->per_record_dim ? 4 : 0), per = 65536 / rb + 1, used = 0;
    int bad = 0;
    if (!(buf = (unsigned char *)retrlm__alloc(per, rb))) return retrlm__fail(RETRLM_ERR_NOMEM, "write: no memory");
    if (o->head_bytes) bad = retrlm__sink_put(sink, o->head, o->head_bytes);
    for (i = 0; i < o->n && !bad; i++) { // records gathered into about 64 KiB a write
        const unsigned char *src = (const unsigned char *)o->x + i * 4 * (size_t)o->dim;
        unsigned char *dst = buf + used * rb;
        int j;
        if (o->per_record_dim) {
            retrlm__put_u32(dst, (uint32_t)o->dim);
            dst += 4;
        }
        for (j = 0; j < o->dim; j++) {
            uint32_t v;
            memcpy(&v, src + 4 * (size_t)j, 4);
            retrlm__put_u32(dst + 4 * (size_t)j, v);
        }
        if (++used == per || i + 1 == o->n) bad = retrlm__sink_put(sink, buf, used * rb), used = 0;
    }
    RETRLM_FREE(buf);
    return bad ? RETRLM_ERR_IO : RETRLM_OK;
}

// a header and n records of dim little-endian 32-bit values (each after its dim when
// per_record_dim), saved atomically
static retrlm_result retrlm__write_file(const char *path, const void *head, size_t head_bytes,
                                        const void *x, size_t n, int dim, int per_record_dim) {
    retrlm__vecs_out o;
    if (!path || dim <= 0 || (n && !x)) return retrlm__fail(RETRLM_ERR_ARG, "write: bad arguments (dim %d)", dim);
    o.head = head, o.head_bytes = head_bytes, o.x = x, o.n = n, o.dim = dim, o.per_record_dim = per_record_dim;
    return retrlm__save_atomic(path, retrlm__vecs_emit, &o);
}

// the file's bytes through a parser of vectors in memory
static retrlm_result retrlm__read_vectors(const char *path, float **out, size_t *n, int *dim,
                                          retrlm_result (*parse)(const void *, size_t, float **, size_t *, int *)) {
    unsigned char *buf;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = parse(buf, size, out, n, dim);
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_fvecs_read(const char *path, float **out, size_t *n, int *dim) {
    return retrlm__read_vectors(path, out, n, dim, retrlm_fvecs_read_memory);
}

RETRLM_API retrlm_result retrlm_ivecs_read(const char *path, int32_t **out, size_t *n, int *dim) {
    unsigned char *buf;
    void *o = NULL;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = retrlm__vecs_parse(".ivecs", buf, size, &o, n, dim);
    *out = (int32_t *)o;
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_fvecs_write(const char *path, const float *x, size_t n, int dim) {
    return retrlm__write_file(path, NULL, 0, x, n, dim, 1);
}

RETRLM_API retrlm_result retrlm_ivecs_write(const char *path, const int32_t *x, size_t n, int dim) {
    return retrlm__write_file(path, NULL, 0, x, n, dim, 1);
}

RETRLM_API retrlm_result retrlm_npy_read(const char *path, float **out, size_t *n, int *dim) {
    return retrlm__read_vectors(path, out, n, dim, retrlm_npy_read_memory);
}

RETRLM_API retrlm_result retrlm_npy_write(const char *path, const float *x, size_t n, int dim) {
    char head[128];
    int len, total;
    if (dim <= 0) return retrlm__fail(RETRLM_ERR_ARG, ".npy write: dim %d", dim);
    len = snprintf(head + 10, sizeof head - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lu, %d), }",
                   (unsigned long)n, dim);
    total = (10 + len + 1 + 63) / 64 * 64; // the data start 64-byte aligned, header ends in '\n'
    memset(head + 10 + len, ' ', (size_t)(total - 10 - len));
    head[total - 1] = '\n';
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)((total - 10) & 0xFF);
    head[9] = (char)((total - 10) >> 8);
    return retrlm__write_file(path, head, (size_t)total, x, n, dim, 0);
}
#endif
/* ---- retrlm_impl/model.c ---- */

// ---------------------------------------------------------------------------------------------
// model: the transformer. Layout of the two private blocks (Nm = max_batch * max_seq_len):
//   rope_: cos, sin (max_seq_len, hd/2)
//   acts_: resid (L+1, Nm, D) | L layers, each ln1 (Nm,D) rstd1 (Nm) q k v (Nm,D)
//          att (max_batch,H,max_seq,max_seq) atty mid ln2 (Nm,D) rstd2 (Nm) gate up act (Nm,F) |
//          lnf (Nm,D) rstdf (Nm) tokloss (Nm) | logits (Nm,V)
//          An inference-only model has 2 resid slots (layer l reads slot l % 2 and writes the
//          other) and 1 layer slot, and allocates acts_ at its first forward.
//   work_: backward dx dln datty dq dk dv dtmp (Nm,D) dact dgate (Nm,F) datt (as att), empty in
//          an inference-only model | decode kcache vcache (L, max_seq, D), x xn q y o hid (D),
//          gate up (F), att (H, max_seq), logits probs scores (V)
//   mmws_: the matmuls' packing buffers (retrlm__matmul_ws), so that forward never allocates.
// A forward of B x T tokens uses the first B*T rows of every (Nm, .) slot. Every block is 64-byte
// aligned and every array in it starts on a cache line (sizes rounded up to 16 floats): threads
// that write neighbouring arrays, or neighbouring heads of one row, never share a line.
// This file owns the transformer: config, allocation, forward, backward, AdamW, LM training and
// generation. Its files are checkpoint.c (the container format) and safetensors.c; the
// bi-encoder built on it is encoder.c.

// Parallel regions cost a barrier each, and on a shared machine a barrier can wait a whole
// scheduler slice for a starved thread (DESIGN.md 3): cheap element-wise loops stay serial
// unless they are big; attention, the loss and the matmuls carry the parallelism.
#define RETRLM__PAR_ELEMS ((size_t)1 << 21)

typedef struct retrlm__acts {
    float *ln1, *rstd1, *q, *k, *v, *att, *atty, *mid, *ln2, *rstd2, *gate, *up, *act;
} retrlm__acts;

typedef struct retrlm__work {
    float *dx, *dln, *datty, *dq, *dk, *dv, *dtmp, *dact, *dgate, *datt;
    float *kc, *vc, *x, *xn, *q, *y, *o, *hid, *gate, *up, *att, *logits, *probs, *scores;
} retrlm__work;

// RETRO: the number of cross-attention layers of a resolved config, and the index among them of
// decoder layer l (-1 if l has none)
static int retrlm__retro_slot(const retrlm_model_config *c, int l) {
    if (!c->retro_chunk || l < c->retro_start || (l - c->retro_start) % c->retro_every) return -1;
    return (l - c->retro_start) / c->retro_every;
}
static int retrlm__retro_count(const retrlm_model_config *c) {
    return c->retro_chunk ? (c->n_layers - 1 - c->retro_start) / c->retro_every + 1 : 0;
}

// RETRO's private block, retro_ (R cross-attention layers, Nm = max_batch * max_seq_len, S =
// max_batch * (max_seq_len / m) * k neighbour slots, Nn = S * r neighbour tokens, KR = k * r):
//   R layers, each ln (Nm,D) rstd (Nm) q (Nm,D) k v (Nn,D) att (Nm,H,KR) y out (Nm,D) |
//   backward dE (Nn,De) dk dv (Nn,D) datt (Nm,H,KR) | decode kc vc (R,KR,D) att (H,KR)
// and retro_ints_: neighbour tokens (Nn), slot -> encoder row (S), row lengths (S), decode's
// slot -> row (k) and row lengths (k). Keys and values are stored by encoder row: row i's token
// j at (i * r + j) * D; only the present neighbours are encoded, one row each.
typedef struct retrlm__racts {
    float *ln, *rstd, *q, *k, *v, *att, *y, *out;
    float *ks; // smeared keys (retro_smear; k holds the unsmeared ones)
} retrlm__racts;
typedef struct retrlm__rwork {
    float *dE, *dk, *dv, *datt, *kc, *vc, *att;
} retrlm__rwork;

static size_t retrlm__retro_slots(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)(c->max_seq_len / c->retro_chunk) * (size_t)c->retro_k;
}

// lays out layer slot `slot`'s activations (a) and the work (w) from base; returns the floats
// of the whole block (base may be NULL for the size only)
static size_t retrlm__retro_layout(const retrlm_model_config *c, float *base, int slot,
                                   retrlm__racts *a, retrlm__rwork *w) {
    size_t nm = (size_t)c->max_batch * (size_t)c->max_seq_len, d = (size_t)c->dim;
    size_t nn = retrlm__retro_slots(c) * (size_t)c->retro_len;
    size_t kr = (size_t)c->retro_k * (size_t)c->retro_len, hkr = (size_t)c->n_heads * kr;
    size_t layer = 5 * retrlm__round16(nm * d) + retrlm__round16(nm) +
                   (c->retro_smear ? 3 : 2) * retrlm__round16(nn * d) + retrlm__round16(nm * hkr);
    size_t R = (size_t)retrlm__retro_count(c), off = R * layer;
    retrlm__racts ta;
    retrlm__rwork tw;
    if (!a) a = &ta;
    if (!w) w = &tw;
#define RETRLM__TAKE(s, field, n) ((s)->field = base ? base + off : NULL, off += retrlm__round16(n))
    off = (size_t)(slot > 0 ? slot : 0) * layer;
    RETRLM__TAKE(a, ln, nm * d);
    RETRLM__TAKE(a, rstd, nm);
    RETRLM__TAKE(a, q, nm * d);
    RETRLM__TAKE(a, k, nn * d);
    RETRLM__TAKE(a, v, nn * d);
    RETRLM__TAKE(a, att, nm * hkr);
    RETRLM__TAKE(a, y, nm * d);
    RETRLM__TAKE(a, out, nm * d);
    RETRLM__TAKE(a, ks, c->retro_smear ? nn * d : 0);
    off = R * layer;
    RETRLM__TAKE(w, dE, nn * (size_t)c->retro_enc_dim);
    RETRLM__TAKE(w, dk, nn * d);
    RETRLM__TAKE(w, dv, nn * d);
    RETRLM__TAKE(w, datt, nm * hkr);
    RETRLM__TAKE(w, kc, R * kr * d);
    RETRLM__TAKE(w, vc, R * kr * d);
    RETRLM__TAKE(w, att, hkr);
#undef RETRLM__TAKE
    return off;
}

static size_t retrlm__nmax(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->max_seq_len;
}

static size_t retrlm__att_size(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->n_heads * (size_t)c->max_seq_len *
           (size_t)c->max_seq_len;
}

static size_t retrlm__rope_floats(const retrlm_model_config *c) {
    return retrlm__round16((size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2));
}

// slots of the residual stream and of the per-layer activations in acts_
static int retrlm__resid_slots(const retrlm_model_config *c) {
    return c->inference ? 2 : c->n_layers + 1;
}
static int retrlm__layer_slots(const retrlm_model_config *c) {
    return c->inference ? 1 : c->n_layers;
}

static size_t retrlm__layer_stride(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    return 7 * retrlm__round16(nm * d) + 2 * retrlm__round16(nm) + 3 * retrlm__round16(nm * f) +
           retrlm__round16(retrlm__att_size(c));
}

static float *retrlm__rope_cos(const retrlm_model *m) { return m->rope_; }
static float *retrlm__rope_sin(const retrlm_model *m) {
    return m->rope_ + retrlm__rope_floats(&m->config);
}
static float *retrlm__resid(const retrlm_model *m, int l) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + (size_t)(l % retrlm__resid_slots(c)) *
                          retrlm__round16(retrlm__nmax(c) * (size_t)c->dim);
}
static float *retrlm__layers_base(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + (size_t)retrlm__resid_slots(c) *
                          retrlm__round16(retrlm__nmax(c) * (size_t)c->dim);
}
static float *retrlm__lnf(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return retrlm__layers_base(m) + (size_t)retrlm__layer_slots(c) * retrlm__layer_stride(c);
}
static float *retrlm__rstdf(const retrlm_model *m) {
    return retrlm__lnf(m) + retrlm__round16(retrlm__nmax(&m->config) * (size_t)m->config.dim);
}
static float *retrlm__tokloss(const retrlm_model *m) {
    return retrlm__rstdf(m) + retrlm__round16(retrlm__nmax(&m->config));
}
RETRLM__PRIVATE float *retrlm__logits(const retrlm_model *m) {
    return retrlm__tokloss(m) + retrlm__round16(retrlm__nmax(&m->config));
}
static void retrlm__layer_acts(const retrlm_model *m, int l, retrlm__acts *a) {
    const retrlm_model_config *c = &m->config;
    size_t nm = retrlm__nmax(c), nd = retrlm__round16(nm * (size_t)c->dim);
    size_t n1 = retrlm__round16(nm), nf = retrlm__round16(nm * (size_t)c->ffn_dim);
    float *p = retrlm__layers_base(m) + (size_t)(l % retrlm__layer_slots(c)) *
                                            retrlm__layer_stride(c);
    a->ln1 = p; p += nd;
    a->rstd1 = p; p += n1;
    a->q = p; p += nd;
    a->k = p; p += nd;
    a->v = p; p += nd;
    a->att = p; p += retrlm__round16(retrlm__att_size(c));
    a->atty = p; p += nd;
    a->mid = p; p += nd;
    a->ln2 = p; p += nd;
    a->rstd2 = p; p += n1;
    a->gate = p; p += nf;
    a->up = p; p += nf;
    a->act = p;
}

static size_t retrlm__acts_size(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), nd = retrlm__round16(nm * (size_t)c->dim);
    return (size_t)(retrlm__resid_slots(c) + 1) * nd +
           (size_t)retrlm__layer_slots(c) * retrlm__layer_stride(c) + 2 * retrlm__round16(nm) +
           (c->no_logits ? 0 : nm * (size_t)c->vocab_size);
}

// acts_ of an inference-only model, at its first forward (zeroed, as init's)
static retrlm_result retrlm__acts_ready(retrlm_model *m) {
    if (m->acts_) return RETRLM_OK;
    m->acts_ = (float *)retrlm__alloc_aligned(m->n_acts_, sizeof(float), &m->own_[2]);
    if (!m->acts_)
        return retrlm__fail(RETRLM_ERR_NOMEM, "model_forward: no memory for %lu activations",
                            (unsigned long)m->n_acts_);
    memset(m->acts_, 0, m->n_acts_ * sizeof(float));
    return RETRLM_OK;
}

static size_t retrlm__work_layout(const retrlm_model_config *c, float *base, retrlm__work *w) {
    // the backward's buffers are empty in an inference-only model
    size_t nm = c->inference ? 0 : retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t cache = (size_t)c->n_layers * (size_t)c->max_seq_len * d, v = (size_t)c->vocab_size;
    size_t off = 0;
    retrlm__work tmp;
    if (!w) w = &tmp;
#define RETRLM__TAKE(field, n) (w->field = base ? base + off : NULL, off += retrlm__round16(n))
    RETRLM__TAKE(dx, nm * d);
    RETRLM__TAKE(dln, nm * d);
    RETRLM__TAKE(datty, nm * d);
    RETRLM__TAKE(dq, nm * d);
    RETRLM__TAKE(dk, nm * d);
    RETRLM__TAKE(dv, nm * d);
    RETRLM__TAKE(dtmp, nm * d);
    RETRLM__TAKE(dact, nm * f);
    RETRLM__TAKE(dgate, nm * f);
    RETRLM__TAKE(datt, c->inference ? 0 : retrlm__att_size(c));
    RETRLM__TAKE(kc, cache);
    RETRLM__TAKE(vc, cache);
    RETRLM__TAKE(x, d);
    RETRLM__TAKE(xn, d);
    RETRLM__TAKE(q, d);
    RETRLM__TAKE(y, d);
    RETRLM__TAKE(o, d);
    RETRLM__TAKE(hid, d);
    RETRLM__TAKE(gate, f);
    RETRLM__TAKE(up, f);
    RETRLM__TAKE(att, (size_t)c->n_heads * (size_t)c->max_seq_len);
    RETRLM__TAKE(logits, v);
    RETRLM__TAKE(probs, v);
    RETRLM__TAKE(scores, v);
#undef RETRLM__TAKE
    return off;
}

static void retrlm__get_work(const retrlm_model *m, retrlm__work *w) {
    retrlm__work_layout(&m->config, m->work_, w);
}

// the neighbour encoder's config for a resolved RETRO config
static void retrlm__retro_enc_config(const retrlm_model_config *c, retrlm_model_config *e) {
    memset(e, 0, sizeof *e);
    e->vocab_size = c->vocab_size;
    e->dim = c->retro_enc_dim;
    e->n_layers = c->retro_enc_layers;
    e->n_heads = c->retro_enc_heads;
    e->max_seq_len = c->retro_len;
    e->max_batch = c->max_batch * (c->max_seq_len / c->retro_chunk) * c->retro_k;
    e->bidirectional = 1;
    e->no_logits = 1;
    e->inference = c->inference;
    e->rope_theta = c->rope_theta;
    e->norm_eps = c->norm_eps;
    e->init_std = c->init_std;
    e->seed = c->seed ^ 0x5245545230ULL; // "RETR0": its own stream
}

// tensor sizes (floats) of a resolved config
static void retrlm__tensor_sizes(const retrlm_model_config *c, size_t *sz) {
    size_t v = (size_t)c->vocab_size, d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t l = (size_t)c->n_layers, R = (size_t)retrlm__retro_count(c);
    sz[RETRLM_T_EMBED] = v * d;
    sz[RETRLM_T_LM_HEAD] = c->untied ? v * d : 0;
    sz[RETRLM_T_WQ] = sz[RETRLM_T_WK] = sz[RETRLM_T_WV] = sz[RETRLM_T_WO] = l * d * d;
    sz[RETRLM_T_W_GATE] = sz[RETRLM_T_W_UP] = sz[RETRLM_T_W_DOWN] = l * f * d;
    sz[RETRLM_T_CCA_WQ] = sz[RETRLM_T_CCA_WO] = R * d * d;
    sz[RETRLM_T_CCA_WK] = sz[RETRLM_T_CCA_WV] = R * d * (size_t)c->retro_enc_dim;
    sz[RETRLM_T_RPT_WQ] = sz[RETRLM_T_RPT_WK] = (size_t)c->rpt_dim * d;
    sz[RETRLM_T_ATTN_NORM] = sz[RETRLM_T_FFN_NORM] = l * d;
    sz[RETRLM_T_FINAL_NORM] = d;
    sz[RETRLM_T_CCA_NORM] = R * d;
    sz[RETRLM_T_CCA_SMEAR] = c->retro_smear ? R * (size_t)c->n_heads : 0;
}

// floats of a resolved config's parameter block: its tensors and its neighbour encoder's; mats
// (may be NULL) gets the matrices' share (the rest are gains)
RETRLM__PRIVATE size_t retrlm__param_count(const retrlm_model_config *c, size_t *mats) {
    size_t sz[RETRLM_T_COUNT], n = 0, nm = 0;
    int t;
    retrlm__tensor_sizes(c, sz);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        n += sz[t];
        if (t < RETRLM_T_ATTN_NORM) nm += sz[t];
    }
    if (c->retro_chunk) {
        retrlm_model_config e;
        size_t em = 0;
        retrlm__retro_enc_config(c, &e);
        if (retrlm__resolve_config(&e) == RETRLM_OK) {
            n += retrlm__param_count(&e, &em);
            nm += em;
        }
    }
    if (mats) *mats = nm;
    return n;
}

// fills defaults into c and checks it; the estimate (in floats, double) guards every size product
RETRLM__PRIVATE retrlm_result retrlm__resolve_config(retrlm_model_config *c) {
    double nm, d, f, v, l, h, t, est;
    if (!c->dim) c->dim = 256;
    if (!c->n_layers) c->n_layers = 4;
    if (!c->n_heads) c->n_heads = 4;
    if (!c->ffn_dim && c->dim > 0) c->ffn_dim = ((c->dim * 8 / 3) + 31) / 32 * 32;
    if (!c->max_seq_len) c->max_seq_len = 256;
    if (!c->max_batch) c->max_batch = 1;
    if (c->rope_theta == 0.0f) c->rope_theta = 10000.0f;
    if (c->norm_eps == 0.0f) c->norm_eps = 1e-5f;
    if (c->init_std == 0.0f) c->init_std = 0.02f;
    c->untied = c->untied != 0;
    c->bidirectional = c->bidirectional != 0;
    c->no_logits = c->no_logits != 0;
    c->inference = c->inference != 0;
    if (c->retro_chunk <= 0) {
        if (c->retro_chunk < 0)
            return retrlm__fail(RETRLM_ERR_ARG, "model: retro_chunk %d must be >= 0 (0: no RETRO)",
                                c->retro_chunk);
        c->retro_k = c->retro_len = c->retro_start = c->retro_every = 0;
        c->retro_enc_dim = c->retro_enc_layers = c->retro_enc_heads = c->retro_smear = 0;
        if (c->rpt_dim)
            return retrlm__fail(RETRLM_ERR_ARG, "model: rpt_dim %d needs RETRO blocks (retro_chunk "
                                "> 0)", c->rpt_dim);
        c->rpt_layer = 0;
    } else {
        c->retro_smear = c->retro_smear != 0;
        if (!c->retro_k) c->retro_k = 2;
        if (!c->retro_len) c->retro_len = c->retro_chunk <= 4096 ? 2 * c->retro_chunk : 8192;
        if (!c->retro_every) c->retro_every = 3;
        if (!c->retro_enc_layers) c->retro_enc_layers = 2;
        if (!c->retro_enc_heads) c->retro_enc_heads = c->n_heads;
        if (!c->retro_enc_dim && c->retro_enc_heads > 0 && c->dim > 0) {
            int step = 2 * c->retro_enc_heads;
            c->retro_enc_dim = RETRLM__MAX(step, c->dim / 2 / step * step);
        }
        if (c->bidirectional || c->retro_chunk > c->max_seq_len || c->retro_k < 1 ||
            c->retro_k > 64 || c->retro_len < 1 || c->retro_len > 8192 || c->retro_start < 0 ||
            c->retro_start >= c->n_layers || c->retro_every < 1 || c->retro_enc_layers < 1 ||
            c->retro_enc_layers > 64 || c->retro_enc_heads < 1 || c->retro_enc_dim < 2 ||
            c->retro_enc_dim > 65536 || c->retro_enc_dim % (2 * c->retro_enc_heads) ||
            (double)c->max_batch * (c->max_seq_len / c->retro_chunk) * c->retro_k > RETRLM__MAX_DIM)
            return retrlm__fail(RETRLM_ERR_ARG,
                                "model: bad RETRO shape: chunk %d (<= max_seq_len %d, causal "
                                "models only), k %d (1..64), len %d (1..8192), start %d (< layers "
                                "%d), every %d, encoder dim %d (a multiple of 2*heads) layers %d "
                                "heads %d, neighbours a batch <= 2^24", c->retro_chunk, c->max_seq_len, c->retro_k,
                                c->retro_len, c->retro_start, c->n_layers, c->retro_every,
                                c->retro_enc_dim, c->retro_enc_layers, c->retro_enc_heads);
        if (c->rpt_dim) {
            if (!c->rpt_layer) c->rpt_layer = c->retro_start;
            if (c->rpt_dim < 1 || c->rpt_dim > 65536 || c->rpt_layer < 1 ||
                c->rpt_layer > c->retro_start)
                return retrlm__fail(RETRLM_ERR_ARG, "model: RPT dim %d (1..65536), layer %d (1 .. "
                                    "retro_start %d: before the first cross-attention)",
                                    c->rpt_dim, c->rpt_layer, c->retro_start);
        } else {
            c->rpt_layer = 0;
        }
    }
    if (c->vocab_size < 1 || c->vocab_size > RETRLM__MAX_DIM || c->dim < 2 ||
        c->dim > RETRLM__MAX_DIM || c->n_layers < 1 || c->n_layers > 65536 || c->n_heads < 1 ||
        c->dim % c->n_heads || (c->dim / c->n_heads) % 2 || c->ffn_dim < 1 ||
        c->ffn_dim > RETRLM__MAX_DIM || c->max_seq_len < 1 || c->max_seq_len > RETRLM__MAX_DIM ||
        c->max_batch < 1 || c->max_batch > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG,
                            "model: bad shape vocab %d dim %d layers %d heads %d ffn %d seq %d "
                            "batch %d (dim must be a multiple of 2*heads, all positive)",
                            c->vocab_size, c->dim, c->n_layers, c->n_heads, c->ffn_dim,
                            c->max_seq_len, c->max_batch);
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f) || !(c->init_std > 0.0f) ||
        c->rope_theta > 1e30f || c->norm_eps > 1.0f || c->init_std > 100.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "model: rope_theta %g, norm_eps %g, init_std %g must "
                            "be positive and finite", (double)c->rope_theta, (double)c->norm_eps,
                            (double)c->init_std);
    nm = (double)c->max_batch * c->max_seq_len;
    d = c->dim; f = c->ffn_dim; v = c->vocab_size; l = c->n_layers; h = c->n_heads;
    t = c->max_seq_len;
    est = 2 * v * d + l * (4 * d * d + 3 * f * d + 2 * d) + d;         // params
    est = 2 * est + l * (nm * (7 * d + 3 * f + 2) + nm / t * h * t * t) + nm * (v + 2 * d + 4) +
          8 * nm * d + 2 * nm * f + nm / t * h * t * t + 2 * l * t * d + 3 * v + 8 * d + h * t;
    if (c->retro_chunk) {
        // the cross-attention activations and the neighbour encoder (est, roughly)
        double kr = (double)c->retro_k * c->retro_len, nn = nm / c->retro_chunk * kr;
        double de = c->retro_enc_dim, R = (double)retrlm__retro_count(c);
        est += R * (nm * (6 * d + 1 + 2 * h * kr) + 2 * nn * d + 2 * kr * d) + nn * (3 * d + de) +
               nn * (16 * de + c->retro_len * c->retro_enc_heads) * c->retro_enc_layers +
               2 * v * de + 2 * nm / c->retro_chunk * (d + c->rpt_dim) * (c->rpt_dim > 0);
    }
    if (est * 8.0 > (double)SIZE_MAX || est > 1e13)
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: %.3g floats of parameters and activations "
                            "exceed what this machine can address", est);
    return RETRLM_OK;
}

RETRLM_API float *retrlm_model_tensor_ptr(const retrlm_model *m, retrlm_model_tensor t, int layer,
                                          int grad) {
    const retrlm_model_config *c = &m->config;
    size_t per;
    float *base;
    RETRLM_ASSERT(t >= 0 && t < RETRLM_T_COUNT);
    base = grad ? m->grad[t] : m->param[t];
    if (!base) return NULL; // an inference-only model's gradients
    if (t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD || t == RETRLM_T_FINAL_NORM) return base;
    RETRLM_ASSERT(layer >= 0 && layer < c->n_layers);
    if ((t >= RETRLM_T_CCA_WQ && t <= RETRLM_T_CCA_WO) || t >= RETRLM_T_CCA_NORM) {
        int slot = retrlm__retro_slot(c, layer);
        RETRLM_ASSERT(slot >= 0);
        per = m->tensor_size[t] / (size_t)m->retro_layers;
        return base + (size_t)slot * per;
    }
    per = m->tensor_size[t] / (size_t)c->n_layers;
    return base + (size_t)layer * per;
}

RETRLM_API int retrlm_model_is_retro_layer(const retrlm_model *m, int layer) {
    return layer >= 0 && layer < m->config.n_layers && retrlm__retro_slot(&m->config, layer) >= 0;
}

RETRLM_API void retrlm_model_free(retrlm_model *m) {
    int i;
    if (!m) return;
    if (m->retro_enc) {
        retrlm_model_free(m->retro_enc);
        RETRLM_FREE(m->retro_enc);
    }
    RETRLM_FREE(m->retro_own_);
    RETRLM_FREE(m->retro_ints_);
    RETRLM_FREE(m->rpt_own_);
    for (i = 0; i < 6; i++) RETRLM_FREE(m->own_[i]);
    if (m->map_) {
        retrlm_reader_close((retrlm_reader *)m->map_);
        RETRLM_FREE(m->map_);
    }
    RETRLM_FREE(m->tokens_);
    RETRLM_FREE(m->lengths_);
    RETRLM_FREE(m->ids_);
    memset(m, 0, sizeof *m);
}

// a zeroed, 64-byte aligned block of n floats; *owned is what to free
static float *retrlm__model_block(size_t n, void **owned) {
    float *p = (float *)retrlm__alloc_aligned(n, sizeof(float), owned);
    if (p) memset(p, 0, n * sizeof(float));
    return p;
}

// C = A B (retrlm_matmul) with the model's packing buffers
RETRLM__PRIVATE retrlm_result retrlm__mm(const retrlm_model *m, float *C, const float *A,
                                         const float *B, int M, int N, int K, int flags) {
    return retrlm__matmul_ws(C, A, B, NULL, M, N, K, flags, m->mmws_, m->n_mmws_);
}

// int8 weights: the rows of matrix t over all layers (0: it has none in an int8 model: RETRO's
// and RPT's, which int8 does not cover) and their in-dimension *K
static size_t retrlm__q8_rows(const retrlm_model_config *c, int t, int *K) {
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->ffn_dim;
    *K = t == RETRLM_T_W_DOWN ? c->ffn_dim : c->dim;
    switch (t) {
    case RETRLM_T_EMBED: return (size_t)c->vocab_size;
    case RETRLM_T_LM_HEAD: return c->untied ? (size_t)c->vocab_size : 0;
    case RETRLM_T_WQ: case RETRLM_T_WK: case RETRLM_T_WV: case RETRLM_T_WO: case RETRLM_T_W_DOWN:
        return L * D;
    case RETRLM_T_W_GATE: case RETRLM_T_W_UP: return L * F;
    default: return 0;
    }
}

// int8 values and scales an int8 model of config c holds; with q and s, points m's tensors there
RETRLM__PRIVATE void retrlm__q8_place(retrlm_model *m, const retrlm_model_config *c, const int8_t *q,
                             const float *s, size_t *nq, size_t *ns) {
    size_t oq = 0, os = 0;
    int t, K;
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) {
        size_t rows = retrlm__q8_rows(c, t, &K);
        if (m && q && rows) {
            m->q8_[t] = q + oq;
            m->q8s_[t] = s + os;
        }
        oq += rows * (size_t)K;
        os += rows * retrlm__q8_groups(K);
    }
    if (nq) *nq = oq;
    if (ns) *ns = os;
}

// C = A Wᵀ for weight matrix t (layer l; N its rows a layer, K its in-dimension), f32 or int8
static retrlm_result retrlm__mmw(const retrlm_model *m, float *C, const float *A,
                                 retrlm_model_tensor t, int l, int M, int N, int K, int flags) {
    const int whole = t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD;
    if (m->q8_[t]) {
        size_t r0 = whole ? 0 : (size_t)l * (size_t)N; // the layer's first row
        return retrlm__matmul_q8_ws(C, A, m->q8_[t] + r0 * (size_t)K,
                                    m->q8s_[t] + r0 * retrlm__q8_groups(K), M, N, K, flags,
                                    m->mmws_, m->n_mmws_);
    }
    return retrlm__mm(m, C, A, whole ? m->param[t] : retrlm_model_tensor_ptr(m, t, l, 0), M, N,
                      K, flags);
}

// out (D) = token tok's embedding
static void retrlm__embed_row(const retrlm_model *m, float *out, int tok) {
    const int D = m->config.dim;
    if (m->q8_[RETRLM_T_EMBED])
        retrlm__q8_row(out, m->q8_[RETRLM_T_EMBED] + (size_t)tok * (size_t)D,
                       m->q8s_[RETRLM_T_EMBED] + (size_t)tok * retrlm__q8_groups(D), D);
    else
        memcpy(out, m->param[RETRLM_T_EMBED] + (size_t)tok * (size_t)D, (size_t)D * sizeof(float));
}

// Allocates everything for a config (weights left zero), or only the activations when the
// parameters and gradients are src's. ext (a RETRO model's neighbour encoder) places the
// tensors in another model's block instead: matrices from ext[0], gains from ext[1] (gradients
// ext[2], ext[3]); such a model has n_params 0 (its owner's block holds them). An
// inference-only config gets no gradients (src's are not shared) and no activations until its
// first forward. q8: an int8 model (inference-only): params holds the gains alone (n_params of
// them, n_decay 0) and the matrices are int8 (q8_, q8s_), src's or new ones, zeroed.
RETRLM__PRIVATE retrlm_result retrlm__model_alloc(retrlm_model *m, const retrlm_model_config *cfg,
                                                  const retrlm_model *src, float *const *ext,
                                                  int q8) {
    retrlm_model_config c = *cfg;
    retrlm_result r;
    size_t off = 0, nwork, mats = 0, enc_mats = 0, moff, goff, nq = 0, ns = 0;
    int t, i, hd2;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__resolve_config(&c)) != RETRLM_OK) return r;
    if (q8 && (c.retro_chunk || ext))
        return retrlm__fail(RETRLM_ERR_ARG, "model: int8 weights are for plain models, not RETRO's");
    if (q8) c.inference = 1;
    m->config = c;
    m->retro_layers = retrlm__retro_count(&c);
    m->retro_chunk_ = -1;
    retrlm__tensor_sizes(&c, m->tensor_size);
    off = retrlm__param_count(&c, &mats);
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) enc_mats += m->tensor_size[t];
    enc_mats = mats - enc_mats; // the neighbour encoder's matrices, after the decoder's
    if (ext) {
        m->params = ext[0];
        m->grads = ext[2];
    } else if (src) {
        RETRLM_ASSERT(src->n_params == (q8 ? off - mats : off));
        m->params = src->params;
        m->grads = c.inference ? NULL : src->grads;
        m->n_params = q8 ? off - mats : off;
        m->n_decay = q8 ? 0 : mats;
        if (q8) retrlm__q8_place(m, &c, src->q8_[RETRLM_T_EMBED], src->q8s_[RETRLM_T_EMBED], NULL, NULL);
    } else {
        m->n_params = q8 ? off - mats : off;
        m->n_decay = q8 ? 0 : mats;
        m->params = retrlm__model_block(m->n_params, &m->own_[0]);
        if (!c.inference) m->grads = retrlm__model_block(off, &m->own_[1]);
        if (q8) { // scales, then the int8 values, one block in the gradients' place
            float *sb;
            retrlm__q8_place(NULL, &c, NULL, NULL, &nq, &ns);
            if ((sb = (float *)retrlm__alloc_aligned(ns * sizeof(float) + nq, 1, &m->own_[1]))) {
                memset(sb, 0, ns * sizeof(float) + nq);
                retrlm__q8_place(m, &c, (const int8_t *)(sb + ns), sb, NULL, NULL);
            }
        }
    }
    m->n_acts_ = retrlm__acts_size(&c);
    if (!c.inference) m->acts_ = retrlm__model_block(m->n_acts_, &m->own_[2]);
    m->rope_ = retrlm__model_block(2 * retrlm__rope_floats(&c), &m->own_[5]);
    nwork = retrlm__work_layout(&c, NULL, NULL);
    // an inference-only model's work_ (its KV cache) is written before it is read: not zeroed, so
    // that opening one touches no page of it and a short generation only the pages it fills
    m->work_ = c.inference ? (float *)retrlm__alloc_aligned(nwork, sizeof(float), &m->own_[3])
                           : retrlm__model_block(nwork, &m->own_[3]);
    // packing space is written before it is read: not zeroed, so a short-lived view (one
    // retrlm_encoder_embed call) touches only the pages its small products use
    m->n_mmws_ = (size_t)retrlm__max_threads() * retrlm__matmul_ws_floats();
    m->mmws_ = (float *)retrlm__alloc_aligned(m->n_mmws_, sizeof(float), &m->own_[4]);
    m->tokens_ = (int *)retrlm__calloc(retrlm__nmax(&c), sizeof(int));
    m->lengths_ = (int *)retrlm__calloc((size_t)c.max_batch, sizeof(int));
    m->ids_ = (int64_t *)retrlm__calloc((size_t)c.vocab_size, sizeof(int64_t));
    if (c.retro_chunk) {
        size_t S = retrlm__retro_slots(&c), nr = retrlm__retro_layout(&c, NULL, 0, NULL, NULL);
        m->retro_ = (float *)retrlm__alloc_aligned(nr, sizeof(float), &m->retro_own_);
        if (m->retro_) memset(m->retro_, 0, nr * sizeof(float));
        m->retro_ints_ = (int *)retrlm__calloc(S * (size_t)c.retro_len + 2 * S +
                                                   2 * (size_t)c.retro_k, sizeof(int));
        m->retro_enc = (retrlm_model *)retrlm__calloc(1, sizeof(retrlm_model));
        if (c.rpt_dim) // the chunk means, then their gradients
            m->rpt_pool_ = retrlm__model_block((size_t)2 * c.max_batch *
                                               (size_t)(c.max_seq_len / c.retro_chunk) *
                                               (size_t)RETRLM__MAX(c.dim, c.rpt_dim),
                                               &m->rpt_own_);
    }
    if (!m->params || (!c.inference && (!m->grads || !m->acts_)) || (q8 && !m->q8_[RETRLM_T_EMBED]) ||
        !m->rope_ || !m->work_ ||
        !m->mmws_ || !m->tokens_ || !m->lengths_ || !m->ids_ || (c.retro_chunk && (!m->retro_ || !m->retro_ints_ ||
                                                        !m->retro_enc)) ||
        (c.rpt_dim && !m->rpt_pool_)) {
        retrlm_model_free(m);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: no memory for %lu parameters and %lu "
                            "activations", (unsigned long)off, (unsigned long)nwork);
    }
    // matrices first (the decoder's, then the neighbour encoder's), then the gains (likewise)
    moff = goff = 0;
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        int gain = t >= RETRLM_T_ATTN_NORM;
        size_t o = gain ? (ext || q8 ? goff : mats + goff) : moff;
        float *pb = ext ? ext[gain] : m->params, *gb = ext ? ext[2 + gain] : m->grads;
        m->param[t] = q8 && !gain ? NULL : pb + o; // an int8 model's matrices are in q8_
        m->grad[t] = gb ? gb + o : NULL;
        if (gain) goff += m->tensor_size[t];
        else moff += m->tensor_size[t];
    }
    if (c.retro_chunk) {
        retrlm_model_config ec;
        float *e[4];
        e[0] = m->params + moff;
        e[1] = m->params + mats + goff;
        e[2] = m->grads ? m->grads + moff : NULL;
        e[3] = m->grads ? m->grads + mats + goff : NULL;
        RETRLM_ASSERT(moff + enc_mats == mats);
        retrlm__retro_enc_config(&c, &ec);
        if ((r = retrlm__model_alloc(m->retro_enc, &ec, NULL, e, 0)) != RETRLM_OK) {
            RETRLM_FREE(m->retro_enc);
            m->retro_enc = NULL;
            retrlm_model_free(m);
            return r;
        }
    }
    // rotary tables, Hugging Face convention: dim i of a head pairs with i + hd/2
    hd2 = c.dim / c.n_heads / 2;
    for (t = 0; t < c.max_seq_len; t++)
        for (i = 0; i < hd2; i++) {
            double freq = pow((double)c.rope_theta, -(double)(2 * i) / (double)(2 * hd2));
            double a = (double)t * freq;
            retrlm__rope_cos(m)[(size_t)t * hd2 + i] = (float)cos(a);
            retrlm__rope_sin(m)[(size_t)t * hd2 + i] = (float)sin(a);
        }
    return RETRLM_OK;
}

// normal(0, init_std) matrices, the residual outputs (wo, w_down, the cross-attention's wo)
// scaled by 1/sqrt(2L), gains 1; the neighbour encoder from its own seed
static void retrlm__init_weights(retrlm_model *m) {
    retrlm_rng rng;
    size_t i;
    int t;
    retrlm_rng_seed(&rng, m->config.seed);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        float std = m->config.init_std, *p = m->param[t];
        if (t >= RETRLM_T_ATTN_NORM) { // gains 1; the smeared keys' logits 0 (an even mix)
            for (i = 0; i < m->tensor_size[t]; i++) p[i] = t == RETRLM_T_CCA_SMEAR ? 0.0f : 1.0f;
            continue;
        }
        if (t == RETRLM_T_WO || t == RETRLM_T_W_DOWN || t == RETRLM_T_CCA_WO)
            std /= (float)sqrt(2.0 * m->config.n_layers);
        for (i = 0; i < m->tensor_size[t]; i++) p[i] = std * retrlm_rng_normal(&rng);
    }
    if (m->retro_enc) retrlm__init_weights(m->retro_enc);
}

RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_result r;
    RETRLM_ASSERT(m && cfg);
    if ((r = retrlm__model_alloc(m, cfg, NULL, NULL, 0)) != RETRLM_OK) return r;
    retrlm__init_weights(m);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_init_view(retrlm_model *m, const retrlm_model *src,
                                                const retrlm_model_config *over) {
    retrlm_model_config c;
    RETRLM_ASSERT(m && src && src->params);
    c = src->config;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over) c.no_logits = over->no_logits;
    if (over && over->inference) c.inference = 1;
    return retrlm__model_alloc(m, &c, src, NULL, src->q8_[RETRLM_T_EMBED] != NULL);
}

RETRLM_API int retrlm_model_is_q8(const retrlm_model *m) {
    return m && m->q8_[RETRLM_T_EMBED] != NULL;
}

RETRLM_API retrlm_result retrlm_model_quantize(retrlm_model *dst, const retrlm_model *src) {
    retrlm_model_config c;
    retrlm_result r;
    int t, K;
    RETRLM_ASSERT(dst && src && src->params);
    memset(dst, 0, sizeof *dst);
    if (retrlm_model_is_q8(src))
        return retrlm__fail(RETRLM_ERR_ARG, "model_quantize: the model is int8 already");
    c = src->config;
    if ((r = retrlm__model_alloc(dst, &c, NULL, NULL, 1))) return r;
    for (t = 0; t < RETRLM_T_ATTN_NORM; t++) { // the int8 block is dst's own: written once here
        size_t rows = retrlm__q8_rows(&dst->config, t, &K);
        if (rows)
            retrlm__q8_quantize((int8_t *)(uintptr_t)dst->q8_[t], (float *)(uintptr_t)dst->q8s_[t],
                                src->param[t], rows, K);
    }
    for (t = RETRLM_T_ATTN_NORM; t < RETRLM_T_COUNT; t++)
        if (src->tensor_size[t])
            memcpy(dst->param[t], src->param[t], src->tensor_size[t] * sizeof(float));
    return RETRLM_OK;
}

RETRLM_API void retrlm_model_zero_grad(retrlm_model *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// layer kernels, forward and backward side by side. N rows; every row is computed by one thread.

// out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), per row of D
static void retrlm__rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N,
                                    int D, float eps) {
    int i;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
    for (i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D;
        float *oi = out + (size_t)i * D, ss = 0.0f, r;
        int d;
        RETRLM__SIMD_SUM(ss)
        for (d = 0; d < D; d++) ss += xi[d] * xi[d];
        r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[i] = r;
        RETRLM__SIMD
        for (d = 0; d < D; d++) oi[d] = xi[d] * r * w[d];
    }
}

// dx (+)= the input gradient; dw_rows (N, D) gets each row's gain gradient (summed later)
static void retrlm__rmsnorm_backward(float *dx, float *dw_rows, const float *dy, const float *x,
                                     const float *w, const float *rstd, int N, int D, int acc) {
    int i;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
    for (i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * D, *dyi = dy + (size_t)i * D;
        float *dxi = dx + (size_t)i * D, *dwi = dw_rows + (size_t)i * D;
        float r = rstd[i], dot = 0.0f, c;
        int d;
        RETRLM__SIMD_SUM(dot)
        for (d = 0; d < D; d++) dot += dyi[d] * w[d] * xi[d];
        c = dot * r * r * r / (float)D;
        if (acc) {
            RETRLM__SIMD
            for (d = 0; d < D; d++) dxi[d] += dyi[d] * w[d] * r - c * xi[d];
        } else {
            RETRLM__SIMD
            for (d = 0; d < D; d++) dxi[d] = dyi[d] * w[d] * r - c * xi[d];
        }
        RETRLM__SIMD
        for (d = 0; d < D; d++) dwi[d] = dyi[d] * xi[d] * r;
    }
}

// out (D) += sum over the N rows of rows (N, D), rows in order: the same sum for any thread count
static void retrlm__sum_rows(float *out, const float *rows, int N, int D) {
    int c, nchunks = (D + 63) / 64;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
    for (c = 0; c < nchunks; c++) {
        int d0 = c * 64, d1 = RETRLM__MIN(D, d0 + 64), i, d;
        for (i = 0; i < N; i++) {
            const float *ri = rows + (size_t)i * D;
            for (d = d0; d < d1; d++) out[d] += ri[d];
        }
    }
}

// rotary embedding in place on x (N, H*hd); row i is at position pos0 + i % T. inverse rotates
// back by the same angle, which is the backward pass (the rotation is orthogonal).
static void retrlm__rope(float *x, int N, int T, int pos0, int H, int hd, const float *cosT,
                         const float *sinT, int inverse) {
    int i, hd2 = hd / 2;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)H * (size_t)hd > RETRLM__PAR_ELEMS)
    for (i = 0; i < N; i++) {
        int pos = pos0 + i % T, h, j;
        const float *cs = cosT + (size_t)pos * hd2, *sn = sinT + (size_t)pos * hd2;
        float sgn = inverse ? -1.0f : 1.0f;
        for (h = 0; h < H; h++) {
            float *a = x + (size_t)i * H * hd + (size_t)h * hd, *b = a + hd2;
            RETRLM__SIMD
            for (j = 0; j < hd2; j++) {
                float x1 = a[j], x2 = b[j], s = sgn * sn[j];
                a[j] = x1 * cs[j] - x2 * s;
                b[j] = x2 * cs[j] + x1 * s;
            }
        }
    }
}

// number of keys query t of sequence b attends to
static int retrlm__att_keys(int t, int len, int causal) {
    return causal ? RETRLM__MIN(t + 1, len) : len;
}

// softmax(q k^T / sqrt(hd)) v per (sequence, head); att (B, H, T, T) keeps the probabilities
// (0 where masked). q, k, v, y are (B*T, H*hd).
static void retrlm__attention_forward(float *y, float *att, const float *q, const float *k,
                                      const float *v, const int *len, int B, int T, int H, int hd,
                                      int causal) {
    int bh;
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * T * D > 4e6)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, d;
        for (t = 0; t < T; t++) {
            float *p = att + ((size_t)bh * T + t) * T, mx = -FLT_MAX, sum = 0.0f;
            const float *qt = q + ((size_t)b * T + t) * D + (size_t)h * hd;
            float *yt = y + ((size_t)b * T + t) * D + (size_t)h * hd;
            int nk = retrlm__att_keys(t, len[b], causal);
            for (j = 0; j < nk; j++) {
                const float *kj = k + ((size_t)b * T + j) * D + (size_t)h * hd;
                float s = 0.0f;
                RETRLM__SIMD_SUM(s)
                for (d = 0; d < hd; d++) s += qt[d] * kj[d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (j = 0; j < nk; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            for (j = 0; j < nk; j++) p[j] /= sum;
            for (j = nk; j < T; j++) p[j] = 0.0f;
            for (d = 0; d < hd; d++) yt[d] = 0.0f;
            for (j = 0; j < nk; j++) {
                const float *vj = v + ((size_t)b * T + j) * D + (size_t)h * hd;
                float pj = p[j];
                RETRLM__SIMD
                for (d = 0; d < hd; d++) yt[d] += pj * vj[d];
            }
        }
    }
}

// dq, dk, dv (set, not accumulated) from dy; datt (B, H, T, T) is scratch
static void retrlm__attention_backward(float *dq, float *dk, float *dv, float *datt,
                                       const float *dy, const float *att, const float *q,
                                       const float *k, const float *v, const int *len, int B,
                                       int T, int H, int hd, int causal) {
    int bh;
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * T * D > 4e6)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, d;
        for (t = 0; t < T; t++) {
            size_t r = ((size_t)b * T + t) * D + (size_t)h * hd;
            for (d = 0; d < hd; d++) dq[r + d] = dk[r + d] = dv[r + d] = 0.0f;
        }
        for (t = 0; t < T; t++) {
            const float *p = att + ((size_t)bh * T + t) * T;
            float *dp = datt + ((size_t)bh * T + t) * T, s = 0.0f;
            const float *dyt = dy + ((size_t)b * T + t) * D + (size_t)h * hd;
            const float *qt = q + ((size_t)b * T + t) * D + (size_t)h * hd;
            float *dqt = dq + ((size_t)b * T + t) * D + (size_t)h * hd;
            int nk = retrlm__att_keys(t, len[b], causal);
            for (j = 0; j < nk; j++) {
                size_t rj = ((size_t)b * T + j) * D + (size_t)h * hd;
                const float *vj = v + rj;
                float *dvj = dv + rj, a = 0.0f, pj = p[j];
                RETRLM__SIMD_SUM(a)
                for (d = 0; d < hd; d++) a += dyt[d] * vj[d];
                dp[j] = a;
                s += pj * a;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) dvj[d] += pj * dyt[d];
            }
            for (j = 0; j < nk; j++) {
                size_t rj = ((size_t)b * T + j) * D + (size_t)h * hd;
                const float *kj = k + rj;
                float *dkj = dk + rj, ds = p[j] * (dp[j] - s) * scale;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) {
                    dqt[d] += ds * kj[d];
                    dkj[d] += ds * qt[d];
                }
            }
        }
    }
}

// Chunked cross-attention of one query row q (H*hd) over the keys of k neighbour rows: rows[j]
// is neighbour j's encoder row (-1: absent), lens[row] its tokens; row i's token t has its key
// and value at (i * r + t) * D. p (H, k*r) gets the probabilities (0 where masked), y (D) the
// output (0 when no neighbour is present).
static void retrlm__cca_query(float *y, float *p, const float *q, const float *kc,
                              const float *vc, const int *rows, const int *lens, int k, int r,
                              int H, int hd) {
    const int D = H * hd, KR = k * r;
    const float scale = 1.0f / sqrtf((float)hd);
    int h, j, t, d;
    for (h = 0; h < H; h++) {
        float *ph = p + (size_t)h * KR, *yh = y + (size_t)h * hd, mx = -FLT_MAX, sum = 0.0f;
        const float *qh = q + (size_t)h * hd;
        int any = 0;
        for (j = 0; j < KR; j++) ph[j] = 0.0f;
        for (d = 0; d < hd; d++) yh[d] = 0.0f;
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                float sc = retrlm_dot(qh, kc + ((size_t)row * r + t) * D + (size_t)h * hd, hd) * scale;
                ph[j * r + t] = sc;
                if (sc > mx) mx = sc;
                any = 1;
            }
        }
        if (!any) continue;
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                ph[j * r + t] = expf(ph[j * r + t] - mx);
                sum += ph[j * r + t];
            }
        }
        for (j = 0; j < k; j++) {
            int row = rows[j];
            if (row < 0) continue;
            for (t = 0; t < lens[row]; t++) {
                const float *vt = vc + ((size_t)row * r + t) * D + (size_t)h * hd;
                float pt = ph[j * r + t] /= sum;
                RETRLM__SIMD
                for (d = 0; d < hd; d++) yh[d] += pt * vt[d];
            }
        }
    }
}

// Smeared keys: ks = the keys k (rows neighbours of r tokens, D = H*hd wide, lens[row] valid
// tokens each) with head h's key at t > 0 mixed with the one before, s k_t + (1 - s) k_{t-1},
// s = sigmoid(a[h]). ks may be k (t runs down).
static void retrlm__cca_smear(float *ks, const float *k, const float *a, const int *lens, int rows,
                              int r, int H, int hd) {
    const int D = H * hd;
    int row;
    RETRLM__PARALLEL_FOR_IF((double)rows * r * D > 2e6)
    for (row = 0; row < rows; row++) {
        int t, h, d;
        for (h = 0; h < H; h++) {
            const float sg = 1.0f / (1.0f + expf(-a[h]));
            for (t = lens[row] - 1; t >= 0; t--) {
                const float *kt = k + ((size_t)row * r + t) * D;
                float *o = ks + ((size_t)row * r + t) * D;
                for (d = h * hd; d < (h + 1) * hd; d++)
                    o[d] = t ? sg * kt[d] + (1.0f - sg) * kt[d - D] : kt[d];
            }
        }
    }
}

// Its backward: dk holds d(loss)/d(ks) and gets d(loss)/d(k) in place; da (H) += d(loss)/d(a).
// k is the unsmeared keys. Serial over rows for da, so the sum's order never depends on threads.
static void retrlm__cca_smear_backward(float *dk, float *da, const float *k, const float *a,
                                       const int *lens, int rows, int r, int H, int hd) {
    const int D = H * hd;
    int row, t, h, d;
    for (h = 0; h < H; h++) {
        const float sg = 1.0f / (1.0f + expf(-a[h]));
        double g = 0.0;
        for (row = 0; row < rows; row++)
            for (t = 0; t < lens[row]; t++) {
                const float *kt = k + ((size_t)row * r + t) * D;
                float *dt = dk + ((size_t)row * r + t) * D, *dn = dt + D, acc = 0.0f;
                const int next = t + 1 < lens[row];
                for (d = h * hd; d < (h + 1) * hd; d++) {
                    if (t) acc += dt[d] * (kt[d] - kt[d - D]);
                    // ks_t takes s of k_t (all of it at t = 0), ks_{t+1} takes 1 - s of it
                    dt[d] = (t ? sg : 1.0f) * dt[d] + (next ? (1.0f - sg) * dn[d] : 0.0f);
                }
                g += acc;
            }
        da[h] += (float)(g * sg * (1.0f - sg));
    }
}

// The chunk whose neighbours position t reads (chunk size mch), or -1: positions um + m - 1 ..
// um + 2m - 2 read chunk u's.
static int retrlm__cca_chunk(int t, int mch) { return t >= mch - 1 ? (t - mch + 1) / mch : -1; }

// Forward over B sequences of T tokens: q, y (B*T, D), att (B*T, H, k*r); slot_row (B, U, k)
// maps each neighbour to its encoder row.
static void retrlm__cca_forward(float *y, float *att, const float *q, const float *kc,
                                const float *vc, const int *slot_row, const int *lens, int B,
                                int T, int mch, int k, int r, int H, int hd) {
    const int D = H * hd, U = T / mch;
    int i;
    RETRLM__PARALLEL_FOR_IF((double)B * T * k * r * D > 2e6)
    for (i = 0; i < B * T; i++) {
        int b = i / T, u = retrlm__cca_chunk(i % T, mch), d;
        float *yi = y + (size_t)i * D, *pi = att + (size_t)i * H * k * r;
        if (u < 0) {
            for (d = 0; d < D; d++) yi[d] = 0.0f;
            for (d = 0; d < H * k * r; d++) pi[d] = 0.0f;
            continue;
        }
        retrlm__cca_query(yi, pi, q + (size_t)i * D, kc, vc, slot_row + ((size_t)b * U + u) * k,
                          lens, k, r, H, hd);
    }
}

// Its backward: dq (B*T, D) set; dk, dv (rows * r, D) accumulated (zero them first); datt is
// scratch like att. Work is split by (sequence, head): a sequence's queries touch only its own
// neighbours' rows and a head only its columns, so no two threads write one float.
static void retrlm__cca_backward(float *dq, float *dk, float *dv, float *datt, const float *dy,
                                 const float *att, const float *q, const float *kc,
                                 const float *vc, const int *slot_row, const int *lens, int B,
                                 int T, int mch, int k, int r, int H, int hd) {
    const int D = H * hd, U = T / mch, KR = k * r;
    const float scale = 1.0f / sqrtf((float)hd);
    int bh;
    RETRLM__PARALLEL_FOR_IF(B * H > 1 && (double)B * T * KR * D > 2e6)
    for (bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H, t, j, i, d;
        for (t = 0; t < T; t++) {
            size_t qi = (size_t)b * T + t;
            const float *p = att + (qi * H + h) * KR, *dyt = dy + qi * D + (size_t)h * hd;
            const float *qt = q + qi * D + (size_t)h * hd;
            float *dp = datt + (qi * H + h) * KR, *dqt = dq + qi * D + (size_t)h * hd, s = 0.0f;
            int u = retrlm__cca_chunk(t, mch);
            const int *rows;
            for (d = 0; d < hd; d++) dqt[d] = 0.0f;
            if (u < 0) continue;
            rows = slot_row + ((size_t)b * U + u) * k;
            for (j = 0; j < k; j++) {
                if (rows[j] < 0) continue;
                for (i = 0; i < lens[rows[j]]; i++) {
                    size_t rr = ((size_t)rows[j] * r + i) * D + (size_t)h * hd;
                    float a = 0.0f, pj = p[j * r + i];
                    const float *vj = vc + rr;
                    float *dvj = dv + rr;
                    RETRLM__SIMD_SUM(a)
                    for (d = 0; d < hd; d++) a += dyt[d] * vj[d];
                    dp[j * r + i] = a;
                    s += pj * a;
                    RETRLM__SIMD
                    for (d = 0; d < hd; d++) dvj[d] += pj * dyt[d];
                }
            }
            for (j = 0; j < k; j++) {
                if (rows[j] < 0) continue;
                for (i = 0; i < lens[rows[j]]; i++) {
                    size_t rr = ((size_t)rows[j] * r + i) * D + (size_t)h * hd;
                    const float *kj = kc + rr;
                    float *dkj = dk + rr, ds = p[j * r + i] * (dp[j * r + i] - s) * scale;
                    RETRLM__SIMD
                    for (d = 0; d < hd; d++) {
                        dqt[d] += ds * kj[d];
                        dkj[d] += ds * qt[d];
                    }
                }
            }
        }
    }
}

// act = silu(gate) * up, n elements
static void retrlm__swiglu_forward(float *act, const float *gate, const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_CHUNK_IF(16384, n > RETRLM__PAR_ELEMS / 2)
    for (i = 0; i < nn; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// dgate, dup (set) from dact; dup may be dact
static void retrlm__swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                                    const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_CHUNK_IF(16384, n > RETRLM__PAR_ELEMS / 2)
    for (i = 0; i < nn; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), da = dact[i];
        dgate[i] = da * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] = da * g * sg;
    }
}

// ---------------------------------------------------------------------------------------------
// forward / backward of the whole model

// RETRO: the neighbours (n, k, r) of n chunks into the encoder's input: each present neighbour
// becomes one row of rows_tok (rows, r; 0 past its length); slot_row (n, k) gets its row or -1,
// row_len its length. Returns the number of rows, or -1 (ERR_ARG) for a bad id.
static int retrlm__retro_rows(const retrlm_model *m, const int *nb, int n, int *rows_tok,
                              int *slot_row, int *row_len, const char *who) {
    const int k = m->config.retro_k, r = m->config.retro_len, V = m->config.vocab_size;
    int s, t, rows = 0;
    for (s = 0; s < n * k; s++) {
        const int *x = nb ? nb + (size_t)s * r : NULL;
        int len = 0;
        slot_row[s] = -1;
        if (!x) continue;
        while (len < r && x[len] >= 0) len++;
        for (t = 0; t < r; t++)
            if (x[t] < -1 || x[t] >= V || (t > len && x[t] != -1)) {
                retrlm__fail(RETRLM_ERR_ARG, "%s: neighbour token %d at %d of slot %d is outside "
                             "[-1, %d) or follows a -1", who, x[t], t, s, V);
                return -1;
            }
        if (!len) continue;
        slot_row[s] = rows;
        row_len[rows] = len;
        for (t = 0; t < r; t++) rows_tok[(size_t)rows * r + t] = t < len ? x[t] : 0;
        rows++;
    }
    return rows;
}

// runs the neighbour encoder on rows rows of m's neighbour tokens
static retrlm_result retrlm__retro_encode(retrlm_model *m, int rows, const int *row_len) {
    if (!rows) return RETRLM_OK;
    return retrlm_model_forward(m->retro_enc, m->retro_ints_, rows, m->config.retro_len, row_len,
                                RETRLM_FORWARD_NO_LOGITS);
}

// a private forward flag: only the first config.rpt_layer layers, nothing after them
#define RETRLM__FORWARD_RPT 0x100

static retrlm_result retrlm__forward(retrlm_model *m, const int *tokens, int B, int T,
                                     const int *lengths, const int *nb, int flags) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int L = flags & RETRLM__FORWARD_RPT ? c->rpt_layer : c->n_layers;
    int i, l, N, rows = 0;
    int *slot_row = NULL, *row_len = NULL;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && tokens);
    if (B < 1 || T < 1 || B > c->max_batch || T > c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_forward: batch %d x %d exceeds %d x %d", B, T,
                            c->max_batch, c->max_seq_len);
    N = B * T;
    for (i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_forward: token %d at %d is outside [0, %d)",
                                tokens[i], i, V);
    for (i = 0; i < B; i++) {
        int len = lengths ? lengths[i] : T;
        if (len < 1 || len > T)
            return retrlm__fail(RETRLM_ERR_ARG, "model_forward: length %d of sequence %d is "
                                "outside [1, %d]", len, i, T);
        m->lengths_[i] = len;
    }
    if (c->retro_chunk) {
        size_t S = retrlm__retro_slots(c);
        slot_row = m->retro_ints_ + S * (size_t)c->retro_len;
        row_len = slot_row + S;
        rows = retrlm__retro_rows(m, nb, B * (T / c->retro_chunk), m->retro_ints_, slot_row,
                                  row_len, "model_forward_retro");
        if (rows < 0) return RETRLM_ERR_ARG;
    }
    if ((r = retrlm__acts_ready(m))) return r;
    memcpy(m->tokens_, tokens, (size_t)N * sizeof(int));
    m->B = B;
    m->T = T;
    m->lengths = m->lengths_;
    m->retro_rows_ = rows;
    if ((r = retrlm__retro_encode(m, rows, row_len))) return r;
    m->hidden = retrlm__lnf(m);
    m->logits = NULL;
    {
        float *x0 = retrlm__resid(m, 0);
        for (i = 0; i < N; i++) retrlm__embed_row(m, x0 + (size_t)i * D, tokens[i]);
    }
    for (l = 0; l < L; l++) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l), *xo = retrlm__resid(m, l + 1);
        const float *ffx; // the feed-forward's input: mid, or the cross-attention's output
        retrlm__layer_acts(m, l, &a);
        ffx = a.mid;
        retrlm__rmsnorm_forward(a.ln1, a.rstd1, x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm__mmw(m, a.q, a.ln1, RETRLM_T_WQ, l, N, D, D, 0)) ||
            (r = retrlm__mmw(m, a.k, a.ln1, RETRLM_T_WK, l, N, D, D, 0)) ||
            (r = retrlm__mmw(m, a.v, a.ln1, RETRLM_T_WV, l, N, D, D, 0)))
            return r;
        retrlm__rope(a.q, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(a.k, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__attention_forward(a.atty, a.att, a.q, a.k, a.v, m->lengths_, B, T, H, hd,
                                  !c->bidirectional);
        memcpy(a.mid, x, (size_t)N * D * sizeof(float));
        if ((r = retrlm__mmw(m, a.mid, a.atty, RETRLM_T_WO, l, N, D,
                               D, RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (retrlm__retro_slot(c, l) >= 0) {
            // chunked cross-attention: out = mid + CA(RMSNorm(mid)) Wo, before the feed-forward
            retrlm__racts ra;
            const float *E = rows ? m->retro_enc->hidden : NULL;
            const int De = c->retro_enc_dim, nr = rows * c->retro_len;
            retrlm__retro_layout(c, m->retro_, retrlm__retro_slot(c, l), &ra, NULL);
            retrlm__rmsnorm_forward(ra.ln, ra.rstd, a.mid,
                                    retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), N, D,
                                    c->norm_eps);
            if ((r = retrlm__mm(m, ra.q, ra.ln, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0),
                                N, D, D, 0)) ||
                (nr && (r = retrlm__mm(m, ra.k, E, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0),
                                       nr, D, De, 0))) ||
                (nr && (r = retrlm__mm(m, ra.v, E, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0),
                                       nr, D, De, 0))))
                return r;
            if (c->retro_smear)
                retrlm__cca_smear(ra.ks, ra.k, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                                  row_len, rows, c->retro_len, H, hd);
            retrlm__cca_forward(ra.y, ra.att, ra.q, c->retro_smear ? ra.ks : ra.k, ra.v, slot_row,
                                row_len, B, T, c->retro_chunk, c->retro_k, c->retro_len, H, hd);
            memcpy(ra.out, a.mid, (size_t)N * D * sizeof(float));
            if ((r = retrlm__mm(m, ra.out, ra.y, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0),
                                N, D, D, RETRLM_MATMUL_ACCUMULATE)))
                return r;
            ffx = ra.out;
        }
        retrlm__rmsnorm_forward(a.ln2, a.rstd2, ffx, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0),
                                N, D, c->norm_eps);
        if (l == L - 1 && L < c->n_layers) { // RPT's partial pass ends at its feed-forward input
            m->B = m->T = 0;
            m->hidden = NULL;
            return RETRLM_OK;
        }
        if ((r = retrlm__mmw(m, a.gate, a.ln2, RETRLM_T_W_GATE, l, N,
                               F, D, 0)) ||
            (r = retrlm__mmw(m, a.up, a.ln2, RETRLM_T_W_UP, l, N, F,
                               D, 0)))
            return r;
        retrlm__swiglu_forward(a.act, a.gate, a.up, (size_t)N * F);
        memcpy(xo, ffx, (size_t)N * D * sizeof(float));
        if ((r = retrlm__mmw(m, xo, a.act, RETRLM_T_W_DOWN, l, N, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(retrlm__lnf(m), retrlm__rstdf(m), retrlm__resid(m, c->n_layers),
                            m->param[RETRLM_T_FINAL_NORM], N, D, c->norm_eps);
    if (!(flags & RETRLM_FORWARD_NO_LOGITS) && !c->no_logits) {
        if ((r = retrlm__mmw(m, retrlm__logits(m), retrlm__lnf(m),
                             c->untied ? RETRLM_T_LM_HEAD : RETRLM_T_EMBED, 0, N, V, D, 0)))
            return r;
        m->logits = retrlm__logits(m);
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags) {
    return retrlm__forward(m, tokens, B, T, lengths, NULL, flags);
}

RETRLM_API retrlm_result retrlm_model_forward_retro(retrlm_model *m, const int *tokens, int B,
                                                    int T, const int *lengths,
                                                    const int *neighbours, int flags) {
    RETRLM_ASSERT(m && m->params);
    if (neighbours && !m->config.retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "model_forward_retro: the model has no RETRO blocks "
                            "(config retro_chunk 0)");
    return retrlm__forward(m, tokens, B, T, lengths, neighbours, flags);
}

RETRLM_API const float *retrlm_model_ffn_input(const retrlm_model *m, int layer) {
    retrlm__acts a;
    RETRLM_ASSERT(layer >= 0 && layer < m->config.n_layers);
    retrlm__layer_acts(m, layer, &a);
    return a.ln2;
}

RETRLM_API retrlm_result retrlm_model_rpt_embed(retrlm_model *m, const int *tokens, int B, int T,
                                                float *q, float *k) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, mc = c->retro_chunk;
    int U, b, u, t, d;
    float *pool;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && tokens);
    if (!c->rpt_dim)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed: the model has no RPT retriever "
                            "(config rpt_dim 0)");
    if (T < mc || T % mc)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed: %d tokens a sequence must be a "
                            "multiple of the chunk, %d", T, mc);
    if ((r = retrlm__forward(m, tokens, B, T, NULL, NULL, RETRLM__FORWARD_RPT))) return r;
    U = T / mc;
    pool = m->rpt_pool_;
    {
        const float *x = retrlm_model_ffn_input(m, c->rpt_layer - 1);
        const float inv = 1.0f / (float)mc;
        for (b = 0; b < B; b++)
            for (u = 0; u < U; u++) {
                float *o = pool + ((size_t)b * U + u) * D;
                const float *xs = x + ((size_t)b * T + (size_t)u * mc) * D;
                for (d = 0; d < D; d++) o[d] = 0.0f;
                for (t = 0; t < mc; t++)
                    for (d = 0; d < D; d++) o[d] += xs[(size_t)t * D + d];
                for (d = 0; d < D; d++) o[d] *= inv;
            }
    }
    m->rpt_B_ = B;
    m->rpt_T_ = T;
    if ((q && (r = retrlm__mm(m, q, pool, m->param[RETRLM_T_RPT_WQ], B * U, c->rpt_dim, D, 0))) ||
        (k && (r = retrlm__mm(m, k, pool, m->param[RETRLM_T_RPT_WK], B * U, c->rpt_dim, D, 0))))
        return r;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_rpt_embed_backward(retrlm_model *m, const float *dq,
                                                         const float *dk, float *dffn) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, mc = c->retro_chunk, B = m->rpt_B_, T = m->rpt_T_;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    const int U = B ? T / mc : 0, BU = B * U;
    float *pool = m->rpt_pool_, *dpool;
    const float inv = 1.0f / (float)mc;
    int b, u, t, d;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params && dffn);
    if (!m->grads)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed_backward: the model is inference-only");
    if (!c->rpt_dim || !B)
        return retrlm__fail(RETRLM_ERR_ARG, "model_rpt_embed_backward: no retrlm_model_rpt_embed "
                            "before it (or no RPT retriever)");
    dpool = pool + (size_t)BU * D;
    memset(dpool, 0, (size_t)BU * D * sizeof(float));
    if ((dq && ((r = retrlm__mm(m, m->grad[RETRLM_T_RPT_WQ], dq, pool, c->rpt_dim, D, BU, AB)) ||
                (r = retrlm__mm(m, dpool, dq, m->param[RETRLM_T_RPT_WQ], BU, D, c->rpt_dim,
                                RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))) ||
        (dk && ((r = retrlm__mm(m, m->grad[RETRLM_T_RPT_WK], dk, pool, c->rpt_dim, D, BU, AB)) ||
                (r = retrlm__mm(m, dpool, dk, m->param[RETRLM_T_RPT_WK], BU, D, c->rpt_dim,
                                RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))))
        return r;
    for (b = 0; b < B; b++)
        for (u = 0; u < U; u++) {
            const float *g = dpool + ((size_t)b * U + u) * D;
            for (t = 0; t < mc; t++) {
                float *o = dffn + ((size_t)b * T + (size_t)u * mc + t) * D;
                for (d = 0; d < D; d++) o[d] = g[d] * inv;
            }
        }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_backward(retrlm_model *m, const retrlm_model_grad_in *g) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int B = m->B, T = m->T, N = B * T;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    retrlm__work w;
    retrlm__rwork rw;
    retrlm_result r;
    int l, i;
    const int rows = c->retro_chunk ? m->retro_rows_ : 0, nr = rows * c->retro_len;
    const int De = c->retro_enc_dim;
    const int *slot_row = NULL, *row_len = NULL;
    RETRLM_ASSERT(m && g && N > 0);
    if (!m->grads) return retrlm__fail(RETRLM_ERR_ARG, "model_backward: the model is inference-only");
    retrlm__get_work(m, &w);
    if (c->retro_chunk) {
        size_t S = retrlm__retro_slots(c);
        retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
        slot_row = m->retro_ints_ + S * (size_t)c->retro_len;
        row_len = slot_row + S;
        if (nr) memset(rw.dE, 0, (size_t)nr * De * sizeof(float));
    }
    // head: dlnf = dlogits · Wout + dhidden; dWout += dlogitsᵀ · lnf
    memset(w.dln, 0, (size_t)N * D * sizeof(float));
    if (g->dlogits) {
        float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        float *gout = c->untied ? m->grad[RETRLM_T_LM_HEAD] : m->grad[RETRLM_T_EMBED];
        if ((r = retrlm__mm(m, w.dln, g->dlogits, wout, N, D, V, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, gout, g->dlogits, retrlm__lnf(m), V, D, N, AB)))
            return r;
    }
    if (g->dhidden)
        for (i = 0; i < N * D; i++) w.dln[i] += g->dhidden[i];
    retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, retrlm__resid(m, c->n_layers),
                             m->param[RETRLM_T_FINAL_NORM], retrlm__rstdf(m), N, D, 0);
    retrlm__sum_rows(m->grad[RETRLM_T_FINAL_NORM], w.dtmp, N, D);
    for (l = c->n_layers - 1; l >= 0; l--) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l);
        retrlm__layer_acts(m, l, &a);
        // feed-forward: xo = mid + act · Wdownᵀ
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 1), w.dx, a.act, D, F,
                               N, AB)) ||
            (r = retrlm__mm(m, w.dact, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), N, F,
                               D, RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__swiglu_backward(w.dgate, w.dact, w.dact, a.gate, a.up, (size_t)N * F);
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 1), w.dgate, a.ln2, F,
                               D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 1), w.dact, a.ln2, F, D,
                               N, AB)) ||
            (r = retrlm__mm(m, w.dln, w.dgate, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), N,
                               D, F, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, w.dln, w.dact, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), N, D,
                               F, RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (g->dffn_in && g->dffn_in[l]) {
            const float *e = g->dffn_in[l];
            for (i = 0; i < N * D; i++) w.dln[i] += e[i];
        }
        if (retrlm__retro_slot(c, l) >= 0) {
            // out = mid + CA(RMSNorm(mid)) Wo: w.dx is d(out); leaves d(mid) in w.dx
            retrlm__racts ra;
            const float *E = rows ? m->retro_enc->hidden : NULL;
            const int AB2 = RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
            retrlm__retro_layout(c, m->retro_, retrlm__retro_slot(c, l), &ra, NULL);
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, ra.out,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
            if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 1), w.dx, ra.y, D,
                                D, N, AB)) ||
                (r = retrlm__mm(m, w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0),
                                N, D, D, RETRLM_MATMUL_B_KN)))
                return r;
            if (nr) {
                memset(rw.dk, 0, (size_t)nr * D * sizeof(float));
                memset(rw.dv, 0, (size_t)nr * D * sizeof(float));
            }
            retrlm__cca_backward(w.dq, rw.dk, rw.dv, rw.datt, w.datty, ra.att, ra.q,
                                 c->retro_smear ? ra.ks : ra.k, ra.v, slot_row, row_len, B, T,
                                 c->retro_chunk, c->retro_k, c->retro_len, H, hd);
            if (c->retro_smear && nr)
                retrlm__cca_smear_backward(rw.dk, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 1),
                                           ra.k, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                                           row_len, rows, c->retro_len, H, hd);
            if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 1), w.dq, ra.ln,
                                D, D, N, AB)) ||
                (r = retrlm__mm(m, w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0),
                                N, D, D, RETRLM_MATMUL_B_KN)))
                return r;
            if (nr && ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 1), rw.dk,
                                       E, D, De, nr, AB)) ||
                       (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 1), rw.dv,
                                       E, D, De, nr, AB)) ||
                       (r = retrlm__mm(m, rw.dE, rw.dk,
                                       retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0), nr, De,
                                       D, AB2)) ||
                       (r = retrlm__mm(m, rw.dE, rw.dv,
                                       retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0), nr, De,
                                       D, AB2))))
                return r;
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), ra.rstd,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 1), w.dtmp, N, D);
        } else {
            retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                     retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2,
                                     N, D, 1);
            retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
        }
        // attention: mid = x + atty · Woᵀ
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 1), w.dx, a.atty, D, D, N,
                               AB)) ||
            (r = retrlm__mm(m, w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__attention_backward(w.dq, w.dk, w.dv, w.datt, w.datty, a.att, a.q, a.k, a.v,
                                   m->lengths_, B, T, H, hd, !c->bidirectional);
        retrlm__rope(w.dq, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        retrlm__rope(w.dk, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        if ((r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 1), w.dq, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 1), w.dk, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 1), w.dv, a.ln1, D, D, N, AB)) ||
            (r = retrlm__mm(m, w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN)) ||
            (r = retrlm__mm(m, w.dln, w.dk, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm__mm(m, w.dln, w.dv, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, x,
                                 retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), a.rstd1, N, D, 1);
        retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 1), w.dtmp, N, D);
    }
    // embedding: scatter-add by token, columns in parallel, tokens in order
    {
        int nchunks = (D + 63) / 64, ch;
        float *gw = m->grad[RETRLM_T_EMBED];
        const int *tok = m->tokens_;
        RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)D > RETRLM__PAR_ELEMS)
        for (ch = 0; ch < nchunks; ch++) {
            int d0 = ch * 64, d1 = RETRLM__MIN(D, d0 + 64), t, d;
            for (t = 0; t < N; t++) {
                float *gr = gw + (size_t)tok[t] * D;
                const float *dr = w.dx + (size_t)t * D;
                for (d = d0; d < d1; d++) gr[d] += dr[d];
            }
        }
    }
    if (nr) {
        // the neighbour encoder, from what every cross-attention layer sent back to its states
        retrlm_model_grad_in eg;
        memset(&eg, 0, sizeof eg);
        eg.dhidden = rw.dE;
        if ((r = retrlm_model_backward(m->retro_enc, &eg))) return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_lm_loss(retrlm_model *m, const int *targets, float *loss,
                                              int *count) {
    const int V = m->config.vocab_size, N = m->B * m->T;
    float *logits = retrlm__logits(m), *tl = retrlm__tokloss(m), inv;
    int i, n = 0;
    double sum = 0.0;
    if (!m->logits)
        return retrlm__fail(RETRLM_ERR_ARG, "model_lm_loss: the last forward computed no logits");
    for (i = 0; i < N; i++) {
        if (targets[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_lm_loss: target %d at %d is >= %d",
                                targets[i], i, V);
        n += targets[i] >= 0;
    }
    inv = n ? 1.0f / (float)n : 0.0f;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > RETRLM__PAR_ELEMS / 8)
    for (i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        int tg = targets[i], j;
        if (tg < 0) {
            tl[i] = 0.0f;
            for (j = 0; j < V; j++) z[j] = 0.0f;
            continue;
        }
        tl[i] = retrlm_logsumexp(z, V) - z[tg];
        retrlm_softmax(z, z, V);
        for (j = 0; j < V; j++) z[j] *= inv;
        z[tg] -= inv;
    }
    for (i = 0; i < N; i++) sum += tl[i];
    if (loss) *loss = n ? (float)(sum / n) : 0.0f;
    if (count) *count = n;
    return RETRLM_OK;
}

RETRLM_API double retrlm_model_nll(retrlm_model *m, const int *targets, int *count) {
    const int V = m->config.vocab_size, N = m->B * m->T;
    const float *logits = m->logits;
    float *tl = retrlm__tokloss(m);
    int i, n = 0;
    double sum = 0.0;
    RETRLM_ASSERT(logits);
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)V > RETRLM__PAR_ELEMS / 8)
    for (i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        int tg = targets[i];
        tl[i] = (tg >= 0 && tg < V) ? retrlm_logsumexp(z, V) - z[tg] : 0.0f;
    }
    for (i = 0; i < N; i++) {
        sum += tl[i];
        n += targets[i] >= 0 && targets[i] < V;
    }
    if (count) *count = n;
    return sum;
}

RETRLM_API void retrlm_model_mean_pool(const retrlm_model *m, float *out) {
    const int D = m->config.dim, T = m->T;
    int b, t, d;
    for (b = 0; b < m->B; b++) {
        float *o = out + (size_t)b * D, inv = 1.0f / (float)m->lengths_[b];
        for (d = 0; d < D; d++) o[d] = 0.0f;
        for (t = 0; t < m->lengths_[b]; t++) {
            const float *h = m->hidden + ((size_t)b * T + t) * D;
            for (d = 0; d < D; d++) o[d] += h[d];
        }
        for (d = 0; d < D; d++) o[d] *= inv;
    }
}

RETRLM_API void retrlm_model_mean_pool_backward(const retrlm_model *m, const float *dout,
                                                float *dhidden) {
    const int D = m->config.dim, T = m->T;
    int b, t, d;
    for (b = 0; b < m->B; b++) {
        const float *g = dout + (size_t)b * D;
        float inv = 1.0f / (float)m->lengths_[b];
        for (t = 0; t < T; t++) {
            float *h = dhidden + ((size_t)b * T + t) * D;
            for (d = 0; d < D; d++) h[d] = t < m->lengths_[b] ? g[d] * inv : 0.0f;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW. Work is split into fixed chunks of a group (never by thread), so the global norm and
// every update are the same for any thread count.

#define RETRLM__ADAM_CHUNK 16384

RETRLM_API retrlm_result retrlm_adamw_init(retrlm_adamw *o, const retrlm_adamw_config *cfg,
                                           const retrlm_adamw_group *groups, int n_groups) {
    int i;
    size_t n = 0, maxc = 1;
    RETRLM_ASSERT(o && (groups || n_groups < 1));
    memset(o, 0, sizeof *o);
    if (n_groups < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "adamw_init: no parameter groups (an inference-only "
                            "model has none)");
    if (cfg) o->config = *cfg;
    if (o->config.beta1 == 0.0f) o->config.beta1 = 0.9f;
    if (o->config.beta2 == 0.0f) o->config.beta2 = 0.95f;
    if (o->config.eps == 0.0f) o->config.eps = 1e-8f;
    if (o->config.clip_norm == 0.0f) o->config.clip_norm = 1.0f;
    if (o->config.min_lr_ratio == 0.0f) o->config.min_lr_ratio = 0.1f;
    if (o->config.min_lr_ratio < 0.0f) o->config.min_lr_ratio = 0.0f;
    if (!(o->config.beta1 > 0.0f && o->config.beta1 < 1.0f && o->config.beta2 > 0.0f &&
          o->config.beta2 < 1.0f && o->config.eps > 0.0f && o->config.warmup_steps >= 0 &&
          o->config.total_steps >= 0 && o->config.min_lr_ratio <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "adamw: betas must be in (0, 1), eps > 0, steps >= 0, "
                            "min_lr_ratio <= 1");
    for (i = 0; i < n_groups; i++) {
        RETRLM_ASSERT(groups[i].n == 0 || (groups[i].params && groups[i].grads));
        n += groups[i].n;
        maxc = RETRLM__MAX(maxc, (groups[i].n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
    }
    o->groups = (retrlm_adamw_group *)retrlm__alloc((size_t)n_groups, sizeof *o->groups);
    o->m = (float *)retrlm__calloc(n, 2 * sizeof(float));
    o->partial_ = (double *)retrlm__calloc(maxc, sizeof(double));
    if (!o->groups || !o->m || !o->partial_) {
        retrlm_adamw_free(o);
        return retrlm__fail(RETRLM_ERR_NOMEM, "adamw: no memory for %lu moments", (unsigned long)n);
    }
    memcpy(o->groups, groups, (size_t)n_groups * sizeof *groups);
    o->n_groups = n_groups;
    o->n = n;
    o->v = o->m + n;
    o->n_chunks_ = maxc;
    return RETRLM_OK;
}

RETRLM_API void retrlm_adamw_free(retrlm_adamw *o) {
    if (!o) return;
    RETRLM_FREE(o->groups);
    RETRLM_FREE(o->m);
    RETRLM_FREE(o->partial_);
    memset(o, 0, sizeof *o);
}

RETRLM_API float retrlm_adamw_lr_scale(const retrlm_adamw_config *cfg, int64_t step) {
    double minr = cfg->min_lr_ratio == 0.0f ? 0.1 : (cfg->min_lr_ratio < 0.0f ? 0.0 : cfg->min_lr_ratio);
    if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
        return (float)((double)(step + 1) / (double)cfg->warmup_steps);
    if (cfg->total_steps > cfg->warmup_steps) {
        double t = (double)(step - cfg->warmup_steps) / (double)(cfg->total_steps - cfg->warmup_steps);
        if (t > 1.0) t = 1.0;
        return (float)(minr + (1.0 - minr) * 0.5 * (1.0 + cos(3.141592653589793 * t)));
    }
    return 1.0f;
}

RETRLM_API void retrlm_adamw_step(retrlm_adamw *o) {
    const retrlm_adamw_config *c = &o->config;
    double sumsq = 0.0, norm;
    float clip = 1.0f, scale, b1 = c->beta1, b2 = c->beta2, bc1, bc2;
    size_t base = 0;
    int gi;
    for (gi = 0; gi < o->n_groups; gi++) {
        const float *g = o->groups[gi].grads;
        size_t n = o->groups[gi].n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 16)
        for (ch = 0; ch < nch; ch++) {
            size_t i0 = (size_t)ch * RETRLM__ADAM_CHUNK, i1 = RETRLM__MIN(n, i0 + RETRLM__ADAM_CHUNK), i;
            float s = 0.0f;
            RETRLM__SIMD_SUM(s)
            for (i = i0; i < i1; i++) s += g[i] * g[i];
            o->partial_[ch] = s;
        }
        for (ch = 0; ch < nch; ch++) sumsq += o->partial_[ch];
    }
    norm = sqrt(sumsq);
    o->last_grad_norm = (float)norm;
    if (c->clip_norm > 0.0f && norm > c->clip_norm) clip = (float)(c->clip_norm / norm);
    scale = retrlm_adamw_lr_scale(c, o->step);
    o->last_lr_scale = scale;
    o->step++;
    bc1 = (float)(1.0 - pow(b1, (double)o->step));
    bc2 = (float)(1.0 - pow(b2, (double)o->step));
    for (gi = 0; gi < o->n_groups; gi++) {
        retrlm_adamw_group *g = &o->groups[gi];
        float lr = g->lr * scale, wd = g->weight_decay, eps = c->eps;
        float *mm = o->m + base, *vv = o->v + base, *p = g->params;
        const float *gr = g->grads;
        size_t n = g->n;
        ptrdiff_t ch, nch = (ptrdiff_t)((n + RETRLM__ADAM_CHUNK - 1) / RETRLM__ADAM_CHUNK);
        RETRLM__PARALLEL_FOR_IF(nch > 16)
        for (ch = 0; ch < nch; ch++) {
            size_t i0 = (size_t)ch * RETRLM__ADAM_CHUNK, i1 = RETRLM__MIN(n, i0 + RETRLM__ADAM_CHUNK), i;
            for (i = i0; i < i1; i++) {
                float gg = gr[i] * clip, mh, vh;
                mm[i] = b1 * mm[i] + (1.0f - b1) * gg;
                vv[i] = b2 * vv[i] + (1.0f - b2) * gg * gg;
                mh = mm[i] / bc1;
                vh = vv[i] / bc2;
                p[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * p[i]);
            }
        }
        base += n;
    }
}

RETRLM_API int retrlm_model_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                         retrlm_adamw_group out[2]) {
    if (!m->grads) return 0;
    out[0].params = m->params;
    out[0].grads = m->grads;
    out[0].n = m->n_decay;
    out[0].lr = lr;
    out[0].weight_decay = weight_decay;
    out[1].params = m->params + m->n_decay;
    out[1].grads = m->grads + m->n_decay;
    out[1].n = m->n_params - m->n_decay;
    out[1].lr = lr;
    out[1].weight_decay = 0.0f;
    return out[1].n ? 2 : 1;
}

RETRLM_API int retrlm_model_retro_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                               retrlm_adamw_group out[2]) {
    // the cross-attention's matrices and the encoder's lie from CCA_WQ to n_decay, their gains
    // from CCA_NORM to the end (retrlm__model_alloc)
    float *mat = m->param[RETRLM_T_CCA_WQ], *gain = m->param[RETRLM_T_CCA_NORM];
    if (!m->config.retro_chunk || !m->grads) return 0;
    out[0].params = mat;
    out[0].grads = m->grad[RETRLM_T_CCA_WQ];
    out[0].n = (size_t)(m->params + m->n_decay - mat);
    out[0].lr = lr;
    out[0].weight_decay = weight_decay;
    out[1].params = gain;
    out[1].grads = m->grad[RETRLM_T_CCA_NORM];
    out[1].n = (size_t)(m->params + m->n_params - gain);
    out[1].lr = lr;
    out[1].weight_decay = 0.0f;
    return 2;
}

RETRLM_API retrlm_result retrlm_model_retro_tie_embedding(retrlm_model *m, uint64_t seed) {
    const retrlm_model_config *c = &m->config;
    retrlm_rng rng;
    float *R;
    size_t i, n;
    retrlm_result r;
    RETRLM_ASSERT(m && m->params);
    if (!c->retro_chunk || !m->retro_enc)
        return retrlm__fail(RETRLM_ERR_ARG, "model_retro_tie_embedding: the model has no RETRO blocks");
    if (c->inference) // its weights may be a read-only map
        return retrlm__fail(RETRLM_ERR_ARG, "model_retro_tie_embedding: the model is inference-only");
    n = (size_t)c->retro_enc_dim * (size_t)c->dim;
    R = (float *)retrlm__alloc(n, sizeof(float)); // (De, D): out, in
    if (!R) return retrlm__fail(RETRLM_ERR_NOMEM, "model_retro_tie_embedding: no memory");
    retrlm_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) R[i] = retrlm_rng_normal(&rng) / sqrtf((float)c->retro_enc_dim);
    r = retrlm__mm(m, m->retro_enc->param[RETRLM_T_EMBED], m->param[RETRLM_T_EMBED], R,
                   c->vocab_size, c->retro_enc_dim, c->dim, 0);
    RETRLM_FREE(R);
    return r;
}

// ---------------------------------------------------------------------------------------------
// training loop

RETRLM_API void retrlm_lm_train_state_init(retrlm_lm_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

RETRLM__PRIVATE retrlm_result retrlm__windows_bpb(retrlm_model *m, const int *tokens, size_t n,
                                                  size_t n_bytes, int T, size_t per,
                                                  retrlm__gather_fn gather, const void *ctx,
                                                  const char *what, double *bpb) {
    const int Bm = m->config.max_batch;
    size_t nwin, w0;
    double nats;
    int *inp, *tgt, *nbuf;
    retrlm_result r = RETRLM_OK;
    if (n < 1 || n_bytes < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: %lu tokens, %lu bytes: need >= 1", what,
                            (unsigned long)n, (unsigned long)n_bytes);
    nats = log((double)m->config.vocab_size); // the first token, predicted from nothing
    nwin = (n - 1 + (size_t)T - 1) / (size_t)T;
    inp = (int *)retrlm__alloc((size_t)Bm, ((size_t)2 * T + (gather ? per : 0)) * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory", what);
    tgt = inp + (size_t)Bm * T;
    nbuf = tgt + (size_t)Bm * T;
    for (w0 = 0; w0 < nwin && !r; w0 += (size_t)Bm) {
        int B = (int)RETRLM__MIN((size_t)Bm, nwin - w0), b, t;
        for (b = 0; b < B; b++) {
            size_t start = (w0 + (size_t)b) * (size_t)T;
            for (t = 0; t < T; t++) {
                size_t pos = start + (size_t)t;
                int valid = pos + 1 < n;
                inp[b * T + t] = valid ? tokens[pos] : 0;
                tgt[b * T + t] = valid ? tokens[pos + 1] : -1;
            }
            if (gather) gather(ctx, start, nbuf + (size_t)b * per);
        }
        r = gather ? retrlm_model_forward_retro(m, inp, B, T, NULL, nbuf, 0)
                   : retrlm_model_forward(m, inp, B, T, NULL, 0);
        if (r == RETRLM_OK) nats += retrlm_model_nll(m, tgt, NULL);
    }
    RETRLM_FREE(inp);
    if (r) return r;
    *bpb = nats / log(2.0) / (double)n_bytes;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                 size_t n_bytes, int seq_len, double *bpb) {
    const int T = seq_len > 0 ? RETRLM__MIN(seq_len, m->config.max_seq_len) : m->config.max_seq_len;
    RETRLM_ASSERT(m && tokens && bpb);
    return retrlm__windows_bpb(m, tokens, n, n_bytes, T, 0, NULL, NULL, "lm_bits_per_byte", bpb);
}

// One language-model update on inputs (B, T) with targets (-1: ignored), lengths (or NULL) and
// a RETRO model's neighbours (or NULL): forward, mean cross-entropy into *loss, backward, AdamW.
// Shared by every LM trainer.
RETRLM__PRIVATE retrlm_result retrlm__lm_step(retrlm_model *m, retrlm_adamw *opt, const int *inp,
                                              const int *tgt, int B, int T, const int *lengths,
                                              const int *neighbours, float *loss) {
    retrlm_model_grad_in gin;
    retrlm_result r;
    if ((r = retrlm__forward(m, inp, B, T, lengths, neighbours, 0)) ||
        (r = retrlm_model_lm_loss(m, tgt, loss, NULL)))
        return r;
    retrlm_model_zero_grad(m);
    memset(&gin, 0, sizeof gin);
    gin.dlogits = m->logits;
    if ((r = retrlm_model_backward(m, &gin))) return r;
    retrlm_adamw_step(opt);
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_train(retrlm_model *m, retrlm_adamw *opt,
                                         const retrlm_lm_train_config *cfg,
                                         retrlm_lm_train_state *st) {
    const int B = cfg->batch > 0 ? cfg->batch : m->config.max_batch;
    const int T = cfg->seq_len > 0 ? cfg->seq_len : m->config.max_seq_len;
    retrlm_result r = RETRLM_OK;
    int *inp, *tgt;
    RETRLM_ASSERT(m && opt && cfg && st);
    if (B > m->config.max_batch || T > m->config.max_seq_len || !cfg->train ||
        cfg->n_train < (size_t)T + 2 || cfg->steps < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lm_train: batch %d x %d (model %d x %d), %lu tokens: "
                            "need a stream longer than seq_len + 1", B, T, m->config.max_batch,
                            m->config.max_seq_len, (unsigned long)cfg->n_train);
    inp = (int *)retrlm__alloc((size_t)B * T, 2 * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "lm_train: no memory");
    tgt = inp + (size_t)B * T;
    while (st->step < cfg->steps && !r) {
        int b, t, final;
        float loss = 0.0f;
        for (b = 0; b < B; b++) {
            size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(cfg->n_train - (size_t)T));
            for (t = 0; t < T; t++) {
                inp[b * T + t] = cfg->train[off + (size_t)t];
                tgt[b * T + t] = cfg->train[off + (size_t)t + 1];
            }
        }
        if ((r = retrlm__lm_step(m, opt, inp, tgt, B, T, NULL, NULL, &loss))) break;
        if (cfg->losses) cfg->losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        final = st->step == cfg->steps;
        if (cfg->valid && cfg->n_valid > 0 &&
            (final || (cfg->eval_every > 0 && st->step % cfg->eval_every == 0))) {
            if ((r = retrlm_lm_bits_per_byte(m, cfg->valid, cfg->n_valid, cfg->valid_bytes, T,
                                             &st->last_valid_bpb)))
                break;
            if ((r = retrlm__progress(cfg->progress, cfg->progress_user, "valid", (double)st->step,
                                      (double)cfg->steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (cfg->checkpoint &&
            (final || (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, st, cfg->checkpoint)))
            break;
#endif
        r = retrlm__progress(cfg->progress, cfg->progress_user, "train", (double)st->step, (double)cfg->steps);
    }
    RETRLM_FREE(inp);
    return r;
}

// ---------------------------------------------------------------------------------------------
// generation: one token at a time against a KV cache of (L, max_seq_len, D)

RETRLM_API retrlm_result retrlm_model_decode_neighbours(retrlm_model *m, int chunk,
                                                        const int *neighbours) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, k = c->retro_k, De = c->retro_enc_dim;
    retrlm__rwork rw;
    retrlm_result r;
    int rows, l, *dec_row, *dec_len;
    RETRLM_ASSERT(m && m->params);
    if (!c->retro_chunk || chunk < 0 || chunk > c->max_seq_len / c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode_neighbours: chunk %d of a model with "
                            "RETRO chunk %d and %d positions", chunk, c->retro_chunk,
                            c->max_seq_len);
    retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
    dec_row = m->retro_ints_ + retrlm__retro_slots(c) * ((size_t)c->retro_len + 2);
    dec_len = dec_row + k;
    m->retro_chunk_ = -1;
    rows = retrlm__retro_rows(m, neighbours, 1, m->retro_ints_, dec_row, dec_len,
                              "model_decode_neighbours");
    if (rows < 0) return RETRLM_ERR_ARG;
    if ((r = retrlm__retro_encode(m, rows, dec_len))) return r;
    for (l = 0; l < c->n_layers && rows; l++) {
        int slot = retrlm__retro_slot(c, l), nr = rows * c->retro_len;
        size_t at = (size_t)(slot < 0 ? 0 : slot) * (size_t)k * c->retro_len * D;
        if (slot < 0) continue;
        if ((r = retrlm__mm(m, rw.kc + at, m->retro_enc->hidden,
                            retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WK, l, 0), nr, D, De, 0)) ||
            (r = retrlm__mm(m, rw.vc + at, m->retro_enc->hidden,
                            retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WV, l, 0), nr, D, De, 0)))
            return r;
        if (c->retro_smear)
            retrlm__cca_smear(rw.kc + at, rw.kc + at, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_SMEAR, l, 0),
                              dec_len, rows, c->retro_len, c->n_heads, D / c->n_heads);
    }
    m->retro_chunk_ = chunk;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const float scale = 1.0f / sqrtf((float)hd);
    retrlm__work w;
    retrlm_result r;
    float rstd;
    int l, h, u = -1;
    RETRLM_ASSERT(m && m->params);
    if (token < 0 || token >= V || pos < 0 || pos >= c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: token %d (vocabulary %d) at position "
                            "%d (max %d)", token, V, pos, c->max_seq_len);
    if (c->retro_chunk && (u = retrlm__cca_chunk(pos, c->retro_chunk)) >= 0 &&
        u != m->retro_chunk_)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: position %d reads the neighbours of "
                            "chunk %d; give them first (retrlm_model_decode_neighbours)", pos, u);
    retrlm__get_work(m, &w);
    retrlm__embed_row(m, w.x, token);
    for (l = 0; l < c->n_layers; l++) {
        float *kc = w.kc + ((size_t)l * c->max_seq_len) * D, *vc = w.vc + ((size_t)l * c->max_seq_len) * D;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm__mmw(m, w.q, w.xn, RETRLM_T_WQ, l, 1, D, D, 0)) ||
            (r = retrlm__mmw(m, kc + (size_t)pos * D, w.xn, RETRLM_T_WK, l,
                             1, D, D, 0)) ||
            (r = retrlm__mmw(m, vc + (size_t)pos * D, w.xn, RETRLM_T_WV, l,
                             1, D, D, 0)))
            return r;
        retrlm__rope(w.q, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(kc + (size_t)pos * D, 1, 1, pos, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        RETRLM__PARALLEL_FOR_IF(H > 1 && (size_t)pos * D > 65536)
        for (h = 0; h < H; h++) {
            float *p = w.att + (size_t)h * c->max_seq_len, mx = -FLT_MAX, sum = 0.0f;
            const float *qh = w.q + (size_t)h * hd;
            float *yh = w.y + (size_t)h * hd;
            int j, d;
            for (j = 0; j <= pos; j++) {
                p[j] = retrlm_dot(qh, kc + (size_t)j * D + (size_t)h * hd, hd) * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (j = 0; j <= pos; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            for (d = 0; d < hd; d++) yh[d] = 0.0f;
            for (j = 0; j <= pos; j++) {
                const float *vj = vc + (size_t)j * D + (size_t)h * hd;
                float pj = p[j] / sum;
                for (d = 0; d < hd; d++) yh[d] += pj * vj[d];
            }
        }
        if ((r = retrlm__mmw(m, w.x, w.y, RETRLM_T_WO, l, 1, D, D,
                               RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (u >= 0 && retrlm__retro_slot(c, l) >= 0) {
            // chunked cross-attention against the cached neighbours of chunk u
            retrlm__rwork rw;
            const int k = c->retro_k, *dec_row;
            size_t at = (size_t)retrlm__retro_slot(c, l) * (size_t)k * c->retro_len * D;
            retrlm__retro_layout(c, m->retro_, 0, NULL, &rw);
            dec_row = m->retro_ints_ + retrlm__retro_slots(c) * ((size_t)c->retro_len + 2);
            retrlm__rmsnorm_forward(w.xn, &rstd, w.x,
                                    retrlm_model_tensor_ptr(m, RETRLM_T_CCA_NORM, l, 0), 1, D,
                                    c->norm_eps);
            if ((r = retrlm__mm(m, w.q, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WQ, l, 0), 1,
                                D, D, 0)))
                return r;
            retrlm__cca_query(w.y, rw.att, w.q, rw.kc + at, rw.vc + at, dec_row, dec_row + k, k,
                              c->retro_len, H, hd);
            if ((r = retrlm__mm(m, w.x, w.y, retrlm_model_tensor_ptr(m, RETRLM_T_CCA_WO, l, 0), 1,
                                D, D, RETRLM_MATMUL_ACCUMULATE)))
                return r;
        }
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm__mmw(m, w.gate, w.xn, RETRLM_T_W_GATE, l, 1, F,
                               D, 0)) ||
            (r = retrlm__mmw(m, w.up, w.xn, RETRLM_T_W_UP, l, 1, F, D, 0)))
            return r;
        retrlm__swiglu_forward(w.gate, w.gate, w.up, (size_t)F);
        if ((r = retrlm__mmw(m, w.x, w.gate, RETRLM_T_W_DOWN, l, 1, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(w.hid, &rstd, w.x, m->param[RETRLM_T_FINAL_NORM], 1, D, c->norm_eps);
    if ((r = retrlm__mmw(m, w.logits, w.hid, c->untied ? RETRLM_T_LM_HEAD : RETRLM_T_EMBED, 0, 1,
                         V, D, 0)))
        return r;
    m->step_logits = w.logits;
    m->step_hidden = w.hid;
    return RETRLM_OK;
}

RETRLM_API int retrlm_model_sample(retrlm_model *m, const float *logits, const retrlm_sampler *s,
                                   retrlm_rng *rng) {
    const int V = m->config.vocab_size;
    retrlm__work w;
    int i, k, keep;
    float u, mass;
    if (!s || s->temperature <= 0.0f) {
        int best = 0;
        for (i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    retrlm__get_work(m, &w);
    for (i = 0; i < V; i++) w.probs[i] = logits[i] / s->temperature;
    retrlm_softmax(w.probs, w.probs, V);
    k = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    if (k == V && !(s->top_p > 0.0f && s->top_p < 1.0f)) {
        // the whole distribution: inverse CDF
        u = retrlm_rng_float(rng);
        mass = 0.0f;
        for (i = 0; i < V; i++) {
            mass += w.probs[i];
            if (u < mass) return i;
        }
        for (i = V - 1; i > 0 && w.probs[i] <= 0.0f; i--) {}
        return i;
    }
    k = retrlm_topk_select(w.probs, V, k, m->ids_, w.scores); // best first, ties by id
    if (k < 1) return 0;
    mass = 0.0f;
    for (i = 0; i < k; i++) mass += w.scores[i];
    keep = k;
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        float cum = 0.0f;
        for (i = 0; i < k; i++) {
            cum += w.scores[i];
            if (cum >= s->top_p * mass) {
                keep = i + 1;
                break;
            }
        }
        mass = 0.0f;
        for (i = 0; i < keep; i++) mass += w.scores[i];
    }
    u = retrlm_rng_float(rng) * mass;
    for (i = 0; i < keep; i++) {
        u -= w.scores[i];
        if (u < 0.0f) return (int)m->ids_[i];
    }
    return (int)m->ids_[keep - 1];
}

// decode; a RETRO model without neighbours (an empty set for each chunk as it is reached)
static retrlm_result retrlm__decode_plain(retrlm_model *m, int token, int pos) {
    int mch = m->config.retro_chunk;
    retrlm_result r;
    if (mch && pos >= mch - 1 && (pos - mch + 1) % mch == 0 &&
        (r = retrlm_model_decode_neighbours(m, (pos - mch + 1) / mch, NULL)))
        return r;
    return retrlm_model_decode(m, token, pos);
}

RETRLM_API retrlm_result retrlm_model_generate(retrlm_model *m, const int *prompt, int n_prompt,
                                               int n_new, const retrlm_sampler *s,
                                               retrlm_rng *rng, int *out, int *n_out) {
    retrlm_result r;
    int pos, got = 0, tok;
    RETRLM_ASSERT(m && prompt && (out || n_new == 0) && (rng || !s || s->temperature <= 0.0f));
    if (n_out) *n_out = 0;
    if (n_prompt < 1 || n_prompt > m->config.max_seq_len || n_new < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "model_generate: prompt of %d tokens (1..%d), %d new",
                            n_prompt, m->config.max_seq_len, n_new);
    for (pos = 0; pos < n_prompt; pos++)
        if ((r = retrlm__decode_plain(m, prompt[pos], pos))) return r;
    while (got < n_new) {
        tok = retrlm_model_sample(m, m->step_logits, s, rng);
        out[got++] = tok;
        if (n_out) *n_out = got;
        if (got == n_new || pos >= m->config.max_seq_len) break;
        if ((r = retrlm__decode_plain(m, tok, pos++))) return r;
    }
    return RETRLM_OK;
}
/* ---- retrlm_impl/checkpoint.c ---- */

// ---------------------------------------------------------------------------------------------
// checkpoint: a model's file in the container format (kind "model"): config and weights, and
// for resuming, the AdamW moments and step, the training step and the RNG; to a path or a
// buffer. Also the tokenizer fingerprint a model file may record (retrlm_model_file_*_tokenizer).
// The bi-encoder's files (encoder.c) store each side with retrlm__ckpt_add_model and _load.

#define RETRLM__CKPT_KIND "model"
#define RETRLM__CKPT_NCFG 9
#define RETRLM__CKPT_NRETRO 8

// section name prefix + name, for files holding more than one model (an encoder's two sides)
static const char *retrlm__ckpt_name(char *buf, const char *prefix, const char *name) {
    snprintf(buf, RETRLM_IO_NAME_MAX + 1, "%s%s", prefix, name);
    return buf;
}

// adds m's config and weights to w as sections prefix + "config", "config_f", "params"
RETRLM__PRIVATE retrlm_result retrlm__ckpt_add_model(const retrlm_model *m, retrlm_writer *w,
                                                     const char *prefix) {
    const retrlm_model_config *c = &m->config;
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    char name[RETRLM_IO_NAME_MAX + 1];
    retrlm_result r;
    ci[0] = c->vocab_size; ci[1] = c->dim; ci[2] = c->n_layers; ci[3] = c->n_heads;
    ci[4] = c->ffn_dim; ci[5] = c->max_seq_len; ci[6] = c->max_batch; ci[7] = c->untied;
    ci[8] = c->bidirectional;
    cf[0] = c->rope_theta; cf[1] = c->norm_eps; cf[2] = c->init_std;
    if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "config"), RETRLM_DTYPE_I32,
                                    ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "config_f"),
                                    RETRLM_DTYPE_F32, cf, 3)))
        return r;
    if (c->retro_chunk) {
        // only RETRO models carry the section: plain checkpoints stay as they were
        int32_t rc[RETRLM__CKPT_NRETRO];
        rc[0] = c->retro_chunk; rc[1] = c->retro_k; rc[2] = c->retro_len; rc[3] = c->retro_start;
        rc[4] = c->retro_every; rc[5] = c->retro_enc_dim; rc[6] = c->retro_enc_layers;
        rc[7] = c->retro_enc_heads;
        if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "retro"),
                                        RETRLM_DTYPE_I32, rc, RETRLM__CKPT_NRETRO)))
            return r;
        if (c->retro_smear) { // only where set: files without it read as before
            int32_t sm = 1;
            if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "retro_smear"),
                                            RETRLM_DTYPE_I32, &sm, 1)))
                return r;
        }
        if (c->rpt_dim) { // likewise
            int32_t rp[2];
            rp[0] = c->rpt_dim;
            rp[1] = c->rpt_layer;
            if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "rpt"),
                                            RETRLM_DTYPE_I32, rp, 2)))
                return r;
        }
    }
    if (retrlm_model_is_q8(m)) { // scales, then int8 values, each one block (retrlm__q8_place)
        size_t nq, ns;
        retrlm__q8_place(NULL, c, NULL, NULL, &nq, &ns);
        if ((r = retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "q8_scales"),
                                   RETRLM_DTYPE_F32, m->q8s_[RETRLM_T_EMBED], ns)) ||
            (r = retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "q8"), RETRLM_DTYPE_I8,
                                   m->q8_[RETRLM_T_EMBED], nq)))
            return r;
    }
    return retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "params"), RETRLM_DTYPE_F32,
                             m->params, m->n_params);
}

static retrlm_result retrlm__ckpt_writer(const retrlm_model *m, const retrlm_adamw *opt,
                                         const retrlm_lm_train_state *st, retrlm_writer *w) {
    retrlm_result r;
    if ((r = retrlm_writer_init(w, RETRLM__CKPT_KIND))) return r;
    if ((r = retrlm__ckpt_add_model(m, w, ""))) return r;
    if (opt) {
        int64_t s = opt->step;
        // a RETRO-fitting optimiser holds only the RETRO parameters' moments
        if (opt->n > m->n_params)
            return retrlm__fail(RETRLM_ERR_ARG, "model_save: the optimiser holds %lu floats, the "
                                "model %lu", (unsigned long)opt->n, (unsigned long)m->n_params);
        if ((r = retrlm_writer_add(w, "adamw_m", RETRLM_DTYPE_F32, opt->m, opt->n)) ||
            (r = retrlm_writer_add(w, "adamw_v", RETRLM_DTYPE_F32, opt->v, opt->n)) ||
            (r = retrlm_writer_add_copy(w, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
    }
    if (st) {
        int64_t s = st->step;
        double f[2];
        f[0] = st->last_loss;
        f[1] = st->last_valid_bpb;
        if ((r = retrlm_writer_add_copy(w, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_writer_add_copy(w, "rng", RETRLM_DTYPE_U64, st->rng.s, 4)) ||
            (r = retrlm_writer_add_copy(w, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_save_memory(const retrlm_model *m, const retrlm_adamw *opt,
                                                  const retrlm_lm_train_state *st, void *buf,
                                                  size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

RETRLM__PRIVATE retrlm_result retrlm__ckpt_load(retrlm_model *m, const retrlm_reader *rd,
                                                const retrlm_model_config *over, int in_place,
                                                const char *prefix) {
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    char name[RETRLM_IO_NAME_MAX + 1];
    retrlm_model_config c;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "config"), RETRLM_DTYPE_I32,
                                ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "config_f"), RETRLM_DTYPE_F32,
                                cf, 3)))
        return r;
    memset(&c, 0, sizeof c);
    c.vocab_size = ci[0]; c.dim = ci[1]; c.n_layers = ci[2]; c.n_heads = ci[3];
    c.ffn_dim = ci[4]; c.max_seq_len = ci[5]; c.max_batch = ci[6];
    c.rope_theta = cf[0]; c.norm_eps = cf[1]; c.init_std = cf[2];
    if (ci[7] != 0 && ci[7] != 1) return retrlm__fail(RETRLM_ERR_FORMAT, "model: config untied %d", ci[7]);
    if (ci[8] != 0 && ci[8] != 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config bidirectional %d", ci[8]);
    c.untied = ci[7]; c.bidirectional = ci[8];
    // every field of a file must be set: a zero would silently become a default
    if (ci[0] < 1 || ci[1] < 1 || ci[2] < 1 || ci[3] < 1 || ci[4] < 1 || ci[5] < 1 || ci[6] < 1 ||
        !(cf[0] > 0.0f) || !(cf[1] > 0.0f) || !(cf[2] > 0.0f))
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config has a field <= 0");
    {
        int32_t rc[RETRLM__CKPT_NRETRO], sm = 0;
        r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "retro"), RETRLM_DTYPE_I32, rc,
                               RETRLM__CKPT_NRETRO);
        if (r == RETRLM_OK) {
            int i;
            for (i = 0; i < RETRLM__CKPT_NRETRO; i++)
                if (rc[i] < (i == 3 ? 0 : 1))
                    return retrlm__fail(RETRLM_ERR_FORMAT, "model: RETRO config field %d is %d",
                                        i, rc[i]);
            c.retro_chunk = rc[0]; c.retro_k = rc[1]; c.retro_len = rc[2];
            c.retro_start = rc[3]; c.retro_every = rc[4]; c.retro_enc_dim = rc[5];
            c.retro_enc_layers = rc[6]; c.retro_enc_heads = rc[7];
            r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "retro_smear"),
                                   RETRLM_DTYPE_I32, &sm, 1);
            if (r == RETRLM_OK && sm != 1)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: retro_smear is %d (1 or absent)", sm);
            if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
            c.retro_smear = r == RETRLM_OK;
            {
                int32_t rp[2];
                r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "rpt"), RETRLM_DTYPE_I32,
                                       rp, 2);
                if (r == RETRLM_OK && (rp[0] < 1 || rp[1] < 1))
                    return retrlm__fail(RETRLM_ERR_FORMAT, "model: RPT config %d %d (both >= 1)",
                                        rp[0], rp[1]);
                if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
                if (r == RETRLM_OK) {
                    c.rpt_dim = rp[0];
                    c.rpt_layer = rp[1];
                }
            }
        } else if (r != RETRLM_ERR_NOT_FOUND) {
            return r;
        }
    }
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    {
        // the parameter count must match before anything big is allocated
        const void *p = NULL, *pq = NULL, *ps = NULL;
        size_t n = 0, tot, mats = 0, nq = 0, ns = 0, want_q = 0, want_s = 0;
        retrlm_model_config c2 = c;
        int q8;
        if ((r = retrlm__resolve_config(&c2))) return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
        tot = retrlm__param_count(&c2, &mats);
        r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "q8"), RETRLM_DTYPE_I8, &pq, &nq);
        if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
        if ((q8 = r == RETRLM_OK)) { // int8: the gains in params, the matrices in q8 and q8_scales
            if (c2.retro_chunk)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: int8 weights in a RETRO model");
            retrlm__q8_place(NULL, &c2, NULL, NULL, &want_q, &want_s);
            if ((r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "q8_scales"),
                                       RETRLM_DTYPE_F32, &ps, &ns)))
                return r;
            if (nq != want_q || ns != want_s)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: %lu int8 weights and %lu scales, the "
                                    "config needs %lu and %lu", (unsigned long)nq,
                                    (unsigned long)ns, (unsigned long)want_q, (unsigned long)want_s);
            tot -= mats;
        }
        if ((r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "params"), RETRLM_DTYPE_F32,
                                   &p, &n)))
            return r;
        if (n != tot)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: 'params' holds %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)tot);
        if (over) {
            c.no_logits = over->no_logits;
            c.inference = over->inference;
        }
        if (q8) c.inference = 1; // an int8 model is inference-only
        if (in_place && c.inference && rd->mapped_) {
            // the weights stay in the read-only map: a shell model lends them to the new one
            retrlm_model shell;
            memset(&shell, 0, sizeof shell);
            shell.params = (float *)p;
            shell.n_params = n;
            shell.q8_[RETRLM_T_EMBED] = (const int8_t *)pq;
            shell.q8s_[RETRLM_T_EMBED] = (const float *)ps;
            return retrlm__model_alloc(m, &c, &shell, NULL, q8);
        }
        if ((r = retrlm__model_alloc(m, &c, NULL, NULL, q8))) return r;
        if (n) memcpy(m->params, p, n * sizeof(float));
        if (q8) {
            memcpy((float *)(uintptr_t)m->q8s_[RETRLM_T_EMBED], ps, ns * sizeof(float));
            memcpy((int8_t *)(uintptr_t)m->q8_[RETRLM_T_EMBED], pq, nq);
        }
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_memory(retrlm_model *m, const void *buf, size_t size,
                                                  const retrlm_model_config *over) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over, 0, "");
    retrlm_reader_close(&rd);
    return r;
}

static retrlm_result retrlm__state_load(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                        const retrlm_reader *rd) {
    retrlm_result r;
    if (opt) {
        const void *pm = NULL, *pv = NULL;
        size_t nm = 0, nv = 0;
        int64_t s = 0;
        if ((r = retrlm_reader_get(rd, "adamw_m", RETRLM_DTYPE_F32, &pm, &nm)) ||
            (r = retrlm_reader_get(rd, "adamw_v", RETRLM_DTYPE_F32, &pv, &nv)) ||
            (r = retrlm_reader_read(rd, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
        if (nm != opt->n || nv != opt->n || s < 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: optimiser state of %lu/%lu floats at "
                                "step %lld, the optimiser has %lu", (unsigned long)nm,
                                (unsigned long)nv, (long long)s, (unsigned long)opt->n);
        if (nm) {
            memcpy(opt->m, pm, nm * sizeof(float));
            memcpy(opt->v, pv, nv * sizeof(float));
        }
        opt->step = s;
    }
    if (st) {
        int64_t s;
        uint64_t rs[4];
        double f[2];
        if ((r = retrlm_reader_read(rd, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_reader_read(rd, "rng", RETRLM_DTYPE_U64, rs, 4)) ||
            (r = retrlm_reader_read(rd, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
        if (s < 0 || (rs[0] | rs[1] | rs[2] | rs[3]) == 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: train step %lld or an all-zero rng state",
                                (long long)s);
        st->step = s;
        memcpy(st->rng.s, rs, sizeof rs);
        st->last_loss = (float)f[0];
        st->last_valid_bpb = f[1];
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_state_memory(retrlm_adamw *opt,
                                                        retrlm_lm_train_state *st,
                                                        const void *buf, size_t size) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_model_save(const retrlm_model *m, const retrlm_adamw *opt,
                                           const retrlm_lm_train_state *st, const char *path) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load(retrlm_model *m, const char *path,
                                           const retrlm_model_config *over) {
    retrlm_reader rd;
    const int inference = over && over->inference;
    // an inference-only model maps its weights: opening must not read them to check their CRC
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND,
                                         inference ? RETRLM_READER_NO_VERIFY_MAPPED : 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over, 1, "");
    if (r == RETRLM_OK && !m->own_[0]) { // the weights are the map's (inference, or int8)
        if (!(m->map_ = retrlm__alloc(1, sizeof rd))) {
            retrlm_model_free(m);
            retrlm_reader_close(&rd);
            return retrlm__fail(RETRLM_ERR_NOMEM, "model_load: no memory");
        }
        memcpy(m->map_, &rd, sizeof rd);
        return RETRLM_OK;
    }
    retrlm_reader_close(&rd);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_state(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                                 const char *path) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#define RETRLM__TOK_SECTION "cli.tokenizer_crc32"

RETRLM_API retrlm_result retrlm_model_file_set_tokenizer(const char *path, const retrlm_tokenizer *tok) {
    retrlm_reader rd;
    retrlm_writer w;
    retrlm_section_info info;
    const void *data;
    uint32_t fp;
    int i;
    retrlm_result r;
    RETRLM_ASSERT(path && tok);
    if ((r = retrlm_tokenizer_fingerprint(tok, &fp))) return r;
    if ((r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0))) return r;
    r = retrlm_writer_init(&w, RETRLM__CKPT_KIND);
    for (i = 0; !r && i < rd.n_sections; i++) { // every section as it is, but an older fingerprint
        retrlm_reader_section(&rd, i, &info);
        if (strcmp(info.name, RETRLM__TOK_SECTION) && !(r = retrlm_reader_get(&rd, info.name, info.type, &data, NULL)))
            r = retrlm_writer_add(&w, info.name, info.type, data, info.count);
    }
    if (!r) r = retrlm_writer_add_copy(&w, RETRLM__TOK_SECTION, RETRLM_DTYPE_U32, &fp, 1);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    retrlm_reader_close(&rd);
    return r;
}

RETRLM_API retrlm_result retrlm_model_file_check_tokenizer(const char *path, const retrlm_tokenizer *tok) {
    retrlm_reader rd;
    const void *data;
    size_t n;
    uint32_t fp, saved;
    retrlm_result r;
    RETRLM_ASSERT(path && tok);
    if ((r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, RETRLM_READER_NO_VERIFY))) return r;
    if (retrlm_reader_get(&rd, RETRLM__TOK_SECTION, RETRLM_DTYPE_U32, &data, &n) || n != 1) {
        retrlm_reader_close(&rd);
        retrlm__clear_error();
        return RETRLM_OK; // saved without one: nothing to compare
    }
    memcpy(&saved, data, sizeof saved);
    retrlm_reader_close(&rd);
    if ((r = retrlm_tokenizer_fingerprint(tok, &fp))) return r;
    if (fp != saved)
        return retrlm__fail(RETRLM_ERR_ARG, "%s was trained with another tokenizer (fingerprint %08lx, this one %08lx)",
                            path, (unsigned long)saved, (unsigned long)fp);
    return RETRLM_OK;
}
#endif
/* ---- retrlm_impl/safetensors.c ---- */

// ---------------------------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length, a JSON header, then the tensor bytes.
// Names and layout follow Hugging Face's LlamaForCausalLM; our rotary convention is theirs, so
// the matrices map one to one.
// This file owns retrlm_model_save_safetensors / _load_safetensors and their _memory variants.
// The JSON reader the header is parsed with is io.c's (retrlm__js_*); the rest needs the model's
// tensors, so it lives beside model.c rather than in io.

#define RETRLM__ST_PER_LAYER 9
static const char *const retrlm__st_layer_names[RETRLM__ST_PER_LAYER] = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight"};
static const retrlm_model_tensor retrlm__st_layer_tensor[RETRLM__ST_PER_LAYER] = {
    RETRLM_T_WQ,     RETRLM_T_WK,   RETRLM_T_WV,        RETRLM_T_WO,      RETRLM_T_W_GATE,
    RETRLM_T_W_UP,   RETRLM_T_W_DOWN, RETRLM_T_ATTN_NORM, RETRLM_T_FFN_NORM};

// rows x cols of tensor t (cols 0: a vector of rows)
static void retrlm__st_shape(const retrlm_model_config *c, retrlm_model_tensor t, int64_t *rows,
                             int64_t *cols) {
    int64_t v = c->vocab_size, d = c->dim, f = c->ffn_dim;
    switch (t) {
    case RETRLM_T_EMBED: case RETRLM_T_LM_HEAD: *rows = v; *cols = d; break;
    case RETRLM_T_W_GATE: case RETRLM_T_W_UP: *rows = f; *cols = d; break;
    case RETRLM_T_W_DOWN: *rows = d; *cols = f; break;
    case RETRLM_T_ATTN_NORM: case RETRLM_T_FFN_NORM: case RETRLM_T_FINAL_NORM: *rows = d; *cols = 0; break;
    default: *rows = d; *cols = d; break;
    }
}

// appends to the stb_ds string *s; 0 when memory runs out (*s as it was)
static int retrlm__st_append(char **s, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    int n, i;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    n = RETRLM__MIN(RETRLM__MAX(n, 0), (int)sizeof tmp - 1);
    if (!RETRLM__ARR_RESERVE(*s, (size_t)n)) return 0;
    for (i = 0; i < n; i++) stbds_arrput(*s, tmp[i]);
    return 1;
}

// one tensor of the file: its name, source floats and shape
typedef struct retrlm__st_item {
    char name[64];
    const float *data;
    int64_t rows, cols;
} retrlm__st_item;

RETRLM_API retrlm_result retrlm_model_save_safetensors_memory(const retrlm_model *m, void *buf,
                                                              size_t cap, size_t *size) {
    const retrlm_model_config *c = &m->config;
    retrlm__st_item *items = NULL, it;
    char *js = NULL;
    size_t off = 0, hlen, total, i, k;
    int l, j, ok;
    RETRLM_ASSERT(m && m->params && size);
    if (c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "safetensors: RETRO models have no Llama names for "
                            "their cross-attention and neighbour encoder; save a checkpoint");
    if (retrlm_model_is_q8(m))
        return retrlm__fail(RETRLM_ERR_ARG, "safetensors: the model's weights are int8; save a "
                            "checkpoint, or the f32 model it was quantized from");
    if (!RETRLM__ARR_RESERVE(items, 3 + (size_t)c->n_layers * RETRLM__ST_PER_LAYER))
        return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the tensor list");
    memset(&it, 0, sizeof it);
    strcpy(it.name, "model.embed_tokens.weight");
    it.data = m->param[RETRLM_T_EMBED];
    retrlm__st_shape(c, RETRLM_T_EMBED, &it.rows, &it.cols);
    stbds_arrput(items, it);
    for (l = 0; l < c->n_layers; l++)
        for (j = 0; j < RETRLM__ST_PER_LAYER; j++) {
            retrlm_model_tensor t = retrlm__st_layer_tensor[j];
            snprintf(it.name, sizeof it.name, "model.layers.%d.%s", l, retrlm__st_layer_names[j]);
            it.data = retrlm_model_tensor_ptr(m, t, l, 0);
            retrlm__st_shape(c, t, &it.rows, &it.cols);
            stbds_arrput(items, it);
        }
    strcpy(it.name, "model.norm.weight");
    it.data = m->param[RETRLM_T_FINAL_NORM];
    retrlm__st_shape(c, RETRLM_T_FINAL_NORM, &it.rows, &it.cols);
    stbds_arrput(items, it);
    if (c->untied) {
        strcpy(it.name, "lm_head.weight");
        it.data = m->param[RETRLM_T_LM_HEAD];
        retrlm__st_shape(c, RETRLM_T_LM_HEAD, &it.rows, &it.cols);
        stbds_arrput(items, it);
    }
    ok = retrlm__st_append(&js, "{\"__metadata__\":{\"format\":\"pt\",\"model_type\":\"llama\","
                      "\"vocab_size\":\"%d\",\"hidden_size\":\"%d\",\"intermediate_size\":\"%d\","
                      "\"num_hidden_layers\":\"%d\",\"num_attention_heads\":\"%d\","
                      "\"num_key_value_heads\":\"%d\",\"max_position_embeddings\":\"%d\",",
                      c->vocab_size, c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_heads,
                      c->max_seq_len);
    ok = ok && retrlm__st_append(&js, "\"rope_theta\":\"%.9g\",\"rms_norm_eps\":\"%.9g\","
                      "\"tie_word_embeddings\":\"%s\",\"bidirectional\":\"%d\"}",
                      (double)c->rope_theta, (double)c->norm_eps, c->untied ? "false" : "true",
                      c->bidirectional);
    for (i = 0; i < (size_t)stbds_arrlen(items); i++) {
        size_t n = (size_t)items[i].rows * (size_t)(items[i].cols ? items[i].cols : 1);
        if (items[i].cols)
            ok = ok && retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (long long)items[i].cols, (unsigned long)off,
                              (unsigned long)(off + 4 * n));
        else
            ok = ok && retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (unsigned long)off, (unsigned long)(off + 4 * n));
        off += 4 * n;
    }
    if (!ok || !RETRLM__ARR_RESERVE(js, 8)) {
        stbds_arrfree(js);
        stbds_arrfree(items);
        return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the header");
    }
    stbds_arrput(js, '}');
    while (stbds_arrlen(js) % 8) stbds_arrput(js, ' ');
    hlen = (size_t)stbds_arrlen(js);
    total = 8 + hlen + off;
    *size = total;
    if (buf) {
        unsigned char *p = (unsigned char *)buf;
        if (cap < total) {
            stbds_arrfree(js);
            stbds_arrfree(items);
            return retrlm__fail(RETRLM_ERR_RANGE, "safetensors: buffer of %lu bytes, need %lu",
                                (unsigned long)cap, (unsigned long)total);
        }
        retrlm__put_u64(p, (uint64_t)hlen);
        memcpy(p + 8, js, hlen);
        p += 8 + hlen;
        for (i = 0; i < (size_t)stbds_arrlen(items); i++) {
            size_t n = (size_t)items[i].rows * (size_t)(items[i].cols ? items[i].cols : 1);
            if (retrlm__host_is_le()) memcpy(p, items[i].data, 4 * n);
            else
                for (k = 0; k < n; k++) {
                    uint32_t u;
                    memcpy(&u, items[i].data + k, 4);
                    retrlm__put_u32(p + 4 * k, u);
                }
            p += 4 * n;
        }
    }
    stbds_arrfree(js);
    stbds_arrfree(items);
    return RETRLM_OK;
}

// ---- reading: the header (JSON) into entries, the config from them, then the tensors
typedef struct retrlm__st_entry {
    char     name[128];
    int      f32;           /* dtype is F32 */
    int      ndim;
    int64_t  shape[8];
    uint64_t off0, off1;
    int      tensor, layer;  /* what it is; tensor -1 if unknown */
} retrlm__st_entry;

// parses one tensor description {"dtype":..., "shape":[...], "data_offsets":[a,b]}
static int retrlm__st_parse_tensor(retrlm__js *j, retrlm__st_entry *e) {
    char key[32], val[32];
    int first = 1, have = 0;
    if (!retrlm__js_char(j, '{')) return 0;
    if (retrlm__js_char(j, '}')) return 0;
    while (1) {
        if (!first && !retrlm__js_char(j, ',')) break;
        first = 0;
        if (!retrlm__js_string(j, key, sizeof key) || !retrlm__js_char(j, ':')) return 0;
        if (!strcmp(key, "dtype")) {
            if (!retrlm__js_string(j, val, sizeof val)) return 0;
            e->f32 = !strcmp(val, "F32");
            have |= 1;
        } else if (!strcmp(key, "shape")) {
            uint64_t v;
            if (!retrlm__js_char(j, '[')) return 0;
            e->ndim = 0;
            if (!retrlm__js_char(j, ']')) {
                do {
                    if (e->ndim >= 8 || !retrlm__js_uint(j, &v) || v > ((uint64_t)1 << 40)) return 0;
                    e->shape[e->ndim++] = (int64_t)v;
                } while (retrlm__js_char(j, ','));
                if (!retrlm__js_char(j, ']')) return 0;
            }
            have |= 2;
        } else if (!strcmp(key, "data_offsets")) {
            if (!retrlm__js_char(j, '[') || !retrlm__js_uint(j, &e->off0) ||
                !retrlm__js_char(j, ',') || !retrlm__js_uint(j, &e->off1) || !retrlm__js_char(j, ']'))
                return 0;
            have |= 4;
        } else if (!retrlm__js_skip(j, 1))
            return 0;
    }
    return retrlm__js_char(j, '}') && have == 7;
}

// which of our tensors a Llama name is: sets e->tensor and e->layer
static void retrlm__st_classify(retrlm__st_entry *e) {
    const char *n = e->name;
    e->tensor = -1;
    e->layer = 0;
    if (!strcmp(n, "model.embed_tokens.weight")) e->tensor = RETRLM_T_EMBED;
    else if (!strcmp(n, "lm_head.weight")) e->tensor = RETRLM_T_LM_HEAD;
    else if (!strcmp(n, "model.norm.weight")) e->tensor = RETRLM_T_FINAL_NORM;
    else if (!strncmp(n, "model.layers.", 13)) {
        const char *p = n + 13;
        long l = 0;
        int k, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            l = l * 10 + (*p++ - '0');
            digits++;
        }
        if (!digits || *p != '.' || l >= 65536 || (digits > 1 && n[13] == '0')) return;
        p++;
        for (k = 0; k < RETRLM__ST_PER_LAYER; k++)
            if (!strcmp(p, retrlm__st_layer_names[k])) {
                e->tensor = (int)retrlm__st_layer_tensor[k];
                e->layer = (int)l;
            }
    }
}

// The metadata values the loader reads (strings in safetensors' __metadata__)
enum { RETRLM__ST_HEADS, RETRLM__ST_THETA, RETRLM__ST_EPS, RETRLM__ST_SEQ, RETRLM__ST_BIDIR, RETRLM__ST_META };

static retrlm_result retrlm__st_bad(const retrlm__js *j, const char *header, const char *what) {
    return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %s at header byte %ld", what, (long)(j->p - header));
}

// The header's JSON object (hlen bytes at h): its tensors appended to *ents, the metadata this
// loader reads into meta (other keys skipped)
static retrlm_result retrlm__st_header(const char *h, uint64_t hlen, retrlm__st_entry **ents,
                                       char meta[RETRLM__ST_META][32]) {
    static const char *const keys[RETRLM__ST_META] = {"num_attention_heads", "rope_theta", "rms_norm_eps",
                                                      "max_position_embeddings", "bidirectional"};
    retrlm__js j;
    retrlm__st_entry e;
    int first = 1, k;
    j.p = h;
    j.end = h + hlen;
    if (!retrlm__js_char(&j, '{')) return retrlm__st_bad(&j, h, "header is not a JSON object");
    if (!retrlm__js_char(&j, '}'))
        while (1) {
            if (!first && !retrlm__js_char(&j, ',')) {
                if (!retrlm__js_char(&j, '}')) return retrlm__st_bad(&j, h, "expected ',' or '}'");
                break;
            }
            first = 0;
            memset(&e, 0, sizeof e);
            if (!retrlm__js_string(&j, e.name, sizeof e.name) || !retrlm__js_char(&j, ':'))
                return retrlm__st_bad(&j, h, "bad key");
            if (!strcmp(e.name, "__metadata__")) {
                char key[64], val[32];
                int f2 = 1;
                if (!retrlm__js_char(&j, '{')) return retrlm__st_bad(&j, h, "__metadata__ is not an object");
                if (!retrlm__js_char(&j, '}'))
                    while (1) {
                        if (!f2 && !retrlm__js_char(&j, ',')) {
                            if (!retrlm__js_char(&j, '}')) return retrlm__st_bad(&j, h, "bad __metadata__");
                            break;
                        }
                        f2 = 0;
                        if (!retrlm__js_string(&j, key, sizeof key) || !retrlm__js_char(&j, ':'))
                            return retrlm__st_bad(&j, h, "bad __metadata__ key");
                        retrlm__js_ws(&j);
                        if (j.p < j.end && *j.p == '"' && retrlm__js_string(&j, val, sizeof val)) {
                            for (k = 0; k < RETRLM__ST_META; k++)
                                if (!strcmp(key, keys[k])) strcpy(meta[k], val);
                        } else if (!retrlm__js_skip(&j, 1))
                            return retrlm__st_bad(&j, h, "bad __metadata__ value");
                    }
                continue;
            }
            if (!retrlm__st_parse_tensor(&j, &e)) return retrlm__st_bad(&j, h, "bad tensor description");
            retrlm__st_classify(&e);
            if (!RETRLM__ARR_RESERVE(*ents, 1)) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the tensor list");
            stbds_arrput(*ents, e);
        }
    retrlm__js_ws(&j);
    return j.p == j.end ? RETRLM_OK : retrlm__st_bad(&j, h, "bytes after the header object");
}

// The model's config from the tensors (ne, whose data is dsize bytes; each checked against its
// shape and dtype), the metadata and the hint: the embedding gives V and D, the gate projection F,
// the largest layer index + 1 the layer count
static retrlm_result retrlm__st_config(const retrlm__st_entry *ents, size_t ne, size_t dsize,
                                       char meta[RETRLM__ST_META][32], const retrlm_model_config *hint,
                                       retrlm_model_config *c) {
    int L = 0, F = 0, found_embed = -1, untied = 0, k;
    size_t i;
    retrlm_model_config c2;
    retrlm_result r;
    for (i = 0; i < ne; i++) {
        const retrlm__st_entry *x = &ents[i];
        uint64_t n = 1;
        for (k = 0; k < x->ndim; k++) {
            if (x->shape[k] && n > UINT64_MAX / 8 / (uint64_t)x->shape[k])
                return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': its shape overflows", x->name);
            n *= (uint64_t)x->shape[k];
        }
        if (x->off0 > x->off1 || x->off1 > dsize)
            return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': data_offsets outside the data", x->name);
        if (x->tensor < 0) continue;
        if (!x->f32) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "safetensors: tensor '%s' is not F32", x->name);
        if (x->off1 - x->off0 != 4 * n)
            return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': data_offsets disagree with the shape", x->name);
        if (x->tensor == RETRLM_T_EMBED) found_embed = (int)i;
        if (x->tensor == RETRLM_T_LM_HEAD) untied = 1;
        if (x->tensor == RETRLM_T_W_GATE && x->ndim == 2 && x->shape[0] <= RETRLM__MAX_DIM) F = (int)x->shape[0];
        if (x->tensor != RETRLM_T_EMBED && x->tensor != RETRLM_T_LM_HEAD &&
            x->tensor != RETRLM_T_FINAL_NORM && x->layer + 1 > L)
            L = x->layer + 1;
    }
    if (found_embed < 0 || ents[found_embed].ndim != 2 || ents[found_embed].shape[0] < 1 ||
        ents[found_embed].shape[1] < 1 || ents[found_embed].shape[0] > RETRLM__MAX_DIM ||
        ents[found_embed].shape[1] > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: no 2-d model.embed_tokens.weight");
    memset(c, 0, sizeof *c);
    c->vocab_size = (int)ents[found_embed].shape[0];
    c->dim = (int)ents[found_embed].shape[1];
    c->n_layers = L;
    c->ffn_dim = F;
    c->untied = untied;
    c->bidirectional = meta[RETRLM__ST_BIDIR][0] == '1';
    if (hint && hint->n_heads > 0) c->n_heads = hint->n_heads;
    else if (meta[RETRLM__ST_HEADS][0]) c->n_heads = atoi(meta[RETRLM__ST_HEADS]) > 0 ? atoi(meta[RETRLM__ST_HEADS]) : -1;
    else return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: no num_attention_heads in the metadata or the hint");
    c->rope_theta = hint && hint->rope_theta > 0.0f ? hint->rope_theta
                    : meta[RETRLM__ST_THETA][0] ? (float)strtod(meta[RETRLM__ST_THETA], NULL) : 10000.0f;
    c->norm_eps = hint && hint->norm_eps > 0.0f ? hint->norm_eps
                  : meta[RETRLM__ST_EPS][0] ? (float)strtod(meta[RETRLM__ST_EPS], NULL) : 1e-5f;
    if (hint && hint->max_seq_len > 0) c->max_seq_len = hint->max_seq_len;
    else if (meta[RETRLM__ST_SEQ][0] && atoi(meta[RETRLM__ST_SEQ]) > 0) c->max_seq_len = atoi(meta[RETRLM__ST_SEQ]);
    c->max_batch = hint && hint->max_batch > 0 ? hint->max_batch : 1;
    if (hint) c->bidirectional = c->bidirectional || hint->bidirectional;
    if (L < 1 || F < 1 || c->n_heads < 1 || !(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f))
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: missing layers, gate projection, heads, rope_theta or rms_norm_eps");
    c2 = *c;
    r = retrlm__resolve_config(&c2);
    return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
}

// Every tensor of c's Llama layout present once (the LM head only when untied), each with the
// shape c needs
static retrlm_result retrlm__st_layout(const retrlm_model_config *c, const retrlm__st_entry *ents, size_t ne) {
    const size_t n_slots = (size_t)c->n_layers * RETRLM__ST_PER_LAYER + RETRLM_T_COUNT;
    unsigned char *seen = (unsigned char *)retrlm__calloc(n_slots, 1);
    retrlm_result r = RETRLM_OK;
    size_t i;
    int k;
    if (!seen) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory");
    for (i = 0; i < ne && !r; i++) {
        const retrlm__st_entry *x = &ents[i];
        int64_t rows, cols;
        size_t slot;
        if (x->tensor < 0) continue;
        retrlm__st_shape(c, (retrlm_model_tensor)x->tensor, &rows, &cols);
        if (cols ? (x->ndim != 2 || x->shape[0] != rows || x->shape[1] != cols) : (x->ndim != 1 || x->shape[0] != rows)) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' has the wrong shape", x->name);
            break;
        }
        slot = (size_t)x->tensor;
        for (k = 0; k < RETRLM__ST_PER_LAYER; k++) // a per-layer tensor: its name's index
            if (x->tensor == (int)retrlm__st_layer_tensor[k])
                slot = RETRLM_T_COUNT + (size_t)x->layer * RETRLM__ST_PER_LAYER + (size_t)k;
        if (seen[slot]++) r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' appears twice", x->name);
    }
    for (i = 0; i < n_slots && !r; i++)
        if (!seen[i] && !(i == RETRLM_T_LM_HEAD && !c->untied) &&
            (i >= RETRLM_T_COUNT || i == RETRLM_T_EMBED || i == RETRLM_T_LM_HEAD || i == RETRLM_T_FINAL_NORM))
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor %lu of the Llama layout is missing", (unsigned long)i);
    RETRLM_FREE(seen);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_safetensors_memory(retrlm_model *m, const void *buf,
                                                              size_t size,
                                                              const retrlm_model_config *hint) {
    const unsigned char *b = (const unsigned char *)buf;
    retrlm__st_entry *ents = NULL;
    retrlm_model_config c;
    retrlm_result r;
    uint64_t hlen;
    size_t i, ne;
    char meta[RETRLM__ST_META][32];
    RETRLM_ASSERT(m && (buf || !size));
    memset(m, 0, sizeof *m);
    memset(meta, 0, sizeof meta);
    if (size < 8) return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %lu bytes, no header", (unsigned long)size);
    hlen = retrlm__get_u64(b);
    if (hlen < 2 || hlen > size - 8 || hlen > ((uint64_t)100 << 20))
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: header length %llu in a file of %lu bytes",
                            (unsigned long long)hlen, (unsigned long)size);
    if ((r = retrlm__st_header((const char *)b + 8, hlen, &ents, meta))) goto done;
    ne = (size_t)stbds_arrlen(ents);
    if ((r = retrlm__st_config(ents, ne, size - 8 - (size_t)hlen, meta, hint, &c)) ||
        (r = retrlm__st_layout(&c, ents, ne)) || (r = retrlm__model_alloc(m, &c, NULL, NULL, 0)))
        goto done;
    for (i = 0; i < ne; i++) { // the weights, little-endian F32 on every host
        const retrlm__st_entry *x = &ents[i];
        const unsigned char *src;
        float *dst;
        size_t n, q;
        if (x->tensor < 0) continue;
        src = b + 8 + hlen + x->off0;
        n = (size_t)((x->off1 - x->off0) / 4);
        dst = retrlm_model_tensor_ptr(m, (retrlm_model_tensor)x->tensor, x->layer, 0);
        for (q = 0; q < n; q++) {
            uint32_t u = retrlm__get_u32(src + 4 * q);
            memcpy(dst + q, &u, 4);
        }
    }
done:
    stbds_arrfree(ents);
    if (r) retrlm_model_free(m);
    return r;
}

#ifndef RETRLM_NO_STDIO
typedef struct retrlm__bytes_out {
    const void *p;
    size_t n;
} retrlm__bytes_out;

static retrlm_result retrlm__bytes_emit(const void *ctx, retrlm__sink *sink) {
    const retrlm__bytes_out *o = (const retrlm__bytes_out *)ctx;
    return retrlm__sink_put(sink, o->p, o->n) ? RETRLM_ERR_IO : RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_save_safetensors(const retrlm_model *m, const char *path) {
    size_t size = 0;
    retrlm__bytes_out o;
    void *buf;
    retrlm_result r = retrlm_model_save_safetensors_memory(m, NULL, 0, &size);
    if (r) return r;
    buf = retrlm__alloc(size, 1);
    if (!buf) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory for %lu bytes",
                                  (unsigned long)size);
    if ((r = retrlm_model_save_safetensors_memory(m, buf, size, &size)) == RETRLM_OK) {
        o.p = buf, o.n = size;
        r = retrlm__save_atomic(path, retrlm__bytes_emit, &o);
    }
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_safetensors(retrlm_model *m, const char *path,
                                                       const retrlm_model_config *hint) {
    char *buf;
    size_t n;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__read_file(path, &buf, &n)) != RETRLM_OK) return r;
    r = retrlm_model_load_safetensors_memory(m, buf, n, hint);
    RETRLM_FREE(buf);
    return r;
}
#endif
/* ---- retrlm_impl/encoder.c ---- */

// ---------------------------------------------------------------------------------------------
// encoder: the bi-encoder (encoder.h): a query and a document side, each a bidirectional model
// (model.c) with mean pooling, an optional projection and L2 normalisation; forward, backward,
// batch encoding of texts, and its files (container kind "encoder", each side stored with
// checkpoint.c's retrlm__ckpt_add_model and read with retrlm__ckpt_load).

#define RETRLM__ENC_KIND "encoder"
#define RETRLM__ENC_NCFG 6

// per-side scratch: pooled, raw (before normalisation), norm, out, dpool, draw, dhidden
static retrlm_result retrlm__encoder_alloc(retrlm_encoder *e) {
    const int D = e->side[0].config.dim, P = e->dim;
    size_t nproj = e->config.proj_dim ? (size_t)P * D : 0, total, off = 0;
    size_t nb[2], nt[2];
    int s;
    for (s = 0; s < 2; s++) {
        nb[s] = (size_t)e->side[s].config.max_batch;
        nt[s] = nb[s] * (size_t)e->side[s].config.max_seq_len;
    }
    total = 2 * 2 * nproj;
    for (s = 0; s < 2; s++)
        total += nb[s] * (2 * (size_t)D + 2 * (size_t)P + (size_t)RETRLM__MAX(P, D) + 1) +
                 nt[s] * D;
    e->block_ = (float *)retrlm__calloc(total, sizeof(float));
    if (!e->block_)
        return retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory for %lu floats of scratch",
                            (unsigned long)total);
    for (s = 0; s < 2; s++) {
        if (nproj && (s == 0 || e->config.separate)) {
            e->proj[s] = e->block_ + off, off += nproj;
            e->proj_grad[s] = e->block_ + off, off += nproj;
        } else if (nproj) {
            e->proj[s] = e->proj[0];
            e->proj_grad[s] = e->proj_grad[0];
        }
    }
    off = 4 * nproj;
    for (s = 0; s < 2; s++) {
        e->pooled_[s] = e->block_ + off, off += nb[s] * D;
        e->dpool_[s] = e->block_ + off, off += nb[s] * D;
        e->raw_[s] = e->block_ + off, off += nb[s] * P;
        e->out_[s] = e->block_ + off, off += nb[s] * P;
        e->draw_[s] = e->block_ + off, off += nb[s] * RETRLM__MAX(P, D);
        e->norm_[s] = e->block_ + off, off += nb[s];
        e->dhid_[s] = e->block_ + off, off += nt[s] * D;
    }
    RETRLM_ASSERT(off <= total);
    return RETRLM_OK;
}

static retrlm_result retrlm__encoder_resolve(retrlm_encoder_config *c) {
    if (!c->max_query_tokens) c->max_query_tokens = 32;
    if (!c->max_doc_tokens) c->max_doc_tokens = 128;
    if (!c->max_batch) c->max_batch = 32;
    c->separate = c->separate != 0;
    c->normalize = c->normalize != 0;
    if (c->max_query_tokens < 1 || c->max_doc_tokens < 1 || c->max_batch < 1 ||
        c->max_batch > RETRLM__MAX_DIM / 2 || c->proj_dim < 0 || c->proj_dim > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_ARG, "encoder: max_query_tokens %d, max_doc_tokens %d, "
                            "max_batch %d and proj_dim %d must be positive (proj_dim may be 0)",
                            c->max_query_tokens, c->max_doc_tokens, c->max_batch, c->proj_dim);
    return RETRLM_OK;
}

// the document side: its own model (separate), or a view of the query side
static retrlm_result retrlm__encoder_doc_side(retrlm_encoder *e, const retrlm_model_config *mc) {
    retrlm_model_config dc = *mc;
    dc.max_seq_len = e->config.max_doc_tokens;
    dc.max_batch = 2 * e->config.max_batch;
    dc.no_logits = 1;
    dc.bidirectional = 1;
    if (e->config.separate) {
        dc.seed = mc->seed + 1;
        return retrlm_model_init(&e->side[RETRLM_DOC], &dc);
    }
    return retrlm_model_init_view(&e->side[RETRLM_DOC], &e->side[RETRLM_QUERY], &dc);
}

RETRLM_API retrlm_result retrlm_encoder_init(retrlm_encoder *e, const retrlm_encoder_config *cfg) {
    retrlm_model_config qc;
    retrlm_result r;
    retrlm_rng rng;
    size_t i, np;
    RETRLM_ASSERT(e && cfg);
    memset(e, 0, sizeof *e);
    e->config = *cfg;
    if ((r = retrlm__encoder_resolve(&e->config))) return r;
    qc = cfg->model;
    qc.bidirectional = 1;
    qc.no_logits = 1;
    qc.max_seq_len = e->config.max_query_tokens;
    qc.max_batch = e->config.max_batch;
    if ((r = retrlm_model_init(&e->side[RETRLM_QUERY], &qc)) ||
        (r = retrlm__encoder_doc_side(e, &qc))) {
        retrlm_encoder_free(e);
        return r;
    }
    e->config.model = e->side[RETRLM_QUERY].config;
    e->dim = e->config.proj_dim ? e->config.proj_dim : e->config.model.dim;
    if ((r = retrlm__encoder_alloc(e))) {
        retrlm_encoder_free(e);
        return r;
    }
    // projections: normal(0, 1/sqrt(dim)), so that they keep the scale of the pooled vector
    retrlm_rng_seed(&rng, e->config.model.seed ^ 0x70726f6aULL);
    np = (size_t)e->dim * e->config.model.dim;
    if (e->config.proj_dim)
        for (i = 0; i < np; i++) {
            e->proj[0][i] = retrlm_rng_normal(&rng) / (float)sqrt((double)e->config.model.dim);
            if (e->config.separate) e->proj[1][i] = e->proj[0][i];
        }
    return RETRLM_OK;
}

RETRLM_API void retrlm_encoder_free(retrlm_encoder *e) {
    if (!e) return;
    retrlm_model_free(&e->side[RETRLM_DOC]); // a view goes before the model it borrows from
    retrlm_model_free(&e->side[RETRLM_QUERY]);
    RETRLM_FREE(e->block_);
    memset(e, 0, sizeof *e);
}

// the Euclidean norm of x (n), floored at 1e-12 so that a zero vector divides safely
static float retrlm__l2_norm(const float *x, int n) {
    double ss = 0.0;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return (float)sqrt(ss > 1e-24 ? ss : 1e-24);
}

// text's first tokens, at most maxt of them, into ids; an empty text is the token 0. *n gets
// how many (>= 1).
RETRLM__PRIVATE retrlm_result retrlm__encode_cut(const retrlm_tokenizer *tok, const char *text, size_t len,
                                                 int *ids, int maxt, int *n) {
    size_t got = 0;
    retrlm_result r = retrlm_tokenizer_encode(tok, text ? text : "", len, 0, ids, (size_t)maxt, &got);
    if (r != RETRLM_OK && r != RETRLM_ERR_RANGE) return r; // RANGE: cut to maxt
    *n = (int)RETRLM__MIN(got, (size_t)maxt);
    if (*n == 0) ids[0] = 0, *n = 1;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_forward(retrlm_encoder *e, int side, const int *tokens,
                                                int B, int T, const int *lengths, float *out) {
    retrlm_model *m;
    const int D = e->config.model.dim, P = e->dim;
    retrlm_result r;
    int b;
    RETRLM_ASSERT(e && (side == RETRLM_QUERY || side == RETRLM_DOC) && out);
    m = &e->side[side];
    if ((r = retrlm_model_forward(m, tokens, B, T, lengths, RETRLM_FORWARD_NO_LOGITS))) return r;
    retrlm_model_mean_pool(m, e->pooled_[side]);
    if (e->config.proj_dim) {
        if ((r = retrlm__mm(m, e->raw_[side], e->pooled_[side], e->proj[side], B, P, D, 0)))
            return r;
    } else
        memcpy(e->raw_[side], e->pooled_[side], (size_t)B * D * sizeof(float));
    for (b = 0; b < B; b++) {
        const float *x = e->raw_[side] + (size_t)b * P;
        float *y = e->out_[side] + (size_t)b * P, inv = 1.0f;
        int i;
        if (e->config.normalize) {
            e->norm_[side][b] = retrlm__l2_norm(x, P);
            inv = 1.0f / e->norm_[side][b];
        }
        for (i = 0; i < P; i++) y[i] = x[i] * inv;
    }
    memcpy(out, e->out_[side], (size_t)B * P * sizeof(float));
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_backward(retrlm_encoder *e, int side, const float *dout) {
    retrlm_model *m;
    retrlm_model_grad_in g;
    const int D = e->config.model.dim, P = e->dim;
    float *draw;
    retrlm_result r;
    int b, B;
    RETRLM_ASSERT(e && (side == RETRLM_QUERY || side == RETRLM_DOC) && dout);
    m = &e->side[side];
    B = m->B;
    RETRLM_ASSERT(B > 0);
    // d raw = (dout - y (y . dout)) / |raw| through the normalisation, y = raw / |raw|
    draw = e->draw_[side];
    for (b = 0; b < B; b++) {
        const float *go = dout + (size_t)b * P, *y = e->out_[side] + (size_t)b * P;
        float *gr = draw + (size_t)b * P;
        int i;
        if (e->config.normalize) {
            double dot = 0.0;
            float inv = 1.0f / e->norm_[side][b];
            for (i = 0; i < P; i++) dot += (double)y[i] * go[i];
            for (i = 0; i < P; i++) gr[i] = (go[i] - y[i] * (float)dot) * inv;
        } else
            memcpy(gr, go, (size_t)P * sizeof(float));
    }
    if (e->config.proj_dim) {
        // d proj (P, D) += drawᵀ · pooled; d pooled (B, D) = draw · proj
        if ((r = retrlm__mm(m, e->proj_grad[side], draw, e->pooled_[side], P, D, B,
                               RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm__mm(m, e->dpool_[side], draw, e->proj[side], B, D, P,
                               RETRLM_MATMUL_B_KN)))
            return r;
    } else
        memcpy(e->dpool_[side], draw, (size_t)B * D * sizeof(float));
    retrlm_model_mean_pool_backward(m, e->dpool_[side], e->dhid_[side]);
    memset(&g, 0, sizeof g);
    g.dhidden = e->dhid_[side];
    return retrlm_model_backward(m, &g);
}

RETRLM_API void retrlm_encoder_zero_grad(retrlm_encoder *e) {
    retrlm_model_zero_grad(&e->side[RETRLM_QUERY]);
    if (e->config.separate) retrlm_model_zero_grad(&e->side[RETRLM_DOC]);
    if (e->config.proj_dim) {
        size_t np = (size_t)e->dim * e->config.model.dim;
        memset(e->proj_grad[0], 0, np * sizeof(float));
        if (e->config.separate) memset(e->proj_grad[1], 0, np * sizeof(float));
    }
}

RETRLM_API int retrlm_encoder_param_groups(const retrlm_encoder *e, float lr, float weight_decay,
                                           retrlm_adamw_group out[6]) {
    int n = retrlm_model_param_groups(&e->side[RETRLM_QUERY], lr, weight_decay, out);
    if (e->config.separate) n += retrlm_model_param_groups(&e->side[RETRLM_DOC], lr, weight_decay,
                                                           out + n);
    if (e->config.proj_dim) {
        out[n].params = e->proj[0];
        out[n].grads = e->proj_grad[0];
        out[n].n = (size_t)e->dim * e->config.model.dim;
        out[n].lr = lr;
        out[n].weight_decay = weight_decay;
        n++;
        if (e->config.separate) {
            out[n] = out[n - 1];
            out[n].params = e->proj[1];
            out[n].grads = e->proj_grad[1];
            n++;
        }
    }
    return n;
}

// n rows of token ids written stride apart, row i valid for len[i] tokens: moves them to be T
// apart (T = the longest), pads with pad (token 0 for inputs, -1 for ignored targets) and
// returns T
RETRLM__PRIVATE int retrlm__compact_rows(int *ids, const int *len, int n, int stride, int pad) {
    int i, t, T = 1;
    for (i = 0; i < n; i++) T = RETRLM__MAX(T, len[i]);
    for (i = 0; i < n; i++) {
        if (i) memmove(ids + (size_t)i * T, ids + (size_t)i * stride, (size_t)len[i] * sizeof(int));
        for (t = len[i]; t < T; t++) ids[(size_t)i * T + t] = pad;
    }
    return T;
}

RETRLM_API retrlm_result retrlm_encoder_encode_texts(retrlm_encoder *e,
                                                     const retrlm_tokenizer *tok, int side,
                                                     const char *const *texts,
                                                     const size_t *lens, size_t n, float *out,
                                                     retrlm_progress_fn progress, void *user) {
    retrlm_model *m;
    int *ids = NULL, *len = NULL, maxb, maxt;
    retrlm_result r = RETRLM_OK;
    size_t i0;
    RETRLM_ASSERT(e && tok && (side == RETRLM_QUERY || side == RETRLM_DOC) && (texts || !n));
    m = &e->side[side];
    maxb = m->config.max_batch;
    maxt = m->config.max_seq_len;
    ids = (int *)retrlm__alloc((size_t)maxb * maxt, sizeof(int));
    len = (int *)retrlm__alloc((size_t)maxb, sizeof(int));
    if (!ids || !len) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory for a batch of %d x %d", maxb, maxt);
        goto done;
    }
    for (i0 = 0; i0 < n; i0 += (size_t)maxb) {
        int B = (int)RETRLM__MIN((size_t)maxb, n - i0), T, b;
        for (b = 0; b < B; b++) {
            const char *t = texts[i0 + b];
            size_t l = lens ? lens[i0 + b] : (t ? strlen(t) : 0);
            if ((r = retrlm__encode_cut(tok, t, l, ids + (size_t)b * maxt, maxt, &len[b]))) goto done;
        }
        T = retrlm__compact_rows(ids, len, B, maxt, 0);
        if ((r = retrlm_encoder_forward(e, side, ids, B, T, len, out + i0 * (size_t)e->dim))) goto done;
        if (progress && progress(user, "encode", (double)(i0 + B), (double)n)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "encoder: cancelled after %lu texts",
                             (unsigned long)(i0 + B));
            goto done;
        }
    }
done:
    RETRLM_FREE(ids);
    RETRLM_FREE(len);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_embed(const retrlm_encoder *e,
                                              const retrlm_tokenizer *tok, int side,
                                              const char *text, size_t len, float *out) {
    const retrlm_model *src;
    const int D = e->config.model.dim, P = e->dim;
    retrlm_model v;
    retrlm_model_config over;
    retrlm_result r;
    float *pooled = NULL;
    int *ids = NULL, maxt, n, i;
    RETRLM_ASSERT(e && tok && (side == RETRLM_QUERY || side == RETRLM_DOC) && (text || !len) && out);
    src = &e->side[side];
    maxt = src->config.max_seq_len;
    memset(&v, 0, sizeof v);
    ids = (int *)retrlm__alloc((size_t)maxt, sizeof(int));
    pooled = (float *)retrlm__alloc((size_t)D, sizeof(float));
    if (!ids || !pooled) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "encoder: no memory to embed a text");
        goto done;
    }
    if ((r = retrlm__encode_cut(tok, text, len, ids, maxt, &n))) goto done;
    memset(&over, 0, sizeof over);
    over.max_batch = 1;
    over.max_seq_len = n;
    over.no_logits = 1;
    if ((r = retrlm_model_init_view(&v, src, &over)) ||
        (r = retrlm_model_forward(&v, ids, 1, n, NULL, RETRLM_FORWARD_NO_LOGITS)))
        goto done;
    retrlm_model_mean_pool(&v, pooled);
    if (e->config.proj_dim)
        for (i = 0; i < P; i++) out[i] = retrlm_dot(e->proj[side] + (size_t)i * D, pooled, D);
    else
        memcpy(out, pooled, (size_t)D * sizeof(float));
    if (e->config.normalize) retrlm_scale(out, 1.0f / retrlm__l2_norm(out, P), P);
done:
    retrlm_model_free(&v);
    RETRLM_FREE(ids);
    RETRLM_FREE(pooled);
    return r;
}

static retrlm_result retrlm__encoder_writer(const retrlm_encoder *e, retrlm_writer *w) {
    int32_t ci[RETRLM__ENC_NCFG];
    size_t np = e->config.proj_dim ? (size_t)e->dim * e->config.model.dim : 0;
    retrlm_result r;
    ci[0] = e->config.separate; ci[1] = e->config.proj_dim; ci[2] = e->config.normalize;
    ci[3] = e->config.max_query_tokens; ci[4] = e->config.max_doc_tokens;
    ci[5] = e->config.max_batch;
    if ((r = retrlm_writer_init(w, RETRLM__ENC_KIND)) ||
        (r = retrlm_writer_add_copy(w, "enc_config", RETRLM_DTYPE_I32, ci, RETRLM__ENC_NCFG)) ||
        (r = retrlm__ckpt_add_model(&e->side[RETRLM_QUERY], w, "q.")))
        return r;
    if (e->config.separate && (r = retrlm__ckpt_add_model(&e->side[RETRLM_DOC], w, "d.")))
        return r;
    if (np && ((r = retrlm_writer_add(w, "proj.q", RETRLM_DTYPE_F32, e->proj[0], np)) ||
               (e->config.separate &&
                (r = retrlm_writer_add(w, "proj.d", RETRLM_DTYPE_F32, e->proj[1], np)))))
        return r;
    return RETRLM_OK;
}

static retrlm_result retrlm__encoder_read(retrlm_encoder *e, const retrlm_reader *rd) {
    int32_t ci[RETRLM__ENC_NCFG];
    retrlm_model_config over;
    retrlm_result r;
    size_t np;
    int s;
    if ((r = retrlm_reader_read(rd, "enc_config", RETRLM_DTYPE_I32, ci, RETRLM__ENC_NCFG))) return r;
    if ((ci[0] != 0 && ci[0] != 1) || (ci[2] != 0 && ci[2] != 1) || ci[1] < 0 || ci[3] < 1 ||
        ci[4] < 1 || ci[5] < 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: bad enc_config %d %d %d %d %d %d", ci[0],
                            ci[1], ci[2], ci[3], ci[4], ci[5]);
    e->config.separate = ci[0]; e->config.proj_dim = ci[1]; e->config.normalize = ci[2];
    e->config.max_query_tokens = ci[3]; e->config.max_doc_tokens = ci[4];
    e->config.max_batch = ci[5];
    if ((r = retrlm__encoder_resolve(&e->config))) return RETRLM_ERR_FORMAT;
    memset(&over, 0, sizeof over);
    over.no_logits = 1;
    over.max_seq_len = e->config.max_query_tokens;
    over.max_batch = e->config.max_batch;
    if ((r = retrlm__ckpt_load(&e->side[RETRLM_QUERY], rd, &over, 0, "q."))) return r;
    if (!e->side[RETRLM_QUERY].config.bidirectional)
        return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: the query model is causal");
    e->config.model = e->side[RETRLM_QUERY].config;
    if (e->config.separate) {
        over.max_seq_len = e->config.max_doc_tokens;
        over.max_batch = 2 * e->config.max_batch;
        if ((r = retrlm__ckpt_load(&e->side[RETRLM_DOC], rd, &over, 0, "d."))) return r;
        if (!e->side[RETRLM_DOC].config.bidirectional ||
            e->side[RETRLM_DOC].config.dim != e->config.model.dim)
            return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: the document model is causal or of "
                                "another width");
    } else if ((r = retrlm__encoder_doc_side(e, &e->config.model)))
        return r;
    e->dim = e->config.proj_dim ? e->config.proj_dim : e->config.model.dim;
    np = e->config.proj_dim ? (size_t)e->dim * e->config.model.dim : 0;
    for (s = 0; np && s < 1 + e->config.separate; s++) { // sizes match before anything is allocated
        const void *p = NULL;
        size_t n = 0;
        if ((r = retrlm_reader_get(rd, s ? "proj.d" : "proj.q", RETRLM_DTYPE_F32, &p, &n))) return r;
        if (n != np)
            return retrlm__fail(RETRLM_ERR_FORMAT, "encoder: projection of %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)np);
    }
    if ((r = retrlm__encoder_alloc(e))) return r;
    for (s = 0; np && s < 1 + e->config.separate; s++)
        if ((r = retrlm_reader_read(rd, s ? "proj.d" : "proj.q", RETRLM_DTYPE_F32, e->proj[s], np)))
            return r;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_encoder_save_memory(const retrlm_encoder *e, void *buf,
                                                    size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r = retrlm__encoder_writer(e, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_load_memory(retrlm_encoder *e, const void *buf,
                                                    size_t size) {
    retrlm_reader rd;
    retrlm_result r;
    memset(e, 0, sizeof *e);
    if ((r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__ENC_KIND, 0))) return r;
    if ((r = retrlm__encoder_read(e, &rd))) retrlm_encoder_free(e);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_encoder_save(const retrlm_encoder *e, const char *path) {
    retrlm_writer w;
    retrlm_result r = retrlm__encoder_writer(e, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_encoder_load(retrlm_encoder *e, const char *path) {
    retrlm_reader rd;
    retrlm_result r;
    memset(e, 0, sizeof *e);
    if ((r = retrlm_reader_open(&rd, path, RETRLM__ENC_KIND, 0))) return r;
    if ((r = retrlm__encoder_read(e, &rd))) retrlm_encoder_free(e);
    retrlm_reader_close(&rd);
    return r;
}
#endif
/* ---- retrlm_impl/losses.c ---- */
// ---------------------------------------------------------------------------------------------
// losses

RETRLM_API retrlm_result retrlm_contrastive_loss(const float *q, int nq, const float *d, int nd,
                                                 int dim, const int *pos, float temperature,
                                                 float *loss, float *dq, float *dd,
                                                 int *correct) {
    float *s;
    double total = 0.0;
    int i, j, right = 0;
    retrlm_result r;
    RETRLM_ASSERT(q && d && pos);
    if (nq < 1 || nd < 1 || dim < 1 || !(temperature > 0.0f) ||
        (size_t)nq * (size_t)nd > ((size_t)1 << 28))
        return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: %d queries x %d candidates of dim "
                            "%d at temperature %g", nq, nd, dim, (double)temperature);
    for (i = 0; i < nq; i++)
        if (pos[i] < 0 || pos[i] >= nd)
            return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: positive %d of query %d is "
                                "outside [0, %d)", pos[i], i, nd);
    s = (float *)retrlm__alloc((size_t)nq * nd, sizeof(float));
    if (!s) return retrlm__fail(RETRLM_ERR_NOMEM, "contrastive_loss: no memory for %d x %d scores",
                                nq, nd);
    if ((r = retrlm_matmul(s, q, d, NULL, nq, nd, dim, 0))) {
        RETRLM_FREE(s);
        return r;
    }
    // row by row: scores -> probabilities -> (p - onehot) / (nq * temperature)
    for (i = 0; i < nq; i++) {
        float *row = s + (size_t)i * nd, lse;
        int best = 0;
        for (j = 0; j < nd; j++) {
            row[j] /= temperature;
            if (row[j] != row[j]) {
                RETRLM_FREE(s);
                return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: score of query %d and "
                                    "candidate %d is NaN", i, j);
            }
            if (row[j] > row[best]) best = j;
        }
        right += best == pos[i];
        lse = retrlm_logsumexp(row, nd);
        total += (double)lse - row[pos[i]];
        for (j = 0; j < nd; j++) row[j] = expf(row[j] - lse) / ((float)nq * temperature);
        row[pos[i]] -= 1.0f / ((float)nq * temperature);
    }
    // dQ (nq, dim) = G · D; dD (nd, dim) = Gᵀ · Q
    r = RETRLM_OK;
    if (dq) r = retrlm_matmul(dq, s, d, NULL, nq, dim, nd, RETRLM_MATMUL_B_KN);
    if (!r && dd)
        r = retrlm_matmul(dd, s, q, NULL, nd, dim, nq, RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN);
    RETRLM_FREE(s);
    if (loss) *loss = (float)(total / nq);
    if (correct) *correct = right;
    return r;
}

// log_softmax of x / temperature over the present entries (-inf: absent) into out (k); 0 when
// every entry is absent
static int retrlm__log_softmax_t(float *out, const float *x, int k, float temperature) {
    int j, any = 0;
    for (j = 0; j < k; j++) {
        out[j] = x[j] == -INFINITY ? -INFINITY : x[j] / temperature;
        any |= out[j] != -INFINITY;
    }
    if (any) retrlm_log_softmax(out, out, k);
    return any;
}

// 1 when x is NaN or +inf: a value no distribution can take (-inf marks an absent entry)
static int retrlm__bad_logit(float x) { return x != x || x == INFINITY; }

// ERR_ARG (with the message, who the caller) when a candidate of scores and gold (n, k) is NaN
// or +inf, has gold >= gold_max, or is absent (-inf) on one side only
static retrlm_result retrlm__check_candidates(const float *scores, const float *gold, int n, int k,
                                              float gold_max, const char *who) {
    int i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < k; j++) {
            float s = scores[(size_t)i * k + j], g = gold[(size_t)i * k + j];
            if (retrlm__bad_logit(s) || retrlm__bad_logit(g) || g >= gold_max ||
                (s == -INFINITY) != (g == -INFINITY))
                return retrlm__fail(RETRLM_ERR_ARG, "%s: query %d candidate %d has score %g and gold "
                                    "%g (NaN, +inf, gold >= %g, or absent in only one)", who, i, j,
                                    (double)s, (double)g, (double)gold_max);
        }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_kl_distill_loss(const float *scores, const float *gold, int n,
                                                int k, float tau_score, float tau_gold,
                                                float *loss, float *dscores) {
    float *lp, *lq;
    double total = 0.0;
    int i, j;
    RETRLM_ASSERT(scores && gold);
    if (n < 1 || k < 1 || !(tau_score > 0.0f) || !(tau_gold > 0.0f) || tau_score == INFINITY ||
        tau_gold == INFINITY)
        return retrlm__fail(RETRLM_ERR_ARG, "kl_distill_loss: %d queries x %d candidates at "
                            "temperatures %g / %g", n, k, (double)tau_score, (double)tau_gold);
    if (retrlm__check_candidates(scores, gold, n, k, INFINITY, "kl_distill_loss")) return RETRLM_ERR_ARG;
    lp = (float *)retrlm__alloc(2 * (size_t)k, sizeof(float));
    if (!lp) return retrlm__fail(RETRLM_ERR_NOMEM, "kl_distill_loss: no memory for %d candidates", k);
    lq = lp + k;
    for (i = 0; i < n; i++) {
        const float *s = scores + (size_t)i * k, *g = gold + (size_t)i * k;
        if (!retrlm__log_softmax_t(lp, s, k, tau_score)) {
            RETRLM_FREE(lp);
            return retrlm__fail(RETRLM_ERR_ARG, "kl_distill_loss: query %d has no candidate", i);
        }
        retrlm__log_softmax_t(lq, g, k, tau_gold);
        for (j = 0; j < k; j++) {
            float q = lq[j] == -INFINITY ? 0.0f : expf(lq[j]);
            if (q > 0.0f) total += (double)q * ((double)lq[j] - (double)lp[j]);
            if (dscores)
                dscores[(size_t)i * k + j] = lp[j] == -INFINITY ? 0.0f
                                           : (expf(lp[j]) - q) / (tau_score * (float)n);
        }
    }
    RETRLM_FREE(lp);
    if (loss) *loss = (float)(total / n);
    return RETRLM_OK;
}

// 1 / log2(2 + r): the discount of 0-based rank r
static double retrlm__discount(int r) { return 1.0 / log2(2.0 + r); }

// the 0-based rank of candidate j among the present (finite) entries of x (k), best first, ties
// broken by index
static int retrlm__rank_of(const float *x, int k, int j) {
    int m, r = 0;
    for (m = 0; m < k; m++)
        if (m != j && x[m] != -INFINITY && (x[m] > x[j] || (x[m] == x[j] && m < j))) r++;
    return r;
}

RETRLM_API retrlm_result retrlm_rank_loss(const float *scores, const float *gold, int n, int k,
                                          float margin, float threshold, float *loss,
                                          float *dscores, int *pairs) {
    double *gain, *disc, total = 0.0;
    long long npairs = 0;
    int i, a, b;
    RETRLM_ASSERT(scores && gold);
    if (n < 1 || k < 1 || retrlm__bad_logit(margin) || margin == -INFINITY || !(threshold >= 0.0f) ||
        threshold == INFINITY || (double)n * (double)k > 1099511627776.0)
        return retrlm__fail(RETRLM_ERR_ARG, "rank_loss: %d queries x %d candidates, margin %g, "
                            "threshold %g", n, k, (double)margin, (double)threshold);
    if (retrlm__check_candidates(scores, gold, n, k, 512.0f, "rank_loss")) return RETRLM_ERR_ARG;
    gain = (double *)retrlm__alloc(2 * (size_t)k, sizeof(double));
    if (!gain) return retrlm__fail(RETRLM_ERR_NOMEM, "rank_loss: no memory for %d candidates", k);
    disc = gain + k;
    if (dscores) memset(dscores, 0, (size_t)n * k * sizeof(float));
    // pass 1: the pairs, to know P; pass 2 adds each pair's share
    for (i = 0; i < n; i++) {
        const float *g = gold + (size_t)i * k;
        for (a = 0; a < k; a++)
            if (g[a] != -INFINITY && g[a] > threshold)
                for (b = 0; b < k; b++) npairs += g[b] != -INFINITY && g[a] > g[b];
    }
    for (i = 0; npairs && i < n; i++) {
        const float *s = scores + (size_t)i * k, *g = gold + (size_t)i * k;
        float *ds = dscores ? dscores + (size_t)i * k : NULL;
        double idcg = 0.0;
        for (a = 0; a < k; a++) {
            gain[a] = g[a] != -INFINITY && g[a] > threshold ? exp2((double)g[a]) - 1.0 : 0.0;
            disc[a] = s[a] != -INFINITY ? retrlm__discount(retrlm__rank_of(s, k, a)) : 0.0;
            if (gain[a] != 0.0) idcg += gain[a] * retrlm__discount(retrlm__rank_of(g, k, a));
        }
        for (a = 0; a < k; a++) {
            if (g[a] == -INFINITY || !(g[a] > threshold)) continue;
            for (b = 0; b < k; b++) {
                double lambda, h;
                if (g[b] == -INFINITY || !(g[a] > g[b])) continue;
                h = (double)margin - ((double)s[a] - (double)s[b]);
                if (h <= 0.0) continue;
                lambda = fabs(gain[a] - gain[b]) * fabs(disc[a] - disc[b]) / idcg; // idcg >= gain[a] > 0
                total += lambda * h;
                if (ds) {
                    ds[a] -= (float)(lambda / (double)npairs);
                    ds[b] += (float)(lambda / (double)npairs);
                }
            }
        }
    }
    RETRLM_FREE(gain);
    if (loss) *loss = npairs ? (float)(total / (double)npairs) : 0.0f;
    if (pairs) *pairs = npairs > INT_MAX ? INT_MAX : (int)npairs;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_marginal_loss(const float *scores, const float *loglik,
                                              const unsigned char *mask, int n, int k, int t,
                                              float temperature, float *loss, float *dscores,
                                              float *dloglik) {
    float *lp, *term;
    double total = 0.0;
    int i, j, p, counted = 0;
    RETRLM_ASSERT(scores && loglik);
    if (n < 1 || k < 1 || t < 1 || !(temperature > 0.0f) || temperature == INFINITY ||
        (double)n * (double)k * (double)t > 1099511627776.0) // 2^40, in double: size_t may be 32 bits
        return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: %d queries x %d candidates x %d "
                            "positions at temperature %g", n, k, t, (double)temperature);
    for (i = 0; i < n; i++) {
        int valid = 0;
        for (p = 0; p < t; p++) valid += !mask || mask[(size_t)i * t + p];
        counted += valid > 0;
        for (j = 0; j < k; j++) {
            float s = scores[(size_t)i * k + j];
            if (retrlm__bad_logit(s))
                return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: score of query %d candidate "
                                    "%d is %g", i, j, (double)s);
            for (p = 0; p < t && s != -INFINITY; p++) {
                float l = loglik[((size_t)i * k + j) * t + p];
                if ((!mask || mask[(size_t)i * t + p]) && !(l > -INFINITY && l < INFINITY))
                    return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: log-likelihood of query "
                                        "%d candidate %d position %d is %g", i, j, p, (double)l);
            }
        }
    }
    lp = (float *)retrlm__alloc(2 * (size_t)k, sizeof(float));
    if (!lp) return retrlm__fail(RETRLM_ERR_NOMEM, "marginal_loss: no memory for %d candidates", k);
    term = lp + k;
    if (dscores) memset(dscores, 0, (size_t)n * k * sizeof(float));
    if (dloglik) memset(dloglik, 0, (size_t)n * k * t * sizeof(float));
    for (i = 0; i < n; i++) {
        int valid = 0;
        float w;
        for (p = 0; p < t; p++) valid += !mask || mask[(size_t)i * t + p];
        if (!valid) continue;
        if (!retrlm__log_softmax_t(lp, scores + (size_t)i * k, k, temperature)) {
            RETRLM_FREE(lp);
            return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: query %d has no candidate", i);
        }
        w = 1.0f / ((float)valid * (float)counted);
        for (p = 0; p < t; p++) {
            float lse;
            if (mask && !mask[(size_t)i * t + p]) continue;
            for (j = 0; j < k; j++)
                term[j] = lp[j] == -INFINITY ? -INFINITY
                                             : lp[j] + loglik[((size_t)i * k + j) * t + p];
            lse = retrlm_logsumexp(term, k);
            total -= (double)lse / ((double)valid * counted);
            // posterior(j) = exp(term_j - lse): d/dscores_j = -(post_j - P_j) / temperature
            for (j = 0; j < k; j++) {
                float post = term[j] == -INFINITY ? 0.0f : expf(term[j] - lse);
                if (lp[j] == -INFINITY) continue;
                if (dscores) dscores[(size_t)i * k + j] -= w * (post - expf(lp[j])) / temperature;
                if (dloglik) dloglik[((size_t)i * k + j) * t + p] = -w * post;
            }
        }
    }
    RETRLM_FREE(lp);
    if (loss) *loss = (float)total;
    return RETRLM_OK;
}

RETRLM__PRIVATE retrlm_result retrlm__trime_check(const retrlm_trime_params *p, const char *who) {
    if (p->batching < RETRLM_TRIME_LOCAL || p->batching > RETRLM_TRIME_EXT ||
        (p->sim != RETRLM_TRIME_DOT && p->sim != RETRLM_TRIME_L2) || !(p->temperature >= 0.0f) ||
        p->temperature > 3.0e38f)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: batching %d (0 local, 1 long, 2 ext), similarity %d "
                            "(0 dot, 1 L2) and temperature %g (>= 0, finite)", who, p->batching,
                            p->sim, (double)p->temperature);
    return RETRLM_OK;
}

RETRLM__PRIVATE float retrlm__trime_scale(const retrlm_trime_params *p, int D) {
    return 1.0f / (sqrtf((float)D) * (p->temperature > 0.0f ? p->temperature : 1.0f));
}

RETRLM__PRIVATE float retrlm__trime_sim(const retrlm_trime_params *p, float scale,
                                        const float *q, const float *k, int D) {
    float s = 0.0f;
    int d;
    if (p->sim == RETRLM_TRIME_L2) {
        RETRLM__SIMD_SUM(s)
        for (d = 0; d < D; d++) s += (q[d] - k[d]) * (q[d] - k[d]);
        return -s * scale;
    }
    RETRLM__SIMD_SUM(s)
    for (d = 0; d < D; d++) s += q[d] * k[d];
    return s * scale;
}

RETRLM_API retrlm_result retrlm_trime_loss(const float *logits, int n, int vocab,
                                           const float *sims, int m, const int *mem_tokens,
                                           const int *targets, float *loss, float *dlogits,
                                           float *dsims, int *count) {
    double *row_loss, total = 0.0;
    unsigned char *row_bad;
    int i, j, cnt = 0, bad = -1;
    RETRLM_ASSERT(logits && targets && (m == 0 || (sims && mem_tokens)));
    if (n < 1 || vocab < 1 || m < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: %d positions, vocabulary %d, memory %d",
                            n, vocab, m);
    for (j = 0; j < m; j++)
        if (mem_tokens[j] < 0 || mem_tokens[j] >= vocab)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: memory entry %d's token %d is outside "
                                "[0, %d)", j, mem_tokens[j], vocab);
    for (i = 0; i < n; i++) {
        if (targets[i] >= vocab)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: target %d of position %d is outside "
                                "[0, %d)", targets[i], i, vocab);
        cnt += targets[i] >= 0;
    }
    row_loss = (double *)retrlm__alloc((size_t)n, sizeof(double) + 1);
    if (!row_loss) return retrlm__fail(RETRLM_ERR_NOMEM, "trime_loss: no memory for %d positions", n);
    row_bad = (unsigned char *)(row_loss + n);
    RETRLM__PARALLEL_FOR_IF((size_t)n * ((size_t)vocab + (size_t)m) > 200000)
    for (i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * vocab, *s = m ? sims + (size_t)i * m : NULL;
        float *dl = dlogits ? dlogits + (size_t)i * vocab : NULL, *ds = dsims ? dsims + (size_t)i * m : NULL;
        const int y = targets[i];
        float mx = -INFINITY, z, num, scale = cnt ? 1.0f / (float)cnt : 0.0f;
        double sz = 0.0, sn = 0.0;
        int v, e, ok = 1;
        row_loss[i] = 0.0;
        row_bad[i] = 0;
        if (y < 0) {
            if (dl) memset(dl, 0, (size_t)vocab * sizeof(float));
            if (ds) memset(ds, 0, (size_t)m * sizeof(float));
            continue;
        }
        // Z = logsumexp(logits ∪ sims), N = logsumexp(logit of y ∪ sims of entries followed by y)
        for (v = 0; v < vocab; v++) {
            ok &= !retrlm__bad_logit(l[v]);
            mx = l[v] > mx ? l[v] : mx;
        }
        for (e = 0; e < m; e++) {
            ok &= !retrlm__bad_logit(s[e]);
            mx = s[e] > mx ? s[e] : mx;
        }
        if (!ok || mx == -INFINITY) {
            row_bad[i] = 1;
            continue;
        }
        for (v = 0; v < vocab; v++) sz += exp((double)(l[v] - mx));
        sn = exp((double)(l[y] - mx));
        for (e = 0; e < m; e++) {
            double x = exp((double)(s[e] - mx));
            sz += x;
            if (mem_tokens[e] == y) sn += x;
        }
        if (!(sn > 0.0)) {
            row_bad[i] = 1;
            continue;
        }
        z = mx + (float)log(sz);
        num = mx + (float)log(sn);
        row_loss[i] = log(sz) - log(sn);
        if (dl)
            for (v = 0; v < vocab; v++) {
                float g = expf(l[v] - z) - (v == y ? expf(l[v] - num) : 0.0f);
                dl[v] = g * scale;
            }
        if (ds)
            for (e = 0; e < m; e++) {
                float g = expf(s[e] - z) - (mem_tokens[e] == y ? expf(s[e] - num) : 0.0f);
                ds[e] = g * scale;
            }
    }
    for (i = 0; i < n; i++) {
        if (row_bad[i] && bad < 0) bad = i;
        total += row_loss[i];
    }
    RETRLM_FREE(row_loss);
    if (bad >= 0)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: position %d has a NaN or +inf logit or "
                            "similarity, or its target has probability 0", bad);
    if (loss) *loss = cnt ? (float)(total / cnt) : 0.0f;
    if (count) *count = cnt;
    return RETRLM_OK;
}

// whether memory positions [j, j + l) hold, within one block, the tokens of [p, p + l)
static int retrlm__npm_copy(const int *tokens, const int *block, int n, int j, int p, int l) {
    int t;
    if (j + l > n || block[j + l - 1] != block[j]) return 0;
    for (t = 0; t < l; t++)
        if (tokens[j + t] != tokens[p + t]) return 0;
    return 1;
}

RETRLM_API retrlm_result retrlm_npm_loss(const float *qs, const float *qe, int n_spans,
                                         const float *mem, int n_mem, int dim, float temperature,
                                         const int *tokens, const int *block, const int *start,
                                         const int *len, float *loss, float *dqs, float *dqe,
                                         float *dmem, int *count, int *hits_start, int *hits_end) {
    const float c = 1.0f / (sqrtf((float)dim) * (temperature > 0.0f ? temperature : 1.0f));
    float *g;        // (2 n_spans, n_mem): d L / d score of each span's start row, then end rows
    double *row;     // (2 n_spans): L_start(s), L_end(s)
    signed char *st; // (2 n_spans): 1 counted and a positive ranked first, 0 counted, -1 not, -2 NaN
    double total = 0.0;
    float scale;
    int s, e, cnt = 0, hs = 0, he = 0;
    RETRLM_ASSERT(qs && qe && mem && tokens && block && start && len);
    if (n_spans < 1 || n_mem < 1 || dim < 1 || !(temperature >= 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: %d spans, memory %d, dim %d, temperature %g",
                            n_spans, n_mem, dim, (double)temperature);
    for (s = 0; s < n_spans; s++)
        if (len[s] < 1 || start[s] < 0 || start[s] > n_mem - len[s] ||
            block[start[s] + len[s] - 1] != block[start[s]])
            return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: span %d (%d tokens at %d) is outside the memory of %d "
                                "or across two blocks", s, len[s], start[s], n_mem);
    g = (float *)retrlm__alloc((size_t)2 * n_spans * n_mem, sizeof(float));
    row = (double *)retrlm__alloc((size_t)2 * n_spans, sizeof(double) + 1);
    if (!g || !row) {
        RETRLM_FREE(g), RETRLM_FREE(row);
        return retrlm__fail(RETRLM_ERR_NOMEM, "npm_loss: no memory for %d spans x %d entries", n_spans, n_mem);
    }
    st = (signed char *)(row + 2 * n_spans);
    RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
    for (s = 0; s < 2 * n_spans; s++) {
        const int sp = s % n_spans, end = s >= n_spans, p = start[sp], l = len[sp], b = block[p];
        const float *q = (end ? qe : qs) + (size_t)sp * dim;
        float *gr = g + (size_t)s * n_mem, mx = -INFINITY, best = -INFINITY;
        double all = 0.0, pos = 0.0;
        int k, best_pos = 0;
        row[s] = 0.0, st[s] = -1;
        for (k = 0; k < n_mem; k++) { // scores; -inf in the span's own block
            gr[k] = block[k] == b ? -INFINITY : c * retrlm_dot(q, mem + (size_t)k * dim, dim);
            if (retrlm__bad_logit(gr[k])) st[s] = -2;
            if (gr[k] > mx) mx = gr[k];
        }
        if (st[s] == -2 || mx == -INFINITY) { // a NaN, or no other block: nothing to learn
            memset(gr, 0, (size_t)n_mem * sizeof(float));
            continue;
        }
        for (k = 0; k < n_mem; k++) {
            // a positive: a copy of the span starts at k (start rows) or ends at k (end rows)
            const int j = end ? k - l + 1 : k;
            const int is_pos = gr[k] != -INFINITY && j >= 0 && retrlm__npm_copy(tokens, block, n_mem, j, p, l);
            const double x = gr[k] == -INFINITY ? 0.0 : exp((double)(gr[k] - mx));
            all += x;
            if (is_pos) pos += x;
            if (gr[k] > best) best = gr[k], best_pos = is_pos;
            gr[k] = is_pos ? -(float)x - 1e-30f : (float)x; // the sign marks a positive for the next loop
        }
        if (!(pos > 0.0)) { // no copy of the span outside its block
            memset(gr, 0, (size_t)n_mem * sizeof(float));
            continue;
        }
        row[s] = log(all) - log(pos);
        st[s] = (signed char)best_pos;
        for (k = 0; k < n_mem; k++) { // softmax over A(s) minus softmax over the positives
            const double x = fabs((double)gr[k]);
            gr[k] = (float)(x / all - (gr[k] < 0.0f ? x / pos : 0.0));
        }
    }
    for (s = 0; s < 2 * n_spans; s++)
        if (st[s] == -2) {
            RETRLM_FREE(g), RETRLM_FREE(row);
            return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: span %d's %s query scores NaN or inf", s % n_spans,
                                s < n_spans ? "start" : "end");
        }
    for (s = 0; s < n_spans; s++) // start and end rows of a span have the same positives
        if (st[s] >= 0) {
            cnt++;
            total += row[s] + row[n_spans + s];
            hs += st[s] == 1, he += st[n_spans + s] == 1;
        }
    scale = cnt ? c / (float)cnt : 0.0f;
    if (dqs || dqe) {
        RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
        for (s = 0; s < 2 * n_spans; s++) {
            float *dq = s < n_spans ? dqs : dqe;
            const float *gr = g + (size_t)s * n_mem;
            int k, d;
            if (!dq) continue;
            dq += (size_t)(s % n_spans) * dim;
            memset(dq, 0, (size_t)dim * sizeof(float));
            for (k = 0; k < n_mem; k++)
                if (gr[k] != 0.0f)
                    for (d = 0; d < dim; d++) dq[d] += scale * gr[k] * mem[(size_t)k * dim + d];
        }
    }
    if (dmem) {
        RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
        for (e = 0; e < n_mem; e++) {
            float *dm = dmem + (size_t)e * dim;
            int r, d;
            memset(dm, 0, (size_t)dim * sizeof(float));
            for (r = 0; r < 2 * n_spans; r++) {
                const float w = g[(size_t)r * n_mem + e];
                const float *q = (r < n_spans ? qs : qe) + (size_t)(r % n_spans) * dim;
                if (w != 0.0f)
                    for (d = 0; d < dim; d++) dm[d] += scale * w * q[d];
            }
        }
    }
    RETRLM_FREE(g), RETRLM_FREE(row);
    if (loss) *loss = cnt ? (float)(total / cnt) : 0.0f;
    if (count) *count = cnt;
    if (hits_start) *hits_start = hs;
    if (hits_end) *hits_end = he;
    return RETRLM_OK;
}
/* ---- retrlm_impl/datastore.c ---- */

RETRLM_API retrlm_result retrlm_datastore_init(retrlm_datastore *ds, const retrlm_datastore_config *cfg) {
    retrlm_datastore_config def;
    retrlm_bm25_config bc;
    retrlm_result res;
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (cfg->chunk_tokens < 0) return retrlm__fail(RETRLM_ERR_ARG, "datastore: chunk_tokens %d < 0", cfg->chunk_tokens);
    ds->chunk_tokens = cfg->chunk_tokens ? cfg->chunk_tokens : 64;
    bc = retrlm__bm25_passage_config(&cfg->bm25); // units are passages of <= chunk_tokens
    res = retrlm_bm25_init(&ds->bm25, &bc);
    if (res) return res;
    if (!RETRLM__ARR_RESERVE(ds->text_off_b_, 1) || !RETRLM__ARR_RESERVE(ds->tok_off_b_, 1)) {
        retrlm_datastore_free(ds);
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: the unit tables");
    }
    stbds_arrput(ds->text_off_b_, 0);
    stbds_arrput(ds->tok_off_b_, 0);
    return RETRLM_OK;
}

static void retrlm__datastore_free_build(retrlm_datastore *ds) {
    stbds_arrfree(ds->doc_b_);
    stbds_arrfree(ds->text_off_b_);
    stbds_arrfree(ds->tok_off_b_);
    stbds_arrfree(ds->text_b_);
    stbds_arrfree(ds->tokens_b_);
}

RETRLM_API void retrlm_datastore_free(retrlm_datastore *ds) {
    if (!ds) return;
    retrlm__datastore_free_build(ds);
    retrlm_bm25_free(&ds->bm25);
    retrlm_index_free(&ds->dense);
    if (ds->owned_) RETRLM_FREE(ds->owned_);
    retrlm_reader_close(&ds->reader_);
    memset(ds, 0, sizeof *ds);
}

// one unit: its tokens and the bytes they decode to
static retrlm_result retrlm__datastore_unit(retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                            int64_t doc_id, const int *ids, size_t n) {
    size_t bytes = 0, at;
    retrlm_result res = retrlm_tokenizer_decode(tok, ids, n, NULL, 0, &bytes);
    if (res) return res;
    if (ds->n_units == INT_MAX - 1) return retrlm__fail(RETRLM_ERR_RANGE, "datastore: too many units");
    if (bytes == SIZE_MAX || !RETRLM__ARR_RESERVE(ds->text_b_, bytes + 1) ||
        !RETRLM__ARR_RESERVE(ds->tokens_b_, n) || !RETRLM__ARR_RESERVE(ds->doc_b_, 1) ||
        !RETRLM__ARR_RESERVE(ds->text_off_b_, 1) || !RETRLM__ARR_RESERVE(ds->tok_off_b_, 1))
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: unit %d", ds->n_units);
    at = (size_t)stbds_arrlen(ds->text_b_);
    stbds_arraddnptr(ds->text_b_, bytes + 1); // + 1: decode writes a NUL when there is room
    res = retrlm_tokenizer_decode(tok, ids, n, ds->text_b_ + at, bytes + 1, &bytes);
    if (res) {
        stbds_arrsetlen(ds->text_b_, at);
        return res;
    }
    stbds_arrsetlen(ds->text_b_, at + bytes);
    memcpy(stbds_arraddnptr(ds->tokens_b_, n), ids, n * sizeof(int));
    stbds_arrput(ds->doc_b_, doc_id);
    stbds_arrput(ds->text_off_b_, (uint64_t)stbds_arrlen(ds->text_b_));
    stbds_arrput(ds->tok_off_b_, (uint64_t)stbds_arrlen(ds->tokens_b_));
    ds->n_units++;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_datastore_add(retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                              int64_t doc_id, const char *text, size_t len,
                                              int flags) {
    size_t n = 0, at, step;
    int *ids;
    retrlm_result res;
    RETRLM_ASSERT(ds && tok && (text || !len));
    if (ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: add after commit");
    res = retrlm_tokenizer_encode(tok, text, len, 0, NULL, 0, &n);
    if (res) return res;
    if (n == 0) return RETRLM_OK; // nothing to retrieve
    ids = (int *)retrlm__alloc(n, sizeof(int));
    if (!ids) return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory for %lu tokens", (unsigned long)n);
    res = retrlm_tokenizer_encode(tok, text, len, 0, ids, n, &n);
    step = (flags & RETRLM_DATASTORE_CHUNK) ? (size_t)ds->chunk_tokens : n;
    for (at = 0; !res && at < n; at += step) res = retrlm__datastore_unit(ds, tok, doc_id, ids + at, RETRLM__MIN(step, n - at));
    RETRLM_FREE(ids);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_commit(retrlm_datastore *ds) {
    size_t nu, nt, nb, total;
    char *block;
    const char **texts;
    size_t *lens;
    int64_t *uids;
    int u;
    retrlm_result res;
    RETRLM_ASSERT(ds);
    if (ds->committed_) return RETRLM_OK;
    nu = (size_t)ds->n_units;
    nt = (size_t)stbds_arrlen(ds->tokens_b_);
    nb = (size_t)stbds_arrlen(ds->text_b_);
    // one block: unit_doc, text_off, tok_off (8-byte fields first), tokens, then text
    total = nu * 8 + 2 * (nu + 1) * 8 + nt * sizeof(int) + nb + 1;
    block = (char *)retrlm__alloc(total, 1);
    texts = (const char **)retrlm__alloc(nu ? nu : 1, sizeof *texts);
    lens = (size_t *)retrlm__alloc(nu ? nu : 1, sizeof *lens);
    uids = (int64_t *)retrlm__alloc(nu ? nu : 1, sizeof *uids);
    if (!block || !texts || !lens || !uids) {
        RETRLM_FREE(block), RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(uids);
        return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to commit %lu units", (unsigned long)nu);
    }
    ds->owned_ = block;
    ds->unit_doc = (const int64_t *)block;
    if (nu) memcpy(block, ds->doc_b_, nu * 8); // no units: doc_b_ is NULL
    ds->text_off = (const uint64_t *)memcpy(block + nu * 8, ds->text_off_b_, (nu + 1) * 8);
    ds->tok_off = (const uint64_t *)memcpy(block + nu * 8 + (nu + 1) * 8, ds->tok_off_b_, (nu + 1) * 8);
    ds->tokens = (const int *)(block + nu * 8 + 2 * (nu + 1) * 8);
    if (nt) memcpy((void *)ds->tokens, ds->tokens_b_, nt * sizeof(int));
    ds->text = block + nu * 8 + 2 * (nu + 1) * 8 + nt * sizeof(int);
    if (nb) memcpy((void *)ds->text, ds->text_b_, nb);
    ((char *)ds->text)[nb] = '\0';
    retrlm__datastore_free_build(ds);
    ds->committed_ = 1;
    for (u = 0; u < ds->n_units; u++) {
        texts[u] = ds->text + ds->text_off[u];
        lens[u] = (size_t)(ds->text_off[u + 1] - ds->text_off[u]);
        uids[u] = u;
    }
    res = retrlm_bm25_add_batch(&ds->bm25, ds->n_units, uids, texts, lens);
    if (!res) res = retrlm_bm25_commit(&ds->bm25);
    RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(uids);
    return res;
}

RETRLM__PRIVATE retrlm_result retrlm__datastore_embed_index(const retrlm_datastore *ds,
                                                            retrlm_encoder *enc,
                                                            const retrlm_tokenizer *enc_tok,
                                                            const retrlm_index_config *index_config,
                                                            retrlm_index *out,
                                                            retrlm_progress_fn progress, void *user) {
    retrlm_index_config ic;
    const char **texts = NULL;
    size_t *lens = NULL;
    float *emb = NULL;
    retrlm_result res;
    int u;
    RETRLM_ASSERT(ds && enc && enc_tok && out);
    memset(out, 0, sizeof *out);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: embed before commit");
    memset(&ic, 0, sizeof ic);
    if (index_config) ic = *index_config;
    ic.dim = enc->dim;
    ic.metric = RETRLM_METRIC_IP;
    if (!ic.progress) ic.progress = progress, ic.progress_user = user;
    texts = (const char **)retrlm__alloc((size_t)ds->n_units + 1, sizeof *texts);
    lens = (size_t *)retrlm__alloc((size_t)ds->n_units + 1, sizeof *lens);
    emb = (float *)retrlm__alloc((size_t)ds->n_units + 1, (size_t)enc->dim * sizeof(float));
    if (!texts || !lens || !emb) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to embed %d units", ds->n_units);
        goto done;
    }
    for (u = 0; u < ds->n_units; u++) texts[u] = retrlm_datastore_text(ds, u, &lens[u]);
    if ((res = retrlm_encoder_encode_texts(enc, enc_tok, RETRLM_DOC, texts, lens,
                                           (size_t)ds->n_units, emb, progress, user)) ||
        (res = retrlm_index_init(out, &ic)))
        goto done;
    if ((ic.nlist > 0 || ic.storage == RETRLM_STORAGE_SQ8) &&
        (res = retrlm_index_train(out, emb, (size_t)ds->n_units, enc->dim)))
        goto done;
    res = retrlm_index_add(out, emb, (size_t)ds->n_units, enc->dim, NULL);
done:
    if (res) retrlm_index_free(out);
    RETRLM_FREE(texts), RETRLM_FREE(lens), RETRLM_FREE(emb);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_embed(retrlm_datastore *ds, retrlm_encoder *enc,
                                                const retrlm_tokenizer *enc_tok,
                                                const retrlm_index_config *index_config,
                                                retrlm_progress_fn progress, void *user) {
    retrlm_result res;
    RETRLM_ASSERT(ds && enc && enc_tok);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: embed before commit");
    retrlm_index_free(&ds->dense);
    ds->encoder = NULL;
    ds->encoder_tok = NULL;
    if ((res = retrlm__datastore_embed_index(ds, enc, enc_tok, index_config, &ds->dense, progress,
                                             user)))
        return res;
    ds->encoder = enc;
    ds->encoder_tok = enc_tok;
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_load_dense(retrlm_datastore *ds,
                                                     const retrlm_encoder *enc,
                                                     const retrlm_tokenizer *enc_tok,
                                                     const char *index_path) {
    retrlm_result res;
    size_t i;
    RETRLM_ASSERT(ds && enc && enc_tok && index_path);
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: load_dense before commit");
    retrlm_index_free(&ds->dense);
    ds->encoder = NULL;
    ds->encoder_tok = NULL;
    if ((res = retrlm_index_load(&ds->dense, index_path))) return res;
    if (ds->dense.dim != enc->dim || ds->dense.n != (size_t)ds->n_units ||
        ds->dense.metric != RETRLM_METRIC_IP)
        res = retrlm__fail(RETRLM_ERR_FORMAT, "datastore: %s holds %lu vectors of dim %d (metric "
                           "%d) for %d units of dim %d (inner product)", index_path,
                           (unsigned long)ds->dense.n, ds->dense.dim, ds->dense.metric,
                           ds->n_units, enc->dim);
    for (i = 0; !res && i < ds->dense.n; i++)
        if (ds->dense.ids[i] < 0 || ds->dense.ids[i] >= ds->n_units)
            res = retrlm__fail(RETRLM_ERR_FORMAT, "datastore: %s has id %lld, not a unit",
                               index_path, (long long)ds->dense.ids[i]);
    if (res) {
        retrlm_index_free(&ds->dense);
        return res;
    }
    ds->encoder = enc;
    ds->encoder_tok = enc_tok;
    return RETRLM_OK;
}
#endif

// min-max normalisation of a list's scores into [0, 1] (all 1 when they are equal)
static float retrlm__minmax(const float *s, int n, int i) {
    float lo = s[n - 1], hi = s[0]; // best first
    return hi > lo ? (s[i] - lo) / (hi - lo) : 1.0f;
}

RETRLM__PRIVATE float retrlm__rrf_k(const retrlm_retrieve_params *p) {
    return p && p->rrf_k > 0 ? (float)p->rrf_k : 60.0f; // Cormack et al.'s constant
}

RETRLM_API int retrlm_fuse(const retrlm_retrieve_params *p, const int64_t *a_ids,
                           const float *a_scores, int na, const int64_t *b_ids,
                           const float *b_scores, int nb, int k, int64_t *out_ids,
                           float *out_scores) {
    retrlm_retrieve_mode mode = p ? p->mode : RETRLM_RETRIEVE_BM25;
    float w = p && p->weight > 0.0f ? RETRLM__MIN(p->weight, 1.0f) : 0.5f; // 0: the default
    float rk = retrlm__rrf_k(p), *sc, small[64];
    int64_t *ids;
    retrlm_topk h;
    int i, j, n;
    if (mode == RETRLM_RETRIEVE_BM25 || mode == RETRLM_RETRIEVE_DENSE || mode == RETRLM_RETRIEVE_RERANK) {
        const int64_t *xi = mode == RETRLM_RETRIEVE_BM25 ? a_ids : b_ids;
        const float *xs = mode == RETRLM_RETRIEVE_BM25 ? a_scores : b_scores;
        n = RETRLM__MIN(k, mode == RETRLM_RETRIEVE_BM25 ? na : nb);
        memcpy(out_ids, xi, (size_t)n * sizeof *out_ids);
        if (out_scores) memcpy(out_scores, xs, (size_t)n * sizeof *out_scores);
        return n;
    }
    // the heap's scores live in out_scores when the caller wants them, else on the stack for
    // the usual small k: no allocation per query then
    sc = out_scores ? out_scores : k <= 64 ? small : (float *)retrlm__alloc((size_t)k, sizeof *sc);
    ids = out_ids;
    if (!sc) return 0;
    retrlm_topk_init(&h, k, ids, sc);
    // every id of a, then the ids of b not in a
    for (i = 0; i < na + nb; i++) {
        int64_t id = i < na ? a_ids[i] : b_ids[i - na];
        int ia = i < na ? i : -1, ib = -1;
        float f;
        if (i >= na) {
            for (j = 0; j < na && a_ids[j] != id; j++) {}
            if (j < na) continue;
            ib = i - na;
        } else
            for (j = 0; j < nb; j++)
                if (b_ids[j] == id) { ib = j; break; }
        if (mode == RETRLM_RETRIEVE_RRF)
            f = (ia >= 0 ? 1.0f / (rk + (float)(ia + 1)) : 0.0f) +
                (ib >= 0 ? 1.0f / (rk + (float)(ib + 1)) : 0.0f);
        else
            f = (1.0f - w) * (ia >= 0 ? retrlm__minmax(a_scores, na, ia) : 0.0f) +
                w * (ib >= 0 ? retrlm__minmax(b_scores, nb, ib) : 0.0f);
        retrlm_topk_push(&h, id, f);
    }
    n = retrlm_topk_sort(&h);
    if (sc != out_scores && sc != small) RETRLM_FREE(sc);
    return n;
}

RETRLM__PRIVATE int retrlm__datastore_distinct(const retrlm_datastore *ds, int *units,
                                               float *scores, int n) {
    int i, j, m = 0;
    for (i = 0; i < n; i++) {
        int ni, nj, same = 0;
        const int *ti = retrlm_datastore_tokens(ds, units[i], &ni);
        for (j = 0; j < m && !same; j++) {
            const int *tj = retrlm_datastore_tokens(ds, units[j], &nj);
            same = ni == nj && !memcmp(ti, tj, (size_t)ni * sizeof *ti);
        }
        if (same) continue;
        if (scores) scores[m] = scores[i];
        units[m++] = units[i];
    }
    return m;
}

RETRLM__PRIVATE void retrlm__rerank_order(int n, int *cand, float *prior, float *score) {
    int i, j;
    // insertion by descending score: stable, so ties keep the first stage's order
    for (i = 1; i < n; i++) {
        const float si = score[i], pi = prior ? prior[i] : 0.0f;
        const int ci = cand[i];
        for (j = i; j > 0 && score[j - 1] < si; j--) {
            score[j] = score[j - 1], cand[j] = cand[j - 1];
            if (prior) prior[j] = prior[j - 1];
        }
        score[j] = si, cand[j] = ci;
        if (prior) prior[j] = pi;
    }
}

// RERANK: BM25's depth best units of documents other than exclude_doc, each text once, the want
// best of them by the inner product of the query's embedding with theirs, embedded now, plus
// bm25_weight times their BM25 score (ties: BM25's order)
static retrlm_result retrlm__datastore_rerank(const retrlm_datastore *ds,
                                              const retrlm_retrieve_params *p, const char *query,
                                              size_t len, int want, int64_t exclude_doc,
                                              int64_t *ids, float *sc, int *found) {
    const int depth = RETRLM__MIN(ds->n_units, RETRLM__MAX(want, p->depth > 0 ? p->depth : 100));
    const int P = ds->encoder->dim;
    int *cand = (int *)retrlm__alloc((size_t)depth, sizeof *cand), n = 0, i;
    float *q = (float *)retrlm__alloc((size_t)P * 2 + 2 * (size_t)depth, sizeof *q), *d = q + P,
          *bm = d + P, *s = bm + depth;
    retrlm_result res = RETRLM_OK;
    if (!cand || !q) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to re-rank");
        goto done;
    }
    if (!(p->bm25_weight >= 0.0f && p->bm25_weight < INFINITY)) {
        res = retrlm__fail(RETRLM_ERR_ARG, "datastore: bm25_weight %g is not finite and >= 0",
                           (double)p->bm25_weight);
        goto done;
    }
    if ((res = retrlm_datastore_retrieve(ds, NULL, query, len, depth, exclude_doc, cand, bm, &n)) ||
        (res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_QUERY, query, len, q)))
        goto done;
    n = retrlm__datastore_distinct(ds, cand, bm, n);
    for (i = 0; i < n; i++) {
        size_t tl;
        const char *t = retrlm_datastore_text(ds, cand[i], &tl);
        if ((res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_DOC, t, tl, d))) goto done;
        s[i] = retrlm_dot(q, d, P) + p->bm25_weight * bm[i]; // as the joint trainer scores
    }
    retrlm__rerank_order(n, cand, bm, s);
    *found = RETRLM__MIN(n, want);
    for (i = 0; i < *found; i++) ids[i] = cand[i], sc[i] = s[i];
done:
    RETRLM_FREE(cand), RETRLM_FREE(q);
    return res;
}

// the want best units by params' ranking, before exclusion (RERANK: after, in its first stage)
static retrlm_result retrlm__datastore_rank(const retrlm_datastore *ds,
                                            const retrlm_retrieve_params *p, const char *query,
                                            size_t len, int want, int64_t exclude_doc,
                                            int64_t *ids, float *sc, int *found) {
    retrlm_retrieve_mode mode = p ? p->mode : RETRLM_RETRIEVE_BM25;
    int depth = mode == RETRLM_RETRIEVE_RRF || mode == RETRLM_RETRIEVE_LINEAR
                    ? RETRLM__MIN(ds->n_units, RETRLM__MAX(want, p->depth > 0 ? p->depth : 100))
                    : want;
    int64_t *bi = NULL;
    float *bs = NULL, *q = NULL;
    int nb = 0, na = 0;
    retrlm_result res = RETRLM_OK;
    if ((unsigned)mode > RETRLM_RETRIEVE_RERANK)
        return retrlm__fail(RETRLM_ERR_ARG, "datastore: retrieve mode %d", (int)mode);
    if (mode == RETRLM_RETRIEVE_BM25) return retrlm_bm25_search(&ds->bm25, query, len, want, 0, ids, sc, found);
    if (!ds->encoder || !ds->dense.n)
        return retrlm__fail(RETRLM_ERR_ARG, "datastore: dense retrieval needs retrlm_datastore_embed first");
    if (mode == RETRLM_RETRIEVE_RERANK)
        return retrlm__datastore_rerank(ds, p, query, len, want, exclude_doc, ids, sc, found);
    bi = (int64_t *)retrlm__alloc(2 * (size_t)depth, sizeof *bi);
    bs = (float *)retrlm__alloc(2 * (size_t)depth, sizeof *bs);
    q = (float *)retrlm__alloc((size_t)ds->encoder->dim, sizeof *q);
    if (!bi || !bs || !q) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to search");
        goto done;
    }
    {
        retrlm_search_params sp;
        memset(&sp, 0, sizeof sp);
        sp.nprobe = p->nprobe;
        if ((res = retrlm_encoder_embed(ds->encoder, ds->encoder_tok, RETRLM_QUERY, query, len, q)) ||
            (res = retrlm_index_search(&ds->dense, q, 1, ds->dense.dim, depth, &sp, bi + depth,
                                       bs + depth)))
            goto done;
        for (nb = 0; nb < depth && bi[depth + nb] >= 0; nb++) {}
    }
    if (mode == RETRLM_RETRIEVE_DENSE) {
        *found = retrlm_fuse(p, NULL, NULL, 0, bi + depth, bs + depth, nb, want, ids, sc);
        goto done;
    }
    if ((res = retrlm_bm25_search(&ds->bm25, query, len, depth, 0, bi, bs, &na))) goto done;
    *found = retrlm_fuse(p, bi, bs, na, bi + depth, bs + depth, nb, want, ids, sc);
done:
    RETRLM_FREE(bi), RETRLM_FREE(bs), RETRLM_FREE(q);
    return res;
}

RETRLM_API retrlm_result retrlm_datastore_retrieve(const retrlm_datastore *ds,
                                                   const retrlm_retrieve_params *params,
                                                   const char *query, size_t len, int k,
                                                   int64_t exclude_doc, int *units,
                                                   float *scores, int *n_found) {
    // search a few more than k and drop the excluded document's units; if that leaves too
    // few while more matched, search again wider
    int want = k + 8, found, i, got;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(ds && k >= 0 && units && n_found);
    *n_found = 0;
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: search before commit");
    if (k == 0 || ds->n_units == 0) return RETRLM_OK;
    for (;;) {
        int64_t *ids;
        float *sc;
        if (want > ds->n_units) want = ds->n_units;
        ids = (int64_t *)retrlm__alloc((size_t)want, sizeof *ids);
        sc = (float *)retrlm__alloc((size_t)want, sizeof *sc);
        if (!ids || !sc) {
            RETRLM_FREE(ids), RETRLM_FREE(sc);
            return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory to search");
        }
        found = 0;
        res = retrlm__datastore_rank(ds, params, query, len, want, exclude_doc, ids, sc, &found);
        for (i = 0, got = 0; !res && i < found && got < k; i++) {
            if (ds->unit_doc[ids[i]] == exclude_doc && exclude_doc != RETRLM_NO_DOC) continue;
            units[got] = (int)ids[i];
            if (scores) scores[got] = sc[i];
            got++;
        }
        RETRLM_FREE(ids), RETRLM_FREE(sc);
        if (res) return res;
        if (got == k || found < want || want == ds->n_units) {
            *n_found = got;
            return RETRLM_OK;
        }
        want = want > INT_MAX / 4 ? ds->n_units : want * 4;
    }
}

RETRLM_API retrlm_result retrlm_datastore_search(const retrlm_datastore *ds, const char *query,
                                                 size_t len, int k, int64_t exclude_doc,
                                                 int *units, float *scores, int *n_found) {
    return retrlm_datastore_retrieve(ds, NULL, query, len, k, exclude_doc, units, scores, n_found);
}

RETRLM_API const char *retrlm_datastore_text(const retrlm_datastore *ds, int u, size_t *len) {
    RETRLM_ASSERT(ds && ds->committed_ && u >= 0 && u < ds->n_units);
    if (len) *len = (size_t)(ds->text_off[u + 1] - ds->text_off[u]);
    return ds->text + ds->text_off[u];
}

RETRLM_API const int *retrlm_datastore_tokens(const retrlm_datastore *ds, int u, int *n_tokens) {
    RETRLM_ASSERT(ds && ds->committed_ && u >= 0 && u < ds->n_units);
    if (n_tokens) *n_tokens = (int)(ds->tok_off[u + 1] - ds->tok_off[u]);
    return ds->tokens + ds->tok_off[u];
}

// ---------------------------------------------------------------------------------------------
// files

// writes the datastore into w; *bm25_image gets an allocation the caller frees after saving
static retrlm_result retrlm__datastore_writer(const retrlm_datastore *ds, retrlm_writer *w,
                                              void **bm25_image) {
    int32_t head[2];
    size_t n = 0;
    // bm25 save commits pending updates first: the committed index has none, so it is not
    // changed and the cast is safe
    retrlm_bm25 *bm = (retrlm_bm25 *)&ds->bm25;
    retrlm_result res;
    *bm25_image = NULL;
    if (!ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "datastore: save before commit");
    res = retrlm_bm25_save_memory(bm, NULL, 0, &n);
    if (res) return res;
    *bm25_image = retrlm__alloc(n, 1);
    if (!*bm25_image) return retrlm__fail(RETRLM_ERR_NOMEM, "datastore: no memory for the BM25 image");
    res = retrlm_bm25_save_memory(bm, *bm25_image, n, &n);
    head[0] = ds->chunk_tokens;
    head[1] = ds->n_units;
    if (!res) res = retrlm_writer_init(w, "datastore");
    if (!res) res = retrlm_writer_add_copy(w, "head", RETRLM_DTYPE_I32, head, 2);
    if (!res) res = retrlm_writer_add(w, "unit_doc", RETRLM_DTYPE_I64, ds->unit_doc, (size_t)ds->n_units);
    if (!res) res = retrlm_writer_add(w, "text_off", RETRLM_DTYPE_U64, ds->text_off, (size_t)ds->n_units + 1);
    if (!res) res = retrlm_writer_add(w, "text", RETRLM_DTYPE_U8, ds->text, (size_t)ds->text_off[ds->n_units]);
    if (!res) res = retrlm_writer_add(w, "tok_off", RETRLM_DTYPE_U64, ds->tok_off, (size_t)ds->n_units + 1);
    if (!res) res = retrlm_writer_add(w, "tokens", RETRLM_DTYPE_I32, ds->tokens, (size_t)ds->tok_off[ds->n_units]);
    if (!res) res = retrlm_writer_add(w, "bm25", RETRLM_DTYPE_U8, *bm25_image, n);
    return res;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_save(const retrlm_datastore *ds, const char *path) {
    retrlm_writer w;
    void *image;
    retrlm_result res;
    memset(&w, 0, sizeof w);
    res = retrlm__datastore_writer(ds, &w, &image);
    if (!res) res = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    RETRLM_FREE(image);
    return res;
}
#endif

RETRLM_API retrlm_result retrlm_datastore_save_memory(const retrlm_datastore *ds, void *buf,
                                                      size_t cap, size_t *size) {
    retrlm_writer w;
    void *image;
    retrlm_result res;
    memset(&w, 0, sizeof w);
    res = retrlm__datastore_writer(ds, &w, &image);
    if (!res) res = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    RETRLM_FREE(image);
    return res;
}

// checks the opened file against itself before anything is used
static retrlm_result retrlm__datastore_from_reader(retrlm_datastore *ds) {
    const retrlm_reader *r = &ds->reader_;
    const int32_t *head;
    const void *bm;
    size_t n, nbm, n_text, n_tok;
    int u;
    retrlm_result res;
    if ((res = retrlm_reader_get(r, "head", RETRLM_DTYPE_I32, (const void **)&head, &n))) return res;
    if (n != 2 || head[0] <= 0 || head[1] < 0)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'head': bad chunk size or unit count", r->source_);
    ds->chunk_tokens = head[0];
    ds->n_units = head[1];
    if ((res = retrlm_reader_get(r, "unit_doc", RETRLM_DTYPE_I64, (const void **)&ds->unit_doc, &n))) return res;
    if (n != (size_t)ds->n_units) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'unit_doc': %lu units, head says %d", r->source_, (unsigned long)n, ds->n_units);
    if ((res = retrlm_reader_get(r, "text", RETRLM_DTYPE_U8, (const void **)&ds->text, &n_text))) return res;
    if ((res = retrlm_reader_get(r, "tokens", RETRLM_DTYPE_I32, (const void **)&ds->tokens, &n_tok))) return res;
    if ((res = retrlm_reader_get(r, "text_off", RETRLM_DTYPE_U64, (const void **)&ds->text_off, &n))) return res;
    if (n != (size_t)ds->n_units + 1) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'text_off': %lu offsets for %d units", r->source_, (unsigned long)n, ds->n_units);
    if ((res = retrlm_reader_get(r, "tok_off", RETRLM_DTYPE_U64, (const void **)&ds->tok_off, &n))) return res;
    if (n != (size_t)ds->n_units + 1) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tok_off': %lu offsets for %d units", r->source_, (unsigned long)n, ds->n_units);
    if (ds->text_off[0] != 0 || ds->tok_off[0] != 0 || ds->text_off[ds->n_units] != n_text || ds->tok_off[ds->n_units] != n_tok)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: unit offsets do not span the text and token sections", r->source_);
    for (u = 0; u < ds->n_units; u++)
        if (ds->text_off[u + 1] < ds->text_off[u] || ds->tok_off[u + 1] < ds->tok_off[u])
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: offsets of unit %d decrease", r->source_, u);
    for (n = 0; n < n_tok; n++)
        if (ds->tokens[n] < 0) return retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens': negative id at %lu", r->source_, (unsigned long)n);
    if ((res = retrlm_reader_get(r, "bm25", RETRLM_DTYPE_U8, &bm, &nbm))) return res;
    if ((res = retrlm_bm25_load_memory(&ds->bm25, bm, nbm))) return res;
    if (ds->bm25.n_docs != ds->n_units)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: the BM25 index holds %d documents for %d units", r->source_, ds->bm25.n_docs, ds->n_units);
    for (u = 0; u < ds->n_units; u++)
        if (!retrlm_bm25_doc_length(&ds->bm25, u, NULL))
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: the BM25 index lacks unit %d", r->source_, u);
    ds->committed_ = 1;
    return RETRLM_OK;
}

static retrlm_result retrlm__datastore_finish_load(retrlm_datastore *ds, retrlm_result res) {
    if (!res) res = retrlm__datastore_from_reader(ds);
    if (res) { // keep the detail: free does not touch it
        retrlm_bm25_free(&ds->bm25);
        retrlm_reader_close(&ds->reader_);
        memset(ds, 0, sizeof *ds);
    }
    return res;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_datastore_load(retrlm_datastore *ds, const char *path) {
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    return retrlm__datastore_finish_load(ds, retrlm_reader_open(&ds->reader_, path, "datastore", 0));
}
#endif

RETRLM_API retrlm_result retrlm_datastore_load_memory(retrlm_datastore *ds, const void *data,
                                                      size_t size) {
    RETRLM_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    return retrlm__datastore_finish_load(ds, retrlm_reader_open_memory(&ds->reader_, data, size, "datastore", 0));
}

// ---- RETRO neighbours ------------------------------------------------------------------------

// whether unit u comes from one of the documents of doc (m tokens' documents)
static int retrlm__unit_in_docs(const retrlm_datastore *ds, int u, const int64_t *doc, int m) {
    int t;
    for (t = 0; t < m; t++)
        if (ds->unit_doc[u] == doc[t]) return 1;
    return 0;
}

// Unit u's tokens, then those of the units after it in its document (its continuation) unless
// unit_only, len at most, into out; returns how many were written.
RETRLM__PRIVATE int retrlm__unit_and_continuation(const retrlm_datastore *ds, int u, int len,
                                                  int unit_only, int *out) {
    int v, w = 0;
    for (v = u; v < ds->n_units && w < len; v++) {
        int nt, e;
        const int *ids;
        if (v > u && (unit_only || ds->unit_doc[v] != ds->unit_doc[u])) break;
        ids = retrlm_datastore_tokens(ds, v, &nt);
        if (!out) w += RETRLM__MIN(nt, len - w);
        else
            for (e = 0; e < nt && w < len; e++) out[w++] = ids[e];
    }
    return w;
}

RETRLM_API float retrlm_retro_overlap(const int *x, int m, const int *y, int len) {
    int i, j, n = 0, hit = 0, ny = 0;
    RETRLM_ASSERT((x || m <= 0) && (y || len <= 0));
    while (ny < len && y[ny] >= 0) ny++;
    for (i = 0; i + 1 < m; i++) {
        for (j = 0; j < i; j++) // counted once: an earlier copy of the same bigram
            if (x[j] == x[i] && x[j + 1] == x[i + 1]) break;
        if (j < i) continue;
        n++;
        for (j = 0; j + 1 < ny; j++)
            if (y[j] == x[i] && y[j + 1] == x[i + 1]) break;
        hit += j + 1 < ny;
    }
    return n ? (float)hit / (float)n : 0.0f;
}

// the k neighbours (k, len) of one chunk x (m tokens, documents doc or NULL); cand has depth
static retrlm_result retrlm__retro_chunk(const retrlm_datastore *ds, const retrlm_tokenizer *tok,
                                         const retrlm_retro_neighbours_config *c, const int *x,
                                         const int64_t *doc, int *cand, int *out) {
    char *q = NULL;
    size_t cap = 0, qlen = 0;
    int i, j = 0, nf = 0, t;
    retrlm_result r;
    for (t = 0; t < c->k * c->len; t++) out[t] = -1;
    r = retrlm__decode_grow(tok, x, (size_t)c->chunk, &q, &cap, &qlen);
    if (!r) r = retrlm_datastore_retrieve(ds, &c->retrieve, q, qlen, c->depth,
                                          doc ? doc[0] : RETRLM_NO_DOC, cand, NULL, &nf);
    RETRLM_FREE(q);
    for (i = 0; i < nf && j < c->k && !r; i++) {
        int u = cand[i], *row = out + (size_t)j * c->len;
        if (doc && retrlm__unit_in_docs(ds, u, doc, c->chunk)) continue;
        if (!retrlm__unit_and_continuation(ds, u, c->len, c->unit_only, row)) continue;
        if (c->min_overlap > 0.0f &&
            retrlm_retro_overlap(x, c->chunk, row, c->len) < c->min_overlap) {
            for (t = 0; t < c->len; t++) row[t] = -1;
            continue;
        }
        j++;
    }
    return r;
}

#define RETRLM__NB_BLOCK 256

RETRLM_API retrlm_result retrlm_retro_neighbours_build(retrlm_retro_neighbours *nb,
                                                       const retrlm_datastore *ds,
                                                       const retrlm_tokenizer *tok,
                                                       const int *stream, size_t n,
                                                       const int64_t *doc,
                                                       const retrlm_retro_neighbours_config *cfg) {
    retrlm_retro_neighbours_config c;
    retrlm_result r = RETRLM_OK;
    int64_t nc, b0;
    int *cand;
    retrlm_result *err;
    RETRLM_ASSERT(nb && ds && tok && cfg && (stream || !n));
    memset(nb, 0, sizeof *nb);
    c = *cfg;
    if (!c.chunk) c.chunk = 64;
    if (!c.k) c.k = 2;
    if (!c.len && c.chunk > 0) c.len = c.chunk <= 4096 ? 2 * c.chunk : 8192;
    if (!c.depth) c.depth = 4 * c.k;
    if (!ds->committed_ || c.chunk < 1 || c.chunk > 65536 || c.k < 1 || c.k > 64 || c.len < 1 ||
        c.len > 8192 || c.depth < c.k || c.depth > 4096 ||
        !(c.min_overlap >= 0.0f && c.min_overlap <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_neighbours: chunk %d (1..65536), k %d (1..64), "
                            "len %d (1..8192), depth %d (k..4096), min_overlap %g (0..1)%s", c.chunk,
                            c.k, c.len, c.depth, (double)c.min_overlap,
                            ds->committed_ ? "" : ", and a committed datastore");
    nc = (int64_t)(n / (size_t)c.chunk);
    nb->chunk = c.chunk;
    nb->k = c.k;
    nb->len = c.len;
    nb->n_chunks = nc;
    if ((uint64_t)nc > (uint64_t)SIZE_MAX / sizeof(int) / (size_t)c.k / (size_t)c.len)
        return retrlm__fail(RETRLM_ERR_NOMEM, "retro_neighbours: %lld chunks are too many",
                            (long long)nc);
    nb->owned_ = (int *)retrlm__alloc((size_t)nc * (size_t)c.k * (size_t)c.len + 1, sizeof(int));
    cand = (int *)retrlm__alloc((size_t)RETRLM__NB_BLOCK * (size_t)c.depth, sizeof(int));
    err = (retrlm_result *)retrlm__alloc(RETRLM__NB_BLOCK, sizeof(retrlm_result));
    if (!nb->owned_ || !cand || !err) {
        RETRLM_FREE(cand);
        RETRLM_FREE(err);
        retrlm_retro_neighbours_free(nb);
        return retrlm__fail(RETRLM_ERR_NOMEM, "retro_neighbours: no memory for %lld chunks",
                            (long long)nc);
    }
    nb->tokens = nb->owned_;
    for (b0 = 0; b0 < nc && !r; b0 += RETRLM__NB_BLOCK) {
        int nblk = (int)RETRLM__MIN((int64_t)RETRLM__NB_BLOCK, nc - b0), i;
        RETRLM__PARALLEL_FOR_IF(nblk > 1)
        for (i = 0; i < nblk; i++) {
            int64_t ch = b0 + i;
            size_t at = (size_t)ch * (size_t)c.chunk;
            err[i] = retrlm__retro_chunk(ds, tok, &c, stream + at, doc ? doc + at : NULL,
                                         cand + (size_t)i * c.depth,
                                         nb->owned_ + (size_t)ch * c.k * c.len);
        }
        for (i = 0; i < nblk && !r; i++)
            if (err[i])
                r = retrlm__fail(err[i], "retro_neighbours: chunk %lld: %s",
                                 (long long)(b0 + i), retrlm_result_string(err[i]));
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "neighbours", (double)(b0 + nblk),
                                     (double)nc);
    }
    RETRLM_FREE(cand);
    RETRLM_FREE(err);
    if (r) retrlm_retro_neighbours_free(nb);
    return r;
}

RETRLM_API void retrlm_retro_neighbours_free(retrlm_retro_neighbours *nb) {
    if (!nb) return;
    RETRLM_FREE(nb->owned_);
    retrlm_reader_close(&nb->reader_);
    memset(nb, 0, sizeof *nb);
}

RETRLM_API const int *retrlm_retro_neighbours_chunk(const retrlm_retro_neighbours *nb,
                                                    int64_t c) {
    RETRLM_ASSERT(nb && c >= 0 && c < nb->n_chunks);
    return nb->tokens + (size_t)c * (size_t)nb->k * (size_t)nb->len;
}

static retrlm_result retrlm__retro_nb_writer(const retrlm_retro_neighbours *nb, retrlm_writer *w) {
    int32_t shape[3];
    int64_t n = nb->n_chunks;
    retrlm_result r;
    shape[0] = nb->chunk;
    shape[1] = nb->k;
    shape[2] = nb->len;
    if ((r = retrlm_writer_init(w, "neighbours")) ||
        (r = retrlm_writer_add_copy(w, "shape", RETRLM_DTYPE_I32, shape, 3)) ||
        (r = retrlm_writer_add_copy(w, "n_chunks", RETRLM_DTYPE_I64, &n, 1)))
        return r;
    return retrlm_writer_add(w, "tokens", RETRLM_DTYPE_I32, nb->tokens,
                             (size_t)n * (size_t)nb->k * (size_t)nb->len);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_retro_neighbours_save(const retrlm_retro_neighbours *nb,
                                                      const char *path) {
    retrlm_writer w;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__retro_nb_writer(nb, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}
#endif

RETRLM_API retrlm_result retrlm_retro_neighbours_save_memory(const retrlm_retro_neighbours *nb,
                                                             void *buf, size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    memset(&w, 0, sizeof w);
    r = retrlm__retro_nb_writer(nb, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// checks the opened file: shape in range, the token count is n_chunks * k * len, every id is
// >= -1 and a neighbour's ids after its first -1 are all -1
static retrlm_result retrlm__retro_nb_from_reader(retrlm_retro_neighbours *nb, retrlm_result r) {
    const retrlm_reader *rd = &nb->reader_;
    int32_t shape[3];
    int64_t n;
    size_t cnt = 0, i, j;
    if (!r) r = retrlm_reader_read(rd, "shape", RETRLM_DTYPE_I32, shape, 3);
    if (!r) r = retrlm_reader_read(rd, "n_chunks", RETRLM_DTYPE_I64, &n, 1);
    if (!r && (shape[0] < 1 || shape[0] > 65536 || shape[1] < 1 || shape[1] > 64 || shape[2] < 1 ||
               shape[2] > 8192 || n < 0 || (uint64_t)n > (uint64_t)SIZE_MAX / 64 / 8192))
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: shape m %d, k %d, len %d, %lld chunks is out of "
                         "range", rd->source_, shape[0], shape[1], shape[2], (long long)n);
    if (!r) r = retrlm_reader_get(rd, "tokens", RETRLM_DTYPE_I32, (const void **)&nb->tokens, &cnt);
    if (!r && cnt != (size_t)n * (size_t)shape[1] * (size_t)shape[2])
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens' holds %lu ids, the shape needs "
                         "%lld x %d x %d", rd->source_, (unsigned long)cnt, (long long)n, shape[1],
                         shape[2]);
    for (i = 0; !r && i < cnt; i += (size_t)shape[2]) {
        int ended = 0;
        for (j = 0; j < (size_t)shape[2] && !r; j++) {
            int id = nb->tokens[i + j];
            if (id < -1 || (ended && id != -1))
                r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: section 'tokens': id %d at %lu", rd->source_,
                                 id, (unsigned long)(i + j));
            ended |= id == -1;
        }
    }
    if (r) {
        retrlm_reader_close(&nb->reader_);
        memset(nb, 0, sizeof *nb);
        return r;
    }
    nb->chunk = shape[0];
    nb->k = shape[1];
    nb->len = shape[2];
    nb->n_chunks = n;
    return RETRLM_OK;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_retro_neighbours_load(retrlm_retro_neighbours *nb,
                                                      const char *path) {
    RETRLM_ASSERT(nb && path);
    memset(nb, 0, sizeof *nb);
    return retrlm__retro_nb_from_reader(nb, retrlm_reader_open(&nb->reader_, path,
                                                               "neighbours", 0));
}
#endif

RETRLM_API retrlm_result retrlm_retro_neighbours_load_memory(retrlm_retro_neighbours *nb,
                                                             const void *data, size_t size) {
    RETRLM_ASSERT(nb && data);
    memset(nb, 0, sizeof *nb);
    return retrlm__retro_nb_from_reader(nb, retrlm_reader_open_memory(&nb->reader_, data, size,
                                                                      "neighbours", 0));
}
/* ---- retrlm_impl/ralm.c ---- */

// One sequence to score: a retrieval prefix (units) and the text window [ctx, end) whose tokens
// [start, end) are predicted. A block of the stream has one job (none, in-context) or one per
// retrieved unit (REPLUG), each with its mixing weight.
typedef struct retrlm__ralm_job {
    int    block;   // index into the block table of this round
    int    units[16]; // units prepended, in order (in-context may take several)
    int    n_units;
    float  logw;    // log mixing weight
    int    len;     // tokens in the sequence
    float *lp;      // (end - start) log-probabilities of the predicted tokens, filled by scoring
} retrlm__ralm_job;

typedef struct retrlm__ralm_block {
    size_t ctx, start, end; // stream offsets: context from ctx, predicted [start, end)
    int    first_job, n_jobs;
} retrlm__ralm_block;

// the tokens unit u puts before the text: its first cap, or with cont its first cap together
// with its continuation in its document
static int retrlm__ralm_unit_len(const retrlm_datastore *ds, int u, int cap, int cont) {
    return retrlm__unit_and_continuation(ds, u, cap, !cont, NULL);
}

// writes job j's tokens into seq (its len), units first
static void retrlm__ralm_fill(const retrlm_datastore *ds, const retrlm__ralm_job *j,
                              const retrlm__ralm_block *b, const int *tokens, int unit_cap,
                              int cont, int *seq) {
    int i, at = 0;
    for (i = 0; i < j->n_units; i++) at += retrlm__unit_and_continuation(ds, j->units[i], unit_cap, !cont, seq + at);
    memcpy(seq + at, tokens + b->ctx, (b->end - b->ctx) * sizeof(int));
}

// kNN-LM interpolation settings and scratch for one batch
typedef struct retrlm__knn_ctx {
    const retrlm_knnlm *kn;
    int    k;
    float  log_lambda, log_1m_lambda, inv_temp;
    retrlm_search_params sp; // nprobe for IVF keys
    float *queries;  // (max_batch * stride, D)
    int64_t *ids;    // (max_batch * stride, k)
    float *dist;     // (max_batch * stride, k)
    int   *where;    // (max_batch * stride) job row * stride + p of each query
} retrlm__knn_ctx;

// log p_kNN(y) from the k neighbours of one query: log sum_{i: value_i = y} softmax(-d/T)_i
static float retrlm__knn_logp(const retrlm__knn_ctx *kc, const int64_t *ids, const float *dist, int y) {
    float mx = -INFINITY, all = 0.0f, hit = 0.0f;
    int i;
    for (i = 0; i < kc->k; i++)
        if (ids[i] >= 0) mx = RETRLM__MAX(mx, -dist[i] * kc->inv_temp);
    if (mx == -INFINITY) return -INFINITY;
    for (i = 0; i < kc->k; i++) {
        float e;
        if (ids[i] < 0) continue;
        e = expf(-dist[i] * kc->inv_temp - mx);
        all += e;
        if (kc->kn->values[ids[i]] == y) hit += e;
    }
    return hit > 0.0f ? logf(hit / all) : -INFINITY;
}

// TRIME's memory at inference: the params, scratch, and the long memory's ring of keys
typedef struct retrlm__trime_ctx {
    const retrlm_trime_params *p;
    float *sims;   // (max_seq_len + cache) scratch
    float *ring;   // cache > 0: (ring_rows, D), the key of stream position j (it predicted token
                   // j + 1, in the window that scored that token) at row j % ring_rows
    size_t ring_rows, cache;
} retrlm__trime_ctx;

// log p(y) of TRIME's joint softmax over the vocabulary (logits, lse their log-sum-exp), the
// entries j < a of one sequence (keys K (a, D), entry j labelled seq[j + 1]) and the long
// memory's stream positions [lo, hi) (ring keys, entry j labelled tokens[j + 1])
static float retrlm__ralm_trime_lp(const retrlm__trime_ctx *tc, const float *K, const int *seq, int a,
                                   const int *tokens, size_t lo, size_t hi, int D,
                                   const float *logits, float lse, int y) {
    const float scale = retrlm__trime_scale(tc->p, D), *q = K + (size_t)a * D;
    const int nc = (int)(hi - lo);
    float mx = RETRLM__MAX(lse, logits[y]), *sims = tc->sims;
    double all, hit;
    int j;
    for (j = 0; j < a; j++) sims[j] = retrlm__trime_sim(tc->p, scale, q, K + (size_t)j * D, D);
    for (j = 0; j < nc; j++)
        sims[a + j] = retrlm__trime_sim(tc->p, scale, q, tc->ring + ((lo + (size_t)j) % tc->ring_rows) * D, D);
    for (j = 0; j < a + nc; j++) mx = RETRLM__MAX(mx, sims[j]);
    all = exp((double)(lse - mx));
    hit = exp((double)(logits[y] - mx));
    for (j = 0; j < a + nc; j++) {
        double e = exp((double)(sims[j] - mx));
        all += e;
        if ((j < a ? seq[j + 1] : tokens[lo + (size_t)(j - a) + 1]) == y) hit += e;
    }
    return (float)(log(hit) - log(all));
}

// runs jobs [j0, j1) through the model, batch by batch, and fills their lp
static retrlm_result retrlm__ralm_score(retrlm_model *m, const retrlm_datastore *ds,
                                        const int *tokens, int unit_cap, int cont,
                                        retrlm__ralm_job *jobs,
                                        const retrlm__ralm_block *blocks, int j0, int j1,
                                        int *inputs, int *lengths, const retrlm__knn_ctx *kc,
                                        const retrlm__trime_ctx *tc) {
    const int B = m->config.max_batch, V = m->config.vocab_size, D = m->config.dim;
    int j, r;
    retrlm_result res;
    for (j = j0; j < j1; j += B) {
        int rows = RETRLM__MIN(B, j1 - j), T = 1;
        for (r = 0; r < rows; r++) T = RETRLM__MAX(T, jobs[j + r].len - 1);
        for (r = 0; r < rows; r++) { // inputs are each sequence but its last token, padded
            retrlm__ralm_job *jb = &jobs[j + r];
            int *row = inputs + (size_t)r * T;
            retrlm__ralm_fill(ds, jb, &blocks[jb->block], tokens, unit_cap, cont, row);
            lengths[r] = jb->len - 1;
            if (lengths[r] < T) memset(row + lengths[r], 0, (size_t)(T - lengths[r]) * sizeof(int));
        }
        res = retrlm_model_forward(m, inputs, rows, T, lengths, 0);
        if (res) return res;
        int nq = 0;
        const float *keys = retrlm_model_ffn_input(m, m->config.n_layers - 1);
        for (r = 0; tc && tc->cache && r < rows; r++) { // the long memory's keys first: rows read earlier rows'
            retrlm__ralm_job *jb = &jobs[j + r];
            const retrlm__ralm_block *b = &blocks[jb->block];
            int n_pred = (int)(b->end - b->start), p;
            for (p = 0; p < n_pred; p++)
                memcpy(tc->ring + ((b->start + (size_t)p - 1) % tc->ring_rows) * D,
                       keys + ((size_t)r * T + (size_t)(jb->len - n_pred + p - 1)) * D, (size_t)D * sizeof(float));
        }
        for (r = 0; r < rows; r++) {
            retrlm__ralm_job *jb = &jobs[j + r];
            const retrlm__ralm_block *b = &blocks[jb->block];
            int n_pred = (int)(b->end - b->start), p;
            // the long memory: the cache tokens before the window, [lo, hi); none without a cache
            size_t hi = tc && tc->cache ? b->ctx : 0, lo = tc && hi > tc->cache ? hi - tc->cache : 0;
            // the predicted tokens are the last n_pred of the sequence: token at sequence index
            // q is predicted by the logits (and the kNN key) at q - 1
            for (p = 0; p < n_pred; p++) {
                int q = jb->len - n_pred + p;
                size_t at = (size_t)r * T + (size_t)(q - 1);
                const float *logits = m->logits + at * V;
                const float lse = retrlm_logsumexp(logits, V);
                const int y = tokens[b->start + p];
                jb->lp[p] = tc ? retrlm__ralm_trime_lp(tc, keys + (size_t)r * T * D, inputs + (size_t)r * T, q - 1,
                                                       tokens, lo, hi, D, logits, lse, y)
                               : logits[y] - lse;
                if (kc) {
                    memcpy(kc->queries + (size_t)nq * D, keys + at * D,
                           (size_t)D * sizeof(float));
                    kc->where[nq++] = r * 65536 + p;
                }
            }
        }
        if (kc && nq) {
            int i;
            res = retrlm_index_search(&kc->kn->index, kc->queries, nq, D, kc->k, &kc->sp, kc->ids, kc->dist);
            if (res) return res;
            for (i = 0; i < nq; i++) {
                retrlm__ralm_job *jb = &jobs[j + kc->where[i] / 65536];
                int p = kc->where[i] % 65536;
                const retrlm__ralm_block *b = &blocks[jb->block];
                float lk = retrlm__knn_logp(kc, kc->ids + (size_t)i * kc->k, kc->dist + (size_t)i * kc->k, tokens[b->start + p]);
                float a = kc->log_1m_lambda + jb->lp[p], c = kc->log_lambda + lk, hi = RETRLM__MAX(a, c);
                jb->lp[p] = c == -INFINITY ? a : hi + logf(expf(a - hi) + expf(c - hi));
            }
        }
    }
    return RETRLM_OK;
}

// REPLUG's default temperature for the scores a retrieval mode gives (ralm.h says why)
static float retrlm__replug_temperature(const retrlm_retrieve_params *rp) {
    retrlm_retrieve_mode mode = rp ? rp->mode : RETRLM_RETRIEVE_BM25;
    if (mode == RETRLM_RETRIEVE_BM25) return 1.0f;
    if (mode == RETRLM_RETRIEVE_RRF) {
        const float rk = retrlm__rrf_k(rp);
        return 2.0f / ((rk + 1.0f) * (rk + 1.0f));
    }
    return 0.1f;
}

// cfg's defaults filled in, and every field checked against the model, the datastore and the
// text's tokens (n of them): what retrlm_ralm_bits_per_byte runs with
static retrlm_result retrlm__ralm_resolve(const retrlm_model *m, const retrlm_tokenizer *tok,
                                          const retrlm_datastore *ds, const int *tokens, size_t n,
                                          size_t n_bytes, retrlm_ralm_config *cfg) {
    const int Tmax = m->config.max_seq_len, V = m->config.vocab_size;
    int prefix_units;
    size_t pos;
    retrlm_result res;
    if (m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the model is an encoder, not a causal LM");
    if (cfg->mode != RETRLM_RALM_NONE && (!ds || !tok))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: retrieval needs a tokenizer and a committed datastore");
    if (cfg->mode != RETRLM_RALM_NONE && !ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the datastore is not committed");
    if (n_bytes == 0) return retrlm__fail(RETRLM_ERR_ARG, "ralm: zero bytes of text");
    if (!cfg->stride) cfg->stride = 16;
    if (!cfg->query_tokens) cfg->query_tokens = 32;
    if (!cfg->k) cfg->k = cfg->mode == RETRLM_RALM_REPLUG ? 4 : 1;
    if (cfg->temperature == 0.0f) cfg->temperature = retrlm__replug_temperature(cfg->retrieve);
    if (!cfg->unit_tokens) cfg->unit_tokens = ds ? ds->chunk_tokens : 0;
    if (cfg->stride < 1 || cfg->query_tokens < 1 || cfg->k < 1 || cfg->k > 16 || cfg->unit_tokens < 0 ||
        cfg->context_tokens < 0 || !(cfg->temperature > 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: stride, query_tokens, k (1..16), unit_tokens, context_tokens or temperature out of range");
    prefix_units = cfg->mode == RETRLM_RALM_INCONTEXT ? cfg->k : cfg->mode == RETRLM_RALM_REPLUG ? 1 : 0;
    if (!cfg->context_tokens) cfg->context_tokens = Tmax - prefix_units * cfg->unit_tokens - cfg->stride;
    if (cfg->context_tokens < 1 || prefix_units * cfg->unit_tokens + cfg->context_tokens + cfg->stride > Tmax)
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: %d unit(s) of %d tokens + %d context + %d stride exceed the model's %d positions",
                            prefix_units, cfg->unit_tokens, cfg->context_tokens, cfg->stride, Tmax);
    if (cfg->knnlm) {
        if (!cfg->knn_k) cfg->knn_k = 64;
        if (cfg->lambda == 0.0f) cfg->lambda = 0.25f;
        if (cfg->knn_temperature == 0.0f) cfg->knn_temperature = 1.0f;
        if (cfg->knn_k < 1 || !(cfg->lambda > 0.0f && cfg->lambda < 1.0f) || !(cfg->knn_temperature > 0.0f))
            return retrlm__fail(RETRLM_ERR_ARG, "ralm: knn_k >= 1, lambda in (0, 1) and knn_temperature > 0 are needed");
        if (cfg->knn_nprobe < 0) return retrlm__fail(RETRLM_ERR_ARG, "ralm: knn_nprobe %d is negative", cfg->knn_nprobe);
        if (cfg->knnlm->index.dim != m->config.dim)
            return retrlm__fail(RETRLM_ERR_ARG, "ralm: kNN-LM keys have %d dimensions, the model %d", cfg->knnlm->index.dim, m->config.dim);
        if (cfg->stride > 65535) return retrlm__fail(RETRLM_ERR_ARG, "ralm: stride above 65535 with kNN-LM");
    }
    if (cfg->trime && (res = retrlm__trime_check(cfg->trime, "ralm"))) return res;
    if (cfg->trime_cache < 0 || (cfg->trime_cache && !cfg->trime) || (cfg->trime_cache && cfg->mode == RETRLM_RALM_REPLUG))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: trime_cache is >= 0, with trime, and not with REPLUG's ensemble");
    for (pos = 0; pos < n; pos++)
        if (tokens[pos] < 0 || tokens[pos] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "ralm: token %d at %lu outside the model's vocabulary of %d", tokens[pos], (unsigned long)pos, V);
    return RETRLM_OK;
}

// A block's jobs from jobs[*nj] on, given the units its query retrieved (found, best first, with
// their scores): REPLUG one job a unit weighted softmax(score / temperature), else one job with
// every unit, the best nearest the text; then each job's sequence length
static void retrlm__ralm_jobs(const retrlm_ralm_config *cfg, const retrlm_datastore *ds, int nb,
                              retrlm__ralm_block *bl, const int *units, const float *scores, int found,
                              retrlm__ralm_job *jobs, int *nj) {
    int j;
    bl->first_job = *nj;
    if (cfg->mode == RETRLM_RALM_REPLUG && found > 0) {
        float mx = scores[0], lse = 0.0f; // scores come best first
        for (j = 0; j < found; j++) lse += expf((scores[j] - mx) / cfg->temperature);
        lse = logf(lse);
        for (j = 0; j < found; j++) {
            retrlm__ralm_job *jb = &jobs[(*nj)++];
            jb->block = nb;
            jb->n_units = 1;
            jb->units[0] = units[j];
            jb->logw = (scores[j] - mx) / cfg->temperature - lse;
        }
    } else {
        retrlm__ralm_job *jb = &jobs[(*nj)++];
        jb->block = nb;
        jb->n_units = found;
        for (j = 0; j < found; j++) jb->units[j] = units[found - 1 - j]; // best last
        jb->logw = 0.0f;
    }
    bl->n_jobs = *nj - bl->first_job;
    for (j = bl->first_job; j < *nj; j++) {
        int u;
        jobs[j].len = (int)(bl->end - bl->ctx);
        for (u = 0; u < jobs[j].n_units; u++) jobs[j].len += retrlm__ralm_unit_len(ds, jobs[j].units[u], cfg->unit_tokens, cfg->continuation);
    }
}

// The cost in nats of each predicted token of the nb blocks, their jobs mixed per token
// (log sum_j w_j p_j(y)), added to *nats and written to token_nats (or NULL)
static void retrlm__ralm_mix(const retrlm__ralm_block *blocks, int nb, const retrlm__ralm_job *jobs,
                             double *nats, float *token_nats) {
    int b, j;
    for (b = 0; b < nb; b++) {
        const retrlm__ralm_block *bl = &blocks[b];
        int p, n_pred = (int)(bl->end - bl->start);
        for (p = 0; p < n_pred; p++) {
            double mx = -INFINITY, s = 0.0, l;
            for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                mx = RETRLM__MAX(mx, (double)jobs[j].logw + jobs[j].lp[p]);
            for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                s += exp((double)jobs[j].logw + jobs[j].lp[p] - mx);
            l = mx + log(s);
            *nats -= l;
            if (token_nats) token_nats[bl->start + (size_t)p] = (float)-l;
        }
    }
}

RETRLM_API retrlm_result retrlm_ralm_bits_per_byte(retrlm_model *m, const retrlm_tokenizer *tok,
                                                   const retrlm_datastore *ds, const int *tokens,
                                                   size_t n, size_t n_bytes,
                                                   const retrlm_ralm_config *cfg_in, double *bpb,
                                                   float *token_nats) {
    retrlm_ralm_config cfg;
    const int Tmax = m->config.max_seq_len, V = m->config.vocab_size;
    int round_blocks, max_jobs, i;
    size_t pos;
    double nats = 0.0;
    retrlm__ralm_job *jobs = NULL;
    retrlm__ralm_block *blocks = NULL;
    float *lp = NULL, *scores = NULL;
    int *inputs = NULL, *lengths = NULL, *units = NULL;
    char *query = NULL;
    size_t query_cap = 0;
    retrlm__knn_ctx knn, *kc = NULL;
    retrlm__trime_ctx trime, *tc = NULL;
    retrlm_result res;

    RETRLM_ASSERT(m && cfg_in && bpb && (tokens || n == 0));
    cfg = *cfg_in;
    *bpb = 0.0;
    if ((res = retrlm__ralm_resolve(m, tok, ds, tokens, n, n_bytes, &cfg))) return res;
    if (n == 0) return RETRLM_OK;

    // a round is enough blocks to fill a few batches; jobs of a round are scored together
    memset(&knn, 0, sizeof knn);
    memset(&trime, 0, sizeof trime);
    round_blocks = RETRLM__MAX(1, 4 * m->config.max_batch / (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1));
    max_jobs = round_blocks * (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1);
    jobs = (retrlm__ralm_job *)retrlm__calloc((size_t)max_jobs, sizeof *jobs);
    blocks = (retrlm__ralm_block *)retrlm__calloc((size_t)round_blocks, sizeof *blocks);
    lp = (float *)retrlm__alloc((size_t)max_jobs * cfg.stride, sizeof(float));
    inputs = (int *)retrlm__alloc((size_t)m->config.max_batch * Tmax, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)m->config.max_batch, sizeof(int));
    units = (int *)retrlm__alloc((size_t)cfg.k, sizeof(int));
    scores = (float *)retrlm__alloc((size_t)cfg.k, sizeof(float));
    if (cfg.trime) {
        trime.p = cfg.trime;
        trime.cache = (size_t)cfg.trime_cache;
        trime.sims = (float *)retrlm__alloc((size_t)Tmax + trime.cache, sizeof(float));
        if (trime.cache) {
            trime.ring_rows = trime.cache + (size_t)Tmax + (size_t)m->config.max_batch * (size_t)cfg.stride;
            trime.ring = (float *)retrlm__alloc(trime.ring_rows * (size_t)m->config.dim, sizeof(float));
        }
        if (!trime.sims || (trime.cache && !trime.ring)) scores = (RETRLM_FREE(scores), (float *)NULL);
        tc = &trime;
    }
    if (cfg.knnlm) {
        size_t nq = (size_t)m->config.max_batch * cfg.stride;
        knn.kn = cfg.knnlm;
        knn.k = cfg.knn_k;
        knn.log_lambda = logf(cfg.lambda);
        knn.log_1m_lambda = logf(1.0f - cfg.lambda);
        knn.inv_temp = 1.0f / cfg.knn_temperature;
        knn.sp.nprobe = cfg.knn_nprobe; // 0: the index's own
        knn.queries = (float *)retrlm__alloc(nq * m->config.dim, sizeof(float));
        knn.ids = (int64_t *)retrlm__alloc(nq * knn.k, sizeof(int64_t));
        knn.dist = (float *)retrlm__alloc(nq * knn.k, sizeof(float));
        knn.where = (int *)retrlm__alloc(nq, sizeof(int));
        if (!knn.queries || !knn.ids || !knn.dist || !knn.where) scores = (RETRLM_FREE(scores), (float *)NULL);
        kc = &knn;
    }
    if (!jobs || !blocks || !lp || !inputs || !lengths || !units || !scores) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "ralm: no memory for the scoring buffers");
        goto done;
    }
    for (i = 0; i < max_jobs; i++) jobs[i].lp = lp + (size_t)i * cfg.stride;

    // the first token has nothing before it: ln V, as retrlm_lm_bits_per_byte counts it
    nats = log((double)V);
    if (token_nats) token_nats[0] = (float)log((double)V);
    pos = 1;
    while (pos < n && !res) {
        int nb = 0, nj = 0;
        // plan a round: blocks, their retrievals and jobs
        while (nb < round_blocks && pos < n) {
            retrlm__ralm_block *bl = &blocks[nb];
            int found = 0;
            bl->start = pos;
            bl->end = RETRLM__MIN(n, pos + (size_t)cfg.stride);
            bl->ctx = pos > (size_t)cfg.context_tokens ? pos - (size_t)cfg.context_tokens : 0;
            if (cfg.mode != RETRLM_RALM_NONE) {
                size_t q0 = pos > (size_t)cfg.query_tokens ? pos - (size_t)cfg.query_tokens : 0, qlen = 0;
                res = retrlm__decode_grow(tok, tokens + q0, pos - q0, &query, &query_cap, &qlen);
                if (!res) res = retrlm_datastore_retrieve(ds, cfg.retrieve, query, qlen, cfg.k,
                                                          cfg.exclude ? cfg.exclude_doc : RETRLM_NO_DOC,
                                                          units, scores, &found);
                if (res) goto done;
            }
            retrlm__ralm_jobs(&cfg, ds, nb, bl, units, scores, found, jobs, &nj);
            nb++;
            pos = bl->end;
        }
        res = retrlm__ralm_score(m, ds, tokens, cfg.unit_tokens, cfg.continuation, jobs, blocks, 0, nj, inputs, lengths,
                                 kc, tc);
        if (res) goto done;
        retrlm__ralm_mix(blocks, nb, jobs, &nats, token_nats);
        res = retrlm__progress(cfg.progress, cfg.progress_user, "ralm", (double)pos, (double)n);
    }
    if (!res) *bpb = nats / log(2.0) / (double)n_bytes;
done:
    RETRLM_FREE(jobs), RETRLM_FREE(blocks), RETRLM_FREE(lp), RETRLM_FREE(inputs);
    RETRLM_FREE(lengths), RETRLM_FREE(units), RETRLM_FREE(scores), RETRLM_FREE(query);
    RETRLM_FREE(trime.sims), RETRLM_FREE(trime.ring);
    RETRLM_FREE(knn.queries), RETRLM_FREE(knn.ids), RETRLM_FREE(knn.dist), RETRLM_FREE(knn.where);
    return res;
}

// ---------------------------------------------------------------------------------------------
// kNN-LM datastore

RETRLM_API void retrlm_knnlm_free(retrlm_knnlm *kn) {
    if (!kn) return;
    retrlm_index_free(&kn->index);
    RETRLM_FREE(kn->values);
    retrlm_reader_close(&kn->reader_);
    memset(kn, 0, sizeof *kn);
}

// ---- files of an index with a token for each vector: kNN-LM keys (the token that followed
// each key) and NPM's phrase index (the corpus token each vector is the output of). Container
// sections "index" (the index's own file image) and NAME (the tokens, i32); the index's ids are
// positions into the tokens. The index is used in place from the reader; the tokens are copied.

// the writer holds the index image (owned by *image: free it after saving)
static retrlm_result retrlm__tokindex_writer(const char *kind, const char *name, const retrlm_index *ix,
                                             const int *tok, size_t n, retrlm_writer *w, void **image) {
    size_t size = 0;
    retrlm_result r;
    *image = NULL;
    if ((r = retrlm_writer_init(w, kind))) return r;
    if ((r = retrlm_index_save_memory(ix, NULL, 0, &size))) return r;
    if (!(*image = retrlm__alloc(size, 1))) return retrlm__fail(RETRLM_ERR_NOMEM, "%s save: no memory for the index image", kind);
    if ((r = retrlm_index_save_memory(ix, *image, size, &size))) return r;
    if ((r = retrlm_writer_add(w, "index", RETRLM_DTYPE_U8, *image, size))) return r;
    return retrlm_writer_add(w, name, RETRLM_DTYPE_I32, tok, n);
}

// rd is open: ix borrows from it, *tok (*n) is a copy; every id is a position and every token in
// [0, vocab_size), the metric is the one expected, or ERR_FORMAT: a file of other vectors is an
// error, never a read out of bounds
static retrlm_result retrlm__tokindex_read(retrlm_reader *rd, const char *kind, const char *name,
                                           retrlm_metric metric, int vocab_size, retrlm_index *ix,
                                           int **tok, size_t *n_out) {
    const void *image = NULL, *src = NULL;
    size_t isize = 0, n = 0, i;
    retrlm_result r;
    if ((r = retrlm_reader_get(rd, "index", RETRLM_DTYPE_U8, &image, &isize)) ||
        (r = retrlm_reader_get(rd, name, RETRLM_DTYPE_I32, &src, &n)) ||
        (r = retrlm_index_load_memory(ix, image, isize)))
        return r;
    if (n != ix->n || ix->metric != metric)
        return retrlm__fail(RETRLM_ERR_FORMAT, "%s: %lu %s for %lu vectors, metric %d (%d expected)", kind,
                            (unsigned long)n, name, (unsigned long)ix->n, ix->metric, metric);
    *tok = (int *)retrlm__alloc(n + 1, sizeof(int));
    if (!*tok) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %lu %s", kind, (unsigned long)n, name);
    if (n) memcpy(*tok, src, n * sizeof(int));
    for (i = 0; i < n; i++) {
        int64_t id = ix->ids[i];
        int v = (*tok)[i];
        if (id < 0 || (uint64_t)id >= n || v < 0 || v >= vocab_size)
            return retrlm__fail(RETRLM_ERR_FORMAT, "%s: vector %lu has id %lld and token %d: not for a "
                                "%d-token model", kind, (unsigned long)i, (long long)id, v, vocab_size);
    }
    *n_out = n;
    return RETRLM_OK;
}

// save (path) or save_memory (path NULL: into buf)
static retrlm_result retrlm__tokindex_save(const char *kind, const char *name, const retrlm_index *ix,
                                           const int *tok, size_t n, const char *path, void *buf,
                                           size_t cap, size_t *size) {
    retrlm_writer w;
    void *image;
    retrlm_result r = retrlm__tokindex_writer(kind, name, ix, tok, n, &w, &image);
#ifndef RETRLM_NO_STDIO
    if (!r) r = path ? retrlm_writer_save(&w, path) : retrlm_writer_save_memory(&w, buf, cap, size);
#else
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    (void)path;
#endif
    retrlm_writer_free(&w);
    retrlm_free(image);
    return r;
}

// load (path) or load_memory (path NULL: from data, borrowed): rd opened, then read as above
static retrlm_result retrlm__tokindex_load(const char *kind, const char *name, retrlm_metric metric,
                                           int vocab_size, const char *path, const void *data, size_t size,
                                           retrlm_reader *rd, retrlm_index *ix, int **tok, size_t *n) {
    retrlm_result r;
#ifndef RETRLM_NO_STDIO
    r = path ? retrlm_reader_open(rd, path, kind, 0) : retrlm_reader_open_memory(rd, data, size, kind, 0);
#else
    r = retrlm_reader_open_memory(rd, data, size, kind, 0);
    (void)path;
#endif
    return r ? r : retrlm__tokindex_read(rd, kind, name, metric, vocab_size, ix, tok, n);
}

#define RETRLM__KNNLM_KIND "knnlm"

RETRLM_API retrlm_result retrlm_knnlm_save_memory(const retrlm_knnlm *kn, void *buf, size_t cap,
                                                  size_t *size) {
    return retrlm__tokindex_save(RETRLM__KNNLM_KIND, "values", &kn->index, kn->values, kn->n, NULL, buf, cap, size);
}

// load (path) or load_memory (path NULL: data borrowed); kn zeroed first, freed on failure
static retrlm_result retrlm__knnlm_open(retrlm_knnlm *kn, const char *path, const void *data,
                                       size_t size, int vocab_size) {
    retrlm_result r;
    memset(kn, 0, sizeof *kn);
    if ((r = retrlm__tokindex_load(RETRLM__KNNLM_KIND, "values", RETRLM_METRIC_L2, vocab_size, path, data,
                                   size, &kn->reader_, &kn->index, &kn->values, &kn->n)))
        retrlm_knnlm_free(kn);
    return r;
}

RETRLM_API retrlm_result retrlm_knnlm_load_memory(retrlm_knnlm *kn, const void *data, size_t size,
                                                  int vocab_size) {
    return retrlm__knnlm_open(kn, NULL, data, size, vocab_size);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_knnlm_save(const retrlm_knnlm *kn, const char *path) {
    return retrlm__tokindex_save(RETRLM__KNNLM_KIND, "values", &kn->index, kn->values, kn->n, path, NULL, 0, NULL);
}

RETRLM_API retrlm_result retrlm_knnlm_load(retrlm_knnlm *kn, const char *path, int vocab_size) {
    return retrlm__knnlm_open(kn, path, NULL, 0, vocab_size);
}
#endif

RETRLM_API int retrlm_knnlm_default_nprobe(int nlist) {
    int p = 1;
    while (p < nlist && p * p < nlist) p++; // the smallest p with p^2 >= nlist
    return nlist > 0 ? p : 0;
}

RETRLM_API retrlm_result retrlm_knnlm_build(retrlm_knnlm *kn, retrlm_model *m, const int *tokens,
                                            size_t n, int seq_len,
                                            const retrlm_index_config *index_config) {
    const int D = m->config.dim, B = m->config.max_batch, V = m->config.vocab_size;
    retrlm_index_config icfg;
    size_t nk, start, half, p, done = 0;
    float *keys = NULL;
    int *inputs = NULL, *lengths = NULL;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(kn && m && (tokens || n == 0));
    memset(kn, 0, sizeof *kn);
    if (m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "knnlm: the model is an encoder, not a causal LM");
    if (!seq_len) seq_len = m->config.max_seq_len;
    if (seq_len < 2 || seq_len > m->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "knnlm: seq_len %d outside 2..%d", seq_len, m->config.max_seq_len);
    if (n < 2) return retrlm__fail(RETRLM_ERR_ARG, "knnlm: %lu tokens make no key", (unsigned long)n);
    for (p = 0; p < n; p++)
        if (tokens[p] < 0 || tokens[p] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "knnlm: token %d at %lu outside the vocabulary of %d", tokens[p], (unsigned long)p, V);
    nk = n - 1; // key p is the state at p, value the token at p + 1
    half = (size_t)seq_len / 2;
    keys = (float *)retrlm__alloc(nk, (size_t)D * sizeof(float));
    kn->values = (int *)retrlm__alloc(nk, sizeof(int));
    inputs = (int *)retrlm__alloc((size_t)B * seq_len, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)B, sizeof(int));
    if (!keys || !kn->values || !inputs || !lengths) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "knnlm: no memory for %lu keys of %d floats", (unsigned long)nk, D);
        goto done;
    }
    memcpy(kn->values, tokens + 1, nk * sizeof(int));
    // windows [start, start + seq_len) at a stride of half; window w keeps the keys from
    // start + half on (all of them in the first window), so each position is keyed once
    for (start = 0; done < nk && !res;) {
        int rows = 0, r, T = 0;
        size_t s0 = start;
        for (r = 0; r < B && start < nk && (r == 0 || start + half <= nk); r++, start += half) {
            size_t len = RETRLM__MIN((size_t)seq_len, nk - start);
            memcpy(inputs + (size_t)r * seq_len, tokens + start, len * sizeof(int));
            lengths[r] = (int)len;
            T = RETRLM__MAX(T, (int)len);
            rows++;
        }
        for (r = 0; r < rows; r++) // repack to stride T and pad
            if (T != seq_len) memmove(inputs + (size_t)r * T, inputs + (size_t)r * seq_len, (size_t)lengths[r] * sizeof(int));
        for (r = 0; r < rows; r++)
            if (lengths[r] < T) memset(inputs + (size_t)r * T + lengths[r], 0, (size_t)(T - lengths[r]) * sizeof(int));
        res = retrlm_model_forward(m, inputs, rows, T, lengths, RETRLM_FORWARD_NO_LOGITS);
        if (res) break;
        for (r = 0; r < rows; r++) {
            size_t w0 = s0 + (size_t)r * half, from = w0 == 0 ? 0 : half, t;
            const float *h = retrlm_model_ffn_input(m, m->config.n_layers - 1) + (size_t)r * T * D;
            for (t = from; t < (size_t)lengths[r]; t++) {
                if (w0 + t < done) continue; // keyed by an earlier window already
                memcpy(keys + (w0 + t) * D, h + t * D, (size_t)D * sizeof(float));
                done = w0 + t + 1;
            }
        }
        res = retrlm__progress(index_config ? index_config->progress : NULL,
                               index_config ? index_config->progress_user : NULL, "knnlm keys",
                               (double)done, (double)nk);
    }
    if (res) goto done;
    if (index_config) icfg = *index_config;
    else memset(&icfg, 0, sizeof icfg);
    icfg.dim = D;
    icfg.metric = RETRLM_METRIC_L2;
    if (icfg.nlist > 0 && !icfg.nprobe) icfg.nprobe = retrlm_knnlm_default_nprobe(icfg.nlist);
    res = retrlm_index_init(&kn->index, &icfg);
    if (!res && (icfg.nlist > 0 || icfg.storage == RETRLM_STORAGE_SQ8)) res = retrlm_index_train(&kn->index, keys, nk, D);
    if (!res) res = retrlm_index_add(&kn->index, keys, nk, D, NULL);
    kn->n = nk;
done:
    RETRLM_FREE(keys), RETRLM_FREE(inputs), RETRLM_FREE(lengths);
    if (res) {
        retrlm_index_free(&kn->index);
        RETRLM_FREE(kn->values);
        memset(kn, 0, sizeof *kn);
    }
    return res;
}

// ---------------------------------------------------------------------------------------------
// RETRO generation: retrieval every m tokens

// units[j] = the candidate (cand, nf of them, ranked) that neighbour j of nb (k, len) was made
// from: each candidate in turn is expanded the way retrlm_retro_neighbours_build expands it (the
// unit, then its continuation in its document unless unit_only) and the first whose expansion
// is the neighbour is taken; -1 for an absent neighbour. exp has room for len ids.
static retrlm_result retrlm__retro_units(const retrlm_datastore *ds,
                                         const retrlm_retro_neighbours_config *c,
                                         const int *cand, int nf, const int *nb, int *exp,
                                         int *units) {
    int i = 0, j;
    for (j = 0; j < c->k; j++) {
        const int *row = nb + (size_t)j * c->len;
        units[j] = -1;
        if (row[0] < 0) continue;
        for (; i < nf && units[j] < 0; i++) {
            int u = cand[i], w, t;
            for (t = 0; t < c->len; t++) exp[t] = -1;
            w = retrlm__unit_and_continuation(ds, u, c->len, c->unit_only, exp);
            if (w && !memcmp(exp, row, (size_t)c->len * sizeof(int))) units[j] = u;
        }
        if (units[j] < 0)
            return retrlm__fail(RETRLM_ERR_CORRUPT, "retro_generate: neighbour %d is none of the "
                                "units retrieved for its chunk", j);
    }
    return RETRLM_OK;
}

// the neighbours of the chunk x (m tokens) into the model's decode cache as chunk c, and the
// units they come from into units (k) when it is not NULL
static retrlm_result retrlm__retro_chunk_give(retrlm_model *m,
                                              const retrlm_retro_generate_config *g,
                                              const retrlm_retro_neighbours_config *nc,
                                              const int *x, int c, char **q, size_t *qcap,
                                              int *cand, int *exp, int *units) {
    retrlm_retro_neighbours nb;
    retrlm_result r;
    size_t qlen = 0;
    int nf = 0;
    if ((r = retrlm_retro_neighbours_build(&nb, g->ds, g->tok, x, (size_t)nc->chunk, NULL, nc)))
        return r;
    r = retrlm_model_decode_neighbours(m, c, nb.tokens);
    if (!r && units) { // the same query again, for the units' numbers
        r = retrlm__decode_grow(g->tok, x, (size_t)nc->chunk, q, qcap, &qlen);
        if (!r) r = retrlm_datastore_retrieve(g->ds, &nc->retrieve, *q, qlen, nc->depth,
                                              RETRLM_NO_DOC, cand, NULL, &nf);
        if (!r) r = retrlm__retro_units(g->ds, nc, cand, nf, nb.tokens, exp, units);
    }
    retrlm_retro_neighbours_free(&nb);
    return r;
}

RETRLM_API retrlm_result retrlm_retro_generate(retrlm_model *m,
                                               const retrlm_retro_generate_config *cfg,
                                               const int *prompt, int n_prompt, int n_new,
                                               int *out, int *n_out) {
    const retrlm_model_config *mc;
    retrlm_retro_neighbours_config nc;
    int *seq = NULL, *cand = NULL, *exp = NULL, pos, got = 0, M, V, i;
    char *q = NULL;
    size_t qcap = 0;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(m && cfg && (prompt || n_prompt <= 0) && (out || n_new <= 0));
    if (n_out) *n_out = 0;
    mc = &m->config;
    V = mc->vocab_size;
    M = mc->retro_chunk;
    if (!M || mc->bidirectional)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: not a RETRO model (retro_chunk 0): "
                            "retrlm_model_generate generates with a plain LM");
    if (n_prompt < 1 || n_prompt > mc->max_seq_len || n_new < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: a prompt of %d tokens (1..%d), %d "
                            "new", n_prompt, mc->max_seq_len, n_new);
    if (!cfg->tok || !cfg->ds || !cfg->ds->committed_)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: retrieval needs the LM's tokenizer "
                            "and a committed datastore");
    if (!cfg->rng && cfg->sampler && cfg->sampler->temperature > 0.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: sampling at temperature %g needs "
                            "an rng", (double)cfg->sampler->temperature);
    nc = cfg->neighbours;
    nc.progress = NULL;
    nc.progress_user = NULL;
    if (!nc.chunk) nc.chunk = M;
    if (!nc.k) nc.k = mc->retro_k;
    if (!nc.len) nc.len = mc->retro_len;
    if (!nc.depth) nc.depth = 4 * nc.k; // as retrlm_retro_neighbours_build
    if (nc.chunk != M || nc.k != mc->retro_k || nc.len != mc->retro_len)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: neighbours of chunk %d, k %d, len "
                            "%d; the model reads chunk %d, k %d, len %d", nc.chunk, nc.k, nc.len,
                            M, mc->retro_k, mc->retro_len);
    if (nc.depth < nc.k || nc.depth > 4096)
        return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: depth %d (k..4096)", nc.depth);
    for (i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "retro_generate: prompt token %d at %d outside "
                                "the vocabulary of %d", prompt[i], i, V);
    seq = (int *)retrlm__alloc((size_t)mc->max_seq_len + 1, sizeof(int));
    cand = (int *)retrlm__alloc((size_t)nc.depth, sizeof(int));
    exp = (int *)retrlm__alloc((size_t)nc.len, sizeof(int));
    if (!seq || !cand || !exp) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "retro_generate: no memory");
        goto done;
    }
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    for (pos = 0;;) {
        // position pos is the last of chunk c: retrieve with the chunk before decoding it
        if ((pos + 1) % M == 0) {
            int c = (pos + 1) / M - 1;
            r = retrlm__retro_chunk_give(m, cfg, &nc, seq + (size_t)c * M, c, &q, &qcap, cand, exp,
                                         cfg->units ? cfg->units + (size_t)c * nc.k : NULL);
            if (r) break;
        }
        if ((r = retrlm_model_decode(m, seq[pos], pos))) break;
        if (cfg->logits) memcpy(cfg->logits + (size_t)pos * V, m->step_logits, (size_t)V * sizeof(float));
        if (++pos < n_prompt) continue;
        if (got == n_new) break;
        seq[pos] = out[got++] = retrlm_model_sample(m, m->step_logits, cfg->sampler, cfg->rng);
        if (n_out) *n_out = got;
        if (got == n_new || pos >= mc->max_seq_len) break;
    }
done:
    RETRLM_FREE(seq), RETRLM_FREE(cand), RETRLM_FREE(exp), RETRLM_FREE(q);
    return r;
}

// ---------------------------------------------------------------------------------------------
// NPM's phrase index

RETRLM_API void retrlm_npm_index_free(retrlm_npm_index *x) {
    if (!x) return;
    retrlm_index_free(&x->index);
    RETRLM_FREE(x->tokens);
    retrlm_reader_close(&x->reader_);
    memset(x, 0, sizeof *x);
}

#define RETRLM__NPM_KIND "npm_index"

RETRLM_API retrlm_result retrlm_npm_index_save_memory(const retrlm_npm_index *x, void *buf, size_t cap,
                                                      size_t *size) {
    return retrlm__tokindex_save(RETRLM__NPM_KIND, "tokens", &x->index, x->tokens, x->n, NULL, buf, cap, size);
}

// load (path) or load_memory (path NULL: data borrowed); x zeroed first, freed on failure
static retrlm_result retrlm__npm_index_open(retrlm_npm_index *x, const char *path, const void *data,
                                            size_t size, int vocab_size) {
    retrlm_result r;
    memset(x, 0, sizeof *x);
    if ((r = retrlm__tokindex_load(RETRLM__NPM_KIND, "tokens", RETRLM_METRIC_IP, vocab_size, path, data,
                                   size, &x->reader_, &x->index, &x->tokens, &x->n)))
        retrlm_npm_index_free(x);
    return r;
}

RETRLM_API retrlm_result retrlm_npm_index_load_memory(retrlm_npm_index *x, const void *data, size_t size,
                                                      int vocab_size) {
    return retrlm__npm_index_open(x, NULL, data, size, vocab_size);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_npm_index_save(const retrlm_npm_index *x, const char *path) {
    return retrlm__tokindex_save(RETRLM__NPM_KIND, "tokens", &x->index, x->tokens, x->n, path, NULL, 0, NULL);
}

RETRLM_API retrlm_result retrlm_npm_index_load(retrlm_npm_index *x, const char *path, int vocab_size) {
    return retrlm__npm_index_open(x, path, NULL, 0, vocab_size);
}
#endif

RETRLM_API retrlm_result retrlm_npm_index_build(retrlm_npm_index *x, retrlm_model *m, const int *tokens,
                                                size_t n, int seq_len,
                                                const retrlm_index_config *index_config) {
    const int D = m->config.dim, B = m->config.max_batch, V = m->config.vocab_size;
    retrlm_index_config icfg;
    float *vec = NULL;
    int *lengths = NULL;
    size_t p, at;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(x && m && (tokens || n == 0));
    memset(x, 0, sizeof *x);
    if (!m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "npm_index: the model is a causal LM, not an encoder");
    if (!seq_len) seq_len = m->config.max_seq_len;
    if (seq_len < 1 || seq_len > m->config.max_seq_len || n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "npm_index: seq_len %d outside 1..%d, or no tokens (%lu)", seq_len,
                            m->config.max_seq_len, (unsigned long)n);
    for (p = 0; p < n; p++)
        if (tokens[p] < 0 || tokens[p] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "npm_index: token %d at %lu outside the vocabulary of %d", tokens[p],
                                (unsigned long)p, V);
    vec = (float *)retrlm__alloc(n, (size_t)D * sizeof(float));
    x->tokens = (int *)retrlm__alloc(n, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)B, sizeof(int));
    if (!vec || !x->tokens || !lengths) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_index: no memory for %lu vectors of %d floats", (unsigned long)n, D);
        goto done;
    }
    memcpy(x->tokens, tokens, n * sizeof(int));
    for (at = 0; at < n && !res;) { // B blocks a forward; the last block of the stream is shorter
        size_t b0 = at;
        int rows = 0, r, T;
        while (rows < B && at < n) {
            lengths[rows++] = (int)RETRLM__MIN((size_t)seq_len, n - at);
            at += (size_t)lengths[rows - 1];
        }
        T = lengths[0];
        // rows of T tokens: the stream's blocks are contiguous, and only the last may be short,
        // so the inputs are the stream itself unless that last block needs padding
        if (lengths[rows - 1] == T) res = retrlm_model_forward(m, tokens + b0, rows, T, NULL, RETRLM_FORWARD_NO_LOGITS);
        else {
            int *pad = (int *)retrlm__calloc((size_t)rows * T, sizeof(int));
            if (!pad) {
                res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_index: no memory");
                break;
            }
            memcpy(pad, tokens + b0, (at - b0) * sizeof(int));
            res = retrlm_model_forward(m, pad, rows, T, lengths, RETRLM_FORWARD_NO_LOGITS);
            RETRLM_FREE(pad);
        }
        if (res) break;
        for (r = 0; r < rows; r++)
            memcpy(vec + (b0 + (size_t)r * T) * D, m->hidden + (size_t)r * T * D, (size_t)lengths[r] * D * sizeof(float));
        res = retrlm__progress(index_config ? index_config->progress : NULL,
                               index_config ? index_config->progress_user : NULL, "npm index", (double)at, (double)n);
    }
    if (res) goto done;
    if (index_config) icfg = *index_config;
    else memset(&icfg, 0, sizeof icfg);
    icfg.dim = D;
    icfg.metric = RETRLM_METRIC_IP;
    res = retrlm_index_init(&x->index, &icfg);
    if (!res && (icfg.nlist > 0 || icfg.storage == RETRLM_STORAGE_SQ8)) res = retrlm_index_train(&x->index, vec, n, D);
    if (!res) res = retrlm_index_add(&x->index, vec, n, D, NULL);
    x->n = n;
done:
    RETRLM_FREE(vec), RETRLM_FREE(lengths);
    if (res) retrlm_npm_index_free(x);
    return res;
}

RETRLM_API retrlm_result retrlm_npm_fill(retrlm_model *m, const retrlm_npm_index *x, const int *tokens,
                                         int n, int start, int len, int mask_id, int k,
                                         float temperature, int *out, float *prob) {
    const int D = m->config.dim, V = m->config.vocab_size;
    const float c = 1.0f / (sqrtf((float)D) * (temperature > 0.0f ? temperature : 1.0f));
    float *q = NULL, *sc = NULL;
    int64_t *ids = NULL, *from = NULL; // from (2k): the first corpus token of each hit's phrase, -1 none
    double *w = NULL, best_p = 0.0;
    int i, side, a, b, best = -1;
    retrlm_result res = RETRLM_OK;
    RETRLM_ASSERT(m && x && tokens && out);
    if (!k) k = 32;
    if (!m->config.bidirectional || n < 1 || n > m->config.max_seq_len || len < 1 || start < 0 || start > n - len ||
        k < 1 || k > 65536 || mask_id < 0 || mask_id >= V || !(temperature >= 0.0f) || x->n == 0 || x->index.dim != D)
        return retrlm__fail(RETRLM_ERR_ARG, "npm_fill: an encoder, 1 <= n <= %d (%d), a span inside it (%d tokens at "
                            "%d), k in 1..65536 (%d), mask_id in the vocabulary (%d), and an index of this width",
                            m->config.max_seq_len, n, len, start, k, mask_id);
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V || ((i >= start && i < start + len) != (tokens[i] == mask_id)))
            return retrlm__fail(RETRLM_ERR_ARG, "npm_fill: token %d at %d: outside the vocabulary, or %s", tokens[i], i,
                                i >= start && i < start + len ? "not mask_id inside the span" : "mask_id outside it");
    q = (float *)retrlm__alloc((size_t)2 * D + (size_t)2 * k, sizeof(float));
    ids = (int64_t *)retrlm__alloc((size_t)4 * k, sizeof(int64_t));
    w = (double *)retrlm__alloc((size_t)2 * k, sizeof(double));
    if (!q || !ids || !w) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "npm_fill: no memory for %d hits", k);
        goto done;
    }
    sc = q + 2 * D, from = ids + 2 * k;
    if ((res = retrlm_model_forward(m, tokens, 1, n, NULL, RETRLM_FORWARD_NO_LOGITS))) goto done;
    memcpy(q, m->hidden + (size_t)start * D, (size_t)D * sizeof(float));
    memcpy(q + D, m->hidden + (size_t)(start + len - 1) * D, (size_t)D * sizeof(float));
    if ((res = retrlm_index_search(&x->index, q, 2, D, k, NULL, ids, sc))) goto done;
    for (side = 0; side < 2; side++) { // each side's softmax over its hits, weighted 1/2
        double mx = -INFINITY, sum = 0.0;
        for (i = side * k; i < side * k + k; i++) {
            int64_t j0 = ids[i] < 0 ? -1 : side ? ids[i] - len + 1 : ids[i];
            from[i] = j0 >= 0 && (uint64_t)j0 + (uint64_t)len <= (uint64_t)x->n ? j0 : -1;
            if (ids[i] >= 0 && c * sc[i] > mx) mx = c * sc[i];
        }
        for (i = side * k; i < side * k + k; i++) sum += w[i] = ids[i] < 0 ? 0.0 : exp(c * sc[i] - mx);
        for (i = side * k; i < side * k + k; i++) w[i] = sum > 0.0 ? 0.5 * w[i] / sum : 0.0;
    }
    for (a = 0; a < 2 * k; a++) { // a phrase's probability: every hit that proposes it
        double p = 0.0;
        if (from[a] < 0) continue;
        for (b = 0; b < 2 * k; b++)
            if (from[b] >= 0 && !memcmp(x->tokens + from[a], x->tokens + from[b], (size_t)len * sizeof(int))) p += w[b];
        if (p > best_p) best_p = p, best = a;
    }
    for (i = 0; i < len; i++) out[i] = best < 0 ? -1 : x->tokens[from[best] + i];
    if (prob) *prob = (float)best_p;
done:
    RETRLM_FREE(q), RETRLM_FREE(ids), RETRLM_FREE(w);
    return res;
}
/* ---- retrlm_impl/train.c ---- */
// ---------------------------------------------------------------------------------------------
// train: retriever training (DPR, Contriever)

#define RETRLM__MAX_DPR_BATCH 1024 // queries a step (candidates up to twice that)

RETRLM_API void retrlm_retriever_train_state_init(retrlm_retriever_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

// buffers of one contrastive step: nq query rows, up to nd document rows
typedef struct retrlm__cbatch {
    int   *qtok, *dtok, *qlen, *dlen, *pos;
    float *qemb, *demb, *dq, *dd;
    int   *tmp;   // (max tokens) a crop being built
    void  *block;
} retrlm__cbatch;

static retrlm_result retrlm__cbatch_init(retrlm__cbatch *b, const retrlm_encoder *e) {
    size_t nq = (size_t)e->side[RETRLM_QUERY].config.max_batch;
    size_t nd = (size_t)e->side[RETRLM_DOC].config.max_batch;
    size_t tq = (size_t)e->side[RETRLM_QUERY].config.max_seq_len;
    size_t td = (size_t)e->side[RETRLM_DOC].config.max_seq_len;
    size_t P = (size_t)e->dim, ni, nf;
    ni = nq * tq + nd * td + nq + nd + nq + RETRLM__MAX(tq, td);
    nf = 2 * nq * P + 2 * nd * P;
    memset(b, 0, sizeof *b);
    b->block = retrlm__alloc(ni * sizeof(int) + nf * sizeof(float), 1);
    if (!b->block)
        return retrlm__fail(RETRLM_ERR_NOMEM, "train: no memory for a batch of %lu + %lu texts",
                            (unsigned long)nq, (unsigned long)nd);
    b->qemb = (float *)b->block;
    b->demb = b->qemb + nq * P;
    b->dq = b->demb + nd * P;
    b->dd = b->dq + nq * P;
    b->qtok = (int *)(b->dd + nd * P);
    b->dtok = b->qtok + nq * tq;
    b->qlen = b->dtok + nd * td;
    b->dlen = b->qlen + nq;
    b->pos = b->dlen + nd;
    b->tmp = b->pos + nq;
    return RETRLM_OK;
}

// packs n token lists (src[i], len[i] tokens, cut to maxt; an empty one becomes token 0) into
// rows of the longest length; returns that length
static int retrlm__pack(int *dst, int *lens, const int *const *src, const int *len, int n, int maxt) {
    int i, t, T = 1;
    for (i = 0; i < n; i++) {
        lens[i] = RETRLM__MAX(1, RETRLM__MIN(len[i], maxt));
        T = RETRLM__MAX(T, lens[i]);
    }
    for (i = 0; i < n; i++)
        for (t = 0; t < T; t++)
            dst[(size_t)i * T + t] = t < len[i] && t < maxt ? src[i][t] : 0;
    return T;
}

// forward both sides, loss, backward both, one AdamW update
static retrlm_result retrlm__contrastive_step(retrlm_encoder *e, retrlm_adamw *opt,
                                              retrlm__cbatch *b, int nq, int Tq, int nd, int Td,
                                              float temperature,
                                              retrlm_retriever_train_state *st) {
    retrlm_result r;
    int correct = 0;
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, b->qtok, nq, Tq, b->qlen, b->qemb)) ||
        (r = retrlm_encoder_forward(e, RETRLM_DOC, b->dtok, nd, Td, b->dlen, b->demb)) ||
        (r = retrlm_contrastive_loss(b->qemb, nq, b->demb, nd, e->dim, b->pos, temperature,
                                     &st->last_loss, b->dq, b->dd, &correct)))
        return r;
    retrlm_encoder_zero_grad(e);
    if ((r = retrlm_encoder_backward(e, RETRLM_DOC, b->dd)) ||
        (r = retrlm_encoder_backward(e, RETRLM_QUERY, b->dq)))
        return r;
    retrlm_adamw_step(opt);
    st->last_acc = (float)correct / (float)nq;
    return RETRLM_OK;
}

static retrlm_result retrlm__check_texts(const retrlm_token_texts *t, const char *what) {
    size_t i;
    if (t->n && (!t->ids || !t->off))
        return retrlm__fail(RETRLM_ERR_ARG, "train: %s has no ids or offsets", what);
    for (i = 0; i < t->n; i++)
        if (t->off[i + 1] < t->off[i] || t->off[i + 1] - t->off[i] > (size_t)INT32_MAX)
            return retrlm__fail(RETRLM_ERR_ARG, "train: %s offsets decrease at text %lu", what,
                                (unsigned long)i);
    return RETRLM_OK;
}

static int retrlm__in_list(const int *xs, int n, int x) {
    int i;
    for (i = 0; i < n; i++)
        if (xs[i] == x) return 1;
    return 0;
}

RETRLM_API retrlm_result retrlm_dpr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_dpr_config *cfg,
                                          retrlm_retriever_train_state *st) {
    const int maxb = e->config.max_batch;
    const int *qsrc[RETRLM__MAX_DPR_BATCH], *dsrc[2 * RETRLM__MAX_DPR_BATCH];
    int qn[RETRLM__MAX_DPR_BATCH], dn[2 * RETRLM__MAX_DPR_BATCH];
    int docs[2 * RETRLM__MAX_DPR_BATCH], pick[RETRLM__MAX_DPR_BATCH];
    int batch = cfg->batch ? cfg->batch : maxb;
    float temperature = cfg->temperature > 0.0f ? cfg->temperature : 1.0f;
    retrlm__cbatch b;
    retrlm_result r;
    size_t i;
    RETRLM_ASSERT(e && opt && cfg && st);
    if ((r = retrlm__check_texts(&cfg->queries, "queries")) ||
        (r = retrlm__check_texts(&cfg->docs, "docs")))
        return r;
    if (batch < 1 || batch > maxb || batch > RETRLM__MAX_DPR_BATCH || cfg->n_pairs < 1 ||
        !cfg->pair_query || !cfg->pair_doc || cfg->temperature < 0.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "dpr_train: batch %d must be in [1, %d] (the "
                            "encoder's max_batch), with pairs (%lu) and temperature >= 0", batch,
                            RETRLM__MIN(maxb, RETRLM__MAX_DPR_BATCH), (unsigned long)cfg->n_pairs);
    for (i = 0; i < cfg->n_pairs; i++) {
        int hn = cfg->hard_negative ? cfg->hard_negative[i] : -1;
        if (cfg->pair_query[i] < 0 || (size_t)cfg->pair_query[i] >= cfg->queries.n ||
            cfg->pair_doc[i] < 0 || (size_t)cfg->pair_doc[i] >= cfg->docs.n || hn < -1 ||
            (hn >= 0 && (size_t)hn >= cfg->docs.n))
            return retrlm__fail(RETRLM_ERR_ARG, "dpr_train: pair %lu (query %d, document %d, hard "
                                "negative %d) is out of range (%lu queries, %lu documents)",
                                (unsigned long)i, cfg->pair_query[i], cfg->pair_doc[i], hn,
                                (unsigned long)cfg->queries.n, (unsigned long)cfg->docs.n);
    }
    if ((r = retrlm__cbatch_init(&b, e))) return r;
    while (st->step < cfg->steps) {
        int n = 0, nd, tries, j, Tq, Td;
        // distinct positives; a pair whose document is taken is skipped
        for (tries = 0; n < batch && tries < 16 * batch; tries++) {
            int p = (int)retrlm_rng_below(&st->rng, cfg->n_pairs);
            if (retrlm__in_list(docs, n, cfg->pair_doc[p])) continue;
            pick[n] = p;
            docs[n++] = cfg->pair_doc[p];
        }
        nd = n;
        for (j = 0; j < n; j++) {
            int hn = cfg->hard_negative ? cfg->hard_negative[pick[j]] : -1;
            if (hn >= 0 && !retrlm__in_list(docs, nd, hn)) docs[nd++] = hn;
        }
        for (j = 0; j < n; j++) {
            int qi = cfg->pair_query[pick[j]];
            qsrc[j] = cfg->queries.ids + cfg->queries.off[qi];
            qn[j] = (int)(cfg->queries.off[qi + 1] - cfg->queries.off[qi]);
            b.pos[j] = j;
        }
        for (j = 0; j < nd; j++) {
            dsrc[j] = cfg->docs.ids + cfg->docs.off[docs[j]];
            dn[j] = (int)(cfg->docs.off[docs[j] + 1] - cfg->docs.off[docs[j]]);
        }
        Tq = retrlm__pack(b.qtok, b.qlen, qsrc, qn, n, e->config.max_query_tokens);
        Td = retrlm__pack(b.dtok, b.dlen, dsrc, dn, nd, e->config.max_doc_tokens);
        if ((r = retrlm__contrastive_step(e, opt, &b, n, Tq, nd, Td, temperature, st))) break;
        if (cfg->losses) cfg->losses[st->step] = st->last_loss;
        st->step++;
        if (cfg->progress && cfg->progress(cfg->progress_user, "dpr", (double)st->step, (double)cfg->steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "dpr_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(b.block);
    return r;
}

// a random crop of n tokens (fraction in [lo, hi]) with each token deleted with probability p
// (at least one kept), cut to maxt; into out, returns its length
static int retrlm__crop(int *out, const int *src, int n, float lo, float hi, float p, int maxt,
                        retrlm_rng *rng) {
    float ratio = lo + (hi - lo) * retrlm_rng_float(rng);
    int len = RETRLM__MAX(1, (int)(ratio * (float)n)), start, i, k = 0;
    len = RETRLM__MIN(len, n);
    start = (int)retrlm_rng_below(rng, (uint64_t)(n - len + 1));
    for (i = 0; i < len && k < maxt; i++)
        if (!(p > 0.0f && retrlm_rng_float(rng) < p)) out[k++] = src[start + i];
    if (k == 0) out[k++] = src[start];
    return k;
}

// ---------------------------------------------------------------------------------------------
// MoCo: the momentum key encoder and its queue

// the key encoder's weights as (destination, source, count) runs over e's: the transformer's
// parameter block, then the projection when there is one
static int retrlm__moco_runs(retrlm_encoder *key, const retrlm_encoder *e, float **dst,
                             const float **src, size_t *n) {
    int runs = 0;
    dst[runs] = key->side[RETRLM_QUERY].params;
    src[runs] = e->side[RETRLM_QUERY].params;
    n[runs++] = e->side[RETRLM_QUERY].n_params;
    if (e->proj[RETRLM_QUERY]) {
        dst[runs] = key->proj[RETRLM_QUERY];
        src[runs] = e->proj[RETRLM_QUERY];
        n[runs++] = (size_t)e->dim * (size_t)e->side[RETRLM_QUERY].config.dim;
    }
    return runs;
}

RETRLM_API retrlm_result retrlm_moco_init(retrlm_moco *mc, const retrlm_encoder *e,
                                          int queue_size, float momentum) {
    float *dst[2];
    const float *src[2];
    size_t n[2];
    int runs, i;
    retrlm_result r;
    RETRLM_ASSERT(mc && e);
    memset(mc, 0, sizeof *mc);
    if (e->config.separate || queue_size < 1 || !(momentum >= 0.0f && momentum <= 1.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "moco_init: needs a shared encoder (separate %d), "
                            "queue_size >= 1 (%d) and momentum in [0, 1] (%g)",
                            e->config.separate, queue_size, (double)momentum);
    if ((r = retrlm_encoder_init(&mc->key, &e->config))) return r;
    mc->queue = (float *)retrlm__alloc((size_t)queue_size, (size_t)e->dim * sizeof(float));
    if (!mc->queue) {
        retrlm_moco_free(mc);
        return retrlm__fail(RETRLM_ERR_NOMEM, "moco_init: no memory for %d keys of dim %d",
                            queue_size, e->dim);
    }
    runs = retrlm__moco_runs(&mc->key, e, dst, src, n);
    for (i = 0; i < runs; i++) memcpy(dst[i], src[i], n[i] * sizeof(float));
    mc->queue_size = queue_size;
    mc->momentum = momentum;
    return RETRLM_OK;
}

RETRLM_API void retrlm_moco_free(retrlm_moco *mc) {
    if (!mc) return;
    retrlm_encoder_free(&mc->key);
    RETRLM_FREE(mc->queue);
    memset(mc, 0, sizeof *mc);
}

// theta_key <- m theta_key + (1 - m) theta
static void retrlm__moco_update(retrlm_moco *mc, const retrlm_encoder *e) {
    float *dst[2];
    const float *src[2];
    size_t n[2];
    const float m = mc->momentum, m1 = 1.0f - mc->momentum;
    int runs = retrlm__moco_runs(&mc->key, e, dst, src, n), i;
    for (i = 0; i < runs; i++) {
        float *d = dst[i];
        const float *s = src[i];
        long j, nn = (long)n[i];
        RETRLM__PARALLEL_FOR_CHUNK_IF(16384, nn > 65536)
        for (j = 0; j < nn; j++) d[j] = m * d[j] + m1 * s[j];
    }
}

// appends n keys (n, dim) to the ring, overwriting the oldest when full
static void retrlm__moco_enqueue(retrlm_moco *mc, const float *keys, int n) {
    const size_t dim = (size_t)mc->key.dim;
    int i;
    for (i = 0; i < n; i++) {
        memcpy(mc->queue + (size_t)mc->head * dim, keys + (size_t)i * dim, dim * sizeof(float));
        mc->head = (mc->head + 1) % mc->queue_size;
        if (mc->n_queued < mc->queue_size) mc->n_queued++;
    }
}

// one MoCo step: queries through e, keys through the key encoder, candidates = the batch's keys
// then the queue (b->pos holds query i's positive, key i); only e gets gradients, through the
// queries; then the average and the queue move on
static retrlm_result retrlm__moco_step(retrlm_encoder *e, retrlm_adamw *opt, retrlm_moco *mc,
                                       retrlm__cbatch *b, float *cand, int n, int Tq, int Td,
                                       float temperature, retrlm_retriever_train_state *st) {
    const size_t dim = (size_t)e->dim;
    int correct = 0;
    retrlm_result r;
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, b->qtok, n, Tq, b->qlen, b->qemb)) ||
        (r = retrlm_encoder_forward(&mc->key, RETRLM_DOC, b->dtok, n, Td, b->dlen, cand)))
        return r;
    // the ring's order does not matter to the loss: it is a sum over candidates
    memcpy(cand + (size_t)n * dim, mc->queue, (size_t)mc->n_queued * dim * sizeof(float));
    if ((r = retrlm_contrastive_loss(b->qemb, n, cand, n + mc->n_queued, e->dim, b->pos,
                                     temperature, &st->last_loss, b->dq, NULL, &correct)))
        return r;
    retrlm_encoder_zero_grad(e);
    if ((r = retrlm_encoder_backward(e, RETRLM_QUERY, b->dq))) return r;
    retrlm_adamw_step(opt);
    retrlm__moco_update(mc, e);
    retrlm__moco_enqueue(mc, cand, n);
    st->last_acc = (float)correct / (float)n;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_contriever_train(retrlm_encoder *e, retrlm_adamw *opt,
                                                 const retrlm_contriever_config *cfg,
                                                 retrlm_retriever_train_state *st) {
    const int maxb = e->config.max_batch;
    const int Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    int batch = cfg->batch ? cfg->batch : maxb;
    float temperature = cfg->temperature > 0.0f ? cfg->temperature : 0.05f;
    float lo = cfg->crop_min > 0.0f ? cfg->crop_min : 0.1f;
    float hi = cfg->crop_max > 0.0f ? cfg->crop_max : 0.5f;
    float p = cfg->delete_prob == 0.0f ? 0.1f : cfg->delete_prob;
    int picked[RETRLM__MAX_DPR_BATCH];
    retrlm__cbatch b;
    retrlm_moco *mc = cfg->moco;
    float *cand = NULL; // MoCo: (batch + queue_size, dim) candidates
    retrlm_result r;
    size_t i, eligible = 0;
    RETRLM_ASSERT(e && opt && cfg && st);
    if (mc && (!mc->queue || e->config.separate || mc->key.dim != e->dim ||
               mc->key.side[RETRLM_QUERY].n_params != e->side[RETRLM_QUERY].n_params))
        return retrlm__fail(RETRLM_ERR_ARG, "contriever_train: the MoCo state was not made by "
                            "retrlm_moco_init from this (shared) encoder");
    if ((r = retrlm__check_texts(&cfg->docs, "docs"))) return r;
    for (i = 0; i < cfg->docs.n; i++) eligible += cfg->docs.off[i + 1] - cfg->docs.off[i] >= 2;
    if (batch < 1 || batch > maxb || batch > RETRLM__MAX_DPR_BATCH || !(lo <= hi) || hi > 1.0f ||
        p >= 1.0f || cfg->temperature < 0.0f || eligible < (size_t)batch)
        return retrlm__fail(RETRLM_ERR_ARG, "contriever_train: batch %d must be in [1, %d] and "
                            "at most the %lu documents of 2 tokens or more; crops %g..%g within "
                            "(0, 1]; delete_prob < 1", batch, RETRLM__MIN(maxb, RETRLM__MAX_DPR_BATCH),
                            (unsigned long)eligible, (double)lo, (double)hi);
    if ((r = retrlm__cbatch_init(&b, e))) return r;
    if (mc && !(cand = (float *)retrlm__alloc((size_t)batch + (size_t)mc->queue_size,
                                              (size_t)e->dim * sizeof(float)))) {
        RETRLM_FREE(b.block);
        return retrlm__fail(RETRLM_ERR_NOMEM, "contriever_train: no memory for %d + %d candidates",
                            batch, mc->queue_size);
    }
    while (st->step < cfg->steps) {
        int j, n = 0;
        // distinct documents of at least 2 tokens, padded rows first filled at stride T
        while (n < batch) {
            int d = (int)retrlm_rng_below(&st->rng, cfg->docs.n);
            if (cfg->docs.off[d + 1] - cfg->docs.off[d] < 2 || retrlm__in_list(picked, n, d)) continue;
            picked[n++] = d;
        }
        for (j = 0; j < n; j++) {
            const int *src = cfg->docs.ids + cfg->docs.off[picked[j]];
            int len = (int)(cfg->docs.off[picked[j] + 1] - cfg->docs.off[picked[j]]);
            b.qlen[j] = retrlm__crop(b.qtok + (size_t)j * Tq, src, len, lo, hi, p, Tq, &st->rng);
            b.dlen[j] = retrlm__crop(b.dtok + (size_t)j * Td, src, len, lo, hi, p, Td, &st->rng);
            b.pos[j] = j;
        }
        if (mc)
            r = retrlm__moco_step(e, opt, mc, &b, cand, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq, 0),
                                  retrlm__compact_rows(b.dtok, b.dlen, n, Td, 0), temperature, st);
        else
            r = retrlm__contrastive_step(e, opt, &b, n, retrlm__compact_rows(b.qtok, b.qlen, n, Tq, 0),
                                         n, retrlm__compact_rows(b.dtok, b.dlen, n, Td, 0),
                                         temperature, st);
        if (r) break;
        if (cfg->losses) cfg->losses[st->step] = st->last_loss;
        st->step++;
        if (cfg->progress &&
            cfg->progress(cfg->progress_user, "contriever", (double)st->step, (double)cfg->steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "contriever_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(b.block);
    RETRLM_FREE(cand);
    return r;
}

// ---------------------------------------------------------------------------------------------
// REPLUG LSR: the retriever learns from a frozen LM

// Sums, for each of B rows of the LM's last forward (B, T), the log-probabilities of the
// targets (B, T) that are >= 0 into out (B).
static void retrlm__rows_loglik(const retrlm_model *lm, const int *targets, int B, int T,
                                float *out) {
    const int V = lm->config.vocab_size;
    int b;
    RETRLM__PARALLEL_FOR_IF(B > 1)
    for (b = 0; b < B; b++) {
        double s = 0.0;
        int t;
        for (t = 0; t < T; t++) {
            const int y = targets[(size_t)b * T + t];
            const float *l = lm->logits + ((size_t)b * T + t) * (size_t)V;
            if (y >= 0) s += (double)l[y] - (double)retrlm_logsumexp(l, V);
        }
        out[b] = (float)s;
    }
}

// the buffers of an LSR run, one allocation
typedef struct retrlm__lsr {
    int   *units;   // (batch, k) retrieved units, -1 past found
    int   *found;   // (batch)
    int   *qtok;    // (batch, Tq) query-side tokens, then compacted
    int   *qlen;    // (batch)
    int   *dtok;    // (k, Td)
    int   *dlen;    // (k)
    int   *seq;     // (lm max_batch, lm max_seq_len) LM inputs
    int   *tgt;     // (lm max_batch, lm max_seq_len) LM targets, -1 outside y
    int   *slen;    // (lm max_batch)
    int   *row_ex;  // (batch * k) example of each LM row
    int   *row_u;   // (batch * k) candidate slot of each LM row
    float *gold;    // (batch, k) log p_LM(y | u, x), -inf past found
    float *score;   // (k) one example's retriever scores
    float *dscore;  // (k)
    float *q, *dq;  // (batch, dim)
    float *d, *dd;  // (k, dim)
    char  *text;    // x's text
    size_t text_cap;
    void  *block;
} retrlm__lsr;

static retrlm_result retrlm__lsr_init(retrlm__lsr *w, const retrlm_encoder *e,
                                      const retrlm_model *lm, int batch, int k) {
    const size_t B = (size_t)batch, K = (size_t)k, P = (size_t)e->dim;
    const size_t Tq = (size_t)e->config.max_query_tokens, Td = (size_t)e->config.max_doc_tokens;
    const size_t LB = (size_t)lm->config.max_batch, LT = (size_t)lm->config.max_seq_len;
    size_t ni = B * K + B + B * Tq + B + K * Td + K + 2 * LB * LT + LB + 2 * B * K;
    size_t nf = B * K + 2 * K + 2 * B * P + 2 * K * P;
    memset(w, 0, sizeof *w);
    w->block = retrlm__alloc(nf * sizeof(float) + ni * sizeof(int), 1);
    if (!w->block) return retrlm__fail(RETRLM_ERR_NOMEM, "lsr_train: no memory for a batch");
    w->gold = (float *)w->block;
    w->score = w->gold + B * K;
    w->dscore = w->score + K;
    w->q = w->dscore + K;
    w->dq = w->q + B * P;
    w->d = w->dq + B * P;
    w->dd = w->d + K * P;
    w->units = (int *)(w->dd + K * P);
    w->found = w->units + B * K;
    w->qtok = w->found + B;
    w->qlen = w->qtok + B * Tq;
    w->dtok = w->qlen + B;
    w->dlen = w->dtok + K * Td;
    w->seq = w->dlen + K;
    w->tgt = w->seq + LB * LT;
    w->slen = w->tgt + LB * LT;
    w->row_ex = w->slen + LB;
    w->row_u = w->row_ex + B * K;
    return RETRLM_OK;
}

// The LM's log-likelihood of every example's y after each of its units and x, in rows of the
// LM's max_batch: [unit's first ut tokens ; x ; y], targets on y.
static retrlm_result retrlm__lsr_gold(retrlm__lsr *w, const retrlm_lsr_config *c, const size_t *start,
                                      int batch, int k, int ut) {
    retrlm_model *lm = c->lm;
    const int cx = c->context_tokens, cy = c->continuation_tokens;
    const int LB = RETRLM__MIN(lm->config.max_batch, 1024); // rows a forward, and ll's size
    int rows = 0, i, j, r0;
    float ll[1024];
    for (i = 0; i < batch; i++)
        for (j = 0; j < k; j++) {
            w->gold[(size_t)i * k + j] = -INFINITY;
            if (j < w->found[i]) w->row_ex[rows] = i, w->row_u[rows++] = j;
        }
    for (r0 = 0; r0 < rows; r0 += LB) {
        int nr = RETRLM__MIN(LB, rows - r0), T = 0, b, t;
        retrlm_result r;
        for (b = 0; b < nr; b++) {
            const int u = w->units[(size_t)w->row_ex[r0 + b] * k + w->row_u[r0 + b]];
            w->slen[b] = retrlm__unit_and_continuation(c->ds, u, ut, !c->continuation, NULL) + cx + cy;
            T = RETRLM__MAX(T, w->slen[b]);
        }
        for (b = 0; b < nr; b++) {
            int n0, *s = w->seq + (size_t)b * T, *g = w->tgt + (size_t)b * T;
            const int ex = w->row_ex[r0 + b];
            n0 = retrlm__unit_and_continuation(c->ds, w->units[(size_t)ex * k + w->row_u[r0 + b]], ut,
                                               !c->continuation, s);
            memcpy(s + n0, c->tokens + start[ex], (size_t)(cx + cy) * sizeof(int));
            for (t = n0 + cx + cy; t < T; t++) s[t] = 0;
            // position t predicts s[t + 1]: the targets of y's tokens sit one before them
            for (t = 0; t < T; t++) g[t] = t >= n0 + cx - 1 && t < n0 + cx + cy - 1 ? s[t + 1] : -1;
        }
        if ((r = retrlm_model_forward(lm, w->seq, nr, T, w->slen, 0))) return r;
        retrlm__rows_loglik(lm, w->tgt, nr, T, ll);
        for (b = 0; b < nr; b++) w->gold[(size_t)w->row_ex[r0 + b] * k + w->row_u[r0 + b]] = ll[b];
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lsr_train(retrlm_encoder *e, retrlm_adamw *opt,
                                          const retrlm_lsr_config *cfg,
                                          retrlm_retriever_train_state *st) {
    retrlm_lsr_config c = *cfg;
    retrlm__lsr w;
    retrlm_retrieve_params rp;
    retrlm_result r = RETRLM_OK;
    const int P = e->dim, Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    size_t start[RETRLM__MAX_DPR_BATCH], span, t;
    int ut, i, j;
    RETRLM_ASSERT(e && opt && cfg && st);
    if (!c.context_tokens) c.context_tokens = 64;
    if (!c.continuation_tokens) c.continuation_tokens = 64;
    if (!c.query_tokens) c.query_tokens = RETRLM__MIN(32, c.context_tokens);
    if (!c.k) c.k = 8;
    if (!c.batch) c.batch = 8;
    if (c.temperature == 0.0f) c.temperature = 0.1f;
    if (!c.lm || !c.lm_tok || !c.ds || !c.tokens || c.lm->config.no_logits ||
        c.ds->encoder != e || c.ds->dense.n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: needs an LM with logits, its tokenizer, "
                            "tokens, and a datastore embedded with this encoder "
                            "(retrlm_datastore_embed)");
    if (c.context_tokens < 1 || c.continuation_tokens < 1 || c.query_tokens < 1 ||
        c.query_tokens > c.context_tokens || c.unit_tokens < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: x %d tokens (query %d of them), y %d and unit "
                            "%d: x, y and the query need at least 1, the query at most x",
                            c.context_tokens, c.query_tokens, c.continuation_tokens, c.unit_tokens);
    span = (size_t)c.context_tokens + (size_t)c.continuation_tokens;
    ut = c.unit_tokens ? c.unit_tokens
         : span < (size_t)c.lm->config.max_seq_len
             ? RETRLM__MIN(c.ds->chunk_tokens, c.lm->config.max_seq_len - (int)span) : 0;
    if (ut < 1 || span + (size_t)ut > (size_t)c.lm->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: a unit (%d tokens) + x (%d) + y (%d) exceed "
                            "the LM's %d positions", c.unit_tokens, c.context_tokens,
                            c.continuation_tokens, c.lm->config.max_seq_len);
    if (c.n_tokens < span)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: a stream of %lu tokens is shorter than x + y "
                            "(%lu)", (unsigned long)c.n_tokens, (unsigned long)span);
    if (c.k < 1 || c.k > e->side[RETRLM_DOC].config.max_batch || c.k > 1024)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: k %d must be in [1, %d] (the encoder's "
                            "document side max_batch)", c.k,
                            RETRLM__MIN(1024, e->side[RETRLM_DOC].config.max_batch));
    if (c.batch < 1 || c.batch > e->config.max_batch || c.batch > RETRLM__MAX_DPR_BATCH)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: batch %d must be in [1, %d] (the encoder's "
                            "max_batch)", c.batch, RETRLM__MIN(RETRLM__MAX_DPR_BATCH, e->config.max_batch));
    if (!(c.temperature > 0.0f) || c.refresh_every < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: temperature %g must be > 0 and refresh_every "
                            "%lld >= 0", (double)c.temperature, (long long)c.refresh_every);
    for (t = 0; t < c.n_tokens; t++)
        if (c.tokens[t] < 0 || c.tokens[t] >= c.lm->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "lsr_train: token %d at %lu is outside the LM's "
                                "vocabulary of %d", c.tokens[t], (unsigned long)t, c.lm->config.vocab_size);
    if ((r = retrlm__lsr_init(&w, e, c.lm, c.batch, c.k))) return r;
    memset(&rp, 0, sizeof rp);
    rp.mode = RETRLM_RETRIEVE_DENSE;
    while (st->step < c.steps) {
        double total = 0.0;
        int right = 0, T;
        // examples: windows whose query finds at least one unit
        for (i = 0; i < c.batch && !r; i++) {
            int tries = 0;
            do {
                size_t len;
                start[i] = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_tokens - span + 1));
                if ((r = retrlm__decode_grow(c.lm_tok, c.tokens + start[i] + c.context_tokens -
                                             c.query_tokens, (size_t)c.query_tokens, &w.text,
                                             &w.text_cap, &len)) ||
                    (r = retrlm_datastore_retrieve(c.ds, &rp, w.text, len, c.k,
                                                   c.token_doc ? c.token_doc[start[i]] : RETRLM_NO_DOC,
                                                   w.units + (size_t)i * c.k, NULL, &w.found[i])))
                    break;
                if (!w.found[i] && ++tries == 100)
                    r = retrlm__fail(RETRLM_ERR_ARG, "lsr_train: 100 queries found no unit (every "
                                     "unit of the example's own document?)");
                if (!r && w.found[i])
                    r = retrlm__encode_cut(c.ds->encoder_tok, w.text, len, w.qtok + (size_t)i * Tq,
                                           Tq, &w.qlen[i]);
            } while (!r && !w.found[i]);
        }
        if (r || (r = retrlm__lsr_gold(&w, &c, start, c.batch, c.k, ut))) break;
        // queries forward; then per example: its units forward, KL, document side backward
        T = retrlm__compact_rows(w.qtok, w.qlen, c.batch, Tq, 0);
        if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, w.qtok, c.batch, T, w.qlen, w.q))) break;
        retrlm_encoder_zero_grad(e);
        memset(w.dq, 0, (size_t)c.batch * P * sizeof(float));
        for (i = 0; i < c.batch && !r; i++) {
            const int nf = w.found[i];
            const float *qi = w.q + (size_t)i * P, *gi = w.gold + (size_t)i * c.k;
            float loss, *dqi = w.dq + (size_t)i * P;
            int best_p = 0, best_q = 0, Tdd;
            for (j = 0; j < nf && !r; j++) {
                size_t len;
                const char *txt = retrlm_datastore_text(c.ds, w.units[(size_t)i * c.k + j], &len);
                r = retrlm__encode_cut(c.ds->encoder_tok, txt, len, w.dtok + (size_t)j * Td, Td, &w.dlen[j]);
            }
            if (r) break;
            Tdd = retrlm__compact_rows(w.dtok, w.dlen, nf, Td, 0);
            if ((r = retrlm_encoder_forward(e, RETRLM_DOC, w.dtok, nf, Tdd, w.dlen, w.d))) break;
            for (j = 0; j < c.k; j++)
                w.score[j] = j < nf ? retrlm_dot(qi, w.d + (size_t)j * P, P) : -INFINITY;
            if ((r = retrlm_kl_distill_loss(w.score, gi, 1, c.k, c.temperature, c.temperature,
                                            &loss, w.dscore)))
                break;
            total += loss;
            for (j = 1; j < nf; j++) {
                best_p = w.score[j] > w.score[best_p] ? j : best_p;
                best_q = gi[j] > gi[best_q] ? j : best_q;
            }
            right += best_p == best_q;
            // s_ij = q_i . d_j: dd_j = ds_j q_i, dq_i = sum_j ds_j d_j (each / batch)
            for (j = 0; j < nf; j++) {
                const float g = w.dscore[j] / (float)c.batch;
                int a;
                for (a = 0; a < P; a++) {
                    w.dd[(size_t)j * P + a] = g * qi[a];
                    dqi[a] += g * w.d[(size_t)j * P + a];
                }
            }
            r = retrlm_encoder_backward(e, RETRLM_DOC, w.dd);
        }
        if (r || (r = retrlm_encoder_backward(e, RETRLM_QUERY, w.dq))) break;
        retrlm_adamw_step(opt);
        st->last_loss = (float)(total / c.batch);
        st->last_acc = (float)right / (float)c.batch;
        if (c.losses) c.losses[st->step] = st->last_loss;
        st->step++;
        if (c.refresh_every && st->step % c.refresh_every == 0 &&
            (r = retrlm_datastore_embed(c.ds, e, c.ds->encoder_tok, c.index_config, NULL, NULL)))
            break;
        if (c.progress && c.progress(c.progress_user, "lsr", (double)st->step, (double)c.steps)) {
            r = retrlm__fail(RETRLM_ERR_CANCELLED, "lsr_train: cancelled at step %lld",
                             (long long)st->step);
            break;
        }
    }
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// ---------------------------------------------------------------------------------------------
// in-context retrieval-augmented LM training (strategy 2, the LM side)

RETRLM_API retrlm_result retrlm_incontext_train(retrlm_model *m, retrlm_adamw *opt,
                                                const retrlm_incontext_train_config *cfg,
                                                retrlm_lm_train_state *st) {
    retrlm_incontext_train_config c = *cfg;
    retrlm_result r = RETRLM_OK;
    int *inp = NULL, *tgt = NULL, *lens = NULL, units[16], Tmax, bad;
    char *query = NULL;
    size_t qcap = 0, t;
    RETRLM_ASSERT(m && opt && cfg && st);
    Tmax = m->config.max_seq_len;
    if (!c.k) c.k = 1;
    if (!c.unit_tokens) c.unit_tokens = c.ds ? c.ds->chunk_tokens : 0;
    if (!c.query_tokens) c.query_tokens = 32;
    // k and unit_tokens first: no product of them may overflow on the way to the message
    bad = c.k < 1 || c.k > 16 || c.unit_tokens < 1 || c.unit_tokens > Tmax;
    if (!c.window_tokens && !bad) c.window_tokens = Tmax - c.k * c.unit_tokens;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.tok || !c.ds || !c.ds->committed_ || !c.tokens || m->config.bidirectional ||
        m->config.no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: needs a causal LM with logits, a "
                            "tokenizer, a committed datastore and tokens");
    if (bad)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: k %d must be in [1, 16] and unit_tokens "
                            "%d in [1, %d]", c.k, c.unit_tokens, Tmax);
    if (c.query_tokens < 1 || c.window_tokens <= c.query_tokens || c.window_tokens > Tmax ||
        c.k * c.unit_tokens + c.window_tokens > Tmax)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: %d unit(s) of %d tokens + a window of %d "
                            "(longer than its query of %d) must fit the LM's %d positions", c.k,
                            c.unit_tokens, c.window_tokens, c.query_tokens, Tmax);
    if (c.n_tokens < (size_t)c.window_tokens + 1)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: a stream of %lu tokens is shorter than "
                            "a window + 1 (%d)", (unsigned long)c.n_tokens, c.window_tokens + 1);
    if (c.batch < 1 || c.batch > m->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: batch %d must be in [1, %d] (the LM's "
                            "max_batch)", c.batch, m->config.max_batch);
    for (t = 0; t < c.n_tokens; t++)
        if (c.tokens[t] < 0 || c.tokens[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "incontext_train: token %d at %lu is outside the "
                                "LM's vocabulary of %d", c.tokens[t], (unsigned long)t,
                                m->config.vocab_size);
    inp = (int *)retrlm__alloc((size_t)c.batch * Tmax, 2 * sizeof(int));
    lens = (int *)retrlm__alloc((size_t)c.batch, sizeof(int));
    if (!inp || !lens) {
        RETRLM_FREE(inp);
        RETRLM_FREE(lens);
        return retrlm__fail(RETRLM_ERR_NOMEM, "incontext_train: no memory");
    }
    tgt = inp + (size_t)c.batch * Tmax;
    while (st->step < c.steps && !r) {
        int b, j, T, found = 0;
        float loss = 0.0f;
        // each window, its query, its units; sequences laid out at stride Tmax, then compacted
        for (b = 0; b < c.batch && !r; b++) {
            int *s = inp + (size_t)b * Tmax, *g = tgt + (size_t)b * Tmax, at = 0, i;
            const size_t w0 = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_tokens - (size_t)c.window_tokens));
            const int *w = c.tokens + w0;
            size_t qlen;
            if ((r = retrlm__decode_grow(c.tok, w, (size_t)c.query_tokens, &query, &qcap, &qlen)) ||
                (r = retrlm_datastore_retrieve(c.ds, c.retrieve, query, qlen, c.k,
                                               c.token_doc ? c.token_doc[w0] : RETRLM_NO_DOC,
                                               units, NULL, &found)))
                break;
            for (j = found - 1; j >= 0; j--) { // best last, nearest to the window
                int len = retrlm__unit_and_continuation(c.ds, units[j], c.unit_tokens, !c.continuation, s + at);
                for (i = 0; i < len; i++) g[at + i] = -1;
                at += len;
            }
            // w[i] at at + i predicts w[i + 1]; only the tokens after the query count
            for (i = 0; i < c.window_tokens; i++) {
                s[at + i] = w[i];
                g[at + i] = i + 1 >= c.query_tokens ? w[i + 1] : -1;
            }
            lens[b] = at + c.window_tokens;
        }
        if (r) break;
        T = retrlm__compact_rows(inp, lens, c.batch, Tmax, 0); // padding: ignored inputs,
        retrlm__compact_rows(tgt, lens, c.batch, Tmax, -1);     // and targets that do not count
        if ((r = retrlm__lm_step(m, opt, inp, tgt, c.batch, T, lens, NULL, &loss))) break;
        if (c.losses) c.losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        r = retrlm__progress(c.progress, c.progress_user, "incontext", (double)st->step, (double)c.steps);
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(lens);
    RETRLM_FREE(query);
    return r;
}

// ---- RETRO: the LM learns to read a frozen retriever's neighbours (strategy 2) ---------------

// copies the neighbours of chunks c0 .. c0 + U - 1 into out (U, k, r); chunks past the file's
// have none
static void retrlm__retro_gather(const retrlm_retro_neighbours *nb, int64_t c0, int U, int *out) {
    size_t per = (size_t)nb->k * (size_t)nb->len;
    int u;
    size_t i;
    for (u = 0; u < U; u++) {
        int *o = out + (size_t)u * per;
        if (c0 + u < nb->n_chunks) memcpy(o, retrlm_retro_neighbours_chunk(nb, c0 + u), per * sizeof(int));
        else for (i = 0; i < per; i++) o[i] = -1;
    }
}

// the neighbours must have the model's shape
static retrlm_result retrlm__retro_check(const retrlm_model *m, const retrlm_retro_neighbours *nb,
                                         int T, const char *who) {
    const retrlm_model_config *c = &m->config;
    if (!c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the model has no RETRO blocks", who);
    if (!nb || nb->chunk != c->retro_chunk || nb->k != c->retro_k || nb->len != c->retro_len)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: neighbours of chunk %d, k %d, len %d; the model "
                            "reads chunk %d, k %d, len %d", who, nb ? nb->chunk : 0,
                            nb ? nb->k : 0, nb ? nb->len : 0, c->retro_chunk, c->retro_k,
                            c->retro_len);
    if (T < c->retro_chunk || T % c->retro_chunk || T > c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: windows of %d tokens must be a multiple of the "
                            "chunk, %d, and at most %d", who, T, c->retro_chunk, c->max_seq_len);
    return RETRLM_OK;
}

// The neighbours of the window that starts at token start (retrlm__windows_bpb's gather)
typedef struct retrlm__retro_gather_ctx {
    const retrlm_retro_neighbours *nb;
    int U; // chunks a window
} retrlm__retro_gather_ctx;

static void retrlm__retro_gather_window(const void *ctx, size_t start, int *out) {
    const retrlm__retro_gather_ctx *g = (const retrlm__retro_gather_ctx *)ctx;
    retrlm__retro_gather(g->nb, (int64_t)(start / (size_t)g->nb->chunk), g->U, out);
}

// Bits per byte with the neighbours nb, in the windows of retrlm_lm_bits_per_byte.
static retrlm_result retrlm__retro_bpb(retrlm_model *m, const int *tokens, size_t n,
                                       size_t n_bytes, const retrlm_retro_neighbours *nb, int T,
                                       double *bpb) {
    retrlm__retro_gather_ctx g;
    size_t per;
    g.nb = nb;
    g.U = T / m->config.retro_chunk;
    per = (size_t)g.U * (size_t)nb->k * (size_t)nb->len; // ints of neighbours a window
    return retrlm__windows_bpb(m, tokens, n, n_bytes, T, per, retrlm__retro_gather_window, &g,
                               "retro_bits_per_byte", bpb);
}

RETRLM_API retrlm_result retrlm_retro_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                    size_t n_bytes,
                                                    const retrlm_retro_neighbours *nb,
                                                    int seq_len, double *bpb) {
    const int T = seq_len > 0 ? seq_len : m->config.max_seq_len;
    retrlm_result r;
    RETRLM_ASSERT(m && tokens && bpb);
    if ((r = retrlm__retro_check(m, nb, T, "retro_bits_per_byte"))) return r;
    if (nb->n_chunks < (int64_t)(n / (size_t)nb->chunk))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_bits_per_byte: neighbours for %lld chunks, the "
                            "text has %lu", (long long)nb->n_chunks,
                            (unsigned long)(n / (size_t)nb->chunk));
    return retrlm__retro_bpb(m, tokens, n, n_bytes, nb, T, bpb);
}

RETRLM_API void retrlm_retro_train_state_init(retrlm_retro_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_lm_train_state_init(&s->lm, seed);
}

// the probe: the first probe windows of the valid stream (else of train), mean loss with and
// without their neighbours
static retrlm_result retrlm__retro_probe(retrlm_model *m, const retrlm_retro_train_config *c,
                                         int T, int *inp, int *tgt, int *nbuf,
                                         retrlm_retro_train_state *st) {
    const int *s = c->valid && c->valid_neighbours ? c->valid : c->train;
    size_t n = c->valid && c->valid_neighbours ? c->n_valid : c->n_train;
    const retrlm_retro_neighbours *nb = c->valid && c->valid_neighbours ? c->valid_neighbours
                                                                        : c->neighbours;
    const int U = T / m->config.retro_chunk;
    const size_t per = (size_t)U * (size_t)nb->k * (size_t)nb->len;
    int B = (int)RETRLM__MIN((size_t)c->probe, (n - 1) / (size_t)T), b, t, pass;
    retrlm_result r;
    if (B < 1) return RETRLM_OK;
    for (b = 0; b < B; b++) {
        for (t = 0; t < T; t++) {
            inp[b * T + t] = s[(size_t)b * T + t];
            tgt[b * T + t] = s[(size_t)b * T + t + 1];
        }
    }
    for (pass = 0; pass < 2; pass++) {
        float loss = 0.0f;
        size_t i;
        for (b = 0; b < B; b++) {
            if (pass) for (i = 0; i < per; i++) nbuf[(size_t)b * per + i] = -1;
            else retrlm__retro_gather(nb, (int64_t)b * U, U, nbuf + (size_t)b * per);
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nbuf, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            return r;
        if (pass) st->probe_without = loss;
        else st->probe_with = loss;
    }
    return RETRLM_OK;
}

// the copy curriculum: each of the U chunks of the window at off, with probability copy_share,
// gets in a random neighbour slot the stream's tokens from a random point of its first half on
static void retrlm__retro_copy(const retrlm_retro_train_config *c, retrlm_rng *rng, size_t off,
                               int U, int *nbuf) {
    const int m = c->neighbours->chunk, k = c->neighbours->k, len = c->neighbours->len;
    int u, t;
    for (u = 0; u < U; u++) {
        size_t from;
        int *o;
        if (retrlm_rng_float(rng) >= c->copy_share) continue;
        o = nbuf + ((size_t)u * (size_t)k + (size_t)retrlm_rng_below(rng, (uint64_t)k)) * (size_t)len;
        from = off + (size_t)u * (size_t)m + (size_t)retrlm_rng_below(rng, (uint64_t)m / 2 + 1);
        for (t = 0; t < len; t++) o[t] = from + (size_t)t < c->n_train ? c->train[from + (size_t)t] : -1;
    }
}

RETRLM_API retrlm_result retrlm_retro_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_retro_train_config *cfg,
                                            retrlm_retro_train_state *st) {
    retrlm_retro_train_config c;
    retrlm_result r;
    int *inp, *tgt, *nbuf, T, U;
    size_t per, nwin;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    T = c.seq_len > 0 ? c.seq_len : m->config.max_seq_len;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.probe) c.probe = c.batch;
    if ((r = retrlm__retro_check(m, c.neighbours, T, "retro_train"))) return r;
    if (c.valid && c.valid_neighbours &&
        (r = retrlm__retro_check(m, c.valid_neighbours, T, "retro_train (valid)")))
        return r;
    if (c.batch < 1 || c.batch > m->config.max_batch || c.probe < 1 || !c.train ||
        c.n_train < (size_t)T + 2 || c.steps < 0 || c.copy_steps < 0 ||
        !(c.copy_share >= 0.0f && c.copy_share <= 1.0f) ||
        c.neighbours->n_chunks < (int64_t)(c.n_train / (size_t)c.neighbours->chunk))
        return retrlm__fail(RETRLM_ERR_ARG, "retro_train: batch %d (1..%d), %lu tokens (> %d), "
                            "copy_share %g (0..1), copy_steps %lld (>= 0), neighbours for %lld chunks (the stream has %lu)",
                            c.batch, m->config.max_batch, (unsigned long)c.n_train, T + 1,
                            (double)c.copy_share, (long long)c.copy_steps, (long long)c.neighbours->n_chunks,
                            (unsigned long)(c.n_train / (size_t)c.neighbours->chunk));
    U = T / m->config.retro_chunk;
    per = (size_t)U * (size_t)m->config.retro_k * (size_t)m->config.retro_len;
    inp = (int *)retrlm__alloc((size_t)m->config.max_batch * ((size_t)2 * T + per), sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "retro_train: no memory");
    tgt = inp + (size_t)m->config.max_batch * T;
    nbuf = tgt + (size_t)m->config.max_batch * T;
    c.probe = RETRLM__MIN(c.probe, m->config.max_batch);
    // windows start on chunk boundaries, so that their chunks are the stream's
    nwin = (c.n_train - (size_t)T - 1) / (size_t)m->config.retro_chunk + 1;
    while (st->lm.step < c.steps && !r) {
        int b, t, final;
        float loss = 0.0f;
        for (b = 0; b < c.batch; b++) {
            size_t w = (size_t)retrlm_rng_below(&st->lm.rng, (uint64_t)nwin);
            size_t off = w * (size_t)m->config.retro_chunk;
            for (t = 0; t < T; t++) {
                inp[b * T + t] = c.train[off + (size_t)t];
                tgt[b * T + t] = c.train[off + (size_t)t + 1];
            }
            retrlm__retro_gather(c.neighbours, (int64_t)w, U, nbuf + (size_t)b * per);
            if (c.copy_share > 0.0f && (!c.copy_steps || st->lm.step < c.copy_steps))
                retrlm__retro_copy(&c, &st->lm.rng, off, U, nbuf + (size_t)b * per);
        }
        if ((r = retrlm__lm_step(m, opt, inp, tgt, c.batch, T, NULL, nbuf, &loss))) break;
        if (c.losses) c.losses[st->lm.step] = loss;
        st->lm.last_loss = loss;
        st->lm.step++;
        final = st->lm.step == c.steps;
        if (final || (c.eval_every > 0 && st->lm.step % c.eval_every == 0)) {
            if ((r = retrlm__retro_probe(m, &c, T, inp, tgt, nbuf, st))) break;
            if (c.valid && c.valid_neighbours && c.n_valid > 1 &&
                (r = retrlm__retro_bpb(m, c.valid, c.n_valid, c.valid_bytes, c.valid_neighbours, T,
                                       &st->lm.last_valid_bpb)))
                break;
            if ((r = retrlm__progress(c.progress, c.progress_user, "valid", (double)st->lm.step,
                                      (double)c.steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (c.checkpoint &&
            (final || (c.checkpoint_every > 0 && st->lm.step % c.checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, &st->lm, c.checkpoint)))
            break;
#endif
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "retro", (double)st->lm.step, (double)c.steps);
    }
    RETRLM_FREE(inp);
    return r;
}

// ---- strategy 3: the reader and the retriever train together (REALM, Atlas) ------------------

RETRLM_API void retrlm_joint_state_init(retrlm_joint_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
    s->last_overlap = -1.0f;
}

// a joint run's buffers, one allocation; kk = candidate rows an example (k + 1, or rerank's L)
typedef struct retrlm__joint {
    int   *qtok, *qlen;  // (batch, Tq), (batch) query tokens, then compacted
    int   *dtok, *dlen;  // (kk, Td), (kk)
    int   *seq, *tgt;    // (kk, LT) reader rows and their targets (-1 outside y)
    int   *slen;         // (kk)
    int   *units, *found; // (batch, kk), (batch): the trainer's retrieved units
    int   *cand;         // (kk) re-ranking's candidates
    float *cprior;       // (kk) their BM25 scores (rerank_bm25)
    float *prior;        // (batch, kk) the BM25 scores of the trainer's units (bm25_weight)
    float *q, *dq;       // (batch, P)
    float *d, *dd;       // (kk, P)
    float *score, *dscore, *gold; // (kk)
    float *ll, *dll;     // (kk, cy) log p(y_t | x, z) and d objective / d it
    char  *text;         // x's query text
    size_t text_cap;
    void  *block;
} retrlm__joint;

static retrlm_result retrlm__joint_init(retrlm__joint *w, const retrlm_encoder *e,
                                        const retrlm_model *lm, int batch, int kk, int cy) {
    const size_t B = (size_t)batch, K = (size_t)kk, P = (size_t)e->dim, Y = (size_t)cy;
    const size_t Tq = (size_t)e->config.max_query_tokens, Td = (size_t)e->config.max_doc_tokens;
    const size_t LT = (size_t)lm->config.max_seq_len;
    size_t ni = B * Tq + B + K * Td + K + 2 * K * LT + K + B * K + B + K;
    size_t nf = 2 * B * P + 2 * K * P + 3 * K + 2 * K * Y + K + B * K;
    memset(w, 0, sizeof *w);
    w->block = retrlm__alloc(nf * sizeof(float) + ni * sizeof(int), 1);
    if (!w->block) return retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for a batch");
    w->q = (float *)w->block;
    w->dq = w->q + B * P;
    w->d = w->dq + B * P;
    w->dd = w->d + K * P;
    w->score = w->dd + K * P;
    w->dscore = w->score + K;
    w->gold = w->dscore + K;
    w->ll = w->gold + K;
    w->dll = w->ll + K * Y;
    w->cprior = w->dll + K * Y;
    w->prior = w->cprior + K;
    w->qtok = (int *)(w->prior + B * K);
    w->qlen = w->qtok + B * Tq;
    w->dtok = w->qlen + B;
    w->dlen = w->dtok + K * Td;
    w->seq = w->dlen + K;
    w->tgt = w->seq + K * LT;
    w->slen = w->tgt + K * LT;
    w->units = w->slen + K;
    w->found = w->units + B * K;
    w->cand = w->found + B;
    return RETRLM_OK;
}

// the defaults filled in and the pieces checked; *ut the unit tokens the reader reads
static retrlm_result retrlm__joint_check(const retrlm_model *lm, const retrlm_encoder *e,
                                         retrlm_joint_config *c, int *ut) {
    size_t span, t;
    int kk;
    if (!c->context_tokens) c->context_tokens = 64;
    if (!c->continuation_tokens) c->continuation_tokens = 64;
    if (!c->query_tokens) c->query_tokens = RETRLM__MIN(32, c->context_tokens);
    if (!c->k) c->k = 4;
    if (!c->batch) c->batch = 8;
    if (c->temperature == 0.0f) c->temperature = 0.1f;
    if (c->gold_temperature == 0.0f) c->gold_temperature = 0.01f;
    if (!c->lm_tok || !c->ds || !c->tokens || lm->config.no_logits || lm->retro_layers ||
        c->ds->encoder != e || c->ds->dense.n == 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: needs a plain LM with logits, its tokenizer, "
                            "tokens, and a datastore embedded with this encoder "
                            "(retrlm_datastore_embed)");
    if ((unsigned)c->objective > RETRLM_JOINT_EMDR)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: objective %d is not REALM, PDIST or EMDR",
                            (int)c->objective);
    if (c->context_tokens < 1 || c->continuation_tokens < 1 || c->query_tokens < 1 ||
        c->query_tokens > c->context_tokens || c->unit_tokens < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: x %d tokens (query %d of them), y %d and unit "
                            "%d: x, y and the query need at least 1, the query at most x",
                            c->context_tokens, c->query_tokens, c->continuation_tokens,
                            c->unit_tokens);
    span = (size_t)c->context_tokens + (size_t)c->continuation_tokens;
    *ut = c->unit_tokens ? c->unit_tokens
          : span < (size_t)lm->config.max_seq_len
              ? RETRLM__MIN(c->ds->chunk_tokens, lm->config.max_seq_len - (int)span) : 0;
    if (*ut < 1 || span + (size_t)*ut > (size_t)lm->config.max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: a unit (%d tokens) + x (%d) + y (%d) exceed "
                            "the LM's %d positions", c->unit_tokens, c->context_tokens,
                            c->continuation_tokens, lm->config.max_seq_len);
    if (c->n_tokens < span)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: a stream of %lu tokens is shorter than x + y "
                            "(%lu)", (unsigned long)c->n_tokens, (unsigned long)span);
    kk = c->k + (c->objective == RETRLM_JOINT_REALM);
    if (c->k < 1 || kk > lm->config.max_batch || kk > e->side[RETRLM_DOC].config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: k %d (+1 null document for REALM) must be at "
                            "least 1 and fit the LM's max_batch %d and the document side's %d",
                            c->k, lm->config.max_batch, e->side[RETRLM_DOC].config.max_batch);
    if ((c->rerank || c->rerank_bm25) &&
        (c->rerank <= c->k || c->rerank > e->side[RETRLM_DOC].config.max_batch))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: rerank %d%s must be above k %d and at most "
                            "the document side's max_batch %d", c->rerank,
                            c->rerank_bm25 ? " (rerank_bm25 needs it)" : "", c->k,
                            e->side[RETRLM_DOC].config.max_batch);
    if (!(c->bm25_weight >= 0.0f && c->bm25_weight < INFINITY) ||
        (c->bm25_weight > 0.0f && !c->rerank_bm25))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: bm25_weight %g must be finite and >= 0, and "
                            "above 0 only with rerank_bm25", (double)c->bm25_weight);
    if (c->batch < 1 || c->batch > e->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: batch %d must be in [1, %d] (the encoder's "
                            "max_batch)", c->batch, e->config.max_batch);
    if (!(c->temperature > 0.0f) || !(c->gold_temperature > 0.0f) || c->refresh_every < 0 ||
        c->refresh_delay < 0 || (c->refresh_every && c->refresh_delay > c->refresh_every) ||
        c->probe < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: temperatures %g and %g must be > 0, "
                            "refresh_every %lld >= 0, refresh_delay %lld in [0, refresh_every], "
                            "probe %d >= 0", (double)c->temperature, (double)c->gold_temperature,
                            (long long)c->refresh_every, (long long)c->refresh_delay, c->probe);
    if (c->query_side && (!e->config.separate || c->refresh_every))
        return retrlm__fail(RETRLM_ERR_ARG, "joint: query-side training needs a separate (frozen) "
                            "document encoder and no refresh");
    for (t = 0; t < c->n_tokens; t++)
        if (c->tokens[t] < 0 || c->tokens[t] >= lm->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: token %d at %lu is outside the LM's "
                                "vocabulary of %d", c->tokens[t], (unsigned long)t,
                                lm->config.vocab_size);
    return RETRLM_OK;
}

// x's query (its last query_tokens tokens) as text in w->text; *len its bytes
static retrlm_result retrlm__joint_query(retrlm__joint *w, const retrlm_joint_config *c,
                                         size_t start, size_t *len) {
    return retrlm__decode_grow(c->lm_tok, c->tokens + start + c->context_tokens - c->query_tokens,
                               (size_t)c->query_tokens, &w->text, &w->text_cap, len);
}

// One example's reader rows (nd: its nf units, then the null document when nd > nf): their
// forward, log p(y_t | x, z) into w->ll (nd, cy); then, once w->dll is set by the caller
// (retrlm__joint_reader_backward), the backward.
static retrlm_result retrlm__joint_reader(retrlm__joint *w, retrlm_model *lm,
                                          const retrlm_joint_config *c, size_t start,
                                          const int *units, int nf, int nd, int ut) {
    const int cx = c->context_tokens, cy = c->continuation_tokens, V = lm->config.vocab_size;
    int T = 0, j, t, *n0 = w->dlen; // dlen is free here: the unit tokens of each row
    retrlm_result r;
    for (j = 0; j < nd; j++) {
        n0[j] = j < nf ? retrlm__unit_and_continuation(c->ds, units[j], ut, !c->continuation, NULL) : 0;
        w->slen[j] = n0[j] + cx + cy;
        T = RETRLM__MAX(T, w->slen[j]);
    }
    for (j = 0; j < nd; j++) {
        int *s = w->seq + (size_t)j * T, *g = w->tgt + (size_t)j * T;
        if (j < nf) retrlm__unit_and_continuation(c->ds, units[j], ut, !c->continuation, s);
        memcpy(s + n0[j], c->tokens + start, (size_t)(cx + cy) * sizeof(int));
        for (t = w->slen[j]; t < T; t++) s[t] = 0;
        // position t predicts s[t + 1]: y's targets sit at n0 + cx - 1 .. n0 + cx + cy - 2
        for (t = 0; t < T; t++) g[t] = t >= n0[j] + cx - 1 && t < n0[j] + cx + cy - 1 ? s[t + 1] : -1;
    }
    if ((r = retrlm_model_forward(lm, w->seq, nd, T, w->slen, 0))) return r;
    RETRLM__PARALLEL_FOR_IF(nd * cy > 8)
    for (j = 0; j < nd * cy; j++) {
        const int row = j / cy, p = j % cy, pos = n0[row] + cx - 1 + p;
        const float *l = lm->logits + ((size_t)row * T + pos) * (size_t)V;
        const int y = w->tgt[(size_t)row * T + pos];
        w->ll[j] = (float)((double)l[y] - (double)retrlm_logsumexp(l, V));
    }
    return RETRLM_OK;
}

// The reader's backward for the last retrlm__joint_reader: d objective / d logits of row j at
// y's position p is dll[j, p] (onehot(y) - softmax), zero elsewhere; written over lm->logits.
static retrlm_result retrlm__joint_reader_backward(retrlm__joint *w, retrlm_model *lm,
                                                   const retrlm_joint_config *c, int nd) {
    const int cx = c->context_tokens, cy = c->continuation_tokens, V = lm->config.vocab_size;
    const int T = lm->T;
    float *dl = (float *)lm->logits;
    retrlm_model_grad_in g;
    int i;
    RETRLM__PARALLEL_FOR_IF(nd * T > 8)
    for (i = 0; i < nd * T; i++) {
        const int row = i / T, t = i % T, p = t - (w->slen[row] - cx - cy) - cx + 1;
        float *l = dl + (size_t)i * V;
        int v;
        if (p < 0 || p >= cy || w->tgt[i] < 0) {
            memset(l, 0, (size_t)V * sizeof(float));
            continue;
        }
        {
            const float lse = retrlm_logsumexp(l, V), dy = w->dll[(size_t)row * cy + p];
            for (v = 0; v < V; v++) l[v] = -dy * expf(l[v] - lse);
            l[w->tgt[i]] += dy;
        }
    }
    memset(&g, 0, sizeof g);
    g.dlogits = dl;
    return retrlm_model_backward(lm, &g);
}

// With bm25_weight: the BM25 scores of example i's units u (nf) for its query (in w->text,
// len bytes) into w->prior + i * ustride, looked up among BM25's rerank best (w->cand, w->cprior)
static retrlm_result retrlm__joint_prior(retrlm__joint *w, const retrlm_joint_config *c,
                                         size_t start, size_t len, int i, const int *u, int nf,
                                         int ustride) {
    float *out = w->prior + (size_t)i * ustride;
    int nc, j, a;
    retrlm_result r = retrlm_datastore_retrieve(c->ds, NULL, w->text, len, c->rerank,
                                                c->token_doc ? c->token_doc[start] : RETRLM_NO_DOC,
                                                w->cand, w->cprior, &nc);
    for (j = 0; j < nf && !r; j++) {
        for (a = 0; a < nc && w->cand[a] != u[j]; a++) {}
        if (a == nc)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: example %d's unit %d is not among BM25's %d "
                                "best, so it has no BM25 score for bm25_weight", i, u[j], c->rerank);
        out[j] = w->cprior[a];
    }
    return r;
}

// One batch's objective and gradients, with w's buffers (qtok/qlen free for it). prior
// (n, ustride): the units' BM25 scores when c->bm25_weight; NULL: looked up here.
static retrlm_result retrlm__joint_loss(retrlm__joint *w, retrlm_model *lm, retrlm_encoder *e,
                                        const retrlm_joint_config *c, int ut, int n,
                                        const size_t *start, const int *units, int ustride,
                                        const int *found, const float *prior, float *loss,
                                        float *reader, float *utility) {
    const int P = e->dim, Tq = e->config.max_query_tokens, Td = e->config.max_doc_tokens;
    const int cy = c->continuation_tokens, realm = c->objective == RETRLM_JOINT_REALM;
    double tot = 0.0, rd = 0.0, ut_sum = 0.0;
    retrlm_result r = RETRLM_OK;
    int i, j, p, T, nrd = 0;
    for (i = 0; i < n && !r; i++) {
        size_t len;
        if (found[i] < 0 || found[i] > c->k || (!realm && found[i] == 0))
            return retrlm__fail(RETRLM_ERR_ARG, "joint: example %d has %d units (PDIST and EMDR "
                                "need 1 to k %d, REALM 0 to k)", i, found[i], c->k);
        for (j = 0; j < found[i]; j++)
            if (units[(size_t)i * ustride + j] < 0 || units[(size_t)i * ustride + j] >= c->ds->n_units)
                return retrlm__fail(RETRLM_ERR_ARG, "joint: unit %d is not in the datastore",
                                    units[(size_t)i * ustride + j]);
        if (start[i] + (size_t)c->context_tokens + (size_t)cy > c->n_tokens)
            return retrlm__fail(RETRLM_ERR_ARG, "joint: window %d runs past the stream", i);
        if (!(r = retrlm__joint_query(w, c, start[i], &len)))
            r = retrlm__encode_cut(c->ds->encoder_tok, w->text, len, w->qtok + (size_t)i * Tq, Tq,
                                   &w->qlen[i]);
        if (!r && c->bm25_weight > 0.0f && !prior)
            r = retrlm__joint_prior(w, c, start[i], len, i, units + (size_t)i * ustride, found[i],
                                    ustride);
    }
    if (r) return r;
    if (c->bm25_weight > 0.0f && !prior) prior = w->prior;
    T = retrlm__compact_rows(w->qtok, w->qlen, n, Tq, 0);
    if ((r = retrlm_encoder_forward(e, RETRLM_QUERY, w->qtok, n, T, w->qlen, w->q))) return r;
    memset(w->dq, 0, (size_t)n * P * sizeof(float));
    for (i = 0; i < n && !r; i++) {
        const int nf = found[i], nd = nf + realm, *u = units + (size_t)i * ustride;
        const float *qi = w->q + (size_t)i * P;
        float li = 0.0f, kl = 0.0f, *dqi = w->dq + (size_t)i * P;
        double ce = 0.0;
        int Tdd;
        // the retriever's scores with the current weights (the null document: the empty text)
        for (j = 0; j < nd && !r; j++) {
            size_t len = 0;
            const char *txt = j < nf ? retrlm_datastore_text(c->ds, u[j], &len) : "";
            r = retrlm__encode_cut(c->ds->encoder_tok, txt, len, w->dtok + (size_t)j * Td, Td,
                                   &w->dlen[j]);
        }
        if (r) break;
        Tdd = retrlm__compact_rows(w->dtok, w->dlen, nd, Td, 0);
        if ((r = retrlm_encoder_forward(e, RETRLM_DOC, w->dtok, nd, Tdd, w->dlen, w->d))) break;
        for (j = 0; j < nd; j++) w->score[j] = retrlm_dot(qi, w->d + (size_t)j * P, P);
        if (c->bm25_weight > 0.0f) { // the prior; the null document's is the units' mean
            const float *pr = prior + (size_t)i * ustride;
            double m = 0.0;
            for (j = 0; j < nf; j++) w->score[j] += c->bm25_weight * pr[j], m += pr[j];
            if (nd > nf) w->score[nf] += c->bm25_weight * (nf ? (float)(m / nf) : 0.0f);
        }
        if ((r = retrlm__joint_reader(w, lm, c, start[i], u, nf, nd, ut))) break;
        for (j = 0; j < nf; j++)
            for (p = 0; p < cy; p++) ce -= w->ll[(size_t)j * cy + p];
        if (nf) rd += ce / ((double)nf * cy), nrd++;
        if (realm) {
            if ((r = retrlm_marginal_loss(w->score, w->ll, NULL, 1, nd, cy, c->temperature, &li,
                                          w->dscore, w->dll)))
                break;
            for (p = 0; p < cy; p++) ut_sum -= li / cy + w->ll[(size_t)nf * cy + p] / cy;
        } else {
            for (j = 0; j < nf; j++) {
                double s = 0.0;
                for (p = 0; p < cy; p++) s += w->ll[(size_t)j * cy + p];
                w->gold[j] = (float)(s / cy);
            }
            r = c->objective == RETRLM_JOINT_PDIST
                ? retrlm_kl_distill_loss(w->score, w->gold, 1, nf, c->temperature,
                                         c->gold_temperature, &kl, w->dscore)
                : retrlm_marginal_loss(w->score, w->ll, NULL, 1, nf, cy, c->temperature, &kl,
                                       w->dscore, NULL);
            if (r) break;
            // the reader's own loss: the mean cross-entropy of y over the units, each read alone
            li = (float)(ce / ((double)nf * cy)) + kl;
            for (j = 0; j < nf * cy; j++) w->dll[j] = -1.0f / ((float)nf * (float)cy);
        }
        tot += li;
        for (j = 0; j < nd * cy; j++) w->dll[j] /= (float)n;
        if ((r = retrlm__joint_reader_backward(w, lm, c, nd))) break;
        // s_j = q_i . d_j: dd_j = ds_j q_i, dq_i += ds_j d_j (each / n)
        for (j = 0; j < nd; j++) {
            const float gj = w->dscore[j] / (float)n;
            int a;
            for (a = 0; a < P; a++) {
                w->dd[(size_t)j * P + a] = gj * qi[a];
                dqi[a] += gj * w->d[(size_t)j * P + a];
            }
        }
        if (!c->query_side) r = retrlm_encoder_backward(e, RETRLM_DOC, w->dd);
    }
    if (!r) r = retrlm_encoder_backward(e, RETRLM_QUERY, w->dq);
    if (r) return r;
    if (loss) *loss = (float)(tot / n);
    if (reader) *reader = nrd ? (float)(rd / nrd) : 0.0f;
    if (utility) *utility = realm ? (float)(ut_sum / n) : 0.0f;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_joint_loss(retrlm_model *lm, retrlm_encoder *e,
                                           const retrlm_joint_config *cfg, int n,
                                           const size_t *start, const int *units,
                                           const int *found, float *loss, float *reader,
                                           float *utility) {
    retrlm_joint_config c = *cfg;
    retrlm__joint w;
    retrlm_result r;
    int ut;
    RETRLM_ASSERT(lm && e && cfg && start && units && found);
    if ((r = retrlm__joint_check(lm, e, &c, &ut))) return r;
    if (n < 1 || n > e->config.max_batch)
        return retrlm__fail(RETRLM_ERR_ARG, "joint_loss: %d examples, the encoder takes 1 to %d", n,
                            e->config.max_batch);
    if ((r = retrlm__joint_init(&w, e, lm, n, RETRLM__MAX(c.k + 1, c.rerank),
                                c.continuation_tokens)))
        return r;
    r = retrlm__joint_loss(&w, lm, e, &c, ut, n, start, units, c.k, found, NULL, loss, reader,
                           utility);
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// a copy of src's weights into dst (made with src's config): the refresh's snapshot
static void retrlm__encoder_copy(retrlm_encoder *dst, const retrlm_encoder *src) {
    const size_t pd = (size_t)src->dim * (size_t)src->config.model.dim;
    memcpy(dst->side[RETRLM_QUERY].params, src->side[RETRLM_QUERY].params,
           src->side[RETRLM_QUERY].n_params * sizeof(float));
    if (src->config.separate)
        memcpy(dst->side[RETRLM_DOC].params, src->side[RETRLM_DOC].params,
               src->side[RETRLM_DOC].n_params * sizeof(float));
    if (src->proj[RETRLM_QUERY]) memcpy(dst->proj[RETRLM_QUERY], src->proj[RETRLM_QUERY], pd * sizeof(float));
    if (src->proj[RETRLM_DOC] && src->config.separate)
        memcpy(dst->proj[RETRLM_DOC], src->proj[RETRLM_DOC], pd * sizeof(float));
}

// everything a joint run's steps read
typedef struct retrlm__joint_run {
    retrlm_model *lm;
    retrlm_adamw *opt_lm, *opt_enc;
    retrlm_encoder *e;
    const retrlm_joint_config *c;
    retrlm_joint_state *st;
    retrlm__joint *w;
    int ut;
} retrlm__joint_run;

// The k units of the window at start (*found of them), from the index in use (or BM25 when
// c->rerank_bm25), re-ranked with the current document encoder when c->rerank: each text once,
// and with c->bm25_weight their BM25 scores (into prior) added to the fresh inner products.
static retrlm_result retrlm__joint_retrieve(retrlm__joint_run *x, size_t start, int *units,
                                            float *prior, int *found) {
    const retrlm_joint_config *c = x->c;
    retrlm__joint *w = x->w;
    retrlm_retrieve_params rp;
    const int P = x->e->dim, Td = x->e->config.max_doc_tokens;
    const int depth = c->rerank ? c->rerank : c->k;
    float q[4096], *qq = q;
    size_t len;
    retrlm_result r;
    int nf, j, T;
    memset(&rp, 0, sizeof rp);
    rp.mode = c->rerank_bm25 ? RETRLM_RETRIEVE_BM25 : RETRLM_RETRIEVE_DENSE;
    if ((r = retrlm__joint_query(w, c, start, &len)) ||
        (r = retrlm_datastore_retrieve(c->ds, &rp, w->text, len, depth,
                                       c->token_doc ? c->token_doc[start] : RETRLM_NO_DOC,
                                       c->rerank ? w->cand : units, w->cprior, &nf)))
        return r;
    if (!c->rerank || nf == 0) {
        *found = RETRLM__MIN(nf, c->k);
        return RETRLM_OK;
    }
    nf = retrlm__datastore_distinct(c->ds, w->cand, w->cprior, nf);
    // Atlas's re-ranking: the candidates embedded with the current document encoder
    if (P > 4096 && !(qq = (float *)retrlm__alloc((size_t)P, sizeof(float))))
        return retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory to re-rank");
    for (j = 0; j < nf && !r; j++) {
        size_t tl;
        const char *txt = retrlm_datastore_text(c->ds, w->cand[j], &tl);
        r = retrlm__encode_cut(c->ds->encoder_tok, txt, tl, w->dtok + (size_t)j * Td, Td, &w->dlen[j]);
    }
    T = r ? 0 : retrlm__compact_rows(w->dtok, w->dlen, nf, Td, 0);
    if (!r && !(r = retrlm_encoder_embed(x->e, c->ds->encoder_tok, RETRLM_QUERY, w->text, len, qq)) &&
        !(r = retrlm_encoder_forward(x->e, RETRLM_DOC, w->dtok, nf, T, w->dlen, w->d))) {
        for (j = 0; j < nf; j++) // as RETRLM_RETRIEVE_RERANK scores
            w->score[j] = retrlm_dot(qq, w->d + (size_t)j * P, P) + c->bm25_weight * w->cprior[j];
        retrlm__rerank_order(nf, w->cand, w->cprior, w->score);
        *found = RETRLM__MIN(nf, c->k);
        for (j = 0; j < *found; j++) units[j] = w->cand[j], prior[j] = w->cprior[j];
    }
    if (qq != q) RETRLM_FREE(qq);
    return r;
}

// steps until st->step == until
static retrlm_result retrlm__joint_steps(retrlm__joint_run *x, int64_t until) {
    const retrlm_joint_config *c = x->c;
    retrlm_joint_state *st = x->st;
    retrlm__joint *w = x->w;
    const int kk = c->rerank ? c->rerank : c->k + 1;
    const size_t span = (size_t)c->context_tokens + (size_t)c->continuation_tokens;
    size_t start[RETRLM__MAX_DPR_BATCH];
    retrlm_result r = RETRLM_OK;
    int i;
    while (!r && st->step < until) {
        float loss = 0.0f, reader = 0.0f, utility = 0.0f;
        for (i = 0; i < c->batch && !r; i++) {
            int tries = 0;
            do {
                start[i] = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c->n_tokens - span + 1));
                r = retrlm__joint_retrieve(x, start[i], w->units + (size_t)i * kk,
                                           w->prior + (size_t)i * kk, &w->found[i]);
                if (!r && !w->found[i] && ++tries == 100)
                    r = retrlm__fail(RETRLM_ERR_ARG, "joint: 100 queries found no unit (every "
                                     "unit of the example's own document?)");
            } while (!r && !w->found[i]);
        }
        if (r) break;
        retrlm_model_zero_grad(x->lm);
        retrlm_encoder_zero_grad(x->e);
        if ((r = retrlm__joint_loss(w, x->lm, x->e, c, x->ut, c->batch, start, w->units, kk,
                                    w->found, w->prior, &loss, &reader, &utility)))
            break;
        retrlm_adamw_step(x->opt_lm);
        retrlm_adamw_step(x->opt_enc);
        st->last_loss = loss, st->last_reader = reader, st->last_utility = utility;
        if (c->losses) c->losses[st->step] = loss;
        st->step++;
        r = retrlm__progress(c->progress, c->progress_user, "joint", (double)st->step, (double)c->steps);
    }
    return r;
}

// the mean share of the probe queries' top k that indexes a and b agree on
static retrlm_result retrlm__joint_overlap(retrlm__joint_run *x, const retrlm_index *a,
                                           const retrlm_index *b, const size_t *probe, int np,
                                           float *out) {
    const retrlm_joint_config *c = x->c;
    const int k = c->k, P = x->e->dim;
    float *q = (float *)retrlm__alloc((size_t)P + 4 * (size_t)k, sizeof(float));
    int64_t *ia = (int64_t *)retrlm__alloc(2 * (size_t)k, sizeof(int64_t)), *ib = ia + k;
    retrlm_result r = RETRLM_OK;
    double same = 0.0;
    int i, j, l;
    if (!q || !ia) r = retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for the probe");
    for (i = 0; i < np && !r; i++) {
        size_t len;
        if ((r = retrlm__joint_query(x->w, c, probe[i], &len)) ||
            (r = retrlm_encoder_embed(x->e, c->ds->encoder_tok, RETRLM_QUERY, x->w->text, len, q)) ||
            (r = retrlm_index_search(a, q, 1, P, k, NULL, ia, q + P)) ||
            (r = retrlm_index_search(b, q, 1, P, k, NULL, ib, q + P + k)))
            break;
        for (j = 0; j < k; j++)
            for (l = 0; l < k; l++) same += ia[j] >= 0 && ia[j] == ib[l];
    }
    if (!r) *out = np ? (float)(same / ((double)np * k)) : -1.0f;
    RETRLM_FREE(q), RETRLM_FREE(ia);
    return r;
}

RETRLM_API retrlm_result retrlm_joint_train(retrlm_model *lm, retrlm_adamw *opt_lm,
                                            retrlm_encoder *e, retrlm_adamw *opt_enc,
                                            const retrlm_joint_config *cfg,
                                            retrlm_joint_state *st) {
    retrlm_joint_config c = *cfg;
    retrlm__joint w;
    retrlm__joint_run x;
    retrlm_encoder snap;
    size_t *probe = NULL, span;
    retrlm_result r;
    int ut, g, i, have_snap = 0;
    RETRLM_ASSERT(lm && opt_lm && e && opt_enc && cfg && st);
    if ((r = retrlm__joint_check(lm, e, &c, &ut))) return r;
    if (c.batch > RETRLM__MAX_DPR_BATCH)
        return retrlm__fail(RETRLM_ERR_ARG, "joint: batch %d above %d", c.batch, RETRLM__MAX_DPR_BATCH);
    if (c.query_side)
        for (g = 0; g < opt_enc->n_groups; g++) {
            const float *p = opt_enc->groups[g].params, *d0 = e->side[RETRLM_DOC].params;
            if ((p >= d0 && p < d0 + e->side[RETRLM_DOC].n_params) ||
                (e->proj[RETRLM_DOC] && p == e->proj[RETRLM_DOC]))
                return retrlm__fail(RETRLM_ERR_ARG, "joint: query-side training, but opt_enc holds "
                                    "the document encoder's weights (group %d)", g);
        }
    span = (size_t)c.context_tokens + (size_t)c.continuation_tokens;
    if ((r = retrlm__joint_init(&w, e, lm, c.batch, c.rerank ? c.rerank : c.k + 1,
                                c.continuation_tokens)))
        return r;
    memset(&snap, 0, sizeof snap);
    if (c.refresh_every) {
        if (!(probe = (size_t *)retrlm__alloc((size_t)c.probe + 1, sizeof *probe)) ||
            (r = retrlm_encoder_init(&snap, &e->config)))
            r = r ? r : retrlm__fail(RETRLM_ERR_NOMEM, "joint: no memory for the probe");
        have_snap = !r;
        // the probe windows: evenly spaced over the stream, the same for every run
        for (i = 0; i < c.probe && !r; i++)
            probe[i] = (size_t)((double)(c.n_tokens - span) * (i + 0.5) / c.probe);
    }
    x.lm = lm, x.opt_lm = opt_lm, x.e = e, x.opt_enc = opt_enc, x.c = &c, x.st = st, x.w = &w, x.ut = ut;
    while (!r && st->step < c.steps) {
        const int64_t s = st->step, T = c.refresh_every;
        retrlm_index fresh;
        retrlm_result rb = RETRLM_OK;
        char why[2][512];
        double ta = 0.0, tb0 = 0.0, tb = 0.0;
        if (!T || s == 0 || s % T || s == st->index_step) {
            r = retrlm__joint_steps(&x, T ? RETRLM__MIN((s / T + 1) * T, c.steps) : c.steps);
            continue;
        }
        // a refresh begins: the snapshot, then the units embedded with it beside the steps
        // s .. s + delay - 1 (none when blocking), and the new index swapped in at s + delay.
        // Either section may run on a thread of its own: its error text is carried back.
        retrlm__encoder_copy(&snap, e);
        why[0][0] = why[1][0] = '\0';
#ifdef RETRLM__OMP
        RETRLM__PRAGMA(omp parallel sections num_threads(2) if (c.refresh_delay > 0 && omp_get_max_threads() > 1))
#endif
        {
#ifdef RETRLM__OMP
            RETRLM__PRAGMA(omp section)
#endif
            {
                if (c.refresh_delay > 0) r = retrlm__joint_steps(&x, RETRLM__MIN(s + c.refresh_delay, c.steps));
                if (r) snprintf(why[0], sizeof why[0], "%s", retrlm_last_error());
                ta = retrlm_time_seconds();
            }
#ifdef RETRLM__OMP
            RETRLM__PRAGMA(omp section)
#endif
            {
                tb0 = retrlm_time_seconds();
                rb = retrlm__datastore_embed_index(c.ds, &snap, c.ds->encoder_tok, c.index_config,
                                                   &fresh, NULL, NULL);
                if (rb) snprintf(why[1], sizeof why[1], "%s", retrlm_last_error());
                tb = retrlm_time_seconds();
            }
        }
        st->refresh_seconds += tb - tb0;
        // training waits from the end of its steps (or the start, when blocking) to the end of
        // the refresh; with one thread the refresh runs after the steps and all of it is waited
        st->stall_seconds += tb > ta ? tb - ta : 0.0;
        if (r) r = retrlm__fail(r, "%s", why[0]);
        if (rb) {
            if (!r) r = retrlm__fail(rb, "joint: refresh at step %lld: %s", (long long)s, why[1]);
            break;
        }
        if (!r) {
            float ov = -1.0f;
            if (c.probe) r = retrlm__joint_overlap(&x, &c.ds->dense, &fresh, probe, c.probe, &ov);
            st->last_overlap = ov;
        }
        if (r) {
            retrlm_index_free(&fresh);
            break;
        }
        retrlm_index_free(&c.ds->dense);
        c.ds->dense = fresh;
        st->index_step = s;
        st->refreshes++;
    }
    if (have_snap) retrlm_encoder_free(&snap);
    RETRLM_FREE(probe);
    RETRLM_FREE(w.text);
    RETRLM_FREE(w.block);
    return r;
}

// ---- TRIME: the LM trains with its in-batch memory (strategy 4) ------------------------------

// whether position (bi, ti) sees the memory entry at (bj, tj)
static int retrlm__trime_sees(const retrlm_trime_params *p, int bi, int ti, int bj, int tj) {
    if (p->batching == RETRLM_TRIME_LONG) return bj < bi || (bj == bi && tj < ti);
    if (p->batching == RETRLM_TRIME_EXT) return bj != bi || (!p->no_local && tj < ti);
    return bj == bi && tj < ti;
}

RETRLM_API retrlm_result retrlm_model_trime_loss(retrlm_model *m, const retrlm_trime_params *p,
                                                 const int *targets, const int *labels,
                                                 float *loss, float *dkeys, int *count) {
    const int V = m->config.vocab_size, D = m->config.dim, B = m->B, T = m->T, N = B * T;
    const float *K;
    float *logits, *sims, scale;
    int *mem_pos, *mem_tok, *entry_of, M = 0, i;
    retrlm_result r;
    RETRLM_ASSERT(m && p && targets);
    if ((r = retrlm__trime_check(p, "model_trime_loss"))) return r;
    if (!m->logits || m->config.bidirectional)
        return retrlm__fail(RETRLM_ERR_ARG, "model_trime_loss: needs a causal LM's forward with logits");
    if (!labels) labels = targets;
    for (i = 0; i < N; i++)
        if (targets[i] >= V || labels[i] >= V)
            return retrlm__fail(RETRLM_ERR_ARG, "model_trime_loss: target %d or label %d at %d is "
                                "outside the vocabulary of %d", targets[i], labels[i], i, V);
    K = retrlm_model_ffn_input(m, m->config.n_layers - 1);
    logits = retrlm__logits(m);
    scale = retrlm__trime_scale(p, D);
    // zeroed, though every entry read is written first: gcc -O2 for aarch64 cannot tell
    mem_pos = (int *)retrlm__calloc((size_t)N, 3 * sizeof(int));
    if (!mem_pos) return retrlm__fail(RETRLM_ERR_NOMEM, "model_trime_loss: no memory");
    mem_tok = mem_pos + N;
    entry_of = mem_tok + N;
    for (i = 0; i < N; i++) {
        entry_of[i] = -1;
        if (labels[i] >= 0 && i % T < m->lengths[i / T]) {
            entry_of[i] = M;
            mem_pos[M] = i;
            mem_tok[M++] = labels[i];
        }
    }
    // one float more, zeroed: with no entries gcc would see a 1-byte block read as a float
    sims = (float *)retrlm__calloc((size_t)N * (size_t)M + 1, sizeof(float));
    if (!sims) {
        RETRLM_FREE(mem_pos);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model_trime_loss: no memory for %d x %d similarities",
                            N, M);
    }
    // s_ij for every position i and entry e at j; -inf where i may not see j
    RETRLM__PARALLEL_FOR_STATIC
    for (i = 0; i < N; i++) {
        const float *q = K + (size_t)i * D;
        float *row = sims + (size_t)i * M;
        int e;
        for (e = 0; e < M; e++) {
            const int j = mem_pos[e];
            row[e] = retrlm__trime_sees(p, i / T, i % T, j / T, j % T)
                         ? retrlm__trime_sim(p, scale, q, K + (size_t)j * D, D) : -INFINITY;
        }
    }
    // dlogits and dsims in place
    r = retrlm_trime_loss(logits, N, V, sims, M, mem_tok, targets, loss, logits, sims, count);
    if (!r && dkeys) {
        // d s_ij / d k_i and d k_j: dot scale k_j and scale k_i; L2 -2 scale (k_i - k_j) and
        // -2 scale (k_j - k_i). Position x gathers its query terms (its row) and its key terms
        // (its entry's column), in a fixed order: threads never share a write.
        RETRLM__PARALLEL_FOR_STATIC
        for (i = 0; i < N; i++) {
            const float *kx = K + (size_t)i * D;
            float *dx = dkeys + (size_t)i * D;
            const int ex = entry_of[i];
            int e, j, d, pass;
            for (d = 0; d < D; d++) dx[d] = 0.0f;
            for (pass = 0; pass < 2; pass++) {
                const int n_other = pass ? (ex >= 0 ? N : 0) : M;
                for (e = 0; e < n_other; e++) {
                    // pass 0: i is the query, the other is entry e; pass 1: i is entry ex,
                    // the other the query at position e
                    const float g = pass ? sims[(size_t)e * M + ex] : sims[(size_t)i * M + e];
                    const float *ko;
                    if (g == 0.0f) continue;
                    j = pass ? e : mem_pos[e];
                    ko = K + (size_t)j * D;
                    if (p->sim == RETRLM_TRIME_L2) {
                        const float c = -2.0f * scale * g;
                        RETRLM__SIMD
                        for (d = 0; d < D; d++) dx[d] += c * (kx[d] - ko[d]);
                    } else {
                        const float c = scale * g;
                        RETRLM__SIMD
                        for (d = 0; d < D; d++) dx[d] += c * ko[d];
                    }
                }
            }
        }
    }
    RETRLM_FREE(sims);
    RETRLM_FREE(mem_pos);
    return r;
}

// the end of a step of TRIME's or NPM's trainer: the loss kept (losses may be NULL), the step
// counted, a checkpoint at every `every` steps and at the last, and progress (stage)
static retrlm_result retrlm__step_done(retrlm_model *m, retrlm_adamw *opt, retrlm_lm_train_state *st, float loss,
                                       float *losses, int64_t steps, const char *checkpoint, int every,
                                       retrlm_progress_fn progress, void *user, const char *stage) {
    if (losses) losses[st->step] = loss;
    st->last_loss = loss;
    st->step++;
#ifndef RETRLM_NO_STDIO
    if (checkpoint && (st->step == steps || (every > 0 && st->step % every == 0))) {
        retrlm_result r = retrlm_model_save(m, opt, st, checkpoint);
        if (r) return r;
    }
#else
    (void)m, (void)opt, (void)checkpoint, (void)every;
#endif
    return retrlm__progress(progress, user, stage, (double)st->step, (double)steps);
}

RETRLM_API retrlm_result retrlm_trime_train(retrlm_model *m, retrlm_adamw *opt,
                                            const retrlm_trime_train_config *cfg,
                                            retrlm_lm_train_state *st) {
    retrlm_trime_train_config c;
    retrlm_model_grad_in gin;
    retrlm_result r = RETRLM_OK;
    const float **dffn;
    float *dkeys;
    int *inp, *tgt, L;
    size_t t, need;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    L = m->config.n_layers;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.seq_len) c.seq_len = m->config.max_seq_len;
    if ((r = retrlm__trime_check(&c.trime, "trime_train"))) return r;
    if (m->config.bidirectional || m->config.no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: needs a causal LM with logits");
    if (c.batch < 1 || c.batch > m->config.max_batch || c.seq_len < 1 ||
        c.seq_len > m->config.max_seq_len || c.steps < 0 || c.warmup_steps < 0 || !c.train)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: batch %d (1..%d), seq_len %d (1..%d), "
                            "steps %lld and warmup %lld (>= 0), a stream", c.batch,
                            m->config.max_batch, c.seq_len, m->config.max_seq_len,
                            (long long)c.steps, (long long)c.warmup_steps);
    need = c.trime.batching == RETRLM_TRIME_LONG  ? (size_t)c.batch * (size_t)c.seq_len + 1
           : c.trime.batching == RETRLM_TRIME_EXT ? (size_t)c.seq_len + 1
                                                  : (size_t)c.seq_len + 2;
    if (c.n_train < need)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_train: a stream of %lu tokens; %s batches of %d x "
                            "%d need %lu", (unsigned long)c.n_train,
                            c.trime.batching == RETRLM_TRIME_LONG  ? "long"
                            : c.trime.batching == RETRLM_TRIME_EXT ? "ext"
                                                                   : "local",
                            c.batch, c.seq_len, (unsigned long)need);
    if (c.trime.batching == RETRLM_TRIME_EXT) {
        int64_t e;
        if (!c.batches || c.n_batches < 1 || !(c.cross_sent_ratio >= 0.0f && c.cross_sent_ratio <= 1.0f))
            return retrlm__fail(RETRLM_ERR_ARG, "trime_train: ext batching needs batches (%lld given) "
                                "and a cross_sent_ratio in [0, 1] (%g)", (long long)c.n_batches,
                                (double)c.cross_sent_ratio);
        for (e = 0; e < c.n_batches * c.batch; e++)
            if (c.batches[e] < 0 || (uint64_t)c.batches[e] + (uint64_t)c.seq_len >= (uint64_t)c.n_train)
                return retrlm__fail(RETRLM_ERR_ARG, "trime_train: batch %lld's segment %d starts at "
                                    "%lld: a segment of %d + 1 tokens must lie in the %lu of the "
                                    "stream", (long long)(e / c.batch), (int)(e % c.batch),
                                    (long long)c.batches[e], c.seq_len, (unsigned long)c.n_train);
    }
    for (t = 0; t < c.n_train; t++)
        if (c.train[t] < 0 || c.train[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_train: token %d at %lu is outside the "
                                "vocabulary of %d", c.train[t], (unsigned long)t,
                                m->config.vocab_size);
    inp = (int *)retrlm__alloc((size_t)c.batch * (size_t)c.seq_len, 2 * sizeof(int));
    dkeys = (float *)retrlm__alloc((size_t)c.batch * (size_t)c.seq_len * (size_t)m->config.dim,
                                   sizeof(float));
    dffn = (const float **)retrlm__calloc((size_t)L, sizeof(float *));
    if (!inp || !dkeys || !dffn) {
        RETRLM_FREE(inp);
        RETRLM_FREE(dkeys);
        RETRLM_FREE((void *)dffn);
        return retrlm__fail(RETRLM_ERR_NOMEM, "trime_train: no memory");
    }
    tgt = inp + (size_t)c.batch * c.seq_len;
    dffn[L - 1] = dkeys;
    while (st->step < c.steps && !r) {
        const int B = c.batch, T = c.seq_len;
        int b, i;
        float loss = 0.0f;
        if (c.trime.batching == RETRLM_TRIME_LONG) {
            size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)B * T));
            for (i = 0; i < B * T; i++) {
                inp[i] = c.train[off + (size_t)i];
                tgt[i] = c.train[off + (size_t)i + 1];
            }
        } else if (c.trime.batching == RETRLM_TRIME_EXT) {
            const int64_t *g = c.batches + (size_t)retrlm_rng_below(&st->rng, (uint64_t)c.n_batches) * B;
            for (b = 0; b < B; b++)
                for (i = 0; i < T; i++) {
                    inp[b * T + i] = c.train[(size_t)g[b] + (size_t)i];
                    tgt[b * T + i] = c.train[(size_t)g[b] + (size_t)i + 1];
                }
            c.trime.no_local = retrlm_rng_float(&st->rng) < c.cross_sent_ratio;
        } else
            for (b = 0; b < B; b++) {
                size_t off = (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)T));
                for (i = 0; i < T; i++) {
                    inp[b * T + i] = c.train[off + (size_t)i];
                    tgt[b * T + i] = c.train[off + (size_t)i + 1];
                }
            }
        if (st->step < c.warmup_steps) { // cross-entropy warm-up
            if ((r = retrlm__lm_step(m, opt, inp, tgt, B, T, NULL, NULL, &loss))) break;
        } else {
            if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) ||
                (r = retrlm_model_trime_loss(m, &c.trime, tgt, NULL, &loss, dkeys, NULL)))
                break;
            retrlm_model_zero_grad(m);
            memset(&gin, 0, sizeof gin);
            gin.dlogits = m->logits;
            gin.dffn_in = dffn;
            if ((r = retrlm_model_backward(m, &gin))) break;
            retrlm_adamw_step(opt);
        }
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                              c.progress_user, "trime");
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(dkeys);
    RETRLM_FREE((void *)dffn);
    return r;
}

// segment s's text for BM25: tok's decoding, or its ids as decimal words
static retrlm_result retrlm__trime_segment_text(const retrlm_tokenizer *tok, const int *ids, int n,
                                                char **buf, size_t *cap, size_t *len) {
    size_t need = (size_t)n * 12 + 1, at = 0;
    int i;
    if (tok) return retrlm__decode_grow(tok, ids, (size_t)n, buf, cap, len);
    if (need > *cap) {
        char *b = (char *)retrlm__realloc(*buf, need, 1);
        if (!b) return retrlm__fail(RETRLM_ERR_NOMEM, "trime_bm25_batches: no memory");
        *buf = b;
        *cap = need;
    }
    for (i = 0; i < n; i++) at += (size_t)snprintf(*buf + at, *cap - at, "%d ", ids[i]);
    *len = at;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_trime_bm25_batches(const retrlm_tokenizer *tok, const int *tokens,
                                                   size_t n, int seq_len, int batch,
                                                   const retrlm_bm25_config *bm25,
                                                   int64_t *offsets, int64_t *n_batches) {
    const int T = seq_len, K = 4 * batch;
    int64_t S, s, t, *ids = NULL, nb = 0;
    char **texts = NULL;
    size_t *lens = NULL, *caps = NULL;
    int *found = NULL, *group = NULL;
    unsigned char *used = NULL;
    retrlm_bm25 bm;
    retrlm_bm25_config bc;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tokens && n_batches);
    memset(&bm, 0, sizeof bm);
    if (T < 1 || batch < 1 || K / 4 != batch)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_bm25_batches: seq_len %d and batch %d must be >= 1",
                            T, batch);
    S = n > 0 ? (int64_t)((n - 1) / (size_t)T) : 0;
    if (S < batch || S > INT32_MAX)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_bm25_batches: %lld segments of %d tokens in a stream "
                            "of %lu; need at least batch = %d (and < 2^31)", (long long)S, T,
                            (unsigned long)n, batch);
    *n_batches = S / batch;
    if (!offsets) return RETRLM_OK;
    texts = (char **)retrlm__calloc((size_t)S, sizeof(char *));
    lens = (size_t *)retrlm__calloc((size_t)S, 2 * sizeof(size_t));
    ids = (int64_t *)retrlm__alloc((size_t)S, ((size_t)K + 1) * sizeof(int64_t));
    found = (int *)retrlm__alloc((size_t)S, sizeof(int) + 1);
    group = (int *)retrlm__alloc((size_t)batch, sizeof(int));
    if (!texts || !lens || !ids || !found || !group) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "trime_bm25_batches: no memory for %lld segments", (long long)S);
        goto done;
    }
    caps = lens + S;
    used = (unsigned char *)(found + S);
    memset(used, 0, (size_t)S);
    for (s = 0; s < S && !r; s++) {
        ids[(size_t)S * K + (size_t)s] = s; // the document ids, after the neighbour table
        r = retrlm__trime_segment_text(tok, tokens + (size_t)s * T, T, &texts[s], &caps[s], &lens[s]);
    }
    bc = retrlm__bm25_passage_config(bm25); // segments: passages of T tokens
    if (r || (r = retrlm_bm25_init(&bm, &bc)) ||
        (r = retrlm_bm25_add_batch(&bm, (int)S, ids + (size_t)S * K, (const char *const *)texts, lens)) ||
        (r = retrlm_bm25_commit(&bm)) ||
        (r = retrlm_bm25_search_batch(&bm, (int)S, (const char *const *)texts, lens, K, 0, ids,
                                      NULL, found)))
        goto done;
    for (s = 0; s < S && nb < *n_batches; s++) {
        int g = 0, q, j;
        if (used[s]) continue;
        used[s] = 1;
        group[g++] = (int)s;
        // the members' unused neighbours, best first, breadth first over the members
        for (q = 0; q < g && g < batch; q++)
            for (j = 0; j < found[group[q]] && g < batch; j++) {
                int64_t x = ids[(size_t)group[q] * K + (size_t)j];
                if (x >= 0 && x < S && !used[x]) {
                    used[x] = 1;
                    group[g++] = (int)x;
                }
            }
        for (t = s + 1; t < S && g < batch; t++)
            if (!used[t]) {
                used[t] = 1;
                group[g++] = (int)t;
            }
        if (g < batch) break; // cannot happen while nb < S / batch; kept as a guard
        for (j = 0; j < batch; j++) offsets[nb * batch + j] = (int64_t)group[j] * T;
        nb++;
    }
done:
    if (texts)
        for (s = 0; s < S; s++) RETRLM_FREE(texts[s]);
    RETRLM_FREE(texts);
    RETRLM_FREE(lens);
    RETRLM_FREE(ids);
    RETRLM_FREE(found);
    RETRLM_FREE(group);
    retrlm_bm25_free(&bm);
    return r;
}

// ---------------------------------------------------------------------------------------------
// NPM

// draws block b's spans (as retrlm_npm_train's header says) into masked (T) and appends them,
// flat positions b T + start, to start/len; returns the spans drawn
static int retrlm__npm_spans(retrlm_rng *rng, const retrlm_npm_train_config *c, int b, int *masked,
                             int *start, int *len) {
    const int T = c->seq_len, want = (int)(c->mask_ratio * (float)T + 0.5f);
    int done = 0, tries, n = 0, i;
    for (tries = 0; done < want && tries < 4 * T; tries++) {
        int l = 1, s0, ok = 1;
        while (l < c->max_span && retrlm_rng_float(rng) >= c->span_p) l++;
        if (l > T) l = T;
        s0 = (int)retrlm_rng_below(rng, (uint64_t)(T - l + 1));
        for (i = s0 > 0 ? s0 - 1 : 0; i < s0 + l + (s0 + l < T) && ok; i++) ok = masked[i] != c->mask_id;
        if (!ok) continue;
        for (i = s0; i < s0 + l; i++) masked[i] = c->mask_id;
        start[n] = b * T + s0, len[n] = l, n++;
        done += l;
    }
    return n;
}

RETRLM_API retrlm_result retrlm_npm_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_npm_train_config *cfg,
                                          retrlm_lm_train_state *st) {
    retrlm_npm_train_config c;
    retrlm_model mem;
    retrlm_model_grad_in gin;
    retrlm_result r = RETRLM_OK;
    int *whole, *masked, *block, *start, *len, *tgt, *tstart, *ones, B, T, D, max_spans;
    float *qs, *qe, *dqs, *dqe, *dh, *dmem, *qt, *dqt, *dmt;
    size_t t, need;
    int64_t e;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    if (!c.batch) c.batch = m->config.max_batch;
    if (!c.seq_len) c.seq_len = m->config.max_seq_len;
    if (c.mask_ratio == 0.0f) c.mask_ratio = 0.15f;
    if (c.span_p == 0.0f) c.span_p = 0.5f;
    if (!c.max_span) c.max_span = 5;
    if (c.temperature == 0.0f) c.temperature = 1.0f;
    B = c.batch, T = c.seq_len, D = m->config.dim;
    if (!m->config.bidirectional || (c.parametric && m->config.no_logits))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: needs a bidirectional model%s",
                            c.parametric ? " with logits (parametric)" : "");
    if (B < 2 || B > m->config.max_batch || T < 2 || T > m->config.max_seq_len || c.steps < 0 || !c.train ||
        c.mask_id < 0 || c.mask_id >= m->config.vocab_size || !(c.mask_ratio > 0.0f && c.mask_ratio < 1.0f) ||
        !(c.span_p > 0.0f && c.span_p <= 1.0f) || c.max_span < 1 || !(c.temperature > 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: batch %d (2..%d), seq_len %d (2..%d), steps %lld, mask_id "
                            "%d (vocabulary %d), mask_ratio %g and span_p %g in (0, 1), max_span %d, temperature %g",
                            B, m->config.max_batch, T, m->config.max_seq_len, (long long)c.steps, c.mask_id,
                            m->config.vocab_size, (double)c.mask_ratio, (double)c.span_p, c.max_span,
                            (double)c.temperature);
    need = c.batches ? (size_t)T : (size_t)B * (size_t)T;
    if (c.n_train < need || (c.batches && c.n_batches < 1))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_train: a stream of %lu tokens (%lu needed), %lld batches",
                            (unsigned long)c.n_train, (unsigned long)need, (long long)c.n_batches);
    for (e = 0; c.batches && e < c.n_batches * B; e++)
        if (c.batches[e] < 0 || (uint64_t)c.batches[e] + (uint64_t)T > (uint64_t)c.n_train)
            return retrlm__fail(RETRLM_ERR_ARG, "npm_train: batch %lld's block %d starts at %lld: a block of %d "
                                "tokens must lie in the %lu of the stream", (long long)(e / B), (int)(e % B),
                                (long long)c.batches[e], T, (unsigned long)c.n_train);
    for (t = 0; t < c.n_train; t++)
        if (c.train[t] < 0 || c.train[t] >= m->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "npm_train: token %d at %lu is outside the vocabulary of %d",
                                c.train[t], (unsigned long)t, m->config.vocab_size);
    memset(&mem, 0, sizeof mem);
    if (!c.parametric && (r = retrlm_model_init_view(&mem, m, NULL))) return r; // the whole pass: same weights
    max_spans = B * (T / 2 + 1); // spans never touch: at most one every two tokens
    whole = (int *)retrlm__alloc((size_t)B * T * 6 + (size_t)max_spans * 2, sizeof(int));
    qs = (float *)retrlm__alloc((size_t)max_spans * 4 * D + (size_t)B * T * D * 5, sizeof(float));
    if (!whole || !qs) {
        RETRLM_FREE(whole), RETRLM_FREE(qs), retrlm_model_free(&mem);
        return retrlm__fail(RETRLM_ERR_NOMEM, "npm_train: no memory");
    }
    masked = whole + (size_t)B * T, block = masked + (size_t)B * T;
    start = block + (size_t)B * T, len = start + max_spans, tgt = len + max_spans;
    tstart = tgt + (size_t)B * T, ones = tstart + (size_t)B * T;
    qe = qs + (size_t)max_spans * D, dqs = qe + (size_t)max_spans * D, dqe = dqs + (size_t)max_spans * D;
    dh = dqe + (size_t)max_spans * D, dmem = dh + (size_t)B * T * D;
    qt = dmem + (size_t)B * T * D, dqt = qt + (size_t)B * T * D, dmt = dqt + (size_t)B * T * D;
    for (t = 0; t < (size_t)B * T; t++) block[t] = (int)(t / (size_t)T), ones[t] = 1;
    while (st->step < c.steps && !r) {
        float loss = 0.0f, tloss = 0.0f;
        int b, i, ns = 0, nt = 0, cnt = 0, tcnt = 0, hs = 0;
        size_t off = c.batches ? 0 : (size_t)retrlm_rng_below(&st->rng, (uint64_t)(c.n_train - (size_t)B * T + 1));
        const int64_t *g = c.batches ? c.batches + (size_t)retrlm_rng_below(&st->rng, (uint64_t)c.n_batches) * B : NULL;
        for (b = 0; b < B; b++) {
            const int *src = c.train + (g ? (size_t)g[b] : off + (size_t)b * T);
            memcpy(whole + (size_t)b * T, src, (size_t)T * sizeof(int));
            memcpy(masked + (size_t)b * T, src, (size_t)T * sizeof(int));
            ns += retrlm__npm_spans(&st->rng, &c, b, masked + (size_t)b * T, start + ns, len + ns);
        }
        if (c.parametric) { // the baseline: the masked tokens from the vocabulary
            for (i = 0; i < B * T; i++) tgt[i] = masked[i] == c.mask_id ? whole[i] : -1;
            if ((r = retrlm__lm_step(m, opt, masked, tgt, B, T, NULL, NULL, &loss))) break;
            if (c.hits) c.hits[st->step] = 0.0f;
            r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                                  c.progress_user, "npm");
            continue;
        }
        if ((r = retrlm_model_forward(m, masked, B, T, NULL, RETRLM_FORWARD_NO_LOGITS)) ||
            (r = retrlm_model_forward(&mem, whole, B, T, NULL, RETRLM_FORWARD_NO_LOGITS)))
            break;
        for (i = 0; i < ns; i++) {
            memcpy(qs + (size_t)i * D, m->hidden + (size_t)start[i] * D, (size_t)D * sizeof(float));
            memcpy(qe + (size_t)i * D, m->hidden + (size_t)(start[i] + len[i] - 1) * D, (size_t)D * sizeof(float));
        }
        if (ns && (r = retrlm_npm_loss(qs, qe, ns, mem.hidden, B * T, D, c.temperature, whole, block, start, len,
                                       &loss, dqs, dqe, dmem, &cnt, &hs, NULL)))
            break;
        if (!cnt) memset(dmem, 0, (size_t)B * T * D * sizeof(float)); // nothing counted: no span gradient
        memset(dh, 0, (size_t)B * T * D * sizeof(float));
        if (!c.no_token_loss) { // the token term: a one-token span at every masked position
            for (i = 0; i < B * T; i++)
                if (masked[i] == c.mask_id) {
                    memcpy(qt + (size_t)nt * D, m->hidden + (size_t)i * D, (size_t)D * sizeof(float));
                    tstart[nt++] = i;
                }
            // start and end rows are the same for one token: the term is half the loss, its
            // query gradient the start rows' alone, its memory gradient half of both rows'
            if (nt && (r = retrlm_npm_loss(qt, qt, nt, mem.hidden, B * T, D, c.temperature, whole, block, tstart,
                                           ones, &tloss, dqt, NULL, dmt, &tcnt, NULL, NULL)))
                break;
            if (tcnt) {
                size_t k;
                for (i = 0; i < nt; i++) {
                    float *a = dh + (size_t)tstart[i] * D;
                    int d;
                    for (d = 0; d < D; d++) a[d] += dqt[(size_t)i * D + d];
                }
                for (k = 0; k < (size_t)B * T * D; k++) dmem[k] += 0.5f * dmt[k];
                loss += 0.5f * tloss;
            }
        }
        if (cnt || tcnt) { // queries' gradients to their positions of the masked pass, then both backwards
            for (i = 0; i < ns; i++) {
                float *a = dh + (size_t)start[i] * D, *z = dh + (size_t)(start[i] + len[i] - 1) * D;
                int d;
                for (d = 0; d < D; d++) a[d] += dqs[(size_t)i * D + d];
                for (d = 0; d < D; d++) z[d] += dqe[(size_t)i * D + d];
            }
            retrlm_model_zero_grad(m); // the view's gradients are m's
            memset(&gin, 0, sizeof gin);
            gin.dhidden = dh;
            if ((r = retrlm_model_backward(m, &gin))) break;
            gin.dhidden = dmem;
            if ((r = retrlm_model_backward(&mem, &gin))) break;
            retrlm_adamw_step(opt);
        }
        if (c.hits) c.hits[st->step] = cnt ? (float)hs / (float)cnt : 0.0f;
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint, c.checkpoint_every, c.progress,
                              c.progress_user, "npm");
    }
    RETRLM_FREE(whole), RETRLM_FREE(qs);
    retrlm_model_free(&mem);
    return r;
}


// ---- strategy 4, RPT: a model that retrieves its own earlier chunks ---------------------------

RETRLM_API void retrlm_rpt_targets_free(retrlm_rpt_targets *t) {
    if (!t) return;
    RETRLM_FREE(t->span);
    RETRLM_FREE(t->cand);
    RETRLM_FREE(t->gold);
    memset(t, 0, sizeof *t);
}

// chunk u's first candidate chunk (its window's first chunk - 1 ends before the window: j + 1
// < window start, so j <= ws - 2); returns how many there are (j = 0 .. count - 1)
static int retrlm__rpt_eligible(int u, int uw) { return RETRLM__MAX(0, u / uw * uw - 1); }

// whether targets t keep their promises: shape in range, every candidate of chunk u eligible
// (0 <= j < retrlm__rpt_eligible(u)) or -1, every gold finite or -inf, -inf where the candidate
// is -1. err: the result to fail with (ERR_ARG for a caller's struct, ERR_FORMAT for a file)
// whether a shape is one targets may have: chunk 2..65536, windows of seq_len tokens (a multiple
// of the chunk), at most 65536 chunks a span, 1..U candidates, 1.. spans whose entries fit in memory
static int retrlm__rpt_shape_ok(int64_t chunk, int64_t windows, int64_t seq_len, int64_t cands, int64_t n_spans) {
    return chunk >= 2 && chunk <= 65536 && windows >= 1 && windows <= 65536 && seq_len >= chunk &&
           seq_len <= 65536 && seq_len % chunk == 0 && windows * (seq_len / chunk) <= 65536 && cands >= 1 &&
           cands <= windows * (seq_len / chunk) && n_spans >= 1 &&
           (uint64_t)n_spans <= (uint64_t)SIZE_MAX / 8 / (uint64_t)(windows * (seq_len / chunk) * cands);
}

static retrlm_result retrlm__rpt_targets_valid(const retrlm_rpt_targets *t, retrlm_result err, const char *who) {
    int64_t U, C, s, u, i;
    if (!t->span || !t->cand || !t->gold ||
        !retrlm__rpt_shape_ok(t->chunk, t->windows, t->seq_len, t->cands, t->n_spans))
        return retrlm__fail(err, "%s: targets of chunk %d (2..65536), %d windows of %d tokens (a multiple of "
                            "the chunk, at most 65536 chunks a span), %d candidates (1..chunks a span), %lld "
                            "spans", who, t->chunk, t->windows, t->seq_len, t->cands, (long long)t->n_spans);
    U = (int64_t)t->windows * t->seq_len / t->chunk;
    C = t->cands;
    for (s = 0; s < t->n_spans; s++) {
        if (t->span[s] < 0)
            return retrlm__fail(err, "%s: span %lld starts at %lld", who, (long long)s, (long long)t->span[s]);
        for (u = 0; u < U; u++)
            for (i = 0; i < C; i++) {
                const size_t at = ((size_t)s * (size_t)U + (size_t)u) * (size_t)C + (size_t)i;
                const int j = t->cand[at];
                const float g = t->gold[at];
                if (j < -1 || j >= retrlm__rpt_eligible((int)u, t->seq_len / t->chunk))
                    return retrlm__fail(err, "%s: span %lld chunk %lld's candidate %d is not an earlier "
                                        "window's chunk with its continuation", who, (long long)s,
                                        (long long)u, j);
                if (g != g || g == INFINITY || (j < 0 && g != -INFINITY))
                    return retrlm__fail(err, "%s: span %lld chunk %lld's gold %g (finite, or -inf; -inf "
                                        "without a candidate)", who, (long long)s, (long long)u, (double)g);
            }
    }
    return RETRLM_OK;
}

RETRLM_API uint32_t retrlm_rpt_stream_crc(const int *tokens, size_t n) {
    unsigned char buf[1024];
    uint32_t crc = 0;
    size_t i = 0, at;
    RETRLM_ASSERT(tokens || !n);
    while (i < n) {
        for (at = 0; at < sizeof buf && i < n; at += 4, i++) {
            const uint32_t v = (uint32_t)tokens[i];
            buf[at] = (unsigned char)v, buf[at + 1] = (unsigned char)(v >> 8);
            buf[at + 2] = (unsigned char)(v >> 16), buf[at + 3] = (unsigned char)(v >> 24);
        }
        crc = retrlm_crc32(crc, buf, at);
    }
    return crc;
}

static retrlm_result retrlm__rpt_targets_writer(const retrlm_rpt_targets *t, retrlm_writer *w) {
    int32_t shape[4];
    size_t n;
    retrlm_result r;
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_targets_save"))) return r;
    n = (size_t)t->n_spans * (size_t)(t->windows * (t->seq_len / t->chunk)) * (size_t)t->cands;
    shape[0] = t->chunk, shape[1] = t->windows, shape[2] = t->seq_len, shape[3] = t->cands;
    if ((r = retrlm_writer_init(w, "rpt_targets")) ||
        (r = retrlm_writer_add_copy(w, "shape", RETRLM_DTYPE_I32, shape, 4)) ||
        (r = retrlm_writer_add_copy(w, "stream_crc", RETRLM_DTYPE_U32, &t->stream_crc, 1)) ||
        (r = retrlm_writer_add(w, "spans", RETRLM_DTYPE_I64, t->span, (size_t)t->n_spans)) ||
        (r = retrlm_writer_add(w, "cand", RETRLM_DTYPE_I32, t->cand, n)))
        return r;
    return retrlm_writer_add(w, "gold", RETRLM_DTYPE_F32, t->gold, n);
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_rpt_targets_save(const retrlm_rpt_targets *t, const char *path) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(t && path);
    memset(&w, 0, sizeof w);
    r = retrlm__rpt_targets_writer(t, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}
#endif

RETRLM_API retrlm_result retrlm_rpt_targets_save_memory(const retrlm_rpt_targets *t, void *buf, size_t cap,
                                                        size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(t && size);
    memset(&w, 0, sizeof w);
    r = retrlm__rpt_targets_writer(t, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

// the targets of an opened file (closed here), copied out and checked
static retrlm_result retrlm__rpt_targets_from_reader(retrlm_rpt_targets *t, retrlm_reader *rd, retrlm_result r) {
    int32_t shape[4];
    size_t n_spans = 0, n = 0, U;
    memset(t, 0, sizeof *t);
    if (!r) r = retrlm_reader_read(rd, "shape", RETRLM_DTYPE_I32, shape, 4);
    if (!r) r = retrlm_reader_get(rd, "spans", RETRLM_DTYPE_I64, NULL, &n_spans);
    // n_spans <= the file's size / 8: an int64_t on any host
    if (!r && !retrlm__rpt_shape_ok(shape[0], shape[1], shape[2], shape[3], (int64_t)n_spans))
        r = retrlm__fail(RETRLM_ERR_FORMAT, "%s: shape chunk %d, %d windows of %d tokens, %d candidates, %lu "
                         "spans is out of range", rd->source_, shape[0], shape[1], shape[2], shape[3],
                         (unsigned long)n_spans);
    if (!r) {
        U = (size_t)shape[1] * (size_t)(shape[2] / shape[0]);
        n = n_spans * U * (size_t)shape[3];
        t->span = (int64_t *)retrlm__alloc(n_spans, sizeof(int64_t));
        t->cand = (int *)retrlm__alloc(n, sizeof(int));
        t->gold = (float *)retrlm__alloc(n, sizeof(float));
        if (!t->span || !t->cand || !t->gold) r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_load: no memory");
    }
    if (!r) r = retrlm_reader_read(rd, "spans", RETRLM_DTYPE_I64, t->span, n_spans);
    if (!r) r = retrlm_reader_read(rd, "cand", RETRLM_DTYPE_I32, t->cand, n);
    if (!r) r = retrlm_reader_read(rd, "gold", RETRLM_DTYPE_F32, t->gold, n);
    if (!r) r = retrlm_reader_read(rd, "stream_crc", RETRLM_DTYPE_U32, &t->stream_crc, 1);
    if (!r) {
        t->chunk = shape[0], t->windows = shape[1], t->seq_len = shape[2], t->cands = shape[3];
        t->n_spans = (int64_t)n_spans;
        r = retrlm__rpt_targets_valid(t, RETRLM_ERR_FORMAT, rd->source_);
    }
    retrlm_reader_close(rd);
    if (r) retrlm_rpt_targets_free(t);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_rpt_targets_load(retrlm_rpt_targets *t, const char *path) {
    retrlm_reader rd;
    RETRLM_ASSERT(t && path);
    return retrlm__rpt_targets_from_reader(t, &rd, retrlm_reader_open(&rd, path, "rpt_targets", 0));
}
#endif

RETRLM_API retrlm_result retrlm_rpt_targets_load_memory(retrlm_rpt_targets *t, const void *data, size_t size) {
    retrlm_reader rd;
    RETRLM_ASSERT(t && data);
    return retrlm__rpt_targets_from_reader(t, &rd, retrlm_reader_open_memory(&rd, data, size, "rpt_targets", 0));
}

// the candidates of chunk u of the span at off: every eligible j, or the C with the largest
// share of u's bigrams (ties: the nearer first); writes cand (C), returns how many
static int retrlm__rpt_cands(const int *tokens, size_t off, int mc, int uw, int u, int C,
                             int *cand, float *ov) {
    const int ne = retrlm__rpt_eligible(u, uw);
    int j, i, n = 0;
    for (i = 0; i < C; i++) cand[i] = -1;
    if (ne <= C) {
        for (j = 0; j < ne; j++) cand[n++] = j;
        return n;
    }
    for (j = ne - 1; j >= 0; j--) { // nearer first, so that a tie keeps the nearer
        float o = retrlm_retro_overlap(tokens + off + (size_t)u * mc, mc,
                                       tokens + off + (size_t)j * mc, 2 * mc);
        int at = n < C ? n : C;
        if (n >= C && !(o > ov[C - 1])) continue;
        while (at > 0 && o > ov[at - 1]) { // insertion, best first
            if (at < C) { ov[at] = ov[at - 1]; cand[at] = cand[at - 1]; }
            at--;
        }
        ov[at] = o;
        cand[at] = j;
        if (n < C) n++;
    }
    return n;
}

// summed log-probability of the last `last` tokens of each row (nr rows of T, lengths lens) from
// the last forward's final hidden states (run without logits): only those positions' logits are
// computed, into work (nr * last, V + D)
static retrlm_result retrlm__rpt_row_ll(const retrlm_model *ref, const int *rows, const int *lens,
                                        int nr, int T, int last, float *work, double *ll) {
    const int V = ref->config.vocab_size, D = ref->config.dim;
    const float *wout = ref->config.untied ? ref->param[RETRLM_T_LM_HEAD] : ref->param[RETRLM_T_EMBED];
    float *h = work + (size_t)nr * last * V;
    int b, t;
    retrlm_result r;
    for (b = 0; b < nr; b++)
        for (t = 0; t < last; t++)
            memcpy(h + ((size_t)b * last + t) * D,
                   ref->hidden + ((size_t)b * T + lens[b] - last - 1 + t) * D, (size_t)D * sizeof(float));
    if ((r = retrlm_matmul(work, h, wout, NULL, nr * last, V, D, 0))) return r;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (b = 0; b < nr; b++) {
        double s = 0.0;
        int i;
        const int *row = rows + (size_t)b * T + lens[b] - last;
        for (i = 0; i < last; i++) {
            const float *lg = work + ((size_t)b * last + i) * V;
            s += (double)lg[row[i]] - (double)retrlm_logsumexp(lg, V);
        }
        ll[b] = s;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_rpt_targets_build(retrlm_rpt_targets *t, retrlm_model *ref,
                                                  const int *tokens, size_t n,
                                                  const int64_t *doc, int64_t n_docs,
                                                  const retrlm_rpt_targets_config *cfg) {
    retrlm_rpt_targets_config c;
    int U = 0, uw, C, R, TR, mc, *rows = NULL, *lens = NULL, *job = NULL;
    size_t span_len, cap = 0, i;
    double *ll = NULL;
    float *ov = NULL, *work = NULL;
    int64_t d, s;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(t && tokens && doc && cfg);
    memset(t, 0, sizeof *t);
    c = *cfg;
    mc = c.chunk;
    if (!c.windows) c.windows = 4;
    if (!c.seq_len) c.seq_len = 4 * mc;
    if (!c.cands) c.cands = 8;
    span_len = (size_t)c.windows * (size_t)c.seq_len;
    if (!c.stride) c.stride = (int)RETRLM__MIN(span_len, (size_t)INT32_MAX);
    if (mc < 2 || mc > 65536 || c.windows < 1 || c.windows > 65536 || c.seq_len < mc ||
        c.seq_len % mc || c.seq_len > 65536 || span_len / (size_t)mc > 65536 || c.cands < 1 ||
        c.stride < 1 || n_docs < 1 || doc[0] != 0)
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: chunk %d (>= 2), windows %d, "
                            "seq_len %d (a multiple of the chunk), at most 65536 chunks a span, "
                            "cands %d, stride %d, %lld documents (the first at 0)", mc, c.windows,
                            c.seq_len, c.cands, c.stride, (long long)n_docs);
    if (ref && (ref->config.bidirectional || ref->config.max_seq_len < 4 * mc ||
                retrlm_model_is_q8(ref)))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: the reference must be a causal "
                            "f32 LM with max_seq_len >= 4 chunks (%d)", 4 * mc);
    for (d = 0; d < n_docs; d++)
        if (doc[d] < 0 || (size_t)doc[d] > n || (d && doc[d] < doc[d - 1]))
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: document %lld starts at %lld "
                                "(ascending, within %lu tokens)", (long long)d,
                                (long long)doc[d], (unsigned long)n);
    for (i = 0; i < n && ref; i++)
        if (tokens[i] < 0 || tokens[i] >= ref->config.vocab_size)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: token %d at %lu is outside the "
                                "reference's vocabulary", tokens[i], (unsigned long)i);
    for (d = 0; d < n_docs; d++) { // the spans
        size_t e = d + 1 < n_docs ? (size_t)doc[d + 1] : n, o;
        for (o = (size_t)doc[d]; o + span_len + 1 <= e; o += (size_t)c.stride) {
            if ((size_t)t->n_spans == cap) {
                int64_t *ns;
                cap = cap ? 2 * cap : 64;
                ns = (int64_t *)retrlm__realloc(t->span, cap, sizeof(int64_t));
                if (!ns) { r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_build: no memory"); goto done; }
                t->span = ns;
            }
            t->span[t->n_spans++] = (int64_t)o;
        }
    }
    if (!t->n_spans) {
        r = retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_build: no document holds a span of %lu "
                         "tokens", (unsigned long)(span_len + 1));
        goto done;
    }
    t->chunk = mc;
    t->stream_crc = retrlm_rpt_stream_crc(tokens, n);
    t->windows = c.windows;
    t->seq_len = c.seq_len;
    U = (int)(span_len / (size_t)mc);
    uw = c.seq_len / mc;
    C = t->cands = RETRLM__MIN(c.cands, U);
    R = ref ? ref->config.max_batch : 1;
    TR = 4 * mc;
    t->cand = (int *)retrlm__alloc((size_t)t->n_spans * U * C, sizeof(int));
    t->gold = (float *)retrlm__alloc((size_t)t->n_spans * U * C, sizeof(float));
    rows = (int *)retrlm__alloc((size_t)R * TR + R + 2 * (size_t)U * (C + 1), sizeof(int));
    ll = (double *)retrlm__alloc((size_t)U * (C + 1), sizeof(double));
    ov = (float *)retrlm__alloc((size_t)C, sizeof(float));
    if (ref)
        work = (float *)retrlm__alloc((size_t)R * mc * (size_t)(ref->config.vocab_size + ref->config.dim),
                                      sizeof(float));
    if (!t->cand || !t->gold || !rows || !ll || !ov || (ref && !work)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_targets_build: no memory for %lld spans",
                         (long long)t->n_spans);
        goto done;
    }
    lens = rows + (size_t)R * TR;
    job = lens + R; // (jobs, 2): chunk u and candidate slot (-1: u's baseline) of each row
    for (s = 0; s < t->n_spans && !r; s++) {
        const size_t off = (size_t)t->span[s];
        int *cand = t->cand + (size_t)s * U * C;
        float *gold = t->gold + (size_t)s * U * C;
        int u, k, nj = 0, j0;
        for (u = 0; u < U; u++) {
            int nc = 0;
            if (u + 1 < U) nc = retrlm__rpt_cands(tokens, off, mc, uw, u, C, cand + (size_t)u * C, ov);
            else for (k = 0; k < C; k++) cand[(size_t)u * C + k] = -1;
            for (k = 0; k < C; k++) gold[(size_t)u * C + k] = -INFINITY;
            for (k = nc ? -1 : 0; k < nc && ref; k++) {
                job[2 * nj] = u;
                job[2 * nj + 1] = k;
                nj++;
            }
        }
        // rows [chunk j, chunk j + 1, chunk u, chunk u + 1], or [chunk u, chunk u + 1]
        for (j0 = 0; j0 < nj && !r; j0 += R) {
            int nr = RETRLM__MIN(R, nj - j0), b;
            for (b = 0; b < nr; b++) {
                int *row = rows + (size_t)b * TR, len = 0, q;
                u = job[2 * (j0 + b)];
                k = job[2 * (j0 + b) + 1];
                if (k >= 0) {
                    memcpy(row, tokens + off + (size_t)cand[(size_t)u * C + k] * mc,
                           (size_t)2 * mc * sizeof(int));
                    len = 2 * mc;
                }
                memcpy(row + len, tokens + off + (size_t)u * mc, (size_t)2 * mc * sizeof(int));
                len += 2 * mc;
                for (q = len; q < TR; q++) row[q] = 0;
                lens[b] = len;
            }
            if ((r = retrlm_model_forward(ref, rows, nr, TR, lens, RETRLM_FORWARD_NO_LOGITS)) ||
                (r = retrlm__rpt_row_ll(ref, rows, lens, nr, TR, mc, work, ll + j0)))
                break;
        }
        for (k = 0; k < nj && !r; k++) // a baseline precedes its chunk's candidates
            if (job[2 * k + 1] >= 0) {
                int b0 = k - 1 - job[2 * k + 1];
                gold[(size_t)job[2 * k] * C + job[2 * k + 1]] = (float)(ll[k] - ll[b0]);
            }
        if (!r) r = retrlm__progress(c.progress, c.progress_user, "rpt targets", (double)(s + 1),
                                     (double)t->n_spans);
    }
done:
    RETRLM_FREE(rows);
    RETRLM_FREE(ll);
    RETRLM_FREE(ov);
    RETRLM_FREE(work);
    if (r) retrlm_rpt_targets_free(t);
    return r;
}

// the first K of chunk u's candidates (C) by key, best first (ties: the earlier slot), those
// with key > floor (NULL: any); writes their slots into pick (K), -1 past them; returns how many
static int retrlm__rpt_pick(const int *cand, const float *key, int C, int K, const float *floor,
                            int *pick) {
    int n = 0, i, c;
    for (i = 0; i < K; i++) {
        int best = -1;
        for (c = 0; c < C; c++) {
            int used = 0, p;
            if (cand[c] < 0 || (floor && !(key[c] > *floor))) continue;
            for (p = 0; p < n; p++) used |= pick[p] == c;
            if (!used && (best < 0 || key[c] > key[best])) best = c;
        }
        if (best < 0) break;
        pick[n++] = best;
    }
    for (i = n; i < K; i++) pick[i] = -1;
    return n;
}

// neighbour slots (K, r) of one chunk from its picked candidates: chunk j and what follows it
static void retrlm__rpt_neighbours(const int *tokens, size_t off, int mc, const int *cand,
                                   const int *pick, int K, int r, int *nb) {
    int i, t;
    for (i = 0; i < K; i++) {
        int *o = nb + (size_t)i * r;
        if (pick[i] < 0) { for (t = 0; t < r; t++) o[t] = -1; continue; }
        memcpy(o, tokens + off + (size_t)cand[pick[i]] * mc, (size_t)r * sizeof(int));
    }
}

// scores (U, C) of each chunk's candidates: q_u . k_j / sqrt(rpt_dim); -inf where none
static void retrlm__rpt_scores(const float *q, const float *k, const int *cand, int U, int C,
                               int dr, float *sc) {
    const float inv = 1.0f / sqrtf((float)dr);
    int u, c;
    for (u = 0; u < U; u++)
        for (c = 0; c < C; c++) {
            int j = cand[(size_t)u * C + c];
            sc[(size_t)u * C + c] = j < 0 ? -INFINITY
                                          : retrlm_dot(q + (size_t)u * dr, k + (size_t)j * dr, dr) * inv;
        }
}

// the shapes of targets against the model and the stream
static retrlm_result retrlm__rpt_check(const retrlm_model *m, const int *tokens, size_t n,
                                       const retrlm_rpt_targets *t, int need_rpt, const char *who) {
    const retrlm_model_config *c = &m->config;
    int64_t s;
    retrlm_result r;
    if (!tokens || !t || !t->n_spans || !t->span || !t->cand || !t->gold)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: no targets (retrlm_rpt_targets_build)", who);
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, who))) return r;
    if (need_rpt && (!c->rpt_dim || c->retro_chunk != t->chunk || 2 * t->chunk < c->retro_len))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the model needs an RPT retriever (rpt_dim), chunk "
                            "%d as the targets' and neighbours of at most 2 chunks (retro_len %d)",
                            who, t->chunk, c->retro_len);
    if (t->windows > c->max_batch || t->seq_len > c->max_seq_len || c->bidirectional ||
        c->no_logits)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: spans of %d x %d tokens need a causal LM with "
                            "logits and max_batch x max_seq_len >= them (%d x %d)", who,
                            t->windows, t->seq_len, c->max_batch, c->max_seq_len);
    for (s = 0; s < t->n_spans; s++)
        if (t->span[s] < 0 || (size_t)t->span[s] + (size_t)t->windows * t->seq_len + 1 > n)
            return retrlm__fail(RETRLM_ERR_ARG, "%s: span %lld at %lld runs past the stream's %lu "
                                "tokens", who, (long long)s, (long long)t->span[s],
                                (unsigned long)n);
    if (t->stream_crc && t->stream_crc != retrlm_rpt_stream_crc(tokens, n))
        return retrlm__fail(RETRLM_ERR_ARG, "%s: the targets were built on another stream of tokens", who);
    return RETRLM_OK;
}

// one span's inputs and targets: window b = tokens[off + bT, off + bT + T)
static void retrlm__rpt_span(const int *tokens, size_t off, int B, int T, int *inp, int *tgt) {
    int i;
    for (i = 0; i < B * T; i++) {
        inp[i] = tokens[off + (size_t)i];
        tgt[i] = tokens[off + (size_t)i + 1];
    }
}

RETRLM_API retrlm_result retrlm_rpt_loss(const float *q, const float *k, int U, int dr,
                                         const int *cand, const float *gold, int C, float margin,
                                         float threshold, float aux_scale, float *scores,
                                         float *loss, float *dq, float *dk) {
    float *sc, *ps, *pg, *dsc, rank = 0.0f;
    const float inv = aux_scale / sqrtf((float)dr);
    int u, i, nq = 0, qi = 0;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(q && k && cand && gold);
    if (U < 1 || dr < 1 || C < 1 || !(aux_scale >= 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_loss: %d chunks, dim %d, %d candidates (all >= "
                            "1), aux_scale %g (>= 0)", U, dr, C, (double)aux_scale);
    for (i = 0; i < U * C; i++)
        if (cand[i] >= U || cand[i] < -1)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_loss: candidate %d of slot %d is outside the "
                                "span's %d chunks", cand[i], i, U);
    sc = (float *)retrlm__alloc((size_t)4 * U * C, sizeof(float));
    if (!sc) return retrlm__fail(RETRLM_ERR_NOMEM, "rpt_loss: no memory");
    ps = sc + (size_t)U * C;
    pg = ps + (size_t)U * C;
    dsc = pg + (size_t)U * C;
    retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
    for (u = 0; u < U; u++) { // the chunks with a gold row, packed
        if (gold[(size_t)u * C] == -INFINITY) continue;
        memcpy(pg + (size_t)nq * C, gold + (size_t)u * C, (size_t)C * sizeof(float));
        memcpy(ps + (size_t)nq * C, sc + (size_t)u * C, (size_t)C * sizeof(float));
        nq++;
    }
    if (dq) memset(dq, 0, (size_t)U * dr * sizeof(float));
    if (dk) memset(dk, 0, (size_t)U * dr * sizeof(float));
    if (nq) r = retrlm_rank_loss(ps, pg, nq, C, margin, threshold, &rank, dsc, NULL);
    for (u = 0; u < U && nq && !r; u++) { // s_uj = q_u . k_j / sqrt(dr)
        if (gold[(size_t)u * C] == -INFINITY) continue;
        for (i = 0; i < C; i++) {
            int j = cand[(size_t)u * C + i];
            float g = dsc[(size_t)qi * C + i] * inv;
            if (j < 0 || g == 0.0f) continue;
            if (dq) retrlm_axpy(dq + (size_t)u * dr, g, k + (size_t)j * dr, dr);
            if (dk) retrlm_axpy(dk + (size_t)j * dr, g, q + (size_t)u * dr, dr);
        }
        qi++;
    }
    if (!r && scores) memcpy(scores, sc, (size_t)U * C * sizeof(float));
    if (!r && loss) *loss = aux_scale * rank;
    RETRLM_FREE(sc);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_train(retrlm_model *m, retrlm_adamw *opt,
                                          const retrlm_rpt_train_config *cfg,
                                          retrlm_lm_train_state *st) {
    retrlm_rpt_train_config c;
    const retrlm_rpt_targets *tg;
    int B, T, U, C, K, R, dr, D, mc, *inp = NULL, *tgt, *nb, *pick;
    float *q = NULL, *k, *dq, *dk, *sc, *dffn;
    const float **dlist = NULL;
    retrlm_result r;
    RETRLM_ASSERT(m && opt && cfg && st);
    c = *cfg;
    tg = c.targets;
    if ((r = retrlm__rpt_check(m, c.train, c.n_train, tg, 1, "rpt_train"))) return r;
    if (c.aux_scale == 0.0f) c.aux_scale = 1.0f;
    if (c.margin == 0.0f) c.margin = 1.0f;
    if (c.max_margin == 0.0f) c.max_margin = c.margin;
    if (c.steps < 0 || !(c.aux_scale >= 0.0f) || !(c.margin >= 0.0f) || !(c.max_margin >= 0.0f) ||
        !(c.threshold >= 0.0f) || !(c.gold_share >= 0.0f && c.gold_share <= 1.0f) ||
        c.gold_steps < 0 || c.aux_scale > 1e6f || c.max_margin > 1e6f || c.threshold > 511.0f)
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_train: steps %lld, aux_scale %g, margins %g .. "
                            "%g, threshold %g (0..511), gold_share %g (0..1), gold_steps %lld",
                            (long long)c.steps, (double)c.aux_scale, (double)c.margin,
                            (double)c.max_margin, (double)c.threshold, (double)c.gold_share,
                            (long long)c.gold_steps);
    B = tg->windows;
    T = tg->seq_len;
    mc = tg->chunk;
    U = B * T / mc;
    C = tg->cands;
    K = m->config.retro_k;
    R = m->config.retro_len;
    dr = m->config.rpt_dim;
    D = m->config.dim;
    inp = (int *)retrlm__alloc((size_t)2 * B * T + (size_t)U * K * R + (size_t)U * K, sizeof(int));
    q = (float *)retrlm__alloc((size_t)4 * U * dr + (size_t)U * C + (size_t)B * T * D,
                               sizeof(float));
    dlist = (const float **)retrlm__calloc((size_t)m->config.n_layers, sizeof(float *));
    if (!inp || !q || !dlist) {
        RETRLM_FREE(inp);
        RETRLM_FREE(q);
        RETRLM_FREE(dlist);
        return retrlm__fail(RETRLM_ERR_NOMEM, "rpt_train: no memory for a span");
    }
    tgt = inp + (size_t)B * T;
    nb = tgt + (size_t)B * T;
    pick = nb + (size_t)U * K * R;
    k = q + (size_t)U * dr;
    dq = k + (size_t)U * dr;
    dk = dq + (size_t)U * dr;
    sc = dk + (size_t)U * dr;
    dffn = sc + (size_t)U * C;
    dlist[m->config.rpt_layer - 1] = dffn;
    while (st->step < c.steps && !r) {
        const int64_t s = (int64_t)retrlm_rng_below(&st->rng, (uint64_t)tg->n_spans);
        const size_t off = (size_t)tg->span[s];
        const int *cand = tg->cand + (size_t)s * U * C;
        const float *gold = tg->gold + (size_t)s * U * C;
        const float frac = c.steps > 1 ? (float)st->step / (float)(c.steps - 1) : 0.0f;
        const float margin = c.margin + (c.max_margin - c.margin) * frac;
        const float p_gold = st->step < c.gold_steps
                                 ? c.gold_share * (1.0f - (float)st->step / (float)c.gold_steps)
                                 : 0.0f;
        float loss = 0.0f, rank = 0.0f;
        int u;
        retrlm_model_grad_in gin;
        retrlm__rpt_span(c.train, off, B, T, inp, tgt);
        if ((r = retrlm_model_rpt_embed(m, inp, B, T, q, k))) break;
        retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
        for (u = 0; u < U; u++) {
            const int use_gold = p_gold > 0.0f && retrlm_rng_float(&st->rng) < p_gold;
            int *pk = pick + (size_t)u * K;
            if (use_gold) retrlm__rpt_pick(cand + (size_t)u * C, gold + (size_t)u * C, C, K,
                                           &c.threshold, pk);
            else retrlm__rpt_pick(cand + (size_t)u * C, sc + (size_t)u * C, C, K, NULL, pk);
            retrlm__rpt_neighbours(c.train, off, mc, cand + (size_t)u * C, pk, K, R,
                                   nb + (size_t)u * K * R);
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nb, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            break;
        if ((r = retrlm_rpt_loss(q, k, U, dr, cand, gold, C, margin, c.threshold, c.aux_scale,
                                 NULL, &rank, dq, dk)))
            break;
        retrlm_model_zero_grad(m);
        if ((r = retrlm_model_rpt_embed_backward(m, dq, dk, dffn))) break;
        memset(&gin, 0, sizeof gin);
        gin.dlogits = m->logits;
        gin.dffn_in = dlist;
        if ((r = retrlm_model_backward(m, &gin))) break;
        retrlm_adamw_step(opt);
        if (c.rank_losses) c.rank_losses[st->step] = rank;
        r = retrlm__step_done(m, opt, st, loss, c.losses, c.steps, c.checkpoint,
                              c.checkpoint_every, c.progress, c.progress_user, "rpt");
    }
    RETRLM_FREE(inp);
    RETRLM_FREE(q);
    RETRLM_FREE(dlist);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_evaluate(retrlm_model *m, const int *tokens, size_t n,
                                             const retrlm_rpt_targets *tg, retrlm_rpt_pick pick,
                                             const float *scores, retrlm_rpt_eval *out) {
    int B, T, U, C, K, R, dr, mc, *inp = NULL, *tgt, *nb = NULL, *pk;
    float *q = NULL, *k = NULL, *sc = NULL;
    const float zero = 0.0f;
    int64_t s;
    double first = 0.0, best = 0.0, hit = 0.0;
    retrlm_result r;
    RETRLM_ASSERT(m && out);
    memset(out, 0, sizeof *out);
    if ((int)pick < RETRLM_RPT_OWN || (int)pick > RETRLM_RPT_SCORES || (pick == RETRLM_RPT_SCORES && !scores))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_evaluate: pick %d (SCORES needs scores)", (int)pick);
    if ((r = retrlm__rpt_check(m, tokens, n, tg, pick == RETRLM_RPT_OWN, "rpt_evaluate"))) return r;
    if (pick != RETRLM_RPT_NONE && (!m->config.retro_chunk || m->config.retro_chunk != tg->chunk ||
                                    2 * tg->chunk < m->config.retro_len))
        return retrlm__fail(RETRLM_ERR_ARG, "rpt_evaluate: neighbours need a RETRO model of chunk "
                            "%d reading at most 2 chunks", tg->chunk);
    B = tg->windows;
    T = tg->seq_len;
    mc = tg->chunk;
    U = B * T / mc;
    C = tg->cands;
    K = pick == RETRLM_RPT_NONE ? 1 : m->config.retro_k;
    R = pick == RETRLM_RPT_NONE ? 1 : m->config.retro_len;
    dr = m->config.rpt_dim;
    inp = (int *)retrlm__alloc((size_t)2 * B * T + (size_t)U * K, sizeof(int));
    if (pick != RETRLM_RPT_NONE) nb = (int *)retrlm__alloc((size_t)U * K * R, sizeof(int));
    if (pick == RETRLM_RPT_OWN) q = (float *)retrlm__alloc((size_t)2 * U * dr, sizeof(float));
    sc = (float *)retrlm__alloc((size_t)U * C, sizeof(float));
    if (!inp || !sc || (pick != RETRLM_RPT_NONE && !nb) || (pick == RETRLM_RPT_OWN && !q)) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_evaluate: no memory for a span");
        goto done;
    }
    tgt = inp + (size_t)B * T;
    pk = tgt + (size_t)B * T;
    if (q) k = q + (size_t)U * dr;
    for (s = 0; s < tg->n_spans && !r; s++) {
        const size_t off = (size_t)tg->span[s];
        const int *cand = tg->cand + (size_t)s * U * C;
        const float *gold = tg->gold + (size_t)s * U * C;
        int u, i;
        retrlm__rpt_span(tokens, off, B, T, inp, tgt);
        if (pick == RETRLM_RPT_OWN) {
            if ((r = retrlm_model_rpt_embed(m, inp, B, T, q, k))) break;
            retrlm__rpt_scores(q, k, cand, U, C, dr, sc);
        } else if (pick == RETRLM_RPT_SCORES) {
            for (i = 0; i < U * C; i++)
                sc[i] = cand[i] < 0 ? -INFINITY : scores[(size_t)s * U * C + (size_t)i];
        }
        for (u = 0; u < U; u++) {
            const int *cu = cand + (size_t)u * C;
            const float *gu = gold + (size_t)u * C;
            int *p = pk + (size_t)u * K, gbest = 0;
            if (pick == RETRLM_RPT_NONE) continue;
            if (pick == RETRLM_RPT_GOLD) retrlm__rpt_pick(cu, gu, C, K, &zero, p);
            else retrlm__rpt_pick(cu, sc + (size_t)u * C, C, K, NULL, p);
            retrlm__rpt_neighbours(tokens, off, mc, cu, p, K, R, nb + (size_t)u * K * R);
            if (gu[0] == -INFINITY) continue;
            for (i = 1; i < C; i++) if (cu[i] >= 0 && gu[i] > gu[gbest]) gbest = i;
            out->queries++;
            best += gu[gbest];
            if (pick == RETRLM_RPT_GOLD && p[0] < 0) { // no candidate helps: the oracle reads none
                hit += 1.0;
                continue;
            }
            first += gu[p[0]];
            hit += p[0] == gbest;
        }
        if ((r = retrlm_model_forward_retro(m, inp, B, T, NULL, nb, 0))) break;
        out->nats += retrlm_model_nll(m, tgt, NULL);
        out->tokens += (int64_t)B * T;
    }
    if (!r && out->queries) {
        out->first_gold = first / (double)out->queries;
        out->best_gold = best / (double)out->queries;
        out->first_is_best = hit / (double)out->queries;
    }
done:
    RETRLM_FREE(inp);
    RETRLM_FREE(nb);
    RETRLM_FREE(q);
    RETRLM_FREE(sc);
    return r;
}

RETRLM_API retrlm_result retrlm_rpt_targets_bytes(const retrlm_tokenizer *tok, const int *tokens, size_t n,
                                                  const retrlm_rpt_targets *t, uint64_t *bytes) {
    const size_t len = (size_t)t->windows * (size_t)t->seq_len;
    int64_t s;
    retrlm_result r;
    RETRLM_ASSERT(tok && tokens && t && bytes);
    *bytes = 0;
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_targets_bytes"))) return r;
    for (s = 0; s < t->n_spans; s++) {
        size_t b;
        if ((size_t)t->span[s] + len + 1 > n)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_targets_bytes: span %lld runs past the stream's %lu tokens",
                                (long long)s, (unsigned long)n);
        if ((r = retrlm_tokenizer_decode(tok, tokens + t->span[s] + 1, len, NULL, 0, &b))) return r;
        *bytes += b;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_rpt_bm25_scores(const retrlm_tokenizer *tok, const int *tokens,
                                                size_t n, const retrlm_rpt_targets *t,
                                                const retrlm_bm25_config *bm25, float *scores) {
    int U, C, u, c, j, got;
    int64_t s, *hid = NULL;
    float *hsc = NULL;
    char *txt = NULL;
    size_t cap = 0, len;
    retrlm_bm25_config bc = retrlm__bm25_passage_config(bm25); // chunks: passages of 2 m tokens
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(tok && tokens && t && scores);
    if ((r = retrlm__rpt_targets_valid(t, RETRLM_ERR_ARG, "rpt_bm25_scores"))) return r;
    U = t->windows * t->seq_len / t->chunk;
    C = t->cands;
    for (s = 0; s < t->n_spans; s++)
        if (t->span[s] < 0 || (size_t)t->span[s] + (size_t)U * t->chunk > n)
            return retrlm__fail(RETRLM_ERR_ARG, "rpt_bm25_scores: span %lld runs past the stream",
                                (long long)s);
    hid = (int64_t *)retrlm__alloc((size_t)U, sizeof(int64_t));
    hsc = (float *)retrlm__alloc((size_t)U, sizeof(float));
    if (!hid || !hsc) r = retrlm__fail(RETRLM_ERR_NOMEM, "rpt_bm25_scores: no memory");
    for (s = 0; s < t->n_spans && !r; s++) {
        retrlm_bm25 bm;
        const int *sp = tokens + t->span[s];
        if ((r = retrlm_bm25_init(&bm, &bc))) break;
        for (j = 0; j + 1 < U && !r; j++) // chunk j and its continuation
            if (!(r = retrlm__decode_grow(tok, sp + (size_t)j * t->chunk, (size_t)2 * t->chunk, &txt, &cap, &len)))
                r = retrlm_bm25_add(&bm, j, txt, len);
        if (!r) r = retrlm_bm25_commit(&bm);
        for (u = 0; u < U && !r; u++) {
            float *o = scores + ((size_t)s * U + u) * C;
            const int *cu = t->cand + ((size_t)s * U + u) * C;
            for (c = 0; c < C; c++) o[c] = -INFINITY;
            if (cu[0] < 0) continue;
            if ((r = retrlm__decode_grow(tok, sp + (size_t)u * t->chunk, (size_t)t->chunk, &txt, &cap, &len)) ||
                (r = retrlm_bm25_search(&bm, txt, len, U, 0, hid, hsc, &got)))
                break;
            for (c = 0; c < C; c++) {
                int h;
                if (cu[c] < 0) continue;
                o[c] = -1e30f; // shares no term: below every match, the earlier slot first
                for (h = 0; h < got; h++)
                    if (hid[h] == cu[c]) o[c] = hsc[h];
            }
        }
        retrlm_bm25_free(&bm);
    }
    RETRLM_FREE(hid);
    RETRLM_FREE(hsc);
    RETRLM_FREE(txt);
    return r;
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
#if defined(__clang__)
#pragma clang diagnostic pop
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
