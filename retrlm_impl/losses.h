/* ---- losses: training objectives over embeddings and distributions ----------------------
   In-batch contrastive loss (DPR; Contriever's in-batch variant): the scores of nq queries
   against nd candidate documents are S = Q Dᵀ / temperature (nq, nd); query i's positive is
   candidate pos[i] and every other candidate is a negative (the other queries' positives, hard
   negatives). loss = mean over queries of -log softmax(S_i)[pos[i]]. Gradients are those of
   that mean, ready for retrlm_encoder_backward. */

/* q (nq, dim), d (nd, dim), pos (nq) in [0, nd). dq (nq, dim) and dd (nd, dim) get the
   gradients (either may be NULL); *loss the mean in nats (may be NULL); *correct (may be NULL)
   how many queries rank their positive first. ERR_ARG on bad sizes or a NaN score. */
RETRLM_API retrlm_result retrlm_contrastive_loss(const float *q, int nq, const float *d, int nd,
                                                 int dim, const int *pos, float temperature,
                                                 float *loss, float *dq, float *dd,
                                                 int *correct);
