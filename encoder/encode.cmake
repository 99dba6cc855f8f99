target_sources(sightline PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/encode_cmd.c
                                 ${CMAKE_CURRENT_SOURCE_DIR}/encode_files.c)
