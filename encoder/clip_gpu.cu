// encoder/clip_gpu.cu - the CLIP towers' inference forward on a CUDA device
// (see clip_gpu.h). The math mirrors encoder/clip_forward.c step by step:
//
//   per block:  ln  = LN1(x += pending)                      (our kernel)
//               qkv = ln . Wqkv^T + bqkv                      (cuBLASLt, BIAS epilogue)
//               att = MHA(qkv)                                (our fused attention)
//               x  += att . Wo^T                              (cuBLASLt, beta = 1, in place)
//               ln  = LN2(x += bo)                            (our kernel)
//               hid = act(ln . W1^T + b1)                     (cuBLASLt GELU_BIAS for the tanh
//                                                              GELU, else BIAS + our kernel)
//               x  += hid . W2^T; pending = b2                (cuBLASLt, beta = 1)
//   the last block only for the pooled rows unless every row is asked for.
//
// Precision: weights of the matmuls (and the token embedding) in BF16 or
// F32; every small vector (LayerNorm weights, biases folded into LayerNorm,
// class token, positions) in F32. The residual stream x is F32 in both modes
// (cuBLASLt reads BF16 A/B and accumulates into the F32 C = D); LayerNorm
// reads F32 and writes the matmul input type. Biases fused into a cuBLASLt
// epilogue have the type of D (BF16 copies in BF16 mode), as cuBLASLt wants.
//
// Row-major C [M, N] = A [M, K] . W [N, K]^T is cuBLASLt's column-major
// C^T [N, M] = op(W) . A^T with op = T on W (stored K x N, ld K), op = N on A
// (stored K x M, ld lda), C stored N x M with ld ldc.
//
// Buffers: weights in one device allocation; activations (sized at open for
// the largest chunk of either tower) in another; pinned host staging for the
// inputs, the row metadata and the outputs. Every base pointer is 256-byte
// aligned (cuBLASLt's heuristics assume it unless told otherwise; the one
// matmul on a column slice, the value path, tells them).

#include "encoder/clip_gpu.h"
#include "kernels/cuda/transformer.cuh"
#include "kernels/kernels.h"
#include "sightline/sightline.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define STAGE_BYTES        ((size_t)8 << 20)
#define MM_CACHE           64
#define BUF_ALIGN          ((size_t)256)

// The patch GEMM's K (3 p^2, e.g. 588 for p = 14) padded to a multiple of 8:
// im2col writes zero columns and the weight has zero columns there, so the
// BF16 rows stay 16-byte multiples.
static int patch_k_padded(int p) {
    return (3 * p * p + 7) / 8 * 8;
}

// 1: the tanh GELU runs in cuBLASLt's GELU_BIAS epilogue (cuBLASLt's GELU is
// the tanh approximation); 0: BIAS epilogue + our activation kernel.
#ifndef SL_GPU_LT_GELU
#define SL_GPU_LT_GELU 1
#endif

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

// One block's parameters on the device. F32: LayerNorms and the biases that
// LayerNorm folds in; wtype (BF16 or F32): the matmul weights and the biases
// fused into cuBLASLt epilogues.
typedef struct gblock {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    const float *o_b, *fc2_b;
    const void *qkv_w; // [3W, W]
    const void *qkv_b; // [3W]
    const void *o_w;   // [W, W]
    const void *fc1_w; // [M, W]
    const void *fc1_b; // [M]
    const void *fc2_w; // [W, M]
} gblock;

// A cached cuBLASLt plan: descriptors and the heuristic's algorithm.
typedef struct mm_key {
    int64_t M, N, K, lda, ldd;
    int32_t ab, d, epi, align;
} mm_key;

typedef struct mm_entry {
    mm_key key;
    int used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} mm_entry;

struct clip_gpu {
    int dev, bf16, patch_value;
    sl_clip_config cfg;
    char *path;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;
    mm_entry mm[MM_CACHE];
    int mm_next;
    int no_lt_gelu; // cuBLASLt offered no GELU_BIAS algorithm: BIAS + activation kernel

    // weights
    void *wmem;
    const void *patch_w; // [Wv, 3p^2]
    const float *cls, *v_pos, *pre_w, *pre_b, *post_w, *post_b;
    const float *r_pos;      // [(R/p)^2 + 1, Wv] the region pass's positions (NULL: none)
    const float *r_pos_host; // the same on the host, only while opening
    const void *v_proj;      // [D, Wv]
    const void *tok;         // [V, Wt]
    const float *t_pos, *final_w, *final_b;
    const void *t_proj; // [D, Wt]
    gblock *vb, *tb;    // host arrays of device pointers

    // activations (device)
    void *amem;
    float *x;    // [R, W] residual stream (also the value path's output)
    void *ln;    // [R, W]
    void *qkv;   // [R, 3W] (also the patch conv's F32 output [n*P, W])
    void *att;   // [R, W]
    void *hid;   // [R, M] (also im2col [n*P, 3p^2])
    float *proj; // [R, D] every row projected
    float *xc;   // [n, W] pooled rows
    void *lnc;   // [n, W]
    void *attc;  // [n, W]
    void *hidc;  // [n, M]
    float *outc; // [n, D]
    float *pix;  // [n, 3, S, S]
    int32_t *ints;

    // pinned host staging
    float *h_pix;
    int32_t *h_ints;
    float *h_out;  // [n + R, D]
    int32_t *h_ql; // [2 * seqs_cap] (pooled position, rows) per sequence (malloc)

    // chunk bounds
    int img_chunk;  // images per chunk
    int reg_side;   // the region pass's input side R (0: no region pass)
    int reg_chunk;  // region-pass images per chunk
    int rows_cap;   // text rows per chunk
    int seqs_cap;   // text sequences per chunk
    size_t out_cap; // floats in h_out
};

// ---------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------

static sl_status cu_fail(int dev, cudaError_t e, const char *what) {
    cudaGetLastError(); // clear a non-sticky error so the next call starts clean
    return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: %s: %s", dev, what, cudaGetErrorString(e));
}

static sl_status lt_fail(int dev, cublasStatus_t s, const char *what) {
    return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: %s: %s", dev, what, cublasLtGetStatusString(s));
}

#define CU(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cu_fail(g->dev, e_, what);                                   \
    } while (0)

static size_t round_up(size_t b) {
    return (b + BUF_ALIGN - 1) & ~(BUF_ALIGN - 1);
}

// a * b, or SIZE_MAX (which no allocation can satisfy) on overflow.
static size_t mul2(size_t a, size_t b) {
    if (a && b > SIZE_MAX / a) return SIZE_MAX;
    return a * b;
}
static size_t mul3(size_t a, size_t b, size_t c) {
    return mul2(mul2(a, b), c);
}
static size_t max2(size_t a, size_t b) {
    return a > b ? a : b;
}

static void *at(void *p, size_t off) {
    return p ? (char *)p + off : NULL;
}

