# query/grounding.cmake: `sightline eval grounding` (Flickr30K Entities and
# RefCOCO/+/g readers, accuracy at IoU >= 0.5) and its tests.
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/entities.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/refcoco.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/eval_grounding.c)
sl_add_test(test_grounding_readers LABELS unit)
add_test(NAME eval_grounding_cli
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/eval_grounding_cli_test.py
                 $<TARGET_FILE:sightline-cli> ${CMAKE_SOURCE_DIR}/tests/reference
                 ${CMAKE_BINARY_DIR}/eval_grounding_cli_work)
set_tests_properties(eval_grounding_cli PROPERTIES LABELS integration TIMEOUT 600 SKIP_RETURN_CODE 77)
