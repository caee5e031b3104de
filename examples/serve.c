// examples/serve.c - retrlm serve: a tokenizer, a datastore and an LM behind HTTP/1.1 + JSON.
// POSIX only (sockets, pthreads, poll, signals); one cc command, no other dependency:
//   cc -std=c99 -O2 -I. -I/usr/include/stb examples/serve.c -lm -lpthread -o build/serve
// (make serve does the same). Build it without -fopenmp: the workers are the parallelism, and
// each runs the library's kernels on its own thread (results do not depend on it either way).
//
// USAGE
//   build/serve -d ds.rlm                                   /search only (BM25)
//   build/serve -t tok.rlm -d ds.rlm -m lm.rlm              + /generate and /score
//   build/serve -t tok.rlm -d ds.rlm --encoder enc.rlm [--dense dense.rlm]   + dense and hybrid
//   build/serve -t tok.rlm -m lm.rlm --knnlm-keys keys.rlm [-d ds.rlm]        /score with kNN-LM
//   build/serve -t tok.rlm -d ds.rlm -m retro.rlm           a RETRO model: retrieval every chunk
// Options (defaults in brackets):
//   -t FILE | --gpt2 ENCODER.JSON VOCAB.BPE   the tokenizer (needed with -m and --encoder)
//   -d FILE  the datastore (from retrlm datastore)    -m FILE  the LM (lm-train, retrofit, retro-train)
//   --encoder FILE, --dense FILE   a bi-encoder and the units' embeddings (from embed; else embedded now)
//   --knnlm-keys FILE   kNN-LM keys (from retrlm knnlm): /score mixes them in (the "with" figure)
//   --host ADDR [127.0.0.1]  --port N [8080; 0: any free port]  --port-file FILE (the port bound)
//   --threads N [2] workers   --queue N [16] requests waiting for one (more: 503 + Retry-After)
//   --max-conns N [256]   --max-body BYTES [1048576]   --max-k N [100]   --max-tokens N [512]
//   --max-text BYTES [65536] of /score's text and /generate's prompt
//   --header-timeout S [10] (from connect or the last response to a whole header)
//   --body-timeout S [30]   --write-timeout S [30]
//   --token-file FILE  or the environment's RETRLM_SERVE_TOKEN: every path but /health then
//                      needs "Authorization: Bearer TOKEN" (401 otherwise)
//   --stride N, --unit-tokens N, --query-tokens N, --context-tokens N   /score's windows as in
//                      retrlm eval (0: the library's defaults); --min-overlap X for RETRO
//   --depth N, --weight X, --bm25-weight X   hybrid retrieval, as in retrlm search
//   --bench-search FILE | --bench-generate PROMPT   no server: runs the library in process on
//                      --threads threads (--bench-requests N [1000]) and prints name=value lines
// SIGTERM or SIGINT: stop accepting, close idle connections, finish the requests in flight,
// exit 0. A second signal exits at once (status 1).
//
// ENDPOINTS (JSON bodies, UTF-8; unknown fields are an error)
//   POST /search   {"query": "...", "k": 10, "mode": "bm25"|"dense"|"rrf"|"linear"|"rerank"}
//     -> {"mode": "bm25", "results": [{"unit": 12, "score": 7.25, "doc": 3, "text": "..."}, ...],
//         "seconds": 0.0003}           retrlm_datastore_retrieve, as `retrlm search -k K QUERY`
//   POST /generate {"prompt": "...", "max_tokens": 64, "temperature": 0.8, "top_k": 0, "top_p": 0,
//                   "seed": 1, "retrieve": {"mode": "bm25", "k": 1} | false, "stream": false}
//     -> {"text": "...", "tokens": 64, "prompt_tokens": 40, "units": [{"unit", "doc", "score",
//         "tokens_used", "text"}], "seconds": 0.2, "tokens_per_second": 320}
//     A plain LM: the k best units for the prompt before it (the best nearest), then
//     retrlm_model_generate, as `retrlm generate -d DS --prompt P --tokens N --temp T --seed S`
//     for k = 1 (the default with -d; 0 or false: the prompt alone). A RETRO model: retrieval
//     every chunk (retrlm_retro_generate), units [{"chunk", "unit", "doc", "text"}].
//     "stream": true answers text/event-stream: one "data: {"token": ID, "text": "..."}" event a
//     token (text holds whole UTF-8 characters; a character split over tokens comes with the
//     last of them), then "event: done" with the object above. RETRO models send the done event only.
//   POST /score    {"text": "...", "mode": "incontext"|"replug"|"none", "k": 0}
//     -> {"bits_per_byte": 1.83, "bits_per_byte_no_retrieval": 1.91, "tokens": 412, "bytes": 1530,
//         "mode": "incontext", "knnlm": false, "seconds": 0.1}
//     retrlm_ralm_bits_per_byte (as `retrlm eval --mode M` and `--mode none`); with a RETRO
//     model retrlm_retro_bits_per_byte with and without neighbours (as `retrlm eval -d DS`).
//     Without a datastore or keys, bits_per_byte_no_retrieval alone (bits_per_byte is null).
//   GET /health    -> {"status": "ok", "workers": 2, "busy": 0, "queued": 0, "connections": 1}
//   GET /metrics   Prometheus text: requests by endpoint and status, errors, 503s, latency
//                  quantiles (0.5, 0.9, 0.99 over the last 4096 requests of each endpoint),
//                  tokens generated, open connections, queue, resident memory.
//   Errors: {"error": "what is wrong", "status": 400}. 400 bad HTTP, JSON, UTF-8 or field
//   (k, max_tokens over the limits included), 401, 404 unknown path, 405, 408 too slow, 411,
//   413 body too large, 414, 431 header too large, 501 chunked bodies or what the server was not
//   started with, 503 queue full (Retry-After: 1), 505.
//
// HOW IT WORKS
//   One I/O thread polls every socket: it reads and parses requests, answers /health, /metrics
//   and every error itself. A request that needs the library waits in a bounded queue for one of
//   --threads workers; the worker builds the whole response and writes it without blocking. When
//   all of it went and the connection simply awaits its next request, the worker marks it as
//   reading again (the I/O thread polls it for that request meanwhile: no wake-up, no hand-off);
//   otherwise (part unwritten, pipelined bytes, a close, a stream's events) the I/O thread takes
//   the connection back through the self-pipe and writes the rest. A slow client therefore holds
//   a connection slot, never a worker, and its slot ends at the header, body or write timeout;
//   at --max-conns the oldest connection still reading is closed for the new one. Memory: at most
//   max-conns x (8 KiB header + max-body) of input, plus queue and workers.
//   The tokenizer, datastore, encoder, kNN-LM keys and the LM's weights are loaded once and only
//   read (the header's THREADS rule: const objects may be used concurrently). Each worker owns a
//   view of the LM (retrlm_model_init_view): the same weights, its own activations and KV cache.
//
// LIMITS of the request parser: request line and headers 8 KiB, 100 headers, target 1 KiB,
// Content-Length only (no chunked bodies), HTTP/1.0 and 1.1, keep-alive and pipelining.
// JSON: depth 16, 4096 values, numbers 64 characters, strict UTF-8 (no overlong forms or
// surrogates; \u escapes paired), no duplicate keys, nothing after the value.
//
// The parser half of this file needs only the C library: fuzz/fuzz_http.c includes it with
// SERVE_PARSER_ONLY defined (see there).
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef SERVE_PARSER_ONLY
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// growing byte buffers with a ceiling: a failed allocation or the ceiling sets oom, after which
// appends do nothing (the caller checks once at the end)

typedef struct sbuf {
    char  *p;
    size_t n, cap, max; // max 0: no ceiling
    int    oom;
} sbuf;

static int sb_reserve(sbuf *b, size_t add) {
    size_t want, cap;
    char *q;
    if (b->oom) return -1;
    if (add > (size_t)-1 / 2 - b->n || (b->max && b->n + add > b->max)) return b->oom = 1, -1;
    want = b->n + add + 1; // room for a NUL
    if (want <= b->cap) return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < want) cap *= 2;
    if (b->max && cap > b->max + 1) cap = b->max + 1;
    if (!(q = (char *)realloc(b->p, cap))) return b->oom = 1, -1;
    b->p = q, b->cap = cap;
    return 0;
}

static void sb_add(sbuf *b, const void *s, size_t n) {
    if (sb_reserve(b, n)) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    char small[256];
    int n;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        sb_add(b, small, (size_t)n);
        return;
    }
    if (sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static void sb_free(sbuf *b) {
    free(b->p);
    b->p = NULL, b->n = b->cap = 0, b->oom = 0;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF

// the length (1..4) of the valid character at p (n bytes available), or 0
static int utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return n >= 3 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return n >= 4 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

// 1 when the n (< 4) bytes at p start a valid character that more bytes could complete
static int utf8_incomplete(const unsigned char *p, size_t n) {
    unsigned char full[4] = {0, 0x80, 0x80, 0x80};
    size_t i;
    if (n == 0 || n > 3 || p[0] < 0xC2) return 0;
    for (i = 0; i < n; i++) full[i] = p[i];
    // the smallest continuation that keeps the prefix valid (E0 needs A0.., F0 needs 90..)
    if (n == 1 && p[0] == 0xE0) full[1] = 0xA0;
    if (n == 1 && p[0] == 0xF0) full[1] = 0x90;
    return utf8_len(full, 4) > (int)n;
}

// ---------------------------------------------------------------------------------------------
// JSON writing: strings are written as valid UTF-8 whatever their bytes (a byte that starts no
// valid character becomes U+FFFD), with the characters JSON needs escaped

static void json_str(sbuf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; // run: bytes at p + i - run that need no escape, not yet copied
    sb_add(b, "\"", 1);
    while (i < n) {
        unsigned c = p[i];
        int len = c >= 0x20 && c < 0x80 && c != '"' && c != '\\' ? 1 : c >= 0x80 ? utf8_len(p + i, n - i) : -1;
        if (len > 0) {
            i += (size_t)len, run += (size_t)len;
            continue;
        }
        sb_add(b, p + i - run, run);
        run = 0;
        if (len == 0) sb_add(b, "\xEF\xBF\xBD", 3); // U+FFFD
        else if (c == '"') sb_add(b, "\\\"", 2);
        else if (c == '\\') sb_add(b, "\\\\", 2);
        else if (c == '\n') sb_add(b, "\\n", 2);
        else if (c == '\t') sb_add(b, "\\t", 2);
        else if (c == '\r') sb_add(b, "\\r", 2);
        else sb_printf(b, "\\u%04x", c);
        i++;
    }
    sb_add(b, p + i - run, run);
    sb_add(b, "\"", 1);
}

// a double as JSON (no NaN or infinity in JSON: null)
static void json_num(sbuf *b, double x) {
    if (x != x || x > 1e308 || x < -1e308) sb_str(b, "null");
    else sb_printf(b, "%.17g", x);
}

// ---------------------------------------------------------------------------------------------
// JSON parsing: strict RFC 8259 into a flat array of values; strings decoded (escapes, \u
// surrogate pairs) into an arena, each NUL-terminated, with their lengths (they may hold NUL)

enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ };
#define JSON_MAX_DEPTH 16
#define JSON_MAX_VALUES 4096

typedef struct json_node {
    int         type;    // JSON_*
    int         next;    // the next element or member of the same parent, -1 at the end
    int         child;   // arrays and objects: the first element or member, -1 when empty
    const char *key;     // a member of an object: its name (NUL-terminated)
    size_t      key_len;
    const char *str;     // a string: its bytes (NUL-terminated)
    size_t      len;
    double      num;     // a number
} json_node;

typedef struct json_doc {
    json_node  *node;      // (cap) node[0] is the top value
    int         n, cap;
    char       *arena;     // decoded strings; the source length is always enough
    size_t      used;
    const char *src;
    size_t      len, pos;
    int         depth;
    const char *error;     // static text, or NULL
    size_t      error_pos; // the byte where it was found
} json_doc;

static int json__fail(json_doc *d, const char *msg) {
    if (!d->error) d->error = msg, d->error_pos = d->pos;
    return -1;
}

static void json__ws(json_doc *d) {
    while (d->pos < d->len && (d->src[d->pos] == ' ' || d->src[d->pos] == '\t' || d->src[d->pos] == '\n' ||
                               d->src[d->pos] == '\r'))
        d->pos++;
}

static int json__hex4(json_doc *d, unsigned *v) {
    size_t i;
    *v = 0;
    if (d->len - d->pos < 4) return json__fail(d, "a \\u escape needs four hex digits");
    for (i = 0; i < 4; i++) {
        char c = d->src[d->pos + i];
        unsigned h = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
        if (h == 16) return json__fail(d, "a \\u escape needs four hex digits");
        *v = *v << 4 | h;
    }
    d->pos += 4;
    return 0;
}

// the string at d->pos (its opening quote) into the arena
static int json__string(json_doc *d, const char **out, size_t *out_len) {
    char *o = d->arena + d->used, *start = o;
    d->pos++;
    for (;;) {
        unsigned char c;
        if (d->pos >= d->len) return json__fail(d, "a string is not closed");
        c = (unsigned char)d->src[d->pos];
        if (c == '"') break;
        if (c < 0x20) return json__fail(d, "a control character in a string (escape it)");
        if (c == '\\') {
            unsigned u, lo;
            if (++d->pos >= d->len) return json__fail(d, "a string is not closed");
            c = (unsigned char)d->src[d->pos++];
            switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u':
                if (json__hex4(d, &u)) return -1;
                if (u >= 0xDC00 && u <= 0xDFFF) return json__fail(d, "a \\u escape of a low surrogate without a high one");
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (d->len - d->pos < 2 || d->src[d->pos] != '\\' || d->src[d->pos + 1] != 'u')
                        return json__fail(d, "a \\u escape of a high surrogate without a low one");
                    d->pos += 2;
                    if (json__hex4(d, &lo)) return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) return json__fail(d, "a \\u escape of a high surrogate without a low one");
                    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (u < 0x80) *o++ = (char)u;
                else if (u < 0x800) *o++ = (char)(0xC0 | u >> 6), *o++ = (char)(0x80 | (u & 0x3F));
                else if (u < 0x10000)
                    *o++ = (char)(0xE0 | u >> 12), *o++ = (char)(0x80 | (u >> 6 & 0x3F)), *o++ = (char)(0x80 | (u & 0x3F));
                else
                    *o++ = (char)(0xF0 | u >> 18), *o++ = (char)(0x80 | (u >> 12 & 0x3F)),
                    *o++ = (char)(0x80 | (u >> 6 & 0x3F)), *o++ = (char)(0x80 | (u & 0x3F));
                break;
            default: d->pos--; return json__fail(d, "an unknown escape in a string");
            }
        } else {
            int n = utf8_len((const unsigned char *)d->src + d->pos, d->len - d->pos);
            if (!n) return json__fail(d, "invalid UTF-8 in a string");
            memcpy(o, d->src + d->pos, (size_t)n);
            o += n, d->pos += (size_t)n;
        }
    }
    d->pos++;
    *o++ = '\0';
    *out = start, *out_len = (size_t)(o - start - 1);
    d->used = (size_t)(o - d->arena);
    return 0;
}

