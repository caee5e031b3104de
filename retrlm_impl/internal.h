/* internal.h - configuration, portability, OpenMP macros and the private declarations every
   fragment may use. It is the implementation's table of contents. */
#ifndef RETRLM__INTERNAL_H
#define RETRLM__INTERNAL_H
#include "retrlm.h"

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

/* the compiler's own x86 header: the kernels' FMA, int8 widening and SSE2 4x4 transposes;
   RETRLM__X86_SSE2 where SSE2 intrinsics may be used (the packing's transposes, AdamW's square
   roots, the SQ8 scans' widening) */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#ifdef __SSE2__
#define RETRLM__X86_SSE2 1
#endif
#endif
/* and aarch64's: AdamW's square roots (vsqrtq_f32), the SQ8 scans' widening (vmovl) */
#if defined(__aarch64__) && defined(__ARM_NEON) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>
#define RETRLM__ARM_NEON 1
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
#define RETRLM__ALWAYS_INLINE __inline__ __attribute__((always_inline))
#else
#define RETRLM__NOINLINE
#define RETRLM__ALWAYS_INLINE
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

/* The thread count for a loop of like steps (decoding, training) on a machine others share
   (core.c; the struct is in core.h): _start before a step sets it (the team or one thread),
   _stop after it; _done gives the caller its team back. _init (again) when
   t->team != retrlm__max_threads(); start, stop and done do nothing with t NULL. */
RETRLM__PRIVATE void retrlm__tuner_init(retrlm__tuner *t);
RETRLM__PRIVATE void retrlm__tuner_start(retrlm__tuner *t);
RETRLM__PRIVATE void retrlm__tuner_stop(retrlm__tuner *t);
RETRLM__PRIVATE void retrlm__tuner_record(retrlm__tuner *t, double dt); /* _stop's: dt seconds */
RETRLM__PRIVATE void retrlm__tuner_done(retrlm__tuner *t);

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
/* The index's scans (kernels.c, on the CPU's widest path): one query q against the m rows
   x + i ldx (a row's bits do not depend on the rows beside it). _f32: out[i] = q . x_i, or with
   l2 |q - x_i|^2. _codes: uint8 rows c_i, out[i] = q . c_i, or with a step row (d) the sum of
   (q - step c_i)^2. */
RETRLM__PRIVATE void retrlm__scan_f32(float *out, const float *q, const float *x, size_t ldx, int m, int d,
                                      int l2);
RETRLM__PRIVATE void retrlm__scan_codes(float *out, const float *q, const float *step, const uint8_t *c,
                                        size_t ldc, int m, int d);
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
