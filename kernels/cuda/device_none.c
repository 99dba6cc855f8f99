/*
 * kernels/cuda/device_none.c - the CUDA entry points of a build without
 * CUDA: they report that no device is available.
 */
#include "kernels/kernels.h"
#include "sightline/sightline.h"

int sl_cuda_device_count(void) {
    return 0;
}

sl_status sl_cuda_check_device(int dev) {
    return sl_set_error(SL_ERR_UNSUPPORTED,
                        "cuda:%d requested but this build of sightline has no CUDA support "
                        "(rebuild with nvcc present and -DSL_CUDA=AUTO or ON)",
                        dev);
}

sl_status sl_cuda_l2_normalize_rows(int dev, float *x, size_t n, size_t d) {
    (void)x;
    (void)n;
    (void)d;
    return sl_cuda_check_device(dev);
}
