/*
 * tests/test_cuda_train_ops.c - the GPU training kernels
 * (kernels/cuda/train_ops.cu) against their CPU twins (kernels/cpu/ops.h,
 * loss.h, trainer/optim.c) on random data: every output's error is
 * max |gpu - cpu| / max |cpu| over the tensor, printed as a table with its
 * tolerance, and every GPU op runs twice from the same inputs and must give
 * bit-identical outputs (determinism).
 *
 * Tolerances: 0 (bit-identical) where the GPU adds in the CPU's order
 * (im2col, embeddings, gather, AdamW + the gradient norm, BF16 helpers);
 * 1e-6 for double-accumulated column sums (LayerNorm dw/db, only the final
 * float rounding can differ); 1e-5 where float sums run in another order
 * or the activation derivatives use other exp/erf approximations (each
 * within ~1e-6 of the exact function); 2e-5 for attention (scores, softmax
 * and four chained contractions, each reordered).
 *
 * Without CUDA in the build or a device in the machine: checks that the
 * context cannot be created (SL_ERR_UNSUPPORTED naming cuda:0), then skips
 * (77).
 */
#include "kernels/cpu/loss.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/train_ops.h"
#include "sightline/sightline.h"
#include "testutil.h"
#include "trainer/model.h"
#include "trainer/optim.h"

#include <omp.h>

static sl_cu_train *G;

/* ---- data ------------------------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static float unif(float a) { /* uniform in [-a, a) */
    return ((float)(next_u32() >> 8) / 16777216.f * 2.f - 1.f) * a;
}

static void *xmalloc(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) {
        fprintf(stderr, "test_cuda_train_ops: out of memory\n");
        exit(2);
    }
    return p;
}

static float *rnd(size_t n, float a) {
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = unif(a);
    return v;
}

static float *copyf(const float *src, size_t n) {
    float *v = xmalloc(n * sizeof *v);
    memcpy(v, src, n * sizeof *v);
    return v;
}

/* ---- device buffers -------------------------------------------------------- */

static void *dev_dup(const void *h, size_t bytes) {
    void *d = NULL;
    sl_status st = sl_cu_train_alloc(G, &d, bytes);
    if (st == SL_OK && h) st = sl_cu_train_upload(G, d, h, bytes);
    if (st == SL_OK && !h) st = sl_cu_train_zero(G, d, bytes);
    if (st != SL_OK) {
        fprintf(stderr, "test_cuda_train_ops: device buffer: %s\n", sl_last_error());
        exit(2);
    }
    return d;
}

static float *devf(const float *h, size_t n) {
    return dev_dup(h, n * sizeof(float));
}

static int *devi(const int *h, size_t n) {
    return dev_dup(h, n * sizeof(int));
}

static void put(void *d, const void *h, size_t bytes) {
    CHECK_OK(sl_cu_train_upload(G, d, h, bytes));
}

static void get(void *h, const void *d, size_t bytes) {
    CHECK_OK(sl_cu_train_sync(G));
    CHECK_OK(sl_cu_train_download(G, h, d, bytes));
}

static void dfree(void *d) {
    sl_cu_train_free(G, d);
}

/* ---- comparison ------------------------------------------------------------ */

static double relerr(const float *g, const float *c, size_t n) {
    double md = 0, mc = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(g[i]) != isnan(c[i]) || isinf(g[i]) != isinf(c[i])) return INFINITY;
        if (isnan(c[i]) || isinf(c[i])) continue;
        md = fmax(md, fabs((double)g[i] - c[i]));
        mc = fmax(mc, fabs((double)c[i]));
    }
    return md / (mc > 1e-30 ? mc : 1e-30);
}

/* One table row: the error against the tolerance, and determinism. */
static void report(const char *name, double err, double tol, int same) {
    printf("  %-44s %11.3g %9.1g  %s\n", name, err, tol, same ? "yes" : "NO");
    CHECK_MSG(err <= tol, "%s: error %g above %g", name, err, tol);
    CHECK_MSG(same, "%s: two GPU runs differ", name);
}

/* Compare a GPU result (downloaded twice: a, b) with the CPU's c. */
static void cmp(const char *name, const float *a, const float *b, const float *c, size_t n,
                double tol) {
    report(name, relerr(a, c, n), tol, memcmp(a, b, n * sizeof *a) == 0);
}

/* ---- 1. LayerNorm ---------------------------------------------------------- */

