"""Integration test of --device on the commands that open an encoder:
`sightline encode`, `index build`, `index update`, `index texts`, `query` and
`eval retrieval`, with a random-weight CLIP-shaped model
(tests/reference/clip_ref.py) and a BPE vocabulary trained by `sightline
tokenizer train`. For each command:
  - --device bogus is a usage error (exit 2) naming 'bogus', before any work
    (no output file, no index directory);
  - --device cuda:0 on a machine without a CUDA device (as `sightline info`
    reports) fails (exit 1) with a message naming cuda:0 (whether the build
    has no CUDA support or finds no device), writing nothing: no .npy, no
    index directory for a build, an index left as it was for an update or
    texts (counts, sources and the text side unchanged; the next update
    still finds the new file), no --json report;
  - --device cpu gives byte-identical output to no --device (.npy files,
    index exports, JSON lines, the evaluation report less its timings).
Also encode --patch-tokens: value equals the default for a model whose
config.json names none, final differs, anything else is a usage error.
usage: device_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import json
import os
import re
import shutil
import sys

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)


def same_bytes(a, b, what):
    ok = os.path.exists(a) and os.path.exists(b) and open(a, "rb").read() == open(b, "rb").read()
    check(ok, f"{what}: {a} and {b} differ")


def bogus(*args, rc=2):
    """args with --device bogus: a usage error naming the value."""
    p = run(*args, "--device", "bogus", rc=rc)
    check("bogus" in p.stderr, f"{args[0]}: --device bogus not named: {p.stderr!r}")
    return p


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
info = run("info", rc=0).stdout
m = re.search(r"CUDA devices: (\d+)", info)
no_gpu = m is not None and int(m.group(1)) == 0
if not no_gpu:
    print("note: this machine reports CUDA devices: the cuda:0 failure checks are skipped")


def cuda0(*args):
    """args with --device cuda:0: where no CUDA device is, exit 1 naming it."""
    if not no_gpu:
        return None
    p = run(*args, "--device", "cuda:0", rc=1)
    check("cuda:0" in p.stderr, f"{args[0]}: --device cuda:0 failure not named: {p.stderr!r}")
    return p


# ---- a model with a tokenizer, photos, captions, a Karpathy split ---------------
rng = np.random.default_rng(3)
colors = ["red", "green", "blue", "yellow", "black", "white"]
things = ["car", "dog", "cat", "house", "tree", "boat", "bird"]
captions = sorted({f"a {rng.choice(colors)} {rng.choice(things)}" for _ in range(30)})
cap_file = f"{WORK}/captions.txt"
open(cap_file, "w").write("\n".join(captions) + "\n")
model = f"{WORK}/model"
run("tokenizer", "train", "--captions", cap_file, "--out", model, "--vocab-size", "600",
    "--min-freq", "1", "--quiet", rc=0)
V = len(json.load(open(f"{model}/vocab.json")))
cfg = clip_ref.Config(v_width=32, v_layers=2, v_heads=2, v_mlp=64, t_width=32, t_layers=2,
                      t_heads=2, t_mlp=64, image_size=32, patch=8, ctx=16, vocab=V, embed=16,
                      act="quick_gelu", eos=V - 1, pool_argmax=True)
clip_ref.st_write(f"{model}/model.safetensors",
                  clip_ref.hf_names(cfg, clip_ref.random_params(cfg, 17)), "F32",
                  {"format": "pt"})
json.dump(clip_ref.hf_config(cfg), open(f"{model}/config.json", "w"), indent=1)
photos = f"{WORK}/photos"
os.makedirs(photos)
for i in range(8):
    img = (rng.random((36 + 3 * i, 44, 3)) * 255).astype(np.uint8)
    img[: 8 + i, :, i % 3] = 250
    Image.fromarray(img).save(f"{photos}/p{i}.png")
entries = [{"filename": f"p{i}.png", "imgid": i, "split": "test",
            "sentences": [{"raw": c} for c in captions[3 * i:3 * i + 3]]} for i in range(8)]
split_json = f"{WORK}/split.json"
json.dump({"dataset": "flickr30k", "images": entries}, open(split_json, "w"))

# ---- encode -----------------------------------------------------------------------
for kind, src in (("images", photos), ("texts", cap_file)):
    extra = ["--patches"] if kind == "images" else []
    for tag, dev in (("none", []), ("cpu", ["--device", "cpu"])):
        args = ["encode", "--model", model, f"--{kind}", src, "--out", f"{WORK}/{kind}_{tag}.npy",
                "--quiet"] + dev
        if extra:
            args += [extra[0], f"{WORK}/{kind}_{tag}_p.npy"]
        run(*args, rc=0)
    same_bytes(f"{WORK}/{kind}_none.npy", f"{WORK}/{kind}_cpu.npy", f"encode --{kind} --device cpu")
    if extra:
        same_bytes(f"{WORK}/{kind}_none_p.npy", f"{WORK}/{kind}_cpu_p.npy",
                   "encode --patches --device cpu")
    for tag, fn in (("bogus", bogus), ("cuda", cuda0)):
        out = f"{WORK}/{kind}_{tag}.npy"
        args = ["encode", "--model", model, f"--{kind}", src, "--out", out, "--quiet"]
        if extra:
            args += [extra[0], f"{WORK}/{kind}_{tag}_p.npy"]
        fn(*args)
        check(not os.path.exists(out) and not os.path.exists(f"{WORK}/{kind}_{tag}_p.npy"),
              f"encode --{kind} --device {tag}: an output was written")

# --patch-tokens: value is the default here (config.json names none), final differs
for pt in ("value", "final"):
    run("encode", "--model", model, "--images", photos, "--out", f"{WORK}/pt_{pt}.npy",
        "--patches", f"{WORK}/pt_{pt}_p.npy", "--patch-tokens", pt, "--quiet", rc=0)
same_bytes(f"{WORK}/images_none_p.npy", f"{WORK}/pt_value_p.npy", "--patch-tokens value")
check(np.abs(np.load(f"{WORK}/images_none.npy") - np.load(f"{WORK}/pt_final.npy")).max() <= 1e-6,
      "--patch-tokens final: the same global embeddings")
check(not np.array_equal(np.load(f"{WORK}/pt_value_p.npy"), np.load(f"{WORK}/pt_final_p.npy")),
      "--patch-tokens final gives other patch embeddings than value")
p = run("encode", "--model", model, "--images", photos, "--out", f"{WORK}/pt_x.npy",
        "--patches", f"{WORK}/pt_x_p.npy", "--patch-tokens", "middle", rc=2)
check("middle" in p.stderr and not os.path.exists(f"{WORK}/pt_x.npy"), "--patch-tokens middle")

# ---- index build / update / texts ----------------------------------------------------
idx = {tag: f"{WORK}/idx_{tag}" for tag in ("none", "cpu")}
for tag, dev in (("none", []), ("cpu", ["--device", "cpu"])):
    run("index", "build", "--model", model, "--index", idx[tag], "--images", photos, "--region",
        "--quiet", *dev, rc=0)
for tag in ("bogus", "cuda"):
    bad = f"{WORK}/idx_{tag}"
    (bogus if tag == "bogus" else cuda0)("index", "build", "--model", model, "--index", bad,
                                         "--images", photos, "--quiet")
    check(not os.path.exists(bad), f"index build --device {tag}: {bad} was created")


def export(tag, name):
    run("index", "export", "--index", idx[tag], "--out", f"{WORK}/{name}_{tag}.npy", rc=0)
    return f"{WORK}/{name}_{tag}.npy"


def stats(d):
    return json.loads(run("index", "stats", "--index", d, "--json", rc=0).stdout)


same_bytes(export("none", "build"), export("cpu", "build"), "index build --device cpu")
same_bytes(f"{WORK}/build_none.npy.paths.txt", f"{WORK}/build_cpu.npy.paths.txt",
           "index build --device cpu: paths")

# update: a new photo and a new source; a failing device changes nothing
Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(f"{photos}/q-new.png")
more = f"{WORK}/more"
os.makedirs(more)
Image.fromarray((rng.random((50, 34, 3)) * 255).astype(np.uint8)).save(f"{more}/m.png")
before = stats(idx["none"])
bogus("index", "update", "--index", idx["none"], "--images", more, "--quiet")
cuda0("index", "update", "--index", idx["none"], "--images", more, "--quiet")
cuda0("index", "update", "--index", idx["none"], "--model", model, "--quiet")
after = stats(idx["none"])
check(after["images"] == before["images"] and after["sources"] == before["sources"],
      f"a failed update changed the index: {before['images']} {before['sources']} -> "
      f"{after['images']} {after['sources']}")
run("index", "verify", "--index", idx["none"], rc=0)
for tag, dev in (("none", []), ("cpu", ["--device", "cpu"])):
    p = run("index", "update", "--index", idx[tag], "--images", more, *dev, rc=0)
    check(" 2 added" in p.stdout, f"update --device {tag or 'none'}: {p.stdout!r}")
same_bytes(export("none", "update"), export("cpu", "update"), "index update --device cpu")

# texts
for tag, dev in (("none", []), ("cpu", ["--device", "cpu"])):
    run("index", "texts", "--model", model, "--index", idx[tag], "--texts", cap_file, "--quiet",
        *dev, rc=0)
open(f"{WORK}/two.txt", "w").write("a red car\na blue boat\n")
bogus("index", "texts", "--model", model, "--index", idx["none"], "--texts", f"{WORK}/two.txt")
cuda0("index", "texts", "--model", model, "--index", idx["none"], "--texts", f"{WORK}/two.txt")
check(stats(idx["none"])["texts"] == len(captions), "a failed index texts changed the text side")

# ---- query --------------------------------------------------------------------------------
open(f"{WORK}/q.txt", "w").write("a red car\na green bird\n")
open(f"{WORK}/qi.txt", "w").write(f"{photos}/p1.png\n{photos}/p5.png\n")
for qargs in (["--text", f"{WORK}/q.txt"], ["--text", f"{WORK}/q.txt", "--rerank", "fine"],
              ["--image", f"{WORK}/qi.txt"], ["--phrase", f"{WORK}/q.txt"]):
    a = run("query", "--index", idx["none"], *qargs, "-k", "3", "--quiet", rc=0).stdout
    b = run("query", "--index", idx["none"], *qargs, "-k", "3", "--quiet", "--device", "cpu",
            rc=0).stdout
    check(a == b and a.count("\n") == 2, f"query {' '.join(qargs)} --device cpu:\n{a}\n{b}")
p = bogus("query", "--index", idx["none"], "--text", f"{WORK}/q.txt")
check(p.stdout == "", "query --device bogus printed results")
p = cuda0("query", "--index", idx["none"], "--text", f"{WORK}/q.txt")
check(p is None or p.stdout == "", "query --device cuda:0 printed results")

# ---- eval retrieval ----------------------------------------------------------------------


def report(name, *dev, rc=0):
    out = f"{WORK}/{name}.json"
    p = run("eval", "retrieval", "--model", model, "--karpathy", split_json, "--images", photos,
            "--json", out, "--quiet", *dev, rc=rc)
    if rc or not os.path.exists(out):
        return p, None
    r = json.load(open(out))
    r.pop("seconds", None)
    return p, r


pa, ra = report("eval_none")
pb, rb = report("eval_cpu", "--device", "cpu")
check(ra is not None and ra == rb and pa.stdout == pb.stdout, "eval retrieval --device cpu")
bogus("eval", "retrieval", "--model", model, "--karpathy", split_json, "--images", photos, "--json",
      f"{WORK}/eval_bogus.json")
cuda0("eval", "retrieval", "--model", model, "--karpathy", split_json, "--images", photos, "--json",
      f"{WORK}/eval_cuda.json")
check(not os.path.exists(f"{WORK}/eval_bogus.json") and not os.path.exists(
    f"{WORK}/eval_cuda.json"), "a failed eval retrieval wrote its report")

sys.exit(cli_harness.finish("device_cli"))
