/*
 * tests/test_image.c - image decoding and CLIP preprocessing.
 *
 * Without arguments (label unit): fixtures are made here with the encoders
 * the library links (TurboJPEG, libpng, libwebp): sniffing, probing, exact
 * PNG / lossless WebP round trips, alpha on white, EXIF orientations 1-8
 * (II and MM), DCT scaling (factor choice, closeness to full decode +
 * resize), the crop map (checked on a ramp picture), hostile inputs
 * (truncated, empty, random bytes, bad CRC, 60000x60000 headers, non-image),
 * and a timing of decode + preprocess of a 640x480 JPEG.
 *
 * With `--parity SCRIPT` (label parity): SCRIPT (tests/reference/image_ref.py,
 * run with Debian's /usr/bin/python3) writes fixtures with PIL and reference
 * arrays; every decode is compared with PIL and every preprocessing with
 * the torchvision CLIP pipeline, with the tolerances below. Skips (77) only
 * when /usr/bin/python3 cannot import PIL and numpy.
 */
#include "sightline/image.h"
#include "sightline/npy.h"
#include "testutil.h"

#include <png.h>
#include <stdint.h>
#include <turbojpeg.h>
#include <webp/encode.h>

#define PY "/usr/bin/python3"

/* Parity tolerances. Decoding: PNG and lossless WebP exact; JPEG and lossy
 * WebP go through the same libjpeg-turbo / libwebp as PIL (measured exact,
 * allowed 0 as well). Preprocessing reproduces PIL's fixed-point bicubic
 * exactly; 1e-6 leaves room only for float noise (one 8-bit level is
 * 1/255/0.2613 = 0.015 in normalised units). */
#define TOL_DECODE_EXACT 0
#define TOL_DECODE_JPEG  0
#define TOL_DECODE_WEBP  0
#define TOL_PREP         1e-6

static const char *g_dir;

/* ------------------------------------------------------------------------ */
/* Fixture helpers                                                          */
/* ------------------------------------------------------------------------ */

static char *path_in(const char *name) {
    static char buf[8][1024];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 1024, "%s/%s", g_dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* A photo-like RGB picture: gradients, a disk, a grid, some texture. */
static uint8_t *make_picture(int w, int h, unsigned seed) {
    uint8_t *p = malloc((size_t)w * h * 3);
    uint32_t s = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1103515245u + 12345u;
            int noise = (int)((s >> 16) % 13) - 6;
            double r = 128 + 100 * sin(x / (w / 6.0 + 1)) * cos(y / (h / 4.0 + 1));
            double g = 255.0 * x / (w > 1 ? w - 1 : 1), b = 255.0 * y / (h > 1 ? h - 1 : 1);
            double dx = x - w * 0.6, dy = y - h * 0.4, rad = (w < h ? w : h) * 0.25;
            if (dx * dx + dy * dy < rad * rad) r = 250, g = 30, b = 40;
            if ((x / 7 + y / 5) % 9 == 0) r *= 0.5, g *= 0.5, b *= 0.5;
            double v[3] = {r + noise, g + noise, b + noise};
            for (int c = 0; c < 3; c++)
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)(v[c] < 0     ? 0
                                                           : v[c] > 255 ? 255
                                                                        : lround(v[c]));
        }
    return p;
}

static unsigned char *jpeg_encode(const uint8_t *rgb, int w, int h, int pf, int q, int subsamp,
                                  unsigned long *len) {
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    *len = 0;
    if (tjCompress2(tj, rgb, w, 0, h, pf, &out, len, subsamp, q, 0) != 0) {
        fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
        exit(2);
    }
    tjDestroy(tj);
    return out;
}

/* Insert an APP1 Exif segment holding only the orientation after SOI. */
static uint8_t *jpeg_with_orientation(const unsigned char *jpg, size_t len, int orient, int le,
                                      size_t *outlen) {
    uint8_t tiff[26];
    size_t t = 0;
#define P16(v)                                                                                     \
    (le ? (tiff[t++] = (v)&0xff, tiff[t++] = ((v) >> 8) & 0xff)                                    \
        : (tiff[t++] = ((v) >> 8) & 0xff, tiff[t++] = (v)&0xff))
#define P32(v)                                                                                     \
    (le ? (P16((v)&0xffff), P16(((v) >> 16) & 0xffff))                                             \
        : (P16(((v) >> 16) & 0xffff), P16((v)&0xffff)))
    tiff[t++] = le ? 'I' : 'M';
    tiff[t++] = le ? 'I' : 'M';
    P16(42);
    P32(8);
    P16(1);      /* one entry */
    P16(0x0112); /* orientation */
    P16(3);      /* SHORT */
    P32(1);
    P16(orient);
    P16(0);
    P32(0); /* no next IFD */
#undef P16
#undef P32
    size_t seg = 2 + 6 + t;
    uint8_t *out = malloc(len + 2 + seg);
    size_t o = 0;
    out[o++] = 0xFF, out[o++] = 0xD8, out[o++] = 0xFF, out[o++] = 0xE1;
    out[o++] = (uint8_t)(seg >> 8), out[o++] = (uint8_t)seg;
    memcpy(out + o, "Exif\0\0", 6), o += 6;
    memcpy(out + o, tiff, t), o += t;
    memcpy(out + o, jpg + 2, len - 2), o += len - 2;
    *outlen = o;
    return out;
}

