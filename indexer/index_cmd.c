/*
 * indexer/index_cmd.c - `sightline index build|update|remove|stats|verify|
 * compact|texts`.
 */
#include "cli/commands.h"
#include "sightline/default_model.h"
#include "sightline/encoder.h"
#include "sightline/indexer.h"
#include "sightline/npy.h"
#include "sightline/query.h"
#include "sightline/store.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_index_help(FILE *out) {
    fputs(
        "usage: sightline index <action> --index DIR [options]\n"
        "\n"
        "Keep a FAISS index (with RocksDB metadata) of image embeddings up to date.\n"
        "\n"
        "actions:\n"
        "  build    [--model PATH] --index DIR --images SRC... [--type T] [--region]\n"
        "           create the index (or finish an interrupted build) from SRC: folders\n"
        "           (walked recursively), image files, or text files listing image paths\n"
        "           --urls LIST.tsv (repeatable) adds a URL list: one url[<TAB>caption] per\n"
        "           line ('#' comments); images are downloaded into DIR/downloads (content-\n"
        "           addressed; a URL fetched once is never downloaded again) and recorded\n"
        "           under their URL\n"
        "  update   --index DIR [--images SRC...] [--urls LIST.tsv...] [--model PATH]\n"
        "           re-walk the recorded sources (plus any given): encode new and changed\n"
        "           files, reuse vectors of known content, remove files that are gone\n"
        "  remove   --index DIR PATH...     forget these files\n"
        "  stats    --index DIR [--json]    counts, type, sources, files that failed\n"
        "  verify   --index DIR             exit 0 only when FAISS and RocksDB agree exactly\n"
        "  compact  --index DIR [--type T]  rebuild the FAISS indices, compact the metadata\n"
        "  export   --index DIR --out OUT.npy\n"
        "           write the image embeddings [N, D] (float32) and OUT.npy.paths.txt (one\n"
        "           path per row; \\n, \\t and \\\\ escaped) for other tools\n"
        "  texts    [--model PATH] --index DIR --texts FILE\n"
        "           replace the text side (one text per line, or a Karpathy JSON's captions)\n"
        "\n"
        "options:\n"
        "  --model PATH         model directory or .safetensors file (build and texts default:\n"
        "                       $SIGHTLINE_MODEL, else the embedded demo model; update: the\n"
        "                       one the index was built with)\n"
        "  --type T             auto (default: Flat for small corpora, HNSW32 or IVF-PQ beyond,\n"
        "                       within --memory-budget), Flat, HNSW32, IVF<k>,PQ<m>, or any\n"
        "                       FAISS factory string\n"
        "  --memory-budget N    bytes the index may use for --type auto (e.g. 4G; default 4G)\n"
        "  --region             also index patch embeddings (phrase-to-region lookups)\n"
        "  --include GLOB       only files matching (repeatable; matched against the name, or the\n"
        "                       path under the source when GLOB has a '/')\n"
        "  --exclude GLOB       skip files and folders matching (repeatable)\n"
        "  --hidden             walk hidden files and folders too\n"
        "  --max-delete F       most an update may remove, as a fraction or a percentage\n"
        "                       (default 20%); past it nothing is removed\n"
        "  --force              remove even past --max-delete or with a source missing\n"
        "  --wait               wait for a concurrent run instead of exiting 75\n"
        "  --device NAME        cpu (default), cuda[:N] or cuda-f32[:N]\n"
        "  --threads N          compute threads (default: all cores)\n"
        "  --batch N            images per forward pass (default 32; 256 on a GPU)\n"
        "  --max-pixels N       refuse images declaring more pixels (default 100000000)\n"
        "  --quiet              print only errors and the one-line summary\n"
        "URL lists (--urls):\n"
        "  --parallel N         concurrent downloads (default 8)\n"
        "  --timeout S          seconds for one download attempt (default 60)\n"
        "  --connect-timeout S  seconds to connect (default 10)\n"
        "  --retries N          retries of a 5xx, 429, timeout or connection error, with\n"
        "                       exponential backoff (default 3; 4xx are not retried)\n"
        "  --max-download N     largest image accepted (e.g. 20M; default 50M)\n"
        "  --max-redirects N    redirects followed (default 5; http and https only)\n"
        "  --retry-failed       also retry URLs that failed for good before (4xx, not an\n"
        "                       image, too large); failures that may pass are retried anyway\n"
        "\n"
        "exit codes: 0 done; 1 failed; 2 usage error; 3 done, but some files failed or\n"
        "removals were held back (the summary says which and why); 75 another run holds\n"
        "the index.\n",
        out);
}

