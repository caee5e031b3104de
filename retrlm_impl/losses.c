// ---------------------------------------------------------------------------------------------
// losses

RETRLM_API retrlm_result retrlm_contrastive_loss(const float *q, int nq, const float *d, int nd,
                                                 int dim, const int *pos, float temperature,
                                                 float *loss, float *dq, float *dd,
                                                 int *correct) {
    float *s;
    double total = 0.0;
    int i, j, right = 0;
    retrlm_result r;
    RETRLM_ASSERT(q && d && pos);
    if (nq < 1 || nd < 1 || dim < 1 || !(temperature > 0.0f) ||
        (size_t)nq * (size_t)nd > ((size_t)1 << 28))
        return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: %d queries x %d candidates of dim "
                            "%d at temperature %g", nq, nd, dim, (double)temperature);
    for (i = 0; i < nq; i++)
        if (pos[i] < 0 || pos[i] >= nd)
            return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: positive %d of query %d is "
                                "outside [0, %d)", pos[i], i, nd);
    s = (float *)retrlm__alloc((size_t)nq * nd, sizeof(float));
    if (!s) return retrlm__fail(RETRLM_ERR_NOMEM, "contrastive_loss: no memory for %d x %d scores",
                                nq, nd);
    if ((r = retrlm_matmul(s, q, d, NULL, nq, nd, dim, 0))) {
        RETRLM_FREE(s);
        return r;
    }
    // row by row: scores -> probabilities -> (p - onehot) / (nq * temperature)
    for (i = 0; i < nq; i++) {
        float *row = s + (size_t)i * nd, lse;
        int best = 0;
        for (j = 0; j < nd; j++) {
            row[j] /= temperature;
            if (row[j] != row[j]) {
                RETRLM_FREE(s);
                return retrlm__fail(RETRLM_ERR_ARG, "contrastive_loss: score of query %d and "
                                    "candidate %d is NaN", i, j);
            }
            if (row[j] > row[best]) best = j;
        }
        right += best == pos[i];
        lse = retrlm_logsumexp(row, nd);
        total += (double)lse - row[pos[i]];
        for (j = 0; j < nd; j++) row[j] = expf(row[j] - lse) / ((float)nq * temperature);
        row[pos[i]] -= 1.0f / ((float)nq * temperature);
    }
    // dQ (nq, dim) = G · D; dD (nd, dim) = Gᵀ · Q
    r = RETRLM_OK;
    if (dq) r = retrlm_matmul(dq, s, d, NULL, nq, dim, nd, RETRLM_MATMUL_B_KN);
    if (!r && dd)
        r = retrlm_matmul(dd, s, q, NULL, nd, dim, nq, RETRLM_MATMUL_A_KM | RETRLM_MATMUL_B_KN);
    RETRLM_FREE(s);
    if (loss) *loss = (float)(total / nq);
    if (correct) *correct = right;
    return r;
}

// log_softmax of x / temperature over the present entries (-inf: absent) into out (k); 0 when
// every entry is absent
static int retrlm__log_softmax_t(float *out, const float *x, int k, float temperature) {
    int j, any = 0;
    for (j = 0; j < k; j++) {
        out[j] = x[j] == -INFINITY ? -INFINITY : x[j] / temperature;
        any |= out[j] != -INFINITY;
    }
    if (any) retrlm_log_softmax(out, out, k);
    return any;
}

// 1 when x is NaN or +inf: a value no distribution can take (-inf marks an absent entry)
static int retrlm__bad_logit(float x) { return x != x || x == INFINITY; }

