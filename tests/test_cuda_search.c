/*
 * tests/test_cuda_search.c - the GPU exact search (kernels/cuda/search.cu)
 * against brute force on the CPU: sl_cuda_topk against a sort of every
 * score (score descending, smaller id first, NaN last), and
 * sl_cuda_retrieval_ranks against sl_retrieval_similarity +
 * sl_retrieval_ranks. Data with small integer values make every score
 * exact in F32 whatever the summation order, so those cases compare scores
 * and ids bit for bit, ties included; random float data compare ids where
 * the reference has no near tie (1e-5). SL_CUDA_MEM_BUDGET forces the
 * chunked paths. Skips (77) where the build has no CUDA or the machine no
 * GPU, after checking that the entry points say so.
 */
#include "kernels/kernels.h"
#include "sightline/eval.h"
#include "sightline/sightline.h"
#include "testutil.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* uniform in [-0.5, 0.5) */
static float unif(void) {
    return (float)(next_u32() >> 8) / 16777216.f - 0.5f;
}

/* an integer in [-r, r] */
static float small_int(int r) {
    return (float)((int)(next_u32() % (uint32_t)(2 * r + 1)) - r);
}

static void fill_int(float *v, size_t n, int r) {
    for (size_t i = 0; i < n; i++) v[i] = small_int(r);
}

