/*
 * tests/fuzz_driver.c - runs the reader robustness targets
 * (tests/fuzz_readers.c) without libFuzzer, so that every build (gcc, ctest,
 * the sanitizer pass included) exercises them. For each reader:
 *
 *   1. hand-written seeds, valid inputs that must be accepted;
 *   2. every truncation of every seed;
 *   3. boundary cases generated here (sizes at and past each documented
 *      limit, deep nesting, many elements), each with its expected status;
 *   4. a deterministic mutation loop (seeded PRNG): bit flips, byte
 *      set/insert/delete, truncation, splices of two seeds, numbers replaced
 *      by extreme values (1e308, -1, 4294967297, ...), dictionary tokens,
 *      repeated ranges, deep nesting, long runs.
 *
 * The targets abort() on a violated invariant; ASan/UBSan (SL_SANITIZE)
 * catch memory errors, leaks and undefined behaviour.
 *
 * usage: fuzz_driver [--iters N] [--seed S] [--target NAME]
 *        fuzz_driver --write-seeds DIR      (a starting corpus for libFuzzer)
 *        fuzz_driver --replay NAME FILE...  (run one target on files)
 */
#include "fuzz_readers.h"

#include "sightline/eval.h"
#include "sightline/eval_grounding.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SEP     "\377"            /* SL_FUZZ_SEP in a string literal */
#define MAX_LEN ((size_t)1 << 18) /* mutants stay below this */

/* ------------------------------------------------------------------------ */
/* Seeds                                                                    */
/* ------------------------------------------------------------------------ */

static const char *const karpathy_seeds[] = {
    "{\"dataset\": \"flickr30k\", \"images\": [\n"
    " {\"sentids\": [0, 1, 2, 3], \"imgid\": 0, \"split\": \"test\", \"filename\": "
    "\"1000092795.jpg\",\n"
    "  \"sentences\": [\n"
    "   {\"tokens\": [\"two\", \"young\", \"guys\"], \"raw\": \"Two young guys with shaggy "
    "hair.\", "
    "\"imgid\": 0, \"sentid\": 0},\n"
    "   {\"raw\": \"Caf\\u00e9 \\\"quoted\\\" \\n text\", \"sentid\": 1},\n"
    "   {\"tokens\": [\"a\", \"dog\", \"runs\"], \"sentid\": 2},\n"
    "   {\"sentid\": 3}]},\n"
    " {\"filepath\": \"val2014\", \"cocoid\": 391895, \"imgid\": 1, \"split\": \"train\", "
    "\"filename\": \"x/y.jpg\",\n"
    "  \"sentences\": [{\"raw\": \"b\"}, {\"raw\": \"\"}]},\n"
    " {\"filename\": \"r.jpg\", \"split\": \"restval\", \"sentences\": []},\n"
    " {\"filename\": \"v.jpg\", \"split\": \"val\"},\n"
    " {\"filename\": \"nosplit.jpg\", \"sentences\": [{\"raw\": \"c\"}]}\n"
    "]}\n",
    "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"test\", \"imgid\": 7, \"sentences\": [\n"
    " {\"raw\": \"1\"}, {\"raw\": \"2\"}, {\"raw\": \"3\"}, {\"raw\": \"4\"}, {\"raw\": \"5\"},\n"
    " {\"raw\": \"6\"}, {\"tokens\": []}]},\n"
    " {\"filename\": \"b.jpg\", \"split\": \"val\", \"sentences\": [{\"raw\": \"x\"}]},\n"
    " {\"filename\": \"c.jpg\", \"split\": \"train\", \"sentences\": [{\"tokens\": [\"t\"]}]}],\n"
    " \"dataset\": \"coco\"}",
    "{\"images\": []}",
    "{\"images\": [{\"filename\": \"d\", \"split\": \"test\"}], \"extra\": [1, 2.5, null, true, "
    "{\"k\": -3e2}]}",
};

static const char *const refcoco_seeds[] = {
    "{\"info\": {\"year\": 2014}, \"images\": [\n"
    " {\"file_name\": \"COCO_train2014_000000581857.jpg\", \"height\": 640, \"width\": 427, "
    "\"id\": 0, \"caption\": \"the lady with the blue shirt\", \"original_id\": 581857},\n"
    " {\"file_name\": \"COCO_train2014_000000581857.jpg\", \"height\": 640, \"width\": 427, "
    "\"id\": 1, \"caption\": \"woman in back \\u00e9\"},\n"
    " {\"file_name\": \"b/2.jpg\", \"height\": 10.0, \"width\": 20, \"id\": -5, \"caption\": "
    "\"nothing\"},\n"
    " {\"file_name\": \"c.jpg\", \"height\": 1, \"width\": 1, \"id\": 9, \"caption\": \"x\"}],\n"
    " \"annotations\": [\n"
    " {\"area\": 1, \"iscrowd\": 0, \"image_id\": 0, \"bbox\": [103.93, 299.99, 134.22, 177.41], "
    "\"category_id\": 1, \"id\": 0},\n"
    " {\"image_id\": 0, \"bbox\": [0, 0, 1, 1]},\n"
    " {\"image_id\": 1, \"bbox\": [1e2, 2, 3.5, 0]},\n"
    " {\"image_id\": -5, \"bbox\": [-1, -2, 3, 4]}],\n"
    " \"categories\": [{\"id\": 1, \"name\": \"person\"}]}\n",
    "{\"images\": [], \"annotations\": []}",
    "{\"annotations\": [{\"image_id\": 3.0, \"bbox\": [1, 2, 3, 4]}], \"images\": [{\"id\": 3, "
    "\"file_name\": \"z.jpg\", \"width\": 65536, \"height\": 2, \"caption\": \"c\"}]}",
};

