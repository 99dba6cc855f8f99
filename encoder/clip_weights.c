/*
 * encoder/clip_weights.c - bind a CLIP checkpoint's tensors (Hugging Face
 * or OpenCLIP/OpenAI names) to clip_weights: every expected tensor must be
 * present with the expected shape and a float dtype. F32 tensors are used in
 * place from the mapped file; F16/BF16 (and F32 not 4-byte aligned) are
 * converted once into one allocation, in request order (so HF q/k/v land
 * contiguous and fuse into one matmul).
 */
#include "encoder/clip_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The binder: requests first, one conversion pass at the end               */
/* ------------------------------------------------------------------------ */

typedef struct bind_req {
    const sl_tensor_info *t;
    const float **slot;
} bind_req;

typedef struct binder {
    const sl_safetensors *st;
    const char *path;
    bind_req *reqs;
    size_t n, cap;
    sl_status err; /* first failure; later requests are ignored */
} binder;

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, cap - used, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* Request tensor `name` of shape dims[0..ndim) into *slot. */
static void want(binder *b, const float **slot, const char *name, int ndim, const int64_t *dims) {
    if (b->err) return;
    const sl_tensor_info *t = sl_safetensors_find(b->st, name);
    if (!t) {
        b->err = sl_set_error(SL_ERR_NOT_FOUND, "%s: missing tensor '%s'", b->path, name);
        return;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == dims[i];
    if (!same) {
        char want_s[128], got_s[128];
        shape_str(want_s, sizeof want_s, ndim, dims);
        shape_str(got_s, sizeof got_s, t->ndim, t->shape);
        b->err = sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': expected shape %s, found %s",
                              b->path, name, want_s, got_s);
        return;
    }
    if (t->dtype != SL_DT_F32 && t->dtype != SL_DT_F16 && t->dtype != SL_DT_BF16) {
        b->err = sl_set_error(SL_ERR_UNSUPPORTED,
                              "%s: tensor '%s': unsupported dtype %s (F32, F16 or BF16 expected)",
                              b->path, name, sl_dtype_name(t->dtype));
        return;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        bind_req *r = realloc(b->reqs, cap * sizeof *r);
        if (!r) {
            b->err = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", b->path);
            return;
        }
        b->reqs = r;
        b->cap = cap;
    }
    b->reqs[b->n++] = (bind_req){t, slot};
}

static void want1(binder *b, const float **slot, const char *name, int64_t d0) {
    want(b, slot, name, 1, (int64_t[]){d0});
}
static void want2(binder *b, const float **slot, const char *name, int64_t d0, int64_t d1) {
    want(b, slot, name, 2, (int64_t[]){d0, d1});
}

static int needs_copy(const sl_tensor_info *t) {
    return t->dtype != SL_DT_F32 || ((uintptr_t)t->data % sizeof(float)) != 0;
}

/* Resolve every request: in place or converted into one buffer. */
static sl_status binder_finish(binder *b, clip_weights *w) {
    if (b->err) return b->err;
    size_t total = 0;
    for (size_t i = 0; i < b->n; i++)
        if (needs_copy(b->reqs[i].t) && sl_add_size(total, b->reqs[i].t->count, &total))
            return sl_set_error(SL_ERR_LIMIT, "%s: tensor sizes overflow", b->path);
    if (total) {
        size_t bytes;
        if (sl_mul_size(total, sizeof(float), &bytes))
            return sl_set_error(SL_ERR_LIMIT, "%s: tensor sizes overflow", b->path);
        w->conv = malloc(bytes);
        if (!w->conv)
            return sl_set_error(SL_ERR_NOMEM, "%s: out of memory converting %zu weights to F32",
                                b->path, total);
        w->conv_count = total;
    }
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        const sl_tensor_info *t = b->reqs[i].t;
        if (!needs_copy(t)) {
            *b->reqs[i].slot = (const float *)t->data;
            continue;
        }
        sl_status st = sl_tensor_to_f32(t, w->conv + off);
        if (st) return sl_wrap_error(st, "%s: tensor '%s': ", b->path, t->name);
        *b->reqs[i].slot = w->conv + off;
        off += t->count;
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Layout detection and OpenCLIP shape inference                            */
/* ------------------------------------------------------------------------ */

sl_status clip_detect_layout(const sl_safetensors *st, const char *path, clip_layout *out) {
    if (sl_safetensors_find(st, "vision_model.embeddings.patch_embedding.weight") ||
        sl_safetensors_find(st, "text_model.embeddings.token_embedding.weight")) {
        *out = CLIP_LAYOUT_HF;
        return SL_OK;
    }
    if (sl_safetensors_find(st, "visual.conv1.weight") ||
        sl_safetensors_find(st, "token_embedding.weight")) {
        *out = CLIP_LAYOUT_OPENCLIP;
        return SL_OK;
    }
    return sl_set_error(SL_ERR_FORMAT,
                        "%s: not a CLIP checkpoint: neither Hugging Face tensors "
                        "('vision_model.embeddings.patch_embedding.weight') nor OpenCLIP ones "
                        "('visual.conv1.weight')",
                        path);
}

/* Tensor `name` must exist with `ndim` dims each in [1, max]. */
static sl_status shape_of(const sl_safetensors *st, const char *path, const char *name, int ndim,
                          int64_t max, int64_t *dims) {
    const sl_tensor_info *t = sl_safetensors_find(st, name);
    if (!t) return sl_set_error(SL_ERR_NOT_FOUND, "%s: missing tensor '%s'", path, name);
    if (t->ndim != ndim) {
        char got_s[128];
        shape_str(got_s, sizeof got_s, t->ndim, t->shape);
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': expected %d dimensions, found %s",
                            path, name, ndim, got_s);
    }
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] < 1 || t->shape[i] > max)
            return sl_set_error(SL_ERR_LIMIT, "%s: tensor '%s': extent %lld outside [1, %lld]",
                                path, name, (long long)t->shape[i], (long long)max);
        dims[i] = t->shape[i];
    }
    return SL_OK;
}