// Largest power of two (<= 256) dividing the address.
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

// Host F32 -> BF16, round to nearest even (NaN stays NaN, overflow -> inf).
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// Make g->dev current for the duration of a call; restore the caller's.
typedef struct dev_guard {
    int prev, set;
} dev_guard;

static sl_status dev_enter(int dev, dev_guard *d) {
    d->set = 0;
    cudaError_t e = cudaGetDevice(&d->prev);
    if (e != cudaSuccess) return cu_fail(dev, e, "get current device");
    if (d->prev != dev) {
        if ((e = cudaSetDevice(dev)) != cudaSuccess) return cu_fail(dev, e, "set device");
        d->set = 1;
    }
    return SL_OK;
}

static void dev_leave(const dev_guard *d) {
    if (d->set) cudaSetDevice(d->prev);
}

// ---------------------------------------------------------------------------
// cuBLASLt
// ---------------------------------------------------------------------------

static void mm_entry_destroy(mm_entry *m) {
    if (m->a) cublasLtMatrixLayoutDestroy(m->a);
    if (m->b) cublasLtMatrixLayoutDestroy(m->b);
    if (m->c) cublasLtMatrixLayoutDestroy(m->c);
    if (m->desc) cublasLtMatmulDescDestroy(m->desc);
    memset(m, 0, sizeof *m);
}

// Build descriptors and pick an algorithm for key k into m.
static sl_status mm_entry_create(clip_gpu *g, mm_entry *m, const mm_key *k, const void *bias) {
    cublasStatus_t s;
    cublasLtMatmulPreference_t pref = NULL;
    memset(m, 0, sizeof *m);
    const cublasOperation_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k->epi;
    const uint64_t wsb = LT_WORKSPACE_BYTES;
    const uint32_t al = (uint32_t)k->align;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    const char *what = "cublasLtMatmulDescCreate";
    if ((s = cublasLtMatmulDescCreate(&m->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F))) goto fail;
    what = "cublasLtMatmulDescSetAttribute";
    if ((s = cublasLtMatmulDescSetAttribute(m->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                            sizeof opa)) ||
        (s = cublasLtMatmulDescSetAttribute(m->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                            sizeof opb)) ||
        (s = cublasLtMatmulDescSetAttribute(m->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                            sizeof epi)))
        goto fail;
    if (bias && (s = cublasLtMatmulDescSetAttribute(m->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias)))
        goto fail;
    what = "cublasLtMatrixLayoutCreate";
    // A operand: the weight [N, K] row-major = column-major K x N, ld K.
    // B operand: the activations [M, K] row-major = column-major K x M, ld lda.
    // C = D: [M, N] row-major = column-major N x M, ld ldd.
    if ((s = cublasLtMatrixLayoutCreate(&m->a, (cudaDataType_t)k->ab, (uint64_t)k->K,
                                        (uint64_t)k->N, k->K)) ||
        (s = cublasLtMatrixLayoutCreate(&m->b, (cudaDataType_t)k->ab, (uint64_t)k->K,
                                        (uint64_t)k->M, k->lda)) ||
        (s = cublasLtMatrixLayoutCreate(&m->c, (cudaDataType_t)k->d, (uint64_t)k->N, (uint64_t)k->M,
                                        k->ldd)))
        goto fail;
    what = "cublasLtMatmulPreference";
    if ((s = cublasLtMatmulPreferenceCreate(&pref)) ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &wsb, sizeof wsb)) ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                  &al, sizeof al)) ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                  &al, sizeof al)) ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                  &al, sizeof al)) ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                  &al, sizeof al)))
        goto fail;
    what = "cublasLtMatmulAlgoGetHeuristic";
    memset(&res, 0, sizeof res);
    s = cublasLtMatmulAlgoGetHeuristic(g->lt, m->desc, m->a, m->b, m->c, m->c, pref, 1, &res,
                                       &found);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
        found = 0; // reported below as "no algorithm" (SL_ERR_UNSUPPORTED)
    } else if (s) {
        goto fail;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    pref = NULL;
    if (found < 1) {
        mm_entry_destroy(m);
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "cuda:%d: cuBLASLt has no algorithm for %lld x %lld x %lld (%s -> %s, "
                            "epilogue %d, alignment %d)",
                            g->dev, (long long)k->M, (long long)k->N, (long long)k->K,
                            k->ab == CUDA_R_16BF ? "bf16" : "f32",
                            k->d == CUDA_R_16BF ? "bf16" : "f32", (int)k->epi, (int)k->align);
    }
    m->algo = res.algo;
    m->key = *k;
    m->used = 1;
    return SL_OK;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    mm_entry_destroy(m);
    return lt_fail(g->dev, s, what);
}

