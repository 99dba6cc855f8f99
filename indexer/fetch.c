/*
 * indexer/fetch.c - the URL downloader: libcurl multi transfers streamed to
 * temp files while hashed (SHA-256) and sniffed, retried with exponential
 * backoff on transient failures, renamed into a content-addressed cache;
 * the url -> (hash, size, state) map kept as an append-only journal; and
 * URL-list (TSV) sources for the indexer. See sightline/fetch.h.
 */
#include "sightline/fetch.h"
#include "sightline/image.h"
#include "sightline/indexer.h"
#include "sightline/sightline.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAP_FILE       "urls.tsv"
#define MAX_MAP_BYTES  ((size_t)1 << 30) /* journal bytes read */
#define MAX_LIST_BYTES ((size_t)1 << 30) /* URL-list bytes read */
#define MAX_PARALLEL   256
#define MAX_BACKOFF_S  30.0
#define SNIFF_BYTES    16 /* bytes sl_image_sniff needs at most */
#define PATH_CAP       4096
#define FETCH_WINDOW   1024  /* transfers scheduled together (bounds memory) */
#define SOURCE_CHUNK   65536 /* URLs of a list fetched per sl_fetch_urls call */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static int64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Copy `src` into dst (cap bytes) with tabs, newlines and other control
 * bytes turned into spaces, so it fits one journal field or one message. */
static void copy_clean(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
    if (cap) dst[i] = '\0';
}

/* "http" or "https" (any case) before "://". */
static int scheme_ok(const char *url) {
    return !strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8);
}

/* Why a URL cannot be fetched before any request, or NULL. */
static const char *url_unfit(const char *url) {
    if (strlen(url) > SL_FETCH_MAX_URL) return "URL longer than 8192 bytes";
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f) return "URL holds a space or a control byte";
    if (!scheme_ok(url)) return "unsupported URL scheme (only http and https)";
    return NULL;
}

