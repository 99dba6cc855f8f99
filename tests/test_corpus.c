/*
 * tests/test_corpus.c - the demo corpus builder on a small fake emoji set
 * written here in the packages' layout (no network): determinism, splits,
 * counts, boxes, non-overlap, exclusions, and the outputs read back by the
 * Karpathy and Flickr30K Entities readers.
 */
#include "corpus/corpus.h"
#include "sightline/eval.h"
#include "sightline/eval_grounding.h"
#include "testutil.h"

#include <png.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[512];

static void write_png(const char *dir, const char *set, const char *code, int seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/emoji-datasource-%s/img/%s/64", dir, set, set);
    CHECK_OK(sl_mkdir_p(path));
    snprintf(path, sizeof path, "%s/emoji-datasource-%s/img/%s/64/%s.png", dir, set, set, code);
    uint8_t px[64 * 64 * 4];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            uint8_t *p = px + (y * 64 + x) * 4;
            int dx = x - 32, dy = y - 32, in = dx * dx + dy * dy < 26 * 26;
            p[0] = (uint8_t)(seed * 40 + x);
            p[1] = (uint8_t)(seed * 90 + y);
            p[2] = (uint8_t)(set[0] == 'g' ? 200 : 50);
            p[3] = in ? 255 : 0;
        }
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = im.height = 64;
    im.format = PNG_FORMAT_RGBA;
    CHECK(png_image_write_to_file(&im, path, 0, px, 0, NULL));
}

static void write_str(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(s, f);
    fclose(f);
}

