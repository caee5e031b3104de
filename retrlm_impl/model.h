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
    retrlm__tuner tune_;                 /* generation: one thread or the team (core.c) */
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
   here (ralm retrieves them). With OpenMP each step runs on the team or on one thread,
   whichever is faster on this machine now (core.c); the model keeps what it measured for its
   next call. */
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
