/*
 * common/progress.c - the one-line progress display (rate, ETA) on a TTY.
 */
#include "sightline/common.h"
#include "common_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sl_progress {
    char label[64];     /* what is counted ("encode", "index") */
    uint64_t total;     /* units expected; 0 = unknown */
    uint64_t done;      /* units finished */
    double start;       /* sl_now() at creation */
    double last_draw;   /* sl_now() at the last redraw */
    int enabled;        /* 1 when drawing (stderr is a TTY and not quiet) */
    pthread_mutex_t mu; /* guards done/total/last_draw and drawing */
};

/* Set while some progress line is on stderr without its newline. */
static int sl_progress_line_open;

double sl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t sl_format_duration(char *buf, size_t cap, double seconds) {
    if (cap == 0) return 0;
    if (!(seconds >= 0) || seconds > 359999999.0) return (size_t)snprintf(buf, cap, "--:--");
    uint64_t s = (uint64_t)(seconds + 0.5);
    uint64_t h = s / 3600, m = (s / 60) % 60, sec = s % 60;
    int n = h ? snprintf(buf, cap, "%llu:%02llu:%02llu", (unsigned long long)h,
                         (unsigned long long)m, (unsigned long long)sec)
              : snprintf(buf, cap, "%llu:%02llu", (unsigned long long)m, (unsigned long long)sec);
    if (n < 0) return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t sl_progress_format(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
                          double elapsed_s) {
    if (cap == 0) return 0;
    double rate = elapsed_s > 0 ? (double)done / elapsed_s : 0.0;
    char rate_s[32];
    if (rate >= 100)
        snprintf(rate_s, sizeof rate_s, "%.0f/s", rate);
    else
        snprintf(rate_s, sizeof rate_s, "%.1f/s", rate);
    char el[32];
    sl_format_duration(el, sizeof el, elapsed_s);
    int n;
    if (total > 0) {
        double pct = 100.0 * (double)done / (double)total;
        char eta[48];
        if (done >= total)
            snprintf(eta, sizeof eta, "done in %s", el);
        else if (rate > 0) {
            char d[24];
            sl_format_duration(d, sizeof d, (double)(total - done) / rate);
            snprintf(eta, sizeof eta, "ETA %s", d);
        } else
            snprintf(eta, sizeof eta, "ETA --:--");
        n = snprintf(buf, cap, "%s %llu/%llu %5.1f%% %s %s", label, (unsigned long long)done,
                     (unsigned long long)total, pct, rate_s, eta);
    } else {
        n = snprintf(buf, cap, "%s %llu %s %s", label, (unsigned long long)done, rate_s, el);
    }
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

sl_progress *sl_progress_create(const char *label, uint64_t total, int quiet) {
    sl_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->start = sl_now();
    p->last_draw = 0;
    p->enabled = !quiet && isatty(STDERR_FILENO) && sl_log_get_level() < SL_LOG_OFF;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

/* Draw the line; caller holds p->mu. */
static void sl_progress_draw(sl_progress *p, double now, int final) {
    char line[256];
    sl_progress_format(line, sizeof line, p->label, p->done, p->total, now - p->start);
    fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
    fflush(stderr);
    __atomic_store_n(&sl_progress_line_open, final ? 0 : 1, __ATOMIC_RELEASE);
    p->last_draw = now;
}

void sl_progress_add(sl_progress *p, uint64_t n) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->done += n;
    if (p->enabled) {
        double now = sl_now();
        if (now - p->last_draw >= 0.1) sl_progress_draw(p, now, 0);
    }
    pthread_mutex_unlock(&p->mu);
}

void sl_progress_set_total(sl_progress *p, uint64_t total) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->total = total;
    pthread_mutex_unlock(&p->mu);
}

void sl_progress_finish(sl_progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    if (p->enabled) sl_progress_draw(p, sl_now(), 1);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void sl_progress_clear_line(FILE *out) {
    if (out != stderr) return;
    if (__atomic_exchange_n(&sl_progress_line_open, 0, __ATOMIC_ACQ_REL)) fputs("\r\033[K", stderr);
}
