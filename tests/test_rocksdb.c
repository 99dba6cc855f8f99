/*
 * tests/test_rocksdb.c - RocksDB through its C API as the index store uses
 * it: column families, one synced WriteBatch across them, reopen, point
 * reads, ordered iteration, deletes.
 */
#include "testutil.h"

#include <rocksdb/c.h>

#define NCF 3

static const char *cf_names[NCF] = {"default", "files", "ids"};

static rocksdb_t *open_db(const char *path, rocksdb_column_family_handle_t **cfs) {
    rocksdb_options_t *opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(opt, 1);
    rocksdb_options_set_create_missing_column_families(opt, 1);
    const rocksdb_options_t *cf_opts[NCF] = {opt, opt, opt};
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_column_families(opt, path, NCF, cf_names, cf_opts, cfs, &err);
    if (err) {
        fprintf(stderr, "open %s: %s\n", path, err);
        rocksdb_free(err);
    }
    rocksdb_options_destroy(opt);
    return db;
}

static void close_db(rocksdb_t *db, rocksdb_column_family_handle_t **cfs) {
    for (int i = 0; i < NCF; i++) rocksdb_column_family_handle_destroy(cfs[i]);
    rocksdb_close(db);
}

int main(void) {
    const char *dir = sl_test_tmpdir();
    char path[1024];
    snprintf(path, sizeof path, "%s/meta", dir);
    rocksdb_column_family_handle_t *cfs[NCF];
    rocksdb_t *db = open_db(path, cfs);
    CHECK(db != NULL);
    if (!db) return sl_test_finish("test_rocksdb");

    /* one batch spanning two column families, synced */
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char key[64], val[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "photos/img%03d.jpg", i);
        snprintf(val, sizeof val, "%d", i);
        rocksdb_writebatch_put_cf(wb, cfs[1], key, strlen(key), val, strlen(val));
        unsigned char id[8];
        for (int b = 0; b < 8; b++) id[b] = (unsigned char)((uint64_t)i >> (56 - 8 * b));
        rocksdb_writebatch_put_cf(wb, cfs[2], (const char *)id, 8, key, strlen(key));
    }
    rocksdb_writebatch_put(wb, "state", 5, "v1", 2);
    CHECK(rocksdb_writebatch_count(wb) == 201);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    char *err = NULL;
    rocksdb_write(db, wo, wb, &err);
    CHECK(err == NULL);
    rocksdb_writebatch_destroy(wb);
    close_db(db, cfs);

    /* reopen: everything is there */
    db = open_db(path, cfs);
    CHECK(db != NULL);
    if (!db) return sl_test_finish("test_rocksdb");
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    size_t vlen = 0;
    char *v = rocksdb_get_cf(db, ro, cfs[1], "photos/img042.jpg", 17, &vlen, &err);
    CHECK(err == NULL && v && vlen == 2 && memcmp(v, "42", 2) == 0);
    rocksdb_free(v);
    v = rocksdb_get(db, ro, "state", 5, &vlen, &err);
    CHECK(v && vlen == 2 && memcmp(v, "v1", 2) == 0);
    rocksdb_free(v);
    v = rocksdb_get_cf(db, ro, cfs[1], "nope", 4, &vlen, &err);
    CHECK(v == NULL && err == NULL);

    /* big-endian id keys iterate in id order */
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db, ro, cfs[2]);
    int n = 0, ordered = 1;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &kl);
        const char *vv = rocksdb_iter_value(it, &vl);
        snprintf(key, sizeof key, "photos/img%03d.jpg", n);
        ordered &= kl == 8 && k[7] == n && vl == strlen(key) && memcmp(vv, key, vl) == 0;
        n++;
    }
    rocksdb_iter_get_error(it, &err);
    CHECK(err == NULL);
    rocksdb_iter_destroy(it);
    CHECK(n == 100 && ordered);

    /* delete in a batch */
    wb = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_cf(wb, cfs[1], "photos/img042.jpg", 17);
    rocksdb_write(db, wo, wb, &err);
    CHECK(err == NULL);
    rocksdb_writebatch_destroy(wb);
    v = rocksdb_get_cf(db, ro, cfs[1], "photos/img042.jpg", 17, &vlen, &err);
    CHECK(v == NULL);

    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    close_db(db, cfs);

    /* a second open of the same directory fails with a lock error */
    db = open_db(path, cfs);
    rocksdb_column_family_handle_t *cfs2[NCF];
    rocksdb_options_t *opt = rocksdb_options_create();
    const rocksdb_options_t *cf_opts[NCF] = {opt, opt, opt};
    rocksdb_t *db2 = rocksdb_open_column_families(opt, path, NCF, cf_names, cf_opts, cfs2, &err);
    CHECK(db2 == NULL && err != NULL && strstr(err, "lock") != NULL);
    rocksdb_free(err);
    rocksdb_options_destroy(opt);
    if (db) close_db(db, cfs);
    return sl_test_finish("test_rocksdb");
}
