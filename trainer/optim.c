/*
 * trainer/optim.c - AdamW, the cosine schedule, clipping (see optim.h).
 */
#include "trainer/optim.h"

#include <math.h>
#ifdef __SSE2__
#include <immintrin.h>
#endif
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

/* ------------------------------------------------------------------------ */
/* Work split                                                               */
/* ------------------------------------------------------------------------ */

/* The buffer is cut into pieces of at most CHUNK floats that never straddle
 * a tensor (so a piece has one weight-decay flag). Each piece's squared
 * norm is summed in double on its own, and the pieces' sums are added in
 * piece order: the norm depends on the tensor layout only, not on the
 * thread count or the schedule. */
#define CHUNK 16384

typedef struct piece {
    size_t off, n;
    int decay; /* -1: not an optimized tensor (norm only) */
} piece;

/* Pieces over [0, n): each tensor's range (decay flag from the tensor), or
 * with no table one norm-only range (decay -1). The model's tensors tile its
 * buffer in order without gaps (trainer/model.c); *tiled receives 0 when a
 * table does not, and nothing is returned. NULL also when out of memory;
 * *count receives the number of pieces. */
static piece *make_pieces(const sl_train_tensor *tab, size_t nt, size_t n, int use_decay,
                          size_t *count, int *tiled) {
    size_t at = 0, k = 0;
    for (size_t ti = 0; ti < nt; ti++) {
        if (tab[ti].offset != at) break;
        at += tab[ti].count;
    }
    *tiled = tab ? at == n : 1;
    if (!*tiled) return NULL;
    piece *p = malloc((n / CHUNK + nt + 1) * sizeof *p);
    if (!p) return NULL;
#define CUT(lo, len, dec)                                                                          \
    for (size_t o_ = 0; o_ < (len); o_ += CHUNK) {                                                 \
        p[k].off = (lo) + o_;                                                                      \
        p[k].n = (len)-o_ < CHUNK ? (len)-o_ : CHUNK;                                              \
        p[k].decay = (dec);                                                                        \
        k++;                                                                                       \
    }
    if (tab) {
        for (size_t ti = 0; ti < nt; ti++)
            CUT(tab[ti].offset, tab[ti].count, use_decay && tab[ti].decay)
    } else {
        CUT((size_t)0, n, -1)
    }
#undef CUT
    *count = k;
    return p;
}

/* Sum of (g * scale)^2 over g[0..n), g * scale rounded to float first;
 * eight partial sums (a fixed order, vectorisable), then added up. */
static double sumsq(const float *g, size_t n, double scale) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            double x = (double)(float)(g[i + k] * scale);
            acc[k] += x * x;
        }
    double s = 0;
    for (; i < n; i++) {
        double x = (double)(float)(g[i] * scale);
        s += x * x;
    }
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

/* Squared norm of every piece into part[], in parallel; their ordered sum. */
static double pieces_norm2(const sl_train_model *m, const piece *pc, size_t np, double *part,
                           double scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < np; i++) part[i] = sumsq(m->grads_mem + pc[i].off, pc[i].n, scale);
    double s = 0;
    for (size_t i = 0; i < np; i++) s += part[i];
    return s;
}

double sl_grad_norm(const sl_train_model *m, double scale) {
    size_t np = 0;
    int tiled;
    /* the pieces only change the summation order; fall back to one serial
     * sum when out of memory */
    piece *pc = make_pieces(NULL, 0, m->num_params, 0, &np, &tiled);
    double *part = pc ? malloc((np ? np : 1) * sizeof *part) : NULL;
    double s =
        part ? pieces_norm2(m, pc, np, part, scale) : sumsq(m->grads_mem, m->num_params, scale);
    free(part);
    free(pc);
    return sqrt(s);
}

/* ------------------------------------------------------------------------ */
/* Update                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct adam_k {
    float gs, b1, b2, step_size, bc2_sqrt, eps, decay;
} adam_k;

/* One piece's AdamW update with gradient g * gs; when norm2 != NULL also
 * the squared norm of g * scale (the unclipped gradient; same rounding as
 * sumsq). The arithmetic per element is that of the serial loop this
 * replaced, so results do not depend on how the buffer is split. */
