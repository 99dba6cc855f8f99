/*
 * query/eval_grounding.c - grounding sets, the accuracy computation, and
 * `sightline eval grounding`: phrase grounding accuracy (IoU >= 0.5) on
 * Flickr30K Entities and RefCOCO/RefCOCO+/RefCOCOg.
 *
 * Per image: projected patch embeddings (L2-normalised per patch), either
 * encoded from the picture or read from an index built with --region. Per
 * phrase: its text embedding (normalised). The similarity map patches ·
 * phrase goes through sl_ground_box; the phrase is correct when the IoU of
 * that box with the ground truth is at least 0.5.
 */
#include "cli/commands.h"
#include "kernels/kernels.h"
#include "sightline/default_model.h"
#include "sightline/encoder.h"
#include "sightline/eval_grounding.h"
#include "sightline/image.h"
#include "sightline/indexer.h"
#include "sightline/store.h"

#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Sets                                                                     */
/* ------------------------------------------------------------------------ */

const char *sl_ground_skip_name(sl_ground_skip r) {
    static const char *const names[SL_GSKIP_COUNT] = {"notvisual", "scene", "nobndbox", "absent",
                                                      "image_failed"};
    return (unsigned)r < SL_GSKIP_COUNT ? names[r] : "unknown";
}

void sl_ground_set_init(sl_ground_set *set) {
    memset(set, 0, sizeof *set);
}

void sl_ground_set_free(sl_ground_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n_images; i++) {
        free(set->images[i].id);
        free(set->images[i].file_name);
    }
    for (size_t i = 0; i < set->n_phrases; i++) {
        free(set->phrases[i].text);
        free(set->phrases[i].entity);
    }
    for (size_t i = 0; i < set->n_mentions; i++) free(set->mentions[i].text);
    for (int t = 0; t < set->n_types; t++) free(set->types[t]);
    free(set->images);
    free(set->phrases);
    free(set->mentions);
    memset(set, 0, sizeof *set);
}

sl_status sl_ground_set_add_image(sl_ground_set *set, const char *id, const char *file_name,
                                  int width, int height) {
    if (set->n_images == set->cap_images) {
        size_t nc = set->cap_images ? set->cap_images * 2 : 64;
        sl_ground_image *ni = realloc(set->images, nc * sizeof *ni);
        if (!ni) return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
        set->images = ni;
        set->cap_images = nc;
    }
    sl_ground_image *im = &set->images[set->n_images];
    memset(im, 0, sizeof *im);
    im->id = strdup(id);
    im->file_name = strdup(file_name);
    if (!im->id || !im->file_name) {
        free(im->id);
        free(im->file_name);
        return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
    }
    im->width = width;
    im->height = height;
    im->first = set->n_phrases;
    im->mfirst = set->n_mentions;
    set->n_images++;
    return SL_OK;
}

sl_status sl_ground_set_add_phrase(sl_ground_set *set, const char *text, const char *entity,
                                   uint32_t types, sl_box box, int boxes, int line) {
    if (set->n_images == 0)
        return sl_set_error(SL_ERR_INVALID, "grounding set: a phrase before any image");
    if (set->n_phrases == set->cap_phrases) {
        size_t nc = set->cap_phrases ? set->cap_phrases * 2 : 256;
        sl_ground_phrase *np = realloc(set->phrases, nc * sizeof *np);
        if (!np) return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
        set->phrases = np;
        set->cap_phrases = nc;
    }
    sl_ground_phrase *p = &set->phrases[set->n_phrases];
    memset(p, 0, sizeof *p);
    p->text = strdup(text);
    p->entity = strdup(entity ? entity : "");
    if (!p->text || !p->entity) {
        free(p->text);
        free(p->entity);
        return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
    }
    p->types = types;
    p->box = box;
    p->boxes = boxes;
    p->line = line;
    set->n_phrases++;
    set->images[set->n_images - 1].count++;
    return SL_OK;
}

sl_status sl_ground_set_add_mention(sl_ground_set *set, const char *text, int line) {
    if (set->n_images == 0)
        return sl_set_error(SL_ERR_INVALID, "grounding set: a mention before any image");
    if (set->n_mentions == set->cap_mentions) {
        size_t nc = set->cap_mentions ? set->cap_mentions * 2 : 256;
        sl_ground_mention *nm = realloc(set->mentions, nc * sizeof *nm);
        if (!nm) return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
        set->mentions = nm;
        set->cap_mentions = nc;
    }
    sl_ground_mention *m = &set->mentions[set->n_mentions];
    if (!(m->text = strdup(text)))
        return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
    m->line = line;
    set->n_mentions++;
    set->images[set->n_images - 1].mcount++;
    return SL_OK;
}

sl_status sl_ground_set_types(sl_ground_set *set, const char *types, uint32_t *mask) {
    *mask = 0;
    const char *s = types;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n > 0) {
            int t = 0;
            while (t < set->n_types &&
                   !(strlen(set->types[t]) == n && !memcmp(set->types[t], s, n)))
                t++;
            if (t == set->n_types) {
                if (t == SL_GROUND_MAX_TYPES)
                    return sl_set_error(SL_ERR_LIMIT, "more than %d distinct entity types",
                                        SL_GROUND_MAX_TYPES);
                if (!(set->types[t] = strndup(s, n)))
                    return sl_set_error(SL_ERR_NOMEM, "grounding set: out of memory");
                set->n_types++;
            }
            *mask |= (uint32_t)1 << t;
        }
        if (!e) break;
        s = e + 1;
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                  */
/* ------------------------------------------------------------------------ */

