/*
 * query/query.c - batch lookups against an index directory: text -> image,
 * image -> text, phrase -> region, and fine re-ranking (see query.h).
 */
#include "sightline/query.h"

#include "kernels/kernels.h"
#include "sightline/default_model.h"
#include "sightline/encode_files.h"
#include "sightline/encoder.h"
#include "sightline/image.h"
#include "sightline/indexer.h"
#include "sightline/store.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------ */
/* Handle                                                                   */
/* ------------------------------------------------------------------------ */

struct sl_query {
    sl_query_opts o;           /* options, defaults filled in */
    sl_store *store;           /* read-only index */
    sl_encoder *enc;           /* the index's model */
    const sl_clip_config *cfg; /* enc's configuration */
    const sl_tokenizer *tok;   /* enc's tokenizer or NULL */
    size_t D;                  /* embedding size */
    size_t P;                  /* patches per image of the model */
    size_t C;                  /* text context length */
    int grid;                  /* patch grid side (sl_encoder_patch_grid) */
    int store_patches;         /* patches per image in the index (0: no regions) */
    sl_preprocess pp;          /* the model's preprocessing */
    sl_ground_opts box;        /* phrase boxes (o.box points here) */
};

sl_status sl_query_open(const sl_query_opts *opts, sl_query **out) {
    *out = NULL;
    if (!opts || !opts->index_dir)
        return sl_set_error(SL_ERR_INVALID, "query: no index directory given");
    int cuda, bf16;
    sl_status st = sl_device_parse(opts->device, &cuda, &bf16);
    if (st) return st;
    if (opts->box && (st = sl_ground_opts_check(opts->box))) return st;
    sl_query *q = calloc(1, sizeof *q);
    if (!q) return sl_set_error(SL_ERR_NOMEM, "query: out of memory");
    q->o = *opts;
    if (q->o.k <= 0) q->o.k = 10;
    if (q->o.k > SL_QUERY_MAX_K) q->o.k = SL_QUERY_MAX_K;
    if (q->o.batch <= 0) q->o.batch = 32;
    if (q->o.batch > SL_QUERY_MAX_BATCH) q->o.batch = SL_QUERY_MAX_BATCH;
    q->box = opts->box ? *opts->box : sl_ground_opts_default();
    q->o.box = &q->box;
    if (q->o.max_pixels == 0) q->o.max_pixels = 100000000;

    char *recorded = NULL, *fallback = NULL;
    struct stat sb;
    char man[PATH_MAX + 32];
    snprintf(man, sizeof man, "%s/manifest.json", opts->index_dir);
    if (stat(man, &sb) != 0) {
        st = sl_set_error(SL_ERR_NOT_FOUND,
                          "%s: no index here (build one with 'sightline index build')",
                          opts->index_dir);
        goto fail;
    }
    sl_store_opts so = {.read_only = 1};
    if ((st = sl_store_open(opts->index_dir, &so, &q->store))) goto fail;

    /* the model: given, or the one recorded with the index */
    const char *model = opts->model;
    if (!model) {
        if ((st = sl_store_get_state(q->store, "model_path", &recorded))) goto fail;
        if (!recorded) {
            st = sl_set_error(SL_ERR_NOT_FOUND,
                              "%s: the index records no model path; give --model with the "
                              "model it was built with",
                              opts->index_dir);
            goto fail;
        }
        model = recorded;
    }
    char fp[65];
    sl_status fst = sl_model_fingerprint(model, fp);
    if (!opts->model && (fst || strcmp(fp, sl_store_model(q->store)) != 0)) {
        /* the recorded model is gone or changed: the default model when it
         * is the one the index was built with (an index built from a copy) */
        char dfp[65];
        if (sl_default_model(&fallback, NULL) == SL_OK &&
            sl_model_fingerprint(fallback, dfp) == SL_OK &&
            !strcmp(dfp, sl_store_model(q->store))) {
            SL_INFO("%s: the recorded model %s is %s; using the default model %s (same "
                    "fingerprint)",
                    opts->index_dir, model, fst ? "gone" : "changed", fallback);
            model = fallback;
            memcpy(fp, dfp, sizeof fp);
            fst = SL_OK;
        } else if (fst) {
            fst = sl_model_fingerprint(model, fp); /* its message again */
        }
    }
    if ((st = fst)) {
        if (!opts->model)
            sl_wrap_error(st, "the model recorded with the index is gone (give --model): ");
        goto fail;
    }
    if (strcmp(fp, sl_store_model(q->store)) != 0) {
        st = sl_set_error(SL_ERR_INVALID,
                          "%s: model fingerprint %.12s... differs from the index's %.12s... "
                          "(%s); query with the model the index was built with",
                          model, fp, sl_store_model(q->store),
                          opts->model ? "wrong --model" : "the recorded model has changed since");
        goto fail;
    }
    sl_encoder_opts eo = {.threads = opts->threads, .device = opts->device};
    if ((st = sl_encoder_open(model, &eo, &q->enc))) goto fail;
    q->cfg = sl_encoder_config(q->enc);
    q->tok = sl_encoder_tokenizer(q->enc);
    q->D = (size_t)q->cfg->embed_dim;
    q->P = (size_t)sl_encoder_num_patches(q->enc);
    q->C = (size_t)q->cfg->context_length;
    q->grid = sl_encoder_patch_grid(q->enc);
    q->store_patches = sl_store_patches(q->store);
    if ((size_t)sl_store_dim(q->store) != q->D) {
        st = sl_set_error(SL_ERR_INVALID, "%s: the model embeds in %zu dimensions, the index %d",
                          model, q->D, sl_store_dim(q->store));
        goto fail;
    }
    if (q->store_patches && (size_t)q->store_patches != q->P) {
        st = sl_set_error(SL_ERR_INVALID, "%s: the index holds %d patches per image, the model %zu",
                          opts->index_dir, q->store_patches, q->P);
        goto fail;
    }
    q->pp = sl_preprocess_clip(q->cfg->image_size);
    memcpy(q->pp.mean, q->cfg->image_mean, sizeof q->pp.mean);
    memcpy(q->pp.std, q->cfg->image_std, sizeof q->pp.std);
    free(recorded);
    free(fallback);
    *out = q;
    return SL_OK;
fail:
    free(recorded);
    free(fallback);
    sl_query_free(q);
    return st;
}

