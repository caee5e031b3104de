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

/* Distillation of a retriever from an LM (REPLUG LSR; Atlas's perplexity distillation). For
   each of n queries and its k retrieved documents, the retriever's distribution
   P_i = softmax(scores_i / tau_score) is pulled toward the LM's Q_i = softmax(gold_i / tau_gold):
       loss = mean over queries of KL(Q_i || P_i) = sum_j Q_ij (log Q_ij - log P_ij)
   gold (n, k) carries no gradient. REPLUG LSR: gold_ij = log p_LM(y | d_j, x), the whole
   continuation's log-likelihood, tau 0.1 on both sides; Atlas PDist: the mean over y's tokens,
   tau 0.01. A candidate that is absent (fewer than k retrieved) is -inf in both scores and
   gold; each query needs one finite candidate. dscores (n, k) (may be NULL) gets
   d loss / d scores = (P - Q) / (tau_score n); *loss (may be NULL) the mean in nats. */
RETRLM_API retrlm_result retrlm_kl_distill_loss(const float *scores, const float *gold, int n,
                                                int k, float tau_score, float tau_gold,
                                                float *loss, float *dscores);

/* RPT's retriever objective (Rubin & Berant, 2023): pairs ordered by a reference LM, each pair
   weighted by LambdaRank's |delta NDCG|. For query i (RPT: a chunk) with k candidates (earlier
   chunks), scores s_ij from the retriever and gold g_ij from the reference LM (RPT: how much
   candidate j raises the log-likelihood of the chunk that follows), every pair (a, b) with
   g_a > g_b and g_a > threshold is a pair to order, and
       loss = sum over queries and their pairs of lambda_ab * max(0, margin - (s_a - s_b)) / P
   P the number of pairs over all queries (RPT divides by its valid pairs too). lambda_ab is what
   NDCG would change by if a and b swapped places in the order by s:
       lambda_ab = |G_a - G_b| * |1 / log2(2 + r_a) - 1 / log2(2 + r_b)| / IDCG_i
   with gain G_j = 2^g_j - 1 where g_j > threshold and 0 elsewhere, r_j the 0-based rank of j by
   s (ties: the lower index first), and IDCG_i = sum_j G_j / log2(2 + rank of j by g). lambda is
   a weight, not differentiated (LambdaRank's rule). The margin is RPT's hinge, which its trainer
   schedules from 1 to max_margin; RPT's code also has a variant with a sigmoid in place of the
   hinge and log2 differences in place of the discounts' differences: this is the textbook form.
   threshold >= 0 (RPT: 0, a candidate that does not help is never the better of a pair), so
   every gain in a pair is positive. Absent candidates are -inf in both scores and gold; gold
   must be below 512 (2^g must fit a double). dscores (n, k) (may be NULL) gets d loss / d
   scores; *loss (may be NULL) the loss (0 when there is no pair); *pairs (may be NULL) P.
   ERR_ARG on bad sizes, a negative threshold, NaN, +inf, gold of 512 or more, or a candidate
   absent on one side only. */
RETRLM_API retrlm_result retrlm_rank_loss(const float *scores, const float *gold, int n, int k,
                                          float margin, float threshold, float *loss,
                                          float *dscores, int *pairs);

/* Marginal likelihood over retrieved documents (REALM; Atlas's EMDR). For query i, its k
   candidates (REALM puts a null document among them) and t target positions p:
       log p(y_p | x_i) = logsumexp_j( log softmax(scores_i / temperature)_j + loglik[i, j, p] )
   marginalised for each position separately, as REALM does for each masked token, and
       loss = mean over queries of ( - mean over the query's valid positions of log p(y_p | x_i) )
   loglik (n, k, t): log p(y_p | x_i, d_j) from the reader; mask (n, t): 1 where position p of
   query i counts, 0 where not (NULL: all count); a query without a valid position adds nothing
   and is not counted. Absent candidates are -inf in scores. Gradients (either may be NULL):
   dscores (n, k) for the retriever and dloglik (n, k, t) for the reader, where dloglik[i,j,p] =
   -posterior(j | x_i, y_p) / (queries counted * valid positions of i): the weight with which
   the reader's cross-entropy of token p under document j flows back. */
