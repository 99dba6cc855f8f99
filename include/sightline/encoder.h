/*
 * sightline/encoder.h - CLIP-family dual encoders: load a checkpoint, embed
 * images and texts.
 *
 * Checkpoints: a Hugging Face CLIP directory (config.json + model.safetensors
 * + vocab.json + merges.txt), or an OpenCLIP/OpenAI single safetensors file
 * (architecture inferred from shapes; tokenizer files looked up beside it).
 * F32 weights are used in place from the mapped file; F16/BF16 are converted
 * to F32 once at load.
 *
 * Image tower: patch conv (stride = patch), class token, learned positions,
 * pre-LN, N pre-norm blocks (MHA + MLP), LN on the class token, projection
 * without bias. Text tower: token + position embeddings, N pre-norm causal
 * blocks, final LN, pooling at the end-of-text position, projection.
 */
#ifndef SIGHTLINE_ENCODER_H
#define SIGHTLINE_ENCODER_H

#include "sightline/common.h"
#include "sightline/safetensors.h"
#include "sightline/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_activation {
    SL_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) (OpenAI CLIP) */
    SL_ACT_GELU,       /* exact erf GELU */
    SL_ACT_GELU_TANH   /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
} sl_activation;

/* One transformer tower. */
typedef struct sl_tower_config {
    int width;         /* hidden size */
    int layers;        /* number of blocks */
    int heads;         /* attention heads (width % heads == 0) */
    int mlp_width;     /* MLP hidden size */
    sl_activation act; /* MLP activation */
    float ln_eps;      /* LayerNorm epsilon */
} sl_tower_config;

typedef struct sl_clip_config {
    sl_tower_config vision;
    sl_tower_config text;
    int image_size;                    /* input side in pixels */
    int patch_size;                    /* patch side; image_size % patch_size == 0 */
    int context_length;                /* text positions */
    int vocab_size;                    /* text vocabulary */
    int embed_dim;                     /* joint embedding size (projection output) */
    int eos_token_id;                  /* end-of-text id */
    int pool_argmax;                   /* 1: pool at argmax(ids); 0: at the first eos_token_id */
    float logit_scale;                 /* log of the contrastive temperature scale */
    float image_mean[3], image_std[3]; /* preprocessing */
    int patch_tokens;                  /* config.json "patch_tokens": 0 absent, else an
                                          sl_patch_tokens (VALUE or FINAL) */
    int region_size;                   /* config.json "region_size": 0 absent, else the input
                                          side of the patch-token pass (see sl_encoder_opts) */
} sl_clip_config;

/* Patches per image: (image_size / patch_size)^2. */
int sl_clip_num_patches(const sl_clip_config *cfg);

typedef struct sl_encoder sl_encoder;

/* What the per-patch embeddings of sl_encoder_encode_images are. */
typedef enum sl_patch_tokens {
    SL_PATCH_TOKENS_DEFAULT = 0, /* the model's choice: config.json "patch_tokens" ("value" or
                                    "final"), else VALUE */
    SL_PATCH_TOKENS_VALUE,       /* value path of the last block: each patch row's
                                    out_proj(v_proj(LN1(x))) with no attention mixing, residual
                                    or MLP, then the final LN and the projection. Localises far
                                    better in models trained with a global loss only (their last
                                    block mixes every patch toward the class token). */
    SL_PATCH_TOKENS_FINAL        /* the last block's output rows, final LN, projection: what the
                                    network computes for every token */
} sl_patch_tokens;

typedef struct sl_encoder_opts {
    int threads;                  /* OpenMP/BLAS threads (0 = leave as is); > 0 sets the
                                     process-wide omp_set_num_threads/openblas_set_num_threads
                                     at open */
    sl_patch_tokens patch_tokens; /* see sl_patch_tokens */
    int region_size;              /* input side of the patch-token pass: 0 = config.json
                                     "region_size", else image_size. When it differs from
                                     image_size, patch tokens come from a second pass over the
                                     input resized (bicubic) to region_size, with the position
                                     embeddings resized (bicubic) to the finer grid; the global
                                     embedding is unchanged. A multiple of patch_size, at most
                                     4096 (SL_ERR_INVALID otherwise). */
    const char *device;           /* NULL or "cpu": the CPU; "cuda" or "cuda:N": CUDA device N
                                     (0 by default), weights in BF16 (F32 accumulate);
                                     "cuda-f32[:N]": the same in F32 (for parity checks) */
} sl_encoder_opts;