void sl_query_free(sl_query *q) {
    if (!q) return;
    sl_encoder_free(q->enc);
    if (q->store) sl_store_abandon(q->store); /* read-only: nothing to write */
    free(q);
}

sl_status sl_query_check(sl_query *q, sl_query_kind kind) {
    if ((kind == SL_QUERY_TEXT || kind == SL_QUERY_PHRASE || kind == SL_QUERY_IMAGE) && !q->tok &&
        (kind != SL_QUERY_IMAGE || q->o.rerank == SL_RERANK_FINE))
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "the model has no tokenizer files (vocab.json, merges.txt)");
    if (kind == SL_QUERY_IMAGE && sl_store_count(q->store, SL_COLL_TEXTS) == 0)
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: the index has no texts to search; build the text side with "
                            "'sightline index texts --index %s --model MODEL --texts FILE'",
                            q->o.index_dir, q->o.index_dir);
    if (q->o.rerank == SL_RERANK_FINE && kind != SL_QUERY_PHRASE && q->store_patches == 0)
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: --rerank fine needs the stored patch embeddings of an index "
                            "built with --region",
                            q->o.index_dir);
    return SL_OK;
}

void sl_query_result_clear(sl_query_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->hits[i].path);
        free(r->hits[i].text);
    }
    free(r->hits);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Mark a query failed with the current error message. */
static void fail_query(sl_query_result *r, sl_status st, const char *msg) {
    r->status = st ? st : SL_ERR_INVALID;
    snprintf(r->error, sizeof r->error, "%s", msg);
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\f' && *s != '\v') return 0;
    return 1;
}

