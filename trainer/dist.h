/*
 * trainer/dist.h - data parallelism over several GPUs: one process per GPU,
 * NCCL collectives between them.
 *
 * Placement (rank, world size, CUDA device) comes from, in order:
 *   1. explicit options (sl_dist_opts.world > 0);
 *   2. Open MPI's environment under mpirun: OMPI_COMM_WORLD_RANK,
 *      OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK (-> device);
 *   3. SL_RANK, SL_WORLD_SIZE, SL_LOCAL_RANK (-> device; defaults to the rank);
 *   4. otherwise a single rank (rank 0 of 1, device 0).
 * sl_dist_opts.device >= 0 overrides the device in every case.
 *
 * Bootstrap: NCCL needs one ncclUniqueId shared by every rank. Rank 0 makes
 * it and writes it atomically (temp file + rename) to a shared file
 * (opts->id_file, else $SL_DIST_FILE); the other ranks poll for the file
 * (opts->timeout_s, else $SL_DIST_TIMEOUT, else 300 s) and fail with a
 * message naming it when it never appears. The file must be on a filesystem
 * every rank sees (NFS, Lustre... across nodes; /tmp on one node). Rank 0
 * removes it once the communicator is up. A job tag (opts->job, else
 * $SL_DIST_JOB, $OMPI_MCA_ess_base_jobid or $SLURM_JOB_ID) is written into
 * the file; a reader with a tag ignores a file with another tag or world
 * size (a leftover of an earlier run) and keeps polling.
 * Under mpirun without a file the id travels by MPI_Bcast when sightline was
 * built with MPI (mpi.h found at configure time); otherwise init fails and
 * says to pass --dist-file PATH (SL_DIST_FILE) on a shared filesystem.
 * A world of one needs neither NCCL nor a file.
 *
 * Buffers are device pointers (host pointers in a build without CUDA, where
 * only a world of one exists); `stream` is a cudaStream_t passed as void *
 * (NULL: the legacy default stream). Collectives are enqueued on the stream
 * and return before they finish; every rank must issue the same collectives
 * in the same order. Errors: SL_ERR_EXTERNAL with NCCL's or CUDA's message,
 * SL_ERR_UNSUPPORTED when the build or the machine lacks what is asked for,
 * SL_ERR_INVALID for bad placement; nothing here exits the process.
 *
 * Limitation: ncclCommInitRank waits for every rank; a rank that dies after
 * reading the id leaves the others waiting in sl_dist_init (NCCL blocking
 * mode). NCCL does not support two ranks of one communicator on one GPU
 * ("Duplicate GPU detected", ncclInvalidUsage).
 */
#ifndef SL_TRAINER_DIST_H
#define SL_TRAINER_DIST_H

#include "sightline/common.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_dist sl_dist;

typedef struct sl_dist_opts {
    int world;           /* > 0: use rank/world below; 0: from the environment */
    int rank;            /* with world > 0: 0 .. world-1 */
    int device;          /* >= 0: this CUDA device; -1: local rank, else rank */
    const char *id_file; /* NULL: $SL_DIST_FILE */
    double timeout_s;    /* wait for the id file; <= 0: $SL_DIST_TIMEOUT or 300 */
    const char *job;     /* tag written into the id file; NULL: from the env */
    int force_nccl;      /* build an NCCL communicator even for a world of one */
} sl_dist_opts;

/* Defaults: placement from the environment, device from the local rank. */
void sl_dist_opts_init(sl_dist_opts *o);

/* Join the group (NULL opts = defaults). Sets the CUDA device. On failure
 * *out is NULL and everything acquired is released. */
sl_status sl_dist_init(const sl_dist_opts *o, sl_dist **out);

/* NULL-safe. Destroys the communicator. */
void sl_dist_free(sl_dist *d);

int sl_dist_rank(const sl_dist *d);
int sl_dist_world(const sl_dist *d);
int sl_dist_device(const sl_dist *d);
/* "nccl" when an NCCL communicator is up, "single" otherwise. */
const char *sl_dist_backend(const sl_dist *d);

/* What this build can do: 3 = NCCL with the MPI bootstrap, 2 = NCCL,
 * 1 = CUDA without NCCL (world 1 only), 0 = no CUDA (world 1, host
 * pointers). */
int sl_dist_build_level(void);

/* buf[0..n) = sum over ranks of buf[0..n), in place. */
sl_status sl_dist_all_reduce_sum_f32(sl_dist *d, float *buf, size_t n, void *stream);

/* recv[r*n_per_rank .. (r+1)*n_per_rank) = rank r's send[0..n_per_rank).
 * recv holds world * n_per_rank floats; send may be recv + rank*n_per_rank. */
sl_status sl_dist_all_gather_f32(sl_dist *d, const float *send, float *recv, size_t n_per_rank,
                                 void *stream);

/* buf[0..n) = rank 0's buf[0..n) on every rank (initial weights). */
sl_status sl_dist_broadcast_f32(sl_dist *d, float *buf, size_t n, void *stream);

/* Returns once every rank has called it (a one-element all-reduce on an
 * internal stream, waited for on the host). */
sl_status sl_dist_barrier(sl_dist *d);

/* Host doubles summed over ranks (loss, grad-norm partial sums): copied to
 * the device, all-reduced, copied back; blocking. */
sl_status sl_dist_all_reduce_sum_f64_host(sl_dist *d, double *vals, size_t n);

/* ------------------------------------------------------------------------ */
/* Placement and id-file bootstrap (every build; exposed for tests)          */
/* ------------------------------------------------------------------------ */

typedef struct sl_dist_place {
    int rank, world, device;
    int under_mpirun;   /* OMPI_COMM_WORLD_SIZE is set */
    const char *source; /* "options", "mpirun", "SL_RANK" or "default" */
    char id_file[1024]; /* "" when none */
    char job[128];      /* "" when none */
    double timeout_s;
} sl_dist_place;

/* Resolve placement, id file, job tag and timeout from opts + environment.
 * SL_ERR_INVALID names the option or variable at fault. */
sl_status sl_dist_resolve(const sl_dist_opts *o, sl_dist_place *out);

/* Largest id accepted by the file functions. */
#define SL_DIST_ID_MAX 4096

/* Write `len` id bytes with the world size and job tag to `path`
 * atomically ("<path>.tmp.<pid>" then rename). */
sl_status sl_dist_id_write(const char *path, const char *job, int world, const void *id,
                           size_t len);

/* Wait up to timeout_s for `path` to hold an id of exactly `len` bytes for
 * this world size (and job tag, when `job` is non-empty), then copy it to
 * `id`. A file for another world or job is stale: polling goes on. No file
 * in time: SL_ERR_NOT_FOUND naming the file. A short or corrupt file:
 * SL_ERR_FORMAT at once. */
sl_status sl_dist_id_read(const char *path, const char *job, int world, void *id, size_t len,
                          double timeout_s);

#ifdef __cplusplus
}
#endif

#endif /* SL_TRAINER_DIST_H */
