/*
 * sightline/store.h - an index directory: FAISS indices of embeddings with
 * their metadata in RocksDB, kept consistent across crashes.
 *
 * Directory layout:
 *   manifest.json            format version, dim, model fingerprint, index
 *                            type, and per collection the FAISS file that
 *                            matches which RocksDB sequence number
 *   meta/                    RocksDB: column families
 *                              state    key -> value (next_id, sources, ...)
 *                              files    path bytes -> file record
 *                              ids      image id (u64 BE) -> path bytes
 *                              hashes   content hash (32 bytes) + id -> ""
 *                              vectors  image id -> float32[dim]
 *                              patches  image id -> float16[P * dim]
 *                              texts    text id -> UTF-8 text
 *                              tvectors text id -> float32[dim]
 *   images.<gen>.faiss       image embeddings, ids = image ids
 *   texts.<gen>.faiss        text embeddings, ids = text ids
 *   regions.<gen>.faiss      patch embeddings, ids = image id * 1024 + patch
 *   lock                     held (flock) by the one writer
 *
 * RocksDB is the source of truth: every vector is stored there too. A batch
 * of changes is one synced WriteBatch, then applied to the FAISS indices in
 * memory; a checkpoint writes each changed FAISS file to a temp file, fsyncs
 * and renames it under a new generation, then records (file, RocksDB
 * sequence) in the manifest. On open, a collection whose recorded sequence
 * differs from RocksDB's (a crash between commit and checkpoint) is repaired
 * by comparing ids: vectors RocksDB holds but FAISS lacks are added, ids
 * FAISS holds but RocksDB does not are removed; the repair is logged.
 */
#ifndef SIGHTLINE_STORE_H
#define SIGHTLINE_STORE_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_STORE_FORMAT      1
#define SL_STORE_MAX_PATCHES 1024 /* region ids are image id * 1024 + patch */

typedef enum sl_collection {
    SL_COLL_IMAGES = 0,
    SL_COLL_TEXTS = 1,
    SL_COLL_REGIONS = 2,
    SL_COLL_COUNT = 3
} sl_collection;

const char *sl_collection_name(sl_collection c);

typedef struct sl_store sl_store;

typedef struct sl_store_opts {
    int create;                    /* make a new index when `dir` holds none */
    int dim;                       /* embedding size: required to create; checked when > 0 */
    int patches;                   /* patches per image (region index) when creating; 0 = none */
    const char *model_fingerprint; /* recorded at creation; must match when given */
    const char *index_type;        /* FAISS factory string for images at creation (NULL: "Flat") */
    int read_only;                 /* no lock, no writes; a needed repair is done in memory only */
    int wait_lock;                 /* wait for a concurrent writer instead of SL_ERR_BUSY */
} sl_store_opts;

/* Open (or create) an index directory. A writer takes the directory lock:
 * when another process holds it, fails at once with SL_ERR_BUSY (message
 * names the holder's pid) unless wait_lock. Repairs a FAISS/RocksDB mismatch
 * left by a crash (see above). */
sl_status sl_store_open(const char *dir, const sl_store_opts *opts, sl_store **out);

/* Checkpoint if anything changed, release the lock, free. Frees `s` even
 * on failure. NULL-safe. */
sl_status sl_store_close(sl_store *s);

/* Free without checkpointing (after an error; the next open repairs). */
void sl_store_abandon(sl_store *s);

int sl_store_dim(const sl_store *s);
int sl_store_patches(const sl_store *s);       /* patches per image, 0 when no regions */
const char *sl_store_model(const sl_store *s); /* fingerprint recorded at creation */
const char *sl_store_index_type(const sl_store *s);
uint64_t sl_store_count(const sl_store *s, sl_collection c); /* vectors in the collection */

/* ---- file records -------------------------------------------------------- */

typedef struct sl_file_rec {
    uint64_t id;      /* image id (> 0) when indexed; 0 for a file that failed */
    int64_t mtime_ns; /* modification time when seen */
    uint64_t size;    /* bytes when seen */
    uint8_t hash[32]; /* SHA-256 of the content (zero when unknown) */
    int32_t width;    /* pixels as displayed; 0 when unknown */
    int32_t height;
    int32_t status;  /* SL_OK, or the sl_status that kept it out */
    char error[384]; /* why it was kept out ("" when indexed) */
} sl_file_rec;

/* Look a path up (byte-exact). *found = 0 when absent. */
sl_status sl_store_get_file(sl_store *s, const char *path, size_t len, sl_file_rec *rec,
                            int *found);

/* Path of an image id (malloc'ed, NUL-terminated, *len bytes). */
sl_status sl_store_get_path(sl_store *s, uint64_t id, char **path, size_t *len);

/* Some indexed image with this content hash; *id = 0 when none. */
sl_status sl_store_find_hash(sl_store *s, const uint8_t hash[32], uint64_t *id);

