/*
 * trainer/model.h - the CLIP model being trained, llm.c style: one float
 * buffer of parameters, one of gradients (same layout), one of activations
 * (sized once for the largest batch), each with a struct of pointers into
 * it; a forward pass of both towers that saves what the backward needs, the
 * symmetric InfoNCE loss, and the backward pass through all of it.
 *
 * The architecture and the arithmetic are those of encoder/clip_forward.c
 * (same kernels, same bias folding, same pooling rule), so a model saved
 * here opens in sl_encoder_open and embeds identically. Files use the
 * Hugging Face CLIP layout (config.json + model.safetensors, HF tensor
 * names); the parameter buffer holds the tensors in the order listed below.
 *
 * Initialisation (sl_train_model_create), after open_clip's
 * init_parameters, applied to both towers (W the tower width, L its layers,
 * p the patch side; every normal has mean 0; a splitmix64 + Box-Muller
 * generator seeded by the caller, so runs are reproducible):
 *   text token embedding                  N(0, 0.02)
 *   text positions                        N(0, 0.01)
 *   class token, image positions          N(0, W^-0.5)
 *   patch conv [W, 3, p, p]               N(0, (3 * 3 p^2)^-0.5) (the std of
 *                                          PyTorch's default conv init)
 *   q, k, v weights                       N(0, W^-0.5)
 *   out_proj and fc2 weights              N(0, W^-0.5 (2L)^-0.5)
 *   fc1 weight                            N(0, (2W)^-0.5)
 *   projections [D, W]                    N(0, W^-0.5)
 *   every bias 0; LayerNorm gains 1, shifts 0
 *   logit_scale                           ln(1 / 0.07)
 *
 * Not thread-safe: one model, one caller at a time.
 */
#ifndef SL_TRAINER_MODEL_H
#define SL_TRAINER_MODEL_H

#include "sightline/encoder.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Parameters (and gradients: the same struct over the gradient buffer)     */
/* ------------------------------------------------------------------------ */

/* One pre-norm block of width W, MLP width M, in buffer order. q, k, v
 * weights are contiguous ([3W, W] fused) and so are their biases ([3W]). */
typedef struct sl_train_block {
    float *ln1_w, *ln1_b;   /* [W] */
    float *q_w, *k_w, *v_w; /* [W, W] each */
    float *q_b, *k_b, *v_b; /* [W] each */
    float *o_w;             /* [W, W] */
    float *o_b;             /* [W] */
    float *ln2_w, *ln2_b;   /* [W] */
    float *fc1_w;           /* [M, W] */
    float *fc1_b;           /* [M] */
    float *fc2_w;           /* [W, M] */
    float *fc2_b;           /* [W] */
} sl_train_block;

/* Every tensor of the model, pointers into one buffer (buffer order). */
typedef struct sl_train_params {
    /* image tower */
    float *patch_w;           /* [Wv, 3, p, p] */
    float *cls;               /* [Wv] */
    float *v_pos;             /* [P + 1, Wv] */
    float *pre_w, *pre_b;     /* [Wv] */
    sl_train_block *v_blocks; /* [vision.layers] */
    float *post_w, *post_b;   /* [Wv] */
    float *v_proj;            /* [D, Wv] */
    /* text tower */
    float *tok;               /* [V, Wt] */
    float *t_pos;             /* [ctx, Wt] */
    sl_train_block *t_blocks; /* [text.layers] */
    float *final_w, *final_b; /* [Wt] */
    float *t_proj;            /* [D, Wt] */
    /* loss */
    float *logit_scale; /* [1] log of the logit scale (clamped at ln 100 in the loss) */
} sl_train_params;

/* One tensor as the optimizer and the checkpoint writer see it. */
typedef struct sl_train_tensor {
    char name[96];    /* Hugging Face name */
    size_t offset;    /* first float in the parameter (and gradient) buffer */
    size_t count;     /* floats */
    int ndim;         /* 0 (logit_scale) .. 4 (patch conv) */
    int64_t shape[4]; /* extents */
    int decay;        /* 1: weight matrix (>= 2-D, not an embedding): weight-decayed */
} sl_train_tensor;

/* ------------------------------------------------------------------------ */
/* Activations                                                              */
/* ------------------------------------------------------------------------ */

/* Saved activations of one block over R rows (width W, MLP width M). The
 * last block of a tower goes on from its attention with the B pooled rows
 * only: its att, res2, ln2, mean2, rstd2, fc_pre and fc have B rows. */
