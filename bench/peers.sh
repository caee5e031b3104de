#!/bin/sh
# bench/peers.sh NAME - prints compiler flags for the peers of bench NAME that are installed
# here (each adds -DRETRLM_BENCH_<PEER>); prints nothing for a missing peer, so the bench
# still builds, measures retrlm and says which peer is missing.
have_header() { [ -f "$1" ]; }
case $1 in
matmul)
    for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread /usr/include/openblas; do
        if have_header "$d/cblas.h"; then echo "-DRETRLM_BENCH_OPENBLAS -I$d -lopenblas"; break; fi
    done
    ;;
esac
# bench/index.c runs build/bench/index_peer (bench/index_peer.cpp) when it exists; these are
# the flags of that C++ program: FAISS (static libfaiss.a + its BLAS) and header-only hnswlib
case $1 in
index_peer)
    for l in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib /usr/local/lib; do
        if have_header /usr/include/faiss/IndexIVFFlat.h && { [ -f $l/libfaiss.a ] || [ -f $l/libfaiss.so ]; }; then
            echo "-DRETRLM_BENCH_FAISS -lfaiss -lblas -llapack"; break
        fi
    done
    if have_header /usr/include/hnswlib/hnswlib.h; then echo "-DRETRLM_BENCH_HNSWLIB"; fi
    ;;
esac
