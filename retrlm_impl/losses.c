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
