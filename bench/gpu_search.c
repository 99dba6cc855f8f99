/*
 * bench/gpu_search.c - exact search on the GPU (kernels/cuda/search.cu)
 * against the CPU paths, measured in the same run on the same data:
 *  1. retrieval ranks at COCO 5K size (5,000 images x 25,000 captions,
 *     D = 512, random unit vectors, 5 captions an image):
 *     sl_cuda_retrieval_ranks end to end (copies, cuBLAS handle, kernels)
 *     and its device time (CUDA events: sgemm + rank kernels) beside
 *     sl_retrieval_similarity + sl_retrieval_ranks (OpenBLAS + OpenMP);
 *     the ranks are compared (they may differ only at near ties).
 *  2. top-k throughput: nq = 10,000 queries against n = 1,000,000 vectors,
 *     D = 512, k = 10: sl_cuda_topk (end to end and device time) beside a
 *     CPU brute force (cblas_sgemm in blocks of queries + a k-heap per row,
 *     OpenMP), timed on a sample of queries and given per second; the
 *     sample's ids are compared.
 * Exits 77 without a CUDA device (or in a build without CUDA).
 *
 * usage: bench_gpu_search [--images N] [--texts N] [--dim D] [--rounds R]
 *                         [--nq N] [--n N] [--k K] [--cpu-queries N]
 *        (--n 0 skips the top-k part; --images 0 the ranks part)
 */
#include "kernels/kernels.h"
#include "sightline/eval.h"
#include "sightline/sightline.h"

#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* n random unit vectors [n, d]: uniform in [-1, 1) per component (a
 * splitmix64 stream per row, so rows are filled in parallel), normalized. */
static void random_unit(float *v, size_t n, size_t d, uint64_t seed) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t s = seed ^ (0x9e3779b97f4a7c15ull * (i + 1));
        double ss = 0;
        for (size_t k = 0; k < d; k++) {
            s += 0x9e3779b97f4a7c15ull;
            uint64_t z = s;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            float x = (float)(z >> 40) / 8388608.f - 1.f;
            v[i * d + k] = x;
            ss += (double)x * x;
        }
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.f;
        for (size_t k = 0; k < d; k++) v[i * d + k] *= inv;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double best(const double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < b) b = v[i];
    return b;
}

/* The k best (score desc, smaller id first) of each of nq rows of sim [nq, n]:
 * a sorted insertion list per row (k is small here). */
static void cpu_select(const float *sim, size_t nq, size_t n, size_t k, size_t id0, float *scores,
                       int64_t *ids) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < nq; r++) {
        const float *row = sim + r * n;
        float *s = scores + r * k;
        int64_t *id = ids + r * k;
        size_t m = 0; /* filled */
        for (size_t i = 0; i < n; i++) {
            float v = row[i];
            if (m == k && !(v > s[k - 1])) continue; /* ties keep the smaller id */
            size_t p = m < k ? m++ : k - 1;
            while (p > 0 && v > s[p - 1]) {
                s[p] = s[p - 1];
                id[p] = id[p - 1];
                p--;
            }
            s[p] = v;
            id[p] = (int64_t)(id0 + i);
        }
        for (; m < k; m++) {
            s[m] = -INFINITY;
            id[m] = -1;
        }
    }
}

/* CPU brute force top-k of nq queries: blocks of QB queries, one sgemm
 * against the whole db each, then the selection per row. */
enum { QB = 64 };
static int cpu_topk(const float *q, size_t nq, const float *db, size_t n, size_t d, size_t k,
                    float *scores, int64_t *ids) {
    float *sim = malloc((size_t)QB * n * sizeof *sim);
    if (!sim) return -1;
    for (size_t q0 = 0; q0 < nq; q0 += QB) {
        size_t b = nq - q0 < QB ? nq - q0 : QB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)n, (int)d, 1.0f,
                    q + q0 * d, (int)d, db, (int)d, 0.0f, sim, (int)n);
        cpu_select(sim, b, n, k, 0, scores + q0 * k, ids + q0 * k);
    }
    free(sim);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_gpu_search [--images N] [--texts N] [--dim D] [--rounds R]\n"
                    "                        [--nq N] [--n N] [--k K] [--cpu-queries N]\n");
}