// D [M, N] (ld ldd; F32 when d_f32, else the weight type) = A [M, K] (ld
// lda) . Wt [N, K]^T (+ bias [N], GELU (tanh) after it when gelu), or with
// `accumulate` D += A . Wt^T (in place, beta = 1; no bias). SL_ERR_UNSUPPORTED
// when cuBLASLt has no algorithm for the combination (SL_ERR_EXTERNAL for
// other cuBLASLt failures).
static sl_status mm(clip_gpu *g, void *D, int d_f32, int ldd, const void *A, int lda,
                    const void *Wt, const void *bias, int gelu, int M, int N, int K,
                    int accumulate) {
    if (M <= 0 || N <= 0) return SL_OK;
    const cudaDataType_t ab = g->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t dt = d_f32 ? CUDA_R_32F : ab;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    if (bias) epi = gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    uint32_t al = ptr_align(A);
    if (ptr_align(Wt) < al) al = ptr_align(Wt);
    if (ptr_align(D) < al) al = ptr_align(D);
    if (bias && ptr_align(bias) < al) al = ptr_align(bias);
    mm_key k;
    memset(&k, 0, sizeof k);
    k.M = M;
    k.N = N;
    k.K = K;
    k.lda = lda;
    k.ldd = ldd;
    k.ab = (int32_t)ab;
    k.d = (int32_t)dt;
    k.epi = (int32_t)epi;
    k.align = (int32_t)al;
    mm_entry *m = NULL;
    for (int i = 0; i < MM_CACHE; i++)
        if (g->mm[i].used && !memcmp(&g->mm[i].key, &k, sizeof k)) {
            m = &g->mm[i];
            break;
        }
    if (!m) {
        m = &g->mm[g->mm_next];
        g->mm_next = (g->mm_next + 1) % MM_CACHE;
        if (m->used) mm_entry_destroy(m);
        sl_status st = mm_entry_create(g, m, &k, bias);
        if (st) return st;
    }
    cublasStatus_t s;
    if (bias && (s = cublasLtMatmulDescSetAttribute(m->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias)))
        return lt_fail(g->dev, s, "cublasLtMatmulDescSetAttribute (bias)");
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    s = cublasLtMatmul(g->lt, m->desc, &alpha, Wt, m->a, A, m->b, &beta, D, m->c, D, m->c, &m->algo,
                       g->lt_ws, LT_WORKSPACE_BYTES, g->stream);
    if (s) {
        char what[160];
        snprintf(what, sizeof what, "cublasLtMatmul %d x %d x %d", M, N, K);
        return lt_fail(g->dev, s, what);
    }
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------

// Two passes over the same calls: with base NULL only the offsets are
// counted (the size of the device allocation); then every tensor is
// converted into a pinned staging buffer and copied (two buffers, so that
// converting one overlaps copying the other).
typedef struct uploader {
    clip_gpu *g;
    char *base;
    size_t off;
    void *stage[2];
    cudaEvent_t ev[2];
    int cur;
    sl_status st;
} uploader;

static void *up_alloc(uploader *u, size_t bytes) {
    size_t o = u->off, r = round_up(bytes);
    if (bytes == SIZE_MAX || r < bytes || o > SIZE_MAX - r) {
        u->off = SIZE_MAX;
        return NULL;
    }
    u->off = o + r;
    return u->base ? u->base + o : NULL;
}

// dst [rows, cols] (BF16 when to_bf16, else F32) = src [rows, cols], or the
// transpose of src [cols, rows] when `transpose`.
static void up_put(uploader *u, void *dst, const float *src, size_t rows, size_t cols,
                   int transpose, int to_bf16) {
    if (!u->base || u->st || !dst) return;
    clip_gpu *g = u->g;
    const size_t es = to_bf16 ? 2 : 4, per = STAGE_BYTES / es, total = rows * cols;
    for (size_t e0 = 0; e0 < total; e0 += per) {
        const size_t cnt = total - e0 < per ? total - e0 : per;
        const int i = u->cur;
        u->cur ^= 1;
        cudaError_t e = cudaEventSynchronize(u->ev[i]);
        if (e != cudaSuccess) {
            u->st = cu_fail(g->dev, e, "uploading weights: event synchronize");
            return;
        }
        for (size_t k = 0; k < cnt; k++) {
            const size_t el = e0 + k;
            const float v = transpose ? src[(el % cols) * rows + el / cols] : src[el];
            if (to_bf16)
                ((uint16_t *)u->stage[i])[k] = f32_to_bf16(v);
            else
                ((float *)u->stage[i])[k] = v;
        }
        if ((e = cudaMemcpyAsync((char *)dst + e0 * es, u->stage[i], cnt * es,
                                 cudaMemcpyHostToDevice, g->stream)) != cudaSuccess ||
            (e = cudaEventRecord(u->ev[i], g->stream)) != cudaSuccess) {
            u->st = cu_fail(g->dev, e, "uploading weights: copy to device");
            return;
        }
    }
}

static const void *up_tensor(uploader *u, const float *src, size_t rows, size_t cols, int transpose,
                             int to_bf16) {
    void *d = up_alloc(u, mul2(mul2(rows, cols), to_bf16 ? 2 : 4));
    up_put(u, d, src, rows, cols, transpose, to_bf16);
    return d;
}

static const float *up_f32(uploader *u, const float *src, size_t count) {
    return (const float *)up_tensor(u, src, 1, count, 0, 0);
}

static void up_blocks(uploader *u, gblock *gb, const clip_block_w *bw, const sl_tower_config *tc) {
    const int wb = u->g->bf16;
    const size_t W = (size_t)tc->width, M = (size_t)tc->mlp_width, es = wb ? 2 : 4;
    for (int l = 0; l < tc->layers; l++) {
        const clip_block_w *k = &bw[l];
        gblock *d = &gb[l];
        d->ln1_w = up_f32(u, k->ln1_w, W);
        d->ln1_b = up_f32(u, k->ln1_b, W);
        // [Wq; Wk; Wv] -> one [3W, W] (whether or not the file stores them fused)
        void *qw = up_alloc(u, mul3(3 * W, W, es));
        up_put(u, qw, k->q_w, W, W, 0, wb);
        up_put(u, at(qw, W * W * es), k->k_w, W, W, 0, wb);
        up_put(u, at(qw, 2 * W * W * es), k->v_w, W, W, 0, wb);
        d->qkv_w = qw;
        void *qb = up_alloc(u, 3 * W * es);
        up_put(u, qb, k->q_b, 1, W, 0, wb);
        up_put(u, at(qb, W * es), k->k_b, 1, W, 0, wb);
        up_put(u, at(qb, 2 * W * es), k->v_b, 1, W, 0, wb);
        d->qkv_b = qb;
        d->o_w = up_tensor(u, k->o_w, W, W, 0, wb);
        d->o_b = up_f32(u, k->o_b, W);
        d->ln2_w = up_f32(u, k->ln2_w, W);
        d->ln2_b = up_f32(u, k->ln2_b, W);
        d->fc1_w = up_tensor(u, k->fc1_w, M, W, 0, wb);
        d->fc1_b = up_tensor(u, k->fc1_b, 1, M, 0, wb);
        d->fc2_w = up_tensor(u, k->fc2_w, W, M, 0, wb);
        d->fc2_b = up_f32(u, k->fc2_b, W);
    }
}

static void up_weights(uploader *u, const clip_weights *w) {
    clip_gpu *g = u->g;
    const sl_clip_config *c = &g->cfg;
    const int wb = g->bf16;
    const size_t Wv = (size_t)c->vision.width, Wt = (size_t)c->text.width;
    const size_t D = (size_t)c->embed_dim, p = (size_t)c->patch_size;
    const size_t Tv = (size_t)sl_clip_num_patches(c) + 1, ctx = (size_t)c->context_length;
    // patch weight [Wv, 3p^2] as [Wv, kp] with zero columns kk .. kp-1
    const size_t kk = 3 * p * p, kp = (size_t)patch_k_padded((int)p);
    void *pw = up_alloc(u, mul3(Wv, kp, wb ? 2 : 4));
    if (u->base && pw && !u->st) {
        if (kp == kk) {
            up_put(u, pw, w->patch_w, Wv, kk, 0, wb);
        } else {
            float *tmp = (float *)calloc(Wv * kp, sizeof(float));
            if (!tmp) {
                u->st = sl_set_error(SL_ERR_NOMEM, "cuda:%d: %s: out of memory", g->dev, g->path);
            } else {
                for (size_t r = 0; r < Wv; r++)
                    memcpy(tmp + r * kp, w->patch_w + r * kk, sizeof(float) * kk);
                up_put(u, pw, tmp, Wv, kp, 0, wb); // reads tmp on the host only
                free(tmp);
            }
        }
    }
    g->patch_w = pw;
    g->cls = up_f32(u, w->cls, Wv);
    g->v_pos = up_f32(u, w->v_pos, mul2(Tv, Wv));
    g->pre_w = up_f32(u, w->pre_w, Wv);
    if (g->reg_side) {
        const size_t gr = (size_t)(g->reg_side / c->patch_size);
        g->r_pos = up_f32(u, g->r_pos_host, mul2(gr * gr + 1, Wv));
    }
    g->pre_b = up_f32(u, w->pre_b, Wv);
    up_blocks(u, g->vb, w->v_blocks, &c->vision);
    g->post_w = up_f32(u, w->post_w, Wv);
    g->post_b = up_f32(u, w->post_b, Wv);
    // projections as [D, W] (nn.Linear layout); [W, D] files are transposed
    g->v_proj = up_tensor(u, w->v_proj, D, Wv, w->v_proj_kn, wb);
    g->tok = up_tensor(u, w->tok, (size_t)c->vocab_size, Wt, 0, wb);
    g->t_pos = up_f32(u, w->t_pos, mul2(ctx, Wt));
    up_blocks(u, g->tb, w->t_blocks, &c->text);
    g->final_w = up_f32(u, w->final_w, Wt);
    g->final_b = up_f32(u, w->final_b, Wt);
    g->t_proj = up_tensor(u, w->t_proj, D, Wt, w->t_proj_kn, wb);
}

// ---------------------------------------------------------------------------
// Activation workspace
// ---------------------------------------------------------------------------

typedef struct sizes {
    size_t x, ln, qkv, att, hid, proj, xc, lnc, attc, hidc, outc, pix, ints, out;
} sizes;

// Bytes of every buffer for the chunk bounds in g.
static void act_sizes(const clip_gpu *g, sizes *z) {
    const sl_clip_config *c = &g->cfg;
    const size_t es = g->bf16 ? 2 : 4;
    const size_t Wv = (size_t)c->vision.width, Mv = (size_t)c->vision.mlp_width;
    const size_t Wt = (size_t)c->text.width, Mt = (size_t)c->text.mlp_width;
    const size_t D = (size_t)c->embed_dim, p = (size_t)c->patch_size, S = (size_t)c->image_size;
    const size_t P0 = (size_t)sl_clip_num_patches(c), kk = (size_t)patch_k_padded((int)p);
    // Image chunks and region-pass chunks share the buffers: each bound is
    // the larger of the two (rows, patch rows, images, pixels).
    size_t ni = (size_t)g->img_chunk, Ri = ni * (P0 + 1), nP = ni * P0, npx = mul3(ni, S, S);
    if (g->reg_side) {
        const size_t Sr = (size_t)g->reg_side, gr = Sr / p, nr = (size_t)g->reg_chunk;
        Ri = max2(Ri, nr * (gr * gr + 1));
        nP = max2(nP, nr * gr * gr);
        npx = max2(npx, mul3(nr, Sr, Sr));
        ni = max2(ni, nr);
    }
    const size_t nt = (size_t)g->seqs_cap, Rt = (size_t)g->rows_cap;
    const size_t rw = max2(mul2(Ri, Wv), mul2(Rt, Wt));
    z->x = mul2(rw, 4);
    z->ln = mul2(rw, es);
    z->att = mul2(rw, es);
    z->qkv = max2(max2(mul3(Ri, 3 * Wv, es), mul3(nP, Wv, 4)), mul3(Rt, 3 * Wt, es));
    z->hid = max2(max2(mul3(Ri, Mv, es), mul3(nP, kk, es)), mul3(Rt, Mt, es));
    z->proj = mul3(max2(Ri, Rt), D, 4);
    const size_t nw = max2(ni * Wv, nt * Wt);
    z->xc = mul2(nw, 4);
    z->lnc = mul2(nw, es);
    z->attc = mul2(nw, es);
    z->hidc = mul2(max2(ni * Mv, nt * Mt), es);
    z->outc = mul3(max2(ni, nt), D, 4);
    z->pix = mul3(npx, 3, 4);
    z->ints = mul2(4 * max2(ni, nt) + 2 * max2(Ri, Rt), 4);
    z->out = mul3(max2(ni, nt) + max2(Ri, Rt), D, 4);
}

// Carve the device buffers from base (NULL: measure). SIZE_MAX on overflow.
static size_t act_carve(clip_gpu *g, const sizes *z, char *base) {
    uploader u;
    memset(&u, 0, sizeof u);
    u.base = base;
    g->x = (float *)up_alloc(&u, z->x);
    g->ln = up_alloc(&u, z->ln);
    g->qkv = up_alloc(&u, z->qkv);
    g->att = up_alloc(&u, z->att);
    g->hid = up_alloc(&u, z->hid);
    g->proj = (float *)up_alloc(&u, z->proj);
    g->xc = (float *)up_alloc(&u, z->xc);
    g->lnc = up_alloc(&u, z->lnc);
    g->attc = up_alloc(&u, z->attc);
    g->hidc = up_alloc(&u, z->hidc);
    g->outc = (float *)up_alloc(&u, z->outc);
    g->pix = (float *)up_alloc(&u, z->pix);
    g->ints = (int32_t *)up_alloc(&u, z->ints);
    return u.off;
}

// ---------------------------------------------------------------------------
// Open / free
// ---------------------------------------------------------------------------

void clip_gpu_free(clip_gpu *g) {
    if (!g) return;
    dev_guard d;
    int entered = dev_enter(g->dev, &d) == SL_OK;
    if (g->stream) cudaStreamSynchronize(g->stream);
    for (int i = 0; i < MM_CACHE; i++)
        if (g->mm[i].used || g->mm[i].desc) mm_entry_destroy(&g->mm[i]);
    if (g->lt) cublasLtDestroy(g->lt);
    cudaFree(g->lt_ws);
    cudaFree(g->wmem);
    cudaFree(g->amem);
    if (g->h_pix) cudaFreeHost(g->h_pix);
    if (g->h_ints) cudaFreeHost(g->h_ints);
    if (g->h_out) cudaFreeHost(g->h_out);
    if (g->stream) cudaStreamDestroy(g->stream);
    cudaGetLastError();
    if (entered) dev_leave(&d);
    free(g->h_ql);
    free(g->vb);
    free(g->tb);
    free(g->path);
    free(g);
}

static sl_status gpu_malloc(clip_gpu *g, void **p, size_t bytes, const char *what) {
    char msg[256];
    if (bytes == SIZE_MAX) {
        snprintf(msg, sizeof msg, "%s: %s: size overflow", g->path, what);
        return sl_set_error(SL_ERR_LIMIT, "cuda:%d: %s", g->dev, msg);
    }
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        snprintf(msg, sizeof msg, "%s: cudaMalloc of %zu bytes for %s", g->path, bytes, what);
        return cu_fail(g->dev, e, msg);
    }
    return SL_OK;
}

