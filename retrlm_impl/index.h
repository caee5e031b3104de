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
