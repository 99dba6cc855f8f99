/*
 * tests/test_dist.c - the distributed layer (trainer/dist.h).
 *
 * Without a GPU: placement from options / Open MPI / SL_* variables, the
 * NCCL id file (atomic write, a forked reader polling for it, timeout naming
 * the file, short / corrupt / stale files), init's configuration errors, and
 * a world of one in a build without CUDA. A CUDA build on a machine without
 * a GPU checks the no-device error and exits 77.
 * With a GPU (every CUDA call in forked children, so the parent never
 * initialises CUDA before forking): a world of one without and with NCCL
 * (the latter through the id file); two ranks on two GPUs, or on one GPU
 * with NCCL_HOSTID set per rank (NCCL refuses two ranks on one GPU of one
 * host: "Duplicate GPU detected"; distinct host ids make it take the socket
 * transport instead). The one-GPU variant is best effort: when NCCL still
 * refuses or stalls it is reported, not failed.
 */
#include "trainer/dist.h"
#include "sightline/sightline.h"
#include "kernels/kernels.h"
#include "testproc.h"
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SL_TEST_DIST_CUDA
#include <cuda_runtime.h>
#endif

static const char *ENV_VARS[] = {"OMPI_COMM_WORLD_RANK",
                                 "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK",
                                 "SL_RANK",
                                 "SL_WORLD_SIZE",
                                 "SL_LOCAL_RANK",
                                 "SL_DIST_FILE",
                                 "SL_DIST_TIMEOUT",
                                 "SL_DIST_JOB",
                                 "OMPI_MCA_ess_base_jobid",
                                 "SLURM_JOB_ID"};

static void clear_env(void) {
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof *ENV_VARS; i++) unsetenv(ENV_VARS[i]);
}

/* ------------------------------------------------------------------------ */
/* Placement                                                                */
/* ------------------------------------------------------------------------ */

static void test_resolve(void) {
    sl_dist_place pl;
    sl_dist_opts o;
    clear_env();
    CHECK_OK(sl_dist_resolve(NULL, &pl));
    CHECK(pl.rank == 0 && pl.world == 1 && pl.device == 0 && !pl.under_mpirun);
    CHECK(strcmp(pl.source, "default") == 0 && pl.id_file[0] == 0 && pl.job[0] == 0);
    CHECK(pl.timeout_s == 300);

    /* explicit options win over every variable */
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    setenv("SL_RANK", "2", 1);
    setenv("SL_WORLD_SIZE", "3", 1);
    sl_dist_opts_init(&o);
    o.world = 8;
    o.rank = 5;
    o.id_file = "/shared/id";
    o.timeout_s = 7;
    o.job = "j1";
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(pl.rank == 5 && pl.world == 8 && pl.device == 5 && pl.under_mpirun);
    CHECK(strcmp(pl.source, "options") == 0 && strcmp(pl.id_file, "/shared/id") == 0);
    CHECK(pl.timeout_s == 7 && strcmp(pl.job, "j1") == 0);
    o.device = 0;
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(pl.device == 0);

    /* then Open MPI's variables (local rank -> device), then SL_* */
    sl_dist_opts_init(&o);
    setenv("OMPI_MCA_ess_base_jobid", "4242", 1);
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(pl.rank == 1 && pl.world == 4 && pl.device == 1 && strcmp(pl.source, "mpirun") == 0);
    CHECK(strcmp(pl.job, "4242") == 0);
    setenv("SL_DIST_JOB", "mine", 1);
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(strcmp(pl.job, "mine") == 0);
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(pl.rank == 2 && pl.world == 3 && pl.device == 2 && strcmp(pl.source, "SL_RANK") == 0);
    CHECK(!pl.under_mpirun);
    setenv("SL_LOCAL_RANK", "0", 1);
    setenv("SL_DIST_FILE", "/nfs/run/id", 1);
    setenv("SL_DIST_TIMEOUT", "2.5", 1);
    CHECK_OK(sl_dist_resolve(&o, &pl));
    CHECK(pl.device == 0 && strcmp(pl.id_file, "/nfs/run/id") == 0 && pl.timeout_s == 2.5);

    /* errors name the variable or option */
    setenv("SL_DIST_TIMEOUT", "soon", 1);
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "SL_DIST_TIMEOUT");
    unsetenv("SL_DIST_TIMEOUT");
    setenv("SL_RANK", "3", 1);
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "SL_RANK=3");
    setenv("SL_RANK", "x1", 1);
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "SL_RANK='x1'");
    unsetenv("SL_WORLD_SIZE");
    setenv("SL_RANK", "0", 1);
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "SL_WORLD_SIZE");
    clear_env();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "OMPI_COMM_WORLD_RANK");
    clear_env();
    o.world = 2;
    o.rank = 2;
    CHECK_ERR(sl_dist_resolve(&o, &pl), SL_ERR_INVALID, "rank 2");
    clear_env();
}

