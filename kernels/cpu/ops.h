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

#ifdef __cplusplus
}
#endif

#endif
