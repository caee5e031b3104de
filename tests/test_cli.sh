#!/bin/sh
# tests/test_cli.sh - builds the command-line tool (examples/retrlm.c) and runs a short session
# on examples/data/kjv-excerpt.tsv: tokenizer, a tiny LM, a datastore, search, eval (none,
# in-context, kNN-LM), generation, a tiny bi-encoder (Contriever, then DPR, and Contriever with
# MoCo), dense / hybrid retrieval, the units' embeddings saved by embed and loaded with --dense,
# REPLUG LSR (lsr-train) and in-context retrofitting (retrofit); RETRO (retro-train from scratch
# and with --retrofit, its neighbours file, eval and generate with a RETRO model); RPT (rpt-train
# against a reference LM, eval with its own retriever, BM25 and none); TRIME (trime-train
# with each memory, eval --trime, with the model's own kNN-LM keys); then bad input,
# which must fail with a message, never crash, and what a user can get wrong (a directory as a
# file, an empty text, an option taken as a value, -o of another kind), which must exit 2 before
# any work.
# The last line is "N passed, M failed"; the exit status is nonzero on any failure.
#   sh tests/test_cli.sh              (from the repository root; CC, STB_INC as in tests/run.sh)
#   RETRLM_BIN=path sh tests/test_cli.sh     tests an already built binary (e.g. a sanitizer build)
set -u
CC=${CC:-cc}
STB_INC=${STB_INC:-/usr/include/stb}
out=build/tests/cli
data=examples/data/kjv-excerpt.tsv
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
passed=0 failed=0
mkdir -p "$out"
rm -f "$out"/*.rlm "$out"/*.rlm.tmp-* "$out/fifo"

ok() { passed=$((passed + 1)); echo "  ok   $1"; }
no() { failed=$((failed + 1)); echo "FAIL $1"; sed 's/^/     | /' "$out/log" | tail -n 15; }

# run NAME COMMAND...: must exit 0
run() {
    n=$1
    shift
    if "$@" >"$out/log" 2>&1; then ok "$n"; else no "$n (exit $?)"; fi
}

# bad NAME COMMAND...: must exit 1 or 2 with a "retrlm" message (a crash exits with a signal's status)
bad() {
    n=$1
    shift
    "$@" >"$out/log" 2>&1
    rc=$?
    if { [ $rc = 1 ] || [ $rc = 2 ]; } && grep -q '^retrlm' "$out/log"; then ok "$n: $(grep '^retrlm' "$out/log" | head -n 1)"
    else no "$n (exit $rc)"; fi
}

# keep NAME FILE COMMAND...: as run, and the standard output alone goes to FILE too
keep() {
    n=$1 f=$2
    shift 2
    "$@" >"$f" 2>"$out/log"
    rc=$?
    cat "$f" >>"$out/log"
    if [ $rc = 0 ]; then ok "$n"; else no "$n (exit $rc)"; fi
}

# usage NAME COMMAND...: a bad command line or input, said before any work: must exit 2 with a
# "retrlm" message
usage() {
    n=$1
    shift
    "$@" >"$out/log" 2>&1
    rc=$?
    if [ $rc = 2 ] && grep -q '^retrlm' "$out/log"; then ok "$n: $(grep '^retrlm' "$out/log" | head -n 1)"
    else no "$n (exit $rc, not 2)"; fi
}

# same NAME FILE1 FILE2: the two files are identical and not empty
same() {
    if [ -s "$2" ] && cmp -s "$2" "$3"; then ok "$1"; else no "$1: $2 and $3 differ"; diff "$2" "$3" | head -n 10; fi
}

# has NAME PATTERN: the last command's output matches the extended regular expression
has() {
    if grep -Eq "$2" "$out/log"; then ok "$1"; else no "$1: no /$2/ in the output"; fi
}

R=${RETRLM_BIN:-$out/retrlm}
if [ -z "${RETRLM_BIN:-}" ]; then
    run "builds" $CC -std=c99 -O2 -Wall -Wextra -pedantic -Werror -I. -I"$STB_INC" examples/retrlm.c -lm -o "$R"
fi

# the texts: 2 Kings to train on, Isaiah 36 (which 2 Kings 18 retells) to score
awk -F'\t' 'NR > 1 && $1 == "2 Kings" && $2 <= 12 { print $4 }' "$data" >"$out/train.txt"
awk -F'\t' 'NR > 1 && $1 == "Isaiah" && $2 == 36 { print $4 }' "$data" >"$out/test.txt"

T="-t $out/tok.rlm"
M="-m $out/lm.rlm"
run "tokenizer-train" "$R" tokenizer-train --vocab 300 -o "$out/tok.rlm" "$out/train.txt"
has "tokenizer-train: 300 tokens" "300 tokens"
echo "Then Rabshakeh stood" >"$out/prompt.txt"
run "tokenize" "$R" tokenize $T - <"$out/prompt.txt"
has "tokenize: prints ids" "^[0-9]+( [0-9]+)+$"
run "lm-train" "$R" lm-train $T --train "$out/train.txt" --valid "$out/test.txt" --dim 32 --layers 1 \
    --heads 2 --ctx 96 --batch 4 --steps 20 -o "$out/lm.rlm"
has "lm-train: reaches step 20" "step 20, loss [0-9.]+, valid [0-9.]+ bits per byte"
run "lm-train --resume" "$R" lm-train $T --train "$out/train.txt" --steps 25 --resume -o "$out/lm.rlm"
has "lm-train --resume: continues to step 25" "step 25, loss"
run "datastore --tsv" "$R" datastore $T -o "$out/ds.rlm" --tsv "$data" --col 4 --header --chunk 32
has "datastore: units and terms" "[0-9]+ units, BM25 over [0-9]+ terms"
mkfifo "$out/fifo" 2>/dev/null || rm -f "$out/fifo"
run "datastore FILE" "$R" datastore $T -o "$out/ds-files.rlm" --chunk 32 "$out/train.txt" "$out/test.txt"
run "search" "$R" search -d "$out/ds.rlm" -k 3 Rabshakeh cried with a loud voice
has "search: finds Rabshakeh" "^[0-9]+	[0-9.]+	[0-9]+	.*Rabshakeh"
for mode in none incontext; do
    run "eval --mode $mode" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" --mode $mode --unit-tokens 32
    has "eval --mode $mode: bits per byte" "^[0-9]+\.[0-9]+ bits per byte"
done
awk '{ print (NR % 3 ? "prose" : "third") }' "$out/test.txt" >"$out/labels.txt"
keep "eval --per-line --groups" "$out/eval-groups.txt" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" \
    --mode incontext --unit-tokens 32 --per-line "$out/lines.tsv" --groups "$out/labels.txt"
has "eval --groups: a line for each label" "^[0-9.]+ bits per byte: group third, [0-9]+ lines"
# the bytes-weighted means of the groups and of the lines are the total; the lines' bytes are the text's
if awk -F'\t' -v text="$(wc -c <"$out/test.txt")" -v lines="$(wc -l <"$out/test.txt")" '
    FNR == 1 && NR == 1 { split($0, w, " "); total = w[1]; next }
    NR == FNR { split($0, w, " "); b = $0; sub(/ bytes$/, "", b); sub(/.*, /, "", b); gb += b; gbits += w[1] * b; next }
    FNR > 1 { lb += $2; lbits += $2 * $3; n++ }
    END { d1 = gbits / gb - total; d2 = lbits / lb - total
          exit !(gb == text && lb == text && n == lines && d1 < 2e-4 && d1 > -2e-4 && d2 < 2e-4 && d2 > -2e-4) }' \
    "$out/eval-groups.txt" "$out/lines.tsv"; then ok "eval --groups, --per-line: bytes-weighted means equal the total"
else no "eval --groups, --per-line: bytes-weighted means equal the total"; cat "$out/eval-groups.txt"; fi
head -n 3 "$out/labels.txt" >"$out/labels-3.txt"
usage "eval --groups: fewer labels than lines" "$R" eval $M $T --text "$out/test.txt" --groups "$out/labels-3.txt"
run "knnlm" "$R" knnlm $M $T --text "$out/train.txt" -o "$out/keys.rlm"
run "eval --knnlm-keys" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys.rlm" --stride 32
has "eval --knnlm-keys: bits per byte" "bits per byte: .* \+ kNN-LM"
run "eval --knnlm-build" "$R" eval $M $T --text "$out/test.txt" --knnlm-build "$out/train.txt" --nlist 16 --sq8 --stride 32
# IVF keys are searched with ceil(sqrt(nlist)) lists unless --knn-nprobe says; all of them is
# the flat keys' search
keep "eval --knnlm-keys, flat" "$out/eval-knn-flat.txt" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys.rlm" --stride 32
run "knnlm --nlist" "$R" knnlm $M $T --text "$out/train.txt" -o "$out/keys-ivf.rlm" --nlist 16
has "knnlm --nlist: sqrt(nlist) lists a search" "keys-ivf.rlm: [0-9]+ keys of [0-9]+ dimensions, IVF 16 lists \(nprobe 4\)"
keep "eval --knn-nprobe 16" "$out/eval-knn-ivf.txt" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys-ivf.rlm" \
    --knn-nprobe 16 --stride 32
cut -d' ' -f1 "$out/eval-knn-flat.txt" >"$out/eval-knn-flat.bpb"
cut -d' ' -f1 "$out/eval-knn-ivf.txt" >"$out/eval-knn-ivf.bpb"
same "eval --knn-nprobe of every list: the flat keys' bits per byte" "$out/eval-knn-flat.bpb" "$out/eval-knn-ivf.bpb"
keep "eval --knnlm-keys IVF at the default nprobe" "$out/eval-knn-ivf4.txt" "$R" eval $M $T --text "$out/test.txt" \
    --knnlm-keys "$out/keys-ivf.rlm" --stride 32
# the default (4 of 16 lists) within 0.5% of the flat keys' bits per byte
if awk -v a="$(cat "$out/eval-knn-flat.bpb")" -v b="$(cut -d' ' -f1 "$out/eval-knn-ivf4.txt")" \
    'BEGIN { d = (b - a) / a; print "  flat " a ", IVF at the default nprobe " b ", " 100 * d "%"; exit !(a > 0 && d < 0.005 && d > -0.005) }'; then
    ok "eval --knnlm-keys IVF, default nprobe: within 0.5% of flat"
else no "eval --knnlm-keys IVF, default nprobe: within 0.5% of flat"; fi
run "knnlm --sq8 --sq8-rerank" "$R" knnlm $M $T --text "$out/train.txt" -o "$out/keys-sq8.rlm" --nlist 16 --sq8 --sq8-rerank 4
has "knnlm --sq8-rerank: says so" "keys-sq8.rlm: .*8 bits \(f32 kept for re-ranking\)"
run "eval --knnlm-build --sq8 --sq8-rerank" "$R" eval $M $T --text "$out/test.txt" --knnlm-build "$out/train.txt" --nlist 16 \
    --sq8 --sq8-rerank 4 --stride 32
run "generate -d" "$R" generate $M $T -d "$out/ds.rlm" --prompt "Then Rabshakeh stood and cried" --tokens 8 --temp 0
has "generate: shows the retrieved unit" "^--- retrieved: unit [0-9]+"
has "generate: continues the prompt" "^Then Rabshakeh stood and cried"

# dense retrieval: Contriever on the datastore's units, then DPR on pairs (the last words of a
# verse of Isaiah 36, the verse, the verse before it as the hard negative)
E="--encoder $out/enc-dpr.rlm"
run "encoder-train -d" "$R" encoder-train $T -d "$out/ds.rlm" --dim 16 --layers 1 --heads 2 --steps 20 -o "$out/enc.rlm"
has "encoder-train -d: Contriever to step 20" "Contriever, step 20, loss [0-9.]+, in-batch accuracy [0-9.]+"
awk -F'\t' 'NR > 1 && $1 == "Isaiah" && $2 == 36 { n = split($4, w, " "); q = w[n - 3] " " w[n - 2] " " w[n - 1] " " w[n]
    print q "\t" $4 "\t" prev; prev = $4 }' "$data" >"$out/pairs.tsv"
run "encoder-train --pairs --init" "$R" encoder-train $T --pairs "$out/pairs.tsv" --init "$out/enc.rlm" --steps 20 \
    -o "$out/enc-dpr.rlm"
has "encoder-train --pairs: DPR to step 20" "DPR, step 20, loss [0-9.]+, in-batch accuracy [0-9.]+"

# the units embedded once (embed), then loaded with --dense: the same results as embedding again
D="--dense $out/dense.rlm"
run "embed" "$R" embed $T -d "$out/ds.rlm" $E -o "$out/dense.rlm"
has "embed: a flat index of the units" "dense.rlm: [0-9]+ units, embeddings 16 wide, flat, f32"
run "embed --nlist --sq8" "$R" embed $T -d "$out/ds.rlm" $E -o "$out/dense-ivf.rlm" --nlist 16 --nprobe 4 --sq8
has "embed --nlist: IVF" "dense-ivf.rlm: [0-9]+ units, embeddings 16 wide, IVF 16 lists \(nprobe 4\), 8 bits"
for mode in dense rrf rerank; do
    q="--retrieve $mode -k 5 Rabshakeh cried with a loud voice"
    keep "search --retrieve $mode" "$out/search-$mode.txt" "$R" search -d "$out/ds.rlm" $T $E $q
    has "search --retrieve $mode: units" "^[0-9]+	[0-9.-]+	[0-9]+	"
    keep "search --retrieve $mode --dense" "$out/search-$mode-dense.txt" "$R" search -d "$out/ds.rlm" $T $E $D $q
    if grep -q "^encode" "$out/log"; then no "search --retrieve $mode --dense: embeds the units again"
    else ok "search --retrieve $mode --dense: no embedding"; fi
    same "search --retrieve $mode --dense: the same units, order and scores" "$out/search-$mode.txt" \
        "$out/search-$mode-dense.txt"
done
has "search --retrieve rrf: finds Rabshakeh" "^[0-9]+	[0-9.]+	[0-9]+	.*Rabshakeh"
# quantize: int8 weights, read to within 1% of the f32 LM's bits per byte; not for RETRO models
run "quantize" "$R" quantize $M $T -o "$out/lm8.rlm"
has "quantize: said" "lm8.rlm: int8 weights"
keep "eval the f32 LM" "$out/eval-f32.txt" "$R" eval $M $T --text "$out/test.txt"
keep "eval the int8 LM" "$out/eval-q8.txt" "$R" eval -m "$out/lm8.rlm" $T --text "$out/test.txt"
v1=$(sed -nE 's/^([0-9.]+) bits per byte: .*mode none,.*/\1/p' "$out/eval-f32.txt")
v2=$(sed -nE 's/^([0-9.]+) bits per byte: .*mode none,.*/\1/p' "$out/eval-q8.txt")
if [ -n "$v1" ] && [ -n "$v2" ] && awk -v a="$v1" -v b="$v2" 'BEGIN { d = b - a; exit !(d < 0.01 * a && -d < 0.01 * a) }'
then ok "eval the int8 LM: $v2 bits per byte against f32's $v1"
else no "eval the int8 LM: $v2 bits per byte against f32's $v1"; fi
run "generate with the int8 LM" "$R" generate -m "$out/lm8.rlm" $T --prompt "And the" --tokens 8
usage "quantize an int8 model" "$R" quantize -m "$out/lm8.rlm" $T -o "$out/lm88.rlm"
run "search --dense IVF SQ8" "$R" search -d "$out/ds.rlm" $T $E --dense "$out/dense-ivf.rlm" -k 5 Rabshakeh cried
has "search --dense IVF SQ8: units" "^[0-9]+	[0-9.-]+	[0-9]+	"
for d in "" "$D"; do
    keep "eval --retrieve dense${d:+ --dense}" "$out/eval-out.txt" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" \
        --mode incontext --unit-tokens 32 $E $d --retrieve dense
    has "eval --retrieve dense${d:+ --dense}: bits per byte" "^[0-9]+\.[0-9]+ bits per byte: .* by dense"
    sed 's/, [0-9.]* s$//' "$out/eval-out.txt" >"$out/eval${d:+-dense}.txt" # without the time taken
