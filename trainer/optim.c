/*
 * trainer/optim.c - AdamW, the cosine schedule, clipping (see optim.h).
 */
#include "trainer/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sl_adamw_config sl_adamw_defaults(void) {
    sl_adamw_config c = {0.9, 0.98, 1e-6, 0.2, 0.0};
    return c;
}

sl_status sl_adamw_init(sl_adamw *opt, const sl_adamw_config *cfg, size_t n) {
    memset(opt, 0, sizeof *opt);
    opt->cfg = cfg ? *cfg : sl_adamw_defaults();
    opt->m = calloc(n ? n : 1, sizeof(float));
    opt->v = calloc(n ? n : 1, sizeof(float));
    if (!opt->m || !opt->v) {
        sl_adamw_free(opt);
        return sl_set_error(SL_ERR_NOMEM, "out of memory (AdamW state, %zu floats)", n);
    }
    opt->n = n;
    return SL_OK;
}

void sl_adamw_free(sl_adamw *opt) {
    if (!opt) return;
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
    opt->n = 0;
}

double sl_grad_norm(const sl_train_model *m, double scale) {
    double s = 0;
    for (size_t i = 0; i < m->num_params; i++) {
        double g = (double)(float)(m->grads_mem[i] * scale);
        s += g * g;
    }
    return sqrt(s);
}

sl_status sl_adamw_step(sl_adamw *opt, sl_train_model *m, double lr, double grad_scale,
                        double *grad_norm) {
    if (!opt || !m || opt->n != m->num_params)
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: optimizer does not match the model");
    if (!isfinite(lr) || !isfinite(grad_scale))
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: non-finite lr or scale");
    double norm = sl_grad_norm(m, grad_scale);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: non-finite gradient norm");
    float gs = (float)grad_scale;
    if (opt->cfg.grad_clip > 0) {
        double coef = opt->cfg.grad_clip / (norm + 1e-6);
        if (coef < 1.0) gs = (float)(grad_scale * coef);
    }
    opt->t++;
    const double t = (double)opt->t;
    const float b1 = (float)opt->cfg.beta1, b2 = (float)opt->cfg.beta2;
    const double bc1 = 1.0 - pow(opt->cfg.beta1, t), bc2 = 1.0 - pow(opt->cfg.beta2, t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)opt->cfg.eps;
    const float decay = (float)(1.0 - lr * opt->cfg.weight_decay);
    for (size_t ti = 0; ti < m->num_tensors; ti++) {
        float *p, *g;
        const sl_train_tensor *tn = sl_train_model_tensor(m, ti, &p, &g);
        float *mm = opt->m + tn->offset, *vv = opt->v + tn->offset;
        const int wd = tn->decay && opt->cfg.weight_decay != 0;
        for (size_t j = 0; j < tn->count; j++) {
            float gj = g[j] * gs;
            if (wd) p[j] *= decay;
            mm[j] = mm[j] * b1 + gj * (1.0f - b1);
            vv[j] = vv[j] * b2 + gj * gj * (1.0f - b2);
            float denom = sqrtf(vv[j]) / bc2_sqrt + eps;
            p[j] -= step_size * (mm[j] / denom);
        }
    }
    return SL_OK;
}

double sl_lr_cosine(double base, int64_t warmup, int64_t total, int64_t step) {
    if (step < warmup) return base * (double)(step + 1) / (double)warmup;
    int64_t e = step - warmup, E = total - warmup;
    if (E <= 0) return base;
    if (e > E) e = E;
    return 0.5 * (1.0 + cos(M_PI * (double)e / (double)E)) * base;
}
