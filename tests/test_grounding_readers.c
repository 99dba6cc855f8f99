/*
 * tests/test_grounding_readers.c - the grounding benchmark readers on
 * fixtures written here (Flickr30K Entities sentences, VOC annotations and
 * split lists; RefCOCO COCO-style JSON): multi-type phrases, several boxes
 * merged into their union, skipped phrases counted by reason, the exact
 * 1-based -> 0-based and [x, y, w, h] conversions, split filtering, and
 * malformed inputs (broken markup, an unclosed XML element, a non-numeric
 * coordinate, JSON syntax errors, an annotation naming a missing image)
 * failing with the file and line. Then the accuracy computation on fixed
 * predicted boxes: the IoU >= 0.5 boundary and boxes touching the border.
 */
#include "sightline/eval_grounding.h"
#include "testutil.h"

#include <sys/stat.h>

static char g_dir[512];

static void write_text(const char *rel, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static const char *at(const char *rel) {
    static char path[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", g_dir, rel);
    return path[k];
}

static int box_eq(sl_box b, float x0, float y0, float x1, float y1) {
    return b.x0 == x0 && b.y0 == y0 && b.x1 == x1 && b.y1 == y1;
}

/* ---- sentence markup -------------------------------------------------------- */

typedef struct seen {
    char entity[8][32], types[8][64], words[8][128];
    int n;
} seen;

static sl_status collect(void *ctx, const char *entity, const char *types, const char *words) {
    seen *s = ctx;
    if (s->n < 8) {
        snprintf(s->entity[s->n], 32, "%s", entity);
        snprintf(s->types[s->n], 64, "%s", types);
        snprintf(s->words[s->n], 128, "%s", words);
    }
    s->n++;
    return SL_OK;
}

static sl_status parse(const char *line, seen *s) {
    memset(s, 0, sizeof *s);
    return sl_ground_parse_sentence(line, strlen(line), "S.txt", 7, collect, s);
}

static void test_sentence(void) {
    seen s;
    CHECK_OK(parse("[/EN#18/people A man] in [/EN#19/clothing/bodyparts his  hat ] .", &s));
    CHECK(s.n == 2);
    CHECK(!strcmp(s.entity[0], "18") && !strcmp(s.types[0], "people") &&
          !strcmp(s.words[0], "A man"));
    CHECK(!strcmp(s.entity[1], "19") && !strcmp(s.types[1], "clothing/bodyparts") &&
          !strcmp(s.words[1], "his  hat"));
    CHECK_OK(parse("no phrases here", &s));
    CHECK(s.n == 0);
    CHECK_ERR(parse("[/EN#1/people a man", &s), SL_ERR_FORMAT, "S.txt:7: column 1");
    CHECK_ERR(parse("x [/EN#1/people a [/EN#2/people b] c]", &s), SL_ERR_FORMAT, "nested");
    CHECK_ERR(parse("a man] walks", &s), SL_ERR_FORMAT, "']' without");
    CHECK_ERR(parse("[EN#1/people a]", &s), SL_ERR_FORMAT, "/EN#");
    CHECK_ERR(parse("[/EN#x/people a]", &s), SL_ERR_FORMAT, "entity id");
    CHECK_ERR(parse("[/EN#1/ a]", &s), SL_ERR_FORMAT, "empty entity type");
    CHECK_ERR(parse("[/EN#1/people//other a]", &s), SL_ERR_FORMAT, "empty entity type");
    CHECK_ERR(parse("[/EN#1/people   ]", &s), SL_ERR_FORMAT, "without words");
    CHECK_ERR(parse("[/EN#1/people]", &s), SL_ERR_FORMAT, "space");
}

/* ---- Flickr30K Entities ---------------------------------------------------- */

static const char *XML1 =
    "<?xml version=\"1.0\"?>\n"
    "<!-- a comment -->\n"
    "<annotation>\n"
    "  <filename>1.jpg</filename>\n"
    "  <size><width>100</width><height>80</height><depth>3</depth></size>\n"
    "  <object><name>10</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
    "<ymax>20</ymax></bndbox></object>\n"
    "  <object><name>11</name><bndbox><xmin>11</xmin><ymin>5</ymin><xmax>20</xmax>"
    "<ymax>15</ymax></bndbox></object>\n"
    "  <object kind=\"x\"><name>11</name><bndbox><xmin>31</xmin><ymin>21</ymin>"
    "<xmax>40</xmax><ymax>30</ymax></bndbox></object>\n"
    "  <object><name>12</name><name>13</name><bndbox><xmin>51</xmin><ymin>41</ymin>"
    "<xmax>100</xmax><ymax>80</ymax></bndbox></object>\n"
    "  <object><name>14</name><nobndbox>1</nobndbox><scene>0</scene></object>\n"
    "  <object><name>15</name><nobndbox>0</nobndbox><scene>1</scene></object>\n"
    "  <segmented/>\n"
    "</annotation>\n";

static const char *TXT1 =
    "[/EN#10/people A man] in [/EN#11/clothing/other two shirts] stands in "
    "[/EN#15/scene a park] .\r\n"
    "[/EN#0/notvisual Someone] sees [/EN#14/other a thing] , [/EN#99/animals a dog] and "
    "[/EN#13/animals a cat] &amp; [/EN#12/animals/other the cat] .\n"
    "\n";

static const char *XML_SMALL =
    "<annotation><size><width>50</width><height>40</height></size>\n"
    "<object><name>30</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax>"
    "<ymax>8</ymax></bndbox></object></annotation>\n";

static void make_entities(void) {
    snprintf(g_dir, sizeof g_dir, "%s", sl_test_tmpdir());
    mkdir(at("Sentences"), 0755);
    mkdir(at("Annotations"), 0755);
    write_text("Sentences/1.txt", TXT1);
    write_text("Annotations/1.xml", XML1);
    write_text("Sentences/2.txt", "[/EN#30/people A woman] .\n");
    write_text("Annotations/2.xml", XML_SMALL);
    write_text("Sentences/3.txt", "A [/EN#30/vehicles car] .\n");
    write_text("Annotations/3.xml", XML_SMALL);
    write_text("split.txt", "3\n\n1\r\n");
}

static void test_entities(void) {
    make_entities();
    sl_ground_set set;
    CHECK_OK(sl_ground_read_entities(g_dir, at("split.txt"), &set));
    CHECK(set.n_images == 2);
    if (set.n_images == 2) {
        CHECK(!strcmp(set.images[0].id, "3") && !strcmp(set.images[0].file_name, "3.jpg"));
        CHECK(!strcmp(set.images[1].id, "1") && set.images[1].width == 100 &&
              set.images[1].height == 80);
        CHECK(set.images[0].first == 0 && set.images[0].count == 1);
        CHECK(set.images[1].first == 1 && set.images[1].count == 4);
    }
    CHECK(set.n_phrases == 5);
    if (set.n_phrases == 5) {
        const sl_ground_phrase *p = set.phrases;
        CHECK(!strcmp(p[0].text, "car") && box_eq(p[0].box, 4, 5, 7, 8) && p[0].line == 1);
        /* VOC [1, 1, 10, 20] -> [0, 0, 10, 20] */
        CHECK(!strcmp(p[1].text, "A man") && box_eq(p[1].box, 0, 0, 10, 20));
        /* two boxes [10,4,20,15] and [30,20,40,30]: their union */
        CHECK(!strcmp(p[2].text, "two shirts") && box_eq(p[2].box, 10, 4, 40, 30) &&
              p[2].boxes == 2);
        /* one object naming two entities */
        CHECK(!strcmp(p[3].text, "a cat") && box_eq(p[3].box, 50, 40, 100, 80) &&
              !strcmp(p[3].entity, "13") && p[3].line == 2);
        CHECK(!strcmp(p[4].text, "the cat") && box_eq(p[4].box, 50, 40, 100, 80));
        /* types: vehicles, people, clothing, other, scene, notvisual, animals */
        CHECK(set.n_types == 7);
        int clothing = -1, other = -1, animals = -1;
        for (int t = 0; t < set.n_types; t++) {
            if (!strcmp(set.types[t], "clothing")) clothing = t;
            if (!strcmp(set.types[t], "other")) other = t;
            if (!strcmp(set.types[t], "animals")) animals = t;
        }
        CHECK(clothing >= 0 && other >= 0 && animals >= 0);
        if (clothing >= 0 && other >= 0 && animals >= 0) {
            CHECK(p[2].types == ((1u << clothing) | (1u << other)));
            CHECK(p[4].types == ((1u << animals) | (1u << other)));
        }
    }
    CHECK(set.skipped[SL_GSKIP_SCENE] == 1);
    CHECK(set.skipped[SL_GSKIP_NOTVISUAL] == 1);
    CHECK(set.skipped[SL_GSKIP_NOBNDBOX] == 1);
    CHECK(set.skipped[SL_GSKIP_ABSENT] == 1);
    sl_ground_set_free(&set);

    /* without a split: every sentence file, in name order */
    CHECK_OK(sl_ground_read_entities(g_dir, NULL, &set));
    CHECK(set.n_images == 3 && set.n_phrases == 6);
    if (set.n_images == 3) CHECK(!strcmp(set.images[1].id, "2"));
    sl_ground_set_free(&set);

    /* a split naming an image without files */
    write_text("split2.txt", "1\n7\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split2.txt"), &set), SL_ERR_NOT_FOUND, "7.xml");
    sl_ground_set_free(&set);
    write_text("split3.txt", "1\n../etc\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split3.txt"), &set), SL_ERR_FORMAT,
              "split3.txt:2");
    sl_ground_set_free(&set);
    write_text("split4.txt", "1\n3\n1\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split4.txt"), &set), SL_ERR_FORMAT,
              "split4.txt:3: image id '1' listed twice");
    sl_ground_set_free(&set);

    /* malformed files: each names its file and line */
    write_text("split5.txt", "5\n");
    write_text("Annotations/5.xml", XML_SMALL);
    write_text("Sentences/5.txt", "[/EN#30/people A woman] .\n[/EN#30/people A woman .\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "Sentences/5.txt:2: column 1");
    sl_ground_set_free(&set);

    write_text("Sentences/5.txt", "[/EN#30/people A woman] .\n");
    write_text("Annotations/5.xml", "<annotation>\n<size><width>5</width><height>4</height>"
                                    "</size>\n<object><name>30</name>\n</annotation>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "Annotations/5.xml:4: closing tag </annotation> does not match <object> opened on "
              "line 3");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml", "<annotation>\n<size><width>5</width><height>4</height>"
                                    "</size>\n<object><name>30</name></object>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "<annotation> opened on line 1 is never closed");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml",
               "<annotation>\n<size><width>5</width><height>4</height></size>\n<object>\n"
               "<name>30</name>\n<bndbox><xmin>1</xmin><ymin>2</ymin>\n<xmax>1O</xmax>"
               "<ymax>3</ymax></bndbox></object></annotation>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "Annotations/5.xml:6: <xmax> value '1O' is not a number");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml", "<annotation>\n<size><width>5</width></size></annotation>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "Annotations/5.xml:2: <size> lacks <height>");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml", "<annotation></annotation>\n<x/>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "5.xml:2: a second root element");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml", "<annotation>\n<size><width>5</width><height>4</height>"
                                    "</size>\n<object><name>3&bad;</name></object></annotation>");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "5.xml:3: unknown entity");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml",
               "<annotation>\n<size><width>5</width><height>4</height></size>\n<object>"
               "<name>30</name><bndbox><xmin>4</xmin><ymin>2</ymin><xmax>3</xmax>"
               "<ymax>3</ymax></bndbox></object></annotation>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT,
              "5.xml:3: <bndbox> with xmax < xmin");
    sl_ground_set_free(&set);

    write_text("Annotations/5.xml", "<annotation>\n<size><width>5</width><height>4</height>"
                                    "</size>\n<object><bndbox/></object></annotation>\n");
    CHECK_ERR(sl_ground_read_entities(g_dir, at("split5.txt"), &set), SL_ERR_FORMAT, "5.xml:3:");
    sl_ground_set_free(&set);
}

