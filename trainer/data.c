/*
 * trainer/data.c - datasets (Karpathy JSON, TSV, webdataset tar) and the
 * threaded, deterministic batch loader (see data.h).
 */
#include "trainer/data.h"

#include "sightline/eval.h"
#include "sightline/image.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

uint64_t sl_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) {
    return (double)(sl_splitmix64(s) >> 11) * 0x1.0p-53;
}

/* ---- dataset ------------------------------------------------------------ */

void sl_dataset_free(sl_train_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->items[i].caption);
        free(ds->items[i].path);
    }
    free(ds->items);
    for (int i = 0; i < ds->n_shards; i++) free(ds->shards[i]);
    free(ds->shards);
    memset(ds, 0, sizeof *ds);
}

/* Append an item; takes ownership of caption and path (freed on failure). */
static sl_status push_item(sl_train_dataset *ds, char *caption, char *path, int shard, uint64_t off,
                           uint64_t size) {
    if (ds->n >= SL_DATA_MAX_SAMPLES) {
        free(caption);
        free(path);
        return sl_set_error(SL_ERR_LIMIT, "dataset: more than %u samples", SL_DATA_MAX_SAMPLES);
    }
    if (ds->n == ds->cap) {
        size_t nc = ds->cap ? ds->cap * 2 : 256;
        sl_train_item *ni = realloc(ds->items, nc * sizeof *ni);
        if (!ni) {
            free(caption);
            free(path);
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
        }
        ds->items = ni;
        ds->cap = nc;
    }
    sl_train_item *it = &ds->items[ds->n++];
    it->caption = caption;
    it->path = path;
    it->shard = shard;
    it->off = off;
    it->size = size;
    return SL_OK;
}

static char *join_path(const char *dir, const char *rel) {
    size_t a = dir ? strlen(dir) : 0, b = strlen(rel);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    if (a && rel[0] != '/') {
        memcpy(s, dir, a);
        s[a] = '/';
        memcpy(s + a + 1, rel, b + 1);
    } else {
        memcpy(s, rel, b + 1);
    }
    return s;
}

sl_status sl_dataset_add_karpathy(sl_train_dataset *ds, const char *json, const char *images_dir,
                                  const char *split, int max_captions) {
    sl_karpathy k;
    sl_karpathy_opts ko = {split ? split : "train", max_captions > 0 ? max_captions : 1000};
    sl_status st = sl_karpathy_read(json, &ko, &k);
    if (st) return st;
    for (size_t c = 0; c < k.n_captions && !st; c++) {
        char *path =
            sl_karpathy_image_path(images_dir ? images_dir : "", &k.images[k.caption_image[c]]);
        char *cap = strdup(k.captions[c]);
        if (!path || !cap) {
            free(path);
            free(cap);
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            break;
        }
        st = push_item(ds, cap, path, -1, 0, 0);
    }
    sl_karpathy_free(&k);
    return st;
}

sl_status sl_dataset_add_tsv(sl_train_dataset *ds, const char *tsv, const char *images_dir) {
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(tsv, (size_t)1 << 31, &buf, &len);
    if (st) return st;
    size_t line = 0;
    char *p = buf, *end = buf + len;
    while (p < end && !st) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line++;
        if (le > p && le[-1] == '\r') le[-1] = 0, le--;
        *le = 0;
        if (*p && *p != '#') {
            if (strlen(p) != (size_t)(le - p)) {
                st = sl_set_error(SL_ERR_FORMAT, "%s:%zu: NUL byte in the line", tsv, line);
                break;
            }
            char *tab = strchr(p, '\t');
            if (!tab || tab == p || !tab[1]) {
                st = sl_set_error(SL_ERR_FORMAT, "%s:%zu: expected 'path<TAB>caption'", tsv, line);
                break;
            }
            *tab = 0;
            if (strlen(tab + 1) > SL_TAR_MAX_CAPTION) {
                st = sl_set_error(SL_ERR_LIMIT, "%s:%zu: caption over %u bytes", tsv, line,
                                  SL_TAR_MAX_CAPTION);
                break;
            }
            char *path = join_path(images_dir, p), *cap = strdup(tab + 1);
            if (!path || !cap) {
                free(path);
                free(cap);
                st = sl_set_error(SL_ERR_NOMEM, "out of memory");
                break;
            }
            st = push_item(ds, cap, path, -1, 0, 0);
        }
        p = nl ? nl + 1 : end;
    }
    free(buf);
    return st;
}

/* ---- tar ---------------------------------------------------------------- */

/* A strict octal field: optional leading spaces, >= 1 digit, then only NUL
 * or spaces. -1 on anything else. */
