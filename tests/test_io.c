// io: the container format. Round trip of every element type, in memory and on disk (mapped
// and read); every truncation and every single-byte flip is a clear error naming what broke.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include "test.h"

typedef struct fixture {
    uint8_t u8[7];
    int8_t i8[3];
    uint16_t u16[5];
    int16_t i16[2];
    uint32_t u32[3];
    int32_t i32[4];
    uint64_t u64[2];
    int64_t i64[3];
    float f32[9];
    double f64[2];
} fixture;

static void make_fixture(fixture *f) {
    int i;
    memset(f, 0, sizeof *f);
    for (i = 0; i < 7; i++) f->u8[i] = (uint8_t)(250 + i);
    f->i8[0] = -128; f->i8[1] = 0; f->i8[2] = 127;
    for (i = 0; i < 5; i++) f->u16[i] = (uint16_t)(0xFF00 + i * 257);
    f->i16[0] = -32768; f->i16[1] = 12345;
    f->u32[0] = 0xDEADBEEFu; f->u32[1] = 1; f->u32[2] = 0x01020304u;
    for (i = 0; i < 4; i++) f->i32[i] = -1000000 * (i + 1);
    f->u64[0] = 0x0102030405060708ull; f->u64[1] = UINT64_MAX;
    f->i64[0] = INT64_MIN; f->i64[1] = -1; f->i64[2] = (int64_t)1 << 40;
    for (i = 0; i < 9; i++) f->f32[i] = (float)i * 0.25f - 1.0f;
    f->f32[8] = -INFINITY;
    f->f64[0] = 3.141592653589793; f->f64[1] = -1e300;
}

static void add_fixture(retrlm_writer *w, const fixture *f) {
    CHECK_OK(retrlm_writer_add(w, "u8", RETRLM_DTYPE_U8, f->u8, 7));
    CHECK_OK(retrlm_writer_add(w, "i8", RETRLM_DTYPE_I8, f->i8, 3));
    CHECK_OK(retrlm_writer_add(w, "u16", RETRLM_DTYPE_U16, f->u16, 5));
    CHECK_OK(retrlm_writer_add(w, "i16", RETRLM_DTYPE_I16, f->i16, 2));
    CHECK_OK(retrlm_writer_add(w, "u32", RETRLM_DTYPE_U32, f->u32, 3));
    CHECK_OK(retrlm_writer_add(w, "i32", RETRLM_DTYPE_I32, f->i32, 4));
    CHECK_OK(retrlm_writer_add(w, "u64", RETRLM_DTYPE_U64, f->u64, 2));
    CHECK_OK(retrlm_writer_add(w, "i64", RETRLM_DTYPE_I64, f->i64, 3));
    CHECK_OK(retrlm_writer_add_copy(w, "f32", RETRLM_DTYPE_F32, f->f32, 9));
    CHECK_OK(retrlm_writer_add(w, "f64", RETRLM_DTYPE_F64, f->f64, 2));
    CHECK_OK(retrlm_writer_add(w, "empty", RETRLM_DTYPE_F32, NULL, 0));
}

static int check_fixture(const retrlm_reader *r, const fixture *f) {
    fixture g;
    const void *p;
    size_t n;
    int ok = 1;
    memset(&g, 0, sizeof g);
    ok &= retrlm_reader_read(r, "u8", RETRLM_DTYPE_U8, g.u8, 7) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "i8", RETRLM_DTYPE_I8, g.i8, 3) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "u16", RETRLM_DTYPE_U16, g.u16, 5) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "i16", RETRLM_DTYPE_I16, g.i16, 2) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "u32", RETRLM_DTYPE_U32, g.u32, 3) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "i32", RETRLM_DTYPE_I32, g.i32, 4) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "u64", RETRLM_DTYPE_U64, g.u64, 2) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "i64", RETRLM_DTYPE_I64, g.i64, 3) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "f32", RETRLM_DTYPE_F32, g.f32, 9) == RETRLM_OK;
    ok &= retrlm_reader_read(r, "f64", RETRLM_DTYPE_F64, g.f64, 2) == RETRLM_OK;
    ok &= memcmp(&g, f, sizeof g) == 0;
    ok &= retrlm_reader_get(r, "empty", RETRLM_DTYPE_F32, &p, &n) == RETRLM_OK && n == 0 && p == NULL;
    ok &= retrlm_reader_get(r, "f64", RETRLM_DTYPE_F64, &p, &n) == RETRLM_OK && ((uintptr_t)p % 64) == 0;
    return ok;
}

