// trainer/model_gpu.cu - one training step of trainer/model.c's model on one
// GPU, F32 or BF16 mixed precision, or on several with NCCL (see
// model_gpu.h).
//
// Layout: the parameter, gradient and AdamW moment buffers are flat with the
// CPU model's offsets; sl_train_params / sl_train_acts hold DEVICE pointers
// here (the same structs as the CPU model, so the op sequence below reads as
// model.c's). The activations are carved by model.c's sl_train_acts_layout
// (256-byte aligned).
//
// The two forward kernels the inference path lacks live here: a LayerNorm
// forward that saves mean / rstd (the arithmetic of transformer.cu's, one
// warp per row) and a bias + activation pass that keeps the pre-activation.
// Everything else is transformer.cuh (attention, im2col, embeddings, gather)
// and train_ops.h (every backward, L2 norm, InfoNCE, AdamW).

#include "trainer/model_gpu.h"

#include "encoder/clip_internal.h"
#include "kernels/cpu/loss_shard.h"
#include "kernels/cuda/train_ops.h"
#include "kernels/cuda/transformer.cuh"
#include "kernels/kernels.h"
#include "sightline/sightline.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sl_gpu_model {
    int dev;
    sl_clip_config cfg;
    int max_batch;
    cudaStream_t stream;
    cublasHandle_t blas; // forward sgemms (the context has its own for the backward)
    sl_cu_train *ctx;
    size_t num_params, num_tensors;
    size_t *t_off, *t_count; // [num_tensors] host copy of the tensor table
    int *t_decay;
    size_t logit_off;              // offset of logit_scale
    float *params, *grads, *m, *v; // device [num_params]
    sl_gpu_precision prec;         // of the matrix products
    uint16_t *params_bf16;         // device [num_params]: BF16 copy (SL_GPU_BF16), else NULL
    sl_train_params p, g;          // device pointers into params / grads
    sl_train_block *blocks_mem;    // host: p's and g's block structs
    void *acts_mem;                // device
    sl_train_acts a;               // device pointers into acts_mem
    sl_train_block_acts *block_acts_mem;
    float *pixels;   // device [max_batch, 3, S, S]
    int32_t *rowtok; // device [max_batch * ctx]: token of each text row
    int32_t *rowpos; // device [max_batch * ctx]: position of each text row
    int32_t *plan;   // device: token plan tok [n] | off [n + 1] | row [n], n = max_batch * ctx
    float *d_loss;   // device [1]
    double *d_norm;  // device [1]
    sl_cu_adam_piece *pieces; // device
    size_t npieces;
    int pieces_decay; // use_decay the pieces were cut with (-1: none yet)
    int64_t t;        // AdamW updates done
    // data parallelism (sl_gpu_model_step_dp), sized for dp_world * max_batch on first use
    int dp_world;
    float *dp_dev;  // device: img_g, txt_g, dimg_g, dtxt_g [N, D] each
    float *dp_host; // host: the same four, then the shard loss's saved and scratch
    // host scratch for the batch's index arrays
    int32_t *h_tok, *h_off, *h_row, *h_rowtok, *h_rowpos;
};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

static sl_status cu_fail(int dev, cudaError_t e, const char *what) {
    cudaGetLastError(); // clear a non-sticky error
    return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: gpu model: %s: %s", dev, what,
                        cudaGetErrorString(e));
}

#define CU(g, expr, what)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = (expr);                                                                   \
        if (e_ != cudaSuccess) return cu_fail((g)->dev, e_, (what));                               \
    } while (0)
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        sl_status st_ = (expr);                                                                    \
        if (st_ != SL_OK) return st_;                                                              \
    } while (0)

// ---------------------------------------------------------------------------
// Forward kernels
// ---------------------------------------------------------------------------

// sl_op_act codes (NONE 0, QUICK_GELU 1, GELU 2, GELU_TANH 3).
__device__ __forceinline__ float fwd_act(float x, int act) {
    switch (act) {
        case SL_OP_ACT_QUICK_GELU:
            return x / (1.f + expf(-1.702f * x));
        case SL_OP_ACT_GELU:
            return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
        case SL_OP_ACT_GELU_TANH:
            return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        default:
            return x;
    }
}

// The epilogue of sl_op_matmul_forward(_train) over the first N columns of
// M rows (leading dimension ld): pre += bias (bias may be NULL); with an
// activation out = act(pre) (pre kept), without one pre is out itself.
__global__ void bias_act_kernel(float *out, float *pre, const float *__restrict__ bias, int M,
                                int N, int ld, int act) {
    const size_t total = (size_t)M * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)N, c = i % (size_t)N, at = r * (size_t)ld + c;
        float v = pre[at];
        if (bias) v += bias[c];
        pre[at] = v;
        if (act != SL_OP_ACT_NONE) out[at] = fwd_act(v, act);
    }
}

static unsigned grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    if (b < 1) b = 1;
    if (b > (size_t)1 << 20) b = (size_t)1 << 20;
    return (unsigned)b;
}

// ---------------------------------------------------------------------------
// Forward ops (host)
// ---------------------------------------------------------------------------

static sl_status ln_fwd(sl_gpu_model *g, float *out, float *mean, float *rstd, float *x,
                        const float *bias, const float *w, const float *b, int N, int C,
                        float eps) {
    if (N <= 0) return SL_OK;
    CU(g, sl_cu_layernorm_stats(out, mean, rstd, x, bias, w, b, N, C, eps, g->stream),
       "layernorm forward");
    return SL_OK;
}

// The BF16 copy of parameter w (a pointer into g->params).
static const uint16_t *bf16_of(const sl_gpu_model *g, const float *w) {
    return g->params_bf16 + (w - g->params);
}

