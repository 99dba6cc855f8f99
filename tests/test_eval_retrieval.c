/*
 * tests/test_eval_retrieval.c - the retrieval metrics on hand-computed
 * cases (ties, several captions per image, an image without captions, a 3x6
 * matrix ranked by hand, medr/meanr, RSUM, 1K-style fold means), the ranks
 * against a brute-force sort on random matrices with many ties, and the
 * Karpathy reader on generated fixtures (malformed files included).
 *
 * `test_eval_retrieval --cli ARGS...` runs `sightline eval retrieval ARGS...`
 * in-process (the integration test drives it when the sightline command has
 * no `eval` yet).
 */
#include "cli/commands.h"
#include "sightline/eval.h"
#include "testutil.h"

#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

/* The 3x6 matrix ranked by hand; captions {0,1} of image 0, {2,3} of image 1,
 * {4,5} of image 2.
 *   i2t: image 0's best caption is text 0 (0.9), beaten by text 5 (0.95):
 *        rank 2; image 1's best is text 3 (0.7): rank 1; image 2's is text 4
 *        (0.6): rank 1.
 *   t2i: text 0 [0.9 .5 .3] -> 1; text 1 [.1 .6 .2] -> 3; text 2 [.8 .4 .1]
 *        -> 2; text 3 [.3 .7 0] -> 1; text 4 [.2 .1 .6] -> 1; text 5
 *        [.95 .2 .5] -> 2. */
static void test_hand_3x6(void) {
    const float sim[3 * 6] = {0.9f, 0.1f, 0.8f, 0.3f, 0.2f, 0.95f, /* image 0 */
                              0.5f, 0.6f, 0.4f, 0.7f, 0.1f, 0.2f,  /* image 1 */
                              0.3f, 0.2f, 0.1f, 0.0f, 0.6f, 0.5f}; /* image 2 */
    const size_t ti[6] = {0, 0, 1, 1, 2, 2};
    int64_t ri[3], rt[6];
    CHECK_OK(sl_retrieval_ranks(sim, 3, 6, 6, ti, ri, rt));
    const int64_t want_i[3] = {2, 1, 1}, want_t[6] = {1, 3, 2, 1, 1, 2};
    for (int i = 0; i < 3; i++) CHECK_MSG(ri[i] == want_i[i], "i2t[%d] %lld", i, (long long)ri[i]);
    for (int j = 0; j < 6; j++) CHECK_MSG(rt[j] == want_t[j], "t2i[%d] %lld", j, (long long)rt[j]);

    sl_retrieval_metrics m;
    CHECK_OK(sl_retrieval_evaluate(sim, 3, 6, 6, ti, &m));
    CHECK_NEAR(m.i2t.r1, 200.0 / 3, 1e-12);
    CHECK(m.i2t.r5 == 100 && m.i2t.r10 == 100);
    CHECK(m.i2t.medr == 1);                  /* sorted 1 1 2 */
    CHECK_NEAR(m.i2t.meanr, 4.0 / 3, 1e-12); /* (2+1+1)/3 */
    CHECK(m.t2i.r1 == 50 && m.t2i.r5 == 100 && m.t2i.r10 == 100);
    CHECK(m.t2i.medr == 1); /* sorted 1 1 1 2 2 3: floor((1+2)/2) */
    CHECK_NEAR(m.t2i.meanr, 10.0 / 6, 1e-12);
    CHECK_NEAR(m.rsum, 200.0 / 3 + 100 + 100 + 50 + 100 + 100, 1e-9);
    CHECK(m.i2t.queries == 3 && m.t2i.queries == 6 && m.n_images_no_caption == 0);

    /* the same matrix stored with a wider row stride (ld = 8) */
    float wide[3 * 8];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 8; j++) wide[i * 8 + j] = j < 6 ? sim[i * 6 + j] : 99.0f;
    CHECK_OK(sl_retrieval_ranks(wide, 3, 6, 8, ti, ri, rt));
    for (int i = 0; i < 3; i++) CHECK(ri[i] == want_i[i]);
    for (int j = 0; j < 6; j++) CHECK(rt[j] == want_t[j]);
}

