// kernels/cuda/train_ops.cu - the GPU training kernels (see train_ops.h).
//
// Compiled with the library's --use_fast_math (FMA contraction, fast float
// division/sqrt, __expf, flush-to-zero). Where the result must equal the
// CPU's bit for bit (AdamW, the gradient norm, L2 normalisation's divisor,
// the InfoNCE softmax) the code spells the IEEE operations out with the
// __f*_rn / __d*_rn intrinsics (never contracted, correctly rounded) and
// uses double-precision functions (unaffected by fast math).

#include "kernels/cuda/train_ops.h"

#include "kernels/cpu/loss.h" // SL_LOSS_MAX_LOG_SCALE
#include "kernels/kernels.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/warp.cuh"

struct sl_cu_train {
    int dev;
    cudaStream_t stream;
    int own_stream;
    cublasHandle_t blas;
    void *scratch;
    size_t scratch_bytes;
    cublasHandle_t blas_bf; // BF16 tensor-core products (default math), made on first use
    void *bf_slot[2];       // BF16 operand scratch (sl_cu_bf16_scratch)
    size_t bf_slot_elems[2];
};

// ---------------------------------------------------------------------------
// Errors, context, memory
// ---------------------------------------------------------------------------

static sl_status cu_fail(const sl_cu_train *ctx, cudaError_t e, const char *what) {
    cudaGetLastError(); // clear a non-sticky error
    return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: %s: %s", ctx ? ctx->dev : -1, what,
                        cudaGetErrorString(e));
}

static sl_status blas_fail(const sl_cu_train *ctx, cublasStatus_t s, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: %s: %s", ctx->dev, what,
                        cublasGetStatusString(s));
}

#define CU_TRY(ctx, expr, what)                                                                    \
    do {                                                                                           \
        cudaError_t e_ = (expr);                                                                   \
        if (e_ != cudaSuccess) return cu_fail((ctx), e_, (what));                                  \
    } while (0)
#define LAUNCHED(ctx, what) CU_TRY(ctx, cudaGetLastError(), what)
#define BEGIN(ctx, what)                                                                           \
    do {                                                                                           \
        if (!(ctx)) return sl_set_error(SL_ERR_INVALID, "%s: no CUDA training context", what);     \
        CU_TRY(ctx, cudaSetDevice((ctx)->dev), "set device");                                      \
    } while (0)

extern "C" sl_status sl_cu_train_create(int dev, void *stream, sl_cu_train **out) {
    *out = NULL;
    sl_status st = sl_cuda_check_device(dev);
    if (st) return st;
    sl_cu_train *c = (sl_cu_train *)calloc(1, sizeof *c);
    if (!c) return sl_set_error(SL_ERR_NOMEM, "out of memory (CUDA training context)");
    c->dev = dev;
    cudaError_t e;
    cublasStatus_t b;
    if ((e = cudaSetDevice(dev)) != cudaSuccess) {
        st = cu_fail(c, e, "set device");
    } else if (stream) {
        c->stream = (cudaStream_t)stream;
    } else if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        st = cu_fail(c, e, "stream create");
    } else {
        c->own_stream = 1;
    }
    if (st == SL_OK && (b = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS)
        st = blas_fail(c, b, "cublasCreate");
    if (st == SL_OK &&
        ((b = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
         (b = cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH)) != CUBLAS_STATUS_SUCCESS))
        st = blas_fail(c, b, "cublas set-up");
    if (st != SL_OK) {
        sl_cu_train_destroy(c);
        return st;
    }
    *out = c;
    return SL_OK;
}

extern "C" void sl_cu_train_destroy(sl_cu_train *ctx) {
    if (!ctx) return;
    cudaSetDevice(ctx->dev);
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->blas_bf) cublasDestroy(ctx->blas_bf);
    if (ctx->scratch) cudaFree(ctx->scratch);
    for (int i = 0; i < 2; i++)
        if (ctx->bf_slot[i]) cudaFree(ctx->bf_slot[i]);
    if (ctx->own_stream) cudaStreamDestroy(ctx->stream);
    cudaGetLastError();
    free(ctx);
}

extern "C" sl_status sl_cu_train_sync(sl_cu_train *ctx) {
    BEGIN(ctx, "sl_cu_train_sync");
    CU_TRY(ctx, cudaStreamSynchronize(ctx->stream), "stream synchronize");
    return SL_OK;
}

extern "C" sl_status sl_cu_train_alloc(sl_cu_train *ctx, void **dptr, size_t bytes) {
    *dptr = NULL;
    BEGIN(ctx, "sl_cu_train_alloc");
    CU_TRY(ctx, cudaMalloc(dptr, bytes ? bytes : 1), "malloc");
    return SL_OK;
}

extern "C" void sl_cu_train_free(sl_cu_train *ctx, void *dptr) {
    if (!ctx || !dptr) return;
    cudaSetDevice(ctx->dev);
    cudaStreamSynchronize(ctx->stream);
    cudaFree(dptr);
}

extern "C" sl_status sl_cu_train_upload(sl_cu_train *ctx, void *dst, const void *src,
                                        size_t bytes) {
    BEGIN(ctx, "sl_cu_train_upload");
    if (!bytes) return SL_OK;
    CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream), "upload");
    CU_TRY(ctx, cudaStreamSynchronize(ctx->stream), "upload");
    return SL_OK;
}

extern "C" sl_status sl_cu_train_download(sl_cu_train *ctx, void *dst, const void *src,
                                          size_t bytes) {
    BEGIN(ctx, "sl_cu_train_download");
    if (!bytes) return SL_OK;
    CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream), "download");
    CU_TRY(ctx, cudaStreamSynchronize(ctx->stream), "download");
    return SL_OK;
}

extern "C" sl_status sl_cu_train_zero(sl_cu_train *ctx, void *dst, size_t bytes) {
    BEGIN(ctx, "sl_cu_train_zero");
    if (!bytes) return SL_OK;
    CU_TRY(ctx, cudaMemsetAsync(dst, 0, bytes, ctx->stream), "memset");
    return SL_OK;
}

// At least `bytes` of scratch (device). A growth waits for the stream so
// that no queued kernel still reads the old buffer.
static sl_status scratch(sl_cu_train *ctx, size_t bytes, void **out) {
    if (bytes > ctx->scratch_bytes) {
        CU_TRY(ctx, cudaStreamSynchronize(ctx->stream), "scratch (synchronize)");
        if (ctx->scratch) cudaFree(ctx->scratch);
        ctx->scratch = NULL;
        ctx->scratch_bytes = 0;
        size_t want = bytes + bytes / 4;
        CU_TRY(ctx, cudaMalloc(&ctx->scratch, want), "scratch malloc");
        ctx->scratch_bytes = want;
    }
    *out = ctx->scratch;
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------

// Block-wide sum (blockDim.x a multiple of 32, <= 1024, every thread calls
// it); fixed order, so deterministic. sh: 32 entries of shared memory. The
// result is returned to every thread.
template <typename T> __device__ T block_sum(T v, T *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T r = 0;
    for (int k = 0; k < nw; k++) r += sh[k]; // every thread, same order
    return r;
}

__device__ __forceinline__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = sh[0];
    for (int k = 1; k < nw; k++) r = fmaxf(r, sh[k]);
    return r;
}

static unsigned grid_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > ((size_t)1 << 20)) b = (size_t)1 << 20;
    return (unsigned)b;
}

// Activation derivatives (sl_op_act codes). The exact functions' derivatives;
// the CPU's vectorised forms are within 1e-6 of them.
__device__ __forceinline__ float act_grad(float x, int act) {
    switch (act) {
        case SL_OP_ACT_QUICK_GELU: {
            const float s = 1.0f / (1.0f + __expf(-1.702f * x));
            return s + 1.702f * x * s * (1.0f - s);
        }
        case SL_OP_ACT_GELU:
            return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
                   x * 0.39894228040143268f * __expf(-0.5f * x * x);
        case SL_OP_ACT_GELU_TANH: {
            const float c = 0.7978845608028654f, a = 0.044715f;
            // e = exp(2u) with 2u clamped to +-80 (finite e and a normal 1/(e+1)):
            // th = 1 - 2/(e+1), 1 - th^2 = 4 e/(e+1)^2, as the CPU
            float u2 = 2.0f * c * (x + a * x * x * x);
            u2 = fminf(fmaxf(u2, -80.0f), 80.0f);
            const float e = __expf(u2), inv = 1.0f / (e + 1.0f);
            const float th = 1.0f - 2.0f * inv, sech2 = 4.0f * (e * inv) * inv;
            return 0.5f * (1.0f + th) + 0.5f * x * sech2 * c * (1.0f + 3.0f * a * x * x);
        }
        default:
            return 1.0f;
    }
}