// ERR_ARG (with the message, who the caller) when a candidate of scores and gold (n, k) is NaN
// or +inf, has gold >= gold_max, or is absent (-inf) on one side only
static retrlm_result retrlm__check_candidates(const float *scores, const float *gold, int n, int k,
                                              float gold_max, const char *who) {
    int i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < k; j++) {
            float s = scores[(size_t)i * k + j], g = gold[(size_t)i * k + j];
            if (retrlm__bad_logit(s) || retrlm__bad_logit(g) || g >= gold_max ||
                (s == -INFINITY) != (g == -INFINITY))
                return retrlm__fail(RETRLM_ERR_ARG, "%s: query %d candidate %d has score %g and gold "
                                    "%g (NaN, +inf, gold >= %g, or absent in only one)", who, i, j,
                                    (double)s, (double)g, (double)gold_max);
        }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_kl_distill_loss(const float *scores, const float *gold, int n,
                                                int k, float tau_score, float tau_gold,
                                                float *loss, float *dscores) {
    float *lp, *lq;
    double total = 0.0;
    int i, j;
    RETRLM_ASSERT(scores && gold);
    if (n < 1 || k < 1 || !(tau_score > 0.0f) || !(tau_gold > 0.0f) || tau_score == INFINITY ||
        tau_gold == INFINITY)
        return retrlm__fail(RETRLM_ERR_ARG, "kl_distill_loss: %d queries x %d candidates at "
                            "temperatures %g / %g", n, k, (double)tau_score, (double)tau_gold);
    if (retrlm__check_candidates(scores, gold, n, k, INFINITY, "kl_distill_loss")) return RETRLM_ERR_ARG;
    lp = (float *)retrlm__alloc(2 * (size_t)k, sizeof(float));
    if (!lp) return retrlm__fail(RETRLM_ERR_NOMEM, "kl_distill_loss: no memory for %d candidates", k);
    lq = lp + k;
    for (i = 0; i < n; i++) {
        const float *s = scores + (size_t)i * k, *g = gold + (size_t)i * k;
        if (!retrlm__log_softmax_t(lp, s, k, tau_score)) {
            RETRLM_FREE(lp);
            return retrlm__fail(RETRLM_ERR_ARG, "kl_distill_loss: query %d has no candidate", i);
        }
        retrlm__log_softmax_t(lq, g, k, tau_gold);
        for (j = 0; j < k; j++) {
            float q = lq[j] == -INFINITY ? 0.0f : expf(lq[j]);
            if (q > 0.0f) total += (double)q * ((double)lq[j] - (double)lp[j]);
            if (dscores)
                dscores[(size_t)i * k + j] = lp[j] == -INFINITY ? 0.0f
                                           : (expf(lp[j]) - q) / (tau_score * (float)n);
        }
    }
    RETRLM_FREE(lp);
    if (loss) *loss = (float)(total / n);
    return RETRLM_OK;
}

// 1 / log2(2 + r): the discount of 0-based rank r
static double retrlm__discount(int r) { return 1.0 / log2(2.0 + r); }

// the 0-based rank of candidate j among the present (finite) entries of x (k), best first, ties
// broken by index
static int retrlm__rank_of(const float *x, int k, int j) {
    int m, r = 0;
    for (m = 0; m < k; m++)
        if (m != j && x[m] != -INFINITY && (x[m] > x[j] || (x[m] == x[j] && m < j))) r++;
    return r;
}