typedef struct memsink {
    uint8_t *p;
    size_t n, cap;
} memsink;

static void png_sink(png_structp png, png_bytep d, size_t n) {
    memsink *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}

static void png_flush_cb(png_structp png) {
    (void)png;
}

/* A PNG of an 8-bit RGB or RGBA buffer. */
static uint8_t *png_encode(const uint8_t *pix, int w, int h, int ch, size_t *len) {
    memsink m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) exit(2);
    png_set_write_fn(png, &m, png_sink, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 ch == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, pix + (size_t)y * w * ch);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *len = m.n;
    return m.p;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static int max_abs_diff_u8(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

/* Reference orientation, written per case from the EXIF definitions
 * (independent of the library's stride formulation). */
static void ref_orient(const uint8_t *s, int w, int h, int o, uint8_t *d) {
    int ow = o >= 5 ? h : w;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int X, Y;
            switch (o) {
                case 2:
                    X = w - 1 - x, Y = y;
                    break;
                case 3:
                    X = w - 1 - x, Y = h - 1 - y;
                    break;
                case 4:
                    X = x, Y = h - 1 - y;
                    break;
                case 5:
                    X = y, Y = x;
                    break; /* transpose */
                case 6:
                    X = h - 1 - y, Y = x;
                    break; /* 90 clockwise */
                case 7:
                    X = h - 1 - y, Y = w - 1 - x;
                    break; /* transverse */
                case 8:
                    X = y, Y = w - 1 - x;
                    break; /* 90 counter-clockwise */
                default:
                    X = x, Y = y;
                    break;
            }
            memcpy(d + ((size_t)Y * ow + X) * 3, s + ((size_t)y * w + x) * 3, 3);
        }
}

/* ------------------------------------------------------------------------ */
/* Unit tests                                                               */
/* ------------------------------------------------------------------------ */

static void test_sniff(void) {
    CHECK(sl_image_sniff("\xFF\xD8\xFF\xE0", 4) == SL_IMG_JPEG);
    CHECK(sl_image_sniff("\xFF\xD8", 2) == SL_IMG_UNKNOWN);
    CHECK(sl_image_sniff("\x89PNG\r\n\x1a\n\0\0", 10) == SL_IMG_PNG);
    CHECK(sl_image_sniff("\x89PNG\r\n\x1a", 7) == SL_IMG_UNKNOWN);
    CHECK(sl_image_sniff("RIFF\x10\0\0\0WEBPVP8 ", 16) == SL_IMG_WEBP);
    CHECK(sl_image_sniff("RIFF\x10\0\0\0WAVEfmt ", 16) == SL_IMG_UNKNOWN);
    CHECK(sl_image_sniff("GIF89a......", 12) == SL_IMG_UNKNOWN);
    CHECK(sl_image_sniff("", 0) == SL_IMG_UNKNOWN);
    CHECK(sl_image_sniff(NULL, 0) == SL_IMG_UNKNOWN);
    CHECK(strcmp(sl_image_format_name(SL_IMG_JPEG), "jpeg") == 0);
    CHECK(strcmp(sl_image_format_name(SL_IMG_PNG), "png") == 0);
    CHECK(strcmp(sl_image_format_name(SL_IMG_WEBP), "webp") == 0);
    CHECK(strcmp(sl_image_format_name(SL_IMG_UNKNOWN), "unknown") == 0);
}

static void test_png_webp_exact(void) {
    const int w = 37, h = 23;
    uint8_t *rgb = make_picture(w, h, 1);
    uint8_t *rgba = malloc((size_t)w * h * 4), *want = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) {
        unsigned a = (unsigned)(i * 7 % 256);
        if (i % 5 == 0) a = 0;
        if (i % 5 == 1) a = 255;
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)a;
        for (int c = 0; c < 3; c++) /* round((c*a + 255*(255-a)) / 255) */
            want[3 * i + c] =
                (uint8_t)floor((rgb[3 * i + c] * a + 255.0 * (255 - a)) / 255.0 + 0.5);
    }
    size_t n;
    sl_image img;
    uint8_t *png = png_encode(rgb, w, h, 3, &n);
    CHECK_OK(sl_image_decode(png, n, "rgb.png", NULL, &img));
    CHECK(img.format == SL_IMG_PNG && img.width == w && img.height == h && img.orig_width == w &&
          img.orig_height == h);
    CHECK(img.rgb && memcmp(img.rgb, rgb, (size_t)w * h * 3) == 0);
    sl_image_free(&img);
    CHECK(img.rgb == NULL);
    sl_image_format f;
    int pw = 0, ph = 0;
    CHECK_OK(sl_image_probe(png, n, "rgb.png", &f, &pw, &ph));
    CHECK(f == SL_IMG_PNG && pw == w && ph == h);
    free(png);

    png = png_encode(rgba, w, h, 4, &n);
    CHECK_OK(sl_image_decode(png, n, "rgba.png", NULL, &img));
    CHECK(img.rgb && memcmp(img.rgb, want, (size_t)w * h * 3) == 0);
    sl_image_free(&img);
    free(png);

    uint8_t *wp = NULL;
    n = WebPEncodeLosslessRGBA(rgba, w, h, w * 4, &wp);
    CHECK(n > 0);
    CHECK_OK(sl_image_decode(wp, n, "a.webp", NULL, &img));
    CHECK(img.format == SL_IMG_WEBP && img.width == w && img.height == h);
    CHECK(img.rgb && memcmp(img.rgb, want, (size_t)w * h * 3) == 0);
    sl_image_free(&img);
    CHECK_OK(sl_image_probe(wp, n, "a.webp", &f, &pw, &ph));
    CHECK(f == SL_IMG_WEBP && pw == w && ph == h);
    WebPFree(wp);

    n = WebPEncodeLosslessRGB(rgb, w, h, w * 3, &wp);
    CHECK_OK(sl_image_decode(wp, n, "b.webp", NULL, &img));
    CHECK(img.rgb && memcmp(img.rgb, rgb, (size_t)w * h * 3) == 0);
    sl_image_free(&img);
    WebPFree(wp);

    n = WebPEncodeRGB(rgb, w, h, w * 3, 90, &wp); /* lossy: close */
    CHECK_OK(sl_image_decode(wp, n, "c.webp", NULL, &img));
    CHECK(img.rgb && img.width == w && img.height == h);
    if (img.rgb) {
        double mad = 0;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) mad += abs(img.rgb[i] - rgb[i]);
        mad /= (double)w * h * 3;
        CHECK_MSG(mad < 8, "lossy webp mean abs diff %g", mad);
    }
    sl_image_free(&img);
    WebPFree(wp);
    free(rgb);
    free(rgba);
    free(want);
}