// sl_op_matmul_forward(_train) with W [N, K] (nn.Linear layout): out [M, ldo]
// (= act(pre), pre [M, ldo] = in . W^T + bias when act != NONE, pre NULL
// otherwise); accumulate: out += in . W^T (bias NULL, act NONE). Row-major
// out [M, ldo] is column-major out^T [N, M] (ld ldo) = op_T(W) . in, where
// W [N, K] row-major is column-major [K, N] (ld K) and in [M, ldi] row-major
// is column-major [K, M] (ld ldi): one sgemm(T, N, N, M, K).
static sl_status mm_fwd(sl_gpu_model *g, float *out, int ldo, const float *in, int ldi,
                        const float *w, const float *bias, float *pre, int M, int K, int N,
                        sl_op_act act, int accumulate) {
    if (M <= 0 || N <= 0) return SL_OK;
    float *dst = act != SL_OP_ACT_NONE ? pre : out;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (g->prec == SL_GPU_BF16) {
        uint16_t *inb = NULL;
        TRY(sl_cu_bf16_scratch(g->ctx, 0, (size_t)M * K, &inb));
        TRY(sl_cu_f32_to_bf16_2d(g->ctx, inb, in, M, K, ldi));
        TRY(sl_cu_gemm_bf16(g->ctx, 1, 0, N, M, K, bf16_of(g, w), K, inb, K, beta, dst, ldo));
    } else {
        cublasStatus_t s = cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, K, in,
                                       ldi, &beta, dst, ldo);
        if (s != CUBLAS_STATUS_SUCCESS)
            return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: gpu model: forward sgemm: %s", g->dev,
                                cublasGetStatusString(s));
    }
    if (bias || act != SL_OP_ACT_NONE) {
        const size_t n = (size_t)M * N;
        bias_act_kernel<<<grid_for(n), 256, 0, g->stream>>>(out, dst, bias, M, N, ldo, (int)act);
        CU(g, cudaGetLastError(), "bias / activation forward");
    }
    return SL_OK;
}

// sl_cu_matmul_backward, or its BF16 twin in mixed precision (w_kn 0: W [N, K]).
static sl_status mm_bwd(sl_gpu_model *g, float *din, int lddin, float *dw, float *dbias,
                        float *dpre, const float *dout, int lddo, const float *in, int ldi,
                        const float *w, const float *pre, int M, int K, int N, sl_op_act act) {
    if (g->prec == SL_GPU_BF16)
        return sl_cu_matmul_backward_bf16(g->ctx, din, lddin, dw, dbias, dpre, dout, lddo, in, ldi,
                                          bf16_of(g, w), 0, pre, M, K, N, act);
    return sl_cu_matmul_backward(g->ctx, din, lddin, dw, dbias, dpre, dout, lddo, in, ldi, w, 0,
                                 pre, M, K, N, act);
}

static sl_status dcopy(sl_gpu_model *g, float *dst, const float *src, size_t n) {
    CU(g, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, g->stream),
       "device copy");
    return SL_OK;
}

static sl_status dzero(sl_gpu_model *g, void *dst, size_t bytes) {
    if (!bytes) return SL_OK;
    CU(g, cudaMemsetAsync(dst, 0, bytes, g->stream), "memset");
    return SL_OK;
}

static sl_status upload(sl_gpu_model *g, void *dst, const void *src, size_t bytes) {
    if (!bytes) return SL_OK;
    CU(g, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream), "upload");
    CU(g, cudaStreamSynchronize(g->stream), "upload");
    return SL_OK;
}

static sl_status download(sl_gpu_model *g, void *dst, const void *src, size_t bytes) {
    if (!bytes) return SL_OK;
    CU(g, cudaSetDevice(g->dev), "set device");
    CU(g, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream), "download");
    CU(g, cudaStreamSynchronize(g->stream), "download");
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------

// Point dst's fields (and its blocks) at base + (the CPU pointer's offset in
// the CPU buffer cbase).
static void rebase_params(sl_train_params *dst, const sl_train_params *src, const float *cbase,
                          float *base, int Lv, int Lt) {
#define RB(f) dst->f = base + (src->f - cbase)
    RB(patch_w);
    RB(cls);
    RB(v_pos);
    RB(pre_w);
    RB(pre_b);
    RB(post_w);
    RB(post_b);
    RB(v_proj);
    RB(tok);
    RB(t_pos);
    RB(final_w);
    RB(final_b);
    RB(t_proj);
    RB(logit_scale);
#undef RB
    for (int i = 0; i < Lv + Lt; i++) {
        const sl_train_block *s = i < Lv ? &src->v_blocks[i] : &src->t_blocks[i - Lv];
        sl_train_block *d = i < Lv ? &dst->v_blocks[i] : &dst->t_blocks[i - Lv];
#define RB(f) d->f = base + (s->f - cbase)
        RB(ln1_w);
        RB(ln1_b);
        RB(q_w);
        RB(k_w);
        RB(v_w);
        RB(q_b);
        RB(k_b);
        RB(v_b);
        RB(o_w);
        RB(o_b);
        RB(ln2_w);
        RB(ln2_b);
        RB(fc1_w);
        RB(fc1_b);
        RB(fc2_w);
        RB(fc2_b);
#undef RB
    }
}

// ---------------------------------------------------------------------------
// Create / free
// ---------------------------------------------------------------------------

extern "C" void sl_gpu_model_free(sl_gpu_model *g) {
    if (!g) return;
    cudaSetDevice(g->dev);
    if (g->stream) cudaStreamSynchronize(g->stream);
    cudaFree(g->params);
    cudaFree(g->grads);
    cudaFree(g->m);
    cudaFree(g->v);
    cudaFree(g->params_bf16);
    cudaFree(g->dp_dev);
    free(g->dp_host);
    cudaFree(g->acts_mem);
    cudaFree(g->pixels);
    cudaFree(g->rowtok);
    cudaFree(g->rowpos);
    cudaFree(g->plan);
    cudaFree(g->d_loss);
    cudaFree(g->d_norm);
    cudaFree(g->pieces);
    if (g->ctx) sl_cu_train_destroy(g->ctx);
    if (g->blas) cublasDestroy(g->blas);
    if (g->stream) cudaStreamDestroy(g->stream);
    cudaGetLastError();
    free(g->t_off);
    free(g->t_count);
    free(g->t_decay);
    free(g->blocks_mem);
    free(g->block_acts_mem);
    free(g->h_tok);
    free(g->h_off);
    free(g->h_row);
    free(g->h_rowtok);
    free(g->h_rowpos);
    free(g);
}

