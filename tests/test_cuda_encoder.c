/*
 * tests/test_cuda_encoder.c - the GPU towers (encoder/clip_gpu.h) against
 * the CPU forward (clip_forward.c through sl_encoder_encode_*), on small
 * random Hugging Face checkpoints written here with sl_safetensors_write.
 *
 * Three models cover the three activations (QuickGELU, exact GELU, tanh
 * GELU), both pool rules (argmax id, first end token), head dims 32 .. 128
 * (one, two, three and four dims per lane in the attention kernel; 128 takes
 * the > 48 KB shared memory path), sequences shorter and longer than the
 * kernel's 32-row tiles (up to 257 image tokens, as ViT-L/14), and a patch
 * GEMM whose K (3 * 14^2 = 588) is padded. For each, in F32 (max error
 * <= 1e-4 of the largest CPU value) and BF16 (<= 2e-2):
 *   images: pooled only; pooled + patches with both patch-token rules
 *     (VALUE, FINAL); n = 1, a few, one more than a chunk;
 *   texts: pooled only (packed up to each pooled position) and with every
 *     token (tokens_out); n = 1, a few of every length, more than a chunk
 *     of sequences and of rows.
 * Also: a missing device is SL_ERR_UNSUPPORTED naming cuda:N (checked
 * before skipping, 77, on machines or builds without CUDA), a bad token id
 * is SL_ERR_INVALID, n = 0 does nothing.
 */
#include "encoder/clip_gpu.h"
#include "encoder/clip_internal.h"
#include "sightline/safetensors.h"
#include "sightline/sightline.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32  1e-4
#define TOL_BF16 2e-2

/* ------------------------------------------------------------------------ */
/* Random checkpoints                                                       */
/* ------------------------------------------------------------------------ */

typedef struct spec {
    const char *name;
    int wv, lv, hv, mv; /* vision width, layers, heads, mlp */
    const char *actv;
    int img, patch;
    int wt, lt, ht, mt; /* text */
    const char *actt;
    int ctx, vocab, eos, dim;
} spec;

static const spec SPECS[] = {
    /* QuickGELU; argmax pooling (eos 2); vision dh 64, 65 tokens; text dh 32 */
    {"quick_gelu", 128, 2, 2, 512, "quick_gelu", 64, 8, 128, 2, 4, 512, "quick_gelu", 77, 300, 2,
     64},
    /* exact GELU; first-eos pooling; vision dh 80 (10 tokens); text dh 96 */
    {"gelu", 160, 2, 2, 320, "gelu", 48, 16, 96, 2, 1, 192, "gelu", 40, 500, 499, 48},
    /* tanh GELU; argmax pooling; vision 257 tokens (224 / 14), K = 588;
       text dh 128 */
    {"gelu_tanh", 64, 2, 1, 256, "gelu_pytorch_tanh", 224, 14, 256, 1, 2, 512, "gelu_new", 77, 1000,
     2, 32},
};

#define MAX_T 256

typedef struct tensors {
    sl_tensor_desc d[MAX_T];
    float *bufs[MAX_T];
    char names[MAX_T][128];
    size_t n;
} tensors;

