/*
 * tests/test_tokenizer.c - CLIP byte-level BPE tokenizer.
 *
 * Without arguments (label unit):
 *   - hand-checked tokenizations on a small hand-written vocabulary: case
 *     folding, whitespace collapse, contractions, single digits, punctuation
 *     runs, Unicode letters (café, naïve, Greek with final sigma, Cyrillic,
 *     CJK), emoji as "other", combining marks, literal special tokens,
 *     invalid UTF-8; encode's truncation (end token kept), padding, n_used;
 *   - decode: round trips and error cases;
 *   - malformed vocab.json / merges.txt give errors naming file and line;
 *   - training on generated captions: the files load, the output is
 *     deterministic, round trips hold, several threads encoding on a shared
 *     tokenizer agree with one, and the time of 100k encodes is printed.
 * With --parity SCRIPT (label parity): trains a vocabulary on generated
 * captions and compares sl_tokenizer_tokenize / sl_tokenizer_encode with the
 * Python reference SCRIPT (tests/reference/clip_tokenizer_ref.py) on
 * several hundred captions, tricky lines and every BMP code point; also the
 * hand-written vocabulary's cases. Exact equality of ids. Skips (77) when
 * /usr/bin/python3 lacks the regex module.
 */
#include "cli/commands.h"
#include "sightline/tokenizer.h"
#include "testutil.h"

#include <fcntl.h>
#include <unistd.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>

#define PY "/usr/bin/python3"

static const char *g_dir;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static char *path_in(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, 1024, "%s/%s", g_dir, name);
    return p;
}

/* A growable string for building files. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 256;
        b->s = realloc(b->s, b->cap);
        if (!b->s) exit(2);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_add(sbuf *b, const char *s) {
    sb_addn(b, s, strlen(s));
}

/* The test's own bytes_to_unicode: UTF-8 of the symbol of byte b. */
static void byte_sym(int b, char out[3]) {
    int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    int cp = b;
    if (!keep) {
        cp = 0x100;
        for (int k = 0; k < b; k++)
            if (!((k >= 0x21 && k <= 0x7E) || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE))) cp++;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* The vocabulary order: printable bytes first, then the others. */
static int byte_order(int i) {
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++) {
            int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            if (keep == !pass && k++ == i) return b;
        }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The hand-written vocabulary                                              */
/* ------------------------------------------------------------------------ */

/* Merges in rank order (byte symbols; "Ã ©" is the UTF-8 of é, C3 A9). */
static const char *const hand_merges[] = {
    "t h",
    "th e</w>",
    "c a",
    "ca t</w>",
    "' s</w>",
    "d o",
    "do g</w>",
    "! !",
    "ca f",
    "\xc3\x83 \xc2\xa9</w>",
    "caf \xc3\x83\xc2\xa9</w>",
    "h e",
    "he l",
    "hel l",
    "hell o</w>",
    "p h",
    "ph o",
    "pho t",
    "phot o</w>",
    "o f</w>",
};
#define N_HAND_MERGES (sizeof hand_merges / sizeof *hand_merges)

static char *g_tokens[600]; /* the hand vocabulary, by id */
static int g_ntokens;

static int tok_id(const char *s) {
    for (int i = 0; i < g_ntokens; i++)
        if (!strcmp(g_tokens[i], s)) return i;
    fprintf(stderr, "test: no token '%s' in the hand vocabulary\n", s);
    return -1;
}

static void json_str(sbuf *b, const char *s) {
    sb_add(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') sb_addn(b, "\\", 1);
        sb_addn(b, s, 1);
    }
    sb_add(b, "\"");
}

/* vocab.json with one entry per line (line i+2 holds id i). */
static void write_vocab(const char *path, char **tokens, int n) {
    sbuf b = {0};
    char num[32];
    sb_add(&b, "{\n");
    for (int i = 0; i < n; i++) {
        json_str(&b, tokens[i]);
        snprintf(num, sizeof num, ": %d%s\n", i, i + 1 < n ? "," : "");
        sb_add(&b, num);
    }
    sb_add(&b, "}\n");
    write_text(path, b.s, b.n);
    free(b.s);
}

static void write_merges(const char *path, const char *const *m, size_t n) {
    sbuf b = {0};
    sb_add(&b, "#version: 0.2\n");
    for (size_t i = 0; i < n; i++) {
        sb_add(&b, m[i]);
        sb_add(&b, "\n");
    }
    write_text(path, b.s, b.n);
    free(b.s);
}

static void build_hand_vocab(void) {
    char sym[3], buf[64];
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            byte_sym(byte_order(i), sym);
            snprintf(buf, sizeof buf, "%s%s", sym, eow ? "</w>" : "");
            g_tokens[g_ntokens++] = strdup(buf);
        }
    for (size_t i = 0; i < N_HAND_MERGES; i++) {
        const char *sp = strchr(hand_merges[i], ' ');
        snprintf(buf, sizeof buf, "%.*s%s", (int)(sp - hand_merges[i]), hand_merges[i], sp + 1);
        g_tokens[g_ntokens++] = strdup(buf);
    }
    g_tokens[g_ntokens++] = strdup("<|startoftext|>");
    g_tokens[g_ntokens++] = strdup("<|endoftext|>");
    write_vocab(path_in("hand/vocab.json"), g_tokens, g_ntokens);
    write_merges(path_in("hand/merges.txt"), hand_merges, N_HAND_MERGES);
}

/* Append to `ids` the base symbols of the bytes of `piece` ("</w>" last). */
static void spell(const char *piece, int32_t *ids, int *n) {
    size_t len = strlen(piece);
    char sym[3], buf[16];
    for (size_t i = 0; i < len; i++) {
        byte_sym((unsigned char)piece[i], sym);
        snprintf(buf, sizeof buf, "%s%s", sym, i + 1 == len ? "</w>" : "");
        ids[(*n)++] = tok_id(buf);
    }
}

/* Check the BPE ids of `text`. Each `want` string is either "@piece" (the
 * piece spelled in base symbols, no merge applying) or a space-separated list
 * of tokens. NULL ends the list. */
static void expect(const sl_tokenizer *tok, const char *text, ...) {
    int32_t want[256];
    int nw = 0;
    va_list ap;
    va_start(ap, text);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;) {
        if (w[0] == '@') {
            spell(w + 1, want, &nw);
            continue;
        }
        char buf[256];
        snprintf(buf, sizeof buf, "%s", w);
        for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
            want[nw++] = tok_id(t);
    }
    va_end(ap);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(sl_tokenizer_tokenize(tok, text, &ids, &n));
    int same = (int)n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    CHECK_MSG(same, "text '%s': %zu ids, wanted %d", text, n, nw);
    if (!same) {
        fprintf(stderr, "  got: ");
        for (size_t i = 0; i < n; i++) fprintf(stderr, "%d(%s) ", ids[i], g_tokens[ids[i]]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < nw; i++) fprintf(stderr, " %d(%s)", want[i], g_tokens[want[i]]);
        fprintf(stderr, "\n");
    }
    free(ids);
}

