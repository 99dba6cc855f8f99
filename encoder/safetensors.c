/*
 * encoder/safetensors.c - strict safetensors reader (mmap, validated header)
 * and atomic streaming writer.
 *
 * Reading: the file is mapped read-only; the header is parsed with jansson
 * (duplicate keys and invalid UTF-8 rejected by the parser), then every entry
 * is checked and the tensors are sorted by data offset so that their byte
 * ranges can be proved contiguous, non-overlapping and covering the whole
 * data section. Tensor names and metadata strings point into the parsed JSON,
 * which lives as long as the handle.
 *
 * Writing: the header is built with jansson in the caller's order, padded
 * with spaces to an 8-byte boundary, and streamed with the tensor data to
 * "<path>.tmp.<pid>", which is fsynced and renamed over `path`.
 */
#include "sightline/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation's bound on the header length. */
#define ST_MAX_HEADER   100000000ull
#define ST_METADATA_KEY "__metadata__"

/* ------------------------------------------------------------------------ */
/* Data types                                                               */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *name; /* safetensors spelling */
    sl_dtype dt;      /* our enum */
    size_t size;      /* bytes per element */
} st_dtypes[] = {
    {"F32", SL_DT_F32, 4}, {"F16", SL_DT_F16, 2},   {"BF16", SL_DT_BF16, 2}, {"F64", SL_DT_F64, 8},
    {"I64", SL_DT_I64, 8}, {"I32", SL_DT_I32, 4},   {"I16", SL_DT_I16, 2},   {"I8", SL_DT_I8, 1},
    {"U8", SL_DT_U8, 1},   {"BOOL", SL_DT_BOOL, 1},
};
#define ST_NDTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

/* dtypes the format defines that sightline does not handle. */
static const char *const st_unsupported[] = {
    "F8_E4M3", "F8_E5M2", "F8_E4M3FN", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F6_E2M3",
    "F6_E3M2", "F4",      "U16",       "U32",         "U64",         "C64",     "C128",
};

size_t sl_dtype_size(sl_dtype dt) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].size;
    return 0;
}

const char *sl_dtype_name(sl_dtype dt) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
    return "?";
}

/* Look a dtype name up: 0 and *dt when known, 1 when defined by the format
 * but unsupported, -1 when unknown. */
