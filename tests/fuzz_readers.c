/*
 * tests/fuzz_readers.c - robustness targets for the dataset readers: the
 * Karpathy split JSON (sl_karpathy_read), Flickr30K Entities
 * (sl_ground_read_entities, sl_ground_parse_sentence, sl_ground_read_split)
 * and RefCOCO COCO-style JSON (sl_ground_read_refcoco). Input layouts and
 * invariants: tests/fuzz_readers.h. A violated invariant abort()s.
 *
 * Built twice: into the plain driver (tests/fuzz_driver.c, every build,
 * ctest) and, with -DSL_FUZZ_TARGET=<function>, into a libFuzzer executable
 * whose LLVMFuzzerTestOneInput calls that function (tests/fuzz.cmake).
 */
#include "fuzz_readers.h"

#include "sightline/eval.h"
#include "sightline/eval_grounding.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sl_status sl_fuzz_last_status;

#define ENT_ID "1000092795" /* the one image of an entities input */

/* ------------------------------------------------------------------------ */
/* Checks and files                                                         */
/* ------------------------------------------------------------------------ */

__attribute__((noreturn)) static void violated(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: fuzz invariant violated: %s\n  last error: '%s'\n", file, line, what,
            sl_last_error());
    abort();
}

#define REQUIRE(cond) ((cond) ? (void)0 : violated(__FILE__, __LINE__, #cond))

static char g_dir[512];              /* the temporary folder, "" before setup */
static char g_karpathy[600];         /* DIR/karpathy.json */
static char g_refcoco[600];          /* DIR/refcoco.json */
static char g_ent[600];              /* DIR/entities (Sentences/, Annotations/) */
static char g_sent_dir[700];         /* DIR/entities/Sentences */
static char g_ann_dir[700];          /* DIR/entities/Annotations */
static char g_sent[800], g_ann[800]; /* the sentence and annotation files */
static char g_split[600];            /* DIR/split.txt */

void sl_fuzz_cleanup(void) {
    if (!g_dir[0]) return;
    unlink(g_karpathy);
    unlink(g_refcoco);
    unlink(g_sent);
    unlink(g_ann);
    unlink(g_split);
    rmdir(g_sent_dir);
    rmdir(g_ann_dir);
    rmdir(g_ent);
    rmdir(g_dir);
    g_dir[0] = '\0';
}

static void setup(void) {
    if (g_dir[0]) return;
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/slfuzz.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    snprintf(g_karpathy, sizeof g_karpathy, "%s/karpathy.json", g_dir);
    snprintf(g_refcoco, sizeof g_refcoco, "%s/refcoco.json", g_dir);
    snprintf(g_ent, sizeof g_ent, "%s/entities", g_dir);
    snprintf(g_sent_dir, sizeof g_sent_dir, "%s/Sentences", g_ent);
    snprintf(g_ann_dir, sizeof g_ann_dir, "%s/Annotations", g_ent);
    snprintf(g_sent, sizeof g_sent, "%s/" ENT_ID ".txt", g_sent_dir);
    snprintf(g_ann, sizeof g_ann, "%s/" ENT_ID ".xml", g_ann_dir);
    snprintf(g_split, sizeof g_split, "%s/split.txt", g_dir);
    if (mkdir(g_ent, 0700) || mkdir(g_sent_dir, 0700) || mkdir(g_ann_dir, 0700)) {
        perror("fuzz: mkdir");
        abort();
    }
    atexit(sl_fuzz_cleanup);
}

/* Write data to path; NULL data removes the file. Always a new file: ext4
 * flushes a file truncated and rewritten when it is closed (auto_da_alloc),
 * which costs milliseconds per call. */
