/*
 * encoder/tokenizer.c - CLIP's byte-level BPE tokenizer: loading the
 * Hugging Face files (vocab.json, merges.txt), text cleanup,
 * pre-tokenisation, BPE, encode and decode.
 *
 * What CLIP's reference code does that this does not: ftfy's mojibake repair
 * and HTML unescaping ("&amp;" stays "&amp;"). Everything else follows the
 * Python reference (Python's str.lower() and the `regex` module):
 *
 *   cleanup    whitespace runs (the Unicode White_Space set, which is what
 *              regex's \s matches) become one space; the text is stripped
 *              (of spaces and, as str.strip() does, U+001C..U+001F)
 *              and lower-cased code point by code point with utf8proc's
 *              simple mapping, plus the two rules of Python's full mapping:
 *              U+0130 becomes "i" + U+0307 and a capital sigma at the end of
 *              a word becomes the final sigma U+03C2. No NFC normalisation.
 *   pieces     at each position, in this order: the literal
 *              "<|startoftext|>" / "<|endoftext|>", a contraction 's 't 're
 *              've 'm 'll 'd, a run of letters (Lu Ll Lt Lm Lo), one number
 *              character (Nd Nl No), a run of other characters (neither
 *              space, letter nor number). Spaces separate pieces and are
 *              dropped. The match is case-insensitive as in the regex module:
 *              after lower-casing that only matters for U+017F (long s),
 *              which matches "s"; and U+0345, which case-insensitively
 *              belongs to no class, is dropped like a space.
 *   invalid    an invalid UTF-8 byte (bad lead, truncated or overlong
 *              sequence, surrogate) is kept as a character of its own in
 *              the "other" class and its byte goes through BPE unchanged, so
 *              decode gives it back.
 *
 * A piece that is exactly a literal special token becomes its id; any other
 * piece is turned into byte symbols, "</w>" appended to the last, and merged
 * pair by pair: each pass finds the adjacent pair of lowest merge rank and
 * merges all its occurrences left to right, until no pair has a rank.
 */
#include "common/json_file.h"
#include "encoder/tokenizer_internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define TOK_MAX_FILE_BYTES ((size_t)64 << 20) /* vocab.json, merges.txt */
#define TOK_MAX_VOCAB      (1 << 24)          /* entries in vocab.json */

/* ------------------------------------------------------------------------ */
/* bytes_to_unicode                                                         */
/* ------------------------------------------------------------------------ */

static sl_tok_bytemap g_bytemap;
static pthread_once_t g_bytemap_once = PTHREAD_ONCE_INIT;

static int byte_is_printable(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static void bytemap_init(void) {
    sl_tok_bytemap *m = &g_bytemap;
    for (int i = 0; i < 0x144; i++) m->rev[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int cp = byte_is_printable(b) ? b : 256 + extra++;
        utf8proc_uint8_t buf[4];
        utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
        memcpy(m->sym[b], buf, (size_t)n);
        m->sym[b][n] = 0;
        m->len[b] = (uint8_t)n;
        m->rev[cp] = (int16_t)b;
    }
}

const sl_tok_bytemap *sl_tok_bytemap_get(void) {
    pthread_once(&g_bytemap_once, bytemap_init);
    return &g_bytemap;
}

/* ------------------------------------------------------------------------ */
/* Character classes                                                        */
/* ------------------------------------------------------------------------ */

/* Unicode White_Space: what the regex module's \s matches. */
static int cp_is_space(int32_t c) {
    if (c < 0) return 0;
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

enum { CLS_SPACE, CLS_LETTER, CLS_NUMBER, CLS_OTHER };

static int cp_class(int32_t c) {
    if (c < 0) return CLS_OTHER; /* an invalid byte */
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CLS_LETTER;
        if (c >= '0' && c <= '9') return CLS_NUMBER;
        return cp_is_space(c) ? CLS_SPACE : CLS_OTHER;
    }
    if (cp_is_space(c) || c == 0x345) return CLS_SPACE; /* U+0345: see the top */
    switch (utf8proc_category(c)) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO:
            return CLS_LETTER;
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_NO:
            return CLS_NUMBER;
        default:
            return CLS_OTHER;
    }
}

