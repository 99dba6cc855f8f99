/*
 * bench/bench_util.c - see bench_util.h.
 */
#include "bench/bench_util.h"
#include "sightline/common.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#ifndef SL_SOURCE_DIR
#define SL_SOURCE_DIR "."
#endif

/* ------------------------------------------------------------------------ */
/* Numbers and clocks                                                       */
/* ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

double bench_load1(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (!f) return -1;
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
    return l;
}

double bench_machine_busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f) return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 7) return -1;
    /* user nice system [idle iowait] irq softirq steal */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    long tck = sysconf(_SC_CLK_TCK);
    return (double)busy / (double)(tck > 0 ? tck : 100);
}

void bench_others_begin(bench_others *o) {
    o->wall = sl_now();
    o->busy = bench_machine_busy_seconds();
    o->self = bench_cpu_seconds();
}

double bench_others_end(const bench_others *o) {
    double wall = sl_now() - o->wall;
    double busy = bench_machine_busy_seconds() - o->busy, self = bench_cpu_seconds() - o->self;
    double others = wall > 0 ? (busy - self) / wall : 0;
    return others > 0 ? others : 0;
}

double bench_settle(double max_wait, double cores) {
    double t0 = sl_now(), others = 0;
    int quiet = 0;
    while (quiet < 2) {
        bench_others o;
        bench_others_begin(&o);
        usleep(1000000);
        others = bench_others_end(&o);
        quiet = others < cores ? quiet + 1 : 0;
        if (sl_now() - t0 > max_wait) break;
    }
    return others;
}

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

int bench_write_model(const char *py, const char *dir, const char *overrides_json) {
    /* encoder_ref.make() writes encoder_ref.VIT_B32; the overrides are
     * applied to that dict first, so there is one writer for every shape. */
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd,
                     "'%s' -c 'import sys, json; sys.path.insert(0, sys.argv[1]); "
                     "import encoder_ref as e; e.VIT_B32.update(json.loads(sys.argv[2])); "
                     "e.make(sys.argv[3])' '%s' '%s' '%s'",
                     py, SL_SOURCE_DIR "/bench", overrides_json ? overrides_json : "{}", dir);
    if (n < 0 || (size_t)n >= sizeof cmd) return -1;
    if (system(cmd) != 0) {
        fprintf(stderr, "bench: writing the model failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Synthetic pictures                                                       */
/* ------------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float unit(uint64_t *s) {
    return (float)(splitmix(s) >> 40) * (1.0f / 16777216.0f);
}

void bench_synth_rgb(uint8_t *rgb, int w, int h, uint64_t seed) {
    uint64_t s = seed ^ 0x5eed5eed12345678ull;
    size_t np = (size_t)w * (size_t)h;
    float *acc = malloc(np * 3 * sizeof(float));
    if (!acc) {
        memset(rgb, 128, np * 3);
        return;
    }
    /* sky-to-ground style gradient between four corner colours */
    float corner[4][3];
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) corner[k][c] = 30.0f + 200.0f * unit(&s);
    for (int y = 0; y < h; y++) {
        float fy = h > 1 ? (float)y / (float)(h - 1) : 0;
        for (int x = 0; x < w; x++) {
            float fx = w > 1 ? (float)x / (float)(w - 1) : 0;
            float *p = acc + ((size_t)y * (size_t)w + (size_t)x) * 3;
            for (int c = 0; c < 3; c++)
                p[c] = (1 - fy) * ((1 - fx) * corner[0][c] + fx * corner[1][c]) +
                       fy * ((1 - fx) * corner[2][c] + fx * corner[3][c]);
        }
    }
    /* hard-edged shapes (objects) with their own shading */
    int nrect = 2 + (int)(unit(&s) * 3);
    for (int k = 0; k < nrect; k++) {
        int x0 = (int)(unit(&s) * (float)w), y0 = (int)(unit(&s) * (float)h);
        int x1 = x0 + 1 + (int)(unit(&s) * (float)w * 0.4f);
        int y1 = y0 + 1 + (int)(unit(&s) * (float)h * 0.4f);
        if (x1 > w) x1 = w;
        if (y1 > h) y1 = h;
        float col[3], shade = 0.5f * unit(&s);
        for (int c = 0; c < 3; c++) col[c] = 20.0f + 215.0f * unit(&s);
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) {
                float t = 1.0f - shade * (float)(y - y0) / (float)(y1 - y0);
                float *p = acc + ((size_t)y * (size_t)w + (size_t)x) * 3;
                for (int c = 0; c < 3; c++) p[c] = col[c] * t;
            }
    }
    /* soft blobs, blended with a smoothstep falloff inside their ellipse */
    int nblob = 4 + (int)(unit(&s) * 8);
    for (int k = 0; k < nblob; k++) {
        float cx = unit(&s) * (float)w, cy = unit(&s) * (float)h;
        float rx = (0.05f + 0.3f * unit(&s)) * (float)w, ry = (0.05f + 0.3f * unit(&s)) * (float)h;
        float op = 0.4f + 0.55f * unit(&s), col[3];
        for (int c = 0; c < 3; c++) col[c] = 255.0f * unit(&s);
        int xa = (int)(cx - rx), xb = (int)(cx + rx) + 1, ya = (int)(cy - ry),
            yb = (int)(cy + ry) + 1;
        if (xa < 0) xa = 0;
        if (ya < 0) ya = 0;
        if (xb > w) xb = w;
        if (yb > h) yb = h;
        for (int y = ya; y < yb; y++) {
            float dy = ((float)y - cy) / ry;
            for (int x = xa; x < xb; x++) {
                float dx = ((float)x - cx) / rx, t = 1.0f - (dx * dx + dy * dy);
                if (t <= 0) continue;
                float a = op * t * t * (3 - 2 * t);
                float *p = acc + ((size_t)y * (size_t)w + (size_t)x) * 3;
                for (int c = 0; c < 3; c++) p[c] += a * (col[c] - p[c]);
            }
        }
    }
    /* sensor-like noise: a shared luminance part and a small chroma part */
    uint32_t r = (uint32_t)splitmix(&s) | 1u;
    for (size_t i = 0; i < np; i++) {
        r ^= r << 13, r ^= r >> 17, r ^= r << 5;
        float lum = (float)(int)(r & 15) - 7.5f;
        for (int c = 0; c < 3; c++) {
            float v = acc[i * 3 + (size_t)c] + lum + (float)(int)((r >> (8 + 4 * c)) & 7) - 3.5f;
            rgb[i * 3 + (size_t)c] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
        }
    }
    free(acc);
}

