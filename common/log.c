/*
 * common/log.c - leveled logging to stderr, threshold from $SL_LOG.
 */
#include "sightline/common.h"
#include "common_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Threshold; -1 until the first use reads $SL_LOG. */
static int sl_log_threshold = -1;
/* Destination; NULL means stderr. */
static FILE *sl_log_stream;
static pthread_once_t sl_log_once = PTHREAD_ONCE_INIT;

static const char *const sl_level_names[] = {"debug", "info", "warn", "error", "off"};

sl_status sl_log_level_parse(const char *s, sl_log_level *out) {
    if (!s) return sl_set_error(SL_ERR_INVALID, "log level: missing value");
    for (int i = 0; i <= SL_LOG_OFF; i++) {
        if (strcasecmp(s, sl_level_names[i]) == 0) {
            *out = (sl_log_level)i;
            return SL_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = SL_LOG_WARN;
        return SL_OK;
    }
    return sl_set_error(SL_ERR_INVALID,
                        "log level '%s' unknown (expected debug, info, warn, error or off)", s);
}

static void sl_log_init_from_env(void) {
    const char *env = getenv("SL_LOG");
    sl_log_level lvl = SL_LOG_INFO;
    int bad = 0;
    if (env && *env && sl_log_level_parse(env, &lvl) != SL_OK) {
        lvl = SL_LOG_INFO;
        bad = 1;
    }
    if (__atomic_load_n(&sl_log_threshold, __ATOMIC_ACQUIRE) < 0)
        __atomic_store_n(&sl_log_threshold, (int)lvl, __ATOMIC_RELEASE);
    if (bad)
        fprintf(sl_log_stream ? sl_log_stream : stderr,
                "sightline: warn: SL_LOG='%s' is not a level (debug, info, warn, error, off); "
                "using info\n",
                env);
}

sl_log_level sl_log_get_level(void) {
    pthread_once(&sl_log_once, sl_log_init_from_env);
    return (sl_log_level)__atomic_load_n(&sl_log_threshold, __ATOMIC_ACQUIRE);
}

void sl_log_set_level(sl_log_level level) {
    pthread_once(&sl_log_once, sl_log_init_from_env);
    __atomic_store_n(&sl_log_threshold, (int)level, __ATOMIC_RELEASE);
}

void sl_log_set_stream(FILE *f) {
    sl_log_stream = f;
}

void sl_logv(sl_log_level level, const char *fmt, va_list ap) {
    if (level >= SL_LOG_OFF || level < sl_log_get_level()) return;
    char line[2048];
    int n = snprintf(line, sizeof line, "sightline: %s: ", sl_level_names[level]);
    if (n < 0) return;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len++] = '\n';
        line[len] = '\0';
    } else {
        line[sizeof line - 2] = '\n';
    }
    FILE *out = sl_log_stream ? sl_log_stream : stderr;
    sl_progress_clear_line(out);
    fputs(line, out);
    fflush(out);
}

void sl_log(sl_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sl_logv(level, fmt, ap);
    va_end(ap);
}