done
same "eval --dense: the same bits per byte" "$out/eval.txt" "$out/eval-dense.txt"
for d in "" "$D"; do
    keep "generate --retrieve linear${d:+ --dense}" "$out/gen${d:+-dense}.txt" "$R" generate $M $T -d "$out/ds.rlm" $E $d \
        --retrieve linear --weight 0.3 --depth 50 --prompt "Then Rabshakeh stood and cried" --tokens 8 --temp 0
    has "generate --retrieve linear${d:+ --dense}: shows the unit" "^--- retrieved: unit [0-9]+ \(document [0-9]+, linear"
done
same "generate --dense: the same unit and continuation" "$out/gen.txt" "$out/gen-dense.txt"

# MoCo; then strategy 2: the DPR encoder fine-tuned by the frozen LM (REPLUG LSR), the LM
# retrofitted to read units (BM25, then hybrid); each output then used by search or eval
run "encoder-train --moco" "$R" encoder-train $T -d "$out/ds.rlm" --dim 16 --layers 1 --heads 2 --steps 10 --moco 64 \
    --momentum 0.99 -o "$out/enc-moco.rlm"
has "encoder-train --moco: to step 10" "Contriever with MoCo, step 10, loss [0-9.]+, batch \+ queue accuracy [0-9.]+"
run "search with the MoCo encoder" "$R" search -d "$out/ds.rlm" $T --encoder "$out/enc-moco.rlm" -k 3 Rabshakeh cried
has "search with the MoCo encoder: units" "^[0-9]+	[0-9.-]+	[0-9]+	"
S2="$M $T -d $out/ds.rlm"
LSR="--encoder $out/enc-dpr.rlm $D --train $out/test.txt --batch 2 --k 4 --context 16 --continuation 16"
run "lsr-train" "$R" lsr-train $S2 $LSR --steps 4 --refresh 2 -o "$out/enc-lsr.rlm"
has "lsr-train: to step 4" "enc-lsr.rlm: LSR, step 4, KL [0-9.]+, agreement with the LM [0-9.]+; embeddings 16 wide"
run "search with the LSR encoder" "$R" search -d "$out/ds.rlm" $T --encoder "$out/enc-lsr.rlm" -k 3 Rabshakeh cried
has "search with the LSR encoder: units" "^[0-9]+	[0-9.-]+	[0-9]+	"
# strategy 3: the LM and the DPR encoder trained together (REALM, a background refresh; PDist with
# re-ranking; query-side), each result read by eval, search and generate
J0="--train $out/test.txt --batch 2 --k 3 --context 16 --continuation 16 --probe 4"
J="--encoder $out/enc-dpr.rlm $D $J0"
run "joint-train" "$R" joint-train $S2 $J --steps 4 --refresh 2 --refresh-delay 1 -o "$out/joint.rlm" \
    --encoder-out "$out/joint-enc.rlm" --dense-out "$out/joint-dense.rlm"