RETRLM_API retrlm_result retrlm_marginal_loss(const float *scores, const float *loglik,
                                              const unsigned char *mask, int n, int k, int t,
                                              float temperature, float *loss, float *dscores,
                                              float *dloglik);

/* NPM's phrase objective (Min et al., 2023): a masked span is filled by retrieving its start
   and its end from an in-batch memory, not by an output vocabulary. The encoder reads the batch
   twice: masked (the queries: qs and qe, its outputs at each span's first and last masked
   position) and unmasked (the memory: its output at every token, n_mem = B x T). Span s is the
   memory positions [start[s], start[s] + len[s]) of one block (a sequence of the batch); with
   c = 1 / (sqrt(dim) temperature) and A(s) the memory positions outside span s's block (the
   same-block exclusion: the span can never find itself),
       L_start(s) = - log sum_{j in P(s)} exp(c qs_s . m_j) + log sum_{j in A(s)} exp(c qs_s . m_j)
   and L_end(s) the same with qe_s and the positives' last positions, where P(s) are the first
   positions of the copies of the span's tokens in A(s), each within one block. A span without
   a copy has no positive and is not counted. loss = mean over the counted spans of
   L_start + L_end. tokens (n_mem) and block (n_mem) describe the memory; qs, qe (n_spans, dim),
   mem (n_mem, dim). dqs, dqe (n_spans, dim) and dmem (n_mem, dim) get the gradients (any may be
   NULL; dmem is written, not added to); *loss (may be NULL) in nats, *count (may be NULL) the
   spans counted, *hits_start and *hits_end (may be NULL) how many of those rank a positive
   first. ERR_ARG on bad sizes, a span outside the memory or across two blocks. */
RETRLM_API retrlm_result retrlm_npm_loss(const float *qs, const float *qe, int n_spans,
                                         const float *mem, int n_mem, int dim, float temperature,
                                         const int *tokens, const int *block, const int *start,
                                         const int *len, float *loss, float *dqs, float *dqe,
                                         float *dmem, int *count, int *hits_start, int *hits_end);

/* What TRIME's memory is and how it is compared (retrlm_model_trime_loss, retrlm_trime_train,
   and at inference retrlm_ralm_config.trime; train.h says what each batching holds). */
typedef enum retrlm_trime_batching {
    RETRLM_TRIME_LOCAL = 0,
    RETRLM_TRIME_LONG = 1,
    RETRLM_TRIME_EXT = 2
} retrlm_trime_batching;

typedef enum retrlm_trime_sim {
    RETRLM_TRIME_DOT = 0,
    RETRLM_TRIME_L2 = 1
} retrlm_trime_sim;

typedef struct retrlm_trime_params {
    retrlm_trime_batching batching; /* LOCAL, LONG or EXT: which entries M(i) holds */
    retrlm_trime_sim      sim;      /* DOT or L2 */
    float temperature; /* divides the similarity; 0 means 1 */
    int   no_local;    /* EXT: 1 leaves i's own segment out of M(i) (trime_ext_loss's
                          only_cross_sent); the trainer sets it each step (cross_sent_ratio) */
} retrlm_trime_params;

/* TRIME's objective (Zhong et al., 2022): one softmax over the vocabulary and an in-batch
   memory. Position i has logits (V) and similarities sims_i (m) to m memory entries, entry j
   followed by the token mem_tokens[j]; the probability of the target y = targets[i] is
       p(y) = ( exp(logits_i[y]) + sum_{j: mem_tokens[j] == y} exp(sims_ij) )
              / ( sum_v exp(logits_iv) + sum_j exp(sims_ij) )
   and loss = mean over the positions with targets[i] >= 0 of -log p(y). TRIME's similarity is
   h_i . h_j / sqrt(D) between last-layer FFN inputs (retrlm_model_ffn_input), masked causally
   inside a segment: -inf leaves entry j out for position i (the caller scales and masks).
   logits (n, V), sims (n, m), mem_tokens (m) in [0, V), targets (n). dlogits (n, V) and dsims
   (n, m) get the gradients (either may be NULL, and each may be its input: written after it is
   read); *loss (may be NULL) in nats; *count (may be NULL) the positions counted. */
RETRLM_API retrlm_result retrlm_trime_loss(const float *logits, int n, int vocab,
                                           const float *sims, int m, const int *mem_tokens,
                                           const int *targets, float *loss, float *dlogits,
                                           float *dsims, int *count);