int sl_ground_correct(sl_box pred, sl_box gt) {
    return sl_box_iou(pred, gt) >= 0.5;
}

double sl_ground_accuracy(size_t correct, size_t total) {
    return total ? 100.0 * (double)correct / (double)total : 0.0;
}

void sl_ground_score_compute(const sl_ground_set *set, const sl_box *pred,
                             const unsigned char *image_ok, sl_ground_score *out) {
    memset(out, 0, sizeof *out);
    for (int r = 0; r < SL_GSKIP_COUNT; r++) out->skipped_by[r] = set->skipped[r];
    for (size_t i = 0; i < set->n_images; i++) {
        const sl_ground_image *im = &set->images[i];
        if (image_ok && !image_ok[i]) {
            out->skipped_by[SL_GSKIP_IMAGE] += im->count;
            continue;
        }
        if (im->count) out->images++;
        for (size_t k = im->first; k < im->first + im->count; k++) {
            const sl_ground_phrase *p = &set->phrases[k];
            int ok = sl_ground_correct(pred[k], p->box);
            out->phrases++;
            out->correct += (size_t)ok;
            for (int t = 0; t < set->n_types && t < SL_GROUND_MAX_TYPES; t++)
                if (p->types >> t & 1) {
                    out->type_phrases[t]++;
                    out->type_correct[t] += (size_t)ok;
                }
        }
    }
    for (int r = 0; r < SL_GSKIP_COUNT; r++) out->skipped += out->skipped_by[r];
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

static void help(FILE *out) {
    fputs(
        "usage: sightline eval grounding [--model PATH] (--entities DIR | --refcoco FILE.json)\n"
        "                                --images DIR [--index DIR] [options]\n"
        "\n"
        "Phrase grounding accuracy: each phrase's box is found from its similarity map\n"
        "over the image's patch embeddings (upsampled bilinearly; its peak; the cells >=\n"
        "base + rel * (max - base), base the map's mean or minimum; the connected region\n"
        "around the peak) and is correct when its IoU with the ground truth is at least\n"
        "0.5 (an entity with several boxes: their union).\n"
        "\n"
        "benchmark (exactly one):\n"
        "  --entities DIR    Flickr30K Entities (DIR/Sentences/*.txt, DIR/Annotations/*.xml;\n"
        "                    images are --images/<id>.jpg)\n"
        "  --refcoco FILE    RefCOCO/RefCOCO+/RefCOCOg COCO-style JSON (MDETR/GLIP\n"
        "                    final_refcoco*_<split>.json; images --images/<file_name>)\n"
        "\n"
        "options:\n"
        "  --model PATH      model directory or .safetensors file (texts; images unless --index;\n"
        "                    default: $SIGHTLINE_MODEL, else the embedded demo model)\n"
        "  --images DIR      folder holding the pictures\n"
        "  --index DIR       take patch embeddings from an index built with --region from\n"
        "                    --images (no image is decoded)\n"
        "  --split FILE      Entities: only the image ids listed (one per line)\n"
        "  --json OUT.json   write the results as JSON\n"
        "  --details F.jsonl one JSON line per judged phrase (boxes, IoU, correct)\n"
        "  --rel X           relative threshold of the similarity map (default 0.4)\n"
        "  --rel-from mean|min  the threshold's base: the map's mean (default) or minimum\n"
        "  --upsample N      bilinear upsampling of the map before the box (default 2;\n"
        "                    1: the patch grid as it is; at most 16)\n"
        "  --contrast        each phrase's map minus, cell by cell, the pooled maps of the\n"
        "                    other phrases its sentence marks (boxed or not; its object must\n"
        "                    beat theirs); the --details score is then that map's peak.\n"
        "                    Entities only (a RefCOCO expression has no sentence mates)\n"
        "  --contrast-pool mean|max   with --contrast: how the rivals' maps are pooled\n"
        "                    (default mean)\n"
        "  --contrast-weight W        with --contrast: times the pooled map taken off\n"
        "                    (default 0.75; 0-4)\n"
        "  --region-size N   input side of the patch-token pass (default: the model's\n"
        "                    region_size, else its image size; not with --index)\n"
        "  --patch-tokens value|final\n"
        "                    which patch embeddings (default: the model's, else value: the\n"
        "                    last block's value path; final: its output rows)\n"
        "  --device NAME     cpu (default), cuda[:N] or cuda-f32[:N]\n"
        "  --batch N         images per forward pass (default 32; texts: at least 64)\n"
        "  --threads N       compute threads (default: all cores)\n"
        "  --max-pixels N    refuse images declaring more pixels (default 100000000)\n"
        "  --skip-bad        leave out images that fail to decode (exit code 3)\n"
        "  --quiet           no progress line\n"
        "\n"
        "Phrases whose entity has no box (notvisual, scene, nobndbox, not annotated) are\n"
        "skipped and counted. An image that fails to decode (or is missing from the\n"
        "index) stops the run with exit code 1 unless --skip-bad.\n",
        out);
}

enum { POOL_MEAN, POOL_MAX };

static const char *pool_name(int pool) {
    return pool == POOL_MAX ? "max" : "mean";
}

static const char *from_name(sl_ground_from from) {
    return from == SL_GROUND_FROM_MIN ? "min" : "mean";
}

/* --contrast's defaults, chosen on the demo corpus's val scenes (Noto
 * style) with the embedded model at region size 128, upsampling 2, rel
 * 0.75 from the minimum: the largest rival map at weight 1 gave 56.7%; the
 * mean at weight 0.6 / 0.7 / 0.75 / 0.8 / 0.9 gave 60.3 / 61.0 / 61.5 /
 * 61.5 / 60.3%. With the threshold from the mean at rel 0.4, the mean at
 * 0.5 / 0.75 / 1: 74.8 / 75.4 / 74.4%. */
#define CONTRAST_POOL_DEFAULT   POOL_MEAN
#define CONTRAST_WEIGHT_DEFAULT 0.75

typedef struct ev_args {
    const char *model, *entities, *refcoco, *images, *index, *split, *json, *details, *device;
    sl_patch_tokens patch_tokens;
    int region_size;
    sl_ground_opts box; /* --rel, --rel-from, --upsample */
    int batch, threads, skip_bad, quiet;
    int contrast;           /* each phrase's map against its sentence's other phrases */
    int contrast_pool;      /* POOL_MEAN or POOL_MAX of the rivals' maps */
    double contrast_weight; /* times the pooled map taken off */
    uint64_t max_pixels;
} ev_args;

/* Unique texts of the phrases (and the mentions, with_mentions): row[k] is
 * the embedding row of phrase k, row[n_phrases + m] that of mention m. */
typedef struct text_rows {
    const char **texts; /* unique texts (borrowed from the set) */
    size_t n;
    size_t *row; /* [n_phrases + n_mentions] */
} text_rows;

static const char *text_of(const sl_ground_set *set, size_t i) {
    return i < set->n_phrases ? set->phrases[i].text : set->mentions[i - set->n_phrases].text;
}

static int cmp_text(const void *a, const void *b, void *ctx) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(text_of(ctx, x), text_of(ctx, y));
    return c ? c : (x < y ? -1 : x > y);
}