has "joint-train: to step 4" "joint.rlm, .*joint-enc.rlm, .*joint-dense.rlm: joint \(realm\), step 4, loss [0-9.]+, reader [0-9.]+ nats/token"
has "joint-train: the refresh (begun at step 2, in at 3)" "refreshes 1: [0-9.]+ s embedding"
run "eval the joint reader and retriever" "$R" eval -m "$out/joint.rlm" $T --text "$out/test.txt" -d "$out/ds.rlm" \
    --mode incontext --unit-tokens 32 --unit-continuation --encoder "$out/joint-enc.rlm" --dense "$out/joint-dense.rlm"
has "eval the joint reader and retriever: bits per byte" "^[0-9]+\.[0-9]+ bits per byte: .*mode incontext.* by dense"
run "search with the joint retriever" "$R" search -d "$out/ds.rlm" $T --encoder "$out/joint-enc.rlm" \
    --dense "$out/joint-dense.rlm" -k 3 Rabshakeh cried
has "search with the joint retriever: units" "^[0-9]+	[0-9.-]+	[0-9]+	"
run "generate with the joint reader and retriever" "$R" generate -m "$out/joint.rlm" $T -d "$out/ds.rlm" \
    --encoder "$out/joint-enc.rlm" --dense "$out/joint-dense.rlm" --prompt "Then Rabshakeh stood" --tokens 4 --temp 0
has "generate with the joint reader: shows the unit" "^--- retrieved: unit [0-9]+ \(document [0-9]+, dense"
run "joint-train pdist --rerank" "$R" joint-train $S2 $J --steps 2 --objective pdist --rerank 6 --refresh 0 \
    -o "$out/joint2.rlm" --encoder-out "$out/joint2-enc.rlm"
has "joint-train pdist --rerank: to step 2" "joint \(pdist\), step 2"
run "joint-train --rerank-bm25" "$R" joint-train $S2 $J --steps 2 --rerank 6 --rerank-bm25 --refresh 0 \
    -o "$out/joint4.rlm" --encoder-out "$out/joint4-enc.rlm"
has "joint-train --rerank-bm25: to step 2" "joint \(realm\), step 2"
run "search with the BM25 re-ranker" "$R" search -d "$out/ds.rlm" $T --encoder "$out/joint4-enc.rlm" --retrieve rerank \
    --depth 6 -k 3 Rabshakeh cried
has "search with the BM25 re-ranker: finds Rabshakeh" "^[0-9]+	[0-9.-]+	[0-9]+	.*Rabshakeh"
run "joint-train --rerank-bm25 --bm25-weight" "$R" joint-train $S2 $J --steps 2 --rerank 6 --rerank-bm25 \
    --bm25-weight 0.05 --refresh 0 -o "$out/joint5.rlm" --encoder-out "$out/joint5-enc.rlm"
has "joint-train --bm25-weight: to step 2" "joint \(realm\), step 2"
keep "search --bm25-weight" "$out/search-bw.txt" "$R" search -d "$out/ds.rlm" $T --encoder "$out/joint5-enc.rlm" \
    --retrieve rerank --bm25-weight 1000 --depth 6 -k 3 Rabshakeh cried
keep "search --retrieve bm25" "$out/search-bm.txt" "$R" search -d "$out/ds.rlm" $T -k 3 Rabshakeh cried
if [ "$(cut -f1 "$out/search-bw.txt")" = "$(cut -f1 "$out/search-bm.txt")" ]; then
    ok "search --bm25-weight 1000: BM25's order"
else no "search --bm25-weight 1000: BM25's order"; fi
usage "search --bm25-weight without rerank" "$R" search -d "$out/ds.rlm" $T --bm25-weight 1 Rabshakeh
has "search --bm25-weight without rerank: says why" "is for --retrieve rerank"
usage "joint-train --bm25-weight without --rerank-bm25" "$R" joint-train $S2 $J --rerank 6 --bm25-weight 1 \
    -o "$out/x.rlm" --encoder-out "$out/x2.rlm"
has "joint-train --bm25-weight without --rerank-bm25: says why" "needs --rerank-bm25"
usage "joint-train --rerank-bm25 without --rerank" "$R" joint-train $S2 $J --rerank-bm25 -o "$out/x.rlm" \
    --encoder-out "$out/x2.rlm"
has "joint-train --rerank-bm25 without --rerank: says why" "needs --rerank L"
bad "joint-train: unknown objective" "$R" joint-train $S2 $J --objective foo -o "$out/x.rlm" --encoder-out "$out/x2.rlm"
has "joint-train: unknown objective: says which" "objective is realm, pdist or emdr"
bad "joint-train: a delay past the refresh" "$R" joint-train $S2 $J --refresh 2 --refresh-delay 3 -o "$out/x.rlm" \
    --encoder-out "$out/x2.rlm"
bad "joint-train --query-side with a shared encoder" "$R" joint-train $S2 $J --query-side -o "$out/x.rlm" \
    --encoder-out "$out/x2.rlm"
