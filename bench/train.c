/*
 * bench/train.c - training speed and peak memory of sightline's CLIP trainer
 * (trainer/model.c forward + backward, trainer/optim.c AdamW) against the
 * PyTorch reference (bench/train_ref.py: tests/reference/train_ref.py's loss,
 * float32 autograd, torch.optim.AdamW with the same hyper-parameters), in
 * one run, on the same checkpoint and the same batch in memory.
 *
 * usage: bench_train [--batch 64] [--warmup 3] [--steps 20] [--rounds 3]
 *                    [--threads 2] [--settle 60] [--python /usr/bin/python3]
 *                    [--ref bench/train_ref.py] [--vitb32 3] [--vitb32-torch 0|1]
 *
 * The model (train_ref.py SMALL): both towers 4 layers, width 256, 4 heads,
 * MLP 1024; 64 px images in patches of 8 (64 patches + class token); text
 * ctx 32, vocabulary 49408, end tokens at varied positions
 * (clip_ref.make_tokens); embedding 256; quick_gelu. The reference script
 * writes one random checkpoint and one batch; both engines load them.
 *
 * Each round runs sightline then PyTorch (A B A B ...), each in its own
 * process (peak RSS from wait4 / getrusage), after waiting (at most
 * --settle s) for other processes to use less than 0.3 cores; a step is
 * zero_grad + forward + backward + AdamW (lr 5e-4, betas 0.9/0.98, eps 1e-6,
 * weight decay 0.2 on weight matrices, no clipping); samples/s = batch /
 * median step time over --steps timed steps after --warmup untimed ones.
 * Tables give medians over rounds and the cores other processes kept busy.
 * --vitb32 N (0: skip) adds N timed steps (1 warm-up) of the ViT-B/32 shape
 * (etc/train/vit-b-32.json sizes) at batch 32, sightline only unless
 * --vitb32-torch 1.
 */
#include "bench/bench_util.h"
#include "sightline/common.h"
#include "trainer/model.h"
#include "trainer/optim.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SL_SOURCE_DIR
#define SL_SOURCE_DIR "."
#endif

#define LR        5e-4
#define MAX_ROUND 32

typedef struct result {
    double per_s;               /* samples/s (batch / median step) */
    double fwd_s, bwd_s, opt_s; /* median phase times */
    double loss0;               /* loss of the first step (same data, same init) */
    long rss_kb;                /* peak RSS of the process */
    double others;              /* cores other processes used meanwhile */
} result;

/* ------------------------------------------------------------------------ */
/* sightline side (in a child process)                                      */
/* ------------------------------------------------------------------------ */

static int read_bin(const char *path, void *dst, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(dst, 1, bytes, f);
    fclose(f);
    return got == bytes ? 0 : -1;
}

typedef struct job {
    const char *dir;
    int batch, warmup, steps, threads;
} job;

/* out[0..4]: samples/s, fwd, bwd, opt medians, first loss. 0 on success. */
static int run_sightline(const job *j, double out[5]) {
    omp_set_num_threads(j->threads);
    openblas_set_num_threads(j->threads);
    char path[1200];
    snprintf(path, sizeof path, "%s/model", j->dir);
    sl_train_model *m = NULL;
    if (sl_train_model_load(path, j->batch, &m)) {
        fprintf(stderr, "bench_train: %s\n", sl_last_error());
        return -1;
    }
    const size_t B = (size_t)j->batch, S = (size_t)m->cfg.image_size,
                 ctx = (size_t)m->cfg.context_length;
    float *pixels = malloc(sizeof(float) * B * 3 * S * S);
    int32_t *tokens = malloc(sizeof(int32_t) * B * ctx);
    int rc = -1;
    sl_adamw opt = {0};
    sl_adamw_config ac = sl_adamw_defaults();
    ac.grad_clip = 0;
    double *t = malloc(sizeof(double) * 4 * (size_t)j->steps);
    if (!pixels || !tokens || !t) goto out;
    snprintf(path, sizeof path, "%s/pixels.bin", j->dir);
    if (read_bin(path, pixels, sizeof(float) * B * 3 * S * S)) goto out;
    snprintf(path, sizeof path, "%s/tokens.bin", j->dir);
    if (read_bin(path, tokens, sizeof(int32_t) * B * ctx)) goto out;
    if (sl_adamw_init(&opt, &ac, m->num_params)) goto out;
    for (int it = 0; it < j->warmup + j->steps; it++) {
        float loss = 0;
        double t0 = sl_now();
        sl_train_model_zero_grad(m);
        if (sl_train_model_forward(m, pixels, tokens, j->batch, &loss)) goto err;
        double t1 = sl_now();
        if (sl_train_model_backward(m)) goto err;
        double t2 = sl_now();
        if (sl_adamw_step(&opt, m, LR, 1.0, NULL)) goto err;
        double t3 = sl_now();
        if (!(loss == loss)) {
            fprintf(stderr, "bench_train: non-finite loss\n");
            goto out;
        }
        if (it == 0) out[4] = loss;
        int k = it - j->warmup;
        if (k >= 0) {
            t[k] = t3 - t0;
            t[j->steps + k] = t1 - t0;
            t[2 * j->steps + k] = t2 - t1;
            t[3 * j->steps + k] = t3 - t2;
        }
    }
    out[0] = j->batch / bench_median(t, j->steps);
    for (int p = 1; p < 4; p++) out[p] = bench_median(t + (size_t)p * j->steps, j->steps);
    rc = 0;
    goto out;
err:
    fprintf(stderr, "bench_train: %s\n", sl_last_error());
out:
    sl_adamw_free(&opt);
    free(t);
    free(pixels);
    free(tokens);
    sl_train_model_free(m);
    return rc;
}