RETRLM_API retrlm_result retrlm_rank_loss(const float *scores, const float *gold, int n, int k,
                                          float margin, float threshold, float *loss,
                                          float *dscores, int *pairs) {
    double *gain, *disc, total = 0.0;
    long long npairs = 0;
    int i, a, b;
    RETRLM_ASSERT(scores && gold);
    if (n < 1 || k < 1 || retrlm__bad_logit(margin) || margin == -INFINITY || !(threshold >= 0.0f) ||
        threshold == INFINITY || (double)n * (double)k > 1099511627776.0)
        return retrlm__fail(RETRLM_ERR_ARG, "rank_loss: %d queries x %d candidates, margin %g, "
                            "threshold %g", n, k, (double)margin, (double)threshold);
    if (retrlm__check_candidates(scores, gold, n, k, 512.0f, "rank_loss")) return RETRLM_ERR_ARG;
    gain = (double *)retrlm__alloc(2 * (size_t)k, sizeof(double));
    if (!gain) return retrlm__fail(RETRLM_ERR_NOMEM, "rank_loss: no memory for %d candidates", k);
    disc = gain + k;
    if (dscores) memset(dscores, 0, (size_t)n * k * sizeof(float));
    // pass 1: the pairs, to know P; pass 2 adds each pair's share
    for (i = 0; i < n; i++) {
        const float *g = gold + (size_t)i * k;
        for (a = 0; a < k; a++)
            if (g[a] != -INFINITY && g[a] > threshold)
                for (b = 0; b < k; b++) npairs += g[b] != -INFINITY && g[a] > g[b];
    }
    for (i = 0; npairs && i < n; i++) {
        const float *s = scores + (size_t)i * k, *g = gold + (size_t)i * k;
        float *ds = dscores ? dscores + (size_t)i * k : NULL;
        double idcg = 0.0;
        for (a = 0; a < k; a++) {
            gain[a] = g[a] != -INFINITY && g[a] > threshold ? exp2((double)g[a]) - 1.0 : 0.0;
            disc[a] = s[a] != -INFINITY ? retrlm__discount(retrlm__rank_of(s, k, a)) : 0.0;
            if (gain[a] != 0.0) idcg += gain[a] * retrlm__discount(retrlm__rank_of(g, k, a));
        }
        for (a = 0; a < k; a++) {
            if (g[a] == -INFINITY || !(g[a] > threshold)) continue;
            for (b = 0; b < k; b++) {
                double lambda, h;
                if (g[b] == -INFINITY || !(g[a] > g[b])) continue;
                h = (double)margin - ((double)s[a] - (double)s[b]);
                if (h <= 0.0) continue;
                lambda = fabs(gain[a] - gain[b]) * fabs(disc[a] - disc[b]) / idcg; // idcg >= gain[a] > 0
                total += lambda * h;
                if (ds) {
                    ds[a] -= (float)(lambda / (double)npairs);
                    ds[b] += (float)(lambda / (double)npairs);
                }
            }
        }
    }
    RETRLM_FREE(gain);
    if (loss) *loss = npairs ? (float)(total / (double)npairs) : 0.0f;
    if (pairs) *pairs = npairs > INT_MAX ? INT_MAX : (int)npairs;
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_marginal_loss(const float *scores, const float *loglik,
                                              const unsigned char *mask, int n, int k, int t,
                                              float temperature, float *loss, float *dscores,
                                              float *dloglik) {
    float *lp, *term;
    double total = 0.0;
    int i, j, p, counted = 0;
    RETRLM_ASSERT(scores && loglik);
    if (n < 1 || k < 1 || t < 1 || !(temperature > 0.0f) || temperature == INFINITY ||
        (double)n * (double)k * (double)t > 1099511627776.0) // 2^40, in double: size_t may be 32 bits
        return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: %d queries x %d candidates x %d "
                            "positions at temperature %g", n, k, t, (double)temperature);
    for (i = 0; i < n; i++) {
        int valid = 0;
        for (p = 0; p < t; p++) valid += !mask || mask[(size_t)i * t + p];
        counted += valid > 0;
        for (j = 0; j < k; j++) {
            float s = scores[(size_t)i * k + j];
            if (retrlm__bad_logit(s))
                return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: score of query %d candidate "
                                    "%d is %g", i, j, (double)s);
            for (p = 0; p < t && s != -INFINITY; p++) {
                float l = loglik[((size_t)i * k + j) * t + p];
                if ((!mask || mask[(size_t)i * t + p]) && !(l > -INFINITY && l < INFINITY))
                    return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: log-likelihood of query "
                                        "%d candidate %d position %d is %g", i, j, p, (double)l);
            }
        }
    }
    lp = (float *)retrlm__alloc(2 * (size_t)k, sizeof(float));
    if (!lp) return retrlm__fail(RETRLM_ERR_NOMEM, "marginal_loss: no memory for %d candidates", k);
    term = lp + k;
    if (dscores) memset(dscores, 0, (size_t)n * k * sizeof(float));
    if (dloglik) memset(dloglik, 0, (size_t)n * k * t * sizeof(float));
    for (i = 0; i < n; i++) {
        int valid = 0;
        float w;
        for (p = 0; p < t; p++) valid += !mask || mask[(size_t)i * t + p];
        if (!valid) continue;
        if (!retrlm__log_softmax_t(lp, scores + (size_t)i * k, k, temperature)) {
            RETRLM_FREE(lp);
            return retrlm__fail(RETRLM_ERR_ARG, "marginal_loss: query %d has no candidate", i);
        }
        w = 1.0f / ((float)valid * (float)counted);
        for (p = 0; p < t; p++) {
            float lse;
            if (mask && !mask[(size_t)i * t + p]) continue;
            for (j = 0; j < k; j++)
                term[j] = lp[j] == -INFINITY ? -INFINITY
                                             : lp[j] + loglik[((size_t)i * k + j) * t + p];
            lse = retrlm_logsumexp(term, k);
            total -= (double)lse / ((double)valid * counted);
            // posterior(j) = exp(term_j - lse): d/dscores_j = -(post_j - P_j) / temperature
            for (j = 0; j < k; j++) {
                float post = term[j] == -INFINITY ? 0.0f : expf(term[j] - lse);
                if (lp[j] == -INFINITY) continue;
                if (dscores) dscores[(size_t)i * k + j] -= w * (post - expf(lp[j])) / temperature;
                if (dloglik) dloglik[((size_t)i * k + j) * t + p] = -w * post;
            }
        }
    }
    RETRLM_FREE(lp);
    if (loss) *loss = (float)total;
    return RETRLM_OK;
}

