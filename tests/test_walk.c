/*
 * tests/test_walk.c - the directory walk: sorted order, hidden entries,
 * include/exclude patterns, symlinks (followed, loops, broken), byte-exact
 * non-UTF-8 names, single-file and missing roots.
 */
#include "sightline/walk.h"
#include "testutil.h"

#include <fcntl.h>
#include <unistd.h>

typedef struct seen {
    char files[64][512];
    int nfiles;
    char errors[16][512];
    int nerrors;
} seen;

static int on_file(void *ctx, const char *path, const struct stat *st) {
    seen *s = ctx;
    (void)st;
    if (s->nfiles < 64) snprintf(s->files[s->nfiles++], 512, "%s", path);
    return 0;
}

static void on_error(void *ctx, const char *path, const char *reason) {
    seen *s = ctx;
    if (s->nerrors < 16) snprintf(s->errors[s->nerrors++], 512, "%s: %s", path, reason);
}

static void touch(const char *dir, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, "x", 1) != 1) perror("write");
        close(fd);
    }
}

static int has_file(const seen *s, const char *dir, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    for (int i = 0; i < s->nfiles; i++)
        if (!strcmp(s->files[i], p)) return 1;
    return 0;
}

int main(void) {
    const char *dir = sl_test_tmpdir();
    char p[1024], q[1024];
    const char *subdirs[] = {"b", "a", "a/deep", ".hidden", "c"};
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, subdirs[i]);
        CHECK_OK(sl_mkdir_p(p));
    }
    touch(dir, "b/2.jpg");
    touch(dir, "b/1.png");
    touch(dir, "a/deep/x.webp");
    touch(dir, "a/z.jpg");
    touch(dir, ".hidden/h.jpg");
    touch(dir, ".dot.jpg");
    touch(dir, "c/notes.txt");
    touch(dir, "c/skip.jpg");
    touch(dir, "caf\xe9\xff.jpg"); /* not valid UTF-8 */
    /* a loop (c/loop -> ..), a link to a walked folder, a broken link, a file link */
    snprintf(p, sizeof p, "%s/c/loop", dir);
    CHECK(symlink("..", p) == 0);
    snprintf(p, sizeof p, "%s/c/broken.jpg", dir);
    CHECK(symlink("nowhere.jpg", p) == 0);
    snprintf(p, sizeof p, "%s/b/2.jpg", dir);
    snprintf(q, sizeof q, "%s/link.jpg", dir);
    CHECK(symlink(p, q) == 0);

    seen s = {0};
    CHECK_OK(sl_walk(dir, NULL, on_file, on_error, &s));
    /* sorted, hidden skipped, links followed once */
    const char *want[] = {"a/deep/x.webp", "a/z.jpg",    "b/1.png",         "b/2.jpg",
                          "c/notes.txt",   "c/skip.jpg", "caf\xe9\xff.jpg", "link.jpg"};
    CHECK_MSG(s.nfiles == 8, "%d files", s.nfiles);
    for (int i = 0; i < 8 && i < s.nfiles; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, want[i]);
        CHECK_MSG(!strcmp(s.files[i], p), "file %d: %s, wanted %s", i, s.files[i], p);
    }
    int loop = 0, broken = 0;
    for (int i = 0; i < s.nerrors; i++) {
        loop += strstr(s.errors[i], "c/loop: symlink loop") != NULL;
        broken += strstr(s.errors[i], "c/broken.jpg: broken symlink") != NULL;
    }
    CHECK_MSG(loop == 1 && broken == 1 && s.nerrors == 2, "%d errors", s.nerrors);

    /* include/exclude patterns, hidden on */
    const char *inc[] = {"*.jpg"}, *exc[] = {"c", "a/deep/*"};
    sl_walk_opts o = {
        .include_hidden = 1, .include = inc, .n_include = 1, .exclude = exc, .n_exclude = 2};
    memset(&s, 0, sizeof s);
    CHECK_OK(sl_walk(dir, &o, on_file, on_error, &s));
    CHECK(has_file(&s, dir, ".hidden/h.jpg") && has_file(&s, dir, ".dot.jpg"));
    CHECK(has_file(&s, dir, "a/z.jpg") && !has_file(&s, dir, "a/deep/x.webp"));
    CHECK(!has_file(&s, dir, "b/1.png") && !has_file(&s, dir, "c/skip.jpg"));
    CHECK_MSG(s.nfiles == 6, "%d files", s.nfiles); /* .dot a/z b/2 .hidden/h café link */

    /* no symlinks */
    sl_walk_opts nolink = {.no_follow_symlinks = 1};
    memset(&s, 0, sizeof s);
    CHECK_OK(sl_walk(dir, &nolink, on_file, on_error, &s));
    CHECK(s.nfiles == 7 && s.nerrors == 0 && !has_file(&s, dir, "link.jpg"));

    /* a single file as root; a missing root; an unreadable root */
    memset(&s, 0, sizeof s);
    snprintf(p, sizeof p, "%s/a/z.jpg", dir);
    CHECK_OK(sl_walk(p, NULL, on_file, on_error, &s));
    CHECK(s.nfiles == 1 && !strcmp(s.files[0], p));
    snprintf(p, sizeof p, "%s/none", dir);
    CHECK_ERR(sl_walk(p, NULL, on_file, on_error, &s), SL_ERR_NOT_FOUND, "none");
    if (geteuid() != 0) { /* root reads everything */
        snprintf(p, sizeof p, "%s/b", dir);
        chmod(p, 0);
        CHECK_ERR(sl_walk(p, NULL, on_file, on_error, &s), SL_ERR_IO, "cannot open");
        chmod(p, 0755);
    }
    return sl_test_finish("test_walk");
}