/* Ties are broken by id: an equal score at a lower index ranks ahead of the
 * ground truth, at a higher index behind it. All scores 0.5; text_image
 * {1, 0, 1}.
 *   i2t: image 0 (caption 1) is beaten by text 0 only: rank 2; image 1's
 *        best caption among the equal 0 and 2 is text 0: rank 1.
 *   t2i: text 0 (image 1) is beaten by image 0: 2; text 1 (image 0): 1;
 *        text 2 (image 1): 2. */
static void test_ties(void) {
    const float sim[2 * 3] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    const size_t ti[3] = {1, 0, 1};
    int64_t ri[2], rt[5];
    CHECK_OK(sl_retrieval_ranks(sim, 2, 3, 3, ti, ri, rt));
    CHECK(ri[0] == 2 && ri[1] == 1);
    CHECK(rt[0] == 2 && rt[1] == 1 && rt[2] == 2);

    /* several captions per image: the other captions never count against
     * the image; the best one decides. Image 0 has captions 1, 2, 3 scoring
     * 0.2, 0.7, 0.7 and distractor text 0 scores 0.7: the best caption is
     * text 2 (lowest index among the equal), beaten by text 0 only. */
    const float s3[2 * 5] = {0.7f, 0.2f, 0.7f, 0.7f, 0.1f, /* image 0 */
                             0.0f, 0.0f, 0.0f, 0.0f, 0.9f};
    const size_t t3[5] = {1, 0, 0, 0, 1};
    CHECK_OK(sl_retrieval_ranks(s3, 2, 5, 5, t3, ri, rt));
    CHECK_MSG(ri[0] == 2, "%lld", (long long)ri[0]);
    CHECK(ri[1] == 1); /* image 1: text 4 (0.9) is first */
    CHECK(rt[0] == 2); /* text 0 -> image 1 scores 0.0 < 0.7 */
    CHECK(rt[1] == 1 && rt[2] == 1 && rt[3] == 1 && rt[4] == 1);
    /* a single image owning every text: rank 1 whatever the scores */
    const size_t t2[5] = {0, 0, 0, 0, 0};
    CHECK_OK(sl_retrieval_ranks(s3, 1, 5, 5, t2, ri, rt));
    CHECK(ri[0] == 1 && rt[0] == 1 && rt[4] == 1);
}

/* An image without captions is no image->text query (rank 0, left out of
 * the i2t figures) but stays in the text->image gallery, where it outranks
 * the right images here. Texts {0, 0, 2}; image 1 scores 0.9 everywhere. */
static void test_no_caption(void) {
    const float sim[3 * 3] = {0.5f, 0.4f, 0.1f, 0.9f, 0.9f, 0.9f, 0.1f, 0.2f, 0.3f};
    const size_t ti[3] = {0, 0, 2};
    int64_t ri[3], rt[3];
    CHECK_OK(sl_retrieval_ranks(sim, 3, 3, 3, ti, ri, rt));
    CHECK(ri[0] == 1 && ri[1] == 0 && ri[2] == 1);
    CHECK(rt[0] == 2 && rt[1] == 2 && rt[2] == 2);
    sl_retrieval_metrics m;
    CHECK_OK(sl_retrieval_evaluate(sim, 3, 3, 3, ti, &m));
    CHECK(m.i2t.queries == 2 && m.n_images_no_caption == 1 && m.n_images == 3);
    CHECK(m.i2t.r1 == 100 && m.i2t.medr == 1 && m.i2t.meanr == 1);
    CHECK(m.t2i.queries == 3 && m.t2i.r1 == 0 && m.t2i.r5 == 100 && m.t2i.medr == 2);
    CHECK(m.rsum == 100 + 100 + 100 + 0 + 100 + 100);

    /* NaN: never beats anything; a NaN ground truth ranks last */
    const float nan = NAN;
    const float sn[2 * 3] = {nan, 0.5f, 0.1f, 0.3f, 0.2f, nan};
    const size_t tn[3] = {0, 1, 1};
    CHECK_OK(sl_retrieval_ranks(sn, 2, 3, 3, tn, ri, rt));
    CHECK(ri[0] == 3); /* image 0: its only caption scores NaN: behind texts 1 and 2 */
    CHECK(ri[1] == 2); /* image 1: caption 1 (0.2) behind text 0 (0.3), not NaN text 2 */
    CHECK(rt[0] == 2 && rt[2] == 2);
    CHECK(rt[1] == 2); /* text 1: image 0 scores 0.5 > 0.2 */

    /* errors: a text describing an image out of range; ld < n_texts */
    const size_t bad[3] = {0, 3, 1};
    CHECK_ERR(sl_retrieval_ranks(sim, 3, 3, 3, bad, ri, rt), SL_ERR_INVALID, "text 1");
    CHECK_ERR(sl_retrieval_ranks(sim, 3, 3, 2, ti, ri, rt), SL_ERR_INVALID, "ld");
}