RETRLM__PRIVATE retrlm_result retrlm__trime_check(const retrlm_trime_params *p, const char *who) {
    if (p->batching < RETRLM_TRIME_LOCAL || p->batching > RETRLM_TRIME_EXT ||
        (p->sim != RETRLM_TRIME_DOT && p->sim != RETRLM_TRIME_L2) || !(p->temperature >= 0.0f) ||
        p->temperature > 3.0e38f)
        return retrlm__fail(RETRLM_ERR_ARG, "%s: batching %d (0 local, 1 long, 2 ext), similarity %d "
                            "(0 dot, 1 L2) and temperature %g (>= 0, finite)", who, p->batching,
                            p->sim, (double)p->temperature);
    return RETRLM_OK;
}

RETRLM__PRIVATE float retrlm__trime_scale(const retrlm_trime_params *p, int D) {
    return 1.0f / (sqrtf((float)D) * (p->temperature > 0.0f ? p->temperature : 1.0f));
}

RETRLM__PRIVATE float retrlm__trime_sim(const retrlm_trime_params *p, float scale,
                                        const float *q, const float *k, int D) {
    float s = 0.0f;
    int d;
    if (p->sim == RETRLM_TRIME_L2) {
        RETRLM__SIMD_SUM(s)
        for (d = 0; d < D; d++) s += (q[d] - k[d]) * (q[d] - k[d]);
        return -s * scale;
    }
    RETRLM__SIMD_SUM(s)
    for (d = 0; d < D; d++) s += q[d] * k[d];
    return s * scale;
}

RETRLM_API retrlm_result retrlm_trime_loss(const float *logits, int n, int vocab,
                                           const float *sims, int m, const int *mem_tokens,
                                           const int *targets, float *loss, float *dlogits,
                                           float *dsims, int *count) {
    double *row_loss, total = 0.0;
    unsigned char *row_bad;
    int i, j, cnt = 0, bad = -1;
    RETRLM_ASSERT(logits && targets && (m == 0 || (sims && mem_tokens)));
    if (n < 1 || vocab < 1 || m < 0)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: %d positions, vocabulary %d, memory %d",
                            n, vocab, m);
    for (j = 0; j < m; j++)
        if (mem_tokens[j] < 0 || mem_tokens[j] >= vocab)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: memory entry %d's token %d is outside "
                                "[0, %d)", j, mem_tokens[j], vocab);
    for (i = 0; i < n; i++) {
        if (targets[i] >= vocab)
            return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: target %d of position %d is outside "
                                "[0, %d)", targets[i], i, vocab);
        cnt += targets[i] >= 0;
    }
    row_loss = (double *)retrlm__alloc((size_t)n, sizeof(double) + 1);
    if (!row_loss) return retrlm__fail(RETRLM_ERR_NOMEM, "trime_loss: no memory for %d positions", n);
    row_bad = (unsigned char *)(row_loss + n);
    RETRLM__PARALLEL_FOR_IF((size_t)n * ((size_t)vocab + (size_t)m) > 200000)
    for (i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * vocab, *s = m ? sims + (size_t)i * m : NULL;
        float *dl = dlogits ? dlogits + (size_t)i * vocab : NULL, *ds = dsims ? dsims + (size_t)i * m : NULL;
        const int y = targets[i];
        float mx = -INFINITY, z, num, scale = cnt ? 1.0f / (float)cnt : 0.0f;
        double sz = 0.0, sn = 0.0;
        int v, e, ok = 1;
        row_loss[i] = 0.0;
        row_bad[i] = 0;
        if (y < 0) {
            if (dl) memset(dl, 0, (size_t)vocab * sizeof(float));
            if (ds) memset(ds, 0, (size_t)m * sizeof(float));
            continue;
        }
        // Z = logsumexp(logits ∪ sims), N = logsumexp(logit of y ∪ sims of entries followed by y)
        for (v = 0; v < vocab; v++) {
            ok &= !retrlm__bad_logit(l[v]);
            mx = l[v] > mx ? l[v] : mx;
        }
        for (e = 0; e < m; e++) {
            ok &= !retrlm__bad_logit(s[e]);
            mx = s[e] > mx ? s[e] : mx;
        }
        if (!ok || mx == -INFINITY) {
            row_bad[i] = 1;
            continue;
        }
        for (v = 0; v < vocab; v++) sz += exp((double)(l[v] - mx));
        sn = exp((double)(l[y] - mx));
        for (e = 0; e < m; e++) {
            double x = exp((double)(s[e] - mx));
            sz += x;
            if (mem_tokens[e] == y) sn += x;
        }
        if (!(sn > 0.0)) {
            row_bad[i] = 1;
            continue;
        }
        z = mx + (float)log(sz);
        num = mx + (float)log(sn);
        row_loss[i] = log(sz) - log(sn);
        if (dl)
            for (v = 0; v < vocab; v++) {
                float g = expf(l[v] - z) - (v == y ? expf(l[v] - num) : 0.0f);
                dl[v] = g * scale;
            }
        if (ds)
            for (e = 0; e < m; e++) {
                float g = expf(s[e] - z) - (mem_tokens[e] == y ? expf(s[e] - num) : 0.0f);
                ds[e] = g * scale;
            }
    }
    for (i = 0; i < n; i++) {
        if (row_bad[i] && bad < 0) bad = i;
        total += row_loss[i];
    }
    RETRLM_FREE(row_loss);
    if (bad >= 0)
        return retrlm__fail(RETRLM_ERR_ARG, "trime_loss: position %d has a NaN or +inf logit or "
                            "similarity, or its target has probability 0", bad);
    if (loss) *loss = cnt ? (float)(total / cnt) : 0.0f;
    if (count) *count = cnt;
    return RETRLM_OK;
}