has "joint-train --query-side with a shared encoder: says why" "shares one set of weights"
run "encoder-train --separate" "$R" encoder-train $T -d "$out/ds.rlm" --dim 16 --layers 1 --heads 2 --steps 2 --separate \
    -o "$out/enc-sep.rlm"
run "joint-train --query-side" "$R" joint-train $S2 --encoder "$out/enc-sep.rlm" $J0 --steps 2 --query-side --objective emdr \
    -o "$out/joint3.rlm" --encoder-out "$out/joint3-enc.rlm"
has "joint-train --query-side: to step 2" "joint \(emdr\), step 2"
bad "joint-train --rerank not above k" "$R" joint-train $S2 $J --rerank 2 -o "$out/x.rlm" --encoder-out "$out/x2.rlm"
bad "joint-train without --encoder-out" "$R" joint-train $S2 $J -o "$out/x.rlm"
run "retrofit" "$R" retrofit $S2 --train "$out/train.txt" --steps 4 -o "$out/retro.rlm"
has "retrofit: to step 4" "retro.rlm: retrofitted, step 4, loss [0-9.]+"
run "eval the retrofitted LM" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds.rlm" --mode incontext \
    --unit-tokens 32
has "eval the retrofitted LM: bits per byte" "^[0-9]+\.[0-9]+ bits per byte: .*mode incontext"
run "retrofit --retrieve rrf --dense" "$R" retrofit $S2 --train "$out/train.txt" $E $D --retrieve rrf --k 2 \
    --unit-tokens 16 --query 16 --batch 2 --steps 2 -o "$out/retro-rrf.rlm"
has "retrofit --retrieve rrf: to step 2" "retrofitted, step 2"

# RETRO: a datastore of other text (2 Chronicles, which retells much of 2 Kings, and the rest of
# 2 Kings); a RETRO model from scratch, then one RETRO-fitted from lm.rlm reading the same
# neighbours file; eval and generate with them
awk -F'\t' 'NR > 1 && $1 == "2 Chronicles" { print $4 }' "$data" >"$out/chron.txt"
awk -F'\t' 'NR > 1 && $1 == "2 Kings" && $2 > 12 { print $4 }' "$data" >"$out/kings-rest.txt"
rm -f "$out"/nb*.rlm
run "datastore for RETRO" "$R" datastore $T -o "$out/ds-retro.rlm" --chunk 16 "$out/chron.txt" "$out/kings-rest.txt"
RT="$T -d $out/ds-retro.rlm --train $out/train.txt --chunk 16 --k 2"
keep "retro-train" "$out/retro-train.txt" "$R" retro-train $RT --neighbours "$out/nb.rlm" --valid "$out/test.txt" \
    --dim 32 --layers 2 --heads 2 --ctx 64 --batch 4 --enc-dim 16 --enc-layers 1 --steps 6 --eval-every 3 -o "$out/retro.rlm"
has "retro-train: to step 6, the probe with and without neighbours" \
    "retro.rlm: RETRO, step 6, loss [0-9.]+, probe loss [0-9.]+ with neighbours, [0-9.]+ without, valid [0-9.]+ bits per byte"
has "retro-train: the probe at step 3" "^step 3: probe loss [0-9.]+ with neighbours, [0-9.]+ without; valid"
has "retro-train: the neighbours retrieved and saved" "neighbours: [0-9]+ chunks retrieved in .*, saved to .*nb.rlm"
keep "lm-train, an LM to RETRO-fit" "$out/lm-r.txt" "$R" lm-train $T --train "$out/train.txt" --valid "$out/test.txt" \
    --dim 32 --layers 2 --heads 2 --ctx 64 --batch 4 --steps 10 -o "$out/lm-r.rlm"
run "retro-train --retrofit" "$R" retro-train $RT --neighbours "$out/nb.rlm" --retrofit "$out/lm-r.rlm" --batch 2 --steps 3 \
    --copy-share 0.5 --copy-steps 2 -o "$out/retrofit.rlm"
has "retro-train --retrofit --copy-share: said" "^copy curriculum: 0.5 of the training chunks read their own text as a neighbour until step 2"
has "retro-train --retrofit: the neighbours file loaded" "neighbours: [0-9]+ chunks loaded from .*nb.rlm"
has "retro-train --retrofit: the LM's shape" "^RETRO-fitting: .*dim 32, 2 layers, 2 heads, ctx 64, batch 2"
has "retro-train --retrofit: to step 3" "retrofit.rlm: RETRO retrofitted from .*lm-r.rlm, step 3, loss [0-9.]+, probe loss"
# RPT: the chunks of 2 Kings retrieve its earlier chunks, the retriever trained against lm-r.rlm's
# judgement; eval reads the text's own earlier chunks
rm -f "$out/rpt-targets.rlm"
keep "rpt-train" "$out/rpt-train.txt" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/lm-r.rlm" --windows 3 \
    --chunk 16 --rpt-dim 8 --enc-dim 16 --enc-layers 1 --steps 3 --targets "$out/rpt-targets.rlm" -o "$out/rpt.rlm"
has "rpt-train: the reference's targets" "^targets: [0-9]+ spans of 1 documents scored by .*lm-r.rlm"
has "rpt-train: the model" "^RPT: .*dim 32, 2 layers, ctx 64, 3 windows a step; chunks of 16, 2 neighbours, cross-attention from layer 1"
has "rpt-train: to step 3" "rpt.rlm: RPT, step 3, loss [0-9.]+"
keep "rpt-train --targets: read back" "$out/rpt-train2.txt" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/lm-r.rlm" \
    --windows 3 --chunk 16 --rpt-dim 8 --enc-dim 16 --enc-layers 1 --steps 3 --targets "$out/rpt-targets.rlm" \
    -o "$out/rpt2.rlm"
has "rpt-train --targets: said" "^targets: [0-9]+ spans read from .*rpt-targets.rlm"
sed 's/rpt2.rlm/rpt.rlm/' "$out/rpt-train2.txt" > "$out/rpt-train2s.txt"
same "rpt-train --targets: the same training" "$out/rpt-train.txt" "$out/rpt-train2s.txt"
same "rpt-train --targets: the same model" "$out/rpt.rlm" "$out/rpt2.rlm"
usage "rpt-train --targets of another shape" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/lm-r.rlm" --windows 2 \
    --chunk 16 --steps 1 --targets "$out/rpt-targets.rlm" -o "$out/rpt-x.rlm"
usage "rpt-train --targets of another text" "$R" rpt-train $T --train "$out/test.txt" --ref "$out/lm-r.rlm" --windows 1 \
    --chunk 16 --steps 1 --targets "$out/rpt-targets.rlm" -o "$out/rpt-x.rlm"
echo garbage > "$out/rpt-bad.rlm"
bad "rpt-train --targets not a targets file" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/lm-r.rlm" \
    --windows 3 --chunk 16 --steps 1 --targets "$out/rpt-bad.rlm" -o "$out/rpt-x.rlm"
run "eval an RPT model" "$R" eval -m "$out/rpt.rlm" $T --text "$out/train.txt"
has "eval an RPT model: its own retriever's picks" "^[0-9.]+ bits per byte: .*RPT with its own retriever's neighbours \([0-9]+ spans of 3 windows of 64 tokens"
has "eval an RPT model: and none" "^[0-9.]+ bits per byte: .*RPT without neighbours \(the same spans\)"
run "eval --rpt bm25 --windows 2" "$R" eval -m "$out/rpt.rlm" $T --text "$out/train.txt" --rpt bm25 --windows 2
has "eval --rpt bm25 --windows 2: said" "RPT with BM25's neighbours \([0-9]+ spans of 2 windows"
usage "eval --rpt xx" "$R" eval -m "$out/rpt.rlm" $T --text "$out/train.txt" --rpt xx
usage "eval --windows beyond the model's" "$R" eval -m "$out/rpt.rlm" $T --text "$out/train.txt" --windows 4
usage "eval --rpt with a plain LM" "$R" eval $M $T --text "$out/test.txt" --rpt own
usage "eval an RPT model with -d" "$R" eval -m "$out/rpt.rlm" $T --text "$out/train.txt" -d "$out/ds.rlm"
usage "eval an RPT model: text shorter than a span" "$R" eval -m "$out/rpt.rlm" $T --text "$out/prompt.txt"
usage "rpt-train: documents shorter than a span" "$R" rpt-train $T --train "$out/test.txt" --ref "$out/lm-r.rlm" \
    --windows 64 --chunk 16 --steps 1 -o "$out/rpt-x.rlm"
