/*
 * trainer/optim.h - AdamW (decoupled weight decay, as torch.optim.AdamW) over
 * the model's parameter buffer, the warmup + cosine learning-rate schedule
 * of open_clip, global gradient-norm clipping and gradient accumulation.
 *
 * One m and one v buffer in the parameter layout (same offsets as
 * sl_train_model's params_mem). Weight decay applies only to tensors whose
 * `decay` flag is set (weight matrices; not biases, LayerNorms, embeddings
 * or logit_scale).
 */
#ifndef SL_TRAINER_OPTIM_H
#define SL_TRAINER_OPTIM_H

#include "trainer/model.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_adamw_config {
    double beta1;        /* 0.9 */
    double beta2;        /* 0.98 */
    double eps;          /* 1e-6 */
    double weight_decay; /* 0.2 (decay-flagged tensors only) */
    double grad_clip;    /* max global L2 norm; <= 0: no clipping */
} sl_adamw_config;

/* open_clip's defaults (clipping off). */
sl_adamw_config sl_adamw_defaults(void);

typedef struct sl_adamw {
    sl_adamw_config cfg;
    float *m, *v; /* [n] first and second moments */
    size_t n;     /* floats (= the model's num_params) */
    int64_t t;    /* updates done (bias correction uses t + 1 next) */
} sl_adamw;

/* Zeroed moments for n parameters. SL_ERR_NOMEM. */
sl_status sl_adamw_init(sl_adamw *opt, const sl_adamw_config *cfg, size_t n);
void sl_adamw_free(sl_adamw *opt);

/* The L2 norm of the model's gradient buffer times `scale` (double sums over
 * fixed pieces of the buffer, added in buffer order: the same value at any
 * thread count). Parallel (OpenMP). */
double sl_grad_norm(const sl_train_model *m, double scale);

/* One update with learning rate lr. The gradient used is grads_mem *
 * grad_scale (1/K after K accumulated micro-batches), then clipped to
 * cfg.grad_clip by its global norm (torch's clip_grad_norm_: coefficient
 * max / (norm + 1e-6) when below 1). *grad_norm (may be NULL) receives the
 * norm before clipping. The gradient buffer is left as it was.
 * Parallel (OpenMP) over fixed pieces of the buffer; the result does not
 * depend on the thread count. Without clipping the norm is taken in the
 * same pass as the update, so a non-finite norm (SL_ERR_INVALID) is found
 * after the parameters and moments were updated with it (they are then not
 * usable); with clipping it is found first and nothing is changed. */
sl_status sl_adamw_step(sl_adamw *opt, sl_train_model *m, double lr, double grad_scale,
                        double *grad_norm);

/* Learning rate at step `step` (0-based): linear warmup base * (step + 1) /
 * warmup for step < warmup, then cosine 0.5 (1 + cos(pi e / E)) base with e =
 * step - warmup, E = total - warmup (open_clip's cosine_lr). */
double sl_lr_cosine(double base, int64_t warmup, int64_t total, int64_t step);

#ifdef __cplusplus
}
#endif

#endif
