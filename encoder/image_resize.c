/*
 * encoder/image_resize.c - CLIP preprocessing: bicubic resize, center crop,
 * normalisation to CHW float32, and the map back to original pixels.
 *
 * The resize reproduces PIL's Image.resize(size, BICUBIC) on 8-bit RGB (the
 * path torchvision's Resize takes for PIL images):
 *   - separable: a horizontal pass into an 8-bit intermediate, then a
 *     vertical pass; a pass is skipped when that dimension is unchanged;
 *   - cubic kernel with a = -0.5, support 2 scaled by the downscale factor
 *     (antialiasing), input positions (x - center + 0.5) / filterscale with
 *     center = (xx + 0.5) * in / out, taps [int(center - support + 0.5),
 *     int(center + support + 0.5)) clipped to the image;
 *   - weights normalised to sum 1 in double, then converted to fixed point
 *     with 22 fractional bits rounded away from zero; each pass accumulates
 *     in int32 from 2^21 (rounding), shifts right by 22 and clamps to 0..255.
 * With the same integer weights and the same intermediate rounding the
 * result is bit-identical to PIL's. Only the output pixels that survive the
 * crop are computed (the columns of the crop in the horizontal pass, the
 * source rows those crop rows need).
 *
 * ToTensor + Normalize then map v to (v / 255 - mean) / std in float32,
 * the same float operations as torch, through a 256-entry table a channel.
 */
#include "sightline/image.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RS_PRECISION_BITS 22 /* PIL's fixed-point precision for 8-bit images */
#define RS_MAX_SIZE       8192
#define RS_MAX_RESIZED    (1 << 28)

sl_preprocess sl_preprocess_clip(int size) {
    /* double literals cast to float: the same rounding as torch.tensor() of
     * the Python floats in CLIP's Normalize */
    sl_preprocess p = {.size = size,
                       .mean = {(float)0.48145466, (float)0.4578275, (float)0.40821073},
                       .std = {(float)0.26862954, (float)0.26130258, (float)0.27577711},
                       .crop = 1};
    return p;
}

/* ------------------------------------------------------------------------ */
/* Filter weights                                                           */
/* ------------------------------------------------------------------------ */

static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* Fixed-point weights of one resize axis, for outputs [first, first+count)
 * of an in_size -> out_size resize. */
typedef struct rs_axis {
    int ksize;   /* taps allocated per output */
    int *bounds; /* [count][2]: first input index, number of taps */
    int32_t *k;  /* [count][ksize] weights, sum ~ 2^22 */
    int lo, hi;  /* input range [lo, hi) the outputs touch */
} rs_axis;

static int rs_ksize(int in_size, int out_size) {
    double filterscale = (double)(float)in_size / out_size;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = 2.0 * filterscale;
    return (int)ceil(support) * 2 + 1;
}

/* Fill ax (buffers allocated by the caller for count*ksize weights);
 * `tmp` holds ksize doubles. */
static void rs_axis_build(rs_axis *ax, int in_size, int out_size, int first, int count,
                          double *tmp) {
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ss = 1.0 / filterscale;
    ax->lo = in_size;
    ax->hi = 0;
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ax->ksize) xmax = ax->ksize; /* cannot happen; keeps the bound */
        if (xmax < 0) xmax = 0;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            tmp[x] = w;
            ww += w;
        }
        int32_t *k = ax->k + (size_t)i * (size_t)ax->ksize;
        for (int x = 0; x < xmax; x++) {
            double w = ww != 0.0 ? tmp[x] / ww : tmp[x];
            k[x] = w < 0 ? (int32_t)(-0.5 + w * (1 << RS_PRECISION_BITS))
                         : (int32_t)(0.5 + w * (1 << RS_PRECISION_BITS));
        }
        for (int x = xmax; x < ax->ksize; x++) k[x] = 0;
        ax->bounds[2 * i] = xmin;
        ax->bounds[2 * i + 1] = xmax;
        if (xmax > 0) {
            if (xmin < ax->lo) ax->lo = xmin;
            if (xmin + xmax > ax->hi) ax->hi = xmin + xmax;
        }
    }
    if (ax->lo > ax->hi) ax->lo = ax->hi = 0;
}

