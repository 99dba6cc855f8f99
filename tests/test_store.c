/*
 * tests/test_store.c - the index store: FAISS + RocksDB kept in step.
 * Round trips, replacement and removal, content-hash lookup, crash repair
 * (FAISS behind RocksDB, FAISS ahead of RocksDB, FAISS file lost), the
 * directory lock, index types that cannot remove (HNSW) or need training
 * (IVF), texts, and the FAISS file read by Python faiss (reference: the
 * python3-faiss package; same neighbour ids, scores within 1e-5).
 */
#include "sightline/npy.h"
#include "sightline/store.h"
#include "testutil.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIM 16
#define NP  4

static void vec_for(uint64_t seed, float *v) {
    double ss = 0;
    for (int j = 0; j < DIM; j++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v[j] = (float)((seed >> 40) & 0xffff) / 65535.f - 0.5f;
        ss += v[j] * v[j];
    }
    for (int j = 0; j < DIM; j++) v[j] /= (float)sqrt(ss);
}

static void patches_for(uint64_t seed, float *p) {
    for (int i = 0; i < NP; i++) vec_for(seed * 131 + (uint64_t)i + 7, p + i * DIM);
}

static void path_for(int i, char *buf) {
    sprintf(buf, "/photos/%03d.jpg", i);
}

/* Put files [lo, hi) with vectors seeded by i + salt. */
static void put_range(sl_store *s, int lo, int hi, int salt) {
    sl_store_batch *b;
    CHECK_OK(sl_store_batch_begin(s, &b));
    for (int i = lo; i < hi; i++) {
        char p[64];
        float v[DIM], pt[NP * DIM];
        path_for(i, p);
        vec_for((uint64_t)(i + salt), v);
        patches_for((uint64_t)(i + salt), pt);
        sl_file_rec r = {
            .mtime_ns = 1000 + i, .size = 10 + (uint64_t)i, .width = 640, .height = 480};
        r.hash[0] = (uint8_t)(i + salt);
        r.hash[1] = 1;
        CHECK_OK(sl_store_batch_put_file(b, p, strlen(p), &r, v, pt));
    }
    CHECK_OK(sl_store_batch_commit(b));
}

/* The top hit of file i's vector (salt) is file i. */
static int finds_self(sl_store *s, int i, int salt) {
    float v[DIM], score[3];
    int64_t id[3];
    vec_for((uint64_t)(i + salt), v);
    if (sl_store_search(s, SL_COLL_IMAGES, v, 1, 3, score, id) != SL_OK || id[0] < 0) return 0;
    char *path = NULL, want[64];
    path_for(i, want);
    int ok = sl_store_get_path(s, (uint64_t)id[0], &path, NULL) == SL_OK && !strcmp(path, want) &&
             fabsf(score[0] - 1.f) < 1e-5f;
    free(path);
    return ok;
}

static int consistent(sl_store *s) {
    sl_store_report r;
    if (sl_store_verify(s, &r) != SL_OK) return 0;
    int ok = r.dangling == 0;
    for (int c = 0; c < SL_COLL_COUNT; c++)
        ok &= r.missing[c] == 0 && r.extra[c] == 0 && r.count[c] == r.faiss_count[c];
    if (!ok)
        fprintf(stderr,
                "verify: files %llu dangling %llu img %llu/%llu -%llu +%llu reg %llu/%llu\n",
                (unsigned long long)r.files, (unsigned long long)r.dangling,
                (unsigned long long)r.count[0], (unsigned long long)r.faiss_count[0],
                (unsigned long long)r.missing[0], (unsigned long long)r.extra[0],
                (unsigned long long)r.count[2], (unsigned long long)r.faiss_count[2]);
    return ok;
}

static sl_store *open_store(const char *dir, const char *type, int create) {
    sl_store_opts o = {.create = create,
                       .dim = DIM,
                       .patches = NP,
                       .model_fingerprint = "test-model",
                       .index_type = type};
    sl_store *s = NULL;
    CHECK_OK(sl_store_open(dir, &o, &s));
    return s;
}

static void copy_file(const char *from, const char *to) {
    char *buf;
    size_t len;
    CHECK_OK(sl_read_file(from, 1 << 28, &buf, &len));
    CHECK_OK(sl_write_file_atomic(to, buf, len));
    free(buf);
}

