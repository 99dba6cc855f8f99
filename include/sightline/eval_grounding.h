/*
 * sightline/eval_grounding.h - phrase grounding benchmarks: strict readers
 * for Flickr30K Entities and RefCOCO/RefCOCO+/RefCOCOg (COCO-style JSON),
 * and the accuracy computation (a phrase is correct when the IoU of its
 * predicted box with the ground truth is at least 0.5).
 *
 * Flickr30K Entities (a folder with Sentences/ and Annotations/):
 *   Sentences/<id>.txt    one sentence per line; phrases are marked
 *                         "[/EN#<entity>/<type>[/<type>...] words]"
 *                         (no nesting; entity a decimal id, types
 *                         [A-Za-z0-9_-]+, words non-empty)
 *   Annotations/<id>.xml  PASCAL VOC: <annotation><size><width><height>,
 *                         <object>s each with one or more <name>entity</name>
 *                         and either <bndbox><xmin><ymin><xmax><ymax>
 *                         (1-based inclusive pixels) or <nobndbox>/<scene>
 *                         flags. Read with a small strict XML reader of our
 *                         own (elements, text, comments, the <?xml?> prolog,
 *                         attributes and the five predefined entities; no
 *                         DTDs, no CDATA).
 *   split list            one image id per line (blank lines ignored).
 * A phrase is judged against the union of its entity's boxes; phrases whose
 * entity has no box are skipped and counted by reason (notvisual type,
 * scene, nobndbox, absent from the annotations).
 *
 * RefCOCO/+/g (MDETR/GLIP "final_refcoco_*.json"): "images" holds one entry
 * per referring expression {id, file_name, height, width, caption},
 * "annotations" {image_id, bbox [x, y, w, h] 0-based}. Expressions are
 * grouped by file_name so each picture is encoded once; an expression with
 * several annotations is judged against their union, one with none is
 * skipped ("nobox").
 *
 * Boxes are converted on reading to grounding.h's convention (0-based, x1/y1
 * exclusive): VOC [xmin, ymin, xmax, ymax] -> [xmin-1, ymin-1, xmax, ymax];
 * COCO [x, y, w, h] -> [x, y, x+w, y+h].
 *
 * Errors name the file and the line (XML, sentences, split lists, JSON
 * syntax) or the JSON element (images[i], annotations[i]).
 */
#ifndef SIGHTLINE_EVAL_GROUNDING_H
#define SIGHTLINE_EVAL_GROUNDING_H

#include "sightline/common.h"
#include "sightline/grounding.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_GROUND_MAX_TYPES  32        /* distinct entity types in one set */
#define SL_GROUND_MAX_PHRASE 4096      /* bytes of one phrase */
#define SL_GROUND_MAX_TEXT   (1 << 22) /* bytes of one sentence or XML file */

/* Why a phrase was skipped. */
typedef enum sl_ground_skip {
    SL_GSKIP_NOTVISUAL = 0, /* entity type "notvisual" without boxes */
    SL_GSKIP_SCENE,         /* entity marked <scene> without boxes */
    SL_GSKIP_NOBNDBOX,      /* entity marked <nobndbox> */
    SL_GSKIP_ABSENT,        /* entity not in the annotations / no annotation */
    SL_GSKIP_IMAGE,         /* its image failed to decode (--skip-bad) */
    SL_GSKIP_COUNT
} sl_ground_skip;

/* Short name of a skip reason ("notvisual", "scene", ...). */
const char *sl_ground_skip_name(sl_ground_skip r);

/* One phrase (or referring expression) with a ground-truth box. */
typedef struct sl_ground_phrase {
    char *text;     /* the words (owned) */
    char *entity;   /* Entities: entity id; RefCOCO: expression id (owned) */
    uint32_t types; /* bit t set: type set->types[t] (Entities; 0 for RefCOCO) */
    sl_box box;     /* ground truth (union of the entity's boxes) */
    int boxes;      /* how many boxes were merged into `box` */
    int line;       /* Entities: sentence line (1-based); RefCOCO: images[] index */
} sl_ground_phrase;

/* One picture and its phrases: set->phrases[first .. first + count). */
typedef struct sl_ground_image {
    char *id;        /* image id (Entities) or file_name (RefCOCO) (owned) */
    char *file_name; /* relative to the images folder (owned) */
    int width;       /* declared by the annotations */
    int height;
    size_t first, count;   /* its judged phrases: set->phrases[first .. first + count) */
    size_t mfirst, mcount; /* every phrase read: set->mentions[mfirst .. mfirst + mcount) */
} sl_ground_image;

/* A phrase as read from a sentence, boxed or not (Entities): what a phrase
 * can be scored against without knowing the annotations (--contrast). */
typedef struct sl_ground_mention {
    char *text; /* the words (owned) */
    int line;   /* sentence line (1-based) */
} sl_ground_mention;