static void test_jpeg_basic(void) {
    const int w = 64, h = 40;
    uint8_t *rgb = make_picture(w, h, 2);
    unsigned long n;
    unsigned char *jpg = jpeg_encode(rgb, w, h, TJPF_RGB, 95, TJSAMP_444, &n);
    sl_image img;
    CHECK_OK(sl_image_decode(jpg, n, "a.jpg", NULL, &img));
    CHECK(img.format == SL_IMG_JPEG && img.width == w && img.height == h);
    if (img.rgb) {
        double mad = 0;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) mad += abs(img.rgb[i] - rgb[i]);
        CHECK_MSG(mad / (w * h * 3) < 4, "jpeg q95 mean abs diff %g", mad / (w * h * 3));
    }
    sl_image_free(&img);
    tjFree(jpg);

    /* grayscale JPEG expands to equal channels */
    uint8_t *gray = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++) gray[i] = rgb[3 * i + 1];
    jpg = jpeg_encode(gray, w, h, TJPF_GRAY, 95, TJSAMP_GRAY, &n);
    CHECK_OK(sl_image_decode(jpg, n, "g.jpg", NULL, &img));
    int same = img.rgb != NULL;
    for (int i = 0; same && i < w * h; i++)
        same = img.rgb[3 * i] == img.rgb[3 * i + 1] && img.rgb[3 * i] == img.rgb[3 * i + 2];
    CHECK(same);
    sl_image_free(&img);
    tjFree(jpg);
    free(gray);

    /* CMYK JPEG: libjpeg always writes an Adobe marker for CMYK, so the
     * samples read as Adobe-inverted: R = C * K / 255 */
    uint8_t *cmyk = malloc((size_t)w * h * 4);
    for (int i = 0; i < w * h; i++) {
        cmyk[4 * i + 0] = (uint8_t)(i % 256);
        cmyk[4 * i + 1] = 40;
        cmyk[4 * i + 2] = 200;
        cmyk[4 * i + 3] = (uint8_t)(i % 3 == 0 ? 0 : 60);
    }
    jpg = jpeg_encode(cmyk, w, h, TJPF_CMYK, 100, TJSAMP_444, &n);
    CHECK_OK(sl_image_decode(jpg, n, "cmyk.jpg", NULL, &img));
    if (img.rgb) {
        int i = 3; /* K' = 0: black */
        CHECK_MSG(img.rgb[3 * i + 1] <= 3 && img.rgb[3 * i + 2] <= 3, "G %d B %d",
                  img.rgb[3 * i + 1], img.rgb[3 * i + 2]);
        i = 4; /* K' = 60 */
        CHECK_MSG(abs(img.rgb[3 * i + 1] - (40 * 60 + 127) / 255) <= 2, "G %d", img.rgb[3 * i + 1]);
        CHECK_MSG(abs(img.rgb[3 * i + 2] - (200 * 60 + 127) / 255) <= 2, "B %d",
                  img.rgb[3 * i + 2]);
    }
    sl_image_free(&img);
    tjFree(jpg);
    free(cmyk);
    free(rgb);
}

