/*
 * query/query_cmd.c - `sightline query`: batch text -> image, image -> text
 * and phrase -> region lookups, written as JSON Lines, TSV or an HTML page.
 */
#include "cli/commands.h"
#include "sightline/encoder.h"
#include "sightline/image.h"
#include "sightline/query.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_query_help(FILE *out) {
    fputs("usage: sightline query --index DIR (--text FILE | --image FILE_OR_LIST |\n"
          "                       --phrase FILE) [options]\n"
          "\n"
          "Answer queries against an index, one query per line ('-' reads stdin), in input\n"
          "order.\n"
          "\n"
          "queries (exactly one):\n"
          "  --text FILE        texts -> images\n"
          "  --image PATH       an image, or a file listing image paths -> texts (the index\n"
          "                     needs a text side: 'sightline index texts')\n"
          "  --phrase FILE      phrase -> boxes: a line 'phrase' searches every image (index\n"
          "                     built with --region); 'image_path<TAB>phrase' boxes the phrase\n"
          "                     in that image (indexed or not)\n"
          "\n"
          "options:\n"
          "  -k N               results per query (default 10, at most 1000)\n"
          "  --json             JSON Lines on stdout (default): one object per query,\n"
          "                     {\"query\", \"results\": [{\"id\", \"path\" | \"text\", \"score\"\n"
          "                     [, \"box\": [x0, y0, x1, y1]]}]} or {\"query\", \"error\"}\n"
          "  --tsv              tab-separated lines: query, rank, id, path or text, score,\n"
          "                     box x0,y0,x1,y1 (empty unless a phrase); a failed query is\n"
          "                     one line: query, 'error', '', reason, '', ''. Tabs, newlines\n"
          "                     and backslashes in fields are written \\t, \\n, \\\\\n"
          "  --html OUT.html    write one self-contained page with thumbnails and boxes\n"
          "  --rerank fine      re-score the top max(4k, 50) candidates by token-to-patch late\n"
          "                     interaction (index built with --region)\n"
          "  --model PATH       model (default: the one the index was built with; when that\n"
          "                     is gone, the default model if it is the same)\n"
          "  --device NAME      cpu (default), cuda[:N] or cuda-f32[:N]\n"
          "  --threads N        compute threads (default: all cores)\n"
          "  --batch N          queries per forward pass and FAISS search (default 32)\n"
          "  --max-pixels N     refuse query images declaring more pixels (default 100000000)\n"
          "  --quiet            no summary line on stderr\n"
          "\n"
          "Phrase boxes are in pixels of the picture as displayed, x1/y1 exclusive.\n"
          "exit codes: 0 every query answered; 1 failed; 2 usage error; 3 some queries\n"
          "failed (an empty line, an unreadable image, ...: their lines carry \"error\").\n",
          out);
}

/* ------------------------------------------------------------------------ */
/* Input                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct line_list {
    char **v;
    size_t n, cap;
} line_list;

static int lines_push(line_list *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = nc;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = '\0';
    l->v[l->n++] = c;
    return 0;
}

static void lines_free(line_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

#define MAX_INPUT ((size_t)1 << 30) /* 1 GiB of queries */

/* Queries of a file or stdin: one per line, '\r' before '\n' dropped, blank
 * lines kept (they are answered with an error), no empty last line. A NUL
 * byte ends its line's query. */
static sl_status read_queries(const char *path, line_list *out) {
    char *buf;
    size_t len;
    sl_status st = sl_read_input(path, MAX_INPUT, &buf, &len);
    if (st) return st;
    size_t start = 0;
    for (size_t i = 0; i <= len && st == SL_OK; i++) {
        if (i < len && buf[i] != '\n') continue;
        size_t e = i;
        if (e > start && buf[e - 1] == '\r') e--;
        if (i == len && e == start) break;
        if (lines_push(out, buf + start, e - start))
            st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
        start = i + 1;
    }
    free(buf);
    return st;
}