/* Options shared by every action. */
typedef struct index_args {
    const char *action;
    const char *index, *model, *type, *texts, *out, *device;
    const char **sources;
    size_t nsources;
    const char **include, **exclude;
    size_t ninclude, nexclude;
    int region, hidden, force, wait, quiet, json;
    int threads, batch;
    uint64_t memory_budget, max_pixels;
    double max_delete;
    const char **urls; /* --urls FILE.tsv (repeatable) */
    size_t nurls;
    sl_fetch_opts fetch; /* --parallel, --timeout, ... for URL lists */
    char **rest;         /* positional arguments after the options */
    int nrest;
} index_args;

static int parse_bytes(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double mult = 1;
    switch (*end) {
        case 'k':
        case 'K':
            mult = 1024.0;
            end++;
            break;
        case 'm':
        case 'M':
            mult = 1024.0 * 1024;
            end++;
            break;
        case 'g':
        case 'G':
            mult = 1024.0 * 1024 * 1024;
            end++;
            break;
        case 't':
        case 'T':
            mult = 1024.0 * 1024 * 1024 * 1024;
            end++;
            break;
        default:
            break;
    }
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    long long v;
    if (sl_parse_int_arg(s, lo, hi, &v)) return -1;
    *out = (int)v; /* lo..hi fit in an int */
    return 0;
}

