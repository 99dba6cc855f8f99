/*
 * corpus/corpus.h - the demo corpus builder behind `sightline corpus build`:
 * emoji images (Noto emoji and Twemoji 64-px PNGs from the npm packages
 * emoji-datasource-google/-twitter, labels and tags from emojibase-data)
 * composed onto generated backgrounds into
 *   OUT/images/{train,val,test}/   single-emoji JPEGs
 *   OUT/dataset_emoji.json              Karpathy split file, 5 captions each
 *   OUT/captions_train.txt              every training caption, one a line
 *   OUT/entities/{Sentences,Annotations,images}/, {train,val,test}.txt
 *                                       2-4 emoji scenes, Flickr30K Entities
 *   OUT/LICENSES.md, OUT/ATTRIBUTION.txt, OUT/manifest.json
 * Train and val use the google (Noto) set, test the twitter set. Everything
 * is a function of the inputs and the seed: the same seed gives the same
 * bytes whatever the thread count.
 *
 * Data layout (what scripts/fetch-demo-data extracts):
 *   DATA/emoji-datasource-google/{emoji.json,package.json,img/google/64/<x>.png}
 *   DATA/emoji-datasource-twitter/{package.json,img/twitter/64/<x>.png}
 *   DATA/emojibase-data/{package.json,en/data.json}
 * Left out: flags, skin-tone variants, keycaps, components (skin tone
 * modifiers, hair components, regional indicators) and emoji without a PNG
 * in both sets. PNGs are read as RGBA with libpng here (sl_image_load
 * composites alpha on white, the builder needs the alpha).
 */
#ifndef SL_CORPUS_H
#define SL_CORPUS_H

#include "sightline/common.h"

typedef struct sl_corpus_opts {
    const char *data_dir; /* the fetched packages */
    const char *out_dir;  /* created when missing */
    uint64_t seed;
    int n_train, n_val, n_test; /* single-emoji images per split */
    int n_scenes;               /* scenes in all: 80% train, 10% val, 10% test */
    int size;                   /* image side in pixels (64..1024) */
    int quality;                /* JPEG quality (0 = 90) */
    int quiet;                  /* no progress lines */
} sl_corpus_opts;

enum { SL_CORPUS_TRAIN = 0, SL_CORPUS_VAL, SL_CORPUS_TEST, SL_CORPUS_NSPLITS };

typedef struct sl_corpus_stats {
    size_t n_entries;    /* top-level entries of emoji.json */
    size_t n_emoji;      /* kept */
    size_t ex_flag;      /* left out: flags (incl. regional indicators) */
    size_t ex_skin;      /* left out: skin-tone variants */
    size_t ex_keycap;    /* left out: keycaps */
    size_t ex_component; /* left out: components */
    size_t ex_noimg;     /* left out: a PNG missing in either set */
    size_t n_nolabel;    /* kept with the emoji.json name (no emojibase label) */
    size_t images[SL_CORPUS_NSPLITS];
    size_t captions[SL_CORPUS_NSPLITS];
    size_t scenes[SL_CORPUS_NSPLITS];
    size_t objects; /* emoji placed in scenes */
    uint64_t bytes; /* written */
    double seconds;
    char versions[3][32]; /* google, twitter, emojibase-data */
} sl_corpus_stats;

/* Build the corpus. Errors: SL_ERR_INVALID (options), SL_ERR_NOT_FOUND
 * (data files), SL_ERR_FORMAT/SL_ERR_LIMIT (JSON, PNG), SL_ERR_IO,
 * SL_ERR_NOMEM, SL_ERR_EXTERNAL (TurboJPEG). */
sl_status sl_corpus_build(const sl_corpus_opts *opts, sl_corpus_stats *stats);

#endif