static void put_file(const char *path, const uint8_t *data, size_t n) {
    if (unlink(path) != 0 && errno != ENOENT) {
        perror(path);
        abort();
    }
    if (!data) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror(path);
            abort();
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        perror(path);
        abort();
    }
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Whether the message holds a line number: "file:12:" or "line 12". */
static int names_line(const char *m) {
    for (const char *p = m; *p; p++) {
        if (*p == ':' && p[1] >= '0' && p[1] <= '9') {
            const char *q = p + 1;
            while (*q >= '0' && *q <= '9') q++;
            if (*q == ':') return 1;
        }
        if (!strncmp(p, "line ", 5) && p[5] >= '0' && p[5] <= '9') return 1;
    }
    return 0;
}

/* A failed reader call: non-OK, a message naming the file (every input
 * lives under g_dir), and for syntax errors (need_line) the line. */
static void check_failure(sl_status st, int need_line) {
    REQUIRE(st != SL_OK);
    const char *m = sl_last_error();
    REQUIRE(m != NULL && m[0] != '\0');
    if (st == SL_ERR_NOMEM) return;
    REQUIRE(strstr(m, g_dir) != NULL);
    if (need_line && (st == SL_ERR_FORMAT || (st == SL_ERR_LIMIT && !strstr(m, "limit of"))))
        REQUIRE(names_line(m));
}

static int all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

