/*
 * encoder/tokenizer_internal.h - the pieces of the CLIP tokenizer shared by
 * encoder/tokenizer.c (load, encode, decode) and encoder/tokenizer_train.c
 * (BPE training): byte-to-unicode symbols, text cleanup and the
 * pre-tokenisation into pieces. Not part of the public API.
 */
#ifndef SL_TOKENIZER_INTERNAL_H
#define SL_TOKENIZER_INTERNAL_H

#include "sightline/tokenizer.h"

#define SL_TOK_SOT_TEXT "<|startoftext|>"
#define SL_TOK_EOT_TEXT "<|endoftext|>"
#define SL_TOK_EOW      "</w>"

/* Longest token (in bytes) accepted from vocab.json / merges.txt. */
#define SL_TOK_MAX_TOKEN_BYTES 1024

/* The UTF-8 spelling of the symbol of each byte (bytes_to_unicode): the
 * printable bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF are themselves, the other
 * 68 bytes map to U+0100 onwards in byte order. sym[b] is NUL-terminated, at
 * most 2 bytes long. */
typedef struct sl_tok_bytemap {
    char sym[256][3];   /* UTF-8 of the symbol of byte b */
    uint8_t len[256];   /* its length in bytes (1 or 2) */
    int16_t rev[0x144]; /* code point (< 0x144) -> byte, -1 when none */
} sl_tok_bytemap;

/* The table above, built once (thread-safe). */
const sl_tok_bytemap *sl_tok_bytemap_get(void);

/* Cleaned text as code points: whitespace runs collapsed to one space,
 * stripped, lower-cased. An invalid UTF-8 byte b becomes the negative value
 * -1 - b (an "other" character that is written back as the raw byte). */
typedef struct sl_tok_text {
    int32_t *cp; /* code points (or -1 - byte), malloc'ed */
    size_t n;    /* count */
} sl_tok_text;

/* Clean `len` bytes of `s` into *out (cp malloc'ed; free with free()). */
sl_status sl_tok_clean(const char *s, size_t len, sl_tok_text *out);

/* Kind of a piece returned by sl_tok_next_piece. */
enum { SL_TOK_PIECE_TEXT = 0, SL_TOK_PIECE_SOT = 1, SL_TOK_PIECE_EOT = 2 };

/* Find the next pre-tokenisation piece of t at or after *pos: on return 1,
 * [*start, *end) are its code points, *kind says whether it is the literal
 * start/end token, and *pos is moved past it; 0 when no piece is left. */
int sl_tok_next_piece(const sl_tok_text *t, size_t *pos, size_t *start, size_t *end, int *kind);

/* UTF-8 of code points cp[0..n) (negative values are raw bytes) into buf,
 * which must hold 4*n bytes. Returns the byte count. */
size_t sl_tok_utf8(const int32_t *cp, size_t n, char *buf);

/* Hashes for the tokenizer's and the trainer's tables: FNV-1a over bytes
 * (with a final mix), and a 64-bit integer finaliser. */
static inline uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static inline uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

#endif