/* --image: one image, or a list of paths. */
static sl_status read_image_queries(const char *arg, line_list *out) {
    if (strcmp(arg, "-") != 0) {
        FILE *f = fopen(arg, "rb");
        if (!f) return sl_set_error(SL_ERR_NOT_FOUND, "%s: cannot open", arg);
        unsigned char head[16];
        size_t n = fread(head, 1, sizeof head, f);
        fclose(f);
        if (sl_image_sniff(head, n) != SL_IMG_UNKNOWN)
            return lines_push(out, arg, strlen(arg)) ? SL_ERR_NOMEM : SL_OK;
    }
    return read_queries(arg, out);
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static json_t *jstr(const char *s, size_t len) {
    char *c = sl_utf8_clean(s, len);
    json_t *j = c ? json_string(c) : NULL;
    free(c);
    return j ? j : json_string("");
}

static int write_json(FILE *out, sl_query_kind kind, const char *query, const sl_query_result *r) {
    json_t *o = json_object();
    const char *tab = kind == SL_QUERY_PHRASE ? strchr(query, '\t') : NULL;
    if (tab) {
        json_object_set_new(o, "query", jstr(tab + 1, strlen(tab + 1)));
        json_object_set_new(o, "image", jstr(query, (size_t)(tab - query)));
    } else {
        json_object_set_new(o, "query", jstr(query, strlen(query)));
    }
    if (r->status != SL_OK) {
        json_object_set_new(o, "error", jstr(r->error, strlen(r->error)));
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->n; i++) {
            const sl_query_hit *h = &r->hits[i];
            json_t *e = json_object();
            json_object_set_new(e, "id", h->id >= 0 ? json_integer(h->id) : json_null());
            if (h->text) json_object_set_new(e, "text", jstr(h->text, strlen(h->text)));
            if (h->path) json_object_set_new(e, "path", jstr(h->path, h->path_len));
            json_object_set_new(e, "score", json_real((double)h->score));
            if (h->has_box) {
                json_t *b = json_array();
                json_array_append_new(b, json_real((double)h->box.x0));
                json_array_append_new(b, json_real((double)h->box.y0));
                json_array_append_new(b, json_real((double)h->box.x1));
                json_array_append_new(b, json_real((double)h->box.y1));
                json_object_set_new(e, "box", b);
            }
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "results", arr);
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!text) return -1;
    fputs(text, out);
    fputc('\n', out);
    free(text);
    return 0;
}

/* A TSV field: \t, \n, \r and \\ escaped. */
static void tsv_field(FILE *out, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\t')
            fputs("\\t", out);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\r')
            fputs("\\r", out);
        else if (c == '\\')
            fputs("\\\\", out);
        else
            fputc(c, out);
    }
}

static void write_tsv(FILE *out, sl_query_kind kind, const char *query, const sl_query_result *r) {
    const char *tab = kind == SL_QUERY_PHRASE ? strchr(query, '\t') : NULL;
    const char *qs = tab ? tab + 1 : query;
    if (r->status != SL_OK) {
        tsv_field(out, query, strlen(query));
        fputs("\terror\t\t", out);
        tsv_field(out, r->error, strlen(r->error));
        fputs("\t\t\n", out);
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const sl_query_hit *h = &r->hits[i];
        tsv_field(out, qs, strlen(qs));
        fprintf(out, "\t%zu\t", i + 1);
        if (h->id >= 0) fprintf(out, "%lld", (long long)h->id);
        fputc('\t', out);
        if (h->text)
            tsv_field(out, h->text, strlen(h->text));
        else if (h->path)
            tsv_field(out, h->path, h->path_len);
        fprintf(out, "\t%.6f\t", (double)h->score);
        if (h->has_box)
            fprintf(out, "%.2f,%.2f,%.2f,%.2f", (double)h->box.x0, (double)h->box.y0,
                    (double)h->box.x1, (double)h->box.y1);
        fputc('\n', out);
    }
}

