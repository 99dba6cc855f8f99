/*
 * sightline/sightline.h - the library's version and build description, and
 * the umbrella include for programs linking libsightline.
 */
#ifndef SIGHTLINE_H
#define SIGHTLINE_H

#include "sightline/common.h"
#include "sightline/npy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "MAJOR.MINOR.PATCH" of the library. Static string. */
const char *sl_version(void);

/* Multi-line description of the build: dependencies and their versions,
 * enabled features (CUDA, NCCL, sanitizers). Static string. */
const char *sl_build_info(void);

/* Number of usable CUDA devices; 0 when the build has no CUDA or the
 * machine has no GPU (never an error). */
int sl_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_H */