// ---------------------------------------------------------------------------
// Two-stage deterministic column sums
// ---------------------------------------------------------------------------
//
// Stage 1: block (32 columns x 8 row lanes) over a chunk of CS_ROWS rows:
// thread (c, y) sums rows r0 + y, r0 + y + 8, ... of column c in double, the
// 8 lanes are added in order into part[chunk][col] (and part2 for a second
// sum). Stage 2: one thread per column adds the chunks in order and adds
// the (float) total into the output. Both orders depend only on M and N.
//
// Modes: CS_PLAIN  v = A[r, c]
//        CS_ACT    g = dout[r, c] * act'(pre[r, c]) -> dpre[r, c] (written), v = g
//        CS_LN     v = dout * xhat (part), v2 = dout (part2), xhat = (x - mean) * rstd

#define CS_ROWS 64
enum { CS_PLAIN = 0, CS_ACT = 1, CS_LN = 2 };

template <int MODE>
__global__ void __launch_bounds__(256)
    colsum_stage1(double *part, double *part2, float *dpre, const float *a, int lda,
                  const float *__restrict__ pre, const float *__restrict__ x,
                  const float *__restrict__ mean, const float *__restrict__ rstd, int M, int N,
                  int act, int want_sum) {
    __shared__ double sh[8][33], sh2[8][33];
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int col = blockIdx.x * 32 + tx, chunk = blockIdx.y;
    const int r0 = chunk * CS_ROWS, r1 = min(M, r0 + CS_ROWS);
    double s = 0, s2 = 0;
    if (col < N) {
        for (int r = r0 + ty; r < r1; r += 8) {
            const size_t at = (size_t)r * lda + col;
            if (MODE == CS_PLAIN) {
                s += (double)a[at];
            } else if (MODE == CS_ACT) {
                // dpre may equal a (dout): read, then written by this thread only
                const float g = a[at] * act_grad(pre[at], act);
                dpre[at] = g;
                s += (double)g;
            } else {
                const float d = a[at];
                const float xh = (x[at] - mean[r]) * rstd[r];
                s += (double)(d * xh);
                s2 += (double)d;
            }
        }
    }
    if (!want_sum) return; // CS_ACT without dbias: the elementwise pass only
    sh[ty][tx] = s;
    sh2[ty][tx] = s2;
    __syncthreads();
    if (ty == 0 && col < N) {
        double t = 0, t2 = 0;
        for (int k = 0; k < 8; k++) {
            t += sh[k][tx];
            t2 += sh2[k][tx];
        }
        part[(size_t)chunk * N + col] = t;
        if (MODE == CS_LN) part2[(size_t)chunk * N + col] = t2;
    }
}

__global__ void colsum_stage2(float *out, float *out2, const double *part, const double *part2,
                              int nchunks, int N) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;
    if (out) {
        double t = 0;
        for (int k = 0; k < nchunks; k++) t += part[(size_t)k * N + col];
        out[col] += (float)t;
    }
    if (out2) {
        double t = 0;
        for (int k = 0; k < nchunks; k++) t += part2[(size_t)k * N + col];
        out2[col] += (float)t;
    }
}

// out (+= column sums) / out2 per MODE; see above. a [M, lda].
static sl_status colsum(sl_cu_train *ctx, int mode, float *out, float *out2, float *dpre,
                        const float *a, int lda, const float *pre, const float *x,
                        const float *mean, const float *rstd, int M, int N, int act,
                        const char *what) {
    if (M <= 0 || N <= 0) return SL_OK;
    const int nchunks = (M + CS_ROWS - 1) / CS_ROWS;
    if (nchunks > 65535)
        return sl_set_error(SL_ERR_LIMIT, "%s: %d rows (at most %d)", what, M, 65535 * CS_ROWS);
    const int want = out || out2;
    double *part = NULL, *part2 = NULL;
    if (want) {
        void *p = NULL;
        const size_t per = (size_t)nchunks * N;
        sl_status st = scratch(ctx, per * sizeof(double) * (mode == CS_LN ? 2 : 1), &p);
        if (st != SL_OK) return st;
        part = (double *)p;
        part2 = mode == CS_LN ? part + per : NULL;
    }
    const dim3 grid((unsigned)((N + 31) / 32), (unsigned)nchunks);
    if (mode == CS_PLAIN)
        colsum_stage1<CS_PLAIN><<<grid, 256, 0, ctx->stream>>>(part, part2, dpre, a, lda, pre, x,
                                                               mean, rstd, M, N, act, want);
    else if (mode == CS_ACT)
        colsum_stage1<CS_ACT><<<grid, 256, 0, ctx->stream>>>(part, part2, dpre, a, lda, pre, x,
                                                             mean, rstd, M, N, act, want);
    else
        colsum_stage1<CS_LN><<<grid, 256, 0, ctx->stream>>>(part, part2, dpre, a, lda, pre, x, mean,
                                                            rstd, M, N, act, want);
    LAUNCHED(ctx, what);
    if (want) {
        colsum_stage2<<<(unsigned)((N + 255) / 256), 256, 0, ctx->stream>>>(out, out2, part, part2,
                                                                            nchunks, N);
        LAUNCHED(ctx, what);
    }
    return SL_OK;
}

// ---------------------------------------------------------------------------
// LayerNorm backward
// ---------------------------------------------------------------------------

#define LNB_WARPS 8

// One warp per row: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)),
// g = dout * w.
__global__ void __launch_bounds__(LNB_WARPS * 32)
    ln_dx_kernel(float *__restrict__ dx, const float *__restrict__ dout,
                 const float *__restrict__ x, const float *__restrict__ mean,
                 const float *__restrict__ rstd, const float *__restrict__ w, int N, int C) {
    const int row = blockIdx.x * LNB_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return; // whole warp; no block barrier in this kernel
    const size_t base = (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    float sg = 0, sgx = 0;
    for (int j = lane; j < C; j += 32) {
        const float g = dout[base + j] * w[j];
        sg += g;
        sgx += g * ((x[base + j] - m) * r);
    }
    sg = warp_sum(sg) / (float)C;
    sgx = warp_sum(sgx) / (float)C;
    for (int j = lane; j < C; j += 32) {
        const float xh = (x[base + j] - m) * r;
        dx[base + j] += r * (dout[base + j] * w[j] - sg - xh * sgx);
    }
}

extern "C" sl_status sl_cu_layernorm_backward(sl_cu_train *ctx, float *dx, float *dw, float *db,
                                              const float *dout, const float *x, const float *mean,
                                              const float *rstd, const float *w, int N, int C) {
    BEGIN(ctx, "sl_cu_layernorm_backward");
    if (N <= 0 || C <= 0) return SL_OK;
    if (dx) {
        ln_dx_kernel<<<(unsigned)((N + LNB_WARPS - 1) / LNB_WARPS), LNB_WARPS * 32, 0,
                       ctx->stream>>>(dx, dout, x, mean, rstd, w, N, C);
        LAUNCHED(ctx, "layernorm backward (dx)");
    }
    if (!dw && !db) return SL_OK;
    return colsum(ctx, CS_LN, dw, db, NULL, dout, C, NULL, x, mean, rstd, N, C, 0,
                  "layernorm backward (dw, db)");
}

// ---------------------------------------------------------------------------
// Activation, matmul, bias backward
// ---------------------------------------------------------------------------

__global__ void act_backward_kernel(float *__restrict__ dx, const float *__restrict__ dout,
                                    const float *__restrict__ pre, size_t n, int act) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] += dout[i] * act_grad(pre[i], act);
}

extern "C" sl_status sl_cu_act_backward(sl_cu_train *ctx, float *dx, const float *dout,
                                        const float *pre, size_t n, sl_op_act act) {
    BEGIN(ctx, "sl_cu_act_backward");
    if (!n) return SL_OK;
    act_backward_kernel<<<grid_for(n, 256), 256, 0, ctx->stream>>>(dx, dout, pre, n, (int)act);
    LAUNCHED(ctx, "activation backward");
    return SL_OK;
}

extern "C" sl_status sl_cu_add_bias_backward(sl_cu_train *ctx, float *dbias, const float *dout,
                                             int n, int C) {
    BEGIN(ctx, "sl_cu_add_bias_backward");
    if (!dbias) return SL_OK;
    return colsum(ctx, CS_PLAIN, dbias, NULL, NULL, dout, C, NULL, NULL, NULL, NULL, n, C, 0,
                  "bias backward");
}