static uint32_t rng = 2024;
static float urand(void) { /* [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

/* A tensor of `base + scale * u`, u uniform in [-1, 1). */
static void add(tensors *t, const char *name, float base, float scale, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3) {
    if (t->n >= MAX_T) {
        fprintf(stderr, "too many tensors\n");
        exit(2);
    }
    size_t i = t->n++, count = 1;
    int64_t dims[4] = {d0, d1, d2, d3};
    snprintf(t->names[i], sizeof t->names[i], "%s", name);
    t->d[i].name = t->names[i];
    t->d[i].dtype = SL_DT_F32;
    t->d[i].ndim = ndim;
    for (int k = 0; k < ndim; k++) {
        t->d[i].shape[k] = dims[k];
        count *= (size_t)dims[k];
    }
    t->bufs[i] = malloc(sizeof(float) * count);
    if (!t->bufs[i]) exit(2);
    for (size_t k = 0; k < count; k++) t->bufs[i][k] = base + scale * urand();
    t->d[i].data = t->bufs[i];
}

static void free_tensors(tensors *t) {
    for (size_t i = 0; i < t->n; i++) free(t->bufs[i]);
    t->n = 0;
}

/* nn.Linear weight [N, K] with variance about 1/K. */
#define LIN(t, name, N, K)           add(t, name, 0, 1.7f / sqrtf((float)(K)), 2, N, K, 0, 0)
#define VEC(t, name, base, scale, N) add(t, name, base, scale, 1, N, 0, 0, 0)

static void hf_block(tensors *t, const char *pre, int W, int M) {
    char n[128];
#define NAME(suffix) (snprintf(n, sizeof n, "%s.%s", pre, suffix), n)
    VEC(t, NAME("layer_norm1.weight"), 1, 0.1f, W);
    VEC(t, NAME("layer_norm1.bias"), 0, 0.1f, W);
    LIN(t, NAME("self_attn.q_proj.weight"), W, W);
    VEC(t, NAME("self_attn.q_proj.bias"), 0, 0.1f, W);
    LIN(t, NAME("self_attn.k_proj.weight"), W, W);
    VEC(t, NAME("self_attn.k_proj.bias"), 0, 0.1f, W);
    LIN(t, NAME("self_attn.v_proj.weight"), W, W);
    VEC(t, NAME("self_attn.v_proj.bias"), 0, 0.1f, W);
    LIN(t, NAME("self_attn.out_proj.weight"), W, W);
    VEC(t, NAME("self_attn.out_proj.bias"), 0, 0.1f, W);
    VEC(t, NAME("layer_norm2.weight"), 1, 0.1f, W);
    VEC(t, NAME("layer_norm2.bias"), 0, 0.1f, W);
    LIN(t, NAME("mlp.fc1.weight"), M, W);
    VEC(t, NAME("mlp.fc1.bias"), 0, 0.1f, M);
    LIN(t, NAME("mlp.fc2.weight"), W, M);
    VEC(t, NAME("mlp.fc2.bias"), 0, 0.1f, W);
#undef NAME
}

static void hf_model(tensors *t, const spec *s) {
    const int g = s->img / s->patch, T = g * g + 1;
    char n[128];
    add(t, "vision_model.embeddings.patch_embedding.weight", 0,
        1.7f / sqrtf(3.0f * s->patch * s->patch), 4, s->wv, 3, s->patch, s->patch);
    VEC(t, "vision_model.embeddings.class_embedding", 0, 0.5f, s->wv);
    add(t, "vision_model.embeddings.position_embedding.weight", 0, 0.1f, 2, T, s->wv, 0, 0);
    VEC(t, "vision_model.pre_layrnorm.weight", 1, 0.1f, s->wv);
    VEC(t, "vision_model.pre_layrnorm.bias", 0, 0.1f, s->wv);
    for (int l = 0; l < s->lv; l++) {
        snprintf(n, sizeof n, "vision_model.encoder.layers.%d", l);
        hf_block(t, n, s->wv, s->mv);
    }
    VEC(t, "vision_model.post_layernorm.weight", 1, 0.1f, s->wv);
    VEC(t, "vision_model.post_layernorm.bias", 0, 0.1f, s->wv);
    LIN(t, "visual_projection.weight", s->dim, s->wv);
    add(t, "text_model.embeddings.token_embedding.weight", 0, 0.5f, 2, s->vocab, s->wt, 0, 0);
    add(t, "text_model.embeddings.position_embedding.weight", 0, 0.1f, 2, s->ctx, s->wt, 0, 0);
    for (int l = 0; l < s->lt; l++) {
        snprintf(n, sizeof n, "text_model.encoder.layers.%d", l);
        hf_block(t, n, s->wt, s->mt);
    }
    VEC(t, "text_model.final_layer_norm.weight", 1, 0.1f, s->wt);
    VEC(t, "text_model.final_layer_norm.bias", 0, 0.1f, s->wt);
    LIN(t, "text_projection.weight", s->dim, s->wt);
    add(t, "logit_scale", 2.6592f, 0, 0, 0, 0, 0, 0);
}

/* Write the model of s under tmp; returns its directory (static buffer). */
static const char *make_model(const char *tmp, const spec *s) {
    static char dir[1024];
    char path[1200], config[2048];
    snprintf(dir, sizeof dir, "%s/%s", tmp, s->name);
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    if (system(path) != 0) exit(2);
    tensors t = {0};
    hf_model(&t, s);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(sl_safetensors_write(path, t.d, t.n, NULL, 0));
    free_tensors(&t);
    snprintf(config, sizeof config,
             "{\"projection_dim\": %d, \"text_config\": {\"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_hidden_layers\": %d, "
             "\"max_position_embeddings\": %d, \"vocab_size\": %d, \"eos_token_id\": %d, "
             "\"hidden_act\": \"%s\"}, \"vision_config\": {\"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_hidden_layers\": %d, "
             "\"image_size\": %d, \"patch_size\": %d, \"hidden_act\": \"%s\"}}",
             s->dim, s->wt, s->mt, s->ht, s->lt, s->ctx, s->vocab, s->eos, s->actt, s->wv, s->mv,
             s->hv, s->lv, s->img, s->patch, s->actv);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(config, f);
    fclose(f);
    return dir;
}

/* ------------------------------------------------------------------------ */
/* Inputs                                                                   */
/* ------------------------------------------------------------------------ */

static float *random_pixels(size_t n, int S) {
    size_t count = n * 3 * (size_t)S * S;
    float *p = malloc(sizeof(float) * count);
    if (!p) exit(2);
    for (size_t i = 0; i < count; i++) p[i] = 1.5f * urand();
    return p;
}

/* n sequences whose pooled position is spread over 0 .. ctx-1 (sequence i
 * pools at (i * 37 + 5) % ctx; with first-eos pooling every 7th has no end
 * token and pools at ctx - 1). */
static int32_t *random_tokens(const sl_clip_config *c, size_t n) {
    const int ctx = c->context_length, V = c->vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * n * (size_t)ctx);
    if (!ids) exit(2);
    for (size_t s = 0; s < n; s++) {
        int32_t *row = ids + s * (size_t)ctx;
        const int q = (int)((s * 37 + 5) % (size_t)ctx);
        if (c->pool_argmax) {
            /* a unique largest id at q */
            for (int t = 0; t < ctx; t++) row[t] = (int32_t)((urand() + 1.0f) * 0.5f * (V - 2));
            row[q] = V - 1;
        } else {
            /* ids other than the end token; the end token at q (and maybe
               again later: the first one counts) */
            for (int t = 0; t < ctx; t++) {
                int32_t id = (int32_t)((urand() + 1.0f) * 0.5f * (V - 1));
                row[t] = id == c->eos_token_id ? id - 1 : id;
            }
            if (s % 7 != 6) {
                row[q] = c->eos_token_id;
                if (q + 3 < ctx) row[q + 3] = c->eos_token_id;
            }
        }
    }
    return ids;
}

