/*
 * tests/test_ground.c - box IoU and union on hand-computed cases, and
 * phrase localisation from similarity maps: the component around the peak,
 * the relative threshold, mapping through crop maps (center crop, squash),
 * boxes touching the border.
 */
#include "sightline/grounding.h"
#include "testutil.h"

static void test_iou(void) {
    sl_box a = {0, 0, 10, 10}, b = {5, 5, 15, 15};
    CHECK_NEAR(sl_box_iou(a, b), 25.0 / 175.0, 1e-9);
    CHECK_NEAR(sl_box_iou(a, a), 1.0, 1e-12);
    sl_box c = {10, 0, 20, 10}; /* touching edges: no overlap */
    CHECK_NEAR(sl_box_iou(a, c), 0.0, 0);
    sl_box inner = {2, 2, 4, 4};
    CHECK_NEAR(sl_box_iou(a, inner), 4.0 / 100.0, 1e-12);
    sl_box empty = {3, 3, 3, 8};
    CHECK_NEAR(sl_box_iou(a, empty), 0.0, 0);
    sl_box u = sl_box_union(a, b);
    CHECK(u.x0 == 0 && u.y0 == 0 && u.x1 == 15 && u.y1 == 15);
    /* IoU 0.5 exactly: the threshold case */
    sl_box h1 = {0, 0, 2, 1}, h2 = {0, 0, 1, 1};
    CHECK_NEAR(sl_box_iou(h1, h2), 0.5, 1e-12);
}

static void test_ground(void) {
    /* 4x4 grid, patch 16 on a 64x64 input, identity map */
    sl_crop_map id = {1, 1, 0, 0};
    float sim[16] = {0.1f, 0.1f, 0.1f, 0.1f,  /* row 0 */
                     0.1f, 0.9f, 0.8f, 0.1f,  /* row 1 */
                     0.1f, 0.7f, 0.1f, 0.1f,  /* row 2 */
                     0.1f, 0.1f, 0.1f, 0.6f}; /* row 3: 0.6 is kept but not connected */
    sl_box b;
    float score;
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &id, 64,
                           64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 48 && b.y1 == 48);
    CHECK_NEAR(score, 0.9, 1e-6);
    /* a high threshold keeps the peak alone */
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.95f, SL_GROUND_FROM_MIN, 1}, &id, 64,
                           64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 32 && b.y1 == 32);
    /* rel 0 keeps everything */
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.0f, SL_GROUND_FROM_MIN, 1}, &id, 64,
                           64, &b, &score));
    CHECK(b.x0 == 0 && b.y0 == 0 && b.x1 == 64 && b.y1 == 64);

    /* the base: mean 4.2 / 16 = 0.2625; at rel 0.7 the threshold from the
     * minimum is 0.66 (0.7 kept), from the mean 0.70875 (0.7 dropped) */
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.7f, SL_GROUND_FROM_MIN, 1}, &id, 64,
                           64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 48 && b.y1 == 48);
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.7f, SL_GROUND_FROM_MEAN, 1}, &id, 64,
                           64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 48 && b.y1 == 32);
    /* NULL: the defaults */
    sl_box bd;
    sl_ground_opts def = sl_ground_opts_default();
    CHECK(def.rel == SL_GROUND_REL_DEFAULT && def.from == SL_GROUND_FROM_MEAN &&
          def.upsample == SL_GROUND_UPSAMPLE_DEFAULT);
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, NULL, &id, 64, 64, &b, &score));
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, &def, &id, 64, 64, &bd, &score));
    CHECK(b.x0 == bd.x0 && b.y0 == bd.y0 && b.x1 == bd.x1 && b.y1 == bd.y1);
    CHECK_ERR(sl_ground_box(sim, 4, 4, 16, &(sl_ground_opts){0.5f, (sl_ground_from)7, 1}, &id, 64,
                            64, &b, &score),
              SL_ERR_INVALID, "unknown threshold base 7");

    /* through a CLIP center crop of a 640x480 picture at 224: resized 298x224,
     * crop corner x = 37, scale 480/224 */
    sl_preprocess pp = sl_preprocess_clip(224);
    sl_crop_map m;
    CHECK_OK(sl_image_crop_map(640, 480, &pp, &m));
    CHECK_NEAR(m.scale_x, 640.0 / 298, 1e-5);
    CHECK_NEAR(m.scale_y, 480.0 / 224, 1e-5);
    CHECK_NEAR(m.offset_x, 37 * 640.0 / 298, 1e-3);
    CHECK_NEAR(m.offset_y, 0, 0);
    float g[49];
    for (int i = 0; i < 49; i++) g[i] = 0;
    g[0] = 1; /* top-left patch of a 7x7 grid (patch 32) */
    CHECK_OK(sl_ground_box(g, 7, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &m, 640,
                           480, &b, &score));
    CHECK_NEAR(b.x0, m.offset_x, 1e-3);
    CHECK_NEAR(b.y0, 0, 0);
    CHECK_NEAR(b.x1, 32 * m.scale_x + m.offset_x, 1e-3);
    CHECK_NEAR(b.y1, 32 * m.scale_y, 1e-3);
    /* the bottom-right patch touches the border: clipped to the picture */
    for (int i = 0; i < 49; i++) g[i] = 0;
    g[48] = 1;
    CHECK_OK(sl_ground_box(g, 7, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &m, 640,
                           480, &b, &score));
    CHECK_NEAR(b.y1, 480, 1e-3);
    CHECK(b.x1 <= 640);
    /* squash: the grid covers the whole picture */
    pp.crop = 0;
    CHECK_OK(sl_image_crop_map(300, 100, &pp, &m));
    for (int i = 0; i < 49; i++) g[i] = 1;
    CHECK_OK(sl_ground_box(g, 7, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &m, 300,
                           100, &b, &score));
    CHECK_NEAR(b.x0, 0, 1e-4);
    CHECK_NEAR(b.x1, 300, 1e-3);
    CHECK_NEAR(b.y1, 100, 1e-3);
    /* bad arguments */
    CHECK_ERR(sl_ground_box(g, 0, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &m, 300,
                            100, &b, &score),
              SL_ERR_INVALID, "grid");
    CHECK_ERR(sl_ground_box(g, 7, 7, 32, &(sl_ground_opts){1.5f, SL_GROUND_FROM_MIN, 1}, &m, 300,
                            100, &b, &score),
              SL_ERR_INVALID, "rel 1.5 outside");
    CHECK_ERR(sl_ground_box(g, 7, 7, 32, NULL, &m, 0, 100, &b, &score), SL_ERR_INVALID,
              "picture size");
    /* the cap is checked before the map is read: g holds 49 cells, not 4096^2 */
    CHECK_ERR(sl_ground_box(g, 4096, 4096, 32, NULL, &m, 300, 100, &b, &score), SL_ERR_INVALID,
              "over 2^24 cells");
    CHECK_ERR(sl_image_crop_map(0, 10, &pp, &m), SL_ERR_INVALID, "size");
    CHECK_ERR(sl_ground_box(g, 7, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 0}, &m, 300,
                            100, &b, &score),
              SL_ERR_INVALID, "upsampling 0 outside");
    CHECK_ERR(sl_ground_box(g, 7, 7, 32,
                            &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, SL_GROUND_UPSAMPLE_MAX + 1},
                            &m, 300, 100, &b, &score),
              SL_ERR_INVALID, "upsampling 17 outside");
}

