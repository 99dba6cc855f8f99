/*
 * tests/test_train.c - the trainer around the model core: AdamW + schedule
 * against a hand computation, the tar / TSV / Karpathy loaders, bit-exact
 * resume through sl_train_run, and an overfitting check (64 distinct pairs
 * reach R@1 = 100% both ways).
 *
 * usage: test_train TINY_PRESET_JSON
 */
#include "encoder/clip_internal.h"
#include "sightline/eval.h"
#include "sightline/tokenizer.h"
#include "testutil.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/optim.h"
#include "trainer/train.h"

#include <stdint.h>
#include <sys/stat.h>
#include <turbojpeg.h>

static const char *TMP;

/* ---- fixtures ----------------------------------------------------------- */

/* A distinct W x H JPEG for index i: a colour gradient with a per-index
 * pattern of blocks. */
static unsigned char *make_jpeg(int i, int W, int H, unsigned long *len) {
    uint8_t *rgb = malloc((size_t)W * H * 3);
    uint64_t s = 1234567u + (uint64_t)i * 7919u;
    int bits[16];
    for (int k = 0; k < 16; k++) bits[k] = (int)(sl_splitmix64(&s) & 1);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int bx = x * 4 / W, by = y * 4 / H, on = bits[by * 4 + bx];
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            p[0] = (uint8_t)(on ? 230 : 20);
            p[1] = (uint8_t)((i * 37 + x * 3) & 255);
            p[2] = (uint8_t)((i * 91 + y * 5) & 255);
        }
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    *len = 0;
    if (tjCompress2(tj, rgb, W, 0, H, TJPF_RGB, &out, len, TJSAMP_444, 95, 0) != 0) {
        fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
        exit(2);
    }
    tjDestroy(tj);
    free(rgb);
    return out;
}