static int st_dtype_parse(const char *s, sl_dtype *dt) {
    for (size_t i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *dt = st_dtypes[i].dt;
            return 0;
        }
    for (size_t i = 0; i < sizeof st_unsupported / sizeof st_unsupported[0]; i++)
        if (strcmp(s, st_unsupported[i]) == 0) return 1;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The handle                                                               */
/* ------------------------------------------------------------------------ */

struct sl_safetensors {
    char *name;                    /* path or caller's name, for messages */
    const unsigned char *base;     /* the whole file image */
    size_t len;                    /* its length */
    void *map;                     /* mmap'd region to unmap, or NULL */
    size_t map_len;                /* its length */
    json_t *root;                  /* parsed header (owns names and metadata) */
    json_t *meta;                  /* "__metadata__" object inside root, or NULL */
    sl_tensor_info *tensors;       /* [n] in ascending data offset */
    const sl_tensor_info **sorted; /* [n] by name (strcmp), for lookups */
    size_t n;                      /* tensor count */
};

/* One entry while validating: the info plus its byte range and header
 * position (the tie-break that keeps sorting deterministic). */
typedef struct st_entry {
    sl_tensor_info info; /* what the caller sees */
    uint64_t begin, end; /* data_offsets */
    size_t pos;          /* position in the header */
} st_entry;

static int st_entry_cmp(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

static int st_name_cmp(const void *a, const void *b) {
    const sl_tensor_info *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Read a non-negative JSON integer into *out; -1 when `v` is not one. */
static int st_get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

/* Validate one header entry `key` -> `val` into *e. `data_len` is the length
 * of the data section. */
static sl_status st_parse_entry(const char *file, const char *key, json_t *val, size_t data_len,
                                st_entry *e) {
    if (!json_is_object(val))
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", file,
                            key);
    json_t *jdt = json_object_get(val, "dtype");
    json_t *jshape = json_object_get(val, "shape");
    json_t *joff = json_object_get(val, "data_offsets");
    if (!jdt || !jshape || !joff)
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': entry lacks '%s'", file, key,
                            !jdt      ? "dtype"
                            : !jshape ? "shape"
                                      : "data_offsets");
    if (json_object_size(val) != 3) {
        const char *k;
        json_t *v;
        json_object_foreach(val, k, v) {
            if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
                return sl_set_error(SL_ERR_FORMAT,
                                    "%s: tensor '%s': unexpected key '%s' in entry (only dtype, "
                                    "shape, data_offsets allowed)",
                                    file, key, k);
        }
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': unexpected keys in entry", file, key);
    }

    /* dtype */
    if (!json_is_string(jdt))
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", file, key);
    const char *dts = json_string_value(jdt);
    int r = st_dtype_parse(dts, &e->info.dtype);
    if (r > 0)
        return sl_set_error(SL_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype '%s'", file,
                            key, dts);
    if (r < 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", file, key, dts);
    size_t dsize = sl_dtype_size(e->info.dtype);

    /* shape */
    if (!json_is_array(jshape))
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': shape is not an array", file, key);
    size_t ndim = json_array_size(jshape);
    if (ndim > SL_ST_MAX_DIMS)
        return sl_set_error(SL_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %zu dims (at most %d)",
                            file, key, ndim, SL_ST_MAX_DIMS);
    e->info.ndim = (int)ndim;
    size_t count = 1;
    int overflow = 0;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (st_get_u64(json_array_get(jshape, i), &d))
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: tensor '%s': shape[%zu] is not a non-negative integer", file,
                                key, i);
        e->info.shape[i] = (int64_t)d;
        /* a zero extent makes the product 0 whatever the other extents are,
         * so record overflow and decide after the whole shape is read */
        if (d > SIZE_MAX || sl_mul_size(count, (size_t)d, &count)) overflow = 1;
    }
    for (size_t i = 0; i < ndim; i++)
        if (e->info.shape[i] == 0) overflow = 0, count = 0;
    size_t nbytes;
    if (overflow || sl_mul_size(count, dsize, &nbytes))
        return sl_set_error(SL_ERR_LIMIT, "%s: tensor '%s': element count of shape overflows", file,
                            key);
    e->info.count = count;
    e->info.nbytes = nbytes;

    /* data_offsets */
    if (!json_is_array(joff) || json_array_size(joff) != 2 ||
        st_get_u64(json_array_get(joff, 0), &e->begin) ||
        st_get_u64(json_array_get(joff, 1), &e->end))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets is not an array of two non-negative "
                            "integers",
                            file, key);
    if (e->begin > e->end)
        return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu",
                            file, key, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != (uint64_t)nbytes)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype "
                            "%s need %zu",
                            file, key, (unsigned long long)(e->end - e->begin), dts, nbytes);
    if (e->end > (uint64_t)data_len)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] outside the data "
                            "section of %zu bytes",
                            file, key, (unsigned long long)e->begin, (unsigned long long)e->end,
                            data_len);
    e->info.name = key;
    return SL_OK;
}