typedef struct sl_train_block_acts {
    float *res;           /* [R, W] block input stream = LN1 input (pending bias folded in) */
    float *ln1;           /* [R, W] LN1 output */
    float *mean1, *rstd1; /* [R] */
    float *qkv;           /* [R, 3W] */
    float *att;           /* [R, W] attention output (heads concatenated) */
    float *res2;          /* [R, W] stream after attention = LN2 input (o_b folded in) */
    float *ln2;           /* [R, W] LN2 output */
    float *mean2, *rstd2; /* [R] */
    float *fc_pre;        /* [R, M] fc1 pre-activation */
    float *fc;            /* [R, M] fc1 output after the activation */
} sl_train_block_acts;

/* One tower's activations (B the batch; R rows: B * T for the image tower,
 * the packed sequences up to their pooled positions for the text tower). */
typedef struct sl_train_tower_acts {
    sl_train_block_acts *blocks; /* [layers] */
    float *pooled;               /* [B, W] pooled rows after the last block; its fc2 bias is added
                                    in place by the final LN forward (= the final LN input) */
    float *lnf;                  /* [B, W] final LN output */
    float *meanf, *rstdf;        /* [B] */
    float *feat;                 /* [B, D] projected embedding */
    float *emb;                  /* [B, D] L2-normalised embedding */
    float *norm;                 /* [B] L2 norms */
} sl_train_tower_acts;

typedef struct sl_train_acts {
    sl_train_tower_acts v, t;
    float *cols;                  /* [B * P, 3 p^2] im2col of the pixels */
    float *patch;                 /* [B * P, Wv] patch conv output */
    float *v_embed;               /* [B * (P + 1), Wv] class/patch + positions = LN_pre input */
    float *pre_mean;              /* [B * (P + 1)] */
    float *pre_rstd;              /* [B * (P + 1)] */
    int32_t *ids;                 /* [B, ctx] the batch's token ids */
    int *v_start, *v_len, *v_idx; /* [B] image sequences, pooled (class) rows */
    int *t_start, *t_len, *t_idx; /* [B] text sequences, pooled (end-of-text) rows */
    int *v_qrow, *t_qrow;         /* [B] pooled row within each sequence */
    float *loss_saved;            /* [3, B, B] InfoNCE logits | p_i2t | p_t2i */
    /* backward scratch (sized for the larger tower) */
    float *d_res;         /* [R, W] gradient of the residual stream */
    float *d_ln;          /* [R, W] gradient of a LayerNorm output */
    float *d_att;         /* [R, W] */
    float *d_qkv;         /* [R, 3W] */
    float *d_fc;          /* [R, M] */
    float *d_emb;         /* [R, W] gradient of the tower input (LN_pre input / patch rows) */
    float *d_pool;        /* [B, W] */
    float *d_lnf;         /* [B, W] */
    float *d_feat;        /* [B, D] */
    float *d_img, *d_txt; /* [B, D] gradients of the normalised embeddings */
    float *d_logits;      /* [B, B] InfoNCE backward scratch */
} sl_train_acts;

/* ------------------------------------------------------------------------ */
/* The model                                                                */
/* ------------------------------------------------------------------------ */

typedef struct sl_train_model {
    sl_clip_config cfg;         /* architecture */
    int max_batch;              /* activations are sized for this many pairs */
    float *params_mem;          /* [num_params] */
    float *grads_mem;           /* [num_params] */
    size_t num_params;          /* floats in each */
    sl_train_params params;     /* pointers into params_mem */
    sl_train_params grads;      /* pointers into grads_mem */
    sl_train_block *blocks_mem; /* params' and grads' block structs */
    sl_train_tensor *tensors;   /* [num_tensors] layout table */
    size_t num_tensors;
    void *acts_mem; /* one allocation */
    size_t acts_bytes;
    sl_train_acts acts; /* pointers into acts_mem */
    sl_train_block_acts *block_acts_mem;
    float *att_scratch;       /* attention scratch (grown on demand) */
    size_t att_scratch_count; /* floats */
    int batch;                /* B of the last forward (0: none yet) */
    int text_rows;            /* text rows of the last forward (sequences packed up to
                                 their pooled positions) */
    float loss;               /* loss of the last forward (global + dense weight * dense) */
    /* The dense (patch-level) objective, off until sl_train_model_set_dense. */
    struct sl_train_dense *dense;
    float loss_dense; /* the last forward's dense term before its weight (0 when off) */
} sl_train_model;