static int json__number(json_doc *d, double *v) {
    size_t start = d->pos;
    char tmp[65], *end;
    const char *s = d->src;
#define JSON__DIGITS(what) \
    do { if (d->pos >= d->len || s[d->pos] < '0' || s[d->pos] > '9') return json__fail(d, what); \
         while (d->pos < d->len && s[d->pos] >= '0' && s[d->pos] <= '9') d->pos++; } while (0)
    if (s[d->pos] == '-') d->pos++;
    if (d->pos < d->len && s[d->pos] == '0') d->pos++;
    else JSON__DIGITS("not a value (a number, string, object, array, true, false or null)");
    if (d->pos < d->len && s[d->pos] == '.') {
        d->pos++;
        JSON__DIGITS("a number needs digits after its point");
    }
    if (d->pos < d->len && (s[d->pos] == 'e' || s[d->pos] == 'E')) {
        d->pos++;
        if (d->pos < d->len && (s[d->pos] == '+' || s[d->pos] == '-')) d->pos++;
        JSON__DIGITS("a number needs digits in its exponent");
    }
#undef JSON__DIGITS
    if (d->pos - start > 64) return d->pos = start, json__fail(d, "a number of more than 64 characters");
    memcpy(tmp, s + start, d->pos - start);
    tmp[d->pos - start] = '\0';
    *v = strtod(tmp, &end);
    if (*v > 1e308 || *v < -1e308) return d->pos = start, json__fail(d, "a number out of range");
    return 0;
}

static int json__value(json_doc *d);

// an object or an array at d->pos (its bracket) whose node is i
static int json__container(json_doc *d, int i) {
    int obj = d->src[d->pos] == '{', last = -1, c, j;
    char close = obj ? '}' : ']';
    if (++d->depth > JSON_MAX_DEPTH) return json__fail(d, "nested deeper than 16");
    d->pos++;
    json__ws(d);
    if (d->pos < d->len && d->src[d->pos] == close) {
        d->pos++, d->depth--;
        return 0;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        json__ws(d);
        if (obj) {
            if (d->pos >= d->len || d->src[d->pos] != '"') return json__fail(d, "an object's member needs a quoted name");
            if (json__string(d, &key, &key_len)) return -1;
            for (j = d->node[i].child; j >= 0; j = d->node[j].next) // no duplicate names
                if (d->node[j].key_len == key_len && !memcmp(d->node[j].key, key, key_len))
                    return json__fail(d, "a duplicate name in an object");
            json__ws(d);
            if (d->pos >= d->len || d->src[d->pos] != ':') return json__fail(d, "a ':' after a member's name");
            d->pos++;
            json__ws(d);
        }
        if ((c = json__value(d)) < 0) return -1;
        d->node[c].key = key, d->node[c].key_len = key_len;
        if (last < 0) d->node[i].child = c;
        else d->node[last].next = c;
        last = c;
        json__ws(d);
        if (d->pos < d->len && d->src[d->pos] == ',') {
            d->pos++;
            continue;
        }
        if (d->pos < d->len && d->src[d->pos] == close) break;
        return json__fail(d, obj ? "a ',' or '}' after a member" : "a ',' or ']' after an element");
    }
    d->pos++, d->depth--;
    return 0;
}

static int json__value(json_doc *d) {
    int i;
    json_node *v;
    if (d->pos >= d->len) return json__fail(d, "a value is missing");
    if (d->n >= d->cap) return json__fail(d, "more than 4096 values");
    i = d->n++;
    v = &d->node[i];
    memset(v, 0, sizeof *v);
    v->next = v->child = -1;
    switch (d->src[d->pos]) {
    case '{': v->type = JSON_OBJ; return json__container(d, i) ? -1 : i;
    case '[': v->type = JSON_ARR; return json__container(d, i) ? -1 : i;
    case '"': v->type = JSON_STR; return json__string(d, &v->str, &v->len) ? -1 : i;
    case 't': case 'f': case 'n': {
        static const char *const words[3] = {"true", "false", "null"};
        static const int types[3] = {JSON_TRUE, JSON_FALSE, JSON_NULL};
        int w = d->src[d->pos] == 't' ? 0 : d->src[d->pos] == 'f' ? 1 : 2;
        size_t n = strlen(words[w]);
        if (d->len - d->pos < n || memcmp(d->src + d->pos, words[w], n)) return json__fail(d, "not a value (true, false or null?)");
        d->pos += n;
        v->type = types[w];
        return i;
    }
    default: v->type = JSON_NUM; return json__number(d, &v->num) ? -1 : i;
    }
}

static void json_free(json_doc *d) {
    free(d->node), free(d->arena);
    d->node = NULL, d->arena = NULL;
}

// parses the len bytes at src: 0, or -1 with d->error (static text) and d->error_pos.
// json_free(d) afterwards either way.
static int json_parse(json_doc *d, const char *src, size_t len) {
    memset(d, 0, sizeof *d);
    d->src = src, d->len = len;
    d->cap = len + 1 < JSON_MAX_VALUES ? (int)len + 1 : JSON_MAX_VALUES; // a value takes a byte at least
    d->node = (json_node *)malloc(sizeof(json_node) * (size_t)d->cap);
    d->arena = (char *)malloc(len + 1);
    if (!d->node || !d->arena) return json__fail(d, "out of memory");
    json__ws(d);
    if (json__value(d) < 0) return -1;
    json__ws(d);
    if (d->pos != d->len) return json__fail(d, "something after the value");
    return 0;
}

