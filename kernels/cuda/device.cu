// kernels/cuda/device.cu - device discovery and the first CUDA kernels.

#include "kernels/kernels.h"
#include "sightline/sightline.h"

#include <cuda_runtime.h>

// Report a CUDA failure as an sl_status with the runtime's message.
static sl_status cuda_fail(cudaError_t e, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "CUDA %s: %s", what, cudaGetErrorString(e));
}

extern "C" int sl_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}

// One block per row: sum of squares by a block reduction, then scale.
__global__ void l2_normalize_rows_kernel(float *x, size_t d) {
    float *row = x + blockIdx.x * d;
    float ss = 0.f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) ss += row[j] * row[j];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    __shared__ float warp_sums[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        ss = lane < (int)(blockDim.x >> 5) ? warp_sums[lane] : 0.f;
        for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
        if (lane == 0) warp_sums[0] = ss;
    }
    __syncthreads();
    float norm = sqrtf(warp_sums[0]);
    if (norm < 1e-12f) return;
    float inv = 1.f / norm;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) row[j] *= inv;
}

extern "C" sl_status sl_cuda_check_device(int dev) {
    const int count = sl_cuda_device_count();
    if (dev < 0 || dev >= count)
        return sl_set_error(SL_ERR_UNSUPPORTED, "cuda:%d requested but %d CUDA device(s) found",
                            dev, count);
    return SL_OK;
}

extern "C" sl_status sl_cuda_l2_normalize_rows(int dev, float *x, size_t n, size_t d) {
    sl_status st = sl_cuda_check_device(dev);
    if (st || n == 0 || d == 0) return st;
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess) return cuda_fail(e, "set device");
    size_t bytes = n * d * sizeof(float);
    float *dx = nullptr;
    if ((e = cudaMalloc(&dx, bytes)) != cudaSuccess) return cuda_fail(e, "malloc");
    if ((e = cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice)) != cudaSuccess) {
        st = cuda_fail(e, "copy to device");
    } else {
        l2_normalize_rows_kernel<<<(unsigned)n, 256>>>(dx, d);
        if ((e = cudaGetLastError()) != cudaSuccess)
            st = cuda_fail(e, "l2 normalize launch");
        else if ((e = cudaMemcpy(x, dx, bytes, cudaMemcpyDeviceToHost)) != cudaSuccess)
            st = cuda_fail(e, "copy to host");
    }
    cudaFree(dx);
    return st;
}
