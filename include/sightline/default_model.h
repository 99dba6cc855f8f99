/*
 * sightline/default_model.h - the model a command uses when it is given no
 * --model.
 *
 * Resolution order (the first that holds a model wins):
 *   1. $SIGHTLINE_MODEL: a Hugging Face CLIP directory (with config.json) or
 *      a .safetensors file. When set (and not empty) it must hold a model:
 *      a wrong value is an error, never silently passed over.
 *   2. <directory of the running binary>/../share/sightline/models/demo, the
 *      installed layout (`cmake --install` puts bin/sightline and
 *      share/sightline/models/demo there).
 *   3. The source tree's models/demo (the path is compiled in), so a build
 *      tree's binary finds the model committed with the sources.
 * A directory candidate holds a model when it has a config.json.
 */
#ifndef SIGHTLINE_DEFAULT_MODEL_H
#define SIGHTLINE_DEFAULT_MODEL_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_MODEL_ENV "SIGHTLINE_MODEL" /* environment variable naming the default model */

/* Find the default model with the rules above. *path: its path (malloc'ed,
 * absolute for rules 2 and 3); *from: which rule found it ("SIGHTLINE_MODEL",
 * "installed", "source tree"; static string; may be NULL). Errors:
 * SL_ERR_NOT_FOUND naming every path tried and why each was passed over. */
sl_status sl_default_model(char **path, const char **from);

/* The rules above with their inputs given: `env` the value of
 * $SIGHTLINE_MODEL (NULL or "" = unset), `exe` the path of the binary (NULL =
 * skip rule 2), `source_dir` the source tree (NULL = skip rule 3). Same
 * results as sl_default_model. Exposed for tests. */
sl_status sl_default_model_find(const char *env, const char *exe, const char *source_dir,
                                char **path, const char **from);

/* For commands: *model = `given` when not NULL (*owned = NULL), else the
 * default model (*owned = the same malloc'ed string, for the caller to free),
 * logged once per process at info level. Errors as sl_default_model. */
sl_status sl_model_or_default(const char *given, const char **model, char **owned);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_DEFAULT_MODEL_H */