/* ---- RefCOCO ----------------------------------------------------------------- */

static const char *REF_JSON =
    "{\"info\": {}, \"images\": [\n"
    " {\"id\": 7, \"file_name\": \"COCO_train2014_000000000001.jpg\", \"height\": 480,\n"
    "  \"width\": 640, \"caption\": \"left man\", \"original_id\": 1, \"dataset_name\": "
    "\"refcoco\",\n  \"tokens_positive_eval\": [[[0, 8]]]},\n"
    " {\"id\": 3, \"file_name\": \"COCO_train2014_000000000002.jpg\", \"height\": 100,\n"
    "  \"width\": 200, \"caption\": \"a cup\"},\n"
    " {\"id\": 5, \"file_name\": \"COCO_train2014_000000000001.jpg\", \"height\": 480,\n"
    "  \"width\": 640, \"caption\": \"right man\"},\n"
    " {\"id\": 9, \"file_name\": \"COCO_train2014_000000000003.jpg\", \"height\": 10,\n"
    "  \"width\": 10, \"caption\": \"nothing\"}\n"
    "], \"annotations\": [\n"
    " {\"id\": 1, \"image_id\": 5, \"bbox\": [300.5, 20, 100.25, 200], \"category_id\": 1},\n"
    " {\"id\": 2, \"image_id\": 7, \"bbox\": [0, 0, 50, 60], \"category_id\": 1},\n"
    " {\"id\": 3, \"image_id\": 3, \"bbox\": [10, 20, 30, 40]},\n"
    " {\"id\": 4, \"image_id\": 3, \"bbox\": [100, 5, 10, 10]}\n"
    "], \"categories\": []}\n";

