# query/retrieval.cmake - `sightline eval retrieval`: Karpathy split reader,
# recall metrics, the command; its unit and integration tests.
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/eval_retrieval.c)
sl_add_test(test_eval_retrieval LABELS unit)
if(BUILD_TESTING)
    add_test(NAME eval_retrieval_cli
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/eval_retrieval_cli_test.py
                     $<TARGET_FILE:sightline-cli> $<TARGET_FILE:test_eval_retrieval>
                     ${CMAKE_SOURCE_DIR}/tests/reference ${CMAKE_BINARY_DIR}/eval_retrieval_work)
    set_tests_properties(eval_retrieval_cli PROPERTIES LABELS integration TIMEOUT 600)
endif()
