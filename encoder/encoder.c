/*
 * encoder/encoder.c - the public encoder API (sightline/encoder.h): find
 * the files of a model, read its config, bind its weights, and run the
 * towers in chunks of inputs sized for the workspace.
 */
#include "encoder/clip_gpu.h"
#include "encoder/clip_internal.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Token rows per forward chunk: large enough for full-speed sgemms, small
 * enough to bound the workspace (about 4096 x (3W + M) floats). */
#define CHUNK_ROWS 4096

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* ------------------------------------------------------------------------ */
/* Open / free                                                              */
/* ------------------------------------------------------------------------ */

void sl_encoder_free(sl_encoder *enc) {
    if (!enc) return;
    clip_gpu_free(enc->gpu);
    free(enc->region_pos);
    free(enc->region_pix);
    clip_weights_free(&enc->w);
    sl_safetensors_free(enc->st);
    sl_tokenizer_free(enc->tok);
    free(enc->ws.mem);
    free(enc->path);
    free(enc);
}

/* The config: HF config.json (HF layout), shapes (OpenCLIP layout), then a
 * config.json / preprocessor_config.json beside the weights. */
static sl_status read_config(sl_encoder *enc, const char *dir) {
    sl_status st = SL_OK;
    char *cfg_path = sl_path_join(dir, "config.json");
    char *pre_path = sl_path_join(dir, "preprocessor_config.json");
    if (!cfg_path || !pre_path) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    clip_config_defaults(&enc->cfg);
    if (enc->layout == CLIP_LAYOUT_HF) {
        if (is_file(cfg_path)) st = clip_config_read_hf(cfg_path, &enc->cfg);
    } else {
        st = clip_infer_openclip(enc->st, enc->path, &enc->cfg);
        if (!st) st = clip_config_validate(&enc->cfg, enc->path);
        if (!st && is_file(cfg_path)) st = clip_config_read_openclip_override(cfg_path, &enc->cfg);
    }
    if (!st && is_file(pre_path)) st = clip_config_read_preprocessor(pre_path, &enc->cfg);
    if (!st)
        st = clip_config_validate(&enc->cfg, enc->layout == CLIP_LAYOUT_HF ? cfg_path : enc->path);
done:
    free(cfg_path);
    free(pre_path);
    return st;
}