usage "rpt-train --ref a RETRO model" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/retro.rlm" --chunk 16 \
    --steps 1 -o "$out/rpt-x.rlm"
usage "rpt-train --retro-start 0" "$R" rpt-train $T --train "$out/train.txt" --ref "$out/lm-r.rlm" --chunk 16 \
    --retro-start 0 --steps 1 -o "$out/rpt-x.rlm"
cp "$out/nb.rlm" "$out/nb3.rlm"
run "retro-train: another k" "$R" retro-train $RT --neighbours "$out/nb3.rlm" --k 3 --dim 16 --layers 1 --heads 2 --ctx 32 \
    --enc-dim 8 --steps 1 -o "$out/retro-x.rlm"
has "retro-train: another k: the neighbours retrieved again" "the model reads [0-9]+ of 16, 3 of 32: retrieving them again"
run "retro-train --retrieve rrf --dense" "$R" retro-train $T -d "$out/ds.rlm" $E $D --retrieve rrf --train "$out/test.txt" \
    --chunk 16 --dim 16 --layers 1 --heads 2 --ctx 32 --enc-dim 8 --steps 2 -o "$out/retro-x.rlm"
has "retro-train --retrieve rrf: to step 2" "retro-x.rlm: RETRO, step 2"
run "retro-train --smear --tie" "$R" retro-train $RT --neighbours "$out/nb-smear.rlm" --smear --tie --dim 16 --layers 2 --heads 2 \
    --ctx 32 --enc-dim 8 --steps 2 -o "$out/retro-smear.rlm"
has "retro-train --smear: said" "cross-attention from layer 1 every [0-9]+ with smeared keys"
usage "quantize a RETRO model" "$R" quantize -m "$out/retro-smear.rlm" $T -o "$out/retro8.rlm"
run "eval a RETRO model with smeared keys" "$R" eval -m "$out/retro-smear.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm"
has "eval a RETRO model with smeared keys: with neighbours" "^[0-9]+\.[0-9]+ bits per byte: .*test.txt, RETRO with neighbours"
keep "eval a RETRO model" "$out/retro-eval.txt" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm"
has "eval a RETRO model: with neighbours" "^[0-9]+\.[0-9]+ bits per byte: .*test.txt, RETRO with neighbours by bm25"
has "eval a RETRO model: without" "^[0-9]+\.[0-9]+ bits per byte: .*test.txt, RETRO without neighbours"
v1=$(sed -nE 's/.*valid ([0-9.]+) bits per byte$/\1/p' "$out/retro-train.txt")
v2=$(sed -nE 's/^([0-9.]+) bits per byte: .*RETRO with neighbours.*/\1/p' "$out/retro-eval.txt")
if [ -n "$v1" ] && [ "$v1" = "$v2" ]; then ok "eval a RETRO model: retro-train's valid figure ($v1)"
else no "eval a RETRO model: $v2 bits per byte, retro-train's valid said $v1"; fi
# --min-overlap: weak neighbours left out, and the count of chunks that kept one said
run "eval a RETRO model --min-overlap" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm" \
    --min-overlap 0.3
has "eval --min-overlap: chunks with a neighbour" \
    "neighbours: [0-9]+ chunks retrieved in .* \([0-9]+ with a neighbour holding 0.3 of their bigrams\)"
has "eval --min-overlap: with neighbours" "^[0-9]+\.[0-9]+ bits per byte: .*test.txt, RETRO with neighbours by bm25"
usage "eval --min-overlap with a plain LM" "$R" eval -m "$out/lm-r.rlm" $T --text "$out/test.txt" --min-overlap 0.3
usage "eval --min-overlap out of range" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm" \
    --min-overlap 1.5
# the RETRO-fitted decoder is the LM's, frozen: without neighbours, its figure is lm-train's
keep "eval a RETRO-fitted model" "$out/retrofit-eval.txt" "$R" eval -m "$out/retrofit.rlm" $T --text "$out/test.txt" \
    -d "$out/ds-retro.rlm"
v1=$(sed -nE 's/.*valid ([0-9.]+) bits per byte$/\1/p' "$out/lm-r.txt")
v2=$(sed -nE 's/^([0-9.]+) bits per byte: .*RETRO without neighbours.*/\1/p' "$out/retrofit-eval.txt")
if [ -n "$v1" ] && [ "$v1" = "$v2" ]; then ok "eval a RETRO-fitted model: without neighbours, the LM's valid figure ($v1)"
else no "eval a RETRO-fitted model: $v2 bits per byte without neighbours, the LM's valid said $v1"; fi
run "generate with a RETRO model" "$R" generate -m "$out/retrofit.rlm" $T -d "$out/ds-retro.rlm" \
    --prompt "Then Rabshakeh stood and cried with a loud voice" --tokens 24 --temp 0
has "generate with a RETRO model: the first chunk's neighbours" "^--- chunk 0 \(tokens 0-15, prompt\): "
has "generate with a RETRO model: units used" "^    unit [0-9]+ \(document [0-9]+\): "
has "generate with a RETRO model: continues the prompt" "^Then Rabshakeh stood and cried with a loud voice"
run "generate with a RETRO model --min-overlap" "$R" generate -m "$out/retrofit.rlm" $T -d "$out/ds-retro.rlm" \
    --prompt "Then Rabshakeh stood and cried with a loud voice" --tokens 24 --temp 0 --min-overlap 0.3
has "generate --min-overlap: continues the prompt" "^Then Rabshakeh stood and cried with a loud voice"

# TRIME (strategy 4): trime-train with each memory; eval --trime reads the model with its local
# memory and gives trime-train's valid figure, without --trime the vocabulary alone's; the
# model's own kNN-LM keys as the external datastore (TrimeLM_ext)
TT="$T --train $out/train.txt --dim 32 --layers 1 --heads 2 --ctx 64 --batch 4"
keep "trime-train" "$out/trime.txt" "$R" trime-train $TT --valid "$out/test.txt" --steps 6 -o "$out/trime.rlm"
has "trime-train: to step 6, valid with and without the memory" \
    "trime.rlm: TRIME, step 6, loss [0-9.]+, valid [0-9.]+ bits per byte with its local memory, [0-9.]+ with the vocabulary alone"
keep "eval --trime l2" "$out/trime-eval.txt" "$R" eval -m "$out/trime.rlm" $T --text "$out/test.txt" --trime l2
v1=$(sed -nE 's/.*valid ([0-9.]+) bits per byte with its local memory.*/\1/p' "$out/trime.txt")
v2=$(sed -nE "s/^([0-9.]+) bits per byte: .*test.txt, mode none \+ TRIME's local memory,.*/\1/p" "$out/trime-eval.txt")
if [ -n "$v1" ] && [ "$v1" = "$v2" ]; then ok "eval --trime: trime-train's valid figure ($v1)"
else no "eval --trime: $v2 bits per byte, trime-train's valid said $v1"; fi
keep "eval a TRIME model without --trime" "$out/trime-eval0.txt" "$R" eval -m "$out/trime.rlm" $T --text "$out/test.txt"
v1=$(sed -nE 's/.*, ([0-9.]+) with the vocabulary alone$/\1/p' "$out/trime.txt")
v2=$(sed -nE 's/^([0-9.]+) bits per byte: .*test.txt, mode none,.*/\1/p' "$out/trime-eval0.txt")
if [ -n "$v1" ] && [ "$v1" = "$v2" ]; then ok "eval without --trime: the vocabulary alone ($v1)"
else no "eval without --trime: $v2 bits per byte, trime-train said $v1"; fi
run "trime-train --memory ext" "$R" trime-train $TT --memory ext --drop-local 0.5 --steps 3 -o "$out/trime-ext.rlm"
has "trime-train --memory ext: the BM25 groups" "^grouping [0-9]+ windows of 64 tokens by BM25 into batches of 4"
has "trime-train --memory ext: to step 3" "trime-ext.rlm: TRIME, step 3, loss"
run "trime-train --memory ext --resume" "$R" trime-train $TT --memory ext --drop-local 0.5 --steps 5 --resume \
    -o "$out/trime-ext.rlm"