static sl_status unique_texts(const sl_ground_set *set, int with_mentions, text_rows *tr) {
    size_t n = set->n_phrases + (with_mentions ? set->n_mentions : 0);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    tr->texts = malloc((n ? n : 1) * sizeof *tr->texts);
    tr->row = malloc((n ? n : 1) * sizeof *tr->row);
    tr->n = 0;
    if (!order || !tr->texts || !tr->row) {
        free(order);
        return sl_set_error(SL_ERR_NOMEM, "out of memory for %zu phrases", n);
    }
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (n) qsort_r(order, n, sizeof *order, cmp_text, (void *)set);
    for (size_t i = 0; i < n; i++) {
        const char *t = text_of(set, order[i]);
        if (tr->n == 0 || strcmp(tr->texts[tr->n - 1], t) != 0) tr->texts[tr->n++] = t;
        tr->row[order[i]] = tr->n - 1;
    }
    free(order);
    return SL_OK;
}

/* The path of file_name under the images folder. */
static char *image_path(const char *dir, const char *file_name) {
    size_t n = strlen(dir) + strlen(file_name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file_name);
    return p;
}

/* Look an image up in the index under the paths it may have been recorded
 * with (as given, under the folder's real path, the file's real path). */
static sl_status index_lookup(sl_store *s, const char *dir, const char *file_name, sl_file_rec *rec,
                              int *found) {
    char *p = image_path(dir, file_name);
    if (!p) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    sl_status st = sl_store_get_file(s, p, strlen(p), rec, found);
    char real[PATH_MAX];
    if (st == SL_OK && !*found && realpath(dir, real)) {
        char *q = image_path(real, file_name);
        if (!q)
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        else
            st = sl_store_get_file(s, q, strlen(q), rec, found);
        free(q);
    }
    if (st == SL_OK && !*found && realpath(p, real))
        st = sl_store_get_file(s, real, strlen(real), rec, found);
    free(p);
    return st;
}

/* Everything one run holds. */
typedef struct ev_run {
    const ev_args *a;
    const sl_ground_set *set;
    sl_encoder *enc;
    sl_store *store;
    int S, grid, P, D;
    float cell;      /* model-input pixels per patch-grid cell */
    float *text_emb; /* [unique texts, D] */
    text_rows tr;
    sl_box *pred;          /* [n_phrases] */
    float *score;          /* [n_phrases] peak similarity */
    unsigned char *img_ok; /* [n_images] */
    char **img_err;        /* [n_images] why an image failed (owned) or NULL */
    size_t failed;         /* images that failed */
    sl_progress *progress;
} ev_run;

static sl_status encode_texts(ev_run *r) {
    sl_status st = unique_texts(r->set, r->a->contrast, &r->tr);
    if (st) return st;
    size_t n = r->tr.n, D = (size_t)r->D;
    size_t bytes;
    if (sl_mul_size(n ? n : 1, D * sizeof(float), &bytes) || !(r->text_emb = malloc(bytes)))
        return sl_set_error(SL_ERR_NOMEM, "out of memory for %zu text embeddings", n);
    size_t tb = (size_t)r->a->batch < 64 ? 64 : (size_t)r->a->batch;
    for (size_t b0 = 0; b0 < n; b0 += tb) {
        size_t nb = n - b0 < tb ? n - b0 : tb;
        if ((st = sl_encoder_encode_texts(r->enc, r->tr.texts + b0, nb, r->text_emb + b0 * D, 1)))
            return sl_wrap_error(st, "encoding phrases: ");
    }
    return SL_OK;
}

/* sim [P] = the similarity of text row `row`'s embedding to each patch. */
static void text_map(const ev_run *r, size_t row, const float *patches, float *sim) {
    sl_ground_sim_map(patches, (size_t)r->P, (size_t)r->D, r->text_emb + row * (size_t)r->D, sim);
}

