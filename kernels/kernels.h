/*
 * kernels/kernels.h - the compute kernels (CPU, and CUDA when built).
 * Nothing here knows about files or models: plain arrays and sizes in,
 * plain arrays out.
 */
#ifndef SL_KERNELS_H
#define SL_KERNELS_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CPU ----------------------------------------------------------------- */

/* Scale each row of x [n, d] to unit L2 norm in place. Rows whose norm is
 * below 1e-12 are left as they are. */
void sl_cpu_l2_normalize_rows(float *x, size_t n, size_t d);

/* Convert n IEEE half-precision values to float32 and back (round to
 * nearest even, overflow to infinity). */
void sl_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void sl_f32_to_f16(const float *src, uint16_t *dst, size_t n);

/* ---- CUDA (kernels/cuda/) ------------------------------------------------ */

/* Same as sl_cpu_l2_normalize_rows on device `dev`, for host data x [n, d]
 * (copied in and back). SL_ERR_UNSUPPORTED when the build has no CUDA or
 * the device is absent; SL_ERR_EXTERNAL with the CUDA message on failure. */
sl_status sl_cuda_l2_normalize_rows(int dev, float *x, size_t n, size_t d);

#ifdef __cplusplus
}
#endif

#endif
