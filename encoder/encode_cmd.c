/*
 * encoder/encode_cmd.c - `sightline encode`: embed images or texts into .npy.
 */
#include "cli/commands.h"
#include "sightline/default_model.h"
#include "sightline/encode_files.h"
#include "sightline/encoder.h"
#include "sightline/image.h"
#include "sightline/npy.h"
#include "sightline/walk.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_encode_help(FILE *out) {
    fputs("usage: sightline encode [--model PATH] INPUT --out OUT.npy [options]\n"
          "\n"
          "Embed images or texts with a CLIP-family model into a float32 .npy array\n"
          "[N, D] (rows in input order, L2-normalised unless --no-normalize).\n"
          "\n"
          "INPUT (exactly one):\n"
          "  --images PATH     an image, a folder (walked recursively, sorted), or a\n"
          "                    text file listing one image path per line\n"
          "  --pixels X.npy    preprocessed float32 [N, 3, S, S] pixels (no decoding)\n"
          "  --texts FILE      one text per line ('-' reads stdin)\n"
          "  --tokens T.npy    int32 or int64 [N, context] token ids (no tokenizing)\n"
          "\n"
          "options:\n"
          "  --model PATH      model directory (Hugging Face layout) or .safetensors file\n"
          "                    (default: $SIGHTLINE_MODEL, else the embedded demo model;\n"
          "                    'sightline info' shows which)\n"
          "  --out OUT.npy     embeddings [N, D]\n"
          "  --patches P.npy   also write projected patch tokens [N, P, D] (images only)\n"
          "  --region-size N   input side of the patch-token pass (default: the model's\n"
          "                    region_size, else its image size)\n"
          "  --patch-tokens value|final\n"
          "                    which patch embeddings (default: the model's, else value: the\n"
          "                    last block's value path; final: its output rows)\n"
          "  --device NAME     cpu (default), cuda[:N] or cuda-f32[:N]\n"
          "  --no-normalize    keep raw projections\n"
          "  --batch N         images or texts per forward pass (default 32)\n"
          "  --threads N       compute threads (default: all cores)\n"
          "  --max-pixels N    refuse images declaring more pixels (default 100000000)\n"
          "  --quiet           no progress line\n"
          "\n"
          "Inputs that fail (an unreadable or corrupt image, a token id out of range) are\n"
          "left out, reported, and listed in OUT.npy.errors.tsv (input, reason); the exit\n"
          "code is then 3. For image inputs OUT.npy.paths.txt lists the path of each row.\n",
          out);
}

/* ------------------------------------------------------------------------ */
/* Input lists                                                              */
/* ------------------------------------------------------------------------ */

typedef struct str_list {
    char **items;
    size_t n, cap;
} str_list;

static int list_push(str_list *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        char **ni = realloc(l->items, nc * sizeof *ni);
        if (!ni) return -1;
        l->items = ni;
        l->cap = nc;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = '\0';
    l->items[l->n++] = c;
    return 0;
}

static void list_free(str_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Split text into lines (trailing '\r' removed); keep_empty keeps blank lines
 * (texts), otherwise blank lines and '#' comments are dropped (path lists). */
static sl_status split_lines(const char *buf, size_t len, int keep_empty, str_list *out) {
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && buf[i] != '\n') continue;
        size_t e = i;
        if (e > start && buf[e - 1] == '\r') e--;
        if (i == len && e == start) break; /* no final empty line */
        if (keep_empty || (e > start && buf[start] != '#'))
            if (list_push(out, buf + start, e - start))
                return sl_set_error(SL_ERR_NOMEM, "out of memory reading lines");
        start = i + 1;
    }
    return SL_OK;
}

static sl_status read_stream(FILE *f, const char *name, char **buf, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", name);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            if (cap >= ((size_t)1 << 32)) {
                free(b);
                return sl_set_error(SL_ERR_LIMIT, "%s: more than 4 GiB of text", name);
            }
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", name);
            }
            b = nb;
            cap *= 2;
        }
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return SL_OK;
}

/* Lines of a file, or of stdin for "-". */
static sl_status read_lines(const char *path, int keep_empty, str_list *out) {
    char *buf = NULL;
    size_t len = 0;
    sl_status st = strcmp(path, "-") == 0 ? read_stream(stdin, "stdin", &buf, &len)
                                          : sl_read_file(path, (size_t)1 << 32, &buf, &len);
    if (st) return st;
    st = split_lines(buf, len, keep_empty, out);
    free(buf);
    return st;
}