/* Ground every phrase of image i from its normalised patches [P, D]. With
 * --contrast a phrase's map is its similarity minus, cell by cell, the
 * weighted mean (or largest) similarity of the other phrases of its
 * sentence: every phrase the sentence marks, with a box or not (the
 * mentions, each mapped once per image; phrases with the same words are not
 * each other's rivals), so where its own object is it beats the sentence's
 * other things. A phrase alone in its sentence keeps its plain map. */
static sl_status ground_image(ev_run *r, size_t i, const float *patches, const sl_crop_map *map,
                              int width, int height, float *sim) {
    const sl_ground_image *im = &r->set->images[i];
    const size_t P = (size_t)r->P, np = r->set->n_phrases;
    const size_t *mrow = r->tr.row + np + im->mfirst; /* the mentions' text rows */
    /* [mcount, P] the mentions' maps, [P] the rivals' pooled map (sum or max) */
    float *mmap = NULL, *other = NULL;
    if (r->a->contrast && im->mcount > 1) {
        if (!(mmap = malloc((im->mcount + 1) * P * sizeof *mmap)))
            return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", im->file_name);
        for (size_t m = 0; m < im->mcount; m++) text_map(r, mrow[m], patches, mmap + m * P);
        other = mmap + im->mcount * P;
    }
    sl_status st = SL_OK;
    for (size_t k = im->first; k < im->first + im->count && !st; k++) {
        const size_t row = r->tr.row[k];
        text_map(r, row, patches, sim);
        int rivals = 0;
        for (size_t m = 0; mmap && m < im->mcount; m++) {
            if (r->set->mentions[im->mfirst + m].line != r->set->phrases[k].line || mrow[m] == row)
                continue;
            const float *o = mmap + m * P;
            if (r->a->contrast_pool == POOL_MAX)
                for (size_t p = 0; p < P; p++)
                    other[p] = rivals && other[p] > o[p] ? other[p] : o[p];
            else
                for (size_t p = 0; p < P; p++) other[p] = (rivals ? other[p] : 0) + o[p];
            rivals++;
        }
        if (rivals) {
            float w = (float)r->a->contrast_weight;
            if (r->a->contrast_pool == POOL_MEAN) w /= (float)rivals;
            for (size_t p = 0; p < P; p++) sim[p] -= w * other[p];
        }
        st = sl_ground_box(sim, r->grid, r->grid, r->cell, &r->a->box, map, width, height,
                           &r->pred[k], &r->score[k]);
        if (st) st = sl_wrap_error(st, "%s: ", im->file_name);
    }
    free(mmap);
    return st;
}

static void note_size(const sl_ground_image *im, int w, int h) {
    if (im->width > 0 && im->height > 0 && (im->width != w || im->height != h))
        SL_WARN("%s: annotations say %dx%d, the picture is %dx%d (boxes are compared as given)",
                im->file_name, im->width, im->height, w, h);
}

static void mark_failed(ev_run *r, size_t i, const char *why) {
    r->img_ok[i] = 0;
    r->img_err[i] = strdup(why);
    r->failed++;
}

/* Images with phrases, batch by batch: decode+preprocess in parallel, one
 * forward pass, normalise patches, ground the phrases. */
static sl_status run_images(ev_run *r, const size_t *todo, size_t n_todo) {
    const ev_args *a = r->a;
    const size_t S = (size_t)r->S, P = (size_t)r->P, D = (size_t)r->D;
    const size_t B = (size_t)a->batch, img_floats = 3 * S * S;
    float *pix = malloc(B * img_floats * sizeof(float));
    float *emb = malloc(B * D * sizeof(float));
    float *pat = malloc(B * P * D * sizeof(float));
    float *sim = malloc(B * P * sizeof(float));
    sl_crop_map *maps = malloc(B * sizeof *maps);
    int *wh = malloc(B * 2 * sizeof *wh);
    sl_status *stv = malloc(B * sizeof *stv);
    size_t *slot = malloc(B * sizeof *slot);
    char(*msg)[512] = malloc(B * sizeof *msg);
    sl_status st = SL_OK;
    if (!pix || !emb || !pat || !sim || !maps || !wh || !stv || !slot || !msg) {
        st = sl_set_error(SL_ERR_NOMEM, "cannot allocate a batch of %zu images", B);
        goto done;
    }
    const sl_clip_config *cfg = sl_encoder_config(r->enc);
    sl_preprocess pp = sl_preprocess_clip(r->S);
    memcpy(pp.mean, cfg->image_mean, sizeof pp.mean);
    memcpy(pp.std, cfg->image_std, sizeof pp.std);
    sl_decode_opts dopt = {.max_pixels = a->max_pixels, .min_short_side = r->S};
    for (size_t b0 = 0; b0 < n_todo && st == SL_OK; b0 += B) {
        size_t nb = n_todo - b0 < B ? n_todo - b0 : B;
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t j = 0; j < nb; j++) {
            const sl_ground_image *im = &r->set->images[todo[b0 + j]];
            char *path = image_path(a->images, im->file_name);
            sl_image img;
            if (!path) {
                stv[j] = sl_set_error(SL_ERR_NOMEM, "out of memory");
            } else if ((stv[j] = sl_image_load(path, &dopt, &img)) == SL_OK) {
                stv[j] = sl_image_preprocess(&img, &pp, pix + j * img_floats, &maps[j]);
                wh[2 * j] = img.orig_width > 0 ? img.orig_width : img.width;
                wh[2 * j + 1] = img.orig_height > 0 ? img.orig_height : img.height;
                sl_image_free(&img);
            }
            if (stv[j] != SL_OK) snprintf(msg[j], sizeof msg[j], "%s", sl_last_error());
            free(path);
        }
        size_t good = 0;
        for (size_t j = 0; j < nb; j++) {
            size_t i = todo[b0 + j];
            if (stv[j] != SL_OK) {
                mark_failed(r, i, msg[j]);
                if (a->skip_bad) SL_WARN("%s (skipped)", msg[j]);
                continue;
            }
            if (good != j) {
                memmove(pix + good * img_floats, pix + j * img_floats, img_floats * sizeof(float));
                maps[good] = maps[j];
                wh[2 * good] = wh[2 * j];
                wh[2 * good + 1] = wh[2 * j + 1];
            }
            slot[good++] = i;
        }
        if (r->failed && !a->skip_bad) {
            for (size_t j = 0; j < nb; j++)
                if (stv[j] != SL_OK) SL_ERROR("%s", msg[j]);
            st = sl_set_error(SL_ERR_FORMAT,
                              "%zu image(s) failed to decode (listed above; --skip-bad leaves "
                              "them out)",
                              r->failed);
            break;
        }
        if (good) {
            if ((st = sl_encoder_encode_images(r->enc, pix, good, emb, pat, 1))) break;
            sl_cpu_l2_normalize_rows(pat, good * P, D);
            sl_status gst = SL_OK;
#pragma omp parallel for schedule(dynamic, 1)
            for (size_t j = 0; j < good; j++) {
                const sl_ground_image *im = &r->set->images[slot[j]];
                note_size(im, wh[2 * j], wh[2 * j + 1]);
                sl_status s2 = ground_image(r, slot[j], pat + j * P * D, &maps[j], wh[2 * j],
                                            wh[2 * j + 1], sim + j * P);
                if (s2) {
#pragma omp critical(sl_evg_err)
                    {
                        if (!gst) {
                            gst = s2;
                            snprintf(msg[0], sizeof msg[0], "%s", sl_last_error());
                        }
                    }
                }
            }
            if (gst) {
                st = sl_set_error(gst, "%s", msg[0]);
                break;
            }
        }
        sl_progress_add(r->progress, nb);
    }
