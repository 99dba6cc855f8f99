/*
 * bench/encoder.c - the CLIP encoder's image and text towers against the
 * PyTorch reference (bench/encoder_ref.py, same model, same inputs), side by
 * side in one run: on the CPU (float32, same thread count, plus the
 * machine's sgemm rate at the model's GEMM shapes and the sgemm-bound
 * ceiling it implies) or on a CUDA device (BF16 or F32 weights, achieved
 * TFLOP/s and MFU against the GPU's dense peak), and a parity check of the
 * GPU path against the CPU path.
 *
 * usage: bench_encoder [--model DIR] [--arch b32|b16] [--device cpu|cuda[:N]|cuda-f32[:N]]
 *                      [--towers both|image|text] [--batch N] [--iters N]
 *                      [--rounds N] [--warmup N] [--threads N] [--eot 76]
 *                      [--python /usr/bin/python3] [--ref bench/encoder_ref.py]
 *                      [--no-ref] [--peak-tflops T]
 *        bench_encoder --parity [--model DIR] [--arch b32|b16] [--device cuda[:N]]
 *                      [--batch 8] [--threads N]
 * Without --model a random-weight HF checkpoint is written to a temporary
 * directory by the reference script: ViT-B/32-shaped, or ViT-B/16 with
 * --arch b16 (patch 16, 224 px, the rest as B/32). Each round runs, for
 * each tower, sightline then PyTorch in separate child processes (so each
 * reports its own peak RSS); the table gives medians over rounds. Text
 * inputs carry the end token at position --eot (76: full length; sightline
 * drops the positions after it, PyTorch does not).
 *
 * CPU (the default): batch 32, 3 iterations after 1 warm-up, 3 rounds,
 * 2 threads; PyTorch float32 on the CPU.
 * CUDA: batch 256, 20 iterations after 3 warm-up, 3 rounds, threads = the
 * machine's cores; no sgemm runs. sightline is timed through its API (host
 * float32 in, host float32 out); PyTorch eager (weights .to(device, dtype),
 * fused qkv, SDPA; bf16 for cuda, f32 for cuda-f32) twice in the same
 * process: with the same host in/out ("host") and with inputs already on
 * the GPU ("on GPU"). FLOPs per item are the model's dense count (2*M*N*K
 * per matmul, 4*T*T*W attention per layer), MFU against --peak-tflops
 * (default 989, H100 SXM dense BF16; 67 for cuda-f32, FP32). GPU memory:
 * sightline's is the device memory in use beyond the CUDA context
 * (cudaMemGetInfo, sampled after open and each batch), PyTorch's
 * torch.cuda.max_memory_allocated. One "RESULT key=value ..." line per
 * tower follows the table. Exits 77 without a usable CUDA device.
 *
 * --parity: n = --batch (default 8) random images and token sequences (end
 * tokens at varied positions) through the CPU path and through cuda and
 * cuda-f32 on the same checkpoint: image embeddings, patch embeddings, text
 * embeddings (packed) and every token's embedding, each compared as max
 * |gpu - cpu| / max |cpu| against 2e-2 (BF16) and 1e-4 (F32). Prints a
 * table, one "PARITY ..." line per comparison and PASS/FAIL; exit 0 when
 * all pass, 1 otherwise, 77 without a usable CUDA device.
 */
#include "bench/bench_gpu_mem.h"
#include "sightline/common.h"
#include "sightline/encoder.h"
#include "sightline/sightline.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
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
    double per_s;     /* items per second (median of iterations) */
    long rss_kb;      /* peak RSS of the process */
    double gpu_mb;    /* device memory (see the header), < 0 when unknown */
    double dev_per_s; /* PyTorch on CUDA: inputs already on the GPU */
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

/* Returns items/s (median over iters) or a negative value on error;
 * *gpu_mb the device memory used (CUDA), else -1. */
