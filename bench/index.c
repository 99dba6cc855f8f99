/*
 * bench/index.c - the indexer's end-to-end throughput against the encoder's
 * own, side by side in one process.
 *
 * usage: bench_index [--images 2000] [--seed 1] [--rounds 3] [--enc-images 256]
 *                    [--batch 32] [--threads NCPU] [--model DIR] [--data DIR]
 *                    [--python /usr/bin/python3] [--settle 120]
 *
 * It writes a corpus of 640x480 JPEGs (quality 90, 4:2:0, 100 to a folder)
 * drawn deterministically from the seed, and a ViT-B/32-shaped random-weight
 * model (bench/encoder_ref.py's writer, text tower cut to one small layer;
 * --model uses yours). Each round measures, alternately:
 *   A  the encoder alone: sl_encoder_encode_images over --enc-images images
 *      already decoded and preprocessed, in batches of --batch, after one
 *      warm-up batch;
 *   B  `index build` end to end: sl_index_update creating a fresh index over
 *      the corpus folder (walk, hash, decode workers, encode, store commits,
 *      FAISS write), the whole call timed;
 * both with the same thread count, in the order A B A B ... A; each B is
 * set against the mean of the A before and after it. Before each
 * measurement it waits (at most --settle seconds) until other processes use
 * under 0.2 cores, and it reports the cores they used during each (from
 * /proc/stat). It prints medians over rounds, the ratio B / A (target >=
 * 90%), the split of B's wall time between the encoder and the rest, and
 * the single-thread CPU cost of the decode path per image.
 * Without --data, everything generated goes to a temporary folder under
 * /tmp that is removed at the end; with --data DIR it is kept there and
 * reused.
 */
#include "bench/bench_util.h"
#include "sightline/common.h"
#include "sightline/encoder.h"
#include "sightline/image.h"
#include "sightline/indexer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ROUNDS 32

typedef struct decode_cost {
    double read, hash, decode, preprocess; /* seconds per image, one thread */
} decode_cost;

/* Decode and preprocess the first k corpus images into pix [k, 3, S, S],
 * timing each stage of the indexer's per-file path. */
static int predecode(const char *imgdir, int k, int per_dir, const sl_clip_config *c, float *pix,
                     decode_cost *cost) {
    sl_preprocess pp = sl_preprocess_clip(c->image_size);
    memcpy(pp.mean, c->image_mean, sizeof pp.mean);
    memcpy(pp.std, c->image_std, sizeof pp.std);
    sl_decode_opts dopt = {.min_short_side = c->image_size};
    size_t floats = 3 * (size_t)c->image_size * (size_t)c->image_size;
    memset(cost, 0, sizeof *cost);
    for (int i = 0; i < k; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/d%03d/img%06d.jpg", imgdir, i / per_dir, i);
        double t0 = sl_now();
        char *buf;
        size_t len;
        if (sl_read_file(path, (size_t)256 << 20, &buf, &len)) goto fail;
        double t1 = sl_now();
        uint8_t digest[32];
        sl_sha256(buf, len, digest);
        double t2 = sl_now();
        sl_image img;
        sl_status st = sl_image_decode(buf, len, path, &dopt, &img);
        free(buf);
        if (st) goto fail;
        double t3 = sl_now();
        st = sl_image_preprocess(&img, &pp, pix + (size_t)i * floats, NULL);
        sl_image_free(&img);
        if (st) goto fail;
        double t4 = sl_now();
        cost->read += t1 - t0;
        cost->hash += t2 - t1;
        cost->decode += t3 - t2;
        cost->preprocess += t4 - t3;
    }
    cost->read /= k;
    cost->hash /= k;
    cost->decode /= k;
    cost->preprocess /= k;
    return 0;
fail:
    fprintf(stderr, "bench_index: %s\n", sl_last_error());
    return -1;
}

/* A: images/s of the encoder alone over pix [k, ...] in batches. */
static double run_encoder(const char *model, const float *pix, int k, int batch, int threads) {
    sl_encoder *enc;
    sl_encoder_opts eo = {.threads = threads};
    if (sl_encoder_open(model, &eo, &enc)) {
        fprintf(stderr, "bench_index: %s\n", sl_last_error());
        return -1;
    }
    const sl_clip_config *c = sl_encoder_config(enc);
    size_t floats = 3 * (size_t)c->image_size * (size_t)c->image_size;
    float *out = malloc(sizeof(float) * (size_t)batch * (size_t)c->embed_dim);
    double t = -1;
    if (out && !sl_encoder_encode_images(enc, pix, (size_t)batch, out, NULL, 1)) { /* warm-up */
        double t0 = sl_now();
        int i = 0;
        for (; i < k; i += batch) {
            size_t n = (size_t)(k - i < batch ? k - i : batch);
            if (sl_encoder_encode_images(enc, pix + (size_t)i * floats, n, out, NULL, 1)) break;
        }
        if (i >= k) t = sl_now() - t0;
    }
    if (t < 0) fprintf(stderr, "bench_index: %s\n", sl_last_error());
    free(out);
    sl_encoder_free(enc);
    return t > 0 ? k / t : -1;
}

