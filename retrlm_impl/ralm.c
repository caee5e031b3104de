#include "internal.h"

// One sequence to score: a retrieval prefix (units) and the text window [ctx, end) whose tokens
// [start, end) are predicted. A block of the stream has one job (none, in-context) or one per
// retrieved unit (REPLUG), each with its mixing weight.
typedef struct retrlm__ralm_job {
    int    block;   // index into the block table of this round
    int    units[16]; // units prepended, in order (in-context may take several)
    int    n_units;
    float  logw;    // log mixing weight
    int    len;     // tokens in the sequence
    float *lp;      // (end - start) log-probabilities of the predicted tokens, filled by scoring
} retrlm__ralm_job;

typedef struct retrlm__ralm_block {
    size_t ctx, start, end; // stream offsets: context from ctx, predicted [start, end)
    int    first_job, n_jobs;
} retrlm__ralm_block;

static int retrlm__ralm_unit_len(const retrlm_datastore *ds, int u, int cap) {
    int n;
    retrlm_datastore_tokens(ds, u, &n);
    return n < cap ? n : cap;
}

// writes job j's tokens into seq (its len), units first
static void retrlm__ralm_fill(const retrlm_datastore *ds, const retrlm__ralm_job *j,
                              const retrlm__ralm_block *b, const int *tokens, int unit_cap,
                              int *seq) {
    int i, at = 0;
    for (i = 0; i < j->n_units; i++) {
        int len = retrlm__ralm_unit_len(ds, j->units[i], unit_cap);
        memcpy(seq + at, retrlm_datastore_tokens(ds, j->units[i], NULL), (size_t)len * sizeof(int));
        at += len;
    }
    memcpy(seq + at, tokens + b->ctx, (b->end - b->ctx) * sizeof(int));
}

