/*
 * kernels/cpu/clones.h - SL_CLONES: compile an elementwise kernel once per
 * x86-64 level (AVX-512, AVX2, baseline) and pick one at load time (GCC
 * target_clones). Off under clang and AddressSanitizer, where it is a no-op.
 */
#ifndef SL_KERNELS_CPU_CLONES_H
#define SL_KERNELS_CPU_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define SL_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SL_CLONES
#endif

#endif
