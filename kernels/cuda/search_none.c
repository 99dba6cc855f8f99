/*
 * kernels/cuda/search_none.c - the CUDA search entry points of a build
 * without CUDA: they report that no device is available.
 */
#include "kernels/kernels.h"
#include "sightline/sightline.h"

#include <string.h>

static sl_status no_cuda(int dev) {
    return sl_set_error(SL_ERR_UNSUPPORTED,
                        "cuda:%d requested but this build of sightline has no CUDA support "
                        "(rebuild with nvcc present and -DSL_CUDA=AUTO or ON)",
                        dev);
}

sl_status sl_cuda_topk(int dev, const float *q, size_t nq, const float *db, size_t n, size_t d,
                       size_t k, float *scores, int64_t *ids) {
    (void)q;
    (void)nq;
    (void)db;
    (void)n;
    (void)d;
    (void)k;
    (void)scores;
    (void)ids;
    return no_cuda(dev);
}

sl_status sl_cuda_retrieval_ranks(int dev, const float *img, size_t n_images, const float *txt,
                                  size_t n_texts, size_t d, const int64_t *txt_image,
                                  int64_t *i2t_rank, int64_t *t2i_rank) {
    (void)img;
    (void)n_images;
    (void)txt;
    (void)n_texts;
    (void)d;
    (void)txt_image;
    (void)i2t_rank;
    (void)t2i_rank;
    return no_cuda(dev);
}

void sl_cuda_search_last_stats(sl_cuda_search_stats *out) {
    if (out) memset(out, 0, sizeof *out);
}
