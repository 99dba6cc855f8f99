/*
 * tests/test_train_parity.c - 10 AdamW steps (fixed batch, no augmentation,
 * no shuffle; warmup + cosine; weight decay on weight matrices; clipping at
 * 1.0) against torch.optim.AdamW (tests/reference/train_steps_ref.py, same
 * init from the checkpoint it writes): the loss before every update within
 * 1e-5 relative, and the final parameters close (relative L2 norm 1e-4).
 *
 * usage: test_train_parity TRAIN_STEPS_REF_PY   (skips, 77, when
 * /usr/bin/python3 cannot import torch)
 */
#include "sightline/safetensors.h"
#include "testutil.h"
#include "trainer/model.h"
#include "trainer/optim.h"

#include <stdint.h>

#define PY        "/usr/bin/python3"
#define LOSS_TOL  1e-5
#define PARAM_TOL 1e-4

static int read_bin(const char *path, void *dst, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(dst, 1, bytes, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return got == bytes && !extra ? 0 : -1;
}

static void run(const char *root) {
    char path[800];
    snprintf(path, sizeof path, "%s/model", root);
    const int B = 6;
    sl_train_model *m = NULL;
    CHECK_OK(sl_train_model_load(path, B, &m));
    if (!m) return;
    double lr = 0, clip = 0, ref[64];
    int warmup = 0, steps = 0;
    snprintf(path, sizeof path, "%s/hparams.txt", root);
    FILE *f = fopen(path, "r");
    CHECK(f && fscanf(f, "%lf %d %d %lf", &lr, &warmup, &steps, &clip) == 4);
    if (f) fclose(f);
    CHECK(steps > 0 && steps <= 64);
    if (steps <= 0 || steps > 64) steps = 0;
    snprintf(path, sizeof path, "%s/losses.txt", root);
    f = fopen(path, "r");
    for (int i = 0; i < steps; i++) CHECK(f && fscanf(f, "%lf", &ref[i]) == 1);
    if (f) fclose(f);
    const int S = m->cfg.image_size, ctx = m->cfg.context_length;
    float *pixels = malloc(sizeof(float) * (size_t)B * 3 * S * S);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)B * ctx);
    snprintf(path, sizeof path, "%s/pixels.bin", root);
    CHECK(read_bin(path, pixels, sizeof(float) * (size_t)B * 3 * S * S) == 0);
    snprintf(path, sizeof path, "%s/tokens.bin", root);
    CHECK(read_bin(path, tokens, sizeof(int32_t) * (size_t)B * ctx) == 0);
    sl_adamw_config ac = sl_adamw_defaults();
    ac.grad_clip = clip;
    sl_adamw opt;
    CHECK_OK(sl_adamw_init(&opt, &ac, m->num_params));
    double worst = 0;
    int clipped = 0;
    for (int s = 0; s < steps; s++) {
        float loss = 0;
        double gn = 0;
        sl_train_model_zero_grad(m);
        CHECK_OK(sl_train_model_forward(m, pixels, tokens, B, &loss));
        CHECK_OK(sl_train_model_backward(m));
        CHECK_OK(sl_adamw_step(&opt, m, sl_lr_cosine(lr, warmup, steps, s), 1.0, &gn));
        clipped += gn > clip;
        double rel = fabs(loss - ref[s]) / fabs(ref[s]);
        if (rel > worst) worst = rel;
        printf("step %2d: loss %.9g (ref %.9g) rel. error %.3g, grad norm %.4g\n", s, (double)loss,
               ref[s], rel, gn);
        CHECK_MSG(rel <= LOSS_TOL, "step %d: loss rel. error %g", s, rel);
    }
    /* final parameters */
    sl_safetensors *fs = NULL;
    snprintf(path, sizeof path, "%s/final.safetensors", root);
    CHECK_OK(sl_safetensors_open(path, &fs));
    double num = 0, den = 0;
    float *buf = malloc(sizeof(float) * m->num_params);
    for (size_t i = 0; fs && buf && i < m->num_tensors; i++) {
        float *p;
        const sl_train_tensor *t = sl_train_model_tensor(m, i, &p, NULL);
        const sl_tensor_info *ti = sl_safetensors_find(fs, t->name);
        CHECK_MSG(ti && ti->count == t->count, "final '%s'", t->name);
        if (!ti || ti->count != t->count) continue;
        CHECK_OK(sl_tensor_to_f32(ti, buf));
        for (size_t j = 0; j < t->count; j++) {
            double d = (double)p[j] - buf[j];
            num += d * d;
            den += (double)buf[j] * buf[j];
        }
    }
    double prel = den > 0 ? sqrt(num / den) : 1;
    printf("%d AdamW steps (%d clipped): worst loss rel. error %.3g; final parameters rel. L2 "
           "error %.3g\n",
           steps, clipped, worst, prel);
    CHECK_MSG(prel <= PARAM_TOL, "final parameters rel. error %g", prel);
    free(buf);
    sl_safetensors_free(fs);
    sl_adamw_free(&opt);
    free(pixels);
    free(tokens);
    sl_train_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_train_parity TRAIN_STEPS_REF_PY\n");
        return 2;
    }
    if (system(PY " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_train_parity: %s cannot import torch: skipped\n", PY);
        return SL_TEST_SKIP;
    }
    const char *tmp = sl_test_tmpdir();
    char cmd[1400], root[600];
    snprintf(root, sizeof root, "%s/ref", tmp);
    snprintf(cmd, sizeof cmd, PY " '%s' '%s'", argv[1], root);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_train_parity: reference script failed: %s\n", cmd);
        CHECK(0);
    } else {
        run(root);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return sl_test_finish("test_train_parity");
}