static double run_sightline(const char *model, const char *device, int image, int batch, int iters,
                            int warmup, int threads, int eot, double *gpu_mb) {
    sl_encoder *enc = NULL;
    sl_encoder_opts opts = {.threads = threads, .device = device};
    int cuda = -1, bf16 = 1;
    *gpu_mb = -1;
    if (device && !sl_device_parse(device, &cuda, &bf16) && cuda >= 0) mem_begin(cuda);
    if (sl_encoder_open(model, &opts, &enc)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        return -1;
    }
    mem_sample();
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
    double times[256];
    if (iters > 256) iters = 256;
    for (int it = -warmup; it < iters; it++) {
        double t0 = sl_now();
        sl_status st = image ? sl_encoder_encode_images(enc, pix, (size_t)batch, out, NULL, 1)
                             : sl_encoder_encode_tokens(enc, ids, (size_t)batch, out, NULL, 1);
        if (st) {
            fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
            return -1;
        }
        if (it >= 0) times[it] = sl_now() - t0;
        mem_sample();
    }
    *gpu_mb = mem_used_mb();
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

/* Run fn in a child; its two double results (the value, > 0 on success,
 * and an extra figure) come back through a pipe and its peak RSS through
 * wait4. */
typedef double (*child_fn)(void *, double *extra);
static int in_child(child_fn fn, void *arg, result *r) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        double v[2] = {-1, -1};
        v[0] = fn(arg, &v[1]);
        ssize_t w = write(fd[1], v, sizeof v);
        _exit(w == (ssize_t)sizeof v && v[0] > 0 ? 0 : 1);
    }
    close(fd[1]);
    double v[2] = {-1, -1};
    ssize_t got = read(fd[0], v, sizeof v);
    close(fd[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)sizeof v || !WIFEXITED(status) ||
        WEXITSTATUS(status))
        return -1;
    r->per_s = v[0];
    r->gpu_mb = v[1];
    r->dev_per_s = -1;
    r->rss_kb = ru.ru_maxrss;
    return 0;
}

typedef struct job {
    const char *model, *device;
    int image, batch, iters, warmup, threads, eot;
    int rows, W, M; /* sgemm */
} job;

static double job_sightline(void *p, double *extra) {
    job *j = p;
    return run_sightline(j->model, j->device, j->image, j->batch, j->iters, j->warmup, j->threads,
                         j->eot, extra);
}
static double job_sgemm(void *p, double *extra) {
    job *j = p;
    *extra = -1;
    return run_sgemm(j->rows, j->W, j->M, j->threads);
}
/* CUDA devices this process would see (in a child, so that the parent
 * never initialises CUDA before it forks). */
static double job_probe(void *p, double *extra) {
    (void)p;
    *extra = -1;
    return sl_cuda_device_count();
}

/* ------------------------------------------------------------------------ */
/* PyTorch side                                                             */
/* ------------------------------------------------------------------------ */

static char torch_desc[128] = ""; /* "attn=... torch=..." from the CUDA runs */

/* torch_dev NULL: the CPU; else "cuda:N" with dtype "bf16" or "f32". */
static int run_torch(const char *py, const char *ref, const char *model, int image, int batch,
                     int iters, int threads, int eot, const char *torch_dev, const char *dtype,
                     int warmup, result *r) {
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "'%s' '%s' run '%s' %s %d %d %d %d", py, ref, model,
                     image ? "image" : "text", batch, iters, threads, eot);
    if (torch_dev && n > 0 && (size_t)n < sizeof cmd)
        snprintf(cmd + n, sizeof cmd - (size_t)n, " --device %s --dtype %s --warmup %d", torch_dev,
                 dtype, warmup);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[1024];
    int ok = 0;
    r->gpu_mb = r->dev_per_s = -1;
    while (fgets(line, sizeof line, f)) {
        double med;
        if (sscanf(line, "per_s=%lf median_s=%lf rss_kb=%ld", &r->per_s, &med, &r->rss_kb) != 3)
            continue;
        ok = 1;
        const char *s;
        if ((s = strstr(line, "dev_per_s="))) r->dev_per_s = atof(s + 10);
        if ((s = strstr(line, "gpu_peak_mb="))) r->gpu_mb = atof(s + 12);
        if ((s = strstr(line, "attn="))) {
            snprintf(torch_desc, sizeof torch_desc, "%s", s);
            torch_desc[strcspn(torch_desc, "\n")] = '\0';
        }
    }
    int rc = pclose(f);
    if (rc != 0 || !ok) fprintf(stderr, "bench_encoder: failed: %s\n", cmd);
    return rc == 0 && ok ? 0 : -1;
}