static int parse_octal(const unsigned char *f, size_t n, uint64_t *out) {
    size_t i = 0;
    while (i < n && f[i] == ' ') i++;
    uint64_t v = 0;
    size_t digits = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v >> 60) return -1;
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    if (!digits) return -1;
    for (; i < n; i++)
        if (f[i] != 0 && f[i] != ' ') return -1;
    *out = v;
    return 0;
}

static int is_zero_block(const unsigned char *h) {
    for (int i = 0; i < 512; i++)
        if (h[i]) return 0;
    return 1;
}

static int has_ext(const char *name, const char *ext) {
    size_t a = strlen(name), b = strlen(ext);
    return a > b && strcasecmp(name + a - b, ext) == 0;
}

/* webdataset key: up to the first '.' of the base name. */
static size_t key_len(const char *name) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strchr(base, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

typedef struct tar_group {
    char key[1024];
    int has_img, has_txt;
    uint64_t img_off, img_size;
    char *caption;
} tar_group;

static sl_status flush_group(sl_train_dataset *ds, tar_group *g, int shard, const char *tar,
                             size_t *incomplete) {
    sl_status st = SL_OK;
    if (g->key[0]) {
        if (g->has_img && g->has_txt) {
            st = push_item(ds, g->caption, NULL, shard, g->img_off, g->img_size);
            g->caption = NULL;
        } else {
            (*incomplete)++;
            SL_WARN("%s: sample '%s' lacks %s; skipped", tar, g->key,
                    g->has_img ? "a .txt caption" : "an image");
        }
    }
    free(g->caption);
    memset(g, 0, sizeof *g);
    return st;
}

sl_status sl_dataset_add_tar(sl_train_dataset *ds, const char *tar) {
    FILE *f = fopen(tar, "rb");
    if (!f)
        return sl_set_error(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: %s", tar,
                            strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fclose(f);
        return sl_set_error(SL_ERR_IO, "%s: %s", tar, strerror(errno));
    }
    const uint64_t fsize = (uint64_t)sb.st_size;
    char **ns = realloc(ds->shards, sizeof(char *) * (size_t)(ds->n_shards + 1));
    if (!ns) {
        fclose(f);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    ds->shards = ns;
    if (!(ds->shards[ds->n_shards] = strdup(tar))) {
        fclose(f);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    const int shard = ds->n_shards++;
    size_t before = ds->n, incomplete = 0;
    tar_group g;
    memset(&g, 0, sizeof g);
    char longname[1024] = "";
    unsigned char h[512];
    uint64_t off = 0;
    sl_status st = SL_OK;
    char prev[1024] = "(start of the archive)";
    for (;;) {
        if (off == fsize) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: truncated: ends after member '%s' without the end-of-archive "
                              "blocks",
                              tar, prev);
            break;
        }
        if (fsize - off < 512) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: truncated header at offset %llu (after member '%s')", tar,
                              (unsigned long long)off, prev);
            break;
        }
        if (fseeko(f, (off_t)off, SEEK_SET) != 0 || fread(h, 1, 512, f) != 512) {
            st = sl_set_error(SL_ERR_IO, "%s: read error at offset %llu", tar,
                              (unsigned long long)off);
            break;
        }
        if (is_zero_block(h)) break;
        char name[1024];
        {
            char n1[101], pre[156];
            memcpy(n1, h, 100);
            n1[100] = 0;
            memcpy(pre, h + 345, 155);
            pre[155] = 0;
            if (memcmp(h + 257, "ustar", 5) == 0 && pre[0])
                snprintf(name, sizeof name, "%s/%s", pre, n1);
            else
                snprintf(name, sizeof name, "%s", n1);
        }
        if (longname[0]) {
            snprintf(name, sizeof name, "%s", longname);
            longname[0] = 0;
        }
        uint64_t chk, size;
        if (parse_octal(h + 148, 8, &chk) != 0) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: member '%s' at offset %llu: bad checksum field",
                              tar, name, (unsigned long long)off);
            break;
        }
        uint64_t sum_u = 0;
        int64_t sum_s = 0;
        for (int i = 0; i < 512; i++) {
            unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
            sum_u += c;
            sum_s += (signed char)c;
        }
        if (chk != sum_u && (int64_t)chk != sum_s) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: member '%s' at offset %llu: header checksum mismatch "
                              "(stored %llu, computed %llu)",
                              tar, name, (unsigned long long)off, (unsigned long long)chk,
                              (unsigned long long)sum_u);
            break;
        }
        if (parse_octal(h + 124, 12, &size) != 0 || size > SL_TAR_MAX_MEMBER) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: member '%s': bad or oversized size field", tar,
                              name);
            break;
        }
        uint64_t data = off + 512, padded = (size + 511) / 512 * 512;
        if (data + padded > fsize) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: member '%s' truncated: %llu bytes declared (%llu with padding), "
                              "%llu present",
                              tar, name, (unsigned long long)size, (unsigned long long)padded,
                              (unsigned long long)(fsize - data));
            break;
        }
        char type = (char)h[156];
        snprintf(prev, sizeof prev, "%s", name);
        if (type == 'L' || type == 'x') {
            /* GNU long name, or a pax header (its "path" record) */
            if (size >= sizeof longname * 4) {
                st = sl_set_error(SL_ERR_FORMAT, "%s: member '%s': extended header too long", tar,
                                  name);
                break;
            }
            char buf[4096];
            if (fread(buf, 1, (size_t)size, f) != size) {
                st = sl_set_error(SL_ERR_IO, "%s: read error in '%s'", tar, name);
                break;
            }
            buf[size] = 0;
            if (type == 'L') {
                size_t ll = strnlen(buf, sizeof longname - 1);
                memcpy(longname, buf, ll);
                longname[ll] = 0;
            } else {
                size_t p = 0;
                while (p < size) {
                    char *sp = memchr(buf + p, ' ', (size_t)(size - p));
                    long rl = strtol(buf + p, NULL, 10);
                    if (!sp || rl <= 0 || p + (size_t)rl > size) {
                        st = sl_set_error(SL_ERR_FORMAT, "%s: member '%s': bad pax record", tar,
                                          name);
                        break;
                    }
                    if (!strncmp(sp + 1, "path=", 5)) {
                        size_t vl = (size_t)(buf + p + rl - 1 - (sp + 6));
                        if (vl >= sizeof longname) vl = sizeof longname - 1;
                        memcpy(longname, sp + 6, vl);
                        longname[vl] = 0;
                    }
                    p += (size_t)rl;
                }
                if (st) break;
            }
        } else if (type == '0' || type == 0) {
            size_t kl = key_len(name);
            if (kl >= sizeof g.key) kl = sizeof g.key - 1;
            if (strncmp(g.key, name, kl) != 0 || g.key[kl] != 0) {
                if ((st = flush_group(ds, &g, shard, tar, &incomplete))) break;
                memcpy(g.key, name, kl);
                g.key[kl] = 0;
            }
            if (has_ext(name, ".jpg") || has_ext(name, ".jpeg") || has_ext(name, ".png") ||
                has_ext(name, ".webp")) {
                g.has_img = 1;
                g.img_off = data;
                g.img_size = size;
            } else if (has_ext(name, ".txt")) {
                if (size > SL_TAR_MAX_CAPTION) {
                    st = sl_set_error(SL_ERR_LIMIT, "%s: member '%s': caption over %u bytes", tar,
                                      name, SL_TAR_MAX_CAPTION);
                    break;
                }
                char *cap = malloc((size_t)size + 1);
                if (!cap) {
                    st = sl_set_error(SL_ERR_NOMEM, "out of memory");
                    break;
                }
                if (fread(cap, 1, (size_t)size, f) != size) {
                    free(cap);
                    st = sl_set_error(SL_ERR_IO, "%s: read error in '%s'", tar, name);
                    break;
                }
                cap[size] = 0;
                size_t cl = strlen(cap);
                while (cl && (cap[cl - 1] == '\n' || cap[cl - 1] == '\r' || cap[cl - 1] == ' '))
                    cap[--cl] = 0;
                free(g.caption);
                g.caption = cap;
                g.has_txt = 1;
            }
        }
        off = data + padded;
    }
    if (!st) st = flush_group(ds, &g, shard, tar, &incomplete);
    free(g.caption);
    fclose(f);
    if (st) {
        for (size_t i = before; i < ds->n; i++) free(ds->items[i].caption);
        ds->n = before;
        return st;
    }
    SL_DEBUG("%s: %zu samples (%zu incomplete skipped)", tar, ds->n - before, incomplete);
    return SL_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static sl_status add_one(sl_train_dataset *ds, const char *spec, const char *images_dir,
                         const char *split) {
    struct stat sb;
    if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(spec);
        if (!d) return sl_set_error(SL_ERR_IO, "%s: %s", spec, strerror(errno));
        char **names = NULL;
        size_t n = 0;
        sl_status st = SL_OK;
        struct dirent *e;
        while ((e = readdir(d)) && !st) {
            if (!has_ext(e->d_name, ".tar")) continue;
            char **nn = realloc(names, sizeof(char *) * (n + 1));
            if (!nn || !(nn[n] = join_path(spec, e->d_name))) {
                if (nn) names = nn;
                st = sl_set_error(SL_ERR_NOMEM, "out of memory");
                break;
            }
            names = nn;
            n++;
        }
        closedir(d);
        if (!st) qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n && !st; i++) st = sl_dataset_add_tar(ds, names[i]);
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        if (!st && n == 0) st = sl_set_error(SL_ERR_NOT_FOUND, "%s: no .tar shards", spec);
        return st;
    }
    if (has_ext(spec, ".json")) return sl_dataset_add_karpathy(ds, spec, images_dir, split, 0);
    if (has_ext(spec, ".tar")) return sl_dataset_add_tar(ds, spec);
    return sl_dataset_add_tsv(ds, spec, images_dir);
}

