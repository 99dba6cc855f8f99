/*
 * kernels/cuda/train_ops.h - the GPU training kernels: backward passes of
 * the transformer ops, L2 normalisation + InfoNCE, AdamW, BF16 helpers.
 * Every op is the twin of a CPU op (kernels/cpu/ops.h, loss.h,
 * trainer/optim.c) with the same arguments and the same conventions:
 * gradients are ADDED into (+=), a NULL gradient pointer means "not
 * wanted", shapes and strides as in the CPU comment. Plain C: every buffer
 * argument is a DEVICE pointer (index arrays too: start, len, qrow, idx);
 * BF16 buffers are uint16_t bit patterns.
 *
 * Execution: ops enqueue on the context's stream and return without
 * waiting; a launch failure is SL_ERR_EXTERNAL naming the op, a bad size
 * SL_ERR_INVALID; asynchronous faults surface at sl_cu_train_sync. Calls on
 * one context are not thread-safe (shared scratch and cuBLAS handle).
 *
 * Determinism: no float atomics anywhere. Row reductions (dbias, LayerNorm
 * dw/db, the InfoNCE temperature gradient) are two-stage: fixed chunks of
 * rows summed in double per column, then the chunks in order; scatter-adds
 * (gather, token and position embeddings) give each output element to one
 * thread that adds in the CPU's order (bit-identical to the CPU). Results are
 * run-to-run identical on one GPU model (cuBLAS: same toolkit and device).
 *
 * Builds without CUDA link kernels/cuda/train_ops_none.c: every entry point
 * returns SL_ERR_UNSUPPORTED ("cuda:N requested but this build ... no CUDA").
 */
#ifndef SL_KERNELS_CUDA_TRAIN_OPS_H
#define SL_KERNELS_CUDA_TRAIN_OPS_H

#include "kernels/cpu/ops.h" /* sl_op_act */
#include "sightline/common.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Context and device memory                                                */
/* ------------------------------------------------------------------------ */

/* One device, one stream, one cuBLAS handle (FP32 math: no TF32) and a
 * scratch buffer that grows on demand (a growth synchronises the stream). */
typedef struct sl_cu_train sl_cu_train;

/* stream: a cudaStream_t, or NULL for a stream of the context's own.
 * SL_ERR_UNSUPPORTED naming "cuda:<dev>" when the device does not exist (or
 * the build has no CUDA). */
sl_status sl_cu_train_create(int dev, void *stream, sl_cu_train **out);
void sl_cu_train_destroy(sl_cu_train *ctx);
/* Waits for the stream; reports any asynchronous failure. */
sl_status sl_cu_train_sync(sl_cu_train *ctx);

/* cudaMalloc / cudaFree / copies that wait for the stream (test and set-up
 * helpers; bytes 0 is allowed). */
sl_status sl_cu_train_alloc(sl_cu_train *ctx, void **dptr, size_t bytes);
void sl_cu_train_free(sl_cu_train *ctx, void *dptr);
sl_status sl_cu_train_upload(sl_cu_train *ctx, void *dst, const void *src, size_t bytes);
sl_status sl_cu_train_download(sl_cu_train *ctx, void *dst, const void *src, size_t bytes);
sl_status sl_cu_train_zero(sl_cu_train *ctx, void *dst, size_t bytes);

/* ------------------------------------------------------------------------ */
/* Transformer backward (twins of kernels/cpu/ops_backward.c)               */
/* ------------------------------------------------------------------------ */

/* sl_op_residual_layernorm_backward: dx [N, C] += dL/dx (one warp per row,
 * float sums); dw, db [C] += column sums of dout * xhat, dout (two-stage,
 * double). */
sl_status sl_cu_layernorm_backward(sl_cu_train *ctx, float *dx, float *dw, float *db,
                                   const float *dout, const float *x, const float *mean,
                                   const float *rstd, const float *w, int N, int C);

/* sl_op_act_backward: dx [n] += dout * act'(pre) (dx aliases neither). */
sl_status sl_cu_act_backward(sl_cu_train *ctx, float *dx, const float *dout, const float *pre,
                             size_t n, sl_op_act act);

/* sl_op_matmul_backward: dpre = dout * act'(pre) fused with dbias += its
 * column sums (one kernel, two-stage deterministic), then cuBLAS sgemms
 * din += dpre . W and dw += dpre^T . in (or in^T . dpre when w_kn). */
sl_status sl_cu_matmul_backward(sl_cu_train *ctx, float *din, int lddin, float *dw, float *dbias,
                                float *dpre, const float *dout, int lddo, const float *in, int ldi,
                                const float *w, int w_kn, const float *pre, int M, int K, int N,
                                sl_op_act act);

