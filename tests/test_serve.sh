#!/bin/sh
# tests/test_serve.sh - retrlm serve (examples/serve.c) over a real socket with a real HTTP client
# (curl). Builds the CLI and the server, makes a tokenizer, a tiny LM, a BM25 datastore, kNN-LM
# keys, a tiny bi-encoder and a tiny RETRO model from examples/data, starts servers on free
# loopback ports and checks every endpoint's answer against the same call made through the
# library by the CLI (retrlm search / generate / eval): same units, scores, documents, text and
# bits per byte. Then hostile clients: oversized bodies, truncated requests, bad HTTP, bad JSON,
# invalid UTF-8, limits, a full queue (503), slowloris clients and 1,000 connections opened and
# dropped, while /health must answer within 100 ms; memory before and after; a graceful stop on
# SIGTERM that finishes the request in flight and exits 0.
# A probe program (C, below; it reuses serve.c's JSON parser) reads JSON fields and plays the
# hostile clients. Without curl every case is skipped, with the reason.
# The last line is "N passed, M failed[, K skipped]"; the exit status is nonzero on any failure.
#   sh tests/test_serve.sh          (from the repository root; CC, STB_INC as in tests/run.sh)
#   SERVE_BIN=path sh tests/test_serve.sh   tests an already built server (e.g. a sanitizer build)
set -u
CC=${CC:-cc}
STB_INC=${STB_INC:-/usr/include/stb}
out=build/tests/serve
data=examples/data/kjv-excerpt.tsv
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
passed=0 failed=0 skipped=0
pids=""

ok() { passed=$((passed + 1)); echo "  ok   $1"; }
no() { failed=$((failed + 1)); echo "FAIL $1"; [ -f "$out/log" ] && sed 's/^/     | /' "$out/log" | tail -n 15; }
skip() { skipped=$((skipped + 1)); echo "skip $1"; }
finish() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    if [ "$skipped" != 0 ]; then echo "$passed passed, $failed failed, $skipped skipped"
    else echo "$passed passed, $failed failed"; fi
    [ "$failed" = 0 ]
    exit $?
}

if ! command -v curl >/dev/null 2>&1; then
    skip "serve: curl not found (Debian: apt-get install curl): the server is not tested"
    finish