static void test_layernorm(int N, int C) {
    const size_t NC = (size_t)N * C;
    float *x = rnd(NC, 2.f), *w = rnd(C, 1.f), *b = rnd(C, 1.f), *dout = rnd(NC, 1.f);
    float *out = xmalloc(NC * sizeof *out), *mean = xmalloc(N * sizeof *mean),
          *rstd = xmalloc(N * sizeof *rstd);
    for (int j = 0; j < C; j++) w[j] += 1.f;
    sl_op_residual_layernorm_forward(out, mean, rstd, x, NULL, w, b, N, C, 1e-5f);
    float *dx0 = rnd(NC, 1.f), *dw0 = rnd(C, 1.f), *db0 = rnd(C, 1.f);
    float *dx = copyf(dx0, NC), *dw = copyf(dw0, C), *db = copyf(db0, C);
    sl_op_residual_layernorm_backward(dx, dw, db, dout, x, mean, rstd, w, N, C);

    float *d_x = devf(x, NC), *d_w = devf(w, C), *d_dout = devf(dout, NC), *d_mean = devf(mean, N),
          *d_rstd = devf(rstd, N), *d_dx = devf(dx0, NC), *d_dw = devf(dw0, C),
          *d_db = devf(db0, C);
    float *g[2][3];
    for (int run = 0; run < 2; run++) {
        put(d_dx, dx0, NC * 4), put(d_dw, dw0, C * 4), put(d_db, db0, C * 4);
        CHECK_OK(
            sl_cu_layernorm_backward(G, d_dx, d_dw, d_db, d_dout, d_x, d_mean, d_rstd, d_w, N, C));
        g[run][0] = xmalloc(NC * 4), g[run][1] = xmalloc(C * 4), g[run][2] = xmalloc(C * 4);
        get(g[run][0], d_dx, NC * 4), get(g[run][1], d_dw, C * 4), get(g[run][2], d_db, C * 4);
    }
    char name[64];
    snprintf(name, sizeof name, "layernorm dx [%d, %d]", N, C);
    cmp(name, g[0][0], g[1][0], dx, NC, 1e-5);
    snprintf(name, sizeof name, "layernorm dw [%d, %d]", N, C);
    cmp(name, g[0][1], g[1][1], dw, C, 1e-6);
    snprintf(name, sizeof name, "layernorm db [%d, %d]", N, C);
    cmp(name, g[0][2], g[1][2], db, C, 1e-6);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) free(g[r][k]);
    dfree(d_x), dfree(d_w), dfree(d_dout), dfree(d_mean), dfree(d_rstd), dfree(d_dx), dfree(d_dw),
        dfree(d_db);
    free(x), free(w), free(b), free(dout), free(out), free(mean), free(rstd), free(dx0), free(dw0),
        free(db0), free(dx), free(dw), free(db);
}

/* ---- 2. activations -------------------------------------------------------- */

static const char *act_name[] = {"none", "quick_gelu", "gelu", "gelu_tanh"};

static void test_act(sl_op_act act) {
    const size_t n = 100003;
    float *pre = rnd(n, 6.f), *dout = rnd(n, 1.f), *dx0 = rnd(n, 1.f), *dx = copyf(dx0, n);
    pre[0] = 0.f, pre[1] = 30.f, pre[2] = -30.f; /* saturation */
    sl_op_act_backward(dx, dout, pre, n, act);
    float *d_pre = devf(pre, n), *d_dout = devf(dout, n), *d_dx = devf(dx0, n);
    float *g[2];
    for (int run = 0; run < 2; run++) {
        put(d_dx, dx0, n * 4);
        CHECK_OK(sl_cu_act_backward(G, d_dx, d_dout, d_pre, n, act));
        g[run] = xmalloc(n * 4);
        get(g[run], d_dx, n * 4);
    }
    char name[64];
    snprintf(name, sizeof name, "act backward %s", act_name[act]);
    cmp(name, g[0], g[1], dx, n, 1e-5);
    free(g[0]), free(g[1]), dfree(d_pre), dfree(d_dout), dfree(d_dx);
    free(pre), free(dout), free(dx0), free(dx);
}

/* ---- 4. matmul ------------------------------------------------------------- */