/* Validate the file image in st->base/st->len and fill the tensor tables. */
static sl_status st_parse(sl_safetensors *st) {
    const char *file = st->name;
    if (st->len < 8)
        return sl_set_error(SL_ERR_FORMAT, "%s: %zu bytes, too short for the 8-byte header length",
                            file, st->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->base[i];
    if (hlen > ST_MAX_HEADER)
        return sl_set_error(SL_ERR_LIMIT, "%s: header length %llu is over the limit of %llu bytes",
                            file, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > (uint64_t)(st->len - 8))
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: header length %llu runs past the end of the file (%zu bytes)",
                            file, (unsigned long long)hlen, st->len);
    const char *hdr = (const char *)st->base + 8;
    if (hlen == 0 || hdr[0] != '{')
        return sl_set_error(SL_ERR_FORMAT, "%s: header does not start with '{'", file);
    size_t data_off = 8 + (size_t)hlen;
    size_t data_len = st->len - data_off;

    json_error_t jerr;
    st->root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!st->root) {
        /* jansson reports duplicates as "duplicate object key near '"name"'" */
        if (strncmp(jerr.text, "duplicate object key", 20) == 0)
            return sl_set_error(SL_ERR_FORMAT, "%s: header has a duplicate name: %s (at byte %d)",
                                file, jerr.text, jerr.position);
        return sl_set_error(SL_ERR_FORMAT, "%s: header is not valid JSON: %s (at byte %d)", file,
                            jerr.text, jerr.position);
    }
    if (!json_is_object(st->root))
        return sl_set_error(SL_ERR_FORMAT, "%s: header is not a JSON object", file);

    size_t nkeys = json_object_size(st->root);
    st_entry *ents = calloc(nkeys ? nkeys : 1, sizeof *ents);
    if (!ents) return sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu entries", file, nkeys);

    sl_status rc = SL_OK;
    size_t n = 0, pos = 0;
    const char *key;
    json_t *val;
    json_object_foreach(st->root, key, val) {
        pos++;
        if (strcmp(key, ST_METADATA_KEY) == 0) {
            if (!json_is_object(val)) {
                rc = sl_set_error(SL_ERR_FORMAT, "%s: __metadata__ is not a JSON object", file);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = sl_set_error(SL_ERR_FORMAT,
                                      "%s: __metadata__ value of '%s' is not a string", file, mk);
                    goto done;
                }
            }
            st->meta = val;
            continue;
        }
        st_entry *e = &ents[n];
        e->pos = pos;
        rc = st_parse_entry(file, key, val, data_len, e);
        if (rc != SL_OK) goto done;
        e->info.data = st->base + data_off + e->begin;
        n++;
    }

    /* contiguity: sorted by (begin, end), each range must start where the
     * previous one ended; zero-size tensors therefore sit on a boundary */
    qsort(ents, n, sizeof *ents, st_entry_cmp);
    uint64_t cursor = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].begin < cursor) {
            rc = sl_set_error(SL_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s'",
                              file, ents[i].info.name, (unsigned long long)ents[i].begin,
                              (unsigned long long)ents[i].end, ents[i - 1].info.name);
            goto done;
        }
        if (ents[i].begin > cursor) {
            rc = sl_set_error(SL_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] leave a hole of %llu "
                              "bytes before it",
                              file, ents[i].info.name, (unsigned long long)ents[i].begin,
                              (unsigned long long)ents[i].end,
                              (unsigned long long)(ents[i].begin - cursor));
            goto done;
        }
        cursor = ents[i].end;
    }
    if (cursor != (uint64_t)data_len) {
        rc = sl_set_error(SL_ERR_FORMAT,
                          "%s: data section not fully covered: tensors cover %llu of %zu bytes",
                          file, (unsigned long long)cursor, data_len);
        goto done;
    }

    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    st->sorted = calloc(n ? n : 1, sizeof *st->sorted);
    if (!st->tensors || !st->sorted) {
        rc = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu tensors", file, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        st->tensors[i] = ents[i].info;
        st->sorted[i] = &st->tensors[i];
    }
    qsort(st->sorted, n, sizeof *st->sorted, st_name_cmp);
    st->n = n;
done:
    free(ents);
    return rc;
}