static int is_space_c(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_type_c(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int all_digits(const char *s, size_t maxlen) {
    size_t n = strlen(s);
    if (n == 0 || n > maxlen) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

/* A relative path without "..", as the readers promise. */
static int safe_rel(const char *s, size_t maxlen) {
    size_t n = strlen(s);
    if (n == 0 || n > maxlen || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, '/');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == 2 && p[0] == '.' && p[1] == '.') return 0;
        if (!e) break;
        p = e + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Karpathy                                                                 */
/* ------------------------------------------------------------------------ */

static void check_karpathy(const sl_karpathy *k, int mc, const uint8_t *data, size_t size) {
    REQUIRE(k->dataset != NULL);
    (void)strlen(k->dataset);
    REQUIRE(k->n_images <= k->n_file_images);
    REQUIRE(k->n_file_images <= SL_KARPATHY_MAX_IMAGES);
    REQUIRE(k->n_images == 0 || k->images != NULL);
    REQUIRE(k->n_captions == 0 || (k->captions != NULL && k->caption_image != NULL));
    REQUIRE(k->n_no_split <= k->n_file_images);
    size_t next = 0, none = 0, fewer = 0, more = 0, dropped = 0, sentences = 0;
    for (size_t i = 0; i < k->n_images; i++) {
        const sl_karpathy_image *im = &k->images[i];
        REQUIRE(im->filename != NULL && safe_rel(im->filename, 4096));
        REQUIRE(im->filepath == NULL || safe_rel(im->filepath, 4096));
        REQUIRE(im->first_caption == next);
        REQUIRE(im->n_sentences <= SL_KARPATHY_MAX_CAPTIONS);
        REQUIRE(im->n_captions == (im->n_sentences < (size_t)mc ? im->n_sentences : (size_t)mc));
        REQUIRE(im->n_captions <= k->n_captions - next);
        for (size_t c = next; c < next + im->n_captions; c++) REQUIRE(k->caption_image[c] == i);
        next += im->n_captions;
        none += im->n_sentences == 0;
        fewer += im->n_sentences > 0 && im->n_sentences < (size_t)mc;
        more += im->n_sentences > (size_t)mc;
        dropped += im->n_sentences - im->n_captions;
        sentences += im->n_sentences;
        for (int r = 0; r < 2; r++) {
            char *p = sl_karpathy_image_path(r ? "" : "images/", im);
            REQUIRE(p != NULL);
            size_t want =
                (r ? 0 : 7) + (im->filepath ? strlen(im->filepath) + 1 : 0) + strlen(im->filename);
            REQUIRE(strlen(p) == want);
            free(p);
        }
    }
    REQUIRE(next == k->n_captions);
    REQUIRE(none == k->n_no_captions && fewer == k->n_fewer && more == k->n_more);
    REQUIRE(dropped == k->n_dropped);
    REQUIRE(k->n_from_tokens <= sentences);
    for (size_t c = 0; c < k->n_captions; c++) {
        REQUIRE(k->captions[c] != NULL);
        REQUIRE(strlen(k->captions[c]) <= SL_KARPATHY_MAX_TEXT);
    }
    /* the file's images array, parsed independently */
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    REQUIRE(root != NULL);
    REQUIRE(json_array_size(json_object_get(root, "images")) == k->n_file_images);
    json_decref(root);
}

int sl_fuzz_karpathy(const uint8_t *data, size_t size) {
    setup();
    put_file(g_karpathy, data ? data : (const uint8_t *)"", size);
    uint64_t h = fnv1a(data, size);
    static const char *const splits[] = {"test", "train,restval", "val", NULL, "", "restval"};
    static const int caps[] = {0, 1, 2, 5, 7};
    sl_karpathy_opts o = {.split = splits[h % 6], .max_captions = caps[(h / 6) % 5]};
    int mc = o.max_captions ? o.max_captions : 5;
    sl_karpathy k;
    memset(&k, 0xA5, sizeof k); /* the reader must initialise every field */
    sl_status st = sl_karpathy_read(g_karpathy, &o, &k);
    sl_fuzz_last_status = st;
    if (st != SL_OK) {
        check_failure(st, 0);
        REQUIRE(all_zero(&k, sizeof k)); /* "On failure *out is zeroed" */
        sl_karpathy_free(&k);
        return 0;
    }
    check_karpathy(&k, mc, data, size);
    sl_karpathy_free(&k);
    REQUIRE(all_zero(&k, sizeof k));
    sl_karpathy_free(&k); /* freeing twice is harmless once zeroed */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Grounding sets (Entities and RefCOCO)                                    */
/* ------------------------------------------------------------------------ */

enum { SET_ENTITIES, SET_REFCOCO };

static void check_phrase(const sl_ground_set *s, const sl_ground_phrase *p, int kind) {
    REQUIRE(p->text != NULL && p->entity != NULL);
    size_t n = strlen(p->text);
    REQUIRE(n >= 1 && n <= SL_GROUND_MAX_PHRASE);
    REQUIRE(p->boxes >= 1);
    REQUIRE(isfinite(p->box.x0) && isfinite(p->box.y0) && isfinite(p->box.x1) &&
            isfinite(p->box.y1));
    REQUIRE(p->box.x0 <= p->box.x1 && p->box.y0 <= p->box.y1);
    const float lim = (float)(1 << 21);
    REQUIRE(fabsf(p->box.x0) <= lim && fabsf(p->box.y0) <= lim && fabsf(p->box.x1) <= lim &&
            fabsf(p->box.y1) <= lim);
    if (kind == SET_ENTITIES) {
        REQUIRE(!is_space_c(p->text[0]) && !is_space_c(p->text[n - 1]));
        REQUIRE(!strchr(p->text, '[') && !strchr(p->text, ']'));
        REQUIRE(all_digits(p->entity, 31));
        REQUIRE(p->types != 0);
        REQUIRE(s->n_types == 32 || (p->types >> s->n_types) == 0);
        REQUIRE(p->line >= 1);
    } else {
        const char *e = p->entity[0] == '-' ? p->entity + 1 : p->entity;
        REQUIRE(all_digits(e, 20));
        REQUIRE(p->types == 0);
        REQUIRE(p->line >= 0);
    }
}

/* A set as the readers leave it, on success or (partial) on failure. */
static void check_set(const sl_ground_set *s, int kind) {
    REQUIRE(s->n_images <= s->cap_images && s->n_phrases <= s->cap_phrases);
    REQUIRE(s->n_images == 0 || s->images != NULL);
    REQUIRE(s->n_phrases == 0 || s->phrases != NULL);
    REQUIRE(s->n_types >= 0 && s->n_types <= SL_GROUND_MAX_TYPES);
    if (kind == SET_REFCOCO) REQUIRE(s->n_types == 0);
    for (int t = 0; t < SL_GROUND_MAX_TYPES; t++) {
        if (t >= s->n_types) {
            REQUIRE(s->types[t] == NULL);
            continue;
        }
        REQUIRE(s->types[t] != NULL);
        size_t n = strlen(s->types[t]);
        REQUIRE(n >= 1 && n < 256);
        for (size_t i = 0; i < n; i++) REQUIRE(is_type_c(s->types[t][i]));
        for (int u = 0; u < t; u++) REQUIRE(strcmp(s->types[u], s->types[t]) != 0);
    }
    size_t next = 0;
    for (size_t i = 0; i < s->n_images; i++) {
        const sl_ground_image *im = &s->images[i];
        REQUIRE(im->id != NULL && im->file_name != NULL);
        REQUIRE(im->first == next);
        REQUIRE(im->count <= s->n_phrases - next);
        if (kind == SET_ENTITIES) {
            REQUIRE(strcmp(im->id, ENT_ID) == 0);
            REQUIRE(strcmp(im->file_name, ENT_ID ".jpg") == 0);
            REQUIRE(im->width >= 1 && im->width <= (1 << 20));
            REQUIRE(im->height >= 1 && im->height <= (1 << 20));
        } else {
            REQUIRE(strcmp(im->id, im->file_name) == 0);
            REQUIRE(safe_rel(im->file_name, 1024) && !strstr(im->file_name, ".."));
            REQUIRE(im->width >= 1 && im->width <= (1 << 16));
            REQUIRE(im->height >= 1 && im->height <= (1 << 16));
            if (s->n_images <= 4096)
                for (size_t j = 0; j < i; j++)
                    REQUIRE(strcmp(s->images[j].file_name, im->file_name) != 0);
        }
        for (size_t k = im->first; k < im->first + im->count; k++)
            check_phrase(s, &s->phrases[k], kind);
        next += im->count;
    }
    REQUIRE(next == s->n_phrases);
    REQUIRE(s->skipped[SL_GSKIP_IMAGE] == 0);
    if (kind == SET_REFCOCO)
        for (int r = 0; r < SL_GSKIP_COUNT; r++) REQUIRE(r == SL_GSKIP_ABSENT || !s->skipped[r]);
}

/* Score the set against its own ground truth: every phrase with a
 * non-empty box is correct; with no image predicted all are skipped. */
static void check_score(const sl_ground_set *s) {
    sl_box *pred = malloc((s->n_phrases ? s->n_phrases : 1) * sizeof *pred);
    unsigned char *none = calloc(s->n_images ? s->n_images : 1, 1);
    REQUIRE(pred != NULL && none != NULL);
    size_t nonempty = 0, skipped = 0;
    for (size_t k = 0; k < s->n_phrases; k++) {
        pred[k] = s->phrases[k].box;
        nonempty += s->phrases[k].box.x1 > s->phrases[k].box.x0 &&
                    s->phrases[k].box.y1 > s->phrases[k].box.y0;
    }
    for (int r = 0; r < SL_GSKIP_COUNT; r++) skipped += s->skipped[r];
    sl_ground_score sc;
    sl_ground_score_compute(s, pred, NULL, &sc);
    REQUIRE(sc.phrases == s->n_phrases && sc.correct == nonempty && sc.skipped == skipped);
    sl_ground_score_compute(s, pred, none, &sc);
    REQUIRE(sc.phrases == 0 && sc.correct == 0 && sc.skipped == skipped + s->n_phrases);
    free(pred);
    free(none);
}

static void free_set(sl_ground_set *s) {
    sl_ground_set_free(s);
    REQUIRE(all_zero(s, sizeof *s));
    sl_ground_set_free(s);
}

/* ------------------------------------------------------------------------ */
/* RefCOCO                                                                  */
/* ------------------------------------------------------------------------ */

int sl_fuzz_refcoco(const uint8_t *data, size_t size) {
    setup();
    put_file(g_refcoco, data ? data : (const uint8_t *)"", size);
    sl_ground_set s;
    memset(&s, 0xA5, sizeof s);
    sl_status st = sl_ground_read_refcoco(g_refcoco, &s);
    sl_fuzz_last_status = st;
    if (st != SL_OK) {
        check_failure(st, 0);
        check_set(&s, SET_REFCOCO);
        free_set(&s);
        return 0;
    }
    check_set(&s, SET_REFCOCO);
    check_score(&s);
    /* every expression is a phrase or skipped; every annotation one box */
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    REQUIRE(root != NULL);
    REQUIRE(json_array_size(json_object_get(root, "images")) ==
            s.n_phrases + s.skipped[SL_GSKIP_ABSENT]);
    size_t boxes = 0;
    for (size_t k = 0; k < s.n_phrases; k++) boxes += (size_t)s.phrases[k].boxes;
    REQUIRE(json_array_size(json_object_get(root, "annotations")) == boxes);
    REQUIRE((s.n_images == 0) == (json_array_size(json_object_get(root, "images")) == 0));
    json_decref(root);
    free_set(&s);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Flickr30K Entities                                                       */
/* ------------------------------------------------------------------------ */

typedef struct phrase_ctx {
    size_t calls;   /* phrases seen */
    size_t stop_at; /* return SL_ERR_INTERRUPTED on this call (0: never) */
} phrase_ctx;

static sl_status on_phrase(void *vctx, const char *entity, const char *types, const char *words) {
    phrase_ctx *c = vctx;
    REQUIRE(all_digits(entity, 31));
    size_t tn = strlen(types);
    REQUIRE(tn >= 1 && tn < 256 && types[0] != '/' && types[tn - 1] != '/');
    REQUIRE(!strstr(types, "//"));
    for (size_t i = 0; i < tn; i++) REQUIRE(is_type_c(types[i]) || types[i] == '/');
    size_t wn = strlen(words);
    REQUIRE(wn <= SL_GROUND_MAX_PHRASE);
    /* words hold no '[' or ']'; a NUL in the line (the in-memory parser
     * allows it) may shorten them to nothing */
    REQUIRE(!strchr(words, '[') && !strchr(words, ']'));
    REQUIRE(wn == 0 || !is_space_c(words[0]));
    if (++c->calls == c->stop_at) return SL_ERR_INTERRUPTED;
    return SL_OK;
}

/* Parse text[0, len) line by line as the loader does; the phrase count, or
 * -1 when a line fails (or holds a NUL, which the loader refuses). */
static long parse_lines(const uint8_t *text, size_t len) {
    phrase_ctx c = {0, 0};
    int line = 1, ok = 1;
    for (size_t s = 0; s <= len; line++) {
        size_t e = s;
        while (e < len && text[e] != '\n') e++;
        size_t le = e;
        if (le > s && text[le - 1] == '\r') le--;
        sl_status st =
            sl_ground_parse_sentence((const char *)text + s, le - s, g_sent, line, on_phrase, &c);
        if (st != SL_OK) {
            check_failure(st, 1);
            REQUIRE(strstr(sl_last_error(), g_sent) != NULL);
            ok = 0;
        } else if (memchr(text + s, '\0', le - s)) {
            ok = 0;
        }
        s = e + 1;
    }
    return ok ? (long)c.calls : -1;
}

/* The whole text as one "line" with a callback that stops at phrase
 * stop_at: the parser must stop there and return the callback's status. */
static void parse_stop(const uint8_t *text, size_t len, size_t stop_at) {
    phrase_ctx c = {0, stop_at};
    sl_status st = sl_ground_parse_sentence((const char *)text, len, g_sent, 3, on_phrase, &c);
    if (st == SL_ERR_INTERRUPTED) {
        REQUIRE(c.calls == stop_at);
    } else {
        REQUIRE(c.calls < stop_at);
        if (st != SL_OK) check_failure(st, 1);
    }
}

static int id_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == '-' || c == '.';
}

/* sl_ground_read_split on its own; the number of ids, -1 on failure. */
static long check_split(void) {
    char **ids = (char **)&ids; /* garbage the reader must overwrite */
    size_t n = 12345;
    sl_status st = sl_ground_read_split(g_split, &ids, &n);
    if (st != SL_OK) {
        check_failure(st, 1);
        REQUIRE(ids == NULL && n == 0);
        return -1;
    }
    REQUIRE(n == 0 || ids != NULL);
    for (size_t i = 0; i < n; i++) {
        REQUIRE(ids[i] != NULL);
        size_t l = strlen(ids[i]);
        REQUIRE(l >= 1 && l <= 200 && ids[i][0] != '.');
        for (size_t k = 0; k < l; k++) REQUIRE(id_char(ids[i][k]));
        if (n <= 4096)
            for (size_t j = 0; j < i; j++) REQUIRE(strcmp(ids[i], ids[j]) != 0);
    }
    sl_ground_free_ids(ids, n);
    return (long)n;
}

int sl_fuzz_entities(const uint8_t *data, size_t size) {
    setup();
    if (!data) data = (const uint8_t *)"";
    /* SENTENCES [SEP XML [SEP SPLIT]] */
    const uint8_t *part[3] = {NULL, NULL, NULL};
    size_t plen[3] = {0, 0, 0};
    int np = 0;
    size_t start = 0;
    while (np < 2) {
        const uint8_t *sep = memchr(data + start, SL_FUZZ_SEP, size - start);
        if (!sep) break;
        part[np] = data + start;
        plen[np] = (size_t)(sep - data) - start;
        np++;
        start = (size_t)(sep - data) + 1;
    }
    part[np] = data + start;
    plen[np] = size - start;
    np++;

    /* the in-memory parsers on their own */
    long phrases = parse_lines(part[0], plen[0]);
    parse_stop(part[0], plen[0], 1 + fnv1a(data, size) % 3);
    long n_ids = -1;
    if (np == 3) {
        put_file(g_split, part[2], plen[2]);
        n_ids = check_split();
    } else {
        put_file(g_split, NULL, 0);
    }

    /* the loader */
    put_file(g_sent, part[0], plen[0]);
    put_file(g_ann, np >= 2 ? part[1] : NULL, plen[1]);
    sl_ground_set s;
    memset(&s, 0xA5, sizeof s);
    sl_status st = sl_ground_read_entities(g_ent, np == 3 ? g_split : NULL, &s);
    sl_fuzz_last_status = st;
    if (st != SL_OK) {
        check_failure(st, 1);
        check_set(&s, SET_ENTITIES); /* partial, freed by the caller */
        free_set(&s);
        return 0;
    }
    check_set(&s, SET_ENTITIES);
    check_score(&s);
    if (np == 3) {
        REQUIRE(n_ids >= 0 && s.n_images == (size_t)n_ids); /* each listed id, once */
    } else {
        REQUIRE(s.n_images == 1); /* the folder holds one sentence file */
    }
    if (s.n_images == 1) {
        /* every marked phrase is either kept or skipped for a reason */
        size_t skipped = 0;
        for (int r = 0; r < SL_GSKIP_COUNT; r++) skipped += s.skipped[r];
        REQUIRE(phrases >= 0);
        REQUIRE(s.n_phrases + skipped == (size_t)phrases);
    }
    free_set(&s);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* libFuzzer                                                                */
/* ------------------------------------------------------------------------ */

#ifdef SL_FUZZ_TARGET
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return SL_FUZZ_TARGET(data, size);
}
#endif