// the member key of object o, or NULL
static const json_node *json_get(const json_doc *d, const json_node *o, const char *key) {
    int j;
    size_t n = strlen(key);
    if (!o || o->type != JSON_OBJ) return NULL;
    for (j = o->child; j >= 0; j = d->node[j].next)
        if (d->node[j].key_len == n && !memcmp(d->node[j].key, key, n)) return &d->node[j];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 requests (RFC 9112): the request line and headers, checked strictly; the body is
// Content-Length bytes after them

#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_TARGET 1024

enum { ROUTE_NONE = -1, ROUTE_SEARCH, ROUTE_GENERATE, ROUTE_SCORE, ROUTE_HEALTH, ROUTE_METRICS, ROUTE_COUNT };
static const char *const route_path[ROUTE_COUNT] = {"/search", "/generate", "/score", "/health", "/metrics"};
static const int route_post[ROUTE_COUNT] = {1, 1, 1, 0, 0};

typedef struct http_req {
    int         route;          // ROUTE_*; ROUTE_NONE for an unknown path (404)
    int         post;           // the method: 1 POST, 0 GET (anything else is an error)
    int         minor;          // HTTP/1.minor
    int         keep_alive;
    int         expect_continue;
    size_t      content_length;
    size_t      head_len;       // bytes of the request line and headers, blank line included
    const char *auth;           // the Authorization header's value (into the buffer), or NULL
    size_t      auth_len;
    int         status;         // after an error: the status to answer with
    const char *error;          // after an error: why (static text)
} http_req;

static int http__err(http_req *q, int status, const char *why) {
    q->status = status, q->error = why;
    return -1;
}

static int http__tchar(unsigned char c) { // a token's characters (RFC 9110 5.6.2)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int http__ieq(const char *a, size_t n, const char *b) { // a (n bytes) == b, ignoring ASCII case
    size_t i;
    if (strlen(b) != n) return 0;
    for (i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

// whether the comma-separated list v (n bytes) holds token t (any case)
static int http__has_token(const char *v, size_t n, const char *t) {
    size_t i = 0, j;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        for (j = i; j < n && v[j] != ','; j++) {}
        {
            size_t e = j;
            while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
            if (e > i && http__ieq(v + i, e - i, t)) return 1;
        }
        i = j;
    }
    return 0;
}

// Parses the request at buf (len bytes so far). 1: the head is complete (q->head_len, and
// q->content_length body bytes follow); 0: more bytes are needed; -1: q->status, q->error.
// An error is found as soon as a whole line shows it; max_body bounds Content-Length (413).
static int http_parse(const char *buf, size_t len, size_t max_body, http_req *q) {
    const char *p = buf, *end, *eol, *sp1, *sp2, *path_end;
    size_t line = 0, n_headers = 0;
    int have_length = 0;
    memset(q, 0, sizeof *q);
    q->route = ROUTE_NONE;
    end = buf + (len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD);
    for (;;) {
        const char *cr = p;
        while (cr < end && *cr != '\r' && *cr != '\n') cr++;
        if (cr == end) { // no whole line yet
            if (len >= HTTP_MAX_HEAD) return line ? http__err(q, 431, "the request line and headers exceed 8 KiB")
                                                  : http__err(q, 414, "the request line exceeds 8 KiB");
            return 0;
        }
        if (*cr == '\n') return http__err(q, 400, "a line ends in a bare LF (HTTP needs CRLF)");
        if (cr + 1 == end) {
            if (len >= HTTP_MAX_HEAD) return http__err(q, 431, "the request line and headers exceed 8 KiB");
            return 0;
        }
        if (cr[1] != '\n') return http__err(q, 400, "a bare CR in the request");
        eol = cr;
        if (line == 0) { // METHOD SP target SP HTTP/1.x
            if (eol == p) return http__err(q, 400, "an empty request line");
            for (sp1 = p; sp1 < eol && *sp1 != ' '; sp1++)
                if (!http__tchar((unsigned char)*sp1)) return http__err(q, 400, "a bad character in the method");
            if (sp1 == eol || sp1 == p) return http__err(q, 400, "a malformed request line");
            for (sp2 = sp1 + 1; sp2 < eol && *sp2 != ' '; sp2++)
                if ((unsigned char)*sp2 <= 0x20 || (unsigned char)*sp2 >= 0x7F)
                    return http__err(q, 400, "a bad character in the request target");
            if (sp2 == eol || sp2 == sp1 + 1) return http__err(q, 400, "a malformed request line");
            if ((size_t)(sp2 - sp1 - 1) > HTTP_MAX_TARGET) return http__err(q, 414, "the request target exceeds 1 KiB");
            if (eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/", 5) || sp2[6] < '0' || sp2[6] > '9' || sp2[7] != '.' ||
                sp2[8] < '0' || sp2[8] > '9')
                return http__err(q, 400, "a malformed HTTP version");
            if (sp2[6] != '1') return http__err(q, 505, "only HTTP/1.0 and HTTP/1.1 are served");
            q->minor = sp2[8] - '0';
            q->keep_alive = q->minor >= 1;
            if (sp1 - p == 4 && !memcmp(p, "POST", 4)) q->post = 1;
            else if (sp1 - p == 3 && !memcmp(p, "GET", 3)) q->post = 0;
            else return http__err(q, 405, "only GET and POST are served");
            if (sp1[1] != '/') return http__err(q, 400, "the request target must start with '/'");
            for (path_end = sp1 + 1; path_end < sp2 && *path_end != '?'; path_end++) {}
            {
                int r;
                for (r = 0; r < ROUTE_COUNT; r++)
                    if ((size_t)(path_end - sp1 - 1) == strlen(route_path[r]) && !memcmp(sp1 + 1, route_path[r], strlen(route_path[r])))
                        q->route = r;
            }
        } else if (eol == p) { // the blank line: the head is complete
            q->head_len = (size_t)(eol + 2 - buf);
            if (q->route == ROUTE_NONE) return http__err(q, 404, "no such path (POST /search, /generate, /score; GET /health, /metrics)");
            if (q->post != route_post[q->route])
                return http__err(q, 405, q->post ? "this path takes GET" : "this path takes POST with a JSON body");
            return 1;
        } else { // name: OWS value OWS
            const char *colon = p, *v, *ve;
            if (++n_headers > HTTP_MAX_HEADERS) return http__err(q, 431, "more than 100 headers");
            if (*p == ' ' || *p == '\t') return http__err(q, 400, "a folded header line (obs-fold)");
            while (colon < eol && *colon != ':') {
                if (!http__tchar((unsigned char)*colon)) return http__err(q, 400, "a bad character in a header name");
                colon++;
            }
            if (colon == eol || colon == p) return http__err(q, 400, "a header line without a name and ':'");
            for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
            for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
            {
                const char *c;
                for (c = v; c < ve; c++)
                    if (((unsigned char)*c < 0x20 && *c != '\t') || (unsigned char)*c == 0x7F)
                        return http__err(q, 400, "a control character in a header value");
            }
            if (http__ieq(p, (size_t)(colon - p), "content-length")) {
                size_t cl = 0;
                const char *c;
                if (v == ve) return http__err(q, 400, "an empty Content-Length");
                for (c = v; c < ve; c++) {
                    if (*c < '0' || *c > '9') return http__err(q, 400, "Content-Length is not a number");
                    if (cl > ((size_t)-1 - 9) / 10) return http__err(q, 413, "the body is too large");
                    cl = cl * 10 + (size_t)(*c - '0');
                }
                if (have_length && cl != q->content_length) return http__err(q, 400, "two different Content-Lengths");
                if (cl > max_body) return http__err(q, 413, "the body is too large");
                q->content_length = cl, have_length = 1;
            } else if (http__ieq(p, (size_t)(colon - p), "transfer-encoding"))
                return http__err(q, 501, "Transfer-Encoding (chunked bodies) is not supported: send Content-Length");
            else if (http__ieq(p, (size_t)(colon - p), "connection")) {
                if (http__has_token(v, (size_t)(ve - v), "close")) q->keep_alive = 0;
                else if (http__has_token(v, (size_t)(ve - v), "keep-alive")) q->keep_alive = 1;
            } else if (http__ieq(p, (size_t)(colon - p), "expect")) {
                if (!http__ieq(v, (size_t)(ve - v), "100-continue")) return http__err(q, 417, "only Expect: 100-continue is understood");
                q->expect_continue = 1;
            } else if (http__ieq(p, (size_t)(colon - p), "authorization"))
                q->auth = v, q->auth_len = (size_t)(ve - v);
        }
        p = eol + 2;
        line++;
    }
}

// ---------------------------------------------------------------------------------------------
// the endpoints' fields, checked: the server's limits and what it was started with decide
// what is accepted; a problem is a message for a 400

typedef struct serve_limits {
    int    max_k, max_tokens;
    size_t max_text;
} serve_limits;

static const char *const mode_names[] = {"bm25", "dense", "rrf", "linear", "rerank"}; // retrlm_retrieve_mode
static const char *const score_modes[] = {"none", "incontext", "replug"};            // retrlm_ralm_mode

typedef struct search_args {
    const char *query;
    size_t      query_len;
    int         k, mode; // mode -1: the server's default
} search_args;

typedef struct generate_args {
    const char *prompt;
    size_t      prompt_len;
    int         max_tokens, top_k, seed, stream;
    float       temperature, top_p;
    int         retrieve_k, mode; // retrieve_k -1: the server's default (1 with a datastore); mode -1 default
} generate_args;

typedef struct score_args {
    const char *text;
    size_t      text_len;
    int         mode, k; // mode -1: incontext with a datastore, else none
} score_args;

// checks that object o has only the names in allowed (NULL-terminated); else a message in err
static int args_known(const json_doc *d, const json_node *o, const char *const *allowed, char *err, size_t cap) {
    int j, a;
    if (!o || o->type != JSON_OBJ) return snprintf(err, cap, "the body must be a JSON object"), -1;
    for (j = o->child; j >= 0; j = d->node[j].next) {
        for (a = 0; allowed[a] && strcmp(allowed[a], d->node[j].key); a++) {}
        if (!allowed[a] || strlen(allowed[a]) != d->node[j].key_len) {
            char name[40];
            size_t n = d->node[j].key_len < 32 ? d->node[j].key_len : 32, i;
            for (i = 0; i < n; i++) name[i] = d->node[j].key[i] >= 0x20 && d->node[j].key[i] < 0x7F ? d->node[j].key[i] : '?';
            name[n] = '\0';
            return snprintf(err, cap, "unknown field \"%s%s\"", name, d->node[j].key_len > 32 ? "..." : ""), -1;
        }
    }
    return 0;
}

// an integer member in [lo, hi], or def when absent
static int args_int(const json_doc *d, const json_node *o, const char *key, double lo, double hi, int def, int *out,
                    char *err, size_t cap) {
    const json_node *v = json_get(d, o, key);
    *out = def;
    if (!v) return 0;
    if (v->type != JSON_NUM || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return snprintf(err, cap, "\"%s\" must be an integer from %.0f to %.0f", key, lo, hi), -1;
    *out = (int)v->num;
    return 0;
}

static int args_float(const json_doc *d, const json_node *o, const char *key, double lo, double hi, float def,
                      float *out, char *err, size_t cap) {
    const json_node *v = json_get(d, o, key);
    *out = def;
    if (!v) return 0;
    if (v->type != JSON_NUM || v->num < lo || v->num > hi)
        return snprintf(err, cap, "\"%s\" must be a number from %g to %g", key, lo, hi), -1;
    *out = (float)v->num;
    return 0;
}

// a string member (required: an error when absent), at most max bytes
static int args_str(const json_doc *d, const json_node *o, const char *key, int required, size_t max, const char **s,
                    size_t *n, char *err, size_t cap) {
    const json_node *v = json_get(d, o, key);
    *s = NULL, *n = 0;
    if (!v) return required ? snprintf(err, cap, "\"%s\" is missing", key), -1 : 0;
    if (v->type != JSON_STR) return snprintf(err, cap, "\"%s\" must be a string", key), -1;
    if (v->len > max) return snprintf(err, cap, "\"%s\" is longer than %lu bytes", key, (unsigned long)max), -1;
    *s = v->str, *n = v->len;
    return 0;
}

// a name member among names (n of them), or -1 when absent
static int args_name(const json_doc *d, const json_node *o, const char *key, const char *const *names, int n, int *out,
                     char *err, size_t cap) {
    const json_node *v = json_get(d, o, key);
    int i;
    *out = -1;
    if (!v) return 0;
    if (v->type == JSON_STR)
        for (i = 0; i < n; i++)
            if (strlen(names[i]) == v->len && !memcmp(names[i], v->str, v->len)) return *out = i, 0;
    {
        int w = snprintf(err, cap, "\"%s\" must be one of", key);
        for (i = 0; i < n && w > 0 && (size_t)w < cap; i++) w += snprintf(err + w, cap - (size_t)w, " \"%s\"", names[i]);
    }
    return -1;
}

static int search_args_parse(const json_doc *d, const serve_limits *lim, search_args *a, char *err, size_t cap) {
    static const char *const known[] = {"query", "k", "mode", NULL};
    const json_node *o = &d->node[0];
    memset(a, 0, sizeof *a);
    if (args_known(d, o, known, err, cap) || args_str(d, o, "query", 1, lim->max_text, &a->query, &a->query_len, err, cap) ||
        args_int(d, o, "k", 1, lim->max_k, lim->max_k < 10 ? lim->max_k : 10, &a->k, err, cap) ||
        args_name(d, o, "mode", mode_names, 5, &a->mode, err, cap))
        return -1;
    return 0;
}

static int generate_args_parse(const json_doc *d, const serve_limits *lim, generate_args *a, char *err, size_t cap) {
    static const char *const known[] = {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "retrieve", "stream", NULL};
    static const char *const rknown[] = {"mode", "k", NULL};
    const json_node *o = &d->node[0], *r, *s;
    memset(a, 0, sizeof *a);
    if (args_known(d, o, known, err, cap) ||
        args_str(d, o, "prompt", 1, lim->max_text, &a->prompt, &a->prompt_len, err, cap) ||
        args_int(d, o, "max_tokens", 1, lim->max_tokens, lim->max_tokens < 64 ? lim->max_tokens : 64, &a->max_tokens, err, cap) ||
        args_float(d, o, "temperature", 0, 100, 0.8f, &a->temperature, err, cap) ||
        args_int(d, o, "top_k", 0, 1 << 30, 0, &a->top_k, err, cap) || args_float(d, o, "top_p", 0, 1, 0.0f, &a->top_p, err, cap) ||
        args_int(d, o, "seed", 0, 2147483647.0, 1, &a->seed, err, cap))
        return -1;
    if (a->prompt_len == 0) return snprintf(err, cap, "\"prompt\" is empty"), -1;
    a->retrieve_k = -1, a->mode = -1;
    if ((r = json_get(d, o, "retrieve")) != NULL) {
        if (r->type == JSON_FALSE || r->type == JSON_NULL) a->retrieve_k = 0;
        else if (r->type != JSON_OBJ) return snprintf(err, cap, "\"retrieve\" must be an object {\"mode\", \"k\"} or false"), -1;
        else if (args_known(d, r, rknown, err, cap) || args_int(d, r, "k", 0, 16, -1, &a->retrieve_k, err, cap) ||
                 args_name(d, r, "mode", mode_names, 5, &a->mode, err, cap))
            return -1;
    }
    if ((s = json_get(d, o, "stream")) != NULL) {
        if (s->type != JSON_TRUE && s->type != JSON_FALSE) return snprintf(err, cap, "\"stream\" must be true or false"), -1;
        a->stream = s->type == JSON_TRUE;
    }
    return 0;
}

static int score_args_parse(const json_doc *d, const serve_limits *lim, score_args *a, char *err, size_t cap) {
    static const char *const known[] = {"text", "mode", "k", NULL};
    const json_node *o = &d->node[0];
    memset(a, 0, sizeof *a);
    if (args_known(d, o, known, err, cap) || args_str(d, o, "text", 1, lim->max_text, &a->text, &a->text_len, err, cap) ||
        args_name(d, o, "mode", score_modes, 3, &a->mode, err, cap) || args_int(d, o, "k", 0, 16, 0, &a->k, err, cap))
        return -1;
    if (a->text_len == 0) return snprintf(err, cap, "\"text\" is empty"), -1;
    return 0;
}

#ifndef SERVE_PARSER_ONLY
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// the server's state

typedef struct server server;

enum { CONN_READ, CONN_QUEUED, CONN_WORK, CONN_WRITE };

typedef struct conn {
    int      fd;
    int      state;       // CONN_*; QUEUED and WORK belong to a worker, the rest to the I/O thread
    sbuf     in;          // bytes read: the request at the start
    sbuf     out;         // the response; while streaming, the worker appends (under srv->mu)
    size_t   sent;        // bytes of out written
    double   deadline;    // READ: the header or body must be whole by then; WRITE: all written
    double   t_request;   // when the request was whole (latency)
    http_req req;
    int      close_after; // close once out is written
    int      streaming;   // WORK: the worker appends events to out; the I/O thread writes them
    int      gone;        // the client went away while streaming (the worker stops)
    int      continued;   // "100 Continue" sent for this request
    int      peeked;      // QUEUED/WORK: the socket woke the poll (pipelined bytes, a hang-up): the
                          // worker hands the connection back through the done list, not by itself
    uint64_t serial;      // accept order: the oldest reading connection is evicted first
} conn;

#define LAT_RING 4096
typedef struct endpoint_stats {
    unsigned long long count[6];   // by status class: 2xx, 400, 404/405, 413/431/414, 503, other
    unsigned long long total;
    double   sum;                  // seconds
    double   ring[LAT_RING];       // the last latencies
    unsigned long long n_ring;
} endpoint_stats;

typedef struct worker {
    server      *srv;
    pthread_t    thread;
    int          started;
    retrlm_model lm;       // a view of srv->lm: the same weights, its own activations and KV cache
} worker;

struct server {
    // what is served (loaded once, read-only after)
    retrlm_tokenizer tok;
    retrlm_datastore ds;
    retrlm_encoder   enc;
    retrlm_knnlm     knn;
    retrlm_model     lm;
    int has_tok, has_ds, has_enc, has_knn, has_lm;
    retrlm_retrieve_params retrieve; // --depth, --weight, --bm25-weight; mode per request
    int   default_mode;              // dense with --encoder, else bm25
    int   stride, unit_tokens, query_tokens, context_tokens;
    float min_overlap;
    serve_limits lim;
    char *token;                     // the bearer token, or NULL
    size_t token_len;
    // settings
    int    n_workers, queue_cap, max_conns;
    size_t max_body;
    double header_timeout, body_timeout, write_timeout;
    // the I/O thread's
    int    listen_fd, wake[2];
    conn **conns;
    int    n_conns;
    conn **pc;                       // the connection of each polled descriptor (NULL: none, or closed)
    int    n_pc;
    uint64_t serial;
    // shared, under mu
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    conn  **queue;                   // (queue_cap) a ring
    int     q_head, q_len;
    conn  **done;                    // (max_conns) responses ready or streaming output
    int     n_done;
    int     wake_pending, quit, busy;
    worker *workers;
    // metrics, under mmu
    pthread_mutex_t mmu;
    endpoint_stats  stats[ROUTE_COUNT + 1]; // + requests that matched no endpoint
    unsigned long long rejected, tokens_out, accepted, evicted, timeouts;
};

static volatile sig_atomic_t g_stop; // SIGTERM / SIGINT seen
static int g_wake_fd = -1;           // the write end of the self-pipe, for the signal handler

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void on_signal(int sig) {
    (void)sig;
    if (g_stop) _exit(1); // a second signal: now
    g_stop = 1;
    if (g_wake_fd >= 0) {
        int saved = errno;
        ssize_t w = write(g_wake_fd, "s", 1);
        (void)w;
        errno = saved;
    }
}

static void wake_io(server *s) { // under s->mu
    if (!s->wake_pending) {
        ssize_t w = write(s->wake[1], "w", 1);
        (void)w;
        s->wake_pending = 1;
    }
}

// ---------------------------------------------------------------------------------------------
// metrics

static int status_class(int status) {
    return status < 300 ? 0 : status == 400 ? 1 : status == 404 || status == 405 ? 2
         : status == 413 || status == 414 || status == 431 ? 3 : status == 503 ? 4 : 5;
}

static void record(server *s, int route, int status, double seconds) {
    endpoint_stats *e = &s->stats[route >= 0 && route < ROUTE_COUNT ? route : ROUTE_COUNT];
    pthread_mutex_lock(&s->mmu);
    e->count[status_class(status)]++;
    e->total++;
    e->sum += seconds;
    e->ring[e->n_ring++ % LAT_RING] = seconds;
    if (status == 503) s->rejected++;
    pthread_mutex_unlock(&s->mmu);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t resident_bytes(void) { // Linux: /proc/self/statm; 0 elsewhere
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (!f) return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2) rss = 0;
    fclose(f);
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

static void metrics_text(server *s, sbuf *b) {
    static const char *const classes[6] = {"2xx", "400", "404_405", "too_large", "503", "other"};
    static const double qs[3] = {0.5, 0.9, 0.99};
    double *tmp = (double *)malloc(sizeof(double) * LAT_RING);
    int r, c, i;
    sb_str(b, "# HELP retrlm_requests_total Requests answered, by endpoint and status.\n# TYPE retrlm_requests_total counter\n");
    pthread_mutex_lock(&s->mmu);
    for (r = 0; r <= ROUTE_COUNT; r++)
        for (c = 0; c < 6; c++)
            sb_printf(b, "retrlm_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                      r < ROUTE_COUNT ? route_path[r] + 1 : "other", classes[c], s->stats[r].count[c]);
    sb_str(b, "# HELP retrlm_errors_total Requests answered with a status of 400 or more.\n# TYPE retrlm_errors_total counter\n");
    {
        unsigned long long err = 0;
        for (r = 0; r <= ROUTE_COUNT; r++) err += s->stats[r].total - s->stats[r].count[0];
        sb_printf(b, "retrlm_errors_total %llu\n", err);
    }
    sb_printf(b, "# HELP retrlm_rejected_total Requests refused with 503 (queue full).\n# TYPE retrlm_rejected_total counter\n"
              "retrlm_rejected_total %llu\n", s->rejected);
    sb_str(b, "# HELP retrlm_request_duration_seconds From the whole request to the response ready; quantiles over the "
              "last 4096 requests.\n# TYPE retrlm_request_duration_seconds summary\n");
    for (r = 0; r < ROUTE_COUNT; r++) {
        endpoint_stats *e = &s->stats[r];
        size_t n = e->n_ring < LAT_RING ? (size_t)e->n_ring : LAT_RING;
        if (tmp && n) {
            memcpy(tmp, e->ring, n * sizeof(double));
            qsort(tmp, n, sizeof(double), cmp_double);
        }
        for (i = 0; i < 3; i++) {
            sb_printf(b, "retrlm_request_duration_seconds{endpoint=\"%s\",quantile=\"%g\"} ", route_path[r] + 1, qs[i]);
            if (tmp && n) json_num(b, tmp[(size_t)(qs[i] * (double)(n - 1) + 0.5)]);
            else sb_str(b, "NaN");
            sb_str(b, "\n");
        }
        sb_printf(b, "retrlm_request_duration_seconds_sum{endpoint=\"%s\"} %.9f\n", route_path[r] + 1, e->sum);
        sb_printf(b, "retrlm_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", route_path[r] + 1, e->total);
    }
    sb_printf(b, "# HELP retrlm_generated_tokens_total Tokens generated.\n# TYPE retrlm_generated_tokens_total counter\n"
              "retrlm_generated_tokens_total %llu\n", s->tokens_out);
    sb_printf(b, "# HELP retrlm_connections_accepted_total Connections accepted.\n# TYPE retrlm_connections_accepted_total counter\n"
              "retrlm_connections_accepted_total %llu\n", s->accepted);
    sb_printf(b, "# HELP retrlm_connections_evicted_total Reading connections closed to make room (--max-conns).\n"
              "# TYPE retrlm_connections_evicted_total counter\nretrlm_connections_evicted_total %llu\n", s->evicted);
    sb_printf(b, "# HELP retrlm_timeouts_total Connections closed at a header, body or write timeout.\n"
              "# TYPE retrlm_timeouts_total counter\nretrlm_timeouts_total %llu\n", s->timeouts);
    pthread_mutex_unlock(&s->mmu);
    free(tmp);
    pthread_mutex_lock(&s->mu);
    sb_printf(b, "# HELP retrlm_queue_depth Requests waiting for a worker.\n# TYPE retrlm_queue_depth gauge\n"
              "retrlm_queue_depth %d\n", s->q_len);
    sb_printf(b, "# HELP retrlm_workers_busy Workers running a request.\n# TYPE retrlm_workers_busy gauge\n"
              "retrlm_workers_busy %d\n", s->busy);
    pthread_mutex_unlock(&s->mu);
    sb_printf(b, "# HELP retrlm_workers Worker threads.\n# TYPE retrlm_workers gauge\nretrlm_workers %d\n", s->n_workers);
    sb_printf(b, "# HELP retrlm_connections_open Open connections.\n# TYPE retrlm_connections_open gauge\n"
              "retrlm_connections_open %d\n", s->n_conns);
    sb_printf(b, "# HELP retrlm_resident_memory_bytes Resident set size.\n# TYPE retrlm_resident_memory_bytes gauge\n"
              "retrlm_resident_memory_bytes %lu\n", (unsigned long)resident_bytes());
}

// ---------------------------------------------------------------------------------------------
// responses

static const char *status_text(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

// c->out = the status line, headers and body (type: its Content-Type)
static void respond(conn *c, int status, const char *type, const char *body, size_t n) {
    c->out.n = 0, c->out.oom = 0, c->out.max = 0, c->sent = 0;
    if (status >= 400 && status != 404 && status != 405 && status != 401) c->close_after = 1; // framing may be lost
    if (!c->req.keep_alive) c->close_after = 1;
    sb_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %lu\r\n", status, status_text(status),
              type, (unsigned long)n);
    if (status == 503) sb_str(&c->out, "Retry-After: 1\r\n");
    if (status == 401) sb_str(&c->out, "WWW-Authenticate: Bearer\r\n");
    if (status == 405) sb_str(&c->out, c->req.route >= 0 && route_post[c->req.route] ? "Allow: POST\r\n" : "Allow: GET\r\n");
    sb_str(&c->out, c->close_after ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n");
    sb_add(&c->out, body, n);
}

static void respond_error(conn *c, int status, const char *msg) {
    sbuf b;
    memset(&b, 0, sizeof b);
    sb_str(&b, "{\"error\":");
    json_str(&b, msg, strlen(msg));
    sb_printf(&b, ",\"status\":%d}\n", status);
    respond(c, status, "application/json", b.oom ? "{}" : b.p, b.oom ? 2 : b.n);
    sb_free(&b);
}

// ---------------------------------------------------------------------------------------------
// the work: each handler reads the request's body and fills c->out

static void unit_json(const server *s, sbuf *b, int u) {
    size_t len;
    const char *t = retrlm_datastore_text(&s->ds, u, &len);
    sb_printf(b, "\"unit\":%d,\"doc\":%lld,\"text\":", u, (long long)s->ds.unit_doc[u]);
    json_str(b, t, len);
}

// a library failure: 500 with its detail message
static int lib_error(conn *c, retrlm_result r, const char *what) {
    char msg[600];
    const char *detail = retrlm_last_error();
    snprintf(msg, sizeof msg, "%s: %s", what, detail[0] ? detail : retrlm_result_string(r));
    respond_error(c, r == RETRLM_ERR_NOMEM ? 503 : 500, msg);
    return r == RETRLM_ERR_NOMEM ? 503 : 500;
}

static int check_mode(server *s, conn *c, int *mode) {
    if (*mode < 0) *mode = s->default_mode;
    if (*mode != RETRLM_RETRIEVE_BM25 && !s->has_enc) {
        respond_error(c, 501, "this retrieval mode needs a bi-encoder: start the server with --encoder");
        return 501;
    }
    return 0;
}

static int do_search(server *s, conn *c, const json_doc *d) {
    search_args a;
    retrlm_retrieve_params p = s->retrieve;
    char err[200];
    int *units, found = 0, i, st;
    float *scores;
    double t0 = now_s();
    sbuf b;
    retrlm_result r;
    if (!s->has_ds) return respond_error(c, 501, "no datastore: start the server with -d"), 501;
    if (search_args_parse(d, &s->lim, &a, err, sizeof err)) return respond_error(c, 400, err), 400;
    if ((st = check_mode(s, c, &a.mode))) return st;
    p.mode = (retrlm_retrieve_mode)a.mode;
    units = (int *)malloc(sizeof(int) * (size_t)a.k);
    scores = (float *)malloc(sizeof(float) * (size_t)a.k);
    if (!units || !scores) {
        free(units), free(scores);
        return respond_error(c, 503, "out of memory"), 503;
    }
    r = retrlm_datastore_retrieve(&s->ds, &p, a.query, a.query_len, a.k, RETRLM_NO_DOC, units, scores, &found);
    if (r) {
        free(units), free(scores);
        return lib_error(c, r, "search");
    }
    memset(&b, 0, sizeof b);
    sb_printf(&b, "{\"mode\":\"%s\",\"results\":[", mode_names[a.mode]);
    for (i = 0; i < found; i++) {
        sb_str(&b, i ? ",{" : "{");
        unit_json(s, &b, units[i]);
        sb_printf(&b, ",\"score\":%.9g}", (double)scores[i]);
    }
    sb_printf(&b, "],\"seconds\":%.6f}\n", now_s() - t0);
    free(units), free(scores);
    if (b.oom) return sb_free(&b), respond_error(c, 503, "out of memory"), 503;
    respond(c, 200, "application/json", b.p, b.n);
    sb_free(&b);
    return 200;
}

// streaming: appends bytes to c->out for the I/O thread to write; 1 when the client has gone
static int stream_out(server *s, conn *c, const char *p, size_t n) {
    int gone;
    pthread_mutex_lock(&s->mu);
    sb_add(&c->out, p, n);
    gone = c->gone || c->out.oom;
    wake_io(s);
    pthread_mutex_unlock(&s->mu);
    return gone;
}

// the longest prefix of the n pending bytes that a JSON string can take now: whole UTF-8
// characters (and bytes no character could start, which become U+FFFD), never a character
// that the next token could complete
static size_t utf8_ready(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        int l = utf8_len(p + i, n - i);
        if (l > 0) i += (size_t)l;
        else if (n - i < 4 && utf8_incomplete(p + i, n - i)) break;
        else i++;
    }
    return i;
}

// generation with a plain LM, token by token, as retrlm_model_generate does, with an event a
// token; the same tokens (tests/test_serve.sh compares the two)
static retrlm_result generate_stream(server *s, worker *w, conn *c, const int *ctx, int n_ctx, int n_new,
                                     const retrlm_sampler *smp, retrlm_rng *rng, int *out, int *n_out) {
    retrlm_model *m = &w->lm;
    unsigned char pending[64];
    size_t n_pending = 0;
    int pos, got = 0, tok;
    retrlm_result r;
    sbuf ev;
    *n_out = 0;
    if (n_ctx < 1 || n_ctx > m->config.max_seq_len) return RETRLM_ERR_ARG;
    for (pos = 0; pos < n_ctx; pos++)
        if ((r = retrlm_model_decode(m, ctx[pos], pos))) return r;
    memset(&ev, 0, sizeof ev);
    while (got < n_new) {
        size_t len, ready;
        const char *bytes;
        tok = retrlm_model_sample(m, m->step_logits, smp, rng);
        out[got++] = tok;
        *n_out = got;
        bytes = retrlm_tokenizer_token(&s->tok, tok, &len);
        if (!bytes) len = 0;
        if (len > sizeof pending - n_pending) { // cannot happen with real tokens; flush what is there
            ready = n_pending;
        } else {
            memcpy(pending + n_pending, bytes, len);
            n_pending += len;
            ready = got == n_new || pos >= m->config.max_seq_len ? n_pending : utf8_ready(pending, n_pending);
        }
        ev.n = 0;
        sb_printf(&ev, "data: {\"token\":%d,\"text\":", tok);
        json_str(&ev, (const char *)pending, ready);
        sb_str(&ev, "}\n\n");
        memmove(pending, pending + ready, n_pending - ready);
        n_pending -= ready;
        if (ev.oom || stream_out(s, c, ev.p, ev.n)) break; // the client has gone: stop
        if (got == n_new || pos >= m->config.max_seq_len) break;
        if ((r = retrlm_model_decode(m, tok, pos++))) {
            sb_free(&ev);
            return r;
        }
    }
    sb_free(&ev);
    return RETRLM_OK;
}

static int do_generate(server *s, worker *w, conn *c, const json_doc *d) {
    generate_args a;
    retrlm_retrieve_params p = s->retrieve;
    retrlm_sampler smp;
    retrlm_rng rng;
    retrlm_result r = RETRLM_OK;
    const retrlm_model_config *mc = &w->lm.config;
    char err[200];
    int *ids = NULL, *ctx = NULL, *out, *units = NULL, n_out = 0, n_ctx = 0, T = mc->max_seq_len, i, st, found = 0;
    int used[16];
    float scores[16];
    int runits[16];
    size_t n_p = 0, skip = 0, len;
    double t0, secs;
    sbuf b, text;
    memset(&b, 0, sizeof b);
    memset(&text, 0, sizeof text);
    if (!s->has_lm) return respond_error(c, 501, "no LM: start the server with -m"), 501;
    if (generate_args_parse(d, &s->lim, &a, err, sizeof err)) return respond_error(c, 400, err), 400;
    if (a.retrieve_k < 0) a.retrieve_k = s->has_ds ? 1 : 0;
    if (a.retrieve_k > 0 && !s->has_ds) return respond_error(c, 501, "retrieval needs a datastore: start the server with -d"), 501;
    if (mc->retro_chunk && !s->has_ds) return respond_error(c, 501, "a RETRO model needs a datastore (-d)"), 501;
    if ((st = check_mode(s, c, &a.mode))) return st;
    p.mode = (retrlm_retrieve_mode)a.mode;
    if ((r = retrlm_tokenizer_encode_alloc(&s->tok, a.prompt, a.prompt_len, 0, &ids, &n_p))) return lib_error(c, r, "encode");
    if (!n_p) {
        retrlm_free(ids);
        return respond_error(c, 400, "the prompt encodes to no tokens"), 400;
    }
    memset(&smp, 0, sizeof smp);
    smp.temperature = a.temperature, smp.top_k = a.top_k, smp.top_p = a.top_p;
    retrlm_rng_seed(&rng, (uint64_t)a.seed);
    if (n_p > (size_t)T - 1) skip = n_p - ((size_t)T - 1); // the model sees T tokens: the end of the prompt
    t0 = now_s();
    if (mc->retro_chunk) { // RETRO: retrieval every chunk (as retrlm generate with a RETRO model)
        const int M = mc->retro_chunk, K = mc->retro_k;
        retrlm_retro_generate_config gc;
        int n_in = (int)(n_p - skip), dd, ch, j;
        ctx = (int *)malloc(sizeof(int) * ((size_t)n_in + (size_t)a.max_tokens + (size_t)(T / M) * (size_t)K + 1));
        if (!ctx) goto nomem;
        units = ctx + n_in + a.max_tokens;
        memcpy(ctx, ids + skip, sizeof(int) * (size_t)n_in);
        memset(&gc, 0, sizeof gc);
        gc.tok = &s->tok, gc.ds = &s->ds, gc.neighbours.retrieve = p, gc.neighbours.min_overlap = s->min_overlap;
        gc.sampler = &smp, gc.rng = &rng, gc.units = units;
        if ((r = retrlm_retro_generate(&w->lm, &gc, ctx, n_in, a.max_tokens, ctx + n_in, &n_out))) goto fail;
        secs = now_s() - t0;
        out = ctx + n_in;
        n_ctx = n_in;
        dd = n_in + n_out - 1;
        sb_str(&b, "{\"units\":[");
        for (ch = 0, found = 0; ch < dd / M; ch++)
            for (j = 0; j < K; j++) {
                int u = units[ch * K + j];
                if (u < 0) continue;
                sb_printf(&b, "%s{\"chunk\":%d,", found++ ? "," : "", ch);
                unit_json(s, &b, u);
                sb_str(&b, "}");
            }
        sb_str(&b, "],");
    } else {
        ctx = (int *)malloc(sizeof(int) * ((size_t)T + (size_t)a.max_tokens));
        if (!ctx) goto nomem;
        if (a.retrieve_k > 0) {
            r = retrlm_datastore_retrieve(&s->ds, &p, a.prompt, a.prompt_len, a.retrieve_k, RETRLM_NO_DOC, runits, scores, &found);
            if (r) goto fail;
        }
        // the units before the prompt, the best nearest to it: each as much of it as leaves room
        // for the prompt, the tokens and the better units (retrlm generate's rule for one unit)
        {
            long room = (long)T - (long)(n_p - skip) - a.max_tokens;
            for (i = 0; i < found; i++) {
                int nt;
                retrlm_datastore_tokens(&s->ds, runits[i], &nt);
                used[i] = nt > room ? (room > 0 ? (int)room : 0) : nt;
                room -= used[i];
            }
            for (i = found - 1; i >= 0; i--) {
                int nt;
                const int *ut = retrlm_datastore_tokens(&s->ds, runits[i], &nt);
                memcpy(ctx + n_ctx, ut, sizeof(int) * (size_t)used[i]);
                n_ctx += used[i];
            }
        }
        memcpy(ctx + n_ctx, ids + skip, sizeof(int) * (n_p - skip));
        n_ctx += (int)(n_p - skip);
        out = ctx + T;
        if (a.stream) {
            pthread_mutex_lock(&s->mu);
            c->streaming = 1; // from here the I/O thread writes what is appended to c->out
            c->out.n = 0, c->out.oom = 0, c->sent = 0, c->close_after = 1;
            sb_str(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                            "Connection: close\r\n\r\n");
            wake_io(s);
            pthread_mutex_unlock(&s->mu);
            r = generate_stream(s, w, c, ctx, n_ctx, a.max_tokens, &smp, &rng, out, &n_out);
        } else
            r = retrlm_model_generate(&w->lm, ctx, n_ctx, a.max_tokens, &smp, &rng, out, &n_out);
        if (r) goto fail;
        secs = now_s() - t0;
        sb_str(&b, "{\"units\":[");
        for (i = 0; i < found; i++) {
            sb_str(&b, i ? ",{" : "{");
            unit_json(s, &b, runits[i]);
            sb_printf(&b, ",\"score\":%.9g,\"tokens_used\":%d}", (double)scores[i], used[i]);
        }
        sb_str(&b, "],");
    }
    if ((r = retrlm_tokenizer_decode(&s->tok, out, (size_t)n_out, NULL, 0, &len))) goto fail;
    if (sb_reserve(&text, len + 1)) goto nomem;
    if ((r = retrlm_tokenizer_decode(&s->tok, out, (size_t)n_out, text.p, len + 1, &len))) goto fail;
    sb_str(&b, "\"text\":");
    json_str(&b, text.p, len);
    sb_printf(&b, ",\"tokens\":%d,\"prompt_tokens\":%d,\"seconds\":%.6f,\"tokens_per_second\":%.3f}\n", n_out, n_ctx, secs,
              secs > 0 ? n_out / secs : 0.0);
    if (b.oom) goto nomem;
    pthread_mutex_lock(&s->mmu);
    s->tokens_out += (unsigned long long)n_out;
    pthread_mutex_unlock(&s->mmu);
    if (c->streaming) {
        stream_out(s, c, "event: done\ndata: ", 18);
        stream_out(s, c, b.p, b.n - 1); // without its newline: an event's data is one line
        stream_out(s, c, "\n\n", 2);
    } else if (a.stream) { // RETRO: the done event alone
        c->close_after = 1;
        c->out.n = 0, c->sent = 0;
        sb_str(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
                        "event: done\ndata: ");
        sb_add(&c->out, b.p, b.n - 1);
        sb_str(&c->out, "\n\n");
    } else
        respond(c, 200, "application/json", b.p, b.n);
    st = 200;
    goto end;
nomem:
    r = RETRLM_ERR_NOMEM;
fail:
    if (c->streaming) { // the status line is out: say it in an event, then close
        sbuf e;
        memset(&e, 0, sizeof e);
        sb_str(&e, "event: error\ndata: {\"error\":");
        json_str(&e, retrlm_last_error(), strlen(retrlm_last_error()));
        sb_str(&e, "}\n\n");
        if (!e.oom) stream_out(s, c, e.p, e.n);
        sb_free(&e);
        st = 500;
    } else
        st = lib_error(c, r, "generate");
end:
    retrlm_free(ids);
    free(ctx);
    sb_free(&b), sb_free(&text);
    return st;
}

static int do_score(server *s, worker *w, conn *c, const json_doc *d) {
    score_args a;
    retrlm_ralm_config rc;
    char err[200];
    int *ids = NULL, *absent = NULL, with_ret, st;
    size_t n = 0;
    double with = 0.0, without = 0.0, t0 = now_s();
    retrlm_result r;
    retrlm_retro_neighbours nb;
    sbuf b;
    memset(&b, 0, sizeof b);
    memset(&nb, 0, sizeof nb);
    if (!s->has_lm) return respond_error(c, 501, "no LM: start the server with -m"), 501;
    if (score_args_parse(d, &s->lim, &a, err, sizeof err)) return respond_error(c, 400, err), 400;
    if (a.mode < 0) a.mode = s->has_ds ? RETRLM_RALM_INCONTEXT : RETRLM_RALM_NONE;
    if (a.mode != RETRLM_RALM_NONE && !s->has_ds) return respond_error(c, 501, "this mode needs a datastore (-d)"), 501;
    if (w->lm.config.retro_chunk && !s->has_ds) return respond_error(c, 501, "a RETRO model needs a datastore (-d)"), 501;
    if ((r = retrlm_tokenizer_encode_alloc(&s->tok, a.text, a.text_len, 0, &ids, &n))) return lib_error(c, r, "encode");
    if (!n) {
        retrlm_free(ids);
        return respond_error(c, 400, "the text encodes to no tokens"), 400;
    }
    with_ret = a.mode != RETRLM_RALM_NONE || s->has_knn;
    if (w->lm.config.retro_chunk) { // as retrlm eval with a RETRO model: with its neighbours, then every one absent
        const retrlm_model_config *mc = &w->lm.config;
        retrlm_retro_neighbours none;
        retrlm_retro_neighbours_config nc;
        size_t i, na;
        memset(&nc, 0, sizeof nc);
        nc.chunk = mc->retro_chunk, nc.k = mc->retro_k, nc.len = mc->retro_len;
        nc.retrieve = s->retrieve, nc.retrieve.mode = (retrlm_retrieve_mode)s->default_mode, nc.min_overlap = s->min_overlap;
        if ((r = retrlm_retro_neighbours_build(&nb, &s->ds, &s->tok, ids, n, NULL, &nc)) ||
            (r = retrlm_retro_bits_per_byte(&w->lm, ids, n, a.text_len, &nb, 0, &with)))
            goto fail;
        memset(&none, 0, sizeof none);
        none.chunk = mc->retro_chunk, none.k = mc->retro_k, none.len = mc->retro_len, none.n_chunks = nb.n_chunks;
        na = (size_t)none.n_chunks * (size_t)none.k * (size_t)none.len;
        if (!(absent = (int *)malloc(sizeof(int) * (na + 1)))) {
            r = RETRLM_ERR_NOMEM;
            goto fail;
        }
        for (i = 0; i < na; i++) absent[i] = -1;
        none.tokens = absent;
        if ((r = retrlm_retro_bits_per_byte(&w->lm, ids, n, a.text_len, &none, 0, &without))) goto fail;
        with_ret = 1;
    } else {
        memset(&rc, 0, sizeof rc);
        rc.stride = s->stride, rc.query_tokens = s->query_tokens, rc.unit_tokens = s->unit_tokens;
        rc.context_tokens = s->context_tokens, rc.retrieve = &s->retrieve;
        rc.mode = RETRLM_RALM_NONE;
        if ((r = retrlm_ralm_bits_per_byte(&w->lm, &s->tok, s->has_ds ? &s->ds : NULL, ids, n, a.text_len, &rc, &without, NULL)))
            goto fail;
        if (with_ret) {
            rc.mode = (retrlm_ralm_mode)a.mode;
            rc.k = a.k;
            rc.knnlm = s->has_knn ? &s->knn : NULL;
            if ((r = retrlm_ralm_bits_per_byte(&w->lm, &s->tok, s->has_ds ? &s->ds : NULL, ids, n, a.text_len, &rc, &with, NULL)))
                goto fail;
        }
    }
    sb_str(&b, "{\"bits_per_byte\":");
    if (with_ret) json_num(&b, with);
    else sb_str(&b, "null");
    sb_str(&b, ",\"bits_per_byte_no_retrieval\":");
    json_num(&b, without);
    sb_printf(&b, ",\"tokens\":%lu,\"bytes\":%lu,\"mode\":\"%s\",\"knnlm\":%s,\"seconds\":%.6f}\n", (unsigned long)n,
              (unsigned long)a.text_len, w->lm.config.retro_chunk ? "retro" : score_modes[a.mode],
              s->has_knn && !w->lm.config.retro_chunk ? "true" : "false", now_s() - t0);
    if (b.oom) {
        r = RETRLM_ERR_NOMEM;
        goto fail;
    }
    respond(c, 200, "application/json", b.p, b.n);
    st = 200;
    goto end;
fail:
    st = lib_error(c, r, "score");
end:
    retrlm_free(ids);
    free(absent);
    retrlm_retro_neighbours_free(&nb);
    sb_free(&b);
    return st;
}

// a worker's request: parse the body, run it, record it; c->out holds the response after
static void run_request(server *s, worker *w, conn *c) {
    json_doc d;
    int st;
    const char *body = c->in.p + c->req.head_len;
    if (json_parse(&d, body, c->req.content_length)) {
        char msg[200];
        snprintf(msg, sizeof msg, "bad JSON at byte %lu: %s", (unsigned long)d.error_pos, d.error);
        respond_error(c, 400, msg);
        st = 400;
    } else if (c->req.route == ROUTE_SEARCH)
        st = do_search(s, c, &d);
    else if (c->req.route == ROUTE_GENERATE)
        st = do_generate(s, w, c, &d);
    else
        st = do_score(s, w, c, &d);
    json_free(&d);
    record(s, c->req.route, st, now_s() - c->t_request);
}

static int conn_flush(conn *c);

// a response written: the request's bytes dropped (pipelined bytes stay), reading again
static void conn_rearm(server *s, conn *c) {
    size_t used = c->req.head_len + c->req.content_length;
    if (used > c->in.n) used = c->in.n;
    memmove(c->in.p, c->in.p + used, c->in.n - used);
    c->in.n -= used;
    c->out.n = 0, c->sent = 0, c->continued = 0, c->streaming = 0;
    memset(&c->req, 0, sizeof c->req);
    c->state = CONN_READ;
    c->deadline = now_s() + s->header_timeout;
}

static void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    server *s = w->srv;
    for (;;) {
        conn *c;
        int sent;
        pthread_mutex_lock(&s->mu);
        while (!s->q_len && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
        if (!s->q_len) { // quit, and nothing left
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        c = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->queue_cap, s->q_len--;
        c->state = CONN_WORK;
        s->busy++;
        pthread_mutex_unlock(&s->mu);
        run_request(s, w, c);
        // the response is written here; when all of it went and the connection simply waits for
        // its next request, it goes back to reading without waking the I/O thread, which polls
        // it for that request already (a hand-off through the self-pipe costs two wake-ups)
        sent = c->streaming ? 0 : conn_flush(c);
        pthread_mutex_lock(&s->mu);
        s->busy--;
        if (sent == 1 && !c->close_after && !g_stop && !c->peeked &&
            c->in.n == c->req.head_len + c->req.content_length) // nothing pipelined to parse
            conn_rearm(s, c);
        else {
            s->done[s->n_done++] = c; // at most one entry a connection: fits max_conns
            wake_io(s);
        }
        pthread_mutex_unlock(&s->mu);
    }
}

// ---------------------------------------------------------------------------------------------
// the I/O thread: accept, read, parse, answer what needs no worker, queue the rest, write

static void conn_close(server *s, int i) {
    conn *c = s->conns[i];
    int j;
    for (j = 0; j < s->n_pc; j++) // the poll loop may still hold it
        if (s->pc[j] == c) s->pc[j] = NULL;
    close(c->fd);
    sb_free(&c->in), sb_free(&c->out);
    free(c);
    s->conns[i] = s->conns[--s->n_conns];
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// writes what it can of c->out; -1 on an error (close), 1 when all is written, 0 when not yet
static int conn_flush(conn *c) {
    while (c->sent < c->out.n) {
        ssize_t w = send(c->fd, c->out.p + c->sent, c->out.n - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (w <= 0) return -1;
        c->sent += (size_t)w;
    }
    return 1;
}

static int token_ok(const server *s, const http_req *q) {
    size_t i;
    unsigned char diff = 0;
    if (!s->token) return 1;
    if (!q->auth || q->auth_len != 7 + s->token_len || !http__ieq(q->auth, 7, "bearer ")) return 0;
    for (i = 0; i < s->token_len; i++) diff |= (unsigned char)(q->auth[7 + i] ^ s->token[i]); // in constant time
    return diff == 0;
}

static void begin_write(server *s, conn *c) {
    c->state = CONN_WRITE;
    c->deadline = now_s() + s->write_timeout;
}

static void health_text(server *s, sbuf *b) {
    pthread_mutex_lock(&s->mu);
    sb_printf(b, "{\"status\":\"%s\",\"workers\":%d,\"busy\":%d,\"queued\":%d,\"connections\":%d,\"datastore\":%s,"
                 "\"lm\":%s,\"encoder\":%s,\"knnlm\":%s}\n", g_stop ? "stopping" : "ok", s->n_workers, s->busy, s->q_len,
              s->n_conns, s->has_ds ? "true" : "false", s->has_lm ? (s->lm.config.retro_chunk ? "\"retro\"" : "true") : "false",
              s->has_enc ? "true" : "false", s->has_knn ? "true" : "false");
    pthread_mutex_unlock(&s->mu);
}

// the connection's buffered bytes: a request whole? Answers it, queues it or waits for more
static void conn_process(server *s, conn *c) {
    int r = http_parse(c->in.p ? c->in.p : "", c->in.n, s->max_body, &c->req);
    if (r < 0) {
        c->close_after = 1;
        respond_error(c, c->req.status, c->req.error);
        record(s, c->req.route, c->req.status, 0.0);
        begin_write(s, c);
        return;
    }
    if (r == 0) return;
    if (c->in.n < c->req.head_len + c->req.content_length) { // the body is still coming
        if (c->req.expect_continue && !c->continued) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            ssize_t w = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
            (void)w; // an empty socket takes 25 bytes; if not, the client sends the body anyway
            c->continued = 1;
            c->deadline = now_s() + s->body_timeout;
        }
        return;
    }
    c->t_request = now_s();
    if (g_stop) c->req.keep_alive = 0;
    if (c->req.route != ROUTE_HEALTH && !token_ok(s, &c->req)) {
        respond_error(c, 401, "this server needs \"Authorization: Bearer TOKEN\"");
        record(s, c->req.route, 401, 0.0);
        begin_write(s, c);
        return;
    }
    if (c->req.route == ROUTE_HEALTH || c->req.route == ROUTE_METRICS) {
        sbuf b;
        memset(&b, 0, sizeof b);
        if (c->req.route == ROUTE_HEALTH) health_text(s, &b);
        else metrics_text(s, &b);
        if (b.oom) respond_error(c, 503, "out of memory");
        else respond(c, 200, c->req.route == ROUTE_HEALTH ? "application/json" : "text/plain; version=0.0.4", b.p, b.n);
        sb_free(&b);
        record(s, c->req.route, 200, now_s() - c->t_request);
        begin_write(s, c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (s->q_len < s->queue_cap) {
        s->queue[(s->q_head + s->q_len) % s->queue_cap] = c;
        s->q_len++;
        c->state = CONN_QUEUED;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    respond_error(c, 503, "the server is busy: every worker is running and the queue is full");
    record(s, c->req.route, 503, 0.0);
    begin_write(s, c);
}

// after a response is written: the next request on the connection, or close (-1)
static int conn_next(server *s, conn *c) {
    if (c->close_after || g_stop) return -1;
    conn_rearm(s, c);
    conn_process(s, c);
    return 0;
}

// reads what the socket has; -1: close it
static int conn_read(server *s, conn *c) {
    for (;;) {
        ssize_t got;
        size_t room;
        if (sb_reserve(&c->in, 4096)) { // in.max: the head and the largest body
            c->close_after = 1;
            c->req.keep_alive = 0;
            respond_error(c, 413, "the request is too large");
            record(s, ROUTE_NONE, 413, 0.0);
            begin_write(s, c);
            return 0;
        }
        room = c->in.cap - 1 - c->in.n;
        got = recv(c->fd, c->in.p + c->in.n, room, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (got <= 0) { // the client closed (or failed): a partial request is answered, if it still reads
            if (c->in.n > 0 && got == 0) {
                c->close_after = 1;
                respond_error(c, 400, "the request ended before its end (truncated)");
                record(s, ROUTE_NONE, 400, 0.0);
                begin_write(s, c);
                return 0;
            }
            return -1;
        }
        c->in.n += (size_t)got;
        c->in.p[c->in.n] = '\0';
        if ((size_t)got < room) break;
    }
    conn_process(s, c);
    return 0;
}

static void conn_accept(server *s) {
    for (;;) {
        int fd = accept(s->listen_fd, NULL, NULL), i, victim = -1, one = 1;
        conn *c;
        if (fd < 0) return; // EAGAIN: no more; anything else: try at the next poll
        if (s->n_conns >= s->max_conns) { // the oldest connection still reading makes room
            pthread_mutex_lock(&s->mu); // a worker may be giving one back
            for (i = 0; i < s->n_conns; i++)
                if (s->conns[i]->state == CONN_READ && (victim < 0 || s->conns[i]->serial < s->conns[victim]->serial)) victim = i;
            pthread_mutex_unlock(&s->mu);
            if (victim < 0) { // all are running or writing: this one cannot be served now
                close(fd);
                continue;
            }
            conn_close(s, victim);
            pthread_mutex_lock(&s->mmu);
            s->evicted++;
            pthread_mutex_unlock(&s->mmu);
        }
        if (!(c = (conn *)calloc(1, sizeof(conn)))) {
            close(fd);
            continue;
        }
        set_nonblock(fd);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->state = CONN_READ;
        c->in.max = HTTP_MAX_HEAD + s->max_body + 4096; // one request and some pipelined bytes
        c->deadline = now_s() + s->header_timeout;
        c->serial = s->serial++;
        s->conns[s->n_conns++] = c;
        pthread_mutex_lock(&s->mmu);
        s->accepted++;
        pthread_mutex_unlock(&s->mmu);
    }
}

static int find_conn(server *s, conn *c) {
    int i;
    for (i = 0; i < s->n_conns; i++)
        if (s->conns[i] == c) return i;
    return -1;
}

// the I/O loop; returns when stopped and every request in flight has been answered
static void io_loop(server *s) {
    struct pollfd *pf = (struct pollfd *)malloc(sizeof(struct pollfd) * ((size_t)s->max_conns + 2));
    conn **pc = s->pc = (conn **)malloc(sizeof(conn *) * ((size_t)s->max_conns + 2));
    conn **fresh = (conn **)malloc(sizeof(conn *) * ((size_t)s->max_conns + 1)); // handed back by a worker
    int stopping = 0;
    if (!pf || !pc || !fresh) {
        fprintf(stderr, "retrlm serve: out of memory\n");
        free(pf), free(pc), free(fresh);
        s->pc = NULL;
        return;
    }
    for (;;) {
        int n = 0, i, timeout_ms, k, fixed, n_fresh = 0;
        double now = now_s(), next = now + 1.0;
        if (g_stop && !stopping) { // stop accepting; close every connection that holds no request
            stopping = 1;
            close(s->listen_fd);
            s->listen_fd = -1;
            for (i = s->n_conns - 1; i >= 0; i--) {
                int st;
                pthread_mutex_lock(&s->mu);
                st = s->conns[i]->state;
                pthread_mutex_unlock(&s->mu);
                if (st == CONN_READ) conn_close(s, i);
            }
        }
        if (stopping) {
            int active;
            pthread_mutex_lock(&s->mu);
            active = s->n_conns > 0 || s->q_len > 0 || s->busy > 0 || s->n_done > 0;
            pthread_mutex_unlock(&s->mu);
            if (!active) break;
        }
        // connections past their deadline
        for (i = s->n_conns - 1; i >= 0; i--) {
            conn *c = s->conns[i];
            int late;
            pthread_mutex_lock(&s->mu); // a worker may be giving it back
            late = (c->state == CONN_READ || c->state == CONN_WRITE) && now >= c->deadline;
            pthread_mutex_unlock(&s->mu);
            if (late) {
                pthread_mutex_lock(&s->mmu);
                s->timeouts++;
                pthread_mutex_unlock(&s->mmu);
                if (c->state == CONN_READ && c->in.n > 0) { // say why, if it listens (never waited for)
                    c->close_after = 1;
                    respond_error(c, 408, "the request took too long to arrive");
                    record(s, c->req.route, 408, 0.0);
                    conn_flush(c);
                }
                conn_close(s, i);
            }
        }
        s->n_pc = 0;
        pf[n].fd = s->wake[0], pf[n].events = POLLIN, pc[n++] = NULL;
        if (s->listen_fd >= 0) pf[n].fd = s->listen_fd, pf[n].events = POLLIN, pc[n++] = NULL;
        fixed = n;
        pthread_mutex_lock(&s->mu);
        for (i = 0; i < s->n_conns; i++) {
            conn *c = s->conns[i];
            short ev = 0;
            if (c->state == CONN_READ) ev = POLLIN;
            else if (c->state == CONN_WRITE) ev = POLLOUT;
            else if (c->state == CONN_WORK && c->streaming && !c->gone) ev = c->sent < c->out.n ? POLLOUT : 0;
            else if (!c->streaming && !c->peeked) ev = POLLIN; // its next request, once the worker has answered
            else continue;
            if ((c->state == CONN_READ || c->state == CONN_WRITE) && c->deadline < next) next = c->deadline;
            pf[n].fd = c->fd, pf[n].events = ev, pf[n].revents = 0, pc[n++] = c;
        }
        pthread_mutex_unlock(&s->mu);
        s->n_pc = n;
        timeout_ms = (int)((next - now) * 1000.0) + 1;
        if (timeout_ms < 1) timeout_ms = 1;
        if (poll(pf, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
            perror("retrlm serve: poll");
            break;
        }
        if (pf[0].revents & POLLIN) { // the self-pipe: a signal, a response, streamed output
            char junk[256];
            while (read(s->wake[0], junk, sizeof junk) > 0) {}
            pthread_mutex_lock(&s->mu);
            s->wake_pending = 0;
            for (k = 0; k < s->n_done; k++) {
                conn *c = s->done[k];
                c->streaming = 0, c->peeked = 0;
                begin_write(s, c);
                fresh[n_fresh++] = c;
            }
            s->n_done = 0;
            pthread_mutex_unlock(&s->mu);
        }
        if (fixed > 1 && (pf[1].revents & POLLIN)) conn_accept(s);
        // the responses just finished are written now, not at the next poll
        for (k = 0; k < n_fresh; k++) {
            conn *c = fresh[k];
            int r = conn_flush(c); // a worker may have written part of it
            if (r < 0 || (r == 1 && conn_next(s, c) < 0)) conn_close(s, find_conn(s, c));
        }
        for (i = fixed; i < n; i++) {
            conn *c = pc[i];
            int j, st;
            if (!c) continue; // closed since the poll
            pthread_mutex_lock(&s->mu);
            st = c->state;
            if ((st == CONN_QUEUED || st == CONN_WORK) && !c->streaming) {
                if (pf[i].revents) c->peeked = 1; // polled no more until the worker hands it back
                pthread_mutex_unlock(&s->mu);
                continue;
            }
            if (st == CONN_WORK) { // streaming
                int r;
                if (pf[i].revents) {
                    r = pf[i].revents & (POLLERR | POLLHUP | POLLNVAL) ? -1 : conn_flush(c);
                    if (r < 0) c->gone = 1;
                }
                pthread_mutex_unlock(&s->mu);
                continue;
            }
            pthread_mutex_unlock(&s->mu);
            if (!pf[i].revents && st != CONN_WRITE) continue;
            j = find_conn(s, c);
            if (st == CONN_READ) {
                if (conn_read(s, c) < 0) {
                    conn_close(s, j);
                    continue;
                }
                pthread_mutex_lock(&s->mu); // queued: a worker may hold it already
                st = c->state;
                pthread_mutex_unlock(&s->mu);
            }
            if (st == CONN_WRITE) {
                int r = conn_flush(c);
                if (r < 0 || (r == 1 && conn_next(s, c) < 0)) conn_close(s, find_conn(s, c));
            }
        }
    }
    free(pf), free(pc), free(fresh);
    s->pc = NULL, s->n_pc = 0;
}

// ---------------------------------------------------------------------------------------------
// loading what is served

static int say(const char *fmt, ...) {
    va_list ap;
    fputs("retrlm serve: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int fail_lib(retrlm_result r, const char *what, const char *path) {
    const char *detail = retrlm_last_error();
    return say("%s %s: %s", what, path, detail[0] ? detail : retrlm_result_string(r));
}

// the CLI records the tokenizer's fingerprint in the models it trains: a model of another
// tokenizer of the same size is refused
static int check_fingerprint(server *s, const char *path) {
    retrlm_result r = retrlm_model_file_check_tokenizer(path, &s->tok);
    return r ? fail_lib(r, "cannot use the LM", path) : 0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)n + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)n, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

typedef struct serve_opts {
    const char *tok, *gpt2[2], *ds, *lm, *enc, *dense, *keys, *host, *port_file, *token_file;
    const char *bench_search, *bench_generate;
    int port, bench_requests;
} serve_opts;

static int load_all(server *s, const serve_opts *o) {
    retrlm_result r;
    if (o->gpt2[0]) {
        if ((r = retrlm_tokenizer_load_gpt2(&s->tok, o->gpt2[0], o->gpt2[1]))) return fail_lib(r, "cannot load the tokenizer", o->gpt2[0]);
        s->has_tok = 1;
    } else if (o->tok) {
        if ((r = retrlm_tokenizer_load(&s->tok, o->tok))) return fail_lib(r, "cannot load the tokenizer", o->tok);
        s->has_tok = 1;
    }
    if ((o->lm || o->enc) && !s->has_tok) return say("-m and --encoder need the tokenizer: -t FILE or --gpt2");
    if (o->ds) {
        if ((r = retrlm_datastore_load(&s->ds, o->ds))) return fail_lib(r, "cannot load the datastore", o->ds);
        s->has_ds = 1;
    }
    if (o->enc) {
        if (!s->has_ds) return say("--encoder needs -d DATASTORE");
        if ((r = retrlm_encoder_load(&s->enc, o->enc))) return fail_lib(r, "cannot load the encoder", o->enc);
        if (s->enc.config.model.vocab_size < s->tok.n_vocab)
            return say("%s has a vocabulary of %d tokens, the tokenizer %d", o->enc, s->enc.config.model.vocab_size, s->tok.n_vocab);
        if (o->dense) r = retrlm_datastore_load_dense(&s->ds, &s->enc, &s->tok, o->dense);
        else {
            fprintf(stderr, "retrlm serve: embedding the datastore's units (--dense FILE saves this)\n");
            r = retrlm_datastore_embed(&s->ds, &s->enc, &s->tok, NULL, NULL, NULL);
        }
        if (r) return fail_lib(r, "cannot load the dense index", o->dense ? o->dense : o->enc);
        s->has_enc = 1;
    } else if (o->dense)
        return say("--dense needs --encoder FILE (the encoder that made it)");
    s->default_mode = s->has_enc ? RETRLM_RETRIEVE_DENSE : RETRLM_RETRIEVE_BM25;
    if (o->lm) {
        retrlm_model_config over; // generation and scoring only: no gradients, the weights mapped
        memset(&over, 0, sizeof over);
        over.inference = 1;
        if ((r = retrlm_model_load(&s->lm, o->lm, &over))) return fail_lib(r, "cannot load the model", o->lm);
        s->has_lm = 1;
        if (s->lm.config.bidirectional || s->lm.config.vocab_size != s->tok.n_vocab)
            return say("%s is not a causal LM for this tokenizer (vocabulary %d, the tokenizer's %d)", o->lm,
                       s->lm.config.vocab_size, s->tok.n_vocab);
        if (check_fingerprint(s, o->lm)) return 1;
        if (s->lm.config.retro_chunk && !s->has_ds) return say("%s is a RETRO model: give -d DATASTORE", o->lm);
    }
    if (o->keys) {
        if (!s->has_lm) return say("--knnlm-keys needs -m LM (the model the keys were made with)");
        if (s->lm.config.retro_chunk) return say("--knnlm-keys is for plain LMs, not RETRO models");
        if ((r = retrlm_knnlm_load(&s->knn, o->keys, s->lm.config.vocab_size))) return fail_lib(r, "cannot load the keys", o->keys);
        s->has_knn = 1;
    }
    if (!s->has_ds && !s->has_lm) return say("nothing to serve: give -d DATASTORE and/or -m LM (-h: the options)");
    return 0;
}

static void free_all(server *s) {
    retrlm_knnlm_free(&s->knn);
    retrlm_model_free(&s->lm);
    retrlm_datastore_free(&s->ds); // before the encoder it borrows
    retrlm_encoder_free(&s->enc);
    retrlm_tokenizer_free(&s->tok);
    free(s->token);
}

// ---------------------------------------------------------------------------------------------
// --bench-search, --bench-generate: the library in process on the same threads, no HTTP

typedef struct bench_thread {
    server      *srv;
    pthread_t    thread;
    retrlm_model lm;
    const char *const *queries;
    const size_t *lens;
    int          n_queries, first, count;
    double      *lat;
    long         tokens;
    int          error;
} bench_thread;

static void *bench_main(void *arg) {
    bench_thread *b = (bench_thread *)arg;
    server *s = b->srv;
    int i, units[10], found, *ids = NULL, out[4096], n_out;
    float scores[10];
    size_t n = 0;
    for (i = 0; i < b->count && !b->error; i++) {
        int q = (b->first + i) % b->n_queries;
        double t0 = now_s();
        if (!s->has_lm) {
            b->error = retrlm_datastore_retrieve(&s->ds, &s->retrieve, b->queries[q], b->lens[q], 10, RETRLM_NO_DOC,
                                                 units, scores, &found) != RETRLM_OK;
        } else { // the prompt alone, greedy, 64 tokens at most (the bench's /generate request)
            retrlm_sampler smp;
            retrlm_rng rng;
            memset(&smp, 0, sizeof smp);
            retrlm_rng_seed(&rng, 1);
            if (retrlm_tokenizer_encode_alloc(&s->tok, b->queries[q], b->lens[q], 0, &ids, &n) || !n ||
                (int)n >= b->lm.config.max_seq_len ||
                retrlm_model_generate(&b->lm, ids, (int)n, 64, &smp, &rng, out, &n_out))
                b->error = 1;
            else
                b->tokens += n_out;
            retrlm_free(ids);
            ids = NULL;
        }
        b->lat[i] = now_s() - t0;
    }
    return NULL;
}

static int run_bench(server *s, const serve_opts *o) {
    char *text = NULL, **queries = NULL;
    size_t len = 0, *lens = NULL;
    int n_q = 0, i, t, nt = s->n_workers, total = o->bench_requests, rc = 0;
    bench_thread *bt;
    double t0, wall, *all;
    long tokens = 0;
    if (o->bench_search) {
        char *p, *e;
        if (!(text = read_file(o->bench_search, &len))) return say("cannot read %s", o->bench_search);
        for (p = text; *p; p++) n_q += *p == '\n';
        queries = (char **)malloc(sizeof(char *) * ((size_t)n_q + 1));
        lens = (size_t *)malloc(sizeof(size_t) * ((size_t)n_q + 1));
        if (!queries || !lens) return free(text), free(queries), free(lens), say("out of memory");
        for (n_q = 0, p = text; *p; p = e + (*e != '\0')) {
            for (e = p; *e && *e != '\n'; e++) {}
            if (e > p) queries[n_q] = p, lens[n_q++] = (size_t)(e - p);
        }
        if (!n_q) return free(text), free(queries), free(lens), say("%s holds no query", o->bench_search);
    } else {
        queries = (char **)malloc(sizeof(char *));
        lens = (size_t *)malloc(sizeof(size_t));
        if (!queries || !lens) return free(queries), free(lens), say("out of memory");
        queries[0] = (char *)o->bench_generate, lens[0] = strlen(o->bench_generate), n_q = 1;
        if (!s->has_lm) return free(queries), free(lens), say("--bench-generate needs -m LM");
    }
    if (o->bench_search) s->has_lm = 0; // search alone
    bt = (bench_thread *)calloc((size_t)nt, sizeof(bench_thread));
    all = (double *)malloc(sizeof(double) * (size_t)(total + 1));
    if (!bt || !all) return say("out of memory");
    for (i = 0, t = 0; i < nt; t += bt[i].count, i++) { // thread i: requests t .. t + count - 1
        bt[i].srv = s, bt[i].queries = (const char *const *)queries, bt[i].lens = lens, bt[i].n_queries = n_q;
        bt[i].first = t, bt[i].count = total / nt + (i < total % nt), bt[i].lat = all + t;
        if (s->has_lm && retrlm_model_init_view(&bt[i].lm, &s->lm, NULL)) return say("out of memory");
    }
    t0 = now_s();
    for (i = 0; i < nt; i++) pthread_create(&bt[i].thread, NULL, bench_main, &bt[i]);
    for (i = 0; i < nt; i++) pthread_join(bt[i].thread, NULL);
    wall = now_s() - t0;
    for (i = 0; i < nt; i++) {
        rc |= bt[i].error, tokens += bt[i].tokens;
        retrlm_model_free(&bt[i].lm);
    }
    qsort(all, (size_t)total, sizeof(double), cmp_double);
    if (rc) say("a library call failed: %s", retrlm_last_error());
    printf("inproc_%s_threads=%d\ninproc_%s_requests=%d\ninproc_%s_rps=%.1f\ninproc_%s_p50_ms=%.3f\ninproc_%s_p99_ms=%.3f\n",
           o->bench_search ? "search" : "generate", nt, o->bench_search ? "search" : "generate", total,
           o->bench_search ? "search" : "generate", total / wall, o->bench_search ? "search" : "generate",
           1e3 * all[(size_t)(0.5 * (total - 1) + 0.5)], o->bench_search ? "search" : "generate",
           1e3 * all[(size_t)(0.99 * (total - 1) + 0.5)]);
    if (!o->bench_search) printf("inproc_generate_tokens_per_second=%.1f\n", tokens / wall);
    if (o->bench_search) printf("kernel_path=%s\n", retrlm_cpu_path());
    free(bt), free(all), free(text), free(queries), free(lens);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// the command line

static const char usage_text[] =
    "usage: serve [-t TOK | --gpt2 ENCODER.JSON VOCAB.BPE] [-d DS] [-m LM] [--encoder ENC [--dense DENSE]]\n"
    "             [--knnlm-keys KEYS] [--host ADDR] [--port N] [--port-file FILE] [--threads N] [--queue N]\n"
    "             [--max-conns N] [--max-body BYTES] [--max-k N] [--max-tokens N] [--max-text BYTES]\n"
    "             [--header-timeout S] [--body-timeout S] [--write-timeout S] [--token-file FILE]\n"
    "             [--stride N] [--unit-tokens N] [--query-tokens N] [--context-tokens N] [--min-overlap X]\n"
    "             [--depth N] [--weight X] [--bm25-weight X]\n"
    "             [--bench-search QUERIES.TXT | --bench-generate PROMPT] [--bench-requests N]\n"
    "Serves POST /search, /generate, /score and GET /health, /metrics on 127.0.0.1:8080 (the top of\n"
    "examples/serve.c documents the requests and responses).\n";

// the number after option name (argv[*i + 1]) in [lo, hi]
static int opt_num(int argc, char **argv, int *i, double lo, double hi, double *v) {
    char *end;
    if (*i + 1 >= argc) return say("%s needs a value", argv[*i]);
    *v = strtod(argv[*i + 1], &end);
    if (end == argv[*i + 1] || *end || *v < lo || *v > hi) return say("%s takes a number from %g to %g, not '%s'", argv[*i], lo, hi, argv[*i + 1]);
    *i += 1;
    return 0;
}

static int parse_cmdline(int argc, char **argv, server *s, serve_opts *o) {
    int i;
    double v;
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1", o->port = 8080, o->bench_requests = 1000;
    s->n_workers = 2, s->queue_cap = 16, s->max_conns = 256, s->max_body = 1 << 20;
    s->lim.max_k = 100, s->lim.max_tokens = 512, s->lim.max_text = 65536;
    s->header_timeout = 10, s->body_timeout = 30, s->write_timeout = 30;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **str = !strcmp(a, "-t") || !strcmp(a, "--tokenizer") ? &o->tok
                         : !strcmp(a, "-d") || !strcmp(a, "--datastore") ? &o->ds
                         : !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->lm
                         : !strcmp(a, "--encoder") ? &o->enc : !strcmp(a, "--dense") ? &o->dense
                         : !strcmp(a, "--knnlm-keys") ? &o->keys : !strcmp(a, "--host") ? &o->host
                         : !strcmp(a, "--port-file") ? &o->port_file : !strcmp(a, "--token-file") ? &o->token_file
                         : !strcmp(a, "--bench-search") ? &o->bench_search
                         : !strcmp(a, "--bench-generate") ? &o->bench_generate : NULL;
        if (str) {
            if (i + 1 >= argc) return say("%s needs a value", a);
            *str = argv[++i];
        } else if (!strcmp(a, "--gpt2")) {
            if (i + 2 >= argc) return say("--gpt2 needs ENCODER.JSON VOCAB.BPE");
            o->gpt2[0] = argv[i + 1], o->gpt2[1] = argv[i + 2], i += 2;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
#define SERVE_NUM(name, lo, hi, dst, type) \
        else if (!strcmp(a, name)) { if (opt_num(argc, argv, &i, lo, hi, &v)) return 1; dst = (type)v; }
        SERVE_NUM("--port", 0, 65535, o->port, int)
        SERVE_NUM("--threads", 1, 256, s->n_workers, int)
        SERVE_NUM("--queue", 1, 65536, s->queue_cap, int)
        SERVE_NUM("--max-conns", 1, 100000, s->max_conns, int)
        SERVE_NUM("--max-body", 1, 1 << 30, s->max_body, size_t)
        SERVE_NUM("--max-k", 1, 100000, s->lim.max_k, int)
        SERVE_NUM("--max-tokens", 1, 1 << 20, s->lim.max_tokens, int)
        SERVE_NUM("--max-text", 1, 1 << 30, s->lim.max_text, size_t)
        SERVE_NUM("--header-timeout", 0.01, 86400, s->header_timeout, double)
        SERVE_NUM("--body-timeout", 0.01, 86400, s->body_timeout, double)
        SERVE_NUM("--write-timeout", 0.01, 86400, s->write_timeout, double)
        SERVE_NUM("--stride", 0, 1 << 20, s->stride, int)
        SERVE_NUM("--unit-tokens", 0, 1 << 20, s->unit_tokens, int)
        SERVE_NUM("--query-tokens", 0, 1 << 20, s->query_tokens, int)
        SERVE_NUM("--context-tokens", 0, 1 << 20, s->context_tokens, int)
        SERVE_NUM("--min-overlap", 0, 1, s->min_overlap, float)
        SERVE_NUM("--depth", 0, 1 << 20, s->retrieve.depth, int)
        SERVE_NUM("--weight", 0, 1, s->retrieve.weight, float)
        SERVE_NUM("--bm25-weight", 0, 1e6, s->retrieve.bm25_weight, float)
        SERVE_NUM("--bench-requests", 1, 1e8, o->bench_requests, int)
#undef SERVE_NUM
        else return say("unknown option '%s' (-h: the options)", a);
    }
    if (s->lim.max_text > s->max_body) s->lim.max_text = s->max_body;
    return 0;
}

// the bearer token from --token-file or RETRLM_SERVE_TOKEN (its first line)
static int load_token(server *s, const serve_opts *o) {
    const char *env = getenv("RETRLM_SERVE_TOKEN");
    size_t n = 0;
    char *t = NULL;
    if (o->token_file) {
        if (!(t = read_file(o->token_file, &n))) return say("cannot read --token-file %s", o->token_file);
    } else if (env && *env) {
        n = strlen(env);
        if (!(t = (char *)malloc(n + 1))) return say("out of memory");
        memcpy(t, env, n + 1);
    } else
        return 0;
    n = strcspn(t, "\r\n");
    t[n] = '\0';
    if (!n) return free(t), say("the token is empty");
    s->token = t, s->token_len = n;
    return 0;
}

static int open_listener(server *s, const serve_opts *o, int *port) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int one = 1, fd;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)o->port);
    if (inet_pton(AF_INET, o->host, &a.sin_addr) != 1) return say("--host %s is not an IPv4 address", o->host);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return say("socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return say("cannot bind %s:%d: %s", o->host, o->port, strerror(errno));
    }
    if (listen(fd, 1024) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        close(fd);
        return say("listen: %s", strerror(errno));
    }
    set_nonblock(fd);
    s->listen_fd = fd;
    *port = ntohs(a.sin_port);
    return 0;
}

#ifndef SERVE_NO_MAIN
int main(int argc, char **argv) {
    static server srv; // large (the latency rings): not on the stack
    server *s = &srv;
    serve_opts o;
    struct sigaction sa;
    int port = 0, i, rc = 0;
    if (parse_cmdline(argc, argv, s, &o)) return 2;
    if (load_token(s, &o) || load_all(s, &o)) return free_all(s), 1;
    if (o.bench_search || o.bench_generate) {
        rc = run_bench(s, &o);
        free_all(s);
        return rc;
    }
    if (open_listener(s, &o, &port)) return free_all(s), 1;
    if (pipe(s->wake) < 0) return say("pipe: %s", strerror(errno));
    set_nonblock(s->wake[0]), set_nonblock(s->wake[1]);
    g_wake_fd = s->wake[1];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    pthread_mutex_init(&s->mu, NULL), pthread_mutex_init(&s->mmu, NULL), pthread_cond_init(&s->cv, NULL);
    s->conns = (conn **)calloc((size_t)s->max_conns, sizeof(conn *));
    s->queue = (conn **)calloc((size_t)s->queue_cap, sizeof(conn *));
    s->done = (conn **)calloc((size_t)s->max_conns, sizeof(conn *));
    s->workers = (worker *)calloc((size_t)s->n_workers, sizeof(worker));
    if (!s->conns || !s->queue || !s->done || !s->workers) return say("out of memory");
    for (i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        w->srv = s;
        if (s->has_lm && retrlm_model_init_view(&w->lm, &s->lm, NULL)) return fail_lib(RETRLM_ERR_NOMEM, "worker", "view");
        if (pthread_create(&w->thread, NULL, worker_main, w)) return say("cannot start a worker thread");
        w->started = 1;
    }
    if (o.port_file) {
        FILE *f = fopen(o.port_file, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f)) return say("cannot write %s", o.port_file);
    }
    fprintf(stderr, "retrlm serve: listening on http://%s:%d (%d workers, queue %d, %d connections%s%s%s%s%s)\n", o.host,
            port, s->n_workers, s->queue_cap, s->max_conns, s->has_ds ? ", datastore" : "",
            s->has_enc ? ", dense" : "", s->has_lm ? (s->lm.config.retro_chunk ? ", RETRO LM" : ", LM") : "",
            s->has_knn ? ", kNN-LM keys" : "", s->token ? ", bearer token" : "");
    io_loop(s);
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (i = 0; i < s->n_workers; i++) {
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
        retrlm_model_free(&s->workers[i].lm);
    }
    while (s->n_conns) conn_close(s, s->n_conns - 1);
    if (s->listen_fd >= 0) close(s->listen_fd);
    close(s->wake[0]), close(s->wake[1]);
    free(s->conns), free(s->queue), free(s->done), free(s->workers);
    pthread_mutex_destroy(&s->mu), pthread_mutex_destroy(&s->mmu), pthread_cond_destroy(&s->cv);
    free_all(s);
    fprintf(stderr, "retrlm serve: stopped\n");
    return 0;
}
#endif
#endif // SERVE_PARSER_ONLY
