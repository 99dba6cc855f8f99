/*
 * trainer/data.h - image-caption datasets for training and the batch loader.
 *
 * Sources (one sample per image-caption pair):
 *   Karpathy JSON (dataset_coco.json ...): one pair per kept caption of the
 *     chosen split(s); images under an images directory.
 *   TSV: "path<TAB>caption" per line (path relative to the images directory
 *     unless absolute; blank lines and lines starting with '#' skipped).
 *   webdataset tar shards: members sharing a key (the path up to the first
 *     '.' of its base name) pair an image (.jpg/.jpeg/.png/.webp) with a
 *     caption (.txt). POSIX (ustar) headers are parsed strictly: checksum,
 *     octal fields, sizes bounded, members inside the file; a bad header or
 *     a truncated member is an error naming the shard and the member.
 *
 * The loader decodes and preprocesses on worker threads ahead of the
 * consumer (a bounded window of samples). Sample k of the stream is
 * position k: epoch k / N, item perm_epoch[k % N] (a seeded shuffle per
 * epoch, identity with shuffle off); its augmentation draws from an RNG
 * seeded by (seed, k) alone, so batches depend only on the seed and the
 * start position, never on thread timing or count. A sample that fails
 * (unreadable, undecodable image) is skipped with a warning and counted;
 * the batch takes the next positions.
 */
#ifndef SL_TRAINER_DATA_H
#define SL_TRAINER_DATA_H

#include "sightline/common.h"
#include "sightline/encoder.h"
#include "sightline/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_TAR_MAX_MEMBER   (256u << 20) /* bytes per tar member */
#define SL_TAR_MAX_CAPTION  (64u << 10)  /* bytes per .txt member */
#define SL_DATA_MAX_SAMPLES 100000000u

typedef struct sl_train_item {
    char *caption; /* UTF-8, owned */
    char *path;    /* image file, owned; NULL for a tar member */
    int shard;     /* tar: index into shards */
    uint64_t off;  /* tar: image bytes at off .. off + size in the shard */
    uint64_t size;
} sl_train_item;

typedef struct sl_train_dataset {
    sl_train_item *items;
    size_t n, cap;
    char **shards; /* tar shard paths */
    int n_shards;
} sl_train_dataset;

void sl_dataset_free(sl_train_dataset *ds);

/* Karpathy JSON: pairs of `split` (NULL: "train"; several joined by ','),
 * up to max_captions per image (0: all, capped at 1000). */
sl_status sl_dataset_add_karpathy(sl_train_dataset *ds, const char *json, const char *images_dir,
                                  const char *split, int max_captions);
/* TSV file. */
sl_status sl_dataset_add_tsv(sl_train_dataset *ds, const char *tsv, const char *images_dir);
/* One webdataset shard. */
sl_status sl_dataset_add_tar(sl_train_dataset *ds, const char *tar);
/* By the name: *.json Karpathy, *.tar a shard, a directory: its *.tar
 * shards (sorted), several joined by ','; anything else TSV. */
sl_status sl_dataset_add(sl_train_dataset *ds, const char *spec, const char *images_dir,
                         const char *split);

/* Augmentation beyond the crop (all off when zero, so the crop alone draws
 * from the sample's RNG exactly as before). Applied to the preprocessed
 * S x S picture in [0, 1] colour space, in this order: colour jitter
 * (brightness, contrast, saturation factors uniform in [1-j, 1+j]; hue is
 * left alone since captions name colours), Gaussian blur (sigma uniform in
 * [0.1, blur_sigma] output pixels) with probability blur_p, posterize (2 to
 * 4 bits per channel) with probability posterize_p, a random texture
 * filter with probability filter_p (one k x k kernel of normal weights, k
 * odd from 3 to filter_k, shared by the channels and signed to keep the low
 * frequencies, each filtered channel rescaled to its input's mean and
 * spread and mixed with it at a uniform ratio: shading and line texture
 * change, shapes and colours stay), grayscale with probability
 * grayscale_p. Then, with probability flip_p, the picture is
 * mirrored left to right and its caption with it (sl_caption_mirror). */
typedef struct sl_augment_opts {
    double crop_scale_min; /* random resized crop area scale lower bound (0: 0.9) */
    double color_jitter;
    double blur_sigma, blur_p;
    double posterize_p;
    double grayscale_p;
    double flip_p;
    double filter_p; /* random texture filter's probability */
    int filter_k;    /* its largest kernel size (odd, 3 to 9) */
} sl_augment_opts;

/* The caption of a picture mirrored left to right: "left" <-> "right" as
 * words or with the endings s, ward(s), most, hand(ed) (left-facing too:
 * the hyphen ends the word; "leftover" and "bright" stay), "clockwise" <->
 * "counterclockwise" (also counter-clockwise, counter clockwise,
 * anticlockwise, anti-clockwise -> clockwise); matched without regard to
 * case, a capital first letter or all capitals kept. Names that merely
 * contain the words ("left luggage") swap too. Returns a new string (free
 * it), NULL when out of memory. */
char *sl_caption_mirror(const char *caption);

/* Apply the photometric part of *a to one normalized CHW picture of S x S
 * (mean/std as preprocessed), drawing from *rng. */
void sl_augment_photometric(const sl_augment_opts *a, uint64_t *rng, float *pixels, int S,
                            const float mean[3], const float std[3]);

/* The loader. */
typedef struct sl_loader_opts {
    int image_size;
    float mean[3], std[3];
    int context_length;
    int augment;         /* random resized crop (ratio 3/4-4/3), else CLIP center crop */
    sl_augment_opts aug; /* with augment: crop scale and the photometric ones */
    int shuffle;
    uint64_t seed;
    int threads;  /* worker threads (0: decode on the caller's thread) */
    int prefetch; /* samples decoded ahead (0: 64) */
    /* Data parallelism: with shard_world > 1 this loader is rank shard_rank's
     * share of one sample stream: its k-th sample is the stream's sample
     * k * shard_world + shard_rank (its item, epoch and augmentation), so B
     * samples on each of the ranks at the same loader position make up B *
     * shard_world consecutive samples of the stream, each once. Positions
     * (create's pos, sl_loader_position) count this loader's samples. */
    int shard_rank, shard_world;
} sl_loader_opts;

typedef struct sl_loader sl_loader;

/* A loader over ds (borrowed, must outlive it) starting at stream position
 * `pos`; tok borrowed (thread-safe). */
sl_status sl_loader_create(const sl_train_dataset *ds, const sl_tokenizer *tok,
                           const sl_loader_opts *o, uint64_t pos, sl_loader **out);
void sl_loader_free(sl_loader *l);

/* Fill B samples: pixels [B, 3, S, S], tokens [B, ctx]. SL_ERR_FORMAT when
 * a whole epoch's worth of consecutive samples failed. */
sl_status sl_loader_next(sl_loader *l, int B, float *pixels, int32_t *tokens);

/* The next stream position to be consumed, and samples skipped so far. */
uint64_t sl_loader_position(const sl_loader *l);
uint64_t sl_loader_skipped(const sl_loader *l);

/* Random resized crop parameters as torchvision (scale, ratio ranges), from
 * the generator state *rng (splitmix64): crop x, y, w, h of a W x H image. */
void sl_random_resized_crop(uint64_t *rng, int W, int H, double smin, double smax, double rmin,
                            double rmax, int *x, int *y, int *w, int *h);

uint64_t sl_splitmix64(uint64_t *state);

#ifdef __cplusplus
}
#endif

#endif