static void check_decode(const sl_tokenizer *tok, const char *text, const char *want) {
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    CHECK_OK(sl_tokenizer_tokenize(tok, text, &ids, &n));
    CHECK_OK(sl_tokenizer_decode(tok, ids, n, &back));
    CHECK_MSG(back && !strcmp(back, want), "decode of '%s' is '%s', wanted '%s'", text,
              back ? back : "(null)", want);
    free(back);
    free(ids);
}

static const char SOT[] = "<|startoftext|>", EOT[] = "<|endoftext|>";

static void test_hand(void) {
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open(path_in("hand/vocab.json"), path_in("hand/merges.txt"), &tok));
    if (!tok) return;
    CHECK(sl_tokenizer_vocab_size(tok) == g_ntokens);
    CHECK(sl_tokenizer_sot(tok) == tok_id(SOT));
    CHECK(sl_tokenizer_eot(tok) == tok_id(EOT));
    CHECK(sl_tokenizer_sot(tok) == 512 + (int)N_HAND_MERGES);

    /* case folding, whitespace collapse, merges, contraction */
    expect(tok, "The CAT's   dog", "the</w> cat</w> 's</w> dog</w>", NULL);
    expect(tok, "  \t the\n\n\r\ncat\v\f ", "the</w> cat</w>", NULL);
    expect(tok,
           "a\xc2\xa0the\xe3\x80\x80"
           "cat\xe2\x80\xa8"
           "dog",
           "a</w> the</w> cat</w> dog</w>", NULL);
    expect(tok, "hello photo of", "hello</w> photo</w> of</w>", NULL);
    expect(tok, "HeLLo", "hello</w>", NULL);
    expect(tok, "hell", "hel l</w>", NULL);
    /* contractions: only at the start of a piece, in pattern order */
    expect(tok, "they'll", "th e y</w>", "@'ll", NULL);
    expect(tok, "i'M we've you're he'd isn't", "@i", "@'m", "@we", "@'ve", "@you", "@'re", "@he",
           "@'d", "@isn", "@'t", NULL);
    expect(tok, "'sa", "'s</w>", "@a", NULL);
    expect(tok, "x!'s", "@x", "@!'", "@s", NULL);
    expect(tok, "'x", "@'", "@x", NULL);
    /* digits one by one, letters around them */
    expect(tok, "2024", "@2", "@0", "@2", "@4", NULL);
    expect(tok, "abc123def", "@abc", "@1", "@2", "@3", "@def", NULL);
    expect(tok, "\xc2\xbd\xe2\x85\xa2", "@\xc2\xbd", "@\xe2\x85\xb2", NULL); /* No, Nl (Ⅲ -> ⅲ) */
    /* punctuation runs; "! !" merges left to right without overlap */
    expect(tok, "wow!!!...", "@wow", "!! ! . . .</w>", NULL);
    expect(tok, "!!!!", "!! ! !</w>", NULL); /* "! !</w>" is not a merge */
    expect(tok, "a-b (c)", "@a", "@-", "@b", "@(", "@c", "@)", NULL);
    /* Unicode letters */
    expect(tok, "caf\xc3\xa9 CAF\xc3\x89", "caf\xc3\x83\xc2\xa9</w> caf\xc3\x83\xc2\xa9</w>", NULL);
    expect(tok, "na\xc3\xafve", "@na\xc3\xafve", NULL);
    expect(tok, "\xce\x9f\xce\x94\xce\x9f\xce\xa3", "@\xce\xbf\xce\xb4\xce\xbf\xcf\x82",
           NULL);                                                      /* ΟΔΟΣ -> οδος */
    expect(tok, "\xce\xa3\xce\x91", "@\xcf\x83\xce\xb1", NULL);        /* ΣΑ -> σα */
    expect(tok, "\xce\x9f\xce\xa3.", "@\xce\xbf\xcf\x82", "@.", NULL); /* ΟΣ. -> ος . */
    expect(tok, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\x9c\xd0\x98\xd0\xa0",
           "@\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", "@,", "@\xd0\xbc\xd0\xb8\xd1\x80",
           NULL); /* Привет, МИР */
    expect(tok, "\xe7\x8c\xab\xe3\x81\xa8\xe7\x8a\xac", "@\xe7\x8c\xab\xe3\x81\xa8\xe7\x8a\xac",
           NULL); /* 猫と犬: one run of letters */
    expect(tok, "dog\xf0\x9f\x90\xb6\xf0\x9f\x90\xb6!", "dog</w>",
           "@\xf0\x9f\x90\xb6\xf0\x9f\x90\xb6!", NULL);      /* emoji are "other" */
    expect(tok, "e\xcc\x81", "@e", "@\xcc\x81", NULL);       /* combining acute: other */
    expect(tok, "\xc4\xb0x", "@i", "@\xcc\x87", "@x", NULL); /* İ -> i + U+0307 */
    expect(tok,
           "a\xcd\x85"
           "b",
           "@a", "@b", NULL);                      /* U+0345 belongs to no class */
    expect(tok, "'\xc5\xbf", "@'\xc5\xbf", NULL);  /* 'ſ matches 's */
    expect(tok, "\x1c the \x1c", "the</w>", NULL); /* str.strip() drops U+001C */
    expect(tok,
           "a\x1c"
           "b",
           "@a", "@\x1c", "@b", NULL); /* ... only at the ends */
    /* literal special tokens */
    int sot = tok_id(SOT), eot = tok_id(EOT);
    (void)sot;
    expect(tok, "a <|endoftext|> b", "@a", EOT, "@b", NULL);
    expect(tok, "<|StartOfText|>the", SOT, "the</w>", NULL);
    expect(tok, "!<|endoftext|>", "@!<|", "e n do f t e x t</w>", "@|>", NULL);
    expect(tok, "<|endoftext", "@<|", "e n do f t e x t</w>", NULL);
    expect(tok, "<|\xc5\xbftartoftext|>", "@<|\xc5\xbftartoftext|>",
           NULL); /* matched, not special */
    /* invalid UTF-8: each bad byte an "other" character, kept */
    expect(tok,
           "ab\xff\xfe"
           "cd",
           "@ab", "@\xff\xfe", "@cd", NULL);
    expect(tok, "\xc3(x", "@\xc3(", "@x", NULL); /* lead byte without continuation */
    expect(tok,
           "\xc0\xaf"
           "a",
           "@\xc0\xaf", "@a", NULL);                    /* overlong */
    expect(tok, "\xed\xa0\x80", "@\xed\xa0\x80", NULL); /* surrogate */
    expect(tok, "\xe2\x82", "@\xe2\x82", NULL);         /* truncated at the end */
    expect(tok, "", NULL);
    expect(tok, " \t\n ", NULL);

    /* encode: start, ids, end; truncation keeps the end; padding */
    int32_t ids[16];
    int used = -1;
    CHECK_OK(sl_tokenizer_encode(tok, "", 8, -7, ids, &used));
    CHECK(used == 2 && ids[0] == sot && ids[1] == eot && ids[2] == -7 && ids[7] == -7);
    CHECK_OK(sl_tokenizer_encode(tok, "the cat", 5, 0, ids, &used));
    CHECK(used == 4 && ids[0] == sot && ids[1] == tok_id("the</w>") &&
          ids[2] == tok_id("cat</w>") && ids[3] == eot && ids[4] == 0);
    CHECK_OK(sl_tokenizer_encode(tok, "0 1 2 3 4 5 6 7 8 9", 8, 0, ids, &used));
    CHECK(used == 8 && ids[0] == sot && ids[7] == eot);
    for (int i = 1; i < 7; i++) {
        char d[8];
        snprintf(d, sizeof d, "%d</w>", i - 1);
        CHECK(ids[i] == tok_id(d));
    }
    CHECK_OK(sl_tokenizer_encode(tok, "0 1 2 3 4 5 6 7 8 9", 12, 3, ids, &used));
    CHECK(used == 12 && ids[10] == tok_id("9</w>") && ids[11] == eot);
    CHECK_OK(sl_tokenizer_encode(tok, "0 1 2 3 4 5 6 7 8 9", 13, 3, ids, &used));
    CHECK(used == 12 && ids[11] == eot && ids[12] == 3);
    CHECK_OK(sl_tokenizer_encode(tok, "the cat", 2, 0, ids, &used));
    CHECK(used == 2 && ids[0] == sot && ids[1] == eot);
    CHECK_OK(sl_tokenizer_encode(tok, "the cat", 3, 0, ids, NULL));
    CHECK(ids[0] == sot && ids[1] == tok_id("the</w>") && ids[2] == eot);
    CHECK_ERR(sl_tokenizer_encode(tok, "x", 1, 0, ids, &used), SL_ERR_INVALID, "context length");

    /* decode */
    check_decode(tok, "a photo of the cat", "a photo of the cat");
    check_decode(tok, "The  CAT 's\tdog", "the cat 's dog");
    check_decode(
        tok, "caf\xc3\xa9 na\xc3\xafve \xce\x9f\xce\x94\xce\x9f\xce\xa3 2 0 !!! \xf0\x9f\x90\xb6",
        "caf\xc3\xa9 na\xc3\xafve \xce\xbf\xce\xb4\xce\xbf\xcf\x82 2 0 !!! \xf0\x9f\x90\xb6");
    check_decode(tok, "the cat's", "the cat 's");    /* pieces come back space-separated */
    check_decode(tok, "ab \xff\xfe", "ab \xff\xfe"); /* invalid bytes come back as they were */
    check_decode(tok, "a <|endoftext|> b", "a b");   /* special tokens skipped */
    CHECK_OK(sl_tokenizer_encode(tok, "the dog", 10, 0, ids, &used));
    char *text = NULL;
    CHECK_OK(sl_tokenizer_decode(tok, ids, (size_t)used, &text));
    CHECK(text && !strcmp(text, "the dog"));
    free(text);
    CHECK_OK(sl_tokenizer_decode(tok, ids, 0, &text));
    CHECK(text && !strcmp(text, ""));
    free(text);
    int32_t bad[2] = {1, 100000};
    CHECK_ERR(sl_tokenizer_decode(tok, bad, 2, &text), SL_ERR_INVALID, "id 100000 at position 1");
    bad[1] = -1;
    CHECK_ERR(sl_tokenizer_decode(tok, bad, 2, &text), SL_ERR_INVALID, "out of range");
    sl_tokenizer_free(tok);

    /* open_dir */
    CHECK_OK(sl_tokenizer_open_dir(path_in("hand"), &tok));
    CHECK(tok != NULL);
    sl_tokenizer_free(tok);
}

