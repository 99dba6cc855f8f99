/*
 * encoder/convert.c - rewrite a Hugging Face CLIP directory with its
 * floating-point tensors in another dtype (F16 for small checkpoints to
 * ship, BF16, or back to F32), and `sightline convert`.
 */
#include "cli/commands.h"
#include "kernels/kernels.h"
#include "sightline/common.h"
#include "sightline/encoder.h"
#include "sightline/safetensors.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Files beside the weights that travel with them. */
static const char *const k_aux[] = {"config.json",
                                    "preprocessor_config.json",
                                    "vocab.json",
                                    "merges.txt",
                                    "tokenizer.json",
                                    "tokenizer_config.json",
                                    "special_tokens_map.json"};

#define SL_CONVERT_MAX_AUX (64u << 20)

static int is_float(sl_dtype d) {
    return d == SL_DT_F32 || d == SL_DT_F16 || d == SL_DT_BF16;
}

/* Round-to-nearest-even float32 -> bfloat16 (NaN kept quiet). */
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static sl_status convert_tensor(const sl_tensor_info *t, sl_dtype to, const char *file,
                                void **out) {
    float *f = malloc(t->count ? t->count * sizeof(float) : 1);
    if (!f) return sl_set_error(SL_ERR_NOMEM, "out of memory (tensor '%s')", t->name);
    sl_status st = sl_tensor_to_f32(t, f);
    if (st) {
        free(f);
        return st;
    }
    if (to == SL_DT_F32) {
        *out = f;
        return SL_OK;
    }
    uint16_t *h = malloc(t->count ? t->count * sizeof(uint16_t) : 1);
    if (!h) {
        free(f);
        return sl_set_error(SL_ERR_NOMEM, "out of memory (tensor '%s')", t->name);
    }
    if (to == SL_DT_F16) {
        for (size_t i = 0; i < t->count; i++)
            if (isfinite(f[i]) && fabsf(f[i]) > 65504.0f) {
                st = sl_set_error(SL_ERR_INVALID,
                                  "%s: tensor '%s': element %zu (%g) is outside the F16 range; "
                                  "use --dtype bf16",
                                  file, t->name, i, (double)f[i]);
                break;
            }
        if (!st) sl_f32_to_f16(f, h, t->count);
    } else {
        for (size_t i = 0; i < t->count; i++) h[i] = f32_to_bf16(f[i]);
    }
    free(f);
    if (st) {
        free(h);
        return st;
    }
    *out = h;
    return SL_OK;
}

sl_status sl_model_convert(const char *in_dir, const char *out_dir, sl_dtype to,
                           size_t *converted) {
    if (!in_dir || !out_dir || !is_float(to))
        return sl_set_error(SL_ERR_INVALID, "convert: F32, F16 or BF16 expected");
    char *in_w = sl_path_join(in_dir, "model.safetensors");
    char *out_w = sl_path_join(out_dir, "model.safetensors");
    char *in_cfg = sl_path_join(in_dir, "config.json");
    char rin[PATH_MAX], rout[PATH_MAX];
    sl_safetensors *st_in = NULL;
    sl_tensor_desc *d = NULL;
    void **bufs = NULL;
    size_t n = 0, nconv = 0;
    sl_status st = SL_OK;
    struct stat sb;
    if (!in_w || !out_w || !in_cfg) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (stat(in_cfg, &sb) != 0 || stat(in_w, &sb) != 0) {
        st = sl_set_error(SL_ERR_NOT_FOUND,
                          "%s: not a Hugging Face model directory (config.json and "
                          "model.safetensors expected)",
                          in_dir);
        goto done;
    }
    if ((st = sl_mkdir_p(out_dir))) goto done;
    if (realpath(in_dir, rin) && realpath(out_dir, rout) && !strcmp(rin, rout)) {
        st = sl_set_error(SL_ERR_INVALID, "convert: --out %s is the input directory", out_dir);
        goto done;
    }
    if ((st = sl_safetensors_open(in_w, &st_in))) goto done;
    n = sl_safetensors_count(st_in);
    d = calloc(n ? n : 1, sizeof *d);
    bufs = calloc(n ? n : 1, sizeof *bufs);
    if (!d || !bufs) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && !st; i++) {
        const sl_tensor_info *t = sl_safetensors_at(st_in, i);
        d[i].name = t->name;
        d[i].ndim = t->ndim;
        memcpy(d[i].shape, t->shape, sizeof t->shape);
        if (is_float(t->dtype) && t->dtype != to) {
            st = convert_tensor(t, to, in_w, &bufs[i]);
            d[i].dtype = to;
            d[i].data = bufs[i];
            nconv++;
        } else {
            d[i].dtype = t->dtype;
            d[i].data = t->data;
        }
    }
    if (st) goto done;
    static const char *const meta[] = {"format", "pt"};
    if ((st = sl_safetensors_write(out_w, d, n, meta, 1))) goto done;
    for (size_t a = 0; a < sizeof k_aux / sizeof *k_aux && !st; a++) {
        char *src = sl_path_join(in_dir, k_aux[a]), *dst = sl_path_join(out_dir, k_aux[a]);
        char *buf = NULL;
        size_t len = 0;
        if (!src || !dst)
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        else if (stat(src, &sb) == 0 && !(st = sl_read_file(src, SL_CONVERT_MAX_AUX, &buf, &len)))
            st = sl_write_file_atomic(dst, buf, len);
        free(buf);
        free(src);
        free(dst);
    }
    if (st) goto done;
    /* The result must open as a model. */
    sl_encoder *enc = NULL;
    if ((st = sl_encoder_open(out_dir, NULL, &enc)))
        st = sl_wrap_error(st, "convert: the written model does not open");
    sl_encoder_free(enc);
