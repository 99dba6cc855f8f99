/*
 * common/json_file.h - read a whole JSON file strictly (size bounded,
 * duplicate keys rejected), for every reader of JSON files in the library.
 * Internal: it exposes jansson's json_t.
 */
#ifndef SL_COMMON_JSON_FILE_H
#define SL_COMMON_JSON_FILE_H

#include "sightline/common.h"

#include <jansson.h>

/* Parse `path` (at most max_bytes) into *out (the caller json_decref's it).
 * Errors: those of sl_read_file (SL_ERR_NOT_FOUND, SL_ERR_LIMIT, ...), or
 * SL_ERR_FORMAT "PATH line L, column C: what jansson says". */
sl_status sl_json_load_file(const char *path, size_t max_bytes, json_t **out);

#endif
