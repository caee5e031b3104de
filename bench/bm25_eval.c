// bm25_eval: BM25 effectiveness on debpkg dev. Indexes the `text` column of docs.tsv (ids =
// the id column), runs queries_dev.tsv (top 1000, disjunctive) and judges with qrels_dev.tsv:
// MRR@10, nDCG@10, Recall@{10,100,1000}, lenient (grade >= 1) and strict (grade 2).
//   make bench-bm25_eval            (RETRLM_DATA=dir for another data root; K1=, B= to tune)
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include "bm25_data.h"

int main(void) {
    const char *root = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    debpkg d;
    retrlm_bm25 bm;
    retrlm_bm25_config cfg;
    retrlm_retrieval_metrics lenient, strict;
    retrlm_qrel *qrels;
    int64_t *ids, *qids, *ranked;
    const char **texts, **queries;
    int *nf, i, nq, K = 1000, mismatches[2] = {0, 0};
    double t0, t_build, t_search;
    bench_machine();
    if (!debpkg_load(&d, root)) {
        printf("debpkg data not found under %s\n", root);
        return 1;
    }
    memset(&cfg, 0, sizeof cfg);
    if (getenv("K1")) cfg.k1 = (float)atof(getenv("K1"));
    if (getenv("B")) cfg.b = (float)atof(getenv("B"));
    if (retrlm_bm25_init(&bm, &cfg)) return 1;
    ids = (int64_t *)malloc(sizeof(int64_t) * (size_t)d.docs.n_rows);
    texts = (const char **)malloc(sizeof(char *) * (size_t)d.docs.n_rows);
    for (i = 0; i < d.docs.n_rows; i++) {
        ids[i] = atoll(tsv_get(&d.docs, i, 0));
        texts[i] = tsv_get(&d.docs, i, 3);
    }
    t0 = retrlm_time_seconds();
    if (retrlm_bm25_add_batch(&bm, d.docs.n_rows, ids, texts, NULL) || retrlm_bm25_commit(&bm)) {
        printf("build failed: %s\n", retrlm_last_error());
        return 1;
    }
    t_build = retrlm_time_seconds() - t0;
    nq = d.queries.n_rows;
    qids = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq);
    queries = (const char **)malloc(sizeof(char *) * (size_t)nq);
    ranked = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * (size_t)K);
    nf = (int *)malloc(sizeof(int) * (size_t)nq);
    for (i = 0; i < nq; i++) {
        qids[i] = atoll(tsv_get(&d.queries, i, 0));
        queries[i] = tsv_get(&d.queries, i, 1);
    }
    t0 = retrlm_time_seconds();
    if (retrlm_bm25_search_batch(&bm, nq, queries, NULL, K, 0, ranked, NULL, nf)) return 1;
    t_search = retrlm_time_seconds() - t0;
    { // the pruned top k must be exactly the exhaustive top k (ids and scores, bit for bit)
        int64_t *ex = (int64_t *)malloc(sizeof(int64_t) * (size_t)nq * (size_t)K);
        float *s1 = (float *)malloc(sizeof(float) * (size_t)nq * (size_t)K), *s2 = (float *)malloc(sizeof(float) * (size_t)nq * (size_t)K);
        int *nf2 = (int *)malloc(sizeof(int) * (size_t)nq), kk;
        static const int ks[2] = {10, 1000};
        for (kk = 0; kk < 2; kk++) {
            int k = ks[kk], q, j;
            retrlm_bm25_search_batch(&bm, nq, queries, NULL, k, 0, ranked, s1, nf);
            retrlm_bm25_search_batch(&bm, nq, queries, NULL, k, RETRLM_BM25_EXHAUSTIVE, ex, s2, nf2);
            for (q = 0; q < nq; q++) {
                int same = nf[q] == nf2[q];
                for (j = 0; same && j < nf[q]; j++)
                    same = ranked[(size_t)q * k + j] == ex[(size_t)q * k + j] && !memcmp(&s1[(size_t)q * k + j], &s2[(size_t)q * k + j], sizeof(float));
                mismatches[kk] += !same;
            }
        }
        free(ex);
        free(s1);
        free(s2);
        free(nf2);
        retrlm_bm25_search_batch(&bm, nq, queries, NULL, K, 0, ranked, NULL, nf);
    }
    qrels = (retrlm_qrel *)malloc(sizeof(retrlm_qrel) * (size_t)d.qrels.n_rows);
    for (i = 0; i < d.qrels.n_rows; i++) {
        qrels[i].qid = atoll(tsv_get(&d.qrels, i, 0));
        qrels[i].docid = atoll(tsv_get(&d.qrels, i, 1));
        qrels[i].grade = atoi(tsv_get(&d.qrels, i, 2));
    }
    retrlm_eval_retrieval(nq, qids, ranked, nf, K, qrels, (size_t)d.qrels.n_rows, 1, &lenient);
    retrlm_eval_retrieval(nq, qids, ranked, nf, K, qrels, (size_t)d.qrels.n_rows, 2, &strict);
    printf("BM25 on debpkg dev (%d documents, %d terms, %d queries; k1 %.2f, b %.2f, EnglishAnalyzer chain)\n",
           bm.n_docs, bm.n_terms, nq, (double)bm.k1, (double)bm.b);
    printf("  build %.2f s; top-%d search of all queries %.2f s\n", t_build, K, t_search);
    printf("  pruned vs exhaustive top 10 / top 1000: %d / %d queries differ\n\n", mismatches[0], mismatches[1]);
    printf("  %-9s %8s %8s %8s %8s %8s %8s\n", "judgment", "queries", "MRR@10", "nDCG@10", "R@10", "R@100", "R@1000");
    printf("  %-9s %8d %8.4f %8.4f %8.4f %8.4f %8.4f\n", "lenient", lenient.n_queries, lenient.mrr10, lenient.ndcg10,
           lenient.recall10, lenient.recall100, lenient.recall1000);
    printf("  %-9s %8d %8.4f %8.4f %8.4f %8.4f %8.4f\n\n", "strict", strict.n_queries, strict.mrr10, strict.ndcg10,
           strict.recall10, strict.recall100, strict.recall1000);
    printf("mrr10=%.4f\nndcg10=%.4f\nrecall10=%.4f\nrecall100=%.4f\nrecall1000=%.4f\n", lenient.mrr10, lenient.ndcg10,
           lenient.recall10, lenient.recall100, lenient.recall1000);
    printf("strict_mrr10=%.4f\nstrict_ndcg10=%.4f\nstrict_recall10=%.4f\nstrict_recall100=%.4f\nstrict_recall1000=%.4f\n",
           strict.mrr10, strict.ndcg10, strict.recall10, strict.recall100, strict.recall1000);
    printf("pruned_mismatch_top10=%d\npruned_mismatch_top1000=%d\n", mismatches[0], mismatches[1]);
    printf("build_s=%.3f\nn_terms=%d\npostings_bytes=%zu\n", t_build, bm.n_terms, bm.postings_bytes);
    retrlm_bm25_free(&bm);
    free(ids);
    free((void *)texts);
    free(qids);
    free((void *)queries);
    free(ranked);
    free(nf);
    free(qrels);
    debpkg_free(&d);
    return 0;
}
