/*
 * query/entities.c - strict readers for Flickr30K Entities: the sentence
 * phrase markup, a small XML reader sufficient for its PASCAL VOC
 * annotation files, split lists, and the loader that joins them into a
 * grounding set (see sightline/eval_grounding.h).
 */
#include "sightline/eval_grounding.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* A small strict XML reader                                                */
/* ------------------------------------------------------------------------ */

#define XML_MAX_NODES 200000
#define XML_MAX_DEPTH 64
#define XML_MAX_NAME  128

/* One element. */
typedef struct xnode {
    char name[XML_MAX_NAME]; /* element name */
    char *text;              /* character data directly inside (decoded, owned) or NULL */
    size_t text_len, text_cap;
    int line;        /* line of the start tag */
    int parent;      /* index of the parent, -1 for the root */
    int first_child; /* first child element, -1 when none */
    int last_child;
    int next; /* next sibling, -1 when none */
} xnode;

typedef struct xdoc {
    xnode *nodes; /* nodes[0] is the root */
    int n, cap;
    const char *file; /* for messages */
} xdoc;

static void xml_free(xdoc *d) {
    for (int i = 0; i < d->n; i++) free(d->nodes[i].text);
    free(d->nodes);
    memset(d, 0, sizeof *d);
}

static int is_name_start(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':' || c >= 0x80;
}

static int is_name_char(unsigned char c) {
    return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parser position. */
typedef struct xpos {
    const char *buf;
    size_t len, i;
    int line;
} xpos;

static void xadvance(xpos *p, size_t n) {
    for (size_t k = 0; k < n && p->i < p->len; k++)
        if (p->buf[p->i++] == '\n') p->line++;
}

/* Advance past `end` (a terminator such as "-->"); 0 when found. */
static int xskip_past(xpos *p, const char *end) {
    size_t el = strlen(end);
    while (p->i + el <= p->len) {
        if (memcmp(p->buf + p->i, end, el) == 0) {
            xadvance(p, el);
            return 0;
        }
        xadvance(p, 1);
    }
    return -1;
}

/* Read a name at the position into out. */
static sl_status xname(xpos *p, const xdoc *d, char *out, const char *what) {
    size_t s = p->i;
    if (p->i >= p->len || !is_name_start((unsigned char)p->buf[p->i]))
        return sl_set_error(SL_ERR_FORMAT, "%s:%d: expected a name in %s", d->file, p->line, what);
    while (p->i < p->len && is_name_char((unsigned char)p->buf[p->i])) p->i++;
    size_t n = p->i - s;
    if (n >= XML_MAX_NAME)
        return sl_set_error(SL_ERR_LIMIT, "%s:%d: name longer than %d bytes", d->file, p->line,
                            XML_MAX_NAME - 1);
    memcpy(out, p->buf + s, n);
    out[n] = '\0';
    return SL_OK;
}

/* Decode the character data buf[s, e) (entity references) and append it to
 * node `k`'s text. */
static sl_status xappend_text(xdoc *d, int k, const char *buf, size_t s, size_t e, int line) {
    xnode *nd = &d->nodes[k];
    char *t = nd->text;
    size_t need = nd->text_len + (e - s) + 1;
    if (need > nd->text_cap) {
        /* grow geometrically: an element's text comes in one piece per
         * child element, and growing by each piece copies quadratically */
        size_t nc = nd->text_cap * 2 > need ? nd->text_cap * 2 : need;
        if (!(t = realloc(nd->text, nc)))
            return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", d->file);
        nd->text = t;
        nd->text_cap = nc;
    }
    size_t o = nd->text_len;
    for (size_t i = s; i < e;) {
        if (buf[i] == '\n') line++;
        if (buf[i] != '&') {
            t[o++] = buf[i++];
            continue;
        }
        size_t semi = i + 1;
        while (semi < e && semi - i <= 10 && buf[semi] != ';') semi++;
        if (semi >= e || buf[semi] != ';')
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: '&' does not start an entity reference",
                                d->file, line);
        const char *ent = buf + i + 1;
        size_t el = semi - i - 1;
        char c = 0;
        if (el == 3 && !memcmp(ent, "amp", 3))
            c = '&';
        else if (el == 2 && !memcmp(ent, "lt", 2))
            c = '<';
        else if (el == 2 && !memcmp(ent, "gt", 2))
            c = '>';
        else if (el == 4 && !memcmp(ent, "quot", 4))
            c = '"';
        else if (el == 4 && !memcmp(ent, "apos", 4))
            c = '\'';
        else if (el >= 2 && ent[0] == '#') {
            /* numeric reference: ASCII only */
            long v = 0;
            int hex = ent[1] == 'x', ok = el > (size_t)(hex ? 2 : 1);
            for (size_t q = hex ? 2 : 1; q < el && ok; q++) {
                int dg = ent[q] >= '0' && ent[q] <= '9'          ? ent[q] - '0'
                         : hex && ent[q] >= 'a' && ent[q] <= 'f' ? ent[q] - 'a' + 10
                         : hex && ent[q] >= 'A' && ent[q] <= 'F' ? ent[q] - 'A' + 10
                                                                 : -1;
                if (dg < 0) ok = 0;
                v = v * (hex ? 16 : 10) + dg;
                if (v > 127) ok = 0;
            }
            if (!ok || v == 0)
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s:%d: unsupported character reference '&%.*s;'", d->file,
                                    line, (int)el, ent);
            c = (char)v;
        } else
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: unknown entity '&%.*s;'", d->file, line,
                                (int)el, ent);
        t[o++] = c;
        i = semi + 1;
    }
    t[o] = '\0';
    nd->text_len = o;
    return SL_OK;
}

