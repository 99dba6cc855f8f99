/*
 * encoder/clip_gpu.h - the CLIP towers' inference forward on a CUDA device
 * (encoder/clip_gpu.cu; encoder/clip_gpu_none.c in builds without CUDA).
 *
 * Precision: matmul weights (and the token embedding) live on the device in
 * BF16 (bf16 = 1) or F32 (bf16 = 0, the exact path for parity with the CPU
 * forward). Every matmul is one cublasLtMatmul with F32 accumulation
 * (CUBLAS_COMPUTE_32F). The residual stream and all LayerNorm statistics are
 * F32 in both modes; in BF16 mode the LayerNorm outputs, qkv, attention
 * outputs and MLP hidden are BF16 (the matmul inputs), and the residual
 * matmuls (out_proj, fc2) read BF16 and add into the F32 stream (beta = 1).
 *
 * The math is clip_forward.c's: pending residual biases folded into the next
 * LayerNorm, the last block finishing only the pooled rows unless every row
 * is asked for, text sequences packed up to their pooled position unless
 * tokens_out is asked for.
 *
 * Patch embeddings (clip_gpu_forward_images' `patches`) follow
 * cfg->patch_tokens as given to clip_gpu_open: SL_PATCH_TOKENS_FINAL = the
 * last block's output rows; anything else (VALUE, or 0 = the default) = the
 * last block's value path, as clip_forward.c with enc->patch_tokens VALUE.
 * The encoder resolves the mode from its options too, so pass a copy of
 * enc->cfg with .patch_tokens = enc->patch_tokens.
 *
 * A clip_gpu is used by one thread at a time (calls on it are serialised by
 * the caller); distinct clip_gpu objects are independent.
 */
#ifndef SL_CLIP_GPU_H
#define SL_CLIP_GPU_H

#include "encoder/clip_internal.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Chunking of clip_gpu_forward_*: at most this many token rows, images and
 * sequences per forward chunk (also at most CLIP_GPU_MAX_PIXEL_BYTES of
 * input pixels per chunk, at least one image). The device workspace is
 * sized for them at open. */
#define CLIP_GPU_MAX_ROWS        32768
#define CLIP_GPU_MAX_IMAGES      256
#define CLIP_GPU_MAX_SEQS        1024
#define CLIP_GPU_MAX_PIXEL_BYTES ((size_t)256 << 20)

typedef struct clip_gpu clip_gpu;

/* Region pass: when cfg->region_size (0 = image_size) differs from
 * cfg->image_size and region_pos is given (the interpolated position table
 * [(region_size/p)^2 + 1, vision.width], e.g. enc->region_pos; read only
 * during the call), it is uploaded too and the workspace is sized for
 * chunks at that side as well; clip_gpu_forward_regions is then usable.
 * region_pos NULL: no region pass (cfg->region_size ignored). A region
 * size that is not a multiple of patch_size (or above 4096) with region_pos
 * given is SL_ERR_INVALID.
 *
 * Upload the weights of cfg/w to CUDA device `dev` as BF16 (bf16=1) or F32
 * (bf16=0: the exact path for parity), create stream, cuBLAS(Lt) handle,
 * workspace. `path` names the model in messages. SL_ERR_UNSUPPORTED when no
 * CUDA build or no such device (message names cuda:N and how many devices
 * exist), SL_ERR_EXTERNAL with the CUDA/cuBLAS message otherwise. */
sl_status clip_gpu_open(int dev, int bf16, const sl_clip_config *cfg, const clip_weights *w,
                        const float *region_pos, const char *path, clip_gpu **out);
void clip_gpu_free(clip_gpu *g);

/* Same contract as clip_forward_images / clip_forward_texts in
 * clip_internal.h, but for any n (chunked internally), host in/out buffers,
 * results NOT normalised (the caller normalises). Token ids outside
 * [0, vocab_size) are SL_ERR_INVALID (nothing is computed). */
sl_status clip_gpu_forward_images(clip_gpu *g, const float *pixels, int n, float *out,
                                  float *patches);
sl_status clip_gpu_forward_texts(clip_gpu *g, const int32_t *tokens, int n, float *out,
                                 float *tokens_out);

/* The region pass's patch embeddings: pixels [n, 3, R, R] (host, already
 * resized to R = the region size given at open) -> patches [n, (R/p)^2, D]
 * (host, not normalised), the patch path of clip_gpu_forward_images at side
 * R with the region position table (VALUE or FINAL as opened); the pooled
 * embeddings are not computed or returned. Any n (chunked internally).
 * SL_ERR_INVALID when opened without a region pass. */
sl_status clip_gpu_forward_regions(clip_gpu *g, const float *pixels, int n, float *patches);

#ifdef __cplusplus
}
#endif

#endif
