/*
 * trainer/train.c - the training driver (see train.h).
 */
#include "trainer/train.h"

#include "encoder/clip_internal.h"
#include "sightline/encoder.h"
#include "sightline/eval.h"
#include "sightline/image.h"
#include "sightline/safetensors.h"
#include "sightline/tokenizer.h"
#include "trainer/data.h"
#include "trainer/dist.h"
#include "trainer/model.h"
#include "trainer/model_gpu.h"
#include "trainer/optim.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void sl_train_opts_init(sl_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = o->stop_after = o->warmup = o->seed = o->eval_every = o->save_every = -1;
    o->batch = o->accum = o->threads = o->augment = o->shuffle = o->keep = -1;
    o->lr = o->weight_decay = o->beta1 = o->beta2 = o->eps = o->grad_clip = NAN;
}

/* The resolved hyper-parameters (what a checkpoint records). */
typedef struct hparams {
    int64_t steps, warmup, seed, save_every, eval_every;
    int batch, accum, threads, augment, shuffle, keep;
    double lr, weight_decay, beta1, beta2, eps, grad_clip;
    double dense_weight, dense_beta; /* the dense objective (weight 0: off) */
    sl_augment_opts aug;
} hparams;

static void pick_i64(int64_t *dst, int64_t cli, const json_t *a, const json_t *b, const char *key,
                     int64_t def) {
    *dst = def;
    const json_t *v;
    if (b && (v = json_object_get(b, key)) && json_is_number(v))
        *dst = (int64_t)json_number_value(v);
    if (a && (v = json_object_get(a, key)) && json_is_number(v))
        *dst = (int64_t)json_number_value(v);
    if (cli >= 0) *dst = cli;
}

static void pick_int(int *dst, int cli, const json_t *a, const json_t *b, const char *key,
                     int def) {
    int64_t v;
    pick_i64(&v, cli, a, b, key, def);
    *dst = (int)v;
}

static void pick_dbl(double *dst, double cli, const json_t *a, const json_t *b, const char *key,
                     double def) {
    *dst = def;
    const json_t *v;
    if (b && (v = json_object_get(b, key)) && json_is_number(v)) *dst = json_number_value(v);
    if (a && (v = json_object_get(a, key)) && json_is_number(v)) *dst = json_number_value(v);
    if (!isnan(cli)) *dst = cli;
}

/* a: the resumed checkpoint's train_config (wins over b), b: the preset's
 * "train" object. */
static sl_status resolve(const sl_train_opts *o, const json_t *a, const json_t *b, hparams *h) {
    pick_i64(&h->steps, o->steps, a, b, "steps", 1000);
    pick_i64(&h->warmup, o->warmup, a, b, "warmup", 0);
    pick_i64(&h->seed, o->seed, a, b, "seed", 0);
    pick_i64(&h->save_every, o->save_every, a, b, "save_every", 0);
    pick_i64(&h->eval_every, o->eval_every, NULL, b, "eval_every", 0);
    pick_int(&h->batch, o->batch, a, b, "batch", 32);
    pick_int(&h->accum, o->accum, a, b, "accum", 1);
    pick_int(&h->threads, o->threads, NULL, b, "threads", 2);
    pick_int(&h->augment, o->augment, a, b, "augment", 1);
    pick_int(&h->shuffle, o->shuffle, a, b, "shuffle", 1);
    pick_int(&h->keep, o->keep, NULL, b, "keep", 3);
    pick_dbl(&h->lr, o->lr, a, b, "lr", 5e-4);
    pick_dbl(&h->weight_decay, o->weight_decay, a, b, "weight_decay", 0.2);
    pick_dbl(&h->beta1, o->beta1, a, b, "beta1", 0.9);
    pick_dbl(&h->beta2, o->beta2, a, b, "beta2", 0.98);
    pick_dbl(&h->eps, o->eps, a, b, "eps", 1e-6);
    pick_dbl(&h->grad_clip, o->grad_clip, a, b, "grad_clip", 0.0);
    pick_dbl(&h->dense_weight, NAN, a, b, "dense_weight", 0.0);
    pick_dbl(&h->dense_beta, NAN, a, b, "dense_beta", 10.0);
    if (!(h->dense_weight >= 0 && h->dense_weight <= 100))
        return sl_set_error(SL_ERR_INVALID, "train: dense_weight %g outside [0, 100]",
                            h->dense_weight);
    if (!(h->dense_beta > 0 && h->dense_beta <= 1000))
        return sl_set_error(SL_ERR_INVALID, "train: dense_beta %g outside (0, 1000]",
                            h->dense_beta);
    pick_dbl(&h->aug.crop_scale_min, NAN, a, b, "crop_scale", 0.9);
    pick_dbl(&h->aug.color_jitter, NAN, a, b, "color_jitter", 0.0);
    pick_dbl(&h->aug.blur_sigma, NAN, a, b, "blur_sigma", 0.0);
    pick_dbl(&h->aug.blur_p, NAN, a, b, "blur_p", 0.0);
    pick_dbl(&h->aug.posterize_p, NAN, a, b, "posterize_p", 0.0);
    pick_dbl(&h->aug.grayscale_p, NAN, a, b, "grayscale_p", 0.0);
    pick_dbl(&h->aug.flip_p, NAN, a, b, "flip_p", 0.0);
    pick_dbl(&h->aug.filter_p, NAN, a, b, "filter_p", 0.0);
    double fk;
    pick_dbl(&fk, NAN, a, b, "filter_k", 5.0);
    if (!(fk >= 3 && fk <= 9 && fk == floor(fk) && ((int)fk & 1)))
        return sl_set_error(SL_ERR_INVALID, "train: filter_k %g is not an odd size in [3, 9]", fk);
    h->aug.filter_k = (int)fk;
    const sl_augment_opts *g = &h->aug;
    if (!(g->crop_scale_min > 0 && g->crop_scale_min <= 1) ||
        !(g->color_jitter >= 0 && g->color_jitter < 1) ||
        !(g->blur_sigma >= 0 && g->blur_sigma <= 4) || !(g->blur_p >= 0 && g->blur_p <= 1) ||
        !(g->posterize_p >= 0 && g->posterize_p <= 1) ||
        !(g->grayscale_p >= 0 && g->grayscale_p <= 1) || !(g->flip_p >= 0 && g->flip_p <= 1) ||
        !(g->filter_p >= 0 && g->filter_p <= 1))
        return sl_set_error(SL_ERR_INVALID,
                            "train: augmentation out of range (crop_scale in (0, 1], color_jitter "
                            "in [0, 1), blur_sigma in [0, 4], probabilities in [0, 1])");
    if (h->steps < 1 || h->steps > ((int64_t)1 << 40) || h->warmup < 0 || h->batch < 1 ||
        h->batch > 65536 || h->accum < 1 || h->accum > 65536 || h->threads < 0 ||
        h->threads > 256 || h->keep < 1 || h->save_every < 0 || h->eval_every < 0 ||
        !(h->lr >= 0) || !isfinite(h->lr) || !(h->beta1 >= 0 && h->beta1 < 1) ||
        !(h->beta2 >= 0 && h->beta2 < 1) || !(h->eps > 0) || !(h->weight_decay >= 0) ||
        !(h->grad_clip >= 0))
        return sl_set_error(SL_ERR_INVALID, "train: hyper-parameter out of range");
    return SL_OK;
}

