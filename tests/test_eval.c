// eval: retrieval metrics (MRR@k, nDCG@k, Recall@k, lenient and strict) against hand-computed values
#include "retrlm.h"
#include "test.h"

static void test_eval_metrics(void) {
    static const int64_t run[] = {5, 3, 9, 1, 7};
    static const int64_t rel[] = {9, 1, 4};
    static const int grade[] = {2, 1, 1};
    retrlm_qrel qr[4];
    int64_t qids[2] = {100, 200}, ranked[2 * 3] = {9, 8, 7, 1, 2, 3};
    int nr[2] = {3, 2};
    retrlm_retrieval_metrics m;
    double dcg, idcg;
    CHECK_NEAR(retrlm_eval_rr(run, 5, rel, grade, 3, 10, 1), 1.0 / 3, 1e-12);
    CHECK_NEAR(retrlm_eval_rr(run, 5, rel, grade, 3, 2, 1), 0.0, 1e-12);
    CHECK_NEAR(retrlm_eval_rr(run, 5, rel, grade, 3, 10, 2), 1.0 / 3, 1e-12);
    CHECK_NEAR(retrlm_eval_recall(run, 5, rel, grade, 3, 10, 1), 2.0 / 3, 1e-12);
    CHECK_NEAR(retrlm_eval_recall(run, 5, rel, grade, 3, 3, 2), 1.0, 1e-12);
    dcg = 2 / log2(4.0) + 1 / log2(5.0);
    idcg = 2 / log2(2.0) + 1 / log2(3.0) + 1 / log2(4.0);
    CHECK_NEAR(retrlm_eval_ndcg(run, 5, rel, grade, 3, 10, 1), dcg / idcg, 1e-12);
    CHECK_NEAR(retrlm_eval_ndcg(run, 5, rel, grade, 3, 10, 2), (2 / log2(4.0)) / 2.0, 1e-12);
    qr[0].qid = 200; qr[0].docid = 2; qr[0].grade = 1;
    qr[1].qid = 100; qr[1].docid = 7; qr[1].grade = 2;
    qr[2].qid = 300; qr[2].docid = 7; qr[2].grade = 2; // query not in the run: ignored
    qr[3].qid = 200; qr[3].docid = 5; qr[3].grade = 2;
    CHECK_OK(retrlm_eval_retrieval(2, qids, ranked, nr, 3, qr, 4, 1, &m));
    CHECK(m.n_queries == 2);
    CHECK_NEAR(m.mrr10, (1.0 / 3 + 1.0 / 2) / 2, 1e-12);
    CHECK_NEAR(m.recall10, (1.0 + 0.5) / 2, 1e-12);
    CHECK_OK(retrlm_eval_retrieval(2, qids, ranked, nr, 3, qr, 4, 2, &m));
    CHECK(m.n_queries == 2);
    CHECK_NEAR(m.mrr10, (1.0 / 3 + 0) / 2, 1e-12);
    CHECK(retrlm_eval_retrieval(2, qids, ranked, nr, 3, qr, 4, 0, &m) == RETRLM_ERR_ARG);
}

static void test_eval_edge_cases(void) {
    static const int64_t run[] = {4, 4, 9};
    static const int64_t rel[] = {4, 4};
    static const int grade[] = {1, 2};
    retrlm_retrieval_metrics m;
    int64_t qid = 1;
    // a repeated ranked id counts once; a repeated judgment keeps its highest grade
    CHECK_NEAR(retrlm_eval_recall(run, 3, rel, grade, 2, 10, 1), 1.0, 1e-12);
    CHECK_NEAR(retrlm_eval_ndcg(run, 3, rel, grade, 2, 10, 2), 1.0, 1e-12);
    CHECK_NEAR(retrlm_eval_rr(run, 0, rel, grade, 2, 10, 1), 0.0, 1e-12);
    CHECK_NEAR(retrlm_eval_ndcg(run, 3, rel, grade, 0, 10, 1), 0.0, 1e-12); // nothing judged
    // no judgments at all: no query counts
    CHECK_OK(retrlm_eval_retrieval(1, &qid, run, NULL, 3, NULL, 0, 1, &m));
    CHECK(m.n_queries == 0 && m.mrr10 == 0);
}

int main(void) {
    RUN(test_eval_metrics);
    RUN(test_eval_edge_cases);
    return test_report();
}