sl_status sl_fetch_cache_path(const char *cache_dir, const char *h, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s/%.2s/%s", cache_dir, h, h);
    if (n < 0 || (size_t)n >= cap)
        return sl_set_error(SL_ERR_LIMIT, "%s: cache path too long", cache_dir);
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* A string -> index table (open addressing), for the map and for dedup     */
/* ------------------------------------------------------------------------ */

typedef struct strtab {
    size_t *slots; /* index + 1; 0 = empty */
    size_t nslots; /* power of two */
    size_t used;
} strtab;

typedef const char *(*strtab_key_fn)(const void *ctx, size_t i);

/* Index stored under `key`, or SIZE_MAX. */
static size_t strtab_find(const strtab *t, const char *key, strtab_key_fn kf, const void *ctx) {
    if (!t->nslots) return SIZE_MAX;
    for (size_t h = str_hash(key) & (t->nslots - 1);; h = (h + 1) & (t->nslots - 1)) {
        if (!t->slots[h]) return SIZE_MAX;
        if (!strcmp(kf(ctx, t->slots[h] - 1), key)) return t->slots[h] - 1;
    }
}

/* Insert index `i` (its key not present). Returns -1 when out of memory. */
static int strtab_insert(strtab *t, size_t i, strtab_key_fn kf, const void *ctx) {
    if (2 * (t->used + 1) > t->nslots) {
        size_t nn = t->nslots ? 2 * t->nslots : 64;
        size_t *ns = calloc(nn, sizeof *ns);
        if (!ns) return -1;
        for (size_t s = 0; s < t->nslots; s++) {
            if (!t->slots[s]) continue;
            size_t h = str_hash(kf(ctx, t->slots[s] - 1)) & (nn - 1);
            while (ns[h]) h = (h + 1) & (nn - 1);
            ns[h] = t->slots[s];
        }
        free(t->slots);
        t->slots = ns;
        t->nslots = nn;
    }
    size_t h = str_hash(kf(ctx, i)) & (t->nslots - 1);
    while (t->slots[h]) h = (h + 1) & (t->nslots - 1);
    t->slots[h] = i + 1;
    t->used++;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The URL map (journal)                                                    */
/* ------------------------------------------------------------------------ */

typedef struct map_entry {
    char *url;          /* owned */
    char state;         /* 'o' ok, 'f' permanent failure, 't' transient failure */
    char sha[65];       /* hex; "" unless ok */
    uint64_t size;      /* body bytes */
    int64_t fetched_ns; /* when */
    int http;           /* last HTTP status */
    int status;         /* sl_status of a failure */
    char error[384];    /* why it failed */
} map_entry;

typedef struct url_map {
    map_entry *v;
    size_t n, cap;
    strtab tab;
    size_t lines; /* journal lines, live or stale */
} url_map;

static const char *map_key(const void *ctx, size_t i) {
    return ((const url_map *)ctx)->v[i].url;
}

static void map_free(url_map *m) {
    for (size_t i = 0; i < m->n; i++) free(m->v[i].url);
    free(m->v);
    free(m->tab.slots);
    memset(m, 0, sizeof *m);
}

/* Insert or replace the entry of e->url (copied). */
static sl_status map_put(url_map *m, const map_entry *e) {
    size_t i = strtab_find(&m->tab, e->url, map_key, m);
    if (i != SIZE_MAX) {
        char *keep = m->v[i].url;
        m->v[i] = *e;
        m->v[i].url = keep;
        return SL_OK;
    }
    if (m->n == m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 256;
        map_entry *nv = realloc(m->v, nc * sizeof *nv);
        if (!nv) return sl_set_error(SL_ERR_NOMEM, "out of memory");
        m->v = nv;
        m->cap = nc;
    }
    m->v[m->n] = *e;
    if (!(m->v[m->n].url = strdup(e->url))) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    if (strtab_insert(&m->tab, m->n, map_key, m)) {
        free(m->v[m->n].url);
        return sl_set_error(SL_ERR_NOMEM, "out of memory");
    }
    m->n++;
    return SL_OK;
}

/* One journal line (without its newline) into `e`; e->url points into the
 * line. Returns 0 when well formed. */
static int parse_map_line(char *line, map_entry *e) {
    char *f[8];
    int nf = 0;
    for (char *p = line; nf < 8; nf++) {
        f[nf] = p;
        char *tab = strchr(p, '\t');
        if (!tab) {
            nf++;
            break;
        }
        *tab = '\0';
        p = tab + 1;
    }
    if (nf != 8) return -1;
    memset(e, 0, sizeof *e);
    if (!strcmp(f[0], "ok"))
        e->state = 'o';
    else if (!strcmp(f[0], "fail"))
        e->state = 'f';
    else if (!strcmp(f[0], "temp"))
        e->state = 't';
    else
        return -1;
    size_t hl = strlen(f[1]);
    if (e->state == 'o') {
        if (hl != 64 || strspn(f[1], "0123456789abcdef") != 64) return -1;
        memcpy(e->sha, f[1], 65);
    }
    char *end;
    errno = 0;
    e->size = strtoull(f[2], &end, 10);
    if (*end || errno) return -1;
    e->fetched_ns = strtoll(f[3], &end, 10);
    if (*end || errno) return -1;
    long http = strtol(f[4], &end, 10);
    if (*end || http < 0 || http > 999) return -1;
    e->http = (int)http;
    long status = strtol(f[5], &end, 10);
    if (*end || status < 0 || status > 100) return -1;
    e->status = (int)status;
    if (!f[6][0] || strlen(f[6]) > SL_FETCH_MAX_URL) return -1;
    e->url = f[6];
    copy_clean(e->error, sizeof e->error, f[7]);
    return 0;
}

/* Load the journal; a missing file is an empty map; malformed or torn
 * lines are skipped. */
static sl_status map_load(url_map *m, const char *path) {
    char *buf;
    size_t len;
    sl_status st = sl_read_file(path, MAX_MAP_BYTES, &buf, &len);
    if (st == SL_ERR_NOT_FOUND) {
        sl_clear_error();
        return SL_OK;
    }
    if (st) return st;
    for (char *line = buf, *nl; line < buf + len && st == SL_OK; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(buf + len - line));
        if (!nl) break; /* torn last line */
        *nl = '\0';
        m->lines++;
        map_entry e;
        if (parse_map_line(line, &e) == 0) st = map_put(m, &e);
    }
    free(buf);
    return st;
}

/* Format one journal line (with its newline) into buf; returns its length,
 * or 0 when it does not fit. */
static size_t map_format(const map_entry *e, char *buf, size_t cap) {
    const char *state = e->state == 'o' ? "ok" : e->state == 'f' ? "fail" : "temp";
    int n = snprintf(buf, cap, "%s\t%s\t%" PRIu64 "\t%" PRId64 "\t%d\t%d\t%s\t%s\n", state,
                     e->state == 'o' ? e->sha : "-", e->size, e->fetched_ns, e->http, e->status,
                     e->url, e->error);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Rewrite the journal with only the live entries (temp + rename). */
static sl_status map_compact(const url_map *m, const char *path) {
    size_t cap = 0, used = 0;
    char *out = NULL;
    char line[SL_FETCH_MAX_URL + 1024];
    for (size_t i = 0; i < m->n; i++) {
        size_t n = map_format(&m->v[i], line, sizeof line);
        if (!n) continue;
        if (used + n > cap) {
            size_t nc = cap ? 2 * cap : 65536;
            while (nc < used + n) nc *= 2;
            char *no = realloc(out, nc);
            if (!no) {
                free(out);
                return sl_set_error(SL_ERR_NOMEM, "out of memory");
            }
            out = no;
            cap = nc;
        }
        memcpy(out + used, line, n);
        used += n;
    }
    sl_status st = sl_write_file_atomic(path, out ? out : "", used);
    free(out);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Transfers                                                                */
/* ------------------------------------------------------------------------ */

struct fetcher;

typedef struct job {
    struct fetcher *f;               /* the run it belongs to */
    const char *url;                 /* borrowed from the caller */
    size_t result;                   /* index of its result */
    int attempts;                    /* requests started */
    double not_before;               /* sl_now() of the next attempt */
    CURL *easy;                      /* the attempt in flight, or NULL */
    int fd;                          /* temp file, -1 before the first body byte */
    char tmp[PATH_CAP];              /* its path */
    EVP_MD_CTX *md;                  /* SHA-256 of the body so far */
    uint64_t got;                    /* body bytes of this attempt */
    unsigned char head[SNIFF_BYTES]; /* first body bytes */
    size_t nhead;
    int sniffed;     /* the head was checked and is an image */
    int too_big;     /* the body passed max_bytes: stopped */
    int not_image;   /* the head is no image: stopped */
    int write_errno; /* the temp file could not be written: stopped */
    char errbuf[CURL_ERROR_SIZE];
} job;

typedef struct fetcher {
    const char *dir;          /* cache directory */
    sl_fetch_opts o;          /* defaults filled in */
    url_map map;              /* the journal's entries */
    int journal;              /* append fd; -1 when it could not be opened */
    sl_fetch_result *results; /* the caller's */
    sl_fetch_stats st;
    sl_progress *progress;
} fetcher;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init_once(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Drop the body of the current attempt (temp file included). */
static void job_reset_body(job *j) {
    if (j->fd >= 0) {
        close(j->fd);
        unlink(j->tmp);
        j->fd = -1;
    }
    j->got = 0;
    j->nhead = 0;
    j->sniffed = j->too_big = j->not_image = j->write_errno = 0;
    j->errbuf[0] = '\0';
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    job *j = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300) return 0; /* an error page: stop, the status says enough */
    if ((uint64_t)n > j->f->o.max_bytes - j->got) {
        j->too_big = 1;
        return 0;
    }
    if (!j->sniffed) {
        size_t take = SNIFF_BYTES - j->nhead < n ? SNIFF_BYTES - j->nhead : n;
        memcpy(j->head + j->nhead, data, take);
        j->nhead += take;
        if (j->nhead == SNIFF_BYTES) {
            if (sl_image_sniff(j->head, j->nhead) == SL_IMG_UNKNOWN) {
                j->not_image = 1;
                return 0;
            }
            j->sniffed = 1;
        }
    }
    if (j->fd < 0) {
        int pl = snprintf(j->tmp, sizeof j->tmp, "%s/tmp/part.XXXXXX", j->f->dir);
        if (pl < 0 || (size_t)pl >= sizeof j->tmp) {
            j->write_errno = ENAMETOOLONG;
            return 0;
        }
        j->fd = mkostemp(j->tmp, O_CLOEXEC);
        if (j->fd < 0) {
            j->write_errno = errno;
            return 0;
        }
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(j->fd, data + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            j->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    EVP_DigestUpdate(j->md, data, n);
    j->got += n;
    return n;
}

/* Start one attempt of `j` on `m`. Errors only for libcurl or memory. */
static sl_status job_start(fetcher *f, CURLM *m, job *j) {
    job_reset_body(j);
    if (!j->md && !(j->md = EVP_MD_CTX_new())) return sl_set_error(SL_ERR_NOMEM, "out of memory");
    EVP_DigestInit_ex(j->md, EVP_sha256(), NULL);
    CURL *e = curl_easy_init();
    if (!e) return sl_set_error(SL_ERR_EXTERNAL, "curl_easy_init failed");
    char agent[64]; /* libcurl copies option strings */
    snprintf(agent, sizeof agent, "sightline/%s", sl_version());
    curl_easy_setopt(e, CURLOPT_URL, j->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)j);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)j);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, agent);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(f->o.connect_timeout * 1000));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(f->o.timeout * 1000));
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->o.max_bytes);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, f->o.max_redirects >= 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)(f->o.max_redirects > 0 ? f->o.max_redirects : 0));
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    j->easy = e;
    CURLMcode mc = curl_multi_add_handle(m, e);
    if (mc != CURLM_OK) {
        curl_easy_cleanup(e);
        j->easy = NULL;
        return sl_set_error(SL_ERR_EXTERNAL, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    }
    j->attempts++;
    f->st.requests++;
    return SL_OK;
}