/* Machine-readable lines, printed after the tables. */
static char tail_buf[8192];
static void tail_add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tail_add(const char *fmt, ...) {
    size_t n = strlen(tail_buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tail_buf + n, sizeof tail_buf - n, fmt, ap);
    va_end(ap);
}

/* " v" in width (plus suffix), or "-" when v <= 0 (not measured). */
static void print_opt(double v, int width, int prec, const char *suffix) {
    if (v > 0)
        printf(" %*.*f%s", width, prec, v, suffix);
    else
        printf(" %*s", width + (int)strlen(suffix), "-");
}

/* ------------------------------------------------------------------------ */
/* Parity: the GPU path against the CPU path                                */
/* ------------------------------------------------------------------------ */

typedef struct cmp_stats {
    double maxdiff, maxref, mincos;
} cmp_stats;

/* Over n rows of d values: max |got - ref|, max |ref| and the smallest
 * cosine between a row of ref and the same row of got. */
static cmp_stats compare(const float *ref, const float *got, size_t n, size_t d) {
    cmp_stats s = {0, 0, 1};
    for (size_t i = 0; i < n; i++) {
        double dot = 0, nr = 0, ng = 0;
        for (size_t k = 0; k < d; k++) {
            double a = ref[i * d + k], b = got[i * d + k];
            double diff = fabs(a - b);
            if (!(diff <= s.maxdiff)) s.maxdiff = diff != diff ? INFINITY : diff; /* NaN: inf */
            if (fabs(a) > s.maxref) s.maxref = fabs(a);
            dot += a * b, nr += a * a, ng += b * b;
        }
        double cs = nr > 0 && ng > 0 ? dot / sqrt(nr * ng) : 0;
        if (cs < s.mincos || cs != cs) s.mincos = cs;
    }
    return s;
}

typedef struct outputs {
    float *img, *patches, *txt, *tok;
} outputs;

static void outputs_free(outputs *o) {
    free(o->img);
    free(o->patches);
    free(o->txt);
    free(o->tok);
    memset(o, 0, sizeof *o);
}

static sl_status encode_all(const char *model, const char *device, int threads, const float *pix,
                            const int32_t *ids, size_t n, outputs *o, double *secs) {
    sl_encoder *enc = NULL;
    sl_encoder_opts opts = {.threads = threads, .device = device};
    sl_status st = sl_encoder_open(model, &opts, &enc);
    if (st) return st;
    const sl_clip_config *c = sl_encoder_config(enc);
    size_t D = (size_t)c->embed_dim, P = (size_t)sl_clip_num_patches(c);
    size_t ctx = (size_t)c->context_length;
    o->img = malloc(n * D * sizeof(float));
    o->patches = malloc(n * P * D * sizeof(float));
    o->txt = malloc(n * D * sizeof(float));
    o->tok = malloc(n * ctx * D * sizeof(float));
    float *pooled2 = malloc(n * D * sizeof(float));
    if (!o->img || !o->patches || !o->txt || !o->tok || !pooled2) {
        free(pooled2);
        sl_encoder_free(enc);
        return sl_set_error(SL_ERR_NOMEM, "bench_encoder: out of memory");
    }
    double t0 = sl_now();
    if (!(st = sl_encoder_encode_images(enc, pix, n, o->img, o->patches, 0)) &&
        !(st = sl_encoder_encode_tokens(enc, ids, n, o->txt, NULL, 0)))
        st = sl_encoder_encode_tokens(enc, ids, n, pooled2, o->tok, 0);
    *secs = sl_now() - t0;
    free(pooled2);
    sl_encoder_free(enc);
    return st;
}