done:
    if (bufs)
        for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(d);
    sl_safetensors_free(st_in);
    free(in_w);
    free(out_w);
    free(in_cfg);
    if (!st && converted) *converted = nconv;
    return st;
}

void sl_cmd_convert_help(FILE *out) {
    fputs("usage: sightline convert --model DIR --out DIR [--dtype f16|bf16|f32]\n"
          "\n"
          "Write a copy of a Hugging Face CLIP directory (config.json, model.safetensors\n"
          "and the tokenizer and preprocessor files beside them) with every floating-point\n"
          "tensor stored as DTYPE (default f16: half the size of F32, which is how the\n"
          "embedded default model ships). Integer tensors are copied unchanged. The\n"
          "result is opened as a model before the command reports success. A value\n"
          "outside the F16 range is an error naming the tensor (use bf16 then).\n",
          out);
}

int sl_cmd_convert(int argc, char **argv) {
    const char *model = NULL, *outd = NULL, *dt = "f16";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sl_cmd_convert_help(stdout);
            return SL_EXIT_OK;
        }
        const char **dst = !strcmp(a, "--model")   ? &model
                           : !strcmp(a, "--out")   ? &outd
                           : !strcmp(a, "--dtype") ? &dt
                                                   : NULL;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "sightline convert: %s '%s' (see 'sightline convert --help')\n",
                    dst ? "missing value for" : "unknown option", a);
            return SL_EXIT_USAGE;
        }
        *dst = argv[++i];
    }
    if (!model || !outd) {
        fputs("sightline convert: --model and --out are required (see 'sightline convert "
              "--help')\n",
              stderr);
        return SL_EXIT_USAGE;
    }
    sl_dtype to = !strcmp(dt, "f16")    ? SL_DT_F16
                  : !strcmp(dt, "bf16") ? SL_DT_BF16
                  : !strcmp(dt, "f32")  ? SL_DT_F32
                                        : (sl_dtype)-1;
    if ((int)to < 0) {
        fprintf(stderr, "sightline convert: --dtype '%s': f16, bf16 or f32 expected\n", dt);
        return SL_EXIT_USAGE;
    }
    size_t nconv = 0;
    if (sl_model_convert(model, outd, to, &nconv)) {
        fprintf(stderr, "sightline convert: %s\n", sl_last_error());
        return SL_EXIT_FAILED;
    }
    printf("%s: %zu tensors converted to %s\n", outd, nconv, sl_dtype_name(to));
    return SL_EXIT_OK;
}
