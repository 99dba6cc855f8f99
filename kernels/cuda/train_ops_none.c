/*
 * kernels/cuda/train_ops_none.c - the GPU training entry points of a build
 * without CUDA (kernels/cuda/train_ops.h): the context cannot be created
 * and every op reports SL_ERR_UNSUPPORTED, so that C callers (the trainer,
 * tests) link and fail clearly in every build.
 */
#include "kernels/cuda/train_ops.h"

#include "sightline/sightline.h"

#define NO_CUDA(dev)                                                                               \
    sl_set_error(SL_ERR_UNSUPPORTED,                                                               \
                 "cuda:%d requested but this build of sightline has no CUDA support "              \
                 "(rebuild with nvcc present and -DSL_CUDA=AUTO or ON)",                           \
                 (dev))

sl_status sl_cu_train_create(int dev, void *stream, sl_cu_train **out) {
    (void)stream;
    *out = NULL;
    return NO_CUDA(dev);
}

void sl_cu_train_destroy(sl_cu_train *ctx) {
    (void)ctx;
}

/* No context exists in this build, so every op that takes one fails alike. */
#define STUB(...) return NO_CUDA(0)
#define U(x)      (void)(x)

sl_status sl_cu_train_sync(sl_cu_train *ctx) {
    U(ctx);
    STUB();
}

sl_status sl_cu_train_alloc(sl_cu_train *ctx, void **dptr, size_t bytes) {
    U(ctx), U(bytes);
    *dptr = NULL;
    STUB();
}

void sl_cu_train_free(sl_cu_train *ctx, void *dptr) {
    U(ctx), U(dptr);
}

sl_status sl_cu_train_upload(sl_cu_train *ctx, void *dst, const void *src, size_t bytes) {
    U(ctx), U(dst), U(src), U(bytes);
    STUB();
}

sl_status sl_cu_train_download(sl_cu_train *ctx, void *dst, const void *src, size_t bytes) {
    U(ctx), U(dst), U(src), U(bytes);
    STUB();
}

sl_status sl_cu_train_zero(sl_cu_train *ctx, void *dst, size_t bytes) {
    U(ctx), U(dst), U(bytes);
    STUB();
}

sl_status sl_cu_layernorm_backward(sl_cu_train *ctx, float *dx, float *dw, float *db,
                                   const float *dout, const float *x, const float *mean,
                                   const float *rstd, const float *w, int N, int C) {
    U(ctx), U(dx), U(dw), U(db), U(dout), U(x), U(mean), U(rstd), U(w), U(N), U(C);
    STUB();
}

sl_status sl_cu_act_backward(sl_cu_train *ctx, float *dx, const float *dout, const float *pre,
                             size_t n, sl_op_act act) {
    U(ctx), U(dx), U(dout), U(pre), U(n), U(act);
    STUB();
}

sl_status sl_cu_matmul_backward(sl_cu_train *ctx, float *din, int lddin, float *dw, float *dbias,
                                float *dpre, const float *dout, int lddo, const float *in, int ldi,
                                const float *w, int w_kn, const float *pre, int M, int K, int N,
                                sl_op_act act) {
    U(ctx), U(din), U(lddin), U(dw), U(dbias), U(dpre), U(dout), U(lddo), U(in), U(ldi);
    U(w), U(w_kn), U(pre), U(M), U(K), U(N), U(act);
    STUB();
}

sl_status sl_cu_add_bias_backward(sl_cu_train *ctx, float *dbias, const float *dout, int n, int C) {
    U(ctx), U(dbias), U(dout), U(n), U(C);
    STUB();
}

sl_status sl_cu_attention_backward(sl_cu_train *ctx, float *dqkv, const float *dout, int lddo,
                                   const float *qkv, const int *start, const int *len,
                                   const int *qrow, int nseq, int width, int heads, int causal,
                                   int maxlen) {
    U(ctx), U(dqkv), U(dout), U(lddo), U(qkv), U(start), U(len), U(qrow), U(nseq), U(width);
    U(heads), U(causal), U(maxlen);
    STUB();
}

sl_status sl_cu_im2col_backward(sl_cu_train *ctx, float *dpixels, const float *dcols, int n, int C,
                                int S, int p) {
    U(ctx), U(dpixels), U(dcols), U(n), U(C), U(S), U(p);
    STUB();
}

sl_status sl_cu_vision_embed_backward(sl_cu_train *ctx, float *dpatch, float *dcls, float *dpos,
                                      const float *dx, int n, int P, int W) {
    U(ctx), U(dpatch), U(dcls), U(dpos), U(dx), U(n), U(P), U(W);
    STUB();
}

sl_status sl_cu_token_plan(const int32_t *ids, const int *start, const int *len, int nseq, int ctx,
                           int vocab, int32_t *tok, int32_t *off, int32_t *row, int *ntok) {
    U(ids), U(start), U(len), U(nseq), U(ctx), U(vocab), U(tok), U(off), U(row);
    *ntok = 0;
    STUB();
}

