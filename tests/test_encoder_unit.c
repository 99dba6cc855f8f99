/*
 * tests/test_encoder_unit.c - the encoder's load errors and input checks on
 * tiny checkpoints written here with sl_safetensors_write: missing tensor,
 * wrong shape, unsupported dtype, bad config.json, token ids out of range,
 * no tokenizer; and that a valid HF directory and an OpenCLIP file open and
 * give finite, normalised embeddings.
 */
#include "sightline/encoder.h"
#include "sightline/safetensors.h"
#include "sightline/tokenizer.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tiny architecture: vision W 8, 1 layer, 2 heads, mlp 16, image 8, patch 4;
 * text W 8, 1 layer, ctx 5, vocab 10; embed 4. */
enum { WV = 8, MV = 16, IMG = 8, PATCH = 4, TV = 5, WT = 8, MT = 16, CTX = 5, VOCAB = 10, D = 4 };

#define MAX_T 64

typedef struct tensors {
    sl_tensor_desc d[MAX_T];
    float *bufs[MAX_T];
    char names[MAX_T][128];
    size_t n;
} tensors;

static int g_vocab = VOCAB; /* text vocabulary of hf_model() */
static unsigned rng = 12345;
static float frand(void) {
    rng = rng * 1103515245u + 12345u;
    return ((float)((rng >> 8) & 0xffff) / 65536.0f - 0.5f) * 0.5f;
}

static void add(tensors *t, const char *name, float base, int ndim, int64_t d0, int64_t d1,
                int64_t d2, int64_t d3) {
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
    for (size_t k = 0; k < count; k++) t->bufs[i][k] = base + frand();
    t->d[i].data = t->bufs[i];
}

static void free_tensors(tensors *t) {
    for (size_t i = 0; i < t->n; i++) free(t->bufs[i]);
    t->n = 0;
}

static sl_tensor_desc *find(tensors *t, const char *name) {
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->names[i], name)) return &t->d[i];
    return NULL;
}

static void hf_block(tensors *t, const char *pre, int W, int M) {
    char n[128];
#define B(suffix, base, nd, a, b)                                                                  \
    snprintf(n, sizeof n, "%s.%s", pre, suffix);                                                   \
    add(t, n, base, nd, a, b, 0, 0)
    B("layer_norm1.weight", 1, 1, W, 0);
    B("layer_norm1.bias", 0, 1, W, 0);
    B("self_attn.q_proj.weight", 0, 2, W, W);
    B("self_attn.q_proj.bias", 0, 1, W, 0);
    B("self_attn.k_proj.weight", 0, 2, W, W);
    B("self_attn.k_proj.bias", 0, 1, W, 0);
    B("self_attn.v_proj.weight", 0, 2, W, W);
    B("self_attn.v_proj.bias", 0, 1, W, 0);
    B("self_attn.out_proj.weight", 0, 2, W, W);
    B("self_attn.out_proj.bias", 0, 1, W, 0);
    B("layer_norm2.weight", 1, 1, W, 0);
    B("layer_norm2.bias", 0, 1, W, 0);
    B("mlp.fc1.weight", 0, 2, M, W);
    B("mlp.fc1.bias", 0, 1, M, 0);
    B("mlp.fc2.weight", 0, 2, W, M);
    B("mlp.fc2.bias", 0, 1, W, 0);
#undef B
}

