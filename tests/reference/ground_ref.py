"""Reference for sl_ground_box, written from its definition: the map
upsampled bilinearly (the output sample i of a side of n cells upsampled by
`up` at (i + 0.5) / up - 0.5 source cells, clamped to [0, n - 1]: the edge
cells repeat), its peak, the cells >= base + rel (max - base) with base the
map's mean or minimum, the 4-connected region around the peak, cell edges
through sl_image_crop_map's CLIP centre crop, clipped. Used by the eval
grounding and query CLI tests."""
import numpy as np

UPSAMPLE_DEFAULT = 2  # SL_GROUND_UPSAMPLE_DEFAULT
REL_DEFAULT = 0.4  # SL_GROUND_REL_DEFAULT, from the map's mean (SL_GROUND_FROM_DEFAULT)


def weights(n, up):
    """[n * up, n] interpolation matrix of one side."""
    x = np.clip((np.arange(n * up) + 0.5) / up - 0.5, 0, n - 1)
    x0 = np.floor(x).astype(int)
    x1 = np.minimum(x0 + 1, n - 1)
    w = np.zeros((n * up, n))
    w[np.arange(n * up), x0] += 1 - (x - x0)
    w[np.arange(n * up), x1] += x - x0
    return w


def upsample(m, up=UPSAMPLE_DEFAULT):
    """A [gh, gw] map upsampled to [gh * up, gw * up] (float64)."""
    m = np.asarray(m, dtype=np.float64)
    return weights(m.shape[0], up) @ m @ weights(m.shape[1], up).T


def crop_map(w, h, S):
    """sl_image_crop_map for CLIP preprocessing at S (torchvision Resize +
    CenterCrop) in float32: scale x, scale y, offset x, offset y."""
    short, long_ = min(w, h), max(w, h)
    rl = int(S * long_ / short)
    rw, rh = (rl, S) if w > h else (S, rl)
    left, top = round((rw - S) / 2), round((rh - S) / 2)  # Python rounds half to even
    sx, sy = w / rw, h / rh
    return (np.float32(sx), np.float32(sy), np.float32(left * sx), np.float32(top * sy))


def box(sim, w, h, S, rel=REL_DEFAULT, up=UPSAMPLE_DEFAULT, base=np.mean):
    """The box of a square similarity map sim [g * g] over a model input of
    S pixels on a picture of w x h. Returns the box (float32 values), a
    margin (how near any decision was to a tie: a cell to the threshold, or
    the two best cells unless they touch, which makes them one region;
    upsampling 3 times or more repeats the edge cells, so a peak on the
    border has a twin) and the peak of sim before upsampling."""
    g = int(round(np.sqrt(sim.size)))
    peak_value = float(np.max(sim))
    gf, cell = g * up, S / g / up
    sim = upsample(np.reshape(sim, (g, g)), up).ravel()
    lo, hi = base(sim), sim.max()
    t = lo + np.float32(rel) * (hi - lo)
    peak = int(np.argmax(sim))
    i1, i2 = np.argsort(sim, kind="stable")[-2:][::-1]
    twin = abs(i1 // gf - i2 // gf) + abs(i1 % gf - i2 % gf) == 1
    margin = min(np.abs(sim - t).min(), np.inf if twin else sim[i1] - sim[i2])
    keep = sim >= t
    seen, stack = {peak}, [peak]
    while stack:
        r, q = divmod(stack.pop(), gf)
        for rr, qq in ((r - 1, q), (r + 1, q), (r, q - 1), (r, q + 1)):
            if 0 <= rr < gf and 0 <= qq < gf and keep[rr * gf + qq] and rr * gf + qq not in seen:
                seen.add(rr * gf + qq)
                stack.append(rr * gf + qq)
    rows = [c // gf for c in seen]
    cols = [c % gf for c in seen]
    sx, sy, ox, oy = crop_map(w, h, S)

    def edge(u, s, o, lim):
        v = np.float32(np.float32(u) * s + o)
        return float(min(max(v, np.float32(0)), np.float32(lim)))

    b = (edge(min(cols) * cell, sx, ox, w), edge(min(rows) * cell, sy, oy, h),
         edge((max(cols) + 1) * cell, sx, ox, w), edge((max(rows) + 1) * cell, sy, oy, h))
    return b, margin, peak_value
