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
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, 0.5f, &id, 64, 64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 48 && b.y1 == 48);
    CHECK_NEAR(score, 0.9, 1e-6);
    /* a high threshold keeps the peak alone */
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, 0.95f, &id, 64, 64, &b, &score));
    CHECK(b.x0 == 16 && b.y0 == 16 && b.x1 == 32 && b.y1 == 32);
    /* rel 0 keeps everything */
    CHECK_OK(sl_ground_box(sim, 4, 4, 16, 0.0f, &id, 64, 64, &b, &score));
    CHECK(b.x0 == 0 && b.y0 == 0 && b.x1 == 64 && b.y1 == 64);

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
    CHECK_OK(sl_ground_box(g, 7, 7, 32, 0.5f, &m, 640, 480, &b, &score));
    CHECK_NEAR(b.x0, m.offset_x, 1e-3);
    CHECK_NEAR(b.y0, 0, 0);
    CHECK_NEAR(b.x1, 32 * m.scale_x + m.offset_x, 1e-3);
    CHECK_NEAR(b.y1, 32 * m.scale_y, 1e-3);
    /* the bottom-right patch touches the border: clipped to the picture */
    for (int i = 0; i < 49; i++) g[i] = 0;
    g[48] = 1;
    CHECK_OK(sl_ground_box(g, 7, 7, 32, 0.5f, &m, 640, 480, &b, &score));
    CHECK_NEAR(b.y1, 480, 1e-3);
    CHECK(b.x1 <= 640);
    /* squash: the grid covers the whole picture */
    pp.crop = 0;
    CHECK_OK(sl_image_crop_map(300, 100, &pp, &m));
    for (int i = 0; i < 49; i++) g[i] = 1;
    CHECK_OK(sl_ground_box(g, 7, 7, 32, 0.5f, &m, 300, 100, &b, &score));
    CHECK_NEAR(b.x0, 0, 1e-4);
    CHECK_NEAR(b.x1, 300, 1e-3);
    CHECK_NEAR(b.y1, 100, 1e-3);
    /* bad arguments */
    CHECK_ERR(sl_ground_box(g, 0, 7, 32, 0.5f, &m, 300, 100, &b, &score), SL_ERR_INVALID, "grid");
    CHECK_ERR(sl_ground_box(g, 7, 7, 32, 1.5f, &m, 300, 100, &b, &score), SL_ERR_INVALID, "rel");
    CHECK_ERR(sl_image_crop_map(0, 10, &pp, &m), SL_ERR_INVALID, "size");
}

int main(void) {
    test_iou();
    test_ground();
    return sl_test_finish("test_ground");
}
