// tests/tour.c - README.md's API tour, as a translation unit that compiles. tests/run.sh builds
// it with the strict flags and checks that the ```c block under "## API tour" in README.md is
// the text between the two marker lines, byte for byte: edit the tour here, then copy it there.
// It is compiled and linked, never run: it reads files that are not here (GPT-2's vocabulary,
// vectors).
// tour: begin
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdlib.h>
#include <string.h>

// docs: a corpus of n_docs texts; test: held-out text (test_len bytes); query: a question.
// Results unchecked here: every call returns retrlm_result. One LM goes through every trainer.
// It compiles and links as it stands: tests/run.sh builds it from tests/tour.c.
void tour(const char *const *docs, int n_docs, const char *test, size_t test_len,
          const char *query) {
    retrlm_tokenizer tok;                        // GPT-2's, or train your own
    retrlm_tokenizer_load_gpt2(&tok, "encoder.json", "vocab.bpe");
    size_t n;                                    // the docs as one token stream: out NULL asks
    retrlm_tokenizer_encode_batch(&tok, docs, NULL, n_docs, 0, NULL, 0, NULL, &n); // the size,
    int *ids = malloc(n * sizeof *ids);          // then the ids, and off[d]: where doc d starts
    size_t *off = malloc(((size_t)n_docs + 1) * sizeof *off);
    retrlm_tokenizer_encode_batch(&tok, docs, NULL, n_docs, 0, ids, n, off, &n);
    int64_t *token_doc = malloc(n * sizeof *token_doc);             // each token's document,
    int64_t *doc_first = malloc((size_t)n_docs * sizeof *doc_first); // each doc's first token
    for (int d = 0; d < n_docs; d++) {
        doc_first[d] = (int64_t)off[d];
        for (size_t i = off[d]; i < off[d + 1]; i++) token_doc[i] = d;
    }
    int *test_ids; size_t n_test;                                   // one call; retrlm_free it
    retrlm_tokenizer_encode_alloc(&tok, test, test_len, 0, &test_ids, &n_test);

    retrlm_bm25 bm; retrlm_bm25_init(&bm, NULL);  // BM25, Lucene's formula, block-max pruning
    for (int d = 0; d < n_docs; d++) retrlm_bm25_add(&bm, d, docs[d], strlen(docs[d]));
    retrlm_bm25_commit(&bm);
    int64_t top_ids[10]; float top_scores[10]; int found;
    retrlm_bm25_search(&bm, query, strlen(query), 10, 0, top_ids, top_scores, &found);

    float *x; size_t nx; int dim;                                   // vectors: .fvecs or .npy
    retrlm_fvecs_read("vectors.fvecs", &x, &nx, &dim);
    retrlm_index_config ic = {0}; ic.dim = dim; ic.nlist = 1024;    // IVF (0: flat), f32 or SQ8
    retrlm_index ix; retrlm_index_init(&ix, &ic);
    retrlm_index_train(&ix, x, nx, dim); retrlm_index_add(&ix, x, nx, dim, NULL); // ids 0, 1, ...
    int64_t nn_ids[5 * 10]; float nn_scores[5 * 10];                // the first 5 vectors' 10 best
    retrlm_index_search(&ix, x, 5, dim, 10, NULL, nn_ids, nn_scores);

    retrlm_model_config mc = {0}; mc.vocab_size = tok.n_vocab;     // RMSNorm, RoPE, SwiGLU
    mc.max_batch = 8;                                               // sequences a forward
    retrlm_model lm; retrlm_model_init(&lm, &mc);
    retrlm_adamw_group g[6]; retrlm_adamw opt;                      // AdamW over the LM's weights
    retrlm_adamw_init(&opt, NULL, g, retrlm_model_param_groups(&lm, 3e-4f, 0.1f, g));
    retrlm_lm_train_config lm_cfg = {0}; lm_cfg.train = ids; lm_cfg.n_train = n;
    lm_cfg.steps = 2000;
    retrlm_lm_train_state st; retrlm_lm_train_state_init(&st, 1);  // step 0: a new run
    retrlm_lm_train(&lm, &opt, &lm_cfg, &st);                       // AdamW, checkpoints, resume

    retrlm_encoder_config ec = {0}; ec.model.vocab_size = tok.n_vocab; ec.normalize = 1;
    retrlm_encoder enc; retrlm_encoder_init(&enc, &ec);  // bi-encoder, shared or separate weights
    retrlm_adamw opt_enc;                                           // the encoder's own AdamW
    retrlm_adamw_init(&opt_enc, NULL, g, retrlm_encoder_param_groups(&enc, 1e-4f, 0.01f, g));
    retrlm_retriever_train_state rst; retrlm_retriever_train_state_init(&rst, 1);
    retrlm_token_texts texts = {ids, off, (size_t)n_docs};          // the docs, tokenised
    retrlm_dpr_config dpr_cfg = {0}; dpr_cfg.docs = texts; dpr_cfg.steps = 1000;
    // dpr_cfg.queries, .pair_query, .pair_doc, .n_pairs, .hard_negative: your labelled pairs
    retrlm_dpr_train(&enc, &opt_enc, &dpr_cfg, &rst);    // in-batch + BM25 hard negatives
    retrlm_moco moco; retrlm_moco_init(&moco, &enc, 4096, 0.999f);  // momentum keys and a queue of
    retrlm_contriever_config ctr_cfg = {0}; ctr_cfg.docs = texts;   // negatives (moco NULL: the
    ctr_cfg.moco = &moco; ctr_cfg.steps = 1000;                     // batch's alone)
    retrlm_retriever_train_state_init(&rst, 1);
    retrlm_contriever_train(&enc, &opt_enc, &ctr_cfg, &rst);        // unsupervised: random crops

    retrlm_datastore ds; retrlm_datastore_init(&ds, NULL);         // retrieval units + BM25
    for (int d = 0; d < n_docs; d++)                                // a unit a 64-token chunk
        retrlm_datastore_add(&ds, &tok, d, docs[d], strlen(docs[d]), RETRLM_DATASTORE_CHUNK);
    retrlm_datastore_commit(&ds);
    retrlm_datastore_embed(&ds, &enc, &tok, NULL, NULL, NULL);      // + dense; again after training
    retrlm_lsr_config lsr_cfg = {0}; lsr_cfg.lm = &lm; lsr_cfg.lm_tok = &tok; lsr_cfg.ds = &ds;
    lsr_cfg.tokens = ids; lsr_cfg.n_tokens = n; lsr_cfg.token_doc = token_doc;
    lsr_cfg.steps = 1000; lsr_cfg.refresh_every = 100;
    retrlm_retriever_train_state_init(&rst, 1);
    retrlm_lsr_train(&enc, &opt_enc, &lsr_cfg, &rst);    // REPLUG LSR: KL(LM's preference ||
                                                         // retriever) over the dense top k,
                                                         // re-embedding every refresh_every steps
    retrlm_incontext_train_config icl = {0}; icl.tok = &tok; icl.ds = &ds; icl.tokens = ids;
    icl.n_tokens = n; icl.token_doc = token_doc; icl.steps = 1000;
    retrlm_lm_train_state_init(&st, 1);
    retrlm_incontext_train(&lm, &opt, &icl, &st);  // the LM learns to read retrieved units

    mc.retro_chunk = 32; mc.retro_k = 2;         // RETRO: cross-attention to each 32-token chunk's
    retrlm_model retro; retrlm_model_init(&retro, &mc); // 2 neighbours, chunk + continuation
    retrlm_retro_neighbours_config nb_cfg = {0}; nb_cfg.chunk = 32; nb_cfg.k = 2;
    nb_cfg.min_overlap = 0.3f;                   // weak matches left out: none beats a wrong one
    retrlm_retro_neighbours nb, test_nb;         // a frozen retriever's, once; own docs excluded
    retrlm_retro_neighbours_build(&nb, &ds, &tok, ids, n, token_doc, &nb_cfg);
    retrlm_retro_neighbours_build(&test_nb, &ds, &tok, test_ids, n_test, NULL, &nb_cfg);
    retrlm_adamw opt_retro;                      // RETRO-fitting: retrlm_model_retro_param_groups
    retrlm_adamw_init(&opt_retro, NULL, g, retrlm_model_param_groups(&retro, 3e-4f, 0.1f, g));
    retrlm_retro_train_config rt_cfg = {0}; rt_cfg.train = ids; rt_cfg.n_train = n;
    rt_cfg.neighbours = &nb; rt_cfg.steps = 2000;
    retrlm_retro_train_state rt_st; retrlm_retro_train_state_init(&rt_st, 1);
    retrlm_retro_train(&retro, &opt_retro, &rt_cfg, &rt_st); // from scratch, or RETRO-fitting
    double bpb;
    retrlm_retro_bits_per_byte(&retro, test_ids, n_test, test_len, &test_nb, 256, &bpb);

    // the trainers' losses, for a strategy of your own: 8 queries, 20 units each, 16 tokens
    float scores[8 * 20] = {0}, gold[8 * 20] = {0}, dscores[8 * 20], loss;
    retrlm_kl_distill_loss(scores, gold, 8, 20, 0.1f, 0.1f, &loss, dscores); // LSR, Atlas PDist
    float loglik[8 * 20 * 16] = {0}, dloglik[8 * 20 * 16];
    retrlm_marginal_loss(scores, loglik, NULL, 8, 20, 16, 1.0f, &loss, dscores, dloglik); // REALM
    float logits[16 * 512] = {0}, sims[16 * 64] = {0}, dlogits[16 * 512], dsims[16 * 64];
    int mem_tokens[64] = {0}, targets[16] = {0};   // 16 positions, vocabulary 512, 64 entries
    retrlm_trime_loss(logits, 16, 512, sims, 64, mem_tokens, targets, &loss, dlogits, dsims, NULL);

    retrlm_joint_config jt_cfg = {0}; jt_cfg.lm_tok = &tok; jt_cfg.ds = &ds; jt_cfg.tokens = ids;
    jt_cfg.n_tokens = n; jt_cfg.token_doc = token_doc; jt_cfg.objective = RETRLM_JOINT_PDIST;
    jt_cfg.refresh_every = 100; jt_cfg.refresh_delay = 10; jt_cfg.steps = 1000;
    retrlm_joint_state jt_st; retrlm_joint_state_init(&jt_st, 1);
    retrlm_joint_train(&lm, &opt, &enc, &opt_enc, &jt_cfg, &jt_st); // strategy 3: REALM, Atlas
                                                 // PDist or EMDR^2; the index refreshed in the
                                                 // background (same result for any thread count),
                                                 // re-ranked, or query-side; staleness in jt_st
    retrlm_trime_train_config tt_cfg = {0}; tt_cfg.train = ids; tt_cfg.n_train = n;
    tt_cfg.trime.batching = RETRLM_TRIME_LONG; tt_cfg.steps = 1000;
    retrlm_lm_train_state_init(&st, 1);
    retrlm_trime_train(&lm, &opt, &tt_cfg, &st); // strategy 4: TRIME, local / long / BM25-grouped

    retrlm_model_config npm_mc = {0}; npm_mc.vocab_size = tok.n_vocab; npm_mc.max_batch = 8;
    npm_mc.bidirectional = 1; npm_mc.no_logits = 1;  // NPM: an encoder, no vocabulary out
    retrlm_model npm; retrlm_model_init(&npm, &npm_mc);
    retrlm_adamw opt_npm;
    retrlm_adamw_init(&opt_npm, NULL, g, retrlm_model_param_groups(&npm, 3e-4f, 0.1f, g));
    int mask = tok.n_vocab - 1;                  // a special token: GPT-2's <|endoftext|>
    retrlm_npm_train_config npm_cfg = {0}; npm_cfg.train = ids; npm_cfg.n_train = n;
    npm_cfg.mask_id = mask; npm_cfg.steps = 1000;
    retrlm_lm_train_state_init(&st, 1);
    retrlm_npm_train(&npm, &opt_npm, &npm_cfg, &st); // NPM: masked spans found in the batch
    retrlm_npm_index px; retrlm_npm_index_build(&px, &npm, ids, n, 0, NULL); // phrase index
    int seq[64], phrase[3]; float p;             // test text with its tokens 10..12 masked
    for (int i = 0; i < 64; i++) seq[i] = i >= 10 && i < 13 ? mask : test_ids[i];
    retrlm_npm_fill(&npm, &px, seq, 64, 10, 3, mask, 32, 0, phrase, &p); // likeliest phrase, p

    mc.rpt_dim = 64; mc.retro_start = 1;         // RPT: the RETRO model embeds its own chunks and
    retrlm_model rpt; retrlm_model_init(&rpt, &mc); // retrieves earlier ones of the same document
    retrlm_rpt_targets_config tg_cfg = {0}; tg_cfg.chunk = 32;
    retrlm_rpt_targets tg, test_tg;              // a reference LM's picks: scored once (the costly
    retrlm_rpt_targets_build(&tg, &lm, ids, n, doc_first, n_docs, &tg_cfg); // part), reused by
    retrlm_rpt_targets_save(&tg, "targets.rlm");  // every run
    int64_t test_first = 0;                      // the test text: one document; ref NULL: no gold
    retrlm_rpt_targets_build(&test_tg, NULL, test_ids, n_test, &test_first, 1, &tg_cfg);
    retrlm_adamw opt_rpt;
    retrlm_adamw_init(&opt_rpt, NULL, g, retrlm_model_param_groups(&rpt, 3e-4f, 0.1f, g));
    retrlm_rpt_train_config rpt_cfg = {0}; rpt_cfg.train = ids; rpt_cfg.n_train = n;
    rpt_cfg.targets = &tg; rpt_cfg.steps = 1000;
    retrlm_lm_train_state_init(&st, 1);
    retrlm_rpt_train(&rpt, &opt_rpt, &rpt_cfg, &st); // LM loss + LambdaRank for its retriever
    retrlm_rpt_eval rpt_eval; uint64_t bytes;
    retrlm_rpt_evaluate(&rpt, test_ids, n_test, &test_tg, RETRLM_RPT_OWN, NULL, &rpt_eval);
    retrlm_rpt_targets_bytes(&tok, test_ids, n_test, &test_tg, &bytes); // bpb = nats / ln 2 / bytes

    retrlm_retrieve_params rp = {0};             // BM25, DENSE, RRF (both fused), LINEAR, RERANK
    rp.mode = RETRLM_RETRIEVE_RRF;
    int units[5], n_units; float unit_scores[5];
    retrlm_datastore_retrieve(&ds, &rp, query, strlen(query), 5, RETRLM_NO_DOC, units, unit_scores,
                              &n_units);
    retrlm_knnlm knn; retrlm_knnlm_build(&knn, &lm, ids, n, 0, NULL); // kNN-LM: a key a position
    retrlm_ralm_config rc = {0}; rc.mode = RETRLM_RALM_REPLUG;      // or INCONTEXT
    rc.retrieve = &rp;                                              // how units are found
    rc.continuation = 1;                         // a unit read with what follows it in its document
    rc.knnlm = &knn;                                                // NULL: no kNN-LM
    retrlm_ralm_bits_per_byte(&lm, &tok, &ds, test_ids, n_test, test_len, &rc, &bpb, NULL);
    rc.mode = RETRLM_RALM_INCONTEXT;             // TRIME: local + long memory (not with REPLUG);
    rc.trime = &tt_cfg.trime; rc.trime_cache = 7 * 256; // the keys of the 7 segments before
    retrlm_ralm_bits_per_byte(&lm, &tok, &ds, test_ids, n_test, test_len, &rc, &bpb, NULL);

    retrlm_model_save(&lm, NULL, NULL, "lm.rlm");      // the weights (with opt and st: resumable)
    retrlm_model_config inf = {0}; inf.inference = 1; // to generate and score: no gradients, no
    retrlm_model gen; retrlm_model_load(&gen, "lm.rlm", &inf); // training activations; mmap'd
    retrlm_model lm8; retrlm_model_quantize(&lm8, &gen); // int8 weights (retrlm quantize): 1/4 size
    retrlm_sampler smp = {0.8f, 0, 0.95f};             // temperature, top-k, top-p
    retrlm_rng rng; retrlm_rng_seed(&rng, 1);
    int out[64], n_out;
    retrlm_model_generate(&lm8, test_ids, 16, 64, &smp, &rng, out, &n_out); // KV cache

    retrlm_model_free(&gen); retrlm_model_free(&lm8);
    retrlm_knnlm_free(&knn); retrlm_npm_index_free(&px);            // all yours to free; a free
    retrlm_rpt_targets_free(&tg); retrlm_rpt_targets_free(&test_tg); // of a zeroed or freed object
    retrlm_retro_neighbours_free(&nb); retrlm_retro_neighbours_free(&test_nb); // does nothing
    retrlm_datastore_free(&ds); retrlm_moco_free(&moco);            // (ds borrows enc: first)
    retrlm_adamw_free(&opt); retrlm_adamw_free(&opt_enc); retrlm_adamw_free(&opt_retro);
    retrlm_adamw_free(&opt_npm); retrlm_adamw_free(&opt_rpt);
    retrlm_model_free(&lm); retrlm_model_free(&retro); retrlm_model_free(&npm);
    retrlm_model_free(&rpt); retrlm_encoder_free(&enc);
    retrlm_index_free(&ix); retrlm_bm25_free(&bm); retrlm_tokenizer_free(&tok);
    retrlm_free(x); retrlm_free(test_ids); free(ids); free(off); free(token_doc); free(doc_first);
}
// tour: end

int main(void) { return 0; } // links the tour: every function it calls must exist