/* Cased (Lu, Ll, Lt or having a case mapping): for the final-sigma rule. */
static int cp_is_cased(int32_t c) {
    if (c < 0) return 0;
    utf8proc_category_t k = utf8proc_category(c);
    if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT)
        return 1;
    return utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

/* Case_Ignorable (Mn Me Cf Lm Sk and the word-break mid-letter marks). */
static int cp_is_case_ignorable(int32_t c) {
    if (c < 0) return 0;
    switch (c) {
        case 0x27:
        case 0x2E:
        case 0x3A:
        case 0xB7:
        case 0x387:
        case 0x55F:
        case 0x5F4:
        case 0x2018:
        case 0x2019:
        case 0x2024:
        case 0x2027:
        case 0xFE13:
        case 0xFE52:
        case 0xFE55:
        case 0xFF07:
        case 0xFF0E:
        case 0xFF1A:
            return 1;
        default:
            break;
    }
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* Python's Final_Sigma condition for the capital sigma at cp[i]. */
static int is_final_sigma(const int32_t *cp, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && cp_is_case_ignorable(cp[j - 1])) j--;
    if (j == 0 || !cp_is_cased(cp[j - 1])) return 0;
    j = i + 1;
    while (j < n && cp_is_case_ignorable(cp[j])) j++;
    return j == n || !cp_is_cased(cp[j]);
}

/* ------------------------------------------------------------------------ */
/* Cleanup and pre-tokenisation                                             */
/* ------------------------------------------------------------------------ */

sl_status sl_tok_clean(const char *s, size_t len, sl_tok_text *out) {
    out->cp = NULL;
    out->n = 0;
    size_t cap;
    if (sl_mul_size(len, 2 * sizeof(int32_t), &cap) || sl_add_size(cap, 4, &cap))
        return sl_set_error(SL_ERR_LIMIT, "tokenizer: text of %zu bytes is too long", len);
    int32_t *raw = malloc(len * sizeof(int32_t) + 4);
    int32_t *low = malloc(cap);
    if (!raw || !low) {
        free(raw);
        free(low);
        return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory for a text of %zu bytes", len);
    }
    /* Pass 1: decode, collapse whitespace runs, strip. */
    size_t n = 0, i = 0;
    int pending_space = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) {
            c = -1 - (int32_t)(unsigned char)s[i];
            k = 1;
        }
        i += (size_t)k;
        if (cp_is_space(c)) {
            pending_space = n > 0;
            continue;
        }
        if (pending_space) raw[n++] = ' ';
        pending_space = 0;
        raw[n++] = c;
    }
    /* Python's str.strip() also removes U+001C..U+001F, which \s does not
     * match: trim those (and the spaces they uncover) at both ends. */
    size_t lo = 0;
    while (n > 0 && ((raw[n - 1] >= 0x1C && raw[n - 1] <= 0x1F) || raw[n - 1] == ' ')) n--;
    while (lo < n && ((raw[lo] >= 0x1C && raw[lo] <= 0x1F) || raw[lo] == ' ')) lo++;
    /* Pass 2: lower-case. */
    size_t m = 0;
    for (size_t j = lo; j < n; j++) {
        int32_t c = raw[j];
        if (c < 0) {
            low[m++] = c;
        } else if (c == 0x130) {
            low[m++] = 'i';
            low[m++] = 0x307;
        } else if (c == 0x3A3) {
            low[m++] = is_final_sigma(raw + lo, n - lo, j - lo) ? 0x3C2 : 0x3C3;
        } else if (c < 0x80) {
            low[m++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        } else {
            low[m++] = utf8proc_tolower(c);
        }
    }
    free(raw);
    out->cp = low;
    out->n = m;
    return SL_OK;
}

/* c equals the lower-case ASCII letter a case-insensitively (regex module's
 * simple case folding, after lower-casing). */
static int ci_eq(int32_t c, char a) {
    return c == a || (a == 's' && c == 0x17F);
}

/* Length of the match of ASCII `lit` at cp[pos], 0 when none; *exact is set
 * when every character matched literally. */