fi
mkdir -p "$out"
rm -f "$out"/*.rlm "$out"/port* "$out"/*.json

# run NAME COMMAND...: must exit 0
run() {
    n=$1
    shift
    if "$@" >"$out/log" 2>&1; then ok "$n"; else no "$n (exit $?)"; fi
}
# same NAME FILE1 FILE2: identical and not empty
same() {
    if [ -s "$2" ] && cmp -s "$2" "$3"; then ok "$1"; else no "$1: $2 and $3 differ"; diff "$2" "$3" | head -n 10; fi
}
# is NAME GOT WANT
is() {
    if [ "$2" = "$3" ]; then ok "$1"; else no "$1: got '$2', want '$3'"; fi
}

R=$out/retrlm
S=${SERVE_BIN:-$out/serve}
P=$out/probe
run "retrlm builds" $CC -std=c99 -O2 -I. -I"$STB_INC" examples/retrlm.c -lm -o "$R"
if [ -z "${SERVE_BIN:-}" ]; then
    run "serve builds (strict flags)" $CC -std=c99 -O2 -Wall -Wextra -pedantic -Werror -Wshadow -Wstrict-prototypes \
        -I. -I"$STB_INC" examples/serve.c -lm -lpthread -o "$S"
fi

# ---- the probe: JSON fields, server-sent events, raw requests and hostile clients
cat >"$out/probe.c" <<'EOF'
// probe json FILE PATH          a value (PATH: names and array indexes joined by '.'); strings raw
// probe rows FILE PATH F[:FMT]...  a line per element of the array at PATH: its fields, tab-separated
// probe sse FILE                the text of the token events, joined; "done" last if the done event came
// probe jstr FILE              FILE's bytes as a JSON string (serve.c's writer)
// probe clean FILE              FILE's bytes without invalid UTF-8 and U+FFFD (to compare raw text)
// probe raw PORT FILE [shut]    sends FILE's bytes (then shuts the writing side), prints the status
//                               line of each response, joined by '|'
// probe health PORT             milliseconds of one GET /health (-1 when it failed)
// probe slowloris PORT N SECS   N clients send a header byte each 0.25 s; meanwhile /health every
//                               50 ms; prints "closed C of N after X s, health max Y ms"
// probe flood PORT N            N connections opened and dropped (some after a partial request),
//                               /health every 50; prints "health max Y ms"
#define SERVE_PARSER_ONLY
#include "../../../examples/serve.c"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    char *b = (char *)malloc(1 << 24);
    *n = 0;
    if (f && b) *n = fread(b, 1, (1 << 24) - 1, f);
    if (f) fclose(f);
    if (!b) exit(2);
    b[*n] = '\0';
    return b;
}

static const json_node *walk(const json_doc *d, const json_node *v, const char *path) {
    char name[128];
    while (v && *path) {
        size_t n = strcspn(path, ".");
        int j, idx = -1;
        if (n >= sizeof name) return NULL;
        memcpy(name, path, n), name[n] = '\0';
        path += n + (path[n] == '.');
        if (v->type == JSON_ARR) {
            idx = atoi(name);
            for (j = v->child; j >= 0 && idx > 0; j = d->node[j].next) idx--;
            v = j >= 0 ? &d->node[j] : NULL;
        } else
            v = json_get(d, v, name);
    }
    return v;
}

static void print_value(const json_node *v, const char *fmt) {
    if (!v) printf("(none)");
    else if (v->type == JSON_STR) fwrite(v->str, 1, v->len, stdout);
    else if (v->type == JSON_NUM) printf(fmt ? fmt : "%.17g", v->num);
    else printf("%s", v->type == JSON_TRUE ? "true" : v->type == JSON_FALSE ? "false" : v->type == JSON_NULL ? "null" : "(container)");
}

static int connect_to(int port) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET, a.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) close(fd), fd = -1;
    return fd;
}

static double health_ms(int port) {
    static const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char buf[512];
    double t0 = now_s();
    int fd = connect_to(port), got = 0;
    ssize_t r;
    if (fd < 0) return -1;
    if (write(fd, req, sizeof req - 1) != (ssize_t)sizeof req - 1) return close(fd), -1;
    while ((r = read(fd, buf + got, sizeof buf - 1 - (size_t)got)) > 0) got += (int)r;
    close(fd);
    buf[got] = '\0';
    return strstr(buf, " 200 ") && strstr(buf, "\"ok\"") ? 1e3 * (now_s() - t0) : -1;
}

int main(int argc, char **argv) {
    json_doc d;
    size_t n;
    char *b;
    int i;
    if (argc < 3) return 2;
    if (!strcmp(argv[1], "json") || !strcmp(argv[1], "rows")) {
        const json_node *v;
        b = slurp(argv[2], &n);
        if (json_parse(&d, b, n)) return fprintf(stderr, "not JSON: %s at %lu\n", d.error, (unsigned long)d.error_pos), 1;
        v = walk(&d, &d.node[0], argc > 3 ? argv[3] : "");
        if (!strcmp(argv[1], "json")) print_value(v, NULL);
        else if (v && v->type == JSON_ARR) {
            int j;
            for (j = v->child; j >= 0; j = d.node[j].next) {
                for (i = 4; i < argc; i++) {
                    char name[64], *colon;
                    snprintf(name, sizeof name, "%s", argv[i]);
                    colon = strchr(name, ':');
                    if (colon) *colon++ = '\0';
                    if (i > 4) putchar('\t');
                    print_value(json_get(&d, &d.node[j], name), colon);
                }
                putchar('\n');
            }
        }
        json_free(&d);
        return v ? 0 : 1;
    }
    if (!strcmp(argv[1], "sse")) { // "data: {...}" lines of token events, then "event: done"
        char *line, *save = NULL;
        int done = 0;
        b = slurp(argv[2], &n);
        for (line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (!strcmp(line, "event: done")) done = 1;
            if (strncmp(line, "data: ", 6) || done) continue;
            if (json_parse(&d, line + 6, strlen(line + 6))) return fprintf(stderr, "bad event: %s\n", line), 1;
            print_value(json_get(&d, &d.node[0], "text"), NULL);
            json_free(&d);
        }
        if (done) printf("\ndone");
        return 0;
    }
    if (!strcmp(argv[1], "jstr")) {
        sbuf o;
        memset(&o, 0, sizeof o);
        b = slurp(argv[2], &n);
        json_str(&o, b, n);
        if (o.oom) return 1;
        fwrite(o.p, 1, o.n, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "clean")) {
        b = slurp(argv[2], &n);
        for (i = 0; (size_t)i < n;) {
            int l = utf8_len((const unsigned char *)b + i, n - (size_t)i);
            if (l == 3 && !memcmp(b + i, "\xEF\xBF\xBD", 3)) l = -3;
            if (l > 0) fwrite(b + i, 1, (size_t)l, stdout);
            i += l > 0 ? l : l < 0 ? -l : 1;
        }
        return 0;
    }
    if (!strcmp(argv[1], "raw") && argc > 3) {
        int fd = connect_to(atoi(argv[2])), got = 0;
        char resp[4096];
        ssize_t r;
        b = slurp(argv[3], &n);
        if (fd < 0 || write(fd, b, n) != (ssize_t)n) return printf("(no connection)\n"), 1;
        if (argc > 4) shutdown(fd, SHUT_WR);
        while (got < (int)sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - (size_t)got)) > 0) got += (int)r;
        resp[got] = '\0';
        if (!got) printf("(closed)");
        for (i = 0; i < got; i++) // the status line of every response, joined by '|'
            if ((i == 0 || resp[i - 1] == '\n') && !strncmp(resp + i, "HTTP/1.", 7))
                printf("%s%.*s", i ? "|" : "", (int)strcspn(resp + i, "\r\n"), resp + i);
        printf("\n");
        close(fd);
        return 0;
    }
    if (!strcmp(argv[1], "health")) {
        printf("%.1f\n", health_ms(atoi(argv[2])));
        return 0;
    }
    if (!strcmp(argv[1], "slowloris") && argc > 4) {
        static const char head[] = "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        int port = atoi(argv[2]), nc = atoi(argv[3]), fds[256], sent[256], closed = 0;
        double secs = atof(argv[4]), t0 = now_s(), last = 0, worst = 0, closed_at = 0, h;
        if (nc > 256) nc = 256;
        for (i = 0; i < nc; i++) fds[i] = connect_to(port), sent[i] = 0;
        while (now_s() - t0 < secs && closed < nc) {
            for (i = 0; i < nc; i++) {
                char junk[256];
                if (fds[i] < 0) continue;
                if (send(fds[i], head + sent[i] % (int)(sizeof head - 1), 1, MSG_NOSIGNAL) != 1 ||
                    recv(fds[i], junk, sizeof junk, MSG_DONTWAIT) == 0) { // the server closed it
                    close(fds[i]), fds[i] = -1, closed++, closed_at = now_s() - t0;
                } else
                    sent[i]++;
            }
            if (now_s() - last > 0.05) {
                last = now_s();
                h = health_ms(port);
                if (h < 0 || h > worst) worst = h < 0 ? 1e9 : h;
            }
            {
                struct timespec ts = {0, 250000000L};
                nanosleep(&ts, NULL);
            }
        }
        for (i = 0; i < nc; i++)
            if (fds[i] >= 0) close(fds[i]);
        printf("closed %d of %d after %.1f s, health max %.1f ms\n", closed, nc, closed_at, worst);
        return 0;
    }
    if (!strcmp(argv[1], "flood")) {
        int port = atoi(argv[2]), total = atoi(argv[3]), fds[100], k;
        double worst = 0, h;
        for (i = 0; i < total; i += 100) {
            for (k = 0; k < 100; k++) {
                fds[k] = connect_to(port);
                if (fds[k] >= 0 && k % 3 == 1) (void)!write(fds[k], "POST /search HTTP/1.1\r\nContent-Le", 33);
            }
            h = health_ms(port);
            if (h < 0 || h > worst) worst = h < 0 ? 1e9 : h;
            for (k = 0; k < 100; k++)
                if (fds[k] >= 0) close(fds[k]);
            h = health_ms(port);
            if (h < 0 || h > worst) worst = h < 0 ? 1e9 : h;
        }
        printf("health max %.1f ms\n", worst);
        return 0;
    }
    return 2;
}
EOF
run "probe builds" $CC -std=c99 -O1 -Wall -Wextra -Werror -Wno-unused-function "$out/probe.c" -o "$P"

# ---- the artifacts: 2 Kings to train on, Isaiah 36 (which 2 Kings 18 retells) to score
awk -F'\t' 'NR > 1 && $1 == "2 Kings" && $2 <= 12 { print $4 }' "$data" >"$out/train.txt"
awk -F'\t' 'NR > 1 && $1 == "Isaiah" && $2 == 36 { print $4 }' "$data" >"$out/test.txt"
T="-t $out/tok.rlm"
run "tokenizer-train" "$R" tokenizer-train --vocab 300 -o "$out/tok.rlm" "$out/train.txt"
run "lm-train" "$R" lm-train $T --train "$out/train.txt" --dim 32 --layers 1 --heads 2 --ctx 96 --batch 4 --steps 30 \
    -o "$out/lm.rlm"
run "datastore" "$R" datastore $T -o "$out/ds.rlm" --tsv "$data" --col 4 --header --chunk 32
run "knnlm keys" "$R" knnlm -m "$out/lm.rlm" $T --text "$out/train.txt" -o "$out/keys.rlm"
run "encoder-train" "$R" encoder-train $T -d "$out/ds.rlm" --dim 16 --layers 1 --heads 2 --steps 10 -o "$out/enc.rlm"
run "embed" "$R" embed $T -d "$out/ds.rlm" --encoder "$out/enc.rlm" -o "$out/dense.rlm"

# start NAME ARGS...: a server on a free port (its pid in $spid, its port in $port)
start() {
    sname=$1
    shift
    rm -f "$out/port-$sname"
    "$S" --port 0 --port-file "$out/port-$sname" "$@" >"$out/server-$sname.log" 2>&1 &
    spid=$!
    pids="$pids $spid"
    i=0
    while [ ! -s "$out/port-$sname" ] && [ $i -lt 100 ] && kill -0 "$spid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    port=$(cat "$out/port-$sname" 2>/dev/null)
    if [ -n "$port" ]; then ok "server $sname starts (port $port)"
    else cp "$out/server-$sname.log" "$out/log"; no "server $sname starts"; finish; fi
}
# post PATH BODY FILE: the response body in FILE, the status in $code
post() {
    code=$(curl -s -o "$3" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$2" \
        "http://127.0.0.1:$port$1")
}
# json STRING: STRING as a JSON string (with the quotes); jfile FILE: the file's bytes as one
json() {
    printf '%s' "$1" >"$out/jstr.txt"
    "$P" jstr "$out/jstr.txt"
}
jfile() { "$P" jstr "$1"; }

# ---- server A: BM25 datastore and the LM
start A $T -d "$out/ds.rlm" -m "$out/lm.rlm" --threads 2 --header-timeout 2
A=$port
curl -s "http://127.0.0.1:$port/health" >"$out/health.json"
is "/health: ok" "$("$P" json "$out/health.json" status)" ok

q="Rabshakeh cried with a loud voice"
for k in 3 10; do
    post /search "{\"query\": $(json "$q"), \"k\": $k}" "$out/search.json"
    "$P" rows "$out/search.json" results unit score:%.3f doc >"$out/search-http.tsv"
    "$R" search -d "$out/ds.rlm" -k $k $q | cut -f 1-3 >"$out/search-cli.tsv"
    same "/search k=$k: the units, scores and documents of retrlm search" "$out/search-http.tsv" "$out/search-cli.tsv"
done
"$P" rows "$out/search.json" results text | head -n 1 >"$out/search-text.txt"
"$R" search -d "$out/ds.rlm" -k 1 --width 100000 $q | cut -f 4 >"$out/search-text-cli.txt"
same "/search: a unit's text" "$out/search-text.txt" "$out/search-text-cli.txt"
post /search '{"query": "zzzqqqxxx"}' "$out/search0.json"
is "/search: no match, no results" "$code $("$P" rows "$out/search0.json" results unit | wc -l)" "200 0"

# generate: the text retrlm generate prints after "--- generation" (the prompt, then the tokens)
prompt="Then Rabshakeh stood"
gen_check() { # NAME JSON-EXTRA CLI-ARGS...
    gname=$1 extra=$2
    shift 2
    post /generate "{\"prompt\": $(json "$prompt")$extra}" "$out/gen.json"
    { printf '%s' "$prompt"; "$P" json "$out/gen.json" text; echo; } >"$out/gen-http.raw"
    "$R" generate -m "$out/lm.rlm" $T --prompt "$prompt" "$@" >"$out/gen-cli.out" 2>/dev/null
    if grep -q '^--- generation$' "$out/gen-cli.out"; then sed '1,/^--- generation$/d' "$out/gen-cli.out"; else cat "$out/gen-cli.out"; fi \
        >"$out/gen-cli.raw"
    "$P" clean "$out/gen-http.raw" >"$out/gen-http.txt"
    "$P" clean "$out/gen-cli.raw" >"$out/gen-cli.txt"
    same "/generate $gname: the text of retrlm generate" "$out/gen-http.txt" "$out/gen-cli.txt"
}
gen_check "greedy, retrieval (k 1)" ', "max_tokens": 40, "temperature": 0' -d "$out/ds.rlm" --tokens 40 --temp 0
gen_check "sampled, seed 7, top_p 0.9" ', "max_tokens": 50, "temperature": 0.9, "top_p": 0.9, "seed": 7' \
    -d "$out/ds.rlm" --tokens 50 --temp 0.9 --top-p 0.9 --seed 7
gen_check "top_k 5, no retrieval" ', "max_tokens": 30, "top_k": 5, "seed": 3, "retrieve": false' --tokens 30 --top-k 5 --seed 3
short=$prompt
prompt=$(head -n 4 "$out/test.txt" | tr '\n' ' ')
gen_check "a long prompt, cut to the context" ', "max_tokens": 20, "seed": 2' -d "$out/ds.rlm" --tokens 20 --seed 2
prompt=$short
post /generate "{\"prompt\": $(json "$prompt"), \"max_tokens\": 40, \"temperature\": 0}" "$out/gen.json"
"$P" rows "$out/gen.json" units unit doc tokens_used >"$out/gen-units.tsv"
"$R" generate -m "$out/lm.rlm" $T -d "$out/ds.rlm" --prompt "$prompt" --tokens 40 --temp 0 2>/dev/null |
    sed -n 's/^--- retrieved: unit \([0-9]*\) (document \([0-9]*\), .*), \([0-9]*\) tokens of it used$/\1	\2	\3/p' \
    >"$out/gen-units-cli.tsv"
same "/generate: the unit retrlm generate prepends (unit, document, tokens used)" "$out/gen-units.tsv" "$out/gen-units-cli.tsv"
is "/generate: tokens, tokens per second" "$("$P" json "$out/gen.json" tokens) $("$P" json "$out/gen.json" tokens_per_second | sed 's/[0-9.]*/N/')" "40 N"