has "trime-train --resume: from step 3" "\) from step 3; [0-9]+ training tokens"
has "trime-train --resume: to step 5" "trime-ext.rlm: TRIME, step 5, loss"
run "trime-train --memory long --sim dot --ce-warmup" "$R" trime-train $TT --memory long --sim dot --trime-temp 2 \
    --ce-warmup 2 --steps 4 -o "$out/trime-long.rlm"
has "trime-train --sim dot: says how to read it" "retrlm eval --trime dot --trime-temp 2 --trime-cache 192"
run "trime-train --memory long --valid" "$R" trime-train $TT --memory long --steps 2 --valid "$out/test.txt" -o "$out/trime-long2.rlm"
has "trime-train --memory long --valid: with the long memory" "valid [0-9.]+ bits per byte with its local and long memory"
run "eval --trime --trime-cache" "$R" eval -m "$out/trime-long.rlm" $T --text "$out/test.txt" --trime dot --trime-temp 2 \
    --trime-cache 192
has "eval --trime-cache: says so" "bits per byte: .*mode none \+ TRIME's local and long memory"
usage "eval --trime-cache without --trime" "$R" eval -m "$out/trime.rlm" $T --text "$out/test.txt" --trime-cache 64
run "knnlm of a TRIME model" "$R" knnlm -m "$out/trime-ext.rlm" $T --text "$out/train.txt" -o "$out/trime-keys.rlm"
run "eval --trime --knnlm-keys (TrimeLM_ext)" "$R" eval -m "$out/trime-ext.rlm" $T --text "$out/test.txt" --trime l2 \
    --knnlm-keys "$out/trime-keys.rlm" --lambda 0.25 --knn-temp 2
has "eval --trime --knnlm-keys: says both" "bits per byte: .*mode none \+ TRIME's local memory \+ kNN-LM"
usage "trime-train --memory unknown" "$R" trime-train $TT --memory global -o "$out/x.rlm"
usage "trime-train --sim unknown" "$R" trime-train $TT --sim cosine -o "$out/x.rlm"
usage "trime-train --drop-local without ext" "$R" trime-train $TT --drop-local 0.5 -o "$out/x.rlm"
usage "trime-train --eval-every" "$R" trime-train $TT --eval-every 2 -o "$out/x.rlm"
usage "lm-train --memory (trime-train's)" "$R" lm-train $TT --memory ext -o "$out/x.rlm"
usage "eval --trime unknown" "$R" eval -m "$out/trime.rlm" $T --text "$out/test.txt" --trime cosine
usage "eval --trime-temp without --trime" "$R" eval -m "$out/trime.rlm" $T --text "$out/test.txt" --trime-temp 2

# NPM (strategy 4): npm-train (and its parametric baseline, and --resume), npm-fill from a corpus
# (its phrase index saved) and from the saved index: the same phrase and probability
NT="$T --train $out/train.txt --dim 16 --layers 1 --heads 2 --ctx 32 --batch 4"
keep "npm-train" "$out/npm-train.txt" "$R" npm-train $NT --steps 3 -o "$out/npm.rlm"
has "npm-train: to step 3" "npm.rlm: NPM, step 3, loss [0-9.]+"
run "npm-train --resume" "$R" npm-train $NT --steps 5 --resume -o "$out/npm.rlm"
has "npm-train --resume: from step 3" "\) from step 3; [0-9]+ training tokens"
run "npm-train --parametric" "$R" npm-train $NT --steps 2 --parametric -o "$out/npm-p.rlm"
has "npm-train --parametric: the baseline" "npm-p.rlm: parametric masked LM, step 2, loss [0-9.]+"
keep "npm-train --no-token-loss" "$out/npm-nt.txt" "$R" npm-train $NT --steps 3 --no-token-loss -o "$out/npm-nt.rlm"
has "npm-train --no-token-loss: the span terms alone" "npm-nt.rlm: NPM, step 3, loss [0-9.]+"
# the same draws without the token term: a lower loss at step 3 (the term adds a positive amount)
if [ "$(sed 's/.*loss //' "$out/npm-train.txt")" != "" ] &&
    awk -v a="$(sed 's/.*loss //' "$out/npm-train.txt")" -v b="$(sed 's/.*loss //' "$out/npm-nt.txt")" \
        'BEGIN { exit !(b + 0 < a + 0) }'; then ok "npm-train --no-token-loss: a lower loss than with the token term"
else no "npm-train --no-token-loss: loss $(cat "$out/npm-nt.txt") against $(cat "$out/npm-train.txt")"; fi
usage "npm-train --parametric --no-token-loss" "$R" npm-train $NT --steps 2 --parametric --no-token-loss -o "$out/x.rlm"
keep "npm-fill --corpus" "$out/npm-fill.txt" "$R" npm-fill -m "$out/npm.rlm" $T --corpus "$out/test.txt" --index-out \
    "$out/npm-index.rlm" --span 2 "Then Rabshakeh <mask> and cried"
has "npm-fill: a phrase and its probability" "^[^	]+	[0-9.]+$"
keep "npm-fill --index" "$out/npm-fill2.txt" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/npm-index.rlm" --span 2 \
    "Then Rabshakeh <mask> and cried"
same "npm-fill --index: the same phrase as from the corpus" "$out/npm-fill.txt" "$out/npm-fill2.txt"
run "npm-fill --bm25-docs" "$R" npm-fill -m "$out/npm.rlm" $T --corpus "$out/test.txt" --bm25-docs 2 --span 2 \
    "Then Rabshakeh <mask> and cried"
has "npm-fill --bm25-docs: BM25's 2 best lines indexed" \
    "BM25's 2 best lines of [0-9]+: [0-9]+ bytes to index"
has "npm-fill --bm25-docs: a phrase and its probability" "^[^	]+	[0-9.]+$"
usage "npm-fill --bm25-docs with --index" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/npm-index.rlm" --bm25-docs 2 \
    "a <mask> b"
bad "npm-fill --bm25-docs: no line shares a word" "$R" npm-fill -m "$out/npm.rlm" $T --corpus "$out/test.txt" \
    --bm25-docs 2 "qqqzzz <mask> xxyyzz"
usage "npm-fill without <mask>" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/npm-index.rlm" Then Rabshakeh
usage "npm-fill with two <mask>" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/npm-index.rlm" "<mask> and <mask>"
usage "npm-fill with --corpus and --index" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/npm-index.rlm" \
    --corpus "$out/test.txt" "a <mask>"
bad "npm-fill with a causal LM" "$R" npm-fill $M $T --index "$out/npm-index.rlm" "a <mask> b"
bad "npm-fill: keys are no phrase index" "$R" npm-fill -m "$out/npm.rlm" $T --index "$out/trime-keys.rlm" "a <mask> b"
usage "npm-train --valid" "$R" npm-train $NT --valid "$out/test.txt" -o "$out/x.rlm"
usage "eval --trime with a RETRO model" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm" --trime l2
usage "trime-train --memory long: a text shorter than a batch" "$R" trime-train $T --train "$out/prompt.txt" --memory long \
    --dim 32 --layers 1 --heads 2 --ctx 64 --batch 4 -o "$out/x.rlm"

