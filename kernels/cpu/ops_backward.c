/*
 * kernels/cpu/ops_backward.c - backward passes of the transformer ops in
 * ops.h (and the few training-only forwards they pair with).
 *
 * Conventions (see the "backward" section of ops.h): gradients are added
 * into (+=); a NULL gradient pointer means "not wanted"; BLAS runs outside
 * OpenMP regions (its own threads) except in attention, whose tasks call
 * single-threaded BLAS from inside the region, as the forward does.
 * Reductions over rows run over column blocks, one block per task, so that
 * no two threads write the same float and results do not depend on the
 * thread count.
 */
#include "kernels/cpu/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Below this many elements an elementwise loop stays on one thread. */
#define PAR_MIN 32768

/* Width of the column blocks that row reductions are split into: about one
 * block per thread, a multiple of 16 floats, at least 16. */
static int col_block(int C) {
    int t = omp_get_max_threads();
    int b = (C + t - 1) / t;
    b = (b + 15) & ~15;
    return b < 16 ? 16 : b;
}

/* acc [N] += column sums of x [M, ldx] (first N columns), summed in double
 * per column block. */
static void colsum_add(float *acc, const float *x, int ldx, int M, int N) {
    const int cb = col_block(N), nb = (N + cb - 1) / cb;
#pragma omp parallel for schedule(static) if ((size_t)M * N > PAR_MIN)
    for (int blk = 0; blk < nb; blk++) {
        const int j0 = blk * cb, j1 = j0 + cb < N ? j0 + cb : N;
        double s[256];
        for (int jb = j0; jb < j1; jb += 256) {
            const int je = jb + 256 < j1 ? jb + 256 : j1;
            for (int j = jb; j < je; j++) s[j - jb] = 0;
            for (int i = 0; i < M; i++) {
                const float *row = x + (size_t)i * ldx;
                for (int j = jb; j < je; j++) s[j - jb] += row[j];
            }
            for (int j = jb; j < je; j++) acc[j] += (float)s[j - jb];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Activations                                                              */
/* ------------------------------------------------------------------------ */

/* The activation derivatives run on every element of the MLP's hidden
 * layer, so they are written to vectorise: a branch-free exp (libm's expf
 * and erff are scalar calls) and one loop per activation, compiled per ISA
 * like the forward's kernels. */
#include "kernels/cpu/clones.h"

/* exp(x), relative error < 3e-7 on [-87, 88] (clamped outside): x = n ln2
 * + r with |r| <= ln2 / 2 (ln2 split in two for exactness), e^r by a
 * degree-6 Taylor polynomial, 2^n put into the exponent bits. */
static inline float exp_vec(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    float e =
        1.0f +
        r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r / 720.0f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float pow2n;
    memcpy(&pow2n, &bits, sizeof pow2n);
    return e * pow2n;
}

/* The derivatives of the exact functions, within 1e-6 absolute of them. */

/* quick_gelu: s + 1.702 x s (1 - s), s = sigmoid(1.702 x) */
static inline float dquick_gelu(float x) {
    const float s = 1.0f / (1.0f + exp_vec(-1.702f * x));
    return s + 1.702f * x * s * (1.0f - s);
}

/* gelu: Phi(x) + x phi(x), erf by Abramowitz-Stegun 7.1.26 (|err| 1.5e-7),
 * whose exp(-z^2) is also phi's exp(-x^2 / 2). */
static inline float dgelu(float x) {
    const float z = x * 0.70710678118654752f, az = z < 0 ? -z : z;
    const float t = 1.0f / (1.0f + 0.3275911f * az);
    const float poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float ez = exp_vec(-az * az);
    const float erf_az = 1.0f - poly * ez;
    const float cdf = 0.5f * (1.0f + (z < 0 ? -erf_az : erf_az));
    return cdf + x * 0.39894228040143268f * ez;
}

/* gelu_tanh: 0.5 (1 + th) + 0.5 x (1 - th^2) c (1 + 3 a x^2),
 * th = tanh(u), u = c (x + a x^3) */
static inline float dgelu_tanh(float x) {
    const float c = 0.7978845608028654f, a = 0.044715f;
    /* e = exp(2u): th = 1 - 2 / (e + 1), 1 - th^2 = 4 e / (e + 1)^2 (no
     * cancellation where th is near +-1) */
    const float e = exp_vec(2.0f * c * (x + a * x * x * x)), inv = 1.0f / (e + 1.0f);
    const float th = 1.0f - 2.0f * inv, sech2 = 4.0f * (e * inv) * inv;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * c * (1.0f + 3.0f * a * x * x);
}

/* o[i] (+)= d[i] * act'(p[i]): added when `add`, else written (o may then
 * equal d). One branch-free loop per case. */
#define ACT_GRAD_LOOP(f)                                                                           \
    do {                                                                                           \
        if (add)                                                                                   \
            for (size_t i = 0; i < n; i++) o[i] += d[i] * f(p[i]);                                 \
        else                                                                                       \
            for (size_t i = 0; i < n; i++) o[i] = d[i] * f(p[i]);                                  \
    } while (0)
#define ACT_ONE(x) 1.0f

SL_CLONES static void act_grad_rows(float *o, const float *d, const float *restrict p, size_t n,
                                    sl_op_act act, int add) {
    switch (act) {
        case SL_OP_ACT_QUICK_GELU:
            ACT_GRAD_LOOP(dquick_gelu);
            break;
        case SL_OP_ACT_GELU:
            ACT_GRAD_LOOP(dgelu);
            break;
        case SL_OP_ACT_GELU_TANH:
            ACT_GRAD_LOOP(dgelu_tanh);
            break;
        case SL_OP_ACT_NONE:
        default:
            ACT_GRAD_LOOP(ACT_ONE);
            break;
    }
}
#undef ACT_GRAD_LOOP
#undef ACT_ONE

void sl_op_act_backward(float *dx, const float *dout, const float *pre, size_t n, sl_op_act act) {
    const size_t chunk = 4096, nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t c = 0; c < nchunks; c++) {
        const size_t lo = c * chunk, m = n - lo < chunk ? n - lo : chunk;
        act_grad_rows(dx + lo, dout + lo, pre + lo, m, act, 1);
    }
}

/* ------------------------------------------------------------------------ */
/* Linear                                                                   */
/* ------------------------------------------------------------------------ */

void sl_op_matmul_forward_train(float *out, float *pre, int ldo, const float *in, int ldi,
                                const float *w, int w_kn, const float *bias, int M, int K, int N,
                                sl_op_act act) {
    if (act == SL_OP_ACT_NONE) {
        sl_op_matmul_forward(out, ldo, in, ldi, w, w_kn, bias, M, K, N, SL_OP_ACT_NONE, 0);
        return;
    }
    sl_op_matmul_forward(pre, ldo, in, ldi, w, w_kn, bias, M, K, N, SL_OP_ACT_NONE, 0);
#pragma omp parallel for schedule(static) if ((size_t)M * N > PAR_MIN)
    for (int i = 0; i < M; i++) {
        float *o = out + (size_t)i * ldo;
        memcpy(o, pre + (size_t)i * ldo, sizeof(float) * (size_t)N);
        sl_op_act_forward(o, (size_t)N, act); /* serial at row sizes */
    }
}

void sl_op_matmul_backward(float *din, int lddin, float *dw, float *dbias, float *dpre,
                           const float *dout, int lddo, const float *in, int ldi, const float *w,
                           int w_kn, const float *pre, int M, int K, int N, sl_op_act act) {
    if (M <= 0 || N <= 0) return;
    const float *g = dout; /* gradient of the pre-activation [M, lddo] */
    if (act != SL_OP_ACT_NONE) {
#pragma omp parallel for schedule(static) if ((size_t)M * N > PAR_MIN)
        for (int i = 0; i < M; i++)
            act_grad_rows(dpre + (size_t)i * lddo, dout + (size_t)i * lddo, pre + (size_t)i * lddo,
                          (size_t)N, act, 0);
        g = dpre;
    }
    if (dbias) colsum_add(dbias, g, lddo, M, N);
    if (dw) {
        if (w_kn) /* dW [K, N] += in^T [K, M] . g [M, N] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, in, ldi, g, lddo,
                        1.0f, dw, N);
        else /* dW [N, K] += g^T [N, M] . in [M, K] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, g, lddo, in, ldi,
                        1.0f, dw, K);
    }
    if (din) /* din [M, K] += g [M, N] . W [N, K] (w_kn: . W^T, W [K, N]) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, w_kn ? CblasTrans : CblasNoTrans, M, K, N, 1.0f, g,
                    lddo, w, w_kn ? N : K, 1.0f, din, lddin);
}

void sl_op_add_bias_backward(float *dbias, const float *dout, int n, int C) {
    if (dbias && n > 0) colsum_add(dbias, dout, C, n, C);
}

/* ------------------------------------------------------------------------ */
/* LayerNorm, softmax                                                       */
/* ------------------------------------------------------------------------ */

void sl_op_residual_layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                                       const float *x, const float *mean, const float *rstd,
                                       const float *w, int N, int C) {
    if (N <= 0) return;
    if (dx) {
        /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * C, *xi = x + (size_t)i * C;
            const float m = mean[i], r = rstd[i];
            float sg = 0, sgx = 0;
            for (int j = 0; j < C; j++) {
                float gj = d[j] * w[j];
                sg += gj;
                sgx += gj * (xi[j] - m) * r;
            }
            sg /= (float)C;
            sgx /= (float)C;
            float *o = dx + (size_t)i * C;
            for (int j = 0; j < C; j++) {
                float xh = (xi[j] - m) * r;
                o[j] += r * (d[j] * w[j] - sg - xh * sgx);
            }
        }
    }
    if (db) colsum_add(db, dout, C, N, C);
    if (dw) {
        const int cb = col_block(C), nb = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
        for (int blk = 0; blk < nb; blk++) {
            const int j0 = blk * cb, j1 = j0 + cb < C ? j0 + cb : C;
            double s[256];
            for (int jb = j0; jb < j1; jb += 256) {
                const int je = jb + 256 < j1 ? jb + 256 : j1;
                for (int j = jb; j < je; j++) s[j - jb] = 0;
                for (int i = 0; i < N; i++) {
                    const float *d = dout + (size_t)i * C, *xi = x + (size_t)i * C;
                    const float m = mean[i], r = rstd[i];
                    for (int j = jb; j < je; j++) s[j - jb] += d[j] * ((xi[j] - m) * r);
                }
                for (int j = jb; j < je; j++) dw[j] += (float)s[j - jb];
            }
        }
    }
}

/* dx [n] += y * (dy - sum(dy * y)) over one row's first n entries. */
static inline void row_softmax_backward(float *dx, const float *dy, const float *y, int n) {
    float dot = 0;
    for (int j = 0; j < n; j++) dot += dy[j] * y[j];
    for (int j = 0; j < n; j++) dx[j] += y[j] * (dy[j] - dot);
}

void sl_op_softmax_rows_backward(float *dx, const float *dy, const float *y, int n, int C,
                                 const int *valid) {
#pragma omp parallel for schedule(static) if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++)
        row_softmax_backward(dx + (size_t)i * C, dy + (size_t)i * C, y + (size_t)i * C,
                             valid ? valid[i] : C);
}

/* ------------------------------------------------------------------------ */
/* Gather / embeddings                                                      */
/* ------------------------------------------------------------------------ */

void sl_op_gather_rows_backward(float *dsrc, const float *ddst, const int *idx, int n, int C) {
    const int cb = col_block(C), nb = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if ((size_t)n * C > PAR_MIN)
    for (int blk = 0; blk < nb; blk++) {
        const int j0 = blk * cb, j1 = j0 + cb < C ? j0 + cb : C;
        for (int i = 0; i < n; i++) {
            float *o = dsrc + (size_t)idx[i] * C;
            const float *d = ddst + (size_t)i * C;
            for (int j = j0; j < j1; j++) o[j] += d[j];
        }
    }
}

void sl_op_vision_embed_forward(float *x, const float *patch, const float *cls, const float *pos,
                                int n, int P, int W) {
    const int T = P + 1, R = n * T;
#pragma omp parallel for schedule(static) if ((size_t)R * W > PAR_MIN)
    for (int r = 0; r < R; r++) {
        const int b = r / T, t = r % T;
        const float *src = t == 0 ? cls : patch + ((size_t)b * P + t - 1) * W;
        const float *p = pos + (size_t)t * W;
        float *dst = x + (size_t)r * W;
        for (int j = 0; j < W; j++) dst[j] = src[j] + p[j];
    }
}

void sl_op_vision_embed_backward(float *dpatch, float *dcls, float *dpos, const float *dx, int n,
                                 int P, int W) {
    const int T = P + 1;
    if (dpatch) {
#pragma omp parallel for schedule(static) if ((size_t)n * P * W > PAR_MIN)
        for (int r = 0; r < n * P; r++) {
            const int b = r / P, i = r % P;
            const float *d = dx + ((size_t)b * T + 1 + i) * W;
            float *o = dpatch + (size_t)r * W;
            for (int j = 0; j < W; j++) o[j] += d[j];
        }
    }
    if (!dcls && !dpos) return;
        /* Position t (and the class token, t = 0) sums over the n images. */
#pragma omp parallel for schedule(static) if ((size_t)n * T * W > PAR_MIN)
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < n; b++) {
            const float *d = dx + ((size_t)b * T + t) * W;
            if (dpos) {
                float *o = dpos + (size_t)t * W;
                for (int j = 0; j < W; j++) o[j] += d[j];
            }
            if (t == 0 && dcls)
                for (int j = 0; j < W; j++) dcls[j] += d[j];
        }
    }
}