// dpre = dout * act'(pre) with dbias += its column sums, or dbias += the
// column sums of dout: the part of the matmul backward before the products.
// *g is the output gradient the products take (dpre or dout).
static sl_status matmul_backward_prelude(sl_cu_train *ctx, float *dbias, float *dpre,
                                         const float *dout, int lddo, const float *pre, int M,
                                         int N, sl_op_act act, const char *who, const float **g) {
    *g = dout;
    if (act != SL_OP_ACT_NONE) {
        if (!dpre || !pre)
            return sl_set_error(SL_ERR_INVALID, "%s: activation without pre / dpre", who);
        sl_status st = colsum(ctx, CS_ACT, dbias, NULL, dpre, dout, lddo, pre, NULL, NULL, NULL, M,
                              N, (int)act, "matmul backward (activation, dbias)");
        if (st != SL_OK) return st;
        *g = dpre;
    } else if (dbias) {
        sl_status st = colsum(ctx, CS_PLAIN, dbias, NULL, NULL, dout, lddo, NULL, NULL, NULL, NULL,
                              M, N, 0, "matmul backward (dbias)");
        if (st != SL_OK) return st;
    }
    return SL_OK;
}

// Row-major operands on column-major cuBLAS: a row-major X [r, c] with
// leading dimension ld is the column-major X^T [c, r] with the same ld.
extern "C" sl_status sl_cu_matmul_backward(sl_cu_train *ctx, float *din, int lddin, float *dw,
                                           float *dbias, float *dpre, const float *dout, int lddo,
                                           const float *in, int ldi, const float *w, int w_kn,
                                           const float *pre, int M, int K, int N, sl_op_act act) {
    BEGIN(ctx, "sl_cu_matmul_backward");
    if (M <= 0 || N <= 0) return SL_OK;
    const float *g = NULL;
    sl_status st = matmul_backward_prelude(ctx, dbias, dpre, dout, lddo, pre, M, N, act,
                                           "sl_cu_matmul_backward", &g);
    if (st != SL_OK) return st;
    const float one = 1.0f;
    cublasStatus_t s;
    if (dw && K > 0) {
        if (w_kn) // dW [K, N] += in^T . g  ==  col-major dW^T [N, K] += g^T [N, M] . in [M, K]
            s = cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, N, K, M, &one, g, lddo, in, ldi,
                            &one, dw, N);
        else // dW [N, K] += g^T . in  ==  col-major dW^T [K, N] += in^T [K, M] . g [M, N]
            s = cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, &one, in, ldi, g, lddo,
                            &one, dw, K);
        if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, s, "matmul backward (dW sgemm)");
    }
    if (din && K > 0) {
        // din [M, K] += g [M, N] . W [N, K]  ==  col-major din^T [K, M] += W^T [K, N] . g^T [N, M]
        // (w_kn: W [K, N] row-major is col-major [N, K]; transposed it is W [K, N])
        s = cublasSgemm(ctx->blas, w_kn ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, &one, w,
                        w_kn ? N : K, g, lddo, &one, din, lddin);
        if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, s, "matmul backward (dX sgemm)");
    }
    return SL_OK;
}

// The products of sl_cu_matmul_backward in BF16: the output gradient and the
// input rounded to BF16 (contiguous, scratch slots 0 and 1), the weight's
// BF16 copy, F32 accumulation into dw / din.
extern "C" sl_status sl_cu_matmul_backward_bf16(sl_cu_train *ctx, float *din, int lddin, float *dw,
                                                float *dbias, float *dpre, const float *dout,
                                                int lddo, const float *in, int ldi,
                                                const uint16_t *w_bf16, int w_kn, const float *pre,
                                                int M, int K, int N, sl_op_act act) {
    BEGIN(ctx, "sl_cu_matmul_backward_bf16");
    if (M <= 0 || N <= 0) return SL_OK;
    const float *g = NULL;
    sl_status st = matmul_backward_prelude(ctx, dbias, dpre, dout, lddo, pre, M, N, act,
                                           "sl_cu_matmul_backward_bf16", &g);
    if (st != SL_OK || K <= 0 || (!dw && !din)) return st;
    uint16_t *gb = NULL, *inb = NULL;
    if ((st = sl_cu_bf16_scratch(ctx, 0, (size_t)M * N, &gb))) return st;
    if ((st = sl_cu_f32_to_bf16_2d(ctx, gb, g, M, N, lddo))) return st;
    if (dw) {
        if ((st = sl_cu_bf16_scratch(ctx, 1, (size_t)M * K, &inb))) return st;
        if ((st = sl_cu_f32_to_bf16_2d(ctx, inb, in, M, K, ldi))) return st;
        if (w_kn)
            st = sl_cu_gemm_bf16(ctx, 0, 1, N, K, M, gb, N, inb, K, 1.0f, dw, N);
        else
            st = sl_cu_gemm_bf16(ctx, 0, 1, K, N, M, inb, K, gb, N, 1.0f, dw, K);
        if (st != SL_OK) return st;
    }
    if (din)
        st = sl_cu_gemm_bf16(ctx, w_kn, 0, K, M, N, w_bf16, w_kn ? N : K, gb, N, 1.0f, din, lddin);
    return st;
}

// ---------------------------------------------------------------------------
// Attention backward
// ---------------------------------------------------------------------------
//
// Block = 8 warps = one (sequence, head). Tiles of AT queries / keys; in a
// tile pass warp w handles tile rows r = w + 8k (k < 4), lane c the key
// column c; dK / dV accumulators: warp w owns key rows w + 8k, lane the
// dimensions lane + 32 cc (cc < DC); dQ likewise for query rows.
// Shared memory: Qs, dOs (query tile), Ks, Vs (key tile) [AT][lds] with an
// odd stride lds (conflict-free column reads), Ps, dSs [AT][AT + 1], and the
// per-query statistics m, 1/l, D [stat_cap].
//
// Queries: local index li in [0, nq), row q0 + li of the sequence (q0 =
// qrow[s], nq = 1 in pooled mode; else q0 = 0, nq = L). Key j is valid for
// row i when j < nk and (!causal or j <= i). Masked scores contribute
// exactly 0 (not exp of a sentinel); the first key tile always holds key 0,
// valid for every query, so m is a real score after it.

#define AT        32
#define AT_WARPS  8
#define AT_NEG    -1.0e30f
#define AT_ROWS_W (AT / AT_WARPS) // 4 tile rows per warp

struct att_args {
    float *dqkv;
    const float *dout;
    const float *qkv;
    const int *start, *len, *qrow;
    int lddo, width, heads, causal, stat_cap;
    float scale;
};

// Load rows [r0, r0 + AT) of a [*, ld] matrix (rows >= cnt zero) into tile.
__device__ __forceinline__ void at_load(float *tile, int lds, const float *src, size_t ld, int r0,
                                        int cnt, int dh) {
    for (int e = threadIdx.x; e < AT * dh; e += AT_WARPS * 32) {
        const int r = e / dh, d = e - r * dh;
        tile[r * lds + d] = r0 + r < cnt ? src[(size_t)(r0 + r) * ld + d] : 0.0f;
    }
}