static void fill_unif(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = unif();
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_cuda_search: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- top-k reference ------------------------------------------------------ */

typedef struct ref_hit {
    double s; /* the score in double (exact for integer data) */
    int64_t id;
} ref_hit;

static int cmp_ref(const void *a, const void *b) {
    const ref_hit *x = a, *y = b;
    int xn = isnan(x->s), yn = isnan(y->s);
    if (xn != yn) return xn ? 1 : -1; /* NaN last */
    if (!xn && x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Compare the GPU's top-k with brute force. exact: every score and id must
 * match (integer data: the tie order is checked there). Otherwise scores
 * within 1e-4, and where the reference's group of equal scores is more than
 * 1e-5 from its neighbours the id must be the group's (a single id, or one
 * of a group of duplicate rows). Returns the mismatches (the first few
 * printed). */
static int check_topk(const char *what, const float *q, size_t nq, const float *db, size_t n,
                      size_t d, size_t k, const float *gs, const int64_t *gi, int exact) {
    ref_hit *r = xmalloc(n * sizeof *r);
    int bad = 0;
    size_t checked_ids = 0;
    for (size_t a = 0; a < nq; a++) {
        for (size_t i = 0; i < n; i++) {
            double s = 0;
            for (size_t j = 0; j < d; j++) s += (double)q[a * d + j] * (double)db[i * d + j];
            r[i].s = (double)(float)s;
            r[i].id = (int64_t)i;
        }
        qsort(r, n, sizeof *r, cmp_ref);
        for (size_t t = 0; t < k; t++) {
            float s = gs[a * k + t];
            int64_t id = gi[a * k + t];
            int ok;
            if (t >= n) {
                ok = id == -1 && isinf(s) && s < 0;
            } else if (isnan(r[t].s)) {
                ok = isnan(s) && id == r[t].id; /* NaNs tie: by id */
                checked_ids++;
            } else if (exact) {
                ok = (double)s == r[t].s && id == r[t].id;
                checked_ids++;
            } else {
                /* the reference's tie group around t and its distance to the next groups */
                size_t g0 = t, g1 = t + 1;
                while (g0 > 0 && r[g0 - 1].s == r[t].s) g0--;
                while (g1 < n && r[g1].s == r[t].s) g1++;
                int determinate = (g0 == 0 || r[g0 - 1].s - r[t].s > 1e-5) &&
                                  (g1 == n || isnan(r[g1].s) || r[t].s - r[g1].s > 1e-5);
                ok = fabs((double)s - r[t].s) <= 1e-4;
                if (determinate) { /* duplicate rows scored by different sgemm calls
                                      (chunks) may differ in the last bit: any of the group */
                    int in_group = 0;
                    for (size_t x = g0; x < g1; x++) in_group |= id == r[x].id;
                    ok = ok && in_group;
                    checked_ids++;
                }
            }
            if (!ok && bad++ < 5)
                fprintf(stderr,
                        "%s: query %zu position %zu: GPU (%.9g, id %lld), reference (%.9g, id "
                        "%lld)\n",
                        what, a, t, (double)s, (long long)id, t < n ? r[t].s : -INFINITY,
                        t < n ? (long long)r[t].id : -1LL);
        }
    }
    free(r);
    if (!exact && checked_ids == 0) bad++; /* the comparison must not be vacuous */
    return bad;
}

/* Run sl_cuda_topk and check it; returns the mismatches. */
static int run_topk(const char *what, const float *q, size_t nq, const float *db, size_t n,
                    size_t d, size_t k, int exact) {
    float *gs = xmalloc(nq * k * sizeof *gs);
    int64_t *gi = xmalloc(nq * k * sizeof *gi);
    int bad = 0;
    sl_status st = sl_cuda_topk(0, q, nq, db, n, d, k, gs, gi);
    CHECK_MSG(st == SL_OK, "%s: status %d: %s", what, (int)st, sl_last_error());
    if (st == SL_OK) bad = check_topk(what, q, nq, db, n, d, k, gs, gi, exact);
    CHECK_MSG(bad == 0, "%s (nq %zu, n %zu, d %zu, k %zu): %d mismatches", what, nq, n, d, k, bad);
    free(gs);
    free(gi);
    return bad;
}

/* ---- ranks ----------------------------------------------------------------- */

/* GPU ranks against the CPU's on the same embeddings. exact: all must
 * match; otherwise queries with a near tie (another item within 1e-5 of the
 * ground truth in the CPU's matrix) are left out. chunked: under the
 * smallest SL_CUDA_MEM_BUDGET that works (a few image rows a chunk). */
static void check_ranks(const char *what, const float *img, size_t ni, const float *txt, size_t nt,
                        size_t d, const int64_t *ti, int exact, int chunked) {
    size_t *ti_z = xmalloc(nt * sizeof *ti_z);
    for (size_t j = 0; j < nt; j++) ti_z[j] = (size_t)ti[j];
    float *sim = xmalloc(ni * nt * sizeof *sim);
    int64_t *ci = xmalloc(ni * sizeof *ci), *ct = xmalloc(nt * sizeof *ct);
    int64_t *gi = xmalloc(ni * sizeof *gi), *gt = xmalloc(nt * sizeof *gt);
    CHECK_OK(sl_retrieval_similarity(img, ni, txt, nt, d, sim));
    CHECK_OK(sl_retrieval_ranks(sim, ni, nt, nt, ti_z, ci, ct));
    sl_status st;
    if (chunked) {
        char b[32];
        for (size_t bytes = 4096;; bytes += bytes / 4) {
            snprintf(b, sizeof b, "%zu", bytes);
            setenv("SL_CUDA_MEM_BUDGET", b, 1);
            st = sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti, gi, gt);
            if (st != SL_ERR_NOMEM || bytes > ((size_t)1 << 30)) break;
        }
        sl_cuda_search_stats stats;
        sl_cuda_search_last_stats(&stats);
        CHECK_MSG(stats.db_chunks > 1, "%s: %zu chunks under a budget of %s", what, stats.db_chunks,
                  b);
    } else {
        st = sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti, gi, gt);
    }
    CHECK_MSG(st == SL_OK, "%s: status %d: %s", what, (int)st, sl_last_error());
    int bad = 0;
    size_t compared = 0;
    for (size_t i = 0; i < ni && st == SL_OK; i++) {
        int near = 0;
        if (!exact && ci[i] > 0) { /* the best caption's score, as the CPU picks it */
            float g = -INFINITY;
            for (size_t j = 0; j < nt; j++)
                if (ti_z[j] == i && sim[i * nt + j] > g) g = sim[i * nt + j];
            for (size_t j = 0; j < nt; j++)
                near |= sim[i * nt + j] != g && fabsf(sim[i * nt + j] - g) < 1e-5f;
        }
        if (near) continue;
        compared++;
        if (gi[i] != ci[i] && bad++ < 5)
            fprintf(stderr, "%s: image %zu: GPU rank %lld, CPU %lld\n", what, i, (long long)gi[i],
                    (long long)ci[i]);
    }
    for (size_t j = 0; j < nt && st == SL_OK; j++) {
        int near = 0;
        if (!exact) {
            float g = sim[ti_z[j] * nt + j];
            for (size_t i = 0; i < ni; i++)
                near |= i != ti_z[j] && fabsf(sim[i * nt + j] - g) < 1e-5f;
        }
        if (near) continue;
        compared++;
        if (gt[j] != ct[j] && bad++ < 5)
            fprintf(stderr, "%s: text %zu: GPU rank %lld, CPU %lld\n", what, j, (long long)gt[j],
                    (long long)ct[j]);
    }
    CHECK_MSG(bad == 0, "%s: %d rank mismatches", what, bad);
    CHECK_MSG(compared * 2 > ni + nt, "%s: only %zu of %zu queries compared", what, compared,
              ni + nt);
    /* either output alone gives the same */
    if (st == SL_OK) {
        int64_t *gi2 = xmalloc(ni * sizeof *gi2), *gt2 = xmalloc(nt * sizeof *gt2);
        CHECK_OK(sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti, gi2, NULL));
        CHECK_OK(sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti, NULL, gt2));
        CHECK_MSG(!memcmp(gi, gi2, ni * sizeof *gi), "%s: i2t alone differs", what);
        CHECK_MSG(!memcmp(gt, gt2, nt * sizeof *gt), "%s: t2i alone differs", what);
        free(gi2);
        free(gt2);
    }
    if (chunked) unsetenv("SL_CUDA_MEM_BUDGET");
    free(ti_z);
    free(sim);
    free(ci);
    free(ct);
    free(gi);
    free(gt);
}

