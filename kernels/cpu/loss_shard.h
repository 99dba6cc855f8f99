/*
 * kernels/cpu/loss_shard.h - the symmetric InfoNCE (CLIP) loss over a
 * GLOBAL batch that is sharded over R data-parallel ranks: what one rank
 * computes, forward and backward, on the CPU (conventions of loss.h:
 * backward ADDS, takes dloss, NULL gradient = not wanted, nothing
 * allocates, nothing fails; bad sizes make a call a no-op returning 0).
 *
 * Layout. Rank r (0 <= r < R) holds b local pairs img_l, txt_l [b, D]
 * (L2-normalised) and the all-gathered img_g, txt_g [N, D], N = R * b,
 * rank-major (NCCL all-gather order): rows [r*b, r*b + b) of img_g / txt_g
 * are rank r's img_l / txt_l, bit for bit (img_l may simply be
 * img_g + r*b*D). Every rank has the same b (drop or pad a ragged last
 * batch before the gather). off = r * b below.
 *
 * Global loss. With L [N, N] = s * img_g . txt_g^T, s = exp(min(t,
 * SL_LOSS_MAX_LOG_SCALE)), the global loss is sl_loss_infonce_forward's on
 * the N pairs:
 *   loss = (sum_i CE(L[i, :], i) + sum_j CE(L[:, j], j)) / (2N).
 * Rank r owns the terms of its image rows i and text columns j in
 * [off, off + b):
 *   loss_r = (sum_{i local} CE(L[i, :], i) + sum_{j local} CE(L[:, j], j))
 *            / (2N),
 * so that sum_r loss_r = loss exactly (in real arithmetic). The rank
 * computes only its 2 b N logits: L[off:off+b, :] = s img_l . txt_g^T and
 * L[:, off:off+b]^T = s txt_l . img_g^T (two [b, N] sgemms).
 *
 * Gradients. Backward gives the gradient of dloss * loss_r with respect to
 * the GATHERED tensors img_g, txt_g [N, D] (img_l, txt_l being their rows
 * [off, off + b), their gradient lands in those rows of dimg_g, dtxt_g):
 * the rank's own rows get their row/column CE terms, and every row of the
 * other ranks gets the contribution of this rank's logits to it. Then:
 *   - sum over ranks of dimg_g, dtxt_g, dt = the gradient of the global
 *     loss (dloss * loss). Rank r's local embedding gradient is rows
 *     [off, off + b) of that sum. Two ways to get it:
 *       (a) all-reduce(sum) dimg_g and dtxt_g [N, D], take the slice;
 *       (b) the cheaper one to use: reduce-scatter(sum) of dimg_g and
 *           dtxt_g with a recvcount of b*D: rank r receives exactly its
 *           slice, i.e. its own-row terms plus the column contributions
 *           that the other ranks' logits make to its rows (half (a)'s
 *           traffic, no [N, D] result kept). This is the backward of
 *           all-gather, i.e. what open_clip's gather_with_grad
 *           (torch.distributed.nn.all_gather) plus local_loss achieves.
 *     The summed slices then feed each rank's L2-normalisation and
 *     encoder backward.
 *   - dt: all-reduce(sum) over ranks.
 *   - The encoder parameter gradients must then be SUMMED over ranks (the
 *     global loss is the sum of the loss_r). If the trainer's all-reduce
 *     averages them (DDP's default), pass dloss = R * (loss weight) so the
 *     result is still the gradient of the global loss; open_clip's
 *     local_loss is R * loss_r for the same reason.
 * (An even cheaper scheme, not implemented: all-gather the 2N log-sum-exps
 *  of the rows and columns of L instead of reduce-scattering 2 N D floats;
 *  each rank can then form the full gradient of its own logits rows/columns
 *  and its local gradients with two [b, N] x [N, D] sgemms.)
 */
#ifndef SL_KERNELS_CPU_LOSS_SHARD_H
#define SL_KERNELS_CPU_LOSS_SHARD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Floats in the saved buffer of the forward: 2 b N + 2 b. */
static inline size_t sl_loss_infonce_shard_saved_size(int b, int nranks) {
    return (size_t)b * (size_t)nranks * (size_t)b * 2 + (size_t)b * 2;
}

/* Floats of the backward's scratch: b N. */
static inline size_t sl_loss_infonce_shard_scratch_size(int b, int nranks) {
    return (size_t)b * (size_t)nranks * (size_t)b;
}

/* Rank `rank` of `nranks`' share loss_r of the global-batch symmetric
 * InfoNCE (see the top of the file), returned (the double sum of its 2b
 * cross-entropies / (2N), rounded to float). img_l, txt_l [b, D];
 * img_g, txt_g [N, D], N = nranks * b; t as in sl_loss_infonce_forward.
 * saved [2 b N + 2 b] (written):
 *   p_i2t [b, N]: row i = softmax over all N texts of image off+i's logits
 *                 (L[off+i, :]);
 *   p_t2i [b, N]: row j = softmax over all N images of text off+j's logits
 *                 (column L[:, off+j]);
 *   e     [2, b]: per row k of p_i2t then of p_t2i, sum_n p[k, n] l[k, n]
 *                 - l[k, target] (the row's logits l; target off + k) in
 *                 double, rounded: the row's share of dloss/dt.
 * (The logits are computed into the p buffers and softmaxed in place.)
 * b <= 0, nranks <= 0 or rank outside [0, nranks): returns 0, writes
 * nothing. */
float sl_loss_infonce_shard_forward(float *saved, const float *img_l, const float *txt_l,
                                    const float *img_g, const float *txt_g, float t, int rank,
                                    int nranks, int b, int D);

/* Backward of dloss * loss_r, c = dloss / (2N). With the logits' gradients
 * (built one after the other in scratch [b, N])
 *   G_i2t [b, N] = c (p_i2t - onehot(off + i))  (of L[off+i, n]),
 *   G_t2i [b, N] = c (p_t2i - onehot(off + j))  (of L[n, off+j]):
 *   dimg_g[off:off+b, :] += s G_i2t . txt_g;   dtxt_g += s G_i2t^T . img_l;
 *   dtxt_g[off:off+b, :] += s G_t2i . img_g;   dimg_g += s G_t2i^T . txt_l;
 *   dt [1] += c * sum(e) when t <= SL_LOSS_MAX_LOG_SCALE (= sum(G * logits)
 *   over the rank's logits), nothing above it (torch.clamp's gradient, as
 *   sl_loss_infonce_backward).
 * dimg_g, dtxt_g [N, D] (NULL: not wanted; otherwise they must not alias
 * the inputs). saved from the forward with the same inputs, t, rank.
 * Summed over ranks these are the global loss's gradients (see the top of
 * the file for the reduce-scatter that hands each rank its slice). */
void sl_loss_infonce_shard_backward(float *dimg_g, float *dtxt_g, float *dt, float *scratch,
                                    float dloss, const float *saved, const float *img_l,
                                    const float *txt_l, const float *img_g, const float *txt_g,
                                    float t, int rank, int nranks, int b, int D);

#ifdef __cplusplus
}
#endif

#endif
