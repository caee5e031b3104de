#!/bin/sh
# bench/dispatch.sh [ROUNDS] - runs the five builds of bench/dispatch.c (`make bench-dispatch`
# builds them into build/bench) in turn, ROUNDS times (default 5), so that the host's drift falls
# on every build alike instead of on whichever ran last; prints each build's median (GFLOP/s, or queries/s for the index's scans) a
# shape, then the two ratios the issue asks about (the plain -O2 build against -march=native, on
# the widest path and on the AVX2 one), as a table and as name=value lines.
set -e
rounds=${1:-5}
b=build/bench
for x in plain nodispatch native haswell; do
    [ -x "$b/dispatch-$x" ] || { echo "missing $b/dispatch-$x: run make bench-dispatch" >&2; exit 1; }
done
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
"$b/dispatch-plain" plain | grep -v '^plain\|^dispatch\.'   # the machine's lines, once
echo "rounds=$rounds (each round runs the five builds one after the other)"
i=0
while [ "$i" -lt "$rounds" ]; do
    "$b/dispatch-plain" plain
    "$b/dispatch-nodispatch" no-dispatch
    "$b/dispatch-native" native
    RETRLM_CPU=avx2 "$b/dispatch-plain" plain-avx2
    "$b/dispatch-haswell" native-haswell
    i=$((i + 1))
done | grep '^dispatch\.' >"$raw"
awk -F'[.=]' '
    # dispatch.LABEL.SHAPE_gflops=VALUE (VALUE has a decimal point: fields 4 and 5)
    { key = $2 SUBSEP $3; n[key]++; v[key, n[key]] = $4 "." $5 + 0
      if (!($3 in seen)) { seen[$3] = 1; shapes[++ns] = $3 } }
    function median(key,   m, i, j, t, a) {
        m = n[key]
        for (i = 1; i <= m; i++) a[i] = v[key, i]
        for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
        split("plain no-dispatch native plain-avx2 native-haswell", lab, " ")
        print "\nmedians, 1 thread: GFLOP/s (products), queries/s (scan_*: the index searched one query at a time)"
        print "| shape | plain -O2 | -O2 -DRETRLM_NO_DISPATCH | -O3 -march=native | plain -O2, RETRLM_CPU=avx2 | -O3 -march=haswell | plain / native | plain avx2 / haswell |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|"
        for (s = 1; s <= ns; s++) {
            sh = shapes[s]; unit = sh; sub(/_(gflops|qps)$/, "", sh); sub(/^.*_/, "", unit)
            line = "| " sh
            for (l = 1; l <= 5; l++) { med[l] = median(lab[l] SUBSEP shapes[s]); line = line sprintf(" | %.1f", med[l]) }
            r1 = med[3] > 0 ? med[1] / med[3] : 0; r2 = med[5] > 0 ? med[4] / med[5] : 0
            print line sprintf(" | %.2f | %.2f |", r1, r2)
            for (l = 1; l <= 5; l++) out[++no] = sprintf("dispatch.%s.%s_median_%s=%.1f", lab[l], sh, unit, med[l])
            out[++no] = sprintf("dispatch.plain_vs_native.%s=%.2f", sh, r1)
            out[++no] = sprintf("dispatch.plain_avx2_vs_haswell.%s=%.2f", sh, r2)
        }
        print ""
        for (i = 1; i <= no; i++) print out[i]
    }' "$raw"
