# query/lookup.cmake: `sightline query` (batch text/image/phrase lookups,
# fine re-ranking, the HTML page), `sightline report` (one page from query
# results and evaluation figures) and their tests.
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/query.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/report.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/report_cmd.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/query_cmd.c)
sl_add_test(test_query LABELS unit)
if(BUILD_TESTING)
    add_test(NAME query_cli
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/query_cli_test.py
                     $<TARGET_FILE:sightline-cli> ${CMAKE_SOURCE_DIR}/tests/reference
                     ${CMAKE_BINARY_DIR}/query_cli_work)
    set_tests_properties(query_cli PROPERTIES LABELS integration TIMEOUT 600
                                               SKIP_RETURN_CODE 77)
endif()
if(BUILD_TESTING)
    add_test(NAME report_cli
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/report_cli_test.py
                     $<TARGET_FILE:sightline-cli> ${CMAKE_SOURCE_DIR}/tests/reference
                     ${CMAKE_BINARY_DIR}/report_cli_work)
    set_tests_properties(report_cli PROPERTIES LABELS integration TIMEOUT 600
                                                SKIP_RETURN_CODE 77)
endif()