static sl_status host_malloc(clip_gpu *g, void **p, size_t bytes, const char *what) {
    char msg[256];
    if (bytes == SIZE_MAX) {
        snprintf(msg, sizeof msg, "%s: %s: size overflow", g->path, what);
        return sl_set_error(SL_ERR_LIMIT, "cuda:%d: %s", g->dev, msg);
    }
    cudaError_t e = cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        *p = NULL;
        snprintf(msg, sizeof msg, "%s: cudaHostAlloc of %zu pinned bytes for %s", g->path, bytes,
                 what);
        return cu_fail(g->dev, e, msg);
    }
    return SL_OK;
}

// Upload the weights (two passes: measure, copy).
static sl_status upload_weights(clip_gpu *g, const clip_weights *w) {
    uploader u;
    memset(&u, 0, sizeof u);
    u.g = g;
    up_weights(&u, w);
    const size_t bytes = u.off;
    sl_status st = gpu_malloc(g, &g->wmem, bytes, "the weights");
    if (st) return st;
    memset(&u, 0, sizeof u);
    u.g = g;
    u.base = (char *)g->wmem;
    for (int i = 0; i < 2 && !st; i++) {
        st = host_malloc(g, &u.stage[i], STAGE_BYTES, "weight staging");
        if (!st) {
            cudaError_t e = cudaEventCreateWithFlags(&u.ev[i], cudaEventDisableTiming);
            if (e != cudaSuccess) {
                u.ev[i] = NULL;
                st = cu_fail(g->dev, e, "create event");
            }
        }
    }
    if (!st) {
        up_weights(&u, w);
        st = u.st;
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (!st && e != cudaSuccess) st = cu_fail(g->dev, e, "uploading weights");
    } else {
        cudaStreamSynchronize(g->stream);
    }
    for (int i = 0; i < 2; i++) {
        if (u.ev[i]) cudaEventDestroy(u.ev[i]);
        if (u.stage[i]) cudaFreeHost(u.stage[i]);
    }
    return st;
}