sl_status sl_encoder_open(const char *path, const sl_encoder_opts *opts, sl_encoder **out) {
    if (!path || !out) return sl_set_error(SL_ERR_INVALID, "sl_encoder_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return sl_set_error(SL_ERR_NOT_FOUND, "%s: no such model", path);
    sl_encoder *enc = calloc(1, sizeof *enc);
    char *dir = NULL;
    if (!enc) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    sl_status st = SL_OK;
    if (S_ISDIR(sb.st_mode)) {
        dir = strdup(path);
        enc->path = sl_path_join(path, "model.safetensors");
        if (enc->path && !is_file(enc->path)) {
            char *alt = sl_path_join(path, "open_clip_model.safetensors");
            if (alt && is_file(alt)) {
                free(enc->path);
                enc->path = alt;
            } else {
                free(alt);
                st = sl_set_error(SL_ERR_NOT_FOUND, "%s: missing model.safetensors", path);
                goto fail;
            }
        }
    } else {
        enc->path = strdup(path);
        dir = dir_of(path);
    }
    if (!dir || !enc->path) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = sl_safetensors_open(enc->path, &enc->st))) goto fail;
    if ((st = clip_detect_layout(enc->st, enc->path, &enc->layout))) goto fail;
    if ((st = read_config(enc, dir))) goto fail;
    if ((st = clip_weights_load(enc->st, enc->path, enc->layout, &enc->cfg, &enc->w))) goto fail;
    /* Tokenizer: optional, but a broken one is an error. */
    char *vocab = sl_path_join(dir, "vocab.json"), *merges = sl_path_join(dir, "merges.txt");
    int has_tok = vocab && merges && is_file(vocab) && is_file(merges);
    free(vocab);
    free(merges);
    if (has_tok && (st = sl_tokenizer_open_dir(dir, &enc->tok))) goto fail;
    enc->patch_tokens = opts && opts->patch_tokens ? opts->patch_tokens
                        : enc->cfg.patch_tokens    ? (sl_patch_tokens)enc->cfg.patch_tokens
                                                   : SL_PATCH_TOKENS_VALUE;
    if (enc->patch_tokens != SL_PATCH_TOKENS_VALUE && enc->patch_tokens != SL_PATCH_TOKENS_FINAL) {
        st = sl_set_error(SL_ERR_INVALID, "sl_encoder_open: unknown patch_tokens %d",
                          (int)enc->patch_tokens);
        goto fail;
    }
    /* The patch-token pass's input side, and its position table. */
    {
        const sl_clip_config *c = &enc->cfg;
        int rs = opts && opts->region_size ? opts->region_size
                 : c->region_size          ? c->region_size
                                           : c->image_size;
        if (rs < c->patch_size || rs > 4096 || rs % c->patch_size) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: region size %d must be a multiple of the patch size %d (at "
                              "most 4096)",
                              enc->path, rs, c->patch_size);
            goto fail;
        }
        enc->region_size = rs;
        if (rs != c->image_size) {
            const size_t W = (size_t)c->vision.width;
            const int g0 = c->image_size / c->patch_size, g1 = rs / c->patch_size;
            enc->region_pos = malloc(((size_t)g1 * g1 + 1) * W * sizeof(float));
            if (!enc->region_pos) {
                st = sl_set_error(SL_ERR_NOMEM, "out of memory");
                goto fail;
            }
            memcpy(enc->region_pos, enc->w.v_pos, W * sizeof(float)); /* class token */
            clip_resize_bicubic(enc->w.v_pos + W, g0, enc->region_pos + W, g1, (int)W, 0);
        }
    }
    int cuda = -1, bf16 = 1;
    if ((st = sl_device_parse(opts ? opts->device : NULL, &cuda, &bf16))) goto fail;
    if (cuda >= 0) {
        sl_clip_config gc = enc->cfg; /* with the resolved patch tokens and region size */
        gc.patch_tokens = enc->patch_tokens;
        gc.region_size = enc->region_size;
        if ((st = clip_gpu_open(cuda, bf16, &gc, &enc->w, enc->region_pos, enc->path, &enc->gpu)))
            goto fail;
        enc->cuda_device = cuda;
    }
    if (opts && opts->threads > 0) {
        omp_set_num_threads(opts->threads);
        openblas_set_num_threads(opts->threads);
    }
    free(dir);
    *out = enc;
    return SL_OK;
fail:
    free(dir);
    sl_encoder_free(enc);
    return st;
}

sl_status sl_patch_tokens_parse(const char *name, sl_patch_tokens *out) {
    if (name && !strcmp(name, "value"))
        *out = SL_PATCH_TOKENS_VALUE;
    else if (name && !strcmp(name, "final"))
        *out = SL_PATCH_TOKENS_FINAL;
    else
        return sl_set_error(SL_ERR_INVALID, "unknown patch tokens '%s' (expected value or final)",
                            name ? name : "(null)");
    return SL_OK;
}

sl_status sl_device_parse(const char *name, int *cuda, int *bf16) {
    *cuda = -1;
    *bf16 = 1;
    if (!name || !strcmp(name, "cpu")) return SL_OK;
    const char *rest = NULL;
    if (!strncmp(name, "cuda-f32", 8)) {
        rest = name + 8;
        *bf16 = 0;
    } else if (!strncmp(name, "cuda", 4)) {
        rest = name + 4;
    }
    if (rest && *rest == '\0') {
        *cuda = 0;
        return SL_OK;
    }
    if (rest && *rest == ':' && rest[1] >= '0' && rest[1] <= '9') {
        char *end;
        long v = strtol(rest + 1, &end, 10);
        if (*end == '\0' && v >= 0 && v < 1024) {
            *cuda = (int)v;
            return SL_OK;
        }
    }
    *cuda = -1;
    return sl_set_error(SL_ERR_INVALID,
                        "unknown device '%s' (expected cpu, cuda, cuda:N, cuda-f32 or cuda-f32:N)",
                        name);
}

const sl_clip_config *sl_encoder_config(const sl_encoder *enc) {
    return enc ? &enc->cfg : NULL;
}

