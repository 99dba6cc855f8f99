// kernels/cuda/search.cu - exact inner-product search on the GPU: top-k
// (sl_cuda_topk) and the retrieval ranks of the evaluation
// (sl_cuda_retrieval_ranks), both from a cuBLAS F32 sgemm.
//
// Order keys. A score is turned into a 32-bit unsigned key that orders like
// the float: positive floats get the sign bit set, negative ones are
// inverted; -0 is folded onto +0 (they compare equal) and NaN onto 0, below
// -inf (a NaN never beats anything). Every comparison below is on these
// keys, so it is exact whatever the compiler does with floats
// (--use_fast_math flushes subnormals in float compares; integers do not).
// A candidate of the top-k is a 64-bit composite: key << 32 | ~id. Larger
// composite = better: higher score, then the smaller id. Composites of
// distinct ids are distinct, so the k best of a set are exactly the
// composites >= the k-th largest, and sorting composites descending gives
// the order score descending, id ascending. Real composites are never 0
// (ids < 2^31, so ~id >= 2^31); 0 pads the sort.
//
// Top-k kernel (one block per query row): the candidates are the row's
// running top-k (kept sorted in device memory) plus one tile of sgemm
// scores. A most-significant-digit radix select over the composites (8-bit
// digits, histograms in shared memory with warp-aggregated atomics) finds
// the k-th largest; the selected ones are sorted by a bitonic network in
// shared memory and written back as the new running top-k. Passes read the
// tile from global memory until the candidates still in play fit in shared
// memory (TK_CAP); then they are compacted there. Once the running top-k is
// full, a first pass keeps only what beats its last entry, which in the
// steady state is a handful per tile, so a tile costs one read.

#include "kernels/kernels.h"
#include "sightline/sightline.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

typedef unsigned long long u64;

constexpr int TK_THREADS = 256;                    // threads of a top-k block
constexpr int TK_CAP = 4096;                       // candidates compacted in shared memory
constexpr int TK_MAXK = SL_CUDA_TOPK_MAX;          // largest k (the output buffer)
constexpr size_t TK_MAX_COLS = 65536;              // db rows scored per tile
constexpr size_t SIM_TILE_MAX = (size_t)512 << 20; // bytes of one score tile (top-k)
constexpr int RK_THREADS = 256;                    // threads of the rank kernels
constexpr unsigned FULL = 0xffffffffu;

static_assert(TK_MAXK >= 1 && (TK_MAXK & (TK_MAXK - 1)) == 0, "k limit must be a power of 2");
static_assert(TK_CAP >= TK_MAXK, "the compacted candidates must hold a full top-k");
static_assert(sizeof(long long) == sizeof(int64_t), "ranks are copied as long long");

thread_local sl_cuda_search_stats g_stats;

// ---- device helpers ---------------------------------------------------------

