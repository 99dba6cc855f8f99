# kernels/cpu/ops.cmake - CPU transformer ops
