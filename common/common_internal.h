/*
 * common/common_internal.h - helpers shared inside common/ only.
 */
#ifndef SL_COMMON_INTERNAL_H
#define SL_COMMON_INTERNAL_H

#include <stdio.h>

/* If a progress line is on screen and `out` is stderr, erase it so a log
 * line starts at column 0; the progress display redraws on its next update. */
void sl_progress_clear_line(FILE *out);

#endif
