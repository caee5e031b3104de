/* repair.h - for targets whose loader sits behind the container format: sets the input's
   file-size field and recomputes the CRCs (on the target's copy), so that mutations reach the
   loader's own validation instead of stopping at the checksums (fuzz_container covers those). */
#ifndef RETRLM_FUZZ_REPAIR_H
#define RETRLM_FUZZ_REPAIR_H
#include <stdlib.h>
#include <string.h>
static void fuzz_repair_container(unsigned char *b, size_t size) {
    unsigned char head[64];
    uint64_t n, i;
    if (size < 64 || memcmp(b, "\x89RLM\r\n\x1a\n", 8)) return;
    retrlm__put_u64(b + 32, (uint64_t)size);
    n = retrlm__get_u32(b + 12);
    if (n > (size - 64) / 64) return;
    for (i = 0; i < n; i++) {
        unsigned char *e = b + 64 + i * 64;
        uint64_t off = retrlm__get_u64(e + 32), bytes = retrlm__get_u64(e + 40);
        if (off <= size && bytes <= size - off) retrlm__put_u32(e + 48, retrlm_crc32(0, b + off, (size_t)bytes));
    }
    memcpy(head, b, 64);
    retrlm__put_u32(head + 48, 0);
    retrlm__put_u32(b + 48, retrlm_crc32(retrlm_crc32(0, head, 64), b + 64, (size_t)n * 64));
}

/* the input copied (malloc'd, at least 1 byte: the loaders may keep it until freed) and repaired
   as above; NULL if out of memory */
static unsigned char *fuzz_repaired_copy(const uint8_t *input, size_t size) {
    unsigned char *data = (unsigned char *)malloc(size ? size : 1);
    if (!data) return NULL;
    memcpy(data, input, size);
    fuzz_repair_container(data, size);
    return data;
}
#endif
