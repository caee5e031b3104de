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
     model     transformer LM / encoder, forward, backward, AdamW, training, generation, safetensors

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

   Shapes: B sequences of T tokens (B <= max_batch, T <= max_seq_len), N = B*T tokens, row-major;
   V vocabulary, D dim, F ffn_dim, L n_layers, H n_heads. */

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
    float    rope_theta;    /* rotary base; default 10000 */
    float    norm_eps;      /* RMSNorm epsilon; default 1e-5 */
    float    init_std;      /* std of the normal weight init; default 0.02 */
    uint64_t seed;          /* weight init seed (0 is a seed) */
} retrlm_model_config;

/* The parameter tensors, in the order they lie in the parameter block: the matrices (weight
   decay applies) first, then the RMSNorm gains. Per-layer tensors are stacked over layers. */
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
    RETRLM_T_ATTN_NORM,    /* (L, D) RMSNorm gain before attention */
    RETRLM_T_FFN_NORM,     /* (L, D) RMSNorm gain before the feed-forward */
    RETRLM_T_FINAL_NORM,   /* (D) final RMSNorm gain */
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
    /* private */
    float  *acts_;                       /* (n_acts_) all activations, one block */
    size_t  n_acts_;
    float  *work_;                       /* backward and decode scratch, one block */
    int    *tokens_;                     /* (max_batch * max_seq_len) inputs of the last forward */
    int    *lengths_;                    /* (max_batch) */
    int64_t *ids_;                       /* (V) sampling scratch */
} retrlm_model;

/* Fills in defaults, checks the shapes, allocates everything and initialises the weights
   (normal(0, init_std); wo and w_down scaled by 1/sqrt(2L); gains 1). ERR_ARG on bad shapes. */
RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg);
RETRLM_API void retrlm_model_free(retrlm_model *m);
/* Per-layer view of a stacked tensor: its layer-l slice in params (or grads with grad = 1). */
RETRLM_API float *retrlm_model_tensor_ptr(const retrlm_model *m, retrlm_model_tensor t, int layer,
                                          int grad);

#define RETRLM_FORWARD_NO_LOGITS 1 /* skip the output projection (encoders, hidden states only) */
/* Runs the model on tokens (B, T), ids in [0, V). lengths (B) or NULL (= T): positions at and
   past lengths[b] are padding, never attended to (their outputs are computed but meaningless).
   Keeps everything backward needs. ERR_ARG for a bad shape or token id. */
RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags);
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
   returns 2 (1 if the model has no gains). */
RETRLM_API int retrlm_model_param_groups(const retrlm_model *m, float lr, float weight_decay,
                                         retrlm_adamw_group out[2]);

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
    void      *user;
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

/* ---- checkpoints: container kind "model"; sections config, params, and when saved with an
   optimiser and state: adamw_m, adamw_v, adamw_step, train_step, rng */
#ifndef RETRLM_NO_STDIO
/* opt and state may be NULL (weights only). */
RETRLM_API retrlm_result retrlm_model_save(const retrlm_model *m, const retrlm_adamw *opt,
                                           const retrlm_lm_train_state *state, const char *path);
/* Initialises m from the file (its config; cfg_over's nonzero max_batch and max_seq_len replace
   the saved ones when cfg_over is not NULL) and loads the parameters. */
RETRLM_API retrlm_result retrlm_model_load(retrlm_model *m, const char *path,
                                           const retrlm_model_config *cfg_over);
/* Restores an optimiser made for this model (same sizes) and the training state. */
RETRLM_API retrlm_result retrlm_model_load_state(retrlm_adamw *opt, retrlm_lm_train_state *state,
                                                 const char *path);
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
   [0, pos) and stores its keys/values at pos: m->step_logits, m->step_hidden. */
RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos);
/* Draws a token from logits (V) (not modified). */
RETRLM_API int retrlm_model_sample(retrlm_model *m, const float *logits,
                                   const retrlm_sampler *s, retrlm_rng *rng);
/* Feeds prompt (n_prompt >= 1), then samples n_new tokens into out; stops early at max_seq_len.
   *n_out (may be NULL) gets the number generated. */
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
/* ---- retrlm_impl/model.c ---- */

// ---------------------------------------------------------------------------------------------
// model: the transformer. Layout of the two private blocks (Nm = max_batch * max_seq_len):
//   acts_: rope cos, sin (max_seq_len, hd/2) | resid (L+1, Nm, D) | L layers, each
//          ln1 (Nm,D) rstd1 (Nm) q k v (Nm,D) att (max_batch,H,max_seq,max_seq) atty mid ln2
//          (Nm,D) rstd2 (Nm) gate up act (Nm,F) | lnf (Nm,D) rstdf (Nm) tokloss (Nm) |
//          logits (Nm,V)
//   work_: backward dx dln datty dq dk dv dtmp (Nm,D) dact dgate (Nm,F) datt (as att) |
//          decode kcache vcache (L, max_seq, D), x xn q y o hid (D), gate up (F),
//          att (H, max_seq), logits probs scores (V)
// A forward of B x T tokens uses the first B*T rows of every (Nm, .) slot.

#define RETRLM__MAX_DIM (1 << 24)
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

static size_t retrlm__nmax(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->max_seq_len;
}

static size_t retrlm__att_size(const retrlm_model_config *c) {
    return (size_t)c->max_batch * (size_t)c->n_heads * (size_t)c->max_seq_len *
           (size_t)c->max_seq_len;
}

static size_t retrlm__layer_stride(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    return 7 * nm * d + 2 * nm + 3 * nm * f + retrlm__att_size(c);
}

