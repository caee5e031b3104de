/* gradcheck.h - finite-difference gradient checks and small float helpers shared by the tests
   (include after test.h) */
#ifndef RETRLM_GRADCHECK_H
#define RETRLM_GRADCHECK_H
#include <stdlib.h>

// ---- finite differences: loss(ctx) in double, central differences on float parameters
typedef double (*loss_fn)(void *ctx);

// checks g against numeric gradients of f w.r.t. x[0..n) (central differences at eps and eps/2,
// Richardson-combined so the error is O(eps^4)); returns the worst scaled error
TEST__UNUSED static double central(loss_fn f, void *ctx, float *x, float eps) {
    float save = *x;
    double lp, lm;
    *x = save + eps;
    lp = f(ctx);
    *x = save - eps;
    lm = f(ctx);
    *x = save;
    return (lp - lm) / ((double)(save + eps) - (double)(save - eps));
}

TEST__UNUSED static double grad_check(loss_fn f, void *ctx, float *x, const float *g, int n, float eps) {
    double worst = 0.0;
    int i;
    for (i = 0; i < n; i++) {
        double d1 = central(f, ctx, x + i, eps), d2 = central(f, ctx, x + i, eps / 2);
        double num = (4.0 * d2 - d1) / 3.0, err;
        err = fabs(num - g[i]) / (1e-2 + 0.1 * (fabs(num) > fabs(g[i]) ? fabs(num) : fabs(g[i])));
        if (err > 0.1 && getenv("GRAD_DEBUG"))
            fprintf(stderr, "  [%d] numeric %.6g analytic %.6g\n", i, num, (double)g[i]);
        if (err > worst) worst = err;
    }
    return worst; // < 0.1 means |num - g| < 1e-3 + 1e-2 max(|num|, |g|)
}

TEST__UNUSED static void fill_normal(float *x, size_t n, float std, retrlm_rng *rng) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = std * retrlm_rng_normal(rng);
}

TEST__UNUSED static double dotd(const float *a, const float *b, size_t n) {
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

#endif
