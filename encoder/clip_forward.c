/*
 * encoder/clip_forward.c - the two towers' forward passes over one chunk of
 * inputs, on the encoder's workspace (kernels/cpu/ops.h does the math).
 *
 * Every linear is one sgemm over all token rows of the chunk (M = rows);
 * the bias of a residual matmul (out_proj, fc2) is not added by the matmul
 * but folded into the next LayerNorm pass (x += bias; ln = LN(x)), and the
 * residual add itself is the sgemm's beta = 1. The last block computes its
 * attention output, out_proj and MLP only for the rows that are read out
 * (class tokens / pooled text tokens) unless every row is asked for. The
 * text tower drops the positions after each sequence's pooled token (the
 * causal mask makes them irrelevant to it) unless tokens_out is asked for,
 * and packs the sequences back to back.
 */
#include "encoder/clip_internal.h"
#include "kernels/cpu/ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Workspace                                                                */
/* ------------------------------------------------------------------------ */

/* Activations for one chunk. */
typedef struct acts {
    float *x;       /* [R, W] residual stream */
    float *ln;      /* [R, W] LayerNorm output */
    float *qkv;     /* [R, 3W] */
    float *att;     /* [R, W] attention output (also the patch-conv output) */
    float *hid;     /* [R, max(M, D)] MLP hidden; also im2col [n*P, 3p^2] and the
                       projection of every row */
    float *xc;      /* [n, W] pooled rows' residual stream (last block) */
    float *lnc;     /* [n, W] */
    float *attc;    /* [n, W] */
    float *hidc;    /* [n, M] */
    float *scratch; /* [threads, T*T] attention scores */
    int *start;     /* [n] first row of each sequence */
    int *len;       /* [n] rows of each sequence */
    int *qrow;      /* [n] pooled row within each sequence */
    int *idx;       /* [n] pooled row, absolute */
} acts;

static size_t round64(size_t b) {
    return (b + 63) & ~(size_t)63;
}

/* Carve (or, with mem NULL, measure) the buffers. */
static size_t acts_layout(acts *a, char *mem, size_t R, size_t n, size_t W, size_t M, size_t D,
                          size_t cols, size_t T, size_t threads) {
    size_t off = 0, hid = R * (M > D ? M : D);
    if (hid < cols) hid = cols;
#define CARVE(field, type, count)                                                                  \
    do {                                                                                           \
        if (mem) a->field = (type *)(mem + off);                                                   \
        off += round64(sizeof(type) * (count));                                                    \
    } while (0)
    CARVE(x, float, R *W);
    CARVE(ln, float, R *W);
    CARVE(qkv, float, R * 3 * W);
    CARVE(att, float, R *W);
    CARVE(hid, float, hid);
    CARVE(xc, float, n *W);
    CARVE(lnc, float, n *W);
    CARVE(attc, float, n *W);
    CARVE(hidc, float, n *M);
    CARVE(scratch, float, threads *T *T);
    CARVE(start, int, n);
    CARVE(len, int, n);
    CARVE(qrow, int, n);
    CARVE(idx, int, n);
#undef CARVE
    return off;
}

