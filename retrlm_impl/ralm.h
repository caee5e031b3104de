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
   The first token of the stream has no context and costs ln V, as in retrlm_lm_bits_per_byte.
   Bits per byte = total nats / ln 2 / the UTF-8 bytes of the text the tokens encode. */

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
    float temperature;     /* REPLUG weights softmax(score / temperature); default 1 */
    int   unit_tokens;     /* tokens of a unit used at most; default the datastore's chunk size */
    int   context_tokens;  /* tokens of the text's own prefix; default what max_seq_len leaves */
    int   exclude;         /* 1: never retrieve units of document exclude_doc (leakage control) */
    int64_t exclude_doc;
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