static json_t *hparams_json(const hparams *h) {
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}",
                          "steps", (json_int_t)h->steps, "warmup", (json_int_t)h->warmup, "seed",
                          (json_int_t)h->seed, "save_every", (json_int_t)h->save_every, "batch",
                          h->batch, "accum", h->accum, "augment", h->augment, "shuffle", h->shuffle,
                          "lr", h->lr, "weight_decay", h->weight_decay, "beta1", h->beta1, "beta2",
                          h->beta2, "eps", h->eps, "grad_clip", h->grad_clip);
    if (j && (json_object_set_new(j, "dense_weight", json_real(h->dense_weight)) ||
              json_object_set_new(j, "dense_beta", json_real(h->dense_beta)))) {
        json_decref(j);
        j = NULL;
    }
    json_t *aug = json_pack(
        "{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i}", "crop_scale", h->aug.crop_scale_min,
        "color_jitter", h->aug.color_jitter, "blur_sigma", h->aug.blur_sigma, "blur_p",
        h->aug.blur_p, "posterize_p", h->aug.posterize_p, "grayscale_p", h->aug.grayscale_p,
        "flip_p", h->aug.flip_p, "filter_p", h->aug.filter_p, "filter_k", h->aug.filter_k);
    if (!j || !aug || json_object_update(j, aug) != 0) {
        json_decref(j);
        j = NULL;
    }
    json_decref(aug);
    return j;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Remove a directory tree we wrote (files and subdirectories). */
static int rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = sl_path_join(path, e->d_name);
        if (!p) {
            rc = -1;
            break;
        }
        if (is_dir(p))
            rc |= rm_tree(p);
        else if (unlink(p) != 0)
            rc = -1;
        free(p);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

/* ---- trainer state ------------------------------------------------------ */

static sl_status write_state(const char *path, const sl_adamw *opt, int64_t step, int64_t pos,
                             int64_t seed, int64_t skipped, const hparams *h) {
    int64_t sc[4] = {step, pos, seed, skipped};
    sl_tensor_desc d[6];
    memset(d, 0, sizeof d);
    const char *names[6] = {"adam.m", "adam.v", "step", "data_position", "seed", "skipped"};
    for (int i = 0; i < 6; i++) {
        d[i].name = names[i];
        d[i].ndim = 1;
        if (i < 2) {
            d[i].dtype = SL_DT_F32;
            d[i].shape[0] = (int64_t)opt->n;
            d[i].data = i ? opt->v : opt->m;
        } else {
            d[i].dtype = SL_DT_I64;
            d[i].shape[0] = 1;
            d[i].data = &sc[i - 2];
        }
    }
    json_t *j = hparams_json(h);
    char *js = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    if (!js) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    const char *meta[4] = {"format", "sightline-trainer-state-1", "train_config", js};
    sl_status st = sl_safetensors_write(path, d, 6, meta, 2);
    free(js);
    return st;
}

static sl_status read_i64(const sl_safetensors *s, const char *path, const char *name, int64_t *v) {
    const sl_tensor_info *t = sl_safetensors_find(s, name);
    if (!t || t->dtype != SL_DT_I64 || t->count != 1)
        return sl_set_error(SL_ERR_FORMAT, "%s: missing or malformed '%s'", path, name);
    memcpy(v, t->data, 8);
    return SL_OK;
}

