/*
 * bench/bench_gpu_mem.h - device memory and pinned host buffers for the
 * benchmarks' --device cuda runs (a target compiled with SL_BENCH_CUDA links
 * the CUDA runtime; elsewhere these report -1 and fall back to malloc).
 *
 * mem_begin(dev) notes the free device memory once the context exists;
 * mem_sample() the lowest free memory since; mem_used_mb() their difference
 * (what the run allocated beyond the context), -1 when unknown. host_alloc
 * gives pinned memory where it can (*pinned says which), host_free frees
 * either kind. One run per process (static state).
 */
#ifndef SL_BENCH_GPU_MEM_H
#define SL_BENCH_GPU_MEM_H

#include <stdlib.h>

#ifdef SL_BENCH_CUDA
#include <cuda_runtime_api.h>

static size_t mem_free0, mem_min_free;
static int mem_on;
static inline void mem_begin(int dev) {
    size_t f, t;
    mem_on = cudaSetDevice(dev) == cudaSuccess && cudaFree(0) == cudaSuccess &&
             cudaMemGetInfo(&f, &t) == cudaSuccess;
    if (mem_on) mem_free0 = mem_min_free = f;
}
static inline void mem_sample(void) {
    size_t f, t;
    if (mem_on && cudaMemGetInfo(&f, &t) == cudaSuccess && f < mem_min_free) mem_min_free = f;
}
static inline double mem_used_mb(void) {
    return mem_on ? (double)(mem_free0 - mem_min_free) / 1048576.0 : -1;
}
static inline void *host_alloc(size_t bytes, int *pinned) {
    void *p = NULL;
    *pinned = cudaMallocHost(&p, bytes) == cudaSuccess;
    return *pinned ? p : malloc(bytes);
}
static inline void host_free(void *p, int pinned) {
    if (pinned)
        cudaFreeHost(p);
    else
        free(p);
}
#else
static inline void mem_begin(int dev) {
    (void)dev;
}
static inline void mem_sample(void) {}
static inline double mem_used_mb(void) {
    return -1;
}
static inline void *host_alloc(size_t bytes, int *pinned) {
    *pinned = 0;
    return malloc(bytes);
}
static inline void host_free(void *p, int pinned) {
    (void)pinned;
    free(p);
}
#endif

#endif