static sl_safetensors *st_new(const char *name) {
    sl_safetensors *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->name = strdup(name ? name : "<memory>");
    if (!st->name) {
        free(st);
        return NULL;
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Opening and queries                                                      */
/* ------------------------------------------------------------------------ */

sl_status sl_safetensors_open_memory(const void *data, size_t len, const char *name,
                                     sl_safetensors **out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "safetensors: NULL output handle");
    *out = NULL;
    if (!data && len)
        return sl_set_error(SL_ERR_INVALID, "%s: NULL buffer", name ? name : "<memory>");
    sl_safetensors *st = st_new(name);
    if (!st) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", name ? name : "<memory>");
    st->base = data;
    st->len = len;
    sl_status rc = st_parse(st);
    if (rc != SL_OK) {
        sl_safetensors_free(st);
        return rc;
    }
    *out = st;
    return SL_OK;
}

sl_status sl_safetensors_open(const char *path, sl_safetensors **out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "safetensors: NULL output handle");
    *out = NULL;
    if (!path) return sl_set_error(SL_ERR_INVALID, "safetensors: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sl_set_error(e == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: %s", path,
                            strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sl_set_error(SL_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return sl_set_error(SL_ERR_LIMIT, "%s: file too large to map", path);
    }
    sl_safetensors *st = st_new(path);
    if (!st) {
        close(fd);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len > 0) {
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            sl_safetensors_free(st);
            return sl_set_error(SL_ERR_IO, "%s: mmap: %s", path, strerror(e));
        }
        st->map = m;
        st->map_len = len;
        st->base = m;
    } else {
        st->base = (const unsigned char *)"";
    }
    close(fd);
    st->len = len;
    sl_status rc = st_parse(st);
    if (rc != SL_OK) {
        sl_safetensors_free(st);
        return rc;
    }
    *out = st;
    return SL_OK;
}

void sl_safetensors_free(sl_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    if (st->root) json_decref(st->root);
    free(st->tensors);
    free(st->sorted);
    free(st->name);
    free(st);
}

size_t sl_safetensors_count(const sl_safetensors *st) {
    return st ? st->n : 0;
}

const sl_tensor_info *sl_safetensors_at(const sl_safetensors *st, size_t i) {
    return st && i < st->n ? &st->tensors[i] : NULL;
}

const sl_tensor_info *sl_safetensors_find(const sl_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->sorted[mid]->name);
        if (c == 0) return st->sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *sl_safetensors_metadata(const sl_safetensors *st, const char *key) {
    if (!st || !st->meta || !key) return NULL;
    return json_string_value(json_object_get(st->meta, key));
}

/* ------------------------------------------------------------------------ */
/* Conversion                                                               */
/* ------------------------------------------------------------------------ */

static float st_bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE 754 binary16 -> binary32, exact (subnormals, infinities, NaN payloads
 * kept). */
static float st_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in binary32 */
        float f = (float)mant * 0x1p-24f;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        return st_bits_to_float(u | sign);
    }
    if (exp == 31) return st_bits_to_float(sign | 0x7f800000u | (mant << 13));
    return st_bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