template <int DC> __global__ void __launch_bounds__(AT_WARPS * 32) att_bwd_kernel(att_args a) {
    extern __shared__ float sm[];
    const int s = blockIdx.y, h = blockIdx.x;
    const int L = a.len[s];
    if (L <= 0) return; // block-uniform: before any barrier
    const int dh = a.width / a.heads, ld3 = 3 * a.width, lds = dh | 1;
    const int q0 = a.qrow ? a.qrow[s] : 0, nq = a.qrow ? 1 : L;
    const int nk = a.causal ? min(L, q0 + nq) : L;
    if (nq > a.stat_cap || q0 < 0 || q0 + nq > L) __trap(); // the caller's contract
    float *Qs = sm, *dOs = Qs + AT * lds, *Ks = dOs + AT * lds, *Vs = Ks + AT * lds;
    float *Ps = Vs + AT * lds, *dSs = Ps + AT * (AT + 1);
    float *st_m = dSs + AT * (AT + 1), *st_il = st_m + a.stat_cap, *st_D = st_il + a.stat_cap;
    const size_t off = (size_t)a.start[s] * ld3 + (size_t)h * dh;
    const float *Q = a.qkv + off + (size_t)q0 * ld3, *K = a.qkv + off + a.width,
                *V = a.qkv + off + 2 * a.width;
    float *dQ = a.dqkv + off + (size_t)q0 * ld3, *dK = a.dqkv + off + a.width,
          *dV = a.dqkv + off + 2 * a.width;
    // dO row of local query li: row (start + li) of dout, or row s (pooled)
    const float *dO = a.qrow ? a.dout + (size_t)s * a.lddo + (size_t)h * dh
                             : a.dout + (size_t)a.start[s] * a.lddo + (size_t)h * dh;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float scale = a.scale;

    // ---- phase 1: per-query softmax statistics and D = sum_j p_ij dP_ij ----
    for (int lq0 = 0; lq0 < nq; lq0 += AT) {
        __syncthreads(); // previous readers of Qs / dOs are done
        at_load(Qs, lds, Q, ld3, lq0, nq, dh);
        at_load(dOs, lds, dO, a.lddo, lq0, nq, dh);
        float m[AT_ROWS_W], l[AT_ROWS_W], acc[AT_ROWS_W];
#pragma unroll
        for (int k = 0; k < AT_ROWS_W; k++) m[k] = AT_NEG, l[k] = 0.f, acc[k] = 0.f;
        // keys beyond the tile's last query are masked for all its rows (causal)
        const int kend = a.causal ? min(nk, q0 + min(nq, lq0 + AT)) : nk;
        for (int k0 = 0; k0 < kend; k0 += AT) {
            __syncthreads(); // Qs/dOs loaded; previous readers of Ks/Vs done
            at_load(Ks, lds, K, ld3, k0, nk, dh);
            at_load(Vs, lds, V, ld3, k0, nk, dh);
            __syncthreads();
#pragma unroll
            for (int k = 0; k < AT_ROWS_W; k++) {
                const int r = warp + AT_WARPS * k, li = lq0 + r, i = q0 + li, j = k0 + lane;
                const bool ok = li < nq && j < nk && (!a.causal || j <= i);
                float sc = 0.f, dp = 0.f;
                for (int d = 0; d < dh; d++) {
                    sc += Qs[r * lds + d] * Ks[lane * lds + d];
                    dp += dOs[r * lds + d] * Vs[lane * lds + d];
                }
                sc *= scale;
                const float mn = fmaxf(m[k], warp_max(ok ? sc : AT_NEG));
                const float alpha = __expf(m[k] - mn);
                const float e = ok ? __expf(sc - mn) : 0.f;
                l[k] = l[k] * alpha + warp_sum(e);
                acc[k] = acc[k] * alpha + warp_sum(e * dp);
                m[k] = mn;
            }
        }
#pragma unroll
        for (int k = 0; k < AT_ROWS_W; k++) {
            const int li = lq0 + warp + AT_WARPS * k;
            if (lane == 0 && li < nq) {
                st_m[li] = m[k];
                st_il[li] = 1.0f / l[k];
                st_D[li] = acc[k] / l[k];
            }
        }
    }

    // ---- phase 2: per key tile, dK and dV in registers; dQ added per tile ----
    for (int k0 = 0; k0 < nk; k0 += AT) {
        __syncthreads(); // statistics written; previous readers of Ks/Vs done
        at_load(Ks, lds, K, ld3, k0, nk, dh);
        at_load(Vs, lds, V, ld3, k0, nk, dh);
        float dk[AT_ROWS_W][DC], dv[AT_ROWS_W][DC];
#pragma unroll
        for (int k = 0; k < AT_ROWS_W; k++)
#pragma unroll
            for (int cc = 0; cc < DC; cc++) dk[k][cc] = dv[k][cc] = 0.f;
        // causal: query tiles whose last row is before k0 see none of these keys
        int lq_first = 0;
        if (a.causal) lq_first = max(0, (k0 - q0) / AT * AT);
        for (int lq0 = lq_first; lq0 < nq; lq0 += AT) {
            __syncthreads(); // previous readers of Qs/dOs/Ps/dSs done
            at_load(Qs, lds, Q, ld3, lq0, nq, dh);
            at_load(dOs, lds, dO, a.lddo, lq0, nq, dh);
            __syncthreads();
#pragma unroll
            for (int k = 0; k < AT_ROWS_W; k++) {
                const int r = warp + AT_WARPS * k, li = lq0 + r, i = q0 + li, j = k0 + lane;
                const bool ok = li < nq && j < nk && (!a.causal || j <= i);
                float sc = 0.f, dp = 0.f;
                for (int d = 0; d < dh; d++) { // as phase 1: the same scores
                    sc += Qs[r * lds + d] * Ks[lane * lds + d];
                    dp += dOs[r * lds + d] * Vs[lane * lds + d];
                }
                sc *= scale;
                float p = 0.f, ds = 0.f;
                if (ok) {
                    p = __expf(sc - st_m[li]) * st_il[li];
                    ds = p * (dp - st_D[li]);
                }
                Ps[r * (AT + 1) + lane] = p;
                dSs[r * (AT + 1) + lane] = ds;
            }
            __syncthreads();
            // dV[j] += sum_r P[r][j] dO[r]; dK[j] += sum_r dS[r][j] Q[r] (scale at the end)
#pragma unroll
            for (int k = 0; k < AT_ROWS_W; k++) {
                const int jr = warp + AT_WARPS * k;
                for (int r = 0; r < AT; r++) {
                    const float pr = Ps[r * (AT + 1) + jr], dsr = dSs[r * (AT + 1) + jr];
#pragma unroll
                    for (int cc = 0; cc < DC; cc++) {
                        const int d = lane + 32 * cc;
                        if (d < dh) {
                            dv[k][cc] += pr * dOs[r * lds + d];
                            dk[k][cc] += dsr * Qs[r * lds + d];
                        }
                    }
                }
            }
            // dQ[i] += scale * sum_j dS[i][j] K[j] for the tile's rows
#pragma unroll
            for (int k = 0; k < AT_ROWS_W; k++) {
                const int qr = warp + AT_WARPS * k, li = lq0 + qr;
                if (li >= nq) continue; // warp-uniform; no barrier inside
                float q[DC];
#pragma unroll
                for (int cc = 0; cc < DC; cc++) q[cc] = 0.f;
                for (int c = 0; c < AT; c++) {
                    const float dsc = dSs[qr * (AT + 1) + c];
#pragma unroll
                    for (int cc = 0; cc < DC; cc++) {
                        const int d = lane + 32 * cc;
                        if (d < dh) q[cc] += dsc * Ks[c * lds + d];
                    }
                }
                float *dqr = dQ + (size_t)li * ld3;
#pragma unroll
                for (int cc = 0; cc < DC; cc++) {
                    const int d = lane + 32 * cc;
                    if (d < dh) dqr[d] += scale * q[cc];
                }
            }
        }
#pragma unroll
        for (int k = 0; k < AT_ROWS_W; k++) {
            const int j = k0 + warp + AT_WARPS * k;
            if (j >= nk) continue;
            float *dkr = dK + (size_t)j * ld3, *dvr = dV + (size_t)j * ld3;
#pragma unroll
            for (int cc = 0; cc < DC; cc++) {
                const int d = lane + 32 * cc;
                if (d < dh) {
                    dkr[d] += scale * dk[k][cc];
                    dvr[d] += dv[k][cc];
                }
            }
        }
    }
}

