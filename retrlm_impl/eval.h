/* ---- eval: retrieval metrics against graded relevance judgments ---------------------------
   A judgment (qrel) says document docid has grade g for query qid (TREC qrels without the
   iteration column). Ranked lists are best first. A document counts as relevant when its grade
   is >= min_grade (1: lenient, 2: strict for 0/1/2 judgments). Per query:
     MRR@k      1 / rank of the first relevant document within the top k, else 0
     nDCG@k     sum over ranks r <= k of gain / log2(r + 1), gain = grade (linear, as trec_eval),
                divided by the same sum for the ideal ordering of the judged documents; grades
                below min_grade count as 0
     Recall@k   relevant documents in the top k / relevant documents judged
   Means are over the queries that have at least one relevant document; queries without a
   ranked list count as empty lists. */

typedef struct retrlm_qrel {
    int64_t qid;   /* query id */
    int64_t docid; /* document id */
    int     grade; /* > 0 for a relevant document; 0 or less: judged not relevant */
} retrlm_qrel;

/* Per-query metrics. ranked (n_ranked) ids best first; rel_ids/rel_grades (n_rel) the
   judgments of this query (order free; duplicates of an id keep the highest grade). */
RETRLM_API double retrlm_eval_rr(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                 const int *rel_grades, int n_rel, int k, int min_grade);
RETRLM_API double retrlm_eval_ndcg(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                   const int *rel_grades, int n_rel, int k, int min_grade);
RETRLM_API double retrlm_eval_recall(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                     const int *rel_grades, int n_rel, int k, int min_grade);

typedef struct retrlm_retrieval_metrics {
    int    n_queries;   /* queries with at least one relevant document */
    double mrr10;       /* mean MRR@10 */
    double ndcg10;      /* mean nDCG@10 */
    double recall10;    /* mean Recall@10 */
    double recall100;   /* mean Recall@100 */
    double recall1000;  /* mean Recall@1000 */
} retrlm_retrieval_metrics;

/* Means over a run: qids (n_queries); ranked (n_queries, stride) ids best first, of which the
   first n_ranked[q] (<= stride) are valid; qrels (n_qrels) in any order. Judgments of queries
   not in qids are ignored. RETRLM_ERR_ARG on bad sizes, RETRLM_ERR_NOMEM. */
RETRLM_API retrlm_result retrlm_eval_retrieval(int n_queries, const int64_t *qids,
                                               const int64_t *ranked, const int *n_ranked,
                                               int stride, const retrlm_qrel *qrels,
                                               size_t n_qrels, int min_grade,
                                               retrlm_retrieval_metrics *out);