void sl_op_text_embed_forward(float *x, const int32_t *ids, const float *tok, const float *pos,
                              const int *start, const int *len, int nseq, int ctx, int W) {
#pragma omp parallel for schedule(dynamic, 4)
    for (int s = 0; s < nseq; s++)
        for (int t = 0; t < len[s]; t++) {
            const float *e = tok + (size_t)ids[(size_t)s * ctx + t] * W;
            const float *p = pos + (size_t)t * W;
            float *dst = x + (size_t)(start[s] + t) * W;
            for (int j = 0; j < W; j++) dst[j] = e[j] + p[j];
        }
}

void sl_op_text_embed_backward(float *dtok, float *dpos, const float *dx, const int32_t *ids,
                               const int *start, const int *len, int nseq, int ctx, int W) {
    if (!dtok && !dpos) return;
    const int cb = col_block(W), nb = (W + cb - 1) / cb;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        const int j0 = blk * cb, j1 = j0 + cb < W ? j0 + cb : W;
        for (int s = 0; s < nseq; s++)
            for (int t = 0; t < len[s]; t++) {
                const float *d = dx + (size_t)(start[s] + t) * W;
                if (dtok) {
                    float *o = dtok + (size_t)ids[(size_t)s * ctx + t] * W;
                    for (int j = j0; j < j1; j++) o[j] += d[j];
                }
                if (dpos) {
                    float *o = dpos + (size_t)t * W;
                    for (int j = j0; j < j1; j++) o[j] += d[j];
                }
            }
    }
}

