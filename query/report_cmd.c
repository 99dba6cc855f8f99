/*
 * query/report_cmd.c - `sightline report`: one self-contained HTML page from
 * the JSON Lines of `sightline query` (thumbnails, phrase boxes) and the JSON
 * of `sightline eval retrieval|grounding --json` (recall and accuracy tables).
 * The page is written by the writer of `query --html` (report_internal.h).
 */
#include "cli/commands.h"
#include "common/json_file.h"
#include "query/report_internal.h"
#include "sightline/query.h"
#include "sightline/sightline.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RESULTS_BYTES ((size_t)1 << 30)  /* one --results file */
#define MAX_EVAL_BYTES    ((size_t)64 << 20) /* one --eval file */
#define MAX_PATH_BYTES    4096               /* a path or text in a result */

void sl_cmd_report_help(FILE *out) {
    fputs(
        "usage: sightline report --out PAGE.html [--results FILE.jsonl]... [--eval FILE.json]...\n"
        "                        [--title T] [--top N] [--quiet]\n"
        "\n"
        "Write one self-contained HTML page (thumbnails embedded, no scripts, nothing\n"
        "fetched) from what other commands wrote:\n"
        "  --results FILE     the JSON Lines of 'sightline query' (text -> image, image ->\n"
        "                     text, phrase -> region, read from each line): each query\n"
        "                     with its top results as thumbnails, phrase boxes drawn over\n"
        "                     them (repeatable; '-' reads stdin)\n"
        "  --eval FILE        the JSON of 'sightline eval retrieval --json' (i2t and t2i\n"
        "                     R@1/5/10, medr, meanr, RSUM) or 'sightline eval grounding\n"
        "                     --json' (accuracy overall and per phrase type) as tables\n"
        "                     (repeatable)\n"
        "\n"
        "options:\n"
        "  --out PAGE.html    the page (replaced atomically)\n"
        "  --title T          the page's title (default 'sightline report')\n"
        "  --top N            results shown per query (default 5, at most 1000)\n"
        "  --quiet            no summary: the figures of each --eval on stdout, the page's\n"
        "                     contents on stderr\n"
        "\n"
        "Relative image paths in the results are read from the current directory; an\n"
        "image that cannot be read is linked instead of embedded (with a warning).\n"
        "exit codes: 0 written; 1 an input is unreadable or malformed (the message names\n"
        "the file and line); 2 usage error.\n",
        out);
}

/* ------------------------------------------------------------------------ */
/* Query results (JSON Lines of `sightline query`)                          */
/* ------------------------------------------------------------------------ */

/* The queries of one --results file. */
typedef struct result_file {
    const char *path;     /* as given */
    size_t n;             /* queries */
    char **queries;       /* [n] as `sightline query` takes them ("image\tphrase") */
    sl_query_kind *kinds; /* [n] read from each line */
    sl_query_result *res; /* [n] */
    size_t failed;        /* queries answered with an error */
    size_t per_kind[3];   /* queries of each kind */
} result_file;

static void result_file_free(result_file *f) {
    for (size_t i = 0; i < f->n; i++) {
        free(f->queries[i]);
        sl_query_result_clear(&f->res[i]);
    }
    free(f->queries);
    free(f->kinds);
    free(f->res);
    memset(f, 0, sizeof *f);
}

/* A string member of at most MAX_PATH_BYTES, or NULL when absent. -1 when
 * present but not such a string. */
static int opt_string(json_t *o, const char *key, const char **out, size_t *len) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v) return 0;
    if (!json_is_string(v) || json_string_length(v) > MAX_PATH_BYTES) return -1;
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