static void test_matmul(int M, int K, int N, sl_op_act act, int w_kn, int inplace) {
    const int lddo = N + 8, ldi = K + 4, lddin = K + 4;
    const size_t so = (size_t)M * lddo, si = (size_t)M * ldi, sdi = (size_t)M * lddin,
                 sw = (size_t)N * K;
    float *in = rnd(si, 1.f), *w = rnd(sw, 0.2f), *dout = rnd(so, 1.f), *pre = rnd(so, 3.f);
    float *din0 = rnd(sdi, 1.f), *dw0 = rnd(sw, 1.f), *db0 = rnd(N, 1.f), *dpre0 = rnd(so, 1.f);
    float *din = copyf(din0, sdi), *dw = copyf(dw0, sw), *db = copyf(db0, N),
          *dpre = copyf(inplace ? dout : dpre0, so), *cdout = copyf(dout, so);
    const int a = act != SL_OP_ACT_NONE;
    sl_op_matmul_backward(din, lddin, dw, db, a ? dpre : NULL, inplace && a ? dpre : cdout, lddo,
                          in, ldi, w, w_kn, a ? pre : NULL, M, K, N, act);

    float *d_in = devf(in, si), *d_w = devf(w, sw), *d_dout = devf(dout, so),
          *d_pre = devf(pre, so), *d_din = devf(din0, sdi), *d_dw = devf(dw0, sw),
          *d_db = devf(db0, N), *d_dpre = devf(dpre0, so);
    float *g[2][4];
    for (int run = 0; run < 2; run++) {
        put(d_din, din0, sdi * 4), put(d_dw, dw0, sw * 4), put(d_db, db0, N * 4);
        put(d_dpre, inplace ? dout : dpre0, so * 4);
        CHECK_OK(sl_cu_matmul_backward(G, d_din, lddin, d_dw, d_db, a ? d_dpre : NULL,
                                       inplace && a ? d_dpre : d_dout, lddo, d_in, ldi, d_w, w_kn,
                                       a ? d_pre : NULL, M, K, N, act));
        g[run][0] = xmalloc(sdi * 4), g[run][1] = xmalloc(sw * 4), g[run][2] = xmalloc(N * 4),
        g[run][3] = xmalloc(so * 4);
        get(g[run][0], d_din, sdi * 4), get(g[run][1], d_dw, sw * 4), get(g[run][2], d_db, N * 4);
        get(g[run][3], d_dpre, so * 4);
    }
    char name[96];
    const char *tag = act_name[act];
    snprintf(name, sizeof name, "matmul din %s%s%s", tag, w_kn ? " w_kn" : "",
             inplace ? " inplace" : "");
    cmp(name, g[0][0], g[1][0], din, sdi, 1e-5);
    snprintf(name, sizeof name, "matmul dw %s%s%s", tag, w_kn ? " w_kn" : "",
             inplace ? " inplace" : "");
    cmp(name, g[0][1], g[1][1], dw, sw, 1e-5);
    snprintf(name, sizeof name, "matmul dbias %s%s", tag, w_kn ? " w_kn" : "");
    cmp(name, g[0][2], g[1][2], db, N, 1e-5);
    if (a) {
        /* only the first N columns of each row are written: compare those */
        float *x0 = xmalloc(so * 4), *x1 = xmalloc(so * 4), *xc = xmalloc(so * 4);
        size_t k = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++, k++) {
                x0[k] = g[0][3][(size_t)i * lddo + j];
                x1[k] = g[1][3][(size_t)i * lddo + j];
                xc[k] = dpre[(size_t)i * lddo + j];
            }
        snprintf(name, sizeof name, "matmul dpre %s%s", tag, inplace ? " inplace" : "");
        cmp(name, x0, x1, xc, k, 1e-5);
        free(x0), free(x1), free(xc);
    }
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 4; k++) free(g[r][k]);
    dfree(d_in), dfree(d_w), dfree(d_dout), dfree(d_pre), dfree(d_din), dfree(d_dw), dfree(d_db),
        dfree(d_dpre);
    free(in), free(w), free(dout), free(pre), free(din0), free(dw0), free(db0), free(dpre0),
        free(din), free(dw), free(db), free(dpre), free(cdout);
}

static void test_bias(int n, int C) {
    float *dout = rnd((size_t)n * C, 1.f), *db0 = rnd(C, 1.f), *db = copyf(db0, C);
    sl_op_add_bias_backward(db, dout, n, C);
    float *d_dout = devf(dout, (size_t)n * C), *d_db = devf(db0, C), *g[2];
    for (int run = 0; run < 2; run++) {
        put(d_db, db0, C * 4);
        CHECK_OK(sl_cu_add_bias_backward(G, d_db, d_dout, n, C));
        g[run] = xmalloc(C * 4);
        get(g[run], d_db, C * 4);
    }
    cmp("add_bias backward", g[0], g[1], db, C, 1e-6);
    free(g[0]), free(g[1]), dfree(d_dout), dfree(d_db), free(dout), free(db0), free(db);
}

/* ---- 3. attention ---------------------------------------------------------- */

static void test_attention(const char *what, const int *lens, int nseq, int width, int heads,
                           int causal, int pooled) {
    int start[8], len[8], qrow[8], maxlen = 0, rows = 0;
    for (int s = 0; s < nseq; s++) {
        rows += 3; /* a gap of 3 rows no sequence owns: must stay untouched */
        start[s] = rows;
        len[s] = lens[s];
        rows += lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
        /* pooled: the class token (0) for vision, the last token for text */
        qrow[s] = causal ? lens[s] - 1 : (s % 2 ? lens[s] / 2 : 0);
    }
    const int ld = 3 * width, lddo = width + 5;
    const size_t sq = (size_t)rows * ld, sdo = (size_t)(pooled ? nseq : rows) * lddo;
    float *qkv = rnd(sq, 2.f), *dout = rnd(sdo, 1.f), *dq0 = rnd(sq, 1.f), *dq = copyf(dq0, sq);
    float *scr = xmalloc(sl_op_attention_backward_scratch(maxlen) * sizeof(float));
    sl_op_attention_backward(dq, dout, lddo, qkv, start, len, pooled ? qrow : NULL, nseq, width,
                             heads, causal, scr, maxlen);
    float *d_qkv = devf(qkv, sq), *d_dout = devf(dout, sdo), *d_dq = devf(dq0, sq), *g[2];
    int *d_start = devi(start, nseq), *d_len = devi(len, nseq), *d_qrow = devi(qrow, nseq);
    for (int run = 0; run < 2; run++) {
        put(d_dq, dq0, sq * 4);
        CHECK_OK(sl_cu_attention_backward(G, d_dq, d_dout, lddo, d_qkv, d_start, d_len,
                                          pooled ? d_qrow : NULL, nseq, width, heads, causal,
                                          maxlen));
        g[run] = xmalloc(sq * 4);
        get(g[run], d_dq, sq * 4);
    }
    char name[96];
    snprintf(name, sizeof name, "attention %s dh %d%s%s", what, width / heads,
             causal ? " causal" : "", pooled ? " pooled" : "");
    cmp(name, g[0], g[1], dq, sq, 2e-5);
    /* the gap rows are bit-identical to the initial values */
    int gap_ok = 1;
    for (int s = 0; s < nseq; s++)
        for (int r = start[s] - 3; r < start[s]; r++)
            gap_ok &= memcmp(g[0] + (size_t)r * ld, dq0 + (size_t)r * ld, (size_t)ld * 4) == 0;
    CHECK_MSG(gap_ok, "%s: rows outside every sequence changed", name);
    free(g[0]), free(g[1]), dfree(d_qkv), dfree(d_dout), dfree(d_dq), dfree(d_start), dfree(d_len),
        dfree(d_qrow);
    free(qkv), free(dout), free(dq0), free(dq), free(scr);
}

