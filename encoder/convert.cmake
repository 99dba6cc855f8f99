# encoder/convert.c: `sightline convert` (a model directory in another dtype).
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/convert.c)
if(BUILD_TESTING)
    add_test(NAME convert_cli
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/convert_cli_test.py
                     $<TARGET_FILE:sightline-cli> ${CMAKE_SOURCE_DIR}/tests/reference
                     ${CMAKE_BINARY_DIR}/convert_cli_work)
    set_tests_properties(convert_cli PROPERTIES LABELS integration TIMEOUT 600)
endif()