static sl_status create(sl_gpu_model *g, const sl_train_model *cpu) {
    const sl_clip_config *c = &g->cfg;
    const int Lv = c->vision.layers, Lt = c->text.layers;
    const size_t nrows = (size_t)g->max_batch * c->context_length;
    CU(g, cudaSetDevice(g->dev), "set device");
    CU(g, cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking), "stream create");
    cublasStatus_t bs = cublasCreate(&g->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(g->blas, g->stream);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(g->blas, CUBLAS_PEDANTIC_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return sl_set_error(SL_ERR_EXTERNAL, "cuda:%d: gpu model: cublas set-up: %s", g->dev,
                            cublasGetStatusString(bs));
    TRY(sl_cu_train_create(g->dev, (void *)g->stream, &g->ctx));

    // host tables
    g->num_params = cpu->num_params;
    g->num_tensors = cpu->num_tensors;
    g->t_off = (size_t *)calloc(g->num_tensors, sizeof(size_t));
    g->t_count = (size_t *)calloc(g->num_tensors, sizeof(size_t));
    g->t_decay = (int *)calloc(g->num_tensors, sizeof(int));
    g->blocks_mem = (sl_train_block *)calloc(2 * (size_t)(Lv + Lt), sizeof(sl_train_block));
    g->block_acts_mem =
        (sl_train_block_acts *)calloc((size_t)(Lv + Lt), sizeof(sl_train_block_acts));
    g->h_tok = (int32_t *)malloc(nrows * sizeof(int32_t));
    g->h_off = (int32_t *)malloc((nrows + 1) * sizeof(int32_t));
    g->h_row = (int32_t *)malloc(nrows * sizeof(int32_t));
    g->h_rowtok = (int32_t *)malloc(nrows * sizeof(int32_t));
    g->h_rowpos = (int32_t *)malloc(nrows * sizeof(int32_t));
    if (!g->t_off || !g->t_count || !g->t_decay || !g->blocks_mem || !g->block_acts_mem ||
        !g->h_tok || !g->h_off || !g->h_row || !g->h_rowtok || !g->h_rowpos)
        return sl_set_error(SL_ERR_NOMEM, "gpu model: out of memory");
    for (size_t i = 0; i < g->num_tensors; i++) {
        g->t_off[i] = cpu->tensors[i].offset;
        g->t_count[i] = cpu->tensors[i].count;
        g->t_decay[i] = cpu->tensors[i].decay;
    }
    g->logit_off = (size_t)(cpu->params.logit_scale - cpu->params_mem);

    // parameters, gradients, moments
    const size_t pbytes = g->num_params * sizeof(float);
    CU(g, cudaMalloc((void **)&g->params, pbytes), "malloc (parameters)");
    CU(g, cudaMalloc((void **)&g->grads, pbytes), "malloc (gradients)");
    CU(g, cudaMalloc((void **)&g->m, pbytes), "malloc (AdamW m)");
    CU(g, cudaMalloc((void **)&g->v, pbytes), "malloc (AdamW v)");
    TRY(upload(g, g->params, cpu->params_mem, pbytes));
    TRY(dzero(g, g->grads, pbytes));
    TRY(dzero(g, g->m, pbytes));
    TRY(dzero(g, g->v, pbytes));
    g->p.v_blocks = g->blocks_mem;
    g->p.t_blocks = g->blocks_mem + Lv;
    g->g.v_blocks = g->blocks_mem + Lv + Lt;
    g->g.t_blocks = g->blocks_mem + 2 * Lv + Lt;
    rebase_params(&g->p, &cpu->params, cpu->params_mem, g->params, Lv, Lt);
    rebase_params(&g->g, &cpu->params, cpu->params_mem, g->grads, Lv, Lt);

    // activations and per-batch buffers
    g->a.v.blocks = g->block_acts_mem;
    g->a.t.blocks = g->block_acts_mem + Lv;
    const size_t abytes = sl_train_acts_layout(&g->cfg, g->max_batch, &g->a, NULL, 256);
    CU(g, cudaMalloc(&g->acts_mem, abytes), "malloc (activations)");
    sl_train_acts_layout(&g->cfg, g->max_batch, &g->a, (char *)g->acts_mem, 256);
    const size_t S = (size_t)c->image_size;
    CU(g, cudaMalloc((void **)&g->pixels, (size_t)g->max_batch * 3 * S * S * sizeof(float)),
       "malloc (pixels)");
    CU(g, cudaMalloc((void **)&g->rowtok, nrows * sizeof(int32_t)), "malloc (text rows)");
    CU(g, cudaMalloc((void **)&g->rowpos, nrows * sizeof(int32_t)), "malloc (text rows)");
    CU(g, cudaMalloc((void **)&g->plan, (3 * nrows + 1) * sizeof(int32_t)), "malloc (token plan)");
    CU(g, cudaMalloc((void **)&g->d_loss, sizeof(float)), "malloc (loss)");
    CU(g, cudaMalloc((void **)&g->d_norm, sizeof(double)), "malloc (norm)");
    CU(g, cudaStreamSynchronize(g->stream), "create (synchronize)");
    return SL_OK;
}

extern "C" sl_status sl_gpu_model_probe(int dev) {
    return sl_cuda_check_device(dev);
}

extern "C" sl_status sl_gpu_model_create(int dev, const sl_train_model *cpu, int max_batch,
                                         sl_gpu_model **out) {
    if (!out) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    *out = NULL;
    TRY(sl_gpu_model_probe(dev));
    if (!cpu) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    if (max_batch < 1 || max_batch > 65536)
        return sl_set_error(SL_ERR_INVALID, "gpu model: max batch %d outside [1, 65536]",
                            max_batch);
    const sl_clip_config *c = &cpu->cfg;
    if (c->vision.width / c->vision.heads > SL_CU_ATT_MAX_HEAD_DIM ||
        c->text.width / c->text.heads > SL_CU_ATT_MAX_HEAD_DIM)
        return sl_set_error(SL_ERR_UNSUPPORTED, "cuda:%d: gpu model: head dimension above %d", dev,
                            SL_CU_ATT_MAX_HEAD_DIM);
    sl_gpu_model *g = (sl_gpu_model *)calloc(1, sizeof *g);
    if (!g) return sl_set_error(SL_ERR_NOMEM, "gpu model: out of memory");
    g->dev = dev;
    g->cfg = cpu->cfg;
    g->max_batch = max_batch;
    g->pieces_decay = -1;
    sl_status st = create(g, cpu);
    if (st != SL_OK) {
        sl_gpu_model_free(g);
        return st;
    }
    *out = g;
    return SL_OK;
}

extern "C" size_t sl_gpu_model_num_params(const sl_gpu_model *g) {
    return g ? g->num_params : 0;
}

extern "C" sl_status sl_gpu_model_download_grads(sl_gpu_model *g, float *grads) {
    if (!g || !grads) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    return download(g, grads, g->grads, g->num_params * sizeof(float));
}

extern "C" sl_status sl_gpu_model_download_params(sl_gpu_model *g, float *params) {
    if (!g || !params) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    return download(g, params, g->params, g->num_params * sizeof(float));
}

extern "C" sl_status sl_gpu_model_download_state(sl_gpu_model *g, float *params, float *m, float *v,
                                                 int64_t *t) {
    if (!g || !params || !m || !v || !t)
        return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    const size_t bytes = g->num_params * sizeof(float);
    TRY(download(g, params, g->params, bytes));
    TRY(download(g, m, g->m, bytes));
    TRY(download(g, v, g->v, bytes));
    *t = g->t;
    return SL_OK;
}

// The BF16 copy from the F32 parameters (mixed precision only).
static sl_status refresh_bf16(sl_gpu_model *g) {
    if (g->prec != SL_GPU_BF16) return SL_OK;
    TRY(sl_cu_f32_to_bf16(g->ctx, g->params_bf16, g->params, g->num_params));
    return sl_cu_train_sync(g->ctx);
}

extern "C" sl_status sl_gpu_model_upload_state(sl_gpu_model *g, const float *params, const float *m,
                                               const float *v, int64_t t) {
    if (!g || !params || !m || !v) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    if (t < 0) return sl_set_error(SL_ERR_INVALID, "gpu model: negative AdamW step count");
    const size_t bytes = g->num_params * sizeof(float);
    CU(g, cudaSetDevice(g->dev), "set device");
    TRY(upload(g, g->params, params, bytes));
    TRY(upload(g, g->m, m, bytes));
    TRY(upload(g, g->v, v, bytes));
    g->t = t;
    return refresh_bf16(g);
}

extern "C" sl_status sl_gpu_model_set_precision(sl_gpu_model *g, sl_gpu_precision p) {
    if (!g) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    if (p != SL_GPU_F32 && p != SL_GPU_BF16)
        return sl_set_error(SL_ERR_INVALID, "gpu model: unknown precision %d", (int)p);
    CU(g, cudaSetDevice(g->dev), "set device");
    if (p == SL_GPU_BF16) {
        int major = 0;
        CU(g, cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, g->dev),
           "device attribute");
        if (major < 8)
            return sl_set_error(SL_ERR_UNSUPPORTED,
                                "cuda:%d: BF16 training needs compute capability 8.0 or newer "
                                "(use cuda-f32)",
                                g->dev);
    }
    if (p == SL_GPU_BF16 && !g->params_bf16)
        CU(g, cudaMalloc((void **)&g->params_bf16, g->num_params * sizeof(uint16_t)),
           "malloc (BF16 parameters)");
    const sl_gpu_precision was = g->prec;
    g->prec = p;
    // F32 steps do not keep the copy current: refresh it on the way back
    if (p == SL_GPU_BF16 && was != SL_GPU_BF16) return refresh_bf16(g);
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Forward (model.c's blocks_forward / head_forward / sl_train_model_forward)
// ---------------------------------------------------------------------------

static sl_status blocks_forward(sl_gpu_model *g, sl_train_tower_acts *ta, const sl_train_block *w,
                                const sl_tower_config *tc, int R, const int *start, const int *len,
                                const int *idx, const int *qrow, int nseq, int maxlen, int causal) {
    const int W = tc->width, M = tc->mlp_width, L = tc->layers;
    const sl_op_act act = clip_op_act(tc->act);
    for (int l = 0; l < L; l++) {
        const sl_train_block *k = &w[l];
        sl_train_block_acts *a = &ta->blocks[l];
        const int last = l + 1 == L, R2 = last ? nseq : R;
        float *next = last ? ta->pooled : ta->blocks[l + 1].res;
        TRY(ln_fwd(g, a->ln1, a->mean1, a->rstd1, a->res, l ? w[l - 1].fc2_b : NULL, k->ln1_w,
                   k->ln1_b, R, W, tc->ln_eps));
        TRY(mm_fwd(g, a->qkv, 3 * W, a->ln1, W, k->q_w, k->q_b, NULL, R, W, 3 * W, SL_OP_ACT_NONE,
                   0));
        CU(g,
           sl_cu_attention(a->att, a->qkv, 0, start, len, last ? qrow : NULL, nseq, maxlen, W,
                           tc->heads, causal, g->stream),
           "attention forward");
        if (last)
            CU(g, sl_cu_gather_rows(a->res2, a->res, idx, nseq, W, g->stream), "gather rows");
        else
            TRY(dcopy(g, a->res2, a->res, (size_t)R * W));
        TRY(mm_fwd(g, a->res2, W, a->att, W, k->o_w, NULL, NULL, R2, W, W, SL_OP_ACT_NONE, 1));
        TRY(ln_fwd(g, a->ln2, a->mean2, a->rstd2, a->res2, k->o_b, k->ln2_w, k->ln2_b, R2, W,
                   tc->ln_eps));
        TRY(mm_fwd(g, a->fc, M, a->ln2, W, k->fc1_w, k->fc1_b, a->fc_pre, R2, W, M, act, 0));
        TRY(dcopy(g, next, a->res2, (size_t)R2 * W));
        TRY(mm_fwd(g, next, W, a->fc, M, k->fc2_w, NULL, NULL, R2, M, W, SL_OP_ACT_NONE, 1));
    }
    return SL_OK;
}

static sl_status head_forward(sl_gpu_model *g, sl_train_tower_acts *ta, const sl_train_block *w,
                              const sl_tower_config *tc, const float *ln_w, const float *ln_b,
                              const float *proj, int B, int D) {
    const int W = tc->width;
    TRY(ln_fwd(g, ta->lnf, ta->meanf, ta->rstdf, ta->pooled, w[tc->layers - 1].fc2_b, ln_w, ln_b, B,
               W, tc->ln_eps));
    TRY(mm_fwd(g, ta->feat, D, ta->lnf, W, proj, NULL, NULL, B, W, D, SL_OP_ACT_NONE, 0));
    return sl_cu_l2_normalize_forward(g->ctx, ta->emb, ta->norm, ta->feat, B, D);
}

// The batch's index arrays (host, then uploaded): sequences, pooled rows,
// text rows packed up to their pooled positions, the token plan.
static sl_status batch_indices(sl_gpu_model *g, const int32_t *tokens, int B, int *Rt_out,
                               int *ntok_out) {
    const sl_clip_config *c = &g->cfg;
    const int ctx = c->context_length, P = sl_clip_num_patches(c), Tv = P + 1;
    int *h = (int *)malloc(8 * (size_t)B * sizeof(int));
    if (!h) return sl_set_error(SL_ERR_NOMEM, "gpu model: out of memory");
    int *v_start = h, *v_len = h + B, *v_idx = h + 2 * B, *t_start = h + 3 * B, *t_len = h + 4 * B,
        *t_idx = h + 5 * B, *v_qrow = h + 6 * B, *t_qrow = h + 7 * B;
    int Rt = 0;
    for (int b = 0; b < B; b++) {
        v_start[b] = b * Tv;
        v_len[b] = Tv;
        v_idx[b] = b * Tv;
        v_qrow[b] = 0;
        const int pos = clip_pool_position(c, tokens + (size_t)b * ctx);
        t_start[b] = Rt;
        t_len[b] = pos + 1;
        t_idx[b] = Rt + pos;
        t_qrow[b] = pos;
        for (int t = 0; t <= pos; t++) {
            g->h_rowtok[Rt + t] = tokens[(size_t)b * ctx + t];
            g->h_rowpos[Rt + t] = t;
        }
        Rt += pos + 1;
    }
    int ntok = 0;
    sl_status st = sl_cu_token_plan(tokens, t_start, t_len, B, ctx, c->vocab_size, g->h_tok,
                                    g->h_off, g->h_row, &ntok);
    sl_train_acts *a = &g->a;
    const size_t ib = (size_t)B * sizeof(int);
    if (st == SL_OK) st = upload(g, a->v_start, v_start, ib);
    if (st == SL_OK) st = upload(g, a->v_len, v_len, ib);
    if (st == SL_OK) st = upload(g, a->v_idx, v_idx, ib);
    if (st == SL_OK) st = upload(g, a->t_start, t_start, ib);
    if (st == SL_OK) st = upload(g, a->t_len, t_len, ib);
    if (st == SL_OK) st = upload(g, a->t_idx, t_idx, ib);
    if (st == SL_OK) st = upload(g, a->v_qrow, v_qrow, ib);
    if (st == SL_OK) st = upload(g, a->t_qrow, t_qrow, ib);
    if (st == SL_OK) st = upload(g, a->ids, tokens, (size_t)B * ctx * sizeof(int32_t));
    if (st == SL_OK) st = upload(g, g->rowtok, g->h_rowtok, (size_t)Rt * sizeof(int32_t));
    if (st == SL_OK) st = upload(g, g->rowpos, g->h_rowpos, (size_t)Rt * sizeof(int32_t));
    // plan: tok [ntok] at 0, off [ntok + 1] at Rt, row [Rt] at 2 Rt + 1
    if (st == SL_OK) st = upload(g, g->plan, g->h_tok, (size_t)ntok * sizeof(int32_t));
    if (st == SL_OK) st = upload(g, g->plan + Rt, g->h_off, ((size_t)ntok + 1) * sizeof(int32_t));
    if (st == SL_OK) st = upload(g, g->plan + 2 * Rt + 1, g->h_row, (size_t)Rt * sizeof(int32_t));
    free(h);
    *Rt_out = Rt;
    *ntok_out = ntok;
    return st;
}

// Both towers up to the L2-normalised embeddings a->v.emb, a->t.emb [B, D].
static sl_status forward(sl_gpu_model *g, int B, int Rt) {
    const sl_clip_config *c = &g->cfg;
    sl_train_acts *a = &g->a;
    const sl_train_params *p = &g->p;
    const int ctx = c->context_length, P = sl_clip_num_patches(c), Tv = P + 1;
    const int Wv = c->vision.width, Wt = c->text.width, D = c->embed_dim, S = c->image_size;
    const int pp = c->patch_size, kk = 3 * pp * pp, Rv = B * Tv;

    // image tower
    CU(g, sl_cu_im2col(a->cols, kk, 0, g->pixels, B, 3, S, pp, g->stream), "im2col");
    TRY(mm_fwd(g, a->patch, Wv, a->cols, kk, p->patch_w, NULL, NULL, B * P, kk, Wv, SL_OP_ACT_NONE,
               0));
    CU(g, sl_cu_vision_embed(a->v_embed, a->patch, p->cls, p->v_pos, B, P, Wv, g->stream),
       "vision embed");
    TRY(ln_fwd(g, a->v.blocks[0].res, a->pre_mean, a->pre_rstd, a->v_embed, NULL, p->pre_w,
               p->pre_b, Rv, Wv, c->vision.ln_eps));
    TRY(blocks_forward(g, &a->v, p->v_blocks, &c->vision, Rv, a->v_start, a->v_len, a->v_idx,
                       a->v_qrow, B, Tv, 0));
    TRY(head_forward(g, &a->v, p->v_blocks, &c->vision, p->post_w, p->post_b, p->v_proj, B, D));

    // text tower
    CU(g,
       sl_cu_text_embed(a->t.blocks[0].res, g->rowtok, g->rowpos, p->tok, 0, p->t_pos, Rt, Wt,
                        g->stream),
       "text embed");
    TRY(blocks_forward(g, &a->t, p->t_blocks, &c->text, Rt, a->t_start, a->t_len, a->t_idx,
                       a->t_qrow, B, ctx, 1));
    return head_forward(g, &a->t, p->t_blocks, &c->text, p->final_w, p->final_b, p->t_proj, B, D);
}

// ---------------------------------------------------------------------------
// Backward (model.c's tower_backward / sl_train_model_backward)
// ---------------------------------------------------------------------------

static sl_status tower_backward(sl_gpu_model *g, sl_train_tower_acts *ta, const sl_train_block *w,
                                sl_train_block *gb, const sl_tower_config *tc, const float *ln_w,
                                float *gln_w, float *gln_b, const float *proj, float *gproj,
                                const float *demb, const int *start, const int *len, const int *idx,
                                const int *qrow, int B, int R, int D, int maxlen, int causal) {
    sl_cu_train *x = g->ctx;
    sl_train_acts *a = &g->a;
    const int W = tc->width, M = tc->mlp_width, L = tc->layers;
    const sl_op_act act = clip_op_act(tc->act);
    const size_t RW = (size_t)R * W, F = sizeof(float);
    TRY(dzero(g, a->d_feat, (size_t)B * D * F));
    TRY(sl_cu_l2_normalize_backward(x, a->d_feat, demb, ta->emb, ta->norm, B, D));
    TRY(dzero(g, a->d_lnf, (size_t)B * W * F));
    TRY(mm_bwd(g, a->d_lnf, W, gproj, NULL, NULL, a->d_feat, D, ta->lnf, W, proj, NULL, B, W, D,
               SL_OP_ACT_NONE));
    TRY(dzero(g, a->d_pool, (size_t)B * W * F));
    TRY(sl_cu_layernorm_backward(x, a->d_pool, gln_w, gln_b, a->d_lnf, ta->pooled, ta->meanf,
                                 ta->rstdf, ln_w, B, W));
    TRY(sl_cu_add_bias_backward(x, gb[L - 1].fc2_b, a->d_pool, B, W));
    for (int l = L - 1; l >= 0; l--) {
        const sl_train_block *k = &w[l];
        sl_train_block *gk = &gb[l];
        sl_train_block_acts *s = &ta->blocks[l];
        const int last = l + 1 == L, R2 = last ? B : R;
        const size_t R2W = (size_t)R2 * W;
        float *dn = last ? a->d_pool : a->d_res;
        // next = res2 + fc . W2^T
        TRY(dzero(g, a->d_fc, (size_t)R2 * M * F));
        TRY(mm_bwd(g, a->d_fc, M, gk->fc2_w, NULL, NULL, dn, W, s->fc, M, k->fc2_w, NULL, R2, M, W,
                   SL_OP_ACT_NONE));
        // fc = act(ln2 . W1^T + b1)
        TRY(dzero(g, a->d_ln, R2W * F));
        TRY(mm_bwd(g, a->d_ln, W, gk->fc1_w, gk->fc1_b, a->d_fc, a->d_fc, M, s->ln2, W, k->fc1_w,
                   s->fc_pre, R2, W, M, act));
        // ln2 = LN2(res2), res2 holding the folded o_b
        TRY(sl_cu_layernorm_backward(x, dn, gk->ln2_w, gk->ln2_b, a->d_ln, s->res2, s->mean2,
                                     s->rstd2, k->ln2_w, R2, W));
        TRY(sl_cu_add_bias_backward(x, gk->o_b, dn, R2, W));
        // res2 = res + att . Wo^T (last: res's pooled rows)
        TRY(dzero(g, a->d_att, R2W * F));
        TRY(mm_bwd(g, a->d_att, W, gk->o_w, NULL, NULL, dn, W, s->att, W, k->o_w, NULL, R2, W, W,
                   SL_OP_ACT_NONE));
        TRY(dzero(g, a->d_qkv, 3 * RW * F));
        TRY(sl_cu_attention_backward(x, a->d_qkv, a->d_att, W, s->qkv, start, len,
                                     last ? qrow : NULL, B, W, tc->heads, causal, maxlen));
        if (last) {
            TRY(dzero(g, a->d_res, RW * F));
            TRY(sl_cu_gather_rows_backward(x, a->d_res, a->d_pool, idx, B, W));
        }
        // qkv = ln1 . Wqkv^T + bqkv
        TRY(dzero(g, a->d_ln, RW * F));
        TRY(mm_bwd(g, a->d_ln, W, gk->q_w, gk->q_b, NULL, a->d_qkv, 3 * W, s->ln1, W, k->q_w, NULL,
                   R, W, 3 * W, SL_OP_ACT_NONE));
        // ln1 = LN1(res), res holding the previous block's folded fc2 bias
        TRY(sl_cu_layernorm_backward(x, a->d_res, gk->ln1_w, gk->ln1_b, a->d_ln, s->res, s->mean1,
                                     s->rstd1, k->ln1_w, R, W));
        if (l > 0) TRY(sl_cu_add_bias_backward(x, gb[l - 1].fc2_b, a->d_res, R, W));
    }
    return SL_OK;
}

// The towers' backward from the embeddings' gradients d_img, d_txt [B, D]
// (device) into the gradient buffer.
static sl_status backward(sl_gpu_model *g, int B, int Rt, int ntok, const float *d_img,
                          const float *d_txt) {
    const sl_clip_config *c = &g->cfg;
    sl_cu_train *x = g->ctx;
    sl_train_acts *a = &g->a;
    const sl_train_params *p = &g->p;
    sl_train_params *gr = &g->g;
    const int D = c->embed_dim, ctx = c->context_length, P = sl_clip_num_patches(c), Tv = P + 1;
    const int Wv = c->vision.width, Wt = c->text.width, pp = c->patch_size, kk = 3 * pp * pp;
    const size_t F = sizeof(float);

    // image tower, LN_pre, embeddings, patch conv
    TRY(tower_backward(g, &a->v, p->v_blocks, gr->v_blocks, &c->vision, p->post_w, gr->post_w,
                       gr->post_b, p->v_proj, gr->v_proj, d_img, a->v_start, a->v_len, a->v_idx,
                       a->v_qrow, B, B * Tv, D, Tv, 0));
    const int Rv = B * Tv;
    TRY(dzero(g, a->d_emb, (size_t)Rv * Wv * F));
    TRY(sl_cu_layernorm_backward(x, a->d_emb, gr->pre_w, gr->pre_b, a->d_res, a->v_embed,
                                 a->pre_mean, a->pre_rstd, p->pre_w, Rv, Wv));
    float *d_patch = a->d_att; // [B * P, Wv]
    TRY(dzero(g, d_patch, (size_t)B * P * Wv * F));
    TRY(sl_cu_vision_embed_backward(x, d_patch, gr->cls, gr->v_pos, a->d_emb, B, P, Wv));
    TRY(mm_bwd(g, NULL, 0, gr->patch_w, NULL, NULL, d_patch, Wv, a->cols, kk, p->patch_w, NULL,
               B * P, kk, Wv, SL_OP_ACT_NONE));

    // text tower, token and position embeddings
    TRY(tower_backward(g, &a->t, p->t_blocks, gr->t_blocks, &c->text, p->final_w, gr->final_w,
                       gr->final_b, p->t_proj, gr->t_proj, d_txt, a->t_start, a->t_len, a->t_idx,
                       a->t_qrow, B, Rt, D, ctx, 1));
    return sl_cu_text_embed_backward(x, gr->tok, gr->t_pos, a->d_res, g->plan, g->plan + Rt,
                                     g->plan + 2 * Rt + 1, ntok, a->t_start, a->t_len, B, ctx, Wt);
}

// ---------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------

static sl_status adamw(sl_gpu_model *g, const sl_adamw_config *cfg, double lr, double *grad_norm) {
    if (!isfinite(lr))
        return sl_set_error(SL_ERR_INVALID, "gpu model: AdamW: non-finite learning rate");
    const int use_decay = cfg->weight_decay != 0;
    if (g->pieces_decay != use_decay) {
        size_t np = 0;
        TRY(sl_cu_adam_pieces(g->t_off, g->t_count, g->t_decay, g->num_tensors, g->num_params,
                              use_decay, NULL, 0, &np));
        sl_cu_adam_piece *h = (sl_cu_adam_piece *)malloc((np ? np : 1) * sizeof *h);
        if (!h) return sl_set_error(SL_ERR_NOMEM, "gpu model: out of memory (AdamW pieces)");
        sl_status st = sl_cu_adam_pieces(g->t_off, g->t_count, g->t_decay, g->num_tensors,
                                         g->num_params, use_decay, h, np, &np);
        if (st == SL_OK && !g->pieces) {
            // every cut has the same count of pieces (per tensor); allocate once
            cudaError_t e = cudaMalloc((void **)&g->pieces, (np ? np : 1) * sizeof *h);
            if (e != cudaSuccess) st = cu_fail(g->dev, e, "malloc (AdamW pieces)");
        }
        if (st == SL_OK) st = upload(g, g->pieces, h, np * sizeof *h);
        free(h);
        if (st != SL_OK) return st;
        g->npieces = np;
        g->pieces_decay = use_decay;
    }
    sl_cu_adamw_hparams hp;
    hp.beta1 = cfg->beta1;
    hp.beta2 = cfg->beta2;
    hp.eps = cfg->eps;
    hp.weight_decay = cfg->weight_decay;
    hp.grad_clip = cfg->grad_clip;
    TRY(sl_cu_adamw_step(g->ctx, g->params, g->prec == SL_GPU_BF16 ? g->params_bf16 : NULL,
                         g->grads, g->m, g->v, g->pieces, g->npieces, &hp, g->t + 1, lr, 1.0,
                         g->d_norm));
    double norm = 0;
    TRY(download(g, &norm, g->d_norm, sizeof norm));
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return sl_set_error(SL_ERR_INVALID, "gpu model: AdamW: non-finite gradient norm");
    g->t++;
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Step
// ---------------------------------------------------------------------------

// The first half of a step: arguments and batch checked, the batch and its
// index arrays uploaded, gradients zeroed, both towers run to the
// embeddings. *ls gets logit_scale as the parameters hold it now (the loss
// clamps it).
static sl_status step_forward(sl_gpu_model *g, const float *pixels, const int32_t *tokens, int B,
                              int do_update, const sl_adamw_config *cfg, int *Rt, int *ntok,
                              float *ls) {
    if (!g || !pixels || !tokens || (do_update && !cfg))
        return sl_set_error(SL_ERR_INVALID, "gpu step: NULL argument");
    TRY(sl_train_check_batch(&g->cfg, g->max_batch, tokens, B, "gpu step"));
    CU(g, cudaSetDevice(g->dev), "set device");
    const size_t S = (size_t)g->cfg.image_size;
    TRY(upload(g, g->pixels, pixels, (size_t)B * 3 * S * S * sizeof(float)));
    TRY(batch_indices(g, tokens, B, Rt, ntok));
    TRY(download(g, ls, g->params + g->logit_off, sizeof *ls));
    TRY(dzero(g, g->grads, g->num_params * sizeof(float)));
    return forward(g, B, *Rt);
}

extern "C" sl_status sl_gpu_model_step(sl_gpu_model *g, const float *pixels, const int32_t *tokens,
                                       int B, float *loss, int do_update,
                                       const sl_adamw_config *cfg, double lr, double *grad_norm) {
    int Rt = 0, ntok = 0;
    float ls = 0;
    TRY(step_forward(g, pixels, tokens, B, do_update, cfg, &Rt, &ntok, &ls));
    sl_train_acts *a = &g->a;
    const int D = g->cfg.embed_dim;
    TRY(sl_cu_infonce_forward(g->ctx, a->loss_saved, g->d_loss, a->v.emb, a->t.emb, ls, B, D));
    TRY(dzero(g, a->d_img, (size_t)B * D * sizeof(float)));
    TRY(dzero(g, a->d_txt, (size_t)B * D * sizeof(float)));
    TRY(sl_cu_infonce_backward(g->ctx, a->d_img, a->d_txt, g->g.logit_scale, a->d_logits, 1.0f,
                               a->loss_saved, a->v.emb, a->t.emb, ls, B, D));
    TRY(backward(g, B, Rt, ntok, a->d_img, a->d_txt));
    TRY(sl_cu_train_sync(g->ctx));
    if (loss) TRY(download(g, loss, g->d_loss, sizeof *loss));
    if (do_update) TRY(adamw(g, cfg, lr, grad_norm));
    return SL_OK;
}

// ---------------------------------------------------------------------------
// Data parallelism
// ---------------------------------------------------------------------------

static sl_status dp_check(sl_gpu_model *g, sl_dist *d) {
    if (sl_dist_device(d) != g->dev)
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: gpu model: rank %d of the group uses cuda:%d",
                            g->dev, sl_dist_rank(d), sl_dist_device(d));
    return SL_OK;
}

extern "C" sl_status sl_gpu_model_dp_sync(sl_gpu_model *g, sl_dist *d) {
    if (!g || !d) return sl_set_error(SL_ERR_INVALID, "gpu model: NULL argument");
    if (sl_dist_world(d) == 1) return SL_OK;
    TRY(dp_check(g, d));
    CU(g, cudaSetDevice(g->dev), "set device");
    TRY(sl_dist_broadcast_f32(d, g->params, g->num_params, g->stream));
    TRY(sl_dist_broadcast_f32(d, g->m, g->num_params, g->stream));
    TRY(sl_dist_broadcast_f32(d, g->v, g->num_params, g->stream));
    CU(g, cudaStreamSynchronize(g->stream), "broadcast");
    return refresh_bf16(g);
}

// Buffers of the sharded loss for a world of `world` (once; a model serves
// one group).
static sl_status dp_buffers(sl_gpu_model *g, int world) {
    if (g->dp_world == world) return SL_OK;
    if (g->dp_world)
        return sl_set_error(SL_ERR_INVALID, "cuda:%d: gpu model: used by groups of %d and %d ranks",
                            g->dev, g->dp_world, world);
    const int bmax = g->max_batch, D = g->cfg.embed_dim;
    const size_t Nd = (size_t)world * bmax * D;
    const size_t host = 4 * Nd + sl_loss_infonce_shard_saved_size(bmax, world) +
                        sl_loss_infonce_shard_scratch_size(bmax, world);
    g->dp_host = (float *)malloc(host * sizeof(float));
    if (!g->dp_host) return sl_set_error(SL_ERR_NOMEM, "gpu model: out of memory (sharded loss)");
    cudaError_t e = cudaMalloc((void **)&g->dp_dev, 4 * Nd * sizeof(float));
    if (e != cudaSuccess) {
        free(g->dp_host);
        g->dp_host = NULL;
        g->dp_dev = NULL;
        return cu_fail(g->dev, e, "malloc (sharded loss)");
    }
    g->dp_world = world;
    return SL_OK;
}

extern "C" sl_status sl_gpu_model_step_dp(sl_gpu_model *g, sl_dist *d, const float *pixels,
                                          const int32_t *tokens, int B, float *loss, int do_update,
                                          const sl_adamw_config *cfg, double lr,
                                          double *grad_norm) {
    if (!d || sl_dist_world(d) == 1)
        return sl_gpu_model_step(g, pixels, tokens, B, loss, do_update, cfg, lr, grad_norm);
    const int world = sl_dist_world(d), rank = sl_dist_rank(d);
    int Rt = 0, ntok = 0;
    float ls = 0;
    TRY(step_forward(g, pixels, tokens, B, do_update, cfg, &Rt, &ntok, &ls));
    TRY(dp_check(g, d));
    TRY(dp_buffers(g, world));

    // the global batch's embeddings on every rank (rank-major)
    const int D = g->cfg.embed_dim, N = world * B;
    const size_t nd = (size_t)B * D, Nd = (size_t)N * D, off = (size_t)rank * nd;
    const size_t cap = (size_t)world * g->max_batch * D;
    float *img_g = g->dp_dev, *txt_g = img_g + cap, *dimg = txt_g + cap, *dtxt = dimg + cap;
    TRY(sl_dist_all_gather_f32(d, g->a.v.emb, img_g, nd, g->stream));
    TRY(sl_dist_all_gather_f32(d, g->a.t.emb, txt_g, nd, g->stream));
    float *hi = g->dp_host, *ht = hi + cap, *hdi = ht + cap, *hdt = hdi + cap, *saved = hdt + cap;
    float *scratch = saved + sl_loss_infonce_shard_saved_size(g->max_batch, world);
    TRY(download(g, hi, img_g, Nd * sizeof(float)));
    TRY(download(g, ht, txt_g, Nd * sizeof(float)));

    // this rank's share of the global loss and its gradients (host, small)
    const float part =
        sl_loss_infonce_shard_forward(saved, hi + off, ht + off, hi, ht, ls, rank, world, B, D);
    memset(hdi, 0, Nd * sizeof(float));
    memset(hdt, 0, Nd * sizeof(float));
    float dt = 0;
    sl_loss_infonce_shard_backward(hdi, hdt, &dt, scratch, 1.0f, saved, hi + off, ht + off, hi, ht,
                                   ls, rank, world, B, D);
    // summed over ranks: the global loss's gradient of every gathered row;
    // this rank's rows feed its towers
    TRY(upload(g, dimg, hdi, Nd * sizeof(float)));
    TRY(upload(g, dtxt, hdt, Nd * sizeof(float)));
    TRY(upload(g, g->grads + g->logit_off, &dt, sizeof dt));
    TRY(sl_dist_all_reduce_sum_f32(d, dimg, Nd, g->stream));
    TRY(sl_dist_all_reduce_sum_f32(d, dtxt, Nd, g->stream));
    TRY(backward(g, B, Rt, ntok, dimg + off, dtxt + off));
    // the global loss is the sum of the ranks' shares: so is its gradient
    TRY(sl_dist_all_reduce_sum_f32(d, g->grads, g->num_params, g->stream));
    TRY(sl_cu_train_sync(g->ctx));
    double total = part;
    TRY(sl_dist_all_reduce_sum_f64_host(d, &total, 1));
    if (loss) *loss = (float)total;
    if (do_update) TRY(adamw(g, cfg, lr, grad_norm));
    return SL_OK;
}