/* ---- 5. im2col, embeddings, gather ----------------------------------------- */

static void test_im2col(void) {
    const int n = 2, C = 3, S = 34, p = 8, g = S / p;
    const size_t sp = (size_t)n * C * S * S, sc = (size_t)n * g * g * C * p * p;
    float *dcols = rnd(sc, 1.f), *dp0 = rnd(sp, 1.f), *dp = copyf(dp0, sp);
    sl_op_im2col_patches_backward(dp, dcols, n, C, S, p);
    float *d_dcols = devf(dcols, sc), *d_dp = devf(dp0, sp), *r[2];
    for (int run = 0; run < 2; run++) {
        put(d_dp, dp0, sp * 4);
        CHECK_OK(sl_cu_im2col_backward(G, d_dp, d_dcols, n, C, S, p));
        r[run] = xmalloc(sp * 4);
        get(r[run], d_dp, sp * 4);
    }
    cmp("im2col backward (S 34, p 8)", r[0], r[1], dp, sp, 0);
    free(r[0]), free(r[1]), dfree(d_dcols), dfree(d_dp), free(dcols), free(dp0), free(dp);
}

static void test_vision_embed(void) {
    const int n = 3, P = 49, W = 72, T = P + 1;
    const size_t sx = (size_t)n * T * W, spt = (size_t)n * P * W, spo = (size_t)T * W;
    float *dx = rnd(sx, 1.f), *dpa0 = rnd(spt, 1.f), *dc0 = rnd(W, 1.f), *dpo0 = rnd(spo, 1.f);
    float *dpa = copyf(dpa0, spt), *dc = copyf(dc0, W), *dpo = copyf(dpo0, spo);
    sl_op_vision_embed_backward(dpa, dc, dpo, dx, n, P, W);
    float *d_dx = devf(dx, sx), *d_pa = devf(dpa0, spt), *d_c = devf(dc0, W),
          *d_po = devf(dpo0, spo);
    float *r[2][3];
    for (int run = 0; run < 2; run++) {
        put(d_pa, dpa0, spt * 4), put(d_c, dc0, W * 4), put(d_po, dpo0, spo * 4);
        CHECK_OK(sl_cu_vision_embed_backward(G, d_pa, d_c, d_po, d_dx, n, P, W));
        r[run][0] = xmalloc(spt * 4), r[run][1] = xmalloc(W * 4), r[run][2] = xmalloc(spo * 4);
        get(r[run][0], d_pa, spt * 4), get(r[run][1], d_c, W * 4), get(r[run][2], d_po, spo * 4);
    }
    cmp("vision embed dpatch", r[0][0], r[1][0], dpa, spt, 0);
    cmp("vision embed dcls", r[0][1], r[1][1], dc, W, 0);
    cmp("vision embed dpos", r[0][2], r[1][2], dpo, spo, 0);
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 3; k++) free(r[a][k]);
    dfree(d_dx), dfree(d_pa), dfree(d_c), dfree(d_po);
    free(dx), free(dpa0), free(dc0), free(dpo0), free(dpa), free(dc), free(dpo);
}

static void test_text_embed(void) {
    enum { NSEQ = 6, CTX = 77, V = 1000, W = 96 };
    int start[NSEQ], len[NSEQ], rows = 0, nrows = 0;
    int32_t *ids = xmalloc(sizeof(int32_t) * NSEQ * CTX);
    for (int s = 0; s < NSEQ; s++) {
        len[s] = s == 0 ? CTX : 1 + (int)(next_u32() % CTX);
        start[s] = rows + 1; /* one unused row before each */
        rows = start[s] + len[s];
        nrows += len[s];
        for (int t = 0; t < CTX; t++) /* few distinct ids: many repeats; one id at V - 1 */
            ids[s * CTX + t] = t == 5 ? V - 1 : (int32_t)(next_u32() % 40);
    }
    const size_t sx = (size_t)rows * W, st = (size_t)V * W, spo = (size_t)CTX * W;
    float *dx = rnd(sx, 1.f), *dt0 = rnd(st, 1.f), *dpo0 = rnd(spo, 1.f);
    float *dt = copyf(dt0, st), *dpo = copyf(dpo0, spo);
    sl_op_text_embed_backward(dt, dpo, dx, ids, start, len, NSEQ, CTX, W);
    int32_t *tok = xmalloc(4 * (size_t)nrows), *off = xmalloc(4 * ((size_t)nrows + 1)),
            *row = xmalloc(4 * (size_t)nrows);
    int ntok = 0;
    CHECK_OK(sl_cu_token_plan(ids, start, len, NSEQ, CTX, V, tok, off, row, &ntok));
    int bad_id = ids[3];
    ids[3] = V;
    CHECK_ERR(sl_cu_token_plan(ids, start, len, NSEQ, CTX, V, tok, off, row, &ntok), SL_ERR_INVALID,
              "token id");
    ids[3] = bad_id;
    CHECK_OK(sl_cu_token_plan(ids, start, len, NSEQ, CTX, V, tok, off, row, &ntok));
    int *d_tok = devi(tok, ntok), *d_off = devi(off, ntok + 1), *d_row = devi(row, nrows);
    int *d_start = devi(start, NSEQ), *d_len = devi(len, NSEQ);
    float *d_dx = devf(dx, sx), *d_t = devf(dt0, st), *d_po = devf(dpo0, spo), *r[2][2];
    for (int run = 0; run < 2; run++) {
        put(d_t, dt0, st * 4), put(d_po, dpo0, spo * 4);
        CHECK_OK(sl_cu_text_embed_backward(G, d_t, d_po, d_dx, d_tok, d_off, d_row, ntok, d_start,
                                           d_len, NSEQ, CTX, W));
        r[run][0] = xmalloc(st * 4), r[run][1] = xmalloc(spo * 4);
        get(r[run][0], d_t, st * 4), get(r[run][1], d_po, spo * 4);
    }
    cmp("text embed dtok (scatter-add)", r[0][0], r[1][0], dt, st, 0);
    cmp("text embed dpos", r[0][1], r[1][1], dpo, spo, 0);
    for (int a = 0; a < 2; a++) free(r[a][0]), free(r[a][1]);
    dfree(d_tok), dfree(d_off), dfree(d_row), dfree(d_start), dfree(d_len), dfree(d_dx), dfree(d_t),
        dfree(d_po);
    free(ids), free(tok), free(off), free(row), free(dx), free(dt0), free(dpo0), free(dt),
        free(dpo);
}

