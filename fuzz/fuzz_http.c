// Fuzz target: the request parser of retrlm serve (examples/serve.c), which needs no model: the
// HTTP request line and headers (http_parse), the body as JSON (json_parse) and each endpoint's
// fields (search, generate, score) under the server's default limits; the bytes alone as JSON
// too. Checks: an error has a status and a message; a complete head lies inside the input; every
// parsed string is valid UTF-8; the JSON writer turns any bytes into a JSON string that parses
// back, and writing what it parses back gives the same text again.
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/include/stb fuzz/fuzz_http.c -lm -o fuzz_http
//   ./fuzz_http fuzz/corpus/http          (make build/fuzz/http)
#define SERVE_PARSER_ONLY
#include "../examples/serve.c"
#include <stdint.h>

// every string of the document is valid UTF-8 (keys too)
static void fz_check_strings(const json_doc *d) {
    int i;
    size_t k;
    for (i = 0; i < d->n; i++) {
        const json_node *v = &d->node[i];
        for (k = 0; v->type == JSON_STR && k < v->len; k += (size_t)utf8_len((const unsigned char *)v->str + k, v->len - k))
            if (!utf8_len((const unsigned char *)v->str + k, v->len - k)) abort();
        for (k = 0; v->key && k < v->key_len; k += (size_t)utf8_len((const unsigned char *)v->key + k, v->key_len - k))
            if (!utf8_len((const unsigned char *)v->key + k, v->key_len - k)) abort();
    }
}

static void fz_json(const char *s, size_t n) {
    static const serve_limits lim = {100, 512, 65536};
    json_doc d;
    search_args sa;
    generate_args ga;
    score_args ca;
    char err[200];
    if (json_parse(&d, s, n) == 0) {
        fz_check_strings(&d);
        if (d.n < 1 || d.n > JSON_MAX_VALUES) abort();
        if (!search_args_parse(&d, &lim, &sa, err, sizeof err) && (sa.k < 1 || sa.k > lim.max_k || !sa.query)) abort();
        if (!generate_args_parse(&d, &lim, &ga, err, sizeof err) &&
            (ga.max_tokens < 1 || ga.max_tokens > lim.max_tokens || !ga.prompt_len || ga.retrieve_k > 16)) abort();
        if (!score_args_parse(&d, &lim, &ca, err, sizeof err) && (!ca.text_len || ca.k > 16)) abort();
    } else if (!d.error || d.error_pos > n)
        abort();
    json_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    http_req q;
    json_doc d;
    sbuf a, b;
    size_t i;
    int r = http_parse(s, size, 1 << 20, &q);
    if (r < 0 && (q.status < 400 || q.status > 505 || !q.error)) abort();
    if (r == 1) {
        size_t body = size - q.head_len;
        if (q.head_len > size || q.route < 0 || q.route >= ROUTE_COUNT || q.content_length > 1 << 20) abort();
        fz_json(s + q.head_len, body < q.content_length ? body : q.content_length);
    }
    fz_json(s, size);
    // the writer: any bytes become a JSON string that parses back; writing that again is the same
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    json_str(&a, s, size);
    if (a.oom) abort();
    if (json_parse(&d, a.p, a.n) || d.node[0].type != JSON_STR) abort();
    json_str(&b, d.node[0].str, d.node[0].len);
    if (b.oom || b.n != a.n || memcmp(a.p, b.p, a.n)) abort();
    json_free(&d);
    // numbers and the streaming rule for characters split over tokens
    json_num(&b, size ? (double)data[0] / 3.0 : 0.0);
    for (i = 0; i + 1 < size && i < 64; i++)
        if (utf8_incomplete(data + i, size - i < 3 ? size - i : 3) && data[i] < 0xC2) abort();
    sb_free(&a), sb_free(&b);
    return 0;
}
#include "fuzz/fuzz.h"
