"""Integration test of `sightline eval retrieval`: a random-weight CLIP model
(tests/reference/clip_ref.py) with a BPE vocabulary trained by `sightline
tokenizer train`, a generated Karpathy split (20 test images x 5 captions,
one image with 7 captions, one with 3, train/restval images that must not be
read), then:
  - the JSON report's structure and counts;
  - its figures equal a numpy computation of the same definitions (1-based
    ranks, ties by lower index, best caption for an image query) from
    `sightline encode` embeddings of the same images and captions: recalls,
    medr and meanr exactly;
  - a broken image fails the run naming it (exit 1), --skip-bad reports it
    and exits 3; a missing image fails naming it; --coco-1k on 20 images is
    refused; a usage error exits 2;
  - --index: the image vectors come from an index built over the folder (no
    re-encoding) and give the same figures; an image missing from the index
    fails naming it.
The eval is run with `sightline eval retrieval` when the command has it, else
in-process through `test_eval_retrieval --cli`.
usage: eval_retrieval_cli_test.py SIGHTLINE TEST_DRIVER REFERENCE_DIR WORK_DIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

SL, DRIVER, REF, WORK = sys.argv[1:5]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)

EVAL = [SL, "eval", "retrieval"]
if subprocess.run(EVAL + ["--help"], capture_output=True).returncode != 0:
    EVAL = [DRIVER, "--cli"]


def evaluate(*args, rc=0):
    return run(*args, rc=rc, cmd=EVAL)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
rng = np.random.default_rng(7)

# ---- captions, tokenizer, model -------------------------------------------
WORDS = ("a an the dog cat man woman child bike car red blue green small big running sitting "
         "on in near grass street water beach snow two three playing with ball").split()


def caption():
    return " ".join(rng.choice(WORDS, size=int(rng.integers(4, 10))))


N_TEST = 20
n_caps = [5] * N_TEST
n_caps[3], n_caps[11] = 7, 3
captions = [[caption() for _ in range(n)] for n in n_caps]
with open(f"{WORK}/all_captions.txt", "w") as f:
    for cs in captions:
        f.write("\n".join(cs) + "\n")
model = f"{WORK}/model"
run("tokenizer", "train", "--captions", f"{WORK}/all_captions.txt", "--out", model,
    "--vocab-size", "600", "--min-freq", "1", "--quiet", rc=0)
vocab = len(json.load(open(f"{model}/vocab.json")))
cfg = clip_ref.Config(v_width=64, v_layers=2, v_heads=2, v_mlp=128, t_width=64, t_layers=2,
                      t_heads=2, t_mlp=128, image_size=32, patch=8, ctx=24, vocab=vocab, embed=32,
                      act="quick_gelu", eos=vocab - 1, pool_argmax=True)
params = clip_ref.random_params(cfg, 11)
clip_ref.st_write(f"{model}/model.safetensors", clip_ref.hf_names(cfg, params), "F32",
                  {"format": "pt"})
with open(f"{model}/config.json", "w") as f:
    json.dump(clip_ref.hf_config(cfg), f)

# ---- images and the split file ---------------------------------------------
imgs = f"{WORK}/images"
os.makedirs(f"{imgs}/val2014")
entries = []
for i in range(N_TEST):
    coco = i % 2 == 0  # half COCO-style (filepath), half Flickr-style
    name = f"img{i:02d}.jpg"
    arr = (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)
    arr[: 10 + i, :, i % 3] = 255 - 8 * i  # some structure per image
    Image.fromarray(arr).save(f"{imgs}/{'val2014/' if coco else ''}{name}", quality=92)
    e = {"filename": name, "imgid": i, "split": "test",
         "sentences": [{"raw": c, "tokens": c.split(), "imgid": i} for c in captions[i]]}
    if coco:
        e["filepath"] = "val2014"
        e["cocoid"] = 1000 + i
    entries.append(e)
# other splits: never read (their files do not exist)
for i, split in enumerate(["train", "train", "restval", "val"]):
    entries.insert(3 * i + 1, {"filename": f"absent_{split}{i}.jpg", "split": split,
                               "sentences": [{"raw": "unused caption"}]})
split_json = f"{WORK}/dataset_test.json"
json.dump({"dataset": "coco", "images": entries}, open(split_json, "w"))

# ---- the evaluation ----------------------------------------------------------
out = f"{WORK}/eval.json"
p = evaluate("--model", model, "--karpathy", split_json, "--images", imgs, "--json", out,
             "--batch", "7", "--quiet")
check("more than 5 captions" in p.stdout and "fewer than 5" in p.stdout, "notes in the output")
check("RSUM" in p.stdout and "i2t" in p.stdout, "table printed")
rep = json.load(open(out))
for side in ("i2t", "t2i"):
    check(set(rep[side]) >= {"r1", "r5", "r10", "medr", "meanr"}, f"{side} keys")
check(isinstance(rep["rsum"], float), "rsum")
check(rep["images"] == 20 and rep["texts"] == 98, f"counts {rep['images']} {rep['texts']}")
check(rep["images_with_more_captions"] == 1 and rep["captions_left_out"] == 2, "more captions")
check(rep["images_with_fewer_captions"] == 1 and rep["images_without_captions"] == 0, "fewer")
check(rep["skipped"] == [] and rep["source"] == "images", "no skipped images")

# ---- the same definitions in numpy from `sightline encode` outputs --------------
paths = [f"{imgs}/{'val2014/' if i % 2 == 0 else ''}img{i:02d}.jpg" for i in range(N_TEST)]
open(f"{WORK}/paths.txt", "w").write("\n".join(paths) + "\n")
kept = [c[:5] for c in captions]
text_image = np.array([i for i, cs in enumerate(kept) for _ in cs])
open(f"{WORK}/caps.txt", "w").write("\n".join(c for cs in kept for c in cs) + "\n")
run("encode", "--model", model, "--images", f"{WORK}/paths.txt", "--out", f"{WORK}/img.npy",
    "--quiet", rc=0)
run("encode", "--model", model, "--texts", f"{WORK}/caps.txt", "--out", f"{WORK}/txt.npy",
    "--quiet", rc=0)
img, txt = np.load(f"{WORK}/img.npy"), np.load(f"{WORK}/txt.npy")
check(img.shape == (20, 32) and txt.shape == (98, 32), "encode shapes")
sim = img.astype(np.float64) @ txt.astype(np.float64).T


def rank_of(row, g):
    """1-based rank of item g: items scoring higher, or equal at a lower index, go first."""
    return 1 + int(np.sum(row > row[g]) + np.sum(row[:g] == row[g]))


i2t = []
for i in range(sim.shape[0]):
    row = sim[i]
    caps = np.nonzero(text_image == i)[0]
    i2t.append(min(rank_of(row, j) for j in caps))
t2i = [rank_of(sim[:, j], text_image[j]) for j in range(sim.shape[1])]


def figures(r):
    r = np.array(r)
    return {"r1": 100.0 * np.sum(r <= 1) / len(r), "r5": 100.0 * np.sum(r <= 5) / len(r),
            "r10": 100.0 * np.sum(r <= 10) / len(r), "medr": float(np.floor(np.median(r))),
            "meanr": float(np.sum(r)) / len(r)}


want = {"i2t": figures(i2t), "t2i": figures(t2i)}
for side in ("i2t", "t2i"):
    for k, v in want[side].items():
        check(rep[side][k] == v, f"{side} {k}: {rep[side][k]} vs numpy {v}")
rsum = sum(want[s][k] for s in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
check(abs(rep["rsum"] - rsum) < 1e-9, f"rsum {rep['rsum']} vs {rsum}")
# the comparison is exact because no score that decides a rank lies within
# 1e-5 of its ground truth (float32 sgemm vs float64 here differ far less)
gap = min([np.min(np.abs(np.delete(sim[i], j) - sim[i, j]))
           for i in range(sim.shape[0]) for j in np.nonzero(text_image == i)[0]] +
          [np.min(np.abs(np.delete(sim[:, j], g) - sim[g, j])) for j, g in enumerate(text_image)])
check(gap > 1e-5, f"a near-tie ({gap:.2e}) makes the exact comparison fragile: change the seed")
print(f"eval_retrieval: i2t {want['i2t']}, t2i {want['t2i']}, smallest deciding gap {gap:.2e}")

# ---- failures -------------------------------------------------------------------
open(f"{imgs}/broken.jpg", "wb").write(b"\xff\xd8\xff not really a jpeg")
bad_entries = entries + [{"filename": "broken.jpg", "split": "test",
                          "sentences": [{"raw": "a broken picture"}]}]
bad_json = f"{WORK}/dataset_bad.json"
json.dump({"dataset": "coco", "images": bad_entries}, open(bad_json, "w"))
p = evaluate("--model", model, "--karpathy", bad_json, "--images", imgs, "--quiet", rc=1)
check("broken.jpg" in p.stderr, "a broken image is named")
p = evaluate("--model", model, "--karpathy", bad_json, "--images", imgs, "--quiet", "--skip-bad",
             "--json", f"{WORK}/skip.json", rc=3)
rep2 = json.load(open(f"{WORK}/skip.json"))
check(len(rep2["skipped"]) == 1 and rep2["skipped"][0]["path"].endswith("broken.jpg"),
      "--skip-bad lists the image")
check(rep2["images"] == 20 and rep2["texts"] == 98 and rep2["i2t"] == rep["i2t"],
      "--skip-bad leaves the image and its caption out")
missing_json = f"{WORK}/dataset_missing.json"
json.dump({"images": entries + [{"filename": "nowhere.jpg", "split": "test",
                                 "sentences": [{"raw": "x"}]}]}, open(missing_json, "w"))
p = evaluate("--model", model, "--karpathy", missing_json, "--images", imgs, "--quiet", rc=1)
check("nowhere.jpg" in p.stderr, "a missing image is named")
p = evaluate("--model", model, "--karpathy", split_json, "--images", imgs, "--coco-1k", rc=1)
check("multiple of 1000" in p.stderr, "--coco-1k needs 1000-image folds")
os.environ["SIGHTLINE_MODEL"] = f"{WORK}/nowhere"  # no --model: the default model, a wrong one
p = evaluate("--karpathy", split_json, "--images", imgs, rc=1)
check("SIGHTLINE_MODEL=" in p.stderr, "without --model, a wrong default model is named")
del os.environ["SIGHTLINE_MODEL"]
evaluate("--model", model, "--images", imgs, rc=2)
evaluate("--model", model, "--karpathy", split_json, "--images", imgs, "--batch", "0", rc=2)
p = evaluate("--model", model, "--karpathy", f"{WORK}/all_captions.txt", "--images", imgs, rc=1)
check("all_captions.txt" in p.stderr and "line" in p.stderr, "invalid JSON names file and line")

# ---- from an index ----------------------------------------------------------------
os.remove(f"{imgs}/broken.jpg")
idx = f"{WORK}/index"
run("index", "build", "--model", model, "--index", idx, "--images", imgs, "--quiet", rc=0)
p = evaluate("--model", model, "--karpathy", split_json, "--index", idx, "--json",
             f"{WORK}/idx.json", "--quiet")
rep3 = json.load(open(f"{WORK}/idx.json"))
check(rep3["source"] == "index" and rep3["images"] == 20, "index source")
for side in ("i2t", "t2i"):
    for k in ("r1", "r5", "r10", "medr"):
        check(rep3[side][k] == rep[side][k], f"index {side} {k}: {rep3[side][k]} vs {rep[side][k]}")
p = evaluate("--model", model, "--karpathy", missing_json, "--index", idx, "--quiet", rc=1)
check("nowhere.jpg" in p.stderr and "not in the index" in p.stderr, "missing from the index")

sys.exit(cli_harness.finish("eval_retrieval_cli"))