/* ------------------------------------------------------------------------ */
/* Id file                                                                  */
/* ------------------------------------------------------------------------ */

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void write_raw(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static void test_id_file(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/nccl.id", dir);
    unsigned char id[128], got[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 37 + 11);

    /* round trip; no temp file left behind */
    CHECK_OK(sl_dist_id_write(path, "job7", 4, id, sizeof id));
    CHECK(count_tmp_files(dir) == 0);
    memset(got, 0, sizeof got);
    CHECK_OK(sl_dist_id_read(path, "job7", 4, got, sizeof got, 1.0));
    CHECK(memcmp(got, id, sizeof id) == 0);
    /* a reader without a job tag accepts any tag */
    memset(got, 0, sizeof got);
    CHECK_OK(sl_dist_id_read(path, "", 4, got, sizeof got, 1.0));
    CHECK(memcmp(got, id, sizeof id) == 0);

    /* a forked reader polls until rank 0 writes */
    unlink(path);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsigned char r[128];
        memset(r, 0, sizeof r);
        sl_status st = sl_dist_id_read(path, "job8", 2, r, sizeof r, 20.0);
        if (st != SL_OK) fprintf(stderr, "child: %s\n", sl_last_error());
        _exit(st != SL_OK ? 1 : memcmp(r, id, sizeof r) != 0 ? 2 : 0);
    }
    usleep(300000);
    CHECK_OK(sl_dist_id_write(path, "job8", 2, id, sizeof id));
    int code;
    sl_test_wait_children(&pid, &code, 1, 30);
    CHECK_MSG(code == 0, "reader child exit %d", code);

    /* the same, but a stale file (another world, another job) sits there
     * first: the reader keeps polling past it */
    CHECK_OK(sl_dist_id_write(path, "old", 2, id, sizeof id));
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsigned char r[128];
        sl_status st = sl_dist_id_read(path, "new", 2, r, sizeof r, 20.0);
        if (st != SL_OK) fprintf(stderr, "child: %s\n", sl_last_error());
        _exit(st != SL_OK ? 1 : memcmp(r, id, sizeof r) != 0 ? 2 : 0);
    }
    usleep(300000);
    CHECK_OK(sl_dist_id_write(path, "new", 2, id, sizeof id));
    sl_test_wait_children(&pid, &code, 1, 30);
    CHECK_MSG(code == 0, "reader child (stale first) exit %d", code);

    /* missing file: times out with a message naming it */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/never-written.id", dir);
    double t0 = sl_now();
    CHECK_ERR(sl_dist_id_read(missing, "", 2, got, sizeof got, 0.3), SL_ERR_NOT_FOUND, missing);
    double dt = sl_now() - t0;
    CHECK_MSG(dt >= 0.29 && dt < 5, "timeout took %.3f s", dt);
    CHECK(strstr(sl_last_error(), "rank 0") != NULL);

    /* stale file only: times out and says so */
    CHECK_OK(sl_dist_id_write(path, "old", 8, id, sizeof id));
    CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 0.2), SL_ERR_NOT_FOUND, "stale");
    CHECK_ERR(sl_dist_id_read(path, "new", 8, got, sizeof got, 0.2), SL_ERR_NOT_FOUND, "job 'old'");

    /* short, corrupt, truncated, oversized, wrong id size: errors at once */
    write_raw(path, "SLDIS", 5);
    t0 = sl_now();
    CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, path);
    CHECK_MSG(sl_now() - t0 < 2, "a short file should fail at once");
    write_raw(path, "", 0);
    CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, "not an NCCL id");
    CHECK_OK(sl_dist_id_write(path, "", 2, id, sizeof id));
    char *img = NULL;
    size_t n = 0;
    CHECK_OK(sl_read_file(path, 1 << 16, &img, &n));
    if (img && n > 40) {
        write_raw(path, img, n - 1);
        CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, "truncated");
        img[40] ^= 0x5a;
        write_raw(path, img, n);
        CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, "checksum");
    }
    free(img);
    CHECK_OK(sl_dist_id_write(path, "", 2, id, 64));
    CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, "64 bytes");
    static char big[70000];
    memset(big, 'x', sizeof big);
    write_raw(path, big, sizeof big);
    CHECK_ERR(sl_dist_id_read(path, "", 2, got, sizeof got, 10), SL_ERR_FORMAT, "larger");
    /* a directory where the file should be: an I/O error at once */
    CHECK_ERR(sl_dist_id_read(dir, "", 2, got, sizeof got, 10), SL_ERR_IO, dir);
    /* unwritable location */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/no/such/dir/id", dir);
    CHECK_ERR(sl_dist_id_write(bad, "", 2, id, sizeof id), SL_ERR_IO, "no/such/dir");
    unlink(path);
}