static sl_status read_state(const char *path, sl_adamw *opt, int64_t sc[4], json_t **cfg) {
    sl_safetensors *s = NULL;
    sl_status st = sl_safetensors_open(path, &s);
    if (st) return st;
    const char *names[4] = {"step", "data_position", "seed", "skipped"};
    for (int i = 0; i < 4 && !st; i++) st = read_i64(s, path, names[i], &sc[i]);
    for (int i = 0; i < 2 && !st; i++) {
        const sl_tensor_info *t = sl_safetensors_find(s, i ? "adam.v" : "adam.m");
        if (!t || t->dtype != SL_DT_F32 || t->count != opt->n)
            st = sl_set_error(SL_ERR_FORMAT, "%s: '%s' missing or not %zu F32 values", path,
                              i ? "adam.v" : "adam.m", opt->n);
        else
            memcpy(i ? opt->v : opt->m, t->data, sizeof(float) * opt->n);
    }
    if (!st) {
        const char *js = sl_safetensors_metadata(s, "train_config");
        json_error_t je;
        *cfg = js ? json_loads(js, 0, &je) : NULL;
        if (!*cfg || !json_is_object(*cfg)) {
            json_decref(*cfg);
            *cfg = NULL;
            st = sl_set_error(SL_ERR_FORMAT, "%s: missing or invalid train_config", path);
        }
    }
    sl_safetensors_free(s);
    if (!st && (sc[0] < 0 || sc[1] < 0))
        st = sl_set_error(SL_ERR_FORMAT, "%s: negative step or data position", path);
    return st;
}

/* ---- checkpoints -------------------------------------------------------- */

/* The tokenizer files every checkpoint carries, read once when the run
 * starts: a resumed run's tokenizer is its checkpoint, which pruning may
 * remove while the run goes on. */
static const char *const tok_files[2] = {"vocab.json", "merges.txt"};

typedef struct ckpt_ctx {
    const char *out;
    char *tok[2]; /* the bytes of tok_files */
    size_t tok_len[2];
    int keep;
} ckpt_ctx;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void prune(const char *out, int keep) {
    DIR *d = opendir(out);
    if (!d) return;
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "step-", 5) != 0) continue;
        long long v = strtoll(e->d_name + 5, &end, 10);
        if (*end || v < 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ns = realloc(steps, sizeof *ns * cap);
            if (!ns) break;
            steps = ns;
        }
        steps[n++] = v;
    }
    closedir(d);
    if (n > (size_t)keep) {
        qsort(steps, n, sizeof *steps, cmp_i64);
        for (size_t i = 0; i + (size_t)keep < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "step-%lld", (long long)steps[i]);
            char *p = sl_path_join(out, name);
            if (p && rm_tree(p) != 0) SL_WARN("could not remove %s", p);
            free(p);
        }
    }
    free(steps);
}

static sl_status save_checkpoint(const ckpt_ctx *c, const sl_train_model *m, const sl_adamw *opt,
                                 int64_t step, int64_t pos, int64_t skipped, const hparams *h) {
    char name[64], tmpname[96];
    snprintf(name, sizeof name, "step-%lld", (long long)step);
    snprintf(tmpname, sizeof tmpname, ".step-%lld.tmp.%ld", (long long)step, (long)getpid());
    char *dir = sl_path_join(c->out, name), *tmp = sl_path_join(c->out, tmpname);
    char *a = NULL, *b = NULL;
    sl_status st = SL_OK;
    if (!dir || !tmp) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    rm_tree(tmp);
    if ((st = sl_train_model_save(m, tmp))) goto done;
    for (int i = 0; i < 2 && !st; i++) {
        b = sl_path_join(tmp, tok_files[i]);
        st = b ? sl_write_file_atomic(b, c->tok[i], c->tok_len[i])
               : sl_set_error(SL_ERR_NOMEM, "out of memory");
        free(b);
        b = NULL;
    }
    if (st) goto done;
    if (!(a = sl_path_join(tmp, "trainer_state.safetensors"))) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = write_state(a, opt, step, pos, h->seed, skipped, h))) goto done;
    if (is_dir(dir)) rm_tree(dir);
    if (rename(tmp, dir) != 0) {
        st = sl_set_error(SL_ERR_IO, "rename %s -> %s: %s", tmp, dir, strerror(errno));
        goto done;
    }
    sl_fsync_parent_dir(dir);
    free(a);
    a = sl_path_join(c->out, "latest");
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", name);
    if (!a)
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    else
        st = sl_write_file_atomic(a, line, (size_t)n);
    if (!st) prune(c->out, c->keep);
done:
    if (st && tmp) rm_tree(tmp);
    free(a);
    free(dir);
    free(tmp);
    return st;
}

/* A step directory from --resume: itself, or DIR/<latest>. malloc'ed. */
static char *resume_dir(const char *r) {
    char *st = sl_path_join(r, "trainer_state.safetensors");
    int direct = st && is_file(st);
    free(st);
    if (direct) return strdup(r);
    char *lp = sl_path_join(r, "latest"), *buf = NULL;
    size_t len = 0;
    if (!lp || sl_read_file(lp, 4096, &buf, &len) != SL_OK) {
        free(lp);
        return NULL;
    }
    free(lp);
    buf[strcspn(buf, "\r\n")] = 0;
    char *d = strchr(buf, '/') || !buf[0] ? NULL : sl_path_join(r, buf);
    free(buf);
    return d;
}