int main(int argc, char **argv) {
    long long images = 5000, texts = 25000, dim = 512, rounds = 3;
    long long nq = 10000, n = 1000000, k = 10, cpu_q = 1000;
    static const struct option opts[] = {
        {"images", required_argument, 0, 'i'}, {"texts", required_argument, 0, 't'},
        {"dim", required_argument, 0, 'd'},    {"rounds", required_argument, 0, 'r'},
        {"nq", required_argument, 0, 'q'},     {"n", required_argument, 0, 'n'},
        {"k", required_argument, 0, 'k'},      {"cpu-queries", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long long *dst = c == 'i'   ? &images
                         : c == 't' ? &texts
                         : c == 'd' ? &dim
                         : c == 'r' ? &rounds
                         : c == 'q' ? &nq
                         : c == 'n' ? &n
                         : c == 'k' ? &k
                         : c == 'c' ? &cpu_q
                                    : NULL;
        long long hi = c == 'r' ? 100 : c == 'k' ? SL_CUDA_TOPK_MAX : 100000000;
        long long lo = c == 'r' || c == 'd' || c == 'k' ? 1 : 0;
        if (!dst || sl_parse_int_arg(optarg, lo, hi, dst)) {
            usage();
            return 2;
        }
    }
    if (optind != argc || (images > 0 && texts < 1)) {
        usage();
        return 2;
    }
    if (sl_cuda_device_count() == 0) {
        printf("bench_gpu_search: no CUDA device (or a build without CUDA): nothing to measure\n");
        return 77;
    }
    const size_t d = (size_t)dim;
    int threads = omp_get_max_threads();
    printf("bench_gpu_search: %d CPU threads (OpenMP; OpenBLAS its own), best and median of %lld "
           "rounds, F32 on both sides\n",
           threads, rounds);
    int status = 0;
    double t0;

    /* ---- 1. ranks ------------------------------------------------------- */
    if (images > 0) {
        size_t ni = (size_t)images, nt = (size_t)texts;
        float *img = malloc(ni * d * sizeof *img), *txt = malloc(nt * d * sizeof *txt);
        float *sim = malloc(ni * nt * sizeof *sim);
        size_t *ti = malloc(nt * sizeof *ti);
        int64_t *ti64 = malloc(nt * sizeof *ti64);
        int64_t *ci = malloc(ni * sizeof *ci), *ct = malloc(nt * sizeof *ct);
        int64_t *gi = malloc(ni * sizeof *gi), *gt = malloc(nt * sizeof *gt);
        if (!img || !txt || !sim || !ti || !ti64 || !ci || !ct || !gi || !gt) {
            fprintf(stderr, "bench_gpu_search: out of memory\n");
            return 1;
        }
        random_unit(img, ni, d, 1);
        random_unit(txt, nt, d, 2);
        for (size_t j = 0; j < nt; j++) ti64[j] = (int64_t)(ti[j] = j * ni / nt);
        memset(sim, 0, ni * nt * sizeof *sim); /* page faults out of the timings */

        t0 = sl_now(); /* the first call pays for the CUDA context and cuBLAS */
        if (sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti64, gi, gt)) goto fail;
        double first = sl_now() - t0;
        double g_e2e[100], g_dev[100], g_up[100], c_sim[100], c_rank[100], c_all[100];
        sl_cuda_search_stats stats = {0};
        for (int r = 0; r < rounds; r++) {
            t0 = sl_now();
            if (sl_cuda_retrieval_ranks(0, img, ni, txt, nt, d, ti64, gi, gt)) goto fail;
            g_e2e[r] = sl_now() - t0;
            sl_cuda_search_last_stats(&stats);
            g_dev[r] = stats.compute_ms / 1e3;
            g_up[r] = (stats.upload_ms + stats.download_ms) / 1e3;
            t0 = sl_now();
            if (sl_retrieval_similarity(img, ni, txt, nt, d, sim)) goto fail;
            c_sim[r] = sl_now() - t0;
            t0 = sl_now();
            if (sl_retrieval_ranks(sim, ni, nt, nt, ti, ci, ct)) goto fail;
            c_rank[r] = sl_now() - t0;
            c_all[r] = c_sim[r] + c_rank[r];
        }
        size_t diff_i = 0, diff_t = 0;
        for (size_t i = 0; i < ni; i++) diff_i += gi[i] != ci[i];
        for (size_t j = 0; j < nt; j++) diff_t += gt[j] != ct[j];
        int R = (int)rounds;
        double ce = best(c_all, R), ge = best(g_e2e, R), gd = best(g_dev, R);
        printf("\nretrieval ranks: %zu images x %zu texts, D = %zu (chunks %zu, %zu sgemm, "
               "budget %.1f GiB)\n",
               ni, nt, d, stats.db_chunks, stats.gemms, (double)stats.budget / 1073741824.0);
        printf("  %-44s %12s %12s\n", "", "best", "median");
        printf("  %-44s %10.2f ms %10.2f ms\n", "CPU  sl_retrieval_similarity (sgemm)",
               1e3 * best(c_sim, R), 1e3 * median(c_sim, R));
        printf("  %-44s %10.2f ms %10.2f ms\n", "CPU  sl_retrieval_ranks", 1e3 * best(c_rank, R),
               1e3 * median(c_rank, R));
        printf("  %-44s %10.2f ms %10.2f ms\n", "CPU  total", 1e3 * ce, 1e3 * median(c_all, R));
        printf("  %-44s %10.2f ms %10.2f ms\n", "GPU  end to end (copies, handle, kernels)",
               1e3 * ge, 1e3 * median(g_e2e, R));
        printf("  %-44s %10.2f ms %10.2f ms\n", "GPU  device: sgemm + rank kernels (events)",
               1e3 * gd, 1e3 * median(g_dev, R));
        printf("  %-44s %10.2f ms %10.2f ms\n", "GPU  device: copies in and out (events)",
               1e3 * best(g_up, R), 1e3 * median(g_up, R));
        printf("  %-44s %10.2f ms\n", "GPU  first call (CUDA context, cuBLAS load)", 1e3 * first);
        printf("  speed-up CPU/GPU: %.1fx end to end, %.1fx device time\n", ce / ge, ce / gd);
        printf("  ranks that differ from the CPU's: %zu of %zu i2t, %zu of %zu t2i "
               "(near ties only)\n",
               diff_i, ni, diff_t, nt);
        free(img);
        free(txt);
        free(sim);
        free(ti);
        free(ti64);
        free(ci);
        free(ct);
        free(gi);
        free(gt);
    }

    /* ---- 2. top-k ------------------------------------------------------- */
    if (n > 0 && nq > 0) {
        size_t Q = (size_t)nq, N = (size_t)n, K = (size_t)k;
        size_t CQ = (size_t)cpu_q < Q ? (size_t)cpu_q : Q;
        float *q = malloc(Q * d * sizeof *q), *db = malloc(N * d * sizeof *db);
        size_t KC = K + 1; /* the CPU keeps one more, to see near ties at the end */
        float *gs = malloc(Q * K * sizeof *gs), *cs = malloc((CQ ? CQ : 1) * KC * sizeof *cs);
        int64_t *gid = malloc(Q * K * sizeof *gid), *cid = malloc((CQ ? CQ : 1) * KC * sizeof *cid);
        if (!q || !db || !gs || !cs || !gid || !cid) {
            fprintf(stderr, "bench_gpu_search: out of memory\n");
            return 1;
        }
        random_unit(q, Q, d, 3);
        random_unit(db, N, d, 4);
        double g_e2e[100], g_dev[100];
        sl_cuda_search_stats stats = {0};
        for (int r = 0; r < rounds; r++) {
            t0 = sl_now();
            if (sl_cuda_topk(0, q, Q, db, N, d, K, gs, gid)) goto fail;
            g_e2e[r] = sl_now() - t0;
            sl_cuda_search_last_stats(&stats);
            g_dev[r] = stats.compute_ms / 1e3;
        }
        double c_t = 0;
        if (CQ) {
            t0 = sl_now();
            if (cpu_topk(q, CQ, db, N, d, KC, cs, cid)) {
                fprintf(stderr, "bench_gpu_search: out of memory\n");
                return 1;
            }
            c_t = sl_now() - t0;
        }
        /* ids compared where the CPU's score is more than 1e-5 from its
         * neighbours in the list (elsewhere the order is a near tie) */
        size_t cmp = 0, diff = 0;
        for (size_t a = 0; a < CQ; a++)
            for (size_t t = 0; t < K; t++) {
                const float *c = cs + a * KC;
                float s = c[t];
                int clear =
                    (t == 0 || c[t - 1] - s > 1e-5f) && (t + 1 == KC || s - c[t + 1] > 1e-5f);
                if (!clear) continue;
                cmp++;
                diff += gid[a * K + t] != cid[a * KC + t];
            }
        int R = (int)rounds;
        double ge = best(g_e2e, R), gd = best(g_dev, R);
        double cqps = CQ ? (double)CQ / c_t : 0, gqps = (double)Q / ge, dqps = (double)Q / gd;
        double gflop = 2.0 * (double)Q * (double)N * (double)d / 1e9;
        printf("\ntop-k: %zu queries x %zu vectors, D = %zu, k = %zu (db chunks %zu, %zu "
               "sgemm)\n",
               Q, N, d, K, stats.db_chunks, stats.gemms);
        printf("  %-44s %12s %14s\n", "", "time", "queries/s");
        if (CQ)
            printf("  %-44s %10.3f s %14.0f   (%zu sampled queries)\n",
                   "CPU  sgemm + k-heap (OpenBLAS, OpenMP)", c_t, cqps, CQ);
        printf("  %-44s %10.3f s %14.0f   (best; median %.3f s)\n",
               "GPU  end to end (db upload, handle, kernels)", ge, gqps, median(g_e2e, R));
        printf("  %-44s %10.3f s %14.0f   (%.1f TFLOP/s of sgemm work)\n",
               "GPU  device: sgemm + top-k (events)", gd, dqps, gflop / gd / 1e3);
        if (CQ)
            printf("  speed-up GPU/CPU: %.1fx end to end, %.1fx device time\n", gqps / cqps,
                   dqps / cqps);
        printf("  ids that differ from the CPU's on the sample: %zu of %zu clear positions\n", diff,
               cmp);
        if (diff) status = 1;
        free(q);
        free(db);
        free(gs);
        free(cs);
        free(gid);
        free(cid);
    }
    return status;
fail:
    fprintf(stderr, "bench_gpu_search: %s\n", sl_last_error());
    return 1;
}
