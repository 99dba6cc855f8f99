/*
 * bench/update_nochange.c - the cost of an `index update` when nothing
 * changed, over a large corpus of small files.
 *
 * usage: bench_update_nochange [--files 100000] [--dirs 100] [--runs 5] [--seed 1]
 *                              [--threads NCPU] [--data DIR] [--model DIR]
 *                              [--cli PATH] [--python /usr/bin/python3]
 *
 * It writes --files 16x16 JPEGs spread over --dirs folders and a tiny
 * random-weight CLIP model (bench/encoder_ref.py's writer: image 32 px,
 * patch 8, width 64, 2 layers; one small text layer), builds an index of
 * them (timed), then times --runs no-change updates through the library
 * (sl_index_update, no model given, as `sightline index update --index X`),
 * the same with the model given (adds its fingerprint), and the same
 * through the `sightline` binary (process start included). Each update must
 * find every file unchanged. Target: median < 5 s.
 * Without --data, everything generated goes to a temporary folder under /tmp
 * that is removed at the end; with --data DIR it is kept there and reused.
 */
#include "bench/bench_util.h"
#include "sightline/common.h"
#include "sightline/indexer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SL_CLI
#define SL_CLI "sightline"
#endif

#define MAX_RUNS 32

/* One sl_index_update; *seconds gets its wall time. `expect_unchanged`
 * (when non-zero) is checked against the summary. */
static int run_update(const char *index, const char *model, const char *imgdir, int create,
                      int threads, uint64_t expect_unchanged, double *seconds) {
    const char *srcs[1] = {imgdir};
    sl_index_opts o = {.index_dir = index,
                       .model = model,
                       .sources = create ? srcs : NULL,
                       .n_sources = create ? 1 : 0,
                       .create = create,
                       .threads = threads,
                       .quiet = 1};
    sl_index_summary s;
    double t0 = sl_now();
    sl_status st = sl_index_update(&o, &s);
    *seconds = sl_now() - t0;
    if (st) {
        fprintf(stderr, "bench_update_nochange: %s\n", sl_last_error());
        return -1;
    }
    int ok = s.failed == 0 && s.removed == 0 &&
             (expect_unchanged ? s.unchanged == expect_unchanged && s.added == 0 && s.updated == 0
                               : s.added == s.seen);
    if (!ok)
        fprintf(stderr,
                "bench_update_nochange: unexpected summary: %llu seen, %llu unchanged, %llu added, "
                "%llu updated, %llu removed, %llu failed\n",
                (unsigned long long)s.seen, (unsigned long long)s.unchanged,
                (unsigned long long)s.added, (unsigned long long)s.updated,
                (unsigned long long)s.removed, (unsigned long long)s.failed);
    sl_index_summary_free(&s);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *py = "/usr/bin/python3", *cli = SL_CLI;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nfiles = 100000, ndirs = 100, runs = 5, threads = ncpu > 0 ? (int)ncpu : 1;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--files"))
            nfiles = atoi(v);
        else if (!strcmp(a, "--dirs"))
            ndirs = atoi(v);
        else if (!strcmp(a, "--runs"))
            runs = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--cli"))
            cli = v;
        else if (!strcmp(a, "--python"))
            py = v;
        else
            goto usage;
        i++;
    }
    if (nfiles < 1 || ndirs < 1 || ndirs > 1000 || runs < 1 || runs > MAX_RUNS || threads < 1)
        goto usage;
    int per_dir = (nfiles + ndirs - 1) / ndirs;

    char tmp[256] = "", imgdir[4096], index[4096], modeldir[4096];
    if (!data) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_update.XXXXXX");
        if (!mkdtemp(tmp)) return 1;
        data = tmp;
    } else if (mkdir(data, 0755) && access(data, W_OK)) {
        fprintf(stderr, "bench_update_nochange: cannot use %s\n", data);
        return 1;
    }
    snprintf(imgdir, sizeof imgdir, "%s/images", data);
    snprintf(index, sizeof index, "%s/index", data);
    snprintf(modeldir, sizeof modeldir, "%s/model-tiny", data);
    int rc = 1;
    double t0 = sl_now();
    uint64_t bytes = 0;
    if (bench_make_jpegs(imgdir, nfiles, per_dir, 16, 16, 90, seed, &bytes)) {
        fprintf(stderr, "bench_update_nochange: writing the corpus failed\n");
        goto out;
    }
    fprintf(stderr, "corpus ready in %.1f s: %d JPEGs under %s\n", sl_now() - t0, nfiles, imgdir);
    if (!model) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/config.json", modeldir);
        if (access(cfg, R_OK)) {
            fprintf(stderr, "writing a tiny random model into %s\n", modeldir);
            if (bench_write_model(py, modeldir,
                                  "{\"v_width\": 64, \"v_layers\": 2, \"v_heads\": 2, "
                                  "\"v_mlp\": 256, \"image_size\": 32, \"patch\": 8, "
                                  "\"t_width\": 32, \"t_layers\": 1, \"t_heads\": 1, "
                                  "\"t_mlp\": 64, \"embed\": 32}"))
                goto out;
        }
        model = modeldir;
    }
    sl_log_set_level(SL_LOG_WARN);

    double load0 = bench_load1(), build_s;
    if (bench_rm_rf(index)) goto out;
    if (run_update(index, model, imgdir, 1, threads, 0, &build_s)) goto out;
    fprintf(stderr, "build: %.1f s\n", build_s);

    /* library, no model; library, model given; binary, no model */
    double lib[MAX_RUNS], libm[MAX_RUNS], bin[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        if (run_update(index, NULL, NULL, 0, threads, (uint64_t)nfiles, &lib[r])) goto out;
        if (run_update(index, model, NULL, 0, threads, (uint64_t)nfiles, &libm[r])) goto out;
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "'%s' index update --index '%s' --quiet >/dev/null", cli, index);
        double b0 = sl_now();
        int st = system(cmd);
        bin[r] = sl_now() - b0;
        if (st != 0) {
            fprintf(stderr, "bench_update_nochange: %s: exit status %d\n", cmd, st);
            goto out;
        }
        fprintf(stderr, "run %d: library %.2f s, library with --model %.2f s, binary %.2f s\n",
                r + 1, lib[r], libm[r], bin[r]);
    }
    double load1 = bench_load1();
    printf("no-change index update, %d files (16x16 JPEG, %.0f bytes each) in %d folders, "
           "%d runs (medians)\n",
           nfiles, (double)bytes / nfiles, ndirs, runs);
    printf("%-44s %9.2f s   (%.0f files/s)\n", "build (tiny model, 32 px, W64 L2)", build_s,
           nfiles / build_s);
    double ml = bench_median(lib, runs), mm = bench_median(libm, runs),
           mb = bench_median(bin, runs);
    printf("%-44s %9.2f s   (%.1f us/file; target < 5 s)\n", "update, library, no model", ml,
           1e6 * ml / nfiles);
    printf("%-44s %9.2f s\n", "update, library, --model given", mm);
    printf("%-44s %9.2f s\n", "update, sightline binary", mb);
    printf("load average: %.2f before the build, %.2f after the runs (%d cores)\n", load0, load1,
           (int)ncpu);
    rc = 0;
out:
    if (*tmp && bench_rm_rf(tmp))
        fprintf(stderr, "bench_update_nochange: could not remove %s\n", tmp);
    return rc;
usage:
    fprintf(stderr, "usage: bench_update_nochange [--files N] [--dirs N] [--runs N] [--seed N] "
                    "[--threads N] [--data DIR] [--model DIR] [--cli PATH] [--python PY]\n");
    return 2;
}
