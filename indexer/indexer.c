/*
 * indexer/indexer.c - build and update an index from image sources: walk,
 * classify (unchanged / to encode / gone), decode on worker threads through
 * a bounded queue, encode in batches, commit each batch to the store, sweep.
 */
#include "sightline/indexer.h"
#include "sightline/encoder.h"
#include "sightline/image.h"
#include "sightline/store.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_IMAGE_FILE ((size_t)256 << 20) /* bytes read from one image file */

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */
/* ------------------------------------------------------------------------ */

void sl_sha256(const void *data, size_t len, uint8_t digest[32]) {
    unsigned int n = 32;
    EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL);
}

void sl_hex(const uint8_t *bytes, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[bytes[i] >> 4];
        out[2 * i + 1] = hx[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Feed a whole file into a digest (mmap'ed). Missing optional files are
 * skipped when `optional`. */
static sl_status digest_file(EVP_MD_CTX *ctx, const char *path, int optional) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (optional && errno == ENOENT) return SL_OK;
        return sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
    }
    struct stat sb;
    sl_status st = SL_OK;
    if (fstat(fd, &sb) != 0) {
        st = sl_set_error(SL_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (sb.st_size > 0) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            st = sl_set_error(SL_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        } else {
            EVP_DigestUpdate(ctx, p, (size_t)sb.st_size);
            munmap(p, (size_t)sb.st_size);
        }
    }
    close(fd);
    return st;
}

sl_status sl_model_fingerprint(const char *model_path, char out[65]) {
    struct stat sb;
    if (stat(model_path, &sb) != 0)
        return sl_set_error(SL_ERR_NOT_FOUND, "%s: no such model", model_path);
    char a[4096], b[4096];
    if (S_ISDIR(sb.st_mode)) {
        snprintf(a, sizeof a, "%s/config.json", model_path);
        snprintf(b, sizeof b, "%s/model.safetensors", model_path);
    } else {
        snprintf(b, sizeof b, "%s", model_path);
        const char *slash = strrchr(model_path, '/');
        int dl = slash ? (int)(slash - model_path) : 1;
        snprintf(a, sizeof a, "%.*s/config.json", dl, slash ? model_path : ".");
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    sl_status st = digest_file(ctx, a, 1);
    if (st == SL_OK) st = digest_file(ctx, b, 0);
    uint8_t d[32];
    unsigned int n = 32;
    EVP_DigestFinal_ex(ctx, d, &n);
    EVP_MD_CTX_free(ctx);
    if (st == SL_OK) sl_hex(d, 32, out);
    return st;
}

/* ------------------------------------------------------------------------ */
/* What the walk found                                                      */
/* ------------------------------------------------------------------------ */

typedef struct found_file {
    char *path; /* byte-exact, NUL-terminated */
    size_t len;
    int64_t mtime_ns;
    uint64_t size;
    char *error; /* set when the walk could not read it (loop, broken link) */
    char *data;  /* where the bytes are when not at `path` (a URL's cache file), or NULL */
} found_file;

typedef struct found_list {
    found_file *v;
    size_t n, cap;
    int alloc_failed;
} found_list;

static void found_push(found_list *l, const char *path, const struct stat *st, const char *error) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        found_file *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            l->alloc_failed = 1;
            return;
        }
        l->v = nv;
        l->cap = nc;
    }
    found_file *f = &l->v[l->n];
    memset(f, 0, sizeof *f);
    f->len = strlen(path);
    f->path = strdup(path);
    if (error) f->error = strdup(error);
    if (!f->path || (error && !f->error)) {
        free(f->path);
        free(f->error);
        l->alloc_failed = 1;
        return;
    }
    if (st) {
        f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
        f->size = (uint64_t)st->st_size;
    }
    l->n++;
}

static void found_free(found_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].error);
        free(l->v[i].data);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Bytewise order, as RocksDB sorts keys. */
static int cmp_found(const void *a, const void *b) {
    const found_file *x = a, *y = b;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->path, y->path, m);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

typedef struct walk_ctx {
    found_list *list;
    uint64_t errors;
} walk_ctx;

static int on_walk_file(void *ctx, const char *path, const struct stat *st) {
    walk_ctx *w = ctx;
    if (sl_image_is_candidate(path)) found_push(w->list, path, st, NULL);
    return w->list->alloc_failed;
}

static void on_walk_error(void *ctx, const char *path, const char *reason) {
    walk_ctx *w = ctx;
    w->errors++;
    found_push(w->list, path, NULL, reason);
}

/* Walk one source: a folder, an image, or a list file of paths. Sets
 * *root_bad with a reason when the source is missing, unreadable or empty. */