template <int DC>
static cudaError_t att_launch(const att_args &a, int nseq, size_t smem, cudaStream_t stream) {
    cudaError_t e = cudaFuncSetAttribute(att_bwd_kernel<DC>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    att_bwd_kernel<DC><<<dim3((unsigned)a.heads, (unsigned)nseq), AT_WARPS * 32, smem, stream>>>(a);
    return cudaGetLastError();
}

extern "C" sl_status sl_cu_attention_backward(sl_cu_train *ctx, float *dqkv, const float *dout,
                                              int lddo, const float *qkv, const int *start,
                                              const int *len, const int *qrow, int nseq, int width,
                                              int heads, int causal, int maxlen) {
    BEGIN(ctx, "sl_cu_attention_backward");
    if (nseq <= 0) return SL_OK;
    if (heads <= 0 || width % heads || width / heads > SL_CU_TRAIN_ATT_MAX_HEAD_DIM ||
        nseq > 65535 || heads > 65535 || maxlen <= 0)
        return sl_set_error(SL_ERR_INVALID,
                            "sl_cu_attention_backward: width %d, heads %d, nseq %d, maxlen %d "
                            "(head dim at most %d)",
                            width, heads, nseq, maxlen, SL_CU_TRAIN_ATT_MAX_HEAD_DIM);
    const int dh = width / heads, lds = dh | 1;
    const int stat_cap = qrow ? 1 : maxlen;
    const size_t smem =
        sizeof(float) * ((size_t)4 * AT * lds + 2 * AT * (AT + 1) + 3 * (size_t)stat_cap);
    int optin = 0;
    CU_TRY(ctx, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx->dev),
           "attention backward (device attribute)");
    if (smem > (size_t)optin)
        return sl_set_error(SL_ERR_LIMIT,
                            "sl_cu_attention_backward: maxlen %d needs %zu bytes of shared "
                            "memory (the device has %d)",
                            maxlen, smem, optin);
    att_args a;
    a.dqkv = dqkv;
    a.dout = dout;
    a.qkv = qkv;
    a.start = start;
    a.len = len;
    a.qrow = qrow;
    a.lddo = lddo;
    a.width = width;
    a.heads = heads;
    a.causal = causal ? 1 : 0;
    a.stat_cap = stat_cap;
    a.scale = 1.0f / sqrtf((float)dh);
    cudaError_t e;
    if (dh <= 32)
        e = att_launch<1>(a, nseq, smem, ctx->stream);
    else if (dh <= 64)
        e = att_launch<2>(a, nseq, smem, ctx->stream);
    else if (dh <= 96)
        e = att_launch<3>(a, nseq, smem, ctx->stream);
    else
        e = att_launch<4>(a, nseq, smem, ctx->stream);
    if (e != cudaSuccess) return cu_fail(ctx, e, "attention backward");
    return SL_OK;
}

// ---------------------------------------------------------------------------
// im2col, embeddings, gather (one owner per output element, CPU order)
// ---------------------------------------------------------------------------

__global__ void im2col_bwd_kernel(float *__restrict__ dpix, const float *__restrict__ dcols, int n,
                                  int C, int S, int p) {
    const int g = S / p, kk = C * p * p;
    const size_t total = (size_t)n * g * g * kk;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t rowi = e / kk;
        const int col = (int)(e - rowi * kk);
        const int gx = (int)(rowi % g), gy = (int)(rowi / g % g), b = (int)(rowi / ((size_t)g * g));
        const int c = col / (p * p), ky = col / p % p, kx = col % p;
        dpix[(((size_t)b * C + c) * S + gy * p + ky) * S + gx * p + kx] += dcols[e];
    }
}

extern "C" sl_status sl_cu_im2col_backward(sl_cu_train *ctx, float *dpixels, const float *dcols,
                                           int n, int C, int S, int p) {
    BEGIN(ctx, "sl_cu_im2col_backward");
    if (n <= 0 || C <= 0 || p <= 0 || S < p) return SL_OK;
    const size_t total = (size_t)n * (S / p) * (S / p) * C * p * p;
    im2col_bwd_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>(dpixels, dcols, n, C, S, p);
    LAUNCHED(ctx, "im2col backward");
    return SL_OK;
}

__global__ void add_rows_kernel(float *__restrict__ dst, const float *__restrict__ src, int n,
                                int P, int W) {
    // dpatch row r = (b, i) += dx row b * (P + 1) + 1 + i
    const size_t total = (size_t)n * P * W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / W;
        const int j = (int)(e - r * W);
        const size_t b = r / P, i = r % P;
        dst[e] += src[(b * (P + 1) + 1 + i) * W + j];
    }
}

__global__ void vis_pos_kernel(float *dcls, float *dpos, const float *__restrict__ dx, int n, int T,
                               int W) {
    const size_t total = (size_t)T * W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(e / W), j = (int)(e % W);
        float p = dpos ? dpos[e] : 0.f, c = t == 0 && dcls ? dcls[j] : 0.f;
        for (int b = 0; b < n; b++) {
            const float d = dx[((size_t)b * T + t) * W + j];
            p += d;
            c += d;
        }
        if (dpos) dpos[e] = p;
        if (t == 0 && dcls) dcls[j] = c;
    }
}

extern "C" sl_status sl_cu_vision_embed_backward(sl_cu_train *ctx, float *dpatch, float *dcls,
                                                 float *dpos, const float *dx, int n, int P,
                                                 int W) {
    BEGIN(ctx, "sl_cu_vision_embed_backward");
    if (n <= 0 || W <= 0 || P < 0) return SL_OK;
    if (dpatch && P > 0) {
        add_rows_kernel<<<grid_for((size_t)n * P * W, 256), 256, 0, ctx->stream>>>(dpatch, dx, n, P,
                                                                                   W);
        LAUNCHED(ctx, "vision embed backward (patches)");
    }
    if (dcls || dpos) {
        vis_pos_kernel<<<grid_for((size_t)(P + 1) * W, 256), 256, 0, ctx->stream>>>(dcls, dpos, dx,
                                                                                    n, P + 1, W);
        LAUNCHED(ctx, "vision embed backward (class, positions)");
    }
    return SL_OK;
}

// One thread per (token u, column j): dtok[tok[u]][j] += dx rows in order.
__global__ void tok_bwd_kernel(float *dtok, const float *__restrict__ dx,
                               const int32_t *__restrict__ tok, const int32_t *__restrict__ off,
                               const int32_t *__restrict__ row, int W) {
    const int u = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= W) return;
    float *o = dtok + (size_t)tok[u] * W + j;
    float acc = *o;
    for (int k = off[u]; k < off[u + 1]; k++) acc += dx[(size_t)row[k] * W + j];
    *o = acc;
}

// One thread per (position t, column j): dpos[t][j] += dx rows start[s] + t, s in order.
__global__ void text_pos_kernel(float *dpos, const float *__restrict__ dx,
                                const int *__restrict__ start, const int *__restrict__ len,
                                int nseq, int ctx_len, int W) {
    const size_t total = (size_t)ctx_len * W;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(e / W), j = (int)(e % W);
        float acc = dpos[e];
        for (int s = 0; s < nseq; s++)
            if (t < len[s]) acc += dx[((size_t)start[s] + t) * W + j];
        dpos[e] = acc;
    }
}

extern "C" sl_status sl_cu_text_embed_backward(sl_cu_train *ctx, float *dtok, float *dpos,
                                               const float *dx, const int32_t *tok,
                                               const int32_t *off, const int32_t *row, int ntok,
                                               const int *start, const int *len, int nseq,
                                               int ctx_len, int W) {
    BEGIN(ctx, "sl_cu_text_embed_backward");
    if (W <= 0) return SL_OK;
    if (ntok > 65535)
        return sl_set_error(SL_ERR_LIMIT,
                            "sl_cu_text_embed_backward: %d distinct tokens (at "
                            "most 65535 per call)",
                            ntok);
    if (dtok && ntok > 0) {
        tok_bwd_kernel<<<dim3((unsigned)((W + 127) / 128), (unsigned)ntok), 128, 0, ctx->stream>>>(
            dtok, dx, tok, off, row, W);
        LAUNCHED(ctx, "text embed backward (tokens)");
    }
    if (dpos && nseq > 0 && ctx_len > 0) {
        text_pos_kernel<<<grid_for((size_t)ctx_len * W, 256), 256, 0, ctx->stream>>>(
            dpos, dx, start, len, nseq, ctx_len, W);
        LAUNCHED(ctx, "text embed backward (positions)");
    }
    return SL_OK;
}

// Host: the token plan (counting by sort of (token, order) keys).
static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

extern "C" sl_status sl_cu_token_plan(const int32_t *ids, const int *start, const int *len,
                                      int nseq, int ctx, int vocab, int32_t *tok, int32_t *off,
                                      int32_t *row, int *ntok) {
    *ntok = 0;
    size_t nrows = 0;
    for (int s = 0; s < nseq; s++) {
        if (len[s] < 0 || len[s] > ctx)
            return sl_set_error(SL_ERR_INVALID,
                                "sl_cu_token_plan: sequence %d has length %d "
                                "(context %d)",
                                s, len[s], ctx);
        nrows += (size_t)len[s];
    }
    if (nrows > 0x7fffffffu) return sl_set_error(SL_ERR_LIMIT, "sl_cu_token_plan: %zu rows", nrows);
    uint64_t *key = (uint64_t *)malloc((nrows ? nrows : 1) * sizeof *key);
    int32_t *byk = (int32_t *)malloc((nrows ? nrows : 1) * sizeof *byk);
    if (!key || !byk) {
        free(key);
        free(byk);
        return sl_set_error(SL_ERR_NOMEM, "out of memory (token plan, %zu rows)", nrows);
    }
    size_t k = 0;
    for (int s = 0; s < nseq; s++)
        for (int t = 0; t < len[s]; t++, k++) {
            const int32_t id = ids[(size_t)s * ctx + t];
            if (id < 0 || id >= vocab) {
                free(key);
                free(byk);
                return sl_set_error(SL_ERR_INVALID,
                                    "sl_cu_token_plan: token id %d at sequence %d position %d "
                                    "outside [0, %d)",
                                    (int)id, s, t, vocab);
            }
            key[k] = (uint64_t)(uint32_t)id << 32 | (uint64_t)k; // (token, CPU order)
            byk[k] = start[s] + t;
        }
    qsort(key, nrows, sizeof *key, cmp_u64);
    int u = 0;
    for (size_t i = 0; i < nrows; i++) {
        const int32_t id = (int32_t)(key[i] >> 32);
        if (i == 0 || id != tok[u - 1]) {
            tok[u] = id;
            off[u] = (int32_t)i;
            u++;
        }
        row[i] = byk[(uint32_t)key[i]];
    }
    off[u] = (int32_t)nrows;
    *ntok = u;
    free(key);
    free(byk);
    return SL_OK;
}