sl_status sl_tensor_to_f32(const sl_tensor_info *t, float *dst) {
    if (!t) return sl_set_error(SL_ERR_INVALID, "tensor to f32: NULL tensor");
    if (!dst && t->count)
        return sl_set_error(SL_ERR_INVALID, "tensor '%s': NULL destination", t->name);
    const unsigned char *p = t->data;
    size_t n = t->count;
    switch (t->dtype) {
        case SL_DT_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            if (n) memcpy(dst, p, n * sizeof(float));
#else
            for (size_t i = 0; i < n; i++) {
                const unsigned char *b = p + 4 * i;
                dst[i] = st_bits_to_float((uint32_t)b[0] | (uint32_t)b[1] << 8 |
                                          (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
            }
#endif
            return SL_OK;
        case SL_DT_F16:
            for (size_t i = 0; i < n; i++)
                dst[i] = st_half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
            return SL_OK;
        case SL_DT_BF16:
            for (size_t i = 0; i < n; i++)
                dst[i] = st_bits_to_float((uint32_t)p[2 * i] << 16 | (uint32_t)p[2 * i + 1] << 24);
            return SL_OK;
        default:
            return sl_set_error(SL_ERR_UNSUPPORTED,
                                "tensor '%s': cannot convert dtype %s to F32 (F32, F16, BF16 only)",
                                t->name ? t->name : "?", sl_dtype_name(t->dtype));
    }
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

/* Build the header JSON for the write; on success *hdr (malloc'd, padded
 * with spaces) holds *hlen bytes with (8 + *hlen) % 8 == 0. */
static sl_status st_build_header(const char *path, const sl_tensor_desc *tensors, size_t n,
                                 const char *const *meta_kv, size_t n_meta, char **hdr,
                                 size_t *hlen, size_t *nbytes_out) {
    sl_status rc = SL_OK;
    json_t *root = json_object(), *meta = NULL;
    char *buf = NULL;
    if (!root) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    if (n_meta) {
        if (!meta_kv) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: %zu metadata pairs but NULL meta_kv", path,
                              n_meta);
            goto done;
        }
        meta = json_object();
        if (!meta || json_object_set_new(root, ST_METADATA_KEY, meta)) {
            rc = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (size_t i = 0; i < n_meta; i++) {
            const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
            if (!k || !v) {
                rc = sl_set_error(SL_ERR_INVALID, "%s: metadata pair %zu has a NULL key or value",
                                  path, i);
                goto done;
            }
            if (json_object_get(meta, k)) {
                rc = sl_set_error(SL_ERR_INVALID, "%s: duplicate metadata key '%s'", path, k);
                goto done;
            }
            json_t *js = json_string(v);
            if (!js) {
                rc = sl_set_error(SL_ERR_INVALID, "%s: metadata value of '%s' is not UTF-8", path,
                                  k);
                goto done;
            }
            if (json_object_set_new(meta, k, js)) {
                rc = sl_set_error(SL_ERR_INVALID, "%s: metadata key '%s' is not UTF-8", path, k);
                goto done;
            }
        }
    }

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const sl_tensor_desc *t = &tensors[i];
        const char *name = t->name;
        if (!name || !*name) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor %zu has an empty name", path, i);
            goto done;
        }
        if (strcmp(name, ST_METADATA_KEY) == 0) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor %zu may not be named __metadata__", path,
                              i);
            goto done;
        }
        if (json_object_get(root, name)) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor '%s': duplicate name", path, name);
            goto done;
        }
        size_t dsize = sl_dtype_size(t->dtype);
        if (!dsize) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor '%s': unknown dtype %d", path, name,
                              (int)t->dtype);
            goto done;
        }
        if (t->ndim < 0 || t->ndim > SL_ST_MAX_DIMS) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor '%s': ndim %d not in 0..%d", path, name,
                              t->ndim, SL_ST_MAX_DIMS);
            goto done;
        }
        size_t count = 1;
        int overflow = 0, zero = 0;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) {
                rc = sl_set_error(SL_ERR_INVALID, "%s: tensor '%s': negative shape[%d]", path, name,
                                  d);
                goto done;
            }
            if (t->shape[d] == 0) zero = 1;
            if ((uint64_t)t->shape[d] > SIZE_MAX || sl_mul_size(count, (size_t)t->shape[d], &count))
                overflow = 1;
        }
        if (zero) count = 0, overflow = 0;
        size_t nb, end;
        if (overflow || sl_mul_size(count, dsize, &nb) || sl_add_size(off, nb, &end) ||
            (uint64_t)end > (uint64_t)LLONG_MAX) {
            rc = sl_set_error(SL_ERR_LIMIT, "%s: tensor '%s': size overflows", path, name);
            goto done;
        }
        if (nb && !t->data) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor '%s': NULL data", path, name);
            goto done;
        }
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        int bad = !e || !shape || !offs;
        for (int d = 0; !bad && d < t->ndim; d++)
            bad = json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0;
        if (!bad)
            bad = json_array_append_new(offs, json_integer((json_int_t)off)) ||
                  json_array_append_new(offs, json_integer((json_int_t)end));
        if (!bad) {
            bad = json_object_set_new(e, "dtype", json_string(sl_dtype_name(t->dtype))) ||
                  json_object_set_new(e, "shape", shape) ||
                  json_object_set_new(e, "data_offsets", offs);
            shape = offs = NULL; /* owned by e now, even on failure */
        }
        if (bad) {
            json_decref(e);
            json_decref(shape);
            json_decref(offs);
            rc = sl_set_error(SL_ERR_NOMEM, "%s: tensor '%s': out of memory", path, name);
            goto done;
        }
        if (json_object_set_new(root, name, e)) {
            rc = sl_set_error(SL_ERR_INVALID, "%s: tensor %zu: name is not valid UTF-8", path, i);
            goto done;
        }
        off = end;
    }

    size_t flags = JSON_PRESERVE_ORDER | JSON_COMPACT;
    size_t need = json_dumpb(root, NULL, 0, flags);
    if (need == 0) {
        rc = sl_set_error(SL_ERR_NOMEM, "%s: cannot serialise the header", path);
        goto done;
    }
    size_t padded = need + (8 - (8 + need) % 8) % 8;
    if (padded > ST_MAX_HEADER) {
        rc = sl_set_error(SL_ERR_LIMIT, "%s: header of %zu bytes is over the limit of %llu", path,
                          padded, ST_MAX_HEADER);
        goto done;
    }
    buf = malloc(padded);
    if (!buf) {
        rc = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, padded);
        goto done;
    }
    if (json_dumpb(root, buf, padded, flags) != need) {
        rc = sl_set_error(SL_ERR_NOMEM, "%s: cannot serialise the header", path);
        goto done;
    }
    memset(buf + need, ' ', padded - need);
    *hdr = buf;
    *hlen = padded;
    *nbytes_out = off;
    buf = NULL;