static sl_status walk_source(const char *src, const sl_walk_opts *wo, found_list *list,
                             char *root_bad, size_t cap) {
    struct stat sb;
    if (stat(src, &sb) != 0) {
        snprintf(root_bad, cap, "source %s is missing (%s)", src, strerror(errno));
        return SL_OK;
    }
    size_t before = list->n;
    walk_ctx w = {list, 0};
    if (S_ISDIR(sb.st_mode)) {
        sl_status st = sl_walk(src, wo, on_walk_file, on_walk_error, &w);
        if (st == SL_ERR_IO || st == SL_ERR_NOT_FOUND) {
            snprintf(root_bad, cap, "source %s is unreadable (%s)", src, sl_last_error());
            return SL_OK;
        }
        if (st) return st;
    } else {
        unsigned char head[16];
        FILE *f = fopen(src, "rb");
        if (!f) {
            snprintf(root_bad, cap, "source %s is unreadable (%s)", src, strerror(errno));
            return SL_OK;
        }
        size_t n = fread(head, 1, sizeof head, f);
        fclose(f);
        if (sl_image_sniff(head, n) != SL_IMG_UNKNOWN) {
            found_push(list, src, &sb, NULL);
        } else {
            char *buf;
            size_t len;
            sl_status st = sl_read_file(src, (size_t)1 << 30, &buf, &len);
            if (st) {
                snprintf(root_bad, cap, "source %s is unreadable (%s)", src, sl_last_error());
                return SL_OK;
            }
            for (char *line = buf, *end; line < buf + len; line = end + 1) {
                end = memchr(line, '\n', (size_t)(buf + len - line));
                if (!end) end = buf + len;
                *end = '\0';
                size_t ll = strlen(line);
                if (ll && line[ll - 1] == '\r') line[--ll] = '\0';
                if (ll == 0 || line[0] == '#') continue;
                struct stat fs;
                if (stat(line, &fs) == 0 && S_ISREG(fs.st_mode))
                    found_push(list, line, &fs, NULL);
                else
                    found_push(list, line, NULL, "listed file is missing or not a regular file");
            }
            free(buf);
        }
    }
    if (list->alloc_failed) return sl_set_error(SL_ERR_NOMEM, "out of memory walking %s", src);
    if (list->n == before) snprintf(root_bad, cap, "source %s holds no images", src);
    return SL_OK;
}

/* One line of a URL list (fetch.c): keyed by the URL, bytes in the cache
 * file, (mtime, size) of the cache entry for change detection. */
static int on_url_entry(void *ctx, const sl_url_entry *e) {
    found_list *l = ctx;
    struct stat sb;
    memset(&sb, 0, sizeof sb);
    sb.st_mtim.tv_sec = (time_t)(e->mtime_ns / 1000000000);
    sb.st_mtim.tv_nsec = (long)(e->mtime_ns % 1000000000);
    sb.st_size = (off_t)e->size;
    size_t n = l->n;
    found_push(l, e->key, e->error ? NULL : &sb, e->error);
    if (l->n > n && e->cache_path && !(l->v[n].data = strdup(e->cache_path))) l->alloc_failed = 1;
    return l->alloc_failed;
}

/* Walk a URL-list source ("urls:" + TSV path): download into
 * <index>/downloads what is not cached yet (fetch.c). */