static void test_orientation(void) {
    const int w = 24, h = 16;
    uint8_t *rgb = make_picture(w, h, 3);
    unsigned long n;
    unsigned char *jpg = jpeg_encode(rgb, w, h, TJPF_RGB, 90, TJSAMP_420, &n);
    sl_image base;
    CHECK_OK(sl_image_decode(jpg, n, "base.jpg", NULL, &base));
    uint8_t *want = malloc((size_t)w * h * 3);
    for (int le = 0; le <= 1; le++)
        for (int o = 1; o <= 8; o++) {
            size_t m;
            uint8_t *ex = jpeg_with_orientation(jpg, n, o, le, &m);
            sl_image img;
            CHECK_OK(sl_image_decode(ex, m, "exif.jpg", NULL, &img));
            int ew = o >= 5 ? h : w, eh = o >= 5 ? w : h;
            CHECK_MSG(img.width == ew && img.height == eh && img.orig_width == ew &&
                          img.orig_height == eh,
                      "orientation %d: %dx%d", o, img.width, img.height);
            ref_orient(base.rgb, w, h, o, want);
            CHECK_MSG(img.rgb && memcmp(img.rgb, want, (size_t)w * h * 3) == 0,
                      "orientation %d (%s) pixels", o, le ? "II" : "MM");
            int pw, ph;
            CHECK_OK(sl_image_probe(ex, m, "exif.jpg", NULL, &pw, &ph));
            CHECK(pw == ew && ph == eh);
            sl_image_free(&img);
            free(ex);
        }
    /* out-of-range and malformed orientation data are ignored */
    size_t m;
    uint8_t *ex = jpeg_with_orientation(jpg, n, 9, 1, &m);
    sl_image img;
    CHECK_OK(sl_image_decode(ex, m, "o9.jpg", NULL, &img));
    CHECK(img.width == w && img.rgb && memcmp(img.rgb, base.rgb, (size_t)w * h * 3) == 0);
    sl_image_free(&img);
    ex[12 + 4] = 0xFF; /* IFD offset far past the segment (II: byte 4 of TIFF) */
    ex[12 + 5] = 0xFF;
    CHECK_OK(sl_image_decode(ex, m, "badifd.jpg", NULL, &img));
    CHECK(img.width == w);
    sl_image_free(&img);
    free(ex);
    sl_image_free(&base);
    tjFree(jpg);
    free(rgb);
    free(want);
}

/* v in 0..255 back from a normalised value */
static double unnorm(float v, const sl_preprocess *pp, int c) {
    return ((double)v * pp->std[c] + pp->mean[c]) * 255.0;
}

static void test_dct_scaling(void) {
    const int w = 640, h = 480;
    uint8_t *rgb = make_picture(w, h, 4);
    unsigned long n;
    unsigned char *jpg = jpeg_encode(rgb, w, h, TJPF_RGB, 90, TJSAMP_420, &n);
    struct {
        int min, ew, eh;
    } cases[] = {{224, 320, 240},  {240, 320, 240}, {241, 400, 300}, {100, 160, 120},
                 {60, 80, 60},     {59, 80, 60},    {61, 160, 120},  {480, 640, 480},
                 {1000, 640, 480}, {0, 640, 480}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_decode_opts o = {.min_short_side = cases[i].min};
        sl_image img;
        CHECK_OK(sl_image_decode(jpg, n, "s.jpg", &o, &img));
        CHECK_MSG(img.width == cases[i].ew && img.height == cases[i].eh,
                  "min %d: got %dx%d want %dx%d", cases[i].min, img.width, img.height, cases[i].ew,
                  cases[i].eh);
        CHECK(img.orig_width == w && img.orig_height == h);
        sl_image_free(&img);
    }
    /* scaled decode + preprocess stays close to full decode + preprocess */
    sl_preprocess pp = sl_preprocess_clip(224);
    float *a = malloc(sizeof(float) * 3 * 224 * 224), *b = malloc(sizeof(float) * 3 * 224 * 224);
    sl_image full, half;
    sl_decode_opts o = {.min_short_side = 224};
    CHECK_OK(sl_image_decode(jpg, n, "s.jpg", NULL, &full));
    CHECK_OK(sl_image_decode(jpg, n, "s.jpg", &o, &half));
    sl_crop_map ma, mb;
    CHECK_OK(sl_image_preprocess(&full, &pp, a, &ma));
    CHECK_OK(sl_image_preprocess(&half, &pp, b, &mb));
    double mx = 0, mean = 0;
    for (int i = 0; i < 3 * 224 * 224; i++) {
        double d = fabs(a[i] - b[i]);
        mean += d;
        if (d > mx) mx = d;
    }
    mean /= 3 * 224 * 224;
    printf("dct scaling 1/2 vs full decode, 640x480 -> 224: mean |d| %.4f, max |d| %.4f "
           "(normalised units)\n",
           mean, mx);
    CHECK_MSG(mean < 0.03 && mx < 0.6, "mean %g max %g", mean, mx);
    CHECK_NEAR(ma.scale_x, mb.scale_x, 1e-6);
    CHECK_NEAR(ma.offset_x, mb.offset_x, 1e-4);
    CHECK_NEAR(ma.scale_y, mb.scale_y, 1e-6);

    /* EXIF + scaling: orig is the oriented full size */
    size_t m;
    uint8_t *ex = jpeg_with_orientation(jpg, n, 6, 0, &m);
    sl_image r;
    CHECK_OK(sl_image_decode(ex, m, "r.jpg", &o, &r));
    CHECK(r.width == 240 && r.height == 320 && r.orig_width == 480 && r.orig_height == 640);
    sl_image_free(&r);
    free(ex);

    /* timing: the indexer's case, 640x480 JPEG -> 224 input */
    const int iters = 40;
    double t0 = sl_now();
    for (int i = 0; i < iters; i++) {
        sl_image t;
        if (sl_image_decode(jpg, n, "t.jpg", &o, &t) == SL_OK) {
            sl_image_preprocess(&t, &pp, b, NULL);
            sl_image_free(&t);
        }
    }
    double t1 = sl_now();
    for (int i = 0; i < iters; i++) {
        sl_image t;
        if (sl_image_decode(jpg, n, "t.jpg", NULL, &t) == SL_OK) {
            sl_image_preprocess(&t, &pp, b, NULL);
            sl_image_free(&t);
        }
    }
    double t2 = sl_now();
    for (int i = 0; i < iters; i++) sl_image_preprocess(&full, &pp, b, NULL);
    double t3 = sl_now();
    for (int i = 0; i < iters; i++) sl_image_preprocess(&half, &pp, b, NULL);
    double t4 = sl_now();
    printf("timing 640x480 JPEG -> 224: %.2f ms with DCT scaling (of which preprocess %.2f ms), "
           "%.2f ms with full decode (of which preprocess %.2f ms)\n",
           (t1 - t0) * 1e3 / iters, (t4 - t3) * 1e3 / iters, (t2 - t1) * 1e3 / iters,
           (t3 - t2) * 1e3 / iters);
    sl_image_free(&full);
    sl_image_free(&half);
    free(a);
    free(b);
    tjFree(jpg);
    free(rgb);
}