/* Add a finished URL's entry to the map and the journal. */
static void journal_put(fetcher *f, const map_entry *e) {
    if (map_put(&f->map, e)) return; /* out of memory: the next run fetches it again */
    if (f->journal < 0) return;
    char line[SL_FETCH_MAX_URL + 1024];
    size_t n = map_format(e, line, sizeof line);
    if (n && write(f->journal, line, n) == (ssize_t)n) f->map.lines++;
}

/* Move a complete body into the cache. Returns 0, or -1 with `why` set. */
static int job_commit(fetcher *f, job *j, char hex[65], char *why, size_t cap) {
    uint8_t d[32];
    unsigned int dl = 32;
    EVP_DigestFinal_ex(j->md, d, &dl);
    sl_hex(d, 32, hex);
    char dst[PATH_CAP], sub[PATH_CAP];
    if (fsync(j->fd) != 0) {
        snprintf(why, cap, "cache write failed: %s", strerror(errno));
        return -1;
    }
    close(j->fd);
    j->fd = -1;
    if (sl_fetch_cache_path(f->dir, hex, dst, sizeof dst) ||
        snprintf(sub, sizeof sub, "%s/%.2s", f->dir, hex) >= (int)sizeof sub || sl_mkdir_p(sub)) {
        snprintf(why, cap, "cache: %s", sl_last_error());
        unlink(j->tmp);
        return -1;
    }
    struct stat sb;
    if (stat(dst, &sb) == 0 && (uint64_t)sb.st_size == j->got) {
        unlink(j->tmp); /* the same content is cached already */
        return 0;
    }
    if (rename(j->tmp, dst) != 0) {
        snprintf(why, cap, "cache: rename to %.200s: %s", dst, strerror(errno));
        unlink(j->tmp);
        return -1;
    }
    sl_fsync_parent_dir(dst);
    return 0;
}

