/*
 * encoder/tokenizer_train.c - learning a CLIP-style byte-level BPE
 * vocabulary from captions and writing it as vocab.json + merges.txt.
 *
 * Captions are cleaned and pre-tokenised exactly as sl_tokenizer_encode does
 * (literal special tokens are skipped), the distinct pieces ("words") are
 * counted and spelled in byte symbols with "</w>" on the last one. Then,
 * repeatedly, the adjacent symbol pair with the highest count (summed over
 * words, weighted by word count) is merged in every word, left to right and
 * without overlap, as the encoder applies it. Ties go to the pair whose
 * (left, right) texts compare smallest bytewise, so the result depends on the
 * input only.
 *
 * Counting is incremental: each pair keeps the list of words it occurs in,
 * and a merge only rescans those words, adjusting the counts of the pairs in
 * them. The best pair comes from a max-heap with lazy deletion: an entry
 * whose count is out of date is dropped (or pushed again with the lower
 * count) when it reaches the top; a pair whose count grows gets a new entry.
 *
 * A merge whose concatenated text already is a token (two different splits
 * of the same string) reuses that token's id, so the vocabulary has one
 * entry per distinct merged text and merges.txt one line per merge.
 */
#include "encoder/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define TRAIN_MAX_CAPTION_BYTES ((size_t)1 << 30) /* the caption file */
#define TRAIN_MAX_VOCAB         (1 << 20)

/* ------------------------------------------------------------------------ */
/* Small containers                                                         */
/* ------------------------------------------------------------------------ */

/* A growable byte string. */
typedef struct strbuf {
    char *s;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) return -1;
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static int sb_str(strbuf *b, const char *s) {
    return sb_add(b, s, strlen(s));
}

/* Grow *p (an array of `elem`-byte items holding *cap) to hold `need`. */
static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Training state                                                           */
/* ------------------------------------------------------------------------ */

typedef struct word {
    int32_t *sym;  /* current symbols (into trainer.sym_arena) */
    int32_t len;   /* symbol count */
    int64_t count; /* occurrences in the captions */
} word;

typedef struct pair {
    int32_t a, b;    /* left and right symbol ids */
    int64_t count;   /* weighted occurrences now */
    int32_t *words;  /* words it occurred in (may hold stale entries) */
    size_t nwords;   /* used entries */
    size_t capwords; /* allocated entries */
    uint32_t stamp;  /* last merge step that touched it */
} pair;

typedef struct heap_entry {
    int64_t count; /* the pair's count when pushed */
    int32_t pair;  /* index into trainer.pairs */
} heap_entry;

typedef struct trainer {
    /* words, while counting: piece bytes -> word index */
    char *wbytes; /* arena of piece bytes */
    size_t wbytes_n, wbytes_cap;
    size_t *woff;   /* [nwords] offset of each word's bytes */
    uint32_t *wlen; /* [nwords] their length */
    word *words;    /* [nwords] */
    size_t nwords, capwords;
    int32_t *wslots; /* open addressing over word indices, -1 empty */
    size_t wslot_cap;
    int32_t *sym_arena; /* symbols of all words */
    uint32_t *wstamp;   /* [nwords] last merge step that rescanned the word */
    /* symbols: id -> text, text -> id */
    char **sym_text; /* [nsyms] UTF-8 text */
    size_t nsyms, capsyms;
    int32_t *sslots; /* open addressing over symbol ids, -1 empty */
    size_t sslot_cap;
    /* pairs */
    pair *pairs;
    size_t npairs, cappairs;
    int32_t *pslots; /* open addressing over pair indices, -1 empty */
    size_t pslot_cap;
    heap_entry *heap;
    size_t nheap, capheap;
    /* learned merges, as (left, right) symbol ids */
    int32_t (*merges)[2];
    size_t nmerges, capmerges;
} trainer;