/* The crop map on a ramp: R = x, G = y of the original picture, so the
 * normalised output, un-normalised, reads off the original coordinate. */
static void check_map_on_ramp(int w, int h, int size, int crop) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            p[((size_t)y * w + x) * 3 + 0] = (uint8_t)x;
            p[((size_t)y * w + x) * 3 + 1] = (uint8_t)y;
            p[((size_t)y * w + x) * 3 + 2] = 0;
        }
    sl_image img = {.width = w, .height = h, .orig_width = w, .orig_height = h, .rgb = p};
    sl_preprocess pp = sl_preprocess_clip(size);
    pp.crop = crop;
    float *out = malloc(sizeof(float) * 3 * size * size);
    sl_crop_map map;
    CHECK_OK(sl_image_preprocess(&img, &pp, out, &map));
    double worst = 0;
    /* away from the borders (where the kernel is cut) the ramp is exact */
    for (int v = 3; v < size - 3; v++)
        for (int u = 3; u < size - 3; u++) {
            double xo = (u + 0.5) * map.scale_x + map.offset_x - 0.5;
            double yo = (v + 0.5) * map.scale_y + map.offset_y - 0.5;
            if (xo < 3 * map.scale_x || xo > w - 1 - 3 * map.scale_x) continue;
            if (yo < 3 * map.scale_y || yo > h - 1 - 3 * map.scale_y) continue;
            double gx = unnorm(out[(size_t)v * size + u], &pp, 0);
            double gy = unnorm(out[(size_t)size * size + (size_t)v * size + u], &pp, 1);
            if (fabs(gx - xo) > worst) worst = fabs(gx - xo);
            if (fabs(gy - yo) > worst) worst = fabs(gy - yo);
        }
    CHECK_MSG(worst <= 1.0, "crop map %dx%d -> %d crop %d: off by %g px", w, h, size, crop, worst);
    free(out);
    free(p);
}

static void test_crop_map(void) {
    sl_image img = {.width = 640, .height = 480, .orig_width = 640, .orig_height = 480};
    img.rgb = calloc(640 * 480 * 3, 1);
    sl_preprocess pp = sl_preprocess_clip(224);
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    sl_crop_map m;
    CHECK_OK(sl_image_preprocess(&img, &pp, out, &m));
    /* resized 298x224, left = 37 */
    CHECK_NEAR(m.scale_x, 640.0 / 298, 1e-6);
    CHECK_NEAR(m.scale_y, 480.0 / 224, 1e-6);
    CHECK_NEAR(m.offset_x, 37 * 640.0 / 298, 1e-4);
    CHECK_NEAR(m.offset_y, 0, 1e-6);
    /* a DCT-scaled decode maps to the original picture */
    img.width = 320, img.height = 240;
    CHECK_OK(sl_image_preprocess(&img, &pp, out, &m));
    CHECK_NEAR(m.scale_x, 640.0 / 298, 1e-6);
    CHECK_NEAR(m.offset_x, 37 * 640.0 / 298, 1e-4);
    pp.crop = 0;
    CHECK_OK(sl_image_preprocess(&img, &pp, out, &m));
    CHECK_NEAR(m.scale_x, 640.0 / 224, 1e-6);
    CHECK_NEAR(m.scale_y, 480.0 / 224, 1e-6);
    CHECK_NEAR(m.offset_x, 0, 1e-6);
    /* the corner pixel centre maps inside the picture: u = 0 -> x > 0 */
    free(img.rgb);
    free(out);
    check_map_on_ramp(200, 100, 64, 1); /* downscale, crop along x */
    check_map_on_ramp(100, 200, 64, 1); /* crop along y */
    check_map_on_ramp(60, 40, 96, 1);   /* upscale */
    check_map_on_ramp(200, 120, 64, 0); /* squash */
    check_map_on_ramp(37, 53, 64, 1);   /* odd difference: round half even */

    /* argument checks */
    sl_image none = {0};
    float f[3];
    pp = sl_preprocess_clip(1);
    CHECK_ERR(sl_image_preprocess(&none, &pp, f, NULL), SL_ERR_INVALID, "empty image");
    uint8_t px[3] = {10, 20, 30};
    sl_image one = {.width = 1, .height = 1, .rgb = px};
    pp.size = 0;
    CHECK_ERR(sl_image_preprocess(&one, &pp, f, NULL), SL_ERR_INVALID, "size 0");
    pp = sl_preprocess_clip(1);
    pp.std[1] = 0;
    CHECK_ERR(sl_image_preprocess(&one, &pp, f, NULL), SL_ERR_INVALID, "channel 1");
    pp = sl_preprocess_clip(1);
    CHECK_OK(sl_image_preprocess(&one, &pp, f, NULL));
    CHECK_NEAR(f[0], (10 / 255.0 - 0.48145466) / 0.26862954, 1e-5);
    CHECK_NEAR(f[2], (30 / 255.0 - 0.40821073) / 0.27577711, 1e-5);
}

