/*
 * tests/test_safetensors.c - the safetensors reader and writer.
 *
 * Without arguments: round trips through sl_safetensors_write (every dtype,
 * scalars, zero-size tensors, metadata, 1000 tensors, lookups, order), writer
 * input validation, F16/BF16 conversion against known bit patterns (also from
 * unaligned data), and one hand-made malformed file per reader rule (status,
 * file name and rule checked in the message), in memory and on disk.
 *
 * With `--reference SCRIPT`: runs tests/reference/write_safetensors.py (an
 * independent writer using Debian's python3 + torch) and compares every
 * tensor with the values torch gives; exits 77 when torch is unavailable.
 */
#include "sightline/safetensors.h"
#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define PY "/usr/bin/python3"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* A file image: u64 LE header length, `json`, `pad` spaces, `data_len`
 * bytes of a counting pattern. The caller frees *img. */
static size_t make_image(unsigned char **img, const char *json, size_t pad, size_t data_len) {
    size_t jl = strlen(json), hl = jl + pad, total = 8 + hl + data_len;
    unsigned char *b = malloc(total);
    if (!b) exit(2);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', pad);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)(i * 7 + 1);
    *img = b;
    return total;
}

/* Open `len` bytes of `img` from memory as "bad.st"; expect `want` and a
 * message naming the file and containing `needle` (and `needle2` if any). */
static void expect_bad_image(const unsigned char *img, size_t len, sl_status want,
                             const char *needle, const char *needle2, int line) {
    sl_safetensors *st = (sl_safetensors *)(uintptr_t)1;
    sl_clear_error();
    sl_status rc = sl_safetensors_open_memory(img, len, "bad.st", &st);
    const char *msg = sl_last_error();
    CHECK_MSG(rc == want, "line %d: status %d, wanted %d (%s)", line, (int)rc, (int)want, msg);
    CHECK_MSG(st == NULL, "line %d: handle not NULL on failure", line);
    CHECK_MSG(strstr(msg, "bad.st") != NULL, "line %d: message '%s' lacks the file name", line,
              msg);
    CHECK_MSG(strstr(msg, needle) != NULL, "line %d: message '%s' lacks '%s'", line, msg, needle);
    if (needle2)
        CHECK_MSG(strstr(msg, needle2) != NULL, "line %d: message '%s' lacks '%s'", line, msg,
                  needle2);
    if (rc == SL_OK) sl_safetensors_free(st);
}

static void expect_bad_(const char *json, size_t data_len, sl_status want, const char *needle,
                        const char *needle2, int line) {
    unsigned char *img;
    size_t len = make_image(&img, json, 0, data_len);
    expect_bad_image(img, len, want, needle, needle2, line);
    free(img);
}
#define expect_bad(json, data_len, want, needle, needle2)                                          \
    expect_bad_(json, data_len, want, needle, needle2, __LINE__)

/* Open a good in-memory image; returns NULL (and fails a check) otherwise. */
static sl_safetensors *open_good_(const unsigned char *img, size_t len, int line) {
    sl_safetensors *st = NULL;
    sl_status rc = sl_safetensors_open_memory(img, len, "good.st", &st);
    CHECK_MSG(rc == SL_OK && st, "line %d: status %d: %s", line, (int)rc, sl_last_error());
    return rc == SL_OK ? st : NULL;
}
#define open_good(img, len) open_good_(img, len, __LINE__)

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Remove the test's temporary directory when every check passed (kept for
 * inspection otherwise). */
static void cleanup_dir(const char *dir) {
    char cmd[1024];
    if (sl_test_failures == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    }
}

