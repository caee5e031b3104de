#!/bin/sh
# tests/run.sh - builds and runs every tests/test_*.c in each cell of the build matrix, plus
# the compile checks (C++, two translation units, RETRLM_STATIC) and the fuzz corpus replay.
# Each cell compiles the implementation once (tests/impl.c -> build/tests/CELL/impl.o) and
# links it into every test, except a test that defines RETRLM_IMPLEMENTATION itself because it
# calls private (static) retrlm__ functions: that one is compiled alone, implementation and all.
# Skipped cases (data not found, no OpenMP) are listed with their reasons before the last line,
# "N passed, M failed[, K skipped]"; the exit status is nonzero on any failure.
#   sh tests/run.sh            the full matrix: {gcc, clang} x {serial, -fopenmp}
#   sh tests/run.sh quick      gcc serial only
#   sh tests/run.sh sanitize   clang -fsanitize=address,undefined (serial and -fopenmp)
#   sh tests/run.sh docs       the manual's code alone: retrlm.h's QUICK START, README.md's tour
# Environment: STB_INC (default /usr/include/stb), RETRLM_DATA (default ../shared/data),
# TESTS (space-separated names such as "core io", default all).
set -u
mode=${1:-full}
STB_INC=${STB_INC:-/usr/include/stb}
out=build/tests
mkdir -p "$out"
STRICT="-std=c99 -Wall -Wextra -pedantic -Werror -Wshadow -Wstrict-prototypes"
passed=0 failed=0 skipped=0
skips="$out/skips.txt" # one line per skipped case: PROGRAM<TAB>CASE: WHY
: >"$skips"

if [ -n "${TESTS:-}" ]; then
    list=""
    for t in $TESTS; do list="$list tests/test_$t.c"; done
else
    list=$(ls tests/test_*.c)
fi

fail() { echo "FAIL $1"; failed=$((failed + 1)); }
pass() { passed=$((passed + 1)); }

# run_bin NAME BINARY [ARGS...]: runs it; adds its "N passed, M failed[, K skipped]" to the totals
run_bin() {
    rname=$1 rbin=$2
    shift 2
    log="$out/$rname.log"
    "$rbin" "$@" >"$log" 2>&1
    rc=$?
    set -- "$rname"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        cat "$log" | tail -n 20
        fail "$1 (exit $rc, no summary line)"
        return
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    grep '^skip ' "$log" | sed "s/^skip /$1	/" >>"$skips"
    if [ "$f" != 0 ] || [ "$rc" != 0 ]; then
        grep -v '^skip ' "$log" | tail -n 30
        [ "$f" = 0 ] && fail "$1 (exit $rc)"
        echo "  $1: $line"
    else
        echo "  $1: $line"
    fi
}

# cell NAME CC FLAGS...: every test in one build configuration
cell() {
    name=$1 cc=$2
    shift 2
    if ! command -v "$cc" >/dev/null 2>&1; then fail "$name: $cc not installed (make deps)"; return; fi
    echo "== $name: $cc $*"
    dir="$out/$name"
    mkdir -p "$dir"
    impl="" # "", the object, or "none" when it does not compile; made when a test first needs it
    for src in $list; do
        t=$(basename "$src" .c)
        bin="$dir/$t"
        objs=""
        if ! grep -q '^#define RETRLM_IMPLEMENTATION' "$src"; then
            if [ -z "$impl" ]; then
                if $cc $STRICT "$@" -I. -I"$STB_INC" -c tests/impl.c -o "$dir/impl.o" 2>"$dir/impl.err"; then
                    impl="$dir/impl.o"
                else
                    head -n 30 "$dir/impl.err"
                    fail "$name: the implementation (tests/impl.c) does not compile"
                    impl=none
                fi
            fi
            if [ "$impl" = none ]; then fail "$name-$t: not built (no implementation object)"; continue; fi
            objs=$impl
        fi
        if $cc $STRICT "$@" -I. -I"$STB_INC" -Itests "$src" $objs -lm -o "$bin" 2>"$bin.err"; then
            OMP_NUM_THREADS=2 run_bin "$name-$t" "$bin"
        else
            head -n 30 "$bin.err"
            fail "$name-$t: does not compile"
        fi
    done
}