static void retrlm__layer_acts(const retrlm_model *m, int l, retrlm__acts *a) {
    const retrlm_model_config *c = &m->config;
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t hd2 = (size_t)(c->dim / c->n_heads / 2);
    float *p = m->acts_ + 2 * (size_t)c->max_seq_len * hd2 + (size_t)(c->n_layers + 1) * nm * d +
               (size_t)l * retrlm__layer_stride(c);
    a->ln1 = p; p += nm * d;
    a->rstd1 = p; p += nm;
    a->q = p; p += nm * d;
    a->k = p; p += nm * d;
    a->v = p; p += nm * d;
    a->att = p; p += retrlm__att_size(c);
    a->atty = p; p += nm * d;
    a->mid = p; p += nm * d;
    a->ln2 = p; p += nm * d;
    a->rstd2 = p; p += nm;
    a->gate = p; p += nm * f;
    a->up = p; p += nm * f;
    a->act = p;
}

static float *retrlm__rope_cos(const retrlm_model *m) { return m->acts_; }
static float *retrlm__rope_sin(const retrlm_model *m) {
    return m->acts_ + (size_t)m->config.max_seq_len * (size_t)(m->config.dim / m->config.n_heads / 2);
}
static float *retrlm__resid(const retrlm_model *m, int l) {
    const retrlm_model_config *c = &m->config;
    return m->acts_ + 2 * (size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2) +
           (size_t)l * retrlm__nmax(c) * (size_t)c->dim;
}
static float *retrlm__lnf(const retrlm_model *m) {
    const retrlm_model_config *c = &m->config;
    return retrlm__resid(m, 0) + (size_t)(c->n_layers + 1) * retrlm__nmax(c) * (size_t)c->dim +
           (size_t)c->n_layers * retrlm__layer_stride(c);
}
static float *retrlm__rstdf(const retrlm_model *m) {
    return retrlm__lnf(m) + retrlm__nmax(&m->config) * (size_t)m->config.dim;
}
static float *retrlm__tokloss(const retrlm_model *m) {
    return retrlm__rstdf(m) + retrlm__nmax(&m->config);
}
static float *retrlm__logits(const retrlm_model *m) {
    return retrlm__tokloss(m) + retrlm__nmax(&m->config);
}
static size_t retrlm__acts_size(const retrlm_model_config *c) {
    size_t nm = retrlm__nmax(c);
    return 2 * (size_t)c->max_seq_len * (size_t)(c->dim / c->n_heads / 2) +
           (size_t)(c->n_layers + 1) * nm * (size_t)c->dim +
           (size_t)c->n_layers * retrlm__layer_stride(c) + nm * (size_t)c->dim + 2 * nm +
           nm * (size_t)c->vocab_size;
}

static size_t retrlm__work_layout(const retrlm_model_config *c, float *base, retrlm__work *w) {
    size_t nm = retrlm__nmax(c), d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t cache = (size_t)c->n_layers * (size_t)c->max_seq_len * d, v = (size_t)c->vocab_size;
    size_t off = 0;
    retrlm__work tmp;
    if (!w) w = &tmp;
#define RETRLM__TAKE(field, n) (w->field = base ? base + off : NULL, off += (n))
    RETRLM__TAKE(dx, nm * d);
    RETRLM__TAKE(dln, nm * d);
    RETRLM__TAKE(datty, nm * d);
    RETRLM__TAKE(dq, nm * d);
    RETRLM__TAKE(dk, nm * d);
    RETRLM__TAKE(dv, nm * d);
    RETRLM__TAKE(dtmp, nm * d);
    RETRLM__TAKE(dact, nm * f);
    RETRLM__TAKE(dgate, nm * f);
    RETRLM__TAKE(datt, retrlm__att_size(c));
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

// tensor sizes (floats) of a resolved config
static void retrlm__tensor_sizes(const retrlm_model_config *c, size_t *sz) {
    size_t v = (size_t)c->vocab_size, d = (size_t)c->dim, f = (size_t)c->ffn_dim;
    size_t l = (size_t)c->n_layers;
    sz[RETRLM_T_EMBED] = v * d;
    sz[RETRLM_T_LM_HEAD] = c->untied ? v * d : 0;
    sz[RETRLM_T_WQ] = sz[RETRLM_T_WK] = sz[RETRLM_T_WV] = sz[RETRLM_T_WO] = l * d * d;
    sz[RETRLM_T_W_GATE] = sz[RETRLM_T_W_UP] = sz[RETRLM_T_W_DOWN] = l * f * d;
    sz[RETRLM_T_ATTN_NORM] = sz[RETRLM_T_FFN_NORM] = l * d;
    sz[RETRLM_T_FINAL_NORM] = d;
}

// fills defaults into c and checks it; the estimate (in floats, double) guards every size product
static retrlm_result retrlm__resolve_config(retrlm_model_config *c) {
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
    if (t == RETRLM_T_EMBED || t == RETRLM_T_LM_HEAD || t == RETRLM_T_FINAL_NORM) return base;
    RETRLM_ASSERT(layer >= 0 && layer < c->n_layers);
    per = m->tensor_size[t] / (size_t)c->n_layers;
    return base + (size_t)layer * per;
}

RETRLM_API void retrlm_model_free(retrlm_model *m) {
    if (!m) return;
    RETRLM_FREE(m->params);
    RETRLM_FREE(m->grads);
    RETRLM_FREE(m->acts_);
    RETRLM_FREE(m->work_);
    RETRLM_FREE(m->tokens_);
    RETRLM_FREE(m->lengths_);
    RETRLM_FREE(m->ids_);
    memset(m, 0, sizeof *m);
}

// allocates everything for a resolved config; weights left zero
static retrlm_result retrlm__model_alloc(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_model_config c = *cfg;
    retrlm_result r;
    size_t off = 0, nwork;
    int t, i, hd2;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__resolve_config(&c)) != RETRLM_OK) return r;
    m->config = c;
    retrlm__tensor_sizes(&c, m->tensor_size);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        if (t == RETRLM_T_ATTN_NORM) m->n_decay = off;
        off += m->tensor_size[t];
    }
    m->n_params = off;
    m->params = (float *)retrlm__calloc(m->n_params, sizeof(float));
    m->grads = (float *)retrlm__calloc(m->n_params, sizeof(float));
    m->n_acts_ = retrlm__acts_size(&c);
    m->acts_ = (float *)retrlm__calloc(m->n_acts_, sizeof(float));
    nwork = retrlm__work_layout(&c, NULL, NULL);
    m->work_ = (float *)retrlm__calloc(nwork, sizeof(float));
    m->tokens_ = (int *)retrlm__calloc(retrlm__nmax(&c), sizeof(int));
    m->lengths_ = (int *)retrlm__calloc((size_t)c.max_batch, sizeof(int));
    m->ids_ = (int64_t *)retrlm__calloc((size_t)c.vocab_size, sizeof(int64_t));
    if (!m->params || !m->grads || !m->acts_ || !m->work_ || !m->tokens_ || !m->lengths_ ||
        !m->ids_) {
        retrlm_model_free(m);
        return retrlm__fail(RETRLM_ERR_NOMEM, "model: no memory for %lu parameters and %lu "
                            "activations", (unsigned long)off, (unsigned long)nwork);
    }
    off = 0;
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        m->param[t] = m->params + off;
        m->grad[t] = m->grads + off;
        off += m->tensor_size[t];
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

