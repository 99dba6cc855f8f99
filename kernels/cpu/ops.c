/*
 * kernels/cpu/ops.c - transformer forward ops on the CPU (see ops.h).
 *
 * The elementwise kernels are plain C written so that GCC vectorises them
 * (fixed-width partial sums instead of serial reductions, a branch-free
 * exp), compiled once per ISA with target_clones and picked at load time.
 */
#include "kernels/cpu/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/cpu/clones.h"

#define LANES 16 /* partial sums per reduction: one AVX-512 register */

/* ------------------------------------------------------------------------ */
/* Scalar building blocks (inlined into the vectorised loops)               */
/* ------------------------------------------------------------------------ */

/* exp(x) for x in [-87, 88] (clamped outside): round(x / ln2) = n,
 * r = x - n ln2 (two-part ln2), degree-6 Taylor polynomial on |r| <= ln2/2
 * (relative error < 2e-7), times 2^n built in the exponent bits. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fn = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to nearest */
    fn -= 12582912.0f;
    int n = (int)fn;
    float r = x - fn * 0.693145751953125f;
    r = r - fn * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float quick_gelu(float x) {
    return x / (1.0f + exp_approx(-1.702f * x));
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). */
static inline float gelu_erf(float x) {
    float z = x * 0.70710678118654752f;
    float az = z < 0 ? -z : z;
    float t = 1.0f / (1.0f + 0.3275911f * az);
    float poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float e = 1.0f - poly * exp_approx(-az * az);
    e = z < 0 ? -e : e;
    return 0.5f * x * (1.0f + e);
}

static inline float gelu_tanh(float x) {
    float y = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    /* tanh(y) = 1 - 2 / (exp(2y) + 1) */
    float th = 1.0f - 2.0f / (exp_approx(2.0f * y) + 1.0f);
    return 0.5f * x * (1.0f + th);
}

/* ------------------------------------------------------------------------ */
/* Row kernels (one ISA clone each)                                         */
/* ------------------------------------------------------------------------ */

/* y[n] = act(y + bias) (bias may be NULL). */
SL_CLONES static void row_bias_act(float *restrict y, const float *restrict bias, int n,
                                   sl_op_act act) {
    if (bias)
        for (int i = 0; i < n; i++) y[i] += bias[i];
    switch (act) {
        case SL_OP_ACT_QUICK_GELU:
            for (int i = 0; i < n; i++) y[i] = quick_gelu(y[i]);
            break;
        case SL_OP_ACT_GELU:
            for (int i = 0; i < n; i++) y[i] = gelu_erf(y[i]);
            break;
        case SL_OP_ACT_GELU_TANH:
            for (int i = 0; i < n; i++) y[i] = gelu_tanh(y[i]);
            break;
        case SL_OP_ACT_NONE:
            break;
    }
}

static inline float sum_lanes(const float *acc) {
    float s = 0;
    for (int k = 0; k < LANES; k++) s += acc[k];
    return s;
}

/* LayerNorm of one row (x += bias first when bias). */
SL_CLONES static void row_layernorm(float *restrict out, float *x, const float *restrict bias,
                                    const float *restrict w, const float *restrict b, int C,
                                    float eps, float *mean_out, float *rstd_out) {
    if (bias)
        for (int i = 0; i < C; i++) x[i] += bias[i];
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= C; i += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += x[i + k];
    float s = sum_lanes(acc);
    for (; i < C; i++) s += x[i];
    float mean = s / (float)C;
    float acc2[LANES] = {0};
    i = 0;
    for (; i + LANES <= C; i += LANES)
        for (int k = 0; k < LANES; k++) {
            float d = x[i + k] - mean;
            acc2[k] += d * d;
        }
    float v = sum_lanes(acc2);
    for (; i < C; i++) v += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.0f / sqrtf(v / (float)C + eps);
    for (i = 0; i < C; i++) out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    if (mean_out) *mean_out = mean;
    if (rstd_out) *rstd_out = rstd;
}

/* Softmax over x[0..n), zeroing x[n..C). */
SL_CLONES static void row_softmax(float *x, int n, int C) {
    float mx[LANES];
    for (int k = 0; k < LANES; k++) mx[k] = -INFINITY;
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) mx[k] = x[i + k] > mx[k] ? x[i + k] : mx[k];
    float m = -INFINITY;
    for (int k = 0; k < LANES; k++) m = mx[k] > m ? mx[k] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    float acc[LANES] = {0};
    i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            float e = exp_approx(x[i + k] - m);
            x[i + k] = e;
            acc[k] += e;
        }
    float s = sum_lanes(acc);
    for (; i < n; i++) {
        x[i] = exp_approx(x[i] - m);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (i = 0; i < n; i++) x[i] *= inv;
    for (i = n; i < C; i++) x[i] = 0.0f;
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */
/* ------------------------------------------------------------------------ */

void sl_op_act_forward(float *x, size_t n, sl_op_act act) {
    if (act == SL_OP_ACT_NONE) return;
    const size_t chunk = 4096;
    size_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t c = 0; c < nchunks; c++) {
        size_t lo = c * chunk, len = n - lo < chunk ? n - lo : chunk;
        row_bias_act(x + lo, NULL, (int)len, act);
    }
}