/* Decide the outcome of a finished attempt. Returns 1 when it should be
 * tried again (j->not_before set), 0 when its result is final. */
static int job_finish(fetcher *f, job *j, CURLcode cc) {
    sl_fetch_result *r = &f->results[j->result];
    long code = 0;
    char *ct = NULL;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(j->easy, CURLINFO_CONTENT_TYPE, &ct);
    char ctype[128];
    copy_clean(ctype, sizeof ctype, ct ? ct : "no Content-Type");
    char why[384] = "";
    sl_status st = SL_OK;
    int transient = 0, retry = 0;
    if (cc == CURLE_TOO_MANY_REDIRECTS) {
        st = SL_ERR_LIMIT;
        snprintf(why, sizeof why, "too many redirects (more than %d)", f->o.max_redirects);
    } else if (cc == CURLE_UNSUPPORTED_PROTOCOL) {
        st = SL_ERR_UNSUPPORTED;
        snprintf(why, sizeof why, "redirected to an unsupported URL scheme (only http and https)");
    } else if (j->write_errno) {
        st = SL_ERR_IO;
        transient = 1;
        snprintf(why, sizeof why, "cache write failed: %s", strerror(j->write_errno));
    } else if (code >= 300 && (cc == CURLE_OK || cc == CURLE_WRITE_ERROR)) {
        transient = retry = code == 429 || code >= 500;
        st = code == 404 || code == 410 ? SL_ERR_NOT_FOUND : SL_ERR_EXTERNAL;
        snprintf(why, sizeof why, "HTTP %ld", code);
    } else if (j->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        st = SL_ERR_LIMIT;
        snprintf(why, sizeof why, "body larger than %" PRIu64 " bytes", f->o.max_bytes);
    } else if (j->not_image) {
        st = SL_ERR_FORMAT;
        snprintf(why, sizeof why, "not an image (%s)", ctype);
    } else if (cc != CURLE_OK) {
        st = SL_ERR_EXTERNAL;
        transient = cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_COULDNT_CONNECT ||
                    cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_RECV_ERROR ||
                    cc == CURLE_SEND_ERROR || cc == CURLE_GOT_NOTHING || cc == CURLE_PARTIAL_FILE;
        retry = transient;
        const char *detail = j->errbuf[0] ? j->errbuf : curl_easy_strerror(cc);
        if (cc == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, sizeof why, "timed out (%s)", detail);
        else
            snprintf(why, sizeof why, "%s", detail);
    } else if (code < 200) {
        st = SL_ERR_EXTERNAL;
        snprintf(why, sizeof why, "HTTP %ld", code);
    } else if (j->got == 0) {
        st = SL_ERR_FORMAT;
        snprintf(why, sizeof why, "empty body");
    } else if (!j->sniffed && sl_image_sniff(j->head, j->nhead) == SL_IMG_UNKNOWN) {
        st = SL_ERR_FORMAT;
        snprintf(why, sizeof why, "not an image (%s)", ctype);
    }
    char hex[65] = "";
    if (st == SL_OK && job_commit(f, j, hex, why, sizeof why)) {
        st = SL_ERR_IO;
        transient = 1;
    }
    uint64_t got = j->got;
    job_reset_body(j);
    int max_attempts = 1 + (f->o.retries > 0 ? f->o.retries : 0);
    if (st != SL_OK && retry && j->attempts < max_attempts) {
        double delay = f->o.backoff;
        for (int k = 1; k < j->attempts && delay < MAX_BACKOFF_S; k++) delay *= 2;
        if (delay > MAX_BACKOFF_S) delay = MAX_BACKOFF_S;
        j->not_before = sl_now() + delay;
        SL_DEBUG("%s: %s; attempt %d of %d in %.1f s", j->url, why, j->attempts + 1, max_attempts,
                 delay);
        return 1;
    }
    r->status = st;
    r->transient = transient;
    r->attempts = j->attempts;
    r->http_code = (int)code;
    map_entry e = {.url = (char *)j->url, .http = (int)code, .status = (int)st};
    if (st == SL_OK) {
        memcpy(r->sha256, hex, 65);
        r->size = got;
        r->fetched_ns = wall_ns();
        e.state = 'o';
        memcpy(e.sha, hex, 65);
        e.size = got;
        e.fetched_ns = r->fetched_ns;
        f->st.downloaded++;
        f->st.bytes += got;
    } else {
        if (j->attempts > 1 && transient)
            snprintf(r->error, sizeof r->error, "%.340s (after %d attempts)", why, j->attempts);
        else
            snprintf(r->error, sizeof r->error, "%s", why);
        e.state = transient ? 't' : 'f';
        e.fetched_ns = wall_ns();
        copy_clean(e.error, sizeof e.error, r->error);
        f->st.failed++;
        SL_DEBUG("%s: %s", j->url, r->error);
    }
    journal_put(f, &e);
    return 0;
}

