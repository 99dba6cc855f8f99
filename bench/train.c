/*
 * bench/train.c - training speed and peak memory of sightline's CLIP trainer
 * against PyTorch (bench/train_ref.py), in one run, on the same checkpoint
 * and the same batch in memory: on the CPU (trainer/model.c forward +
 * backward, trainer/optim.c AdamW against tests/reference/train_ref.py's
 * loss, float32 autograd, torch.optim.AdamW with the same hyper-parameters)
 * or on a CUDA device (trainer/model_gpu.h's step against PyTorch eager,
 * AMP BF16 or F32, on the ViT-B/32 shape).
 *
 * usage: bench_train [--device cpu|cuda[:N]|cuda-f32[:N]] [--batch 64]
 *                    [--warmup 3] [--steps 20] [--rounds 3] [--threads 2]
 *                    [--settle 60] [--python /usr/bin/python3]
 *                    [--ref bench/train_ref.py] [--small 0|1] [--vitb32 3]
 *                    [--vitb32-batch N] [--vitb32-torch 0|1] [--peak-tflops T]
 *
 * The small model (train_ref.py SMALL; --small 1, the default on the CPU):
 * both towers 4 layers, width 256, 4 heads, MLP 1024; 64 px images in
 * patches of 8 (64 patches + class token); text ctx 32, vocabulary 49408,
 * end tokens at varied positions (clip_ref.make_tokens); embedding 256;
 * quick_gelu. The reference script writes one random checkpoint and one
 * batch; both engines load them. This table is always the CPU's.
 *
 * Each round runs sightline then PyTorch (A B A B ...), each in its own
 * process (peak RSS from wait4 / getrusage), after waiting (at most
 * --settle s) for other processes to use less than 0.3 cores; a step is
 * zero_grad + forward + backward + AdamW (lr 5e-4, betas 0.9/0.98, eps 1e-6,
 * weight decay 0.2 on weight matrices, no clipping); samples/s = batch /
 * median step time over --steps timed steps after --warmup untimed ones.
 * Tables give medians over rounds and the cores other processes kept busy.
 * --vitb32 N (0: skip) adds N timed steps of the ViT-B/32 shape
 * (etc/train/vit-b-32.json sizes) at --vitb32-batch pairs, sightline only
 * unless --vitb32-torch 1: on the CPU 1 warm-up step, batch 32.
 *
 * CUDA (--device cuda: BF16 mixed precision; cuda-f32: F32, no TF32): the
 * ViT-B/32 run only (the small CPU table with --small 1), batch 256 by
 * default, 3 warm-up steps. sightline: the CPU model loaded from the
 * checkpoint, copied to the GPU (sl_gpu_model_create), precision set
 * (sl_gpu_model_set_precision), each step one sl_gpu_model_step (zero
 * gradients, forward, loss, backward, AdamW; it waits for the GPU, so wall
 * time per call is the step time) with pixels and tokens in pinned host
 * memory (the step uploads them: part of its time). PyTorch: eager with
 * fused qkv, scaled_dot_product_attention, autocast bf16 (or F32 without
 * TF32), F32 parameters, torch.optim.AdamW's default implementation;
 * inputs on the GPU ("pytorch") and, as sightline's API, from pinned host
 * memory each step ("pytorch-host"). No phase times for sightline on the
 * GPU ('-'). Model FLOPs per step (step_flops) give TFLOP/s and MFU against
 * --peak-tflops (default 989, H100 SXM dense BF16; 67 for cuda-f32, H100
 * SXM FP32 non-tensor). GPU memory: sightline's is the device memory in use
 * beyond the CUDA context (cudaMemGetInfo after create and each step),
 * PyTorch's torch.cuda.max_memory_allocated. A "RESULT key=value ..." line
 * follows the table (also when the PyTorch run failed: its fields -1, exit
 * status 1). Exits 77 without a usable CUDA device (or without
 * CUDA in this build), before any data is written.
 */
#include "bench/bench_gpu_mem.h"
#include "bench/bench_util.h"
#include "sightline/common.h"
#include "trainer/model.h"
#include "trainer/model_gpu.h"
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
#define NO_DEVICE 77 /* exit status: no usable CUDA device (as bench_encoder) */