sl_status sl_dataset_add(sl_train_dataset *ds, const char *spec, const char *images_dir,
                         const char *split) {
    char *copy = strdup(spec);
    if (!copy) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    sl_status st = SL_OK;
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && !st; t = strtok_r(NULL, ",", &save))
        st = add_one(ds, t, images_dir, split);
    free(copy);
    return st;
}

/* ---- augmentation ------------------------------------------------------- */

void sl_random_resized_crop(uint64_t *rng, int W, int H, double smin, double smax, double rmin,
                            double rmax, int *x, int *y, int *w, int *h) {
    double area = (double)W * H, lr0 = log(rmin), lr1 = log(rmax);
    for (int t = 0; t < 10; t++) {
        double ta = area * (smin + (smax - smin) * uniform01(rng));
        double ar = exp(lr0 + (lr1 - lr0) * uniform01(rng));
        int cw = (int)nearbyint(sqrt(ta * ar)), ch = (int)nearbyint(sqrt(ta / ar));
        if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
            *y = (int)(sl_splitmix64(rng) % (uint64_t)(H - ch + 1));
            *x = (int)(sl_splitmix64(rng) % (uint64_t)(W - cw + 1));
            *w = cw;
            *h = ch;
            return;
        }
    }
    double in = (double)W / H;
    int cw = W, ch = H;
    if (in < rmin)
        ch = (int)nearbyint(cw / rmin);
    else if (in > rmax)
        cw = (int)nearbyint(ch * rmax);
    if (ch < 1) ch = 1;
    if (cw < 1) cw = 1;
    *w = cw;
    *h = ch;
    *x = (W - cw) / 2;
    *y = (H - ch) / 2;
}

