/*
 * sightline/common.h - status codes, error messages, logging, progress and
 * file helpers shared by every module.
 *
 * Errors: every fallible function returns an sl_status (SL_OK == 0). On
 * failure the function leaves a message in a thread-local buffer, read with
 * sl_last_error(); the message names the file, tensor, line or URL at fault.
 * Library code never exits the process.
 */
#ifndef SIGHTLINE_COMMON_H
#define SIGHTLINE_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status and errors                                                        */
/* ------------------------------------------------------------------------ */

typedef enum sl_status {
    SL_OK = 0,
    SL_ERR_INVALID = 1,     /* bad argument from the caller */
    SL_ERR_IO = 2,          /* open/read/write/rename failed */
    SL_ERR_FORMAT = 3,      /* input bytes violate their format */
    SL_ERR_NOMEM = 4,       /* allocation failed */
    SL_ERR_LIMIT = 5,       /* a size read from input exceeds a bound */
    SL_ERR_UNSUPPORTED = 6, /* valid input we do not handle (dtype, layout) */
    SL_ERR_NOT_FOUND = 7,   /* a file, key or tensor is missing */
    SL_ERR_EXTERNAL = 8,    /* a dependency (FAISS, RocksDB, curl...) failed */
    SL_ERR_BUSY = 9,        /* a lock is held by another process */
    SL_ERR_INTERRUPTED = 10 /* stopped by a signal or a cancel request */
} sl_status;

/* Short stable name of a status ("ok", "io", "format", ...). Never NULL. */
const char *sl_status_name(sl_status st);

/* Record `fmt` as this thread's last error and return `st` unchanged, so a
 * failure reads `return sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(e));`.
 * Messages longer than the buffer (1 KiB) are truncated. */
sl_status sl_set_error(sl_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend context to the current message ("loading model: " + old message)
 * and return `st`. */
sl_status sl_wrap_error(sl_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread's last error message; "" when none. Valid until the next
 * sl_set_error/sl_wrap_error/sl_clear_error on this thread. */
const char *sl_last_error(void);

/* Forget this thread's last error. */
void sl_clear_error(void);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum sl_log_level {
    SL_LOG_DEBUG = 0,
    SL_LOG_INFO = 1,
    SL_LOG_WARN = 2,
    SL_LOG_ERROR = 3,
    SL_LOG_OFF = 4
} sl_log_level;

/* Parse "debug", "info", "warn"/"warning", "error", "off" (any case).
 * Returns SL_ERR_INVALID for anything else. */
sl_status sl_log_level_parse(const char *s, sl_log_level *out);

/* Current threshold. The first call reads $SL_LOG (default "info"); an
 * unknown value there falls back to info with one warning. */
sl_log_level sl_log_get_level(void);
void sl_log_set_level(sl_log_level level);

/* Where log lines go (default stderr). NULL restores stderr. */
void sl_log_set_stream(FILE *f);

/* Write "sightline: <level>: <message>\n" when `level` passes the threshold.
 * One line is written with a single stdio call, so lines from several
 * threads never interleave. A progress line on screen is cleared first. */
void sl_log(sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_logv(sl_log_level level, const char *fmt, va_list ap);

#define SL_DEBUG(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define SL_INFO(...)  sl_log(SL_LOG_INFO, __VA_ARGS__)
#define SL_WARN(...)  sl_log(SL_LOG_WARN, __VA_ARGS__)
#define SL_ERROR(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Progress                                                                 */
/* ------------------------------------------------------------------------ */

/* A one-line progress display on stderr ("encode  1200/5000  24.0%
 * 310.5/s  ETA 0:12"), redrawn at most 10 times a second. It is silent when
 * stderr is not a terminal or when created quiet. Safe to advance from
 * several threads. */
typedef struct sl_progress sl_progress;

/* Create a display for `total` units (0 = unknown total: no percent, no
 * ETA). `label` is copied. Returns NULL only when out of memory. */
sl_progress *sl_progress_create(const char *label, uint64_t total, int quiet);

/* Add `n` finished units; redraws when due. NULL-safe. */
void sl_progress_add(sl_progress *p, uint64_t n);

/* Change the total (when it becomes known later). NULL-safe. */
void sl_progress_set_total(sl_progress *p, uint64_t total);

/* Draw the final line, end it with a newline, free `p`. NULL-safe. */
void sl_progress_finish(sl_progress *p);

/* Format one progress line into buf (always NUL-terminated). `elapsed_s`
 * is the time since the start. Pure function; exposed for tests. Returns
 * the length written. */
size_t sl_progress_format(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
                          double elapsed_s);

/* Format a duration in seconds as "M:SS" or "H:MM:SS". */
size_t sl_format_duration(char *buf, size_t cap, double seconds);

/* Monotonic time in seconds. */
double sl_now(void);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/* Read a whole file into a new NUL-terminated buffer (*out, length *len
 * without the NUL); fails with SL_ERR_LIMIT when the file is larger than
 * `max_bytes`. The caller frees *out. */
sl_status sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* As sl_read_file, and "-" reads standard input to its end (SL_ERR_LIMIT
 * beyond `max_bytes`). */
sl_status sl_read_input(const char *path, size_t max_bytes, char **out, size_t *len);

/* Replace `path` atomically with `len` bytes: write "<path>.tmp.<pid>",
 * fsync it, rename over `path`, fsync the directory. On failure `path` is
 * untouched and the temp file removed. */
sl_status sl_write_file_atomic(const char *path, const void *data, size_t len);

/* fsync the directory that holds `path` (after a rename into it). */
sl_status sl_fsync_parent_dir(const char *path);

/* "dir/name" in a new string (malloc'ed; NULL when out of memory). */
char *sl_path_join(const char *dir, const char *name);

/* mkdir -p with mode 0755. Succeeds when the directory already exists. */
sl_status sl_mkdir_p(const char *path);

/* Parse a whole decimal integer argument within [lo, hi]: 0 and *out set,
 * or -1 (empty, trailing characters, out of range or overflow). */
int sl_parse_int_arg(const char *s, long long lo, long long hi, long long *out);

/* The same for a whole decimal number within [lo, hi] (NaN refused). */
int sl_parse_double_arg(const char *s, double lo, double hi, double *out);

struct option;

/* Report a bad option value on stderr as "sightline CMD: bad value 'VALUE'
 * for --NAME", NAME being the entry of `opts` (getopt_long's table, ended
 * by a zero entry) whose val is `val`, or -V for a short option V that has
 * no long name: the same words whether the value came as "--name VALUE" or
 * "--name=VALUE". */
void sl_cli_bad_value(const char *cmd, const struct option *opts, int val, const char *value);

/* Checked size arithmetic: return 0 and store the result, or return -1 on
 * overflow (nothing stored). */
int sl_mul_size(size_t a, size_t b, size_t *out);
int sl_add_size(size_t a, size_t b, size_t *out);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_COMMON_H */