static int no_temp_files(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", dir);
    return system(cmd) != 0;
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

static void test_dtype_table(void) {
    CHECK(sl_dtype_size(SL_DT_F32) == 4 && sl_dtype_size(SL_DT_F16) == 2);
    CHECK(sl_dtype_size(SL_DT_BF16) == 2 && sl_dtype_size(SL_DT_F64) == 8);
    CHECK(sl_dtype_size(SL_DT_I64) == 8 && sl_dtype_size(SL_DT_I32) == 4);
    CHECK(sl_dtype_size(SL_DT_I16) == 2 && sl_dtype_size(SL_DT_I8) == 1);
    CHECK(sl_dtype_size(SL_DT_U8) == 1 && sl_dtype_size(SL_DT_BOOL) == 1);
    CHECK(sl_dtype_size((sl_dtype)99) == 0);
    CHECK(strcmp(sl_dtype_name(SL_DT_BF16), "BF16") == 0);
    CHECK(strcmp(sl_dtype_name(SL_DT_BOOL), "BOOL") == 0);
    CHECK(strcmp(sl_dtype_name(SL_DT_U8), "U8") == 0);
}

static void test_roundtrip(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    float f32[6] = {1.f, -2.f, 3.5f, 0.f, 1e-30f, -1e30f};
    uint16_t f16[4] = {0x3C00, 0xC100, 0x7BFF, 0x0001};
    uint16_t bf16[3] = {0x3F80, 0xC020, 0x7F80};
    int64_t i64[3] = {49406, -1, INT64_MAX};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 2.5f;
    double f64[2] = {1.5, -1e300};
    int32_t i32[2] = {INT32_MIN, 7};
    int16_t i16[1] = {-300};
    int8_t i8[2] = {-128, 127};
    uint8_t b[3] = {1, 0, 1};
    sl_tensor_desc d[] = {
        {"weights.f32", SL_DT_F32, 2, {2, 3}, f32},
        {"half", SL_DT_F16, 1, {4}, f16},
        {"brain", SL_DT_BF16, 2, {3, 1}, bf16},
        {"empty.first", SL_DT_F32, 2, {0, 4}, NULL},
        {"ids", SL_DT_I64, 1, {3}, i64},
        {"bytes", SL_DT_U8, 1, {5}, u8},
        {"logit_scale", SL_DT_F32, 0, {0}, &scalar},
        {"empty.mid", SL_DT_I64, 3, {5, 0, 2}, NULL},
        {"f64", SL_DT_F64, 1, {2}, f64},
        {"i32", SL_DT_I32, 1, {2}, i32},
        {"i16", SL_DT_I16, 8, {1, 1, 1, 1, 1, 1, 1, 1}, i16},
        {"i8", SL_DT_I8, 1, {2}, i8},
        {"mask", SL_DT_BOOL, 1, {3}, b},
        {"empty.last", SL_DT_BF16, 1, {0}, NULL},
    };
    size_t n = sizeof d / sizeof d[0];
    const char *meta[] = {"format", "pt", "sightline.note", "caf\xc3\xa9 \xe2\x9c\x93",
                          "empty",  ""};
    CHECK_OK(sl_safetensors_write(path, d, n, meta, 3));
    CHECK(no_temp_files(dir));

    /* the layout: 8-byte aligned data section, space padding */
    char *raw;
    size_t rawlen;
    CHECK_OK(sl_read_file(path, 1 << 20, &raw, &rawlen));
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
    CHECK((8 + hl) % 8 == 0);
    CHECK(raw[8] == '{');
    CHECK(strncmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0);
    /* compact JSON, keys in the given order */
    char *w = strstr(raw + 8, "\"weights.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                              "\"data_offsets\":[0,24]}");
    char *h = strstr(raw + 8, "\"half\":");
    CHECK(w && h && w < h);
    size_t data_total = 24 + 8 + 6 + 24 + 5 + 4 + 16 + 8 + 2 + 2 + 3;
    CHECK(rawlen == 8 + hl + data_total);
    free(raw);

    sl_safetensors *st = NULL;
    CHECK_OK(sl_safetensors_open(path, &st));
    if (!st) return;
    CHECK(sl_safetensors_count(st) == n);
    /* file order is the given order (ties among zero-size tensors keep it) */
    for (size_t i = 0; i < n && i < sl_safetensors_count(st); i++) {
        const sl_tensor_info *t = sl_safetensors_at(st, i);
        CHECK_MSG(strcmp(t->name, d[i].name) == 0, "at(%zu) is '%s', wanted '%s'", i, t->name,
                  d[i].name);
        const sl_tensor_info *f = sl_safetensors_find(st, d[i].name);
        CHECK(f == t);
        CHECK(t->dtype == d[i].dtype && t->ndim == d[i].ndim);
        size_t count = 1;
        for (int k = 0; k < t->ndim; k++) {
            CHECK(t->shape[k] == d[i].shape[k]);
            count *= (size_t)d[i].shape[k];
        }
        CHECK(t->count == count);
        CHECK(t->nbytes == count * sl_dtype_size(d[i].dtype));
        if (t->nbytes) CHECK(memcmp(t->data, d[i].data, t->nbytes) == 0);
    }
    CHECK(sl_safetensors_at(st, n) == NULL);
    CHECK(sl_safetensors_find(st, "nope") == NULL);
    CHECK(sl_safetensors_find(st, "") == NULL);
    CHECK(sl_safetensors_find(st, "__metadata__") == NULL);
    const sl_tensor_info *sc = sl_safetensors_find(st, "logit_scale");
    CHECK(sc && sc->ndim == 0 && sc->count == 1 && sc->nbytes == 4);
    float v = 0;
    if (sc) CHECK_OK(sl_tensor_to_f32(sc, &v));
    CHECK(v == 2.5f);
    const sl_tensor_info *em = sl_safetensors_find(st, "empty.mid");
    CHECK(em && em->count == 0 && em->nbytes == 0 && em->ndim == 3);
    CHECK(sl_safetensors_find(st, "weights.f32") == sl_safetensors_at(st, 0));
    CHECK(((uintptr_t)sl_safetensors_at(st, 0)->data) % 8 == 0);
    const sl_tensor_info *ids = sl_safetensors_find(st, "ids");
    CHECK_ERR(sl_tensor_to_f32(ids, &v), SL_ERR_UNSUPPORTED, "tensor 'ids'");
    CHECK(strstr(sl_last_error(), "I64") != NULL);
    /* metadata */
    const char *m = sl_safetensors_metadata(st, "format");
    CHECK(m && strcmp(m, "pt") == 0);
    m = sl_safetensors_metadata(st, "sightline.note");
    CHECK(m && strcmp(m, "caf\xc3\xa9 \xe2\x9c\x93") == 0);
    m = sl_safetensors_metadata(st, "empty");
    CHECK(m && *m == '\0');
    CHECK(sl_safetensors_metadata(st, "missing") == NULL);
    /* f32 conversion of the F32 tensor is a copy */
    float out[6];
    CHECK_OK(sl_tensor_to_f32(sl_safetensors_find(st, "weights.f32"), out));
    CHECK(memcmp(out, f32, sizeof f32) == 0);
    sl_safetensors_free(st);
    sl_safetensors_free(NULL);

    /* overwrite in place: the new content replaces the old atomically */
    CHECK_OK(sl_safetensors_write(path, d, 1, NULL, 0));
    CHECK_OK(sl_safetensors_open(path, &st));
    CHECK(st && sl_safetensors_count(st) == 1 && sl_safetensors_metadata(st, "format") == NULL);
    sl_safetensors_free(st);
}

static void test_empty_and_metadata_only(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    sl_safetensors *st = NULL;
    CHECK_OK(sl_safetensors_write(path, NULL, 0, NULL, 0));
    CHECK_OK(sl_safetensors_open(path, &st));
    CHECK(st && sl_safetensors_count(st) == 0 && sl_safetensors_at(st, 0) == NULL);
    CHECK(sl_safetensors_find(st, "x") == NULL);
    sl_safetensors_free(st);
    const char *meta[] = {"k", "v"};
    CHECK_OK(sl_safetensors_write(path, NULL, 0, meta, 1));
    CHECK_OK(sl_safetensors_open(path, &st));
    CHECK(st && sl_safetensors_count(st) == 0);
    CHECK(st && sl_safetensors_metadata(st, "k") &&
          strcmp(sl_safetensors_metadata(st, "k"), "v") == 0);
    sl_safetensors_free(st);
}

static void test_many(const char *dir) {
    enum { N = 1000 };
    char path[1024];
    snprintf(path, sizeof path, "%s/many.safetensors", dir);
    static char names[N][48];
    static sl_tensor_desc d[N];
    float *vals = malloc(sizeof(float) * (N * 8));
    if (!vals) exit(2);
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        /* names not in sorted order, sizes varying (some zero) */
        snprintf(names[i], sizeof names[i], "model.layer.%d.w%d", (i * 617) % N, i % 3);
        size_t cnt = (size_t)(i % 8);
        for (size_t k = 0; k < cnt; k++) vals[off + k] = (float)i + (float)k * 0.125f;
        d[i] = (sl_tensor_desc){names[i], SL_DT_F32, 1, {(int64_t)cnt}, vals + off};
        off += cnt;
    }
    CHECK_OK(sl_safetensors_write(path, d, N, NULL, 0));
    sl_safetensors *st = NULL;
    CHECK_OK(sl_safetensors_open(path, &st));
    if (st) {
        CHECK(sl_safetensors_count(st) == N);
        int bad_order = 0, bad_find = 0, bad_val = 0;
        for (int i = 0; i < N; i++) {
            if (strcmp(sl_safetensors_at(st, (size_t)i)->name, names[i]) != 0) bad_order++;
            const sl_tensor_info *t = sl_safetensors_find(st, names[i]);
            if (!t || t->count != (size_t)(i % 8)) {
                bad_find++;
                continue;
            }
            float buf[8];
            if (sl_tensor_to_f32(t, buf) != SL_OK) bad_val++;
            for (size_t k = 0; k < t->count; k++)
                if (buf[k] != (float)i + (float)k * 0.125f) bad_val++;
        }
        CHECK(bad_order == 0 && bad_find == 0 && bad_val == 0);
        CHECK(sl_safetensors_find(st, "model.layer.1000.w0") == NULL);
        CHECK(sl_safetensors_find(st, "model.layer.0.w") == NULL);
    }
    sl_safetensors_free(st);
    free(vals);
}

