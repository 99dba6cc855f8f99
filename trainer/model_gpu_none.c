/*
 * trainer/model_gpu_none.c - trainer/model_gpu.h in a build without CUDA:
 * every entry point reports SL_ERR_UNSUPPORTED naming the device, so that
 * callers link and fail clearly in every build.
 */
#include "trainer/model_gpu.h"

#include "sightline/sightline.h"

#define NO_CUDA(dev)                                                                               \
    sl_set_error(SL_ERR_UNSUPPORTED,                                                               \
                 "cuda:%d requested but this build of sightline has no CUDA support "              \
                 "(rebuild with nvcc present and -DSL_CUDA=AUTO or ON)",                           \
                 (dev))

sl_status sl_gpu_model_probe(int dev) {
    return NO_CUDA(dev);
}

sl_status sl_gpu_model_create(int dev, const sl_train_model *cpu, int max_batch,
                              sl_gpu_model **out) {
    (void)cpu;
    (void)max_batch;
    if (out) *out = NULL;
    return NO_CUDA(dev);
}

sl_status sl_gpu_model_step(sl_gpu_model *g, const float *pixels, const int32_t *tokens, int B,
                            float *loss, int do_update, const sl_adamw_config *cfg, double lr,
                            double *grad_norm) {
    (void)g, (void)pixels, (void)tokens, (void)B, (void)loss, (void)do_update, (void)cfg, (void)lr,
        (void)grad_norm;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_download_grads(sl_gpu_model *g, float *grads) {
    (void)g, (void)grads;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_download_params(sl_gpu_model *g, float *params) {
    (void)g, (void)params;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_download_state(sl_gpu_model *g, float *params, float *m, float *v,
                                      int64_t *t) {
    (void)g, (void)params, (void)m, (void)v, (void)t;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_upload_state(sl_gpu_model *g, const float *params, const float *m,
                                    const float *v, int64_t t) {
    (void)g, (void)params, (void)m, (void)v, (void)t;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_dp_sync(sl_gpu_model *g, sl_dist *d) {
    (void)g, (void)d;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_step_dp(sl_gpu_model *g, sl_dist *d, const float *pixels,
                               const int32_t *tokens, int B, float *loss, int do_update,
                               const sl_adamw_config *cfg, double lr, double *grad_norm) {
    (void)g, (void)d, (void)pixels, (void)tokens, (void)B, (void)loss, (void)do_update, (void)cfg,
        (void)lr, (void)grad_norm;
    return NO_CUDA(0);
}

sl_status sl_gpu_model_set_precision(sl_gpu_model *g, sl_gpu_precision p) {
    (void)g, (void)p;
    return NO_CUDA(0);
}

size_t sl_gpu_model_num_params(const sl_gpu_model *g) {
    (void)g;
    return 0;
}

void sl_gpu_model_free(sl_gpu_model *g) {
    (void)g;
}