static int collect_file(void *ctx, const char *path, const struct stat *st) {
    (void)st;
    str_list *l = ctx;
    if (!sl_image_is_candidate(path)) return 0; /* not an image: not an input */
    return list_push(l, path, strlen(path));
}

static void walk_error(void *ctx, const char *path, const char *reason) {
    (void)ctx;
    SL_WARN("%s: %s", path, reason);
}

/* The image paths named by --images: a folder, an image, or a list file. */
static sl_status collect_images(const char *arg, str_list *out) {
    struct stat sb;
    if (stat(arg, &sb) != 0)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: no such file or folder", arg);
    if (S_ISDIR(sb.st_mode)) return sl_walk(arg, NULL, collect_file, walk_error, out);
    FILE *f = fopen(arg, "rb");
    if (!f) return sl_set_error(SL_ERR_IO, "%s: cannot open", arg);
    unsigned char head[16];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (sl_image_sniff(head, n) != SL_IMG_UNKNOWN)
        return list_push(out, arg, strlen(arg)) ? SL_ERR_NOMEM : SL_OK;
    return read_lines(arg, 0, out);
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct enc_out {
    sl_npy_writer *emb;     /* OUT.npy */
    sl_npy_writer *patches; /* PATCH.npy or NULL */
    FILE *paths;            /* OUT.npy.paths.txt or NULL */
    str_list errors;        /* "input\treason" lines */
    sl_progress *progress;
} enc_out;

static void note_error(enc_out *o, const char *input, const char *reason) {
    /* the reason may start with the input's name already: drop it */
    size_t il = strlen(input);
    if (!strncmp(reason, input, il) && reason[il] == ':' && reason[il + 1] == ' ') reason += il + 2;
    SL_WARN("%s: %s", input, reason);
    char line[2048];
    int n = snprintf(line, sizeof line, "%s\t%s", input, reason);
    for (int i = 0; i < n && i < (int)sizeof line; i++)
        if (line[i] == '\n') line[i] = ' ';
    list_push(&o->errors, line, strlen(line));
}

static sl_status write_errors(const char *out_path, const str_list *errors) {
    char path[4096];
    snprintf(path, sizeof path, "%s.errors.tsv", out_path);
    if (errors->n == 0) {
        remove(path);
        return SL_OK;
    }
    size_t total = 0;
    for (size_t i = 0; i < errors->n; i++) total += strlen(errors->items[i]) + 1;
    char *buf = malloc(total + 1), *p = buf;
    if (!buf) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < errors->n; i++) p += sprintf(p, "%s\n", errors->items[i]);
    sl_status st = sl_write_file_atomic(path, buf, total);
    free(buf);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Images                                                                   */
/* ------------------------------------------------------------------------ */

static sl_status encode_image_batch(sl_encoder *enc, float *pix, size_t n, float *emb, float *patch,
                                    int normalize, enc_out *o) {
    sl_status st = sl_encoder_encode_images(enc, pix, n, emb, patch, normalize);
    if (st) return st;
    if ((st = sl_npy_writer_append(o->emb, emb, n))) return st;
    if (o->patches && (st = sl_npy_writer_append(o->patches, patch, n))) return st;
    return SL_OK;
}

/* One batch from sl_encode_image_files: note failures, write the rows. */
typedef struct images_ctx {
    enc_out *o;
    const str_list *paths;
} images_ctx;

static sl_status on_image_batch(void *ctx, size_t first, size_t n, const sl_status *status,
                                const char *const *reason, const float *emb, const float *patches,
                                size_t n_good) {
    images_ctx *c = ctx;
    for (size_t i = 0; i < n; i++) {
        if (status[i] != SL_OK)
            note_error(c->o, c->paths->items[first + i], reason[i]);
        else if (c->o->paths)
            fprintf(c->o->paths, "%s\n", c->paths->items[first + i]);
    }
    sl_status st = sl_npy_writer_append(c->o->emb, emb, n_good);
    if (st == SL_OK && c->o->patches) st = sl_npy_writer_append(c->o->patches, patches, n_good);
    return st;
}

static sl_status run_images(sl_encoder *enc, const str_list *paths, size_t batch, int normalize,
                            uint64_t max_pixels, enc_out *o) {
    sl_image_files_opts fo = {.batch = batch,
                              .max_pixels = max_pixels,
                              .normalize = normalize,
                              .patches = o->patches != NULL,
                              .progress = o->progress};
    images_ctx c = {o, paths};
    return sl_encode_image_files(enc, (const char *const *)paths->items, paths->n, &fo,
                                 on_image_batch, &c);
}

static sl_status run_pixels(sl_encoder *enc, const char *path, size_t batch, int normalize,
                            enc_out *o) {
    const sl_clip_config *cfg = sl_encoder_config(enc);
    const size_t S = (size_t)cfg->image_size, D = (size_t)cfg->embed_dim;
    const size_t P = (size_t)sl_encoder_num_patches(enc);
    sl_npy arr;
    sl_status st = sl_npy_read(path, &arr);
    if (st) return st;
    if (arr.dtype != SL_NPY_F32 || arr.ndim != 4 || arr.shape[1] != 3 || arr.shape[2] != S ||
        arr.shape[3] != S) {
        st =
            sl_set_error(SL_ERR_INVALID, "%s: pixels must be float32 [N, 3, %zu, %zu]", path, S, S);
        goto cleanup;
    }
    float *emb = malloc(batch * D * sizeof(float));
    float *patch = o->patches ? malloc(batch * P * D * sizeof(float)) : NULL;
    if (!emb || (o->patches && !patch)) {
        free(emb);
        free(patch);
        st = sl_set_error(SL_ERR_NOMEM, "encode: out of memory");
        goto cleanup;
    }
    const float *pix = arr.data;
    for (size_t b0 = 0; b0 < arr.shape[0] && st == SL_OK; b0 += batch) {
        size_t nb = arr.shape[0] - b0 < batch ? arr.shape[0] - b0 : batch;
        st = encode_image_batch(enc, (float *)(pix + b0 * 3 * S * S), nb, emb, patch, normalize, o);
        sl_progress_add(o->progress, nb);
    }
    free(emb);
    free(patch);
cleanup:
    sl_npy_free(&arr);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Texts                                                                    */
/* ------------------------------------------------------------------------ */

static sl_status encode_token_rows(sl_encoder *enc, const int32_t *tok, size_t n, size_t batch,
                                   int normalize, enc_out *o) {
    const sl_clip_config *cfg = sl_encoder_config(enc);
    const size_t D = (size_t)cfg->embed_dim;
    float *emb = malloc(batch * D * sizeof(float));
    if (!emb) return sl_set_error(SL_ERR_NOMEM, "encode: out of memory");
    sl_status st = SL_OK;
    for (size_t b0 = 0; b0 < n && st == SL_OK; b0 += batch) {
        size_t nb = n - b0 < batch ? n - b0 : batch;
        st = sl_encoder_encode_tokens(enc, tok + b0 * (size_t)cfg->context_length, nb, emb, NULL,
                                      normalize);
        if (st == SL_OK) st = sl_npy_writer_append(o->emb, emb, nb);
        sl_progress_add(o->progress, nb);
    }
    free(emb);
    return st;
}

static sl_status run_texts(sl_encoder *enc, const str_list *texts, size_t batch, int normalize,
                           enc_out *o) {
    const sl_clip_config *cfg = sl_encoder_config(enc);
    const sl_tokenizer *tok = sl_encoder_tokenizer(enc);
    if (!tok)
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "the model has no tokenizer files (vocab.json, merges.txt); "
                            "give token ids with --tokens");
    const size_t C = (size_t)cfg->context_length;
    int32_t *ids = malloc((texts->n ? texts->n : 1) * C * sizeof(int32_t));
    if (!ids) return sl_set_error(SL_ERR_NOMEM, "encode: out of memory for %zu texts", texts->n);
    /* tokenize everything first (cheap), leaving failures out */
    size_t good = 0;
    for (size_t i = 0; i < texts->n; i++) {
        if (sl_tokenizer_encode(tok, texts->items[i], (int)C, 0, ids + good * C, NULL) != SL_OK) {
            char where[64];
            snprintf(where, sizeof where, "line %zu", i + 1);
            note_error(o, where, sl_last_error());
            continue;
        }
        good++;
    }
    sl_status st = encode_token_rows(enc, ids, good, batch, normalize, o);
    free(ids);
    return st;
}

static sl_status run_tokens(sl_encoder *enc, const char *path, size_t batch, int normalize,
                            enc_out *o) {
    const sl_clip_config *cfg = sl_encoder_config(enc);
    const size_t C = (size_t)cfg->context_length;
    sl_npy arr;
    sl_status st = sl_npy_read(path, &arr);
    if (st) return st;
    int32_t *ids = NULL;
    if ((arr.dtype != SL_NPY_I32 && arr.dtype != SL_NPY_I64) || arr.ndim != 2 ||
        arr.shape[1] != C) {
        st = sl_set_error(SL_ERR_INVALID, "%s: tokens must be int32 or int64 [N, %zu]", path, C);
        goto cleanup;
    }
    ids = malloc((arr.shape[0] ? arr.shape[0] : 1) * C * sizeof(int32_t));
    if (!ids) {
        st = sl_set_error(SL_ERR_NOMEM, "encode: out of memory");
        goto cleanup;
    }
    /* rows with an id outside the vocabulary are left out */
    size_t good = 0;
    for (size_t r = 0; r < arr.shape[0]; r++) {
        int bad = -1;
        for (size_t j = 0; j < C; j++) {
            int64_t v = arr.dtype == SL_NPY_I32 ? ((const int32_t *)arr.data)[r * C + j]
                                                : ((const int64_t *)arr.data)[r * C + j];
            if (v < 0 || v >= cfg->vocab_size) {
                bad = (int)j;
                break;
            }
            ids[good * C + j] = (int32_t)v;
        }
        if (bad >= 0) {
            char where[64], why[128];
            snprintf(where, sizeof where, "row %zu", r);
            snprintf(why, sizeof why, "token id at position %d outside the vocabulary [0, %d)", bad,
                     cfg->vocab_size);
            note_error(o, where, why);
            continue;
        }
        good++;
    }
    st = encode_token_rows(enc, ids, good, batch, normalize, o);
cleanup:
    free(ids);
    sl_npy_free(&arr);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Command                                                                  */
/* ------------------------------------------------------------------------ */

int sl_cmd_encode(int argc, char **argv) {
    enum {
        O_MODEL = 256,
        O_IMAGES,
        O_PIXELS,
        O_TEXTS,
        O_TOKENS,
        O_OUT,
        O_PATCHES,
        O_PATCH_TOKENS,
        O_REGION_SIZE,
        O_DEVICE,
        O_NONORM,
        O_BATCH,
        O_THREADS,
        O_MAXPIX,
        O_QUIET,
        O_HELP
    };
    static const struct option longopts[] = {{"model", required_argument, 0, O_MODEL},
                                             {"images", required_argument, 0, O_IMAGES},
                                             {"pixels", required_argument, 0, O_PIXELS},
                                             {"texts", required_argument, 0, O_TEXTS},
                                             {"tokens", required_argument, 0, O_TOKENS},
                                             {"out", required_argument, 0, O_OUT},
                                             {"patches", required_argument, 0, O_PATCHES},
                                             {"patch-tokens", required_argument, 0, O_PATCH_TOKENS},
                                             {"region-size", required_argument, 0, O_REGION_SIZE},
                                             {"device", required_argument, 0, O_DEVICE},
                                             {"no-normalize", no_argument, 0, O_NONORM},
                                             {"batch", required_argument, 0, O_BATCH},
                                             {"threads", required_argument, 0, O_THREADS},
                                             {"max-pixels", required_argument, 0, O_MAXPIX},
                                             {"quiet", no_argument, 0, O_QUIET},
                                             {"help", no_argument, 0, O_HELP},
                                             {0, 0, 0, 0}};
    const char *model = NULL, *images = NULL, *pixels = NULL, *texts = NULL, *tokens = NULL;
    const char *out = NULL, *patches = NULL, *device = NULL;
    sl_patch_tokens patch_tokens = SL_PATCH_TOKENS_DEFAULT;
    long long region_size = 0;
    int normalize = 1, quiet = 0, cuda, bf16;
    long long batch = 32, threads = 0, max_pixels = 100000000;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
            case O_MODEL:
                model = optarg;
                break;
            case O_IMAGES:
                images = optarg;
                break;
            case O_PIXELS:
                pixels = optarg;
                break;
            case O_TEXTS:
                texts = optarg;
                break;
            case O_TOKENS:
                tokens = optarg;
                break;
            case O_OUT:
                out = optarg;
                break;
            case O_PATCHES:
                patches = optarg;
                break;
            case O_REGION_SIZE:
                if (sl_parse_int_arg(optarg, 1, 4096, &region_size)) goto bad_value;
                break;
            case O_PATCH_TOKENS:
                if (sl_patch_tokens_parse(optarg, &patch_tokens)) goto bad_value;
                break;
            case O_DEVICE:
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline encode: %s\n", sl_last_error());
                    return SL_EXIT_USAGE;
                }
                device = optarg;
                break;
            case O_NONORM:
                normalize = 0;
                break;
            case O_QUIET:
                quiet = 1;
                break;
            case O_BATCH:
                if (sl_parse_int_arg(optarg, 1, 65536, &batch)) goto bad_value;
                break;
            case O_THREADS:
                if (sl_parse_int_arg(optarg, 1, 1024, &threads)) goto bad_value;
                break;
            case O_MAXPIX:
                if (sl_parse_int_arg(optarg, 1, (long long)1 << 40, &max_pixels)) goto bad_value;
                break;
            case 'h':
            case O_HELP:
                sl_cmd_encode_help(stdout);
                return SL_EXIT_OK;
            default:
                fprintf(stderr, "sightline encode: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                return SL_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sightline encode: unexpected argument '%s'\n", argv[optind]);
        return SL_EXIT_USAGE;
    }
    int ninputs = !!images + !!pixels + !!texts + !!tokens;
    if (!out || ninputs != 1) {
        fprintf(stderr, "sightline encode: need --out and exactly one of --images, "
                        "--pixels, --texts, --tokens (see --help)\n");
        return SL_EXIT_USAGE;
    }
    if (patches && !(images || pixels)) {
        fprintf(stderr, "sightline encode: --patches needs --images or --pixels\n");
        return SL_EXIT_USAGE;
    }

    sl_encoder_opts eo = {.threads = (int)threads,
                          .patch_tokens = patch_tokens,
                          .region_size = (int)region_size,
                          .device = device};
    sl_encoder *enc = NULL;
    char *default_model = NULL;
    if (sl_model_or_default(model, &model, &default_model) != SL_OK ||
        sl_encoder_open(model, &eo, &enc) != SL_OK) {
        SL_ERROR("%s", sl_last_error());
        free(default_model);
        return SL_EXIT_FAILED;
    }
    const sl_clip_config *cfg = sl_encoder_config(enc);
    enc_out o = {0};
    str_list inputs = {0};
    sl_status st = SL_OK;
    size_t row[2] = {(size_t)sl_encoder_num_patches(enc), (size_t)cfg->embed_dim};
    if ((st = sl_npy_writer_open(out, SL_NPY_F32, 1, row + 1, &o.emb))) goto done;
    if (patches && (st = sl_npy_writer_open(patches, SL_NPY_F32, 2, row, &o.patches))) goto done;

    if (images) {
        if ((st = collect_images(images, &inputs))) goto done;
        char pp[4096];
        snprintf(pp, sizeof pp, "%s.paths.txt", out);
        if (!(o.paths = fopen(pp, "w"))) {
            st = sl_set_error(SL_ERR_IO, "%s: cannot create", pp);
            goto done;
        }
        o.progress = sl_progress_create("encode", inputs.n, quiet);
        st = run_images(enc, &inputs, (size_t)batch, normalize, (uint64_t)max_pixels, &o);
    } else if (pixels) {
        o.progress = sl_progress_create("encode", 0, quiet);
        st = run_pixels(enc, pixels, (size_t)batch, normalize, &o);
    } else if (texts) {
        if ((st = read_lines(texts, 1, &inputs))) goto done;
        o.progress = sl_progress_create("encode", inputs.n, quiet);
        st = run_texts(enc, &inputs, (size_t)batch, normalize, &o);
    } else {
        o.progress = sl_progress_create("encode", 0, quiet);
        st = run_tokens(enc, tokens, (size_t)batch, normalize, &o);
    }
done:
    sl_progress_finish(o.progress);
    size_t rows = o.emb ? sl_npy_writer_rows(o.emb) : 0;
    if (o.paths && fclose(o.paths) != 0 && st == SL_OK)
        st = sl_set_error(SL_ERR_IO, "%s.paths.txt: write failed", out);
    if (st == SL_OK) {
        st = sl_npy_writer_close(o.emb);
        o.emb = NULL;
    }
    if (st == SL_OK && o.patches) {
        st = sl_npy_writer_close(o.patches);
        o.patches = NULL;
    }
    if (st == SL_OK) st = write_errors(out, &o.errors);
    sl_npy_writer_abort(o.emb);
    sl_npy_writer_abort(o.patches);
    int rc = SL_EXIT_OK;
    if (st != SL_OK) {
        SL_ERROR("%s", sl_last_error());
        rc = SL_EXIT_FAILED;
    } else {
        if (!quiet || o.errors.n)
            fprintf(stderr, "encoded %zu %s into %s [%zu, %d]; %zu skipped%s\n", rows,
                    (images || pixels) ? "images" : "texts", out, rows, cfg->embed_dim, o.errors.n,
                    o.errors.n ? " (listed in OUT.npy.errors.tsv)" : "");
        if (o.errors.n) rc = SL_EXIT_PARTIAL;
    }
    list_free(&inputs);
    list_free(&o.errors);
    sl_encoder_free(enc);
    free(default_model);
    return rc;
bad_value:
    sl_cli_bad_value("encode", longopts, c, optarg);
    return SL_EXIT_USAGE;
}