/* ------------------------------------------------------------------------ */
/* Writer validation                                                        */
/* ------------------------------------------------------------------------ */

static void test_write_invalid(const char *dir) {
    char path[1024], raw_before[64];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    float x[4] = {1, 2, 3, 4};
    sl_tensor_desc good = {"a", SL_DT_F32, 1, {4}, x};
    CHECK_OK(sl_safetensors_write(path, &good, 1, NULL, 0));
    FILE *f = fopen(path, "rb");
    size_t before = f ? fread(raw_before, 1, sizeof raw_before, f) : 0;
    if (f) fclose(f);

    sl_tensor_desc two[2] = {good, good};
    CHECK_ERR(sl_safetensors_write(path, two, 2, NULL, 0), SL_ERR_INVALID, "duplicate name");
    CHECK(strstr(sl_last_error(), "'a'") != NULL);
    sl_tensor_desc t = good;
    t.name = "";
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "empty name");
    t.name = NULL;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "empty name");
    t.name = "__metadata__";
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "__metadata__");
    t.name = "bad\xff";
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "UTF-8");
    t = good;
    t.dtype = (sl_dtype)42;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "unknown dtype");
    t = good;
    t.ndim = 9;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "ndim 9");
    t.ndim = -1;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "ndim -1");
    t = good;
    t.shape[0] = -4;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "negative shape");
    t = good;
    t.data = NULL;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_INVALID, "NULL data");
    t = good;
    t.ndim = 3;
    t.shape[0] = t.shape[1] = t.shape[2] = INT64_C(1) << 40;
    CHECK_ERR(sl_safetensors_write(path, &t, 1, NULL, 0), SL_ERR_LIMIT, "overflow");
    const char *dupmeta[] = {"k", "1", "k", "2"};
    CHECK_ERR(sl_safetensors_write(path, &good, 1, dupmeta, 2), SL_ERR_INVALID,
              "duplicate metadata key 'k'");
    const char *nullmeta[] = {"k", NULL};
    CHECK_ERR(sl_safetensors_write(path, &good, 1, nullmeta, 1), SL_ERR_INVALID, "NULL");
    const char *badmeta[] = {"k", "\xc3("};
    CHECK_ERR(sl_safetensors_write(path, &good, 1, badmeta, 1), SL_ERR_INVALID, "UTF-8");
    CHECK_ERR(sl_safetensors_write(path, NULL, 1, NULL, 0), SL_ERR_INVALID, "NULL array");
    CHECK_ERR(sl_safetensors_write(NULL, &good, 1, NULL, 0), SL_ERR_INVALID, "path");

    /* none of the failures touched the file or left a temp file */
    char raw_after[64];
    f = fopen(path, "rb");
    size_t after = f ? fread(raw_after, 1, sizeof raw_after, f) : 0;
    if (f) fclose(f);
    CHECK(before > 0 && before == after && memcmp(raw_before, raw_after, before) == 0);
    CHECK(no_temp_files(dir));

    /* an unwritable destination: I/O error naming the temp file */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", dir);
    CHECK_ERR(sl_safetensors_write(bad, &good, 1, NULL, 0), SL_ERR_IO, "x.safetensors.tmp.");
    CHECK(!file_exists(bad));
}