static inline uint8_t rs_clip8(int32_t v) {
    if (v >= (1 << RS_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> RS_PRECISION_BITS);
}

/* ------------------------------------------------------------------------ */
/* Resize + crop + normalise                                                */
/* ------------------------------------------------------------------------ */

/* Python 3 round() of d / 2 (ties to even), d >= 0. */
static int round_half_even_div2(int d) {
    int q = d / 2;
    if (d % 2 && q % 2) q++;
    return q;
}

/* The resized size (rw x rh) and the crop corner of an image W x H
 * (torchvision Resize(size) + CenterCrop for crop, else a squash). */
static sl_status resize_geometry(int W, int H, const sl_preprocess *pp, int *rw, int *rh, int *left,
                                 int *top) {
    const int S = pp->size;
    *rw = S, *rh = S, *left = 0, *top = 0;
    if (pp->crop) {
        int shortside = W < H ? W : H, longside = W < H ? H : W;
        double rl = (double)S * (double)longside / (double)shortside;
        if (rl > RS_MAX_RESIZED)
            return sl_set_error(SL_ERR_LIMIT, "image preprocess: %dx%d is too elongated", W, H);
        int rlong = (int)rl;
        if (W <= H)
            *rh = rlong;
        else
            *rw = rlong;
        /* torchvision CenterCrop: int(round((h - size) / 2.0)) */
        *left = round_half_even_div2(*rw - S);
        *top = round_half_even_div2(*rh - S);
    }
    return SL_OK;
}

/* Fill `map` for a picture shown ow x oh that was resized from W x H. */
static void fill_crop_map(int ow, int oh, int rw, int rh, int left, int top, sl_crop_map *map) {
    double sx = (double)ow / rw, sy = (double)oh / rh;
    map->scale_x = (float)sx;
    map->scale_y = (float)sy;
    map->offset_x = (float)(left * sx);
    map->offset_y = (float)(top * sy);
}

sl_status sl_image_crop_map(int width, int height, const sl_preprocess *pp, sl_crop_map *map) {
    if (width <= 0 || height <= 0 || !pp || pp->size <= 0)
        return sl_set_error(SL_ERR_INVALID, "crop map: bad size %dx%d", width, height);
    int rw, rh, left, top;
    sl_status st = resize_geometry(width, height, pp, &rw, &rh, &left, &top);
    if (st == SL_OK) fill_crop_map(width, height, rw, rh, left, top, map);
    return st;
}

sl_status sl_image_preprocess(const sl_image *img, const sl_preprocess *pp, float *out,
                              sl_crop_map *map) {
    if (!img || !pp || !out || !img->rgb || img->width <= 0 || img->height <= 0)
        return sl_set_error(SL_ERR_INVALID, "image preprocess: empty image or NULL argument");
    const int S = pp->size;
    if (S <= 0 || S > RS_MAX_SIZE)
        return sl_set_error(SL_ERR_INVALID, "image preprocess: size %d outside 1..%d", S,
                            RS_MAX_SIZE);
    for (int c = 0; c < 3; c++)
        if (!(pp->std[c] != 0.0f) || !isfinite(pp->std[c]) || !isfinite(pp->mean[c]))
            return sl_set_error(SL_ERR_INVALID, "image preprocess: bad mean/std for channel %d", c);
    const int W = img->width, H = img->height;

    /* resized size (torchvision Resize(size) for crop, else squash) */
    int rw, rh, left, top;
    sl_status gst = resize_geometry(W, H, pp, &rw, &rh, &left, &top);
    if (gst) return gst;

    const int need_h = rw != W, need_v = rh != H;
    rs_axis hx = {0}, vy = {0};
    double *tmp = NULL;
    uint8_t *mid = NULL;
    int32_t *acc = NULL;
    sl_status st = SL_OK;

    hx.ksize = need_h ? rs_ksize(W, rw) : 1;
    vy.ksize = need_v ? rs_ksize(H, rh) : 1;
    size_t kmax = (size_t)(hx.ksize > vy.ksize ? hx.ksize : vy.ksize);
    hx.bounds = malloc(sizeof(int) * 2 * (size_t)S);
    vy.bounds = malloc(sizeof(int) * 2 * (size_t)S);
    hx.k = malloc(sizeof(int32_t) * (size_t)S * (size_t)hx.ksize);
    vy.k = malloc(sizeof(int32_t) * (size_t)S * (size_t)vy.ksize);
    tmp = malloc(sizeof(double) * kmax);
    acc = malloc(sizeof(int32_t) * 3 * (size_t)S);
    if (!hx.bounds || !vy.bounds || !hx.k || !vy.k || !tmp || !acc) {
        st = sl_set_error(SL_ERR_NOMEM, "image preprocess: out of memory");
        goto done;
    }

    /* source rows needed by the crop's rows */
    int row_lo, row_hi;
    if (need_v) {
        rs_axis_build(&vy, H, rh, top, S, tmp);
        row_lo = vy.lo;
        row_hi = vy.hi;
    } else {
        row_lo = top;
        row_hi = top + S;
    }
    if (need_h) rs_axis_build(&hx, W, rw, left, S, tmp);

    /* horizontal pass: rows [row_lo, row_hi) x crop columns -> mid */
    const size_t mstride = 3 * (size_t)S;
    const size_t nrows = (size_t)(row_hi - row_lo);
    mid = malloc(nrows * mstride + 1);
    if (!mid) {
        st = sl_set_error(SL_ERR_NOMEM, "image preprocess: out of memory");
        goto done;
    }
    const size_t istride = 3 * (size_t)W;
    for (int y = row_lo; y < row_hi; y++) {
        const uint8_t *src = img->rgb + (size_t)y * istride;
        uint8_t *dst = mid + (size_t)(y - row_lo) * mstride;
        if (!need_h) {
            memcpy(dst, src + 3 * (size_t)left, mstride);
            continue;
        }
        for (int x = 0; x < S; x++) {
            const int xmin = hx.bounds[2 * x], n = hx.bounds[2 * x + 1];
            const int32_t *k = hx.k + (size_t)x * (size_t)hx.ksize;
            const uint8_t *s = src + 3 * (size_t)xmin;
            int32_t s0 = 1 << (RS_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int t = 0; t < n; t++) {
                s0 += s[3 * t + 0] * k[t];
                s1 += s[3 * t + 1] * k[t];
                s2 += s[3 * t + 2] * k[t];
            }
            dst[3 * x + 0] = rs_clip8(s0);
            dst[3 * x + 1] = rs_clip8(s1);
            dst[3 * x + 2] = rs_clip8(s2);
        }
    }

    /* normalisation tables: (v / 255 - mean) / std in float32 */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];

    /* vertical pass, straight into CHW floats */
    const size_t plane = (size_t)S * (size_t)S;
    for (int y = 0; y < S; y++) {
        const uint8_t *row;
        float *o0 = out + (size_t)y * (size_t)S, *o1 = o0 + plane, *o2 = o1 + plane;
        if (!need_v) {
            row = mid + (size_t)y * mstride;
            for (int x = 0; x < S; x++) {
                o0[x] = lut[0][row[3 * x + 0]];
                o1[x] = lut[1][row[3 * x + 1]];
                o2[x] = lut[2][row[3 * x + 2]];
            }
            continue;
        }
        const int ymin = vy.bounds[2 * y], n = vy.bounds[2 * y + 1];
        const int32_t *k = vy.k + (size_t)y * (size_t)vy.ksize;
        for (size_t i = 0; i < mstride; i++) acc[i] = 1 << (RS_PRECISION_BITS - 1);
        for (int t = 0; t < n; t++) {
            const uint8_t *r = mid + (size_t)(ymin + t - row_lo) * mstride;
            const int32_t kt = k[t];
            for (size_t i = 0; i < mstride; i++) acc[i] += r[i] * kt;
        }
        for (int x = 0; x < S; x++) {
            o0[x] = lut[0][rs_clip8(acc[3 * x + 0])];
            o1[x] = lut[1][rs_clip8(acc[3 * x + 1])];
            o2[x] = lut[2][rs_clip8(acc[3 * x + 2])];
        }
    }

    if (map)
        fill_crop_map(img->orig_width > 0 ? img->orig_width : W,
                      img->orig_height > 0 ? img->orig_height : H, rw, rh, left, top, map);
done:
    free(hx.bounds);
    free(vy.bounds);
    free(hx.k);
    free(vy.k);
    free(tmp);
    free(mid);
    free(acc);
    return st;
}
