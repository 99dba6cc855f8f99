/*
 * trainer/dist.c - the distributed layer of a CUDA build (see dist.h):
 * NCCL communicator bootstrapped through the id file (or MPI_Bcast under
 * mpirun when built with MPI); a world of one runs without NCCL. Plain C
 * against the CUDA runtime and NCCL host APIs.
 */
#include "trainer/dist.h"
#include "kernels/kernels.h"
#include "sl_build_config.h"

#include <cuda_runtime.h>
#if SL_HAVE_NCCL
#include <nccl.h>
#endif
#if defined(SL_DIST_MPI) && SL_HAVE_NCCL
#include <mpi.h>
#endif

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sl_dist {
    int rank, world, device;
    cudaStream_t stream; /* for the host-side operations */
    void *scratch;       /* device scratch for them */
    size_t scratch_bytes;
#if SL_HAVE_NCCL
    ncclComm_t comm; /* NULL for a world of one without force_nccl */
#endif
};

static sl_status cuda_fail(cudaError_t e, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "CUDA %s: %s", what, cudaGetErrorString(e));
}

#if SL_HAVE_NCCL
static sl_status nccl_fail(ncclResult_t r, const char *what, ncclComm_t comm) {
    const char *last = ncclGetLastError(comm);
    return sl_set_error(SL_ERR_EXTERNAL, "NCCL %s: %s%s%s", what, ncclGetErrorString(r),
                        last && *last ? ": " : "", last && *last ? last : "");
}
#define HAS_COMM(d) ((d)->comm != NULL)
#else
#define HAS_COMM(d) 0
#endif

int sl_dist_rank(const sl_dist *d) {
    return d ? d->rank : 0;
}

int sl_dist_world(const sl_dist *d) {
    return d ? d->world : 1;
}

int sl_dist_device(const sl_dist *d) {
    return d ? d->device : -1;
}

const char *sl_dist_backend(const sl_dist *d) {
    return d && HAS_COMM(d) ? "nccl" : "single";
}

void sl_dist_free(sl_dist *d) {
    if (!d) return;
    cudaSetDevice(d->device);
#if SL_HAVE_NCCL
    if (d->comm) {
        if (ncclCommFinalize(d->comm) == ncclSuccess)
            ncclCommDestroy(d->comm);
        else
            ncclCommAbort(d->comm);
    }
#endif
    if (d->scratch) cudaFree(d->scratch);
    if (d->stream) cudaStreamDestroy(d->stream);
    free(d);
}

#if defined(SL_DIST_MPI) && SL_HAVE_NCCL
static void mpi_finalize_at_exit(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Finalize();
}

