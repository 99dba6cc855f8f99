/*
 * sightline/image.h - image decoding (JPEG via TurboJPEG, PNG via libpng,
 * WebP via libwebp; format sniffed from the bytes) and CLIP preprocessing.
 *
 * Decoding yields 8-bit RGB. Grayscale is expanded, CMYK converted, alpha
 * composited on white, the JPEG EXIF orientation applied. The pixel count
 * declared in the header is checked against a cap before any pixel memory
 * is allocated. JPEGs are decoded with DCT scaling at the smallest scale
 * whose short side is still >= the requested size.
 */
#ifndef SIGHTLINE_IMAGE_H
#define SIGHTLINE_IMAGE_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_image_format {
    SL_IMG_UNKNOWN = 0,
    SL_IMG_JPEG,
    SL_IMG_PNG,
    SL_IMG_WEBP
} sl_image_format;

/* Format from the leading bytes (magic numbers), or SL_IMG_UNKNOWN. */
sl_image_format sl_image_sniff(const void *data, size_t len);
const char *sl_image_format_name(sl_image_format f);

typedef struct sl_decode_opts {
    uint64_t max_pixels; /* refuse images declaring more (0 = default 100 Mpx) */
    int min_short_side;  /* JPEG DCT scaling keeps the short side >= this (0 = full size) */
} sl_decode_opts;

/* A decoded image. */
typedef struct sl_image {
    int width, height;        /* of rgb, after scaling and orientation */
    int orig_width;           /* of the picture as displayed (after EXIF */
    int orig_height;          /* orientation, before DCT scaling) */
    uint8_t *rgb;             /* width*height*3 bytes, row-major; owned */
    sl_image_format format;   /* what the bytes were */
} sl_image;

/* Decode bytes; `name` (a path or URL) is used in error messages. Errors:
 * SL_ERR_FORMAT (unknown or corrupt), SL_ERR_LIMIT (over max_pixels). */
sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_decode_opts *opts, sl_image *out);

/* Read a file and decode it. */
sl_status sl_image_load(const char *path, const sl_decode_opts *opts, sl_image *out);

/* Width and height from the header alone (no pixel decoding). */
sl_status sl_image_probe(const void *data, size_t len, const char *name, sl_image_format *fmt,
                         int *width, int *height);

void sl_image_free(sl_image *img);

/* How an image becomes model input. */
typedef struct sl_preprocess {
    int size;       /* output is size x size */
    float mean[3];  /* per-channel mean after scaling to [0,1] */
    float std[3];   /* per-channel std */
    int crop;       /* 1: bicubic-resize the short side to size, center crop (CLIP);
                       0: bicubic-resize both sides to size (squash) */
} sl_preprocess;

/* CLIP's defaults for an image size. */
sl_preprocess sl_preprocess_clip(int size);

/* Where the model input sits in the original picture: original pixel x of
 * input pixel u is (u + 0.5) * scale_x + offset_x - 0.5 (likewise y); used
 * to map patch boxes back to the picture. */
typedef struct sl_crop_map {
    float scale_x, scale_y;   /* original pixels per input pixel */
    float offset_x, offset_y; /* original-pixel position of the crop's corner */
} sl_crop_map;

/* Resize, crop and normalise into out [3, size, size] (float32, CHW).
 * `map` (may be NULL) receives the mapping to original coordinates
 * (accounting for DCT scaling via img->orig_width/height). Bicubic
 * filtering with antialiasing when shrinking (as PIL's BICUBIC). */
sl_status sl_image_preprocess(const sl_image *img, const sl_preprocess *pp, float *out,
                              sl_crop_map *map);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_IMAGE_H */
