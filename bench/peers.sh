#!/bin/sh
# bench/peers.sh NAME - prints compiler flags for the peers of bench NAME that are installed
# here (each adds -DRETRLM_BENCH_<PEER>); prints nothing for a missing peer, so the bench
# still builds, measures retrlm and says which peer is missing.
have_header() { [ -f "$1" ]; }
case $1 in
matmul|train)
    for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread /usr/include/openblas; do
        if have_header "$d/cblas.h"; then echo "-DRETRLM_BENCH_OPENBLAS -I$d -lopenblas"; break; fi
    done
    ;;
tokenizer)
    # tiktoken runs in node (installed with npm into build/npm on first use); sentencepiece's CLI
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then echo "-DRETRLM_BENCH_NODE"; fi
    if command -v spm_train >/dev/null 2>&1; then echo "-DRETRLM_BENCH_SPM"; fi
    ;;
esac