static void trainer_free(trainer *t) {
    free(t->wbytes);
    free(t->woff);
    free(t->wlen);
    free(t->words);
    free(t->wslots);
    free(t->sym_arena);
    free(t->wstamp);
    for (size_t i = 0; i < t->nsyms; i++) free(t->sym_text[i]);
    free(t->sym_text);
    free(t->sslots);
    for (size_t i = 0; i < t->npairs; i++) free(t->pairs[i].words);
    free(t->pairs);
    free(t->pslots);
    free(t->heap);
    free(t->merges);
}

static sl_status nomem(void) {
    return sl_set_error(SL_ERR_NOMEM, "tokenizer train: out of memory");
}

/* ---- words --------------------------------------------------------------- */

static int word_rehash(trainer *t, size_t cap) {
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    memset(s, 0xff, cap * sizeof *s);
    for (size_t w = 0; w < t->nwords; w++) {
        size_t i = hash_bytes(t->wbytes + t->woff[w], t->wlen[w]) & (cap - 1);
        while (s[i] >= 0) i = (i + 1) & (cap - 1);
        s[i] = (int32_t)w;
    }
    free(t->wslots);
    t->wslots = s;
    t->wslot_cap = cap;
    return 0;
}

/* Count one occurrence of the piece bytes p[0..n). */
static int word_add(trainer *t, const char *p, size_t n) {
    if (2 * (t->nwords + 1) > t->wslot_cap &&
        word_rehash(t, t->wslot_cap ? 2 * t->wslot_cap : 1024))
        return -1;
    size_t mask = t->wslot_cap - 1, i = hash_bytes(p, n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t w = t->wslots[i];
        if (w < 0) break;
        if (t->wlen[w] == n && memcmp(t->wbytes + t->woff[w], p, n) == 0) {
            t->words[w].count++;
            return 0;
        }
    }
    if (t->nwords >= INT32_MAX - 1) return -1;
    size_t cw = t->capwords, cw2 = t->capwords, cw3 = t->capwords;
    if (grow((void **)&t->words, &cw, t->nwords + 1, sizeof *t->words) ||
        grow((void **)&t->woff, &cw2, t->nwords + 1, sizeof *t->woff) ||
        grow((void **)&t->wlen, &cw3, t->nwords + 1, sizeof *t->wlen))
        return -1;
    /* all three grew in step (same start capacity and the same doubling) */
    t->capwords = cw;
    if (grow((void **)&t->wbytes, &t->wbytes_cap, t->wbytes_n + n, 1)) return -1;
    memcpy(t->wbytes + t->wbytes_n, p, n);
    t->woff[t->nwords] = t->wbytes_n;
    t->wlen[t->nwords] = (uint32_t)n;
    t->words[t->nwords] = (word){NULL, 0, 1};
    t->wbytes_n += n;
    t->wslots[i] = (int32_t)t->nwords++;
    return 0;
}

/* ---- symbols ------------------------------------------------------------- */

static int32_t sym_find(const trainer *t, const char *s) {
    size_t n = strlen(s), mask = t->sslot_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->sslots[i];
        if (id < 0) return -1;
        if (strcmp(t->sym_text[id], s) == 0) return id;
    }
}

/* Add the symbol `s` (taking ownership) as the next id. */
static int sym_add(trainer *t, char *s) {
    if (2 * (t->nsyms + 1) > t->sslot_cap) {
        size_t cap = t->sslot_cap ? 2 * t->sslot_cap : 2048;
        int32_t *sl = malloc(cap * sizeof *sl);
        if (!sl) return -1;
        memset(sl, 0xff, cap * sizeof *sl);
        for (size_t k = 0; k < t->nsyms; k++) {
            size_t i = hash_bytes(t->sym_text[k], strlen(t->sym_text[k])) & (cap - 1);
            while (sl[i] >= 0) i = (i + 1) & (cap - 1);
            sl[i] = (int32_t)k;
        }
        free(t->sslots);
        t->sslots = sl;
        t->sslot_cap = cap;
    }
    if (grow((void **)&t->sym_text, &t->capsyms, t->nsyms + 1, sizeof *t->sym_text)) return -1;
    size_t mask = t->sslot_cap - 1, i = hash_bytes(s, strlen(s)) & mask;
    while (t->sslots[i] >= 0) i = (i + 1) & mask;
    t->sslots[i] = (int32_t)t->nsyms;
    t->sym_text[t->nsyms++] = s;
    return 0;
}