static int mkdir_p(const char *path) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s", path);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

int bench_make_jpegs(const char *dir, int n, int per_dir, int w, int h, int quality, uint64_t seed,
                     uint64_t *bytes) {
    char marker[4096], want[256], have[256] = "";
    snprintf(marker, sizeof marker, "%s/.bench_corpus", dir);
    snprintf(want, sizeof want, "n=%d per_dir=%d %dx%d q=%d seed=%llu", n, per_dir, w, h, quality,
             (unsigned long long)seed);
    unsigned long long total = 0;
    FILE *f = fopen(marker, "r");
    if (f) {
        int ok = fgets(have, sizeof have, f) != NULL && fscanf(f, "%llu", &total) == 1;
        fclose(f);
        have[strcspn(have, "\n")] = '\0';
        if (ok && !strcmp(have, want)) {
            if (bytes) *bytes = total;
            return 0;
        }
    }
    if (mkdir_p(dir)) return -1;
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    tjhandle tj = tjInitCompress();
    if (!rgb || !tj) {
        free(rgb);
        if (tj) tjDestroy(tj);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/d%03d", dir, i / per_dir);
        if (i % per_dir == 0 && mkdir_p(path)) rc = -1;
        snprintf(path, sizeof path, "%s/d%03d/img%06d.jpg", dir, i / per_dir, i);
        bench_synth_rgb(rgb, w, h, seed + (uint64_t)i);
        unsigned char *jpg = NULL;
        unsigned long len = 0;
        if (rc == 0 &&
            tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &len, TJSAMP_420, quality, 0) != 0) {
            fprintf(stderr, "bench: tjCompress2: %s\n", tjGetErrorStr2(tj));
            rc = -1;
        }
        FILE *o = rc == 0 ? fopen(path, "wb") : NULL;
        if (rc == 0 && (!o || fwrite(jpg, 1, len, o) != len)) {
            fprintf(stderr, "bench: cannot write %s\n", path);
            rc = -1;
        }
        if (o && fclose(o)) rc = -1;
        tjFree(jpg);
        total += len;
    }
    tjDestroy(tj);
    free(rgb);
    if (rc == 0 && (f = fopen(marker, "w"))) {
        fprintf(f, "%s\n%llu\n", want, total);
        if (fclose(f)) rc = -1;
    }
    if (bytes) *bytes = total;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Cleanup                                                                  */
/* ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path) ? -1 : 0;
}

int bench_rm_rf(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}
