/*
 * tests/test_npy_numpy.c - interoperability with numpy, the reference .npy
 * implementation: numpy writes, sightline reads; sightline writes, numpy
 * reads. Values compared exactly. Skips (77) when Debian's python3 with
 * numpy is absent.
 */
#include "sightline/npy.h"
#include "testutil.h"

#include <stdint.h>

#define PY "/usr/bin/python3"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_npy_numpy SCRIPT\n");
        return 2;
    }
    if (system(PY " -c 'import numpy' 2>/dev/null") != 0) {
        printf("skip: " PY " with numpy not available\n");
        return SL_TEST_SKIP;
    }
    const char *dir = sl_test_tmpdir();
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd, PY " %s WRITE %s", argv[1], dir);
    CHECK(system(cmd) == 0);

    float f32[24];
    int64_t i64[4] = {49406, 320, 49407, 0};
    int32_t i32[6];
    for (int i = 0; i < 24; i++) f32[i] = (float)i * 0.5f - 3.f;
    for (int i = 0; i < 6; i++) i32[i] = i - 2;

    sl_npy a;
    snprintf(path, sizeof path, "%s/f32_np.npy", dir);
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_F32 && a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 3 &&
          a.shape[2] == 4 && a.data && memcmp(a.data, f32, sizeof f32) == 0);
    sl_npy_free(&a);
    snprintf(path, sizeof path, "%s/i64_np.npy", dir);
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_I64 && a.ndim == 1 && a.shape[0] == 4 && a.data &&
          memcmp(a.data, i64, sizeof i64) == 0);
    sl_npy_free(&a);
    snprintf(path, sizeof path, "%s/i32_np.npy", dir);
    CHECK_OK(sl_npy_read(path, &a));
    CHECK(a.dtype == SL_NPY_I32 && a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 2 && a.data &&
          memcmp(a.data, i32, sizeof i32) == 0);
    sl_npy_free(&a);

    size_t s3[3] = {2, 3, 4}, s1[1] = {4}, s2[2] = {3, 2};
    snprintf(path, sizeof path, "%s/f32_sl.npy", dir);
    CHECK_OK(sl_npy_write(path, SL_NPY_F32, 3, s3, f32));
    snprintf(path, sizeof path, "%s/i64_sl.npy", dir);
    CHECK_OK(sl_npy_write(path, SL_NPY_I64, 1, s1, i64));
    /* the streaming writer's output too */
    snprintf(path, sizeof path, "%s/i32_sl.npy", dir);
    sl_npy_writer *w;
    CHECK_OK(sl_npy_writer_open(path, SL_NPY_I32, 1, s2 + 1, &w));
    CHECK_OK(sl_npy_writer_append(w, i32, 1));
    CHECK_OK(sl_npy_writer_append(w, i32 + 2, 2));
    CHECK_OK(sl_npy_writer_close(w));
    snprintf(cmd, sizeof cmd, PY " %s VERIFY %s", argv[1], dir);
    CHECK(system(cmd) == 0);
    return sl_test_finish("test_npy_numpy");
}