static void test_basic(const char *root) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/basic", root);
    sl_store *s = open_store(dir, "Flat", 1);
    if (!s) return;
    put_range(s, 0, 50, 0);
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 50);
    CHECK(sl_store_count(s, SL_COLL_REGIONS) == 50 * NP);
    int self = 0;
    for (int i = 0; i < 50; i++) self += finds_self(s, i, 0);
    CHECK_MSG(self == 50, "%d of 50", self);
    CHECK(consistent(s));

    /* file records */
    sl_file_rec r;
    int found;
    CHECK_OK(sl_store_get_file(s, "/photos/007.jpg", 15, &r, &found));
    CHECK(found && r.id > 0 && r.mtime_ns == 1007 && r.size == 17 && r.width == 640);
    uint64_t id7 = r.id;
    CHECK_OK(sl_store_get_file(s, "/photos/none.jpg", 16, &r, &found));
    CHECK(!found);
    uint8_t h[32] = {7, 1};
    uint64_t hid;
    CHECK_OK(sl_store_find_hash(s, h, &hid));
    CHECK(hid == id7);
    h[0] = 200;
    CHECK_OK(sl_store_find_hash(s, h, &hid));
    CHECK(hid == 0);
    float pt[NP * DIM], want[NP * DIM];
    CHECK_OK(sl_store_get_patches(s, id7, pt));
    patches_for(7, want);
    double md = 0;
    for (int i = 0; i < NP * DIM; i++) md = fmax(md, fabs(pt[i] - want[i]));
    CHECK_MSG(md < 1e-3, "f16 patches off by %g", md);

    /* replace 10 vectors (same ids), fail 5 files, delete 5 */
    put_range(s, 0, 10, 1000);
    CHECK_OK(sl_store_get_file(s, "/photos/007.jpg", 15, &r, &found));
    CHECK(r.id == id7);
    CHECK(finds_self(s, 7, 1000) && !finds_self(s, 7, 0));
    sl_store_batch *b;
    CHECK_OK(sl_store_batch_begin(s, &b));
    for (int i = 10; i < 15; i++) {
        char p[64];
        path_for(i, p);
        sl_file_rec fr = {.status = SL_ERR_FORMAT};
        snprintf(fr.error, sizeof fr.error, "truncated JPEG");
        CHECK_OK(sl_store_batch_put_file(b, p, strlen(p), &fr, NULL, NULL));
    }
    for (int i = 15; i < 20; i++) {
        char p[64];
        path_for(i, p);
        CHECK_OK(sl_store_batch_delete_file(b, p, strlen(p)));
    }
    CHECK_OK(sl_store_batch_put_state(b, "sources", "/photos"));
    CHECK_OK(sl_store_batch_commit(b));
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 40);
    CHECK(sl_store_count(s, SL_COLL_REGIONS) == 40 * NP);
    CHECK_OK(sl_store_get_file(s, "/photos/012.jpg", 15, &r, &found));
    CHECK(found && r.id == 0 && r.status == SL_ERR_FORMAT && !strcmp(r.error, "truncated JPEG"));
    CHECK_OK(sl_store_get_file(s, "/photos/017.jpg", 15, &r, &found));
    CHECK(!found);
    CHECK(!finds_self(s, 12, 0) && !finds_self(s, 17, 0));
    sl_store_report rep;
    CHECK_OK(sl_store_verify(s, &rep));
    CHECK(rep.files == 45 && rep.indexed == 40 && rep.failed == 5);
    CHECK(consistent(s));

    /* lock: a second writer is refused at once, naming our pid */
    sl_store_opts o = {.dim = DIM};
    sl_store *s2 = NULL;
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    CHECK_ERR(sl_store_open(dir, &o, &s2), SL_ERR_BUSY, pid);
    /* a reader is fine */
    o.read_only = 1;
    CHECK_OK(sl_store_open(dir, &o, &s2));
    sl_store_abandon(s2);

    CHECK_OK(sl_store_close(s));
    s = open_store(dir, NULL, 0);
    if (!s) return;
    char *v;
    CHECK_OK(sl_store_get_state(s, "sources", &v));
    CHECK(v && !strcmp(v, "/photos"));
    free(v);
    CHECK_OK(sl_store_get_state(s, "model", &v));
    CHECK(v && !strcmp(v, "test-model"));
    free(v);
    CHECK_OK(sl_store_get_state(s, "format_version", &v));
    CHECK(v && atoi(v) == SL_STORE_FORMAT);
    free(v);
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 40 && finds_self(s, 7, 1000) &&
          finds_self(s, 30, 0));
    /* new ids continue after the old ones */
    put_range(s, 100, 101, 0);
    CHECK_OK(sl_store_get_file(s, "/photos/100.jpg", 15, &r, &found));
    CHECK(found && r.id == 51);
    /* wrong model or dim is refused */
    sl_store_abandon(s);
    sl_store_opts bad = {.dim = DIM, .model_fingerprint = "other-model"};
    CHECK_ERR(sl_store_open(dir, &bad, &s2), SL_ERR_INVALID, "test-model");
    bad.model_fingerprint = NULL;
    bad.dim = DIM + 1;
    CHECK_ERR(sl_store_open(dir, &bad, &s2), SL_ERR_INVALID, "16-d");
}

