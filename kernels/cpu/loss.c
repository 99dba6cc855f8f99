/*
 * kernels/cpu/loss.c - contrastive loss, softmax cross-entropy and L2
 * normalisation, forward and backward (see loss.h).
 */
#include "kernels/cpu/loss.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define PAR_MIN  32768 /* elements below which a loop stays on one thread */
#define NORM_MIN 1e-12f

/* ------------------------------------------------------------------------ */
/* L2 normalisation                                                         */
/* ------------------------------------------------------------------------ */

void sl_op_l2_normalize_forward(float *y, float *norm, const float *x, int n, int D) {
#pragma omp parallel for schedule(static) if ((size_t)n * D > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)xi[j] * xi[j];
        float nr = (float)sqrt(ss);
        if (!(nr > NORM_MIN)) nr = NORM_MIN;
        const float inv = 1.0f / nr;
        for (int j = 0; j < D; j++) yi[j] = xi[j] * inv;
        norm[i] = nr;
    }
}

void sl_op_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norm,
                                 int n, int D) {
#pragma omp parallel for schedule(static) if ((size_t)n * D > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * D, *yi = y + (size_t)i * D;
        float *dxi = dx + (size_t)i * D;
        const float inv = 1.0f / norm[i];
        /* Below the clamp the divisor is a constant: dx = dy / eps. */
        float dot = 0;
        if (norm[i] > NORM_MIN)
            for (int j = 0; j < D; j++) dot += yi[j] * dyi[j];
        for (int j = 0; j < D; j++) dxi[j] += (dyi[j] - yi[j] * dot) * inv;
    }
}

/* ------------------------------------------------------------------------ */
/* Softmax cross-entropy                                                    */
/* ------------------------------------------------------------------------ */

double sl_loss_xent_forward(float *probs, const float *logits, int ldl, const int *target, int n,
                            int C) {
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * ldl;
        float *p = probs + (size_t)i * C;
        const int tgt = target ? target[i] : i;
        float mx = -INFINITY;
        for (int j = 0; j < C; j++) mx = l[j] > mx ? l[j] : mx;
        const double lt = (double)l[tgt] - mx; /* read before p may overwrite l */
        double sum = 0;
        for (int j = 0; j < C; j++) {
            float e = expf(l[j] - mx);
            p[j] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < C; j++) p[j] *= inv;
        total += log(sum) - lt;
    }
    return total;
}

void sl_loss_xent_backward(float *dlogits, int ldd, float scale, const float *probs,
                           const int *target, int n, int C) {
#pragma omp parallel for schedule(static) if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++) {
        float *d = dlogits + (size_t)i * ldd;
        const float *p = probs + (size_t)i * C;
        for (int j = 0; j < C; j++) d[j] += scale * p[j];
        d[target ? target[i] : i] -= scale;
    }
}

/* ------------------------------------------------------------------------ */
/* Symmetric InfoNCE                                                        */
/* ------------------------------------------------------------------------ */

static float log_scale_clamped(float t) {
    return t < SL_LOSS_MAX_LOG_SCALE ? t : SL_LOSS_MAX_LOG_SCALE;
}

/* The symmetric cross-entropy of logits [B, B] (saved[0, B*B), written by
 * the caller): p_i2t and p_t2i into saved as sl_loss_infonce_forward lays
 * them out; returns the loss (mean of both directions' mean CE). */
static float infonce_from_logits(float *saved, int B) {
    const size_t BB = (size_t)B * B;
    const float *logits = saved;
    float *p_i2t = saved + BB, *p_t2i = saved + 2 * BB;
    /* p_t2i row j = column j of the logits, then softmaxed in place. */
#pragma omp parallel for schedule(static) if (BB > PAR_MIN)
    for (int j = 0; j < B; j++)
        for (int i = 0; i < B; i++) p_t2i[(size_t)j * B + i] = logits[(size_t)i * B + j];
    double l_i2t = sl_loss_xent_forward(p_i2t, logits, B, NULL, B, B);
    double l_t2i = sl_loss_xent_forward(p_t2i, p_t2i, B, NULL, B, B);
    return (float)((l_i2t + l_t2i) / (2.0 * B));
}

/* G [B, B] = dloss / (2B) * (p_i2t + p_t2i^T - 2 I), the gradient of the
 * logits saved by infonce_from_logits; returns sum(G * logits). */
static double infonce_logits_grad(float *G, const float *saved, float dloss, int B) {
    const size_t BB = (size_t)B * B;
    const float *logits = saved, *p_i2t = saved + BB, *p_t2i = saved + 2 * BB;
    const float c = dloss / (2.0f * (float)B);
    double gl = 0;
#pragma omp parallel for schedule(static) reduction(+ : gl) if (BB > PAR_MIN)
    for (int i = 0; i < B; i++) {
        float *g = G + (size_t)i * B;
        const float *a = p_i2t + (size_t)i * B, *l = logits + (size_t)i * B;
        for (int j = 0; j < B; j++) g[j] = c * (a[j] + p_t2i[(size_t)j * B + i]);
        g[i] -= 2.0f * c;
        for (int j = 0; j < B; j++) gl += (double)g[j] * l[j];
    }
    return gl;
}

