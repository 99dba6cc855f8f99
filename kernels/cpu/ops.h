/*
 * kernels/cpu/ops.h - transformer forward ops on the CPU (OpenMP + BLAS),
 * llm.c style: op_forward(out, saved..., in, weights..., dims). Every buffer
 * is row-major float32; shapes are given in the comment above each op.
 *
 * Threading: the elementwise ops and attention parallelise over rows (or
 * sequences x heads) with OpenMP using the current omp_get_max_threads();
 * the matmuls call BLAS outside any parallel region so that OpenBLAS uses
 * its own threads. Inside attention's parallel region BLAS runs
 * single-threaded (OpenBLAS-openmp detects the enclosing region).
 *
 * None of these allocate; none fail (sizes are the caller's contract).
 */
#ifndef SL_KERNELS_CPU_OPS_H
#define SL_KERNELS_CPU_OPS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation applied after a matmul (fused with the bias). */
typedef enum sl_op_act {
    SL_OP_ACT_NONE,
    SL_OP_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) */
    SL_OP_ACT_GELU,       /* 0.5 x (1 + erf(x / sqrt 2)) */
    SL_OP_ACT_GELU_TANH   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
} sl_op_act;

/* Elementwise activation of x [n] in place (vectorised; |error| < 1e-6
 * relative to the exact functions). */
void sl_op_act_forward(float *x, size_t n, sl_op_act act);

/* out [M, ldo] (first N columns) = act(in [M, ldi] (first K columns) . W^T
 * + bias), W [N, K] (nn.Linear layout) or, when w_kn, W [K, N]. bias [N]
 * may be NULL. With `accumulate`, out += in . W^T instead (bias must be NULL
 * and act NONE: the bias is then added by the caller, e.g. fused into the
 * next sl_op_residual_layernorm_forward). One sgemm over all M rows, then
 * one fused bias+activation pass. */
void sl_op_matmul_forward(float *out, int ldo, const float *in, int ldi, const float *w, int w_kn,
                          const float *bias, int M, int K, int N, sl_op_act act, int accumulate);

/* LayerNorm over rows: out [N, C] = (x - mean) * rstd * w + b, where x [N, C]
 * first gets `bias` [C] added in place when bias is non-NULL (the pending
 * bias of the previous residual matmul). mean, rstd [N] are saved when
 * non-NULL (for the backward pass). out may equal x. One pass per row. */
void sl_op_residual_layernorm_forward(float *out, float *mean, float *rstd, float *x,
                                      const float *bias, const float *w, const float *b, int N,
                                      int C, float eps);

/* dst [n, C] = src rows idx[i] (src [*, C]); dst and src may not overlap. */
void sl_op_gather_rows(float *dst, const float *src, const int *idx, int n, int C);

/* x [n, C] += bias [C] (row broadcast). */
void sl_op_add_bias(float *x, const float *bias, int n, int C);

/* Softmax of each row of x [n, C] in place, over the first `valid[i]`
 * entries of row i (valid NULL: all C); entries past valid[i] are set to 0. */
void sl_op_softmax_rows(float *x, int n, int C, const int *valid);

/* Multi-head self-attention over packed sequences.
 * qkv [rows, 3W]: per row q | k | v, head h at columns h*dh .. h*dh+dh-1 of
 *   each third (dh = W / heads); attention scale 1/sqrt(dh).
 * Sequence s holds rows start[s] .. start[s] + len[s] - 1.
 * qrow NULL: out [rows, ldo] gets every row's output (concatenated heads);
 *   otherwise out [nseq, ldo] row s gets the output of query row
 *   start[s] + qrow[s] only (keys and values still from the whole sequence,
 *   or up to qrow[s] when causal).
 * causal: row i attends to rows <= i of its sequence (masked keys skipped).
 * scratch: [omp_get_max_threads(), maxlen * maxlen] floats, maxlen >=
 *   every len[s].
 * Parallel over sequences x heads; small sgemms inside. */
void sl_op_attention_forward(float *out, int ldo, const float *qkv, const int *start,
                             const int *len, const int *qrow, int nseq, int width, int heads,
                             int causal, float *scratch, int maxlen);

