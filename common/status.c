/*
 * common/status.c - status names, the thread-local last-error message and the
 * command-line value helpers.
 */
#include "sightline/common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_ERROR_CAP 1024

/* This thread's last error message (NUL-terminated, possibly empty). */
static _Thread_local char sl_error_buf[SL_ERROR_CAP];

const char *sl_status_name(sl_status st) {
    switch (st) {
        case SL_OK:
            return "ok";
        case SL_ERR_INVALID:
            return "invalid argument";
        case SL_ERR_IO:
            return "i/o error";
        case SL_ERR_FORMAT:
            return "format error";
        case SL_ERR_NOMEM:
            return "out of memory";
        case SL_ERR_LIMIT:
            return "limit exceeded";
        case SL_ERR_UNSUPPORTED:
            return "unsupported";
        case SL_ERR_NOT_FOUND:
            return "not found";
        case SL_ERR_EXTERNAL:
            return "library error";
        case SL_ERR_BUSY:
            return "busy";
        case SL_ERR_INTERRUPTED:
            return "interrupted";
    }
    return "unknown status";
}

sl_status sl_set_error(sl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sl_error_buf, sizeof sl_error_buf, fmt, ap);
    va_end(ap);
    return st;
}

sl_status sl_wrap_error(sl_status st, const char *fmt, ...) {
    char old[SL_ERROR_CAP];
    memcpy(old, sl_error_buf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sl_error_buf, sizeof sl_error_buf, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof sl_error_buf)
        snprintf(sl_error_buf + n, sizeof sl_error_buf - (size_t)n, "%s", old);
    return st;
}

const char *sl_last_error(void) {
    return sl_error_buf;
}

void sl_clear_error(void) {
    sl_error_buf[0] = '\0';
}

int sl_mul_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}

int sl_add_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}

int sl_parse_double_arg(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int sl_parse_int_arg(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

void sl_cli_bad_value(const char *cmd, const struct option *opts, int val, const char *value) {
    const char *name = NULL;
    for (const struct option *o = opts; o->name && !name; o++)
        if (!o->flag && o->val == val) name = o->name;
    if (name)
        fprintf(stderr, "sightline %s: bad value '%s' for --%s\n", cmd, value ? value : "", name);
    else if (val > ' ' && val < 127) /* a short option alone: -k */
        fprintf(stderr, "sightline %s: bad value '%s' for -%c\n", cmd, value ? value : "", val);
    else
        fprintf(stderr, "sightline %s: bad value '%s'\n", cmd, value ? value : "");
}