/* ---- eval --------------------------------------------------------------- */

typedef struct eval_set {
    float *pixels;   /* [n_images, 3 S S] */
    int32_t *tokens; /* [n_texts, ctx] */
    size_t n_images, n_texts;
    size_t *text_image;
} eval_set;

static void eval_free(eval_set *e) {
    free(e->pixels);
    free(e->tokens);
    free(e->text_image);
    memset(e, 0, sizeof *e);
}

static sl_status eval_load(const char *json, const char *split, const char *images,
                           const sl_clip_config *c, const sl_tokenizer *tok, eval_set *e) {
    memset(e, 0, sizeof *e);
    sl_karpathy k;
    sl_karpathy_opts ko = {split ? split : "test", 5};
    sl_status st = sl_karpathy_read(json, &ko, &k);
    if (st) return st;
    size_t S = (size_t)c->image_size, pix = 3 * S * S, ctx = (size_t)c->context_length;
    e->pixels = malloc(sizeof(float) * pix * (k.n_images ? k.n_images : 1));
    e->tokens = malloc(sizeof(int32_t) * ctx * (k.n_captions ? k.n_captions : 1));
    e->text_image = malloc(sizeof(size_t) * (k.n_captions ? k.n_captions : 1));
    if (!e->pixels || !e->tokens || !e->text_image)
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    if (!st && (!k.n_images || !k.n_captions))
        st =
            sl_set_error(SL_ERR_INVALID, "%s: no images or captions in split '%s'", json, ko.split);
    sl_preprocess pp = {c->image_size, {0}, {0}, 1};
    for (int i = 0; i < 3; i++) pp.mean[i] = c->image_mean[i], pp.std[i] = c->image_std[i];
    for (size_t i = 0; i < k.n_images && !st; i++) {
        char *p = sl_karpathy_image_path(images ? images : "", &k.images[i]);
        sl_image img;
        st = p ? sl_image_load(p, NULL, &img) : sl_set_error(SL_ERR_NOMEM, "out of memory");
        if (!st) st = sl_image_preprocess(&img, &pp, e->pixels + i * pix, NULL);
        if (p) sl_image_free(&img);
        free(p);
    }
    for (size_t i = 0; i < k.n_captions && !st; i++) {
        st = sl_tokenizer_encode(tok, k.captions[i], (int)ctx, 0, e->tokens + i * ctx, NULL);
        e->text_image[i] = k.caption_image[i];
    }
    e->n_images = k.n_images;
    e->n_texts = k.n_captions;
    sl_karpathy_free(&k);
    if (st) eval_free(e);
    return st;
}

/* Embed every image and caption with the model's forward (chunks of
 * max_batch; the other tower fed a filler) and evaluate retrieval. */
static sl_status eval_run(sl_train_model *m, const eval_set *e, sl_retrieval_metrics *out) {
    const int B = m->max_batch;
    const size_t S = (size_t)m->cfg.image_size, pix = 3 * S * S,
                 ctx = (size_t)m->cfg.context_length;
    const size_t D = (size_t)m->cfg.embed_dim;
    float *ie = malloc(sizeof(float) * D * e->n_images),
          *te = malloc(sizeof(float) * D * e->n_texts);
    float *fp = calloc((size_t)B * pix, sizeof(float));
    int32_t *ft = malloc(sizeof(int32_t) * (size_t)B * ctx);
    float *sim = malloc(sizeof(float) * e->n_images * e->n_texts);
    sl_status st = SL_OK;
    if (!ie || !te || !fp || !ft || !sim) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (int b = 0; b < B && !st; b++)
        memcpy(ft + (size_t)b * ctx, e->tokens, sizeof(int32_t) * ctx);
    float loss;
    const float *img, *txt;
    for (size_t i = 0; i < e->n_images && !st; i += (size_t)B) {
        int n = (int)(e->n_images - i < (size_t)B ? e->n_images - i : (size_t)B);
        st = sl_train_model_forward(m, e->pixels + i * pix, ft, n, &loss);
        sl_train_model_embeddings(m, &img, NULL);
        if (!st) memcpy(ie + i * D, img, sizeof(float) * D * (size_t)n);
    }
    for (size_t i = 0; i < e->n_texts && !st; i += (size_t)B) {
        int n = (int)(e->n_texts - i < (size_t)B ? e->n_texts - i : (size_t)B);
        st = sl_train_model_forward(m, fp, e->tokens + i * ctx, n, &loss);
        sl_train_model_embeddings(m, NULL, &txt);
        if (!st) memcpy(te + i * D, txt, sizeof(float) * D * (size_t)n);
    }
    if (!st) st = sl_retrieval_similarity(ie, e->n_images, te, e->n_texts, D, sim);
    if (!st)
        st = sl_retrieval_evaluate(sim, e->n_images, e->n_texts, e->n_texts, e->text_image, out);
    free(ie);
    free(te);
    free(fp);
    free(ft);
    free(sim);
    return st;
}

/* ---- the run ------------------------------------------------------------ */

