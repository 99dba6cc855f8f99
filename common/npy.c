/*
 * common/npy.c - NumPy .npy reader and writers.
 */
#include "sightline/npy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPY_MAGIC      "\x93NUMPY"
#define NPY_MAX_HEADER 65536

static const char *npy_descr(sl_npy_dtype dt) {
    switch (dt) {
        case SL_NPY_F32:
            return "<f4";
        case SL_NPY_F16:
            return "<f2";
        case SL_NPY_I32:
            return "<i4";
        case SL_NPY_I64:
            return "<i8";
        case SL_NPY_U8:
            return "|u1";
    }
    return NULL;
}

size_t sl_npy_dtype_size(sl_npy_dtype dt) {
    switch (dt) {
        case SL_NPY_F32:
            return 4;
        case SL_NPY_F16:
            return 2;
        case SL_NPY_I32:
            return 4;
        case SL_NPY_I64:
            return 8;
        case SL_NPY_U8:
            return 1;
    }
    return 0;
}

/* Build a version 1.0 preamble + header into buf (cap >= 512). The first
 * dimension is written as `first` (ndim >= 1). When `min_total` > 0 the
 * header is padded so preamble + header is at least that long. Returns the
 * total length (a multiple of 64), or 0 when it does not fit. */
static size_t npy_build_header(char *buf, size_t cap, sl_npy_dtype dt, int ndim,
                               const size_t *shape, size_t min_total) {
    char dict[400];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_descr(dt));
    for (int i = 0; i < ndim && n > 0 && (size_t)n < sizeof dict; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%zu%s", shape[i],
                      (ndim == 1 || i + 1 < ndim) ? ", " : "");
    if (n > 0 && (size_t)n < sizeof dict) n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    if (n < 0 || (size_t)n >= sizeof dict) return 0;
    /* tidy the 1-D tuple "(N, )" into "(N,)" as numpy writes it */
    if (ndim == 1) {
        char *p = strstr(dict, ", ), }");
        if (p) memmove(p + 1, p + 2, strlen(p + 2) + 1);
    }
    size_t dlen = strlen(dict);
    size_t total = 10 + dlen + 1;
    total = (total + 63) / 64 * 64;
    if (total < min_total) total = (min_total + 63) / 64 * 64;
    if (total > cap || total - 10 > 65535) return 0;
    memcpy(buf, NPY_MAGIC, 6);
    buf[6] = 1;
    buf[7] = 0;
    uint16_t hl = (uint16_t)(total - 10);
    buf[8] = (char)(hl & 0xff);
    buf[9] = (char)(hl >> 8);
    memcpy(buf + 10, dict, dlen);
    memset(buf + 10 + dlen, ' ', total - 10 - dlen - 1);
    buf[total - 1] = '\n';
    return total;
}

static int npy_shape_count(int ndim, const size_t *shape, size_t *count) {
    size_t c = 1;
    for (int i = 0; i < ndim; i++)
        if (sl_mul_size(c, shape[i], &c)) return -1;
    *count = c;
    return 0;
}

sl_status sl_npy_write(const char *path, sl_npy_dtype dtype, int ndim, const size_t *shape,
                       const void *data) {
    if (ndim < 1 || ndim > SL_NPY_MAX_DIMS || !npy_descr(dtype))
        return sl_set_error(SL_ERR_INVALID, "%s: npy write: bad dtype or ndim %d", path, ndim);
    size_t count, bytes, total;
    if (npy_shape_count(ndim, shape, &count) ||
        sl_mul_size(count, sl_npy_dtype_size(dtype), &bytes))
        return sl_set_error(SL_ERR_LIMIT, "%s: npy write: shape too large", path);
    char hdr[512];
    size_t hlen = npy_build_header(hdr, sizeof hdr, dtype, ndim, shape, 0);
    if (!hlen) return sl_set_error(SL_ERR_INVALID, "%s: npy write: header too long", path);
    if (sl_add_size(hlen, bytes, &total))
        return sl_set_error(SL_ERR_LIMIT, "%s: npy write: too large", path);
    char *buf = malloc(total ? total : 1);
    if (!buf) return sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, total);
    memcpy(buf, hdr, hlen);
    if (bytes) memcpy(buf + hlen, data, bytes);
    sl_status st = sl_write_file_atomic(path, buf, total);
    free(buf);
    return st;
}