static void blur_plane(float *x, float *tmp, int S, double sigma) {
    int r = (int)ceil(2.0 * sigma);
    if (r < 1) r = 1;
    if (r > 8) r = 8;
    float k[17];
    double sum = 0;
    for (int i = -r; i <= r; i++) sum += k[i + r] = (float)exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] = (float)(k[i] / sum);
    for (int y = 0; y < S; y++) /* horizontal, edges clamped */
        for (int xx = 0; xx < S; xx++) {
            float a = 0;
            for (int i = -r; i <= r; i++) {
                int c = xx + i < 0 ? 0 : xx + i >= S ? S - 1 : xx + i;
                a += k[i + r] * x[(size_t)y * S + c];
            }
            tmp[(size_t)y * S + xx] = a;
        }
    for (int y = 0; y < S; y++) /* vertical */
        for (int xx = 0; xx < S; xx++) {
            float a = 0;
            for (int i = -r; i <= r; i++) {
                int c = y + i < 0 ? 0 : y + i >= S ? S - 1 : y + i;
                a += k[i + r] * tmp[(size_t)c * S + xx];
            }
            x[(size_t)y * S + xx] = a;
        }
}

static float clamp01(float v) {
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* A standard normal draw (Box-Muller). */
static double normal01(uint64_t *rng) {
    double u = uniform01(rng), v = uniform01(rng);
    return sqrt(-2.0 * log(u > 1e-300 ? u : 1e-300)) * cos(6.283185307179586 * v);
}

/* Random texture filter: one k x k kernel (k odd, 3 to kmax) of normal
 * weights with standard deviation 1/k (signed so they sum to >= 0), the
 * same for every channel so the hues stay; each filtered channel is brought back to the mean and
 * spread of its input, then mixed with it at a uniform ratio. Shapes and colours stay, shading and
 * line texture change. */
static void random_filter(float *px, int S, int kmax, uint64_t *rng) {
    const size_t P = (size_t)S * S;
    kmax = kmax < 3 ? 3 : kmax > 9 ? 9 : kmax; /* sl_loader_create refuses others */
    int k = 3 + 2 * (int)(sl_splitmix64(rng) % (uint64_t)((kmax - 1) / 2));
    int r = k / 2;
    float w[81];
    double sum = 0;
    for (int i = 0; i < k * k; i++) sum += w[i] = (float)(normal01(rng) / k);
    if (sum < 0) /* a kernel that inverts the low frequencies would turn red to cyan */
        for (int i = 0; i < k * k; i++) w[i] = -w[i];
    float mix = (float)uniform01(rng);
    float *y = malloc(P * sizeof(float));
    if (!y) return; /* out of memory: the picture stays as it is */
    for (int c = 0; c < 3; c++) {
        float *x = px + c * P;
        double sx = 0, sxx = 0, sy = 0, syy = 0;
        for (int yy = 0; yy < S; yy++)
            for (int xx = 0; xx < S; xx++) {
                float a = 0;
                for (int dy = -r; dy <= r; dy++) {
                    int cy = yy + dy < 0 ? 0 : yy + dy >= S ? S - 1 : yy + dy;
                    for (int dx = -r; dx <= r; dx++) {
                        int cx = xx + dx < 0 ? 0 : xx + dx >= S ? S - 1 : xx + dx;
                        a += w[(dy + r) * k + dx + r] * x[(size_t)cy * S + cx];
                    }
                }
                y[(size_t)yy * S + xx] = a;
                sy += a, syy += (double)a * a;
            }
        for (size_t i = 0; i < P; i++) sx += x[i], sxx += (double)x[i] * x[i];
        double mx = sx / P, my = sy / P;
        double dx2 = sxx / P - mx * mx, dy2 = syy / P - my * my;
        double g = dy2 > 1e-12 && dx2 > 0 ? sqrt(dx2 / dy2) : 0;
        for (size_t i = 0; i < P; i++)
            x[i] = clamp01(mix * x[i] + (1 - mix) * (float)(mx + (y[i] - my) * g));
    }
    free(y);
}

void sl_augment_photometric(const sl_augment_opts *a, uint64_t *rng, float *px, int S,
                            const float mean[3], const float std[3]) {
    const size_t P = (size_t)S * S;
    int any = a->color_jitter > 0 || (a->blur_sigma > 0 && a->blur_p > 0) || a->posterize_p > 0 ||
              a->grayscale_p > 0 || a->filter_p > 0;
    if (!any) return;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < P; i++) px[c * P + i] = px[c * P + i] * std[c] + mean[c];
    float *R = px, *G = px + P, *B = px + 2 * P;
    if (a->color_jitter > 0) {
        double j = a->color_jitter;
        float fb = (float)(1 - j + 2 * j * uniform01(rng));
        float fc = (float)(1 - j + 2 * j * uniform01(rng));
        float fs = (float)(1 - j + 2 * j * uniform01(rng));
        double gm = 0;
        for (size_t i = 0; i < P; i++) {
            R[i] = clamp01(R[i] * fb), G[i] = clamp01(G[i] * fb), B[i] = clamp01(B[i] * fb);
            gm += 0.299 * R[i] + 0.587 * G[i] + 0.114 * B[i];
        }
        float m = (float)(gm / (double)P);
        for (size_t i = 0; i < P; i++) {
            R[i] = clamp01((R[i] - m) * fc + m), G[i] = clamp01((G[i] - m) * fc + m);
            B[i] = clamp01((B[i] - m) * fc + m);
            float g = 0.299f * R[i] + 0.587f * G[i] + 0.114f * B[i];
            R[i] = clamp01(g + (R[i] - g) * fs), G[i] = clamp01(g + (G[i] - g) * fs);
            B[i] = clamp01(g + (B[i] - g) * fs);
        }
    }
    if (a->blur_sigma > 0 && uniform01(rng) < a->blur_p) {
        double sigma = 0.1 + (a->blur_sigma > 0.1 ? a->blur_sigma - 0.1 : 0) * uniform01(rng);
        float *tmp = malloc(P * sizeof(float));
        if (tmp) /* out of memory: the picture stays sharp */
            for (int c = 0; c < 3; c++) blur_plane(px + c * P, tmp, S, sigma);
        free(tmp);
    }
    if (a->posterize_p > 0 && uniform01(rng) < a->posterize_p) {
        float L = (float)((1 << (2 + (int)(sl_splitmix64(rng) % 3))) - 1);
        for (size_t i = 0; i < 3 * P; i++) px[i] = nearbyintf(clamp01(px[i]) * L) / L;
    }
    if (a->filter_p > 0 && uniform01(rng) < a->filter_p) random_filter(px, S, a->filter_k, rng);
    if (a->grayscale_p > 0 && uniform01(rng) < a->grayscale_p)
        for (size_t i = 0; i < P; i++)
            R[i] = G[i] = B[i] = 0.299f * R[i] + 0.587f * G[i] + 0.114f * B[i];
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < P; i++) px[c * P + i] = (px[c * P + i] - mean[c]) / std[c];
}

