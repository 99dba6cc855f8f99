/*
 * query/report_internal.h - the HTML page writer shared by `sightline query
 * --html` (sl_query_report_html) and `sightline report`: one self-contained
 * file (styles inline, thumbnails as JPEG data URIs, no scripts, nothing
 * fetched), every string from the outside escaped.
 *
 * Use: sl_report_open, then any sequence of headings, text, tables and query
 * sections, then sl_report_finish (writes the page atomically) or
 * sl_report_free (discards it). Writing functions never fail on their own:
 * an allocation failure sticks and sl_report_finish reports it.
 */
#ifndef SL_QUERY_REPORT_INTERNAL_H
#define SL_QUERY_REPORT_INTERNAL_H

#include "sightline/query.h"

#include <stddef.h>

typedef struct sl_report sl_report;

/* Start a page that will be written to `page`; `title` (escaped) goes into
 * <title>. Errors: SL_ERR_NOMEM. */
sl_status sl_report_open(const char *page, const char *title, sl_report **out);

/* Markup written as is: only for literals of the caller, never for data. */
void sl_report_raw(sl_report *r, const char *html);

/* Text (or an attribute value) escaped: valid UTF-8, & < > " ' as entities. */
void sl_report_text(sl_report *r, const char *s, size_t len);

/* printf-formatted markup (at most 511 bytes a call); the arguments must be
 * numbers or the caller's literals: data goes through sl_report_text. */
void sl_report_printf(sl_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One query's section: the query (the image too for image queries; the
 * image name for "image<TAB>phrase"), then its first `max_hits` results
 * (0 = all) as thumbnails with scores and paths, phrase boxes drawn over
 * them, or texts; or its error. A hit's box is drawn relative to its
 * width/height, or, when those are 0, to the picture's size as decoded. */
void sl_report_query(sl_report *r, sl_query_kind kind, const char *query,
                     const sl_query_result *res, size_t max_hits);

/* Close the page, write it (sl_write_file_atomic), free `r`. Errors:
 * SL_ERR_NOMEM (some writing failed), the write's. */
sl_status sl_report_finish(sl_report *r);

/* Free without writing. NULL-safe. */
void sl_report_free(sl_report *r);

/* Thumbnails made so far, and those that could not be made (linked). */
void sl_report_counts(const sl_report *r, size_t *thumbs, size_t *failed);

#endif