// the fixture's file image in a fresh 64-byte aligned buffer
static unsigned char *fixture_image(size_t *size, void **owner) {
    retrlm_writer w;
    fixture f;
    unsigned char *buf;
    make_fixture(&f);
    CHECK_OK(retrlm_writer_init(&w, "test"));
    add_fixture(&w, &f);
    CHECK_OK(retrlm_writer_save_memory(&w, NULL, 0, size));
    *owner = malloc(*size + 64);
    buf = (unsigned char *)*owner + (64 - (uintptr_t)*owner % 64) % 64;
    CHECK_OK(retrlm_writer_save_memory(&w, buf, *size, size));
    retrlm_writer_free(&w);
    return buf;
}

static void test_roundtrip_memory(void) {
    fixture f;
    size_t size;
    void *owner;
    unsigned char *img = fixture_image(&size, &owner);
    retrlm_reader r;
    retrlm_section_info info;
    make_fixture(&f);
    CHECK_OK(retrlm_reader_open_memory(&r, img, size, "test", 0));
    CHECK(r.n_sections == 11 && r.version == 1 && !strcmp(r.kind, "test"));
    CHECK(check_fixture(&r, &f));
    CHECK_OK(retrlm_reader_section(&r, 2, &info));
    CHECK(!strcmp(info.name, "u16") && info.type == RETRLM_DTYPE_U16 && info.count == 5 && info.bytes == 10);
    CHECK(retrlm_reader_section(&r, 11, &info) == RETRLM_ERR_RANGE);
    // lookups that must fail, with their detail
    CHECK(retrlm_reader_get(&r, "nope", RETRLM_DTYPE_U8, NULL, NULL) == RETRLM_ERR_NOT_FOUND);
    CHECK(strstr(retrlm_last_error(), "'nope'") != NULL);
    CHECK(retrlm_reader_get(&r, "f32", RETRLM_DTYPE_F64, NULL, NULL) == RETRLM_ERR_FORMAT);
    CHECK(strstr(retrlm_last_error(), "holds f32, expected f64") != NULL);
    {
        float x[8];
        CHECK(retrlm_reader_read(&r, "f32", RETRLM_DTYPE_F32, x, 8) == RETRLM_ERR_FORMAT);
    }
    retrlm_reader_close(&r);
    retrlm_reader_close(&r); // twice is fine
    CHECK(retrlm_reader_open_memory(&r, img, size, "tokenizer", 0) == RETRLM_ERR_FORMAT);
    CHECK(strstr(retrlm_last_error(), "expected a 'tokenizer'") != NULL);
    // an unaligned buffer is copied, and still reads right
    {
        unsigned char *odd = (unsigned char *)malloc(size + 1);
        memcpy(odd + 1, img, size);
        CHECK_OK(retrlm_reader_open_memory(&r, odd + 1, size, NULL, 0));
        CHECK(check_fixture(&r, &f));
        retrlm_reader_close(&r);
        free(odd);
    }
    free(owner);
}