/* ---- pairs --------------------------------------------------------------- */

static int pair_rehash(trainer *t, size_t cap) {
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    memset(s, 0xff, cap * sizeof *s);
    for (size_t k = 0; k < t->npairs; k++) {
        uint64_t key = (uint64_t)(uint32_t)t->pairs[k].a << 32 | (uint32_t)t->pairs[k].b;
        size_t i = hash_u64(key) & (cap - 1);
        while (s[i] >= 0) i = (i + 1) & (cap - 1);
        s[i] = (int32_t)k;
    }
    free(t->pslots);
    t->pslots = s;
    t->pslot_cap = cap;
    return 0;
}

/* Index of pair (a, b), created with count 0 when new; -1 out of memory. */
static int32_t pair_get(trainer *t, int32_t a, int32_t b) {
    if (2 * (t->npairs + 1) > t->pslot_cap &&
        pair_rehash(t, t->pslot_cap ? 2 * t->pslot_cap : 4096))
        return -1;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = t->pslot_cap - 1, i = hash_u64(key) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t k = t->pslots[i];
        if (k < 0) break;
        if (t->pairs[k].a == a && t->pairs[k].b == b) return k;
    }
    if (t->npairs >= INT32_MAX - 1 ||
        grow((void **)&t->pairs, &t->cappairs, t->npairs + 1, sizeof *t->pairs))
        return -1;
    t->pairs[t->npairs] = (pair){a, b, 0, NULL, 0, 0, 0};
    t->pslots[i] = (int32_t)t->npairs;
    return (int32_t)t->npairs++;
}

/* Note that word w holds pair k (skipped when w was the last one noted). */
static int pair_note_word(trainer *t, int32_t k, int32_t w) {
    pair *p = &t->pairs[k];
    if (p->nwords && p->words[p->nwords - 1] == w) return 0;
    if (grow((void **)&p->words, &p->capwords, p->nwords + 1, sizeof *p->words)) return -1;
    p->words[p->nwords++] = w;
    return 0;
}

/* ---- heap ---------------------------------------------------------------- */

/* Entry x ranks before y: higher count, then smaller (left, right) text. */
static int heap_before(const trainer *t, const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    const pair *p = &t->pairs[x->pair], *q = &t->pairs[y->pair];
    int c = strcmp(t->sym_text[p->a], t->sym_text[q->a]);
    if (!c) c = strcmp(t->sym_text[p->b], t->sym_text[q->b]);
    return c < 0;
}

static void heap_sift_down(trainer *t, size_t i) {
    heap_entry *h = t->heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->nheap && heap_before(t, &h[l], &h[m])) m = l;
        if (r < t->nheap && heap_before(t, &h[r], &h[m])) m = r;
        if (m == i) return;
        heap_entry tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

static int heap_push(trainer *t, int64_t count, int32_t k) {
    if (grow((void **)&t->heap, &t->capheap, t->nheap + 1, sizeof *t->heap)) return -1;
    size_t i = t->nheap++;
    t->heap[i] = (heap_entry){count, k};
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!heap_before(t, &t->heap[i], &t->heap[up])) break;
        heap_entry tmp = t->heap[i];
        t->heap[i] = t->heap[up];
        t->heap[up] = tmp;
        i = up;
    }
    return 0;
}

static heap_entry heap_pop(trainer *t) {
    heap_entry top = t->heap[0];
    t->heap[0] = t->heap[--t->nheap];
    if (t->nheap) heap_sift_down(t, 0);
    return top;
}

/* ------------------------------------------------------------------------ */
/* Steps                                                                    */
/* ------------------------------------------------------------------------ */