/* ------------------------------------------------------------------------ */
/* Command                                                                  */
/* ------------------------------------------------------------------------ */

static int parse_int(const char *s, long lo, long hi, int *out) {
    long long v;
    if (sl_parse_int_arg(s, lo, hi, &v)) return -1;
    *out = (int)v; /* lo..hi fit in an int */
    return 0;
}

int sl_cmd_query(int argc, char **argv) {
    enum {
        O_INDEX = 256,
        O_TEXT,
        O_IMAGE,
        O_PHRASE,
        O_JSON,
        O_TSV,
        O_HTML,
        O_RERANK,
        O_MODEL,
        O_DEVICE,
        O_THREADS,
        O_BATCH,
        O_MAXPIX,
        O_QUIET,
        O_HELP
    };
    static const struct option lo[] = {{"index", required_argument, 0, O_INDEX},
                                       {"text", required_argument, 0, O_TEXT},
                                       {"image", required_argument, 0, O_IMAGE},
                                       {"phrase", required_argument, 0, O_PHRASE},
                                       {"json", no_argument, 0, O_JSON},
                                       {"tsv", no_argument, 0, O_TSV},
                                       {"html", required_argument, 0, O_HTML},
                                       {"rerank", required_argument, 0, O_RERANK},
                                       {"model", required_argument, 0, O_MODEL},
                                       {"device", required_argument, 0, O_DEVICE},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"max-pixels", required_argument, 0, O_MAXPIX},
                                       {"quiet", no_argument, 0, O_QUIET},
                                       {"help", no_argument, 0, O_HELP},
                                       {0, 0, 0, 0}};
    sl_query_opts qo = {.k = 10, .batch = 32};
    const char *src[3] = {NULL, NULL, NULL}, *html = NULL;
    int tsv = 0, json = 0, quiet = 0, c;
    long long maxpix = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hk:", lo, NULL)) != -1) {
        switch (c) {
            case O_INDEX:
                qo.index_dir = optarg;
                break;
            case O_TEXT:
                src[SL_QUERY_TEXT] = optarg;
                break;
            case O_IMAGE:
                src[SL_QUERY_IMAGE] = optarg;
                break;
            case O_PHRASE:
                src[SL_QUERY_PHRASE] = optarg;
                break;
            case O_JSON:
                json = 1;
                break;
            case O_TSV:
                tsv = 1;
                break;
            case O_HTML:
                html = optarg;
                break;
            case O_RERANK:
                if (!strcmp(optarg, "fine"))
                    qo.rerank = SL_RERANK_FINE;
                else if (!strcmp(optarg, "none"))
                    qo.rerank = SL_RERANK_NONE;
                else
                    goto bad_value;
                break;
            case O_MODEL:
                qo.model = optarg;
                break;
            case O_DEVICE: {
                int cuda, bf16;
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline query: %s\n", sl_last_error());
                    return SL_EXIT_USAGE;
                }
                qo.device = optarg;
                break;
            }
            case 'k':
                if (parse_int(optarg, 1, SL_QUERY_MAX_K, &qo.k)) goto bad_value;
                break;
            case O_THREADS:
                if (parse_int(optarg, 1, 1024, &qo.threads)) goto bad_value;
                break;
            case O_BATCH:
                if (parse_int(optarg, 1, SL_QUERY_MAX_BATCH, &qo.batch)) goto bad_value;
                break;
            case O_MAXPIX: {
                char *end;
                maxpix = strtoll(optarg, &end, 10);
                if (!*optarg || *end || maxpix < 1 || maxpix > (1LL << 40)) goto bad_value;
                qo.max_pixels = (uint64_t)maxpix;
                break;
            }
            case O_QUIET:
                quiet = 1;
                break;
            case 'h':
            case O_HELP:
                sl_cmd_query_help(stdout);
                return SL_EXIT_OK;
            default:
                fprintf(stderr, "sightline query: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                return SL_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sightline query: unexpected argument '%s'\n", argv[optind]);
        return SL_EXIT_USAGE;
    }
    int nsrc = !!src[0] + !!src[1] + !!src[2];
    if (!qo.index_dir || nsrc != 1) {
        fprintf(stderr, "sightline query: need --index and exactly one of --text, --image, "
                        "--phrase (see --help)\n");
        return SL_EXIT_USAGE;
    }
    if (json + tsv + !!html > 1) {
        fprintf(stderr, "sightline query: --json, --tsv and --html exclude each other\n");
        return SL_EXIT_USAGE;
    }
    sl_query_kind kind = src[SL_QUERY_TEXT]    ? SL_QUERY_TEXT
                         : src[SL_QUERY_IMAGE] ? SL_QUERY_IMAGE
                                               : SL_QUERY_PHRASE;
    if (qo.rerank == SL_RERANK_FINE && kind == SL_QUERY_PHRASE) {
        fprintf(stderr, "sightline query: --rerank fine applies to --text and --image queries\n");
        return SL_EXIT_USAGE;
    }

    line_list qs = {0};
    sl_query *q = NULL;
    sl_query_result *res = NULL;
    int rc = SL_EXIT_OK;
    size_t failed = 0, done = 0;
    sl_status st =
        kind == SL_QUERY_IMAGE ? read_image_queries(src[kind], &qs) : read_queries(src[kind], &qs);
    if (st == SL_OK) st = sl_query_open(&qo, &q);
    if (st == SL_OK) st = sl_query_check(q, kind);
    if (st == SL_OK && !(res = calloc(qs.n ? qs.n : 1, sizeof *res)))
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu queries", qs.n);
    /* answer in chunks so that lines stream out; the page needs them all */
    const size_t chunk = (size_t)qo.batch * 4;
    sl_progress *prog = sl_progress_create("query", qs.n, quiet);
    while (st == SL_OK && done < qs.n) {
        size_t m = qs.n - done < chunk ? qs.n - done : chunk;
        st = sl_query_run(q, kind, (const char *const *)qs.v + done, m, res + done);
        for (size_t i = done; st == SL_OK && i < done + m; i++) {
            if (res[i].status != SL_OK) {
                failed++;
                SL_WARN("query %zu: %s", i + 1, res[i].error);
            }
            if (html) continue;
            if (tsv)
                write_tsv(stdout, kind, qs.v[i], &res[i]);
            else if (write_json(stdout, kind, qs.v[i], &res[i]))
                st = sl_set_error(SL_ERR_NOMEM, "out of memory writing JSON");
            if (!html) sl_query_result_clear(&res[i]);
        }
        fflush(stdout);
        sl_progress_add(prog, m);
        done += m;
    }
    sl_progress_finish(prog);
    if (st == SL_OK && html)
        st = sl_query_report_html(html, kind, (const char *const *)qs.v, res, qs.n);
    if (st == SL_OK && ferror(stdout)) st = sl_set_error(SL_ERR_IO, "stdout: write failed");
    if (st != SL_OK) {
        SL_ERROR("%s", sl_last_error());
        rc = SL_EXIT_FAILED;
    } else {
        if (!quiet || failed)
            fprintf(stderr, "answered %zu of %zu queries%s%s; %zu failed\n", qs.n - failed, qs.n,
                    html ? " into " : "", html ? html : "", failed);
        if (failed) rc = SL_EXIT_PARTIAL;
    }
    for (size_t i = 0; res && i < qs.n; i++) sl_query_result_clear(&res[i]);
    free(res);
    sl_query_free(q);
    lines_free(&qs);
    return rc;
bad_value:
    sl_cli_bad_value("query", lo, c, optarg);
    return SL_EXIT_USAGE;
}