/* ------------------------------------------------------------------------ */
/* Malformed files                                                          */
/* ------------------------------------------------------------------------ */

static void expect_open_error(const char *vocab, const char *merges, sl_status want,
                              const char *needle1, const char *needle2) {
    sl_tokenizer *tok = (sl_tokenizer *)1;
    sl_status st = sl_tokenizer_open(vocab, merges, &tok);
    CHECK_MSG(st == want, "status %d, wanted %d (%s)", (int)st, (int)want, sl_last_error());
    CHECK(tok == NULL);
    CHECK_MSG(strstr(sl_last_error(), needle1) != NULL, "message '%s' lacks '%s'", sl_last_error(),
              needle1);
    if (needle2)
        CHECK_MSG(strstr(sl_last_error(), needle2) != NULL, "message '%s' lacks '%s'",
                  sl_last_error(), needle2);
}

static void test_malformed(void) {
    const char *hv = path_in("hand/vocab.json"), *hm = path_in("hand/merges.txt");
    char *v = path_in("bad/vocab.json"), *m = path_in("bad/merges.txt");
    /* bad JSON, with its line */
    const char *j = "{\n\"a\": 0,\n\"b\": ,\n}\n";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json line 3", NULL);
    j = "[1, 2]";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json", "object");
    /* duplicate key: the vocabulary with line 5 (id 3) spelled like id 0 */
    char *saved = g_tokens[3];
    g_tokens[3] = g_tokens[0];
    write_vocab(v, g_tokens, g_ntokens);
    g_tokens[3] = saved;
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json line 5", "duplicate");
    /* ids out of range, reused, not integers */
    j = "{\"a\": 0, \"b\": 2}";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "token \"b\": id 2 out of range", NULL);
    j = "{\"a\": 0, \"b\": 0}";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "id 0 already used", NULL);
    j = "{\"a\": 0, \"b\": \"1\"}";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "token \"b\": id is not an integer", NULL);
    j = "{\"a\\u0000b\": 0}";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json line 1", NULL);
    j = "{}";
    write_text(v, j, strlen(j));
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json", "0 tokens");
    /* missing special tokens, missing byte symbols */
    write_vocab(v, g_tokens, g_ntokens - 1);
    expect_open_error(v, hm, SL_ERR_FORMAT, "bad/vocab.json: missing special token <|endoftext|>",
                      NULL);
    saved = g_tokens[g_ntokens - 2];
    g_tokens[g_ntokens - 2] = g_tokens[g_ntokens - 1]; /* endoftext at the place of start */
    write_vocab(v, g_tokens, g_ntokens - 1);
    g_tokens[g_ntokens - 2] = saved;
    expect_open_error(v, hm, SL_ERR_FORMAT, "missing special token <|startoftext|>", NULL);
    write_vocab(v, g_tokens + 1, g_ntokens - 1); /* no "!" */
    expect_open_error(v, hm, SL_ERR_FORMAT, "missing the symbol \"!\" of byte 0x21", NULL);
    /* an over-long token */
    char *lng = malloc(2000);
    memset(lng, 'x', 1999);
    lng[1999] = 0;
    saved = g_tokens[5];
    g_tokens[5] = lng;
    write_vocab(v, g_tokens, g_ntokens);
    g_tokens[5] = saved;
    free(lng);
    expect_open_error(v, hm, SL_ERR_FORMAT, "token of 1999 bytes", NULL);
    /* missing files */
    expect_open_error(path_in("nope/vocab.json"), hm, SL_ERR_NOT_FOUND, "nope/vocab.json", NULL);
    expect_open_error(hv, path_in("nope/merges.txt"), SL_ERR_NOT_FOUND, "nope/merges.txt", NULL);

    /* merges.txt */
    j = "#version: 0.2\nt h\nth\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "bad/merges.txt line 3: expected two symbols", NULL);
    j = "#version: 0.2\nt h\nth e</w> x\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "bad/merges.txt line 3: expected two symbols", NULL);
    j = "#version: 0.2\nt h\nx y\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "bad/merges.txt line 3: merge result \"xy\" is not in",
                      NULL);
    j = "#version: 0.2\nt h\nth q\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "line 3: merge result \"thq\"", NULL);
    j = "#version: 0.2\ntt h\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "line 2: symbol \"tt\" is not in the vocabulary", NULL);
    j = "#version: 0.2\r\nt h\r\n\r\nt h\r\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "line 4: duplicate merge \"t h\"", NULL);
    j = "t h\nc a\n";
    write_text(m, j, strlen(j));
    expect_open_error(hv, m, SL_ERR_FORMAT, "bad/merges.txt line 1: expected a '#version'", NULL);
    write_text(m, "", 0);
    expect_open_error(hv, m, SL_ERR_FORMAT, "bad/merges.txt line 1", NULL);
    /* CRLF, blank lines and no merges at all are fine */
    j = "#version: 0.2\r\nt h\r\n\r\nc a\r\n";
    write_text(m, j, strlen(j));
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open(hv, m, &tok));
    if (tok) {
        expect(tok, "the cat", "th e</w>", "ca t</w>", NULL);
        sl_tokenizer_free(tok);
    }
    j = "#version: 0.2\n";
    write_text(m, j, strlen(j));
    CHECK_OK(sl_tokenizer_open(hv, m, &tok));
    if (tok) {
        expect(tok, "the", "@the", NULL);
        sl_tokenizer_free(tok);
    }

    /* train arguments */
    CHECK_ERR(sl_tokenizer_train(path_in("nope.txt"), 1000, 2, path_in("t")), SL_ERR_NOT_FOUND,
              "nope.txt");
    CHECK_ERR(sl_tokenizer_train(hv, 513, 2, path_in("t")), SL_ERR_INVALID, "vocabulary size 513");
    CHECK_ERR(sl_tokenizer_train(hv, 1000, 0, path_in("t")), SL_ERR_INVALID, "min-freq 0");
}