sl_status sl_cu_text_embed_backward(sl_cu_train *ctx, float *dtok, float *dpos, const float *dx,
                                    const int32_t *tok, const int32_t *off, const int32_t *row,
                                    int ntok, const int *start, const int *len, int nseq,
                                    int ctx_len, int W) {
    U(ctx), U(dtok), U(dpos), U(dx), U(tok), U(off), U(row), U(ntok), U(start), U(len);
    U(nseq), U(ctx_len), U(W);
    STUB();
}

sl_status sl_cu_gather_rows_backward(sl_cu_train *ctx, float *dsrc, const float *ddst,
                                     const int *idx, int n, int C) {
    U(ctx), U(dsrc), U(ddst), U(idx), U(n), U(C);
    STUB();
}

sl_status sl_cu_l2_normalize_forward(sl_cu_train *ctx, float *y, float *norm, const float *x, int n,
                                     int D) {
    U(ctx), U(y), U(norm), U(x), U(n), U(D);
    STUB();
}

sl_status sl_cu_l2_normalize_backward(sl_cu_train *ctx, float *dx, const float *dy, const float *y,
                                      const float *norm, int n, int D) {
    U(ctx), U(dx), U(dy), U(y), U(norm), U(n), U(D);
    STUB();
}

sl_status sl_cu_infonce_forward(sl_cu_train *ctx, float *saved, float *loss, const float *img,
                                const float *txt, float t, int B, int D) {
    U(ctx), U(saved), U(loss), U(img), U(txt), U(t), U(B), U(D);
    STUB();
}

sl_status sl_cu_infonce_backward(sl_cu_train *ctx, float *dimg, float *dtxt, float *dt,
                                 float *scratch, float dloss, const float *saved, const float *img,
                                 const float *txt, float t, int B, int D) {
    U(ctx), U(dimg), U(dtxt), U(dt), U(scratch), U(dloss), U(saved), U(img), U(txt), U(t);
    U(B), U(D);
    STUB();
}

sl_status sl_cu_adam_pieces(const size_t *offset, const size_t *count, const int *decay, size_t nt,
                            size_t n, int use_decay, sl_cu_adam_piece *out, size_t cap,
                            size_t *np) {
    U(offset), U(count), U(decay), U(nt), U(n), U(use_decay), U(out), U(cap);
    *np = 0;
    STUB();
}

sl_status sl_cu_grad_norm(sl_cu_train *ctx, const float *grads, const sl_cu_adam_piece *pieces,
                          size_t np, double scale, double *d_norm) {
    U(ctx), U(grads), U(pieces), U(np), U(scale), U(d_norm);
    STUB();
}

sl_status sl_cu_adamw_step(sl_cu_train *ctx, float *params, uint16_t *params_bf16,
                           const float *grads, float *m, float *v, const sl_cu_adam_piece *pieces,
                           size_t np, const sl_cu_adamw_hparams *hp, int64_t t, double lr,
                           double grad_scale, double *d_norm) {
    U(ctx), U(params), U(params_bf16), U(grads), U(m), U(v), U(pieces), U(np), U(hp), U(t);
    U(lr), U(grad_scale), U(d_norm);
    STUB();
}

sl_status sl_cu_f32_to_bf16(sl_cu_train *ctx, uint16_t *dst, const float *src, size_t n) {
    U(ctx), U(dst), U(src), U(n);
    STUB();
}

sl_status sl_cu_bf16_accumulate(sl_cu_train *ctx, float *dst, const uint16_t *src, float scale,
                                size_t n) {
    U(ctx), U(dst), U(src), U(scale), U(n);
    STUB();
}

sl_status sl_cu_matmul_backward_bf16(sl_cu_train *ctx, float *din, int lddin, float *dw,
                                     float *dbias, float *dpre, const float *dout, int lddo,
                                     const float *in, int ldi, const uint16_t *w_bf16, int w_kn,
                                     const float *pre, int M, int K, int N, sl_op_act act) {
    U(ctx), U(din), U(lddin), U(dw), U(dbias), U(dpre), U(dout), U(lddo), U(in), U(ldi);
    U(w_bf16), U(w_kn), U(pre), U(M), U(K), U(N), U(act);
    STUB();
}

sl_status sl_cu_f32_to_bf16_2d(sl_cu_train *ctx, uint16_t *dst, const float *src, int rows,
                               int cols, int ld) {
    U(ctx), U(dst), U(src), U(rows), U(cols), U(ld);
    STUB();
}

sl_status sl_cu_bf16_scratch(sl_cu_train *ctx, int slot, size_t elems, uint16_t **out) {
    U(ctx), U(slot), U(elems);
    if (out) *out = NULL;
    STUB();
}

sl_status sl_cu_gemm_bf16(sl_cu_train *ctx, int trans_a, int trans_b, int m, int n, int k,
                          const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                          float *C, int ldc) {
    U(ctx), U(trans_a), U(trans_b), U(m), U(n), U(k), U(A), U(lda), U(B), U(ldb), U(beta);
    U(C), U(ldc);
    STUB();
}
