/*
 * cli/commands.h - the shape of a subcommand and the exit codes every
 * subcommand uses. Each module defines its commands (indexer/index_cmd.c,
 * ...) and cli/main.c lists them.
 */
#ifndef SL_CLI_COMMANDS_H
#define SL_CLI_COMMANDS_H

#include <stdio.h>

enum {
    SL_EXIT_OK = 0,     /* everything done */
    SL_EXIT_FAILED = 1, /* stopped by an error */
    SL_EXIT_USAGE = 2,  /* bad command line */
    SL_EXIT_PARTIAL = 3 /* done, some inputs skipped (listed in the summary) */
};

typedef struct sl_command {
    const char *name;                  /* "encode", "index", ... */
    const char *summary;               /* one line for `sightline --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    void (*help)(FILE *out);           /* full usage text */
} sl_command;

#endif
