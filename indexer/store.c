/*
 * indexer/store.c - the index directory: FAISS (C API) indices mirrored in
 * RocksDB (C API), crash-consistent through manifest sequence numbers.
 * See include/sightline/store.h for the layout and the protocol.
 */
#include "common/json_file.h"
#include "sightline/store.h"
#include "kernels/kernels.h"

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <jansson.h>
#include <rocksdb/c.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Layout                                                                   */
/* ------------------------------------------------------------------------ */

enum { CF_STATE, CF_FILES, CF_IDS, CF_HASHES, CF_VECTORS, CF_PATCHES, CF_TEXTS, CF_TVECTORS, NCF };
static const char *const cf_names[NCF] = {"default", "files",   "ids",   "hashes",
                                          "vectors", "patches", "texts", "tvectors"};
static const char *const coll_names[SL_COLL_COUNT] = {"images", "texts", "regions"};

#define REC_VERSION  1
#define MANIFEST_MAX (1 << 20)
#define MAX_DIM      65536
#define MAX_PATH_KEY 65536

const char *sl_collection_name(sl_collection c) {
    return (unsigned)c < SL_COLL_COUNT ? coll_names[c] : "?";
}

/* One FAISS index and where it stands relative to RocksDB. */
typedef struct coll_state {
    FaissIndex *index;   /* IDMap2 over the collection's type; NULL until needed */
    char *type;          /* factory string inside the IDMap2 ("Flat", "HNSW32", ...) */
    uint64_t generation; /* generation of the file on disk (0: none yet) */
    uint64_t sequence;   /* RocksDB sequence the file matches */
    int dirty;           /* in-memory index differs from the file */
    int needs_rebuild;   /* a removal the index type cannot do is pending */
} coll_state;