static void write_bytes(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(d, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static const char *WORDS[] = {"red",  "blue", "green", "cat",  "dog",  "tree",  "house", "car",
                              "bird", "fish", "sky",   "road", "boat", "horse", "chair", "lamp"};

static void caption_of(int i, char *buf, size_t n) {
    snprintf(buf, n, "a %s %s near the %s", WORDS[i % 16], WORDS[(i / 16 + 3) % 16],
             WORDS[(i * 7 + 5) % 16]);
}

/* N images (img_i.jpg) under TMP/imgs, TMP/pairs.tsv, and a tokenizer in
 * TMP/tok trained on the captions. */
static void make_fixtures(int N) {
    char p[700], cap[128];
    snprintf(p, sizeof p, "%s/imgs", TMP);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/pairs.tsv", TMP);
    FILE *tsv = fopen(p, "w");
    snprintf(p, sizeof p, "%s/captions.txt", TMP);
    FILE *caps = fopen(p, "w");
    for (int i = 0; i < N; i++) {
        unsigned long len;
        unsigned char *j = make_jpeg(i, 40 + (i % 3) * 8, 36 + (i % 5) * 4, &len);
        snprintf(p, sizeof p, "%s/imgs/img_%d.jpg", TMP, i);
        write_bytes(p, j, len);
        tjFree(j);
        caption_of(i, cap, sizeof cap);
        fprintf(tsv, "img_%d.jpg\t%s\n", i, cap);
        fprintf(caps, "%s\n", cap);
    }
    fclose(tsv);
    fclose(caps);
    char tok[700];
    snprintf(tok, sizeof tok, "%s/tok", TMP);
    CHECK_OK(sl_tokenizer_train(p, 600, 1, tok));
}

/* ---- (b) optimizer ------------------------------------------------------ */

static void test_adamw(void) {
    /* two 2-element tensors: "w" decayed, "b" not */
    float params[4] = {0.5f, -1.0f, 0.25f, 2.0f}, grads[4];
    sl_train_tensor tensors[2];
    memset(tensors, 0, sizeof tensors);
    snprintf(tensors[0].name, sizeof tensors[0].name, "w");
    tensors[0].offset = 0, tensors[0].count = 2, tensors[0].decay = 1;
    snprintf(tensors[1].name, sizeof tensors[1].name, "b");
    tensors[1].offset = 2, tensors[1].count = 2, tensors[1].decay = 0;
    sl_train_model m;
    memset(&m, 0, sizeof m);
    m.params_mem = params;
    m.grads_mem = grads;
    m.num_params = 4;
    m.tensors = tensors;
    m.num_tensors = 2;
    sl_adamw_config c = {0.9, 0.98, 1e-6, 0.2, 1.0};
    sl_adamw opt;
    CHECK_OK(sl_adamw_init(&opt, &c, 4));
    double ep[4] = {0.5, -1.0, 0.25, 2.0}, em[4] = {0}, ev[4] = {0};
    /* micro-batch gradients (two per step, summed in the buffer, averaged) */
    const double g1[3][4] = {
        {0.3, -0.2, 0.1, 0.4}, {2.0, 1.0, -3.0, 0.5}, {0.01, 0.02, 0.0, -0.05}};
    const double g2[3][4] = {
        {0.1, 0.0, 0.3, -0.2}, {1.0, 2.0, -1.0, 0.5}, {0.03, -0.02, 0.0, 0.05}};
    double lrs[3];
    for (int s = 0; s < 3; s++) {
        lrs[s] = sl_lr_cosine(0.1, 2, 5, s);
        for (int i = 0; i < 4; i++) grads[i] = (float)g1[s][i];
        for (int i = 0; i < 4; i++) grads[i] += (float)g2[s][i];
        double gn;
        CHECK_OK(sl_adamw_step(&opt, &m, lrs[s], 0.5, &gn));
        /* by hand */
        double g[4], norm = 0;
        for (int i = 0; i < 4; i++) g[i] = (g1[s][i] + g2[s][i]) / 2, norm += g[i] * g[i];
        norm = sqrt(norm);
        CHECK_NEAR(gn, norm, 1e-6);
        double coef = norm > 1.0 ? 1.0 / (norm + 1e-6) : 1.0;
        int t = s + 1;
        for (int i = 0; i < 4; i++) {
            double gi = g[i] * coef;
            if (i < 2) ep[i] *= 1 - lrs[s] * 0.2;
            em[i] = 0.9 * em[i] + 0.1 * gi;
            ev[i] = 0.98 * ev[i] + 0.02 * gi * gi;
            double mh = em[i] / (1 - pow(0.9, t)), vh = ev[i] / (1 - pow(0.98, t));
            ep[i] -= lrs[s] * mh / (sqrt(vh) + 1e-6);
        }
        for (int i = 0; i < 4; i++)
            CHECK_MSG(fabs(params[i] - ep[i]) <= 2e-6, "step %d param %d: %.9g vs %.9g", s, i,
                      (double)params[i], ep[i]);
    }
    /* step 2 clipped (norm > 1), steps 0-1 warmup */
    CHECK_NEAR(lrs[0], 0.05, 1e-12);
    CHECK_NEAR(lrs[1], 0.1, 1e-12);
    CHECK_NEAR(sl_lr_cosine(0.1, 2, 5, 2), 0.1, 1e-12);
    CHECK_NEAR(sl_lr_cosine(0.1, 2, 5, 3), 0.1 * 0.5 * (1 + cos(M_PI / 3)), 1e-12);
    CHECK_NEAR(sl_lr_cosine(0.1, 2, 5, 5), 0.0, 1e-12);
    /* a zero gradient on the undecayed tensor leaves it (moments aside) to
     * Adam alone; on the decayed one decay still shrinks it */
    float before0 = params[0], before2 = params[2];
    memset(opt.m, 0, sizeof(float) * 4);
    memset(opt.v, 0, sizeof(float) * 4);
    for (int i = 0; i < 4; i++) grads[i] = 0;
    CHECK_OK(sl_adamw_step(&opt, &m, 0.1, 1.0, NULL));
    CHECK(params[2] == before2);
    CHECK(fabs(params[0] - before0 * (1 - 0.1 * 0.2)) < 1e-7);
    sl_adamw_free(&opt);
}

/* ---- (c) tar ------------------------------------------------------------ */

static void tar_header(unsigned char h[512], const char *name, size_t size, char type) {
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011zo", size);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (unsigned char)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

static void tar_member(FILE *f, const char *name, const void *data, size_t size) {
    unsigned char h[512], pad[512] = {0};
    tar_header(h, name, size, '0');
    fwrite(h, 1, 512, f);
    fwrite(data, 1, size, f);
    if (size % 512) fwrite(pad, 1, 512 - size % 512, f);
}

/* A shard of n samples (key sample_<base+i>), returns its size. */
static long make_shard(const char *path, int base, int n, int end_blocks) {
    FILE *f = fopen(path, "wb");
    char name[64], cap[128];
    for (int i = 0; i < n; i++) {
        unsigned long len;
        unsigned char *j = make_jpeg(base + i, 40, 40, &len);
        snprintf(name, sizeof name, "dir/sample_%04d.jpg", base + i);
        tar_member(f, name, j, len);
        tjFree(j);
        caption_of(base + i, cap, sizeof cap);
        snprintf(name, sizeof name, "dir/sample_%04d.txt", base + i);
        tar_member(f, name, cap, strlen(cap));
    }
    /* an image without caption: skipped with a warning */
    snprintf(name, sizeof name, "dir/orphan_%04d.jpg", base);
    tar_member(f, name, "xx", 2);
    if (end_blocks) {
        unsigned char z[1024] = {0};
        fwrite(z, 1, 1024, f);
    }
    long sz = ftell(f);
    fclose(f);
    return sz;
}

static void test_tar(const sl_tokenizer *tok) {
    char p[700];
    snprintf(p, sizeof p, "%s/shards", TMP);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/shards/a.tar", TMP);
    make_shard(p, 100, 3, 1);
    snprintf(p, sizeof p, "%s/shards/b.tar", TMP);
    make_shard(p, 200, 2, 1);
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(p, sizeof p, "%s/shards", TMP);
    CHECK_OK(sl_dataset_add(&ds, p, NULL, NULL));
    CHECK(ds.n == 5 && ds.n_shards == 2);
    char cap[128];
    caption_of(201, cap, sizeof cap);
    if (ds.n == 5) CHECK(strcmp(ds.items[4].caption, cap) == 0 && ds.items[4].shard == 1);
    /* the loader decodes tar members */
    sl_loader_opts lo = {.image_size = 32,
                         .mean = {0.5f, 0.5f, 0.5f},
                         .std = {0.25f, 0.25f, 0.25f},
                         .context_length = 16,
                         .augment = 1,
                         .shuffle = 1,
                         .seed = 7,
                         .threads = 2,
                         .prefetch = 8};
    sl_loader *l = NULL;
    CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
    float px[5 * 3 * 32 * 32];
    int32_t ids[5 * 16];
    if (l) CHECK_OK(sl_loader_next(l, 5, px, ids));
    if (l) CHECK(sl_loader_skipped(l) == 0 && sl_loader_position(l) == 5);
    sl_loader_free(l);
    sl_dataset_free(&ds);

    /* corrupt checksum: flip a byte of the second member's name */
    char bad[700];
    snprintf(p, sizeof p, "%s/shards/a.tar", TMP);
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(sl_read_file(p, 1 << 24, &buf, &len));
    snprintf(bad, sizeof bad, "%s/bad_sum.tar", TMP);
    size_t second = 0;
    for (size_t off = 512; off + 512 <= len; off += 512)
        if (!memcmp(buf + off, "dir/sample_0100.txt", 19)) second = off;
    CHECK(second > 0);
    buf[second + 5] ^= 0x01;
    write_bytes(bad, buf, len);
    memset(&ds, 0, sizeof ds);
    CHECK_ERR(sl_dataset_add_tar(&ds, bad), SL_ERR_FORMAT, "checksum");
    CHECK(strstr(sl_last_error(), "bad_sum.tar") != NULL);
    sl_dataset_free(&ds);
    buf[second + 5] ^= 0x01;
    /* truncated member: cut inside the third image */
    size_t third = 0;
    for (size_t off = 512; off + 512 <= len; off += 512)
        if (!memcmp(buf + off, "dir/sample_0101.jpg", 19)) third = off;
    CHECK(third > 0);
    snprintf(bad, sizeof bad, "%s/trunc.tar", TMP);
    write_bytes(bad, buf, third + 512 + 100);
    memset(&ds, 0, sizeof ds);
    CHECK_ERR(sl_dataset_add_tar(&ds, bad), SL_ERR_FORMAT, "sample_0101.jpg");
    CHECK(strstr(sl_last_error(), "trunc.tar") && strstr(sl_last_error(), "truncated"));
    CHECK(ds.n == 0);
    sl_dataset_free(&ds);
    /* a shard ending without the end-of-archive blocks */
    snprintf(bad, sizeof bad, "%s/noend.tar", TMP);
    write_bytes(bad, buf, len - 1024);
    memset(&ds, 0, sizeof ds);
    CHECK_ERR(sl_dataset_add_tar(&ds, bad), SL_ERR_FORMAT, "orphan_0100.jpg");
    CHECK(strstr(sl_last_error(), "noend.tar") && strstr(sl_last_error(), "truncated"));
    sl_dataset_free(&ds);
    /* a bad octal size field */
    memcpy(buf + 124, "12x4", 4);
    snprintf(bad, sizeof bad, "%s/badsize.tar", TMP);
    write_bytes(bad, buf, len);
    memset(&ds, 0, sizeof ds);
    CHECK_ERR(sl_dataset_add_tar(&ds, bad), SL_ERR_FORMAT, "sample_0100.jpg");
    sl_dataset_free(&ds);
    free(buf);
}

/* ---- (d) TSV and Karpathy ----------------------------------------------- */

static void test_tsv_karpathy(const sl_tokenizer *tok) {
    char p[700], im[700];
    snprintf(im, sizeof im, "%s/imgs", TMP);
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(p, sizeof p, "%s/pairs.tsv", TMP);
    CHECK_OK(sl_dataset_add(&ds, p, im, NULL));
    CHECK(ds.n == 64);
    char cap[128], want[800];
    caption_of(7, cap, sizeof cap);
    snprintf(want, sizeof want, "%s/img_7.jpg", im);
    if (ds.n == 64) CHECK(!strcmp(ds.items[7].caption, cap) && !strcmp(ds.items[7].path, want));
    sl_dataset_free(&ds);
    snprintf(p, sizeof p, "%s/bad.tsv", TMP);
    write_bytes(p, "# comment\n\nimg_1.jpg\tok\nno tab here\n", 36);
    CHECK_ERR(sl_dataset_add_tsv(&ds, p, im), SL_ERR_FORMAT, "bad.tsv:4");
    sl_dataset_free(&ds);

    /* Karpathy: 3 train images (2 captions each), 1 test image */
    snprintf(p, sizeof p, "%s/karpathy.json", TMP);
    const char *js =
        "{\"images\": ["
        "{\"filename\": \"img_0.jpg\", \"split\": \"train\", \"sentences\": [{\"raw\": \"zero "
        "a\"}, "
        "{\"raw\": \"zero b\"}]},"
        "{\"filename\": \"img_1.jpg\", \"split\": \"train\", \"sentences\": [{\"raw\": \"one a\"}, "
        "{\"raw\": \"one b\"}]},"
        "{\"filename\": \"img_2.jpg\", \"split\": \"test\", \"sentences\": [{\"raw\": \"two\"}]},"
        "{\"filename\": \"img_3.jpg\", \"split\": \"train\", \"sentences\": [{\"raw\": \"three\"}, "
        "{\"raw\": \"three b\"}]}]}";
    write_bytes(p, js, strlen(js));
    CHECK_OK(sl_dataset_add(&ds, p, im, NULL));
    CHECK(ds.n == 6);
    snprintf(want, sizeof want, "%s/img_1.jpg", im);
    if (ds.n == 6) CHECK(!strcmp(ds.items[3].caption, "one b") && !strcmp(ds.items[3].path, want));
    sl_dataset_free(&ds);
    CHECK_OK(sl_dataset_add_karpathy(&ds, p, im, "test", 0));
    CHECK(ds.n == 1);
    sl_dataset_free(&ds);
    /* a bad image is skipped and counted; shuffled order is deterministic */
    snprintf(p, sizeof p, "%s/withbad.tsv", TMP);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 6; i++) fprintf(f, "img_%d.jpg\tcap %d\n", i, i);
    fprintf(f, "missing.jpg\tnothing\n");
    fclose(f);
    CHECK_OK(sl_dataset_add_tsv(&ds, p, im));
    sl_loader_opts lo = {.image_size = 32,
                         .mean = {0.5f, 0.5f, 0.5f},
                         .std = {0.25f, 0.25f, 0.25f},
                         .context_length = 16,
                         .augment = 1,
                         .shuffle = 1,
                         .seed = 3};
    float a[14 * 3 * 32 * 32], b[14 * 3 * 32 * 32];
    int32_t ta[14 * 16], tb[14 * 16];
    for (int run = 0; run < 2; run++) {
        lo.threads = run ? 3 : 0;
        sl_loader *l = NULL;
        CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
        if (!l) continue;
        CHECK_OK(sl_loader_next(l, 12, run ? b : a, run ? tb : ta));
        CHECK(sl_loader_skipped(l) == 2 && sl_loader_position(l) == 14);
        sl_loader_free(l);
    }
    CHECK(memcmp(a, b, sizeof(float) * 12 * 3 * 32 * 32) == 0);
    CHECK(memcmp(ta, tb, sizeof(int32_t) * 12 * 16) == 0);
    /* with the photometric augmentations on: still independent of the
     * thread count, and different pictures */
    static float c[14 * 3 * 32 * 32], d[14 * 3 * 32 * 32];
    sl_augment_opts aug = {0.7, 0.3, 1.0, 0.5, 0.5, 0.2, 0, 0, 0};
    lo.aug = aug;
    for (int run = 0; run < 2; run++) {
        lo.threads = run ? 3 : 0;
        sl_loader *l = NULL;
        CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
        if (!l) continue;
        CHECK_OK(sl_loader_next(l, 12, run ? d : c, run ? tb : ta));
        sl_loader_free(l);
    }
    CHECK(memcmp(c, d, sizeof(float) * 12 * 3 * 32 * 32) == 0);
    CHECK(memcmp(a, c, sizeof(float) * 12 * 3 * 32 * 32) != 0);
    sl_dataset_free(&ds);
}

/* Loader options with the crop and every photometric augmentation on (no
 * mirroring; seed 5, 2 threads). */
static sl_loader_opts augmented_loader(int S, int ctx, int shuffle) {
    sl_loader_opts lo = {S,
                         {0.5f, 0.5f, 0.5f},
                         {0.25f, 0.25f, 0.25f},
                         ctx,
                         1,
                         {0.8, 0.3, 1.0, 0.5, 0.5, 0.2, 0.0, 0, 0},
                         shuffle,
                         5,
                         2,
                         0,
                         0,
                         0};
    return lo;
}

/* Data-parallel shards (sl_loader_opts shard_rank / shard_world): ranks 0
 * and 1 of 2, 40 samples each from position 0 and then 8 more each from
 * position 40 (a resumed loader), interleave to the 96 samples of one
 * unsharded loader bit for bit: items, shuffle across an epoch boundary (64
 * items), augmentation. */
static void test_shard(const sl_tokenizer *tok) {
    char p[700], im[700];
    snprintf(im, sizeof im, "%s/imgs", TMP);
    snprintf(p, sizeof p, "%s/pairs.tsv", TMP);
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    CHECK_OK(sl_dataset_add(&ds, p, im, NULL));
    enum { S = 32, CTX = 16, N = 96, PIX = 3 * S * S };
    static float whole[N * PIX], part[2][N / 2 * PIX];
    static int32_t twhole[N * CTX], tpart[2][N / 2 * CTX];
    sl_loader_opts lo = augmented_loader(S, CTX, 1);
    sl_loader *l = NULL;
    CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
    if (l) CHECK_OK(sl_loader_next(l, N, whole, twhole));
    sl_loader_free(l);
    lo.shard_world = 2;
    for (int r = 0; r < 2; r++) {
        lo.shard_rank = r;
        lo.threads = r ? 0 : 3;
        l = NULL;
        CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
        if (l) {
            CHECK_OK(sl_loader_next(l, 40, part[r], tpart[r]));
            CHECK(sl_loader_position(l) == 40);
        }
        sl_loader_free(l);
        l = NULL;
        CHECK_OK(sl_loader_create(&ds, tok, &lo, 40, &l));
        if (l) CHECK_OK(sl_loader_next(l, 8, part[r] + (size_t)40 * PIX, tpart[r] + 40 * CTX));
        sl_loader_free(l);
    }
    int same = 1;
    for (int k = 0; k < N; k++) {
        const int r = k % 2, j = k / 2;
        same &=
            memcmp(whole + (size_t)k * PIX, part[r] + (size_t)j * PIX, sizeof(float) * PIX) == 0;
        same &= memcmp(twhole + k * CTX, tpart[r] + j * CTX, sizeof(int32_t) * CTX) == 0;
    }
    CHECK_MSG(same, "two shards do not interleave to the unsharded stream");
    /* a rank outside the world */
    lo.shard_rank = 2;
    l = NULL;
    CHECK_ERR(sl_loader_create(&ds, tok, &lo, 0, &l), SL_ERR_INVALID, "loader");
    CHECK(l == NULL);
    sl_dataset_free(&ds);
}

/* Mirroring: the caption's words, then the loader (flip_p 1 against 0:
 * the same crop and colours mirrored, the caption mirrored). */
static void test_flip(const sl_tokenizer *tok) {
    static const char *const cases[][2] = {
        {"a left arrow in the top right of the picture",
         "a right arrow in the top left of the picture"},
        {"Right-facing fist, leftwards", "Left-facing fist, rightwards"},
        {"clockwise and counterclockwise arrows", "counterclockwise and clockwise arrows"},
        {"anticlockwise, Counter-clockwise, anti-clockwise, counter clockwise",
         "clockwise, Clockwise, clockwise, clockwise"},
        {"a bright copyright sign, upright, leftover",
         "a bright copyright sign, upright, leftover"},
        {"LEFT ARROW, rightmost, left-handed, lefts",
         "RIGHT ARROW, leftmost, right-handed, rights"},
        {"", ""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *m = sl_caption_mirror(cases[i][0]);
        CHECK_MSG(m && !strcmp(m, cases[i][1]), "mirror of '%s': '%s'", cases[i][0], m ? m : "");
        free(m);
    }
    char p[700], im[700];
    snprintf(im, sizeof im, "%s/imgs", TMP);
    snprintf(p, sizeof p, "%s/lr.tsv", TMP);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int i = 0; i < 8; i++)
        fprintf(f, "img_%d.jpg\ta %s dog number %d\n", i, i % 2 ? "left" : "right", i);
    fclose(f);
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    CHECK_OK(sl_dataset_add(&ds, p, im, NULL));
    enum { S = 32, CTX = 16, N = 8, PIX = 3 * S * S };
    static float px[2][N * PIX];
    static int32_t tk[2][N * CTX];
    sl_loader_opts lo = augmented_loader(S, CTX, 0);
    for (int k = 0; k < 2; k++) {
        lo.aug.flip_p = k;
        sl_loader *l = NULL;
        CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
        if (l) CHECK_OK(sl_loader_next(l, N, px[k], tk[k]));
        sl_loader_free(l);
    }
    int mirrored = 1, caps = 1;
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    mirrored &= px[0][(size_t)n * PIX + ((size_t)c * S + y) * S + x] ==
                                px[1][(size_t)n * PIX + ((size_t)c * S + y) * S + S - 1 - x];
        int32_t want[CTX];
        char *m = sl_caption_mirror(ds.items[n].caption);
        CHECK_OK(sl_tokenizer_encode(tok, m, CTX, 0, want, NULL));
        free(m);
        caps &= memcmp(want, tk[1] + n * CTX, sizeof want) == 0;
        caps &= memcmp(tk[0] + n * CTX, tk[1] + n * CTX, sizeof want) != 0;
    }
    CHECK_MSG(mirrored, "flip_p 1: the pictures are not the mirrored flip_p 0 ones");
    CHECK_MSG(caps, "flip_p 1: the captions are not the mirrored ones");
    sl_dataset_free(&ds);
}

/* Each photometric augmentation on a known picture. */
static void test_augment(void) {
    enum { S = 16, P = S * S };
    const float mean[3] = {0.4f, 0.5f, 0.6f}, sd[3] = {0.2f, 0.25f, 0.3f};
    static float px[3 * P], ref[3 * P];
    uint64_t r = 1;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < P; i++) /* a diagonal ramp per channel, normalised */
            ref[c * P + i] =
                (((float)((i % S) + (i / S) + 7 * c) / (2 * S + 14)) - mean[c]) / sd[c];
    /* all off: unchanged, no draw from the RNG */
    sl_augment_opts none = {0.9, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(px, ref, sizeof px);
    sl_augment_photometric(&none, &r, px, S, mean, sd);
    CHECK(memcmp(px, ref, sizeof px) == 0 && r == 1);
    /* grayscale: the three channels equal in [0, 1] */
    sl_augment_opts gray = {0.9, 0, 0, 0, 0, 1.0, 0, 0, 0};
    memcpy(px, ref, sizeof px);
    sl_augment_photometric(&gray, &r, px, S, mean, sd);
    double worst = 0;
    for (int i = 0; i < P; i++) {
        double v0 = px[i] * sd[0] + mean[0], v1 = px[P + i] * sd[1] + mean[1],
               v2 = px[2 * P + i] * sd[2] + mean[2];
        worst = fmax(worst, fmax(fabs(v0 - v1), fabs(v0 - v2)));
    }
    CHECK(worst < 1e-5);
    /* posterize: at most 16 levels per channel, each a multiple of 1/(L-1) */
    sl_augment_opts post = {0.9, 0, 0, 0, 1.0, 0, 0, 0, 0};
    memcpy(px, ref, sizeof px);
    sl_augment_photometric(&post, &r, px, S, mean, sd);
    int levels_ok = 1;
    for (int i = 0; i < 3 * P; i++) {
        double v = px[i] * sd[i / P] + mean[i / P];
        int on = 0;
        for (int L = 3; L <= 15; L = 2 * L + 1) on |= fabs(v * L - nearbyint(v * L)) < 1e-4;
        levels_ok &= on;
    }
    CHECK(levels_ok);
    /* blur: smooths (smaller total variation), keeps the mean of a plane
     * away from the border effects within 2% */
    sl_augment_opts blur = {0.9, 0, 2.0, 1.0, 0, 0, 0, 0, 0};
    memcpy(px, ref, sizeof px);
    for (int i = 0; i < P; i++) px[i] = ((i / S + i % S) % 2 ? 1.0f - mean[0] : -mean[0]) / sd[0];
    double tv0 = 0, tv1 = 0, m0 = 0, m1 = 0;
    for (int i = 0; i + 1 < P; i++) tv0 += fabs(px[i + 1] - px[i]), m0 += px[i];
    sl_augment_photometric(&blur, &r, px, S, mean, sd);
    for (int i = 0; i + 1 < P; i++) tv1 += fabs(px[i + 1] - px[i]), m1 += px[i];
    CHECK(tv1 < 0.5 * tv0 && fabs(m1 - m0) < 0.02 * fabs(m0) + 0.02 * P);
    /* colour jitter: values stay in [0, 1] and the picture changes */
    sl_augment_opts jit = {0.9, 0.5, 0, 0, 0, 0, 0, 0, 0};
    memcpy(px, ref, sizeof px);
    sl_augment_photometric(&jit, &r, px, S, mean, sd);
    int in01 = 1;
    for (int i = 0; i < 3 * P; i++) {
        double v = px[i] * sd[i / P] + mean[i / P];
        in01 &= v > -1e-5 && v < 1 + 1e-5;
    }
    CHECK(in01 && memcmp(px, ref, sizeof px) != 0);
    /* random texture filter: a flat colour has no texture to change (within
     * float rounding); on the ramp (values 0.2-0.8, so nothing clips) each
     * channel keeps its mean within 1e-4 and its spread grows by at most
     * 1e-4, and the picture changes; for every largest kernel size from 3
     * to 9 */
    for (int k = 3; k <= 9; k += 2) {
        sl_augment_opts filt = {0.9, 0, 0, 0, 0, 0, 0, 1.0, k};
        for (int i = 0; i < 3 * P; i++) px[i] = (0.3f - mean[i / P]) / sd[i / P];
        sl_augment_photometric(&filt, &r, px, S, mean, sd);
        double flat = 0;
        for (int i = 0; i < 3 * P; i++)
            flat = fmax(flat, fabs(px[i] * sd[i / P] + mean[i / P] - 0.3));
        CHECK_MSG(flat < 1e-5, "filter_k %d: a flat picture changed by %g", k, flat);
        for (int rep = 0; rep < 8; rep++) {
            static float in[3 * P];
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < P; i++)
                    in[c * P + i] =
                        (0.2f + 0.6f * (float)((i % S) * (i / S) + 5 * c) / (S * S + 10) -
                         mean[c]) /
                        sd[c];
            memcpy(px, in, sizeof px);
            sl_augment_photometric(&filt, &r, px, S, mean, sd);
            for (int c = 0; c < 3; c++) {
                double m0 = 0, m1 = 0, v0 = 0, v1 = 0;
                for (int i = 0; i < P; i++) m0 += in[c * P + i], m1 += px[c * P + i];
                m0 /= P, m1 /= P;
                for (int i = 0; i < P; i++)
                    v0 += (in[c * P + i] - m0) * (in[c * P + i] - m0),
                        v1 += (px[c * P + i] - m1) * (px[c * P + i] - m1);
                CHECK_MSG(fabs(m1 - m0) * sd[c] < 1e-4 && sqrt(v1 / P) <= sqrt(v0 / P) + 1e-4,
                          "filter_k %d channel %d: mean %g -> %g, spread %g -> %g", k, c, m0, m1,
                          sqrt(v0 / P), sqrt(v1 / P));
            }
            CHECK(memcmp(px, in, sizeof px) != 0);
        }
    }
}