static sl_status walk_urls(const sl_index_opts *o, const char *src, found_list *list,
                           char *root_bad, size_t cap) {
    sl_fetch_opts fo = o->fetch;
    fo.quiet |= o->quiet;
    sl_status st = sl_url_source_fetch(o->index_dir, src, &fo, on_url_entry, list, root_bad, cap);
    if (st == SL_OK && list->alloc_failed)
        st = sl_set_error(SL_ERR_NOMEM, "out of memory reading %s", src);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Decode workers and the bounded queue                                     */
/* ------------------------------------------------------------------------ */

enum { ITEM_ENCODE, ITEM_REUSE, ITEM_FAIL };

typedef struct item {
    found_file *file;  /* what it is */
    sl_file_rec rec;   /* mtime/size/hash/width/height, or status+error */
    int kind;          /* ITEM_* */
    int existed;       /* the path had a record (changed file) */
    uint64_t reuse_id; /* ITEM_REUSE: indexed image with the same content */
    float *pixels;     /* ITEM_ENCODE: [3, S, S], owned */
} item;

typedef struct pipeline {
    /* inputs */
    found_file **todo; /* files to process */
    int *todo_existed;
    size_t ntodo;
    size_t next; /* next todo index to take (under mu) */
    sl_store *store;
    sl_preprocess pp;
    sl_decode_opts dopt;
    size_t img_floats;
    /* the queue */
    item *q;
    size_t cap, head, count;
    int workers_left;
    int stop;
    int gated;    /* workers start no file while the encoder runs (it has every core) */
    int encoding; /* the encoder is running (its end is broadcast on not_full) */
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
} pipeline;

static void item_fail(item *it, sl_status st, const char *why) {
    it->kind = ITEM_FAIL;
    it->rec.status = st;
    /* the record is keyed by the path: drop a leading "path: " from the reason */
    size_t pl = it->file->len;
    if (!strncmp(why, it->file->path, pl) && why[pl] == ':' && why[pl + 1] == ' ') why += pl + 2;
    snprintf(it->rec.error, sizeof it->rec.error, "%s", why);
}

/* Read, hash, look up, decode and preprocess one file. */
static void process_file(pipeline *p, item *it) {
    found_file *f = it->file;
    it->rec.mtime_ns = f->mtime_ns;
    it->rec.size = f->size;
    if (f->error) {
        item_fail(it, SL_ERR_IO, f->error);
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(f->data ? f->data : f->path, MAX_IMAGE_FILE, &buf, &len);
    if (st) {
        item_fail(it, st, sl_last_error());
        return;
    }
    if (len == 0) {
        free(buf);
        item_fail(it, SL_ERR_FORMAT, "empty file");
        return;
    }
    sl_sha256(buf, len, it->rec.hash);
    uint64_t known = 0;
    if (sl_store_find_hash(p->store, it->rec.hash, &known) == SL_OK && known) {
        sl_file_rec kr;
        char *kp = NULL;
        int found = 0;
        size_t kl;
        if (sl_store_get_path(p->store, known, &kp, &kl) == SL_OK &&
            sl_store_get_file(p->store, kp, kl, &kr, &found) == SL_OK && found) {
            it->kind = ITEM_REUSE;
            it->reuse_id = known;
            it->rec.width = kr.width;
            it->rec.height = kr.height;
            free(kp);
            free(buf);
            return;
        }
        free(kp);
    }
    sl_image img;
    st = sl_image_decode(buf, len, f->path, &p->dopt, &img);
    free(buf);
    if (st) {
        item_fail(it, st, sl_last_error());
        return;
    }
    it->rec.width = img.orig_width;
    it->rec.height = img.orig_height;
    it->pixels = malloc(p->img_floats * sizeof(float));
    if (!it->pixels) {
        sl_image_free(&img);
        item_fail(it, SL_ERR_NOMEM, "out of memory");
        return;
    }
    st = sl_image_preprocess(&img, &p->pp, it->pixels, NULL);
    sl_image_free(&img);
    if (st) {
        free(it->pixels);
        it->pixels = NULL;
        item_fail(it, st, sl_last_error());
        return;
    }
    it->kind = ITEM_ENCODE;
}

static void *worker_main(void *arg) {
    pipeline *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->gated && p->encoding && !p->stop) pthread_cond_wait(&p->not_full, &p->mu);
        if (p->stop || p->next >= p->ntodo) {
            p->workers_left--;
            pthread_cond_broadcast(&p->not_empty);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        item it = {.file = p->todo[i], .existed = p->todo_existed[i]};
        process_file(p, &it);
        pthread_mutex_lock(&p->mu);
        while (p->count == p->cap && !p->stop) pthread_cond_wait(&p->not_full, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            free(it.pixels);
            continue;
        }
        p->q[(p->head + p->count) % p->cap] = it;
        p->count++;
        pthread_cond_signal(&p->not_empty);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Next finished item; 0 when every worker is done and the queue empty. */
static int pipeline_pop(pipeline *p, item *out) {
    pthread_mutex_lock(&p->mu);
    while (p->count == 0 && p->workers_left > 0) pthread_cond_wait(&p->not_empty, &p->mu);
    int got = p->count > 0;
    if (got) {
        *out = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_cond_signal(&p->not_full);
    }
    pthread_mutex_unlock(&p->mu);
    return got;
}

/* The encoder starts (1) or ends (0) a forward pass; gated workers start
 * no new file meanwhile. p may be NULL. */
static void pipeline_encoding(pipeline *p, int on) {
    if (!p || !p->gated) return;
    pthread_mutex_lock(&p->mu);
    p->encoding = on;
    if (!on) pthread_cond_broadcast(&p->not_full);
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct run {
    const sl_index_opts *o;
    sl_index_summary *sum;
    sl_store *store;
    sl_encoder *enc;
    size_t dim, npatch; /* embedding size, patches per image (0: no regions) */
    size_t img_floats;  /* floats per preprocessed image */
    sl_progress *progress;
    pipeline *pipe; /* decode workers to hold during forward passes (NULL: none) */
} run;

static void add_failure(sl_index_summary *s, const char *path, const char *reason) {
    sl_index_failure *nf = realloc(s->failures, (s->failed + 1) * sizeof *nf);
    if (!nf) return;
    s->failures = nf;
    nf[s->failed].path = strdup(path);
    nf[s->failed].reason = strdup(reason);
    s->failed++;
}

/* Encode the pending ENCODE items and put everything pending in one batch. */
static sl_status flush(run *r, item *items, size_t n, float *pix, float *emb, float *patch) {
    sl_status st = SL_OK;
    size_t ne = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].kind == ITEM_ENCODE)
            memcpy(pix + ne++ * r->img_floats, items[i].pixels, r->img_floats * sizeof(float));
    if (ne) {
        double t0 = sl_now();
        pipeline_encoding(r->pipe, 1);
        st = sl_encoder_encode_images(r->enc, pix, ne, emb, patch, 1);
        pipeline_encoding(r->pipe, 0);
        r->sum->encode_seconds += sl_now() - t0;
        if (st) return st;
        if (patch) sl_cpu_l2_normalize_rows(patch, ne * r->npatch, r->dim);
    }
    sl_store_batch *b;
    if ((st = sl_store_batch_begin(r->store, &b))) return st;
    float *rv = malloc(r->dim * sizeof(float));
    float *rp = r->npatch ? malloc(r->npatch * r->dim * sizeof(float)) : NULL;
    if (!rv || (r->npatch && !rp)) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        item *it = &items[i];
        if (it->kind == ITEM_ENCODE) {
            st = sl_store_batch_put_file(b, it->file->path, it->file->len, &it->rec,
                                         emb + k * r->dim,
                                         patch ? patch + k * r->npatch * r->dim : NULL);
            k++;
        } else if (it->kind == ITEM_REUSE) {
            st = sl_store_get_vector(r->store, SL_COLL_IMAGES, it->reuse_id, rv);
            if (st == SL_OK && rp) st = sl_store_get_patches(r->store, it->reuse_id, rp);
            if (st == SL_OK)
                st = sl_store_batch_put_file(b, it->file->path, it->file->len, &it->rec, rv, rp);
        } else {
            st = sl_store_batch_put_file(b, it->file->path, it->file->len, &it->rec, NULL, NULL);
            SL_WARN("%s: %s", it->file->path, it->rec.error);
            add_failure(r->sum, it->file->path, it->rec.error);
        }
        if (st == SL_OK && it->kind != ITEM_FAIL) {
            if (it->kind == ITEM_REUSE) r->sum->reused++;
            if (it->existed)
                r->sum->updated++;
            else
                r->sum->added++;
        }
    }
    free(rv);
    free(rp);
    if (st) {
        sl_store_batch_abort(b);
        return st;
    }
    return sl_store_batch_commit(b);
}

/* Auto index type for n vectors of dim d within a memory budget. */
static void choose_type(size_t n, size_t d, uint64_t budget, char *out, size_t cap) {
    if (!budget) budget = (uint64_t)4 << 30;
    double flat = (double)n * (double)d * 4;
    double hnsw = (double)n * ((double)d * 4 + 32 * 2 * 4 * 1.2);
    if (n <= 200000 && flat <= (double)budget) {
        snprintf(out, cap, "Flat");
    } else if (n <= 5000000 && hnsw <= (double)budget) {
        snprintf(out, cap, "HNSW32");
    } else {
        size_t k = 1;
        while (k * k < 16 * n && k < 65536) k *= 2; /* about 4 sqrt(n) lists */
        size_t m = d / 8;
        while (m > 1 && d % m) m--;
        if (m > 64) m = 64;
        while (d % m) m--;
        snprintf(out, cap, "IVF%zu,PQ%zu", k, m);
    }
}

static sl_status load_sources(sl_store *s, const sl_index_opts *o, char ***srcs, size_t *n) {
    json_t *arr = json_array();
    char *rec = NULL;
    sl_status st = sl_store_get_state(s, "sources", &rec);
    if (st) {
        json_decref(arr);
        return st;
    }
    if (rec) {
        json_t *j = json_loads(rec, JSON_REJECT_DUPLICATES, NULL);
        free(rec);
        if (json_is_array(j)) {
            json_decref(arr);
            arr = j;
        } else {
            json_decref(j);
        }
    }
    for (size_t i = 0; i < o->n_sources; i++) {
        char real[PATH_MAX];
        const char *abs = realpath(o->sources[i], real) ? real : o->sources[i];
        int dup = 0;
        size_t k;
        json_t *v;
        json_array_foreach(arr, k, v) dup |=
            json_is_string(v) && !strcmp(json_string_value(v), abs);
        if (!dup) json_array_append_new(arr, json_string(abs));
    }
    *n = json_array_size(arr);
    *srcs = calloc(*n ? *n : 1, sizeof **srcs);
    for (size_t i = 0; i < *n && *srcs; i++) {
        const char *v = json_string_value(json_array_get(arr, i));
        (*srcs)[i] = strdup(v ? v : "");
    }
    json_decref(arr);
    return *srcs ? SL_OK : sl_set_error(SL_ERR_NOMEM, "out of memory");
}

/* Record the sources, and the model's absolute path when one was given (an
 * update without --model uses it; its fingerprint must still match). */
static sl_status save_sources(sl_store *s, char **srcs, size_t n, const char *model,
                              const char *patch_tokens) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(srcs[i]));
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!text) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    sl_store_batch *b;
    sl_status st = sl_store_batch_begin(s, &b);
    if (st == SL_OK) st = sl_store_batch_put_state(b, "sources", text);
    char real[PATH_MAX];
    if (st == SL_OK && model && realpath(model, real))
        st = sl_store_batch_put_state(b, "model_path", real);
    if (st == SL_OK && patch_tokens) st = sl_store_batch_put_state(b, "patch_tokens", patch_tokens);
    if (st == SL_OK) st = sl_store_batch_commit(b);
    free(text);
    return st;
}

