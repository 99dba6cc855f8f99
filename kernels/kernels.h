/*
 * kernels/kernels.h - the compute kernels (CPU, and CUDA when built).
 * Nothing here knows about files or models: plain arrays and sizes in,
 * plain arrays out.
 */
#ifndef SL_KERNELS_H
#define SL_KERNELS_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CPU ----------------------------------------------------------------- */

/* Scale each row of x [n, d] to unit L2 norm in place. Rows whose norm is
 * below 1e-12 are left as they are. */
void sl_cpu_l2_normalize_rows(float *x, size_t n, size_t d);

/* Convert n IEEE half-precision values to float32 and back (round to
 * nearest even, overflow to infinity). */
void sl_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void sl_f32_to_f16(const float *src, uint16_t *dst, size_t n);

/* ---- CUDA (kernels/cuda/) ------------------------------------------------ */

/* SL_OK when CUDA device `dev` exists; else SL_ERR_UNSUPPORTED with
 * "cuda:N requested but K CUDA device(s) found" (or, in a build without
 * CUDA, that the build has none). The one check every CUDA entry point
 * starts with. */
sl_status sl_cuda_check_device(int dev);

/* Same as sl_cpu_l2_normalize_rows on device `dev`, for host data x [n, d]
 * (copied in and back). SL_ERR_UNSUPPORTED when the build has no CUDA or
 * the device is absent; SL_ERR_EXTERNAL with the CUDA message on failure. */
sl_status sl_cuda_l2_normalize_rows(int dev, float *x, size_t n, size_t d);

/* ---- CUDA exact search (kernels/cuda/search.cu) ------------------------- */

/* Largest k of sl_cuda_topk. */
#define SL_CUDA_TOPK_MAX 1024

/* Inner-product top-k on device `dev`: for each query q [nq, d] the k rows
 * of db [n, d] (both row-major F32, host memory) with the highest score
 * q . db[i], written best first to scores [nq, k] and ids [nq, k] (host).
 * Order: score descending, ties broken by the smaller id (the order of
 * sl_retrieval_ranks and of query/ cmp_cand; FAISS IndexFlatIP returns
 * tied ids largest first). NaN scores rank last (after -inf, smaller id
 * first) and come back as NaN; -0 comes back as +0. When k > n the
 * positions from n on hold score -INFINITY and id -1 (FAISS pads with
 * -FLT_MAX and -1).
 * How: db is uploaded once (in chunks when it exceeds the memory budget,
 * see SL_CUDA_MEM_BUDGET), scores by cuBLAS sgemm in F32 (no TF32), then a
 * radix-select top-k kernel per query row that merges each tile into the
 * running top-k. Scores differ from a CPU sgemm in rounding only, so near
 * ties (within ~1e-6 relative) may come out in another order.
 * Limits: 1 <= k <= SL_CUDA_TOPK_MAX (SL_ERR_INVALID for 0,
 * SL_ERR_UNSUPPORTED above), n <= INT32_MAX and d <= INT32_MAX
 * (SL_ERR_LIMIT). nq == 0 does nothing; n == 0 gives only padding.
 * SL_ERR_UNSUPPORTED names cuda:N and the device count when the device is
 * absent (or the build has no CUDA); SL_ERR_EXTERNAL carries the CUDA or
 * cuBLAS message; SL_ERR_NOMEM when the budget cannot hold one tile. All
 * device memory is freed on every path; the calling thread's current
 * device is restored. */
sl_status sl_cuda_topk(int dev, const float *q, size_t nq, const float *db, size_t n, size_t d,
                       size_t k, float *scores, int64_t *ids);

/* The ranks of sl_retrieval_ranks (include/sightline/eval.h: 1-based, ties
 * broken by the lower index, an image's rank is that of its best caption,
 * 0 for an image without captions, NaN ground truth ranks last), computed
 * on device `dev` from img [n_images, d] and txt [n_texts, d] (row-major F32,
 * host) without bringing the similarity matrix back: one cuBLAS F32 sgemm
 * (in row chunks of images when the matrix exceeds the memory budget, then
 * twice: once for the ground-truth scores, once to count), then counting
 * kernels. txt_image [n_texts] gives each text's image, in [0, n_images)
 * (SL_ERR_INVALID naming the text otherwise). i2t_rank [n_images] and
 * t2i_rank [n_texts] (host) may each be NULL. Identical to
 * sl_retrieval_similarity + sl_retrieval_ranks except where the two sgemms
 * round a near tie differently. Errors as sl_cuda_topk; n_images, n_texts
 * and d <= INT32_MAX (SL_ERR_LIMIT). */
sl_status sl_cuda_retrieval_ranks(int dev, const float *img, size_t n_images, const float *txt,
                                  size_t n_texts, size_t d, const int64_t *txt_image,
                                  int64_t *i2t_rank, int64_t *t2i_rank);

/* Timings of the calling thread's last sl_cuda_topk or
 * sl_cuda_retrieval_ranks (all zero before one, after a failed one, and in
 * builds without CUDA). Device times are CUDA events on the call's stream:
 * upload = the first copies in (queries/first db chunk, or both embedding
 * sets), compute = from there to the last copy out (sgemm and kernels; it
 * also holds later chunk uploads when the db is chunked), download = the
 * last copy out. total = host wall time of the whole call, including
 * cuBLAS handle creation, allocation and host-side decoding. */
typedef struct sl_cuda_search_stats {
    double total_ms;
    double upload_ms;
    double compute_ms;
    double download_ms;
    size_t gemms;     /* sgemm calls */
    size_t db_chunks; /* db (top-k) or image-row (ranks) chunks */
    size_t budget;    /* device bytes the plan was made for */
} sl_cuda_search_stats;
void sl_cuda_search_last_stats(sl_cuda_search_stats *out);

/* SL_CUDA_MEM_BUDGET: device bytes the search entry points plan for
 * (digits, optional K, M or G suffix, powers of 1024); default: 90% of the
 * free memory less 256 MiB. Capped at the free memory. Small values force
 * chunking (the tests use this). */

#ifdef __cplusplus
}
#endif

#endif
