/*
 * kernels/cpu/vecops.c - small vector kernels on the CPU.
 */
#include "kernels/kernels.h"

#include <math.h>

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
