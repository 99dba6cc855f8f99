/*
 * tests/test_common.c - status and error messages, logging, progress
 * formatting, file helpers, checked size arithmetic.
 */
#include "sightline/common.h"
#include "testutil.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_errors(void) {
    sl_clear_error();
    CHECK(strcmp(sl_last_error(), "") == 0);
    CHECK(sl_set_error(SL_ERR_FORMAT, "%s: tensor '%s' bad", "m.safetensors", "w") ==
          SL_ERR_FORMAT);
    CHECK(strcmp(sl_last_error(), "m.safetensors: tensor 'w' bad") == 0);
    CHECK(sl_wrap_error(SL_ERR_FORMAT, "loading %s: ", "model") == SL_ERR_FORMAT);
    CHECK(strcmp(sl_last_error(), "loading model: m.safetensors: tensor 'w' bad") == 0);
    /* over-long messages are truncated, not overflowed */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sl_set_error(SL_ERR_IO, "%s", big);
    CHECK(strlen(sl_last_error()) == 1023);
    sl_wrap_error(SL_ERR_IO, "prefix: ");
    CHECK(strncmp(sl_last_error(), "prefix: xxx", 11) == 0);
    CHECK(strlen(sl_last_error()) == 1023);
    CHECK(strcmp(sl_status_name(SL_OK), "ok") == 0);
    CHECK(strcmp(sl_status_name(SL_ERR_LIMIT), "limit exceeded") == 0);
    CHECK(strcmp(sl_status_name((sl_status)999), "unknown status") == 0);
    sl_clear_error();
    CHECK(sl_last_error()[0] == '\0');
}

/* Each thread's message is its own. */
static void *thread_err(void *arg) {
    sl_set_error(SL_ERR_IO, "thread %d", *(int *)arg);
    usleep(1000);
    char want[32];
    snprintf(want, sizeof want, "thread %d", *(int *)arg);
    return (void *)(intptr_t)(strcmp(sl_last_error(), want) == 0);
}

