# kernels/cpu/ops.cmake - CPU transformer ops
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cpu/ops.c)