/* Stored vector of an image or text id (dim floats). */
sl_status sl_store_get_vector(sl_store *s, sl_collection c, uint64_t id, float *out);

/* Stored patch vectors of an image: out [patches, dim] float32. */
sl_status sl_store_get_patches(sl_store *s, uint64_t id, float *out);

/* Text of a text id (malloc'ed). */
sl_status sl_store_get_text(sl_store *s, uint64_t id, char **text);

/* Visit every file record in path order; return non-zero from `fn` to stop. */
typedef int (*sl_store_file_fn)(void *ctx, const char *path, size_t len, const sl_file_rec *rec);
sl_status sl_store_foreach_file(sl_store *s, sl_store_file_fn fn, void *ctx);

/* State values (small strings): "sources", ... *value malloc'ed, NULL when
 * absent. */
sl_status sl_store_get_state(sl_store *s, const char *key, char **value);

/* ---- changes ------------------------------------------------------------- */

typedef struct sl_store_batch sl_store_batch;

sl_status sl_store_batch_begin(sl_store *s, sl_store_batch **out);

/* Record `path` with `rec`. With `vec` (dim floats, L2-normalised) the file
 * is indexed: a known path keeps its id, a new one gets the next id
 * (rec->id is set). `patches` [P, dim] (may be NULL) go to the region index
 * when the store has one. Without `vec` the file is recorded as failed
 * (rec->status, rec->error) and any vectors it had are removed. */
sl_status sl_store_batch_put_file(sl_store_batch *b, const char *path, size_t len, sl_file_rec *rec,
                                  const float *vec, const float *patches);

/* Forget `path` and its vectors. Absent paths are ignored. */
sl_status sl_store_batch_delete_file(sl_store_batch *b, const char *path, size_t len);

/* Add a text with its vector; *id receives its text id. */
sl_status sl_store_batch_put_text(sl_store_batch *b, const char *text, const float *vec,
                                  uint64_t *id);

/* Drop every text (before rebuilding the text side). */
sl_status sl_store_batch_clear_texts(sl_store_batch *b);

/* Set a state value. */
sl_status sl_store_batch_put_state(sl_store_batch *b, const char *key, const char *value);

/* Apply: one synced RocksDB write, then the FAISS indices in memory. Frees
 * `b` in every case; on failure nothing was applied. */
sl_status sl_store_batch_commit(sl_store_batch *b);

/* Discard. NULL-safe. */
void sl_store_batch_abort(sl_store_batch *b);

/* Write changed FAISS files (temp, fsync, rename, new generation) and the
 * manifest recording which RocksDB sequence they match. */
sl_status sl_store_checkpoint(sl_store *s);

/* Rebuild the FAISS index of a collection from the stored vectors (after
 * many deletions, or to change the images index type: `index_type` NULL
 * keeps it). IVF and PQ types are trained on the stored vectors. */
sl_status sl_store_rebuild(sl_store *s, sl_collection c, const char *index_type);

/* Rebuild every FAISS index from the stored vectors (dropping what removals
 * left behind), change the images index type when `index_type` is given,
 * compact RocksDB, checkpoint. */
sl_status sl_store_compact(sl_store *s, const char *index_type);

/* Bytes the index directory takes on disk. */
uint64_t sl_store_disk_bytes(const sl_store *s);

/* ---- search and checks ---------------------------------------------------- */

/* k nearest by inner product for nq queries [nq, dim]: scores [nq, k], ids
 * [nq, k] (-1 where fewer than k exist). One FAISS call. */
sl_status sl_store_search(sl_store *s, sl_collection c, const float *queries, size_t nq, int k,
                          float *scores, int64_t *ids);

/* Set a FAISS search parameter ("nprobe", "efSearch") on a collection. */
sl_status sl_store_set_search_param(sl_store *s, sl_collection c, const char *name, double value);

typedef struct sl_store_report {
    uint64_t files;                      /* file records */
    uint64_t indexed;                    /* files with an image id */
    uint64_t failed;                     /* files recorded with an error */
    uint64_t count[SL_COLL_COUNT];       /* vectors in RocksDB per collection */
    uint64_t faiss_count[SL_COLL_COUNT]; /* vectors in FAISS per collection */
    uint64_t missing[SL_COLL_COUNT];     /* in RocksDB, not in FAISS */
    uint64_t extra[SL_COLL_COUNT];       /* in FAISS, not in RocksDB */
    uint64_t dangling;                   /* ids without a file record or the reverse */
} sl_store_report;

/* Compare FAISS with RocksDB id by id. Returns SL_OK and fills `r`; the
 * index is consistent when every missing/extra/dangling count is 0 and
 * count == faiss_count. */
sl_status sl_store_verify(sl_store *s, sl_store_report *r);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_STORE_H */
