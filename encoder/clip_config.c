/*
 * encoder/clip_config.c - CLIP architecture: defaults (ViT-B/32), Hugging
 * Face config.json, preprocessor_config.json, OpenCLIP config overrides, and
 * range checks. Every number read from a file is bounded before use.
 */
#include "common/json_file.h"
#include "encoder/clip_internal.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define CONFIG_MAX_BYTES (1u << 20)

/* ------------------------------------------------------------------------ */
/* Defaults and validation                                                  */
/* ------------------------------------------------------------------------ */

void clip_config_defaults(sl_clip_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->vision = (sl_tower_config){768, 12, 12, 3072, SL_ACT_QUICK_GELU, 1e-5f};
    cfg->text = (sl_tower_config){512, 12, 8, 2048, SL_ACT_QUICK_GELU, 1e-5f};
    cfg->image_size = 224;
    cfg->patch_size = 32;
    cfg->context_length = 77;
    cfg->vocab_size = 49408;
    cfg->embed_dim = 512;
    cfg->eos_token_id = 49407;
    cfg->pool_argmax = 0;
    cfg->logit_scale = 2.6592f;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memcpy(cfg->image_mean, mean, sizeof mean);
    memcpy(cfg->image_std, std, sizeof std);
}

int sl_clip_num_patches(const sl_clip_config *cfg) {
    if (!cfg || cfg->patch_size <= 0) return 0;
    int g = cfg->image_size / cfg->patch_size;
    return g * g;
}

static sl_status check_tower(const sl_tower_config *t, const char *src, const char *tower) {
    if (t->width < 1 || t->width > 16384)
        return sl_set_error(SL_ERR_LIMIT, "%s: %s width %d outside [1, 16384]", src, tower,
                            t->width);
    if (t->layers < 1 || t->layers > 256)
        return sl_set_error(SL_ERR_LIMIT, "%s: %s layers %d outside [1, 256]", src, tower,
                            t->layers);
    if (t->heads < 1 || t->heads > t->width || t->width % t->heads)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s heads %d do not divide width %d", src, tower,
                            t->heads, t->width);
    if (t->mlp_width < 1 || t->mlp_width > 262144)
        return sl_set_error(SL_ERR_LIMIT, "%s: %s mlp width %d outside [1, 262144]", src, tower,
                            t->mlp_width);
    if (!(t->ln_eps > 0 && t->ln_eps < 1))
        return sl_set_error(SL_ERR_FORMAT, "%s: %s layer_norm_eps %g outside (0, 1)", src, tower,
                            (double)t->ln_eps);
    return SL_OK;
}

sl_status clip_config_validate(const sl_clip_config *cfg, const char *src) {
    sl_status st = check_tower(&cfg->vision, src, "vision");
    if (st) return st;
    if ((st = check_tower(&cfg->text, src, "text"))) return st;
    if (cfg->patch_size < 1 || cfg->image_size < cfg->patch_size || cfg->image_size > 4096 ||
        cfg->image_size % cfg->patch_size)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: image_size %d must be a multiple of patch_size %d (at most 4096)",
                            src, cfg->image_size, cfg->patch_size);
    if (cfg->region_size && (cfg->region_size < cfg->patch_size || cfg->region_size > 4096 ||
                             cfg->region_size % cfg->patch_size))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: region_size %d must be a multiple of patch_size %d (at most 4096)",
                            src, cfg->region_size, cfg->patch_size);
    if (cfg->context_length < 1 || cfg->context_length > 8192)
        return sl_set_error(SL_ERR_LIMIT, "%s: context length %d outside [1, 8192]", src,
                            cfg->context_length);
    if (cfg->vocab_size < 1 || cfg->vocab_size > 10000000)
        return sl_set_error(SL_ERR_LIMIT, "%s: vocab_size %d outside [1, 10000000]", src,
                            cfg->vocab_size);
    if (cfg->embed_dim < 1 || cfg->embed_dim > 65536)
        return sl_set_error(SL_ERR_LIMIT, "%s: projection dim %d outside [1, 65536]", src,
                            cfg->embed_dim);
    for (int c = 0; c < 3; c++)
        if (!(cfg->image_std[c] > 0) || !isfinite(cfg->image_mean[c]))
            return sl_set_error(SL_ERR_FORMAT, "%s: image_std must be positive, mean finite", src);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON helpers                                                             */
/* ------------------------------------------------------------------------ */