typedef struct build_result {
    double per_s;       /* images added per second of the whole call */
    double seconds;     /* wall time of the call */
    double enc_seconds; /* of which in the encoder */
    double cpu_seconds; /* process CPU time during the call */
} build_result;

/* B: a fresh `index build` over imgdir. */
static int run_build(const char *model, const char *imgdir, const char *index, int n, int batch,
                     int threads, build_result *r) {
    if (bench_rm_rf(index)) {
        fprintf(stderr, "bench_index: cannot remove %s\n", index);
        return -1;
    }
    const char *srcs[1] = {imgdir};
    sl_index_opts o = {.index_dir = index,
                       .model = model,
                       .sources = srcs,
                       .n_sources = 1,
                       .create = 1,
                       .threads = threads,
                       .batch = batch,
                       .quiet = 1};
    sl_index_summary s;
    double c0 = bench_cpu_seconds();
    sl_status st = sl_index_update(&o, &s);
    double cpu = bench_cpu_seconds() - c0;
    if (st) {
        fprintf(stderr, "bench_index: index build: %s\n", sl_last_error());
        return -1;
    }
    int ok = s.added == (uint64_t)n && s.failed == 0;
    if (!ok)
        fprintf(stderr, "bench_index: index build added %llu of %d images, %llu failed\n",
                (unsigned long long)s.added, n, (unsigned long long)s.failed);
    r->seconds = s.seconds;
    r->enc_seconds = s.encode_seconds;
    r->per_s = (double)s.added / s.seconds;
    r->cpu_seconds = cpu;
    sl_index_summary_free(&s);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *py = "/usr/bin/python3";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nimg = 2000, rounds = 3, kenc = 256, batch = 32, threads = ncpu > 0 ? (int)ncpu : 1;
    unsigned long long seed = 1;
    double settle = 120;
    const int per_dir = 100, W = 640, H = 480, Q = 90;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--images"))
            nimg = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--enc-images"))
            kenc = atoi(v);
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--python"))
            py = v;
        else if (!strcmp(a, "--settle"))
            settle = atof(v);
        else
            goto usage;
        i++;
    }
    if (nimg < 1 || rounds < 1 || rounds > MAX_ROUNDS || kenc < 1 || batch < 1 || threads < 1)
        goto usage;
    if (kenc > nimg) kenc = nimg;

    /* where the corpus, the model and the index go */
    char tmp[256] = "", imgdir[4096], index[4096], modeldir[4096];
    if (!data) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_index.XXXXXX");
        if (!mkdtemp(tmp)) return 1;
        data = tmp;
    } else if (mkdir(data, 0755) && access(data, W_OK)) {
        fprintf(stderr, "bench_index: cannot use %s\n", data);
        return 1;
    }
    snprintf(imgdir, sizeof imgdir, "%s/images", data);
    snprintf(index, sizeof index, "%s/index", data);
    snprintf(modeldir, sizeof modeldir, "%s/model-vitb32", data);
    int rc = 1;
    float *pix = NULL;
    double t0 = sl_now();
    uint64_t bytes = 0;
    if (bench_make_jpegs(imgdir, nimg, per_dir, W, H, Q, seed, &bytes)) {
        fprintf(stderr, "bench_index: writing the corpus failed\n");
        goto out;
    }
    fprintf(stderr, "corpus ready in %.1f s: %d JPEGs under %s\n", sl_now() - t0, nimg, imgdir);
    if (!model) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/config.json", modeldir);
        if (access(cfg, R_OK)) {
            fprintf(stderr, "writing a ViT-B/32-shaped random model into %s\n", modeldir);
            if (bench_write_model(py, modeldir,
                                  "{\"t_width\": 64, \"t_layers\": 1, \"t_heads\": 1, "
                                  "\"t_mlp\": 128}"))
                goto out;
        }
        model = modeldir;
    }
    sl_log_set_level(SL_LOG_WARN);

    /* the model's shape, then the encoder's input decoded once */
    sl_encoder *enc;
    if (sl_encoder_open(model, NULL, &enc)) {
        fprintf(stderr, "bench_index: %s\n", sl_last_error());
        goto out;
    }
    sl_clip_config c = *sl_encoder_config(enc);
    sl_encoder_free(enc);
    size_t floats = 3 * (size_t)c.image_size * (size_t)c.image_size;
    pix = malloc(sizeof(float) * floats * (size_t)kenc);
    decode_cost dc;
    if (!pix || predecode(imgdir, kenc, per_dir, &c, pix, &dc)) goto out;

    /* A B A B ... A, each started once other processes leave the cores; each
     * B is compared with the mean of the two A around it */
    double a[MAX_ROUNDS + 1], acpu[MAX_ROUNDS + 1], oth_a[MAX_ROUNDS + 1], b[MAX_ROUNDS],
        ratio[MAX_ROUNDS], encshare[MAX_ROUNDS], encrate[MAX_ROUNDS], bcpu[MAX_ROUNDS],
        oth_b[MAX_ROUNDS], load[MAX_ROUNDS], bsec[MAX_ROUNDS];
    double l0 = bench_load1();
    for (int r = 0; r <= rounds; r++) {
        bench_others oa, ob;
        bench_settle(settle, 0.2);
        bench_others_begin(&oa);
        double c0 = bench_cpu_seconds(), w0 = sl_now();
        a[r] = run_encoder(model, pix, kenc, batch, threads);
        if (a[r] <= 0) goto out;
        acpu[r] = (bench_cpu_seconds() - c0) / (sl_now() - w0);
        oth_a[r] = bench_others_end(&oa);
        fprintf(stderr, "A%d: encoder %.2f img/s (%.2f cores; others %.2f)\n", r + 1, a[r], acpu[r],
                oth_a[r]);
        if (r == rounds) break;
        build_result br;
        bench_settle(settle, 0.2);
        bench_others_begin(&ob);
        if (run_build(model, imgdir, index, nimg, batch, threads, &br)) goto out;
        oth_b[r] = bench_others_end(&ob);
        b[r] = br.per_s;
        bsec[r] = br.seconds;
        encshare[r] = br.enc_seconds / br.seconds;
        encrate[r] = nimg / br.enc_seconds;
        bcpu[r] = br.cpu_seconds / br.seconds;
        load[r] = 0.5 * (l0 + bench_load1());
        l0 = bench_load1();
        fprintf(stderr,
                "B%d: index build %.2f img/s (%.1f s; %.2f cores; others %.2f); encoder %.1f%% "
                "of build wall (%.2f img/s inside it); load %.2f\n",
                r + 1, b[r], br.seconds, bcpu[r], oth_b[r], 100 * encshare[r], encrate[r], load[r]);
    }
    for (int r = 0; r < rounds; r++) {
        ratio[r] = b[r] / (0.5 * (a[r] + a[r + 1]));
        fprintf(stderr, "round %d: B / mean(A before, A after) = %.1f%%\n", r + 1, 100 * ratio[r]);
    }

    double per_img = dc.read + dc.hash + dc.decode + dc.preprocess;
    double am = bench_median(a, rounds + 1), bm = bench_median(b, rounds);
    printf("indexer pipeline vs encoder, batch %d, %d threads, %d rounds A B ... A alternated "
           "(medians)\n",
           batch, threads, rounds);
    printf("model: image W%d L%d H%d, %d px / patch %d, embed %d\n", c.vision.width,
           c.vision.layers, c.vision.heads, c.image_size, c.patch_size, c.embed_dim);
    printf("corpus: %d JPEGs %dx%d q%d 4:2:0 in %d folders, mean %.1f KB\n", nimg, W, H, Q,
           (nimg + per_dir - 1) / per_dir, (double)bytes / nimg / 1024.0);
    printf("%-44s %10s\n", "", "images/s");
    printf("%-44s %10.2f\n", "A  encoder alone (preprocessed tensors)", am);
    printf("%-44s %10.2f\n", "B  index build, end to end", bm);
    printf("%-44s %9.1f%%   (target >= 90%%)\n", "B / A", 100 * bench_median(ratio, rounds));
    printf("build wall %.1f s: encoder %.1f%% of it (%.2f img/s while encoding)\n",
           bench_median(bsec, rounds), 100 * bench_median(encshare, rounds),
           bench_median(encrate, rounds));
    printf("cores this process kept busy: A %.2f, B %.2f; other processes: A %.2f, B %.2f\n",
           bench_median(acpu, rounds + 1), bench_median(bcpu, rounds),
           bench_median(oth_a, rounds + 1), bench_median(oth_b, rounds));
    printf("decode path per image, 1 thread: read %.2f + sha256 %.2f + decode %.2f + "
           "preprocess %.2f = %.2f ms CPU\n",
           1e3 * dc.read, 1e3 * dc.hash, 1e3 * dc.decode, 1e3 * dc.preprocess, 1e3 * per_img);
    printf("encoder per image: %.2f ms wall x %d threads = %.2f ms CPU; decode path = %.1f%% "
           "of the CPU per image\n",
           1e3 / am, threads, 1e3 * threads / am, 100 * per_img / (per_img + threads / am));
    printf("load average during the rounds: median %.2f (%d cores)\n", bench_median(load, rounds),
           (int)ncpu);
    rc = 0;
out:
    free(pix);
    if (*tmp && bench_rm_rf(tmp)) fprintf(stderr, "bench_index: could not remove %s\n", tmp);
    return rc;
usage:
    fprintf(stderr, "usage: bench_index [--images N] [--seed N] [--rounds N] [--enc-images N] "
                    "[--batch N] [--threads N] [--model DIR] [--data DIR] [--python PY] "
                    "[--settle S]\n");
    return 2;
}
