/*
 * encoder/image.c - image sniffing, probing and decoding to 8-bit RGB.
 *
 * JPEG goes through TurboJPEG (DCT scaling, CMYK, EXIF orientation), PNG
 * through libpng (setjmp/longjmp error handling, every colour type expanded
 * to RGB(A), 16-bit reduced to the high byte), WebP through libwebp. Alpha
 * is composited on white: out = round((c * a + 255 * (255 - a)) / 255).
 *
 * Every decoder reads the declared size from the header first and checks it
 * against the pixel cap before any pixel memory is allocated. Errors name
 * the file and what the decoder said; nothing here exits or prints.
 *
 * JPEG policy: libjpeg warnings ("Premature end of JPEG file", "Corrupt JPEG
 * data: bad Huffman code", ...) mean the picture is partly grey filler, so a
 * warning is an error, except the few that leave the pixels intact
 * (extraneous bytes between markers, sequential-JPEG SOS quirks, JFIF
 * revision/thumbnail oddities). TurboJPEG keeps only the first warning's
 * text, so a benign first warning hides later ones (accepted limitation).
 *
 * CMYK JPEG: with an Adobe APP14 marker (what Photoshop and PIL write) the
 * samples are stored inverted, so R = C' * K' / 255; without it they are
 * plain CMYK, R = (255 - C) * (255 - K) / 255. The product is rounded as
 * PIL's cmyk2rgb does, so PIL's own CMYK files decode identically. (PIL
 * assumes inverted samples even without the marker.)
 */
#include "sightline/image.h"

#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <turbojpeg.h>
#include <webp/decode.h>

#define IMG_DEFAULT_MAX_PIXELS 100000000ULL
#define IMG_MAX_FILE_BYTES     ((size_t)512 << 20)

/* ------------------------------------------------------------------------ */
/* Sniffing and small helpers                                               */
/* ------------------------------------------------------------------------ */

sl_image_format sl_image_sniff(const void *data, size_t len) {
    const uint8_t *p = data;
    if (!p) return SL_IMG_UNKNOWN;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return SL_IMG_JPEG;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return SL_IMG_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return SL_IMG_WEBP;
    return SL_IMG_UNKNOWN;
}

const char *sl_image_format_name(sl_image_format f) {
    switch (f) {
        case SL_IMG_JPEG:
            return "jpeg";
        case SL_IMG_PNG:
            return "png";
        case SL_IMG_WEBP:
            return "webp";
        case SL_IMG_UNKNOWN:
            break;
    }
    return "unknown";
}

static const char *img_name(const char *name) {
    return name && *name ? name : "<memory>";
}

static uint64_t img_cap(const sl_decode_opts *opts) {
    return opts && opts->max_pixels ? opts->max_pixels : IMG_DEFAULT_MAX_PIXELS;
}

/* The declared size is positive and within the cap. */
static sl_status img_check_size(const char *name, const char *what, uint64_t w, uint64_t h,
                                uint64_t cap) {
    if (w == 0 || h == 0 || w > INT_MAX || h > INT_MAX)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s header declares an invalid size %llux%llu", name,
                            what, (unsigned long long)w, (unsigned long long)h);
    if (w * h > cap)
        return sl_set_error(SL_ERR_LIMIT,
                            "%s: %s declares %llux%llu = %llu pixels, over the limit of %llu", name,
                            what, (unsigned long long)w, (unsigned long long)h,
                            (unsigned long long)(w * h), (unsigned long long)cap);
    return SL_OK;
}

/* malloc(a * b * c) with overflow checks. */
static void *img_alloc3(size_t a, size_t b, size_t c, size_t *bytes) {
    size_t n;
    if (sl_mul_size(a, b, &n) || sl_mul_size(n, c, &n)) return NULL;
    *bytes = n;
    return malloc(n ? n : 1);
}

static uint8_t img_over_white(unsigned c, unsigned a) {
    return (uint8_t)((c * a + 255u * (255u - a) + 127u) / 255u);
}