static void test_gather(void) {
    enum { N = 64, C = 100, SRC = 50 };
    int idx[N];
    for (int i = 0; i < N; i++) idx[i] = (int)(next_u32() % SRC); /* repeats */
    float *dd = rnd((size_t)N * C, 1.f), *ds0 = rnd((size_t)SRC * C, 1.f),
          *ds = copyf(ds0, (size_t)SRC * C);
    sl_op_gather_rows_backward(ds, dd, idx, N, C);
    float *d_dd = devf(dd, (size_t)N * C), *d_ds = devf(ds0, (size_t)SRC * C), *r[2];
    int *d_idx = devi(idx, N);
    for (int run = 0; run < 2; run++) {
        put(d_ds, ds0, (size_t)SRC * C * 4);
        CHECK_OK(sl_cu_gather_rows_backward(G, d_ds, d_dd, d_idx, N, C));
        r[run] = xmalloc((size_t)SRC * C * 4);
        get(r[run], d_ds, (size_t)SRC * C * 4);
    }
    cmp("gather rows backward (repeats)", r[0], r[1], ds, (size_t)SRC * C, 0);
    free(r[0]), free(r[1]), dfree(d_dd), dfree(d_ds), dfree(d_idx), free(dd), free(ds0), free(ds);
}

/* ---- 6. L2 normalisation and InfoNCE ---------------------------------------- */

static void test_l2n(void) {
    enum { N = 50, D = 512 };
    const size_t nd = (size_t)N * D;
    float *x = rnd(nd, 1.f), *dy = rnd(nd, 1.f), *dx0 = rnd(nd, 1.f);
    memset(x + 7 * D, 0, D * sizeof(float)); /* a zero row: the clamp */
    float *y = xmalloc(nd * 4), *nr = xmalloc(N * 4), *dx = copyf(dx0, nd);
    sl_op_l2_normalize_forward(y, nr, x, N, D);
    sl_op_l2_normalize_backward(dx, dy, y, nr, N, D);
    float *d_x = devf(x, nd), *d_y = devf(NULL, nd), *d_n = devf(NULL, N), *d_dy = devf(dy, nd),
          *d_dx = devf(dx0, nd);
    float *ry[2], *rn[2], *rd[2];
    for (int run = 0; run < 2; run++) {
        put(d_dx, dx0, nd * 4);
        CHECK_OK(sl_cu_l2_normalize_forward(G, d_y, d_n, d_x, N, D));
        CHECK_OK(sl_cu_l2_normalize_backward(G, d_dx, d_dy, d_y, d_n, N, D));
        ry[run] = xmalloc(nd * 4), rn[run] = xmalloc(N * 4), rd[run] = xmalloc(nd * 4);
        get(ry[run], d_y, nd * 4), get(rn[run], d_n, N * 4), get(rd[run], d_dx, nd * 4);
    }
    cmp("l2 normalize forward y", ry[0], ry[1], y, nd, 1e-6);
    cmp("l2 normalize forward norm", rn[0], rn[1], nr, N, 1e-6);
    cmp("l2 normalize backward", rd[0], rd[1], dx, nd, 1e-5);
    for (int a = 0; a < 2; a++) free(ry[a]), free(rn[a]), free(rd[a]);
    dfree(d_x), dfree(d_y), dfree(d_n), dfree(d_dy), dfree(d_dx);
    free(x), free(dy), free(dx0), free(y), free(nr), free(dx);
}

