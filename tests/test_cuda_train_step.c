/*
 * tests/test_cuda_train_step.c - one training step on the GPU
 * (trainer/model_gpu.cu) against the CPU model (trainer/model.c) on a small
 * random model: the loss (relative 1e-5), every gradient tensor (max |gpu -
 * cpu| / max |cpu| per tensor <= 1e-4, printed as a table by tensor name),
 * and the parameters after 3 AdamW steps on 3 batches (<= 1e-4 per tensor,
 * clipping on; k_proj.bias, zero in exact arithmetic, in absolute terms:
 * see zero_grad_tensor). The GPU part runs twice from the same initial
 * model and must give bit-identical losses, gradients and parameters
 * (determinism).
 *
 * The same gradient step in BF16 mixed precision (sl_gpu_model_set_precision:
 * tensor-core products with BF16 operands, F32 accumulation and master
 * weights) against the same CPU step: the loss within 2e-2 relative, the
 * whole gradient within 2e-2 relative L2 (||g_bf16 - g_cpu|| / ||g_cpu||
 * over every parameter), each tensor within 0.1 relative L2 (a tensor
 * computed wrongly is off by about 1), two runs bit-identical, and its
 * gradients not bit-identical to the F32 path's (the mode is in effect).
 * BF16 keeps 8 significant bits: a float64 simulation of these two models
 * with every product's operands rounded to BF16 (40 random initialisations)
 * put the whole-gradient error at a median of 1.2-1.7% at batch 8, most
 * tensors below 5% and the loss below 0.6%; the bounds are the issue's
 * (2e-2) and a margin for single tensors, not fitted to this code. The
 * BF16 weight copy must follow AdamW: after the 3 AdamW steps, a fresh BF16
 * model given the downloaded state (upload_state) and the first model give
 * the same gradient step bit for bit.
 *
 * Without CUDA in the build or a device in the machine: checks that
 * creating the model on a missing device is SL_ERR_UNSUPPORTED naming
 * cuda:N, then skips (77).
 */
#include "sightline/sightline.h"
#include "testmodel.h"
#include "testutil.h"
#include "trainer/model.h"
#include "trainer/model_gpu.h"
#include "trainer/optim.h"

#include <omp.h>
#include <stdint.h>

#define B               8
#define NSTEPS          3
#define LOSS_TOL        1e-5
#define GRAD_TOL        1e-4
#define PARM_TOL        1e-4
#define BF16_TOL        2e-2 /* loss, whole-gradient relative L2 */
#define BF16_TENSOR_TOL 0.1  /* per tensor relative L2 */
#define LR              1e-3

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
        fprintf(stderr, "test_cuda_train_step: out of memory\n");
        exit(2);
    }
    return p;
}

static sl_clip_config small_config(void) {
    /* width, layers, heads, mlp width, activation, LayerNorm eps */
    return sl_test_clip_config((sl_tower_config){32, 2, 2, 64, SL_ACT_QUICK_GELU, 1e-5f},
                               (sl_tower_config){24, 2, 3, 48, SL_ACT_GELU, 1e-5f});
}

/* One layer per tower (the last block is the first), the other
 * activations, argmax pooling. */
static sl_clip_config small_config_b(void) {
    sl_clip_config cfg = small_config();
    cfg.vision = (sl_tower_config){48, 1, 3, 96, SL_ACT_GELU_TANH, 1e-5f};
    cfg.text = (sl_tower_config){32, 1, 2, 64, SL_ACT_QUICK_GELU, 1e-5f};
    cfg.image_size = 24;
    cfg.patch_size = 6;
    cfg.context_length = 10;
    cfg.vocab_size = 60;
    cfg.embed_dim = 16;
    cfg.eos_token_id = 59;
    cfg.pool_argmax = 1;
    return cfg;
}

/* One batch: pixels uniform in [-1.5, 1.5); tokens in [0, 49) with the end
 * token at a varying position (none in row 1: pooled at the last position;
 * position 0 in row 2 when there are 3 or more rows). */
