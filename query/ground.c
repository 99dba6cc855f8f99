/*
 * query/ground.c - box arithmetic and phrase localisation from similarity
 * maps over patch grids.
 */
#include "sightline/grounding.h"

#include <stdlib.h>
#include <string.h>

double sl_box_iou(sl_box a, sl_box b) {
    double aw = (double)a.x1 - a.x0, ah = (double)a.y1 - a.y0;
    double bw = (double)b.x1 - b.x0, bh = (double)b.y1 - b.y0;
    if (!(aw > 0 && ah > 0 && bw > 0 && bh > 0)) return 0.0;
    double iw = (a.x1 < b.x1 ? a.x1 : b.x1) - (double)(a.x0 > b.x0 ? a.x0 : b.x0);
    double ih = (a.y1 < b.y1 ? a.y1 : b.y1) - (double)(a.y0 > b.y0 ? a.y0 : b.y0);
    if (iw <= 0 || ih <= 0) return 0.0;
    double inter = iw * ih;
    return inter / (aw * ah + bw * bh - inter);
}

sl_box sl_box_union(sl_box a, sl_box b) {
    sl_box u = {a.x0 < b.x0 ? a.x0 : b.x0, a.y0 < b.y0 ? a.y0 : b.y0, a.x1 > b.x1 ? a.x1 : b.x1,
                a.y1 > b.y1 ? a.y1 : b.y1};
    return u;
}