static sl_status xnew_node(xdoc *d, const char *name, int line, int parent, int *out) {
    if (d->n >= XML_MAX_NODES)
        return sl_set_error(SL_ERR_LIMIT, "%s:%d: more than %d elements", d->file, line,
                            XML_MAX_NODES);
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 64;
        xnode *nn = realloc(d->nodes, (size_t)nc * sizeof *nn);
        if (!nn) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", d->file);
        d->nodes = nn;
        d->cap = nc;
    }
    int k = d->n++;
    xnode *nd = &d->nodes[k];
    memset(nd, 0, sizeof *nd);
    snprintf(nd->name, sizeof nd->name, "%s", name);
    nd->line = line;
    nd->parent = parent;
    nd->first_child = nd->last_child = nd->next = -1;
    if (parent >= 0) {
        xnode *pa = &d->nodes[parent];
        if (pa->last_child >= 0)
            d->nodes[pa->last_child].next = k;
        else
            pa->first_child = k;
        pa->last_child = k;
    }
    *out = k;
    return SL_OK;
}

/* Parse a start tag's attributes up to '>' or '/>'; *empty = 1 for '/>'. */
static sl_status xattributes(xpos *p, const xdoc *d, int *empty) {
    for (;;) {
        int had_space = 0;
        while (p->i < p->len && is_space((unsigned char)p->buf[p->i])) {
            xadvance(p, 1);
            had_space = 1;
        }
        if (p->i >= p->len) break;
        char c = p->buf[p->i];
        if (c == '>') {
            xadvance(p, 1);
            *empty = 0;
            return SL_OK;
        }
        if (c == '/' && p->i + 1 < p->len && p->buf[p->i + 1] == '>') {
            xadvance(p, 2);
            *empty = 1;
            return SL_OK;
        }
        char aname[XML_MAX_NAME];
        if (!had_space)
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: malformed start tag", d->file, p->line);
        sl_status st = xname(p, d, aname, "an attribute");
        if (st) return st;
        while (p->i < p->len && is_space((unsigned char)p->buf[p->i])) xadvance(p, 1);
        if (p->i >= p->len || p->buf[p->i] != '=')
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: attribute '%s' without '='", d->file,
                                p->line, aname);
        xadvance(p, 1);
        while (p->i < p->len && is_space((unsigned char)p->buf[p->i])) xadvance(p, 1);
        if (p->i >= p->len || (p->buf[p->i] != '"' && p->buf[p->i] != '\''))
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: attribute '%s' value is not quoted", d->file,
                                p->line, aname);
        char q = p->buf[p->i];
        xadvance(p, 1);
        while (p->i < p->len && p->buf[p->i] != q) {
            if (p->buf[p->i] == '<')
                return sl_set_error(SL_ERR_FORMAT, "%s:%d: '<' in attribute '%s'", d->file, p->line,
                                    aname);
            xadvance(p, 1);
        }
        if (p->i >= p->len) break;
        xadvance(p, 1);
    }
    return sl_set_error(SL_ERR_FORMAT, "%s:%d: start tag not closed before the end of the file",
                        d->file, p->line);
}

