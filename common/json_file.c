/*
 * common/json_file.c - strict whole-file JSON reading.
 */
#include "common/json_file.h"

#include <stdlib.h>

sl_status sl_json_load_file(const char *path, size_t max_bytes, json_t **out) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, max_bytes, &buf, &len);
    if (st) return st;
    json_error_t err;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    free(buf);
    if (!root)
        return sl_set_error(SL_ERR_FORMAT, "%s line %d, column %d: %s", path, err.line, err.column,
                            err.text);
    *out = root;
    return SL_OK;
}