# several clients at once: every answer is the library's (each worker has its own KV cache)
post /generate "{\"prompt\": $(json "$prompt"), \"max_tokens\": 60, \"seed\": 11}" "$out/gen-one.json"
"$P" json "$out/gen-one.json" text >"$out/gen-one.txt"
cpids=""
body="{\"prompt\": $(json "$prompt"), \"max_tokens\": 60, \"seed\": 11}"
for i in 1 2 3 4 5 6 7 8; do
    curl -s -o "$out/gen-par-$i.json" -X POST --data-binary "$body" "http://127.0.0.1:$port/generate" &
    cpids="$cpids $!"
done
wait $cpids
bad=0
for i in 1 2 3 4 5 6 7 8; do "$P" json "$out/gen-par-$i.json" text >"$out/gen-par.txt"; cmp -s "$out/gen-par.txt" "$out/gen-one.txt" || bad=$((bad + 1)); done
is "/generate: 8 clients at once, all the same text as one alone" "$bad" 0

# streaming: the token events join into the text of the same request without streaming
curl -s -N -o "$out/gen.sse" -X POST --data-binary "{\"prompt\": $(json "$prompt"), \"max_tokens\": 60, \"seed\": 11, \"stream\": true}" \
    "http://127.0.0.1:$port/generate"
{ cat "$out/gen-one.txt"; printf '\ndone'; } >"$out/gen-one-done.txt"
"$P" sse "$out/gen.sse" >"$out/gen-sse.txt"
same "/generate stream: the events' text, then the done event" "$out/gen-sse.txt" "$out/gen-one-done.txt"
sed -n 's/^data: \(.*done.*\)//p' "$out/gen.sse" >/dev/null
grep '^data: {"units"' "$out/gen.sse" | sed 's/^data: //' >"$out/gen-done.json"
"$P" json "$out/gen-done.json" text >"$out/gen-done.txt"
same "/generate stream: the done event's text" "$out/gen-done.txt" "$out/gen-one.txt"