__device__ __forceinline__ unsigned order_key(float f) {
    unsigned b = __float_as_uint(f);
    const unsigned a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return 0u; // NaN: below -inf
    if (a == 0u) b = 0u;            // -0 == +0
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ u64 compose(unsigned key, unsigned id) {
    return ((u64)key << 32) | (u64)(~id);
}

// Add one to hist[bin] for every lane with `on`; lanes with the same bin
// add together (one shared atomic per distinct bin of the warp). Every lane
// of the warp must call it.
__device__ __forceinline__ void warp_hist(bool on, unsigned bin, unsigned *hist) {
    const unsigned peers = __match_any_sync(FULL, on ? bin : 256u);
    if (on && (int)(threadIdx.x & 31) == __ffs(peers) - 1)
        atomicAdd(&hist[bin], (unsigned)__popc(peers));
}

// Append v to buf[*count] for every lane with `on` (one atomic per warp);
// positions past cap are counted but not written. Every lane must call it.
__device__ __forceinline__ void warp_append(bool on, u64 v, u64 *buf, int *count, int cap) {
    const unsigned m = __ballot_sync(FULL, on);
    if (m == 0) return; // the same for the whole warp
    const int lane = (int)(threadIdx.x & 31), leader = __ffs(m) - 1;
    int base = 0;
    if (lane == leader) base = atomicAdd(count, __popc(m));
    base = __shfl_sync(FULL, base, leader);
    if (on) {
        const int p = base + __popc(m & ((1u << lane) - 1u));
        if (p < cap) buf[p] = v;
    }
}

// ---- top-k --------------------------------------------------------------------

// Block b merges query row b: state[b*k .. b*k+pc) (its running top-k,
// sorted best first) with the scores sim[b*ncols .. +ncols) of db rows
// id_base .. id_base+ncols, and writes the min(k, pc+ncols) best, sorted,
// to state[b*k ..]. Requires 1 <= k <= TK_MAXK, ncols >= 1, pc <= k.
__global__ void __launch_bounds__(TK_THREADS)
    topk_merge_kernel(u64 *state, int k, int pc, const float *__restrict__ sim, int ncols,
                      unsigned id_base) {
    __shared__ u64 out[TK_MAXK]; // the selected candidates, then the sort
    __shared__ u64 cand[TK_CAP]; // candidates still in play, once they fit
    __shared__ unsigned hist[256];
    __shared__ int n_out, n_cand;
    __shared__ unsigned sel_digit, sel_above, sel_cnt;

    const int tid = (int)threadIdx.x;
    u64 *st = state + (size_t)blockIdx.x * (size_t)k;
    const float *row = sim + (size_t)blockIdx.x * (size_t)ncols;
    const int L = pc + ncols; // candidates: pc running, then ncols new
    const int kk = min(k, L); // how many to keep
    auto load = [&](int i) -> u64 {
        return i < pc ? st[i] : compose(order_key(row[i - pc]), id_base + (unsigned)(i - pc));
    };

    if (tid == 0) {
        n_out = 0;
        n_cand = 0;
    }
    __syncthreads();

    // Running top-k full: only what beats its last (smallest) entry can get
    // in. Keep those and the running k in shared memory when they fit.
    bool in_smem = false;
    if (pc == k) {
        const u64 thr = st[k - 1];
        for (int base = 0; base < L; base += TK_THREADS) {
            const int i = base + tid;
            const u64 c = i < L ? load(i) : 0;
            warp_append(i < L && c >= thr, c, cand, &n_cand, TK_CAP);
        }
        __syncthreads();
        const int m = n_cand;
        __syncthreads(); // everyone has read n_cand before it is reset
        if (m <= TK_CAP)
            in_smem = true;
        else if (tid == 0)
            n_cand = 0; // too many: select from global memory (seen after the next barrier)
    }

    // Radix select, most significant digit first. Invariant: `remaining` of
    // the kk are still to be chosen among the candidates whose masked bits
    // equal `prefix`; those with greater masked bits are all chosen.
    u64 prefix = 0, mask = 0;
    unsigned remaining = (unsigned)kk;
    bool compact = false; // this pass also copies the candidates in play to cand
    bool done = (unsigned)(in_smem ? n_cand : L) == remaining;
    for (int shift = 56; shift >= 0 && !done; shift -= 8) {
        for (int t = tid; t < 256; t += TK_THREADS) hist[t] = 0;
        __syncthreads();
        const int n_src = in_smem ? n_cand : L;
        for (int base = 0; base < n_src; base += TK_THREADS) {
            const int i = base + tid;
            const bool valid = i < n_src;
            u64 c = 0;
            if (valid) c = in_smem ? cand[i] : load(i);
            const u64 m = c & mask;
            const bool match = valid && m == prefix;
            warp_hist(match, (unsigned)(c >> shift) & 255u, hist);
            if (compact) {
                warp_append(match, c, cand, &n_cand, TK_CAP);
                warp_append(valid && m > prefix, c, out, &n_out, TK_MAXK);
            }
        }
        __syncthreads();
        if (compact) {
            in_smem = true;
            compact = false;
        }
        if (tid < 32) {           // the digit holding the remaining-th largest: lane l scans
            const int lane = tid; // bins 255-8l .. 248-8l, highest first
            unsigned h[8], sum = 0;
#pragma unroll
            for (int t = 0; t < 8; t++) {
                h[t] = hist[255 - 8 * lane - t];
                sum += h[t];
            }
            unsigned incl = sum; // inclusive scan: counts in bins above and in this lane's
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                const unsigned v = __shfl_up_sync(FULL, incl, off);
                if (lane >= off) incl += v;
            }
            unsigned acc = incl - sum;
            if (acc < remaining && remaining <= incl) { // exactly one lane
#pragma unroll
                for (int t = 0; t < 8; t++) {
                    if (acc + h[t] >= remaining) {
                        sel_digit = (unsigned)(255 - 8 * lane - t);
                        sel_above = acc;
                        sel_cnt = h[t];
                        break;
                    }
                    acc += h[t];
                }
            }
        }
        __syncthreads();
        const unsigned digit = sel_digit, above = sel_above, cnt = sel_cnt;
        prefix |= (u64)digit << shift;
        mask |= (u64)0xff << shift;
        remaining -= above;
        if (cnt == remaining)
            done = true; // every candidate with this prefix is chosen
        else if (!in_smem && cnt <= (unsigned)TK_CAP)
            compact = true;
    }

    // Gather the chosen: masked bits >= prefix. (After a compaction, the
    // ones above the prefix at that time are in out already.)
    if (in_smem) {
        const int nc = n_cand;
        for (int base = 0; base < nc; base += TK_THREADS) {
            const int i = base + tid;
            const u64 c = i < nc ? cand[i] : 0;
            warp_append(i < nc && (c & mask) >= prefix, c, out, &n_out, TK_MAXK);
        }
    } else {
        for (int base = 0; base < L; base += TK_THREADS) {
            const int i = base + tid;
            const u64 c = i < L ? load(i) : 0;
            warp_append(i < L && (c & mask) >= prefix, c, out, &n_out, TK_MAXK);
        }
    }
    __syncthreads();

    // Bitonic sort of out[0..P), P the power of two >= kk, descending; the
    // pads (0) sink to the end.
    int P = 1;
    while (P < kk) P <<= 1;
    for (int t = kk + tid; t < P; t += TK_THREADS) out[t] = 0;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = tid; t < (P >> 1); t += TK_THREADS) {
                const int i = 2 * t - (t & (stride - 1)), j = i + stride; // bit `stride` of i is 0
                const u64 a = out[i], b = out[j];
                const bool desc = (i & size) == 0;
                if (desc ? a < b : a > b) {
                    out[i] = b;
                    out[j] = a;
                }
            }
            __syncthreads();
        }
    }
    for (int t = tid; t < kk; t += TK_THREADS) st[t] = out[t];
}