done:
    free(buf);
    json_decref(root);
    return rc;
}

sl_status sl_safetensors_write(const char *path, const sl_tensor_desc *tensors, size_t n,
                               const char *const *meta_kv, size_t n_meta) {
    if (!path || !*path) return sl_set_error(SL_ERR_INVALID, "safetensors write: empty path");
    if (n && !tensors)
        return sl_set_error(SL_ERR_INVALID, "%s: %zu tensors but NULL array", path, n);
    char *hdr = NULL;
    size_t hlen = 0, total = 0;
    sl_status rc = st_build_header(path, tensors, n, meta_kv, n_meta, &hdr, &hlen, &total);
    if (rc != SL_OK) return rc;

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(hdr);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = sl_set_error(SL_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        rc = sl_set_error(SL_ERR_IO, "%s: %s", tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (size_t i = 0; ok && i < n; i++) {
        const sl_tensor_desc *t = &tensors[i];
        size_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= (size_t)t->shape[d]; /* checked above */
        size_t nb = count * sl_dtype_size(t->dtype);
        if (nb) ok = fwrite(t->data, 1, nb, f) == nb;
    }
    if (ok) ok = fflush(f) == 0;
    if (!ok) {
        rc = sl_set_error(SL_ERR_IO, "%s: write: %s", tmp, strerror(errno));
        fclose(f);
        goto fail;
    }
    if (fsync(fileno(f)) != 0) {
        rc = sl_set_error(SL_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
        fclose(f);
        goto fail;
    }
    if (fclose(f) != 0) {
        rc = sl_set_error(SL_ERR_IO, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = sl_set_error(SL_ERR_IO, "%s: rename to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    rc = sl_fsync_parent_dir(path);
    goto done;
fail:
    unlink(tmp);
done:
    free(tmp);
    free(hdr);
    return rc;
}