RETRLM_API retrlm_result retrlm_model_init(retrlm_model *m, const retrlm_model_config *cfg) {
    retrlm_result r;
    retrlm_rng rng;
    size_t i;
    int t;
    RETRLM_ASSERT(m && cfg);
    if ((r = retrlm__model_alloc(m, cfg)) != RETRLM_OK) return r;
    retrlm_rng_seed(&rng, m->config.seed);
    for (t = 0; t < RETRLM_T_COUNT; t++) {
        float std = m->config.init_std, *p = m->param[t];
        if (t >= RETRLM_T_ATTN_NORM) {
            for (i = 0; i < m->tensor_size[t]; i++) p[i] = 1.0f;
            continue;
        }
        if (t == RETRLM_T_WO || t == RETRLM_T_W_DOWN)
            std /= (float)sqrt(2.0 * m->config.n_layers);
        for (i = 0; i < m->tensor_size[t]; i++) p[i] = std * retrlm_rng_normal(&rng);
    }
    return RETRLM_OK;
}

RETRLM_API void retrlm_model_zero_grad(retrlm_model *m) {
    memset(m->grads, 0, m->n_params * sizeof(float));
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

// act = silu(gate) * up, n elements
static void retrlm__swiglu_forward(float *act, const float *gate, const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_IF(n > RETRLM__PAR_ELEMS / 2)
    for (i = 0; i < nn; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// dgate, dup (set) from dact; dup may be dact
static void retrlm__swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                                    const float *up, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    RETRLM__PARALLEL_FOR_IF(n > RETRLM__PAR_ELEMS / 2)
    for (i = 0; i < nn; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), da = dact[i];
        dgate[i] = da * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] = da * g * sg;
    }
}

// ---------------------------------------------------------------------------------------------
// forward / backward of the whole model

