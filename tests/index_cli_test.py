"""Integration test of `sightline encode` and `sightline index` driven as a
user would: a random-weight model from tests/reference/clip_ref.py, a
generated photo folder with broken files, then incremental updates (add,
change, rename, delete), the mass-deletion guard, the lock, remove, stats
and verify. Embeddings are checked against the PyTorch reference (max abs
1e-4). usage: index_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import fcntl
import struct
import time
import zlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import cli_harness  # noqa: E402
from cli_harness import check, run, index_summary as summary  # noqa: E402

cli_harness.init(SL)

shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
subprocess.run(["/usr/bin/python3", f"{REF}/clip_ref.py", "case", "hf_f32_p16_h3", WORK],
               check=True, capture_output=True)
model = f"{WORK}/hf_f32_p16_h3"

# encode: pixels and tokens against the reference embeddings
run("encode", "--model", model, "--pixels", f"{model}/pixels.npy", "--out", f"{WORK}/e.npy",
    "--patches", f"{WORK}/p.npy", "--no-normalize", "--quiet", rc=0)
run("encode", "--model", model, "--pixels", f"{model}/pixels.npy", "--out", f"{WORK}/ef.npy",
    "--patches", f"{WORK}/pf.npy", "--patch-tokens", "final", "--no-normalize", "--quiet", rc=0)
run("encode", "--model", model, "--tokens", f"{model}/tokens.npy", "--out", f"{WORK}/t.npy",
    "--no-normalize", "--quiet", rc=0)
# patches: the last block's value path by default, its output rows with --patch-tokens final
for got, ref in [("e.npy", "img_global.npy"), ("p.npy", "img_patches_value.npy"),
                 ("ef.npy", "img_global.npy"), ("pf.npy", "img_patches.npy"),
                 ("t.npy", "txt_pooled.npy")]:
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
# a PNG whose image data fails its CRC
Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(f"{WORK}/ok.png")
png = bytearray(open(f"{WORK}/ok.png", "rb").read())
idat = png.index(b"IDAT")
png[idat + 10] ^= 0xFF
open(f"{photos}/badcrc.png", "wb").write(bytes(png))
# a tiny PNG declaring 60000 x 60000 pixels (valid header CRC)
ihdr = b"IHDR" + struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
open(f"{photos}/huge.png", "wb").write(
    b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    + b"\x00" * 64)
# an unreadable file (as root, permissions do not stop reads: a file whose read fails)
if os.geteuid() == 0:
    os.symlink("/proc/self/mem", f"{photos}/unreadable.jpg")
else:
    open(f"{photos}/unreadable.jpg", "wb").write(raw)
    os.chmod(f"{photos}/unreadable.jpg", 0)

idx = f"{WORK}/idx"
# a file deleted mid-run: the last one in walk order goes once the walk is done (the
# index is created after the walk), while 40 slow-to-decode files are still ahead of it
yy, xx = np.mgrid[0:900, 0:900]
for i in range(40):
    smooth = np.stack([(xx + i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(smooth).save(f"{photos}/zz-big{i:02d}.png")
Image.fromarray(smooth).save(f"{photos}/zzz-vanishing.png")
proc = subprocess.Popen([SL, "index", "build", "--model", model, "--index", idx, "--images", photos,
                         "--region", "--batch", "1", "--threads", "1"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
while not os.path.exists(f"{idx}/manifest.json") and proc.poll() is None:
    time.sleep(0.002)
os.remove(f"{photos}/zzz-vanishing.png")
out, err = proc.communicate()
check(proc.returncode == 3, f"build exit {proc.returncode}: {err}")
s = summary(subprocess.CompletedProcess([], 0, out, err))
broken = {"broken.jpg", "zero.png", "cut.jpg", "loop", "badcrc.png", "huge.png", "unreadable.jpg",
          "zzz-vanishing.png"}
check(s["total"] == 70 and s["failed"] == len(broken) and s["added"] == 70, f"build summary {s}")
for name in broken:  # each reported once, with its reason, in the run's output
    check(sum(f"{name}:" in line for line in err.splitlines()) == 1, f"{name} reported once")
check("60000x60000" in err and "CRC" in err.upper(), "reasons name the pixel count and the CRC")
run("index", "verify", "--index", idx, rc=0)
st = json.loads(run("index", "stats", "--index", idx, "--json", rc=0).stdout)
bad = {os.path.basename(f["path"]): f["error"] for f in st["failures"]}
check(set(bad) == broken, f"stats failures {sorted(bad)}")
check(all(bad.values()), "every failure has a reason in stats")
check(st["images"] == 70 and st["regions"] == 70 * 16, f"stats counts {st}")
check(st["patch_tokens"] == "value", f"stats patch_tokens {st.get('patch_tokens')}")
for i in range(40):
    os.remove(f"{photos}/zz-big{i:02d}.png")
# (/proc/self/mem changes its mtime with every process: as root the unreadable stand-in
# would be "changed" at every run, so it leaves with the big files)
os.remove(f"{photos}/unreadable.jpg")

# records of vanished files go with the next update (42 removed: forced past the guard)
s = summary(run("index", "update", "--index", idx, "--force", rc=0))
check(s["removed"] == 42 and s["failed"] == 0, f"cleanup update {s}")

# nothing changed: nothing read, failures not reported again
p = run("index", "update", "--index", idx, rc=0)
s = summary(p)
check(s["unchanged"] == 36 and s["added"] == 0 and s["failed"] == 0, f"no-change update {s}")
check("broken.jpg" not in p.stderr, "a known failure is not reported again")

# add one, change one, rename one (same bytes: vector reused), delete one
Image.fromarray((rng.random((80, 80, 3)) * 255).astype(np.uint8)).save(f"{photos}/new.jpg")
Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(f"{photos}/p02.jpg")
os.rename(f"{photos}/p03.jpg", f"{photos}/p03-renamed.jpg")
os.remove(f"{photos}/p05.jpg")
s = summary(run("index", "update", "--index", idx, "--model", model, rc=0))
check(s["added"] == 2 and s["updated"] == 1 and s["reused"] == 1 and s["removed"] == 2
      and s["total"] == 30, f"incremental update {s}")
run("index", "verify", "--index", idx, rc=0)

# without --model an update uses the model recorded with the index...
Image.fromarray((rng.random((60, 60, 3)) * 255).astype(np.uint8)).save(f"{photos}/p06.jpg")
s = summary(run("index", "update", "--index", idx, rc=0))
check(s["updated"] == 1, f"update with the recorded model {s}")
# ...but not once that model file has changed: a clear error
shutil.copytree(model, f"{WORK}/model-copy")
run("index", "update", "--index", idx, "--model", f"{WORK}/model-copy", rc=0)  # records the copy
with open(f"{WORK}/model-copy/config.json", "a") as f:
    f.write(" ")
Image.fromarray((rng.random((60, 60, 3)) * 255).astype(np.uint8)).save(f"{photos}/p06.jpg")
p = run("index", "update", "--index", idx, rc=1)
check("has changed" in p.stderr and "--model" in p.stderr, "changed recorded model refused")
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

sys.exit(cli_harness.finish("index_cli"))
