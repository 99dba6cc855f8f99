/*
 * corpus/corpus.c - the demo corpus builder (see corpus.h).
 */
#include "common/json_file.h"
#include "corpus/corpus.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#define MAX_JSON_BYTES ((size_t)256 << 20)
#define MAX_PNG_SIDE   1024
#define MAX_LABEL      200
#define MAX_TAGS       16
#define MAX_TAG        64
#define MAX_OBJECTS    4
#define MAX_COUNT      10000000

/* snprintf that callers use only with folders checked short enough
 * (sl_corpus_build refuses data or output paths over MAX_DIR bytes). */
#define MAX_DIR 2000
static void fmt_into(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_into(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Random numbers: splitmix64 seeding xoshiro256**                          */
/* ------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A stream for (seed, kind, split, index): independent of the order items
 * are made in. */
static void rng_init(rng *r, uint64_t seed, uint64_t kind, uint64_t split, uint64_t index) {
    uint64_t x = seed;
    x = splitmix64(&x) ^ (kind * 0x100000001b3ULL);
    x = splitmix64(&x) ^ (split * 0xc2b2ae3d27d4eb4fULL);
    x = splitmix64(&x) ^ index;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double rng_unif(rng *r) {
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}
static double rng_range(rng *r, double lo, double hi) {
    return lo + (hi - lo) * rng_unif(r);
}
static int rng_int(rng *r, int n) { /* [0, n) */
    return (int)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

static void shuffle_ints(rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = rng_int(r, i + 1), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ------------------------------------------------------------------------ */
/* Emoji table                                                              */
/* ------------------------------------------------------------------------ */

typedef struct emoji {
    char unified[64];
    char label[MAX_LABEL];
    char tags[MAX_TAGS][MAX_TAG];
    int n_tags;
    const char *type; /* entity type of the scenes */
    uint8_t *rgba[2]; /* 64x64-ish RGBA of the google and twitter set */
    int w[2], h[2];
} emoji;

typedef struct table {
    emoji *e;
    size_t n;
} table;

static void table_free(table *t) {
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].rgba[0]);
        free(t->e[i].rgba[1]);
    }
    free(t->e);
    t->e = NULL;
    t->n = 0;
}

static sl_status load_json(const char *path, json_t **out) {
    return sl_json_load_file(path, MAX_JSON_BYTES, out);
}

static sl_status read_version(const char *dir, char *out, size_t cap) {
    char path[4096];
    fmt_into(out, cap, "unknown");
    fmt_into(path, sizeof path, "%s/package.json", dir);
    struct stat sb;
    if (stat(path, &sb)) return SL_OK;
    json_t *j;
    sl_status st = load_json(path, &j);
    if (st) return st;
    const char *v = json_string_value(json_object_get(j, "version"));
    if (v && strlen(v) < cap) fmt_into(out, cap, "%s", v);
    json_decref(j);
    return SL_OK;
}

/* Code points of "1F600-FE0F" into cp (at most max); count or -1. */
static int parse_codes(const char *s, uint32_t *cp, int max) {
    int n = 0;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 16);
        if (end == s || v > 0x10FFFF || n >= max) return -1;
        cp[n++] = (uint32_t)v;
        s = end;
        if (*s == '-')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

/* The unified code without FE0F ("2764-FE0F" -> "2764"). */
static void strip_fe0f(const char *in, char *out, size_t cap) {
    size_t o = 0;
    const char *p = in;
    while (*p && o + 1 < cap) {
        if (!strncmp(p, "FE0F", 4) && (p[4] == '-' || !p[4])) {
            p += 4;
            if (*p == '-') p++;
            if (o > 0 && out[o - 1] == '-' && !*p) o--;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = 0;
}

static const char *entity_type(const char *category, const char *sub) {
    if (!category) return "other";
    if (!strcmp(category, "Smileys & Emotion")) return "faces";
    if (!strcmp(category, "People & Body")) {
        if (!strncmp(sub, "hand", 4) || !strcmp(sub, "body-parts")) return "bodyparts";
        return "people";
    }
    if (!strcmp(category, "Animals & Nature"))
        return !strncmp(sub, "plant", 5) ? "plants" : "animals";
    if (!strcmp(category, "Food & Drink")) return "food";
    if (!strcmp(category, "Travel & Places"))
        return !strncmp(sub, "transport", 9) ? "vehicles" : "places";
    if (!strcmp(category, "Activities")) return "activities";
    if (!strcmp(category, "Objects")) {
        if (!strcmp(sub, "clothing")) return "clothing";
        if (!strcmp(sub, "musical-instrument")) return "instruments";
        return "objects";
    }
    if (!strcmp(category, "Symbols")) return "symbols";
    return "other";
}

/* Read one PNG as RGBA (libpng's simplified API). */
static sl_status load_png_rgba(const char *path, uint8_t **out, int *w, int *h) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    *out = NULL;
    if (!png_image_begin_read_from_file(&im, path))
        return sl_set_error(SL_ERR_FORMAT, "%s: %s", path, im.message);
    if (im.width == 0 || im.height == 0 || im.width > MAX_PNG_SIDE || im.height > MAX_PNG_SIDE) {
        png_image_free(&im);
        return sl_set_error(SL_ERR_LIMIT, "%s: %ux%u PNG (at most %d per side)", path, im.width,
                            im.height, MAX_PNG_SIDE);
    }
    im.format = PNG_FORMAT_RGBA;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
    if (!buf) {
        png_image_free(&im);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!png_image_finish_read(&im, NULL, buf, 0, NULL)) {
        free(buf);
        return sl_set_error(SL_ERR_FORMAT, "%s: %s", path, im.message);
    }
    *out = buf;
    *w = (int)im.width;
    *h = (int)im.height;
    return SL_OK;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Copy a label or tag, ASCII-lowercasing nothing, replacing brackets (the
 * Entities markup) and control characters. 0 when it does not fit. */
static int clean_copy(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n == 0 || n >= cap) return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = src[i];
        if (c == '[')
            c = '(';
        else if (c == ']')
            c = ')';
        else if (c && (unsigned char)c < 0x20)
            c = ' ';
        dst[i] = c;
    }
    return 1;
}

static sl_status load_table(const char *data, table *t, sl_corpus_stats *stats) {
    static const char *const sets[2] = {"google", "twitter"};
    char path[4096];
    json_t *ej = NULL, *bj = NULL;
    sl_status st;
    memset(t, 0, sizeof *t);
    fmt_into(path, sizeof path, "%s/emoji-datasource-google/emoji.json", data);
    if (!file_exists(path))
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: not found (run scripts/fetch-demo-data, or give --data DIR)",
                            path);
    if ((st = load_json(path, &ej))) return st;
    fmt_into(path, sizeof path, "%s/emojibase-data/en/data.json", data);
    if (!file_exists(path)) {
        json_decref(ej);
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: not found (run scripts/fetch-demo-data, or give --data DIR)",
                            path);
    }
    if ((st = load_json(path, &bj))) {
        json_decref(ej);
        return st;
    }
    if (!json_is_array(ej) || !json_is_array(bj) || json_array_size(ej) > 100000 ||
        json_array_size(bj) > 100000) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: emoji.json and en/data.json must be arrays", data);
        goto done;
    }
    size_t n = json_array_size(ej), nb = json_array_size(bj);
    t->e = calloc(n ? n : 1, sizeof *t->e);
    if (!t->e) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    stats->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(ej, i);
        const char *uni = json_string_value(json_object_get(o, "unified"));
        const char *cat = json_string_value(json_object_get(o, "category"));
        const char *sub = json_string_value(json_object_get(o, "subcategory"));
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *nq = json_string_value(json_object_get(o, "non_qualified"));
        if (!json_is_object(o) || !uni || strlen(uni) >= 64) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s/emoji-datasource-google/emoji.json: entry %zu "
                              "lacks a valid \"unified\"",
                              data, i);
            goto done;
        }
        if (!sub) sub = "";
        uint32_t cp[16];
        int ncp = parse_codes(uni, cp, 16);
        if (ncp <= 0) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s/emoji-datasource-google/emoji.json: entry %zu: "
                              "bad code \"%s\"",
                              data, i, uni);
            goto done;
        }
        int flag = cat && !strcmp(cat, "Flags"), skin = 0, keycap = !strcmp(sub, "keycap");
        int component = cat && !strcmp(cat, "Component");
        for (int k = 0; k < ncp; k++) {
            if (cp[k] >= 0x1F1E6 && cp[k] <= 0x1F1FF) flag = 1;
            if (cp[k] >= 0x1F3FB && cp[k] <= 0x1F3FF) skin = 1;
            if (cp[k] == 0x20E3) keycap = 1;
            if (cp[k] >= 0x1F9B0 && cp[k] <= 0x1F9B3 && ncp == 1) component = 1;
        }
        if (skin && ncp == 1) component = 1, skin = 0; /* the bare modifiers */
        /* emojibase entry */
        char stripped[64];
        strip_fe0f(uni, stripped, sizeof stripped);
        json_t *b = NULL;
        for (size_t k = 0; k < nb && !b; k++) {
            json_t *c = json_array_get(bj, k);
            const char *hx = json_string_value(json_object_get(c, "hexcode"));
            if (hx && (!strcmp(hx, uni) || !strcmp(hx, stripped) || (nq && !strcmp(hx, nq)))) b = c;
        }
        if (b && json_integer_value(json_object_get(b, "group")) == 2 &&
            json_is_integer(json_object_get(b, "group")))
            component = 1;
        if (flag) {
            stats->ex_flag++;
            continue;
        }
        if (component) {
            stats->ex_component++;
            continue;
        }
        if (keycap) {
            stats->ex_keycap++;
            continue;
        }
        if (skin) {
            stats->ex_skin++;
            continue;
        }
        /* the images of both sets */
        char lower[64];
        size_t L = strlen(uni);
        for (size_t k = 0; k <= L; k++) lower[k] = (char)tolower((unsigned char)uni[k]);
        emoji *e = &t->e[t->n];
        memset(e, 0, sizeof *e);
        int have = 1;
        for (int s = 0; s < 2 && have; s++) {
            fmt_into(path, sizeof path, "%s/emoji-datasource-%s/img/%s/64/%s.png", data, sets[s],
                     sets[s], lower);
            have = file_exists(path);
        }
        if (!have) {
            stats->ex_noimg++;
            continue;
        }
        fmt_into(e->unified, sizeof e->unified, "%s", uni);
        const char *label = b ? json_string_value(json_object_get(b, "label")) : NULL;
        char namebuf[MAX_LABEL];
        if (!label && name && strlen(name) < sizeof namebuf) {
            size_t m = strlen(name);
            for (size_t k = 0; k <= m; k++) namebuf[k] = (char)tolower((unsigned char)name[k]);
            label = namebuf;
        }
        if (!label || !clean_copy(e->label, sizeof e->label, label)) {
            stats->ex_noimg++; /* nothing to call it: treated like a missing picture */
            continue;
        }
        if (!b) stats->n_nolabel++;
        json_t *tags = b ? json_object_get(b, "tags") : NULL;
        for (size_t k = 0; k < json_array_size(tags) && e->n_tags < MAX_TAGS; k++) {
            const char *tg = json_string_value(json_array_get(tags, k));
            if (tg && strcmp(tg, e->label) && clean_copy(e->tags[e->n_tags], MAX_TAG, tg))
                e->n_tags++;
        }
        e->type = entity_type(cat, sub);
        t->n++;
    }
    stats->n_emoji = t->n;
    if (t->n < MAX_OBJECTS) {
        st = sl_set_error(SL_ERR_INVALID, "%s: only %zu usable emoji (at least %d needed)", data,
                          t->n, MAX_OBJECTS);
        goto done;
    }
    /* decode the pictures */
    sl_status first = SL_OK;
    char firstmsg[512] = "";
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < t->n; i++) {
        emoji *e = &t->e[i];
        char p[4096], lower[64];
        size_t L = strlen(e->unified);
        for (size_t k = 0; k <= L; k++) lower[k] = (char)tolower((unsigned char)e->unified[k]);
        for (int s = 0; s < 2; s++) {
            fmt_into(p, sizeof p, "%s/emoji-datasource-%s/img/%s/64/%s.png", data, sets[s], sets[s],
                     lower);
            sl_status s2 = load_png_rgba(p, &e->rgba[s], &e->w[s], &e->h[s]);
            if (s2) {
#pragma omp critical(corpus_err)
                if (!first) {
                    first = s2;
                    fmt_into(firstmsg, sizeof firstmsg, "%s", sl_last_error());
                }
            }
        }
    }
    if (first) st = sl_set_error(first, "%s", firstmsg);