/* ------------------------------------------------------------------------ */
/* Comparison                                                               */
/* ------------------------------------------------------------------------ */

/* max |a - ref| / max |ref| (NaN or Inf anywhere: +inf). */
static double rel_err(const float *a, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)ref[i]);
        if (d > md) md = d;
        if (fabs((double)ref[i]) > mr) mr = fabs((double)ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

static void expect_close(const char *what, const spec *s, int bf16, size_t n, const float *gpu,
                         const float *cpu, size_t count) {
    const double tol = bf16 ? TOL_BF16 : TOL_F32;
    double e = rel_err(gpu, cpu, count);
    printf("  %-11s %-5s n=%-5zu %-28s rel err %.3e (tol %.0e)\n", s->name, bf16 ? "bf16" : "f32",
           n, what, e, tol);
    CHECK_MSG(e <= tol, "%s %s n=%zu %s: relative error %g > %g", s->name, bf16 ? "bf16" : "f32", n,
              what, e, tol);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) exit(2);
    return p;
}

/* Images: CPU vs GPU for each count in ns (pooled only; patches VALUE;
 * patches FINAL). */
static void check_images(sl_encoder *enc, const spec *s, int bf16, const size_t *ns, int nn) {
    const sl_clip_config *c = &enc->cfg;
    const size_t D = (size_t)c->embed_dim, P = (size_t)sl_clip_num_patches(c);
    for (int mode = 0; mode < 3; mode++) {
        /* mode 0: pooled only; 1: VALUE patches; 2: FINAL patches */
        sl_clip_config cfg = *c;
        cfg.patch_tokens = mode == 2 ? SL_PATCH_TOKENS_FINAL : SL_PATCH_TOKENS_VALUE;
        clip_gpu *g = NULL;
        sl_status st = clip_gpu_open(0, bf16, &cfg, &enc->w, NULL, enc->path, &g);
        CHECK_MSG(st == SL_OK, "%s: clip_gpu_open: %s", s->name, sl_last_error());
        if (st) return;
        const sl_patch_tokens keep = enc->patch_tokens;
        enc->patch_tokens = (sl_patch_tokens)cfg.patch_tokens;
        for (int k = 0; k < nn; k++) {
            const size_t n = ns[k];
            float *pix = random_pixels(n, c->image_size);
            float *oc = falloc(n * D), *og = falloc(n * D);
            float *pc = mode ? falloc(n * P * D) : NULL, *pg = mode ? falloc(n * P * D) : NULL;
            CHECK_OK(sl_encoder_encode_images(enc, pix, n, oc, pc, 0));
            CHECK_OK(clip_gpu_forward_images(g, pix, (int)n, og, pg));
            const char *tag = mode == 0   ? "images pooled-only"
                              : mode == 1 ? "images (value patches)"
                                          : "images (final patches)";
            expect_close(tag, s, bf16, n, og, oc, n * D);
            if (mode)
                expect_close(mode == 1 ? "  value patches" : "  final patches", s, bf16, n, pg, pc,
                             n * P * D);
            free(pix);
            free(oc);
            free(og);
            free(pc);
            free(pg);
        }
        enc->patch_tokens = keep;
        clip_gpu_free(g);
    }
}

