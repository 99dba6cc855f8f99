/*
 * corpus/corpus_cmd.c - `sightline corpus build`: the demo corpus (see
 * corpus.h).
 */
#include "cli/commands.h"
#include "corpus/corpus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_corpus_help(FILE *out) {
    fputs("usage: sightline corpus build [--data DIR] --out DIR [--seed N] [--train N]\n"
          "                              [--val N] [--test N] [--scenes N] [--size PX]\n"
          "                              [--quality Q] [--quiet]\n"
          "\n"
          "Build the demo image-caption corpus from emoji pictures fetched by\n"
          "scripts/fetch-demo-data: single emoji on generated backgrounds with 5 captions\n"
          "each (OUT/dataset_emoji.json, Karpathy format; images under OUT/images/),\n"
          "2-4 emoji scenes in Flickr30K Entities format (OUT/entities/), all training\n"
          "captions in OUT/captions_train.txt, licences in OUT/LICENSES.md and\n"
          "OUT/ATTRIBUTION.txt. Train and val show Noto emoji, test Twemoji.\n"
          "The same seed gives the same files.\n"
          "\n"
          "  --data DIR     the fetched packages (default $SL_DATA_DIR, else data/)\n"
          "  --out DIR      output folder (created)\n"
          "  --seed N       random seed (default 1)\n"
          "  --train N      training images (default 10000)\n"
          "  --val N        validation images (default 1000)\n"
          "  --test N       test images (default 1000)\n"
          "  --scenes N     scenes in all, 80/10/10 train/val/test (default 2000)\n"
          "  --size PX      image side (default 224)\n"
          "  --quality Q    JPEG quality (default 90)\n"
          "  --quiet        no progress\n",
          out);
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sightline corpus: %s wants an integer in %ld..%ld, got '%s'\n", opt, lo,
                hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

int sl_cmd_corpus(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        sl_cmd_corpus_help(stdout);
        return SL_EXIT_OK;
    }
    if (argc < 2 || strcmp(argv[1], "build")) {
        sl_cmd_corpus_help(stderr);
        return SL_EXIT_USAGE;
    }
    const char *env = getenv("SL_DATA_DIR");
    sl_corpus_opts o = {.data_dir = env && *env ? env : "data",
                        .seed = 1,
                        .n_train = 10000,
                        .n_val = 1000,
                        .n_test = 1000,
                        .n_scenes = 2000,
                        .size = 224,
                        .quality = 90};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sl_cmd_corpus_help(stdout);
            return SL_EXIT_OK;
        }
        if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sightline corpus: unknown argument or missing value: '%s'\n", a);
            return SL_EXIT_USAGE;
        }
        const char *v = argv[++i];
        long n;
        if (!strcmp(a, "--data"))
            o.data_dir = v;
        else if (!strcmp(a, "--out"))
            o.out_dir = v;
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "sightline corpus: --seed wants a non-negative integer\n");
                return SL_EXIT_USAGE;
            }
            o.seed = s;
        } else if (!strcmp(a, "--train") || !strcmp(a, "--val") || !strcmp(a, "--test") ||
                   !strcmp(a, "--scenes")) {
            if (!parse_int(a, v, 0, 10000000, &n)) return SL_EXIT_USAGE;
            if (a[2] == 't' && a[3] == 'r')
                o.n_train = (int)n;
            else if (a[2] == 'v')
                o.n_val = (int)n;
            else if (a[2] == 't')
                o.n_test = (int)n;
            else
                o.n_scenes = (int)n;
        } else if (!strcmp(a, "--size")) {
            if (!parse_int(a, v, 64, 1024, &n)) return SL_EXIT_USAGE;
            o.size = (int)n;
        } else if (!strcmp(a, "--quality")) {
            if (!parse_int(a, v, 1, 100, &n)) return SL_EXIT_USAGE;
            o.quality = (int)n;
        } else {
            fprintf(stderr, "sightline corpus: unknown argument '%s'\n", a);
            return SL_EXIT_USAGE;
        }
    }
    if (!o.out_dir) {
        fprintf(stderr, "sightline corpus build: --out DIR is required\n");
        return SL_EXIT_USAGE;
    }
    sl_corpus_stats s;
    sl_status st = sl_corpus_build(&o, &s);
    if (st) {
        fprintf(stderr, "sightline corpus: %s\n", sl_last_error());
        return SL_EXIT_FAILED;
    }
    printf("emoji: %zu kept of %zu (left out: %zu flags, %zu components, %zu keycaps, %zu "
           "skin-tone variants, %zu without both PNGs)\n",
           s.n_emoji, s.n_entries, s.ex_flag, s.ex_component, s.ex_keycap, s.ex_skin, s.ex_noimg);
    printf("packages: emoji-datasource-google %s, emoji-datasource-twitter %s, emojibase-data %s\n",
           s.versions[0], s.versions[1], s.versions[2]);
    printf("images: train %zu, val %zu, test %zu (%zu captions)\n", s.images[0], s.images[1],
           s.images[2], s.captions[0] + s.captions[1] + s.captions[2]);
    printf("scenes: train %zu, val %zu, test %zu (%zu objects)\n", s.scenes[0], s.scenes[1],
           s.scenes[2], s.objects);
    printf("wrote %.1f MB to %s in %.1f s\n", (double)s.bytes / 1e6, o.out_dir, s.seconds);
    return SL_EXIT_OK;
}
