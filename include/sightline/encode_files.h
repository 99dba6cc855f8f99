/*
 * sightline/encode_files.h - embed a list of image files: decode and
 * preprocess in parallel (OpenMP), encode in batches, hand each batch to the
 * caller in input order. The shared loop of `sightline encode --images` and
 * `sightline eval retrieval`.
 */
#ifndef SIGHTLINE_ENCODE_FILES_H
#define SIGHTLINE_ENCODE_FILES_H

#include "sightline/common.h"
#include "sightline/encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_image_files_opts {
    size_t batch;          /* images per forward pass (0 = 32) */
    uint64_t max_pixels;   /* decode cap (0 = 100 Mpx) */
    int normalize;         /* L2-normalise the global embeddings */
    int patches;           /* also compute projected patch tokens */
    sl_progress *progress; /* advanced once per image handled (may be NULL) */
} sl_image_files_opts;

/* One finished batch, called from the calling thread in input order.
 * first: index of the batch's first path; n: paths in the batch;
 * status[n]: SL_OK or why path first+i failed (reason[i] names the file and
 * the cause; NULL for good ones); emb [n_good, D]: the embeddings of the good
 * paths in order; patches [n_good, P, D] or NULL. Every pointer is borrowed
 * for the call. Return SL_OK to go on; any other status stops the run and is
 * returned (with the callback's error message). */
typedef sl_status (*sl_image_batch_fn)(void *ctx, size_t first, size_t n, const sl_status *status,
                                       const char *const *reason, const float *emb,
                                       const float *patches, size_t n_good);

/* Embed paths[0..n) with `enc`. Images that cannot be read, decoded or
 * preprocessed do not stop the run: the callback sees them as failed. An
 * encoder or memory error stops it (SL_ERR_NOMEM, the encoder's status). */
sl_status sl_encode_image_files(sl_encoder *enc, const char *const *paths, size_t n,
                                const sl_image_files_opts *opts, sl_image_batch_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_ENCODE_FILES_H */
