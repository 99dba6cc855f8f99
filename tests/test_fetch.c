/*
 * tests/test_fetch.c - the URL downloader against a local HTTP server
 * (tests/reference/http_server.py on 127.0.0.1, Debian's /usr/bin/python3):
 * parallel downloads into the content-addressed cache, a 500-then-OK URL
 * (retried), a permanent 404 (not retried), a 503 (retried, reported), a
 * hanging URL (timed out), redirect chains within and beyond the limit and
 * a loop, a redirect to file://, oversized bodies with and without
 * Content-Length, a non-image, unsupported schemes, a re-run that requests
 * nothing already fetched, a torn journal line, a deleted cache file, and
 * URL-list (TSV) parsing. usage: test_fetch SERVER.py
 */
#include "sightline/fetch.h"
#include "sightline/indexer.h"
#include "testutil.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t server_pid = -1;
static int port;

/* ---- the server ---------------------------------------------------------- */

static void stop_server(void) {
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
}

static void on_signal(int sig) {
    if (server_pid > 0) kill(server_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Start the server serving `root`; 0 when it listens. */
static int start_server(const char *script, const char *root, const char *tmp) {
    char port_file[600];
    snprintf(port_file, sizeof port_file, "%s/port", tmp);
    pid_t parent = getpid();
    server_pid = fork();
    if (server_pid < 0) return -1;
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (getppid() != parent) _exit(1);
        execl("/usr/bin/python3", "python3", script, root, port_file, (char *)NULL);
        _exit(127);
    }
    atexit(stop_server);
    signal(SIGSEGV, on_signal);
    signal(SIGABRT, on_signal);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int ok = fscanf(f, "%d", &port) == 1;
            fclose(f);
            if (ok) return 0;
        }
        if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
            server_pid = -1;
            return -1;
        }
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static size_t collect(char *data, size_t size, size_t nmemb, void *ud) {
    char *buf = ud;
    size_t n = size * nmemb, have = strlen(buf);
    if (have + n >= 65536) return 0;
    memcpy(buf + have, data, n);
    buf[have + n] = '\0';
    return n;
}

/* Requests the server saw for `path` (0 when none). */
static int count_of(const char *path) {
    static char buf[65536];
    buf[0] = '\0';
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/__counts", port);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, buf);
    CURLcode cc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    if (cc != CURLE_OK) return -1;
    json_t *j = json_loads(buf, 0, NULL);
    int n = (int)json_integer_value(json_object_get(j, path));
    json_decref(j);
    return n;
}

/* ---- fixtures ------------------------------------------------------------- */

/* A file that sniffs as JPEG (the downloader only sniffs), `n` bytes,
 * distinct per seed. Its SHA-256 hex goes to hex. */
static void write_image(const char *dir, const char *name, size_t n, int seed, char hex[65]) {
    unsigned char *b = malloc(n);
    static const unsigned char head[] = {0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0};
    memcpy(b, head, sizeof head);
    uint32_t x = 2463534242u + (uint32_t)seed * 7919u;
    for (size_t i = sizeof head; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    uint8_t d[32];
    sl_sha256(b, n, d);
    sl_hex(d, 32, hex);
    free(b);
}

static int file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int)sb.st_size : -1;
}