struct sl_store {
    char *dir;                               /* index directory */
    int dim;                                 /* embedding size */
    int patches;                             /* patches per image (0: no regions) */
    char *model;                             /* model fingerprint */
    int read_only;                           /* opened for queries */
    int lock_fd;                             /* flock'ed lock file, -1 when read-only */
    rocksdb_t *db;                           /* metadata */
    rocksdb_options_t *opt;                  /* shared by every column family */
    rocksdb_column_family_handle_t *cf[NCF]; /* handles, in cf_names order */
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo; /* sync = 1 */
    uint64_t next_id;           /* next image id (ids start at 1) */
    uint64_t next_text_id;      /* next text id */
    coll_state coll[SL_COLL_COUNT];
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void put_u64be(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint64_t get_u64be(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static sl_status faiss_fail(const char *what, const char *dir) {
    const char *m = faiss_get_last_error();
    return sl_set_error(SL_ERR_EXTERNAL, "%s: FAISS %s: %s", dir, what, m ? m : "unknown error");
}

static sl_status rocks_fail(char *err, const char *what, const char *dir) {
    sl_status st = sl_set_error(SL_ERR_EXTERNAL, "%s: RocksDB %s: %s", dir, what, err);
    rocksdb_free(err);
    return st;
}

/* Encode a file record: version, id, mtime, size, hash, w, h, status, error. */
static size_t rec_encode(const sl_file_rec *r, uint8_t *buf /* >= 80 + 384 */) {
    uint8_t *p = buf;
    *p++ = REC_VERSION;
    put_u64be(p, r->id), p += 8;
    put_u64be(p, (uint64_t)r->mtime_ns), p += 8;
    put_u64be(p, r->size), p += 8;
    memcpy(p, r->hash, 32), p += 32;
    put_u64be(p, (uint64_t)(uint32_t)r->width << 32 | (uint32_t)r->height), p += 8;
    put_u64be(p, (uint64_t)(uint32_t)r->status), p += 8;
    size_t el = strnlen(r->error, sizeof r->error - 1);
    *p++ = (uint8_t)(el >> 8);
    *p++ = (uint8_t)el;
    memcpy(p, r->error, el), p += el;
    return (size_t)(p - buf);
}

static int rec_decode(const uint8_t *p, size_t n, sl_file_rec *r) {
    memset(r, 0, sizeof *r);
    if (n < 75 || p[0] != REC_VERSION) return -1;
    p++;
    r->id = get_u64be(p), p += 8;
    r->mtime_ns = (int64_t)get_u64be(p), p += 8;
    r->size = get_u64be(p), p += 8;
    memcpy(r->hash, p, 32), p += 32;
    uint64_t wh = get_u64be(p);
    p += 8;
    r->width = (int32_t)(uint32_t)(wh >> 32);
    r->height = (int32_t)(uint32_t)wh;
    r->status = (int32_t)(uint32_t)get_u64be(p), p += 8;
    size_t el = (size_t)p[0] << 8 | p[1];
    p += 2;
    if (75 + el != n || el >= sizeof r->error) return -1;
    memcpy(r->error, p, el);
    r->error[el] = '\0';
    return 0;
}

/* ------------------------------------------------------------------------ */
/* FAISS indices                                                            */
/* ------------------------------------------------------------------------ */

/* A new empty IDMap2 index of `type`. */
static sl_status coll_new_index(sl_store *s, const char *type, FaissIndex **out) {
    char desc[256];
    snprintf(desc, sizeof desc, "IDMap2,%s", type);
    *out = NULL;
    if (faiss_index_factory(out, s->dim, desc, METRIC_INNER_PRODUCT) != 0)
        return sl_set_error(SL_ERR_INVALID, "index type '%s' rejected by FAISS: %s", type,
                            faiss_get_last_error() ? faiss_get_last_error() : "?");
    return SL_OK;
}

/* The collection's index, created empty when absent. */
static sl_status coll_index(sl_store *s, sl_collection c, FaissIndex **out) {
    if (!s->coll[c].index) {
        sl_status st = coll_new_index(s, s->coll[c].type, &s->coll[c].index);
        if (st) return st;
    }
    *out = s->coll[c].index;
    return SL_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ids held by the FAISS index of c (sorted copy, malloc'ed). */
static sl_status coll_faiss_ids(sl_store *s, sl_collection c, int64_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!s->coll[c].index) return SL_OK;
    FaissIndexIDMap2 *m = faiss_IndexIDMap2_cast(s->coll[c].index);
    if (!m)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s index is not an id map", s->dir, coll_names[c]);
    idx_t *map;
    size_t cnt;
    faiss_IndexIDMap2_id_map(m, &map, &cnt);
    *ids = malloc((cnt ? cnt : 1) * sizeof **ids);
    if (!*ids) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    if (cnt) memcpy(*ids, map, cnt * sizeof **ids);
    qsort(*ids, cnt, sizeof **ids, cmp_i64);
    *n = cnt;
    return SL_OK;
}

/* Column family holding the vectors of collection c. */
static int coll_cf(sl_collection c) {
    return c == SL_COLL_IMAGES ? CF_VECTORS : c == SL_COLL_TEXTS ? CF_TVECTORS : CF_PATCHES;
}

/* Vectors per stored value: 1, or the patch count for regions. */
static int coll_per_key(const sl_store *s, sl_collection c) {
    return c == SL_COLL_REGIONS ? s->patches : 1;
}

/* Decode a stored value of collection c into float32 rows. */
static sl_status coll_decode(const sl_store *s, sl_collection c, const char *v, size_t vl,
                             float *out, uint64_t key) {
    size_t rows = (size_t)coll_per_key(s, c), d = (size_t)s->dim;
    if (c == SL_COLL_REGIONS) {
        if (vl != rows * d * 2)
            return sl_set_error(SL_ERR_FORMAT, "%s: patches of image %llu: %zu bytes, expected %zu",
                                s->dir, (unsigned long long)key, vl, rows * d * 2);
        sl_f16_to_f32((const uint16_t *)(const void *)v, out, rows * d);
        return SL_OK;
    }
    if (vl != d * 4)
        return sl_set_error(SL_ERR_FORMAT, "%s: %s vector %llu: %zu bytes, expected %zu", s->dir,
                            coll_names[c], (unsigned long long)key, vl, d * 4);
    memcpy(out, v, vl);
    return SL_OK;
}

/* Add stored vectors of keys [keys, keys+n) to the index of c. */
static sl_status coll_add_from_db(sl_store *s, sl_collection c, const uint64_t *keys, size_t n) {
    FaissIndex *index;
    sl_status st = coll_index(s, c, &index);
    if (st || n == 0) return st;
    size_t per = (size_t)coll_per_key(s, c), d = (size_t)s->dim;
    const size_t chunk = 1024;
    float *x = malloc(chunk * per * d * sizeof(float));
    int64_t *ids = malloc(chunk * per * sizeof(int64_t));
    if (!x || !ids) {
        free(x);
        free(ids);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    for (size_t i0 = 0; i0 < n && st == SL_OK; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        for (size_t i = 0; i < m && st == SL_OK; i++) {
            uint8_t k[8];
            put_u64be(k, keys[i0 + i]);
            size_t vl;
            char *err = NULL;
            char *v = rocksdb_get_cf(s->db, s->ro, s->cf[coll_cf(c)], (char *)k, 8, &vl, &err);
            if (err) {
                st = rocks_fail(err, "read", s->dir);
                break;
            }
            if (!v) {
                st = sl_set_error(SL_ERR_FORMAT, "%s: %s vector %llu missing", s->dir,
                                  coll_names[c], (unsigned long long)keys[i0 + i]);
                break;
            }
            st = coll_decode(s, c, v, vl, x + i * per * d, keys[i0 + i]);
            rocksdb_free(v);
            for (size_t p = 0; p < per; p++)
                ids[i * per + p] =
                    (int64_t)(c == SL_COLL_REGIONS ? keys[i0 + i] * SL_STORE_MAX_PATCHES + p
                                                   : keys[i0 + i]);
        }
        if (st == SL_OK && !faiss_Index_is_trained(index)) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: the %s index (%s) is not trained; rebuild it with enough "
                              "vectors or choose a type that needs no training",
                              s->dir, coll_names[c], s->coll[c].type);
        }
        if (st == SL_OK && faiss_Index_add_with_ids(index, (idx_t)(m * per), x, ids) != 0)
            st = faiss_fail("add", s->dir);
    }
    free(x);
    free(ids);
    if (st == SL_OK) s->coll[c].dirty = 1;
    return st;
}

/* Remove FAISS ids; an index type that cannot remove is marked for rebuild. */
static sl_status coll_remove(sl_store *s, sl_collection c, const int64_t *ids, size_t n) {
    if (n == 0 || !s->coll[c].index || s->coll[c].needs_rebuild) {
        if (n) s->coll[c].dirty = 1;
        return SL_OK;
    }
    FaissIDSelectorBatch *sel = NULL;
    if (faiss_IDSelectorBatch_new(&sel, n, ids) != 0) return faiss_fail("selector", s->dir);
    size_t removed = 0;
    int rc = faiss_Index_remove_ids(s->coll[c].index, (FaissIDSelector *)sel, &removed);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    if (rc != 0) {
        SL_DEBUG("%s: %s index (%s) cannot remove ids (%s); it will be rebuilt", s->dir,
                 coll_names[c], s->coll[c].type, faiss_get_last_error());
        s->coll[c].needs_rebuild = 1;
    }
    s->coll[c].dirty = 1;
    return SL_OK;
}

/* Stored keys of collection c, sorted (malloc'ed). */
static sl_status coll_db_keys(sl_store *s, sl_collection c, uint64_t **keys, size_t *n) {
    size_t cap = 1024, cnt = 0;
    uint64_t *k = malloc(cap * sizeof *k);
    if (!k) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[coll_cf(c)]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl;
        const char *kp = rocksdb_iter_key(it, &kl);
        if (kl != 8) continue;
        if (cnt == cap) {
            uint64_t *nk = realloc(k, cap * 2 * sizeof *nk);
            if (!nk) {
                rocksdb_iter_destroy(it);
                free(k);
                return sl_set_error(SL_ERR_NOMEM, "out of memory");
            }
            k = nk;
            cap *= 2;
        }
        k[cnt++] = get_u64be((const uint8_t *)kp);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) {
        free(k);
        return rocks_fail(err, "iterate", s->dir);
    }
    *keys = k;
    *n = cnt;
    return SL_OK;
}

/* Vectors to train an index of `type` on: 64 per list of an IVF<k> type,
 * within [65536, 1048576]. */
static size_t train_vectors(const char *type) {
    size_t want = 65536;
    const char *ivf = type ? strstr(type, "IVF") : NULL;
    if (ivf) {
        unsigned long long k = strtoull(ivf + 3, NULL, 10);
        if (k > 1024 && k <= (1u << 14))
            want = (size_t)k * 64;
        else if (k > (1u << 14))
            want = (size_t)1 << 20;
    }
    return want;
}

/* Rebuild c from RocksDB, training the index type on the stored vectors. */
static sl_status coll_rebuild(sl_store *s, sl_collection c, const char *type) {
    uint64_t *keys;
    size_t n;
    sl_status st = coll_db_keys(s, c, &keys, &n);
    if (st) return st;
    FaissIndex *index = NULL;
    if ((st = coll_new_index(s, type ? type : s->coll[c].type, &index))) {
        free(keys);
        return st;
    }
    if (!faiss_Index_is_trained(index) && n > 0) {
        /* train on stored vectors evenly spread: at least 65,536 and 64 per
         * inverted list of an IVF type (FAISS samples 39..256 per centroid),
         * at most 1,048,576 */
        size_t per = (size_t)coll_per_key(s, c), d = (size_t)s->dim;
        size_t target = train_vectors(type ? type : s->coll[c].type);
        size_t cap = ((size_t)1 << 30) / (d * sizeof(float)); /* 1 GiB of training data */
        if (target > cap) target = cap;
        size_t want = (target + per - 1) / per;
        if (want > n) want = n;
        float *x = malloc(want * per * d * sizeof(float));
        if (!x) st = sl_set_error(SL_ERR_NOMEM, "out of memory for training vectors");
        for (size_t i = 0; i < want && st == SL_OK; i++) {
            uint8_t k[8];
            put_u64be(k, keys[i * n / want]);
            size_t vl;
            char *err = NULL;
            char *v = rocksdb_get_cf(s->db, s->ro, s->cf[coll_cf(c)], (char *)k, 8, &vl, &err);
            if (err)
                st = rocks_fail(err, "read", s->dir);
            else if (!v)
                st = sl_set_error(SL_ERR_FORMAT, "%s: vector vanished", s->dir);
            else
                st = coll_decode(s, c, v, vl, x + i * per * d, keys[i * n / want]);
            rocksdb_free(v);
        }
        SL_INFO("training the %s index (%s) on %zu vectors", coll_names[c],
                type ? type : s->coll[c].type, want * per);
        if (st == SL_OK && faiss_Index_train(index, (idx_t)(want * per), x) != 0)
            st = sl_set_error(SL_ERR_INVALID, "%s: training the %s index (%s) on %zu vectors: %s",
                              s->dir, coll_names[c], type ? type : s->coll[c].type, want * per,
                              faiss_get_last_error() ? faiss_get_last_error() : "?");
        free(x);
    }
    if (st == SL_OK) {
        FaissIndex *old = s->coll[c].index;
        s->coll[c].index = index;
        s->coll[c].needs_rebuild = 0;
        st = coll_add_from_db(s, c, keys, n);
        if (st == SL_OK) {
            if (old) faiss_Index_free(old);
            if (type) {
                char *t = strdup(type);
                if (t) {
                    free(s->coll[c].type);
                    s->coll[c].type = t;
                }
            }
            s->coll[c].dirty = 1;
        } else {
            s->coll[c].index = old;
            faiss_Index_free(index);
        }
    } else {
        faiss_Index_free(index);
    }
    free(keys);
    return st;
}

/* Make FAISS hold exactly the ids RocksDB holds for c. */
static sl_status coll_reconcile(sl_store *s, sl_collection c, uint64_t *added, uint64_t *removed) {
    *added = *removed = 0;
    uint64_t *keys;
    size_t nk;
    sl_status st = coll_db_keys(s, c, &keys, &nk);
    if (st) return st;
    int64_t *fids;
    size_t nf;
    if ((st = coll_faiss_ids(s, c, &fids, &nf))) {
        free(keys);
        return st;
    }
    /* expected FAISS ids from the keys */
    size_t per = (size_t)coll_per_key(s, c);
    uint64_t *missing = malloc((nk ? nk : 1) * sizeof *missing);
    int64_t *extra = malloc((nf ? nf : 1) * sizeof *extra);
    size_t nmiss = 0, nextra = 0, j = 0;
    if (!missing || !extra) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nk && st == SL_OK; i++) {
        int64_t first = (int64_t)(c == SL_COLL_REGIONS ? keys[i] * SL_STORE_MAX_PATCHES : keys[i]);
        while (j < nf && fids[j] < first) extra[nextra++] = fids[j++];
        size_t have = 0;
        while (j < nf && fids[j] < first + (int64_t)per) {
            have++;
            j++;
        }
        if (have != per) {
            /* partly present: drop what is there and add the whole key again */
            for (size_t q = j - have; q < j; q++) extra[nextra++] = fids[q];
            missing[nmiss++] = keys[i];
        }
    }
    while (st == SL_OK && j < nf) extra[nextra++] = fids[j++];
    if (st == SL_OK && nextra) st = coll_remove(s, c, extra, nextra);
    if (st == SL_OK && s->coll[c].needs_rebuild) {
        st = coll_rebuild(s, c, NULL);
    } else if (st == SL_OK && nmiss) {
        st = coll_add_from_db(s, c, missing, nmiss);
    }
    *added = nmiss * per;
    *removed = nextra;
    free(keys);
    free(fids);
    free(missing);
    free(extra);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Manifest                                                                 */
/* ------------------------------------------------------------------------ */

static char *coll_file_name(sl_collection c, uint64_t gen) {
    char *n = malloc(64);
    if (n) snprintf(n, 64, "%s.%06llu.faiss", coll_names[c], (unsigned long long)gen);
    return n;
}

static sl_status manifest_write(sl_store *s) {
    json_t *m = json_object();
    json_object_set_new(m, "format", json_integer(SL_STORE_FORMAT));
    json_object_set_new(m, "dim", json_integer(s->dim));
    json_object_set_new(m, "patches", json_integer(s->patches));
    json_object_set_new(m, "model", json_string(s->model));
    json_object_set_new(m, "index_type", json_string(s->coll[SL_COLL_IMAGES].type));
    json_t *cs = json_object();
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        json_t *o = json_object();
        char *fn = coll_file_name((sl_collection)c, s->coll[c].generation);
        json_object_set_new(o, "file", s->coll[c].generation ? json_string(fn) : json_null());
        free(fn);
        json_object_set_new(o, "generation", json_integer((json_int_t)s->coll[c].generation));
        json_object_set_new(o, "sequence", json_integer((json_int_t)s->coll[c].sequence));
        json_object_set_new(o, "type", json_string(s->coll[c].type));
        json_object_set_new(
            o, "count",
            json_integer(s->coll[c].index ? (json_int_t)faiss_Index_ntotal(s->coll[c].index) : 0));
        json_object_set_new(cs, coll_names[c], o);
    }
    json_object_set_new(m, "collections", cs);
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    if (!text) return sl_set_error(SL_ERR_NOMEM, "manifest: out of memory");
    char *path = sl_path_join(s->dir, "manifest.json");
    sl_status st = path ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
    if (st == SL_OK) {
        size_t len = strlen(text);
        text[len] = '\n'; /* replace the NUL for the file; length + 1 written */
        st = sl_write_file_atomic(path, text, len + 1);
    }
    free(path);
    free(text);
    return st;
}

static sl_status manifest_read(sl_store *s, int *exists) {
    char *path = sl_path_join(s->dir, "manifest.json");
    if (!path) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    json_t *m = NULL;
    sl_status st = sl_json_load_file(path, MANIFEST_MAX, &m);
    *exists = st != SL_ERR_NOT_FOUND;
    if (st) {
        free(path);
        return *exists ? st : SL_OK;
    }
    if (!json_is_object(m)) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    json_int_t fmt = json_integer_value(json_object_get(m, "format"));
    if (fmt != SL_STORE_FORMAT) {
        st = sl_set_error(SL_ERR_UNSUPPORTED, "%s: index format %lld, this sightline reads %d",
                          path, (long long)fmt, SL_STORE_FORMAT);
        goto done;
    }
    json_int_t dim = json_integer_value(json_object_get(m, "dim"));
    json_int_t patches = json_integer_value(json_object_get(m, "patches"));
    const char *model = json_string_value(json_object_get(m, "model"));
    if (dim <= 0 || dim > MAX_DIM || patches < 0 || patches > SL_STORE_MAX_PATCHES || !model) {
        st = sl_set_error(SL_ERR_FORMAT, "%s: bad dim, patches or model", path);
        goto done;
    }
    s->dim = (int)dim;
    s->patches = (int)patches;
    if (!(s->model = strdup(model))) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    json_t *cs = json_object_get(m, "collections");
    for (int c = 0; c < SL_COLL_COUNT && st == SL_OK; c++) {
        json_t *o = json_object_get(cs, coll_names[c]);
        const char *type = json_string_value(json_object_get(o, "type"));
        json_int_t gen = json_integer_value(json_object_get(o, "generation"));
        json_int_t seq = json_integer_value(json_object_get(o, "sequence"));
        if (!o || !type || gen < 0 || seq < 0 || strlen(type) > 200) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: collection '%s' missing or malformed", path,
                              coll_names[c]);
            break;
        }
        free(s->coll[c].type);
        if (!(s->coll[c].type = strdup(type))) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        s->coll[c].generation = (uint64_t)gen;
        s->coll[c].sequence = (uint64_t)seq;
    }