static int head_dim_ok(const sl_tower_config *t) {
    return t->heads > 0 && t->width % t->heads == 0 &&
           t->width / t->heads <= SL_CU_ATT_MAX_HEAD_DIM;
}

// Images per chunk at input side S: bounded by images, rows and pixel bytes.
static int chunk_images(int S, int p) {
    const size_t g = (size_t)(S / p), T = g * g + 1;
    size_t ni = CLIP_GPU_MAX_IMAGES;
    if (CLIP_GPU_MAX_ROWS / T < ni) ni = CLIP_GPU_MAX_ROWS / T;
    const size_t per_image = mul3(3, mul2((size_t)S, (size_t)S), sizeof(float));
    if (CLIP_GPU_MAX_PIXEL_BYTES / per_image < ni) ni = CLIP_GPU_MAX_PIXEL_BYTES / per_image;
    return ni < 1 ? 1 : (int)ni;
}

sl_status clip_gpu_open(int dev, int bf16, const sl_clip_config *cfg, const clip_weights *w,
                        const float *region_pos, const char *path, clip_gpu **out) {
    if (out) *out = NULL;
    if (!cfg || !w || !out)
        return sl_set_error(SL_ERR_INVALID, "clip_gpu_open: cfg, weights and out are required");
    if (!path) path = "(model)";
    sl_status dst = sl_cuda_check_device(dev);
    if (dst) return sl_wrap_error(dst, "%s: ", path);
    if (!head_dim_ok(&cfg->vision) || !head_dim_ok(&cfg->text))
        return sl_set_error(
            SL_ERR_UNSUPPORTED,
            "cuda:%d: %s: head dimension (vision %d, text %d) above %d is not "
            "supported by the GPU attention kernel",
            dev, path, cfg->vision.width / (cfg->vision.heads ? cfg->vision.heads : 1),
            cfg->text.width / (cfg->text.heads ? cfg->text.heads : 1), SL_CU_ATT_MAX_HEAD_DIM);
    const int P = sl_clip_num_patches(cfg);
    if (P < 1 || cfg->context_length < 1 || cfg->context_length > CLIP_GPU_MAX_ROWS ||
        cfg->embed_dim < 1 || cfg->vocab_size < 1)
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: %s: invalid model configuration", dev, path);
    const int Sr = cfg->region_size ? cfg->region_size : cfg->image_size;
    const int has_region = region_pos && Sr != cfg->image_size;
    if (has_region && (Sr < cfg->patch_size || Sr > 4096 || Sr % cfg->patch_size))
        return sl_set_error(SL_ERR_INVALID,
                            "cuda:%d: %s: region size %d must be a multiple of the patch size %d "
                            "(at most 4096)",
                            dev, path, Sr, cfg->patch_size);

    dev_guard d;
    sl_status st = dev_enter(dev, &d);
    if (st) return st;
    cudaError_t e = sl_cu_probe();
    if (e != cudaSuccess) {
        cudaDeviceProp prop;
        int major = 0, minor = 0;
        char name[256] = "?";
        if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
            major = prop.major;
            minor = prop.minor;
            snprintf(name, sizeof name, "%s", prop.name);
        }
        cudaGetLastError();
        dev_leave(&d);
        return sl_set_error(SL_ERR_UNSUPPORTED,
                            "cuda:%d (%s, sm_%d%d): this build of sightline has no kernels for "
                            "it (rebuild with CMAKE_CUDA_ARCHITECTURES including %d%d): %s",
                            dev, name, major, minor, major, minor, cudaGetErrorString(e));
    }

    clip_gpu *g = (clip_gpu *)calloc(1, sizeof *g);
    if (!g) {
        dev_leave(&d);
        return sl_set_error(SL_ERR_NOMEM, "cuda:%d: %s: out of memory", dev, path);
    }
    g->dev = dev;
    g->bf16 = bf16 ? 1 : 0;
    g->cfg = *cfg;
    g->patch_value = cfg->patch_tokens != SL_PATCH_TOKENS_FINAL;
    if (has_region) {
        g->reg_side = Sr;
        g->r_pos_host = region_pos;
    }
    g->path = strdup(path);
    g->vb = (gblock *)calloc((size_t)cfg->vision.layers, sizeof(gblock));
    g->tb = (gblock *)calloc((size_t)cfg->text.layers, sizeof(gblock));
    if (!g->path || !g->vb || !g->tb) {
        st = sl_set_error(SL_ERR_NOMEM, "cuda:%d: %s: out of memory", dev, path);
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        g->stream = NULL;
        st = cu_fail(dev, e, "create stream");
        goto fail;
    }
    {
        cublasStatus_t s = cublasLtCreate(&g->lt);
        if (s) {
            g->lt = NULL;
            st = lt_fail(dev, s, "cublasLtCreate");
            goto fail;
        }
    }
    if ((st = gpu_malloc(g, &g->lt_ws, LT_WORKSPACE_BYTES, "the cuBLASLt workspace"))) goto fail;
    st = upload_weights(g, w);
    g->r_pos_host = NULL; // the caller's; not kept
    if (st) goto fail;

    // Chunk bounds and the activation workspace.
    {
        g->img_chunk = chunk_images(cfg->image_size, cfg->patch_size);
        if (g->reg_side) g->reg_chunk = chunk_images(g->reg_side, cfg->patch_size);
        g->rows_cap = CLIP_GPU_MAX_ROWS; // >= context_length (checked above)
        g->seqs_cap = CLIP_GPU_MAX_SEQS;
        sizes z;
        act_sizes(g, &z);
        const size_t abytes = act_carve(g, &z, NULL);
        if ((st = gpu_malloc(g, &g->amem, abytes, "the activations"))) goto fail;
        act_carve(g, &z, (char *)g->amem);
        if ((st = host_malloc(g, (void **)&g->h_pix, z.pix, "input pixels")) ||
            (st = host_malloc(g, (void **)&g->h_ints, z.ints, "row metadata")) ||
            (st = host_malloc(g, (void **)&g->h_out, z.out, "outputs")))
            goto fail;
        g->out_cap = z.out / sizeof(float);
        g->h_ql = (int32_t *)malloc(sizeof(int32_t) * 2 * (size_t)g->seqs_cap);
        if (!g->h_ql) {
            st = sl_set_error(SL_ERR_NOMEM, "cuda:%d: %s: out of memory", dev, path);
            goto fail;
        }
    }
    dev_leave(&d);
    *out = g;
    return SL_OK;
