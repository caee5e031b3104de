// dense_debpkg - strategy 1's retriever side on debpkg: a bi-encoder trained from scratch with
// DPR (in-batch negatives + one BM25 hard negative; train queries only), optionally
// pre-trained with Contriever crops of the documents, then BM25 / dense / hybrid on the dev
// queries: MRR@10, nDCG@10, Recall@{10,100}, lenient (grade >= 1) and strict (grade 2).
// The hybrid's settings (RRF or linear, weight) are chosen on 1,000 held-out train queries,
// never on dev. Prints a table, then name=value lines.
//   make bench-dense_debpkg        (RETRLM_DATA=../shared/data by default)
//   build/bench/dense_debpkg [dpr_steps] [contriever_steps] [out_dir]
// Environment: DIM (128), LAYERS (2), BATCH (64 queries a step), DOC_TOKENS (64), LR (1e-3).
// The trained encoder is kept in out_dir (default build/debpkg): a second run reuses it. The
// document and dev query embeddings are written there as docs.fvecs and queries_dev.fvecs
// (bench/index reads them: RETRLM_BENCH_BASE, RETRLM_BENCH_QUERY).
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "machine.h"
#include "bm25_data.h"

#define HELD_OUT 1000 // train queries kept out of training to choose the hybrid's settings
#define DEPTH 100     // candidates a retriever contributes to fusion