/* Read the captions, count the distinct pieces. */
static sl_status count_words(trainer *t, const char *path, size_t *ncaptions) {
    char *buf = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, TRAIN_MAX_CAPTION_BYTES, &buf, &len);
    if (st) return st;
    char *piece = NULL;
    size_t piece_cap = 0;
    size_t lines = 0;
    for (size_t at = 0; at < len && !st;) {
        const char *nl = memchr(buf + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - buf) : len;
        lines++;
        sl_tok_text tx;
        if ((st = sl_tok_clean(buf + at, end - at, &tx))) break;
        size_t pos = 0, s, e;
        int kind;
        while (sl_tok_next_piece(&tx, &pos, &s, &e, &kind)) {
            if (kind != SL_TOK_PIECE_TEXT) continue; /* special tokens are not learned */
            if (4 * (e - s) > piece_cap) {
                free(piece);
                piece_cap = 4 * (e - s) + 64;
                if (!(piece = malloc(piece_cap))) break;
            }
            size_t nb = sl_tok_utf8(tx.cp + s, e - s, piece);
            if (word_add(t, piece, nb)) {
                free(piece);
                piece = NULL;
                break;
            }
        }
        free(tx.cp);
        if (!piece && piece_cap) st = nomem();
        at = end + 1;
    }
    free(piece);
    free(buf);
    *ncaptions = lines;
    return st;
}

/* The 512 base symbols in vocabulary order, and each word spelled in them. */
static sl_status spell_words(trainer *t, int32_t *base_id /* [256] */) {
    const sl_tok_bytemap *bm = sl_tok_bytemap_get();
    int order[256], k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++) {
            int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            if (printable == !pass) order[k++] = b;
        }
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            char *s = malloc(8);
            if (!s) return nomem();
            snprintf(s, 8, "%s%s", bm->sym[order[i]], eow ? SL_TOK_EOW : "");
            if (sym_add(t, s)) {
                free(s);
                return nomem();
            }
            if (!eow) base_id[order[i]] = (int32_t)(t->nsyms - 1);
        }
    if (!(t->sym_arena = malloc((t->wbytes_n + 1) * sizeof *t->sym_arena))) return nomem();
    if (!(t->wstamp = calloc(t->nwords + 1, sizeof *t->wstamp))) return nomem();
    size_t o = 0;
    for (size_t w = 0; w < t->nwords; w++) {
        const unsigned char *p = (const unsigned char *)t->wbytes + t->woff[w];
        uint32_t n = t->wlen[w];
        int32_t *sym = t->sym_arena + o;
        for (uint32_t i = 0; i < n; i++) sym[i] = base_id[p[i]];
        sym[n - 1] += 256; /* the "</w>" form of the last byte */
        t->words[w].sym = sym;
        t->words[w].len = (int32_t)n;
        o += n;
    }
    return SL_OK;
}

/* Initial pair counts and the heap. */
static sl_status count_pairs(trainer *t) {
    for (size_t w = 0; w < t->nwords; w++) {
        const word *wd = &t->words[w];
        for (int32_t i = 0; i + 1 < wd->len; i++) {
            int32_t k = pair_get(t, wd->sym[i], wd->sym[i + 1]);
            if (k < 0 || pair_note_word(t, k, (int32_t)w)) return nomem();
            t->pairs[k].count += wd->count;
        }
    }
    for (size_t k = 0; k < t->npairs; k++)
        if (heap_push(t, t->pairs[k].count, (int32_t)k)) return nomem();
    return SL_OK;
}

/* Add `sign` * count of word w to each of its pairs; with sign > 0, note the
 * word on the pairs holding symbol c and list those pairs in *touched. */
static sl_status word_pairs_adjust(trainer *t, int32_t w, int sign, int32_t c, uint32_t step,
                                   int32_t **touched, size_t *ntouched, size_t *captouched) {
    const word *wd = &t->words[w];
    for (int32_t i = 0; i + 1 < wd->len; i++) {
        int32_t k = pair_get(t, wd->sym[i], wd->sym[i + 1]);
        if (k < 0) return nomem();
        t->pairs[k].count += sign * wd->count;
        if (sign > 0 && (wd->sym[i] == c || wd->sym[i + 1] == c)) {
            if (pair_note_word(t, k, w)) return nomem();
            if (t->pairs[k].stamp != step) {
                t->pairs[k].stamp = step;
                if (grow((void **)touched, captouched, *ntouched + 1, sizeof **touched))
                    return nomem();
                (*touched)[(*ntouched)++] = k;
            }
        }
    }
    return SL_OK;
}