static void test_writer_errors(void) {
    retrlm_writer w;
    float x = 1;
    unsigned char small[16];
    size_t n;
    CHECK(retrlm_writer_init(&w, "") == RETRLM_ERR_ARG);
    retrlm_writer_free(&w);
    CHECK(retrlm_writer_init(&w, "a-kind-that-is-too-long") == RETRLM_ERR_ARG);
    CHECK_OK(retrlm_writer_init(&w, "k"));
    CHECK(retrlm_writer_add(&w, "a name that is longer than thirty-one", RETRLM_DTYPE_F32, &x, 1) == RETRLM_ERR_ARG);
    CHECK(retrlm_writer_add(&w, "x", (retrlm_dtype)99, &x, 1) == RETRLM_ERR_ARG);
    CHECK(retrlm_writer_add(&w, "x", RETRLM_DTYPE_F32, NULL, 1) == RETRLM_ERR_ARG);
    CHECK(retrlm_writer_add(&w, "x", RETRLM_DTYPE_F64, &x, SIZE_MAX / 4) == RETRLM_ERR_ARG);
    CHECK_OK(retrlm_writer_add(&w, "x", RETRLM_DTYPE_F32, &x, 1));
    CHECK(retrlm_writer_add(&w, "x", RETRLM_DTYPE_F32, &x, 1) == RETRLM_ERR_ARG);
    CHECK(retrlm_writer_save_memory(&w, small, sizeof small, &n) == RETRLM_ERR_ARG && n > sizeof small);
#ifndef RETRLM_NO_STDIO
    CHECK(retrlm_writer_save(&w, "/nonexistent-dir/x.rlm") == RETRLM_ERR_IO);
    CHECK(strstr(retrlm_last_error(), "/nonexistent-dir/x.rlm") != NULL);
#endif
    retrlm_writer_free(&w);
    retrlm_writer_free(&w);
}

// Every prefix of the file is rejected with a format error, and the detail says where.
static void test_truncation(void) {
    size_t size, len;
    void *owner;
    unsigned char *img = fixture_image(&size, &owner);
    retrlm_reader r;
    int ok = 1;
    for (len = 0; len < size; len++) {
        retrlm_result res = retrlm_reader_open_memory(&r, img, len, "test", 0);
        const char *d = retrlm_last_error();
        if (res != RETRLM_ERR_FORMAT || !(strstr(d, "header") || strstr(d, "section table"))) {
            fprintf(stderr, "truncated to %lu: %s: %s\n", (unsigned long)len, retrlm_result_string(res), d);
            ok = 0;
        }
        retrlm_reader_close(&r);
    }
    CHECK(ok);
    free(owner);
}

// Every single-byte change anywhere in the file is an error whose detail names the place:
// the header, the section table, the section whose payload changed, or the padding before one.
static void test_flips(void) {
    size_t size, pos;
    void *owner;
    unsigned char *img = fixture_image(&size, &owner);
    retrlm_reader r;
    int ok = 1, x;
    static const unsigned char masks[] = {0x01, 0x80, 0xFF};
    CHECK_OK(retrlm_reader_open_memory(&r, img, size, "test", 0));
    for (pos = 0; pos < size; pos++) {
        const char *want = NULL;
        char name_want[64];
        int i;
        if (pos < 64) want = "header";
        else if (pos < 64 + (size_t)r.n_sections * 64) want = "section table";
        else {
            for (i = 0; i < r.n_sections; i++) { // which payload or padding holds pos
                retrlm_section_info info;
                retrlm_reader_section(&r, i, &info);
                if (pos < info.offset) {
                    snprintf(name_want, sizeof name_want, "padding before section '%s'", info.name);
                    break;
                }
                if (pos < info.offset + info.bytes) {
                    snprintf(name_want, sizeof name_want, "section '%s'", info.name);
                    break;
                }
            }
            want = name_want;
        }
        for (x = 0; x < 3; x++) {
            retrlm_reader r2;
            retrlm_result res;
            img[pos] ^= masks[x];
            res = retrlm_reader_open_memory(&r2, img, size, NULL, 0);
            img[pos] ^= masks[x];
            if (res == RETRLM_OK || !strstr(retrlm_last_error(), want)) {
                fprintf(stderr, "flip 0x%02x at %lu: %s: '%s' (wanted '%s')\n", masks[x],
                        (unsigned long)pos, retrlm_result_string(res), retrlm_last_error(), want);
                ok = 0;
            }
            retrlm_reader_close(&r2);
        }
    }
    retrlm_reader_close(&r);
    CHECK(ok);
    // NO_VERIFY skips payload CRCs only
    {
        retrlm_section_info info;
        CHECK_OK(retrlm_reader_open_memory(&r, img, size, NULL, 0));
        CHECK_OK(retrlm_reader_section(&r, 0, &info));
        retrlm_reader_close(&r);
        img[info.offset] ^= 1;
        CHECK(retrlm_reader_open_memory(&r, img, size, NULL, 0) == RETRLM_ERR_CORRUPT);
        CHECK_OK(retrlm_reader_open_memory(&r, img, size, NULL, RETRLM_READER_NO_VERIFY));
        retrlm_reader_close(&r);
    }
    img[70] ^= 1;
    CHECK(retrlm_reader_open_memory(&r, img, size, NULL, RETRLM_READER_NO_VERIFY) == RETRLM_ERR_CORRUPT);
    free(owner);
}