/* medr, meanr and recalls of given ranks (zeros are "no query"). */
static void test_summarize(void) {
    const int64_t r[9] = {3, 1, 4, 1, 0, 5, 9, 2, 6}; /* sorted 1 1 2 3 4 5 6 9 */
    sl_recall_stats s;
    CHECK_OK(sl_recall_summarize(r, 9, &s));
    CHECK(s.queries == 8);
    CHECK(s.medr == 3);         /* floor((3 + 4) / 2) */
    CHECK(s.meanr == 31.0 / 8); /* 3.875 exactly */
    CHECK(s.r1 == 25 && s.r5 == 75 && s.r10 == 100);
    const int64_t o[3] = {7, 12, 2};
    CHECK_OK(sl_recall_summarize(o, 3, &s));
    CHECK(s.medr == 7 && s.meanr == 7);
    CHECK(s.r1 == 0 && s.r5 == 100.0 / 3 && s.r10 == 200.0 / 3);
    const int64_t z[2] = {0, 0};
    CHECK_OK(sl_recall_summarize(z, 2, &s));
    CHECK(s.queries == 0 && s.r1 == 0 && s.medr == 0);
}

/* Brute-force ranks: sort the row by (score desc, index asc) and find the
 * position of the ground truth. */
static const float *g_row;
static size_t g_stride;
static int cmp_desc(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    float sx = g_row[x * g_stride], sy = g_row[y * g_stride];
    if (sx != sy) return sx > sy ? -1 : 1;
    return (x > y) - (x < y);
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_brute_force(size_t ni, size_t nt, size_t ld, int levels) {
    float *sim = malloc(ni * ld * sizeof *sim);
    size_t *ti = malloc(nt * sizeof *ti), *ord = malloc((ni > nt ? ni : nt) * sizeof *ord);
    int64_t *ri = malloc(ni * sizeof *ri), *rt = malloc(nt * sizeof *rt);
    for (size_t k = 0; k < ni * ld; k++) sim[k] = (float)(rng() % (uint64_t)levels) / levels;
    /* images 0, 3, 6, ... have no captions when there are enough texts */
    for (size_t j = 0; j < nt; j++) {
        size_t im = rng() % ni;
        if (im % 3 == 0 && ni > 2) im = (im + 1) % ni;
        ti[j] = im;
    }
    CHECK_OK(sl_retrieval_ranks(sim, ni, nt, ld, ti, ri, rt));
    int bad = 0;
    for (size_t i = 0; i < ni; i++) { /* i2t: best rank over the captions */
        g_row = sim + i * ld;
        g_stride = 1;
        for (size_t j = 0; j < nt; j++) ord[j] = j;
        qsort(ord, nt, sizeof *ord, cmp_desc);
        int64_t want = 0;
        for (size_t p = 0; p < nt && !want; p++)
            if (ti[ord[p]] == i) want = (int64_t)p + 1;
        bad += ri[i] != want;
    }
    for (size_t j = 0; j < nt; j++) { /* t2i */
        g_row = sim + j;
        g_stride = ld;
        for (size_t i = 0; i < ni; i++) ord[i] = i;
        qsort(ord, ni, sizeof *ord, cmp_desc);
        int64_t want = 0;
        for (size_t p = 0; p < ni && !want; p++)
            if (ord[p] == ti[j]) want = (int64_t)p + 1;
        bad += rt[j] != want;
    }
    CHECK_MSG(bad == 0, "%d ranks differ from the brute force (%zux%zu, ld %zu)", bad, ni, nt, ld);
    free(sim);
    free(ti);
    free(ord);
    free(ri);
    free(rt);
}

/* 1K-style fold means on a synthetic matrix. 4 images, one caption each
 * (text j of image j); cross-fold scores (2.0) beat every true pair (1.0).
 *   whole: ranks 3 3 4 3 both ways (image 2 and text 3 also lose to the
 *   1.5) -> R@1 0, R@5 100, medr 3, meanr 3.25, RSUM 400.
 *   fold 0 (images 0-1, texts 0-1): [[1 0] [0 1]]: all rank 1, RSUM 600.
 *   fold 1 (images 2-3, texts 2-3): [[1 1.5] [0 1]]: image 2 rank 2 (text 3
 *   scores 1.5), text 3 rank 2 (image 2 scores 1.5); R@1 50 both ways,
 *   medr floor(1.5) = 1, meanr 1.5, RSUM 500.
 *   mean: R@1 75, medr 1, meanr 1.25, RSUM 550. */
static void test_folds(void) {
    const float sim[4 * 4] = {1, 0, 2, 2, 0, 1, 2, 2, 2, 2, 1, 1.5f, 2, 2, 0, 1};
    const size_t ti[4] = {0, 1, 2, 3};
    sl_retrieval_metrics whole, f;
    CHECK_OK(sl_retrieval_evaluate(sim, 4, 4, 4, ti, &whole));
    CHECK(whole.i2t.r1 == 0 && whole.t2i.r1 == 0 && whole.i2t.r5 == 100);
    CHECK(whole.i2t.medr == 3 && whole.t2i.medr == 3 && whole.rsum == 400);
    CHECK(whole.i2t.meanr == 3.25 && whole.t2i.meanr == 3.25);
    CHECK_OK(sl_retrieval_evaluate_folds(sim, 4, 4, 4, ti, 2, &f));
    CHECK(f.n_folds == 2 && f.n_images == 4 && f.n_texts == 4);
    CHECK(f.i2t.r1 == 75 && f.t2i.r1 == 75 && f.i2t.r5 == 100 && f.t2i.r10 == 100);
    CHECK(f.i2t.medr == 1 && f.t2i.medr == 1);
    CHECK(f.i2t.meanr == 1.25 && f.t2i.meanr == 1.25);
    CHECK(f.rsum == 550);
    /* one fold of everything equals the whole evaluation */
    CHECK_OK(sl_retrieval_evaluate_folds(sim, 4, 4, 4, ti, 4, &f));
    CHECK(f.n_folds == 1 && f.rsum == whole.rsum && f.i2t.meanr == whole.i2t.meanr);

    /* the same texts in another column order (the folds' texts are then not
     * contiguous and get gathered): same figures */
    const size_t perm[4] = {2, 0, 3, 1}; /* column c holds text perm[c] */
    float ps[4 * 4];
    size_t pti[4];
    for (int c = 0; c < 4; c++) {
        pti[c] = ti[perm[c]];
        for (int i = 0; i < 4; i++) ps[i * 4 + c] = sim[i * 4 + perm[c]];
    }
    CHECK_OK(sl_retrieval_evaluate_folds(ps, 4, 4, 4, pti, 2, &f));
    CHECK(f.i2t.r1 == 75 && f.t2i.r1 == 75 && f.i2t.meanr == 1.25 && f.rsum == 550);

    /* folds must divide the images */
    CHECK_ERR(sl_retrieval_evaluate_folds(sim, 4, 4, 4, ti, 3, &f), SL_ERR_INVALID, "folds");
    CHECK_ERR(sl_retrieval_evaluate_folds(sim, 4, 4, 4, ti, 0, &f), SL_ERR_INVALID, "folds");
}

/* The similarity matrix is one sgemm: sim = img . txt^T. */
static void test_similarity(void) {
    const float img[2 * 2] = {1, 0, 0.5f, 0.5f};
    const float txt[3 * 2] = {1, 2, 3, 4, -1, 1};
    float sim[6];
    CHECK_OK(sl_retrieval_similarity(img, 2, txt, 3, 2, sim));
    const float want[6] = {1, 3, -1, 1.5f, 3.5f, 0};
    for (int k = 0; k < 6; k++) CHECK_NEAR(sim[k], want[k], 1e-6);
}

/* ------------------------------------------------------------------------ */
/* Karpathy reader                                                          */
/* ------------------------------------------------------------------------ */

static char g_dir[512];

static const char *write_fixture(const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

#define S5 "{\"raw\":\"a\"},{\"raw\":\"b\"},{\"raw\":\"c\"},{\"raw\":\"d\"},{\"raw\":\"e\"}"

static void test_karpathy_read(void) {
    const char *p = write_fixture(
        "flickr.json",
        "{\"dataset\": \"flickr30k\", \"images\": [\n"
        " {\"filename\": \"1.jpg\", \"imgid\": 0, \"split\": \"test\", \"sentences\": [" S5 "]},\n"
        " {\"filename\": \"2.jpg\", \"imgid\": 1, \"split\": \"train\", \"sentences\": [" S5 "]},\n"
        " {\"filename\": \"3.jpg\", \"imgid\": 2, \"split\": \"test\", \"sentences\": [" S5
        ",{\"raw\":\"f\"},{\"raw\":\"g\"}]},\n"
        " {\"filename\": \"4.jpg\", \"split\": \"restval\", \"sentences\": [" S5 "]},\n"
        " {\"filename\": \"5.jpg\", \"split\": \"test\", \"sentences\": [{\"raw\": \"x\"},\n"
        "   {\"tokens\": [\"two\", \"dogs\"]}, {\"imgid\": 4}]},\n"
        " {\"filename\": \"6.jpg\", \"split\": \"test\"},\n"
        " {\"filename\": \"7.jpg\", \"sentences\": [" S5 "]},\n"
        " {\"filename\": \"8.jpg\", \"split\": \"val\", \"sentences\": []}\n"
        "]}\n");
    sl_karpathy k;
    CHECK_OK(sl_karpathy_read(p, NULL, &k)); /* test split, 5 captions */
    CHECK(!strcmp(k.dataset, "flickr30k"));
    CHECK(k.n_file_images == 8);
    CHECK(k.n_images == 4); /* 1, 3, 5, 6: not train, restval, val or unsplit */
    CHECK(!strcmp(k.images[0].filename, "1.jpg") && !strcmp(k.images[1].filename, "3.jpg"));
    CHECK(!strcmp(k.images[2].filename, "5.jpg") && !strcmp(k.images[3].filename, "6.jpg"));
    CHECK(k.images[0].imgid == 0 && k.images[2].imgid == -1 && k.images[0].cocoid == -1);
    CHECK(k.images[0].filepath == NULL);
    /* 5 + 5 (of 7) + 2 (raw, tokens; one sentence without text) + 0 */
    CHECK_MSG(k.n_captions == 12, "%zu", k.n_captions);
    CHECK(k.images[1].first_caption == 5 && k.images[1].n_captions == 5 &&
          k.images[1].n_sentences == 7);
    CHECK(k.images[2].n_captions == 2 && k.images[3].n_captions == 0);
    CHECK(!strcmp(k.captions[9], "e") && k.caption_image[9] == 1);
    CHECK(!strcmp(k.captions[10], "x") && !strcmp(k.captions[11], "two dogs"));
    CHECK(k.caption_image[11] == 2);
    CHECK(k.n_more == 1 && k.n_dropped == 2);
    CHECK(k.n_fewer == 1 && k.n_no_captions == 1);
    CHECK(k.n_from_tokens == 1 && k.n_no_text == 1 && k.n_no_split == 1);
    sl_karpathy_free(&k);
    CHECK(k.images == NULL && k.n_images == 0);

    /* restval is a split of its own; splits can be joined */
    sl_karpathy_opts o = {.split = "restval"};
    CHECK_OK(sl_karpathy_read(p, &o, &k));
    CHECK(k.n_images == 1 && !strcmp(k.images[0].filename, "4.jpg"));
    sl_karpathy_free(&k);
    o.split = "train,restval";
    CHECK_OK(sl_karpathy_read(p, &o, &k));
    CHECK(k.n_images == 2 && k.n_captions == 10);
    sl_karpathy_free(&k);
    o.split = "val";
    CHECK_OK(sl_karpathy_read(p, &o, &k));
    CHECK(k.n_images == 1 && k.n_no_captions == 1 && k.n_captions == 0);
    sl_karpathy_free(&k);
    o.split = "tes"; /* a prefix is not a split */
    CHECK_OK(sl_karpathy_read(p, &o, &k));
    CHECK(k.n_images == 0);
    sl_karpathy_free(&k);
    /* max_captions */
    o = (sl_karpathy_opts){.split = "test", .max_captions = 2};
    CHECK_OK(sl_karpathy_read(p, &o, &k));
    CHECK(k.n_captions == 2 + 2 + 2 && k.n_more == 2 && k.n_dropped == 3 + 5 && k.n_fewer == 0);
    sl_karpathy_free(&k);
}

static void test_karpathy_coco(void) {
    const char *p = write_fixture(
        "coco.json",
        "{\"dataset\": \"coco\", \"images\": [\n"
        " {\"filepath\": \"val2014\", \"filename\": \"COCO_val2014_000000000042.jpg\", "
        "\"imgid\": 0, \"cocoid\": 42, \"split\": \"test\", \"sentences\": [" S5 "]},\n"
        " {\"filepath\": \"train2014\", \"filename\": \"COCO_train2014_000000000007.jpg\", "
        "\"cocoid\": 7, \"split\": \"restval\", \"sentences\": [" S5 "]}\n"
        "]}\n");
    sl_karpathy k;
    CHECK_OK(sl_karpathy_read(p, NULL, &k));
    CHECK(k.n_images == 1 && k.images[0].cocoid == 42 && !strcmp(k.dataset, "coco"));
    CHECK(k.images[0].filepath && !strcmp(k.images[0].filepath, "val2014"));
    char *ip = sl_karpathy_image_path("/data/coco", &k.images[0]);
    CHECK(ip && !strcmp(ip, "/data/coco/val2014/COCO_val2014_000000000042.jpg"));
    free(ip);
    ip = sl_karpathy_image_path("/data/coco/", &k.images[0]);
    CHECK(ip && !strcmp(ip, "/data/coco/val2014/COCO_val2014_000000000042.jpg"));
    free(ip);
    ip = sl_karpathy_image_path("", &k.images[0]);
    CHECK(ip && !strcmp(ip, "val2014/COCO_val2014_000000000042.jpg"));
    free(ip);
    sl_karpathy_image flickr = {.filename = "1000092795.jpg"};
    ip = sl_karpathy_image_path("imgs", &flickr);
    CHECK(ip && !strcmp(ip, "imgs/1000092795.jpg"));
    free(ip);
    sl_karpathy_free(&k);
}

/* A malformed file is SL_ERR_FORMAT naming the file (and the line, for bad
 * JSON, or the image); *out is left zeroed. */
static void check_bad(const char *name, const char *text, sl_status want, const char *needle) {
    const char *p = write_fixture(name, text);
    char path[1024];
    snprintf(path, sizeof path, "%s", p);
    sl_karpathy k;
    memset(&k, 0xab, sizeof k);
    sl_status st = sl_karpathy_read(path, NULL, &k);
    CHECK_MSG(st == want, "%s: status %d, wanted %d (%s)", name, (int)st, (int)want,
              sl_last_error());
    CHECK_MSG(strstr(sl_last_error(), needle), "%s: message '%s' lacks '%s'", name, sl_last_error(),
              needle);
    CHECK_MSG(strstr(sl_last_error(), path), "%s: message '%s' lacks the path", name,
              sl_last_error());
    CHECK(k.images == NULL && k.captions == NULL && k.n_images == 0);
}

static void test_karpathy_malformed(void) {
    check_bad("syntax.json", "{\"images\": [\n {\"filename\": \"1.jpg\",\n  \"split\": test}\n]}\n",
              SL_ERR_FORMAT, "line 3");
    check_bad("empty.json", "", SL_ERR_FORMAT, "line");
    check_bad("noimages.json", "{\"dataset\": \"coco\"}", SL_ERR_FORMAT, "no \"images\" array");
    check_bad("imagesobj.json", "{\"images\": {}}", SL_ERR_FORMAT, "\"images\" is not an array");
    check_bad("toplist.json", "[1, 2]", SL_ERR_FORMAT, "top level is not an object");
    check_bad("imgnum.json", "{\"images\": [3]}", SL_ERR_FORMAT, "image 0 is not an object");
    check_bad("nofile.json", "{\"images\": [{\"split\": \"test\"}]}", SL_ERR_FORMAT,
              "image 0: \"filename\" is missing");
    check_bad("fileint.json", "{\"images\": [{\"filename\": 5}]}", SL_ERR_FORMAT,
              "\"filename\" is not a string");
    check_bad("dotdot.json", "{\"images\": [{\"filename\": \"../etc/passwd\"}]}", SL_ERR_FORMAT,
              "not a relative path");
    check_bad("abs.json", "{\"images\": [{\"filename\": \"/etc/passwd\"}]}", SL_ERR_FORMAT,
              "not a relative path");
    check_bad("fpint.json", "{\"images\": [{\"filename\": \"a.jpg\", \"filepath\": 2014}]}",
              SL_ERR_FORMAT, "\"filepath\"");
    check_bad("splitint.json", "{\"images\": [{\"filename\": \"a.jpg\", \"split\": 1}]}",
              SL_ERR_FORMAT, "image 0 (a.jpg): \"split\" is not a string");
    check_bad("sentobj.json",
              "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"test\", \"sentences\": {}}]}",
              SL_ERR_FORMAT, "\"sentences\" is not an array");
    check_bad("sentstr.json",
              "{\"images\": [{\"filename\": \"a.jpg\", \"sentences\": [\"a dog\"]}]}",
              SL_ERR_FORMAT, "sentence 0 is not an object");
    check_bad("rawint.json",
              "{\"images\": [{\"filename\": \"b.jpg\", \"sentences\": [{\"raw\": 1}]}]}",
              SL_ERR_FORMAT, "image 0 (b.jpg): sentence 0: \"raw\" is not a string");
    check_bad("dup.json", "{\"images\": [], \"images\": []}", SL_ERR_FORMAT, "duplicate");
    check_bad("dsint.json", "{\"dataset\": 1, \"images\": []}", SL_ERR_FORMAT, "\"dataset\"");
    /* a missing file names itself */
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/absent.json", g_dir);
    sl_karpathy k;
    CHECK(sl_karpathy_read(missing, NULL, &k) != SL_OK);
    CHECK(strstr(sl_last_error(), "absent.json") != NULL);
    sl_karpathy_opts o = {.max_captions = 1001};
    CHECK_ERR(sl_karpathy_read(missing, &o, &k), SL_ERR_INVALID, "max_captions");
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--cli")) {
        argv[1] = "retrieval";
        return sl_cmd_eval_retrieval(argc - 1, argv + 1);
    }
    snprintf(g_dir, sizeof g_dir, "%s", sl_test_tmpdir());
    test_hand_3x6();
    test_ties();
    test_no_caption();
    test_summarize();
    test_brute_force(7, 19, 19, 4);
    test_brute_force(37, 123, 130, 8);
    test_brute_force(40, 1100, 1100, 16); /* several t2i column blocks */
    test_brute_force(3, 2000, 2001, 3);
    test_folds();
    test_similarity();
    test_karpathy_read();
    test_karpathy_coco();
    test_karpathy_malformed();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return sl_test_finish("test_eval_retrieval");
}
