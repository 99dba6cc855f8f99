/*
 * tests/test_faiss.c - the FAISS C API as sightline uses it (from the
 * library or from our shim): build an inner-product index with our ids,
 * search, write, read back, search again, remove ids, train an IVF index,
 * tune a parameter, and report errors through faiss_get_last_error().
 */
#include "testutil.h"

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <stdint.h>

#define D 16
#define N 200

/* Deterministic unit vectors. */
static void make_vectors(float *x, int n, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) {
            seed = seed * 1664525u + 1013904223u;
            x[i * D + j] = (float)((seed >> 8) & 0xffff) / 65535.f - 0.5f;
            ss += x[i * D + j] * x[i * D + j];
        }
        for (int j = 0; j < D; j++) x[i * D + j] /= (float)sqrt(ss);
    }
}

static void test_flat_idmap(const char *dir) {
    static float x[N * D];
    make_vectors(x, N, 7);
    idx_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 1000 + 3 * i;

    FaissIndex *index = NULL;
    CHECK(faiss_index_factory(&index, D, "IDMap2,Flat", METRIC_INNER_PRODUCT) == 0);
    CHECK(index != NULL);
    if (!index) return;
    CHECK(faiss_Index_d(index) == D);
    CHECK(faiss_Index_is_trained(index));
    CHECK(faiss_IndexIDMap2_cast(index) != NULL);
    CHECK(faiss_Index_add_with_ids(index, N, x, ids) == 0);
    CHECK(faiss_Index_ntotal(index) == N);

    /* each vector finds itself first with score 1 */
    float dist[N * 3];
    idx_t lab[N * 3];
    CHECK(faiss_Index_search(index, N, x, 3, dist, lab) == 0);
    int self = 0;
    for (int i = 0; i < N; i++) self += lab[i * 3] == ids[i] && fabsf(dist[i * 3] - 1.f) < 1e-5f;
    CHECK_MSG(self == N, "%d of %d found themselves", self, N);
    /* scores are inner products, in descending order */
    float dot = 0;
    int j = (int)((lab[1] - 1000) / 3);
    for (int k = 0; k < D; k++) dot += x[k] * x[j * D + k];
    CHECK_NEAR(dist[1], dot, 1e-5);
    CHECK(dist[0] >= dist[1] && dist[1] >= dist[2]);

    /* id map exposed */
    idx_t *idmap;
    size_t nmap;
    faiss_IndexIDMap2_id_map(faiss_IndexIDMap2_cast(index), &idmap, &nmap);
    CHECK(nmap == N && idmap[5] == ids[5]);
    CHECK(faiss_IndexIDMap2_sub_index(faiss_IndexIDMap2_cast(index)) != NULL);

    /* reconstruct by our id */
    float rec[D];
    CHECK(faiss_Index_reconstruct(index, ids[9], rec) == 0);
    CHECK(memcmp(rec, x + 9 * D, sizeof rec) == 0);

    /* write, read back, same answers */
    char path[1024];
    snprintf(path, sizeof path, "%s/global.faiss", dir);
    CHECK(faiss_write_index_fname(index, path) == 0);
    FaissIndex *back = NULL;
    CHECK(faiss_read_index_fname(path, 0, &back) == 0);
    if (back) {
        float dist2[N * 3];
        idx_t lab2[N * 3];
        CHECK(faiss_Index_ntotal(back) == N);
        CHECK(faiss_Index_search(back, N, x, 3, dist2, lab2) == 0);
        CHECK(memcmp(lab, lab2, sizeof lab) == 0 && memcmp(dist, dist2, sizeof dist) == 0);
        faiss_Index_free(back);
    }

    /* remove ids: a batch and a range */
    idx_t gone[3] = {ids[0], ids[10], ids[20]};
    FaissIDSelectorBatch *sel = NULL;
    CHECK(faiss_IDSelectorBatch_new(&sel, 3, gone) == 0);
    size_t nrem = 0;
    CHECK(faiss_Index_remove_ids(index, (FaissIDSelector *)sel, &nrem) == 0);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    CHECK(nrem == 3 && faiss_Index_ntotal(index) == N - 3);
    CHECK(faiss_Index_search(index, 1, x + 10 * D, 1, dist, lab) == 0);
    CHECK(lab[0] != ids[10]);
    FaissIDSelectorRange *rsel = NULL;
    CHECK(faiss_IDSelectorRange_new(&rsel, 1000, 1000 + 3 * 50) == 0);
    CHECK(faiss_Index_remove_ids(index, (FaissIDSelector *)rsel, &nrem) == 0);
    faiss_IDSelector_free((FaissIDSelector *)rsel);
    /* [1000, 1150) holds ids[0..49]; three of them are gone already */
    CHECK_MSG(nrem == 47, "removed %zu", nrem);
    CHECK(faiss_Index_ntotal(index) == N - 50);

    CHECK(faiss_Index_reset(index) == 0);
    CHECK(faiss_Index_ntotal(index) == 0);
    faiss_Index_free(index);
}

static void test_ivf(void) {
    enum { NB = 2000 };
    static float x[NB * D];
    make_vectors(x, NB, 11);
    FaissIndex *index = NULL;
    CHECK(faiss_index_factory(&index, D, "IVF16,Flat", METRIC_INNER_PRODUCT) == 0);
    if (!index) return;
    CHECK(!faiss_Index_is_trained(index));
    /* adding before training is an error with a message */
    CHECK(faiss_Index_add(index, NB, x) != 0);
    CHECK(faiss_get_last_error() != NULL && strlen(faiss_get_last_error()) > 0);
    CHECK(faiss_Index_train(index, NB, x) == 0);
    CHECK(faiss_Index_is_trained(index));
    CHECK(faiss_Index_add(index, NB, x) == 0);
    FaissParameterSpace *ps = NULL;
    CHECK(faiss_ParameterSpace_new(&ps) == 0);
    CHECK(faiss_ParameterSpace_set_index_parameter(ps, index, "nprobe", 16) == 0);
    /* with every list probed the search is exact */
    float dist[NB];
    idx_t lab[NB];
    CHECK(faiss_Index_search(index, NB, x, 1, dist, lab) == 0);
    int self = 0;
    for (int i = 0; i < NB; i++) self += lab[i] == i;
    CHECK_MSG(self == NB, "%d of %d", self, NB);
    CHECK(faiss_ParameterSpace_set_index_parameter(ps, index, "no_such_param", 1) != 0);
    faiss_ParameterSpace_free(ps);
    faiss_Index_free(index);
}

static void test_errors(const char *dir) {
    FaissIndex *index = NULL;
    int rc = faiss_index_factory(&index, D, "NoSuchIndexType", METRIC_L2);
    CHECK(rc != 0);
    const char *msg = faiss_get_last_error();
    CHECK(msg != NULL && strlen(msg) > 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/missing.faiss", dir);
    CHECK(faiss_read_index_fname(path, 0, &index) != 0);
    CHECK(faiss_get_last_error() != NULL);
}

int main(void) {
    const char *dir = sl_test_tmpdir();
    test_flat_idmap(dir);
    test_ivf();
    test_errors(dir);
    return sl_test_finish("test_faiss");
}
