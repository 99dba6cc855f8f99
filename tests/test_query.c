/*
 * tests/test_query.c - unit checks of the query module's pure parts: the
 * late-interaction score, UTF-8 cleaning, the HTML report (escaping, boxes,
 * links), and the errors of sl_query_open.
 */
#include "sightline/query.h"
#include "testutil.h"

#include <sys/stat.h>

static void test_late_score(void) {
    /* 2 tokens, 3 patches, d = 2 */
    const float tok[] = {1, 0, 0, 1};
    const float pat[] = {0.6f, 0.8f, 1, 0, -1, 0};
    /* token 0: best 1 (patch 1); token 1: best 0.8 (patch 0) */
    CHECK_NEAR(sl_query_late_score(tok, 2, pat, 3, 2), 0.9, 1e-6);
    CHECK_NEAR(sl_query_late_score(tok, 1, pat + 4, 1, 2), -1.0, 1e-6);
    CHECK(sl_query_late_score(tok, 0, pat, 3, 2) == 0.0f);
}

static void test_utf8(void) {
    char *s = sl_utf8_clean("ok \xc3\xa9", 5);
    CHECK(s && !strcmp(s, "ok \xc3\xa9"));
    free(s);
    s = sl_utf8_clean("a\xff"
                      "b\xc0\xaf"
                      "c\xed\xa0\x80",
                      9); /* bad byte, overlong, surrogate */
    CHECK(s && !strcmp(s, "a\xef\xbf\xbd"
                          "b\xef\xbf\xbd\xef\xbf\xbd"
                          "c"
                          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    free(s);
    s = sl_utf8_clean("x\xe2\x82", 3); /* truncated at the end */
    CHECK(s && !strcmp(s, "x\xef\xbf\xbd\xef\xbf\xbd"));
    free(s);
}

static void test_report(const char *dir) {
    char page[600], *html = NULL;
    size_t len = 0;
    snprintf(page, sizeof page, "%s/out/page.html", dir);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/out", dir);
    mkdir(sub, 0755);
    sl_query_hit h[2] = {0};
    char p0[600];
    snprintf(p0, sizeof p0, "%s/pics/a <b>&\"c\".jpg", dir); /* missing: linked, escaped */
    h[0].id = 3;
    h[0].score = 0.5f;
    h[0].path = p0;
    h[0].path_len = strlen(p0);
    h[0].has_box = 1;
    h[0].box = (sl_box){10, 20, 60, 70};
    h[0].width = 100;
    h[0].height = 200;
    sl_query_result r[2] = {{.n = 1, .hits = h}, {.status = SL_ERR_INVALID}};
    snprintf(r[1].error, sizeof r[1].error, "empty <query>");
    const char *qs[2] = {"<script>alert(1)</script>", ""};
    CHECK_OK(sl_query_report_html(page, SL_QUERY_PHRASE, qs, r, 2));
    CHECK_OK(sl_read_file(page, 1 << 20, &html, &len));
    if (html) {
        CHECK(!strstr(html, "<script>"));
        CHECK(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
        CHECK(strstr(html, "empty &lt;query&gt;"));
        CHECK(strstr(html, "a &lt;b&gt;&amp;&quot;c&quot;.jpg"));
        CHECK(strstr(html, "src=\"../pics/a%20%3Cb%3E%26%22c%22.jpg\""));
        CHECK(strstr(html, "left:10.000%;top:10.000%;width:50.000%;height:25.000%"));
        CHECK(!strstr(html, "http"));
    }
    free(html);
}

static void test_open_errors(const char *dir) {
    sl_query *q = NULL;
    sl_query_opts o = {.index_dir = dir};
    CHECK_ERR(sl_query_open(&o, &q), SL_ERR_NOT_FOUND, "no index here");
    CHECK(q == NULL);
    o.index_dir = NULL;
    CHECK_ERR(sl_query_open(&o, &q), SL_ERR_INVALID, "no index directory");
    /* phrase box options are checked before the index is opened */
    sl_ground_opts box = {0.4f, SL_GROUND_FROM_MEAN, 0};
    o.index_dir = dir;
    o.box = &box;
    CHECK_ERR(sl_query_open(&o, &q), SL_ERR_INVALID, "upsampling 0 outside");
    CHECK(q == NULL);
}

int main(void) {
    const char *dir = sl_test_tmpdir();
    test_late_score();
    test_utf8();
    test_report(dir);
    test_open_errors(dir);
    return sl_test_finish("test_query");
}