static void make_batch(const sl_clip_config *c, float *pixels, int32_t *tokens, int k) {
    const size_t np = (size_t)B * 3 * c->image_size * c->image_size;
    for (size_t i = 0; i < np; i++) pixels[i] = unif(1.5f);
    const int ctx = c->context_length;
    for (int s = 0; s < B; s++) {
        for (int t = 0; t < ctx; t++)
            tokens[s * ctx + t] = (int32_t)(next_u32() % (uint32_t)(c->vocab_size - 1));
        int eos = s == 1 ? -1 : s == 2 ? 0 : (int)((next_u32() + (uint32_t)k) % (uint32_t)ctx);
        if (eos >= 0) tokens[s * ctx + eos] = c->eos_token_id;
    }
}

typedef struct gpu_run {
    float loss0;         /* loss of the gradient step (no update) */
    float *grads;        /* [num_params] its gradients */
    float loss[NSTEPS];  /* losses of the update steps */
    double norm[NSTEPS]; /* their gradient norms */
    float *params;       /* [num_params] after the updates */
    int fresh_same;      /* BF16: a model rebuilt from the state agrees (1), not (0) */
} gpu_run;

/* BF16: after the updates, a fresh BF16 model given g's downloaded state
 * and g itself take the same gradient step (batch 0) bit for bit: the BF16
 * weight copy followed every AdamW update. 1 when they agree. */
static int fresh_agrees(const sl_train_model *m, sl_gpu_model *g, const float *pixels,
                        const int32_t *tokens) {
    const size_t n = m->num_params;
    float *p = xmalloc(n * sizeof(float)), *mm = xmalloc(n * sizeof(float));
    float *v = xmalloc(n * sizeof(float)), *ga = xmalloc(n * sizeof(float));
    float *gb = xmalloc(n * sizeof(float));
    int64_t t = 0;
    float la = 0, lb = -1;
    int same = 0;
    sl_gpu_model *f = NULL;
    sl_status st = sl_gpu_model_download_state(g, p, mm, v, &t);
    if (!st) st = sl_gpu_model_step(g, pixels, tokens, B, &la, 0, NULL, 0.0, NULL);
    if (!st) st = sl_gpu_model_download_grads(g, ga);
    if (!st) st = sl_gpu_model_create(0, m, B, &f);
    if (!st) st = sl_gpu_model_set_precision(f, SL_GPU_BF16);
    if (!st) st = sl_gpu_model_upload_state(f, p, mm, v, t);
    if (!st) st = sl_gpu_model_step(f, pixels, tokens, B, &lb, 0, NULL, 0.0, NULL);
    if (!st) st = sl_gpu_model_download_grads(f, gb);
    CHECK_OK(st);
    if (!st) same = la == lb && memcmp(ga, gb, n * sizeof(float)) == 0;
    sl_gpu_model_free(f);
    free(p), free(mm), free(v), free(ga), free(gb);
    return same;
}

/* The GPU sequence: a gradient step on batch 0, then NSTEPS AdamW steps on
 * batches 0 .. NSTEPS-1. 0 on success. */
static int run_gpu(const sl_train_model *m, const float *pixels, const int32_t *tokens,
                   size_t px_per, size_t tk_per, const sl_adamw_config *oc, sl_gpu_precision prec,
                   gpu_run *r) {
    sl_gpu_model *g = NULL;
    sl_status st = sl_gpu_model_create(0, m, B, &g);
    CHECK_OK(st);
    if (st != SL_OK) return -1;
    st = sl_gpu_model_set_precision(g, prec);
    CHECK_OK(st);
    if (st != SL_OK) {
        sl_gpu_model_free(g);
        return -1;
    }
    CHECK(sl_gpu_model_num_params(g) == m->num_params);
    r->grads = xmalloc(m->num_params * sizeof(float));
    r->params = xmalloc(m->num_params * sizeof(float));
    int bad = 0;
    st = sl_gpu_model_step(g, pixels, tokens, B, &r->loss0, 0, NULL, 0.0, NULL);
    CHECK_OK(st);
    bad |= st != SL_OK;
    st = sl_gpu_model_download_grads(g, r->grads);
    CHECK_OK(st);
    bad |= st != SL_OK;
    for (int k = 0; k < NSTEPS && !bad; k++) {
        st = sl_gpu_model_step(g, pixels + k * px_per, tokens + k * tk_per, B, &r->loss[k], 1, oc,
                               LR, &r->norm[k]);
        CHECK_OK(st);
        bad |= st != SL_OK;
    }
    st = sl_gpu_model_download_params(g, r->params);
    CHECK_OK(st);
    bad |= st != SL_OK;
    if (prec == SL_GPU_BF16 && !bad) r->fresh_same = fresh_agrees(m, g, pixels, tokens);
    /* errors are reported as on the CPU */
    int32_t *badtok = xmalloc(tk_per * sizeof(int32_t));
    memcpy(badtok, tokens, tk_per * sizeof(int32_t));
    badtok[2 * m->cfg.context_length + 3] = m->cfg.vocab_size;
    CHECK_ERR(sl_gpu_model_step(g, pixels, badtok, B, NULL, 0, NULL, 0.0, NULL), SL_ERR_INVALID,
              "row 2 position 3");
    free(badtok);
    CHECK_ERR(sl_gpu_model_step(g, pixels, tokens, B + 1, NULL, 0, NULL, 0.0, NULL), SL_ERR_INVALID,
              "batch");
    sl_gpu_model_free(g);
    return bad ? -1 : 0;
}