typedef struct result {
    double per_s;               /* samples/s (batch / median step) */
    double fwd_s, bwd_s, opt_s; /* median phase times */
    double loss0;               /* loss of the first step (same data, same init) */
    long rss_kb;                /* peak RSS of the process */
    double others;              /* cores other processes used meanwhile */
    /* CUDA runs (-1 where unknown) */
    double gpu_mb;      /* sightline: device memory beyond the context; PyTorch: max allocated */
    double reserved_mb; /* PyTorch: torch.cuda.max_memory_reserved */
    double host_per_s;  /* PyTorch: samples/s with inputs from pinned host memory each step */
    double flop;        /* sightline: model FLOPs of one step (step_flops) */
    char adamw[32];     /* PyTorch: AdamW implementation (foreach, fused, single-tensor) */
    char attn[16];      /* PyTorch: attention (sdpa or math) */
    char torch[48];     /* PyTorch: version */
} result;

/* ------------------------------------------------------------------------ */
/* Model FLOPs and device memory                                            */
/* ------------------------------------------------------------------------ */

/* Model FLOPs of one training step on B pairs of architecture c: the dense
 * count (2 per multiply-add) of the nominal model, the same figure for both
 * engines, which MFU is measured against. Forward, per pair, for a tower of
 * L layers, width W, MLP width M, over T positions:
 *   F(T) = L [2 T (4 W^2 + 2 W M)   QKV (3 W^2), out-projection (W^2), MLP
 *                                   (2 W M)
 *             + 4 T^2 W]            attention scores Q K^T and values A V,
 *                                   all heads (causal counted in full)
 *          + 2 W D                  projection of the pooled row
 * image: F(P + 1) (P patches and the class token) + Fp, the patch embedding
 * Fp = 2 P (3 p^2) W; text: F(ctx), every position (sightline packs each
 * sequence up to its end token and prunes the last block to the pooled
 * rows: it does fewer FLOPs than counted; PyTorch does them all); the token
 * embedding is a gather (no FLOPs). Loss: the logits, 2 B^2 D.
 * A step is 3 x the forward (the backward of each product computes the
 * input and the weight gradient, 2 x the forward: the 6 N tokens rule),
 * except the patch embedding, whose input gradient (the pixels) nobody
 * computes: 2 x. So
 *   step = B [3 (F_img + F_txt) + 2 Fp] + 3 (2 B^2 D)
 * ViT-B/32 (P 49, p 32, Wv 768, Mv 3072, Wt 512, Mt 2048, ctx 77, D 512,
 * 12 + 12 layers): F_img 8.59 + Fp 0.23, F_txt 5.96 GFLOP; 44.1 GFLOP a
 * pair, 11.29 TFLOP a step at B = 256 (100% MFU at 989 TFLOP/s: 22,400
 * pairs/s). */
static double step_flops(const sl_clip_config *c, int B) {
    const double Wv = c->vision.width, Mv = c->vision.mlp_width, Wt = c->text.width,
                 Mt = c->text.mlp_width, D = c->embed_dim, p = c->patch_size;
    const double P = sl_clip_num_patches(c), Tv = P + 1, Tt = c->context_length;
    const double fp = 2 * P * 3 * p * p * Wv;
    const double fimg =
        c->vision.layers * (2 * Tv * (4 * Wv * Wv + 2 * Wv * Mv) + 4 * Tv * Tv * Wv) + 2 * Wv * D;
    const double ftxt =
        c->text.layers * (2 * Tt * (4 * Wt * Wt + 2 * Wt * Mt) + 4 * Tt * Tt * Wt) + 2 * Wt * D;
    return B * (3 * (fimg + ftxt) + 2 * fp) + 3 * (2.0 * B * B * D);
}

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

/* The batch train_ref.py wrote: DIR/pixels.bin (np floats), DIR/tokens.bin
 * (nt int32). 0 on success. */
static int read_batch(const char *dir, float *pixels, size_t np, int32_t *tokens, size_t nt) {
    char path[1200];
    snprintf(path, sizeof path, "%s/pixels.bin", dir);
    if (read_bin(path, pixels, sizeof(float) * np)) return -1;
    snprintf(path, sizeof path, "%s/tokens.bin", dir);
    return read_bin(path, tokens, sizeof(int32_t) * nt);
}

typedef struct job {
    const char *dir;
    int batch, warmup, steps, threads;
    int cuda; /* -1: the CPU; else the CUDA device */
    int bf16; /* CUDA: 1 BF16 mixed precision, 0 F32 */
} job;