/* Word swaps of a mirrored caption, longest spellings first. */
static const char *const mirror_pairs[][2] = {{"counterclockwise", "clockwise"},
                                              {"counter-clockwise", "clockwise"},
                                              {"counter clockwise", "clockwise"},
                                              {"anticlockwise", "clockwise"},
                                              {"anti-clockwise", "clockwise"},
                                              {"clockwise", "counterclockwise"},
                                              {"left", "right"},
                                              {"right", "left"}};

/* Endings a swapped word may carry (leftwards, rightmost, left-handed:
 * the hyphen ends the word anyway). */
static const char *const mirror_suffixes[] = {"", "s", "ward", "wards", "most", "hand", "handed"};

/* Length of the swappable word at s (a match of `from` that ends the word
 * or goes on with an allowed ending), 0 when there is none. */
static size_t mirror_match(const char *s, const char *from) {
    const size_t n = strlen(from);
    if (strncasecmp(s, from, n) != 0) return 0;
    size_t e = n;
    while (isalpha((unsigned char)s[e])) e++;
    for (size_t k = 0; k < sizeof mirror_suffixes / sizeof mirror_suffixes[0]; k++)
        if (e - n == strlen(mirror_suffixes[k]) &&
            strncasecmp(s + n, mirror_suffixes[k], e - n) == 0)
            return n;
    return 0;
}

