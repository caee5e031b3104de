#!/bin/sh
# bench/serve.sh - the load test of retrlm serve (examples/serve.c), on the loopback only,
# bounded in time (DURATION seconds a run) and in requests (ab: REQUESTS a run).
#   /search    BM25 over the debpkg descriptions (../shared/data/debpkg/docs.tsv, one unit a
#              document, GPT-2's tokenizer), the dev queries (queries_dev.tsv) in turn, k = 10
#   /generate  an LM of the demo's shape (examples/demo.c: a 1,024-token BPE, dim 128, 4 layers,
#              4 heads, context 192) trained LM_STEPS steps on the demo's text; 64 tokens, greedy,
#              the prompt alone
# at 1, 8 and 64 connections (CONNS) with wrk (preferred: requests cycle through the queries) or
# ab (one query), the server on THREADS workers; then the library in process on the same
# queries and the same number of threads (serve --bench-search / --bench-generate). Prints the
# CPU, a table, then name=value lines.
#   make bench-serve        or   sh bench/serve.sh
#   DURATION=2 LM_STEPS=5 CONNS="1 8" sh bench/serve.sh     a quick check
# Environment: RETRLM_DATA (../shared/data), THREADS (2), CONNS ("1 8 64"), DURATION (10),
# REQUESTS (ab, 20000), INPROC_REQUESTS (search 20000, generate 200), LM_STEPS (400), RATIO_RUNS
# (5 pairs of /search at 8 connections and the library in process, back to back), CC, STB_INC.
set -eu
data=${RETRLM_DATA:-../shared/data}
CC=${CC:-cc}
STB_INC=${STB_INC:-/usr/include/stb}
THREADS=${THREADS:-2}
CONNS=${CONNS:-"1 8 64"}
DURATION=${DURATION:-10}
REQUESTS=${REQUESTS:-20000}
LM_STEPS=${LM_STEPS:-400}
RATIO_RUNS=${RATIO_RUNS:-5}
out=build/bench/serve
mkdir -p "$out"

if command -v wrk >/dev/null 2>&1; then tool=wrk
elif command -v ab >/dev/null 2>&1; then tool=ab
else echo "bench/serve.sh: needs wrk or ab (Debian: apt-get install wrk, or apache2-utils)"; exit 1; fi
for f in debpkg/docs.tsv debpkg/queries_dev.tsv gpt2-bpe/encoder.json gpt2-bpe/vocab.bpe; do
    [ -f "$data/$f" ] || { echo "bench/serve.sh: $data/$f not found (RETRLM_DATA=dir)"; exit 1; }
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
isa=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null | grep -o -w -e avx2 -e avx512f -e asimd | tr '\n' ' ')
echo "cpu: ${cpu:-unknown}, $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?') cores, ${isa:-no avx2/avx512f/asimd flags}"
echo "load generator: $tool; server: $THREADS workers; loopback only"

# the CLI (with OpenMP: building the datastore) and the server (without: the workers are the threads)
[ "$out/retrlm" -nt examples/retrlm.c ] && [ "$out/retrlm" -nt retrlm.h ] ||
    $CC -std=c99 -O2 -fopenmp -I. -I"$STB_INC" examples/retrlm.c -lm -o "$out/retrlm"
[ "$out/serve" -nt examples/serve.c ] && [ "$out/serve" -nt retrlm.h ] ||
    $CC -std=c99 -O2 -I. -I"$STB_INC" examples/serve.c -lm -lpthread -o "$out/serve"
R=$out/retrlm
G="--gpt2 $data/gpt2-bpe/encoder.json $data/gpt2-bpe/vocab.bpe"
[ -s "$out/debpkg.rlm" ] || $R datastore $G -o "$out/debpkg.rlm" --tsv "$data/debpkg/docs.tsv" --col 4 --header --chunk 0
# the queries: their text, and as /search bodies (JSON strings: backslash and quote escaped)
awk -F'\t' 'NR > 1 && $2 != "" { print $2 }' "$data/debpkg/queries_dev.tsv" >"$out/queries.txt"
awk '{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); print "{\"query\": \"" $0 "\", \"k\": 10}" }' "$out/queries.txt" >"$out/search.bodies"
# the demo's LM: its text (examples/data, the training chapters) and its shape
awk -F'\t' 'NR > 1 && !($1 == "Isaiah" && $2 >= 36 && $2 <= 39) && !($1 == "2 Chronicles" && ($2 == 34 || $2 == 35)) { print $4 }' \
    examples/data/kjv-excerpt.tsv >"$out/demo-train.txt"