done:
    json_decref(m);
    free(path);
    return st;
}

/* Remove FAISS files of other generations than the manifest's. */
static void remove_stale_files(sl_store *s) {
    DIR *d = opendir(s->dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        for (int c = 0; c < SL_COLL_COUNT; c++) {
            size_t nl = strlen(coll_names[c]);
            if (strncmp(de->d_name, coll_names[c], nl) != 0 || de->d_name[nl] != '.') continue;
            const char *ext = strstr(de->d_name, ".faiss");
            if (!ext) continue;
            char *keep = coll_file_name((sl_collection)c, s->coll[c].generation);
            if (keep && strcmp(keep, de->d_name) != 0) {
                char *p = sl_path_join(s->dir, de->d_name);
                if (p) {
                    unlink(p);
                    free(p);
                }
            }
            free(keep);
        }
    }
    closedir(d);
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */
/* ------------------------------------------------------------------------ */

static sl_status take_lock(sl_store *s, int wait) {
    char *path = sl_path_join(s->dir, "lock");
    if (!path) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        sl_status st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
        free(path);
        return st;
    }
    if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
        char pid[32] = "?";
        ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
        pid[r > 0 ? r : 1] = '\0';
        char *nl = strchr(pid, '\n');
        if (nl) *nl = '\0';
        sl_status st = sl_set_error(SL_ERR_BUSY,
                                    "%s is in use by another sightline process (pid %s); "
                                    "try again later or pass --wait",
                                    s->dir, pid);
        close(fd);
        free(path);
        return st;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* the pid is informational; the lock itself is held */
    }
    s->lock_fd = fd;
    free(path);
    return SL_OK;
}