static sl_status acts_get(sl_encoder *enc, acts *a, size_t R, size_t n, size_t W, size_t M,
                          size_t D, size_t cols, size_t T) {
    size_t threads = (size_t)omp_get_max_threads();
    size_t need = acts_layout(a, NULL, R, n, W, M, D, cols, T, threads);
    clip_workspace *ws = &enc->ws;
    if (need > ws->bytes) {
        free(ws->mem);
        ws->mem = NULL;
        ws->bytes = 0;
        void *m = NULL;
        if (posix_memalign(&m, 64, need))
            return sl_set_error(SL_ERR_NOMEM, "encoder workspace: cannot allocate %zu bytes", need);
        ws->mem = m;
        ws->bytes = need;
        if (need > ws->peak) ws->peak = need;
    }
    acts_layout(a, ws->mem, R, n, W, M, D, cols, T, threads);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Shared block pieces                                                      */
/* ------------------------------------------------------------------------ */

/* qkv [R, 3W] = ln [R, W] . [Wq; Wk; Wv]^T + [bq; bk; bv]: one sgemm when
 * the three are stored contiguously, else three into column slices. */
static void qkv_forward(float *qkv, const float *ln, const clip_block_w *k, int R, int W) {
    size_t ww = (size_t)W * W;
    if (k->k_w == k->q_w + ww && k->v_w == k->k_w + ww && k->k_b == k->q_b + W &&
        k->v_b == k->k_b + W) {
        sl_op_matmul_forward(qkv, 3 * W, ln, W, k->q_w, 0, k->q_b, R, W, 3 * W, SL_OP_ACT_NONE, 0);
        return;
    }
    sl_op_matmul_forward(qkv, 3 * W, ln, W, k->q_w, 0, k->q_b, R, W, W, SL_OP_ACT_NONE, 0);
    sl_op_matmul_forward(qkv + W, 3 * W, ln, W, k->k_w, 0, k->k_b, R, W, W, SL_OP_ACT_NONE, 0);
    sl_op_matmul_forward(qkv + 2 * W, 3 * W, ln, W, k->v_w, 0, k->v_b, R, W, W, SL_OP_ACT_NONE, 0);
}

/* The transformer blocks of one tower over a.x [R, W] (sequences in
 * a.start/a.len). With `pooled_only`, the last block finishes only the
 * rows a.idx (query rows a.qrow) into a.xc [n, W]. With `value_out`
 * [R, W], the last block also writes every row's value path there:
 * out_proj(v_proj(LN1(x))) with its bias, no attention mixing. Returns the
 * bias still pending on the residual stream (fc2's of the last block). */
static const float *tower_blocks(acts *a, const clip_block_w *blocks, const sl_tower_config *tc,
                                 int R, int n, int maxlen, int causal, int pooled_only,
                                 float *value_out) {
    const int W = tc->width, M = tc->mlp_width;
    const sl_op_act act = clip_op_act(tc->act);
    const float *pending = NULL;
    for (int l = 0; l < tc->layers; l++) {
        const clip_block_w *k = &blocks[l];
        /* ln [R, W] = LN1(x += pending) */
        sl_op_residual_layernorm_forward(a->ln, NULL, NULL, a->x, pending, k->ln1_w, k->ln1_b, R, W,
                                         tc->ln_eps);
        qkv_forward(a->qkv, a->ln, k, R, W);
        if (value_out && l == tc->layers - 1)
            sl_op_matmul_forward(value_out, W, a->qkv + 2 * W, 3 * W, k->o_w, 0, k->o_b, R, W, W,
                                 SL_OP_ACT_NONE, 0);
        if (!(pooled_only && l == tc->layers - 1)) {
            /* att [R, W] = MHA(qkv); x += att . Wo^T (bias pending) */
            sl_op_attention_forward(a->att, W, a->qkv, a->start, a->len, NULL, n, W, tc->heads,
                                    causal, a->scratch, maxlen);
            sl_op_matmul_forward(a->x, W, a->att, W, k->o_w, 0, NULL, R, W, W, SL_OP_ACT_NONE, 1);
            /* ln = LN2(x += bo); hid [R, M] = act(ln . W1^T + b1); x += hid . W2^T */
            sl_op_residual_layernorm_forward(a->ln, NULL, NULL, a->x, k->o_b, k->ln2_w, k->ln2_b, R,
                                             W, tc->ln_eps);
            sl_op_matmul_forward(a->hid, M, a->ln, W, k->fc1_w, 0, k->fc1_b, R, W, M, act, 0);
            sl_op_matmul_forward(a->x, W, a->hid, M, k->fc2_w, 0, NULL, R, M, W, SL_OP_ACT_NONE, 1);
        } else {
            /* Only the pooled rows: attc [n, W], xc [n, W], hidc [n, M]. */
            sl_op_attention_forward(a->attc, W, a->qkv, a->start, a->len, a->qrow, n, W, tc->heads,
                                    causal, a->scratch, maxlen);
            sl_op_gather_rows(a->xc, a->x, a->idx, n, W);
            sl_op_matmul_forward(a->xc, W, a->attc, W, k->o_w, 0, NULL, n, W, W, SL_OP_ACT_NONE, 1);
            sl_op_residual_layernorm_forward(a->lnc, NULL, NULL, a->xc, k->o_b, k->ln2_w, k->ln2_b,
                                             n, W, tc->ln_eps);
            sl_op_matmul_forward(a->hidc, M, a->lnc, W, k->fc1_w, 0, k->fc1_b, n, W, M, act, 0);
            sl_op_matmul_forward(a->xc, W, a->hidc, M, k->fc2_w, 0, NULL, n, M, W, SL_OP_ACT_NONE,
                                 1);
        }
        pending = k->fc2_b;
    }
    return pending;
}

/* ------------------------------------------------------------------------ */
/* Image tower                                                              */
/* ------------------------------------------------------------------------ */

/* PyTorch's bicubic kernel (A = -0.75) at offset t in [0, 1): the weights
 * of the samples at -1, 0, 1, 2. */
static void cubic_weights(float t, float wt[4]) {
    const float A = -0.75f;
    float x = t + 1.f;
    wt[0] = ((A * x - 5.f * A) * x + 8.f * A) * x - 4.f * A;
    x = t;
    wt[1] = ((A + 2.f) * x - (A + 3.f)) * x * x + 1.f;
    x = 1.f - t;
    wt[2] = ((A + 2.f) * x - (A + 3.f)) * x * x + 1.f;
    x = 2.f - t;
    wt[3] = ((A * x - 5.f * A) * x + 8.f * A) * x - 4.f * A;
}

void clip_resize_bicubic(const float *src, int g0, float *dst, int g1, int C, int planar) {
    const float scale = (float)g0 / (float)g1;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < g1; y++) {
        float ry = scale * ((float)y + 0.5f) - 0.5f, fy = floorf(ry), wy[4];
        cubic_weights(ry - fy, wy);
        for (int x = 0; x < g1; x++) {
            float rx = scale * ((float)x + 0.5f) - 0.5f, fx = floorf(rx), wx[4];
            cubic_weights(rx - fx, wx);
            for (int ch = 0; ch < C; ch++) {
                float acc = 0.f;
                for (int i = 0; i < 4; i++) {
                    int sy = (int)fy - 1 + i;
                    sy = sy < 0 ? 0 : sy >= g0 ? g0 - 1 : sy;
                    float row = 0.f;
                    for (int j = 0; j < 4; j++) {
                        int sx = (int)fx - 1 + j;
                        sx = sx < 0 ? 0 : sx >= g0 ? g0 - 1 : sx;
                        size_t at = planar ? ((size_t)ch * g0 + sy) * g0 + sx
                                           : ((size_t)sy * g0 + sx) * C + ch;
                        row += wx[j] * src[at];
                    }
                    acc += wy[i] * row;
                }
                size_t to = planar ? ((size_t)ch * g1 + y) * g1 + x : ((size_t)y * g1 + x) * C + ch;
                dst[to] = acc;
            }
        }
    }
}

