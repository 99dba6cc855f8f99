/*
 * sightline/tokenizer.h - CLIP's byte-level BPE tokenizer, read from (and
 * trained into) the Hugging Face files vocab.json + merges.txt.
 *
 * Text is cleaned (whitespace runs collapsed to one space, stripped,
 * lower-cased), split by the CLIP pre-tokenisation classes (the special
 * tokens, contractions 's 't 're 've 'm 'll 'd, runs of letters, single
 * digits, runs of other non-space characters; Unicode classes from
 * utf8proc), each piece mapped byte-to-unicode with "</w>" on its last
 * symbol, then merged pair by pair in merge-rank order.
 */
#ifndef SIGHTLINE_TOKENIZER_H
#define SIGHTLINE_TOKENIZER_H

#include "sightline/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_tokenizer sl_tokenizer;

/* Load vocab.json (token -> id) and merges.txt ("#version" line, then "a b"
 * per line, rank = line order). Errors name the file and line. The start
 * and end tokens are "<|startoftext|>" and "<|endoftext|>", which must be
 * in the vocabulary.
 * Checked: each file at most 64 MiB; vocab.json an object without duplicate
 * keys whose ids are integers forming 0..n-1 (each used once), tokens of 1..1024
 * bytes, all 512 byte symbols (with and without "</w>") present; merges.txt
 * has exactly two symbols per non-blank line, both in the vocabulary, their
 * concatenation in the vocabulary, no pair twice. SL_ERR_NOT_FOUND / SL_ERR_IO
 * for unreadable files, SL_ERR_FORMAT for the rest. */
sl_status sl_tokenizer_open(const char *vocab_json, const char *merges_txt, sl_tokenizer **out);

/* Same, from a model directory holding vocab.json and merges.txt. */
sl_status sl_tokenizer_open_dir(const char *dir, sl_tokenizer **out);

void sl_tokenizer_free(sl_tokenizer *tok);

int32_t sl_tokenizer_vocab_size(const sl_tokenizer *tok);
int32_t sl_tokenizer_sot(const sl_tokenizer *tok); /* <|startoftext|> id */
int32_t sl_tokenizer_eot(const sl_tokenizer *tok); /* <|endoftext|> id */

/* BPE ids of `text` (NUL-terminated UTF-8; invalid bytes are kept as
 * characters of their own) without start/end tokens; *ids is malloc'ed
 * (caller frees, also when *n is 0), *n its length. Thread-safe on a shared
 * tokenizer. */
sl_status sl_tokenizer_tokenize(const sl_tokenizer *tok, const char *text, int32_t **ids,
                                size_t *n);

/* The model input for `text`: start token, BPE ids, end token, truncated to
 * `ctx` keeping the end token last, then padded with `pad_id` to `ctx`
 * entries (ids must have room for ctx; ctx >= 2, else SL_ERR_INVALID).
 * *n_used (may be NULL) receives the count before padding. Thread-safe on a
 * shared tokenizer (no shared mutable state). */
sl_status sl_tokenizer_encode(const sl_tokenizer *tok, const char *text, int ctx, int32_t pad_id,
                              int32_t *ids, int *n_used);

/* Text of ids (special tokens skipped, byte-level symbols mapped back to
 * bytes, every "</w>" turned into a space, ASCII whitespace and U+001C..U+001F
 * stripped at both ends, as Hugging Face's CLIPTokenizer does); *text is malloc'ed and
 * NUL-terminated. Bytes are returned as they are, so the result may be
 * invalid UTF-8 when the ids split a character. An id outside the
 * vocabulary is SL_ERR_INVALID. */
sl_status sl_tokenizer_decode(const sl_tokenizer *tok, const int32_t *ids, size_t n, char **text);

/* Learn a BPE vocabulary from a text file (one caption per line, at most
 * 1 GiB) and write vocab.json and merges.txt into out_dir (created when
 * missing): the 256 byte symbols, the same with "</w>", one token per learned
 * merge, then <|startoftext|> and <|endoftext|> (OpenAI's order). Merges are
 * learned most-frequent-pair first (ties broken by the pair's text: the
 * smaller left symbol, then the smaller right symbol, bytewise, so the result
 * is deterministic) until `vocab_size` tokens exist or no pair occurs
 * `min_freq` times. A merge whose text is already a token reuses that token
 * (merges.txt then has more lines than new tokens). vocab_size must be at
 * least 514 (512 byte symbols + 2 special tokens), min_freq at least 1.
 * Progress is shown on a terminal while the log level is info or lower. */
sl_status sl_tokenizer_train(const char *captions_path, int vocab_size, int min_freq,
                             const char *out_dir);

#ifdef __cplusplus
}
#endif

#endif /* SIGHTLINE_TOKENIZER_H */
