/* ---- encoder: the bi-encoder, dense retrieval embeddings (DPR, Contriever) ----------------
   A query encoder and a document encoder, each the bidirectional transformer with mean pooling
   over the valid tokens, then an optional linear projection (no bias) to proj_dim and an
   optional L2 normalisation. The two sides share one set of weights (Contriever's choice; the
   document side is then a retrlm_model_init_view of the query side) or have their own (DPR).
   Relevance is the dot product of a query and a document embedding (cosine when normalised);
   training divides it by a temperature (retrlm_contrastive_loss). Texts longer than a side's
   max tokens are cut to their first tokens; an empty text is the single token 0. */
#define RETRLM_QUERY 0
#define RETRLM_DOC 1

typedef struct retrlm_encoder_config {
    retrlm_model_config model; /* vocab_size required; bidirectional and no_logits are set here;
                                  max_seq_len and max_batch come from the fields below */
    int separate;         /* 1: the document side has its own weights (DPR); 0: shared */
    int proj_dim;         /* > 0: project the pooled vector to proj_dim; 0: embeddings are dim wide */
    int normalize;        /* 1: L2-normalise the embeddings */
    int max_query_tokens; /* default 32 */
    int max_doc_tokens;   /* default 128 */
    int max_batch;        /* texts a forward on the query side; the document side takes twice as
                             many (a positive and a hard negative per query); default 32 */
} retrlm_encoder_config;

typedef struct retrlm_encoder {
    retrlm_encoder_config config; /* resolved */
    int           dim;            /* embedding width: proj_dim, or the model's dim */
    retrlm_model  side[2];        /* [RETRLM_QUERY], [RETRLM_DOC] */
    float        *proj[2];        /* (dim, model dim) projections; proj[DOC] == proj[QUERY] when
                                     shared; NULL without projection */
    float        *proj_grad[2];   /* their gradients */
    /* private */
    float *block_;                /* everything below, one allocation */
    float *pooled_[2], *raw_[2], *norm_[2], *out_[2], *dpool_[2], *dhid_[2], *draw_[2];
} retrlm_encoder;

RETRLM_API retrlm_result retrlm_encoder_init(retrlm_encoder *e, const retrlm_encoder_config *cfg);
RETRLM_API void retrlm_encoder_free(retrlm_encoder *e);
/* Embeds B token sequences (B, T) of side (RETRLM_QUERY or RETRLM_DOC) into out (B, e->dim);
   lengths (B) or NULL as in retrlm_model_forward. Keeps what backward needs for that side. */
RETRLM_API retrlm_result retrlm_encoder_forward(retrlm_encoder *e, int side, const int *tokens,
                                                int B, int T, const int *lengths, float *out);
/* Adds to the gradients the effect of dout (B, e->dim) at the last forward's embeddings of
   side: normalisation, projection, pooling and the transformer. */
RETRLM_API retrlm_result retrlm_encoder_backward(retrlm_encoder *e, int side, const float *dout);
RETRLM_API void retrlm_encoder_zero_grad(retrlm_encoder *e);
/* AdamW groups of every trainable tensor (out has room for 6); returns how many. */
RETRLM_API int retrlm_encoder_param_groups(const retrlm_encoder *e, float lr, float weight_decay,
                                           retrlm_adamw_group out[6]);
/* Embeds n texts (lens (n) or NULL for NUL-terminated) on side with tok into out (n, e->dim),
   batch after batch; the operation to call again whenever the weights change (re-indexing).
   progress: stage "encode", done/total in texts; may cancel (RETRLM_ERR_CANCELLED). */
RETRLM_API retrlm_result retrlm_encoder_encode_texts(retrlm_encoder *e,
                                                     const retrlm_tokenizer *tok, int side,
                                                     const char *const *texts,
                                                     const size_t *lens, size_t n, float *out,
                                                     retrlm_progress_fn progress, void *user);
/* Embeds one text (len bytes) on side into out (e->dim) without touching e's buffers: it makes
   its own activations (a retrlm_model_init_view of the side's weights) for the call, so any
   number of threads may embed through one encoder at once, as long as none trains it. */
RETRLM_API retrlm_result retrlm_encoder_embed(const retrlm_encoder *e,
                                              const retrlm_tokenizer *tok, int side,
                                              const char *text, size_t len, float *out);
/* Files: container kind "encoder" (sections enc_config, q.*, d.* when separate, proj.q,
   proj.d). Weights only. */
#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_encoder_save(const retrlm_encoder *e, const char *path);
RETRLM_API retrlm_result retrlm_encoder_load(retrlm_encoder *e, const char *path);
#endif
RETRLM_API retrlm_result retrlm_encoder_save_memory(const retrlm_encoder *e, void *buf,
                                                    size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_encoder_load_memory(retrlm_encoder *e, const void *buf,
                                                    size_t size);