static int push_arg(const char ***v, size_t *n, const char *s) {
    const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return -1;
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

static int parse_args(int argc, char **argv, index_args *a) {
    enum {
        O_INDEX = 256,
        O_MODEL,
        O_IMAGES,
        O_TYPE,
        O_BUDGET,
        O_REGION,
        O_INCLUDE,
        O_EXCLUDE,
        O_HIDDEN,
        O_MAXDEL,
        O_FORCE,
        O_WAIT,
        O_DEVICE,
        O_THREADS,
        O_BATCH,
        O_MAXPIX,
        O_QUIET,
        O_JSON,
        O_TEXTS,
        O_OUT,
        O_URLS,
        O_PARALLEL,
        O_TIMEOUT,
        O_CONNECT_TIMEOUT,
        O_RETRIES,
        O_MAX_DOWNLOAD,
        O_MAX_REDIRECTS,
        O_RETRY_FAILED,
        O_HELP
    };
    static const struct option lo[] = {{"index", required_argument, 0, O_INDEX},
                                       {"model", required_argument, 0, O_MODEL},
                                       {"images", required_argument, 0, O_IMAGES},
                                       {"type", required_argument, 0, O_TYPE},
                                       {"memory-budget", required_argument, 0, O_BUDGET},
                                       {"region", no_argument, 0, O_REGION},
                                       {"include", required_argument, 0, O_INCLUDE},
                                       {"exclude", required_argument, 0, O_EXCLUDE},
                                       {"hidden", no_argument, 0, O_HIDDEN},
                                       {"max-delete", required_argument, 0, O_MAXDEL},
                                       {"force", no_argument, 0, O_FORCE},
                                       {"wait", no_argument, 0, O_WAIT},
                                       {"device", required_argument, 0, O_DEVICE},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"max-pixels", required_argument, 0, O_MAXPIX},
                                       {"quiet", no_argument, 0, O_QUIET},
                                       {"json", no_argument, 0, O_JSON},
                                       {"texts", required_argument, 0, O_TEXTS},
                                       {"out", required_argument, 0, O_OUT},
                                       {"urls", required_argument, 0, O_URLS},
                                       {"parallel", required_argument, 0, O_PARALLEL},
                                       {"timeout", required_argument, 0, O_TIMEOUT},
                                       {"connect-timeout", required_argument, 0, O_CONNECT_TIMEOUT},
                                       {"retries", required_argument, 0, O_RETRIES},
                                       {"max-download", required_argument, 0, O_MAX_DOWNLOAD},
                                       {"max-redirects", required_argument, 0, O_MAX_REDIRECTS},
                                       {"retry-failed", no_argument, 0, O_RETRY_FAILED},
                                       {"help", no_argument, 0, O_HELP},
                                       {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
            case O_INDEX:
                a->index = optarg;
                break;
            case O_MODEL:
                a->model = optarg;
                break;
            case O_IMAGES:
                if (push_arg(&a->sources, &a->nsources, optarg)) return -1;
                /* --images A B C: take the words that follow, up to the next option */
                while (optind < argc && argv[optind][0] != '-')
                    if (push_arg(&a->sources, &a->nsources, argv[optind++])) return -1;
                break;
            case O_TYPE:
                a->type = optarg;
                break;
            case O_BUDGET:
                if (parse_bytes(optarg, &a->memory_budget)) goto bad;
                break;
            case O_REGION:
                a->region = 1;
                break;
            case O_INCLUDE:
                if (push_arg(&a->include, &a->ninclude, optarg)) return -1;
                break;
            case O_EXCLUDE:
                if (push_arg(&a->exclude, &a->nexclude, optarg)) return -1;
                break;
            case O_HIDDEN:
                a->hidden = 1;
                break;
            case O_MAXDEL: {
                char *end;
                double v = strtod(optarg, &end);
                if (end == optarg || v < 0) goto bad;
                if (*end == '%') {
                    v /= 100;
                    end++;
                }
                if (*end || v > 1) goto bad;
                a->max_delete = v > 0 ? v : 1e-12;
                break;
            }
            case O_FORCE:
                a->force = 1;
                break;
            case O_WAIT:
                a->wait = 1;
                break;
            case O_DEVICE: {
                int cuda, bf16;
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline index: %s\n", sl_last_error());
                    return -2;
                }
                a->device = optarg;
                break;
            }
            case O_THREADS:
                if (parse_int(optarg, 1, 1024, &a->threads)) goto bad;
                break;
            case O_BATCH:
                if (parse_int(optarg, 1, 4096, &a->batch)) goto bad;
                break;
            case O_MAXPIX:
                if (parse_bytes(optarg, &a->max_pixels) || !a->max_pixels) goto bad;
                break;
            case O_QUIET:
                a->quiet = 1;
                break;
            case O_JSON:
                a->json = 1;
                break;
            case O_TEXTS:
                a->texts = optarg;
                break;
            case O_OUT:
                a->out = optarg;
                break;
            case O_URLS:
                if (push_arg(&a->urls, &a->nurls, optarg)) return -1;
                break;
            case O_PARALLEL:
                if (parse_int(optarg, 1, 256, &a->fetch.parallel)) goto bad;
                break;
            case O_TIMEOUT:
            case O_CONNECT_TIMEOUT: {
                char *end;
                double v = strtod(optarg, &end);
                if (end == optarg || *end || !(v > 0 && v <= 86400)) goto bad;
                *(c == O_TIMEOUT ? &a->fetch.timeout : &a->fetch.connect_timeout) = v;
                break;
            }
            case O_RETRIES:
                if (parse_int(optarg, 0, 100, &a->fetch.retries)) goto bad;
                if (a->fetch.retries == 0) a->fetch.retries = -1; /* none */
                break;
            case O_MAX_DOWNLOAD:
                if (parse_bytes(optarg, &a->fetch.max_bytes) || !a->fetch.max_bytes) goto bad;
                break;
            case O_MAX_REDIRECTS:
                if (parse_int(optarg, 0, 100, &a->fetch.max_redirects)) goto bad;
                if (a->fetch.max_redirects == 0) a->fetch.max_redirects = -1; /* none */
                break;
            case O_RETRY_FAILED:
                a->fetch.retry_failed = 1;
                break;
            case 'h':
            case O_HELP:
                return 1;
            default:
                fprintf(stderr, "sightline index: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                return -2;
        }
    }
    a->rest = argv + optind;
    a->nrest = argc - optind;
    return 0;
bad:
    sl_cli_bad_value("index", lo, c, optarg);
    return -2;
}