// One thread per column: dsrc rows idx[i] += ddst row i in order.
__global__ void gather_bwd_kernel(float *dsrc, const float *__restrict__ ddst,
                                  const int *__restrict__ idx, int n, int C) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    for (int i = 0; i < n; i++) dsrc[(size_t)idx[i] * C + j] += ddst[(size_t)i * C + j];
}

extern "C" sl_status sl_cu_gather_rows_backward(sl_cu_train *ctx, float *dsrc, const float *ddst,
                                                const int *idx, int n, int C) {
    BEGIN(ctx, "sl_cu_gather_rows_backward");
    if (n <= 0 || C <= 0 || !dsrc) return SL_OK;
    gather_bwd_kernel<<<(unsigned)((C + 127) / 128), 128, 0, ctx->stream>>>(dsrc, ddst, idx, n, C);
    LAUNCHED(ctx, "gather backward");
    return SL_OK;
}

// ---------------------------------------------------------------------------
// L2 normalisation
// ---------------------------------------------------------------------------

#define NORM_MIN 1e-12f

__global__ void __launch_bounds__(256)
    l2n_fwd_kernel(float *y, float *norm, const float *x, int D) {
    __shared__ double sh[32];
    const size_t base = (size_t)blockIdx.x * D;
    double ss = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const double v = (double)x[base + j];
        ss += v * v;
    }
    ss = block_sum<double>(ss, sh);
    float nr = (float)sqrt(ss);
    if (!(nr > NORM_MIN)) nr = NORM_MIN;
    const float inv = __fdiv_rn(1.0f, nr);
    for (int j = threadIdx.x; j < D; j += blockDim.x) y[base + j] = __fmul_rn(x[base + j], inv);
    if (threadIdx.x == 0) norm[blockIdx.x] = nr; // after every read of x (y may equal x)
}

__global__ void __launch_bounds__(256)
    l2n_bwd_kernel(float *__restrict__ dx, const float *__restrict__ dy,
                   const float *__restrict__ y, const float *__restrict__ norm, int D) {
    __shared__ float sh[32];
    const size_t base = (size_t)blockIdx.x * D;
    const float nr = norm[blockIdx.x], inv = __fdiv_rn(1.0f, nr);
    float dot = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dot += y[base + j] * dy[base + j];
    dot = block_sum<float>(dot, sh);
    if (!(nr > NORM_MIN)) dot = 0; // below the clamp the divisor is a constant
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        dx[base + j] += (dy[base + j] - y[base + j] * dot) * inv;
}

extern "C" sl_status sl_cu_l2_normalize_forward(sl_cu_train *ctx, float *y, float *norm,
                                                const float *x, int n, int D) {
    BEGIN(ctx, "sl_cu_l2_normalize_forward");
    if (n <= 0 || D <= 0) return SL_OK;
    l2n_fwd_kernel<<<(unsigned)n, 256, 0, ctx->stream>>>(y, norm, x, D);
    LAUNCHED(ctx, "l2 normalize forward");
    return SL_OK;
}

extern "C" sl_status sl_cu_l2_normalize_backward(sl_cu_train *ctx, float *dx, const float *dy,
                                                 const float *y, const float *norm, int n, int D) {
    BEGIN(ctx, "sl_cu_l2_normalize_backward");
    if (n <= 0 || D <= 0) return SL_OK;
    l2n_bwd_kernel<<<(unsigned)n, 256, 0, ctx->stream>>>(dx, dy, y, norm, D);
    LAUNCHED(ctx, "l2 normalize backward");
    return SL_OK;
}

// ---------------------------------------------------------------------------
// InfoNCE
// ---------------------------------------------------------------------------

// Row softmax cross-entropy (sl_loss_xent_forward with the diagonal target):
// block per row; transposed: the row is column `row` of logits [B, B].
// probs row = softmax; rowloss[row] = log(sum) - (l[row] - max) in double.
// exp in double rounded to float: what libm's expf gives (almost always).
__global__ void __launch_bounds__(256)
    xent_rows_kernel(float *probs, double *rowloss, const float *__restrict__ logits, int B,
                     int transposed) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int i = blockIdx.x;
    const size_t rs = transposed ? (size_t)B : 1, base = transposed ? (size_t)i : (size_t)i * B;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < B; j += blockDim.x) mx = fmaxf(mx, logits[base + j * rs]);
    mx = block_max(mx, shf);
    float *p = probs + (size_t)i * B;
    double sum = 0;
    for (int j = threadIdx.x; j < B; j += blockDim.x) {
        const float e = (float)exp((double)__fsub_rn(logits[base + j * rs], mx));
        p[j] = e;
        sum += (double)e;
    }
    sum = block_sum<double>(sum, shd);
    const float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j < B; j += blockDim.x) p[j] = __fmul_rn(p[j], inv);
    if (threadIdx.x == 0) rowloss[i] = log(sum) - ((double)logits[base + i * rs] - (double)mx);
}

// loss = (sum of both row sets) / (2B), one block, fixed order.
__global__ void __launch_bounds__(256)
    infonce_total_kernel(float *loss, const double *rowloss, int n, int B) {
    __shared__ double sh[32];
    double s = 0;
    for (int k = threadIdx.x; k < n; k += blockDim.x) s += rowloss[k];
    s = block_sum<double>(s, sh);
    if (threadIdx.x == 0) *loss = (float)(s / (2.0 * B));
}

static float log_scale_clamped(float t) {
    return t < SL_LOSS_MAX_LOG_SCALE ? t : SL_LOSS_MAX_LOG_SCALE;
}

extern "C" sl_status sl_cu_infonce_forward(sl_cu_train *ctx, float *saved, float *loss,
                                           const float *img, const float *txt, float t, int B,
                                           int D) {
    BEGIN(ctx, "sl_cu_infonce_forward");
    if (B <= 0) return sl_cu_train_zero(ctx, loss, sizeof(float));
    const size_t BB = (size_t)B * B;
    float *logits = saved, *p_i2t = saved + BB, *p_t2i = saved + 2 * BB;
    const float s = expf(log_scale_clamped(t)), zero = 0.0f;
    // logits [B, B] = s img . txt^T  ==  col-major logits^T = txt . img^T
    cublasStatus_t bs = cublasSgemm(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, B, B, D, &s, txt, D, img,
                                    D, &zero, logits, B);
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, bs, "infonce forward (logits sgemm)");
    void *sp = NULL;
    sl_status st = scratch(ctx, 2 * (size_t)B * sizeof(double), &sp);
    if (st != SL_OK) return st;
    double *rowloss = (double *)sp;
    xent_rows_kernel<<<(unsigned)B, 256, 0, ctx->stream>>>(p_i2t, rowloss, logits, B, 0);
    LAUNCHED(ctx, "infonce forward (image rows)");
    xent_rows_kernel<<<(unsigned)B, 256, 0, ctx->stream>>>(p_t2i, rowloss + B, logits, B, 1);
    LAUNCHED(ctx, "infonce forward (text rows)");
    infonce_total_kernel<<<1, 256, 0, ctx->stream>>>(loss, rowloss, 2 * B, B);
    LAUNCHED(ctx, "infonce forward (total)");
    return SL_OK;
}