/* RGBA -> RGB in place, alpha composited on white. */
static void img_rgba_to_rgb(uint8_t *p, size_t npix) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = p + 4 * i;
        uint8_t *d = p + 3 * i;
        unsigned a = s[3];
        uint8_t r = s[0], g = s[1], b = s[2];
        if (a != 255) {
            r = img_over_white(r, a);
            g = img_over_white(g, a);
            b = img_over_white(b, a);
        }
        d[0] = r;
        d[1] = g;
        d[2] = b;
    }
}

/* Shrink an allocation from 4 to 3 bytes a pixel (keeps p on failure). */
static uint8_t *img_shrink(uint8_t *p, size_t bytes) {
    uint8_t *q = realloc(p, bytes ? bytes : 1);
    return q ? q : p;
}

/* ------------------------------------------------------------------------ */
/* EXIF orientation                                                         */
/* ------------------------------------------------------------------------ */

static unsigned rd16(const uint8_t *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Orientation tag (0x0112) of IFD0 in a TIFF block; 1 when absent/bad. */
static int exif_orientation(const uint8_t *t, size_t n) {
    if (n < 8) return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t off = rd32(t + 4, le);
    if (off > n || n - off < 2) return 1;
    size_t count = rd16(t + off, le);
    size_t room = (n - off - 2) / 12;
    if (count > room) count = room;
    const uint8_t *e = t + off + 2;
    for (size_t i = 0; i < count; i++, e += 12) {
        if (rd16(e, le) != 0x0112) continue;
        unsigned type = rd16(e + 2, le);
        uint32_t v;
        if (rd32(e + 4, le) < 1) return 1;
        if (type == 3) /* SHORT */
            v = rd16(e + 8, le);
        else if (type == 4) /* LONG, seen in some writers */
            v = rd32(e + 8, le);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

typedef struct jpeg_meta {
    int orientation; /* EXIF orientation 1..8 (1 when none) */
    int adobe;       /* an Adobe APP14 marker was seen */
} jpeg_meta;

/* Walk the marker segments before the first SOS (bounds-checked; stops
 * quietly at anything odd, leaving corrupt data to the decoder). */
static void jpeg_scan_markers(const uint8_t *d, size_t n, jpeg_meta *m) {
    int have_exif = 0;
    m->orientation = 1;
    m->adobe = 0;
    size_t i = 2;
    while (n - i >= 2) {
        if (d[i] != 0xFF) return;
        unsigned mk = d[i + 1];
        if (mk == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        i += 2;
        if (mk == 0x01 || (mk >= 0xD0 && mk <= 0xD8)) continue; /* no length */
        if (mk == 0xD9 || mk == 0xDA) return;
        if (n - i < 2) return;
        size_t seglen = (size_t)d[i] << 8 | d[i + 1];
        if (seglen < 2 || seglen > n - i) return;
        const uint8_t *s = d + i + 2;
        size_t sn = seglen - 2;
        if (mk == 0xE1 && !have_exif && sn >= 6 && memcmp(s, "Exif\0\0", 6) == 0) {
            have_exif = 1;
            m->orientation = exif_orientation(s + 6, sn - 6);
        } else if (mk == 0xEE && sn >= 12 && memcmp(s, "Adobe", 5) == 0) {
            m->adobe = 1;
        }
        i += seglen;
    }
}

/* Apply an EXIF orientation: dst (dims swapped for 5..8) from src (w x h).
 * Output pixel (x, y) reads source pixel base + x*dx + y*dy. */
static void orient_rgb(const uint8_t *src, int w, int h, int o, uint8_t *dst) {
    ptrdiff_t W = w, H = h, base = 0, dx = 1, dy = W;
    int ow = w, oh = h;
    switch (o) {
        case 2:
            base = W - 1, dx = -1, dy = W;
            break;
        case 3:
            base = (H - 1) * W + W - 1, dx = -1, dy = -W;
            break;
        case 4:
            base = (H - 1) * W, dx = 1, dy = -W;
            break;
        case 5:
            base = 0, dx = W, dy = 1;
            break;
        case 6:
            base = (H - 1) * W, dx = -W, dy = 1;
            break;
        case 7:
            base = (H - 1) * W + W - 1, dx = -W, dy = -1;
            break;
        case 8:
            base = W - 1, dx = W, dy = -1;
            break;
        default:
            break;
    }
    if (o >= 5) ow = h, oh = w;
    for (int y = 0; y < oh; y++) {
        const uint8_t *row = src + 3 * (base + (ptrdiff_t)y * dy);
        uint8_t *out = dst + (size_t)y * (size_t)ow * 3;
        for (int x = 0; x < ow; x++) {
            const uint8_t *s = row + 3 * (ptrdiff_t)x * dx;
            out[0] = s[0];
            out[1] = s[1];
            out[2] = s[2];
            out += 3;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                     */
/* ------------------------------------------------------------------------ */

/* Warnings after which the pixels are still all there. */
static int jpeg_warning_benign(const char *msg) {
    static const char *const ok[] = {"extraneous bytes before marker", "Invalid SOS parameters",
                                     "unknown JFIF revision", "thumbnail image size"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (msg && strstr(msg, ok[i])) return 1;
    return 0;
}

/* PIL's cmyk2rgb rounding of c * k / 255. */
static uint8_t cmyk_mul(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static void cmyk_to_rgb(uint8_t *p, size_t npix, int inverted) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = p + 4 * i;
        unsigned c = s[0], m = s[1], y = s[2], k = s[3];
        if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        uint8_t *d = p + 3 * i;
        d[0] = cmyk_mul(c, k);
        d[1] = cmyk_mul(m, k);
        d[2] = cmyk_mul(y, k);
    }
}

/* Header dims (as stored), orientation and Adobe flag of a JPEG. */
static sl_status jpeg_header(tjhandle tj, const uint8_t *d, size_t n, const char *name, int *w,
                             int *h, int *cs, jpeg_meta *m) {
    int subsamp = -1;
    *w = *h = 0; /* a tables-only datastream returns success without a size */
    *cs = -1;
    if (tjDecompressHeader3(tj, d, (unsigned long)n, w, h, &subsamp, cs) != 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: corrupt JPEG header: %s", name, tjGetErrorStr2(tj));
    jpeg_scan_markers(d, n, m);
    return SL_OK;
}

static sl_status decode_jpeg(const uint8_t *d, size_t n, const char *name,
                             const sl_decode_opts *opts, sl_image *out) {
    if ((uint64_t)n > ULONG_MAX) return sl_set_error(SL_ERR_LIMIT, "%s: JPEG too large", name);
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return sl_set_error(SL_ERR_NOMEM, "%s: cannot create a JPEG decoder: %s", name,
                            tjGetErrorStr2(NULL));
    uint8_t *buf = NULL, *rot = NULL;
    int w = 0, h = 0, cs = -1;
    jpeg_meta m;
    sl_status st = jpeg_header(tj, d, n, name, &w, &h, &cs, &m);
    if (st) goto done;
    st = img_check_size(name, "JPEG", (uint64_t)(w > 0 ? w : 0), (uint64_t)(h > 0 ? h : 0),
                        img_cap(opts));
    if (st) goto done;

    /* DCT scaling: the smallest factor <= 1 keeping the short side >= min */
    tjscalingfactor best = {1, 1};
    if (opts && opts->min_short_side > 0) {
        int nsf = 0;
        tjscalingfactor *sf = tjGetScalingFactors(&nsf);
        int shortside = w < h ? w : h;
        for (int i = 0; sf && i < nsf; i++) {
            if (sf[i].num > sf[i].denom) continue;
            int s = TJSCALED(shortside, sf[i]);
            if (s >= opts->min_short_side && s < TJSCALED(shortside, best)) best = sf[i];
        }
    }
    int sw = TJSCALED(w, best), sh = TJSCALED(h, best);
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    int ch = cmyk ? 4 : 3;
    size_t bytes;
    buf = img_alloc3((size_t)sw, (size_t)sh, (size_t)ch, &bytes);
    if (!buf) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %dx%d pixels", name, sw, sh);
        goto done;
    }
    if (tjDecompress2(tj, d, (unsigned long)n, buf, sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB,
                      TJFLAG_LIMITSCANS) != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (tjGetErrorCode(tj) != TJERR_WARNING || !jpeg_warning_benign(msg)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: corrupt JPEG: %s", name, msg);
            goto done;
        }
    }
    size_t npix = (size_t)sw * (size_t)sh;
    if (cmyk) {
        cmyk_to_rgb(buf, npix, m.adobe);
        buf = img_shrink(buf, npix * 3);
    }
    if (m.orientation != 1) {
        rot = malloc(npix * 3);
        if (!rot) {
            st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %dx%d pixels", name, sw, sh);
            goto done;
        }
        orient_rgb(buf, sw, sh, m.orientation, rot);
        free(buf);
        buf = rot;
        rot = NULL;
    }
    int swap = m.orientation >= 5;
    out->width = swap ? sh : sw;
    out->height = swap ? sw : sh;
    out->orig_width = swap ? h : w;
    out->orig_height = swap ? w : h;
    out->rgb = buf;
    out->format = SL_IMG_JPEG;
    buf = NULL;
done:
    free(buf);
    free(rot);
    tjDestroy(tj);
    return st;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                      */
/* ------------------------------------------------------------------------ */

/* State reachable after a longjmp: lives on the heap, not in automatic
 * variables modified between setjmp and longjmp. */
typedef struct png_ctx {
    const uint8_t *data; /* the file */
    size_t len, pos;     /* its length, the read position */
    char msg[200];       /* libpng's error message */
    uint8_t *pix;        /* decoded pixels (owned until handed out) */
    png_bytep *rows;     /* row pointers into pix */
} png_ctx;

static void png_read_cb(png_structp png, png_bytep out, size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "unexpected end of file (truncated)");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

static void png_error_cb(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* PNG header: signature + IHDR (width, height at bytes 16..23). */
static int png_header_dims(const uint8_t *d, size_t n, uint32_t *w, uint32_t *h) {
    if (n < 24 || memcmp(d + 12, "IHDR", 4) != 0) return -1;
    *w = rd32(d + 16, 0);
    *h = rd32(d + 20, 0);
    return 0;
}

static sl_status decode_png(const uint8_t *d, size_t n, const char *name,
                            const sl_decode_opts *opts, sl_image *out) {
    uint32_t hw, hh;
    if (png_header_dims(d, n, &hw, &hh))
        return sl_set_error(SL_ERR_FORMAT, "%s: corrupt PNG: no IHDR chunk", name);
    /* the cap before libpng allocates anything sized by the header */
    sl_status st = img_check_size(name, "PNG", hw, hh, img_cap(opts));
    if (st) return st;

    png_ctx *c = calloc(1, sizeof *c);
    if (!c) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", name);
    c->data = d;
    c->len = n;
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        free(c);
        return sl_set_error(SL_ERR_NOMEM, "%s: cannot create a PNG decoder", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: corrupt PNG: %s", name, c->msg);
        goto done;
    }
    png_set_read_fn(png, c, png_read_cb);
    png_set_user_limits(png, hw, hh);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if (w != hw || h != hh) png_error(png, "IHDR changed");

    png_set_expand(png); /* palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha */
    png_set_strip_16(png);
    if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    if ((ch != 3 && ch != 4) || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)w * (size_t)ch)
        png_error(png, "unexpected layout after expansion");

    size_t bytes;
    c->pix = img_alloc3(w, h, (size_t)ch, &bytes);
    c->rows = malloc((size_t)h * sizeof *c->rows);
    if (!c->pix || !c->rows) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %ux%u pixels", name, (unsigned)w,
                          (unsigned)h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pix + (size_t)y * w * (size_t)ch;
    png_read_image(png, c->rows);
    /* chunks after the image data (png_read_end) are not read */
    if (ch == 4) {
        img_rgba_to_rgb(c->pix, (size_t)w * h);
        c->pix = img_shrink(c->pix, (size_t)w * h * 3);
    }
    out->width = out->orig_width = (int)w;
    out->height = out->orig_height = (int)h;
    out->rgb = c->pix;
    out->format = SL_IMG_PNG;
    c->pix = NULL;
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(c->pix);
    free(c->rows);
    free(c);
    return st;
}

/* ------------------------------------------------------------------------ */
/* WebP                                                                     */
/* ------------------------------------------------------------------------ */

static const char *webp_status_name(VP8StatusCode s) {
    switch (s) {
        case VP8_STATUS_OK:
            return "ok";
        case VP8_STATUS_OUT_OF_MEMORY:
            return "out of memory";
        case VP8_STATUS_INVALID_PARAM:
            return "invalid parameter";
        case VP8_STATUS_BITSTREAM_ERROR:
            return "bitstream error";
        case VP8_STATUS_UNSUPPORTED_FEATURE:
            return "unsupported feature";
        case VP8_STATUS_SUSPENDED:
            return "suspended";
        case VP8_STATUS_USER_ABORT:
            return "user abort";
        case VP8_STATUS_NOT_ENOUGH_DATA:
            return "not enough data (truncated)";
    }
    return "unknown status";
}

/* Canvas size of an extended (VP8X) WebP, read directly so that the cap
 * applies even when libwebp would not get that far. */
static int webp_vp8x_dims(const uint8_t *d, size_t n, uint32_t *w, uint32_t *h) {
    if (n < 30 || memcmp(d + 12, "VP8X", 4) != 0) return -1;
    *w = 1 + ((uint32_t)d[24] | (uint32_t)d[25] << 8 | (uint32_t)d[26] << 16);
    *h = 1 + ((uint32_t)d[27] | (uint32_t)d[28] << 8 | (uint32_t)d[29] << 16);
    return 0;
}

static sl_status webp_dims(const uint8_t *d, size_t n, const char *name, uint32_t *w, uint32_t *h) {
    if (webp_vp8x_dims(d, n, w, h) == 0) return SL_OK;
    int iw, ih;
    if (!WebPGetInfo(d, n, &iw, &ih) || iw <= 0 || ih <= 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: corrupt WebP header", name);
    *w = (uint32_t)iw;
    *h = (uint32_t)ih;
    return SL_OK;
}

static sl_status decode_webp(const uint8_t *d, size_t n, const char *name,
                             const sl_decode_opts *opts, sl_image *out) {
    uint32_t vw, vh;
    if (webp_vp8x_dims(d, n, &vw, &vh) == 0) {
        sl_status st = img_check_size(name, "WebP", vw, vh, img_cap(opts));
        if (st) return st;
    }
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg))
        return sl_set_error(SL_ERR_EXTERNAL, "%s: libwebp version mismatch", name);
    VP8StatusCode vs = WebPGetFeatures(d, n, &cfg.input);
    if (vs != VP8_STATUS_OK)
        return sl_set_error(SL_ERR_FORMAT, "%s: corrupt WebP header: %s", name,
                            webp_status_name(vs));
    int w = cfg.input.width, h = cfg.input.height;
    sl_status st = img_check_size(name, "WebP", (uint64_t)(w > 0 ? w : 0),
                                  (uint64_t)(h > 0 ? h : 0), img_cap(opts));
    if (st) return st;
    if (cfg.input.has_animation)
        return sl_set_error(SL_ERR_UNSUPPORTED, "%s: animated WebP is not supported", name);
    int ch = cfg.input.has_alpha ? 4 : 3;
    size_t bytes;
    uint8_t *buf = img_alloc3((size_t)w, (size_t)h, (size_t)ch, &bytes);
    if (!buf) return sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %dx%d pixels", name, w, h);
    cfg.output.colorspace = ch == 4 ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = buf;
    cfg.output.u.RGBA.stride = w * ch;
    cfg.output.u.RGBA.size = bytes;
    vs = WebPDecode(d, n, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (vs != VP8_STATUS_OK) {
        free(buf);
        return sl_set_error(SL_ERR_FORMAT, "%s: corrupt WebP: %s", name, webp_status_name(vs));
    }
    if (ch == 4) {
        img_rgba_to_rgb(buf, (size_t)w * (size_t)h);
        buf = img_shrink(buf, (size_t)w * (size_t)h * 3);
    }
    out->width = out->orig_width = w;
    out->height = out->orig_height = h;
    out->rgb = buf;
    out->format = SL_IMG_WEBP;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                      */
/* ------------------------------------------------------------------------ */

sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_decode_opts *opts, sl_image *out) {
    name = img_name(name);
    if (!out) return sl_set_error(SL_ERR_INVALID, "%s: sl_image_decode: out is NULL", name);
    memset(out, 0, sizeof *out);
    if (!data && len) return sl_set_error(SL_ERR_INVALID, "%s: sl_image_decode: no data", name);
    if (len == 0) return sl_set_error(SL_ERR_FORMAT, "%s: empty file, not an image", name);
    switch (sl_image_sniff(data, len)) {
        case SL_IMG_JPEG:
            return decode_jpeg(data, len, name, opts, out);
        case SL_IMG_PNG:
            return decode_png(data, len, name, opts, out);
        case SL_IMG_WEBP:
            return decode_webp(data, len, name, opts, out);
        case SL_IMG_UNKNOWN:
            break;
    }
    return sl_set_error(SL_ERR_FORMAT, "%s: not a JPEG, PNG or WebP image (unknown signature)",
                        name);
}

sl_status sl_image_load(const char *path, const sl_decode_opts *opts, sl_image *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return sl_set_error(SL_ERR_INVALID, "sl_image_load: NULL argument");
    char *data = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, IMG_MAX_FILE_BYTES, &data, &len);
    if (st) return st;
    st = sl_image_decode(data, len, path, opts, out);
    free(data);
    return st;
}

sl_status sl_image_probe(const void *data, size_t len, const char *name, sl_image_format *fmt,
                         int *width, int *height) {
    name = img_name(name);
    sl_image_format f = sl_image_sniff(data, len);
    if (fmt) *fmt = f;
    uint32_t w = 0, h = 0;
    sl_status st = SL_OK;
    switch (f) {
        case SL_IMG_JPEG: {
            tjhandle tj = tjInitDecompress();
            if (!tj) return sl_set_error(SL_ERR_NOMEM, "%s: cannot create a JPEG decoder", name);
            int iw = 0, ih = 0, cs = -1;
            jpeg_meta m;
            st = (uint64_t)len > ULONG_MAX ? sl_set_error(SL_ERR_LIMIT, "%s: JPEG too large", name)
                                           : jpeg_header(tj, data, len, name, &iw, &ih, &cs, &m);
            tjDestroy(tj);
            if (st) return st;
            if (iw <= 0 || ih <= 0)
                return sl_set_error(SL_ERR_FORMAT, "%s: JPEG declares size %dx%d", name, iw, ih);
            w = (uint32_t)(m.orientation >= 5 ? ih : iw);
            h = (uint32_t)(m.orientation >= 5 ? iw : ih);
            break;
        }
        case SL_IMG_PNG:
            if (png_header_dims(data, len, &w, &h))
                return sl_set_error(SL_ERR_FORMAT, "%s: corrupt PNG: no IHDR chunk", name);
            break;
        case SL_IMG_WEBP:
            st = webp_dims(data, len, name, &w, &h);
            if (st) return st;
            break;
        case SL_IMG_UNKNOWN:
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: not a JPEG, PNG or WebP image (unknown signature)", name);
    }
    if (w == 0 || h == 0 || w > INT_MAX || h > INT_MAX)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s declares an invalid size %ux%u", name,
                            sl_image_format_name(f), (unsigned)w, (unsigned)h);
    if (width) *width = (int)w;
    if (height) *height = (int)h;
    return SL_OK;
}

void sl_image_free(sl_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

int sl_image_is_candidate(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") ||
                !strcasecmp(dot, ".webp")))
        return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return 1;
    unsigned char head[16];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return sl_image_sniff(head, n) != SL_IMG_UNKNOWN;
}