static sl_status load_json(const char *path, json_t **out) {
    json_t *root;
    sl_status st = sl_json_load_file(path, CONFIG_MAX_BYTES, &root);
    if (st) return st;
    if (!json_is_object(root)) {
        json_decref(root);
        return sl_set_error(SL_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = root;
    return SL_OK;
}

/* obj[key] as an int in [lo, hi] into *v when present (else unchanged). */
static sl_status get_int(const json_t *obj, const char *key, int lo, int hi, int *v,
                         const char *path, const char *section) {
    json_t *j = obj ? json_object_get(obj, key) : NULL;
    if (!j || json_is_null(j)) return SL_OK;
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s%s%s: expected an integer in [%d, %d]", path,
                            section, *section ? "." : "", key, lo, hi);
    *v = (int)json_integer_value(j);
    return SL_OK;
}

static sl_status get_float(const json_t *obj, const char *key, float *v, const char *path,
                           const char *section) {
    json_t *j = obj ? json_object_get(obj, key) : NULL;
    if (!j || json_is_null(j)) return SL_OK;
    if (!json_is_number(j) || !isfinite(json_number_value(j)))
        return sl_set_error(SL_ERR_FORMAT, "%s: %s%s%s: expected a number", path, section,
                            *section ? "." : "", key);
    *v = (float)json_number_value(j);
    return SL_OK;
}

static sl_status parse_act(const char *name, sl_activation *out) {
    if (!strcmp(name, "quick_gelu"))
        *out = SL_ACT_QUICK_GELU;
    else if (!strcmp(name, "gelu"))
        *out = SL_ACT_GELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh") ||
             !strcmp(name, "gelu_fast"))
        *out = SL_ACT_GELU_TANH;
    else
        return SL_ERR_UNSUPPORTED;
    return SL_OK;
}

static sl_status get_act(const json_t *obj, sl_activation *act, const char *path,
                         const char *section) {
    json_t *j = obj ? json_object_get(obj, "hidden_act") : NULL;
    if (!j || json_is_null(j)) return SL_OK;
    if (!json_is_string(j))
        return sl_set_error(SL_ERR_FORMAT, "%s: %s.hidden_act: expected a string", path, section);
    if (parse_act(json_string_value(j), act))
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "%s: %s.hidden_act: unsupported activation '%s' (quick_gelu, gelu, "
                            "gelu_new, gelu_pytorch_tanh)",
                            path, section, json_string_value(j));
    return SL_OK;
}

/* A 3-number array (mean/std) into out when present. */
static sl_status get_rgb(const json_t *obj, const char *key, float *out, const char *path) {
    json_t *j = obj ? json_object_get(obj, key) : NULL;
    if (!j || json_is_null(j)) return SL_OK;
    if (!json_is_array(j) || json_array_size(j) != 3)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s: expected an array of 3 numbers", path, key);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(j, i);
        if (!json_is_number(e) || !isfinite(json_number_value(e)))
            return sl_set_error(SL_ERR_FORMAT, "%s: %s[%zu]: expected a number", path, key, i);
        out[i] = (float)json_number_value(e);
    }
    return SL_OK;
}

static const json_t *get_object(const json_t *obj, const char *key, const char *alt) {
    const json_t *j = json_object_get(obj, key);
    if (!j && alt) j = json_object_get(obj, alt);
    return json_is_object(j) ? j : NULL;
}

/* HF text_config / vision_config keys into one tower. */
static sl_status read_hf_tower(const json_t *o, sl_tower_config *t, const char *path,
                               const char *section) {
    sl_status st;
    if ((st = get_int(o, "hidden_size", 1, 16384, &t->width, path, section)) ||
        (st = get_int(o, "intermediate_size", 1, 262144, &t->mlp_width, path, section)) ||
        (st = get_int(o, "num_attention_heads", 1, 16384, &t->heads, path, section)) ||
        (st = get_int(o, "num_hidden_layers", 1, 256, &t->layers, path, section)) ||
        (st = get_act(o, &t->act, path, section)) ||
        (st = get_float(o, "layer_norm_eps", &t->ln_eps, path, section)))
        return st;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Hugging Face                                                             */
/* ------------------------------------------------------------------------ */

sl_status clip_config_read_hf(const char *path, sl_clip_config *cfg) {
    json_t *root = NULL;
    sl_status st = load_json(path, &root);
    if (st) return st;
    const json_t *tc = get_object(root, "text_config", "text_config_dict");
    const json_t *vc = get_object(root, "vision_config", "vision_config_dict");
    float ls = cfg->logit_scale;
    int eos = cfg->eos_token_id;
    int has_eos = tc && json_object_get(tc, "eos_token_id") != NULL;
    if ((st = get_int(root, "projection_dim", 1, 65536, &cfg->embed_dim, path, "")) ||
        (st = get_float(root, "logit_scale_init_value", &ls, path, "")) ||
        (st = read_hf_tower(tc, &cfg->text, path, "text_config")) ||
        (st = read_hf_tower(vc, &cfg->vision, path, "vision_config")) ||
        (st = get_int(tc, "max_position_embeddings", 1, 8192, &cfg->context_length, path,
                      "text_config")) ||
        (st = get_int(tc, "vocab_size", 1, 10000000, &cfg->vocab_size, path, "text_config")) ||
        (st = get_int(tc, "eos_token_id", 0, 10000000, &eos, path, "text_config")) ||
        (st = get_int(vc, "image_size", 1, 4096, &cfg->image_size, path, "vision_config")) ||
        (st = get_int(vc, "patch_size", 1, 4096, &cfg->patch_size, path, "vision_config")))
        goto done;
    if ((st = get_int(root, "region_size", 1, 4096, &cfg->region_size, path, ""))) goto done;
    json_t *pt = json_object_get(root, "patch_tokens");
    if (pt && !json_is_null(pt)) {
        sl_patch_tokens kind;
        if (sl_patch_tokens_parse(json_is_string(pt) ? json_string_value(pt) : "", &kind)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: patch_tokens: expected \"value\" or \"final\"",
                              path);
            goto done;
        }
        cfg->patch_tokens = kind;
    }
    cfg->logit_scale = ls;
    cfg->eos_token_id = eos;
    /* Legacy configs (eos_token_id 2) pool at the largest id, as HF does. */
    cfg->pool_argmax = has_eos && eos == 2;
    st = clip_config_validate(cfg, path);
done:
    json_decref(root);
    return st;
}