# the manual's code, compiled as written: the QUICK START program in retrlm.h's opening comment
# (built and run), and README.md's API tour, which must be the lines of tests/tour.c between
# "// tour: begin" and "// tour: end" (built and linked, never run: it reads files not here)
doc_checks() {
    cc=$1
    echo "== the manual's code ($cc)"
    sed -n '/^   QUICK START/,/^$/p' retrlm.h | sed -e '1d' -e '/^$/d' -e 's/^     //' >"$out/quickstart.c"
    if [ ! -s "$out/quickstart.c" ]; then fail "retrlm.h: no QUICK START program in the opening comment"
    elif $cc $STRICT -O1 -I. -I"$STB_INC" "$out/quickstart.c" -lm -o "$out/quickstart" 2>"$out/quickstart.err"; then
        if "$out/quickstart" >"$out/quickstart.log" 2>&1; then
            pass; echo "  retrlm.h's QUICK START builds and runs: $(head -n 1 "$out/quickstart.log")"
        else tail -n 20 "$out/quickstart.log"; fail "retrlm.h's QUICK START fails when run ($out/quickstart.c)"; fi
    else head -n 30 "$out/quickstart.err"; fail "retrlm.h's QUICK START does not compile ($out/quickstart.c)"; fi
    sed -n '/^\/\/ tour: begin$/,/^\/\/ tour: end$/p' tests/tour.c | sed -e '1d' -e '$d' >"$out/tour-test.txt"
    awk '/^## API tour$/ { t = 1; next } t && /^```c$/ { c = 1; next } c && /^```$/ { exit } c' README.md \
        >"$out/tour-readme.txt"
    if [ ! -s "$out/tour-test.txt" ] || [ ! -s "$out/tour-readme.txt" ]; then
        fail "the API tour: no code block under '## API tour' in README.md, or no '// tour: begin' / '// tour: end' in tests/tour.c"
    elif cmp -s "$out/tour-readme.txt" "$out/tour-test.txt"; then pass; echo "  README.md's API tour is tests/tour.c's"
    else
        diff "$out/tour-readme.txt" "$out/tour-test.txt" | head -n 20
        fail "README.md's API tour differs from tests/tour.c's lines between '// tour: begin' and '// tour: end' (< README, > tests/tour.c)"
    fi
    if $cc $STRICT -O1 -I. -I"$STB_INC" tests/tour.c -lm -o "$out/tour" 2>"$out/tour.err"; then
        pass; echo "  tests/tour.c (README.md's API tour) builds and links"
    else head -n 30 "$out/tour.err"; fail "tests/tour.c (README.md's API tour) does not compile"; fi
}

