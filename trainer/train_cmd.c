/*
 * trainer/train_cmd.c - `sightline train`: contrastive training from a
 * preset (see trainer/train.h).
 */
#include "cli/commands.h"
#include "sightline/encoder.h"
#include "trainer/train.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_train_help(FILE *out) {
    fputs("usage: sightline train --config etc/train/NAME.json --data FILE --out DIR [options]\n"
          "\n"
          "Train a CLIP-style model contrastively (AdamW, warmup + cosine schedule).\n"
          "The config holds the architecture (Hugging Face config names), a \"tokenizer\"\n"
          "directory and a \"train\" object of defaults; flags override them.\n"
          "\n"
          "data:\n"
          "  --data SPEC       Karpathy JSON (.json), TSV (path<TAB>caption), a webdataset\n"
          "                    shard (.tar) or a folder of shards; several joined by ','\n"
          "  --images DIR      image folder for Karpathy / TSV paths\n"
          "  --split NAME      Karpathy split (default train)\n"
          "  --no-augment      plain CLIP preprocessing (no random resized crop)\n"
          "  --no-shuffle      keep the file order\n"
          "  --threads N       decoding threads (default 2)\n"
          "model and schedule:\n"
          "  --init MODEL      start from a Hugging Face model directory (and its tokenizer)\n"
          "  --tokenizer DIR   vocab.json + merges.txt\n"
          "  --resume DIR      continue bit-exactly from a checkpoint (step-N or OUT)\n"
          "  --steps N         total optimizer steps\n"
          "  --batch N         pairs per micro-batch\n"
          "  --accum K         micro-batches per step (gradients averaged)\n"
          "  --lr X            peak learning rate\n"
          "  --warmup N        linear warmup steps\n"
          "  --weight-decay X  AdamW decay on weight matrices (default 0.2)\n"
          "  --grad-clip X     global gradient-norm clip (0: off)\n"
          "  --seed N          init, shuffle and augmentation seed\n"
          "  --device NAME     cpu (default); cuda[:N]: each step on CUDA device N in BF16\n"
          "                    mixed precision (F32 master weights); cuda-f32[:N]: in F32;\n"
          "                    --accum 1 only on a GPU for now\n"
          "several GPUs (one process per GPU, NCCL; rank 0 logs, evaluates, checkpoints):\n"
          "  mpirun -np G sightline train --device cuda ...   (ranks from Open MPI), or\n"
          "  SL_RANK=r SL_WORLD_SIZE=G sightline train --device cuda --dist-file F ...\n"
          "  --dist-file F     file on a filesystem every rank sees, for the NCCL id\n"
          "                    (default $SL_DIST_FILE); --batch is per rank\n"
          "output:\n"
          "  --out DIR         checkpoints step-N/ (HF layout + trainer_state.safetensors),\n"
          "                    latest, train_log.jsonl\n"
          "  --save-every N    checkpoint period in steps (always at the end)\n"
          "  --keep K          checkpoints kept (default 3)\n"
          "  --eval-every N --eval-data FILE.json   retrieval R@1/5/10 on a Karpathy split\n"
          "  --eval-split NAME (default test)\n"
          "  --stop-after N    stop after step N (with a checkpoint); the schedule keeps --steps\n"
          "  --quiet           no progress line\n"
          "config only (\"train\" object): augmentation (crop_scale, color_jitter, blur_sigma,\n"
          "  blur_p, posterize_p, grayscale_p, filter_p and filter_k: a random k x k texture\n"
          "  filter, k odd up to filter_k (default 5), flip_p: mirror picture and caption,\n"
          "  left <-> right) and the dense patch-level objective\n"
          "  (dense_weight: its weight beside the global loss, 0 off; dense_beta: how sharply\n"
          "  it pools over patches, default 10; CPU only for now)\n"
          "\n"
          "Images that fail to load are skipped with a warning and counted; the exit code\n"
          "is then 3. --resume takes the hyper-parameters recorded in the checkpoint unless\n"
          "flags override them, and continues bit-exactly with the same ones; --threads,\n"
          "--keep and --eval-every are not recorded (give them again).\n",
          out);
}