RETRLM_API retrlm_result retrlm_model_forward(retrlm_model *m, const int *tokens, int B, int T,
                                              const int *lengths, int flags) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    int i, l, N;
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
    memcpy(m->tokens_, tokens, (size_t)N * sizeof(int));
    m->B = B;
    m->T = T;
    m->lengths = m->lengths_;
    m->hidden = retrlm__lnf(m);
    m->logits = NULL;
    {
        float *x0 = retrlm__resid(m, 0);
        for (i = 0; i < N; i++)
            memcpy(x0 + (size_t)i * D, m->param[RETRLM_T_EMBED] + (size_t)tokens[i] * D,
                   (size_t)D * sizeof(float));
    }
    for (l = 0; l < c->n_layers; l++) {
        retrlm__acts a;
        float *x = retrlm__resid(m, l), *xo = retrlm__resid(m, l + 1);
        retrlm__layer_acts(m, l, &a);
        retrlm__rmsnorm_forward(a.ln1, a.rstd1, x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm_matmul(a.q, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, N, D, D, 0)) ||
            (r = retrlm_matmul(a.k, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), NULL, N, D, D, 0)) ||
            (r = retrlm_matmul(a.v, a.ln1, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), NULL, N, D, D, 0)))
            return r;
        retrlm__rope(a.q, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__rope(a.k, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 0);
        retrlm__attention_forward(a.atty, a.att, a.q, a.k, a.v, m->lengths_, B, T, H, hd,
                                  !c->bidirectional);
        memcpy(a.mid, x, (size_t)N * D * sizeof(float));
        if ((r = retrlm_matmul(a.mid, a.atty, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, N, D,
                               D, RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_forward(a.ln2, a.rstd2, a.mid, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0),
                                N, D, c->norm_eps);
        if ((r = retrlm_matmul(a.gate, a.ln2, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, N,
                               F, D, 0)) ||
            (r = retrlm_matmul(a.up, a.ln2, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, N, F,
                               D, 0)))
            return r;
        retrlm__swiglu_forward(a.act, a.gate, a.up, (size_t)N * F);
        memcpy(xo, a.mid, (size_t)N * D * sizeof(float));
        if ((r = retrlm_matmul(xo, a.act, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, N, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(retrlm__lnf(m), retrlm__rstdf(m), retrlm__resid(m, c->n_layers),
                            m->param[RETRLM_T_FINAL_NORM], N, D, c->norm_eps);
    if (!(flags & RETRLM_FORWARD_NO_LOGITS)) {
        const float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        if ((r = retrlm_matmul(retrlm__logits(m), retrlm__lnf(m), wout, NULL, N, V, D, 0))) return r;
        m->logits = retrlm__logits(m);
    }
    return RETRLM_OK;
}

RETRLM_API const float *retrlm_model_ffn_input(const retrlm_model *m, int layer) {
    retrlm__acts a;
    RETRLM_ASSERT(layer >= 0 && layer < m->config.n_layers);
    retrlm__layer_acts(m, layer, &a);
    return a.ln2;
}

RETRLM_API retrlm_result retrlm_model_backward(retrlm_model *m, const retrlm_model_grad_in *g) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const int B = m->B, T = m->T, N = B * T;
    const int AB = RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE;
    retrlm__work w;
    retrlm_result r;
    int l, i;
    RETRLM_ASSERT(m && g && N > 0);
    retrlm__get_work(m, &w);
    // head: dlnf = dlogits · Wout + dhidden; dWout += dlogitsᵀ · lnf
    memset(w.dln, 0, (size_t)N * D * sizeof(float));
    if (g->dlogits) {
        float *wout = c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED];
        float *gout = c->untied ? m->grad[RETRLM_T_LM_HEAD] : m->grad[RETRLM_T_EMBED];
        if ((r = retrlm_matmul(w.dln, g->dlogits, wout, NULL, N, D, V, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(gout, g->dlogits, retrlm__lnf(m), NULL, V, D, N, AB)))
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
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 1), w.dx, a.act, NULL, D, F,
                               N, AB)) ||
            (r = retrlm_matmul(w.dact, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, N, F,
                               D, RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__swiglu_backward(w.dgate, w.dact, w.dact, a.gate, a.up, (size_t)N * F);
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 1), w.dgate, a.ln2, NULL, F,
                               D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 1), w.dact, a.ln2, NULL, F, D,
                               N, AB)) ||
            (r = retrlm_matmul(w.dln, w.dgate, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, N,
                               D, F, RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(w.dln, w.dact, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, N, D,
                               F, RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)))
            return r;
        if (g->dffn_in && g->dffn_in[l]) {
            const float *e = g->dffn_in[l];
            for (i = 0; i < N * D; i++) w.dln[i] += e[i];
        }
        retrlm__rmsnorm_backward(w.dx, w.dtmp, w.dln, a.mid,
                                 retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), a.rstd2, N, D, 1);
        retrlm__sum_rows(retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 1), w.dtmp, N, D);
        // attention: mid = x + atty · Woᵀ
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 1), w.dx, a.atty, NULL, D, D, N,
                               AB)) ||
            (r = retrlm_matmul(w.datty, w.dx, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN)))
            return r;
        retrlm__attention_backward(w.dq, w.dk, w.dv, w.datt, w.datty, a.att, a.q, a.k, a.v,
                                   m->lengths_, B, T, H, hd, !c->bidirectional);
        retrlm__rope(w.dq, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        retrlm__rope(w.dk, N, T, 0, H, hd, retrlm__rope_cos(m), retrlm__rope_sin(m), 1);
        if ((r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 1), w.dq, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 1), w.dk, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 1), w.dv, a.ln1, NULL, D, D, N, AB)) ||
            (r = retrlm_matmul(w.dln, w.dq, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN)) ||
            (r = retrlm_matmul(w.dln, w.dk, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0), NULL, N, D, D,
                               RETRLM_MATMUL_B_KN | RETRLM_MATMUL_ACCUMULATE)) ||
            (r = retrlm_matmul(w.dln, w.dv, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0), NULL, N, D, D,
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
    RETRLM_ASSERT(o && groups && n_groups >= 1);
    memset(o, 0, sizeof *o);
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

// ---------------------------------------------------------------------------------------------
// training loop

RETRLM_API void retrlm_lm_train_state_init(retrlm_lm_train_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    retrlm_rng_seed(&s->rng, seed);
}

RETRLM_API retrlm_result retrlm_lm_bits_per_byte(retrlm_model *m, const int *tokens, size_t n,
                                                 size_t n_bytes, int seq_len, double *bpb) {
    const int T = seq_len > 0 ? RETRLM__MIN(seq_len, m->config.max_seq_len) : m->config.max_seq_len;
    const int Bm = m->config.max_batch;
    size_t nwin, w0;
    double nats;
    int *inp, *tgt;
    retrlm_result r = RETRLM_OK;
    RETRLM_ASSERT(m && tokens && bpb);
    if (n < 1 || n_bytes < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "lm_bits_per_byte: %lu tokens, %lu bytes: need >= 1",
                            (unsigned long)n, (unsigned long)n_bytes);
    nats = log((double)m->config.vocab_size); // the first token, predicted from nothing
    nwin = (n - 1 + (size_t)T - 1) / (size_t)T;
    inp = (int *)retrlm__alloc((size_t)Bm * T, 2 * sizeof(int));
    if (!inp) return retrlm__fail(RETRLM_ERR_NOMEM, "lm_bits_per_byte: no memory");
    tgt = inp + (size_t)Bm * T;
    for (w0 = 0; w0 < nwin && !r; w0 += (size_t)Bm) {
        int B = (int)RETRLM__MIN((size_t)Bm, nwin - w0), b, t;
        for (b = 0; b < B; b++)
            for (t = 0; t < T; t++) {
                size_t pos = (w0 + (size_t)b) * (size_t)T + (size_t)t;
                int valid = pos + 1 < n;
                inp[b * T + t] = valid ? tokens[pos] : 0;
                tgt[b * T + t] = valid ? tokens[pos + 1] : -1;
            }
        if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) == RETRLM_OK)
            nats += retrlm_model_nll(m, tgt, NULL);
    }
    RETRLM_FREE(inp);
    if (r) return r;
    *bpb = nats / log(2.0) / (double)n_bytes;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_lm_train(retrlm_model *m, retrlm_adamw *opt,
                                         const retrlm_lm_train_config *cfg,
                                         retrlm_lm_train_state *st) {
    const int B = cfg->batch > 0 ? cfg->batch : m->config.max_batch;
    const int T = cfg->seq_len > 0 ? cfg->seq_len : m->config.max_seq_len;
    retrlm_model_grad_in gin;
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
    memset(&gin, 0, sizeof gin);
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
        if ((r = retrlm_model_forward(m, inp, B, T, NULL, 0)) ||
            (r = retrlm_model_lm_loss(m, tgt, &loss, NULL)))
            break;
        retrlm_model_zero_grad(m);
        gin.dlogits = m->logits;
        if ((r = retrlm_model_backward(m, &gin))) break;
        retrlm_adamw_step(opt);
        if (cfg->losses) cfg->losses[st->step] = loss;
        st->last_loss = loss;
        st->step++;
        final = st->step == cfg->steps;
        if (cfg->valid && cfg->n_valid > 0 &&
            (final || (cfg->eval_every > 0 && st->step % cfg->eval_every == 0))) {
            if ((r = retrlm_lm_bits_per_byte(m, cfg->valid, cfg->n_valid, cfg->valid_bytes, T,
                                             &st->last_valid_bpb)))
                break;
            if ((r = retrlm__progress(cfg->progress, cfg->user, "valid", (double)st->step,
                                      (double)cfg->steps)))
                break;
        }
#ifndef RETRLM_NO_STDIO
        if (cfg->checkpoint &&
            (final || (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0)) &&
            (r = retrlm_model_save(m, opt, st, cfg->checkpoint)))
            break;
#endif
        r = retrlm__progress(cfg->progress, cfg->user, "train", (double)st->step, (double)cfg->steps);
    }
    RETRLM_FREE(inp);
    return r;
}