#ifndef RETRLM_NO_STDIO
static void test_roundtrip_file(void) {
    // a small file (read into memory) and a 4 MiB one (memory-mapped), each read both ways
    static const char *path = "build/tests/io_roundtrip.rlm";
    retrlm_writer w;
    retrlm_reader r;
    fixture f;
    size_t n = (size_t)1 << 20, i;
    float *big = (float *)malloc(sizeof(float) * n);
    int pass, ok;
    FILE *probe;
    char tmpname[256];
    for (i = 0; i < n; i++) big[i] = (float)i;
    make_fixture(&f);
    for (pass = 0; pass < 2; pass++) {
        CHECK_OK(retrlm_writer_init(&w, "test"));
        add_fixture(&w, &f);
        if (pass) CHECK_OK(retrlm_writer_add(&w, "big", RETRLM_DTYPE_F32, big, n));
        CHECK_OK(retrlm_writer_save(&w, path));
        retrlm_writer_free(&w);
        snprintf(tmpname, sizeof tmpname, "%s.tmp-%ld", path, (long)getpid());
        probe = fopen(tmpname, "rb");
        CHECK(probe == NULL); // the temporary was renamed away
        if (probe) fclose(probe);
        CHECK_OK(retrlm_reader_open(&r, path, "test", 0));
        CHECK(check_fixture(&r, &f));
        CHECK(r.mapped_ == (pass && retrlm__host_is_le())); // big-endian hosts read and swap
        if (pass) {
            const float *p;
            size_t cnt;
            CHECK_OK(retrlm_reader_get(&r, "big", RETRLM_DTYPE_F32, (const void **)&p, &cnt));
            ok = cnt == n;
            for (i = 0; ok && i < n; i++) ok = p[i] == (float)i;
            CHECK(ok);
        }
        retrlm_reader_close(&r);
        CHECK_OK(retrlm_reader_open(&r, path, "test", RETRLM_READER_NO_MMAP));
        CHECK(check_fixture(&r, &f) && !r.mapped_);
        retrlm_reader_close(&r);
    }
    CHECK(retrlm_reader_open(&r, "build/tests/does-not-exist.rlm", NULL, 0) == RETRLM_ERR_IO);
    CHECK(strstr(retrlm_last_error(), "does-not-exist.rlm") != NULL);
    remove(path);
    free(big);
}