/* A new model of architecture cfg (validated) with the random
 * initialisation described above, activations for up to max_batch pairs.
 * Gradients start at zero. Errors: SL_ERR_INVALID/LIMIT/FORMAT (config),
 * SL_ERR_NOMEM. Free with sl_train_model_free. */
sl_status sl_train_model_create(const sl_clip_config *cfg, int max_batch, uint64_t seed,
                                sl_train_model **out);

/* Load a Hugging Face CLIP directory (config.json + model.safetensors;
 * F32, F16 or BF16 tensors, converted to F32). Every tensor must be present
 * with its shape; logit_scale is optional (config's logit_scale_init_value
 * otherwise). Errors name the file and the tensor. */
sl_status sl_train_model_load(const char *dir, int max_batch, sl_train_model **out);

/* Save to `dir` (created if needed): config.json, preprocessor_config.json
 * and model.safetensors (F32, HF names, buffer order). */
sl_status sl_train_model_save(const sl_train_model *m, const char *dir);

void sl_train_model_free(sl_train_model *m);

/* B in [1, max_batch] and every token id of tokens [B, context_length] in
 * [0, vocab_size); SL_ERR_INVALID naming `what`, the row and the position
 * otherwise (the check of the CPU and GPU training steps). */
sl_status sl_train_check_batch(const sl_clip_config *cfg, int max_batch, const int32_t *tokens,
                               int B, const char *what);

/* Carve (mem != NULL) or measure (mem NULL) every activation buffer of a
 * (per-block pointers in a->v.blocks / a->t.blocks already allocated) for
 * max_batch pairs of cfg, each buffer starting on a multiple of `align`
 * bytes (a power of two); returns the bytes needed. Host or device memory:
 * the CPU model and the GPU step (model_gpu.cu) share the layout. */
size_t sl_train_acts_layout(const sl_clip_config *cfg, int max_batch, sl_train_acts *a, char *mem,
                            size_t align);

/* Forward of B <= max_batch pairs: pixels [B, 3, S, S] (normalised),
 * tokens [B, ctx] (ids in [0, vocab); pooled at the end-of-text position by
 * the config's rule). *loss = symmetric InfoNCE of the normalised image
 * and text embeddings with scale exp(min(logit_scale, ln 100)), plus the
 * dense objective when set (sl_train_model_set_dense). Saves the
 * activations for sl_train_model_backward. SL_ERR_INVALID on a bad batch
 * size or token id (naming its row and position). */
sl_status sl_train_model_forward(sl_train_model *m, const float *pixels, const int32_t *tokens,
                                 int B, float *loss);

/* Backward of the last forward's loss: ADDS d loss / d param into the
 * gradient buffer (call sl_train_model_zero_grad first for a fresh step).
 * SL_ERR_INVALID when no forward has run. */
sl_status sl_train_model_backward(sl_train_model *m);

/* Add the dense objective to the loss with weight `weight` (0 turns it
 * off) and sharpness beta: sl_loss_dense (kernels/cpu/loss.h) over each
 * picture's patch embeddings, taken as the encoder's value-path patch
 * tokens (LN_post(out_proj(value(LN1(x)))) of the last image block,
 * projected and L2-normalised: what grounding scores phrases against), and
 * the texts' global embeddings, with the learnt logit scale. It trains the
 * patches from captions alone: the best-matching patches of a picture must
 * pick out its own caption among the batch's. Its gradient stops at the
 * last block's LN1 output (the value path's input is a constant to it): it
 * trains the per-patch read-out (value weights, out_proj, LN_post, visual
 * projection) and the texts, not the blocks below, which could otherwise
 * gather a picture's content into any patch and leave the patches' places
 * behind. A forward uses the weight set at that time, its backward the
 * same. Allocates its buffers (for max_batch pairs) the first time.
 * SL_ERR_INVALID for weight < 0 or beta <= 0 (or not finite),
 * SL_ERR_NOMEM. */
sl_status sl_train_model_set_dense(sl_train_model *m, float weight, float beta);

/* Set every gradient to 0. */
void sl_train_model_zero_grad(sl_train_model *m);

/* The last forward's normalised embeddings: img, txt [B, D] (borrowed,
 * valid until the next forward). Either pointer may be NULL. */
void sl_train_model_embeddings(const sl_train_model *m, const float **img, const float **txt);

/* Tensor i (0 <= i < m->num_tensors) with its parameter and gradient
 * pointers; NULL when i is out of range. */
const sl_train_tensor *sl_train_model_tensor(const sl_train_model *m, size_t i, float **param,
                                             float **grad);

#ifdef __cplusplus
}
#endif

#endif