/* ---- header parsing ------------------------------------------------------ */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Parse the header dict in [p, end). */
static sl_status npy_parse_dict(const char *path, const char *p, const char *end, sl_npy *out) {
    int have_descr = 0, have_fo = 0, have_shape = 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return sl_set_error(SL_ERR_FORMAT, "%s: npy header is not a dict", path);
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p < end && *p == '}') break;
        if (p >= end || (*p != '\'' && *p != '"'))
            return sl_set_error(SL_ERR_FORMAT, "%s: npy header: expected a quoted key", path);
        char q = *p++;
        const char *k = p;
        while (p < end && *p != q) p++;
        if (p >= end) return sl_set_error(SL_ERR_FORMAT, "%s: npy header: unterminated key", path);
        size_t klen = (size_t)(p - k);
        p = skip_ws(p + 1, end);
        if (p >= end || *p != ':')
            return sl_set_error(SL_ERR_FORMAT, "%s: npy header: expected ':'", path);
        p = skip_ws(p + 1, end);
        if (klen == 5 && memcmp(k, "descr", 5) == 0) {
            if (p >= end || (*p != '\'' && *p != '"'))
                return sl_set_error(SL_ERR_FORMAT, "%s: npy header: descr is not a string", path);
            char q2 = *p++;
            const char *v = p;
            while (p < end && *p != q2) p++;
            if (p >= end) return sl_set_error(SL_ERR_FORMAT, "%s: npy header: bad descr", path);
            size_t vlen = (size_t)(p - v);
            p++;
            static const struct {
                const char *s;
                sl_npy_dtype dt;
            } known[] = {{"<f4", SL_NPY_F32}, {"<f2", SL_NPY_F16}, {"<i4", SL_NPY_I32},
                         {"<i8", SL_NPY_I64}, {"|u1", SL_NPY_U8},  {"<u1", SL_NPY_U8}};
            int found = 0;
            for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
                if (vlen == 3 && memcmp(v, known[i].s, 3) == 0) {
                    out->dtype = known[i].dt;
                    found = 1;
                }
            if (!found)
                return sl_set_error(SL_ERR_UNSUPPORTED,
                                    "%s: npy dtype '%.*s' not supported (float32, float16, "
                                    "int32, int64, uint8 little-endian are)",
                                    path, (int)(vlen > 32 ? 32 : vlen), v);
            have_descr = 1;
        } else if (klen == 13 && memcmp(k, "fortran_order", 13) == 0) {
            if ((size_t)(end - p) >= 5 && memcmp(p, "False", 5) == 0) {
                p += 5;
            } else if ((size_t)(end - p) >= 4 && memcmp(p, "True", 4) == 0) {
                return sl_set_error(SL_ERR_UNSUPPORTED,
                                    "%s: npy array is in Fortran order; save it C-contiguous",
                                    path);
            } else {
                return sl_set_error(SL_ERR_FORMAT, "%s: npy header: bad fortran_order", path);
            }
            have_fo = 1;
        } else if (klen == 5 && memcmp(k, "shape", 5) == 0) {
            if (p >= end || *p != '(')
                return sl_set_error(SL_ERR_FORMAT, "%s: npy header: shape is not a tuple", path);
            p++;
            out->ndim = 0;
            for (;;) {
                p = skip_ws(p, end);
                if (p < end && *p == ')') {
                    p++;
                    break;
                }
                if (out->ndim >= SL_NPY_MAX_DIMS)
                    return sl_set_error(SL_ERR_LIMIT, "%s: npy shape has more than %d dimensions",
                                        path, SL_NPY_MAX_DIMS);
                if (p >= end || *p < '0' || *p > '9')
                    return sl_set_error(SL_ERR_FORMAT, "%s: npy header: bad shape entry", path);
                size_t v = 0;
                while (p < end && *p >= '0' && *p <= '9') {
                    if (sl_mul_size(v, 10, &v) || sl_add_size(v, (size_t)(*p - '0'), &v))
                        return sl_set_error(SL_ERR_LIMIT, "%s: npy shape entry overflows", path);
                    p++;
                }
                if (p < end && *p == 'L') p++;
                out->shape[out->ndim++] = v;
                p = skip_ws(p, end);
                if (p < end && *p == ',')
                    p++;
                else if (p < end && *p == ')')
                    continue;
                else
                    return sl_set_error(SL_ERR_FORMAT, "%s: npy header: bad shape tuple", path);
            }
            have_shape = 1;
        } else {
            return sl_set_error(SL_ERR_FORMAT, "%s: npy header: unexpected key '%.*s'", path,
                                (int)(klen > 32 ? 32 : klen), k);
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        p = skip_ws(p, end);
        if (p < end && *p == '}') break;
        return sl_set_error(SL_ERR_FORMAT, "%s: npy header: expected ',' or '}'", path);
    }
    if (!have_descr || !have_fo || !have_shape)
        return sl_set_error(SL_ERR_FORMAT, "%s: npy header lacks descr, fortran_order or shape",
                            path);
    return SL_OK;
}