static void hf_model(tensors *t) {
    add(t, "vision_model.embeddings.patch_embedding.weight", 0, 4, WV, 3, PATCH, PATCH);
    add(t, "vision_model.embeddings.class_embedding", 0, 1, WV, 0, 0, 0);
    add(t, "vision_model.embeddings.position_embedding.weight", 0, 2, TV, WV, 0, 0);
    add(t, "vision_model.pre_layrnorm.weight", 1, 1, WV, 0, 0, 0);
    add(t, "vision_model.pre_layrnorm.bias", 0, 1, WV, 0, 0, 0);
    hf_block(t, "vision_model.encoder.layers.0", WV, MV);
    add(t, "vision_model.post_layernorm.weight", 1, 1, WV, 0, 0, 0);
    add(t, "vision_model.post_layernorm.bias", 0, 1, WV, 0, 0, 0);
    add(t, "visual_projection.weight", 0, 2, D, WV, 0, 0);
    add(t, "text_model.embeddings.token_embedding.weight", 0, 2, g_vocab, WT, 0, 0);
    add(t, "text_model.embeddings.position_embedding.weight", 0, 2, CTX, WT, 0, 0);
    hf_block(t, "text_model.encoder.layers.0", WT, MT);
    add(t, "text_model.final_layer_norm.weight", 1, 1, WT, 0, 0, 0);
    add(t, "text_model.final_layer_norm.bias", 0, 1, WT, 0, 0, 0);
    add(t, "text_projection.weight", 0, 2, D, WT, 0, 0);
    add(t, "logit_scale", 2.6592f, 0, 0, 0, 0, 0);
}

static const char *CONFIG =
    "{\"projection_dim\": 4, \"text_config\": {\"hidden_size\": 8, \"intermediate_size\": 16, "
    "\"num_attention_heads\": 2, \"num_hidden_layers\": 1, \"max_position_embeddings\": 5, "
    "\"vocab_size\": 10, \"eos_token_id\": 2}, \"vision_config\": {\"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_attention_heads\": 2, \"num_hidden_layers\": 1, "
    "\"image_size\": 8, \"patch_size\": 4, \"hidden_act\": \"gelu\"}}";

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* A model dir `name` under tmp with the tensors and config text. */
static const char *make_dir(const char *tmp, const char *name, tensors *t, const char *config) {
    static char dir[1024];
    char path[1100];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    if (system(path) != 0) exit(2);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(sl_safetensors_write(path, t->d, t->n, NULL, 0));
    if (config) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        write_text(path, config);
    }
    return dir;
}