// ---- ranks --------------------------------------------------------------------

struct MaxOp {
    __device__ u64 operator()(u64 a, u64 b) const {
        return a > b ? a : b;
    }
};
struct SumOp {
    __device__ unsigned operator()(unsigned a, unsigned b) const {
        return a + b;
    }
};

// Reduce v over the block (blockDim.x a multiple of 32, identity 0); every
// thread gets the result. smem32 holds 32 values; callable repeatedly.
template <typename T, typename Op> __device__ T block_reduce(T v, Op op, T *smem32) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(FULL, v, off));
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5);
    __syncthreads(); // a previous call has finished reading smem32
    if (lane == 0) smem32[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? smem32[lane] : T(0);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(FULL, v, off));
    return v;
}

// Text j's ground truth: the key of sim[ti[j]][j] when image ti[j] is one
// of the chunk's rows row0 .. row0+rows (sim [rows, nt] row-major).
__global__ void gt_key_kernel(const float *__restrict__ sim, unsigned row0, unsigned rows,
                              unsigned nt, const unsigned *__restrict__ ti, unsigned *gkey) {
    const unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= nt) return;
    const unsigned g = ti[j];
    if (g >= row0 && g - row0 < rows) gkey[j] = order_key(sim[(size_t)(g - row0) * nt + j]);
}

// Text -> image: add to cnt[j] the images of the chunk that beat text j's
// image (higher score, or equal at a lower index). Thread = text column;
// blockIdx.y = rows_per_y rows of the chunk. Coalesced along the rows.
__global__ void t2i_count_kernel(const float *__restrict__ sim, unsigned row0, unsigned rows,
                                 unsigned rows_per_y, unsigned nt, const unsigned *__restrict__ ti,
                                 const unsigned *__restrict__ gkey, unsigned *cnt) {
    const unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned r0 = blockIdx.y * rows_per_y;
    if (j >= nt || r0 >= rows) return;
    const unsigned r1 = min(rows, r0 + rows_per_y);
    const unsigned g = gkey[j], gi = ti[j];
    unsigned c = 0;
    for (unsigned r = r0; r < r1; r++) {
        const unsigned s = order_key(sim[(size_t)r * nt + j]);
        c += (unsigned)(s > g) | (unsigned)((s == g) & (row0 + r < gi));
    }
    if (c) atomicAdd(&cnt[j], c);
}

// rank = 1 + the images that beat it; a NaN ground truth is last.
__global__ void t2i_final_kernel(unsigned nt, const unsigned *__restrict__ gkey,
                                 const unsigned *__restrict__ cnt, long long n_images,
                                 long long *rank) {
    const unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= nt) return;
    rank[j] = gkey[j] == 0u ? n_images : (long long)cnt[j] + 1;
}