done:
    free(pix);
    free(emb);
    free(pat);
    free(sim);
    free(maps);
    free(wh);
    free(stv);
    free(slot);
    free(msg);
    return st;
}

/* The same from an index: stored (normalised) patches, crop maps from the
 * recorded sizes. */
static sl_status run_index(ev_run *r, const size_t *todo, size_t n_todo) {
    const ev_args *a = r->a;
    const size_t P = (size_t)r->P, D = (size_t)r->D;
    float *pat = malloc(P * D * sizeof(float));
    float *sim = malloc(P * sizeof(float));
    sl_status st = SL_OK;
    if (!pat || !sim) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    sl_preprocess pp = sl_preprocess_clip(r->S);
    for (size_t j = 0; j < n_todo && st == SL_OK; j++) {
        size_t i = todo[j];
        const sl_ground_image *im = &r->set->images[i];
        sl_file_rec rec;
        int found = 0;
        if ((st = index_lookup(r->store, a->images, im->file_name, &rec, &found))) break;
        char why[768];
        why[0] = '\0';
        if (!found)
            snprintf(why, sizeof why, "%s/%s: not in the index", a->images, im->file_name);
        else if (rec.id == 0)
            snprintf(why, sizeof why, "%s/%s: failed when indexed: %s", a->images, im->file_name,
                     rec.error);
        if (why[0]) {
            mark_failed(r, i, why);
            if (!a->skip_bad) {
                SL_ERROR("%s", why);
                st = sl_set_error(SL_ERR_NOT_FOUND,
                                  "an image is missing from the index (--skip-bad leaves it out)");
                break;
            }
            SL_WARN("%s (skipped)", why);
            continue;
        }
        int w = rec.width > 0 ? rec.width : im->width, h = rec.height > 0 ? rec.height : im->height;
        sl_crop_map map;
        if ((st = sl_store_get_patches(r->store, rec.id, pat))) break;
        if ((st = sl_image_crop_map(w, h, &pp, &map))) break;
        note_size(im, w, h);
        if ((st = ground_image(r, i, pat, &map, w, h, sim))) break;
        sl_progress_add(r->progress, 1);
    }
done:
    free(pat);
    free(sim);
    return st;
}

/* ---- reports ------------------------------------------------------------- */

/* A float as the double of its shortest decimal form (0.4f -> 0.4, not
 * 0.400000006), for the JSON. */
static double float_value(float v) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)v);
    return strtod(b, NULL);
}

static void print_table(FILE *f, const ev_run *r, const sl_ground_score *sc, const char *bench) {
    fprintf(
        f, "grounding accuracy (IoU >= 0.5) on %s: %zu images, rel %.3g from the %s, upsampling %d",
        bench, sc->images, (double)r->a->box.rel, from_name(r->a->box.from), r->a->box.upsample);
    if (r->a->contrast)
        fprintf(f, ", contrast (%s x %.3g)", pool_name(r->a->contrast_pool), r->a->contrast_weight);
    fprintf(f, "\n");
    fprintf(f, "%-14s %9s %9s\n", "type", "phrases", "accuracy");
    for (int t = 0; t < r->set->n_types; t++) {
        if (!sc->type_phrases[t]) continue;
        fprintf(f, "%-14s %9zu %8.2f%%\n", r->set->types[t], sc->type_phrases[t],
                sl_ground_accuracy(sc->type_correct[t], sc->type_phrases[t]));
    }
    fprintf(f, "%-14s %9zu %8.2f%%\n", "all", sc->phrases,
            sl_ground_accuracy(sc->correct, sc->phrases));
    fprintf(f, "skipped %zu phrases", sc->skipped);
    const char *sep = " (";
    for (int k = 0; k < SL_GSKIP_COUNT; k++)
        if (sc->skipped_by[k]) {
            fprintf(f, "%s%s %zu", sep, sl_ground_skip_name((sl_ground_skip)k), sc->skipped_by[k]);
            sep = ", ";
        }
    fprintf(f, "%s\n", sep[0] == ',' ? ")" : "");
}

