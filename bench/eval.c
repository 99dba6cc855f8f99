/*
 * bench/eval.c - the arithmetic of a COCO-size retrieval evaluation: the
 * 5,000 x 25,000 similarity matrix (D = 512, random unit vectors) as one
 * sgemm, then every image->text and text->image rank (counting the items
 * that beat the ground truth, OpenMP), the figures, and the 1K fold means.
 * Baseline measured in the same run: ranking by sorting whole rows/columns
 * (qsort), timed on a sample of queries and scaled to all of them.
 *
 * usage: bench_eval [IMAGES=5000] [CAPTIONS_PER_IMAGE=5] [DIM=512] [THREADS=2] [REPEATS=3]
 */
#include "sightline/eval.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

/* n random unit vectors [n, d] (Gaussian directions). */
static void random_unit(float *v, size_t n, size_t d) {
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (size_t k = 0; k < d; k++) {
            double u1 = uniform() + 1e-300, u2 = uniform();
            double g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            v[i * d + k] = (float)g;
            ss += g * g;
        }
        float inv = (float)(1.0 / sqrt(ss));
        for (size_t k = 0; k < d; k++) v[i * d + k] *= inv;
    }
}

/* Baseline: rank by sorting the whole row (score descending, index
 * ascending) and finding the ground truth's position. */
static const float *g_vals;
static int cmp_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (g_vals[x] != g_vals[y]) return g_vals[x] > g_vals[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static double best_of(double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < b) b = v[i];
    return b;
}