static int count_blocks(const sl_safetensors *st, const char *prefix) {
    char name[256];
    int n = 0;
    while (n < 257) {
        snprintf(name, sizeof name, "%sresblocks.%d.ln_1.weight", prefix, n);
        if (!sl_safetensors_find(st, name)) break;
        n++;
    }
    return n;
}

static int default_heads(int width) {
    return width >= 64 && width % 64 == 0 ? width / 64 : 1;
}

sl_status clip_infer_openclip(const sl_safetensors *st, const char *path, sl_clip_config *cfg) {
    int64_t conv[4], vpos[2], vproj[2], vfc[2], tok[2], tpos[2], tproj[2], tfc[2];
    sl_status s;
    if ((s = shape_of(st, path, "visual.conv1.weight", 4, 16384, conv)) ||
        (s = shape_of(st, path, "visual.positional_embedding", 2, 16384 * 16, vpos)) ||
        (s = shape_of(st, path, "visual.proj", 2, 65536, vproj)) ||
        (s = shape_of(st, path, "visual.transformer.resblocks.0.mlp.c_fc.weight", 2, 262144,
                      vfc)) ||
        (s = shape_of(st, path, "token_embedding.weight", 2, 10000000, tok)) ||
        (s = shape_of(st, path, "positional_embedding", 2, 16384, tpos)) ||
        (s = shape_of(st, path, "text_projection", 2, 65536, tproj)) ||
        (s = shape_of(st, path, "transformer.resblocks.0.mlp.c_fc.weight", 2, 262144, tfc)))
        return s;
    if (conv[1] != 3 || conv[2] != conv[3])
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor 'visual.conv1.weight': expected [width, 3, p, p], found "
                            "[%lld, %lld, %lld, %lld]",
                            path, (long long)conv[0], (long long)conv[1], (long long)conv[2],
                            (long long)conv[3]);
    int64_t g = 0;
    while ((g + 1) * (g + 1) <= vpos[0] - 1) g++;
    if (g < 1 || g * g != vpos[0] - 1 || g * conv[2] > 4096)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor 'visual.positional_embedding': %lld rows is not a square "
                            "grid of patches plus the class token",
                            path, (long long)vpos[0]);
    cfg->vision.width = (int)conv[0];
    cfg->patch_size = (int)conv[2];
    cfg->image_size = (int)(g * conv[2]);
    cfg->vision.layers = count_blocks(st, "visual.transformer.");
    cfg->vision.mlp_width = (int)vfc[0];
    cfg->vision.heads = default_heads(cfg->vision.width);
    cfg->embed_dim = (int)vproj[1];
    cfg->text.width = (int)tok[1];
    cfg->vocab_size = (int)tok[0];
    cfg->context_length = (int)tpos[0];
    cfg->text.layers = count_blocks(st, "transformer.");
    cfg->text.mlp_width = (int)tfc[0];
    cfg->text.heads = default_heads(cfg->text.width);
    cfg->vision.act = cfg->text.act = SL_ACT_QUICK_GELU;
    cfg->vision.ln_eps = cfg->text.ln_eps = 1e-5f;
    cfg->pool_argmax = 1;
    cfg->eos_token_id = cfg->vocab_size - 1;
    if (tproj[1] != vproj[1])
        return sl_set_error(
            SL_ERR_FORMAT, "%s: tensor 'text_projection': expected [%d, %lld], found [%lld, %lld]",
            path, cfg->text.width, (long long)vproj[1], (long long)tproj[0], (long long)tproj[1]);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Binding                                                                  */