float sl_loss_infonce_forward(float *saved, const float *img, const float *txt, float t, int B,
                              int D) {
    if (B <= 0) return 0.0f;
    const float s = expf(log_scale_clamped(t));
    /* logits [B, B] = s * img . txt^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, D, s, img, D, txt, D, 0.0f, saved,
                B);
    return infonce_from_logits(saved, B);
}

void sl_loss_infonce_backward(float *dimg, float *dtxt, float *dt, float *scratch, float dloss,
                              const float *saved, const float *img, const float *txt, float t,
                              int B, int D) {
    if (B <= 0) return;
    const float s = expf(log_scale_clamped(t));
    float *G = scratch; /* [B, B] gradient of the logits */
    const double gl = infonce_logits_grad(G, saved, dloss, B);
    /* logits = s * img . txt^T: dimg += s * G . txt; dtxt += s * G^T . img */
    if (dimg)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, B, s, G, B, txt, D, 1.0f, dimg,
                    D);
    if (dtxt)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, D, B, s, G, B, img, D, 1.0f, dtxt,
                    D);
    /* d logits / dt = logits (ds/dt = s) below the clamp, 0 above it. */
    if (dt && t <= SL_LOSS_MAX_LOG_SCALE) *dt += (float)gl;
}

/* ------------------------------------------------------------------------ */
/* Dense (patch-level) InfoNCE                                              */
/* ------------------------------------------------------------------------ */

float sl_loss_dense_forward(float *saved, float *w, const float *z, int T, int P0, int P,
                            const float *txt, float t, float beta, int B, int D) {
    if (B <= 0) return 0.0f;
    const float s = expf(log_scale_clamped(t));
    /* w [B T, B] = z . txt^T (every row; the rows outside the patches are
     * left as they come and never read) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B * T, B, D, 1.0f, z, D, txt, D, 0.0f, w,
                B);
    float *logits = saved;
    /* per (image b, text j): sim = (1/beta) log mean_p exp(beta a_p) over
     * the patch rows; w becomes the softmax over p of beta a_p */
#pragma omp parallel for schedule(static) if ((size_t)B * T * B > PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *rows = w + ((size_t)b * T + P0) * B;
        for (int j = 0; j < B; j++) {
            float mx = -INFINITY;
            for (int p = 0; p < P; p++)
                if (rows[(size_t)p * B + j] > mx) mx = rows[(size_t)p * B + j];
            double sum = 0;
            for (int p = 0; p < P; p++) {
                float e = expf(beta * (rows[(size_t)p * B + j] - mx));
                rows[(size_t)p * B + j] = e;
                sum += e;
            }
            const float inv = (float)(1.0 / sum);
            for (int p = 0; p < P; p++) rows[(size_t)p * B + j] *= inv;
            logits[(size_t)b * B + j] = s * (mx + (float)(log(sum / P) / beta));
        }
    }
    return infonce_from_logits(saved, B);
}

void sl_loss_dense_backward(float *dz, float *dtxt, float *dt, float *scratch, float dloss,
                            const float *saved, const float *w, const float *z, int T, int P0,
                            int P, const float *txt, float t, int B, int D) {
    if (B <= 0) return;
    const float s = expf(log_scale_clamped(t));
    float *G = scratch, *dA = scratch + (size_t)B * B; /* [B, B], [B T, B] */
    const double gl = infonce_logits_grad(G, saved, dloss, B);
    /* d a_{b p j} = s G[b, j] w[b p, j] on the patch rows, 0 elsewhere */
#pragma omp parallel for schedule(static) if ((size_t)B * T * B > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int r = 0; r < T; r++) {
            float *d = dA + ((size_t)b * T + r) * B;
            if (r < P0 || r >= P0 + P) {
                memset(d, 0, sizeof(float) * (size_t)B);
                continue;
            }
            const float *wr = w + ((size_t)b * T + r) * B, *g = G + (size_t)b * B;
            for (int j = 0; j < B; j++) d[j] = s * g[j] * wr[j];
        }
    /* a = z . txt^T: dz += dA . txt; dtxt += dA^T . z */
    if (dz)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B * T, D, B, 1.0f, dA, B, txt, D,
                    1.0f, dz, D);
    if (dtxt)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, D, B * T, 1.0f, dA, B, z, D, 1.0f,
                    dtxt, D);
    if (dt && t <= SL_LOSS_MAX_LOG_SCALE) *dt += (float)gl;
}