sl_status clip_forward_images(sl_encoder *enc, const float *pixels, int n, int S, const float *pos,
                              float *out, float *patches) {
    const sl_clip_config *c = &enc->cfg;
    const clip_weights *w = &enc->w;
    const int W = c->vision.width, D = c->embed_dim, p = c->patch_size;
    const int P = (S / p) * (S / p), T = P + 1, R = n * T, kk = 3 * p * p;
    acts a;
    sl_status st = acts_get(enc, &a, (size_t)R, (size_t)n, (size_t)W, (size_t)c->vision.mlp_width,
                            (size_t)D, (size_t)n * P * kk, (size_t)T);
    if (st) return st;
    for (int b = 0; b < n; b++) {
        a.start[b] = b * T;
        a.len[b] = T;
        a.qrow[b] = 0;
        a.idx[b] = b * T;
    }
    /* Patch conv: hid = im2col [n*P, 3p^2]; att [n*P, W] = hid . Wpatch^T */
    sl_op_im2col_patches(a.hid, pixels, n, 3, S, p);
    sl_op_matmul_forward(a.att, W, a.hid, kk, w->patch_w, 0, NULL, n * P, kk, W, SL_OP_ACT_NONE, 0);
    /* x [R, W]: class token or patch, plus position. */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) {
        const int b = r / T, t = r % T;
        const float *src = t == 0 ? w->cls : a.att + ((size_t)b * P + t - 1) * W;
        const float *ps = pos + (size_t)t * W;
        float *dst = a.x + (size_t)r * W;
        for (int j = 0; j < W; j++) dst[j] = src[j] + ps[j];
    }
    /* x = LN_pre(x) (in place: the residual stream starts after it). */
    sl_op_residual_layernorm_forward(a.x, NULL, NULL, a.x, NULL, w->pre_w, w->pre_b, R, W,
                                     c->vision.ln_eps);
    /* Value-path patches: the class tokens need only the pooled rows of
     * the last block; the patches come from its value path (in att, which
     * the pooled-only block leaves unused). */
    const int value = patches && enc->patch_tokens == SL_PATCH_TOKENS_VALUE;
    const int pooled_only = patches == NULL || value;
    const float *pending = tower_blocks(&a, w->v_blocks, &c->vision, R, n, T, /*causal=*/0,
                                        pooled_only, value ? a.att : NULL);
    if (pooled_only) {
        /* out [n, D] = LN_post(xc += pending) . proj */
        sl_op_residual_layernorm_forward(a.lnc, NULL, NULL, a.xc, pending, w->post_w, w->post_b, n,
                                         W, c->vision.ln_eps);
        sl_op_matmul_forward(out, D, a.lnc, W, w->v_proj, w->v_proj_kn, NULL, n, W, D,
                             SL_OP_ACT_NONE, 0);
        if (!value) return SL_OK;
        /* patches: hid [R, D] = LN_post(att) . proj, patch rows only kept */
        sl_op_residual_layernorm_forward(a.ln, NULL, NULL, a.att, NULL, w->post_w, w->post_b, R, W,
                                         c->vision.ln_eps);
        sl_op_matmul_forward(a.hid, D, a.ln, W, w->v_proj, w->v_proj_kn, NULL, R, W, D,
                             SL_OP_ACT_NONE, 0);
        for (int b = 0; b < n; b++)
            memcpy(patches + (size_t)b * P * D, a.hid + ((size_t)b * T + 1) * D,
                   sizeof(float) * (size_t)P * D);
        return SL_OK;
    }
    /* Every row: hid [R, D] = LN_post(x += pending) . proj, then split. */
    sl_op_residual_layernorm_forward(a.ln, NULL, NULL, a.x, pending, w->post_w, w->post_b, R, W,
                                     c->vision.ln_eps);
    sl_op_matmul_forward(a.hid, D, a.ln, W, w->v_proj, w->v_proj_kn, NULL, R, W, D, SL_OP_ACT_NONE,
                         0);
    for (int b = 0; b < n; b++) {
        const float *rows = a.hid + (size_t)b * T * D;
        memcpy(out + (size_t)b * D, rows, sizeof(float) * (size_t)D);
        memcpy(patches + (size_t)b * P * D, rows + D, sizeof(float) * (size_t)P * D);
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Text tower                                                               */
/* ------------------------------------------------------------------------ */

int clip_pool_position(const sl_clip_config *cfg, const int32_t *ids) {
    const int ctx = cfg->context_length;
    if (cfg->pool_argmax) {
        int best = 0;
        for (int t = 1; t < ctx; t++)
            if (ids[t] > ids[best]) best = t;
        return best;
    }
    for (int t = 0; t < ctx; t++)
        if (ids[t] == cfg->eos_token_id) return t;
    return ctx - 1; /* no end token: the last position */
}

sl_status clip_forward_texts(sl_encoder *enc, const int32_t *tokens, int n, float *out,
                             float *tokens_out) {
    const sl_clip_config *c = &enc->cfg;
    const clip_weights *w = &enc->w;
    const int W = c->text.width, D = c->embed_dim, ctx = c->context_length;
    /* Rows: each sequence up to its pooled position (all of it for
     * tokens_out). */
    int R = 0, maxlen = 0;
    for (int s = 0; s < n; s++) {
        int q = clip_pool_position(c, tokens + (size_t)s * ctx);
        int L = tokens_out ? ctx : q + 1;
        R += L;
        if (L > maxlen) maxlen = L;
    }
    acts a;
    sl_status st = acts_get(enc, &a, (size_t)R, (size_t)n, (size_t)W, (size_t)c->text.mlp_width,
                            (size_t)D, 0, (size_t)maxlen);
    if (st) return st;
    for (int s = 0, r = 0; s < n; s++) {
        int q = clip_pool_position(c, tokens + (size_t)s * ctx);
        a.start[s] = r;
        a.len[s] = tokens_out ? ctx : q + 1;
        a.qrow[s] = q;
        a.idx[s] = r + q;
        r += a.len[s];
    }
    /* x [R, W] = token embedding + position */
#pragma omp parallel for schedule(dynamic, 4)
    for (int s = 0; s < n; s++)
        for (int t = 0; t < a.len[s]; t++) {
            const float *e = w->tok + (size_t)tokens[(size_t)s * ctx + t] * W;
            const float *pos = w->t_pos + (size_t)t * W;
            float *dst = a.x + (size_t)(a.start[s] + t) * W;
            for (int j = 0; j < W; j++) dst[j] = e[j] + pos[j];
        }
    const int pooled_only = tokens_out == NULL;
    const float *pending =
        tower_blocks(&a, w->t_blocks, &c->text, R, n, maxlen, /*causal=*/1, pooled_only, NULL);
    if (pooled_only) {
        sl_op_residual_layernorm_forward(a.lnc, NULL, NULL, a.xc, pending, w->final_w, w->final_b,
                                         n, W, c->text.ln_eps);
        sl_op_matmul_forward(out, D, a.lnc, W, w->t_proj, w->t_proj_kn, NULL, n, W, D,
                             SL_OP_ACT_NONE, 0);
        return SL_OK;
    }
    /* tokens_out [n*ctx, D] = LN_final(x += pending) . proj (rows are
     * exactly tokens_out's layout); out = the pooled rows. */
    sl_op_residual_layernorm_forward(a.ln, NULL, NULL, a.x, pending, w->final_w, w->final_b, R, W,
                                     c->text.ln_eps);
    sl_op_matmul_forward(tokens_out, D, a.ln, W, w->t_proj, w->t_proj_kn, NULL, R, W, D,
                         SL_OP_ACT_NONE, 0);
    for (int s = 0; s < n; s++)
        memcpy(out + (size_t)s * D, tokens_out + (size_t)a.idx[s] * D, sizeof(float) * (size_t)D);
    return SL_OK;
}