static float clampf(float v, float lo, float hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Bilinear upsampling of a gh x gw map by `up` (sample centres at
 * (i + 0.5) / up - 0.5 source cells, edges clamped). */
static void upsample(const float *sim, int gh, int gw, int up, float *out) {
    const int oh = gh * up, ow = gw * up;
    for (int i = 0; i < oh; i++) {
        float y = ((float)i + 0.5f) / (float)up - 0.5f;
        if (y < 0) y = 0;
        int y0 = (int)y, y1 = y0 + 1 < gh ? y0 + 1 : gh - 1;
        float wy = y - (float)y0;
        for (int j = 0; j < ow; j++) {
            float x = ((float)j + 0.5f) / (float)up - 0.5f;
            if (x < 0) x = 0;
            int x0 = (int)x, x1 = x0 + 1 < gw ? x0 + 1 : gw - 1;
            float wx = x - (float)x0;
            /* a + w (b - a): exactly a where the map is flat */
            float a = sim[(size_t)y0 * gw + x0], b = sim[(size_t)y0 * gw + x1];
            float c = sim[(size_t)y1 * gw + x0], d = sim[(size_t)y1 * gw + x1];
            float top = a + wx * (b - a), bot = c + wx * (d - c);
            out[(size_t)i * ow + j] = top + wy * (bot - top);
        }
    }
}

void sl_ground_sim_map(const float *patches, size_t P, size_t D, const float *phrase, float *sim) {
    for (size_t p = 0; p < P; p++) {
        const float *v = patches + p * D;
        float s = 0.0f;
        for (size_t d = 0; d < D; d++) s += v[d] * phrase[d];
        sim[p] = s;
    }
}

sl_ground_opts sl_ground_opts_default(void) {
    sl_ground_opts o = {SL_GROUND_REL_DEFAULT, SL_GROUND_FROM_DEFAULT, SL_GROUND_UPSAMPLE_DEFAULT};
    return o;
}

sl_status sl_ground_opts_check(const sl_ground_opts *o) {
    if (!(o->rel >= 0 && o->rel <= 1))
        return sl_set_error(SL_ERR_INVALID, "ground: rel %g outside [0, 1]", (double)o->rel);
    if (o->from != SL_GROUND_FROM_MEAN && o->from != SL_GROUND_FROM_MIN)
        return sl_set_error(SL_ERR_INVALID, "ground: unknown threshold base %d", (int)o->from);
    if (o->upsample < 1 || o->upsample > SL_GROUND_UPSAMPLE_MAX)
        return sl_set_error(SL_ERR_INVALID, "ground: upsampling %d outside 1..%d", o->upsample,
                            SL_GROUND_UPSAMPLE_MAX);
    return SL_OK;
}

sl_status sl_ground_box(const float *sim, int gh, int gw, float cell, const sl_ground_opts *o,
                        const sl_crop_map *map, int width, int height, sl_box *box, float *score) {
    const sl_ground_opts def = sl_ground_opts_default();
    if (!o) o = &def;
    sl_status st = sl_ground_opts_check(o);
    if (st) return st;
    const float rel = o->rel;
    const int up = o->upsample;
    if (gh <= 0 || gw <= 0 || gh > 4096 || gw > 4096 || !(cell > 0 && cell <= 4096))
        return sl_set_error(SL_ERR_INVALID, "ground: bad grid %dx%d or cell %g", gh, gw,
                            (double)cell);
    if (width <= 0 || height <= 0)
        return sl_set_error(SL_ERR_INVALID, "ground: bad picture size %dx%d", width, height);
    if ((size_t)gh * (size_t)gw * (size_t)up * (size_t)up > ((size_t)1 << 24))
        return sl_set_error(SL_ERR_INVALID,
                            "ground: grid %dx%d upsampled %d times is over 2^24 cells", gh, gw, up);
    float best = sim[0];
    for (size_t i = 1; i < (size_t)gh * (size_t)gw; i++)
        if (sim[i] > best) best = sim[i];
    float *fine = NULL;
    if (up > 1) {
        fine = malloc((size_t)gh * gw * up * up * sizeof *fine);
        if (!fine) return sl_set_error(SL_ERR_NOMEM, "ground: out of memory");
        upsample(sim, gh, gw, up, fine);
        sim = fine;
        gh *= up;
        gw *= up;
        cell /= (float)up;
    }
    size_t n = (size_t)gh * (size_t)gw;
    size_t peak = 0;
    float lo = sim[0], hi = sim[0];
    double sum = sim[0];
    for (size_t i = 1; i < n; i++) {
        if (sim[i] > hi) {
            hi = sim[i];
            peak = i;
        }
        if (sim[i] < lo) lo = sim[i];
        sum += sim[i];
    }
    float base = o->from == SL_GROUND_FROM_MIN ? lo : (float)(sum / (double)n);
    float t = base + rel * (hi - base);
    /* flood fill from the peak over cells >= t (4-connected) */
    int *stack = malloc(n * sizeof *stack);
    unsigned char *seen = calloc(n, 1);
    if (!stack || !seen) {
        free(stack);
        free(seen);
        free(fine);
        return sl_set_error(SL_ERR_NOMEM, "ground: out of memory");
    }
    int r0 = gh, r1 = -1, c0 = gw, c1 = -1;
    size_t top = 0;
    stack[top++] = (int)peak;
    seen[peak] = 1;
    while (top) {
        int cell = stack[--top];
        int r = cell / gw, c = cell % gw;
        if (r < r0) r0 = r;
        if (r > r1) r1 = r;
        if (c < c0) c0 = c;
        if (c > c1) c1 = c;
        const int dr[4] = {-1, 1, 0, 0}, dc[4] = {0, 0, -1, 1};
        for (int k = 0; k < 4; k++) {
            int rr = r + dr[k], cc = c + dc[k];
            if (rr < 0 || rr >= gh || cc < 0 || cc >= gw) continue;
            size_t j = (size_t)rr * (size_t)gw + (size_t)cc;
            if (!seen[j] && sim[j] >= t) {
                seen[j] = 1;
                stack[top++] = (int)j;
            }
        }
    }
    free(stack);
    free(seen);
    free(fine);
    /* model-input pixel edges -> picture pixels */
    float u0 = (float)c0 * cell, u1 = (float)(c1 + 1) * cell;
    float v0 = (float)r0 * cell, v1 = (float)(r1 + 1) * cell;
    box->x0 = clampf(u0 * map->scale_x + map->offset_x, 0, (float)width);
    box->x1 = clampf(u1 * map->scale_x + map->offset_x, 0, (float)width);
    box->y0 = clampf(v0 * map->scale_y + map->offset_y, 0, (float)height);
    box->y1 = clampf(v1 * map->scale_y + map->offset_y, 0, (float)height);
    if (score) *score = best;
    return SL_OK;
}
