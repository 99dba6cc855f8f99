/*
 * sightline/indexer.h - build and incrementally update an index directory
 * (see store.h) from image folders and list files.
 *
 * An update walks every source, costs one stat and one metadata read per
 * unchanged file (same mtime and size), re-encodes changed files, reuses the
 * stored vector of a file whose content hash is already known (a rename or
 * a copy), records files that fail with their reason, and removes files that
 * are gone, unless that would remove more than `max_delete` of the indexed
 * files or a source root is missing, empty or unreadable: then nothing is
 * removed and the summary says why (unless `force`).
 */
#ifndef SIGHTLINE_INDEXER_H
#define SIGHTLINE_INDEXER_H

#include "sightline/common.h"
#include "sightline/fetch.h"
#include "sightline/walk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SHA-256 of bytes; hex form into out (65 bytes) when `hex`. */
void sl_sha256(const void *data, size_t len, uint8_t digest[32]);
void sl_hex(const uint8_t *bytes, size_t n, char *out /* 2n + 1 */);

/* Fingerprint of a model: SHA-256 over its config.json (when present) and
 * its weights file, as 64 hex digits. */
sl_status sl_model_fingerprint(const char *model_path, char out[65]);

typedef struct sl_index_opts {
    const char *index_dir;      /* the index directory */
    const char *model;          /* model path: needed when something must be encoded */
    const char *const *sources; /* folders, image files or list files; NULL = as recorded */
    size_t n_sources;
    const char *index_type; /* build: "auto" (NULL) or a FAISS factory string */
    uint64_t memory_budget; /* build with auto: bytes the index may use (0 = 4 GiB) */
    int region;             /* build: also index projected patch embeddings */
    int create;             /* build: create the index (1) or require it (0) */
    int threads;            /* compute threads (0 = all cores) */
    const char *device;     /* encoder device (sl_encoder_opts.device; NULL = the CPU) */
    int batch;              /* images per forward pass (0 = 32) */
    double max_delete;      /* largest fraction of indexed files an update may remove */
    int force;              /* remove even past max_delete or with a root missing */
    int wait_lock;          /* wait for a concurrent run instead of failing */
    int quiet;              /* no progress line */
    uint64_t max_pixels;    /* decode cap (0 = 100 Mpx) */
    sl_walk_opts walk;      /* include/exclude/hidden for folders */
    sl_fetch_opts fetch;    /* downloads for URL-list sources ("urls:" + TSV path) */
} sl_index_opts;

/* One input that was left out, with why. */
typedef struct sl_index_failure {
    char *path; /* byte-exact */
    char *reason;
} sl_index_failure;

typedef struct sl_index_summary {
    uint64_t seen;      /* files found in the sources */
    uint64_t unchanged; /* same mtime and size: not read */
    uint64_t added;     /* new files encoded */
    uint64_t updated;   /* changed files re-encoded */
    uint64_t reused;    /* new or changed files whose content was already indexed */
    uint64_t removed;   /* files gone from the sources, removed from the index */
    uint64_t failed;    /* inputs left out this run (listed in failures) */
    uint64_t total;     /* images in the index afterwards */
    int deletions_held; /* 1 when removals were held back (see held_reason) */
    char held_reason[1024];
    double seconds;             /* wall time */
    double encode_seconds;      /* time spent in the encoder */
    sl_index_failure *failures; /* `failed` entries; free with sl_index_summary_free */
} sl_index_summary;

/* Build (opts->create) or update an index. Returns SL_OK when the run
 * completed, even with failed inputs or held deletions (see the summary).
 * The encoder is opened before anything is written (a build: before the
 * walk; an update: only when something needs encoding), so a model or
 * device that cannot be used leaves no index, or the index as it was. */
sl_status sl_index_update(const sl_index_opts *opts, sl_index_summary *summary);

void sl_index_summary_free(sl_index_summary *summary);

/* Encode texts (one per line, or the captions of a Karpathy JSON) and
 * replace the index's text side with them on `device` (as
 * sl_encoder_opts.device; NULL = the CPU). *count receives how many. The
 * model is opened before the index: when it (or the device) cannot be, the
 * index is left as it was. */
sl_status sl_index_texts(const char *index_dir, const char *model, const char *texts_path,
                         int threads, const char *device, int quiet, uint64_t *count);

/* Remove paths from the index (byte-exact as listed in stats). */
sl_status sl_index_remove(const char *index_dir, const char *const *paths, size_t n,
                          uint64_t *removed);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_INDEXER_H */