/* Run every job to its final result on one multi handle. */
static sl_status run_jobs(fetcher *f, job *jobs, size_t njobs) {
    CURLM *m = curl_multi_init();
    job **retry = malloc(njobs * sizeof *retry);
    if (!m || !retry) {
        if (m) curl_multi_cleanup(m);
        free(retry);
        return sl_set_error(SL_ERR_EXTERNAL, "curl_multi_init failed or out of memory");
    }
    sl_status st = SL_OK;
    size_t next = 0, nretry = 0, nactive = 0, done = 0, par = (size_t)f->o.parallel;
    while (done < njobs && st == SL_OK) {
        double now = sl_now();
        for (size_t k = 0; k < nretry && nactive < par && st == SL_OK;) {
            if (retry[k]->not_before <= now) {
                st = job_start(f, m, retry[k]);
                retry[k] = retry[--nretry];
                nactive++;
            } else {
                k++;
            }
        }
        while (nactive < par && next < njobs && st == SL_OK) {
            st = job_start(f, m, &jobs[next++]);
            nactive++;
        }
        if (st) break;
        int running = 0;
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc != CURLM_OK) {
            st = sl_set_error(SL_ERR_EXTERNAL, "curl_multi_perform: %s", curl_multi_strerror(mc));
            break;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *e = msg->easy_handle;
            CURLcode cc = msg->data.result;
            char *priv = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
            job *j = (job *)(void *)priv;
            int again = job_finish(f, j, cc);
            curl_multi_remove_handle(m, e);
            curl_easy_cleanup(e);
            j->easy = NULL;
            nactive--;
            if (again) {
                retry[nretry++] = j;
            } else {
                done++;
                sl_progress_add(f->progress, 1);
            }
        }
        if (done == njobs) break;
        long wait_ms = 200;
        if (nretry && nactive < par) {
            double soonest = retry[0]->not_before;
            for (size_t k = 1; k < nretry; k++)
                if (retry[k]->not_before < soonest) soonest = retry[k]->not_before;
            double ms = (soonest - sl_now()) * 1000;
            if (ms < wait_ms) wait_ms = ms > 0 ? (long)ms + 1 : 0;
        }
        if (nactive == 0) {
            struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
            nanosleep(&ts, NULL);
        } else if ((mc = curl_multi_poll(m, NULL, 0, (int)wait_ms, NULL)) != CURLM_OK) {
            st = sl_set_error(SL_ERR_EXTERNAL, "curl_multi_poll: %s", curl_multi_strerror(mc));
        }
    }
    for (size_t i = 0; i < njobs; i++) {
        if (jobs[i].easy) {
            curl_multi_remove_handle(m, jobs[i].easy);
            curl_easy_cleanup(jobs[i].easy);
            jobs[i].easy = NULL;
        }
        job_reset_body(&jobs[i]);
    }
    curl_multi_cleanup(m);
    free(retry);
    return st;
}

