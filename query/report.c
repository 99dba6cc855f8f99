/*
 * query/report.c - the HTML page writer (report_internal.h) behind `sightline
 * query --html` and `sightline report`: one self-contained file (styles
 * inline, thumbnails as JPEG data URIs, no scripts, nothing fetched), every
 * string from the outside escaped.
 */
#include "query/report_internal.h"
#include "sightline/image.h"
#include "sightline/query.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#define THUMB_SIDE 160 /* longest side of a thumbnail in pixels */

/* ------------------------------------------------------------------------ */
/* Text                                                                     */
/* ------------------------------------------------------------------------ */

char *sl_utf8_clean(const char *s, size_t len) {
    char *o = malloc(len * 3 + 1);
    if (!o) return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len && c != 0;
        uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; ok && j < n; j++) {
            if ((u[i + j] & 0xc0) != 0x80) ok = 0;
            cp = (cp << 6) | (u[i + j] & 0x3f);
        }
        if (ok && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                   cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)))
            ok = 0;
        if (ok) {
            memcpy(o + w, s + i, n);
            w += n;
            i += n;
        } else {
            memcpy(o + w, "\xef\xbf\xbd", 3);
            w += 3;
            i++;
        }
    }
    o[w] = '\0';
    return o;
}

/* A growing output buffer; `failed` sticks after an allocation failure. */
typedef struct buf {
    char *p;
    size_t n, cap;
    int failed;
} buf;