/* ------------------------------------------------------------------------ */
/* Init without a device                                                    */
/* ------------------------------------------------------------------------ */

static void test_init_config_errors(void) {
    int level = sl_dist_build_level();
    sl_dist *d = (sl_dist *)1;
    sl_dist_opts o;
    clear_env();
    /* world 2 without an id file (not under mpirun) */
    sl_dist_opts_init(&o);
    o.world = 2;
    o.rank = 1;
    if (level >= 2)
        CHECK_ERR(sl_dist_init(&o, &d), SL_ERR_INVALID, "--dist-file");
    else
        CHECK_ERR(sl_dist_init(&o, &d), SL_ERR_UNSUPPORTED, "needs NCCL");
    CHECK(d == NULL);
    /* under mpirun without a file: the id file is required unless MPI */
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    if (level == 2) CHECK_ERR(sl_dist_init(NULL, &d), SL_ERR_INVALID, "mpirun");
    if (level == 2) CHECK(strstr(sl_last_error(), "--dist-file") != NULL);
    if (level < 2) CHECK_ERR(sl_dist_init(NULL, &d), SL_ERR_UNSUPPORTED, "world size 2");
    clear_env();
    sl_dist_opts_init(&o);
    o.world = 3;
    CHECK_ERR(sl_dist_init(&o, &d), SL_ERR_INVALID, "rank -1");
}

#ifndef SL_TEST_DIST_CUDA
/* A world of one in a build without CUDA: host buffers. */
static void test_world1_host(void) {
    sl_dist *d = NULL;
    clear_env();
    CHECK_OK(sl_dist_init(NULL, &d));
    if (!d) return;
    CHECK(sl_dist_rank(d) == 0 && sl_dist_world(d) == 1 && sl_dist_device(d) == 0);
    CHECK(strcmp(sl_dist_backend(d), "single") == 0);
    float a[5] = {1, 2, 3, 4, 5}, g[5] = {0};
    CHECK_OK(sl_dist_all_reduce_sum_f32(d, a, 5, NULL));
    CHECK(a[0] == 1 && a[4] == 5);
    CHECK_OK(sl_dist_all_gather_f32(d, a, g, 5, NULL));
    CHECK(memcmp(a, g, sizeof a) == 0);
    CHECK_OK(sl_dist_broadcast_f32(d, a, 5, NULL));
    CHECK(a[2] == 3);
    double v[2] = {1.5, -2};
    CHECK_OK(sl_dist_all_reduce_sum_f64_host(d, v, 2));
    CHECK(v[0] == 1.5 && v[1] == -2);
    CHECK_OK(sl_dist_barrier(d));
    sl_dist_free(d);
    sl_dist_opts o;
    sl_dist_opts_init(&o);
    o.force_nccl = 1;
    d = (sl_dist *)1;
    CHECK_ERR(sl_dist_init(&o, &d), SL_ERR_UNSUPPORTED, "NCCL");
    CHECK(d == NULL);
    CHECK_ERR(sl_dist_all_reduce_sum_f32(NULL, a, 5, NULL), SL_ERR_INVALID, "NULL");
}
#endif

/* ------------------------------------------------------------------------ */
/* GPU (CUDA builds; every CUDA call in a child)                            */
/* ------------------------------------------------------------------------ */

#ifdef SL_TEST_DIST_CUDA
#define CUDA_OK(x) CHECK_MSG((x) == cudaSuccess, "%s", #x)

