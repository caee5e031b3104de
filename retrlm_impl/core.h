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

/* Private: the state of the choice between one thread and the team for a loop of like steps
   (core.c). A model keeps one, so that generation goes on from what it learnt in earlier calls. */
typedef struct retrlm__tuner {
    int     team, one;     /* the team's size (0: not set up); this step on one thread */
    double  ema[2], t0;    /* seconds a step on [0] one thread, [1] the team (0: not measured) */
    int64_t step, probe, gap;
    int     trying, try_k;  /* steps left of a try of [try_k] (0: none) */
    double  try_sum;       /* seconds of its steps so far */
} retrlm__tuner;
