// indexer/faiss_c_shim.cpp - the FAISS C API functions sightline calls, for
// FAISS builds that ship the C API headers without the functions (Debian's
// libfaiss-dev 1.7.3). CMake compiles this file only when its configure check
// finds the functions missing from the installed library.
//
// Each function has the signature declared in <faiss/c_api/*.h>; C++
// exceptions never cross into C: they become the C API's error codes
// (-2 FAISS exception, -4 standard exception, -1 anything else) and the
// message is kept for faiss_get_last_error().

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <exception>
#include <string>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

namespace {

thread_local std::string last_error;

// Run `fn`, mapping exceptions to C API codes and keeping the message.
template <typename F> int guarded(F fn) {
    try {
        fn();
        return OK;
    } catch (const faiss::FaissException &e) {
        last_error = e.what();
        return FAISS_EXCEPT;
    } catch (const std::exception &e) {
        last_error = e.what();
        return STD_EXCEPT;
    } catch (...) {
        last_error = "unknown exception";
        return UNKNOWN_EXCEPT;
    }
}

faiss::Index *idx(FaissIndex *p) {
    return reinterpret_cast<faiss::Index *>(p);
}
const faiss::Index *idx(const FaissIndex *p) {
    return reinterpret_cast<const faiss::Index *>(p);
}

} // namespace

extern "C" {

const char *faiss_get_last_error() {
    return last_error.empty() ? nullptr : last_error.c_str();
}

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric) {
    return guarded([&] {
        *p_index = reinterpret_cast<FaissIndex *>(
            faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
    });
}

void faiss_Index_free(FaissIndex *obj) {
    delete idx(obj);
}
int faiss_Index_d(const FaissIndex *obj) {
    return idx(obj)->d;
}
int faiss_Index_is_trained(const FaissIndex *obj) {
    return idx(obj)->is_trained;
}
idx_t faiss_Index_ntotal(const FaissIndex *obj) {
    return idx(obj)->ntotal;
}
FaissMetricType faiss_Index_metric_type(const FaissIndex *obj) {
    return static_cast<FaissMetricType>(idx(obj)->metric_type);
}
int faiss_Index_verbose(const FaissIndex *obj) {
    return idx(obj)->verbose;
}
void faiss_Index_set_verbose(FaissIndex *obj, int v) {
    idx(obj)->verbose = v != 0;
}

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x) {
    return guarded([&] { idx(index)->train(n, x); });
}
int faiss_Index_add(FaissIndex *index, idx_t n, const float *x) {
    return guarded([&] { idx(index)->add(n, x); });
}
int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids) {
    return guarded([&] { idx(index)->add_with_ids(n, x, xids); });
}
int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels) {
    return guarded([&] { idx(index)->search(n, x, k, distances, labels); });
}
int faiss_Index_reset(FaissIndex *index) {
    return guarded([&] { idx(index)->reset(); });
}
int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel, size_t *n_removed) {
    return guarded([&] {
        size_t n = idx(index)->remove_ids(*reinterpret_cast<const faiss::IDSelector *>(sel));
        if (n_removed) *n_removed = n;
    });
}
int faiss_Index_reconstruct(const FaissIndex *index, idx_t key, float *recons) {
    return guarded([&] { idx(index)->reconstruct(key, recons); });
}

int faiss_write_index_fname(const FaissIndex *index, const char *fname) {
    return guarded([&] { faiss::write_index(idx(index), fname); });
}
int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out) {
    return guarded(
        [&] { *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(fname, io_flags)); });
}

void faiss_IDSelector_free(FaissIDSelector *obj) {
    delete reinterpret_cast<faiss::IDSelector *>(obj);
}
int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p_sel, size_t n, const idx_t *indices) {
    return guarded([&] {
        *p_sel = reinterpret_cast<FaissIDSelectorBatch *>(new faiss::IDSelectorBatch(n, indices));
    });
}
int faiss_IDSelectorRange_new(FaissIDSelectorRange **p_sel, idx_t imin, idx_t imax) {
    return guarded([&] {
        *p_sel = reinterpret_cast<FaissIDSelectorRange *>(new faiss::IDSelectorRange(imin, imax));
    });
}
void faiss_IDSelectorRange_free(FaissIDSelectorRange *obj) {
    delete reinterpret_cast<faiss::IDSelectorRange *>(obj);
}

int faiss_ParameterSpace_new(FaissParameterSpace **space) {
    return guarded(
        [&] { *space = reinterpret_cast<FaissParameterSpace *>(new faiss::ParameterSpace()); });
}
void faiss_ParameterSpace_free(FaissParameterSpace *obj) {
    delete reinterpret_cast<faiss::ParameterSpace *>(obj);
}
int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *space, FaissIndex *index,
                                             const char *name, double value) {
    return guarded([&] {
        reinterpret_cast<const faiss::ParameterSpace *>(space)->set_index_parameter(idx(index),
                                                                                    name, value);
    });
}

int faiss_IndexIDMap2_new(FaissIndexIDMap2 **p_index, FaissIndex *index) {
    return guarded([&] {
        auto *m = new faiss::IndexIDMap2(idx(index));
        *p_index = reinterpret_cast<FaissIndexIDMap2 *>(static_cast<faiss::Index *>(m));
    });
}
FaissIndexIDMap2 *faiss_IndexIDMap2_cast(FaissIndex *index) {
    return reinterpret_cast<FaissIndexIDMap2 *>(
        static_cast<faiss::Index *>(dynamic_cast<faiss::IndexIDMap2 *>(idx(index))));
}
int faiss_IndexIDMap2_own_fields(const FaissIndexIDMap2 *index) {
    return dynamic_cast<const faiss::IndexIDMap2 *>(idx(index))->own_fields;
}
void faiss_IndexIDMap2_set_own_fields(FaissIndexIDMap2 *index, int own) {
    dynamic_cast<faiss::IndexIDMap2 *>(idx(index))->own_fields = own != 0;
}
int faiss_IndexIDMap2_construct_rev_map(FaissIndexIDMap2 *index) {
    return guarded([&] { dynamic_cast<faiss::IndexIDMap2 &>(*idx(index)).construct_rev_map(); });
}
void faiss_IndexIDMap2_id_map(FaissIndexIDMap2 *index, idx_t **p_id_map, size_t *p_size) {
    auto *m = dynamic_cast<faiss::IndexIDMap2 *>(idx(index));
    *p_id_map = m->id_map.data();
    *p_size = m->id_map.size();
}
FaissIndex *faiss_IndexIDMap2_sub_index(FaissIndexIDMap2 *index) {
    auto *m = dynamic_cast<faiss::IndexIDMap2 *>(idx(index));
    return reinterpret_cast<FaissIndex *>(m->index);
}

} // extern "C"