/* sl_cu_matmul_backward with the two products in BF16 (mixed precision):
 * the output gradient (dpre, or dout) and `in` rounded to BF16 into the
 * context's scratch slots 0 and 1, w_bf16 the BF16 copy of W (same layout),
 * tensor-core products accumulated in F32 into din / dw. The activation and
 * bias part is sl_cu_matmul_backward's (F32). */
sl_status sl_cu_matmul_backward_bf16(sl_cu_train *ctx, float *din, int lddin, float *dw,
                                     float *dbias, float *dpre, const float *dout, int lddo,
                                     const float *in, int ldi, const uint16_t *w_bf16, int w_kn,
                                     const float *pre, int M, int K, int N, sl_op_act act);

/* sl_op_add_bias_backward: dbias [C] += column sums of dout [n, C]. */
sl_status sl_cu_add_bias_backward(sl_cu_train *ctx, float *dbias, const float *dout, int n, int C);

/* Largest head dimension of sl_cu_attention_backward. */
#define SL_CU_TRAIN_ATT_MAX_HEAD_DIM 128

/* sl_op_attention_backward (start, len, qrow: device arrays [nseq]; maxlen
 * >= every len[s], a contract: a longer sequence traps the kernel). One
 * block per (sequence, head) owns its rows x head columns of dqkv: softmax
 * statistics recomputed from qkv (online max / sum and D = rowsum(P dP) per
 * query), then for each tile of 32 keys the tiles of 32 queries: P and dS in
 * shared memory, dK and dV accumulated in registers, dQ added per key tile.
 * dh = width / heads <= SL_CU_TRAIN_ATT_MAX_HEAD_DIM. */
sl_status sl_cu_attention_backward(sl_cu_train *ctx, float *dqkv, const float *dout, int lddo,
                                   const float *qkv, const int *start, const int *len,
                                   const int *qrow, int nseq, int width, int heads, int causal,
                                   int maxlen);

/* sl_op_im2col_patches_backward (bit-identical: one element per pixel). */
sl_status sl_cu_im2col_backward(sl_cu_train *ctx, float *dpixels, const float *dcols, int n, int C,
                                int S, int p);

/* sl_op_vision_embed_backward (bit-identical: sums over images in order). */
sl_status sl_cu_vision_embed_backward(sl_cu_train *ctx, float *dpatch, float *dcls, float *dpos,
                                      const float *dx, int n, int P, int W);

/* The token scatter-add plan of sl_cu_text_embed_backward, built on the host
 * from the batch's ids (host arrays as sl_op_text_embed_forward's: ids
 * [nseq, ctx], start, len [nseq]): the rows (start[s] + t) that read each
 * distinct token, tokens ascending, rows in the CPU's (s, t) order.
 * tok [nrows], off [nrows + 1], row [nrows] are host arrays the caller
 * provides (nrows = sum of len); *ntok receives the distinct tokens; upload
 * the first ntok / ntok + 1 / nrows entries. SL_ERR_INVALID for an id
 * outside [0, vocab) or len[s] outside [0, ctx]; SL_ERR_NOMEM. */
sl_status sl_cu_token_plan(const int32_t *ids, const int *start, const int *len, int nseq, int ctx,
                           int vocab, int32_t *tok, int32_t *off, int32_t *row, int *ntok);

/* sl_op_text_embed_backward: dtok [V, W] rows tok[u] += the dx rows
 * row[off[u] .. off[u+1]) in order (one thread per (token, column): no
 * races, bit-identical); dpos [ctx, W] row t += dx rows start[s] + t over s
 * in order (start, len device [nseq]). tok, off, row: the device copy of
 * sl_cu_token_plan's output. */
sl_status sl_cu_text_embed_backward(sl_cu_train *ctx, float *dtok, float *dpos, const float *dx,
                                    const int32_t *tok, const int32_t *off, const int32_t *row,
                                    int ntok, const int *start, const int *len, int nseq,
                                    int ctx_len, int W);

/* sl_op_gather_rows_backward: dsrc rows idx[i] += ddst row i, in i order per
 * column (repeated indices add up; bit-identical). */
sl_status sl_cu_gather_rows_backward(sl_cu_train *ctx, float *dsrc, const float *ddst,
                                     const int *idx, int n, int C);

/* ------------------------------------------------------------------------ */
/* Loss (twins of kernels/cpu/loss.c)                                       */
/* ------------------------------------------------------------------------ */

/* sl_op_l2_normalize_forward / _backward (one block per row; the forward's
 * sum of squares in double as the CPU). */
sl_status sl_cu_l2_normalize_forward(sl_cu_train *ctx, float *y, float *norm, const float *x, int n,
                                     int D);
sl_status sl_cu_l2_normalize_backward(sl_cu_train *ctx, float *dx, const float *dy, const float *y,
                                      const float *norm, int n, int D);

/* sl_loss_infonce_forward: saved [3, B, B] as the CPU's; the loss goes to
 * the device float *loss (row terms in double, summed in a fixed order). */
