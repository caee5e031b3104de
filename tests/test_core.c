// core: results, error detail, allocation funnel, RNG, progress, timer
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"

static void test_result_strings(void) {
    int i;
    CHECK(RETRLM_OK == 0);
    for (i = 0; i < RETRLM_RESULT_COUNT; i++) CHECK(retrlm_result_string((retrlm_result)i)[0] != 0);
    CHECK(!strcmp(retrlm_result_string((retrlm_result)999), "unknown result code"));
    CHECK(!strcmp(retrlm_result_string(RETRLM_ERR_NOMEM), "out of memory"));
}

static void test_error_detail(void) {
    retrlm__clear_error();
    CHECK(retrlm_last_error()[0] == 0);
    CHECK(retrlm__fail(RETRLM_ERR_ARG, "x=%d", 42) == RETRLM_ERR_ARG);
    CHECK(!strcmp(retrlm_last_error(), "x=42"));
}

static void test_alloc_overflow(void) {
    size_t n;
    void *p;
    CHECK(retrlm__alloc(SIZE_MAX / 2, 4) == NULL);
    CHECK(retrlm__realloc(NULL, SIZE_MAX, 2) == NULL);
    CHECK(retrlm__mul_overflows(SIZE_MAX, 2, &n));
    CHECK(!retrlm__mul_overflows(1000, 1000, &n) && n == 1000000);
    p = retrlm__alloc(0, 8); // never NULL for zero bytes
    CHECK(p != NULL);
    retrlm_free(p);
    p = retrlm__calloc(100, 4);
    CHECK(p && ((int *)p)[99] == 0);
    retrlm_free(p);
    retrlm_free(NULL);
}

static void test_stbds_routed(void) {
    int *a = NULL, i;
    for (i = 0; i < 1000; i++) stbds_arrput(a, i);
    CHECK(stbds_arrlen(a) == 1000 && a[999] == 999);
    stbds_arrfree(a);
    CHECK(a == NULL);
}

static void test_rng(void) {
    retrlm_rng a, b, saved;
    double mean = 0, var = 0;
    int i, counts[10] = {0}, ok = 1;
    retrlm_rng_seed(&a, 1337);
    retrlm_rng_seed(&b, 1337);
    for (i = 0; i < 100; i++) ok &= retrlm_rng_u64(&a) == retrlm_rng_u64(&b);
    CHECK(ok);
    saved = a; // the state is plain data: a copy resumes the stream exactly
    {
        uint64_t x = retrlm_rng_u64(&a);
        CHECK(retrlm_rng_u64(&saved) == x);
    }
    retrlm_rng_seed(&b, 1338);
    CHECK(retrlm_rng_u64(&a) != retrlm_rng_u64(&b));
    retrlm_rng_seed(&a, 0); // seed 0 is a fine seed
    CHECK((a.s[0] | a.s[1] | a.s[2] | a.s[3]) != 0);
    for (i = 0; i < 100000; i++) {
        float f = retrlm_rng_float(&a);
        uint64_t k = retrlm_rng_below(&a, 10);
        ok &= f >= 0.0f && f < 1.0f && k < 10;
        counts[k]++;
    }
    CHECK(ok);
    for (i = 0; i < 10; i++) CHECK(counts[i] > 9500 && counts[i] < 10500);
    for (i = 0; i < 100000; i++) {
        double z = retrlm_rng_normal(&a);
        mean += z;
        var += z * z;
    }
    mean /= 100000;
    var = var / 100000 - mean * mean;
    CHECK_NEAR(mean, 0.0, 0.02);
    CHECK_NEAR(var, 1.0, 0.03);
    b = a;
    retrlm_rng_jump(&b);
    CHECK(retrlm_rng_u64(&a) != retrlm_rng_u64(&b));
}

static int cancel_at_3(void *user, const char *stage, double done, double total) {
    (void)stage;
    (void)total;
    ++*(int *)user;
    return done >= 3;
}

static void test_progress(void) {
    int calls = 0, i;
    retrlm_result r = RETRLM_OK;
    for (i = 0; i < 10 && !r; i++) r = retrlm__progress(cancel_at_3, &calls, "count", i, 10);
    CHECK(r == RETRLM_ERR_CANCELLED && calls == 4);
    CHECK(strstr(retrlm_last_error(), "count") != NULL);
    CHECK(retrlm__progress(NULL, NULL, "x", 1, 1) == RETRLM_OK);
}

static void test_timer(void) {
    double t0 = retrlm_time_seconds(), t1;
    volatile double x = 0;
    int i;
    for (i = 0; i < 1000000; i++) x += i;
    t1 = retrlm_time_seconds();
    CHECK(t1 >= t0 && x > 0);
}