// whether memory positions [j, j + l) hold, within one block, the tokens of [p, p + l)
static int retrlm__npm_copy(const int *tokens, const int *block, int n, int j, int p, int l) {
    int t;
    if (j + l > n || block[j + l - 1] != block[j]) return 0;
    for (t = 0; t < l; t++)
        if (tokens[j + t] != tokens[p + t]) return 0;
    return 1;
}

RETRLM_API retrlm_result retrlm_npm_loss(const float *qs, const float *qe, int n_spans,
                                         const float *mem, int n_mem, int dim, float temperature,
                                         const int *tokens, const int *block, const int *start,
                                         const int *len, float *loss, float *dqs, float *dqe,
                                         float *dmem, int *count, int *hits_start, int *hits_end) {
    const float c = 1.0f / (sqrtf((float)dim) * (temperature > 0.0f ? temperature : 1.0f));
    float *g;        // (2 n_spans, n_mem): d L / d score of each span's start row, then end rows
    double *row;     // (2 n_spans): L_start(s), L_end(s)
    signed char *st; // (2 n_spans): 1 counted and a positive ranked first, 0 counted, -1 not, -2 NaN
    double total = 0.0;
    float scale;
    int s, e, cnt = 0, hs = 0, he = 0;
    RETRLM_ASSERT(qs && qe && mem && tokens && block && start && len);
    if (n_spans < 1 || n_mem < 1 || dim < 1 || !(temperature >= 0.0f))
        return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: %d spans, memory %d, dim %d, temperature %g",
                            n_spans, n_mem, dim, (double)temperature);
    for (s = 0; s < n_spans; s++)
        if (len[s] < 1 || start[s] < 0 || start[s] > n_mem - len[s] ||
            block[start[s] + len[s] - 1] != block[start[s]])
            return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: span %d (%d tokens at %d) is outside the memory of %d "
                                "or across two blocks", s, len[s], start[s], n_mem);
    g = (float *)retrlm__alloc((size_t)2 * n_spans * n_mem, sizeof(float));
    row = (double *)retrlm__alloc((size_t)2 * n_spans, sizeof(double) + 1);
    if (!g || !row) {
        RETRLM_FREE(g), RETRLM_FREE(row);
        return retrlm__fail(RETRLM_ERR_NOMEM, "npm_loss: no memory for %d spans x %d entries", n_spans, n_mem);
    }
    st = (signed char *)(row + 2 * n_spans);
    RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
    for (s = 0; s < 2 * n_spans; s++) {
        const int sp = s % n_spans, end = s >= n_spans, p = start[sp], l = len[sp], b = block[p];
        const float *q = (end ? qe : qs) + (size_t)sp * dim;
        float *gr = g + (size_t)s * n_mem, mx = -INFINITY, best = -INFINITY;
        double all = 0.0, pos = 0.0;
        int k, best_pos = 0;
        row[s] = 0.0, st[s] = -1;
        for (k = 0; k < n_mem; k++) { // scores; -inf in the span's own block
            gr[k] = block[k] == b ? -INFINITY : c * retrlm_dot(q, mem + (size_t)k * dim, dim);
            if (retrlm__bad_logit(gr[k])) st[s] = -2;
            if (gr[k] > mx) mx = gr[k];
        }
        if (st[s] == -2 || mx == -INFINITY) { // a NaN, or no other block: nothing to learn
            memset(gr, 0, (size_t)n_mem * sizeof(float));
            continue;
        }
        for (k = 0; k < n_mem; k++) {
            // a positive: a copy of the span starts at k (start rows) or ends at k (end rows)
            const int j = end ? k - l + 1 : k;
            const int is_pos = gr[k] != -INFINITY && j >= 0 && retrlm__npm_copy(tokens, block, n_mem, j, p, l);
            const double x = gr[k] == -INFINITY ? 0.0 : exp((double)(gr[k] - mx));
            all += x;
            if (is_pos) pos += x;
            if (gr[k] > best) best = gr[k], best_pos = is_pos;
            gr[k] = is_pos ? -(float)x - 1e-30f : (float)x; // the sign marks a positive for the next loop
        }
        if (!(pos > 0.0)) { // no copy of the span outside its block
            memset(gr, 0, (size_t)n_mem * sizeof(float));
            continue;
        }
        row[s] = log(all) - log(pos);
        st[s] = (signed char)best_pos;
        for (k = 0; k < n_mem; k++) { // softmax over A(s) minus softmax over the positives
            const double x = fabs((double)gr[k]);
            gr[k] = (float)(x / all - (gr[k] < 0.0f ? x / pos : 0.0));
        }
    }
    for (s = 0; s < 2 * n_spans; s++)
        if (st[s] == -2) {
            RETRLM_FREE(g), RETRLM_FREE(row);
            return retrlm__fail(RETRLM_ERR_ARG, "npm_loss: span %d's %s query scores NaN or inf", s % n_spans,
                                s < n_spans ? "start" : "end");
        }
    for (s = 0; s < n_spans; s++) // start and end rows of a span have the same positives
        if (st[s] >= 0) {
            cnt++;
            total += row[s] + row[n_spans + s];
            hs += st[s] == 1, he += st[n_spans + s] == 1;
        }
    scale = cnt ? c / (float)cnt : 0.0f;
    if (dqs || dqe) {
        RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
        for (s = 0; s < 2 * n_spans; s++) {
            float *dq = s < n_spans ? dqs : dqe;
            const float *gr = g + (size_t)s * n_mem;
            int k, d;
            if (!dq) continue;
            dq += (size_t)(s % n_spans) * dim;
            memset(dq, 0, (size_t)dim * sizeof(float));
            for (k = 0; k < n_mem; k++)
                if (gr[k] != 0.0f)
                    for (d = 0; d < dim; d++) dq[d] += scale * gr[k] * mem[(size_t)k * dim + d];
        }
    }
    if (dmem) {
        RETRLM__PARALLEL_FOR_IF((size_t)n_spans * n_mem * dim > 200000)
        for (e = 0; e < n_mem; e++) {
            float *dm = dmem + (size_t)e * dim;
            int r, d;
            memset(dm, 0, (size_t)dim * sizeof(float));
            for (r = 0; r < 2 * n_spans; r++) {
                const float w = g[(size_t)r * n_mem + e];
                const float *q = (r < n_spans ? qs : qe) + (size_t)(r % n_spans) * dim;
                if (w != 0.0f)
                    for (d = 0; d < dim; d++) dm[d] += scale * w * q[d];
            }
        }
    }
    RETRLM_FREE(g), RETRLM_FREE(row);
    if (loss) *loss = cnt ? (float)(total / cnt) : 0.0f;
    if (count) *count = cnt;
    if (hits_start) *hits_start = hs;
    if (hits_end) *hits_end = he;
    return RETRLM_OK;
}
