/*
 * query/eval_cmd.c - `sightline eval retrieval|grounding`: dispatch to the
 * two evaluations (query/eval_retrieval.c, query/eval_grounding.c).
 */
#include "cli/commands.h"

#include <string.h>

void sl_cmd_eval_help(FILE *out) {
    fputs("usage: sightline eval <retrieval|grounding> [options]\n"
          "\n"
          "  retrieval   image-text retrieval recall (R@1/5/10, median and mean rank, RSUM)\n"
          "              on a Karpathy split (Flickr30K, COCO)\n"
          "  grounding   phrase grounding accuracy (IoU >= 0.5) on Flickr30K Entities or\n"
          "              RefCOCO/RefCOCO+/RefCOCOg\n"
          "\n"
          "'sightline eval retrieval --help' and 'sightline eval grounding --help' give the\n"
          "options of each.\n",
          out);
}

int sl_cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        sl_cmd_eval_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SL_EXIT_USAGE : SL_EXIT_OK;
    }
    if (!strcmp(argv[1], "retrieval")) return sl_cmd_eval_retrieval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "grounding")) return sl_cmd_eval_grounding(argc - 1, argv + 1);
    fprintf(stderr, "sightline eval: unknown evaluation '%s' (retrieval or grounding)\n", argv[1]);
    return SL_EXIT_USAGE;
}