typedef struct sweep_ctx {
    found_list *found; /* sorted */
    size_t j;
    char **gone; /* paths to remove */
    size_t *gone_len;
    size_t ngone, cap;
    uint64_t indexed; /* records with an image id */
    int alloc_failed;
} sweep_ctx;

static int sweep_file(void *ctx, const char *path, size_t len, const sl_file_rec *rec) {
    sweep_ctx *w = ctx;
    if (rec->id) w->indexed++;
    found_file key = {.path = (char *)path, .len = len};
    while (w->j < w->found->n && cmp_found(&w->found->v[w->j], &key) < 0) w->j++;
    if (w->j < w->found->n && cmp_found(&w->found->v[w->j], &key) == 0) return 0;
    if (w->ngone == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 256;
        char **ng = realloc(w->gone, nc * sizeof *ng);
        size_t *nl = realloc(w->gone_len, nc * sizeof *nl);
        if (!ng || !nl) {
            if (ng) w->gone = ng;
            if (nl) w->gone_len = nl;
            w->alloc_failed = 1;
            return 1;
        }
        w->gone = ng;
        w->gone_len = nl;
        w->cap = nc;
    }
    w->gone[w->ngone] = malloc(len);
    if (!w->gone[w->ngone]) {
        w->alloc_failed = 1;
        return 1;
    }
    memcpy(w->gone[w->ngone], path, len);
    w->gone_len[w->ngone++] = len;
    return 0;
}

