// kernels/cuda/transformer.cuh - the CUDA kernels of the transformer
// forward pass (the encoder's GPU towers, encoder/clip_gpu.cu): LayerNorm,
// fused attention, activations, patch im2col, embeddings, row gather.
//
// Every matrix is row-major. "Activation" buffers (LayerNorm outputs, qkv,
// attention outputs, MLP hidden, im2col) are BF16 when `bf16` is set, else
// F32; the residual stream x and every small parameter vector (LayerNorm
// weights, pending biases, positions, class token) are always F32.
//
// Launchers enqueue on `stream` and return cudaGetLastError() of the launch
// (asynchronous failures surface at the caller's next synchronisation).
// Sizes are the caller's contract (see each comment); offsets are computed in
// size_t, so R * C may exceed 2^31.
#ifndef SL_KERNELS_CUDA_TRANSFORMER_CUH
#define SL_KERNELS_CUDA_TRANSFORMER_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

// Activation codes (the values of sl_activation in sightline/encoder.h).
enum { SL_CU_ACT_QUICK_GELU = 0, SL_CU_ACT_GELU = 1, SL_CU_ACT_GELU_TANH = 2 };

// Largest head dimension the attention kernel handles.
#define SL_CU_ATT_MAX_HEAD_DIM 128

// cudaSuccess when this binary has kernels for the current device (else
// cudaErrorNoKernelImageForDevice or cudaErrorInvalidDeviceFunction).
cudaError_t sl_cu_probe(void);

// out [N, C] = LN(x += bias) * w + b per row: x [N, C] F32 gets bias [C]
// added in place first when bias is non-NULL (the pending bias of the
// previous residual matmul); mean and variance are two-pass over the updated
// row, rstd = 1 / sqrt(var + eps). out is BF16 when out_bf16, else F32; an
// F32 out may equal x (in place). One warp per row.
cudaError_t sl_cu_layernorm(void *out, int out_bf16, float *x, const float *bias, const float *w,
                            const float *b, int N, int C, float eps, cudaStream_t stream);

// The same in F32 saving mean [N] and rstd [N] (the training forward,
// sl_op_residual_layernorm_forward's contract).
cudaError_t sl_cu_layernorm_stats(float *out, float *mean, float *rstd, float *x, const float *bias,
                                  const float *w, const float *b, int N, int C, float eps,
                                  cudaStream_t stream);

// Multi-head self-attention over packed sequences (sl_op_attention_forward's
// contract). qkv [rows, 3W] (BF16 when bf16): per row q | k | v, head h at
// columns h*dh .. h*dh+dh-1 of each third, dh = W / heads <=
// SL_CU_ATT_MAX_HEAD_DIM; scale 1/sqrt(dh). Sequence s is rows start[s] ..
// start[s] + len[s] - 1 (start, len, qrow: device arrays [nseq]).
// qrow NULL: out [rows, W] gets every row of every sequence; maxlen >= every
//   len[s] (it sizes the grid).
// qrow non-NULL: out [nseq, W] row s gets query row start[s] + qrow[s] only
//   (qrow[s] < len[s]); maxlen is ignored.
// causal: row i attends to rows <= i of its sequence.
// One block per (32 queries, head, sequence); keys and values stream through
// shared memory in tiles of 32 with an online softmax, so any length works.
cudaError_t sl_cu_attention(void *out, const void *qkv, int bf16, const int *start, const int *len,
                            const int *qrow, int nseq, int maxlen, int width, int heads, int causal,
                            cudaStream_t stream);

// x [n] = act(x) in place (BF16 when bf16), act an SL_CU_ACT_* code.
cudaError_t sl_cu_act(void *x, int bf16, size_t n, int act, cudaStream_t stream);

// Patch extraction of a stride-p conv without padding (sl_op_im2col_patches):
// pixels [n, C, S, S] F32 -> cols [n*g*g, ldc] (BF16 when bf16), g = S/p:
// columns 0 .. C*p*p-1 as sl_op_im2col_patches, columns C*p*p .. ldc-1 zero
// (ldc >= C*p*p; padding keeps the GEMM's leading dimension a multiple of 8).
cudaError_t sl_cu_im2col(void *cols, int ldc, int bf16, const float *pixels, int n, int C, int S,
                         int p, cudaStream_t stream);

// Image tower input (sl_op_vision_embed_forward): x [n*(P+1), W] F32, row
// (b, 0) = cls + pos[0], row (b, 1+i) = patch [n*P, W] row b*P+i + pos[1+i].
cudaError_t sl_cu_vision_embed(float *x, const float *patch, const float *cls, const float *pos,
                               int n, int P, int W, cudaStream_t stream);

// Text tower input: x [R, W] F32 row r = tok [V, W] row rowtok[r] (BF16 when
// tok_bf16) + pos [ctx, W] row rowpos[r] (rowtok, rowpos: device [R], ids
// already validated).
cudaError_t sl_cu_text_embed(float *x, const int32_t *rowtok, const int32_t *rowpos,
                             const void *tok, int tok_bf16, const float *pos, int R, int W,
                             cudaStream_t stream);

// dst [n, C] = src rows idx[i] (F32; idx a device array [n]).
cudaError_t sl_cu_gather_rows(float *dst, const float *src, const int *idx, int n, int C,
                              cudaStream_t stream);

#endif