fail:
    dev_leave(&d);
    clip_gpu_free(g);
    return st;
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

#define KCHECK(call, what)                                                                         \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cu_fail(g->dev, e_, what);                                   \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        sl_status st_ = (call);                                                                    \
        if (st_) return st_;                                                                       \
    } while (0)

// The rows of one chunk: R rows in n sequences (device arrays).
typedef struct rows_desc {
    int R, n, maxlen;
    const int *start, *len, *qrow, *idx;
} rows_desc;

// hid [rows, M] = act(ln [rows, W] . W1^T + b1)
static sl_status mlp_up(clip_gpu *g, void *hid, const void *ln, const gblock *k,
                        const sl_tower_config *tc, int rows) {
    const int W = tc->width, M = tc->mlp_width;
    int lt_gelu = SL_GPU_LT_GELU && tc->act == SL_ACT_GELU_TANH && !g->no_lt_gelu;
    sl_status st = mm(g, hid, 0, M, ln, W, k->fc1_w, k->fc1_b, lt_gelu, rows, M, W, 0);
    if (st == SL_ERR_UNSUPPORTED && lt_gelu) {
        // No GELU_BIAS algorithm for these types: BIAS + our kernel from now on.
        g->no_lt_gelu = 1;
        lt_gelu = 0;
        st = mm(g, hid, 0, M, ln, W, k->fc1_w, k->fc1_b, 0, rows, M, W, 0);
    }
    if (st) return st;
    if (!lt_gelu)
        KCHECK(sl_cu_act(hid, g->bf16, (size_t)rows * (size_t)M, (int)tc->act, g->stream),
               "activation kernel");
    return SL_OK;
}

// The blocks of one tower over g->x [R, W]. pooled_only: the last block
// finishes only rows idx (queries qrow) into g->xc [n, W]. *pending: the
// bias still to add to the stream (the last fc2's).
static sl_status tower_blocks(clip_gpu *g, const gblock *blocks, const sl_tower_config *tc,
                              const rows_desc *r, int causal, int pooled_only,
                              const float **pending_out) {
    const int W = tc->width, M = tc->mlp_width, bf = g->bf16;
    const float eps = tc->ln_eps;
    const float *pending = NULL;
    for (int l = 0; l < tc->layers; l++) {
        const gblock *k = &blocks[l];
        const int last = l == tc->layers - 1;
        KCHECK(
            sl_cu_layernorm(g->ln, bf, g->x, pending, k->ln1_w, k->ln1_b, r->R, W, eps, g->stream),
            "layernorm kernel");
        TRY(mm(g, g->qkv, 0, 3 * W, g->ln, W, k->qkv_w, k->qkv_b, 0, r->R, 3 * W, W, 0));
        if (!(pooled_only && last)) {
            KCHECK(sl_cu_attention(g->att, g->qkv, bf, r->start, r->len, NULL, r->n, r->maxlen, W,
                                   tc->heads, causal, g->stream),
                   "attention kernel");
            TRY(mm(g, g->x, 1, W, g->att, W, k->o_w, NULL, 0, r->R, W, W, 1));
            KCHECK(sl_cu_layernorm(g->ln, bf, g->x, k->o_b, k->ln2_w, k->ln2_b, r->R, W, eps,
                                   g->stream),
                   "layernorm kernel");
            TRY(mlp_up(g, g->hid, g->ln, k, tc, r->R));
            TRY(mm(g, g->x, 1, W, g->hid, M, k->fc2_w, NULL, 0, r->R, W, M, 1));
        } else {
            KCHECK(sl_cu_attention(g->attc, g->qkv, bf, r->start, r->len, r->qrow, r->n, r->maxlen,
                                   W, tc->heads, causal, g->stream),
                   "attention kernel (pooled rows)");
            KCHECK(sl_cu_gather_rows(g->xc, g->x, r->idx, r->n, W, g->stream), "gather kernel");
            TRY(mm(g, g->xc, 1, W, g->attc, W, k->o_w, NULL, 0, r->n, W, W, 1));
            KCHECK(sl_cu_layernorm(g->lnc, bf, g->xc, k->o_b, k->ln2_w, k->ln2_b, r->n, W, eps,
                                   g->stream),
                   "layernorm kernel");
            TRY(mlp_up(g, g->hidc, g->lnc, k, tc, r->n));
            TRY(mm(g, g->xc, 1, W, g->hidc, M, k->fc2_w, NULL, 0, r->n, W, M, 1));
        }
        pending = k->fc2_b;
    }
    *pending_out = pending;
    return SL_OK;
}

// Wait for the chunk; report asynchronous failures.
static sl_status chunk_sync(clip_gpu *g, const char *tower) {
    cudaError_t e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) {
        char what[128];
        snprintf(what, sizeof what, "%s tower forward", tower);
        return cu_fail(g->dev, e, what);
    }
    return SL_OK;
}

