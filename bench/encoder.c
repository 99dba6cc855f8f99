/*
 * bench/encoder.c - the CLIP encoder's image and text towers against the
 * PyTorch reference (bench/encoder_ref.py, same model, float32, same thread
 * count), side by side in one run, plus the machine's sgemm rate at the
 * model's GEMM shapes and the sgemm-bound ceiling it implies.
 *
 * usage: bench_encoder [--model DIR] [--batch 32] [--iters 3] [--rounds 3]
 *                      [--threads 2] [--python /usr/bin/python3]
 *                      [--ref bench/encoder_ref.py] [--eot 76]
 * Without --model a ViT-B/32-shaped random-weight HF checkpoint is written
 * to a temporary directory by the reference script. Each round runs, for
 * each tower, sightline then PyTorch in separate child processes (so each
 * reports its own peak RSS); the table gives medians over rounds. Text
 * inputs carry the end token at position --eot (76: full length; sightline
 * drops the positions after it, PyTorch does not).
 */
#include "sightline/common.h"
#include "sightline/encoder.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SL_SOURCE_DIR
#define SL_SOURCE_DIR "."
#endif

typedef struct result {
    double per_s; /* items per second (median of iterations) */
    long rss_kb;  /* peak RSS of the process */
} result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------------------------ */
/* sightline side (in a child process)                                      */
/* ------------------------------------------------------------------------ */

static unsigned rng_state = 1;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* Returns items/s (median over iters) or a negative value on error. */
static double run_sightline(const char *model, int image, int batch, int iters, int threads,
                            int eot) {
    sl_encoder *enc = NULL;
    sl_encoder_opts opts = {.threads = threads};
    if (sl_encoder_open(model, &opts, &enc)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        return -1;
    }
    const sl_clip_config *c = sl_encoder_config(enc);
    size_t D = (size_t)c->embed_dim, S = (size_t)c->image_size, ctx = (size_t)c->context_length;
    float *out = malloc(sizeof(float) * (size_t)batch * D);
    float *pix = image ? malloc(sizeof(float) * (size_t)batch * 3 * S * S) : NULL;
    int32_t *ids = image ? NULL : malloc(sizeof(int32_t) * (size_t)batch * ctx);
    if (!out || (image && !pix) || (!image && !ids)) return -1;
    if (image)
        for (size_t i = 0; i < (size_t)batch * 3 * S * S; i++) pix[i] = frand();
    else
        for (size_t i = 0; i < (size_t)batch; i++)
            for (size_t t = 0; t < ctx; t++) {
                int32_t v = (int32_t)((rng_state = rng_state * 1664525u + 1013904223u) >> 8) %
                            (c->vocab_size - 1);
                ids[i * ctx + t] = (int)t == eot ? c->vocab_size - 1 : (int)t > eot ? 0 : v;
            }
    double times[64];
    if (iters > 64) iters = 64;
    for (int it = -1; it < iters; it++) {
        double t0 = sl_now();
        sl_status st = image ? sl_encoder_encode_images(enc, pix, (size_t)batch, out, NULL, 1)
                             : sl_encoder_encode_tokens(enc, ids, (size_t)batch, out, NULL, 1);
        if (st) {
            fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
            return -1;
        }
        if (it >= 0) times[it] = sl_now() - t0;
    }
    sl_encoder_free(enc);
    free(out);
    free(pix);
    free(ids);
    return batch / median(times, iters);
}

/* sgemm GFLOP/s over the four GEMM shapes of one block (weighted by
 * FLOPs): rows x W -> 3W, W -> W, W -> M, M -> W. */
static double run_sgemm(int rows, int W, int M, int threads) {
    openblas_set_num_threads(threads);
    const int shapes[4][2] = {{W, 3 * W}, {W, W}, {W, M}, {M, W}};
    size_t maxk = (size_t)(M > 3 * W ? M : 3 * W);
    float *a = malloc(sizeof(float) * (size_t)rows * maxk);
    float *b = malloc(sizeof(float) * maxk * maxk);
    float *c = malloc(sizeof(float) * (size_t)rows * maxk);
    if (!a || !b || !c) return -1;
    for (size_t i = 0; i < (size_t)rows * maxk; i++) a[i] = frand();
    for (size_t i = 0; i < maxk * maxk; i++) b[i] = frand();
    double best_total = 1e30, flops = 0;
    for (int s = 0; s < 4; s++) flops += 2.0 * rows * shapes[s][0] * shapes[s][1];
    for (int rep = 0; rep < 4; rep++) {
        double total = 0;
        for (int s = 0; s < 4; s++) {
            int K = shapes[s][0], N = shapes[s][1];
            double t0 = sl_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, N, K, 1.0f, a, K, b, K, 0.0f,
                        c, N);
            total += sl_now() - t0;
        }
        if (rep > 0 && total < best_total) best_total = total; /* rep 0 warms up */
    }
    free(a);
    free(b);
    free(c);
    return flops / best_total / 1e9;
}