/* ---- cases ------------------------------------------------------------------- */

static void topk_cases(const char *label) {
    char what[128];
    /* A: integer data, many exact ties; nq not a multiple of anything; k from
     * 1 to past n */
    {
        size_t nq = 37, n = 1000, d = 24;
        float *q = xmalloc(nq * d * sizeof *q), *db = xmalloc(n * d * sizeof *db);
        fill_int(q, nq * d, 2);
        fill_int(db, n * d, 2);
        memcpy(db + 999 * d, db + 3 * d, d * sizeof *db); /* duplicates of row 3 */
        memcpy(db + 500 * d, db + 3 * d, d * sizeof *db);
        size_t ks[] = {1, 2, 10, 100, 999, 1000, 1024};
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            snprintf(what, sizeof what, "%s int k=%zu", label, ks[i]);
            run_topk(what, q, nq, db, n, d, ks[i], 1);
        }
        free(q);
        free(db);
    }
    /* B: random floats with duplicate rows (exact ties) and a NaN row */
    {
        size_t nq = 101, n = 3000, d = 64;
        float *q = xmalloc(nq * d * sizeof *q), *db = xmalloc(n * d * sizeof *db);
        fill_unif(q, nq * d);
        fill_unif(db, n * d);
        size_t dup[] = {17, 1500, 2999, 6};
        for (size_t i = 0; i < 4; i++) memcpy(db + dup[i] * d, db + 5 * d, d * sizeof *db);
        memcpy(q + 7 * d, db + 5 * d, d * sizeof *q); /* query 7 finds the group first */
        db[42 * d + 3] = NAN;
        size_t ks[] = {1, 7, 64, 1024};
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            snprintf(what, sizeof what, "%s float k=%zu", label, ks[i]);
            run_topk(what, q, nq, db, n, d, ks[i], 0);
        }
        free(q);
        free(db);
    }
    /* C: k > n, n == 1, d == 0 */
    {
        size_t nq = 9, n = 50, d = 16;
        float *q = xmalloc(nq * d * sizeof *q), *db = xmalloc(n * d * sizeof *db);
        fill_int(q, nq * d, 3);
        fill_int(db, n * d, 3);
        db[20 * d + 1] = NAN; /* two NaN rows: last, by id */
        db[10 * d + 5] = NAN;
        snprintf(what, sizeof what, "%s k>n", label);
        run_topk(what, q, nq, db, n, d, 64, 1);
        snprintf(what, sizeof what, "%s n=1", label);
        run_topk(what, q, nq, db, 1, d, 5, 1);
        snprintf(what, sizeof what, "%s d=0", label);
        run_topk(what, q, nq, db, n, 0, 20, 1);
        free(q);
        free(db);
    }
    /* D: long rows (two 65536-column tiles) of huge tie groups: scores in
     * [-8, 8] over 70,000 rows, so the selection runs on the ids */
    {
        size_t nq = 5, n = 70000, d = 8;
        float *q = xmalloc(nq * d * sizeof *q), *db = xmalloc(n * d * sizeof *db);
        fill_int(q, nq * d, 1);
        fill_int(db, n * d, 1);
        for (size_t i = 0; i < d; i++) q[i] = 0; /* query 0: every score 0 */
        size_t ks[] = {1, 1000, 1024};
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            snprintf(what, sizeof what, "%s ties n=70000 k=%zu", label, ks[i]);
            run_topk(what, q, nq, db, n, d, ks[i], 1);
        }
        free(q);
        free(db);
    }
}

