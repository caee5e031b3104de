// Fuzz target: the container parser (retrlm_reader_open_memory) and every section accessor.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    retrlm_reader r;
    int i;
    if (retrlm_reader_open_memory(&r, data, size, NULL, 0) == RETRLM_OK) {
        for (i = 0; i < r.n_sections; i++) {
            retrlm_section_info info;
            const void *p;
            size_t n;
            if (retrlm_reader_section(&r, i, &info) == RETRLM_OK &&
                retrlm_reader_get(&r, info.name, info.type, &p, &n) == RETRLM_OK && n) {
                // touch the first and last byte: they must be inside the image
                volatile unsigned char a = ((const unsigned char *)p)[0];
                volatile unsigned char b = ((const unsigned char *)p)[info.bytes - 1];
                (void)a;
                (void)b;
            }
        }
        retrlm_reader_close(&r);
    }
    return 0;
}
#include "fuzz/fuzz.h"
