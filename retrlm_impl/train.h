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