// the thread tuner fed made-up step times: mode(step) gives what a step costs on the team
// (one thread always costs 3.4 ms); returns the share of steps run on the team in [from, n) and
// the total seconds of those steps in *secs
typedef double (*tuner_team_cost)(int64_t i, int64_t team_steps);
static double tuner_run(retrlm__tuner *t, tuner_team_cost team, int64_t from, int64_t n,
                        double *secs) {
    int64_t i, on_team = 0, team_steps = 0;
    *secs = 0.0;
    for (i = 0; i < n; i++) {
        double dt;
        retrlm__tuner_start(t);
        dt = t->one ? 3.4e-3 : team(i, team_steps++);
        retrlm__tuner_record(t, dt);
        if (i >= from) *secs += dt, on_team += !t->one;
    }
    return (double)on_team / (double)(n - from);
}
static double team_quiet(int64_t i, int64_t k) { (void)i, (void)k; return 1.8e-3; }
static double team_burst(int64_t i, int64_t k) { (void)k; return i == 500 ? 20e-3 : 1.8e-3; }
static double team_busy(int64_t i, int64_t k) { // fast and slow in turn, a scheduler slice now and then
    (void)i;
    return k % 10 == 9 ? 100e-3 : k % 2 ? 6e-3 : 2e-3;
}
static double team_slow(int64_t i, int64_t k) { (void)i, (void)k; return 1.35 * 3.4e-3; }
static double team_leaves(int64_t i, int64_t k) { return i < 1000 ? team_busy(i, k) : 1.8e-3; }

// a try's steps on the team after step 2 (steps 0 and 1 run there, step 2 on one thread): its
// first step costs first, the next second; returns the tries, and in *two those of two steps
static int64_t tuner_tries(double first, double second, int64_t *two) {
    retrlm__tuner t;
    int64_t i, tries = 0;
    int prev = 0;
    *two = 0;
    retrlm__tuner_init(&t), t.team = 2;
    for (i = 0; i < 4000; i++) {
        retrlm__tuner_start(&t);
        if (i > 2 && !t.one) tries += !prev, *two += prev;
        retrlm__tuner_record(&t, t.one ? 3.4e-3 : prev ? second : first);
        prev = i > 2 && !t.one;
    }
    return tries;
}

static void test_tuner(void) {
    retrlm__tuner t;
    double share, secs;
    int64_t two, tries;
#ifdef RETRLM__OMP
    int saved = omp_get_max_threads();
#endif
    retrlm__tuner_init(&t), t.team = 2; // as if on 2 threads, whatever this machine has
    share = tuner_run(&t, team_quiet, 0, 2000, &secs);
    CHECK(share > 0.98);
    retrlm__tuner_init(&t), t.team = 2; // one slow team step: back on the team within 40 steps
    share = tuner_run(&t, team_burst, 540, 2000, &secs);
    CHECK(share > 0.98);
    retrlm__tuner_init(&t), t.team = 2; // beside a busy neighbour: one thread, tries cost < 3%
    share = tuner_run(&t, team_busy, 0, 4000, &secs);
    CHECK(share < 0.01 && secs < 1.03 * 4000 * 3.4e-3);
    printf("tuner: busy: %.2f%% of steps on the team, %.4f s against %.4f s on one thread\n",
           100.0 * share, secs, 4000 * 3.4e-3);
    retrlm__tuner_init(&t), t.team = 2; // the neighbour leaves at step 1000: back within 1100
    share = tuner_run(&t, team_leaves, 2100, 3000, &secs);
    CHECK(share > 0.98);
    // the team 1.35x one thread's time: after steps 1 (team) and 2 (one thread) the first try
    // waits until it costs under 1% of the steps between (36 steps), so 24 steps run one on the team
    retrlm__tuner_init(&t), t.team = 2;
    share = tuner_run(&t, team_slow, 0, 24, &secs);
    CHECK(share * 24 < 1.5);
    // a try's first team step of 6 ms loses whatever the next takes (at best 3.4 / 2): it ends
    // there; one of 2 ms might still win, so the second step runs
    CHECK(tuner_tries(6e-3, 6e-3, &two) > 3 && two == 0);
    tries = tuner_tries(2e-3, 6e-3, &two);
    CHECK(tries > 3 && two == tries);
    retrlm__tuner_done(&t);
#ifdef RETRLM__OMP
    omp_set_num_threads(saved);
#endif
    retrlm__tuner_start(NULL), retrlm__tuner_stop(NULL), retrlm__tuner_done(NULL); // no-ops
}

static void test_endian_helpers(void) {
    unsigned char b[8];
    uint32_t v[2] = {0x01020304u, 0xA0B0C0D0u};
    retrlm__put_u64(b, 0x0807060504030201ull);
    CHECK(b[0] == 1 && b[7] == 8);
    CHECK(retrlm__get_u64(b) == 0x0807060504030201ull);
    CHECK(retrlm__get_u32(b + 4) == 0x08070605u);
    retrlm__byteswap(v, 2, 4);
    CHECK(v[0] == 0x04030201u && v[1] == 0xD0C0B0A0u);
}

int main(void) {
    RUN(test_result_strings);
    RUN(test_error_detail);
    RUN(test_alloc_overflow);
    RUN(test_stbds_routed);
    RUN(test_rng);
    RUN(test_progress);
    RUN(test_timer);
    RUN(test_tuner);
    RUN(test_endian_helpers);
    return test_report();
}