# score: retrlm eval --mode incontext and --mode none
post /score "{\"text\": $(jfile "$out/test.txt")}" "$out/score.json"
with=$("$P" json "$out/score.json" bits_per_byte | awk '{ printf "%.4f", $1 }')
without=$("$P" json "$out/score.json" bits_per_byte_no_retrieval | awk '{ printf "%.4f", $1 }')
cli_with=$("$R" eval -m "$out/lm.rlm" $T --text "$out/test.txt" -d "$out/ds.rlm" --mode incontext 2>/dev/null | cut -d ' ' -f 1)
cli_without=$("$R" eval -m "$out/lm.rlm" $T --text "$out/test.txt" --mode none 2>/dev/null | cut -d ' ' -f 1)
is "/score: bits per byte with retrieval = retrlm eval --mode incontext" "$with" "$cli_with"
is "/score: bits per byte without = retrlm eval --mode none" "$without" "$cli_without"
is "/score: bytes" "$("$P" json "$out/score.json" bytes)" "$(wc -c <"$out/test.txt" | tr -d ' ')"
post /score "{\"text\": $(jfile "$out/test.txt"), \"mode\": \"replug\", \"k\": 2}" "$out/score.json"
with=$("$P" json "$out/score.json" bits_per_byte | awk '{ printf "%.4f", $1 }')
cli_with=$("$R" eval -m "$out/lm.rlm" $T --text "$out/test.txt" -d "$out/ds.rlm" --mode replug --k 2 2>/dev/null | cut -d ' ' -f 1)
is "/score replug k=2 = retrlm eval --mode replug --k 2" "$with" "$cli_with"