sl_status sl_index_update(const sl_index_opts *o, sl_index_summary *sum) {
    memset(sum, 0, sizeof *sum);
    double t0 = sl_now();
    sl_status st = SL_OK;
    run r = {.o = o, .sum = sum};
    found_list found = {0};
    char **srcs = NULL;
    size_t nsrc = 0;
    found_file **todo = NULL;
    int *todo_existed = NULL;
    sweep_ctx sw = {0};
    char fp[65] = "";
    char root_bad[512] = "";

    /* open the index, or learn what it will need */
    struct stat sb;
    char man[4096];
    snprintf(man, sizeof man, "%s/manifest.json", o->index_dir);
    int exists = stat(man, &sb) == 0;
    if (!exists && !o->create)
        return sl_set_error(SL_ERR_NOT_FOUND,
                            "%s: no index here (build one with 'sightline index "
                            "build')",
                            o->index_dir);
    int cuda, bf16;
    if ((st = sl_device_parse(o->device, &cuda, &bf16))) return st;
    if (!exists || o->model) {
        if (!o->model) return sl_set_error(SL_ERR_INVALID, "building an index needs a model");
        if ((st = sl_model_fingerprint(o->model, fp))) return st;
    }
    /* a build opens the encoder first: a model or device that cannot be
     * used fails before anything is written (URL lists download into the
     * index directory during the walk) */
    sl_encoder_opts eo = {.threads = o->threads, .device = o->device};
    if (!exists && (st = sl_encoder_open(o->model, &eo, &r.enc))) return st;
    if (exists) {
        sl_store_opts so = {.model_fingerprint = fp[0] ? fp : NULL, .wait_lock = o->wait_lock};
        if ((st = sl_store_open(o->index_dir, &so, &r.store))) return st;
    }

    /* sources: recorded ones plus those given */
    if (r.store) {
        if ((st = load_sources(r.store, o, &srcs, &nsrc))) goto done;
    } else {
        srcs = calloc(o->n_sources ? o->n_sources : 1, sizeof *srcs);
        for (size_t i = 0; srcs && i < o->n_sources; i++) {
            char real[PATH_MAX];
            srcs[i] = strdup(realpath(o->sources[i], real) ? real : o->sources[i]);
        }
        nsrc = o->n_sources;
    }
    if (nsrc == 0) {
        st = sl_set_error(SL_ERR_INVALID, "%s: no sources recorded or given (--images)",
                          o->index_dir);
        goto done;
    }

    /* walk */
    for (size_t i = 0; i < nsrc && st == SL_OK; i++) {
        char bad[512] = "";
        if (sl_url_source_is(srcs[i]))
            st = walk_urls(o, srcs[i], &found, bad, sizeof bad);
        else
            st = walk_source(srcs[i], &o->walk, &found, bad, sizeof bad);
        if (bad[0] && !root_bad[0]) snprintf(root_bad, sizeof root_bad, "%s", bad);
        if (bad[0]) SL_WARN("%s", bad);
    }
    if (st) goto done;
    if (found.n) qsort(found.v, found.n, sizeof *found.v, cmp_found);
    /* the same file reached twice (two sources, or listed twice) counts once */
    size_t w = 0;
    for (size_t i = 0; i < found.n; i++) {
        if (w > 0 && cmp_found(&found.v[w - 1], &found.v[i]) == 0) {
            free(found.v[i].path);
            free(found.v[i].error);
            free(found.v[i].data);
            continue;
        }
        found.v[w++] = found.v[i];
    }
    found.n = w;
    sum->seen = found.n;

    /* create the store for a build */
    if (!r.store) {
        const sl_clip_config *cfg = sl_encoder_config(r.enc);
        char type[64];
        if (!o->index_type || !strcmp(o->index_type, "auto"))
            choose_type(found.n, (size_t)cfg->embed_dim, o->memory_budget, type, sizeof type);
        else
            snprintf(type, sizeof type, "%s", o->index_type);
        SL_INFO("creating %s: %zu images found, index type %s%s", o->index_dir, found.n, type,
                o->region ? ", with regions" : "");
        sl_store_opts so = {.create = 1,
                            .dim = cfg->embed_dim,
                            .patches = o->region ? sl_encoder_num_patches(r.enc) : 0,
                            .model_fingerprint = fp,
                            .index_type = type,
                            .wait_lock = o->wait_lock};
        if ((st = sl_store_open(o->index_dir, &so, &r.store))) goto done;
    }
    r.dim = (size_t)sl_store_dim(r.store);
    r.npatch = (size_t)sl_store_patches(r.store);

    /* classify: unchanged files cost the stat already done and one read */
    todo = malloc((found.n ? found.n : 1) * sizeof *todo);
    todo_existed = malloc((found.n ? found.n : 1) * sizeof *todo_existed);
    if (!todo || !todo_existed) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t ntodo = 0;
    for (size_t i = 0; i < found.n; i++) {
        sl_file_rec rec;
        int have;
        if ((st = sl_store_get_file(r.store, found.v[i].path, found.v[i].len, &rec, &have)))
            goto done;
        int same = have && rec.mtime_ns == found.v[i].mtime_ns && rec.size == found.v[i].size;
        if (same && found.v[i].error && rec.id == 0 && !strcmp(rec.error, found.v[i].error))
            same = 1;
        else if (found.v[i].error)
            same = 0;
        if (same) {
            sum->unchanged++;
            continue;
        }
        todo_existed[ntodo] = have && rec.id != 0;
        todo[ntodo++] = &found.v[i];
    }

    /* open the encoder when something needs encoding, before anything is
     * written: a model or device that cannot be used leaves the index as it
     * was */
    if (ntodo && !r.enc) {
        /* no --model: the one recorded at the last build or update, if unchanged */
        char *recorded = NULL;
        if (!o->model && (st = sl_store_get_state(r.store, "model_path", &recorded))) goto done;
        const char *mp = o->model ? o->model : recorded;
        if (!mp) {
            st = sl_set_error(SL_ERR_INVALID,
                              "%zu new or changed images need encoding: give --model", ntodo);
            goto done;
        }
        if (!o->model) {
            if ((st = sl_model_fingerprint(mp, fp)) == SL_OK &&
                strcmp(fp, sl_store_model(r.store)) != 0)
                st = sl_set_error(SL_ERR_INVALID,
                                  "the model recorded with the index (%s) has changed since; "
                                  "give --model with the model the index was built with",
                                  mp);
            if (st) {
                st = sl_wrap_error(st, "%zu new or changed images need encoding: ", ntodo);
                free(recorded);
                goto done;
            }
        }
        st = sl_encoder_open(mp, &eo, &r.enc);
        free(recorded);
        if (st) goto done;
    }
    if (r.enc && r.npatch && (size_t)sl_encoder_num_patches(r.enc) != r.npatch) {
        st = sl_set_error(SL_ERR_INVALID,
                          "%s: the index holds %zu patch tokens per image, the encoder gives %d "
                          "(another region size); rebuild the index",
                          o->index_dir, r.npatch, sl_encoder_num_patches(r.enc));
        goto done;
    }
    if (r.enc && (size_t)sl_encoder_config(r.enc)->embed_dim != r.dim) {
        st = sl_set_error(SL_ERR_INVALID, "model embeds in %d dimensions, the index holds %zu",
                          sl_encoder_config(r.enc)->embed_dim, r.dim);
        goto done;
    }
    /* Region patches: one kind per index (sl_patch_tokens). Indexes from
     * before the kind was recorded hold final-row patches. */
    const char *kind = NULL;
    if (r.enc && r.npatch) {
        kind = sl_encoder_patch_tokens(r.enc) == SL_PATCH_TOKENS_FINAL ? "final" : "value";
        char *have = NULL;
        if ((st = sl_store_get_state(r.store, "patch_tokens", &have))) goto done;
        const char *was = have ? have : exists ? "final" : NULL;
        if (was && strcmp(was, kind))
            st = sl_set_error(SL_ERR_INVALID,
                              "%s: the index holds '%s' patch tokens, the encoder gives '%s' "
                              "ones; rebuild the index, or set \"patch_tokens\": \"%s\" in the "
                              "model's config.json",
                              o->index_dir, was, kind, was);
        free(have);
        if (st) goto done;
    }
    if ((st = save_sources(r.store, srcs, nsrc, o->model, kind))) goto done;

    /* encode what changed */
    if (ntodo) {
        const sl_clip_config *cfg = sl_encoder_config(r.enc);
        /* On a GPU the forward pass leaves the cores free: larger batches,
         * and decoding goes on while it runs. */
        const int on_gpu = sl_encoder_cuda_device(r.enc) >= 0;
        size_t batch = o->batch > 0 ? (size_t)o->batch : on_gpu ? 256 : 32;
        size_t S = (size_t)cfg->image_size, img_floats = 3 * S * S;
        r.img_floats = img_floats;
        pipeline p = {.todo = todo,
                      .todo_existed = todo_existed,
                      .ntodo = ntodo,
                      .store = r.store,
                      .img_floats = img_floats};
        p.pp = sl_preprocess_clip(cfg->image_size);
        memcpy(p.pp.mean, cfg->image_mean, sizeof p.pp.mean);
        memcpy(p.pp.std, cfg->image_std, sizeof p.pp.std);
        p.dopt.max_pixels = o->max_pixels;
        p.dopt.min_short_side = cfg->image_size;
        p.cap = 2 * batch;
        p.q = calloc(p.cap, sizeof *p.q);
        /* The encoder's OpenMP team takes `threads` cores (default all; one
         * feeding the GPU when it runs there).
         * Decoding runs on the cores it leaves; when it leaves none, on
         * every core between forward passes (gated): a decode thread that
         * preempts one member of the team stalls the whole team at its next
         * barrier, costing about twice the decode time (bench/index.c). */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        long enc_threads = on_gpu ? 1 : o->threads > 0 ? o->threads : ncpu;
        p.gated = ncpu - enc_threads < 1;
        int nworkers = (int)(p.gated ? ncpu : ncpu - enc_threads);
        if (nworkers < 1) nworkers = 1;
        if (nworkers > 64) nworkers = 64;
        pthread_t tids[64];
        float *pix = malloc(batch * img_floats * sizeof(float));
        float *emb = malloc(batch * r.dim * sizeof(float));
        float *patch = r.npatch ? malloc(batch * r.npatch * r.dim * sizeof(float)) : NULL;
        item *pend = calloc(2 * batch, sizeof *pend);
        if (!p.q || !pix || !emb || (r.npatch && !patch) || !pend) {
            st = sl_set_error(SL_ERR_NOMEM, "out of memory for a batch of %zu images", batch);
        } else {
            pthread_mutex_init(&p.mu, NULL);
            pthread_cond_init(&p.not_full, NULL);
            pthread_cond_init(&p.not_empty, NULL);
            p.workers_left = 0;
            for (int t = 0; t < nworkers; t++)
                if (pthread_create(&tids[t], NULL, worker_main, &p) == 0) p.workers_left++;
            int started = p.workers_left;
            r.pipe = &p;
            r.progress = sl_progress_create("index", ntodo, o->quiet);
            size_t npend = 0, nenc = 0;
            item it;
            while (pipeline_pop(&p, &it)) {
                if (st == SL_OK) {
                    pend[npend++] = it;
                    nenc += it.kind == ITEM_ENCODE;
                } else {
                    free(it.pixels);
                }
                if (st == SL_OK && (nenc == batch || npend == 2 * batch)) {
                    st = flush(&r, pend, npend, pix, emb, patch);
                    sl_progress_add(r.progress, npend);
                    for (size_t i = 0; i < npend; i++) free(pend[i].pixels);
                    npend = nenc = 0;
                    if (st) {
                        pthread_mutex_lock(&p.mu);
                        p.stop = 1;
                        pthread_cond_broadcast(&p.not_full);
                        pthread_mutex_unlock(&p.mu);
                    }
                }
            }
            if (st == SL_OK && npend) {
                st = flush(&r, pend, npend, pix, emb, patch);
                sl_progress_add(r.progress, npend);
            }
            for (size_t i = 0; i < npend; i++) free(pend[i].pixels);
            for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
            sl_progress_finish(r.progress);
            r.progress = NULL;
            r.pipe = NULL;
            pthread_mutex_destroy(&p.mu);
            pthread_cond_destroy(&p.not_full);
            pthread_cond_destroy(&p.not_empty);
        }
        free(p.q);
        free(pix);
        free(emb);
        free(patch);
        free(pend);
        if (st) goto done;
    }

    /* sweep: records whose file is gone */
    sw.found = &found;
    if ((st = sl_store_foreach_file(r.store, sweep_file, &sw))) goto done;
    if (sw.alloc_failed) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (sw.ngone) {
        double frac = sw.indexed ? (double)sw.ngone / (double)sw.indexed : 1.0;
        double maxd = o->max_delete > 0 ? o->max_delete : 0.2;
        if (!o->force && root_bad[0]) {
            sum->deletions_held = 1;
            snprintf(sum->held_reason, sizeof sum->held_reason,
                     "%zu files would be removed but %s; nothing removed (--force overrides)",
                     sw.ngone, root_bad);
        } else if (!o->force && frac > maxd) {
            sum->deletions_held = 1;
            snprintf(sum->held_reason, sizeof sum->held_reason,
                     "%zu of %llu indexed files (%.0f%%) would be removed, more than --max-delete "
                     "%.0f%%; nothing removed (--force overrides)",
                     sw.ngone, (unsigned long long)sw.indexed, 100 * frac, 100 * maxd);
        } else {
            for (size_t i0 = 0; i0 < sw.ngone && st == SL_OK; i0 += 1024) {
                sl_store_batch *b;
                if ((st = sl_store_batch_begin(r.store, &b))) break;
                for (size_t i = i0; i < sw.ngone && i < i0 + 1024 && st == SL_OK; i++)
                    st = sl_store_batch_delete_file(b, sw.gone[i], sw.gone_len[i]);
                if (st)
                    sl_store_batch_abort(b);
                else
                    st = sl_store_batch_commit(b);
            }
            if (st == SL_OK) sum->removed = sw.ngone;
        }
    }
done:
    sl_progress_finish(r.progress);
    for (size_t i = 0; i < sw.ngone; i++) free(sw.gone[i]);
    free(sw.gone);
    free(sw.gone_len);
    if (r.store) {
        sum->total = sl_store_count(r.store, SL_COLL_IMAGES);
        if (st == SL_OK)
            st = sl_store_close(r.store);
        else
            sl_store_abandon(r.store); /* what was committed is kept; the next open repairs */
    }
    sl_encoder_free(r.enc);
    for (size_t i = 0; i < nsrc; i++) free(srcs[i]);
    free(srcs);
    free(todo);
    free(todo_existed);
    found_free(&found);
    sum->seconds = sl_now() - t0;
    return st;
}

