/*
 * query/refcoco.c - the strict reader for RefCOCO/RefCOCO+/RefCOCOg in the
 * COCO-style JSON of MDETR/GLIP (see sightline/eval_grounding.h).
 */
#include "common/json_file.h"
#include "sightline/eval_grounding.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REFCOCO_MAX_BYTES ((size_t)1 << 30) /* largest JSON file read */
#define REFCOCO_MAX_SIDE  (1 << 16)         /* largest declared width/height */

/* One referring expression while reading. */
typedef struct ref_expr {
    json_int_t id;         /* images[].id */
    const char *file_name; /* borrowed from the JSON tree */
    const char *caption;
    int width, height;
    size_t index; /* position in images[] */
    sl_box box;   /* union of its annotations */
    int boxes;    /* annotations seen */
    size_t group; /* order of first appearance of its file_name */
} ref_expr;

static int cmp_id(const void *a, const void *b) {
    json_int_t x = ((const ref_expr *)a)->id, y = ((const ref_expr *)b)->id;
    return x < y ? -1 : x > y;
}

/* Order: picture (first appearance), then position in images[]. */
static int cmp_group(const void *a, const void *b) {
    const ref_expr *x = a, *y = b;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_name_index(const void *a, const void *b) {
    const ref_expr *x = *(ref_expr *const *)a, *y = *(ref_expr *const *)b;
    int c = strcmp(x->file_name, y->file_name);
    if (c) return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static sl_status get_int(const char *path, const char *where, size_t i, json_t *obj,
                         const char *key, json_int_t lo, json_int_t hi, json_int_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return sl_set_error(SL_ERR_FORMAT, "%s: %s[%zu] lacks \"%s\"", path, where, i, key);
    json_int_t x;
    if (json_is_integer(v))
        x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 9e15)
        x = (json_int_t)json_real_value(v);
    else
        return sl_set_error(SL_ERR_FORMAT, "%s: %s[%zu].%s is not an integer", path, where, i, key);
    if (x < lo || x > hi)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s[%zu].%s = %lld outside [%lld, %lld]", path,
                            where, i, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return SL_OK;
}

static sl_status get_str(const char *path, const char *where, size_t i, json_t *obj,
                         const char *key, size_t maxlen, const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v || !json_is_string(v))
        return sl_set_error(SL_ERR_FORMAT, "%s: %s[%zu].%s is missing or not a string", path, where,
                            i, key);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > maxlen || strlen(s) != n)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: %s[%zu].%s is empty, longer than %zu bytes or "
                            "holds a NUL",
                            path, where, i, key, maxlen);
    *out = s;
    return SL_OK;
}