char *sl_caption_mirror(const char *caption) {
    const size_t n = strlen(caption);
    /* the longest growth: "clockwise" (9) -> "counterclockwise" (16) */
    char *out = malloc(2 * n + 1), *o = out;
    if (!out) return NULL;
    const size_t npairs = sizeof mirror_pairs / sizeof mirror_pairs[0];
    for (size_t i = 0; i < n;) {
        size_t k = npairs, len = 0;
        if (i == 0 || !isalpha((unsigned char)caption[i - 1]))
            for (k = 0; k < npairs && !(len = mirror_match(caption + i, mirror_pairs[k][0])); k++)
                ;
        if (k == npairs) {
            *o++ = caption[i++];
            continue;
        }
        /* the case: all capitals stay capitals, a capital first letter stays */
        int upper = 1;
        for (size_t c = 0; c < len; c++)
            if (islower((unsigned char)caption[i + c])) upper = 0;
        const char *to = mirror_pairs[k][1];
        for (size_t c = 0; to[c]; c++)
            *o++ = upper || (c == 0 && isupper((unsigned char)caption[i]))
                       ? (char)toupper((unsigned char)to[c])
                       : to[c];
        i += len;
    }
    *o = 0;
    return out;
}

/* Mirror a CHW picture of S x S left to right in place. */
static void flip_pixels(float *px, int S) {
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++) {
            float *row = px + ((size_t)c * S + y) * S;
            for (int x = 0; x < S / 2; x++) {
                float t = row[x];
                row[x] = row[S - 1 - x];
                row[S - 1 - x] = t;
            }
        }
}

/* ---- loader ------------------------------------------------------------- */

enum { SLOT_FREE, SLOT_BUSY, SLOT_OK, SLOT_FAIL };

typedef struct slot {
    int state;
    float *pixels;
    int32_t *tokens;
} slot;

struct sl_loader {
    const sl_train_dataset *ds;
    const sl_tokenizer *tok;
    sl_loader_opts o;
    size_t pix; /* floats per sample */
    int window;
    slot *slots;
    uint64_t base;       /* next position to consume */
    uint64_t next_claim; /* next position for a worker */
    uint64_t perm_epoch; /* epoch of perm */
    size_t *perm;
    uint64_t skipped;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pthread_t *th;
    int n_th;
    int stop;
};

static void make_perm(sl_loader *l, uint64_t epoch) {
    size_t n = l->ds->n;
    for (size_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->o.shuffle) {
        uint64_t s = l->o.seed * 0x2545F4914F6CDD1Dull ^ (epoch + 1) * 0x9E3779B97F4A7C15ull;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(sl_splitmix64(&s) % i);
            size_t t = l->perm[i - 1];
            l->perm[i - 1] = l->perm[j];
            l->perm[j] = t;
        }
    }
    l->perm_epoch = epoch;
}

/* The stream position of this loader's position p (sl_loader_opts shard). */
static uint64_t stream_pos(const sl_loader *l, uint64_t p) {
    return l->o.shard_world > 1 ? p * (uint64_t)l->o.shard_world + (uint64_t)l->o.shard_rank : p;
}

/* Item of position p (caller holds the lock or is the only thread); claims
 * are sequential, so one permutation suffices. */
static size_t item_of(sl_loader *l, uint64_t lp) {
    const uint64_t p = stream_pos(l, lp);
    uint64_t e = p / l->ds->n;
    if (e != l->perm_epoch) make_perm(l, e);
    return l->perm[p % l->ds->n];
}

