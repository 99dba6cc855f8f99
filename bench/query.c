/*
 * bench/query.c - query speed of sightline's batch lookup path against raw
 * FAISS (Python faiss, bench/query_ref.py) on the very FAISS files sightline
 * wrote, and the recall of an IVF index against exact search.
 *
 * usage: bench_query [--n 1000000] [--dim 512] [--clusters 4096] [--ivf IVF4096,Flat]
 *                    [--nq 1000] [--k 10] [--batch 100] [--nprobe 1,8,32,128]
 *                    [--rounds 3] [--threads NCPU] [--commit 10000] [--seed 1] [--spread 1.5]
 *                    [--data DIR] [--python /usr/bin/python3] [--settle 60]
 *
 * Data: n synthetic L2-normalised vectors of --dim floats around --clusters
 * gaussian centres (vector = unit centre + gaussian noise of norm ~--spread
 * (default 1.5, so clusters overlap and IVF recall depends on nprobe),
 * renormalised), each a deterministic function of the seed and its number.
 * Two index directories are built through the store API (sl_store_open
 * creating, batches of --commit sl_store_batch_put_file with fake paths,
 * commit, then sl_store_checkpoint, which trains IVF types on the stored
 * vectors and writes the FAISS file): one "Flat" (exact), one --ivf. The
 * time of each phase is printed. With --data the stores are kept there and
 * reused by the next run when complete; without it everything goes to a
 * temporary folder under /tmp removed at the end.
 *
 * Queries: --nq "text-style" vectors, each a noisy copy (noise norm ~0.5,
 * renormalised) of a database vector, searched for k neighbours in batches
 * of --batch, i.e. what `sightline query` does after its encoder: one
 * sl_store_search per batch, then a path lookup per hit. Per configuration
 * (Flat; IVF at each --nprobe) it measures, alternately,
 *   B  Python faiss: faiss.read_index on the FAISS file manifest.json names,
 *      nprobe through faiss.ParameterSpace, faiss.omp_set_num_threads, the
 *      same queries in the same batches (a persistent child process, so its
 *      loading is not timed);
 *   A  sightline: sl_store_search per batch on the store opened read-only,
 *      with sl_store_set_search_param("nprobe") and the same thread count;
 *      then (P) the path lookups of the hits, timed apart;
 * in the order B A B A ... B, each A set against the mean of the B before
 * and after it, after waiting (at most --settle s) for other processes to
 * use under 0.3 cores. It prints medians of queries/s, the overhead of
 * sightline over raw FAISS (target < 10%), how many result ids agree with
 * Python's, recall@k of IVF against Flat per nprobe, and the load.
 */
#include "bench/bench_util.h"
#include "sightline/common.h"
#include "sightline/store.h"

#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ROUNDS 16
#define MAX_PROBES 16

typedef struct cfg {
    long n;
    int dim, clusters, nq, k, batch, rounds, threads, commit;
    uint64_t seed;
    double settle, spread;
    const char *ivf, *py;
    int nprobe[MAX_PROBES], n_nprobe;
} cfg;