static int fail(const char *what) {
    fprintf(stderr, "sightline index %s: %s\n", what, sl_last_error());
    return SL_EXIT_FAILED;
}

static int status_exit(sl_status st, const char *what) {
    if (st == SL_ERR_BUSY) {
        fprintf(stderr, "sightline index %s: %s\n", what, sl_last_error());
        return SL_EXIT_BUSY;
    }
    return fail(what);
}

static int run_update(index_args *a, int build) {
    if (build && !a->nsources) {
        fprintf(stderr, "sightline index build: needs --index and --images or --urls\n");
        return SL_EXIT_USAGE;
    }
    sl_index_opts o = {.index_dir = a->index,
                       .model = a->model,
                       .sources = a->sources,
                       .n_sources = a->nsources,
                       .index_type = a->type,
                       .memory_budget = a->memory_budget,
                       .region = a->region,
                       .create = build,
                       .threads = a->threads,
                       .device = a->device,
                       .batch = a->batch,
                       .max_delete = a->max_delete,
                       .force = a->force,
                       .wait_lock = a->wait,
                       .quiet = a->quiet,
                       .max_pixels = a->max_pixels,
                       .fetch = a->fetch};
    o.walk.include_hidden = a->hidden;
    o.walk.include = a->include;
    o.walk.n_include = a->ninclude;
    o.walk.exclude = a->exclude;
    o.walk.n_exclude = a->nexclude;
    if (a->quiet) sl_log_set_level(SL_LOG_ERROR);
    sl_index_summary s;
    sl_status st = sl_index_update(&o, &s);
    if (st) {
        int rc = status_exit(st, build ? "build" : "update");
        sl_index_summary_free(&s);
        return rc;
    }
    for (uint64_t i = 0; i < s.failed; i++)
        if (a->quiet) fprintf(stderr, "failed: %s: %s\n", s.failures[i].path, s.failures[i].reason);
    if (s.deletions_held) fprintf(stderr, "sightline index: %s\n", s.held_reason);
    uint64_t encoded = s.added + s.updated - s.reused;
    double rate = encoded && s.seconds > 0 ? (double)encoded / s.seconds : 0;
    printf("%s: %llu images in the index; %llu seen, %llu unchanged, %llu added, %llu updated, "
           "%llu reused, %llu removed, %llu failed%s; %.1f s",
           a->index, (unsigned long long)s.total, (unsigned long long)s.seen,
           (unsigned long long)s.unchanged, (unsigned long long)s.added,
           (unsigned long long)s.updated, (unsigned long long)s.reused,
           (unsigned long long)s.removed, (unsigned long long)s.failed,
           s.deletions_held ? ", removals held back" : "", s.seconds);
    if (rate > 0) printf(" (%.1f images/s)", rate);
    printf("\n");
    int rc = (s.failed || s.deletions_held) ? SL_EXIT_PARTIAL : SL_EXIT_OK;
    sl_index_summary_free(&s);
    return rc;
}

/* build/update: each --urls FILE becomes the source "urls:" + its absolute
 * path (see sightline/fetch.h), next to the --images sources. */