/* Fork, run sightline in the child; results through a pipe, peak RSS from
 * wait4. */
static int sightline_child(const job *j, result *r) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(NULL);
    bench_others o;
    bench_others_begin(&o);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        double v[5] = {0};
        int rc = run_sightline(j, v);
        ssize_t w = write(fd[1], v, sizeof v);
        _exit(rc == 0 && w == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fd[1]);
    double v[5] = {0};
    ssize_t got = read(fd[0], v, sizeof v);
    close(fd[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)sizeof v || !WIFEXITED(status) ||
        WEXITSTATUS(status))
        return -1;
    /* the child's CPU is not this process's until waited for: count it */
    double wall = sl_now() - o.wall, busy = bench_machine_busy_seconds() - o.busy;
    double self = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
                  (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    r->others = wall > 0 && busy > self ? (busy - self) / wall : 0;
    r->per_s = v[0];
    r->fwd_s = v[1];
    r->bwd_s = v[2];
    r->opt_s = v[3];
    r->loss0 = v[4];
    r->rss_kb = ru.ru_maxrss;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* PyTorch side                                                             */
/* ------------------------------------------------------------------------ */

static int torch_child(const char *py, const char *ref, const job *j, result *r) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s' run '%s' %d %d %d %d %g", py, ref, j->dir, j->batch,
             j->warmup, j->steps, j->threads, LR);
    bench_others o;
    bench_others_begin(&o);
    double c0 = bench_cpu_seconds();
    struct rusage ru0;
    getrusage(RUSAGE_CHILDREN, &ru0);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[1024];
    int ok = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line,
                   "per_s=%lf median_s=%*f rss_kb=%ld fwd_s=%lf bwd_s=%lf opt_s=%lf loss0=%lf",
                   &r->per_s, &r->rss_kb, &r->fwd_s, &r->bwd_s, &r->opt_s, &r->loss0) == 6)
            ok = 1;
    int rc = pclose(f);
    struct rusage ru1;
    getrusage(RUSAGE_CHILDREN, &ru1);
    double wall = sl_now() - o.wall, busy = bench_machine_busy_seconds() - o.busy;
    double kids = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                  (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6 +
                  (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                  (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;
    double self = bench_cpu_seconds() - c0 + kids;
    r->others = wall > 0 && busy > self ? (busy - self) / wall : 0;
    return rc == 0 && ok ? 0 : -1;
}

static int make_data(const char *py, const char *ref, const char *dir, const char *shape, int B,
                     char *info, size_t info_len) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s' make '%s' %s %d", py, ref, dir, shape, B);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    info[0] = 0;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "ctx=", 4)) {
            line[strcspn(line, "\n")] = 0;
            snprintf(info, info_len, "%s", line);
        }
    return pclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

static void print_row(const char *name, double *per_s, double *fwd, double *bwd, double *opt,
                      double *oth, long rss, int n) {
    printf("%-10s %10.2f %9.3f %9.3f %9.3f %10.0f %8.2f\n", name, bench_median(per_s, n),
           bench_median(fwd, n), bench_median(bwd, n), bench_median(opt, n), rss / 1024.0,
           bench_median(oth, n));
}

int main(int argc, char **argv) {
    const char *py = "/usr/bin/python3", *ref = SL_SOURCE_DIR "/bench/train_ref.py";
    int batch = 64, warmup = 3, steps = 20, rounds = 3, threads = 2, vit_steps = 3, vit_torch = 0;
    double settle = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--settle"))
            settle = atof(v);
        else if (!strcmp(a, "--python"))
            py = v;
        else if (!strcmp(a, "--ref"))
            ref = v;
        else if (!strcmp(a, "--vitb32"))
            vit_steps = atoi(v);
        else if (!strcmp(a, "--vitb32-torch"))
            vit_torch = atoi(v);
        else
            goto usage;
        i++;
    }
    if (batch < 1 || warmup < 0 || steps < 1 || rounds < 1 || rounds > MAX_ROUND || threads < 1 ||
        vit_steps < 0)
        goto usage;
    char tmp[] = "/tmp/bench_train.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char dir[300], info[600];
    snprintf(dir, sizeof dir, "%s/small", tmp);
    if (make_data(py, ref, dir, "small", batch, info, sizeof info)) goto fail;

    double sp[MAX_ROUND], sf[MAX_ROUND], sb[MAX_ROUND], so[MAX_ROUND], sx[MAX_ROUND];
    double tp[MAX_ROUND], tf[MAX_ROUND], tb[MAX_ROUND], to[MAX_ROUND], tx[MAX_ROUND];
    double ratio[MAX_ROUND], load0 = bench_load1();
    long rss_s = 0, rss_t = 0;
    job j = {dir, batch, warmup, steps, threads};
    for (int r = 0; r < rounds; r++) {
        result a, b;
        bench_settle(settle, 0.3);
        if (sightline_child(&j, &a)) goto fail;
        bench_settle(settle, 0.3);
        if (torch_child(py, ref, &j, &b)) goto fail;
        sp[r] = a.per_s, sf[r] = a.fwd_s, sb[r] = a.bwd_s, so[r] = a.opt_s, sx[r] = a.others;
        tp[r] = b.per_s, tf[r] = b.fwd_s, tb[r] = b.bwd_s, to[r] = b.opt_s, tx[r] = b.others;
        ratio[r] = a.per_s / b.per_s;
        rss_s = a.rss_kb > rss_s ? a.rss_kb : rss_s;
        rss_t = b.rss_kb > rss_t ? b.rss_kb : rss_t;
        fprintf(stderr,
                "round %d: sightline %.2f samples/s (%.0f MB, others %.2f cores), pytorch %.2f "
                "(%.0f MB, others %.2f): %.2fx; first-step loss %.6f vs %.6f\n",
                r + 1, a.per_s, a.rss_kb / 1024.0, a.others, b.per_s, b.rss_kb / 1024.0, b.others,
                ratio[r], a.loss0, b.loss0);
    }
    printf("CLIP training step (zero_grad + forward + backward + AdamW), batch %d, %d threads, "
           "float32\n",
           batch, threads);
    printf("model: both towers L4 W256 H4 MLP1024, 64 px / patch 8 (65 tokens), text %s, "
           "vocab 49408, embed 256\n",
           info);
    printf("%d rounds (sightline, pytorch alternating) x %d timed steps after %d warm-up; "
           "medians; load1 %.2f at start, %.2f at end\n",
           rounds, steps, warmup, load0, bench_load1());
    printf("%-10s %10s %9s %9s %9s %10s %8s\n", "engine", "samples/s", "fwd s", "bwd s", "adamw s",
           "peak MB", "others");
    print_row("sightline", sp, sf, sb, so, sx, rss_s, rounds);
    print_row("pytorch", tp, tf, tb, to, tx, rss_t, rounds);
    double rmed = bench_median(ratio, rounds);
    printf("speed ratio sightline/pytorch: %.2fx (target >= 1.5x: %s); peak RSS %.0f vs %.0f MB "
           "(target <=: %s)\n",
           rmed, rmed >= 1.5 ? "met" : "NOT met", rss_s / 1024.0, rss_t / 1024.0,
           rss_s <= rss_t ? "met" : "NOT met");
    fflush(stdout);

    if (vit_steps > 0) {
        snprintf(dir, sizeof dir, "%s/vitb32", tmp);
        const int vb = 32;
        if (make_data(py, ref, dir, "vitb32", vb, info, sizeof info)) goto fail;
        job v = {dir, vb, 1, vit_steps, threads};
        result a, b = {0};
        bench_settle(settle, 0.3);
        if (sightline_child(&v, &a)) goto fail;
        if (vit_torch) {
            bench_settle(settle, 0.3);
            if (torch_child(py, ref, &v, &b)) goto fail;
        }
        printf("ViT-B/32 (etc/train/vit-b-32.json sizes, text %s), batch %d, %d threads, 1 "
               "warm-up + %d timed steps:\n",
               info, vb, threads, vit_steps);
        printf("%-10s %10s %9s %9s %9s %10s %8s\n", "engine", "samples/s", "fwd s", "bwd s",
               "adamw s", "peak MB", "others");
        print_row("sightline", &a.per_s, &a.fwd_s, &a.bwd_s, &a.opt_s, &a.others, a.rss_kb, 1);
        if (vit_torch)
            print_row("pytorch", &b.per_s, &b.fwd_s, &b.bwd_s, &b.opt_s, &b.others, b.rss_kb, 1);
    }
    bench_rm_rf(tmp);
    return 0;
fail:
    fprintf(stderr, "bench_train: a run failed (data in %s)\n", tmp);
    return 1;
usage:
    fprintf(stderr, "usage: bench_train [--batch N] [--warmup N] [--steps N] [--rounds N] "
                    "[--threads N] [--settle S] [--python PY] [--ref train_ref.py] "
                    "[--vitb32 STEPS] [--vitb32-torch 0|1]\n");
    return 2;
}