/* Learn merges until `max_merges` or the best count drops below min_freq. */
static sl_status learn(trainer *t, size_t max_merges, int64_t min_freq, sl_progress *prog) {
    int32_t *touched = NULL;
    size_t ntouched = 0, captouched = 0;
    sl_status st = SL_OK;
    uint32_t step = 0;
    while (t->nmerges < max_merges && t->nheap && !st) {
        heap_entry top = heap_pop(t);
        pair *p = &t->pairs[top.pair];
        if (top.count != p->count) {
            if (p->count > 0 && top.count > p->count && heap_push(t, p->count, top.pair))
                st = nomem();
            continue;
        }
        if (p->count < min_freq || p->count <= 0) break;
        int32_t a = p->a, b = p->b;
        /* the merged symbol: an existing one with that text, or a new one */
        size_t la = strlen(t->sym_text[a]), lb = strlen(t->sym_text[b]);
        char *text = malloc(la + lb + 1);
        if (!text) {
            st = nomem();
            break;
        }
        memcpy(text, t->sym_text[a], la);
        memcpy(text + la, t->sym_text[b], lb + 1);
        int32_t c = sym_find(t, text);
        if (c >= 0) {
            free(text);
        } else {
            if (sym_add(t, text)) {
                free(text);
                st = nomem();
                break;
            }
            c = (int32_t)(t->nsyms - 1);
        }
        if (grow((void **)&t->merges, &t->capmerges, t->nmerges + 1, sizeof *t->merges)) {
            st = nomem();
            break;
        }
        t->merges[t->nmerges][0] = a;
        t->merges[t->nmerges][1] = b;
        t->nmerges++;
        step++;
        ntouched = 0;
        /* rescan the words that held (a, b); p may move when pairs grow */
        size_t nw = p->nwords;
        for (size_t j = 0; j < nw && !st; j++) {
            int32_t w = t->pairs[top.pair].words[j];
            if (t->wstamp[w] == step) continue;
            t->wstamp[w] = step;
            word *wd = &t->words[w];
            int found = 0;
            for (int32_t i = 0; i + 1 < wd->len && !found; i++)
                found = wd->sym[i] == a && wd->sym[i + 1] == b;
            if (!found) continue;
            if ((st = word_pairs_adjust(t, w, -1, c, step, &touched, &ntouched, &captouched)))
                break;
            int32_t o = 0;
            for (int32_t i = 0; i < wd->len;) {
                if (i + 1 < wd->len && wd->sym[i] == a && wd->sym[i + 1] == b) {
                    wd->sym[o++] = c;
                    i += 2;
                } else {
                    wd->sym[o++] = wd->sym[i++];
                }
            }
            wd->len = o;
            st = word_pairs_adjust(t, w, +1, c, step, &touched, &ntouched, &captouched);
        }
        /* the merged pair's word list is spent */
        p = &t->pairs[top.pair];
        free(p->words);
        p->words = NULL;
        p->nwords = p->capwords = 0;
        for (size_t j = 0; j < ntouched && !st; j++) {
            int32_t k = touched[j];
            if (t->pairs[k].count > 0 && heap_push(t, t->pairs[k].count, k)) st = nomem();
        }
        sl_progress_add(prog, 1);
    }
    free(touched);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static int json_string(strbuf *b, const char *s) {
    if (sb_add(b, "\"", 1)) return -1;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            if (sb_add(b, esc, 2)) return -1;
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            if (sb_str(b, esc)) return -1;
        } else if (sb_add(b, p, 1)) {
            return -1;
        }
    }
    return sb_add(b, "\"", 1);
}

