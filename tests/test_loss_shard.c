/*
 * tests/test_loss_shard.c - the sharded symmetric InfoNCE
 * (kernels/cpu/loss_shard.c) against the full-batch one (kernels/cpu/loss.c),
 * with R data-parallel ranks simulated in process.
 *
 * For R in {1, 2, 3, 4} ranks of b in {1, 5, 8} pairs (D 16; N = R b) on
 * random L2-normalised embeddings, at t = 2 (scale 7.4), 4.5 (90), ln 100
 * (the clamp's bound) and 5.5 (clamped):
 *   (1) sum over ranks of loss_r = sl_loss_infonce_forward on the N pairs
 *       (relative 1e-6);
 *   (2) the all-reduce / reduce-scatter: for each rank r, rows
 *       [r b, r b + b) of sum over ranks of dimg_g, dtxt_g equal those rows
 *       of sl_loss_infonce_backward's dimg, dtxt on the full batch (relative
 *       norm 1e-5 per slice), and sum over ranks of dt = the full dt;
 *   (3) central differences in double of a double reference of loss_r for
 *       single ranks (see FD_TOL);
 *   (4) above the clamp dt is left unchanged (as the full version), at the
 *       bound it is not, and the loss is the one at the bound;
 *   (5) R = 1: the shard's loss equals the full loss within 1e-7 relative
 *       (it is printed whether it was bitwise: the shard's column logits
 *       come from their own sgemm, txt . img^T, so only the BLAS kernel's
 *       summation order decides);
 * plus: backward adds (two calls = twice one), NULL gradients are skipped,
 * one case large enough for the OpenMP regions (R 2, b 128, D 64), and
 * bad sizes are no-ops.
 */
#include "kernels/cpu/loss.h"
#include "kernels/cpu/loss_shard.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x5ad0c11fULL;

/* Uniform in [-1, 1) (xorshift64*). */
static float urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1DULL;
    return (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *zeros(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}

/* n random L2-normalised rows of D. */
static float *rnd_unit(int n, int D) {
    float *p = zeros((size_t)n * D), *norm = zeros((size_t)n);
    for (size_t i = 0; i < (size_t)n * D; i++) p[i] = urand();
    sl_op_l2_normalize_forward(p, norm, p, n, D);
    free(norm);
    return p;
}

static float *copy_of(const float *src, size_t n) {
    float *p = zeros(n);
    memcpy(p, src, sizeof(float) * n);
    return p;
}

/* ||a - ref|| / ||ref|| in double (0 when both are 0). */
static double rel_err(const float *a, const double *ref_d, const float *ref_f, size_t n) {
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        const double r = ref_d ? ref_d[i] : ref_f[i];
        d2 += (a[i] - r) * (a[i] - r);
        r2 += r * r;
    }
    return r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
}

static double worst_loss, worst_grad, worst_dt, worst_fd;

/* ------------------------------------------------------------------------ */
/* (1) (2) (4) (5): the ranks' sum against the full batch                   */
/* ------------------------------------------------------------------------ */

