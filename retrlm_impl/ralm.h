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

/* Runs m over tokens (n) once and adds one key per position. The stream is cut into up to
   max_batch lanes (64 at most, each at least seq_len/2 long; seq_len defaults to max_seq_len),
   read side by side in blocks of seq_len/2 tokens. Each block also attends to the block before
   it, whose keys and values are carried over rather than computed again (Transformer-XL's
   segment recurrence, with rotary positions counted from the carried block), and a lane starts
   by reading the half block before its first key. So every key but those of the first seq_len/2
   positions sees at least seq_len/2 tokens of context (the deeper layers, through the carried
   states, more), for one forward pass a token: half the work of windows that overlap by half.
   The keys of the first block of each lane are those of a window of seq_len/2 read alone, and
   the second's those of the window of both blocks. Plain causal decoders (not RETRO models). index_config: dim and metric are set here (L2); the rest is yours
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

