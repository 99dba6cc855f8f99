/*
 * trainer/model.c - the trained CLIP model: parameter/gradient/activation
 * buffers, random init, HF checkpoint load/save, forward with saved
 * activations, symmetric InfoNCE, backward (see trainer/model.h).
 *
 * The forward mirrors encoder/clip_forward.c op for op: the bias of a
 * residual matmul (out_proj, fc2) is folded into the next LayerNorm
 * (x += bias; LN(x)), and the residual add is the sgemm's accumulate. Each
 * block keeps its own copy of the stream at both LayerNorm inputs (the
 * backward of a LayerNorm needs its input, and the stream is updated in
 * place afterwards). The text tower runs each sequence up to its pooled
 * position only, the sequences packed one after another (as the encoder
 * does): under the causal mask later positions reach neither the pooled row
 * nor the loss.
 */
#include "trainer/model.h"

#include "encoder/clip_internal.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/ops.h"
#include "sightline/safetensors.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH_LIMIT 65536

/* The dense objective's buffers (R = max_batch (P + 1) image rows). */
struct sl_train_dense {
    float weight, beta;
    float used_weight;       /* the last forward's weight (0: it did not compute the
                                term); what its backward scales by */
    float *mem;              /* one allocation */
    float *u;                /* [R, Wv] value path: out_proj(v) + bias = LN_post input */
    float *ln, *mean, *rstd; /* [R, Wv], [R], [R] LN_post */
    float *feat, *z, *norm;  /* [R, D] projected, [R, D] normalised, [R] norms */
    float *w;                /* [R, B] patch softmax weights */
    float *saved;            /* [3, B, B] */
    float *scratch;          /* [B B + R B] */
    float *dz, *dfeat;       /* [R, D] */
    float *dln, *du, *dv;    /* [R, Wv] */
};

/* ------------------------------------------------------------------------ */
/* Parameter layout                                                         */
/* ------------------------------------------------------------------------ */

/* Walks every tensor in buffer order. On the building pass (tab != NULL)
 * it appends table entries; on a binding pass it points the struct fields
 * at base + offset. */
typedef struct walker {
    sl_train_tensor *tab;       /* building: the table being filled */
    size_t n;                   /* tensors seen */
    size_t off;                 /* floats so far */
    float *base;                /* binding: the buffer */
    const sl_train_tensor *ref; /* binding: the finished table */
} walker;

static void add(walker *wk, float **slot, const char *name, int ndim, int64_t d0, int64_t d1,
                int64_t d2, int64_t d3, int decay) {
    if (wk->tab) {
        sl_train_tensor *t = &wk->tab[wk->n];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
        int64_t d[4] = {d0, d1, d2, d3};
        size_t count = 1;
        for (int i = 0; i < ndim; i++) {
            t->shape[i] = d[i];
            count *= (size_t)d[i];
        }
        t->ndim = ndim;
        t->count = count;
        t->offset = wk->off;
        t->decay = decay;
        wk->off += count;
        *slot = NULL;
    } else {
        *slot = wk->base + wk->ref[wk->n].offset;
    }
    wk->n++;
}

static void walk_block(walker *wk, sl_train_block *k, const char *pre, int W, int M) {
    char n[96];
#define T(field, suffix, ndim, d0, d1, decay)                                                      \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", pre, suffix);                                               \
        add(wk, &k->field, n, ndim, d0, d1, 0, 0, decay);                                          \
    } while (0)
    T(ln1_w, "layer_norm1.weight", 1, W, 0, 0);
    T(ln1_b, "layer_norm1.bias", 1, W, 0, 0);
    T(q_w, "self_attn.q_proj.weight", 2, W, W, 1);
    T(k_w, "self_attn.k_proj.weight", 2, W, W, 1);
    T(v_w, "self_attn.v_proj.weight", 2, W, W, 1);
    T(q_b, "self_attn.q_proj.bias", 1, W, 0, 0);
    T(k_b, "self_attn.k_proj.bias", 1, W, 0, 0);
    T(v_b, "self_attn.v_proj.bias", 1, W, 0, 0);
    T(o_w, "self_attn.out_proj.weight", 2, W, W, 1);
    T(o_b, "self_attn.out_proj.bias", 1, W, 0, 0);
    T(ln2_w, "layer_norm2.weight", 1, W, 0, 0);
    T(ln2_b, "layer_norm2.bias", 1, W, 0, 0);
    T(fc1_w, "mlp.fc1.weight", 2, M, W, 1);
    T(fc1_b, "mlp.fc1.bias", 1, M, 0, 0);
    T(fc2_w, "mlp.fc2.weight", 2, W, M, 1);
    T(fc2_b, "mlp.fc2.bias", 1, W, 0, 0);
#undef T
}

/* Every tensor, in the order (and with the names) of the encoder's HF
 * binder. */
static void walk_model(walker *wk, const sl_clip_config *c, sl_train_params *p) {
    const int Wv = c->vision.width, Wt = c->text.width, D = c->embed_dim, pp = c->patch_size;
    const int T = sl_clip_num_patches(c) + 1;
    char pre[64];
    add(wk, &p->patch_w, "vision_model.embeddings.patch_embedding.weight", 4, Wv, 3, pp, pp, 1);
    add(wk, &p->cls, "vision_model.embeddings.class_embedding", 1, Wv, 0, 0, 0, 0);
    add(wk, &p->v_pos, "vision_model.embeddings.position_embedding.weight", 2, T, Wv, 0, 0, 0);
    add(wk, &p->pre_w, "vision_model.pre_layrnorm.weight", 1, Wv, 0, 0, 0, 0);
    add(wk, &p->pre_b, "vision_model.pre_layrnorm.bias", 1, Wv, 0, 0, 0, 0);
    for (int i = 0; i < c->vision.layers; i++) {
        snprintf(pre, sizeof pre, "vision_model.encoder.layers.%d", i);
        walk_block(wk, &p->v_blocks[i], pre, Wv, c->vision.mlp_width);
    }
    add(wk, &p->post_w, "vision_model.post_layernorm.weight", 1, Wv, 0, 0, 0, 0);
    add(wk, &p->post_b, "vision_model.post_layernorm.bias", 1, Wv, 0, 0, 0, 0);
    add(wk, &p->v_proj, "visual_projection.weight", 2, D, Wv, 0, 0, 1);
    add(wk, &p->tok, "text_model.embeddings.token_embedding.weight", 2, c->vocab_size, Wt, 0, 0, 0);
    add(wk, &p->t_pos, "text_model.embeddings.position_embedding.weight", 2, c->context_length, Wt,
        0, 0, 0);
    for (int i = 0; i < c->text.layers; i++) {
        snprintf(pre, sizeof pre, "text_model.encoder.layers.%d", i);
        walk_block(wk, &p->t_blocks[i], pre, Wt, c->text.mlp_width);
    }
    add(wk, &p->final_w, "text_model.final_layer_norm.weight", 1, Wt, 0, 0, 0, 0);
    add(wk, &p->final_b, "text_model.final_layer_norm.bias", 1, Wt, 0, 0, 0, 0);
    add(wk, &p->t_proj, "text_projection.weight", 2, D, Wt, 0, 0, 1);
    add(wk, &p->logit_scale, "logit_scale", 0, 0, 0, 0, 0, 0);
}