int main(int argc, char **argv) {
    long ni = argc > 1 ? atol(argv[1]) : 5000, caps = argc > 2 ? atol(argv[2]) : 5;
    long dim = argc > 3 ? atol(argv[3]) : 512, threads = argc > 4 ? atol(argv[4]) : 2;
    int reps = argc > 5 ? atoi(argv[5]) : 3;
    if (ni <= 0 || caps <= 0 || dim <= 0 || threads <= 0 || reps <= 0 || reps > 100) {
        fprintf(stderr, "usage: bench_eval [IMAGES] [CAPTIONS_PER_IMAGE] [DIM] [THREADS] "
                        "[REPEATS]\n");
        return 2;
    }
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);
    size_t n_img = (size_t)ni, n_txt = (size_t)ni * (size_t)caps, d = (size_t)dim;
    float *img = malloc(n_img * d * sizeof(float));
    float *txt = malloc(n_txt * d * sizeof(float));
    float *sim = malloc(n_img * n_txt * sizeof(float));
    size_t *ti = malloc(n_txt * sizeof *ti);
    int64_t *ri = malloc(n_img * sizeof *ri), *rt = malloc(n_txt * sizeof *rt);
    if (!img || !txt || !sim || !ti || !ri || !rt) {
        fprintf(stderr, "bench_eval: out of memory\n");
        return 1;
    }
    random_unit(img, n_img, d);
    random_unit(txt, n_txt, d);
    for (size_t j = 0; j < n_txt; j++) ti[j] = j / (size_t)caps;
    memset(sim, 0, n_img * n_txt * sizeof(float)); /* page faults out of the timings */
    printf("bench_eval: %zu images x %zu texts, D = %zu, %ld threads (OpenMP and OpenBLAS), "
           "best of %d\n",
           n_img, n_txt, d, threads, reps);

    double t_sim[100], t_i2t[100], t_t2i[100], t_eval[100], t_fold[100];
    sl_retrieval_metrics m, f = {0};
    for (int r = 0; r < reps; r++) {
        double t0 = sl_now();
        if (sl_retrieval_similarity(img, n_img, txt, n_txt, d, sim)) goto fail;
        t_sim[r] = sl_now() - t0;
        t0 = sl_now();
        if (sl_retrieval_ranks(sim, n_img, n_txt, n_txt, ti, ri, NULL)) goto fail;
        t_i2t[r] = sl_now() - t0;
        t0 = sl_now();
        if (sl_retrieval_ranks(sim, n_img, n_txt, n_txt, ti, NULL, rt)) goto fail;
        t_t2i[r] = sl_now() - t0;
        t0 = sl_now();
        if (sl_retrieval_evaluate(sim, n_img, n_txt, n_txt, ti, &m)) goto fail;
        t_eval[r] = sl_now() - t0;
        t_fold[r] = 0;
        if (n_img % 1000 == 0) {
            t0 = sl_now();
            if (sl_retrieval_evaluate_folds(sim, n_img, n_txt, n_txt, ti, 1000, &f)) goto fail;
            t_fold[r] = sl_now() - t0;
        }
    }
    double gf = 2.0 * (double)n_img * (double)n_txt * (double)d / best_of(t_sim, reps) / 1e9;
    printf("  similarity (one sgemm)        %8.3f s  (%.1f GFLOP/s)\n", best_of(t_sim, reps), gf);
    printf("  ranks image->text (counting)  %8.3f s\n", best_of(t_i2t, reps));
    printf("  ranks text->image (counting)  %8.3f s\n", best_of(t_t2i, reps));
    printf("  ranks + figures, both ways    %8.3f s\n", best_of(t_eval, reps));
    if (n_img % 1000 == 0)
        printf("  1K fold means (%zu folds)      %8.3f s\n", f.n_folds, best_of(t_fold, reps));
    printf("  total (sgemm + ranks + figures) %6.3f s\n",
           best_of(t_sim, reps) + best_of(t_eval, reps));
    printf("  random vectors: i2t R@1 %.2f R@10 %.2f medr %.0f; t2i R@1 %.3f medr %.0f "
           "(chance level)\n",
           m.i2t.r1, m.i2t.r10, m.i2t.medr, m.t2i.r1, m.t2i.medr);

    /* baseline: sort whole rows / columns for a sample, scaled to all */
    size_t si = n_img < 200 ? n_img : 200, st = n_txt < 500 ? n_txt : 500;
    uint32_t *ord = malloc((n_txt > n_img ? n_txt : n_img) * sizeof *ord);
    float *col = malloc(n_img * sizeof *col);
    if (!ord || !col) goto fail;
    double t0 = sl_now();
    int bad = 0;
    for (size_t i = 0; i < si; i++) {
        g_vals = sim + i * n_txt;
        for (size_t j = 0; j < n_txt; j++) ord[j] = (uint32_t)j;
        qsort(ord, n_txt, sizeof *ord, cmp_desc);
        int64_t r = 0;
        for (size_t p = 0; p < n_txt && !r; p++)
            if (ti[ord[p]] == i) r = (int64_t)p + 1;
        bad += r != ri[i];
    }
    double sort_i2t = (sl_now() - t0) / (double)si * (double)n_img;
    t0 = sl_now();
    for (size_t j = 0; j < st; j++) {
        for (size_t i = 0; i < n_img; i++) col[i] = sim[i * n_txt + j];
        g_vals = col;
        for (size_t i = 0; i < n_img; i++) ord[i] = (uint32_t)i;
        qsort(ord, n_img, sizeof *ord, cmp_desc);
        int64_t r = 0;
        for (size_t p = 0; p < n_img && !r; p++)
            if (ord[p] == ti[j]) r = (int64_t)p + 1;
        bad += r != rt[j];
    }
    double sort_t2i = (sl_now() - t0) / (double)st * (double)n_txt;
    printf("baseline, sorting whole rows (1 thread, %zu + %zu sampled queries, scaled):\n", si, st);
    printf("  ranks image->text (sorting)   %8.3f s  -> counting is %.0fx faster\n", sort_i2t,
           sort_i2t / best_of(t_i2t, reps));
    printf("  ranks text->image (sorting)   %8.3f s  -> counting is %.0fx faster\n", sort_t2i,
           sort_t2i / best_of(t_t2i, reps));
    printf("  sampled ranks agree with counting: %s\n", bad ? "NO" : "yes");
    free(ord);
    free(col);
    free(img);
    free(txt);
    free(sim);
    free(ti);
    free(ri);
    free(rt);
    return bad ? 1 : 0;
fail:
    fprintf(stderr, "bench_eval: %s\n", sl_last_error());
    return 1;
}
