/*
 * tests/test_cuda.c - CUDA kernels against their CPU twins. Skips (77)
 * where the build has no CUDA or the machine no GPU.
 */
#include "kernels/kernels.h"
#include "sightline/sightline.h"
#include "testutil.h"

int main(void) {
    if (sl_cuda_device_count() == 0) {
        /* without a device the entry points report it clearly */
        float x[4] = {1, 2, 3, 4};
        CHECK_ERR(sl_cuda_l2_normalize_rows(0, x, 1, 4), SL_ERR_UNSUPPORTED, "cuda:0");
        if (sl_test_failures) return sl_test_finish("test_cuda");
        printf("skip: no CUDA device\n");
        return SL_TEST_SKIP;
    }
    enum { N = 1000, D = 768 };
    static float a[N * D], b[N * D];
    uint32_t s = 1;
    for (int i = 0; i < N * D; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = b[i] = (float)(s >> 8) / 16777216.f - 0.5f;
    }
    memset(a, 0, D * sizeof(float)); /* a zero row stays zero */
    memset(b, 0, D * sizeof(float));
    sl_cpu_l2_normalize_rows(a, N, D);
    CHECK_OK(sl_cuda_l2_normalize_rows(0, b, N, D));
    double maxdiff = 0;
    for (int i = 0; i < N * D; i++) maxdiff = fmax(maxdiff, fabs(a[i] - b[i]));
    CHECK_MSG(maxdiff < 1e-6, "max abs diff %g", maxdiff);
    CHECK_ERR(sl_cuda_l2_normalize_rows(99, b, N, D), SL_ERR_UNSUPPORTED, "cuda:99");
    return sl_test_finish("test_cuda");
}