# bad input: exit 1 or 2 with a message
bad "missing file" "$R" tokenize $T "$out/no-such-file.txt"
bad "missing tokenizer" "$R" tokenize -t "$out/no-such.rlm" "$out/test.txt"
bad "unknown flag" "$R" eval --frobnicate
bad "unknown command" "$R" frobnicate
bad "flag without its value" "$R" search -d
bad "not a number" "$R" lm-train $T --train "$out/train.txt" -o "$out/x.rlm" --steps many
bad "bad mode" "$R" eval $M $T --text "$out/test.txt" --mode sideways
bad "model file as a tokenizer" "$R" tokenize -t "$out/lm.rlm" "$out/test.txt"
head -c 3000 "$out/lm.rlm" >"$out/cut.rlm"
bad "truncated model" "$R" eval -m "$out/cut.rlm" $T --text "$out/test.txt"
cp "$out/lm.rlm" "$out/flip.rlm"
printf 'X' | dd of="$out/flip.rlm" bs=1 seek=2000 conv=notrunc 2>/dev/null
bad "corrupt model" "$R" generate -m "$out/flip.rlm" $T --prompt "And"
head -c 5000 /dev/urandom >"$out/noise.rlm" 2>/dev/null || head -c 5000 "$data" >"$out/noise.rlm"
bad "garbage datastore" "$R" search -d "$out/noise.rlm" king
cp "$out/keys.rlm" "$out/keys-flip.rlm"
printf 'X' | dd of="$out/keys-flip.rlm" bs=1 seek=100000 conv=notrunc 2>/dev/null
bad "corrupt keys" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys-flip.rlm"
bad "empty text" "$R" eval $M $T --text /dev/null
bad "empty prompt" "$R" generate $M $T --prompt ""
cp "$out/enc.rlm" "$out/enc-flip.rlm"
printf 'X' | dd of="$out/enc-flip.rlm" bs=1 seek=1000 conv=notrunc 2>/dev/null
bad "corrupt encoder to --init" "$R" encoder-train $T --pairs "$out/pairs.tsv" --init "$out/enc-flip.rlm" -o "$out/x.rlm"
bad "--retrieve dense without --encoder" "$R" search -d "$out/ds.rlm" --retrieve dense king
bad "corrupt encoder" "$R" search -d "$out/ds.rlm" $T --encoder "$out/enc-flip.rlm" king
bad "LM file as an encoder" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" --mode incontext --encoder "$out/lm.rlm"
cut -f 1 "$out/pairs.tsv" >"$out/pairs-1col.tsv"
bad "pairs with one column" "$R" encoder-train $T --pairs "$out/pairs-1col.tsv" -o "$out/x.rlm"
"$R" tokenizer-train --vocab 400 -o "$out/tok400.rlm" "$out/train.txt" >/dev/null 2>&1
bad "encoder smaller than the tokenizer" "$R" search -d "$out/ds.rlm" -t "$out/tok400.rlm" $E king
bad "--dense without --encoder" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" --mode incontext $D
bad "embed without a tokenizer" "$R" embed -d "$out/ds.rlm" $E -o "$out/x.rlm"
bad "embed without an encoder" "$R" embed $T -d "$out/ds.rlm" -o "$out/x.rlm"
bad "embed --nprobe without --nlist" "$R" embed $T -d "$out/ds.rlm" $E -o "$out/x.rlm" --nprobe 4
usage "embed: more lists than units" "$R" embed $T -d "$out/ds-files.rlm" $E -o "$out/x.rlm" --nlist 100000
"$R" embed $T -d "$out/ds-files.rlm" $E -o "$out/dense-files.rlm" >/dev/null 2>&1
bad "--dense of another datastore" "$R" search -d "$out/ds.rlm" $T $E --dense "$out/dense-files.rlm" king
"$R" encoder-train $T -d "$out/ds-files.rlm" --dim 8 --layers 1 --heads 2 --steps 1 -o "$out/enc8.rlm" >/dev/null 2>&1
bad "--dense of another encoder width" "$R" generate $M $T -d "$out/ds.rlm" --encoder "$out/enc8.rlm" $D --prompt "And"
bad "a datastore as --dense" "$R" search -d "$out/ds.rlm" $T $E --dense "$out/ds.rlm" king
head -c 3000 "$out/dense.rlm" >"$out/dense-cut.rlm"
bad "truncated --dense" "$R" search -d "$out/ds.rlm" $T $E --dense "$out/dense-cut.rlm" king
bad "context too small" "$R" eval $M $T --text "$out/test.txt" -d "$out/ds.rlm" --mode incontext --unit-tokens 96
x="$T -d $out/ds.rlm -o $out/x.rlm"
bad "--momentum without --moco" "$R" encoder-train $x --momentum 0.9
bad "--moco 0 with --momentum" "$R" encoder-train $x --moco 0 --momentum 0.9
bad "--momentum above 1" "$R" encoder-train $x --moco 16 --momentum 1.5
bad "--moco negative" "$R" encoder-train $x --moco -5
bad "--moco with --separate" "$R" encoder-train $x --moco 16 --separate
bad "--moco with --pairs" "$R" encoder-train $T --pairs "$out/pairs.tsv" --moco 16 -o "$out/x.rlm"
"$R" encoder-train $T --pairs "$out/pairs.tsv" --dim 8 --layers 1 --heads 2 --steps 1 --separate -o "$out/enc-sep.rlm" >/dev/null 2>&1
bad "--moco --init of a separate encoder" "$R" encoder-train $x --moco 16 --init "$out/enc-sep.rlm"
has "--moco --init of a separate encoder: the library's message" "needs a shared encoder"
x="$S2 --train $out/test.txt -o $out/x.rlm"
bad "lsr-train: k above the encoder's batch" "$R" lsr-train $x $LSR --k 100
has "lsr-train: k above the encoder's batch: the library's message" "k 100 must be in \[1, 64\]"
bad "lsr-train without --encoder" "$R" lsr-train $x
bad "lsr-train without -m" "$R" lsr-train $T -d "$out/ds.rlm" --train "$out/test.txt" $E -o "$out/x.rlm"
bad "lsr-train: no training text" "$R" lsr-train $S2 $E --train "$out/no-such.txt" -o "$out/x.rlm"
bad "lsr-train: empty training text" "$R" lsr-train $S2 $E --train /dev/null -o "$out/x.rlm"
bad "lsr-train: bad --steps" "$R" lsr-train $x $LSR --steps 0
bad "lsr-train: bad --temperature" "$R" lsr-train $x $LSR --temperature zero
bad "lsr-train: --query longer than --context" "$R" lsr-train $x $LSR --query 20
usage "lsr-train: x and y longer than the LM's context" "$R" lsr-train $x $E $D --context 64 --continuation 64
bad "lsr-train: a datastore as --dense" "$R" lsr-train $x $E --dense "$out/ds.rlm" --context 16 --continuation 16
has "lsr-train: a datastore as --dense: says so" "holds a 'datastore', expected a 'index'"
x="$S2 --train $out/train.txt -o $out/x.rlm"
bad "retrofit: --k above 16" "$R" retrofit $x --k 17
bad "retrofit: bad --lr" "$R" retrofit $x --lr -1
bad "retrofit without -d" "$R" retrofit $M $T --train "$out/train.txt" -o "$out/x.rlm"
bad "retrofit: --query fills --window" "$R" retrofit $x --window 32 --query 32
bad "retrofit: units fill the LM's context" "$R" retrofit $x --unit-tokens 96
has "retrofit: units fill the LM's context: the library's message" "incontext_train: 1 unit\(s\) of 96 tokens"
bad "retrofit --retrieve dense without --encoder" "$R" retrofit $x --retrieve dense
bad "retrofit: an encoder as the LM" "$R" retrofit -m "$out/enc.rlm" $T -d "$out/ds.rlm" --train "$out/train.txt" -o "$out/x.rlm"
x="$T -d $out/ds-retro.rlm --train $out/train.txt -o $out/x.rlm"
usage "retro-train: --chunk does not divide --ctx" "$R" retro-train $x --ctx 64 --chunk 20
usage "retro-train --retrofit: --chunk does not divide the LM's context" "$R" retro-train $x --retrofit "$out/lm.rlm" --chunk 20
usage "retro-train --retrofit of a RETRO model" "$R" retro-train $x --retrofit "$out/retro.rlm"
usage "retro-train --retrofit with another --dim" "$R" retro-train $x --retrofit "$out/lm.rlm" --dim 64
usage "retro-train: --retro-start past the layers" "$R" retro-train $x --layers 2 --retro-start 2
usage "retro-train: --copy-share above 1" "$R" retro-train $x --copy-share 1.5
usage "retro-train without -d" "$R" retro-train $T --train "$out/train.txt" -o "$out/x.rlm"
usage "retro-train: --retrieve dense without --encoder" "$R" retro-train $x --retrieve dense
cp "$out/lm.rlm" "$out/lm-copy.rlm"
bad "retro-train: --neighbours of another kind" "$R" retro-train $x --neighbours "$out/lm-copy.rlm" --steps 1
has "retro-train: --neighbours of another kind: says so" "is not a neighbours file"
same "retro-train: --neighbours of another kind: left as it was" "$out/lm.rlm" "$out/lm-copy.rlm"
bad "retro-train: a text shorter than a window" "$R" retro-train $T -d "$out/ds-retro.rlm" --train "$out/prompt.txt" \
    --ctx 32 --chunk 16 -o "$out/x.rlm"
