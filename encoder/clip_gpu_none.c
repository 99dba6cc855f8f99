/*
 * encoder/clip_gpu_none.c - the GPU towers in a build without CUDA: every
 * entry point reports that this build cannot use a device.
 */
#include "encoder/clip_gpu.h"

static sl_status no_cuda(int dev, const char *path) {
    return sl_set_error(SL_ERR_UNSUPPORTED,
                        "cuda:%d requested for %s but this build of sightline has no CUDA "
                        "support (0 CUDA devices usable; rebuild with nvcc present and "
                        "-DSL_CUDA=AUTO or ON)",
                        dev, path ? path : "(model)");
}

sl_status clip_gpu_open(int dev, int bf16, const sl_clip_config *cfg, const clip_weights *w,
                        const float *region_pos, const char *path, clip_gpu **out) {
    (void)bf16;
    (void)region_pos;
    (void)cfg;
    (void)w;
    if (out) *out = NULL;
    return no_cuda(dev, path);
}

void clip_gpu_free(clip_gpu *g) {
    (void)g;
}

sl_status clip_gpu_forward_images(clip_gpu *g, const float *pixels, int n, float *out,
                                  float *patches) {
    (void)g;
    (void)pixels;
    (void)n;
    (void)out;
    (void)patches;
    return no_cuda(0, NULL);
}

sl_status clip_gpu_forward_texts(clip_gpu *g, const int32_t *tokens, int n, float *out,
                                 float *tokens_out) {
    (void)g;
    (void)tokens;
    (void)n;
    (void)out;
    (void)tokens_out;
    return no_cuda(0, NULL);
}

sl_status clip_gpu_forward_regions(clip_gpu *g, const float *pixels, int n, float *patches) {
    (void)g;
    (void)pixels;
    (void)n;
    (void)patches;
    return no_cuda(0, NULL);
}
