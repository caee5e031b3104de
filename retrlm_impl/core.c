#include "internal.h"

// ---------------------------------------------------------------------------------------------
// results and the per-thread detail message

#define RETRLM__STRING(name, msg) msg,
static const char *const retrlm__result_strings[] = {RETRLM__RESULTS(RETRLM__STRING)};
#undef RETRLM__STRING

RETRLM_API const char *retrlm_result_string(retrlm_result r) {
    if ((int)r < 0 || (int)r >= (int)RETRLM_RESULT_COUNT) return "unknown result code";
    return retrlm__result_strings[r];
}

static RETRLM__TLS char retrlm__error_detail[512];

RETRLM_API const char *retrlm_last_error(void) { return retrlm__error_detail; }

static void retrlm__clear_error(void) { retrlm__error_detail[0] = '\0'; }

static retrlm_result retrlm__fail(retrlm_result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(retrlm__error_detail, sizeof retrlm__error_detail, fmt, ap);
    va_end(ap);
    return r;
}

// ---------------------------------------------------------------------------------------------
// the allocation funnel: every byte the library owns comes through here

static int retrlm__mul_overflows(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 1;
    *out = a * b;
    return 0;
}

static void *retrlm__alloc(size_t count, size_t elem) {
    size_t n;
    if (retrlm__mul_overflows(count, elem, &n)) return NULL;
    return RETRLM_MALLOC(n ? n : 1);
}

static void *retrlm__calloc(size_t count, size_t elem) {
    void *p = retrlm__alloc(count, elem);
    if (p) memset(p, 0, count * elem);
    return p;
}

// An owned, 64-byte (cache line, AVX-512 vector) aligned buffer of count * elem bytes: *owned is
// what to free, the result where to write. Arrays that threads write side by side start on a
// cache line, so that two threads never share one.
RETRLM__PRIVATE void *retrlm__alloc_aligned(size_t count, size_t elem, void **owned) {
    unsigned char *p;
    size_t n;
    *owned = NULL;
    if (retrlm__mul_overflows(count, elem, &n) || n > SIZE_MAX - RETRLM__ALIGN) return NULL;
    p = (unsigned char *)retrlm__alloc(n + RETRLM__ALIGN, 1);
    if (!p) return NULL;
    *owned = p;
    return p + (RETRLM__ALIGN - (uintptr_t)p % RETRLM__ALIGN) % RETRLM__ALIGN;
}

static void *retrlm__realloc(void *p, size_t count, size_t elem) {
    size_t n;
    if (retrlm__mul_overflows(count, elem, &n)) return NULL;
    return RETRLM_REALLOC(p, n ? n : 1);
}

RETRLM_API void retrlm_free(void *p) {
    if (p) RETRLM_FREE(p);
}

// stb_ds has no error path (it writes through the result of realloc), so the library never lets
// it grow an array (retrlm__arr_reserve first) and uses no stb_ds hash map; were it to happen, an
// allocation failure here must not corrupt the heap: report and abort.
static void *retrlm__stbds_realloc(void *p, size_t n) {
    void *q;
    if (n == 0) {
        RETRLM_FREE(p);
        return NULL;
    }
    q = RETRLM_REALLOC(p, n);
    if (!q) {
        fprintf(stderr, "retrlm: out of memory growing a build-time array (%lu bytes)\n",
                (unsigned long)n);
        abort();
    }
    return q;
}

RETRLM__PRIVATE int retrlm__arr_reserve(void *array_ptr, size_t elem, size_t n) {
    void *a;
    stbds_array_header *h;
    size_t len, cap, want, bytes;
    memcpy(&a, array_ptr, sizeof a); // the caller's T *, whatever T (no aliasing through void **)
    h = a ? stbds_header(a) : NULL;
    len = h ? h->length : 0, cap = h ? h->capacity : 0;
    if (n <= cap - len) return 1;
    if (n > SIZE_MAX - len) return 0;
    want = RETRLM__MAX(len + n, cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap);
    want = RETRLM__MAX(want, 4);
    if (retrlm__mul_overflows(want, elem, &bytes) || bytes > SIZE_MAX - sizeof *h) return 0;
    if (!(h = (stbds_array_header *)RETRLM_REALLOC(h, bytes + sizeof *h))) return 0;
    if (!a) h->length = 0, h->hash_table = NULL, h->temp = 0;
    h->capacity = want;
    a = h + 1;
    memcpy(array_ptr, &a, sizeof a);
    return 1;
}