/* Rank 0's id to every rank over MPI_COMM_WORLD. */
static sl_status mpi_bcast_id(const sl_dist_place *pl, ncclUniqueId *id) {
    int init = 0, r = -1, w = 0;
    MPI_Initialized(&init);
    if (!init) {
        if (MPI_Init(NULL, NULL) != MPI_SUCCESS)
            return sl_set_error(SL_ERR_EXTERNAL, "dist: MPI_Init failed");
        atexit(mpi_finalize_at_exit);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    if (r != pl->rank || w != pl->world)
        return sl_set_error(SL_ERR_INVALID,
                            "dist: MPI says rank %d of %d but the placement (%s) is rank %d of "
                            "%d; pass an id file to use another placement",
                            r, w, pl->source, pl->rank, pl->world);
    if (MPI_Bcast(id, (int)sizeof *id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        return sl_set_error(SL_ERR_EXTERNAL, "dist: MPI_Bcast of the NCCL id failed");
    return SL_OK;
}
#define HAVE_MPI_BOOTSTRAP 1
#else
#define HAVE_MPI_BOOTSTRAP 0
#endif

int sl_dist_build_level(void) {
    return SL_HAVE_NCCL ? 2 + HAVE_MPI_BOOTSTRAP : 1;
}

#if SL_HAVE_NCCL
/* Exchange the id and create the communicator (device already set). */
static sl_status nccl_join(sl_dist *d, const sl_dist_place *pl) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r;
    int wrote = 0;
    sl_status st = SL_OK;
    if (pl->rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess)
        return nccl_fail(r, "get unique id", NULL);
    if (pl->world > 1) {
        if (pl->id_file[0]) {
            if (pl->rank == 0) {
                st = sl_dist_id_write(pl->id_file, pl->job, pl->world, &id, sizeof id);
                wrote = st == SL_OK;
            } else {
                st =
                    sl_dist_id_read(pl->id_file, pl->job, pl->world, &id, sizeof id, pl->timeout_s);
            }
        } else {
#if HAVE_MPI_BOOTSTRAP
            st = mpi_bcast_id(pl, &id);
#else
            st = sl_set_error(SL_ERR_INVALID, "dist: no id file"); /* checked before */
#endif
        }
        if (st != SL_OK) return sl_wrap_error(st, "dist: rank %d of %d: ", pl->rank, pl->world);
    } else if (pl->id_file[0]) {
        /* a world of one with force_nccl: exercise the file path too */
        if ((st = sl_dist_id_write(pl->id_file, pl->job, 1, &id, sizeof id)) != SL_OK) return st;
        wrote = 1;
        if ((st = sl_dist_id_read(pl->id_file, pl->job, 1, &id, sizeof id, pl->timeout_s)) !=
            SL_OK) {
            unlink(pl->id_file);
            return st;
        }
    }
    d->comm = NULL;
    r = ncclCommInitRank(&d->comm, pl->world, id, pl->rank);
    /* Every rank has read the id once init returns (it is collective). */
    if (wrote) unlink(pl->id_file);
    if (r != ncclSuccess) {
        st = nccl_fail(r, "init rank", d->comm);
        if (d->comm) ncclCommAbort(d->comm);
        d->comm = NULL;
        return sl_wrap_error(st, "dist: rank %d of %d on cuda:%d: ", pl->rank, pl->world,
                             pl->device);
    }
    return SL_OK;
}
#endif

sl_status sl_dist_init(const sl_dist_opts *o, sl_dist **out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "dist: no output");
    *out = NULL;
    sl_dist_place pl;
    sl_status st = sl_dist_resolve(o, &pl);
    if (st != SL_OK) return st;
    int need_nccl = pl.world > 1 || (o && o->force_nccl);

    /* Configuration errors before the GPU is touched. */
    if (need_nccl && !SL_HAVE_NCCL)
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "dist: world size %d (rank %d, from %s) needs NCCL, but this build "
                            "of sightline has none (install NCCL, reconfigure with -DSL_NCCL=ON)",
                            pl.world, pl.rank, pl.source);
    if (pl.world > 1 && !pl.id_file[0] && !(pl.under_mpirun && HAVE_MPI_BOOTSTRAP)) {
        if (pl.under_mpirun)
            return sl_set_error(SL_ERR_INVALID,
                                "dist: launched by mpirun (world size %d) without an id file, "
                                "and this build has no MPI bootstrap (mpi.h was not found at "
                                "configure time): pass --dist-file PATH (or set SL_DIST_FILE) "
                                "on a filesystem every rank shares",
                                pl.world);
        return sl_set_error(SL_ERR_INVALID,
                            "dist: world size %d (from %s) needs a shared file for the NCCL id: "
                            "pass --dist-file PATH (or set SL_DIST_FILE) on a filesystem every "
                            "rank shares",
                            pl.world, pl.source);
    }

    sl_status dst = sl_cuda_check_device(pl.device);
    if (dst) return sl_wrap_error(dst, "dist: rank %d of %d: ", pl.rank, pl.world);
    cudaError_t e = cudaSetDevice(pl.device);
    if (e != cudaSuccess) return cuda_fail(e, "set device");

    sl_dist *d = calloc(1, sizeof *d);
    if (!d) return sl_set_error(SL_ERR_NOMEM, "dist: out of memory");
    d->rank = pl.rank;
    d->world = pl.world;
    d->device = pl.device;
    if ((e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        d->stream = NULL;
        st = cuda_fail(e, "create stream");
        sl_dist_free(d);
        return st;
    }
#if SL_HAVE_NCCL
    if (need_nccl && (st = nccl_join(d, &pl)) != SL_OK) {
        sl_dist_free(d);
        return st;
    }
#endif
    *out = d;
    return SL_OK;
}

static sl_status check(sl_dist *d, size_t n, size_t elem, size_t *bytes) {
    if (!d) return sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
    if (sl_mul_size(n, elem, bytes) != 0)
        return sl_set_error(SL_ERR_LIMIT, "dist: %zu elements overflow", n);
    return SL_OK;
}

sl_status sl_dist_all_reduce_sum_f32(sl_dist *d, float *buf, size_t n, void *stream) {
    size_t bytes;
    sl_status st = check(d, n, sizeof(float), &bytes);
    if (st != SL_OK || n == 0 || !HAS_COMM(d)) return st;
#if SL_HAVE_NCCL
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, d->comm, (cudaStream_t)stream);
    if (r != ncclSuccess) return nccl_fail(r, "all-reduce", d->comm);
#else
    (void)buf;
    (void)stream;
#endif
    return SL_OK;
}