# ---- errors: bad HTTP, JSON, UTF-8 and fields are 400 with a JSON error; nothing crashes
expect() { # NAME PATH BODY STATUS
    post "$2" "$3" "$out/err.json"
    msg=$("$P" json "$out/err.json" error 2>/dev/null)
    if [ "$code" = "$4" ] && [ -n "$msg" ] && [ "$msg" != "(none)" ]; then ok "$1: $4 ($msg)"
    else no "$1: status $code, want $4; body $(head -c 200 "$out/err.json")"; fi
}
expect "bad JSON" /search '{"query": }' 400
expect "JSON with something after it" /search '{"query": "a"} x' 400
expect "JSON nested 17 deep" /search '{"query": [[[[[[[[[[[[[[[[["a"]]]]]]]]]]]]]]]]]}' 400
expect "a duplicate key" /search '{"query": "a", "query": "b"}' 400
expect "a lone surrogate escape" /search '{"query": "\ud800"}' 400
expect "an unknown field" /search '{"query": "a", "kk": 3}' 400
expect "k too large" /search '{"query": "a", "k": 101}' 400
expect "k not an integer" /search '{"query": "a", "k": 2.5}' 400
expect "a query that is not a string" /search '{"query": 5}' 400
expect "an unknown mode" /search '{"query": "a", "mode": "magic"}' 400
expect "dense without an encoder" /search '{"query": "a", "mode": "dense"}' 501
expect "max_tokens too large" /generate '{"prompt": "a", "max_tokens": 513}' 400
expect "an empty prompt" /generate '{"prompt": ""}' 400
expect "retrieve k too large" /generate '{"prompt": "a", "retrieve": {"k": 17}}' 400
expect "the body is not an object" /score '[1, 2]' 400
expect "an empty body" /score '' 400
expect "invalid UTF-8 (0xFF)" /search "$(printf '{"query": "a\377b"}')" 400
expect "invalid UTF-8 (overlong '/')" /search "$(printf '{"query": "\300\257"}')" 400
expect "invalid UTF-8 (a surrogate)" /search "$(printf '{"query": "\355\240\200"}')" 400
expect "a control character in a string" /search "$(printf '{"query": "a\001"}')" 400
expect "an unknown path" /nothing '{}' 404
post /search '{"query": "\u00e9t\u00e9 \ud83d\ude00 Rabshakeh"}' "$out/ok.json"
is "escapes and a surrogate pair are fine" "$code" 200
code=$(curl -s -o "$out/err.json" -w '%{http_code}' "http://127.0.0.1:$port/search")
is "GET /search: 405" "$code" 405
code=$(curl -s -o "$out/err.json" -w '%{http_code}' -X POST --data-binary '{}' -H 'Transfer-Encoding: chunked' "http://127.0.0.1:$port/search")
is "a chunked body: 501" "$code" 501
# raw requests: truncated, oversized, malformed
raw() { # NAME WANT-STATUS-LINE BYTES [shut]
    printf "$3" >"$out/raw.bin"
    got=$("$P" raw "$port" "$out/raw.bin" ${4:-})
    is "$1" "$got" "$2"
}
raw "a truncated body (the client stops writing)" "HTTP/1.1 400 Bad Request" \
    'POST /search HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"query"' shut