static void rank_cases(const char *label, int chunked) {
    char what[128];
    /* R1: 7 images, 20 texts with 0..5 captions each, out of order; image 3
     * has none; image 5 has a NaN (its whole row is NaN); integer data */
    {
        enum { NI = 7, NT = 20, D = 6 };
        static const int64_t ti[NT] = {0, 1, 2, 0, 4, 4, 1, 2, 0, 5, 6, 4, 2, 2, 1, 0, 5, 4, 0, 4};
        float img[NI * D], txt[NT * D];
        fill_int(img, NI * D, 1);
        fill_int(txt, NT * D, 1);
        snprintf(what, sizeof what, "%s ranks small", label);
        check_ranks(what, img, NI, txt, NT, D, ti, 1, chunked);
        img[5 * D + 2] = NAN;
        snprintf(what, sizeof what, "%s ranks small NaN", label);
        check_ranks(what, img, NI, txt, NT, D, ti, 1, chunked);
        int64_t ri[NI], rt[NT];
        if (chunked) setenv("SL_CUDA_MEM_BUDGET", "1300", 1); /* row chunks */
        CHECK_OK(sl_cuda_retrieval_ranks(0, img, NI, txt, NT, D, ti, ri, rt));
        unsetenv("SL_CUDA_MEM_BUDGET");
        CHECK(ri[3] == 0);                  /* no caption: no query */
        CHECK(ri[5] == NT - 2 + 1);         /* all its captions NaN: last */
        CHECK(rt[9] == NI && rt[16] == NI); /* texts of the NaN image: last */
    }
    /* R2: integer data, heavy ties, several blocks of every kernel */
    {
        size_t ni = 500, nt = 2400, d = 8;
        float *img = xmalloc(ni * d * sizeof *img), *txt = xmalloc(nt * d * sizeof *txt);
        int64_t *ti = xmalloc(nt * sizeof *ti);
        fill_int(img, ni * d, 1);
        fill_int(txt, nt * d, 1);
        for (size_t j = 0; j < nt; j++) ti[j] = (int64_t)(next_u32() % 499); /* 499: none */
        snprintf(what, sizeof what, "%s ranks ties", label);
        check_ranks(what, img, ni, txt, nt, d, ti, 1, chunked);
        free(img);
        free(txt);
        free(ti);
    }
    /* R3: random floats, 5 captions an image */
    {
        size_t ni = 300, nt = 1500, d = 32;
        float *img = xmalloc(ni * d * sizeof *img), *txt = xmalloc(nt * d * sizeof *txt);
        int64_t *ti = xmalloc(nt * sizeof *ti);
        fill_unif(img, ni * d);
        fill_unif(txt, nt * d);
        for (size_t j = 0; j < nt; j++) {
            ti[j] = (int64_t)(j / 5);
            for (size_t c = 0; c < d; c++) txt[j * d + c] += img[(j / 5) * d + c]; /* match */
        }
        snprintf(what, sizeof what, "%s ranks float", label);
        check_ranks(what, img, ni, txt, nt, d, ti, 0, chunked);
        free(img);
        free(txt);
        free(ti);
    }
}

