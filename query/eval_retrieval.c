/*
 * query/eval_retrieval.c - image-text retrieval evaluation on Karpathy
 * splits: the split reader, the similarity matrix (one sgemm), the ranks and
 * recall figures (definitions in sightline/eval.h), and `sightline eval
 * retrieval`.
 */
#include "common/json_file.h"
#include "cli/commands.h"
#include "kernels/kernels.h"
#include "sightline/default_model.h"
#include "sightline/encode_files.h"
#include "sightline/encoder.h"
#include "sightline/eval.h"
#include "sightline/indexer.h"
#include "sightline/store.h"

#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Karpathy split reader                                                    */
/* ------------------------------------------------------------------------ */

/* A relative path without ".." components and without NUL bytes. */
static int safe_relative(const char *s, size_t len) {
    if (len == 0 || strlen(s) != len || s[0] == '/') return 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        if (!e) break;
        p = e + 1;
    }
    return 1;
}

/* Whether `split` is one of the comma-separated names in `want`. */
static int split_wanted(const char *want, const char *split) {
    size_t n = strlen(split);
    for (const char *p = want; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !memcmp(p, split, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* Growable caption list of the reader. */
typedef struct cap_list {
    char **text;
    size_t *image;
    size_t n, cap;
} cap_list;

static int cap_push(cap_list *l, char *text, size_t image) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        char **nt = realloc(l->text, nc * sizeof *nt);
        if (!nt) return -1;
        l->text = nt;
        size_t *ni = realloc(l->image, nc * sizeof *ni);
        if (!ni) return -1;
        l->image = ni;
        l->cap = nc;
    }
    l->text[l->n] = text;
    l->image[l->n] = image;
    l->n++;
    return 0;
}

/* The text of a sentence: "raw", or "tokens" joined by spaces (*from_tokens
 * = 1), or NULL with SL_OK when it has neither. */
static sl_status sentence_text(const char *path, size_t ii, const char *fname, size_t si,
                               json_t *sent, char **out, int *from_tokens) {
    *out = NULL;
    *from_tokens = 0;
    if (!json_is_object(sent))
        return sl_set_error(SL_ERR_FORMAT, "%s: image %zu (%s): sentence %zu is not an object",
                            path, ii, fname, si);
    json_t *raw = json_object_get(sent, "raw");
    if (raw) {
        if (!json_is_string(raw))
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: image %zu (%s): sentence %zu: \"raw\" is not a string", path,
                                ii, fname, si);
        size_t len = json_string_length(raw);
        const char *v = json_string_value(raw);
        if (len > SL_KARPATHY_MAX_TEXT)
            return sl_set_error(SL_ERR_LIMIT,
                                "%s: image %zu (%s): sentence %zu is longer than %d bytes", path,
                                ii, fname, si, SL_KARPATHY_MAX_TEXT);
        if (strlen(v) != len)
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: image %zu (%s): sentence %zu contains a NUL character", path,
                                ii, fname, si);
        if (!(*out = strdup(v))) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
        return SL_OK;
    }
    json_t *toks = json_object_get(sent, "tokens");
    if (!toks) return SL_OK;
    if (!json_is_array(toks))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: image %zu (%s): sentence %zu: \"tokens\" is not an array", path,
                            ii, fname, si);
    size_t total = 1, k;
    json_t *t;
    json_array_foreach(toks, k, t) {
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: image %zu (%s): sentence %zu: token %zu is not a string", path,
                                ii, fname, si, k);
        total += json_string_length(t) + 1;
        if (total > SL_KARPATHY_MAX_TEXT)
            return sl_set_error(SL_ERR_LIMIT,
                                "%s: image %zu (%s): sentence %zu is longer than %d bytes", path,
                                ii, fname, si, SL_KARPATHY_MAX_TEXT);
    }
    char *s = malloc(total), *p = s;
    if (!s) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    json_array_foreach(toks, k, t) {
        if (k) *p++ = ' ';
        size_t n = json_string_length(t);
        memcpy(p, json_string_value(t), n);
        p += n;
    }
    *p = '\0';
    *out = s;
    *from_tokens = 1;
    return SL_OK;
}

/* Optional integer field: its value, -1 when absent or not an integer. */
static int64_t opt_int(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* Read one image entry (index ii); append it to k->images when its split is
 * wanted, with its captions in `caps`. */
static sl_status read_image(const char *path, size_t ii, json_t *img, const char *want,
                            size_t max_caps, sl_karpathy *k, cap_list *caps) {
    if (!json_is_object(img))
        return sl_set_error(SL_ERR_FORMAT, "%s: image %zu is not an object", path, ii);
    json_t *fn = json_object_get(img, "filename");
    if (!json_is_string(fn))
        return sl_set_error(SL_ERR_FORMAT, "%s: image %zu: \"filename\" is %s", path, ii,
                            fn ? "not a string" : "missing");
    const char *fname = json_string_value(fn);
    if (!safe_relative(fname, json_string_length(fn)) || json_string_length(fn) > 4096)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: image %zu: filename '%s' is not a relative path inside the "
                            "images folder",
                            path, ii, fname);
    json_t *fp = json_object_get(img, "filepath");
    if (fp &&
        (!json_is_string(fp) || !safe_relative(json_string_value(fp), json_string_length(fp)) ||
         json_string_length(fp) > 4096))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: image %zu (%s): \"filepath\" is not a relative folder name", path,
                            ii, fname);
    json_t *split = json_object_get(img, "split");
    if (split && !json_is_string(split))
        return sl_set_error(SL_ERR_FORMAT, "%s: image %zu (%s): \"split\" is not a string", path,
                            ii, fname);
    json_t *sents = json_object_get(img, "sentences");
    if (sents && !json_is_array(sents))
        return sl_set_error(SL_ERR_FORMAT, "%s: image %zu (%s): \"sentences\" is not an array",
                            path, ii, fname);
    size_t ns = json_array_size(sents);
    if (ns > SL_KARPATHY_MAX_CAPTIONS)
        return sl_set_error(SL_ERR_LIMIT, "%s: image %zu (%s): %zu sentences (at most %d)", path,
                            ii, fname, ns, SL_KARPATHY_MAX_CAPTIONS);
    int wanted = split && split_wanted(want, json_string_value(split));
    if (!split) k->n_no_split++;
    /* validate every sentence, keep the first max_caps of a wanted image */
    sl_karpathy_image im = {
        .imgid = opt_int(img, "imgid"), .cocoid = opt_int(img, "cocoid"), .first_caption = caps->n};
    for (size_t si = 0; si < ns; si++) {
        char *text;
        int from_tokens;
        sl_status st =
            sentence_text(path, ii, fname, si, json_array_get(sents, si), &text, &from_tokens);
        if (st) return st;
        if (!wanted) {
            free(text);
            continue;
        }
        if (!text) {
            k->n_no_text++;
            continue;
        }
        k->n_from_tokens += (size_t)from_tokens;
        im.n_sentences++;
        if (im.n_captions == max_caps) {
            k->n_dropped++;
            free(text);
            continue;
        }
        if (cap_push(caps, text, k->n_images)) {
            free(text);
            return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
        }
        im.n_captions++;
    }
    if (!wanted) return SL_OK;
    if (im.n_sentences == 0)
        k->n_no_captions++;
    else if (im.n_sentences < max_caps)
        k->n_fewer++;
    else if (im.n_sentences > max_caps)
        k->n_more++;
    im.filename = strdup(fname);
    im.filepath = fp ? strdup(json_string_value(fp)) : NULL;
    if (!im.filename || (fp && !im.filepath)) {
        free(im.filename);
        free(im.filepath);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    }
    k->images[k->n_images++] = im;
    return SL_OK;
}