/* out[0..6]: samples/s, fwd, bwd, opt medians, first loss, device MB, step
 * FLOPs (the last two CUDA only). 0 on success. */
static int run_sightline_cpu(const job *j, double out[7]) {
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
    if (read_batch(j->dir, pixels, B * 3 * S * S, tokens, B * ctx)) goto out;
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

/* The same on CUDA device j->cuda: the CPU model only as the source of the
 * parameters (activations for one pair), then one sl_gpu_model_step per
 * step, timed from the call to its return (the step waits for the GPU).
 * Returns 0, NO_DEVICE (no usable device, no CUDA in this build) or -1. */
static int run_sightline_gpu(const job *j, double out[7]) {
    omp_set_num_threads(j->threads);
    openblas_set_num_threads(j->threads);
    char path[1200];
    snprintf(path, sizeof path, "%s/model", j->dir);
    sl_train_model *m = NULL;
    sl_gpu_model *g = NULL;
    float *pixels = NULL;
    int32_t *tokens = NULL;
    int pin_p = 0, pin_t = 0;
    double *t = NULL;
    size_t B = (size_t)j->batch, S = 0, ctx = 0;
    int rc = -1;
    sl_status st = SL_OK;
    sl_adamw_config ac = sl_adamw_defaults();
    ac.grad_clip = 0;
    mem_begin(j->cuda);
    if ((st = sl_train_model_load(path, 1, &m))) goto err;
    if ((st = sl_gpu_model_create(j->cuda, m, j->batch, &g))) goto err;
    if (j->bf16 && (st = sl_gpu_model_set_precision(g, SL_GPU_BF16))) goto err;
    out[6] = step_flops(&m->cfg, j->batch);
    S = (size_t)m->cfg.image_size;
    ctx = (size_t)m->cfg.context_length;
    sl_train_model_free(m);
    m = NULL;
    mem_sample();
    pixels = host_alloc(sizeof(float) * B * 3 * S * S, &pin_p);
    tokens = host_alloc(sizeof(int32_t) * B * ctx, &pin_t);
    t = malloc(sizeof(double) * (size_t)j->steps);
    if (!pixels || !tokens || !t) {
        fprintf(stderr, "bench_train: out of host memory\n");
        goto out;
    }
    if (read_batch(j->dir, pixels, B * 3 * S * S, tokens, B * ctx)) goto out;
    for (int it = 0; it < j->warmup + j->steps; it++) {
        float loss = 0;
        double gnorm = 0;
        double t0 = sl_now();
        if ((st = sl_gpu_model_step(g, pixels, tokens, j->batch, &loss, 1, &ac, LR, &gnorm)))
            goto err;
        double t1 = sl_now();
        mem_sample();
        if (!(loss == loss)) {
            fprintf(stderr, "bench_train: non-finite loss\n");
            goto out;
        }
        if (it == 0) out[4] = loss;
        if (it >= j->warmup) t[it - j->warmup] = t1 - t0;
    }
    out[0] = j->batch / bench_median(t, j->steps);
    out[1] = out[2] = out[3] = -1; /* no phase times: one call does the step */
    out[5] = mem_used_mb();
    rc = 0;
    goto out;
err:
    fprintf(stderr, "bench_train: %s\n", sl_last_error());
    /* not an architecture the GPU step refuses: the device went away */
    if (st == SL_ERR_UNSUPPORTED && m && !g && sl_gpu_model_probe(j->cuda)) rc = NO_DEVICE;
out:
    free(t);
    host_free(pixels, pin_p);
    host_free(tokens, pin_t);
    sl_gpu_model_free(g);
    sl_train_model_free(m);
    return rc;
}

/* Fork, run sightline in the child; results through a pipe, peak RSS from
 * wait4. Returns 0, NO_DEVICE (the child's) or -1. */
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
        double v[7] = {0, 0, 0, 0, 0, -1, -1};
        int rc = j->cuda >= 0 ? run_sightline_gpu(j, v) : run_sightline_cpu(j, v);
        ssize_t w = write(fd[1], v, sizeof v);
        _exit(rc == NO_DEVICE ? NO_DEVICE : rc == 0 && w == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fd[1]);
    double v[7] = {0};
    ssize_t got = read(fd[0], v, sizeof v);
    close(fd[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == NO_DEVICE) return NO_DEVICE;
    if (got != (ssize_t)sizeof v || !WIFEXITED(status) || WEXITSTATUS(status)) return -1;
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
    r->gpu_mb = v[5];
    r->flop = v[6];
    r->rss_kb = ru.ru_maxrss;
    return 0;
}

/* Whether CUDA device dev can be used, asked in a child: CUDA must not be
 * initialised in this process, which forks the engines' processes. Returns
 * 0, or NO_DEVICE after printing why. */
static int probe_child(int dev) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (sl_gpu_model_probe(dev)) {
            fprintf(stderr, "bench_train: %s\n", sl_last_error());
            _exit(NO_DEVICE);
        }
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status) ? NO_DEVICE : 0;
}