static void test_refcoco(void) {
    snprintf(g_dir, sizeof g_dir, "%s", sl_test_tmpdir());
    write_text("ref.json", REF_JSON);
    sl_ground_set set;
    CHECK_OK(sl_ground_read_refcoco(at("ref.json"), &set));
    CHECK(set.n_images == 3 && set.n_phrases == 3);
    if (set.n_images == 3 && set.n_phrases == 3) {
        /* grouped by picture (first appearance), expressions in file order */
        CHECK(!strcmp(set.images[0].file_name, "COCO_train2014_000000000001.jpg") &&
              set.images[0].count == 2 && set.images[0].width == 640 &&
              set.images[0].height == 480);
        CHECK(!strcmp(set.images[1].file_name, "COCO_train2014_000000000002.jpg") &&
              set.images[1].count == 1 && set.images[1].first == 2);
        CHECK(set.images[2].count == 0);
        const sl_ground_phrase *p = set.phrases;
        CHECK(!strcmp(p[0].text, "left man") && box_eq(p[0].box, 0, 0, 50, 60) &&
              !strcmp(p[0].entity, "7"));
        /* [x, y, w, h] -> [x, y, x + w, y + h] exactly */
        CHECK(!strcmp(p[1].text, "right man") && box_eq(p[1].box, 300.5f, 20, 400.75f, 220));
        /* two annotations: their union */
        CHECK(!strcmp(p[2].text, "a cup") && box_eq(p[2].box, 10, 5, 110, 60) && p[2].boxes == 2);
        CHECK(p[0].types == 0 && set.n_types == 0);
    }
    CHECK(set.skipped[SL_GSKIP_ABSENT] == 1);
    sl_ground_set_free(&set);

    /* syntax error: the line is named */
    write_text("bad1.json", "{\"images\": [\n {\"id\": 1,\n  \"file_name\" \"a.jpg\"}\n]}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad1.json"), &set), SL_ERR_FORMAT, "bad1.json line 3,");
    sl_ground_set_free(&set);
    write_text("bad2.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 4, "
                            "\"width\": 4, \"caption\": \"x\"}],\n \"annotations\": "
                            "[{\"image_id\": 2, \"bbox\": [0, 0, 1, 1]}]}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad2.json"), &set), SL_ERR_FORMAT,
              "annotations[0].image_id 2 names no image");
    sl_ground_set_free(&set);
    write_text("bad3.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 4, "
                            "\"width\": 4, \"caption\": \"x\"}],\n \"annotations\": "
                            "[{\"image_id\": 1, \"bbox\": [0, \"0\", 1, 1]}]}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad3.json"), &set), SL_ERR_FORMAT,
              "annotations[0].bbox[1]");
    sl_ground_set_free(&set);
    write_text("bad4.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 4, "
                            "\"caption\": \"x\"}], \"annotations\": []}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad4.json"), &set), SL_ERR_FORMAT,
              "images[0] lacks \"width\"");
    sl_ground_set_free(&set);
    write_text("bad5.json", "{\"images\": [{\"id\": 1, \"id\": 2}], \"annotations\": []}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad5.json"), &set), SL_ERR_FORMAT, "bad5.json line 1,");
    sl_ground_set_free(&set);
    write_text("bad6.json", "{\"images\": [{\"id\": 1, \"file_name\": \"../a.jpg\", \"height\": "
                            "4, \"width\": 4, \"caption\": \"x\"}], \"annotations\": []}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad6.json"), &set), SL_ERR_FORMAT, "leaves");
    sl_ground_set_free(&set);
    write_text("bad7.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 4, "
                            "\"width\": 4, \"caption\": \"x\"}],\n \"annotations\": "
                            "[{\"image_id\": 1, \"bbox\": [0, 0, -1, 1]}]}\n");
    CHECK_ERR(sl_ground_read_refcoco(at("bad7.json"), &set), SL_ERR_FORMAT, "negative");
    sl_ground_set_free(&set);
}

