"""Reference for sl_ground_box's defaults and its map upsampling, written
from its definition: bilinear, the output sample i of a side of n cells upsampled by
`up` at (i + 0.5) / up - 0.5 source cells, clamped to [0, n - 1] (the edge
cells repeat). Used by the eval grounding and query CLI tests."""
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