static void test_vs_full(int R, int b, int D, float t) {
    const int N = R * b;
    const size_t ND = (size_t)N * D, bD = (size_t)b * D;
    const float dloss = 0.7f, s = expf(t < SL_LOSS_MAX_LOG_SCALE ? t : SL_LOSS_MAX_LOG_SCALE);
    float *img = rnd_unit(N, D), *txt = rnd_unit(N, D);

    /* The full batch. */
    float *fsaved = zeros(3 * (size_t)N * N), *fscratch = zeros((size_t)N * N);
    float *fdimg = zeros(ND), *fdtxt = zeros(ND), fdt = 0.25f;
    const float full = sl_loss_infonce_forward(fsaved, img, txt, t, N, D);
    sl_loss_infonce_backward(fdimg, fdtxt, &fdt, fscratch, dloss, fsaved, img, txt, t, N, D);

    /* R ranks, each with its local pairs in their own buffers and its own
     * [N, D] gradients, summed over ranks in double (the all-reduce). */
    float *saved = zeros(sl_loss_infonce_shard_saved_size(b, R));
    float *scratch = zeros(sl_loss_infonce_shard_scratch_size(b, R));
    float *dimg = zeros(ND), *dtxt = zeros(ND), *tmp = zeros(ND);
    double *simg = calloc(ND, sizeof(double)), *stxt = calloc(ND, sizeof(double));
    if (!simg || !stxt) abort();
    double sloss = 0, sdt = 0;
    float loss_r0 = 0;
    for (int r = 0; r < R; r++) {
        float *img_l = copy_of(img + (size_t)r * bD, bD),
              *txt_l = copy_of(txt + (size_t)r * bD, bD);
        const float lr =
            sl_loss_infonce_shard_forward(saved, img_l, txt_l, img, txt, t, r, R, b, D);
        if (r == 0) loss_r0 = lr;
        sloss += lr;
        memset(dimg, 0, sizeof(float) * ND);
        memset(dtxt, 0, sizeof(float) * ND);
        float dt = 0.25f;
        sl_loss_infonce_shard_backward(dimg, dtxt, &dt, scratch, dloss, saved, img_l, txt_l, img,
                                       txt, t, r, R, b, D);
        for (size_t i = 0; i < ND; i++) simg[i] += dimg[i], stxt[i] += dtxt[i];
        sdt += (double)dt - 0.25;

        /* (4): above the clamp dt is untouched and the loss is the bound's. */
        if (t > SL_LOSS_MAX_LOG_SCALE) {
            CHECK_MSG(dt == 0.25f, "R=%d b=%d rank %d t=%g: dt %.9g changed above the clamp", R, b,
                      r, t, dt);
            float *s2 = zeros(sl_loss_infonce_shard_saved_size(b, R));
            const float lb = sl_loss_infonce_shard_forward(s2, img_l, txt_l, img, txt,
                                                           SL_LOSS_MAX_LOG_SCALE, r, R, b, D);
            CHECK_MSG(lb == lr, "R=%d b=%d rank %d: loss %.9g above the clamp vs %.9g at it", R, b,
                      r, lr, lb);
            free(s2);
        } else if (N > 1) {
            CHECK_MSG(dt != 0.25f, "R=%d b=%d rank %d t=%g: no dt below/at the clamp", R, b, r, t);
        }

        /* Backward adds: a second call on the same buffers doubles them;
         * NULL gradients are skipped without changing the others. */
        if (r == R - 1) {
            memcpy(tmp, dtxt, sizeof(float) * ND);
            sl_loss_infonce_shard_backward(NULL, dtxt, NULL, scratch, dloss, saved, img_l, txt_l,
                                           img, txt, t, r, R, b, D);
            double w = 0, sc = 1e-30;
            for (size_t i = 0; i < ND; i++) {
                w = fmax(w, fabs(dtxt[i] - 2.0 * tmp[i]));
                sc = fmax(sc, fabs(tmp[i]));
            }
            CHECK_MSG(w <= 1e-5 * sc, "R=%d b=%d: two backward calls are not twice one (%.3g)", R,
                      b, w / sc);
        }
        free(img_l), free(txt_l);
    }

    /* (1) the losses sum to the global loss. N = 1: both are exactly 0. */
    const double el = fabs(sloss - full) / (fabs(full) > 0 ? fabs(full) : 1.0);
    worst_loss = fmax(worst_loss, el);
    CHECK_MSG(el <= 1e-6, "R=%d b=%d t=%g: sum of loss_r %.9g vs full %.9g (rel %.3g)", R, b, t,
              sloss, full, el);

    /* (5) one rank is the full loss. */
    if (R == 1) {
        const double e1 = fabs((double)loss_r0 - full) / (fabs(full) > 0 ? fabs(full) : 1.0);
        printf("  R=1 b=%d t=%-5.3g loss %.9g vs full %.9g: %s\n", b, t, loss_r0, full,
               loss_r0 == full ? "bitwise equal" : "differs");
        CHECK_MSG(e1 <= 1e-7, "R=1 b=%d t=%g: loss %.9g vs full %.9g", b, t, loss_r0, full);
    }

    /* (2) each rank's slice of the reduced gradients (what a reduce-scatter
     * hands it) is the full batch's gradient of its local embeddings. */
    for (int r = 0; r < R; r++) {
        const size_t o = (size_t)r * bD;
        const double ei = rel_err(fdimg + o, simg + o, NULL, bD);
        const double et = rel_err(fdtxt + o, stxt + o, NULL, bD);
        worst_grad = fmax(worst_grad, fmax(ei, et));
        CHECK_MSG(ei <= 1e-5 && et <= 1e-5, "R=%d b=%d t=%g rank %d slice: dimg rel %.3g dtxt %.3g",
                  R, b, t, r, ei, et);
    }
    /* dt: relative 1e-5, with an absolute floor for a dt near 0: the logits
     * carry ~1e-7 s absolute rounding each and their gradients sum to
     * |dloss| in absolute value per direction, so 1e-7 |dloss| s. */
    const double fd = (double)fdt - 0.25, edt = fabs(sdt - fd);
    worst_dt = fmax(worst_dt, edt / fmax(fabs(fd), 1e-30));
    if (t > SL_LOSS_MAX_LOG_SCALE)
        CHECK_MSG(fdt == 0.25f && sdt == 0.0, "R=%d b=%d: full dt %.9g / shard sum %.9g moved", R,
                  b, fdt, sdt);
    else
        CHECK_MSG(edt <= 1e-5 * fabs(fd) + 1e-7 * dloss * s,
                  "R=%d b=%d t=%g: sum of dt %.9g vs full %.9g", R, b, t, sdt, fd);

    free(img), free(txt), free(fsaved), free(fscratch), free(fdimg), free(fdtxt), free(saved);
    free(scratch), free(dimg), free(dtxt), free(tmp), free(simg), free(stxt);
}

