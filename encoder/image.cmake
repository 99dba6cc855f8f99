# encoder/image.cmake - sources and tests of the image part
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/image.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/image_resize.c)
sl_add_test(test_image LABELS unit)
sl_add_test(test_image_parity SOURCES test_image.c LABELS parity
            ARGS --parity ${CMAKE_SOURCE_DIR}/tests/reference/image_ref.py)