static sl_status open_db(sl_store *s) {
    char *path = sl_path_join(s->dir, "meta");
    if (!path) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    s->opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->opt, !s->read_only);
    rocksdb_options_set_create_missing_column_families(s->opt, !s->read_only);
    rocksdb_options_set_max_open_files(s->opt, 256);
    rocksdb_options_set_keep_log_file_num(s->opt, 2);
    const rocksdb_options_t *cfo[NCF];
    for (int i = 0; i < NCF; i++) cfo[i] = s->opt;
    char *err = NULL;
    if (s->read_only)
        s->db = rocksdb_open_for_read_only_column_families(s->opt, path, NCF, cf_names, cfo, s->cf,
                                                           0, &err);
    else
        s->db = rocksdb_open_column_families(s->opt, path, NCF, cf_names, cfo, s->cf, &err);
    free(path);
    if (err) return rocks_fail(err, "open", s->dir);
    s->ro = rocksdb_readoptions_create();
    s->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo, 1);
    return SL_OK;
}

static sl_status read_counter(sl_store *s, const char *key, uint64_t *out) {
    char *v = NULL;
    sl_status st = sl_store_get_state(s, key, &v);
    if (st) return st;
    *out = v ? strtoull(v, NULL, 10) : 0;
    free(v);
    return SL_OK;
}

/* Load the FAISS file of c named by the manifest (or leave it empty). */
static sl_status load_coll(sl_store *s, sl_collection c) {
    if (s->coll[c].generation == 0) return SL_OK;
    char *fn = coll_file_name(c, s->coll[c].generation);
    char *path = fn ? sl_path_join(s->dir, fn) : NULL;
    free(fn);
    if (!path) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    FaissIndex *index = NULL;
    sl_status st = SL_OK;
    if (faiss_read_index_fname(path, 0, &index) != 0) {
        SL_WARN("%s: unreadable (%s); rebuilding the %s index from the metadata", path,
                faiss_get_last_error() ? faiss_get_last_error() : "?", coll_names[c]);
        s->coll[c].sequence = (uint64_t)-1; /* force a repair */
        s->coll[c].needs_rebuild = 1;
    } else if (faiss_Index_d(index) != s->dim || !faiss_IndexIDMap2_cast(index)) {
        faiss_Index_free(index);
        st = sl_set_error(SL_ERR_FORMAT, "%s: dimension %d or layout does not match the manifest",
                          path, faiss_Index_d(index));
    } else {
        s->coll[c].index = index;
    }
    free(path);
    return st;
}