[ -s "$out/demo-tok.rlm" ] || $R tokenizer-train --vocab 1024 -o "$out/demo-tok.rlm" "$out/demo-train.txt" >/dev/null
[ -s "$out/demo-lm-$LM_STEPS.rlm" ] || $R lm-train -t "$out/demo-tok.rlm" --train "$out/demo-train.txt" --dim 128 --layers 4 \
    --heads 4 --ctx 192 --batch 8 --steps "$LM_STEPS" -o "$out/demo-lm-$LM_STEPS.rlm" >/dev/null 2>&1
prompt="And it came to pass in the fourteenth year of king Hezekiah"
printf '{"prompt": "%s", "max_tokens": 64, "temperature": 0}\n' "$prompt" >"$out/generate.bodies"

# the server on a free port
rm -f "$out/port" "$out/port-lm"
"$out/serve" $G -d "$out/debpkg.rlm" --threads "$THREADS" --queue 1024 --max-conns 1024 --port 0 --port-file "$out/port" \
    >"$out/server.log" 2>&1 &
spid=$!
"$out/serve" -t "$out/demo-tok.rlm" -m "$out/demo-lm-$LM_STEPS.rlm" --threads "$THREADS" --queue 1024 --max-conns 1024 \
    --port 0 --port-file "$out/port-lm" >"$out/server-lm.log" 2>&1 &
lpid=$!
trap 'kill $spid $lpid 2>/dev/null' EXIT
i=0
while { [ ! -s "$out/port" ] || [ ! -s "$out/port-lm" ]; } && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
port=$(cat "$out/port")
lport=$(cat "$out/port-lm")

# wrk's script: POST the bodies of a file in turn; at the end, name=value lines of its figures
cat >"$out/post.lua" <<'EOF'
local bodies, i, path = {}, 0, os.getenv("BODIES")
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
    i = i % #bodies + 1
    return wrk.format(nil, os.getenv("URLPATH"), nil, bodies[i])
end
done = function(summary, latency, requests)
    local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
    io.write(string.format("rps=%.1f\np50_ms=%.3f\np99_ms=%.3f\nrequests=%d\nerrors=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
        summary.requests, bad))
end
EOF

# load ENDPOINT PORT BODIES CONNS: one run; sets rps p50 p99 errors
load() {
    if [ $tool = wrk ]; then
        t=$(( $4 < 2 ? 1 : 2 ))
        BODIES="$3" URLPATH="$1" wrk -t "$t" -c "$4" -d "${DURATION}s" --timeout 10s -s "$out/post.lua" \
            "http://127.0.0.1:$2$1" >"$out/run.txt" 2>&1
        rps=$(sed -n 's/^rps=//p' "$out/run.txt"); p50=$(sed -n 's/^p50_ms=//p' "$out/run.txt")
        p99=$(sed -n 's/^p99_ms=//p' "$out/run.txt"); errors=$(sed -n 's/^errors=//p' "$out/run.txt")
    else
        head -n 1 "$3" >"$out/ab.body"
        ab -q -n "$REQUESTS" -t "$DURATION" -c "$4" -p "$out/ab.body" -T application/json "http://127.0.0.1:$2$1" >"$out/run.txt" 2>&1
        rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out/run.txt")
        p50=$(sed -n 's/^ *50% *\([0-9]*\).*/\1/p' "$out/run.txt"); p99=$(sed -n 's/^ *99% *\([0-9]*\).*/\1/p' "$out/run.txt")
        errors=$(sed -n 's/^Non-2xx responses: *//p' "$out/run.txt"); errors=${errors:-0}
    fi
    [ -n "$rps" ] || { echo "bench/serve.sh: $tool failed:"; cat "$out/run.txt"; exit 1; }
}

