/*
 * common/build_info.c - version and build description.
 */
#include "sightline/sightline.h"
#include "sl_build_config.h"

const char *sl_version(void) {
    return SL_VERSION_STRING;
}

const char *sl_build_info(void) {
    return "sightline " SL_VERSION_STRING " (" SL_BUILD_TYPE ", " SL_C_COMPILER ")\n"
           "  FAISS " SL_FAISS_VERSION
#if SL_FAISS_HAS_C_API
           " (C API from the library)\n"
#else
           " (C API functions from sightline's own shim)\n"
#endif
           "  RocksDB " SL_ROCKSDB_VERSION "\n"
           "  OpenBLAS " SL_OPENBLAS_VERSION " (OpenMP)\n"
           "  libcurl " SL_CURL_VERSION "\n"
           "  TurboJPEG " SL_TURBOJPEG_VERSION ", libpng " SL_PNG_VERSION
           ", libwebp " SL_WEBP_VERSION "\n"
           "  jansson " SL_JANSSON_VERSION ", utf8proc " SL_UTF8PROC_VERSION "\n"
#if SL_HAVE_CUDA
           "  CUDA: built (cuBLAS, cuBLASLt"
#if SL_HAVE_NCCL
           ", NCCL"
#endif
           ")\n"
#else
           "  CUDA: not built\n"
#endif
           "  sanitizers: " SL_SANITIZERS "\n";
}