void sl_index_summary_free(sl_index_summary *s) {
    for (uint64_t i = 0; i < s->failed; i++) {
        free(s->failures[i].path);
        free(s->failures[i].reason);
    }
    free(s->failures);
    s->failures = NULL;
}

sl_status sl_index_remove(const char *index_dir, const char *const *paths, size_t n,
                          uint64_t *removed) {
    *removed = 0;
    sl_store *s;
    sl_store_opts so = {0};
    sl_status st = sl_store_open(index_dir, &so, &s);
    if (st) return st;
    sl_store_batch *b;
    if ((st = sl_store_batch_begin(s, &b))) {
        sl_store_abandon(s);
        return st;
    }
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        sl_file_rec rec;
        int have;
        st = sl_store_get_file(s, paths[i], strlen(paths[i]), &rec, &have);
        if (st == SL_OK && have) {
            st = sl_store_batch_delete_file(b, paths[i], strlen(paths[i]));
            (*removed)++;
        } else if (st == SL_OK) {
            SL_WARN("%s: not in the index", paths[i]);
        }
    }
    if (st) {
        sl_store_batch_abort(b);
        sl_store_abandon(s);
        return st;
    }
    st = sl_store_batch_commit(b);
    sl_status cs = sl_store_close(s);
    return st ? st : cs;
}

