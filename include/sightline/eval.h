/*
 * sightline/eval.h - image-text retrieval evaluation: the Karpathy split
 * reader (Flickr30K, COCO) and the standard recall metrics.
 *
 * Metrics (the VSE++/SCAN definitions). sim [n_images, n_texts] holds the
 * score of every image against every text; text_image[j] is the image that
 * text j describes.
 *  - Ranks are 1-based. Ties are broken by id, lower index first, always:
 *    an item with the same score as the ground truth and a lower index ranks
 *    ahead of it, one with a higher index behind it. So the rank of ground
 *    truth g in a row s is 1 + #{k : s[k] > s[g] or (s[k] == s[g] and k < g)}.
 *  - Image -> text: an image's rank is the rank of its best-ranked caption
 *    (the highest-scoring one, the lowest index among equals). Other
 *    captions of the same image never count against it.
 *  - Text -> image: a text's rank is the rank of its image among all images.
 *  - An image without captions is no image -> text query (its rank is 0,
 *    "none", and it is left out of the image -> text figures) but stays in
 *    the gallery of every text -> image query, where it can outrank the
 *    right image.
 *  - R@k: percent of queries with rank <= k. medr: floor of the median rank
 *    (the middle rank for an odd count; for an even count the floor of the
 *    mean of the two middle ranks, as VSE++'s floor(median(r)) + 1 over
 *    0-based ranks). meanr: mean rank. RSUM: the sum of the six recalls.
 *  - Fold averages (COCO 1K): images split into consecutive folds of
 *    `fold_images` (0..999, 1000..1999, ...), each with the texts of its
 *    images, evaluated on its own; every figure (recalls, medr, meanr, RSUM)
 *    is the mean over the folds.
 *
 * NaN: a NaN score never beats anything; a query whose ground-truth score
 * is NaN gets the worst rank (behind every other item). Feed finite scores.
 */
#ifndef SIGHTLINE_EVAL_H
#define SIGHTLINE_EVAL_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Karpathy splits                                                          */
/* ------------------------------------------------------------------------ */

#define SL_KARPATHY_MAX_BYTES    ((size_t)1 << 30) /* largest JSON file read */
#define SL_KARPATHY_MAX_IMAGES   10000000          /* images in a file */
#define SL_KARPATHY_MAX_CAPTIONS 1000              /* sentences of one image */
#define SL_KARPATHY_MAX_TEXT     65536             /* bytes of one caption */

/* One image of the split. */
typedef struct sl_karpathy_image {
    char *filename;       /* "filename" (a relative path; never absolute, no "..") */
    char *filepath;       /* "filepath" (COCO: "val2014"), NULL when absent */
    int64_t imgid;        /* "imgid", -1 when absent */
    int64_t cocoid;       /* "cocoid", -1 when absent */
    size_t first_caption; /* its captions are captions[first_caption ..] */
    size_t n_captions;    /* how many were kept (<= max_captions) */
    size_t n_sentences;   /* sentences with text in the file (before the cap) */
} sl_karpathy_image;

/* The images of one split and their captions, in file order. */
typedef struct sl_karpathy {
    char *dataset;             /* "dataset" ("flickr30k", "coco"), "" when absent */
    sl_karpathy_image *images; /* [n_images] */
    size_t n_images;           /* images of the split */
    char **captions;           /* [n_captions] UTF-8 */
    size_t *caption_image;     /* [n_captions] index into images */
    size_t n_captions;         /* captions kept */
    size_t n_file_images;      /* images in the file, every split */
    size_t n_no_split;         /* images without "split" (in no split; skipped) */
    size_t n_no_captions;      /* split images with no caption */
    size_t n_fewer;            /* split images with fewer than max_captions */
    size_t n_more;             /* split images with more than max_captions */
    size_t n_dropped;          /* captions past max_captions, not used */
    size_t n_from_tokens;      /* sentences without "raw" read from "tokens" */
    size_t n_no_text;          /* sentences with neither "raw" nor "tokens" (skipped) */
} sl_karpathy;

typedef struct sl_karpathy_opts {
    const char *split; /* split to keep ("test" when NULL); several joined by ','
                          ("train,restval"); "restval" is a split of its own */
    int max_captions;  /* first captions kept per image (0 = 5) */
} sl_karpathy_opts;