static void die(const char *what) {
    fprintf(stderr, "dense_debpkg: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

static int progress(void *user, const char *stage, double done, double total) {
    static double last;
    double now = retrlm_time_seconds();
    retrlm_retriever_train_state *st = (retrlm_retriever_train_state *)user;
    if (now - last > 15 || done >= total) {
        if (st) fprintf(stderr, "  %s %.0f / %.0f  loss %.3f  in-batch accuracy %.2f\n", stage, done, total, st->last_loss, st->last_acc);
        else fprintf(stderr, "  %s %.0f / %.0f\n", stage, done, total);
        last = now;
    }
    return 0;
}

static int env_int(const char *name, int def) { return getenv(name) ? atoi(getenv(name)) : def; }

// texts (n) -> CSR token arrays
static void tokenize(const retrlm_tokenizer *tok, const char *const *texts, int n, int **ids, size_t **off) {
    size_t total = 0;
    *off = (size_t *)malloc(sizeof(size_t) * ((size_t)n + 1));
    if (retrlm_tokenizer_encode_batch(tok, texts, NULL, n, 0, NULL, 0, *off, &total)) die("encode");
    *ids = (int *)malloc(sizeof(int) * (total + 1));
    if (retrlm_tokenizer_encode_batch(tok, texts, NULL, n, 0, *ids, total, *off, &total)) die("encode");
}

typedef struct run {
    int      n;          // queries
    int64_t *qids;       // (n)
    const char **text;   // (n)
    int64_t *bm25;       // (n, DEPTH) doc ids
    float   *bm25_s;
    int     *bm25_n;
    int64_t *dense;      // (n, DEPTH)
    float   *dense_s;
    int     *dense_n;
} run;

static void run_alloc(run *r, int n) {
    memset(r, 0, sizeof *r);
    r->n = n;
    r->qids = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    r->text = (const char **)malloc(sizeof(char *) * (size_t)n);
    r->bm25 = (int64_t *)malloc(sizeof(int64_t) * (size_t)n * DEPTH);
    r->dense = (int64_t *)malloc(sizeof(int64_t) * (size_t)n * DEPTH);
    r->bm25_s = (float *)malloc(sizeof(float) * (size_t)n * DEPTH);
    r->dense_s = (float *)malloc(sizeof(float) * (size_t)n * DEPTH);
    r->bm25_n = (int *)malloc(sizeof(int) * (size_t)n);
    r->dense_n = (int *)malloc(sizeof(int) * (size_t)n);
}

static void run_free(run *r) {
    free(r->qids), free(r->text), free(r->bm25), free(r->dense), free(r->bm25_s), free(r->dense_s);
    free(r->bm25_n), free(r->dense_n);
}

// both retrievers' top DEPTH for every query of r
static void retrieve(run *r, const retrlm_bm25 *bm, retrlm_encoder *e, const retrlm_tokenizer *tok, const retrlm_index *ix) {
    float *q = (float *)malloc(sizeof(float) * (size_t)r->n * (size_t)e->dim);
    int i, j;
    if (retrlm_bm25_search_batch(bm, r->n, r->text, NULL, DEPTH, 0, r->bm25, r->bm25_s, r->bm25_n)) die("bm25 search");
    if (retrlm_encoder_encode_texts(e, tok, RETRLM_QUERY, r->text, NULL, (size_t)r->n, q, NULL, NULL)) die("encode queries");
    if (retrlm_index_search(ix, q, r->n, e->dim, DEPTH, NULL, r->dense, r->dense_s)) die("dense search");
    for (i = 0; i < r->n; i++) {
        for (j = 0; j < DEPTH && r->dense[(size_t)i * DEPTH + j] >= 0; j++) {}
        r->dense_n[i] = j;
    }
    free(q);
}

// metrics of the ranking p makes from r's two lists
static void judge(const run *r, const retrlm_retrieve_params *p, const retrlm_qrel *qrels, size_t nq, int min_grade, retrlm_retrieval_metrics *m) {
    int64_t *ranked = (int64_t *)malloc(sizeof(int64_t) * (size_t)r->n * DEPTH);
    int *nr = (int *)malloc(sizeof(int) * (size_t)r->n), i;
    for (i = 0; i < r->n; i++)
        nr[i] = retrlm_fuse(p, r->bm25 + (size_t)i * DEPTH, r->bm25_s + (size_t)i * DEPTH, r->bm25_n[i], r->dense + (size_t)i * DEPTH,
                            r->dense_s + (size_t)i * DEPTH, r->dense_n[i], DEPTH, ranked + (size_t)i * DEPTH, NULL);
    if (retrlm_eval_retrieval(r->n, r->qids, ranked, nr, DEPTH, qrels, nq, min_grade, m)) die("eval");
    free(ranked), free(nr);
}

static retrlm_qrel *read_qrels(const tsv_file *t) {
    retrlm_qrel *q = (retrlm_qrel *)malloc(sizeof(retrlm_qrel) * (size_t)t->n_rows);
    int i;
    for (i = 0; i < t->n_rows; i++) {
        q[i].qid = atoll(tsv_get(t, i, 0));
        q[i].docid = atoll(tsv_get(t, i, 1));
        q[i].grade = atoi(tsv_get(t, i, 2));
    }
    return q;
}

static int cmp_qrel(const void *a, const void *b) {
    const retrlm_qrel *x = (const retrlm_qrel *)a, *y = (const retrlm_qrel *)b;
    return x->qid < y->qid ? -1 : x->qid > y->qid ? 1 : x->docid < y->docid ? -1 : x->docid > y->docid;
}

// 1 if docid is judged relevant (any grade > 0) for qid; qrels sorted by (qid, docid)
static int relevant(const retrlm_qrel *q, size_t n, int64_t qid, int64_t docid) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (q[mid].qid < qid || (q[mid].qid == qid && q[mid].docid < docid)) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && q[lo].qid == qid && q[lo].docid == docid && q[lo].grade > 0;
}

int main(int argc, char **argv) {
    int dpr_steps = argc > 1 ? atoi(argv[1]) : 3000, ctr_steps = argc > 2 ? atoi(argv[2]) : 0;
    const char *out = argc > 3 ? argv[3] : "build/debpkg";
    const char *root = getenv("RETRLM_DATA") ? getenv("RETRLM_DATA") : "../shared/data";
    char path[1024], enc_path[1024], tok_path[1024];
    debpkg d;
    tsv_file tq, tr;
    retrlm_tokenizer tok;
    retrlm_bm25 bm;
    retrlm_bm25_config bc;
    retrlm_encoder enc;
    retrlm_index ix;
    retrlm_index_config ic;
    retrlm_qrel *qrels_dev, *qrels_train;
    const char **doc_text;
    int64_t *doc_id;
    int i, n_docs, *doc_ids, *q_ids, n_pairs = 0, *pq, *pd, *hn, n_train_q;
    size_t *doc_off, *q_off;
    double t_train = 0, t_encode, t_ctr = 0;
    float *emb;
    run dev, held;
    retrlm_retrieval_metrics m[3][2];
    retrlm_retrieve_params modes[3], best;
    double best_mrr = -1;
    bench_machine();

    snprintf(path, sizeof path, "mkdir -p '%s'", out);
    if (system(path) != 0) return 1;
    if (!debpkg_load(&d, root)) { printf("debpkg data not found under %s\n", root); return 1; }
    snprintf(path, sizeof path, "%s/debpkg/queries_train.tsv", root);
    if (!tsv_read(&tq, path, 0) || tq.n_cols != 2) die("queries_train.tsv");
    snprintf(path, sizeof path, "%s/debpkg/qrels_train.tsv", root);
    if (!tsv_read(&tr, path, 0) || tr.n_cols != 3) die("qrels_train.tsv");
    n_docs = d.docs.n_rows;
    doc_text = (const char **)malloc(sizeof(char *) * (size_t)n_docs);
    doc_id = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_docs);
    for (i = 0; i < n_docs; i++) {
        doc_id[i] = atoll(tsv_get(&d.docs, i, 0));
        doc_text[i] = tsv_get(&d.docs, i, 3);
        if (doc_id[i] != i) die("docs.tsv ids are not 0..n-1");
    }

    // tokenizer: BPE 8192 on the documents
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.rlm", out);
    if (retrlm_tokenizer_load(&tok, tok_path)) {
        retrlm_tokenizer_train_config tc;
        size_t *lens = (size_t *)malloc(sizeof(size_t) * (size_t)n_docs);
        for (i = 0; i < n_docs; i++) lens[i] = strlen(doc_text[i]);
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = 8192;
        if (retrlm_tokenizer_train(&tok, &tc, doc_text, lens, n_docs, NULL, NULL)) die("tokenizer");
        if (retrlm_tokenizer_save(&tok, tok_path)) die("save tokenizer");
        free(lens);
    }

    // BM25 over the documents (ids = docids)
    memset(&bc, 0, sizeof bc);
    if (retrlm_bm25_init(&bm, &bc) || retrlm_bm25_add_batch(&bm, n_docs, doc_id, doc_text, NULL) || retrlm_bm25_commit(&bm)) die("bm25");

    // train queries: the last HELD_OUT (in file order) are held out; pairs = grade-2 judgments
    n_train_q = tq.n_rows - HELD_OUT;
    qrels_train = read_qrels(&tr);
    qsort(qrels_train, (size_t)tr.n_rows, sizeof *qrels_train, cmp_qrel);
    {
        const char **qt = (const char **)malloc(sizeof(char *) * (size_t)n_train_q);
        int64_t *qid = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_train_q), *top;
        int *nf, *row = NULL, maxq = 0, j;
        for (i = 0; i < n_train_q; i++) {
            qt[i] = tsv_get(&tq, i, 1);
            qid[i] = atoll(tsv_get(&tq, i, 0));
            if (qid[i] > maxq) maxq = (int)qid[i];
        }
        row = (int *)malloc(sizeof(int) * ((size_t)maxq + 1));
        for (i = 0; i <= maxq; i++) row[i] = -1;
        for (i = 0; i < n_train_q; i++) row[qid[i]] = i;
        tokenize(&tok, qt, n_train_q, &q_ids, &q_off);
        tokenize(&tok, doc_text, n_docs, &doc_ids, &doc_off);
        pq = (int *)malloc(sizeof(int) * (size_t)tr.n_rows);
        pd = (int *)malloc(sizeof(int) * (size_t)tr.n_rows);
        hn = (int *)malloc(sizeof(int) * (size_t)tr.n_rows);
        // hard negatives: the best BM25 document that is not judged relevant
        top = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_train_q * 10);
        nf = (int *)malloc(sizeof(int) * (size_t)n_train_q);
        if (retrlm_bm25_search_batch(&bm, n_train_q, qt, NULL, 10, 0, top, NULL, nf)) die("hard negatives");
        for (i = 0; i < tr.n_rows; i++) {
            const retrlm_qrel *q = &qrels_train[i];
            int r = q->qid <= maxq ? row[q->qid] : -1;
            if (r < 0 || q->grade < 2 || q->docid < 0 || q->docid >= n_docs) continue;
            pq[n_pairs] = r;
            pd[n_pairs] = (int)q->docid;
            hn[n_pairs] = -1;
            for (j = 0; j < nf[r]; j++)
                if (!relevant(qrels_train, (size_t)tr.n_rows, q->qid, top[(size_t)r * 10 + j])) {
                    hn[n_pairs] = (int)top[(size_t)r * 10 + j];
                    break;
                }
            n_pairs++;
        }
        free(qt), free(qid), free(top), free(nf), free(row);
    }
    fprintf(stderr, "%d documents, %d training queries, %d pairs\n", n_docs, n_train_q, n_pairs);

    // the encoder: trained, or loaded from out_dir
    snprintf(enc_path, sizeof enc_path, "%s/encoder-%d-%d.rlm", out, ctr_steps, dpr_steps);
    if (retrlm_encoder_load(&enc, enc_path)) {
        retrlm_encoder_config ec;
        retrlm_adamw opt;
        retrlm_adamw_config oc;
        retrlm_adamw_group g[6];
        retrlm_retriever_train_state st;
        float lr = getenv("LR") ? (float)atof(getenv("LR")) : 1e-3f;
        int ng;
        double t0;
        memset(&ec, 0, sizeof ec);
        ec.model.vocab_size = tok.n_vocab;
        ec.model.dim = env_int("DIM", 128);
        ec.model.n_layers = env_int("LAYERS", 2);
        ec.model.n_heads = 4;
        ec.model.seed = 1;
        ec.normalize = 1;
        ec.max_query_tokens = 32;
        ec.max_doc_tokens = env_int("DOC_TOKENS", 64);
        ec.max_batch = env_int("BATCH", 64);
        if (retrlm_encoder_init(&enc, &ec)) die("encoder");
        ng = retrlm_encoder_param_groups(&enc, lr, 0.01f, g);
        if (ctr_steps > 0) { // Contriever pre-training on the documents
            retrlm_contriever_config cc;
            memset(&oc, 0, sizeof oc);
            oc.warmup_steps = ctr_steps / 20;
            oc.total_steps = ctr_steps;
            if (retrlm_adamw_init(&opt, &oc, g, ng)) die("optimizer");
            memset(&cc, 0, sizeof cc);
            cc.docs.ids = doc_ids, cc.docs.off = doc_off, cc.docs.n = (size_t)n_docs;
            cc.steps = ctr_steps;
            cc.progress = progress;
            retrlm_retriever_train_state_init(&st, 2);
            cc.progress_user = &st;
            t0 = retrlm_time_seconds();
            if (retrlm_contriever_train(&enc, &opt, &cc, &st)) die("contriever");
            t_ctr = retrlm_time_seconds() - t0;
            retrlm_adamw_free(&opt);
        }
        if (dpr_steps > 0) {
            retrlm_dpr_config dc;
            memset(&oc, 0, sizeof oc);
            oc.warmup_steps = dpr_steps / 20;
            oc.total_steps = dpr_steps;
            if (retrlm_adamw_init(&opt, &oc, g, ng)) die("optimizer");
            memset(&dc, 0, sizeof dc);
            dc.queries.ids = q_ids, dc.queries.off = q_off, dc.queries.n = (size_t)n_train_q;
            dc.docs.ids = doc_ids, dc.docs.off = doc_off, dc.docs.n = (size_t)n_docs;
            dc.pair_query = pq, dc.pair_doc = pd, dc.hard_negative = hn, dc.n_pairs = (size_t)n_pairs;
            dc.temperature = 0.05f;
            dc.steps = dpr_steps;
            dc.progress = progress;
            retrlm_retriever_train_state_init(&st, 1);
            dc.progress_user = &st;
            t0 = retrlm_time_seconds();
            if (retrlm_dpr_train(&enc, &opt, &dc, &st)) die("dpr");
            t_train = retrlm_time_seconds() - t0;
            retrlm_adamw_free(&opt);
        }
        if (retrlm_encoder_save(&enc, enc_path)) die("save encoder");
        fprintf(stderr, "encoder trained: Contriever %d steps %.0f s, DPR %d steps %.0f s\n", ctr_steps, t_ctr, dpr_steps, t_train);
    }

    // encode the corpus into a flat inner-product index
    emb = (float *)malloc(sizeof(float) * (size_t)n_docs * (size_t)enc.dim);
    {
        double t0 = retrlm_time_seconds();
        if (retrlm_encoder_encode_texts(&enc, &tok, RETRLM_DOC, doc_text, NULL, (size_t)n_docs, emb, progress, NULL)) die("encode corpus");
        t_encode = retrlm_time_seconds() - t0;
    }
    snprintf(path, sizeof path, "%s/docs.fvecs", out); // for bench/index on real embeddings
    if (retrlm_fvecs_write(path, emb, (size_t)n_docs, enc.dim)) die("write docs.fvecs");
    memset(&ic, 0, sizeof ic);
    ic.dim = enc.dim;
    ic.metric = RETRLM_METRIC_IP;
    if (retrlm_index_init(&ix, &ic) || retrlm_index_add(&ix, emb, (size_t)n_docs, enc.dim, doc_id)) die("index");

    // held-out train queries choose the hybrid; dev queries are only measured
    run_alloc(&held, HELD_OUT);
    for (i = 0; i < HELD_OUT; i++) {
        held.qids[i] = atoll(tsv_get(&tq, n_train_q + i, 0));
        held.text[i] = tsv_get(&tq, n_train_q + i, 1);
    }
    retrieve(&held, &bm, &enc, &tok, &ix);
    {
        static const float weights[9] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};
        retrlm_retrieve_params p;
        retrlm_retrieval_metrics hm;
        int w;
        for (w = -1; w < 9; w++) {
            memset(&p, 0, sizeof p);
            p.mode = w < 0 ? RETRLM_RETRIEVE_RRF : RETRLM_RETRIEVE_LINEAR;
            if (w >= 0) p.weight = weights[w];
            judge(&held, &p, qrels_train, (size_t)tr.n_rows, 1, &hm);
            fprintf(stderr, "  held-out: %s %.1f: MRR@10 %.4f\n", w < 0 ? "rrf" : "linear", w < 0 ? 60.0 : weights[w], hm.mrr10);
            if (hm.mrr10 > best_mrr) best_mrr = hm.mrr10, best = p;
        }
    }
    run_alloc(&dev, d.queries.n_rows);
    for (i = 0; i < dev.n; i++) {
        dev.qids[i] = atoll(tsv_get(&d.queries, i, 0));
        dev.text[i] = tsv_get(&d.queries, i, 1);
    }
    retrieve(&dev, &bm, &enc, &tok, &ix);
    {
        float *qe = (float *)malloc(sizeof(float) * (size_t)dev.n * (size_t)enc.dim);
        if (retrlm_encoder_encode_texts(&enc, &tok, RETRLM_QUERY, dev.text, NULL, (size_t)dev.n, qe, NULL, NULL)) die("encode dev");
        snprintf(path, sizeof path, "%s/queries_dev.fvecs", out);
        if (retrlm_fvecs_write(path, qe, (size_t)dev.n, enc.dim)) die("write queries_dev.fvecs");
        free(qe);
    }
    qrels_dev = read_qrels(&d.qrels);
    memset(modes, 0, sizeof modes);
    modes[0].mode = RETRLM_RETRIEVE_BM25;
    modes[1].mode = RETRLM_RETRIEVE_DENSE;
    modes[2] = best;
    for (i = 0; i < 3; i++) {
        judge(&dev, &modes[i], qrels_dev, (size_t)d.qrels.n_rows, 1, &m[i][0]);
        judge(&dev, &modes[i], qrels_dev, (size_t)d.qrels.n_rows, 2, &m[i][1]);
    }
    {
        static const char *names[3] = {"bm25", "dense", "hybrid"};
        printf("debpkg dev (%d queries, %d documents); encoder %d layers dim %d, %s, doc tokens %d; DPR %d steps of %d queries (%.0f s)",
               dev.n, n_docs, enc.config.model.n_layers, enc.config.model.dim, enc.config.separate ? "separate" : "shared",
               enc.config.max_doc_tokens, dpr_steps, enc.config.max_batch, t_train);
        if (ctr_steps) printf(" after Contriever %d steps (%.0f s)", ctr_steps, t_ctr);
        printf("\nhybrid: %s", best.mode == RETRLM_RETRIEVE_RRF ? "reciprocal-rank fusion (k 60)" : "linear");
        if (best.mode == RETRLM_RETRIEVE_LINEAR) printf(", dense weight %.1f", best.weight);
        printf(", chosen on %d held-out train queries (MRR@10 %.4f)\n\n", HELD_OUT, best_mrr);
        printf("| retriever | MRR@10 lenient / strict | nDCG@10 lenient / strict | R@10 | R@100 |\n|---|---|---|---:|---:|\n");
        for (i = 0; i < 3; i++)
            printf("| %s | %.4f / %.4f | %.4f / %.4f | %.4f | %.4f |\n", names[i], m[i][0].mrr10, m[i][1].mrr10, m[i][0].ndcg10,
                   m[i][1].ndcg10, m[i][0].recall10, m[i][0].recall100);
        printf("\ncorpus encoding: %d documents in %.1f s (%.0f documents/s)\n", n_docs, t_encode, n_docs / t_encode);
        for (i = 0; i < 3; i++)
            printf("debpkg.%s.mrr10=%.4f\ndebpkg.%s.mrr10_strict=%.4f\ndebpkg.%s.ndcg10=%.4f\ndebpkg.%s.recall10=%.4f\ndebpkg.%s.recall100=%.4f\n",
                   names[i], m[i][0].mrr10, names[i], m[i][1].mrr10, names[i], m[i][0].ndcg10, names[i], m[i][0].recall10, names[i],
                   m[i][0].recall100);
        printf("debpkg.encode.docs_per_s=%.1f\ndebpkg.dpr.train_s=%.0f\ndebpkg.contriever.train_s=%.0f\n", n_docs / t_encode, t_train, t_ctr);
    }
    run_free(&dev), run_free(&held);
    retrlm_index_free(&ix);
    retrlm_encoder_free(&enc);
    retrlm_bm25_free(&bm);
    retrlm_tokenizer_free(&tok);
    free(emb), free(qrels_dev), free(qrels_train), free(doc_text), free(doc_id), free(doc_ids), free(doc_off), free(q_ids), free(q_off);
    free(pq), free(pd), free(hn);
    tsv_free(&tq), tsv_free(&tr);
    debpkg_free(&d);
    return 0;
}
