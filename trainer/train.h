/*
 * trainer/train.h - the training driver behind `sightline train`: model
 * (fresh from a preset, --init, or --resume), tokenizer, data loader, AdamW
 * with warmup + cosine, gradient accumulation, checkpoints with bit-exact
 * resume, progress line, JSON Lines log, optional retrieval eval.
 *
 * Checkpoints: OUT/step-N/ holds the model in the Hugging Face layout
 * (config.json, preprocessor_config.json, model.safetensors, vocab.json,
 * merges.txt) plus trainer_state.safetensors: adam.m, adam.v (F32, parameter
 * layout), step, data_position, seed, skipped (I64), and the run's
 * hyper-parameters as metadata "train_config" (JSON). The augmentation and
 * shuffle generators are functions of (seed, stream position), so the seed
 * and the data position are the whole RNG state. The data position counts
 * samples of the whole stream: a data-parallel group of G ranks resumes
 * with each rank at 1/G of it (G must divide it). In a group, a failure on
 * one rank (loading a batch, rank 0's evals and checkpoints, set-up) stops
 * every rank at the next agreed point instead of leaving them waiting in a
 * collective. A checkpoint is written
 * to a temporary directory and renamed into place; OUT/latest names the
 * newest (atomic write); only the last `keep` are kept.
 *
 * With a CUDA device the step (forward, loss, backward, AdamW) runs on the
 * GPU (BF16 mixed precision, or F32 with cuda-f32), on one rank or as one
 * of a data-parallel group (see `device` below); parameters, moments and the step count are copied back to the CPU
 * model and optimizer before an eval or a checkpoint, so both (and resume)
 * are the CPU path's. A device that cannot be used fails before anything
 * is read or written.
 */
#ifndef SL_TRAINER_TRAIN_H
#define SL_TRAINER_TRAIN_H

#include "sightline/common.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Options; numeric fields < 0 (NAN for doubles) mean "not given": the
 * resumed state's value, else the config's "train" object, else the
 * built-in default. */
typedef struct sl_train_opts {
    const char *config;     /* preset JSON (HF architecture fields + "train" + "tokenizer") */
    const char *data;       /* dataset spec (see sl_dataset_add) */
    const char *images;     /* image directory for Karpathy / TSV */
    const char *split;      /* Karpathy split (default "train") */
    const char *out;        /* output directory */
    const char *init;       /* HF model directory to start from */
    const char *resume;     /* step directory or an output directory with `latest` */
    const char *tokenizer;  /* directory with vocab.json + merges.txt */
    const char *eval_data;  /* Karpathy JSON for --eval-every */
    const char *eval_split; /* default "test" */
    int64_t steps;          /* total optimizer steps (the schedule's length) */
    int64_t stop_after;     /* stop (with a checkpoint) after this step; < 0: at `steps` */
    int batch;              /* pairs per micro-batch */
    int accum;              /* micro-batches per step */
    double lr;
    int64_t warmup;
    int64_t seed;
    int threads;
    int augment; /* 0/1, -1 unset */
    int shuffle; /* 0/1, -1 unset */
    int64_t eval_every;
    int64_t save_every;
    int keep;
    double weight_decay, beta1, beta2, eps, grad_clip;
    int quiet;
    const char *device;    /* NULL or "cpu": the CPU; "cuda[:N]": each step on CUDA device N
                              in BF16 mixed precision, "cuda-f32[:N]": in F32
                              (trainer/model_gpu.h); accum 1 only (SL_ERR_UNSUPPORTED
                              otherwise). Under mpirun or with SL_RANK / SL_WORLD_SIZE
                              (trainer/dist.h) each rank trains on its share of the global
                              batch (batch pairs per rank) on its local device unless
                              N is given; rank 0 logs, evaluates and checkpoints. */
    const char *dist_file; /* NCCL id file shared by the ranks (trainer/dist.h) */
} sl_train_opts;

/* Every field "not given". */
void sl_train_opts_init(sl_train_opts *o);

typedef struct sl_train_result {
    int64_t step;      /* steps done at the end */
    double last_loss;  /* mean loss of the last step */
    uint64_t skipped;  /* samples skipped (bad images) */
    double eval_r1[2]; /* last eval R@1 (i2t, t2i), -1 when none */
} sl_train_result;

sl_status sl_train_run(const sl_train_opts *o, sl_train_result *res);

#ifdef __cplusplus
}
#endif

#endif