done:
    json_decref(ej);
    json_decref(bj);
    if (st) table_free(t);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Drawing                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct named_color {
    const char *name;
    float rgb[3];
} named_color;

static const named_color palette[] = {
    {"red", {220, 50, 47}},     {"orange", {245, 140, 40}}, {"yellow", {240, 210, 60}},
    {"green", {80, 170, 80}},   {"teal", {40, 150, 150}},   {"blue", {50, 110, 210}},
    {"purple", {130, 80, 190}}, {"pink", {240, 140, 180}},  {"brown", {140, 90, 50}},
    {"gray", {128, 128, 128}},  {"white", {240, 240, 240}}, {"black", {30, 30, 30}},
    {"beige", {225, 205, 170}}, {"navy", {30, 40, 100}},    {"olive", {128, 128, 40}},
    {"cyan", {80, 200, 230}},
};
#define N_PALETTE ((int)(sizeof palette / sizeof palette[0]))

typedef struct background {
    int kind;           /* 0 linear, 1 radial, 2 blobs, 3 noise */
    const char *color;  /* the main color's name */
    const char *color2; /* the second one's (may equal color) */
} background;

static float clampf(float v, float lo, float hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static void jitter(rng *r, const float in[3], float out[3], float amount) {
    for (int c = 0; c < 3; c++)
        out[c] = clampf(in[c] + (float)rng_range(r, -amount, amount), 0, 255);
}

/* Fill canvas [size*size*3] floats. */
static void draw_background(rng *r, float *cv, int size, background *bg) {
    int i1 = rng_int(r, N_PALETTE), i2 = i1;
    float c1[3], c2[3];
    jitter(r, palette[i1].rgb, c1, 18);
    if (rng_unif(r) < 0.5) {
        i2 = rng_int(r, N_PALETTE);
        jitter(r, palette[i2].rgb, c2, 18);
    } else {
        float f = (float)rng_range(r, 0.55, 1.45);
        for (int c = 0; c < 3; c++) c2[c] = clampf(c1[c] * f + (f > 1 ? 20 : 0), 0, 255);
    }
    bg->kind = rng_int(r, 4);
    bg->color = palette[i1].name;
    bg->color2 = palette[i2].name;
    float inv = 1.0f / (float)size;
    if (bg->kind == 0) { /* linear gradient */
        double a = rng_range(r, 0, 2 * M_PI);
        float dx = (float)cos(a), dy = (float)sin(a);
        float lo = 0.5f * (fabsf(dx) + fabsf(dy));
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                float u = ((x + 0.5f) * inv - 0.5f) * dx + ((y + 0.5f) * inv - 0.5f) * dy;
                float t = clampf((u + lo) / (2 * lo), 0, 1);
                float *p = cv + ((size_t)y * size + x) * 3;
                for (int c = 0; c < 3; c++) p[c] = c1[c] + (c2[c] - c1[c]) * t;
            }
    } else if (bg->kind == 1) { /* radial */
        float cx = (float)rng_range(r, 0.2, 0.8), cy = (float)rng_range(r, 0.2, 0.8);
        float rad = (float)rng_range(r, 0.4, 0.9);
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                float ux = (x + 0.5f) * inv - cx, uy = (y + 0.5f) * inv - cy;
                float t = clampf(sqrtf(ux * ux + uy * uy) / rad, 0, 1);
                t = t * t * (3 - 2 * t);
                float *p = cv + ((size_t)y * size + x) * 3;
                for (int c = 0; c < 3; c++) p[c] = c1[c] + (c2[c] - c1[c]) * t;
            }
    } else if (bg->kind == 2) { /* blurred blobs over the main color */
        for (size_t k = 0; k < (size_t)size * size; k++)
            for (int c = 0; c < 3; c++) cv[k * 3 + c] = c1[c];
        int nb = 3 + rng_int(r, 5);
        for (int b = 0; b < nb; b++) {
            float col[3];
            if (rng_unif(r) < 0.5)
                jitter(r, c2, col, 40);
            else
                jitter(r, palette[rng_int(r, N_PALETTE)].rgb, col, 30);
            float bx = (float)rng_unif(r), by = (float)rng_unif(r);
            float sg = (float)rng_range(r, 0.06, 0.25), a = (float)rng_range(r, 0.3, 0.8);
            float k2 = 1.0f / (2 * sg * sg);
            for (int y = 0; y < size; y++) {
                float uy = (y + 0.5f) * inv - by;
                for (int x = 0; x < size; x++) {
                    float ux = (x + 0.5f) * inv - bx;
                    float w = a * expf(-(ux * ux + uy * uy) * k2);
                    if (w < 1e-3f) continue;
                    float *p = cv + ((size_t)y * size + x) * 3;
                    for (int c = 0; c < 3; c++) p[c] += (col[c] - p[c]) * w;
                }
            }
        }
    } else { /* value noise between the two colors */
        enum { G = 9 };
        float grid[G][G];
        for (int a = 0; a < G; a++)
            for (int b = 0; b < G; b++) grid[a][b] = (float)rng_unif(r);
        float cell = (float)(G - 1) * inv;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                float gx = (x + 0.5f) * cell, gy = (y + 0.5f) * cell;
                int ix = (int)gx, iy = (int)gy;
                if (ix > G - 2) ix = G - 2;
                if (iy > G - 2) iy = G - 2;
                float fx = gx - ix, fy = gy - iy;
                fx = fx * fx * (3 - 2 * fx);
                fy = fy * fy * (3 - 2 * fy);
                float t = (grid[iy][ix] * (1 - fx) + grid[iy][ix + 1] * fx) * (1 - fy) +
                          (grid[iy + 1][ix] * (1 - fx) + grid[iy + 1][ix + 1] * fx) * fy;
                float *p = cv + ((size_t)y * size + x) * 3;
                for (int c = 0; c < 3; c++) p[c] = c1[c] + (c2[c] - c1[c]) * t;
            }
    }
    /* grain */
    float amp = (float)rng_range(r, 2, bg->kind == 3 ? 14 : 6);
    for (size_t k = 0; k < (size_t)size * size; k++) {
        float g = (float)((int)(rng_next(r) >> 56) - 128) * (amp / 128.0f);
        for (int c = 0; c < 3; c++) cv[k * 3 + c] += g;
    }
}

