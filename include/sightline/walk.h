/*
 * sightline/walk.h - recursive directory walks for image corpora.
 *
 * Entries are visited in byte order of their names (deterministic across
 * runs), hidden entries (".name") are skipped unless asked, symbolic links
 * are followed with loop detection (a directory already on the current
 * path, or already walked through another link, is not entered again), and
 * names are passed on byte-exact (no UTF-8 assumption).
 */
#ifndef SIGHTLINE_WALK_H
#define SIGHTLINE_WALK_H

#include "sightline/common.h"

#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_walk_opts {
    int include_hidden;         /* visit ".name" files and folders */
    int no_follow_symlinks;     /* treat symlinks as absent */
    const char *const *include; /* fnmatch patterns; a file must match one (NULL/0: all) */
    size_t n_include;
    const char *const *exclude; /* fnmatch patterns; a match skips the file or folder */
    size_t n_exclude;
} sl_walk_opts;
/* Patterns without '/' match the entry's name; patterns with '/' match the
 * path relative to the root. */

/* Called for each regular file; `st` is its stat (after following links).
 * Return 0 to go on, non-zero to stop the walk (sl_walk then returns
 * SL_ERR_INTERRUPTED). */
typedef int (*sl_walk_file_fn)(void *ctx, const char *path, const struct stat *st);

/* Called for each entry that could not be read (unreadable folder, broken
 * link, symlink loop) with a short reason; the walk goes on. May be NULL. */
typedef void (*sl_walk_error_fn)(void *ctx, const char *path, const char *reason);

/* Walk `root` (a folder, or a single file). Fails only when root itself
 * cannot be read (SL_ERR_NOT_FOUND / SL_ERR_IO) or the callback stops. */
sl_status sl_walk(const char *root, const sl_walk_opts *opts, sl_walk_file_fn on_file,
                  sl_walk_error_fn on_error, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