/* Read a Karpathy split file (dataset_flickr30k.json, dataset_coco.json)
 * and keep the images of opts->split. Strict: invalid JSON is SL_ERR_FORMAT
 * naming the file, line and column (jansson's json_error_t); a missing or
 * non-array "images", an image that is not an object, a missing or
 * non-string "filename", an absolute filename or one with "..", a non-string
 * "filepath" or "split", a non-array "sentences", a sentence that is not an
 * object, a non-string "raw" are SL_ERR_FORMAT naming the file and the image
 * (index and filename). Handled and counted rather than refused: an image
 * without "split" (in no split), an image without "sentences" or with an
 * empty list (no captions), a sentence without "raw" (its "tokens" joined by
 * spaces; skipped when it has neither). Sizes are bounded (the
 * SL_KARPATHY_MAX_* above; SL_ERR_LIMIT). Duplicate keys are an error. On
 * failure *out is zeroed. */
sl_status sl_karpathy_read(const char *path, const sl_karpathy_opts *opts, sl_karpathy *out);

/* Free what sl_karpathy_read allocated; zeroes *k. NULL-safe. */
void sl_karpathy_free(sl_karpathy *k);

/* The image's file under `images_dir`: DIR/filepath/filename when filepath
 * is present, else DIR/filename ("" gives the relative path). malloc'ed;
 * NULL when out of memory. */
char *sl_karpathy_image_path(const char *images_dir, const sl_karpathy_image *img);

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

/* Figures of one direction. */
typedef struct sl_recall_stats {
    double r1, r5, r10; /* percent of queries with rank <= 1, 5, 10 */
    double medr;        /* floor of the median rank */
    double meanr;       /* mean rank */
    size_t queries;     /* queries counted */
} sl_recall_stats;

typedef struct sl_retrieval_metrics {
    sl_recall_stats i2t;        /* image -> text */
    sl_recall_stats t2i;        /* text -> image */
    double rsum;                /* i2t r1+r5+r10 + t2i r1+r5+r10 */
    size_t n_images;            /* gallery of t2i */
    size_t n_texts;             /* gallery of i2t */
    size_t n_images_no_caption; /* images left out as i2t queries */
    size_t n_folds;             /* folds averaged (0: one evaluation) */
} sl_retrieval_metrics;

/* Ranks of every query (see the definitions at the top). sim [n_images, ld]
 * row-major, only the first n_texts columns read (ld >= n_texts);
 * text_image [n_texts] values in [0, n_images). i2t_rank [n_images]: the
 * rank of each image's best caption, 0 for an image without captions;
 * t2i_rank [n_texts]: the rank of each text's image. Either output may be
 * NULL. Parallel (OpenMP) over queries; each is a count of the items that
 * beat its ground truth, no sorting. SL_ERR_INVALID names a text whose image
 * is out of range. */
sl_status sl_retrieval_ranks(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                             const size_t *text_image, int64_t *i2t_rank, int64_t *t2i_rank);

/* R@1/5/10, medr and meanr of n ranks (1-based; zeros, "no query", are left
 * out and not counted in out->queries). All zero when no rank is counted. */
sl_status sl_recall_summarize(const int64_t *ranks, size_t n, sl_recall_stats *out);

/* Ranks and figures of both directions over the whole matrix. */
sl_status sl_retrieval_evaluate(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                                const size_t *text_image, sl_retrieval_metrics *out);

/* The mean over folds of `fold_images` consecutive images (each with the
 * texts of its images, in order) of sl_retrieval_evaluate (COCO 1K:
 * fold_images = 1000 over the 5,000 test images). n_images must be a
 * positive multiple of fold_images (SL_ERR_INVALID otherwise). out->n_folds
 * is the fold count; the counts (n_images, n_texts, n_images_no_caption,
 * queries) are totals over the folds. */
sl_status sl_retrieval_evaluate_folds(const float *sim, size_t n_images, size_t n_texts, size_t ld,
                                      const size_t *text_image, size_t fold_images,
                                      sl_retrieval_metrics *out);

/* Similarity of every image with every text: sim [n_images, n_texts] =
 * img [n_images, D] . txt [n_texts, D]^T, one cblas_sgemm. Sizes must fit
 * the BLAS int (SL_ERR_LIMIT). */
sl_status sl_retrieval_similarity(const float *img, size_t n_images, const float *txt,
                                  size_t n_texts, size_t dim, float *sim);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_EVAL_H */