int main(void) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, s[4];
    int64_t id[4], ti[2] = {0, 0}, r[2];
    if (sl_cuda_device_count() == 0) {
        /* without a device the entry points report it clearly */
        CHECK_ERR(sl_cuda_topk(0, x, 2, x, 2, 4, 2, s, id), SL_ERR_UNSUPPORTED, "cuda:0");
        CHECK_ERR(sl_cuda_retrieval_ranks(0, x, 1, x, 2, 4, ti, r, r), SL_ERR_UNSUPPORTED,
                  "cuda:0");
        sl_cuda_search_stats stats;
        memset(&stats, 0xff, sizeof stats);
        sl_cuda_search_last_stats(&stats);
        CHECK(stats.gemms == 0 && stats.total_ms == 0);
        if (sl_test_failures) return sl_test_finish("test_cuda_search");
        printf("skip: no CUDA device\n");
        return SL_TEST_SKIP;
    }

    /* arguments */
    CHECK_ERR(sl_cuda_topk(99, x, 2, x, 2, 4, 2, s, id), SL_ERR_UNSUPPORTED, "cuda:99");
    CHECK_ERR(sl_cuda_retrieval_ranks(99, x, 1, x, 2, 4, ti, r, r), SL_ERR_UNSUPPORTED, "cuda:99");
    CHECK_ERR(sl_cuda_topk(0, x, 2, x, 2, 4, 0, s, id), SL_ERR_INVALID, "k must be positive");
    CHECK_ERR(sl_cuda_topk(0, x, 2, x, 2, 4, SL_CUDA_TOPK_MAX + 1, s, id), SL_ERR_UNSUPPORTED,
              "limit");
    CHECK_OK(sl_cuda_topk(0, x, 0, x, 2, 4, 2, s, id));    /* no query */
    CHECK_OK(sl_cuda_topk(0, x, 1, NULL, 0, 4, 2, s, id)); /* empty db: padding */
    CHECK(id[0] == -1 && id[1] == -1 && isinf(s[0]) && s[0] < 0);
    int64_t bad_ti[2] = {0, 1};
    CHECK_ERR(sl_cuda_retrieval_ranks(0, x, 1, x, 2, 4, bad_ti, r, r), SL_ERR_INVALID, "text 1");
    CHECK_OK(sl_cuda_retrieval_ranks(0, x, 2, x, 0, 4, NULL, r, NULL)); /* no text */
    CHECK(r[0] == 0 && r[1] == 0);

    topk_cases("whole");
    rank_cases("whole", 0);
    sl_cuda_search_stats stats;
    sl_cuda_search_last_stats(&stats);
    CHECK(stats.db_chunks == 1 && stats.gemms == 1 && stats.total_ms > 0);

    /* chunked: small budgets split queries, db and tiles; the ranks run
     * under the smallest budget that holds them (a few image rows) */
    const char *budgets[] = {"64K", "1M"};
    for (int b = 0; b < 2; b++) {
        char label[64];
        snprintf(label, sizeof label, "budget %s", budgets[b]);
        setenv("SL_CUDA_MEM_BUDGET", budgets[b], 1);
        topk_cases(label);
        sl_cuda_search_last_stats(&stats); /* the last: 70,000 db rows */
        CHECK_MSG(stats.db_chunks > 1, "%s: %zu chunks", label, stats.db_chunks);
        unsetenv("SL_CUDA_MEM_BUDGET");
    }
    rank_cases("chunked", 1);
    setenv("SL_CUDA_MEM_BUDGET", "12x", 1);
    CHECK_ERR(sl_cuda_topk(0, x, 2, x, 2, 4, 2, s, id), SL_ERR_INVALID, "SL_CUDA_MEM_BUDGET");
    setenv("SL_CUDA_MEM_BUDGET", "16", 1);
    CHECK_ERR(sl_cuda_topk(0, x, 2, x, 2, 4, 2, s, id), SL_ERR_NOMEM, "budget");
    CHECK_ERR(sl_cuda_retrieval_ranks(0, x, 1, x, 2, 4, ti, r, r), SL_ERR_NOMEM, "budget");
    unsetenv("SL_CUDA_MEM_BUDGET");
    /* the device is still usable after the failures */
    CHECK_OK(sl_cuda_topk(0, x, 2, x, 2, 4, 2, s, id));
    CHECK(id[0] == 1 && id[1] == 0 && s[0] == 70.f && s[1] == 30.f);
    CHECK(id[2] == 1 && id[3] == 0 && s[2] == 174.f && s[3] == 70.f);
    return sl_test_finish("test_cuda_search");
}
