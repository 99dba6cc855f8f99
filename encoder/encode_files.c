/*
 * encoder/encode_files.c - embed a list of image files in batches: parallel
 * decode + preprocess, one forward pass per batch, results in input order.
 */
#include "sightline/encode_files.h"

#include "sightline/image.h"

#include <stdlib.h>
#include <string.h>

#define REASON_LEN 512 /* bytes kept of each failure message */

sl_status sl_encode_image_files(sl_encoder *enc, const char *const *paths, size_t n,
                                const sl_image_files_opts *opts, sl_image_batch_fn fn, void *ctx) {
    if (!enc || (n && !paths) || !fn)
        return sl_set_error(SL_ERR_INVALID, "sl_encode_image_files: NULL argument");
    sl_image_files_opts o = opts ? *opts : (sl_image_files_opts){.normalize = 1};
    const size_t batch = o.batch ? o.batch : 32;
    const sl_clip_config *cfg = sl_encoder_config(enc);
    const size_t S = (size_t)cfg->image_size, D = (size_t)cfg->embed_dim;
    const size_t P = (size_t)sl_encoder_num_patches(enc);
    const size_t img_floats = 3 * S * S;
    size_t pix_bytes, patch_bytes = 0;
    if (batch > 65536 || sl_mul_size(batch, img_floats * sizeof(float), &pix_bytes) ||
        (o.patches && sl_mul_size(batch, P * D * sizeof(float), &patch_bytes)))
        return sl_set_error(SL_ERR_LIMIT, "encode: batch of %zu images is too large", batch);
    float *pix = malloc(pix_bytes);                        /* [batch, 3, S, S] */
    float *emb = malloc(batch * D * sizeof(float));        /* [batch, D] */
    float *patch = o.patches ? malloc(patch_bytes) : NULL; /* [batch, P, D] */
    sl_status *stv = malloc(batch * sizeof *stv);          /* per image of the batch */
    char(*msg)[REASON_LEN] = malloc(batch * sizeof *msg);  /* failure messages */
    const char **reason = malloc(batch * sizeof *reason);  /* into msg, NULL when good */
    sl_status st = SL_OK;
    if (!pix || !emb || (o.patches && !patch) || !stv || !msg || !reason) {
        st = sl_set_error(SL_ERR_NOMEM, "encode: cannot allocate a batch of %zu images", batch);
        goto cleanup;
    }
    sl_preprocess pp = sl_preprocess_clip(cfg->image_size);
    memcpy(pp.mean, cfg->image_mean, sizeof pp.mean);
    memcpy(pp.std, cfg->image_std, sizeof pp.std);
    sl_decode_opts dopt = {.max_pixels = o.max_pixels, .min_short_side = cfg->image_size};
    for (size_t b0 = 0; b0 < n && st == SL_OK; b0 += batch) {
        size_t nb = n - b0 < batch ? n - b0 : batch;
        /* decode and preprocess in parallel; failures are kept per image */
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < nb; i++) {
            sl_image img;
            stv[i] = sl_image_load(paths[b0 + i], &dopt, &img);
            if (stv[i] == SL_OK) {
                stv[i] = sl_image_preprocess(&img, &pp, pix + i * img_floats, NULL);
                sl_image_free(&img);
            }
            if (stv[i] != SL_OK) snprintf(msg[i], sizeof msg[i], "%s", sl_last_error());
        }
        /* compact the good rows to the front, in order */
        size_t good = 0;
        for (size_t i = 0; i < nb; i++) {
            reason[i] = stv[i] == SL_OK ? NULL : msg[i];
            if (stv[i] != SL_OK) continue;
            if (good != i)
                memmove(pix + good * img_floats, pix + i * img_floats, img_floats * sizeof(float));
            good++;
        }
        if (good) st = sl_encoder_encode_images(enc, pix, good, emb, patch, o.normalize);
        if (st == SL_OK) st = fn(ctx, b0, nb, stv, reason, emb, patch, good);
        sl_progress_add(o.progress, nb);
    }
cleanup:
    free(pix);
    free(emb);
    free(patch);
    free(stv);
    free(msg);
    free(reason);
    return st;
}
