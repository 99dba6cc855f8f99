/*
 * trainer/dist_file.c - the parts of the distributed layer that need no GPU:
 * placement from options and environment, and the NCCL id file (written by
 * rank 0 with temp + rename, polled for by the others). Built in every
 * configuration; see dist.h.
 *
 * File layout (little-endian): "SLDISTID", u32 version (1), u32 world,
 * u32 job length, u32 id length, job bytes, id bytes, u32 FNV-1a of all
 * the bytes before it.
 */
#include "trainer/dist.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_MAGIC      "SLDISTID"
#define ID_VERSION    1u
#define ID_HEADER     (8 + 4 * 4)
#define ID_JOB_MAX    127
#define ID_FILE_MAX   (ID_HEADER + ID_JOB_MAX + SL_DIST_ID_MAX + 4)
#define TIMEOUT_DEF_S 300.0

void sl_dist_opts_init(sl_dist_opts *o) {
    memset(o, 0, sizeof *o);
    o->world = 0;
    o->rank = -1;
    o->device = -1;
}

/* ------------------------------------------------------------------------ */
/* Placement                                                                */
/* ------------------------------------------------------------------------ */

/* An integer environment variable: 0 absent, 1 set (in *v), -1 bad (error
 * recorded). */
static int env_int(const char *name, long long lo, long long hi, int *v) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    long long x;
    if (sl_parse_int_arg(s, lo, hi, &x) != 0) {
        sl_set_error(SL_ERR_INVALID, "%s='%s': expected an integer in [%lld, %lld]", name, s, lo,
                     hi);
        return -1;
    }
    *v = (int)x;
    return 1;
}

/* rank/world/local-rank triple from three variables. 0: absent, 1: set,
 * -1: error recorded. */
