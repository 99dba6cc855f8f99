/*
 * bench/bench_util.h - helpers shared by the indexer benchmarks: medians,
 * timers, random-weight models (written by bench/encoder_ref.py's writer),
 * deterministic synthetic JPEG corpora and directory removal.
 */
#ifndef SIGHTLINE_BENCH_UTIL_H
#define SIGHTLINE_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Median of v[0..n) (sorts v in place); 0 when n == 0. */
double bench_median(double *v, int n);

/* CPU seconds (user + system) used by the whole process so far. */
double bench_cpu_seconds(void);

/* The 1-minute load average from /proc/loadavg, or -1. */
double bench_load1(void);

/* CPU seconds the whole machine has been busy (all processes, all cores;
 * from /proc/stat), or -1. */
double bench_machine_busy_seconds(void);

/* What other processes use while this one works: call _begin, do the
 * work, and _end returns the cores they kept busy on average. */
typedef struct bench_others {
    double wall, busy, self;
} bench_others;
void bench_others_begin(bench_others *o);
double bench_others_end(const bench_others *o);

/* Wait (at most max_wait seconds) until other processes have used less
 * than `cores` cores for two consecutive seconds. Returns the cores they
 * used in the last second waited. */
double bench_settle(double max_wait, double cores);

/* Write a random-weight CLIP model (HF layout, F32) into dir with
 * bench/encoder_ref.py's `make` writer: the ViT-B/32 shape it defines,
 * with the fields in `overrides_json` (a JSON object of clip_ref.Config
 * fields, e.g. {"t_layers": 1}; NULL or "{}" for none) replaced. `py` is
 * the Python interpreter. Returns 0 on success. */
int bench_write_model(const char *py, const char *dir, const char *overrides_json);

/* Fill rgb [h, w, 3] with a natural-looking picture determined by seed:
 * a smooth four-corner gradient, soft coloured blobs and pixel noise. */
void bench_synth_rgb(uint8_t *rgb, int w, int h, uint64_t seed);

/* Write n JPEGs (w x h, TurboJPEG quality `quality`, 4:2:0) of synthetic
 * pictures into dir/dNNN/imgNNNNNN.jpg, per_dir to a folder, image i from
 * seed + i. A marker file makes a second call with the same arguments a
 * no-op (the corpus is reused). *bytes (may be NULL) receives the total
 * JPEG size. Returns 0 on success. */
int bench_make_jpegs(const char *dir, int n, int per_dir, int w, int h, int quality, uint64_t seed,
                     uint64_t *bytes);

/* rm -rf path (does not follow symlinks). Returns 0 on success. */
int bench_rm_rf(const char *path);

#endif
