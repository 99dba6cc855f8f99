/*
 * tests/testutil.h - the minimal check macros every C test uses: a failed
 * check prints file:line and the expression, and the test exits 1 at the
 * end when any check failed. SL_TEST_SKIP (77) is ctest's skip code.
 */
#ifndef SL_TESTUTIL_H
#define SL_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_TEST_SKIP 77

static int sl_test_failures;
static int sl_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        sl_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            sl_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        sl_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            sl_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* The status is SL_OK; on failure print the last error. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        sl_status st_ = (expr);                                                                    \
        CHECK_MSG(st_ == SL_OK, "status %d: %s", (int)st_, sl_last_error());                       \
    } while (0)

/* The status is `want` and the message contains `needle`. */
#define CHECK_ERR(expr, want, needle)                                                              \
    do {                                                                                           \
        sl_status st_ = (expr);                                                                    \
        CHECK_MSG(st_ == (want), "status %d, wanted %d (%s)", (int)st_, (int)(want),               \
                  sl_last_error());                                                                \
        CHECK_MSG(strstr(sl_last_error(), (needle)) != NULL, "message '%s' lacks '%s'",            \
                  sl_last_error(), (needle));                                                      \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        CHECK_MSG(fabs(a_ - b_) <= (tol), "%g vs %g (tol %g)", a_, b_, (double)(tol));             \
    } while (0)

/* Print the tally and return the process exit code. */
static inline int sl_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}

/* A fresh temporary directory under $TMPDIR (or /tmp); exits on failure. */
static inline const char *sl_test_tmpdir(void) {
    static char dir[512];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sltest.XXXXXX", base && *base ? base : "/tmp");
    extern char *mkdtemp(char *);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    return dir;
}

#endif