/* Crashes: state left between a RocksDB commit and the FAISS checkpoint. */
static void test_crash(const char *root) {
    char dir[1024], path[1200], saved_faiss[1200], saved_manifest[1200];
    snprintf(dir, sizeof dir, "%s/crash", root);
    sl_store *s = open_store(dir, "Flat", 1);
    if (!s) return;
    put_range(s, 0, 30, 0);
    CHECK_OK(sl_store_checkpoint(s));
    /* FAISS behind: commits after the checkpoint, then a "crash" */
    put_range(s, 30, 40, 0);
    sl_store_batch *b;
    CHECK_OK(sl_store_batch_begin(s, &b));
    CHECK_OK(sl_store_batch_delete_file(b, "/photos/003.jpg", 15));
    CHECK_OK(sl_store_batch_commit(b));
    sl_store_abandon(s);
    s = open_store(dir, NULL, 0); /* repairs: +10 added, 003 removed */
    if (!s) return;
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 39);
    CHECK(finds_self(s, 35, 0) && !finds_self(s, 3, 0));
    CHECK(consistent(s));

    /* FAISS file older than the manifest says: keep a copy of this
     * generation's file and manifest, move on, then put the old ones back */
    CHECK_OK(sl_store_close(s));
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    snprintf(saved_manifest, sizeof saved_manifest, "%s/manifest.saved", root);
    copy_file(path, saved_manifest);
    s = open_store(dir, NULL, 0);
    put_range(s, 40, 45, 0);
    CHECK_OK(sl_store_close(s));
    /* the repaired store's files: find the images file named in the old manifest */
    char *m;
    size_t ml;
    CHECK_OK(sl_read_file(saved_manifest, 1 << 20, &m, &ml));
    char *f = strstr(m, "images.");
    CHECK(f != NULL);
    if (!f) return;
    char fname[64];
    sscanf(f, "%63[^\"]", fname);
    free(m);
    snprintf(saved_faiss, sizeof saved_faiss, "%s/%s", dir, fname);
    struct stat sb;
    CHECK(stat(saved_faiss, &sb) != 0); /* the old generation was removed */
    /* rebuild the old situation by hand: an old manifest whose file is gone */
    copy_file(saved_manifest, path);
    s = open_store(dir, NULL, 0); /* file missing: rebuilt from RocksDB */
    if (!s) return;
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 44);
    CHECK(finds_self(s, 42, 0) && finds_self(s, 0, 0));
    CHECK(consistent(s));
    CHECK_OK(sl_store_close(s));
}

static void test_types(const char *root) {
    char dir[1024];
    /* HNSW cannot remove: the store rebuilds it */
    snprintf(dir, sizeof dir, "%s/hnsw", root);
    sl_store *s = open_store(dir, "HNSW16", 1);
    if (!s) return;
    put_range(s, 0, 60, 0);
    sl_store_batch *b;
    CHECK_OK(sl_store_batch_begin(s, &b));
    CHECK_OK(sl_store_batch_delete_file(b, "/photos/005.jpg", 15));
    CHECK_OK(sl_store_batch_commit(b));
    CHECK(!finds_self(s, 5, 0) && finds_self(s, 6, 0));
    CHECK(consistent(s));
    CHECK_OK(sl_store_close(s));
    s = open_store(dir, NULL, 0);
    CHECK(s && sl_store_count(s, SL_COLL_IMAGES) == 59 &&
          !strcmp(sl_store_index_type(s), "HNSW16"));
    sl_store_abandon(s);

    /* IVF needs training: vectors wait in RocksDB until there are enough */
    snprintf(dir, sizeof dir, "%s/ivf", root);
    s = open_store(dir, "IVF4,Flat", 1);
    if (!s) return;
    put_range(s, 0, 200, 0);
    CHECK_OK(sl_store_checkpoint(s)); /* trains on the stored vectors */
    CHECK(sl_store_count(s, SL_COLL_IMAGES) == 200);
    CHECK_OK(sl_store_set_search_param(s, SL_COLL_IMAGES, "nprobe", 4));
    int self = 0;
    for (int i = 0; i < 200; i++) self += finds_self(s, i, 0);
    CHECK_MSG(self == 200, "%d of 200", self);
    CHECK(consistent(s));
    /* change the type of a built index */
    CHECK_OK(sl_store_rebuild(s, SL_COLL_IMAGES, "Flat"));
    CHECK(!strcmp(sl_store_index_type(s), "Flat") && finds_self(s, 150, 0));
    CHECK_ERR(sl_store_rebuild(s, SL_COLL_IMAGES, "NoSuchType"), SL_ERR_INVALID, "NoSuchType");
    CHECK_OK(sl_store_close(s));

    /* a bad type is refused before anything is created */
    snprintf(dir, sizeof dir, "%s/badtype", root);
    sl_store_opts o = {.create = 1, .dim = DIM, .index_type = "Bogus"};
    CHECK_ERR(sl_store_open(dir, &o, &s), SL_ERR_INVALID, "Bogus");
    snprintf(dir, sizeof dir, "%s/missing", root);
    o.create = 0;
    CHECK_ERR(sl_store_open(dir, &o, &s), SL_ERR_NOT_FOUND, "no index");
}