static sl_status read_member(const char *tar, uint64_t off, uint64_t size, unsigned char **out) {
    FILE *f = fopen(tar, "rb");
    if (!f) return sl_set_error(SL_ERR_IO, "%s: %s", tar, strerror(errno));
    unsigned char *b = malloc(size ? (size_t)size : 1);
    sl_status st = SL_OK;
    if (!b)
        st = sl_set_error(SL_ERR_NOMEM, "out of memory");
    else if (fseeko(f, (off_t)off, SEEK_SET) != 0 || fread(b, 1, (size_t)size, f) != size)
        st = sl_set_error(SL_ERR_IO, "%s: short read at offset %llu", tar, (unsigned long long)off);
    fclose(f);
    if (st)
        free(b);
    else
        *out = b;
    return st;
}

/* Decode, preprocess and tokenize item `it` of position p into s. */
static sl_status process(const sl_loader *l, uint64_t lp, size_t item, slot *s) {
    const uint64_t p = stream_pos(l, lp);
    const sl_train_item *it = &l->ds->items[item];
    sl_image img;
    memset(&img, 0, sizeof img);
    sl_status st;
    char where[64], *mirrored = NULL;
    if (it->path) {
        st = sl_image_load(it->path, NULL, &img);
    } else {
        unsigned char *bytes = NULL;
        const char *tar = l->ds->shards[it->shard];
        st = read_member(tar, it->off, it->size, &bytes);
        if (!st) {
            snprintf(where, sizeof where, "%s@%llu",
                     strrchr(tar, '/') ? strrchr(tar, '/') + 1 : tar, (unsigned long long)it->off);
            st = sl_image_decode(bytes, (size_t)it->size, where, NULL, &img);
            free(bytes);
        }
    }
    if (st) return st;
    sl_preprocess pp;
    pp.size = l->o.image_size;
    for (int c = 0; c < 3; c++) pp.mean[c] = l->o.mean[c], pp.std[c] = l->o.std[c];
    if (l->o.augment) {
        uint64_t rs = l->o.seed ^ 0xA0761D6478BD642Full;
        rs ^= sl_splitmix64(&rs) + p * 0xE7037ED1A0B428DBull;
        int x, y, w, h;
        double smin = l->o.aug.crop_scale_min > 0 ? l->o.aug.crop_scale_min : 0.9;
        sl_random_resized_crop(&rs, img.width, img.height, smin, 1.0, 3.0 / 4.0, 4.0 / 3.0, &x, &y,
                               &w, &h);
        sl_image c;
        memset(&c, 0, sizeof c);
        c.rgb = malloc((size_t)w * h * 3);
        if (!c.rgb) {
            sl_image_free(&img);
            return sl_set_error(SL_ERR_NOMEM, "out of memory");
        }
        for (int r = 0; r < h; r++)
            memcpy(c.rgb + (size_t)r * w * 3, img.rgb + ((size_t)(y + r) * img.width + x) * 3,
                   (size_t)w * 3);
        c.width = c.orig_width = w;
        c.height = c.orig_height = h;
        c.format = img.format;
        pp.crop = 0;
        st = sl_image_preprocess(&c, &pp, s->pixels, NULL);
        sl_image_free(&c);
        if (!st) sl_augment_photometric(&l->o.aug, &rs, s->pixels, pp.size, pp.mean, pp.std);
        /* drawn only when on: configurations without it keep their streams */
        if (!st && l->o.aug.flip_p > 0 && uniform01(&rs) < l->o.aug.flip_p) {
            flip_pixels(s->pixels, pp.size);
            mirrored = sl_caption_mirror(it->caption);
            if (!mirrored) st = sl_set_error(SL_ERR_NOMEM, "out of memory");
        }
    } else {
        pp.crop = 1;
        st = sl_image_preprocess(&img, &pp, s->pixels, NULL);
    }
    sl_image_free(&img);
    if (!st)
        st = sl_tokenizer_encode(l->tok, mirrored ? mirrored : it->caption, l->o.context_length, 0,
                                 s->tokens, NULL);
    free(mirrored);
    return st;
}

static void *worker(void *arg) {
    sl_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->next_claim >= l->base + (uint64_t)l->window)
            pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop) break;
        uint64_t p = l->next_claim++;
        size_t item = item_of(l, p);
        slot *s = &l->slots[p % (uint64_t)l->window];
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&l->mu);
        sl_status st = process(l, p, item, s);
        if (st)
            SL_WARN("skipping sample %zu (%s): %s", item,
                    l->ds->items[item].path ? l->ds->items[item].path : "tar member",
                    sl_last_error());
        pthread_mutex_lock(&l->mu);
        s->state = st ? SLOT_FAIL : SLOT_OK;
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

void sl_loader_free(sl_loader *l) {
    if (!l) return;
    if (l->n_th) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->n_th; i++) pthread_join(l->th[i], NULL);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    if (l->slots)
        for (int i = 0; i < l->window; i++) {
            free(l->slots[i].pixels);
            free(l->slots[i].tokens);
        }
    free(l->slots);
    free(l->perm);
    free(l->th);
    free(l);
}