static size_t match_lit(const sl_tok_text *t, size_t pos, const char *lit, int *exact) {
    size_t k = strlen(lit);
    if (t->n - pos < k) return 0;
    int ex = 1;
    for (size_t i = 0; i < k; i++) {
        if (!ci_eq(t->cp[pos + i], lit[i])) return 0;
        if (t->cp[pos + i] != lit[i]) ex = 0;
    }
    *exact = ex;
    return k;
}

int sl_tok_next_piece(const sl_tok_text *t, size_t *pos, size_t *start, size_t *end, int *kind) {
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t p = *pos;
    while (p < t->n && cp_class(t->cp[p]) == CLS_SPACE) p++;
    if (p >= t->n) {
        *pos = p;
        return 0;
    }
    size_t k = 0;
    int exact = 0;
    *kind = SL_TOK_PIECE_TEXT;
    if (t->cp[p] == '<') {
        if ((k = match_lit(t, p, SL_TOK_SOT_TEXT, &exact)) != 0) {
            if (exact) *kind = SL_TOK_PIECE_SOT;
        } else if ((k = match_lit(t, p, SL_TOK_EOT_TEXT, &exact)) != 0) {
            if (exact) *kind = SL_TOK_PIECE_EOT;
        }
    } else if (t->cp[p] == '\'') {
        for (size_t i = 0; i < sizeof contractions / sizeof *contractions && !k; i++)
            k = match_lit(t, p, contractions[i], &exact);
    }
    if (!k) {
        int cls = cp_class(t->cp[p]);
        k = 1;
        if (cls == CLS_LETTER || cls == CLS_OTHER)
            while (p + k < t->n && cp_class(t->cp[p + k]) == cls) k++;
    }
    *start = p;
    *end = p + k;
    *pos = p + k;
    return 1;
}

size_t sl_tok_utf8(const int32_t *cp, size_t n, char *buf) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (cp[i] < 0) {
            buf[o++] = (char)(unsigned char)(-1 - cp[i]);
        } else if (cp[i] < 0x80) {
            buf[o++] = (char)cp[i];
        } else {
            o += (size_t)utf8proc_encode_char(cp[i], (utf8proc_uint8_t *)buf + o);
        }
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                            */
/* ------------------------------------------------------------------------ */

/* One slot of the merge table: the pair (left, right) of ids as one key. */
typedef struct merge_slot {
    uint64_t key;   /* (uint64)left << 32 | right; UINT64_MAX when empty */
    int32_t rank;   /* line order in merges.txt, from 0 */
    int32_t result; /* id of the concatenated token */
} merge_slot;

struct sl_tokenizer {
    int32_t n_vocab;       /* entries in vocab.json; ids are 0..n_vocab-1 */
    char **tokens;         /* [n_vocab] token text (byte symbols, UTF-8), NUL-terminated */
    uint32_t *token_len;   /* [n_vocab] its length in bytes */
    char **decoded;        /* [n_vocab] the bytes a token stands for ("</w>" kept) */
    uint32_t *dec_len;     /* [n_vocab] their count */
    int32_t *vocab_slots;  /* [vocab_cap] open-addressing table of ids, -1 empty */
    size_t vocab_cap;      /* power of two */
    merge_slot *merges;    /* [merge_cap] open-addressing pair table */
    size_t merge_cap;      /* power of two */
    int32_t n_merges;      /* merges loaded */
    int32_t byte_id[256];  /* id of the symbol of each byte */
    int32_t byte_eow[256]; /* id of that symbol + "</w>" */
    int32_t sot, eot;      /* special token ids */
};

static int32_t vocab_find(const sl_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->vocab_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        if (t->token_len[id] == n && memcmp(t->tokens[id], s, n) == 0) return id;
    }
}

static void vocab_insert(sl_tokenizer *t, int32_t id) {
    size_t mask = t->vocab_cap - 1;
    size_t i = hash_bytes(t->tokens[id], t->token_len[id]) & mask;
    while (t->vocab_slots[i] >= 0) i = (i + 1) & mask;
    t->vocab_slots[i] = id;
}