/* max |a - b| / max |ref| over one tensor (max |a - b| when ref is all 0). */
static double rel_err(const float *a, const float *ref, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)ref[i]);
        if (!(e <= d)) d = e; /* NaN sticks */
        if (fabs((double)ref[i]) > s) s = fabs((double)ref[i]);
    }
    return s > 0 ? d / s : d;
}

/* k_proj.bias gets an exactly zero gradient in exact arithmetic (the
 * softmax is invariant to a shift shared by every key): both sides hold
 * rounding noise there, so a relative error means nothing. Its gradient is
 * checked in absolute terms (max |g| <= 1e-5 of the whole gradient's max on
 * both sides) and its parameters to within one AdamW step (lr; noise-driven
 * updates are about lr * |noise| / eps). */
static int zero_grad_tensor(const char *name) {
    return strstr(name, "k_proj.bias") != NULL;
}

static double max_abs(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i]) <= s)) s = fabs((double)x[i]);
    return s;
}

/* Per-tensor table of gpu vs cpu: max relative error per tensor (the
 * zero-gradient tensors as above); returns the worst relative error. */
static double table(const char *what, const sl_train_model *m, const float *gpu, const float *cpu,
                    double tol, int params) {
    const double whole = max_abs(cpu, m->num_params);
    printf("  %-64s %11s  (%s, tol %.0e)\n", "tensor", "rel err", what, tol);
    double worst = 0;
    for (size_t i = 0; i < m->num_tensors; i++) {
        const sl_train_tensor *t = &m->tensors[i];
        const float *a = gpu + t->offset, *b = cpu + t->offset;
        if (zero_grad_tensor(t->name)) {
            double e, lim;
            if (params) {
                e = 0;
                for (size_t j = 0; j < t->count; j++) {
                    double d = fabs((double)a[j] - (double)b[j]);
                    if (!(d <= e)) e = d;
                }
                lim = LR;
            } else {
                double ea = max_abs(a, t->count), eb = max_abs(b, t->count);
                e = (ea > eb ? ea : eb) / whole;
                lim = 1e-5;
            }
            int ok = e <= lim;
            printf("  %-64s %11.3e  (zero in exact arithmetic: %s <= %.0e)%s\n", t->name, e,
                   params ? "max abs diff" : "max |g| / whole max", lim, ok ? "" : "  FAIL");
            CHECK_MSG(ok, "%s %s: %g > %g", what, t->name, e, lim);
            continue;
        }
        double e = rel_err(a, b, t->count);
        int ok = e <= tol;
        printf("  %-64s %11.3e%s\n", t->name, e, ok ? "" : "  FAIL");
        CHECK_MSG(ok, "%s %s: %g > %g", what, t->name, e, tol);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* Both sides from the initial parameters of a model of cfg. */
static void run_case(const char *label, const sl_clip_config *cfgp, uint64_t seed) {
    const sl_clip_config cfg = *cfgp;
    printf("%s\n", label);
    sl_train_model *m = NULL;
    CHECK_OK(sl_train_model_create(&cfg, B, seed, &m));
    if (!m) return;
    /* logit_scale off its init so that its gradient is not special */
    *m->params.logit_scale = 2.9f;

    const size_t px_per = (size_t)B * 3 * cfg.image_size * cfg.image_size;
    const size_t tk_per = (size_t)B * cfg.context_length;
    float *pixels = xmalloc(NSTEPS * px_per * sizeof(float));
    int32_t *tokens = xmalloc(NSTEPS * tk_per * sizeof(int32_t));
    for (int k = 0; k < NSTEPS; k++) make_batch(&cfg, pixels + k * px_per, tokens + k * tk_per, k);

    sl_adamw_config oc = sl_adamw_defaults();
    oc.grad_clip = 1.0;

    /* GPU twice from the same initial parameters, F32 (r) and BF16 (rb) */
    gpu_run r[2], rb[2];
    memset(r, 0, sizeof r);
    memset(rb, 0, sizeof rb);
    int ok = 1, okb = 1;
    for (int i = 0; i < 2 && ok; i++)
        ok = run_gpu(m, pixels, tokens, px_per, tk_per, &oc, SL_GPU_F32, &r[i]) == 0;
    for (int i = 0; i < 2 && okb; i++)
        okb = run_gpu(m, pixels, tokens, px_per, tk_per, &oc, SL_GPU_BF16, &rb[i]) == 0;
    for (int p = 0; p < 2; p++) {
        gpu_run *x = p ? rb : r;
        if (!(p ? okb : ok)) continue;
        int same = memcmp(&x[0].loss0, &x[1].loss0, sizeof(float)) == 0 &&
                   memcmp(x[0].loss, x[1].loss, sizeof x[0].loss) == 0 &&
                   memcmp(x[0].norm, x[1].norm, sizeof x[0].norm) == 0 &&
                   memcmp(x[0].grads, x[1].grads, m->num_params * sizeof(float)) == 0 &&
                   memcmp(x[0].params, x[1].params, m->num_params * sizeof(float)) == 0;
        printf("  %s deterministic (two GPU runs bit-identical): %s\n", p ? "BF16" : "F32",
               same ? "yes" : "NO");
        CHECK(same);
    }

    /* CPU: the gradient step, then the same AdamW steps */
    float loss = 0;
    sl_train_model_zero_grad(m);
    CHECK_OK(sl_train_model_forward(m, pixels, tokens, B, &loss));
    CHECK_OK(sl_train_model_backward(m));
    if (ok) {
        double e = fabs((double)r[0].loss0 - loss) / fabs((double)loss);
        printf("  loss: gpu %.9g cpu %.9g rel err %.3e (tol %.0e)\n", r[0].loss0, loss, e,
               LOSS_TOL);
        CHECK_MSG(e <= LOSS_TOL, "loss %g vs %g", r[0].loss0, loss);
        double w = table("gradient", m, r[0].grads, m->grads_mem, GRAD_TOL, 0);
        printf("  worst gradient rel err %.3e\n", w);
    }
    if (okb) {
        double e = fabs((double)rb[0].loss0 - loss) / fabs((double)loss);
        printf("  BF16 loss: gpu %.9g cpu %.9g rel err %.3e (tol %.0e)\n", rb[0].loss0, loss, e,
               BF16_TOL);
        CHECK_MSG(e <= BF16_TOL, "BF16 loss %g vs %g", rb[0].loss0, loss);
        /* relative L2 errors: the whole gradient, and each tensor */
        double dd = 0, rr = 0, worst = 0;
        for (size_t i = 0; i < m->num_tensors; i++) {
            const sl_train_tensor *t = &m->tensors[i];
            const float *a = rb[0].grads + t->offset, *c = m->grads_mem + t->offset;
            double d2 = 0, r2 = 0;
            for (size_t j = 0; j < t->count; j++) {
                const double d = (double)a[j] - (double)c[j];
                d2 += d * d;
                r2 += (double)c[j] * (double)c[j];
            }
            dd += d2;
            rr += r2;
            if (zero_grad_tensor(t->name)) continue; /* zero in exact arithmetic */
            const double e = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
            if (!(e <= worst)) worst = e;
            CHECK_MSG(e <= BF16_TENSOR_TOL, "BF16 gradient %s: rel L2 %g > %g", t->name, e,
                      BF16_TENSOR_TOL);
            if (!(e <= BF16_TENSOR_TOL))
                printf("  BF16 gradient %s: rel L2 %.3e  FAIL\n", t->name, e);
        }
        const double whole = rr > 0 ? sqrt(dd / rr) : sqrt(dd);
        printf("  BF16 gradient: whole rel L2 %.3e (tol %.0e), worst tensor %.3e (tol %.0e)\n",
               whole, BF16_TOL, worst, BF16_TENSOR_TOL);
        CHECK_MSG(whole <= BF16_TOL, "BF16 whole gradient rel L2 %g > %g", whole, BF16_TOL);
        printf("  BF16 weight copy follows AdamW (fresh model from the state agrees): %s\n",
               rb[0].fresh_same ? "yes" : "NO");
        CHECK(rb[0].fresh_same);
        if (ok) {
            int differs = memcmp(rb[0].grads, r[0].grads, m->num_params * sizeof(float)) != 0;
            printf("  BF16 gradients differ from the F32 path's: %s\n", differs ? "yes" : "NO");
            CHECK_MSG(differs, "BF16 mode gave the F32 path's gradients bit for bit");
        }
        for (int k = 0; k < NSTEPS; k++) {
            printf("  BF16 step %d: loss %.9g, grad norm %.9g\n", k + 1, rb[0].loss[k],
                   rb[0].norm[k]);
            CHECK_MSG(isfinite(rb[0].loss[k]) && isfinite(rb[0].norm[k]), "BF16 step %d", k + 1);
        }
    }
    sl_adamw opt;
    CHECK_OK(sl_adamw_init(&opt, &oc, m->num_params));
    for (int k = 0; k < NSTEPS; k++) {
        double norm = 0;
        sl_train_model_zero_grad(m);
        CHECK_OK(sl_train_model_forward(m, pixels + k * px_per, tokens + k * tk_per, B, &loss));
        CHECK_OK(sl_train_model_backward(m));
        CHECK_OK(sl_adamw_step(&opt, m, LR, 1.0, &norm));
        if (ok) {
            double e = fabs((double)r[0].loss[k] - loss) / fabs((double)loss);
            double en = fabs(r[0].norm[k] - norm) / norm;
            printf("  step %d: loss gpu %.9g cpu %.9g (rel %.3e), grad norm gpu %.9g cpu %.9g "
                   "(rel %.3e)\n",
                   k + 1, r[0].loss[k], loss, e, r[0].norm[k], norm, en);
            CHECK_MSG(e <= LOSS_TOL, "step %d loss %g vs %g", k + 1, r[0].loss[k], loss);
            CHECK_MSG(en <= GRAD_TOL, "step %d norm %g vs %g", k + 1, r[0].norm[k], norm);
        }
    }
    if (ok) {
        double w =
            table("parameter after 3 AdamW steps", m, r[0].params, m->params_mem, PARM_TOL, 1);
        printf("  worst parameter rel err %.3e\n", w);
    }
    sl_adamw_free(&opt);
    for (int i = 0; i < 2; i++)
        free(r[i].grads), free(r[i].params), free(rb[i].grads), free(rb[i].params);
    free(pixels);
    free(tokens);
    sl_train_model_free(m);
}

int main(void) {
    const sl_clip_config cfg = small_config();
    sl_train_model *m = NULL;
    CHECK_OK(sl_train_model_create(&cfg, B, 7, &m));
    if (!m) return sl_test_finish("test_cuda_train_step");
    /* logit_scale off its init so that its gradient is not special */
    *m->params.logit_scale = 2.9f;

    /* a device that does not exist (in any build) */
    sl_gpu_model *none = NULL;
    CHECK_ERR(sl_gpu_model_create(64, m, B, &none), SL_ERR_UNSUPPORTED, "cuda:64");
    CHECK(none == NULL);

    sl_gpu_model *probe = NULL;
    sl_status st = sl_gpu_model_create(0, m, B, &probe);
    if (st != SL_OK) {
        CHECK_MSG(st == SL_ERR_UNSUPPORTED, "status %d: %s", (int)st, sl_last_error());
        CHECK_MSG(strstr(sl_last_error(), "cuda:0") != NULL, "message '%s'", sl_last_error());
        sl_train_model_free(m);
        if (sl_test_failures) return sl_test_finish("test_cuda_train_step");
        printf("skip: no CUDA device (%s)\n", sl_last_error());
        return SL_TEST_SKIP;
    }
    sl_gpu_model_free(probe);
    sl_train_model_free(m);
    omp_set_num_threads(4);
    const sl_clip_config cb = small_config_b();
    run_case("case A: 2 + 2 layers, quick_gelu / gelu, end-of-text pooling", &cfg, 7);
    run_case("case B: 1 + 1 layers, gelu_tanh / quick_gelu, argmax pooling", &cb, 11);
    return sl_test_finish("test_cuda_train_step");
}
