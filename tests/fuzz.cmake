# tests/fuzz.cmake - robustness targets of the dataset readers (Karpathy
# split JSON, Flickr30K Entities, RefCOCO JSON): tests/fuzz_readers.c.
#
# fuzz_driver runs them in every build without libFuzzer (seeds, every
# truncation, boundary cases, a seeded mutation loop; a few seconds), so the
# sanitizer pass of CI checks them for memory errors, leaks and UB.
sl_add_test(fuzz_driver SOURCES fuzz_driver.c fuzz_readers.c LABELS unit)
if(TARGET fuzz_driver)
    set_tests_properties(fuzz_driver PROPERTIES TIMEOUT 300)
endif()

# libFuzzer executables (clang, -DSL_FUZZ=ON): fuzz_karpathy, fuzz_refcoco,
# fuzz_entities. The reader sources are compiled in with the fuzzer's
# coverage instrumentation; what their files also hold (the eval commands)
# links from libsightline, so unlike fuzz_safetensors these need the library
# to build with that clang (kernels/cpu/vecops.c's _Float16: clang >= 15).
# A starting corpus: fuzz_driver --write-seeds DIR (DIR/<reader>/seed*);
# then e.g. fuzz_entities -max_len=8192 DIR/entities.
if(SL_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    foreach(_sl_reader karpathy refcoco entities)
        add_executable(fuzz_${_sl_reader}
                       ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_readers.c
                       ${CMAKE_SOURCE_DIR}/query/eval_retrieval.c
                       ${CMAKE_SOURCE_DIR}/query/entities.c
                       ${CMAKE_SOURCE_DIR}/query/refcoco.c
                       ${CMAKE_SOURCE_DIR}/query/eval_grounding.c
                       ${CMAKE_SOURCE_DIR}/query/ground.c
                       ${CMAKE_SOURCE_DIR}/common/json_file.c
                       ${CMAKE_SOURCE_DIR}/common/fs.c
                       ${CMAKE_SOURCE_DIR}/common/status.c)
        target_include_directories(fuzz_${_sl_reader} PRIVATE ${CMAKE_SOURCE_DIR}
                                   ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_BINARY_DIR}/generated)
        target_compile_definitions(fuzz_${_sl_reader} PRIVATE _GNU_SOURCE
                                   SL_FUZZ_TARGET=sl_fuzz_${_sl_reader})
        target_compile_options(fuzz_${_sl_reader} PRIVATE ${SL_WARN_FLAGS} -g -O1
                               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
        target_link_options(fuzz_${_sl_reader} PRIVATE -fsanitize=fuzzer,address,undefined)
        target_link_libraries(fuzz_${_sl_reader} PRIVATE sightline)
        set_target_properties(fuzz_${_sl_reader} PROPERTIES LINKER_LANGUAGE CXX)
    endforeach()
elseif(SL_FUZZ)
    message(WARNING "SL_FUZZ needs clang; the reader fuzz targets are not built")
endif()
