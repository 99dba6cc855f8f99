// kernels/cuda/transformer.cu - the transformer forward kernels of the GPU
// towers (see transformer.cuh). Arithmetic is F32 throughout; BF16 only as
// a storage type, converted on load (exact) and on store (round to nearest
// even, __float2bfloat16_rn).

#include "kernels/cuda/transformer.cuh"

#include "kernels/cuda/warp.cuh"

#include <cuda_bf16.h>

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

__device__ __forceinline__ float to_f(float v) {
    return v;
}
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) {
    return v;
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// Blocks for a grid-stride loop over n elements with 256 threads.
static unsigned grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    if (b < 1) b = 1;
    if (b > (size_t)1 << 20) b = (size_t)1 << 20;
    return (unsigned)b;
}

// ---------------------------------------------------------------------------
// LayerNorm (with the pending residual bias)
// ---------------------------------------------------------------------------

#define LN_WARPS 8

// No __restrict__ on out / x: an F32 out may be x itself. Each element is
// read and then written by the same lane, so in place is safe.
template <typename T>
__global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_kernel(T *out, float *mean_out, float *rstd_out, float *x,
                     const float *__restrict__ bias, const float *__restrict__ w,
                     const float *__restrict__ b, int N, int C, float eps) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return; // whole warp: no block-level barrier below
    float *xr = x + (size_t)row * C;
    T *orow = out + (size_t)row * C;
    float s = 0.f;
    if (bias) {
        for (int j = lane; j < C; j += 32) {
            float v = xr[j] + bias[j];
            xr[j] = v;
            s += v;
        }
    } else {
        for (int j = lane; j < C; j += 32) s += xr[j];
    }
    const float mean = warp_sum(s) / (float)C;
    float v2 = 0.f;
    for (int j = lane; j < C; j += 32) {
        float d = xr[j] - mean;
        v2 += d * d;
    }
    // correctly rounded (also under --use_fast_math): the training backward reads it
    const float rstd = __fdiv_rn(1.0f, __fsqrt_rn(warp_sum(v2) / (float)C + eps));
    for (int j = lane; j < C; j += 32) orow[j] = from_f<T>((xr[j] - mean) * rstd * w[j] + b[j]);
    if (mean_out && lane == 0) { // the statistics the backward pass reads
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

cudaError_t sl_cu_layernorm(void *out, int out_bf16, float *x, const float *bias, const float *w,
                            const float *b, int N, int C, float eps, cudaStream_t stream) {
    if (N <= 0 || C <= 0) return cudaSuccess;
    const unsigned blocks = (unsigned)((N + LN_WARPS - 1) / LN_WARPS);
    if (out_bf16)
        layernorm_kernel<__nv_bfloat16><<<blocks, LN_WARPS * 32, 0, stream>>>(
            (__nv_bfloat16 *)out, nullptr, nullptr, x, bias, w, b, N, C, eps);
    else
        layernorm_kernel<float><<<blocks, LN_WARPS * 32, 0, stream>>>(
            (float *)out, nullptr, nullptr, x, bias, w, b, N, C, eps);
    return cudaGetLastError();
}

cudaError_t sl_cu_layernorm_stats(float *out, float *mean, float *rstd, float *x, const float *bias,
                                  const float *w, const float *b, int N, int C, float eps,
                                  cudaStream_t stream) {
    if (N <= 0 || C <= 0) return cudaSuccess;
    const unsigned blocks = (unsigned)((N + LN_WARPS - 1) / LN_WARPS);
    layernorm_kernel<float>
        <<<blocks, LN_WARPS * 32, 0, stream>>>(out, mean, rstd, x, bias, w, b, N, C, eps);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------
//
// Block = ATT_WARPS warps = ATT_QB query slots of one (sequence, head):
// slot (warp, k), k < ATT_QPW, is query qt*ATT_QB + k*ATT_WARPS + warp
// (interleaved so that causal work is balanced over the warps), or the one
// pooled query row in qrow mode (slot (0, 0) only). Each warp runs its
// queries one after the other against each key tile:
//   lane j scores key k0 + j against the query (q pre-scaled, in shared
//   memory; K tile rows padded to an odd stride: conflict-free),
//   warp max -> running max m, p = exp(s - m), per-lane partial denominator
//   l (rescaled by alpha = exp(m_old - m_new); summed over lanes at the end),
//   o[c] (dims lane + 32c) += p_j V[j][d] with p_j broadcast by shuffle.
// Masked keys get score NEG and p = 0; m starts at NEG, a finite sentinel,
// so no inf - inf ever happens; every processed tile holds at least one
// valid key for the query (key k0 <= i), so m is a real score after it.

#define ATT_WARPS 4
#define ATT_QPW   8
#define ATT_QB    (ATT_WARPS * ATT_QPW)
#define ATT_KT    32
#define ATT_NEG   (-1e30f)

// Shared floats: K [KT][dh|1], V [KT][dh], Q [QB][dh].
static size_t att_smem_bytes(int dh) {
    return sizeof(float) *
           ((size_t)ATT_KT * (size_t)(dh | 1) + (size_t)ATT_KT * dh + (size_t)ATT_QB * dh);
}

// Query slot (warp, k) of query tile qt: *i its row within the sequence;
// false when the slot is empty. Uniform over a warp.
__device__ __forceinline__ bool query_of(int pooled, int pq, int qt, int warp, int k, int L,
                                         int *i) {
    if (pooled) {
        *i = pq;
        return warp == 0 && k == 0;
    }
    *i = qt * ATT_QB + k * ATT_WARPS + warp;
    return *i < L;
}

template <typename T, int DPL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const int *__restrict__ start,
                     const int *__restrict__ len, const int *__restrict__ qrow, int width, int dh,
                     int causal, float scale) {
    extern __shared__ float smem[];
    const int ks = dh | 1;
    float *Ks = smem;             // [KT][ks]
    float *Vs = Ks + ATT_KT * ks; // [KT][dh]
    float *Qs = Vs + ATT_KT * dh; // [QB][dh], slot warp*QPW + k
    const int s = blockIdx.z, h = blockIdx.y, qt = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int L = len[s];
    const size_t base = (size_t)start[s], ld = 3 * (size_t)width;
    const size_t hoff = (size_t)h * dh;
    const int pooled = qrow != nullptr;
    const int pq = pooled ? qrow[s] : 0;
    // Block-uniform exits (before any barrier).
    if (pooled ? qt > 0 : qt * ATT_QB >= L) return;
    if (L <= 0) return;
    const int qlast = pooled ? pq : min(L, (qt + 1) * ATT_QB) - 1;
    const int kmax = causal ? qlast + 1 : L; // keys 0 .. kmax-1 (kmax <= L)

    // Q slots, pre-scaled (invalid slots zero).
    for (int e = threadIdx.x; e < ATT_QB * dh; e += blockDim.x) {
        const int slot = e / dh, d = e - slot * dh;
        const int w = slot / ATT_QPW, k = slot - w * ATT_QPW;
        int i;
        const bool valid = query_of(pooled, pq, qt, w, k, L, &i);
        Qs[e] = valid ? to_f(qkv[(base + (size_t)i) * ld + hoff + d]) * scale : 0.f;
    }

    float m[ATT_QPW], l[ATT_QPW], o[ATT_QPW][DPL];
#pragma unroll
    for (int k = 0; k < ATT_QPW; k++) {
        m[k] = ATT_NEG;
        l[k] = 0.f;
#pragma unroll
        for (int c = 0; c < DPL; c++) o[k][c] = 0.f;
    }

    for (int k0 = 0; k0 < kmax; k0 += ATT_KT) {
        __syncthreads(); // the previous tile is consumed (first pass: Q is written)
        for (int e = threadIdx.x; e < ATT_KT * dh; e += blockDim.x) {
            const int r = e / dh, d = e - r * dh, j = k0 + r;
            float kv = 0.f, vv = 0.f;
            if (j < kmax) {
                const T *src = qkv + (base + (size_t)j) * ld + hoff + d;
                kv = to_f(src[width]);
                vv = to_f(src[2 * (size_t)width]);
            }
            Ks[r * ks + d] = kv;
            Vs[r * dh + d] = vv;
        }
        __syncthreads();
        const int j = k0 + lane;
        const float *kr = Ks + lane * ks;
#pragma unroll
        for (int k = 0; k < ATT_QPW; k++) {
            int i;
            if (!query_of(pooled, pq, qt, warp, k, L, &i)) continue;
            if (causal && k0 > i) continue; // the whole tile is masked for this query
            const float *q = Qs + (warp * ATT_QPW + k) * dh;
            float sc = 0.f;
            for (int d = 0; d < dh; d++) sc = fmaf(q[d], kr[d], sc);
            const bool ok = j < kmax && (!causal || j <= i);
            sc = ok ? sc : ATT_NEG;
            const float mn = fmaxf(m[k], warp_max(sc));
            const float alpha = __expf(m[k] - mn);
            const float p = ok ? __expf(sc - mn) : 0.f;
            m[k] = mn;
            l[k] = l[k] * alpha + p;
#pragma unroll
            for (int c = 0; c < DPL; c++) o[k][c] *= alpha;
#pragma unroll 8
            for (int jj = 0; jj < ATT_KT; jj++) {
                const float pj = __shfl_sync(FULL_MASK, p, jj);
                const float *vr = Vs + jj * dh;
#pragma unroll
                for (int c = 0; c < DPL; c++) {
                    const int d = lane + 32 * c;
                    if (d < dh) o[k][c] = fmaf(pj, vr[d], o[k][c]);
                }
            }
        }
    }

#pragma unroll
    for (int k = 0; k < ATT_QPW; k++) {
        int i;
        if (!query_of(pooled, pq, qt, warp, k, L, &i)) continue;
        const float lt = warp_sum(l[k]);
        const float inv = lt > 0.f ? 1.f / lt : 0.f;
        const size_t orow = pooled ? (size_t)s : base + (size_t)i;
        T *dst = out + orow * (size_t)width + hoff;
#pragma unroll
        for (int c = 0; c < DPL; c++) {
            const int d = lane + 32 * c;
            if (d < dh) dst[d] = from_f<T>(o[k][c] * inv);
        }
    }
}

template <typename T, int DPL>
static cudaError_t attention_launch(T *out, const T *qkv, const int *start, const int *len,
                                    const int *qrow, int nseq, int maxlen, int width, int heads,
                                    int causal, cudaStream_t stream) {
    const int dh = width / heads;
    const size_t smem = att_smem_bytes(dh);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(
            attention_kernel<T, DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    const unsigned qtiles = qrow ? 1u : (unsigned)((maxlen + ATT_QB - 1) / ATT_QB);
    dim3 grid(qtiles, (unsigned)heads, (unsigned)nseq);
    attention_kernel<T, DPL><<<grid, ATT_WARPS * 32, smem, stream>>>(
        out, qkv, start, len, qrow, width, dh, causal, 1.0f / sqrtf((float)dh));
    return cudaGetLastError();
}

template <typename T>
static cudaError_t attention_dispatch(void *out, const void *qkv, const int *start, const int *len,
                                      const int *qrow, int nseq, int maxlen, int width, int heads,
                                      int causal, cudaStream_t stream) {
    const int dpl = (width / heads + 31) / 32;
    T *o = (T *)out;
    const T *q = (const T *)qkv;
    switch (dpl) {
        case 1:
            return attention_launch<T, 1>(o, q, start, len, qrow, nseq, maxlen, width, heads,
                                          causal, stream);
        case 2:
            return attention_launch<T, 2>(o, q, start, len, qrow, nseq, maxlen, width, heads,
                                          causal, stream);
        case 3:
            return attention_launch<T, 3>(o, q, start, len, qrow, nseq, maxlen, width, heads,
                                          causal, stream);
        case 4:
            return attention_launch<T, 4>(o, q, start, len, qrow, nseq, maxlen, width, heads,
                                          causal, stream);
        default:
            return cudaErrorInvalidValue;
    }
}

cudaError_t sl_cu_attention(void *out, const void *qkv, int bf16, const int *start, const int *len,
                            const int *qrow, int nseq, int maxlen, int width, int heads, int causal,
                            cudaStream_t stream) {
    if (heads <= 0 || width % heads || width / heads > SL_CU_ATT_MAX_HEAD_DIM)
        return cudaErrorInvalidValue;
    if (nseq <= 0 || (!qrow && maxlen <= 0)) return cudaSuccess;
    if (nseq > 65535 || heads > 65535) return cudaErrorInvalidValue;
    if (bf16)
        return attention_dispatch<__nv_bfloat16>(out, qkv, start, len, qrow, nseq, maxlen, width,
                                                 heads, causal, stream);
    return attention_dispatch<float>(out, qkv, start, len, qrow, nseq, maxlen, width, heads, causal,
                                     stream);
}

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

__device__ __forceinline__ float act_f(float x, int act) {
    switch (act) {
        case SL_CU_ACT_GELU:
            return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
        case SL_CU_ACT_GELU_TANH:
            return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        case SL_CU_ACT_QUICK_GELU:
        default:
            return x / (1.f + __expf(-1.702f * x));
    }
}

template <typename T> __global__ void act_kernel(T *x, size_t n, int act) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = from_f<T>(act_f(to_f(x[i]), act));
}

cudaError_t sl_cu_act(void *x, int bf16, size_t n, int act, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    if (bf16)
        act_kernel<__nv_bfloat16><<<grid_for(n), 256, 0, stream>>>((__nv_bfloat16 *)x, n, act);
    else
        act_kernel<float><<<grid_for(n), 256, 0, stream>>>((float *)x, n, act);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------
// Patch im2col
// ---------------------------------------------------------------------------

template <typename T>
__global__ void im2col_kernel(T *__restrict__ cols, int ldc, const float *__restrict__ pixels,
                              int n, int C, int S, int p) {
    const int g = S / p, P = g * g, pp = p * p, kk = C * pp;
    const size_t total = (size_t)n * P * ldc;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t row = e / (size_t)ldc;
        const int col = (int)(e - row * (size_t)ldc);
        if (col >= kk) {
            cols[e] = from_f<T>(0.f);
            continue;
        }
        const size_t b = row / (size_t)P;
        const int cell = (int)(row - b * (size_t)P);
        const int gy = cell / g, gx = cell - gy * g;
        const int c = col / pp, rem = col - c * pp;
        const int ky = rem / p, kx = rem - ky * p;
        const size_t src = ((b * C + c) * S + (size_t)gy * p + ky) * S + (size_t)gx * p + kx;
        cols[e] = from_f<T>(pixels[src]);
    }
}

cudaError_t sl_cu_im2col(void *cols, int ldc, int bf16, const float *pixels, int n, int C, int S,
                         int p, cudaStream_t stream) {
    if (n <= 0 || p <= 0 || S < p) return cudaSuccess;
    if (ldc < C * p * p) return cudaErrorInvalidValue;
    const size_t g = (size_t)(S / p), total = (size_t)n * g * g * (size_t)ldc;
    if (bf16)
        im2col_kernel<__nv_bfloat16>
            <<<grid_for(total), 256, 0, stream>>>((__nv_bfloat16 *)cols, ldc, pixels, n, C, S, p);
    else
        im2col_kernel<float>
            <<<grid_for(total), 256, 0, stream>>>((float *)cols, ldc, pixels, n, C, S, p);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------
// Embeddings and gather
// ---------------------------------------------------------------------------

__global__ void vision_embed_kernel(float *__restrict__ x, const float *__restrict__ patch,
                                    const float *__restrict__ cls, const float *__restrict__ pos,
                                    int n, int P, int W) {
    const int T = P + 1;
    const size_t total = (size_t)n * T * W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)W;
        const int j = (int)(e - r * (size_t)W);
        const size_t b = r / (size_t)T;
        const int t = (int)(r - b * (size_t)T);
        const float v = t == 0 ? cls[j] : patch[(b * P + (size_t)(t - 1)) * W + j];
        x[e] = v + pos[(size_t)t * W + j];
    }
}