sl_status sl_dist_all_gather_f32(sl_dist *d, const float *send, float *recv, size_t n_per_rank,
                                 void *stream) {
    size_t bytes;
    sl_status st = check(d, n_per_rank, sizeof(float), &bytes);
    if (st != SL_OK || n_per_rank == 0) return st;
    if (!HAS_COMM(d)) {
        if (send == recv) return SL_OK;
        cudaError_t e =
            cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, "all-gather copy");
    }
#if SL_HAVE_NCCL
    ncclResult_t r =
        ncclAllGather(send, recv, n_per_rank, ncclFloat, d->comm, (cudaStream_t)stream);
    if (r != ncclSuccess) return nccl_fail(r, "all-gather", d->comm);
#endif
    return SL_OK;
}

sl_status sl_dist_broadcast_f32(sl_dist *d, float *buf, size_t n, void *stream) {
    size_t bytes;
    sl_status st = check(d, n, sizeof(float), &bytes);
    if (st != SL_OK || n == 0 || !HAS_COMM(d)) return st;
#if SL_HAVE_NCCL
    ncclResult_t r = ncclBroadcast(buf, buf, n, ncclFloat, 0, d->comm, (cudaStream_t)stream);
    if (r != ncclSuccess) return nccl_fail(r, "broadcast", d->comm);
#else
    (void)buf;
    (void)stream;
#endif
    return SL_OK;
}

#if SL_HAVE_NCCL
static sl_status ensure_scratch(sl_dist *d, size_t bytes) {
    if (bytes <= d->scratch_bytes) return SL_OK;
    if (d->scratch) cudaFree(d->scratch);
    d->scratch = NULL;
    d->scratch_bytes = 0;
    cudaError_t e = cudaMalloc(&d->scratch, bytes);
    if (e != cudaSuccess) {
        d->scratch = NULL;
        return cuda_fail(e, "malloc (dist scratch)");
    }
    d->scratch_bytes = bytes;
    return SL_OK;
}

/* Sum `n` values of `type` (elem bytes) from host `vals` (NULL: scratch
 * contents) over ranks on the internal stream; wait for it. */
static sl_status host_all_reduce(sl_dist *d, void *vals, size_t n, size_t elem, ncclDataType_t type,
                                 const char *what) {
    size_t bytes = n * elem;
    cudaError_t e = cudaSetDevice(d->device);
    if (e != cudaSuccess) return cuda_fail(e, "set device");
    sl_status st = ensure_scratch(d, bytes < 64 ? 64 : bytes);
    if (st != SL_OK) return st;
    if (vals) {
        e = cudaMemcpyAsync(d->scratch, vals, bytes, cudaMemcpyHostToDevice, d->stream);
        if (e != cudaSuccess) return cuda_fail(e, "copy to device");
    }
    ncclResult_t r = ncclAllReduce(d->scratch, d->scratch, n, type, ncclSum, d->comm, d->stream);
    if (r != ncclSuccess) return nccl_fail(r, what, d->comm);
    if (vals) {
        e = cudaMemcpyAsync(vals, d->scratch, bytes, cudaMemcpyDeviceToHost, d->stream);
        if (e != cudaSuccess) return cuda_fail(e, "copy to host");
    }
    if ((e = cudaStreamSynchronize(d->stream)) != cudaSuccess) return cuda_fail(e, what);
    return SL_OK;
}
#endif

sl_status sl_dist_barrier(sl_dist *d) {
    if (!d) return sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
    if (!HAS_COMM(d)) return SL_OK;
#if SL_HAVE_NCCL
    return host_all_reduce(d, NULL, 1, sizeof(float), ncclFloat, "barrier");
#else
    return SL_OK;
#endif
}

sl_status sl_dist_all_reduce_sum_f64_host(sl_dist *d, double *vals, size_t n) {
    size_t bytes;
    sl_status st = check(d, n, sizeof(double), &bytes);
    if (st != SL_OK || n == 0 || !HAS_COMM(d)) return st;
#if SL_HAVE_NCCL
    return host_all_reduce(d, vals, n, sizeof(double), ncclDouble, "all-reduce (host f64)");
#else
    (void)vals;
    return SL_OK;
#endif
}