static void test_bad_input(void) {
    const int w = 32, h = 24;
    uint8_t *rgb = make_picture(w, h, 5);
    unsigned long jn;
    unsigned char *jpg = jpeg_encode(rgb, w, h, TJPF_RGB, 90, TJSAMP_420, &jn);
    sl_image img;
    char *p;

    /* truncated JPEG: premature end is an error */
    p = path_in("truncated.jpg");
    write_bytes(p, jpg, jn * 2 / 3);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "truncated.jpg");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "Premature end");
    CHECK(img.rgb == NULL);
    /* cut just before EOI: still a premature end */
    p = path_in("noeoi.jpg");
    write_bytes(p, jpg, jn - 2);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "noeoi.jpg");
    /* header only */
    p = path_in("header.jpg");
    write_bytes(p, jpg, 40);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "header.jpg");
    /* corrupt entropy data: a run of 0xFF 0x00 pairs broken into markers */
    unsigned char *cj = malloc(jn);
    memcpy(cj, jpg, jn);
    cj[jn * 3 / 4] = 0xFF, cj[jn * 3 / 4 + 1] = 0xD3; /* a stray marker inside the scan */
    p = path_in("corrupt.jpg");
    write_bytes(p, cj, jn);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "corrupt.jpg");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "premature end of data segment");
    sl_image_free(&img);
    free(cj);

    /* zero bytes, random bytes named .jpg, text */
    p = path_in("empty.jpg");
    write_bytes(p, "", 0);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "empty.jpg");
    uint8_t junk[4096];
    uint32_t s = 7;
    for (size_t i = 0; i < sizeof junk; i++) s = s * 1664525u + 1013904223u, junk[i] = s >> 24;
    p = path_in("random.jpg");
    write_bytes(p, junk, sizeof junk);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "random.jpg");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "unknown signature");
    /* random bytes behind a JPEG signature */
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    p = path_in("random2.jpg");
    write_bytes(p, junk, sizeof junk);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "random2.jpg");
    p = path_in("notes.txt");
    write_bytes(p, "just some text\n", 15);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "notes.txt");
    CHECK_ERR(sl_image_load(path_in("missing.png"), NULL, &img), SL_ERR_NOT_FOUND, "missing.png");
    CHECK_ERR(sl_image_probe(junk + 3, 100, "x.bin", NULL, NULL, NULL), SL_ERR_FORMAT, "x.bin");

    /* JPEG declaring 60000x60000 (SOF0 patched) */
    unsigned char *big = malloc(jn);
    memcpy(big, jpg, jn);
    int patched = 0;
    for (unsigned long i = 2; i + 9 < jn; i++)
        if (big[i] == 0xFF && big[i + 1] == 0xC0) {
            big[i + 5] = 60000 >> 8, big[i + 6] = 60000 & 0xff; /* height */
            big[i + 7] = 60000 >> 8, big[i + 8] = 60000 & 0xff; /* width */
            patched = 1;
            break;
        }
    CHECK(patched);
    p = path_in("huge.jpg");
    write_bytes(p, big, jn);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "huge.jpg");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "60000x60000");
    int pw, ph;
    CHECK_OK(sl_image_probe(big, jn, "huge.jpg", NULL, &pw, &ph));
    CHECK(pw == 60000 && ph == 60000);
    free(big);

    /* a cap from the options */
    sl_decode_opts small = {.max_pixels = 100};
    CHECK_ERR(sl_image_decode(jpg, jn, "capped.jpg", &small, &img), SL_ERR_LIMIT, "capped.jpg");

    /* PNG: bad CRC, truncated, 60000x60000 */
    size_t pn;
    uint8_t *png = png_encode(rgb, w, h, 3, &pn);
    uint8_t *bad = malloc(pn);
    memcpy(bad, png, pn);
    size_t idat = 0;
    for (size_t i = 8; i + 8 < pn; i++)
        if (memcmp(bad + i, "IDAT", 4) == 0) {
            idat = i - 4;
            break;
        }
    CHECK(idat > 0);
    uint32_t ilen =
        (uint32_t)bad[idat] << 24 | bad[idat + 1] << 16 | bad[idat + 2] << 8 | bad[idat + 3];
    bad[idat + 8 + ilen] ^= 0x55; /* first CRC byte */
    p = path_in("badcrc.png");
    write_bytes(p, bad, pn);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "badcrc.png");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "CRC");
    memcpy(bad, png, pn);
    bad[29] ^= 1; /* IHDR CRC */
    p = path_in("badihdr.png");
    write_bytes(p, bad, pn);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "badihdr.png");
    p = path_in("truncated.png");
    write_bytes(p, png, pn / 2);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "truncated.png");
    write_bytes(p, png, 20);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "truncated.png");
    memcpy(bad, png, pn);
    put_be32(bad + 16, 60000);
    put_be32(bad + 20, 60000);
    put_be32(bad + 29, crc32_png(bad + 12, 17));
    p = path_in("huge.png");
    write_bytes(p, bad, pn);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "huge.png");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "60000x60000");
    CHECK_OK(sl_image_probe(bad, pn, "huge.png", NULL, &pw, &ph));
    CHECK(pw == 60000 && ph == 60000);
    /* with a large enough cap libpng sees the truth: IDAT too short */
    sl_decode_opts nocap = {.max_pixels = 4000000000ULL};
    CHECK_ERR(sl_image_decode(bad, pn, "huge.png", &nocap, &img), SL_ERR_FORMAT, "huge.png");
    free(bad);
    free(png);

    /* WebP: truncated, and a VP8X header declaring 60000x60000 */
    uint8_t *wp = NULL;
    size_t wn = WebPEncodeRGB(rgb, w, h, w * 3, 80, &wp);
    p = path_in("truncated.webp");
    write_bytes(p, wp, wn / 2);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "truncated.webp");
    write_bytes(p, wp, 14);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_FORMAT, "truncated.webp");
    uint8_t vp8x[30 + 64];
    memcpy(vp8x, "RIFF", 4);
    uint32_t riff = sizeof vp8x - 8;
    vp8x[4] = (uint8_t)riff, vp8x[5] = (uint8_t)(riff >> 8), vp8x[6] = 0, vp8x[7] = 0;
    memcpy(vp8x + 8, "WEBPVP8X", 8);
    vp8x[16] = 10, vp8x[17] = vp8x[18] = vp8x[19] = 0;
    memset(vp8x + 20, 0, 4);
    uint32_t d = 60000 - 1;
    vp8x[24] = (uint8_t)d, vp8x[25] = (uint8_t)(d >> 8), vp8x[26] = (uint8_t)(d >> 16);
    vp8x[27] = (uint8_t)d, vp8x[28] = (uint8_t)(d >> 8), vp8x[29] = (uint8_t)(d >> 16);
    memset(vp8x + 30, 0, 64);
    p = path_in("huge.webp");
    write_bytes(p, vp8x, sizeof vp8x);
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "huge.webp");
    CHECK_ERR(sl_image_load(p, NULL, &img), SL_ERR_LIMIT, "60000x60000");
    CHECK_OK(sl_image_probe(vp8x, sizeof vp8x, "huge.webp", NULL, &pw, &ph));
    CHECK(pw == 60000 && ph == 60000);
    CHECK_ERR(sl_image_decode(wp, wn, "capped.webp", &small, &img), SL_ERR_LIMIT, "capped.webp");
    WebPFree(wp);

    /* no name: a placeholder */
    CHECK_ERR(sl_image_decode("abc", 3, NULL, NULL, &img), SL_ERR_FORMAT, "<memory>");
    tjFree(jpg);
    free(rgb);
}