static void make_fake(const char *dir) {
    /* 6 usable + a flag, a skin-tone variant, a keycap, a component, one
     * without a twitter PNG */
    static const char *const ok[] = {"1f600", "1f436", "1f34e", "1f697", "2764-fe0f", "1f3b8"};
    for (int i = 0; i < 6; i++) {
        write_png(dir, "google", ok[i], i);
        write_png(dir, "twitter", ok[i], i);
    }
    const char *bad[] = {"1f1fa-1f1f8", "1f44d-1f3fb", "0031-fe0f-20e3", "1f3fb"};
    for (int i = 0; i < 4; i++) {
        write_png(dir, "google", bad[i], 7);
        write_png(dir, "twitter", bad[i], 7);
    }
    write_png(dir, "google", "1f40d", 8); /* snake: google only */
    char path[1024];
    snprintf(path, sizeof path, "%s/emoji-datasource-google/emoji.json", dir);
    write_str(path,
              "[{\"unified\":\"1F600\",\"name\":\"GRINNING FACE\",\"category\":\"Smileys & "
              "Emotion\",\"subcategory\":\"face-smiling\"},"
              "{\"unified\":\"1F436\",\"name\":\"DOG FACE\",\"category\":\"Animals & "
              "Nature\",\"subcategory\":\"animal-mammal\"},"
              "{\"unified\":\"1F34E\",\"name\":\"RED APPLE\",\"category\":\"Food & "
              "Drink\",\"subcategory\":\"food-fruit\"},"
              "{\"unified\":\"1F697\",\"name\":\"AUTOMOBILE\",\"category\":\"Travel & "
              "Places\",\"subcategory\":\"transport-ground\"},"
              "{\"unified\":\"2764-FE0F\",\"non_qualified\":\"2764\",\"name\":\"HEAVY BLACK "
              "HEART\",\"category\":\"Smileys & Emotion\",\"subcategory\":\"heart\"},"
              "{\"unified\":\"1F3B8\",\"name\":\"GUITAR\",\"category\":\"Objects\","
              "\"subcategory\":\"musical-instrument\"},"
              "{\"unified\":\"1F1FA-1F1F8\",\"name\":\"US FLAG\",\"category\":\"Flags\","
              "\"subcategory\":\"country-flag\"},"
              "{\"unified\":\"1F44D-1F3FB\",\"name\":\"THUMBS UP LIGHT\",\"category\":\"People & "
              "Body\",\"subcategory\":\"hand-fingers-closed\"},"
              "{\"unified\":\"0031-FE0F-20E3\",\"name\":\"KEYCAP 1\",\"category\":\"Symbols\","
              "\"subcategory\":\"keycap\"},"
              "{\"unified\":\"1F3FB\",\"name\":\"EMOJI MODIFIER FITZPATRICK TYPE-1-2\","
              "\"category\":\"Component\",\"subcategory\":\"skin-tone\"},"
              "{\"unified\":\"1F40D\",\"name\":\"SNAKE\",\"category\":\"Animals & Nature\","
              "\"subcategory\":\"animal-reptile\"}]");
    snprintf(path, sizeof path, "%s/emoji-datasource-google/package.json", dir);
    write_str(path, "{\"name\":\"emoji-datasource-google\",\"version\":\"0.0.1-fake\"}");
    snprintf(path, sizeof path, "%s/emojibase-data/en", dir);
    CHECK_OK(sl_mkdir_p(path));
    snprintf(path, sizeof path, "%s/emojibase-data/en/data.json", dir);
    write_str(
        path,
        "[{\"label\":\"grinning face\",\"hexcode\":\"1F600\",\"tags\":[\"face\",\"grin\"],"
        "\"group\":0},"
        "{\"label\":\"dog face\",\"hexcode\":\"1F436\",\"tags\":[\"dog\",\"pet\"],\"group\":3},"
        "{\"label\":\"red apple\",\"hexcode\":\"1F34E\",\"tags\":[\"apple\",\"fruit\"],"
        "\"group\":4},"
        "{\"label\":\"automobile\",\"hexcode\":\"1F697\",\"tags\":[\"car\"],\"group\":5},"
        "{\"label\":\"red heart\",\"hexcode\":\"2764\",\"tags\":[\"heart\",\"love\"],"
        "\"group\":0},"
        "{\"label\":\"guitar\",\"hexcode\":\"1F3B8\",\"tags\":[\"instrument\",\"music\"],"
        "\"group\":7},"
        "{\"label\":\"light skin tone\",\"hexcode\":\"1F3FB\",\"tags\":[],\"group\":2},"
        "{\"label\":\"snake\",\"hexcode\":\"1F40D\",\"tags\":[\"reptile\"],\"group\":3}]");
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !sl_read_file(a, 1 << 26, &x, &nx) && !sl_read_file(b, 1 << 26, &y, &ny) &&
               nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static sl_status build(const char *data, const char *out, uint64_t seed, sl_corpus_stats *s) {
    sl_corpus_opts o = {.data_dir = data,
                        .out_dir = out,
                        .seed = seed,
                        .n_train = 12,
                        .n_val = 3,
                        .n_test = 4,
                        .n_scenes = 20,
                        .size = 96,
                        .quiet = 1};
    return sl_corpus_build(&o, s);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/sl_test_corpus_%d", (int)getpid());
    char data[600], out1[600], out2[600], out3[600], p1[1200], p2[1200];
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(out1, sizeof out1, "%s/out1", root);
    snprintf(out2, sizeof out2, "%s/out2", root);
    snprintf(out3, sizeof out3, "%s/out3", root);
    make_fake(data);
    sl_corpus_stats s, s2, s3;
    CHECK_OK(build(data, out1, 7, &s));
    CHECK_OK(build(data, out2, 7, &s2));
    CHECK_OK(build(data, out3, 8, &s3));
    CHECK(s.n_entries == 11);
    CHECK(s.n_emoji == 6);
    CHECK(s.ex_flag == 1 && s.ex_skin == 1 && s.ex_keycap == 1 && s.ex_component == 1);
    CHECK(s.ex_noimg == 1);
    CHECK(s.images[0] == 12 && s.images[1] == 3 && s.images[2] == 4);
    CHECK(s.scenes[0] == 16 && s.scenes[1] == 2 && s.scenes[2] == 2);
    CHECK(!strcmp(s.versions[0], "0.0.1-fake") && !strcmp(s.versions[1], "unknown"));

    /* determinism: same seed, same bytes; another seed, other pictures */
    const char *files[] = {"dataset_emoji.json",
                           "captions_train.txt",
                           "images/train/train_000001.jpg",
                           "images/test/test_000004.jpg",
                           "images/val/val_000003.jpg",
                           "entities/images/train_000016.jpg",
                           "entities/Sentences/test_000002.txt",
                           "entities/Annotations/val_000001.xml",
                           "entities/train.txt",
                           "LICENSES.md",
                           "manifest.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p1, sizeof p1, "%s/%s", out1, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", out2, files[i]);
        CHECK_MSG(same_file(p1, p2), "%s differs between two builds with one seed", files[i]);
    }
    snprintf(p1, sizeof p1, "%s/images/train/train_000001.jpg", out1);
    snprintf(p2, sizeof p2, "%s/images/train/train_000001.jpg", out3);
    CHECK(!same_file(p1, p2));

    /* Karpathy JSON */
    snprintf(p1, sizeof p1, "%s/dataset_emoji.json", out1);
    const char *splits[] = {"train", "val", "test"};
    size_t want[] = {12, 3, 4};
    for (int k = 0; k < 3; k++) {
        sl_karpathy kp;
        sl_karpathy_opts ko = {.split = splits[k], .max_captions = 5};
        CHECK_OK(sl_karpathy_read(p1, &ko, &kp));
        CHECK(kp.n_images == want[k] && kp.n_captions == want[k] * 5);
        CHECK(kp.n_file_images == 19 && kp.n_fewer == 0 && kp.n_more == 0);
        for (size_t i = 0; i < kp.n_images; i++) {
            char *ip = sl_karpathy_image_path(out1, &kp.images[i]);
            char full[1400];
            snprintf(full, sizeof full, "%s/images/%s", out1, ip + strlen(out1) + 1);
            sl_image img;
            CHECK_OK(sl_image_load(full, NULL, &img));
            CHECK(img.width == 96 && img.height == 96);
            sl_image_free(&img);
            free(ip);
        }
        for (size_t i = 0; i < kp.n_captions; i++) CHECK(strlen(kp.captions[i]) > 0);
        sl_karpathy_free(&kp);
    }
    /* excluded emoji never named */
    char *js = NULL;
    size_t jn = 0;
    CHECK_OK(sl_read_file(p1, 1 << 26, &js, &jn));
    if (js) {
        CHECK(!strstr(js, "1F1FA") && !strstr(js, "1F3FB") && !strstr(js, "20E3"));
        CHECK(!strstr(js, "snake") && !strstr(js, "skin tone"));
        free(js);
    }

    /* Entities: every split reads, boxes inside, no overlap within a scene */
    char ent[700];
    snprintf(ent, sizeof ent, "%s/entities", out1);
    size_t nsc[] = {16, 2, 2};
    for (int k = 0; k < 3; k++) {
        snprintf(p1, sizeof p1, "%s/%s.txt", ent, splits[k]);
        sl_ground_set gs;
        CHECK_OK(sl_ground_read_entities(ent, p1, &gs));
        CHECK(gs.n_images == nsc[k]);
        for (size_t i = 0; i < gs.n_images; i++) {
            const sl_ground_image *im = &gs.images[i];
            CHECK(im->width == 96 && im->height == 96);
            CHECK(im->count >= 2 && im->count <= 4);
            CHECK(!strncmp(im->id, splits[k], strlen(splits[k])));
            for (size_t a = im->first; a < im->first + im->count; a++) {
                sl_box b = gs.phrases[a].box;
                CHECK(gs.phrases[a].boxes == 1);
                CHECK(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 96 && b.y1 <= 96 && b.x0 < b.x1 &&
                      b.y0 < b.y1);
                for (size_t c = a + 1; c < im->first + im->count; c++) {
                    sl_box d = gs.phrases[c].box;
                    int ov = b.x0 < d.x1 && d.x0 < b.x1 && b.y0 < d.y1 && d.y0 < b.y1;
                    CHECK_MSG(!ov, "boxes of %s overlap", im->id);
                }
            }
            snprintf(p1, sizeof p1, "%s/images/%s", ent, im->file_name);
            sl_image img;
            CHECK_OK(sl_image_load(p1, NULL, &img));
            sl_image_free(&img);
        }
        CHECK(gs.skipped[SL_GSKIP_ABSENT] == 0);
        sl_ground_set_free(&gs);
    }
    snprintf(p1, sizeof p1, "%s/ATTRIBUTION.txt", out1);
    struct stat sb;
    CHECK(stat(p1, &sb) == 0);

    /* missing data folder: a clear error */
    sl_corpus_stats s4;
    snprintf(p1, sizeof p1, "%s/nothing", root);
    snprintf(p2, sizeof p2, "%s/out4", root);
    CHECK_ERR(build(p1, p2, 1, &s4), SL_ERR_NOT_FOUND, "fetch-demo-data");

    if (!sl_test_failures) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", root);
    }
    printf("%d checks, %d failed\n", sl_test_checks, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}