static int parity(const char *model, const char *device, int n, int threads) {
    int cuda = 0, bf16 = 1;
    if (device && (sl_device_parse(device, &cuda, &bf16) || cuda < 0)) cuda = 0;
    int count = sl_cuda_device_count();
    if (count <= cuda) {
        printf("bench_encoder --parity: no CUDA device cuda:%d (%d usable; %s): nothing to "
               "compare\n",
               cuda, count,
#ifdef SL_BENCH_CUDA
               "this build has CUDA"
#else
               "this build has no CUDA"
#endif
        );
        return 77;
    }
    sl_encoder *enc = NULL;
    if (sl_encoder_open(model, NULL, &enc)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        return 1;
    }
    sl_clip_config c = *sl_encoder_config(enc);
    sl_encoder_free(enc);
    size_t S = (size_t)c.image_size, ctx = (size_t)c.context_length, D = (size_t)c.embed_dim;
    size_t P = (size_t)sl_clip_num_patches(&c), N = (size_t)n;
    float *pix = malloc(N * 3 * S * S * sizeof(float));
    int32_t *ids = malloc(N * ctx * sizeof(int32_t));
    int *eots = malloc(N * sizeof(int));
    if (!pix || !ids || !eots) return 1;
    rng_state = 12345;
    for (size_t i = 0; i < N * 3 * S * S; i++) pix[i] = 2.0f * frand();
    int32_t eos = c.pool_argmax ? c.vocab_size - 1 : c.eos_token_id;
    for (size_t r = 0; r < N; r++) {
        int eot = r == 0 ? (int)ctx - 1 : (int)((r * 37 + 3) % ctx);
        eots[r] = eot;
        for (size_t t = 0; t < ctx; t++) {
            rng_state = rng_state * 1664525u + 1013904223u;
            int32_t v = (int32_t)((rng_state >> 8) % (unsigned)(c.vocab_size - 1));
            if (v == eos) v = 0;
            ids[r * ctx + t] = (int)t == eot ? eos : (int)t > eot ? 0 : v;
        }
    }
    printf("parity: sightline on the GPU against its CPU path (F32), same checkpoint and inputs\n");
    printf("model: %s\n       image W%d L%d H%d mlp %d, %d px / patch %d; text W%d L%d H%d, ctx "
           "%d; embed %d\n",
           model, c.vision.width, c.vision.layers, c.vision.heads, c.vision.mlp_width, c.image_size,
           c.patch_size, c.text.width, c.text.layers, c.text.heads, c.context_length, c.embed_dim);
    printf("inputs: %d images (uniform in [-2, 2)), %d token sequences, end token at", n, n);
    for (size_t r = 0; r < N; r++) printf(" %d", eots[r]);
    printf("\n");
    outputs cpu = {0};
    double secs;
    if (encode_all(model, "cpu", threads, pix, ids, N, &cpu, &secs)) {
        fprintf(stderr, "bench_encoder: cpu: %s\n", sl_last_error());
        return 1;
    }
    printf("cpu path: %.2f s\n\n", secs);
    printf("%-12s %-28s %11s %11s %10s %9s %9s %s\n", "device", "output", "max|diff|", "max|cpu|",
           "rel err", "tol", "min cos", "result");
    int pass = 0, total = 0;
    for (int k = 0; k < 2; k++) {
        char dev[32];
        snprintf(dev, sizeof dev, "%s:%d", k == 0 ? "cuda" : "cuda-f32", cuda);
        double tol = k == 0 ? 2e-2 : 1e-4;
        outputs g = {0};
        if (encode_all(model, dev, threads, pix, ids, N, &g, &secs)) {
            printf("%-12s %-28s %s: FAIL\n", dev, "(all)", sl_last_error());
            tail_add("PARITY device=%s output=all rel=nan tol=%g FAIL\n", dev, tol);
            total += 4;
            outputs_free(&g);
            continue;
        }
        struct {
            const char *name, *key;
            const float *a, *b;
            size_t rows, d;
        } rows[4] = {
            {"image embeddings", "image", cpu.img, g.img, N, D},
            {"image patch embeddings", "patches", cpu.patches, g.patches, N * P, D},
            {"text embeddings (packed)", "text", cpu.txt, g.txt, N, D},
            {"text token embeddings (all)", "tokens", cpu.tok, g.tok, N * ctx, D},
        };
        for (int i = 0; i < 4; i++) {
            cmp_stats s = compare(rows[i].a, rows[i].b, rows[i].rows, rows[i].d);
            double rel = s.maxref > 0 ? s.maxdiff / s.maxref : s.maxdiff;
            int ok = rel <= tol;
            pass += ok;
            total++;
            printf("%-12s %-28s %11.3e %11.3e %10.3e %9.0e %9.6f %s\n", dev, rows[i].name,
                   s.maxdiff, s.maxref, rel, tol, s.mincos, ok ? "PASS" : "FAIL");
            tail_add("PARITY device=%s output=%s rel=%.3e tol=%g mincos=%.6f %s\n", dev,
                     rows[i].key, rel, tol, s.mincos, ok ? "PASS" : "FAIL");
        }
        printf("%-12s (images, texts, texts with tokens: %.3f s, first call included)\n", dev,
               secs);
        outputs_free(&g);
    }
    outputs_free(&cpu);
    free(pix);
    free(ids);
    free(eots);
    fputs(tail_buf, stdout);
    printf("parity: %s (%d of %d within tolerance)\n", pass == total ? "PASS" : "FAIL", pass,
           total);
    return pass == total ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    const char *model = NULL, *py = "/usr/bin/python3", *device = "cpu", *arch = "b32";
    const char *towers = "both";
    const char *ref = SL_SOURCE_DIR "/bench/encoder_ref.py";
    int batch = -1, iters = -1, rounds = -1, threads = -1, warmup = -1, eot = 76;
    int do_parity = 0, no_ref = 0;
    double peak_tflops = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--parity")) {
            do_parity = 1;
            continue;
        }
        if (!strcmp(a, "--no-ref")) {
            no_ref = 1;
            continue;
        }
        if (!v) goto usage;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--iters"))
            iters = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--python"))
            py = v;
        else if (!strcmp(a, "--ref"))
            ref = v;
        else if (!strcmp(a, "--eot"))
            eot = atoi(v);
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--arch"))
            arch = v;
        else if (!strcmp(a, "--towers"))
            towers = v;
        else if (!strcmp(a, "--peak-tflops"))
            peak_tflops = atof(v);
        else
            goto usage;
        i++;
    }
    int cuda = -1, bf16 = 1;
    if (sl_device_parse(device, &cuda, &bf16)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        goto usage;
    }
    const int gpu = cuda >= 0;
    if (strcmp(arch, "b32") && strcmp(arch, "b16")) goto usage;
    const int do_image = strcmp(towers, "text") != 0, do_text = strcmp(towers, "image") != 0;
    if (strcmp(towers, "both") && strcmp(towers, "image") && strcmp(towers, "text")) goto usage;
    /* Defaults: the CPU's unchanged; the GPU's sized for a GPU. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (batch < 0) batch = do_parity ? 8 : gpu ? 256 : 32;
    if (iters < 0) iters = gpu ? 20 : 3;
    if (rounds < 0) rounds = 3;
    if (warmup < 0) warmup = gpu ? 3 : 1;
    if (threads < 0) threads = gpu || do_parity ? (int)(ncpu > 0 ? ncpu : 2) : 2;
    if (peak_tflops <= 0) peak_tflops = bf16 ? 989 : 67;
    if (batch < 1 || iters < 1 || iters > 256 || rounds < 1 || rounds > 32 || threads < 1 ||
        eot < 0 || warmup < 0)
        goto usage;

    /* A GPU run needs a device: ask in a child (the parent forks more). */
    if (gpu || do_parity) {
        result pr = {0};
        int count = in_child(job_probe, NULL, &pr) ? 0 : (int)pr.per_s;
        if (count <= (cuda < 0 ? 0 : cuda)) {
            printf("bench_encoder: no CUDA device cuda:%d for %s%s (%d usable; %s): nothing to "
                   "measure\n",
                   cuda < 0 ? 0 : cuda, do_parity ? "--parity" : "--device ",
                   do_parity ? "" : device, count,
#ifdef SL_BENCH_CUDA
                   "this build has CUDA"
#else
                   "this build has no CUDA"
#endif
            );
            return 77;
        }
    }

    char tmp[256] = "";
    int rc = 1;
    if (!model) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_encoder.XXXXXX");
        if (!mkdtemp(tmp)) return 1;
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' '%s' make '%s' %s", py, ref, tmp, arch);
        fprintf(stderr, "writing a ViT-%s-shaped random model into %s\n",
                strcmp(arch, "b16") ? "B/32" : "B/16", tmp);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_encoder: %s failed\n", cmd);
            goto done;
        }
        model = tmp;
    } else if (strcmp(arch, "b32")) {
        fprintf(stderr,
                "bench_encoder: --model given: --arch %s ignored (the model's own shape "
                "is used)\n",
                arch);
    }
    if (do_parity) {
        rc = parity(model, device, batch, threads);
        goto done;
    }

    /* Config (and FLOPs) from the model; no BLAS/OpenMP in this process. */
    sl_encoder *enc = NULL;
    if (sl_encoder_open(model, NULL, &enc)) {
        fprintf(stderr, "bench_encoder: %s\n", sl_last_error());
        goto done;
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
    double v_ptd[32], t_ptd[32];       /* PyTorch with inputs on the GPU */
    double gmem[4] = {-1, -1, -1, -1}; /* GPU MB: image sl, image torch, text sl, text torch */
    long rss[4] = {0};
    char torch_dev[32];
    snprintf(torch_dev, sizeof torch_dev, "cuda:%d", cuda);
    const char *tdev = gpu ? torch_dev : NULL, *tdtype = bf16 ? "bf16" : "f32";
    for (int r = 0; r < rounds; r++) {
        result res;
        job jv = {model, device,          1,       batch,  iters, warmup, threads,
                  eot,   batch * (int)Tv, (int)Wv, (int)Mv};
        job jt = {model, device,          0,       batch,  iters, warmup, threads,
                  eot,   batch * (int)Tt, (int)Wt, (int)Mt};
        v_sl[r] = v_pt[r] = t_sl[r] = t_pt[r] = g_v[r] = g_t[r] = v_ptd[r] = t_ptd[r] = -1;
        if (!gpu && do_image) {
            if (in_child(job_sgemm, &jv, &res)) goto fail;
            g_v[r] = res.per_s;
        }
        if (!gpu && do_text) {
            if (in_child(job_sgemm, &jt, &res)) goto fail;
            g_t[r] = res.per_s;
        }
        if (do_image) {
            if (in_child(job_sightline, &jv, &res)) goto fail;
            v_sl[r] = res.per_s;
            rss[0] = res.rss_kb > rss[0] ? res.rss_kb : rss[0];
            gmem[0] = res.gpu_mb > gmem[0] ? res.gpu_mb : gmem[0];
            if (!no_ref) {
                if (run_torch(py, ref, model, 1, batch, iters, threads, eot, tdev, tdtype, warmup,
                              &res))
                    goto fail;
                v_pt[r] = res.per_s;
                v_ptd[r] = res.dev_per_s;
                rss[1] = res.rss_kb > rss[1] ? res.rss_kb : rss[1];
                gmem[1] = res.gpu_mb > gmem[1] ? res.gpu_mb : gmem[1];
            }
        }
        if (do_text) {
            if (in_child(job_sightline, &jt, &res)) goto fail;
            t_sl[r] = res.per_s;
            rss[2] = res.rss_kb > rss[2] ? res.rss_kb : rss[2];
            gmem[2] = res.gpu_mb > gmem[2] ? res.gpu_mb : gmem[2];
            if (!no_ref) {
                if (run_torch(py, ref, model, 0, batch, iters, threads, eot, tdev, tdtype, warmup,
                              &res))
                    goto fail;
                t_pt[r] = res.per_s;
                t_ptd[r] = res.dev_per_s;
                rss[3] = res.rss_kb > rss[3] ? res.rss_kb : rss[3];
                gmem[3] = res.gpu_mb > gmem[3] ? res.gpu_mb : gmem[3];
            }
        }
        if (!gpu)
            fprintf(stderr,
                    "round %d: image %.2f vs torch %.2f /s (%.2fx), text %.2f vs %.2f /s (%.2fx), "
                    "sgemm %.0f / %.0f GFLOP/s\n",
                    r + 1, v_sl[r], v_pt[r], v_sl[r] / v_pt[r], t_sl[r], t_pt[r], t_sl[r] / t_pt[r],
                    g_v[r], g_t[r]);
        else
            fprintf(stderr,
                    "round %d: image %.1f vs torch %.1f (host) / %.1f (on GPU) /s, text %.1f vs "
                    "%.1f / %.1f /s\n",
                    r + 1, v_sl[r], v_pt[r], v_ptd[r], t_sl[r], t_pt[r], t_ptd[r]);
    }
    if (!gpu) {
        /* The CPU table, as it always was. */
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
        printf("       text W%d L%d H%d mlp %d, ctx %d (end token at %d): %.2f GFLOP/text "
               "(dense)\n",
               c.text.width, c.text.layers, c.text.heads, c.text.mlp_width, c.context_length, eot,
               txt_flop / 1e9);
        printf("%-6s %12s %12s %7s %14s %10s %9s %12s %12s\n", "tower", "sightline/s", "pytorch/s",
               "ratio", "sgemm GFLOP/s", "ceiling/s", "of ceil", "RSS sl MB", "RSS torch MB");
        if (do_image)
            printf("%-6s %12.2f %12.2f %6.2fx %14.1f %10.2f %8.1f%% %12.0f %12.0f\n", "image",
                   median(v_sl, rounds), median(v_pt, rounds), median(ratio_v, rounds), gv,
                   gv * 1e9 / img_flop, 100 * median(frac_v, rounds), rss[0] / 1024.0,
                   rss[1] / 1024.0);
        if (do_text)
            printf("%-6s %12.2f %12.2f %6.2fx %14.1f %10.2f %8.1f%% %12.0f %12.0f\n", "text",
                   median(t_sl, rounds), median(t_pt, rounds), median(ratio_t, rounds), gt,
                   gt * 1e9 / txt_flop, 100 * median(frac_t, rounds), rss[2] / 1024.0,
                   rss[3] / 1024.0);
        rc = 0;
        goto done;
    }

    /* The GPU table. */
    printf("CLIP encoder on %s (%s weights, F32 accumulate), batch %d, %d rounds x %d iterations "
           "after %d warm-up (medians), %d CPU threads\n",
           device, bf16 ? "BF16" : "F32", batch, rounds, iters, warmup, threads);
    printf("PyTorch: %s\n", no_ref ? "not run (--no-ref)" : *torch_desc ? torch_desc : "?");
    printf("         eager, %s weights and activations (fused qkv Linear, "
           "F.scaled_dot_product_attention when attn=sdpa), same GPU, same inputs\n",
           tdtype);
    printf("model: image W%d L%d H%d mlp %d, %d px / patch %d (%d tokens): %.2f GFLOP/image\n",
           c.vision.width, c.vision.layers, c.vision.heads, c.vision.mlp_width, c.image_size,
           c.patch_size, (int)Tv, img_flop / 1e9);
    printf("       text W%d L%d H%d mlp %d, ctx %d (end token at %d): %.2f GFLOP/text (dense)\n",
           c.text.width, c.text.layers, c.text.heads, c.text.mlp_width, c.context_length, eot,
           txt_flop / 1e9);
    printf("MFU against %.0f TFLOP/s (%s). sightline and torch-host: float32 host in, float32 "
           "host out; torch-GPU: inputs already on the GPU, outputs left there.\n",
           peak_tflops, bf16 ? "H100 SXM dense BF16" : "H100 SXM FP32");
    printf("%-6s %12s %8s %7s %12s %7s %12s %7s %8s %7s %9s %9s %8s %8s\n", "tower", "sightline/s",
           "TFLOP/s", "MFU", "torch-host/s", "ratio", "torch-GPU/s", "ratio", "TFLOP/s", "MFU",
           "GPU MB sl", "GPU MB pt", "RSS sl", "RSS pt");
    for (int k = 0; k < 2; k++) {
        if (k == 0 ? !do_image : !do_text) continue;
        double *sl = k == 0 ? v_sl : t_sl, *pt = k == 0 ? v_pt : t_pt,
               *ptd = k == 0 ? v_ptd : t_ptd;
        double flop = k == 0 ? img_flop : txt_flop;
        double rh[32], rd[32];
        for (int r = 0; r < rounds; r++) {
            rh[r] = pt[r] > 0 ? sl[r] / pt[r] : -1;
            rd[r] = ptd[r] > 0 ? sl[r] / ptd[r] : -1;
        }
        double s = median(sl, rounds), h = median(pt, rounds), d = median(ptd, rounds);
        double ratio_h = median(rh, rounds), ratio_d = median(rd, rounds);
        double s_tf = s * flop / 1e12, d_tf = d > 0 ? d * flop / 1e12 : -1;
        printf("%-6s %12.1f %8.1f %6.1f%%", k == 0 ? "image" : "text", s, s_tf,
               100 * s_tf / peak_tflops);
        print_opt(h, 12, 1, "");
        print_opt(ratio_h, 6, 2, "x");
        print_opt(d, 12, 1, "");
        print_opt(ratio_d, 6, 2, "x");
        print_opt(d_tf, 8, 1, "");
        print_opt(100 * d_tf / peak_tflops, 6, 1, "%");
        print_opt(gmem[2 * k], 9, 0, "");
        print_opt(gmem[2 * k + 1], 9, 0, "");
        printf(" %8.0f %8.0f\n", rss[2 * k] / 1024.0, rss[2 * k + 1] / 1024.0);
        tail_add("RESULT tower=%s device=%s dtype=%s patch=%d batch=%d gflop_per_item=%.3f "
                 "sl_per_s=%.2f sl_tflops=%.2f sl_mfu=%.4f torch_host_per_s=%.2f "
                 "ratio_vs_torch_host=%.3f torch_gpu_per_s=%.2f ratio_vs_torch_gpu=%.3f "
                 "torch_tflops=%.2f torch_mfu=%.4f sl_gpu_mb=%.0f torch_gpu_mb=%.0f\n",
                 k == 0 ? "image" : "text", device, bf16 ? "bf16" : "f32", c.patch_size, batch,
                 flop / 1e9, s, s_tf, s_tf / peak_tflops, h, ratio_h, d, ratio_d, d_tf,
                 d_tf > 0 ? d_tf / peak_tflops : -1, gmem[2 * k], gmem[2 * k + 1]);
    }
    fputs(tail_buf, stdout);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_encoder: a run failed\n");
    rc = 1;
done:
    if (*tmp) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return rc;
usage:
    fprintf(stderr,
            "usage: bench_encoder [--model DIR] [--arch b32|b16] [--device cpu|cuda[:N]|"
            "cuda-f32[:N]]\n"
            "                     [--towers both|image|text] [--batch N] [--iters N] [--rounds N]\n"
            "                     [--warmup N] [--threads N] [--eot POS] [--python PY]\n"
            "                     [--ref encoder_ref.py] [--no-ref] [--peak-tflops T]\n"
            "       bench_encoder --parity [--model DIR] [--arch b32|b16] [--device cuda[:N]] "
            "[--batch N] [--threads N]\n");
    return 2;
}