/* Mutated and cut copies of valid files: any status, never a crash, a leak
 * or a half-filled result (run under ASan in CI). */
static void test_mutations(void) {
    const int w = 48, h = 40;
    uint8_t *rgb = make_picture(w, h, 6);
    struct {
        const char *name;
        uint8_t *data;
        size_t len;
    } f[4];
    unsigned long jn;
    unsigned char *jpg = jpeg_encode(rgb, w, h, TJPF_RGB, 85, TJSAMP_420, &jn);
    f[0].name = "m.jpg", f[0].data = jpg, f[0].len = jn;
    tjhandle tj = tjInitCompress();
    unsigned char *pj = NULL;
    unsigned long pjn = 0;
    tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &pj, &pjn, TJSAMP_444, 85, TJFLAG_PROGRESSIVE);
    tjDestroy(tj);
    f[1].name = "p.jpg", f[1].data = pj, f[1].len = pjn;
    f[2].name = "m.png", f[2].data = png_encode(rgb, w, h, 3, &f[2].len);
    uint8_t *wp = NULL;
    f[3].name = "m.webp", f[3].len = WebPEncodeRGB(rgb, w, h, w * 3, 80, &wp), f[3].data = wp;
    uint32_t s = 12345;
    int counts[16] = {0};
    sl_decode_opts opts = {.max_pixels = 1u << 22, .min_short_side = 0};
    sl_preprocess pp = sl_preprocess_clip(16);
    float out[3 * 16 * 16];
    for (int k = 0; k < 4; k++)
        for (int it = 0; it < 300; it++) {
            uint8_t *m = malloc(f[k].len);
            memcpy(m, f[k].data, f[k].len);
            size_t len = f[k].len;
            s = s * 1664525u + 1013904223u;
            int nflip = 1 + (int)(s >> 29);
            for (int j = 0; j < nflip; j++) {
                s = s * 1664525u + 1013904223u;
                size_t pos = (s >> 8) % len;
                s = s * 1664525u + 1013904223u;
                m[pos] = (uint8_t)(s >> 24);
            }
            if (it % 4 == 3) len = (s >> 4) % len;
            opts.min_short_side = it % 3 == 0 ? 20 : 0;
            sl_image img;
            sl_status st = sl_image_decode(m, len, f[k].name, &opts, &img);
            counts[st < 16 ? st : 15]++;
            if (st == SL_OK) {
                CHECK(img.rgb && img.width > 0 && img.height > 0);
                CHECK_OK(sl_image_preprocess(&img, &pp, out, NULL));
            } else {
                CHECK(img.rgb == NULL);
                CHECK(strstr(sl_last_error(), f[k].name) != NULL);
            }
            sl_image_free(&img);
            free(m);
        }
    printf("mutations: %d ok, %d format, %d limit, %d unsupported\n", counts[SL_OK],
           counts[SL_ERR_FORMAT], counts[SL_ERR_LIMIT], counts[SL_ERR_UNSUPPORTED]);
    tjFree(jpg);
    tjFree(pj);
    free(f[2].data);
    WebPFree(wp);
    free(rgb);
}