// One chunk of m images [m, 3, S, S] with position table pos [(S/p)^2 + 1,
// W] (device): h_out gets out [m, D] then (patches) every row [m*T, D]
// (FINAL) or every row of the value path [m*T, D] (VALUE). out NULL: the
// pooled embeddings are not wanted (the region pass; patches then required).
static sl_status images_chunk(clip_gpu *g, const float *pixels, int m, int S, const float *pos,
                              float *out, float *patches) {
    const sl_clip_config *c = &g->cfg;
    const sl_tower_config *tc = &c->vision;
    const int W = tc->width, D = c->embed_dim, p = c->patch_size, gs = S / p;
    const int P = gs * gs, T = P + 1, R = m * T, kk = patch_k_padded(p);
    const int bf = g->bf16;
    const size_t px = (size_t)m * 3 * (size_t)S * (size_t)S;
    int32_t *hi = g->h_ints;
    for (int b = 0; b < m; b++) {
        hi[b] = b * T;         // start
        hi[m + b] = T;         // len
        hi[2 * m + b] = 0;     // qrow
        hi[3 * m + b] = b * T; // idx
    }
    memcpy(g->h_pix, pixels, px * sizeof(float));
    KCHECK(cudaMemcpyAsync(g->pix, g->h_pix, px * sizeof(float), cudaMemcpyHostToDevice, g->stream),
           "copy pixels to device");
    KCHECK(cudaMemcpyAsync(g->ints, hi, sizeof(int32_t) * 4 * (size_t)m, cudaMemcpyHostToDevice,
                           g->stream),
           "copy row metadata to device");
    rows_desc r = {R, m, T, g->ints, g->ints + m, g->ints + 2 * m, g->ints + 3 * m};
    // Patch conv: hid = im2col; conv [m*P, W] (F32, in the qkv buffer) = hid . Wpatch^T
    KCHECK(sl_cu_im2col(g->hid, kk, bf, g->pix, m, 3, S, p, g->stream), "im2col kernel");
    float *conv = (float *)g->qkv;
    TRY(mm(g, conv, 1, W, g->hid, kk, g->patch_w, NULL, 0, m * P, W, kk, 0));
    KCHECK(sl_cu_vision_embed(g->x, conv, g->cls, pos, m, P, W, g->stream), "embedding kernel");
    KCHECK(sl_cu_layernorm(g->x, 0, g->x, NULL, g->pre_w, g->pre_b, R, W, tc->ln_eps, g->stream),
           "layernorm kernel");
    const int value = patches && g->patch_value;
    const int pooled_only = !patches || value;
    const float *pending = NULL;
    TRY(tower_blocks(g, g->vb, tc, &r, 0, pooled_only, &pending));
    const size_t DD = (size_t)D;
    if (pooled_only) {
        // out [m, D] = LN_post(xc += pending) . proj
        if (out) {
            KCHECK(sl_cu_layernorm(g->lnc, bf, g->xc, pending, g->post_w, g->post_b, m, W,
                                   tc->ln_eps, g->stream),
                   "layernorm kernel");
            TRY(mm(g, g->outc, 1, D, g->lnc, W, g->v_proj, NULL, 0, m, D, W, 0));
            KCHECK(cudaMemcpyAsync(g->h_out, g->outc, sizeof(float) * (size_t)m * DD,
                                   cudaMemcpyDeviceToHost, g->stream),
                   "copy embeddings to host");
        }
        if (value) {
            // Value path of the last block: x = V . Wo^T (V = the last third
            // of its qkv, still in place), LN_post(x += bo), projection.
            const gblock *k = &g->vb[tc->layers - 1];
            const size_t es = bf ? 2 : 4;
            const void *v = (const char *)g->qkv + 2 * (size_t)W * es;
            TRY(mm(g, g->x, 1, W, v, 3 * W, k->o_w, NULL, 0, R, W, W, 0));
            KCHECK(sl_cu_layernorm(g->ln, bf, g->x, k->o_b, g->post_w, g->post_b, R, W, tc->ln_eps,
                                   g->stream),
                   "layernorm kernel");
            TRY(mm(g, g->proj, 1, D, g->ln, W, g->v_proj, NULL, 0, R, D, W, 0));
            KCHECK(cudaMemcpyAsync(g->h_out + (size_t)m * DD, g->proj,
                                   sizeof(float) * (size_t)R * DD, cudaMemcpyDeviceToHost,
                                   g->stream),
                   "copy patch embeddings to host");
        }
        TRY(chunk_sync(g, "image"));
        if (out) memcpy(out, g->h_out, sizeof(float) * (size_t)m * DD);
        if (value)
            for (int b = 0; b < m; b++)
                memcpy(patches + (size_t)b * P * DD,
                       g->h_out + ((size_t)m + (size_t)b * T + 1) * DD,
                       sizeof(float) * (size_t)P * DD);
        return SL_OK;
    }
    // Every row: proj [R, D] = LN_post(x += pending) . proj, then split.
    KCHECK(sl_cu_layernorm(g->ln, bf, g->x, pending, g->post_w, g->post_b, R, W, tc->ln_eps,
                           g->stream),
           "layernorm kernel");
    TRY(mm(g, g->proj, 1, D, g->ln, W, g->v_proj, NULL, 0, R, D, W, 0));
    KCHECK(cudaMemcpyAsync(g->h_out, g->proj, sizeof(float) * (size_t)R * DD,
                           cudaMemcpyDeviceToHost, g->stream),
           "copy embeddings to host");
    TRY(chunk_sync(g, "image"));
    for (int b = 0; b < m; b++) {
        const float *rows = g->h_out + (size_t)b * T * DD;
        if (out) memcpy(out + (size_t)b * DD, rows, sizeof(float) * DD);
        memcpy(patches + (size_t)b * P * DD, rows + DD, sizeof(float) * (size_t)P * DD);
    }
    return SL_OK;
}

sl_status clip_gpu_forward_images(clip_gpu *g, const float *pixels, int n, float *out,
                                  float *patches) {
    if (!g) return sl_set_error(SL_ERR_INVALID, "clip_gpu_forward_images: no GPU model");
    if (n < 0 || (n > 0 && (!pixels || !out)))
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: forward images: bad arguments (n %d)", g->dev,
                            n);
    if (n == 0) return SL_OK;
    const sl_clip_config *c = &g->cfg;
    const size_t S = (size_t)c->image_size, D = (size_t)c->embed_dim;
    const size_t P = (size_t)sl_clip_num_patches(c), per_image = 3 * S * S;
    dev_guard d;
    sl_status st = dev_enter(g->dev, &d);
    if (st) return st;
    for (int i = 0; i < n && !st; i += g->img_chunk) {
        const int m = n - i < g->img_chunk ? n - i : g->img_chunk;
        st = images_chunk(g, pixels + (size_t)i * per_image, m, c->image_size, g->v_pos,
                          out + (size_t)i * D, patches ? patches + (size_t)i * P * D : NULL);
    }
    if (st) cudaStreamSynchronize(g->stream); // leave nothing in flight on the buffers
    dev_leave(&d);
    return st;
}