const sl_tokenizer *sl_encoder_tokenizer(const sl_encoder *enc) {
    return enc ? enc->tok : NULL;
}

int sl_encoder_patch_grid(const sl_encoder *enc) {
    return enc ? enc->region_size / enc->cfg.patch_size : 0;
}

int sl_encoder_num_patches(const sl_encoder *enc) {
    int g = sl_encoder_patch_grid(enc);
    return g * g;
}

int sl_encoder_cuda_device(const sl_encoder *enc) {
    return enc && enc->gpu ? enc->cuda_device : -1;
}

sl_patch_tokens sl_encoder_patch_tokens(const sl_encoder *enc) {
    return enc ? enc->patch_tokens : SL_PATCH_TOKENS_VALUE;
}

size_t sl_encoder_workspace_bytes(const sl_encoder *enc) {
    return enc ? enc->ws.peak : 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

/* The patch tokens of n images pixels [n, 3, S, S] from the input resized
 * to the region size (the resize on the CPU; the forward on the GPU when the
 * encoder has one). */
static sl_status region_pass(sl_encoder *enc, const float *pixels, size_t n, float *patches) {
    const sl_clip_config *c = &enc->cfg;
    const size_t S = (size_t)c->image_size, D = (size_t)c->embed_dim, Sr = (size_t)enc->region_size;
    const size_t gr = Sr / (size_t)c->patch_size, Pr = gr * gr;
    if (n == 0) return SL_OK;
    size_t chunk = CHUNK_ROWS / (Pr + 1);
    if (chunk < 1) chunk = 1;
    if (enc->gpu) { /* one device chunk per call (clip_gpu.h's bounds) */
        chunk = CLIP_GPU_MAX_ROWS / (Pr + 1);
        if (chunk > CLIP_GPU_MAX_IMAGES) chunk = CLIP_GPU_MAX_IMAGES;
        if (chunk > CLIP_GPU_MAX_PIXEL_BYTES / (3 * Sr * Sr * sizeof(float)))
            chunk = CLIP_GPU_MAX_PIXEL_BYTES / (3 * Sr * Sr * sizeof(float));
        if (chunk < 1) chunk = 1;
    }
    if (chunk > n) chunk = n;
    const size_t need = chunk * 3 * Sr * Sr;
    if (need > enc->region_pix_floats) {
        float *np = realloc(enc->region_pix, need * sizeof(float));
        if (!np) return sl_set_error(SL_ERR_NOMEM, "out of memory for the region pass");
        enc->region_pix = np;
        enc->region_pix_floats = need;
    }
    float *pooled = NULL; /* computed, not wanted (CPU only) */
    if (!enc->gpu && !(pooled = malloc(chunk * D * sizeof(float))))
        return sl_set_error(SL_ERR_NOMEM, "out of memory for the region pass");
    sl_status st = SL_OK;
    for (size_t i = 0; i < n && !st; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t b = 0; b < m; b++)
            clip_resize_bicubic(pixels + (i + b) * 3 * S * S, (int)S,
                                enc->region_pix + b * 3 * Sr * Sr, (int)Sr, 3, 1);
        st = enc->gpu
                 ? clip_gpu_forward_regions(enc->gpu, enc->region_pix, (int)m, patches + i * Pr * D)
                 : clip_forward_images(enc, enc->region_pix, (int)m, (int)Sr, enc->region_pos,
                                       pooled, patches + i * Pr * D);
    }
    free(pooled);
    return st;
}

sl_status sl_encoder_encode_images(sl_encoder *enc, const float *pixels, size_t n, float *out,
                                   float *patches, int normalize) {
    if (!enc || (n && (!pixels || !out)))
        return sl_set_error(SL_ERR_INVALID, "sl_encoder_encode_images: NULL argument");
    const sl_clip_config *c = &enc->cfg;
    const size_t S = (size_t)c->image_size, D = (size_t)c->embed_dim;
    const size_t P = (size_t)sl_clip_num_patches(c), T = P + 1;
    /* patches from a second pass at the region size (else from this one) */
    const int second = patches && enc->region_pos;
    size_t chunk = CHUNK_ROWS / T;
    if (chunk < 1) chunk = 1;
    if (enc->gpu) chunk = CLIP_GPU_MAX_IMAGES; /* it chunks further itself */
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        const float *px = pixels + i * 3 * S * S;
        float *pp = patches && !second ? patches + i * P * D : NULL;
        sl_status st =
            enc->gpu ? clip_gpu_forward_images(enc->gpu, px, (int)m, out + i * D, pp)
                     : clip_forward_images(enc, px, (int)m, (int)S, enc->w.v_pos, out + i * D, pp);
        if (st) return st;
    }
    if (second) {
        sl_status st = region_pass(enc, pixels, n, patches);
        if (st) return st;
    }
    if (normalize) sl_cpu_l2_normalize_rows(out, n, D);
    return SL_OK;
}

