/*
 * tests/test_encoder.c - parity of the CLIP encoder with the PyTorch
 * reference (tests/reference/clip_ref.py): the script writes random-weight
 * checkpoints (HF and OpenCLIP layouts; F32, F16, BF16; several shapes) with
 * inputs and reference embeddings; every case is opened with
 * sl_encoder_open and compared (max abs difference <= 1e-4).
 *
 * usage: test_encoder CLIP_REF_PY   (skips, 77, when python3 lacks torch)
 */
#include "sightline/encoder.h"
#include "sightline/npy.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PY  "/usr/bin/python3"
#define TOL 1e-4

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static int load(const char *dir, const char *name, sl_npy *arr) {
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sl_status st = sl_npy_read(path, arr);
    CHECK_MSG(st == SL_OK, "%s: %s", path, sl_last_error());
    return st == SL_OK;
}

static void normalize_rows(float *x, size_t n, size_t d) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        double inv = s > 0 ? 1.0 / sqrt(s) : 1.0;
        for (size_t j = 0; j < d; j++) x[i * d + j] = (float)(x[i * d + j] * inv);
    }
}

static void run_case(const char *name, const char *model) {
    char dir[2048];
    snprintf(dir, sizeof dir, "%s", model);
    if (strstr(dir, ".safetensors")) *strrchr(dir, '/') = 0;
    sl_encoder *enc = NULL;
    sl_encoder_opts opts = {.threads = 2};
    sl_status st = sl_encoder_open(model, &opts, &enc);
    CHECK_MSG(st == SL_OK, "%s: open: %s", name, sl_last_error());
    if (st) return;
    const sl_clip_config *c = sl_encoder_config(enc);
    sl_npy pix = {0}, tok = {0}, g = {0}, pa = {0}, pv = {0}, tp = {0}, tt = {0};
    sl_encoder *enc_final = NULL;
    sl_encoder_opts fo = {.threads = 2, .patch_tokens = SL_PATCH_TOKENS_FINAL};
    CHECK_OK(sl_encoder_open(model, &fo, &enc_final));
    if (!enc_final) goto done;
    if (!load(dir, "pixels.npy", &pix) || !load(dir, "tokens.npy", &tok) ||
        !load(dir, "img_global.npy", &g) || !load(dir, "img_patches.npy", &pa) ||
        !load(dir, "img_patches_value.npy", &pv) || !load(dir, "txt_pooled.npy", &tp) ||
        !load(dir, "txt_tokens.npy", &tt))
        goto done;
    const size_t ni = pix.shape[0], nt = tok.shape[0], D = (size_t)c->embed_dim;
    const size_t P = (size_t)sl_clip_num_patches(c), ctx = (size_t)c->context_length;
    CHECK(g.shape[1] == D && pa.shape[1] == P && tt.shape[1] == ctx);
    float *out = calloc(ni * D, sizeof(float)), *patches = calloc(ni * P * D, sizeof(float));
    float *tout = calloc(nt * D, sizeof(float)), *ttok = calloc(nt * ctx * D, sizeof(float));
    float *ref = malloc(sizeof(float) * (ni > nt ? ni : nt) * D);
    /* Images, with patches: by default the last block's value path (the
     * class tokens through the pooled-only block)... */
    CHECK(sl_encoder_patch_tokens(enc) == SL_PATCH_TOKENS_VALUE);
    CHECK_OK(sl_encoder_encode_images(enc, pix.data, ni, out, patches, 0));
    double d_gv = max_abs_diff(out, g.data, ni * D);
    double d_pv = max_abs_diff(patches, pv.data, ni * P * D);
    /* A finer patch grid: the input and positions resized to S + 2p. */
    double d_pr = 0;
    {
        const sl_clip_config *cc = sl_encoder_config(enc);
        sl_encoder_opts ro = {.threads = 2, .region_size = cc->image_size + 2 * cc->patch_size};
        sl_encoder *er = NULL;
        sl_npy prr = {0};
        CHECK_OK(sl_encoder_open(model, &ro, &er));
        if (er && load(dir, "img_patches_region.npy", &prr)) {
            const size_t Pr = (size_t)sl_encoder_num_patches(er);
            CHECK(sl_encoder_patch_grid(er) == cc->image_size / cc->patch_size + 2);
            CHECK(prr.shape[1] == Pr);
            float *pr = calloc(ni * Pr * D, sizeof(float));
            CHECK_OK(sl_encoder_encode_images(er, pix.data, ni, out, pr, 0));
            d_pr = max_abs_diff(pr, prr.data, ni * Pr * D);
            CHECK_MSG(max_abs_diff(out, g.data, ni * D) <= TOL, "%s: global with regions", name);
            free(pr);
        }
        sl_npy_free(&prr);
        sl_encoder_free(er);
    }
    /* ... and with FINAL, every row through the last block. */
    CHECK(sl_encoder_patch_tokens(enc_final) == SL_PATCH_TOKENS_FINAL);
    CHECK_OK(sl_encoder_encode_images(enc_final, pix.data, ni, out, patches, 0));
    double d_g = max_abs_diff(out, g.data, ni * D);
    double d_p = max_abs_diff(patches, pa.data, ni * P * D);
    /* Images, pooled only (last block pruned), normalised. */
    CHECK_OK(sl_encoder_encode_images(enc, pix.data, ni, out, NULL, 1));
    memcpy(ref, g.data, sizeof(float) * ni * D);
    normalize_rows(ref, ni, D);
    double d_gn = max_abs_diff(out, ref, ni * D);
    CHECK_OK(sl_encoder_encode_images(enc, pix.data, ni, out, NULL, 0));
    double d_g2 = max_abs_diff(out, g.data, ni * D);
    /* One image at a time gives the same. */
    for (size_t i = 0; i < ni; i++)
        CHECK_OK(sl_encoder_encode_images(
            enc, (const float *)pix.data + i * 3 * pix.shape[2] * pix.shape[3], 1, out + i * D,
            NULL, 0));
    double d_g1 = max_abs_diff(out, g.data, ni * D);
    /* Texts: every position, then pooled only (trimmed), normalised. */
    CHECK_OK(sl_encoder_encode_tokens(enc, tok.data, nt, tout, ttok, 0));
    double d_t = max_abs_diff(tout, tp.data, nt * D);
    double d_tt = max_abs_diff(ttok, tt.data, nt * ctx * D);
    CHECK_OK(sl_encoder_encode_tokens(enc, tok.data, nt, tout, NULL, 0));
    double d_t2 = max_abs_diff(tout, tp.data, nt * D);
    CHECK_OK(sl_encoder_encode_tokens(enc, tok.data, nt, tout, NULL, 1));
    memcpy(ref, tp.data, sizeof(float) * nt * D);
    normalize_rows(ref, nt, D);
    double d_tn = max_abs_diff(tout, ref, nt * D);
    printf("%-18s global %.2e (pooled-only %.2e, one-by-one %.2e, normalised %.2e, with value "
           "patches %.2e)  patches final %.2e value %.2e  text %.2e (with tokens %.2e, "
           "normalised %.2e)  tokens %.2e\n",
           name, d_g, d_g2, d_g1, d_gn, d_gv, d_p, d_pv, d_t2, d_t, d_tn, d_tt);
    CHECK_MSG(d_g <= TOL && d_g2 <= TOL && d_g1 <= TOL && d_gn <= TOL && d_gv <= TOL, "%s: global",
              name);
    CHECK_MSG(d_p <= TOL, "%s: patches %g", name, d_p);
    CHECK_MSG(d_pv <= TOL, "%s: value patches %g", name, d_pv);
    CHECK_MSG(d_pr <= TOL, "%s: region patches %g", name, d_pr);
    printf("%-18s region patches (grid +2) %.2e\n", name, d_pr);
    CHECK_MSG(d_t <= TOL && d_t2 <= TOL && d_tn <= TOL, "%s: text", name);
    CHECK_MSG(d_tt <= TOL, "%s: text tokens %g", name, d_tt);
    free(out);
    free(patches);
    free(tout);
    free(ttok);
    free(ref);
done:
    sl_npy_free(&pix);
    sl_npy_free(&tok);
    sl_npy_free(&g);
    sl_npy_free(&pa);
    sl_npy_free(&pv);
    sl_npy_free(&tp);
    sl_npy_free(&tt);
    sl_encoder_free(enc);
    sl_encoder_free(enc_final);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_encoder CLIP_REF_PY\n");
        return 2;
    }
    if (system(PY " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        printf("test_encoder: " PY " cannot import torch: skipped\n");
        return SL_TEST_SKIP;
    }
    const char *tmp = sl_test_tmpdir();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, PY " '%s' cases '%s'", argv[1], tmp);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "reference script failed: %s", cmd);
    if (rc) return sl_test_finish("test_encoder");
    char list[1024];
    snprintf(list, sizeof list, "%s/cases.txt", tmp);
    FILE *f = fopen(list, "r");
    CHECK(f != NULL);
    int cases = 0;
    char line[2048];
    while (f && fgets(line, sizeof line, f)) {
        char name[256], path[1792];
        if (sscanf(line, "%255s %1791s", name, path) != 2) continue;
        run_case(name, path);
        cases++;
    }
    if (f) fclose(f);
    CHECK(cases >= 5);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return sl_test_finish("test_encoder");
}