/* ---- (a) resume --------------------------------------------------------- */

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = sl_read_file(a, 1 << 28, &x, &nx) == SL_OK &&
             sl_read_file(b, 1 << 28, &y, &ny) == SL_OK && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

static void test_resume(const char *preset) {
    char data[700], im[700], tok[700], outA[700], outB[700];
    snprintf(data, sizeof data, "%s/pairs.tsv", TMP);
    snprintf(im, sizeof im, "%s/imgs", TMP);
    snprintf(tok, sizeof tok, "%s/tok", TMP);
    snprintf(outA, sizeof outA, "%s/runA", TMP);
    snprintf(outB, sizeof outB, "%s/runB", TMP);
    sl_train_opts o;
    sl_train_opts_init(&o);
    o.config = preset;
    o.data = data;
    o.images = im;
    o.tokenizer = tok;
    o.steps = 8;
    o.batch = 12; /* 64 samples: epochs straddle batches */
    o.accum = 2;
    o.warmup = 2;
    o.seed = 5;
    o.threads = 2;
    o.save_every = 0;
    o.quiet = 1;
    o.out = outA;
    sl_train_result ra, rb;
    double t0 = sl_now();
    CHECK_OK(sl_train_run(&o, &ra));
    double t1 = sl_now();
    CHECK(ra.step == 8 && isfinite(ra.last_loss));
    o.out = outB;
    o.stop_after = 3;
    o.threads = 1; /* thread count of the decoders does not matter */
    CHECK_OK(sl_train_run(&o, &rb));
    CHECK(rb.step == 3);
    sl_train_opts r;
    sl_train_opts_init(&r);
    r.resume = outB; /* via `latest` */
    r.data = data;
    r.images = im;
    r.tokenizer = tok;
    r.quiet = 1;
    r.threads = 3;
    CHECK_OK(sl_train_run(&r, &rb));
    CHECK(rb.step == 8);
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/step-8/model.safetensors", outA);
    snprintf(b, sizeof b, "%s/step-8/model.safetensors", outB);
    int same = same_file(a, b);
    CHECK_MSG(same, "resumed parameters differ from the straight run's");
    snprintf(a, sizeof a, "%s/step-8/trainer_state.safetensors", outA);
    snprintf(b, sizeof b, "%s/step-8/trainer_state.safetensors", outB);
    CHECK_MSG(same_file(a, b), "resumed trainer state differs");
    printf("resume: 8 steps straight vs 3 + resume + 5: parameters %s (%.2f s per run)\n",
           same ? "bit-identical" : "DIFFER", t1 - t0);
    CHECK(ra.last_loss == rb.last_loss);
    /* checkpoint files */
    snprintf(a, sizeof a, "%s/step-3/vocab.json", outB);
    struct stat sb;
    CHECK(stat(a, &sb) == 0);
    snprintf(a, sizeof a, "%s/latest", outB);
    char *lt = NULL;
    size_t ln = 0;
    CHECK_OK(sl_read_file(a, 100, &lt, &ln));
    CHECK(lt && !strcmp(lt, "step-8\n"));
    free(lt);
    snprintf(a, sizeof a, "%s/train_log.jsonl", outB);
    CHECK_OK(sl_read_file(a, 1 << 20, &lt, &ln));
    int lines = 0;
    for (size_t i = 0; lt && i < ln; i++) lines += lt[i] == '\n';
    CHECK(lines == 8 && strstr(lt, "\"grad_norm\""));
    free(lt);
    /* the saved model opens for sl_train_model_load (and so sl_encoder) */
    snprintf(a, sizeof a, "%s/step-8", outA);
    sl_train_model *m = NULL;
    CHECK_OK(sl_train_model_load(a, 2, &m));
    sl_train_model_free(m);
}