/* ------------------------------------------------------------------------ */
/* Texts                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct text_list {
    char **v;
    size_t n, cap;
} text_list;

static int text_push(text_list *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strndup(s, len))) return -1;
    l->n++;
    return 0;
}

/* Texts of a file: the captions of a Karpathy JSON (every image, every
 * sentence's "raw"), or one text per non-empty line. */
static sl_status read_texts(const char *path, text_list *out) {
    char *buf;
    size_t len;
    sl_status st = sl_read_file(path, (size_t)2 << 30, &buf, &len);
    if (st) return st;
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r')) i++;
    if (i < len && buf[i] == '{') {
        json_error_t je;
        json_t *root = json_loadb(buf, len, 0, &je);
        free(buf);
        if (!root) return sl_set_error(SL_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
        json_t *images = json_object_get(root, "images");
        if (!json_is_array(images)) {
            json_decref(root);
            return sl_set_error(SL_ERR_FORMAT,
                                "%s: no \"images\" array (not a Karpathy split file)", path);
        }
        size_t k, m;
        json_t *img, *sent;
        json_array_foreach(images, k, img) {
            json_array_foreach(json_object_get(img, "sentences"), m, sent) {
                const char *raw = json_string_value(json_object_get(sent, "raw"));
                if (raw && text_push(out, raw, strlen(raw))) st = SL_ERR_NOMEM;
            }
        }
        json_decref(root);
        return st ? sl_set_error(st, "out of memory") : SL_OK;
    }
    for (char *line = buf, *end; line < buf + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(buf + len - line));
        if (!end) end = buf + len;
        size_t ll = (size_t)(end - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll && text_push(out, line, ll)) {
            free(buf);
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
        }
    }
    free(buf);
    return SL_OK;
}

