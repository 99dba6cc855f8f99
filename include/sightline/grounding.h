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

/* Default relative threshold for sl_ground_box. Chosen on the demo
 * corpus's validation scenes (Noto style) with the embedded model's
 * value-path patch tokens at region size 128: rel 0.6 / 0.65 / 0.7 / 0.75 /
 * 0.8 gave 43.0 / 45.9 / 49.2 / 50.3 / 45.9% accuracy at IoU >= 0.5. */
#define SL_GROUND_REL_DEFAULT 0.75f

/* Localise a phrase from its similarity map sim [gh * gw] (row-major patch
 * grid over the model input, `cell` model-input pixels per grid cell: the
 * patch side, or image_size / grid for a finer region grid): take the peak cell,
 * keep the cells whose similarity is at least min + rel * (max - min) of the
 * map (rel in [0, 1]; SL_GROUND_REL_DEFAULT), take the 4-connected
 * component of kept cells around the peak, and map its bounding box back to
 * the picture through `map` (sl_image_preprocess / sl_image_crop_map),
 * clipped to width x height. *score receives the peak similarity. */
sl_status sl_ground_box(const float *sim, int gh, int gw, float cell, float rel,
                        const sl_crop_map *map, int width, int height, sl_box *box, float *score);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_GROUNDING_H */
