/*
 * bench/gpu_jpegs.c - write a corpus of varied synthetic JPEGs fast (all
 * cores), for `sightline index build` on the GPU machine (bench/gpu_run.sh).
 *
 * usage: bench_gpu_jpegs --out DIR [--n 20000] [--seed 1] [--min 300]
 *                        [--max 640] [--per-dir 1000] [--threads NCPU]
 *
 * Image i is drawn from seed + i: its picture is bench_synth_rgb's (a
 * four-corner gradient, hard-edged shapes, soft blobs, sensor noise), its
 * width and height each uniform in [--min, --max] (so aspect ratios from
 * about 1:2 to 2:1), its TurboJPEG quality uniform in 70..95, its chroma
 * subsampling 4:2:0 (70%), 4:2:2 (15%), 4:4:4 (12%) or grayscale (3%), and
 * one in ten is progressive. Files go to DIR/dNNN/imgNNNNNN.jpg, --per-dir
 * to a folder. A marker file DIR/.gpu_jpegs makes a second call with the
 * same arguments a no-op. Prints one summary line:
 *   "jpegs: N files in DIR, B bytes (mean K KB), S s, R files/s, T threads"
 */
#include "bench/bench_util.h"
#include "sightline/common.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int mkdir_one(const char *path) {
    return mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_gpu_jpegs --out DIR [--n 20000] [--seed 1] [--min 300] "
                    "[--max 640] [--per-dir 1000] [--threads N]\n");
}

int main(int argc, char **argv) {
    const char *out = NULL;
    long long n = 20000, seed = 1, lo = 300, hi = 640, per_dir = 1000, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long *dst = !strcmp(a, "--n")         ? &n
                         : !strcmp(a, "--seed")    ? &seed
                         : !strcmp(a, "--min")     ? &lo
                         : !strcmp(a, "--max")     ? &hi
                         : !strcmp(a, "--per-dir") ? &per_dir
                         : !strcmp(a, "--threads") ? &threads
                                                   : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--out"))
            out = v;
        else if (!dst || sl_parse_int_arg(v, 0, 100000000, dst)) {
            usage();
            return 2;
        }
        i++;
    }
    if (!out || n < 1 || lo < 16 || hi < lo || hi > 8192 || per_dir < 1) {
        usage();
        return 2;
    }
    if (threads > 0) omp_set_num_threads((int)threads);

    char marker[4096], want[256], have[256] = "";
    snprintf(marker, sizeof marker, "%s/.gpu_jpegs", out);
    snprintf(want, sizeof want, "n=%lld seed=%lld size=%lld..%lld per_dir=%lld v1", n, seed, lo, hi,
             per_dir);
    FILE *f = fopen(marker, "r");
    if (f) {
        if (fgets(have, sizeof have, f)) have[strcspn(have, "\n")] = '\0';
        fclose(f);
        if (!strcmp(have, want)) {
            printf("jpegs: %lld files in %s already (%s)\n", n, out, want);
            return 0;
        }
    }
    if (mkdir_one(out)) {
        fprintf(stderr, "bench_gpu_jpegs: cannot create %s\n", out);
        return 1;
    }
    for (long long d = 0; d * per_dir < n; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/d%03lld", out, d);
        if (mkdir_one(path)) {
            fprintf(stderr, "bench_gpu_jpegs: cannot create %s\n", path);
            return 1;
        }
    }

    double t0 = sl_now();
    unsigned long long total = 0;
    int failed = 0, nthreads = 1;
#pragma omp parallel reduction(+ : total)
    {
#pragma omp single
        nthreads = omp_get_num_threads();
        uint8_t *rgb = malloc((size_t)hi * (size_t)hi * 3);
        tjhandle tj = tjInitCompress();
        if (!rgb || !tj) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 8)
        for (long long i = 0; i < n; i++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop) continue;
            uint64_t s = (uint64_t)seed * 0x100000001b3ull + (uint64_t)i;
            int w = (int)(lo + (long long)(splitmix(&s) % (uint64_t)(hi - lo + 1)));
            int h = (int)(lo + (long long)(splitmix(&s) % (uint64_t)(hi - lo + 1)));
            int quality = 70 + (int)(splitmix(&s) % 26);
            unsigned r = (unsigned)(splitmix(&s) % 100);
            int samp = r < 70   ? TJSAMP_420
                       : r < 85 ? TJSAMP_422
                       : r < 97 ? TJSAMP_444
                                : TJSAMP_GRAY;
            int flags = splitmix(&s) % 10 == 0 ? TJFLAG_PROGRESSIVE : 0;
            bench_synth_rgb(rgb, w, h, (uint64_t)seed + (uint64_t)i);
            unsigned char *jpg = NULL;
            unsigned long len = 0;
            char path[4096];
            snprintf(path, sizeof path, "%s/d%03lld/img%06lld.jpg", out, i / per_dir, i);
            /* A handle that compressed a progressive image writes broken
             * baseline ones afterwards (libjpeg-turbo 2.1): progressive
             * images get a handle of their own. */
            tjhandle tp = flags ? tjInitCompress() : tj;
            int bad =
                !tp || tjCompress2(tp, rgb, w, 0, h, TJPF_RGB, &jpg, &len, samp, quality, flags);
            if (bad) {
                fprintf(stderr, "bench_gpu_jpegs: tjCompress2: %s\n",
                        tp ? tjGetErrorStr2(tp) : "no handle");
            } else {
                FILE *o = fopen(path, "wb");
                bad = !o || fwrite(jpg, 1, len, o) != len;
                if (o && fclose(o)) bad = 1;
                if (bad) fprintf(stderr, "bench_gpu_jpegs: cannot write %s\n", path);
            }
            if (tp && tp != tj) tjDestroy(tp);
            tjFree(jpg);
            total += len;
            if (bad) {
#pragma omp atomic write
                failed = 1;
            }
        }
        if (tj) tjDestroy(tj);
        free(rgb);
    }
    double secs = sl_now() - t0;
    if (failed) return 1;
    if ((f = fopen(marker, "w"))) {
        fprintf(f, "%s\n", want);
        if (fclose(f)) return 1;
    }
    printf("jpegs: %lld files in %s, %llu bytes (mean %.1f KB), %.2f s, %.0f files/s, %d threads\n",
           n, out, total, (double)total / (double)n / 1024.0, secs, (double)n / secs, nthreads);
    return 0;
}