sl_status sl_store_open(const char *dir, const sl_store_opts *opts, sl_store **out) {
    static const sl_store_opts defaults = {0};
    if (!opts) opts = &defaults;
    *out = NULL;
    sl_store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    s->lock_fd = -1;
    s->read_only = opts->read_only;
    sl_status st = SL_OK;
    struct stat sb;
    int exists_dir = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!exists_dir) {
        if (!opts->create || opts->read_only) {
            st = sl_set_error(SL_ERR_NOT_FOUND, "%s: no index here", dir);
            goto fail;
        }
        if ((st = sl_mkdir_p(dir))) goto fail;
    }
    if (!s->read_only && (st = take_lock(s, opts->wait_lock))) goto fail;
    int have_manifest = 0;
    if ((st = manifest_read(s, &have_manifest))) goto fail;
    if (!have_manifest) {
        if (!opts->create || opts->read_only) {
            st = sl_set_error(SL_ERR_NOT_FOUND, "%s: no index here (manifest.json missing)", dir);
            goto fail;
        }
        if (opts->dim <= 0 || opts->dim > MAX_DIM || opts->patches < 0 ||
            opts->patches > SL_STORE_MAX_PATCHES) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: creating an index needs 0 < dim <= %d and "
                              "patches <= %d",
                              dir, MAX_DIM, SL_STORE_MAX_PATCHES);
            goto fail;
        }
        s->dim = opts->dim;
        s->patches = opts->patches;
        s->model = strdup(opts->model_fingerprint ? opts->model_fingerprint : "");
        const char *types[SL_COLL_COUNT] = {opts->index_type ? opts->index_type : "Flat", "Flat",
                                            "Flat"};
        for (int c = 0; c < SL_COLL_COUNT; c++) s->coll[c].type = strdup(types[c]);
        if (!s->model || !s->coll[0].type || !s->coll[1].type || !s->coll[2].type) {
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            goto fail;
        }
        FaissIndex *probe; /* reject a bad factory string before anything is written */
        if ((st = coll_new_index(s, s->coll[SL_COLL_IMAGES].type, &probe))) goto fail;
        faiss_Index_free(probe);
    } else {
        if (opts->dim > 0 && opts->dim != s->dim) {
            st = sl_set_error(SL_ERR_INVALID, "%s: index holds %d-d embeddings, the model gives %d",
                              dir, s->dim, opts->dim);
            goto fail;
        }
        if (opts->model_fingerprint && strcmp(opts->model_fingerprint, s->model) != 0) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: built with model %s, not %s; build a new index for another "
                              "model",
                              dir, s->model, opts->model_fingerprint);
            goto fail;
        }
    }
    if ((st = open_db(s))) goto fail;
    if (!have_manifest) {
        /* the index state in RocksDB too: format, model fingerprint, dimensions */
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        char num[32];
        snprintf(num, sizeof num, "%d", SL_STORE_FORMAT);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_STATE], "format_version", 14, num, strlen(num));
        rocksdb_writebatch_put_cf(wb, s->cf[CF_STATE], "model", 5, s->model, strlen(s->model));
        snprintf(num, sizeof num, "%d", s->dim);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_STATE], "dim", 3, num, strlen(num));
        char *err = NULL;
        rocksdb_write(s->db, s->wo, wb, &err);
        rocksdb_writebatch_destroy(wb);
        if (err) {
            st = rocks_fail(err, "write", dir);
            goto fail;
        }
    }
    if ((st = read_counter(s, "next_id", &s->next_id))) goto fail;
    if ((st = read_counter(s, "next_text_id", &s->next_text_id))) goto fail;
    if (s->next_id == 0) s->next_id = 1;
    if (s->next_text_id == 0) s->next_text_id = 1;
    for (int c = 0; c < SL_COLL_COUNT; c++)
        if ((st = load_coll(s, (sl_collection)c))) goto fail;

    /* repair what a crash left between RocksDB and FAISS */
    uint64_t seq = rocksdb_get_latest_sequence_number(s->db);
    int repaired = 0;
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        if (s->coll[c].sequence == seq && !s->coll[c].needs_rebuild) continue;
        if (c == SL_COLL_REGIONS && s->patches == 0) continue;
        uint64_t added = 0, removed = 0;
        if (s->coll[c].needs_rebuild)
            st = coll_rebuild(s, (sl_collection)c, NULL);
        else
            st = coll_reconcile(s, (sl_collection)c, &added, &removed);
        if (st) goto fail;
        if ((added || removed) && s->read_only)
            SL_INFO("%s: the %s index file is %llu additions and %llu removals behind the "
                    "metadata (a writer is at work or was interrupted); caught up in memory",
                    dir, coll_names[c], (unsigned long long)added, (unsigned long long)removed);
        else if (added || removed)
            SL_WARN("%s: the %s index was behind the metadata (interrupted run?): repaired, "
                    "%llu vectors added, %llu removed",
                    dir, coll_names[c], (unsigned long long)added, (unsigned long long)removed);
        repaired = 1;
    }
    if (!s->read_only) {
        if (repaired || !have_manifest) {
            for (int c = 0; c < SL_COLL_COUNT; c++) s->coll[c].dirty = 1;
            if ((st = sl_store_checkpoint(s))) goto fail;
        }
        remove_stale_files(s);
    }
    *out = s;
    return SL_OK;
fail:
    sl_store_abandon(s);
    return st;
}

void sl_store_abandon(sl_store *s) {
    if (!s) return;
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        if (s->coll[c].index) faiss_Index_free(s->coll[c].index);
        free(s->coll[c].type);
    }
    if (s->db) {
        for (int i = 0; i < NCF; i++)
            if (s->cf[i]) rocksdb_column_family_handle_destroy(s->cf[i]);
        rocksdb_close(s->db);
    }
    if (s->opt) rocksdb_options_destroy(s->opt);
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->wo) rocksdb_writeoptions_destroy(s->wo);
    if (s->lock_fd >= 0) close(s->lock_fd); /* releases the flock */
    free(s->model);
    free(s->dir);
    free(s);
}

sl_status sl_store_close(sl_store *s) {
    if (!s) return SL_OK;
    sl_status st = SL_OK;
    if (!s->read_only) {
        int dirty = 0;
        for (int c = 0; c < SL_COLL_COUNT; c++) dirty |= s->coll[c].dirty;
        if (dirty) st = sl_store_checkpoint(s);
    }
    sl_store_abandon(s);
    return st;
}

int sl_store_dim(const sl_store *s) {
    return s->dim;
}
int sl_store_patches(const sl_store *s) {
    return s->patches;
}
const char *sl_store_model(const sl_store *s) {
    return s->model;
}
const char *sl_store_index_type(const sl_store *s) {
    return s->coll[SL_COLL_IMAGES].type;
}
uint64_t sl_store_count(const sl_store *s, sl_collection c) {
    return s->coll[c].index ? (uint64_t)faiss_Index_ntotal(s->coll[c].index) : 0;
}

/* ------------------------------------------------------------------------ */
/* Checkpoint                                                               */
/* ------------------------------------------------------------------------ */

static sl_status fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        sl_status st = sl_set_error(SL_ERR_IO, "%s: fsync: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    close(fd);
    return SL_OK;
}

sl_status sl_store_checkpoint(sl_store *s) {
    if (s->read_only) return sl_set_error(SL_ERR_INVALID, "%s: opened read-only", s->dir);
    sl_status st = SL_OK;
    uint64_t seq = rocksdb_get_latest_sequence_number(s->db);
    for (int c = 0; c < SL_COLL_COUNT && st == SL_OK; c++) {
        coll_state *cs = &s->coll[c];
        if (cs->needs_rebuild && (st = coll_rebuild(s, (sl_collection)c, NULL))) break;
        if (!cs->dirty && cs->generation) {
            cs->sequence = seq; /* unchanged: still matches the newer sequence */
            continue;
        }
        FaissIndex *index;
        if ((st = coll_index(s, (sl_collection)c, &index))) break;
        char *fn = coll_file_name((sl_collection)c, cs->generation + 1);
        char *final = fn ? sl_path_join(s->dir, fn) : NULL;
        size_t tl = final ? strlen(final) + 8 : 0;
        char *tmp = final ? malloc(tl) : NULL;
        free(fn);
        if (!tmp) {
            free(final);
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(tmp, tl, "%s.tmp", final);
        if (faiss_write_index_fname(index, tmp) != 0)
            st = sl_set_error(SL_ERR_IO, "%s: FAISS write: %s", tmp,
                              faiss_get_last_error() ? faiss_get_last_error() : "?");
        if (st == SL_OK) st = fsync_path(tmp);
        if (st == SL_OK && rename(tmp, final) != 0)
            st = sl_set_error(SL_ERR_IO, "%s: rename: %s", tmp, strerror(errno));
        if (st == SL_OK) st = sl_fsync_parent_dir(final);
        if (st) unlink(tmp);
        free(tmp);
        free(final);
        if (st == SL_OK) {
            cs->generation++;
            cs->sequence = seq;
            cs->dirty = 0;
        }
    }
    if (st == SL_OK) st = manifest_write(s);
    if (st == SL_OK) remove_stale_files(s);
    return st;
}

sl_status sl_store_rebuild(sl_store *s, sl_collection c, const char *index_type) {
    if (s->read_only) return sl_set_error(SL_ERR_INVALID, "%s: opened read-only", s->dir);
    sl_status st = coll_rebuild(s, c, index_type);
    if (st == SL_OK) st = sl_store_checkpoint(s);
    return st;
}

sl_status sl_store_compact(sl_store *s, const char *index_type) {
    if (s->read_only) return sl_set_error(SL_ERR_INVALID, "%s: opened read-only", s->dir);
    sl_status st = SL_OK;
    for (int c = 0; c < SL_COLL_COUNT && st == SL_OK; c++) {
        if (c == SL_COLL_REGIONS && s->patches == 0) continue;
        st = coll_rebuild(s, (sl_collection)c, c == SL_COLL_IMAGES ? index_type : NULL);
    }
    for (int i = 0; i < NCF && st == SL_OK; i++)
        rocksdb_compact_range_cf(s->db, s->cf[i], NULL, 0, NULL, 0);
    if (st == SL_OK) st = sl_store_checkpoint(s);
    return st;
}

static uint64_t dir_bytes(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = sl_path_join(dir, de->d_name);
        struct stat sb;
        if (p && lstat(p, &sb) == 0) {
            if (S_ISDIR(sb.st_mode) && depth < 4)
                total += dir_bytes(p, depth + 1);
            else if (S_ISREG(sb.st_mode))
                total += (uint64_t)sb.st_size;
        }
        free(p);
    }
    closedir(d);
    return total;
}