#define ENT_SENTENCES                                                                              \
    "[/EN#18/people A child] in [/EN#19/clothing a pink dress] is climbing up [/EN#20/other a "    \
    "set of stairs] in [/EN#21/scene an entry way] .\n"                                            \
    "[/EN#18/people A little girl] in [/EN#19/clothing a pink  dress ] going into "                \
    "[/EN#22/notvisual a wooden cabin] .\r\n"                                                      \
    "[/EN#23/people/other Someone] waves [/EN#99/bodyparts his hand] , no phrase here\n"           \
    "\n"

#define ENT_XML                                                                                    \
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"                                                 \
    "<annotation>\n"                                                                               \
    "<!-- a comment -->\n"                                                                         \
    "<filename>1000092795.jpg</filename>\n"                                                        \
    "<size><width>500</width><height>375</height><depth>3</depth></size>\n"                        \
    "<object><name>18</name><bndbox><xmin>90</xmin><ymin>68</ymin><xmax>325</xmax>"                \
    "<ymax>374</ymax></bndbox></object>\n"                                                         \
    "<object><name>18</name><name>23</name><bndbox><xmin>1</xmin><ymin>1</ymin>"                   \
    "<xmax>10</xmax><ymax>10</ymax></bndbox></object>\n"                                           \
    "<object><name>19</name><bndbox><xmin> 5 </xmin><ymin>6</ymin><xmax>5</xmax>"                  \
    "<ymax>60.5</ymax></bndbox></object>\n"                                                        \
    "<object><name>20</name><nobndbox>1</nobndbox></object>\n"                                     \
    "<object><name>21</name><scene>1</scene><nobndbox>0</nobndbox></object>\n"                     \
    "<object kind='x &amp; y' other=\"1\"><name>22</name><nobndbox>1</nobndbox></object>\n"        \
    "<note>a &lt;b&gt; &#65;&#x42; &quot;&apos;</note><empty/>\n"                                  \
    "</annotation>\n"

static const char *const entities_seeds[] = {
    ENT_SENTENCES SEP ENT_XML SEP "1000092795\n\n",
    ENT_SENTENCES SEP ENT_XML,
    "[/EN#1/people A man] .\n" SEP "<annotation><size><width>4</width><height>3</height></size>"
    "<object><name>1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax>"
    "</bndbox></object></annotation>" SEP " 1000092795 \r\n",
    "no phrases\n" SEP
    "<annotation><size><width>1</width><height>1</height></size></annotation>" SEP "",
};

/* Tokens the mutator inserts. */
static const char *const json_dict[] = {
    "\"images\": ",
    "\"sentences\": ",
    "\"raw\": ",
    "\"tokens\": ",
    "\"split\": \"test\"",
    "\"filename\": ",
    "\"filepath\": ",
    "\"dataset\": ",
    "\"annotations\": ",
    "\"bbox\": ",
    "\"image_id\": ",
    "\"file_name\": ",
    "\"caption\": ",
    "\"width\": ",
    "\"height\": ",
    "\"id\": ",
    "null",
    "true",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"../x\"",
    "\"/abs\"",
    "\"a/../b\"",
    "\"\\ud800\"",
    "[1, 2, 3, 4]",
    "{\"raw\": \"r\"}",
    ", ",
    "\"\"",
    "\"test\"",
    "[\"t\", 5]",
    "-0.0",
    "\"\\u00ff\"",
    "{\"a\": 1, \"a\": 2}",
    "\xc3\x28",
};

static const char *const ent_dict[] = {
    "[/EN#",
    "/people ",
    "/notvisual ",
    "/scene ",
    "]",
    "[",
    "\r\n",
    "\n",
    SEP,
    "<object>",
    "</object>",
    "<name>18</name>",
    "<name>",
    "</name>",
    "<bndbox>",
    "</bndbox>",
    "<xmin>",
    "</xmin>",
    "<nobndbox>1</nobndbox>",
    "<scene>1</scene>",
    "<!--",
    "-->",
    "<?xml ?>",
    "&amp;",
    "&#x41;",
    "&#0;",
    "&#128;",
    "&bogus;",
    "<!DOCTYPE a>",
    "<![CDATA[x]]>",
    "/>",
    "<size>",
    "</size>",
    "<width>",
    " a=\"1\"",
    "\xef\xbb\xbf",
    "1000092795",
    "\0",
    "/",
    "#",
};

static const char *const numbers[] = {
    "1e308",
    "-1e308",
    "4294967297",
    "-1",
    "0",
    "-0",
    "1e-400",
    "1e999",
    "65536",
    "65537",
    "1048576",
    "1048577",
    "2147483647",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890",
    "0.5",
    "1.0",
    "9e15",
    "8999999999999999",
    "0x10",
    "NaN",
    "inf",
    "-inf",
    "1e-320",
    "00",
    "+1",
    ".5",
    "1.",
    "1e",
    "-",
    "1E+2",
    "262144",
};

typedef struct target {
    const char *name;
    int (*fn)(const uint8_t *, size_t);
    const char *const *seeds;
    size_t n_seeds;
    const char *const *dict;
    size_t n_dict;
    int json; /* JSON (tree mutations, nesting as arrays), else XML-like text */
} target;

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const target targets[] = {
    {"karpathy", sl_fuzz_karpathy, karpathy_seeds, COUNT(karpathy_seeds), json_dict,
     COUNT(json_dict), 1},
    {"refcoco", sl_fuzz_refcoco, refcoco_seeds, COUNT(refcoco_seeds), json_dict, COUNT(json_dict),
     1},
    {"entities", sl_fuzz_entities, entities_seeds, COUNT(entities_seeds), ent_dict, COUNT(ent_dict),
     0},
};

