"""Integration test of `sightline encode` and `sightline index` driven as a
user would: a random-weight model from tests/reference/clip_ref.py, a
generated photo folder with broken files, then incremental updates (add,
change, rename, delete), the mass-deletion guard, the lock, remove, stats
and verify. Embeddings are checked against the PyTorch reference (max abs
1e-4). usage: index_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def run(*args, rc=None):
    p = subprocess.run([SL, *args], capture_output=True, text=True)
    if rc is not None and p.returncode != rc:
        print(f"FAIL: sightline {' '.join(args)} exited {p.returncode}, wanted {rc}")
        print(p.stdout, p.stderr)
        global failures
        failures += 1
    return p


def summary(p):
    # "DIR: N images in the index; S seen, U unchanged, A added, ..."
    line = p.stdout.strip().splitlines()[-1]
    fields = {}
    for part in line.split(";")[1].split(","):
        words = part.split()
        if len(words) >= 2 and words[0].isdigit():
            fields[words[1]] = int(words[0])
    fields["total"] = int(line.split(": ")[1].split()[0])
    return fields


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
subprocess.run(["/usr/bin/python3", f"{REF}/clip_ref.py", "case", "hf_f32_p16_h3", WORK],
               check=True, capture_output=True)
model = f"{WORK}/hf_f32_p16_h3"

# encode: pixels and tokens against the reference embeddings
run("encode", "--model", model, "--pixels", f"{model}/pixels.npy", "--out", f"{WORK}/e.npy",
    "--patches", f"{WORK}/p.npy", "--no-normalize", "--quiet", rc=0)
run("encode", "--model", model, "--tokens", f"{model}/tokens.npy", "--out", f"{WORK}/t.npy",
    "--no-normalize", "--quiet", rc=0)
for got, ref in [("e.npy", "img_global.npy"), ("p.npy", "img_patches.npy"), ("t.npy", "txt_pooled.npy")]:
    a, b = np.load(f"{WORK}/{got}"), np.load(f"{model}/{ref}")
    check(a.shape == b.shape and np.abs(a - b).max() <= 1e-4, f"encode {got} vs reference")
run("encode", "--model", model, "--pixels", f"{model}/pixels.npy", "--out", f"{WORK}/en.npy", rc=0)
check(np.allclose(np.linalg.norm(np.load(f"{WORK}/en.npy"), axis=1), 1, atol=1e-5), "normalised")
run("encode", "--model", model, "--out", f"{WORK}/x.npy", rc=2)  # no input

# a photo folder with broken files
photos = f"{WORK}/photos"
os.makedirs(f"{photos}/sub")
rng = np.random.default_rng(1)
for i in range(30):
    img = Image.fromarray((rng.random((90 + i, 120, 3)) * 255).astype(np.uint8))
    img.save(f"{photos}/{'sub/' if i % 4 == 0 else ''}p{i:02d}.jpg", quality=90)
open(f"{photos}/broken.jpg", "wb").write(b"this is not a jpeg")
open(f"{photos}/zero.png", "wb").write(b"")
raw = open(f"{photos}/p01.jpg", "rb").read()
open(f"{photos}/cut.jpg", "wb").write(raw[: len(raw) // 2])
open(f"{photos}/notes.txt", "w").write("not an image, not an input")
os.symlink("..", f"{photos}/sub/loop")

idx = f"{WORK}/idx"
p = run("index", "build", "--model", model, "--index", idx, "--images", photos, "--region", rc=3)
s = summary(p)
check(s["total"] == 30 and s["failed"] == 4 and s["added"] == 30, f"build summary {s}")
run("index", "verify", "--index", idx, rc=0)
st = json.loads(run("index", "stats", "--index", idx, "--json", rc=0).stdout)
bad = {os.path.basename(f["path"]) for f in st["failures"]}
check(bad == {"broken.jpg", "zero.png", "cut.jpg", "loop"}, f"stats failures {bad}")
check(st["images"] == 30 and st["regions"] == 30 * 16, f"stats counts {st}")

# nothing changed: nothing read
s = summary(run("index", "update", "--index", idx, rc=0))
check(s["unchanged"] == 34 and s["added"] == 0 and s["failed"] == 0, f"no-change update {s}")

# add one, change one, rename one (same bytes: vector reused), delete one
Image.fromarray((rng.random((80, 80, 3)) * 255).astype(np.uint8)).save(f"{photos}/new.jpg")
Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(f"{photos}/p02.jpg")
os.rename(f"{photos}/p03.jpg", f"{photos}/p03-renamed.jpg")
os.remove(f"{photos}/p05.jpg")
s = summary(run("index", "update", "--index", idx, "--model", model, rc=0))
check(s["added"] == 2 and s["updated"] == 1 and s["reused"] == 1 and s["removed"] == 2
      and s["total"] == 30, f"incremental update {s}")
run("index", "verify", "--index", idx, rc=0)

# a changed file without --model cannot be encoded: a clear error
Image.fromarray((rng.random((60, 60, 3)) * 255).astype(np.uint8)).save(f"{photos}/p04.jpg")
p = run("index", "update", "--index", idx, rc=1)
check("--model" in p.stderr, "update without model says so")
run("index", "update", "--index", idx, "--model", model, rc=0)

# mass deletion is held back, then forced
held = [f for f in sorted(os.listdir(photos)) if f.startswith("p1")]
os.makedirs(f"{WORK}/aside")
for f in held:
    shutil.move(f"{photos}/{f}", f"{WORK}/aside/{f}")
p = run("index", "update", "--index", idx, rc=3)
check("max-delete" in p.stderr and summary(p)["removed"] == 0, "mass deletion held")
s = summary(run("index", "update", "--index", idx, "--force", rc=0))
check(s["removed"] == len(held), f"forced removal {s}")
# a missing source root removes nothing
shutil.move(photos, f"{WORK}/photos-away")
p = run("index", "update", "--index", idx, rc=3)
check("missing" in p.stderr and summary(p)["removed"] == 0, "missing root holds removals")
shutil.move(f"{WORK}/photos-away", photos)
run("index", "verify", "--index", idx, rc=0)

# the lock: a concurrent run exits 75 at once
with open(f"{idx}/lock", "r+") as lk:
    fcntl.flock(lk, fcntl.LOCK_EX)
    p = run("index", "update", "--index", idx, rc=75)
    check("in use" in p.stderr, "lock message")
    fcntl.flock(lk, fcntl.LOCK_UN)

# remove by path
p = run("index", "remove", "--index", idx, f"{photos}/new.jpg", rc=0)
check("removed 1" in p.stdout, "remove")
run("index", "verify", "--index", idx, rc=0)
run("index", "frobnicate", "--index", idx, rc=2)

print(f"index_cli_test: {'ok' if failures == 0 else f'{failures} failed'}")
sys.exit(1 if failures else 0)