static json_t *box_json(sl_box b) {
    return json_pack("[ffff]", (double)b.x0, (double)b.y0, (double)b.x1, (double)b.y1);
}

static sl_status write_json(const ev_run *r, const sl_ground_score *sc, const char *bench) {
    json_t *o = json_object(), *pt = json_object(), *sk = json_object(), *fl = json_array();
    sl_status st = SL_OK;
    if (!o || !pt || !sk || !fl) goto nomem;
    json_object_set_new(o, "benchmark", json_string(bench));
    json_object_set_new(o, "accuracy", json_real(sl_ground_accuracy(sc->correct, sc->phrases)));
    json_object_set_new(o, "correct", json_integer((json_int_t)sc->correct));
    json_object_set_new(o, "phrases", json_integer((json_int_t)sc->phrases));
    json_object_set_new(o, "skipped", json_integer((json_int_t)sc->skipped));
    for (int k = 0; k < SL_GSKIP_COUNT; k++)
        json_object_set_new(sk, sl_ground_skip_name((sl_ground_skip)k),
                            json_integer((json_int_t)sc->skipped_by[k]));
    json_object_set_new(o, "skipped_by", sk);
    sk = NULL;
    json_object_set_new(o, "images", json_integer((json_int_t)sc->images));
    for (size_t i = 0; i < r->set->n_images; i++)
        if (!r->img_ok[i]) json_array_append_new(fl, json_string(r->set->images[i].file_name));
    json_object_set_new(o, "images_failed", fl);
    fl = NULL;
    for (int t = 0; t < r->set->n_types; t++) {
        if (!sc->type_phrases[t]) continue;
        json_object_set_new(pt, r->set->types[t],
                            json_pack("{s:f,s:I,s:I}", "accuracy",
                                      sl_ground_accuracy(sc->type_correct[t], sc->type_phrases[t]),
                                      "phrases", (json_int_t)sc->type_phrases[t], "correct",
                                      (json_int_t)sc->type_correct[t]));
    }
    json_object_set_new(o, "per_type", pt);
    pt = NULL;
    json_object_set_new(o, "iou_threshold", json_real(0.5));
    json_object_set_new(o, "rel", json_real(float_value(r->a->box.rel)));
    json_object_set_new(o, "rel_from", json_string(from_name(r->a->box.from)));
    json_object_set_new(o, "upsample", json_integer(r->a->box.upsample));
    json_object_set_new(o, "contrast", json_boolean(r->a->contrast));
    if (r->a->contrast) {
        json_object_set_new(o, "contrast_pool", json_string(pool_name(r->a->contrast_pool)));
        json_object_set_new(o, "contrast_weight", json_real(r->a->contrast_weight));
    }
    json_object_set_new(o, "source", json_string(r->a->index ? "index" : "images"));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (!text) goto nomem;
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        goto nomem;
    }
    t2[n] = '\n';
    t2[n + 1] = '\0';
    st = sl_write_file_atomic(r->a->json, t2, n + 1);
    free(t2);
    json_decref(o);
    return st;
nomem:
    json_decref(o);
    json_decref(pt);
    json_decref(sk);
    json_decref(fl);
    return sl_set_error(SL_ERR_NOMEM, "out of memory writing %s", r->a->json);
}

static sl_status write_details(const ev_run *r) {
    FILE *f = fopen(r->a->details, "w");
    if (!f) return sl_set_error(SL_ERR_IO, "%s: cannot create", r->a->details);
    const sl_ground_set *set = r->set;
    for (size_t i = 0; i < set->n_images; i++) {
        const sl_ground_image *im = &set->images[i];
        if (!r->img_ok[i]) continue;
        for (size_t k = im->first; k < im->first + im->count; k++) {
            const sl_ground_phrase *p = &set->phrases[k];
            json_t *types = json_array();
            for (int t = 0; t < set->n_types; t++)
                if (p->types >> t & 1) json_array_append_new(types, json_string(set->types[t]));
            double iou = sl_box_iou(r->pred[k], p->box);
            json_t *o = json_pack("{s:s,s:i,s:s,s:s,s:o,s:o,s:o,s:f,s:f,s:b}", "image",
                                  im->file_name, "line", p->line, "entity", p->entity, "phrase",
                                  p->text, "types", types, "gt", box_json(p->box), "box",
                                  box_json(r->pred[k]), "score", (double)r->score[k], "iou", iou,
                                  "correct", sl_ground_correct(r->pred[k], p->box));
            char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
            json_decref(o);
            if (!s) {
                fclose(f);
                return sl_set_error(SL_ERR_NOMEM, "out of memory writing %s", r->a->details);
            }
            fprintf(f, "%s\n", s);
            free(s);
        }
    }
    if (fclose(f) != 0) return sl_set_error(SL_ERR_IO, "%s: write failed", r->a->details);
    return SL_OK;
}

