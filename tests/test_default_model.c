/*
 * tests/test_default_model.c - the default model's resolution order
 * ($SIGHTLINE_MODEL, <bin>/../share/sightline/models/demo, the source tree's
 * models/demo) and the error naming every path tried.
 */
#include "sightline/default_model.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void touch(const char *path) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{}\n", f);
        fclose(f);
    }
}

static void mk(const char *root, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    CHECK_OK(sl_mkdir_p(p));
}

int main(void) {
    const char *tmp = sl_test_tmpdir();
    char exe[1024], src[1024], inst[1024], srcm[1024], p[1200], file[1024];
    snprintf(exe, sizeof exe, "%s/prefix/bin/sightline", tmp);
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(inst, sizeof inst, "%s/prefix/share/sightline/models/demo", tmp);
    snprintf(srcm, sizeof srcm, "%s/src/models/demo", tmp);
    mk(tmp, "prefix/bin");
    touch(exe);
    char *path = NULL;
    const char *from = NULL;

    /* nothing anywhere: one error naming every candidate */
    CHECK_ERR(sl_default_model_find(NULL, exe, src, &path, &from), SL_ERR_NOT_FOUND,
              "SIGHTLINE_MODEL (not set)");
    CHECK(strstr(sl_last_error(), "/prefix/share/sightline/models/demo (not there)"));
    CHECK(strstr(sl_last_error(), "/src/models/demo (not there)"));
    CHECK(strstr(sl_last_error(), "--model"));
    CHECK(path == NULL && from == NULL);
    CHECK_ERR(sl_default_model_find("", NULL, NULL, &path, &from), SL_ERR_NOT_FOUND,
              "no default model found");

    /* a source tree folder without config.json is passed over, and said so */
    mk(tmp, "src/models/demo");
    CHECK_ERR(sl_default_model_find(NULL, exe, src, &path, &from), SL_ERR_NOT_FOUND,
              "/src/models/demo (no config.json)");

    /* 3. the source tree */
    snprintf(p, sizeof p, "%s/config.json", srcm);
    touch(p);
    CHECK_OK(sl_default_model_find(NULL, exe, src, &path, &from));
    CHECK(path && strstr(path, "/src/models/demo") && path[0] == '/');
    CHECK(from && !strcmp(from, "source tree"));
    free(path);

    /* 2. installed wins over the source tree, returned without ".." */
    mk(tmp, "prefix/share/sightline/models/demo");
    snprintf(p, sizeof p, "%s/config.json", inst);
    touch(p);
    CHECK_OK(sl_default_model_find(NULL, exe, src, &path, &from));
    CHECK(path && strstr(path, "/prefix/share/sightline/models/demo") && !strstr(path, ".."));
    CHECK(from && !strcmp(from, "installed"));
    free(path);

    /* 1. the environment wins over both: a directory or a file */
    CHECK_OK(sl_default_model_find(srcm, exe, src, &path, &from));
    CHECK(path && !strcmp(path, srcm));
    CHECK(from && !strcmp(from, "SIGHTLINE_MODEL"));
    free(path);
    snprintf(file, sizeof file, "%s/open_clip.safetensors", tmp);
    touch(file);
    CHECK_OK(sl_default_model_find(file, exe, src, &path, &from));
    CHECK(path && !strcmp(path, file));
    free(path);

    /* a wrong $SIGHTLINE_MODEL is an error, not passed over */
    snprintf(p, sizeof p, "%s/nowhere", tmp);
    path = NULL;
    CHECK_ERR(sl_default_model_find(p, exe, src, &path, &from), SL_ERR_NOT_FOUND,
              "SIGHTLINE_MODEL=");
    CHECK(strstr(sl_last_error(), "/nowhere: no model there (not there)"));
    CHECK(path == NULL);
    snprintf(p, sizeof p, "%s/prefix", tmp);
    CHECK_ERR(sl_default_model_find(p, exe, src, &path, &from), SL_ERR_NOT_FOUND, "no config.json");

    /* sl_model_or_default: a given model is returned as is, nothing owned */
    const char *m = NULL;
    char *owned = (char *)1;
    CHECK_OK(sl_model_or_default("given/model", &m, &owned));
    CHECK(m && !strcmp(m, "given/model") && owned == NULL);
    /* and without one, $SIGHTLINE_MODEL */
    setenv(SL_MODEL_ENV, srcm, 1);
    CHECK_OK(sl_model_or_default(NULL, &m, &owned));
    CHECK(owned && m == owned && !strcmp(m, srcm));
    free(owned);
    CHECK_OK(sl_default_model(&path, &from));
    CHECK(path && !strcmp(path, srcm) && !strcmp(from, "SIGHTLINE_MODEL"));
    free(path);
    setenv(SL_MODEL_ENV, p, 1);
    CHECK_ERR(sl_model_or_default(NULL, &m, &owned), SL_ERR_NOT_FOUND, "SIGHTLINE_MODEL=");

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return sl_test_finish("test_default_model");
}