sl_status sl_karpathy_read(const char *path, const sl_karpathy_opts *opts, sl_karpathy *out) {
    if (!path || !out) return sl_set_error(SL_ERR_INVALID, "sl_karpathy_read: NULL argument");
    memset(out, 0, sizeof *out);
    const char *want = opts && opts->split && *opts->split ? opts->split : "test";
    int mc = opts && opts->max_captions ? opts->max_captions : 5;
    if (mc < 1 || mc > SL_KARPATHY_MAX_CAPTIONS)
        return sl_set_error(SL_ERR_INVALID, "max_captions %d outside 1..%d", mc,
                            SL_KARPATHY_MAX_CAPTIONS);
    json_t *root;
    sl_status st = sl_json_load_file(path, SL_KARPATHY_MAX_BYTES, &root);
    if (st) return st;
    sl_karpathy k = {0};
    cap_list caps = {0};
    json_t *images = json_object_get(root, "images");
    if (!json_is_object(root) || !json_is_array(images)) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: %s (not a Karpathy split file)", path,
                          !json_is_object(root)             ? "the top level is not an object"
                          : json_object_get(root, "images") ? "\"images\" is not an array"
                                                            : "no \"images\" array");
        goto fail;
    }
    json_t *ds = json_object_get(root, "dataset");
    if (ds && !json_is_string(ds)) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: \"dataset\" is not a string", path);
        goto fail;
    }
    k.dataset = strdup(ds ? json_string_value(ds) : "");
    size_t ni = json_array_size(images);
    if (ni > SL_KARPATHY_MAX_IMAGES) {
        st = sl_set_error(SL_ERR_LIMIT, "%s: %zu images (at most %d)", path, ni,
                          SL_KARPATHY_MAX_IMAGES);
        goto fail;
    }
    k.n_file_images = ni;
    k.images = calloc(ni ? ni : 1, sizeof *k.images);
    if (!k.dataset || !k.images) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < ni; i++)
        if ((st = read_image(path, i, json_array_get(images, i), want, (size_t)mc, &k, &caps)))
            goto fail;
    json_decref(root);
    k.captions = caps.text;
    k.caption_image = caps.image;
    k.n_captions = caps.n;
    *out = k;
    return SL_OK;
fail:
    json_decref(root);
    k.captions = caps.text;
    k.caption_image = caps.image;
    k.n_captions = caps.n;
    sl_karpathy_free(&k);
    return st;
}

void sl_karpathy_free(sl_karpathy *k) {
    if (!k) return;
    for (size_t i = 0; i < k->n_images; i++) {
        free(k->images[i].filename);
        free(k->images[i].filepath);
    }
    for (size_t i = 0; i < k->n_captions; i++) free(k->captions[i]);
    free(k->images);
    free(k->captions);
    free(k->caption_image);
    free(k->dataset);
    memset(k, 0, sizeof *k);
}

char *sl_karpathy_image_path(const char *images_dir, const sl_karpathy_image *img) {
    size_t dl = strlen(images_dir);
    int slash = dl == 0 || images_dir[dl - 1] == '/'; /* no separator to add */
    size_t n = dl + 2 + (img->filepath ? strlen(img->filepath) + 1 : 0) + strlen(img->filename);
    char *p = malloc(n);
    if (!p) return NULL;
    if (img->filepath)
        snprintf(p, n, "%s%s%s/%s", images_dir, slash ? "" : "/", img->filepath, img->filename);
    else
        snprintf(p, n, "%s%s%s", images_dir, slash ? "" : "/", img->filename);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Ranks and figures                                                        */
/* ------------------------------------------------------------------------ */

#define T2I_BLOCK 512 /* text columns scored together in one pass over the rows */

/* Image -> text ranks: for each image, the best caption j* (highest score,
 * lowest index among equals), then 1 + the texts that beat it: a higher
 * score, or an equal score at a lower index. */
static void rank_i2t(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                     const size_t *cap_off, const size_t *cap_idx, int64_t *rank) {
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < n_images; i++) {
        const float *row = sim + i * ld;
        size_t c0 = cap_off[i], c1 = cap_off[i + 1];
        if (c0 == c1) {
            rank[i] = 0;
            continue;
        }
        size_t best = cap_idx[c0];
        for (size_t c = c0 + 1; c < c1; c++) {
            size_t j = cap_idx[c]; /* increasing: the first maximum wins */
            if (row[j] > row[best] || (isnan(row[best]) && !isnan(row[j]))) best = j;
        }
        const float g = row[best];
        if (isnan(g)) { /* the worst place: behind every other text */
            rank[i] = (int64_t)(n_texts - (c1 - c0)) + 1;
            continue;
        }
        size_t cnt = 0;
        for (size_t k = 0; k < best; k++) cnt += row[k] >= g;
        for (size_t k = best + 1; k < n_texts; k++) cnt += row[k] > g;
        rank[i] = (int64_t)cnt + 1;
    }
}