static const merge_slot *merge_find(const sl_tokenizer *t, int32_t a, int32_t b) {
    if (!t->merge_cap) return NULL;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = t->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        const merge_slot *s = &t->merges[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

void sl_tokenizer_free(sl_tokenizer *t) {
    if (!t) return;
    if (t->tokens)
        for (int32_t i = 0; i < t->n_vocab; i++) free(t->tokens[i]);
    if (t->decoded)
        for (int32_t i = 0; i < t->n_vocab; i++) free(t->decoded[i]);
    free(t->tokens);
    free(t->token_len);
    free(t->decoded);
    free(t->dec_len);
    free(t->vocab_slots);
    free(t->merges);
    free(t);
}

int32_t sl_tokenizer_vocab_size(const sl_tokenizer *t) {
    return t->n_vocab;
}
int32_t sl_tokenizer_sot(const sl_tokenizer *t) {
    return t->sot;
}
int32_t sl_tokenizer_eot(const sl_tokenizer *t) {
    return t->eot;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */
/* ------------------------------------------------------------------------ */

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Bytes a token stands for: each character mapped back through
 * bytes_to_unicode; a character outside that alphabet (possible only in a
 * foreign vocabulary) is kept as its UTF-8. */
static sl_status token_decode_bytes(sl_tokenizer *t, int32_t id) {
    const sl_tok_bytemap *bm = sl_tok_bytemap_get();
    const char *s = t->tokens[id];
    size_t n = t->token_len[id], o = 0, i = 0;
    char *d = malloc(n + 1);
    if (!d) return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory");
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k > 0 && c < 0x144 && bm->rev[c] >= 0) {
            d[o++] = (char)bm->rev[c];
        } else {
            if (k <= 0) k = 1;
            memcpy(d + o, s + i, (size_t)k);
            o += (size_t)k;
        }
        i += (size_t)k;
    }
    d[o] = 0;
    t->decoded[id] = d;
    t->dec_len[id] = (uint32_t)o;
    return SL_OK;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static sl_status load_vocab(sl_tokenizer *t, const char *path) {
    json_t *root;
    sl_status st = sl_json_load_file(path, TOK_MAX_FILE_BYTES, &root);
    if (st) return st;
    if (!json_is_object(root)) {
        json_decref(root);
        return sl_set_error(SL_ERR_FORMAT, "%s: expected a JSON object of token -> id", path);
    }
    size_t n = json_object_size(root);
    if (n == 0 || n > TOK_MAX_VOCAB) {
        json_decref(root);
        return sl_set_error(n ? SL_ERR_LIMIT : SL_ERR_FORMAT, "%s: %zu tokens (expected 1..%d)",
                            path, n, TOK_MAX_VOCAB);
    }
    t->n_vocab = (int32_t)n;
    t->tokens = calloc(n, sizeof *t->tokens);
    t->token_len = calloc(n, sizeof *t->token_len);
    t->decoded = calloc(n, sizeof *t->decoded);
    t->dec_len = calloc(n, sizeof *t->dec_len);
    t->vocab_cap = pow2_at_least(2 * n);
    t->vocab_slots = malloc(t->vocab_cap * sizeof *t->vocab_slots);
    if (!t->tokens || !t->token_len || !t->decoded || !t->dec_len || !t->vocab_slots) {
        json_decref(root);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory for %zu tokens", path, n);
    }
    memset(t->vocab_slots, 0xff, t->vocab_cap * sizeof *t->vocab_slots);
    const char *key;
    json_t *val;
    st = SL_OK;
    json_object_foreach(root, key, val) {
        size_t klen = strlen(key);
        if (klen == 0 || klen > SL_TOK_MAX_TOKEN_BYTES) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: token of %zu bytes (expected 1..%d): \"%.40s\"",
                              path, klen, SL_TOK_MAX_TOKEN_BYTES, key);
            break;
        }
        if (!json_is_integer(val)) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: token \"%.200s\": id is not an integer", path,
                              key);
            break;
        }
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= (json_int_t)n) {
            st = sl_set_error(SL_ERR_FORMAT, "%s: token \"%.200s\": id %lld out of range [0, %zu)",
                              path, key, (long long)id, n);
            break;
        }
        if (t->tokens[id]) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s: token \"%.200s\": id %lld already used by \"%.200s\"", path, key,
                              (long long)id, t->tokens[id]);
            break;
        }
        t->tokens[id] = strdup(key);
        if (!t->tokens[id]) {
            st = sl_set_error(SL_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        t->token_len[id] = (uint32_t)klen;
        vocab_insert(t, (int32_t)id);
        if ((st = token_decode_bytes(t, (int32_t)id))) break;
    }
    json_decref(root);
    if (st) return st;
    /* Ids in range and unique over n entries: every id is present. */
    const sl_tok_bytemap *bm = sl_tok_bytemap_get();
    for (int b = 0; b < 256; b++) {
        char sym[8];
        snprintf(sym, sizeof sym, "%s", bm->sym[b]);
        if ((t->byte_id[b] = vocab_find(t, sym, strlen(sym))) < 0)
            return sl_set_error(SL_ERR_FORMAT, "%s: missing the symbol \"%s\" of byte 0x%02x", path,
                                sym, b);
        snprintf(sym, sizeof sym, "%s" SL_TOK_EOW, bm->sym[b]);
        if ((t->byte_eow[b] = vocab_find(t, sym, strlen(sym))) < 0)
            return sl_set_error(SL_ERR_FORMAT, "%s: missing the symbol \"%s\" of byte 0x%02x", path,
                                sym, b);
    }
    if ((t->sot = vocab_find(t, SL_TOK_SOT_TEXT, strlen(SL_TOK_SOT_TEXT))) < 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: missing special token %s", path, SL_TOK_SOT_TEXT);
    if ((t->eot = vocab_find(t, SL_TOK_EOT_TEXT, strlen(SL_TOK_EOT_TEXT))) < 0)
        return sl_set_error(SL_ERR_FORMAT, "%s: missing special token %s", path, SL_TOK_EOT_TEXT);
    return SL_OK;
}

/* Split `line` (NUL-terminated, no newline) into two space- or
 * tab-separated fields; returns the field count (up to 3 counted). */
static int split_fields(char *line, char **f) {
    int n = 0;
    char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t') *p++ = 0;
        if (!*p) break;
        if (n < 3) f[n] = p;
        n++;
        while (*p && *p != ' ' && *p != '\t') p++;
    }
    return n > 3 ? 3 : n;
}

