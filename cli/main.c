/*
 * cli/main.c - the `sightline` command: global options and dispatch to each
 * module's subcommand.
 *
 * Exit codes (every subcommand): 0 ok, 1 failed, 2 usage error, 3 finished
 * but some inputs were skipped (the summary says which and why).
 */
#include "sightline/sightline.h"
#include "cli/commands.h"
#include "sightline/default_model.h"

#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* sightline info                                                           */
/* ------------------------------------------------------------------------ */

static void info_help(FILE *out) {
    fputs("usage: sightline info [--help]\n"
          "\n"
          "Print the build (version, dependencies, CUDA and NCCL support), the default\n"
          "model (used by commands given no --model) and what this machine offers at\n"
          "run time (OpenMP threads, CUDA devices).\n"
          "\n"
          "The default model is the first of: $SIGHTLINE_MODEL; <bin>/../share/sightline/\n"
          "models/demo (installed); the source tree's models/demo.\n",
          out);
}

/* "default model: PATH (from RULE)", or why there is none. */
static void print_default_model(FILE *out) {
    char *path = NULL;
    const char *from = NULL;
    if (sl_default_model(&path, &from) == SL_OK)
        fprintf(out, "default model: %s (from %s)\n", path, from);
    else
        fprintf(out, "default model: none: %s\n", sl_last_error());
    free(path);
}

extern char *openblas_get_config(void);
extern int openblas_get_num_threads(void);

static int info_run(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            info_help(stdout);
            return SL_EXIT_OK;
        }
        fprintf(stderr, "sightline info: unknown argument '%s'\n", argv[i]);
        return SL_EXIT_USAGE;
    }
    fputs(sl_build_info(), stdout);
    print_default_model(stdout);
    printf("runtime\n");
    printf("  OpenMP threads: %d\n", omp_get_max_threads());
    printf("  OpenBLAS: %s, %d threads\n", openblas_get_config(), openblas_get_num_threads());
    printf("  CUDA devices: %d\n", sl_cuda_device_count());
    printf("  log level: %s (set SL_LOG=debug|info|warn|error)\n",
           (const char *[]){"debug", "info", "warn", "error", "off"}[sl_log_get_level()]);
    return SL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* Command table                                                            */
/* ------------------------------------------------------------------------ */

static const sl_command sl_commands[] = {
    {"corpus", "build the demo emoji corpus (captions, grounding scenes)", sl_cmd_corpus,
     sl_cmd_corpus_help},
    {"convert", "copy a model directory with its weights in F16, BF16 or F32", sl_cmd_convert,
     sl_cmd_convert_help},
    {"encode", "embed images or texts into .npy arrays", sl_cmd_encode, sl_cmd_encode_help},
    {"eval", "retrieval recall and phrase grounding accuracy on standard benchmarks", sl_cmd_eval,
     sl_cmd_eval_help},
    {"index", "build and update an image index (FAISS + RocksDB)", sl_cmd_index, sl_cmd_index_help},
    {"query", "batch text, image and phrase lookups against an index", sl_cmd_query,
     sl_cmd_query_help},
    {"report", "one HTML page from query results and evaluation figures", sl_cmd_report,
     sl_cmd_report_help},
    {"train", "train a CLIP-style model contrastively", sl_cmd_train, sl_cmd_train_help},
    {"tokenizer", "train a BPE vocabulary, tokenize texts", sl_cmd_tokenizer,
     sl_cmd_tokenizer_help},
    {"info", "show the build, its dependencies and the devices found", info_run, info_help},
};
static const size_t sl_ncommands = sizeof sl_commands / sizeof sl_commands[0];

static void usage(FILE *out) {
    fprintf(out,
            "usage: sightline [--version] [--help] <command> [<args>]\n"
            "\n"
            "sightline %s: batch retrieval and indexing for vision-language search.\n"
            "\n"
            "commands:\n",
            sl_version());
    for (size_t i = 0; i < sl_ncommands; i++)
        fprintf(out, "  %-12s %s\n", sl_commands[i].name, sl_commands[i].summary);
    fputs("\n"
          "'sightline <command> --help' describes a command.\n"
          "Environment: SL_LOG=debug|info|warn|error|off sets the log level (default info);\n"
          "SIGHTLINE_MODEL=PATH sets the model of commands given no --model ('sightline\n"
          "info' shows the one found).\n"
          "Exit codes: 0 ok, 1 failed, 2 usage error, 3 done with some inputs skipped,\n"
          "75 the index is in use by another run.\n",
          out);
}

static const sl_command *find_command(const char *name) {
    for (size_t i = 0; i < sl_ncommands; i++)
        if (!strcmp(sl_commands[i].name, name)) return &sl_commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    const char *a = argv[1];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        usage(stdout);
        return SL_EXIT_OK;
    }
    if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
        printf("sightline %s\n", sl_version());
        print_default_model(stdout);
        return SL_EXIT_OK;
    }
    if (!strcmp(a, "help")) {
        if (argc < 3) {
            usage(stdout);
            return SL_EXIT_OK;
        }
        const sl_command *c = find_command(argv[2]);
        if (!c) {
            fprintf(stderr, "sightline: no command '%s' (see 'sightline --help')\n", argv[2]);
            return SL_EXIT_USAGE;
        }
        c->help(stdout);
        return SL_EXIT_OK;
    }
    const sl_command *c = find_command(a);
    if (!c) {
        fprintf(stderr, "sightline: no command '%s' (see 'sightline --help')\n", a);
        return SL_EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