/* Text -> image ranks, T2I_BLOCK columns at a time so each pass reads
 * contiguous row segments: count the images whose score beats the text's
 * image (higher, or equal at a lower index). */
static void rank_t2i(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                     const size_t *text_image, int64_t *rank) {
    size_t nblocks = (n_texts + T2I_BLOCK - 1) / T2I_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t b = 0; b < nblocks; b++) {
        size_t j0 = b * T2I_BLOCK, nb = n_texts - j0 < T2I_BLOCK ? n_texts - j0 : T2I_BLOCK;
        float gs[T2I_BLOCK];     /* ground-truth score of each column */
        uint32_t cnt[T2I_BLOCK]; /* images beating it so far */
        for (size_t c = 0; c < nb; c++) {
            gs[c] = sim[text_image[j0 + c] * ld + j0 + c];
            cnt[c] = 0;
        }
        /* rows before, between and after the ground truths: below the
         * smallest ground-truth image every column counts >=, above the
         * largest every column counts >; in between, per column */
        size_t gmin = SIZE_MAX, gmax = 0;
        for (size_t c = 0; c < nb; c++) {
            size_t g = text_image[j0 + c];
            if (g < gmin) gmin = g;
            if (g > gmax) gmax = g;
        }
        for (size_t i = 0; i < gmin; i++) {
            const float *row = sim + i * ld + j0;
            for (size_t c = 0; c < nb; c++) cnt[c] += row[c] >= gs[c];
        }
        for (size_t i = gmin; i <= gmax; i++) {
            const float *row = sim + i * ld + j0;
            for (size_t c = 0; c < nb; c++) {
                size_t g = text_image[j0 + c];
                cnt[c] += (row[c] > gs[c]) | ((row[c] == gs[c]) & (i < g));
            }
        }
        for (size_t i = gmax + 1; i < n_images; i++) {
            const float *row = sim + i * ld + j0;
            for (size_t c = 0; c < nb; c++) cnt[c] += row[c] > gs[c];
        }
        for (size_t c = 0; c < nb; c++)
            rank[j0 + c] = isnan(gs[c]) ? (int64_t)n_images : (int64_t)cnt[c] + 1;
    }
}

sl_status sl_retrieval_ranks(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                             const size_t *text_image, int64_t *i2t_rank, int64_t *t2i_rank) {
    if ((n_images && n_texts && !sim) || (n_texts && !text_image) || ld < n_texts)
        return sl_set_error(SL_ERR_INVALID, "sl_retrieval_ranks: NULL argument or ld < n_texts");
    if (n_images > UINT32_MAX || n_texts > UINT32_MAX)
        return sl_set_error(SL_ERR_LIMIT, "retrieval: %zu images x %zu texts is too large",
                            n_images, n_texts);
    for (size_t j = 0; j < n_texts; j++)
        if (text_image[j] >= n_images)
            return sl_set_error(SL_ERR_INVALID, "retrieval: text %zu describes image %zu of %zu", j,
                                text_image[j], n_images);
    if (t2i_rank && n_texts) rank_t2i(sim, n_images, n_texts, ld, text_image, t2i_rank);
    if (!i2t_rank) return SL_OK;
    /* each image's captions in increasing text order (CSR) */
    size_t *off = calloc(n_images + 1, sizeof *off);
    size_t *idx = malloc((n_texts ? n_texts : 1) * sizeof *idx);
    if (!off || !idx) {
        free(off);
        free(idx);
        return sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    }
    for (size_t j = 0; j < n_texts; j++) off[text_image[j] + 1]++;
    for (size_t i = 0; i < n_images; i++) off[i + 1] += off[i];
    for (size_t j = 0; j < n_texts; j++) idx[off[text_image[j]]++] = j;
    for (size_t i = n_images; i > 0; i--) off[i] = off[i - 1]; /* restore the starts */
    off[0] = 0;
    rank_i2t(sim, n_images, n_texts, ld, off, idx, i2t_rank);
    free(off);
    free(idx);
    return SL_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

sl_status sl_recall_summarize(const int64_t *ranks, size_t n, sl_recall_stats *out) {
    if (!out || (n && !ranks)) return sl_set_error(SL_ERR_INVALID, "sl_recall_summarize: NULL");
    memset(out, 0, sizeof *out);
    int64_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    size_t m = 0, h1 = 0, h5 = 0, h10 = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t r = ranks[i];
        if (r <= 0) continue;
        v[m++] = r;
        h1 += r <= 1;
        h5 += r <= 5;
        h10 += r <= 10;
        sum += (double)r;
    }
    if (m) {
        qsort(v, m, sizeof *v, cmp_i64);
        int64_t med = m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
        out->r1 = 100.0 * (double)h1 / (double)m;
        out->r5 = 100.0 * (double)h5 / (double)m;
        out->r10 = 100.0 * (double)h10 / (double)m;
        out->medr = (double)med;
        out->meanr = sum / (double)m;
        out->queries = m;
    }
    free(v);
    return SL_OK;
}

/* The figures from both directions' ranks. */
static sl_status metrics_from_ranks(const int64_t *ri, size_t n_images, const int64_t *rt,
                                    size_t n_texts, sl_retrieval_metrics *out) {
    sl_status st = sl_recall_summarize(ri, n_images, &out->i2t);
    if (!st) st = sl_recall_summarize(rt, n_texts, &out->t2i);
    if (!st) {
        out->rsum =
            out->i2t.r1 + out->i2t.r5 + out->i2t.r10 + out->t2i.r1 + out->t2i.r5 + out->t2i.r10;
        out->n_images = n_images;
        out->n_texts = n_texts;
        out->n_images_no_caption = n_images - out->i2t.queries;
    }
    return st;
}

