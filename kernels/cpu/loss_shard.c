/*
 * kernels/cpu/loss_shard.c - one rank's share of the global-batch symmetric
 * InfoNCE, forward and backward (see loss_shard.h).
 */
#include "kernels/cpu/loss_shard.h"
#include "kernels/cpu/loss.h"

#include <cblas.h>
#include <math.h>

#define PAR_MIN 32768 /* elements below which a loop stays on one thread */

static int shard_dims_ok(int rank, int nranks, int b, int D) {
    return b > 0 && nranks > 0 && rank >= 0 && rank < nranks && D >= 0;
}

float sl_loss_infonce_shard_forward(float *saved, const float *img_l, const float *txt_l,
                                    const float *img_g, const float *txt_g, float t, int rank,
                                    int nranks, int b, int D) {
    if (!shard_dims_ok(rank, nranks, b, D)) return 0.0f;
    const int N = nranks * b, off = rank * b;
    const size_t bN = (size_t)b * N;
    float *p = saved, *e = saved + 2 * bN; /* p: [2b, N] = p_i2t | p_t2i */
    const float s = expf(t < SL_LOSS_MAX_LOG_SCALE ? t : SL_LOSS_MAX_LOG_SCALE);
    /* Logits into p: rows of L for the local images, columns of L (as rows)
     * for the local texts. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, N, D, s, img_l, D, txt_g, D, 0.0f, p,
                N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, N, D, s, txt_l, D, img_g, D, 0.0f,
                p + bN, N);
    /* Row softmax cross-entropy in place over the 2b rows, target off + k
     * (k the row within its half), as sl_loss_xent_forward; plus the row's
     * sum_n p l - l_target for dt. */
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (2 * bN > PAR_MIN)
    for (int k = 0; k < 2 * b; k++) {
        float *row = p + (size_t)k * N;
        const int tgt = off + (k < b ? k : k - b);
        float mx = -INFINITY;
        for (int n = 0; n < N; n++) mx = row[n] > mx ? row[n] : mx;
        const double lt = (double)row[tgt] - mx;
        double sum = 0, sum_el = 0; /* sum e^(l - mx), sum e^(l - mx) (l - mx) */
        for (int n = 0; n < N; n++) {
            const float z = row[n] - mx, ez = expf(z);
            row[n] = ez;
            sum += ez;
            sum_el += (double)ez * z;
        }
        const float inv = (float)(1.0 / sum);
        for (int n = 0; n < N; n++) row[n] *= inv;
        total += log(sum) - lt;
        e[k] = (float)(sum_el / sum - lt);
    }
    return (float)(total / (2.0 * N));
}

/* G [b, N] = c * (probs - onehot(off + k)). */
static void logit_grad(float *G, const float *probs, float c, int off, int b, int N) {
#pragma omp parallel for schedule(static) if ((size_t)b * N > PAR_MIN)
    for (int k = 0; k < b; k++) {
        float *g = G + (size_t)k * N;
        const float *a = probs + (size_t)k * N;
        for (int n = 0; n < N; n++) g[n] = c * a[n];
        g[off + k] -= c;
    }
}

void sl_loss_infonce_shard_backward(float *dimg_g, float *dtxt_g, float *dt, float *scratch,
                                    float dloss, const float *saved, const float *img_l,
                                    const float *txt_l, const float *img_g, const float *txt_g,
                                    float t, int rank, int nranks, int b, int D) {
    if (!shard_dims_ok(rank, nranks, b, D)) return;
    const int N = nranks * b, off = rank * b;
    const size_t bN = (size_t)b * N, offD = (size_t)off * D;
    const float *p_i2t = saved, *p_t2i = saved + bN, *e = saved + 2 * bN;
    const float s = expf(t < SL_LOSS_MAX_LOG_SCALE ? t : SL_LOSS_MAX_LOG_SCALE);
    const float c = dloss / (2.0f * (float)N);
    float *G = scratch;
    if (dimg_g || dtxt_g) {
        /* Image rows: L[off+i, n] = s img_l[i] . txt_g[n]. */
        logit_grad(G, p_i2t, c, off, b, N);
        if (dimg_g)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, D, N, s, G, N, txt_g, D, 1.0f,
                        dimg_g + offD, D);
        if (dtxt_g)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, D, b, s, G, N, img_l, D, 1.0f,
                        dtxt_g, D);
        /* Text columns: L[n, off+j] = s img_g[n] . txt_l[j]. */
        logit_grad(G, p_t2i, c, off, b, N);
        if (dtxt_g)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, D, N, s, G, N, img_g, D, 1.0f,
                        dtxt_g + offD, D);
        if (dimg_g)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, D, b, s, G, N, txt_l, D, 1.0f,
                        dimg_g, D);
    }
    /* sum(G * logits) over a row = c (sum p l - l_target) = c e[k]; d logits
     * / dt = logits below the clamp, 0 above it. */
    if (dt && t <= SL_LOSS_MAX_LOG_SCALE) {
        double se = 0;
        for (int k = 0; k < 2 * b; k++) se += e[k];
        *dt += (float)((double)c * se);
    }
}
