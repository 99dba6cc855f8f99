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

/* Defaults for sl_ground_box, chosen on the demo corpus's validation
 * scenes (Noto style) with the embedded model's value-path patch tokens at
 * region size 128 and --contrast, among upsampling 1, 2, 3, 4, 8 and rel
 * 0.65-0.8: upsampling 1 gave 53.8% at rel 0.75 (accuracy at IoU >= 0.5),
 * 2 gave 56.1 / 57.4 / 56.7 / 55.1% at rel 0.7 / 0.725 / 0.75 / 0.775, 4
 * 56.6% and 8 55.9% at 0.75 (differences of a point are 6 phrases). */
#define SL_GROUND_REL_DEFAULT      0.75f
#define SL_GROUND_UPSAMPLE_DEFAULT 2
#define SL_GROUND_UPSAMPLE_MAX     16

/* Localise a phrase from its similarity map sim [gh * gw] (row-major patch
 * grid over the model input, `cell` model-input pixels per grid cell: the
 * patch side, or image_size / grid for a finer region grid): upsample the
 * map bilinearly by `up` (1 to SL_GROUND_UPSAMPLE_MAX; 1 leaves it; sample
 * centres at (i + 0.5) / up - 0.5 cells, edges clamped), take its peak,
 * keep the cells whose value is at least min + rel * (max - min) (rel in
 * [0, 1]; SL_GROUND_REL_DEFAULT), take the 4-connected component of kept
 * cells around the peak, and map its bounding box back to the picture
 * through `map` (sl_image_preprocess / sl_image_crop_map), clipped to width
 * x height. *score receives the largest value of sim (before upsampling). */
sl_status sl_ground_box(const float *sim, int gh, int gw, float cell, float rel, int up,
                        const sl_crop_map *map, int width, int height, sl_box *box, float *score);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_GROUNDING_H */
