# encoder/safetensors.cmake - sources and tests of the safetensors part
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/safetensors.c)

# Unit test: fixtures written by sl_safetensors_write plus hand-made malformed
# files. The second registration runs the same executable against a file
# written by an independent Python/torch writer (skips, 77, without torch).
sl_add_test(test_safetensors LABELS unit)
if(BUILD_TESTING)
    add_test(NAME test_safetensors_torch
             COMMAND test_safetensors --reference ${CMAKE_SOURCE_DIR}/tests/reference/write_safetensors.py)
    set_tests_properties(test_safetensors_torch PROPERTIES
                         LABELS "unit;parity" SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()

# libFuzzer target (clang only): compiled directly from the parser and
# common/ sources so it does not drag in the C++ FAISS static libraries.
option(SL_FUZZ "Build the libFuzzer targets (clang only)" OFF)
if(SL_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_safetensors
                   ${CMAKE_SOURCE_DIR}/tests/fuzz_safetensors.c
                   ${CMAKE_CURRENT_SOURCE_DIR}/safetensors.c
                   ${CMAKE_SOURCE_DIR}/common/status.c
                   ${CMAKE_SOURCE_DIR}/common/log.c
                   ${CMAKE_SOURCE_DIR}/common/progress.c
                   ${CMAKE_SOURCE_DIR}/common/fs.c)
    target_include_directories(fuzz_safetensors PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
    target_compile_definitions(fuzz_safetensors PRIVATE _GNU_SOURCE)
    target_compile_options(fuzz_safetensors PRIVATE ${SL_WARN_FLAGS} -g -O1
                           -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
    target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_safetensors PRIVATE PkgConfig::JANSSON Threads::Threads m)
elseif(SL_FUZZ)
    message(WARNING "SL_FUZZ needs clang; fuzz_safetensors not built")
endif()