// ---------------------------------------------------------------------------------------------
// checkpoints in the container format

#define RETRLM__CKPT_KIND "model"
#define RETRLM__CKPT_NCFG 9

static retrlm_result retrlm__ckpt_writer(const retrlm_model *m, const retrlm_adamw *opt,
                                         const retrlm_lm_train_state *st, retrlm_writer *w) {
    const retrlm_model_config *c = &m->config;
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    retrlm_result r;
    ci[0] = c->vocab_size; ci[1] = c->dim; ci[2] = c->n_layers; ci[3] = c->n_heads;
    ci[4] = c->ffn_dim; ci[5] = c->max_seq_len; ci[6] = c->max_batch; ci[7] = c->untied;
    ci[8] = c->bidirectional;
    cf[0] = c->rope_theta; cf[1] = c->norm_eps; cf[2] = c->init_std;
    if ((r = retrlm_writer_init(w, RETRLM__CKPT_KIND))) return r;
    if ((r = retrlm_writer_add_copy(w, "config", RETRLM_DTYPE_I32, ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_writer_add_copy(w, "config_f", RETRLM_DTYPE_F32, cf, 3)) ||
        (r = retrlm_writer_add(w, "params", RETRLM_DTYPE_F32, m->params, m->n_params)))
        return r;
    if (opt) {
        int64_t s = opt->step;
        if (opt->n != m->n_params)
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

static retrlm_result retrlm__ckpt_load(retrlm_model *m, const retrlm_reader *rd,
                                       const retrlm_model_config *over) {
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    retrlm_model_config c;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm_reader_read(rd, "config", RETRLM_DTYPE_I32, ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_reader_read(rd, "config_f", RETRLM_DTYPE_F32, cf, 3)))
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
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    {
        // the parameter count must match before anything big is allocated
        const void *p = NULL;
        size_t n = 0, sz[RETRLM_T_COUNT], tot = 0;
        int t;
        retrlm_model_config c2 = c;
        if ((r = retrlm__resolve_config(&c2))) return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
        retrlm__tensor_sizes(&c2, sz);
        for (t = 0; t < RETRLM_T_COUNT; t++) tot += sz[t];
        if ((r = retrlm_reader_get(rd, "params", RETRLM_DTYPE_F32, &p, &n))) return r;
        if (n != tot)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: 'params' holds %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)tot);
        if ((r = retrlm__model_alloc(m, &c))) return r;
        if (n) memcpy(m->params, p, n * sizeof(float));
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_memory(retrlm_model *m, const void *buf, size_t size,
                                                  const retrlm_model_config *over) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over);
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
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over);
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
#endif

// ---------------------------------------------------------------------------------------------
// generation: one token at a time against a KV cache of (L, max_seq_len, D)