raw "a truncated header" "HTTP/1.1 400 Bad Request" 'GET /hea' shut
raw "an oversized body (Content-Length 2 MB)" "HTTP/1.1 413 Content Too Large" \
    'POST /search HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n{"query"'
raw "a bare LF" "HTTP/1.1 400 Bad Request" 'GET /health HTTP/1.1\nHost: x\n\n'
raw "HTTP/2.0" "HTTP/1.1 505 HTTP Version Not Supported" 'GET /health HTTP/2.0\r\n\r\n'
raw "a bad method" "HTTP/1.1 405 Method Not Allowed" 'DELETE /search HTTP/1.1\r\n\r\n'
raw "two Content-Lengths" "HTTP/1.1 400 Bad Request" 'POST /search HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'
raw "HTTP/1.0 without Host" "HTTP/1.1 200 OK" 'GET /health HTTP/1.0\r\n\r\n'
head -c 9000 /dev/zero | tr '\0' 'a' >"$out/long.txt"
printf 'GET /health HTTP/1.1\r\nX: %s\r\n\r\n' "$(cat "$out/long.txt")" >"$out/raw.bin"
is "a header over 8 KiB" "$("$P" raw "$port" "$out/raw.bin")" "HTTP/1.1 431 Request Header Fields Too Large"
head -c 1100000 /dev/zero | tr '\0' 'a' >"$out/big.txt"
{ printf '{"query": "'; cat "$out/big.txt"; printf '"}'; } >"$out/big.json"
code=$(curl -s -o "$out/err.json" -w '%{http_code}' -X POST --data-binary @"$out/big.json" "http://127.0.0.1:$port/search")
is "an oversized body sent by curl: 413" "$code" 413
# keep-alive and pipelining: two requests in one write, two answers
body='{"query": "Rabshakeh", "k": 1}'
printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /search HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$(printf '%s' "$body" | wc -c)" "$body" >"$out/raw.bin"
is "pipelining: two requests in one write, two answers" "$("$P" raw "$port" "$out/raw.bin")" "HTTP/1.1 200 OK|HTTP/1.1 200 OK"
curl -s -o /dev/null -o /dev/null "http://127.0.0.1:$port/health" "http://127.0.0.1:$port/health" -w '%{num_connects} ' >"$out/ka.txt"
is "keep-alive: curl reuses the connection" "$(cat "$out/ka.txt")" "1 0 "

# metrics: the requests so far, by endpoint and status; latency quantiles; memory
curl -s "http://127.0.0.1:$port/metrics" >"$out/metrics.txt"
n=$(sed -n 's/^retrlm_requests_total{endpoint="search",status="2xx"} \([0-9]*\)$/\1/p' "$out/metrics.txt")
if [ "${n:-0}" -ge 3 ]; then ok "/metrics: search requests counted ($n)"; else no "/metrics: search requests counted"; fi
if grep -q '^retrlm_request_duration_seconds{endpoint="generate",quantile="0.99"} [0-9.e-]*$' "$out/metrics.txt" &&
    grep -q '^retrlm_errors_total [1-9]' "$out/metrics.txt"; then ok "/metrics: latency quantiles and errors"