static void test_valid_hf(const char *tmp) {
    tensors t = {0};
    hf_model(&t);
    const char *dir = make_dir(tmp, "valid", &t, CONFIG);
    sl_encoder *enc = NULL;
    CHECK_OK(sl_encoder_open(dir, NULL, &enc));
    if (!enc) goto done;
    const sl_clip_config *c = sl_encoder_config(enc);
    CHECK(c->vision.width == WV && c->vision.heads == 2 && c->vision.act == SL_ACT_GELU);
    CHECK(c->text.act == SL_ACT_QUICK_GELU && c->pool_argmax == 1 && c->context_length == CTX);
    CHECK(sl_clip_num_patches(c) == 4 && c->embed_dim == D);
    CHECK_NEAR(c->logit_scale, t.bufs[t.n - 1][0], 1e-6);
    CHECK_NEAR(c->image_mean[0], 0.48145466, 1e-7);
    CHECK(sl_encoder_tokenizer(enc) == NULL);
    float pixels[2 * 3 * IMG * IMG], out[2 * D], patches[2 * 4 * D];
    for (size_t i = 0; i < sizeof pixels / sizeof *pixels; i++) pixels[i] = frand();
    CHECK_OK(sl_encoder_encode_images(enc, pixels, 2, out, patches, 1));
    for (int i = 0; i < 2; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += out[i * D + j] * out[i * D + j];
        CHECK_NEAR(s, 1.0, 1e-5);
    }
    for (size_t i = 0; i < sizeof patches / sizeof *patches; i++) CHECK(isfinite(patches[i]));
    int32_t ids[2 * CTX] = {1, 4, 9, 0, 0, 3, 2, 9, 0, 0};
    CHECK_OK(sl_encoder_encode_tokens(enc, ids, 2, out, NULL, 0));
    for (int i = 0; i < 2 * D; i++) CHECK(isfinite(out[i]));
    /* Out of range ids: named by row and position, nothing crashes. */
    ids[CTX + 2] = VOCAB;
    CHECK_ERR(sl_encoder_encode_tokens(enc, ids, 2, out, NULL, 0), SL_ERR_INVALID,
              "row 1, position 2");
    ids[CTX + 2] = -1;
    CHECK_ERR(sl_encoder_encode_tokens(enc, ids, 2, out, NULL, 0), SL_ERR_INVALID, "-1");
    /* No tokenizer: texts are refused. */
    const char *texts[1] = {"a photo"};
    CHECK_ERR(sl_encoder_encode_texts(enc, texts, 1, out, 1), SL_ERR_INVALID, "tokenizer");
    CHECK(sl_encoder_workspace_bytes(enc) > 0);
    /* Patch tokens: VALUE by default; config.json "patch_tokens": "final"
     * picks FINAL (other numbers), the options override the config. */
    CHECK(sl_encoder_patch_tokens(enc) == SL_PATCH_TOKENS_VALUE);
    CHECK(sl_encoder_cuda_device(enc) == -1 && sl_encoder_cuda_device(NULL) == -1);
    CHECK(sl_encoder_patch_grid(enc) == 2 && sl_encoder_num_patches(enc) == 4);
    {
        sl_encoder *er = NULL;
        sl_encoder_opts ro = {.region_size = 12};
        CHECK_OK(sl_encoder_open(dir, &ro, &er));
        if (er) {
            CHECK(sl_encoder_patch_grid(er) == 3 && sl_encoder_num_patches(er) == 9);
            float o3[2 * D], p3[2 * 9 * D], o2[2 * D];
            CHECK_OK(sl_encoder_encode_images(er, pixels, 2, o3, p3, 1));
            CHECK_OK(sl_encoder_encode_images(er, pixels, 0, o3, p3, 1)); /* nothing to do */
            CHECK_OK(sl_encoder_encode_images(enc, pixels, 2, o2, NULL, 1));
            double d = 0;
            for (int i = 0; i < 2 * D; i++) d = fmax(d, fabs(o3[i] - o2[i]));
            CHECK_MSG(d < 1e-6, "the global embedding does not depend on the region size (%g)", d);
        }
        sl_encoder_free(er);
        ro.region_size = 10; /* not a multiple of the patch side */
        CHECK_ERR(sl_encoder_open(dir, &ro, &er), SL_ERR_INVALID, "region size 10");
    }
    {
        sl_encoder *ef = NULL, *ev = NULL;
        char cfg2[1024];
        snprintf(cfg2, sizeof cfg2, "%.*s, \"patch_tokens\": \"final\"}", (int)strlen(CONFIG) - 1,
                 CONFIG);
        const char *fdir = make_dir(tmp, "final", &t, cfg2);
        CHECK_OK(sl_encoder_open(fdir, NULL, &ef));
        sl_encoder_opts vo = {.patch_tokens = SL_PATCH_TOKENS_VALUE};
        CHECK_OK(sl_encoder_open(fdir, &vo, &ev));
        if (ef && ev) {
            CHECK(sl_encoder_patch_tokens(ef) == SL_PATCH_TOKENS_FINAL);
            CHECK(sl_encoder_patch_tokens(ev) == SL_PATCH_TOKENS_VALUE);
            float pf[2 * 4 * D], o2[2 * D];
            CHECK_OK(sl_encoder_encode_images(ef, pixels, 2, o2, pf, 1));
            double same_v = 0, diff_f = 0;
            for (int i = 0; i < 2 * D; i++) diff_f = fmax(diff_f, fabs(o2[i] - out[i]));
            CHECK_OK(sl_encoder_encode_images(ev, pixels, 2, o2, pf, 1));
            for (int i = 0; i < 2 * 4 * D; i++) same_v = fmax(same_v, fabs(pf[i] - patches[i]));
            CHECK_MSG(same_v < 1e-6, "value patches differ across opens: %g", same_v);
            CHECK_OK(sl_encoder_encode_images(ef, pixels, 2, o2, pf, 1));
            double d = 0;
            for (int i = 0; i < 2 * 4 * D; i++) d = fmax(d, fabs(pf[i] - patches[i]));
            CHECK_MSG(d > 1e-3, "final and value patches should differ (%g)", d);
        }
        sl_encoder_free(ef);
        sl_encoder_free(ev);
        sl_encoder_opts bad = {.patch_tokens = (sl_patch_tokens)7};
        CHECK_ERR(sl_encoder_open(dir, &bad, &ef), SL_ERR_INVALID, "patch_tokens");
    }
    /* Devices: names, and a CUDA device that is not there. */
    {
        int cuda, bf16;
        CHECK_OK(sl_device_parse(NULL, &cuda, &bf16));
        CHECK(cuda == -1);
        CHECK_OK(sl_device_parse("cpu", &cuda, &bf16));
        CHECK(cuda == -1);
        CHECK_OK(sl_device_parse("cuda", &cuda, &bf16));
        CHECK(cuda == 0 && bf16 == 1);
        CHECK_OK(sl_device_parse("cuda:3", &cuda, &bf16));
        CHECK(cuda == 3 && bf16 == 1);
        CHECK_OK(sl_device_parse("cuda-f32:1", &cuda, &bf16));
        CHECK(cuda == 1 && bf16 == 0);
        sl_patch_tokens pk;
        CHECK_OK(sl_patch_tokens_parse("value", &pk));
        CHECK(pk == SL_PATCH_TOKENS_VALUE);
        CHECK_OK(sl_patch_tokens_parse("final", &pk));
        CHECK(pk == SL_PATCH_TOKENS_FINAL);
        CHECK_ERR(sl_patch_tokens_parse("mean", &pk), SL_ERR_INVALID, "mean");
        const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "cuda0", ""};
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
            CHECK_ERR(sl_device_parse(bad[i], &cuda, &bf16), SL_ERR_INVALID, "unknown device");
        sl_encoder *eg = NULL;
        sl_encoder_opts go = {.device = "cuda:99"};
        CHECK_ERR(sl_encoder_open(dir, &go, &eg), SL_ERR_UNSUPPORTED, "cuda:99");
        CHECK(eg == NULL);
        go.device = "tpu";
        CHECK_ERR(sl_encoder_open(dir, &go, &eg), SL_ERR_INVALID, "tpu");
    }
    /* The same model file opened directly (config.json beside it). */
    sl_encoder_free(enc);
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    enc = NULL;
    CHECK_OK(sl_encoder_open(path, NULL, &enc));
    CHECK(enc && sl_encoder_config(enc)->vision.act == SL_ACT_GELU);
    /* A preprocessor_config.json sets mean/std. */
    sl_encoder_free(enc);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    write_text(path, "{\"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.25, 0.25, 0.25]}");
    enc = NULL;
    CHECK_OK(sl_encoder_open(dir, NULL, &enc));
    CHECK(enc && sl_encoder_config(enc)->image_std[2] == 0.25f);