/* ------------------------------------------------------------------------ */
/* Generated captions                                                       */
/* ------------------------------------------------------------------------ */

static uint64_t g_rng;
static uint32_t rnd(uint32_t n) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

static const char *const WORDS[] = {
    "a",
    "the",
    "dog",
    "cat",
    "man",
    "woman",
    "child",
    "photo",
    "of",
    "on",
    "in",
    "with",
    "red",
    "blue",
    "green",
    "large",
    "small",
    "running",
    "sitting",
    "standing",
    "near",
    "beach",
    "street",
    "park",
    "table",
    "bicycle",
    "car",
    "tree",
    "house",
    "water",
    "ball",
    "playing",
    "two",
    "three",
    "people",
    "group",
    "young",
    "old",
    "white",
    "black",
    "sky",
    "caf\xc3\xa9",
    "na\xc3\xafve",
    "\xc3\xbc"
    "ber",
    "fa\xc3\xa7"
    "ade",
    "se\xc3\xb1or",
    "\xce\x95\xce\xbb\xce\xbb\xce\xac\xce\xb4\xce\xb1", /* Ελλάδα */
    "\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3",         /* ΣΟΦΟΣ */
    "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0", /* Москва */
    "\xe6\x9d\xb1\xe4\xba\xac",                         /* 東京 */
    "\xe7\x8c\xab",                                     /* 猫 */
    "\xf0\x9f\x90\xb6",
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80", /* emoji */
    "dog's",
    "it's",
    "they're",
    "we'll",
    "I'm",
    "don't",
    "you've",
    "he'd",
    "1999",
    "3.5",
    "#42",
    "100%",
    "x2",
    "2nd",
    "\xc2\xbd",
    "!!",
    "...",
    "?!",
    "(",
    ")",
    "--",
    "\xe2\x80\x94",
    "\"quoted\"",
    "e-mail",
    "U.S.A.",
    "<|endoftext|>",
    "\xc4\xb0stanbul",
    "stra\xc3\x9f"
    "e",
    "\xe2\x84\xaa"
    "elvin",
    "co\xc3\xb6p",
};
#define N_WORDS (sizeof WORDS / sizeof *WORDS)

/* One caption into b (no newline). */
static void gen_caption(sbuf *b) {
    int n = 3 + (int)rnd(12);
    for (int i = 0; i < n; i++) {
        const char *w = WORDS[rnd(N_WORDS)];
        char made[64];
        if (rnd(4) == 0) { /* an invented word, so that many words are rare */
            static const char *const syl[] = {"ka",  "lo",       "mi",  "ne", "tru", "str",
                                              "qu",  "ph",       "ing", "ed", "er",  "ou",
                                              "sch", "\xc3\xa9", "y",   "x"};
            int ns = 1 + (int)rnd(4);
            made[0] = 0;
            for (int k = 0; k < ns; k++) strcat(made, syl[rnd(16)]);
            w = made;
        }
        if (i) {
            uint32_t r = rnd(40);
            sb_add(b, r == 0 ? "  " : r == 1 ? "\t" : r == 2 ? "" : " ");
        }
        uint32_t c = rnd(10);
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%s", w);
        if (c == 0) { /* ASCII upper */
            for (char *p = tmp; *p; p++)
                if (*p >= 'a' && *p <= 'z') *p -= 32;
        } else if (c == 1 && tmp[0] >= 'a' && tmp[0] <= 'z') {
            tmp[0] -= 32;
        }
        sb_add(b, tmp);
        if (rnd(8) == 0) sb_add(b, (const char *[]){",", ".", "!", ";", ":"}[rnd(5)]);
    }
    if (rnd(20) == 0) sb_add(b, " ");
}

