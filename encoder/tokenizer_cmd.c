/*
 * encoder/tokenizer_cmd.c - `sightline tokenizer`: train a BPE vocabulary
 * from captions, or print the token ids of texts.
 */
#include "cli/commands.h"
#include "sightline/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

void sl_cmd_tokenizer_help(FILE *out) {
    fputs("usage: sightline tokenizer train --captions FILE --out DIR [--vocab-size N]\n"
          "                                 [--min-freq N] [--quiet]\n"
          "       sightline tokenizer encode --model-dir DIR [--context N] [--pad] TEXT... | -\n"
          "       sightline tokenizer --help\n"
          "\n"
          "CLIP's byte-level BPE tokenizer (Hugging Face vocab.json + merges.txt).\n"
          "\n"
          "train   learn a vocabulary from FILE (UTF-8, one caption per line) and write\n"
          "        DIR/vocab.json and DIR/merges.txt.\n"
          "  --captions FILE   the captions\n"
          "  --out DIR         where to write (created when missing)\n"
          "  --vocab-size N    tokens in the vocabulary, 512 byte symbols and the two\n"
          "                    special tokens included (default 8192, at least 514)\n"
          "  --min-freq N      stop when the most frequent pair occurs fewer than N times\n"
          "                    (default 2)\n"
          "  --quiet           no progress display or summary\n"
          "\n"
          "encode  print the model input ids of each TEXT (or of each line of standard\n"
          "        input with '-'), one line per text: <|startoftext|>, the BPE ids,\n"
          "        <|endoftext|>, truncated to the context length.\n"
          "  --model-dir DIR   directory holding vocab.json and merges.txt\n"
          "  --context N       context length (default 77, at least 2)\n"
          "  --pad             also print the padding (0) up to the context length\n"
          "\n"
          "Text is cleaned as CLIP does (whitespace collapsed, stripped, lower-cased;\n"
          "no ftfy repair or HTML unescaping).\n",
          out);
}

/* Parse a decimal int in [lo, hi]; -1 on a bad value. */
static int parse_int(const char *s, long lo, long hi, int *out) {
    long long v;
    if (sl_parse_int_arg(s, lo, hi, &v)) return -1;
    *out = (int)v; /* lo..hi fit in an int */
    return 0;
}

static int usage_error(const char *fmt, const char *arg) {
    fputs("sightline tokenizer: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see 'sightline tokenizer --help')\n", stderr);
    return SL_EXIT_USAGE;
}

/* The value of option argv[*i] (moving *i past it); NULL when missing. */
static const char *opt_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

static int cmd_train(int argc, char **argv) {
    const char *captions = NULL, *out = NULL;
    int vocab_size = 8192, min_freq = 2, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sl_cmd_tokenizer_help(stdout);
            return SL_EXIT_OK;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (!strcmp(a, "--captions")) {
            if (!(captions = opt_value(argc, argv, &i))) return usage_error("%s needs a value", a);
        } else if (!strcmp(a, "--out")) {
            if (!(out = opt_value(argc, argv, &i))) return usage_error("%s needs a value", a);
        } else if (!strcmp(a, "--vocab-size")) {
            if (!(v = opt_value(argc, argv, &i)) || parse_int(v, 514, 1 << 20, &vocab_size))
                return usage_error("--vocab-size needs an integer in 514..1048576, not '%s'",
                                   v ? v : "");
        } else if (!strcmp(a, "--min-freq")) {
            if (!(v = opt_value(argc, argv, &i)) || parse_int(v, 1, INT_MAX, &min_freq))
                return usage_error("--min-freq needs a positive integer, not '%s'", v ? v : "");
        } else {
            return usage_error("train: unknown argument '%s'", a);
        }
    }
    if (!captions) return usage_error("train: %s is required", "--captions FILE");
    if (!out) return usage_error("train: %s is required", "--out DIR");
    if (quiet && sl_log_get_level() < SL_LOG_WARN) sl_log_set_level(SL_LOG_WARN);
    if (sl_tokenizer_train(captions, vocab_size, min_freq, out)) {
        fprintf(stderr, "sightline tokenizer: %s\n", sl_last_error());
        return SL_EXIT_FAILED;
    }
    return SL_EXIT_OK;
}

/* Print the ids of one text; 0 or -1 (error already printed). */
static int encode_one(const sl_tokenizer *tok, const char *text, int ctx, int pad, int32_t *ids) {
    int used = 0;
    if (sl_tokenizer_encode(tok, text, ctx, 0, ids, &used)) {
        fprintf(stderr, "sightline tokenizer: %s\n", sl_last_error());
        return -1;
    }
    int n = pad ? ctx : used;
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    return 0;
}

static int cmd_encode(int argc, char **argv) {
    const char *dir = NULL, *v;
    int ctx = 77, pad = 0, first_text = 0, ntexts = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ntexts) { /* texts come last */
            ntexts++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sl_cmd_tokenizer_help(stdout);
            return SL_EXIT_OK;
        } else if (!strcmp(a, "--model-dir")) {
            if (!(dir = opt_value(argc, argv, &i))) return usage_error("%s needs a value", a);
        } else if (!strcmp(a, "--context")) {
            if (!(v = opt_value(argc, argv, &i)) || parse_int(v, 2, 1 << 20, &ctx))
                return usage_error("--context needs an integer in 2..1048576, not '%s'",
                                   v ? v : "");
        } else if (!strcmp(a, "--pad")) {
            pad = 1;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc) {
                first_text = i + 1;
                ntexts = 1;
            }
        } else if (a[0] == '-' && a[1]) {
            return usage_error("encode: unknown option '%s'", a);
        } else {
            first_text = i;
            ntexts = 1;
        }
    }
    if (!dir) return usage_error("encode: %s is required", "--model-dir DIR");
    if (!ntexts) return usage_error("encode: %s", "no TEXT given (use '-' to read standard input)");
    sl_tokenizer *tok = NULL;
    if (sl_tokenizer_open_dir(dir, &tok)) {
        fprintf(stderr, "sightline tokenizer: %s\n", sl_last_error());
        return SL_EXIT_FAILED;
    }
    int32_t *ids = malloc((size_t)ctx * sizeof *ids);
    int rc = ids ? SL_EXIT_OK : SL_EXIT_FAILED;
    if (!ids) fprintf(stderr, "sightline tokenizer: out of memory\n");
    for (int i = first_text; ids && i < argc && rc == SL_EXIT_OK; i++) {
        if (strcmp(argv[i], "-") != 0) {
            if (encode_one(tok, argv[i], ctx, pad, ids)) rc = SL_EXIT_FAILED;
            continue;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) >= 0) {
            if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
            if (encode_one(tok, line, ctx, pad, ids)) {
                rc = SL_EXIT_FAILED;
                break;
            }
        }
        free(line);
    }
    if (fflush(stdout) != 0 && rc == SL_EXIT_OK) {
        fprintf(stderr, "sightline tokenizer: writing the output: %s\n", strerror(errno));
        rc = SL_EXIT_FAILED;
    }
    free(ids);
    sl_tokenizer_free(tok);
    return rc;
}

int sl_cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        sl_cmd_tokenizer_help(stderr);
        return SL_EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        sl_cmd_tokenizer_help(stdout);
        return SL_EXIT_OK;
    }
    if (!strcmp(sub, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(sub, "encode")) return cmd_encode(argc - 1, argv + 1);
    return usage_error("unknown subcommand '%s'", sub);
}