/* ------------------------------------------------------------------------ */
/* Conversion                                                               */
/* ------------------------------------------------------------------------ */

static void test_conversion(void) {
    /* F16 and BF16 bit patterns, read from an image whose data section
     * starts at an odd address (unaligned loads) */
    static const uint16_t h[] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x03FF, 0x0400,
                                 0x7C00, 0xFC00, 0x8000, 0x0000, 0x7E00, 0x3555};
    static const float hv[] = {1.0f,     -2.5f,     65504.0f, 0x1p-24f, 0x3FFp-24f, 0x1p-14f,
                               INFINITY, -INFINITY, -0.0f,    0.0f,     NAN,        0x1.554p-2f};
    static const uint16_t b[] = {0x3F80, 0xC020, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x8000};
    static const float bv[] = {1.0f,     -2.5f,     0x1.FEp127f, 0x1p-133f,
                               INFINITY, -INFINITY, NAN,         -0.0f};
    enum { NH = sizeof h / sizeof h[0], NB = sizeof b / sizeof b[0] };
    char json[512];
    snprintf(json, sizeof json,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[%d,%d]},"
             "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%d,%d]}}",
             NH, 2 * NH, NB, 2 * NH, 2 * NH + 2 * NB, 2 * NH + 2 * NB, 2 * NH + 2 * NB + 8);
    size_t data_len = 2 * NH + 2 * NB + 8;
    size_t jl = strlen(json);
    /* one leading byte so the image starts at an odd address (malloc aligns
     * buf); pad so that the data section then also starts at an odd address */
    size_t pad = (8 + jl) % 2;
    unsigned char *img0;
    size_t len = make_image(&img0, json, pad, data_len);
    unsigned char *buf = malloc(len + 1);
    if (!buf) exit(2);
    memcpy(buf + 1, img0, len);
    unsigned char *img = buf + 1, *data = img + 8 + jl + pad;
    for (int i = 0; i < NH; i++)
        data[2 * i] = h[i] & 0xff, data[2 * i + 1] = (unsigned char)(h[i] >> 8);
    for (int i = 0; i < NB; i++)
        data[2 * NH + 2 * i] = b[i] & 0xff, data[2 * NH + 2 * i + 1] = (unsigned char)(b[i] >> 8);
    float f2[2] = {-0.75f, 3e38f};
    memcpy(data + 2 * NH + 2 * NB, f2, 8);
    sl_safetensors *st = open_good(img, len);
    if (st) {
        const sl_tensor_info *th = sl_safetensors_find(st, "h"), *tb = sl_safetensors_find(st, "b"),
                             *tf = sl_safetensors_find(st, "f");
        CHECK(((uintptr_t)th->data & 1) == 1);
        float out[NH];
        CHECK_OK(sl_tensor_to_f32(th, out));
        for (int i = 0; i < NH; i++) {
            if (isnan(hv[i]))
                CHECK_MSG(isnan(out[i]), "f16 %04x -> %g", h[i], out[i]);
            else
                CHECK_MSG(f2u(out[i]) == f2u(hv[i]), "f16 %04x -> %a, wanted %a", h[i], out[i],
                          hv[i]);
        }
        CHECK_OK(sl_tensor_to_f32(tb, out));
        for (int i = 0; i < NB; i++) {
            if (isnan(bv[i]))
                CHECK_MSG(isnan(out[i]), "bf16 %04x -> %g", b[i], out[i]);
            else
                CHECK_MSG(f2u(out[i]) == f2u(bv[i]), "bf16 %04x -> %a, wanted %a", b[i], out[i],
                          bv[i]);
        }
        CHECK(((uintptr_t)tf->data & 3) != 0);
        CHECK_OK(sl_tensor_to_f32(tf, out));
        CHECK(out[0] == -0.75f && out[1] == 3e38f);
        /* every half value converts exactly: compare with a slow reference */
        int bad = 0;
        for (uint32_t u = 0; u < 65536; u++) {
            unsigned char hb[2] = {(unsigned char)(u & 0xff), (unsigned char)(u >> 8)};
            sl_tensor_info ti = {"x", SL_DT_F16, 1, {1}, 1, 2, hb};
            float r;
            sl_tensor_to_f32(&ti, &r);
            int e = (int)((u >> 10) & 31), mnt = (int)(u & 1023);
            double want = e == 0    ? ldexp(mnt, -24)
                          : e == 31 ? (mnt ? NAN : INFINITY)
                                    : ldexp(1024 + mnt, e - 25);
            if (u & 0x8000) want = -want;
            if (isnan(want) ? !isnan(r) : ((double)r != want || !signbit(r) != !signbit(want)))
                bad++;
        }
        CHECK_MSG(bad == 0, "%d half values convert wrongly", bad);
        sl_tensor_info ti = {"zero", SL_DT_F16, 1, {0}, 0, 0, data};
        CHECK_OK(sl_tensor_to_f32(&ti, NULL));
        ti.dtype = SL_DT_U8;
        ti.count = 1;
        CHECK_ERR(sl_tensor_to_f32(&ti, out), SL_ERR_UNSUPPORTED, "tensor 'zero'");
        CHECK_ERR(sl_tensor_to_f32(NULL, out), SL_ERR_INVALID, "NULL");
    }
    sl_safetensors_free(st);
    free(img0);
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* Malformed files                                                          */
/* ------------------------------------------------------------------------ */