sl_status sl_retrieval_evaluate(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                                const size_t *text_image, sl_retrieval_metrics *out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "sl_retrieval_evaluate: NULL argument");
    memset(out, 0, sizeof *out);
    int64_t *ri = malloc((n_images ? n_images : 1) * sizeof *ri);
    int64_t *rt = malloc((n_texts ? n_texts : 1) * sizeof *rt);
    sl_status st = SL_OK;
    if (!ri || !rt) st = sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    if (!st) st = sl_retrieval_ranks(sim, n_images, n_texts, ld, text_image, ri, rt);
    if (!st) st = metrics_from_ranks(ri, n_images, rt, n_texts, out);
    free(ri);
    free(rt);
    return st;
}

/* sl_retrieval_evaluate's figures with the similarity and ranks computed
 * on CUDA device `dev` (sl_cuda_retrieval_ranks). */
static sl_status evaluate_cuda(int dev, const float *img, size_t n_images, const float *txt,
                               size_t n_texts, size_t d, const size_t *text_image,
                               sl_retrieval_metrics *out) {
    memset(out, 0, sizeof *out);
    int64_t *ri = malloc((n_images ? n_images : 1) * sizeof *ri);
    int64_t *rt = malloc((n_texts ? n_texts : 1) * sizeof *rt);
    int64_t *ti = malloc((n_texts ? n_texts : 1) * sizeof *ti);
    sl_status st = SL_OK;
    if (!ri || !rt || !ti) st = sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    for (size_t j = 0; !st && j < n_texts; j++) ti[j] = (int64_t)text_image[j];
    if (!st) st = sl_cuda_retrieval_ranks(dev, img, n_images, txt, n_texts, d, ti, ri, rt);
    if (!st) st = metrics_from_ranks(ri, n_images, rt, n_texts, out);
    free(ri);
    free(rt);
    free(ti);
    return st;
}

static void add_stats(sl_recall_stats *acc, const sl_recall_stats *s, double w) {
    acc->r1 += w * s->r1;
    acc->r5 += w * s->r5;
    acc->r10 += w * s->r10;
    acc->medr += w * s->medr;
    acc->meanr += w * s->meanr;
    acc->queries += s->queries;
}

sl_status sl_retrieval_evaluate_folds(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                                      const size_t *text_image, size_t fold_images,
                                      sl_retrieval_metrics *out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "sl_retrieval_evaluate_folds: NULL argument");
    memset(out, 0, sizeof *out);
    if (fold_images == 0 || n_images == 0 || n_images % fold_images)
        return sl_set_error(SL_ERR_INVALID,
                            "retrieval: %zu images do not split into folds of %zu images", n_images,
                            fold_images);
    if ((n_texts && (!sim || !text_image)) || ld < n_texts)
        return sl_set_error(SL_ERR_INVALID, "sl_retrieval_evaluate_folds: bad argument");
    for (size_t j = 0; j < n_texts; j++)
        if (text_image[j] >= n_images)
            return sl_set_error(SL_ERR_INVALID, "retrieval: text %zu describes image %zu of %zu", j,
                                text_image[j], n_images);
    size_t nf = n_images / fold_images;
    size_t *cols = malloc((n_texts ? n_texts : 1) * sizeof *cols); /* texts of the fold */
    size_t *sub_ti = malloc((n_texts ? n_texts : 1) * sizeof *sub_ti);
    float *sub = NULL; /* [fold_images, nt] gathered when the texts are not contiguous */
    sl_status st = SL_OK;
    if (!cols || !sub_ti) st = sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    const double w = 1.0 / (double)nf;
    for (size_t f = 0; f < nf && st == SL_OK; f++) {
        size_t i0 = f * fold_images, nt = 0;
        for (size_t j = 0; j < n_texts; j++)
            if (text_image[j] >= i0 && text_image[j] < i0 + fold_images) {
                cols[nt] = j;
                sub_ti[nt] = text_image[j] - i0;
                nt++;
            }
        const float *base = sim + i0 * ld;
        size_t sub_ld = ld;
        if (nt && cols[nt - 1] - cols[0] + 1 == nt) {
            base += cols[0]; /* contiguous: a view into the matrix */
        } else if (nt) {
            size_t bytes;
            if (sl_mul_size(fold_images * nt, sizeof(float), &bytes)) {
                st = sl_set_error(SL_ERR_LIMIT, "retrieval: fold too large");
                break;
            }
            float *ns = realloc(sub, bytes);
            if (!ns) {
                st = sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory for a fold");
                break;
            }
            sub = ns;
            for (size_t i = 0; i < fold_images; i++)
                for (size_t c = 0; c < nt; c++) sub[i * nt + c] = base[i * ld + cols[c]];
            base = sub;
            sub_ld = nt;
        }
        sl_retrieval_metrics m;
        st = sl_retrieval_evaluate(base, fold_images, nt, sub_ld, sub_ti, &m);
        if (st) break;
        add_stats(&out->i2t, &m.i2t, w);
        add_stats(&out->t2i, &m.t2i, w);
        out->rsum += w * m.rsum;
        out->n_images += m.n_images;
        out->n_texts += m.n_texts;
        out->n_images_no_caption += m.n_images_no_caption;
    }
    if (st == SL_OK) out->n_folds = nf;
    free(cols);
    free(sub_ti);
    free(sub);
    return st;
}

