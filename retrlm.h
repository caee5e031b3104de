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
     index     flat and IVF vector indexes (IP, L2, cosine; f32, SQ8), k-means, .fvecs/.npy

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

#define RETRLM_KMEANS_RANDOM 0   /* initial centroids: distinct random training points */
#define RETRLM_KMEANS_PLUSPLUS 1 /* k-means++ (Arthur and Vassilvitskii 2007), D^2 sampling */

typedef struct retrlm_index_config {
    int      dim;          /* d > 0, required */
    int      metric;       /* retrlm_metric, default IP */
    int      storage;      /* retrlm_storage, default F32 */
    int      nlist;        /* 0: flat; > 0: IVF lists (needs train with >= nlist vectors) */
    int      nprobe;       /* IVF lists searched when the search does not say, default 1 */
    int      rerank;       /* SQ8: keep f32 too and re-score rerank * k candidates; 0: off */
    int      kmeans_iters; /* Lloyd iterations, default 10 */
    int      kmeans_init;  /* RETRLM_KMEANS_RANDOM (default) or RETRLM_KMEANS_PLUSPLUS */
    int      max_points_per_list; /* k-means trains on at most nlist * this points, default 256 */
    uint64_t seed;         /* sampling and initialisation, default 1234 */
    retrlm_progress_fn progress; /* optional: train ("kmeans") and add ("add") report; cancel */
    void    *progress_user;      /* passed to progress */
} retrlm_index_config;

