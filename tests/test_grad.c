/*
 * tests/test_grad.c - finite-difference checks of every backward pass in
 * kernels/cpu/ops_backward.c and kernels/cpu/loss.c (the global and the
 * dense InfoNCE).
 *
 * Each case runs the float forward ops on small seeded random inputs, takes
 * the scalar objective L = sum(out * R) for a fixed random R (accumulated
 * in double), and compares the analytic gradient of every input tensor with
 * central differences (L(p + h) - L(p - h)) / (2h), h the float-rounded step
 * actually taken. The comparison is the relative norm of the difference,
 * ||analytic - fd|| / ||fd||, over every element of the tensor.
 *
 * Tolerance: the forwards are float (and the encoder's own ops, so the
 * check also covers the approximations the trainer will really run), so FD
 * noise is about (float rounding of L ~ 1e-7 |L|) / h. With h = 1e-3 on
 * O(1) inputs that is ~1e-4 relative; the central difference's truncation
 * error is O(h^2) ~ 1e-6. The tolerance, 3e-3, is about 8x the worst
 * measured error (printed per tensor, 4e-4) while real mistakes (a missing
 * term, a wrong sign, scale or mask, a transposed index) measured 1e-2 to
 * 1e-1 and more. The activations' derivatives are further checked pointwise
 * against the exact functions in double (FD in float cannot tell gelu's
 * derivative from gelu_tanh's).
 *
 * Each case also checks that backward ADDS: two calls on zeroed buffers
 * give twice one call (relative 1e-5). A last group checks that the
 * column-block-parallel reductions give the same result on 1 and 4 threads.
 */
#include "kernels/cpu/loss.h"
#include "kernels/cpu/ops.h"
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Harness                                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state = 0x5eed5eedULL;