/* ---- deterministic data ------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

typedef struct rng {
    uint64_t s;
    int have;
    double spare;
} rng;

static double rng_uniform(rng *r) { /* (0, 1) */
    r->s = mix64(r->s);
    return ((double)(r->s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_gauss(rng *r) {
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double u = rng_uniform(r), v = rng_uniform(r), m = sqrt(-2.0 * log(u));
    r->spare = m * sin(2 * M_PI * v);
    r->have = 1;
    return m * cos(2 * M_PI * v);
}

static void normalize(float *v, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)v[i] * v[i];
    float inv = (float)(1.0 / sqrt(s > 0 ? s : 1));
    for (int i = 0; i < d; i++) v[i] *= inv;
}

/* Add gaussian noise of expected norm `norm` to v, then renormalise. */
static void add_noise(float *v, int d, double norm, uint64_t seed) {
    rng r = {.s = seed};
    double sigma = norm / sqrt((double)d);
    for (int i = 0; i < d; i++) v[i] += (float)(sigma * rng_gauss(&r));
    normalize(v, d);
}

/* Unit cluster centres [clusters, dim]. */
static float *make_centres(const cfg *c) {
    float *ce = malloc(sizeof(float) * (size_t)c->clusters * (size_t)c->dim);
    if (!ce) return NULL;
    for (int j = 0; j < c->clusters; j++) {
        rng r = {.s = mix64(c->seed ^ 0xc3a5c85c97cb3127ULL) + (uint64_t)j * 0x2545f4914f6cdd1dULL};
        float *v = ce + (size_t)j * (size_t)c->dim;
        for (int i = 0; i < c->dim; i++) v[i] = (float)rng_gauss(&r);
        normalize(v, c->dim);
    }
    return ce;
}

/* Database vector number j. */
static void db_vector(const cfg *c, const float *centres, long j, float *out) {
    uint64_t h = mix64(c->seed * 0x100000001b3ULL + (uint64_t)j);
    memcpy(out, centres + (size_t)(h % (uint64_t)c->clusters) * (size_t)c->dim,
           sizeof(float) * (size_t)c->dim);
    add_noise(out, c->dim, c->spread, h ^ 0x5851f42d4c957f2dULL);
}

/* The database vector query i copies. */
static long query_source(const cfg *c, int i) {
    return (long)(mix64(c->seed + 77 + (uint64_t)i) % (uint64_t)c->n);
}

static void fake_path(long j, char *buf, size_t cap, size_t *len) {
    int m = snprintf(buf, cap, "/synthetic/d%04ld/img%07ld.jpg", j / 1000, j);
    *len = (size_t)m;
}

/* ---- building ----------------------------------------------------------- */

typedef struct build_times {
    double gen, put, commit, checkpoint, total;
    int reused;
} build_times;

static int store_complete(const char *dir, const cfg *c) {
    char mf[4200];
    snprintf(mf, sizeof mf, "%s/manifest.json", dir);
    if (access(mf, R_OK)) return 0;
    sl_store *s;
    sl_store_opts o = {.dim = c->dim, .read_only = 1};
    if (sl_store_open(dir, &o, &s)) return 0;
    int ok = sl_store_count(s, SL_COLL_IMAGES) == (uint64_t)c->n;
    sl_store_close(s);
    return ok;
}

static int build_store(const char *dir, const char *type, const cfg *c, const float *centres,
                       build_times *bt) {
    memset(bt, 0, sizeof *bt);
    if (store_complete(dir, c)) {
        bt->reused = 1;
        return 0;
    }
    if (bench_rm_rf(dir)) return -1;
    double t0 = sl_now();
    sl_store *s;
    sl_store_opts o = {.create = 1, .dim = c->dim, .index_type = type};
    if (sl_store_open(dir, &o, &s)) goto fail0;
    float *vecs = malloc(sizeof(float) * (size_t)c->commit * (size_t)c->dim);
    if (!vecs) {
        sl_store_abandon(s);
        return -1;
    }
    for (long b0 = 0; b0 < c->n; b0 += c->commit) {
        long nb = c->n - b0 < c->commit ? c->n - b0 : c->commit;
        double g0 = sl_now();
        for (long i = 0; i < nb; i++)
            db_vector(c, centres, b0 + i, vecs + (size_t)i * (size_t)c->dim);
        double g1 = sl_now();
        sl_store_batch *b;
        if (sl_store_batch_begin(s, &b)) goto fail;
        for (long i = 0; i < nb; i++) {
            char path[64];
            size_t len;
            fake_path(b0 + i, path, sizeof path, &len);
            sl_file_rec rec = {.mtime_ns = 1700000000000000000LL + b0 + i,
                               .size = 100000 + (uint64_t)((b0 + i) % 9973),
                               .width = 640,
                               .height = 480};
            uint64_t h = mix64((uint64_t)(b0 + i));
            memcpy(rec.hash, &h, sizeof h); /* a fake content hash */
            if (sl_store_batch_put_file(b, path, len, &rec, vecs + (size_t)i * (size_t)c->dim,
                                        NULL)) {
                sl_store_batch_abort(b);
                goto fail;
            }
        }
        double g2 = sl_now();
        if (sl_store_batch_commit(b)) goto fail;
        double g3 = sl_now();
        bt->gen += g1 - g0;
        bt->put += g2 - g1;
        bt->commit += g3 - g2;
        if ((b0 / c->commit) % 20 == 19)
            fprintf(stderr, "  %s: %ld of %ld stored (%.0f s)\n", type, b0 + nb, c->n,
                    sl_now() - t0);
    }
    free(vecs);
    double c0 = sl_now();
    if (sl_store_checkpoint(s)) goto fail0b;
    bt->checkpoint = sl_now() - c0;
    if (sl_store_close(s)) goto fail0;
    bt->total = sl_now() - t0;
    return 0;
fail:
    free(vecs);
fail0b:
    sl_store_abandon(s);
fail0:
    fprintf(stderr, "bench_query: building %s (%s): %s\n", dir, type, sl_last_error());
    return -1;
}

/* ---- the Python side ---------------------------------------------------- */

typedef struct pyref {
    pid_t pid;
    FILE *in, *out;
} pyref;

static int py_start(pyref *p, const cfg *c, const char *qpath) {
    int to[2], from[2];
    if (pipe(to) || pipe(from)) return -1;
    char script[4200], k[16], batch[16], thr[16];
    snprintf(script, sizeof script, "%s/bench/query_ref.py", SL_SOURCE_DIR);
    snprintf(k, sizeof k, "%d", c->k);
    snprintf(batch, sizeof batch, "%d", c->batch);
    snprintf(thr, sizeof thr, "%d", c->threads);
    p->pid = fork();
    if (p->pid < 0) return -1;
    if (p->pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[0]);
        close(to[1]);
        close(from[0]);
        close(from[1]);
        execl(c->py, c->py, script, qpath, k, batch, thr, (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    p->in = fdopen(to[1], "w");
    p->out = fdopen(from[0], "r");
    return p->in && p->out ? 0 : -1;
}

/* Send a command, read "ok VALUE". */
static int py_cmd(pyref *p, double *value, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->in, fmt, ap);
    va_end(ap);
    fputc('\n', p->in);
    fflush(p->in);
    char line[512];
    if (!fgets(line, sizeof line, p->out) || strncmp(line, "ok ", 3)) {
        fprintf(stderr, "bench_query: query_ref.py: %s", line[0] ? line : "no answer\n");
        return -1;
    }
    if (value) *value = atof(line + 3);
    return 0;
}

static void py_stop(pyref *p) {
    if (p->in) {
        fputs("quit\n", p->in);
        fclose(p->in);
    }
    if (p->out) fclose(p->out);
    if (p->pid > 0) waitpid(p->pid, NULL, 0);
}

/* ---- measuring ---------------------------------------------------------- */

/* A: sl_store_search per batch over all queries; seconds. */
static double run_search(sl_store *s, const cfg *c, const float *q, float *scores, int64_t *ids) {
    double t0 = sl_now();
    for (int b0 = 0; b0 < c->nq; b0 += c->batch) {
        int nb = c->nq - b0 < c->batch ? c->nq - b0 : c->batch;
        if (sl_store_search(s, SL_COLL_IMAGES, q + (size_t)b0 * (size_t)c->dim, (size_t)nb, c->k,
                            scores + (size_t)b0 * (size_t)c->k, ids + (size_t)b0 * (size_t)c->k)) {
            fprintf(stderr, "bench_query: search: %s\n", sl_last_error());
            return -1;
        }
    }
    return sl_now() - t0;
}

/* P: the path of every hit, as `sightline query` fills its results. */
static double run_paths(sl_store *s, const cfg *c, const int64_t *ids) {
    double t0 = sl_now();
    for (size_t i = 0; i < (size_t)c->nq * (size_t)c->k; i++) {
        if (ids[i] < 0) continue;
        char *p;
        size_t len;
        if (sl_store_get_path(s, (uint64_t)ids[i], &p, &len)) {
            fprintf(stderr, "bench_query: path of %lld: %s\n", (long long)ids[i], sl_last_error());
            return -1;
        }
        free(p);
    }
    return sl_now() - t0;
}

typedef struct result {
    double a_qps, b_qps, overhead, p_us, agree, load, oth;
    double a_cores;
} result;

/* Python's ids of the last run (raw int64) against ours: fraction equal. */
static double agreement(const char *path, const int64_t *ids, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int64_t *py = malloc(n * sizeof *py);
    size_t got = py ? fread(py, sizeof *py, n, f) : 0;
    fclose(f);
    size_t same = 0;
    for (size_t i = 0; i < got && i < n; i++) same += py[i] == ids[i];
    free(py);
    return got == n ? (double)same / (double)n : -1;
}

static int measure(sl_store *s, pyref *p, const char *name, int nprobe, const cfg *c,
                   const float *q, float *scores, int64_t *ids, const char *idfile, result *res) {
    if (nprobe > 0 && sl_store_set_search_param(s, SL_COLL_IMAGES, "nprobe", nprobe)) {
        fprintf(stderr, "bench_query: %s\n", sl_last_error());
        return -1;
    }
    /* warm-up, and the check that both sides give the same answers */
    double tw;
    if (run_search(s, c, q, scores, ids) < 0) return -1;
    if (py_cmd(p, &tw, "run %s %d %s", name, nprobe, idfile)) return -1;
    res->agree = agreement(idfile, ids, (size_t)c->nq * (size_t)c->k);
    double a[MAX_ROUNDS], b[MAX_ROUNDS + 1], ratio[MAX_ROUNDS], pt[MAX_ROUNDS], load[MAX_ROUNDS],
        oth[MAX_ROUNDS * 2 + 1], acores[MAX_ROUNDS];
    int no = 0;
    for (int r = 0; r <= c->rounds; r++) {
        bench_others o;
        bench_settle(c->settle, 0.3);
        bench_others_begin(&o);
        if (py_cmd(p, &b[r], "run %s %d -", name, nprobe)) return -1;
        oth[no++] = bench_others_end(&o); /* includes the Python child: see below */
        if (r == c->rounds) break;
        bench_settle(c->settle, 0.3);
        bench_others_begin(&o);
        double c0 = bench_cpu_seconds();
        a[r] = run_search(s, c, q, scores, ids);
        if (a[r] < 0) return -1;
        acores[r] = (bench_cpu_seconds() - c0) / a[r];
        oth[no++] = bench_others_end(&o);
        pt[r] = run_paths(s, c, ids);
        if (pt[r] < 0) return -1;
        load[r] = bench_load1();
    }
    for (int r = 0; r < c->rounds; r++) {
        ratio[r] = a[r] / (0.5 * (b[r] + b[r + 1])) - 1;
        fprintf(stderr,
                "  %s nprobe %d round %d: sightline %.1f q/s, faiss %.1f / %.1f q/s, "
                "overhead %+.2f%%, paths %.2f us/query\n",
                name, nprobe, r + 1, c->nq / a[r], c->nq / b[r], c->nq / b[r + 1], 100 * ratio[r],
                1e6 * pt[r] / c->nq);
    }
    double am = bench_median(a, c->rounds), bm = bench_median(b, c->rounds + 1);
    res->a_qps = c->nq / am;
    res->b_qps = c->nq / bm;
    res->overhead = bench_median(ratio, c->rounds);
    res->p_us = 1e6 * bench_median(pt, c->rounds) / c->nq;
    res->load = bench_median(load, c->rounds);
    /* others during A only (during B the Python child counts as "others") */
    double oa[MAX_ROUNDS];
    for (int r = 0; r < c->rounds; r++) oa[r] = oth[2 * r + 1];
    res->oth = bench_median(oa, c->rounds);
    res->a_cores = bench_median(acores, c->rounds);
    return 0;
}

static double recall(const int64_t *approx, const int64_t *exact, const cfg *c) {
    size_t hit = 0;
    for (int i = 0; i < c->nq; i++)
        for (int x = 0; x < c->k; x++) {
            int64_t id = approx[(size_t)i * (size_t)c->k + (size_t)x];
            if (id < 0) continue;
            for (int y = 0; y < c->k; y++)
                if (exact[(size_t)i * (size_t)c->k + (size_t)y] == id) {
                    hit++;
                    break;
                }
        }
    return (double)hit / ((double)c->nq * c->k);
}

static int write_npy(const char *path, const float *x, int rows, int cols) {
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    int total = 10 + hl + 1, pad = (64 - total % 64) % 64;
    memset(hdr + hl, ' ', (size_t)pad);
    hdr[hl + pad] = '\n';
    hl += pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)hl, f) == (size_t)hl &&
             fwrite(x, sizeof(float), (size_t)rows * (size_t)cols, f) == (size_t)rows * cols;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || v < 1) return -1;
        out[n++] = (int)v;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return -1;
    }
    return n;
}