static char *write_captions(const char *path, int n, uint64_t seed) {
    g_rng = seed;
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        gen_caption(&b);
        sb_add(&b, "\n");
    }
    write_text(path, b.s, b.n);
    return b.s;
}

/* Train into dir "name" and load; also checks the output is deterministic. */
static sl_tokenizer *train(const char *name, int vocab, int nlines, double *secs) {
    free(write_captions(path_in("captions.txt"), nlines, 12345));
    char *out = path_in(name);
    double t0 = sl_now();
    CHECK_OK(sl_tokenizer_train(path_in("captions.txt"), vocab, 2, out));
    *secs = sl_now() - t0;
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open_dir(out, &tok));
    return tok;
}

/* ------------------------------------------------------------------------ */
/* Training, round trips, threads                                           */
/* ------------------------------------------------------------------------ */

typedef struct thread_job {
    const sl_tokenizer *tok;
    char **lines;
    int n, ctx;
    int32_t *out; /* [n][ctx] */
    int failed;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    for (int i = 0; i < j->n; i++)
        if (sl_tokenizer_encode(j->tok, j->lines[i], j->ctx, 0, j->out + (size_t)i * j->ctx, NULL))
            j->failed = 1;
    return NULL;
}

/* Split buf (modified) into lines. */
static char **split_lines(char *buf, int *n) {
    int cap = 1024, k = 0;
    char **v = malloc(sizeof *v * (size_t)cap);
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if (k == cap) v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[k++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    *n = k;
    return v;
}

static void test_train(void) {
    double secs = 0;
    sl_tokenizer *tok = train("trained", 2000, 4000, &secs);
    if (!tok) return;
    printf("training: 4000 captions, vocab 2000: %.3f s\n", secs);
    CHECK(sl_tokenizer_vocab_size(tok) <= 2000 && sl_tokenizer_vocab_size(tok) > 600);
    CHECK(sl_tokenizer_eot(tok) == sl_tokenizer_vocab_size(tok) - 1);
    CHECK(sl_tokenizer_sot(tok) == sl_tokenizer_vocab_size(tok) - 2);

    /* deterministic: a second run writes the same bytes */
    CHECK_OK(sl_tokenizer_train(path_in("captions.txt"), 2000, 2, path_in("trained2")));
    const char *files[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        char a[1100], b[1100];
        snprintf(a, sizeof a, "%s/%s", path_in("trained"), files[i]);
        snprintf(b, sizeof b, "%s/%s", path_in("trained2"), files[i]);
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(sl_read_file(a, 1 << 26, &x, &nx));
        CHECK_OK(sl_read_file(b, 1 << 26, &y, &ny));
        CHECK(x && y && nx == ny && memcmp(x, y, nx) == 0);
        if (i == 1) CHECK(x && !strncmp(x, "#version: 0.2\n", 14));
        static const char head[] = "{\"!\": 0, \"\\\"\": 1, ";
        if (i == 0) CHECK(x && !strncmp(x, head, strlen(head)));
        free(x);
        free(y);
    }

    /* frequent words became single tokens */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(sl_tokenizer_tokenize(tok, "a photo of the dog", &ids, &n));
    CHECK_MSG(n == 5, "%zu ids", n);
    free(ids);

    /* round trips on texts that survive cleanup: pieces separated by one space */
    const char *rt[] = {
        "a photo of the dog",
        "caf\xc3\xa9 na\xc3\xafve \xce\xb5\xce\xbb\xce\xbb\xce\xac\xce\xb4\xce\xb1 "
        "\xe6\x9d\xb1\xe4\xba\xac",
        "3 . 5 # 4 2 !! ... \xf0\x9f\x90\xb6 \xe2\x80\x94",
        "zebra quokka xylophone", /* unseen words */
        "\xe1\x83\xa1\xe1\x83\x90\xe1\x83\xa5\xe1\x83\x90\xe1\x83\xa0\xe1\x83\x97\xe1\x83\x95\xe1"
        "\x83\x94\xe1\x83\x9a\xe1\x83\x9d", /* Georgian, unseen letters */
        "dog 's they 're",
    };
    for (size_t i = 0; i < sizeof rt / sizeof *rt; i++) check_decode(tok, rt[i], rt[i]);
    /* and on the generated captions, once cleaned into space-separated pieces */
    check_decode(tok, "A  PHOTO\tof  the DOG!!", "a photo of the dog !!");

    /* threads on a shared tokenizer agree with one thread; timing of 100k */
    g_rng = 999;
    sbuf b = {0};
    for (int i = 0; i < 100000; i++) {
        gen_caption(&b);
        sb_add(&b, "\n");
    }
    int nl = 0;
    char **lines = split_lines(b.s, &nl);
    CHECK(nl == 100000);
    const int ctx = 77;
    int32_t *ref = malloc(sizeof *ref * (size_t)nl * ctx);
    double t0 = sl_now();
    for (int i = 0; i < nl; i++)
        CHECK_OK(sl_tokenizer_encode(tok, lines[i], ctx, 0, ref + (size_t)i * ctx, NULL));
    double t1 = sl_now();
    printf("encode: %d captions in %.3f s (%.0f captions/s), one thread\n", nl, t1 - t0,
           nl / (t1 - t0));
    CHECK(t1 - t0 < 10.0);
    enum { NT = 4 };
    pthread_t th[NT];
    thread_job jobs[NT];
    int32_t *out = malloc(sizeof *out * (size_t)nl * ctx);
    int per = (nl + NT - 1) / NT;
    for (int k = 0; k < NT; k++) {
        int lo = k * per, hi = lo + per < nl ? lo + per : nl;
        jobs[k] = (thread_job){tok, lines + lo, hi - lo, ctx, out + (size_t)lo * ctx, 0};
        CHECK(pthread_create(&th[k], NULL, thread_main, &jobs[k]) == 0);
    }
    for (int k = 0; k < NT; k++) {
        pthread_join(th[k], NULL);
        CHECK(!jobs[k].failed);
    }
    CHECK(memcmp(out, ref, sizeof *out * (size_t)nl * ctx) == 0);
    free(out);
    free(ref);
    free(lines);
    free(b.s);
    sl_tokenizer_free(tok);

    /* a vocabulary that stops at min_freq: every pair is rare */
    const char *tiny = "abcdefgh\nijklmnop\n";
    write_text(path_in("tiny.txt"), tiny, strlen(tiny));
    CHECK_OK(sl_tokenizer_train(path_in("tiny.txt"), 8192, 2, path_in("tiny")));
    CHECK_OK(sl_tokenizer_open_dir(path_in("tiny"), &tok));
    if (tok) {
        CHECK(sl_tokenizer_vocab_size(tok) == 514);
        sl_tokenizer_free(tok);
    }
    CHECK_OK(sl_tokenizer_train(path_in("tiny.txt"), 8192, 1, path_in("tiny1")));
    CHECK_OK(sl_tokenizer_open_dir(path_in("tiny1"), &tok));
    if (tok) {
        CHECK(sl_tokenizer_vocab_size(tok) == 514 + 14); /* each word merged to one token */
        CHECK_OK(sl_tokenizer_tokenize(tok, "abcdefgh ijklmnop", &ids, &n));
        CHECK(n == 2);
        free(ids);
        sl_tokenizer_free(tok);
    }
    /* an empty caption file gives the 514 base tokens */
    write_text(path_in("empty.txt"), "", 0);
    CHECK_OK(sl_tokenizer_train(path_in("empty.txt"), 1000, 2, path_in("empty")));
    CHECK_OK(sl_tokenizer_open_dir(path_in("empty"), &tok));
    if (tok) {
        CHECK(sl_tokenizer_vocab_size(tok) == 514);
        sl_tokenizer_free(tok);
    }
}

/* ------------------------------------------------------------------------ */
/* Parity with the Python reference                                         */
/* ------------------------------------------------------------------------ */

/* Compare every line of texts_path with the reference's ids. */
static void compare_with_reference(const sl_tokenizer *tok, const char *script, const char *dir,
                                   const char *texts_path, const char *label) {
    char cmd[4096], outp[1100];
    snprintf(outp, sizeof outp, "%s.ref", texts_path);
    snprintf(cmd, sizeof cmd, PY " '%s' '%s/vocab.json' '%s/merges.txt' '%s' '%s'", script, dir,
             dir, texts_path, outp);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "reference failed: %s", cmd);
    if (rc != 0) return;
    char *texts = NULL, *ref = NULL;
    size_t nt = 0, nr = 0;
    CHECK_OK(sl_read_file(texts_path, 1 << 28, &texts, &nt));
    CHECK_OK(sl_read_file(outp, 1 << 28, &ref, &nr));
    if (!texts || !ref) return;
    int ntl = 0, nrl = 0;
    char **tl = split_lines(texts, &ntl), **rl = split_lines(ref, &nrl);
    if (ntl && !*tl[ntl - 1]) ntl--; /* after the final newline */
    if (nrl && !*rl[nrl - 1]) nrl--;
    CHECK_MSG(ntl == nrl, "%s: %d texts, %d reference lines", label, ntl, nrl);
    int bad = 0, total_ids = 0;
    int32_t enc[77];
    for (int i = 0; i < ntl && i < nrl; i++) {
        int32_t want[8192];
        int nw = 0;
        for (char *save = NULL, *t = strtok_r(rl[i], " ", &save); t && nw < 8192;
             t = strtok_r(NULL, " ", &save))
            want[nw++] = (int32_t)atoi(t);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(sl_tokenizer_tokenize(tok, tl[i], &ids, &n));
        int same = (int)n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
        /* encode = start, the first 75, end */
        int used = 0;
        CHECK_OK(sl_tokenizer_encode(tok, tl[i], 77, 0, enc, &used));
        int keep = nw < 75 ? nw : 75;
        same = same && used == keep + 2 && enc[0] == sl_tokenizer_sot(tok) &&
               enc[keep + 1] == sl_tokenizer_eot(tok) &&
               memcmp(enc + 1, want, (size_t)keep * sizeof *enc) == 0;
        total_ids += nw;
        if (!same && bad++ < 5) {
            fprintf(stderr, "%s line %d: '%s'\n  C:  ", label, i + 1, tl[i]);
            for (size_t k = 0; k < n && k < 40; k++) fprintf(stderr, "%d ", ids[k]);
            fprintf(stderr, "\n  py: ");
            for (int k = 0; k < nw && k < 40; k++) fprintf(stderr, "%d ", want[k]);
            fprintf(stderr, "\n");
        }
        free(ids);
    }
    CHECK_MSG(bad == 0, "%s: %d of %d lines differ from the reference", label, bad, ntl);
    printf("parity %s: %d lines, %d ids, %d differ\n", label, ntl, total_ids, bad);
    free(tl);
    free(rl);
    free(texts);
    free(ref);
}