/* Upsampling by 2, by hand: a 2x2 map with 1 at the top left (cell 16)
 * becomes 4x4 cells of 8 with samples at -0.25 (clamped to 0), 0.25, 0.75,
 * 1.25 (clamped to 1) cells, so each row and column weighs the top-left
 * value 1, 0.75, 0.25, 0: the fine map is the outer product of those.
 * rel 0.2 keeps 1, 0.75, 0.5625, 0.25 (not 0.1875): columns 0-2 of row 0,
 * 0-1 of row 1, 0 of row 2, a box of 24 x 24 pixels where the patch grid
 * alone gives 16 x 16 (its next value is 0); rel 0.7 keeps 1 and the two
 * 0.75s: 16 x 16. The score is the map's own peak. */
static void test_upsample(void) {
    sl_crop_map id = {1, 1, 0, 0};
    float sim[4] = {1, 0, 0, 0};
    sl_box b;
    float score;
    CHECK_OK(sl_ground_box(sim, 2, 2, 16, &(sl_ground_opts){0.2f, SL_GROUND_FROM_MIN, 1}, &id, 32,
                           32, &b, &score));
    CHECK(b.x0 == 0 && b.y0 == 0 && b.x1 == 16 && b.y1 == 16);
    CHECK_OK(sl_ground_box(sim, 2, 2, 16, &(sl_ground_opts){0.2f, SL_GROUND_FROM_MIN, 2}, &id, 32,
                           32, &b, &score));
    CHECK_MSG(b.x0 == 0 && b.y0 == 0 && b.x1 == 24 && b.y1 == 24, "up 2, rel 0.2: %g %g %g %g",
              (double)b.x0, (double)b.y0, (double)b.x1, (double)b.y1);
    CHECK_NEAR(score, 1.0, 0);
    CHECK_OK(sl_ground_box(sim, 2, 2, 16, &(sl_ground_opts){0.7f, SL_GROUND_FROM_MIN, 2}, &id, 32,
                           32, &b, &score));
    CHECK(b.x0 == 0 && b.y0 == 0 && b.x1 == 16 && b.y1 == 16);
    /* a 1x3 row 0, 1, 1 (cell 10) by 4: samples at (j + 0.5) / 4 - 0.5
     * cells give 0, 0, 0.125, 0.375, 0.625, 0.875, then 1 from sample 6
     * on; rel 0.8 keeps samples 5-11 (cells of 2.5 pixels): x from 12.5 to
     * 30, where the patch grid alone gives 10 to 30 */
    float row[3] = {0, 1, 1};
    CHECK_OK(sl_ground_box(row, 1, 3, 10, &(sl_ground_opts){0.8f, SL_GROUND_FROM_MIN, 4}, &id, 30,
                           10, &b, &score));
    CHECK_MSG(b.x0 == 12.5f && b.x1 == 30 && b.y0 == 0 && b.y1 == 10, "up 4 row: %g %g %g %g",
              (double)b.x0, (double)b.y0, (double)b.x1, (double)b.y1);
}

/* The map is each patch row dotted with the phrase: hand-computed values,
 * exact in float. */
static void test_sim_map(void) {
    const float patches[3 * 2] = {1, 0, 0.5f, 0.5f, -2, 4};
    const float phrase[2] = {0.25f, 2};
    float sim[3];
    sl_ground_sim_map(patches, 3, 2, phrase, sim);
    CHECK_MSG(sim[0] == 0.25f && sim[1] == 1.125f && sim[2] == 7.5f, "sim map: %g %g %g",
              (double)sim[0], (double)sim[1], (double)sim[2]);
}

int main(void) {
    test_iou();
    test_sim_map();
    test_ground();
    test_upsample();
    return sl_test_finish("test_ground");
}