static void test_infonce(int B, int D, float t) {
    const size_t bd = (size_t)B * D, bb = (size_t)B * B;
    float *img = rnd(bd, 1.f), *txt = rnd(bd, 1.f), *nrm = xmalloc(B * 4);
    sl_op_l2_normalize_forward(img, nrm, img, B, D);
    sl_op_l2_normalize_forward(txt, nrm, txt, B, D);
    for (size_t i = 0; i < bd; i++) txt[i] = 0.7f * txt[i] + 0.3f * img[i]; /* some signal */
    float *saved = xmalloc(3 * bb * 4), *scr = xmalloc(bb * 4);
    float *di0 = rnd(bd, 1.f), *dt0 = rnd(bd, 1.f), dtv0 = 0.25f, dtv = dtv0;
    float *di = copyf(di0, bd), *dtx = copyf(dt0, bd);
    const float loss = sl_loss_infonce_forward(saved, img, txt, t, B, D);
    sl_loss_infonce_backward(di, dtx, &dtv, scr, 1.5f, saved, img, txt, t, B, D);
    float *d_img = devf(img, bd), *d_txt = devf(txt, bd), *d_saved = devf(NULL, 3 * bb),
          *d_scr = devf(NULL, bb), *d_di = devf(di0, bd), *d_dt = devf(dt0, bd),
          *d_dtv = devf(&dtv0, 1), *d_loss = devf(NULL, 1);
    float *rs[2], *ri[2], *rt[2], rl[2], rdt[2];
    for (int run = 0; run < 2; run++) {
        put(d_di, di0, bd * 4), put(d_dt, dt0, bd * 4), put(d_dtv, &dtv0, 4);
        CHECK_OK(sl_cu_infonce_forward(G, d_saved, d_loss, d_img, d_txt, t, B, D));
        CHECK_OK(sl_cu_infonce_backward(G, d_di, d_dt, d_dtv, d_scr, 1.5f, d_saved, d_img, d_txt, t,
                                        B, D));
        rs[run] = xmalloc(3 * bb * 4), ri[run] = xmalloc(bd * 4), rt[run] = xmalloc(bd * 4);
        get(rs[run], d_saved, 3 * bb * 4), get(ri[run], d_di, bd * 4), get(rt[run], d_dt, bd * 4);
        get(&rl[run], d_loss, 4), get(&rdt[run], d_dtv, 4);
    }
    char name[96];
    snprintf(name, sizeof name, "infonce logits B %d t %.2f", B, (double)t);
    cmp(name, rs[0], rs[1], saved, bb, 1e-5);
    snprintf(name, sizeof name, "infonce p_i2t, p_t2i B %d t %.2f", B, (double)t);
    cmp(name, rs[0] + bb, rs[1] + bb, saved + bb, 2 * bb, 1e-5);
    snprintf(name, sizeof name, "infonce loss B %d t %.2f", B, (double)t);
    report(name, fabs((double)rl[0] - loss) / fabs(loss), 1e-6, rl[0] == rl[1]);
    snprintf(name, sizeof name, "infonce dimg B %d t %.2f", B, (double)t);
    cmp(name, ri[0], ri[1], di, bd, 1e-5);
    snprintf(name, sizeof name, "infonce dtxt B %d t %.2f", B, (double)t);
    cmp(name, rt[0], rt[1], dtx, bd, 1e-5);
    snprintf(name, sizeof name, "infonce dt B %d t %.2f", B, (double)t);
    report(name, fabs((double)rdt[0] - dtv) / fmax(fabs(dtv - dtv0), 1e-30), 1e-5,
           rdt[0] == rdt[1]);
    if (t > SL_LOSS_MAX_LOG_SCALE) CHECK(rdt[0] == dtv0); /* above the clamp: no gradient */
    for (int a = 0; a < 2; a++) free(rs[a]), free(ri[a]), free(rt[a]);
    dfree(d_img), dfree(d_txt), dfree(d_saved), dfree(d_scr), dfree(d_di), dfree(d_dt),
        dfree(d_dtv), dfree(d_loss);
    free(img), free(txt), free(nrm), free(saved), free(scr), free(di0), free(dt0), free(di),
        free(dtx);
}

/* ---- 7. AdamW ---------------------------------------------------------------- */

static uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static size_t count_diff(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(a + i, b + i, 4) != 0;
    return k;
}