/* Uniform in [-1, 1) (xorshift64*). */
static float urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1DULL;
    return (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rnd(size_t n, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p) abort();
    for (size_t i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}

static float *zeros(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

#define MAXT 6

/* Relative FD tolerance (see the top of the file): measured errors are
 * 1e-5 .. 4e-4, wrong gradients 1e-2 and up. */
#define FD_TOL 3e-3

/* One input tensor of a case: the forward reads param, backward adds into
 * grad. */
typedef struct tensor {
    const char *name;
    float *param; /* [n] */
    float *grad;  /* [n] */
    size_t n;
} tensor;

typedef struct grad_case {
    const char *name;
    double (*objective)(void *ctx); /* runs the forward, returns L */
    void (*backward)(void *ctx);    /* adds dL/dparam into every grad */
    void *ctx;
    tensor t[MAXT];
    int nt;
    float h;    /* FD step */
    double tol; /* on ||analytic - fd|| / ||fd|| */
} grad_case;

static double worst_err;

static void run_case(grad_case *c) {
    float *g1[MAXT];
    for (int k = 0; k < c->nt; k++) memset(c->t[k].grad, 0, sizeof(float) * c->t[k].n);
    c->backward(c->ctx);
    for (int k = 0; k < c->nt; k++) {
        g1[k] = malloc(sizeof(float) * c->t[k].n);
        memcpy(g1[k], c->t[k].grad, sizeof(float) * c->t[k].n);
    }
    /* Central differences over every element, on one thread: thousands of
     * tiny forwards, where OpenMP wake-ups would dominate on a loaded
     * machine (the backward calls above and below keep the default). */
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int k = 0; k < c->nt; k++) {
        tensor *t = &c->t[k];
        double diff2 = 0, fd2 = 0, an2 = 0;
        for (size_t i = 0; i < t->n; i++) {
            const float v = t->param[i];
            t->param[i] = v + c->h;
            const double hp = (double)t->param[i] - v;
            const double lp = c->objective(c->ctx);
            t->param[i] = v - c->h;
            const double hm = (double)v - t->param[i];
            const double lm = c->objective(c->ctx);
            t->param[i] = v;
            const double fd = (lp - lm) / (hp + hm);
            diff2 += (g1[k][i] - fd) * (g1[k][i] - fd);
            fd2 += fd * fd;
            an2 += (double)g1[k][i] * g1[k][i];
        }
        const double den = sqrt(fd2) > 1e-6 ? sqrt(fd2) : 1e-6;
        const double err = sqrt(diff2) / den;
        if (err > worst_err) worst_err = err;
        printf("  %-34s %-6s n=%-5zu |g|=%-9.3g rel err %.2e\n", c->name, t->name, t->n, sqrt(an2),
               err);
        CHECK_MSG(err <= c->tol, "%s d%s: relative error %.3g > %.3g", c->name, t->name, err,
                  c->tol);
    }
    omp_set_num_threads(threads);
    /* Backward adds: two calls on zeroed buffers = twice one call. */
    for (int k = 0; k < c->nt; k++) memset(c->t[k].grad, 0, sizeof(float) * c->t[k].n);
    c->backward(c->ctx);
    c->backward(c->ctx);
    for (int k = 0; k < c->nt; k++) {
        double worst = 0, scale = 1e-30;
        for (size_t i = 0; i < c->t[k].n; i++) {
            double d = fabs(c->t[k].grad[i] - 2.0 * g1[k][i]);
            worst = d > worst ? d : worst;
            scale = fabs(g1[k][i]) > scale ? fabs(g1[k][i]) : scale;
        }
        CHECK_MSG(worst <= 1e-5 * scale, "%s d%s: two backward calls are not twice one (%.3g)",
                  c->name, c->t[k].name, worst / scale);
        free(g1[k]);
    }
}

/* ------------------------------------------------------------------------ */
/* Activations                                                              */
/* ------------------------------------------------------------------------ */

typedef struct act_ctx {
    int n;
    sl_op_act act;
    float *x, *dx, *R, *y;
} act_ctx;

static double act_obj(void *p) {
    act_ctx *c = p;
    memcpy(c->y, c->x, sizeof(float) * c->n);
    sl_op_act_forward(c->y, (size_t)c->n, c->act);
    return dot_d(c->y, c->R, (size_t)c->n);
}

static void act_bwd(void *p) {
    act_ctx *c = p;
    sl_op_act_backward(c->dx, c->R, c->x, (size_t)c->n, c->act);
}

static const char *act_name(sl_op_act a) {
    switch (a) {
        case SL_OP_ACT_QUICK_GELU:
            return "quick_gelu";
        case SL_OP_ACT_GELU:
            return "gelu";
        case SL_OP_ACT_GELU_TANH:
            return "gelu_tanh";
        default:
            return "none";
    }
}

/* The exact activations in double, for the derivative check below. */
static double act_exact(double x, sl_op_act a) {
    switch (a) {
        case SL_OP_ACT_QUICK_GELU:
            return x / (1.0 + exp(-1.702 * x));
        case SL_OP_ACT_GELU:
            return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
        case SL_OP_ACT_GELU_TANH:
            return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        default:
            return x;
    }
}

static void test_act(void) {
    /* Pointwise: act'(x) against a double central difference of the exact
     * function (h = 1e-5, error ~1e-10), |diff| <= 4e-6 over [-8, 8] (measured
     * <= 8e-7). This catches what the float FD below is too coarse to see,
     * e.g. a constant off in its 4th digit (2.6e-5) or gelu's derivative used
     * for gelu_tanh. */
    const sl_op_act all[] = {SL_OP_ACT_QUICK_GELU, SL_OP_ACT_GELU, SL_OP_ACT_GELU_TANH};
    for (int a = 0; a < 3; a++) {
        double worst = 0;
        for (int i = 0; i <= 1600; i++) {
            const float x = -8.0f + 0.01f * (float)i, one = 1.0f;
            float d = 0;
            sl_op_act_backward(&d, &one, &x, 1, all[a]);
            const double ref =
                (act_exact((double)x + 1e-5, all[a]) - act_exact((double)x - 1e-5, all[a])) / 2e-5;
            worst = fabs(d - ref) > worst ? fabs(d - ref) : worst;
        }
        printf("  act %-30s exact derivative: max |err| %.2e over [-8, 8]\n", act_name(all[a]),
               worst);
        CHECK_MSG(worst <= 4e-6, "act %s: derivative off by %.3g", act_name(all[a]), worst);
    }

    const sl_op_act acts[] = {SL_OP_ACT_QUICK_GELU, SL_OP_ACT_GELU, SL_OP_ACT_GELU_TANH};
    for (int a = 0; a < 3; a++) {
        act_ctx c = {.n = 64, .act = acts[a]};
        c.x = rnd(64, 4.0f);
        c.R = rnd(64, 1.0f);
        c.dx = zeros(64);
        c.y = zeros(64);
        char name[64];
        snprintf(name, sizeof name, "act %s", act_name(acts[a]));
        grad_case g = {name, act_obj, act_bwd, &c, {{"x", c.x, c.dx, 64}}, 1, 1e-3f, FD_TOL};
        run_case(&g);
        free(c.x), free(c.R), free(c.dx), free(c.y);
    }
}

/* ------------------------------------------------------------------------ */
/* Linear (+ bias, activation, both weight layouts, strided rows)           */
/* ------------------------------------------------------------------------ */

typedef struct mm_ctx {
    int M, K, N, ldi, ldo, w_kn, inplace;
    sl_op_act act;
    float *in, *w, *b;    /* [M, ldi], [N, K] or [K, N], [N] or NULL */
    float *din, *dw, *db; /* like in, w, b */
    float *out, *pre, *dpre, *R;
} mm_ctx;

static double mm_obj(void *p) {
    mm_ctx *c = p;
    sl_op_matmul_forward_train(c->out, c->pre, c->ldo, c->in, c->ldi, c->w, c->w_kn, c->b, c->M,
                               c->K, c->N, c->act);
    double s = 0;
    for (int i = 0; i < c->M; i++)
        s += dot_d(c->out + (size_t)i * c->ldo, c->R + (size_t)i * c->ldo, (size_t)c->N);
    return s;
}

static void mm_bwd(void *p) {
    mm_ctx *c = p;
    mm_obj(c); /* pre for the current params */
    const float *dout = c->R;
    if (c->inplace) { /* dpre aliasing dout */
        memcpy(c->dpre, c->R, sizeof(float) * (size_t)c->M * c->ldo);
        dout = c->dpre;
    }
    sl_op_matmul_backward(c->din, c->ldi, c->dw, c->b ? c->db : NULL, c->dpre, dout, c->ldo, c->in,
                          c->ldi, c->w, c->w_kn, c->pre, c->M, c->K, c->N, c->act);
}

static void test_matmul(void) {
    const sl_op_act acts[] = {SL_OP_ACT_NONE, SL_OP_ACT_QUICK_GELU, SL_OP_ACT_GELU,
                              SL_OP_ACT_GELU_TANH};
    for (int kn = 0; kn < 2; kn++)
        for (int a = 0; a < 4; a++)
            for (int bias = 0; bias < 2; bias++) {
                if (bias == 0 && a != 0) continue; /* the projections: no bias, no act */
                mm_ctx c = {.M = 5, .K = 7, .N = 6, .ldi = 9, .ldo = 8, .w_kn = kn, .act = acts[a]};
                c.inplace = a == 2;
                const size_t nin = (size_t)c.M * c.ldi, nw = (size_t)c.K * c.N,
                             nout = (size_t)c.M * c.ldo;
                c.in = rnd(nin, 1.0f);
                c.w = rnd(nw, 0.5f);
                c.b = bias ? rnd((size_t)c.N, 0.5f) : NULL;
                c.din = zeros(nin);
                c.dw = zeros(nw);
                c.db = zeros((size_t)c.N);
                c.out = zeros(nout);
                c.pre = zeros(nout);
                c.dpre = zeros(nout);
                c.R = rnd(nout, 1.0f);
                char name[64];
                snprintf(name, sizeof name, "linear %s%s%s%s", kn ? "W[K,N]" : "W[N,K]",
                         bias ? " +bias " : " ", act_name(acts[a]),
                         c.inplace ? " (dpre=dout)" : "");
                grad_case g = {
                    name, mm_obj, mm_bwd, &c, {{"x", c.in, c.din, nin}, {"W", c.w, c.dw, nw}},
                    2,    1e-3f,  FD_TOL};
                if (bias) g.t[g.nt++] = (tensor){"b", c.b, c.db, (size_t)c.N};
                run_case(&g);
                free(c.in), free(c.w), free(c.b), free(c.din), free(c.dw), free(c.db);
                free(c.out), free(c.pre), free(c.dpre), free(c.R);
            }
}

/* ------------------------------------------------------------------------ */
/* Residual add (folded bias) + LayerNorm                                   */
/* ------------------------------------------------------------------------ */

/* x = xin + bias (the pending bias folded in), out = LN(x), and the stream
 * x continues past the LayerNorm: L = sum(out * R) + sum(x * R2). */
typedef struct ln_ctx {
    int N, C;
    float *xin, *bias, *w, *b;     /* [N, C], [C], [C], [C] */
    float *dxin, *dbias, *dw, *db; /* likewise */
    float *x, *out, *mean, *rstd, *R, *R2;
} ln_ctx;

static double ln_obj(void *p) {
    ln_ctx *c = p;
    const size_t nc = (size_t)c->N * c->C;
    memcpy(c->x, c->xin, sizeof(float) * nc);
    sl_op_residual_layernorm_forward(c->out, c->mean, c->rstd, c->x, c->bias, c->w, c->b, c->N,
                                     c->C, 1e-5f);
    return dot_d(c->out, c->R, nc) + dot_d(c->x, c->R2, nc);
}

static void ln_bwd(void *p) {
    ln_ctx *c = p;
    ln_obj(c);
    /* The trainer's order: the stream's gradient (R2) is already in dx when
     * the LayerNorm adds its own; the folded bias then takes the total. The
     * stream gradient goes into a scratch copy so that dxin only gets
     * additions (the add-twice check). */
    const size_t nc = (size_t)c->N * c->C;
    float *dx = malloc(sizeof(float) * nc);
    memcpy(dx, c->R2, sizeof(float) * nc);
    sl_op_residual_layernorm_backward(dx, c->dw, c->db, c->R, c->x, c->mean, c->rstd, c->w, c->N,
                                      c->C);
    sl_op_add_bias_backward(c->dbias, dx, c->N, c->C);
    for (size_t i = 0; i < nc; i++) c->dxin[i] += dx[i];
    free(dx);
}

static void test_layernorm(void) {
    ln_ctx c = {.N = 6, .C = 21};
    const size_t nc = (size_t)c.N * c.C, C = (size_t)c.C;
    c.xin = rnd(nc, 1.0f);
    c.bias = rnd(C, 0.5f);
    c.w = rnd(C, 0.5f);
    for (size_t j = 0; j < C; j++) c.w[j] += 1.0f;
    c.b = rnd(C, 0.5f);
    c.dxin = zeros(nc), c.dbias = zeros(C), c.dw = zeros(C), c.db = zeros(C);
    c.x = zeros(nc), c.out = zeros(nc), c.mean = zeros((size_t)c.N), c.rstd = zeros((size_t)c.N);
    c.R = rnd(nc, 1.0f), c.R2 = rnd(nc, 1.0f);
    grad_case g = {"residual+layernorm (bias folded)",
                   ln_obj,
                   ln_bwd,
                   &c,
                   {{"x", c.xin, c.dxin, nc},
                    {"bias", c.bias, c.dbias, C},
                    {"w", c.w, c.dw, C},
                    {"b", c.b, c.db, C}},
                   4,
                   1e-3f,
                   FD_TOL};
    run_case(&g);
    free(c.xin), free(c.bias), free(c.w), free(c.b), free(c.dxin), free(c.dbias), free(c.dw);
    free(c.db), free(c.x), free(c.out), free(c.mean), free(c.rstd), free(c.R), free(c.R2);
}

/* ------------------------------------------------------------------------ */
/* Softmax                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct sm_ctx {
    int n, C;
    const int *valid;
    float *x, *dx, *y, *R;
} sm_ctx;

static double sm_obj(void *p) {
    sm_ctx *c = p;
    memcpy(c->y, c->x, sizeof(float) * (size_t)c->n * c->C);
    sl_op_softmax_rows(c->y, c->n, c->C, c->valid);
    return dot_d(c->y, c->R, (size_t)c->n * c->C);
}

static void sm_bwd(void *p) {
    sm_ctx *c = p;
    sm_obj(c);
    sl_op_softmax_rows_backward(c->dx, c->R, c->y, c->n, c->C, c->valid);
}

static void test_softmax(void) {
    static const int valid[4] = {9, 5, 1, 7};
    for (int v = 0; v < 2; v++) {
        sm_ctx c = {.n = 4, .C = 9, .valid = v ? valid : NULL};
        const size_t nc = 36;
        c.x = rnd(nc, 2.0f), c.dx = zeros(nc), c.y = zeros(nc), c.R = rnd(nc, 1.0f);
        grad_case g = {v ? "softmax rows (valid lengths)" : "softmax rows",
                       sm_obj,
                       sm_bwd,
                       &c,
                       {{"x", c.x, c.dx, nc}},
                       1,
                       1e-3f,
                       FD_TOL};
        run_case(&g);
        free(c.x), free(c.dx), free(c.y), free(c.R);
    }
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                */
/* ------------------------------------------------------------------------ */

typedef struct att_ctx {
    int rows, nseq, W, heads, causal, maxlen, ldo, outrows;
    const int *start, *len, *qrow;
    float *qkv, *dqkv; /* [rows, 3W] */
    float *out, *R;    /* [outrows, ldo] */
    float *scratch, *bscratch;
} att_ctx;

static double att_obj(void *p) {
    att_ctx *c = p;
    const size_t no = (size_t)c->outrows * c->ldo;
    memset(c->out, 0, sizeof(float) * no);
    sl_op_attention_forward(c->out, c->ldo, c->qkv, c->start, c->len, c->qrow, c->nseq, c->W,
                            c->heads, c->causal, c->scratch, c->maxlen);
    return dot_d(c->out, c->R, no);
}

static void att_bwd(void *p) {
    att_ctx *c = p;
    sl_op_attention_backward(c->dqkv, c->R, c->ldo, c->qkv, c->start, c->len, c->qrow, c->nseq,
                             c->W, c->heads, c->causal, c->bscratch, c->maxlen);
}

static void test_attention(void) {
    /* Two packed sequences of different lengths with an unused row between
     * them; 37 rows exercise the causal query blocks of 32. */
    static const int start[2] = {0, 38}, len[2] = {37, 5}, qrow[2] = {20, 3};
    const int rows = 43, W = 8, heads = 2, maxlen = 37;
    for (int causal = 0; causal < 2; causal++)
        for (int pooled = 0; pooled < 2; pooled++) {
            att_ctx c = {.rows = rows, .nseq = 2, .W = W, .heads = heads, .causal = causal};
            c.maxlen = maxlen, c.ldo = W + 3, c.outrows = pooled ? 2 : rows;
            c.start = start, c.len = len, c.qrow = pooled ? qrow : NULL;
            const size_t nq = (size_t)rows * 3 * W, no = (size_t)c.outrows * c.ldo;
            c.qkv = rnd(nq, 1.0f), c.dqkv = zeros(nq);
            c.out = zeros(no), c.R = rnd(no, 1.0f);
            c.scratch = zeros((size_t)omp_get_max_threads() * maxlen * maxlen);
            c.bscratch = zeros(sl_op_attention_backward_scratch(maxlen));
            char name[64];
            snprintf(name, sizeof name, "attention %s%s", causal ? "causal" : "full",
                     pooled ? " pooled rows" : "");
            grad_case g = {name, att_obj, att_bwd, &c, {{"qkv", c.qkv, c.dqkv, nq}},
                           1,    1e-3f,   FD_TOL};
            run_case(&g);
            /* The unused row between the sequences gets no gradient. */
            int untouched = 1;
            for (int j = 0; j < 3 * W; j++) untouched &= c.dqkv[(size_t)37 * 3 * W + j] == 0.0f;
            CHECK_MSG(untouched, "%s: gradient written outside the sequences", name);
            free(c.qkv), free(c.dqkv), free(c.out), free(c.R), free(c.scratch), free(c.bscratch);
        }
}

/* ------------------------------------------------------------------------ */
/* Pooling (gather rows)                                                    */
/* ------------------------------------------------------------------------ */

typedef struct gather_ctx {
    float *src, *dsrc, *dst, *R;
    const int *idx;
} gather_ctx;

static double gather_obj(void *p) {
    gather_ctx *c = p;
    sl_op_gather_rows(c->dst, c->src, c->idx, 4, 5);
    return dot_d(c->dst, c->R, 20);
}

static void gather_bwd(void *p) {
    gather_ctx *c = p;
    sl_op_gather_rows_backward(c->dsrc, c->R, c->idx, 4, 5);
}

static void test_gather(void) {
    static const int idx[4] = {3, 0, 3, 6};
    gather_ctx c = {.idx = idx};
    c.src = rnd(35, 1.0f), c.dsrc = zeros(35), c.dst = zeros(20), c.R = rnd(20, 1.0f);
    grad_case g = {"gather rows (pooling)",      gather_obj, gather_bwd, &c,
                   {{"src", c.src, c.dsrc, 35}}, 1,          1e-3f,      FD_TOL};
    run_case(&g);
    free(c.src), free(c.dsrc), free(c.dst), free(c.R);
}

/* ------------------------------------------------------------------------ */
/* Patch conv (im2col + matmul) + class token + position embedding          */
/* ------------------------------------------------------------------------ */

typedef struct patch_ctx {
    int n, C, S, p, g, P, kk, W;
    float *pix, *pw, *cls, *pos;     /* [n,C,S,S], [W,kk], [W], [P+1,W] */
    float *dpix, *dpw, *dcls, *dpos; /* likewise */
    float *cols, *pout, *x, *R, *dx_unused, *dpatch, *dcols;
} patch_ctx;

static double patch_obj(void *p) {
    patch_ctx *c = p;
    sl_op_im2col_patches(c->cols, c->pix, c->n, c->C, c->S, c->p);
    sl_op_matmul_forward(c->pout, c->W, c->cols, c->kk, c->pw, 0, NULL, c->n * c->P, c->kk, c->W,
                         SL_OP_ACT_NONE, 0);
    sl_op_vision_embed_forward(c->x, c->pout, c->cls, c->pos, c->n, c->P, c->W);
    return dot_d(c->x, c->R, (size_t)c->n * (c->P + 1) * c->W);
}

static void patch_bwd(void *p) {
    patch_ctx *c = p;
    memset(c->dpatch, 0, sizeof(float) * (size_t)c->n * c->P * c->W);
    memset(c->dcols, 0, sizeof(float) * (size_t)c->n * c->P * c->kk);
    sl_op_im2col_patches(c->cols, c->pix, c->n, c->C, c->S, c->p); /* recomputed */
    sl_op_vision_embed_backward(c->dpatch, c->dcls, c->dpos, c->R, c->n, c->P, c->W);
    sl_op_matmul_backward(c->dcols, c->kk, c->dpw, NULL, NULL, c->dpatch, c->W, c->cols, c->kk,
                          c->pw, 0, NULL, c->n * c->P, c->kk, c->W, SL_OP_ACT_NONE);
    sl_op_im2col_patches_backward(c->dpix, c->dcols, c->n, c->C, c->S, c->p);
}

static void test_patch_embed(void) {
    /* S = 9, p = 4: a 2 x 2 grid, the last pixel row/column unused. */
    patch_ctx c = {.n = 2, .C = 3, .S = 9, .p = 4, .W = 6};
    c.g = c.S / c.p, c.P = c.g * c.g, c.kk = c.C * c.p * c.p;
    const size_t npix = (size_t)c.n * c.C * c.S * c.S, npw = (size_t)c.W * c.kk,
                 npos = (size_t)(c.P + 1) * c.W, nx = (size_t)c.n * (c.P + 1) * c.W;
    c.pix = rnd(npix, 1.0f), c.pw = rnd(npw, 0.3f), c.cls = rnd((size_t)c.W, 1.0f);
    c.pos = rnd(npos, 1.0f);
    c.dpix = zeros(npix), c.dpw = zeros(npw), c.dcls = zeros((size_t)c.W), c.dpos = zeros(npos);
    c.cols = zeros((size_t)c.n * c.P * c.kk), c.dcols = zeros((size_t)c.n * c.P * c.kk);
    c.pout = zeros((size_t)c.n * c.P * c.W), c.dpatch = zeros((size_t)c.n * c.P * c.W);
    c.x = zeros(nx), c.R = rnd(nx, 1.0f);
    grad_case g = {"patch conv + class token + position",
                   patch_obj,
                   patch_bwd,
                   &c,
                   {{"Wconv", c.pw, c.dpw, npw},
                    {"cls", c.cls, c.dcls, (size_t)c.W},
                    {"pos", c.pos, c.dpos, npos},
                    {"pixels", c.pix, c.dpix, npix}},
                   4,
                   1e-3f,
                   FD_TOL};
    run_case(&g);
    free(c.pix), free(c.pw), free(c.cls), free(c.pos), free(c.dpix), free(c.dpw), free(c.dcls);
    free(c.dpos), free(c.cols), free(c.dcols), free(c.pout), free(c.dpatch), free(c.x), free(c.R);
}

/* ------------------------------------------------------------------------ */
/* Token + position embeddings (packed sequences)                           */
/* ------------------------------------------------------------------------ */

typedef struct text_ctx {
    int V, W, ctx, nseq, rows;
    const int32_t *ids;
    const int *start, *len;
    float *tok, *pos, *dtok, *dpos, *x, *R;
} text_ctx;

static double text_obj(void *p) {
    text_ctx *c = p;
    sl_op_text_embed_forward(c->x, c->ids, c->tok, c->pos, c->start, c->len, c->nseq, c->ctx, c->W);
    return dot_d(c->x, c->R, (size_t)c->rows * c->W);
}

static void text_bwd(void *p) {
    text_ctx *c = p;
    sl_op_text_embed_backward(c->dtok, c->dpos, c->R, c->ids, c->start, c->len, c->nseq, c->ctx,
                              c->W);
}

static void test_text_embed(void) {
    /* Token 4 repeats within and across sequences; ids past len are junk
     * that must not be read into the gradient. */
    static const int32_t ids[2 * 8] = {9, 4, 2, 4, 7, 1, 0, 10, 4, 3, 8, 99, 99, 99, 99, 99};
    static const int start[2] = {0, 8}, len[2] = {8, 3};
    text_ctx c = {.V = 11, .W = 6, .ctx = 8, .nseq = 2, .rows = 11};
    c.ids = ids, c.start = start, c.len = len;
    const size_t nt = (size_t)c.V * c.W, np = (size_t)c.ctx * c.W, nx = (size_t)c.rows * c.W;
    c.tok = rnd(nt, 1.0f), c.pos = rnd(np, 1.0f), c.dtok = zeros(nt), c.dpos = zeros(np);
    c.x = zeros(nx), c.R = rnd(nx, 1.0f);
    grad_case g = {"token + position embedding",
                   text_obj,
                   text_bwd,
                   &c,
                   {{"tok", c.tok, c.dtok, nt}, {"pos", c.pos, c.dpos, np}},
                   2,
                   1e-3f,
                   FD_TOL};
    run_case(&g);
    free(c.tok), free(c.pos), free(c.dtok), free(c.dpos), free(c.x), free(c.R);
}

/* ------------------------------------------------------------------------ */
/* L2 normalisation and the symmetric InfoNCE loss                          */
/* ------------------------------------------------------------------------ */

typedef struct l2_ctx {
    int n, D;
    float *x, *dx, *y, *norm, *R;
} l2_ctx;

static double l2_obj(void *p) {
    l2_ctx *c = p;
    sl_op_l2_normalize_forward(c->y, c->norm, c->x, c->n, c->D);
    return dot_d(c->y, c->R, (size_t)c->n * c->D);
}

static void l2_bwd(void *p) {
    l2_ctx *c = p;
    l2_obj(c);
    sl_op_l2_normalize_backward(c->dx, c->R, c->y, c->norm, c->n, c->D);
}

static void test_l2norm(void) {
    l2_ctx c = {.n = 4, .D = 7};
    c.x = rnd(28, 1.0f), c.dx = zeros(28), c.y = zeros(28), c.norm = zeros(4), c.R = rnd(28, 1.0f);
    grad_case g = {"l2 normalise", l2_obj, l2_bwd, &c, {{"x", c.x, c.dx, 28}}, 1, 1e-3f, FD_TOL};
    run_case(&g);
    free(c.x), free(c.dx), free(c.y), free(c.norm), free(c.R);
}

/* loss = w * InfoNCE(normalise(img_raw), normalise(txt_raw), t): the loss
 * on already-normalised inputs (raw = NULL path) or chained through the
 * L2 normalisation. */
typedef struct nce_ctx {
    int B, D, chain;
    float t, dt, weight;
    float *img, *txt, *dimg, *dtxt; /* [B, D] (raw when chain) */
    float *ni, *nt, *normi, *normt, *gi, *gt, *saved, *scratch;
} nce_ctx;

static double nce_obj(void *p) {
    nce_ctx *c = p;
    const float *I = c->img, *T = c->txt;
    if (c->chain) {
        sl_op_l2_normalize_forward(c->ni, c->normi, c->img, c->B, c->D);
        sl_op_l2_normalize_forward(c->nt, c->normt, c->txt, c->B, c->D);
        I = c->ni, T = c->nt;
    }
    return (double)c->weight * sl_loss_infonce_forward(c->saved, I, T, c->t, c->B, c->D);
}

static void nce_bwd(void *p) {
    nce_ctx *c = p;
    nce_obj(c);
    if (!c->chain) {
        sl_loss_infonce_backward(c->dimg, c->dtxt, &c->dt, c->scratch, c->weight, c->saved, c->img,
                                 c->txt, c->t, c->B, c->D);
        return;
    }
    const size_t n = (size_t)c->B * c->D;
    memset(c->gi, 0, sizeof(float) * n);
    memset(c->gt, 0, sizeof(float) * n);
    sl_loss_infonce_backward(c->gi, c->gt, &c->dt, c->scratch, c->weight, c->saved, c->ni, c->nt,
                             c->t, c->B, c->D);
    sl_op_l2_normalize_backward(c->dimg, c->gi, c->ni, c->normi, c->B, c->D);
    sl_op_l2_normalize_backward(c->dtxt, c->gt, c->nt, c->normt, c->B, c->D);
}

static void test_infonce(void) {
    const float ts[3] = {2.0f, 4.5f, 5.5f}; /* scale 7.4, 90, clamped to 100 */
    for (int chain = 0; chain < 2; chain++)
        for (int k = 0; k < 3; k++) {
            nce_ctx c = {.B = 6, .D = 5, .chain = chain, .t = ts[k], .weight = 0.7f};
            const size_t n = (size_t)c.B * c.D, bb = (size_t)c.B * c.B;
            c.img = rnd(n, 1.0f), c.txt = rnd(n, 1.0f);
            if (!chain) {
                float *tmp = zeros((size_t)c.B);
                sl_op_l2_normalize_forward(c.img, tmp, c.img, c.B, c.D);
                sl_op_l2_normalize_forward(c.txt, tmp, c.txt, c.B, c.D);
                free(tmp);
            }
            c.dimg = zeros(n), c.dtxt = zeros(n), c.ni = zeros(n), c.nt = zeros(n);
            c.gi = zeros(n), c.gt = zeros(n), c.normi = zeros((size_t)c.B);
            c.normt = zeros((size_t)c.B), c.saved = zeros(3 * bb), c.scratch = zeros(bb);
            char name[64];
            snprintf(name, sizeof name, "infonce%s t=%.1f%s", chain ? "(l2norm)" : "", ts[k],
                     ts[k] > SL_LOSS_MAX_LOG_SCALE ? " clamped" : "");
            /* Near s = 90 the logits are large: the float loss's rounding
             * is ~1e-5, so a larger step keeps FD noise down. */
            grad_case g = {
                name,
                nce_obj,
                nce_bwd,
                &c,
                {{"img", c.img, c.dimg, n}, {"txt", c.txt, c.dtxt, n}, {"t", &c.t, &c.dt, 1}},
                3,
                k == 0 ? 1e-3f : 3e-3f,
                FD_TOL};
            /* dt at the clamp: the FD step must not cross ln 100. */
            if (ts[k] > SL_LOSS_MAX_LOG_SCALE) {
                c.dt = 0;
                nce_bwd(&c);
                CHECK_MSG(c.dt == 0.0f, "%s: dt = %g above the clamp", name, c.dt);
            }
            run_case(&g);
            /* The loss itself against a double reference. */
            {
                const float *I = chain ? c.ni : c.img, *T = chain ? c.nt : c.txt;
                nce_obj(&c);
                double s = exp(ts[k] < 4.605170185988091 ? ts[k] : 4.605170185988091), ref = 0;
                for (int i = 0; i < c.B; i++) {
                    double lr[16], lc[16], mr = -1e30, mc = -1e30, sr = 0, sc = 0;
                    for (int j = 0; j < c.B; j++) {
                        lr[j] = s * dot_d(I + (size_t)i * c.D, T + (size_t)j * c.D, (size_t)c.D);
                        lc[j] = s * dot_d(I + (size_t)j * c.D, T + (size_t)i * c.D, (size_t)c.D);
                        mr = lr[j] > mr ? lr[j] : mr;
                        mc = lc[j] > mc ? lc[j] : mc;
                    }
                    for (int j = 0; j < c.B; j++) sr += exp(lr[j] - mr), sc += exp(lc[j] - mc);
                    ref += (log(sr) + mr - lr[i]) + (log(sc) + mc - lc[i]);
                }
                ref /= 2.0 * c.B;
                double got = sl_loss_infonce_forward(c.saved, I, T, c.t, c.B, c.D);
                CHECK_MSG(fabs(got - ref) <= 1e-5 * (1 + fabs(ref)), "%s: loss %.8g vs %.8g", name,
                          got, ref);
            }
            free(c.img), free(c.txt), free(c.dimg), free(c.dtxt), free(c.ni), free(c.nt);
            free(c.gi), free(c.gt), free(c.normi), free(c.normt), free(c.saved), free(c.scratch);
        }
}

/* loss = w * dense InfoNCE(normalise(z_raw), normalise(txt_raw)): image b
 * has T rows, its patches rows 1 .. P (row 0 stands for a class token, rows
 * after P for other tokens: none may get a gradient). */
typedef struct dense_ctx {
    int B, T, P, D;
    float t, dt, weight, beta;
    float *z, *txt, *dz, *dtxt;               /* raw [B T, D], [B, D] and their gradients */
    float *nz, *nt, *normz, *normt, *gz, *gt; /* normalised, norms, their gradients */
    float *saved, *w, *scratch;
} dense_ctx;

static double dense_obj(void *p) {
    dense_ctx *c = p;
    sl_op_l2_normalize_forward(c->nz, c->normz, c->z, c->B * c->T, c->D);
    sl_op_l2_normalize_forward(c->nt, c->normt, c->txt, c->B, c->D);
    return (double)c->weight * sl_loss_dense_forward(c->saved, c->w, c->nz, c->T, 1, c->P, c->nt,
                                                     c->t, c->beta, c->B, c->D);
}

static void dense_bwd(void *p) {
    dense_ctx *c = p;
    dense_obj(c);
    const size_t nz = (size_t)c->B * c->T * c->D, nt = (size_t)c->B * c->D;
    memset(c->gz, 0, sizeof(float) * nz);
    memset(c->gt, 0, sizeof(float) * nt);
    sl_loss_dense_backward(c->gz, c->gt, &c->dt, c->scratch, c->weight, c->saved, c->w, c->nz, c->T,
                           1, c->P, c->nt, c->t, c->B, c->D);
    sl_op_l2_normalize_backward(c->dz, c->gz, c->nz, c->normz, c->B * c->T, c->D);
    sl_op_l2_normalize_backward(c->dtxt, c->gt, c->nt, c->normt, c->B, c->D);
}

static void test_dense(void) {
    const float ts[2] = {2.0f, 5.5f}, betas[2] = {2.0f, 10.0f};
    for (int k = 0; k < 2; k++)
        for (int q = 0; q < 2; q++) {
            /* the second sharpness also has a row after the patches */
            dense_ctx c = {
                .B = 5, .T = 4 + q, .P = 3, .D = 6, .t = ts[k], .weight = 0.6f, .beta = betas[q]};
            const size_t nz = (size_t)c.B * c.T * c.D, nt = (size_t)c.B * c.D;
            const size_t bb = (size_t)c.B * c.B, bt = (size_t)c.B * c.T * c.B;
            c.z = rnd(nz, 1.0f), c.txt = rnd(nt, 1.0f), c.dz = zeros(nz), c.dtxt = zeros(nt);
            c.nz = zeros(nz), c.nt = zeros(nt), c.normz = zeros((size_t)c.B * c.T);
            c.normt = zeros((size_t)c.B), c.gz = zeros(nz), c.gt = zeros(nt);
            c.saved = zeros(3 * bb), c.w = zeros(bt), c.scratch = zeros(bb + bt);
            char name[64];
            snprintf(name, sizeof name, "dense infonce t=%.1f beta=%g%s", ts[k], betas[q],
                     ts[k] > SL_LOSS_MAX_LOG_SCALE ? " clamped" : "");
            grad_case g = {
                name,
                dense_obj,
                dense_bwd,
                &c,
                {{"z", c.z, c.dz, nz}, {"txt", c.txt, c.dtxt, nt}, {"t", &c.t, &c.dt, 1}},
                3,
                k == 0 ? 1e-3f : 3e-3f,
                FD_TOL};
            if (ts[k] > SL_LOSS_MAX_LOG_SCALE) {
                c.dt = 0;
                dense_bwd(&c);
                CHECK_MSG(c.dt == 0.0f, "%s: dt = %g above the clamp", name, c.dt);
            }
            run_case(&g);
            /* the rows outside the patches (row 0, rows after P) get nothing */
            memset(c.dz, 0, sizeof(float) * nz);
            dense_bwd(&c);
            for (int b = 0; b < c.B; b++)
                for (int r = 0; r < c.T; r++) {
                    if (r >= 1 && r <= c.P) continue;
                    for (int d = 0; d < c.D; d++)
                        CHECK_MSG(c.dz[((size_t)b * c.T + r) * c.D + d] == 0.0f,
                                  "%s: row %d of image %d (no patch) has a gradient", name, r, b);
                }
            /* the loss against a double reference */
            double s = exp(fmin(ts[k], SL_LOSS_MAX_LOG_SCALE)), ref = 0;
            double L[5][5]; /* [B][B] */
            for (int b = 0; b < c.B; b++)
                for (int j = 0; j < c.B; j++) {
                    double acc = 0;
                    for (int p = 1; p <= c.P; p++)
                        acc += exp(c.beta * dot_d(c.nz + ((size_t)b * c.T + p) * c.D,
                                                  c.nt + (size_t)j * c.D, (size_t)c.D));
                    L[b][j] = s * log(acc / c.P) / c.beta;
                }
            for (int i = 0; i < c.B; i++) {
                double sr = 0, sc = 0;
                for (int j = 0; j < c.B; j++) sr += exp(L[i][j]), sc += exp(L[j][i]);
                ref += (log(sr) - L[i][i]) + (log(sc) - L[i][i]);
            }
            ref /= 2.0 * c.B;
            const double got = dense_obj(&c) / c.weight;
            CHECK_MSG(fabs(got - ref) <= 1e-5 * (1 + fabs(ref)), "%s: loss %.8g vs %.8g", name, got,
                      ref);
            free(c.z), free(c.txt), free(c.dz), free(c.dtxt), free(c.nz), free(c.nt);
            free(c.normz), free(c.normt), free(c.gz), free(c.gt), free(c.saved), free(c.w);
            free(c.scratch);
        }
}

/* ------------------------------------------------------------------------ */
/* Thread-count independence of the parallel reductions                     */
/* ------------------------------------------------------------------------ */

/* Runs the column-block reductions at sizes where their OpenMP regions are
 * active, on 1 and on 4 threads, and expects the same bits. */
static void test_threads(void) {
    const int N = 300, C = 200, V = 50, ctx = 10, nseq = 30;
    const size_t nc = (size_t)N * C;
    float *x = rnd(nc, 1.0f), *dout = rnd(nc, 1.0f), *w = rnd((size_t)C, 1.0f);
    float *mean = zeros((size_t)N), *rstd = zeros((size_t)N), *out = zeros(nc);
    float *xc = malloc(sizeof(float) * nc);
    memcpy(xc, x, sizeof(float) * nc);
    sl_op_residual_layernorm_forward(out, mean, rstd, xc, NULL, w, w, N, C, 1e-5f);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)nseq * ctx);
    int start[30], len[30];
    for (int i = 0; i < nseq * ctx; i++) ids[i] = (int32_t)((i * 7) % V);
    for (int s = 0; s < nseq; s++) start[s] = s * ctx, len[s] = ctx;
    float *res[2][5];
    const int threads[2] = {1, 4};
    const int saved_threads = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(threads[r]);
        float *dx = zeros(nc), *dw = zeros((size_t)C), *db = zeros((size_t)C);
        float *dtok = zeros((size_t)V * C), *dpos = zeros((size_t)ctx * C);
        sl_op_residual_layernorm_backward(dx, dw, db, dout, xc, mean, rstd, w, N, C);
        sl_op_text_embed_backward(dtok, dpos, dout, ids, start, len, nseq, ctx, C);
        res[r][0] = dx, res[r][1] = dw, res[r][2] = db, res[r][3] = dtok, res[r][4] = dpos;
    }
    omp_set_num_threads(saved_threads);
    const size_t sizes[5] = {nc, (size_t)C, (size_t)C, (size_t)V * C, (size_t)ctx * C};
    const char *names[5] = {"layernorm dx", "layernorm dw", "layernorm db", "embedding dtok",
                            "embedding dpos"};
    for (int k = 0; k < 5; k++) {
        CHECK_MSG(memcmp(res[0][k], res[1][k], sizeof(float) * sizes[k]) == 0,
                  "%s differs between 1 and 4 threads", names[k]);
        free(res[0][k]), free(res[1][k]);
    }
    printf("  thread-count independence (1 vs 4 threads): checked\n");
    free(x), free(dout), free(w), free(mean), free(rstd), free(out), free(xc), free(ids);
}

int main(void) {
    test_act();
    test_matmul();
    test_layernorm();
    test_softmax();
    test_attention();
    test_gather();
    test_patch_embed();
    test_text_embed();
    test_l2norm();
    test_infonce();
    test_dense();
    test_threads();
    printf("worst relative FD error: %.2e\n", worst_err);
    return sl_test_finish("test_grad");
}
