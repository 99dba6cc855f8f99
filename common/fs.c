/*
 * common/fs.c - whole-file reads, atomic replacement, mkdir -p.
 */
#include "sightline/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sl_status sl_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sl_set_error(e == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: %s", path,
                            strerror(e));
    }
    sl_status st = SL_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = sl_set_error(SL_ERR_IO, "%s: is a directory", path);
        goto cleanup;
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        st = sl_set_error(SL_ERR_LIMIT, "%s: %lld bytes, more than the limit of %zu", path,
                          (long long)sb.st_size, max_bytes);
        goto cleanup;
    }
    size_t cap = (size_t)sb.st_size + 1, used = 0;
    buf = malloc(cap);
    if (!buf) {
        st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap);
        goto cleanup;
    }
    for (;;) {
        if (used + 1 == cap) { /* file grew or is a pipe: grow within the limit */
            if (cap - 1 >= max_bytes) {
                st = sl_set_error(SL_ERR_LIMIT, "%s: more than the limit of %zu bytes", path,
                                  max_bytes);
                goto cleanup;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                st = sl_set_error(SL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, ncap);
                goto cleanup;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + used, cap - 1 - used);
        if (r < 0) {
            if (errno == EINTR) continue;
            st = sl_set_error(SL_ERR_IO, "%s: read: %s", path, strerror(errno));
            goto cleanup;
        }
        if (r == 0) break;
        used += (size_t)r;
    }
    buf[used] = '\0';
    *out = buf;
    *len = used;
    buf = NULL;
cleanup:
    free(buf);
    close(fd);
    return st;
}

sl_status sl_fsync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sl_status st = SL_OK;
    if (fd < 0 || fsync(fd) != 0)
        st = sl_set_error(SL_ERR_IO, "%s: fsync of directory: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return st;
}

sl_status sl_read_input(const char *path, size_t max_bytes, char **out, size_t *len) {
    if (strcmp(path, "-") != 0) return sl_read_file(path, max_bytes, out, len);
    *out = NULL;
    *len = 0;
    size_t cap = 1 << 16, n = 0, got;
    char *b = malloc(cap);
    if (!b) return sl_set_error(SL_ERR_NOMEM, "stdin: out of memory");
    while ((got = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (n + 1 < cap) continue;
        if (n > max_bytes) {
            free(b);
            return sl_set_error(SL_ERR_LIMIT, "stdin: more than the limit of %zu bytes", max_bytes);
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            return sl_set_error(SL_ERR_NOMEM, "stdin: out of memory");
        }
        b = nb;
        cap *= 2;
    }
    if (n > max_bytes) {
        free(b);
        return sl_set_error(SL_ERR_LIMIT, "stdin: more than the limit of %zu bytes", max_bytes);
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return SL_OK;
}

sl_status sl_write_file_atomic(const char *path, const void *data, size_t len) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    sl_status st = SL_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = sl_set_error(SL_ERR_IO, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            st = sl_set_error(SL_ERR_IO, "%s: write: %s", tmp, strerror(errno));
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (st == SL_OK && fsync(fd) != 0)
        st = sl_set_error(SL_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == SL_OK)
        st = sl_set_error(SL_ERR_IO, "%s: close: %s", tmp, strerror(errno));
    if (st == SL_OK && rename(tmp, path) != 0)
        st = sl_set_error(SL_ERR_IO, "%s: rename to %s: %s", tmp, path, strerror(errno));
    if (st != SL_OK)
        unlink(tmp);
    else
        st = sl_fsync_parent_dir(path);
    free(tmp);
    return st;
}

sl_status sl_mkdir_p(const char *path) {
    size_t n = strlen(path);
    if (n == 0) return sl_set_error(SL_ERR_INVALID, "mkdir: empty path");
    char *buf = strdup(path);
    if (!buf) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    sl_status st = SL_OK;
    for (size_t i = 1; i <= n && st == SL_OK; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            st = sl_set_error(SL_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (st == SL_OK && (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = sl_set_error(SL_ERR_IO, "%s: exists and is not a directory", path);
    free(buf);
    return st;
}

char *sl_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}