uint64_t sl_store_disk_bytes(const sl_store *s) {
    return dir_bytes(s->dir, 0);
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */
/* ------------------------------------------------------------------------ */

static sl_status db_get(sl_store *s, int cf, const void *k, size_t kl, char **v, size_t *vl) {
    char *err = NULL;
    *v = rocksdb_get_cf(s->db, s->ro, s->cf[cf], k, kl, vl, &err);
    if (err) return rocks_fail(err, "read", s->dir);
    return SL_OK;
}

sl_status sl_store_get_file(sl_store *s, const char *path, size_t len, sl_file_rec *rec,
                            int *found) {
    char *v;
    size_t vl;
    *found = 0;
    sl_status st = db_get(s, CF_FILES, path, len, &v, &vl);
    if (st || !v) return st;
    if (rec_decode((const uint8_t *)v, vl, rec) != 0)
        st = sl_set_error(SL_ERR_FORMAT, "%s: corrupt file record for %.*s", s->dir,
                          (int)(len > 200 ? 200 : len), path);
    else
        *found = 1;
    rocksdb_free(v);
    return st;
}

/* A value of `cf` at id key as a NUL-terminated copy; `what` names it in
 * the not-found message. */
static sl_status db_get_string(sl_store *s, int cf, uint64_t id, const char *what, char **out,
                               size_t *len) {
    uint8_t k[8];
    put_u64be(k, id);
    char *v;
    size_t vl;
    *out = NULL;
    sl_status st = db_get(s, cf, k, 8, &v, &vl);
    if (st) return st;
    if (!v)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: no %s with id %llu", s->dir, what,
                            (unsigned long long)id);
    *out = malloc(vl + 1);
    if (*out) {
        memcpy(*out, v, vl);
        (*out)[vl] = '\0';
        if (len) *len = vl;
    }
    rocksdb_free(v);
    return *out ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
}

sl_status sl_store_get_path(sl_store *s, uint64_t id, char **path, size_t *len) {
    return db_get_string(s, CF_IDS, id, "image", path, len);
}

sl_status sl_store_find_hash(sl_store *s, const uint8_t hash[32], uint64_t *id) {
    *id = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_HASHES]);
    rocksdb_iter_seek(it, (const char *)hash, 32);
    if (rocksdb_iter_valid(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl == 40 && memcmp(k, hash, 32) == 0) *id = get_u64be((const uint8_t *)k + 32);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? rocks_fail(err, "read", s->dir) : SL_OK;
}

sl_status sl_store_get_vector(sl_store *s, sl_collection c, uint64_t id, float *out) {
    if (c == SL_COLL_REGIONS) return sl_store_get_patches(s, id, out);
    uint8_t k[8];
    put_u64be(k, id);
    char *v;
    size_t vl;
    sl_status st = db_get(s, coll_cf(c), k, 8, &v, &vl);
    if (st) return st;
    if (!v)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: no %s vector %llu", s->dir, coll_names[c],
                            (unsigned long long)id);
    st = coll_decode(s, c, v, vl, out, id);
    rocksdb_free(v);
    return st;
}

sl_status sl_store_get_patches(sl_store *s, uint64_t id, float *out) {
    if (s->patches == 0)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: built without --region", s->dir);
    uint8_t k[8];
    put_u64be(k, id);
    char *v;
    size_t vl;
    sl_status st = db_get(s, CF_PATCHES, k, 8, &v, &vl);
    if (st) return st;
    if (!v)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: no patches for image %llu", s->dir,
                            (unsigned long long)id);
    st = coll_decode(s, SL_COLL_REGIONS, v, vl, out, id);
    rocksdb_free(v);
    return st;
}

sl_status sl_store_get_text(sl_store *s, uint64_t id, char **text) {
    return db_get_string(s, CF_TEXTS, id, "text", text, NULL);
}

sl_status sl_store_foreach_file(sl_store *s, sl_store_file_fn fn, void *ctx) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_FILES]);
    sl_status st = SL_OK;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        sl_file_rec rec;
        if (rec_decode((const uint8_t *)v, vl, &rec) != 0) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: corrupt file record for %.*s", s->dir,
                              (int)(kl > 200 ? 200 : kl), k);
            break;
        }
        if (fn(ctx, k, kl, &rec) != 0) break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && st == SL_OK) st = rocks_fail(err, "iterate", s->dir);
    return st;
}