static size_t count_tensors(const sl_clip_config *c) {
    return 14 + 16 * ((size_t)c->vision.layers + (size_t)c->text.layers);
}

/* ------------------------------------------------------------------------ */
/* Activation layout                                                        */
/* ------------------------------------------------------------------------ */

static size_t max3(size_t a, size_t b, size_t c) {
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

size_t sl_train_acts_layout(const sl_clip_config *c, int max_batch, sl_train_acts *a, char *mem,
                            size_t align) {
    const size_t B = (size_t)max_batch, D = (size_t)c->embed_dim;
    const size_t P = (size_t)sl_clip_num_patches(c), kk = 3 * (size_t)c->patch_size * c->patch_size;
    const size_t Rv = B * (P + 1), Rt = B * (size_t)c->context_length;
    const size_t Wv = (size_t)c->vision.width, Wt = (size_t)c->text.width;
    const size_t Mv = (size_t)c->vision.mlp_width, Mt = (size_t)c->text.mlp_width;
    size_t off = 0;
#define CARVE(ptr, type, count)                                                                    \
    do {                                                                                           \
        if (mem) (ptr) = (type *)(mem + off);                                                      \
        off += (sizeof(type) * (count) + align - 1) / align * align;                               \
    } while (0)
    for (int tw = 0; tw < 2; tw++) {
        sl_train_tower_acts *ta = tw ? &a->t : &a->v;
        const sl_tower_config *tc = tw ? &c->text : &c->vision;
        const size_t R = tw ? Rt : Rv, W = (size_t)tc->width, M = (size_t)tc->mlp_width;
        for (int l = 0; l < tc->layers; l++) {
            sl_train_block_acts *k = &ta->blocks[l];
            /* the last block carries on from attention with the pooled
             * rows only */
            const size_t R2 = l + 1 < tc->layers ? R : B;
            CARVE(k->res, float, R *W);
            CARVE(k->ln1, float, R *W);
            CARVE(k->mean1, float, R);
            CARVE(k->rstd1, float, R);
            CARVE(k->qkv, float, R * 3 * W);
            CARVE(k->att, float, R2 *W);
            CARVE(k->res2, float, R2 *W);
            CARVE(k->ln2, float, R2 *W);
            CARVE(k->mean2, float, R2);
            CARVE(k->rstd2, float, R2);
            CARVE(k->fc_pre, float, R2 *M);
            CARVE(k->fc, float, R2 *M);
        }
        CARVE(ta->pooled, float, B *W);
        CARVE(ta->lnf, float, B *W);
        CARVE(ta->meanf, float, B);
        CARVE(ta->rstdf, float, B);
        CARVE(ta->feat, float, B *D);
        CARVE(ta->emb, float, B *D);
        CARVE(ta->norm, float, B);
    }
    CARVE(a->cols, float, B *P *kk);
    CARVE(a->patch, float, B *P *Wv);
    CARVE(a->v_embed, float, Rv *Wv);
    CARVE(a->pre_mean, float, Rv);
    CARVE(a->pre_rstd, float, Rv);
    CARVE(a->ids, int32_t, Rt);
    CARVE(a->v_start, int, B);
    CARVE(a->v_len, int, B);
    CARVE(a->v_idx, int, B);
    CARVE(a->t_start, int, B);
    CARVE(a->t_len, int, B);
    CARVE(a->t_idx, int, B);
    CARVE(a->v_qrow, int, B);
    CARVE(a->t_qrow, int, B);
    CARVE(a->loss_saved, float, 3 * B * B);
    const size_t RW = max3(Rv * Wv, Rt * Wt, 0);
    CARVE(a->d_res, float, RW);
    CARVE(a->d_ln, float, RW);
    CARVE(a->d_att, float, RW);
    CARVE(a->d_qkv, float, 3 * RW);
    CARVE(a->d_fc, float, max3(Rv * Mv, Rt * Mt, 0));
    CARVE(a->d_emb, float, Rv *Wv);
    CARVE(a->d_pool, float, B *(Wv > Wt ? Wv : Wt));
    CARVE(a->d_lnf, float, B *(Wv > Wt ? Wv : Wt));
    CARVE(a->d_feat, float, B *D);
    CARVE(a->d_img, float, B *D);
    CARVE(a->d_txt, float, B *D);
    CARVE(a->d_logits, float, B *B);
#undef CARVE
    return off;
}

/* ------------------------------------------------------------------------ */
/* Create / free                                                            */
/* ------------------------------------------------------------------------ */

void sl_train_model_free(sl_train_model *m) {
    if (!m) return;
    free(m->params_mem);
    free(m->grads_mem);
    free(m->blocks_mem);
    free(m->tensors);
    free(m->acts_mem);
    free(m->block_acts_mem);
    free(m->att_scratch);
    if (m->dense) free(m->dense->mem);
    free(m->dense);
    free(m);
}

/* Allocate everything for cfg; parameters uninitialised, gradients 0. */
static sl_status model_alloc(const sl_clip_config *cfg, int max_batch, sl_train_model **out) {
    *out = NULL;
    sl_status st = clip_config_validate(cfg, "train model config");
    if (st) return st;
    if (max_batch < 1 || max_batch > MAX_BATCH_LIMIT)
        return sl_set_error(SL_ERR_INVALID, "train model: max batch %d outside [1, %d]", max_batch,
                            MAX_BATCH_LIMIT);
    sl_train_model *m = calloc(1, sizeof *m);
    if (!m) return sl_set_error(SL_ERR_NOMEM, "train model: out of memory");
    m->cfg = *cfg;
    m->max_batch = max_batch;
    const size_t Lv = (size_t)cfg->vision.layers, Lt = (size_t)cfg->text.layers;
    m->num_tensors = count_tensors(cfg);
    m->blocks_mem = calloc(2 * (Lv + Lt), sizeof *m->blocks_mem);
    m->tensors = calloc(m->num_tensors, sizeof *m->tensors);
    m->block_acts_mem = calloc(Lv + Lt, sizeof *m->block_acts_mem);
    if (!m->blocks_mem || !m->tensors || !m->block_acts_mem) goto nomem;
    m->params.v_blocks = m->blocks_mem;
    m->params.t_blocks = m->blocks_mem + Lv;
    m->grads.v_blocks = m->blocks_mem + Lv + Lt;
    m->grads.t_blocks = m->blocks_mem + 2 * Lv + Lt;
    m->acts.v.blocks = m->block_acts_mem;
    m->acts.t.blocks = m->block_acts_mem + Lv;

    walker wk = {.tab = m->tensors};
    walk_model(&wk, cfg, &m->params);
    m->num_params = wk.off;
    size_t bytes;
    if (sl_mul_size(m->num_params, sizeof(float), &bytes)) goto nomem;
    m->params_mem = malloc(bytes);
    m->grads_mem = calloc(m->num_params, sizeof(float));
    if (!m->params_mem || !m->grads_mem) goto nomem;
    wk = (walker){.base = m->params_mem, .ref = m->tensors};
    walk_model(&wk, cfg, &m->params);
    wk = (walker){.base = m->grads_mem, .ref = m->tensors};
    walk_model(&wk, cfg, &m->grads);

    m->acts_bytes = sl_train_acts_layout(&m->cfg, m->max_batch, &m->acts, NULL, 64);
    void *mem = NULL;
    if (posix_memalign(&mem, 64, m->acts_bytes)) goto nomem;
    m->acts_mem = mem;
    sl_train_acts_layout(&m->cfg, m->max_batch, &m->acts, mem, 64);
    *out = m;
    return SL_OK;
nomem:
    sl_train_model_free(m);
    return sl_set_error(SL_ERR_NOMEM, "train model: out of memory (%d pairs per batch)", max_batch);
}

/* splitmix64 + Box-Muller: reproducible normals. */
typedef struct rng {
    uint64_t s;
    int has_spare;
    double spare;
} rng;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_normal(rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

static void fill_normal(rng *r, float *x, size_t n, double std) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * rng_normal(r));
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static void init_tower(rng *r, sl_train_block *blocks, const sl_tower_config *tc) {
    const size_t W = (size_t)tc->width, M = (size_t)tc->mlp_width;
    const double attn_std = 1.0 / sqrt((double)W);
    const double proj_std = attn_std / sqrt(2.0 * tc->layers);
    const double fc_std = 1.0 / sqrt(2.0 * (double)W);
    for (int l = 0; l < tc->layers; l++) {
        sl_train_block *k = &blocks[l];
        fill_const(k->ln1_w, W, 1.0f);
        fill_const(k->ln1_b, W, 0.0f);
        fill_normal(r, k->q_w, 3 * W * W, attn_std); /* q, k, v contiguous */
        fill_const(k->q_b, 3 * W, 0.0f);
        fill_normal(r, k->o_w, W * W, proj_std);
        fill_const(k->o_b, W, 0.0f);
        fill_const(k->ln2_w, W, 1.0f);
        fill_const(k->ln2_b, W, 0.0f);
        fill_normal(r, k->fc1_w, M * W, fc_std);
        fill_const(k->fc1_b, M, 0.0f);
        fill_normal(r, k->fc2_w, W * M, proj_std);
        fill_const(k->fc2_b, W, 0.0f);
    }
}

sl_status sl_train_model_create(const sl_clip_config *cfg, int max_batch, uint64_t seed,
                                sl_train_model **out) {
    if (!cfg || !out) return sl_set_error(SL_ERR_INVALID, "train model: NULL argument");
    sl_train_model *m;
    sl_status st = model_alloc(cfg, max_batch, &m);
    if (st) return st;
    const sl_clip_config *c = &m->cfg;
    sl_train_params *p = &m->params;
    const size_t Wv = (size_t)c->vision.width, Wt = (size_t)c->text.width, D = (size_t)c->embed_dim;
    const size_t T = (size_t)sl_clip_num_patches(c) + 1, pp = (size_t)c->patch_size;
    rng r = {.s = seed};
    const double v_scale = 1.0 / sqrt((double)Wv);
    fill_normal(&r, p->patch_w, Wv * 3 * pp * pp, 1.0 / sqrt(3.0 * 3.0 * (double)(pp * pp)));
    fill_normal(&r, p->cls, Wv, v_scale);
    fill_normal(&r, p->v_pos, T * Wv, v_scale);
    fill_const(p->pre_w, Wv, 1.0f);
    fill_const(p->pre_b, Wv, 0.0f);
    init_tower(&r, p->v_blocks, &c->vision);
    fill_const(p->post_w, Wv, 1.0f);
    fill_const(p->post_b, Wv, 0.0f);
    fill_normal(&r, p->v_proj, D * Wv, v_scale);
    fill_normal(&r, p->tok, (size_t)c->vocab_size * Wt, 0.02);
    fill_normal(&r, p->t_pos, (size_t)c->context_length * Wt, 0.01);
    init_tower(&r, p->t_blocks, &c->text);
    fill_const(p->final_w, Wt, 1.0f);
    fill_const(p->final_b, Wt, 0.0f);
    fill_normal(&r, p->t_proj, D * Wt, 1.0 / sqrt((double)Wt));
    *p->logit_scale = (float)log(1.0 / 0.07);
    m->cfg.logit_scale = *p->logit_scale;
    *out = m;
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Load / save (Hugging Face layout)                                        */
/* ------------------------------------------------------------------------ */

static sl_status load_tensors(sl_train_model *m, const sl_safetensors *st, const char *path) {
    for (size_t i = 0; i < m->num_tensors; i++) {
        const sl_train_tensor *e = &m->tensors[i];
        float *dst = m->params_mem + e->offset;
        const sl_tensor_info *t = sl_safetensors_find(st, e->name);
        const int scalar = e->ndim == 0;
        if (!t) {
            if (scalar) { /* logit_scale: optional */
                *dst = m->cfg.logit_scale;
                continue;
            }
            return sl_set_error(SL_ERR_NOT_FOUND, "%s: missing tensor '%s'", path, e->name);
        }
        int same = scalar ? (t->count == 1 && t->ndim <= 1) : t->ndim == e->ndim;
        for (int d = 0; same && !scalar && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same)
            return sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s': shape does not match the config",
                                path, e->name);
        if (t->dtype != SL_DT_F32 && t->dtype != SL_DT_F16 && t->dtype != SL_DT_BF16)
            return sl_set_error(SL_ERR_UNSUPPORTED,
                                "%s: tensor '%s': unsupported dtype %s (F32, F16 or BF16 expected)",
                                path, e->name, sl_dtype_name(t->dtype));
        sl_status s = sl_tensor_to_f32(t, dst);
        if (s) return sl_wrap_error(s, "%s: tensor '%s': ", path, e->name);
    }
    m->cfg.logit_scale = *m->params.logit_scale;
    return SL_OK;
}

sl_status sl_train_model_load(const char *dir, int max_batch, sl_train_model **out) {
    if (!dir || !out) return sl_set_error(SL_ERR_INVALID, "train model load: NULL argument");
    *out = NULL;
    sl_clip_config cfg;
    clip_config_defaults(&cfg);
    char *cfg_path = sl_path_join(dir, "config.json"),
         *st_path = sl_path_join(dir, "model.safetensors");
    char *pre_path = sl_path_join(dir, "preprocessor_config.json");
    sl_safetensors *st = NULL;
    sl_train_model *m = NULL;
    sl_status s = SL_OK;
    if (!cfg_path || !st_path || !pre_path) {
        s = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    if ((s = clip_config_read_hf(cfg_path, &cfg))) goto done;
    FILE *f = fopen(pre_path, "rb");
    if (f) {
        fclose(f);
        if ((s = clip_config_read_preprocessor(pre_path, &cfg))) goto done;
    }
    if ((s = sl_safetensors_open(st_path, &st))) goto done;
    if ((s = model_alloc(&cfg, max_batch, &m))) goto done;
    if ((s = load_tensors(m, st, st_path))) goto done;
    *out = m;
    m = NULL;
done:
    sl_train_model_free(m);
    sl_safetensors_free(st);
    free(cfg_path);
    free(st_path);
    free(pre_path);
    return s;
}

static const char *act_name(sl_activation a) {
    switch (a) {
        case SL_ACT_GELU:
            return "gelu";
        case SL_ACT_GELU_TANH:
            return "gelu_pytorch_tanh";
        case SL_ACT_QUICK_GELU:
        default:
            return "quick_gelu";
    }
}

static json_t *tower_json(const sl_tower_config *t) {
    return json_pack("{s:i, s:i, s:i, s:i, s:s, s:f}", "hidden_size", t->width, "intermediate_size",
                     t->mlp_width, "num_attention_heads", t->heads, "num_hidden_layers", t->layers,
                     "hidden_act", act_name(t->act), "layer_norm_eps", (double)t->ln_eps);
}

/* Write a JSON object atomically (steals root). */
static sl_status write_json(const char *path, json_t *root) {
    if (!root) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!s) return sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
    sl_status st = sl_write_file_atomic(path, s, strlen(s));
    free(s);
    return st;
}

sl_status sl_train_model_save(const sl_train_model *m, const char *dir) {
    if (!m || !dir) return sl_set_error(SL_ERR_INVALID, "train model save: NULL argument");
    const sl_clip_config *c = &m->cfg;
    sl_status s = sl_mkdir_p(dir);
    if (s) return s;
    char *cfg_path = sl_path_join(dir, "config.json"),
         *st_path = sl_path_join(dir, "model.safetensors");
    char *pre_path = sl_path_join(dir, "preprocessor_config.json");
    sl_tensor_desc *d = calloc(m->num_tensors, sizeof *d);
    if (!cfg_path || !st_path || !pre_path || !d) {
        s = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    /* HF reads eos_token_id 2 as "pool at the largest id" (legacy); the
     * reader here does the same. */
    json_t *tc = tower_json(&c->text), *vc = tower_json(&c->vision);
    if (tc) {
        json_object_set_new(tc, "max_position_embeddings", json_integer(c->context_length));
        json_object_set_new(tc, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(tc, "eos_token_id", json_integer(c->pool_argmax ? 2 : c->eos_token_id));
    }
    if (vc) {
        json_object_set_new(vc, "image_size", json_integer(c->image_size));
        json_object_set_new(vc, "patch_size", json_integer(c->patch_size));
    }
    json_t *root = tc && vc
                       ? json_pack("{s:[s], s:s, s:i, s:f, s:o, s:o}", "architectures", "CLIPModel",
                                   "model_type", "clip", "projection_dim", c->embed_dim,
                                   "logit_scale_init_value", (double)*m->params.logit_scale,
                                   "text_config", tc, "vision_config", vc)
                       : NULL;
    if ((s = write_json(cfg_path, root))) goto done;
    json_t *pre = json_pack("{s:[f,f,f], s:[f,f,f], s:i}", "image_mean", (double)c->image_mean[0],
                            (double)c->image_mean[1], (double)c->image_mean[2], "image_std",
                            (double)c->image_std[0], (double)c->image_std[1],
                            (double)c->image_std[2], "crop_size", c->image_size);
    if ((s = write_json(pre_path, pre))) goto done;
    for (size_t i = 0; i < m->num_tensors; i++) {
        const sl_train_tensor *e = &m->tensors[i];
        d[i].name = e->name;
        d[i].dtype = SL_DT_F32;
        d[i].ndim = e->ndim;
        for (int k = 0; k < e->ndim; k++) d[i].shape[k] = e->shape[k];
        d[i].data = m->params_mem + e->offset;
    }
    const char *meta[] = {"format", "pt"};
    s = sl_safetensors_write(st_path, d, m->num_tensors, meta, 1);
done:
    free(d);
    free(cfg_path);
    free(st_path);
    free(pre_path);
    return s;
}

/* ------------------------------------------------------------------------ */
/* The dense objective                                                      */
/* ------------------------------------------------------------------------ */

sl_status sl_train_model_set_dense(sl_train_model *m, float weight, float beta) {
    if (!m) return sl_set_error(SL_ERR_INVALID, "train dense: NULL model");
    if (!(weight >= 0) || !isfinite(weight) || !(beta > 0) || !isfinite(beta))
        return sl_set_error(SL_ERR_INVALID,
                            "train dense: weight %g must be >= 0 and sharpness %g > 0",
                            (double)weight, (double)beta);
    if (weight > 0 && !m->dense) {
        const sl_clip_config *c = &m->cfg;
        const size_t B = (size_t)m->max_batch, R = B * (size_t)(sl_clip_num_patches(c) + 1);
        const size_t W = (size_t)c->vision.width, D = (size_t)c->embed_dim;
        struct sl_train_dense *d = calloc(1, sizeof *d);
        if (!d) return sl_set_error(SL_ERR_NOMEM, "train dense: out of memory");
        /* in the order of the struct's buffers, u .. dv */
        const size_t sizes[15] = {R * W,     R * W,         R,     R,     R * D, R * D, R,    R * B,
                                  3 * B * B, B * B + R * B, R * D, R * D, R * W, R * W, R * W};
        float **slots[15] = {&d->u,  &d->ln,    &d->mean, &d->rstd,  &d->feat,
                             &d->z,  &d->norm,  &d->w,    &d->saved, &d->scratch,
                             &d->dz, &d->dfeat, &d->dln,  &d->du,    &d->dv};
        size_t total = 0, bytes;
        for (int i = 0; i < 15; i++) total += sizes[i];
        if (sl_mul_size(total, sizeof(float), &bytes) || !(d->mem = malloc(bytes))) {
            free(d);
            return sl_set_error(SL_ERR_NOMEM, "train dense: out of memory (%d pairs per batch)",
                                m->max_batch);
        }
        float *q = d->mem;
        for (int i = 0; i < 15; i++) {
            *slots[i] = q;
            q += sizes[i];
        }
        m->dense = d;
    }
    if (m->dense) m->dense->weight = weight, m->dense->beta = beta;
    return SL_OK;
}

/* Forward of the dense objective after both towers (B pairs). */
static float dense_forward(sl_train_model *m, int B) {
    struct sl_train_dense *d = m->dense;
    const sl_clip_config *c = &m->cfg;
    const sl_train_params *p = &m->params;
    const int L = c->vision.layers, W = c->vision.width, D = c->embed_dim;
    const int P = sl_clip_num_patches(c), T = P + 1, R = B * T;
    const float *v = m->acts.v.blocks[L - 1].qkv + 2 * W; /* [R, W], row stride 3W */
    /* u = v . Wo^T + bo; z = normalise(LN_post(u) . proj) (the encoder's
     * value-path patch tokens) */
    sl_op_matmul_forward(d->u, W, v, 3 * W, p->v_blocks[L - 1].o_w, 0, p->v_blocks[L - 1].o_b, R, W,
                         W, SL_OP_ACT_NONE, 0);
    sl_op_residual_layernorm_forward(d->ln, d->mean, d->rstd, d->u, NULL, p->post_w, p->post_b, R,
                                     W, c->vision.ln_eps);
    sl_op_matmul_forward(d->feat, D, d->ln, W, p->v_proj, 0, NULL, R, W, D, SL_OP_ACT_NONE, 0);
    sl_op_l2_normalize_forward(d->z, d->norm, d->feat, R, D);
    return sl_loss_dense_forward(d->saved, d->w, d->z, T, 1, P, m->acts.t.emb, *p->logit_scale,
                                 d->beta, B, D);
}

/* Backward of the forward's weight times the dense objective: adds into
 * the text embeddings' gradient (acts.d_txt), logit_scale, the visual
 * projection, LN_post and the last image block's out_proj and value
 * weights (v_w, v_b), and stops there: the LN1 output the value path reads
 * is taken as a constant (see model.h). */
static void dense_backward(sl_train_model *m, int B) {
    struct sl_train_dense *d = m->dense;
    const sl_clip_config *c = &m->cfg;
    const sl_train_params *p = &m->params;
    sl_train_params *g = &m->grads;
    const int L = c->vision.layers, W = c->vision.width, D = c->embed_dim;
    const int P = sl_clip_num_patches(c), T = P + 1, R = B * T;
    const size_t RD = (size_t)R * D, RW = (size_t)R * W;
    memset(d->dz, 0, RD * sizeof(float));
    sl_loss_dense_backward(d->dz, m->acts.d_txt, g->logit_scale, d->scratch, d->used_weight,
                           d->saved, d->w, d->z, T, 1, P, m->acts.t.emb, *p->logit_scale, B, D);
    memset(d->dfeat, 0, RD * sizeof(float));
    sl_op_l2_normalize_backward(d->dfeat, d->dz, d->z, d->norm, R, D);
    memset(d->dln, 0, RW * sizeof(float));
    sl_op_matmul_backward(d->dln, W, g->v_proj, NULL, NULL, d->dfeat, D, d->ln, W, p->v_proj, 0,
                          NULL, R, W, D, SL_OP_ACT_NONE);
    memset(d->du, 0, RW * sizeof(float));
    sl_op_residual_layernorm_backward(d->du, g->post_w, g->post_b, d->dln, d->u, d->mean, d->rstd,
                                      p->post_w, R, W);
    memset(d->dv, 0, RW * sizeof(float));
    sl_op_matmul_backward(d->dv, W, g->v_blocks[L - 1].o_w, g->v_blocks[L - 1].o_b, NULL, d->du, W,
                          m->acts.v.blocks[L - 1].qkv + 2 * W, 3 * W, p->v_blocks[L - 1].o_w, 0,
                          NULL, R, W, W, SL_OP_ACT_NONE);
    sl_op_matmul_backward(NULL, 0, g->v_blocks[L - 1].v_w, g->v_blocks[L - 1].v_b, NULL, d->dv, W,
                          m->acts.v.blocks[L - 1].ln1, W, p->v_blocks[L - 1].v_w, 0, NULL, R, W, W,
                          SL_OP_ACT_NONE);
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                  */
/* ------------------------------------------------------------------------ */

/* Attention scratch for sequences up to maxlen at the current thread
 * count, forward and backward. */
static sl_status att_scratch(sl_train_model *m, int maxlen) {
    size_t fwd = (size_t)omp_get_max_threads() * (size_t)maxlen * (size_t)maxlen;
    size_t bwd = sl_op_attention_backward_scratch(maxlen);
    size_t need = fwd > bwd ? fwd : bwd;
    if (need <= m->att_scratch_count) return SL_OK;
    float *s = malloc(need * sizeof *s);
    if (!s) return sl_set_error(SL_ERR_NOMEM, "train model: out of memory (attention scratch)");
    free(m->att_scratch);
    m->att_scratch = s;
    m->att_scratch_count = need;
    return SL_OK;
}

/* Blocks of one tower over R rows; ta->blocks[0].res holds the input
 * stream. Only the pooled rows (idx, query row qrow within each sequence)
 * reach the loss, so the last block carries on from its attention with
 * those nseq rows only (as the encoder does): its att, res2, ln2, fc_pre
 * and fc are [nseq, .], the stream after it (fc2 bias still pending) in
 * ta->pooled. */
static void blocks_forward(sl_train_tower_acts *ta, const sl_train_block *w,
                           const sl_tower_config *tc, int R, const int *start, const int *len,
                           const int *idx, const int *qrow, int nseq, int maxlen, int causal,
                           float *scratch) {
    const int W = tc->width, M = tc->mlp_width, L = tc->layers;
    const sl_op_act act = clip_op_act(tc->act);
    for (int l = 0; l < L; l++) {
        const sl_train_block *k = &w[l];
        sl_train_block_acts *a = &ta->blocks[l];
        const int last = l + 1 == L, R2 = last ? nseq : R;
        float *next = last ? ta->pooled : ta->blocks[l + 1].res;
        /* ln1 = LN1(res += pending fc2 bias) */
        sl_op_residual_layernorm_forward(a->ln1, a->mean1, a->rstd1, a->res,
                                         l ? w[l - 1].fc2_b : NULL, k->ln1_w, k->ln1_b, R, W,
                                         tc->ln_eps);
        /* qkv [R, 3W] = ln1 . [Wq; Wk; Wv]^T + [bq; bk; bv] */
        sl_op_matmul_forward(a->qkv, 3 * W, a->ln1, W, k->q_w, 0, k->q_b, R, W, 3 * W,
                             SL_OP_ACT_NONE, 0);
        sl_op_attention_forward(a->att, W, a->qkv, start, len, last ? qrow : NULL, nseq, W,
                                tc->heads, causal, scratch, maxlen);
        /* res2 = res + att . Wo^T (last: the pooled rows of res); ln2 =
         * LN2(res2 += bo) */
        if (last)
            sl_op_gather_rows(a->res2, a->res, idx, nseq, W);
        else
            memcpy(a->res2, a->res, (size_t)R * W * sizeof(float));
        sl_op_matmul_forward(a->res2, W, a->att, W, k->o_w, 0, NULL, R2, W, W, SL_OP_ACT_NONE, 1);
        sl_op_residual_layernorm_forward(a->ln2, a->mean2, a->rstd2, a->res2, k->o_b, k->ln2_w,
                                         k->ln2_b, R2, W, tc->ln_eps);
        /* fc = act(ln2 . W1^T + b1); next = res2 + fc . W2^T (bias pending) */
        sl_op_matmul_forward_train(a->fc, a->fc_pre, M, a->ln2, W, k->fc1_w, 0, k->fc1_b, R2, W, M,
                                   act);
        memcpy(next, a->res2, (size_t)R2 * W * sizeof(float));
        sl_op_matmul_forward(next, W, a->fc, M, k->fc2_w, 0, NULL, R2, M, W, SL_OP_ACT_NONE, 1);
    }
}

/* Final LN of ta->pooled (the pooled rows, folding the last fc2 bias),
 * projection, L2 normalisation: ta->emb [B, D]. */
static void head_forward(sl_train_tower_acts *ta, const sl_train_block *w,
                         const sl_tower_config *tc, const float *ln_w, const float *ln_b,
                         const float *proj, int B, int D) {
    const int W = tc->width;
    sl_op_residual_layernorm_forward(ta->lnf, ta->meanf, ta->rstdf, ta->pooled,
                                     w[tc->layers - 1].fc2_b, ln_w, ln_b, B, W, tc->ln_eps);
    sl_op_matmul_forward(ta->feat, D, ta->lnf, W, proj, 0, NULL, B, W, D, SL_OP_ACT_NONE, 0);
    sl_op_l2_normalize_forward(ta->emb, ta->norm, ta->feat, B, D);
}

sl_status sl_train_check_batch(const sl_clip_config *c, int max_batch, const int32_t *tokens, int B,
                               const char *what) {
    if (B < 1 || B > max_batch)
        return sl_set_error(SL_ERR_INVALID, "%s: batch %d outside [1, %d]", what, B, max_batch);
    const int ctx = c->context_length, V = c->vocab_size;
    for (int s = 0; s < B; s++)
        for (int t = 0; t < ctx; t++) {
            int32_t id = tokens[(size_t)s * ctx + t];
            if (id < 0 || id >= V)
                return sl_set_error(SL_ERR_INVALID,
                                    "%s: token id %d at row %d position %d outside [0, %d)", what,
                                    (int)id, s, t, V);
        }
    return SL_OK;
}

sl_status sl_train_model_forward(sl_train_model *m, const float *pixels, const int32_t *tokens,
                                 int B, float *loss) {
    if (!m || !pixels || !tokens)
        return sl_set_error(SL_ERR_INVALID, "train forward: NULL argument");
    sl_status st = sl_train_check_batch(&m->cfg, m->max_batch, tokens, B, "train forward");
    if (st) return st;
    const sl_clip_config *c = &m->cfg;
    const int ctx = c->context_length;
    const int P = sl_clip_num_patches(c), Tv = P + 1, maxlen = Tv > ctx ? Tv : ctx;
    if ((st = att_scratch(m, maxlen))) return st;
    m->batch = 0;
    sl_train_acts *a = &m->acts;
    const sl_train_params *p = &m->params;
    const int Wv = c->vision.width, Wt = c->text.width, D = c->embed_dim, S = c->image_size;
    const int pp = c->patch_size, kk = 3 * pp * pp, Rv = B * Tv;
    memcpy(a->ids, tokens, sizeof(int32_t) * (size_t)B * ctx);
    /* Text rows: each sequence up to its pooled position, packed. Under the
     * causal mask the later positions never reach the pooled row (nor the
     * loss), so their gradients are zero: leaving them out changes nothing
     * but the work (the encoder prunes the same way). */
    int Rt = 0;
    for (int b = 0; b < B; b++) {
        a->v_start[b] = b * Tv;
        a->v_len[b] = Tv;
        a->v_idx[b] = b * Tv;
        a->v_qrow[b] = 0;
        const int pos = clip_pool_position(c, tokens + (size_t)b * ctx);
        a->t_start[b] = Rt;
        a->t_len[b] = pos + 1;
        a->t_idx[b] = Rt + pos;
        a->t_qrow[b] = pos;
        Rt += pos + 1;
    }
    m->text_rows = Rt;

    /* Image tower: cols = im2col(pixels); patch = cols . Wpatch^T;
     * v_embed = [cls; patch] + pos; res0 = LN_pre(v_embed). */
    sl_op_im2col_patches(a->cols, pixels, B, 3, S, pp);
    sl_op_matmul_forward(a->patch, Wv, a->cols, kk, p->patch_w, 0, NULL, B * P, kk, Wv,
                         SL_OP_ACT_NONE, 0);
    sl_op_vision_embed_forward(a->v_embed, a->patch, p->cls, p->v_pos, B, P, Wv);
    sl_op_residual_layernorm_forward(a->v.blocks[0].res, a->pre_mean, a->pre_rstd, a->v_embed, NULL,
                                     p->pre_w, p->pre_b, Rv, Wv, c->vision.ln_eps);
    blocks_forward(&a->v, p->v_blocks, &c->vision, Rv, a->v_start, a->v_len, a->v_idx, a->v_qrow, B,
                   Tv, 0, m->att_scratch);
    head_forward(&a->v, p->v_blocks, &c->vision, p->post_w, p->post_b, p->v_proj, B, D);

    /* Text tower: res0 = tok[ids] + pos (every position). */
    sl_op_text_embed_forward(a->t.blocks[0].res, a->ids, p->tok, p->t_pos, a->t_start, a->t_len, B,
                             ctx, Wt);
    blocks_forward(&a->t, p->t_blocks, &c->text, Rt, a->t_start, a->t_len, a->t_idx, a->t_qrow, B,
                   ctx, 1, m->att_scratch);
    head_forward(&a->t, p->t_blocks, &c->text, p->final_w, p->final_b, p->t_proj, B, D);

    m->loss = sl_loss_infonce_forward(a->loss_saved, a->v.emb, a->t.emb, *p->logit_scale, B, D);
    m->loss_dense = 0;
    if (m->dense) m->dense->used_weight = m->dense->weight;
    if (m->dense && m->dense->used_weight > 0) {
        m->loss_dense = dense_forward(m, B);
        m->loss += m->dense->used_weight * m->loss_dense;
    }
    m->batch = B;
    if (loss) *loss = m->loss;
    return SL_OK;
}

void sl_train_model_embeddings(const sl_train_model *m, const float **img, const float **txt) {
    if (img) *img = m->acts.v.emb;
    if (txt) *txt = m->acts.t.emb;
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                 */
/* ------------------------------------------------------------------------ */

static void zero(float *x, size_t n) {
    memset(x, 0, n * sizeof *x);
}

/* Backward of head_forward and the blocks of one tower, from demb [B, D]
 * (gradient of the normalised embedding). Leaves the full gradient of
 * ta->blocks[0].res (the tower's input stream) in a->d_res. */
static void tower_backward(sl_train_acts *a, sl_train_tower_acts *ta, const sl_train_block *w,
                           sl_train_block *g, const sl_tower_config *tc, const float *ln_w,
                           float *gln_w, float *gln_b, const float *proj, float *gproj,
                           const float *demb, const int *start, const int *len, const int *idx,
                           const int *qrow, int B, int R, int D, int maxlen, int causal,
                           float *scratch) {
    const int W = tc->width, M = tc->mlp_width, L = tc->layers;
    const sl_op_act act = clip_op_act(tc->act);
    const size_t RW = (size_t)R * W;
    /* Head: L2 norm, projection, final LN (+ the folded fc2 bias). d_pool
     * [B, W]: the gradient of ta->pooled (the pooled rows after the last
     * block). */
    zero(a->d_feat, (size_t)B * D);
    sl_op_l2_normalize_backward(a->d_feat, demb, ta->emb, ta->norm, B, D);
    zero(a->d_lnf, (size_t)B * W);
    sl_op_matmul_backward(a->d_lnf, W, gproj, NULL, NULL, a->d_feat, D, ta->lnf, W, proj, 0, NULL,
                          B, W, D, SL_OP_ACT_NONE);
    zero(a->d_pool, (size_t)B * W);
    sl_op_residual_layernorm_backward(a->d_pool, gln_w, gln_b, a->d_lnf, ta->pooled, ta->meanf,
                                      ta->rstdf, ln_w, B, W);
    sl_op_add_bias_backward(g[L - 1].fc2_b, a->d_pool, B, W);
    /* Blocks, last to first. dn: the gradient of the stream after block l
     * (and, going through, of res2): d_pool [B, W] for the last block (its
     * pooled rows only), d_res [R, W] before. */
    for (int l = L - 1; l >= 0; l--) {
        const sl_train_block *k = &w[l];
        sl_train_block *gk = &g[l];
        sl_train_block_acts *s = &ta->blocks[l];
        const int last = l + 1 == L, R2 = last ? B : R;
        const size_t R2W = (size_t)R2 * W;
        float *dn = last ? a->d_pool : a->d_res;
        /* next = res2 + fc . W2^T */
        zero(a->d_fc, (size_t)R2 * M);
        sl_op_matmul_backward(a->d_fc, M, gk->fc2_w, NULL, NULL, dn, W, s->fc, M, k->fc2_w, 0, NULL,
                              R2, M, W, SL_OP_ACT_NONE);
        /* fc = act(ln2 . W1^T + b1) */
        zero(a->d_ln, R2W);
        sl_op_matmul_backward(a->d_ln, W, gk->fc1_w, gk->fc1_b, a->d_fc, a->d_fc, M, s->ln2, W,
                              k->fc1_w, 0, s->fc_pre, R2, W, M, act);
        /* ln2 = LN2(res2), res2 holding the folded o_b */
        sl_op_residual_layernorm_backward(dn, gk->ln2_w, gk->ln2_b, a->d_ln, s->res2, s->mean2,
                                          s->rstd2, k->ln2_w, R2, W);
        sl_op_add_bias_backward(gk->o_b, dn, R2, W);
        /* res2 = res + att . Wo^T (last: res's pooled rows) */
        zero(a->d_att, R2W);
        sl_op_matmul_backward(a->d_att, W, gk->o_w, NULL, NULL, dn, W, s->att, W, k->o_w, 0, NULL,
                              R2, W, W, SL_OP_ACT_NONE);
        zero(a->d_qkv, 3 * RW);
        sl_op_attention_backward(a->d_qkv, a->d_att, W, s->qkv, start, len, last ? qrow : NULL, B,
                                 W, tc->heads, causal, scratch, maxlen);
        if (last) {
            zero(a->d_res, RW);
            sl_op_gather_rows_backward(a->d_res, a->d_pool, idx, B, W);
        }
        /* qkv = ln1 . Wqkv^T + bqkv */
        zero(a->d_ln, RW);
        sl_op_matmul_backward(a->d_ln, W, gk->q_w, gk->q_b, NULL, a->d_qkv, 3 * W, s->ln1, W,
                              k->q_w, 0, NULL, R, W, 3 * W, SL_OP_ACT_NONE);
        /* ln1 = LN1(res), res holding the previous block's folded fc2 bias */
        sl_op_residual_layernorm_backward(a->d_res, gk->ln1_w, gk->ln1_b, a->d_ln, s->res, s->mean1,
                                          s->rstd1, k->ln1_w, R, W);
        if (l > 0) sl_op_add_bias_backward(g[l - 1].fc2_b, a->d_res, R, W);
    }
}

sl_status sl_train_model_backward(sl_train_model *m) {
    if (!m || !m->batch)
        return sl_set_error(SL_ERR_INVALID, "train backward: no forward pass to differentiate");
    const sl_clip_config *c = &m->cfg;
    const int B = m->batch, D = c->embed_dim, ctx = c->context_length;
    const int P = sl_clip_num_patches(c), Tv = P + 1, maxlen = Tv > ctx ? Tv : ctx;
    const int Wv = c->vision.width, Wt = c->text.width, pp = c->patch_size, kk = 3 * pp * pp;
    sl_status st = att_scratch(m, maxlen);
    if (st) return st;
    sl_train_acts *a = &m->acts;
    const sl_train_params *p = &m->params;
    sl_train_params *g = &m->grads;

    /* Loss: gradients of the normalised embeddings and of logit_scale. */
    zero(a->d_img, (size_t)B * D);
    zero(a->d_txt, (size_t)B * D);
    sl_loss_infonce_backward(a->d_img, a->d_txt, g->logit_scale, a->d_logits, 1.0f, a->loss_saved,
                             a->v.emb, a->t.emb, *p->logit_scale, B, D);
    if (m->dense && m->dense->used_weight > 0) dense_backward(m, B);

    /* Image tower, then LN_pre, embeddings and the patch conv. */
    tower_backward(a, &a->v, p->v_blocks, g->v_blocks, &c->vision, p->post_w, g->post_w, g->post_b,
                   p->v_proj, g->v_proj, a->d_img, a->v_start, a->v_len, a->v_idx, a->v_qrow, B,
                   B * Tv, D, Tv, 0, m->att_scratch);
    const int Rv = B * Tv;
    zero(a->d_emb, (size_t)Rv * Wv);
    sl_op_residual_layernorm_backward(a->d_emb, g->pre_w, g->pre_b, a->d_res, a->v_embed,
                                      a->pre_mean, a->pre_rstd, p->pre_w, Rv, Wv);
    float *d_patch = a->d_att; /* [B * P, Wv] */
    zero(d_patch, (size_t)B * P * Wv);
    sl_op_vision_embed_backward(d_patch, g->cls, g->v_pos, a->d_emb, B, P, Wv);
    sl_op_matmul_backward(NULL, 0, g->patch_w, NULL, NULL, d_patch, Wv, a->cols, kk, p->patch_w, 0,
                          NULL, B * P, kk, Wv, SL_OP_ACT_NONE);

    /* Text tower, then the token and position embeddings. */
    tower_backward(a, &a->t, p->t_blocks, g->t_blocks, &c->text, p->final_w, g->final_w, g->final_b,
                   p->t_proj, g->t_proj, a->d_txt, a->t_start, a->t_len, a->t_idx, a->t_qrow, B,
                   m->text_rows, D, ctx, 1, m->att_scratch);
    sl_op_text_embed_backward(g->tok, g->t_pos, a->d_res, a->ids, a->t_start, a->t_len, B, ctx, Wt);
    return SL_OK;
}

void sl_train_model_zero_grad(sl_train_model *m) {
    if (m) zero(m->grads_mem, m->num_params);
}

const sl_train_tensor *sl_train_model_tensor(const sl_train_model *m, size_t i, float **param,
                                             float **grad) {
    if (!m || i >= m->num_tensors) return NULL;
    const sl_train_tensor *t = &m->tensors[i];
    if (param) *param = m->params_mem + t->offset;
    if (grad) *grad = m->grads_mem + t->offset;
    return t;
}