/* ---- (e) overfit -------------------------------------------------------- */

static void test_overfit(const char *preset, const sl_tokenizer *tok) {
    char data[700], im[700];
    snprintf(data, sizeof data, "%s/pairs.tsv", TMP);
    snprintf(im, sizeof im, "%s/imgs", TMP);
    sl_clip_config cfg;
    clip_config_defaults(&cfg);
    CHECK_OK(clip_config_read_hf(preset, &cfg));
    cfg.vocab_size = sl_tokenizer_vocab_size(tok);
    cfg.eos_token_id = sl_tokenizer_eot(tok);
    for (int c = 0; c < 3; c++) cfg.image_mean[c] = 0.5f, cfg.image_std[c] = 0.25f;
    const int B = 64;
    sl_train_model *m = NULL;
    CHECK_OK(sl_train_model_create(&cfg, B, 11, &m));
    if (!m) return;
    sl_train_dataset ds;
    memset(&ds, 0, sizeof ds);
    CHECK_OK(sl_dataset_add_tsv(&ds, data, im));
    sl_loader_opts lo = {cfg.image_size,
                         {0.5f, 0.5f, 0.5f},
                         {0.25f, 0.25f, 0.25f},
                         cfg.context_length,
                         0,
                         {0, 0, 0, 0, 0, 0, 0, 0, 0},
                         0,
                         1,
                         2,
                         64,
                         0,
                         0};
    sl_loader *l = NULL;
    CHECK_OK(sl_loader_create(&ds, tok, &lo, 0, &l));
    size_t S = (size_t)cfg.image_size;
    float *px = malloc(sizeof(float) * B * 3 * S * S), *sim = malloc(sizeof(float) * B * B);
    int32_t *ids = malloc(sizeof(int32_t) * B * (size_t)cfg.context_length);
    size_t ti[64];
    for (int i = 0; i < 64; i++) ti[i] = (size_t)i;
    if (l) CHECK_OK(sl_loader_next(l, B, px, ids));
    sl_adamw opt;
    CHECK_OK(sl_adamw_init(&opt, NULL, m->num_params));
    const int max_steps = 400;
    int reached = -1;
    double t0 = sl_now();
    float loss = 0;
    for (int s = 0; s < max_steps; s++) {
        CHECK_OK(sl_train_model_forward(m, px, ids, B, &loss));
        const float *ie, *te;
        sl_train_model_embeddings(m, &ie, &te);
        sl_retrieval_metrics mt;
        CHECK_OK(sl_retrieval_similarity(ie, B, te, B, (size_t)cfg.embed_dim, sim));
        CHECK_OK(sl_retrieval_evaluate(sim, B, B, B, ti, &mt));
        if (mt.i2t.r1 == 100.0 && mt.t2i.r1 == 100.0) {
            reached = s;
            break;
        }
        sl_train_model_zero_grad(m);
        CHECK_OK(sl_train_model_backward(m));
        CHECK_OK(sl_adamw_step(&opt, m, sl_lr_cosine(2e-3, 10, max_steps, s), 1.0, NULL));
    }
    double dt = sl_now() - t0;
    printf("overfit: 64 pairs reach R@1 = 100%% both ways after %d steps (%.2f s, loss %.4f)\n",
           reached, dt, (double)loss);
    CHECK_MSG(reached >= 0, "R@1 = 100%% not reached in %d steps", max_steps);
    free(px);
    free(sim);
    free(ids);
    sl_adamw_free(&opt);
    sl_loader_free(l);
    sl_dataset_free(&ds);
    sl_train_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_train TINY_PRESET_JSON\n");
        return 2;
    }
    sl_log_set_level(SL_LOG_ERROR);
    TMP = sl_test_tmpdir();
    test_adamw();
    test_augment();
    make_fixtures(64);
    char tp[700];
    snprintf(tp, sizeof tp, "%s/tok", TMP);
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open_dir(tp, &tok));
    if (tok) {
        test_tar(tok);
        test_tsv_karpathy(tok);
        test_shard(tok);
        test_flip(tok);
        test_resume(argv[1]);
        test_overfit(argv[1], tok);
    }
    sl_tokenizer_free(tok);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", TMP);
    if (!sl_test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", TMP);
    return sl_test_finish("test_train");
}