#define T4(name, off0, off1)                                                                       \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" #off0 "," #off1 "]}"

static void test_malformed_framing(void) {
    unsigned char img[64];
    /* shorter than the length field */
    expect_bad_image((const unsigned char *)"\x02\0\0\0", 4, SL_ERR_FORMAT, "too short", NULL,
                     __LINE__);
    expect_bad_image(img, 0, SL_ERR_FORMAT, "too short", NULL, __LINE__);
    /* header length over 100 MB (the file need not be that long) */
    uint64_t big = 100000001;
    for (int i = 0; i < 8; i++) img[i] = (unsigned char)(big >> (8 * i));
    memcpy(img + 8, "{}", 2);
    expect_bad_image(img, 10, SL_ERR_LIMIT, "over the limit", "100000001", __LINE__);
    for (int i = 0; i < 8; i++) img[i] = 0xff;
    expect_bad_image(img, 10, SL_ERR_LIMIT, "header length", NULL, __LINE__);
    /* header length past the end of the file */
    memset(img, 0, 8);
    img[0] = 3;
    expect_bad_image(img, 10, SL_ERR_FORMAT, "past the end", NULL, __LINE__);
    /* exactly 100 MB is allowed by the length rule, then fails as past the end */
    big = 100000000;
    for (int i = 0; i < 8; i++) img[i] = (unsigned char)(big >> (8 * i));
    expect_bad_image(img, 10, SL_ERR_FORMAT, "past the end", NULL, __LINE__);
    /* an empty header */
    memset(img, 0, 8);
    expect_bad_image(img, 8, SL_ERR_FORMAT, "start with '{'", NULL, __LINE__);
    /* header not starting with '{' */
    expect_bad(" {}", 0, SL_ERR_FORMAT, "start with '{'", NULL);
    expect_bad("[]", 0, SL_ERR_FORMAT, "start with '{'", NULL);
    expect_bad("\"x\"", 0, SL_ERR_FORMAT, "start with '{'", NULL);
    /* not JSON */
    expect_bad("{\"a\": }", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{} x", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{}{}", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    /* invalid UTF-8, NUL bytes, \u0000 in names */
    expect_bad("{\"\xff\":{}}", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"\xc3\":{}}", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"a\\u0000b\":{}}", 0, SL_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, SL_ERR_FORMAT, "not valid JSON",
               NULL);
    unsigned char *im;
    size_t l = make_image(&im, "{}", 0, 0);
    im[9] = 0; /* "{\0" */
    expect_bad_image(im, l, SL_ERR_FORMAT, "not valid JSON", NULL, __LINE__);
    free(im);
    /* duplicate names (and duplicate metadata keys) */
    expect_bad("{" T4("w", 0, 4) "," T4("w", 4, 8) "}", 8, SL_ERR_FORMAT, "duplicate name",
               "\"w\"");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, SL_ERR_FORMAT, "duplicate", NULL);
    expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, SL_ERR_FORMAT, "duplicate", NULL);
    /* trailing spaces are the allowed padding; other whitespace too */
    unsigned char *ok;
    l = make_image(&ok, "{}", 6, 0);
    sl_safetensors *st = open_good(ok, l);
    CHECK(st && sl_safetensors_count(st) == 0);
    sl_safetensors_free(st);
    free(ok);
    l = make_image(&ok, "{ \n}\n", 0, 0);
    st = open_good(ok, l);
    sl_safetensors_free(st);
    free(ok);
}