/* Bilinear sample of premultiplied RGBA at source position (u, v). */
static void sample(const uint8_t *src, int w, int h, float u, float v, float out[4]) {
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    float fx = u - x0, fy = v - y0;
    out[0] = out[1] = out[2] = out[3] = 0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int x = x0 + dx, y = y0 + dy;
            if (x < 0 || y < 0 || x >= w || y >= h) continue;
            float wt = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
            const uint8_t *p = src + ((size_t)y * w + x) * 4;
            float a = p[3] * (1.0f / 255);
            out[0] += wt * p[0] * a;
            out[1] += wt * p[1] * a;
            out[2] += wt * p[2] * a;
            out[3] += wt * a;
        }
}

typedef struct box {
    int x0, y0, x1, y1; /* 0-based, x1/y1 exclusive */
} box;

/* Draw the emoji scaled to s x s at (ox, oy); box = its visible pixels
 * (alpha > 0.1). */
static void paste(float *cv, int size, const emoji *e, int set, int ox, int oy, int s, box *bb) {
    const uint8_t *src = e->rgba[set];
    int w = e->w[set], h = e->h[set];
    float sx = (float)w / s, sy = (float)h / s;
    bb->x0 = bb->y0 = size;
    bb->x1 = bb->y1 = 0;
    for (int y = oy; y < oy + s; y++) {
        if (y < 0 || y >= size) continue;
        for (int x = ox; x < ox + s; x++) {
            if (x < 0 || x >= size) continue;
            float px[4];
            sample(src, w, h, (x - ox + 0.5f) * sx - 0.5f, (y - oy + 0.5f) * sy - 0.5f, px);
            if (px[3] <= 0) continue;
            float *p = cv + ((size_t)y * size + x) * 3;
            for (int c = 0; c < 3; c++) p[c] = px[c] + p[c] * (1 - px[3]);
            if (px[3] > 0.1f) {
                if (x < bb->x0) bb->x0 = x;
                if (y < bb->y0) bb->y0 = y;
                if (x + 1 > bb->x1) bb->x1 = x + 1;
                if (y + 1 > bb->y1) bb->y1 = y + 1;
            }
        }
    }
    if (bb->x1 <= bb->x0) { /* nothing visible: the square */
        bb->x0 = ox < 0 ? 0 : ox;
        bb->y0 = oy < 0 ? 0 : oy;
        bb->x1 = ox + s > size ? size : ox + s;
        bb->y1 = oy + s > size ? size : oy + s;
    }
}

