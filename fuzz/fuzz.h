/* fuzz.h - shared by every fuzz/fuzz_NAME.c. A target defines
     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
   and includes this file after it. Built two ways:
     libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                 -I. -I/usr/include/stb fuzz/fuzz_NAME.c -lm -o fuzz_NAME && ./fuzz_NAME fuzz/corpus/NAME
     replay:     cc -DRETRLM_FUZZ_REPLAY ... fuzz/fuzz_NAME.c -o replay && ./replay fuzz/corpus/NAME
   The replay build has a plain main that runs every file of a corpus directory once (this is
   what `make test` does, with any compiler) and prints "N passed, M failed": a file passes when
   the target returns without crashing. */
#ifndef RETRLM_FUZZ_H
#define RETRLM_FUZZ_H
#ifdef RETRLM_FUZZ_REPLAY
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int passed = 0, failed = 0, i;
    for (i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        if (!d) {
            fprintf(stderr, "cannot open corpus directory %s\n", argv[i]);
            failed++;
            continue;
        }
        while ((e = readdir(d)) != NULL) {
            char path[4096];
            FILE *f;
            long n;
            unsigned char *buf;
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            f = fopen(path, "rb");
            if (!f) continue;
            fseek(f, 0, SEEK_END);
            n = ftell(f);
            fseek(f, 0, SEEK_SET);
            buf = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
            if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                LLVMFuzzerTestOneInput(buf, (size_t)n);
                passed++;
            } else
                failed++;
            free(buf);
            fclose(f);
        }
        closedir(d);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0 || passed == 0;
}
#endif
#endif
