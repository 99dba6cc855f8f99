/*
 * tests/testmodel.h - the small CLIP architecture the training tests build
 * (random init through sl_train_model_create): the towers as given, 16 px
 * images in patches of 4, context 8, vocabulary 50 with the end token 49
 * (end-of-text pooling), 12-dimensional embeddings, mean 0.5 / std 0.25.
 */
#ifndef SL_TESTMODEL_H
#define SL_TESTMODEL_H

#include "sightline/encoder.h"

#include <string.h>

static inline sl_clip_config sl_test_clip_config(sl_tower_config vision, sl_tower_config text) {
    sl_clip_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vision = vision;
    cfg.text = text;
    cfg.image_size = 16;
    cfg.patch_size = 4;
    cfg.context_length = 8;
    cfg.vocab_size = 50;
    cfg.embed_dim = 12;
    cfg.eos_token_id = 49;
    cfg.pool_argmax = 0;
    for (int c = 0; c < 3; c++) cfg.image_mean[c] = 0.5f, cfg.image_std[c] = 0.25f;
    return cfg;
}

#endif