sl_status sl_retrieval_similarity(const float *img, size_t n_images, const float *txt,
                                  size_t n_texts, size_t dim, float *sim) {
    if (n_images > INT_MAX || n_texts > INT_MAX || dim > INT_MAX)
        return sl_set_error(SL_ERR_LIMIT, "retrieval: %zu x %zu x %zu is beyond the BLAS int",
                            n_images, n_texts, dim);
    if (n_images == 0 || n_texts == 0) return SL_OK;
    if (!img || !txt || !sim)
        return sl_set_error(SL_ERR_INVALID, "sl_retrieval_similarity: NULL argument");
    if (dim == 0) {
        memset(sim, 0, n_images * n_texts * sizeof(float));
        return SL_OK;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_images, (int)n_texts, (int)dim,
                1.0f, img, (int)dim, txt, (int)dim, 0.0f, sim, (int)n_texts);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Command                                                                  */
/* ------------------------------------------------------------------------ */

static void eval_retrieval_help(FILE *out) {
    fputs("usage: sightline eval retrieval [--model PATH] --karpathy SPLIT.json\n"
          "                                (--images DIR | --index DIR) [options]\n"
          "\n"
          "Image-text retrieval on a Karpathy split (dataset_flickr30k.json,\n"
          "dataset_coco.json): embeds the split's images and captions, scores every\n"
          "image against every caption (one sgemm) and reports image->text and\n"
          "text->image R@1/R@5/R@10, median and mean rank, and RSUM.\n"
          "\n"
          "  --model PATH        model directory (Hugging Face layout) or .safetensors file\n"
          "                      (default: $SIGHTLINE_MODEL, else the embedded demo model)\n"
          "  --karpathy FILE     the split file\n"
          "  --images DIR        image root: DIR/filepath/filename (COCO) or DIR/filename\n"
          "  --index DIR         take the image vectors from an index that holds these\n"
          "                      files (no re-encoding; same model); captions are encoded\n"
          "  --split NAME        split to evaluate (default test; 'train,restval' joins)\n"
          "  --max-captions N    first N captions per image (default 5)\n"
          "  --coco-1k           also report the mean over 1K-image folds (COCO 1K)\n"
          "  --json OUT.json     write the figures (percent; ranks) and counts as JSON\n"
          "  --skip-bad          leave out images that fail (report them, exit 3)\n"
          "                      instead of failing the evaluation (exit 1)\n"
          "  --batch N           images or captions per forward pass (default 32)\n"
          "  --device NAME       cpu (default), cuda[:N] or cuda-f32[:N] (with cuda, the\n"
          "                      similarity and ranks are computed on the GPU too, except\n"
          "                      with --coco-1k)\n"
          "  --threads N         compute threads (default: all cores)\n"
          "  --max-pixels N      refuse images declaring more pixels (default 100000000)\n"
          "  --quiet             no progress line\n"
          "\n"
          "Definitions: ranks are 1-based; ties are broken by id (an item scoring the\n"
          "same as the ground truth ranks ahead of it when its index is lower). An image\n"
          "query's rank is that of its best-ranked caption; a caption query's is that of\n"
          "its image. An image without captions is no image query but stays in the\n"
          "text->image gallery. medr is the floor of the median rank.\n",
          out);
}

/* An input left out or at fault, with why. */
typedef struct bad_input {
    char *path;
    char *reason;
} bad_input;

typedef struct bad_list {
    bad_input *v;
    size_t n, cap;
} bad_list;

static void bad_push(bad_list *l, const char *path, const char *reason) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        bad_input *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n].path = strdup(path);
    l->v[l->n].reason = strdup(reason);
    if (l->v[l->n].path && l->v[l->n].reason) {
        l->n++;
    } else {
        free(l->v[l->n].path);
        free(l->v[l->n].reason);
    }
}

static void bad_free(bad_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].reason);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Where the image embeddings of the batches go. */
typedef struct img_sink {
    float *emb;        /* [n_images, D] */
    unsigned char *ok; /* [n_images] 1 when embedded */
    size_t dim;        /* D */
    char **paths;      /* [n_images] */
    bad_list *bad;     /* failures */
} img_sink;

static sl_status sink_batch(void *ctx, size_t first, size_t n, const sl_status *status,
                            const char *const *reason, const float *emb, const float *patches,
                            size_t n_good) {
    (void)patches;
    (void)n_good;
    img_sink *s = ctx;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (status[i] != SL_OK) {
            bad_push(s->bad, s->paths[first + i], reason[i]);
            continue;
        }
        memcpy(s->emb + (first + i) * s->dim, emb + k++ * s->dim, s->dim * sizeof(float));
        s->ok[first + i] = 1;
    }
    return SL_OK;
}

/* The roots an index was built from (its recorded "sources"), or the real
 * path of `images` when given. *roots malloc'ed strings. */
static sl_status index_roots(sl_store *s, const char *index_dir, const char *images, char ***roots,
                             size_t *n) {
    *roots = NULL;
    *n = 0;
    if (images) {
        char real[PATH_MAX];
        *roots = calloc(2, sizeof **roots);
        if (!*roots) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        (*roots)[(*n)++] = strdup(realpath(images, real) ? real : images);
        if (strcmp((*roots)[0] ? (*roots)[0] : "", images)) (*roots)[(*n)++] = strdup(images);
        for (size_t i = 0; i < *n; i++)
            if (!(*roots)[i]) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        return SL_OK;
    }
    char *text = NULL;
    sl_status st = sl_store_get_state(s, "sources", &text);
    if (st) return st;
    json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    size_t k, m = json_array_size(arr);
    if (m == 0) {
        json_decref(arr);
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: the index records no source folder; give --images DIR", index_dir);
    }
    *roots = calloc(m, sizeof **roots);
    if (!*roots) {
        json_decref(arr);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    json_t *v;
    json_array_foreach(arr, k, v) {
        if (!json_is_string(v)) continue;
        if (!((*roots)[(*n)++] = strdup(json_string_value(v)))) {
            json_decref(arr);
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
        }
    }
    json_decref(arr);
    return SL_OK;
}

/* Look up root/rel (and root/filename for a COCO-style image) under every
 * root; the first indexed record wins. *id = 0 when none; `why` then says
 * whether a record was found failed. */
static sl_status index_lookup(sl_store *s, char **roots, size_t nroots, const sl_karpathy_image *im,
                              uint64_t *id, char *why, size_t why_len) {
    *id = 0;
    snprintf(why, why_len, "not in the index");
    for (size_t r = 0; r < nroots; r++) {
        for (int form = 0; form < (im->filepath ? 2 : 1); form++) {
            sl_karpathy_image alt = *im;
            if (form == 1) alt.filepath = NULL;
            char *p = sl_karpathy_image_path(roots[r], &alt);
            if (!p) return sl_set_error(SL_ERR_NOMEM, "out of memory");
            sl_file_rec rec;
            int found = 0;
            sl_status st = sl_store_get_file(s, p, strlen(p), &rec, &found);
            free(p);
            if (st) return st;
            if (found && rec.id) {
                *id = rec.id;
                return SL_OK;
            }
            if (found) snprintf(why, why_len, "recorded in the index as failed: %s", rec.error);
        }
    }
    return SL_OK;
}

/* Image vectors from an index (no encoding): each split image looked up by
 * path under the index's source folders (or `images`). Images not found or
 * recorded as failed go to `bad`. */
static sl_status vectors_from_index(const char *index_dir, const char *model, const char *images,
                                    const sl_karpathy *kp, char **names, size_t dim, float *emb,
                                    unsigned char *ok, bad_list *bad) {
    char fp[65];
    sl_status st = sl_model_fingerprint(model, fp);
    if (st) return st;
    sl_store_opts so = {.read_only = 1, .model_fingerprint = fp};
    sl_store *s = NULL;
    char **roots = NULL;
    size_t nroots = 0;
    if ((st = sl_store_open(index_dir, &so, &s))) return st;
    if ((size_t)sl_store_dim(s) != dim) {
        st = sl_set_error(SL_ERR_INVALID,
                          "%s: the index holds %d-dimensional vectors, the model makes %zu",
                          index_dir, sl_store_dim(s), dim);
        goto done;
    }
    if ((st = index_roots(s, index_dir, images, &roots, &nroots))) goto done;
    for (size_t i = 0; i < kp->n_images && st == SL_OK; i++) {
        uint64_t id;
        char why[512];
        if ((st = index_lookup(s, roots, nroots, &kp->images[i], &id, why, sizeof why))) break;
        if (!id) {
            bad_push(bad, names[i], why);
            continue;
        }
        st = sl_store_get_vector(s, SL_COLL_IMAGES, id, emb + i * dim);
        ok[i] = st == SL_OK;
    }
done:
    for (size_t i = 0; roots && i < nroots; i++) free(roots[i]);
    free(roots);
    sl_store_abandon(s);
    return st;
}

static json_t *stats_json(const sl_recall_stats *s) {
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I}", "r1", s->r1, "r5", s->r5, "r10", s->r10,
                     "medr", s->medr, "meanr", s->meanr, "queries", (json_int_t)s->queries);
}