static int dir_entries(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ---- the cases ------------------------------------------------------------ */

enum {
    U_IMG0,
    U_IMG5 = U_IMG0 + 5,
    U_DUP,
    U_FLAKY,
    U_404,
    U_503,
    U_HANG,
    U_REDIR3,
    U_REDIR7,
    U_LOOP,
    U_TOFILE,
    U_BIG,
    U_BIGSTREAM,
    U_HTML,
    U_FILE,
    U_FTP,
    U_N
};

static char urls_buf[U_N][256];
static const char *urls[U_N];

static void make_urls(void) {
    for (int i = 0; i <= 5; i++)
        snprintf(urls_buf[U_IMG0 + i], 256, "http://127.0.0.1:%d/files/img%d.jpg", port, i);
    snprintf(urls_buf[U_DUP], 256, "http://127.0.0.1:%d/files/img1.jpg", port);
    snprintf(urls_buf[U_FLAKY], 256, "http://127.0.0.1:%d/flaky/2/img0.jpg", port);
    snprintf(urls_buf[U_404], 256, "http://127.0.0.1:%d/status/404", port);
    snprintf(urls_buf[U_503], 256, "http://127.0.0.1:%d/status/503", port);
    snprintf(urls_buf[U_HANG], 256, "http://127.0.0.1:%d/hang/4", port);
    snprintf(urls_buf[U_REDIR3], 256, "http://127.0.0.1:%d/redirect/3/img2.jpg", port);
    snprintf(urls_buf[U_REDIR7], 256, "http://127.0.0.1:%d/redirect/7/img2.jpg", port);
    snprintf(urls_buf[U_LOOP], 256, "http://127.0.0.1:%d/loop/a", port);
    snprintf(urls_buf[U_TOFILE], 256, "http://127.0.0.1:%d/to-file", port);
    snprintf(urls_buf[U_BIG], 256, "http://127.0.0.1:%d/big/3000000", port);
    snprintf(urls_buf[U_BIGSTREAM], 256, "http://127.0.0.1:%d/bigstream/3000000", port);
    snprintf(urls_buf[U_HTML], 256, "http://127.0.0.1:%d/html", port);
    snprintf(urls_buf[U_FILE], 256, "file:///etc/passwd");
    snprintf(urls_buf[U_FTP], 256, "ftp://127.0.0.1:%d/files/img0.jpg", port);
    for (int i = 0; i < U_N; i++) urls[i] = urls_buf[i];
}

static const char *path_of(int u) {
    const char *p = strstr(urls[u], "127.0.0.1:");
    return p ? strchr(p, '/') : "";
}

static sl_fetch_opts test_opts(void) {
    sl_fetch_opts o = {.parallel = 4,
                       .connect_timeout = 2,
                       .timeout = 1.0,
                       .retries = 2,
                       .backoff = 0.05,
                       .max_bytes = 1 << 20,
                       .quiet = 1};
    return o;
}

static void check_fail(const sl_fetch_result *r, sl_status st, const char *needle, const char *u) {
    CHECK_MSG(r->status == st, "%s: status %d, wanted %d (%s)", u, (int)r->status, (int)st,
              r->error);
    CHECK_MSG(strstr(r->error, needle) != NULL, "%s: error '%s' lacks '%s'", u, r->error, needle);
}

typedef struct listed {
    char key[16][600];
    char caption[16][64];
    char error[16][400];
    int has_bytes[16];
    int n;
} listed;

static int on_entry(void *ctx, const sl_url_entry *e) {
    listed *l = ctx;
    if (l->n >= 16) return 1;
    snprintf(l->key[l->n], 600, "%s", e->key);
    snprintf(l->caption[l->n], 64, "%s", e->caption);
    snprintf(l->error[l->n], 400, "%s", e->error ? e->error : "");
    l->has_bytes[l->n] = e->cache_path && file_size(e->cache_path) == (int)e->size && e->mtime_ns;
    l->n++;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_fetch SERVER.py\n");
        return 2;
    }
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "test_fetch: /usr/bin/python3 missing: skipped\n");
        return SL_TEST_SKIP;
    }
    /* only 127.0.0.1 is contacted: no proxy from the environment */
    const char *proxies[] = {"http_proxy",  "https_proxy", "HTTP_PROXY",
                             "HTTPS_PROXY", "ALL_PROXY",   "all_proxy"};
    for (size_t i = 0; i < sizeof proxies / sizeof *proxies; i++) unsetenv(proxies[i]);
    setenv("no_proxy", "*", 1);
    sl_log_set_level(SL_LOG_WARN);
    double t0 = sl_now();

    char tmp[512], root[600], cache[600], p[1200];
    snprintf(tmp, sizeof tmp, "%s", sl_test_tmpdir());
    snprintf(root, sizeof root, "%s/www", tmp);
    snprintf(cache, sizeof cache, "%s/idx/downloads", tmp);
    mkdir(root, 0755);
    char hex[6][65], hang_hex[65];
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.jpg", i);
        write_image(root, name, 20000 + 1000 * (size_t)i, i, hex[i]);
    }
    write_image(root, "hang.jpg", 5000, 99, hang_hex);
    if (start_server(argv[1], root, tmp) != 0) {
        fprintf(stderr, "test_fetch: the HTTP server did not start\n");
        return 1;
    }
    make_urls();

    /* ---- first run ---- */
    sl_fetch_opts o = test_opts();
    sl_fetch_result r[U_N];
    sl_fetch_stats s;
    CHECK_OK(sl_fetch_urls(cache, urls, U_N, &o, r, &s));
    for (int i = 0; i <= 5; i++) {
        CHECK_MSG(r[U_IMG0 + i].status == SL_OK, "img%d: %s", i, r[U_IMG0 + i].error);
        CHECK(!strcmp(r[U_IMG0 + i].sha256, hex[i]));
        CHECK(r[U_IMG0 + i].size == 20000 + 1000 * (uint64_t)i && !r[U_IMG0 + i].cached);
        CHECK(r[U_IMG0 + i].fetched_ns > 0 && r[U_IMG0 + i].http_code == 200);
        CHECK_OK(sl_fetch_cache_path(cache, hex[i], p, sizeof p));
        CHECK(file_size(p) == 20000 + 1000 * i);
        /* the duplicate of img1 is requested once; img2 is also the redirect chain's end */
        CHECK(count_of(path_of(U_IMG0 + i)) == (i == 2 ? 2 : 1));
    }
    CHECK(r[U_DUP].status == SL_OK && !strcmp(r[U_DUP].sha256, hex[1]));
    /* 500 twice, then the file: retried */
    CHECK_MSG(r[U_FLAKY].status == SL_OK, "flaky: %s", r[U_FLAKY].error);
    CHECK(!strcmp(r[U_FLAKY].sha256, hex[0]) && r[U_FLAKY].attempts == 3);
    CHECK(count_of(path_of(U_FLAKY)) == 3);
    /* a 404 is final */
    check_fail(&r[U_404], SL_ERR_NOT_FOUND, "HTTP 404", urls[U_404]);
    CHECK(r[U_404].attempts == 1 && !r[U_404].transient && count_of(path_of(U_404)) == 1);
    /* a 503 is retried, then reported as transient */
    check_fail(&r[U_503], SL_ERR_EXTERNAL, "HTTP 503 (after 3 attempts)", urls[U_503]);
    CHECK(r[U_503].transient && count_of(path_of(U_503)) == 3);
    /* a hanging server times out */
    check_fail(&r[U_HANG], SL_ERR_EXTERNAL, "timed out", urls[U_HANG]);
    CHECK(r[U_HANG].transient && r[U_HANG].attempts == 3);
    /* redirects: a chain within the limit, one beyond it, a loop, a bad scheme */
    CHECK_MSG(r[U_REDIR3].status == SL_OK, "redirect: %s", r[U_REDIR3].error);
    CHECK(!strcmp(r[U_REDIR3].sha256, hex[2]));
    check_fail(&r[U_REDIR7], SL_ERR_LIMIT, "too many redirects", urls[U_REDIR7]);
    check_fail(&r[U_LOOP], SL_ERR_LIMIT, "too many redirects", urls[U_LOOP]);
    CHECK(count_of("/loop/a") + count_of("/loop/b") == 6); /* the request + 5 redirects */
    check_fail(&r[U_TOFILE], SL_ERR_UNSUPPORTED, "unsupported URL scheme", urls[U_TOFILE]);
    /* bodies over max_bytes: announced by Content-Length, or found while streaming */
    check_fail(&r[U_BIG], SL_ERR_LIMIT, "larger than 1048576", urls[U_BIG]);
    check_fail(&r[U_BIGSTREAM], SL_ERR_LIMIT, "larger than 1048576", urls[U_BIGSTREAM]);
    CHECK(!r[U_BIG].transient && !r[U_BIGSTREAM].transient);
    /* not an image */
    check_fail(&r[U_HTML], SL_ERR_FORMAT, "not an image (text/html", urls[U_HTML]);
    /* schemes other than http(s): never requested */
    check_fail(&r[U_FILE], SL_ERR_UNSUPPORTED, "only http and https", urls[U_FILE]);
    check_fail(&r[U_FTP], SL_ERR_UNSUPPORTED, "only http and https", urls[U_FTP]);
    CHECK(r[U_FTP].attempts == 0);
    /* stats; the cache holds exactly the six images, nothing half-written */
    CHECK(s.urls == U_N - 1 && s.downloaded == 8 && s.cached == 0 && s.failed == 11);
    CHECK_MSG(s.bytes > 0, "bytes %llu", (unsigned long long)s.bytes);
    snprintf(p, sizeof p, "%s/tmp", cache);
    CHECK(dir_entries(p) == 0);
    int nfiles = 0;
    for (int i = 0; i < 6; i++) {
        char sub[700];
        snprintf(sub, sizeof sub, "%s/%.2s", cache, hex[i]);
        nfiles += dir_entries(sub) > 0;
    }
    CHECK(nfiles == 6);

    /* ---- a re-run: nothing fetched before is requested again ---- */
    int before[U_N];
    for (int u = 0; u < U_N; u++) before[u] = count_of(path_of(u));
    /* a torn journal line (a crash mid-append) is ignored */
    snprintf(p, sizeof p, "%s/urls.tsv", cache);
    FILE *jf = fopen(p, "a");
    fputs("ok\tdeadbeef\t12", jf);
    fclose(jf);
    CHECK_OK(sl_fetch_urls(cache, urls, U_N, &o, r, &s));
    for (int u = 0; u < U_N; u++) {
        int again = u == U_503 || u == U_HANG; /* transient: tried again */
        int now = count_of(path_of(u));
        if (u == U_FILE || u == U_FTP) continue;
        if (again)
            CHECK_MSG(now > before[u], "%s: %d requests, %d before", urls[u], now, before[u]);
        else
            CHECK_MSG(now == before[u], "%s: %d requests, %d before", urls[u], now, before[u]);
    }
    for (int i = 0; i <= 5; i++) CHECK(r[U_IMG0 + i].status == SL_OK && r[U_IMG0 + i].cached);
    CHECK(r[U_FLAKY].status == SL_OK && r[U_FLAKY].cached);
    check_fail(&r[U_404], SL_ERR_NOT_FOUND, "HTTP 404", urls[U_404]);
    check_fail(&r[U_HTML], SL_ERR_FORMAT, "not an image", urls[U_HTML]);
    CHECK(r[U_404].cached && r[U_HTML].cached && r[U_BIG].cached);
    CHECK(s.downloaded == 0 && s.cached == 8 && s.requests == 6); /* 503 and hang, 3 each */

    /* ---- a deleted cache file is fetched again; retry_failed asks again ---- */
    CHECK_OK(sl_fetch_cache_path(cache, hex[3], p, sizeof p));
    unlink(p);
    const char *two[] = {urls[U_IMG0 + 3], urls[U_404]};
    sl_fetch_result r2[2];
    o.retry_failed = 1;
    CHECK_OK(sl_fetch_urls(cache, two, 2, &o, r2, &s));
    CHECK(r2[0].status == SL_OK && !r2[0].cached && file_size(p) == 23000);
    CHECK(count_of(path_of(U_IMG0 + 3)) == 2 && count_of(path_of(U_404)) == 2);
    CHECK(r2[1].status == SL_ERR_NOT_FOUND && !r2[1].cached);

    /* ---- URL lists ---- */
    char tsv[700], src[800], bad[512];
    snprintf(tsv, sizeof tsv, "%s/list.tsv", tmp);
    FILE *lf = fopen(tsv, "w");
    fprintf(lf, "# a comment\n\n%s\tthe first image\r\n", urls[U_IMG0]);
    fprintf(lf, "  %s  \n", urls[U_IMG0 + 1]);
    fprintf(lf, "not a url\tcaption\n");
    fprintf(lf, "\tonly a caption\n");
    fprintf(lf, "%s\n%s", urls[U_404], urls[U_FTP]);
    fclose(lf);
    snprintf(src, sizeof src, "%s%s", SL_FETCH_SOURCE_PFX, tsv);
    char idx[700];
    snprintf(idx, sizeof idx, "%s/idx", tmp);
    listed l = {0};
    o.retry_failed = 0;
    CHECK(sl_url_source_is(src) && !sl_url_source_is(tsv));
    CHECK_OK(sl_url_source_fetch(idx, src, &o, on_entry, &l, bad, sizeof bad));
    CHECK_MSG(bad[0] == '\0', "%s", bad);
    CHECK(l.n == 6);
    CHECK(!strcmp(l.key[0], urls[U_IMG0]) && !strcmp(l.caption[0], "the first image"));
    CHECK(l.has_bytes[0] && l.error[0][0] == '\0');
    CHECK(!strcmp(l.key[1], urls[U_IMG0 + 1]) && l.has_bytes[1]);
    char want[800];
    snprintf(want, sizeof want, "malformed line 5 of %s: URL holds a space", tsv);
    CHECK_MSG(!strcmp(l.key[2], "not a url") && strstr(l.error[2], want), "%s: %s", l.key[2],
              l.error[2]);
    snprintf(want, sizeof want, "%s:6", tsv);
    CHECK_MSG(!strcmp(l.key[3], want) && strstr(l.error[3], "no URL before the tab"), "%s: %s",
              l.key[3], l.error[3]);
    CHECK(!strcmp(l.key[4], urls[U_404]) && strstr(l.error[4], "HTTP 404") && !l.has_bytes[4]);
    CHECK(!strcmp(l.key[5], urls[U_FTP]) && strstr(l.error[5], "http and https"));
    /* a missing list, an empty list: the source is bad, nothing listed */
    l.n = 0;
    snprintf(src, sizeof src, "%s%s/none.tsv", SL_FETCH_SOURCE_PFX, tmp);
    CHECK_OK(sl_url_source_fetch(idx, src, &o, on_entry, &l, bad, sizeof bad));
    CHECK(strstr(bad, "missing") && l.n == 0);
    lf = fopen(tsv, "w");
    fputs("# nothing\n\n", lf);
    fclose(lf);
    snprintf(src, sizeof src, "%s%s", SL_FETCH_SOURCE_PFX, tsv);
    CHECK_OK(sl_url_source_fetch(idx, src, &o, on_entry, &l, bad, sizeof bad));
    CHECK(strstr(bad, "lists no URLs") && l.n == 0);

    stop_server();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    printf("test_fetch: %.1f s\n", sl_now() - t0);
    return sl_test_finish("test_fetch");
}