else no "/metrics: latency quantiles and errors"; fi
rss0=$(sed -n 's/^retrlm_resident_memory_bytes \([0-9]*\)$/\1/p' "$out/metrics.txt")

# ---- slow and abusive clients: /health answers within 100 ms throughout
res=$("$P" slowloris "$port" 50 4)
echo "     slowloris: $res"
case "$res" in
"closed 50 of 50 after "*) ok "slowloris: the server closes 50 slow clients at the header timeout (2 s)" ;;
*) no "slowloris: $res" ;;
esac
worst=$(echo "$res" | sed 's/.*health max \([0-9.]*\) ms/\1/')
if awk -v w="$worst" 'BEGIN { exit !(w < 100) }'; then ok "slowloris: /health within 100 ms throughout ($worst ms)"
else no "slowloris: /health took $worst ms"; fi
res=$("$P" flood "$port" 1000)
worst=$(echo "$res" | sed 's/.*health max \([0-9.]*\) ms/\1/')
if awk -v w="$worst" 'BEGIN { exit !(w < 100) }'; then ok "1,000 connections opened and dropped: /health within 100 ms ($worst ms)"
else no "1,000 connections opened and dropped: /health took $worst ms"; fi
post /search "{\"query\": $(json "$q"), \"k\": 3}" "$out/search.json"
is "/search still answers after them" "$code" 200
curl -s "http://127.0.0.1:$port/metrics" >"$out/metrics.txt"
rss1=$(sed -n 's/^retrlm_resident_memory_bytes \([0-9]*\)$/\1/p' "$out/metrics.txt")
echo "     resident memory: $rss0 bytes before the hostile clients, $rss1 after"
if [ -n "$rss0" ] && [ -n "$rss1" ] && [ "$rss1" -lt $((rss0 + 64 * 1048576)) ]; then ok "memory stays bounded (grew $(((rss1 - rss0) / 1024)) KiB)"
else no "memory: $rss0 -> $rss1"; fi

# ---- graceful stop: SIGTERM while a request runs; it is answered, then exit 0
long=$(for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat "$out/test.txt"; done)
printf '{"text": %s}' "$(json "$long")" >"$out/long.json"
curl -s -o "$out/stop.json" -w '%{http_code}' -X POST --data-binary @"$out/long.json" "http://127.0.0.1:$port/score" >"$out/stop.code" &
cpid=$!
sleep 0.3
kill -TERM "$spid"
wait "$spid"
rc=$?
wait "$cpid"
is "SIGTERM: the server exits 0" "$rc" 0
is "SIGTERM: the request in flight is answered" "$(cat "$out/stop.code") $("$P" json "$out/stop.json" bytes)" "200 $(printf '%s' "$long" | wc -c | tr -d ' ')"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")
is "after the stop: nothing listens" "$code" 000

# ---- server B: one worker, a queue of one, a bearer token, dense retrieval, kNN-LM keys
echo "s3cret-token" >"$out/token.txt"
start B $T -d "$out/ds.rlm" -m "$out/lm.rlm" --encoder "$out/enc.rlm" --dense "$out/dense.rlm" --knnlm-keys "$out/keys.rlm" \
    --threads 1 --queue 1 --token-file "$out/token.txt" --max-conns 20 --header-timeout 2
auth="Authorization: Bearer s3cret-token"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary '{"query": "a"}' "http://127.0.0.1:$port/search")
is "a token: 401 without it" "$code" 401
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" -X POST --data-binary '{"query": "a"}' "http://127.0.0.1:$port/search")
is "a token: 401 with a wrong one" "$code" 401
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")
is "a token: /health needs none" "$code" 200
for mode in dense rrf; do
    curl -s -o "$out/search.json" -H "$auth" -X POST --data-binary "{\"query\": $(json "$q"), \"k\": 5, \"mode\": \"$mode\"}" \
        "http://127.0.0.1:$port/search"
    "$P" rows "$out/search.json" results unit score:%.3f doc >"$out/search-http.tsv"
    "$R" search -d "$out/ds.rlm" $T --encoder "$out/enc.rlm" --dense "$out/dense.rlm" --retrieve $mode -k 5 $q 2>/dev/null |
        cut -f 1-3 >"$out/search-cli.tsv"
    same "/search mode $mode: retrlm search --retrieve $mode" "$out/search-http.tsv" "$out/search-cli.tsv"
done
curl -s -o "$out/score.json" -H "$auth" -X POST --data-binary "{\"text\": $(jfile "$out/test.txt"), \"mode\": \"none\"}" "http://127.0.0.1:$port/score"
with=$("$P" json "$out/score.json" bits_per_byte | awk '{ printf "%.4f", $1 }')
cli_with=$("$R" eval -m "$out/lm.rlm" $T --text "$out/test.txt" --knnlm-keys "$out/keys.rlm" 2>/dev/null | cut -d ' ' -f 1)
is "/score with kNN-LM keys = retrlm eval --knnlm-keys" "$with" "$cli_with"
# a full queue: one worker busy, one request waiting, the rest 503 with Retry-After
cpids=""
for i in 1 2 3 4 5 6; do
    curl -s -D "$out/q-$i.head" -o /dev/null -H "$auth" -X POST --data-binary @"$out/long.json" "http://127.0.0.1:$port/score" &
    cpids="$cpids $!"
