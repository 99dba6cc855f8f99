/*
 * sightline/image.h - image decoding (JPEG via TurboJPEG, PNG via libpng,
 * WebP via libwebp; format sniffed from the bytes) and CLIP preprocessing.
 *
 * Decoding yields 8-bit RGB. Grayscale is expanded, 16-bit samples keep
 * their high byte, palettes are expanded, CMYK converted (Adobe-inverted
 * samples when the JPEG has an Adobe APP14 marker, plain otherwise), alpha
 * composited on white as round((c * a + 255 * (255 - a)) / 255), the JPEG
 * EXIF orientation (APP1 IFD0 tag 0x0112, values 1-8) applied; EXIF in PNG
 * and WebP is ignored. The pixel count declared in the header is checked
 * against a cap before any pixel memory is allocated. JPEGs are decoded with
 * DCT scaling at the smallest scale whose short side is still >= the
 * requested size. A JPEG that libjpeg warns about (premature end, corrupt
 * entropy data) is an error; only warnings that leave the pixels intact
 * (extraneous bytes before a marker, ...) are tolerated.
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

/* Whether a file is an input to try: its first bytes sniff as an image, or
 * its name ends in .jpg/.jpeg/.png/.webp (any case; such a file that is not
 * an image is reported as failing rather than passed over). An unreadable
 * file counts as a candidate, so its read reports why. */
int sl_image_is_candidate(const char *path);

typedef struct sl_decode_opts {
    uint64_t max_pixels; /* refuse images declaring more (0 = default 100 Mpx) */
    int min_short_side;  /* JPEG DCT scaling keeps the short side >= this (0 = full size) */
} sl_decode_opts;

/* A decoded image. */
typedef struct sl_image {
    int width, height;      /* of rgb, after scaling and orientation */
    int orig_width;         /* of the picture as displayed (after EXIF */
    int orig_height;        /* orientation, before DCT scaling) */
    uint8_t *rgb;           /* width*height*3 bytes, row-major; owned */
    sl_image_format format; /* what the bytes were */
} sl_image;

/* Decode bytes; `name` (a path or URL; NULL reads "<memory>") is used in
 * error messages. On success out->rgb is malloc'ed (free with
 * sl_image_free); on failure *out is zeroed. Errors: SL_ERR_FORMAT (empty,
 * unknown signature, corrupt or truncated), SL_ERR_LIMIT (declared size
 * over max_pixels; the message names the file and the declared WxH),
 * SL_ERR_UNSUPPORTED (animated WebP), SL_ERR_NOMEM. Thread-safe. */
sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_decode_opts *opts, sl_image *out);

/* Read a file (at most 512 MiB) and decode it; errors name the path. */
sl_status sl_image_load(const char *path, const sl_decode_opts *opts, sl_image *out);

/* Width and height from the header alone (no pixel decoding, no cap
 * check): for a JPEG the displayed size, after EXIF orientation. */
sl_status sl_image_probe(const void *data, size_t len, const char *name, sl_image_format *fmt,
                         int *width, int *height);

void sl_image_free(sl_image *img);

/* How an image becomes model input. */
typedef struct sl_preprocess {
    int size;      /* output is size x size */
    float mean[3]; /* per-channel mean after scaling to [0,1] */
    float std[3];  /* per-channel std */
    int crop;      /* 1: bicubic-resize the short side to size, center crop (CLIP);
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
 * (accounting for DCT scaling via img->orig_width/height; 0 there means
 * width/height). Bicubic filtering with antialiasing when shrinking,
 * bit-identical to PIL's Image.resize(BICUBIC) on 8-bit RGB (fixed-point
 * weights, 8-bit rounding between the horizontal and vertical pass). With
 * crop: the short side becomes size, the long side int(size * long /
 * short) (torchvision Resize), then the crop starts at round((len - size) /
 * 2) with Python's round-half-to-even (torchvision CenterCrop). Errors:
 * SL_ERR_INVALID (no pixels, size outside 1..8192, zero/non-finite std),
 * SL_ERR_LIMIT (aspect ratio too extreme), SL_ERR_NOMEM. */
sl_status sl_image_preprocess(const sl_image *img, const sl_preprocess *pp, float *out,
                              sl_crop_map *map);

/* The crop map of a picture of width x height (as displayed, full size)
 * under `pp`, without decoding it: for boxes on images known only by their
 * size. Equals the map sl_image_preprocess gives for a full-size decode. */
sl_status sl_image_crop_map(int width, int height, const sl_preprocess *pp, sl_crop_map *map);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_IMAGE_H */