/* ------------------------------------------------------------------------ */
/* PyTorch side                                                             */
/* ------------------------------------------------------------------------ */

/* The number after " key=" in line, or -1. */
static double kv_num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    return p ? atof(p + strlen(pat)) : -1;
}

/* The word after " key=" in line into out (size n), or "?". */
static void kv_word(const char *line, const char *key, char *out, size_t n) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    if (!p) {
        snprintf(out, n, "?");
        return;
    }
    p += strlen(pat);
    snprintf(out, n, "%.*s", (int)strcspn(p, " \n"), p);
}

static int torch_child(const char *py, const char *ref, const job *j, result *r) {
    char cmd[4096];
    if (j->cuda < 0)
        snprintf(cmd, sizeof cmd, "'%s' '%s' run '%s' %d %d %d %d %g", py, ref, j->dir, j->batch,
                 j->warmup, j->steps, j->threads, LR);
    else
        snprintf(cmd, sizeof cmd, "'%s' '%s' run '%s' %d %d %d %d %g cuda:%d %s", py, ref, j->dir,
                 j->batch, j->warmup, j->steps, j->threads, LR, j->cuda, j->bf16 ? "amp" : "f32");
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
                   &r->per_s, &r->rss_kb, &r->fwd_s, &r->bwd_s, &r->opt_s, &r->loss0) == 6) {
            ok = 1;
            r->host_per_s = kv_num(line, "host_per_s");
            r->gpu_mb = kv_num(line, "gpu_peak_mb");
            r->reserved_mb = kv_num(line, "gpu_reserved_mb");
            kv_word(line, "adamw", r->adamw, sizeof r->adamw);
            kv_word(line, "attn", r->attn, sizeof r->attn);
            kv_word(line, "torch", r->torch, sizeof r->torch);
        }
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
/* Runs and tables                                                          */
/* ------------------------------------------------------------------------ */

typedef struct opts {
    const char *py, *ref;
    int batch, warmup, steps, rounds, threads;
    double settle;
    int cuda, bf16;     /* device (sl_device_parse) */
    int vit_steps;      /* ViT-B/32 timed steps (0: none) */
    int vit_batch;      /* ViT-B/32 pairs a step */
    int vit_torch;      /* 1: PyTorch beside sightline on ViT-B/32 */
    double peak_tflops; /* MFU denominator */
} opts;

static void print_row(const char *name, double *per_s, double *fwd, double *bwd, double *opt,
                      double *oth, long rss, int n) {
    printf("%-10s %10.2f %9.3f %9.3f %9.3f %10.0f %8.2f\n", name, bench_median(per_s, n),
           bench_median(fwd, n), bench_median(bwd, n), bench_median(opt, n), rss / 1024.0,
           bench_median(oth, n));
}