/* Canvas to 8-bit RGB and a JPEG file. */
static sl_status write_jpeg(const float *cv, int size, int quality, const char *path, uint8_t *rgb,
                            uint64_t *bytes) {
    for (size_t k = 0; k < (size_t)size * size * 3; k++)
        rgb[k] = (uint8_t)lrintf(clampf(cv[k], 0, 255));
    tjhandle tj = tjInitCompress();
    if (!tj) return sl_set_error(SL_ERR_EXTERNAL, "TurboJPEG: %s", tjGetErrorStr());
    unsigned char *jpg = NULL;
    unsigned long len = 0;
    if (tjCompress2(tj, rgb, size, 0, size, TJPF_RGB, &jpg, &len, TJSAMP_420, quality,
                    TJFLAG_ACCURATEDCT)) {
        sl_status st = sl_set_error(SL_ERR_EXTERNAL, "%s: TurboJPEG: %s", path, tjGetErrorStr2(tj));
        tjDestroy(tj);
        return st;
    }
    tjDestroy(tj);
    FILE *f = fopen(path, "wb");
    sl_status st = SL_OK;
    if (!f)
        st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
    else {
        if (fwrite(jpg, 1, len, f) != len) st = sl_set_error(SL_ERR_IO, "%s: write failed", path);
        if (fclose(f) && !st) st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
    }
    tjFree(jpg);
    *bytes += len;
    return st;
}

/* ------------------------------------------------------------------------ */
/* Captions                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->p ? b->p + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap + (size_t)k + 64) * 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static const char *article(const char *word) {
    return strchr("aeiouAEIOU", word[0]) && word[0] ? "an" : "a";
}

static const char *position_word(float cx, float cy) {
    static const char *const names[3][3] = {{"top left", "top", "top right"},
                                            {"left", "center", "right"},
                                            {"bottom left", "bottom", "bottom right"}};
    int col = cx < 1.0f / 3   ? 0
              : cx < 2.0f / 3 ? 1
                              : 2,
        row = cy < 1.0f / 3   ? 0
              : cy < 2.0f / 3 ? 1
                              : 2;
    return names[row][col];
}

static void bg_desc(const background *bg, char *out, size_t cap) {
    int two = strcmp(bg->color, bg->color2) != 0;
    switch (bg->kind) {
        case 0:
            if (two)
                fmt_into(out, cap, "%s and %s gradient", bg->color, bg->color2);
            else
                fmt_into(out, cap, "%s gradient", bg->color);
            break;
        case 1:
            fmt_into(out, cap, "soft %s glow", bg->color);
            break;
        case 2:
            fmt_into(out, cap, "blurry %s pattern", bg->color);
            break;
        default:
            fmt_into(out, cap, "mottled %s texture", bg->color);
            break;
    }
}

#define N_TEMPLATES 10

/* Caption `tpl` of a single-emoji picture (malloc'ed). */
static char *single_caption(rng *r, int tpl, const emoji *e, const background *bg, float frac,
                            float cx, float cy) {
    sbuf b = {0};
    const char *L = e->label, *a = article(L);
    const char *tag = e->n_tags ? e->tags[rng_int(r, e->n_tags)] : L;
    const char *tag2 = e->n_tags > 1 ? e->tags[rng_int(r, e->n_tags)] : NULL;
    if (tag2 && !strcmp(tag2, tag)) tag2 = NULL;
    char desc[128];
    bg_desc(bg, desc, sizeof desc);
    const char *sz = frac < 0.38f ? "small" : frac < 0.55f ? "medium-sized" : "large";
    switch (tpl) {
        case 0:
            sb_printf(&b, "a photo of %s %s", a, L);
            break;
        case 1:
            sb_printf(&b, "%s %s on %s %s background", a, L, article(bg->color), bg->color);
            break;
        case 2:
            sb_printf(&b, "an emoji of %s", tag);
            break;
        case 3:
            sb_printf(&b, "%s %s %s emoji", article(sz), sz, L);
            break;
        case 4:
            sb_printf(&b, "%s %s in the %s of the picture", a, L, position_word(cx, cy));
            break;
        case 5:
            sb_printf(&b, "%s %s icon over %s %s", a, L, article(desc), desc);
            break;
        case 6:
            if (tag2)
                sb_printf(&b, "a picture of %s %s, %s and %s", a, L, tag, tag2);
            else
                sb_printf(&b, "a picture of %s %s, %s", a, L, tag);
            break;
        case 7:
            sb_printf(&b, "a cartoon %s against %s %s backdrop", L, article(bg->color), bg->color);
            break;
        case 8:
            sb_printf(&b, "%s", L);
            break;
        default:
            sb_printf(&b, "something %s: %s %s", tag, a, L);
            break;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Karpathy-style tokens: lowercased runs of letters, digits and non-ASCII
 * bytes. */
static json_t *tokens_of(const char *s) {
    json_t *arr = json_array();
    char tok[256];
    size_t n = 0;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c && (isalnum(c) || c >= 0x80 || c == '\'')) {
            if (n + 1 < sizeof tok) tok[n++] = (char)tolower(c);
            continue;
        }
        if (n) {
            tok[n] = 0;
            json_array_append_new(arr, json_string(tok));
            n = 0;
        }
        if (!c) break;
    }
    return arr;
}