static void test_error_threads(void) {
    sl_set_error(SL_ERR_IO, "main");
    pthread_t t[4];
    int ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = i;
        pthread_create(&t[i], NULL, thread_err, &ids[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *ok;
        pthread_join(t[i], &ok);
        CHECK(ok == (void *)1);
    }
    CHECK(strcmp(sl_last_error(), "main") == 0);
}

static void test_logging(void) {
    sl_log_level lv;
    CHECK_OK(sl_log_level_parse("debug", &lv));
    CHECK(lv == SL_LOG_DEBUG);
    CHECK_OK(sl_log_level_parse("WARNING", &lv));
    CHECK(lv == SL_LOG_WARN);
    CHECK_OK(sl_log_level_parse("Error", &lv));
    CHECK(lv == SL_LOG_ERROR);
    CHECK_ERR(sl_log_level_parse("loud", &lv), SL_ERR_INVALID, "'loud'");

    FILE *f = tmpfile();
    CHECK(f != NULL);
    sl_log_set_stream(f);
    sl_log_set_level(SL_LOG_WARN);
    SL_INFO("hidden %d", 1);
    SL_WARN("shown %d", 2);
    SL_ERROR("image %s: truncated", "a.jpg");
    sl_log_set_level(SL_LOG_DEBUG);
    SL_DEBUG("debug now");
    sl_log_set_level(SL_LOG_OFF);
    SL_ERROR("silenced");
    sl_log_set_stream(NULL);
    sl_log_set_level(SL_LOG_INFO);
    rewind(f);
    char buf[512] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK_MSG(strcmp(buf, "sightline: warn: shown 2\n"
                          "sightline: error: image a.jpg: truncated\n"
                          "sightline: debug: debug now\n") == 0,
              "log output was:\n%s", buf);
}

static void test_progress(void) {
    char buf[256];
    sl_progress_format(buf, sizeof buf, "encode", 250, 1000, 10.0);
    CHECK_MSG(strcmp(buf, "encode 250/1000  25.0% 25.0/s ETA 0:30") == 0, "got '%s'", buf);
    sl_progress_format(buf, sizeof buf, "index", 1000, 1000, 4.0);
    CHECK_MSG(strcmp(buf, "index 1000/1000 100.0% 250/s done in 0:04") == 0, "got '%s'", buf);
    sl_progress_format(buf, sizeof buf, "walk", 12345, 0, 61.0);
    CHECK_MSG(strcmp(buf, "walk 12345 202/s 1:01") == 0, "got '%s'", buf);
    sl_progress_format(buf, sizeof buf, "x", 0, 10, 0.0);
    CHECK_MSG(strcmp(buf, "x 0/10   0.0% 0.0/s ETA --:--") == 0, "got '%s'", buf);
    /* a tiny buffer is truncated and terminated */
    char small[8];
    size_t len = sl_progress_format(small, sizeof small, "encode", 1, 2, 1.0);
    CHECK(len == 7 && small[7] == '\0');
    sl_format_duration(buf, sizeof buf, 3725.0);
    CHECK(strcmp(buf, "1:02:05") == 0);
    sl_format_duration(buf, sizeof buf, 59.4);
    CHECK(strcmp(buf, "0:59") == 0);
    sl_format_duration(buf, sizeof buf, -1.0);
    CHECK(strcmp(buf, "--:--") == 0);
    /* off a TTY (as under ctest) the display is silent but counts */
    sl_progress *p = sl_progress_create("t", 3, 0);
    CHECK(p != NULL);
    sl_progress_add(p, 2);
    sl_progress_set_total(p, 4);
    sl_progress_finish(p);
    sl_progress_add(NULL, 1); /* NULL-safe */
    sl_progress_finish(NULL);
}

static void test_files(void) {
    const char *dir = sl_test_tmpdir();
    char path[1024], sub[1024];
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    CHECK_OK(sl_mkdir_p(sub));
    CHECK_OK(sl_mkdir_p(sub)); /* exists: fine */
    struct stat sb;
    CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));

    snprintf(path, sizeof path, "%s/a/file.txt", dir);
    CHECK_OK(sl_write_file_atomic(path, "hello", 5));
    CHECK_OK(sl_write_file_atomic(path, "hello world", 11)); /* replaces */
    char *data;
    size_t len;
    CHECK_OK(sl_read_file(path, 100, &data, &len));
    CHECK(len == 11 && strcmp(data, "hello world") == 0);
    free(data);
    CHECK_ERR(sl_read_file(path, 10, &data, &len), SL_ERR_LIMIT, "file.txt");
    CHECK(data == NULL);
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK_ERR(sl_read_file(path, 10, &data, &len), SL_ERR_NOT_FOUND, "missing");
    CHECK_ERR(sl_read_file(sub, 10, &data, &len), SL_ERR_IO, "directory");
    /* mkdir over a file fails with the path */
    snprintf(path, sizeof path, "%s/a/file.txt/x", dir);
    CHECK(sl_mkdir_p(path) == SL_ERR_IO);
    /* atomic write into a missing directory fails and leaves nothing */
    snprintf(path, sizeof path, "%s/nodir/f", dir);
    CHECK_ERR(sl_write_file_atomic(path, "x", 1), SL_ERR_IO, "nodir");
}

static void test_sizes(void) {
    size_t r = 7;
    CHECK(sl_mul_size(SIZE_MAX / 2, 3, &r) == -1 && r == 7);
    CHECK(sl_mul_size(1u << 20, 1u << 10, &r) == 0 && r == (size_t)1 << 30);
    CHECK(sl_add_size(SIZE_MAX, 1, &r) == -1);
    CHECK(sl_add_size(2, 3, &r) == 0 && r == 5);
}

int main(void) {
    test_errors();
    test_error_threads();
    test_logging();
    test_progress();
    test_files();
    test_sizes();
    return sl_test_finish("test_common");
}