static int env_triple(const char *rank_var, const char *world_var, const char *local_var, int *rank,
                      int *world, int *local) {
    int r = 0, w = 0, l = -1;
    int hr = env_int(rank_var, 0, 1 << 20, &r);
    int hw = env_int(world_var, 1, 1 << 20, &w);
    int hl = env_int(local_var, 0, 1 << 20, &l);
    if (hr < 0 || hw < 0 || hl < 0) return -1;
    if (!hr && !hw) return 0;
    if (!hr || !hw) {
        sl_set_error(SL_ERR_INVALID, "%s is set but %s is not: set both (or neither)",
                     hr ? rank_var : world_var, hr ? world_var : rank_var);
        return -1;
    }
    if (r >= w) {
        sl_set_error(SL_ERR_INVALID, "%s=%d is not below %s=%d", rank_var, r, world_var, w);
        return -1;
    }
    *rank = r;
    *world = w;
    *local = hl ? l : -1;
    return 1;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

sl_status sl_dist_resolve(const sl_dist_opts *o, sl_dist_place *out) {
    sl_dist_opts def;
    if (!o) {
        sl_dist_opts_init(&def);
        o = &def;
    }
    if (!out) return sl_set_error(SL_ERR_INVALID, "dist: no output");
    memset(out, 0, sizeof *out);
    out->under_mpirun = getenv("OMPI_COMM_WORLD_SIZE") != NULL;

    int rank = 0, world = 1, local = -1, got;
    if (o->world < 0) return sl_set_error(SL_ERR_INVALID, "dist: world size %d", o->world);
    if (o->world > 0) {
        if (o->rank < 0 || o->rank >= o->world)
            return sl_set_error(SL_ERR_INVALID, "dist: rank %d is outside world size %d", o->rank,
                                o->world);
        rank = o->rank;
        world = o->world;
        out->source = "options";
    } else if ((got = env_triple("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK", &rank, &world, &local)) != 0) {
        if (got < 0) return SL_ERR_INVALID;
        out->source = "mpirun";
    } else if ((got = env_triple("SL_RANK", "SL_WORLD_SIZE", "SL_LOCAL_RANK", &rank, &world,
                                 &local)) != 0) {
        if (got < 0) return SL_ERR_INVALID;
        out->source = "SL_RANK";
    } else {
        out->source = "default";
    }
    out->rank = rank;
    out->world = world;
    out->device = o->device >= 0 ? o->device : local >= 0 ? local : rank;

    const char *file = o->id_file && *o->id_file ? o->id_file : getenv("SL_DIST_FILE");
    if (file && strlen(file) >= sizeof out->id_file)
        return sl_set_error(SL_ERR_INVALID, "dist: id file path too long (%zu bytes)",
                            strlen(file));
    copy_str(out->id_file, sizeof out->id_file, file);

    const char *job = o->job;
    if (!job || !*job) job = getenv("SL_DIST_JOB");
    if (!job || !*job) job = getenv("OMPI_MCA_ess_base_jobid");
    if (!job || !*job) job = getenv("SLURM_JOB_ID");
    if (job && strlen(job) > ID_JOB_MAX)
        return sl_set_error(SL_ERR_INVALID, "dist: job tag longer than %d bytes", ID_JOB_MAX);
    copy_str(out->job, sizeof out->job, job);

    out->timeout_s = o->timeout_s;
    if (out->timeout_s <= 0) {
        const char *t = getenv("SL_DIST_TIMEOUT");
        if (t && *t) {
            char *end;
            errno = 0;
            double v = strtod(t, &end);
            if (errno || *end || !(v > 0) || v > 1e7)
                return sl_set_error(SL_ERR_INVALID, "SL_DIST_TIMEOUT='%s': expected seconds (> 0)",
                                    t);
            out->timeout_s = v;
        } else {
            out->timeout_s = TIMEOUT_DEF_S;
        }
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Id file                                                                  */
/* ------------------------------------------------------------------------ */

static uint32_t fnv1a(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

sl_status sl_dist_id_write(const char *path, const char *job, int world, const void *id,
                           size_t len) {
    if (!path || !*path) return sl_set_error(SL_ERR_INVALID, "dist: no id file path");
    if (!job) job = "";
    size_t jl = strlen(job);
    if (jl > ID_JOB_MAX || len == 0 || len > SL_DIST_ID_MAX || world < 1)
        return sl_set_error(SL_ERR_INVALID, "%s: bad id file contents (job %zu, id %zu bytes)",
                            path, jl, len);
    size_t n = ID_HEADER + jl + len + 4;
    unsigned char *buf = malloc(n);
    if (!buf) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    memcpy(buf, ID_MAGIC, 8);
    put_u32(buf + 8, ID_VERSION);
    put_u32(buf + 12, (uint32_t)world);
    put_u32(buf + 16, (uint32_t)jl);
    put_u32(buf + 20, (uint32_t)len);
    memcpy(buf + ID_HEADER, job, jl);
    memcpy(buf + ID_HEADER + jl, id, len);
    put_u32(buf + n - 4, fnv1a(buf, n - 4));
    sl_status st = sl_write_file_atomic(path, buf, n);
    free(buf);
    if (st != SL_OK) return sl_wrap_error(st, "writing the NCCL id file: ");
    return SL_OK;
}

/* Parse one file image. SL_OK: id copied. SL_ERR_BUSY: a valid file for
 * another world/job (stale; described in `why`). SL_ERR_FORMAT: corrupt. */
static sl_status parse_id(const char *path, const unsigned char *b, size_t n, const char *job,
                          int world, void *id, size_t len, char *why, size_t why_cap) {
    if (n < ID_HEADER + 4 || memcmp(b, ID_MAGIC, 8) != 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: not an NCCL id file (%zu bytes, no %s header)",
                            path, n, ID_MAGIC);
    uint32_t ver = get_u32(b + 8), w = get_u32(b + 12), jl = get_u32(b + 16), il = get_u32(b + 20);
    if (ver != ID_VERSION)
        return sl_set_error(SL_ERR_FORMAT, "%s: id file version %u (expected %u)", path, ver,
                            ID_VERSION);
    if (jl > ID_JOB_MAX || il > SL_DIST_ID_MAX || n != (size_t)ID_HEADER + jl + il + 4)
        return sl_set_error(SL_ERR_FORMAT,
                            "%s: truncated or corrupt id file (%zu bytes; header says job %u + "
                            "id %u)",
                            path, n, jl, il);
    if (fnv1a(b, n - 4) != get_u32(b + n - 4))
        return sl_set_error(SL_ERR_FORMAT, "%s: id file checksum mismatch (corrupt)", path);
    if (il != len)
        return sl_set_error(SL_ERR_FORMAT, "%s: id of %u bytes, expected %zu (another NCCL?)", path,
                            il, len);
    const char *fjob = (const char *)b + ID_HEADER;
    size_t want_jl = job ? strlen(job) : 0;
    if (w != (uint32_t)world || (want_jl && (jl != want_jl || memcmp(fjob, job, jl) != 0))) {
        snprintf(why, why_cap, "world %u, job '%.*s'", w, (int)jl, fjob);
        return SL_ERR_BUSY;
    }
    memcpy(id, b + ID_HEADER + jl, len);
    return SL_OK;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

sl_status sl_dist_id_read(const char *path, const char *job, int world, void *id, size_t len,
                          double timeout_s) {
    if (!path || !*path) return sl_set_error(SL_ERR_INVALID, "dist: no id file path");
    if (len == 0 || len > SL_DIST_ID_MAX || world < 1)
        return sl_set_error(SL_ERR_INVALID, "%s: bad id read (id %zu bytes, world %d)", path, len,
                            world);
    double t0 = sl_now(), pause = 0.01;
    char stale[256] = "";
    for (;;) {
        char *data = NULL;
        size_t n = 0;
        sl_status st = sl_read_file(path, ID_FILE_MAX, &data, &n);
        if (st == SL_OK) {
            char why[256];
            st = parse_id(path, (const unsigned char *)data, n, job, world, id, len, why,
                          sizeof why);
            free(data);
            if (st == SL_OK) return SL_OK;
            if (st != SL_ERR_BUSY) return st;
            memcpy(stale, why, sizeof stale);
        } else if (st == SL_ERR_LIMIT) {
            return sl_set_error(SL_ERR_FORMAT, "%s: not an NCCL id file (larger than %d bytes)",
                                path, ID_FILE_MAX);
        } else if (st != SL_ERR_NOT_FOUND) {
            return st; /* permission, not a directory...: waiting will not help */
        }
        double waited = sl_now() - t0;
        if (waited >= timeout_s) {
            if (stale[0])
                return sl_set_error(SL_ERR_NOT_FOUND,
                                    "%s: no NCCL id for world %d%s%s%s after %.0f s: the file "
                                    "there is stale (%s); remove it or use a fresh path",
                                    path, world, job && *job ? ", job '" : "", job ? job : "",
                                    job && *job ? "'" : "", waited, stale);
            return sl_set_error(SL_ERR_NOT_FOUND,
                                "%s: no NCCL id file after %.0f s (rank 0 writes it: is rank 0 "
                                "running, and is the path on a filesystem every rank shares?)",
                                path, waited);
        }
        double left = timeout_s - waited;
        sleep_s(pause < left ? pause : left);
        if (pause < 0.2) pause *= 2;
    }
}
