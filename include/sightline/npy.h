/*
 * sightline/npy.h - NumPy .npy arrays (format 1.0/2.0/3.0, C order,
 * little-endian), the interchange format for embeddings, pixels and tokens.
 *
 * File layout: "\x93NUMPY", major, minor, header length (u16 for 1.0,
 * u32 for 2.0/3.0), an ASCII dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }
 * padded with spaces and a final '\n' so the data starts on a 64-byte
 * boundary, then the raw data in C order.
 */
#ifndef SIGHTLINE_NPY_H
#define SIGHTLINE_NPY_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_NPY_MAX_DIMS 8

typedef enum sl_npy_dtype {
    SL_NPY_F32, /* '<f4' */
    SL_NPY_F16, /* '<f2' */
    SL_NPY_I32, /* '<i4' */
    SL_NPY_I64, /* '<i8' */
    SL_NPY_U8   /* '|u1' */
} sl_npy_dtype;

/* Bytes per element of a dtype. */
size_t sl_npy_dtype_size(sl_npy_dtype dt);

/* An array held in memory. */
typedef struct sl_npy {
    sl_npy_dtype dtype;            /* element type */
    int ndim;                      /* number of dimensions, 0..SL_NPY_MAX_DIMS */
    size_t shape[SL_NPY_MAX_DIMS]; /* extent of each dimension */
    size_t count;                  /* product of shape (1 for ndim 0) */
    void *data;                    /* count elements, C order; owned */
} sl_npy;

/* Write an array atomically (temp file, fsync, rename). */
sl_status sl_npy_write(const char *path, sl_npy_dtype dtype, int ndim, const size_t *shape,
                       const void *data);

/* Read an array. The header is bounded (64 KiB), the shape's product is
 * overflow-checked and must match the data size exactly; errors name the
 * file and the rule broken. On success out->data is malloc'ed: release
 * with sl_npy_free. */
sl_status sl_npy_read(const char *path, sl_npy *out);

/* Free out->data and zero the struct. NULL-safe. */
void sl_npy_free(sl_npy *arr);

/* Streaming writer for arrays whose first dimension grows as rows arrive
 * (rows that fail are left out). Rows go to "<path>.tmp.<pid>"; close
 * rewrites the header with the final row count and renames into place. */
typedef struct sl_npy_writer sl_npy_writer;

/* `row_shape` gives the dimensions after the first (ndim_row of them). */
sl_status sl_npy_writer_open(const char *path, sl_npy_dtype dtype, int ndim_row,
                             const size_t *row_shape, sl_npy_writer **out);

/* Append `nrows` rows (each prod(row_shape) elements). */
sl_status sl_npy_writer_append(sl_npy_writer *w, const void *rows, size_t nrows);

/* Rows written so far. */
size_t sl_npy_writer_rows(const sl_npy_writer *w);

/* Finish: fix the header, fsync, rename. Frees `w` in every case. */
sl_status sl_npy_writer_close(sl_npy_writer *w);

/* Abandon: remove the temp file and free `w`. NULL-safe. */
void sl_npy_writer_abort(sl_npy_writer *w);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_NPY_H */