sl_status sl_npy_read(const char *path, sl_npy *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_set_error(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: %s", path,
                            strerror(errno));
    sl_status st = SL_OK;
    char *hdr = NULL;
    unsigned char pre[12];
    size_t hlen, pre_len;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, NPY_MAGIC, 6) != 0) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: not a .npy file (bad magic)", path);
        goto cleanup;
    }
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
        pre_len = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: npy preamble truncated", path);
            goto cleanup;
        }
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) | ((size_t)pre[10] << 16) |
               ((size_t)pre[11] << 24);
        pre_len = 12;
    } else {
        st = sl_set_error(SL_ERR_UNSUPPORTED, "%s: npy format version %d not supported", path,
                          pre[6]);
        goto cleanup;
    }
    if (hlen > NPY_MAX_HEADER) {
        st = sl_set_error(SL_ERR_LIMIT, "%s: npy header length %zu over the %d byte limit", path,
                          hlen, NPY_MAX_HEADER);
        goto cleanup;
    }
    hdr = malloc(hlen + 1);
    if (!hdr) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    if (fread(hdr, 1, hlen, f) != hlen) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: npy header truncated", path);
        goto cleanup;
    }
    hdr[hlen] = '\0';
    st = npy_parse_dict(path, hdr, hdr + hlen, out);
    if (st) goto cleanup;
    size_t bytes;
    if (npy_shape_count(out->ndim, out->shape, &out->count) ||
        sl_mul_size(out->count, sl_npy_dtype_size(out->dtype), &bytes)) {
        st = sl_set_error(SL_ERR_LIMIT, "%s: npy shape product overflows", path);
        goto cleanup;
    }
    if (fseeko(f, 0, SEEK_END) != 0) {
        st = sl_set_error(SL_ERR_IO, "%s: seek: %s", path, strerror(errno));
        goto cleanup;
    }
    off_t fsize = ftello(f);
    if (fsize < 0 || (uint64_t)fsize - (pre_len + hlen) != (uint64_t)bytes ||
        (uint64_t)fsize < pre_len + hlen) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: npy data is %lld bytes but the shape needs %zu", path,
                          (long long)fsize - (long long)(pre_len + hlen), bytes);
        goto cleanup;
    }
    out->data = malloc(bytes ? bytes : 1);
    if (!out->data) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, bytes);
        goto cleanup;
    }
    if (fseeko(f, (off_t)(pre_len + hlen), SEEK_SET) != 0 ||
        fread(out->data, 1, bytes, f) != bytes) {
        st = sl_set_error(SL_ERR_IO, "%s: short read of npy data", path);
        goto cleanup;
    }
cleanup:
    free(hdr);
    fclose(f);
    if (st) sl_npy_free(out);
    return st;
}

void sl_npy_free(sl_npy *arr) {
    if (!arr) return;
    free(arr->data);
    memset(arr, 0, sizeof *arr);
}

/* ---- streaming writer ---------------------------------------------------- */

struct sl_npy_writer {
    char *path;                    /* final path */
    char *tmp;                     /* temp path being written */
    FILE *f;                       /* open temp file */
    sl_npy_dtype dtype;            /* element type */
    int ndim;                      /* 1 + ndim_row */
    size_t shape[SL_NPY_MAX_DIMS]; /* shape[0] = rows so far */
    size_t row_bytes;              /* bytes per row */
    size_t header_len;             /* reserved header length */
};