/* One candidate: id and score, sorted best first (ties: smaller id). */
typedef struct cand {
    int64_t id;
    float score;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int cmp_hit_score(const void *a, const void *b) {
    const sl_query_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

float sl_query_late_score(const float *tokens, size_t nt, const float *patches, size_t np,
                          size_t d) {
    if (nt == 0 || np == 0) return 0.0f;
    double sum = 0.0;
    for (size_t t = 0; t < nt; t++) {
        const float *a = tokens + t * d;
        float best = -INFINITY;
        for (size_t p = 0; p < np; p++) {
            const float *b = patches + p * d;
            float s = 0.0f;
            for (size_t j = 0; j < d; j++) s += a[j] * b[j];
            if (s > best) best = s;
        }
        sum += best;
    }
    return (float)(sum / (double)nt);
}

/* Tokenize `text` into ids [C]; *used gets the count before padding. Fails
 * (with the message set) for an id the model's vocabulary lacks. */
static sl_status tokenize(sl_query *q, const char *text, int32_t *ids, int *used) {
    sl_status st = sl_tokenizer_encode(q->tok, text, (int)q->C, 0, ids, used);
    if (st) return st;
    for (size_t j = 0; j < q->C; j++)
        if (ids[j] < 0 || ids[j] >= q->cfg->vocab_size)
            return sl_set_error(SL_ERR_INVALID,
                                "token id %d at position %zu is outside the model's vocabulary "
                                "[0, %d)",
                                (int)ids[j], j, q->cfg->vocab_size);
    return SL_OK;
}

/* Normalised token embeddings used by late interaction: rows 1..used-1 of
 * tok [C, D] copied into out [used - 1, D]; returns the row count. */
static size_t late_tokens(sl_query *q, const float *tok, int used, float *out) {
    size_t nt = used > 1 ? (size_t)used - 1 : 0;
    memcpy(out, tok + q->D, nt * q->D * sizeof(float));
    sl_cpu_l2_normalize_rows(out, nt, q->D);
    return nt;
}

/* Fill hits from candidates: image paths (coll IMAGES) or texts. */
static sl_status fill_hits(sl_query *q, sl_collection coll, const cand *c, size_t n,
                           sl_query_result *r) {
    r->hits = calloc(n ? n : 1, sizeof *r->hits);
    if (!r->hits) return sl_set_error(SL_ERR_NOMEM, "query: out of memory");
    for (size_t i = 0; i < n; i++) {
        sl_query_hit *h = &r->hits[r->n];
        h->id = c[i].id;
        h->score = c[i].score;
        sl_status st;
        if (coll == SL_COLL_TEXTS)
            st = sl_store_get_text(q->store, (uint64_t)c[i].id, &h->text);
        else
            st = sl_store_get_path(q->store, (uint64_t)c[i].id, &h->path, &h->path_len);
        if (st) return st;
        r->n++;
    }
    return SL_OK;
}

/* Decode and preprocess images in parallel into pix [n, 3, S, S]; per-image
 * status in stv and message in msg; maps and picture sizes when asked. */
static void decode_images(sl_query *q, const char *const *paths, size_t n, float *pix,
                          sl_status *stv, char (*msg)[512], sl_crop_map *maps, int *wh) {
    const size_t img_floats = 3 * (size_t)q->cfg->image_size * (size_t)q->cfg->image_size;
    sl_decode_opts dopt = {.max_pixels = q->o.max_pixels, .min_short_side = q->cfg->image_size};
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < n; i++) {
        sl_image img;
        stv[i] = sl_image_load(paths[i], &dopt, &img);
        if (stv[i] == SL_OK) {
            stv[i] =
                sl_image_preprocess(&img, &q->pp, pix + i * img_floats, maps ? &maps[i] : NULL);
            if (wh) {
                wh[2 * i] = img.orig_width ? img.orig_width : img.width;
                wh[2 * i + 1] = img.orig_height ? img.orig_height : img.height;
            }
            sl_image_free(&img);
        }
        if (stv[i] != SL_OK) snprintf(msg[i], sizeof msg[i], "%s", sl_last_error());
    }
}

/* ------------------------------------------------------------------------ */
/* Text -> image                                                            */
/* ------------------------------------------------------------------------ */

/* Candidates fetched per query: k, or max(4k, 50) to re-rank. */
static int fetch_k(sl_query *q, sl_collection coll) {
    int k = q->o.k;
    if (q->o.rerank == SL_RERANK_FINE) {
        k = 4 * k > 50 ? 4 * k : 50;
        if (k > 4096) k = 4096;
    }
    uint64_t have = sl_store_count(q->store, coll);
    if (have > 0 && (uint64_t)k > have) k = (int)have;
    return k < 1 ? 1 : k;
}

static sl_status run_text(sl_query *q, const char *const *queries, size_t n, sl_query_result *res) {
    const size_t B = (size_t)q->o.batch, C = q->C, D = q->D, P = q->P;
    const int rerank = q->o.rerank == SL_RERANK_FINE;
    const int kk = fetch_k(q, SL_COLL_IMAGES);
    int32_t *ids = malloc(B * C * sizeof *ids);
    int *used = malloc(B * sizeof *used);
    size_t *row = malloc(B * sizeof *row); /* batch row -> query index */
    float *emb = malloc(B * D * sizeof *emb);
    float *tokout = rerank ? malloc(B * C * D * sizeof *tokout) : NULL;
    float *scores = malloc(B * (size_t)kk * sizeof *scores);
    int64_t *hits = malloc(B * (size_t)kk * sizeof *hits);
    float *patches = rerank ? malloc(P * D * sizeof *patches) : NULL;
    float *toks = rerank ? malloc(C * D * sizeof *toks) : NULL;
    cand *cands = malloc((size_t)kk * sizeof *cands);
    sl_status st = SL_OK;
    if (!ids || !used || !row || !emb || (rerank && (!tokout || !patches || !toks)) || !scores ||
        !hits || !cands) {
        st = sl_set_error(SL_ERR_NOMEM, "query: out of memory for a batch of %zu", B);
        goto done;
    }
    for (size_t b0 = 0; b0 < n && st == SL_OK; b0 += B) {
        size_t nb = n - b0 < B ? n - b0 : B, ng = 0;
        for (size_t i = 0; i < nb; i++) {
            const char *text = queries[b0 + i];
            if (blank(text)) {
                fail_query(&res[b0 + i], SL_ERR_INVALID, "empty query");
                continue;
            }
            sl_status ts = tokenize(q, text, ids + ng * C, &used[ng]);
            if (ts) {
                fail_query(&res[b0 + i], ts, sl_last_error());
                continue;
            }
            row[ng++] = b0 + i;
        }
        if (!ng) continue;
        if ((st = sl_encoder_encode_tokens(q->enc, ids, ng, emb, tokout, 1))) break;
        if ((st = sl_store_search(q->store, SL_COLL_IMAGES, emb, ng, kk, scores, hits))) break;
        for (size_t g = 0; g < ng && st == SL_OK; g++) {
            size_t nc = 0;
            for (int j = 0; j < kk; j++) {
                int64_t id = hits[g * (size_t)kk + (size_t)j];
                if (id < 0) continue;
                cands[nc].id = id;
                cands[nc++].score = scores[g * (size_t)kk + (size_t)j];
            }
            if (rerank) {
                size_t nt = late_tokens(q, tokout + g * C * D, used[g], toks);
                for (size_t c = 0; c < nc && st == SL_OK; c++) {
                    st = sl_store_get_patches(q->store, (uint64_t)cands[c].id, patches);
                    if (st == SL_OK) cands[c].score = sl_query_late_score(toks, nt, patches, P, D);
                }
                if (st) break;
                qsort(cands, nc, sizeof *cands, cmp_cand);
            }
            if (nc > (size_t)q->o.k) nc = (size_t)q->o.k;
            st = fill_hits(q, SL_COLL_IMAGES, cands, nc, &res[row[g]]);
        }
    }
done:
    free(ids);
    free(used);
    free(row);
    free(emb);
    free(tokout);
    free(scores);
    free(hits);
    free(patches);
    free(toks);
    free(cands);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Image -> text                                                            */
/* ------------------------------------------------------------------------ */

/* Re-score candidate texts against one image's normalised patches [P, D]:
 * the texts are tokenized and encoded with token outputs in chunks. */
static sl_status rerank_texts(sl_query *q, const float *patches, cand *cands, size_t nc) {
    const size_t C = q->C, D = q->D, CH = 32;
    int32_t *ids = malloc(CH * C * sizeof *ids);
    int *used = malloc(CH * sizeof *used);
    float *emb = malloc(CH * D * sizeof *emb);
    float *tokout = malloc(CH * C * D * sizeof *tokout);
    float *toks = malloc(C * D * sizeof *toks);
    sl_status st = SL_OK;
    if (!ids || !used || !emb || !tokout || !toks) {
        st = sl_set_error(SL_ERR_NOMEM, "query: out of memory re-ranking");
        goto done;
    }
    for (size_t c0 = 0; c0 < nc && st == SL_OK; c0 += CH) {
        size_t m = nc - c0 < CH ? nc - c0 : CH;
        for (size_t i = 0; i < m && st == SL_OK; i++) {
            char *text = NULL;
            st = sl_store_get_text(q->store, (uint64_t)cands[c0 + i].id, &text);
            if (st == SL_OK) st = tokenize(q, text, ids + i * C, &used[i]);
            free(text);
        }
        if (st == SL_OK) st = sl_encoder_encode_tokens(q->enc, ids, m, emb, tokout, 1);
        for (size_t i = 0; i < m && st == SL_OK; i++) {
            size_t nt = late_tokens(q, tokout + i * C * D, used[i], toks);
            cands[c0 + i].score = sl_query_late_score(toks, nt, patches, q->P, D);
        }
    }
    if (st == SL_OK) qsort(cands, nc, sizeof *cands, cmp_cand);
done:
    free(ids);
    free(used);
    free(emb);
    free(tokout);
    free(toks);
    return st;
}

/* State of an image -> text run across the batches of sl_encode_image_files. */
typedef struct image_run {
    sl_query *q;
    const char *const *queries; /* the image paths */
    sl_query_result *res;       /* [n] */
    int kk;                     /* candidates fetched per query */
    size_t *row;                /* [batch] good row -> query index */
    float *scores;              /* [batch, kk] */
    int64_t *hits;              /* [batch, kk] */
    cand *cands;                /* [kk] */
    float *patch;               /* [P, D] normalised patches of one query (rerank) */
} image_run;

/* One encoded batch: one FAISS search for its good images. */
static sl_status image_batch(void *ctx, size_t first, size_t n, const sl_status *status,
                             const char *const *reason, const float *emb, const float *patches,
                             size_t n_good) {
    image_run *ir = ctx;
    sl_query *q = ir->q;
    const size_t kk = (size_t)ir->kk, PD = q->P * q->D;
    size_t g = 0;
    for (size_t i = 0; i < n; i++) {
        size_t qi = first + i;
        if (blank(ir->queries[qi]))
            fail_query(&ir->res[qi], SL_ERR_INVALID, "empty query");
        else if (status[i] != SL_OK)
            fail_query(&ir->res[qi], status[i], reason[i] ? reason[i] : "cannot read");
        else
            ir->row[g++] = qi;
    }
    if (n_good == 0) return SL_OK;
    sl_status st =
        sl_store_search(q->store, SL_COLL_TEXTS, emb, n_good, ir->kk, ir->scores, ir->hits);
    for (size_t j = 0; j < n_good && st == SL_OK; j++) {
        size_t nc = 0;
        for (size_t c = 0; c < kk; c++) {
            int64_t id = ir->hits[j * kk + c];
            if (id < 0) continue;
            ir->cands[nc].id = id;
            ir->cands[nc++].score = ir->scores[j * kk + c];
        }
        if (patches) {
            memcpy(ir->patch, patches + j * PD, PD * sizeof(float));
            sl_cpu_l2_normalize_rows(ir->patch, q->P, q->D);
            if ((st = rerank_texts(q, ir->patch, ir->cands, nc))) break;
        }
        if (nc > (size_t)q->o.k) nc = (size_t)q->o.k;
        st = fill_hits(q, SL_COLL_TEXTS, ir->cands, nc, &ir->res[ir->row[j]]);
    }
    return st;
}

/* Image queries are decoded, preprocessed and encoded by the loop `encode
 * --images` uses (encode_files.h); each batch is searched at once. */
static sl_status run_image(sl_query *q, const char *const *queries, size_t n,
                           sl_query_result *res) {
    const size_t B = (size_t)q->o.batch;
    const int rerank = q->o.rerank == SL_RERANK_FINE;
    image_run ir = {.q = q, .queries = queries, .res = res, .kk = fetch_k(q, SL_COLL_TEXTS)};
    ir.row = malloc(B * sizeof *ir.row);
    ir.scores = malloc(B * (size_t)ir.kk * sizeof *ir.scores);
    ir.hits = malloc(B * (size_t)ir.kk * sizeof *ir.hits);
    ir.cands = malloc((size_t)ir.kk * sizeof *ir.cands);
    ir.patch = rerank ? malloc(q->P * q->D * sizeof *ir.patch) : NULL;
    sl_status st;
    if (!ir.row || !ir.scores || !ir.hits || !ir.cands || (rerank && !ir.patch)) {
        st = sl_set_error(SL_ERR_NOMEM, "query: out of memory for a batch of %zu images", B);
    } else {
        sl_image_files_opts fo = {
            .batch = B, .max_pixels = q->o.max_pixels, .normalize = 1, .patches = rerank};
        st = sl_encode_image_files(q->enc, queries, n, &fo, image_batch, &ir);
    }
    free(ir.row);
    free(ir.scores);
    free(ir.hits);
    free(ir.cands);
    free(ir.patch);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Phrase -> region                                                         */
/* ------------------------------------------------------------------------ */

/* Box of `phrase` on normalised patches of a picture width x height. */
static sl_status box_hit(sl_query *q, const float *patches, const float *phrase,
                         const sl_crop_map *map, int width, int height, sl_query_hit *h) {
    float sim[SL_STORE_MAX_PATCHES];
    sl_ground_sim_map(patches, q->P, q->D, phrase, sim);
    sl_status st = sl_ground_box(sim, q->grid, q->grid, (float)q->cfg->image_size / (float)q->grid,
                                 &q->box, map, width, height, &h->box, &h->score);
    if (st == SL_OK) {
        h->has_box = 1;
        h->width = width;
        h->height = height;
    }
    return st;
}

/* Box of `phrase` on indexed image `id` from its stored patches and size. */
static sl_status stored_box(sl_query *q, uint64_t id, const float *phrase, float *patches,
                            sl_query_hit *h) {
    sl_status st = sl_store_get_patches(q->store, id, patches);
    if (st == SL_OK && !h->path) st = sl_store_get_path(q->store, id, &h->path, &h->path_len);
    if (st) return st;
    sl_file_rec rec;
    int found = 0;
    if ((st = sl_store_get_file(q->store, h->path, h->path_len, &rec, &found))) return st;
    if (!found || rec.width <= 0 || rec.height <= 0)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: the index records no picture size", h->path);
    sl_crop_map map;
    if ((st = sl_image_crop_map(rec.width, rec.height, &q->pp, &map))) return st;
    h->id = (int64_t)id;
    return box_hit(q, patches, phrase, &map, rec.width, rec.height, h);
}

/* The image id of `path` when indexed (as given, or by its real path). */
static sl_status indexed_id(sl_query *q, const char *path, uint64_t *id) {
    *id = 0;
    sl_file_rec rec;
    int found = 0;
    sl_status st = sl_store_get_file(q->store, path, strlen(path), &rec, &found);
    if (st == SL_OK && !(found && rec.id)) {
        char real[PATH_MAX];
        if (realpath(path, real))
            st = sl_store_get_file(q->store, real, strlen(real), &rec, &found);
    }
    if (st == SL_OK && found) *id = rec.id;
    return st;
}

/* Group region hits by image: the best images (by their best patch) into
 * out (at most k), best first. */
static size_t group_regions(const float *scores, const int64_t *ids, int kr, int k, cand *out) {
    size_t n = 0;
    for (int j = 0; j < kr; j++) { /* hits come best first */
        if (ids[j] < 0) continue;
        int64_t img = ids[j] / SL_STORE_MAX_PATCHES;
        size_t i = 0;
        while (i < n && out[i].id != img) i++;
        if (i < n) continue;
        if (n == (size_t)k) break;
        out[n].id = img;
        out[n++].score = scores[j];
    }
    return n;
}

static sl_status run_phrase(sl_query *q, const char *const *queries, size_t n,
                            sl_query_result *res) {
    const size_t B = (size_t)q->o.batch, C = q->C, D = q->D, P = q->P;
    const size_t S = (size_t)q->cfg->image_size, img_floats = 3 * S * S;
    const int k = q->o.k;
    uint64_t nreg = q->store_patches ? sl_store_count(q->store, SL_COLL_REGIONS) : 0;
    /* region hits to search: k * P always holds k distinct images (each has
     * P patches); capped, so a huge k may yield fewer images */
    size_t krz = (size_t)k * (P ? P : 1);
    int kr = krz < 16384 ? (int)krz : 16384;
    if (nreg && (uint64_t)kr > nreg) kr = (int)nreg;
    if (kr < 1) kr = 1;
    int32_t *ids = malloc(B * C * sizeof *ids);
    size_t *row = malloc(B * sizeof *row);
    const char **phr = malloc(B * sizeof *phr);
    char **img = calloc(B, sizeof *img); /* image path of the within-image form, or NULL */
    float *emb = malloc(B * D * sizeof *emb);
    float *corpus = malloc(B * D * sizeof *corpus);
    size_t *crow = malloc(B * sizeof *crow);
    float *scores = malloc(B * (size_t)kr * sizeof *scores);
    int64_t *hits = malloc(B * (size_t)kr * sizeof *hits);
    cand *cands = malloc((size_t)k * sizeof *cands);
    float *patches = malloc(P * D * sizeof *patches);
    float *pix = malloc(B * img_floats * sizeof *pix);
    float *ipatch = malloc(B * P * D * sizeof *ipatch);
    float *iemb = malloc(B * D * sizeof *iemb);
    sl_status *stv = malloc(B * sizeof *stv);
    char(*msg)[512] = malloc(B * sizeof *msg);
    const char **dpaths = malloc(B * sizeof *dpaths);
    size_t *drow = malloc(B * sizeof *drow);
    sl_crop_map *maps = malloc(B * sizeof *maps);
    int *wh = malloc(2 * B * sizeof *wh);
    sl_status st = SL_OK;
    if (!ids || !row || !phr || !img || !emb || !corpus || !crow || !scores || !hits || !cands ||
        !patches || !pix || !ipatch || !iemb || !stv || !msg || !dpaths || !drow || !maps || !wh) {
        st = sl_set_error(SL_ERR_NOMEM, "query: out of memory for a batch of %zu phrases", B);
        goto done;
    }
    for (size_t b0 = 0; b0 < n && st == SL_OK; b0 += B) {
        size_t nb = n - b0 < B ? n - b0 : B, ng = 0;
        /* parse and tokenize */
        for (size_t i = 0; i < nb; i++) {
            sl_query_result *r = &res[b0 + i];
            const char *line = queries[b0 + i], *tab = strchr(line, '\t');
            const char *phrase = tab ? tab + 1 : line;
            if (tab && tab == line) {
                fail_query(r, SL_ERR_INVALID, "empty image path before the tab");
                continue;
            }
            if (blank(phrase)) {
                fail_query(r, SL_ERR_INVALID, "empty phrase");
                continue;
            }
            if (!tab && nreg == 0) {
                fail_query(r, SL_ERR_NOT_FOUND,
                           "the index has no region embeddings: corpus-wide phrase queries need "
                           "an index built with 'sightline index build --region' (or give "
                           "image_path<TAB>phrase)");
                continue;
            }
            int used;
            sl_status ts = tokenize(q, phrase, ids + ng * C, &used);
            if (ts) {
                fail_query(r, ts, sl_last_error());
                continue;
            }
            free(img[ng]);
            img[ng] = NULL;
            if (tab && !(img[ng] = strndup(line, (size_t)(tab - line)))) {
                st = sl_set_error(SL_ERR_NOMEM, "query: out of memory");
                break;
            }
            phr[ng] = phrase;
            row[ng++] = b0 + i;
        }
        if (st || !ng) continue;
        if ((st = sl_encoder_encode_tokens(q->enc, ids, ng, emb, NULL, 1))) break;

        /* corpus-wide: one search of the region index for the batch */
        size_t nc = 0;
        for (size_t g = 0; g < ng; g++)
            if (!img[g]) {
                memcpy(corpus + nc * D, emb + g * D, D * sizeof(float));
                crow[nc++] = g;
            }
        if (nc && (st = sl_store_search(q->store, SL_COLL_REGIONS, corpus, nc, kr, scores, hits)))
            break;
        for (size_t c = 0; c < nc && st == SL_OK; c++) {
            size_t g = crow[c];
            sl_query_result *r = &res[row[g]];
            size_t m = group_regions(scores + c * (size_t)kr, hits + c * (size_t)kr, kr, k, cands);
            if (!(r->hits = calloc(m ? m : 1, sizeof *r->hits))) {
                st = sl_set_error(SL_ERR_NOMEM, "query: out of memory");
                break;
            }
            sl_status bs = SL_OK;
            for (size_t i = 0; i < m && bs == SL_OK; i++) {
                r->n = i + 1;
                bs = stored_box(q, (uint64_t)cands[i].id, emb + g * D, patches, &r->hits[i]);
            }
            if (bs) {
                sl_query_result_clear(r);
                fail_query(r, bs, sl_last_error());
                continue;
            }
            /* the box score is the peak patch similarity: the order it gives */
            qsort(r->hits, r->n, sizeof *r->hits, cmp_hit_score);
        }
        if (st) break;

        /* within one image: stored patches when indexed, else decode + encode */
        size_t nd = 0;
        for (size_t g = 0; g < ng && st == SL_OK; g++) {
            if (!img[g]) continue;
            sl_query_result *r = &res[row[g]];
            uint64_t id = 0;
            if (q->store_patches && (st = indexed_id(q, img[g], &id))) break;
            if (id) {
                if (!(r->hits = calloc(1, sizeof *r->hits))) {
                    st = sl_set_error(SL_ERR_NOMEM, "query: out of memory");
                    break;
                }
                r->n = 1;
                sl_status bs = stored_box(q, id, emb + g * D, patches, &r->hits[0]);
                if (bs) {
                    sl_query_result_clear(r);
                    fail_query(r, bs, sl_last_error());
                }
                continue;
            }
            dpaths[nd] = img[g];
            drow[nd++] = g;
        }
        if (st || !nd) continue;
        decode_images(q, dpaths, nd, pix, stv, msg, maps, wh);
        size_t ne = 0;
        for (size_t i = 0; i < nd; i++) {
            if (stv[i] != SL_OK) {
                fail_query(&res[row[drow[i]]], stv[i], msg[i]);
                continue;
            }
            if (ne != i) {
                memmove(pix + ne * img_floats, pix + i * img_floats, img_floats * sizeof(float));
                maps[ne] = maps[i];
                wh[2 * ne] = wh[2 * i];
                wh[2 * ne + 1] = wh[2 * i + 1];
            }
            drow[ne++] = drow[i];
        }
        if (!ne) continue;
        if ((st = sl_encoder_encode_images(q->enc, pix, ne, iemb, ipatch, 1))) break;
        sl_cpu_l2_normalize_rows(ipatch, ne * P, D);
        for (size_t i = 0; i < ne && st == SL_OK; i++) {
            size_t g = drow[i];
            sl_query_result *r = &res[row[g]];
            if (!(r->hits = calloc(1, sizeof *r->hits)) || !(r->hits[0].path = strdup(img[g]))) {
                st = sl_set_error(SL_ERR_NOMEM, "query: out of memory");
                break;
            }
            r->n = 1;
            r->hits[0].id = -1;
            r->hits[0].path_len = strlen(img[g]);
            sl_status bs = box_hit(q, ipatch + i * P * D, emb + g * D, &maps[i], wh[2 * i],
                                   wh[2 * i + 1], &r->hits[0]);
            if (bs) {
                sl_query_result_clear(r);
                fail_query(r, bs, sl_last_error());
            }
        }
    }
done:
    for (size_t i = 0; img && i < B; i++) free(img[i]);
    free(ids);
    free(row);
    free(phr);
    free(img);
    free(emb);
    free(corpus);
    free(crow);
    free(scores);
    free(hits);
    free(cands);
    free(patches);
    free(pix);
    free(ipatch);
    free(iemb);
    free(stv);
    free(msg);
    free(dpaths);
    free(drow);
    free(maps);
    free(wh);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Entry                                                                    */
/* ------------------------------------------------------------------------ */

sl_status sl_query_run(sl_query *q, sl_query_kind kind, const char *const *queries, size_t n,
                       sl_query_result *results) {
    if (!q || (n && (!queries || !results)))
        return sl_set_error(SL_ERR_INVALID, "sl_query_run: NULL argument");
    for (size_t i = 0; i < n; i++) memset(&results[i], 0, sizeof results[i]);
    sl_status st = sl_query_check(q, kind);
    if (st) return st;
    switch (kind) {
        case SL_QUERY_TEXT:
            return run_text(q, queries, n, results);
        case SL_QUERY_IMAGE:
            return run_image(q, queries, n, results);
        case SL_QUERY_PHRASE:
            return run_phrase(q, queries, n, results);
    }
    return sl_set_error(SL_ERR_INVALID, "sl_query_run: unknown query kind %d", (int)kind);
}