sl_status sl_ground_read_refcoco(const char *path, sl_ground_set *out) {
    sl_ground_set_init(out);
    json_t *root;
    sl_status st = sl_json_load_file(path, REFCOCO_MAX_BYTES, &root);
    if (st) return st;
    ref_expr *ex = NULL, **by_name = NULL;
    size_t n = 0;
    json_t *images = json_object_get(root, "images");
    json_t *anns = json_object_get(root, "annotations");
    if (!json_is_object(root) || !json_is_array(images) || !json_is_array(anns)) {
        st = sl_set_error(SL_ERR_FORMAT,
                          "%s: not a COCO-style object with \"images\" and "
                          "\"annotations\" arrays",
                          path);
        goto done;
    }
    n = json_array_size(images);
    ex = calloc(n ? n : 1, sizeof *ex);
    by_name = calloc(n ? n : 1, sizeof *by_name);
    if (!ex || !by_name) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory for %zu images", path, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(images, i);
        if (!json_is_object(im)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: images[%zu] is not an object", path, i);
            goto done;
        }
        json_int_t id, w, h;
        if ((st = get_int(path, "images", i, im, "id", INT64_MIN / 2, INT64_MAX / 2, &id)) ||
            (st = get_int(path, "images", i, im, "width", 1, REFCOCO_MAX_SIDE, &w)) ||
            (st = get_int(path, "images", i, im, "height", 1, REFCOCO_MAX_SIDE, &h)) ||
            (st = get_str(path, "images", i, im, "file_name", 1024, &ex[i].file_name)) ||
            (st = get_str(path, "images", i, im, "caption", SL_GROUND_MAX_PHRASE, &ex[i].caption)))
            goto done;
        if (strstr(ex[i].file_name, "..") || ex[i].file_name[0] == '/') {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: images[%zu].file_name '%s' leaves the images "
                              "folder",
                              path, i, ex[i].file_name);
            goto done;
        }
        ex[i].id = id;
        ex[i].width = (int)w;
        ex[i].height = (int)h;
        ex[i].index = i;
        by_name[i] = &ex[i];
    }
    /* the same picture must be declared with one size everywhere; group
     * expressions by picture in order of first appearance */
    if (n) qsort(by_name, n, sizeof *by_name, cmp_name_index);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(by_name[j]->file_name, by_name[i]->file_name) == 0) {
            if (by_name[j]->width != by_name[i]->width ||
                by_name[j]->height != by_name[i]->height) {
                st = sl_set_error(SL_ERR_FORMAT,
                                  "%s: images[%zu] declares %s as %dx%d, "
                                  "images[%zu] as %dx%d",
                                  path, by_name[j]->index, by_name[j]->file_name, by_name[j]->width,
                                  by_name[j]->height, by_name[i]->index, by_name[i]->width,
                                  by_name[i]->height);
                goto done;
            }
            by_name[j]->group = by_name[i]->index;
            j++;
        }
        i = j;
    }
    /* ids must be unique: sort by id and look annotations up */
    if (n) qsort(ex, n, sizeof *ex, cmp_id);
    for (size_t i = 1; i < n; i++)
        if (ex[i].id == ex[i - 1].id) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: images[%zu] and images[%zu] share id %lld", path,
                              ex[i - 1].index, ex[i].index, (long long)ex[i].id);
            goto done;
        }
    size_t na = json_array_size(anns);
    for (size_t i = 0; i < na; i++) {
        json_t *an = json_array_get(anns, i);
        if (!json_is_object(an)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: annotations[%zu] is not an object", path, i);
            goto done;
        }
        json_int_t iid;
        if ((st = get_int(path, "annotations", i, an, "image_id", INT64_MIN / 2, INT64_MAX / 2,
                          &iid)))
            goto done;
        json_t *bb = json_object_get(an, "bbox");
        double v[4];
        if (!json_is_array(bb) || json_array_size(bb) != 4) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: annotations[%zu].bbox is not [x, y, w, h]", path,
                              i);
            goto done;
        }
        for (int k = 0; k < 4; k++) {
            json_t *e = json_array_get(bb, (size_t)k);
            if (!json_is_number(e) || !isfinite(json_number_value(e)) ||
                fabs(json_number_value(e)) > REFCOCO_MAX_SIDE * 4.0) {
                st = sl_set_error(SL_ERR_FORMAT,
                                  "%s: annotations[%zu].bbox[%d] is not a "
                                  "finite number of pixels",
                                  path, i, k);
                goto done;
            }
            v[k] = json_number_value(e);
        }
        if (v[2] < 0 || v[3] < 0) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: annotations[%zu].bbox has a negative size", path,
                              i);
            goto done;
        }
        ref_expr key = {.id = iid};
        ref_expr *r = n ? bsearch(&key, ex, n, sizeof *ex, cmp_id) : NULL;
        if (!r) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: annotations[%zu].image_id %lld names no image",
                              path, i, (long long)iid);
            goto done;
        }
        sl_box b = {(float)v[0], (float)v[1], (float)(v[0] + v[2]), (float)(v[1] + v[3])};
        r->box = r->boxes ? sl_box_union(r->box, b) : b;
        r->boxes++;
    }
    /* emit: pictures in order of first appearance, expressions in file order */
    if (n) qsort(ex, n, sizeof *ex, cmp_group);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || ex[i].group != ex[i - 1].group)
            if ((st = sl_ground_set_add_image(out, ex[i].file_name, ex[i].file_name, ex[i].width,
                                              ex[i].height)))
                goto done;
        if (!ex[i].boxes) {
            out->skipped[SL_GSKIP_ABSENT]++;
            continue;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%lld", (long long)ex[i].id);
        if ((st = sl_ground_set_add_phrase(out, ex[i].caption, idbuf, 0, ex[i].box, ex[i].boxes,
                                           (int)ex[i].index)))
            goto done;
    }
done:
    free(ex);
    free(by_name);
    json_decref(root);
    return st;
}