void sl_op_matmul_forward(float *out, int ldo, const float *in, int ldi, const float *w, int w_kn,
                          const float *bias, int M, int K, int N, sl_op_act act, int accumulate) {
    if (M <= 0 || N <= 0) return;
    /* out [M, N] = in [M, K] . W^T: W [N, K] is "transposed" in BLAS terms,
     * W [K, N] (w_kn) is not. With a bias, out is first filled with it and
     * the sgemm accumulates (beta = 1): that write replaces the pass BLAS
     * makes to zero out for beta = 0, and the bias needs no pass of its own. */
    const int prefill = bias && !accumulate;
    if (prefill) {
#pragma omp parallel for schedule(static) if ((size_t)M * N > 32768)
        for (int i = 0; i < M; i++) memcpy(out + (size_t)i * ldo, bias, sizeof(float) * (size_t)N);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, w_kn ? CblasNoTrans : CblasTrans, M, N, K, 1.0f, in,
                ldi, w, w_kn ? N : K, accumulate || prefill ? 1.0f : 0.0f, out, ldo);
    if (act == SL_OP_ACT_NONE && (prefill || !bias)) return;
#pragma omp parallel for schedule(static) if ((size_t)M * N > 32768)
    for (int i = 0; i < M; i++) row_bias_act(out + (size_t)i * ldo, prefill ? NULL : bias, N, act);
}

void sl_op_residual_layernorm_forward(float *out, float *mean, float *rstd, float *x,
                                      const float *bias, const float *w, const float *b, int N,
                                      int C, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > 32768)
    for (int i = 0; i < N; i++)
        row_layernorm(out + (size_t)i * C, x + (size_t)i * C, bias, w, b, C, eps,
                      mean ? mean + i : NULL, rstd ? rstd + i : NULL);
}

void sl_op_gather_rows(float *dst, const float *src, const int *idx, int n, int C) {
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * C, src + (size_t)idx[i] * C, sizeof(float) * (size_t)C);
}

void sl_op_add_bias(float *x, const float *bias, int n, int C) {
#pragma omp parallel for schedule(static) if ((size_t)n * C > 32768)
    for (int i = 0; i < n; i++) row_bias_act(x + (size_t)i * C, bias, C, SL_OP_ACT_NONE);
}

void sl_op_softmax_rows(float *x, int n, int C, const int *valid) {
    for (int i = 0; i < n; i++) row_softmax(x + (size_t)i * C, valid ? valid[i] : C, C);
}

void sl_op_attention_forward(float *out, int ldo, const float *qkv, const int *start,
                             const int *len, const int *qrow, int nseq, int width, int heads,
                             int causal, float *scratch, int maxlen) {
    const int dh = width / heads, ld = 3 * width;
    const float scale = 1.0f / sqrtf((float)dh);
    const int tasks = nseq * heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++) {
        const int s = task / heads, h = task % heads;
        float *S = scratch + (size_t)omp_get_thread_num() * maxlen * maxlen;
        const int L = len[s];
        const float *base = qkv + (size_t)start[s] * ld;
        const float *K = base + width + h * dh, *V = base + 2 * width + h * dh;
        if (qrow) {
            /* One query row: keys 0..qrow (causal) or all. */
            const int r = qrow[s], nk = causal ? r + 1 : L;
            const float *q = base + (size_t)r * ld + h * dh;
            /* S [1, nk] = scale * q . K^T */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, nk, dh, scale, K, ld, q, 1, 0.0f, S, 1);
            row_softmax(S, nk, nk);
            /* out [1, dh] = S . V */
            cblas_sgemv(CblasRowMajor, CblasTrans, nk, dh, 1.0f, V, ld, S, 1, 0.0f,
                        out + (size_t)s * ldo + h * dh, 1);
            continue;
        }
        const float *Q = base + h * dh;
        float *O = out + (size_t)start[s] * ldo + h * dh;
        if (!causal) {
            /* S [L, L] = scale * Q . K^T; softmax rows; O [L, dh] = S . V */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, dh, scale, Q, ld, K, ld,
                        0.0f, S, L);
            for (int i = 0; i < L; i++) row_softmax(S + (size_t)i * L, L, L);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dh, L, 1.0f, S, L, V, ld,
                        0.0f, O, ldo);
            continue;
        }
        /* Causal: query blocks of B rows only see keys up to the block's
         * end; the masked part of each block is zeroed after the softmax. */
        const int B = 32;
        for (int i0 = 0; i0 < L; i0 += B) {
            const int nq = L - i0 < B ? L - i0 : B, nk = i0 + nq;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dh, scale,
                        Q + (size_t)i0 * ld, ld, K, ld, 0.0f, S, nk);
            for (int i = 0; i < nq; i++) row_softmax(S + (size_t)i * nk, i0 + i + 1, nk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dh, nk, 1.0f, S, nk, V, ld,
                        0.0f, O + (size_t)i0 * ldo, ldo);
        }
    }
}

void sl_op_im2col_patches(float *cols, const float *pixels, int n, int C, int S, int p) {
    const int g = S / p, kk = C * p * p;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                float *row = cols + ((size_t)(b * g + gy) * g + gx) * kk;
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < p; ky++)
                        memcpy(row + (c * p + ky) * p,
                               pixels + (((size_t)b * C + c) * S + gy * p + ky) * S + gx * p,
                               sizeof(float) * (size_t)p);
            }
}