sl_status sl_encoder_encode_tokens(sl_encoder *enc, const int32_t *tokens, size_t n, float *out,
                                   float *tokens_out, int normalize) {
    if (!enc || (n && (!tokens || !out)))
        return sl_set_error(SL_ERR_INVALID, "sl_encoder_encode_tokens: NULL argument");
    const sl_clip_config *c = &enc->cfg;
    const size_t ctx = (size_t)c->context_length, D = (size_t)c->embed_dim;
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < ctx; t++) {
            int32_t id = tokens[i * ctx + t];
            if (id < 0 || id >= c->vocab_size)
                return sl_set_error(SL_ERR_INVALID,
                                    "token id %d at row %zu, position %zu is outside the "
                                    "vocabulary [0, %d)",
                                    (int)id, i, t, c->vocab_size);
        }
    /* Chunks of about CHUNK_ROWS rows (each sequence counts up to its pooled
     * position, or whole with tokens_out). */
    size_t i = 0;
    while (enc->gpu && i < n) { /* in slices of CLIP_GPU_MAX_SEQS; it chunks by rows itself */
        size_t m = n - i < CLIP_GPU_MAX_SEQS ? n - i : CLIP_GPU_MAX_SEQS;
        sl_status st = clip_gpu_forward_texts(enc->gpu, tokens + i * ctx, (int)m, out + i * D,
                                              tokens_out ? tokens_out + i * ctx * D : NULL);
        if (st) return st;
        i += m;
    }
    while (i < n) {
        size_t m = 0, rows = 0;
        while (i + m < n) {
            size_t L = tokens_out ? ctx : (size_t)clip_pool_position(c, tokens + (i + m) * ctx) + 1;
            if (m > 0 && rows + L > CHUNK_ROWS) break;
            rows += L;
            m++;
        }
        sl_status st = clip_forward_texts(enc, tokens + i * ctx, (int)m, out + i * D,
                                          tokens_out ? tokens_out + i * ctx * D : NULL);
        if (st) return st;
        i += m;
    }
    if (normalize) sl_cpu_l2_normalize_rows(out, n, D);
    return SL_OK;
}

sl_status sl_encoder_encode_texts(sl_encoder *enc, const char *const *texts, size_t n, float *out,
                                  int normalize) {
    if (!enc || (n && (!texts || !out)))
        return sl_set_error(SL_ERR_INVALID, "sl_encoder_encode_texts: NULL argument");
    if (!enc->tok)
        return sl_set_error(SL_ERR_INVALID,
                            "%s: the model has no tokenizer (vocab.json and merges.txt); give "
                            "token ids instead",
                            enc->path);
    const size_t ctx = (size_t)enc->cfg.context_length;
    size_t count;
    if (sl_mul_size(n ? n : 1, ctx * sizeof(int32_t), &count))
        return sl_set_error(SL_ERR_LIMIT, "too many texts (%zu)", n);
    int32_t *ids = malloc(count);
    if (!ids) return sl_set_error(SL_ERR_NOMEM, "out of memory tokenizing %zu texts", n);
    sl_status st = SL_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (!texts[i]) {
            st = sl_set_error(SL_ERR_INVALID, "text %zu is NULL", i);
            break;
        }
        st = sl_tokenizer_encode(enc->tok, texts[i], (int)ctx, 0, ids + i * ctx, NULL);
        if (st) sl_wrap_error(st, "text %zu: ", i);
    }
    if (!st) st = sl_encoder_encode_tokens(enc, ids, n, out, NULL, normalize);
    free(ids);
    return st;
}