/* Data parallelism: every rank learns whether any rank failed (st) and,
 * with sum, the sum over ranks of *sum (blocking, one host all-reduce).
 * Every rank must call it at the same points: after the set-up, after each
 * batch is loaded, around evals and checkpoints (rank 0's work), so that a
 * failure on one rank stops all of them instead of leaving the others
 * waiting in a collective. A rank keeps its own error; the others get one
 * saying that another rank failed. */
static sl_status group_check(sl_dist *d, sl_status st, double *sum) {
    if (!d || sl_dist_world(d) == 1) return st;
    double v[2] = {st != SL_OK ? 1.0 : 0.0, sum ? *sum : 0.0};
    char keep[512];
    snprintf(keep, sizeof keep, "%s", st != SL_OK ? sl_last_error() : "");
    sl_status cs = sl_dist_all_reduce_sum_f64_host(d, v, 2);
    if (st != SL_OK) return sl_set_error(st, "%s", keep);
    if (cs != SL_OK) return cs;
    if (sum) *sum = v[1];
    if (v[0] > 0)
        return sl_set_error(SL_ERR_EXTERNAL, "train: rank %d stops: another rank failed (%g of %d)",
                            sl_dist_rank(d), v[0], sl_dist_world(d));
    return SL_OK;
}

/* The GPU's parameters, moments and step count into the CPU model and opt
 * when they are newer there (*dirty), for an eval or a checkpoint. */
static sl_status gpu_pull(sl_gpu_model *g, sl_train_model *m, sl_adamw *opt, int *dirty) {
    if (!*dirty) return SL_OK;
    *dirty = 0;
    return sl_gpu_model_download_state(g, m->params_mem, opt->m, opt->v, &opt->t);
}