static void test_malformed_entries(void) {
    /* entry not an object */
    expect_bad("{\"w\":5}", 0, SL_ERR_FORMAT, "tensor 'w'", "not a JSON object");
    expect_bad("{\"w\":[\"F32\",[1],[0,4]]}", 4, SL_ERR_FORMAT, "tensor 'w'", "not a JSON object");
    /* missing and extra keys */
    expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT, "tensor 'w'",
               "lacks 'dtype'");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT, "tensor 'w'",
               "lacks 'shape'");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, SL_ERR_FORMAT, "tensor 'w'",
               "lacks 'data_offsets'");
    expect_bad("{\"w\":{}}", 0, SL_ERR_FORMAT, "tensor 'w'", "lacks 'dtype'");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "unexpected key 'x'");
    /* dtype */
    expect_bad("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "dtype is not a string");
    expect_bad("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "unknown dtype 'F33'");
    expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "unknown dtype 'f32'");
    expect_bad("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
               SL_ERR_UNSUPPORTED, "tensor 'w'", "unsupported dtype 'F8_E4M3'");
    expect_bad("{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
               SL_ERR_UNSUPPORTED, "tensor 'w'", "unsupported dtype 'F8_E5M2'");
    expect_bad("{\"w\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_UNSUPPORTED, "tensor 'w'", "unsupported dtype 'U32'");
    /* shape */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "shape is not an array");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "shape[0] is not a non-negative integer");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1.0],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "shape[1] is not a non-negative integer");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "shape[0]");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "shape[0]");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, SL_ERR_UNSUPPORTED, "tensor 'w'", "9 dims");
    /* element count overflow (in the product and in the byte size) */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
               "\"data_offsets\":[0,4]}}",
               4, SL_ERR_LIMIT, "tensor 'w'", "overflow");
    expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
               "\"data_offsets\":[0,4]}}",
               4, SL_ERR_LIMIT, "tensor 'w'", "overflow");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
               "\"data_offsets\":[0,4]}}",
               4, SL_ERR_FORMAT, "bad.st", "JSON");
    /* data_offsets */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":0}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "data_offsets is not an array of two");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "non-negative");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, SL_ERR_FORMAT,
               "tensor 'w'", "begin 8 > end 4");
    /* size mismatch */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "span 4 bytes but shape and dtype F32 need 8");
    expect_bad("{\"w\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "need 2");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,4]}}", 4,
               SL_ERR_FORMAT, "tensor 'w'", "need 0");
    /* outside the data section */
    expect_bad("{" T4("w", 0, 4) "}", 2, SL_ERR_FORMAT, "tensor 'w'",
               "outside the data section of 2 bytes");
    expect_bad("{" T4("w", 18446744073709551612, 18446744073709551616) "}", 4, SL_ERR_FORMAT,
               "bad.st", "JSON");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[9,9]}}", 4, SL_ERR_FORMAT,
               "tensor 'w'", "outside");
    /* overlaps */
    expect_bad("{" T4("a", 0, 4) "," T4("b", 0, 4) "}", 4, SL_ERR_FORMAT, "tensor 'b'",
               "overlap tensor 'a'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}," T4("b", 4, 8) "}",
               8, SL_ERR_FORMAT, "overlap", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               8, SL_ERR_FORMAT, "tensor 'z'", "overlap tensor 'a'");
    /* holes */
    expect_bad("{" T4("a", 0, 4) "," T4("b", 8, 12) "}", 12, SL_ERR_FORMAT, "tensor 'b'",
               "hole of 4 bytes");
    expect_bad("{" T4("a", 4, 8) "}", 8, SL_ERR_FORMAT, "tensor 'a'", "hole");
    expect_bad("{" T4("a", 0, 4) ",\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[6,6]}}",
               6, SL_ERR_FORMAT, "tensor 'z'", "hole of 2 bytes");
    /* the data section must be fully covered */
    expect_bad("{" T4("a", 0, 4) "}", 8, SL_ERR_FORMAT, "not fully covered", "4 of 8");
    expect_bad("{}", 1, SL_ERR_FORMAT, "not fully covered", "0 of 1");
    expect_bad("{\"__metadata__\":{}}", 3, SL_ERR_FORMAT, "not fully covered", NULL);
    /* metadata */
    expect_bad("{\"__metadata__\":[]}", 0, SL_ERR_FORMAT, "__metadata__ is not a JSON object",
               NULL);
    expect_bad("{\"__metadata__\":\"x\"}", 0, SL_ERR_FORMAT, "__metadata__", NULL);
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, SL_ERR_FORMAT, "__metadata__ value of 'k'",
               "not a string");
    expect_bad("{\"__metadata__\":{\"k\":{}}}", 0, SL_ERR_FORMAT, "'k' is not a string", NULL);
    expect_bad("{\"__metadata__\":{\"k\":null}}", 0, SL_ERR_FORMAT, "'k' is not a string", NULL);
}