int main(int argc, char **argv) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg c = {.n = 1000000,
             .dim = 512,
             .clusters = 4096,
             .nq = 1000,
             .k = 10,
             .batch = 100,
             .rounds = 3,
             .threads = ncpu > 0 ? (int)ncpu : 1,
             .commit = 10000,
             .seed = 1,
             .settle = 60,
             .spread = 1.5,
             .ivf = "IVF4096,Flat",
             .py = "/usr/bin/python3",
             .nprobe = {1, 8, 32, 128},
             .n_nprobe = 4};
    const char *data = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--n"))
            c.n = atol(v);
        else if (!strcmp(a, "--dim"))
            c.dim = atoi(v);
        else if (!strcmp(a, "--clusters"))
            c.clusters = atoi(v);
        else if (!strcmp(a, "--ivf"))
            c.ivf = v;
        else if (!strcmp(a, "--nq"))
            c.nq = atoi(v);
        else if (!strcmp(a, "--k"))
            c.k = atoi(v);
        else if (!strcmp(a, "--batch"))
            c.batch = atoi(v);
        else if (!strcmp(a, "--nprobe")) {
            if ((c.n_nprobe = parse_list(v, c.nprobe, MAX_PROBES)) < 1) goto usage;
        } else if (!strcmp(a, "--rounds"))
            c.rounds = atoi(v);
        else if (!strcmp(a, "--threads"))
            c.threads = atoi(v);
        else if (!strcmp(a, "--commit"))
            c.commit = atoi(v);
        else if (!strcmp(a, "--seed"))
            c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--python"))
            c.py = v;
        else if (!strcmp(a, "--spread"))
            c.spread = atof(v);
        else if (!strcmp(a, "--settle"))
            c.settle = atof(v);
        else
            goto usage;
        i++;
    }
    if (c.n < 1 || c.dim < 1 || c.clusters < 1 || c.nq < 1 || c.k < 1 || c.batch < 1 ||
        c.rounds < 1 || c.rounds > MAX_ROUNDS || c.threads < 1 || c.commit < 1 || c.spread < 0)
        goto usage;
    omp_set_num_threads(c.threads);
    sl_log_set_level(SL_LOG_WARN);

    char tmp[256] = "", flatdir[4200], ivfdir[4200], qpath[4200], idfile[4200];
    if (!data) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_query.XXXXXX");
        if (!mkdtemp(tmp)) return 1;
        data = tmp;
    } else if (mkdir(data, 0755) && access(data, W_OK)) {
        fprintf(stderr, "bench_query: cannot use %s\n", data);
        return 1;
    }
    snprintf(flatdir, sizeof flatdir, "%s/flat", data);
    snprintf(ivfdir, sizeof ivfdir, "%s/ivf", data);
    snprintf(qpath, sizeof qpath, "%s/queries.npy", data);
    snprintf(idfile, sizeof idfile, "%s/py_ids.bin", data);
    int rc = 1;
    float *centres = NULL, *q = NULL, *scores = NULL;
    int64_t *ids = NULL, *exact = NULL, *approx = NULL;
    sl_store *sf = NULL, *si = NULL;
    pyref py = {0};
    size_t nk = (size_t)c.nq * (size_t)c.k;
    if (!(centres = make_centres(&c))) goto out;

    /* the two stores */
    build_times bf, bi;
    fprintf(stderr, "building Flat store of %ld x %d in %s\n", c.n, c.dim, flatdir);
    if (build_store(flatdir, "Flat", &c, centres, &bf)) goto out;
    fprintf(stderr, "building %s store in %s\n", c.ivf, ivfdir);
    if (build_store(ivfdir, c.ivf, &c, centres, &bi)) goto out;

    /* the queries */
    q = malloc(sizeof(float) * nk / (size_t)c.k * (size_t)c.dim);
    scores = malloc(sizeof(float) * nk);
    ids = malloc(sizeof(int64_t) * nk);
    exact = malloc(sizeof(int64_t) * nk);
    approx = malloc(sizeof(int64_t) * nk);
    if (!q || !scores || !ids || !exact || !approx) goto out;
    for (int i = 0; i < c.nq; i++) {
        float *v = q + (size_t)i * (size_t)c.dim;
        db_vector(&c, centres, query_source(&c, i), v);
        add_noise(v, c.dim, 0.5, mix64(c.seed ^ 0xabcdefULL) + (uint64_t)i);
    }
    if (write_npy(qpath, q, c.nq, c.dim)) goto out;

    sl_store_opts ro = {.dim = c.dim, .read_only = 1};
    double o0 = sl_now();
    if (sl_store_open(flatdir, &ro, &sf)) goto fail;
    double o1 = sl_now();
    if (sl_store_open(ivfdir, &ro, &si)) goto fail;
    double o2 = sl_now();
    double npy_flat, npy_ivf;
    signal(SIGPIPE, SIG_IGN);
    if (py_start(&py, &c, qpath)) goto out;
    double p0 = sl_now();
    if (py_cmd(&py, &npy_flat, "open flat %s", flatdir)) goto out;
    double p1 = sl_now();
    if (py_cmd(&py, &npy_ivf, "open ivf %s", ivfdir)) goto out;
    double p2 = sl_now();
    if ((long)npy_flat != c.n || (long)npy_ivf != c.n) {
        fprintf(stderr, "bench_query: Python sees %.0f and %.0f vectors\n", npy_flat, npy_ivf);
        goto out;
    }

    result rf, ri[MAX_PROBES];
    double rec[MAX_PROBES], top1 = 0;
    double l0 = bench_load1();
    fprintf(stderr, "measuring Flat\n");
    if (measure(sf, &py, "flat", 0, &c, q, scores, ids, idfile, &rf)) goto out;
    memcpy(exact, ids, sizeof(int64_t) * nk);
    for (int i = 0; i < c.nq; i++) /* ids are assigned from 1 in put order */
        top1 += exact[(size_t)i * (size_t)c.k] == (int64_t)query_source(&c, i) + 1;
    top1 /= c.nq;
    for (int j = 0; j < c.n_nprobe; j++) {
        fprintf(stderr, "measuring %s nprobe %d\n", c.ivf, c.nprobe[j]);
        if (measure(si, &py, "ivf", c.nprobe[j], &c, q, scores, ids, idfile, &ri[j])) goto out;
        memcpy(approx, ids, sizeof(int64_t) * nk);
        rec[j] = recall(approx, exact, &c);
    }
    double l1 = bench_load1();

    printf("sightline query path vs Python faiss %s on the same FAISS files\n", "(read_index)");
    printf("data: %ld x %d L2-normalised vectors, %d gaussian clusters (spread %.2f); %d queries "
           "(noisy "
           "copies), k %d, batches of %d, %d threads, %d rounds B A ... B (medians)\n",
           c.n, c.dim, c.clusters, c.spread, c.nq, c.k, c.batch, c.threads, c.rounds);
    const build_times *bts[2] = {&bf, &bi};
    const char *names[2] = {"Flat", c.ivf};
    for (int x = 0; x < 2; x++) {
        if (bts[x]->reused)
            printf("build %-14s reused from %s\n", names[x], x ? ivfdir : flatdir);
        else
            printf("build %-14s %7.1f s: vectors generated %.1f s, put_file %.1f s, commit "
                   "%.1f s (%d per batch), checkpoint %.1f s\n",
                   names[x], bts[x]->total, bts[x]->gen, bts[x]->put, bts[x]->commit, c.commit,
                   bts[x]->checkpoint);
    }
    printf("open: sightline %.1f s (Flat), %.1f s (%s); Python read_index %.1f s, %.1f s\n",
           o1 - o0, o2 - o1, c.ivf, p1 - p0, p2 - p1);
    printf("%-22s %12s %12s %10s %9s %10s %8s\n", "index", "sightline", "faiss(py)", "overhead",
           "same ids", "recall@k", "+paths");
    printf("%-22s %12s %12s %10s %9s %10s %8s\n", "", "queries/s", "queries/s", "", "", "", "us/q");
    printf("%-22s %12.1f %12.1f %+9.2f%% %8.2f%% %10s %8.2f\n", "Flat (exact)", rf.a_qps, rf.b_qps,
           100 * rf.overhead, 100 * rf.agree, "1 (ref)", rf.p_us);
    for (int j = 0; j < c.n_nprobe; j++) {
        char lab[64];
        snprintf(lab, sizeof lab, "%s np=%d", c.ivf, c.nprobe[j]);
        printf("%-22s %12.1f %12.1f %+9.2f%% %8.2f%% %10.4f %8.2f\n", lab, ri[j].a_qps, ri[j].b_qps,
               100 * ri[j].overhead, 100 * ri[j].agree, rec[j], ri[j].p_us);
    }
    printf("overhead = sightline seconds / mean(faiss before, faiss after) - 1, median over "
           "rounds (target < 10%%)\n");
    printf("Flat: the query's source vector ranks first for %.1f%% of queries\n", 100 * top1);
    printf("sightline cores busy while searching (median): Flat %.2f", rf.a_cores);
    for (int j = 0; j < c.n_nprobe; j++) printf(", np=%d %.2f", c.nprobe[j], ri[j].a_cores);
    printf("\nother processes while sightline searched (cores, median): Flat %.2f", rf.oth);
    for (int j = 0; j < c.n_nprobe; j++) printf(", np=%d %.2f", c.nprobe[j], ri[j].oth);
    printf(
        "\nload average: %.2f at start of measuring, %.2f at end; Flat rounds %.2f (%ld cores)\n",
        l0, l1, rf.load, ncpu);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_query: %s\n", sl_last_error());
out:
    py_stop(&py);
    if (sf) sl_store_close(sf);
    if (si) sl_store_close(si);
    free(centres);
    free(q);
    free(scores);
    free(ids);
    free(exact);
    free(approx);
    if (*tmp && bench_rm_rf(tmp)) fprintf(stderr, "bench_query: could not remove %s\n", tmp);
    return rc;
usage:
    fprintf(stderr,
            "usage: bench_query [--n N] [--dim D] [--clusters C] [--ivf TYPE] [--nq N] "
            "[--k K] [--batch B] [--nprobe 1,8,...] [--rounds R] [--threads T] "
            "[--commit N] [--seed S] [--spread X] [--data DIR] [--python PY] [--settle S]\n");
    return 2;
}