/* A benchmark: images in evaluation order, phrases grouped by image. */
typedef struct sl_ground_set {
    sl_ground_image *images;
    size_t n_images, cap_images;
    sl_ground_phrase *phrases;
    size_t n_phrases, cap_phrases;
    sl_ground_mention *mentions; /* Entities: every phrase of every sentence; RefCOCO: none */
    size_t n_mentions, cap_mentions;
    char *types[SL_GROUND_MAX_TYPES]; /* distinct entity type names (owned) */
    int n_types;
    size_t skipped[SL_GSKIP_COUNT]; /* phrases left out, by reason */
} sl_ground_set;

/* ---- readers --------------------------------------------------------------- */

/* Read Flickr30K Entities from `dir` (Sentences/, Annotations/). With
 * `split_file` only the images it lists, in its order; without, every
 * Sentences/<id>.txt in name order. A listed image whose sentence or
 * annotation file is missing is an error. Images take file name
 * "<id>.jpg". Errors: SL_ERR_NOT_FOUND/SL_ERR_IO (files), SL_ERR_FORMAT
 * (markup, XML, numbers; the message names file and line), SL_ERR_LIMIT.
 * `out` is initialised here; free with sl_ground_set_free (also on error). */
sl_status sl_ground_read_entities(const char *dir, const char *split_file, sl_ground_set *out);

/* Read a RefCOCO/+/g COCO-style JSON file (see above). Errors name the file
 * and the line (syntax) or the element; an annotation whose image_id names
 * no image is SL_ERR_FORMAT. */
sl_status sl_ground_read_refcoco(const char *path, sl_ground_set *out);

/* Parse one sentence line: calls `fn` for each marked phrase with its
 * entity id, types ("people/clothing") and words (pointers into scratch
 * storage valid during the call); a non-zero return from `fn` stops with
 * that status. `name` and `line` go into error messages. Exposed for tests. */
typedef sl_status (*sl_ground_phrase_fn)(void *ctx, const char *entity, const char *types,
                                         const char *words);
sl_status sl_ground_parse_sentence(const char *text, size_t len, const char *name, int line,
                                   sl_ground_phrase_fn fn, void *ctx);

/* Read a split list: one id per line, blank lines ignored, an id of
 * [A-Za-z0-9_.-] not starting with '.', no id twice. *ids malloc'ed array
 * of malloc'ed strings; free with sl_ground_free_ids. */
sl_status sl_ground_read_split(const char *path, char ***ids, size_t *n);
void sl_ground_free_ids(char **ids, size_t n);

/* ---- building and freeing sets ----------------------------------------------- */

void sl_ground_set_init(sl_ground_set *set);
void sl_ground_set_free(sl_ground_set *set);

/* Append an image (strings copied); phrases added next belong to it. */
sl_status sl_ground_set_add_image(sl_ground_set *set, const char *id, const char *file_name,
                                  int width, int height);

/* Append a phrase to the last image (strings copied). */
sl_status sl_ground_set_add_phrase(sl_ground_set *set, const char *text, const char *entity,
                                   uint32_t types, sl_box box, int boxes, int line);

/* Append a mention (any phrase read, judged or not) to the last image. */
sl_status sl_ground_set_add_mention(sl_ground_set *set, const char *text, int line);

/* The bit mask of "people/clothing", adding new type names to the set.
 * SL_ERR_LIMIT past SL_GROUND_MAX_TYPES distinct types. */
sl_status sl_ground_set_types(sl_ground_set *set, const char *types, uint32_t *mask);

/* ---- scoring ------------------------------------------------------------------- */

/* Whether a prediction is correct: IoU(pred, gt) >= 0.5. */
int sl_ground_correct(sl_box pred, sl_box gt);

typedef struct sl_ground_score {
    size_t phrases;                           /* phrases judged */
    size_t correct;                           /* of which correct */
    size_t skipped;                           /* phrases left out (all reasons) */
    size_t skipped_by[SL_GSKIP_COUNT];        /* by reason */
    size_t images;                            /* images with at least one phrase judged */
    size_t type_phrases[SL_GROUND_MAX_TYPES]; /* judged phrases per type */
    size_t type_correct[SL_GROUND_MAX_TYPES];
} sl_ground_score;

/* Score predictions pred [set->n_phrases]. `image_ok` [set->n_images] (may
 * be NULL: all ok) marks images whose phrases were predicted; the phrases
 * of the others count as skipped (SL_GSKIP_IMAGE). Pure function. */
void sl_ground_score_compute(const sl_ground_set *set, const sl_box *pred,
                             const unsigned char *image_ok, sl_ground_score *out);

/* Accuracy in percent (0 when nothing was judged). */
double sl_ground_accuracy(size_t correct, size_t total);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_EVAL_GROUNDING_H */