// Image -> text, block = image row0 + blockIdx.x (sim row blockIdx.x):
// its best caption (highest key, lowest index among equals: the largest
// composite) among idx[off[i] .. off[i+1]), then 1 + the texts that beat it.
__global__ void __launch_bounds__(RK_THREADS)
    i2t_rank_kernel(const float *__restrict__ sim, unsigned row0, unsigned nt,
                    const unsigned *__restrict__ off, const unsigned *__restrict__ idx,
                    long long *rank) {
    __shared__ u64 red64[32];
    __shared__ unsigned red32[32];
    const unsigned i = row0 + blockIdx.x;
    const float *row = sim + (size_t)blockIdx.x * nt;
    const unsigned c0 = off[i], c1 = off[i + 1];
    if (c0 == c1) { // no caption: no query
        if (threadIdx.x == 0) rank[i] = 0;
        return;
    }
    u64 best = 0;
    for (unsigned c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        const unsigned j = idx[c];
        const u64 v = compose(order_key(row[j]), j);
        best = v > best ? v : best;
    }
    best = block_reduce(best, MaxOp(), red64);
    const unsigned g = (unsigned)(best >> 32), bj = ~(unsigned)best;
    if (g == 0u) { // every caption NaN: behind every other text
        if (threadIdx.x == 0) rank[i] = (long long)(nt - (c1 - c0)) + 1;
        return;
    }
    unsigned cnt = 0;
    for (unsigned x = threadIdx.x; x < nt; x += blockDim.x) {
        const unsigned s = order_key(row[x]);
        cnt += (unsigned)(s > g) | (unsigned)((s == g) & (x < bj));
    }
    cnt = block_reduce(cnt, SumOp(), red32);
    if (threadIdx.x == 0) rank[i] = (long long)cnt + 1;
}

// ---- host side ----------------------------------------------------------------

sl_status cuda_fail(cudaError_t e, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "CUDA %s: %s", what, cudaGetErrorString(e));
}

sl_status cublas_fail(cublasStatus_t s, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "cuBLAS %s: %s (status %d)", what,
                        cublasGetStatusString(s), (int)s);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

float key_to_float(uint32_t key) {
    const uint32_t b = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

// Host memory released on every path.
struct HostBuf {
    void *p = nullptr;
    ~HostBuf() {
        free(p);
    }
};

// One call's device state: the device selected (the caller's restored at
// the end), a stream, a cuBLAS handle, timing events and every allocation,
// all released by the destructor whatever the path.
struct Session {
    int prev_dev = -1;
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    cudaEvent_t ev[4] = {nullptr, nullptr, nullptr, nullptr};
    void *bufs[16] = {};
    int nbufs = 0;

    Session() = default;
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;
    ~Session() {
        if (stream) cudaStreamSynchronize(stream); // nothing in flight uses what is freed
        for (int i = 0; i < nbufs; i++) cudaFree(bufs[i]);
        for (cudaEvent_t &e : ev)
            if (e) cudaEventDestroy(e);
        if (blas) cublasDestroy(blas);
        if (stream) cudaStreamDestroy(stream);
        if (prev_dev >= 0) cudaSetDevice(prev_dev);
        cudaGetLastError(); // leave no non-sticky error behind
    }

    sl_status open(int dev) {
        int cur = -1;
        cudaError_t e = cudaGetDevice(&cur);
        if (e != cudaSuccess) return cuda_fail(e, "get device");
        prev_dev = cur;
        if ((e = cudaSetDevice(dev)) != cudaSuccess) return cuda_fail(e, "set device");
        if ((e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess) {
            stream = nullptr;
            return cuda_fail(e, "stream create");
        }
        for (cudaEvent_t &x : ev)
            if ((e = cudaEventCreate(&x)) != cudaSuccess) {
                x = nullptr;
                return cuda_fail(e, "event create");
            }
        cublasStatus_t s = cublasCreate(&blas);
        if (s != CUBLAS_STATUS_SUCCESS) {
            blas = nullptr;
            return cublas_fail(s, "create");
        }
        if ((s = cublasSetStream(blas, stream)) != CUBLAS_STATUS_SUCCESS)
            return cublas_fail(s, "set stream");
        // F32 sgemm as written: no TF32 (the default; stated for the record)
        if ((s = cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
            return cublas_fail(s, "set math mode");
        return SL_OK;
    }

    template <typename T> sl_status alloc(T **p, size_t count, const char *what) {
        *p = nullptr;
        if (nbufs == (int)(sizeof bufs / sizeof bufs[0]))
            return sl_set_error(SL_ERR_INVALID, "cuda search: too many buffers (%s)", what);
        void *v = nullptr;
        const size_t bytes = (count ? count : 1) * sizeof(T); // counts are bounded by the budget
        cudaError_t e = cudaMalloc(&v, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return sl_set_error(e == cudaErrorMemoryAllocation ? SL_ERR_NOMEM : SL_ERR_EXTERNAL,
                                "CUDA malloc of %zu bytes (%s): %s", bytes, what,
                                cudaGetErrorString(e));
        }
        bufs[nbufs++] = v;
        *p = (T *)v;
        return SL_OK;
    }

    sl_status upload(void *dst, const void *src, size_t bytes, const char *what) {
        if (bytes == 0) return SL_OK;
        cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, what);
    }

    sl_status download(void *dst, const void *src, size_t bytes, const char *what) {
        if (bytes == 0) return SL_OK;
        cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, what);
    }

    sl_status record(int i) {
        cudaError_t e = cudaEventRecord(ev[i], stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, "event record");
    }

    sl_status sync(const char *what) {
        cudaError_t e = cudaStreamSynchronize(stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, what);
    }

    sl_status launched(const char *what) {
        cudaError_t e = cudaGetLastError();
        return e == cudaSuccess ? SL_OK : cuda_fail(e, what);
    }

    // Fill the stats' device times from the four events (after a sync).
    void times(sl_cuda_search_stats *s) {
        float a = 0, b = 0, c = 0;
        if (cudaEventElapsedTime(&a, ev[0], ev[1]) == cudaSuccess) s->upload_ms = a;
        if (cudaEventElapsedTime(&b, ev[1], ev[2]) == cudaSuccess) s->compute_ms = b;
        if (cudaEventElapsedTime(&c, ev[2], ev[3]) == cudaSuccess) s->download_ms = c;
        cudaGetLastError();
    }
};

// C [nrows, m] row-major = B [nrows, d] . A [m, d]^T (both row-major): in
// cuBLAS's column-major terms C^T (m x nrows, ld m) = A^T(op T of the d x m
// matrix A, ld d) . B (d x nrows, ld d). d == 0 gives zeros.
sl_status sim_gemm(Session &s, const float *A, size_t m, const float *B, size_t nrows, size_t d,
                   float *C) {
    if (d == 0) {
        cudaError_t e = cudaMemsetAsync(C, 0, nrows * m * sizeof(float), s.stream);
        return e == cudaSuccess ? SL_OK : cuda_fail(e, "memset");
    }
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm(s.blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)nrows, (int)d,
                                    &one, A, (int)d, B, (int)d, &zero, C, (int)m);
    return st == CUBLAS_STATUS_SUCCESS ? SL_OK : cublas_fail(st, "sgemm");
}

// The device bytes to plan for: $SL_CUDA_MEM_BUDGET or 90% of the free
// memory less 256 MiB, never more than is free.
sl_status mem_budget(size_t *out) {
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    if (e != cudaSuccess) return cuda_fail(e, "memory info");
    const char *env = getenv("SL_CUDA_MEM_BUDGET");
    if (env && *env) {
        const char *p = env;
        unsigned long long v = 0;
        int digits = 0;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (v > (ULLONG_MAX - 9) / 10) break;
            v = v * 10 + (unsigned long long)(*p - '0');
        }
        unsigned shift = 0;
        if (*p == 'K' || *p == 'k')
            shift = 10, p++;
        else if (*p == 'M' || *p == 'm')
            shift = 20, p++;
        else if (*p == 'G' || *p == 'g')
            shift = 30, p++;
        if (!digits || *p || (shift && v > (ULLONG_MAX >> shift)))
            return sl_set_error(SL_ERR_INVALID,
                                "SL_CUDA_MEM_BUDGET=%s: expected a byte count (digits with an "
                                "optional K, M or G)",
                                env);
        v <<= shift;
        *out = v < (unsigned long long)fr ? (size_t)v : fr;
    } else {
        const size_t reserve = (size_t)256 << 20;
        *out = fr > reserve ? (fr - reserve) / 10 * 9 : fr / 2;
    }
    return SL_OK;
}

