# encoder/tokenizer.cmake - sources and tests of the tokenizer part
target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_train.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_cmd.c)

# Unit test: hand-checked cases on a small hand-written vocabulary, round
# trips, malformed vocab.json / merges.txt, training. The parity run trains a
# vocabulary on generated captions and compares the ids with an independent
# Python implementation (tests/reference/clip_tokenizer_ref.py; skips, 77,
# when /usr/bin/python3 lacks the regex module).
sl_add_test(test_tokenizer LABELS unit)
sl_add_test(test_tokenizer_parity SOURCES test_tokenizer.c LABELS parity
            ARGS --parity ${CMAKE_SOURCE_DIR}/tests/reference/clip_tokenizer_ref.py)