// G [B, B] = c (p_i2t + p_t2i^T - 2 I), and per row sum(G * logits) in double.
__global__ void __launch_bounds__(256)
    infonce_grad_kernel(float *G, double *rowgl, const float *__restrict__ logits,
                        const float *__restrict__ p_i2t, const float *__restrict__ p_t2i, float c,
                        int B) {
    __shared__ double sh[32];
    const int i = blockIdx.x;
    double gl = 0;
    for (int j = threadIdx.x; j < B; j += blockDim.x) {
        float g = __fmul_rn(c, __fadd_rn(p_i2t[(size_t)i * B + j], p_t2i[(size_t)j * B + i]));
        if (j == i) g = __fsub_rn(g, 2.0f * c);
        G[(size_t)i * B + j] = g;
        gl += (double)g * (double)logits[(size_t)i * B + j];
    }
    gl = block_sum<double>(gl, sh);
    if (threadIdx.x == 0) rowgl[i] = gl;
}

__global__ void infonce_dt_kernel(float *dt, const double *rowgl, int B) {
    double s = 0;
    for (int i = 0; i < B; i++) s += rowgl[i]; // one thread: fixed order
    *dt += (float)s;
}

extern "C" sl_status sl_cu_infonce_backward(sl_cu_train *ctx, float *dimg, float *dtxt, float *dt,
                                            float *scratch_bb, float dloss, const float *saved,
                                            const float *img, const float *txt, float t, int B,
                                            int D) {
    BEGIN(ctx, "sl_cu_infonce_backward");
    if (B <= 0) return SL_OK;
    const size_t BB = (size_t)B * B;
    const float *logits = saved, *p_i2t = saved + BB, *p_t2i = saved + 2 * BB;
    const float s = expf(log_scale_clamped(t)), one = 1.0f;
    const float c = dloss / (2.0f * (float)B);
    void *sp = NULL;
    sl_status st = scratch(ctx, (size_t)B * sizeof(double), &sp);
    if (st != SL_OK) return st;
    double *rowgl = (double *)sp;
    float *G = scratch_bb;
    infonce_grad_kernel<<<(unsigned)B, 256, 0, ctx->stream>>>(G, rowgl, logits, p_i2t, p_t2i, c, B);
    LAUNCHED(ctx, "infonce backward (logit gradient)");
    cublasStatus_t bs;
    if (dimg) { // dimg [B, D] += s G . txt  ==  col-major dimg^T += txt^T [D, B] . G^T [B, B]
        bs = cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, D, B, B, &s, txt, D, G, B, &one, dimg,
                         D);
        if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, bs, "infonce backward (dimg)");
    }
    if (dtxt) { // dtxt [B, D] += s G^T . img  ==  col-major dtxt^T += img^T [D, B] . G [B, B]
        bs = cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, D, B, B, &s, img, D, G, B, &one, dtxt,
                         D);
        if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, bs, "infonce backward (dtxt)");
    }
    if (dt && t <= SL_LOSS_MAX_LOG_SCALE) {
        infonce_dt_kernel<<<1, 1, 0, ctx->stream>>>(dt, rowgl, B);
        LAUNCHED(ctx, "infonce backward (dt)");
    }
    return SL_OK;
}

// ---------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------

#define ADAM_CHUNK 16384 // trainer/optim.c's CHUNK

extern "C" sl_status sl_cu_adam_pieces(const size_t *offset, const size_t *count, const int *decay,
                                       size_t nt, size_t n, int use_decay, sl_cu_adam_piece *out,
                                       size_t cap, size_t *np) {
    *np = 0;
    size_t at = 0;
    for (size_t i = 0; i < nt; i++) {
        if (offset[i] != at) break;
        at += count[i];
    }
    if (nt && at != n)
        return sl_set_error(SL_ERR_INVALID,
                            "sl_cu_adam_pieces: the tensors do not tile the parameter buffer");
    size_t k = 0;
#define CUT(lo, len, dec)                                                                          \
    for (size_t o_ = 0; o_ < (len); o_ += ADAM_CHUNK, k++)                                         \
        if (out && k < cap) {                                                                      \
            out[k].off = (uint64_t)((lo) + o_);                                                    \
            out[k].n = (uint32_t)((len)-o_ < ADAM_CHUNK ? (len)-o_ : ADAM_CHUNK);                  \
            out[k].decay = (dec);                                                                  \
        }
    if (nt) {
        for (size_t i = 0; i < nt; i++) CUT(offset[i], count[i], use_decay && decay[i] ? 1 : 0)
    } else {
        CUT((size_t)0, n, -1)
    }
#undef CUT
    *np = k;
    if (out && k > cap)
        return sl_set_error(SL_ERR_LIMIT, "sl_cu_adam_pieces: %zu pieces, room for %zu", k, cap);
    return SL_OK;
}

// Lane sums of optim.c's sumsq: thread (piece p, lane k) adds x^2, x =
// (float)(g * scale), over elements k, k + 8, ... below n8 = n & ~7, in order.
__global__ void sumsq_lanes_kernel(double *lanes, const float *__restrict__ g,
                                   const sl_cu_adam_piece *__restrict__ pc, size_t np,
                                   double scale) {
    const size_t gt = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gt >= np * 8) return;
    const size_t p = gt >> 3;
    const int k = (int)(gt & 7);
    const float *gp = g + pc[p].off;
    const uint32_t n8 = pc[p].n & ~7u;
    double acc = 0;
    for (uint32_t i = (uint32_t)k; i < n8; i += 8) {
        const double x = (double)__double2float_rn(__dmul_rn((double)gp[i], scale));
        acc = __dadd_rn(acc, __dmul_rn(x, x));
    }
    lanes[gt] = acc;
}

// Per piece: the tail elements, then the 8 lanes in order (optim.c's order).
__global__ void sumsq_piece_kernel(double *part, const double *__restrict__ lanes,
                                   const float *__restrict__ g,
                                   const sl_cu_adam_piece *__restrict__ pc, size_t np,
                                   double scale) {
    const size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= np) return;
    const float *gp = g + pc[p].off;
    double s = 0;
    for (uint32_t i = pc[p].n & ~7u; i < pc[p].n; i++) {
        const double x = (double)__double2float_rn(__dmul_rn((double)gp[i], scale));
        s = __dadd_rn(s, __dmul_rn(x, x));
    }
    for (int k = 0; k < 8; k++) s = __dadd_rn(s, lanes[p * 8 + k]);
    part[p] = s;
}

// The pieces in order; the norm; the gradient multiplier (clipping) and
// whether to update at all. ctl: [0] gs (float bits), [1] update flag.
__global__ void norm_finish_kernel(double *d_norm, float *ctl_gs, int *ctl_go,
                                   const double *__restrict__ part, size_t np, double grad_scale,
                                   double grad_clip) {
    double s = 0;
    for (size_t i = 0; i < np; i++) s = __dadd_rn(s, part[i]);
    const double norm = sqrt(s);
    *d_norm = norm;
    if (!ctl_gs) return;
    float gs = (float)grad_scale;
    int go = 1;
    if (grad_clip > 0) {
        if (!isfinite(norm)) {
            go = 0;
        } else {
            const double coef = grad_clip / __dadd_rn(norm, 1e-6);
            if (coef < 1.0) gs = (float)__dmul_rn(grad_scale, coef);
        }
    }
    *ctl_gs = gs;
    *ctl_go = go;
}

struct adam_k {
    float b1, b2, c1, c2, step_size, bc2_sqrt, eps, decay;
};

// One block per piece; optim.c's per-element IEEE operations in its order.
__global__ void __launch_bounds__(256)
    adamw_kernel(float *__restrict__ p, __nv_bfloat16 *__restrict__ pbf,
                 const float *__restrict__ g, float *__restrict__ mm, float *__restrict__ vv,
                 const sl_cu_adam_piece *__restrict__ pc, const float *__restrict__ ctl_gs,
                 const int *__restrict__ ctl_go, adam_k k) {
    if (!*ctl_go) return;
    const sl_cu_adam_piece q = pc[blockIdx.x];
    const float gs = *ctl_gs, decay = q.decay > 0 ? k.decay : 1.0f;
    for (uint32_t t = threadIdx.x; t < q.n; t += blockDim.x) {
        const size_t j = q.off + t;
        const float gj = __fmul_rn(g[j], gs);
        const float pj = __fmul_rn(p[j], decay);
        const float mj = __fadd_rn(__fmul_rn(mm[j], k.b1), __fmul_rn(gj, k.c1));
        const float vj = __fadd_rn(__fmul_rn(vv[j], k.b2), __fmul_rn(__fmul_rn(gj, gj), k.c2));
        mm[j] = mj;
        vv[j] = vj;
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), k.bc2_sqrt), k.eps);
        const float np_ = __fsub_rn(pj, __fmul_rn(k.step_size, __fdiv_rn(mj, denom)));
        p[j] = np_;
        if (pbf) pbf[j] = __float2bfloat16_rn(np_);
    }
}