static void test_texts(const char *root) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/texts", root);
    sl_store *s = open_store(dir, "Flat", 1);
    if (!s) return;
    sl_store_batch *b;
    CHECK_OK(sl_store_batch_begin(s, &b));
    uint64_t ids[20];
    for (int i = 0; i < 20; i++) {
        float v[DIM];
        char t[64];
        vec_for((uint64_t)(5000 + i), v);
        snprintf(t, sizeof t, "caption number %d", i);
        CHECK_OK(sl_store_batch_put_text(b, t, v, &ids[i]));
    }
    CHECK_OK(sl_store_batch_commit(b));
    float q[DIM], sc[2];
    int64_t got[2];
    vec_for(5013, q);
    CHECK_OK(sl_store_search(s, SL_COLL_TEXTS, q, 1, 2, sc, got));
    char *text = NULL;
    CHECK(got[0] == (int64_t)ids[13]);
    CHECK_OK(sl_store_get_text(s, (uint64_t)got[0], &text));
    CHECK(text && !strcmp(text, "caption number 13"));
    free(text);
    CHECK_OK(sl_store_batch_begin(s, &b));
    CHECK_OK(sl_store_batch_clear_texts(b));
    CHECK_OK(sl_store_batch_commit(b));
    CHECK(sl_store_count(s, SL_COLL_TEXTS) == 0);
    CHECK(consistent(s));
    CHECK_OK(sl_store_close(s));
}

/* Python faiss reads the images file named by the manifest and finds the
 * same neighbours. */
static void test_python_faiss(const char *root, const char *script) {
    if (system("/usr/bin/python3 -c 'import faiss, numpy' 2>/dev/null") != 0) {
        printf("python3-faiss not available: cross-check skipped\n");
        return;
    }
    char dir[1024], qpath[1200], opath[1200], cmd[4096];
    snprintf(dir, sizeof dir, "%s/py", root);
    sl_store *s = open_store(dir, "Flat", 1);
    if (!s) return;
    put_range(s, 0, 80, 0);
    enum { NQ = 16, K = 5 };
    float q[NQ * DIM], sc[NQ * K];
    int64_t ids[NQ * K];
    for (int i = 0; i < NQ; i++) vec_for((uint64_t)(900 + i), q + i * DIM);
    CHECK_OK(sl_store_search(s, SL_COLL_IMAGES, q, NQ, K, sc, ids));
    CHECK_OK(sl_store_close(s));
    snprintf(qpath, sizeof qpath, "%s/q.npy", root);
    snprintf(opath, sizeof opath, "%s/out", root);
    size_t qs[2] = {NQ, DIM};
    CHECK_OK(sl_npy_write(qpath, SL_NPY_F32, 2, qs, q));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s %d %s", script, dir, qpath, K, opath);
    CHECK(system(cmd) == 0);
    sl_npy pi, ps;
    char p1[1300], p2[1300];
    snprintf(p1, sizeof p1, "%s.ids.npy", opath);
    snprintf(p2, sizeof p2, "%s.scores.npy", opath);
    CHECK_OK(sl_npy_read(p1, &pi));
    CHECK_OK(sl_npy_read(p2, &ps));
    if (pi.data && ps.data && pi.count == NQ * K && ps.count == NQ * K) {
        int same = 0;
        double md = 0;
        for (int i = 0; i < NQ * K; i++) {
            same += ((int64_t *)pi.data)[i] == ids[i];
            md = fmax(md, fabs(((float *)ps.data)[i] - sc[i]));
        }
        CHECK_MSG(same == NQ * K && md <= 1e-5, "%d of %d ids equal, scores off by %g", same,
                  NQ * K, md);
    } else {
        CHECK(!"python output missing");
    }
    sl_npy_free(&pi);
    sl_npy_free(&ps);
}

int main(int argc, char **argv) {
    const char *root = sl_test_tmpdir();
    test_basic(root);
    test_crash(root);
    test_types(root);
    test_texts(root);
    if (argc > 1) test_python_faiss(root, argv[1]);
    return sl_test_finish("test_store");
}
