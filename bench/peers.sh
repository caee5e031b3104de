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
bm25-lucene-cp) # the class path of Lucene 8 (Debian liblucene8-java), empty if missing
    core=$(ls /usr/share/java/lucene-core-8*.jar 2>/dev/null | head -n 1)
    an=$(ls /usr/share/java/lucene-analyzers-common-8*.jar 2>/dev/null | head -n 1)
    [ -n "$core" ] && [ -n "$an" ] && echo "$core:$an"
    ;;
bm25)
    if have_header /usr/include/sqlite3.h; then echo "-DRETRLM_BENCH_FTS5 -lsqlite3 -lpthread"; fi
    if [ -x build/bench/bm25_xapian ]; then echo "-DRETRLM_BENCH_XAPIAN"; fi
    cp=$(sh bench/peers.sh bm25-lucene-cp)
    if [ -n "$cp" ] && [ -f build/bench/Bm25Lucene.class ] && command -v java >/dev/null 2>&1; then
        echo "-DRETRLM_BENCH_LUCENE=\"$cp\""
    fi
    ;;
# bench/index.c runs build/bench/index_peer (bench/index_peer.cpp) when it exists; these are
# the flags of that C++ program: FAISS (static libfaiss.a + its BLAS) and header-only hnswlib
index_peer)
    for l in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib /usr/local/lib; do
        if have_header /usr/include/faiss/IndexIVFFlat.h && { [ -f $l/libfaiss.a ] || [ -f $l/libfaiss.so ]; }; then
            echo "-DRETRLM_BENCH_FAISS -lfaiss -lblas -llapack"; break
        fi
    done
    if have_header /usr/include/hnswlib/hnswlib.h; then echo "-DRETRLM_BENCH_HNSWLIB"; fi
    ;;
esac