sl_status clip_config_read_preprocessor(const char *path, sl_clip_config *cfg) {
    json_t *root = NULL;
    sl_status st = load_json(path, &root);
    if (st) return st;
    float mean[3], std[3];
    memcpy(mean, cfg->image_mean, sizeof mean);
    memcpy(std, cfg->image_std, sizeof std);
    if (!(st = get_rgb(root, "image_mean", mean, path)) &&
        !(st = get_rgb(root, "image_std", std, path))) {
        for (int c = 0; c < 3; c++)
            if (!(std[c] > 0)) {
                st = sl_set_error(SL_ERR_FORMAT, "%s: image_std[%d] must be positive", path, c);
                break;
            }
        if (!st) {
            memcpy(cfg->image_mean, mean, sizeof mean);
            memcpy(cfg->image_std, std, sizeof std);
        }
    }
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------------------ */
/* OpenCLIP                                                                 */
/* ------------------------------------------------------------------------ */

sl_status clip_config_read_openclip_override(const char *path, sl_clip_config *cfg) {
    json_t *root = NULL;
    sl_status st = load_json(path, &root);
    if (st) return st;
    sl_clip_config c = *cfg;
    if (get_object(root, "text_config", NULL) || get_object(root, "vision_config", NULL)) {
        /* A Hugging Face config: heads, activation, eps, eos. */
        const json_t *tc = get_object(root, "text_config", NULL);
        const json_t *vc = get_object(root, "vision_config", NULL);
        int eos = c.eos_token_id;
        if ((st = get_int(tc, "num_attention_heads", 1, 16384, &c.text.heads, path,
                          "text_config")) ||
            (st = get_int(vc, "num_attention_heads", 1, 16384, &c.vision.heads, path,
                          "vision_config")) ||
            (st = get_act(tc, &c.text.act, path, "text_config")) ||
            (st = get_act(vc, &c.vision.act, path, "vision_config")) ||
            (st = get_float(tc, "layer_norm_eps", &c.text.ln_eps, path, "text_config")) ||
            (st = get_float(vc, "layer_norm_eps", &c.vision.ln_eps, path, "vision_config")) ||
            (st = get_int(tc, "eos_token_id", 0, 10000000, &eos, path, "text_config")))
            goto done;
        if (tc && json_object_get(tc, "eos_token_id")) {
            c.eos_token_id = eos;
            c.pool_argmax = eos == 2;
        }
    } else {
        const json_t *m = get_object(root, "model_cfg", NULL);
        if (!m) m = root;
        const json_t *vc = get_object(m, "vision_cfg", NULL);
        const json_t *tc = get_object(m, "text_cfg", NULL);
        int head_width = 0;
        if ((st = get_int(vc, "head_width", 1, 16384, &head_width, path, "vision_cfg"))) goto done;
        if (head_width) {
            if (c.vision.width % head_width) {
                st = sl_set_error(SL_ERR_FORMAT,
                                  "%s: vision_cfg.head_width %d does not divide width %d", path,
                                  head_width, c.vision.width);
                goto done;
            }
            c.vision.heads = c.vision.width / head_width;
        }
        if ((st = get_int(vc, "heads", 1, 16384, &c.vision.heads, path, "vision_cfg")) ||
            (st = get_int(tc, "heads", 1, 16384, &c.text.heads, path, "text_cfg")))
            goto done;
        json_t *qg = json_object_get(m, "quick_gelu");
        if (qg && !json_is_boolean(qg)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: quick_gelu: expected true or false", path);
            goto done;
        }
        if (qg) c.vision.act = c.text.act = json_is_true(qg) ? SL_ACT_QUICK_GELU : SL_ACT_GELU;
        const json_t *pc = get_object(root, "preprocess_cfg", NULL);
        if ((st = get_rgb(pc, "mean", c.image_mean, path)) ||
            (st = get_rgb(pc, "std", c.image_std, path)))
            goto done;
    }
    if ((st = clip_config_validate(&c, path))) goto done;
    *cfg = c;
done:
    json_decref(root);
    return st;
}