/* ------------------------------------------------------------------------ */

static void want_hf_block(binder *b, clip_block_w *k, const char *pre, int W, int M) {
    char n[320];
#define HF(field, suffix, ...)                                                                     \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", pre, suffix);                                               \
        want(b, &k->field, n, __VA_ARGS__);                                                        \
    } while (0)
    HF(ln1_w, "layer_norm1.weight", 1, (int64_t[]){W});
    HF(ln1_b, "layer_norm1.bias", 1, (int64_t[]){W});
    HF(q_w, "self_attn.q_proj.weight", 2, (int64_t[]){W, W});
    HF(k_w, "self_attn.k_proj.weight", 2, (int64_t[]){W, W});
    HF(v_w, "self_attn.v_proj.weight", 2, (int64_t[]){W, W});
    HF(q_b, "self_attn.q_proj.bias", 1, (int64_t[]){W});
    HF(k_b, "self_attn.k_proj.bias", 1, (int64_t[]){W});
    HF(v_b, "self_attn.v_proj.bias", 1, (int64_t[]){W});
    HF(o_w, "self_attn.out_proj.weight", 2, (int64_t[]){W, W});
    HF(o_b, "self_attn.out_proj.bias", 1, (int64_t[]){W});
    HF(ln2_w, "layer_norm2.weight", 1, (int64_t[]){W});
    HF(ln2_b, "layer_norm2.bias", 1, (int64_t[]){W});
    HF(fc1_w, "mlp.fc1.weight", 2, (int64_t[]){M, W});
    HF(fc1_b, "mlp.fc1.bias", 1, (int64_t[]){M});
    HF(fc2_w, "mlp.fc2.weight", 2, (int64_t[]){W, M});
    HF(fc2_b, "mlp.fc2.bias", 1, (int64_t[]){W});
#undef HF
}

static void want_oc_block(binder *b, clip_block_w *k, const char *pre, int W, int M) {
    char n[320];
#define OC(field, suffix, ...)                                                                     \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", pre, suffix);                                               \
        want(b, &k->field, n, __VA_ARGS__);                                                        \
    } while (0)
    OC(ln1_w, "ln_1.weight", 1, (int64_t[]){W});
    OC(ln1_b, "ln_1.bias", 1, (int64_t[]){W});
    OC(q_w, "attn.in_proj_weight", 2, (int64_t[]){3 * (int64_t)W, W});
    OC(q_b, "attn.in_proj_bias", 1, (int64_t[]){3 * (int64_t)W});
    OC(o_w, "attn.out_proj.weight", 2, (int64_t[]){W, W});
    OC(o_b, "attn.out_proj.bias", 1, (int64_t[]){W});
    OC(ln2_w, "ln_2.weight", 1, (int64_t[]){W});
    OC(ln2_b, "ln_2.bias", 1, (int64_t[]){W});
    OC(fc1_w, "mlp.c_fc.weight", 2, (int64_t[]){M, W});
    OC(fc1_b, "mlp.c_fc.bias", 1, (int64_t[]){M});
    OC(fc2_w, "mlp.c_proj.weight", 2, (int64_t[]){W, M});
    OC(fc2_b, "mlp.c_proj.bias", 1, (int64_t[]){W});
#undef OC
}

/* The fused in_proj [3W, W] seen as q, k, v. */
static void split_in_proj(clip_block_w *k, int W) {
    size_t ww = (size_t)W * W;
    k->k_w = k->q_w + ww;
    k->v_w = k->q_w + 2 * ww;
    k->k_b = k->q_b + W;
    k->v_b = k->q_b + 2 * (size_t)W;
}

/* logit_scale: optional scalar (shape [] or [1]). */
static sl_status read_logit_scale(const sl_safetensors *st, const char *path, float *out) {
    const sl_tensor_info *t = sl_safetensors_find(st, "logit_scale");
    if (!t) return SL_OK;
    if (t->count != 1 || t->ndim > 1 ||
        (t->dtype != SL_DT_F32 && t->dtype != SL_DT_F16 && t->dtype != SL_DT_BF16))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor 'logit_scale': expected one F32/F16/BF16 value", path);
    float v;
    sl_status s = sl_tensor_to_f32(t, &v);
    if (s) return s;
    *out = v;
    return SL_OK;
}