done
sleep 0.2
h=$("$P" health "$port")
wait $cpids
n503=$(grep -l '^HTTP/1.1 503' "$out"/q-*.head | wc -l)
n200=$(grep -l '^HTTP/1.1 200' "$out"/q-*.head | wc -l)
if [ "$n503" -ge 1 ] && [ "$n200" -ge 1 ] && [ $((n503 + n200)) = 6 ] && grep -q '^Retry-After: 1' $(grep -l '^HTTP/1.1 503' "$out"/q-*.head | head -n 1)
then ok "a full queue: $n200 answered, $n503 refused with 503 and Retry-After"
else no "a full queue: $n200 answered, $n503 refused"; fi
if awk -v w="$h" 'BEGIN { exit !(w >= 0 && w < 100) }'; then ok "/health while the workers are busy: $h ms"; else no "/health while busy: $h ms"; fi
# more slow clients than connection slots: the oldest reading ones make room; /health still answers
res=$("$P" slowloris "$port" 40 3)
echo "     slowloris, 40 clients for 20 slots: $res"
worst=$(echo "$res" | sed 's/.*health max \([0-9.]*\) ms/\1/')
ev=$(curl -s -H "$auth" "http://127.0.0.1:$port/metrics" | sed -n 's/^retrlm_connections_evicted_total //p')
if awk -v w="$worst" -v e="${ev:-0}" 'BEGIN { exit !(w < 100 && e > 0) }'; then
    ok "--max-conns 20: $ev slow connections evicted, /health within 100 ms ($worst ms)"
else no "--max-conns 20: evicted ${ev:-0}, /health $worst ms"; fi
kill -INT "$spid"
wait "$spid"
is "SIGINT: exit 0" "$?" 0

# ---- server C: a RETRO model (retrieval every chunk)
awk -F'\t' 'NR > 1 && $1 == "2 Chronicles" { print $4 }' "$data" >"$out/chron.txt"
run "datastore for RETRO" "$R" datastore $T -o "$out/ds-retro.rlm" --chunk 16 "$out/chron.txt"
run "retro-train" "$R" retro-train $T -d "$out/ds-retro.rlm" --train "$out/train.txt" --chunk 16 --k 2 --dim 32 --layers 2 \
    --heads 2 --ctx 64 --batch 4 --enc-dim 16 --enc-layers 1 --steps 4 -o "$out/retro.rlm"
start C $T -d "$out/ds-retro.rlm" -m "$out/retro.rlm"
rprompt="And Hezekiah the king of Judah sent to the king of Assyria to Lachish, saying"
post /generate "{\"prompt\": $(json "$rprompt"), \"max_tokens\": 30, \"seed\": 5}" "$out/rgen.json"
{ printf '%s' "$rprompt"; "$P" json "$out/rgen.json" text; echo; } >"$out/rgen-http.raw"
"$R" generate -m "$out/retro.rlm" $T -d "$out/ds-retro.rlm" --prompt "$rprompt" --tokens 30 --seed 5 >"$out/rgen-cli.out" 2>/dev/null
sed '1,/^--- generation$/d' "$out/rgen-cli.out" >"$out/rgen-cli.raw"
"$P" clean "$out/rgen-http.raw" >"$out/rgen-http.txt"
"$P" clean "$out/rgen-cli.raw" >"$out/rgen-cli.txt"
same "RETRO /generate: the text of retrlm generate" "$out/rgen-http.txt" "$out/rgen-cli.txt"
"$P" rows "$out/rgen.json" units chunk unit doc >"$out/rgen-units.tsv"
awk '/^--- chunk / { c = $3 } /^    unit / { u = $2; d = $4; sub(/\):$/, "", d); print c "\t" u "\t" d }' "$out/rgen-cli.out" >"$out/rgen-units-cli.tsv"
same "RETRO /generate: each chunk's units as retrlm generate" "$out/rgen-units.tsv" "$out/rgen-units-cli.tsv"
post /score "{\"text\": $(jfile "$out/test.txt")}" "$out/rscore.json"
"$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm" 2>/dev/null | cut -d ' ' -f 1 >"$out/rscore-cli.txt"
{ "$P" json "$out/rscore.json" bits_per_byte | awk '{ printf "%.4f\n", $1 }'
  "$P" json "$out/rscore.json" bits_per_byte_no_retrieval | awk '{ printf "%.4f\n", $1 }'; } >"$out/rscore-http.txt"
same "RETRO /score: with and without neighbours as retrlm eval" "$out/rscore-http.txt" "$out/rscore-cli.txt"
kill -TERM "$spid"
wait "$spid"
is "server C: exit 0" "$?" 0
pids=""
finish