cudaError_t sl_cu_vision_embed(float *x, const float *patch, const float *cls, const float *pos,
                               int n, int P, int W, cudaStream_t stream) {
    const size_t total = (size_t)n * (size_t)(P + 1) * (size_t)W;
    if (n <= 0 || W <= 0) return cudaSuccess;
    vision_embed_kernel<<<grid_for(total), 256, 0, stream>>>(x, patch, cls, pos, n, P, W);
    return cudaGetLastError();
}

template <typename T>
__global__ void text_embed_kernel(float *__restrict__ x, const int32_t *__restrict__ rowtok,
                                  const int32_t *__restrict__ rowpos, const T *__restrict__ tok,
                                  const float *__restrict__ pos, int R, int W) {
    const size_t total = (size_t)R * W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)W;
        const int j = (int)(e - r * (size_t)W);
        x[e] = to_f(tok[(size_t)rowtok[r] * W + j]) + pos[(size_t)rowpos[r] * W + j];
    }
}

cudaError_t sl_cu_text_embed(float *x, const int32_t *rowtok, const int32_t *rowpos,
                             const void *tok, int tok_bf16, const float *pos, int R, int W,
                             cudaStream_t stream) {
    const size_t total = (size_t)R * (size_t)W;
    if (R <= 0 || W <= 0) return cudaSuccess;
    if (tok_bf16)
        text_embed_kernel<__nv_bfloat16><<<grid_for(total), 256, 0, stream>>>(
            x, rowtok, rowpos, (const __nv_bfloat16 *)tok, pos, R, W);
    else
        text_embed_kernel<float>
            <<<grid_for(total), 256, 0, stream>>>(x, rowtok, rowpos, (const float *)tok, pos, R, W);
    return cudaGetLastError();
}

__global__ void gather_rows_kernel(float *__restrict__ dst, const float *__restrict__ src,
                                   const int *__restrict__ idx, int n, int C) {
    const size_t total = (size_t)n * C;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t i = e / (size_t)C;
        const int j = (int)(e - i * (size_t)C);
        dst[e] = src[(size_t)idx[i] * C + j];
    }
}

cudaError_t sl_cu_gather_rows(float *dst, const float *src, const int *idx, int n, int C,
                              cudaStream_t stream) {
    const size_t total = (size_t)n * (size_t)C;
    if (n <= 0 || C <= 0) return cudaSuccess;
    gather_rows_kernel<<<grid_for(total), 256, 0, stream>>>(dst, src, idx, n, C);
    return cudaGetLastError();
}

cudaError_t sl_cu_probe(void) {
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, layernorm_kernel<float>);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&a, attention_kernel<__nv_bfloat16, 2>);
    if (e != cudaSuccess) cudaGetLastError(); // clear it
    return e;
}