typedef struct retrlm_index {
    int      dim;          /* d */
    int      metric;       /* retrlm_metric */
    int      storage;      /* retrlm_storage */
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
/* The file image in memory: *buf (free with retrlm_free), *size its bytes. */
RETRLM_API retrlm_result retrlm_index_save_memory(const retrlm_index *ix, void **buf,
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
                                       int metric, const retrlm_index_config *cfg);

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

// Sums run in RETRLM__LANES independent partial sums (one vector register, or a few), added up
// in a fixed order at the end: the loop vectorizes without -ffast-math or OpenMP, is not bound
// by the latency of one add chain, and gives the same bits on every run. No `omp simd` here:
// gcc then keeps the lane arrays in memory ("simd arrays") and runs at half the speed.
#define RETRLM__LANES 16

RETRLM_API float retrlm_dot(const float *a, const float *b, int n) {
    float acc[RETRLM__LANES] = {0}, s = 0.0f;
    int i = 0, j;
    for (; i + RETRLM__LANES <= n; i += RETRLM__LANES) {
        for (j = 0; j < RETRLM__LANES; j++) acc[j] += a[i + j] * b[i + j];
    }
    for (j = 0; j < RETRLM__LANES; j++) s += acc[j];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// out[r] = dot(a, b + r*ldb) for r < 4: four rows of b against one a, sharing the loads of a.
// Four separate lane arrays (not one 2-D array) so the compiler keeps each in a register.
RETRLM__NOINLINE static void retrlm__dot4(float *out, const float *a, const float *b, size_t ldb, int n) {
    float c0[RETRLM__LANES] = {0}, c1[RETRLM__LANES] = {0}, c2[RETRLM__LANES] = {0},
          c3[RETRLM__LANES] = {0};
    const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;
    float s0, s1, s2, s3;
    int i = 0, j, w;
    for (; i + RETRLM__LANES <= n; i += RETRLM__LANES) {
        for (j = 0; j < RETRLM__LANES; j++) {
            float aj = a[i + j];
            c0[j] += aj * b0[i + j];
            c1[j] += aj * b1[i + j];
            c2[j] += aj * b2[i + j];
            c3[j] += aj * b3[i + j];
        }
    }
    for (w = RETRLM__LANES / 2; w > 0; w /= 2) // a fixed tree: vector adds, not 64 scalar ones
        for (j = 0; j < w; j++) {
            c0[j] += c0[j + w];
            c1[j] += c1[j + w];
            c2[j] += c2[j + w];
            c3[j] += c3[j + w];
        }
    s0 = c0[0], s1 = c1[0], s2 = c2[0], s3 = c3[0];
    for (j = i; j < n; j++) {
        s0 += a[j] * b0[j];
        s1 += a[j] * b1[j];
        s2 += a[j] * b2[j];
        s3 += a[j] * b3[j];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
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

// Packs a block of X into panels of W lanes: dst (panels, kc, W), zero-padded past the last
// lane. Lane l of panel q is X's row r0 + q*W + l (rows < R exist), depth k0..k0+kc; element
// (r, k) is X.p[r * X.sr + k * X.sc]. The loop order follows the stride-1 direction so that
// reads are sequential whichever way the operand is stored.
static void retrlm__pack(float *dst, retrlm__mat X, int R, int r0, int rc, int k0, int kc, int W) {
    int q, l, p;
    for (q = 0; q < rc; q += W) {
        int lanes = RETRLM__MIN(W, RETRLM__MIN(rc - q, R - r0 - q));
        const float *base = X.p + (size_t)(r0 + q) * X.sr + (size_t)k0 * X.sc;
        if (lanes < 0) lanes = 0;
        if (X.sc == 1) { // rows are contiguous: read a row, scatter into its lane
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
// generation case (M = 1), bound by reading B once. Four rows of B at a time give four
// independent accumulators, so the loop is not bound by the latency of one FMA chain.
static void retrlm__matmul_rows(float *C, const float *A, const float *B, const float *bias,
                                int M, int N, int K, int acc_c) {
    // about 32 chunks: enough for a starved thread to hand work over, few enough to be cheap
    int nb, chunk = RETRLM__MAX(64, (N / 32 + 3) & ~3), nblocks = (N + chunk - 1) / chunk;
    RETRLM__PARALLEL_FOR_IF((size_t)N * (size_t)K > 65536)
    for (nb = 0; nb < nblocks; nb++) {
        int n, m, n1 = RETRLM__MIN(N, nb * chunk + chunk);
        for (m = 0; m < M; m++) {
            const float *a = A + (size_t)m * K;
            float *c = C + (size_t)m * N, v[4];
            for (n = nb * chunk; n < n1; n += 4) {
                const float *b0 = B + (size_t)n * K;
                int j, rows = RETRLM__MIN(4, n1 - n);
                if (rows == 4) retrlm__dot4(v, a, b0, (size_t)K, K);
                else
                    for (j = 0; j < rows; j++) v[j] = retrlm_dot(a, b0 + (size_t)j * K, K);
                for (j = 0; j < rows; j++) {
                    float x = v[j] + (bias ? bias[n + j] : 0.0f);
                    c[n + j] = acc_c ? c[n + j] + x : x;
                }
            }
        }
    }
}

RETRLM_API retrlm_result retrlm_matmul(float *C, const float *A, const float *B,
                                       const float *bias, int M, int N, int K, int flags) {
    retrlm__mat a, bt;
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
    // views: A as (M,K), Bᵀ as (N,K); both are packed the same way
    a.p = A;
    if (flags & RETRLM_MATMUL_A_KM) { a.sr = 1; a.sc = (size_t)M; }
    else { a.sr = (size_t)K; a.sc = 1; }
    bt.p = B;
    if (flags & RETRLM_MATMUL_B_KN) { bt.sr = 1; bt.sc = (size_t)N; }
    else { bt.sr = (size_t)K; bt.sc = 1; }

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
            retrlm__pack(pa, a, M, m0, mc, k0, kc, RETRLM__MR);
            retrlm__pack(pb, bt, N, n0, nc, k0, kc, RETRLM__NR);
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
                                            int metric, const retrlm_index *st) {
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
                                       int metric, const retrlm_index_config *cfg) {
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

RETRLM_API retrlm_result retrlm_index_add(retrlm_index *ix, const float *x, size_t n, int dim,
                                          const int64_t *ids) {
    const int d = ix->dim, keep = retrlm__keeps_f32(ix), sq8 = ix->storage == RETRLM_STORAGE_SQ8;
    size_t total, i, nd;
    int64_t next;
    float *xn = NULL, *vec = NULL;
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
    next = ix->next_id;
    if (ids) {
        for (i = 0; i < n; i++) {
            if (ids[i] < 0)
                return retrlm__fail(RETRLM_ERR_ARG, "index add: id %lld at %lu is negative; ids must be >= 0",
                                    (long long)ids[i], (unsigned long)i);
            if (ids[i] >= next) next = ids[i] == INT64_MAX ? INT64_MAX : ids[i] + 1;
        }
    } else {
        if (next > INT64_MAX - (int64_t)n) return retrlm__fail(RETRLM_ERR_RANGE, "index add: ids would overflow int64");
        next += (int64_t)n;
    }
    if (ix->n > SIZE_MAX / 2 - n || retrlm__mul_overflows(ix->n + n, (size_t)d * sizeof(float), &nd))
        return retrlm__fail(RETRLM_ERR_NOMEM, "index add: %lu + %lu vectors are too many", (unsigned long)ix->n, (unsigned long)n);
    if ((r = retrlm__index_own(ix)) != RETRLM_OK) return r;
    total = ix->n + n;

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

    if (!ix->nlist) { // flat: append
        int64_t *ids2 = (int64_t *)retrlm__realloc((void *)ix->ids, total, sizeof(int64_t));
        if (!ids2) { r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory"); goto done; }
        ix->ids = ids2;
        if (keep) {
            vec = (float *)retrlm__realloc((void *)ix->vectors, total, (size_t)d * sizeof(float));
            if (!vec) { r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory"); goto done; }
            ix->vectors = vec;
            memcpy(vec + ix->n * (size_t)d, x, n * (size_t)d * sizeof(float));
            vec = NULL;
        }
        if (sq8) {
            uint8_t *c2 = (uint8_t *)retrlm__realloc((void *)ix->codes, total, (size_t)d);
            if (!c2) { r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory"); goto done; }
            ix->codes = c2;
            memcpy(c2 + ix->n * (size_t)d, codes, n * (size_t)d);
        }
        memcpy(ids2 + ix->n, nids, n * sizeof(int64_t));
    } else { // IVF: rebuild the contiguous lists, old rows of a list first, then the new ones
        const int L = ix->nlist;
        uint64_t *off2 = (uint64_t *)retrlm__alloc((size_t)L + 1, sizeof(uint64_t));
        size_t *nstart = (size_t *)retrlm__calloc((size_t)L + 1, sizeof(size_t));
        size_t *perm = (size_t *)retrlm__alloc(n, sizeof(size_t));
        int64_t *ids2 = (int64_t *)retrlm__alloc(total, sizeof(int64_t));
        uint8_t *c2 = sq8 ? (uint8_t *)retrlm__alloc(total, (size_t)d) : NULL;
        long l;
        vec = keep ? (float *)retrlm__alloc(total, (size_t)d * sizeof(float)) : NULL;
        if (!off2 || !nstart || !perm || !ids2 || (sq8 && !c2) || (keep && !vec)) {
            RETRLM_FREE(off2);
            RETRLM_FREE(nstart);
            RETRLM_FREE(perm);
            RETRLM_FREE(ids2);
            RETRLM_FREE(c2);
            r = retrlm__fail(RETRLM_ERR_NOMEM, "index add: no memory to rebuild the lists");
            goto done;
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
        vec = NULL;
        RETRLM_FREE(nstart);
        RETRLM_FREE(perm);
    }
    ix->n = total;
    ix->next_id = next;
    r = RETRLM_OK;
done:
    RETRLM_FREE(xn);
    RETRLM_FREE(vec);
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

RETRLM_API retrlm_result retrlm_index_save_memory(const retrlm_index *ix, void **buf,
                                                  size_t *size) {
    retrlm_writer w;
    retrlm_result r;
    RETRLM_ASSERT(ix && buf && size);
    *buf = NULL;
    *size = 0;
    memset(&w, 0, sizeof w);
    if ((r = retrlm__index_writer(ix, &w)) == RETRLM_OK && (r = retrlm_writer_save_memory(&w, NULL, 0, size)) == RETRLM_OK) {
        *buf = retrlm__alloc(*size, 1);
        if (!*buf) r = retrlm__fail(RETRLM_ERR_NOMEM, "index save: no memory for %lu bytes", (unsigned long)*size);
        else if ((r = retrlm_writer_save_memory(&w, *buf, *size, size)) != RETRLM_OK) {
            RETRLM_FREE(*buf);
            *buf = NULL;
        }
    }
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
    cfg.metric = (int)meta[2];
    cfg.storage = (int)meta[3];
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
static retrlm_result retrlm__slurp(const char *path, unsigned char **buf, size_t *size) {
    FILE *f = fopen(path, "rb");
    long len;
    *buf = NULL;
    *size = 0;
    if (!f) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_IO, "%s: cannot find its size", path);
    }
    *buf = (unsigned char *)retrlm__alloc((size_t)len, 1);
    if (!*buf) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %ld bytes", path, len);
    }
    *size = fread(*buf, 1, (size_t)len, f);
    fclose(f);
    if (*size != (size_t)len) {
        RETRLM_FREE(*buf);
        *buf = NULL;
        return retrlm__fail(RETRLM_ERR_IO, "%s: read error", path);
    }
    return RETRLM_OK;
}

// writes n records of dim 4-byte elements, each after its int32 dim (header NULL: .npy data)
static retrlm_result retrlm__write_file(const char *path, const void *head, size_t head_bytes,
                                        const void *x, size_t n, int dim, int per_record_dim) {
    FILE *f;
    unsigned char *rec;
    size_t i, rb = 4 * (size_t)dim + (per_record_dim ? 4 : 0);
    int ok = 1;
    if (!path || dim <= 0 || (n && !x)) return retrlm__fail(RETRLM_ERR_ARG, "write: bad arguments (dim %d)", dim);
    rec = (unsigned char *)retrlm__alloc(rb, 1);
    if (!rec) return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory", path);
    f = fopen(path, "wb");
    if (!f) {
        RETRLM_FREE(rec);
        return retrlm__fail(RETRLM_ERR_IO, "%s: cannot create", path);
    }
    if (head_bytes && fwrite(head, 1, head_bytes, f) != head_bytes) ok = 0;
    for (i = 0; i < n && ok; i++) {
        const unsigned char *src = (const unsigned char *)x + i * 4 * (size_t)dim;
        unsigned char *dst = rec;
        int j;
        if (per_record_dim) {
            retrlm__put_u32(rec, (uint32_t)dim);
            dst += 4;
        }
        for (j = 0; j < dim; j++) {
            uint32_t v;
            memcpy(&v, src + 4 * (size_t)j, 4);
            retrlm__put_u32(dst + 4 * (size_t)j, v);
        }
        if (fwrite(rec, 1, rb, f) != rb) ok = 0;
    }
    if (fclose(f) != 0) ok = 0;
    RETRLM_FREE(rec);
    return ok ? RETRLM_OK : retrlm__fail(RETRLM_ERR_IO, "%s: write error", path);
}

RETRLM_API retrlm_result retrlm_fvecs_read(const char *path, float **out, size_t *n, int *dim) {
    unsigned char *buf;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = retrlm_fvecs_read_memory(buf, size, out, n, dim);
    RETRLM_FREE(buf);
    return r;
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
    unsigned char *buf;
    size_t size;
    retrlm_result r;
    RETRLM_ASSERT(out && n && dim);
    *out = NULL;
    if ((r = retrlm__slurp(path, &buf, &size)) != RETRLM_OK) return r;
    r = retrlm_npy_read_memory(buf, size, out, n, dim);
    RETRLM_FREE(buf);
    return r;
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