/* ------------------------------------------------------------------------ */
/* Parity against PIL / torchvision (tests/reference/image_ref.py)          */
/* ------------------------------------------------------------------------ */

static int run_parity(const char *script) {
    if (system(PY " -c 'import PIL, numpy' 2>/dev/null") != 0) {
        printf("skip: " PY " with PIL and numpy not available\n");
        return SL_TEST_SKIP;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, PY " %s gen %s", script, g_dir);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (%d)", cmd, rc);
    if (rc) return sl_test_finish("test_image_parity");
    FILE *mf = fopen(path_in("manifest.txt"), "r");
    CHECK(mf != NULL);
    if (!mf) return sl_test_finish("test_image_parity");
    char line[1024];
    int ndecode = 0, nprep = 0, worst_jpeg = 0, worst_webp = 0;
    double worst_prep = 0;
    while (fgets(line, sizeof line, mf)) {
        char kind[32], a[256], b[256], c[256], e[256];
        int nf = sscanf(line, "%31s %255s %255s %255s %255s", kind, a, b, c, e);
        if (nf == 4 && strcmp(kind, "decode") == 0) {
            /* decode KIND IMAGE REF */
            int tol = strcmp(a, "exact") == 0  ? TOL_DECODE_EXACT
                      : strcmp(a, "jpeg") == 0 ? TOL_DECODE_JPEG
                                               : TOL_DECODE_WEBP;
            sl_image img;
            sl_npy ref;
            CHECK_OK(sl_image_load(path_in(b), NULL, &img));
            CHECK_OK(sl_npy_read(path_in(c), &ref));
            int ok = img.rgb && ref.dtype == SL_NPY_U8 && ref.ndim == 3 &&
                     ref.shape[0] == (size_t)img.height && ref.shape[1] == (size_t)img.width &&
                     ref.shape[2] == 3;
            CHECK_MSG(ok, "%s: %dx%d vs reference shape", b, img.width, img.height);
            if (ok) {
                int md = max_abs_diff_u8(img.rgb, ref.data, ref.count);
                printf("decode %-22s %4dx%-4d max |diff| %d (tolerance %d)\n", b, img.width,
                       img.height, md, tol);
                CHECK_MSG(md <= tol, "%s: max diff %d > %d", b, md, tol);
                if (strcmp(a, "jpeg") == 0 && md > worst_jpeg) worst_jpeg = md;
                if (strcmp(a, "webp-lossy") == 0 && md > worst_webp) worst_webp = md;
            }
            ndecode++;
            sl_image_free(&img);
            sl_npy_free(&ref);
        } else if (nf == 5 && strcmp(kind, "prep") == 0) {
            /* prep IMAGE SIZE CROP REF */
            int size = atoi(b), crop = atoi(c);
            sl_image img;
            sl_npy ref;
            CHECK_OK(sl_image_load(path_in(a), NULL, &img));
            CHECK_OK(sl_npy_read(path_in(e), &ref));
            sl_preprocess pp = sl_preprocess_clip(size);
            pp.crop = crop;
            size_t cnt = (size_t)3 * size * size;
            float *out = malloc(cnt * sizeof(float));
            CHECK_OK(sl_image_preprocess(&img, &pp, out, NULL));
            int ok = ref.dtype == SL_NPY_F32 && ref.count == cnt && img.rgb;
            CHECK_MSG(ok, "%s: reference shape", e);
            if (ok) {
                double md = 0;
                size_t nbad = 0;
                const float *r = ref.data;
                for (size_t i = 0; i < cnt; i++) {
                    double dd = fabs((double)out[i] - r[i]);
                    if (dd > md) md = dd;
                    if (dd > TOL_PREP) nbad++;
                }
                printf("prep   %-22s %4dx%-4d -> %3d crop=%d max |diff| %.3g (tolerance %g)\n", a,
                       img.width, img.height, size, crop, md, TOL_PREP);
                CHECK_MSG(md <= TOL_PREP, "%s -> %d: max diff %g, %zu values over", a, size, md,
                          nbad);
                if (md > worst_prep) worst_prep = md;
            }
            nprep++;
            free(out);
            sl_image_free(&img);
            sl_npy_free(&ref);
        }
    }
    fclose(mf);
    printf("parity: %d decodes (worst JPEG %d, lossy WebP %d levels), %d preprocessings (worst "
           "%.3g normalised units)\n",
           ndecode, worst_jpeg, worst_webp, nprep, worst_prep);
    CHECK(ndecode >= 28 && nprep >= 18);
    return sl_test_finish("test_image_parity");
}

int main(int argc, char **argv) {
    g_dir = sl_test_tmpdir();
    if (argc >= 3 && strcmp(argv[1], "--parity") == 0) return run_parity(argv[2]);
    test_sniff();
    test_png_webp_exact();
    test_jpeg_basic();
    test_orientation();
    test_dct_scaling();
    test_crop_map();
    test_bad_input();
    test_mutations();
    return sl_test_finish("test_image");
}