printf '%-10s %6s %10s %10s %10s %8s\n' endpoint conns "req/s" "p50 ms" "p99 ms" errors >"$out/table.txt"
: >"$out/values.txt"
for ep in search generate; do
    if [ $ep = search ]; then p=$port; else p=$lport; fi
    for c in $CONNS; do
        load "/$ep" "$p" "$out/$ep.bodies" "$c"
        printf '%-10s %6d %10.1f %10.3f %10.3f %8d\n' "/$ep" "$c" "$rps" "$p50" "$p99" "$errors" >>"$out/table.txt"
        printf 'serve_%s_c%d_rps=%s\nserve_%s_c%d_p50_ms=%s\nserve_%s_c%d_p99_ms=%s\nserve_%s_c%d_errors=%s\n' \
            $ep "$c" "$rps" $ep "$c" "$p50" $ep "$c" "$p99" $ep "$c" "$errors" >>"$out/values.txt"
    done
done
curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null | grep '^retrlm_resident_memory_bytes' | sed 's/^retrlm_resident_memory_bytes /serve_search_resident_bytes=/' >>"$out/values.txt" || true

# the ratio to the library in process, in pairs run back to back (a shared machine's speed drifts
# between runs by more than the difference measured): /search at 8 connections, then the library
# in process on the same queries and threads for as many requests as the server answered
: >"$out/ratios.txt"
r=1
while [ $r -le "$RATIO_RUNS" ]; do
    load /search "$port" "$out/search.bodies" 8
    n=$(sed -n 's/^requests=//p' "$out/run.txt")
    [ "$tool" = wrk ] || n=$REQUESTS
    "$out/serve" $G -d "$out/debpkg.rlm" --threads "$THREADS" --bench-search "$out/queries.txt" --bench-requests "$n" >"$out/pair.txt"
    awk -v a="$rps" -v b="$(sed -n 's/^inproc_search_rps=//p' "$out/pair.txt")" 'BEGIN { printf "%.1f %.1f %.3f\n", a, b, a / b }' >>"$out/ratios.txt"
    r=$((r + 1))
done
kill $spid $lpid 2>/dev/null || true
wait $spid $lpid 2>/dev/null || true
trap - EXIT

# the library in process: the same queries, the same threads
"$out/serve" $G -d "$out/debpkg.rlm" --threads "$THREADS" --bench-search "$out/queries.txt" \
    --bench-requests "${INPROC_REQUESTS:-20000}" >"$out/inproc.txt"
"$out/serve" -t "$out/demo-tok.rlm" -m "$out/demo-lm-$LM_STEPS.rlm" --threads "$THREADS" --bench-generate "$prompt" \
    --bench-requests "${INPROC_GEN_REQUESTS:-200}" >>"$out/inproc.txt"
cat "$out/inproc.txt" >>"$out/values.txt"
ins=$(sed -n 's/^inproc_search_rps=//p' "$out/inproc.txt")
ing=$(sed -n 's/^inproc_generate_rps=//p' "$out/inproc.txt")
printf '%-10s %6s %10.1f %10.3f %10.3f %8s\n' "in-process" "/search" "$ins" "$(sed -n 's/^inproc_search_p50_ms=//p' "$out/inproc.txt")" \
    "$(sed -n 's/^inproc_search_p99_ms=//p' "$out/inproc.txt")" "-" >>"$out/table.txt"
printf '%-10s %6s %10.1f %10.3f %10.3f %8s\n' "in-process" "/gen" "$ing" "$(sed -n 's/^inproc_generate_p50_ms=//p' "$out/inproc.txt")" \
    "$(sed -n 's/^inproc_generate_p99_ms=//p' "$out/inproc.txt")" "-" >>"$out/table.txt"
awk '{ printf "serve_search_c8_vs_inproc_pair%d=%s\n", NR, $3 }' "$out/ratios.txt" >>"$out/values.txt"
sort -n -k 3 "$out/ratios.txt" | awk '{ v[NR] = $3 } END { if (NR) printf "serve_search_c8_vs_inproc=%s\n", v[int((NR + 1) / 2)] }' >>"$out/values.txt"
echo
cat "$out/table.txt"
echo
echo "/search at 8 connections against the library in process, pairs run back to back:"
awk '{ printf "  serve %8.1f req/s   in process %8.1f req/s   ratio %.3f\n", $1, $2, $3 }' "$out/ratios.txt"
echo "kernels: $(sed -n 's/^kernel_path=//p' "$out/inproc.txt" | head -n 1) (the server and the library in process, built -O2)"
echo
echo "threads=$THREADS"
echo "tool=$tool"
echo "duration_s=$DURATION"
cat "$out/values.txt"
