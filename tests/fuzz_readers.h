/*
 * tests/fuzz_readers.h - the robustness targets of the dataset readers
 * (tests/fuzz_readers.c), shared by the libFuzzer executables and the plain
 * driver (tests/fuzz_driver.c).
 *
 * Each target takes any byte string, feeds it to a reader, and abort()s when
 * an invariant breaks: a failure must return non-SL_OK with a message naming
 * the input file (and, for syntax errors, the line) and leave nothing behind
 * that the documented free does not release; a success must yield a
 * well-formed structure (counts consistent, indices in range, boxes finite,
 * strings NUL-terminated and within their limits) that frees cleanly.
 *
 * Input layouts:
 *   karpathy  the bytes are a Karpathy split JSON file; the split and
 *             max_captions options are derived from a hash of the bytes
 *   refcoco   the bytes are a RefCOCO COCO-style JSON file
 *   entities  SENTENCES [0xFF ANNOTATION_XML [0xFF SPLIT_LIST]] written to
 *             Sentences/<id>.txt, Annotations/<id>.xml and a split file (a
 *             missing part: no such file; no split list: the folder is
 *             listed); each sentence line also goes through
 *             sl_ground_parse_sentence and the split list through
 *             sl_ground_read_split on their own
 */
#ifndef SL_FUZZ_READERS_H
#define SL_FUZZ_READERS_H

#include "sightline/common.h"

#include <stddef.h>
#include <stdint.h>

#define SL_FUZZ_SEP 0xFF /* separates the parts of an entities input */

/* The targets; each returns 0 (libFuzzer's convention). */
int sl_fuzz_karpathy(const uint8_t *data, size_t size);
int sl_fuzz_refcoco(const uint8_t *data, size_t size);
int sl_fuzz_entities(const uint8_t *data, size_t size);

/* The status of the main reader call of the last target run (the driver
 * checks that its seeds are accepted). */
extern sl_status sl_fuzz_last_status;

/* Remove the temporary folder of the targets (also registered with atexit). */
void sl_fuzz_cleanup(void);

#endif
