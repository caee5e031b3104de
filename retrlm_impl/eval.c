#include "internal.h"

// grade of id among the judgments (highest if repeated), 0 when unjudged
static int retrlm__eval_grade(int64_t id, const int64_t *rel_ids, const int *rel_grades, int n_rel) {
    int i, g = 0;
    for (i = 0; i < n_rel; i++)
        if (rel_ids[i] == id && rel_grades[i] > g) g = rel_grades[i];
    return g;
}

// 1 if ranked[r] repeats an earlier id (a repeated document earns nothing twice)
static int retrlm__eval_repeat(const int64_t *ranked, int r) {
    int i;
    for (i = 0; i < r; i++)
        if (ranked[i] == ranked[r]) return 1;
    return 0;
}

RETRLM_API double retrlm_eval_rr(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                 const int *rel_grades, int n_rel, int k, int min_grade) {
    int r, n = RETRLM__MIN(n_ranked, k);
    for (r = 0; r < n; r++)
        if (retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel) >= min_grade) return 1.0 / (r + 1);
    return 0.0;
}

static int retrlm__cmp_int_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x > y ? -1 : x < y;
}

RETRLM_API double retrlm_eval_ndcg(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                   const int *rel_grades, int n_rel, int k, int min_grade) {
    double dcg = 0, idcg = 0;
    int r, n = RETRLM__MIN(n_ranked, k), m = 0, i;
    int *g = (int *)retrlm__alloc((size_t)(n_rel > 0 ? n_rel : 1), sizeof(int));
    if (!g) return 0.0;
    for (r = 0; r < n; r++) {
        int gr = retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel);
        if (gr >= min_grade && gr > 0 && !retrlm__eval_repeat(ranked, r)) dcg += gr / log2(r + 2.0);
    }
    for (i = 0; i < n_rel; i++) { // ideal: every distinct judged id at its highest grade
        int j, dup = 0;
        for (j = 0; j < i; j++)
            if (rel_ids[j] == rel_ids[i]) dup = 1;
        if (!dup) {
            int gr = retrlm__eval_grade(rel_ids[i], rel_ids, rel_grades, n_rel);
            if (gr >= min_grade && gr > 0) g[m++] = gr;
        }
    }
    qsort(g, (size_t)m, sizeof(int), retrlm__cmp_int_desc);
    for (i = 0; i < m && i < k; i++) idcg += g[i] / log2(i + 2.0);
    RETRLM_FREE(g);
    return idcg > 0 ? dcg / idcg : 0.0;
}

RETRLM_API double retrlm_eval_recall(const int64_t *ranked, int n_ranked, const int64_t *rel_ids,
                                     const int *rel_grades, int n_rel, int k, int min_grade) {
    int r, n = RETRLM__MIN(n_ranked, k), found = 0, total = 0, i, j;
    for (i = 0; i < n_rel; i++) {
        int dup = 0;
        for (j = 0; j < i; j++)
            if (rel_ids[j] == rel_ids[i]) dup = 1;
        if (!dup && retrlm__eval_grade(rel_ids[i], rel_ids, rel_grades, n_rel) >= min_grade &&
            rel_grades[i] > 0)
            total++;
    }
    if (total == 0) return 0.0;
    for (r = 0; r < n; r++)
        if (!retrlm__eval_repeat(ranked, r) &&
            retrlm__eval_grade(ranked[r], rel_ids, rel_grades, n_rel) >= RETRLM__MAX(min_grade, 1))
            found++;
    return (double)found / total;
}

static int retrlm__cmp_qrel(const void *a, const void *b) {
    const retrlm_qrel *x = (const retrlm_qrel *)a, *y = (const retrlm_qrel *)b;
    return x->qid < y->qid ? -1 : x->qid > y->qid;
}

RETRLM_API retrlm_result retrlm_eval_retrieval(int n_queries, const int64_t *qids,
                                               const int64_t *ranked, const int *n_ranked,
                                               int stride, const retrlm_qrel *qrels,
                                               size_t n_qrels, int min_grade,
                                               retrlm_retrieval_metrics *out) {
    retrlm_qrel *q;
    int64_t *ids;
    int *grades;
    int i;
    memset(out, 0, sizeof *out);
    if (n_queries < 0 || stride < 0 || (n_queries > 0 && (!qids || (stride > 0 && !ranked))) ||
        (n_qrels > 0 && !qrels) || min_grade < 1)
        return retrlm__fail(RETRLM_ERR_ARG, "eval_retrieval: %d queries, stride %d, min_grade %d (>= 1)",
                            n_queries, stride, min_grade);
    q = (retrlm_qrel *)retrlm__alloc(n_qrels, sizeof *q);
    ids = (int64_t *)retrlm__alloc(n_qrels, sizeof(int64_t));
    grades = (int *)retrlm__alloc(n_qrels, sizeof(int));
    if (!q || !ids || !grades) {
        RETRLM_FREE(q);
        RETRLM_FREE(ids);
        RETRLM_FREE(grades);
        return retrlm__fail(RETRLM_ERR_NOMEM, "eval_retrieval: %zu judgments", n_qrels);
    }
    if (n_qrels) memcpy(q, qrels, n_qrels * sizeof *q);
    qsort(q, n_qrels, sizeof *q, retrlm__cmp_qrel);
    for (i = 0; i < n_queries; i++) {
        size_t lo = 0, hi = n_qrels, j;
        int n_rel = 0, nr = n_ranked ? RETRLM__MIN(n_ranked[i], stride) : stride, any = 0;
        const int64_t *run = ranked + (size_t)i * (size_t)stride;
        while (lo < hi) { // first judgment of this query
            size_t mid = lo + (hi - lo) / 2;
            if (q[mid].qid < qids[i]) lo = mid + 1;
            else hi = mid;
        }
        for (j = lo; j < n_qrels && q[j].qid == qids[i]; j++) {
            ids[n_rel] = q[j].docid;
            grades[n_rel] = q[j].grade;
            if (q[j].grade >= min_grade) any = 1;
            n_rel++;
        }
        if (!any) continue;
        if (nr < 0) nr = 0;
        out->n_queries++;
        out->mrr10 += retrlm_eval_rr(run, nr, ids, grades, n_rel, 10, min_grade);
        out->ndcg10 += retrlm_eval_ndcg(run, nr, ids, grades, n_rel, 10, min_grade);
        out->recall10 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 10, min_grade);
        out->recall100 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 100, min_grade);
        out->recall1000 += retrlm_eval_recall(run, nr, ids, grades, n_rel, 1000, min_grade);
    }
    if (out->n_queries) {
        double n = out->n_queries;
        out->mrr10 /= n;
        out->ndcg10 /= n;
        out->recall10 /= n;
        out->recall100 /= n;
        out->recall1000 /= n;
    }
    RETRLM_FREE(q);
    RETRLM_FREE(ids);
    RETRLM_FREE(grades);
    return RETRLM_OK;
}