static sl_status load_merges(sl_tokenizer *t, const char *path) {
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, TOK_MAX_FILE_BYTES, &buf, &len);
    if (st) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    t->merge_cap = pow2_at_least(2 * lines);
    t->merges = malloc(t->merge_cap * sizeof *t->merges);
    if (!t->merges) {
        free(buf);
        return sl_set_error(SL_ERR_NOMEM, "%s: out of memory for %zu lines", path, lines);
    }
    memset(t->merges, 0xff, t->merge_cap * sizeof *t->merges);
    char joined[2 * SL_TOK_MAX_TOKEN_BYTES + 1];
    char *p = buf, *end = buf + len;
    size_t lineno = 0;
    int32_t rank = 0;
    while (p < end && !st) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        lineno++;
        if (le > p && le[-1] == '\r') le--;
        *le = 0;
        if (memchr(p, 0, (size_t)(le - p))) {
            st = sl_set_error(SL_ERR_FORMAT, "%s line %zu: NUL byte", path, lineno);
            break;
        }
        if (lineno == 1) {
            if (strncmp(p, "#version", 8) != 0)
                st = sl_set_error(SL_ERR_FORMAT, "%s line 1: expected a '#version' header", path);
            p = next;
            continue;
        }
        char *f[3];
        int nf = split_fields(p, f);
        p = next;
        if (nf == 0) continue; /* blank line */
        if (nf != 2) {
            st = sl_set_error(SL_ERR_FORMAT, "%s line %zu: expected two symbols, found %d", path,
                              lineno, nf);
            break;
        }
        size_t la = strlen(f[0]), lb = strlen(f[1]);
        if (la > SL_TOK_MAX_TOKEN_BYTES || lb > SL_TOK_MAX_TOKEN_BYTES) {
            st = sl_set_error(SL_ERR_FORMAT, "%s line %zu: symbol longer than %d bytes", path,
                              lineno, SL_TOK_MAX_TOKEN_BYTES);
            break;
        }
        int32_t a = vocab_find(t, f[0], la), b = vocab_find(t, f[1], lb);
        if (a < 0 || b < 0) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s line %zu: symbol \"%.200s\" is not in the vocabulary", path,
                              lineno, a < 0 ? f[0] : f[1]);
            break;
        }
        memcpy(joined, f[0], la);
        memcpy(joined + la, f[1], lb);
        joined[la + lb] = 0;
        int32_t r = vocab_find(t, joined, la + lb);
        if (r < 0) {
            st = sl_set_error(SL_ERR_FORMAT,
                              "%s line %zu: merge result \"%.400s\" is not in the vocabulary", path,
                              lineno, joined);
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        size_t mask = t->merge_cap - 1, i = hash_u64(key) & mask;
        while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & mask;
        if (t->merges[i].key == key) {
            st = sl_set_error(SL_ERR_FORMAT, "%s line %zu: duplicate merge \"%s %s\"", path, lineno,
                              f[0], f[1]);
            break;
        }
        t->merges[i].key = key;
        t->merges[i].rank = rank++;
        t->merges[i].result = r;
    }
    if (!st && lineno == 0)
        st = sl_set_error(SL_ERR_FORMAT, "%s line 1: expected a '#version' header", path);
    t->n_merges = rank;
    free(buf);
    return st;
}

