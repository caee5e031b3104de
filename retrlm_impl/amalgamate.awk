# amalgamate.awk - joins retrlm_impl/ into the single retrlm.h (POSIX awk, no other tools).
#   awk -f retrlm_impl/amalgamate.awk retrlm_impl/retrlm.h > retrlm.h
# Each `#include "x"` whose x is a file in retrlm_impl/ is replaced by that file's text, once;
# later includes of the same file are dropped (SQLite's mksqlite3c rule). Every other line,
# `#include "stb_ds.h"` among them, is copied as it is.
function emit(path,    line, name, f, probe) {
    while ((getline line < path) > 0) {
        if (match(line, /^#include "[^"]+"/)) {
            name = substr(line, 11, RLENGTH - 11)
            f = dir "/" name
            if (f in seen) continue
            if ((getline probe < f) >= 0) {
                close(f)
                seen[f] = 1
                print "/* ---- retrlm_impl/" name " ---- */"
                emit(f)
                continue
            }
        }
        print line
    }
    close(path)
}
BEGIN {
    top = ARGV[1]
    dir = top
    if (!sub(/\/[^\/]*$/, "", dir)) dir = "."
    seen[top] = 1
    emit(top)
    exit
}
