# encoder/default_model.cmake - the model used when a command gets no --model
# ($SIGHTLINE_MODEL, <bin>/../share/sightline/models/demo, the source tree's
# models/demo) and its tests.
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/default_model.c)
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/default_model.c
    DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTIES
    COMPILE_DEFINITIONS "SL_SOURCE_DIR=\"${CMAKE_SOURCE_DIR}\"")
sl_add_test(test_default_model LABELS unit)
if(BUILD_TESTING)
    add_test(NAME default_model_cli
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/default_model_cli_test.py
                     $<TARGET_FILE:sightline-cli> ${CMAKE_SOURCE_DIR}/tests/reference
                     ${CMAKE_BINARY_DIR}/default_model_cli_work)
    set_tests_properties(default_model_cli PROPERTIES LABELS integration TIMEOUT 600
                                                       SKIP_RETURN_CODE 77)
endif()
