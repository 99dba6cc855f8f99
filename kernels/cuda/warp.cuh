// kernels/cuda/warp.cuh - warp-wide reductions shared by the CUDA kernels
// (transformer.cu, train_ops.cu). Every lane of the warp must be active: the
// launches keep whole warps alive through them. The xor butterfly leaves the
// identical value in every lane.
#ifndef SL_KERNELS_CUDA_WARP_CUH
#define SL_KERNELS_CUDA_WARP_CUH

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    return v;
}

#endif