/* Parse buf[0, len) into d (elements with their text). Errors name the
 * file and line: tags that do not match, elements never closed, text or a
 * second element outside the root, DTDs and CDATA (unsupported). */
static sl_status xml_parse(const char *buf, size_t len, const char *file, xdoc *d) {
    memset(d, 0, sizeof *d);
    d->file = file;
    xpos p = {buf, len, 0, 1};
    int stack[XML_MAX_DEPTH], depth = 0, root_done = 0;
    sl_status st = SL_OK;
    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        p.i = 3; /* UTF-8 byte order mark */
    while (p.i < len) {
        if (buf[p.i] != '<') {
            size_t s = p.i;
            int line = p.line;
            while (p.i < len && buf[p.i] != '<') xadvance(&p, 1);
            if (depth == 0) {
                for (size_t k = s; k < p.i; k++)
                    if (!is_space((unsigned char)buf[k])) {
                        /* the line of the stray character */
                        for (size_t q = s; q < k; q++)
                            if (buf[q] == '\n') line++;
                        return sl_set_error(SL_ERR_FORMAT, "%s:%d: text outside the root element",
                                            file, line);
                    }
                continue;
            }
            if ((st = xappend_text(d, stack[depth - 1], buf, s, p.i, line))) return st;
            continue;
        }
        int line = p.line;
        if (p.i + 1 < len && buf[p.i + 1] == '?') {
            if (d->n > 0)
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s:%d: processing instruction after the root element", file,
                                    line);
            if (xskip_past(&p, "?>"))
                return sl_set_error(SL_ERR_FORMAT, "%s:%d: '<?' never closed by '?>'", file, line);
            continue;
        }
        if (p.i + 3 < len && !memcmp(buf + p.i, "<!--", 4)) {
            xadvance(&p, 4);
            if (xskip_past(&p, "-->"))
                return sl_set_error(SL_ERR_FORMAT, "%s:%d: comment never closed by '-->'", file,
                                    line);
            continue;
        }
        if (p.i + 1 < len && buf[p.i + 1] == '!')
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: DTDs and CDATA sections are not supported",
                                file, line);
        if (p.i + 1 < len && buf[p.i + 1] == '/') {
            xadvance(&p, 2);
            char name[XML_MAX_NAME];
            if ((st = xname(&p, d, name, "a closing tag"))) return st;
            while (p.i < len && is_space((unsigned char)buf[p.i])) xadvance(&p, 1);
            if (p.i >= len || buf[p.i] != '>')
                return sl_set_error(SL_ERR_FORMAT, "%s:%d: closing tag </%s> not ended by '>'",
                                    file, line, name);
            xadvance(&p, 1);
            if (depth == 0)
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s:%d: closing tag </%s> without an opening tag", file, line,
                                    name);
            xnode *top = &d->nodes[stack[depth - 1]];
            if (strcmp(top->name, name) != 0)
                return sl_set_error(
                    SL_ERR_FORMAT, "%s:%d: closing tag </%s> does not match <%s> opened on line %d",
                    file, line, name, top->name, top->line);
            depth--;
            if (depth == 0) root_done = 1;
            continue;
        }
        /* start tag */
        xadvance(&p, 1);
        char name[XML_MAX_NAME];
        if ((st = xname(&p, d, name, "a start tag"))) return st;
        if (depth == 0 && root_done)
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: a second root element <%s>", file, line,
                                name);
        int empty = 0;
        if ((st = xattributes(&p, d, &empty))) return st;
        int k = -1;
        if ((st = xnew_node(d, name, line, depth ? stack[depth - 1] : -1, &k))) return st;
        if (empty) {
            if (depth == 0) root_done = 1;
            continue;
        }
        if (depth == XML_MAX_DEPTH)
            return sl_set_error(SL_ERR_LIMIT, "%s:%d: elements nested deeper than %d", file, line,
                                XML_MAX_DEPTH);
        stack[depth++] = k;
    }
    if (depth > 0) {
        const xnode *top = &d->nodes[stack[depth - 1]];
        return sl_set_error(SL_ERR_FORMAT,
                            "%s:%d: <%s> opened on line %d is never closed (missing </%s>)", file,
                            p.line, top->name, top->line, top->name);
    }
    if (d->n == 0) return sl_set_error(SL_ERR_FORMAT, "%s:%d: no root element", file, p.line);
    return SL_OK;
}

