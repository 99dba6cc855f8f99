/*
 * cli/commands.h - the shape of a subcommand and the exit codes every
 * subcommand uses. Each module defines its commands (indexer/index_cmd.c,
 * ...) and cli/main.c lists them.
 */
#ifndef SL_CLI_COMMANDS_H
#define SL_CLI_COMMANDS_H

#include <stdio.h>

enum {
    SL_EXIT_OK = 0,      /* everything done */
    SL_EXIT_FAILED = 1,  /* stopped by an error */
    SL_EXIT_USAGE = 2,   /* bad command line */
    SL_EXIT_PARTIAL = 3, /* done, some inputs skipped (listed in the summary) */
    SL_EXIT_BUSY = 75    /* another process holds the index (EX_TEMPFAIL) */
};

typedef struct sl_command {
    const char *name;                  /* "encode", "index", ... */
    const char *summary;               /* one line for `sightline --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    void (*help)(FILE *out);           /* full usage text */
} sl_command;

/* Subcommands defined in the modules (libsightline). */
int sl_cmd_tokenizer(int argc, char **argv); /* encoder/tokenizer_cmd.c */
void sl_cmd_tokenizer_help(FILE *out);
int sl_cmd_convert(int argc, char **argv); /* encoder/convert.c */
void sl_cmd_convert_help(FILE *out);
int sl_cmd_encode(int argc, char **argv); /* encoder/encode_cmd.c */
void sl_cmd_encode_help(FILE *out);
int sl_cmd_index(int argc, char **argv); /* indexer/index_cmd.c */
void sl_cmd_index_help(FILE *out);

int sl_cmd_eval(int argc, char **argv); /* query/eval_cmd.c */
void sl_cmd_eval_help(FILE *out);
int sl_cmd_eval_retrieval(int argc, char **argv); /* query/eval_retrieval.c */
int sl_cmd_eval_grounding(int argc, char **argv); /* query/eval_grounding.c */
int sl_cmd_query(int argc, char **argv);          /* query/query_cmd.c */
void sl_cmd_query_help(FILE *out);
int sl_cmd_report(int argc, char **argv); /* query/report_cmd.c */
void sl_cmd_report_help(FILE *out);
int sl_cmd_train(int argc, char **argv); /* trainer/train_cmd.c */
void sl_cmd_train_help(FILE *out);
int sl_cmd_corpus(int argc, char **argv); /* corpus/corpus_cmd.c */
void sl_cmd_corpus_help(FILE *out);

#endif