sl_status too_small(int dev, size_t budget, size_t need) {
    return sl_set_error(SL_ERR_NOMEM,
                        "cuda:%d: a device memory budget of %zu bytes cannot hold one tile of "
                        "the search (%zu bytes needed; see SL_CUDA_MEM_BUDGET)",
                        dev, budget, need);
}

size_t min_sz(size_t a, size_t b) {
    return a < b ? a : b;
}

} // namespace

extern "C" void sl_cuda_search_last_stats(sl_cuda_search_stats *out) {
    if (out) *out = g_stats;
}

extern "C" sl_status sl_cuda_topk(int dev, const float *q, size_t nq, const float *db, size_t n,
                                  size_t d, size_t k, float *scores, int64_t *ids) {
    const auto t_start = std::chrono::steady_clock::now();
    g_stats = sl_cuda_search_stats{};
    sl_status st = sl_cuda_check_device(dev);
    if (st) return st;
    if (k == 0) return sl_set_error(SL_ERR_INVALID, "sl_cuda_topk: k must be positive");
    if (k > (size_t)TK_MAXK)
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "sl_cuda_topk: k = %zu is above the GPU limit of %d", k, TK_MAXK);
    if (n > (size_t)INT32_MAX || d > (size_t)INT32_MAX)
        return sl_set_error(SL_ERR_LIMIT, "sl_cuda_topk: %zu db rows of dimension %zu is too large",
                            n, d);
    if (nq == 0) return SL_OK;
    if (!scores || !ids || (d && !q) || (n && d && !db))
        return sl_set_error(SL_ERR_INVALID, "sl_cuda_topk: NULL argument");
    size_t cells, qfl, dbfl;
    if (sl_mul_size(nq, k, &cells) || sl_mul_size(nq, d, &qfl) || sl_mul_size(n, d, &dbfl) ||
        sl_mul_size(qfl, sizeof(float), &qfl) || sl_mul_size(dbfl, sizeof(float), &dbfl) ||
        sl_mul_size(cells, sizeof(int64_t), &cells))
        return sl_set_error(SL_ERR_LIMIT, "sl_cuda_topk: %zu queries x %zu rows x %zu is too large",
                            nq, n, d);
    const size_t kk_final = min_sz(k, n); // valid results per query
    if (n == 0) {
        for (size_t i = 0; i < nq * k; i++) {
            scores[i] = -INFINITY;
            ids[i] = -1;
        }
        g_stats.total_ms = ms_since(t_start);
        return SL_OK;
    }

    Session s;
    if ((st = s.open(dev))) return st;
    size_t budget;
    if ((st = mem_budget(&budget))) return st;

    // Plan: a group of qg queries with their running top-k (at most a
    // quarter of the budget), a db chunk of nc rows (all of db when it
    // fits in half), and a score tile of qt x ncols in what is left.
    const size_t row_q = d * sizeof(float) + k * sizeof(u64), row_db = d * sizeof(float);
    size_t qg = nq, nc = n;
    if (qg > budget / 4 / row_q) qg = budget / 4 / row_q ? budget / 4 / row_q : 1;
    if (row_db && nc > budget / 2 / row_db) nc = budget / 2 / row_db ? budget / 2 / row_db : 1;
    const size_t fixed = qg * row_q + nc * row_db;
    if (fixed + sizeof(float) > budget) return too_small(dev, budget, fixed + sizeof(float));
    const size_t rem = min_sz(budget - fixed, SIM_TILE_MAX);
    const size_t ncols = min_sz(min_sz(nc, TK_MAX_COLS), rem / sizeof(float));
    const size_t qt = min_sz(qg, rem / (ncols * sizeof(float)));
    const size_t n_chunks = (n + nc - 1) / nc;

    float *dq, *ddb, *dsim;
    u64 *dstate;
    if ((st = s.alloc(&dq, qg * d, "queries")) || (st = s.alloc(&ddb, nc * d, "db")) ||
        (st = s.alloc(&dsim, qt * ncols, "scores")) || (st = s.alloc(&dstate, qg * k, "top-k")))
        return st;
    HostBuf tmp;
    if (!(tmp.p = malloc(qg * k * sizeof(u64))))
        return sl_set_error(SL_ERR_NOMEM, "sl_cuda_topk: out of memory");
    const u64 *res = (const u64 *)tmp.p;

    size_t gemms = 0, loaded_c0 = SIZE_MAX;
    bool first_gemm = true;
    if ((st = s.record(0))) return st;
    for (size_t g0 = 0; g0 < nq; g0 += qg) {
        const size_t gq = min_sz(qg, nq - g0);
        if ((st = s.upload(dq, q + g0 * d, gq * d * sizeof(float), "copy queries to device")))
            return st;
        size_t pc = 0; // valid entries of the running top-k
        for (size_t c0 = 0; c0 < n; c0 += nc) {
            const size_t cn = min_sz(nc, n - c0);
            if (loaded_c0 != c0) {
                if ((st = s.upload(ddb, db + c0 * d, cn * d * sizeof(float), "copy db to device")))
                    return st;
                loaded_c0 = c0;
            }
            for (size_t t0 = 0; t0 < cn; t0 += ncols) {
                const size_t tn = min_sz(ncols, cn - t0);
                for (size_t q0 = 0; q0 < gq; q0 += qt) {
                    const size_t tq = min_sz(qt, gq - q0);
                    if (first_gemm) {
                        if ((st = s.record(1))) return st;
                        first_gemm = false;
                    }
                    if ((st = sim_gemm(s, ddb + t0 * d, tn, dq + q0 * d, tq, d, dsim))) return st;
                    gemms++;
                    topk_merge_kernel<<<(unsigned)tq, TK_THREADS, 0, s.stream>>>(
                        dstate + q0 * k, (int)k, (int)pc, dsim, (int)tn, (unsigned)(c0 + t0));
                    if ((st = s.launched("top-k kernel launch"))) return st;
                }
                pc = min_sz(k, pc + tn);
            }
        }
        const bool last = g0 + gq >= nq;
        if (last && (st = s.record(2))) return st;
        if ((st = s.download(tmp.p, dstate, gq * k * sizeof(u64), "copy top-k to host"))) return st;
        if (last && (st = s.record(3))) return st;
        if ((st = s.sync("top-k"))) return st;
        for (size_t r = 0; r < gq; r++) {
            float *so = scores + (g0 + r) * k;
            int64_t *io = ids + (g0 + r) * k;
            for (size_t t = 0; t < k; t++) {
                if (t < kk_final) {
                    const u64 c = res[r * k + t];
                    so[t] = key_to_float((uint32_t)(c >> 32));
                    io[t] = (int64_t)(uint32_t) ~(uint32_t)c;
                } else {
                    so[t] = -INFINITY;
                    io[t] = -1;
                }
            }
        }
    }
    sl_cuda_search_stats stats{};
    s.times(&stats);
    stats.gemms = gemms;
    stats.db_chunks = n_chunks;
    stats.budget = budget;
    stats.total_ms = ms_since(t_start);
    g_stats = stats;
    return SL_OK;
}