/* Patch extraction for a strided conv without padding: pixels [n, C, S, S]
 * -> cols [n * g * g, C * p * p] with g = S / p; row (b, gy, gx), column
 * (c, ky, kx) = pixels[b, c, gy*p + ky, gx*p + kx]. The conv is then one
 * sl_op_matmul_forward with the conv weight viewed as [W, C*p*p]. */
void sl_op_im2col_patches(float *cols, const float *pixels, int n, int C, int S, int p);

/* ======================================================================== */
/* Backward passes (kernels/cpu/ops_backward.c)                             */
/* ======================================================================== */
/*
 * op_backward(din, dweights..., dout, saved..., dims): every gradient
 * buffer is ADDED into (+=), never overwritten, so that a tensor used twice
 * (the residual stream, a tied weight) gets the sum of its gradients and
 * several losses can add into the same buffers. Any gradient pointer may be
 * NULL when that gradient is not wanted. Reductions over rows (dW, db,
 * dpos, ...) are race-free and deterministic: sgemm, or OpenMP over column
 * blocks. None of these allocate; scratch sizes are given per op.
 *
 * The training forward uses the inference ops above plus the few *_train /
 * embed forwards below; what each backward needs saved is stated with it.
 */

#include <stdint.h>

/* Derivative-based backward of an activation: dx [n] += dout [n] *
 * act'(pre [n]), pre the activation's input (exact derivatives, vectorised,
 * within 1e-6 of the exact functions'). dx may alias neither dout nor pre. */
void sl_op_act_backward(float *dx, const float *dout, const float *pre, size_t n, sl_op_act act);

/* Training forward of a linear: pre [M, ldo] (first N columns) = in [M, ldi]
 * . W^T + bias, out [M, ldo] = act(pre) (the same approximations as
 * sl_op_matmul_forward). With act NONE, pre is not written (may be NULL)
 * and this is sl_op_matmul_forward. Saves: pre (for the activation's
 * backward); the backward of the NEXT linear needs out (or recompute it from
 * pre with sl_op_act_forward on a copy, trading a [M, N] buffer for one
 * elementwise pass). */
void sl_op_matmul_forward_train(float *out, float *pre, int ldo, const float *in, int ldi,
                                const float *w, int w_kn, const float *bias, int M, int K, int N,
                                sl_op_act act);

/* Backward of out = act(in . W^T + bias) (either forward above; also of the
 * `accumulate` form out += in . W^T, whose dout is the residual gradient).
 * dout [M, lddo] (first N columns): gradient of out.
 * act != NONE: pre [M, lddo] is the saved pre-activation and dpre [M, lddo]
 *   receives dout * act'(pre) (written, not added; dpre may equal dout,
 *   which is then overwritten, but not pre). act NONE: pre and dpre unused
 *   (NULL).
 * din [M, lddin] (first K columns) += dpre . W   (NULL: not wanted, e.g.
 *   the pixels below a patch conv);
 * dw  += dpre^T . in: [N, K], or [K, N] when w_kn (in [M, ldi] saved);
 * dbias [N] += column sums of dpre.
 * Three sgemms (BLAS threads) plus one row-parallel activation pass. */
void sl_op_matmul_backward(float *din, int lddin, float *dw, float *dbias, float *dpre,
                           const float *dout, int lddo, const float *in, int ldi, const float *w,
                           int w_kn, const float *pre, int M, int K, int N, sl_op_act act);

/* Backward of sl_op_add_bias, and of the bias that a residual matmul
 * leaves pending and sl_op_residual_layernorm_forward folds in:
 * dbias [C] += column sums of dout [n, C]. For the folded bias call it with
 * the complete gradient of the residual stream at that point (after the
 * LayerNorm's backward has added into it), since the stream continues past
 * the LayerNorm. */
void sl_op_add_bias_backward(float *dbias, const float *dout, int n, int C);

/* Backward of out = LN(x) (sl_op_residual_layernorm_forward).
 * x [N, C]: the LayerNorm's input as the forward left it (bias folded in);
 * mean, rstd [N]: saved by the forward; w [C] the LN weight.
 * dx [N, C] += dL/dx (may already hold the residual stream's gradient);
 * dw, db [C] += sum over rows of dout * xhat, dout.
 * dout [N, C]. Row-parallel for dx, column-block-parallel for dw, db. */
void sl_op_residual_layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                                       const float *x, const float *mean, const float *rstd,
                                       const float *w, int N, int C);

