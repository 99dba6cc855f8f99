"""Crash safety of `sightline index build` and `index update`: runs are
killed with SIGKILL at random moments (walk, decode/encode batches, commits,
sweeps, checkpoints), at least 20 times across the phases; after each kill
`index verify` must pass (the open repairs what the crash left), and at the
end the index must hold exactly the corpus's files with the same vectors as
a clean build of the same files (max abs 1e-5) and answer queries with the
same top-10 (exact inner-product search over `index export`).

usage: index_crash_test.py SIGHTLINE REFERENCE_DIR WORK_DIR [SEED]"""
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
SEED = int(sys.argv[4]) if len(sys.argv) > 4 else 1234
rnd = random.Random(SEED)
rng = np.random.default_rng(SEED)
failures = 0
kills = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, flush=True)


def run(*args):
    return subprocess.run([SL, *args], capture_output=True, text=True)


def photo(path, h=None):
    h = h or int(rng.integers(160, 240))
    Image.fromarray((rng.random((h, 200, 3)) * 255).astype(np.uint8)).save(path, quality=90)


WINDOW = [0.3]  # seconds over which kill moments are drawn; adapts to run lengths


def killed_run(args, label):
    """Start a run and SIGKILL it at a random moment; a run that finished
    first counts no kill (and shortens the window). Then verify (which
    repairs what the kill left) must pass. Returns 1 when it killed."""
    global kills
    p = subprocess.Popen([SL, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(rnd.uniform(0.0, WINDOW[0]))
    hit = p.poll() is None
    if hit:
        p.kill()
        kills += 1
        WINDOW[0] = min(WINDOW[0] * 1.1, 5.0)
    else:
        WINDOW[0] = max(WINDOW[0] * 0.7, 0.01)
    p.wait()
    v = run("index", "verify", "--index", IDX)
    # a build killed before it created the index leaves none: the next build makes it
    early = label == "build" and "no index here" in v.stderr
    check(v.returncode == 0 or early, f"verify after kill during {label}: {v.stdout}{v.stderr}")
    return int(hit)


def kill_phase(args, label, want, mutate=None):
    """Kill runs of `args` until `want` of them died mid-run (at most 60
    tries); `mutate(k)` makes fresh work before each try."""
    got = 0
    for k in range(60):
        if got >= want:
            break
        if mutate:
            mutate(k)
        got += killed_run(args, label)
    check(got >= want, f"{label}: only {got} of {want} kills landed mid-run")


def export(idx, out):
    p = run("index", "export", "--index", idx, "--out", out)
    check(p.returncode == 0, f"export {idx}: {p.stderr}")
    vecs = np.load(out)
    paths = open(out + ".paths.txt").read().splitlines()
    return dict(zip(paths, vecs))


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
subprocess.run(["/usr/bin/python3", f"{REF}/clip_ref.py", "case", "hf_f32_p16_h3", WORK],
               check=True, capture_output=True)
MODEL = f"{WORK}/hf_f32_p16_h3"
PHOTOS = f"{WORK}/photos"
IDX = f"{WORK}/idx"
for d in range(6):
    os.makedirs(f"{PHOTOS}/d{d}")
for i in range(400):
    photo(f"{PHOTOS}/d{i % 6}/p{i:03d}.jpg")
open(f"{PHOTOS}/d0/broken.jpg", "wb").write(b"garbage")

common = ["--index", IDX, "--batch", "4", "--region", "--quiet"]

# how long an uninterrupted build takes: kills are spread over that span
t0 = time.monotonic()
run("index", "build", "--model", MODEL, "--images", PHOTOS, "--index", f"{WORK}/timing",
    "--batch", "4", "--region", "--quiet")
SPAN = max(time.monotonic() - t0, 0.05)
shutil.rmtree(f"{WORK}/timing")
print(f"an uninterrupted build takes {SPAN:.2f} s", flush=True)

# phase 1: kills during the first build (interrupted builds are resumed by build)
WINDOW[0] = SPAN
kill_phase(["index", "build", "--model", MODEL, "--images", PHOTOS, *common], "build", 8)
p = run("index", "build", "--model", MODEL, "--images", PHOTOS, *common)
check(p.returncode in (0, 3), f"build completes: {p.returncode} {p.stderr}")

# phase 2: new, changed and deleted photos; kills during updates
upd = ["index", "update", "--model", MODEL, "--index", IDX, "--batch", "4", "--quiet"]
state = {"next": 400}


def churn(k):
    for _ in range(10):
        i = state["next"]
        state["next"] += 1
        photo(f"{PHOTOS}/d{i % 6}/p{i:03d}.jpg")
    victims = sorted(f for f in os.listdir(f"{PHOTOS}/d{k % 6}") if f.startswith("p"))
    for f in victims[:2]:
        os.remove(f"{PHOTOS}/d{k % 6}/{f}")
    for f in victims[2:4]:
        photo(f"{PHOTOS}/d{k % 6}/{f}", h=120)


kill_phase(upd, "update", 8, churn)
p = run(*upd)
check(p.returncode in (0, 3), f"update completes: {p.returncode} {p.stderr}")


# phase 3: renames (vectors reused) and deletions (the sweep); kills again
def moves(k):
    d = f"{PHOTOS}/d{k % 6}"
    names = sorted(f for f in os.listdir(d) if f.startswith("p"))
    for f in names[:4]:
        os.rename(f"{d}/{f}", f"{PHOTOS}/d{(k + 1) % 6}/m{k:02d}{f}")
    for f in names[4:6]:
        os.remove(f"{d}/{f}")
    churn(k)


kill_phase(upd, "update with renames and deletions", 6, moves)
p = run(*upd)
check(p.returncode in (0, 3), f"final update completes: {p.returncode} {p.stderr}")
check(run("index", "verify", "--index", IDX).returncode == 0, "final verify")
check(kills >= 20, f"only {kills} runs were killed mid-run (need 20)")

# the same files built cleanly
CLEAN = f"{WORK}/clean"
p = run("index", "build", "--model", MODEL, "--images", PHOTOS, "--index", CLEAN, "--region",
        "--quiet")
check(p.returncode == 3, f"clean build: {p.returncode}")
got = export(IDX, f"{WORK}/got.npy")
want = export(CLEAN, f"{WORK}/want.npy")
check(set(got) == set(want), f"same files: {len(set(got) ^ set(want))} differ")
on_disk = {os.path.join(dp, f) for dp, _, fs in os.walk(PHOTOS) for f in fs} - {f"{PHOTOS}/d0/broken.jpg"}
check(set(got) == on_disk, "the index holds exactly the corpus's images")
common_paths = sorted(set(got) & set(want))
if common_paths:
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in common_paths)
    check(diff <= 1e-5, f"vectors differ from a clean build by {diff}")
    G = np.stack([got[k] for k in common_paths])
    W = np.stack([want[k] for k in common_paths])
    q = rng.standard_normal((20, G.shape[1])).astype(np.float32)
    same = all(list(np.argsort(-G @ qi, kind="stable")[:10]) == list(np.argsort(-W @ qi, kind="stable")[:10])
               for qi in q)
    check(same, "top-10 results equal those of a clean build")

print(f"index_crash_test: {kills} kills, {'ok' if failures == 0 else f'{failures} failed'}")
sys.exit(1 if failures else 0)