sl_status clip_weights_load(const sl_safetensors *st, const char *path, clip_layout layout,
                            sl_clip_config *cfg, clip_weights *w) {
    memset(w, 0, sizeof *w);
    const int Wv = cfg->vision.width, Wt = cfg->text.width, D = cfg->embed_dim;
    const int p = cfg->patch_size, T = sl_clip_num_patches(cfg) + 1;
    const int Lv = cfg->vision.layers, Lt = cfg->text.layers;
    w->blocks_mem = calloc((size_t)Lv + (size_t)Lt, sizeof *w->blocks_mem);
    if (!w->blocks_mem) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    w->v_blocks = w->blocks_mem;
    w->t_blocks = w->blocks_mem + Lv;
    binder b = {.st = st, .path = path};
    char pre[256];
    if (layout == CLIP_LAYOUT_HF) {
        want(&b, &w->patch_w, "vision_model.embeddings.patch_embedding.weight", 4,
             (int64_t[]){Wv, 3, p, p});
        want1(&b, &w->cls, "vision_model.embeddings.class_embedding", Wv);
        want2(&b, &w->v_pos, "vision_model.embeddings.position_embedding.weight", T, Wv);
        want1(&b, &w->pre_w, "vision_model.pre_layrnorm.weight", Wv);
        want1(&b, &w->pre_b, "vision_model.pre_layrnorm.bias", Wv);
        for (int i = 0; i < Lv; i++) {
            snprintf(pre, sizeof pre, "vision_model.encoder.layers.%d", i);
            want_hf_block(&b, &w->v_blocks[i], pre, Wv, cfg->vision.mlp_width);
        }
        want1(&b, &w->post_w, "vision_model.post_layernorm.weight", Wv);
        want1(&b, &w->post_b, "vision_model.post_layernorm.bias", Wv);
        want2(&b, &w->v_proj, "visual_projection.weight", D, Wv);
        want2(&b, &w->tok, "text_model.embeddings.token_embedding.weight", cfg->vocab_size, Wt);
        want2(&b, &w->t_pos, "text_model.embeddings.position_embedding.weight", cfg->context_length,
              Wt);
        for (int i = 0; i < Lt; i++) {
            snprintf(pre, sizeof pre, "text_model.encoder.layers.%d", i);
            want_hf_block(&b, &w->t_blocks[i], pre, Wt, cfg->text.mlp_width);
        }
        want1(&b, &w->final_w, "text_model.final_layer_norm.weight", Wt);
        want1(&b, &w->final_b, "text_model.final_layer_norm.bias", Wt);
        want2(&b, &w->t_proj, "text_projection.weight", D, Wt);
    } else {
        want(&b, &w->patch_w, "visual.conv1.weight", 4, (int64_t[]){Wv, 3, p, p});
        want1(&b, &w->cls, "visual.class_embedding", Wv);
        want2(&b, &w->v_pos, "visual.positional_embedding", T, Wv);
        want1(&b, &w->pre_w, "visual.ln_pre.weight", Wv);
        want1(&b, &w->pre_b, "visual.ln_pre.bias", Wv);
        for (int i = 0; i < Lv; i++) {
            snprintf(pre, sizeof pre, "visual.transformer.resblocks.%d", i);
            want_oc_block(&b, &w->v_blocks[i], pre, Wv, cfg->vision.mlp_width);
        }
        want1(&b, &w->post_w, "visual.ln_post.weight", Wv);
        want1(&b, &w->post_b, "visual.ln_post.bias", Wv);
        want2(&b, &w->v_proj, "visual.proj", Wv, D);
        w->v_proj_kn = 1;
        want2(&b, &w->tok, "token_embedding.weight", cfg->vocab_size, Wt);
        want2(&b, &w->t_pos, "positional_embedding", cfg->context_length, Wt);
        for (int i = 0; i < Lt; i++) {
            snprintf(pre, sizeof pre, "transformer.resblocks.%d", i);
            want_oc_block(&b, &w->t_blocks[i], pre, Wt, cfg->text.mlp_width);
        }
        want1(&b, &w->final_w, "ln_final.weight", Wt);
        want1(&b, &w->final_b, "ln_final.bias", Wt);
        want2(&b, &w->t_proj, "text_projection", Wt, D);
        w->t_proj_kn = 1;
    }
    sl_status s = binder_finish(&b, w);
    free(b.reqs);
    if (!s) s = read_logit_scale(st, path, &cfg->logit_scale);
    if (s) {
        clip_weights_free(w);
        return s;
    }
    if (layout == CLIP_LAYOUT_OPENCLIP) {
        for (int i = 0; i < Lv; i++) split_in_proj(&w->v_blocks[i], Wv);
        for (int i = 0; i < Lt; i++) split_in_proj(&w->t_blocks[i], Wt);
    }
    return SL_OK;
}

void clip_weights_free(clip_weights *w) {
    if (!w) return;
    free(w->conv);
    free(w->blocks_mem);
    memset(w, 0, sizeof *w);
}
