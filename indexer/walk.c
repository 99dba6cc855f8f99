/*
 * indexer/walk.c - recursive, sorted, symlink-safe directory walk.
 */
#include "sightline/walk.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

/* Directories entered so far (device, inode), to detect loops and
 * directories reached twice through links. */
typedef struct walk_state {
    const sl_walk_opts *opts;
    sl_walk_file_fn on_file;
    sl_walk_error_fn on_error;
    void *ctx;
    size_t root_len; /* length of the root path prefix (for relative matching) */
    dev_t *dev;      /* visited directories */
    ino_t *ino;
    size_t nvisited, cap;
    int stopped; /* the callback asked to stop */
} walk_state;

static int seen_dir(walk_state *w, const struct stat *st) {
    for (size_t i = 0; i < w->nvisited; i++)
        if (w->dev[i] == st->st_dev && w->ino[i] == st->st_ino) return 1;
    return 0;
}

static int mark_dir(walk_state *w, const struct stat *st) {
    if (w->nvisited == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        dev_t *nd = realloc(w->dev, nc * sizeof *nd);
        if (!nd) return -1;
        w->dev = nd;
        ino_t *ni = realloc(w->ino, nc * sizeof *ni);
        if (!ni) return -1;
        w->ino = ni;
        w->cap = nc;
    }
    w->dev[w->nvisited] = st->st_dev;
    w->ino[w->nvisited] = st->st_ino;
    w->nvisited++;
    return 0;
}

static int match_any(const char *const *pats, size_t n, const char *name, const char *rel) {
    for (size_t i = 0; i < n; i++) {
        const char *subject = strchr(pats[i], '/') ? rel : name;
        if (fnmatch(pats[i], subject, 0) == 0) return 1;
    }
    return 0;
}

static void report(walk_state *w, const char *path, const char *reason) {
    if (w->on_error) w->on_error(w->ctx, path, reason);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_dir(walk_state *w, const char *dir);

/* Visit one entry `path` (named `name`). */
static void walk_entry(walk_state *w, const char *path, const char *name) {
    const sl_walk_opts *o = w->opts;
    const char *rel = path + w->root_len + (path[w->root_len] == '/' ? 1 : 0);
    if (!o->include_hidden && name[0] == '.') return;
    if (match_any(o->exclude, o->n_exclude, name, rel)) return;
    struct stat lst, st;
    if (lstat(path, &lst) != 0) {
        report(w, path, strerror(errno));
        return;
    }
    if (S_ISLNK(lst.st_mode)) {
        if (o->no_follow_symlinks) return;
        if (stat(path, &st) != 0) {
            report(w, path, errno == ELOOP ? "symlink loop" : "broken symlink");
            return;
        }
    } else {
        st = lst;
    }
    if (S_ISDIR(st.st_mode)) {
        if (seen_dir(w, &st)) {
            if (S_ISLNK(lst.st_mode)) report(w, path, "symlink loop (folder already walked)");
            return;
        }
        walk_dir(w, path);
    } else if (S_ISREG(st.st_mode)) {
        if (o->n_include && !match_any(o->include, o->n_include, name, rel)) return;
        if (w->on_file(w->ctx, path, &st) != 0) w->stopped = 1;
    }
}

static void walk_dir(walk_state *w, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        report(w, dir, strerror(errno));
        return;
    }
    if (mark_dir(w, &st) != 0) {
        report(w, dir, "out of memory");
        return;
    }
    DIR *d = opendir(dir);
    if (!d) {
        report(w, dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) break;
            names = nn;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_names);
    size_t dlen = strlen(dir);
    for (size_t i = 0; i < n; i++) {
        if (!w->stopped) {
            size_t plen = dlen + 1 + strlen(names[i]) + 1;
            char *path = malloc(plen);
            if (path) {
                snprintf(path, plen, "%s%s%s", dir, dlen && dir[dlen - 1] == '/' ? "" : "/",
                         names[i]);
                walk_entry(w, path, names[i]);
                free(path);
            } else {
                report(w, dir, "out of memory");
            }
        }
        free(names[i]);
    }
    free(names);
}

sl_status sl_walk(const char *root, const sl_walk_opts *opts, sl_walk_file_fn on_file,
                  sl_walk_error_fn on_error, void *ctx) {
    static const sl_walk_opts defaults = {0};
    walk_state w = {.opts = opts ? opts : &defaults,
                    .on_file = on_file,
                    .on_error = on_error,
                    .ctx = ctx,
                    .root_len = strlen(root)};
    struct stat st;
    if (stat(root, &st) != 0) {
        int e = errno;
        return sl_set_error(e == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: %s", root,
                            strerror(e));
    }
    if (S_ISREG(st.st_mode)) {
        if (on_file(ctx, root, &st) != 0) return sl_set_error(SL_ERR_INTERRUPTED, "walk stopped");
        return SL_OK;
    }
    if (!S_ISDIR(st.st_mode))
        return sl_set_error(SL_ERR_IO, "%s: not a folder or a regular file", root);
    DIR *probe = opendir(root);
    if (!probe) return sl_set_error(SL_ERR_IO, "%s: cannot open folder: %s", root, strerror(errno));
    closedir(probe);
    walk_dir(&w, root);
    free(w.dev);
    free(w.ino);
    if (w.stopped) return sl_set_error(SL_ERR_INTERRUPTED, "%s: walk stopped", root);
    return SL_OK;
}