/* "value" -> SL_PATCH_TOKENS_VALUE, "final" -> SL_PATCH_TOKENS_FINAL;
 * SL_ERR_INVALID naming the text otherwise. */
sl_status sl_patch_tokens_parse(const char *name, sl_patch_tokens *out);

/* Parse a device name as sl_encoder_opts.device takes it: *cuda = -1 for
 * the CPU, else the CUDA device index; *bf16 = 1 unless "cuda-f32".
 * SL_ERR_INVALID naming the text otherwise. */
sl_status sl_device_parse(const char *name, int *cuda, int *bf16);

/* Open a model: a directory (Hugging Face layout) or a .safetensors file
 * (either layout; config.json beside it is used when present). Errors name
 * the file and the tensor (missing, wrong shape, unsupported dtype). */
sl_status sl_encoder_open(const char *path, const sl_encoder_opts *opts, sl_encoder **out);
void sl_encoder_free(sl_encoder *enc);

/* Write a copy of the Hugging Face model directory in_dir to out_dir with
 * every F32/F16/BF16 tensor stored as `to` (F32, F16 or BF16; integer
 * tensors unchanged) and the config, preprocessor and tokenizer files
 * copied; the result is opened as a model before SL_OK. A value outside the
 * F16 range is SL_ERR_INVALID naming the tensor. *converted (optional):
 * tensors whose dtype changed. */
sl_status sl_model_convert(const char *in_dir, const char *out_dir, sl_dtype to, size_t *converted);

const sl_clip_config *sl_encoder_config(const sl_encoder *enc);

/* The tokenizer found with the model, or NULL when there is none (texts
 * must then be given as token ids). */
const sl_tokenizer *sl_encoder_tokenizer(const sl_encoder *enc);

/* The patch-token grid: side (region_size / patch_size) and count (its
 * square, the P of sl_encoder_encode_images' patches). */
int sl_encoder_patch_grid(const sl_encoder *enc);
int sl_encoder_num_patches(const sl_encoder *enc);

/* The CUDA device the encoder runs on, or -1 for the CPU. */
int sl_encoder_cuda_device(const sl_encoder *enc);

/* The patch embeddings this encoder computes (VALUE or FINAL, resolved). */
sl_patch_tokens sl_encoder_patch_tokens(const sl_encoder *enc);

/* Embed n preprocessed images pixels [n, 3, S, S] (float32, normalised).
 * out [n, embed_dim]: projected class tokens, L2-normalised when
 * `normalize`. patches [n, P, embed_dim] (may be NULL): one embedding per
 * patch, as sl_encoder_patch_tokens says, after the final LN and the
 * projection (not normalised), the per-patch embeddings used for
 * phrase-to-region and fine re-ranking. Thread-safe for distinct calls only
 * if the caller serialises them (the encoder reuses one workspace). */
sl_status sl_encoder_encode_images(sl_encoder *enc, const float *pixels, size_t n, float *out,
                                   float *patches, int normalize);

/* Embed n token sequences tokens [n, context_length] (int32).
 * out [n, embed_dim], pooled at the end-of-text position (pool_argmax: the
 * first largest id; else the first eos_token_id, or the last position when
 * there is none). tokens_out [n, context_length, embed_dim] (may be NULL):
 * every position after the final LN and the projection (not normalised),
 * for token-level matching. An id outside [0, vocab_size) is SL_ERR_INVALID
 * naming its row and position (nothing is computed). Without tokens_out
 * only the positions up to each pooled one are computed (the causal mask
 * makes the rest irrelevant to it). */
sl_status sl_encoder_encode_tokens(sl_encoder *enc, const int32_t *tokens, size_t n, float *out,
                                   float *tokens_out, int normalize);

/* Tokenize with the model's tokenizer and embed. */
sl_status sl_encoder_encode_texts(sl_encoder *enc, const char *const *texts, size_t n, float *out,
                                  int normalize);

/* Peak bytes of activation workspace allocated so far (for reports). */
size_t sl_encoder_workspace_bytes(const sl_encoder *enc);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_ENCODER_H */
