"""Integration test of `sightline convert`, with a random-weight CLIP-shaped
model (tests/reference/clip_ref.py, F32, HF layout):
  - --dtype f16 (the default) and bf16 write every tensor in that dtype
    (read back from the safetensors header) with its shape, copy
    config.json, vocab.json and merges.txt byte for byte;
  - the converted models embed texts and images like the F32 one: the
    reference is the F32 model's embeddings (unit vectors) and the
    tolerance 1e-2 max abs difference (F16/BF16 rounding of the weights),
    and f16 -> f32 gives back exactly the f16 model's embeddings;
  - errors: a missing directory names it (exit 1), an unknown dtype and a
    missing --out are usage errors (exit 2), --out equal to --model is
    refused, a weight outside the F16 range names the tensor.
usage: convert_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)


def header(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    h.pop("__metadata__", None)
    return h


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
captions = ["a red cat", "a green dog on a blue background", "two boats", "a yellow tree"]
cap_file = f"{WORK}/captions.txt"
open(cap_file, "w").write("\n".join(captions) + "\n")
model = f"{WORK}/model"
run("tokenizer", "train", "--captions", cap_file, "--out", model, "--vocab-size", "600", "--quiet",
    rc=0)
V = len(json.load(open(f"{model}/vocab.json")))
cfg = clip_ref.Config(v_width=32, v_layers=2, v_heads=2, v_mlp=64, t_width=32, t_layers=2,
                      t_heads=2, t_mlp=64, image_size=32, patch=8, ctx=16, vocab=V, embed=16,
                      act="quick_gelu", eos=V - 1, pool_argmax=True)
params = clip_ref.hf_names(cfg, clip_ref.random_params(cfg, 5))
clip_ref.st_write(f"{model}/model.safetensors", params, "F32", {"format": "pt"})
json.dump(clip_ref.hf_config(cfg), open(f"{model}/config.json", "w"), indent=1)
photos = f"{WORK}/photos"
os.makedirs(photos)
rng = np.random.default_rng(1)
for i in range(4):
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(f"{photos}/p{i}.png")


def embed(m, tag):
    run("encode", "--model", m, "--texts", cap_file, "--out", f"{WORK}/{tag}_t.npy", "--quiet", rc=0)
    run("encode", "--model", m, "--images", photos, "--out", f"{WORK}/{tag}_i.npy", "--quiet", rc=0)
    return np.load(f"{WORK}/{tag}_t.npy"), np.load(f"{WORK}/{tag}_i.npy")


ref = embed(model, "f32")
src_h = header(f"{model}/model.safetensors")
for dt, name in (("f16", "F16"), ("bf16", "BF16")):
    out = f"{WORK}/{dt}"
    args = ["convert", "--model", model, "--out", out] + ([] if dt == "f16" else ["--dtype", dt])
    p = run(*args, rc=0)
    h = header(f"{out}/model.safetensors")
    check(set(h) == set(src_h), f"{dt}: same tensor names")
    for k, v in h.items():
        want = name
        check(v["dtype"] == want and v["shape"] == src_h[k]["shape"],
              f"{dt}: tensor {k}: {v['dtype']} {v['shape']}, wanted {want} {src_h[k]['shape']}")
    for f in ("config.json", "vocab.json", "merges.txt"):
        check(open(f"{model}/{f}", "rb").read() == open(f"{out}/{f}", "rb").read(),
              f"{dt}: {f} copied unchanged")
    check(f"{len(src_h)} tensors converted to {name}" in p.stdout, f"{dt}: summary {p.stdout!r}")
    size = os.path.getsize(f"{out}/model.safetensors")
    check(size < 0.6 * os.path.getsize(f"{model}/model.safetensors"), f"{dt}: half size ({size})")
    got = embed(out, dt)
    for r, g, what in zip(ref, got, ("texts", "images")):
        d = float(np.abs(r - g).max())
        check(d <= 1e-2, f"{dt}: {what} embeddings differ from F32 by {d} (> 1e-2)")
        print(f"{dt} {what}: max abs difference from the F32 model {d:.2e}")

# f16 -> f32 is exact: same embeddings as the f16 model
run("convert", "--model", f"{WORK}/f16", "--out", f"{WORK}/back", "--dtype", "f32", rc=0)
back, f16 = embed(f"{WORK}/back", "back"), (np.load(f"{WORK}/f16_t.npy"), np.load(f"{WORK}/f16_i.npy"))
for a, b in zip(back, f16):
    check(np.array_equal(a, b), "f16 -> f32 embeds exactly like the f16 model")

# errors
p = run("convert", "--model", f"{WORK}/nothing", "--out", f"{WORK}/x", rc=1)
check(f"{WORK}/nothing" in p.stderr, f"missing model named: {p.stderr!r}")
run("convert", "--model", model, "--out", f"{WORK}/x", "--dtype", "f8", rc=2)
run("convert", "--model", model, rc=2)
p = run("convert", "--model", model, "--out", model, rc=1)
check("input directory" in p.stderr, f"--out == --model refused: {p.stderr!r}")
big = dict(params)
big["logit_scale"] = torch.tensor(1e6)
os.makedirs(f"{WORK}/big")
shutil.copy(f"{model}/config.json", f"{WORK}/big/")
clip_ref.st_write(f"{WORK}/big/model.safetensors", big, "F32", {"format": "pt"})
p = run("convert", "--model", f"{WORK}/big", "--out", f"{WORK}/big16", rc=1)
check("logit_scale" in p.stderr and "F16 range" in p.stderr, f"F16 overflow named: {p.stderr!r}")
run("convert", "--model", f"{WORK}/big", "--out", f"{WORK}/bigbf", "--dtype", "bf16", rc=0)

sys.exit(cli_harness.finish("convert_cli"))
