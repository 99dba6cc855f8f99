/*
 * kernels/cpu/vecops.c - small vector kernels on the CPU.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

void sl_cpu_l2_normalize_rows(float *x, size_t n, size_t d) {
#pragma omp parallel for schedule(static) if (n * d > 65536)
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * d;
        double ss = 0;
        for (size_t j = 0; j < d; j++) ss += (double)row[j] * row[j];
        double norm = sqrt(ss);
        if (norm < 1e-12) continue;
        float inv = (float)(1.0 / norm);
        for (size_t j = 0; j < d; j++) row[j] *= inv;
    }
}

void sl_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        _Float16 h;
        memcpy(&h, src + i, sizeof h);
        dst[i] = (float)h;
    }
}

void sl_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        _Float16 h = (_Float16)src[i];
        memcpy(dst + i, &h, sizeof h);
    }
}