/* One hit of a result line. */
static sl_status read_hit(const char *file, size_t line, size_t k, json_t *e, sl_query_hit *h,
                          int *has_text) {
    const char *path, *text;
    size_t plen = 0;
    json_t *score = json_object_get(e, "score"), *id = json_object_get(e, "id");
    json_t *box = json_object_get(e, "box");
    if (!json_is_object(e))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: result %zu is not an object", file, line,
                            k + 1);
    if (opt_string(e, "path", &path, &plen) || opt_string(e, "text", &text, NULL) ||
        (!path && !text))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s:%zu: result %zu needs a \"path\" or a \"text\" string (at most "
                            "%d bytes)",
                            file, line, k + 1, MAX_PATH_BYTES);
    if (!json_is_number(score))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: result %zu has no numeric \"score\"", file,
                            line, k + 1);
    if (id && !json_is_null(id) && !json_is_integer(id))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: result %zu: \"id\" is not an integer", file,
                            line, k + 1);
    h->id = json_is_integer(id) ? (int64_t)json_integer_value(id) : -1;
    h->score = (float)json_number_value(score);
    if (box) {
        float c[4];
        if (!json_is_array(box) || json_array_size(box) != 4)
            return sl_set_error(SL_ERR_FORMAT,
                                "%s:%zu: result %zu: \"box\" is not [x0, y0, x1, y1]", file, line,
                                k + 1);
        for (size_t j = 0; j < 4; j++) {
            json_t *v = json_array_get(box, j);
            double d = json_number_value(v);
            if (!json_is_number(v) || !(d >= -1e7 && d <= 1e7))
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s:%zu: result %zu: \"box\" holds a non-number or one out of "
                                    "range",
                                    file, line, k + 1);
            c[j] = (float)d;
        }
        h->has_box = 1;
        h->box = (sl_box){c[0], c[1], c[2], c[3]};
    }
    if (path) {
        if (!(h->path = malloc(plen + 1))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        memcpy(h->path, path, plen + 1);
        h->path_len = strlen(h->path); /* a NUL inside ends the path */
    }
    if (text && !(h->text = strdup(text))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    *has_text |= text != NULL;
    return SL_OK;
}

/* One line: the query, its kind, its result. */
static sl_status read_line(const char *file, size_t line, json_t *o, char **query,
                           sl_query_kind *kind, sl_query_result *r) {
    const char *q, *image, *err;
    if (!json_is_object(o))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: not a JSON object", file, line);
    if (opt_string(o, "query", &q, NULL) || !q)
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: no \"query\" string (at most %d bytes)", file,
                            line, MAX_PATH_BYTES);
    if (opt_string(o, "image", &image, NULL) || opt_string(o, "error", &err, NULL))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: \"image\" or \"error\" is not a string", file,
                            line);
    size_t ql = strlen(q) + (image ? strlen(image) + 1 : 0) + 1;
    if (!(*query = malloc(ql))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    if (image)
        snprintf(*query, ql, "%s\t%s", image, q);
    else
        snprintf(*query, ql, "%s", q);
    *kind = image ? SL_QUERY_PHRASE : SL_QUERY_TEXT;
    if (err) {
        r->status = SL_ERR_INVALID;
        snprintf(r->error, sizeof r->error, "%s", err);
        return SL_OK;
    }
    json_t *arr = json_object_get(o, "results");
    if (!json_is_array(arr))
        return sl_set_error(SL_ERR_FORMAT, "%s:%zu: neither a \"results\" array nor an \"error\"",
                            file, line);
    size_t n = json_array_size(arr);
    if (n > SL_QUERY_MAX_K)
        return sl_set_error(SL_ERR_LIMIT, "%s:%zu: %zu results (at most %d)", file, line, n,
                            SL_QUERY_MAX_K);
    if (n && !(r->hits = calloc(n, sizeof *r->hits)))
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    int has_text = 0;
    for (size_t k = 0; k < n; k++) {
        sl_status st = read_hit(file, line, k, json_array_get(arr, k), &r->hits[k], &has_text);
        r->n = k + 1; /* what was allocated is freed by sl_query_result_clear */
        if (st) return st;
        if (r->hits[k].has_box) *kind = SL_QUERY_PHRASE;
    }
    if (has_text && *kind != SL_QUERY_PHRASE) *kind = SL_QUERY_IMAGE;
    return SL_OK;
}

