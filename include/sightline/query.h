/*
 * sightline/query.h - batch lookups against an index directory (store.h):
 * text -> image, image -> text and phrase -> region, with optional fine
 * re-ranking by token-to-patch late interaction.
 *
 * A batch of queries is encoded together and searched with one FAISS call
 * per collection. A query that cannot be answered (an empty line, an
 * unreadable image, a token error) gets its own status and message in its
 * result; the others are answered.
 *
 * Scores are inner products of L2-normalised embeddings (cosine). Phrase
 * boxes are pixels of the picture as displayed, [x0, y0, x1, y1) (see
 * grounding.h).
 *
 * Fine re-ranking (SL_RERANK_FINE): the first max(4k, 50) candidates of
 * the global search are re-scored as
 *     score = mean over text tokens t of max over patches p of <t, p>
 * with each token embedding (encoder tokens_out) and each patch embedding
 * L2-normalised. Text tokens are positions 1..eot inclusive: the start token
 * (position 0) is skipped, since under the causal mask it sees nothing and
 * is the same vector for every text; the end token is kept, since it is the
 * pooled sentence embedding. Image patches are the stored ones (index built
 * with --region) for indexed images and the freshly encoded ones for image
 * queries.
 */
#ifndef SIGHTLINE_QUERY_H
#define SIGHTLINE_QUERY_H

#include "sightline/common.h"
#include "sightline/grounding.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_QUERY_MAX_K     1000 /* results per query */
#define SL_QUERY_MAX_BATCH 4096 /* queries per forward pass / FAISS call */

typedef enum sl_query_kind {
    SL_QUERY_TEXT = 0,  /* text -> images */
    SL_QUERY_IMAGE = 1, /* image path -> texts */
    SL_QUERY_PHRASE = 2 /* "phrase" (corpus-wide) or "image_path<TAB>phrase" -> boxes */
} sl_query_kind;

typedef enum sl_rerank {
    SL_RERANK_NONE = 0,
    SL_RERANK_FINE = 1 /* token-to-patch late interaction (see above) */
} sl_rerank;

typedef struct sl_query_opts {
    const char *index_dir;     /* the index directory (required) */
    const char *model;         /* model path; NULL: the one the index recorded ("model_path") */
    int k;                     /* results per query (1..SL_QUERY_MAX_K; 0 = 10) */
    int batch;                 /* queries per forward pass (0 = 32) */
    int threads;               /* compute threads (0 = leave as is) */
    const char *device;        /* encoder device (sl_encoder_opts.device; NULL = the CPU) */
    sl_rerank rerank;          /* re-ranking of text and image queries */
    const sl_ground_opts *box; /* phrase boxes (sl_ground_box; NULL = the defaults) */
    uint64_t max_pixels;       /* decode cap for image queries (0 = 100 Mpx) */
} sl_query_opts;

/* One answer. */
typedef struct sl_query_hit {
    int64_t id;      /* image id (text and phrase queries) or text id; -1 for an
                        image that is not in the index (phrase within an image) */
    float score;     /* cosine, or the re-ranking score */
    char *path;      /* image path (malloc'ed; NULL for image -> text) */
    size_t path_len; /* bytes of path */
    char *text;      /* text (image -> text; malloc'ed), else NULL */
    int has_box;     /* phrase queries: box is set */
    sl_box box;      /* phrase box in picture pixels */
    int width;       /* picture size as displayed (phrase queries; 0 unknown) */
    int height;
} sl_query_hit;

/* The answer to one query. */
typedef struct sl_query_result {
    sl_status status;   /* SL_OK, or why this query failed */
    char error[512];    /* message when status != SL_OK */
    size_t n;           /* hits (<= k) */
    sl_query_hit *hits; /* best first; malloc'ed */
} sl_query_result;

typedef struct sl_query sl_query;

/* Open the index read-only and the model (opts->model, or the absolute path
 * the index recorded), checking that the model's fingerprint is the one the
 * index was built with. Errors: SL_ERR_NOT_FOUND (no index; no model given
 * nor recorded), SL_ERR_INVALID (fingerprint or dimension mismatch, an
 * unknown device name), and sl_encoder_open's (a device that cannot be
 * used). */
sl_status sl_query_open(const sl_query_opts *opts, sl_query **out);
void sl_query_free(sl_query *q);

/* Whether the index can answer `kind`: SL_ERR_NOT_FOUND naming what to
 * build (texts for image queries; regions for corpus-wide phrases, checked
 * per query there since within-image phrases need none) otherwise. */
sl_status sl_query_check(sl_query *q, sl_query_kind kind);

/* Answer n queries (NUL-terminated lines): results [n] (caller-allocated,
 * filled in input order; release each with sl_query_result_clear). Queries
 * are processed in batches of opts->batch: one forward pass and one FAISS
 * search per batch. Returns SL_OK when every query has its result (some
 * may have failed on their own); another status only for errors that stop
 * the batch (out of memory, a failing index read). */
sl_status sl_query_run(sl_query *q, sl_query_kind kind, const char *const *queries, size_t n,
                       sl_query_result *results);

void sl_query_result_clear(sl_query_result *r);

/* The late-interaction score of tokens [nt, d] against patches [np, d]
 * (rows L2-normalised): mean over tokens of the best patch similarity.
 * 0 when nt or np is 0. Exposed for tests. */
float sl_query_late_score(const float *tokens, size_t nt, const float *patches, size_t np,
                          size_t d);

/* ---- reports -------------------------------------------------------------- */

/* A copy of s[0..len) as valid UTF-8 (each byte that does not start a
 * well-formed sequence, and NUL, becomes U+FFFD): paths and texts are bytes,
 * JSON and HTML want UTF-8. malloc'ed; NULL when out of memory. */
char *sl_utf8_clean(const char *s, size_t len);

/* Write one self-contained HTML page (no external resources) showing each
 * query with its top results: JPEG thumbnails embedded as data URIs
 * (links relative to the page when a thumbnail cannot be made), scores, and
 * phrase boxes drawn over the thumbnails. All text is escaped. `page` is
 * replaced atomically. */
sl_status sl_query_report_html(const char *page, sl_query_kind kind, const char *const *queries,
                               const sl_query_result *results, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_QUERY_H */