/* Valid edge cases the rules must not reject. */
static void test_valid_edges(void) {
    /* keys out of data order: at() follows offsets; zero-size tensors at a
     * shared boundary keep their header order; a zero-size tensor at the end;
     * zero extents combined with huge ones do not count as overflow */
    const char *json =
        "{\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]},"
        "\"z2\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904,0],"
        "\"data_offsets\":[4,4]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[4,6]},"
        "\"z1\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
        "\"zend\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[8,8]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]},"
        "\"__metadata__\":{\"format\":\"pt\"},"
        "\"\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
    unsigned char *img;
    size_t len = make_image(&img, json, 3, 8);
    sl_safetensors *st = open_good(img, len);
    if (st) {
        const char *want[] = {"", "a", "z2", "z1", "b", "c", "zend"};
        CHECK(sl_safetensors_count(st) == 7);
        for (size_t i = 0; i < 7 && i < sl_safetensors_count(st); i++)
            CHECK_MSG(strcmp(sl_safetensors_at(st, i)->name, want[i]) == 0, "at(%zu) = '%s'", i,
                      sl_safetensors_at(st, i)->name);
        const sl_tensor_info *b = sl_safetensors_find(st, "b");
        CHECK(b && b->ndim == 0 && b->count == 1 && b->nbytes == 2);
        CHECK(b && b->data == img + 8 + strlen(json) + 3 + 4);
        const sl_tensor_info *z2 = sl_safetensors_find(st, "z2");
        CHECK(z2 && z2->count == 0 && z2->ndim == 3 &&
              z2->shape[0] == INT64_C(4611686018427387904));
        const sl_tensor_info *a = sl_safetensors_find(st, "a");
        CHECK(a && a->ndim == 8 && a->count == 1);
        CHECK(sl_safetensors_find(st, "") == sl_safetensors_at(st, 0));
        CHECK(sl_safetensors_metadata(st, "format") && sl_safetensors_metadata(st, "pt") == NULL);
    }
    sl_safetensors_free(st);
    free(img);
}

static void test_on_disk(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    unsigned char *img;
    size_t len = make_image(&img, "{" T4("w", 0, 4) "," T4("v", 8, 12) "}", 0, 12);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(img, 1, len, f) == len);
    if (f) fclose(f);
    free(img);
    sl_safetensors *st = (sl_safetensors *)(uintptr_t)1;
    CHECK_ERR(sl_safetensors_open(path, &st), SL_ERR_FORMAT, "tensor 'v'");
    CHECK(strstr(sl_last_error(), path) != NULL);
    CHECK(strstr(sl_last_error(), "hole") != NULL);
    CHECK(st == NULL);
    /* an empty file */
    f = fopen(path, "wb");
    if (f) fclose(f);
    CHECK_ERR(sl_safetensors_open(path, &st), SL_ERR_FORMAT, "too short");
    CHECK(strstr(sl_last_error(), path) != NULL);
    /* missing file, a directory */
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    CHECK_ERR(sl_safetensors_open(path, &st), SL_ERR_NOT_FOUND, "missing.safetensors");
    CHECK_ERR(sl_safetensors_open(dir, &st), SL_ERR_IO, "not a regular file");
    CHECK_ERR(sl_safetensors_open(NULL, &st), SL_ERR_INVALID, "NULL");
    CHECK_ERR(sl_safetensors_open_memory(NULL, 5, "x", &st), SL_ERR_INVALID, "NULL");
}

/* ------------------------------------------------------------------------ */
/* An independent writer (python3 + torch)                                  */
/* ------------------------------------------------------------------------ */

/* Compare every tensor of `ref` against the F32 (float dtypes) or same-dtype
 * (others) tensor of `exp`. */
static void compare_reference(const sl_safetensors *ref, const sl_safetensors *exp,
                              const char *file) {
    CHECK_MSG(sl_safetensors_count(ref) == sl_safetensors_count(exp), "%s: %zu vs %zu tensors",
              file, sl_safetensors_count(ref), sl_safetensors_count(exp));
    for (size_t i = 0; i < sl_safetensors_count(exp); i++) {
        const sl_tensor_info *e = sl_safetensors_at(exp, i);
        const sl_tensor_info *r = sl_safetensors_find(ref, e->name);
        CHECK_MSG(r != NULL, "%s: tensor '%s' missing", file, e->name);
        if (!r) continue;
        /* both files list tensors in the same data order */
        CHECK_MSG(sl_safetensors_at(ref, i) == r, "%s: '%s' not at %zu", file, e->name, i);
        CHECK(r->ndim == e->ndim && r->count == e->count);
        for (int k = 0; k < r->ndim; k++) CHECK(r->shape[k] == e->shape[k]);
        if (r->dtype == SL_DT_F32 || r->dtype == SL_DT_F16 || r->dtype == SL_DT_BF16) {
            CHECK_MSG(e->dtype == SL_DT_F32, "%s: expected dtype of '%s'", file, e->name);
            float *got = malloc(sizeof(float) * (r->count + 1));
            float *want = malloc(sizeof(float) * (e->count + 1));
            if (!got || !want) exit(2);
            CHECK_OK(sl_tensor_to_f32(r, got));
            CHECK_OK(sl_tensor_to_f32(e, want));
            int bad = 0;
            for (size_t k = 0; k < r->count; k++)
                if (isnan(want[k]) ? !isnan(got[k]) : f2u(got[k]) != f2u(want[k])) bad++;
            CHECK_MSG(bad == 0, "%s: tensor '%s': %d values differ from torch", file, r->name, bad);
            free(got);
            free(want);
        } else {
            CHECK_MSG(r->dtype == e->dtype && r->nbytes == e->nbytes &&
                          (r->nbytes == 0 || memcmp(r->data, e->data, r->nbytes) == 0),
                      "%s: tensor '%s' differs", file, r->name);
        }
    }
}