static void put(buf *b, const char *s, size_t len) {
    if (b->failed) return;
    if (b->n + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1 << 16;
        while (nc < b->n + len + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void puts_(buf *b, const char *s) {
    put(b, s, strlen(s));
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* s[0..len) as HTML text or attribute value: valid UTF-8, & < > " '
 * written as entities. */
static void put_esc(buf *b, const char *s, size_t len) {
    char *c = sl_utf8_clean(s, len);
    if (!c) {
        b->failed = 1;
        return;
    }
    for (const char *p = c; *p; p++) {
        switch (*p) {
            case '&':
                puts_(b, "&amp;");
                break;
            case '<':
                puts_(b, "&lt;");
                break;
            case '>':
                puts_(b, "&gt;");
                break;
            case '"':
                puts_(b, "&quot;");
                break;
            case '\'':
                puts_(b, "&#39;");
                break;
            default:
                put(b, p, 1);
        }
    }
    free(c);
}

static void put_base64(buf *b, const unsigned char *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        put(b, q, 4);
    }
}

/* ------------------------------------------------------------------------ */
/* Thumbnails                                                               */
/* ------------------------------------------------------------------------ */

/* A JPEG thumbnail of `path` (longest side THUMB_SIDE, box-filtered) as a
 * data URI into *uri (malloc'ed), with its size and the size of the picture
 * as displayed (*pw, *ph). */
static sl_status make_thumb(const char *path, char **uri, int *tw, int *th, int *pw, int *ph) {
    sl_decode_opts dopt = {.max_pixels = 100000000, .min_short_side = THUMB_SIDE};
    sl_image img;
    sl_status st = sl_image_load(path, &dopt, &img);
    if (st) return st;
    int W = img.width, H = img.height;
    int w = W >= H ? THUMB_SIDE : (int)((double)THUMB_SIDE * W / H + 0.5);
    int h = H >= W ? THUMB_SIDE : (int)((double)THUMB_SIDE * H / W + 0.5);
    if (W <= THUMB_SIDE && H <= THUMB_SIDE) w = W, h = H;
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    unsigned char *small = malloc((size_t)w * (size_t)h * 3);
    unsigned char *jpeg = NULL;
    unsigned long jsize = 0;
    tjhandle tj = NULL;
    buf b = {0};
    if (!small) {
        st = sl_set_error(SL_ERR_NOMEM, "thumbnail: out of memory");
        goto done;
    }
    /* each thumbnail pixel averages the source pixels its area covers */
    for (int y = 0; y < h; y++) {
        int y0 = (int)((long long)y * H / h), y1 = (int)((long long)(y + 1) * H / h);
        if (y1 <= y0) y1 = y0 + 1;
        for (int x = 0; x < w; x++) {
            int x0 = (int)((long long)x * W / w), x1 = (int)((long long)(x + 1) * W / w);
            if (x1 <= x0) x1 = x0 + 1;
            unsigned long sum[3] = {0, 0, 0};
            for (int yy = y0; yy < y1; yy++)
                for (int xx = x0; xx < x1; xx++)
                    for (int c = 0; c < 3; c++)
                        sum[c] += img.rgb[((size_t)yy * (size_t)W + (size_t)xx) * 3 + (size_t)c];
            unsigned long cnt = (unsigned long)(y1 - y0) * (unsigned long)(x1 - x0);
            for (int c = 0; c < 3; c++)
                small[((size_t)y * (size_t)w + (size_t)x) * 3 + (size_t)c] =
                    (unsigned char)((sum[c] + cnt / 2) / cnt);
        }
    }
    if (!(tj = tjInitCompress()) ||
        tjCompress2(tj, small, w, 0, h, TJPF_RGB, &jpeg, &jsize, TJSAMP_420, 80, 0) != 0) {
        st = sl_set_error(SL_ERR_EXTERNAL, "%s: thumbnail: %s", path, tjGetErrorStr2(tj));
        goto done;
    }
    puts_(&b, "data:image/jpeg;base64,");
    put_base64(&b, jpeg, (size_t)jsize);
    if (b.failed) {
        free(b.p);
        st = sl_set_error(SL_ERR_NOMEM, "thumbnail: out of memory");
        goto done;
    }
    *uri = b.p;
    *tw = w;
    *th = h;
    *pw = img.orig_width > 0 ? img.orig_width : W;
    *ph = img.orig_height > 0 ? img.orig_height : H;
done:
    if (jpeg) tjFree(jpeg);
    if (tj) tjDestroy(tj);
    free(small);
    sl_image_free(&img);
    return st;
}

/* Thumbnails by path, made once each. */
typedef struct thumb {
    char *path; /* key */
    char *uri;  /* data URI, or NULL when it could not be made */
    int w, h;   /* thumbnail size */
    int pw, ph; /* the picture's size as displayed (0: unknown) */
} thumb;

typedef struct thumb_cache {
    thumb *v;
    size_t cap;    /* power of two, open addressing */
    size_t n;      /* entries (kept at most cap / 2) */
    size_t failed; /* entries without a thumbnail */
} thumb_cache;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Double the table. -1 when out of memory (the table is unchanged). */
static int thumb_grow(thumb_cache *tc) {
    size_t nc = tc->cap * 2;
    thumb *nv = calloc(nc, sizeof *nv);
    if (!nv) return -1;
    for (size_t i = 0; i < tc->cap; i++) {
        if (!tc->v[i].path) continue;
        size_t j = (size_t)fnv1a(tc->v[i].path) & (nc - 1);
        while (nv[j].path) j = (j + 1) & (nc - 1);
        nv[j] = tc->v[i];
    }
    free(tc->v);
    tc->v = nv;
    tc->cap = nc;
    return 0;
}

/* The thumbnail of `path`, made on first use; NULL when out of memory. */
static const thumb *get_thumb(thumb_cache *tc, const char *path) {
    if ((tc->n + 1) * 2 > tc->cap && thumb_grow(tc)) return NULL;
    size_t i = (size_t)fnv1a(path) & (tc->cap - 1);
    while (tc->v[i].path) {
        if (!strcmp(tc->v[i].path, path)) return &tc->v[i];
        i = (i + 1) & (tc->cap - 1);
    }
    thumb *t = &tc->v[i];
    if (!(t->path = strdup(path))) return NULL;
    tc->n++;
    if (make_thumb(path, &t->uri, &t->w, &t->h, &t->pw, &t->ph) != SL_OK) {
        SL_WARN("%s (linking the file instead)", sl_last_error());
        t->uri = NULL;
        tc->failed++;
    }
    return t;
}

/* The path of `target` relative to the folder `dir` (both absolute), as a
 * URL path: bytes outside [A-Za-z0-9-._~/] percent-encoded. */
static void put_rel_url(buf *b, const char *dir, const char *target) {
    size_t i = 0, last = 0;
    while (dir[i] && dir[i] == target[i]) {
        if (dir[i] == '/') last = i + 1;
        i++;
    }
    if (!dir[i] && target[i] == '/') last = i + 1; /* target is inside dir */
    for (const char *p = dir + last; *p;) {        /* one ../ per remaining folder of dir */
        puts_(b, "../");
        const char *s = strchr(p, '/');
        if (!s) break;
        p = s + 1;
    }
    for (const unsigned char *p = (const unsigned char *)target + last; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p))
            put(b, (const char *)p, 1);
        else
            putf(b, "%%%02X", *p);
    }
}

/* ------------------------------------------------------------------------ */
/* Page                                                                     */
/* ------------------------------------------------------------------------ */

static const char *STYLE =
    "body{font-family:sans-serif;margin:16px;background:#fafafa;color:#222}"
    "h1{font-size:20px}section.q{border-top:1px solid #ccc;padding:8px 0}"
    "h2{font-size:16px;margin:4px 0 8px;word-break:break-all}"
    "h3{font-size:15px;margin:18px 0 6px}"
    ".row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}"
    "figure.hit{margin:0;width:170px;font-size:12px}"
    ".th{position:relative;display:inline-block;line-height:0}"
    ".th img{max-width:160px;max-height:160px;display:block}"
    ".box{position:absolute;border:2px solid #e00;box-sizing:border-box}"
    "figcaption{margin-top:4px;word-break:break-all}"
    ".score{font-weight:bold}.err{color:#b00}"
    ".txt{width:220px;font-size:13px;background:#fff;border:1px solid #ddd;padding:6px}"
    "table.m{border-collapse:collapse;margin:6px 0 14px;background:#fff;font-size:14px}"
    "table.m th,table.m td{border:1px solid #ccc;padding:4px 10px;text-align:right}"
    "table.m th:first-child,table.m td:first-child{text-align:left}"
    "table.m caption{text-align:left;font-weight:bold;padding:4px 0}"
    "p.note{font-size:13px;color:#555;margin:4px 0}";

struct sl_report {
    char *page;      /* where the page goes */
    const char *dir; /* its folder (absolute), for links; NULL unknown */
    char dirbuf[PATH_MAX];
    buf b;          /* the page so far */
    thumb_cache tc; /* thumbnails by path */
};

sl_status sl_report_open(const char *page, const char *title, sl_report **out) {
    *out = NULL;
    sl_report *r = calloc(1, sizeof *r);
    if (!r || !(r->page = strdup(page))) {
        free(r);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", page);
    }
    r->tc.cap = 64;
    if (!(r->tc.v = calloc(r->tc.cap, sizeof *r->tc.v))) {
        sl_report_free(r);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", page);
    }
    /* the folder of the page, for links to pictures without a thumbnail */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", page);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    r->dir = realpath(dir, r->dirbuf) ? r->dirbuf : NULL;
    puts_(&r->b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    put_esc(&r->b, title, strlen(title));
    puts_(&r->b, "</title><style>");
    puts_(&r->b, STYLE);
    puts_(&r->b, "</style></head><body>\n");
    *out = r;
    return SL_OK;
}

void sl_report_raw(sl_report *r, const char *html) {
    puts_(&r->b, html);
}

void sl_report_text(sl_report *r, const char *s, size_t len) {
    put_esc(&r->b, s, len);
}

void sl_report_printf(sl_report *r, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(&r->b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* One picture: thumbnail (or a link to the file) with the box overlay. */
static void put_picture(sl_report *r, const sl_query_hit *h, const char *path) {
    buf *b = &r->b;
    const thumb *t = get_thumb(&r->tc, path);
    if (!t) {
        b->failed = 1;
        return;
    }
    puts_(b, "<div class=\"th\">");
    if (t->uri) {
        putf(b, "<img class=\"thumb\" width=\"%d\" height=\"%d\" alt=\"\" src=\"", t->w, t->h);
        puts_(b, t->uri);
        puts_(b, "\">");
    } else {
        char real[PATH_MAX];
        const char *abs = realpath(path, real) ? real : path;
        puts_(b, "<img class=\"thumb\" alt=\"\" src=\"");
        if (r->dir && abs[0] == '/')
            put_rel_url(b, r->dir, abs);
        else
            put_esc(b, abs, strlen(abs));
        puts_(b, "\">");
    }
    int pw = h && h->width > 0 ? h->width : t->pw, ph = h && h->height > 0 ? h->height : t->ph;
    if (h && h->has_box && pw > 0 && ph > 0) {
        double W = pw, H = ph;
        putf(b,
             "<div class=\"box\" style=\"left:%.3f%%;top:%.3f%%;width:%.3f%%;height:%.3f%%\">"
             "</div>",
             100.0 * h->box.x0 / W, 100.0 * h->box.y0 / H, 100.0 * (h->box.x1 - h->box.x0) / W,
             100.0 * (h->box.y1 - h->box.y0) / H);
    }
    puts_(b, "</div>");
}

void sl_report_query(sl_report *r, sl_query_kind kind, const char *q, const sl_query_result *res,
                     size_t max_hits) {
    buf *b = &r->b;
    const char *tab = kind == SL_QUERY_PHRASE ? strchr(q, '\t') : NULL;
    puts_(b, "<section class=\"q\"><h2>");
    if (kind == SL_QUERY_IMAGE && res->status == SL_OK) {
        put_picture(r, NULL, q);
        puts_(b, "<br>");
    }
    put_esc(b, tab ? tab + 1 : q, strlen(tab ? tab + 1 : q));
    if (tab) {
        puts_(b, " <small>in ");
        put_esc(b, q, (size_t)(tab - q));
        puts_(b, "</small>");
    }
    puts_(b, "</h2>\n");
    if (res->status != SL_OK) {
        puts_(b, "<p class=\"err\">error: ");
        put_esc(b, res->error, strlen(res->error));
        puts_(b, "</p></section>\n");
        return;
    }
    puts_(b, "<div class=\"row\">");
    size_t n = max_hits && max_hits < res->n ? max_hits : res->n;
    for (size_t j = 0; j < n && !b->failed; j++) {
        const sl_query_hit *h = &res->hits[j];
        if (h->text) {
            putf(b, "<div class=\"txt\"><span class=\"score\">#%zu %.4f</span><br>", j + 1,
                 (double)h->score);
            put_esc(b, h->text, strlen(h->text));
            puts_(b, "</div>");
            continue;
        }
        puts_(b, "<figure class=\"hit\">");
        if (h->path) put_picture(r, h, h->path);
        putf(b, "<figcaption><span class=\"score\">#%zu %.4f</span><br>", j + 1, (double)h->score);
        if (h->path) put_esc(b, h->path, h->path_len);
        puts_(b, "</figcaption></figure>");
    }
    if (res->n == 0) puts_(b, "<p>no results</p>");
    puts_(b, "</div></section>\n");
}

void sl_report_counts(const sl_report *r, size_t *thumbs, size_t *failed) {
    *thumbs = r->tc.n - r->tc.failed;
    *failed = r->tc.failed;
}

void sl_report_free(sl_report *r) {
    if (!r) return;
    for (size_t i = 0; r->tc.v && i < r->tc.cap; i++) {
        free(r->tc.v[i].path);
        free(r->tc.v[i].uri);
    }
    free(r->tc.v);
    free(r->b.p);
    free(r->page);
    free(r);
}

sl_status sl_report_finish(sl_report *r) {
    puts_(&r->b, "</body></html>\n");
    sl_status st = r->b.failed ? sl_set_error(SL_ERR_NOMEM, "%s: out of memory", r->page)
                               : sl_write_file_atomic(r->page, r->b.p, r->b.n);
    sl_report_free(r);
    return st;
}

/* ------------------------------------------------------------------------ */
/* sightline query --html                                                   */
/* ------------------------------------------------------------------------ */

sl_status sl_query_report_html(const char *page, sl_query_kind kind, const char *const *queries,
                               const sl_query_result *results, size_t n) {
    static const char *what[] = {"text \xe2\x86\x92 image", "image \xe2\x86\x92 text",
                                 "phrase \xe2\x86\x92 region"};
    sl_report *r;
    sl_status st = sl_report_open(page, "sightline query", &r);
    if (st) return st;
    sl_report_printf(r, "<h1>sightline query: %zu %s queries</h1>\n", n, what[kind]);
    for (size_t i = 0; i < n; i++) sl_report_query(r, kind, queries[i], &results[i], 0);
    return sl_report_finish(r);
}