static void put_cp(sbuf *b, uint32_t c) {
    char u[4];
    size_t n;
    if (c < 0x80) {
        u[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        u[0] = (char)(0xC0 | (c >> 6));
        u[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        u[0] = (char)(0xE0 | (c >> 12));
        u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (c >> 18));
        u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[3] = (char)(0x80 | (c & 0x3F));
        n = 4;
    }
    sb_addn(b, u, n);
}

/* Train with C and with the reference's slow trainer; the files must be
 * byte-identical. */
static void compare_training(const char *script, const char *captions, int vocab, int min_freq,
                             const char *name) {
    char cdir[1100], pydir[1100], cmd[4096];
    snprintf(cdir, sizeof cdir, "%s/%s.c", g_dir, name);
    snprintf(pydir, sizeof pydir, "%s/%s.py", g_dir, name);
    mkdir(pydir, 0755);
    double t0 = sl_now();
    CHECK_OK(sl_tokenizer_train(captions, vocab, min_freq, cdir));
    double t1 = sl_now();
    snprintf(cmd, sizeof cmd, PY " '%s' --train '%s' %d %d '%s'", script, captions, vocab, min_freq,
             pydir);
    int rc = system(cmd);
    double t2 = sl_now();
    CHECK_MSG(rc == 0, "reference failed: %s", cmd);
    const char *files[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        char a[1200], b[1200];
        snprintf(a, sizeof a, "%s/%s", cdir, files[i]);
        snprintf(b, sizeof b, "%s/%s", pydir, files[i]);
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(sl_read_file(a, 1 << 26, &x, &nx));
        CHECK_OK(sl_read_file(b, 1 << 26, &y, &ny));
        CHECK_MSG(x && y && nx == ny && memcmp(x, y, nx) == 0, "%s: %s differs from the reference",
                  name, files[i]);
        if (i == 1 && x) {
            int lines = -1; /* the #version line */
            for (size_t k = 0; k < nx; k++) lines += x[k] == '\n';
            printf("parity training %s: %d merges identical (C %.3f s, Python %.1f s)\n", name,
                   lines, t1 - t0, t2 - t1);
        }
        free(x);
        free(y);
    }
}

static const char *const TRICKY[] = {
    "A photo of a DOG.",
    "   leading and trailing   ",
    "tabs\tand\vvertical\fforms\rcarriage",
    "nbsp\xc2\xa0ideographic\xe3\x80\x80space\xe2\x80\xa8line\xc2\x85nel",
    "\x1c\x1d strip these \x1e\x1f",
    "in\x1cside\x1fstays",
    "they'll we've I'M you're he'd isn't 'S 'LL",
    "x!'s ''s '''t 'sa 're' 'x",
    "rock'n'roll o'clock",
    "2024-01-01 12:30 3.14159 1,000,000 \xc2\xbd \xe2\x85\xa2 \xd9\xa3",
    "wow!!!... ?!?! (((nested))) --- ***",
    "caf\xc3\xa9 CAF\xc3\x89 na\xc3\xafve NA\xc3\x8f"
    "VE \xc3\xbc"
    "ber \xc3\x9c"
    "BER",
    "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\x9f\xce\xa3. \xce\xa3\xce\x91 \xce\xa3 "
    "\xce\x91\xce\xa3\xce\xa3",
    "\xce\x91\xce\xa3'\xce\x91 \xce\x91\xce\xa3\xcc\x81 \xce\x91\xce\xa3\xcc\x81\xce\x92",
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\x9c\xd0\x98\xd0\xa0!",
    "\xe7\x8c\xab\xe3\x81\xa8\xe7\x8a\xac\xe3\x81\x8c\xe9\x81\x8a\xe3\x82\x93\xe3\x81\xa7\xe3\x81"
    "\x84\xe3\x82\x8b\xe3\x80\x82",
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
    "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80 "
    "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 "
    "\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa",
    "dog\xf0\x9f\x90\xb6\xf0\x9f\x90\xb6! "
    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 "
    "\xf0\x9f\x87\xab\xf0\x9f\x87\xb7 \xe2\x9d\xa4\xef\xb8\x8f",
    "e\xcc\x81 a\xcd\x85"
    "b \xc4\xb0stanbul \xc4\xb0I",
    "'\xc5\xbf '\xc5\xbft <|\xc5\xbftartoftext|> \xef\xac\x85",
    "\xe2\x84\xaa"
    "elvin \xe2\x84\xab \xe1\xba\x9e \xc7\x85 \xe2\x85\xa0",
    "a <|endoftext|> b <|startoftext|>c <|ENDOFTEXT|> !<|endoftext|> <|endoftext",
    "<|startoftext|><|endoftext|><|endoftext|>",
    "",
    "   ",
    "\"quoted\" 'single' `back` \xe2\x80\x9csmart\xe2\x80\x9d \xe2\x80\x98q\xe2\x80\x99",
    "https://example.com/a_b?c=d&e=%20 user@mail.org #hashtag @handle",
    "&amp; &lt;b&gt; not unescaped",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "\xf0\x9d\x90\x80\xf0\x9d\x90\x81 \xf0\x9d\x9f\x8e\xf0\x9d\x9f\x8f \xf0\xa0\x80\x80",
};

static int test_parity(const char *script) {
    if (system(PY " -c 'import regex' 2>/dev/null") != 0) {
        printf("skip: " PY " with the regex module not available\n");
        return SL_TEST_SKIP;
    }
    /* the hand vocabulary on the tricky lines */
    sbuf t = {0};
    for (size_t i = 0; i < sizeof TRICKY / sizeof *TRICKY; i++) {
        sb_add(&t, TRICKY[i]);
        sb_add(&t, "\n");
    }
    write_text(path_in("tricky.txt"), t.s, t.n);
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open_dir(path_in("hand"), &tok));
    if (tok) {
        compare_with_reference(tok, script, path_in("hand"), path_in("tricky.txt"), "hand/tricky");
        sl_tokenizer_free(tok);
    }

    /* a trained vocabulary on fresh captions, the tricky lines, every BMP
     * code point (blocks of 64 with a space every 16) and the first
     * supplementary planes sampled */
    double secs = 0;
    tok = train("ptrained", 3000, 5000, &secs);
    if (!tok) return 1;
    printf("training: 5000 captions, vocab 3000: %.3f s\n", secs);
    sbuf p = {0};
    g_rng = 777;
    for (int i = 0; i < 400; i++) {
        gen_caption(&p);
        sb_add(&p, "\n");
    }
    sb_add(&p, t.s);
    write_text(path_in("parity.txt"), p.s, p.n);
    compare_with_reference(tok, script, path_in("ptrained"), path_in("parity.txt"), "captions");
    sbuf u = {0};
    for (uint32_t base = 0; base < 0x30000; base += 64) {
        if (base >= 0x10000 && (base & 0xFFF) != 0) continue; /* sample the astral planes */
        for (uint32_t c = base; c < base + 64; c++) {
            if (c == 0 || c == '\n' || (c >= 0xD800 && c < 0xE000)) continue;
            put_cp(&u, c);
            if (c % 16 == 15) sb_add(&u, " ");
        }
        sb_add(&u, "\n");
    }
    write_text(path_in("unicode.txt"), u.s, u.n);
    compare_with_reference(tok, script, path_in("ptrained"), path_in("unicode.txt"), "unicode");
    sl_tokenizer_free(tok);

    /* training itself against the reference's plain BPE trainer: the
     * generated captions, and two-letter words that make merges compete */
    compare_training(script, path_in("captions.txt"), 1200, 2, "train_captions");
    g_rng = 4242;
    sbuf ab = {0};
    for (int i = 0; i < 1500; i++) {
        int nw = 1 + (int)rnd(5);
        for (int w = 0; w < nw; w++) {
            if (w) sb_add(&ab, " ");
            int len = 1 + (int)rnd(8);
            for (int k = 0; k < len; k++) sb_add(&ab, rnd(2) ? "a" : "b");
        }
        sb_add(&ab, "\n");
    }
    write_text(path_in("ab.txt"), ab.s, ab.n);
    compare_training(script, path_in("ab.txt"), 5000, 1, "train_ab");
    free(ab.s);
    free(t.s);
    free(p.s);
    free(u.s);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

/* Run `sightline tokenizer ARGS...` with stdout (and stdin when `in` is not
 * NULL) redirected to files; returns the exit code, *out the output. */
static int run_cmd(char **out, const char *in, int argc, ...) {
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc && i < 31; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    char *op = path_in("cmd.out");
    fflush(stdout);
    int saved_out = dup(1), saved_in = -1;
    int fd = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    if (in) {
        write_text(path_in("cmd.in"), in, strlen(in));
        saved_in = dup(0);
        fd = open(path_in("cmd.in"), O_RDONLY);
        dup2(fd, 0);
        close(fd);
        clearerr(stdin);
    }
    int rc = sl_cmd_tokenizer(argc, argv);
    fflush(stdout);
    dup2(saved_out, 1);
    close(saved_out);
    if (in) {
        dup2(saved_in, 0);
        close(saved_in);
        clearerr(stdin);
    }
    size_t n = 0;
    *out = NULL;
    if (sl_read_file(op, 1 << 24, out, &n)) *out = strdup("");
    return rc;
}

/* The ids line the command should print for `text`. */
static void ids_line(const sl_tokenizer *tok, const char *text, int ctx, char *buf, size_t cap) {
    int32_t ids[128];
    int used = 0;
    CHECK_OK(sl_tokenizer_encode(tok, text, ctx, 0, ids, &used));
    size_t o = 0;
    for (int i = 0; i < used; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? " %d" : "%d", ids[i]);
    snprintf(buf + o, cap - o, "\n");
}

static void test_cmd(void) {
    char *out = NULL;
    FILE *f = tmpfile();
    sl_cmd_tokenizer_help(f);
    rewind(f);
    char head[64] = {0};
    CHECK(fread(head, 1, 26, f) == 26 && !strncmp(head, "usage: sightline tokenizer", 26));
    fclose(f);
    CHECK(run_cmd(&out, NULL, 2, "tokenizer", "--help") == SL_EXIT_OK);
    CHECK(out && !strncmp(out, "usage: sightline tokenizer", 26));
    free(out);
    /* usage errors */
    char *caps = strdup(path_in("captions.txt")), *dir = strdup(path_in("cmdmodel"));
    CHECK(run_cmd(&out, NULL, 1, "tokenizer") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 2, "tokenizer", "frobnicate") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 4, "tokenizer", "train", "--out", dir) == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 7, "tokenizer", "train", "--captions", caps, "--out", dir,
                  "--vocab-size") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 8, "tokenizer", "train", "--captions", caps, "--out", dir,
                  "--vocab-size", "12x") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 8, "tokenizer", "train", "--captions", caps, "--out", dir,
                  "--min-freq", "0") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 5, "tokenizer", "train", "--captions", caps, "--bogus") ==
          SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 3, "tokenizer", "encode", "hello") == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 4, "tokenizer", "encode", "--model-dir", dir) == SL_EXIT_USAGE);
    free(out);
    CHECK(run_cmd(&out, NULL, 6, "tokenizer", "encode", "--model-dir", dir, "--context", "1") ==
          SL_EXIT_USAGE);
    free(out);
    /* failures */
    CHECK(run_cmd(&out, NULL, 6, "tokenizer", "train", "--captions", path_in("nope.txt"), "--out",
                  dir) == SL_EXIT_FAILED);
    free(out);
    CHECK(run_cmd(&out, NULL, 5, "tokenizer", "encode", "--model-dir", path_in("nope"), "x") ==
          SL_EXIT_FAILED);
    free(out);
    /* train, then encode arguments and standard input */
    CHECK(run_cmd(&out, NULL, 11, "tokenizer", "train", "--captions", caps, "--out", dir,
                  "--vocab-size", "1000", "--min-freq", "3", "--quiet") == SL_EXIT_OK);
    free(out);
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open_dir(dir, &tok));
    if (!tok) {
        free(caps);
        free(dir);
        return;
    }
    CHECK(sl_tokenizer_vocab_size(tok) <= 1000);
    char want[4096], line[1024];
    want[0] = 0;
    ids_line(tok, "a photo of a dog", 77, line, sizeof line);
    strcat(want, line);
    ids_line(tok, "-- not an option", 77, line, sizeof line);
    strcat(want, line);
    CHECK(run_cmd(&out, NULL, 6, "tokenizer", "encode", "--model-dir", dir, "a photo of a dog",
                  "-- not an option") == SL_EXIT_OK);
    CHECK_MSG(out && !strcmp(out, want), "output '%s', wanted '%s'", out, want);
    free(out);
    want[0] = 0;
    ids_line(tok, "caf\xc3\xa9 ONE", 5, line, sizeof line);
    strcat(want, line);
    ids_line(tok, "", 5, line, sizeof line);
    strcat(want, line);
    ids_line(tok, "two three four five six", 5, line, sizeof line);
    strcat(want, line);
    CHECK(run_cmd(&out, "caf\xc3\xa9 ONE\n\ntwo three four five six", 7, "tokenizer", "encode",
                  "--model-dir", dir, "--context", "5", "-") == SL_EXIT_OK);
    CHECK_MSG(out && !strcmp(out, want), "output '%s', wanted '%s'", out, want);
    free(out);
    CHECK(run_cmd(&out, NULL, 8, "tokenizer", "encode", "--model-dir", dir, "--context", "6",
                  "--pad", "dog") == SL_EXIT_OK);
    int n = 0;
    for (char *p = out; p && *p; p++) n += *p == ' ';
    CHECK(n == 5 && out && out[strlen(out) - 3] == ' ' && out[strlen(out) - 2] == '0');
    free(out);
    sl_tokenizer_free(tok);
    free(caps);
    free(dir);
}

