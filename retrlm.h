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

// The register tile follows the vector registers the compiler may use: MR x NR accumulators
// plus one row of b and one broadcast of a must fit, or the tile spills and runs 10x slower.
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
static void retrlm__matmul_pack(float *dst, retrlm__mat X, int R, int r0, int rc, int k0, int kc, int W) {
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
// Each row of accumulators is its own array and every row is written out by a macro, not a
// loop: the compiler then keeps them all in vector registers even at -O2 (a 2-D array indexed
// in a loop stays in memory, 10x slower).
#define RETRLM__ACC_DECL(r) float acc##r[RETRLM__NR] = {0};
#define RETRLM__ACC_ROW(r)                                                     \
    {                                                                         \
        const float ar = ap[r];                                               \
        RETRLM__SIMD for (j = 0; j < RETRLM__NR; j++) acc##r[j] += ar * bp[j]; \
    }
#define RETRLM__ACC_STORE(r)                                                   \
    if (r < mr) {                                                             \
        float *cr = c + (size_t)r * ldc;                                      \
        if (first && !acc_c)                                                  \
            for (j = 0; j < nr; j++) cr[j] = acc##r[j];                       \
        else                                                                  \
            for (j = 0; j < nr; j++) cr[j] += acc##r[j];                      \
        if (first && bias)                                                    \
            for (j = 0; j < nr; j++) cr[j] += bias[j];                        \
    }
#if RETRLM__MR == 8
#define RETRLM__ACC_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#elif RETRLM__MR == 6
#define RETRLM__ACC_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5)
#else
#define RETRLM__ACC_ALL(X) X(0) X(1) X(2) X(3)
#endif

static void retrlm__micro(int kc, const float *RETRLM__RESTRICT a, const float *RETRLM__RESTRICT b,
                          float *RETRLM__RESTRICT c, size_t ldc, int mr, int nr,
                          const float *bias, int first, int acc_c) {
    int j, p;
    RETRLM__ACC_ALL(RETRLM__ACC_DECL)
    // the whole cost of the multiply is here: MR broadcasts of a against NR-wide rows of b,
    // MR*NR independent accumulators so the FMA units never wait on one another
    for (p = 0; p < kc; p++) {
        const float *ap = a + (size_t)p * RETRLM__MR;
        const float *bp = b + (size_t)p * RETRLM__NR;
        RETRLM__ACC_ALL(RETRLM__ACC_ROW)
    }
    RETRLM__ACC_ALL(RETRLM__ACC_STORE)
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
    size_t per_thread, a_size;
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
    { // packing buffers sized to this product, not to the largest block: small matmuls (the
      // model's many) then take a small allocation that malloc serves from its free lists
        size_t mc = (size_t)RETRLM__MIN(RETRLM__MC, (M + RETRLM__MR - 1) / RETRLM__MR * RETRLM__MR);
        size_t nc = (size_t)RETRLM__MIN(RETRLM__NC, (N + RETRLM__NR - 1) / RETRLM__NR * RETRLM__NR);
        size_t kc = (size_t)RETRLM__MIN(RETRLM__KC, K);
        a_size = mc * kc;
        per_thread = a_size + kc * nc;
    }
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
        pb = pa + a_size;
        for (k0 = 0; k0 < K; k0 += RETRLM__KC) {
            int kc = RETRLM__MIN(RETRLM__KC, K - k0), ir, jr;
            retrlm__matmul_pack(pa, a, M, m0, mc, k0, kc, RETRLM__MR);
            retrlm__matmul_pack(pb, bt, N, n0, nc, k0, kc, RETRLM__NR);
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