RETRLM_API retrlm_result retrlm_model_decode(retrlm_model *m, int token, int pos) {
    const retrlm_model_config *c = &m->config;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab_size, H = c->n_heads, hd = D / H;
    const float scale = 1.0f / sqrtf((float)hd);
    retrlm__work w;
    retrlm_result r;
    float rstd;
    int l, h;
    RETRLM_ASSERT(m && m->params);
    if (token < 0 || token >= V || pos < 0 || pos >= c->max_seq_len)
        return retrlm__fail(RETRLM_ERR_ARG, "model_decode: token %d (vocabulary %d) at position "
                            "%d (max %d)", token, V, pos, c->max_seq_len);
    retrlm__get_work(m, &w);
    memcpy(w.x, m->param[RETRLM_T_EMBED] + (size_t)token * D, (size_t)D * sizeof(float));
    for (l = 0; l < c->n_layers; l++) {
        float *kc = w.kc + ((size_t)l * c->max_seq_len) * D, *vc = w.vc + ((size_t)l * c->max_seq_len) * D;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_ATTN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm_matmul(w.q, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WQ, l, 0), NULL, 1, D, D, 0)) ||
            (r = retrlm_matmul(kc + (size_t)pos * D, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WK, l, 0),
                               NULL, 1, D, D, 0)) ||
            (r = retrlm_matmul(vc + (size_t)pos * D, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_WV, l, 0),
                               NULL, 1, D, D, 0)))
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
        if ((r = retrlm_matmul(w.x, w.y, retrlm_model_tensor_ptr(m, RETRLM_T_WO, l, 0), NULL, 1, D, D,
                               RETRLM_MATMUL_ACCUMULATE)))
            return r;
        retrlm__rmsnorm_forward(w.xn, &rstd, w.x, retrlm_model_tensor_ptr(m, RETRLM_T_FFN_NORM, l, 0), 1, D,
                                c->norm_eps);
        if ((r = retrlm_matmul(w.gate, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_W_GATE, l, 0), NULL, 1, F,
                               D, 0)) ||
            (r = retrlm_matmul(w.up, w.xn, retrlm_model_tensor_ptr(m, RETRLM_T_W_UP, l, 0), NULL, 1, F, D, 0)))
            return r;
        retrlm__swiglu_forward(w.gate, w.gate, w.up, (size_t)F);
        if ((r = retrlm_matmul(w.x, w.gate, retrlm_model_tensor_ptr(m, RETRLM_T_W_DOWN, l, 0), NULL, 1, D,
                               F, RETRLM_MATMUL_ACCUMULATE)))
            return r;
    }
    retrlm__rmsnorm_forward(w.hid, &rstd, w.x, m->param[RETRLM_T_FINAL_NORM], 1, D, c->norm_eps);
    if ((r = retrlm_matmul(w.logits, w.hid,
                           c->untied ? m->param[RETRLM_T_LM_HEAD] : m->param[RETRLM_T_EMBED], NULL, 1,
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
        if ((r = retrlm_model_decode(m, prompt[pos], pos))) return r;
    while (got < n_new) {
        tok = retrlm_model_sample(m, m->step_logits, s, rng);
        out[got++] = tok;
        if (n_out) *n_out = got;
        if (got == n_new || pos >= m->config.max_seq_len) break;
        if ((r = retrlm_model_decode(m, tok, pos++))) return r;
    }
    return RETRLM_OK;
}

// ---------------------------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length, a JSON header, then the tensor bytes.
// Names and layout follow Hugging Face's LlamaForCausalLM; our rotary convention is theirs, so
// the matrices map one to one.

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

static void retrlm__st_append(char **s, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    int n, i;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    for (i = 0; i < n && i < (int)sizeof tmp - 1; i++) stbds_arrput(*s, tmp[i]);
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
    int l, j;
    RETRLM_ASSERT(m && m->params && size);
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
    retrlm__st_append(&js, "{\"__metadata__\":{\"format\":\"pt\",\"model_type\":\"llama\","
                      "\"vocab_size\":\"%d\",\"hidden_size\":\"%d\",\"intermediate_size\":\"%d\","
                      "\"num_hidden_layers\":\"%d\",\"num_attention_heads\":\"%d\","
                      "\"num_key_value_heads\":\"%d\",\"max_position_embeddings\":\"%d\",",
                      c->vocab_size, c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_heads,
                      c->max_seq_len);
    retrlm__st_append(&js, "\"rope_theta\":\"%.9g\",\"rms_norm_eps\":\"%.9g\","
                      "\"tie_word_embeddings\":\"%s\",\"bidirectional\":\"%d\"}",
                      (double)c->rope_theta, (double)c->norm_eps, c->untied ? "false" : "true",
                      c->bidirectional);
    for (i = 0; i < (size_t)stbds_arrlen(items); i++) {
        size_t n = (size_t)items[i].rows * (size_t)(items[i].cols ? items[i].cols : 1);
        if (items[i].cols)
            retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (long long)items[i].cols, (unsigned long)off,
                              (unsigned long)(off + 4 * n));
        else
            retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (unsigned long)off, (unsigned long)(off + 4 * n));
        off += 4 * n;
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

// ---- a small JSON reader for the header: objects, arrays, strings, non-negative integers
typedef struct retrlm__js {
    const char *p, *end;
} retrlm__js;

static void retrlm__js_ws(retrlm__js *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int retrlm__js_char(retrlm__js *j, char c) {
    retrlm__js_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

// a string into out (NUL-terminated, at most cap-1 bytes); 0 on bad syntax or overflow.
// Escapes are decoded; \u escapes outside ASCII become '?' (tensor names are ASCII).
static int retrlm__js_string(retrlm__js *j, char *out, size_t cap) {
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
                for (k = 0; k < 4; k++) {
                    char h = *j->p++;
                    v = v * 16 + (h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1000000);
                }
                if (v < 0) return 0;
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

static int retrlm__js_uint(retrlm__js *j, uint64_t *v) {
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
static int retrlm__js_skip(retrlm__js *j, int depth) {
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

RETRLM_API retrlm_result retrlm_model_load_safetensors_memory(retrlm_model *m, const void *buf,
                                                              size_t size,
                                                              const retrlm_model_config *hint) {
    const unsigned char *b = (const unsigned char *)buf;
    retrlm__st_entry *ents = NULL, e;
    retrlm__js j;
    retrlm_model_config c;
    retrlm_result r = RETRLM_OK;
    uint64_t hlen;
    size_t dsize, i, ne;
    int first = 1, L = 0, F = 0, found_embed = -1, untied = 0, k;
    unsigned char *seen = NULL;
    char meta_heads[32] = "", meta_theta[32] = "", meta_eps[32] = "", meta_seq[32] = "",
         meta_bidir[32] = "";
    RETRLM_ASSERT(m && (buf || !size));
    memset(m, 0, sizeof *m);
    memset(&c, 0, sizeof c);
    if (size < 8) return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %lu bytes, no header",
                                      (unsigned long)size);
    hlen = retrlm__get_u64(b);
    if (hlen < 2 || hlen > size - 8 || hlen > ((uint64_t)100 << 20))
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: header length %llu in a file of %lu "
                            "bytes", (unsigned long long)hlen, (unsigned long)size);
    dsize = size - 8 - (size_t)hlen;
    j.p = (const char *)b + 8;
    j.end = j.p + hlen;
#define RETRLM__ST_BAD(what)                                                                   \
    do {                                                                                        \
        r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %s at header byte %ld", what,         \
                         (long)(j.p - (const char *)b - 8));                                    \
        goto done;                                                                              \
    } while (0)
    if (!retrlm__js_char(&j, '{')) RETRLM__ST_BAD("header is not a JSON object");
    if (!retrlm__js_char(&j, '}'))
        while (1) {
            if (!first && !retrlm__js_char(&j, ',')) {
                if (!retrlm__js_char(&j, '}')) RETRLM__ST_BAD("expected ',' or '}'");
                break;
            }
            first = 0;
            memset(&e, 0, sizeof e);
            if (!retrlm__js_string(&j, e.name, sizeof e.name) || !retrlm__js_char(&j, ':'))
                RETRLM__ST_BAD("bad key");
            if (!strcmp(e.name, "__metadata__")) {
                char key[64], val[32];
                int f2 = 1;
                if (!retrlm__js_char(&j, '{')) RETRLM__ST_BAD("__metadata__ is not an object");
                if (!retrlm__js_char(&j, '}'))
                    while (1) {
                        if (!f2 && !retrlm__js_char(&j, ',')) {
                            if (!retrlm__js_char(&j, '}')) RETRLM__ST_BAD("bad __metadata__");
                            break;
                        }
                        f2 = 0;
                        if (!retrlm__js_string(&j, key, sizeof key) || !retrlm__js_char(&j, ':'))
                            RETRLM__ST_BAD("bad __metadata__ key");
                        retrlm__js_ws(&j);
                        if (j.p < j.end && *j.p == '"' && retrlm__js_string(&j, val, sizeof val)) {
                            if (!strcmp(key, "num_attention_heads")) strcpy(meta_heads, val);
                            else if (!strcmp(key, "rope_theta")) strcpy(meta_theta, val);
                            else if (!strcmp(key, "rms_norm_eps")) strcpy(meta_eps, val);
                            else if (!strcmp(key, "max_position_embeddings")) strcpy(meta_seq, val);
                            else if (!strcmp(key, "bidirectional")) strcpy(meta_bidir, val);
                        } else if (!retrlm__js_skip(&j, 1))
                            RETRLM__ST_BAD("bad __metadata__ value");
                    }
                continue;
            }
            if (!retrlm__st_parse_tensor(&j, &e)) RETRLM__ST_BAD("bad tensor description");
            retrlm__st_classify(&e);
            stbds_arrput(ents, e);
        }
    retrlm__js_ws(&j);
    if (j.p != j.end) RETRLM__ST_BAD("bytes after the header object");
    ne = (size_t)stbds_arrlen(ents);
    // shapes: embedding gives V and D, gate gives F, the layer count is the largest index + 1
    for (i = 0; i < ne; i++) {
        retrlm__st_entry *x = &ents[i];
        uint64_t n = 1;
        for (k = 0; k < x->ndim; k++) {
            if (x->shape[k] && n > UINT64_MAX / 8 / (uint64_t)x->shape[k]) RETRLM__ST_BAD("shape overflows");
            n *= (uint64_t)x->shape[k];
        }
        if (x->off0 > x->off1 || x->off1 > dsize)
            RETRLM__ST_BAD("data_offsets outside the data");
        if (x->tensor < 0) continue;
        if (!x->f32) {
            r = retrlm__fail(RETRLM_ERR_UNSUPPORTED, "safetensors: tensor '%s' is not F32", x->name);
            goto done;
        }
        if (x->off1 - x->off0 != 4 * n) RETRLM__ST_BAD("data_offsets disagree with the shape");
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
        RETRLM__ST_BAD("no 2-d model.embed_tokens.weight");
    c.vocab_size = (int)ents[found_embed].shape[0];
    c.dim = (int)ents[found_embed].shape[1];
    c.n_layers = L;
    c.ffn_dim = F;
    c.untied = untied;
    c.bidirectional = meta_bidir[0] == '1';
    if (hint && hint->n_heads > 0) c.n_heads = hint->n_heads;
    else if (meta_heads[0]) c.n_heads = atoi(meta_heads) > 0 ? atoi(meta_heads) : -1;
    else RETRLM__ST_BAD("no num_attention_heads in the metadata or the hint");
    c.rope_theta = hint && hint->rope_theta > 0.0f ? hint->rope_theta
                   : meta_theta[0] ? (float)strtod(meta_theta, NULL) : 10000.0f;
    c.norm_eps = hint && hint->norm_eps > 0.0f ? hint->norm_eps
                 : meta_eps[0] ? (float)strtod(meta_eps, NULL) : 1e-5f;
    if (hint && hint->max_seq_len > 0) c.max_seq_len = hint->max_seq_len;
    else if (meta_seq[0] && atoi(meta_seq) > 0) c.max_seq_len = atoi(meta_seq);
    c.max_batch = hint && hint->max_batch > 0 ? hint->max_batch : 1;
    if (hint) c.bidirectional = c.bidirectional || hint->bidirectional;
    if (L < 1 || F < 1 || c.n_heads < 1 || !(c.rope_theta > 0.0f) || !(c.norm_eps > 0.0f))
        RETRLM__ST_BAD("missing layers, gate projection, heads, rope_theta or rms_norm_eps");
    {
        retrlm_model_config c2 = c;
        if ((r = retrlm__resolve_config(&c2)) != RETRLM_OK) {
            if (r == RETRLM_ERR_ARG) r = RETRLM_ERR_FORMAT;
            goto done;
        }
    }
    // every tensor present once, with the shape this config needs
    seen = (unsigned char *)retrlm__calloc((size_t)L * RETRLM__ST_PER_LAYER + RETRLM_T_COUNT, 1);
    if (!seen) {
        r = retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory");
        goto done;
    }
    for (i = 0; i < ne; i++) {
        retrlm__st_entry *x = &ents[i];
        int64_t rows, cols;
        size_t slot;
        if (x->tensor < 0) continue;
        retrlm__st_shape(&c, (retrlm_model_tensor)x->tensor, &rows, &cols);
        if (cols ? (x->ndim != 2 || x->shape[0] != rows || x->shape[1] != cols)
                 : (x->ndim != 1 || x->shape[0] != rows)) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' has the wrong shape",
                             x->name);
            goto done;
        }
        slot = x->tensor >= RETRLM_T_WQ && x->tensor <= RETRLM_T_FFN_NORM
                   ? RETRLM_T_COUNT + (size_t)x->layer * RETRLM__ST_PER_LAYER +
                         (size_t)(x->tensor - RETRLM_T_WQ)
                   : (size_t)x->tensor;
        if (seen[slot]++) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' appears twice", x->name);
            goto done;
        }
    }
    for (i = 0; i < (size_t)L * RETRLM__ST_PER_LAYER + RETRLM_T_COUNT; i++)
        if (!seen[i] && !(i == RETRLM_T_LM_HEAD && !untied) &&
            (i >= RETRLM_T_COUNT || i == RETRLM_T_EMBED || i == RETRLM_T_LM_HEAD ||
             i == RETRLM_T_FINAL_NORM)) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor %lu of the Llama layout is "
                             "missing", (unsigned long)i);
            goto done;
        }
    if ((r = retrlm__model_alloc(m, &c)) != RETRLM_OK) goto done;
    for (i = 0; i < ne; i++) {
        retrlm__st_entry *x = &ents[i];
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
#undef RETRLM__ST_BAD
    RETRLM_FREE(seen);
    stbds_arrfree(ents);
    if (r) retrlm_model_free(m);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_model_save_safetensors(const retrlm_model *m, const char *path) {
    size_t size = 0;
    void *buf;
    char tmp[1024];
    FILE *f;
    retrlm_result r = retrlm_model_save_safetensors_memory(m, NULL, 0, &size);
    if (r) return r;
    if (strlen(path) + 16 > sizeof tmp)
        return retrlm__fail(RETRLM_ERR_ARG, "safetensors: path too long");
    buf = retrlm__alloc(size, 1);
    if (!buf) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory for %lu bytes",
                                  (unsigned long)size);
    if ((r = retrlm_model_save_safetensors_memory(m, buf, size, &size)) == RETRLM_OK) {
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        f = fopen(tmp, "wb");
        if (!f) r = retrlm__fail(RETRLM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        else {
            int bad = fwrite(buf, 1, size, f) != size;
            bad |= fclose(f) != 0;
            if (bad || rename(tmp, path) != 0) {
                remove(tmp);
                r = retrlm__fail(RETRLM_ERR_IO, "%s: write failed", path);
            }
        }
    }
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_safetensors(retrlm_model *m, const char *path,
                                                       const retrlm_model_config *hint) {
    FILE *f = fopen(path, "rb");
    long n;
    void *buf;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if (!f) return retrlm__fail(RETRLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_IO, "%s: cannot size", path);
    }
    buf = retrlm__alloc((size_t)n + 1, 1);
    if (!buf) {
        fclose(f);
        return retrlm__fail(RETRLM_ERR_NOMEM, "%s: no memory for %ld bytes", path, n);
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        RETRLM_FREE(buf);
        return retrlm__fail(RETRLM_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    r = retrlm_model_load_safetensors_memory(m, buf, (size_t)n, hint);
    RETRLM_FREE(buf);
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
