/*
 * encoder/clip_internal.h - the CLIP model inside sightline_encoder: weights
 * (pointers into the mapped checkpoint or into one conversion buffer),
 * activation workspace, and the pieces shared by clip_config.c,
 * clip_weights.c, clip_forward.c and encoder.c.
 */
#ifndef SL_CLIP_INTERNAL_H
#define SL_CLIP_INTERNAL_H

#include "sightline/encoder.h"
#include "sightline/safetensors.h"
#include "kernels/cpu/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Weights                                                                  */
/* ------------------------------------------------------------------------ */

/* One pre-norm block of width W, MLP width M. Pointers are read-only views
 * into the mapped file (F32) or into clip_weights.conv (F16/BF16). */
typedef struct clip_block_w {
    const float *ln1_w, *ln1_b;   /* [W] */
    const float *q_w, *k_w, *v_w; /* [W, W] each; fused [3W, W] when k_w == q_w + W*W and
                                     v_w == k_w + W*W */
    const float *q_b, *k_b, *v_b; /* [W] each; fused likewise */
    const float *o_w, *o_b;       /* [W, W], [W] */
    const float *ln2_w, *ln2_b;   /* [W] */
    const float *fc1_w, *fc1_b;   /* [M, W], [M] */
    const float *fc2_w, *fc2_b;   /* [W, M], [W] */
} clip_block_w;

typedef struct clip_weights {
    /* image tower */
    const float *patch_w;         /* [Wv, 3*p*p] (conv weight [Wv, 3, p, p]) */
    const float *cls;             /* [Wv] */
    const float *v_pos;           /* [P+1, Wv] */
    const float *pre_w, *pre_b;   /* [Wv] */
    clip_block_w *v_blocks;       /* [vision.layers] */
    const float *post_w, *post_b; /* [Wv] */
    const float *v_proj;          /* [D, Wv], or [Wv, D] when v_proj_kn */
    int v_proj_kn;
    /* text tower */
    const float *tok;               /* [V, Wt] */
    const float *t_pos;             /* [ctx, Wt] */
    clip_block_w *t_blocks;         /* [text.layers] */
    const float *final_w, *final_b; /* [Wt] */
    const float *t_proj;            /* [D, Wt], or [Wt, D] when t_proj_kn */
    int t_proj_kn;
    /* storage */
    float *conv;              /* converted (F16/BF16 or unaligned) tensors, one allocation */
    size_t conv_count;        /* floats in conv */
    clip_block_w *blocks_mem; /* v_blocks and t_blocks, one allocation */
} clip_weights;

/* Which file layout a checkpoint uses. */
typedef enum clip_layout { CLIP_LAYOUT_HF, CLIP_LAYOUT_OPENCLIP } clip_layout;

/* ------------------------------------------------------------------------ */
/* Workspace                                                                */
/* ------------------------------------------------------------------------ */

/* Activations of one forward pass over `rows` token rows (llm.c style: one
 * allocation, pointers into it). Sized for the larger tower at the chunk
 * size in use; grown on demand, never shrunk until the encoder is freed. */
typedef struct clip_workspace {
    void *mem;
    size_t bytes; /* allocated */
    size_t peak;  /* largest ever allocated */
} clip_workspace;

/* ------------------------------------------------------------------------ */
/* The encoder                                                              */
/* ------------------------------------------------------------------------ */

struct sl_encoder {
    sl_clip_config cfg;
    clip_layout layout;
    sl_safetensors *st;
    clip_weights w;
    sl_tokenizer *tok;
    clip_workspace ws;
    char *path;                   /* the weights file (for messages) */
    sl_patch_tokens patch_tokens; /* resolved: VALUE or FINAL */
    struct clip_gpu *gpu;         /* the CUDA copy of the model, or NULL for the CPU */
    int cuda_device;              /* its device (when gpu) */
    int region_size;              /* input side of the patch-token pass (resolved) */
    float *region_pos;            /* its position table [(region/p)^2 + 1, W], or NULL when
                                     region_size == image_size */
    float *region_pix;            /* resized input of one chunk, grown on demand */
    size_t region_pix_floats;
};