/* Read every line of a --results file (blank lines skipped). */
static sl_status read_results(const char *path, result_file *f) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    sl_status st = sl_read_input(path, MAX_RESULTS_BYTES, &buf, &len);
    if (st) return st;
    f->path = path;
    size_t start = 0, line = 0;
    for (size_t i = 0; i <= len && st == SL_OK; i++) {
        if (i < len && buf[i] != '\n') continue;
        line++;
        const char *s = buf + start;
        size_t n = i - start;
        start = i + 1;
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        size_t lead = 0;
        while (lead < n && (s[lead] == ' ' || s[lead] == '\t')) lead++;
        if (lead == n) continue;
        if (f->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **nq = realloc(f->queries, nc * sizeof *nq);
            if (nq) f->queries = nq;
            sl_query_kind *nk = nq ? realloc(f->kinds, nc * sizeof *nk) : NULL;
            if (nk) f->kinds = nk;
            sl_query_result *nr = nk ? realloc(f->res, nc * sizeof *nr) : NULL;
            if (!nr) {
                st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            f->res = nr;
            cap = nc;
        }
        json_error_t je;
        json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
        if (!o) {
            st = sl_set_error(SL_ERR_FORMAT, "%s:%zu: column %d: %s", path, line, je.column,
                              je.text);
            break;
        }
        memset(&f->res[f->n], 0, sizeof f->res[f->n]);
        f->queries[f->n] = NULL;
        st = read_line(path, line, o, &f->queries[f->n], &f->kinds[f->n], &f->res[f->n]);
        json_decref(o);
        f->n++; /* freed by result_file_free even when the line failed */
        if (st == SL_OK) {
            f->failed += f->res[f->n - 1].status != SL_OK;
            f->per_kind[f->kinds[f->n - 1]]++;
        }
    }
    free(buf);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Evaluation tables (JSON of `sightline eval ... --json`)                  */
/* ------------------------------------------------------------------------ */

/* A number at o[key][sub] (sub NULL: o[key]); -1 when absent. */
static int num_at(json_t *o, const char *key, const char *sub, double *out) {
    json_t *v = json_object_get(o, key);
    if (sub) v = json_object_get(v, sub);
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

static const char *str_at(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static void put_str(sl_report *r, const char *s) {
    sl_report_text(r, s, strlen(s));
}

/* One retrieval table (the whole split, or the COCO 1K fold mean). */
static sl_status retrieval_table(sl_report *r, const char *file, json_t *m, const char *title) {
    static const char *dirs[2] = {"i2t", "t2i"};
    static const char *names[2] = {"image \xe2\x86\x92 text", "text \xe2\x86\x92 image"};
    static const char *cols[6] = {"r1", "r5", "r10", "medr", "meanr", "queries"};
    double v[2][6], rsum;
    for (int d = 0; d < 2; d++)
        for (int c = 0; c < 6; c++)
            if (num_at(m, dirs[d], cols[c], &v[d][c]))
                return sl_set_error(SL_ERR_FORMAT, "%s: \"%s\".\"%s\" is missing or not a number",
                                    file, dirs[d], cols[c]);
    if (num_at(m, "rsum", NULL, &rsum))
        return sl_set_error(SL_ERR_FORMAT, "%s: \"rsum\" is missing or not a number", file);
    sl_report_raw(r, "<table class=\"m\"><caption>");
    put_str(r, title);
    sl_report_raw(r, "</caption><tr><th>retrieval</th><th>R@1</th><th>R@5</th><th>R@10</th>"
                     "<th>medr</th><th>meanr</th><th>queries</th></tr>");
    for (int d = 0; d < 2; d++)
        sl_report_printf(r,
                         "<tr><td>%s</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.1f</td>"
                         "<td>%.2f</td><td>%.0f</td></tr>",
                         names[d], v[d][0], v[d][1], v[d][2], v[d][3], v[d][4], v[d][5]);
    sl_report_printf(r, "<tr><th>RSUM</th><td colspan=\"6\"><b>%.2f</b></td></tr></table>\n", rsum);
    return SL_OK;
}

static sl_status eval_retrieval(sl_report *r, const char *file, json_t *o, FILE *sum) {
    double ni = 0, nt = 0;
    num_at(o, "images", NULL, &ni);
    num_at(o, "texts", NULL, &nt);
    char title[1024];
    snprintf(title, sizeof title, "Retrieval: %s %s, %.0f images, %.0f captions%s",
             *str_at(o, "dataset") ? str_at(o, "dataset") : "dataset",
             *str_at(o, "split") ? str_at(o, "split") : "split", ni, nt,
             !strcmp(str_at(o, "source"), "index") ? " (image vectors from the index)" : "");
    sl_status st = retrieval_table(r, file, o, title);
    double i2t = 0, t2i = 0, rsum = 0;
    num_at(o, "i2t", "r1", &i2t);
    num_at(o, "t2i", "r1", &t2i);
    num_at(o, "rsum", NULL, &rsum);
    if (st == SL_OK && sum)
        fprintf(sum,
                "retrieval (%s %s, %.0f images): R@1 image->text %.2f, text->image %.2f; "
                "RSUM %.2f\n",
                str_at(o, "dataset"), str_at(o, "split"), ni, i2t, t2i, rsum);
    json_t *k1 = json_object_get(o, "coco_1k");
    if (st == SL_OK && k1) {
        double folds = 0;
        num_at(k1, "folds", NULL, &folds);
        snprintf(title, sizeof title, "COCO 1K: mean over %.0f folds of 1000 images", folds);
        st = retrieval_table(r, file, k1, title);
    }
    return st;
}

static sl_status eval_grounding(sl_report *r, const char *file, json_t *o, FILE *sum) {
    double acc, phrases, correct, images = 0, skipped = 0, iou = 0.5;
    if (num_at(o, "accuracy", NULL, &acc) || num_at(o, "phrases", NULL, &phrases) ||
        num_at(o, "correct", NULL, &correct))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: \"accuracy\", \"phrases\" or \"correct\" is missing or not a "
                            "number",
                            file);
    json_t *pt = json_object_get(o, "per_type");
    if (pt && !json_is_object(pt))
        return sl_set_error(SL_ERR_FORMAT, "%s: \"per_type\" is not an object", file);
    num_at(o, "images", NULL, &images);
    num_at(o, "skipped", NULL, &skipped);
    num_at(o, "iou_threshold", NULL, &iou);
    const char *bench = str_at(o, "benchmark");
    char title[1024];
    const json_t *contrast = json_object_get(o, "contrast");
    snprintf(title, sizeof title,
             "Phrase grounding: %s, %.0f images, correct at IoU \xe2\x89\xa5 %g%s%s",
             !strcmp(bench, "flickr30k_entities") ? "Flickr30K Entities format"
             : *bench                             ? bench
                                                  : "benchmark",
             images, iou, !strcmp(str_at(o, "source"), "index") ? " (patches from the index)" : "",
             json_is_true(contrast) ? ", each phrase against its sentence's others" : "");
    sl_report_raw(r, "<table class=\"m\"><caption>");
    put_str(r, title);
    sl_report_raw(r, "</caption><tr><th>phrase type</th><th>phrases</th><th>correct</th>"
                     "<th>accuracy</th></tr>");
    const char *key;
    json_t *v;
    json_object_foreach(pt, key, v) {
        double a, p, c;
        if (num_at(v, "accuracy", NULL, &a) || num_at(v, "phrases", NULL, &p) ||
            num_at(v, "correct", NULL, &c))
            return sl_set_error(SL_ERR_FORMAT, "%s: \"per_type\".\"%s\" lacks a number", file, key);
        sl_report_raw(r, "<tr><td>");
        put_str(r, key);
        sl_report_printf(r, "</td><td>%.0f</td><td>%.0f</td><td>%.2f%%</td></tr>", p, c, a);
    }
    if (sum)
        fprintf(sum, "grounding (%.0f images, %.0f phrases): accuracy %.2f%% at IoU >= %g\n",
                images, phrases, acc, iou);
    sl_report_printf(r,
                     "<tr><th>all</th><td><b>%.0f</b></td><td><b>%.0f</b></td>"
                     "<td><b>%.2f%%</b></td></tr></table>\n",
                     phrases, correct, acc);
    if (skipped > 0) {
        sl_report_printf(r, "<p class=\"note\">%.0f phrases without a box skipped", skipped);
        json_t *by = json_object_get(o, "skipped_by");
        const char *sep = " (";
        json_object_foreach(by, key, v) {
            if (!json_is_integer(v) || json_integer_value(v) <= 0) continue;
            sl_report_raw(r, sep);
            put_str(r, key);
            sl_report_printf(r, " %lld", (long long)json_integer_value(v));
            sep = ", ";
        }
        sl_report_raw(r, sep[0] == ',' ? ")</p>\n" : "</p>\n");
    }
    return SL_OK;
}

/* One --eval file, recognised by its members. */
static sl_status read_eval(sl_report *r, const char *file, FILE *sum) {
    json_t *o;
    sl_status st = sl_json_load_file(file, MAX_EVAL_BYTES, &o);
    if (st) return st;
    if (json_object_get(o, "i2t") && json_object_get(o, "t2i"))
        st = eval_retrieval(r, file, o, sum);
    else if (json_object_get(o, "accuracy") && json_object_get(o, "per_type"))
        st = eval_grounding(r, file, o, sum);
    else
        st = sl_set_error(SL_ERR_FORMAT,
                          "%s: neither the JSON of 'sightline eval retrieval --json' (\"i2t\", "
                          "\"t2i\") nor of 'eval grounding --json' (\"accuracy\", \"per_type\")",
                          file);
    if (st == SL_OK) {
        sl_report_raw(r, "<p class=\"note\">from ");
        put_str(r, file);
        sl_report_raw(r, "</p></div>\n");
    }
    json_decref(o);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Command                                                                  */
/* ------------------------------------------------------------------------ */

static int push(const char ***v, size_t *n, const char *s) {
    const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return -1;
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

int sl_cmd_report(int argc, char **argv) {
    enum { O_OUT = 256, O_RESULTS, O_EVAL, O_TITLE, O_TOP, O_QUIET, O_HELP };
    static const struct option lo[] = {
        {"out", required_argument, 0, O_OUT},   {"results", required_argument, 0, O_RESULTS},
        {"eval", required_argument, 0, O_EVAL}, {"title", required_argument, 0, O_TITLE},
        {"top", required_argument, 0, O_TOP},   {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},       {0, 0, 0, 0}};
    const char *out = NULL, *title = "sightline report";
    const char **results = NULL, **evals = NULL;
    size_t nresults = 0, nevals = 0;
    long long top = 5;
    int quiet = 0, c, rc = SL_EXIT_USAGE;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
            case O_OUT:
                out = optarg;
                break;
            case O_RESULTS:
                if (push(&results, &nresults, optarg)) goto nomem;
                break;
            case O_EVAL:
                if (push(&evals, &nevals, optarg)) goto nomem;
                break;
            case O_TITLE:
                title = optarg;
                break;
            case O_TOP:
                if (sl_parse_int_arg(optarg, 1, SL_QUERY_MAX_K, &top)) {
                    fprintf(stderr, "sightline report: bad value '%s' for --top\n", optarg);
                    goto usage_done;
                }
                break;
            case O_QUIET:
                quiet = 1;
                break;
            case 'h':
            case O_HELP:
                sl_cmd_report_help(stdout);
                rc = SL_EXIT_OK;
                goto usage_done;
            default:
                fprintf(stderr, "sightline report: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                goto usage_done;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sightline report: unexpected argument '%s'\n", argv[optind]);
        goto usage_done;
    }
    if (!out || nresults + nevals == 0) {
        fprintf(stderr, "sightline report: need --out and at least one --results or --eval "
                        "(see --help)\n");
        goto usage_done;
    }

    static const char *what[] = {"text \xe2\x86\x92 image", "image \xe2\x86\x92 text",
                                 "phrase \xe2\x86\x92 region"};
    result_file *files = calloc(nresults ? nresults : 1, sizeof *files);
    sl_report *r = NULL;
    size_t nq = 0, nfailed = 0;
    sl_status st = files ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nresults && st == SL_OK; i++) {
        st = read_results(results[i], &files[i]);
        nq += files[i].n;
        nfailed += files[i].failed;
    }
    if (st == SL_OK) st = sl_report_open(out, title, &r);
    if (st == SL_OK) {
        sl_report_raw(r, "<h1>");
        put_str(r, title);
        sl_report_raw(r, "</h1>\n");
        sl_report_printf(r, "<p class=\"note\">sightline %s: ", sl_version());
        if (nevals) sl_report_printf(r, "%zu evaluation%s", nevals, nevals > 1 ? "s" : "");
        if (nevals && nresults) sl_report_raw(r, ", ");
        if (nresults) sl_report_printf(r, "%zu queries (top %lld results each)", nq, top);
        sl_report_raw(r, "</p>\n");
    }
    if (st == SL_OK && nevals) sl_report_raw(r, "<h2>Evaluation</h2>\n<div class=\"row\">");
    for (size_t i = 0; i < nevals && st == SL_OK; i++) {
        sl_report_raw(r, "<div>");
        st = read_eval(r, evals[i], quiet ? NULL : stdout);
    }
    if (st == SL_OK && nevals) sl_report_raw(r, "</div>\n");
    for (size_t i = 0; i < nresults && st == SL_OK; i++) {
        const result_file *f = &files[i];
        sl_report_raw(r, "<h2>");
        const char *sep = "";
        for (int k = 0; k < 3; k++) {
            if (!f->per_kind[k]) continue;
            sl_report_printf(r, "%s%zu %s", sep, f->per_kind[k], what[k]);
            sep = ", ";
        }
        if (!*sep) sl_report_raw(r, "no");
        sl_report_raw(r, f->n == 1 ? " query" : " queries");
        if (f->failed) sl_report_printf(r, " (%zu failed)", f->failed);
        sl_report_raw(r, " <small>from ");
        put_str(r, f->path);
        sl_report_raw(r, "</small></h2>\n");
        for (size_t j = 0; j < f->n; j++)
            sl_report_query(r, f->kinds[j], f->queries[j], &f->res[j], (size_t)top);
    }
    size_t thumbs = 0, bad_thumbs = 0;
    if (r) sl_report_counts(r, &thumbs, &bad_thumbs);
    if (st == SL_OK) {
        st = sl_report_finish(r);
        r = NULL;
    }
    if (st == SL_OK) {
        rc = SL_EXIT_OK;
        if (!quiet)
            fprintf(
                stderr,
                "wrote %s: %zu evaluation table%s, %zu queries (%zu failed), %zu thumbnails%s\n",
                out, nevals, nevals == 1 ? "" : "s", nq, nfailed, thumbs,
                bad_thumbs ? " (some images could not be read: linked instead)" : "");
    } else {
        SL_ERROR("%s", sl_last_error());
        rc = SL_EXIT_FAILED;
    }
    sl_report_free(r);
    for (size_t i = 0; files && i < nresults; i++) result_file_free(&files[i]);
    free(files);
    free(results);
    free(evals);
    return rc;
nomem:
    fprintf(stderr, "sightline report: out of memory\n");
    rc = SL_EXIT_FAILED;
usage_done:
    free(results);
    free(evals);
    return rc;
}