/* The text of node k with surrounding whitespace removed (into out). */
static void xtext(const xdoc *d, int k, const char **s, size_t *n) {
    const xnode *nd = &d->nodes[k];
    const char *t = nd->text ? nd->text : "";
    size_t len = nd->text ? nd->text_len : 0;
    while (len && is_space((unsigned char)*t)) t++, len--;
    while (len && is_space((unsigned char)t[len - 1])) len--;
    *s = t;
    *n = len;
}

/* The only child of `k` named `name`: *out = -1 when absent; more than one
 * is an error. */
static sl_status xchild(const xdoc *d, int k, const char *name, int *out) {
    *out = -1;
    for (int c = d->nodes[k].first_child; c >= 0; c = d->nodes[c].next) {
        if (strcmp(d->nodes[c].name, name) != 0) continue;
        if (*out >= 0)
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: <%s> twice in <%s> (line %d)", d->file,
                                d->nodes[c].line, name, d->nodes[k].name, d->nodes[k].line);
        *out = c;
    }
    return SL_OK;
}

/* The number held by the child `name` of k (required). */
static sl_status xnumber(const xdoc *d, int k, const char *name, double lo, double hi,
                         double *out) {
    int c;
    sl_status st = xchild(d, k, name, &c);
    if (st) return st;
    if (c < 0)
        return sl_set_error(SL_ERR_FORMAT, "%s:%d: <%s> lacks <%s>", d->file, d->nodes[k].line,
                            d->nodes[k].name, name);
    const char *s;
    size_t n;
    xtext(d, c, &s, &n);
    char tmp[64];
    char *end = NULL;
    double v = 0;
    if (n > 0 && n < sizeof tmp) {
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        errno = 0;
        v = strtod(tmp, &end);
    }
    if (n == 0 || n >= sizeof tmp || *end != '\0' || errno || !isfinite(v) || is_space(tmp[0]))
        return sl_set_error(SL_ERR_FORMAT, "%s:%d: <%s> value '%.*s' is not a number", d->file,
                            d->nodes[c].line, name, (int)(n > 40 ? 40 : n), s);
    if (v < lo || v > hi)
        return sl_set_error(SL_ERR_FORMAT, "%s:%d: <%s> value %g outside [%g, %g]", d->file,
                            d->nodes[c].line, name, v, lo, hi);
    *out = v;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Annotations/<id>.xml                                                     */
/* ------------------------------------------------------------------------ */

/* What the annotation says about one entity id (one per <name>). */
typedef struct ent_rec {
    char *id;   /* entity id (owned) */
    sl_box box; /* union of its boxes */
    int boxes;  /* boxes merged */
    int scene;  /* marked scene */
    int nobox;  /* marked nobndbox */
} ent_rec;

typedef struct ent_table {
    ent_rec *r;
    size_t n, cap;
    int width, height;
} ent_table;

static void ent_free(ent_table *t) {
    for (size_t i = 0; i < t->n; i++) free(t->r[i].id);
    free(t->r);
    memset(t, 0, sizeof *t);
}

static int ent_cmp(const void *a, const void *b) {
    return strcmp(((const ent_rec *)a)->id, ((const ent_rec *)b)->id);
}

static ent_rec *ent_find(const ent_table *t, const char *id) {
    ent_rec key = {.id = (char *)id};
    return t->n ? bsearch(&key, t->r, t->n, sizeof *t->r, ent_cmp) : NULL;
}

/* Integer flag child (<nobndbox>1</nobndbox>); 0 when absent. */
static sl_status xflag(const xdoc *d, int k, const char *name, int *out) {
    int c;
    sl_status st = xchild(d, k, name, &c);
    if (st) return st;
    *out = 0;
    if (c < 0) return SL_OK;
    double v;
    if ((st = xnumber(d, k, name, 0, 1e9, &v))) return st;
    if (v != floor(v))
        return sl_set_error(SL_ERR_FORMAT, "%s:%d: <%s> must be an integer", d->file,
                            d->nodes[c].line, name);
    *out = v > 0;
    return SL_OK;
}

/* Read an annotation file into t (entities sorted by id, duplicates merged:
 * an entity's several boxes become their union). */
static sl_status read_annotation(const char *path, ent_table *t) {
    memset(t, 0, sizeof *t);
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, SL_GROUND_MAX_TEXT, &buf, &len);
    if (st) return st;
    xdoc d;
    st = xml_parse(buf, len, path, &d);
    free(buf);
    if (st) goto done;
    if (strcmp(d.nodes[0].name, "annotation") != 0) {
        st = sl_set_error(SL_ERR_FORMAT, "%s:%d: root element is <%s>, not <annotation>", path,
                          d.nodes[0].line, d.nodes[0].name);
        goto done;
    }
    int size;
    if ((st = xchild(&d, 0, "size", &size))) goto done;
    if (size < 0) {
        st = sl_set_error(SL_ERR_FORMAT, "%s:%d: <annotation> lacks <size>", path, d.nodes[0].line);
        goto done;
    }
    double w, h;
    if ((st = xnumber(&d, size, "width", 1, 1 << 20, &w)) ||
        (st = xnumber(&d, size, "height", 1, 1 << 20, &h)))
        goto done;
    if (w != floor(w) || h != floor(h)) {
        st = sl_set_error(SL_ERR_FORMAT, "%s:%d: <size> width and height must be integers", path,
                          d.nodes[size].line);
        goto done;
    }
    t->width = (int)w;
    t->height = (int)h;
    for (int o = d.nodes[0].first_child; o >= 0; o = d.nodes[o].next) {
        if (strcmp(d.nodes[o].name, "object") != 0) continue;
        int bb, nobox = 0, scene = 0;
        if ((st = xchild(&d, o, "bndbox", &bb))) goto done;
        sl_box box = {0, 0, 0, 0};
        if (bb >= 0) {
            double x0, y0, x1, y1;
            const double lim = 1 << 20;
            if ((st = xnumber(&d, bb, "xmin", -lim, lim, &x0)) ||
                (st = xnumber(&d, bb, "ymin", -lim, lim, &y0)) ||
                (st = xnumber(&d, bb, "xmax", -lim, lim, &x1)) ||
                (st = xnumber(&d, bb, "ymax", -lim, lim, &y1)))
                goto done;
            if (x1 < x0 || y1 < y0) {
                st = sl_set_error(SL_ERR_FORMAT, "%s:%d: <bndbox> with xmax < xmin or ymax < ymin",
                                  path, d.nodes[bb].line);
                goto done;
            }
            /* VOC 1-based inclusive -> 0-based, x1/y1 exclusive */
            box.x0 = (float)(x0 - 1);
            box.y0 = (float)(y0 - 1);
            box.x1 = (float)x1;
            box.y1 = (float)y1;
        }
        if ((st = xflag(&d, o, "nobndbox", &nobox)) || (st = xflag(&d, o, "scene", &scene)))
            goto done;
        int names = 0;
        for (int c = d.nodes[o].first_child; c >= 0; c = d.nodes[c].next) {
            if (strcmp(d.nodes[c].name, "name") != 0) continue;
            const char *s;
            size_t n;
            xtext(&d, c, &s, &n);
            if (n == 0 || n > 64) {
                st = sl_set_error(SL_ERR_FORMAT, "%s:%d: empty or overlong <name>", path,
                                  d.nodes[c].line);
                goto done;
            }
            if (t->n == t->cap) {
                size_t nc = t->cap ? t->cap * 2 : 32;
                ent_rec *nr = realloc(t->r, nc * sizeof *nr);
                if (!nr) {
                    st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
                    goto done;
                }
                t->r = nr;
                t->cap = nc;
            }
            ent_rec *r = &t->r[t->n];
            if (!(r->id = strndup(s, n))) {
                st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            t->n++;
            r->box = box;
            r->boxes = bb >= 0;
            r->scene = scene;
            r->nobox = nobox;
            names++;
        }
        if (!names) {
            st = sl_set_error(SL_ERR_FORMAT, "%s:%d: <object> without <name>", path,
                              d.nodes[o].line);
            goto done;
        }
    }
    /* sort by id and merge the records of one entity */
    if (t->n) qsort(t->r, t->n, sizeof *t->r, ent_cmp);
    size_t w_ = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (w_ > 0 && strcmp(t->r[w_ - 1].id, t->r[i].id) == 0) {
            ent_rec *a = &t->r[w_ - 1], *b = &t->r[i];
            if (b->boxes) a->box = a->boxes ? sl_box_union(a->box, b->box) : b->box;
            a->boxes += b->boxes;
            a->scene |= b->scene;
            a->nobox |= b->nobox;
            free(b->id);
            continue;
        }
        t->r[w_++] = t->r[i];
    }
    t->n = w_;
done:
    xml_free(&d);
    if (st) ent_free(t);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Sentences/<id>.txt                                                       */
/* ------------------------------------------------------------------------ */

static int is_type_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

sl_status sl_ground_parse_sentence(const char *text, size_t len, const char *name, int line,
                                   sl_ground_phrase_fn fn, void *ctx) {
    char entity[32], types[256], words[SL_GROUND_MAX_PHRASE + 1];
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (c == ']')
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: column %zu: ']' without an opening '['",
                                name, line, i + 1);
        if (c != '[') {
            i++;
            continue;
        }
        size_t open = i;
        if (len - i < 5 || memcmp(text + i, "[/EN#", 5) != 0)
            return sl_set_error(SL_ERR_FORMAT,
                                "%s:%d: column %zu: '[' not followed by /EN#<entity>/<type>", name,
                                line, open + 1);
        i += 5;
        size_t s = i;
        while (i < len && text[i] >= '0' && text[i] <= '9') i++;
        if (i == s || i - s >= sizeof entity)
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: column %zu: bad entity id after /EN#", name,
                                line, s + 1);
        memcpy(entity, text + s, i - s);
        entity[i - s] = '\0';
        if (i >= len || text[i] != '/')
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: column %zu: expected '/<type>' after /EN#%s",
                                name, line, i + 1, entity);
        i++;
        s = i;
        for (;;) {
            size_t t0 = i;
            while (i < len && is_type_char((unsigned char)text[i])) i++;
            if (i == t0)
                return sl_set_error(SL_ERR_FORMAT, "%s:%d: column %zu: empty entity type", name,
                                    line, i + 1);
            if (i < len && text[i] == '/') {
                i++;
                continue;
            }
            break;
        }
        if (i - s >= sizeof types)
            return sl_set_error(SL_ERR_LIMIT, "%s:%d: column %zu: entity types too long", name,
                                line, s + 1);
        memcpy(types, text + s, i - s);
        types[i - s] = '\0';
        if (i >= len || text[i] != ' ')
            return sl_set_error(SL_ERR_FORMAT,
                                "%s:%d: column %zu: expected a space before the phrase words", name,
                                line, i + 1);
        s = ++i;
        while (i < len && text[i] != ']') {
            if (text[i] == '[')
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s:%d: column %zu: nested '[' inside the phrase opened at "
                                    "column %zu",
                                    name, line, i + 1, open + 1);
            i++;
        }
        if (i >= len)
            return sl_set_error(SL_ERR_FORMAT,
                                "%s:%d: column %zu: phrase opened here is never closed by ']'",
                                name, line, open + 1);
        size_t e = i++;
        while (s < e && is_space((unsigned char)text[s])) s++;
        while (e > s && is_space((unsigned char)text[e - 1])) e--;
        if (e == s)
            return sl_set_error(SL_ERR_FORMAT, "%s:%d: column %zu: phrase without words", name,
                                line, open + 1);
        if (e - s > SL_GROUND_MAX_PHRASE)
            return sl_set_error(SL_ERR_LIMIT, "%s:%d: column %zu: phrase longer than %d bytes",
                                name, line, open + 1, SL_GROUND_MAX_PHRASE);
        memcpy(words, text + s, e - s);
        words[e - s] = '\0';
        sl_status st = fn(ctx, entity, types, words);
        if (st) return st;
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Split lists                                                              */
/* ------------------------------------------------------------------------ */