sl_status sl_cu_infonce_forward(sl_cu_train *ctx, float *saved, float *loss, const float *img,
                                const float *txt, float t, int B, int D);

/* sl_loss_infonce_backward: scratch [B, B] device floats; dt a device float
 * [1] (or NULL). */
sl_status sl_cu_infonce_backward(sl_cu_train *ctx, float *dimg, float *dtxt, float *dt,
                                 float *scratch, float dloss, const float *saved, const float *img,
                                 const float *txt, float t, int B, int D);

/* ------------------------------------------------------------------------ */
/* AdamW (twin of trainer/optim.c)                                          */
/* ------------------------------------------------------------------------ */

/* A piece of the flat parameter buffer: at most 16384 floats inside one
 * tensor, as trainer/optim.c cuts it (the norm's summation order and the
 * per-tensor weight-decay flag). */
typedef struct sl_cu_adam_piece {
    uint64_t off;
    uint32_t n;
    int32_t decay; /* 1 decayed, 0 not, -1 norm only */
} sl_cu_adam_piece;

/* Host: the pieces of optim.c for tensors (offset[i], count[i], decay[i]),
 * nt of them tiling [0, n) in order (SL_ERR_INVALID otherwise), decay flags
 * kept only when use_decay (weight_decay != 0); nt == 0: sl_grad_norm's
 * pieces (decay -1). out NULL: *count receives the number needed. */
sl_status sl_cu_adam_pieces(const size_t *offset, const size_t *count, const int *decay, size_t nt,
                            size_t n, int use_decay, sl_cu_adam_piece *out, size_t cap, size_t *np);

typedef struct sl_cu_adamw_hparams {
    double beta1, beta2, eps, weight_decay, grad_clip; /* sl_adamw_config */
} sl_cu_adamw_hparams;

/* sl_grad_norm: *d_norm (device double) = sqrt of the sum over pieces (in
 * order) of each piece's sum of (float)(g * scale)^2 in double with
 * optim.c's eight partial sums: bit-identical to the CPU. */
sl_status sl_cu_grad_norm(sl_cu_train *ctx, const float *grads, const sl_cu_adam_piece *pieces,
                          size_t np, double scale, double *d_norm);

/* sl_adamw_step's update with step number t (the optimizer's t + 1),
 * pieces (device) from sl_cu_adam_pieces(..., use_decay = weight_decay != 0):
 * the norm as sl_cu_grad_norm with grad_scale into *d_norm (device double),
 * clipping coefficient computed on the device, then per element the CPU's
 * IEEE operations in its order (bit-identical to the CPU, denormals aside:
 * the GPU flushes them). With clipping and a non-finite norm nothing is
 * changed (the caller reads *d_norm). params_bf16 (or NULL): also writes the
 * updated weights rounded to BF16 (the mixed-precision compute copy). */
sl_status sl_cu_adamw_step(sl_cu_train *ctx, float *params, uint16_t *params_bf16,
                           const float *grads, float *m, float *v, const sl_cu_adam_piece *pieces,
                           size_t np, const sl_cu_adamw_hparams *hp, int64_t t, double lr,
                           double grad_scale, double *d_norm);

/* ------------------------------------------------------------------------ */
/* BF16 helpers                                                             */
/* ------------------------------------------------------------------------ */

/* dst [n] = src rounded to BF16 (nearest even). */
sl_status sl_cu_f32_to_bf16(sl_cu_train *ctx, uint16_t *dst, const float *src, size_t n);

/* dst [rows, cols] (contiguous) = src [rows, cols] (leading dimension ld
 * >= cols) rounded to BF16. */
sl_status sl_cu_f32_to_bf16_2d(sl_cu_train *ctx, uint16_t *dst, const float *src, int rows,
                               int cols, int ld);

/* A device buffer of at least `elems` BF16 values, slot 0 or 1, owned by
 * the context and reused: valid until the next call for the same slot with
 * a larger size (growing waits for the context's stream, then frees the
 * old one). */
sl_status sl_cu_bf16_scratch(sl_cu_train *ctx, int slot, size_t elems, uint16_t **out);

/* Column-major C [m, n] (F32, ldc) = op(A) op(B) + beta C with A, B BF16
 * (op = transpose when trans_*), F32 accumulation, on tensor cores (a cuBLAS
 * handle of the context's stream in default math mode). */
sl_status sl_cu_gemm_bf16(sl_cu_train *ctx, int trans_a, int trans_b, int m, int n, int k,
                          const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                          float *C, int ldc);

/* dst [n] (F32 master gradient) += scale * src (BF16 compute gradient). */
sl_status sl_cu_bf16_accumulate(sl_cu_train *ctx, float *dst, const uint16_t *src, float scale,
                                size_t n);

#ifdef __cplusplus
}
#endif

#endif
