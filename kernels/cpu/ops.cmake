# kernels/cpu/ops.cmake - CPU transformer ops
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cpu/ops.c)
# Backward passes and training objectives (the trainer's first brick).
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cpu/ops_backward.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/cpu/loss.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/cpu/loss_shard.c)
sl_add_test(test_grad LABELS unit)