sl_status sl_index_texts(const char *index_dir, const char *model, const char *texts_path,
                         int threads, const char *device, int quiet, uint64_t *count) {
    *count = 0;
    char fp[65];
    int cuda, bf16;
    sl_status st = sl_device_parse(device, &cuda, &bf16);
    if (st) return st;
    if ((st = sl_model_fingerprint(model, fp))) return st;
    text_list tl = {0};
    if ((st = read_texts(texts_path, &tl))) return st;
    sl_store *s = NULL;
    sl_encoder *enc = NULL;
    sl_store_opts so = {.model_fingerprint = fp};
    sl_encoder_opts eo = {.threads = threads, .device = device};
    float *emb = NULL;
    sl_progress *prog = NULL;
    /* the encoder first: a model or device that cannot be used leaves the
     * index as it was */
    if ((st = sl_encoder_open(model, &eo, &enc))) goto done;
    if ((st = sl_store_open(index_dir, &so, &s))) goto done;
    const size_t B = 64, D = (size_t)sl_store_dim(s);
    emb = malloc(B * D * sizeof(float));
    if (!emb) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    sl_store_batch *b;
    if ((st = sl_store_batch_begin(s, &b))) goto done;
    st = sl_store_batch_clear_texts(b);
    if (st == SL_OK)
        st = sl_store_batch_commit(b);
    else
        sl_store_batch_abort(b);
    prog = sl_progress_create("texts", tl.n, quiet);
    for (size_t i0 = 0; i0 < tl.n && st == SL_OK; i0 += B) {
        size_t n = tl.n - i0 < B ? tl.n - i0 : B;
        if ((st = sl_encoder_encode_texts(enc, (const char *const *)tl.v + i0, n, emb, 1))) break;
        if ((st = sl_store_batch_begin(s, &b))) break;
        for (size_t i = 0; i < n && st == SL_OK; i++) {
            uint64_t id;
            st = sl_store_batch_put_text(b, tl.v[i0 + i], emb + i * D, &id);
        }
        if (st == SL_OK)
            st = sl_store_batch_commit(b);
        else
            sl_store_batch_abort(b);
        sl_progress_add(prog, n);
    }
    if (st == SL_OK) *count = tl.n;
done:
    sl_progress_finish(prog);
    free(emb);
    sl_encoder_free(enc);
    if (s) {
        if (st == SL_OK)
            st = sl_store_close(s);
        else
            sl_store_abandon(s);
    }
    for (size_t i = 0; i < tl.n; i++) free(tl.v[i]);
    free(tl.v);
    return st;
}
