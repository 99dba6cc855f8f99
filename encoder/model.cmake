# encoder/model.cmake - sources and tests of the model part (CLIP dual encoder)
target_sources(sightline PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/clip_config.c
    ${CMAKE_CURRENT_SOURCE_DIR}/clip_weights.c
    ${CMAKE_CURRENT_SOURCE_DIR}/clip_forward.c
    ${CMAKE_CURRENT_SOURCE_DIR}/encoder.c)

# Unit: load errors and input validation (no Python needed).
sl_add_test(test_encoder_unit SOURCES test_encoder_unit.c LABELS unit)
# Parity against the PyTorch reference (skips when /usr/bin/python3 lacks torch).
sl_add_test(test_encoder SOURCES test_encoder.c LABELS parity
    ARGS ${CMAKE_SOURCE_DIR}/tests/reference/clip_ref.py)
