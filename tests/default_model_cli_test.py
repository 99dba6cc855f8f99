"""Integration test of the default model (commands given no --model), driven
as a user would, with a random-weight CLIP-shaped model
(tests/reference/clip_ref.py) and a BPE vocabulary from `sightline tokenizer
train`:
  - SIGHTLINE_MODEL=M: `encode --texts`, `encode --images`, `index build` and
    `eval retrieval` without --model give byte-identical outputs (figures)
    to the same runs with --model M; `info` names the model and the rule;
  - the installed layout: a copy of the binary in PREFIX/bin finds
    PREFIX/share/sightline/models/demo without SIGHTLINE_MODEL;
  - `query` on an index whose recorded model is gone takes the default model
    when its fingerprint is the index's;
  - a wrong SIGHTLINE_MODEL is an error naming it (exit 1), never passed
    over; with nothing found, the error names every path tried (when the
    source tree has no models/demo yet) or `info` names the source tree's.
usage: default_model_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
from cli_harness import check  # noqa: E402

cli_harness.init(SL)


def run(*args, rc=None, env_model=None, binary=SL):
    return cli_harness.run(*args, rc=rc, env=cli_harness.env_with_model(env_model), binary=binary)


def same_file(a, b, what):
    check(open(a, "rb").read() == open(b, "rb").read(), f"{what}: {a} and {b} differ")


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# a model with a tokenizer
rng = np.random.default_rng(3)
captions = [f"a {c} {t}" for c in ("red", "green", "blue", "yellow")
            for t in ("cat", "dog", "car", "tree", "boat")]
cap_file = f"{WORK}/captions.txt"
open(cap_file, "w").write("\n".join(captions) + "\n")
model = f"{WORK}/model"
run("tokenizer", "train", "--captions", cap_file, "--out", model, "--vocab-size", "600", "--quiet",
    rc=0)
V = len(json.load(open(f"{model}/vocab.json")))
cfg = clip_ref.Config(v_width=32, v_layers=1, v_heads=2, v_mlp=64, t_width=32, t_layers=1,
                      t_heads=2, t_mlp=64, image_size=32, patch=8, ctx=16, vocab=V, embed=16,
                      act="quick_gelu", eos=V - 1, pool_argmax=True)
clip_ref.st_write(f"{model}/model.safetensors", clip_ref.hf_names(cfg, clip_ref.random_params(cfg, 9)),
                  "F32", {"format": "pt"})
json.dump(clip_ref.hf_config(cfg), open(f"{model}/config.json", "w"), indent=1)

photos = f"{WORK}/photos"
os.makedirs(photos)
for i in range(6):
    img = (rng.random((40 + 8 * i, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(f"{photos}/p{i}.png")

# ---- SIGHTLINE_MODEL: same outputs as --model -----------------------------
run("encode", "--model", model, "--texts", cap_file, "--out", f"{WORK}/t_given.npy", "--quiet", rc=0)
p = run("encode", "--texts", cap_file, "--out", f"{WORK}/t_env.npy", "--quiet", rc=0,
        env_model=model)
same_file(f"{WORK}/t_given.npy", f"{WORK}/t_env.npy", "encode --texts")
check(f"model: {model} (the default, from SIGHTLINE_MODEL)" in p.stderr,
      f"encode says which model it took: {p.stderr!r}")
run("encode", "--model", model, "--images", photos, "--out", f"{WORK}/i_given.npy", "--quiet", rc=0)
run("encode", "--images", photos, "--out", f"{WORK}/i_env.npy", "--quiet", rc=0, env_model=model)
same_file(f"{WORK}/i_given.npy", f"{WORK}/i_env.npy", "encode --images")

run("index", "build", "--index", f"{WORK}/idx", "--images", photos, "--region", "--quiet", rc=0,
    env_model=model)
st = json.loads(run("index", "stats", "--index", f"{WORK}/idx", "--json", rc=0).stdout)
run("index", "build", "--model", model, "--index", f"{WORK}/idx2", "--images", photos, "--quiet",
    rc=0)
st2 = json.loads(run("index", "stats", "--index", f"{WORK}/idx2", "--json", rc=0).stdout)
check(st["model"] == st2["model"], "index build: same model fingerprint with and without --model")

kp = {"dataset": "tiny", "images": [
    {"filename": f"p{i}.png", "split": "test", "sentences": [{"raw": captions[i]}]}
    for i in range(6)]}
json.dump(kp, open(f"{WORK}/kp.json", "w"))
run("eval", "retrieval", "--model", model, "--karpathy", f"{WORK}/kp.json", "--images", photos,
    "--json", f"{WORK}/r_given.json", "--quiet", rc=0)
run("eval", "retrieval", "--karpathy", f"{WORK}/kp.json", "--index", f"{WORK}/idx", "--json",
    f"{WORK}/r_env.json", "--quiet", rc=0, env_model=model)
a, b = json.load(open(f"{WORK}/r_given.json")), json.load(open(f"{WORK}/r_env.json"))
check(a["i2t"] == b["i2t"] and a["t2i"] == b["t2i"], f"eval retrieval: {a} vs {b}")

# query: the index's recorded model is gone: the default model when it is the same one
copy = f"{WORK}/model_copy"
shutil.copytree(model, copy)
run("index", "build", "--model", copy, "--index", f"{WORK}/idx_copy", "--images", photos,
    "--quiet", rc=0)
shutil.rmtree(copy)
open(f"{WORK}/q.txt", "w").write("a red cat\n")
p = run("query", "--index", f"{WORK}/idx_copy", "--text", f"{WORK}/q.txt", "--quiet", rc=0,
        env_model=model)
check("using the default model" in p.stderr and len(p.stdout.splitlines()) == 1,
      f"query falls back to the default model: {p.stderr!r}")
p = run("query", "--index", f"{WORK}/idx_copy", "--text", f"{WORK}/q.txt", "--quiet", rc=1,
        env_model=f"{WORK}/model_other")
check("recorded with the index is gone" in p.stderr, f"query without a model: {p.stderr!r}")

p = run("info", rc=0, env_model=model)
check(f"default model: {model} (from SIGHTLINE_MODEL)" in p.stdout, f"info: {p.stdout!r}")
p = run("--version", rc=0, env_model=model)
check(p.stdout.startswith("sightline ") and "default model: " in p.stdout, f"--version: {p.stdout!r}")

# ---- the installed layout ---------------------------------------------------
prefix = f"{WORK}/prefix"
os.makedirs(f"{prefix}/bin")
os.makedirs(f"{prefix}/share/sightline/models")
shutil.copy2(SL, f"{prefix}/bin/sightline")
shutil.copytree(model, f"{prefix}/share/sightline/models/demo")
inst = os.path.realpath(f"{prefix}/share/sightline/models/demo")
p = run("info", rc=0, binary=f"{prefix}/bin/sightline")
check(f"default model: {inst} (from installed)" in p.stdout, f"installed info: {p.stdout!r}")
run("encode", "--texts", cap_file, "--out", f"{WORK}/t_inst.npy", "--quiet", rc=0,
    binary=f"{prefix}/bin/sightline")
same_file(f"{WORK}/t_given.npy", f"{WORK}/t_inst.npy", "encode --texts (installed model)")

# ---- errors -----------------------------------------------------------------
nowhere = f"{WORK}/nowhere"
for args in (["encode", "--texts", cap_file, "--out", f"{WORK}/x.npy"],
             ["index", "build", "--index", f"{WORK}/idx3", "--images", photos],
             ["eval", "retrieval", "--karpathy", f"{WORK}/kp.json", "--images", photos],
             ["eval", "grounding", "--entities", f"{WORK}/none", "--images", photos]):
    p = run(*args, rc=1, env_model=nowhere)
    check(f"SIGHTLINE_MODEL={nowhere}: no model there" in p.stderr,
          f"{args[0]}: a wrong SIGHTLINE_MODEL is named: {p.stderr!r}")
check(not os.path.exists(f"{WORK}/x.npy"), "no output written on error")
check(not os.path.exists(f"{WORK}/idx3"), "no index created on error")

# a copy of the binary outside any prefix: the source tree's models/demo or nothing
bare = f"{WORK}/bare"
os.makedirs(bare)
shutil.copy2(SL, f"{bare}/sightline")
source_model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "models", "demo")
p = run("encode", "--texts", cap_file, "--out", f"{WORK}/y.npy", "--quiet",
        binary=f"{bare}/sightline")
info = run("info", rc=0, binary=f"{bare}/sightline").stdout
if os.path.exists(f"{source_model}/config.json"):
    check(f"(from source tree)" in info, f"info names the source tree's model: {info!r}")
else:
    check(p.returncode == 1, "no default model: exit 1")
    for want in ("SIGHTLINE_MODEL (not set)", f"{WORK}/share/sightline/models/demo (not there)",
                 "models/demo (not there)", "--model"):
        check(want in p.stderr, f"the error names {want!r}: {p.stderr!r}")
    check("default model: none: " in info, f"info says none: {info!r}")

sys.exit(cli_harness.finish("default_model_cli"))