/* The small model on the CPU, --rounds rounds. 0 on success. */
static int bench_small(const opts *o, const char *tmp) {
    char dir[300], info[600];
    snprintf(dir, sizeof dir, "%s/small", tmp);
    if (make_data(o->py, o->ref, dir, "small", o->batch, info, sizeof info)) return -1;

    double sp[MAX_ROUND], sf[MAX_ROUND], sb[MAX_ROUND], so[MAX_ROUND], sx[MAX_ROUND];
    double tp[MAX_ROUND], tf[MAX_ROUND], tb[MAX_ROUND], to[MAX_ROUND], tx[MAX_ROUND];
    double ratio[MAX_ROUND], load0 = bench_load1();
    long rss_s = 0, rss_t = 0;
    job j = {dir, o->batch, o->warmup, o->steps, o->threads, -1, 0};
    for (int r = 0; r < o->rounds; r++) {
        result a, b;
        bench_settle(o->settle, 0.3);
        if (sightline_child(&j, &a)) return -1;
        bench_settle(o->settle, 0.3);
        if (torch_child(o->py, o->ref, &j, &b)) return -1;
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
           o->batch, o->threads);
    printf("model: both towers L4 W256 H4 MLP1024, 64 px / patch 8 (65 tokens), text %s, "
           "vocab 49408, embed 256\n",
           info);
    printf("%d rounds (sightline, pytorch alternating) x %d timed steps after %d warm-up; "
           "medians; load1 %.2f at start, %.2f at end\n",
           o->rounds, o->steps, o->warmup, load0, bench_load1());
    printf("%-10s %10s %9s %9s %9s %10s %8s\n", "engine", "samples/s", "fwd s", "bwd s", "adamw s",
           "peak MB", "others");
    print_row("sightline", sp, sf, sb, so, sx, rss_s, o->rounds);
    print_row("pytorch", tp, tf, tb, to, tx, rss_t, o->rounds);
    double rmed = bench_median(ratio, o->rounds);
    printf("speed ratio sightline/pytorch: %.2fx (target >= 1.5x: %s); peak RSS %.0f vs %.0f MB "
           "(target <=: %s)\n",
           rmed, rmed >= 1.5 ? "met" : "NOT met", rss_s / 1024.0, rss_t / 1024.0,
           rss_s <= rss_t ? "met" : "NOT met");
    fflush(stdout);
    return 0;
}

/* ViT-B/32 on the CPU: one run of each engine, 1 warm-up step. */
static int bench_vit_cpu(const opts *o, const char *tmp) {
    char dir[300], info[600];
    snprintf(dir, sizeof dir, "%s/vitb32", tmp);
    const int vb = o->vit_batch;
    if (make_data(o->py, o->ref, dir, "vitb32", vb, info, sizeof info)) return -1;
    job v = {dir, vb, 1, o->vit_steps, o->threads, -1, 0};
    result a, b = {0};
    bench_settle(o->settle, 0.3);
    if (sightline_child(&v, &a)) return -1;
    if (o->vit_torch) {
        bench_settle(o->settle, 0.3);
        if (torch_child(o->py, o->ref, &v, &b)) return -1;
    }
    printf("ViT-B/32 (etc/train/vit-b-32.json sizes, text %s), batch %d, %d threads, 1 "
           "warm-up + %d timed steps:\n",
           info, vb, o->threads, o->vit_steps);
    printf("%-10s %10s %9s %9s %9s %10s %8s\n", "engine", "samples/s", "fwd s", "bwd s", "adamw s",
           "peak MB", "others");
    print_row("sightline", &a.per_s, &a.fwd_s, &a.bwd_s, &a.opt_s, &a.others, a.rss_kb, 1);
    if (o->vit_torch)
        print_row("pytorch", &b.per_s, &b.fwd_s, &b.bwd_s, &b.opt_s, &b.others, b.rss_kb, 1);
    return 0;
}

/* A table cell: v with `prec` decimals in `width` columns, '-' when v < 0. */
static void cell(double v, int width, int prec) {
    if (v < 0)
        printf(" %*s", width, "-");
    else
        printf(" %*.*f", width, prec, v);
}

static void gpu_row(const char *name, double per_s, double fwd, double bwd, double opt,
                    double gpu_mb, double flop, double peak, double loss0) {
    const double tf = per_s > 0 && flop > 0 ? per_s * flop / 1e12 : -1;
    printf("%-12s", name);
    cell(per_s, 10, 1);
    cell(fwd, 9, 4);
    cell(bwd, 9, 4);
    cell(opt, 9, 4);
    cell(gpu_mb, 8, 0);
    cell(tf, 8, 1);
    cell(tf > 0 ? 100 * tf / peak : -1, 6, 1);
    cell(loss0, 10, 6);
    printf("\n");
}

/* ViT-B/32 on CUDA: sightline, then PyTorch eager (AMP BF16 or F32).
 * Returns 0, NO_DEVICE or -1. */
