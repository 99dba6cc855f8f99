/*
 * trainer/dist_none.c - the distributed layer of a build without CUDA: a
 * world of one rank, buffers in host memory (all-gather copies, the other
 * collectives leave the data as it is). A larger world fails at init and
 * says the build lacks CUDA/NCCL.
 */
#include "trainer/dist.h"

#include <stdlib.h>
#include <string.h>

struct sl_dist {
    int device;
};

int sl_dist_build_level(void) {
    return 0;
}

sl_status sl_dist_init(const sl_dist_opts *o, sl_dist **out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "dist: no output");
    *out = NULL;
    sl_dist_place pl;
    sl_status st = sl_dist_resolve(o, &pl);
    if (st != SL_OK) return st;
    if (pl.world > 1)
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "dist: world size %d (rank %d, from %s) needs NCCL, but this build of "
                            "sightline has no CUDA support (rebuild with nvcc and NCCL present, "
                            "-DSL_CUDA=AUTO or ON, -DSL_NCCL=ON)",
                            pl.world, pl.rank, pl.source);
    if (o && o->force_nccl)
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "dist: NCCL requested but this build of sightline has no CUDA support");
    sl_dist *d = calloc(1, sizeof *d);
    if (!d) return sl_set_error(SL_ERR_NOMEM, "dist: out of memory");
    d->device = pl.device;
    *out = d;
    return SL_OK;
}

void sl_dist_free(sl_dist *d) {
    free(d);
}

int sl_dist_rank(const sl_dist *d) {
    (void)d;
    return 0;
}

int sl_dist_world(const sl_dist *d) {
    (void)d;
    return 1;
}

int sl_dist_device(const sl_dist *d) {
    return d ? d->device : -1;
}

const char *sl_dist_backend(const sl_dist *d) {
    (void)d;
    return "single";
}

sl_status sl_dist_all_reduce_sum_f32(sl_dist *d, float *buf, size_t n, void *stream) {
    (void)buf;
    (void)n;
    (void)stream;
    return d ? SL_OK : sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
}

sl_status sl_dist_all_gather_f32(sl_dist *d, const float *send, float *recv, size_t n_per_rank,
                                 void *stream) {
    (void)stream;
    if (!d) return sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
    if (n_per_rank && send != recv) memmove(recv, send, n_per_rank * sizeof(float));
    return SL_OK;
}

sl_status sl_dist_broadcast_f32(sl_dist *d, float *buf, size_t n, void *stream) {
    (void)buf;
    (void)n;
    (void)stream;
    return d ? SL_OK : sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
}

sl_status sl_dist_barrier(sl_dist *d) {
    return d ? SL_OK : sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
}

sl_status sl_dist_all_reduce_sum_f64_host(sl_dist *d, double *vals, size_t n) {
    (void)vals;
    (void)n;
    return d ? SL_OK : sl_set_error(SL_ERR_INVALID, "dist: NULL communicator");
}