sl_status sl_tokenizer_open(const char *vocab_json, const char *merges_txt, sl_tokenizer **out) {
    *out = NULL;
    if (!vocab_json || !merges_txt)
        return sl_set_error(SL_ERR_INVALID, "tokenizer: NULL vocab or merges path");
    sl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory");
    sl_status st = load_vocab(t, vocab_json);
    if (!st) st = load_merges(t, merges_txt);
    if (st) {
        sl_tokenizer_free(t);
        return st;
    }
    SL_DEBUG("tokenizer: %d tokens, %d merges (%s, %s)", t->n_vocab, t->n_merges,
             base_name(vocab_json), base_name(merges_txt));
    *out = t;
    return SL_OK;
}

sl_status sl_tokenizer_open_dir(const char *dir, sl_tokenizer **out) {
    *out = NULL;
    if (!dir) return sl_set_error(SL_ERR_INVALID, "tokenizer: NULL model directory");
    size_t n = strlen(dir) + 16;
    char *v = malloc(n), *m = malloc(n);
    if (!v || !m) {
        free(v);
        free(m);
        return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory");
    }
    snprintf(v, n, "%s/vocab.json", dir);
    snprintf(m, n, "%s/merges.txt", dir);
    sl_status st = sl_tokenizer_open(v, m, out);
    free(v);
    free(m);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

/* A growable id array (per call). */
typedef struct id_vec {
    int32_t *v;
    size_t n, cap;
} id_vec;

static int id_vec_reserve(id_vec *a, size_t extra) {
    if (a->n + extra <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < a->n + extra) cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return -1;
    a->v = v;
    a->cap = cap;
    return 0;
}

/* BPE on sym[0..*n) in place. */
static void bpe_merge(const sl_tokenizer *t, int32_t *sym, size_t *np) {
    size_t n = *np;
    while (n > 1) {
        int32_t best = INT32_MAX, a = 0, b = 0, res = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            const merge_slot *s = merge_find(t, sym[i], sym[i + 1]);
            if (s && s->rank < best) {
                best = s->rank;
                a = sym[i];
                b = sym[i + 1];
                res = s->result;
            }
        }
        if (best == INT32_MAX) break;
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                sym[o++] = res;
                i += 2;
            } else {
                sym[o++] = sym[i++];
            }
        }
        n = o;
    }
    *np = n;
}

/* Tokenize `text` into out (appending), stopping once out holds at least
 * `limit` ids. */