sl_status sl_store_get_state(sl_store *s, const char *key, char **value) {
    char *v;
    size_t vl;
    *value = NULL;
    sl_status st = db_get(s, CF_STATE, key, strlen(key), &v, &vl);
    if (st || !v) return st;
    *value = malloc(vl + 1);
    if (*value) {
        memcpy(*value, v, vl);
        (*value)[vl] = '\0';
    }
    rocksdb_free(v);
    return *value ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                  */
/* ------------------------------------------------------------------------ */

/* FAISS work that follows a committed batch, per collection. */
typedef struct pending {
    int64_t *remove; /* ids to remove */
    size_t nremove, cap_remove;
    int64_t *add_ids; /* ids to add */
    float *add_vecs;  /* their vectors [nadd, dim] */
    size_t nadd, cap_add;
    int reset; /* drop everything first (clear texts) */
} pending;

struct sl_store_batch {
    sl_store *s;
    rocksdb_writebatch_t *wb;
    uint64_t next_id, next_text_id; /* counters after this batch */
    pending p[SL_COLL_COUNT];
};

static int pend_remove(pending *p, int64_t id) {
    if (p->nremove == p->cap_remove) {
        size_t nc = p->cap_remove ? p->cap_remove * 2 : 64;
        int64_t *n = realloc(p->remove, nc * sizeof *n);
        if (!n) return -1;
        p->remove = n;
        p->cap_remove = nc;
    }
    p->remove[p->nremove++] = id;
    return 0;
}

static int pend_add(pending *p, int64_t id, const float *v, size_t dim) {
    if (p->nadd == p->cap_add) {
        size_t nc = p->cap_add ? p->cap_add * 2 : 64;
        int64_t *ni = realloc(p->add_ids, nc * sizeof *ni);
        if (!ni) return -1;
        p->add_ids = ni;
        float *nv = realloc(p->add_vecs, nc * dim * sizeof *nv);
        if (!nv) return -1;
        p->add_vecs = nv;
        p->cap_add = nc;
    }
    p->add_ids[p->nadd] = id;
    memcpy(p->add_vecs + p->nadd * dim, v, dim * sizeof *v);
    p->nadd++;
    return 0;
}

sl_status sl_store_batch_begin(sl_store *s, sl_store_batch **out) {
    *out = NULL;
    if (s->read_only) return sl_set_error(SL_ERR_INVALID, "%s: opened read-only", s->dir);
    sl_store_batch *b = calloc(1, sizeof *b);
    if (!b) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    b->s = s;
    b->wb = rocksdb_writebatch_create();
    b->next_id = s->next_id;
    b->next_text_id = s->next_text_id;
    *out = b;
    return SL_OK;
}

void sl_store_batch_abort(sl_store_batch *b) {
    if (!b) return;
    rocksdb_writebatch_destroy(b->wb);
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        free(b->p[c].remove);
        free(b->p[c].add_ids);
        free(b->p[c].add_vecs);
    }
    free(b);
}

/* Queue the removal of an indexed image's vectors, hash entry and id. */
static sl_status unindex(sl_store_batch *b, const sl_file_rec *old, int drop_id) {
    sl_store *s = b->s;
    uint8_t k[8];
    put_u64be(k, old->id);
    if (drop_id) rocksdb_writebatch_delete_cf(b->wb, s->cf[CF_IDS], (char *)k, 8);
    rocksdb_writebatch_delete_cf(b->wb, s->cf[CF_VECTORS], (char *)k, 8);
    if (s->patches) rocksdb_writebatch_delete_cf(b->wb, s->cf[CF_PATCHES], (char *)k, 8);
    uint8_t hk[40];
    memcpy(hk, old->hash, 32);
    put_u64be(hk + 32, old->id);
    rocksdb_writebatch_delete_cf(b->wb, s->cf[CF_HASHES], (char *)hk, 40);
    if (pend_remove(&b->p[SL_COLL_IMAGES], (int64_t)old->id))
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    for (int p = 0; p < s->patches; p++)
        if (pend_remove(&b->p[SL_COLL_REGIONS], (int64_t)(old->id * SL_STORE_MAX_PATCHES + p)))
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
    return SL_OK;
}

static int hash_is_zero(const uint8_t h[32]) {
    for (int i = 0; i < 32; i++)
        if (h[i]) return 0;
    return 1;
}

sl_status sl_store_batch_put_file(sl_store_batch *b, const char *path, size_t len, sl_file_rec *rec,
                                  const float *vec, const float *patches) {
    sl_store *s = b->s;
    if (len == 0 || len > MAX_PATH_KEY)
        return sl_set_error(SL_ERR_INVALID, "store: path of %zu bytes", len);
    sl_file_rec old;
    int found;
    sl_status st = sl_store_get_file(s, path, len, &old, &found);
    if (st) return st;
    int was_indexed = found && old.id > 0;
    if (vec) {
        rec->id = was_indexed ? old.id : b->next_id++;
        rec->status = SL_OK;
        rec->error[0] = '\0';
        if (was_indexed && (st = unindex(b, &old, 0))) return st;
        uint8_t k[8];
        put_u64be(k, rec->id);
        rocksdb_writebatch_put_cf(b->wb, s->cf[CF_IDS], (char *)k, 8, path, len);
        rocksdb_writebatch_put_cf(b->wb, s->cf[CF_VECTORS], (char *)k, 8, (const char *)vec,
                                  (size_t)s->dim * sizeof(float));
        if (!hash_is_zero(rec->hash)) {
            uint8_t hk[40];
            memcpy(hk, rec->hash, 32);
            put_u64be(hk + 32, rec->id);
            rocksdb_writebatch_put_cf(b->wb, s->cf[CF_HASHES], (char *)hk, 40, "", 0);
        }
        if (pend_add(&b->p[SL_COLL_IMAGES], (int64_t)rec->id, vec, (size_t)s->dim))
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
        if (s->patches && patches) {
            size_t n = (size_t)s->patches * (size_t)s->dim;
            uint16_t *h = malloc(n * sizeof *h);
            float *rt = malloc(n * sizeof *rt);
            if (!h || !rt) {
                free(h);
                free(rt);
                return sl_set_error(SL_ERR_NOMEM, "out of memory");
            }
            sl_f32_to_f16(patches, h, n);
            sl_f16_to_f32(h, rt, n); /* FAISS holds what RocksDB holds */
            rocksdb_writebatch_put_cf(b->wb, s->cf[CF_PATCHES], (char *)k, 8, (const char *)h,
                                      n * sizeof *h);
            for (int p = 0; p < s->patches; p++)
                if (pend_add(&b->p[SL_COLL_REGIONS],
                             (int64_t)(rec->id * SL_STORE_MAX_PATCHES + (uint64_t)p),
                             rt + (size_t)p * (size_t)s->dim, (size_t)s->dim)) {
                    free(h);
                    free(rt);
                    return sl_set_error(SL_ERR_NOMEM, "out of memory");
                }
            free(h);
            free(rt);
        }
    } else {
        rec->id = 0;
        if (was_indexed && (st = unindex(b, &old, 1))) return st;
    }
    uint8_t buf[512];
    size_t n = rec_encode(rec, buf);
    rocksdb_writebatch_put_cf(b->wb, s->cf[CF_FILES], path, len, (char *)buf, n);
    return SL_OK;
}

sl_status sl_store_batch_delete_file(sl_store_batch *b, const char *path, size_t len) {
    sl_file_rec old;
    int found;
    sl_status st = sl_store_get_file(b->s, path, len, &old, &found);
    if (st || !found) return st;
    if (old.id > 0 && (st = unindex(b, &old, 1))) return st;
    rocksdb_writebatch_delete_cf(b->wb, b->s->cf[CF_FILES], path, len);
    return SL_OK;
}

sl_status sl_store_batch_put_text(sl_store_batch *b, const char *text, const float *vec,
                                  uint64_t *id) {
    sl_store *s = b->s;
    *id = b->next_text_id++;
    uint8_t k[8];
    put_u64be(k, *id);
    rocksdb_writebatch_put_cf(b->wb, s->cf[CF_TEXTS], (char *)k, 8, text, strlen(text));
    rocksdb_writebatch_put_cf(b->wb, s->cf[CF_TVECTORS], (char *)k, 8, (const char *)vec,
                              (size_t)s->dim * sizeof(float));
    if (pend_add(&b->p[SL_COLL_TEXTS], (int64_t)*id, vec, (size_t)s->dim))
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    return SL_OK;
}

