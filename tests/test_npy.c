/*
 * tests/test_npy.c - .npy round trips for every dtype, the streaming writer,
 * and strict rejection of malformed files (each error names the file).
 */
#include "sightline/npy.h"
#include "testutil.h"

#include <stdint.h>

static void write_raw(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* A valid v1 header for `dict` followed by `data_len` zero bytes. */
static void write_npy_with_dict(const char *path, const char *dict, size_t data_len) {
    char buf[4096] = {0};
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    size_t dl = strlen(dict), total = (10 + dl + 1 + 63) / 64 * 64;
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', total - 10 - dl - 1);
    buf[total - 1] = '\n';
    write_raw(path, buf, total + data_len);
}

static void test_round_trip(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    float f[6] = {1.5f, -2.f, 3.25f, 0.f, 1e-7f, 42.f};
    size_t shape[2] = {2, 3};
    CHECK_OK(sl_npy_write(path, SL_NPY_F32, 2, shape, f));
    sl_npy a;
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_F32 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);
    CHECK(a.count == 6 && memcmp(a.data, f, sizeof f) == 0);
    sl_npy_free(&a);
    CHECK(a.data == NULL);

    int64_t t[4] = {49406, 320, -1, 49407};
    size_t s1[1] = {4};
    CHECK_OK(sl_npy_write(path, SL_NPY_I64, 1, s1, t));
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_I64 && a.ndim == 1 && a.shape[0] == 4);
    CHECK(memcmp(a.data, t, sizeof t) == 0);
    sl_npy_free(&a);

    int32_t t32[2 * 2 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t s3[3] = {2, 2, 2};
    CHECK_OK(sl_npy_write(path, SL_NPY_I32, 3, s3, t32));
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_I32 && a.ndim == 3 && a.count == 8);
    CHECK(memcmp(a.data, t32, sizeof t32) == 0);
    sl_npy_free(&a);

    uint8_t u[3] = {0, 128, 255};
    s1[0] = 3;
    CHECK_OK(sl_npy_write(path, SL_NPY_U8, 1, s1, u));
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_U8 && memcmp(a.data, u, 3) == 0);
    sl_npy_free(&a);

    /* empty array */
    size_t s0[2] = {0, 512};
    CHECK_OK(sl_npy_write(path, SL_NPY_F32, 2, s0, NULL));
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.ndim == 2 && a.shape[0] == 0 && a.shape[1] == 512 && a.count == 0);
    sl_npy_free(&a);

    /* the header is a multiple of 64 bytes and ends in a newline */
    FILE *fp = fopen(path, "rb");
    unsigned char pre[10];
    CHECK(fread(pre, 1, 10, fp) == 10);
    size_t hl = pre[8] | (pre[9] << 8);
    CHECK((10 + hl) % 64 == 0);
    fseek(fp, (long)(10 + hl - 1), SEEK_SET);
    CHECK(fgetc(fp) == '\n');
    fclose(fp);
}

static void test_writer(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/stream.npy", dir);
    size_t row[2] = {3, 4};
    sl_npy_writer *w;
    CHECK_OK(sl_npy_writer_open(path, SL_NPY_F32, 2, row, &w));
    float rows[5 * 12];
    for (int i = 0; i < 60; i++) rows[i] = (float)i;
    CHECK_OK(sl_npy_writer_append(w, rows, 2));
    CHECK_OK(sl_npy_writer_append(w, rows + 24, 3));
    CHECK(sl_npy_writer_rows(w) == 5);
    CHECK_OK(sl_npy_writer_close(w));
    sl_npy a;
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.ndim == 3 && a.shape[0] == 5 && a.shape[1] == 3 && a.shape[2] == 4);
    CHECK(memcmp(a.data, rows, sizeof rows) == 0);
    sl_npy_free(&a);

    /* abort leaves the previous file untouched */
    CHECK_OK(sl_npy_writer_open(path, SL_NPY_F32, 2, row, &w));
    CHECK_OK(sl_npy_writer_append(w, rows, 1));
    sl_npy_writer_abort(w);
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.shape[0] == 5);
    sl_npy_free(&a);

    /* zero rows */
    size_t d[1] = {7};
    CHECK_OK(sl_npy_writer_open(path, SL_NPY_F32, 1, d, &w));
    CHECK_OK(sl_npy_writer_close(w));
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.ndim == 2 && a.shape[0] == 0 && a.shape[1] == 7);
    sl_npy_free(&a);
}

static void test_malformed(const char *dir) {
    char path[1024];
    sl_npy a;
    snprintf(path, sizeof path, "%s/bad.npy", dir);

    write_raw(path, "hello world", 11);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "bad.npy: not a .npy file");

    write_raw(path, "\x93NUMPY\x01\x00\x50\x00{'descr'", 17);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "header truncated");

    /* v2 header claiming 4 GiB */
    write_raw(path, "\x93NUMPY\x02\x00\xff\xff\xff\xff", 12);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_LIMIT, "header length");

    write_raw(path, "\x93NUMPY\x09\x00\x10\x00", 10);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_UNSUPPORTED, "version 9");

    write_npy_with_dict(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "needs 24");

    write_npy_with_dict(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "needs 24");

    write_npy_with_dict(path, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_UNSUPPORTED, "'>f4'");

    write_npy_with_dict(path, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", 4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_UNSUPPORTED, "Fortran");

    write_npy_with_dict(path,
                        "{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (99999999999, 99999999999, 99999999999), }",
                        4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_LIMIT, "overflows");

    write_npy_with_dict(path,
                        "{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (999999999999999999999999,), }",
                        4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_LIMIT, "overflows");

    write_npy_with_dict(path, "{'descr': '<f4', 'shape': (1,), }", 4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "lacks");

    write_npy_with_dict(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "unexpected key 'x'");

    write_npy_with_dict(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2), }", 4);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "bad shape");

    write_npy_with_dict(path, "[1, 2]", 0);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_FORMAT, "not a dict");

    snprintf(path, sizeof path, "%s/none.npy", dir);
    CHECK_ERR(sl_npy_read(path, &a), SL_ERR_NOT_FOUND, "none.npy");
    CHECK(a.data == NULL);
}

int main(void) {
    const char *dir = sl_test_tmpdir();
    test_round_trip(dir);
    test_writer(dir);
    test_malformed(dir);
    return sl_test_finish("test_npy");
}