void sl_ground_free_ids(char **ids, size_t n) {
    if (!ids) return;
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static int id_ok(const char *s, size_t n) {
    if (n == 0 || n > 200 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fail when a sorted copy of ids has a duplicate (named with its line). */
static sl_status check_unique(const char *path, char **ids, const int *lines, size_t n) {
    if (n < 2) return SL_OK; /* (an empty list has ids == NULL: no memcpy from it) */
    char **sorted = malloc(n * sizeof *sorted);
    if (!sorted) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    memcpy(sorted, ids, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, str_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            int line = 0;
            for (size_t k = 0, seen = 0; k < n; k++)
                if (strcmp(ids[k], sorted[i]) == 0 && seen++ == 1) line = lines[k];
            sl_status st = sl_set_error(SL_ERR_FORMAT, "%s:%d: image id '%s' listed twice", path,
                                        line, sorted[i]);
            free(sorted);
            return st;
        }
    free(sorted);
    return SL_OK;
}

sl_status sl_ground_read_split(const char *path, char ***ids_out, size_t *n_out) {
    *ids_out = NULL;
    *n_out = 0;
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, (size_t)1 << 28, &buf, &len);
    if (st) return st;
    char **ids = NULL;
    int *lines = NULL;
    size_t n = 0, cap = 0;
    int line = 1;
    for (size_t s = 0; s <= len && st == SL_OK; line++) {
        size_t e = s;
        while (e < len && buf[e] != '\n') e++;
        size_t a = s, b = e;
        while (a < b && is_space((unsigned char)buf[a])) a++;
        while (b > a && is_space((unsigned char)buf[b - 1])) b--;
        if (b > a) {
            if (!id_ok(buf + a, b - a)) {
                st = sl_set_error(SL_ERR_FORMAT, "%s:%d: bad image id '%.*s'", path, line,
                                  (int)(b - a > 60 ? 60 : b - a), buf + a);
                break;
            }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                char **ni = realloc(ids, nc * sizeof *ni);
                int *nl = ni ? realloc(lines, nc * sizeof *nl) : NULL;
                if (ni) ids = ni;
                if (nl) lines = nl;
                if (!ni || !nl) {
                    st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                cap = nc;
            }
            if (!(ids[n] = strndup(buf + a, b - a))) {
                st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            lines[n++] = line;
        }
        s = e + 1;
    }
    free(buf);
    if (st == SL_OK) st = check_unique(path, ids, lines, n);
    free(lines);
    if (st) {
        sl_ground_free_ids(ids, n);
        return st;
    }
    *ids_out = ids;
    *n_out = n;
    return SL_OK;
}

/* Every Sentences/<id>.txt, sorted by id. */
static sl_status list_sentences(const char *dir, char ***ids_out, size_t *n_out) {
    DIR *dh = opendir(dir);
    if (!dh)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: cannot open folder: %s", dir, strerror(errno));
    char **ids = NULL;
    size_t n = 0, cap = 0;
    sl_status st = SL_OK;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l <= 4 || strcmp(de->d_name + l - 4, ".txt") != 0 || !id_ok(de->d_name, l - 4))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            char **ni = realloc(ids, nc * sizeof *ni);
            if (!ni) {
                st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            ids = ni;
            cap = nc;
        }
        if (!(ids[n] = strndup(de->d_name, l - 4))) {
            st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        n++;
    }
    closedir(dh);
    if (st) {
        sl_ground_free_ids(ids, n);
        return st;
    }
    if (n) qsort(ids, n, sizeof *ids, str_cmp);
    *ids_out = ids;
    *n_out = n;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* The Entities loader                                                      */
/* ------------------------------------------------------------------------ */

typedef struct sent_ctx {
    sl_ground_set *set;
    const ent_table *ents;
    const char *path; /* the sentence file, for messages */
    int line;
} sent_ctx;

static sl_status on_phrase(void *vctx, const char *entity, const char *types, const char *words) {
    sent_ctx *c = vctx;
    uint32_t mask;
    sl_status st = sl_ground_set_types(c->set, types, &mask);
    if (st) /* the set's message names neither the file nor the line */
        return sl_wrap_error(st, "%s:%d: ", c->path, c->line);
    /* every phrase is a mention (what --contrast scores against) */
    if ((st = sl_ground_set_add_mention(c->set, words, c->line)))
        return sl_wrap_error(st, "%s:%d: ", c->path, c->line);
    const ent_rec *r = ent_find(c->ents, entity);
    if (r && r->boxes > 0) {
        st = sl_ground_set_add_phrase(c->set, words, entity, mask, r->box, r->boxes, c->line);
        return st ? sl_wrap_error(st, "%s:%d: ", c->path, c->line) : SL_OK;
    }
    /* no box: skipped, by reason */
    int notvisual = 0;
    for (int t = 0; t < c->set->n_types; t++)
        if ((mask >> t & 1) && strcmp(c->set->types[t], "notvisual") == 0) notvisual = 1;
    sl_ground_skip why = notvisual  ? SL_GSKIP_NOTVISUAL
                         : !r       ? SL_GSKIP_ABSENT
                         : r->scene ? SL_GSKIP_SCENE
                         : r->nobox ? SL_GSKIP_NOBNDBOX
                                    : SL_GSKIP_ABSENT;
    c->set->skipped[why]++;
    return SL_OK;
}

/* Add one image: its annotation and its sentences. */
static sl_status load_image(const char *dir, const char *id, sl_ground_set *set) {
    size_t plen = strlen(dir) + strlen(id) + 32;
    char *sp = malloc(plen), *ap = malloc(plen), *fname = malloc(plen);
    char *buf = NULL;
    ent_table ents = {0};
    sl_status st = SL_OK;
    if (!sp || !ap || !fname) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(sp, plen, "%s/Sentences/%s.txt", dir, id);
    snprintf(ap, plen, "%s/Annotations/%s.xml", dir, id);
    snprintf(fname, plen, "%s.jpg", id);
    if ((st = read_annotation(ap, &ents))) goto done;
    size_t len = 0;
    if ((st = sl_read_file(sp, SL_GROUND_MAX_TEXT, &buf, &len))) goto done;
    if ((st = sl_ground_set_add_image(set, id, fname, ents.width, ents.height))) goto done;
    sent_ctx ctx = {set, &ents, sp, 0};
    int line = 1;
    for (size_t s = 0; s <= len; line++) {
        size_t e = s;
        while (e < len && buf[e] != '\n') e++;
        size_t le = e;
        if (le > s && buf[le - 1] == '\r') le--;
        if (memchr(buf + s, '\0', le - s)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s:%d: NUL byte in the line", sp, line);
            goto done;
        }
        ctx.line = line;
        if ((st = sl_ground_parse_sentence(buf + s, le - s, sp, line, on_phrase, &ctx))) goto done;
        s = e + 1;
    }
done:
    free(sp);
    free(ap);
    free(fname);
    free(buf);
    ent_free(&ents);
    return st;
}

sl_status sl_ground_read_entities(const char *dir, const char *split_file, sl_ground_set *out) {
    sl_ground_set_init(out);
    char **ids = NULL;
    size_t n = 0;
    sl_status st;
    if (split_file) {
        st = sl_ground_read_split(split_file, &ids, &n);
    } else {
        size_t plen = strlen(dir) + 16;
        char *sd = malloc(plen);
        if (!sd) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        snprintf(sd, plen, "%s/Sentences", dir);
        st = list_sentences(sd, &ids, &n);
        free(sd);
    }
    if (st) return st;
    for (size_t i = 0; i < n && st == SL_OK; i++) st = load_image(dir, ids[i], out);
    sl_ground_free_ids(ids, n);
    return st;
}
