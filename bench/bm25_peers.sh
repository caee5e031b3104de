#!/bin/sh
# bench/bm25_peers.sh - builds the peers of bench/bm25.c that are installed here:
# build/bench/bm25_xapian (libxapian-dev, g++) and build/bench/Bm25Lucene.class (liblucene8-java, javac).
mkdir -p build/bench
if [ -f /usr/include/xapian.h ] && command -v g++ >/dev/null 2>&1; then
    g++ -std=c++11 -O2 -Ibench bench/bm25_xapian.cpp -lxapian -o build/bench/bm25_xapian || exit 1
fi
LJ=$(sh bench/peers.sh bm25-lucene-cp)
if [ -n "$LJ" ] && command -v javac >/dev/null 2>&1; then
    javac -cp "$LJ" -d build/bench bench/Bm25Lucene.java || exit 1
fi
exit 0