/* --bench CAPTIONS [VOCAB]: not a ctest; times training on a caption file and
 * encoding all of its lines. */
static int bench(const char *captions, int vocab) {
    sl_log_set_level(SL_LOG_INFO);
    double t0 = sl_now();
    CHECK_OK(sl_tokenizer_train(captions, vocab, 2, path_in("bench")));
    double t1 = sl_now();
    sl_tokenizer *tok = NULL;
    CHECK_OK(sl_tokenizer_open_dir(path_in("bench"), &tok));
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(sl_read_file(captions, (size_t)1 << 32, &text, &len));
    if (!tok || !text) return 1;
    int n = 0;
    char **lines = split_lines(text, &n);
    int32_t ids[77];
    double t2 = sl_now();
    for (int i = 0; i < n; i++) CHECK_OK(sl_tokenizer_encode(tok, lines[i], 77, 0, ids, NULL));
    double t3 = sl_now();
    printf("bench: train %.3f s (vocab %d), load %.3f s, encode %d lines %.3f s\n", t1 - t0,
           sl_tokenizer_vocab_size(tok), t2 - t1, n, t3 - t2);
    free(lines);
    free(text);
    sl_tokenizer_free(tok);
    return sl_test_finish("test_tokenizer --bench");
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    g_dir = sl_test_tmpdir();
    mkdir(path_in("hand"), 0755);
    mkdir(path_in("bad"), 0755);
    sl_log_set_level(SL_LOG_WARN);
    build_hand_vocab();
    if (argc == 3 && !strcmp(argv[1], "--parity")) {
        int rc = test_parity(argv[2]);
        if (rc == SL_TEST_SKIP) return rc;
        return sl_test_finish("test_tokenizer --parity");
    }
    if (argc >= 3 && !strcmp(argv[1], "--bench"))
        return bench(argv[2], argc > 3 ? atoi(argv[3]) : 8192);
    if (argc != 1) {
        fprintf(stderr, "usage: test_tokenizer [--parity SCRIPT | --bench CAPTIONS [VOCAB]]\n");
        return 2;
    }
    test_hand();
    test_malformed();
    test_train();
    test_cmd();
    return sl_test_finish("test_tokenizer");
}