#ifdef RETRLM__POSIX
// What is not a regular file is neither read nor replaced: a directory or a FIFO as the path of
// a reader, of the whole-file reader, or of a save; and a save removes the temporary files that
// dead processes' saves of the same path left, not a live process's.
static void test_not_regular_files(void) {
    static const char *dir = "build/tests/io_dir.rlm", *fifo = "build/tests/io_fifo.rlm";
    static const char *path = "build/tests/io_stale.rlm";
    retrlm_writer w;
    retrlm_reader r;
    struct stat st;
    char *data, dead[256], live[256];
    size_t size;
    FILE *f;
    mkdir(dir, 0755);
    remove(fifo);
    CHECK(mkfifo(fifo, 0644) == 0);
    CHECK(retrlm_reader_open(&r, dir, NULL, 0) == RETRLM_ERR_IO);
    CHECK(strstr(retrlm_last_error(), "is a directory") != NULL);
    CHECK(retrlm_reader_open(&r, fifo, NULL, 0) == RETRLM_ERR_IO); // at once: open would wait for a writer
    CHECK(strstr(retrlm_last_error(), "is a FIFO") != NULL);
    CHECK(retrlm__read_file(dir, &data, &size) == RETRLM_ERR_IO && data == NULL && size == 0);
    CHECK(strstr(retrlm_last_error(), "is a directory") != NULL);
    CHECK(retrlm__read_file(fifo, &data, &size) == RETRLM_ERR_IO && data == NULL);
    CHECK_OK(retrlm_writer_init(&w, "test"));
    CHECK(retrlm_writer_save(&w, dir) == RETRLM_ERR_IO);
    CHECK(retrlm_writer_save(&w, fifo) == RETRLM_ERR_IO);
    CHECK(strstr(retrlm_last_error(), "nothing replaced") != NULL);
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    snprintf(dead, sizeof dead, "%s.tmp-999999999", path); // above any pid_max: no such process
    snprintf(live, sizeof live, "%s.tmp-%ld", path, (long)getppid());
    if ((f = fopen(dead, "wb")) != NULL) fclose(f);
    if ((f = fopen(live, "wb")) != NULL) fclose(f);
    CHECK_OK(retrlm_writer_save(&w, path));
    CHECK(stat(dead, &st) != 0 && stat(live, &st) == 0);
    CHECK_OK(retrlm__read_file(path, &data, &size));
    CHECK(size == 64 && data[size] == '\0'); // the header alone, then the NUL
    RETRLM_FREE(data);
    retrlm_writer_free(&w);
    remove(live), remove(path), remove(fifo), rmdir(dir);
}
#endif
#endif

// A file written on a little-endian host (the fuzz seed, made by the library) reads the same
// everywhere: run under qemu-s390x this is the big-endian check.
static void test_golden_file(void) {
    retrlm_reader r;
    float f[5];
    int64_t ids[3];
    char text[6] = {0};
    if (retrlm_reader_open(&r, "fuzz/corpus/container/three_sections", "seed", 0) != RETRLM_OK)
        SKIP("fuzz/corpus/container/three_sections not found (run from the repository root)");
    CHECK_OK(retrlm_reader_read(&r, "floats", RETRLM_DTYPE_F32, f, 5));
    CHECK_OK(retrlm_reader_read(&r, "ids", RETRLM_DTYPE_I64, ids, 3));
    CHECK_OK(retrlm_reader_read(&r, "text", RETRLM_DTYPE_U8, text, 5));
    CHECK(f[0] == 1.0f && f[4] == 5.0f && ids[0] == -1 && ids[2] == ((int64_t)1 << 40));
    CHECK(!strcmp(text, "hello"));
    retrlm_reader_close(&r);
}

static void test_crc32(void) {
    // the standard check value, and chunked == whole on both code paths
    static unsigned char buf[4096];
    size_t i;
    uint32_t whole, part;
    CHECK(retrlm_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(retrlm_crc32(0, "", 0) == 0);
    for (i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 31 + 7);
    whole = retrlm_crc32(0, buf, sizeof buf);
    part = retrlm_crc32(retrlm_crc32(0, buf, 100), buf + 100, sizeof buf - 100);
    CHECK(whole == part);
    part = retrlm_crc32(retrlm_crc32(0, buf, 3000), buf + 3000, sizeof buf - 3000);
    CHECK(whole == part);
}

int main(void) {
    RUN(test_crc32);
    RUN(test_roundtrip_memory);
    RUN(test_writer_errors);
    RUN(test_truncation);
    RUN(test_flips);
#ifndef RETRLM_NO_STDIO
    RUN(test_roundtrip_file);
    RUN(test_golden_file);
#ifdef RETRLM__POSIX
    RUN(test_not_regular_files);
#endif
#endif
    return test_report();
}