/* ------------------------------------------------------------------------ */
/* Byte buffers and the PRNG                                                */
/* ------------------------------------------------------------------------ */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void reserve(buf *b, size_t n) {
    if (n <= b->cap) return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < n) nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (!np) {
        fprintf(stderr, "fuzz_driver: out of memory\n");
        exit(2);
    }
    b->p = np;
    b->cap = nc;
}

static void set_bytes(buf *b, const void *p, size_t n) {
    reserve(b, n + 1);
    if (n) memcpy(b->p, p, n);
    b->n = n;
}

static void append(buf *b, const void *p, size_t n) {
    reserve(b, b->n + n + 1);
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void append_str(buf *b, const char *s) {
    append(b, s, strlen(s));
}

static void appendf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fprintf(stderr, "fuzz_driver: appendf overflow\n");
        exit(2);
    }
    append(b, tmp, (size_t)n);
}

static void append_rep(buf *b, char c, size_t n) {
    reserve(b, b->n + n + 1);
    memset(b->p + b->n, c, n);
    b->n += n;
}

/* Replace b[pos, pos + del) with src[0, n). */
static void replace(buf *b, size_t pos, size_t del, const void *src, size_t n) {
    reserve(b, b->n - del + n + 1);
    memmove(b->p + pos + n, b->p + pos + del, b->n - pos - del);
    if (n) memcpy(b->p + pos, src, n);
    b->n = b->n - del + n;
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static size_t below(rng *r, size_t n) {
    return n ? (size_t)(next(r) % n) : 0;
}

/* ------------------------------------------------------------------------ */
/* Mutations                                                                */
/* ------------------------------------------------------------------------ */

static const uint8_t special[] = {0,   0xFF, 0x80, '[',  ']',  '{', '}', '<', '>', '"', '\\',
                                  '/', '&',  ';',  '\n', '\r', ' ', ',', ':', '#', '-', '.',
                                  'e', '0',  '9',  '\t', 0xC3, 'x', '!', '?', '='};

static uint8_t some_byte(rng *r) {
    return below(r, 2) ? special[below(r, sizeof special)] : (uint8_t)next(r);
}

static int is_num_char(uint8_t c) {
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

/* A random numeric token of b: its start and length (0 when none). */
static size_t pick_number(const buf *b, rng *r, size_t *start) {
    size_t starts[256], lens[256], k = 0;
    for (size_t i = 0; i < b->n && k < 256;) {
        if ((b->p[i] >= '0' && b->p[i] <= '9') ||
            (b->p[i] == '-' && i + 1 < b->n && b->p[i + 1] >= '0' && b->p[i + 1] <= '9')) {
            size_t s = i;
            while (i < b->n && is_num_char(b->p[i])) i++;
            starts[k] = s;
            lens[k++] = i - s;
        } else {
            i++;
        }
    }
    if (!k) return 0;
    size_t j = below(r, k);
    *start = starts[j];
    return lens[j];
}

/* Nesting depths: typical, at and around the parsers' limits. */
static size_t nest_depth(rng *r, int xml) {
    static const size_t json_d[] = {2, 16, 2047, 2048, 2049, 5000};
    static const size_t xml_d[] = {2, 16, 62, 63, 64, 65, 300};
    return xml ? xml_d[below(r, COUNT(xml_d))] : json_d[below(r, COUNT(json_d))];
}

static void mutate(const target *t, buf *b, rng *r) {
    size_t n = b->n;
    switch (below(r, 13)) {
        case 0: /* bit flip */
            if (n) b->p[below(r, n)] ^= (uint8_t)(1u << below(r, 8));
            break;
        case 1: /* byte set */
            if (n) b->p[below(r, n)] = some_byte(r);
            break;
        case 2: { /* insert bytes */
            uint8_t ins[8];
            size_t k = 1 + below(r, 8);
            for (size_t i = 0; i < k; i++) ins[i] = some_byte(r);
            replace(b, below(r, n + 1), 0, ins, k);
            break;
        }
        case 3: { /* delete a range */
            if (!n) break;
            size_t pos = below(r, n), k = 1 + below(r, 16);
            if (k > n - pos) k = n - pos;
            replace(b, pos, k, NULL, 0);
            break;
        }
        case 4: /* truncate */
            b->n = below(r, n + 1);
            break;
        case 5: { /* splice: our prefix, another seed's suffix */
            const char *o = t->seeds[below(r, t->n_seeds)];
            size_t on = strlen(o), pos = below(r, n + 1), from = below(r, on + 1);
            b->n = pos;
            append(b, o + from, on - from);
            break;
        }
        case 6:
        case 7: { /* an extreme number in place of one */
            size_t s = 0, l = pick_number(b, r, &s);
            const char *v = numbers[below(r, COUNT(numbers))];
            if (l) replace(b, s, l, v, strlen(v));
            break;
        }
        case 8:
        case 9: { /* a dictionary token */
            const char *v = t->dict[below(r, t->n_dict)];
            size_t vl = v[0] ? strlen(v) : 1; /* "\0": one NUL byte */
            size_t pos = below(r, n + 1), del = below(r, 3) ? 0 : below(r, 4);
            replace(b, pos, del < n - pos ? del : n - pos, v, vl);
            break;
        }
        case 10: { /* repeat a range: many elements, duplicate keys */
            if (!n) break;
            size_t pos = below(r, n), l = 1 + below(r, 64), k = 2 + below(r, 100);
            if (l > n - pos) l = n - pos;
            if (n + l * k > MAX_LEN) break;
            buf rep = {0};
            for (size_t i = 0; i < k; i++) append(&rep, b->p + pos, l);
            replace(b, pos, 0, rep.p, rep.n);
            free(rep.p);
            break;
        }
        case 11: { /* deep nesting */
            size_t d = nest_depth(r, !t->json);
            buf nest = {0};
            if (!t->json) {
                for (size_t i = 0; i < d; i++) append_str(&nest, "<o>");
                append_str(&nest, "1");
                for (size_t i = 0; i < d; i++) append_str(&nest, "</o>");
                /* after a '>' when there is one, inside some element */
                size_t pos = below(r, n + 1);
                for (size_t i = 0; i < n; i++)
                    if (b->p[(pos + i) % n] == '>') {
                        pos = (pos + i) % n + 1;
                        break;
                    }
                if (n + nest.n <= MAX_LEN) replace(b, pos > n ? n : pos, 0, nest.p, nest.n);
            } else {
                int obj = (int)below(r, 2);
                for (size_t i = 0; i < d; i++) append_str(&nest, obj ? "{\"a\": " : "[");
                append_str(&nest, "1");
                for (size_t i = 0; i < d; i++) append_str(&nest, obj ? "}" : "]");
                size_t s = 0, l = pick_number(b, r, &s); /* a value position */
                if (!l) s = below(r, n + 1);
                if (n + nest.n <= MAX_LEN) replace(b, s, l, nest.p, nest.n);
            }
            free(nest.p);
            break;
        }
        case 12: { /* a long run: strings at and past their length limits */
            static const size_t lens[] = {255, 256, 4096, 4097, 65536, 65537};
            size_t l = lens[below(r, COUNT(lens))];
            if (n + l > MAX_LEN) break;
            buf run = {0};
            append_rep(&run, below(r, 2) ? 'a' : '1', l);
            replace(b, below(r, n + 1), 0, run.p, run.n);
            free(run.p);
            break;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* JSON tree mutations (karpathy, refcoco)                                  */
/* ------------------------------------------------------------------------ */

/* Byte mutations of JSON mostly break its syntax; these parse the input,
 * change values, keys and array lengths, and print it again, so that the
 * readers' checks past the syntax are reached. */

typedef struct jref {
    json_t *v;       /* the node */
    json_t *parent;  /* NULL for the root */
    const char *key; /* in an object parent */
    size_t index;    /* in an array parent */
} jref;

#define MAX_JREFS 4096

/* Collect the nodes (at most MAX_JREFS); the depth of the tree. */
static size_t jcollect(json_t *v, json_t *parent, const char *key, size_t index, jref *out,
                       size_t *n) {
    if (*n >= MAX_JREFS) return 1;
    out[(*n)++] = (jref){v, parent, key, index};
    size_t depth = 0, d;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) if ((d = jcollect(c, v, k, 0, out, n)) > depth) depth = d;
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) if ((d = jcollect(c, v, NULL, i, out, n)) > depth) depth = d;
    }
    return depth + 1;
}

static const char *const json_keys[] = {
    "images",   "sentences", "raw",     "tokens", "split",       "filename",
    "filepath", "dataset",   "imgid",   "cocoid", "annotations", "bbox",
    "image_id", "file_name", "caption", "width",  "height",      "id",
};

static json_t *long_string(size_t n) {
    char *s = malloc(n + 1);
    if (!s) return json_null();
    memset(s, 'a', n);
    s[n] = '\0';
    json_t *v = json_stringn(s, n);
    free(s);
    return v ? v : json_null();
}

/* A value of any kind, extremes favoured. */
static json_t *random_value(rng *r) {
    static const json_int_t ints[] = {
        0,     -1,    1,       4294967297LL,  INT64_MAX,    INT64_MIN,          INT64_MAX / 2 + 1,
        65536, 65537, 1 << 20, (1 << 20) + 1, 2147483648LL, 9007199254740993LL, 10000001};
    static const double reals[] = {1e308, -1e308, 0.5, 1.0, -0.0, 9e15, 1e-300, 65536.0, 3.5, 1e16};
    static const char *const strs[] = {"",        "a",    "test",        "train,restval", "val",
                                       "restval", "../x", "/abs",        "a/..",          "x/../y",
                                       ".",       "a/b/", "caf\xc3\xa9", "1000092795",    "x.jpg"};
    switch (below(r, 10)) {
        case 0:
        case 1:
            return json_integer(ints[below(r, COUNT(ints))]);
        case 2:
            return json_real(reals[below(r, COUNT(reals))]);
        case 3:
        case 4:
            return json_string(strs[below(r, COUNT(strs))]);
        case 5:
            return json_stringn("a\0b", 3);
        case 6: {
            static const size_t lens[] = {1024, 1025, 4096, 4097, 65536, 65537};
            return long_string(lens[below(r, COUNT(lens))]);
        }
        case 7:
            return below(r, 2) ? json_null() : json_boolean(below(r, 2));
        case 8:
            return below(r, 2) ? json_array() : json_object();
        default:
            return json_pack("{s:s, s:[s, i]}", "raw", "r", "tokens", "t", 5);
    }
}

/* One change to the tree; 0 when none applied. */
static int tree_op(json_t *root, rng *r) {
    static jref refs[MAX_JREFS];
    size_t n = 0;
    if (jcollect(root, NULL, NULL, 0, refs, &n) > 64) return 0; /* (byte mutations nest deeper) */
    jref *x = &refs[below(r, n)];
    switch (below(r, 6)) {
        case 0:
        case 1: { /* replace a value: a new one, or a copy of another node */
            if (!x->parent) return 0;
            json_t *nv = below(r, 4) ? random_value(r) : json_deep_copy(refs[below(r, n)].v);
            if (!nv) return 0;
            return json_is_object(x->parent) ? !json_object_set_new(x->parent, x->key, nv)
                                             : !json_array_set_new(x->parent, x->index, nv);
        }
        case 2: /* remove a key or an element */
            if (!x->parent) return 0;
            return json_is_object(x->parent) ? !json_object_del(x->parent, x->key)
                                             : !json_array_remove(x->parent, x->index);
        case 3: { /* a key added to an object */
            for (size_t i = 0; i < n && !json_is_object(x->v); i++) x = &refs[(x - refs + 1) % n];
            if (!json_is_object(x->v)) return 0;
            return !json_object_set_new(x->v, json_keys[below(r, COUNT(json_keys))],
                                        random_value(r));
        }
        default: { /* an array made longer: copies of one of its elements */
            for (size_t i = 0; i < n && !(json_is_array(x->v) && json_array_size(x->v)); i++)
                x = &refs[(x - refs + 1) % n];
            if (!json_is_array(x->v) || !json_array_size(x->v)) return 0;
            static const size_t adds[] = {1, 2, 7, 995, 1001};
            size_t k = adds[below(r, COUNT(adds))];
            json_t *e = json_array_get(x->v, below(r, json_array_size(x->v)));
            for (size_t i = 0; i < k; i++) json_array_append_new(x->v, json_deep_copy(e));
            return 1;
        }
    }
}

/* Parse b, apply 1-3 tree changes, print it back; 0 when b is not JSON. */
static int mutate_tree(buf *b, rng *r) {
    json_t *root = json_loadb((const char *)b->p, b->n, 0, NULL);
    if (!root) return 0;
    int changed = 0;
    for (size_t k = 1 + below(r, 3); k > 0; k--) changed |= tree_op(root, r);
    static const size_t flags[] = {JSON_COMPACT, JSON_INDENT(1), 0, JSON_ENSURE_ASCII,
                                   JSON_SORT_KEYS | JSON_COMPACT};
    char *s = changed ? json_dumps(root, flags[below(r, COUNT(flags))]) : NULL;
    json_decref(root);
    if (!s) return 0;
    size_t n = strlen(s);
    if (n <= MAX_LEN) set_bytes(b, s, n);
    free(s);
    return n <= MAX_LEN;
}

/* ------------------------------------------------------------------------ */
/* Boundary cases                                                           */
/* ------------------------------------------------------------------------ */

typedef struct bcase {
    buf in;
    sl_status want; /* expected status of the main reader call */
    const char *what;
} bcase;

typedef struct bcases {
    bcase c[64];
    int n;
} bcases;

static buf *add_case(bcases *cs, sl_status want, const char *what) {
    bcase *c = &cs->c[cs->n++];
    memset(c, 0, sizeof *c);
    c->want = want;
    c->what = what;
    return &c->in;
}

/* Karpathy: one test image with `ns` sentences of `len` bytes. */
static void karpathy_sentences(buf *b, size_t ns, size_t len, int tokens) {
    append_str(b, "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"test\", \"sentences\": [");
    for (size_t i = 0; i < ns; i++) {
        append_str(b, i ? ", " : "");
        if (tokens) {
            /* len bytes of tokens: "aaa" tokens joined by spaces */
            append_str(b, "{\"tokens\": [");
            for (size_t k = 0; k < len / 4; k++) append_str(b, k ? ", \"aaa\"" : "\"aaa\"");
            append_str(b, "]}");
        } else {
            append_str(b, "{\"raw\": \"");
            append_rep(b, 'w', len);
            append_str(b, "\"}");
        }
    }
    append_str(b, "]}]}");
}

static void karpathy_cases(bcases *cs) {
    karpathy_sentences(add_case(cs, SL_OK, "1000 sentences"), SL_KARPATHY_MAX_CAPTIONS, 3, 0);
    karpathy_sentences(add_case(cs, SL_ERR_LIMIT, "1001 sentences"), SL_KARPATHY_MAX_CAPTIONS + 1,
                       3, 0);
    karpathy_sentences(add_case(cs, SL_OK, "caption at the limit"), 1, SL_KARPATHY_MAX_TEXT, 0);
    karpathy_sentences(add_case(cs, SL_ERR_LIMIT, "caption past the limit"), 1,
                       SL_KARPATHY_MAX_TEXT + 1, 0);
    karpathy_sentences(add_case(cs, SL_ERR_LIMIT, "tokens past the limit"), 1,
                       SL_KARPATHY_MAX_TEXT + 8, 1);
    buf *b = add_case(cs, SL_ERR_FORMAT, "nesting past jansson's depth");
    append_str(b, "{\"images\": ");
    append_rep(b, '[', 3000);
    append_rep(b, ']', 3000);
    append_str(b, "}");
    b = add_case(cs, SL_ERR_FORMAT, "unclosed deep nesting");
    append_rep(b, '[', 100000);
    b = add_case(cs, SL_OK, "3000 images");
    append_str(b, "{\"images\": [");
    for (int i = 0; i < 3000; i++)
        appendf(b,
                "%s{\"filename\": \"%d.jpg\", \"split\": \"%s\", \"sentences\": [{\"raw\": "
                "\"s%d\"}]}",
                i ? ", " : "", i, i % 3 ? "train" : "test", i);
    append_str(b, "]}");
    b = add_case(cs, SL_ERR_FORMAT, "duplicate key");
    append_str(b, "{\"images\": [], \"images\": []}");
    b = add_case(cs, SL_ERR_FORMAT, "NUL in a caption");
    append_str(b, "{\"images\": [{\"filename\": \"a\", \"split\": \"test\", \"sentences\": "
                  "[{\"raw\": \"a\\u0000b\"}]}]}");
    b = add_case(cs, SL_ERR_FORMAT, "'..' in the filename");
    append_str(b, "{\"images\": [{\"filename\": \"a/../../b\", \"split\": \"test\"}]}");
    b = add_case(cs, SL_ERR_FORMAT, "a big imgid is kept, a non-integer filename refused");
    append_str(b, "{\"images\": [{\"filename\": \"a\", \"imgid\": 1e308}, {\"filename\": 5}]}");
}

static void refcoco_one(buf *b, const char *file_name, long w, long h, size_t caption_len,
                        const char *bbox) {
    append_str(b, "{\"images\": [{\"id\": 1, \"file_name\": \"");
    append_str(b, file_name);
    appendf(b, "\", \"width\": %ld, \"height\": %ld, \"caption\": \"", w, h);
    append_rep(b, 'c', caption_len);
    appendf(b, "\"}], \"annotations\": [{\"image_id\": 1, \"bbox\": %s}]}", bbox);
}

static void refcoco_cases(bcases *cs) {
    refcoco_one(add_case(cs, SL_OK, "caption at the limit"), "a.jpg", 10, 10, SL_GROUND_MAX_PHRASE,
                "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "caption past the limit"), "a.jpg", 10, 10,
                SL_GROUND_MAX_PHRASE + 1, "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_OK, "largest side"), "a.jpg", 65536, 65536, 3, "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "side past the limit"), "a.jpg", 65537, 5, 3,
                "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "width 4294967297"), "a.jpg", 4294967297L, 5, 3,
                "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "width -1"), "a.jpg", -1, 5, 3, "[0, 0, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "bbox 1e308"), "a.jpg", 5, 5, 3, "[0, 0, 1e308, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "negative bbox size"), "a.jpg", 5, 5, 3,
                "[0, 0, -1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "bbox of 5"), "a.jpg", 5, 5, 3, "[0, 0, 1, 1, 1]");
    refcoco_one(add_case(cs, SL_ERR_FORMAT, "file name leaving the folder"), "../a.jpg", 5, 5, 3,
                "[0, 0, 1, 1]");
    buf *b = add_case(cs, SL_OK, "2000 expressions over 37 pictures");
    append_str(b, "{\"images\": [");
    for (int i = 0; i < 2000; i++)
        appendf(b,
                "%s{\"id\": %d, \"file_name\": \"p%d.jpg\", \"width\": %d, \"height\": 9, "
                "\"caption\": \"e%d\"}",
                i ? ", " : "", (i * 7919) % 2003 - 1000, i % 37, 10 + i % 37, i);
    append_str(b, "], \"annotations\": [");
    for (int i = 0; i < 3000; i++)
        appendf(b, "%s{\"image_id\": %d, \"bbox\": [%d, 1, %d.5, 2]}", i ? ", " : "",
                ((i % 2000) * 7919) % 2003 - 1000, i % 50, i % 7);
    append_str(b, "]}");
    b = add_case(cs, SL_ERR_FORMAT, "one picture, two sizes");
    append_str(b, "{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 2, \"height\": 2, "
                  "\"caption\": \"x\"}, {\"id\": 2, \"file_name\": \"a\", \"width\": 3, "
                  "\"height\": 2, \"caption\": \"y\"}], \"annotations\": []}");
    b = add_case(cs, SL_ERR_FORMAT, "shared id");
    append_str(b, "{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 2, \"height\": 2, "
                  "\"caption\": \"x\"}, {\"id\": 1, \"file_name\": \"b\", \"width\": 3, "
                  "\"height\": 2, \"caption\": \"y\"}], \"annotations\": []}");
    b = add_case(cs, SL_ERR_FORMAT, "nesting past jansson's depth");
    append_str(b, "{\"images\": [], \"annotations\": ");
    append_rep(b, '[', 2100);
    append_rep(b, ']', 2100);
    append_str(b, "}");
}

/* Entities: sentences, SEP, annotation (one box for entity 1), SEP, split. */
static void entities_with(buf *b, const char *sentences, const char *extra_xml, int split) {
    append_str(b, sentences);
    append_str(b, SEP "<annotation><size><width>50</width><height>40</height></size>"
                      "<object><name>1</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax>"
                      "<ymax>40</ymax></bndbox></object>");
    append_str(b, extra_xml);
    append_str(b, "</annotation>");
    if (split) append_str(b, SEP "1000092795\n");
}

static void entities_cases(bcases *cs) {
    buf *b = add_case(cs, SL_OK, "32 entity types");
    for (int t = 0; t < 32; t++) appendf(b, "[/EN#1/t%d w] ", t);
    entities_with(b, "\n", "", 1);
    b = add_case(cs, SL_ERR_LIMIT, "33 entity types");
    for (int t = 0; t < 33; t++) appendf(b, "[/EN#1/t%d w] ", t);
    entities_with(b, "\n", "", 1);
    b = add_case(cs, SL_OK, "phrase at the limit");
    append_str(b, "[/EN#1/people ");
    append_rep(b, 'w', SL_GROUND_MAX_PHRASE);
    append_str(b, "]");
    entities_with(b, "", "", 0);
    b = add_case(cs, SL_ERR_LIMIT, "phrase past the limit");
    append_str(b, "[/EN#1/people ");
    append_rep(b, 'w', SL_GROUND_MAX_PHRASE + 1);
    append_str(b, "]");
    entities_with(b, "", "", 0);
    b = add_case(cs, SL_OK, "31-digit entity");
    append_str(b, "[/EN#");
    append_rep(b, '9', 31);
    append_str(b, "/people w]");
    entities_with(b, "", "", 1);
    b = add_case(cs, SL_ERR_FORMAT, "32-digit entity");
    append_str(b, "[/EN#");
    append_rep(b, '9', 32);
    append_str(b, "/people w]");
    entities_with(b, "", "", 1);
    b = add_case(cs, SL_ERR_LIMIT, "types of 256 bytes");
    append_str(b, "[/EN#1/");
    append_rep(b, 't', 256);
    append_str(b, " w]");
    entities_with(b, "", "", 1);
    buf nest = {0};
    for (int i = 0; i < 63; i++) append_str(&nest, "<o>");
    for (int i = 0; i < 63; i++) append_str(&nest, "</o>");
    append(&nest, "", 1);
    entities_with(add_case(cs, SL_OK, "XML nested 64 deep"), "[/EN#1/people a] .", (char *)nest.p,
                  1);
    nest.n = 0;
    for (int i = 0; i < 64; i++) append_str(&nest, "<o>");
    for (int i = 0; i < 64; i++) append_str(&nest, "</o>");
    append(&nest, "", 1);
    entities_with(add_case(cs, SL_ERR_LIMIT, "XML nested 65 deep"), "[/EN#1/people a] .",
                  (char *)nest.p, 1);
    free(nest.p);
    b = add_case(cs, SL_ERR_LIMIT, "more than 200000 XML elements");
    append_str(b, "[/EN#1/people a]" SEP "<annotation>");
    for (int i = 0; i < 200001; i++) append_str(b, "<e/>\n");
    append_str(b, "</annotation>");
    b = add_case(cs, SL_OK, "20000 sentence lines");
    for (int i = 0; i < 20000; i++) appendf(b, "[/EN#%d/people p%d] and [/EN#1/x y]\n", i % 3, i);
    entities_with(b, "", "", 1);
    b = add_case(cs, SL_ERR_FORMAT, "id listed twice");
    entities_with(b, "[/EN#1/people a]", "", 1);
    append_str(b, "1000092795\n");
    b = add_case(cs, SL_ERR_NOT_FOUND, "listed id without files");
    entities_with(b, "[/EN#1/people a]", "", 0);
    append_str(b, SEP "1000092795\nother_id\n");
    b = add_case(cs, SL_ERR_FORMAT, "width 1e308");
    append_str(b, "x" SEP "<annotation><size><width>1e308</width><height>1</height></size>"
                  "</annotation>");
    b = add_case(cs, SL_ERR_FORMAT, "width 4294967297");
    append_str(b, "x" SEP "<annotation><size><width>4294967297</width><height>1</height></size>"
                  "</annotation>");
    b = add_case(cs, SL_ERR_FORMAT, "coordinate -1e308");
    entities_with(b, "[/EN#2/people a]",
                  "<object><name>2</name><bndbox><xmin>-1e308</xmin><ymin>1</ymin><xmax>2</xmax>"
                  "<ymax>2</ymax></bndbox></object>",
                  0);
    b = add_case(cs, SL_ERR_FORMAT, "NUL in a sentence line");
    append(b, "[/EN#1/people a]\0", 17);
    entities_with(b, "", "", 0);
    b = add_case(cs, SL_ERR_FORMAT, "phrase of spaces");
    entities_with(b, "[/EN#1/people   ]", "", 0);
    /* annotation files refused for their structure */
    static const struct {
        sl_status want;
        const char *what, *xml;
    } xml_cases[] = {
        {SL_OK, "byte order mark",
         "\xef\xbb\xbf<annotation><size><width>1</width><height>1</height></size></annotation>"},
        {SL_ERR_FORMAT, "closing tag first",
         "</size><annotation><size><width>1</width><height>1</height></size></annotation>"},
        {SL_ERR_FORMAT, "root not <annotation>",
         "<voc><size><width>1</width><height>1</height></size></voc>"},
        {SL_ERR_FORMAT, "no <size>", "<annotation><object><name>1</name></object></annotation>"},
        {SL_ERR_FORMAT, "<size> twice",
         "<annotation><size><width>1</width><height>1</height></size>"
         "<size><width>1</width><height>1</height></size></annotation>"},
        {SL_ERR_FORMAT, "<size> without <height>",
         "<annotation><size><width>1</width></size></annotation>"},
        {SL_ERR_FORMAT, "width 1.5",
         "<annotation><size><width>1.5</width><height>1</height></size></annotation>"},
        {SL_ERR_FORMAT, "flag 0.5",
         "<annotation><size><width>1</width><height>1</height></size>"
         "<object><name>1</name><nobndbox>0.5</nobndbox></object></annotation>"},
        {SL_ERR_FORMAT, "<object> without <name>",
         "<annotation><size><width>1</width><height>1</height></size>"
         "<object><nobndbox>1</nobndbox></object></annotation>"},
        {SL_ERR_FORMAT, "xmax < xmin",
         "<annotation><size><width>9</width><height>9</height></size><object><name>1</name>"
         "<bndbox><xmin>5</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax></bndbox></object>"
         "</annotation>"},
    };
    for (size_t i = 0; i < COUNT(xml_cases); i++) {
        b = add_case(cs, xml_cases[i].want, xml_cases[i].what);
        append_str(b, "[/EN#1/people a]" SEP);
        append_str(b, xml_cases[i].xml);
    }
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */
/* ------------------------------------------------------------------------ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int verbose; /* --verbose: the time of each boundary case */

typedef struct tally {
    size_t runs, accepted;
} tally;

static void run1(const target *t, const buf *b, tally *ty) {
    t->fn(b->n ? b->p : (const uint8_t *)"", b->n);
    ty->runs++;
    ty->accepted += sl_fuzz_last_status == SL_OK;
}

static int run_target(const target *t, size_t iters, uint64_t seed) {
    double t0 = now();
    int failures = 0;
    tally seeds = {0, 0}, cuts = {0, 0}, limits = {0, 0}, mutants = {0, 0};
    buf b = {0};
    /* 1. the seeds are valid inputs */
    for (size_t i = 0; i < t->n_seeds; i++) {
        set_bytes(&b, t->seeds[i], strlen(t->seeds[i]));
        run1(t, &b, &seeds);
        if (sl_fuzz_last_status != SL_OK) {
            fprintf(stderr, "%s: seed %zu refused: %s\n", t->name, i, sl_last_error());
            failures++;
        }
    }
    /* 2. every truncation of every seed */
    for (size_t i = 0; i < t->n_seeds; i++) {
        size_t n = strlen(t->seeds[i]);
        for (size_t k = 0; k < n; k++) {
            set_bytes(&b, t->seeds[i], k);
            run1(t, &b, &cuts);
        }
    }
    /* 3. boundary cases */
    static bcases cs;
    cs.n = 0;
    if (!strcmp(t->name, "karpathy")) karpathy_cases(&cs);
    if (!strcmp(t->name, "refcoco")) refcoco_cases(&cs);
    if (!strcmp(t->name, "entities")) entities_cases(&cs);
    for (int i = 0; i < cs.n; i++) {
        double c0 = now();
        run1(t, &cs.c[i].in, &limits);
        if (verbose)
            printf("  %s: case '%s' (%zu bytes): status %d, %.3f s\n", t->name, cs.c[i].what,
                   cs.c[i].in.n, (int)sl_fuzz_last_status, now() - c0);
        if (sl_fuzz_last_status != cs.c[i].want) {
            fprintf(stderr, "%s: case '%s': status %d, wanted %d (%s)\n", t->name, cs.c[i].what,
                    (int)sl_fuzz_last_status, (int)cs.c[i].want, sl_last_error());
            failures++;
        }
        free(cs.c[i].in.p);
    }
    /* 4. mutants */
    rng r = {seed ^ (uint64_t)strlen(t->name) * 0x100000001B3ULL};
    for (size_t it = 0; it < iters; it++) {
        if (it == 0 || below(&r, 4)) { /* a fresh seed, else keep mutating the last mutant */
            const char *s = t->seeds[below(&r, t->n_seeds)];
            set_bytes(&b, s, strlen(s));
        }
        /* JSON: half the time a tree change, now and then with a byte change on top */
        if (t->json && below(&r, 2) && mutate_tree(&b, &r)) {
            if (!below(&r, 4)) mutate(t, &b, &r);
        } else {
            size_t k = 1 + below(&r, 4);
            for (size_t m = 0; m < k; m++) mutate(t, &b, &r);
        }
        run1(t, &b, &mutants);
    }
    free(b.p);
    printf("%-9s %zu seeds, %zu truncations (%zu accepted), %zu boundary cases, %zu mutants "
           "(%zu accepted): %.2f s\n",
           t->name, seeds.runs, cuts.runs, cuts.accepted, limits.runs, mutants.runs,
           mutants.accepted, now() - t0);
    fflush(stdout);
    return failures;
}

static const target *find_target(const char *name) {
    for (size_t i = 0; i < COUNT(targets); i++)
        if (!strcmp(targets[i].name, name)) return &targets[i];
    fprintf(stderr, "fuzz_driver: no target '%s' (karpathy, refcoco, entities)\n", name);
    return NULL;
}

static int write_seeds(const char *dir) {
    for (size_t i = 0; i < COUNT(targets); i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, targets[i].name);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            perror(path);
            return 1;
        }
        for (size_t k = 0; k < targets[i].n_seeds; k++) {
            snprintf(path, sizeof path, "%s/%s/seed%zu", dir, targets[i].name, k);
            FILE *f = fopen(path, "wb");
            if (!f || fputs(targets[i].seeds[k], f) == EOF || fclose(f) != 0) {
                perror(path);
                return 1;
            }
        }
    }
    return 0;
}

static int replay(const target *t, int n, char **files) {
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            perror(files[i]);
            return 1;
        }
        buf b = {0};
        uint8_t chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) append(&b, chunk, got);
        fclose(f);
        t->fn(b.n ? b.p : (const uint8_t *)"", b.n);
        printf("%s: %s: status %d %s\n", t->name, files[i], (int)sl_fuzz_last_status,
               sl_fuzz_last_status ? sl_last_error() : "");
        free(b.p);
    }
    return 0;
}