static int do_update(index_args *a, int build) {
    char **owned = calloc(a->nurls + 1, sizeof *owned);
    int rc = owned ? SL_EXIT_OK : SL_EXIT_FAILED;
    for (size_t i = 0; i < a->nurls && rc == SL_EXIT_OK; i++) {
        char real[PATH_MAX];
        size_t n = strlen(SL_FETCH_SOURCE_PFX) + PATH_MAX + 1;
        if (!realpath(a->urls[i], real)) {
            fprintf(stderr, "sightline index: --urls %s: %s\n", a->urls[i], strerror(errno));
            rc = SL_EXIT_FAILED;
        } else if (!(owned[i] = malloc(n)) || push_arg(&a->sources, &a->nsources, owned[i])) {
            rc = SL_EXIT_FAILED;
        } else {
            snprintf(owned[i], n, "%s%s", SL_FETCH_SOURCE_PFX, real);
        }
    }
    /* build without --model: the default model (update: the recorded one) */
    char *default_model = NULL;
    if (a->quiet) sl_log_set_level(SL_LOG_ERROR);
    if (rc == SL_EXIT_OK && build && a->nsources &&
        sl_model_or_default(a->model, &a->model, &default_model))
        rc = fail("build");
    if (rc == SL_EXIT_OK) rc = run_update(a, build);
    for (size_t i = 0; owned && i < a->nurls; i++) free(owned[i]);
    free(owned);
    free(default_model);
    return rc;
}

typedef struct stats_ctx {
    json_t *failed;
    int json;
} stats_ctx;

static int stats_file(void *ctx, const char *path, size_t len, const sl_file_rec *rec) {
    stats_ctx *c = ctx;
    if (rec->id) return 0;
    if (c->json) {
        json_t *o = json_object();
        char *clean = sl_utf8_clean(path, len); /* JSON must be UTF-8; names need not be */
        json_object_set_new(o, "path", clean ? json_string(clean) : json_null());
        free(clean);
        json_object_set_new(o, "error", json_string(rec->error));
        json_array_append_new(c->failed, o);
    } else {
        printf("  %.*s\t%s\n", (int)len, path, rec->error);
    }
    return 0;
}

static int do_stats(index_args *a) {
    sl_store *s;
    sl_store_opts so = {.read_only = 1};
    if (sl_store_open(a->index, &so, &s)) return fail("stats");
    sl_store_report r;
    if (sl_store_verify(s, &r)) {
        sl_store_abandon(s);
        return fail("stats");
    }
    char *sources = NULL, *patch_kind = NULL;
    sl_store_get_state(s, "sources", &sources);
    sl_store_get_state(s, "patch_tokens", &patch_kind);
    /* region indexes from before the kind was recorded hold final rows */
    const char *pk = sl_store_patches(s) ? (patch_kind ? patch_kind : "final") : "none";
    stats_ctx c = {.failed = json_array(), .json = a->json};
    if (a->json) {
        json_t *o = json_object();
        json_object_set_new(o, "index", json_string(a->index));
        json_object_set_new(o, "files", json_integer((json_int_t)r.files));
        json_object_set_new(o, "images", json_integer((json_int_t)r.indexed));
        json_object_set_new(o, "failed_files", json_integer((json_int_t)r.failed));
        json_object_set_new(o, "texts", json_integer((json_int_t)r.count[SL_COLL_TEXTS]));
        json_object_set_new(o, "regions", json_integer((json_int_t)r.count[SL_COLL_REGIONS]));
        json_object_set_new(o, "dim", json_integer(sl_store_dim(s)));
        json_object_set_new(o, "patches", json_integer(sl_store_patches(s)));
        json_object_set_new(o, "patch_tokens", json_string(pk));
        json_object_set_new(o, "index_type", json_string(sl_store_index_type(s)));
        json_object_set_new(o, "model", json_string(sl_store_model(s)));
        json_object_set_new(o, "disk_bytes", json_integer((json_int_t)sl_store_disk_bytes(s)));
        json_t *src = sources ? json_loads(sources, 0, NULL) : NULL;
        json_object_set_new(o, "sources", src ? src : json_array());
        sl_store_foreach_file(s, stats_file, &c);
        json_object_set_new(o, "failures", c.failed);
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text) printf("%s\n", text);
        free(text);
        json_decref(o);
    } else {
        printf("index      %s\n", a->index);
        printf("images     %llu (of %llu files; %llu failed)\n", (unsigned long long)r.indexed,
               (unsigned long long)r.files, (unsigned long long)r.failed);
        printf("texts      %llu\n", (unsigned long long)r.count[SL_COLL_TEXTS]);
        printf("regions    %llu (%d per image, %s patch tokens)\n",
               (unsigned long long)r.count[SL_COLL_REGIONS], sl_store_patches(s), pk);
        printf("type       %s, %d dimensions, inner product\n", sl_store_index_type(s),
               sl_store_dim(s));
        printf("model      %s\n", sl_store_model(s));
        printf("disk       %.1f MB\n", (double)sl_store_disk_bytes(s) / 1e6);
        printf("sources    %s\n", sources ? sources : "[]");
        if (r.failed) {
            printf("failed files:\n");
            sl_store_foreach_file(s, stats_file, &c);
        }
        json_decref(c.failed);
    }
    free(sources);
    free(patch_kind);
    sl_store_abandon(s);
    return SL_EXIT_OK;
}

