"""Cross-check sightline's .npy files against numpy (the reference reader and
writer). Usage: npy_numpy_check.py WRITE DIR | VERIFY DIR.

WRITE: numpy saves arrays that `sightline`'s reader must load exactly.
VERIFY: numpy loads the arrays the C test wrote and compares them to the
values both sides compute from the same formula (exact equality)."""
import sys

import numpy as np


def expected():
    a = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3).astype("<f4")
    b = np.array([49406, 320, 49407, 0], dtype="<i8")
    c = np.arange(6, dtype="<i4").reshape(3, 2) - 2
    return {"f32": a, "i64": b, "i32": c}


def main():
    mode, d = sys.argv[1], sys.argv[2]
    for name, arr in expected().items():
        path = f"{d}/{name}_{'np' if mode == 'WRITE' else 'sl'}.npy"
        if mode == "WRITE":
            np.save(path, arr)
        else:
            got = np.load(path)
            if got.dtype != arr.dtype or got.shape != arr.shape or not np.array_equal(got, arr):
                print(f"{path}: numpy read {got.dtype} {got.shape}, expected {arr.dtype} {arr.shape}")
                sys.exit(1)
    print(f"npy_numpy_check {mode}: ok")


main()