extern "C" sl_status sl_cuda_retrieval_ranks(int dev, const float *img, size_t n_images,
                                             const float *txt, size_t n_texts, size_t d,
                                             const int64_t *txt_image, int64_t *i2t_rank,
                                             int64_t *t2i_rank) {
    const auto t_start = std::chrono::steady_clock::now();
    g_stats = sl_cuda_search_stats{};
    sl_status st = sl_cuda_check_device(dev);
    if (st) return st;
    if (n_images > (size_t)INT32_MAX || n_texts > (size_t)INT32_MAX || d > (size_t)INT32_MAX)
        return sl_set_error(SL_ERR_LIMIT, "retrieval: %zu images x %zu texts x %zu is too large",
                            n_images, n_texts, d);
    if ((n_texts && !txt_image) || (n_images && d && !img) || (n_texts && d && !txt))
        return sl_set_error(SL_ERR_INVALID, "sl_cuda_retrieval_ranks: NULL argument");
    for (size_t j = 0; j < n_texts; j++)
        if (txt_image[j] < 0 || (uint64_t)txt_image[j] >= n_images)
            return sl_set_error(SL_ERR_INVALID, "retrieval: text %zu describes image %lld of %zu",
                                j, (long long)txt_image[j], n_images);
    if (!i2t_rank && !t2i_rank) return SL_OK;
    if (n_texts == 0) { // no text: no image -> text query, no text -> image query
        if (i2t_rank)
            for (size_t i = 0; i < n_images; i++) i2t_rank[i] = 0;
        g_stats.total_ms = ms_since(t_start);
        return SL_OK;
    }
    const size_t ni = n_images, nt = n_texts; // both in [1, INT32_MAX] from here

    Session s;
    if ((st = s.open(dev))) return st;
    size_t budget;
    if ((st = mem_budget(&budget))) return st;
    // Resident: both embedding sets, the texts' images and ground-truth keys
    // and counts, the captions of each image (CSR), the ranks. The rest holds
    // `rows` image rows of the score matrix.
    size_t emb;
    if (sl_mul_size(ni + nt, d, &emb) || sl_mul_size(emb, sizeof(float), &emb))
        return sl_set_error(SL_ERR_LIMIT, "retrieval: %zu images x %zu texts x %zu is too large",
                            ni, nt, d);
    const size_t fixed = emb + nt * 4 * sizeof(unsigned) + (ni + 1) * sizeof(unsigned) +
                         (ni + nt) * sizeof(long long);
    const size_t row_bytes = nt * sizeof(float);
    if (fixed + row_bytes > budget) return too_small(dev, budget, fixed + row_bytes);
    const size_t rows = min_sz(ni, (budget - fixed) / row_bytes);
    const size_t n_chunks = (ni + rows - 1) / rows;

    HostBuf h_ti, h_off, h_idx;
    h_ti.p = malloc(nt * sizeof(unsigned));
    h_off.p = calloc(ni + 1, sizeof(unsigned));
    h_idx.p = malloc(nt * sizeof(unsigned));
    if (!h_ti.p || !h_off.p || !h_idx.p)
        return sl_set_error(SL_ERR_NOMEM, "retrieval: out of memory");
    unsigned *ti = (unsigned *)h_ti.p, *off = (unsigned *)h_off.p, *idx = (unsigned *)h_idx.p;
    for (size_t j = 0; j < nt; j++) ti[j] = (unsigned)txt_image[j];
    // each image's captions in increasing text order (as sl_retrieval_ranks)
    for (size_t j = 0; j < nt; j++) off[ti[j] + 1]++;
    for (size_t i = 0; i < ni; i++) off[i + 1] += off[i];
    for (size_t j = 0; j < nt; j++) idx[off[ti[j]]++] = (unsigned)j;
    for (size_t i = ni; i > 0; i--) off[i] = off[i - 1]; // restore the starts
    off[0] = 0;

    float *dimg, *dtxt, *dsim;
    unsigned *dti, *dgkey, *dcnt, *doff, *didx;
    long long *dri, *drt;
    if ((st = s.alloc(&dimg, ni * d, "images")) || (st = s.alloc(&dtxt, nt * d, "texts")) ||
        (st = s.alloc(&dti, nt, "text images")) || (st = s.alloc(&dgkey, nt, "ground truth")) ||
        (st = s.alloc(&dcnt, nt, "counts")) || (st = s.alloc(&doff, ni + 1, "caption offsets")) ||
        (st = s.alloc(&didx, nt, "captions")) || (st = s.alloc(&dri, ni, "i2t ranks")) ||
        (st = s.alloc(&drt, nt, "t2i ranks")) || (st = s.alloc(&dsim, rows * nt, "scores")))
        return st;

    if ((st = s.record(0)) || (st = s.upload(dimg, img, ni * d * sizeof(float), "copy images")) ||
        (st = s.upload(dtxt, txt, nt * d * sizeof(float), "copy texts")) ||
        (st = s.upload(dti, ti, nt * sizeof(unsigned), "copy text images")) ||
        (st = s.upload(doff, off, (ni + 1) * sizeof(unsigned), "copy caption offsets")) ||
        (st = s.upload(didx, idx, nt * sizeof(unsigned), "copy captions")))
        return st;
    cudaError_t e = cudaMemsetAsync(dcnt, 0, nt * sizeof(unsigned), s.stream);
    if (e != cudaSuccess) return cuda_fail(e, "memset");
    if ((st = s.record(1))) return st;

    const unsigned nt_u = (unsigned)nt;
    const unsigned tgrid = (unsigned)((nt + RK_THREADS - 1) / RK_THREADS);
    size_t gemms = 0;
    // With several chunks, the ground truth of a text may lie in a later
    // chunk than the rows it is counted against: a first pass takes every
    // ground-truth score, the second counts (the same sgemm calls, so the
    // same bits).
    const bool two_pass = t2i_rank && n_chunks > 1;
    if (two_pass) {
        for (size_t r0 = 0; r0 < ni; r0 += rows) {
            const size_t rn = min_sz(rows, ni - r0);
            if ((st = sim_gemm(s, dtxt, nt, dimg + r0 * d, rn, d, dsim))) return st;
            gemms++;
            gt_key_kernel<<<tgrid, RK_THREADS, 0, s.stream>>>(dsim, (unsigned)r0, (unsigned)rn,
                                                              nt_u, dti, dgkey);
            if ((st = s.launched("ground-truth kernel launch"))) return st;
        }
    }
    for (size_t r0 = 0; r0 < ni; r0 += rows) {
        const size_t rn = min_sz(rows, ni - r0);
        if ((st = sim_gemm(s, dtxt, nt, dimg + r0 * d, rn, d, dsim))) return st;
        gemms++;
        if (t2i_rank) {
            if (!two_pass) {
                gt_key_kernel<<<tgrid, RK_THREADS, 0, s.stream>>>(dsim, (unsigned)r0, (unsigned)rn,
                                                                  nt_u, dti, dgkey);
                if ((st = s.launched("ground-truth kernel launch"))) return st;
            }
            // at most 65535 row slices (grid y), at least 64 rows each
            size_t rpy = (rn + 65534) / 65535;
            if (rpy < 64) rpy = 64;
            const dim3 grid(tgrid, (unsigned)((rn + rpy - 1) / rpy));
            t2i_count_kernel<<<grid, RK_THREADS, 0, s.stream>>>(
                dsim, (unsigned)r0, (unsigned)rn, (unsigned)rpy, nt_u, dti, dgkey, dcnt);
            if ((st = s.launched("text->image kernel launch"))) return st;
        }
        if (i2t_rank) {
            i2t_rank_kernel<<<(unsigned)rn, RK_THREADS, 0, s.stream>>>(dsim, (unsigned)r0, nt_u,
                                                                       doff, didx, dri);
            if ((st = s.launched("image->text kernel launch"))) return st;
        }
    }
    if (t2i_rank) {
        t2i_final_kernel<<<tgrid, RK_THREADS, 0, s.stream>>>(nt_u, dgkey, dcnt, (long long)ni, drt);
        if ((st = s.launched("text->image kernel launch"))) return st;
    }
    if ((st = s.record(2))) return st;
    if (i2t_rank && (st = s.download(i2t_rank, dri, ni * sizeof(int64_t), "copy ranks to host")))
        return st;
    if (t2i_rank && (st = s.download(t2i_rank, drt, nt * sizeof(int64_t), "copy ranks to host")))
        return st;
    if ((st = s.record(3)) || (st = s.sync("retrieval ranks"))) return st;
    sl_cuda_search_stats stats{};
    s.times(&stats);
    stats.gemms = gemms;
    stats.db_chunks = n_chunks;
    stats.budget = budget;
    stats.total_ms = ms_since(t_start);
    g_stats = stats;
    return SL_OK;
}