sl_status sl_loader_create(const sl_train_dataset *ds, const sl_tokenizer *tok,
                           const sl_loader_opts *o, uint64_t pos, sl_loader **out) {
    *out = NULL;
    if (!ds || !ds->n) return sl_set_error(SL_ERR_INVALID, "loader: empty dataset");
    if (o->image_size < 1 || o->image_size > 4096 || o->context_length < 2 || o->threads < 0 ||
        o->threads > 256 || o->shard_world < 0 || o->shard_world > 65536 ||
        (o->shard_world > 1 && (o->shard_rank < 0 || o->shard_rank >= o->shard_world)))
        return sl_set_error(SL_ERR_INVALID, "loader: bad options");
    if (o->augment && o->aug.filter_p > 0 &&
        (o->aug.filter_p > 1 || o->aug.filter_k < 3 || o->aug.filter_k > 9 ||
         !(o->aug.filter_k & 1)))
        return sl_set_error(SL_ERR_INVALID,
                            "loader: filter_k %d is not an odd size in [3, 9] (or filter_p %g > 1)",
                            o->aug.filter_k, o->aug.filter_p);
    sl_loader *l = calloc(1, sizeof *l);
    if (!l) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    l->ds = ds;
    l->tok = tok;
    l->o = *o;
    l->pix = (size_t)3 * o->image_size * o->image_size;
    l->window = o->prefetch > 0 ? o->prefetch : 64;
    if (l->window > 4096) l->window = 4096;
    l->base = l->next_claim = pos;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->slots = calloc((size_t)l->window, sizeof *l->slots);
    l->perm = malloc(sizeof(size_t) * ds->n);
    if (!l->slots || !l->perm) goto nomem;
    for (int i = 0; i < l->window; i++) {
        l->slots[i].pixels = malloc(sizeof(float) * l->pix);
        l->slots[i].tokens = malloc(sizeof(int32_t) * (size_t)o->context_length);
        if (!l->slots[i].pixels || !l->slots[i].tokens) goto nomem;
    }
    make_perm(l, stream_pos(l, pos) / ds->n);
    if (o->threads > 0) {
        l->th = calloc((size_t)o->threads, sizeof *l->th);
        if (!l->th) goto nomem;
        for (int i = 0; i < o->threads; i++) {
            if (pthread_create(&l->th[i], NULL, worker, l) != 0) {
                sl_loader_free(l);
                return sl_set_error(SL_ERR_EXTERNAL, "loader: cannot start a thread");
            }
            l->n_th++;
        }
    }
    *out = l;
    return SL_OK;
nomem:
    sl_loader_free(l);
    return sl_set_error(SL_ERR_NOMEM, "out of memory (loader)");
}

sl_status sl_loader_next(sl_loader *l, int B, float *pixels, int32_t *tokens) {
    int got = 0;
    uint64_t fails = 0;
    while (got < B) {
        slot *s = &l->slots[l->base % (uint64_t)l->window];
        int ok;
        if (l->n_th) {
            pthread_mutex_lock(&l->mu);
            while (s->state != SLOT_OK && s->state != SLOT_FAIL)
                pthread_cond_wait(&l->cv_done, &l->mu);
            ok = s->state == SLOT_OK;
            pthread_mutex_unlock(&l->mu);
        } else {
            size_t item = item_of(l, l->base);
            sl_status st = process(l, l->base, item, s);
            if (st)
                SL_WARN("skipping sample %zu (%s): %s", item,
                        l->ds->items[item].path ? l->ds->items[item].path : "tar member",
                        sl_last_error());
            ok = st == SL_OK;
            l->next_claim = l->base + 1;
        }
        if (ok) {
            memcpy(pixels + (size_t)got * l->pix, s->pixels, sizeof(float) * l->pix);
            memcpy(tokens + (size_t)got * l->o.context_length, s->tokens,
                   sizeof(int32_t) * (size_t)l->o.context_length);
            got++;
            fails = 0;
        } else {
            l->skipped++;
            fails++;
        }
        if (l->n_th) pthread_mutex_lock(&l->mu);
        s->state = SLOT_FREE;
        l->base++;
        if (l->n_th) {
            pthread_cond_broadcast(&l->cv_work);
            pthread_mutex_unlock(&l->mu);
        }
        if (fails >= l->ds->n)
            return sl_set_error(SL_ERR_FORMAT, "loader: every sample of an epoch failed to load");
    }
    return SL_OK;
}

uint64_t sl_loader_position(const sl_loader *l) {
    return l->base;
}
uint64_t sl_loader_skipped(const sl_loader *l) {
    return l->skipped;
}