sl_status clip_gpu_forward_regions(clip_gpu *g, const float *pixels, int n, float *patches) {
    if (!g) return sl_set_error(SL_ERR_INVALID, "clip_gpu_forward_regions: no GPU model");
    if (!g->reg_side)
        return sl_set_error(SL_ERR_INVALID,
                            "cuda:%d: %s: forward regions: opened without a region size other "
                            "than the image size (or without its position table)",
                            g->dev, g->path);
    if (n < 0 || (n > 0 && (!pixels || !patches)))
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: forward regions: bad arguments (n %d)",
                            g->dev, n);
    if (n == 0) return SL_OK;
    const size_t Sr = (size_t)g->reg_side, D = (size_t)g->cfg.embed_dim;
    const size_t gr = Sr / (size_t)g->cfg.patch_size, Pr = gr * gr, per_image = 3 * Sr * Sr;
    dev_guard d;
    sl_status st = dev_enter(g->dev, &d);
    if (st) return st;
    for (int i = 0; i < n && !st; i += g->reg_chunk) {
        const int m = n - i < g->reg_chunk ? n - i : g->reg_chunk;
        st = images_chunk(g, pixels + (size_t)i * per_image, m, g->reg_side, g->r_pos, NULL,
                          patches + (size_t)i * Pr * D);
    }
    if (st) cudaStreamSynchronize(g->stream);
    dev_leave(&d);
    return st;
}

// One chunk of m sequences (rows and pooled positions already in h_ints:
// start, len, qrow, idx [m] each, then rowtok, rowpos [R] each).
static sl_status texts_chunk(clip_gpu *g, int m, int R, int maxlen, float *out, float *tokens_out) {
    const sl_clip_config *c = &g->cfg;
    const sl_tower_config *tc = &c->text;
    const int W = tc->width, D = c->embed_dim, bf = g->bf16;
    const size_t DD = (size_t)D;
    KCHECK(cudaMemcpyAsync(g->ints, g->h_ints, sizeof(int32_t) * (4 * (size_t)m + 2 * (size_t)R),
                           cudaMemcpyHostToDevice, g->stream),
           "copy row metadata to device");
    const int32_t *di = g->ints;
    rows_desc r = {R, m, maxlen, di, di + m, di + 2 * m, di + 3 * m};
    const int32_t *rowtok = di + 4 * (size_t)m, *rowpos = rowtok + R;
    KCHECK(sl_cu_text_embed(g->x, rowtok, rowpos, g->tok, bf, g->t_pos, R, W, g->stream),
           "embedding kernel");
    const int pooled_only = tokens_out == NULL;
    const float *pending = NULL;
    TRY(tower_blocks(g, g->tb, tc, &r, 1, pooled_only, &pending));
    if (pooled_only) {
        KCHECK(sl_cu_layernorm(g->lnc, bf, g->xc, pending, g->final_w, g->final_b, m, W, tc->ln_eps,
                               g->stream),
               "layernorm kernel");
        TRY(mm(g, g->outc, 1, D, g->lnc, W, g->t_proj, NULL, 0, m, D, W, 0));
        KCHECK(cudaMemcpyAsync(g->h_out, g->outc, sizeof(float) * (size_t)m * DD,
                               cudaMemcpyDeviceToHost, g->stream),
               "copy embeddings to host");
        TRY(chunk_sync(g, "text"));
        memcpy(out, g->h_out, sizeof(float) * (size_t)m * DD);
        return SL_OK;
    }
    // tokens_out rows are exactly the packed rows (every sequence ctx long).
    KCHECK(sl_cu_layernorm(g->ln, bf, g->x, pending, g->final_w, g->final_b, R, W, tc->ln_eps,
                           g->stream),
           "layernorm kernel");
    TRY(mm(g, g->proj, 1, D, g->ln, W, g->t_proj, NULL, 0, R, D, W, 0));
    KCHECK(cudaMemcpyAsync(g->h_out, g->proj, sizeof(float) * (size_t)R * DD,
                           cudaMemcpyDeviceToHost, g->stream),
           "copy embeddings to host");
    TRY(chunk_sync(g, "text"));
    memcpy(tokens_out, g->h_out, sizeof(float) * (size_t)R * DD);
    const int32_t *idx = g->h_ints + 3 * (size_t)m;
    for (int s = 0; s < m; s++)
        memcpy(out + (size_t)s * DD, g->h_out + (size_t)idx[s] * DD, sizeof(float) * DD);
    return SL_OK;
}

sl_status clip_gpu_forward_texts(clip_gpu *g, const int32_t *tokens, int n, float *out,
                                 float *tokens_out) {
    if (!g) return sl_set_error(SL_ERR_INVALID, "clip_gpu_forward_texts: no GPU model");
    if (n < 0 || (n > 0 && (!tokens || !out)))
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: forward texts: bad arguments (n %d)", g->dev,
                            n);
    if (n == 0) return SL_OK;
    const sl_clip_config *c = &g->cfg;
    const int ctx = c->context_length;
    const size_t D = (size_t)c->embed_dim;
    // Every id is a row of the embedding table: check them all first.
    for (size_t i = 0; i < (size_t)n * (size_t)ctx; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return sl_set_error(
                SL_ERR_INVALID, "cuda:%d: token id %d at row %zu, position %zu outside [0, %d)",
                g->dev, (int)tokens[i], i / (size_t)ctx, i % (size_t)ctx, c->vocab_size);
    dev_guard d;
    sl_status st = dev_enter(g->dev, &d);
    if (st) return st;
    int i = 0;
    while (i < n && !st) {
        // Sequences while they fit: rows (each up to its pooled position, or
        // ctx with tokens_out) and sequences bounded.
        int m = 0, R = 0, maxlen = 0;
        int32_t *hi = g->h_ints, *ql = g->h_ql;
        while (i + m < n && m < g->seqs_cap) {
            const int32_t *ids = tokens + (size_t)(i + m) * (size_t)ctx;
            const int q = clip_pool_position(c, ids);
            const int L = tokens_out ? ctx : q + 1;
            if (m > 0 && R + L > g->rows_cap) break;
            ql[2 * m] = q;
            ql[2 * m + 1] = L;
            R += L;
            if (L > maxlen) maxlen = L;
            m++;
        }
        // start, len, qrow, idx [m], then rowtok, rowpos [R].
        int32_t *rowtok = hi + 4 * (size_t)m, *rowpos = rowtok + R;
        for (int s = 0, row = 0; s < m; s++) {
            const int q = ql[2 * s], L = ql[2 * s + 1];
            const int32_t *ids = tokens + (size_t)(i + s) * (size_t)ctx;
            hi[s] = row;             // start
            hi[m + s] = L;           // len
            hi[2 * m + s] = q;       // qrow
            hi[3 * m + s] = row + q; // idx
            for (int t = 0; t < L; t++) {
                rowtok[row + t] = ids[t];
                rowpos[row + t] = t;
            }
            row += L;
        }
        st = texts_chunk(g, m, R, maxlen, out + (size_t)i * D,
                         tokens_out ? tokens_out + (size_t)i * (size_t)ctx * D : NULL);
        i += m;
    }
    if (st) cudaStreamSynchronize(g->stream);
    dev_leave(&d);
    return st;
}