void sl_op_im2col_patches_backward(float *dpixels, const float *dcols, int n, int C, int S, int p) {
    const int g = S / p, kk = C * p * p;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                const float *row = dcols + ((size_t)(b * g + gy) * g + gx) * kk;
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < p; ky++) {
                        float *o = dpixels + (((size_t)b * C + c) * S + gy * p + ky) * S + gx * p;
                        const float *d = row + (c * p + ky) * p;
                        for (int kx = 0; kx < p; kx++) o[kx] += d[kx];
                    }
            }
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                */
/* ------------------------------------------------------------------------ */

size_t sl_op_attention_backward_scratch(int maxlen) {
    return (size_t)omp_get_max_threads() * 2 * (size_t)maxlen * (size_t)maxlen;
}

/* One block of one (sequence, head): query rows q0 .. q0+nq-1 against keys
 * 0 .. nk-1 (causal: row q0+i sees keys <= q0+i). Q, K, V and dQ, dK, dV
 * point at row 0 of the sequence, this head's columns (row stride ld);
 * dO at query row q0 (stride lddo). P, dP: [nq, nk] scratch. */
static void attention_block_backward(float *dQ, float *dK, float *dV, const float *dO, int lddo,
                                     const float *Q, const float *K, const float *V, int ld, int dh,
                                     int q0, int nq, int nk, int causal, float scale, float *P,
                                     float *dP) {
    /* P [nq, nk] = softmax(scale * Q . K^T), recomputed as the forward did. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dh, scale, Q + (size_t)q0 * ld, ld,
                K, ld, 0.0f, P, nk);
    for (int i = 0; i < nq; i++) {
        int valid = causal && q0 + i + 1 < nk ? q0 + i + 1 : nk;
        sl_op_softmax_rows(P + (size_t)i * nk, 1, nk, &valid);
    }
    /* dV [nk, dh] += P^T . dO */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, dh, nq, 1.0f, P, nk, dO, lddo, 1.0f,
                dV, ld);
    /* dP [nq, nk] = dO . V^T; dS = P * (dP - rowsum(P * dP)) in place */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dh, 1.0f, dO, lddo, V, ld, 0.0f,
                dP, nk);
    for (int i = 0; i < nq; i++) {
        float *p = P + (size_t)i * nk, *d = dP + (size_t)i * nk;
        float dot = 0;
        for (int j = 0; j < nk; j++) dot += p[j] * d[j];
        for (int j = 0; j < nk; j++) d[j] = p[j] * (d[j] - dot);
    }
    /* dQ [nq, dh] += scale * dS . K; dK [nk, dh] += scale * dS^T . Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dh, nk, scale, dP, nk, K, ld, 1.0f,
                dQ + (size_t)q0 * ld, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, dh, nq, scale, dP, nk,
                Q + (size_t)q0 * ld, ld, 1.0f, dK, ld);
}

void sl_op_attention_backward(float *dqkv, const float *dout, int lddo, const float *qkv,
                              const int *start, const int *len, const int *qrow, int nseq,
                              int width, int heads, int causal, float *scratch, int maxlen) {
    const int dh = width / heads, ld = 3 * width;
    const float scale = 1.0f / sqrtf((float)dh);
    const int tasks = nseq * heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++) {
        const int s = task / heads, h = task % heads, L = len[s];
        if (L <= 0) continue;
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * maxlen * maxlen;
        float *dP = P + (size_t)maxlen * maxlen;
        const size_t off = (size_t)start[s] * ld + (size_t)h * dh;
        const float *Q = qkv + off, *K = Q + width, *V = Q + 2 * width;
        float *dQ = dqkv + off, *dK = dQ + width, *dV = dQ + 2 * width;
        if (qrow) {
            const int r = qrow[s], nk = causal ? r + 1 : L;
            attention_block_backward(dQ, dK, dV, dout + (size_t)s * lddo + h * dh, lddo, Q, K, V,
                                     ld, dh, r, 1, nk, causal, scale, P, dP);
            continue;
        }
        /* Causal: blocks of 32 query rows see keys up to the block's end. */
        const int B = causal ? 32 : L;
        for (int i0 = 0; i0 < L; i0 += B) {
            const int nq = L - i0 < B ? L - i0 : B, nk = causal ? i0 + nq : L;
            attention_block_backward(dQ, dK, dV,
                                     dout + ((size_t)start[s] + i0) * lddo + (size_t)h * dh, lddo,
                                     Q, K, V, ld, dh, i0, nq, nk, causal, scale, P, dP);
        }
    }
}