static int do_verify(index_args *a) {
    sl_store *s;
    sl_store_opts so = {.wait_lock = a->wait};
    sl_status st = sl_store_open(a->index, &so, &s);
    if (st) return status_exit(st, "verify");
    sl_store_report r;
    if (sl_store_verify(s, &r)) {
        sl_store_abandon(s);
        return fail("verify");
    }
    int ok = r.dangling == 0;
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        int cok = r.missing[c] == 0 && r.extra[c] == 0 && r.count[c] == r.faiss_count[c];
        printf("%-8s RocksDB %llu, FAISS %llu, missing %llu, extra %llu: %s\n",
               sl_collection_name((sl_collection)c), (unsigned long long)r.count[c],
               (unsigned long long)r.faiss_count[c], (unsigned long long)r.missing[c],
               (unsigned long long)r.extra[c], cok ? "ok" : "MISMATCH");
        ok &= cok;
    }
    printf("files    %llu (%llu indexed, %llu failed), dangling ids %llu: %s\n",
           (unsigned long long)r.files, (unsigned long long)r.indexed, (unsigned long long)r.failed,
           (unsigned long long)r.dangling, r.dangling ? "MISMATCH" : "ok");
    sl_store_abandon(s);
    printf("%s\n", ok ? "verify: FAISS and RocksDB agree" : "verify: MISMATCH");
    return ok ? SL_EXIT_OK : SL_EXIT_FAILED;
}

typedef struct export_ctx {
    sl_store *s;
    sl_npy_writer *w;
    FILE *paths;
    float *vec;
    sl_status st;
} export_ctx;

static int export_file(void *ctx, const char *path, size_t len, const sl_file_rec *rec) {
    export_ctx *e = ctx;
    if (rec->id == 0) return 0;
    if ((e->st = sl_store_get_vector(e->s, SL_COLL_IMAGES, rec->id, e->vec))) return 1;
    if ((e->st = sl_npy_writer_append(e->w, e->vec, 1))) return 1;
    for (size_t i = 0; i < len; i++) {
        char c = path[i];
        if (c == '\n')
            fputs("\\n", e->paths);
        else if (c == '\t')
            fputs("\\t", e->paths);
        else if (c == '\\')
            fputs("\\\\", e->paths);
        else
            fputc(c, e->paths);
    }
    fputc('\n', e->paths);
    return 0;
}

static int do_export(index_args *a) {
    if (!a->out) {
        fprintf(stderr, "sightline index export: needs --out OUT.npy\n");
        return SL_EXIT_USAGE;
    }
    sl_store *s;
    sl_store_opts so = {.read_only = 1};
    if (sl_store_open(a->index, &so, &s)) return fail("export");
    size_t d = (size_t)sl_store_dim(s);
    export_ctx e = {.s = s, .vec = malloc(d * sizeof(float))};
    char pp[4096];
    snprintf(pp, sizeof pp, "%s.paths.txt", a->out);
    e.paths = fopen(pp, "w");
    if (!e.vec || !e.paths) {
        sl_set_error(SL_ERR_IO, "%s: cannot create", pp);
        e.st = SL_ERR_IO;
    } else if ((e.st = sl_npy_writer_open(a->out, SL_NPY_F32, 1, &d, &e.w)) == SL_OK) {
        sl_status st = sl_store_foreach_file(s, export_file, &e);
        if (e.st == SL_OK) e.st = st;
        if (e.st == SL_OK) {
            size_t rows = sl_npy_writer_rows(e.w);
            e.st = sl_npy_writer_close(e.w);
            if (e.st == SL_OK)
                printf("%s: %zu embeddings of %zu dimensions, paths in %s\n", a->out, rows, d, pp);
        } else {
            sl_npy_writer_abort(e.w);
        }
    }
    if (e.paths && fclose(e.paths) != 0 && e.st == SL_OK)
        e.st = sl_set_error(SL_ERR_IO, "%s: write failed", pp);
    free(e.vec);
    sl_store_abandon(s);
    return e.st ? fail("export") : SL_EXIT_OK;
}