/* ------------------------------------------------------------------------ */
/* (3) finite differences in double                                         */
/* ------------------------------------------------------------------------ */

/* Rank r's loss_r in double from double embeddings ([N, D] each, the local
 * rows being rows [r b, r b + b)): the definition, written directly. */
static double ref_loss_r(const double *I, const double *T, double t, int r, int R, int b, int D) {
    const int N = R * b;
    const double s = exp(t < (double)SL_LOSS_MAX_LOG_SCALE ? t : (double)SL_LOSS_MAX_LOG_SCALE);
    double total = 0, l[64];
    for (int dir = 0; dir < 2; dir++)
        for (int k = r * b; k < r * b + b; k++) {
            double mx = -INFINITY, sum = 0;
            for (int n = 0; n < N; n++) {
                /* dir 0: row k of L (image k, text n); dir 1: column k. */
                const double *a = (dir ? T : I) + (size_t)k * D, *c = (dir ? I : T) + (size_t)n * D;
                double d = 0;
                for (int j = 0; j < D; j++) d += a[j] * c[j];
                l[n] = s * d;
                mx = fmax(mx, l[n]);
            }
            for (int n = 0; n < N; n++) sum += exp(l[n] - mx);
            total += log(sum) + mx - l[k];
        }
    return total / (2.0 * N);
}

/*
 * Tolerance. The reference is double throughout; its central difference
 * with h = 1e-6 has truncation error ~h^2 s^3 / 6 relative to a gradient
 * of order s (<= 1e-8 at s = 90) and rounding ~1e-16 / h = 1e-10, so the
 * comparison measures the float analytic gradient's own rounding: measured
 * 7e-8 .. 2.3e-7 (printed; larger at s = 90, where the logits' rounding is
 * larger). FD_TOL = 1e-5 leaves ~40x of margin for other BLAS kernels and
 * thread counts, while a real mistake (a missing column term, a wrong
 * target offset, 2b instead of 2N, a missing s) is 1e-1 and more.
 */
#define FD_TOL 1e-5