int main(int argc, char **argv) {
    size_t iters = 3000;
    uint64_t seed = 20240611;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--verbose")) {
            verbose = 1;
        } else if (!strcmp(argv[i], "--target") && i + 1 < argc) {
            only = argv[++i];
            if (!find_target(only)) return 2;
        } else if (!strcmp(argv[i], "--write-seeds") && i + 1 < argc) {
            return write_seeds(argv[i + 1]);
        } else if (!strcmp(argv[i], "--replay") && i + 1 < argc) {
            const target *t = find_target(argv[i + 1]);
            return t ? replay(t, argc - i - 2, argv + i + 2) : 2;
        } else {
            fprintf(stderr,
                    "usage: fuzz_driver [--iters N] [--seed S] [--target NAME] [--verbose]\n"
                    "       fuzz_driver --write-seeds DIR\n"
                    "       fuzz_driver --replay NAME FILE...\n");
            return 2;
        }
    }
    double t0 = now();
    int failures = 0;
    for (size_t i = 0; i < COUNT(targets); i++)
        if (!only || !strcmp(only, targets[i].name))
            failures += run_target(&targets[i], iters, seed);
    printf("fuzz_driver: seed %llu, %zu mutants per reader, %d failures, %.2f s\n",
           (unsigned long long)seed, iters, failures, now() - t0);
    return failures ? 1 : 0;
}
