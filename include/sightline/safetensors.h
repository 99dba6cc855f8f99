/*
 * sightline/safetensors.h - strict reader and atomic writer of safetensors
 * files, the weight format of every model sightline opens or writes.
 *
 * File layout: u64 little-endian N; N bytes of UTF-8 JSON header mapping
 * tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data section), plus an optional "__metadata__" object of
 * string -> string; then the data section. Tensors are row-major,
 * little-endian.
 *
 * The reader refuses (each message names the file, the tensor and the rule):
 * a header length over 100 MB (SL_ERR_LIMIT) or past the end of the file; a
 * header that does not start with '{', is not UTF-8 JSON or not an object;
 * duplicate names; an entry that is not exactly {dtype, shape, data_offsets};
 * an unknown dtype (a dtype the format defines but sightline does not handle,
 * such as the F8 variants, is SL_ERR_UNSUPPORTED); a shape that is not an
 * array of non-negative integers or has more than SL_ST_MAX_DIMS dims
 * (SL_ERR_UNSUPPORTED); a shape whose element count overflows (SL_ERR_LIMIT);
 * end - begin != count * dtype size; offsets outside the data section,
 * overlapping, or leaving holes (sorted by begin, the ranges must tile the
 * data section from 0 with no gap; a zero-size tensor has begin == end and
 * sits on a boundary between ranges); a data section not fully covered; a
 * "__metadata__" that is not an object of string -> string. Other format
 * violations are SL_ERR_FORMAT. Zero tensors is a valid file.
 */
#ifndef SIGHTLINE_SAFETENSORS_H
#define SIGHTLINE_SAFETENSORS_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_ST_MAX_DIMS 8

typedef enum sl_dtype {
    SL_DT_F32,
    SL_DT_F16,
    SL_DT_BF16,
    SL_DT_F64,
    SL_DT_I64,
    SL_DT_I32,
    SL_DT_I16,
    SL_DT_I8,
    SL_DT_U8,
    SL_DT_BOOL
} sl_dtype;

/* Bytes per element; the safetensors name ("F32", "BF16", ...). */
size_t sl_dtype_size(sl_dtype dt);
const char *sl_dtype_name(sl_dtype dt);

/* One tensor of an open file. Pointers live as long as the file handle. */
typedef struct sl_tensor_info {
    const char *name;              /* tensor name, NUL-terminated */
    sl_dtype dtype;                /* element type */
    int ndim;                      /* 0..SL_ST_MAX_DIMS */
    int64_t shape[SL_ST_MAX_DIMS]; /* extents */
    size_t count;                  /* product of shape (1 for a scalar) */
    size_t nbytes;                 /* count * dtype size */
    const void *data;              /* into the mapped file (read-only) */
} sl_tensor_info;

typedef struct sl_safetensors sl_safetensors;

/* Map `path` read-only and validate it completely. A missing file is
 * SL_ERR_NOT_FOUND, other open/map failures SL_ERR_IO. The mapping is
 * private and read-only: the file must not be truncated while it is open. */
sl_status sl_safetensors_open(const char *path, sl_safetensors **out);

/* Validate a file image held in memory (`name` is used in messages). The
 * buffer must outlive the handle; it is not copied. For fuzzing and tests. */
sl_status sl_safetensors_open_memory(const void *data, size_t len, const char *name,
                                     sl_safetensors **out);

/* Unmap and free. NULL-safe. */
void sl_safetensors_free(sl_safetensors *st);

/* Tensors in file order (ascending data offset). */
size_t sl_safetensors_count(const sl_safetensors *st);
const sl_tensor_info *sl_safetensors_at(const sl_safetensors *st, size_t i);

/* Look a tensor up by name; NULL when absent (no error set). */
const sl_tensor_info *sl_safetensors_find(const sl_safetensors *st, const char *name);

/* Value of a "__metadata__" key; NULL when absent. */
const char *sl_safetensors_metadata(const sl_safetensors *st, const char *key);

/* Convert the t->count elements of an F32, F16 or BF16 tensor to float32 in
 * `dst` (caller-allocated, t->count floats). t->data need not be aligned.
 * F16 converts exactly (subnormals, infinities, NaN). Other dtypes:
 * SL_ERR_UNSUPPORTED naming the tensor. */
sl_status sl_tensor_to_f32(const sl_tensor_info *t, float *dst);

/* A tensor to write: name, dtype, shape and data (host memory). */
typedef struct sl_tensor_desc {
    const char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_ST_MAX_DIMS];
    const void *data; /* count * dtype size bytes */
} sl_tensor_desc;

/* Write tensors (contiguous, in the given order; the header is compact JSON,
 * keys in the given order after "__metadata__", padded with spaces so the
 * data section starts 8-byte aligned) and optional metadata pairs
 * (meta_kv[2i] = key, meta_kv[2i+1] = value) atomically: streamed to
 * "<path>.tmp.<pid>", fsync, rename, fsync of the directory; on failure
 * `path` is untouched. SL_ERR_INVALID for an unknown dtype, ndim outside
 * 0..SL_ST_MAX_DIMS, a negative extent, an empty, duplicate, non-UTF-8 or
 * "__metadata__" name, NULL data for a non-empty tensor, duplicate or
 * non-UTF-8 metadata; SL_ERR_LIMIT when sizes overflow or the header would
 * exceed 100 MB; SL_ERR_IO when writing fails. */
sl_status sl_safetensors_write(const char *path, const sl_tensor_desc *tensors, size_t n,
                               const char *const *meta_kv, size_t n_meta);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_SAFETENSORS_H */