static int run_reference(const char *script) {
    if (system(PY " -c 'import torch' >/dev/null 2>&1") != 0) {
        printf("skip: " PY " with torch not available\n");
        return SL_TEST_SKIP;
    }
    const char *dir = sl_test_tmpdir();
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd, PY " '%s' '%s'", script, dir);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (%d)", cmd, rc);
    if (rc != 0) return sl_test_finish("test_safetensors --reference");

    sl_safetensors *exp = NULL, *ref = NULL;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    CHECK_OK(sl_safetensors_open(path, &exp));
    const char *files[] = {"ref_aligned.safetensors", "ref_unaligned.safetensors"};
    for (int fi = 0; fi < 2 && exp; fi++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[fi]);
        CHECK_OK(sl_safetensors_open(path, &ref));
        if (!ref) continue;
        CHECK(sl_safetensors_count(ref) == 14);
        const char *m = sl_safetensors_metadata(ref, "format");
        CHECK(m && strcmp(m, "pt") == 0);
        m = sl_safetensors_metadata(ref, "note");
        CHECK(m && strcmp(m, "caf\xc3\xa9 \xe2\x9c\x93") == 0);
        if (fi == 1) CHECK(((uintptr_t)sl_safetensors_at(ref, 0)->data & 1) == 1);
        const sl_tensor_info *t = sl_safetensors_find(ref, "bf16.special");
        float v[16];
        CHECK(t && t->dtype == SL_DT_BF16 && t->count == 9);
        if (t) {
            CHECK_OK(sl_tensor_to_f32(t, v));
            CHECK(v[0] == 1.0f && v[1] == -2.5f && v[2] == 0x1.FEp127f && v[3] == 0x1p-133f);
            CHECK(isinf(v[4]) && v[4] > 0 && isinf(v[5]) && v[5] < 0 && isnan(v[6]));
        }
        t = sl_safetensors_find(ref, "f16.special");
        CHECK(t && t->dtype == SL_DT_F16 && t->count == 11);
        if (t) {
            CHECK_OK(sl_tensor_to_f32(t, v));
            CHECK(v[0] == 1.0f && v[1] == -2.5f && v[2] == 65504.0f && v[3] == 0x1p-24f);
            CHECK(v[4] == 0x1p-14f && v[5] == 0.0f && signbit(v[5]) && isinf(v[6]));
        }
        compare_reference(ref, exp, files[fi]);

        /* what we read, we write back identically */
        size_t n = sl_safetensors_count(ref);
        sl_tensor_desc *d = calloc(n, sizeof *d);
        if (!d) exit(2);
        for (size_t i = 0; i < n; i++) {
            const sl_tensor_info *ti = sl_safetensors_at(ref, i);
            d[i].name = ti->name;
            d[i].dtype = ti->dtype;
            d[i].ndim = ti->ndim;
            memcpy(d[i].shape, ti->shape, sizeof d[i].shape);
            d[i].data = ti->data;
        }
        snprintf(path, sizeof path, "%s/rewritten.safetensors", dir);
        const char *meta[] = {"format", "pt", "note", sl_safetensors_metadata(ref, "note")};
        CHECK_OK(sl_safetensors_write(path, d, n, meta, 2));
        sl_safetensors *again = NULL;
        CHECK_OK(sl_safetensors_open(path, &again));
        if (again) compare_reference(again, exp, "rewritten.safetensors");
        sl_safetensors_free(again);
        free(d);
        sl_safetensors_free(ref);
        ref = NULL;
    }
    sl_safetensors_free(exp);
    cleanup_dir(dir);
    return sl_test_finish("test_safetensors --reference");
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--reference") == 0) return run_reference(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_safetensors [--reference SCRIPT]\n");
        return 2;
    }
    const char *dir = sl_test_tmpdir();
    test_dtype_table();
    test_roundtrip(dir);
    test_empty_and_metadata_only(dir);
    test_many(dir);
    test_write_invalid(dir);
    test_conversion();
    test_malformed_framing();
    test_malformed_entries();
    test_valid_edges();
    test_on_disk(dir);
    cleanup_dir(dir);
    return sl_test_finish("test_safetensors");
}
