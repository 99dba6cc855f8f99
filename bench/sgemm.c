/*
 * bench/sgemm.c - the machine's BLAS sgemm rate at the shapes a ViT-B/32
 * image batch produces (tokens x width x 4*width), and the images/s ceiling
 * it implies for the encoder (8.8 GFLOP per 224-px ViT-B/32 image).
 *
 * usage: bench_sgemm [BATCH=32] [REPEATS=5]
 */
#include "sightline/common.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int batch = argc > 1 ? atoi(argv[1]) : 32;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (batch <= 0 || reps <= 0) {
        fprintf(stderr, "usage: bench_sgemm [BATCH] [REPEATS]\n");
        return 2;
    }
    const int M = batch * 50, K = 768, N = 3072; /* 50 tokens per image */
    float *a = malloc(sizeof(float) * (size_t)M * K);
    float *b = malloc(sizeof(float) * (size_t)K * N);
    float *c = malloc(sizeof(float) * (size_t)M * N);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a, K, b, K, 0.f, c, N);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = sl_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a, K, b, K, 0.f, c, N);
        double gf = 2.0 * M * N * K / (sl_now() - t0) / 1e9;
        if (gf > best) best = gf;
    }
    printf("sgemm %dx%dx%d: %.1f GFLOP/s (best of %d)\n", M, N, K, best, reps);
    printf("ViT-B/32 ceiling at 8.8 GFLOP/image: %.1f images/s\n", best / 8.8);
    free(a);
    free(b);
    free(c);
    return 0;
}