/* ---- clip_config.c ------------------------------------------------------- */

/* ViT-B/32 defaults for every field. */
void clip_config_defaults(sl_clip_config *cfg);

/* Read a Hugging Face config.json (`path`) into cfg (missing keys keep
 * cfg's values). Errors name the file and the key. */
sl_status clip_config_read_hf(const char *path, sl_clip_config *cfg);

/* Read optional preprocessing (image_mean, image_std) from a
 * preprocessor_config.json. */
sl_status clip_config_read_preprocessor(const char *path, sl_clip_config *cfg);

/* Apply a config.json beside an OpenCLIP file: either OpenCLIP's
 * ({"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}, possibly under
 * "model_cfg", with "preprocess_cfg" {mean, std}) or Hugging Face's. Only
 * head counts, activation, eps, eos and preprocessing are taken; shapes
 * come from the tensors. */
sl_status clip_config_read_openclip_override(const char *path, sl_clip_config *cfg);

/* Check every field is in range (width % heads, image % patch, ...). */
sl_status clip_config_validate(const sl_clip_config *cfg, const char *src);

/* ---- clip_weights.c ------------------------------------------------------ */

/* Detect the layout by tensor names. */
sl_status clip_detect_layout(const sl_safetensors *st, const char *path, clip_layout *out);

/* OpenCLIP: infer the architecture from tensor shapes into cfg (heads =
 * width / 64, quick_gelu, argmax pooling). */
sl_status clip_infer_openclip(const sl_safetensors *st, const char *path, sl_clip_config *cfg);

/* Bind every tensor (checking presence, shape, dtype), converting F16/BF16
 * into one allocation. On failure w is left empty (nothing to free). */
sl_status clip_weights_load(const sl_safetensors *st, const char *path, clip_layout layout,
                            sl_clip_config *cfg, clip_weights *w);
void clip_weights_free(clip_weights *w);

/* ---- clip_forward.c ------------------------------------------------------ */

/* Image tower on n images pixels [n, 3, S, S] (S: image_size, or another
 * multiple of the patch side with pos resized to its grid), position table
 * pos [(S/p)^2 + 1, W]; out [n, D] (projected class token), patches
 * [n, (S/p)^2, D] or NULL. n is bounded by the caller's chunking. */
sl_status clip_forward_images(sl_encoder *enc, const float *pixels, int n, int S, const float *pos,
                              float *out, float *patches);

/* Bicubic resize (PyTorch's: align_corners false, A = -0.75, edge samples
 * repeated) of a g0 x g0 grid of C channels to g1 x g1: planar [C, g, g] or
 * channels-last [g, g, C]. */
void clip_resize_bicubic(const float *src, int g0, float *dst, int g1, int C, int planar);

/* Text tower on n validated sequences tokens [n, ctx]; out [n, D];
 * tokens_out [n, ctx, D] or NULL. */
sl_status clip_forward_texts(sl_encoder *enc, const int32_t *tokens, int n, float *out,
                             float *tokens_out);

/* Position pooled for one sequence (pool rule of cfg). */
int clip_pool_position(const sl_clip_config *cfg, const int32_t *ids);

/* The kernels' activation for a config's (shared by the encoder's and the
 * trainer's forward passes). */
static inline sl_op_act clip_op_act(sl_activation a) {
    switch (a) {
        case SL_ACT_GELU:
            return SL_OP_ACT_GELU;
        case SL_ACT_GELU_TANH:
            return SL_OP_ACT_GELU_TANH;
        case SL_ACT_QUICK_GELU:
        default:
            return SL_OP_ACT_QUICK_GELU;
    }
}

#ifdef __cplusplus
}
#endif

#endif