/* Every collective on rank `rank` of `world`, checked against the values
 * every rank computes (failures counted in this process). */
static void exercise(sl_dist *d, int rank, int world) {
    enum { N = 1000, G = 257 };
    float *dbuf = NULL, *dsend = NULL, *drecv = NULL;
    CUDA_OK(cudaMalloc((void **)&dbuf, N * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&dsend, G * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&drecv, (size_t)world * G * sizeof(float)));
    static float h[N], hg[G], hr[8 * G];
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));

    /* all-reduce: rank r holds (r+1) * (i+1) -> sum = (i+1) * w(w+1)/2 */
    for (int i = 0; i < N; i++) h[i] = (float)((rank + 1) * (i + 1));
    CUDA_OK(cudaMemcpy(dbuf, h, sizeof h, cudaMemcpyHostToDevice));
    CHECK_OK(sl_dist_all_reduce_sum_f32(d, dbuf, N, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaMemcpy(h, dbuf, sizeof h, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (h[i] != (float)((i + 1) * world * (world + 1) / 2)) bad++;
    CHECK_MSG(bad == 0, "rank %d: all-reduce: %d wrong", rank, bad);

    /* all-gather: rank r sends 1000 r + i; recv rank-major */
    for (int i = 0; i < G; i++) hg[i] = (float)(1000 * rank + i);
    CUDA_OK(cudaMemcpy(dsend, hg, sizeof hg, cudaMemcpyHostToDevice));
    CHECK_OK(sl_dist_all_gather_f32(d, dsend, drecv, G, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaMemcpy(hr, drecv, (size_t)world * G * sizeof(float), cudaMemcpyDeviceToHost));
    bad = 0;
    for (int r = 0; r < world; r++)
        for (int i = 0; i < G; i++)
            if (hr[r * G + i] != (float)(1000 * r + i)) bad++;
    CHECK_MSG(bad == 0, "rank %d: all-gather: %d wrong", rank, bad);

    /* broadcast from rank 0 */
    for (int i = 0; i < N; i++) h[i] = rank == 0 ? (float)i * 0.5f : -1.f;
    CUDA_OK(cudaMemcpy(dbuf, h, sizeof h, cudaMemcpyHostToDevice));
    CHECK_OK(sl_dist_broadcast_f32(d, dbuf, N, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaMemcpy(h, dbuf, sizeof h, cudaMemcpyDeviceToHost));
    bad = 0;
    for (int i = 0; i < N; i++)
        if (h[i] != (float)i * 0.5f) bad++;
    CHECK_MSG(bad == 0, "rank %d: broadcast: %d wrong", rank, bad);

    /* host doubles */
    double v[3] = {0.25 * (rank + 1), 1e300 / 8, (double)rank};
    CHECK_OK(sl_dist_all_reduce_sum_f64_host(d, v, 3));
    CHECK_NEAR(v[0], 0.25 * world * (world + 1) / 2, 0);
    CHECK_NEAR(v[1] / 1e300, world / 8.0, 1e-15);
    CHECK_NEAR(v[2], world * (world - 1) / 2.0, 0);
    CHECK_OK(sl_dist_barrier(d));

    cudaStreamDestroy(s);
    cudaFree(dbuf);
    cudaFree(dsend);
    cudaFree(drecv);
}

/* Child: a world of one, plain and through NCCL + the id file. */
static int child_world1(const char *dir) {
    sl_dist *d = NULL;
    sl_dist_opts o;
    sl_dist_opts_init(&o);
    o.world = 1;
    o.rank = 0;
    CHECK_OK(sl_dist_init(&o, &d));
    if (d) {
        CHECK(strcmp(sl_dist_backend(d), "single") == 0);
        exercise(d, 0, 1);
        sl_dist_free(d);
    }
    if (sl_dist_build_level() >= 2) {
        char path[600];
        snprintf(path, sizeof path, "%s/world1.id", dir);
        o.force_nccl = 1;
        o.id_file = path;
        d = NULL;
        CHECK_OK(sl_dist_init(&o, &d));
        if (d) {
            CHECK(strcmp(sl_dist_backend(d), "nccl") == 0);
            CHECK(access(path, F_OK) != 0); /* rank 0 removed it after init */
            exercise(d, 0, 1);
            sl_dist_free(d);
        }
    }
    CHECK_ERR(sl_dist_init(&(sl_dist_opts){.world = 1, .rank = 0, .device = 99}, &d),
              SL_ERR_UNSUPPORTED, "cuda:99");
    return sl_test_failures ? 1 : 0;
}

/* Child: rank `rank` of 2. Exit 3 when init fails on a shared GPU. */
static int child_rank(const char *path, int rank, int device, int shared) {
    if (shared) sl_test_nccl_share_gpu("sl-test-dist", rank);
    sl_dist_opts o;
    sl_dist_opts_init(&o);
    o.world = 2;
    o.rank = rank;
    o.device = device;
    o.id_file = path;
    o.timeout_s = 60;
    o.job = "test_dist";
    sl_dist *d = NULL;
    sl_status st = sl_dist_init(&o, &d);
    if (st != SL_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, sl_last_error());
        return shared ? 3 : 1;
    }
    CHECK(sl_dist_rank(d) == rank && sl_dist_world(d) == 2);
    CHECK(strcmp(sl_dist_backend(d), "nccl") == 0);
    exercise(d, rank, 2);
    sl_dist_free(d);
    return sl_test_failures ? 1 : 0;
}

static int run_in_child(int (*fn)(const char *), const char *arg, double timeout_s) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -3;
    if (pid == 0) _exit(fn(arg));
    int code;
    sl_test_wait_children(&pid, &code, 1, timeout_s);
    return code;
}

static int child_count(const char *unused) {
    (void)unused;
    int n = sl_cuda_device_count();
    return n > 100 ? 100 : n;
}

static int child_no_device(const char *unused) {
    (void)unused;
    sl_dist *d = (sl_dist *)1;
    CHECK_ERR(sl_dist_init(NULL, &d), SL_ERR_UNSUPPORTED, "cuda:0");
    CHECK(d == NULL);
    return sl_test_failures ? 1 : 0;
}

/* Returns 1 when the GPU part was skipped (no device). */
static int test_gpu(const char *dir) {
    int ndev = run_in_child(child_count, NULL, 120);
    CHECK_MSG(ndev >= 0 && ndev <= 100, "device count child: %d", ndev);
    if (ndev <= 0 || ndev > 100) {
        CHECK_MSG(run_in_child(child_no_device, NULL, 120) == 0, "no-device child failed");
        return 1;
    }
    CHECK_MSG(run_in_child(child_world1, dir, 300) == 0, "world-1 child failed");
    if (sl_dist_build_level() < 2) {
        printf("note: no NCCL in this build: the two-rank test is skipped\n");
        return 0;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/world2.id", dir);
    int shared = ndev < 2;
    pid_t pids[2];
    int codes[2];
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(child_rank(path, r, shared ? 0 : r, shared));
    }
    sl_test_wait_children(pids, codes, 2, 240);
    if (shared && (codes[0] != 0 || codes[1] != 0) && codes[0] != 1 && codes[1] != 1) {
        printf("note: two ranks on one GPU did not run (exit %d/%d; NCCL refuses duplicate "
               "GPUs, and NCCL_HOSTID did not get around it here): two-rank test skipped\n",
               codes[0], codes[1]);
    } else {
        CHECK_MSG(codes[0] == 0 && codes[1] == 0, "two ranks (%s): exit %d/%d",
                  shared ? "one GPU, NCCL_HOSTID per rank" : "two GPUs", codes[0], codes[1]);
        if (codes[0] == 0 && codes[1] == 0)
            printf("two ranks on %s: all-reduce, all-gather, broadcast, host f64, barrier ok\n",
                   shared ? "one GPU (NCCL_HOSTID per rank)" : "two GPUs");
    }
    unlink(path);
    return 0;
}
#endif

int main(void) {
    const char *dir = sl_test_tmpdir();
    test_resolve();
    test_id_file(dir);
    test_init_config_errors();
    int skipped = 0;
#ifdef SL_TEST_DIST_CUDA
    skipped = test_gpu(dir);
#else
    test_world1_host();
#endif
    rmdir(dir);
    if (sl_test_failures) return sl_test_finish("test_dist");
    if (skipped) {
        sl_test_finish("test_dist");
        printf("skip: no CUDA device (placement and id-file bootstrap checked)\n");
        return SL_TEST_SKIP;
    }
    return sl_test_finish("test_dist");
}
