/*
 * encoder/default_model.c - where the model comes from when a command is
 * given no --model: $SIGHTLINE_MODEL, the installed copy beside the binary,
 * or the source tree's models/demo (see sightline/default_model.h).
 */
#include "sightline/default_model.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef SL_SOURCE_DIR
#define SL_SOURCE_DIR NULL /* set by CMake to CMAKE_SOURCE_DIR */
#endif

#define INSTALLED_REL "../share/sightline/models/demo" /* from the binary's folder */
#define SOURCE_REL    "models/demo"                    /* from the source tree */

/* ------------------------------------------------------------------------ */
/* Candidates                                                               */
/* ------------------------------------------------------------------------ */

/* 1 when `dir` holds a model (a config.json); else 0 and `why` says what
 * is missing. */
static int dir_has_model(const char *dir, char *why, size_t cap) {
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        snprintf(why, cap, "%s", errno == ENOENT ? "not there" : strerror(errno));
        return 0;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(why, cap, "not a directory");
        return 0;
    }
    char cfg[PATH_MAX + 16];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (stat(cfg, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(why, cap, "no config.json");
        return 0;
    }
    return 1;
}

/* The absolute, normalised form of an existing `path` (malloc'ed), or a
 * copy of it when realpath fails. NULL when out of memory. */
static char *absolute(const char *path) {
    char real[PATH_MAX];
    return strdup(realpath(path, real) ? real : path);
}

/* Append "; " + text to the list of what was tried. */
static void tried_add(char *tried, size_t cap, const char *what, const char *path,
                      const char *why) {
    size_t n = strlen(tried);
    if (n + 1 >= cap) return;
    if (snprintf(tried + n, cap - n, "%s%s %s (%s)", n ? "; " : "", what, path, why) < 0)
        tried[n] = '\0'; /* a longer list is cut short */
}

sl_status sl_default_model_find(const char *env, const char *exe, const char *source_dir,
                                char **path, const char **from) {
    char tried[2048] = "", why[256];
    *path = NULL;
    if (from) *from = NULL;

    /* 1. the environment: when set it must be right */
    if (env && *env) {
        struct stat sb;
        int ok = stat(env, &sb) == 0 &&
                 (S_ISREG(sb.st_mode) || (S_ISDIR(sb.st_mode) && dir_has_model(env, why, 1)));
        if (!ok) {
            dir_has_model(env, why, sizeof why);
            return sl_set_error(SL_ERR_NOT_FOUND,
                                "%s=%s: no model there (%s); it must name a model directory "
                                "(with config.json) or a .safetensors file",
                                SL_MODEL_ENV, env, why);
        }
        if (!(*path = strdup(env))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        if (from) *from = SL_MODEL_ENV;
        return SL_OK;
    }
    snprintf(tried, sizeof tried, "%s (not set)", SL_MODEL_ENV);

    /* 2. installed: <bin>/../share/sightline/models/demo */
    if (exe && *exe) {
        char real[PATH_MAX], up[PATH_MAX + 4], prefix[PATH_MAX];
        char cand[PATH_MAX + sizeof INSTALLED_REL + 2];
        const char *e = realpath(exe, real) ? real : exe;
        const char *slash = strrchr(e, '/');
        int dl = slash ? (int)(slash - e) : 1;
        snprintf(up, sizeof up, "%.*s/..", dl, slash ? e : ".");
        /* the prefix without "..", so that messages show a plain path */
        snprintf(cand, sizeof cand, "%s/%s", realpath(up, prefix) ? prefix : up, INSTALLED_REL + 3);
        if (dir_has_model(cand, why, sizeof why)) {
            if (!(*path = absolute(cand))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
            if (from) *from = "installed";
            return SL_OK;
        }
        tried_add(tried, sizeof tried, "installed", cand, why);
    }

    /* 3. the source tree */
    if (source_dir && *source_dir) {
        char cand[PATH_MAX + sizeof SOURCE_REL + 2];
        snprintf(cand, sizeof cand, "%s/%s", source_dir, SOURCE_REL);
        if (dir_has_model(cand, why, sizeof why)) {
            if (!(*path = absolute(cand))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
            if (from) *from = "source tree";
            return SL_OK;
        }
        tried_add(tried, sizeof tried, "source tree", cand, why);
    }
    return sl_set_error(SL_ERR_NOT_FOUND,
                        "no --model given and no default model found; tried %s. Give --model "
                        "PATH or set %s",
                        tried, SL_MODEL_ENV);
}

sl_status sl_default_model(char **path, const char **from) {
    return sl_default_model_find(getenv(SL_MODEL_ENV), "/proc/self/exe", SL_SOURCE_DIR, path, from);
}

/* ------------------------------------------------------------------------ */
/* For commands                                                             */
/* ------------------------------------------------------------------------ */

sl_status sl_model_or_default(const char *given, const char **model, char **owned) {
    static atomic_int logged;
    *owned = NULL;
    if (given) {
        *model = given;
        return SL_OK;
    }
    const char *from;
    sl_status st = sl_default_model(owned, &from);
    if (st) return st;
    *model = *owned;
    if (!atomic_exchange(&logged, 1)) SL_INFO("model: %s (the default, from %s)", *owned, from);
    return SL_OK;
}