/* ------------------------------------------------------------------------ */
/* sl_fetch_urls                                                            */
/* ------------------------------------------------------------------------ */

static const char *url_key(const void *ctx, size_t i) {
    return ((const char *const *)ctx)[i];
}

sl_status sl_fetch_urls(const char *cache_dir, const char *const *urls, size_t n,
                        const sl_fetch_opts *opts, sl_fetch_result *results,
                        sl_fetch_stats *stats) {
    fetcher f = {.dir = cache_dir, .journal = -1, .results = results};
    if (opts) f.o = *opts;
    if (f.o.parallel <= 0) f.o.parallel = 8;
    if (f.o.parallel > MAX_PARALLEL) f.o.parallel = MAX_PARALLEL;
    if (f.o.connect_timeout <= 0) f.o.connect_timeout = 10;
    if (f.o.timeout <= 0) f.o.timeout = 60;
    if (f.o.retries == 0) f.o.retries = 3;
    if (f.o.backoff <= 0) f.o.backoff = 0.5;
    if (f.o.max_bytes == 0) f.o.max_bytes = (uint64_t)50 << 20;
    if (f.o.max_redirects == 0) f.o.max_redirects = 5;
    memset(results, 0, n * sizeof *results);
    if (stats) memset(stats, 0, sizeof *stats);

    char path[PATH_CAP];
    if (snprintf(path, sizeof path, "%s/tmp", cache_dir) >= (int)sizeof path)
        return sl_set_error(SL_ERR_LIMIT, "%s: path too long", cache_dir);
    sl_status st = sl_mkdir_p(path);
    if (st) return st;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return sl_set_error(SL_ERR_EXTERNAL, "curl_global_init: %s",
                            curl_easy_strerror(curl_init_rc));
    snprintf(path, sizeof path, "%s/%s", cache_dir, MAP_FILE);
    if ((st = map_load(&f.map, path))) {
        map_free(&f.map);
        return sl_wrap_error(st, "reading the download map: ");
    }

    size_t *first = malloc((n ? n : 1) * sizeof *first);
    unsigned char *need = calloc(n ? n : 1, 1);
    job *jobs = calloc(FETCH_WINDOW, sizeof *jobs);
    strtab seen = {0};
    size_t nneed = 0;
    if (!first || !need || !jobs) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu URLs", n);
        goto done;
    }
    /* what the cache and the map answer without a request */
    for (size_t i = 0; i < n; i++) {
        const char *url = urls[i];
        size_t k = strtab_find(&seen, url, url_key, urls);
        if (k != SIZE_MAX) {
            first[i] = k;
            continue;
        }
        first[i] = i;
        if (strtab_insert(&seen, i, url_key, urls)) {
            st = sl_set_error(SL_ERR_NOMEM, "out of memory");
            goto done;
        }
        f.st.urls++;
        sl_fetch_result *r = &results[i];
        const char *bad = url_unfit(url);
        if (bad) {
            r->status = scheme_ok(url) ? SL_ERR_INVALID : SL_ERR_UNSUPPORTED;
            snprintf(r->error, sizeof r->error, "%s", bad);
            r->cached = 1;
            f.st.failed++;
            continue;
        }
        size_t mi = strtab_find(&f.map.tab, url, map_key, &f.map);
        if (mi != SIZE_MAX) {
            const map_entry *e = &f.map.v[mi];
            char cp[PATH_CAP];
            struct stat sb;
            if (e->state == 'o' && sl_fetch_cache_path(cache_dir, e->sha, cp, sizeof cp) == SL_OK &&
                stat(cp, &sb) == 0 && (uint64_t)sb.st_size == e->size) {
                r->cached = 1;
                r->http_code = e->http;
                memcpy(r->sha256, e->sha, 65);
                r->size = e->size;
                r->fetched_ns = e->fetched_ns;
                f.st.cached++;
                continue;
            }
            if (e->state == 'f' && !f.o.retry_failed) {
                r->cached = 1;
                r->status = e->status ? (sl_status)e->status : SL_ERR_EXTERNAL;
                r->http_code = e->http;
                snprintf(r->error, sizeof r->error, "%s", e->error);
                f.st.failed++;
                continue;
            }
        }
        need[i] = 1;
        nneed++;
    }

    /* the rest, a window of jobs at a time (bounded memory) */
    if (nneed) {
        snprintf(path, sizeof path, "%s/%s", cache_dir, MAP_FILE);
        f.journal = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (f.journal < 0)
            SL_WARN("%s: %s (downloads will not be remembered)", path, strerror(errno));
        f.progress = sl_progress_create("download", nneed, f.o.quiet);
        for (size_t i = 0; i < n && st == SL_OK;) {
            size_t nj = 0;
            for (; i < n && nj < FETCH_WINDOW; i++)
                if (need[i]) jobs[nj++] = (job){.f = &f, .url = urls[i], .result = i, .fd = -1};
            if (nj) st = run_jobs(&f, jobs, nj);
            for (size_t k = 0; k < nj; k++) EVP_MD_CTX_free(jobs[k].md);
        }
        sl_progress_finish(f.progress);
        if (f.journal >= 0) {
            fsync(f.journal);
            close(f.journal);
        }
        if (st == SL_OK && f.map.lines > 2 * f.map.n + 64) {
            sl_status cs = map_compact(&f.map, path);
            if (cs) SL_WARN("compacting %s: %s", path, sl_last_error());
        }
    }
    for (size_t i = 0; i < n && st == SL_OK; i++)
        if (first[i] != i) results[i] = results[first[i]];
    if (st == SL_OK)
        SL_DEBUG("%s: %" PRIu64 " URLs: %" PRIu64 " cached, %" PRIu64 " downloaded (%" PRIu64
                 " requests), %" PRIu64 " failed",
                 cache_dir, f.st.urls, f.st.cached, f.st.downloaded, f.st.requests, f.st.failed);
