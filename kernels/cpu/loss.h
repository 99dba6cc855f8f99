/*
 * kernels/cpu/loss.h - training objectives on the CPU and the embedding
 * L2 normalisation that feeds them, forward and backward (llm.c style, as
 * in ops.h: forward(out, saved..., in, weights..., dims), backward(dins...,
 * dout, saved..., dims)).
 *
 * Every backward ADDS into its gradient buffers and takes the weight of the
 * loss (dloss, the gradient of the total objective with respect to this
 * loss), so several objectives (the global contrastive loss now,
 * fine-grained token/patch losses later) each add their share into the same
 * dimg / dtxt / dt. A NULL gradient pointer means "not wanted".
 * Buffers are row-major float32 with their shapes in the comments; nothing
 * here allocates; scratch sizes are given per function.
 */
#ifndef SL_KERNELS_CPU_LOSS_H
#define SL_KERNELS_CPU_LOSS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ln 100: the largest log logit scale (CLIP clamps the learnt temperature
 * so that the logit scale exp(t) stays <= 100). */
#define SL_LOSS_MAX_LOG_SCALE 4.6051702f

/* ------------------------------------------------------------------------ */
/* L2 normalisation                                                         */
/* ------------------------------------------------------------------------ */

/* y [n, D] = x [n, D] / max(||x_i||, 1e-12) per row; norm [n] saves the
 * divisor. y may equal x (in place). */
void sl_op_l2_normalize_forward(float *y, float *norm, const float *x, int n, int D);

/* dx [n, D] += (dy - y (y . dy)) / norm per row; y, norm saved by the
 * forward. dx may not alias dy. */
void sl_op_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norm,
                                 int n, int D);

/* ------------------------------------------------------------------------ */
/* Softmax cross-entropy over rows (building block of the losses)           */
/* ------------------------------------------------------------------------ */

/* probs [n, C] = softmax of each row of logits [n, ldl] (first C columns;
 * probs may equal logits when ldl == C). Returns the SUM over rows of
 * -log probs[i, target[i]] (target NULL: target[i] = i, the diagonal),
 * computed in double from the log-sum-exp. */
double sl_loss_xent_forward(float *probs, const float *logits, int ldl, const int *target, int n,
                            int C);

/* dlogits [n, ldd] (first C columns) += scale * (probs - onehot(target))
 * (target NULL: the diagonal); scale is the weight of each row's loss
 * (e.g. dloss / n for a mean). */
void sl_loss_xent_backward(float *dlogits, int ldd, float scale, const float *probs,
                           const int *target, int n, int C);

/* ------------------------------------------------------------------------ */
/* Symmetric InfoNCE (CLIP)                                                 */
/* ------------------------------------------------------------------------ */

/* img, txt [B, D]: L2-normalised embeddings, pair i = (img i, txt i);
 * t: the learnt log logit scale, s = exp(min(t, SL_LOSS_MAX_LOG_SCALE)).
 * logits [B, B] = s * img . txt^T;
 * loss = (CE(logits rows, arange) + CE(logits columns, arange)) / (2 B),
 * returned (each CE a mean over the batch).
 * saved [3, B, B] (written): logits | p_i2t [i, j] = softmax over texts j
 *   of row i | p_t2i [j, i] = softmax over images i of column j (stored
 *   transposed, row j). One sgemm plus row-parallel softmaxes. */
float sl_loss_infonce_forward(float *saved, const float *img, const float *txt, float t, int B,
                              int D);

/* Backward of dloss * loss: with G [B, B] = dloss / (2B) * (p_i2t + p_t2i^T
 * - 2 I) (the gradient of the logits, built in scratch [B, B]):
 * dimg [B, D] += s * G . txt; dtxt [B, D] += s * G^T . img;
 * dt [1] += sum(G * logits) when t <= SL_LOSS_MAX_LOG_SCALE, nothing when
 * t is above it (the clamp's gradient, as torch.clamp: the bound itself
 * still passes it). saved from the forward with the same img, txt, t. */
void sl_loss_infonce_backward(float *dimg, float *dtxt, float *dt, float *scratch, float dloss,
                              const float *saved, const float *img, const float *txt, float t,
                              int B, int D);

/* ------------------------------------------------------------------------ */
/* Dense (patch-level) InfoNCE                                              */
/* ------------------------------------------------------------------------ */

/* The global loss's pairing scored through patches, a multiple-instance
 * objective learnt from captions alone: image b has T rows of z [B T, D]
 * (L2-normalised; rows P0 .. P0 + P - 1 of each image are its patches,
 * P >= 1 and P0 + P <= T; the others, such as a class token, are
 * ignored); text j has txt [B, D]
 * (L2-normalised). Each (b, j) scores the soft maximum over b's patches
 *   sim[b, j] = (1 / beta) log( (1/P) sum_p exp(beta z_bp . txt_j) ),
 * (beta > 0: large, the best patch; small, their mean) and the loss is
 * sl_loss_infonce's over logits = s * sim, s = exp(min(t, ln 100)).
 * saved [3, B, B] (written) as sl_loss_infonce_forward's; w [B T, B]
 * (written): on the patch rows, the softmax over p of beta z_bp . txt_j
 * (column j). Returns the loss. */
float sl_loss_dense_forward(float *saved, float *w, const float *z, int T, int P0, int P,
                            const float *txt, float t, float beta, int B, int D);

/* Backward of dloss * that loss: dz [B T, D] += (0 on the rows outside the
 * patches), dtxt [B, D] +=, dt [1] += (below the clamp, as InfoNCE's).
 * scratch [B B + B T B]. saved, w from the forward with the same inputs. */
void sl_loss_dense_backward(float *dz, float *dtxt, float *dt, float *scratch, float dloss,
                            const float *saved, const float *w, const float *z, int T, int P0,
                            int P, const float *txt, float t, int B, int D);

#ifdef __cplusplus
}
#endif

#endif