static void adam_piece(float *restrict p, const float *restrict g, float *restrict mm,
                       float *restrict vv, size_t n, int wd, const adam_k *k, double scale,
                       double *norm2) {
    const float gs = k->gs, b1 = k->b1, b2 = k->b2, step_size = k->step_size,
                bc2_sqrt = k->bc2_sqrt, eps = k->eps, decay = wd ? k->decay : 1.0f;
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    if (norm2) *norm2 = sumsq(g, n, scale);
    size_t j = 0;
#ifdef __SSE2__
    /* sqrtf sets errno and so keeps GCC from vectorising the loop: the same
     * IEEE operations, four at a time (bit-identical to the scalar tail).
     * p * 1.0f is exact, so the undecayed case shares the loop. */
    const __m128 vgs = _mm_set1_ps(gs), vb1 = _mm_set1_ps(b1), vb2 = _mm_set1_ps(b2),
                 vc1 = _mm_set1_ps(c1), vc2 = _mm_set1_ps(c2), vss = _mm_set1_ps(step_size),
                 vbc = _mm_set1_ps(bc2_sqrt), veps = _mm_set1_ps(eps), vdec = _mm_set1_ps(decay);
    for (; j + 4 <= n; j += 4) {
        __m128 gj = _mm_mul_ps(_mm_loadu_ps(g + j), vgs);
        __m128 pj = _mm_mul_ps(_mm_loadu_ps(p + j), vdec);
        __m128 mj = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(mm + j), vb1), _mm_mul_ps(gj, vc1));
        __m128 vj =
            _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(vv + j), vb2), _mm_mul_ps(_mm_mul_ps(gj, gj), vc2));
        _mm_storeu_ps(mm + j, mj);
        _mm_storeu_ps(vv + j, vj);
        __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vj), vbc), veps);
        _mm_storeu_ps(p + j, _mm_sub_ps(pj, _mm_mul_ps(vss, _mm_div_ps(mj, denom))));
    }
#endif
    for (; j < n; j++) {
        float gj = g[j] * gs;
        float pj = p[j] * decay;
        float mj = mm[j] * b1 + gj * c1;
        float vj = vv[j] * b2 + gj * gj * c2;
        mm[j] = mj;
        vv[j] = vj;
        float denom = sqrtf(vj) / bc2_sqrt + eps;
        p[j] = pj - step_size * (mj / denom);
    }
}

sl_status sl_adamw_step(sl_adamw *opt, sl_train_model *m, double lr, double grad_scale,
                        double *grad_norm) {
    if (!opt || !m || opt->n != m->num_params)
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: optimizer does not match the model");
    if (!isfinite(lr) || !isfinite(grad_scale))
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: non-finite lr or scale");
    size_t np = 0;
    int tiled;
    piece *pc = make_pieces(m->tensors, m->num_tensors, m->num_params, opt->cfg.weight_decay != 0,
                            &np, &tiled);
    if (!tiled)
        return sl_set_error(SL_ERR_INVALID,
                            "sl_adamw_step: the model's tensors do not tile its parameter buffer");
    double *part = pc ? malloc((np ? np : 1) * sizeof *part) : NULL;
    if (!part) {
        free(pc);
        return sl_set_error(SL_ERR_NOMEM, "sl_adamw_step: out of memory (%zu pieces)", np);
    }
    const int clip = opt->cfg.grad_clip > 0;
    /* With clipping the update needs the norm first: a norm pass, then the
     * update. Without, the norm (still reported) is taken in the update's
     * pass over the gradient; a non-finite norm then leaves non-finite
     * parameters behind, as the serial update did. */
    double norm = 0;
    if (clip) {
        norm = sqrt(pieces_norm2(m, pc, np, part, grad_scale));
        if (!isfinite(norm)) {
            if (grad_norm) *grad_norm = norm;
            free(part);
            free(pc);
            return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: non-finite gradient norm");
        }
    }
    float gs = (float)grad_scale;
    if (clip) {
        double coef = opt->cfg.grad_clip / (norm + 1e-6);
        if (coef < 1.0) gs = (float)(grad_scale * coef);
    }
    const double t = (double)(opt->t + 1);
    const double bc1 = 1.0 - pow(opt->cfg.beta1, t), bc2 = 1.0 - pow(opt->cfg.beta2, t);
    const adam_k k = {gs,
                      (float)opt->cfg.beta1,
                      (float)opt->cfg.beta2,
                      (float)(lr / bc1),
                      (float)sqrt(bc2),
                      (float)opt->cfg.eps,
                      (float)(1.0 - lr * opt->cfg.weight_decay)};
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < np; i++) {
        const piece *q = &pc[i];
        adam_piece(m->params_mem + q->off, m->grads_mem + q->off, opt->m + q->off, opt->v + q->off,
                   q->n, q->decay, &k, grad_scale, clip ? NULL : &part[i]);
    }
    if (!clip) {
        double s = 0;
        for (size_t i = 0; i < np; i++) s += part[i];
        norm = sqrt(s);
    }
    free(part);
    free(pc);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return sl_set_error(SL_ERR_INVALID, "sl_adamw_step: non-finite gradient norm");
    opt->t++;
    return SL_OK;
}

double sl_lr_cosine(double base, int64_t warmup, int64_t total, int64_t step) {
    if (step < warmup) return base * (double)(step + 1) / (double)warmup;
    int64_t e = step - warmup, E = total - warmup;
    if (E <= 0) return base;
    if (e > E) e = E;
    return 0.5 * (1.0 + cos(M_PI * (double)e / (double)E)) * base;
}