done:
    free(jobs);
    free(need);
    free(first);
    free(seen.slots);
    map_free(&f.map);
    if (stats) *stats = f.st;
    return st;
}

/* ------------------------------------------------------------------------ */
/* URL-list sources                                                         */
/* ------------------------------------------------------------------------ */

int sl_url_source_is(const char *source) {
    return !strncmp(source, SL_FETCH_SOURCE_PFX, strlen(SL_FETCH_SOURCE_PFX));
}

/* One listed line of a TSV. */
typedef struct list_line {
    size_t line;     /* 1-based */
    const char *url; /* into the file buffer (NUL-terminated there) */
    const char *caption;
    const char *error; /* malformed: why (static text); NULL when fine */
    size_t url_index;  /* index into the URLs handed to sl_fetch_urls */
} list_line;

/* Why a URL field is malformed, or NULL. */
static const char *url_malformed(const char *u) {
    if (!*u) return "no URL before the tab";
    if (strlen(u) > SL_FETCH_MAX_URL) return "URL longer than 8192 bytes";
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p == 0x7f) return "URL holds a space or a control byte";
    const char *sep = strstr(u, "://");
    size_t sl = sep ? (size_t)(sep - u) : 0;
    if (!sl || strspn(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-") != sl)
        return "not a URL (no scheme://)";
    return NULL;
}

sl_status sl_url_source_fetch(const char *index_dir, const char *source, const sl_fetch_opts *opts,
                              sl_url_entry_fn fn, void *ctx, char *root_bad, size_t cap) {
    if (cap) root_bad[0] = '\0';
    if (!sl_url_source_is(source))
        return sl_set_error(SL_ERR_INVALID, "%s: not a URL-list source", source);
    const char *tsv = source + strlen(SL_FETCH_SOURCE_PFX);
    char *buf;
    size_t len;
    sl_status st = sl_read_file(tsv, MAX_LIST_BYTES, &buf, &len);
    if (st) {
        snprintf(root_bad, cap, "source %s is %s (%s)", tsv,
                 st == SL_ERR_NOT_FOUND ? "missing" : "unreadable", sl_last_error());
        sl_clear_error();
        return SL_OK;
    }
    size_t nlines = 1;
    for (size_t i = 0; i < len; i++) nlines += buf[i] == '\n';
    list_line *lines = calloc(nlines, sizeof *lines);
    const char **urls = calloc(nlines, sizeof *urls);
    sl_fetch_result *res = NULL;
    size_t nl = 0, nurl = 0;
    if (!lines || !urls) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu lines of %s", nlines, tsv);
        goto done;
    }
    size_t lineno = 0;
    for (char *line = buf, *end; line < buf + len; line = end + 1) {
        lineno++;
        end = memchr(line, '\n', (size_t)(buf + len - line));
        if (!end) end = buf + len;
        *end = '\0';
        size_t ll = (size_t)(end - line);
        if (ll && line[ll - 1] == '\r') line[--ll] = '\0';
        char *tab = strchr(line, '\t');
        const char *caption = "";
        if (tab) {
            *tab = '\0';
            caption = tab + 1;
            if (strlen(caption) > SL_FETCH_MAX_CAPTION) tab[1 + SL_FETCH_MAX_CAPTION] = '\0';
        }
        while (*line == ' ') line++;
        for (size_t ul = strlen(line); ul && line[ul - 1] == ' ';) line[--ul] = '\0';
        if (!tab && (!*line || *line == '#')) continue; /* blank or comment */
        if (*line == '#') continue;
        list_line *l = &lines[nl++];
        l->line = lineno;
        l->url = line;
        l->caption = caption;
        l->error = url_malformed(line);
        if (!l->error) {
            l->url_index = nurl;
            urls[nurl++] = line;
        }
    }
    if (nl == 0) {
        snprintf(root_bad, cap, "source %s lists no URLs", tsv);
        goto done;
    }
    size_t chunk = nurl < SOURCE_CHUNK ? (nurl ? nurl : 1) : SOURCE_CHUNK;
    res = calloc(chunk, sizeof *res);
    if (!res) {
        st = sl_set_error(SL_ERR_NOMEM, "out of memory for %zu URLs", chunk);
        goto done;
    }
    char dir[PATH_CAP];
    if (snprintf(dir, sizeof dir, "%s/%s", index_dir, SL_FETCH_DIRNAME) >= (int)sizeof dir) {
        st = sl_set_error(SL_ERR_LIMIT, "%s: path too long", index_dir);
        goto done;
    }
    sl_fetch_stats total = {0}, cs;
    int stop = 0;
    /* lines [i0, i1) hold URLs [u0, u0 + nu): fetch them, then hand the lines out */
    for (size_t i0 = 0, u0 = 0; i0 < nl && !stop;) {
        size_t i1 = i0, nu = 0;
        while (i1 < nl && (lines[i1].error || nu < chunk)) nu += !lines[i1++].error;
        if (nu) {
            if ((st = sl_fetch_urls(dir, urls + u0, nu, opts, res, &cs))) goto done;
            total.urls += cs.urls;
            total.cached += cs.cached;
            total.downloaded += cs.downloaded;
            total.failed += cs.failed;
            total.requests += cs.requests;
            total.bytes += cs.bytes;
        }
        for (size_t i = i0; i < i1 && !stop; i++) {
            list_line *l = &lines[i];
            char key[PATH_CAP + 32], cp[PATH_CAP], why[PATH_CAP + 128];
            sl_url_entry e = {.key = l->url, .caption = l->caption};
            if (l->error) {
                /* keyed by the text as written (stable when lines move), or FILE:LINE */
                if (!*l->url || strlen(l->url) > SL_FETCH_MAX_URL) {
                    snprintf(key, sizeof key, "%s:%zu", tsv, l->line);
                    e.key = key;
                }
                snprintf(why, sizeof why, "malformed line %zu of %s: %s", l->line, tsv, l->error);
                e.error = why;
            } else {
                const sl_fetch_result *r = &res[l->url_index - u0];
                if (r->status != SL_OK) {
                    e.error = r->error[0] ? r->error : sl_status_name(r->status);
                } else if (sl_fetch_cache_path(dir, r->sha256, cp, sizeof cp) == SL_OK) {
                    e.cache_path = cp;
                    e.mtime_ns = r->fetched_ns;
                    e.size = r->size;
                } else {
                    e.error = "cache path too long";
                }
            }
            stop = fn(ctx, &e);
        }
        i0 = i1;
        u0 += nu;
    }
    SL_INFO("%s: %" PRIu64 " URLs: %" PRIu64 " cached, %" PRIu64 " downloaded (%.1f MB, %" PRIu64
            " requests), %" PRIu64 " failed",
            tsv, total.urls, total.cached, total.downloaded, (double)total.bytes / 1e6,
            total.requests, total.failed);
done:
    free(res);
    free(urls);
    free(lines);
    free(buf);
    return st;
}