static void test_adamw(double clip, double wd) {
    static const size_t cnt[] = {40000, 300, 16384, 16385, 7, 100000, 1};
    static const int dec[] = {1, 0, 1, 1, 0, 1, 0};
    enum { NT = 7 };
    sl_train_tensor tab[NT];
    size_t off[NT], n = 0;
    int decay[NT];
    memset(tab, 0, sizeof tab);
    for (int i = 0; i < NT; i++) {
        tab[i].offset = off[i] = n;
        tab[i].count = cnt[i];
        tab[i].decay = decay[i] = dec[i];
        snprintf(tab[i].name, sizeof tab[i].name, "t%d", i);
        n += cnt[i];
    }
    float *p0 = rnd(n, 1.f), *g = rnd(n, 0.05f), *m0 = rnd(n, 0.01f), *v0 = rnd(n, 1.f);
    for (size_t i = 0; i < n; i++) v0[i] = v0[i] * v0[i] * 1e-4f;
    sl_train_model model;
    memset(&model, 0, sizeof model);
    model.params_mem = copyf(p0, n);
    model.grads_mem = g;
    model.num_params = n;
    model.tensors = tab;
    model.num_tensors = NT;
    sl_adamw_config cfg = sl_adamw_defaults();
    cfg.grad_clip = clip;
    cfg.weight_decay = wd;
    sl_adamw opt;
    CHECK_OK(sl_adamw_init(&opt, &cfg, n));
    memcpy(opt.m, m0, n * 4);
    memcpy(opt.v, v0, n * 4);
    opt.t = 4;
    const double lr = 3e-4, gscale = 0.5;
    double cnorm[3];
    for (int s = 0; s < 3; s++) CHECK_OK(sl_adamw_step(&opt, &model, lr, gscale, &cnorm[s]));
    const double cpu_gnorm = sl_grad_norm(&model, 0.25);

    size_t np = 0, np0 = 0;
    CHECK_OK(sl_cu_adam_pieces(off, cnt, decay, NT, n, wd != 0, NULL, 0, &np));
    sl_cu_adam_piece *pc = xmalloc(np * sizeof *pc);
    CHECK_OK(sl_cu_adam_pieces(off, cnt, decay, NT, n, wd != 0, pc, np, &np));
    CHECK_OK(sl_cu_adam_pieces(NULL, NULL, NULL, 0, n, 0, NULL, 0, &np0));
    sl_cu_adam_piece *pc0 = xmalloc(np0 * sizeof *pc0);
    CHECK_OK(sl_cu_adam_pieces(NULL, NULL, NULL, 0, n, 0, pc0, np0, &np0));
    sl_cu_adam_piece *d_pc = dev_dup(pc, np * sizeof *pc), *d_pc0 = dev_dup(pc0, np0 * sizeof *pc0);
    float *d_p = devf(p0, n), *d_g = devf(g, n), *d_m = devf(m0, n), *d_v = devf(v0, n);
    uint16_t *d_bf = dev_dup(NULL, n * 2);
    double *d_norm = dev_dup(NULL, sizeof(double));
    const sl_cu_adamw_hparams hp = {cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_clip};
    float *rp[2], *rm[2], *rv[2];
    double gn[2][3], gg[2];
    uint16_t *rb = xmalloc(n * 2);
    for (int run = 0; run < 2; run++) {
        put(d_p, p0, n * 4), put(d_m, m0, n * 4), put(d_v, v0, n * 4);
        for (int s = 0; s < 3; s++) {
            CHECK_OK(sl_cu_adamw_step(G, d_p, s == 2 ? d_bf : NULL, d_g, d_m, d_v, d_pc, np, &hp,
                                      5 + s, lr, gscale, d_norm));
            get(&gn[run][s], d_norm, sizeof(double));
        }
        CHECK_OK(sl_cu_grad_norm(G, d_g, d_pc0, np0, 0.25, d_norm));
        get(&gg[run], d_norm, sizeof(double));
        rp[run] = xmalloc(n * 4), rm[run] = xmalloc(n * 4), rv[run] = xmalloc(n * 4);
        get(rp[run], d_p, n * 4), get(rm[run], d_m, n * 4), get(rv[run], d_v, n * 4);
    }
    get(rb, d_bf, n * 2);
    char name[96];
    const char *tag = clip > 0 ? "clip" : "no clip";
    for (int s = 0; s < 3; s++) {
        snprintf(name, sizeof name, "adamw norm step %d (%s, wd %.1f)", s + 1, tag, wd);
        report(name, fabs(gn[0][s] - cnorm[s]) / cnorm[s], 0, gn[0][s] == gn[1][s]);
    }
    snprintf(name, sizeof name, "grad norm (sl_grad_norm pieces)");
    report(name, fabs(gg[0] - cpu_gnorm) / cpu_gnorm, 0, gg[0] == gg[1]);
    snprintf(name, sizeof name, "adamw params x3 (%s, wd %.1f)", tag, wd);
    cmp(name, rp[0], rp[1], model.params_mem, n, 0);
    CHECK_MSG(count_diff(rp[0], model.params_mem, n) == 0, "%zu parameters differ in bits",
              count_diff(rp[0], model.params_mem, n));
    snprintf(name, sizeof name, "adamw m x3 (%s)", tag);
    cmp(name, rm[0], rm[1], opt.m, n, 0);
    snprintf(name, sizeof name, "adamw v x3 (%s)", tag);
    cmp(name, rv[0], rv[1], opt.v, n, 0);
    size_t bad_bf = 0;
    for (size_t i = 0; i < n; i++) bad_bf += rb[i] != bf16_rne(model.params_mem[i]);
    snprintf(name, sizeof name, "adamw bf16 weight copy (%s)", tag);
    report(name, (double)bad_bf, 0, 1);

    if (clip > 0) { /* a non-finite gradient with clipping: nothing changes */
        float nanv = NAN;
        put(d_g + 40001, &nanv, 4);
        CHECK_OK(
            sl_cu_adamw_step(G, d_p, NULL, d_g, d_m, d_v, d_pc, np, &hp, 8, lr, gscale, d_norm));
        double nn = 0;
        get(&nn, d_norm, sizeof nn);
        float *after = xmalloc(n * 4);
        get(after, d_p, n * 4);
        CHECK_MSG(isnan(nn) && memcmp(after, rp[1], n * 4) == 0,
                  "non-finite norm with clipping changed the parameters (norm %g)", nn);
        free(after);
    }
    for (int a = 0; a < 2; a++) free(rp[a]), free(rm[a]), free(rv[a]);
    free(rb), free(pc), free(pc0);
    dfree(d_pc), dfree(d_pc0), dfree(d_p), dfree(d_g), dfree(d_m), dfree(d_v), dfree(d_bf),
        dfree(d_norm);
    sl_adamw_free(&opt);
    free(model.params_mem), free(p0), free(g), free(m0), free(v0);
}