/* ---- argument parsing ------------------------------------------------------ */

/* 0 ok, otherwise the exit code (usage/help). */
static int parse_args(int argc, char **argv, ev_args *a) {
    enum {
        O_MODEL = 256,
        O_ENTITIES,
        O_REFCOCO,
        O_IMAGES,
        O_INDEX,
        O_SPLIT,
        O_JSON,
        O_DETAILS,
        O_REL,
        O_UPSAMPLE,
        O_REL_FROM,
        O_PATCH_TOKENS,
        O_REGION_SIZE,
        O_DEVICE,
        O_BATCH,
        O_THREADS,
        O_MAXPIX,
        O_SKIPBAD,
        O_CONTRAST,
        O_CONTRAST_POOL,
        O_CONTRAST_WEIGHT,
        O_QUIET,
        O_HELP
    };
    static const struct option lo[] = {{"model", required_argument, 0, O_MODEL},
                                       {"entities", required_argument, 0, O_ENTITIES},
                                       {"refcoco", required_argument, 0, O_REFCOCO},
                                       {"images", required_argument, 0, O_IMAGES},
                                       {"index", required_argument, 0, O_INDEX},
                                       {"split", required_argument, 0, O_SPLIT},
                                       {"json", required_argument, 0, O_JSON},
                                       {"details", required_argument, 0, O_DETAILS},
                                       {"rel", required_argument, 0, O_REL},
                                       {"upsample", required_argument, 0, O_UPSAMPLE},
                                       {"rel-from", required_argument, 0, O_REL_FROM},
                                       {"patch-tokens", required_argument, 0, O_PATCH_TOKENS},
                                       {"region-size", required_argument, 0, O_REGION_SIZE},
                                       {"device", required_argument, 0, O_DEVICE},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"max-pixels", required_argument, 0, O_MAXPIX},
                                       {"skip-bad", no_argument, 0, O_SKIPBAD},
                                       {"contrast", no_argument, 0, O_CONTRAST},
                                       {"contrast-pool", required_argument, 0, O_CONTRAST_POOL},
                                       {"contrast-weight", required_argument, 0, O_CONTRAST_WEIGHT},
                                       {"quiet", no_argument, 0, O_QUIET},
                                       {"help", no_argument, 0, O_HELP},
                                       {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->box = sl_ground_opts_default();
    a->contrast_pool = CONTRAST_POOL_DEFAULT;
    a->contrast_weight = CONTRAST_WEIGHT_DEFAULT;
    int pool_set = 0; /* --contrast-pool or --contrast-weight given */
    a->batch = 32;
    a->max_pixels = 100000000;
    optind = 1;
    opterr = 0;
    int c;
    long long v;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
            case O_MODEL:
                a->model = optarg;
                break;
            case O_ENTITIES:
                a->entities = optarg;
                break;
            case O_REFCOCO:
                a->refcoco = optarg;
                break;
            case O_IMAGES:
                a->images = optarg;
                break;
            case O_INDEX:
                a->index = optarg;
                break;
            case O_SPLIT:
                a->split = optarg;
                break;
            case O_JSON:
                a->json = optarg;
                break;
            case O_DETAILS:
                a->details = optarg;
                break;
            case O_SKIPBAD:
                a->skip_bad = 1;
                break;
            case O_CONTRAST:
                a->contrast = 1;
                break;
            case O_QUIET:
                a->quiet = 1;
                break;
            case O_REGION_SIZE:
                if (sl_parse_int_arg(optarg, 1, 4096, &v)) goto bad_value;
                a->region_size = (int)v;
                break;
            case O_PATCH_TOKENS:
                if (sl_patch_tokens_parse(optarg, &a->patch_tokens)) goto bad_value;
                break;
            case O_DEVICE: {
                int cuda, bf16;
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline eval grounding: %s\n", sl_last_error());
                    return SL_EXIT_USAGE;
                }
                a->device = optarg;
                break;
            }
            case O_CONTRAST_POOL:
                pool_set = 1;
                if (!strcmp(optarg, "mean"))
                    a->contrast_pool = POOL_MEAN;
                else if (!strcmp(optarg, "max"))
                    a->contrast_pool = POOL_MAX;
                else
                    goto bad_value;
                break;
            case O_CONTRAST_WEIGHT:
                pool_set = 1;
                if (sl_parse_double_arg(optarg, 0, 4, &a->contrast_weight)) goto bad_value;
                break;
            case O_REL: {
                double rel;
                if (sl_parse_double_arg(optarg, 0, 1, &rel)) goto bad_value;
                a->box.rel = (float)rel;
                break;
            }
            case O_REL_FROM:
                if (!strcmp(optarg, "mean"))
                    a->box.from = SL_GROUND_FROM_MEAN;
                else if (!strcmp(optarg, "min"))
                    a->box.from = SL_GROUND_FROM_MIN;
                else
                    goto bad_value;
                break;
            case O_UPSAMPLE:
                if (sl_parse_int_arg(optarg, 1, SL_GROUND_UPSAMPLE_MAX, &v)) goto bad_value;
                a->box.upsample = (int)v;
                break;
            case O_BATCH:
                if (sl_parse_int_arg(optarg, 1, 4096, &v)) goto bad_value;
                a->batch = (int)v;
                break;
            case O_THREADS:
                if (sl_parse_int_arg(optarg, 1, 1024, &v)) goto bad_value;
                a->threads = (int)v;
                break;
            case O_MAXPIX:
                if (sl_parse_int_arg(optarg, 1, (long long)1 << 40, &v)) goto bad_value;
                a->max_pixels = (uint64_t)v;
                break;
            case 'h':
            case O_HELP:
                help(stdout);
                return -1;
            default:
                fprintf(stderr, "sightline eval grounding: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                return SL_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sightline eval grounding: unexpected argument '%s'\n", argv[optind]);
        return SL_EXIT_USAGE;
    }
    if (!a->images || !!a->entities + !!a->refcoco != 1) {
        fprintf(stderr, "sightline eval grounding: need --images and exactly one of "
                        "--entities, --refcoco (see --help)\n");
        return SL_EXIT_USAGE;
    }
    if (a->split && !a->entities) {
        fprintf(stderr, "sightline eval grounding: --split applies to --entities (RefCOCO splits "
                        "are separate files)\n");
        return SL_EXIT_USAGE;
    }
    if (pool_set && !a->contrast) {
        fprintf(stderr, "sightline eval grounding: --contrast-pool and --contrast-weight apply to "
                        "--contrast\n");
        return SL_EXIT_USAGE;
    }
    return 0;