/* Texts: CPU vs GPU for each count in ns, pooled only and with tokens_out. */
static void check_texts(sl_encoder *enc, const spec *s, int bf16, const size_t *ns, int nn) {
    const sl_clip_config *c = &enc->cfg;
    const size_t D = (size_t)c->embed_dim, ctx = (size_t)c->context_length;
    clip_gpu *g = NULL;
    sl_status st = clip_gpu_open(0, bf16, c, &enc->w, NULL, enc->path, &g);
    CHECK_MSG(st == SL_OK, "%s: clip_gpu_open: %s", s->name, sl_last_error());
    if (st) return;
    for (int k = 0; k < nn; k++) {
        const size_t n = ns[k];
        int32_t *ids = random_tokens(c, n);
        float *oc = falloc(n * D), *og = falloc(n * D);
        float *tc = falloc(n * ctx * D), *tg = falloc(n * ctx * D);
        CHECK_OK(sl_encoder_encode_tokens(enc, ids, n, oc, NULL, 0));
        CHECK_OK(clip_gpu_forward_texts(g, ids, (int)n, og, NULL));
        expect_close("texts pooled-only", s, bf16, n, og, oc, n * D);
        CHECK_OK(sl_encoder_encode_tokens(enc, ids, n, oc, tc, 0));
        CHECK_OK(clip_gpu_forward_texts(g, ids, (int)n, og, tg));
        expect_close("texts (with tokens)", s, bf16, n, og, oc, n * D);
        expect_close("  every token", s, bf16, n, tg, tc, n * ctx * D);
        free(ids);
        free(oc);
        free(og);
        free(tc);
        free(tg);
    }
    /* A bad id: SL_ERR_INVALID, nothing computed; n = 0: nothing at all. */
    int32_t *bad = random_tokens(c, 2);
    bad[ctx + 3] = c->vocab_size;
    float o[2 * 128];
    if (D <= 128) {
        CHECK_ERR(clip_gpu_forward_texts(g, bad, 2, o, NULL), SL_ERR_INVALID, "row 1, position 3");
        CHECK_OK(clip_gpu_forward_texts(g, bad, 0, o, NULL));
        CHECK_OK(clip_gpu_forward_images(g, NULL, 0, o, NULL));
    }
    free(bad);
    clip_gpu_free(g);
}

/* Region pass (region_size = image_size + 2 patches): patch tokens of an
 * encoder on the CPU vs one on the GPU (sl_encoder_encode_images, so the
 * resize and clip_gpu_forward_regions), VALUE and FINAL, for counts in ns. */