/* ------------------------------------------------------------------------ */
/* Items                                                                    */
/* ------------------------------------------------------------------------ */

static const char *const split_names[SL_CORPUS_NSPLITS] = {"train", "val", "test"};

typedef struct single_item {
    int emoji;
    char *captions[5];
} single_item;

typedef struct scene_item {
    int n;
    int emoji[MAX_OBJECTS];
    box boxes[MAX_OBJECTS];
    char *sentence; /* with markup */
    char *plain;    /* without */
} scene_item;

static sl_status make_single(const sl_corpus_opts *o, const table *t, int split, int index,
                             single_item *it, float *cv, uint8_t *rgb, uint64_t *bytes) {
    rng r;
    rng_init(&r, o->seed, 1, (uint64_t)split, (uint64_t)index);
    const emoji *e = &t->e[it->emoji];
    int set = split == SL_CORPUS_TEST ? 1 : 0, size = o->size;
    background bg;
    draw_background(&r, cv, size, &bg);
    float frac = (float)rng_range(&r, 0.25, 0.70);
    int s = (int)lrintf(frac * size);
    if (s < 8) s = 8;
    int ox = rng_int(&r, size - s + 1), oy = rng_int(&r, size - s + 1);
    box bb;
    paste(cv, size, e, set, ox, oy, s, &bb);
    char path[4096];
    fmt_into(path, sizeof path, "%s/images/%s/%s_%06d.jpg", o->out_dir, split_names[split],
             split_names[split], index + 1);
    sl_status st = write_jpeg(cv, size, o->quality, path, rgb, bytes);
    if (st) return st;
    int tpl[N_TEMPLATES];
    for (int k = 0; k < N_TEMPLATES; k++) tpl[k] = k;
    shuffle_ints(&r, tpl, N_TEMPLATES);
    float cx = (ox + s * 0.5f) / size, cy = (oy + s * 0.5f) / size;
    for (int k = 0; k < 5; k++) {
        it->captions[k] = single_caption(&r, tpl[k], e, &bg, frac, cx, cy);
        if (!it->captions[k]) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    return SL_OK;
}

static const char *relation(rng *r, const box *a, const box *b) {
    float dx = (b->x0 + b->x1 - a->x0 - a->x1) * 0.5f, dy = (b->y0 + b->y1 - a->y0 - a->y1) * 0.5f;
    if (rng_unif(r) < 0.2) return rng_unif(r) < 0.5 ? "next to" : "near";
    if (fabsf(dx) >= fabsf(dy)) return dx > 0 ? "to the left of" : "to the right of";
    return dy > 0 ? "above" : "below";
}

static int overlaps(const box *a, const box *b, int gap) {
    return a->x0 < b->x1 + gap && b->x0 < a->x1 + gap && a->y0 < b->y1 + gap && b->y0 < a->y1 + gap;
}

static sl_status make_scene(const sl_corpus_opts *o, const table *t, int split, int index,
                            long entity_base, scene_item *it, float *cv, uint8_t *rgb,
                            uint64_t *bytes) {
    rng r;
    rng_init(&r, o->seed, 2, (uint64_t)split, (uint64_t)index);
    int set = split == SL_CORPUS_TEST ? 1 : 0, size = o->size;
    int n = 2 + rng_int(&r, MAX_OBJECTS - 1);
    /* distinct emoji */
    for (int k = 0; k < n; k++) {
        int pick, dup;
        do {
            pick = rng_int(&r, (int)t->n);
            dup = 0;
            for (int j = 0; j < k; j++) dup |= it->emoji[j] == pick;
        } while (dup);
        it->emoji[k] = pick;
    }
    background bg;
    draw_background(&r, cv, size, &bg);
    /* non-overlapping squares */
    box sq[MAX_OBJECTS];
    double hi = 0.50 - 0.05 * n, lo = hi - 0.12;
    int placed = 0;
    for (int attempt = 0; attempt < 50 && placed < n; attempt++) {
        placed = 0;
        for (int k = 0; k < n; k++) {
            int ok = 0;
            for (int tries = 0; tries < 100 && !ok; tries++) {
                int s = (int)lrint(rng_range(&r, lo, hi) * size);
                if (s < 6) s = 6;
                box b = {rng_int(&r, size - s + 1), 0, 0, 0};
                b.y0 = rng_int(&r, size - s + 1);
                b.x1 = b.x0 + s;
                b.y1 = b.y0 + s;
                ok = 1;
                for (int j = 0; j < k; j++) ok &= !overlaps(&b, &sq[j], 2);
                if (ok) sq[k] = b;
            }
            if (!ok) break;
            placed++;
        }
        lo *= 0.9;
        hi *= 0.9;
    }
    if (placed < n) n = placed < 2 ? 2 : placed; /* cannot happen at the sizes above */
    if (placed < 2) return sl_set_error(SL_ERR_INVALID, "scene %d: no room for 2 emoji", index);
    it->n = n;
    for (int k = 0; k < n; k++)
        paste(cv, size, &t->e[it->emoji[k]], set, sq[k].x0, sq[k].y0, sq[k].x1 - sq[k].x0,
              &it->boxes[k]);
    char path[4096];
    fmt_into(path, sizeof path, "%s/entities/images/%s_%06d.jpg", o->out_dir, split_names[split],
             index + 1);
    sl_status st = write_jpeg(cv, size, o->quality, path, rgb, bytes);
    if (st) return st;
    /* "A dog to the left of a cat, a lamp above the cat and a car below the lamp" */
    sbuf m = {0}, p = {0};
    for (int k = 0; k < n; k++) {
        const emoji *e = &t->e[it->emoji[k]];
        const char *art = article(e->label);
        if (k == 0) art = art[1] ? "An" : "A";
        if (k >= 2) {
            const char *sep = k == n - 1 ? " and " : ", ";
            sb_printf(&m, "%s", sep);
            sb_printf(&p, "%s", sep);
        }
        sb_printf(&m, "[/EN#%ld/%s %s %s]", entity_base + k + 1, e->type, art, e->label);
        sb_printf(&p, "%s %s", art, e->label);
        if (k == 0 || k >= 2) {
            int to = k == 0 ? 1 : k - 1;
            const char *rel = relation(&r, &it->boxes[k], &it->boxes[to]);
            if (k == 0) {
                sb_printf(&m, " %s ", rel);
                sb_printf(&p, " %s ", rel);
            } else {
                const char *other = t->e[it->emoji[to]].label;
                sb_printf(&m, " %s the %s", rel, other);
                sb_printf(&p, " %s the %s", rel, other);
            }
        }
    }
    if (m.oom || p.oom) {
        free(m.p);
        free(p.p);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    it->sentence = m.p;
    it->plain = p.p;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Output files                                                             */
/* ------------------------------------------------------------------------ */

static sl_status write_text(const char *dir, const char *name, const char *text, uint64_t *bytes) {
    char path[4096];
    fmt_into(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, f) != len;
    bad |= fclose(f) != 0;
    if (bad) return sl_set_error(SL_ERR_IO, "%s: write failed", path);
    *bytes += len;
    return SL_OK;
}

static sl_status write_licenses(const sl_corpus_opts *o, const sl_corpus_stats *s,
                                uint64_t *bytes) {
    sbuf b = {0};
    sb_printf(
        &b,
        "# Licences of the sightline demo emoji corpus\n\n"
        "The pictures of this corpus are emoji images composed (scaled, placed on\n"
        "generated backgrounds, JPEG-compressed) by `sightline corpus build` (seed %llu).\n"
        "The captions and scene sentences are generated from emojibase labels and tags.\n\n"
        "| source | version | used for | licence |\n"
        "|---|---|---|---|\n"
        "| emoji-datasource-google (npm) | %s | train/val images: Noto Emoji 64-px PNGs "
        "| images Apache-2.0 (Google Noto Emoji); package data MIT (iamcal) |\n"
        "| emoji-datasource-twitter (npm) | %s | test images: Twemoji 64-px PNGs "
        "| images CC-BY-4.0 (Twitter, Inc and other contributors); package data MIT (iamcal) |\n"
        "| emojibase-data (npm) | %s | labels, tags, groups | MIT (Miles Johnson) |\n\n"
        "- Noto Emoji: https://github.com/googlefonts/noto-emoji, Apache License 2.0,\n"
        "  https://www.apache.org/licenses/LICENSE-2.0\n"
        "- Twemoji: https://github.com/twitter/twemoji (continued at\n"
        "  https://github.com/jdecked/twemoji), graphics licensed under CC-BY 4.0,\n"
        "  https://creativecommons.org/licenses/by/4.0/ - see ATTRIBUTION.txt.\n"
        "- emoji-datasource: https://github.com/iamcal/emoji-data, MIT.\n"
        "- emojibase: https://github.com/milesj/emojibase, MIT.\n\n"
        "Changes: the emoji images were resampled, composited onto synthetic\n"
        "backgrounds and re-encoded as JPEG.\n",
        (unsigned long long)o->seed, s->versions[0], s->versions[1], s->versions[2]);
    sl_status st = b.oom ? sl_set_error(SL_ERR_NOMEM, "out of memory")
                         : write_text(o->out_dir, "LICENSES.md", b.p, bytes);
    free(b.p);
    if (st) return st;
    char att[2048];
    fmt_into(att, sizeof att,
             "The test-split images (images/test/, entities/images/test_*) contain Twemoji\n"
             "graphics, Copyright 2020 Twitter, Inc and other contributors, licensed under\n"
             "CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/); taken from the npm\n"
             "package emoji-datasource-twitter %s and modified (resampled, composited on\n"
             "generated backgrounds, JPEG-encoded).\n"
             "\n"
             "The train and val images contain Noto Emoji graphics, Copyright Google Inc.,\n"
             "licensed under the Apache License 2.0; taken from emoji-datasource-google %s\n"
             "and modified likewise.\n"
             "\n"
             "Labels and tags: emojibase-data %s, Copyright Miles Johnson, MIT licence.\n",
             s->versions[1], s->versions[0], s->versions[2]);
    return write_text(o->out_dir, "ATTRIBUTION.txt", att, bytes);
}

static sl_status mkdirs(const char *out) {
    static const char *const sub[] = {"images/train",         "images/val",
                                      "images/test",          "entities/Sentences",
                                      "entities/Annotations", "entities/images"};
    char path[4096];
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        fmt_into(path, sizeof path, "%s/%s", out, sub[i]);
        sl_status st = sl_mkdir_p(path);
        if (st) return st;
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* The build                                                                */
/* ------------------------------------------------------------------------ */

sl_status sl_corpus_build(const sl_corpus_opts *opts, sl_corpus_stats *stats) {
    double t0 = sl_now();
    sl_corpus_stats dummy;
    if (!stats) stats = &dummy;
    memset(stats, 0, sizeof *stats);
    if (!opts || !opts->data_dir || !opts->out_dir)
        return sl_set_error(SL_ERR_INVALID, "corpus: data and output folders are required");
    if (strlen(opts->data_dir) > MAX_DIR || strlen(opts->out_dir) > MAX_DIR)
        return sl_set_error(SL_ERR_LIMIT, "corpus: folder paths are limited to %d bytes", MAX_DIR);
    sl_corpus_opts o = *opts;
    if (!o.quality) o.quality = 90;
    if (o.size < 64 || o.size > 1024 || o.quality < 1 || o.quality > 100)
        return sl_set_error(SL_ERR_INVALID, "corpus: size must be 64..1024, quality 1..100");
    if (o.n_train < 0 || o.n_val < 0 || o.n_test < 0 || o.n_scenes < 0 || o.n_train > MAX_COUNT ||
        o.n_val > MAX_COUNT || o.n_test > MAX_COUNT || o.n_scenes > MAX_COUNT)
        return sl_set_error(SL_ERR_INVALID, "corpus: counts must be 0..%d", MAX_COUNT);
    const char *vdirs[3] = {"emoji-datasource-google", "emoji-datasource-twitter",
                            "emojibase-data"};
    sl_status st;
    for (int k = 0; k < 3; k++) {
        char d[4096];
        fmt_into(d, sizeof d, "%s/%s", o.data_dir, vdirs[k]);
        if ((st = read_version(d, stats->versions[k], sizeof stats->versions[k]))) return st;
    }
    table t;
    if ((st = load_table(o.data_dir, &t, stats))) return st;
    sl_log(SL_LOG_INFO,
           "corpus: %zu emoji kept of %zu (left out: %zu flags, %zu components, "
           "%zu keycaps, %zu skin-tone variants, %zu without both PNGs)",
           stats->n_emoji, stats->n_entries, stats->ex_flag, stats->ex_component, stats->ex_keycap,
           stats->ex_skin, stats->ex_noimg);
    if ((st = mkdirs(o.out_dir))) {
        table_free(&t);
        return st;
    }

    int counts[3] = {o.n_train, o.n_val, o.n_test};
    int sc[3];
    sc[SL_CORPUS_VAL] = o.n_scenes / 10;
    sc[SL_CORPUS_TEST] = o.n_scenes / 10;
    sc[SL_CORPUS_TRAIN] = o.n_scenes - 2 * (o.n_scenes / 10);
    single_item *items[3] = {0};
    scene_item *scenes[3] = {0};
    int *perm = malloc(t.n * sizeof *perm);
    st = perm ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (int sp = 0; sp < 3 && !st; sp++) {
        items[sp] = calloc((size_t)counts[sp] + 1, sizeof *items[sp]);
        scenes[sp] = calloc((size_t)sc[sp] + 1, sizeof *scenes[sp]);
        if (!items[sp] || !scenes[sp]) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        /* each emoji once per round, in a fresh order each round */
        for (int i = 0; i < counts[sp] && !st; i++) {
            int round = i / (int)t.n, pos = i % (int)t.n;
            if (pos == 0) {
                rng r;
                rng_init(&r, o.seed, 3, (uint64_t)sp, (uint64_t)round);
                for (size_t k = 0; k < t.n; k++) perm[k] = (int)k;
                shuffle_ints(&r, perm, (int)t.n);
            }
            items[sp][i].emoji = perm[pos];
        }
    }
    free(perm);

    uint64_t bytes = 0;
    sl_status first = st;
    char firstmsg[1024] = "";
    long entity_base[3] = {0, 0, 0};
    for (int sp = 1; sp < 3; sp++) entity_base[sp] = entity_base[sp - 1] + (long)sc[sp - 1] * 10;
    size_t total = 0;
    for (int sp = 0; sp < 3; sp++) total += (size_t)counts[sp] + (size_t)sc[sp];
    sl_progress *prog = st ? NULL : sl_progress_create("corpus", total, o.quiet);
    for (int sp = 0; sp < 3 && !first; sp++) {
        int nsingle = counts[sp], nall = counts[sp] + sc[sp];
#pragma omp parallel reduction(+ : bytes)
        {
            float *cv = malloc((size_t)o.size * o.size * 3 * sizeof *cv);
            uint8_t *rgb = malloc((size_t)o.size * o.size * 3);
#pragma omp for schedule(dynamic, 8)
            for (int i = 0; i < nall; i++) {
                sl_status s2;
                if (!cv || !rgb)
                    s2 = sl_set_error(SL_ERR_NOMEM, "out of memory");
                else if (i < nsingle)
                    s2 = make_single(&o, &t, sp, i, &items[sp][i], cv, rgb, &bytes);
                else
                    s2 = make_scene(&o, &t, sp, i - nsingle, entity_base[sp] + (i - nsingle) * 10L,
                                    &scenes[sp][i - nsingle], cv, rgb, &bytes);
                if (s2) {
#pragma omp critical(corpus_err)
                    if (!first) {
                        first = s2;
                        fmt_into(firstmsg, sizeof firstmsg, "%s", sl_last_error());
                    }
                }
                if (prog) sl_progress_add(prog, 1);
            }
            free(cv);
            free(rgb);
        }
    }
    if (prog) sl_progress_finish(prog);
    if (first && !st) st = sl_set_error(first, "%s", firstmsg);

    /* dataset_emoji.json and captions_train.txt */
    if (!st) {
        json_t *root = json_object(), *imgs = json_array();
        long imgid = 0, sentid = 0;
        char path[4096];
        fmt_into(path, sizeof path, "%s/captions_train.txt", o.out_dir);
        FILE *ct = fopen(path, "wb");
        if (!ct) st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
        for (int sp = 0; sp < 3 && !st; sp++) {
            for (int i = 0; i < counts[sp]; i++, imgid++) {
                const single_item *it = &items[sp][i];
                const emoji *e = &t.e[it->emoji];
                json_t *im = json_object(), *sids = json_array(), *sents = json_array();
                char fname[64];
                fmt_into(fname, sizeof fname, "%s_%06d.jpg", split_names[sp], i + 1);
                json_object_set_new(im, "filepath", json_string(split_names[sp]));
                json_object_set_new(im, "filename", json_string(fname));
                json_object_set_new(im, "imgid", json_integer(imgid));
                json_object_set_new(im, "split", json_string(split_names[sp]));
                json_object_set_new(im, "emoji", json_string(e->unified));
                json_object_set_new(im, "label", json_string(e->label));
                json_object_set_new(im, "style",
                                    json_string(sp == SL_CORPUS_TEST ? "twemoji" : "noto"));
                for (int k = 0; k < 5; k++, sentid++) {
                    json_t *sn = json_object();
                    json_object_set_new(sn, "tokens", tokens_of(it->captions[k]));
                    json_object_set_new(sn, "raw", json_string(it->captions[k]));
                    json_object_set_new(sn, "imgid", json_integer(imgid));
                    json_object_set_new(sn, "sentid", json_integer(sentid));
                    json_array_append_new(sents, sn);
                    json_array_append_new(sids, json_integer(sentid));
                    if (sp == SL_CORPUS_TRAIN) fprintf(ct, "%s\n", it->captions[k]);
                }
                json_object_set_new(im, "sentids", sids);
                json_object_set_new(im, "sentences", sents);
                json_array_append_new(imgs, im);
                stats->images[sp]++;
                stats->captions[sp] += 5;
            }
        }
        for (int i = 0; i < sc[SL_CORPUS_TRAIN] && ct && !st; i++)
            fprintf(ct, "%s\n", scenes[SL_CORPUS_TRAIN][i].plain);
        if (ct) {
            if (ferror(ct) | fclose(ct) && !st)
                st = sl_set_error(SL_ERR_IO, "%s: write failed", path);
            struct stat sb;
            if (!stat(path, &sb)) bytes += (uint64_t)sb.st_size;
        }
        json_object_set_new(root, "images", imgs);
        json_object_set_new(root, "dataset", json_string("emoji"));
        if (!st) {
            char *txt = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
            if (!txt)
                st = sl_set_error(SL_ERR_NOMEM, "out of memory (dataset JSON)");
            else {
                st = write_text(o.out_dir, "dataset_emoji.json", txt, &bytes);
                free(txt);
            }
        }
        json_decref(root);
    }
    /* Entities: Sentences, Annotations, split lists */
    for (int sp = 0; sp < 3 && !st; sp++) {
        sbuf list = {0};
        for (int i = 0; i < sc[sp] && !st; i++) {
            const scene_item *it = &scenes[sp][i];
            char id[64], name[128];
            fmt_into(id, sizeof id, "%s_%06d", split_names[sp], i + 1);
            sb_printf(&list, "%s\n", id);
            sbuf s = {0}, x = {0};
            sb_printf(&s, "%s\n", it->sentence);
            sb_printf(&x,
                      "<annotation>\n  <filename>%s.jpg</filename>\n  <size>\n    <width>%d"
                      "</width>\n    <height>%d</height>\n    <depth>3</depth>\n  </size>\n",
                      id, o.size, o.size);
            for (int k = 0; k < it->n; k++) {
                const box *b = &it->boxes[k];
                sb_printf(&x,
                          "  <object>\n    <name>%ld</name>\n    <bndbox>\n      <xmin>%d</xmin>\n"
                          "      <ymin>%d</ymin>\n      <xmax>%d</xmax>\n      <ymax>%d</ymax>\n"
                          "    </bndbox>\n  </object>\n",
                          entity_base[sp] + i * 10L + k + 1, b->x0 + 1, b->y0 + 1, b->x1, b->y1);
            }
            sb_printf(&x, "</annotation>\n");
            if (s.oom || x.oom) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            if (!st) {
                fmt_into(name, sizeof name, "entities/Sentences/%s.txt", id);
                st = write_text(o.out_dir, name, s.p, &bytes);
            }
            if (!st) {
                fmt_into(name, sizeof name, "entities/Annotations/%s.xml", id);
                st = write_text(o.out_dir, name, x.p, &bytes);
            }
            free(s.p);
            free(x.p);
            stats->scenes[sp]++;
            stats->objects += (size_t)it->n;
        }
        if (!st) {
            char name[64];
            fmt_into(name, sizeof name, "entities/%s.txt", split_names[sp]);
            st = list.oom ? sl_set_error(SL_ERR_NOMEM, "out of memory")
                          : write_text(o.out_dir, name, list.p ? list.p : "", &bytes);
        }
        free(list.p);
    }
    if (!st) st = write_licenses(&o, stats, &bytes);
    if (!st) {
        json_t *m = json_object();
        json_object_set_new(m, "seed", json_integer((json_int_t)o.seed));
        json_object_set_new(m, "size", json_integer(o.size));
        json_object_set_new(m, "emoji", json_integer((json_int_t)stats->n_emoji));
        json_t *v = json_object();
        for (int k = 0; k < 3; k++)
            json_object_set_new(v, vdirs[k], json_string(stats->versions[k]));
        json_object_set_new(m, "packages", v);
        json_t *ex = json_object();
        json_object_set_new(ex, "flags", json_integer((json_int_t)stats->ex_flag));
        json_object_set_new(ex, "components", json_integer((json_int_t)stats->ex_component));
        json_object_set_new(ex, "keycaps", json_integer((json_int_t)stats->ex_keycap));
        json_object_set_new(ex, "skin_tone_variants", json_integer((json_int_t)stats->ex_skin));
        json_object_set_new(ex, "missing_png", json_integer((json_int_t)stats->ex_noimg));
        json_object_set_new(m, "left_out", ex);
        for (int sp = 0; sp < 3; sp++) {
            json_t *c = json_object();
            json_object_set_new(c, "images", json_integer((json_int_t)stats->images[sp]));
            json_object_set_new(c, "captions", json_integer((json_int_t)stats->captions[sp]));
            json_object_set_new(c, "scenes", json_integer((json_int_t)stats->scenes[sp]));
            json_object_set_new(m, split_names[sp], c);
        }
        char *txt = json_dumps(m, JSON_INDENT(2));
        json_decref(m);
        if (!txt)
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        else {
            size_t L = strlen(txt);
            char *nl = realloc(txt, L + 2);
            if (nl) {
                txt = nl;
                txt[L] = '\n';
                txt[L + 1] = 0;
            }
            st = write_text(o.out_dir, "manifest.json", txt, &bytes);
            free(txt);
        }
    }
    for (int sp = 0; sp < 3; sp++) {
        for (int i = 0; items[sp] && i < counts[sp]; i++)
            for (int k = 0; k < 5; k++) free(items[sp][i].captions[k]);
        for (int i = 0; scenes[sp] && i < sc[sp]; i++) {
            free(scenes[sp][i].sentence);
            free(scenes[sp][i].plain);
        }
        free(items[sp]);
        free(scenes[sp]);
    }
    table_free(&t);
    stats->bytes = bytes;
    stats->seconds = sl_now() - t0;
    return st;
}