/* Run fn in a child; its double result comes back through a pipe and its
 * peak RSS through wait4. */
typedef double (*child_fn)(void *);
static int in_child(child_fn fn, void *arg, result *r) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        double v = fn(arg);
        ssize_t w = write(fd[1], &v, sizeof v);
        _exit(w == (ssize_t)sizeof v && v > 0 ? 0 : 1);
    }
    close(fd[1]);
    double v = -1;
    ssize_t got = read(fd[0], &v, sizeof v);
    close(fd[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)sizeof v || !WIFEXITED(status) ||
        WEXITSTATUS(status))
        return -1;
    r->per_s = v;
    r->rss_kb = ru.ru_maxrss;
    return 0;
}

typedef struct job {
    const char *model;
    int image, batch, iters, threads, eot;
    int rows, W, M; /* sgemm */
} job;

static double job_sightline(void *p) {
    job *j = p;
    return run_sightline(j->model, j->image, j->batch, j->iters, j->threads, j->eot);
}
static double job_sgemm(void *p) {
    job *j = p;
    return run_sgemm(j->rows, j->W, j->M, j->threads);
}

/* ------------------------------------------------------------------------ */
/* PyTorch side                                                             */
/* ------------------------------------------------------------------------ */

static int run_torch(const char *py, const char *ref, const char *model, int image, int batch,
                     int iters, int threads, int eot, result *r) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s' run '%s' %s %d %d %d %d", py, ref, model,
             image ? "image" : "text", batch, iters, threads, eot);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[512];
    int ok = 0;
    while (fgets(line, sizeof line, f)) {
        double med;
        if (sscanf(line, "per_s=%lf median_s=%lf rss_kb=%ld", &r->per_s, &med, &r->rss_kb) == 3)
            ok = 1;
    }
    return pclose(f) == 0 && ok ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    const char *model = NULL, *py = "/usr/bin/python3";
    const char *ref = SL_SOURCE_DIR "/bench/encoder_ref.py";
    int batch = 32, iters = 3, rounds = 3, threads = 2, eot = 76;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--iters"))
            iters = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--python"))
            py = v;
        else if (!strcmp(a, "--ref"))
            ref = v;
        else if (!strcmp(a, "--eot"))
            eot = atoi(v);
        else
            goto usage;
        i++;
    }
    if (batch < 1 || iters < 1 || rounds < 1 || rounds > 32 || threads < 1 || eot < 0) goto usage;
    char tmp[256] = "";
    if (!model) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_encoder.XXXXXX");
        if (!mkdtemp(tmp)) return 1;
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' '%s' make '%s'", py, ref, tmp);
        fprintf(stderr, "writing a ViT-B/32-shaped random model into %s\n", tmp);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_encoder: %s failed\n", cmd);
            return 1;
        }
        model = tmp;
    }
    /* Config (and FLOPs) from the model; no BLAS/OpenMP in this process. */
    sl_encoder *enc = NULL;
    if (sl_encoder_open(model, NULL, &enc)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        return 1;
    }
    sl_clip_config c = *sl_encoder_config(enc);
    sl_encoder_free(enc);
    if (eot >= c.context_length) eot = c.context_length - 1;
    const double Wv = c.vision.width, Mv = c.vision.mlp_width, Wt = c.text.width,
                 Mt = c.text.mlp_width, D = c.embed_dim, p = c.patch_size;
    const double P = sl_clip_num_patches(&c), Tv = P + 1, Tt = c.context_length;
    /* Dense FLOPs per item (2 per multiply-add; attention counted in full). */
    const double img_flop =
        2 * P * Wv * 3 * p * p +
        c.vision.layers * (2 * Tv * (4 * Wv * Wv + 2 * Wv * Mv) + 4 * Tv * Tv * Wv) + 2 * Wv * D;
    const double txt_flop =
        c.text.layers * (2 * Tt * (4 * Wt * Wt + 2 * Wt * Mt) + 4 * Tt * Tt * Wt) + 2 * Wt * D;

    double v_sl[32], v_pt[32], t_sl[32], t_pt[32], g_v[32], g_t[32];
    long rss[4] = {0};
    for (int r = 0; r < rounds; r++) {
        result res;
        job jv = {model, 1, batch, iters, threads, eot, batch * (int)Tv, (int)Wv, (int)Mv};
        job jt = {model, 0, batch, iters, threads, eot, batch * (int)Tt, (int)Wt, (int)Mt};
        if (in_child(job_sgemm, &jv, &res)) goto fail;
        g_v[r] = res.per_s;
        if (in_child(job_sgemm, &jt, &res)) goto fail;
        g_t[r] = res.per_s;
        if (in_child(job_sightline, &jv, &res)) goto fail;
        v_sl[r] = res.per_s;
        rss[0] = res.rss_kb > rss[0] ? res.rss_kb : rss[0];
        if (run_torch(py, ref, model, 1, batch, iters, threads, eot, &res)) goto fail;
        v_pt[r] = res.per_s;
        rss[1] = res.rss_kb > rss[1] ? res.rss_kb : rss[1];
        if (in_child(job_sightline, &jt, &res)) goto fail;
        t_sl[r] = res.per_s;
        rss[2] = res.rss_kb > rss[2] ? res.rss_kb : rss[2];
        if (run_torch(py, ref, model, 0, batch, iters, threads, eot, &res)) goto fail;
        t_pt[r] = res.per_s;
        rss[3] = res.rss_kb > rss[3] ? res.rss_kb : rss[3];
        fprintf(stderr,
                "round %d: image %.2f vs torch %.2f /s (%.2fx), text %.2f vs %.2f /s (%.2fx), "
                "sgemm %.0f / %.0f GFLOP/s\n",
                r + 1, v_sl[r], v_pt[r], v_sl[r] / v_pt[r], t_sl[r], t_pt[r], t_sl[r] / t_pt[r],
                g_v[r], g_t[r]);
    }
    double ratio_v[32], ratio_t[32], frac_v[32], frac_t[32];
    for (int r = 0; r < rounds; r++) {
        ratio_v[r] = v_sl[r] / v_pt[r];
        ratio_t[r] = t_sl[r] / t_pt[r];
        frac_v[r] = v_sl[r] / (g_v[r] * 1e9 / img_flop);
        frac_t[r] = t_sl[r] / (g_t[r] * 1e9 / txt_flop);
    }
    double gv = median(g_v, rounds), gt = median(g_t, rounds);
    printf("CLIP encoder, batch %d, %d threads, %d rounds x %d iterations (medians)\n", batch,
           threads, rounds, iters);
    printf("model: image W%d L%d H%d mlp %d, %d px / patch %d (%d tokens): %.2f GFLOP/image\n",
           c.vision.width, c.vision.layers, c.vision.heads, c.vision.mlp_width, c.image_size,
           c.patch_size, (int)Tv, img_flop / 1e9);
    printf("       text W%d L%d H%d mlp %d, ctx %d (end token at %d): %.2f GFLOP/text (dense)\n",
           c.text.width, c.text.layers, c.text.heads, c.text.mlp_width, c.context_length, eot,
           txt_flop / 1e9);
    printf("%-6s %12s %12s %7s %14s %10s %9s %12s %12s\n", "tower", "sightline/s", "pytorch/s",
           "ratio", "sgemm GFLOP/s", "ceiling/s", "of ceil", "RSS sl MB", "RSS torch MB");
    printf("%-6s %12.2f %12.2f %6.2fx %14.1f %10.2f %8.1f%% %12.0f %12.0f\n", "image",
           median(v_sl, rounds), median(v_pt, rounds), median(ratio_v, rounds), gv,
           gv * 1e9 / img_flop, 100 * median(frac_v, rounds), rss[0] / 1024.0, rss[1] / 1024.0);
    printf("%-6s %12.2f %12.2f %6.2fx %14.1f %10.2f %8.1f%% %12.0f %12.0f\n", "text",
           median(t_sl, rounds), median(t_pt, rounds), median(ratio_t, rounds), gt,
           gt * 1e9 / txt_flop, 100 * median(frac_t, rounds), rss[2] / 1024.0, rss[3] / 1024.0);
    if (*tmp) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return 0;
fail:
    fprintf(stderr, "bench_encoder: a run failed\n");
    return 1;
usage:
    fprintf(stderr, "usage: bench_encoder [--model DIR] [--batch N] [--iters N] [--rounds N] "
                    "[--threads N] [--python PY] [--ref encoder_ref.py] [--eot POS]\n");
    return 2;
}
