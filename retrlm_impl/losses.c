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
    for (i = 0; i < n; i++)
        for (j = 0; j < k; j++) {
            float s = scores[(size_t)i * k + j], g = gold[(size_t)i * k + j];
            if (retrlm__bad_logit(s) || retrlm__bad_logit(g) || (s == -INFINITY) != (g == -INFINITY))
                return retrlm__fail(RETRLM_ERR_ARG, "kl_distill_loss: query %d candidate %d has "
                                    "score %g and gold %g (NaN, +inf, or absent in only one)",
                                    i, j, (double)s, (double)g);
        }
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