// The norm into d_norm; with ctl_gs the clipping control as well.
static sl_status norm_pass(sl_cu_train *ctx, const float *grads, const sl_cu_adam_piece *pieces,
                           size_t np, double scale, double clip, double *d_norm, float **ctl_gs,
                           int **ctl_go) {
    void *sp = NULL;
    sl_status st = scratch(ctx, np * 9 * sizeof(double) + 64, &sp);
    if (st != SL_OK) return st;
    double *lanes = (double *)sp, *part = lanes + np * 8;
    float *gs = ctl_gs ? (float *)(part + np) : NULL;
    int *go = ctl_gs ? (int *)(part + np) + 4 : NULL;
    if (np) {
        sumsq_lanes_kernel<<<grid_for(np * 8, 256), 256, 0, ctx->stream>>>(lanes, grads, pieces, np,
                                                                           scale);
        LAUNCHED(ctx, "gradient norm (lanes)");
        sumsq_piece_kernel<<<grid_for(np, 256), 256, 0, ctx->stream>>>(part, lanes, grads, pieces,
                                                                       np, scale);
        LAUNCHED(ctx, "gradient norm (pieces)");
    }
    norm_finish_kernel<<<1, 1, 0, ctx->stream>>>(d_norm, gs, go, part, np, scale, clip);
    LAUNCHED(ctx, "gradient norm (total)");
    if (ctl_gs) *ctl_gs = gs, *ctl_go = go;
    return SL_OK;
}

extern "C" sl_status sl_cu_grad_norm(sl_cu_train *ctx, const float *grads,
                                     const sl_cu_adam_piece *pieces, size_t np, double scale,
                                     double *d_norm) {
    BEGIN(ctx, "sl_cu_grad_norm");
    return norm_pass(ctx, grads, pieces, np, scale, 0.0, d_norm, NULL, NULL);
}

extern "C" sl_status sl_cu_adamw_step(sl_cu_train *ctx, float *params, uint16_t *params_bf16,
                                      const float *grads, float *m, float *v,
                                      const sl_cu_adam_piece *pieces, size_t np,
                                      const sl_cu_adamw_hparams *hp, int64_t t, double lr,
                                      double grad_scale, double *d_norm) {
    BEGIN(ctx, "sl_cu_adamw_step");
    if (!hp || t < 1 || !isfinite(lr) || !isfinite(grad_scale))
        return sl_set_error(SL_ERR_INVALID, "sl_cu_adamw_step: bad step %lld, lr or scale",
                            (long long)t);
    if (np > 0x7fffffffu) return sl_set_error(SL_ERR_LIMIT, "sl_cu_adamw_step: %zu pieces", np);
    float *gs;
    int *go;
    sl_status st = norm_pass(ctx, grads, pieces, np, grad_scale, hp->grad_clip, d_norm, &gs, &go);
    if (st != SL_OK) return st;
    if (!np) return SL_OK;
    // the host constants exactly as optim.c computes them
    const double td = (double)t;
    const double bc1 = 1.0 - pow(hp->beta1, td), bc2 = 1.0 - pow(hp->beta2, td);
    adam_k k;
    k.b1 = (float)hp->beta1;
    k.b2 = (float)hp->beta2;
    k.c1 = 1.0f - k.b1;
    k.c2 = 1.0f - k.b2;
    k.step_size = (float)(lr / bc1);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = (float)hp->eps;
    k.decay = (float)(1.0 - lr * hp->weight_decay);
    adamw_kernel<<<(unsigned)np, 256, 0, ctx->stream>>>(params, (__nv_bfloat16 *)params_bf16, grads,
                                                        m, v, pieces, gs, go, k);
    LAUNCHED(ctx, "adamw update");
    return SL_OK;
}

// ---------------------------------------------------------------------------
// BF16 helpers
// ---------------------------------------------------------------------------

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src,
                                   size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_acc_kernel(float *__restrict__ dst, const __nv_bfloat16 *__restrict__ src,
                                float scale, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __fadd_rn(dst[i], __fmul_rn(scale, __bfloat162float(src[i])));
}

extern "C" sl_status sl_cu_f32_to_bf16(sl_cu_train *ctx, uint16_t *dst, const float *src,
                                       size_t n) {
    BEGIN(ctx, "sl_cu_f32_to_bf16");
    if (!n) return SL_OK;
    f32_to_bf16_kernel<<<grid_for(n, 256), 256, 0, ctx->stream>>>((__nv_bfloat16 *)dst, src, n);
    LAUNCHED(ctx, "f32 to bf16");
    return SL_OK;
}

extern "C" sl_status sl_cu_bf16_accumulate(sl_cu_train *ctx, float *dst, const uint16_t *src,
                                           float scale, size_t n) {
    BEGIN(ctx, "sl_cu_bf16_accumulate");
    if (!n) return SL_OK;
    bf16_acc_kernel<<<grid_for(n, 256), 256, 0, ctx->stream>>>(dst, (const __nv_bfloat16 *)src,
                                                               scale, n);
    LAUNCHED(ctx, "bf16 accumulate");
    return SL_OK;
}

__global__ void f32_to_bf16_2d_kernel(__nv_bfloat16 *__restrict__ dst,
                                      const float *__restrict__ src, int rows, int cols, int ld) {
    const size_t total = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)cols, c = i % (size_t)cols;
        dst[i] = __float2bfloat16_rn(src[r * (size_t)ld + c]);
    }
}

extern "C" sl_status sl_cu_f32_to_bf16_2d(sl_cu_train *ctx, uint16_t *dst, const float *src,
                                          int rows, int cols, int ld) {
    BEGIN(ctx, "sl_cu_f32_to_bf16_2d");
    if (rows <= 0 || cols <= 0) return SL_OK;
    if (ld < cols)
        return sl_set_error(SL_ERR_INVALID, "sl_cu_f32_to_bf16_2d: ld %d < cols %d", ld, cols);
    const size_t total = (size_t)rows * cols;
    f32_to_bf16_2d_kernel<<<grid_for(total, 256), 256, 0, ctx->stream>>>((__nv_bfloat16 *)dst, src,
                                                                         rows, cols, ld);
    LAUNCHED(ctx, "f32 to bf16 (2d)");
    return SL_OK;
}

extern "C" sl_status sl_cu_bf16_scratch(sl_cu_train *ctx, int slot, size_t elems, uint16_t **out) {
    *out = NULL;
    BEGIN(ctx, "sl_cu_bf16_scratch");
    if (slot < 0 || slot > 1)
        return sl_set_error(SL_ERR_INVALID, "sl_cu_bf16_scratch: slot %d", slot);
    if (elems > ctx->bf_slot_elems[slot]) {
        // grows once per shape seen; the queued work using the old buffer first
        CU_TRY(ctx, cudaStreamSynchronize(ctx->stream), "bf16 scratch (synchronize)");
        if (ctx->bf_slot[slot]) cudaFree(ctx->bf_slot[slot]);
        ctx->bf_slot[slot] = NULL;
        ctx->bf_slot_elems[slot] = 0;
        CU_TRY(ctx, cudaMalloc(&ctx->bf_slot[slot], elems * sizeof(uint16_t)),
               "malloc (bf16 scratch)");
        ctx->bf_slot_elems[slot] = elems;
    }
    *out = (uint16_t *)ctx->bf_slot[slot];
    return SL_OK;
}

extern "C" sl_status sl_cu_gemm_bf16(sl_cu_train *ctx, int trans_a, int trans_b, int m, int n,
                                     int k, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                                     float beta, float *C, int ldc) {
    BEGIN(ctx, "sl_cu_gemm_bf16");
    if (m <= 0 || n <= 0) return SL_OK;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    if (!ctx->blas_bf) {
        s = cublasCreate(&ctx->blas_bf);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(ctx->blas_bf, ctx->stream);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(ctx->blas_bf, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            if (ctx->blas_bf) cublasDestroy(ctx->blas_bf);
            ctx->blas_bf = NULL;
            return blas_fail(ctx, s, "cublas set-up (bf16)");
        }
    }
    const float one = 1.0f;
    s = cublasGemmEx(ctx->blas_bf, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                     trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF, lda, B,
                     CUDA_R_16BF, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, s, "bf16 gemm");
    return SL_OK;
}