static sl_status write_outputs(const trainer *t, const char *out_dir) {
    sl_status st = sl_mkdir_p(out_dir);
    if (st) return st;
    size_t plen = strlen(out_dir) + 16;
    char *path = malloc(plen);
    strbuf v = {0}, m = {0};
    int bad = !path;
    char num[32];
    /* vocab.json: symbols in id order, then the two special tokens */
    bad = bad || sb_str(&v, "{");
    for (size_t i = 0; i < t->nsyms + 2 && !bad; i++) {
        const char *s =
            i < t->nsyms ? t->sym_text[i] : (i == t->nsyms ? SL_TOK_SOT_TEXT : SL_TOK_EOT_TEXT);
        snprintf(num, sizeof num, ": %zu", i);
        bad = (i && sb_str(&v, ", ")) || json_string(&v, s) || sb_str(&v, num);
    }
    bad = bad || sb_str(&v, "}\n");
    /* merges.txt */
    bad = bad || sb_str(&m, "#version: 0.2\n");
    for (size_t i = 0; i < t->nmerges && !bad; i++)
        bad = sb_str(&m, t->sym_text[t->merges[i][0]]) || sb_str(&m, " ") ||
              sb_str(&m, t->sym_text[t->merges[i][1]]) || sb_str(&m, "\n");
    if (bad) {
        st = nomem();
    } else {
        snprintf(path, plen, "%s/vocab.json", out_dir);
        st = sl_write_file_atomic(path, v.s, v.n);
        if (!st) {
            snprintf(path, plen, "%s/merges.txt", out_dir);
            st = sl_write_file_atomic(path, m.s, m.n);
        }
    }
    free(path);
    free(v.s);
    free(m.s);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                              */
/* ------------------------------------------------------------------------ */

sl_status sl_tokenizer_train(const char *captions_path, int vocab_size, int min_freq,
                             const char *out_dir) {
    if (!captions_path || !out_dir)
        return sl_set_error(SL_ERR_INVALID, "tokenizer train: NULL path");
    if (vocab_size < 514 || vocab_size > TRAIN_MAX_VOCAB)
        return sl_set_error(SL_ERR_INVALID,
                            "tokenizer train: vocabulary size %d (expected 514..%d: 512 byte "
                            "symbols + merges + 2 special tokens)",
                            vocab_size, TRAIN_MAX_VOCAB);
    if (min_freq < 1)
        return sl_set_error(SL_ERR_INVALID, "tokenizer train: min-freq %d (expected >= 1)",
                            min_freq);
    double t0 = sl_now();
    trainer t = {0};
    size_t ncap = 0;
    int32_t base_id[256];
    sl_status st = count_words(&t, captions_path, &ncap);
    if (!st) st = spell_words(&t, base_id);
    if (!st) st = count_pairs(&t);
    if (st) {
        trainer_free(&t);
        return st;
    }
    double t1 = sl_now();
    SL_INFO("tokenizer train: %zu captions, %zu distinct words, %zu pairs (%.2fs)", ncap, t.nwords,
            t.npairs, t1 - t0);
    /* vocab = 512 base symbols + distinct merged texts + 2 specials; the
     * merges that reuse a text do not add one, so cap by symbols, not merges */
    size_t max_syms = (size_t)vocab_size - 2;
    sl_progress *prog =
        sl_progress_create("merges", max_syms - 512, sl_log_get_level() > SL_LOG_INFO);
    while (!st && t.nsyms < max_syms) {
        size_t before = t.nmerges;
        st = learn(&t, t.nmerges + (max_syms - t.nsyms), min_freq, prog);
        if (t.nmerges == before) break; /* no pair left at min_freq */
    }
    sl_progress_finish(prog);
    if (!st) st = write_outputs(&t, out_dir);
    if (!st)
        SL_INFO("tokenizer train: %zu merges, %zu tokens written to %s (%.2fs)", t.nmerges,
                t.nsyms + 2, out_dir, sl_now() - t1);
    trainer_free(&t);
    return st;
}