bad_value:
    sl_cli_bad_value("eval grounding", lo, c, optarg);
    return SL_EXIT_USAGE;
}

int sl_cmd_eval_grounding(int argc, char **argv) {
    ev_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc) return prc < 0 ? SL_EXIT_OK : prc;
    const char *bench = a.entities ? "flickr30k_entities" : "refcoco";
    sl_ground_set set;
    ev_run r;
    memset(&r, 0, sizeof r);
    r.a = &a;
    r.set = &set;
    size_t *todo = NULL, n_todo = 0;
    char *default_model = NULL;
    memset(&set, 0, sizeof set);
    sl_status st = sl_model_or_default(a.model, &a.model, &default_model);
    if (st) goto done;
    st = a.entities ? sl_ground_read_entities(a.entities, a.split, &set)
                    : sl_ground_read_refcoco(a.refcoco, &set);
    if (st) goto done;
    sl_encoder_opts eo = {.threads = a.threads,
                          .patch_tokens = a.patch_tokens,
                          .region_size = a.region_size,
                          .device = a.device};
    if ((st = sl_encoder_open(a.model, &eo, &r.enc))) goto done;
    const sl_clip_config *cfg = sl_encoder_config(r.enc);
    r.S = cfg->image_size;
    r.grid = sl_encoder_patch_grid(r.enc);
    r.cell = (float)cfg->image_size / (float)r.grid;
    r.P = sl_encoder_num_patches(r.enc);
    r.D = cfg->embed_dim;
    if (a.index) {
        char fp[65];
        if ((st = sl_model_fingerprint(a.model, fp))) goto done;
        sl_store_opts so = {.read_only = 1, .dim = r.D, .model_fingerprint = fp};
        if ((st = sl_store_open(a.index, &so, &r.store))) {
            st = sl_wrap_error(st, "%s: ", a.index);
            goto done;
        }
        if (sl_store_patches(r.store) != r.P) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: the index holds %d patches per image, the model gives %d "
                              "(build it with --region and this model)",
                              a.index, sl_store_patches(r.store), r.P);
            goto done;
        }
    }
    size_t np = set.n_phrases ? set.n_phrases : 1, ni = set.n_images ? set.n_images : 1;
    r.pred = calloc(np, sizeof *r.pred);
    r.score = calloc(np, sizeof *r.score);
    r.img_ok = malloc(ni);
    r.img_err = calloc(ni, sizeof *r.img_err);
    todo = malloc(ni * sizeof *todo);
    if (!r.pred || !r.score || !r.img_ok || !r.img_err || !todo) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu phrases", set.n_phrases);
        goto done;
    }
    memset(r.img_ok, 1, ni);
    for (size_t i = 0; i < set.n_images; i++)
        if (set.images[i].count) todo[n_todo++] = i;
    if ((st = encode_texts(&r))) goto done;
    r.progress = sl_progress_create("grounding", n_todo, a.quiet);
    st = a.index ? run_index(&r, todo, n_todo) : run_images(&r, todo, n_todo);
    sl_progress_finish(r.progress);
    r.progress = NULL;
    if (st) goto done;
    sl_ground_score sc;
    sl_ground_score_compute(&set, r.pred, r.img_ok, &sc);
    print_table(stdout, &r, &sc, a.entities ? "Flickr30K Entities" : "RefCOCO");
    if (r.failed) {
        printf("%zu image(s) left out:\n", r.failed);
        for (size_t i = 0; i < set.n_images; i++)
            if (r.img_err[i]) printf("  %s\n", r.img_err[i]);
    }
    if (a.json && (st = write_json(&r, &sc, bench))) goto done;
    if (a.details && (st = write_details(&r))) goto done;
done:;
    int rc = SL_EXIT_OK;
    if (st) {
        SL_ERROR("%s", sl_last_error());
        rc = SL_EXIT_FAILED;
    } else if (r.failed) {
        rc = SL_EXIT_PARTIAL;
    }
    sl_progress_finish(r.progress);
    if (r.img_err)
        for (size_t i = 0; i < set.n_images; i++) free(r.img_err[i]);
    free(r.img_err);
    free(r.img_ok);
    free(r.pred);
    free(r.score);
    free(r.text_emb);
    free(r.tr.texts);
    free(r.tr.row);
    free(todo);
    if (r.store) sl_store_close(r.store);
    sl_encoder_free(r.enc);
    sl_ground_set_free(&set);
    free(default_model);
    return rc;
}