static int bench_vit_gpu(const opts *o, const char *tmp) {
    char dir[300], info[600], dev[32];
    snprintf(dir, sizeof dir, "%s/vitb32", tmp);
    snprintf(dev, sizeof dev, "cuda:%d", o->cuda);
    const int vb = o->vit_batch, warm = 3;
    if (make_data(o->py, o->ref, dir, "vitb32", vb, info, sizeof info)) return -1;
    job v = {dir, vb, warm, o->vit_steps, o->threads, o->cuda, o->bf16};
    result a = {0}, b = {0};
    b.per_s = b.host_per_s = b.fwd_s = b.bwd_s = b.opt_s = b.gpu_mb = b.reserved_mb = b.loss0 = -1;
    snprintf(b.adamw, sizeof b.adamw, "-");
    snprintf(b.attn, sizeof b.attn, "-");
    snprintf(b.torch, sizeof b.torch, "-");
    bench_settle(o->settle, 0.3);
    int rc = sightline_child(&v, &a);
    if (rc) return rc;
    int torch_ok = 0; /* sightline's figures are printed whatever becomes of PyTorch */
    if (o->vit_torch) {
        bench_settle(o->settle, 0.3);
        torch_ok = torch_child(o->py, o->ref, &v, &b) == 0;
        if (!torch_ok) {
            fprintf(stderr, "bench_train: the PyTorch run failed (its messages above)\n");
            b.per_s = b.host_per_s = b.gpu_mb = b.reserved_mb = b.loss0 = -1;
        }
    }
    const double flop = a.flop, peak = o->peak_tflops;
    const char *prec = o->bf16 ? "BF16 mixed precision" : "F32 (no TF32)";
    printf("ViT-B/32 training step on %s, %s, batch %d (etc/train/vit-b-32.json sizes, text "
           "%s), %d warm-up + %d timed steps, medians\n",
           dev, prec, vb, info, warm, o->vit_steps);
    printf("  sightline: sl_gpu_model_step (%s), pixels and tokens from pinned host memory, "
           "uploaded by each step\n",
           o->bf16 ? "BF16 tensor-core matmuls; F32 master weights, LayerNorm, attention, loss, "
                     "AdamW"
                   : "F32 cuBLAS, pedantic");
    if (torch_ok)
        printf("  pytorch %s: eager, fused qkv, attention %s, %s, F32 parameters, AdamW %s; "
               "inputs on the GPU (pytorch) or from pinned host memory each step "
               "(pytorch-host)\n",
               b.torch, b.attn, o->bf16 ? "autocast bf16" : "F32 without TF32", b.adamw);
    printf("model FLOPs per step: %.3f TFLOP (%.2f GFLOP a pair: 3 x the dense forward, text at "
           "all positions; bench/train.c step_flops); MFU against %.0f TFLOP/s (%s)\n",
           flop / 1e12, flop / vb / 1e9, peak,
           o->bf16 ? "H100 SXM dense BF16" : "H100 SXM FP32 non-tensor");
    printf("%-12s %10s %9s %9s %9s %8s %8s %6s %10s\n", "engine", "samples/s", "fwd s", "bwd s",
           "adamw s", "GPU MB", "TFLOP/s", "MFU %", "first loss");
    gpu_row("sightline", a.per_s, -1, -1, -1, a.gpu_mb, flop, peak, a.loss0);
    const double ratio = b.per_s > 0 ? a.per_s / b.per_s : -1,
                 ratio_h = b.host_per_s > 0 ? a.per_s / b.host_per_s : -1;
    if (o->vit_torch && !torch_ok) printf("pytorch: FAILED (no ratio)\n");
    if (torch_ok) {
        gpu_row("pytorch", b.per_s, b.fwd_s, b.bwd_s, b.opt_s, b.gpu_mb, flop, peak, b.loss0);
        gpu_row("pytorch-host", b.host_per_s, -1, -1, -1, -1, flop, peak, -1);
        if (o->bf16)
            printf("speed ratio sightline/pytorch: %.2fx (target >= 1.0x: %s); against "
                   "pytorch-host %.2fx\n",
                   ratio, ratio >= 1.0 ? "met" : "NOT met", ratio_h);
        else
            printf("speed ratio sightline/pytorch: %.2fx (F32: no target); against pytorch-host "
                   "%.2fx\n",
                   ratio, ratio_h);
        printf("GPU MB: sightline's device memory beyond the CUDA context; pytorch's "
               "max_memory_allocated (max_memory_reserved %.0f)\n",
               b.reserved_mb);
    }
    const double tfs = a.per_s * flop / 1e12, tft = b.per_s > 0 ? b.per_s * flop / 1e12 : -1;
    printf("RESULT device=%s dtype=%s batch=%d steps=%d tflop_per_step=%.4f sl_per_s=%.2f "
           "sl_tflops=%.2f sl_mfu=%.4f torch_per_s=%.2f torch_host_per_s=%.2f torch_tflops=%.2f "
           "torch_mfu=%.4f ratio=%.3f ratio_host=%.3f sl_gpu_mb=%.0f torch_gpu_mb=%.0f "
           "torch_reserved_mb=%.0f sl_loss0=%.6f torch_loss0=%.6f peak_tflops=%.0f adamw=%s "
           "attn=%s torch=%s\n",
           dev, o->bf16 ? "bf16" : "f32", vb, o->vit_steps, flop / 1e12, a.per_s, tfs, tfs / peak,
           b.per_s, b.host_per_s, tft, tft > 0 ? tft / peak : -1, ratio, ratio_h, a.gpu_mb,
           b.gpu_mb, b.reserved_mb, a.loss0, b.loss0, peak, b.adamw, b.attn, b.torch);
    fflush(stdout);
    return o->vit_torch && !torch_ok ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    opts o = {.py = "/usr/bin/python3",
              .ref = SL_SOURCE_DIR "/bench/train_ref.py",
              .batch = 64,
              .warmup = 3,
              .steps = 20,
              .rounds = 3,
              .threads = 2,
              .settle = 60,
              .vit_steps = 3,
              .vit_batch = 0,
              .vit_torch = 0,
              .peak_tflops = 0};
    const char *device = "cpu";
    int small = -1;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--batch"))
            o.batch = atoi(v);
        else if (!strcmp(a, "--warmup"))
            o.warmup = atoi(v);
        else if (!strcmp(a, "--steps"))
            o.steps = atoi(v);
        else if (!strcmp(a, "--rounds"))
            o.rounds = atoi(v);
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--settle"))
            o.settle = atof(v);
        else if (!strcmp(a, "--python"))
            o.py = v;
        else if (!strcmp(a, "--ref"))
            o.ref = v;
        else if (!strcmp(a, "--vitb32"))
            o.vit_steps = atoi(v);
        else if (!strcmp(a, "--vitb32-torch"))
            o.vit_torch = atoi(v);
        else if (!strcmp(a, "--vitb32-batch"))
            o.vit_batch = atoi(v);
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--small"))
            small = atoi(v);
        else if (!strcmp(a, "--peak-tflops"))
            o.peak_tflops = atof(v);
        else
            goto usage;
    }
    if (sl_device_parse(device, &o.cuda, &o.bf16)) {
        fprintf(stderr, "bench_train: %s\n", sl_last_error());
        goto usage;
    }
    if (small < 0) small = o.cuda < 0;
    if (o.vit_batch == 0) o.vit_batch = o.cuda < 0 ? 32 : 256;
    if (o.peak_tflops <= 0) o.peak_tflops = o.bf16 ? 989 : 67;
    if (o.batch < 1 || o.warmup < 0 || o.steps < 1 || o.rounds < 1 || o.rounds > MAX_ROUND ||
        o.threads < 1 || o.vit_steps < 0 || o.vit_batch < 1 || small > 1)
        goto usage;
    if (o.cuda >= 0) {
        int rc = probe_child(o.cuda);
        if (rc) return rc == NO_DEVICE ? NO_DEVICE : 1;
    }
    char tmp[] = "/tmp/bench_train.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    int rc = 0;
    if (small && bench_small(&o, tmp)) goto fail;
    if (o.vit_steps > 0) {
        if (o.cuda < 0)
            rc = bench_vit_cpu(&o, tmp);
        else
            rc = bench_vit_gpu(&o, tmp);
        if (rc == NO_DEVICE) {
            bench_rm_rf(tmp);
            return NO_DEVICE;
        }
        if (rc) goto fail;
    }
    bench_rm_rf(tmp);
    return 0;
fail:
    fprintf(stderr, "bench_train: a run failed (data in %s)\n", tmp);
    return 1;
usage:
    fprintf(stderr, "usage: bench_train [--device cpu|cuda[:N]|cuda-f32[:N]] [--batch N] "
                    "[--warmup N] [--steps N] [--rounds N] [--threads N] [--settle S] "
                    "[--python PY] [--ref train_ref.py] [--small 0|1] [--vitb32 STEPS] "
                    "[--vitb32-batch N] [--vitb32-torch 0|1] [--peak-tflops T]\n");
    return 2;
}