static int num_i64(const char *s, const char *flag, long long lo, long long hi, int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "sightline train: %s: invalid value '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int num_dbl(const char *s, const char *flag, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < 0) {
        fprintf(stderr, "sightline train: %s: invalid value '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int sl_cmd_train(int argc, char **argv) {
    enum {
        O_CONFIG = 256,
        O_DATA,
        O_IMAGES,
        O_SPLIT,
        O_OUT,
        O_INIT,
        O_RESUME,
        O_TOK,
        O_STEPS,
        O_BATCH,
        O_ACCUM,
        O_LR,
        O_WARMUP,
        O_SEED,
        O_THREADS,
        O_NOAUG,
        O_NOSHUF,
        O_EVERY,
        O_EVDATA,
        O_EVSPLIT,
        O_KEEP,
        O_SAVE,
        O_STOP,
        O_WD,
        O_CLIP,
        O_QUIET,
        O_DEVICE,
        O_DIST_FILE,
        O_HELP
    };
    static const struct option lo[] = {{"config", required_argument, 0, O_CONFIG},
                                       {"data", required_argument, 0, O_DATA},
                                       {"images", required_argument, 0, O_IMAGES},
                                       {"split", required_argument, 0, O_SPLIT},
                                       {"out", required_argument, 0, O_OUT},
                                       {"init", required_argument, 0, O_INIT},
                                       {"resume", required_argument, 0, O_RESUME},
                                       {"tokenizer", required_argument, 0, O_TOK},
                                       {"steps", required_argument, 0, O_STEPS},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"accum", required_argument, 0, O_ACCUM},
                                       {"lr", required_argument, 0, O_LR},
                                       {"warmup", required_argument, 0, O_WARMUP},
                                       {"seed", required_argument, 0, O_SEED},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"no-augment", no_argument, 0, O_NOAUG},
                                       {"no-shuffle", no_argument, 0, O_NOSHUF},
                                       {"eval-every", required_argument, 0, O_EVERY},
                                       {"eval-data", required_argument, 0, O_EVDATA},
                                       {"eval-split", required_argument, 0, O_EVSPLIT},
                                       {"keep", required_argument, 0, O_KEEP},
                                       {"save-every", required_argument, 0, O_SAVE},
                                       {"stop-after", required_argument, 0, O_STOP},
                                       {"weight-decay", required_argument, 0, O_WD},
                                       {"grad-clip", required_argument, 0, O_CLIP},
                                       {"quiet", no_argument, 0, O_QUIET},
                                       {"device", required_argument, 0, O_DEVICE},
                                       {"dist-file", required_argument, 0, O_DIST_FILE},
                                       {"help", no_argument, 0, O_HELP},
                                       {0, 0, 0, 0}};
    sl_train_opts o;
    sl_train_opts_init(&o);
    optind = 1;
    opterr = 0;
    int c, bad = 0;
    int64_t v;
    const long long BIG = (long long)1 << 40;
    while (!bad && (c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
            case O_CONFIG:
                o.config = optarg;
                break;
            case O_DATA:
                o.data = optarg;
                break;
            case O_IMAGES:
                o.images = optarg;
                break;
            case O_SPLIT:
                o.split = optarg;
                break;
            case O_OUT:
                o.out = optarg;
                break;
            case O_INIT:
                o.init = optarg;
                break;
            case O_RESUME:
                o.resume = optarg;
                break;
            case O_TOK:
                o.tokenizer = optarg;
                break;
            case O_EVDATA:
                o.eval_data = optarg;
                break;
            case O_EVSPLIT:
                o.eval_split = optarg;
                break;
            case O_STEPS:
                bad = num_i64(optarg, "--steps", 1, BIG, &o.steps);
                break;
            case O_WARMUP:
                bad = num_i64(optarg, "--warmup", 0, BIG, &o.warmup);
                break;
            case O_SEED:
                bad = num_i64(optarg, "--seed", 0, BIG, &o.seed);
                break;
            case O_EVERY:
                bad = num_i64(optarg, "--eval-every", 0, BIG, &o.eval_every);
                break;
            case O_SAVE:
                bad = num_i64(optarg, "--save-every", 0, BIG, &o.save_every);
                break;
            case O_STOP:
                bad = num_i64(optarg, "--stop-after", 0, BIG, &o.stop_after);
                break;
            case O_BATCH:
                if (!(bad = num_i64(optarg, "--batch", 1, 65536, &v))) o.batch = (int)v;
                break;
            case O_ACCUM:
                if (!(bad = num_i64(optarg, "--accum", 1, 65536, &v))) o.accum = (int)v;
                break;
            case O_THREADS:
                if (!(bad = num_i64(optarg, "--threads", 0, 256, &v))) o.threads = (int)v;
                break;
            case O_KEEP:
                if (!(bad = num_i64(optarg, "--keep", 1, 1000000, &v))) o.keep = (int)v;
                break;
            case O_LR:
                bad = num_dbl(optarg, "--lr", &o.lr);
                break;
            case O_WD:
                bad = num_dbl(optarg, "--weight-decay", &o.weight_decay);
                break;
            case O_CLIP:
                bad = num_dbl(optarg, "--grad-clip", &o.grad_clip);
                break;
            case O_NOAUG:
                o.augment = 0;
                break;
            case O_NOSHUF:
                o.shuffle = 0;
                break;
            case O_QUIET:
                o.quiet = 1;
                break;
            case O_DEVICE: {
                int cuda, bf16;
                if (sl_device_parse(optarg, &cuda, &bf16)) {
                    fprintf(stderr, "sightline train: %s\n", sl_last_error());
                    bad = 1;
                } else {
                    o.device = optarg;
                }
                break;
            }
            case O_DIST_FILE:
                o.dist_file = optarg;
                break;
            case 'h':
            case O_HELP:
                sl_cmd_train_help(stdout);
                return SL_EXIT_OK;
            default:
                fprintf(stderr, "sightline train: unknown or incomplete option '%s'\n",
                        argv[optind - 1]);
                bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "sightline train: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && (!o.data || (!o.out && !o.resume) || (!o.config && !o.resume && !o.init))) {
        fprintf(stderr, "sightline train: --data, --out and --config (or --init/--resume) are "
                        "required\n");
        bad = 1;
    }
    if (!bad && o.eval_every > 0 && !o.eval_data) {
        fprintf(stderr, "sightline train: --eval-every needs --eval-data\n");
        bad = 1;
    }
    if (bad) {
        sl_cmd_train_help(stderr);
        return SL_EXIT_USAGE;
    }
    sl_train_result r;
    sl_status st = sl_train_run(&o, &r);
    if (st) {
        fprintf(stderr, "sightline train: %s\n", sl_last_error());
        return SL_EXIT_FAILED;
    }
    if (!o.quiet)
        fprintf(stderr, "sightline train: %lld steps, last loss %.4f, %llu samples skipped\n",
                (long long)r.step, r.last_loss, (unsigned long long)r.skipped);
    return r.skipped ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}