/* ---- 8. BF16 helpers ---------------------------------------------------------- */

static float bf16_to_f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16(void) {
    const size_t n = 70001;
    float *src = rnd(n, 100.f), *acc0 = rnd(n, 1.f), *acc = copyf(acc0, n);
    src[0] = 1.00390625f; /* exactly half way between two BF16 values: to even */
    src[1] = 1.01171875f; /* half way, odd below: rounds up */
    src[2] = 3.4e38f;     /* rounds to infinity */
    src[3] = -0.0f;
    uint16_t *ref = xmalloc(n * 2), *r[2];
    for (size_t i = 0; i < n; i++) ref[i] = bf16_rne(src[i]);
    const float scale = 0.125f;
    for (size_t i = 0; i < n; i++) {
        volatile float prod = scale * bf16_to_f(ref[i]); /* no contraction */
        acc[i] = acc[i] + prod;
    }
    float *d_src = devf(src, n), *d_acc = devf(acc0, n), *ra[2];
    uint16_t *d_bf = dev_dup(NULL, n * 2);
    for (int run = 0; run < 2; run++) {
        put(d_acc, acc0, n * 4);
        CHECK_OK(sl_cu_f32_to_bf16(G, d_bf, d_src, n));
        CHECK_OK(sl_cu_bf16_accumulate(G, d_acc, d_bf, scale, n));
        r[run] = xmalloc(n * 2), ra[run] = xmalloc(n * 4);
        get(r[run], d_bf, n * 2), get(ra[run], d_acc, n * 4);
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += r[0][i] != ref[i];
    report("f32 -> bf16 copy (mismatches)", (double)bad, 0, memcmp(r[0], r[1], n * 2) == 0);
    cmp("bf16 gradient accumulate into f32", ra[0], ra[1], acc, n, 0);
    for (int a = 0; a < 2; a++) free(r[a]), free(ra[a]);
    dfree(d_src), dfree(d_acc), dfree(d_bf), free(src), free(acc0), free(acc), free(ref);
}

/* ---------------------------------------------------------------------------- */

int main(void) {
    sl_status st = sl_cu_train_create(0, NULL, &G);
    if (st != SL_OK) {
        /* without CUDA (or a device) the context reports it, naming the device */
        CHECK_MSG(st == SL_ERR_UNSUPPORTED, "status %d: %s", (int)st, sl_last_error());
        CHECK_MSG(strstr(sl_last_error(), "cuda:0") != NULL, "message '%s'", sl_last_error());
        if (sl_test_failures) return sl_test_finish("test_cuda_train_ops");
        printf("skip: no CUDA device (%s)\n", sl_last_error());
        return SL_TEST_SKIP;
    }
    omp_set_num_threads(4); /* the CPU twins: any count gives the same results */
    printf("  %-44s %11s %9s  %s\n", "op", "rel err", "tol", "deterministic");

    test_layernorm(300, 200);
    test_layernorm(1000, 768);
    for (int a = SL_OP_ACT_QUICK_GELU; a <= SL_OP_ACT_GELU_TANH; a++) test_act((sl_op_act)a);
    for (int a = SL_OP_ACT_NONE; a <= SL_OP_ACT_GELU_TANH; a++)
        test_matmul(300, 96, 160, (sl_op_act)a, 0, 0);
    test_matmul(257, 72, 130, SL_OP_ACT_NONE, 1, 0);
    test_matmul(200, 64, 256, SL_OP_ACT_QUICK_GELU, 1, 1);
    test_matmul(130, 100, 96, SL_OP_ACT_GELU, 0, 1);
    test_bias(1000, 100);

    static const int v_lens[] = {257, 1, 100}, t_lens[] = {77, 33, 5, 64}, p_lens[] = {257, 50},
                     c_lens[] = {77, 20, 1};
    test_attention("vision", v_lens, 3, 128, 2, 0, 0); /* dh 64 */
    test_attention("vision", v_lens, 3, 128, 1, 0, 0); /* dh 128 */
    test_attention("text", t_lens, 4, 96, 3, 1, 0);    /* dh 32 */
    test_attention("text", t_lens, 4, 256, 2, 1, 0);   /* dh 128 */
    test_attention("pool", p_lens, 2, 128, 2, 0, 1);   /* class token / middle row */
    test_attention("pool", c_lens, 3, 160, 2, 1, 1);   /* dh 80, last token */
    test_attention("odd", t_lens, 4, 3 * 13, 3, 0, 0); /* dh 13 */

    test_im2col();
    test_vision_embed();
    test_text_embed();
    test_gather();

    test_l2n();
    test_infonce(200, 64, 2.6592600f); /* log(1 / 0.07) */
    test_infonce(77, 32, 5.0f);        /* above the clamp */

    test_adamw(1.0, 0.2);
    test_adamw(0.0, 0.2);
    test_adamw(1.0, 0.0);

    test_bf16();

    CHECK_OK(sl_cu_train_sync(G));
    sl_cu_train_destroy(G);
    return sl_test_finish("test_cuda_train_ops");
}
