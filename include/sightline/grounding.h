/*
 * sightline/grounding.h - boxes, and phrase-to-region localisation from a
 * phrase's similarity map over an image's patch tokens.
 *
 * Coordinates are pixels of the picture as displayed, 0-based, with x1/y1
 * exclusive: a box covering the first pixel is [0, 0, 1, 1]. Readers of
 * formats with other conventions (VOC's 1-based inclusive corners, COCO's
 * [x, y, w, h]) convert on reading.
 */
#ifndef SIGHTLINE_GROUNDING_H
#define SIGHTLINE_GROUNDING_H

#include "sightline/common.h"
#include "sightline/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_box {
    float x0, y0, x1, y1;
} sl_box;

/* Intersection over union; 0 when either box is empty or they are apart. */
double sl_box_iou(sl_box a, sl_box b);

/* Smallest box holding both. */
sl_box sl_box_union(sl_box a, sl_box b);

/* Where sl_ground_box's threshold starts: the map's mean or its minimum. */
typedef enum sl_ground_from { SL_GROUND_FROM_MEAN = 0, SL_GROUND_FROM_MIN = 1 } sl_ground_from;

/* How sl_ground_box turns a similarity map into a box (see there). */
typedef struct sl_ground_opts {
    float rel;           /* threshold: base + rel * (max - base), rel in [0, 1] */
    sl_ground_from from; /* base: the map's mean or its minimum */
    int upsample;        /* bilinear upsampling factor, 1 to SL_GROUND_UPSAMPLE_MAX */
} sl_ground_opts;

/* The defaults, chosen on the demo corpus's validation scenes (Noto style)
 * with the embedded model's value-path patch tokens at region size 128 and
 * `eval grounding --contrast`; accuracy at IoU >= 0.5, 610 phrases (a point
 * is 6 phrases). With the largest rival map at weight 1 (`--contrast-pool
 * max --contrast-weight 1`), from the minimum at rel 0.75 on the patch grid: 53.8%;
 * upsampled 2 / 4 / 8 times: 56.7 / 56.6 / 55.9% (2 at rel 0.7 / 0.725 /
 * 0.775: 56.1 / 57.4 / 55.1%). With the rivals' mean map at weight 0.75
 * (the --contrast default), from the mean, upsampled twice, at rel 0.3 /
 * 0.35 / 0.4 / 0.45 / 0.5: 69.8 / 72.3 / 75.4 / 74.4 / 73.6% (on the patch
 * grid at rel 0.4: 71.5%; from the median as from the mean). The mean is
 * the better base because a contrasted map's minimum sits on a rival
 * object, far below the rest of the map. */
#define SL_GROUND_REL_DEFAULT      0.4f
#define SL_GROUND_FROM_DEFAULT     SL_GROUND_FROM_MEAN
#define SL_GROUND_UPSAMPLE_DEFAULT 2
#define SL_GROUND_UPSAMPLE_MAX     16

/* The defaults above. */
sl_ground_opts sl_ground_opts_default(void);

/* SL_OK when *o is usable (rel in [0, 1], a known base, upsample 1 to
 * SL_GROUND_UPSAMPLE_MAX), else SL_ERR_INVALID naming the bad field. */
sl_status sl_ground_opts_check(const sl_ground_opts *o);

/* A phrase's similarity map: sim [P] = patches [P, D] . phrase [D] (each
 * patch row dotted with the phrase embedding, in order, in float). */
void sl_ground_sim_map(const float *patches, size_t P, size_t D, const float *phrase, float *sim);

/* Localise a phrase from its similarity map sim [gh * gw] (row-major patch
 * grid over the model input, `cell` model-input pixels per grid cell: the
 * patch side, or image_size / grid for a finer region grid): upsample the
 * map bilinearly by o->upsample (1 leaves it; sample centres at (i + 0.5) /
 * up - 0.5 cells, edges clamped), take its peak, keep the cells whose value
 * is at least base + rel * (max - base), base the upsampled map's mean or
 * minimum, take the 4-connected component of kept cells around the peak,
 * and map its bounding box back to the picture through `map`
 * (sl_image_preprocess / sl_image_crop_map), clipped to width x height.
 * *score receives the largest value of sim (before upsampling). o NULL:
 * the defaults. */
sl_status sl_ground_box(const float *sim, int gh, int gw, float cell, const sl_ground_opts *o,
                        const sl_crop_map *map, int width, int height, sl_box *box, float *score);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_GROUNDING_H */