static int do_compact(index_args *a) {
    sl_store *s;
    sl_store_opts so = {.wait_lock = a->wait};
    sl_status st = sl_store_open(a->index, &so, &s);
    if (st) return status_exit(st, "compact");
    if ((st = sl_store_compact(s, a->type))) {
        sl_store_abandon(s);
        return fail("compact");
    }
    printf("%s: compacted; %llu images, type %s, %.1f MB\n", a->index,
           (unsigned long long)sl_store_count(s, SL_COLL_IMAGES), sl_store_index_type(s),
           (double)sl_store_disk_bytes(s) / 1e6);
    return sl_store_close(s) ? fail("compact") : SL_EXIT_OK;
}

int sl_cmd_index(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        sl_cmd_index_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SL_EXIT_USAGE : SL_EXIT_OK;
    }
    index_args a = {.action = argv[1]};
    int pr = parse_args(argc - 1, argv + 1, &a);
    int rc;
    if (pr == 1) {
        sl_cmd_index_help(stdout);
        rc = SL_EXIT_OK;
    } else if (pr < 0) {
        rc = SL_EXIT_USAGE;
    } else if (!a.index) {
        fprintf(stderr, "sightline index %s: --index DIR is required\n", a.action);
        rc = SL_EXIT_USAGE;
    } else if (!strcmp(a.action, "build") || !strcmp(a.action, "update")) {
        rc = a.nrest
                 ? (fprintf(stderr, "sightline index: unexpected '%s'\n", a.rest[0]), SL_EXIT_USAGE)
                 : do_update(&a, !strcmp(a.action, "build"));
    } else if (!strcmp(a.action, "remove")) {
        uint64_t removed = 0;
        if (!a.nrest) {
            fprintf(stderr, "sightline index remove: name the paths to remove\n");
            rc = SL_EXIT_USAGE;
        } else {
            sl_status st =
                sl_index_remove(a.index, (const char *const *)a.rest, (size_t)a.nrest, &removed);
            rc = st ? status_exit(st, "remove") : SL_EXIT_OK;
            if (!st) printf("%s: removed %llu files\n", a.index, (unsigned long long)removed);
        }
    } else if (!strcmp(a.action, "stats")) {
        rc = do_stats(&a);
    } else if (!strcmp(a.action, "verify")) {
        rc = do_verify(&a);
    } else if (!strcmp(a.action, "compact")) {
        rc = do_compact(&a);
    } else if (!strcmp(a.action, "export")) {
        rc = do_export(&a);
    } else if (!strcmp(a.action, "texts")) {
        char *default_model = NULL;
        if (!a.texts) {
            fprintf(stderr, "sightline index texts: needs --index and --texts\n");
            rc = SL_EXIT_USAGE;
        } else if (sl_model_or_default(a.model, &a.model, &default_model)) {
            rc = fail("texts");
        } else {
            uint64_t n;
            sl_status st =
                sl_index_texts(a.index, a.model, a.texts, a.threads, a.device, a.quiet, &n);
            rc = st ? status_exit(st, "texts") : SL_EXIT_OK;
            if (!st) printf("%s: %llu texts indexed\n", a.index, (unsigned long long)n);
        }
        free(default_model);
    } else {
        fprintf(stderr, "sightline index: unknown action '%s' (see --help)\n", a.action);
        rc = SL_EXIT_USAGE;
    }
    free(a.sources);
    free(a.urls);
    free(a.include);
    free(a.exclude);
    return rc;
}