done:
    sl_encoder_free(enc);
    free_tensors(&t);
}

static void expect_open_error(const char *dir, sl_status want, const char *needle,
                              const char *needle2) {
    sl_encoder *enc = NULL;
    CHECK_ERR(sl_encoder_open(dir, NULL, &enc), want, needle);
    if (needle2)
        CHECK_MSG(strstr(sl_last_error(), needle2), "'%s' lacks '%s'", sl_last_error(), needle2);
    CHECK(enc == NULL);
    sl_encoder_free(enc);
}

static void test_load_errors(const char *tmp) {
    tensors t = {0};
    /* Missing tensor. */
    hf_model(&t);
    sl_tensor_desc *d = find(&t, "text_model.final_layer_norm.bias");
    *d = t.d[--t.n]; /* drop it (the last one takes its slot) */
    float *keep = t.bufs[t.n];
    const char *dir = make_dir(tmp, "missing", &t, CONFIG);
    t.bufs[t.n++] = keep;
    expect_open_error(dir, SL_ERR_NOT_FOUND, "missing tensor 'text_model.final_layer_norm.bias'",
                      "missing/model.safetensors");
    free_tensors(&t);

    /* Wrong shape. */
    hf_model(&t);
    d = find(&t, "vision_model.encoder.layers.0.mlp.fc1.weight");
    d->shape[1] = 4; /* same byte count would differ: keep data big enough */
    dir = make_dir(tmp, "shape", &t, CONFIG);
    expect_open_error(dir, SL_ERR_FORMAT,
                      "'vision_model.encoder.layers.0.mlp.fc1.weight': expected shape [16, 8], "
                      "found [16, 4]",
                      "shape/model.safetensors");
    free_tensors(&t);

    /* Unsupported dtype (I32 bytes in place of F32). */
    hf_model(&t);
    d = find(&t, "text_model.embeddings.position_embedding.weight");
    d->dtype = SL_DT_I32;
    dir = make_dir(tmp, "dtype", &t, CONFIG);
    expect_open_error(dir, SL_ERR_UNSUPPORTED, "unsupported dtype I32",
                      "'text_model.embeddings.position_embedding.weight'");
    free_tensors(&t);

    /* Bad config.json: not JSON, a bad value, an unknown activation, heads
     * not dividing the width; and a config disagreeing with the tensors. */
    hf_model(&t);
    dir = make_dir(tmp, "badjson", &t, "{\"projection_dim\": 4,,}");
    expect_open_error(dir, SL_ERR_FORMAT, "badjson/config.json", "line 1");
    dir = make_dir(tmp, "badvalue", &t, "{\"projection_dim\": \"four\"}");
    expect_open_error(dir, SL_ERR_FORMAT, "projection_dim", "config.json");
    dir = make_dir(tmp, "badact", &t,
                   "{\"projection_dim\": 4, \"vision_config\": {\"hidden_act\": \"swish\"}}");
    expect_open_error(dir, SL_ERR_UNSUPPORTED, "vision_config.hidden_act", "swish");
    dir = make_dir(tmp, "badheads", &t,
                   "{\"projection_dim\": 4, \"vision_config\": {\"hidden_size\": 8, "
                   "\"num_attention_heads\": 3}}");
    expect_open_error(dir, SL_ERR_FORMAT, "heads 3 do not divide width 8", "config.json");
    dir =
        make_dir(tmp, "badpatchtokens", &t, "{\"projection_dim\": 4, \"patch_tokens\": \"mean\"}");
    expect_open_error(dir, SL_ERR_FORMAT, "patch_tokens", "badpatchtokens/config.json");
    {
        char cfg3[1024];
        snprintf(cfg3, sizeof cfg3, "%.*s, \"region_size\": 10}", (int)strlen(CONFIG) - 1, CONFIG);
        dir = make_dir(tmp, "badregion", &t, cfg3);
        expect_open_error(dir, SL_ERR_FORMAT, "region_size 10", "badregion/config.json");
    }
    dir = make_dir(tmp, "defaults", &t, "{}"); /* ViT-B/32 defaults vs tiny tensors */
    expect_open_error(dir, SL_ERR_FORMAT, "expected shape [768, 3, 32, 32], found [8, 3, 4, 4]",
                      "defaults/model.safetensors");
    free_tensors(&t);

    /* Not a CLIP checkpoint; no such path; a directory without weights. */
    add(&t, "foo.weight", 0, 1, 4, 0, 0, 0);
    dir = make_dir(tmp, "notclip", &t, NULL);
    expect_open_error(dir, SL_ERR_FORMAT, "not a CLIP checkpoint", "notclip");
    free_tensors(&t);
    expect_open_error("/nonexistent/model", SL_ERR_NOT_FOUND, "/nonexistent/model", NULL);
    char empty[600], cmd[700];
    snprintf(empty, sizeof empty, "%s/empty", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", empty);
    if (system(cmd) != 0) exit(2);
    expect_open_error(empty, SL_ERR_NOT_FOUND, "model.safetensors", NULL);
}

static void oc_block(tensors *t, const char *pre, int W, int M) {
    char n[128];
#define B(suffix, base, nd, a, b)                                                                  \
    snprintf(n, sizeof n, "%s.%s", pre, suffix);                                                   \
    add(t, n, base, nd, a, b, 0, 0)
    B("ln_1.weight", 1, 1, W, 0);
    B("ln_1.bias", 0, 1, W, 0);
    B("attn.in_proj_weight", 0, 2, 3 * W, W);
    B("attn.in_proj_bias", 0, 1, 3 * W, 0);
    B("attn.out_proj.weight", 0, 2, W, W);
    B("attn.out_proj.bias", 0, 1, W, 0);
    B("ln_2.weight", 1, 1, W, 0);
    B("ln_2.bias", 0, 1, W, 0);
    B("mlp.c_fc.weight", 0, 2, M, W);
    B("mlp.c_fc.bias", 0, 1, M, 0);
    B("mlp.c_proj.weight", 0, 2, W, M);
    B("mlp.c_proj.bias", 0, 1, W, 0);
#undef B
}

static void test_openclip(const char *tmp) {
    tensors t = {0};
    add(&t, "visual.conv1.weight", 0, 4, WV, 3, PATCH, PATCH);
    add(&t, "visual.class_embedding", 0, 1, WV, 0, 0, 0);
    add(&t, "visual.positional_embedding", 0, 2, TV, WV, 0, 0);
    add(&t, "visual.ln_pre.weight", 1, 1, WV, 0, 0, 0);
    add(&t, "visual.ln_pre.bias", 0, 1, WV, 0, 0, 0);
    oc_block(&t, "visual.transformer.resblocks.0", WV, MV);
    oc_block(&t, "visual.transformer.resblocks.1", WV, MV);
    add(&t, "visual.ln_post.weight", 1, 1, WV, 0, 0, 0);
    add(&t, "visual.ln_post.bias", 0, 1, WV, 0, 0, 0);
    add(&t, "visual.proj", 0, 2, WV, D, 0, 0);
    add(&t, "token_embedding.weight", 0, 2, VOCAB, WT, 0, 0);
    add(&t, "positional_embedding", 0, 2, CTX, WT, 0, 0);
    oc_block(&t, "transformer.resblocks.0", WT, MT);
    add(&t, "ln_final.weight", 1, 1, WT, 0, 0, 0);
    add(&t, "ln_final.bias", 0, 1, WT, 0, 0, 0);
    add(&t, "text_projection", 0, 2, WT, D, 0, 0);
    const char *dir = make_dir(tmp, "openclip", &t, NULL);
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    sl_encoder *enc = NULL;
    CHECK_OK(sl_encoder_open(path, NULL, &enc));
    if (enc) {
        const sl_clip_config *c = sl_encoder_config(enc);
        CHECK(c->vision.layers == 2 && c->text.layers == 1 && c->vision.heads == 1);
        CHECK(c->image_size == IMG && c->patch_size == PATCH && c->context_length == CTX);
        CHECK(c->vocab_size == VOCAB && c->embed_dim == D && c->pool_argmax == 1);
        CHECK(c->vision.act == SL_ACT_QUICK_GELU);
        float pixels[3 * IMG * IMG], out[D];
        for (size_t i = 0; i < sizeof pixels / sizeof *pixels; i++) pixels[i] = frand();
        CHECK_OK(sl_encoder_encode_images(enc, pixels, 1, out, NULL, 0));
        for (int i = 0; i < D; i++) CHECK(isfinite(out[i]));
    }
    sl_encoder_free(enc);
    /* A config.json beside it sets the heads (width 8 < 64) and the act. */
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"model_cfg\": {\"quick_gelu\": false, \"vision_cfg\": {\"head_width\": 4}, "
                     "\"text_cfg\": {\"heads\": 2}}}");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    enc = NULL;
    CHECK_OK(sl_encoder_open(path, NULL, &enc));
    if (enc) {
        const sl_clip_config *c = sl_encoder_config(enc);
        CHECK(c->vision.heads == 2 && c->text.heads == 2 && c->text.act == SL_ACT_GELU);
    }
    sl_encoder_free(enc);
    /* Wrong shape in a later block names that block's tensor. */
    sl_tensor_desc *d = find(&t, "visual.transformer.resblocks.1.attn.in_proj_weight");
    d->shape[0] = 2 * WV;
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    dir = make_dir(tmp, "openclip_bad", &t, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    expect_open_error(path, SL_ERR_FORMAT,
                      "'visual.transformer.resblocks.1.attn.in_proj_weight': expected shape [24, "
                      "8], found [16, 8]",
                      "openclip_bad/model.safetensors");
    free_tensors(&t);
}

/* A model directory with a tokenizer: texts are tokenized and embedded the
 * same as their token ids. */
static void test_tokenizer(const char *tmp) {
    char path[700], dir[600];
    snprintf(path, sizeof path, "%s/captions.txt", tmp);
    write_text(path, "a photo of a cat\na photo of a dog\ntwo cats on a mat\na dog on a mat\n");
    snprintf(dir, sizeof dir, "%s/tok", tmp);
    CHECK_OK(sl_tokenizer_train(path, 530, 1, dir));
    g_vocab = 530;
    tensors t = {0};
    hf_model(&t);
    char config[1024];
    snprintf(config, sizeof config,
             "{\"projection_dim\": 4, \"text_config\": {\"hidden_size\": 8, "
             "\"intermediate_size\": 16, \"num_attention_heads\": 2, \"num_hidden_layers\": 1, "
             "\"max_position_embeddings\": 5, \"vocab_size\": 530, \"eos_token_id\": 529}, "
             "\"vision_config\": {\"hidden_size\": 8, \"intermediate_size\": 16, "
             "\"num_attention_heads\": 2, \"num_hidden_layers\": 1, \"image_size\": 8, "
             "\"patch_size\": 4}}");
    make_dir(tmp, "tok", &t, config);
    g_vocab = VOCAB;
    sl_encoder *enc = NULL;
    CHECK_OK(sl_encoder_open(dir, NULL, &enc));
    if (enc) {
        const sl_tokenizer *tok = sl_encoder_tokenizer(enc);
        CHECK(tok != NULL && sl_tokenizer_eot(tok) == 529);
        const char *texts[2] = {"a photo of a cat", "two dogs on a mat, a long caption"};
        float a[2 * D], b[2 * D];
        CHECK_OK(sl_encoder_encode_texts(enc, texts, 2, a, 1));
        int32_t ids[2 * CTX];
        for (int i = 0; i < 2 && tok; i++)
            CHECK_OK(sl_tokenizer_encode(tok, texts[i], CTX, 0, ids + i * CTX, NULL));
        CHECK_OK(sl_encoder_encode_tokens(enc, ids, 2, b, NULL, 1));
        for (int i = 0; i < 2 * D; i++) CHECK(isfinite(a[i]) && a[i] == b[i]);
    }
    sl_encoder_free(enc);
    free_tensors(&t);
}

int main(void) {
    const char *tmp = sl_test_tmpdir();
    test_valid_hf(tmp);
    test_load_errors(tmp);
    test_openclip(tmp);
    test_tokenizer(tmp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return sl_test_finish("test_encoder_unit");
}