# compile checks: the header as C++, two translation units, RETRLM_STATIC, the manual's code
compile_checks() {
    cc=$1
    echo "== compile checks ($cc)"
    if command -v g++ >/dev/null 2>&1; then
        if g++ -std=c++11 -Wall -Wextra -pedantic -Werror -O1 -I. -I"$STB_INC" -Itests \
            -x c++ tests/test_core.c -o "$out/cpp-core" 2>"$out/cpp.err"; then
            run_bin cpp-core "$out/cpp-core"
        else head -n 30 "$out/cpp.err"; fail "g++: header does not compile as C++"; fi
    else fail "g++ not installed"; fi
    # the matmul micro-kernels a plain x86-64 build chooses between at run time: SSE2 (dispatch
    # off), AVX2+FMA (an emulated Haswell, when qemu-user is there); the suite runs the widest
    if [ "$(uname -m)" = x86_64 ]; then
        if $cc $STRICT -O2 -DRETRLM_NO_DISPATCH -I. -I"$STB_INC" -Itests tests/test_kernels.c tests/impl.c -lm \
            -o "$out/kernels-sse2" 2>"$out/kernels.err" &&
            $cc $STRICT -O2 -I. -I"$STB_INC" -Itests tests/test_kernels.c tests/impl.c -lm -o "$out/kernels-plain" 2>>"$out/kernels.err"; then
            run_bin kernels-sse2 "$out/kernels-sse2"
            if command -v qemu-x86_64 >/dev/null 2>&1; then run_bin kernels-avx2 qemu-x86_64 -cpu Haswell "$out/kernels-plain"
            else echo "skip kernels-avx2: qemu-x86_64 not installed (apt-get install qemu-user)"; skipped=$((skipped + 1)); fi
        else head -n 30 "$out/kernels.err"; fail "tests/test_kernels.c does not build with and without dispatch"; fi
    fi
    if $cc $STRICT -O1 -I. -I"$STB_INC" -Itests tests/compile/two_tu_main.c \
        tests/compile/two_tu_impl.c -lm -o "$out/two-tu" 2>"$out/two-tu.err"; then
        run_bin two-tu "$out/two-tu"
    else head -n 30 "$out/two-tu.err"; fail "two translation units do not link"; fi
    if $cc $STRICT -O1 -I. -I"$STB_INC" -Itests tests/compile/static.c -lm -o "$out/static" \
        2>"$out/static.err"; then
        run_bin static "$out/static"
    else head -n 30 "$out/static.err"; fail "RETRLM_STATIC does not compile cleanly"; fi
    # every example builds with the strict flags; the quick one also runs
    for src in examples/*.c; do
        ex=$(basename "$src" .c)
        if $cc $STRICT -O2 -I. -I"$STB_INC" "$src" -lm -o "$out/example-$ex" 2>"$out/example-$ex.err"; then
            if [ "$ex" = first ]; then
                # it reads the repository's excerpt and writes first.rlm in build/tests
                if (data="$PWD/examples/data/kjv-excerpt.tsv" && cd "$out" && ./example-first "$data" >/dev/null 2>&1); then
                    pass; echo "  examples/first.c builds and runs"
                else fail "examples/first.c fails when run"; fi
            else pass; echo "  examples/$ex.c builds"; fi
        else head -n 30 "$out/example-$ex.err"; fail "examples/$ex.c does not compile"; fi
    done
    doc_checks "$cc"
    # -O3 inlines across modules and finds warnings (maybe-uninitialized) -O2 does not
    for opt in "-O3" "-O3 -march=native -fopenmp"; do
        if printf '#define RETRLM_IMPLEMENTATION\n#include "retrlm.h"\n' | $cc $STRICT $opt -I. -I"$STB_INC" \
            -x c -c - -o /dev/null 2>"$out/o3.err"; then pass; echo "  $cc $opt: implementation compiles clean"
        else head -n 30 "$out/o3.err"; fail "$cc $opt: warnings in the implementation"; fi
    done
    if $cc -std=c99 -Wall -Wextra -pedantic -Werror -O1 -Iretrlm_impl -I. -I"$STB_INC" -Itests \
        tests/test_core.c -lm -o "$out/dev-core" 2>"$out/dev.err"; then
        run_bin dev-core "$out/dev-core"
    else head -n 30 "$out/dev.err"; fail "dev mode (-Iretrlm_impl) does not compile"; fi
}

# replays every fuzz/corpus/<target>/ file through fuzz/<target>.c with a plain main
fuzz_replay() {
    cc=$1
    shift
    for src in fuzz/fuzz_*.c; do
        [ -f "$src" ] || continue
        t=$(basename "$src" .c)
        t=${t#fuzz_}
        echo "== fuzz corpus replay: $t"
        if $cc $STRICT "$@" -DRETRLM_FUZZ_REPLAY -I. -I"$STB_INC" "$src" -lm -o "$out/replay-$t" \
            2>"$out/replay-$t.err"; then
            run_bin "replay-$t" "$out/replay-$t" "fuzz/corpus/$t"
        else head -n 30 "$out/replay-$t.err"; fail "fuzz/$t: replay driver does not compile"; fi
    done
}

case $mode in
quick)
    cell gcc gcc -O2
    run_bin cli sh tests/test_cli.sh
    run_bin serve sh tests/test_serve.sh
    ;;
sanitize)
    SAN="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
    cell asan clang $SAN
    cell asan-omp clang $SAN -fopenmp
    fuzz_replay clang $SAN
    # the server built with the sanitizers, under the whole server test (leaks fail its exit 0)
    if clang $STRICT $SAN -I. -I"$STB_INC" examples/serve.c -lm -lpthread -o "$out/serve-asan" 2>"$out/serve-asan.err"; then
        export SERVE_BIN="$out/serve-asan"
        run_bin serve-asan sh tests/test_serve.sh
        unset SERVE_BIN
    else head -n 30 "$out/serve-asan.err"; fail "examples/serve.c does not build with the sanitizers"; fi
    # and with ThreadSanitizer: the I/O thread and the workers hand connections to each other
    # (a report makes the server exit 66, which the test's "exit 0" checks catch)
    if clang $STRICT -O1 -g -fsanitize=thread -I. -I"$STB_INC" examples/serve.c -lm -lpthread -o "$out/serve-tsan" \
        2>"$out/serve-tsan.err"; then
        export SERVE_BIN="$out/serve-tsan"
        run_bin serve-tsan sh tests/test_serve.sh
        unset SERVE_BIN
    else head -n 30 "$out/serve-tsan.err"; fail "examples/serve.c does not build with ThreadSanitizer"; fi
    ;;
full)
    cell gcc gcc -O2
    cell gcc-omp gcc -O2 -fopenmp
    cell clang clang -O2
    cell clang-omp clang -O2 -fopenmp
    compile_checks gcc
    run_bin cli sh tests/test_cli.sh
    run_bin serve sh tests/test_serve.sh
    fuzz_replay gcc -O1
    ;;
docs)
    doc_checks gcc
    ;;
*)
    echo "usage: sh tests/run.sh [full|quick|sanitize|docs]" >&2
    exit 2
    ;;
esac

# each skipped case once, with the builds it was skipped in
if [ -s "$skips" ]; then
    echo "== skipped"
    awk -F '\t' '{
        prog = $1; cell = ""
        if (match(prog, /-test_/)) { cell = substr(prog, 1, RSTART - 1); prog = substr(prog, RSTART + 1) }
        key = prog ": " $2
        if (!(key in cells)) { order[++n] = key; cells[key] = cell }
        else if (cell != "") cells[key] = cells[key] ", " cell
    } END {
        for (i = 1; i <= n; i++)
            print "  " order[i] (cells[order[i]] != "" ? "  [" cells[order[i]] "]" : "")
    }' "$skips"
fi
if [ "$skipped" != 0 ]; then echo "$passed passed, $failed failed, $skipped skipped"
else echo "$passed passed, $failed failed"; fi
[ "$failed" = 0 ]
