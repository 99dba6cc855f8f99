/*
 * sightline/fetch.h - download images by URL into a content-addressed cache
 * (libcurl multi interface), and read URL-list sources for the indexer.
 *
 * Cache layout under a downloads directory (the indexer uses
 * <index>/downloads):
 *   <first 2 hex>/<sha256 hex>   the bytes of a downloaded image, named by
 *                                their SHA-256 (written to tmp/, fsynced,
 *                                renamed into place)
 *   tmp/                         transfers in progress (removed on failure)
 *   urls.tsv                     the URL map, an append-only journal, one
 *                                line per finished fetch, the last line of a
 *                                URL winning:
 *                                  state TAB sha256 TAB size TAB fetched_ns
 *                                  TAB http TAB url TAB error
 *                                state "ok" (bytes cached), "fail" (a
 *                                permanent failure: 4xx, not an image, too
 *                                large, too many redirects) or "temp" (5xx,
 *                                429, timeout, connection: tried again on the
 *                                next run). A torn last line is ignored; the
 *                                journal is rewritten (temp + rename) when
 *                                stale lines outnumber live ones.
 *
 * A URL whose map entry is "ok" and whose cache file is present with the
 * recorded size is never requested again; a "fail" entry is not retried
 * unless `retry_failed`. Only http:// and https:// URLs are fetched
 * (redirects included). Per-URL failures never fail a run: they are
 * reported in the results.
 *
 * URL list (TSV): one `url[<TAB>caption]` per line; blank lines and lines
 * starting with '#' are skipped; CR before LF is dropped. A line whose URL
 * is empty, longer than SL_FETCH_MAX_URL, holds spaces or control bytes,
 * or lacks "scheme://" is malformed: a per-line error naming file and line,
 * keyed by the URL text as written (or "FILE:LINE" when that is empty or
 * too long).
 */
#ifndef SIGHTLINE_FETCH_H
#define SIGHTLINE_FETCH_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_FETCH_MAX_URL     8192        /* bytes in one URL */
#define SL_FETCH_MAX_CAPTION 4096        /* bytes kept of one caption */
#define SL_FETCH_SOURCE_PFX  "urls:"     /* index source string: "urls:" + absolute TSV path */
#define SL_FETCH_DIRNAME     "downloads" /* cache directory under an index directory */

typedef struct sl_fetch_opts {
    int parallel;           /* concurrent transfers (0 = 8; at most 256) */
    double connect_timeout; /* seconds to connect (0 = 10) */
    double timeout;         /* seconds for one whole attempt (0 = 60) */
    int retries;            /* extra attempts on 5xx, 429, timeouts, connection errors
                               (0 = 3; negative = none) */
    double backoff;         /* seconds before the first retry, doubled each time (0 = 0.5) */
    uint64_t max_bytes;     /* largest body accepted (0 = 50 MB) */
    int max_redirects;      /* redirects followed (0 = 5; negative = none) */
    int retry_failed;       /* request URLs whose earlier failure was permanent too */
    int quiet;              /* no progress line */
} sl_fetch_opts;

/* The outcome of one URL. */
typedef struct sl_fetch_result {
    sl_status status;   /* SL_OK when the bytes are in the cache */
    int transient;      /* a failure worth trying again later (5xx, 429, timeout) */
    int cached;         /* 1 when no request was made this run (map entry reused) */
    int attempts;       /* requests made this run */
    int http_code;      /* last HTTP status seen (0 when none) */
    char sha256[65];    /* content hash, hex (status SL_OK) */
    uint64_t size;      /* body bytes (status SL_OK) */
    int64_t fetched_ns; /* wall-clock time (Unix ns) the bytes were fetched; 0 on failure */
    char error[384];    /* why it failed ("" on success); names no URL */
} sl_fetch_result;

typedef struct sl_fetch_stats {
    uint64_t urls;       /* distinct URLs asked for */
    uint64_t cached;     /* served from the cache, no request */
    uint64_t downloaded; /* fetched this run */
    uint64_t failed;     /* failed (this run or remembered) */
    uint64_t requests;   /* HTTP requests made, retries included */
    uint64_t bytes;      /* body bytes downloaded this run */
} sl_fetch_stats;

/* Fetch `n` URLs into the cache at `cache_dir` (created when missing):
 * results[i] (caller-allocated, n entries) receives the outcome of urls[i].
 * Duplicate URLs are fetched once. `opts` may be NULL (defaults); `stats`
 * may be NULL. Returns SL_OK when the run completed, whatever failed per
 * URL; an error only when the cache cannot be used, libcurl cannot start,
 * or memory runs out. */
sl_status sl_fetch_urls(const char *cache_dir, const char *const *urls, size_t n,
                        const sl_fetch_opts *opts, sl_fetch_result *results, sl_fetch_stats *stats);

/* Path of the cache file of a content hash: "<cache_dir>/<h[0..2]>/<h>".
 * Returns SL_ERR_LIMIT when it does not fit in `cap`. */
sl_status sl_fetch_cache_path(const char *cache_dir, const char *sha256_hex, char *out, size_t cap);

/* ---- URL-list sources ------------------------------------------------------ */

/* One entry of a URL-list source, as handed to the indexer. */
typedef struct sl_url_entry {
    const char *key;        /* record key: the URL (as written, for a malformed line) */
    const char *caption;    /* caption from the TSV ("" when none) */
    const char *cache_path; /* where the bytes are (NULL on failure) */
    int64_t mtime_ns;       /* fetch time of the cached bytes (0 on failure) */
    uint64_t size;          /* bytes (0 on failure) */
    const char *error;      /* why this entry failed (NULL on success) */
} sl_url_entry;

/* Return non-zero to stop. Pointers in `e` live until the callback returns. */
typedef int (*sl_url_entry_fn)(void *ctx, const sl_url_entry *e);

/* Whether an index source string is a URL list ("urls:" + path). */
int sl_url_source_is(const char *source);

/* Read the URL list of `source` ("urls:" + TSV path), fetch every URL into
 * "<index_dir>/downloads" and call `fn` once per listed line in file order.
 * A missing or unreadable TSV (over 1 GiB counts as unreadable), or one
 * listing no URL, writes a reason into root_bad (cap bytes) and returns
 * SL_OK without calling `fn`. Errors: as sl_fetch_urls. */
sl_status sl_url_source_fetch(const char *index_dir, const char *source, const sl_fetch_opts *opts,
                              sl_url_entry_fn fn, void *ctx, char *root_bad, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_FETCH_H */