sl_status sl_npy_writer_open(const char *path, sl_npy_dtype dtype, int ndim_row,
                             const size_t *row_shape, sl_npy_writer **out) {
    *out = NULL;
    if (ndim_row < 0 || ndim_row + 1 > SL_NPY_MAX_DIMS || !npy_descr(dtype))
        return sl_set_error(SL_ERR_INVALID, "%s: npy writer: bad dtype or ndim", path);
    sl_npy_writer *w = calloc(1, sizeof *w);
    if (!w) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    w->dtype = dtype;
    w->ndim = ndim_row + 1;
    size_t row_count = 1;
    for (int i = 0; i < ndim_row; i++) {
        w->shape[i + 1] = row_shape[i];
        if (sl_mul_size(row_count, row_shape[i], &row_count)) goto too_big;
    }
    if (sl_mul_size(row_count, sl_npy_dtype_size(dtype), &w->row_bytes)) goto too_big;
    /* reserve room for the largest possible row count */
    w->shape[0] = (size_t)-1;
    char hdr[512];
    w->header_len = npy_build_header(hdr, sizeof hdr, dtype, w->ndim, w->shape, 0);
    w->shape[0] = 0;
    w->path = strdup(path);
    size_t tl = strlen(path) + 32;
    w->tmp = malloc(tl);
    if (!w->path || !w->tmp || !w->header_len) {
        sl_npy_writer_abort(w);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(w->tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        sl_status st = sl_set_error(SL_ERR_IO, "%s: %s", w->tmp, strerror(errno));
        sl_npy_writer_abort(w);
        return st;
    }
    size_t hl = npy_build_header(hdr, sizeof hdr, dtype, w->ndim, w->shape, w->header_len);
    if (hl != w->header_len || fwrite(hdr, 1, hl, w->f) != hl) {
        sl_status st = sl_set_error(SL_ERR_IO, "%s: write: %s", w->tmp, strerror(errno));
        sl_npy_writer_abort(w);
        return st;
    }
    *out = w;
    return SL_OK;
too_big:
    free(w);
    return sl_set_error(SL_ERR_LIMIT, "%s: npy writer: row shape too large", path);
}

sl_status sl_npy_writer_append(sl_npy_writer *w, const void *rows, size_t nrows) {
    size_t bytes;
    if (sl_mul_size(nrows, w->row_bytes, &bytes))
        return sl_set_error(SL_ERR_LIMIT, "%s: npy writer: append too large", w->path);
    if (bytes && fwrite(rows, 1, bytes, w->f) != bytes)
        return sl_set_error(SL_ERR_IO, "%s: write: %s", w->tmp, strerror(errno));
    w->shape[0] += nrows;
    return SL_OK;
}

size_t sl_npy_writer_rows(const sl_npy_writer *w) {
    return w->shape[0];
}

sl_status sl_npy_writer_close(sl_npy_writer *w) {
    char hdr[512];
    sl_status st = SL_OK;
    size_t hl = npy_build_header(hdr, sizeof hdr, w->dtype, w->ndim, w->shape, w->header_len);
    if (hl != w->header_len) {
        st = sl_set_error(SL_ERR_INVALID, "%s: npy writer: header grew", w->path);
    } else if (fflush(w->f) != 0 || fseeko(w->f, 0, SEEK_SET) != 0 ||
               fwrite(hdr, 1, hl, w->f) != hl || fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        st = sl_set_error(SL_ERR_IO, "%s: finishing: %s", w->tmp, strerror(errno));
    }
    if (fclose(w->f) != 0 && st == SL_OK)
        st = sl_set_error(SL_ERR_IO, "%s: close: %s", w->tmp, strerror(errno));
    w->f = NULL;
    if (st == SL_OK && rename(w->tmp, w->path) != 0)
        st = sl_set_error(SL_ERR_IO, "%s: rename to %s: %s", w->tmp, w->path, strerror(errno));
    if (st == SL_OK) st = sl_fsync_parent_dir(w->path);
    if (st != SL_OK) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
    return st;
}

void sl_npy_writer_abort(sl_npy_writer *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp);
    }
    free(w->path);
    free(w->tmp);
    free(w);
}