static void test_fd(int R, int b, int r, int D, float t) {
    const int N = R * b;
    const size_t ND = (size_t)N * D, bD = (size_t)b * D;
    const float dloss = 0.7f;
    float *img = rnd_unit(N, D), *txt = rnd_unit(N, D);
    float *saved = zeros(sl_loss_infonce_shard_saved_size(b, R));
    float *scratch = zeros(sl_loss_infonce_shard_scratch_size(b, R));
    float *dimg = zeros(ND), *dtxt = zeros(ND), dt = 0;
    const float *img_l = img + (size_t)r * bD, *txt_l = txt + (size_t)r * bD;
    const float lr = sl_loss_infonce_shard_forward(saved, img_l, txt_l, img, txt, t, r, R, b, D);
    sl_loss_infonce_shard_backward(dimg, dtxt, &dt, scratch, dloss, saved, img_l, txt_l, img, txt,
                                   t, r, R, b, D);

    double *I = malloc(sizeof(double) * ND), *T = malloc(sizeof(double) * ND);
    double *gI = malloc(sizeof(double) * ND), *gT = malloc(sizeof(double) * ND);
    if (!I || !T || !gI || !gT) abort();
    for (size_t i = 0; i < ND; i++) I[i] = img[i], T[i] = txt[i];
    const double ref = ref_loss_r(I, T, t, r, R, b, D);
    CHECK_MSG(fabs(lr - ref) <= 1e-6 * fabs(ref), "fd R=%d b=%d r=%d t=%g: loss %.9g vs %.9g", R, b,
              r, t, lr, ref);

    const double h = 1e-6;
    for (int which = 0; which < 2; which++) {
        double *P = which ? T : I, *g = which ? gT : gI;
        for (size_t i = 0; i < ND; i++) {
            const double v = P[i];
            P[i] = v + h;
            const double lp = ref_loss_r(I, T, t, r, R, b, D);
            P[i] = v - h;
            const double lm = ref_loss_r(I, T, t, r, R, b, D);
            P[i] = v;
            g[i] = dloss * (lp - lm) / (2 * h);
        }
    }
    const double gt = dloss *
                      (ref_loss_r(I, T, (double)t + h, r, R, b, D) -
                       ref_loss_r(I, T, (double)t - h, r, R, b, D)) /
                      (2 * h);
    const double ei = rel_err(dimg, gI, NULL, ND), et = rel_err(dtxt, gT, NULL, ND);
    const double ett = fabs(dt - gt) / fmax(fabs(gt), 1e-30);
    /* Rows of other ranks must get gradient too (the column terms). */
    double other = 0;
    for (size_t i = 0; i < ND; i++)
        if (i / bD != (size_t)r) other += fabs(dimg[i]) + fabs(dtxt[i]);
    printf("  fd R=%d b=%d rank %d t=%-4.3g dimg_g rel %.2e  dtxt_g rel %.2e  dt rel %.2e\n", R, b,
           r, t, ei, et, ett);
    worst_fd = fmax(worst_fd, fmax(fmax(ei, et), ett));
    CHECK_MSG(ei <= FD_TOL && et <= FD_TOL && ett <= FD_TOL,
              "fd R=%d b=%d r=%d t=%g: dimg %.3g dtxt %.3g dt %.3g", R, b, r, t, ei, et, ett);
    CHECK_MSG(R == 1 || other > 0, "fd R=%d: no gradient reaches the other ranks' rows", R);
    free(img), free(txt), free(saved), free(scratch), free(dimg), free(dtxt);
    free(I), free(T), free(gI), free(gT);
}

/* ------------------------------------------------------------------------ */

static void test_bad_sizes(void) {
    float buf[8] = {0}, dt = 1.0f;
    CHECK(sl_loss_infonce_shard_forward(buf, buf, buf, buf, buf, 1.0f, 2, 2, 1, 1) == 0.0f);
    CHECK(sl_loss_infonce_shard_forward(buf, buf, buf, buf, buf, 1.0f, -1, 2, 1, 1) == 0.0f);
    CHECK(sl_loss_infonce_shard_forward(buf, buf, buf, buf, buf, 1.0f, 0, 0, 1, 1) == 0.0f);
    CHECK(sl_loss_infonce_shard_forward(buf, buf, buf, buf, buf, 1.0f, 0, 1, 0, 1) == 0.0f);
    sl_loss_infonce_shard_backward(buf, buf, &dt, buf, 1.0f, buf, buf, buf, buf, buf, 1.0f, 3, 2, 1,
                                   1);
    CHECK(dt == 1.0f);
    CHECK(sl_loss_infonce_shard_saved_size(5, 3) == 2 * 5 * 15 + 2 * 5);
    CHECK(sl_loss_infonce_shard_scratch_size(5, 3) == 5 * 15);
}

int main(void) {
    const float ts[4] = {2.0f, 4.5f, SL_LOSS_MAX_LOG_SCALE, 5.5f};
    const int bs[3] = {1, 5, 8};
    for (int k = 0; k < 4; k++)
        for (int R = 1; R <= 4; R++)
            for (int j = 0; j < 3; j++) test_vs_full(R, bs[j], 16, ts[k]);
    test_vs_full(2, 128, 64, 2.0f); /* 2 b N > 32768: the OpenMP regions run */
    printf("  sum over ranks vs full batch: worst rel loss %.2e, grad slice %.2e, dt %.2e\n",
           worst_loss, worst_grad, worst_dt);

    test_fd(3, 5, 1, 16, 2.0f);
    test_fd(3, 5, 1, 16, 4.5f);
    test_fd(4, 1, 3, 16, 2.0f);
    test_fd(2, 8, 0, 16, 4.5f);
    test_fd(1, 5, 0, 16, 2.0f);
    printf("  worst relative FD error: %.2e (tolerance %.0e)\n", worst_fd, FD_TOL);

    test_bad_sizes();
    return sl_test_finish("test_loss_shard");
}