sl_status sl_train_run(const sl_train_opts *o, sl_train_result *res) {
    sl_status st = SL_OK;
    json_t *preset = NULL, *resumed_cfg = NULL;
    const json_t *preset_train = NULL;
    sl_clip_config cfg;
    hparams h;
    char *rdir = NULL, *tok_dir = NULL, *cfg_dir = NULL, *log_path = NULL;
    ckpt_ctx cc = {NULL, {NULL, NULL}, {0, 0}, 0};
    sl_tokenizer *tok = NULL;
    sl_train_model *m = NULL;
    sl_adamw opt;
    memset(&opt, 0, sizeof opt);
    sl_gpu_model *gpu = NULL;
    int cuda = -1, gpu_dirty = 0; /* gpu_dirty: the GPU's state is newer than m / opt */
    int bf16 = 0;                 /* --device cuda: BF16 mixed precision; cuda-f32: F32 */
    sl_dist *dist = NULL;         /* data parallelism: a group of more than one rank */
    int rank = 0, world = 1;
    int set_up = 0; /* the group passed its set-up check (group_check), or has none */
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    sl_loader *ld = NULL;
    float *pixels = NULL;
    int32_t *tokens = NULL;
    FILE *logf = NULL;
    eval_set ev;
    memset(&ev, 0, sizeof ev);
    int64_t sc[4] = {0, 0, 0, 0}; /* step, data position, seed, skipped */
    if (res) {
        memset(res, 0, sizeof *res);
        res->eval_r1[0] = res->eval_r1[1] = -1;
    }
    if (!o->out && !o->resume) return sl_set_error(SL_ERR_INVALID, "train: --out is required");
    if (!o->data) return sl_set_error(SL_ERR_INVALID, "train: --data is required");
    if (!o->config && !o->resume && !o->init)
        return sl_set_error(SL_ERR_INVALID, "train: --config is required");
    int quiet = o->quiet; /* every rank but 0 is quiet */
    /* the device first: nothing is read or written for one that cannot be used */
    if ((st = sl_device_parse(o->device, &cuda, &bf16))) return st;
    if (cuda >= 0) {
        /* several ranks (mpirun, SL_RANK / SL_WORLD_SIZE): data parallelism,
         * each rank on its local device unless --device names one */
        sl_dist_opts dop;
        sl_dist_opts_init(&dop);
        dop.id_file = o->dist_file;
        if (strchr(o->device, ':')) dop.device = cuda;
        sl_dist_place place;
        if ((st = sl_dist_resolve(&dop, &place))) return st;
        if (place.world > 1) {
            if ((st = sl_dist_init(&dop, &dist))) return st;
            rank = sl_dist_rank(dist);
            world = sl_dist_world(dist);
            cuda = sl_dist_device(dist);
        }
        if ((st = sl_gpu_model_probe(cuda))) goto done;
        quiet |= rank != 0;
    } else if (o->dist_file) {
        return sl_set_error(SL_ERR_INVALID, "train: --dist-file needs a CUDA --device");
    }

    if (o->config) {
        json_error_t je;
        preset = json_load_file(o->config, JSON_REJECT_DUPLICATES, &je);
        if (!preset || !json_is_object(preset)) {
            st =
                sl_set_error(SL_ERR_FORMAT, "%s:%d:%d: %s", o->config, je.line, je.column, je.text);
            goto done;
        }
        preset_train = json_object_get(preset, "train");
        if (preset_train && !json_is_object(preset_train)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: \"train\" must be an object", o->config);
            goto done;
        }
        cfg_dir = strdup(o->config);
        if (!cfg_dir) goto nomem;
        char *slash = strrchr(cfg_dir, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(cfg_dir, ".");
    }

    /* Model and tokenizer directory */
    if (o->resume) {
        if (!(rdir = resume_dir(o->resume))) {
            st = sl_set_error(SL_ERR_NOT_FOUND, "%s: no checkpoint (trainer_state or latest)",
                              o->resume);
            goto done;
        }
        if (!(tok_dir = strdup(rdir))) goto nomem;
    } else if (o->tokenizer) {
        if (!(tok_dir = strdup(o->tokenizer))) goto nomem;
    } else if (o->init) {
        if (!(tok_dir = strdup(o->init))) goto nomem;
    } else {
        const json_t *t = preset ? json_object_get(preset, "tokenizer") : NULL;
        if (!t || !json_is_string(t)) {
            st = sl_set_error(SL_ERR_INVALID,
                              "train: no tokenizer (--init MODEL, --tokenizer DIR or a "
                              "\"tokenizer\" directory in the config)");
            goto done;
        }
        const char *tp = json_string_value(t);
        tok_dir = tp[0] == '/' || is_dir(tp) ? strdup(tp) : sl_path_join(cfg_dir, tp);
        if (!tok_dir) goto nomem;
    }
    if ((st = sl_tokenizer_open_dir(tok_dir, &tok))) goto done;
    for (int i = 0; i < 2 && !st; i++) {
        char *p = sl_path_join(tok_dir, tok_files[i]);
        st = p ? sl_read_file(p, (size_t)64 << 20, &cc.tok[i], &cc.tok_len[i])
               : sl_set_error(SL_ERR_NOMEM, "out of memory");
        free(p);
    }
    if (st) goto done;

    /* Hyper-parameters (before the model: the batch sizes the activations) */
    if (o->resume) {
        /* peek the state's config */
        char *sp = sl_path_join(rdir, "trainer_state.safetensors");
        sl_safetensors *s = NULL;
        if (!sp) goto nomem;
        st = sl_safetensors_open(sp, &s);
        free(sp);
        if (st) goto done;
        const char *js = sl_safetensors_metadata(s, "train_config");
        json_error_t je;
        resumed_cfg = js ? json_loads(js, 0, &je) : NULL;
        sl_safetensors_free(s);
        if (!resumed_cfg || !json_is_object(resumed_cfg)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: trainer state lacks train_config", rdir);
            goto done;
        }
    }
    if ((st = resolve(o, resumed_cfg, preset_train, &h))) goto done;
    if (cuda >= 0 && h.accum != 1) {
        st = sl_set_error(SL_ERR_UNSUPPORTED,
                          "train: cuda:%d: gradient accumulation (accum %d) is not supported on "
                          "the GPU yet (use accum 1)",
                          cuda, h.accum);
        goto done;
    }
    if (cuda >= 0 && h.dense_weight > 0) {
        st = sl_set_error(SL_ERR_UNSUPPORTED,
                          "train: cuda:%d: the dense objective (dense_weight %g) is not supported "
                          "on the GPU yet (train it on the CPU or set dense_weight 0)",
                          cuda, h.dense_weight);
        goto done;
    }

    if (o->resume) {
        st = sl_train_model_load(rdir, h.batch, &m);
    } else if (o->init) {
        st = sl_train_model_load(o->init, h.batch, &m);
    } else {
        clip_config_defaults(&cfg);
        if ((st = clip_config_read_hf(o->config, &cfg))) goto done;
        if ((st = clip_config_read_preprocessor(o->config, &cfg))) goto done;
        cfg.vocab_size = sl_tokenizer_vocab_size(tok);
        if (!cfg.pool_argmax) cfg.eos_token_id = sl_tokenizer_eot(tok);
        st = sl_train_model_create(&cfg, h.batch, (uint64_t)h.seed, &m);
    }
    if (st) goto done;
    if (sl_tokenizer_vocab_size(tok) > m->cfg.vocab_size) {
        st = sl_set_error(SL_ERR_INVALID, "train: tokenizer has %d tokens, the model %d",
                          (int)sl_tokenizer_vocab_size(tok), m->cfg.vocab_size);
        goto done;
    }
    if ((st = sl_train_model_set_dense(m, (float)h.dense_weight, (float)h.dense_beta))) goto done;
    sl_adamw_config ac = {h.beta1, h.beta2, h.eps, h.weight_decay, h.grad_clip};
    if ((st = sl_adamw_init(&opt, &ac, m->num_params))) goto done;
    if (o->resume) {
        char *sp = sl_path_join(rdir, "trainer_state.safetensors");
        json_t *dummy = NULL;
        if (!sp) goto nomem;
        st = read_state(sp, &opt, sc, &dummy);
        json_decref(dummy);
        free(sp);
        if (st) goto done;
        opt.t = sc[0];
    }
    if (cuda >= 0) {
        /* after resume: the GPU starts from the CPU model and optimizer */
        if ((st = sl_gpu_model_create(cuda, m, h.batch, &gpu))) goto done;
        if (bf16 && (st = sl_gpu_model_set_precision(gpu, SL_GPU_BF16))) goto done;
        if ((st = sl_gpu_model_upload_state(gpu, m->params_mem, opt.m, opt.v, opt.t))) goto done;
    }

    /* Data */
    if ((st = sl_dataset_add(&ds, o->data, o->images, o->split))) goto done;
    if (!ds.n) {
        st = sl_set_error(SL_ERR_INVALID, "%s: no samples", o->data);
        goto done;
    }
    sl_loader_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.image_size = m->cfg.image_size;
    for (int c = 0; c < 3; c++) lo.mean[c] = m->cfg.image_mean[c], lo.std[c] = m->cfg.image_std[c];
    lo.context_length = m->cfg.context_length;
    lo.augment = h.augment;
    lo.aug = h.aug;
    lo.shuffle = h.shuffle;
    lo.seed = (uint64_t)h.seed;
    lo.threads = h.threads;
    lo.prefetch = 2 * h.batch < 4096 ? 2 * h.batch : 4096;
    lo.shard_rank = rank;
    lo.shard_world = world;
    /* the checkpoint's data position counts samples of the whole stream:
     * each of G ranks has consumed 1/G of them */
    if (sc[1] % world) {
        st = sl_set_error(SL_ERR_INVALID,
                          "train: the checkpoint's data position %lld is not a multiple of the "
                          "%d ranks (resume with a group size that divides it)",
                          (long long)sc[1], world);
        goto done;
    }
    if ((st = sl_loader_create(&ds, tok, &lo, (uint64_t)(sc[1] / world), &ld))) goto done;
    size_t pix = (size_t)3 * m->cfg.image_size * m->cfg.image_size;
    pixels = malloc(sizeof(float) * pix * (size_t)h.batch);
    tokens = malloc(sizeof(int32_t) * (size_t)m->cfg.context_length * (size_t)h.batch);
    if (!pixels || !tokens) goto nomem;
    if (rank == 0 && o->eval_data && h.eval_every > 0 &&
        (st = eval_load(o->eval_data, o->eval_split, o->images, &m->cfg, tok, &ev)))
        goto done;

    /* Output */
    const char *out = o->out;
    char *out_alloc = NULL;
    if (!out) {
        /* the resumed checkpoint's parent */
        out_alloc = strdup(rdir);
        if (!out_alloc) goto nomem;
        char *sl = strrchr(out_alloc, '/');
        if (sl)
            *sl = 0;
        else
            strcpy(out_alloc, ".");
        out = out_alloc;
    }
    /* with several ranks only rank 0 writes (log, checkpoints) and evaluates */
    if (rank == 0 && (st = sl_mkdir_p(out))) {
        free(out_alloc);
        goto done;
    }
    log_path = sl_path_join(out, "train_log.jsonl");
    if (!log_path || (rank == 0 && !(logf = fopen(log_path, "a")))) {
        st = sl_set_error(SL_ERR_IO, "%s: cannot open the log", log_path ? log_path : out);
        free(out_alloc);
        goto done;
    }
    cc.out = out;
    cc.keep = h.keep;
    /* the group: every rank set up (rank 0's output and eval data too), then
     * every rank from rank 0's parameters and moments (fresh models differ
     * by nothing but this makes it a guarantee) */
    if (dist) {
        set_up = 1;
        if ((st = group_check(dist, SL_OK, NULL))) goto done;
        if ((st = sl_gpu_model_dp_sync(gpu, dist))) goto done;
        gpu_dirty = 1;
    }

    int64_t stop = o->stop_after >= 0 && o->stop_after < h.steps ? o->stop_after : h.steps;
    const int B = h.batch, K = h.accum;
    const int GB = B * world; /* pairs per micro-batch over every rank */
    double t0 = sl_now(), t_last = t0;
    int64_t first = sc[0];
    const int tty = isatty(fileno(stderr));
    if (res) res->step = first;
    const int64_t log_every = (stop - first) / 50 > 1 ? (stop - first) / 50 : 1;
    if (!quiet) {
        SL_INFO("train: %zu samples, %zu parameters, steps %lld..%lld, batch %d x %d, lr %g", ds.n,
                m->num_params, (long long)first, (long long)stop, GB, K, h.lr);
        if (gpu)
            SL_INFO("train: cuda:%d, %s%s", cuda, bf16 ? "BF16 mixed precision" : "F32",
                    world > 1 ? "" : " (one rank)");
        if (world > 1)
            SL_INFO("train: %d ranks (%s) of %d pairs each, loss over the global batch", world,
                    sl_dist_backend(dist), B);
    }
    for (int64_t step = first; step < stop && !st; step++) {
        double lr = sl_lr_cosine(h.lr, h.warmup, h.steps, step);
        double loss_sum = 0, dense_sum = 0, gn = 0;
        if (gpu) {
            /* K == 1: one micro-batch, the update on the GPU */
            float loss = 0;
            st = group_check(dist, sl_loader_next(ld, B, pixels, tokens), NULL);
            if (st) break;
            gpu_dirty = 1;
            if ((st = sl_gpu_model_step_dp(gpu, dist, pixels, tokens, B, &loss, 1, &opt.cfg, lr,
                                           &gn)))
                break;
            loss_sum = loss;
        } else {
            sl_train_model_zero_grad(m);
            for (int k = 0; k < K && !st; k++) {
                float loss = 0;
                if ((st = sl_loader_next(ld, B, pixels, tokens))) break;
                if ((st = sl_train_model_forward(m, pixels, tokens, B, &loss))) break;
                if ((st = sl_train_model_backward(m))) break;
                loss_sum += loss;
                dense_sum += m->loss_dense;
            }
            if (st) break;
            if ((st = sl_adamw_step(&opt, m, lr, 1.0 / K, &gn))) break;
        }
        double loss = loss_sum / K, now = sl_now();
        double sps = (double)GB * K / (now - t_last > 1e-9 ? now - t_last : 1e-9);
        double avg = (now - t0) / (double)(step + 1 - first);
        double sps_avg = (double)GB * K / (avg > 1e-9 ? avg : 1e-9);
        t_last = now;
        if (res) res->last_loss = loss, res->step = step + 1;
        double r[6] = {-1, -1, -1, -1, -1, -1};
        const int last = step + 1 == stop;
        /* evals and checkpoints: rank 0's work, at steps every rank knows */
        const int eval_step = o->eval_data && h.eval_every > 0 && (step + 1) % h.eval_every == 0;
        const int save_step = last || (h.save_every > 0 && (step + 1) % h.save_every == 0);
        if (rank == 0 && eval_step && ev.n_images) {
            sl_retrieval_metrics mt;
            st = gpu_pull(gpu, m, &opt, &gpu_dirty);
            /* the eval embeds through the forward: without the dense term */
            if (!st) st = sl_train_model_set_dense(m, 0.0f, 1.0f);
            if (!st) st = eval_run(m, &ev, &mt);
            if (!st) st = sl_train_model_set_dense(m, (float)h.dense_weight, (float)h.dense_beta);
            if (!st) {
                r[0] = mt.i2t.r1, r[1] = mt.i2t.r5, r[2] = mt.i2t.r10;
                r[3] = mt.t2i.r1, r[4] = mt.t2i.r5, r[5] = mt.t2i.r10;
                if (res) res->eval_r1[0] = r[0], res->eval_r1[1] = r[3];
            }
        }
        if (eval_step && (st = group_check(dist, st, NULL))) break;
        if (logf) { /* rank 0 */
            fprintf(logf,
                    "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                    "\"samples_per_s\": %.4g",
                    (long long)(step + 1), loss, lr, gn, sps);
            if (h.dense_weight > 0) fprintf(logf, ", \"loss_dense\": %.9g", dense_sum / K);
            if (r[0] >= 0)
                fprintf(logf,
                        ", \"i2t_r1\": %.4g, \"i2t_r5\": %.4g, \"i2t_r10\": %.4g, \"t2i_r1\": "
                        "%.4g, \"t2i_r5\": %.4g, \"t2i_r10\": %.4g",
                        r[0], r[1], r[2], r[3], r[4], r[5]);
            fprintf(logf, "}\n");
            fflush(logf);
        }
        if (!quiet) {
            char eta[32];
            sl_format_duration(eta, sizeof eta, avg * (double)(stop - step - 1));
            /* on a terminal one updating line; otherwise a line every
             * log_every steps, at evals and at the end */
            if (tty || r[0] >= 0 || last || (step + 1) % log_every == 0) {
                fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.3g  %.1f samples/s  ETA %s",
                        tty ? "\r\033[K" : "", (long long)(step + 1), (long long)h.steps, loss, lr,
                        sps_avg, eta);
                if (r[0] >= 0)
                    fprintf(stderr, "  R@1 i2t %.1f t2i %.1f  R@5 %.1f/%.1f  R@10 %.1f/%.1f", r[0],
                            r[3], r[1], r[4], r[2], r[5]);
                if (!tty || r[0] >= 0 || last) fputc('\n', stderr);
                fflush(stderr);
            }
        }
        if (save_step) {
            /* samples skipped on every rank; the stream position (each rank
             * has consumed position x world samples of the stream) */
            double skipped = (double)sl_loader_skipped(ld);
            if ((st = group_check(dist, SL_OK, &skipped))) break;
            if (rank == 0) {
                st = gpu_pull(gpu, m, &opt, &gpu_dirty);
                if (!st)
                    st = save_checkpoint(&cc, m, &opt, step + 1,
                                         (int64_t)sl_loader_position(ld) * world,
                                         sc[3] + (int64_t)skipped, &h);
            }
            if ((st = group_check(dist, st, NULL))) break;
        }
    }
    if (res) res->skipped = (uint64_t)sc[3] + sl_loader_skipped(ld);
    if (!st && sl_loader_skipped(ld))
        SL_WARN("train: %llu samples skipped (bad images)",
                (unsigned long long)sl_loader_skipped(ld));
    free(out_alloc);
    goto done;
nomem:
    st = sl_set_error(SL_ERR_NOMEM, "out of memory");
done:
    /* a rank that fails before the group's set-up check still meets the
     * others there, so that they stop too */
    if (dist && !set_up) group_check(dist, st ? st : SL_ERR_INVALID, NULL);
    if (logf) fclose(logf);
    eval_free(&ev);
    sl_loader_free(ld);
    sl_dataset_free(&ds);
    free(pixels);
    free(tokens);
    sl_gpu_model_free(gpu);
    sl_dist_free(dist);
    sl_adamw_free(&opt);
    sl_train_model_free(m);
    sl_tokenizer_free(tok);
    json_decref(preset);
    json_decref(resumed_cfg);
    free(rdir);
    free(tok_dir);
    free(cc.tok[0]);
    free(cc.tok[1]);
    free(cfg_dir);
    free(log_path);
    return st;
}