static void check_regions(const char *dir, const spec *s, int bf16, const size_t *ns, int nn) {
    for (int mode = 0; mode < 2; mode++) {
        sl_encoder_opts o;
        memset(&o, 0, sizeof o);
        o.region_size = s->img + 2 * s->patch;
        o.patch_tokens = mode ? SL_PATCH_TOKENS_FINAL : SL_PATCH_TOKENS_VALUE;
        sl_encoder *ec = NULL, *eg = NULL;
        CHECK_OK(sl_encoder_open(dir, &o, &ec));
        o.device = bf16 ? "cuda" : "cuda-f32";
        CHECK_OK(sl_encoder_open(dir, &o, &eg));
        if (ec && eg) {
            CHECK(sl_encoder_cuda_device(eg) == 0);
            const int gr = (s->img + 2 * s->patch) / s->patch;
            CHECK(sl_encoder_num_patches(eg) == gr * gr);
            const size_t D = (size_t)ec->cfg.embed_dim, Pr = (size_t)gr * (size_t)gr;
            for (int k = 0; k < nn; k++) {
                const size_t n = ns[k];
                float *pix = random_pixels(n, s->img);
                float *oc = falloc(n * D), *og = falloc(n * D);
                float *pc = falloc(n * Pr * D), *pg = falloc(n * Pr * D);
                CHECK_OK(sl_encoder_encode_images(ec, pix, n, oc, pc, 0));
                CHECK_OK(sl_encoder_encode_images(eg, pix, n, og, pg, 0));
                expect_close("region pooled", s, bf16, n, og, oc, n * D);
                expect_close(mode ? "  region final patches" : "  region value patches", s, bf16, n,
                             pg, pc, n * Pr * D);
                free(pix);
                free(oc);
                free(og);
                free(pc);
                free(pg);
            }
        }
        sl_encoder_free(ec);
        sl_encoder_free(eg);
    }
}

static void run_spec(const char *tmp, const spec *s) {
    const char *dir = make_model(tmp, s);
    sl_encoder *enc = NULL;
    sl_status st = sl_encoder_open(dir, NULL, &enc); /* the CPU reference, all cores */
    CHECK_MSG(st == SL_OK, "%s: open: %s", s->name, sl_last_error());
    if (st) return;
    const sl_clip_config *c = &enc->cfg;
    const size_t T = (size_t)sl_clip_num_patches(c) + 1;
    /* the GPU's image chunk (clip_gpu.h's bounds) */
    size_t chunk = CLIP_GPU_MAX_IMAGES;
    if (CLIP_GPU_MAX_ROWS / T < chunk) chunk = CLIP_GPU_MAX_ROWS / T;
    const size_t img_ns[] = {1, 5, chunk + 3};
    /* texts: more than CLIP_GPU_MAX_SEQS sequences, and (tokens_out) more
       than CLIP_GPU_MAX_ROWS rows */
    const size_t txt_ns[] = {1, 9, CLIP_GPU_MAX_SEQS + 76};
    /* the region pass's device chunk (region side image_size + 2 patches) */
    const size_t gr = (size_t)(s->img / s->patch + 2), Tr = gr * gr + 1;
    size_t rchunk = CLIP_GPU_MAX_IMAGES;
    if (CLIP_GPU_MAX_ROWS / Tr < rchunk) rchunk = CLIP_GPU_MAX_ROWS / Tr;
    const size_t reg_ns[] = {1, 5, rchunk + 2};
    for (int bf16 = 0; bf16 < 2; bf16++) {
        check_images(enc, s, bf16, img_ns, 3);
        check_texts(enc, s, bf16, txt_ns, 3);
        check_regions(dir, s, bf16, reg_ns, 3);
    }
    sl_encoder_free(enc);
}

int main(void) {
    const char *tmp = sl_test_tmpdir();
    const int count = sl_cuda_device_count();
    /* A missing device: SL_ERR_UNSUPPORTED naming it (any build). */
    {
        const char *dir = make_model(tmp, &SPECS[0]);
        sl_encoder *enc = NULL;
        CHECK_OK(sl_encoder_open(dir, NULL, &enc));
        if (enc) {
            clip_gpu *g = (clip_gpu *)(uintptr_t)1; /* must come back NULL */
            char want[32];
            snprintf(want, sizeof want, "cuda:%d", count);
            CHECK_ERR(clip_gpu_open(count, 1, &enc->cfg, &enc->w, NULL, enc->path, &g),
                      SL_ERR_UNSUPPORTED, want);
            CHECK(g == NULL);
            CHECK_ERR(clip_gpu_open(-1, 1, &enc->cfg, &enc->w, NULL, enc->path, &g),
                      SL_ERR_UNSUPPORTED, "cuda:-1");
            clip_gpu_free(NULL);
        }
        sl_encoder_free(enc);
    }
    int rc;
    if (count == 0) {
        if (sl_test_failures) {
            rc = sl_test_finish("test_cuda_encoder");
        } else {
            printf("skip: no CUDA device (the missing-device error was checked)\n");
            rc = SL_TEST_SKIP;
        }
    } else {
        for (size_t i = 0; i < sizeof SPECS / sizeof *SPECS; i++) run_spec(tmp, &SPECS[i]);
        rc = sl_test_finish("test_cuda_encoder");
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return rc;
}