static sl_status tokenize_into(const sl_tokenizer *t, const char *text, size_t limit, id_vec *out) {
    sl_tok_text tx;
    sl_status st = sl_tok_clean(text, strlen(text), &tx);
    if (st) return st;
    char *bytes = NULL;
    int32_t *sym = NULL;
    size_t cap = 0;
    size_t pos = 0, s, e;
    int kind;
    while (out->n < limit && sl_tok_next_piece(&tx, &pos, &s, &e, &kind)) {
        if (kind != SL_TOK_PIECE_TEXT) {
            if (id_vec_reserve(out, 1)) goto nomem;
            out->v[out->n++] = kind == SL_TOK_PIECE_SOT ? t->sot : t->eot;
            continue;
        }
        size_t need = 4 * (e - s);
        if (need > cap) {
            free(bytes);
            free(sym);
            cap = need < 256 ? 256 : need;
            bytes = malloc(cap);
            sym = malloc(cap * sizeof *sym);
            if (!bytes || !sym) goto nomem;
        }
        size_t nb = sl_tok_utf8(tx.cp + s, e - s, bytes);
        for (size_t i = 0; i + 1 < nb; i++) sym[i] = t->byte_id[(unsigned char)bytes[i]];
        sym[nb - 1] = t->byte_eow[(unsigned char)bytes[nb - 1]];
        bpe_merge(t, sym, &nb);
        if (id_vec_reserve(out, nb)) goto nomem;
        memcpy(out->v + out->n, sym, nb * sizeof *sym);
        out->n += nb;
    }
    free(bytes);
    free(sym);
    free(tx.cp);
    return SL_OK;
nomem:
    free(bytes);
    free(sym);
    free(tx.cp);
    return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory");
}

sl_status sl_tokenizer_tokenize(const sl_tokenizer *t, const char *text, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!t || !text) return sl_set_error(SL_ERR_INVALID, "tokenizer: NULL tokenizer or text");
    id_vec v = {0};
    sl_status st = tokenize_into(t, text, SIZE_MAX, &v);
    if (st) {
        free(v.v);
        return st;
    }
    if (!v.v && !(v.v = malloc(sizeof *v.v))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    *ids = v.v;
    *n = v.n;
    return SL_OK;
}

sl_status sl_tokenizer_encode(const sl_tokenizer *t, const char *text, int ctx, int32_t pad_id,
                              int32_t *ids, int *n_used) {
    if (n_used) *n_used = 0;
    if (!t || !text || !ids) return sl_set_error(SL_ERR_INVALID, "tokenizer: NULL argument");
    if (ctx < 2)
        return sl_set_error(SL_ERR_INVALID, "tokenizer: context length %d (need at least 2)", ctx);
    id_vec v = {0};
    sl_status st = tokenize_into(t, text, (size_t)ctx - 1, &v);
    if (st) {
        free(v.v);
        return st;
    }
    size_t keep = v.n < (size_t)ctx - 2 ? v.n : (size_t)ctx - 2;
    ids[0] = t->sot;
    if (keep) memcpy(ids + 1, v.v, keep * sizeof *ids);
    ids[keep + 1] = t->eot;
    for (size_t i = keep + 2; i < (size_t)ctx; i++) ids[i] = pad_id;
    if (n_used) *n_used = (int)(keep + 2);
    free(v.v);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

static int is_strip_space(unsigned char c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
}

sl_status sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, char **text) {
    *text = NULL;
    if (!t || (!ids && n)) return sl_set_error(SL_ERR_INVALID, "tokenizer: NULL argument");
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return sl_set_error(SL_ERR_INVALID,
                                "tokenizer: id %d at position %zu out of range [0, %d)",
                                (int)ids[i], i, (int)t->n_vocab);
        if (ids[i] != t->sot && ids[i] != t->eot) total += t->dec_len[ids[i]];
    }
    char *raw = malloc(total);
    if (!raw) return sl_set_error(SL_ERR_NOMEM, "tokenizer: out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == t->sot || ids[i] == t->eot) continue;
        memcpy(raw + o, t->decoded[ids[i]], t->dec_len[ids[i]]);
        o += t->dec_len[ids[i]];
    }
    /* "</w>" -> " " over the whole byte string, left to right, then strip. */
    size_t w = 0;
    for (size_t i = 0; i < o;) {
        if (i + 4 <= o && memcmp(raw + i, SL_TOK_EOW, 4) == 0) {
            raw[w++] = ' ';
            i += 4;
        } else {
            raw[w++] = raw[i++];
        }
    }
    size_t b = 0;
    while (b < w && is_strip_space((unsigned char)raw[b])) b++;
    while (w > b && is_strip_space((unsigned char)raw[w - 1])) w--;
    memmove(raw, raw + b, w - b);
    raw[w - b] = 0;
    *text = raw;
    return SL_OK;
}