// runs jobs [j0, j1) through the model, batch by batch, and fills their lp
static retrlm_result retrlm__ralm_score(retrlm_model *m, const retrlm_datastore *ds,
                                        const int *tokens, int unit_cap, retrlm__ralm_job *jobs,
                                        const retrlm__ralm_block *blocks, int j0, int j1,
                                        int *inputs, int *lengths) {
    const int B = m->config.max_batch, V = m->config.vocab_size;
    int j, r;
    retrlm_result res;
    for (j = j0; j < j1; j += B) {
        int rows = RETRLM__MIN(B, j1 - j), T = 1;
        for (r = 0; r < rows; r++) T = RETRLM__MAX(T, jobs[j + r].len - 1);
        for (r = 0; r < rows; r++) { // inputs are each sequence but its last token, padded
            retrlm__ralm_job *jb = &jobs[j + r];
            int *row = inputs + (size_t)r * T;
            retrlm__ralm_fill(ds, jb, &blocks[jb->block], tokens, unit_cap, row);
            lengths[r] = jb->len - 1;
            if (lengths[r] < T) memset(row + lengths[r], 0, (size_t)(T - lengths[r]) * sizeof(int));
        }
        res = retrlm_model_forward(m, inputs, rows, T, lengths, 0);
        if (res) return res;
        for (r = 0; r < rows; r++) {
            retrlm__ralm_job *jb = &jobs[j + r];
            const retrlm__ralm_block *b = &blocks[jb->block];
            int n_pred = (int)(b->end - b->start), p;
            // the predicted tokens are the last n_pred of the sequence: token at sequence index
            // q is predicted by the logits at q - 1
            for (p = 0; p < n_pred; p++) {
                int q = jb->len - n_pred + p;
                const float *logits = m->logits + ((size_t)r * T + (size_t)(q - 1)) * V;
                jb->lp[p] = logits[tokens[b->start + p]] - retrlm_logsumexp(logits, V);
            }
        }
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_ralm_bits_per_byte(retrlm_model *m, const retrlm_tokenizer *tok,
                                                   const retrlm_datastore *ds, const int *tokens,
                                                   size_t n, size_t n_bytes,
                                                   const retrlm_ralm_config *cfg_in, double *bpb,
                                                   float *token_nats) {
    retrlm_ralm_config cfg;
    const int Tmax = m->config.max_seq_len, V = m->config.vocab_size;
    int prefix_units, round_blocks, max_jobs, i;
    size_t pos;
    double nats = 0.0;
    retrlm__ralm_job *jobs = NULL;
    retrlm__ralm_block *blocks = NULL;
    float *lp = NULL, *scores = NULL;
    int *inputs = NULL, *lengths = NULL, *units = NULL;
    char *query = NULL;
    size_t query_cap = 0;
    retrlm_result res = RETRLM_OK;

    RETRLM_ASSERT(m && cfg_in && bpb && (tokens || n == 0));
    cfg = *cfg_in;
    *bpb = 0.0;
    if (m->config.bidirectional) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the model is an encoder, not a causal LM");
    if (cfg.mode != RETRLM_RALM_NONE && (!ds || !tok))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: retrieval needs a tokenizer and a committed datastore");
    if (cfg.mode != RETRLM_RALM_NONE && !ds->committed_) return retrlm__fail(RETRLM_ERR_ARG, "ralm: the datastore is not committed");
    if (n_bytes == 0) return retrlm__fail(RETRLM_ERR_ARG, "ralm: zero bytes of text");
    if (!cfg.stride) cfg.stride = 16;
    if (!cfg.query_tokens) cfg.query_tokens = 32;
    if (!cfg.k) cfg.k = cfg.mode == RETRLM_RALM_REPLUG ? 4 : 1;
    if (cfg.temperature == 0.0f) cfg.temperature = 1.0f;
    if (!cfg.unit_tokens) cfg.unit_tokens = ds ? ds->chunk_tokens : 0;
    if (cfg.stride < 1 || cfg.query_tokens < 1 || cfg.k < 1 || cfg.k > 16 || cfg.unit_tokens < 0 ||
        cfg.context_tokens < 0 || !(cfg.temperature > 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: stride, query_tokens, k (1..16), unit_tokens, context_tokens or temperature out of range");
    prefix_units = cfg.mode == RETRLM_RALM_INCONTEXT ? cfg.k : cfg.mode == RETRLM_RALM_REPLUG ? 1 : 0;
    if (!cfg.context_tokens) cfg.context_tokens = Tmax - prefix_units * cfg.unit_tokens - cfg.stride;
    if (cfg.context_tokens < 1 || prefix_units * cfg.unit_tokens + cfg.context_tokens + cfg.stride > Tmax)
        return retrlm__fail(RETRLM_ERR_ARG, "ralm: %d unit(s) of %d tokens + %d context + %d stride exceed the model's %d positions",
                            prefix_units, cfg.unit_tokens, cfg.context_tokens, cfg.stride, Tmax);
    for (pos = 0; pos < n; pos++)
        if (tokens[pos] < 0 || tokens[pos] >= V)
            return retrlm__fail(RETRLM_ERR_RANGE, "ralm: token %d at %lu outside the model's vocabulary of %d", tokens[pos], (unsigned long)pos, V);
    if (n == 0) return RETRLM_OK;

    // a round is enough blocks to fill a few batches; jobs of a round are scored together
    round_blocks = RETRLM__MAX(1, 4 * m->config.max_batch / (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1));
    max_jobs = round_blocks * (cfg.mode == RETRLM_RALM_REPLUG ? cfg.k : 1);
    jobs = (retrlm__ralm_job *)retrlm__calloc((size_t)max_jobs, sizeof *jobs);
    blocks = (retrlm__ralm_block *)retrlm__calloc((size_t)round_blocks, sizeof *blocks);
    lp = (float *)retrlm__alloc((size_t)max_jobs * cfg.stride, sizeof(float));
    inputs = (int *)retrlm__alloc((size_t)m->config.max_batch * Tmax, sizeof(int));
    lengths = (int *)retrlm__alloc((size_t)m->config.max_batch, sizeof(int));
    units = (int *)retrlm__alloc((size_t)cfg.k, sizeof(int));
    scores = (float *)retrlm__alloc((size_t)cfg.k, sizeof(float));
    if (!jobs || !blocks || !lp || !inputs || !lengths || !units || !scores) {
        res = retrlm__fail(RETRLM_ERR_NOMEM, "ralm: no memory for the scoring buffers");
        goto done;
    }
    for (i = 0; i < max_jobs; i++) jobs[i].lp = lp + (size_t)i * cfg.stride;

    // the first token has nothing before it: ln V, as retrlm_lm_bits_per_byte counts it
    nats = log((double)V);
    if (token_nats) token_nats[0] = (float)log((double)V);
    pos = 1;
    while (pos < n && !res) {
        int nb = 0, nj = 0, b, j;
        // plan a round: blocks, their retrievals and jobs
        while (nb < round_blocks && pos < n) {
            retrlm__ralm_block *bl = &blocks[nb];
            int found = 0;
            bl->start = pos;
            bl->end = RETRLM__MIN(n, pos + (size_t)cfg.stride);
            bl->ctx = pos > (size_t)cfg.context_tokens ? pos - (size_t)cfg.context_tokens : 0;
            bl->first_job = nj;
            if (cfg.mode != RETRLM_RALM_NONE) {
                size_t q0 = pos > (size_t)cfg.query_tokens ? pos - (size_t)cfg.query_tokens : 0, qlen = 0;
                res = retrlm_tokenizer_decode(tok, tokens + q0, pos - q0, NULL, 0, &qlen);
                if (!res && qlen + 1 > query_cap) {
                    char *q = (char *)retrlm__realloc(query, qlen + 1, 1);
                    if (!q) res = retrlm__fail(RETRLM_ERR_NOMEM, "ralm: no memory for a query");
                    else query = q, query_cap = qlen + 1;
                }
                if (!res) res = retrlm_tokenizer_decode(tok, tokens + q0, pos - q0, query, query_cap, &qlen);
                if (!res) res = retrlm_datastore_search(ds, query, qlen, cfg.k, cfg.exclude ? cfg.exclude_doc : RETRLM_NO_DOC,
                                                        units, scores, &found);
                if (res) goto done;
            }
            if (cfg.mode == RETRLM_RALM_REPLUG && found > 0) {
                float mx = scores[0], lse = 0.0f; // scores come best first
                for (j = 0; j < found; j++) lse += expf((scores[j] - mx) / cfg.temperature);
                lse = logf(lse);
                for (j = 0; j < found; j++) {
                    retrlm__ralm_job *jb = &jobs[nj++];
                    jb->block = nb;
                    jb->n_units = 1;
                    jb->units[0] = units[j];
                    jb->logw = (scores[j] - mx) / cfg.temperature - lse;
                }
            } else {
                retrlm__ralm_job *jb = &jobs[nj++];
                jb->block = nb;
                jb->n_units = found;
                for (j = 0; j < found; j++) jb->units[j] = units[found - 1 - j]; // best last
                jb->logw = 0.0f;
            }
            bl->n_jobs = nj - bl->first_job;
            for (j = bl->first_job; j < nj; j++) {
                int u;
                jobs[j].len = (int)(bl->end - bl->ctx);
                for (u = 0; u < jobs[j].n_units; u++) jobs[j].len += retrlm__ralm_unit_len(ds, jobs[j].units[u], cfg.unit_tokens);
            }
            nb++;
            pos = bl->end;
        }
        res = retrlm__ralm_score(m, ds, tokens, cfg.unit_tokens, jobs, blocks, 0, nj, inputs, lengths);
        if (res) goto done;
        // mix each block's jobs per token: log sum_j w_j p_j(y)
        for (b = 0; b < nb; b++) {
            const retrlm__ralm_block *bl = &blocks[b];
            int p, n_pred = (int)(bl->end - bl->start);
            for (p = 0; p < n_pred; p++) {
                double mx = -INFINITY, s = 0.0, l;
                for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                    mx = RETRLM__MAX(mx, (double)jobs[j].logw + jobs[j].lp[p]);
                for (j = bl->first_job; j < bl->first_job + bl->n_jobs; j++)
                    s += exp((double)jobs[j].logw + jobs[j].lp[p] - mx);
                l = mx + log(s);
                nats -= l;
                if (token_nats) token_nats[bl->start + (size_t)p] = (float)-l;
            }
        }
        res = retrlm__progress(cfg.progress, cfg.progress_user, "ralm", (double)pos, (double)n);
    }
    if (!res) *bpb = nats / log(2.0) / (double)n_bytes;
done:
    RETRLM_FREE(jobs), RETRLM_FREE(blocks), RETRLM_FREE(lp), RETRLM_FREE(inputs);
    RETRLM_FREE(lengths), RETRLM_FREE(units), RETRLM_FREE(scores), RETRLM_FREE(query);
    return res;
}