/* Backward of sl_op_softmax_rows: y [n, C] the saved softmax output,
 * dx [n, C] += y * (dy - sum_j dy_j y_j) over the first valid[i] entries of
 * row i (valid NULL: all C); entries past valid[i] get nothing. */
void sl_op_softmax_rows_backward(float *dx, const float *dy, const float *y, int n, int C,
                                 const int *valid);

/* Backward of sl_op_gather_rows (pooling at the class / end-of-text token):
 * dsrc [*, C] rows idx[i] += ddst [n, C] row i (repeated indices add up).
 * Parallel over column blocks (no races). */
void sl_op_gather_rows_backward(float *dsrc, const float *ddst, const int *idx, int n, int C);

/* Backward of sl_op_attention_forward with the same layout arguments
 * (qkv, start, len, qrow, nseq, width, heads, causal, maxlen).
 * dqkv [rows, 3W] += gradient of q | k | v; dout: [rows, lddo] (qrow NULL)
 * or [nseq, lddo] (qrow given), the gradient of out. Rows outside every
 * sequence are left alone.
 * Saved: only qkv. The softmax probabilities are recomputed (one extra
 * Q.K^T sgemm per sequence x head, about a fifth of the backward's flops)
 * instead of being stored as [nseq, heads, L, L] per layer (e.g. 48 MB per
 * text layer at 256 x 77 tokens x 8 heads).
 * scratch: sl_op_attention_backward_scratch(maxlen) floats
 *   ([omp_get_max_threads(), 2 * maxlen * maxlen]: P and dP).
 * Parallel over sequences x heads (each task owns its rows x head columns
 * of dqkv); causal sequences in query blocks of 32 that skip masked keys. */
void sl_op_attention_backward(float *dqkv, const float *dout, int lddo, const float *qkv,
                              const int *start, const int *len, const int *qrow, int nseq,
                              int width, int heads, int causal, float *scratch, int maxlen);

/* Scratch floats sl_op_attention_backward needs at the current
 * omp_get_max_threads(). */
size_t sl_op_attention_backward_scratch(int maxlen);

/* Adjoint of sl_op_im2col_patches: dpixels [n, C, S, S] += dcols
 * [n * g * g, C * p * p] scattered back (pixels outside the g x g grid get
 * nothing). The patch conv's weight gradient needs no op of its own: it is
 * sl_op_matmul_backward(din = NULL, dw = dpatch_w, ..., in = cols) with
 * cols recomputed by sl_op_im2col_patches from the pixels (no need to
 * keep [n * P, 3 p^2] alive between forward and backward). */
void sl_op_im2col_patches_backward(float *dpixels, const float *dcols, int n, int C, int S, int p);

/* Image tower input: x [n * (P + 1), W], row (b, 0) = cls [W] + pos[0],
 * row (b, 1 + i) = patch [n * P, W] row (b * P + i) + pos[1 + i];
 * pos [P + 1, W]. */
void sl_op_vision_embed_forward(float *x, const float *patch, const float *cls, const float *pos,
                                int n, int P, int W);

/* Backward: dpatch [n * P, W] += the patch rows of dx [n * (P + 1), W];
 * dcls [W] += sum over images of row 0; dpos [P + 1, W] += sum over images.
 * Nothing saved. */
void sl_op_vision_embed_backward(float *dpatch, float *dcls, float *dpos, const float *dx, int n,
                                 int P, int W);

/* Text tower input over packed sequences: x row start[s] + t = tok [V, W]
 * row ids[s * ctx + t] + pos [ctx, W] row t, for t < len[s] <= ctx;
 * ids [nseq, ctx] (only the first len[s] of each row are read). */
void sl_op_text_embed_forward(float *x, const int32_t *ids, const float *tok, const float *pos,
                              const int *start, const int *len, int nseq, int ctx, int W);

/* Backward: dtok [V, W] row ids[s, t] += dx row start[s] + t (scatter-add,
 * repeated tokens add up); dpos [ctx, W] row t += sum over sequences.
 * Parallel over column blocks (no races, deterministic). Saves: ids. */
void sl_op_text_embed_backward(float *dtok, float *dpos, const float *dx, const int32_t *ids,
                               const int *start, const int *len, int nseq, int ctx, int W);

#ifdef __cplusplus
}
#endif

#endif