static json_t *metrics_json(const sl_retrieval_metrics *m) {
    json_t *o = json_object();
    json_object_set_new(o, "i2t", stats_json(&m->i2t));
    json_object_set_new(o, "t2i", stats_json(&m->t2i));
    json_object_set_new(o, "rsum", json_real(m->rsum));
    json_object_set_new(o, "images", json_integer((json_int_t)m->n_images));
    json_object_set_new(o, "texts", json_integer((json_int_t)m->n_texts));
    if (m->n_folds) json_object_set_new(o, "folds", json_integer((json_int_t)m->n_folds));
    return o;
}

static void print_table(const char *title, const sl_retrieval_metrics *m) {
    if (*title) printf("%s\n", title);
    printf("            R@1     R@5    R@10    medr    meanr   queries\n");
    printf("  i2t   %7.2f %7.2f %7.2f %7.1f %8.2f %9zu\n", m->i2t.r1, m->i2t.r5, m->i2t.r10,
           m->i2t.medr, m->i2t.meanr, m->i2t.queries);
    printf("  t2i   %7.2f %7.2f %7.2f %7.1f %8.2f %9zu\n", m->t2i.r1, m->t2i.r5, m->t2i.r10,
           m->t2i.medr, m->t2i.meanr, m->t2i.queries);
    printf("  RSUM  %7.2f\n", m->rsum);
}