/* ---- accuracy ------------------------------------------------------------------ */

static void test_score(void) {
    sl_ground_set set;
    sl_ground_set_init(&set);
    uint32_t people, both;
    CHECK_OK(sl_ground_set_types(&set, "people", &people));
    CHECK_OK(sl_ground_set_types(&set, "people/clothing", &both));
    CHECK(people == 1 && both == 3 && set.n_types == 2);
    sl_box gt_half = {0, 0, 2, 1};
    sl_box gt_corner = {90, 70, 100, 80}; /* bottom-right corner of a 100x80 picture */
    CHECK_OK(sl_ground_set_add_image(&set, "a", "a.jpg", 100, 80));
    CHECK_OK(sl_ground_set_add_phrase(&set, "p0", "1", people, gt_half, 1, 1));
    CHECK_OK(sl_ground_set_add_phrase(&set, "p1", "1", people, gt_half, 1, 1));
    CHECK_OK(sl_ground_set_add_phrase(&set, "p2", "2", both, gt_corner, 1, 2));
    CHECK_OK(sl_ground_set_add_phrase(&set, "p3", "2", both, gt_corner, 1, 2));
    CHECK_OK(sl_ground_set_add_image(&set, "b", "b.jpg", 100, 80));
    CHECK_OK(sl_ground_set_add_phrase(&set, "p4", "3", people, gt_corner, 1, 1));
    set.skipped[SL_GSKIP_SCENE] = 2;
    sl_box pred[5] = {{0, 0, 1, 1},       /* IoU exactly 0.5: correct */
                      {0, 0, 0.999f, 1},  /* just under 0.5: wrong */
                      {90, 70, 100, 80},  /* the same box on the border: correct */
                      {80, 70, 90, 80},   /* touching it edge to edge: IoU 0, wrong */
                      {90, 70, 100, 80}}; /* on an image marked failed below */
    CHECK(sl_ground_correct(pred[0], gt_half));
    CHECK(!sl_ground_correct(pred[1], gt_half));
    sl_ground_score sc;
    sl_ground_score_compute(&set, pred, NULL, &sc);
    CHECK(sc.phrases == 5 && sc.correct == 3 && sc.images == 2 && sc.skipped == 2);
    CHECK(sc.type_phrases[0] == 5 && sc.type_correct[0] == 3);
    CHECK(sc.type_phrases[1] == 2 && sc.type_correct[1] == 1);
    CHECK_NEAR(sl_ground_accuracy(sc.correct, sc.phrases), 60.0, 1e-12);
    unsigned char ok[2] = {1, 0};
    sl_ground_score_compute(&set, pred, ok, &sc);
    CHECK(sc.phrases == 4 && sc.correct == 2 && sc.images == 1 && sc.skipped == 3 &&
          sc.skipped_by[SL_GSKIP_IMAGE] == 1);
    CHECK_NEAR(sl_ground_accuracy(0, 0), 0.0, 0);

    /* a phrase whose map peaks in the bottom-right cell of a center-cropped
     * 640x480 picture: the predicted box touches the border and matches a
     * ground truth there */
    sl_preprocess pp = sl_preprocess_clip(224);
    sl_crop_map m;
    CHECK_OK(sl_image_crop_map(640, 480, &pp, &m));
    float sim[49] = {0};
    sim[48] = 1;
    sl_box b;
    float score;
    CHECK_OK(sl_ground_box(sim, 7, 7, 32, &(sl_ground_opts){0.5f, SL_GROUND_FROM_MIN, 1}, &m, 640,
                           480, &b, &score));
    sl_box gt = {b.x0, b.y0, b.x1, 480};
    CHECK(b.y1 == 480);
    CHECK(sl_ground_correct(b, gt));
    sl_box gt_far = {0, 0, b.x1 - b.x0, b.y1 - b.y0};
    CHECK(!sl_ground_correct(b, gt_far));
    sl_ground_set_free(&set);

    /* more than SL_GROUND_MAX_TYPES types */
    sl_ground_set_init(&set);
    char name[16];
    uint32_t mask;
    sl_status st = SL_OK;
    for (int t = 0; t <= SL_GROUND_MAX_TYPES && st == SL_OK; t++) {
        snprintf(name, sizeof name, "t%d", t);
        st = sl_ground_set_types(&set, name, &mask);
    }
    CHECK(st == SL_ERR_LIMIT);
    sl_ground_set_free(&set);
}

int main(void) {
    test_sentence();
    test_entities();
    test_refcoco();
    test_score();
    return sl_test_finish("test_grounding_readers");
}