sl_status sl_store_batch_clear_texts(sl_store_batch *b) {
    sl_store *s = b->s;
    uint8_t lo[8] = {0}, hi[9] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    rocksdb_writebatch_delete_range_cf(b->wb, s->cf[CF_TEXTS], (char *)lo, 8, (char *)hi, 9);
    rocksdb_writebatch_delete_range_cf(b->wb, s->cf[CF_TVECTORS], (char *)lo, 8, (char *)hi, 9);
    b->p[SL_COLL_TEXTS].reset = 1;
    b->p[SL_COLL_TEXTS].nadd = 0;
    return SL_OK;
}

sl_status sl_store_batch_put_state(sl_store_batch *b, const char *key, const char *value) {
    rocksdb_writebatch_put_cf(b->wb, b->s->cf[CF_STATE], key, strlen(key), value, strlen(value));
    return SL_OK;
}

sl_status sl_store_batch_commit(sl_store_batch *b) {
    sl_store *s = b->s;
    char num[32];
    if (b->next_id != s->next_id) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)b->next_id);
        sl_store_batch_put_state(b, "next_id", num);
    }
    if (b->next_text_id != s->next_text_id) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)b->next_text_id);
        sl_store_batch_put_state(b, "next_text_id", num);
    }
    char *err = NULL;
    rocksdb_write(s->db, s->wo, b->wb, &err);
    if (err) {
        sl_status st = rocks_fail(err, "write", s->dir);
        sl_store_batch_abort(b);
        return st;
    }
    s->next_id = b->next_id;
    s->next_text_id = b->next_text_id;
    /* RocksDB holds the truth now; FAISS follows in memory. A failure here
     * leaves FAISS behind, which the next open repairs. */
    sl_status st = SL_OK;
    for (int c = 0; c < SL_COLL_COUNT && st == SL_OK; c++) {
        pending *p = &b->p[c];
        if (p->reset && s->coll[c].index) {
            faiss_Index_reset(s->coll[c].index);
            s->coll[c].dirty = 1;
        }
        if (p->nremove) st = coll_remove(s, (sl_collection)c, p->remove, p->nremove);
        if (st || p->nadd == 0) continue;
        FaissIndex *index;
        if ((st = coll_index(s, (sl_collection)c, &index))) break;
        if (s->coll[c].needs_rebuild || !faiss_Index_is_trained(index)) {
            s->coll[c].needs_rebuild = 1; /* added at the rebuild, from RocksDB */
            s->coll[c].dirty = 1;
            continue;
        }
        if (faiss_Index_add_with_ids(index, (idx_t)p->nadd, p->add_vecs, p->add_ids) != 0)
            st = faiss_fail("add", s->dir);
        s->coll[c].dirty = 1;
    }
    sl_store_batch_abort(b);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Search and verify                                                        */
/* ------------------------------------------------------------------------ */

sl_status sl_store_search(sl_store *s, sl_collection c, const float *queries, size_t nq, int k,
                          float *scores, int64_t *ids) {
    if (k <= 0) return sl_set_error(SL_ERR_INVALID, "search: k must be positive");
    if (s->coll[c].needs_rebuild) {
        sl_status st = coll_rebuild(s, c, NULL);
        if (st) return st;
    }
    if (!s->coll[c].index || faiss_Index_ntotal(s->coll[c].index) == 0) {
        for (size_t i = 0; i < nq * (size_t)k; i++) {
            scores[i] = 0;
            ids[i] = -1;
        }
        return SL_OK;
    }
    if (faiss_Index_search(s->coll[c].index, (idx_t)nq, queries, k, scores, ids) != 0)
        return faiss_fail("search", s->dir);
    return SL_OK;
}

sl_status sl_store_set_search_param(sl_store *s, sl_collection c, const char *name, double value) {
    FaissIndex *index;
    sl_status st = coll_index(s, c, &index);
    if (st) return st;
    FaissParameterSpace *ps = NULL;
    if (faiss_ParameterSpace_new(&ps) != 0) return faiss_fail("parameters", s->dir);
    int rc = faiss_ParameterSpace_set_index_parameter(ps, index, name, value);
    faiss_ParameterSpace_free(ps);
    if (rc != 0)
        return sl_set_error(SL_ERR_INVALID, "%s: parameter %s does not apply to the %s index (%s)",
                            s->dir, name, coll_names[c], s->coll[c].type);
    return SL_OK;
}

typedef struct verify_ctx {
    sl_store *s;
    sl_store_report *r;
    sl_status st;
} verify_ctx;

static int verify_file(void *ctx, const char *path, size_t len, const sl_file_rec *rec) {
    verify_ctx *v = ctx;
    v->r->files++;
    if (rec->id == 0) {
        v->r->failed++;
        return 0;
    }
    v->r->indexed++;
    char *p = NULL;
    size_t pl = 0;
    sl_status st = sl_store_get_path(v->s, rec->id, &p, &pl);
    if (st == SL_ERR_NOT_FOUND || (st == SL_OK && (pl != len || memcmp(p, path, len) != 0)))
        v->r->dangling++;
    else if (st)
        v->st = st;
    free(p);
    return v->st != SL_OK;
}

sl_status sl_store_verify(sl_store *s, sl_store_report *r) {
    memset(r, 0, sizeof *r);
    verify_ctx v = {s, r, SL_OK};
    sl_status st = sl_store_foreach_file(s, verify_file, &v);
    if (st == SL_OK) st = v.st;
    if (st) return st;
    /* every id maps back to a file that names it */
    uint64_t *keys;
    size_t nk;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_IDS]);
    uint64_t nids = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) nids++;
    rocksdb_iter_destroy(it);
    if (nids != r->indexed)
        r->dangling += nids > r->indexed ? nids - r->indexed : r->indexed - nids;
    for (int c = 0; c < SL_COLL_COUNT; c++) {
        if ((st = coll_db_keys(s, (sl_collection)c, &keys, &nk))) return st;
        int64_t *fids;
        size_t nf;
        if ((st = coll_faiss_ids(s, (sl_collection)c, &fids, &nf))) {
            free(keys);
            return st;
        }
        size_t per = (size_t)coll_per_key(s, (sl_collection)c);
        r->count[c] = nk * per;
        r->faiss_count[c] = nf;
        size_t j = 0;
        for (size_t i = 0; i < nk; i++) {
            int64_t first =
                (int64_t)(c == SL_COLL_REGIONS ? keys[i] * SL_STORE_MAX_PATCHES : keys[i]);
            while (j < nf && fids[j] < first) {
                r->extra[c]++;
                j++;
            }
            for (size_t p = 0; p < per; p++) {
                if (j < nf && fids[j] == first + (int64_t)p)
                    j++;
                else
                    r->missing[c]++;
            }
        }
        r->extra[c] += nf - j;
        if (c == SL_COLL_IMAGES && nk != r->indexed) r->dangling++;
        free(keys);
        free(fids);
    }
    return SL_OK;
}