int sl_cmd_eval_retrieval(int argc, char **argv) {
    enum {
        O_MODEL = 256,
        O_KARPATHY,
        O_IMAGES,
        O_INDEX,
        O_SPLIT,
        O_COCO1K,
        O_JSON,
        O_BATCH,
        O_DEVICE,
        O_THREADS,
        O_MAXCAP,
        O_SKIPBAD,
        O_MAXPIX,
        O_QUIET,
        O_HELP
    };
    static const struct option longopts[] = {{"model", required_argument, 0, O_MODEL},
                                             {"karpathy", required_argument, 0, O_KARPATHY},
                                             {"images", required_argument, 0, O_IMAGES},
                                             {"index", required_argument, 0, O_INDEX},
                                             {"split", required_argument, 0, O_SPLIT},
                                             {"coco-1k", no_argument, 0, O_COCO1K},
                                             {"json", required_argument, 0, O_JSON},
                                             {"batch", required_argument, 0, O_BATCH},
                                             {"device", required_argument, 0, O_DEVICE},
                                             {"threads", required_argument, 0, O_THREADS},
                                             {"max-captions", required_argument, 0, O_MAXCAP},
                                             {"skip-bad", no_argument, 0, O_SKIPBAD},
                                             {"max-pixels", required_argument, 0, O_MAXPIX},
                                             {"quiet", no_argument, 0, O_QUIET},
                                             {"help", no_argument, 0, O_HELP},
                                             {0, 0, 0, 0}};
    const char *model = NULL, *karpathy = NULL, *images = NULL, *index = NULL, *json_out = NULL;
    const char *split = "test", *device = NULL;
    int coco1k = 0, skip_bad = 0, quiet = 0;
    long long batch = 32, threads = 0, max_caps = 5, max_pixels = 100000000;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
            case O_MODEL:
                model = optarg;
                break;
            case O_KARPATHY:
                karpathy = optarg;
                break;
            case O_IMAGES:
                images = optarg;
                break;
            case O_INDEX:
                index = optarg;
                break;
            case O_SPLIT:
                split = optarg;
                break;
            case O_COCO1K:
                coco1k = 1;
                break;
            case O_JSON:
                json_out = optarg;
                break;
            case O_SKIPBAD:
                skip_bad = 1;
                break;
            case O_QUIET:
                quiet = 1;
                break;
            case O_BATCH:
                if (sl_parse_int_arg(optarg, 1, 65536, &batch)) goto bad_value;
                break;
            case O_DEVICE: {
                int cuda, bf16;
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline eval retrieval: %s\n", sl_last_error());
                    return SL_EXIT_USAGE;
                }
                device = optarg;
                break;
            }
            case O_THREADS:
                if (sl_parse_int_arg(optarg, 1, 1024, &threads)) goto bad_value;
                break;
            case O_MAXCAP:
                if (sl_parse_int_arg(optarg, 1, SL_KARPATHY_MAX_CAPTIONS, &max_caps))
                    goto bad_value;
                break;
            case O_MAXPIX:
                if (sl_parse_int_arg(optarg, 1, (long long)1 << 40, &max_pixels)) goto bad_value;
                break;
            case 'h':
            case O_HELP:
                eval_retrieval_help(stdout);
                return SL_EXIT_OK;
            default:
                fprintf(stderr, "sightline eval retrieval: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                return SL_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sightline eval retrieval: unexpected argument '%s'\n", argv[optind]);
        return SL_EXIT_USAGE;
    }
    if (!karpathy || !(images || index)) {
        fprintf(stderr, "sightline eval retrieval: need --karpathy and --images or --index "
                        "(see --help)\n");
        return SL_EXIT_USAGE;
    }

    sl_karpathy kp = {0};
    sl_encoder *enc = NULL;
    char **paths = NULL;
    float *img_emb = NULL, *txt_emb = NULL, *sim = NULL;
    unsigned char *ok = NULL;
    size_t *text_image = NULL;
    bad_list bad = {0};
    sl_progress *prog = NULL;
    json_t *report = NULL;
    int rc = SL_EXIT_FAILED;
    double t_img = 0, t_txt = 0, t_sim = 0, t_rank = 0, t0;
    sl_status st;

    char *default_model = NULL;
    if ((st = sl_model_or_default(model, &model, &default_model))) goto fail;
    sl_karpathy_opts ko = {.split = split, .max_captions = (int)max_caps};
    if ((st = sl_karpathy_read(karpathy, &ko, &kp))) goto fail;
    if (kp.n_images == 0) {
        st = sl_set_error(SL_ERR_NOT_FOUND, "%s: no image in split '%s'", karpathy, split);
        goto fail;
    }
    if (coco1k && kp.n_images % 1000) {
        st = sl_set_error(SL_ERR_INVALID,
                          "--coco-1k: the %s split has %zu images, not a multiple of 1000", split,
                          kp.n_images);
        goto fail;
    }
    sl_encoder_opts eo = {.threads = (int)threads, .device = device};
    if ((st = sl_encoder_open(model, &eo, &enc))) goto fail;
    const size_t D = (size_t)sl_encoder_config(enc)->embed_dim;
    size_t n = kp.n_images, bytes;
    paths = calloc(n, sizeof *paths);
    ok = calloc(n, 1);
    if (sl_mul_size(n, D * sizeof(float), &bytes) || !paths || !ok || !(img_emb = malloc(bytes))) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu image embeddings", n);
        goto fail;
    }
    /* names: the files under --images, else the paths relative to a source */
    for (size_t i = 0; i < n; i++)
        if (!(paths[i] = images ? sl_karpathy_image_path(images, &kp.images[i])
                                : sl_karpathy_image_path("", &kp.images[i]))) {
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            goto fail;
        }

    /* ---- image vectors ---- */
    t0 = sl_now();
    if (index) {
        st = vectors_from_index(index, model, images, &kp, paths, D, img_emb, ok, &bad);
    } else {
        prog = sl_progress_create("images", n, quiet);
        img_sink sink = {.emb = img_emb, .ok = ok, .dim = D, .paths = paths, .bad = &bad};
        sl_image_files_opts io = {.batch = (size_t)batch,
                                  .max_pixels = (uint64_t)max_pixels,
                                  .normalize = 1,
                                  .progress = prog};
        st = sl_encode_image_files(enc, (const char *const *)paths, n, &io, sink_batch, &sink);
        sl_progress_finish(prog);
        prog = NULL;
    }
    t_img = sl_now() - t0;
    if (st) goto fail;
    for (size_t i = 0; i < bad.n; i++) /* image errors already name the file */
        sl_log(skip_bad ? SL_LOG_WARN : SL_LOG_ERROR, "%s%s%s",
               strstr(bad.v[i].reason, bad.v[i].path) ? "" : bad.v[i].path,
               strstr(bad.v[i].reason, bad.v[i].path) ? "" : ": ", bad.v[i].reason);
    if (bad.n && !skip_bad) {
        st = sl_set_error(SL_ERR_FORMAT,
                          "%zu of %zu images of the split %s (listed above, first: %s); an "
                          "evaluation needs them all (--skip-bad leaves them out)",
                          bad.n, n, index ? "are missing from the index or failed" : "failed",
                          bad.v[0].path);
        goto fail;
    }

    /* ---- drop the images left out (and their captions), keeping order ---- */
    size_t *new_index = malloc(n * sizeof *new_index);
    text_image = malloc((kp.n_captions ? kp.n_captions : 1) * sizeof *text_image);
    const char **texts = malloc((kp.n_captions ? kp.n_captions : 1) * sizeof *texts);
    if (!new_index || !text_image || !texts) {
        free(new_index);
        free(texts);
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t ni = 0, nt = 0, no_caption = 0;
    for (size_t i = 0; i < n; i++) {
        new_index[i] = ni;
        if (!ok[i]) continue;
        if (ni != i) memmove(img_emb + ni * D, img_emb + i * D, D * sizeof(float));
        no_caption += kp.images[i].n_captions == 0;
        ni++;
    }
    for (size_t j = 0; j < kp.n_captions; j++) {
        size_t im = kp.caption_image[j];
        if (!ok[im]) continue;
        texts[nt] = kp.captions[j];
        text_image[nt++] = new_index[im];
    }
    free(new_index);
    if (ni == 0) {
        free(texts);
        st = sl_set_error(SL_ERR_NOT_FOUND, "no image of the split could be used");
        goto fail;
    }

    /* ---- caption vectors ---- */
    if (sl_mul_size(nt ? nt : 1, D * sizeof(float), &bytes) || !(txt_emb = malloc(bytes))) {
        free(texts);
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu caption embeddings", nt);
        goto fail;
    }
    if (nt && !sl_encoder_tokenizer(enc)) {
        free(texts);
        st = sl_set_error(SL_ERR_NOT_FOUND,
                          "%s: the model has no tokenizer files (vocab.json, merges.txt)", model);
        goto fail;
    }
    t0 = sl_now();
    prog = sl_progress_create("captions", nt, quiet);
    for (size_t j0 = 0; j0 < nt && st == SL_OK; j0 += (size_t)batch) {
        size_t nb = nt - j0 < (size_t)batch ? nt - j0 : (size_t)batch;
        st = sl_encoder_encode_texts(enc, texts + j0, nb, txt_emb + j0 * D, 1);
        sl_progress_add(prog, nb);
    }
    sl_progress_finish(prog);
    prog = NULL;
    free(texts);
    t_txt = sl_now() - t0;
    if (st) goto fail;

    /* ---- scores and figures ---- */
    sl_retrieval_metrics full, folds = {0};
    int cuda = -1, bf16 = 1;
    (void)sl_device_parse(device, &cuda, &bf16); /* checked with the options */
    if (cuda >= 0 && !coco1k) {
        /* similarity and ranks on the device: no matrix comes back */
        t0 = sl_now();
        if ((st = evaluate_cuda(cuda, img_emb, ni, txt_emb, nt, D, text_image, &full))) goto fail;
        t_rank = sl_now() - t0;
        goto report;
    }
    if (sl_mul_size(ni, nt ? nt : 1, &bytes) || sl_mul_size(bytes, sizeof(float), &bytes) ||
        !(sim = malloc(bytes))) {
        st =
            sl_set_error(SL_ERR_NOMEM, "out of memory for the %zu x %zu similarity matrix", ni, nt);
        goto fail;
    }
    t0 = sl_now();
    if ((st = sl_retrieval_similarity(img_emb, ni, txt_emb, nt, D, sim))) goto fail;
    t_sim = sl_now() - t0;
    t0 = sl_now();
    if ((st = sl_retrieval_evaluate(sim, ni, nt, nt, text_image, &full))) goto fail;
    if (coco1k && (st = sl_retrieval_evaluate_folds(sim, ni, nt, nt, text_image, 1000, &folds)))
        goto fail;
    t_rank = sl_now() - t0;

report:;
    /* ---- report ---- */
    const char *ds = *kp.dataset ? kp.dataset : "dataset";
    printf("%s %s: %zu images, %zu captions (first %lld per image)%s\n", ds, split, ni, nt,
           max_caps, index ? ", image vectors from the index" : "");
    if (kp.n_more)
        printf("note: %zu image(s) have more than %lld captions; their first %lld were used (%zu "
               "captions left out)\n",
               kp.n_more, max_caps, max_caps, kp.n_dropped);
    if (kp.n_fewer)
        printf("note: %zu image(s) have fewer than %lld captions\n", kp.n_fewer, max_caps);
    if (no_caption)
        printf("note: %zu image(s) have no caption: no image->text query, still in the "
               "text->image gallery\n",
               no_caption);
    if (kp.n_no_split)
        printf("note: %zu images of the file have no \"split\" (in no split)\n", kp.n_no_split);
    if (kp.n_from_tokens)
        printf("note: %zu captions have no \"raw\": their tokens were joined\n", kp.n_from_tokens);
    if (kp.n_no_text)
        printf("note: %zu sentences have neither \"raw\" nor \"tokens\" (left out)\n",
               kp.n_no_text);
    if (bad.n) printf("skipped %zu images (listed above)\n", bad.n);
    if (coco1k) {
        char title[128];
        snprintf(title, sizeof title, "1K (mean over %zu folds of 1000 images)", folds.n_folds);
        print_table(title, &folds);
        snprintf(title, sizeof title, "%zuK (all %zu images)", ni / 1000, ni);
        print_table(title, &full);
    } else {
        print_table("", &full);
    }
    if (!quiet)
        fprintf(stderr, "time: images %.2fs, captions %.2fs, similarity %.3fs, ranks %.3fs%s\n",
                t_img, t_txt, t_sim, t_rank,
                cuda >= 0 && !coco1k ? " (similarity and ranks together, on the GPU)" : "");

    if (json_out) {
        report = metrics_json(&full);
        json_object_set_new(report, "dataset", json_string(kp.dataset));
        json_object_set_new(report, "split", json_string(split));
        json_object_set_new(report, "source", json_string(index ? "index" : "images"));
        json_object_set_new(report, "max_captions", json_integer(max_caps));
        json_object_set_new(report, "images_without_captions",
                            json_integer((json_int_t)no_caption));
        json_object_set_new(report, "images_with_more_captions",
                            json_integer((json_int_t)kp.n_more));
        json_object_set_new(report, "captions_left_out", json_integer((json_int_t)kp.n_dropped));
        json_object_set_new(report, "images_with_fewer_captions",
                            json_integer((json_int_t)kp.n_fewer));
        json_object_set_new(report, "images_without_split",
                            json_integer((json_int_t)kp.n_no_split));
        json_t *sk = json_array();
        for (size_t i = 0; i < bad.n; i++)
            json_array_append_new(
                sk, json_pack("{s:s, s:s}", "path", bad.v[i].path, "reason", bad.v[i].reason));
        json_object_set_new(report, "skipped", sk);
        if (coco1k) json_object_set_new(report, "coco_1k", metrics_json(&folds));
        json_object_set_new(report, "seconds",
                            json_pack("{s:f, s:f, s:f, s:f}", "images", t_img, "captions", t_txt,
                                      "similarity", t_sim, "ranks", t_rank));
        char *text = json_dumps(report, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        if (!text) {
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            goto fail;
        }
        size_t tl = strlen(text);
        text[tl] = '\n'; /* the NUL's byte becomes the final newline */
        st = sl_write_file_atomic(json_out, text, tl + 1);
        free(text);
        if (st) goto fail;
    }
    rc = bad.n ? SL_EXIT_PARTIAL : SL_EXIT_OK;
    goto done;
fail:
    SL_ERROR("%s", sl_last_error());
    rc = SL_EXIT_FAILED;
done:
    sl_progress_finish(prog);
    json_decref(report);
    if (paths)
        for (size_t i = 0; i < kp.n_images; i++) free(paths[i]);
    free(paths);
    free(ok);
    free(img_emb);
    free(txt_emb);
    free(sim);
    free(text_image);
    bad_free(&bad);
    sl_encoder_free(enc);
    sl_karpathy_free(&kp);
    free(default_model);
    return rc;
bad_value:
    sl_cli_bad_value("eval retrieval", longopts, c, optarg);
    return SL_EXIT_USAGE;
}