RETRLM__PRIVATE uint64_t retrlm__mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

RETRLM__PRIVATE uint64_t retrlm__hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    return retrlm__mix64(h);
}

static int retrlm__max_threads(void) {
#ifdef RETRLM__OMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------------
// The thread count of a loop of like steps on a shared machine (DESIGN.md 3). A parallel region
// waits at its end for every thread of its team, and a thread that shares its core with another
// process can keep it waiting a scheduler slice: on a busy machine the team can be slower than
// one thread (generation at 0.45x on 2 threads beside a busy loop). So each step runs on the
// team or on one thread, whichever the moving average of its step times (weight 1/4) says is
// faster, the team only when it is 1.2x as fast: where it gains less, one thread is about as
// good and leaves the core to others. The first step runs on one thread and is not measured
// (caches are cold, pages fault in), the next on the team, the next on one thread. Then the one
// not chosen is tried, 2 steps in a row whose mean replaces its average (beside a busy
// neighbour the team's steps alternate between fast and slow, 2 and 6 ms where one thread
// takes 3.4, with a slice of 100 ms now and then: one step says little, and an average kept
// from long ago says less), ended after its first step when that step lost whatever the next
// would take (the team at best divides one thread's time by its size). When an average changes
// the choice (one slow step, or the machine changed), the next try comes 4 steps later; after
// a lost try, after a gap that doubles (quadruples when the try lost by half). Either way, and
// after the first measures of both, never so soon that tries would cost more than 1% of the
// steps between them (a try's steps times what each loses against the choice) and never later
// than 1024 steps or 30 seconds of steps: beside a busy neighbour a try of the team costs a
// quarter to a whole step (training, small shape: 1.3-1.9x one thread's 300 ms), and tried
// more often it would cost more than it can find.
// Results do not depend on it: every kernel gives the same bits on any number of threads.
// Without OpenMP it does nothing.
#define RETRLM__TUNER_TRY 2

RETRLM__PRIVATE void retrlm__tuner_init(retrlm__tuner *t) {
    memset(t, 0, sizeof *t);
    t->team = retrlm__max_threads();
    t->gap = 4;
    t->probe = 3 + t->gap; // steps 0 to 2 measure both
}

static int retrlm__tuner_best(const retrlm__tuner *t) { // 1: the team, 0: one thread
    return t->ema[1] > 0.0 && !(t->ema[0] > 0.0 && t->ema[0] <= 1.2 * t->ema[1]);
}

// the gap before the next try: gap, but at least what keeps a try of n steps of the choice not
// made within 1% of the steps between, and at most 1024 steps or 30 seconds of steps
static int64_t retrlm__tuner_gap(const retrlm__tuner *t, int64_t gap, int n) {
    const int b = retrlm__tuner_best(t);
    const double need = n * (t->ema[!b] / t->ema[b] - 1.0) / 0.01;
    double g = (double)gap, most = 30.0 / t->ema[b];
    most = most < 16.0 ? 16.0 : most > 1024.0 ? 1024.0 : most;
    if (need > g) g = need;
    return (int64_t)(g < most ? g : most);
}

RETRLM__PRIVATE void retrlm__tuner_start(retrlm__tuner *t) {
    int use; // 0: one thread, 1: the team
    if (!t || t->team <= 1) return;
    if (t->step == 0) use = 0; // the first step warms up: not measured
    else if (t->ema[1] <= 0.0) use = 1;
    else if (t->ema[0] <= 0.0) use = 0;
    else if (t->trying > 0) use = t->try_k;
    else if (t->step >= t->probe) { // try the other
        t->try_k = !retrlm__tuner_best(t);
        t->trying = RETRLM__TUNER_TRY;
        t->try_sum = 0.0;
        use = t->try_k;
    } else use = retrlm__tuner_best(t);
    t->one = use == 0;
#ifdef RETRLM__OMP
    omp_set_num_threads(t->one ? 1 : t->team);
#endif
    t->t0 = retrlm_time_seconds();
}

RETRLM__PRIVATE void retrlm__tuner_stop(retrlm__tuner *t) {
    if (t && t->team > 1) retrlm__tuner_record(t, retrlm_time_seconds() - t->t0);
}

RETRLM__PRIVATE void retrlm__tuner_record(retrlm__tuner *t, double dt) {
    const int k = !t->one, before = retrlm__tuner_best(t);
    int first = 0; // the first measure of k
    if (t->step++ == 0) return; // the warm-up
    if (t->trying > 0 && k == t->try_k) { // a step of a try
        const double keep = t->ema[k], least = k ? t->ema[0] / t->team : 0.0;
        int done;
        t->try_sum += dt;
        done = RETRLM__TUNER_TRY - --t->trying;
        // the try's mean were its other steps as fast as they can be (the team at best divides
        // one thread's time by its size): if even that loses, the rest cannot change the outcome
        t->ema[k] = (t->try_sum + t->trying * least) / RETRLM__TUNER_TRY;
        if (t->trying > 0 && before != retrlm__tuner_best(t)) {
            t->ema[k] = keep;
            return;
        }
        t->trying = 0;
        t->ema[k] = t->try_sum / done;
        if (before == retrlm__tuner_best(t)) { // it lost: try again later
            t->gap = retrlm__tuner_gap(t, t->gap * (t->ema[k] > 1.5 * t->ema[!k] ? 4 : 2), done);
            t->probe = t->step + t->gap;
            return;
        }
    } else {
        first = t->ema[k] <= 0.0;
        t->ema[k] = first ? dt : 0.75 * t->ema[k] + 0.25 * dt;
    }
    if (t->ema[0] > 0.0 && t->ema[1] > 0.0 && before != retrlm__tuner_best(t)) { // the choice changed
        // after the first measures of both, as after a try; moved by an average (one slow step,
        // or the machine changed), the choice is tried again soon
        t->gap = first ? retrlm__tuner_gap(t, 4, 1) : 4;
        t->probe = t->step + t->gap;
    }
}

RETRLM__PRIVATE void retrlm__tuner_done(retrlm__tuner *t) {
#ifdef RETRLM__OMP
    if (t && t->team > 1) omp_set_num_threads(t->team);
#else
    (void)t;
#endif
}

// ---------------------------------------------------------------------------------------------
// RNG: xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number generators",
// 2018), state filled by splitmix64 so that any 64-bit seed gives a good state.

static uint64_t retrlm__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t retrlm__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

RETRLM_API void retrlm_rng_seed(retrlm_rng *r, uint64_t seed) {
    int i;
    RETRLM_ASSERT(r);
    for (i = 0; i < 4; i++) r->s[i] = retrlm__splitmix64(&seed);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; // cannot happen, but cheap
}

RETRLM_API uint64_t retrlm_rng_u64(retrlm_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = retrlm__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = retrlm__rotl(s[3], 45);
    return result;
}

RETRLM_API uint32_t retrlm_rng_u32(retrlm_rng *r) { return (uint32_t)(retrlm_rng_u64(r) >> 32); }

RETRLM_API uint64_t retrlm_rng_below(retrlm_rng *r, uint64_t n) {
    // rejection sampling on the top of the range: unbiased for every n
    uint64_t limit, x;
    RETRLM_ASSERT(n > 0);
    limit = UINT64_MAX - UINT64_MAX % n; // multiples of n below this are accepted
    do { x = retrlm_rng_u64(r); } while (x >= limit);
    return x % n;
}

RETRLM_API float retrlm_rng_float(retrlm_rng *r) {
    return (float)(retrlm_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

RETRLM_API double retrlm_rng_double(retrlm_rng *r) {
    return (double)(retrlm_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

RETRLM_API float retrlm_rng_normal(retrlm_rng *r) {
    // Box-Muller; u1 in (0, 1] so the log is finite
    double u1 = 1.0 - retrlm_rng_double(r);
    double u2 = retrlm_rng_double(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

RETRLM_API void retrlm_rng_jump(retrlm_rng *r) {
    static const uint64_t jump[4] = {0x180ec6d33cfd0abaull, 0xd5a61266f0c9392cull,
                                     0xa9582618e03fc9aaull, 0x39abdc4529b1661cull};
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i, b;
    for (i = 0; i < 4; i++) {
        for (b = 0; b < 64; b++) {
            if (jump[i] & ((uint64_t)1 << b)) {
                s0 ^= r->s[0];
                s1 ^= r->s[1];
                s2 ^= r->s[2];
                s3 ^= r->s[3];
            }
            retrlm_rng_u64(r);
        }
    }
    r->s[0] = s0;
    r->s[1] = s1;
    r->s[2] = s2;
    r->s[3] = s3;
}

// ---------------------------------------------------------------------------------------------
// progress and time

static retrlm_result retrlm__progress(retrlm_progress_fn fn, void *user, const char *stage,
                                      double done, double total) {
    if (fn && fn(user, stage, done, total))
        return retrlm__fail(RETRLM_ERR_CANCELLED, "%s: cancelled by the progress callback at %.0f of %.0f",
                            stage, done, total);
    return RETRLM_OK;
}

RETRLM_API double retrlm_time_seconds(void) {
#if defined(RETRLM__POSIX) && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif defined(RETRLM__OMP)
    return omp_get_wtime();
#else
    return (double)clock() / (double)CLOCKS_PER_SEC; // processor time: the best plain C99 has
#endif
}

// ---------------------------------------------------------------------------------------------
// little-endian fields and byte order

static void retrlm__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void retrlm__put_u64(unsigned char *p, uint64_t v) {
    retrlm__put_u32(p, (uint32_t)v);
    retrlm__put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t retrlm__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t retrlm__get_u64(const unsigned char *p) {
    return (uint64_t)retrlm__get_u32(p) | (uint64_t)retrlm__get_u32(p + 4) << 32;
}

static int retrlm__host_is_le(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void retrlm__byteswap(void *p, size_t n, size_t elem) {
    unsigned char *b = (unsigned char *)p, t;
    size_t i, j;
    if (elem < 2) return;
    for (i = 0; i < n; i++, b += elem) {
        for (j = 0; j < elem / 2; j++) {
            t = b[j];
            b[j] = b[elem - 1 - j];
            b[elem - 1 - j] = t;
        }
    }
}

// ---- one growable byte buffer and one binary heap, for the modules that build things --------

static int retrlm__buf_reserve(retrlm__buf *b, size_t extra) {
    size_t cap;
    void *q;
    if (extra > (size_t)-1 - b->n) return 0;
    if (b->n + extra <= b->cap) return 1;
    cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) {
        if (cap > (size_t)-1 / 2) return 0;
        cap *= 2;
    }
    if (!(q = retrlm__realloc(b->p, cap, 1))) return 0;
    b->p = (unsigned char *)q;
    b->cap = cap;
    return 1;
}

static int retrlm__buf_push(retrlm__buf *b, const void *x, size_t size) {
    if (!retrlm__buf_reserve(b, size)) return 0;
    if (x) memcpy(b->p + b->n, x, size);
    else memset(b->p + b->n, 0, size);
    b->n += size;
    return 1;
}

static int retrlm__heap_less(const retrlm__heap_item *a, const retrlm__heap_item *b) {
    return a->key < b->key || (a->key == b->key && a->tie < b->tie);
}

static void retrlm__heap_push(retrlm__heap_item *h, size_t *n, int64_t key, int64_t tie) {
    size_t i = (*n)++;
    retrlm__heap_item x;
    x.key = key;
    x.tie = tie;
    while (i > 0 && retrlm__heap_less(&x, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static retrlm__heap_item retrlm__heap_pop(retrlm__heap_item *h, size_t *n) {
    retrlm__heap_item top = h[0], x = h[--*n];
    size_t i = 0, len = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= len) break;
        if (c + 1 < len && retrlm__heap_less(&h[c + 1], &h[c])) c++;
        if (!retrlm__heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (len) h[i] = x;
    return top;
}
