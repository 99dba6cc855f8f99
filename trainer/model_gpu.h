/*
 * trainer/model_gpu.h - one training step of trainer/model.c's CLIP model on
 * one GPU (F32, the parity path, or BF16 mixed precision: see
 * sl_gpu_model_set_precision), or on several with NCCL
 * (sl_gpu_model_step_dp): forward of both towers saving the same
 * activations as the CPU model, the symmetric InfoNCE loss, the backward
 * into a flat gradient buffer with the CPU model's layout (the offsets of
 * its tensor table), and AdamW (kernels/cuda/train_ops.h, the twin of
 * trainer/optim.c).
 *
 * The forward runs the CPU op sequence of sl_train_model_forward op for op
 * (same bias folding, same pruning of the last block to the pooled rows,
 * text sequences packed up to their pooled positions): cuBLAS sgemms (FP32,
 * pedantic math: no TF32), a LayerNorm forward that saves mean / rstd, a
 * bias + activation pass that keeps the pre-activations, and the inference
 * kernels of kernels/cuda/transformer.cuh for attention, im2col and the
 * embeddings. Results agree with the CPU to float rounding (sums in another
 * order) and are run-to-run identical on one GPU model (no float atomics).
 *
 * Builds without CUDA link trainer/model_gpu_none.c: every entry point
 * returns SL_ERR_UNSUPPORTED naming "cuda:<dev>".
 *
 * Not thread-safe: one model, one caller at a time.
 */
#ifndef SL_TRAINER_MODEL_GPU_H
#define SL_TRAINER_MODEL_GPU_H

#include "trainer/dist.h"
#include "trainer/model.h"
#include "trainer/optim.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_gpu_model sl_gpu_model;

/* A GPU copy of cpu's architecture and current parameters (the same flat
 * layout), zero gradients and AdamW moments (step count 0), activations for
 * up to max_batch pairs. cpu is only read here (nothing is kept).
 * SL_ERR_UNSUPPORTED naming "cuda:<dev>" when the device does not exist or
 * the build has no CUDA; SL_ERR_INVALID (bad max_batch); SL_ERR_EXTERNAL
 * (CUDA / cuBLAS failure, out of device memory). */
sl_status sl_gpu_model_create(int dev, const sl_train_model *cpu, int max_batch,
                              sl_gpu_model **out);

/* Whether CUDA device dev can be used here (before any model is built):
 * SL_OK, or the SL_ERR_UNSUPPORTED of sl_gpu_model_create naming "cuda:<dev>"
 * (no such device, or a build without CUDA). */
sl_status sl_gpu_model_probe(int dev);

/* One step on B <= max_batch pairs (host pixels [B, 3, S, S], host tokens
 * [B, ctx] as sl_train_model_forward takes them): gradients set to zero,
 * forward, loss (*loss, may be NULL), backward into the gradient buffer;
 * then, when do_update, one AdamW update with cfg (non-NULL then) and
 * learning rate lr, gradient scale 1, as sl_adamw_step (the model keeps its
 * own step count; *grad_norm, may be NULL, gets the gradient norm before
 * clipping). Waits for the GPU before returning. SL_ERR_INVALID: bad batch
 * size or token id (naming row and position, as the CPU), non-finite
 * gradient norm (as sl_adamw_step); SL_ERR_EXTERNAL: CUDA failure. */
sl_status sl_gpu_model_step(sl_gpu_model *g, const float *pixels, const int32_t *tokens, int B,
                            float *loss, int do_update, const sl_adamw_config *cfg, double lr,
                            double *grad_norm);

/* Data parallelism over the group d (trainer/dist.h; this rank's device
 * must be the model's). dp_sync: every rank's parameters and AdamW moments
 * become rank 0's (broadcast; call once after create / upload_state).
 * step_dp: sl_gpu_model_step over the GLOBAL batch made of every rank's B
 * pairs (the same B on every rank; rank r's pairs are rows r*B .. r*B+B-1
 * of it): each rank runs its towers on its pairs, the embeddings are
 * all-gathered (NCCL), each rank computes its share of the global-batch
 * InfoNCE and its gradients on the host (kernels/cpu/loss_shard.h), the
 * gathered gradients and then the parameter gradients are all-reduced
 * (summed), and every rank applies the same AdamW update. *loss is the
 * global-batch loss on every rank. The result equals one rank's
 * sl_gpu_model_step on the whole global batch up to float rounding. Every
 * rank must call it the same number of times. A group of one (or d NULL)
 * is sl_gpu_model_step. */
sl_status sl_gpu_model_dp_sync(sl_gpu_model *g, sl_dist *d);
sl_status sl_gpu_model_step_dp(sl_gpu_model *g, sl_dist *d, const float *pixels,
                               const int32_t *tokens, int B, float *loss, int do_update,
                               const sl_adamw_config *cfg, double lr, double *grad_norm);

/* Copy the gradient (parameter) buffer to host grads (params) [num_params],
 * the CPU model's layout. */
sl_status sl_gpu_model_download_grads(sl_gpu_model *g, float *grads);
sl_status sl_gpu_model_download_params(sl_gpu_model *g, float *params);

/* The whole training state: parameters, AdamW moments m and v (host
 * [num_params] each, the layout of sl_adamw's m / v) and the count of AdamW
 * updates done (sl_adamw's t: the next update uses t + 1 for its bias
 * correction). Download copies it to the host; upload replaces the model's
 * (to resume, or after the host changed it); gradients are left as they
 * are. SL_ERR_INVALID (NULL, t < 0); SL_ERR_EXTERNAL (CUDA failure). */
sl_status sl_gpu_model_download_state(sl_gpu_model *g, float *params, float *m, float *v,
                                      int64_t *t);
sl_status sl_gpu_model_upload_state(sl_gpu_model *g, const float *params, const float *m,
                                    const float *v, int64_t t);

/* Arithmetic of the step's matrix products. F32 (the default after create):
 * cuBLAS sgemms, pedantic (the parity path). BF16 (mixed precision): every
 * matrix product of the towers (patch embedding, QKV, attention output, MLP,
 * projections; forward and both backward products) on tensor cores with
 * BF16 operands and F32 accumulation and results: the weights from a BF16
 * copy of the F32 master parameters (refreshed by each AdamW update and by
 * upload_state), the activations and output gradients rounded to BF16 on
 * the way in. Everything else stays F32: LayerNorm, attention, activations,
 * the loss, gradients, AdamW and its moments. Either mode may be set between
 * steps. */
typedef enum sl_gpu_precision { SL_GPU_F32 = 0, SL_GPU_BF16 = 1 } sl_gpu_precision;
sl_status sl_gpu_model_set_precision(sl_gpu_model *g, sl_gpu_precision p);

/* Floats in the parameter buffer (the CPU model's num_params); 0 for NULL. */
size_t sl_gpu_model_num_params(const sl_gpu_model *g);

void sl_gpu_model_free(sl_gpu_model *g);

#ifdef __cplusplus
}
#endif

#endif