usage "eval a RETRO model without -d" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt"
usage "eval a RETRO model with --mode" "$R" eval -m "$out/retro.rlm" $T --text "$out/test.txt" -d "$out/ds-retro.rlm" \
    --mode incontext
usage "generate with a RETRO model without -d" "$R" generate -m "$out/retro.rlm" $T --prompt "And"


# nothing a user does breaks it: each of these exits 2 with a message before any work
usage "a directory as --gpt2's file" "$R" tokenize --gpt2 "$out" "$out" "$out/test.txt"
usage "a directory as -t" "$R" eval $M -t "$out" --text "$out/test.txt"
usage "a directory as input" "$R" tokenize $T "$out"
usage "a directory as -o" "$R" tokenizer-train --vocab 300 -o "$out" "$out/train.txt"
: >"$out/empty.txt"
usage "datastore: an empty input file" "$R" datastore $T -o "$out/x.rlm" "$out/empty.txt"
usage "datastore --tsv: an empty file" "$R" datastore $T -o "$out/x.rlm" --tsv "$out/empty.txt"
usage "lm-train: an empty --valid" "$R" lm-train $T --train "$out/train.txt" --valid "$out/empty.txt" -o "$out/x.rlm"
usage "lm-train: --steps 0" "$R" lm-train $T --train "$out/train.txt" --steps 0 -o "$out/x.rlm"
usage "lm-train --resume: checkpoint past --steps" "$R" lm-train $T --train "$out/train.txt" --steps 10 --resume -o "$out/lm.rlm"
cp "$out/lm.rlm" "$out/lm-before.rlm"
run "lm-train --resume: at --steps already" "$R" lm-train $T --train "$out/train.txt" --steps 25 --resume -o "$out/lm.rlm"
has "lm-train --resume: at --steps already: says nothing to train" "at step 25 already: nothing to train"
same "lm-train --resume: at --steps already: the checkpoint untouched" "$out/lm-before.rlm" "$out/lm.rlm"
"$R" tokenizer-train --vocab 300 -o "$out/tok-other.rlm" "$out/test.txt" >/dev/null 2>&1
usage "generate with another tokenizer of the same size" "$R" generate $M -t "$out/tok-other.rlm" --prompt "And"
usage "eval with another tokenizer of the same size" "$R" eval $M -t "$out/tok-other.rlm" --text "$out/test.txt"
usage "encoder-train --batch 1" "$R" encoder-train $T -d "$out/ds.rlm" --batch 1 -o "$out/x.rlm"
usage "eval --lambda without kNN-LM" "$R" eval $M $T --text "$out/test.txt" --lambda 0.5
usage "eval --knn-nprobe without kNN-LM" "$R" eval $M $T --text "$out/test.txt" --knn-nprobe 4
usage "knnlm --sq8-rerank without --sq8" "$R" knnlm $M $T --text "$out/train.txt" -o "$out/x.rlm" --sq8-rerank 4
usage "eval --sq8-rerank without --sq8" "$R" eval $M $T --text "$out/test.txt" --knnlm-build "$out/train.txt" --sq8-rerank 4
usage "eval --nlist without --knnlm-build" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys.rlm" --nlist 4
usage "eval --knnlm-build --nlist above its positions" "$R" eval $M $T --text "$out/test.txt" --knnlm-build "$out/test.txt" \
    --nlist 100000
head -n 2 "$out/pairs.tsv" | awk -F'\t' '{ print $1 "\tthe same positive" }' >"$out/pairs-same.tsv"
usage "encoder-train --pairs: no negatives at all" "$R" encoder-train $T --pairs "$out/pairs-same.tsv" -o "$out/x.rlm"
usage "datastore --col without --tsv" "$R" datastore $T -o "$out/x.rlm" --col 2 "$out/train.txt"
usage "embed --nlist 1000000" "$R" embed $T -d "$out/ds.rlm" $E -o "$out/x.rlm" --nlist 1000000
usage "lsr-train --context 200" "$R" lsr-train $S2 $E --train "$out/test.txt" --context 200 -o "$out/x.rlm"
usage "--gpt2 with one file, then -o" "$R" tokenizer-train --gpt2 "$out/train.txt" -o "$out/x.rlm"
usage "-o followed by an option" "$R" tokenizer-train --vocab 300 -o --vocab "$out/train.txt"
usage "--knnlm-keys given a text" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/train.txt"
usage "--knnlm-build given a keys file" "$R" eval $M $T --text "$out/test.txt" --knnlm-build "$out/keys.rlm"
cp "$out/keys.rlm" "$out/keys-magic.rlm"
printf 'X' | dd of="$out/keys-magic.rlm" bs=1 seek=1 conv=notrunc 2>/dev/null
usage "--knnlm-keys: a flipped byte in the magic" "$R" eval $M $T --text "$out/test.txt" --knnlm-keys "$out/keys-magic.rlm"
usage "knnlm --text given a keys file" "$R" knnlm $M $T --text "$out/keys.rlm" -o "$out/x.rlm"
cp "$out/tok.rlm" "$out/tok-before.rlm"
usage "lm-train -o the tokenizer" "$R" lm-train $T --train "$out/train.txt" --steps 1 -o "$out/tok.rlm"
same "lm-train -o the tokenizer: left as it was" "$out/tok-before.rlm" "$out/tok.rlm"
cp "$out/train.txt" "$out/x-text.txt"
usage "tokenizer-train -o a text file" "$R" tokenizer-train --vocab 300 -o "$out/x-text.txt" "$out/train.txt"
run "tokenizer-train -o a text file --force" "$R" tokenizer-train --vocab 300 -o "$out/x-text.txt" --force "$out/train.txt"
if [ -p "$out/fifo" ]; then
    usage "-o a FIFO" "$R" tokenizer-train --vocab 300 -o "$out/fifo" "$out/train.txt"
    if [ -p "$out/fifo" ]; then ok "-o a FIFO: still a FIFO"; else no "-o a FIFO: replaced"; fi
fi
: >"$out/tok-stale.rlm.tmp-999999999"
: >"$out/tok-stale.rlm.tmp-$$"
run "a save after one killed half-way" "$R" tokenizer-train --vocab 300 -o "$out/tok-stale.rlm" "$out/train.txt"
if [ ! -e "$out/tok-stale.rlm.tmp-999999999" ] && [ -e "$out/tok-stale.rlm.tmp-$$" ]; then
    ok "a save removes a dead process's temporary file, not a live one's"
else no "a save removes a dead process's temporary file, not a live one's"; fi
rm -f "$out/tok-stale.rlm.tmp-$$"
if [ -w /dev/full ]; then # standard output that cannot be written: exit 1 with a message
    for c in "tokenize $T $out/test.txt" "search -d $out/ds.rlm king" "eval $M $T --text $out/test.txt" \
        "generate $M $T --prompt And --tokens 4"; do
        "$R" $c >/dev/full 2>"$out/log"
        rc=$?
        if [ $rc = 1 ] && grep -q "^retrlm: cannot write the output" "$out/log"; then ok "${c%% *} >/dev/full: exit 1"
        else no "${c%% *} >/dev/full (exit $rc)"; fi
    done
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
